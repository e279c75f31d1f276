"""Rank-based comparison of models over several datasets (Demšar, "Statistical comparisons
of classifiers over multiple data sets", JMLR 7:1, 2006).

Every function reads ``scores`` of shape ``(n_datasets, n_models)``, oriented so that
higher is better (the caller negates losses such as the Brier score), nan where a model
failed on a dataset.

* :func:`ranks`: per-dataset ranks with the :data:`MISSING_RULE`.
* :func:`friedman`: Friedman's test on the ranks and Iman & Davenport's F (Demšar 2006,
  section 3.2.2).
* :func:`nemenyi`: the critical difference of mean ranks and pairwise p-values (Demšar
  2006, section 3.2.2, via scikit-posthocs).
* :func:`probability_best_hierarchical`: the share of hierarchical bootstrap draws
  (datasets, then each dataset's own resamples) in which each model has the best mean rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = ["MISSING_RULE", "Friedman", "Nemenyi", "friedman", "iman_davenport", "nemenyi",
           "probability_best_hierarchical", "ranks"]

#: How a failed model is ranked (the report prints this sentence).
MISSING_RULE = ("A model that failed on a dataset ranks below every model that ran there (the failed models share "
                "the average of the last places); a dataset on which no model ran is left out.")
#: Default number of draws of :func:`probability_best_hierarchical`.
HIERARCHICAL_RESAMPLES = 5000
TIE_TOL = 1e-9  # scores or mean ranks this close count as tied


def check_scores(scores, models: Sequence[str] | None = None) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] < 1 or np.isinf(s).any():
        raise ValueError(f"Expected scores of shape (n_datasets, n_models), finite or nan. Received: shape {s.shape}")
    if models is not None and s.shape[1] != len(models):
        raise ValueError(f"Expected one score column per model ({len(models)}). Received: {s.shape[1]} columns")
    return s


def ranks(scores) -> np.ndarray:
    """Per-dataset ranks, 1 = best, tied scores sharing the average of their places.

    The :data:`MISSING_RULE`: on each dataset, the models that ran take places
    ``1 .. m`` and the failed ones (nan) share the average of places ``m + 1 .. k``; a
    dataset on which no model ran gets a row of nan. Returns ``(n_datasets, n_models)``.
    """
    s = check_scores(scores)
    k = s.shape[1]
    out = stats.rankdata(-s, axis=1, nan_policy="omit")
    ran = (~np.isnan(s)).sum(axis=1, keepdims=True)
    last = np.broadcast_to((ran + 1 + k) / 2.0, s.shape)
    out = np.where(np.isnan(s), last, out)
    out[ran[:, 0] == 0] = np.nan
    return out


def _ranked(scores) -> np.ndarray:
    """Ranks of the datasets on which at least one model ran."""
    r = ranks(scores)
    return r[~np.isnan(r).any(axis=1)]


def iman_davenport(chi2: float, n_datasets: int, n_models: int) -> tuple[float, float]:
    """Iman & Davenport's ``F_F = (N - 1) chi2 / (N (k - 1) - chi2)`` and its p-value on
    ``k - 1`` and ``(k - 1)(N - 1)`` degrees of freedom (Demšar 2006, section 3.2.2)."""
    n, k = n_datasets, n_models
    denominator = n * (k - 1) - chi2
    if denominator <= 0:  # every dataset ranks the models the same way
        return math.inf, 0.0
    ff = (n - 1) * chi2 / denominator
    return float(ff), float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))


@dataclass(frozen=True)
class Friedman:
    """Friedman's test of "every model has the same mean rank".

    ``chi2`` / ``p_value``: scipy's ``friedmanchisquare`` on the ranks (tie-corrected);
    ``chi2_untied``: Demšar's ``12N / (k(k+1)) * (sum R_j^2 - k(k+1)^2 / 4)`` from the
    mean ranks ``R_j`` (equal to ``chi2`` when no dataset has tied scores);
    ``ff`` / ``ff_p``: Iman & Davenport's F from ``chi2``. ``reason`` says why a test was
    not computed (then the numbers are nan).
    """

    computed: bool
    reason: str
    n_datasets: int
    n_models: int
    chi2: float = math.nan
    p_value: float = math.nan
    chi2_untied: float = math.nan
    ff: float = math.nan
    ff_p: float = math.nan


def friedman(scores) -> Friedman:
    """Friedman's test over the datasets (rows) of ``scores``, failed cells ranked by the
    :data:`MISSING_RULE`; needs at least 3 models and 2 datasets."""
    r = _ranked(scores)
    n, k = r.shape
    if k < 3 or n < 2:
        return Friedman(False, f"needs at least 3 models and 2 datasets; has {k} and {n}", n, k)
    if np.all(np.ptp(r, axis=1) == 0):
        return Friedman(False, "every model ties on every dataset", n, k)
    chi2, p = stats.friedmanchisquare(*r.T)
    mean = r.mean(axis=0)
    untied = 12.0 * n / (k * (k + 1)) * (np.sum(mean**2) - k * (k + 1) ** 2 / 4.0)
    ff, ff_p = iman_davenport(float(chi2), n, k)
    return Friedman(True, "", n, k, float(chi2), float(p), float(untied), ff, ff_p)


@dataclass(frozen=True)
class Nemenyi:
    """Nemenyi's post-hoc test: two models differ when their mean ranks differ by more
    than ``cd = q_alpha * sqrt(k (k + 1) / (6 N))``; ``p_values`` (k x k, 1 on the
    diagonal) come from scikit-posthocs' ``posthoc_nemenyi_friedman``."""

    computed: bool
    reason: str
    alpha: float
    q_alpha: float = math.nan
    cd: float = math.nan
    p_values: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))


def nemenyi(scores, alpha: float = 0.05) -> Nemenyi:
    """Critical difference and pairwise p-values of mean ranks (Demšar 2006, section 3.2.2):
    ``q_alpha`` is the studentized range quantile ``q(1 - alpha; k, inf) / sqrt(2)``
    (2.569 for k = 4 at alpha = 0.05). Needs at least 2 models and 2 datasets."""
    import pandas as pd
    import scikit_posthocs

    r = _ranked(scores)
    n, k = r.shape
    if k < 2 or n < 2:
        return Nemenyi(False, f"needs at least 2 models and 2 datasets; has {k} and {n}", alpha,
                       p_values=np.full((k, k), np.nan))
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))
    cd = q * math.sqrt(k * (k + 1) / (6.0 * n))
    p = scikit_posthocs.posthoc_nemenyi_friedman(pd.DataFrame(r)).to_numpy(dtype=float)
    return Nemenyi(True, "", alpha, q, cd, p)


def probability_best_hierarchical(per_dataset: Sequence, n_resamples: int = HIERARCHICAL_RESAMPLES,
                                  seed: int = 0) -> np.ndarray:
    """Share of hierarchical bootstrap draws in which each model has the best mean rank.

    ``per_dataset``: one array ``(B_d, n_models)`` per dataset of bootstrap replicates of
    the oriented score (e.g. from :func:`bench.evaluate.comparisons.bootstrap_scores`,
    drawn over the dataset's duplicate groups; ``B_d = 1`` for the point estimate alone).
    A column that is nan in every row is a model that failed on the dataset (the
    :data:`MISSING_RULE`); rows with nan elsewhere (a metric undefined on that resample)
    are left out, and so is a dataset on which no model ran. Each draw takes as many
    datasets as there are, with replacement, then one replicate row of each at random,
    ranks the models within each drawn row and averages the ranks; models tied for the
    lowest mean rank share the draw. Returns ``(n_models,)`` shares summing to 1.
    """
    if int(n_resamples) < 1 or len(per_dataset) < 1:
        raise ValueError(f"Expected n_resamples >= 1 and at least one dataset. "
                         f"Received: n_resamples={n_resamples!r}, {len(per_dataset)} datasets")
    tables = []
    for d, rows in enumerate(per_dataset):
        x = np.asarray(rows, dtype=float)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != np.shape(per_dataset[0])[-1] or len(x) == 0:
            raise ValueError(f"Expected dataset {d} as (n_replicates, n_models) like the first dataset. "
                             f"Received: shape {x.shape}")
        failed = np.isnan(x).all(axis=0)
        if failed.all():
            continue
        x = x[~np.isnan(x[:, ~failed]).any(axis=1)]
        if len(x) == 0:
            raise ValueError(f"Expected at least one replicate of dataset {d} where every model that ran has a "
                             "score. Received: none")
        tables.append(ranks(x))
    if not tables:
        raise ValueError("Expected at least one dataset on which a model ran. Received: every model failed everywhere")
    sizes = np.array([len(t) for t in tables])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate(tables)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(tables), size=(int(n_resamples), len(tables)))
    rows = (rng.random(drawn.shape) * sizes[drawn]).astype(int)
    mean = flat[offsets[drawn] + rows].mean(axis=1)
    best = mean <= mean.min(axis=1, keepdims=True) + TIE_TOL
    return (best / best.sum(axis=1, keepdims=True)).mean(axis=0)
