"""Test-set metrics, the validation-chosen decision threshold, and bootstrap intervals.

Pure functions of labels and predicted probabilities (numpy only; nothing here trains or
predicts). The same code computes the point estimates and every bootstrap
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

from bench.evaluate.resampling import (
    DEFAULT_THRESHOLD,
    check_level,
    check_labels,
    check_resamples,
    group_codes,
    percentile_interval,
    positive_scores,
    resample_weights,
)
from bench.evaluate.resampling import Predictions as _Data
from bench.schema import CI_METRICS, PREDICTION_METRICS, SKILL_METRICS

__all__ = [
    "CI_METRICS",
    "METRICS",
    "bootstrap_ci",
    "brier_skill_score",
    "choose_threshold",
    "classification_metrics",
    "evaluate",
]

#: Scalar metrics :func:`classification_metrics` returns (besides n, the confusion
#: matrix and the threshold); any of them can be bootstrapped. Declared in :mod:`bench.schema`.
METRICS = PREDICTION_METRICS

_TIE_TOL = 1e-12


# --------------------------------------------------------------------------- threshold


def mann_whitney_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC as the Mann-Whitney statistic (ties count one half; ``y`` 1 for the
    positive class), nan with one class: scikit-learn's ``roc_auc_score`` without its
    input checks, for the many small scorings of a search (checked against it in the tests)."""
    pos = np.asarray(y) == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if np.isnan(score).any():  # as rankdata propagates nan
        return float("nan")
    ranks = average_ranks(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties given the mean of their ranks (``scipy.stats.rankdata``'s
    default, without its input handling: a search scores every epoch of every trial)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each run of ties
    counts = np.diff(np.r_[starts, len(values)])
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)
    return ranks


def choose_threshold(y_val, p_val) -> float:
    """Binary decision threshold chosen on validation predictions (Youden's J, midpoint).

    Youden's index (Youden, Cancer 3:32, 1950) weighs sensitivity and specificity equally.

    An image counts as positive when ``p >= threshold``. With ``s_1 < ... < s_m`` the
    distinct validation scores, every threshold in ``(s_j, s_j+1]`` makes the same
    decisions (the "cut" between them); the rule takes the cut with the largest
    J = sensitivity + specificity - 1 and returns its midpoint ``(s_j + s_j+1) / 2``,
    so the threshold sits in the gap, not on a validation score (which would classify
    that image by a hair). Ties:

    * several cuts with the same best J (to 1e-12): the one whose midpoint is closest to
      0.5 (distances equal to 1e-12 count as equal), then the lower one;
    * no cut better than chance (best J <= 0), fewer than two distinct scores, or one
      class only in ``y_val``: 0.5.

    If the two scores are adjacent floats, the midpoint rounds onto ``s_j``; then
    ``s_j+1`` is returned (still inside the cut). Deterministic.

    ``y_val``: 0/1 labels (1 = positive class). ``p_val``: positive-class probabilities,
    shape ``(N,)`` (an ``(N, 2)`` probability array is accepted; column 1 is used).
    """
    y = check_labels(y_val, 2, "y_val")
    p = positive_scores(p_val, len(y), "p_val")
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    scores = np.unique(p)
    if len(pos) == 0 or len(neg) == 0 or len(scores) < 2:
        return DEFAULT_THRESHOLD
    lower, upper = scores[:-1], scores[1:]  # cut c: positive iff p >= upper[c]
    sensitivity = 1.0 - np.searchsorted(pos, upper, side="left") / len(pos)
    specificity = np.searchsorted(neg, upper, side="left") / len(neg)
    j = sensitivity + specificity - 1.0
    if j.max() <= _TIE_TOL:
        return DEFAULT_THRESHOLD
    best = np.flatnonzero(j >= j.max() - _TIE_TOL)
    mids = lower[best] + (upper[best] - lower[best]) / 2.0
    distance = np.abs(mids - DEFAULT_THRESHOLD)
    pick = np.flatnonzero(distance <= distance.min() + _TIE_TOL)[0]  # mids ascend: the lower one
    threshold = mids[pick]
    if not lower[best[pick]] < threshold:
        threshold = upper[best[pick]]
    return float(threshold)


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


def brier_skill_score(y_true, proba, prevalence) -> float:
    """Brier skill score against always forecasting ``prevalence``: ``1 - B / B_ref``.

    ``proba``: ``(N, K)`` class probabilities (a binary problem also takes the ``(N,)``
    positive-class column). ``prevalence``: the K class shares of the *training* data
    (binary: also the positive-class share as one number). ``B`` and ``B_ref`` follow the
    module's Brier convention (binary ``mean((p1 - y)^2)``; multi-class summed over
    classes), so ``B_ref`` is e.g. ``mean((pi1 - y)^2)`` for a binary problem. 1 is a
    perfect forecast, 0 no better than the prevalence, negative worse; nan when
    ``B_ref == 0`` (every test image of a class the prevalence gives probability 1).
    """
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2:
        raise ValueError(f"Expected proba of shape (N, K) or (N,). Received: shape {p.shape}")
    data = _Data.build(y_true, p, [str(k) for k in range(p.shape[1])], None if p.shape[1] > 2 else 0.5, prevalence)
    return float(data.metrics(np.ones((1, data.n)), SKILL_METRICS)["brier_skill"][0])


def bootstrap_ci(
    y_true,
    proba,
    classes: Sequence[str],
    threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metrics: Sequence[str] = CI_METRICS,
    groups=None,
    prevalence=None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals over the test images.

    Each resample (``numpy.random.default_rng(seed)``) draws N image indices with
    replacement, or, with ``groups`` (one duplicate-group id per image), G groups with
    replacement, every image weighted by how often its group was drawn (G = number of
    distinct groups); it recomputes the metrics with the same ``threshold``.
    ``groups=None`` draws images one by one. Resamples where
    a metric is undefined (e.g. AUC of a resample with one class) are dropped for that
    metric; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles
    of the rest, ``(nan, nan)`` if none is left. ``metrics`` may include
    ``"brier_skill"`` when ``prevalence`` is given. Returns ``{metric: (low, high)}``.
    """
    check_level(level)
    check_resamples(n_resamples)
    unknown = [m for m in metrics if m not in METRICS + SKILL_METRICS]
    if unknown:
        raise ValueError(
            f"Expected metrics among {', '.join(METRICS + SKILL_METRICS)}. Received: {', '.join(map(str, unknown))}"
        )
    if prevalence is None and any(m in SKILL_METRICS for m in metrics):
        raise ValueError("Expected prevalence= (the training class shares) for brier_skill. Received: None")
    data = _Data.build(y_true, proba, classes, threshold, prevalence)
    codes = None if groups is None else group_codes(groups, data.n)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for weights in resample_weights(rng, data.n, n_resamples, codes):
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
    groups=None,
    prevalence=None,
) -> dict:
    """:func:`classification_metrics` plus 95 % bootstrap intervals, as one flat row.

    Adds ``<metric>_ci_low`` / ``<metric>_ci_high`` for every metric in
    :data:`CI_METRICS`; ``brier_skill`` (:func:`brier_skill_score` against
    ``prevalence``) with its interval, all three nan without a prevalence; ``ci_level``,
    ``ci_resamples``, ``ci_unit`` (``"image"``, or ``"group"`` when ``groups`` is given:
    the group bootstrap of :func:`bootstrap_ci`) and ``ci_groups`` (number of distinct
    groups, ``None`` per image), so a report can state how the intervals were made.
    """
    level = 0.95
    row = classification_metrics(y_true, proba, classes, threshold)
    names = CI_METRICS + (SKILL_METRICS if prevalence is not None else ())
    intervals = bootstrap_ci(
        y_true, proba, classes, threshold=threshold, n_resamples=n_resamples, seed=seed, level=level, metrics=names,
        groups=groups, prevalence=prevalence,
    )
    nan = float("nan")
    row["brier_skill"] = brier_skill_score(y_true, proba, prevalence) if prevalence is not None else nan
    intervals.setdefault("brier_skill", (nan, nan))
    for name, (low, high) in intervals.items():
        row[f"{name}_ci_low"] = low
        row[f"{name}_ci_high"] = high
    row["ci_level"] = level
    row["ci_resamples"] = int(n_resamples)
    row["ci_unit"] = "image" if groups is None else "group"
    row["ci_groups"] = None if groups is None else int(group_codes(groups, row["n"]).max() + 1)
    return row
