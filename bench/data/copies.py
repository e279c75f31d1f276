"""Find images that are copies of each other, even after re-processing.

Two images are linked as copies when two independent measures agree:

1. **Layout**: both pictures are histogram-equalised (each pixel replaced by its rank,
   which undoes any monotone intensity change: gamma, contrast, brightness, histogram
   equalisation), framed by the rank-weighted centre and spread of their bright content
   (so crops, pads and shifts of up to ~10 % move the frame with the content), and
   shrunk to 32 × 32 pixels (which hides blur, sharpening, JPEG artefacts and resizing).
   The layout score is the best Pearson correlation between the two 32 × 32 grids over
   the 8 orientations (flips and 90° rotations), refined over shifts of ±1 cell.
2. **Details**: ORB keypoints (OpenCV) of the two equalised pictures at 256 pixels are
   matched, and RANSAC keeps the matches that agree on one rotation + scale + shift.
   The details score is the number of agreeing keypoints. Two different scans of the
   same anatomy share a layout but not the positions of their small details; a real
   copy shares both.

A pair links when both agree: ``layout >= threshold`` **and** enough agreeing keypoints,
the more the weaker the layout agreement: 12 at ``layout >= threshold + 0.2``, rising
linearly to 20 at ``layout = threshold`` (default threshold 0.70). ``--copy-threshold``
moves that whole boundary, tightening or loosening both measures together. When the
keypoints agree on a transform but the frames did not line up (a crop into the content,
a shift), the layout is scored again with ``b``'s grid resampled through that transform.

Neither measure alone is enough: among the 15,190 pairs of a "yes" and a "no" brain MRI
scan of ``benchmarks/copies.py``, different scans of the same anatomy reach a layout of
0.87 with 6 agreeing keypoints, or 16 keypoints at a layout of 0.61, and link at neither.

Finding candidate pairs scales as blocked matrix products: the 16 × 16 layouts (framed by
the bright content, and framed by the keypoints) are projected on their 64 principal components and each
image keeps its ``CANDIDATES`` most similar images (over the 8 orientations); only those
pairs are scored, and the keypoint check (the costly part) runs on each image's best
candidates within a budget (all of them up to ~15,000 images). Exact copies (same
sha256) are linked without scoring.

The candidate search, the layout scores and the keypoint checks run in worker processes
on every usable core (above a few thousand images or checks); the links are the same on
any number of cores: the candidate search's matrix products use one BLAS thread each, and
every other number is computed row by row. Time and memory up to 50,000 images:
``docs/performance.md`` (written by ``benchmarks/copies.py --only-scale``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from bench.config import DEFAULT_COPY_THRESHOLD
from bench.data.copy_candidates import CANDIDATE_VIEWS, _candidates, _layouts, _worth_a_look
from bench.data.copy_details import (COPY_KINDS, RESAVE_BITS, Link, _Check, _Checker, _confirm, _tries,
                                     keypoints_needed)
from bench.data.copy_features import GRID, CopyFeatures, copy_features, deciles, mirrored_features
from bench.data.copy_table import grids as copy_grids
from bench.parallel import usable_cores

log = logging.getLogger("bench.progress")
#: From this many distinct images on, the grouping says what it is doing (it can take minutes
#: on tens of thousands of images); below, it is quiet (a few seconds at most).
PROGRESS_FROM = 1000

__all__ = ["COPY_KINDS", "DEFAULT_COPY_THRESHOLD", "GRID", "CopyFeatures", "Link", "copy_features", "deciles",
           "find_links", "keypoints_needed", "mirrored_features"]


def _bits(hexes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def find_links(
    records: list,
    features: list[CopyFeatures],
    threshold: float = DEFAULT_COPY_THRESHOLD,
    mirrored: Callable[[int], CopyFeatures] | None = None,
    workers: int | None = None,
    times: dict | None = None,
) -> list[Link]:
    """Every confirmed copy link between ``records`` (exact copies included), sorted.

    ``features[i]`` belongs to ``records[i]`` (records need ``sha256``, ``phash`` and
    ``dhash``); ``mirrored(i)`` returns the features of record i flipped left-right (ORB
    needs them for mirror-image candidates; without it those candidates are skipped).
    ``workers``: processes for the candidate search, layout scores and keypoint checks
    (default: every usable core; the links are the same with any number). ``times``, when
    given, receives the seconds each stage took and how much work it did.
    """
    clock = time.perf_counter()
    stages = {} if times is None else times

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - clock
        clock = now

    links: list[Link] = []
    first: dict[str, int] = {}
    unique: list[int] = []
    for i, rec in enumerate(records):
        j = first.setdefault(rec.sha256, i)
        if j != i:
            links.append(Link(j, i, "exact", 1.0, 0))
        else:
            unique.append(i)
    if len(unique) < 2 or not features:
        return sorted(links, key=lambda l: (l.a, l.b))
    usable = usable_cores() if workers is None else workers
    say = log.info if len(unique) >= PROGRESS_FROM else log.debug
    started = time.perf_counter()
    say(f"grouping copies: looking for candidate pairs among {len(unique)} images")
    # float16 grids (2 kB an image each), widened a block at a time
    grids = [copy_grids(features, name, unique) for name in ("layout", *CANDIDATE_VIEWS)]
    pairs = _candidates(grids, usable)
    lap("candidates_s")
    say(f"grouping copies: scoring the layouts of {len(pairs)} candidate pairs "
        f"({time.perf_counter() - started:.0f} s so far)")
    scores, *view_scores = _layouts(grids, pairs, usable)
    del grids
    scores[:, 0] += 0.01  # as is, unless another orientation is clearly better (symmetric anatomy)
    gate = scores.max(1)
    for other in view_scores:
        gate = np.maximum(gate, other.max(1))
    examine = _worth_a_look(pairs, gate, len(unique))
    phash = _bits([records[i].phash for i in unique])
    dhash = _bits([records[i].dhash for i in unique])
    a, b = pairs[examine, 0], pairs[examine, 1]
    close = ((np.bitwise_count(phash[a] ^ phash[b]) <= RESAVE_BITS)
             & (np.bitwise_count(dhash[a] ^ dhash[b]) <= RESAVE_BITS))
    checks = [_Check(unique[pa], unique[pb], tuple((o, float(row[o])) for o in _tries(row)), bool(c))
              for pa, pb, row, c in zip(a.tolist(), b.tolist(), scores[examine], close)]
    lap("layout_s")
    say(f"grouping copies: checking {len(checks)} close pairs by keypoints ({time.perf_counter() - started:.0f} s so far)")
    found, counts, used = _confirm(_Checker(features, mirrored, threshold), checks, usable)
    links.extend(found)
    lap("keypoints_s")
    stages.update(candidate_pairs=len(pairs), examined_pairs=len(checks), keypoint_processes=used, **counts)
    return sorted(links, key=lambda l: (l.a, l.b))
