"""The verdict across datasets: which model ranks best over a suite of datasets, and how
sure can one be?

``scores`` is ``(n_datasets, n_models)``, oriented so that higher is better (the caller
negates losses such as the Brier score), nan where a model failed on a dataset. The
rank-based parts (ranks, Friedman, Nemenyi, hierarchical probability best) live in
:mod:`bench.evaluate.rank_tests`; this module adds the pairs and puts everything together:

* :func:`pairwise`: for every pair, wins / ties / losses (:data:`TIE_RULE`), the Wilcoxon
  signed-rank test Holm-adjusted over all pairs (Demšar 2006, section 3.1.3; Benavoli,
  Corani & Mangili, JMLR 17:5, 2016) and the Bayesian signed-rank test with a ROPE
  (:mod:`bench.evaluate.bayes_signed_rank`).
* :func:`compare_across`: everything for one suite as an :class:`AcrossDatasets`, with
  :func:`verdict` in plain words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import stats

from bench.evaluate.bayes_signed_rank import bayesian_signed_rank
from bench.evaluate.comparisons import holm
from bench.evaluate.rank_tests import (
    MISSING_RULE, TIE_TOL, Friedman, Nemenyi, check_scores, friedman, nemenyi, probability_best_hierarchical, ranks,
)

__all__ = ["MISSING_RULE", "TIE_RULE", "AcrossDatasets", "Friedman", "Nemenyi", "Pair", "compare_across", "friedman",
           "nemenyi", "pairwise", "probability_best_hierarchical", "ranks", "verdict"]

#: How one dataset counts as a win, a tie or a loss (the report prints this sentence).
TIE_RULE = ("On each dataset where both ran, a pair is tied when their scores differ by at most the ROPE; "
            "otherwise the higher score wins.")
#: The tests across datasets are reported in the verdict from this many datasets on.
MIN_DATASETS = 3
#: Fewer paired datasets and the Wilcoxon test cannot reach p < 0.05 (its smallest two-sided p is 2 / 2**n).
WILCOXON_MIN_DATASETS = 6


@dataclass(frozen=True)
class Pair:
    """Model ``a`` against model ``b`` on the ``n`` datasets where both ran.

    ``wins`` / ``ties`` / ``losses`` are ``a``'s (:data:`TIE_RULE`). ``r_plus`` /
    ``r_minus``: Wilcoxon's rank sums of the datasets where ``a`` / ``b`` scores higher,
    zero differences split between them (Demšar 2006, section 3.1.3); ``p_value`` is
    scipy's two-sided Wilcoxon p, ``p_holm`` Holm-adjusted over all pairs. ``p_a_better``,
    ``p_rope``, ``p_b_better``: the Bayesian signed-rank test. ``*_reason`` says why a
    test was not computed (its numbers are then nan).
    """

    a: str
    b: str
    n: int
    wins: int
    ties: int
    losses: int
    r_plus: float = math.nan
    r_minus: float = math.nan
    p_value: float = math.nan
    p_holm: float = math.nan
    wilcoxon_reason: str = ""
    p_a_better: float = math.nan
    p_rope: float = math.nan
    p_b_better: float = math.nan
    bayes_reason: str = ""


def _wilcoxon(d: np.ndarray) -> dict:
    if len(d) < WILCOXON_MIN_DATASETS:
        return {"wilcoxon_reason": f"needs at least {WILCOXON_MIN_DATASETS} datasets where both ran; has {len(d)}"}
    if np.all(d == 0):
        return {"wilcoxon_reason": "the two models score the same on every dataset"}
    r = stats.rankdata(np.abs(d))
    zero = r[d == 0].sum() / 2.0
    p = stats.wilcoxon(d, zero_method="zsplit").pvalue
    return {"r_plus": float(r[d > 0].sum() + zero), "r_minus": float(r[d < 0].sum() + zero), "p_value": float(p)}


def pairwise(models: Sequence[str], scores, rope: float = 0.01, seed: int = 0) -> list[Pair]:
    """Every pair ``(models[i], models[j])``, ``i < j``, compared on the datasets where
    both ran: wins / ties / losses, Wilcoxon signed-rank (scipy, ``zero_method="zsplit"``)
    Holm-adjusted over the pairs, and the Bayesian signed-rank test with ``rope``
    (half-width, in the score's units; each pair seeded with ``seed``)."""
    s = check_scores(scores, models)
    if not np.isfinite(rope) or rope < 0:
        raise ValueError(f"Expected rope >= 0. Received: {rope!r}")
    pairs = []
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            both = ~np.isnan(s[:, i]) & ~np.isnan(s[:, j])
            d = s[both, i] - s[both, j]
            tied = np.abs(d) <= rope + TIE_TOL
            extra = _wilcoxon(d)
            if len(d) >= 2:
                extra.update(zip(("p_a_better", "p_rope", "p_b_better"), bayesian_signed_rank(d, rope, seed=seed)))
            else:
                extra["bayes_reason"] = f"needs at least 2 datasets where both ran; has {len(d)}"
            pairs.append(Pair(models[i], models[j], int(both.sum()), int(np.sum(~tied & (d > 0))), int(tied.sum()),
                              int(np.sum(~tied & (d < 0))), **extra))
    adjusted = holm([p.p_value for p in pairs]) if pairs else []
    return [replace(p, p_holm=float(h)) for p, h in zip(pairs, adjusted)]


@dataclass(frozen=True)
class AcrossDatasets:
    """Everything :func:`compare_across` finds for one suite; :meth:`as_dict` is its JSON.

    ``ranks``: ``(n_datasets, n_models)`` (:func:`ranks`); ``mean_ranks`` and ``first``
    (datasets where a model ranks first, a shared first place included) count the
    ``n_ranked`` datasets on which at least one model ran. ``pairs``: :func:`pairwise`.
    ``probability_best``: :func:`probability_best_hierarchical`, or None without replicates.
    """

    datasets: list[str]
    models: list[str]
    scores: np.ndarray
    rope: float
    alpha: float
    ranks: np.ndarray
    mean_ranks: np.ndarray
    first: np.ndarray
    n_ranked: int
    friedman: Friedman
    nemenyi: Nemenyi
    pairs: list[Pair]
    probability_best: np.ndarray | None = None
    verdict: str = ""
    missing_rule: str = MISSING_RULE
    tie_rule: str = TIE_RULE

    def pair(self, a: str, b: str) -> Pair:
        """Model ``a`` against model ``b``, whichever order :func:`pairwise` stored them in."""
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.a, p.b) == (b, a):
                return replace(p, a=a, b=b, wins=p.losses, losses=p.wins, r_plus=p.r_minus, r_minus=p.r_plus,
                               p_a_better=p.p_b_better, p_b_better=p.p_a_better)
        raise ValueError(f"Expected two different models among {', '.join(self.models)}. Received: {a!r}, {b!r}")

    def bayes_matrix(self) -> np.ndarray:
        """``(k, k, 3)``: cell ``[i, j]`` holds P(model i better), P(equivalent),
        P(model j better); nan on the diagonal and where the test was not computed."""
        k = len(self.models)
        out = np.full((k, k, 3), np.nan)
        for i, a in enumerate(self.models):
            for j, b in enumerate(self.models):
                if i != j:
                    p = self.pair(a, b)
                    out[i, j] = (p.p_a_better, p.p_rope, p.p_b_better)
        return out

    def as_dict(self) -> dict:
        """Plain lists, numbers and strings (nan as None), ready for ``json.dump``."""
        return json_ready(self)


def json_ready(value):
    """``value`` as plain lists, numbers and strings for ``json.dump`` (dataclasses as dicts,
    numpy values as Python ones, nan and inf as None)."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: json_ready(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(key): json_ready(v) for key, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _datasets(n: int) -> str:
    return f"{n} dataset{'' if n == 1 else 's'}"


def verdict(result: AcrossDatasets) -> str:
    """The result in plain words: the model with the best mean rank, how often it ranks
    first, how it fares against the runner-up (wins / ties / losses and the Bayesian
    signed-rank test) and Friedman's p. With fewer than :data:`MIN_DATASETS` datasets
    the sentence says that the tests need more datasets instead of quoting them."""
    models, n = result.models, result.n_ranked
    if len(models) == 1:
        return f"{models[0]} is the only model: there is nothing to compare."
    if n == 0:
        return "No model ran on any dataset: there is nothing to compare."
    best, runner = np.argsort(result.mean_ranks, kind="stable")[:2]
    top, second = result.mean_ranks[best], result.mean_ranks[runner]
    where = "the only dataset" if n == 1 else f"{result.first[best]} of {n} datasets"
    if second - top <= TIE_TOL:
        text = f"{models[best]} and {models[runner]} share the best mean rank ({top:.2f}); {models[best]}"
    else:
        text = (f"{models[best]} ranked first on {where} (mean rank {top:.2f}); against the runner-up "
                f"{models[runner]} it")
    pair = result.pair(models[best], models[runner])
    counts = [(c, what) for c, what in ((pair.ties, "practically equivalent"), (pair.wins, "better"),
                                        (pair.losses, "worse")) if c]
    said = [f"{what} on {_datasets(c) if i == 0 else c}" for i, (c, what) in enumerate(counts)]
    if not said:
        text += " cannot be compared: they ran on no dataset in common"
    else:
        text += " is " + (", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 else said[0])
    if 0 < pair.n < n:
        text += f" (of the {_datasets(pair.n)} where both ran)"
    if n >= MIN_DATASETS and not pair.bayes_reason:
        text += (f" (Bayesian signed-rank, ROPE {result.rope:g}: P(better) {pair.p_a_better:.2f}, "
                 f"P(equivalent) {pair.p_rope:.2f})")
    f = result.friedman
    if n >= MIN_DATASETS and f.computed:
        differ = "the mean ranks differ" if f.p_value < result.alpha else "no significant difference in mean rank"
        text += f"; Friedman {_p(f.p_value)} ({differ} at \u03b1 = {result.alpha:g})"
    text += "."
    if n < MIN_DATASETS:
        text += (f" With {_datasets(n)}, the tests across datasets (Friedman, Wilcoxon, Bayesian signed-rank) are "
                 f"not reported: they need at least {MIN_DATASETS} datasets.")
    failed = np.isnan(result.scores).sum(axis=0)
    if failed.any():
        text += " Failed, and ranked last there: " + ", ".join(
            f"{m} on {_datasets(int(c))}" for m, c in zip(models, failed) if c) + "."
    return text


def compare_across(datasets: Sequence[str], models: Sequence[str], scores, rope: float = 0.01, alpha: float = 0.05,
                   replicates: Sequence | None = None, seed: int = 0) -> AcrossDatasets:
    """Ranks, Friedman, Nemenyi, pairwise tests, probability best and the verdict of one suite.

    Parameters
    ----------
    datasets, models : sequence of str
        Row and column names of ``scores``.
    scores : array_like
        ``(n_datasets, n_models)``, higher is better, nan where a model failed.
    rope : float
        Half-width of the region of practical equivalence in the score's units: the tie
        margin of wins / ties / losses and the ROPE of the Bayesian signed-rank test.
    alpha : float
        Level of the Nemenyi critical difference and of the verdict's wording.
    replicates : sequence of array_like, optional
        One ``(B_d, n_models)`` array of bootstrap replicates per dataset, for
        :func:`probability_best_hierarchical`; None leaves ``probability_best`` None.
    seed : int
        Seed of the Bayesian test's draws and of the hierarchical bootstrap.
    """
    s = check_scores(scores, models)
    names = [str(m) for m in models]
    if len(datasets) != len(s) or len(set(names)) != len(names):
        raise ValueError(f"Expected one dataset name per row ({len(s)}) and distinct model names. "
                         f"Received: {len(datasets)} datasets, models {names}")
    if not 0 < alpha < 1:
        raise ValueError(f"Expected 0 < alpha < 1. Received: {alpha!r}")
    r = ranks(s)
    ranked = ~np.isnan(r).any(axis=1)
    kept = r[ranked]
    mean = kept.mean(axis=0) if len(kept) else np.full(len(names), np.nan)
    first = (kept <= kept.min(axis=1, keepdims=True) + TIE_TOL).sum(axis=0)
    best = None
    if replicates is not None:
        if len(replicates) != len(s):
            raise ValueError(f"Expected one replicate array per dataset ({len(s)}). Received: {len(replicates)}")
        if ranked.any():
            best = probability_best_hierarchical([replicates[i] for i in np.flatnonzero(ranked)], seed=seed)
    result = AcrossDatasets(
        [str(d) for d in datasets], names, s, float(rope), float(alpha), r, mean, first, int(ranked.sum()),
        friedman(s), nemenyi(s, alpha), pairwise(names, s, rope, seed), best,
    )
    return replace(result, verdict=verdict(result))
