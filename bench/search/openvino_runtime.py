"""``--runtime openvino``: the frozen pass (the caching of features) run by OpenVINO's CPU
plugin instead of TensorFlow (``pip install 'bench[openvino]'``; imported only when used).

Opt-in: on CPUs with bfloat16 hardware its pass is faster than TensorFlow's at the same
precision, but its one-time set-up (conversion, compiles, parity check) costs seconds per
run, which pays only from a few hundred images on (``benchmarks/frozen_pass.py``
measures both; figures in docs/performance.md).

Precision (:data:`HINTS`): the frozen pass's compute dtype (``--mixed-precision``:
``off``/``auto`` on a CPU -> float32, ``bfloat16`` -> bfloat16) becomes OpenVINO's CPU
inference precision hint ``f32`` or ``bf16``; float16 (``on``, or ``auto`` with a GPU) is
refused (:func:`bench.search.runtime.check_runtime`): this runtime is the CPU plugin.

The frozen prefix (:meth:`bench.search.source.BackboneSource.prefix`, float32: uint8
images -> the cut tensors) is converted to OpenVINO IR once per run and kept beside the
features (``<run>/cache/openvino-<key>.xml/.bin``, the key covering backbone, weights
fingerprint, image size and cut layers); a later process of the run reuses it. Before any
feature is stored, the IR compiled with the ``f32`` hint is compared with TensorFlow's
float32 prefix on the first :data:`PARITY_IMAGES` images (:func:`check_parity`): that
checks the conversion (bfloat16 moves features by far more than a correct conversion
does, so it is never the thing compared). Past :data:`PARITY_TOLERANCE` the IR is deleted
and the run refuses with one line (:func:`verify_or_refuse`); features already cached are
kept. Then the IR is compiled with the run's hint for the pass. :func:`openvino_prefix`
does all of it and returns a runner that :func:`bench.search.cache.run_prefix` uses in
place of the Keras prefix.

Conversion: Keras 3 models are not ``tf.keras`` models, so ``openvino.convert_model``
gets a ``tf.function`` around the prefix with a uint8 ``(None, S, S, 3)`` signature
(batch dynamic; preprocessing is the ``BackbonePreprocess`` layer inside the prefix,
so it is converted with it); of the converted graph only the function's own outputs are
kept. Weights are saved uncompressed (``compress_to_fp16=False``;
``openvino.save_model`` would otherwise round them to float16). Outputs are named
``output_0`` ... in the prefix's order and read back by those names.

bfloat16 keeps 8 significant bits, and through a deep network the features move: per
image 5.7 % of their norm on Xception@224 and 51 % on MobileNetV2@96 (random init,
calibrated BatchNorm; Keras' ``mixed_bfloat16`` moves them as much), which is why
bfloat16 stays opt-in. With the float32 hint OpenVINO agrees with TensorFlow to 6e-6
(Xception) - 4e-5 (MobileNetV2): summation order, nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.errors import BenchError
from bench.faults import durable_write

#: OpenVINO CPU inference precision hint for each frozen-pass compute dtype.
HINTS = {"float32": "f32", "bfloat16": "bf16"}

#: Largest accepted :func:`check_parity` value (worst per-image relative L2 difference).
#: Measured with random init, calibrated BatchNorm, phantom images, 16 images, cuts of
#: depths 0-2, OpenVINO float32 against TensorFlow float32: <= 9.2e-5 on 10 of the 11
#: registered backbones at 96 px, 1.5e-4 / 2.4e-4 for InceptionV3 at 299 / 96 px (the
#: most chaotic random network). TensorFlow differs from itself that much: oneDNN on vs
#: off (TF_ENABLE_ONEDNN_OPTS=0) gave up to 1.4e-4 (InceptionV3@96). In contrast
#: bfloat16 compute gave 6.7e-3 (VGG16) to 1.1 (InceptionV3), and a broken conversion
#: (pixels at half brightness, images flipped, features of another image) >= 0.19. So
#: 1e-3: 4x above the worst float32 difference, 7x below the smallest bfloat16 one, about
#: two float16 steps (the cache stores float16, itself a change of up to 2**-11 = 4.9e-4).
PARITY_TOLERANCE = 1e-3

#: Images whose features are compared before the converted model is used.
PARITY_IMAGES = 8


def require_openvino():
    """The ``openvino`` module, or a one-line :class:`BenchError` saying how to get it."""
    try:
        import openvino
    except (ImportError, OSError) as exc:  # OSError: its native libraries failed to load
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "openvino").split(".")[0] == "openvino"
        why = "" if missing else f" (importing it failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        raise BenchError(
            f"--runtime openvino needs the openvino package{why}; "
            "install it with pip install 'bench[openvino]' or use --runtime tensorflow"
        ) from None
    return openvino


def ir_paths(folder: Path, key: str) -> tuple[Path, Path]:
    """``(<folder>/openvino-<key>.xml, .bin)``."""
    folder = Path(folder)
    return folder / f"openvino-{key}.xml", folder / f"openvino-{key}.bin"


def convert_prefix(prefix, folder: Path, key: str) -> Path:
    """Convert the Keras ``prefix`` (all outputs, in order) to IR once; the ``.xml`` path.

    ``key`` must change whenever the prefix's numbers would (backbone, weights
    fingerprint, image size, cut layers): the IR of an existing key is reused as it is.
    Written under temporary names, then renamed (``.bin`` first, ``.xml`` last: an
    ``.xml`` present means a complete pair).
    """
    ov = require_openvino()
    import tensorflow as tf

    xml, bin_ = ir_paths(folder, key)
    if xml.exists() and bin_.exists():
        return xml
    xml.parent.mkdir(parents=True, exist_ok=True)
    size = tuple(prefix.inputs[0].shape[1:])
    n_outputs = len(prefix.outputs)

    @tf.function(input_signature=[tf.TensorSpec((None, *size), tf.uint8)])
    def frozen(images):
        outs = prefix(tf.cast(images, tf.float32), training=False)
        return list(outs) if isinstance(outs, (list, tuple)) else [outs]

    names = [t.name for t in frozen.get_concrete_function().outputs]  # "Identity:0", "Identity_1:0", ...
    converted = ov.convert_model(frozen)
    # Keep only the function's outputs: the converter also exposes every dangling tensor
    # (each swish's custom-gradient IdentityN: EfficientNet gave 52 outputs, not 3).
    model = ov.Model([converted.output(name) for name in names], converted.get_parameters(), "prefix")
    if len(model.outputs) != n_outputs:
        raise RuntimeError(f"OpenVINO conversion gave {len(model.outputs)} outputs for a {n_outputs}-output prefix")
    model.inputs[0].get_tensor().set_names({"image"})
    for i, out in enumerate(model.outputs):
        out.get_tensor().set_names({f"output_{i}"})
    tmp_xml = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
    tmp_bin = tmp_xml.with_suffix(".bin")
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        durable_write(xml)
        os.replace(tmp_bin, bin_)
        os.replace(tmp_xml, xml)
    finally:
        tmp_xml.unlink(missing_ok=True)
        tmp_bin.unlink(missing_ok=True)
    return xml


class OpenVinoPrefix:
    """A converted prefix compiled for the CPU: ``runner(images) -> [features, ...]``.

    ``images``: uint8 ``(N, S, S, 3)`` of any ``N`` (the batch dimension is dynamic, so a
    short last batch needs no padding). Returns float32 arrays in the prefix's output
    order. ``precision``: the CPU plugin's inference precision hint (``"f32"``,
    ``"bf16"``); latency mode (one stream on every core: the caching loop runs one batch
    at a time). ``predict_on_batch`` and ``outputs`` (objects with a ``shape``) mirror a
    Keras model's, so the caching loop (:func:`bench.search.cache.run_prefix`) takes a
    runner where it takes the Keras prefix.
    """

    def __init__(self, path: Path, n_outputs: int | None = None, precision: str = "f32") -> None:
        ov = require_openvino()
        import openvino.properties.hint as hints

        core = ov.Core()
        model = core.read_model(str(path))
        names = [f"output_{i}" for i in range(len(model.outputs))]
        if n_outputs is not None and len(names) != n_outputs:
            raise ValueError(f"{path} has {len(names)} outputs, expected {n_outputs}")
        self.compiled = core.compile_model(model, "CPU", {
            hints.inference_precision: precision,
            hints.performance_mode: hints.PerformanceMode.LATENCY,
        })
        #: the precision the plugin reports after compiling ("f32", "bf16"), recorded with the features
        self.precision = self.compiled.get_property(hints.inference_precision).to_string()
        self.parity: float | None = None  # set by openvino_prefix
        self._ports = [self.compiled.output(name) for name in names]
        self._request = self.compiled.create_infer_request()
        self.outputs = [
            SimpleNamespace(shape=(None, *(d.get_length() for d in port.get_partial_shape()[1:])))
            for port in self._ports
        ]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if len(images) == 0:
            return [np.zeros((0, *o.shape[1:]), np.float32) for o in self.outputs]
        result = self._request.infer({0: images})  # copies the outputs (share_outputs=False)
        return [np.asarray(result[port], dtype=np.float32) for port in self._ports]

    predict_on_batch = __call__


def check_parity(reference: list[np.ndarray], got: list[np.ndarray]) -> dict[int, float]:
    """Worst per-image relative L2 difference of each output: ``{output index: value}``.

    For output ``k`` and image ``i``: ``||got_i - ref_i||_2 / ||ref_i||_2`` over the image's
    whole feature map, and the largest over the images. Relative to the image's own
    features, it says how far the vector the head sees has moved, whatever the layer's
    scale; one image whose features moved cannot hide behind the others. (An all-zero
    reference map counts as norm 1e-12, so any difference there is flagged; NaN counts as inf.)
    """
    if len(reference) != len(got):
        raise ValueError(f"{len(got)} outputs to compare with {len(reference)}")
    worst = {}
    for k, (ref, out) in enumerate(zip(reference, got)):
        ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        if out.shape != ref.shape:
            worst[k] = float("inf")
            continue
        if not len(ref):
            worst[k] = 0.0
            continue
        ref, out = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
        norms = np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
        value = float((np.linalg.norm(out - ref, axis=1) / norms).max())
        worst[k] = value if np.isfinite(value) else float("inf")  # NaN or inf features: infinitely off
    return worst


def verify_or_refuse(
    reference: list[np.ndarray], got: list[np.ndarray], tolerance: float = PARITY_TOLERANCE,
    names: list[str] | None = None,
) -> dict[int, float]:
    """:func:`check_parity`, raising a one-line :class:`BenchError` past ``tolerance``."""
    parity = check_parity(reference, got)
    k, value = max(parity.items(), key=lambda kv: kv[1], default=(0, 0.0))
    if value > tolerance:
        where = names[k] if names else f"output {k}"
        raise BenchError(
            f"OpenVINO's features differ from TensorFlow's by {value:.2e} at {where} "
            f"(worst of {len(reference[k])} images, relative L2), over the tolerance {tolerance:.1e}; "
            "use --runtime tensorflow"
        )
    return parity


def openvino_prefix(
    prefix, folder: Path, key: str, check_images: np.ndarray,
    precision: str = "f32", tolerance: float = PARITY_TOLERANCE, names: list[str] | None = None,
) -> OpenVinoPrefix:
    """Convert the float32 Keras ``prefix`` (or reuse its IR), check it, compile it with
    ``precision``.

    The first :data:`PARITY_IMAGES` of ``check_images`` go through TensorFlow and the IR
    compiled with the ``f32`` hint; past ``tolerance`` the IR files are deleted and a
    one-line :class:`BenchError` is raised. An IR that cannot be read (damaged) is
    converted again once. The runner's ``parity`` is the worst output's value.
    """
    require_openvino()
    n_outputs = len(prefix.outputs)
    path = _convert(prefix, folder, key)
    try:
        runner = OpenVinoPrefix(path, n_outputs, "f32")
    except RuntimeError:  # an IR left damaged by an earlier process
        _delete(folder, key)
        runner = OpenVinoPrefix(_convert(prefix, folder, key), n_outputs, "f32")
    sample = np.asarray(check_images[:PARITY_IMAGES])
    reference = prefix.predict_on_batch(sample)
    reference = [np.asarray(r, np.float32) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
    try:
        parity = max(verify_or_refuse(reference, runner(sample), tolerance, names).values())
    except BenchError:
        _delete(folder, key)
        raise
    if precision != "f32":
        runner = OpenVinoPrefix(ir_paths(folder, key)[0], n_outputs, precision)
    runner.parity = parity
    return runner


def _convert(prefix, folder: Path, key: str) -> Path:
    """:func:`convert_prefix`, a failure of the converter as one line."""
    try:
        return convert_prefix(prefix, folder, key)
    except BenchError:
        raise
    except Exception as exc:  # the converter's own errors: many types, long messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BenchError(f"OpenVINO could not convert the frozen pass ({type(exc).__name__}: {first[:200]}); "
                         "use --runtime tensorflow") from exc


def _delete(folder: Path, key: str) -> None:
    for path in ir_paths(folder, key):
        path.unlink(missing_ok=True)
