"""Calibration of predicted probabilities: temperature scaling with a class-weight prior
correction, NLL, calibration slope and intercept, equal-count ECE with a bootstrap
interval, and reliability-diagram bins with Wilson intervals.

Pure functions of labels and predicted probabilities (numpy and scipy only).

Conventions (reports quote these; they follow :mod:`bench.evaluate.metrics`):

* ``y`` holds integer class indices; ``proba`` is ``(N, K)``, ``K >= 2``, each row summing
  to 1 (to 1e-3). Binary (``K == 2``): column 1 is the positive class. Multi-class: the
  prediction is the argmax (ties go to the lower class index).
* Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before any logarithm.
* Scores the ECE and the reliability bins use: binary, the positive-class probability
  ``p1`` against the outcome ``y == 1``; multi-class, the top-label confidence
  ``max_k p_k`` against whether the argmax is correct (Guo et al. 2017).
* Bins are equal-count ("adaptive", Nixon et al. 2019): the images sorted by score
  (stable, so ties keep input order) are cut into ``min(n_bins, N)`` consecutive bins with
  :func:`numpy.array_split` (sizes differ by at most one, the larger bins first). Images
  with tied scores may fall into two neighbouring bins. ``ECE = sum_b (n_b / N) *
  |mean outcome_b - mean score_b|``. ECE is biased upwards on small test sets (every bin's
  noise adds), so read it with its interval.
* The ECE bootstrap (:func:`calibration_summary`) draws images (or duplicate groups) with
  :func:`bench.evaluate.resampling.resample_weights` and *rebins every resample*: the
  drawn copies, sorted by score, are cut into the same number of equal-count bins (equal
  count by weight; copies of one image may straddle two bins, as ties do). The interval
  is the percentile interval of those ECEs. Resampled ECEs carry the same upward bias, so
  for a well-calibrated model on a small test set the point estimate can lie *below* the
  interval (about 5 % of simulated 38-image sets from a perfectly calibrated model).
* Calibration slope and intercept (Cox 1958; Van Calster et al. 2016; Steyerberg, *Clinical
  Prediction Models*, 2019), on ``z = logit(p)``: the slope is the coefficient of ``z`` in
  the logistic regression ``logit P(y=1) = a + b z``; the intercept is
  calibration-in-the-large, the ``a`` of ``logit P(y=1) = a + z`` (``z`` an offset, slope
  fixed at 1). Perfect calibration: slope 1, intercept 0; slope < 1 means too extreme
  predictions. Multi-class: one-vs-rest per class on ``logit(p_k)``, macro averaged.
* Undefined is ``nan``, never an exception: slope and intercept when ``y`` holds one class
  only; the slope also when ``z`` is constant or separates the classes completely or
  quasi-completely (``min z`` of the positives ``>=`` ``max z`` of the negatives, or the
  reverse; the maximum-likelihood slope is then infinite) and whenever the Newton
  iterations do not converge; a macro average when any class's value is nan (as in
  :mod:`bench.evaluate.metrics`).

References: Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks",
ICML 2017 (temperature scaling); Naeini, Cooper & Hauskrecht, AAAI 2015 (ECE); Nixon et
al., "Measuring calibration in deep learning", CVPR Workshops 2019 (equal-count bins);
Saerens, Latinne & Decaestecker, Neural Computation 14:21, 2002 (prior-shift correction of
posteriors); Cox, Biometrika 45:562, 1958 (calibration slope); Van Calster et al., J Clin
Epidemiol 74:167, 2016 (calibration hierarchy); Wilson, JASA 22:209, 1927 (score interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit, logsumexp, softmax
from scipy.stats import norm

from bench.evaluate.logistic import slope_intercept
from bench.evaluate.metrics import brier_skill_score
from bench.evaluate.resampling import (
    check_labels,
    check_probabilities,
    check_resamples,
    group_codes,
    percentile_interval,
    resample_weights,
)

__all__ = [
    "apply_temperature",
    "calibration_slope_intercept",
    "calibration_summary",
    "default_n_bins",
    "ece",
    "fit_temperature",
    "nll",
    "reliability_bins",
]

#: Probabilities are clipped to [EPS, 1 - EPS] before logarithms.
EPS = 1e-7
#: Search range of the temperature (fitted on log T).
T_BOUNDS = (0.05, 20.0)
#: Spread (sd) of the normal prior on log T that bench fits with (:func:`fit_temperature`):
#: before seeing data, T lies within 0.37-2.7 (2 sd) with 95 % probability.
PRIOR_SD = 0.5
#: Confidence level of the ECE bootstrap interval and of the Wilson bin intervals.
LEVEL = 0.95
_SUM_TOL = 1e-3


# --------------------------------------------------------------------------- checks


def _check_proba(proba, name: str = "proba") -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] == 0:
        raise ValueError(
            f"Expected {name} of shape (N, K), K >= 2, one column per class (binary: np.column_stack([1 - p, p])). "
            f"Received: shape {p.shape}"
        )
    check_probabilities(p, name)
    sums = p.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > _SUM_TOL:
        bad = sums[np.argmax(np.abs(sums - 1.0))]
        raise ValueError(
            f"Expected each row of {name} to sum to 1 (to {_SUM_TOL:g}). Received: a row summing to {bad:.6g}"
        )
    return np.clip(p, 0.0, 1.0)


def _check_inputs(y, proba) -> tuple[np.ndarray, np.ndarray]:
    p = _check_proba(proba)
    labels = check_labels(y, p.shape[1], "y")
    if len(labels) != len(p):
        raise ValueError(f"Expected one label per row of proba ({len(p)}). Received: {len(labels)} labels")
    return labels, p


def _check_temperature(temperature) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"Expected a temperature > 0 (a number). Received: {temperature!r}") from None
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"Expected a finite temperature > 0. Received: {temperature!r}")
    return t


def _check_n_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"Expected n_bins as an integer >= 1. Received: {n_bins!r}")
    return int(n_bins)


def _log_class_weights(class_weights, k: int) -> np.ndarray:
    """log of the (K,) class-weight vector; ``None`` gives zeros (all weights 1)."""
    if class_weights is None:
        return np.zeros(k)
    if isinstance(class_weights, Mapping):
        w = np.ones(k)
        for key, value in class_weights.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < k:
                raise ValueError(f"Expected class_weights keys as class indices 0..{k - 1}. Received: key {key!r}")
            w[int(key)] = float(value)
    else:
        w = np.asarray(class_weights, dtype=float)
        if w.shape != (k,):
            raise ValueError(
                f"Expected class_weights as a dict {{class_index: weight}} or {k} weights. Received: shape {w.shape}"
            )
    if not np.all(np.isfinite(w)) or w.min() <= 0.0:
        raise ValueError(
            "Expected finite class weights > 0 (a class absent from training has no prior to correct). "
            f"Received: {w.tolist()!r}"
        )
    return np.log(w)


# --------------------------------------------------------------------------- temperature scaling


def _calibration_logits(p: np.ndarray, class_weights) -> np.ndarray:
    """Prior-corrected logits at T = 1: binary ``(N,)``, ``logit(p1) - (log w1 - log w0)``;
    multi-class ``(N, K)``, ``log p - log w``."""
    k = p.shape[1]
    log_w = _log_class_weights(class_weights, k)
    clipped = np.clip(p, EPS, 1.0 - EPS)
    if k == 2:
        return logit(clipped[:, 1]) - (log_w[1] - log_w[0])
    return np.log(clipped) - log_w[None, :]


def _nll_of_logits(y: np.ndarray, z: np.ndarray, temperature: float) -> float:
    s = z / temperature
    if s.ndim == 1:
        return float(np.mean(np.logaddexp(0.0, s) - y * s))
    return float(np.mean(logsumexp(s, axis=1) - s[np.arange(len(y)), y]))


def fit_temperature(y, proba, class_weights=None, prior_sd: float | None = None) -> float:
    """Temperature minimising the negative log-likelihood of ``y`` (Guo et al. 2017).

    Fit on *validation* predictions, then :func:`apply_temperature` to the test ones. We
    have probabilities, not logits: binary uses ``z = logit(p1)``, multi-class
    ``z = log p`` (softmax is shift-invariant, so these are the logits up to a per-row
    constant). ``class_weights`` (dict ``{class_index: weight}``, unlisted classes 1, or K
    weights; ``None`` = all 1) are the loss weights the model was trained with: such a model
    estimates ``p_k`` proportional to ``w_k * (true p_k)``, so the calibrated logits are
    ``(z - log w) / T`` (binary: ``(logit(p1) - (log w1 - log w0)) / T``; Saerens et al.
    2002). Only weight ratios matter.

    T is searched on ``log T`` in ``[log 0.05, log 20]`` (bounded Brent,
    :func:`scipy.optimize.minimize_scalar`); T > 1 softens overconfident predictions,
    T < 1 sharpens underconfident ones. A result at a bound means the data push beyond it
    (e.g. every validation image classified correctly: the NLL keeps falling as T -> 0).
    When every logit is 0 (all predictions uniform), T has no effect and 1.0 is returned.

    ``prior_sd``: a normal prior on ``log T`` (mean 0, this spread), making the fit a
    maximum a posteriori one: it minimises ``NLL + (log T)^2 / (2 prior_sd^2 N)``. On a
    small validation split that every model separates, the plain fit runs to T = 0.05 and
    makes every test prediction near-certain, wrong ones included; the prior keeps T
    finite there and is negligible once N is in the hundreds. bench uses
    :data:`PRIOR_SD`.
    """
    labels, p = _check_inputs(y, proba)
    z = _calibration_logits(p, class_weights)
    if not np.any(z):
        return 1.0
    if prior_sd is not None and not (math.isfinite(float(prior_sd)) and float(prior_sd) > 0):
        raise ValueError(f"Expected prior_sd > 0 (or None). Received: {prior_sd!r}")
    penalty = 0.0 if prior_sd is None else 1.0 / (2.0 * float(prior_sd) ** 2 * len(labels))
    result = minimize_scalar(
        lambda log_t: _nll_of_logits(labels, z, math.exp(log_t)) + penalty * log_t**2,
        bounds=(math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def apply_temperature(proba, temperature, class_weights=None) -> np.ndarray:
    """Calibrated ``(N, K)`` probabilities (rows sum to 1): softmax of ``(z - log w) / T``.

    ``z`` and ``class_weights`` as in :func:`fit_temperature`. With ``temperature=1`` and
    no class weights this returns the (clipped, renormalised) input. Temperature alone
    (T > 0) is monotone in every row, so it never changes the argmax or which side of 0.5
    ``p1`` lies on. The class-weight prior correction shifts the logits per class and *can*
    change argmax and threshold decisions: that is its purpose (it undoes the shift
    towards the up-weighted classes).
    """
    t = _check_temperature(temperature)
    p = _check_proba(proba)
    z = _calibration_logits(p, class_weights) / t
    if p.shape[1] == 2:
        p1 = expit(z)
        return np.column_stack([1.0 - p1, p1])
    return softmax(z, axis=1)


def nll(y, proba) -> float:
    """Mean negative log-likelihood ``-mean_i log p_i[y_i]`` (natural log; the probability
    of the true class clipped to ``[1e-7, 1 - 1e-7]``)."""
    labels, p = _check_inputs(y, proba)
    picked = np.clip(p[np.arange(len(labels)), labels], EPS, 1.0 - EPS)
    return float(-np.mean(np.log(picked)))


# --------------------------------------------------------------------------- slope and intercept


def calibration_slope_intercept(y, proba) -> dict:
    """Calibration slope and intercept (calibration-in-the-large); see the module docstring.

    Binary: ``{"slope", "intercept"}`` of the positive class, on ``z = logit(p1)``.
    Multi-class: each class one-vs-rest on ``logit(p_k)``, returned as
    ``per_class = {"slope": [K floats], "intercept": [K floats]}`` with ``slope`` and
    ``intercept`` their macro means (nan if any class's value is nan). nan where undefined:
    one class only, ``z`` constant or (quasi-)completely separating the classes (slope), or
    no convergence.
    """
    labels, p = _check_inputs(y, proba)
    k = p.shape[1]
    if k == 2:
        slope, intercept = slope_intercept(labels == 1, p[:, 1], EPS)
        return {"slope": slope, "intercept": intercept}
    pairs = [slope_intercept(labels == c, p[:, c], EPS) for c in range(k)]
    slopes = [s for s, _ in pairs]
    intercepts = [i for _, i in pairs]
    return {
        "slope": float(np.mean(slopes)),
        "intercept": float(np.mean(intercepts)),
        "per_class": {"slope": slopes, "intercept": intercepts},
    }


# --------------------------------------------------------------------------- ECE and bins


def _scores(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score, outcome) per image: binary ``(p1, y == 1)``; multi-class ``(max p, argmax == y)``."""
    if p.shape[1] == 2:
        return p[:, 1], (y == 1).astype(float)
    return p.max(axis=1), (np.argmax(p, axis=1) == y).astype(float)


def _ece_weighted(score: np.ndarray, outcome: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """ECE of each row of integer count weights ``(B, N)``, equal-count bins by weight.

    Row ``b`` stands for the multiset in which image ``i`` appears ``weights[b, i]`` times;
    its copies, sorted by score (stable), are cut into ``n_bins`` bins as
    :func:`numpy.array_split` would cut them. An all-ones row is the plain ECE. Returns
    ``(B,)``; nan for a row of zero total weight.
    """
    order = np.argsort(score, kind="stable")
    s, o = score[order], outcome[order]
    w = np.rint(weights[:, order]).astype(np.int64)
    b, n = w.shape
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    # F(t) = sum of the first t copies' scores; piecewise linear, copies of image i at [cum_{i-1}, cum_i)
    cum_pad = np.concatenate([np.zeros((b, 1), np.int64), cum], axis=1)
    sum_s = np.concatenate([np.zeros((b, 1)), np.cumsum(w * s, axis=1)], axis=1)
    sum_o = np.concatenate([np.zeros((b, 1)), np.cumsum(w * o, axis=1)], axis=1)
    s_pad, o_pad = np.append(s, 0.0), np.append(o, 0.0)
    q, r = np.divmod(total, n_bins)
    j = np.arange(n_bins + 1)
    bounds = j[None, :] * q[:, None] + np.minimum(j[None, :], r[:, None])  # (B, n_bins + 1), as array_split
    # images wholly before each bound, found for all rows at once: offset row r by r * (max total + 1)
    span = int(total.max()) + 1
    offsets = np.arange(b, dtype=np.int64)[:, None] * span
    before = np.searchsorted((cum + offsets).ravel(), (bounds + offsets).ravel(), side="right").reshape(bounds.shape)
    before -= np.arange(b)[:, None] * n
    rows = np.arange(b)[:, None]
    partial = bounds - cum_pad[rows, before]  # copies of the next image before the bound
    f_s = sum_s[rows, before] + partial * s_pad[before]
    f_o = sum_o[rows, before] + partial * o_pad[before]
    gap = np.abs(np.diff(f_o, axis=1) - np.diff(f_s, axis=1)).sum(axis=1)
    out = np.full(b, np.nan)
    np.divide(gap, total, out=out, where=total > 0)
    return out


def ece(y, proba, n_bins: int = 10) -> float:
    """Expected calibration error with ``min(n_bins, N)`` equal-count bins (module docstring):
    binary on ``p1`` against ``y == 1``, multi-class on the top-label confidence against
    correctness of the argmax."""
    labels, p = _check_inputs(y, proba)
    bins = _check_n_bins(n_bins)
    score, outcome = _scores(labels, p)
    return float(_ece_weighted(score, outcome, np.ones((1, len(labels))), bins)[0])


def _wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927)."""
    z = float(norm.ppf(0.5 + level / 2.0))
    phat = successes / n
    denom = 1.0 + z * z / n
    center = (phat + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(phat * (1.0 - phat) / n + z * z / (4.0 * n * n))
    return float(max(0.0, center - half)), float(min(1.0, center + half))


def reliability_bins(y, proba, n_bins: int = 10) -> list[dict]:
    """The ECE's equal-count bins, ascending score, for a reliability diagram.

    One dict per bin: ``count``, ``mean_score``, ``observed`` (frequency of the outcome:
    binary ``y == 1``, multi-class a correct argmax), ``low`` / ``high`` (95 % Wilson
    interval of ``observed``), ``score_low`` / ``score_high`` (smallest and largest score
    in the bin).
    """
    labels, p = _check_inputs(y, proba)
    bins = _check_n_bins(n_bins)
    score, outcome = _scores(labels, p)
    order = np.argsort(score, kind="stable")
    out = []
    for idx in np.array_split(order, min(bins, len(order))):
        count = len(idx)
        hits = int(np.rint(outcome[idx].sum()))
        low, high = _wilson(hits, count)
        out.append({
            "count": count,
            "mean_score": float(score[idx].mean()),
            "observed": hits / count,
            "low": low,
            "high": high,
            "score_low": float(score[idx].min()),
            "score_high": float(score[idx].max()),
        })
    return out


# --------------------------------------------------------------------------- summary


def default_n_bins(n: int) -> int:
    """Bins :func:`calibration_summary` uses by default: ``min(10, max(2, n // 10))``.

    About ten images per bin or more: a 38-image test set gets 3 bins of 12-13, 100 images
    or more get 10. Fewer, fuller bins trade resolution for less noise (each bin's
    ``|observed - mean score|`` has noise of order ``0.5 / sqrt(n_b)``, all of which adds
    to the ECE).
    """
    return min(10, max(2, int(n) // 10))


def calibration_summary(
    y,
    proba,
    prevalence=None,
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    n_bins: int | None = None,
) -> dict:
    """Calibration of one set of test predictions, as one flat dict.

    Keys: ``ece`` with ``ece_ci_low`` / ``ece_ci_high`` (95 % percentile bootstrap,
    ``numpy.random.default_rng(seed)``, over images, or over duplicate groups when
    ``groups`` gives one group id per image; each resample rebinned, see the module
    docstring), ``slope``, ``intercept`` (:func:`calibration_slope_intercept`, macro for
    multi-class), ``nll``, ``brier_skill``
    (:func:`bench.evaluate.metrics.brier_skill_score` against ``prevalence``, the training
    class shares; nan without it), ``n_bins`` (bins used: ``min(n_bins, N)``;
    ``n_bins=None`` takes :func:`default_n_bins`), ``bins`` (:func:`reliability_bins`),
    ``n``, ``ci_level``, ``ci_resamples``, ``ci_unit`` (``"image"`` or ``"group"``).
    """
    labels, p = _check_inputs(y, proba)
    check_resamples(n_resamples)
    n = len(labels)
    bins = default_n_bins(n) if n_bins is None else _check_n_bins(n_bins)
    bins = min(bins, n)
    codes = None if groups is None else group_codes(groups, n)
    score, outcome = _scores(labels, p)
    point = float(_ece_weighted(score, outcome, np.ones((1, n)), bins)[0])
    rng = np.random.default_rng(seed)
    parts = [_ece_weighted(score, outcome, w, bins) for w in resample_weights(rng, n, int(n_resamples), codes)]
    low, high = percentile_interval(np.concatenate(parts), LEVEL)
    slope_intercept = calibration_slope_intercept(labels, p)
    return {
        "ece": point,
        "ece_ci_low": low,
        "ece_ci_high": high,
        "slope": slope_intercept["slope"],
        "intercept": slope_intercept["intercept"],
        "nll": nll(labels, p),
        "brier_skill": brier_skill_score(labels, p, prevalence) if prevalence is not None else float("nan"),
        "n_bins": bins,
        "bins": reliability_bins(labels, p, bins),
        "n": n,
        "ci_level": LEVEL,
        "ci_resamples": int(n_resamples),
        "ci_unit": "image" if groups is None else "group",
    }
