"""DeLong's test for two correlated ROC AUCs, plain and clustered for duplicate groups.

Both models score the same binary test images, so their AUCs are correlated; DeLong,
DeLong & Clarke-Pearson (Biometrics 44:837, 1988) estimate the covariance matrix of
several AUCs from the *structural components* (placement values) of the Mann-Whitney
statistic:

* for a positive image ``x``: ``V10(x)`` = share of negatives scored below ``x`` (ties
  count one half); for a negative image ``y``: ``V01(y)`` = share of positives scored
  above ``y``; the AUC is the mean of either;
* ``S10`` / ``S01`` = sample covariance matrices (over images, between models) of the
  ``V10`` / ``V01``; ``Cov(AUC) = S10 / m + S01 / n`` (m positives, n negatives).

The placement values come from midranks in ``O(N log N)`` (Sun & Xu, IEEE Signal
Processing Letters 21:1389, 2014): ``V10 = (T_z - T_x) / n`` and
``V01 = 1 - (T_z - T_y) / m``, with ``T_z`` the midrank of an image among all images,
``T_x`` among the positives, ``T_y`` among the negatives.

Duplicate groups (``groups=``) make images within a group dependent. The clustered
estimator of Obuchowski (Biometrics 53:567, 1997) sums the structural components per
cluster ``i`` (``V10_i``, ``V01_i``; ``m_i`` positives and ``n_i`` negatives in it, I
clusters, M and N positives and negatives in all) and uses

    S10 = I / ((I - 1) M) * sum_i (V10_i - m_i AUC)(V10_i - m_i AUC)'
    S01 = I / ((I - 1) N) * sum_i (V01_i - n_i AUC)(V01_i - n_i AUC)'
    S11 = I / (I - 1)     * sum_i (V10_i - m_i AUC)(V01_i - n_i AUC)'
    Cov(AUC) = S10 / M + S01 / N + (S11 + S11') / (M N)

Properties (tests check them exactly): the AUCs do not depend on ``groups``; with every
image its own group the clustered estimate is DeLong's up to the small-sample factors
(``I / (I - 1)`` over all clusters instead of ``m / (m - 1)`` and ``n / (n - 1)`` per
class), so they differ by ``O(1/N)``; duplicating every image into a group of two gives
exactly the clustered estimate of the de-duplicated images with singleton groups, where
the plain DeLong estimate on the duplicated images would be about ``sqrt(2)`` too small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata

from bench.evaluate.resampling import check_labels, check_level, group_codes

__all__ = ["DeLongResult", "auc_covariance", "delong_test"]


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of ``AUC(a) - AUC(b)``; nan where undefined (see :func:`delong_test`)."""

    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    se: float  # standard error of diff
    z: float
    p_value: float  # two-sided, normal approximation
    ci_low: float  # diff -/+ z_{(1+level)/2} * se
    ci_high: float
    level: float
    n_pos: int
    n_neg: int
    n_groups: int | None  # clusters used (None: unclustered DeLong)

    def as_dict(self) -> dict:
        return asdict(self)


def auc_covariance(y_true, scores, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC of each score column and their covariance matrix (DeLong / Obuchowski).

    ``y_true``: 0/1 labels (1 = positive). ``scores``: ``(N,)`` or ``(N, k)``, one
    column per model, any finite real scores (higher = more positive). ``groups``: one
    duplicate-group id per image for the clustered estimator, ``None`` for DeLong's.
    Returns ``(aucs (k,), cov (k, k))``. Undefined entries are nan: every AUC without
    both classes; the covariance with fewer than 2 positives or 2 negatives (plain) or
    fewer than 2 groups (clustered).
    """
    y = check_labels(y_true, 2, "y_true")
    s = np.asarray(scores, dtype=float)
    s = s[:, None] if s.ndim == 1 else s
    if s.ndim != 2 or len(s) != len(y):
        raise ValueError(f"Expected scores of shape ({len(y)},) or ({len(y)}, k). Received: shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("Expected finite scores. Received: nan or inf")
    codes = None if groups is None else group_codes(groups, len(y))
    k = s.shape[1]
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    nan_cov = np.full((k, k), np.nan)
    if m == 0 or n == 0:
        return np.full(k, np.nan), nan_cov
    v10, v01 = _structural_components(s[pos], s[~pos], s, pos)
    aucs = v10.mean(axis=0)
    if codes is None:
        if m < 2 or n < 2:
            return aucs, nan_cov
        s10 = np.atleast_2d(np.cov(v10, rowvar=False))
        s01 = np.atleast_2d(np.cov(v01, rowvar=False))
        return aucs, s10 / m + s01 / n
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        return aucs, nan_cov
    # per-cluster sums of the components, centred by the cluster's expected share
    dev10 = _cluster_sums(v10, codes[pos], n_groups) - np.bincount(codes[pos], minlength=n_groups)[:, None] * aucs
    dev01 = _cluster_sums(v01, codes[~pos], n_groups) - np.bincount(codes[~pos], minlength=n_groups)[:, None] * aucs
    # Obuchowski's S10/M + S01/N + (S11 + S11')/(MN), written as one sum of outer products
    u = dev10 / m + dev01 / n
    return aucs, n_groups / (n_groups - 1) * (u.T @ u)


def delong_test(y_true, score_a, score_b, groups=None, level: float = 0.95) -> DeLongResult:
    """DeLong's test of two correlated ROC AUCs on the same binary test images.

    ``score_a`` / ``score_b``: positive-class scores, ``(N,)``, or ``(N, 2)``
    probabilities (column 1 is used). ``groups``: one duplicate-group id per image for
    the clustered version (Obuchowski 1997); ``None``: DeLong et al. (1988) via Sun &
    Xu (2014). ``z = diff / se``, ``p = 2 * (1 - Phi(|z|))``, CI ``diff -/+ Phi^-1((1 +
    level) / 2) * se``. A zero standard error (e.g. the same ranking twice) gives
    ``p = 1`` and ``z = 0`` when ``diff == 0``, else ``p = 0`` and ``z = +/-inf``, and
    the CI ``(diff, diff)``. Without enough data (see :func:`auc_covariance`) ``se``,
    ``z``, ``p_value`` and the CI are nan.
    """
    check_level(level)
    y = check_labels(y_true, 2, "y_true")
    columns = [_score_column(v, len(y), name) for v, name in ((score_a, "score_a"), (score_b, "score_b"))]
    aucs, cov = auc_covariance(y, np.column_stack(columns), groups)
    n_groups = None if groups is None else int(group_codes(groups, len(y)).max() + 1)
    diff = float(aucs[0] - aucs[1])
    nan = float("nan")
    se = z = p = low = high = nan
    if not np.isnan(cov).any():
        var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
        if var <= 1e-12 * (cov[0, 0] + cov[1, 1]) or var <= 0.0:  # zero up to rounding
            se, low, high = 0.0, diff, diff
            z, p = (0.0, 1.0) if abs(diff) <= 1e-12 else (float(np.copysign(np.inf, diff)), 0.0)
        else:
            se = float(np.sqrt(var))
            z = diff / se
            p = float(2.0 * norm.sf(abs(z)))
            half = float(norm.ppf((1.0 + level) / 2.0)) * se
            low, high = diff - half, diff + half
    return DeLongResult(
        auc_a=float(aucs[0]), auc_b=float(aucs[1]), diff=diff, se=se, z=z, p_value=p, ci_low=low, ci_high=high,
        level=float(level), n_pos=int(np.sum(y == 1)), n_neg=int(np.sum(y == 0)), n_groups=n_groups,
    )


def _structural_components(x: np.ndarray, yneg: np.ndarray, all_scores: np.ndarray, pos: np.ndarray):
    """Placement values from midranks (Sun & Xu 2014): V10 (m, k) and V01 (n, k)."""
    m, n = len(x), len(yneg)
    tz = rankdata(all_scores, method="average", axis=0)
    tx = rankdata(x, method="average", axis=0)
    ty = rankdata(yneg, method="average", axis=0)
    v10 = (tz[pos] - tx) / n
    v01 = 1.0 - (tz[~pos] - ty) / m
    return v10, v01


def _cluster_sums(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum of each column of ``values`` per cluster code: (n_groups, k)."""
    out = np.zeros((n_groups, values.shape[1]))
    np.add.at(out, codes, values)
    return out


def _score_column(v, n: int, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=float)
    if arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr[:, 1]
    if arr.shape != (n,):
        raise ValueError(f"Expected {name} of shape ({n},) or ({n}, 2). Received: shape {np.asarray(v).shape}")
    return arr
