"""Candidate pairs for the copy detector (:mod:`bench.data.copies`): each image's most
similar images by coarse layout, the pairs' layout scores in the 8 orientations, and which
pairs are worth the keypoint check."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from bench.data.copy_features import GRID, oriented, unit
from bench.parallel import map_held

#: Side of the candidate grid (the layout, 2 × 2 averaged).
COARSE = 16

#: Dimensions the candidate search works in (principal components of the coarse grids).
COMPONENTS = 64

#: Candidate pairs kept per image (its most similar images by layout), in the framed layout
#: and in these further views.
CANDIDATES = 16
CANDIDATE_VIEWS = ("spots",)

#: Candidates below this coarse similarity are never scored.
CANDIDATE_FLOOR = 0.4

#: Candidates whose layout (in their frames) is below this are not looked at in detail.
LAYOUT_GATE = 0.4

#: The detail measure's budget: at most this many pairs in all (checks are the costly part), and
#: at least DETAIL_CANDIDATES per image (its best candidates by layout, in either view).
DETAIL_BUDGET = 250_000
DETAIL_CANDIDATES = 5

#: Rows of matrix products per block (memory: 8 x BLOCK x n float32), fewer from
#: PRODUCT_CELLS / (8 n) down: the products stay under 64 MB at any n (256 rows at 50,000
#: images would take 410 MB).
BLOCK = 256
PRODUCT_CELLS = 16 * 2**20


def block_rows(n: int) -> int:
    """Images per block of the nearest-image search among ``n``."""
    return max(1, min(BLOCK, PRODUCT_CELLS // (8 * max(n, 1))))

#: Grids per block of layout scores and coarse grids (memory: 8 x BLOCK_J x GRID x GRID float32).
BLOCK_J = 2048

#: Worker processes search candidates and score layouts from PARALLEL_CANDIDATES images on:
#: below it, starting the pool costs more than it saves (``benchmarks/copies.py --cutoffs``
#: measures the cut-over).
PARALLEL_CANDIDATES = 8000


def _coarse(grids: np.ndarray) -> np.ndarray:
    """``(n, COARSE, COARSE)`` float32: the grids 2 x 2 averaged, BLOCK_J grids at a time."""
    n = grids.shape[0]
    out = np.empty((n, COARSE, COARSE), dtype=np.float32)
    for s in range(0, n, BLOCK_J):
        g = grids[s : s + BLOCK_J].astype(np.float32)
        out[s : s + len(g)] = g.reshape(len(g), COARSE, GRID // COARSE, COARSE, GRID // COARSE).mean((2, 4))
    return out


def principal_axes(sample: np.ndarray, k: int) -> np.ndarray:
    """``(d, k)`` float32: the ``k`` leading principal axes of the rows of ``sample`` ``(m, d)``.

    The eigenvectors of the rows' scatter matrix (d x d, summed in float64 over BLOCK_J rows
    at a time), largest eigenvalue first: the right singular vectors of the centred sample,
    without the SVD's m x d copies and workspace (the scatter matrix needs one block of rows
    at a time, whatever ``m``). One BLAS thread, as in the candidate
    search throughout: the same numbers on any number of cores (OpenBLAS's sums depend on
    its thread count). An axis's sign is arbitrary: similarities on the basis do not
    depend on it.
    """
    mean = sample.mean(0, dtype=np.float64)
    scatter = np.zeros((sample.shape[1], sample.shape[1]))
    with threadpool_limits(1, user_api="blas"):
        for s in range(0, len(sample), BLOCK_J):
            block = sample[s : s + BLOCK_J].astype(np.float64) - mean
            scatter += block.T @ block
        _, vectors = np.linalg.eigh(scatter)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :k], dtype=np.float32)


class Projection:
    """The coarse grids of n images and the basis of their k <= 64 principal components.

    ``base`` ``(n, k)``: every image as is on the basis, scaled to unit length (so dot
    products are similarities); :meth:`turned` gives a block of images in all 8
    orientations the same way. Memory: the coarse grids (1 kB per image) and ``base``
    (256 bytes per image); the 8 orientations are made a block at a time.
    """

    def __init__(self, grids: np.ndarray) -> None:
        self.coarse = _coarse(grids)
        n = len(self.coarse)
        picked = np.arange(8 * n)
        if 8 * n > 40_000:  # the principal components of 40,000 (orientation, image) draws
            picked = np.random.default_rng(0).choice(8 * n, 40_000, replace=False)
        sample = np.empty((len(picked), COARSE * COARSE), dtype=np.float32)
        for o in range(8):
            rows = np.flatnonzero(picked // n == o)
            sample[rows] = unit(oriented(self.coarse[picked[rows] % n], o))
        k = min(COMPONENTS, sample.shape[1], max(1, sample.shape[0] - 1))
        self.basis = principal_axes(sample, k)
        del sample
        self.base = np.concatenate([self.turned(s, min(n, s + BLOCK_J))[0] for s in range(0, n, BLOCK_J)])

    def turned(self, s: int, e: int) -> np.ndarray:
        """``(8, e - s, k)``: images ``s..e - 1`` in each orientation, on the basis, unit length."""
        with threadpool_limits(1, user_api="blas"):
            proj = np.stack([unit(oriented(self.coarse[s:e], o)) @ self.basis for o in range(8)])
        proj /= np.maximum(np.linalg.norm(proj, axis=2, keepdims=True), 1e-9)
        return proj


def nearest(projection: Projection, rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For images ``rows[0]..rows[1] - 1``: their CANDIDATES most similar images (best
    orientation) and those similarities, ``(m, CANDIDATES)`` each."""
    base = projection.base  # (n, k): every image as is
    n = len(base)
    keep = min(CANDIDATES, n - 1)
    step = block_rows(n)
    products = np.empty((8 * min(step, rows[1] - rows[0]), n), dtype=np.float32)
    near = np.empty((rows[1] - rows[0], keep), dtype=np.int64)
    similarity = np.empty((rows[1] - rows[0], keep), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        for s in range(rows[0], rows[1], step):
            e = min(rows[1], s + step)
            turned = projection.turned(s, e)
            block = np.matmul(turned.reshape(-1, turned.shape[2]), base.T, out=products[: 8 * (e - s)])
            sims = block.reshape(8, e - s, n).max(0)
            sims[np.arange(e - s), np.arange(s, e)] = -np.inf
            top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
            near[s - rows[0] : e - rows[0]] = top
            similarity[s - rows[0] : e - rows[0]] = np.take_along_axis(sims, top, 1)
    return near, similarity


def _pair_keys(near: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Sorted unique ``i * n + j``, i < j, of each image's nearest at CANDIDATE_FLOOR or more."""
    n = len(near)
    rows = np.repeat(np.arange(n), near.shape[1])
    kept = similarity.ravel() >= CANDIDATE_FLOOR
    i, j = rows[kept], near.ravel()[kept]
    return np.unique(np.minimum(i, j) * n + np.maximum(i, j))


def candidate_pairs(grids: np.ndarray) -> np.ndarray:
    """``(P, 2)`` pairs ``i < j``, sorted: each image's most similar images by coarse layout.

    Similarity is the best over the 8 orientations, on the grids' 64 principal components.
    """
    return _candidates([grids], workers=1)


def _by_j(pairs: np.ndarray, n: int) -> list[tuple[np.ndarray, int, int]]:
    """``(rows, s, e)``: the rows of ``pairs`` whose ``j`` is in ``s..e - 1``, for blocks of BLOCK_J grids."""
    order = np.argsort(pairs[:, 1], kind="stable")
    bounds = np.searchsorted(pairs[order, 1], np.arange(0, n + BLOCK_J, BLOCK_J))
    return [(order[bounds[k] : bounds[k + 1]], s, min(n, s + BLOCK_J))
            for k, s in enumerate(range(0, n, BLOCK_J)) if bounds[k + 1] > bounds[k]]


def _layout_block(grids: np.ndarray, pairs: np.ndarray, s: int, e: int) -> np.ndarray:
    """:func:`layout_scores` of ``pairs`` whose ``j`` are all in ``s..e - 1``."""
    out = np.empty((len(pairs), 8), dtype=np.float32)
    turned = [unit(oriented(grids[s:e], o)) for o in range(8)]
    for c in range(0, len(pairs), 8192):
        chunk = pairs[c : c + 8192]
        a, b = unit(grids[chunk[:, 0]]), chunk[:, 1] - s
        for o in range(8):
            out[c : c + len(chunk), o] = np.einsum("pd,pd->p", a, turned[o][b])
    return out


def layout_scores(grids: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(P, 8)``: correlation of ``grid_i`` with each orientation ``o`` of ``grid_j`` (``pairs``: ``(P, 2)``).

    Each ``j`` grid is centred and scaled once per orientation (not once per pair), in
    blocks of BLOCK_J grids; every row's numbers are the same however the rows are split.
    """
    return _layouts([grids], pairs, workers=1)[0]


def _worth_a_look(pairs: np.ndarray, gate: np.ndarray, n: int) -> np.ndarray:
    """Which candidate pairs get the (costly) detail measure: each image's best candidates by
    layout (in either view) above LAYOUT_GATE, as many as the budget allows (all of them up
    to ~15,000 images; DETAIL_CANDIDATES each at 50,000). Best first, a pair is looked at
    while one of its images has had fewer than that many better pairs."""
    per_image = max(DETAIL_CANDIDATES, DETAIL_BUDGET // max(n, 1))
    order = np.argsort(-gate, kind="stable")
    order = order[gate[order] >= LAYOUT_GATE]
    ends = pairs[order].ravel()  # a, b of the best pair, then of the next...
    # for each end, how many better pairs its image already had
    by_image = np.argsort(ends, kind="stable")
    first = np.searchsorted(ends[by_image], ends[by_image])
    earlier = np.empty(len(ends), dtype=np.int64)
    earlier[by_image] = np.arange(len(ends)) - first
    keep = np.zeros(len(pairs), dtype=bool)
    keep[order] = (earlier[0::2] < per_image) | (earlier[1::2] < per_image)
    return keep


def _nearest_held(projections: list[Projection], task: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    view, start, stop = task
    return nearest(projections[view], (start, stop))


def _candidates(grid_sets: list[np.ndarray], workers: int) -> np.ndarray:
    """:func:`candidate_pairs` of each of ``grid_sets`` (grids of the same images), merged; the
    nearest-image search in ``workers`` processes from PARALLEL_CANDIDATES images on."""
    n = len(grid_sets[0])
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    projections = [Projection(g) for g in grid_sets]
    # about 4 tasks per worker, on BLOCK boundaries: the products are then those of one search
    blocks_per_task = -(-n // (block_rows(n) * max(1, 4 * workers // len(grid_sets))))
    step = block_rows(n) * blocks_per_task
    tasks = [(v, s, min(n, s + step)) for v in range(len(projections)) for s in range(0, n, step)]
    found = None
    if workers > 1 and n >= PARALLEL_CANDIDATES:
        found = map_held(_nearest_held, projections, tasks, workers)
    if found is None:
        found = [_nearest_held(projections, task) for task in tasks]
    keys = []
    for v in range(len(projections)):
        parts = [f for task, f in zip(tasks, found) if task[0] == v]
        keys.append(_pair_keys(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys // n, keys % n], axis=1)


def _layout_held(state: tuple, task: tuple[int, np.ndarray, int, int]) -> np.ndarray:
    grid_sets, pairs = state
    view, rows, s, e = task
    return _layout_block(grid_sets[view], pairs[rows], s, e)


def _layouts(grid_sets: list[np.ndarray], pairs: np.ndarray, workers: int) -> list[np.ndarray]:
    """:func:`layout_scores` of ``pairs`` in each of ``grid_sets``, in ``workers`` processes
    from PARALLEL_CANDIDATES images on."""
    tasks = [(v, rows, s, e) for v in range(len(grid_sets)) for rows, s, e in _by_j(pairs, len(grid_sets[0]))]
    state = (grid_sets, pairs)
    found = None
    if workers > 1 and len(grid_sets[0]) >= PARALLEL_CANDIDATES and tasks:
        found = map_held(_layout_held, state, tasks, workers)
    if found is None:
        found = [_layout_held(state, task) for task in tasks]
    out = [np.empty((len(pairs), 8), dtype=np.float32) for _ in grid_sets]
    for (v, rows, _, _), scores in zip(tasks, found):
        out[v][rows] = scores
    return out
