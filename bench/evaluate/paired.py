"""Paired comparisons of two backbones scored on the same test images: McNemar's exact
test on correctness, a paired bootstrap of the ROC AUC difference and DeLong's test
(:mod:`bench.evaluate.delong`); :func:`pairwise_tests` adds Holm-adjusted p-values
over all pairs (:func:`bench.evaluate.comparisons.holm`).

Duplicate groups (``groups=``): copies of one scan are not independent, so with groups
every test takes the group as its unit: McNemar counts one vote per model and group,
the bootstrap draws whole groups, and DeLong's test uses Obuchowski's (1997) clustered
variance.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.stats import binom

from bench.tables import text_frame
from bench.evaluate.comparisons import holm
from bench.evaluate.delong import delong_test
from bench.evaluate.resampling import (
    Ranked,
    check_booleans,
    check_labels,
    check_level,
    check_resamples,
    group_codes,
    percentile_interval,
    positive_scores,
    resample_weights,
)

#: Significance level the plain-words readings use.
ALPHA = 0.05
#: Resamples of the paired AUC bootstrap.
AUC_RESAMPLES = 2000


def _neg(v):
    return None if v is None else -v


@dataclass
class PairTest:
    """Backbone ``a`` against ``b`` on the test images both were scored on.

    ``unit`` is ``"image"``, or ``"group"`` when duplicate groups were given: then
    ``mcnemar_p`` is the one-vote-per-group test (``groups_only_a`` / ``groups_only_b``
    are its discordant groups), the AUC bootstrap draws whole groups and the DeLong
    fields are Obuchowski's clustered version. ``only_a`` / ``only_b`` always count
    images. The ``*_holm`` fields are filled by :func:`pairwise_tests` (Holm-adjusted
    over all pairs); ``None`` where a test was not run (e.g. AUC tests of a multi-class
    problem).
    """

    a: str
    b: str
    n: int
    only_a: int  # images only a gets right
    only_b: int  # images only b gets right
    mcnemar_p: float
    auc_diff: float | None = None  # AUC(a) - AUC(b); None for multi-class problems
    auc_ci_low: float | None = None
    auc_ci_high: float | None = None
    auc_p: float | None = None  # paired bootstrap
    unit: str = "image"
    n_groups: int | None = None
    groups_only_a: int | None = None  # groups only a gets right (majority vote)
    groups_only_b: int | None = None
    delong_se: float | None = None  # standard error of auc_diff
    delong_z: float | None = None
    delong_p: float | None = None
    delong_ci_low: float | None = None  # 95 % CI of auc_diff, normal approximation
    delong_ci_high: float | None = None
    mcnemar_p_holm: float | None = None
    auc_p_holm: float | None = None
    delong_p_holm: float | None = None
    # --cv: the corrected resampled t-test on per-fold differences of ttest_metric (a - b)
    ttest_metric: str | None = None
    ttest_mean: float | None = None
    ttest_t: float | None = None
    ttest_df: int | None = None
    ttest_p: float | None = None
    ttest_ci_low: float | None = None
    ttest_ci_high: float | None = None
    ttest_p_holm: float | None = None

    @property
    def significant(self) -> bool:
        return self.mcnemar_p < ALPHA

    @property
    def auc_significant(self) -> bool:
        return self.auc_p is not None and not math.isnan(self.auc_p) and self.auc_p < ALPHA

    @property
    def delong_significant(self) -> bool:
        return self.delong_p is not None and not math.isnan(self.delong_p) and self.delong_p < ALPHA

    def flipped(self) -> PairTest:
        """The same test seen from ``b``'s side."""
        return replace(
            self, a=self.b, b=self.a, only_a=self.only_b, only_b=self.only_a,
            groups_only_a=self.groups_only_b, groups_only_b=self.groups_only_a,
            auc_diff=_neg(self.auc_diff), auc_ci_low=_neg(self.auc_ci_high), auc_ci_high=_neg(self.auc_ci_low),
            delong_z=_neg(self.delong_z), delong_ci_low=_neg(self.delong_ci_high),
            delong_ci_high=_neg(self.delong_ci_low), ttest_mean=_neg(self.ttest_mean), ttest_t=_neg(self.ttest_t),
            ttest_ci_low=_neg(self.ttest_ci_high), ttest_ci_high=_neg(self.ttest_ci_low),
        )


def compare_pair(
    a: str, b: str, pred_a: pd.DataFrame, pred_b: pd.DataFrame, classes: Sequence[str],
    n_resamples: int = AUC_RESAMPLES, seed: int = 0, groups: Mapping[str, str] | pd.Series | None = None,
) -> PairTest:
    """McNemar's exact test on paired correctness and, for two classes, a paired bootstrap
    of the ROC AUC difference and DeLong's test, on the images both prediction tables
    share (by ``file``).

    ``groups``: duplicate-group id of each test image, keyed by its ``file`` (a dict or a
    ``pandas.Series`` indexed by file; every shared file needs one). ``None``: images
    are the unit.
    """
    joined = _join_on_file(pred_a, pred_b)
    if joined.empty:
        raise ValueError(f"{a} and {b} share no test images; cannot compare them")
    ids = None if groups is None else _lookup_groups(groups, joined["file"])
    correct_a = joined["correct_a"].to_numpy(bool)
    correct_b = joined["correct_b"].to_numpy(bool)
    only_a, only_b = mcnemar_counts(correct_a, correct_b)
    test = PairTest(a, b, len(joined), only_a, only_b, _mcnemar_p(only_a, only_b))
    if ids is not None:
        test.unit = "group"
        test.n_groups = int(group_codes(ids, len(ids)).max() + 1)
        test.groups_only_a, test.groups_only_b = mcnemar_counts(correct_a, correct_b, groups=ids)
        test.mcnemar_p = _mcnemar_p(test.groups_only_a, test.groups_only_b)
    if len(classes) == 2:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[str(v)] for v in joined["label_a"]], dtype=int)
        column = f"prob_{classes[1]}"
        s_a, s_b = joined[f"{column}_a"].to_numpy(float), joined[f"{column}_b"].to_numpy(float)
        auc = paired_bootstrap_auc(y, s_a, s_b, n_resamples=n_resamples, seed=seed, groups=ids)
        test.auc_diff, test.auc_ci_low, test.auc_ci_high, test.auc_p = (
            auc["diff"], auc["ci_low"], auc["ci_high"], auc["p_value"]
        )
        d = delong_test(y, s_a, s_b, groups=ids)
        test.delong_se, test.delong_z, test.delong_p, test.delong_ci_low, test.delong_ci_high = (
            d.se, d.z, d.p_value, d.ci_low, d.ci_high
        )
    return test


def _join_on_file(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> pd.DataFrame:
    """The rows of both tables for the files both hold (``pred_a``'s order), every other
    column suffixed ``_a`` / ``_b``. Joined in Python: pandas' merge and suffixes would turn
    file and class names into a string dtype that refuses names that are not valid UTF-8."""
    files_a, files_b = list(pred_a["file"]), list(pred_b["file"])
    if len(set(files_a)) != len(files_a) or len(set(files_b)) != len(files_b):
        raise ValueError("Expected each file once in each prediction table. Received: a file listed twice")
    where_b = {f: i for i, f in enumerate(files_b)}
    rows_a = [i for i, f in enumerate(files_a) if f in where_b]
    rows_b = [where_b[files_a[i]] for i in rows_a]
    columns = [("file", np.array([files_a[i] for i in rows_a], dtype=object)),
               *_suffixed(pred_a, rows_a, "_a"), *_suffixed(pred_b, rows_b, "_b")]
    joined = text_frame(dict(columns))
    return joined


def _suffixed(table: pd.DataFrame, rows: list[int], suffix: str) -> list[tuple[str, np.ndarray]]:
    """(name + ``suffix``, values at ``rows``) of every column of ``table`` but its file
    column, as plain arrays: pandas would make a string Index of the names, and class
    names in ``prob_<class>`` need not be valid UTF-8."""
    return [(f"{name}{suffix}", table.iloc[:, j].to_numpy()[rows]) for j, name in enumerate(table.columns)
            if name != "file"]


def pairwise_tests(
    predictions: dict[str, pd.DataFrame], classes: Sequence[str], n_resamples: int = AUC_RESAMPLES, seed: int = 0,
    groups: Mapping[str, str] | pd.Series | None = None,
) -> list[PairTest]:
    """Every pair of backbones, in the given (rank) order: (1, 2), (1, 3), ..., (2, 3), ...

    Fills ``mcnemar_p_holm``, ``auc_p_holm`` and ``delong_p_holm``: each family of
    p-values Holm-adjusted over all pairs (Holm 1979). ``groups`` as in
    :func:`compare_pair`.
    """
    names = list(predictions)
    tests = [
        compare_pair(a, b, predictions[a], predictions[b], classes, n_resamples, seed, groups=groups)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    for field in ("mcnemar_p", "auc_p", "delong_p"):
        values = [getattr(t, field) for t in tests]
        ran = [i for i, v in enumerate(values) if v is not None]
        adjusted = holm([values[i] for i in ran]) if ran else []
        for i, p in zip(ran, adjusted):
            setattr(tests[i], f"{field}_holm", float(p))
    return tests


def mcnemar_counts(correct_a, correct_b, groups=None) -> tuple[int, int]:
    """Discordant counts ``(only A right, only B right)`` over images, or over groups.

    With ``groups`` (one duplicate-group id per image) each model casts one vote per
    group: right when it is right on more than half of the group's images, wrong on
    fewer than half, undecided at exactly half. A group is discordant only when one
    model's vote is right and the other's wrong; a group where either model is
    undecided counts in neither direction (it carries no clear evidence for one model).
    """
    a = check_booleans(correct_a, "correct_a")
    b = check_booleans(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(
            "Expected correct_a and correct_b for the same images (same length). "
            f"Received: {a.shape[0]} and {b.shape[0]}"
        )
    if groups is None:
        return int(np.sum(a & ~b)), int(np.sum(~a & b))
    codes = group_codes(groups, len(a))
    size = np.bincount(codes)
    vote_a = np.sign(2 * np.bincount(codes, weights=a, minlength=len(size)) - size)  # +1 right, -1 wrong, 0 tie
    vote_b = np.sign(2 * np.bincount(codes, weights=b, minlength=len(size)) - size)
    return int(np.sum((vote_a > 0) & (vote_b < 0))), int(np.sum((vote_a < 0) & (vote_b > 0)))


def mcnemar_exact(correct_a, correct_b, groups=None) -> float:
    """Two-sided exact McNemar p-value for two models scored on the same images.

    ``correct_a`` / ``correct_b``: per-image booleans (model right or wrong). With
    ``b`` = images only A got right and ``c`` = images only B got right, the p-value is
    ``min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``; 1.0 when there
    are no discordant images (as ``statsmodels``' ``mcnemar(exact=True)``). With
    ``groups`` (one duplicate-group id per image), ``b`` and ``c`` count discordant
    *groups* by majority vote, see :func:`mcnemar_counts` for the rule.
    """
    return _mcnemar_p(*mcnemar_counts(correct_a, correct_b, groups))


def _mcnemar_p(only_a: int, only_b: int) -> float:
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def _lookup_groups(groups: Mapping[str, str] | pd.Series, files: pd.Series) -> np.ndarray:
    """The group of each of ``files``, in Python: a pandas index of the names would be a
    string dtype that refuses names that are not valid UTF-8."""
    mapping = dict(groups.items()) if isinstance(groups, pd.Series) else dict(groups)
    names = list(files)
    missing = [f for f in names if f not in mapping or mapping[f] is None
               or (isinstance(mapping[f], float) and math.isnan(mapping[f]))]
    if missing:
        raise ValueError(f"Expected a duplicate group for every compared image. Received none for: {missing[:5]}")
    return np.array([str(mapping[f]) for f in names], dtype=object)


def paired_bootstrap_auc(
    y_true, proba_a, proba_b, n_resamples: int = 2000, seed: int = 0, level: float = 0.95, groups=None
) -> dict:
    """Paired bootstrap of the ROC AUC difference A - B on the same binary test images.

    Both models are scored on the same resampled images each time (resamples with one
    class only are dropped). Returns ``diff`` (A - B on all images), ``ci_low`` /
    ``ci_high`` (percentile interval at ``level``) and ``p_value`` =
    ``min(1, 2 * min(fraction of resampled diffs <= 0, fraction >= 0))``;
    ``nan`` everywhere if the AUC is undefined. Probabilities as in
    :func:`choose_threshold`: positive-class column, ``(N,)`` or ``(N, 2)``. ``groups``
    (one duplicate-group id per image): each resample draws whole groups, as in
    :func:`bench.evaluate.metrics.bootstrap_ci`; ``None`` keeps the per-image draws.
    """
    check_level(level)
    check_resamples(n_resamples)
    y = check_labels(y_true, 2, "y_true")
    scores_a = positive_scores(proba_a, len(y), "proba_a")
    scores_b = positive_scores(proba_b, len(y), "proba_b")
    ones = np.ones((1, len(y)))
    diff = float(Ranked.build(scores_a, y == 1).auc(ones)[0] - Ranked.build(scores_b, y == 1).auc(ones)[0])
    codes = None if groups is None else group_codes(groups, len(y))
    diffs = (_resampled_aucs(scores_a, y, codes, n_resamples, seed)
             - _resampled_aucs(scores_b, y, codes, n_resamples, seed))
    diffs = diffs[~np.isnan(diffs)]
    if np.isnan(diff) or diffs.size == 0:
        nan = float("nan")
        return {"diff": nan, "ci_low": nan, "ci_high": nan, "p_value": nan}
    low, high = percentile_interval(diffs, level)
    p_value = min(1.0, 2.0 * min(np.mean(diffs <= 0.0), np.mean(diffs >= 0.0)))
    return {"diff": diff, "ci_low": low, "ci_high": high, "p_value": float(p_value)}


#: Resampled AUCs of score columns (:func:`_resampled_aucs`), the most recent last.
_RESAMPLED: OrderedDict[str, np.ndarray] = OrderedDict()
#: Columns kept: every model of a comparison of dozens, at 2,000 resamples 16 KB each.
RESAMPLED_KEPT = 256


def _resampled_aucs(scores: np.ndarray, y: np.ndarray, codes: np.ndarray | None, n_resamples: int,
                    seed: int) -> np.ndarray:
    """The ROC AUC of ``scores`` in each bootstrap resample drawn from ``seed`` (nan where a
    resample holds one class). Every pair of a comparison draws the same resamples (one
    seed, the same images), so a model compared with eleven others is resampled once,
    not eleven times: the values are kept by what determines them."""
    h = hashlib.sha256(f"{n_resamples}:{seed}:{len(y)}".encode())
    for array in (scores, y, codes):
        h.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    key = h.hexdigest()
    if key in _RESAMPLED:
        _RESAMPLED.move_to_end(key)
        return _RESAMPLED[key]
    ranked = Ranked.build(scores, y == 1)
    rng = np.random.default_rng(seed)
    aucs = np.concatenate([ranked.auc(w) for w in resample_weights(rng, len(y), n_resamples, codes)])
    aucs.setflags(write=False)
    _RESAMPLED[key] = aucs
    while len(_RESAMPLED) > RESAMPLED_KEPT:
        _RESAMPLED.popitem(last=False)
    return aucs
