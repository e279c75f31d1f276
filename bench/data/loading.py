"""Load the images of a split as uint8 arrays, and make fixed augmented views.

Arrays hold raw RGB in [0, 255]: each backbone's own preprocessing is a layer inside its
model (:class:`bench.layers.BackbonePreprocess`), so the same arrays serve every backbone.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.data.images import UnreadableImage, load_array
from bench.errors import BenchError


def load_images(root: Path, rows: list[dict], size: int) -> np.ndarray:
    """``(len(rows), size, size, 3)`` uint8 for the split rows (paths relative to ``root``)."""
    root = Path(root)

    def _one(row: dict) -> np.ndarray:
        try:
            return load_array(root / row["path"], size)
        except (UnreadableImage, OSError) as exc:
            raise BenchError(
                f"cannot load {root / row['path']} ({exc}); the data folder changed since the split was made: "
                "restore the file or start a new run"
            ) from None

    if not rows:
        return np.zeros((0, size, size, 3), np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return np.stack(list(pool.map(_one, rows)))


def label_indices(rows: list[dict], classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[r["label"]] for r in rows], dtype=np.int64)


def augmented_views(images: np.ndarray, views: int, seed: int) -> np.ndarray:
    """``views`` random augmentations of every image, view-major: shape (views*N, ...).

    Flip (horizontal), small rotation (±18°), zoom (±10 %), shift (±5 %) and contrast
    (±10 %): changes a radiologist would accept as the same finding. Seeded, so a cache
    of their features stays exact and reusable.
    """
    import keras

    if views <= 0 or len(images) == 0:
        return np.zeros((0, *images.shape[1:]), np.uint8)
    pipeline = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 3),
            keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 4),
        ]
    )
    out = []
    x = images.astype("float32")
    for _ in range(views):
        for start in range(0, len(x), 64):
            batch = pipeline(x[start : start + 64], training=True)
            out.append(np.clip(np.round(keras.ops.convert_to_numpy(batch)), 0, 255).astype(np.uint8))
    return np.concatenate(out)
