"""What the copy detector keeps of one image (:mod:`bench.data.copies`): its layout grids,
keypoints and grey levels, and the 8 orientations of a grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.data.framing import content_frame, equalised, trim

#: Side of the layout grid.
GRID = 32

#: Longest side of the picture ORB looks at.
DETAIL_SIDE = 256
DETAIL_FEATURES = 250
#: Smoothing before ORB, in pixels of the original image (at least 1 pixel of the detail picture).
SMOOTH_PIXELS = 1.0


@dataclass
class CopyFeatures:
    """What the copy detector keeps of one image (not written to disk)."""

    layout: np.ndarray  # (GRID, GRID) float16, equalised, framed
    frame: np.ndarray  # (4,) float32: x0, y0, x1, y1 of the layout's frame in the detail picture
    spots: np.ndarray | None  # (GRID, GRID) float16: framed by its keypoints (a second view for candidates)
    levels: np.ndarray | None  # (9,) uint8: grey-level deciles (tells a re-encoded copy from a contrast-changed one)
    points: np.ndarray  # (k, 2) float32 keypoint positions in the detail picture
    descriptors: np.ndarray | None  # (k, 32) uint8 ORB descriptors


def _detail_size(grey: Image.Image) -> Image.Image:
    """The picture both measures look at: longest side DETAIL_SIDE, so copies at other sizes line up."""
    f = DETAIL_SIDE / max(grey.size)
    size = (max(16, round(grey.width * f)), max(16, round(grey.height * f)))
    if size == grey.size:
        return grey
    return grey.resize(size, Image.Resampling.BOX if f < 1 else Image.Resampling.BICUBIC)


def _sample(q: Image.Image, frame) -> np.ndarray:
    framed = q.transform((GRID * 4, GRID * 4), Image.Transform.EXTENT, tuple(float(v) for v in frame),
                         resample=Image.Resampling.BILINEAR, fillcolor=0.0)
    return np.asarray(framed.resize((GRID, GRID), Image.Resampling.BOX), dtype=np.float32)


def layout_grid(q: Image.Image) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The equalised picture ``q`` sampled on GRID x GRID cells over its frame, and the frame."""
    frame = content_frame(np.asarray(q))
    return _sample(q, frame), frame


def spots_grid(q: Image.Image, points: np.ndarray) -> np.ndarray:
    """The equalised picture ``q`` over the frame of its keypoints (centre ± 2 spreads): a second
    view for candidates, which padding cannot move (a pad has no keypoints); the whole
    picture when there are too few keypoints."""
    if len(points) < 8:
        return _sample(q, (0.0, 0.0, float(q.width), float(q.height)))
    centre, spread = points.mean(0), np.maximum(points.std(0), 4.0)
    return _sample(q, (*(centre - 2 * spread), *(centre + 2 * spread)))


_ORB = None


def _orb():
    global _ORB
    if _ORB is None:
        import cv2

        _ORB = cv2.ORB_create(nfeatures=DETAIL_FEATURES, fastThreshold=5, edgeThreshold=11, patchSize=11)
    return _ORB


DECILES = np.arange(10, 100, 10)


def deciles(grey: np.ndarray) -> np.ndarray:
    """``np.percentile(grey, [10, 20, .., 90])`` of a uint8 picture, rounded to uint8: the same
    numbers (numpy's linear interpolation between the two nearest ranks), read from the
    grey-level counts instead of sorting every pixel."""
    below = np.cumsum(np.bincount(grey.ravel(), minlength=256))  # below[v]: pixels <= v
    n = int(below[-1])
    position = (n - 1) * (DECILES / 100)
    lower = np.floor(position)
    # the grey level at sorted rank r is the first v with more than r pixels <= v
    a = np.searchsorted(below, lower, side="right")
    b = np.searchsorted(below, np.minimum(lower + 1, n - 1), side="right")
    t = position - lower
    step = b - a
    return np.where(t >= 0.5, b - step * (1 - t), a + step * t).round().astype(np.uint8)


def copy_features(image: Image.Image, candidates: bool = True) -> CopyFeatures:
    """The layout grid and keypoints of one image (any mode; it is converted to grey).

    ``candidates=False``: without what only the candidate search and the kinds of link use
    (``spots`` and ``levels`` are None), for a mirrored image, which is only ever the other
    side of a pair's detail check.
    """
    import cv2

    grey = trim(image.convert("L"))
    picture = _detail_size(grey)
    ranks = Image.fromarray(equalised(np.asarray(picture)), mode="F")
    grid, frame = layout_grid(ranks)
    # smooth at the original's pixel scale: an upsampled small image's noise must not make corners
    sigma = max(1.0, SMOOTH_PIXELS * DETAIL_SIDE / max(grey.size))
    smooth = cv2.equalizeHist(cv2.GaussianBlur(np.ascontiguousarray(np.asarray(picture)), (0, 0), sigma))
    kps, des = _orb().detectAndCompute(smooth, None)
    points = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
    if not candidates:
        return CopyFeatures(grid.astype(np.float16), np.array(frame, dtype=np.float32), None, None, points, des)
    return CopyFeatures(grid.astype(np.float16), np.array(frame, dtype=np.float32),
                        spots_grid(ranks, points).astype(np.float16), deciles(np.asarray(picture)), points, des)


def mirrored_features(image: Image.Image) -> CopyFeatures:
    """The features of ``image`` flipped left-right that the detail measure needs for mirror
    images (no ``spots`` or ``levels``: see :func:`copy_features`)."""
    return copy_features(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), candidates=False)


# ---------------------------------------------------------------------------------------
# Orientations: index o = 2 * quarter_turns + flipped (flip after rotation), 0 = as is.
# ---------------------------------------------------------------------------------------


def oriented(grids: np.ndarray, o: int) -> np.ndarray:
    """Orientation ``o`` of a grid or of a stack of grids (the last two axes)."""
    turned = np.rot90(grids, o // 2, axes=(-2, -1))
    return turned[..., ::-1] if o % 2 else turned


def orientations(grids: np.ndarray) -> np.ndarray:
    """``(n, s, s)`` -> ``(8, n, s, s)``: the 8 flips/rotations of every grid."""
    return np.stack([oriented(grids, o) for o in range(8)])


def unit(v: np.ndarray) -> np.ndarray:
    v = v.reshape(v.shape[0], -1).astype(np.float32)
    v = v - v.mean(1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
