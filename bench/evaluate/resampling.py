"""The weighted-metric engine behind :mod:`bench.evaluate.metrics`: predictions as count
weights, bootstrap weight matrices (per image or per duplicate group) and input checks.

A "weights" matrix has one row per resample and one column per test image; entry
``(b, i)`` is how many times image ``i`` was drawn in resample ``b``. Every metric is a
function of it, computed for all rows at once; the point estimate is the all-ones row.

Two bootstraps fill it (:func:`resample_weights`):

* per image (``groups=None``): each resample draws N images with replacement;
* per duplicate group (the cluster bootstrap): each resample draws G groups with
  replacement, G being the number of distinct groups, and every image of a group drawn
  ``c`` times gets weight ``c``. Copies of one scan are not independent observations;
  drawing them together keeps the resampled sets as correlated as the real one
  (Davison & Hinkley, *Bootstrap Methods and their Application*, 1997, section 3.8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5
# Cells of the (resamples x images) count matrix handled at once; bounds memory.
_CHUNK_CELLS = 2_000_000


class Ranked:
    """One score column and its 0/1 target, sorted once, for AUC and average precision."""

    def __init__(self, order: np.ndarray, positive: np.ndarray, group_ends: np.ndarray):
        self.order = order  # image indices by ascending score
        self.positive = positive  # target, in that order, as float
        self.group_ends = group_ends  # last sorted position of each run of tied scores

    @classmethod
    def build(cls, scores: np.ndarray, target: np.ndarray) -> Ranked:
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
        return cls(order, target[order].astype(float), ends)

    def _group_counts(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positives, negatives) per tied-score group, ascending score; (B, groups)."""
        w = weights[:, self.order]
        cum_pos = np.cumsum(w * self.positive, axis=1)[:, self.group_ends]
        cum_all = np.cumsum(w, axis=1)[:, self.group_ends]
        pos = np.diff(cum_pos, axis=1, prepend=0.0)
        neg = np.diff(cum_all - cum_pos, axis=1, prepend=0.0)
        return pos, neg

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """Mann-Whitney ROC AUC (ties count one half); nan without both classes."""
        pos, neg = self._group_counts(weights)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        wins = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
        return divide(wins, n_pos * n_neg, fill=np.nan)

    def average_precision(self, weights: np.ndarray) -> np.ndarray:
        """Sum over distinct thresholds of recall gain times precision; nan without positives."""
        pos, neg = self._group_counts(weights)
        pos, neg = pos[:, ::-1], neg[:, ::-1]  # descending score
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = divide(tp, tp + fp, fill=0.0)
        return divide(np.sum(pos * precision, axis=1), pos.sum(axis=1), fill=np.nan)


class Predictions:
    """Validated predictions of one model on one test set, ready for weighted metrics.

    ``prevalence`` (optional, one probability per class, e.g. the training split's class
    shares) is the reference forecast of the Brier skill score; without it
    ``brier_skill`` is nan.
    """

    def __init__(self, y: np.ndarray, proba: np.ndarray, threshold: float | None, prevalence: np.ndarray | None = None):
        self.y = y
        self.proba = proba
        self.n, self.k = proba.shape
        self.threshold = threshold
        onehot = np.eye(self.k)[y]
        if self.k == 2:
            self.pred = (proba[:, 1] >= threshold).astype(int)
            self.loss = (proba[:, 1] - y) ** 2
            columns = [1]
        else:
            self.pred = np.argmax(proba, axis=1)
            self.loss = np.sum((proba - onehot) ** 2, axis=1)
            columns = list(range(self.k))
        # per-image Brier loss of always forecasting ``prevalence`` (same convention as ``loss``)
        self.reference_loss = None
        if prevalence is not None:
            ref = np.sum((prevalence[None, :] - onehot) ** 2, axis=1)
            self.reference_loss = ref / 2.0 if self.k == 2 else ref
        # one-hot of the (true, predicted) cell of each image: weights @ cells = confusion
        self.cells = np.eye(self.k * self.k)[y * self.k + self.pred]
        self._columns = columns
        self._ranked: dict[int, Ranked] = {}

    @classmethod
    def build(cls, y_true, proba, classes: Sequence[str], threshold: float | None, prevalence=None) -> Predictions:
        classes = list(classes)
        if len(classes) < 2:
            raise ValueError(f"Expected at least 2 classes. Received: {classes!r}")
        p = np.asarray(proba, dtype=float)
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise ValueError(
                f"Expected proba of shape (N, {len(classes)}), one column per class in {classes!r}. "
                f"Received: shape {p.shape}"
            )
        check_probabilities(p, "proba")
        y = check_labels(y_true, len(classes), "y_true")
        if len(y) != len(p):
            raise ValueError(f"Expected one label per row of proba ({len(p)}). Received: {len(y)} labels")
        if len(classes) == 2:
            threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
            if not np.isfinite(threshold):
                raise ValueError(f"Expected a finite threshold. Received: {threshold!r}")
        elif threshold is not None:
            raise ValueError(
                "Expected threshold=None for a multi-class problem (predictions are the argmax). "
                f"Received: threshold={threshold!r} with {len(classes)} classes"
            )
        if prevalence is not None:
            prevalence = check_prevalence(prevalence, len(classes))
        return cls(y, p, threshold, prevalence)

    def ranked(self, column: int) -> Ranked:
        if column not in self._ranked:
            self._ranked[column] = Ranked.build(self.proba[:, column], self.y == column)
        return self._ranked[column]

    def confusion(self, weights: np.ndarray) -> np.ndarray:
        return (weights @ self.cells).reshape(-1, self.k, self.k)

    def metrics(self, weights: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """``{name: values}`` with one value per row of ``weights``."""
        wanted = set(names)
        out: dict[str, np.ndarray] = {}
        total = weights.sum(axis=1)
        if wanted & {"accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1"}:
            cm = self.confusion(weights)
            tp = np.diagonal(cm, axis1=1, axis2=2)
            actual, predicted = cm.sum(axis=2), cm.sum(axis=1)
            fp, fn = predicted - tp, actual - tp
            tn = total[:, None] - tp - fp - fn
            recall = divide(tp, actual, fill=np.nan)
            per_class = {
                "precision": divide(tp, predicted, fill=0.0),
                "recall": recall,
                "specificity": divide(tn, tn + fp, fill=np.nan),
                "f1": np.where(actual > 0, divide(2 * tp, 2 * tp + fp + fn, fill=0.0), np.nan),
            }
            out["accuracy"] = divide(tp.sum(axis=1), total, fill=np.nan)
            out["balanced_accuracy"] = recall.mean(axis=1)  # nan if any class is absent
            for name, values in per_class.items():
                out[name] = values[:, 1] if self.k == 2 else values.mean(axis=1)
        if "roc_auc" in wanted:
            out["roc_auc"] = np.mean([self.ranked(c).auc(weights) for c in self._columns], axis=0)
        if "pr_auc" in wanted:
            out["pr_auc"] = np.mean([self.ranked(c).average_precision(weights) for c in self._columns], axis=0)
        if "brier" in wanted:
            out["brier"] = divide(weights @ self.loss, total, fill=np.nan)
        if "brier_skill" in wanted:
            if self.reference_loss is None:
                out["brier_skill"] = np.full(len(weights), np.nan)
            else:
                out["brier_skill"] = 1.0 - divide(weights @ self.loss, weights @ self.reference_loss, fill=np.nan)
        return {name: out[name] for name in names}


def resample_weights(rng: np.random.Generator, n: int, n_resamples: int, groups: np.ndarray | None = None):
    """Yield (chunk, n) count matrices of bootstrap resamples drawn from ``rng``.

    ``groups=None``: each resample draws ``n`` images with replacement. ``groups``: integer
    codes ``0..G-1``, one per image, each code used (see :func:`group_codes`); each resample
    draws ``G`` groups with replacement and an image's weight is how often its group was
    drawn. Codes ``0..n-1`` in image order (all singletons) reproduce the per-image draws.
    """
    if groups is None:
        chunk = max(1, _CHUNK_CELLS // max(n, 1))
        done = 0
        while done < n_resamples:
            size = min(chunk, n_resamples - done)
            idx = rng.integers(0, n, size=(size, n))
            flat = (np.arange(size)[:, None] * n + idx).ravel()
            yield np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
            done += size
        return
    codes = np.asarray(groups)
    if codes.shape != (n,):
        raise ValueError(f"Expected one group code per image ({n}). Received: shape {codes.shape}")
    g = int(codes.max()) + 1
    chunk = max(1, _CHUNK_CELLS // max(n, g, 1))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        idx = rng.integers(0, g, size=(size, g))
        flat = (np.arange(size)[:, None] * g + idx).ravel()
        counts = np.bincount(flat, minlength=size * g).reshape(size, g).astype(float)
        yield counts[:, codes]
        done += size


def group_codes(groups, n: int, name: str = "groups") -> np.ndarray:
    """Integer codes ``0..G-1`` (sorted group ids) of one group id per image.

    Ids may be strings (``"g0012"``) or integers; a missing id (None, nan, pandas.NA) is an error,
    since silently pooling unlabelled images into one group would distort every test.
    """
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"Expected {name} as one group id per image ({n}). Received: shape {arr.shape}")
    if arr.dtype.kind == "f":
        missing = bool(np.isnan(arr).any())
    elif arr.dtype.kind == "O":
        missing = any(
            v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NAType" for v in arr
        )
        arr = arr.astype(str)
    else:
        missing = False
    if missing:
        raise ValueError(f"Expected a group id for every image in {name}. Received: missing ids (None or nan)")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1).astype(np.intp)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return (float(low), float(high))


def divide(num, den, fill: float) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, fill, dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def check_labels(y, k: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"Expected {name} as a non-empty 1-D array of class indices. Received: shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"Expected {name} as integer class indices. Received: dtype {arr.dtype}")
    labels = arr.astype(int)
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise ValueError(f"Expected {name} values in 0..{k - 1}. Received: {sorted(set(bad.tolist()))[:5]}")
    return labels


def positive_scores(p, n: int, name: str) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr[:, 1]
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"Expected {name} as positive-class probabilities of shape ({n},) or ({n}, 2). "
            f"Received: shape {np.asarray(p).shape}"
        )
    check_probabilities(arr, name)
    return arr


def check_probabilities(p: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(p)):
        raise ValueError(f"Expected finite probabilities in {name}. Received: nan or inf")
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(
            f"Expected probabilities in [0, 1] in {name} (apply softmax/sigmoid to logits). "
            f"Received: values from {p.min():.4g} to {p.max():.4g}"
        )


def check_prevalence(prevalence, k: int) -> np.ndarray:
    """One reference probability per class, summing to 1; a binary problem also takes the
    positive-class share as a single number."""
    arr = np.atleast_1d(np.asarray(prevalence, dtype=float))
    if k == 2 and arr.shape == (1,):
        arr = np.array([1.0 - arr[0], arr[0]])
    if arr.shape != (k,) or not np.all(np.isfinite(arr)) or arr.min() < 0 or abs(arr.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"Expected prevalence as {k} class shares in [0, 1] summing to 1"
            f"{' (or the positive-class share)' if k == 2 else ''}. Received: {np.asarray(prevalence).tolist()!r}"
        )
    return arr


def check_booleans(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"Expected {name} as a 1-D array of per-image booleans. Received: shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"Expected {name} as booleans (or 0/1). Received: dtype {arr.dtype}")
    return arr.astype(bool)


def check_resamples(n_resamples: int) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"Expected n_resamples >= 1. Received: {n_resamples!r}")


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected level strictly between 0 and 1. Received: level={level!r}")
