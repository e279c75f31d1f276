"""Paired comparisons of two backbones scored on the same test images: McNemar's exact
test on per-image correctness and a paired bootstrap of the ROC AUC difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom

from bench.evaluate.metrics import (
    Ranked,
    check_booleans,
    check_labels,
    check_resamples,
    percentile_interval,
    positive_scores,
    resample_weights,
)

#: Significance level the plain-words readings use.
ALPHA = 0.05
#: Resamples of the paired AUC bootstrap.
AUC_RESAMPLES = 2000



@dataclass
class PairTest:
    """Backbone ``a`` against ``b`` on the test images both were scored on."""

    a: str
    b: str
    n: int
    only_a: int  # images only a gets right
    only_b: int  # images only b gets right
    mcnemar_p: float
    auc_diff: float | None = None  # AUC(a) - AUC(b); None for multi-class problems
    auc_ci_low: float | None = None
    auc_ci_high: float | None = None
    auc_p: float | None = None

    @property
    def significant(self) -> bool:
        return self.mcnemar_p < ALPHA

    @property
    def auc_significant(self) -> bool:
        return self.auc_p is not None and not math.isnan(self.auc_p) and self.auc_p < ALPHA

    def flipped(self) -> PairTest:
        """The same test seen from ``b``'s side."""
        neg = (lambda v: None if v is None else -v)  # noqa: E731
        return PairTest(
            self.b, self.a, self.n, self.only_b, self.only_a, self.mcnemar_p,
            neg(self.auc_diff), neg(self.auc_ci_high), neg(self.auc_ci_low), self.auc_p,
        )


def compare_pair(
    a: str, b: str, pred_a: pd.DataFrame, pred_b: pd.DataFrame, classes: Sequence[str],
    n_resamples: int = AUC_RESAMPLES, seed: int = 0,
) -> PairTest:
    """McNemar's exact test on paired correctness and, for two classes, a paired bootstrap
    of the ROC AUC difference, on the images both prediction tables share (by ``file``)."""
    joined = pred_a.merge(pred_b, on="file", suffixes=("_a", "_b"), validate="one_to_one")
    if joined.empty:
        raise ValueError(f"{a} and {b} share no test images; cannot compare them")
    correct_a = joined["correct_a"].to_numpy(bool)
    correct_b = joined["correct_b"].to_numpy(bool)
    test = PairTest(
        a, b, len(joined), int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b)),
        mcnemar_exact(correct_a, correct_b),
    )
    if len(classes) == 2:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[str(v)] for v in joined["label_a"]], dtype=int)
        column = f"prob_{classes[1]}"
        auc = paired_bootstrap_auc(
            y, joined[f"{column}_a"].to_numpy(float), joined[f"{column}_b"].to_numpy(float),
            n_resamples=n_resamples, seed=seed,
        )
        test.auc_diff, test.auc_ci_low, test.auc_ci_high, test.auc_p = (
            auc["diff"], auc["ci_low"], auc["ci_high"], auc["p_value"]
        )
    return test


def pairwise_tests(
    predictions: dict[str, pd.DataFrame], classes: Sequence[str], n_resamples: int = AUC_RESAMPLES, seed: int = 0
) -> list[PairTest]:
    """Every pair of backbones, in the given (rank) order: (1, 2), (1, 3), ..., (2, 3), ..."""
    names = list(predictions)
    return [
        compare_pair(a, b, predictions[a], predictions[b], classes, n_resamples, seed)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]


def mcnemar_exact(correct_a, correct_b) -> float:
    """Two-sided exact McNemar p-value for two models scored on the same images.

    ``correct_a`` / ``correct_b``: per-image booleans (model right or wrong). With
    ``b`` = images only A got right and ``c`` = images only B got right, the p-value is
    ``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``; 1.0 when there
    are no discordant images (as ``statsmodels``' ``mcnemar(exact=True)``).
    """
    a = check_booleans(correct_a, "correct_a")
    b = check_booleans(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(
            "Expected correct_a and correct_b for the same images (same length). "
            f"Received: {a.shape[0]} and {b.shape[0]}"
        )
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def paired_bootstrap_auc(
    y_true, proba_a, proba_b, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """Paired bootstrap of the ROC AUC difference A - B on the same binary test images.

    Both models are scored on the same resampled images each time (resamples with one
    class only are dropped). Returns ``diff`` (A - B on all images), ``ci_low`` /
    ``ci_high`` (percentile interval at ``level``) and ``p_value`` =
    ``min(1, 2 * min(fraction of resampled diffs <= 0, fraction >= 0))``;
    ``nan`` everywhere if the AUC is undefined. Probabilities as in
    :func:`choose_threshold`: positive-class column, ``(N,)`` or ``(N, 2)``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected level strictly between 0 and 1. Received: level={level!r}")
    check_resamples(n_resamples)
    y = check_labels(y_true, 2, "y_true")
    scores_a = positive_scores(proba_a, len(y), "proba_a")
    scores_b = positive_scores(proba_b, len(y), "proba_b")
    rank_a = Ranked.build(scores_a, y == 1)
    rank_b = Ranked.build(scores_b, y == 1)
    ones = np.ones((1, len(y)))
    diff = float(rank_a.auc(ones)[0] - rank_b.auc(ones)[0])
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([rank_a.auc(w) - rank_b.auc(w) for w in resample_weights(rng, len(y), n_resamples)])
    diffs = diffs[~np.isnan(diffs)]
    if np.isnan(diff) or diffs.size == 0:
        nan = float("nan")
        return {"diff": nan, "ci_low": nan, "ci_high": nan, "p_value": nan}
    low, high = percentile_interval(diffs, level)
    p_value = min(1.0, 2.0 * min(np.mean(diffs <= 0.0), np.mean(diffs >= 0.0)))
    return {"diff": diff, "ci_low": low, "ci_high": high, "p_value": float(p_value)}
