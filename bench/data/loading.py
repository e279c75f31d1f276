"""Load the images of a split as uint8 arrays, and make fixed augmented views.

Arrays hold raw RGB in [0, 255]: each backbone's own preprocessing is a layer inside its
model (:class:`bench.layers.BackbonePreprocess`), so the same arrays serve every backbone.

Splits are streamed: :func:`image_batches` decodes and resizes one batch at a time in
threads, a few batches ahead of the caller, so decoding overlaps the forward pass and
memory holds a few batches, never the split. :func:`load_images` (everything at once) is
for small sets (BatchNorm calibration, tests).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.data.images import UnreadableImage, load_array
from bench.errors import BenchError


#: Batches decoded ahead of the one the caller is using.
AHEAD = 2


def _load_row(root: Path, row: dict, size: int) -> np.ndarray:
    try:
        return load_array(root / row["path"], size)
    except (UnreadableImage, OSError) as exc:
        raise BenchError(
            f"cannot load {root / row['path']} ({exc}); the data folder changed since the split was made: "
            "restore the file or start a new run"
        ) from None


def image_batches(root: Path, rows: list[dict], size: int, batch_size: int = 32) -> Iterator[np.ndarray]:
    """``(<= batch_size, size, size, 3)`` uint8 batches of the split rows, in order.

    Decoding runs in a thread pool, :data:`AHEAD` batches ahead: while the caller runs a
    batch through a model (TensorFlow releases the GIL), the next ones are decoded.
    """
    root = Path(root)
    starts = iter(range(0, len(rows), batch_size))
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:

        def submit(start: int) -> list:
            return [pool.submit(_load_row, root, row, size) for row in rows[start : start + batch_size]]

        pending = deque(submit(start) for _, start in zip(range(AHEAD + 1), starts))
        while pending:
            futures = pending.popleft()
            batch = np.stack([f.result() for f in futures])
            following = next(starts, None)
            if following is not None:
                pending.append(submit(following))
            yield batch


def load_images(root: Path, rows: list[dict], size: int) -> np.ndarray:
    """``(len(rows), size, size, 3)`` uint8 for the split rows (paths relative to ``root``),
    all at once: for small sets only; stream splits with :func:`image_batches`."""
    if not rows:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.concatenate(list(image_batches(root, rows, size, batch_size=64)))


def label_indices(rows: list[dict], classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[r["label"]] for r in rows], dtype=np.int64)


#: Images per augmentation call; part of what the seeded draws depend on.
AUG_CHUNK = 64


def augmented_batches(root: Path, rows: list[dict], size: int, views: int, seed: int) -> Iterator[np.ndarray]:
    """``views`` random augmentations of every image, view-major, streamed in batches of
    :data:`AUG_CHUNK` (each view decodes the split again rather than holding it).

    Flip (horizontal), small rotation (±18°), zoom (±10 %), shift (±5 %) and contrast
    (±10 %): changes a radiologist would accept as the same finding. Seeded, so a cache
    of their features stays exact and reusable.
    """
    import keras

    if views <= 0 or not rows:
        return
    pipeline = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 3),
            keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 4),
        ]
    )
    for _ in range(views):
        for images in image_batches(root, rows, size, AUG_CHUNK):
            batch = pipeline(images.astype("float32"), training=True)
            yield np.clip(np.round(keras.ops.convert_to_numpy(batch)), 0, 255).astype(np.uint8)
