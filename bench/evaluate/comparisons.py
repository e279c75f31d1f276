"""Comparing several backbones over repeated cross-validation: the corrected resampled
t-test, Holm's adjustment for many pairs, and the probability that each model is best.

* :func:`corrected_resampled_ttest`: the folds of a (repeated) k-fold CV share training
  images, so per-fold differences are correlated and the plain t-test is far too
  liberal. Nadeau & Bengio (Machine Learning 52:239, 2003) inflate the variance by
  ``(1/J + n_test/n_train)`` instead of ``1/J``; Bouckaert & Frank (PAKDD 2004) apply it
  to r x k-fold CV with ``J = r k`` and ``J - 1`` degrees of freedom.
* :func:`holm`: Holm's step-down adjustment (Scandinavian Journal of Statistics 6:65,
  1979); controls the family-wise error over all pairs without assuming independent
  tests. Computed here in a few lines of numpy (tested against statsmodels'
  ``multipletests``, which runs a full garbage collection on every call: a quarter of a
  second each in a process that holds TensorFlow).
* :func:`probability_best` / :func:`bootstrap_scores`: the share of CV repeats x
  bootstrap resamples (same resampled images for every model) in which each model
  scores best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

from bench.evaluate.metrics import METRICS, SKILL_METRICS
from bench.evaluate.resampling import Predictions, check_level, group_codes, resample_weights

__all__ = ["CorrectedTTest", "bootstrap_scores", "corrected_resampled_ttest", "holm", "probability_best"]

_TIE_TOL = 1e-12


@dataclass(frozen=True)
class CorrectedTTest:
    """Result of :func:`corrected_resampled_ttest` (differences are A - B)."""

    mean: float
    se: float  # corrected standard error of the mean difference
    t: float
    df: int
    p_value: float  # two-sided
    ci_low: float
    ci_high: float
    level: float
    n: int  # number of differences, r * k

    def as_dict(self) -> dict:
        return asdict(self)


def corrected_resampled_ttest(diffs, n_train: float, n_test: float, level: float = 0.95) -> CorrectedTTest:
    """Corrected resampled t-test of per-fold metric differences A - B.

    ``diffs``: the J = r * k differences of one metric over all repeats x folds (each
    fold's value of model A minus model B, both trained and tested on the same fold).
    ``n_train`` / ``n_test``: images in a fold's training and test part (averages when
    fold sizes differ a little). With ``mean`` and ``var`` (``ddof=1``) of the
    differences (Nadeau & Bengio 2003; Bouckaert & Frank 2004):

        se = sqrt((1/J + n_test/n_train) * var),  t = mean / se,  df = J - 1,
        p = 2 * P(T_df > |t|),  CI = mean -/+ t_{df, (1+level)/2} * se.

    All differences equal (``var = 0``): ``p = 1``, ``t = 0`` when the mean is 0; else
    ``p = 0``, ``t = +/-inf``; the CI is ``(mean, mean)``; no warnings.
    """
    check_level(level)
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"Expected diffs as a 1-D array of at least 2 per-fold differences. Received: shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("Expected finite per-fold differences. Received: nan or inf (an undefined fold metric?)")
    for value, name in ((n_train, "n_train"), (n_test, "n_test")):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"Expected {name} > 0 (images per fold). Received: {value!r}")
    j = len(d)
    mean = float(d.mean())
    df = j - 1
    if np.ptp(d) == 0.0:
        if mean == 0.0:
            return CorrectedTTest(mean, 0.0, 0.0, df, 1.0, mean, mean, float(level), j)
        return CorrectedTTest(mean, 0.0, float(np.copysign(np.inf, mean)), df, 0.0, mean, mean, float(level), j)
    se = float(np.sqrt((1.0 / j + float(n_test) / float(n_train)) * d.var(ddof=1)))
    t = mean / se
    p = float(2.0 * student_t.sf(abs(t), df))
    half = float(student_t.ppf((1.0 + level) / 2.0, df)) * se
    return CorrectedTTest(mean, se, float(t), df, min(p, 1.0), mean - half, mean + half, float(level), j)


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (Holm 1979): the i-th smallest of m times ``m - i + 1``, then
    the running maximum in that order, capped at 1.

    ``p_values``: 1-D, in [0, 1]; nan (or None) entries pass through as nan and the
    others are adjusted among themselves only. Returns a float array of the same length.
    """
    arr = np.asarray(p_values, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"Expected p_values as a 1-D sequence. Received: shape {arr.shape}")
    p = np.array([np.nan if v is None else float(v) for v in arr], dtype=float)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"Expected p-values in [0, 1]. Received: {p[ok][(p[ok] < 0) | (p[ok] > 1)][:5].tolist()}")
    out = np.full(p.shape, np.nan)
    if ok.any():
        kept = p[ok]
        order = np.argsort(kept, kind="stable")
        steps = kept[order] * np.arange(kept.size, 0, -1)
        adjusted = np.empty_like(kept)
        adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
        out[ok] = adjusted
    return out


def probability_best(scores, maximise: bool = True) -> np.ndarray:
    """Share of rows in which each model scores best.

    ``scores``: ``(n_rows, n_models)``, one row per CV repeat and/or bootstrap resample
    (e.g. from :func:`bootstrap_scores`). ``maximise=False`` for losses (Brier). Models
    tied for best in a row (to 1e-12 relative) share that row equally. Rows with any nan
    (a metric undefined on that resample) are left out; with none left, all nan.
    Returns ``(n_models,)`` shares summing to 1.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"Expected scores of shape (n_rows, n_models). Received: shape {s.shape}")
    s = s[~np.isnan(s).any(axis=1)]
    if len(s) == 0:
        return np.full(s.shape[1], np.nan)
    if not maximise:
        s = -s
    best = s.max(axis=1, keepdims=True)
    winners = s >= best - _TIE_TOL * np.maximum(1.0, np.abs(best))
    return (winners / winners.sum(axis=1, keepdims=True)).mean(axis=0)


def bootstrap_scores(
    y_true,
    probas,
    classes: Sequence[str],
    metric: str = "roc_auc",
    threshold=None,
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    prevalence=None,
) -> np.ndarray:
    """One metric of several models on bootstrap resamples of the same images.

    ``probas``: ``(n_models, N, K)`` predictions of each model on the same N images
    (e.g. out-of-fold predictions), or ``(n_repeats, n_models, N, K)`` for repeated CV.
    ``metric``: a name from :data:`bench.evaluate.metrics.METRICS` or ``"brier_skill"``
    (needs ``prevalence``). ``threshold``: ``None`` (0.5 for binary), a number, or an
    array broadcastable to ``(n_repeats, n_models)``; ``None`` for multi-class.
    Resamples as :func:`bench.evaluate.metrics.bootstrap_ci` (same ``seed`` and
    ``groups``: same weights; with ``groups`` whole duplicate groups are drawn), and
    every model and repeat is scored on the *same* resample weights, so the rows pair
    up. ``n_resamples=0``: the point estimates only (one row per repeat).

    Returns ``(n_repeats * n_resamples, n_models)``, repeat-major (row
    ``r * n_resamples + b``), nan where the metric is undefined; feed it to
    :func:`probability_best`.
    """
    if metric not in METRICS + SKILL_METRICS:
        raise ValueError(f"Expected metric among {', '.join(METRICS + SKILL_METRICS)}. Received: {metric!r}")
    if int(n_resamples) < 0:
        raise ValueError(f"Expected n_resamples >= 0. Received: {n_resamples!r}")
    p = np.asarray(probas, dtype=float)
    p = p[None] if p.ndim == 3 else p
    if p.ndim != 4:
        raise ValueError(
            f"Expected probas of shape (n_models, N, K) or (n_repeats, n_models, N, K). Received: shape {p.shape}"
        )
    n_repeats, n_models, n = p.shape[:3]
    if threshold is None:
        thresholds = np.full((n_repeats, n_models), None, dtype=object)
    else:
        thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (n_repeats, n_models))
    if metric in SKILL_METRICS and prevalence is None:
        raise ValueError("Expected prevalence= (the training class shares) for brier_skill. Received: None")
    data = [[Predictions.build(y_true, p[r, j], classes, thresholds[r, j], prevalence) for j in range(n_models)]
            for r in range(n_repeats)]
    codes = None if groups is None else group_codes(groups, n)
    if int(n_resamples) == 0:
        chunks, rows = [np.ones((1, n))], 1
    else:
        chunks, rows = resample_weights(np.random.default_rng(seed), n, int(n_resamples), codes), int(n_resamples)
    out = np.empty((n_repeats, rows, n_models))
    done = 0
    for weights in chunks:
        for r in range(n_repeats):
            for j in range(n_models):
                out[r, done : done + len(weights), j] = data[r][j].metrics(weights, (metric,))[metric]
        done += len(weights)
    return out.reshape(n_repeats * rows, n_models)
