"""Where the copy measures look (:mod:`bench.data.copies`): the picture without its uniform
border, its grey levels as ranks, and the frame of its bright content.

Each of the three undoes one family of re-processing: the trim undoes padding (a padded
copy and its original trim to the same picture), ranks undo any monotone intensity change
(gamma, contrast, brightness, equalisation), and the frame moves with the content under
crops and shifts.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

#: The uniform border trimmed first: rows/columns with at most TRIM_SHARE of their pixels
#: more than TRIM_TOLERANCE grey levels from the border's median colour.
TRIM_TOLERANCE = 12
TRIM_SHARE = 0.02
TRIM_ROUNDS = 4


def trim(grey: Image.Image) -> Image.Image:
    """``grey`` without the uniform border around it (rows and columns whose pixels nearly all
    match the border's colour), repeated until nothing more comes off: a padded copy and
    its original trim to the same picture."""
    for _ in range(TRIM_ROUNDS):
        a = np.asarray(grey, dtype=np.int16)
        edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        off = np.abs(a - int(np.median(edge))) > TRIM_TOLERANCE
        rows = np.flatnonzero(off.mean(1) > TRIM_SHARE)
        cols = np.flatnonzero(off.mean(0) > TRIM_SHARE)
        if len(rows) == 0 or len(cols) == 0:
            return grey
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        if (box[2] - box[0]) * 2 < grey.width or (box[3] - box[1]) * 2 < grey.height or box == (0, 0, *grey.size):
            return grey  # mostly border: keep the whole picture rather than a speck
        grey = grey.crop(box)
    return grey


def equalised(grey: np.ndarray) -> np.ndarray:
    """Each pixel's share of darker pixels (0..1): identical for any monotone intensity change."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    below = (np.cumsum(hist) - hist) / grey.size
    return below[grey].astype(np.float32)


def content_frame(q: np.ndarray) -> tuple[float, float, float, float]:
    """Centre ± 2 spreads of the brighter half of the ranks (a uniform disc: its bounding box)."""
    w = np.clip(q - 0.5, 0.0, None)
    h, wd = q.shape
    total = float(w.sum())
    if total <= 1e-9:
        return 0.0, 0.0, float(wd), float(h)
    wx, wy = w.sum(0), w.sum(1)
    xs, ys = np.arange(wd) + 0.5, np.arange(h) + 0.5
    cx, cy = float(wx @ xs) / total, float(wy @ ys) / total
    sx = math.sqrt(float(wx @ (xs - cx) ** 2) / total) or wd / 4
    sy = math.sqrt(float(wy @ (ys - cy) ** 2) / total) or h / 4
    return cx - 2 * sx, cy - 2 * sy, cx + 2 * sx, cy + 2 * sy
