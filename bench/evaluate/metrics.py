"""Test-set metrics, the validation-chosen decision threshold, and bootstrap intervals.

Pure functions of labels and predicted probabilities (numpy and scipy only; nothing here
trains or predicts). The same code computes the point estimates and every bootstrap
resample: a resample is a vector of per-image counts (how often each test image was
drawn), and every metric is written as a function of those counts. The point estimate
is the all-ones count vector. This keeps the intervals consistent with the reported
numbers and makes 1000 resamples cost milliseconds.

Conventions (reports quote these):

* ``y_true`` holds integer class indices into ``classes``; ``proba`` is ``(N, K)``.
  Binary (``K == 2``): column 1 is the positive class, ``classes[1]``; an image is
  predicted positive when ``proba[:, 1] >= threshold`` (default 0.5). Multi-class
  (``K > 2``): the prediction is the argmax (ties go to the lower class index).
* Binary precision, recall (= sensitivity), specificity and F1 are those of the positive
  class. Multi-class ones are macro averages over the K classes, each class taken
  one-vs-rest; ``roc_auc`` is the macro one-vs-rest AUC and ``pr_auc`` the macro average
  precision (step-wise, as scikit-learn's ``average_precision_score``).
* ``brier``: binary, the usual ``mean((p1 - y)^2)``; multi-class,
  ``mean over images of sum_k (p_k - onehot_k)^2`` (so a binary problem scored with the
  multi-class formula would give twice the binary number).
* Undefined is ``nan``, never an exception: recall, F1, ROC AUC and PR AUC of a class
  absent from ``y_true``; specificity, ROC AUC when there are no negatives; a macro
  average (and ``balanced_accuracy``) when any class's value is undefined. Precision is
  0 when nothing is predicted positive (scikit-learn's ``zero_division=0``). Where every
  class is present, all values agree with scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CI_METRICS",
    "METRICS",
    "bootstrap_ci",
    "choose_threshold",
    "classification_metrics",
    "evaluate",
]

#: Scalar metrics :func:`classification_metrics` returns (besides n, the confusion
#: matrix and the threshold); any of them can be bootstrapped.
METRICS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
)
#: Metrics :func:`evaluate` gives confidence intervals for.
CI_METRICS = ("accuracy", "f1", "roc_auc")

DEFAULT_THRESHOLD = 0.5
# Cells of the (resamples x images) count matrix handled at once; bounds memory.
_CHUNK_CELLS = 2_000_000
_TIE_TOL = 1e-12


# --------------------------------------------------------------------------- threshold


def choose_threshold(y_val, p_val) -> float:
    """Binary decision threshold chosen on validation predictions.

    Rule: among the candidate thresholds, every distinct predicted positive-class
    probability on the validation split plus 0.5, take the one that maximises Youden's
    J = sensitivity + specificity - 1, where an image counts as positive when
    ``p >= threshold``. Ties in J go to the candidate closest to 0.5 (then to the lower
    one). If the validation labels contain one class only, J is undefined and the
    threshold is 0.5.

    ``y_val``: 0/1 labels (1 = positive class). ``p_val``: positive-class probabilities,
    shape ``(N,)`` (an ``(N, 2)`` probability array is accepted; column 1 is used).
    """
    y = check_labels(y_val, 2, "y_val")
    p = positive_scores(p_val, len(y), "p_val")
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    if len(pos) == 0 or len(neg) == 0:
        return DEFAULT_THRESHOLD
    candidates = np.union1d(p, [DEFAULT_THRESHOLD])
    sensitivity = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    specificity = np.searchsorted(neg, candidates, side="left") / len(neg)
    j = sensitivity + specificity - 1.0
    best = np.flatnonzero(j >= j.max() - _TIE_TOL)
    distance = np.abs(candidates[best] - DEFAULT_THRESHOLD)
    pick = best[np.lexsort((candidates[best], distance))[0]]
    return float(candidates[pick])


# --------------------------------------------------------------------------- metrics


def classification_metrics(y_true, proba, classes: Sequence[str], threshold: float | None = None) -> dict:
    """Metrics of one set of predictions, as one flat dict (see the module docstring).

    Keys: ``accuracy, balanced_accuracy, precision, recall, specificity, f1, roc_auc,
    pr_auc, brier`` (floats, ``nan`` where undefined), ``n``, ``confusion_matrix``
    (nested list, rows = true class, columns = predicted class, in ``classes`` order),
    ``threshold`` (float for binary, ``None`` for multi-class) and ``positive_class``
    (``classes[1]`` for binary, ``None`` for multi-class).
    """
    data = _Data.build(y_true, proba, classes, threshold)
    weights = np.ones((1, data.n))
    values = data.metrics(weights, METRICS)
    cm = data.confusion(weights)[0].round().astype(int)
    out: dict = {name: float(values[name][0]) for name in METRICS}
    out["n"] = data.n
    out["confusion_matrix"] = cm.tolist()
    out["threshold"] = data.threshold
    out["positive_class"] = str(classes[1]) if data.k == 2 else None
    return out


def bootstrap_ci(
    y_true,
    proba,
    classes: Sequence[str],
    threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metrics: Sequence[str] = CI_METRICS,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals over the test images.

    Each resample draws N image indices with replacement (``numpy.random.default_rng
    (seed)``) and recomputes the metrics with the same ``threshold``. Resamples where a
    metric is undefined (e.g. AUC of a resample with one class) are dropped for that
    metric; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles
    of the rest, ``(nan, nan)`` if none is left. Returns ``{metric: (low, high)}``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected level strictly between 0 and 1. Received: level={level!r}")
    check_resamples(n_resamples)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"Expected metrics among {', '.join(METRICS)}. Received: {', '.join(map(str, unknown))}")
    data = _Data.build(y_true, proba, classes, threshold)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for weights in resample_weights(rng, data.n, n_resamples):
        for name, values in data.metrics(weights, metrics).items():
            parts[name].append(values)
    return {name: percentile_interval(np.concatenate(parts[name]), level) for name in metrics}


def evaluate(
    y_true,
    proba,
    classes: Sequence[str],
    threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """:func:`classification_metrics` plus 95 % bootstrap intervals, as one flat row.

    Adds ``<metric>_ci_low`` / ``<metric>_ci_high`` for accuracy, f1 and roc_auc, and
    ``ci_level`` / ``ci_resamples`` so a report can state how the intervals were made.
    """
    level = 0.95
    row = classification_metrics(y_true, proba, classes, threshold)
    intervals = bootstrap_ci(
        y_true, proba, classes, threshold=threshold, n_resamples=n_resamples, seed=seed, level=level, metrics=CI_METRICS
    )
    for name, (low, high) in intervals.items():
        row[f"{name}_ci_low"] = low
        row[f"{name}_ci_high"] = high
    row["ci_level"] = level
    row["ci_resamples"] = int(n_resamples)
    return row


# --------------------------------------------------------------------------- internals
#
# A "weights" matrix has one row per resample and one column per test image; entry
# (b, i) is how many times image i was drawn in resample b. Every metric below is a
# function of it, computed for all rows at once.


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
        return _divide(wins, n_pos * n_neg, fill=np.nan)

    def average_precision(self, weights: np.ndarray) -> np.ndarray:
        """Sum over distinct thresholds of recall gain times precision; nan without positives."""
        pos, neg = self._group_counts(weights)
        pos, neg = pos[:, ::-1], neg[:, ::-1]  # descending score
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = _divide(tp, tp + fp, fill=0.0)
        return _divide(np.sum(pos * precision, axis=1), pos.sum(axis=1), fill=np.nan)


class _Data:
    """Validated predictions of one model on one test set, ready for weighted metrics."""

    def __init__(self, y: np.ndarray, proba: np.ndarray, threshold: float | None):
        self.y = y
        self.proba = proba
        self.n, self.k = proba.shape
        self.threshold = threshold
        if self.k == 2:
            self.pred = (proba[:, 1] >= threshold).astype(int)
            self.loss = (proba[:, 1] - y) ** 2
            columns = [1]
        else:
            self.pred = np.argmax(proba, axis=1)
            self.loss = np.sum((proba - np.eye(self.k)[y]) ** 2, axis=1)
            columns = list(range(self.k))
        # one-hot of the (true, predicted) cell of each image: weights @ cells = confusion
        self.cells = np.eye(self.k * self.k)[y * self.k + self.pred]
        self._columns = columns
        self._ranked: dict[int, Ranked] = {}

    @classmethod
    def build(cls, y_true, proba, classes: Sequence[str], threshold: float | None) -> _Data:
        classes = list(classes)
        if len(classes) < 2:
            raise ValueError(f"Expected at least 2 classes. Received: {classes!r}")
        p = np.asarray(proba, dtype=float)
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise ValueError(
                f"Expected proba of shape (N, {len(classes)}), one column per class in {classes!r}. "
                f"Received: shape {p.shape}"
            )
        _check_probabilities(p, "proba")
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
        return cls(y, p, threshold)

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
            recall = _divide(tp, actual, fill=np.nan)
            per_class = {
                "precision": _divide(tp, predicted, fill=0.0),
                "recall": recall,
                "specificity": _divide(tn, tn + fp, fill=np.nan),
                "f1": np.where(actual > 0, _divide(2 * tp, 2 * tp + fp + fn, fill=0.0), np.nan),
            }
            out["accuracy"] = _divide(tp.sum(axis=1), total, fill=np.nan)
            out["balanced_accuracy"] = recall.mean(axis=1)  # nan if any class is absent
            for name, values in per_class.items():
                out[name] = values[:, 1] if self.k == 2 else values.mean(axis=1)
        if "roc_auc" in wanted:
            out["roc_auc"] = np.mean([self.ranked(c).auc(weights) for c in self._columns], axis=0)
        if "pr_auc" in wanted:
            out["pr_auc"] = np.mean([self.ranked(c).average_precision(weights) for c in self._columns], axis=0)
        if "brier" in wanted:
            out["brier"] = _divide(weights @ self.loss, total, fill=np.nan)
        return {name: out[name] for name in names}


def resample_weights(rng: np.random.Generator, n: int, n_resamples: int):
    """Yield (chunk, n) count matrices of bootstrap resamples drawn from ``rng``."""
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        flat = (np.arange(size)[:, None] * n + idx).ravel()
        yield np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
        done += size


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return (float(low), float(high))


def _divide(num, den, fill: float) -> np.ndarray:
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
    _check_probabilities(arr, name)
    return arr


def _check_probabilities(p: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(p)):
        raise ValueError(f"Expected finite probabilities in {name}. Received: nan or inf")
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(
            f"Expected probabilities in [0, 1] in {name} (apply softmax/sigmoid to logits). "
            f"Received: values from {p.min():.4g} to {p.max():.4g}"
        )


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
