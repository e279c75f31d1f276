"""Export a backbone of a finished run as a self-contained classifier.

``bench export RUN`` writes, by default to ``RUN/export/<backbone>/``:

* ``model.keras`` (and on request ``saved_model/``): a model that takes raw RGB images,
  ``uint8``, any height and width (a batch shares one size), and returns class
  probabilities in the order of ``labels.json``. Padding to a square, resizing and the
  backbone's own normalisation are layers inside the model, so nobody can feed it
  wrongly scaled pixels.
* on request ``model.tflite``: the same network for TFLite's builtin kernels, which lack
  float64 and most dynamic-shape ops, so it takes ``(1, size, size, 3)`` uint8 images
  already padded and resized (``labels.json`` ``tflite_input``); normalisation is inside.
* ``labels.json``: class order, positive class and the decision threshold chosen on the
  validation split (binary runs), the input contract.
* ``model_card.md``: data, split, test metrics with confidence intervals, the selection
  rule, intended use and limitations.
* ``manifest.json``: every file with its sha256, bench and library versions, the run it
  came from and the fidelity checks.

Resizing inside the model. bench trains and evaluates on images padded to a centred black
square and resized with Pillow's bilinear filter (:func:`bench.images.square_resize`).
Pillow's bilinear filter widens its support when it shrinks (it antialiases) and works in
fixed point with 8-bit rounding after each pass, so ``tf.image.resize`` does not give the
same pixels (up to several grey levels apart). :class:`SquareResize` therefore reimplements
Pillow's two-pass fixed-point algorithm (``libImaging/Resample.c``) with TensorFlow ops:
coefficients computed in float64 in Pillow's order of operations, quantised to 22-bit
integers, sums in int32 (exact), rounding and clipping after each pass as Pillow does. Its
output is bit-for-bit Pillow's, so the exported model on an original file computes exactly
what the run computed on that file; the fidelity check below tests this on every test image.

Fidelity checks (``check=True``): a fresh Python process loads the export and predicts
every test image of the run from its original file; the Keras model and the SavedModel
must give the run's test predictions (``test_predictions.csv``) to within
:data:`KERAS_TOLERANCE` and the same labels; the TFLite model, fed the run's resized
arrays, must agree within :data:`TFLITE_TOLERANCE` (labels may differ only for
probabilities that close to the threshold).

Loading ``model.keras`` needs bench installed (its custom layers are registered by
importing :mod:`bench.export`); the SavedModel and TFLite files need only TensorFlow.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from bench import __version__
from bench.errors import BenchError
from bench.layers import BackbonePreprocess  # noqa: F401  (registers the layer for loading)
from bench.runfolder import library_versions, probability_matrix, read_json, read_table, sha256_file, write_json_atomic, write_text_atomic

Log = Callable[[str], None]

FORMATS = ("keras", "savedmodel", "tflite")
FILES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}
#: The exported Keras model and SavedModel against the run's test probabilities.
KERAS_TOLERANCE = 1e-4
#: TFLite (float32, TFLite's own kernels) against the run's test probabilities.
TFLITE_TOLERANCE = 1e-3
EXPORT_FORMAT_VERSION = 1

_PRECISION_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images (32 - 8 - 2)


# ----------------------------------------------------------------------------- layers


def _pil_bilinear_coefficients(in_size, out_size: int):
    """Pillow's bilinear resampling coefficients for ``in_size`` -> ``out_size``.

    Returns ``(index, weight, ksize)``: for output position ``i`` the input positions
    ``index[i, :ksize]`` with 22-bit fixed-point weights ``weight[i, :ksize]`` (zero
    where unused). Mirrors ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of
    ``libImaging/Resample.c``, operation for operation, in float64.
    """
    scale = tf.cast(in_size, tf.float64) / float(out_size)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)  # C's (int) truncates
    xmax = tf.minimum(tf.cast(center + support + 0.5, tf.int32), in_size) - xmin
    r = tf.range(ksize)
    index = xmin[:, None] + r[None, :]
    used = r[None, :] < xmax[:, None]
    distance = tf.abs((tf.cast(index, tf.float64) - center[:, None] + 0.5) * ss)
    w = tf.where(used & (distance < 1.0), 1.0 - distance, tf.zeros_like(distance))
    # Pillow adds the weights left to right; a sequential fold keeps its rounding.
    total = tf.foldl(lambda acc, col: acc + col, tf.transpose(w), initializer=tf.zeros([out_size], tf.float64))
    k = tf.where(total[:, None] != 0.0, w / total[:, None], w)
    weight = tf.where(used, tf.cast(0.5 + k * float(1 << _PRECISION_BITS), tf.int32), 0)
    return tf.minimum(index, in_size - 1), weight, ksize


def _pil_pass(x, index, weight, ksize, axis: int):
    """One fixed-point resampling pass of Pillow along ``axis`` (1: rows, 2: columns)."""

    def add_tap(acc, r):
        taps = tf.cast(tf.gather(x, index[:, r], axis=axis), tf.int32)
        w = weight[:, r]
        w = w[None, :, None, None] if axis == 1 else w[None, None, :, None]
        return acc + taps * w

    shape = tf.shape(tf.gather(x, index[:, 0], axis=axis))
    start = tf.fill(shape, tf.constant(1 << (_PRECISION_BITS - 1), tf.int32))  # Pillow's rounding offset
    acc = tf.foldl(add_tap, tf.range(ksize), initializer=start)
    return tf.cast(tf.clip_by_value(tf.math.floordiv(acc, 1 << _PRECISION_BITS), 0, 255), tf.uint8)


@keras.saving.register_keras_serializable(package="bench")
class SquareResize(keras.layers.Layer):
    """Pad RGB images to a centred black square and resize them to ``size`` x ``size``.

    Input: ``uint8`` ``(batch, height, width, 3)`` of any height and width. Output:
    ``float32`` ``(batch, size, size, 3)`` holding the integer pixel values that
    :func:`bench.images.square_resize` (Pillow, bilinear) gives for the same image, bit
    for bit. Images already ``size`` x ``size`` pass through unchanged.
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"Expected size >= 1. Received: size={size!r}")
        self.size = int(size)

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        if x.dtype != tf.uint8:
            x = tf.cast(tf.clip_by_value(tf.round(tf.cast(x, tf.float32)), 0.0, 255.0), tf.uint8)
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        side = tf.maximum(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        x = tf.pad(x, [[0, 0], [top, side - height - top], [left, side - width - left], [0, 0]])

        def resize():
            index, weight, ksize = _pil_bilinear_coefficients(side, self.size)
            across = _pil_pass(x, index, weight, ksize, axis=2)  # Pillow: horizontal pass first
            return _pil_pass(across, index, weight, ksize, axis=1)

        out = tf.cond(tf.equal(side, self.size), lambda: x, resize)
        out = tf.ensure_shape(out, [None, self.size, self.size, 3])
        return tf.cast(out, tf.float32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.size, self.size, 3), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="bench")
class ClassProbabilities(keras.layers.Layer):
    """One probability per class: a sigmoid output ``p`` becomes ``(1 - p, p)``."""

    def __init__(self, n_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)

    def call(self, inputs):
        if self.n_classes == 2 and inputs.shape[-1] == 1:
            return keras.ops.concatenate([1.0 - inputs, inputs], axis=-1)
        return inputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_classes)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


# ------------------------------------------------------------------------ run folder


@dataclass
class RunInfo:
    """What export needs to know about one backbone of a finished run."""

    run_dir: Path
    backbone: str
    row: dict
    run: dict
    split: dict
    leaderboard: list[dict]

    @property
    def classes(self) -> list[str]:
        return list(self.split["classes"])

    @property
    def image_size(self) -> int:
        return int(self.row["image_size"])

    @property
    def threshold(self) -> float | None:
        t = self.row.get("test_threshold")
        return None if t is None or len(self.classes) != 2 else float(t)

    @property
    def positive_class(self) -> str | None:
        # final.py thresholds column 1 of the probabilities: the second class
        return self.classes[1] if len(self.classes) == 2 else None

    @property
    def model_path(self) -> Path:
        return self.run_dir / self.backbone / "best_model.keras"

    @property
    def data_root(self) -> Path | None:
        data = self.run.get("config", {}).get("data")
        return Path(data) if data else None

    @property
    def recommended(self) -> bool:
        return self.row.get("rank") == 1


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "run.json").is_file() and (Path(path) / "leaderboard.json").is_file()


def run_info(run_dir: Path, backbone: str | None = None) -> RunInfo:
    """Read a finished run; ``backbone`` None picks the recommended one (rank 1)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"run folder {run_dir} not found; pass a folder written by `bench run` (e.g. results/<name>)")
    if not (run_dir / "run.json").is_file():
        raise BenchError(f"{run_dir} is not a run folder (run.json missing); pass a folder written by `bench run`")
    if not (run_dir / "leaderboard.json").is_file():
        raise BenchError(f"run {run_dir} has no leaderboard.json yet; finish it with `bench run --resume --name {run_dir.name}`")
    board = read_json(run_dir / "leaderboard.json")
    ok = [r for r in board if r.get("status") == "ok" and (run_dir / r["backbone"] / "best_model.keras").is_file()]
    if backbone is None:
        ranked = sorted((r for r in ok if r.get("rank") is not None), key=lambda r: r["rank"])
        if not ranked:
            raise BenchError(f"run {run_dir} has no successfully trained backbone to export; see its leaderboard.json")
        row = ranked[0]
    else:
        matches = [r for r in board if r.get("backbone") == backbone]
        if not matches:
            names = ", ".join(r["backbone"] for r in board) or "none"
            raise BenchError(f"backbone {backbone!r} is not in run {run_dir}; choose one of: {names}")
        row = matches[0]
        if row not in ok:
            names = ", ".join(r["backbone"] for r in ok) or "none"
            raise BenchError(f"backbone {backbone!r} failed or has no best_model.keras in run {run_dir}; exportable: {names}")
    return RunInfo(run_dir, row["backbone"], row, read_json(run_dir / "run.json"), read_json(run_dir / "split.json"), board)


def default_export_dir(run_dir: Path, backbone: str) -> Path:
    return Path(run_dir) / "export" / backbone


def build_export_model(info: RunInfo) -> keras.Model:
    """The run's best model with raw-image input: any-size uint8 RGB -> class probabilities."""
    source = keras.saving.load_model(info.model_path, compile=False)
    inner = [layer for layer in source.layers if not isinstance(layer, keras.layers.InputLayer)]
    size = tuple(source.input.shape[1:])
    if not inner or not isinstance(inner[0], BackbonePreprocess) or inner[-1].name != "head" \
            or size != (info.image_size, info.image_size, 3):
        raise BenchError(f"{info.model_path} is not a bench model (BackbonePreprocess -> backbone -> head at "
                         f"{info.image_size}px); was it written by another bench version? Re-run the backbone")
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = SquareResize(info.image_size, name="square_resize")(inputs)
    for layer in inner:  # BackbonePreprocess -> backbone -> head, a plain chain
        x = layer(x)
    outputs = ClassProbabilities(len(info.classes), name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{info.backbone}_export")


# ----------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    path: Path
    backbone: str
    formats: list[str]
    files: list[str]
    checks: dict = field(default_factory=dict)


def export_run(
    run_dir: Path,
    backbone: str | None = None,
    to: Path | None = None,
    formats: Iterable[str] | str = ("keras",),
    check: bool = True,
    log: Log | None = None,
) -> ExportResult:
    """Export ``backbone`` (default: the recommended one) of ``run_dir`` to ``to``.

    The export is assembled in a temporary folder beside ``to`` and moved into place only
    when complete (and, with ``check``, when the fidelity checks pass). An existing
    earlier export at ``to`` is replaced; any other non-empty folder is refused.
    """
    log = log or (lambda msg: None)
    formats = parse_formats(formats)
    info = run_info(run_dir, backbone)
    dest = Path(to) if to is not None else default_export_dir(info.run_dir, info.backbone)
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / "manifest.json").is_file())):
        raise BenchError(f"--to {dest} exists and is not an earlier bench export; pass an empty or new folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise BenchError(f"cannot write the export to {dest} ({exc.strerror or exc}); pass a writable folder with --to") from None
    try:
        log(f"exporting {info.backbone} ({', '.join(formats)}) from {info.run_dir}")
        model = build_export_model(info)
        _save_formats(model, tmp, formats, log)
        labels = labels_dict(info, formats)
        write_json_atomic(tmp / "labels.json", labels)
        checks = {"run": False, "reason": "not requested (--no-check)"}
        if check:
            log("checking the export in a fresh process against the run's test predictions")
            checks = check_export(tmp, info.run_dir, fresh_process=True)
            _log_checks(checks, log)
            if checks.get("run") and not checks.get("passed"):
                raise BenchError(
                    f"the exported model does not reproduce run {info.run_dir.name}'s test predictions: "
                    f"{checks['failure']}; nothing was written to {dest}"
                )
        write_text_atomic(tmp / "model_card.md", model_card(info, labels, formats, checks))
        manifest = write_manifest(tmp, info, formats, checks)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {dest}")
    return ExportResult(dest, info.backbone, formats, sorted(manifest["files"]), checks)


def parse_formats(formats: Iterable[str] | str) -> list[str]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item not in FORMATS:
            raise BenchError(f"unknown export format {item!r}; choose from: {', '.join(FORMATS)} (comma-separated)")
        if item not in out:
            out.append(item)
    if not out:
        raise BenchError(f"no export format given; choose from: {', '.join(FORMATS)}")
    return out


def _save_formats(model: keras.Model, folder: Path, formats: list[str], log: Log) -> None:
    # the Keras file is always written: the checks, Grad-CAM and `bench predict` use it
    model.save(folder / FILES["keras"])
    if "savedmodel" in formats:
        save_tf_saved_model(model, folder / FILES["savedmodel"])
    if "tflite" in formats:
        (folder / FILES["tflite"]).write_bytes(tflite_bytes(model))


class _Serving(tf.Module):
    """The SavedModel's content: the model and one ``serve`` function (also the
    ``serving_default`` signature). ``keras.Model.export`` would store every variable twice."""

    def __init__(self, model: keras.Model, image_shape: tuple):
        super().__init__()
        self.model = model
        self.serve = tf.function(
            lambda image: self.model(image, training=False),
            input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8, name="image")],
        )


def save_tf_saved_model(model: keras.Model, path: Path) -> None:
    """A TensorFlow SavedModel of ``model`` (uint8 images in, probabilities out); loading
    it needs TensorFlow only: ``tf.saved_model.load(path).serve(images)``."""
    module = _Serving(model, tuple(model.input.shape[1:]))
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def fixed_size_model(model: keras.Model) -> keras.Model:
    """The export without its :class:`SquareResize`: input ``(size, size, 3)`` uint8, already
    padded and resized (what :func:`bench.images.load_array` returns); same outputs."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not isinstance(layers[0], SquareResize):
        raise ValueError("Expected a bench export model starting with SquareResize.")
    size = layers[0].size
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = inputs
    for layer in layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_fixed_size")


def tflite_bytes(model: keras.Model) -> bytes:
    """Float32 TFLite flatbuffer of the export's fixed-size part (TFLite builtin ops only).

    TFLite's builtin kernels have no float64 and few dynamic-shape ops, so the exact
    Pillow resize (:class:`SquareResize`) stays out: the TFLite model takes
    ``(1, size, size, 3)`` uint8 images already padded to a square and resized as
    :func:`bench.images.square_resize` does (labels.json, ``tflite_input``).
    """
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        # Keras' own export here: converting the _Serving module's SavedModel gives NaNs
        fixed_size_model(model).export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError and friends
            raise BenchError(f"TFLite conversion failed ({str(exc).splitlines()[0][:300]}); export without tflite") from None


def _replace_dir(tmp: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{datetime.now().strftime('%Y%m%d%H%M%S%f')}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def labels_dict(info: RunInfo, formats: Iterable[str] = ("keras",)) -> dict:
    classes = info.classes
    out = {
        "format": EXPORT_FORMAT_VERSION,
        "classes": classes,
        "output": "probabilities, one per class, in the order of 'classes'",
        "input": {
            "dtype": "uint8",
            "channels": "RGB",
            "shape": "(batch, height, width, 3); any height and width, one size per batch",
            "inside_the_model": (
                f"pad to a centred black square, bilinear resize to {info.image_size}x{info.image_size} "
                "(bit-identical to Pillow's), then the backbone's own normalisation"
            ),
        },
        "image_size": info.image_size,
        "backbone": info.backbone,
    }
    if "tflite" in formats:
        out["tflite_input"] = (
            f"(1, {info.image_size}, {info.image_size}, 3) uint8 RGB, already padded to a centred black square "
            f"and bilinear-resized (bench.images.square_resize); normalisation is inside"
        )
    if len(classes) == 2:
        out.update(
            positive_class=info.positive_class,
            threshold=info.threshold,
            decision_rule=(
                f"'{info.positive_class}' when probability[{info.positive_class!r}] >= threshold, "
                f"else '{classes[0]}' (threshold chosen on the validation split)"
            ),
        )
    else:
        out.update(positive_class=None, threshold=None, decision_rule="the class with the highest probability")
    return out


def write_manifest(folder: Path, info: RunInfo, formats: list[str], checks: dict) -> dict:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    run = info.run
    manifest = {
        "format": EXPORT_FORMAT_VERSION,
        "bench_version": __version__,
        "versions": library_versions(),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "formats": formats,
        "files": files,
        "source": {
            "run_dir": str(info.run_dir.resolve()),
            "run_name": run.get("config", {}).get("name", info.run_dir.name),
            "backbone": info.backbone,
            "recommended": info.recommended,
            "rank": info.row.get("rank"),
            "best_trial": info.row.get("best_trial"),
            "run_created": run.get("created"),
            "run_command": run.get("command"),
            "run_bench_version": run.get("bench_version"),
            "data": run.get("config", {}).get("data"),
            "data_hash": run.get("data_hash"),
            "synthetic_data": bool(run.get("synthetic_data")),
            "weights": info.row.get("weights", run.get("config", {}).get("weights")),
            "model_sha256": sha256_file(info.model_path),
        },
        "checks": checks,
    }
    write_json_atomic(folder / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------- model card


def _metric(row: dict, name: str) -> str:
    v = row.get(f"test_{name}")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    lo, hi = row.get(f"test_{name}_ci_low"), row.get(f"test_{name}_ci_high")
    if lo is None or hi is None:
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def model_card(info: RunInfo, labels: dict, formats: list[str], checks: dict) -> str:
    run, row, split = info.run, info.row, info.split
    cfg = run.get("config", {})
    synthetic = bool(run.get("synthetic_data"))
    weights = str(row.get("weights", cfg.get("weights")))
    lines = [f"# Model card: {info.backbone} exported from run {cfg.get('name', info.run_dir.name)}", ""]
    if synthetic:
        lines += ["> **SYNTHETIC DATA.** This model was trained and tested on bench's synthetic demo images, "
                  "not on real scans. Its numbers say nothing about any clinical task.", ""]
    if weights == "none":
        lines += ["> **RANDOM INITIALISATION.** The backbone started from random weights (`--weights none`), "
                  "not from pretrained ones: this is not transfer learning, and the scores are not "
                  "representative of the backbone.", ""]
    lines += [
        "> **Research tool, not a medical device.** Not validated for diagnosis, triage or any clinical "
        "decision. Do not use it on patients.", "",
        "## Model", "",
        f"- Backbone: `{info.backbone}`" + (" (the original notebook's recipe on Xception)" if row.get("baseline") else "")
        + f", family `{row.get('family', '-')}`, weights `{weights}`",
        f"- Input: RGB `uint8` images of any size; inside the model they are padded to a centred black square, "
        f"resized to {info.image_size}x{info.image_size} with Pillow's bilinear filter (reimplemented bit for bit) "
        "and normalised as the backbone expects.",
        f"- Output: one probability per class, in this order: {', '.join(f'`{c}`' for c in info.classes)}.",
        f"- Decision rule: {labels['decision_rule']}"
        + (f"; threshold = {labels['threshold']:.6g}." if labels.get("threshold") is not None else "."),
        "- Head and fine-tuning: " + ", ".join(f"{k[3:]}={v}" for k, v in sorted(row.items()) if k.startswith("hp_")),
        f"- Parameters: {row.get('params_total', '-'):,} total, {row.get('params_trainable', '-'):,} trainable during fine-tuning"
        if isinstance(row.get("params_total"), int) and isinstance(row.get("params_trainable"), int)
        else f"- Parameters: {row.get('params_total', '-')}",
        f"- Latency on the run's machine: {row.get('latency_ms_b1', '-')} ms/image at batch 1, "
        f"{row.get('latency_ms_b32', '-')} ms/image at batch 32 (CPU: {run.get('machine', {}).get('processor', '?')}, "
        f"{run.get('machine', {}).get('cpu_count', '?')} cores)",
        f"- Files: {', '.join(FILES[f] for f in formats)}, labels.json, manifest.json (sha256 of every file).",
        "",
        "## Data", "",
        f"- Folder: `{cfg.get('data')}`" + (" (synthetic demo data)" if synthetic else ""),
        f"- Classes: {', '.join(info.classes)}",
        f"- Content hash of the data at training time: `{run.get('data_hash', '-')}`",
        "",
        "## Split", "",
        f"Stratified, duplicate-aware split (exact and near-duplicate images kept in one split), seed "
        f"{split.get('seed')}, validation {split.get('val_size')}, test {split.get('test_size')}:", "",
        "| split | " + " | ".join(info.classes) + " | total |",
        "|---|" + "---|" * (len(info.classes) + 1),
    ]
    for name, counts in split.get("sizes", {}).items():
        lines.append(f"| {name} | " + " | ".join(str(counts.get(c, 0)) for c in info.classes) + f" | {sum(counts.values())} |")
    lines += [
        "",
        "## Selection rule", "",
        f"Each backbone's hyperparameters (head, learning rate, unfreeze depth) were searched with "
        f"{cfg.get('tuner', '?')} search ({row.get('trials_done', '?')} trials) on the validation split's "
        f"`{row.get('objective', cfg.get('objective'))}`; backbones are ranked by that validation objective "
        f"(this one: {row.get('val_objective', float('nan')):.4f}, rank {row.get('rank', '-')} of "
        f"{sum(1 for r in info.leaderboard if r.get('status') == 'ok')}"
        + (", the recommended model" if info.recommended else "") + "). "
        + ("The decision threshold was chosen on the validation split. " if len(info.classes) == 2 else "")
        + "The test split was used once, after selection, for the numbers below.",
        "",
        f"## Test metrics (n = {row.get('test_n', '-')}, 95% bootstrap confidence intervals)", "",
        "| metric | value [95% CI] |", "|---|---|",
    ]
    for name in ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "precision", "recall", "specificity"):
        if row.get(f"test_{name}") is not None:
            lines.append(f"| {name.replace('_', ' ')} | {_metric(row, name)} |")
    if row.get("test_brier") is not None:
        lines.append(f"| Brier score | {row['test_brier']:.4f} |")
    if row.get("test_confusion_matrix") is not None:
        lines += ["", f"Confusion matrix (rows: true {', '.join(info.classes)}; columns: predicted): "
                  f"`{row['test_confusion_matrix']}`"]
    lines += ["", "## Fidelity checks", "", *_checks_lines(checks), "",
              "## Intended use", "",
              "Comparing backbones and fine-tuning choices on small image datasets, and inspecting the "
              "chosen model's behaviour (for example with `bench predict --gradcam`), in research and teaching.",
              "", "## Limitations", "",
              f"- Small data: the test split has {row.get('test_n', '?')} images; the confidence intervals above are wide "
              "and the scores may not hold on other scanners, hospitals or populations.",
              "- Trained on one dataset's label definitions and image conventions; images unlike the training data "
              "(other modalities, views, crops, annotations burnt into the image) give meaningless outputs.",
              "- Probabilities are not calibrated beyond the validation-chosen threshold.",
              "- Grad-CAM heatmaps are coarse, model-centric explanations, not localisations of pathology.",
              "- Research tool, not a medical device.",
              "", "## Use", "", "```",
              "bench predict <this folder> image.png scans/ --csv predictions.csv --gradcam heatmaps/",
              "```", "",
              "```python",
              "import bench.export  # registers bench's layers",
              "import keras, numpy as np",
              "from PIL import Image",
              "model = keras.saving.load_model('model.keras')",
              "probs = model.predict(np.asarray(Image.open('image.png').convert('RGB'))[None])[0]",
              "```", ""]
    if "savedmodel" in formats:
        lines += ["Without bench (TensorFlow only): `tf.saved_model.load('saved_model').serve(images)` with "
                  "`images` a uint8 batch `(n, height, width, 3)`.", ""]
    if "tflite" in formats:
        lines += [f"TFLite: `model.tflite` takes `(1, {info.image_size}, {info.image_size}, 3)` uint8 images already "
                  "padded to a centred black square and bilinear-resized (`bench.images.square_resize`); "
                  f"it agrees with the Keras model within {TFLITE_TOLERANCE:g} (see the fidelity checks).", ""]
    return "\n".join(lines)


def _checks_lines(checks: dict) -> list[str]:
    if not checks.get("run"):
        return [f"Not run: {checks.get('reason', 'not requested')}."]
    out = [f"A fresh Python process loaded the export and predicted the run's {checks.get('n_images')} test images "
           "from their original files:", ""]
    for fmt, res in checks.get("formats", {}).items():
        out.append(
            f"- {fmt}: largest probability difference {res['max_abs_diff']:.2e} (tolerance {res['tolerance']:g}), "
            f"{res['label_mismatches']} label differences"
            + (f" ({res['label_mismatches_near_threshold']} within tolerance of the threshold)"
               if res.get("label_mismatches_near_threshold") else "")
            + (": passed" if res["passed"] else ": FAILED")
        )
    return out


def _log_checks(checks: dict, log: Log) -> None:
    if not checks.get("run"):
        log(f"fidelity check skipped: {checks.get('reason')}")
        return
    for line in _checks_lines(checks)[2:]:
        log("  " + line[2:])


# ------------------------------------------------------------------- fidelity check


def check_export(export_dir: Path, run_dir: Path, fresh_process: bool = True, timeout: float = 1800) -> dict:
    """Compare the export's predictions on the run's test files with ``test_predictions.csv``.

    Returns a dict: ``run`` (False with ``reason`` when the test images are unavailable),
    ``passed``, ``failure`` and per format ``max_abs_diff``, ``tolerance``,
    ``label_mismatches``. With ``fresh_process`` the check runs in a new Python process,
    as a user loading the export would.
    """
    if not fresh_process:
        return _check_in_process(Path(export_dir), Path(run_dir))
    cmd = [sys.executable, "-c", _WORKER, "check", str(export_dir), str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"the fidelity check process failed (exit {done.returncode}): {' | '.join(tail)[-800:]}")
    return json.loads(lines[-1])


def _test_rows(run_dir: Path, files: list[str]) -> tuple[Path | None, str | None]:
    """The run's data folder, and why its test ``files`` cannot be used, if so (missing, or
    changed since the split recorded their sha256)."""
    run = read_json(run_dir / "run.json")
    recorded = {f["path"]: f["sha256"] for f in read_json(run_dir / "split.json")["files"]}
    data = run.get("config", {}).get("data")
    if not data or not Path(data).is_dir():
        return None, f"the run's data folder {data} is not available"
    root = Path(data)
    for name in files:
        path = root / name
        if not path.is_file() or sha256_file(path) != recorded.get(name):
            return root, f"test image {path} is missing or changed since the run"
    return root, None


def _check_in_process(export_dir: Path, run_dir: Path) -> dict:
    import pandas as pd

    from bench.images import load_array
    from bench.predict import Predictor, read_image

    labels = read_json(export_dir / "labels.json")
    backbone = labels["backbone"]
    csv = run_dir / backbone / "test_predictions.csv"
    if not csv.is_file():
        return {"run": False, "reason": f"{csv} not found"}
    expected = read_table(csv)
    rows = [{"path": f} for f in expected["file"]]
    root, reason = _test_rows(run_dir, expected["file"].tolist())
    if reason:
        return {"run": False, "reason": reason}
    classes = labels["classes"]
    want = probability_matrix(expected, classes)
    # Keras and SavedModel get each original file at its own size (the user's path);
    # TFLite gets the padded, resized arrays the run evaluated (its documented input).
    images = [read_image(root / r["path"]) for r in rows]
    runners = {"keras": (Predictor.from_export(export_dir).probabilities, images)}
    if (export_dir / FILES["savedmodel"]).is_dir():
        runners["savedmodel"] = (_saved_model_runner(export_dir / FILES["savedmodel"]), images)
    if (export_dir / FILES["tflite"]).is_file():
        size = int(labels["image_size"])
        arrays = [load_array(root / r["path"], size) for r in rows]
        runners["tflite"] = (_tflite_runner(export_dir / FILES["tflite"]), arrays)
    result = {"run": True, "n_images": len(rows), "formats": {}, "passed": True, "failure": None}
    threshold = labels.get("threshold")
    for fmt, (runner, inputs) in runners.items():
        got = np.stack([runner(img) for img in inputs]).astype(np.float64)
        tol = TFLITE_TOLERANCE if fmt == "tflite" else KERAS_TOLERANCE
        diff = np.abs(got - want)
        pred = _decide(got, classes, threshold)
        mismatch = [i for i, p in enumerate(pred) if p != expected["prediction"].iloc[i]]
        if threshold is not None:
            near = [i for i in mismatch if abs(want[i, 1] - threshold) <= tol]
        else:
            top2 = np.sort(want, axis=1)[:, -2:]
            near = [i for i in mismatch if top2[i, 1] - top2[i, 0] <= 2 * tol]
        worst = int(diff.max(axis=1).argmax()) if len(diff) else 0
        passed = bool(diff.max(initial=0.0) <= tol and len(mismatch) == len(near))
        result["formats"][fmt] = {
            "max_abs_diff": float(diff.max(initial=0.0)),
            "tolerance": tol,
            "label_mismatches": len(mismatch),
            "label_mismatches_near_threshold": len(near),
            "worst_file": rows[worst]["path"] if len(rows) else None,
            "passed": passed,
        }
        if not passed and result["passed"]:
            result["passed"] = False
            result["failure"] = (f"{fmt}: largest probability difference {diff.max():.2e} on {rows[worst]['path']} "
                                 f"(tolerance {tol:g}), {len(mismatch) - len(near)} labels differ")
    return result


def _decide(probs: np.ndarray, classes: list[str], threshold: float | None) -> list[str]:
    if threshold is not None and len(classes) == 2:
        return [classes[1] if p >= threshold else classes[0] for p in probs[:, 1]]
    return [classes[i] for i in probs.argmax(axis=1)]


def _saved_model_runner(path: Path):
    loaded = tf.saved_model.load(str(path))

    def run(image: np.ndarray) -> np.ndarray:
        return np.asarray(loaded.serve(tf.constant(image[None], tf.uint8)))[0]

    return run


def _tflite_runner(path: Path):
    import warnings

    with warnings.catch_warnings():
        # TF >= 2.20 points users to ai_edge_litert; the TF interpreter is what we check against
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    interpreter.allocate_tensors()

    def run(image: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp["index"], image[None].astype(np.uint8))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(out["index"]))[0]

    return run


_WORKER = "import sys; from bench.export import _main; sys.exit(_main(sys.argv[1:]))"


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "check":
        print("usage: python -m bench.export check EXPORT_DIR RUN_DIR", file=sys.stderr)
        return 2
    result = _check_in_process(Path(argv[1]), Path(argv[2]))
    print(json.dumps(result))
    return 0


# ------------------------------------------------------------------ end of a run


def export_winner(run_dir: Path, log: Log | None = None, check: bool = True) -> ExportResult | None:
    """End of ``bench run``: export the recommended backbone to ``RUN/export/<backbone>`` and
    write its Grad-CAM grid of test images (:func:`bench.explain.write_run_gradcam`).

    The run's results are complete before this runs, so problems here are logged as
    warnings, not raised: a failed export never costs the user the run.
    """
    log = log or (lambda msg: None)
    try:
        result = export_run(run_dir, check=check, log=log)
    except BenchError as exc:
        log(f"WARNING: the recommended model was not exported: {exc}")
        return None
    try:
        from bench.explain import write_run_gradcam

        log(f"wrote {write_run_gradcam(run_dir, result.backbone)}")
    except BenchError as exc:
        log(f"WARNING: no Grad-CAM grid of test images: {exc}")
    return result
