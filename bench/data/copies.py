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

Measured (``benchmarks/copies.py``, 15,190 pairs of a "yes" and a "no" brain MRI scan):
different scans of the same anatomy reach a layout of 0.87 with 6 agreeing keypoints, or
16 keypoints at a layout of 0.61, and link at neither.

Finding candidate pairs scales as blocked matrix products: the 16 × 16 layouts (framed by
the bright content, and framed by the keypoints) are projected on their 64 principal components and each
image keeps its ``CANDIDATES`` most similar images (over the 8 orientations); only those
pairs are scored, and the keypoint check (the costly part) runs on each image's best
candidates within a budget (all of them up to ~15,000 images). Exact copies (same
sha256) are linked without scoring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.config import DEFAULT_COPY_THRESHOLD
from bench.data.framing import content_frame, equalised, trim

#: Side of the layout grid.
GRID = 32
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
#: The detail measure's budget: at most this many pair checks in all (~0.5 ms each), and
#: at least DETAIL_CANDIDATES per image (its best candidates by layout, in either view).
DETAIL_BUDGET = 250_000
DETAIL_CANDIDATES = 5
#: Longest side of the picture ORB looks at.
DETAIL_SIDE = 256
DETAIL_FEATURES = 250
#: Smoothing before ORB, in pixels of the original image (at least 1 pixel of the detail picture).
SMOOTH_PIXELS = 1.0
#: Agreeing keypoints needed: MIN_KEYPOINTS when the layout is at least threshold + RAMP,
#: MAX_KEYPOINTS when it is just at the threshold, linear in between.
MIN_KEYPOINTS = 12
MAX_KEYPOINTS = 20
RAMP = 0.2
#: Rows of matrix products per block (memory: 8 x BLOCK x n float32).
BLOCK = 256

#: A same-orientation copy counts as resized/re-encoded (not re-processed) when its pHash and
#: dHash are within RESAVE_BITS bits and its grey-level deciles within RESAVE_LEVELS levels.
RESAVE_BITS = 8
RESAVE_LEVELS = 8

#: The kinds of copy link, in the order tables list them.
COPY_KINDS = ("exact", "resized/re-encoded", "re-processed", "mirrored/rotated")


@dataclass
class CopyFeatures:
    """What the copy detector keeps of one image (not written to disk)."""

    layout: np.ndarray  # (GRID, GRID) float16, equalised, framed
    frame: np.ndarray  # (4,) float32: x0, y0, x1, y1 of the layout's frame in the detail picture
    spots: np.ndarray  # (GRID, GRID) float16: framed by its keypoints (a second view for candidates)
    levels: np.ndarray  # (9,) uint8: grey-level deciles (tells a re-encoded copy from a contrast-changed one)
    points: np.ndarray  # (k, 2) float32 keypoint positions in the detail picture
    descriptors: np.ndarray | None  # (k, 32) uint8 ORB descriptors


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


def copy_features(image: Image.Image) -> CopyFeatures:
    """The layout grid and keypoints of one image (any mode; it is converted to grey)."""
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
    levels = np.percentile(np.asarray(picture), np.arange(10, 100, 10)).round().astype(np.uint8)
    return CopyFeatures(grid.astype(np.float16), np.array(frame, dtype=np.float32),
                        spots_grid(ranks, points).astype(np.float16), levels, points, des)


def mirrored_features(image: Image.Image) -> CopyFeatures:
    """The features of ``image`` flipped left-right (the detail measure needs them for mirror images)."""
    return copy_features(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


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


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.reshape(v.shape[0], -1).astype(np.float32)
    v = v - v.mean(1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def _coarse(grids: np.ndarray) -> np.ndarray:
    n = grids.shape[0]
    return grids.reshape(n, COARSE, GRID // COARSE, COARSE, GRID // COARSE).mean((2, 4))


def candidate_pairs(grids: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(i, j): similarity}`` for i < j: each image's most similar images by coarse layout.

    Similarity is the best over the 8 orientations, on the grids' 64 principal components.
    """
    n = grids.shape[0]
    if n < 2:
        return {}
    views = orientations(_coarse(grids))  # (8, n, 16, 16)
    flat = np.stack([_unit(v) for v in views])  # (8, n, 256)
    sample = flat.reshape(-1, flat.shape[-1])
    if sample.shape[0] > 40_000:
        sample = sample[np.random.default_rng(0).choice(sample.shape[0], 40_000, replace=False)]
    k = min(COMPONENTS, sample.shape[1], max(1, sample.shape[0] - 1))
    basis = np.linalg.svd(sample - sample.mean(0), full_matrices=False)[2][:k].T.astype(np.float32)
    proj = flat @ basis
    proj /= np.maximum(np.linalg.norm(proj, axis=2, keepdims=True), 1e-9)
    base = proj[0]  # (n, k): every image as is
    keep = min(CANDIDATES, n - 1)
    pairs: dict[tuple[int, int], float] = {}
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        sims = (proj[:, s:e].reshape(-1, proj.shape[2]) @ base.T).reshape(8, e - s, n).max(0)
        sims[np.arange(e - s), np.arange(s, e)] = -np.inf
        top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
        for r, row in enumerate(top):
            for j in row:
                sim = float(sims[r, j])
                if sim >= CANDIDATE_FLOOR:
                    key = (min(s + r, int(j)), max(s + r, int(j)))
                    pairs[key] = max(pairs.get(key, -1.0), sim)
    return pairs


def layout_scores(grids: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(P, 8)``: correlation of ``grid_i`` with each orientation ``o`` of ``grid_j`` (``pairs``: ``(P, 2)``)."""
    out = np.empty((len(pairs), 8), dtype=np.float32)
    for s in range(0, len(pairs), 8192):
        chunk = pairs[s : s + 8192]
        a = _unit(grids[chunk[:, 0]])
        for o, b in enumerate(orientations(grids[chunk[:, 1]])):
            out[s : s + len(chunk), o] = np.einsum("pd,pd->p", a, _unit(b))
    return out


def shifted_layout(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation of grid ``a`` and grid ``b`` (already oriented) over shifts of ±1 cell."""
    inner = _unit(a[None, 1:-1, 1:-1])[0]
    moved = np.stack([b[1 + dy : GRID - 1 + dy, 1 + dx : GRID - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return float((_unit(moved) @ inner).max())


def detail_score(a: CopyFeatures, b: CopyFeatures) -> tuple[int, np.ndarray | None]:
    """Keypoints of ``a`` and ``b`` that agree on one rotation + scale + shift (RANSAC inliers), and that transform.

    The transform (2 x 3) maps ``a``'s detail picture onto ``b``'s.
    """
    import cv2

    if a.descriptors is None or b.descriptors is None or len(a.descriptors) < 4 or len(b.descriptors) < 4:
        return 0, None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.descriptors, b.descriptors)
    if len(matches) < 4:
        return 0, None
    src = a.points[[m.queryIdx for m in matches]]
    dst = b.points[[m.trainIdx for m in matches]]
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


def _worth_a_look(pairs: np.ndarray, gate: np.ndarray, n: int) -> np.ndarray:
    """Which candidate pairs get the (costly) detail measure: each image's best candidates by
    layout (in either view) above LAYOUT_GATE, as many as the budget allows (all of them up
    to ~15,000 images; DETAIL_CANDIDATES each at 50,000)."""
    per_image = max(DETAIL_CANDIDATES, DETAIL_BUDGET // max(n, 1))
    keep = np.zeros(len(pairs), dtype=bool)
    taken = np.zeros(n, dtype=np.int64)
    for p in np.argsort(-gate, kind="stable"):
        if gate[p] < LAYOUT_GATE:
            break
        a, b = pairs[p]
        keep[p] = taken[a] < per_image or taken[b] < per_image
        taken[a] += 1
        taken[b] += 1
    return keep


def _bits(hexes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def find_links(
    records: list,
    features: list[CopyFeatures],
    threshold: float = DEFAULT_COPY_THRESHOLD,
    mirrored: Callable[[int], CopyFeatures] | None = None,
) -> list[Link]:
    """Every confirmed copy link between ``records`` (exact copies included), sorted.

    ``features[i]`` belongs to ``records[i]`` (records need ``sha256``, ``phash`` and
    ``dhash``); ``mirrored(i)`` returns the features of record i flipped left-right (ORB
    needs them for mirror-image candidates; without it those candidates are skipped).
    """
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
    grids = np.stack([features[i].layout for i in unique]).astype(np.float32)
    views = [np.stack([getattr(features[i], view) for i in unique]).astype(np.float32) for view in CANDIDATE_VIEWS]
    candidates = candidate_pairs(grids)
    for other_view in views:
        for key, sim in candidate_pairs(other_view).items():
            candidates[key] = max(candidates.get(key, -1.0), sim)
    pairs = np.array(sorted(candidates), dtype=np.int64).reshape(-1, 2)
    scores = layout_scores(grids, pairs)
    scores[:, 0] += 0.01  # as is, unless another orientation is clearly better (symmetric anatomy)
    gate = scores.max(1)
    for other_view in views:
        gate = np.maximum(gate, layout_scores(other_view, pairs).max(1))
    examine = _worth_a_look(pairs, gate, len(unique))
    phash = _bits([records[i].phash for i in unique])
    dhash = _bits([records[i].dhash for i in unique])
    flipped: dict[int, CopyFeatures] = {}

    def other_side(rb: int, mirror: bool) -> CopyFeatures | None:
        if not mirror:
            return features[rb]
        if mirrored is None:
            return None
        if rb not in flipped:
            flipped[rb] = mirrored(rb)
        return flipped[rb]

    for (a, b), row in zip(pairs[examine].tolist(), scores[examine]):
        ra, rb = unique[a], unique[b]
        # the best rotation, then the best reflection when it is about as good (or the reverse):
        # ORB matches across rotations but not across a mirror
        even, odd = int(np.argmax(row[0::2])) * 2, int(np.argmax(row[1::2])) * 2 + 1
        tries = sorted((even, odd), key=lambda o: -row[o])
        tries = [o for o in tries if row[o] >= row[tries[0]] - 0.1]
        for o in tries:
            other = other_side(rb, o % 2 == 1)
            if other is None:
                continue
            details, transform = detail_score(features[ra], other)
            if details < MIN_KEYPOINTS:
                continue
            shifted = shifted_layout(grids[a], oriented(grids[b], o))
            score = min(max(float(row[o]) - (0.01 if o == 0 else 0.0), shifted), 1.0)
            # a crop or shift the frames missed? the keypoints' transform lines the grids up
            score = max(score, aligned_layout(features[ra], other, transform))
            if score < threshold or details < keypoints_needed(score, threshold):
                continue
            if o:
                kind = "mirrored/rotated"
            elif (int(np.bitwise_count(phash[a] ^ phash[b])) <= RESAVE_BITS
                  and int(np.bitwise_count(dhash[a] ^ dhash[b])) <= RESAVE_BITS
                  and np.abs(features[ra].levels.astype(int) - other.levels.astype(int)).max() <= RESAVE_LEVELS):
                kind = "resized/re-encoded"
            else:
                kind = "re-processed"
            links.append(Link(ra, rb, kind, round(score, 4), details))
            break
    return sorted(links, key=lambda l: (l.a, l.b))
