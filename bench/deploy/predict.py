"""``bench predict``: label image files with an exported model.

Images are read with :func:`bench.data.images.open_rgb`, the same loader bench trains with (any
colour mode to 8-bit RGB, content-sniffed formats, decompression-bomb guard), and fed to
the model at their own size: the exported model pads, resizes and normalises inside.
Unreadable files are reported and skipped; the rest are still predicted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bench.data.images import UnreadableImage, open_rgb
from bench.errors import BenchError
from bench.runfolder import RunFiles

log = logging.getLogger(__name__)

#: ``--tta`` modes: none, or the mean over the image and its left-right mirror image.
TTA_MODES = ("none", "flip")


def read_image(path_or_file, window: str | None = None) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB of an image file (path or binary file object); a
    DICOM file windowed by ``window`` (None: the rule in force, :mod:`bench.data.dicom`)."""
    rgb, _, _ = open_rgb(path_or_file, window)
    return np.asarray(rgb, dtype=np.uint8)


def dicom_window(labels: dict) -> str:
    """The window rule an export reads DICOM files with (``labels.json`` ``dicom``; an export
    made before bench read DICOM: each file's own window, the default)."""
    from bench.config import parse_window

    rule = (labels.get("dicom") or {}).get("window") if isinstance(labels.get("dicom"), dict) else None
    try:
        return parse_window(rule) if rule else "file"
    except BenchError:
        raise BenchError(f"labels.json holds an unknown DICOM window rule {rule!r}; export the run again "
                         "(bench export RUN)") from None


class Predictor:
    """An exported model with its labels: probabilities, decisions and Grad-CAM for raw images."""

    def __init__(self, model, labels: dict, source: Path, operating_point: str | None = None):
        import tensorflow as tf

        self.model = model
        self.labels = labels
        self.source = Path(source)
        self.classes: list[str] = list(labels["classes"])
        self.window = dicom_window(labels)  # DICOM files are read as the run read them
        self.threshold: float | None = labels.get("threshold")
        self.positive_class: str | None = labels.get("positive_class")
        if operating_point is not None:
            self.threshold = operating_threshold(labels, operating_point, source)
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)],
            reduce_retracing=True,
        )
        self._gradcam = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_export(cls, model_dir: Path, operating_point: str | None = None) -> "Predictor":
        """Load an export folder written by ``bench export`` (model.keras + labels.json)."""
        import keras

        import bench.layers  # noqa: F401  (registers bench's layers for loading)
        from bench.atomic import read_json

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise BenchError(f"model folder {model_dir} not found; pass a folder written by `bench export`")
        missing = [n for n in ("model.keras", "labels.json") if not (model_dir / n).is_file()]
        if missing:
            hint = (f"it is a run folder: export it first with `bench export {model_dir}`"
                    if RunFiles(model_dir).is_prepared else "pass a folder written by `bench export`")
            raise BenchError(f"{model_dir} is not an exported model ({', '.join(missing)} missing); {hint}")
        labels_path = model_dir / "labels.json"  # read first: cheap, and a damaged one costs no model load
        labels = read_json(labels_path, "export the run again (bench export RUN --to FOLDER)")
        if not isinstance(labels, dict) or not isinstance(labels.get("classes"), list) or "image_size" not in labels:
            raise BenchError(f"cannot read {labels_path}: it lacks the classes and image size of the model; "
                             "export the run again (bench export RUN --to FOLDER)")
        try:
            model = keras.saving.load_model(model_dir / "model.keras", compile=False)
        except Exception as exc:  # a corrupt or foreign .keras file: name it and the fix
            raise BenchError(f"cannot load {model_dir / 'model.keras'} ({type(exc).__name__}: {str(exc)[:200]}); "
                             "export the run again") from None
        return cls(model, labels, model_dir, operating_point)

    @classmethod
    def from_run(cls, run_dir: Path, backbone: str | None = None, operating_point: str | None = None) -> "Predictor":
        """A backbone of a run (default: the recommended one), from its export if there is
        one, else built in memory from ``best_model.keras`` (nothing is written)."""
        from bench.deploy.model import build_export_model, labels_dict
        from bench.deploy.run_info import default_export_dir, run_info

        info = run_info(run_dir, backbone)
        exported = default_export_dir(info.run_dir, info.backbone)
        if (exported / "model.keras").is_file() and (exported / "labels.json").is_file():
            return cls.from_export(exported, operating_point)
        return cls(build_export_model(info), labels_dict(info), info.model_path, operating_point)

    @classmethod
    def load(cls, path: Path, backbone: str | None = None, operating_point: str | None = None) -> "Predictor":
        """An export folder, or a run folder (its recommended or named backbone)."""
        from bench.runfolder import is_run_dir

        if is_run_dir(path):
            return cls.from_run(path, backbone, operating_point)
        return cls.from_export(path, operating_point)

    # -------------------------------------------------------------- prediction

    @property
    def image_size(self) -> int:
        return int(self.labels["image_size"])

    def probabilities_batch(self, images: np.ndarray, tta: str = "none") -> np.ndarray:
        """``(n, n_classes)`` for a uint8 batch ``(n, height, width, 3)`` of one size.

        ``tta="flip"``: test-time augmentation, the mean of the probabilities of each image
        and of its left-right mirror image (what the SavedModel's ``serve_tta`` computes)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if tta not in (*TTA_MODES, "mirror"):
            raise BenchError(f"unknown --tta {tta!r}; choose one of: {', '.join(TTA_MODES)}")
        mirrored = np.asarray(self._forward(np.ascontiguousarray(images[:, :, ::-1]))) if tta != "none" else None
        if tta == "mirror":  # the mirror images alone (bench evaluate reports with and without TTA)
            return mirrored
        out = np.asarray(self._forward(images))
        return out if mirrored is None else (out + mirrored) / 2.0

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``(n_classes,)`` for one uint8 RGB image ``(height, width, 3)`` of any size."""
        return self.probabilities_batch(np.asarray(image)[None])[0]

    def decide(self, probs: np.ndarray) -> tuple[str, float]:
        """The label (threshold rule for binary models, else argmax) and its probability."""
        if self.threshold is not None and len(self.classes) == 2:
            k = 1 if probs[1] >= self.threshold else 0
        else:
            k = int(np.argmax(probs))
        return self.classes[k], float(probs[k])

    def explained_class(self, probs: np.ndarray) -> int:
        """The class Grad-CAM explains: the positive class of a binary model (evidence for
        it, whatever the decision; the other class's map is mostly empty, as "no finding"
        has no location), else the predicted class."""
        return 1 if len(self.classes) == 2 else int(np.argmax(probs))

    def gradcam(self, image: np.ndarray, class_index: int | None = None):
        """Grad-CAM of ``image`` (see :class:`bench.deploy.gradcam.GradCam`); ``class_index`` None
        uses :meth:`explained_class`."""
        from bench.deploy.gradcam import GradCam

        if self._gradcam is None:
            self._gradcam = GradCam(self.model)
        if class_index is None and len(self.classes) == 2:
            class_index = 1
        return self._gradcam(image, class_index)


def operating_threshold(labels: dict, name: str, source: Path) -> float:
    """The threshold of operating point ``name`` in ``labels`` (an export's labels.json)."""
    from bench.evaluate.operating_points import OPERATING_POINTS

    if name not in OPERATING_POINTS:
        raise BenchError(f"unknown --operating-point {name!r}; choose one of: {', '.join(OPERATING_POINTS)}")
    if len(labels.get("classes", [])) != 2:
        raise BenchError(f"{source} classifies {len(labels.get('classes', []))} classes; operating points are "
                         "binary-only (the decision is the most probable class): leave out --operating-point")
    points = labels.get("operating_points") or {}
    if name not in points:
        raise BenchError(f"{source} has no '{name}' operating point (exported by an older bench); "
                         "export the run again with `bench export RUN`")
    return float(points[name]["threshold"])


# ---------------------------------------------------------------------- predict


@dataclass
class PredictionRow:
    file: str
    label: str
    probability: float
    probabilities: dict[str, float]
    gradcam: str | None = None


@dataclass
class PredictResult:
    rows: list[PredictionRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    csv: Path | None = None

    def lines(self) -> list[str]:
        """One tab-separated line per predicted image: file, label, probability of that label."""
        return [f"{r.file}\t{r.label}\t{r.probability:.4f}" for r in self.rows]


def collect_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files given, and every file under folders given (sorted, hidden ones left out)."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
            files.extend(sorted(found))
        elif path.exists() or path.is_symlink():
            files.append(path)  # a FIFO, device or broken link is refused with its reason when read
        else:
            missing.append((str(path), "not found"))
    seen: set[Path] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, missing


def _gradcam_name(path: Path, used: set[str]) -> str:
    base = f"{path.stem}_gradcam"
    name, n = f"{base}.png", 2
    while name in used:
        name, n = f"{base}_{n}.png", n + 1
    used.add(name)
    return name


def predict_paths(
    model_dir: Path,
    paths: Sequence[Path],
    csv: Path | None = None,
    gradcam_dir: Path | None = None,
    batch_size: int = 16,
    operating_point: str | None = None,
    tta: str = "none",
) -> PredictResult:
    """Predict every image in ``paths`` (files or folders) with the export at ``model_dir``.

    Unreadable or missing files are logged and skipped. Raises :class:`BenchError` when no
    image at all could be predicted. ``csv`` saves the rows (file, label, probability and
    one ``prob_<class>`` column per class); ``gradcam_dir`` receives one Grad-CAM overlay
    PNG per image (for the positive class of a binary model, else the predicted label).
    ``operating_point`` (binary): decide with that point's threshold from labels.json
    (``youden``, the default decision, ``sensitivity`` or ``specificity``). ``tta``:
    ``"flip"`` averages each image's probabilities with its mirror image's.
    """
    if tta not in TTA_MODES:
        raise BenchError(f"unknown --tta {tta!r}; choose one of: {', '.join(TTA_MODES)}")
    if not paths:
        raise BenchError("no images given; pass image files or folders after the model folder")
    predictor = Predictor.from_export(model_dir, operating_point)
    files, skipped = collect_files(paths)
    for name, reason in skipped:
        log.warning(f"skipped {name}: {reason}")
    if gradcam_dir is not None:
        from bench.runfolder import check_writable

        gradcam_dir = check_writable(Path(gradcam_dir), "--gradcam")
    result = PredictResult(skipped=skipped)
    used_names: set[str] = set()
    for path, image, probs in predict_files(predictor, files, result.skipped, batch_size, tta):
        label, p = predictor.decide(probs)
        row = PredictionRow(str(path), label, p, {c: float(v) for c, v in zip(predictor.classes, probs, strict=True)})
        if gradcam_dir is not None:
            row.gradcam = str(_write_gradcam(predictor, image, predictor.explained_class(probs),
                                             gradcam_dir / _gradcam_name(path, used_names)))
        result.rows.append(row)
    if csv is not None:
        result.csv = _write_csv(result, predictor.classes, Path(csv))
    if not result.rows:
        raise BenchError(
            f"no image could be predicted ({len(result.skipped)} file(s) skipped"
            + (f", e.g. {result.skipped[0][0]}: {result.skipped[0][1]}" if result.skipped else "")
            + "); pass readable JPEG, PNG, BMP, TIFF, WebP or DICOM images"
        )
    return result


def predict_files(predictor: Predictor, files: Sequence[Path], skipped: list, batch_size: int = 16,
                  tta: str = "none", log_skips: bool = True):
    """Yield ``(path, image, probabilities)`` for every readable file, in order; files
    that cannot be read go to ``skipped`` as ``(path, reason)`` (and to the log). Images are
    read ``batch_size`` at a time and fed to the model in batches of one size."""
    for start in range(0, len(files), batch_size):
        loaded: list[tuple[Path, np.ndarray]] = []
        for path in files[start : start + batch_size]:
            try:
                loaded.append((path, read_image(path, predictor.window)))
            except (UnreadableImage, OSError) as exc:
                reason = str(exc) if isinstance(exc, UnreadableImage) else f"cannot read ({exc.strerror or exc})"
                skipped.append((str(path), reason))
                if log_skips:
                    log.warning(f"skipped {path}: {reason}")
        probs: dict[int, np.ndarray] = {}
        by_shape: dict[tuple, list[int]] = {}
        for i, (_, image) in enumerate(loaded):
            by_shape.setdefault(image.shape, []).append(i)
        for members in by_shape.values():
            out = predictor.probabilities_batch(np.stack([loaded[i][1] for i in members]), tta)
            probs.update(zip(members, out, strict=True))
        for i, (path, image) in enumerate(loaded):
            yield path, image, probs[i]


def _write_gradcam(predictor: Predictor, image: np.ndarray, class_index: int, out: Path) -> Path:
    from PIL import Image

    from bench.deploy.gradcam import overlay
    from bench.atomic import write_bytes_atomic

    cam = predictor.gradcam(image, class_index)
    picture = Image.fromarray(overlay(image, cam.heatmap_for(image)))
    import io

    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
    return out


def _write_csv(result: PredictResult, classes: list[str], path: Path) -> Path:

    from bench.tables import text_frame, write_csv

    columns = {
        "file": [r.file for r in result.rows],
        "label": [r.label for r in result.rows],
        "probability": [r.probability for r in result.rows],
        **{f"prob_{c}": [r.probabilities[c] for r in result.rows] for c in classes},
    }
    if any(r.gradcam for r in result.rows):
        columns["gradcam"] = [r.gradcam for r in result.rows]
    table = text_frame(columns)
    try:
        write_csv(path, table)
    except OSError as exc:
        raise BenchError(f"cannot write --csv {path} ({exc.strerror or exc}); pass a writable path") from None
    return path
