"""Candidate pairs for the copy detector (:mod:`bench.data.copies`): each image's most
similar images by coarse layout, the pairs' layout scores in the 8 orientations, and which
pairs are worth the keypoint check."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from bench.data.copy_features import GRID, oriented, orientations, unit
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

#: The detail measure's budget: at most this many pairs in all (~0.4 ms a check), and
#: at least DETAIL_CANDIDATES per image (its best candidates by layout, in either view).
DETAIL_BUDGET = 250_000
DETAIL_CANDIDATES = 5

#: Rows of matrix products per block (memory: 8 x BLOCK x n float32).
BLOCK = 256

#: Grids per block of layout scores (memory: 8 x BLOCK_J x GRID x GRID float32).
BLOCK_J = 4096

#: Worker processes search candidates and score layouts from PARALLEL_CANDIDATES images on
#: (``benchmarks/copies.py --cutoffs``, 2 cores, two runs: 0.85x as fast at 2,000 images,
#: 0.8-1.16x at 5,000, 1.36-1.39x at 10,000).
PARALLEL_CANDIDATES = 8000


def _coarse(grids: np.ndarray) -> np.ndarray:
    n = grids.shape[0]
    return grids.reshape(n, COARSE, GRID // COARSE, COARSE, GRID // COARSE).mean((2, 4))

def projections(grids: np.ndarray) -> np.ndarray:
    """``(8, n, k)``: each orientation of each coarse grid on the grids' k <= 64 principal
    components, scaled to unit length (so dot products are similarities)."""
    views = orientations(_coarse(grids))  # (8, n, 16, 16)
    flat = np.stack([unit(v) for v in views])  # (8, n, 256)
    sample = flat.reshape(-1, flat.shape[-1])
    if sample.shape[0] > 40_000:
        sample = sample[np.random.default_rng(0).choice(sample.shape[0], 40_000, replace=False)]
    k = min(COMPONENTS, sample.shape[1], max(1, sample.shape[0] - 1))
    # one BLAS thread, in the candidate search throughout: the same numbers on any number of
    # cores (OpenBLAS's sums depend on its thread count), and its threaded SVD of this
    # 40,000 x 256 matrix takes 1-30 s depending on the data, a single thread about 1 s
    with threadpool_limits(1, user_api="blas"):
        basis = np.linalg.svd(sample - sample.mean(0), full_matrices=False)[2][:k].T.astype(np.float32)
        proj = flat @ basis
    proj /= np.maximum(np.linalg.norm(proj, axis=2, keepdims=True), 1e-9)
    return proj

def nearest(proj: np.ndarray, rows: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For images ``rows[0]..rows[1] - 1``: their CANDIDATES most similar images (best
    orientation) and those similarities, ``(m, CANDIDATES)`` each."""
    n = proj.shape[1]
    keep = min(CANDIDATES, n - 1)
    base = proj[0]  # (n, k): every image as is
    products = np.empty((8 * min(BLOCK, rows[1] - rows[0]), n), dtype=np.float32)
    near = np.empty((rows[1] - rows[0], keep), dtype=np.int64)
    similarity = np.empty((rows[1] - rows[0], keep), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        for s in range(rows[0], rows[1], BLOCK):
            e = min(rows[1], s + BLOCK)
            block = np.matmul(proj[:, s:e].reshape(-1, proj.shape[2]), base.T, out=products[: 8 * (e - s)])
            sims = block.reshape(8, e - s, n).max(0)
            sims[np.arange(e - s), np.arange(s, e)] = -np.inf
            top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
            near[s - rows[0] : e - rows[0]] = top
            similarity[s - rows[0] : e - rows[0]] = np.take_along_axis(sims, top, 1)
    return near, similarity

def _pairs_of(near: np.ndarray, similarity: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(i, j): similarity}``, i < j, from each image's nearest (those at CANDIDATE_FLOOR or more)."""
    n = len(near)
    rows = np.repeat(np.arange(n), near.shape[1])
    kept = similarity.ravel() >= CANDIDATE_FLOOR
    i, j, sim = rows[kept], near.ravel()[kept], similarity.ravel()[kept]
    # a pair found from both sides keeps its higher similarity
    keys, where = np.unique(np.minimum(i, j) * n + np.maximum(i, j), return_inverse=True)
    best = np.full(len(keys), -np.inf, dtype=np.float32)
    np.maximum.at(best, where, sim)
    return dict(zip(zip((keys // n).tolist(), (keys % n).tolist()), best.tolist()))

def candidate_pairs(grids: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(i, j): similarity}`` for i < j: each image's most similar images by coarse layout.

    Similarity is the best over the 8 orientations, on the grids' 64 principal components.
    """
    n = grids.shape[0]
    if n < 2:
        return {}
    return _pairs_of(*nearest(projections(grids), (0, n)))

def _by_j(pairs: np.ndarray, n: int) -> list[tuple[np.ndarray, int, int]]:
    """``(rows, s, e)``: the rows of ``pairs`` whose ``j`` is in ``s..e - 1``, for blocks of BLOCK_J grids."""
    order = np.argsort(pairs[:, 1], kind="stable")
    bounds = np.searchsorted(pairs[order, 1], np.arange(0, n + BLOCK_J, BLOCK_J))
    return [(order[bounds[k] : bounds[k + 1]], s, min(n, s + BLOCK_J))
            for k, s in enumerate(range(0, n, BLOCK_J)) if bounds[k + 1] > bounds[k]]

def _layout_block(grids: np.ndarray, units: np.ndarray, pairs: np.ndarray, s: int, e: int) -> np.ndarray:
    """:func:`layout_scores` of ``pairs`` whose ``j`` are all in ``s..e - 1`` (``units``: ``unit(grids)``)."""
    out = np.empty((len(pairs), 8), dtype=np.float32)
    turned = [unit(oriented(grids[s:e], o)) for o in range(8)]
    for c in range(0, len(pairs), 8192):
        chunk = pairs[c : c + 8192]
        a, b = units[chunk[:, 0]], chunk[:, 1] - s
        for o in range(8):
            out[c : c + len(chunk), o] = np.einsum("pd,pd->p", a, turned[o][b])
    return out

def layout_scores(grids: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(P, 8)``: correlation of ``grid_i`` with each orientation ``o`` of ``grid_j`` (``pairs``: ``(P, 2)``).

    Each grid is centred and scaled once per orientation (not once per pair), the ``j``
    side in blocks of BLOCK_J grids; every row's numbers are the same however the rows
    are split.
    """
    out = np.empty((len(pairs), 8), dtype=np.float32)
    units = unit(grids)
    for rows, s, e in _by_j(pairs, len(grids)):
        out[rows] = _layout_block(grids, units, pairs[rows], s, e)
    return out

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

def _nearest_held(projs: list[np.ndarray], task: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    view, start, stop = task
    return nearest(projs[view], (start, stop))

def _candidates(grid_sets: list[np.ndarray], workers: int) -> dict[tuple[int, int], float]:
    """:func:`candidate_pairs` of each of ``grid_sets`` (grids of the same images), merged; the
    nearest-image search in ``workers`` processes from PARALLEL_CANDIDATES images on."""
    n = len(grid_sets[0])
    projs = [projections(g) for g in grid_sets]
    # about 4 tasks per worker, on BLOCK boundaries: the products are then those of one search
    blocks_per_task = -(-n // (BLOCK * max(1, 4 * workers // len(grid_sets))))
    step = BLOCK * blocks_per_task
    tasks = [(v, s, min(n, s + step)) for v in range(len(projs)) for s in range(0, n, step)]
    found = None
    if workers > 1 and n >= PARALLEL_CANDIDATES:
        found = map_held(_nearest_held, projs, tasks, workers)
    if found is None:
        found = [_nearest_held(projs, task) for task in tasks]
    merged: dict[tuple[int, int], float] = {}
    for v in range(len(projs)):
        parts = [f for task, f in zip(tasks, found) if task[0] == v]
        pairs = _pairs_of(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        for key, sim in pairs.items():
            merged[key] = max(merged.get(key, -1.0), sim)
    return merged

def _layout_held(state: tuple, task: tuple[int, np.ndarray, int, int]) -> np.ndarray:
    grid_sets, unit_sets, pairs = state
    view, rows, s, e = task
    return _layout_block(grid_sets[view], unit_sets[view], pairs[rows], s, e)

def _layouts(grid_sets: list[np.ndarray], pairs: np.ndarray, workers: int) -> list[np.ndarray]:
    """:func:`layout_scores` of ``pairs`` in each of ``grid_sets``, in ``workers`` processes
    from PARALLEL_CANDIDATES images on."""
    tasks = [(v, rows, s, e) for v in range(len(grid_sets)) for rows, s, e in _by_j(pairs, len(grid_sets[0]))]
    state = (grid_sets, [unit(g) for g in grid_sets], pairs)
    found = None
    if workers > 1 and len(grid_sets[0]) >= PARALLEL_CANDIDATES and tasks:
        found = map_held(_layout_held, state, tasks, workers)
    if found is None:
        found = [_layout_held(state, task) for task in tasks]
    out = [np.empty((len(pairs), 8), dtype=np.float32) for _ in grid_sets]
    for (v, rows, _, _), scores in zip(tasks, found):
        out[v][rows] = scores
    return out
