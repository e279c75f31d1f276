"""The run's backbone: built once with the requested weights, saved beside the run, reused.

``<run>/<backbone>/backbone.weights.npz`` holds the exact backbone weights of the run
(random, ImageNet or a local file; ``<run>/<backbone>@<weights>/`` when the run compares
several starting points), so every trial, every resumed process and every
distributed worker starts from the same network. It is a numpy archive of the arrays
``model.get_weights()`` returns, in that order (``w00000``, ``w00001``...): written in a
fraction of the time Keras' ``save_weights`` spends walking the model, and read back
with ``model.set_weights``. A run folder written with ``backbone.weights.h5`` (Keras'
format) is still read.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

import keras
import numpy as np

import backbones
from bench.data.loading import load_images
from bench.layers import BackbonePreprocess
from bench.atomic import save_via_temp
from bench.progress import step

log = logging.getLogger(__name__)


class BackboneSource:
    """Builds the run's backbone, always with the same weights.

    The first build uses the requested weights (random init seeded by the run seed,
    ImageNet through Keras' cache, or a local file) and saves them to
    ``backbone.weights.npz``; a later process loads that file. Within a process the
    built model is kept and handed out again with its original weights restored
    (building a backbone and loading its weights would otherwise cost seconds per
    fine-tuning trial).
    """

    def __init__(
        self, record, weights: str, image_size: int, folder: Path, seed: int,
        calibration_images: Callable[[], np.ndarray] | None = None, name: str | None = None,
    ) -> None:
        self.record, self.weights, self.image_size, self.seed = record, weights, image_size, seed
        self.name = name or record.name  # as log lines name it: the backbone, or the backbone@weights pair
        self.weights_file = Path(folder) / WEIGHTS_FILE
        self.run_dir = Path(folder).parent
        self.calibration_images = calibration_images
        self.last_base: keras.Model | None = None
        self._original: list[np.ndarray] | None = None
        self._initial: list[np.ndarray] | None = None  # random init as built, before BatchNorm calibration
        self._built = False  # built here from the weights spec (not loaded from this run's file)
        self._changed = False  # layers handed out for fine-tuning since the original weights were set
        self._fingerprint: str | None = None  # of the original weights, once asked for
        self._donor: BackboneSource | None = None
        #: seconds of the frozen pass's batches in this process, by batch size (TensorFlow in
        #: float32, the first batch, which traces the pass, left out): what a batch of the
        #: backbone costs, the deployed model's batch latency (:meth:`batch_ms`)
        self.pass_seconds: dict[int, list[float]] = {}
        #: float32 depth-0 features of images by path, kept by the caching pass (TensorFlow in
        #: float32: the deployed model's own frozen pass) for the deployed model's validation
        #: images (:func:`bench.search.cache.cached_features`'s ``keep``; :meth:`kept_rows`)
        self.kept: dict[str, np.ndarray] = {}
        #: the frozen pass's model (images in, cut tensors out) when that pass ran in this
        #: process in TensorFlow float32: traced already, it times the deployed network
        #: (:func:`bench.evaluate.final.measure_latency`'s ``stand_in``)
        self.frozen_model: keras.Model | None = None

    def adopt(self, donor: "BackboneSource | None") -> None:
        """Reuse ``donor``'s built network (same backbone, size, weights and seed, another
        run): this source then loads its own starting weights into it instead of building
        one. They are the ones a fresh build would give: the donor's as built (before any
        calibration on the donor's images), or this run's saved file."""
        if donor is not None and donor.last_base is not None and donor._built:
            self._donor = donor

    def _starting_weights(self) -> list[np.ndarray]:
        return self._initial if self._initial is not None else self._original

    def _reused(self) -> keras.Model | None:
        """The donor's network with this run's starting weights, or None without a donor."""
        donor, self._donor = self._donor, None
        if donor is None:
            return None
        model = donor.last_base
        donor._changed = True  # its network now holds this run's weights
        model.trainable = True
        for layer in model.layers:
            layer.trainable = True
        if load_saved_weights(model, self.weights_file) is not None:
            return model
        model.set_weights(donor._starting_weights())
        self._built = True
        if backbones.resolve_weights(self.weights).kind == "none":
            self._initial = donor._starting_weights()
            self._calibrate(model)
        save_weights(self.weights_file, model.get_weights())
        return model

    def _calibrate(self, model: keras.Model) -> None:
        """:func:`calibrate_batchnorm` on the run's calibration images, said in the log with
        its time: a pass of the backbone over images, part of making its features."""
        if not batchnorm_layers(model):  # nothing to set (VGG16): no images to read, nothing to say
            return
        if self.calibration_images is None:
            raise ValueError("random-init backbones need calibration_images (see calibrate_batchnorm)")
        t0 = time.perf_counter()
        images = self.calibration_images()
        what = f"BatchNorm statistics from {len(images)} training images (random weights)"
        with step(f"{self.name}: setting {what}", len(images)) as progress:
            calibrate_batchnorm(model, self.record.preprocessing, images)
            progress.update(len(images))
        log.info(f"{self.name}: set {what} in {time.perf_counter() - t0:.1f}s")

    def batch_ms(self, batch: int, at_least: int = 3) -> float | None:
        """Milliseconds per image of the backbone at batch size ``batch``: the median of its
        frozen pass's timed batches of that size in this process; None with fewer than
        ``at_least`` of them."""
        times = self.pass_seconds.get(batch, [])
        return round(1000 * float(np.median(times)) / batch, 3) if len(times) >= at_least else None

    def kept_rows(self, rows: list[dict]) -> np.ndarray | None:
        """The kept float32 features of ``rows`` (:attr:`kept`), stacked in order; None
        unless every one of them was kept."""
        if not rows or any(r["path"] not in self.kept for r in rows):
            return None
        return np.stack([self.kept[r["path"]] for r in rows])

    def base(self) -> keras.Model:
        """The backbone with this run's original weights, every layer trainable."""
        if self.last_base is not None and self._original is not None:
            model = self.last_base
            if self._changed:  # undo any fine-tuning of an earlier trial (top())
                model.set_weights(self._original)
                self._changed = False
            model.trainable = True
            for layer in model.layers:
                layer.trainable = True
            return model
        model, original = self._reused(), None
        if model is None and saved_weights(self.weights_file) is not None:
            model = self.record.build(weights=None, image_size=self.image_size)
            original = load_saved_weights(model, self.weights_file)  # not read back from the model
        elif model is None:
            keras.utils.set_random_seed(self.seed)
            spec = backbones.resolve_weights(self.weights)
            model = backbones.build_with_weights(self.record, spec, self.image_size)
            self._built = True
            before = {}
            if spec.kind == "none":
                before = _batchnorm_statistics(model)
                self._calibrate(model)
            original = model.get_weights()
            save_weights(self.weights_file, original)
            if before:  # as built: calibration set the BatchNorm statistics and nothing else
                self._initial = [before.get(id(v), w) for v, w in zip(model.weights, original)]
        self.last_base, self._original = model, model.get_weights() if original is None else original
        self._changed, self._fingerprint = False, None
        return model

    def fingerprint(self) -> str:
        """:func:`weights_fingerprint` of the original weights (what
        :meth:`base` hands out), computed once."""
        if self._fingerprint is None or self._original is None:
            self.base()
            self._fingerprint = arrays_fingerprint(self._original)
        return self._fingerprint

    def top(self, depth: int) -> keras.Model:
        """The layers above unfreeze boundary ``depth``, as a model on the cut tensor, for a
        trial to train: the next :meth:`base` puts the original weights back."""
        base = self.base()
        self._changed = True
        cut = base.get_layer(self.record.cut_layer(depth))
        return keras.Model(cut.output, base.output, name="top")

    def prefix(self, depths: list[int], base: keras.Model | None = None, compute: str = "float32") -> keras.Model:
        """Images (uint8) -> the cut tensors of ``depths``, preprocessing included.

        ``compute="bfloat16"``: the backbone rebuilt under Keras' ``mixed_bfloat16`` policy
        with the same (float32) weights, for a faster frozen pass on CPUs with bfloat16
        hardware (:mod:`bench.search.runtime`); its outputs are bfloat16."""
        base = base or self.base()
        if compute == "bfloat16":
            base = self._rebuilt(base, "mixed_bfloat16")
        extractor = keras.Model(base.input, [base.get_layer(self.record.cut_layer(d)).output for d in depths])
        inputs = keras.Input((self.image_size, self.image_size, 3), name="image")
        outputs = extractor(BackbonePreprocess(self.record.preprocessing)(inputs))
        return keras.Model(inputs, outputs if isinstance(outputs, (list, tuple)) else [outputs], name="prefix")


    def _rebuilt(self, base: keras.Model, policy: str) -> keras.Model:
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = self.record.build(weights=None, image_size=self.image_size)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        model.set_weights(base.get_weights())
        return model


#: The run's backbone weights, in its backbone's folder (see the module docstring).
WEIGHTS_FILE = "backbone.weights.npz"
#: What run folders written in Keras' format hold instead.
KERAS_WEIGHTS_FILE = "backbone.weights.h5"


def save_weights(path: Path, arrays: list[np.ndarray]) -> None:
    """``arrays`` (``model.get_weights()``) into the numpy archive ``path``, atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_via_temp(path, lambda tmp: np.savez(tmp, **{f"w{i:05d}": a for i, a in enumerate(arrays)}))


def saved_weights(path: Path) -> Path | None:
    """The weights file saved at ``path`` (:data:`WEIGHTS_FILE`), or the one in Keras'
    format beside it; None when neither is there."""
    path = Path(path)
    for candidate in (path, path.with_name(KERAS_WEIGHTS_FILE)):
        if candidate.is_file():
            return candidate
    return None


def load_saved_weights(model: keras.Model, path: Path) -> list[np.ndarray] | None:
    """Set ``model``'s weights from :func:`saved_weights` and return them (as
    ``get_weights()`` would); None when nothing is saved."""
    found = saved_weights(path)
    if found is None:
        return None
    if found.suffix == ".h5":
        model.load_weights(found)
        return model.get_weights()
    with np.load(found) as archive:
        arrays = [archive[name] for name in sorted(archive.files)]
    model.set_weights(arrays)
    return arrays


def weights_fingerprint(model) -> str:
    """sha256 over every weight tensor of ``model`` (position, shape, dtype and values).

    Not the weights' names: Keras numbers unnamed layers (``conv2d_4``) by how many models
    the process built before, so the same backbone would get another fingerprint (and
    miss its cache) on a second build in one process."""
    return arrays_fingerprint(w.numpy() for w in model.weights)


def arrays_fingerprint(arrays: Iterable[np.ndarray]) -> str:
    """:func:`weights_fingerprint` of a model whose weights are ``arrays``, in order (as
    ``model.get_weights()`` returns them)."""
    h = hashlib.sha256()
    for position, array in enumerate(arrays):
        value = np.ascontiguousarray(array)
        h.update(f"{position}:{value.shape}:{value.dtype}".encode())
        h.update(value.reshape(-1).view(np.uint8))  # the bytes, without copying them
    return h.hexdigest()


#: Training images whose statistics initialise BatchNorm of randomly initialised backbones.
CALIBRATION_IMAGES = 32


def source_for(record, weights: str, image_size: int, run_dir: Path, data_root: Path, split, seed: int,
               folder: str | None = None) -> BackboneSource:
    """The run's :class:`BackboneSource` for ``record`` with ``weights``, its weights kept in
    ``<run>/<folder>`` (default: the backbone's name; a run comparing several weights names
    the folder after the pair, :mod:`bench.candidates`)."""
    train_rows = split.rows("train")
    spread = train_rows[:: max(1, len(train_rows) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]  # all classes
    return BackboneSource(
        record, weights, image_size, Path(run_dir) / (folder or record.name), seed,
        calibration_images=lambda: load_images(data_root, spread, image_size), name=folder,
    )


def _batchnorm_statistics(base: keras.Model) -> dict[int, np.ndarray]:
    """The moving mean and variance of every BatchNorm of ``base``, by ``id`` of the variable."""
    return {id(v): v.numpy() for bn in batchnorm_layers(base) for v in (bn.moving_mean, bn.moving_variance)}


def batchnorm_layers(base: keras.Model) -> list:
    """Every BatchNormalization layer of ``base``, nested ones included."""
    return [layer for layer in base._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


#: Largest sum of layer outputs (float32 bytes, :func:`activation_bytes`) for which the
#: BatchNorm calibration pass runs eagerly rather than as a compiled graph.
EAGER_CALIBRATION_BYTES = 256 * 2**20


def activation_bytes(model: keras.Model, batch: int) -> int:
    """Bytes of every layer's output of ``model`` for a batch of ``batch``, in float32."""
    total = 0
    for layer in model.layers:
        for out in (layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]):
            total += int(np.prod([d or 1 for d in out.shape[1:]], dtype=np.int64))
    return 4 * batch * total


def calibrate_batchnorm(base: keras.Model, preprocessing: str, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics from one batch of training images.

    Randomly initialised networks in inference mode shrink activations layer by layer
    (moving variance 1 does not normalise anything): MobileNetV2's final features are
    ~1e-12, Xception's ~1e-5, i.e. constant. One forward pass in training mode with
    momentum 0 makes each BatchNorm's moving mean/variance the batch statistics of its
    input (data-dependent initialisation), so ``--weights none`` gives usable random
    features. Only training images are used. Pretrained weights are never touched.

    Run eagerly, the pass holds every layer's output at once (Keras keeps a functional
    model's intermediate tensors until the call ends): :func:`activation_bytes`, 7.5 GiB for
    Xception at 299 px and 32 images. Within :data:`EAGER_CALIBRATION_BYTES` it runs eagerly
    (tracing a graph would take longer than the pass itself: MobileNetV2 at 32 px, for
    one); above, as one compiled graph, which frees each output once used
    (``benchmarks/memory.py`` measures the run's memory).
    """
    import tensorflow as tf

    bns = batchnorm_layers(base)
    if not bns or len(images) == 0:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        x = BackbonePreprocess(preprocessing)(images.astype("float32"))
        if activation_bytes(base, len(images)) <= EAGER_CALIBRATION_BYTES:
            base(x, training=True)
        else:
            tf.function(lambda batch: base(batch, training=True))(x)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum


def depths_for(record, max_unfreeze: int) -> list[int]:
    return list(range(0, min(max_unfreeze, len(record.blocks) - 1) + 1))

