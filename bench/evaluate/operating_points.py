"""Binary clinical operating points (validation-chosen thresholds) and decision curves.

A classifier used in the clinic runs at one threshold, and the right one depends on what
a missed case costs compared with a false alarm. This module picks three thresholds on
the *validation* predictions (:data:`OPERATING_POINTS`), scores each once on the test
split with bootstrap intervals, and draws the decision curve of the model.

Conventions (reports quote these; they follow :func:`bench.evaluate.metrics.choose_threshold`):

* ``y``: 0/1 labels, 1 = the positive class; ``p``: positive-class probabilities, shape
  ``(N,)`` (an ``(N, 2)`` array is accepted, column 1 is used). An image is predicted
  positive when ``p >= threshold``. Binary only: an ``(N, K)`` array with ``K > 2`` is
  rejected by :func:`require_binary`.
* Cuts. With ``s_1 < ... < s_m`` the distinct validation scores, every threshold in
  ``(s_j, s_j+1]`` makes the same validation decisions; a rule picks such a cut and
  returns its midpoint ``(s_j + s_j+1) / 2`` (``s_j+1`` if the midpoint rounds onto
  ``s_j``), so the threshold sits in the gap, never on a validation score. Tied scores
  always fall on the same side. The two edge cuts:

  - "every image positive": ``s_1 / 2`` (the midpoint between 0 and the lowest score);
    ``s_1`` itself when ``s_1 <= 0`` (so 0.0 when the lowest score is exactly 0: no
    threshold in ``(0, 1]`` would call that image positive);
  - "no image positive": ``(s_m + 1) / 2`` (the midpoint between the highest score and
    1; 1.0 if that rounds onto ``s_m``); the next float above ``s_m`` when ``s_m >= 1``
    (so a hair above 1.0 when the highest score is exactly 1, as saturated float32
    softmax outputs often are: ``p >= 1.0`` would still call that image positive).

  Thresholds are therefore in ``[0, 1]``, apart from those two degenerate edges.
* ``"youden"``: :func:`~bench.evaluate.metrics.choose_threshold` (largest Youden J; ties
  and fall-backs as documented there).
* ``"sensitivity"`` (:func:`threshold_for_sensitivity`): among the cuts whose validation
  sensitivity is ``>= minimum`` (to 1e-12), the one with the highest validation
  specificity; among cuts with that same specificity, the one with the highest
  sensitivity (the lowest of them). This is the highest feasible threshold except where
  the cuts above it only drop positives: those would lose sensitivity and gain no
  specificity, so the rule never picks them. The cut "every image positive" is always
  feasible, so the rule always finds a threshold.
* ``"specificity"`` (:func:`threshold_for_specificity`): the mirror image: among cuts with
  validation specificity ``>= minimum``, the highest sensitivity, then the highest
  specificity (the highest of those cuts); "no image positive" is always feasible.
* Few validation cases make a minimum coarse: with 19 validation positives,
  "sensitivity >= 0.95" allows ``floor(19 * 0.05) = 0`` misses. :func:`choose_operating_points`
  reports ``n_val_positive``, ``n_val_negative`` and ``allowed_errors`` (validation
  misses, resp. false alarms, the minimum allows) so a report can say so.
* One class only in ``y_val`` (or no two distinct validation scores for Youden): every
  rule falls back to 0.5, the value :func:`choose_threshold` falls back to, and
  :func:`choose_operating_points` flags the point ``"achievable": False``.
* Test-set PPV and NPV depend on the test prevalence, which need not be the clinic's;
  they are point estimates only and nan when undefined (nothing predicted positive,
  resp. negative). Sensitivity and specificity get percentile bootstrap intervals from
  :func:`bench.evaluate.metrics.bootstrap_ci` (per image, or per duplicate group with
  ``groups=``); every point uses the same seed, hence the same resamples.

Decision curves (Vickers & Elkin, Medical Decision Making 26:565, 2006): at threshold
probability ``pt`` (the risk at which a clinician would be indifferent about treating,
so that ``pt / (1 - pt)`` is the harm of a false positive relative to the benefit of a
true positive), treat every image with ``p >= pt`` and count

    net benefit = TP / N - FP / N * pt / (1 - pt),

against "treat all" (``prevalence - (1 - prevalence) * pt / (1 - pt)``) and "treat none"
(0). Reading ``p`` as a risk assumes the probabilities are calibrated. Bootstrap bands
are pointwise percentile intervals (not simultaneous bands), computed for all resamples
and thresholds at once as ``weights @ (indicator matrix)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bench.evaluate.metrics import bootstrap_ci, choose_threshold
from bench.evaluate.resampling import (
    DEFAULT_THRESHOLD,
    check_labels,
    check_level,
    check_resamples,
    divide,
    group_codes,
    percentile_interval,
    positive_scores,
    resample_weights,
)

__all__ = [
    "OPERATING_POINTS",
    "choose_operating_points",
    "decision_curve",
    "evaluate_operating_points",
    "net_benefit",
    "require_binary",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "treat_all_net_benefit",
]

#: The operating points :func:`choose_operating_points` returns, in this order.
OPERATING_POINTS = ("youden", "sensitivity", "specificity")
#: Default threshold probabilities of :func:`decision_curve`: 0.01, 0.02, ..., 0.99.
DEFAULT_DCA_THRESHOLDS = np.arange(1, 100) / 100.0

_TOL = 1e-12
_CLASSES = ("negative", "positive")


# --------------------------------------------------------------------------- checks


def require_binary(n_classes) -> None:
    """Raise ValueError unless the problem has exactly two classes.

    ``n_classes``: the number of classes, or the sequence of class names.
    """
    k = n_classes if isinstance(n_classes, (int, np.integer)) else len(n_classes)
    if int(k) != 2:
        raise ValueError(
            "Operating points and decision curves are binary-only; expected 2 classes (the positive class "
            f"and the rest). Received: {int(k)} classes"
        )


def _binary_inputs(y, p, y_name: str, p_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated 0/1 labels and positive-class scores (``(N,)``, or column 1 of ``(N, 2)``)."""
    arr = np.asarray(p)
    if arr.ndim == 2 and arr.shape[1] != 2:
        require_binary(arr.shape[1])
    labels = check_labels(y, 2, y_name)
    return labels, positive_scores(p, len(labels), p_name)


def _check_minimum(minimum, name: str) -> float:
    try:
        value = float(minimum)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(minimum, bool) or not 0.0 < value <= 1.0:
        raise ValueError(f"Expected {name} in (0, 1]. Received: {minimum!r}")
    return value


def _check_thresholds(thresholds) -> np.ndarray:
    t = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"Expected thresholds as a non-empty 1-D array. Received: shape {t.shape}")
    if not np.all(np.isfinite(t)) or t.min() < 0.0 or t.max() >= 1.0:
        raise ValueError(
            "Expected threshold probabilities in [0, 1) (pt / (1 - pt) is undefined at 1). "
            f"Received: values from {t.min():.4g} to {t.max():.4g}"
        )
    return t


# --------------------------------------------------------------------------- thresholds


def _cuts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct validation decision, by ascending threshold.

    Returns ``(thresholds, sensitivity, specificity)`` of the ``m + 1`` cuts ("every image
    positive", the ``m - 1`` gaps between the ``m`` distinct scores, "no image positive"),
    with the edge and midpoint conventions of the module docstring. Needs both classes.
    """
    scores = np.unique(p)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    top = 1.0 if scores[-1] < 1.0 else float(np.nextafter(scores[-1], np.inf))
    lower = scores  # cut c (c >= 1) is (lower[c - 1], upper[c - 1]]
    upper = np.r_[scores[1:], top]
    mids = lower + (upper - lower) / 2.0
    mids = np.where(lower < mids, mids, upper)  # adjacent floats: the midpoint rounded onto lower
    first = scores[0] / 2.0 if scores[0] > 0.0 else scores[0]
    thresholds = np.r_[first, mids]
    cut_at = np.r_[scores, np.inf]  # cut c: positive iff p >= cut_at[c]
    sensitivity = (len(pos) - np.searchsorted(pos, cut_at, side="left")) / len(pos)
    specificity = np.searchsorted(neg, cut_at, side="left") / len(neg)
    return thresholds, sensitivity, specificity


def threshold_for_sensitivity(y_val, p_val, minimum: float = 0.95) -> float:
    """Threshold with the highest validation specificity among those with sensitivity >= ``minimum``.

    Ties in specificity go to the higher sensitivity (the lower threshold); thresholds are
    midpoints of gaps between distinct validation scores, ``s_1 / 2`` for "every image
    positive" (see the module docstring). 0.5 when ``y_val`` holds one class only.
    """
    return _constrained(y_val, p_val, minimum, "sensitivity")


def threshold_for_specificity(y_val, p_val, minimum: float = 0.95) -> float:
    """Threshold with the highest validation sensitivity among those with specificity >= ``minimum``.

    Ties in sensitivity go to the higher specificity (the higher threshold); thresholds are
    midpoints of gaps between distinct validation scores, ``(s_m + 1) / 2`` for "no image
    positive" (see the module docstring). 0.5 when ``y_val`` holds one class only.
    """
    return _constrained(y_val, p_val, minimum, "specificity")


def _constrained(y_val, p_val, minimum: float, kept: str) -> float:
    """The cut keeping ``kept`` (sensitivity or specificity) >= ``minimum`` that maximises the
    other rate; ties to the better ``kept``. The feasible cuts are a prefix (sensitivity
    does not increase along the cuts) or a suffix (specificity does not decrease)."""
    minimum = _check_minimum(minimum, "minimum")
    y, p = _binary_inputs(y_val, p_val, "y_val", "p_val")
    if y.min() == y.max():
        return DEFAULT_THRESHOLD
    thresholds, sensitivity, specificity = _cuts(y, p)
    constrained, other = (sensitivity, specificity) if kept == "sensitivity" else (specificity, sensitivity)
    feasible = constrained >= minimum - _TOL
    best = other[feasible].max()
    candidates = np.flatnonzero(feasible & (other >= best - _TOL))
    return float(thresholds[candidates[0] if kept == "sensitivity" else candidates[-1]])


def choose_operating_points(y_val, p_val, min_sensitivity: float = 0.95, min_specificity: float = 0.95) -> dict:
    """The three :data:`OPERATING_POINTS`, chosen on validation predictions.

    Returns ``{name: point}``; every point has ``threshold``, ``rule`` (one line for a
    report), ``minimum`` (None for youden), ``allowed_errors`` (validation positives the
    sensitivity minimum allows to miss, resp. negatives the specificity minimum allows to
    flag, e.g. 0 of 19 at 0.95; None for youden), ``val_sensitivity`` and
    ``val_specificity`` at the threshold (nan for an absent class), ``n_val_positive``,
    ``n_val_negative`` and ``achievable``: False when ``y_val`` holds one class only (the
    threshold is then the 0.5 fall-back), and for youden also when no cut beats chance
    (:func:`choose_threshold` falls back to 0.5).
    """
    min_sensitivity = _check_minimum(min_sensitivity, "min_sensitivity")
    min_specificity = _check_minimum(min_specificity, "min_specificity")
    y, p = _binary_inputs(y_val, p_val, "y_val", "p_val")
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    both = n_pos > 0 and n_neg > 0

    def point(threshold: float, rule: str, constrained: str | None, minimum: float | None, allowed: int | None) -> dict:
        predicted = p >= threshold
        sensitivity = float(predicted[y == 1].mean()) if n_pos else math.nan
        specificity = float((~predicted[y == 0]).mean()) if n_neg else math.nan
        if constrained is None:  # youden: some cut beat chance
            achievable = both and sensitivity + specificity - 1.0 > _TOL
        else:
            achieved = sensitivity if constrained == "sensitivity" else specificity
            achievable = both and achieved >= minimum - _TOL
        return {
            "threshold": float(threshold),
            "rule": rule,
            "minimum": minimum,
            "allowed_errors": allowed,
            "val_sensitivity": sensitivity,
            "val_specificity": specificity,
            "n_val_positive": n_pos,
            "n_val_negative": n_neg,
            "achievable": bool(achievable),
        }

    return {
        "youden": point(
            choose_threshold(y, p), "largest Youden J (sensitivity + specificity - 1) on validation", None, None, None
        ),
        "sensitivity": point(
            threshold_for_sensitivity(y, p, min_sensitivity),
            f"highest specificity with validation sensitivity >= {min_sensitivity:g}",
            "sensitivity",
            min_sensitivity,
            math.floor(n_pos * (1.0 - min_sensitivity) + 1e-9),
        ),
        "specificity": point(
            threshold_for_specificity(y, p, min_specificity),
            f"highest sensitivity with validation specificity >= {min_specificity:g}",
            "specificity",
            min_specificity,
            math.floor(n_neg * (1.0 - min_specificity) + 1e-9),
        ),
    }


# --------------------------------------------------------------------------- test set


def evaluate_operating_points(
    y_test, p_test, points: Mapping, groups=None, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Test-set sensitivity and specificity (with 95 % bootstrap intervals), counts, PPV and NPV per point.

    ``points``: ``{name: threshold}`` or ``{name: {"threshold": t, ...}}`` (the output of
    :func:`choose_operating_points`). Returns ``{name: row}`` with ``threshold``, ``n``,
    ``tp``, ``fp``, ``tn``, ``fn``, ``sensitivity`` and ``specificity`` (nan when the test
    set lacks the class) with ``_ci_low`` / ``_ci_high`` (:func:`bootstrap_ci`, per image
    or per duplicate group with ``groups``; the same ``seed`` for every point), ``ppv``
    and ``npv`` (point estimates, nan when nothing is predicted positive, resp.
    negative), ``ci_level``, ``ci_resamples`` and ``ci_unit`` (``"image"`` or ``"group"``).
    """
    y, p = _binary_inputs(y_test, p_test, "y_test", "p_test")
    check_resamples(n_resamples)
    if groups is not None:
        group_codes(groups, len(y))  # fail before any resampling
    proba = np.column_stack([1.0 - p, p])
    level = 0.95
    out: dict = {}
    for name, spec in points.items():
        threshold = spec["threshold"] if isinstance(spec, Mapping) else spec
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            threshold = math.nan
        if not np.isfinite(threshold):
            raise ValueError(f"Expected a finite threshold for operating point {name!r}. Received: {threshold!r}")
        predicted = p >= threshold
        tp = int(np.sum(predicted & (y == 1)))
        fp = int(np.sum(predicted & (y == 0)))
        fn = int(np.sum(~predicted & (y == 1)))
        tn = int(np.sum(~predicted & (y == 0)))
        intervals = bootstrap_ci(
            y, proba, _CLASSES, threshold=threshold, n_resamples=n_resamples, seed=seed, level=level,
            metrics=("recall", "specificity"), groups=groups,
        )
        out[name] = {
            "threshold": threshold,
            "n": len(y),
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
            "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
            "sensitivity_ci_low": intervals["recall"][0],
            "sensitivity_ci_high": intervals["recall"][1],
            "specificity": tn / (tn + fp) if tn + fp else math.nan,
            "specificity_ci_low": intervals["specificity"][0],
            "specificity_ci_high": intervals["specificity"][1],
            "ppv": tp / (tp + fp) if tp + fp else math.nan,
            "npv": tn / (tn + fn) if tn + fn else math.nan,
            "ci_level": level,
            "ci_resamples": int(n_resamples),
            "ci_unit": "image" if groups is None else "group",
        }
    return out


# --------------------------------------------------------------------------- decision curves


def _treated(y: np.ndarray, p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image indicator matrices ``(N, T)``: treated true positive, treated false positive."""
    treated = p[:, None] >= t[None, :]
    return treated & (y[:, None] == 1), treated & (y[:, None] == 0)


def net_benefit(y, p, thresholds) -> np.ndarray:
    """Net benefit of treating images with ``p >= pt``: ``TP/N - FP/N * pt/(1-pt)``, one value per ``pt``.

    ``thresholds``: threshold probabilities in ``[0, 1)``. Vickers & Elkin (2006).
    """
    y, p = _binary_inputs(y, p, "y", "p")
    t = _check_thresholds(thresholds)
    tp, fp = _treated(y, p, t)
    n = len(y)
    return tp.sum(axis=0) / n - fp.sum(axis=0) / n * (t / (1.0 - t))


def treat_all_net_benefit(y, thresholds) -> np.ndarray:
    """Net benefit of treating everyone: ``prevalence - (1 - prevalence) * pt / (1 - pt)``."""
    y = check_labels(y, 2, "y")
    t = _check_thresholds(thresholds)
    prevalence = float(y.mean())
    return prevalence - (1.0 - prevalence) * (t / (1.0 - t))


def decision_curve(
    y, p, thresholds=None, groups=None, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Decision curve of the model against treat-all and treat-none, with bootstrap bands.

    Returns a dict of ``thresholds`` (default 0.01, 0.02, ..., 0.99), ``model``,
    ``treat_all``, ``treat_none`` (zeros), ``prevalence``, ``n`` and, with ``n_resamples
    >= 1``, ``model_low`` / ``model_high``: pointwise percentile intervals of the model's
    net benefit over bootstrap resamples (``numpy.random.default_rng(seed)``; per image,
    or per duplicate group with ``groups``, a resample's N being its total weight);
    ``n_resamples=0`` skips them (both None). Also ``ci_level``, ``ci_resamples`` and
    ``ci_unit``. Arrays are numpy float arrays, one value per threshold.
    """
    y, p = _binary_inputs(y, p, "y", "p")
    t = _check_thresholds(DEFAULT_DCA_THRESHOLDS if thresholds is None else thresholds)
    check_level(level)
    n_resamples = int(n_resamples)
    if n_resamples < 0:
        raise ValueError(f"Expected n_resamples >= 0 (0: no bands). Received: {n_resamples!r}")
    codes = None if groups is None else group_codes(groups, len(y))
    odds = t / (1.0 - t)
    out: dict = {
        "thresholds": t,
        "model": net_benefit(y, p, t),
        "treat_all": treat_all_net_benefit(y, t),
        "treat_none": np.zeros_like(t),
        "prevalence": float(y.mean()),
        "n": len(y),
        "model_low": None,
        "model_high": None,
        "ci_level": level,
        "ci_resamples": n_resamples,
        "ci_unit": "image" if groups is None else "group",
    }
    if n_resamples == 0:
        return out
    tp_cells, fp_cells = (cells.astype(float) for cells in _treated(y, p, t))
    rng = np.random.default_rng(seed)
    parts = []
    for weights in resample_weights(rng, len(y), n_resamples, codes):
        total = weights.sum(axis=1, keepdims=True)
        parts.append(divide(weights @ tp_cells - (weights @ fp_cells) * odds, total, fill=np.nan))
    values = np.concatenate(parts)
    bands = np.array([percentile_interval(values[:, j], level) for j in range(len(t))])
    out["model_low"], out["model_high"] = bands[:, 0], bands[:, 1]
    return out
