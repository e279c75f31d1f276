"""Grad-CAM for bench's models, and the test-image grid for reports.

bench's models are a chain of layers: ``[SquareResize] -> BackbonePreprocess -> backbone
-> head [-> ClassProbabilities]``, where the backbone and the head are nested Keras models.
Grad-CAM (Selvaraju et al., 2017) needs a feature map *inside* the nested backbone, which a
plain ``keras.Model(model.input, inner_layer.output)`` cannot reach. :class:`GradCam`
therefore runs the chain itself: the layers before the backbone, then a two-output view of
the backbone (``[feature map, backbone output]``), then the layers after it, under one
``GradientTape``; the gradient of the class score with respect to the feature map,
averaged over space, weights the map's channels.

The feature map is the backbone's last 4-D layer output with more than one spatial
position: normally the final feature map; for inputs so small that it is 1x1 (MobileNetV2
at 32 px), the last larger one, since a 1x1 map cannot localise anything.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.runfolder import GRADCAM_PNG


def _split_chain(model):
    """``(before, backbone, after)``: layers around the nested backbone of a bench model."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    nested = [i for i, layer in enumerate(layers)
              if isinstance(layer, keras.Model) and layer.name != "head" and len(layer.output.shape) == 4]
    if len(nested) != 1:
        raise BenchError(f"model {model.name} is not a bench classifier (expected one nested backbone model, "
                         f"found {len(nested)}); export it with `bench export`")
    i = nested[0]
    return layers[:i], layers[i], layers[i + 1 :]


def feature_layer(backbone) -> str:
    """Name of the backbone layer whose output Grad-CAM uses (see the module docstring)."""
    candidates = []
    for layer in backbone.layers:
        shape = getattr(layer, "output", None)
        shape = None if shape is None or isinstance(shape, (list, tuple)) else shape.shape
        if shape is not None and len(shape) == 4 and shape[1] and shape[2]:
            candidates.append((layer.name, shape[1] * shape[2]))
    if not candidates:
        raise BenchError(f"backbone {backbone.name} has no 4-D feature map for Grad-CAM")
    for name, area in reversed(candidates):
        if area > 1:
            return name
    return candidates[-1][0]


@dataclass
class CamResult:
    """Grad-CAM of one image.

    ``heatmap``: ``(h, w)`` in [0, 1] on the feature-map grid, covering the square the
    model saw (the padded, resized image). ``probabilities``: the model's output for the
    image. ``class_index``: the class explained. ``layer``: the feature map used.
    """

    heatmap: np.ndarray
    probabilities: np.ndarray
    class_index: int
    layer: str

    @property
    def empty(self) -> bool:
        """No positive evidence for the class anywhere (the map is all zeros)."""
        return not bool(self.heatmap.max() > 0)

    def heatmap_for(self, image: np.ndarray) -> np.ndarray:
        """The heatmap at ``image``'s own size (undoing the centred square padding)."""
        return upsample(self.heatmap, image.shape[0], image.shape[1])


class GradCam:
    """Grad-CAM for a bench model (an export or a run's ``best_model.keras``)."""

    def __init__(self, model, layer: str | None = None):
        import keras

        self.model = model
        self.before, backbone, self.after = _split_chain(model)
        self.layer = layer or feature_layer(backbone)
        self._features = keras.Model(backbone.inputs, [backbone.get_layer(self.layer).output, backbone.output],
                                     name=f"{backbone.name}_gradcam")

    def __call__(self, image: np.ndarray, class_index: int | None = None) -> CamResult:
        """``image``: one RGB image ``(height, width, 3)`` as the model takes it."""
        import tensorflow as tf

        x = tf.convert_to_tensor(np.asarray(image)[None])
        for layer in self.before:
            x = layer(x, training=False)
        with tf.GradientTape() as tape:
            fmap, x = self._features(x, training=False)
            tape.watch(fmap)
            for layer in self.after:
                x = layer(x, training=False)
            probs = x if x.shape[-1] != 1 else tf.concat([1.0 - x, x], axis=-1)
            k = int(tf.argmax(probs[0])) if class_index is None else int(class_index)
            score = probs[:, k]
        grads = tape.gradient(score, fmap)
        if grads is None:
            raise BenchError(f"no gradient from the class score to layer {self.layer}; pass another layer")
        weights = tf.reduce_mean(grads, axis=(1, 2))  # (1, channels)
        cam = tf.nn.relu(tf.reduce_sum(fmap * weights[:, None, None, :], axis=-1))[0].numpy()
        top = float(cam.max())
        cam = cam / top if top > 0 else np.zeros_like(cam)
        return CamResult(cam.astype(np.float32), np.asarray(probs[0]), k, self.layer)


def upsample(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Map a heatmap over the padded square onto a ``height`` x ``width`` image.

    bench pads an image to a centred ``side`` x ``side`` square (``side = max(height,
    width)``) before resizing; the heatmap is resized (bilinear) to that square and the
    padding is cut off again.
    """
    from PIL import Image

    side = max(height, width)
    big = Image.fromarray(np.asarray(heatmap, np.float32), mode="F").resize((side, side), Image.Resampling.BILINEAR)
    top, left = (side - height) // 2, (side - width) // 2
    return np.clip(np.asarray(big)[top : top + height, left : left + width], 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (uint8 RGB) with ``heatmap`` (same height and width, [0, 1]) in the jet
    colour map on top; cold regions stay as they were, hot ones take up to ``alpha`` colour."""
    from matplotlib import colormaps

    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"Expected a heatmap of shape {image.shape[:2]}. Received: {heatmap.shape}")
    colour = colormaps["jet"](heatmap)[..., :3] * 255.0
    a = (alpha * heatmap)[..., None]
    out = image.astype(np.float32) * (1.0 - a) + colour * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------- report grid


def pick_examples(table, classes: list[str], per_group: int = 4) -> tuple[list[dict], list[dict]]:
    """Deterministic choice of test images: ``(correct, misclassified)``.

    Misclassified: the most confident mistakes (highest probability of the wrong label).
    Correct: the most confident correct ones, taken in turn from each true class. Ties are
    broken by file name, so the same predictions always give the same picks.
    """
    rows = table.to_dict(orient="records")
    for r in rows:
        r["probability"] = float(r[f"prob_{r['prediction']}"])
        r["correct"] = bool(r["label"] == r["prediction"])
    key = lambda r: (-r["probability"], str(r["file"]))  # noqa: E731
    wrong = sorted((r for r in rows if not r["correct"]), key=key)[:per_group]
    queues = [sorted((r for r in rows if r["correct"] and r["label"] == c), key=key) for c in classes]
    correct: list[dict] = []
    while len(correct) < per_group and any(queues):
        for q in queues:
            if q and len(correct) < per_group:
                correct.append(q.pop(0))
    return correct, wrong


def gradcam_grid(run_dir: Path, out_png: Path, backbone: str | None = None, per_group: int = 4,
                 tile_px: int = 192) -> list[dict]:
    """Write a PNG grid of test images with Grad-CAM overlays for one backbone of a run.

    Top row: correctly classified test images; bottom row: misclassified ones (see
    :func:`pick_examples`). Binary runs show the evidence for the positive class on every
    tile (the negative class's map is mostly empty: "no finding" has no location); runs
    with more classes show the evidence for the label the model gave. ``backbone``
    None is the recommended model (rank 1). Uses the run's ``best_model.keras`` on the
    same arrays the run evaluated (:func:`bench.data.images.load_array`). Returns the picked
    rows (file, label, prediction, probability, correct, group) in grid order.

    Raises :class:`BenchError` when the run's data folder (the test images) is missing.
    """
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.data.images import UnreadableImage, load_array, open_rgb, square_resize
    from bench.deploy.run_info import run_info
    from bench.atomic import write_bytes_atomic
    from bench.tables import read_table

    info = run_info(run_dir, backbone)
    root = info.data_root
    if root is None or not root.is_dir():
        raise BenchError(f"the test images of run {info.run_dir.name} are not available ({root} not found); "
                         "Grad-CAM needs the run's data folder")
    predictions = info.search.test_predictions_csv
    if not predictions.is_file():
        raise BenchError(f"{info.backbone} of run {info.run_dir.name} has no test images (a --cv run without "
                         "--test-size); the Grad-CAM grid shows test images only")
    table = read_table(predictions)
    correct, wrong = pick_examples(table, info.classes, per_group)
    model = keras.saving.load_model(info.model_path, compile=False)
    cam = GradCam(model)
    binary = len(info.classes) == 2
    # binary: evidence for the positive class on every tile (a "no finding" map is mostly
    # empty); more classes: evidence for the label the model gave
    explained = (lambda row: 1) if binary else (lambda row: info.classes.index(row["prediction"]))  # noqa: E731
    size = info.image_size
    show = max(size, tile_px)
    cols = max(per_group, 1)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 5.8), squeeze=False, layout="constrained")
    picked = []
    for r_i, (group, rows) in enumerate((("correct", correct), ("misclassified", wrong))):
        for c_i in range(cols):
            ax = axes[r_i][c_i]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c_i >= len(rows):
                if c_i == 0:
                    ax.text(0.5, 0.5, f"no {group}\ntest images", ha="center", va="center", fontsize=9, color="0.4")
                continue
            row = rows[c_i]
            path = root / row["file"]
            try:
                result = cam(load_array(path, size), explained(row))
                picture = square_resize(open_rgb(path)[0], show)
            except (UnreadableImage, OSError) as exc:
                raise BenchError(f"cannot read test image {path} ({exc}); the run's data folder changed") from None
            ax.imshow(overlay(picture, upsample(result.heatmap, show, show)))
            ax.set_title(f"{Path(row['file']).name[:22]}\ntrue {row['label']}\npred {row['prediction']} "
                         f"({row['probability']:.2f})", fontsize=7, color="black" if row["correct"] else "firebrick")
            picked.append({"file": row["file"], "label": row["label"], "prediction": row["prediction"],
                           "probability": row["probability"], "correct": row["correct"], "group": group,
                           "explained_class": info.classes[explained(row)]})
        axes[r_i][0].set_ylabel(group, fontsize=9)
    what = f"evidence for '{info.classes[1]}'" if binary else "evidence for the predicted label"
    fig.suptitle(f"Grad-CAM ({what}) on test images: {info.backbone}, layer {cam.layer}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(Path(out_png), buf.getvalue())
    return picked


def write_run_gradcam(run_dir: Path, backbone: str | None = None, per_group: int = 4) -> Path:
    """Write ``RUN/<backbone>/gradcam_grid.png`` and ``gradcam_grid.json`` (the picks), so
    reports can show the grid without predicting anything. Returns the PNG's path."""
    from bench.deploy.run_info import run_info
    from bench.atomic import write_json_atomic

    info = run_info(run_dir, backbone)
    search = info.search
    picks = gradcam_grid(info.run_dir, search.gradcam_png, info.backbone, per_group=per_group)
    write_json_atomic(search.gradcam_json, {"backbone": info.backbone, "image": GRADCAM_PNG, "picks": picks})
    return search.gradcam_png
