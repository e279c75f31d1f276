"""The paired comparisons of a cross-validated run (``bench run --cv K``): every pair of
backbones on the out-of-fold predictions (DeLong, McNemar) and across the outer folds
(the corrected resampled t-test of Nadeau & Bengio), recomputed from the stored
out-of-fold predictions; the Summary's runner-up sentence and the statistical comparison
section of its report.
"""

from __future__ import annotations

import math

from bench.errors import BenchError
from bench.evaluate.paired import PairTest
from bench.report import findings
from bench.report.formatting import DASH, Table, fmt_p, fmt_signed, num
from bench.report.load import RunData
from bench.report.sections import p_holm, ranking_metric
from bench.schema import label


def cv_tests(data: RunData) -> list:
    """:func:`bench.evaluate.crossval.cv_pairwise_tests` of every finished backbone, in rank
    order; empty when folds.json or an oof_predictions.csv is missing."""
    names = [b.name for b in data.ok if b.oof is not None and len(b.oof)]
    if len(names) < 2 or not data.folds:
        return []
    from bench.data.folds import FoldPlan
    from bench.evaluate.crossval import cv_pairwise_tests

    try:
        plan = FoldPlan.from_dict(data.folds)
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"cannot read {data.files.folds_json} ({exc}); the run folder is damaged") from None
    return cv_pairwise_tests(data.path, names, plan, data.objective, seed=data.seed)


def pair_parts(t: PairTest, metric: str) -> list[tuple[str, str, float | None, str | None]]:
    """(test, statistic in words, Holm-adjusted p, favoured backbone) of each test run on ``t``."""
    out = []
    if t.delong_p is not None and t.auc_diff is not None and not math.isnan(t.auc_diff):
        out.append(("DeLong", f"ROC AUC difference {fmt_signed(t.auc_diff)}, DeLong (clustered by duplicate group) "
                              f"{fmt_p(_adjusted(t.delong_p, t.delong_p_holm))}",
                    _adjusted(t.delong_p, t.delong_p_holm), t.a if t.auc_diff > 0 else t.b))
    ga, gb = (t.groups_only_a, t.groups_only_b) if t.groups_only_a is not None else (t.only_a, t.only_b)
    out.append(("McNemar", f"{t.a} right on {ga} duplicate groups {t.b} missed, {t.b} on {gb}, McNemar "
                           f"{fmt_p(_adjusted(t.mcnemar_p, t.mcnemar_p_holm))}",
                _adjusted(t.mcnemar_p, t.mcnemar_p_holm), t.a if ga > gb else t.b if gb > ga else None))
    if t.ttest_p is not None and t.ttest_mean is not None:
        out.append(("corrected resampled t-test",
                    f"per-fold {label(t.ttest_metric or metric)} difference {fmt_signed(t.ttest_mean)} on average, "
                    f"corrected resampled t-test {fmt_p(_adjusted(t.ttest_p, t.ttest_p_holm))}",
                    _adjusted(t.ttest_p, t.ttest_p_holm), _favoured_by_mean(t)))
    return out


def _favoured_by_mean(t: PairTest) -> str | None:
    if t.ttest_mean is None or t.ttest_mean == 0:
        return None
    lower_better = t.ttest_metric == "brier"
    return t.a if (t.ttest_mean > 0) != lower_better else t.b


def _adjusted(p, holm):
    return p if holm is None else holm


def runner_up_sentence(best: str, runner: str | None, test: PairTest | None, metric: str) -> str:
    if (why := findings.no_comparison(runner, test, "folds.json or an oof_predictions.csv is missing from the "
                                                    "run folder")) is not None:
        return why
    if test.a != best:
        test = test.flipped()
    parts = pair_parts(test, metric)
    details = "; ".join(text for _, text, _, _ in parts)
    for_best = [name for name, _, p, fav in parts if findings.significant(p) and fav == best]
    for_runner = [name for name, _, p, fav in parts if findings.significant(p) and fav == runner]
    where = "on the out-of-fold predictions, p-values Holm-adjusted over all pairs"
    if for_runner:
        return (f"By {', '.join(for_runner)}, the runner-up, {runner}, is significantly better than {best} ({where}: "
                f"{details}); the ranking follows the CV estimate of the objective, so weigh both.")
    if for_best:
        return f"{best} is significantly better than the runner-up, {runner}, by {', '.join(for_best)} ({where}: {details})."
    return (f"{best} is not significantly better than the runner-up, {runner}: no paired test reaches Holm-adjusted "
            f"p < 0.05 ({where}: {details}).")


def comparison_section(data: RunData, tests: list[PairTest], n_folds: int) -> dict:
    """The statistical comparison of a cross-validated run: every pair on the out-of-fold
    predictions (DeLong, McNemar) and across the outer folds (corrected resampled t-test)."""
    metric = ranking_metric(data)
    out = {"available": len(tests) > 0}
    if not tests:
        ok = [b for b in data.ok if b.oof is not None]
        out["text"] = ("No backbone finished, so there is nothing to compare." if not ok else
                       "Only one backbone finished, so there is nothing to compare it with." if len(ok) < 2 else
                       "The paired tests need folds.json and every backbone's oof_predictions.csv; the run folder "
                       "lacks one of them.")
        return out
    binary = any(t.auc_diff is not None for t in tests)
    rows = []
    for t in tests:
        ga, gb = (t.groups_only_a, t.groups_only_b) if t.groups_only_a is not None else (t.only_a, t.only_b)
        auc = DASH if t.auc_diff is None or math.isnan(t.auc_diff) else (
            f"{fmt_signed(t.auc_diff)} ({num(t.delong_ci_low, 2)} to {num(t.delong_ci_high, 2)})")
        ttest = DASH if t.ttest_mean is None else (
            f"{fmt_signed(t.ttest_mean)} ({num(t.ttest_ci_low, 2)} to {num(t.ttest_ci_high, 2)})")
        row = [f"{t.a} vs {t.b}"]
        if binary:
            row += [auc, p_holm(t.delong_p, t.delong_p_holm) if t.delong_p is not None else DASH]
        row += [f"{ga} / {gb}", p_holm(t.mcnemar_p, t.mcnemar_p_holm), ttest,
                p_holm(t.ttest_p, t.ttest_p_holm) if t.ttest_p is not None else DASH]
        rows.append(row)
    headers = ["pair (A vs B)"]
    if binary:
        headers += ["ROC AUC A \u2212 B (95 % CI)", "DeLong p"]
    headers += ["groups only A / only B right", "McNemar p", f"fold {label(metric)} A \u2212 B (95 % CI)",
                "corrected t-test p"]
    t0 = tests[0]
    out.update({
        "tables": [{"title": None, "table": Table(headers, rows, [False, *[True] * (len(headers) - 1)]),
                    "cls": "wide split"}],
        "intro": (
            f"Every pair on the out-of-fold predictions of all repeats ({t0.n} predictions, {t0.n_groups} duplicate "
            "groups; an image's repeats count in its group). "
            + ("DeLong's test, clustered by duplicate group, compares the ROC AUCs (95 % CI of the difference). "
               if binary else "")
            + "McNemar's exact test counts one vote per model and group (right on more than half of the group's "
            "predictions) and compares the groups only one of the two gets right. The corrected resampled t-test "
            f"(Nadeau & Bengio) compares the {n_folds} outer folds' own {label(metric)}, with the variance inflated "
            "for the overlap of the folds' training sets. Each p-value is shown raw and Holm-adjusted over all pairs "
            "of that test; * marks Holm-adjusted p < 0.05."),
        "caution": (("DeLong and McNemar treat the fold models as fixed and see" if binary else
                     "McNemar treats the fold models as fixed and sees") + " only the prediction-level noise; the "
                    "t-test also sees how much the result moves between folds, but has few degrees of freedom "
                    f"({n_folds - 1}). Read a difference as real when they agree."),
        "readings": [{"pair": f"{t.a} vs {t.b}", "text": pair_reading(t, metric, n_folds)} for t in tests],
    })
    return out


def pair_reading(t: PairTest, metric: str, n_folds: int) -> str:
    """The tests of one pair in plain words, naming the direction."""
    ga, gb = (t.groups_only_a, t.groups_only_b) if t.groups_only_a is not None else (t.only_a, t.only_b)
    text = (f"{t.a} was right on {ga} duplicate groups {t.b} missed, {t.b} on {gb} that {t.a} missed "
            f"(McNemar {_p_pair(t.mcnemar_p, t.mcnemar_p_holm)}).")
    if t.delong_p is not None and t.auc_diff is not None and not math.isnan(t.auc_diff):
        text += (f" ROC AUC {t.a} \u2212 {t.b} = {fmt_signed(t.auc_diff)} (95 % CI {fmt_signed(t.delong_ci_low)} to "
                 f"{fmt_signed(t.delong_ci_high)}; DeLong {_p_pair(t.delong_p, t.delong_p_holm)}).")
    if t.ttest_mean is not None and t.ttest_p is not None:
        text += (f" Over the {n_folds} outer folds, {label(t.ttest_metric or metric)} {t.a} \u2212 {t.b} = "
                 f"{fmt_signed(t.ttest_mean)} on average (95 % CI {fmt_signed(t.ttest_ci_low)} to "
                 f"{fmt_signed(t.ttest_ci_high)}; corrected t-test {_p_pair(t.ttest_p, t.ttest_p_holm)}).")
    found = [(name, fav) for name, _, p, fav in pair_parts(t, metric) if findings.significant(p)]
    if not found:
        return text + " No test finds a difference at Holm-adjusted p < 0.05."
    return text + " Significant after Holm: " + "; ".join(
        f"{name}, in favour of {fav}" if fav else name for name, fav in found) + "."


def _p_pair(p, holm) -> str:
    return fmt_p(p) + ("" if holm is None else f", Holm-adjusted {fmt_p(holm)}")
