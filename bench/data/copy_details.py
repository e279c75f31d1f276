"""The detail measure of the copy detector (:mod:`bench.data.copies`): ORB keypoints of a
candidate pair that agree on one rotation + scale + shift, the layout re-scored through
that transform, and the decision (a :class:`Link` and its kind, or nothing)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.data.copy_features import GRID, CopyFeatures, oriented, unit
from bench.parallel import map_held

#: Agreeing keypoints needed: MIN_KEYPOINTS when the layout is at least threshold + RAMP,
#: MAX_KEYPOINTS when it is just at the threshold, linear in between.
MIN_KEYPOINTS = 12
MAX_KEYPOINTS = 20
RAMP = 0.2

#: Worker processes check details from PARALLEL_CHECKS candidate pairs on (fewer checks
#: take less time than starting the pool), CHECK_CHUNK pairs per task.
PARALLEL_CHECKS = 2000
CHECK_CHUNK = 500
#: Images' features a checker keeps after reading them (~14 kB each).
READ_CACHE = 512

#: A same-orientation copy counts as resized/re-encoded (not re-processed) when its pHash and
#: dHash are within RESAVE_BITS bits and its grey-level deciles within RESAVE_LEVELS levels.
RESAVE_BITS = 8
RESAVE_LEVELS = 8

#: The kinds of copy link, in the order tables list them.
COPY_KINDS = ("exact", "resized/re-encoded", "re-processed", "mirrored/rotated")


@dataclass(frozen=True)
class Link:
    """A confirmed copy relation between records ``a < b``."""

    a: int
    b: int
    kind: str
    layout: float
    details: int


def keypoints_needed(layout: float, threshold: float) -> int:
    """Agreeing keypoints a pair with this layout score needs: MIN_KEYPOINTS at ``threshold + RAMP``
    or more, rising linearly to MAX_KEYPOINTS at ``threshold`` (below it nothing links)."""
    weakness = min(max((threshold + RAMP - layout) / RAMP, 0.0), 1.0)
    return math.ceil(MIN_KEYPOINTS + (MAX_KEYPOINTS - MIN_KEYPOINTS) * weakness - 1e-9)


def shifted_layout(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation of grid ``a`` and grid ``b`` (already oriented) over shifts of ±1 cell."""
    inner = unit(a[None, 1:-1, 1:-1])[0]
    moved = np.stack([b[1 + dy : GRID - 1 + dy, 1 + dx : GRID - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return float((unit(moved) @ inner).max())


def cross_matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The matches of ``cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a, b)`` as
    (query, train) index arrays, in query order: descriptor i of ``a`` and j of ``b`` match
    when each is the other's nearest by Hamming distance (the first one on ties).

    The same pairs in the same order (``tests/test_scan.py`` checks it against OpenCV),
    and faster: OpenCV's wheels count the differing bits a byte at a time, numpy with the
    CPU's popcount on 64-bit words. ``a``
    and ``b``: uint8 rows of a multiple of 8 bytes (ORB's are 32).
    """
    words_a = np.ascontiguousarray(np.ascontiguousarray(a).view(np.uint64).T)[:, :, None]  # (words, len(a), 1)
    words_b = np.ascontiguousarray(np.ascontiguousarray(b).view(np.uint64).T)[:, None, :]  # (words, 1, len(b))
    bits = np.bitwise_count(words_a ^ words_b)  # (words, len(a), len(b)): differing bits per word
    distance = bits[0].astype(np.int32)
    for word in bits[1:]:
        distance += word
    nearest_b = distance.argmin(1)
    nearest_a = distance.argmin(0)
    query = np.flatnonzero(nearest_a[nearest_b] == np.arange(len(a)))
    return query, nearest_b[query]


def detail_score(a: CopyFeatures, b: CopyFeatures) -> tuple[int, np.ndarray | None]:
    """Keypoints of ``a`` and ``b`` that agree on one rotation + scale + shift (RANSAC inliers), and that transform.

    The transform (2 x 3) maps ``a``'s detail picture onto ``b``'s.
    """
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.descriptors) < 4 or len(b.descriptors) < 4:
        return 0, None
    query, train = cross_matches(a.descriptors, b.descriptors)
    if len(query) < 4:
        return 0, None
    src = a.points[query]
    dst = b.points[train]
    cv2.setRNGSeed(0)
    transform, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0,
                                                     maxIters=500)
    return (0, None) if inliers is None else (int(inliers.sum()), transform)


def aligned_layout(a: CopyFeatures, b: CopyFeatures, transform: np.ndarray) -> float:
    """Layout correlation with ``b``'s grid resampled where ``transform`` puts ``a``'s grid cells.

    This undoes what the frames cannot: a crop into the content or a shift changes the
    frame, but the keypoints still say where each part of ``a`` is in ``b``.
    """
    import cv2

    centres = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    u, v = np.meshgrid(centres, centres)
    ax0, ay0, ax1, ay1 = (float(x) for x in a.frame)
    bx0, by0, bx1, by1 = (float(x) for x in b.frame)
    px, py = ax0 + u * (ax1 - ax0), ay0 + v * (ay1 - ay0)
    qx = transform[0, 0] * px + transform[0, 1] * py + transform[0, 2]
    qy = transform[1, 0] * px + transform[1, 1] * py + transform[1, 2]
    mx = ((qx - bx0) / max(bx1 - bx0, 1e-6) * GRID - 0.5).astype(np.float32)
    my = ((qy - by0) / max(by1 - by0, 1e-6) * GRID - 0.5).astype(np.float32)
    sampled = cv2.remap(b.layout.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=np.nan)
    valid = np.isfinite(sampled)
    if valid.mean() < 0.5:
        return -1.0
    x, y = a.layout.astype(np.float32)[valid], sampled[valid]
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x @ x) * (y @ y)))
    return float(x @ y) / denominator if denominator > 0 else -1.0


def _tries(row: np.ndarray) -> list[int]:
    """The orientations a pair's keypoints are checked in: the best rotation, then the best
    reflection when it is about as good (or the reverse); ORB matches across rotations but
    not across a mirror."""
    even, odd = int(np.argmax(row[0::2])) * 2, int(np.argmax(row[1::2])) * 2 + 1
    tries = sorted((even, odd), key=lambda o: -row[o])
    return [o for o in tries if row[o] >= row[tries[0]] - 0.1]


@dataclass(frozen=True)
class _Check:
    """One candidate pair for the detail measure: records ``a < b``, the orientations to try
    with their layout scores, and whether the pair's pHash and dHash are within RESAVE_BITS."""

    a: int
    b: int
    tries: tuple[tuple[int, float], ...]
    close_hashes: bool


class _Checker:
    """Confirms or rejects :class:`_Check` pairs (the costly part of :func:`find_links`).

    It holds everything a worker process needs (given to it when the process starts, so
    nothing relies on module state) and keeps the features it read last (READ_CACHE)."""

    def __init__(self, features: list[CopyFeatures], mirrored: Callable[[int], CopyFeatures] | None,
                 threshold: float) -> None:
        self.features, self.mirrored, self.threshold = features, mirrored, threshold
        self.flipped: dict[int, CopyFeatures] = {}
        self.recent: dict[int, CopyFeatures] = {}
        self.checks = self.mirrored_read = 0

    @staticmethod
    def _kept(cache: dict, i: int, read: Callable[[int], CopyFeatures]) -> tuple[CopyFeatures, bool]:
        """``cache[i]``, else ``read(i)`` kept in ``cache`` (the READ_CACHE latest); and whether it was read."""
        found = cache.get(i)
        if found is not None:
            return found, False
        if len(cache) >= READ_CACHE:
            cache.pop(next(iter(cache)))
        cache[i] = read(i)
        return cache[i], True

    def read(self, i: int) -> CopyFeatures:
        """``features[i]``: checks come in runs of the same ``b``, and a table reads every row
        from its file, so the latest are kept."""
        return self._kept(self.recent, i, self.features.__getitem__)[0]

    def other_side(self, b: int, mirror: bool) -> CopyFeatures | None:
        if not mirror:
            return self.read(b)
        if self.mirrored is None:
            return None
        found, read = self._kept(self.flipped, b, self.mirrored)
        self.mirrored_read += read
        return found

    def confirm(self, check: _Check) -> Link | None:
        fa = self.read(check.a)
        for o, layout in check.tries:
            other = self.other_side(check.b, o % 2 == 1)
            if other is None:
                continue
            self.checks += 1
            details, transform = detail_score(fa, other)
            if details < MIN_KEYPOINTS:
                continue
            shifted = shifted_layout(fa.layout.astype(np.float32),
                                     oriented(self.read(check.b).layout.astype(np.float32), o))
            score = min(max(layout - (0.01 if o == 0 else 0.0), shifted), 1.0)
            # a crop or shift the frames missed? the keypoints' transform lines the grids up
            score = max(score, aligned_layout(fa, other, transform))
            if score < self.threshold or details < keypoints_needed(score, self.threshold):
                continue
            if o:
                kind = "mirrored/rotated"
            elif check.close_hashes and np.abs(fa.levels.astype(int) - other.levels.astype(int)).max() <= RESAVE_LEVELS:
                kind = "resized/re-encoded"
            else:
                kind = "re-processed"
            return Link(check.a, check.b, kind, round(score, 4), details)
        return None

    def confirm_all(self, checks: list[_Check]) -> tuple[list[Link], dict]:
        before = (self.checks, self.mirrored_read)
        links = [link for check in checks if (link := self.confirm(check)) is not None]
        return links, {"keypoint_checks": self.checks - before[0], "mirrored_read": self.mirrored_read - before[1]}


def _confirm(checker: _Checker, checks: list[_Check], workers: int) -> tuple[list[Link], dict, int]:
    """``checker.confirm_all(checks)``, in ``workers`` processes from PARALLEL_CHECKS pairs on;
    and the processes it used."""
    # pairs with the same b together: a process reads each mirrored image once (in the order
    # the candidates come, READ_CACHE thrashes and an image is read again for many of its pairs)
    ordered = sorted(checks, key=lambda c: (c.b, c.a))
    if workers > 1 and len(checks) >= PARALLEL_CHECKS:
        size = max(1, min(CHECK_CHUNK, len(ordered) // (workers * 4)))
        found = map_held(_Checker.confirm_all, checker, [ordered[s : s + size] for s in range(0, len(ordered), size)], workers)
        if found is not None:
            counts = {key: sum(c[key] for _, c in found) for key in ("keypoint_checks", "mirrored_read")}
            return [link for links, _ in found for link in links], counts, workers
    return *checker.confirm_all(ordered), 1
