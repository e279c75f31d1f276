"""The arithmetic of ``benchmarks/validity.py`` (no training): stratified draws, coverage,
the Wilson interval, the pool's best backbone and the regret, the summary."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _validity import (  # noqa: E402
    best_and_regret, corrected_fold_interval, coverage, covers, draw_files, score_draw, stratified_counts, summarize,
    summary_lines, table_lines, wilson_interval,
)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 20), (3, 20), (17, 20), (20, 20), (19, 25), (50, 60)])
def test_wilson_interval_matches_statsmodels(k, n):
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-12)


def test_wilson_interval_refuses_impossible_counts():
    for k, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)


def test_covers_includes_the_ends_and_skips_missing_values():
    assert covers(0.6, 0.8, 0.6) and covers(0.6, 0.8, 0.8) and covers(0.6, 0.8, 0.7)
    assert covers(0.6, 0.8, 0.81) is False and covers(0.6, 0.8, 0.59) is False
    assert covers(None, 0.8, 0.7) is None and covers(0.6, 0.8, math.nan) is None


def test_coverage_counts_only_scored_draws():
    c = coverage([True, True, False, None, True])
    assert (c["covered"], c["n"], c["rate"]) == (3, 4, 0.75)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx(proportion_confint(3, 4, method="wilson"))
    assert math.isnan(coverage([None])["rate"])


def test_regret_is_the_pool_auc_lost_to_the_best():
    assert best_and_regret({"a": 0.80, "b": 0.85, "c": 0.60}, "a") == ("b", pytest.approx(0.05))
    assert best_and_regret({"a": 0.80, "b": 0.85}, "b") == ("b", 0.0)
    assert best_and_regret({"a": 0.80, "b": 0.80}, "b")[1] == 0.0  # a tie costs nothing
    assert best_and_regret({"a": 0.80, "b": math.nan}, "a") == ("a", 0.0)
    with pytest.raises(ValueError):
        best_and_regret({"a": 0.8}, "b")


def test_stratified_counts_follow_the_classes():
    assert stratified_counts({"a": 600, "b": 600}, 250) == {"a": 125, "b": 125}
    assert stratified_counts({"a": 900, "b": 300}, 250) == {"a": 188, "b": 62}
    assert sum(stratified_counts({"a": 5, "b": 7, "c": 1000}, 40).values()) == 40
    assert stratified_counts({"a": 5, "b": 7, "c": 1000}, 40)["a"] >= 1
    with pytest.raises(ValueError):
        stratified_counts({"a": 3, "b": 3}, 7)


def test_draw_files_is_seeded_without_replacement():
    pool = {"b": [f"b/{i}.png" for i in range(50)], "a": [f"a/{i}.png" for i in range(150)]}
    first = draw_files(pool, 40, np.random.default_rng([0, 3]))
    again = draw_files(pool, 40, np.random.default_rng([0, 3]))
    other = draw_files(pool, 40, np.random.default_rng([0, 4]))
    assert first == again and first != other
    assert {c: len(f) for c, f in first.items()} == {"a": 30, "b": 10}
    assert all(len(set(f)) == len(f) and set(f) <= set(pool[c]) for c, f in first.items())


def draw(i, picked, cv_auc, pool_auc, cv_acc, pool_acc, pool_aucs):
    return score_draw({"draw": i, "picked": picked, "cv_auc": cv_auc, "cv_auc_low": cv_auc - 0.05,
                       "cv_auc_high": cv_auc + 0.05, "cv_acc": cv_acc, "cv_acc_low": cv_acc - 0.05,
                       "cv_acc_high": cv_acc + 0.05, "pool_auc": pool_auc, "pool_acc": pool_acc,
                       "pool_aucs": pool_aucs})


def test_summary_of_scored_draws():
    draws = [draw(0, "a", 0.80, 0.82, 0.75, 0.82, {"a": 0.82, "b": 0.78}),   # AUC covered, accuracy not
             draw(1, "b", 0.80, 0.90, 0.75, 0.76, {"a": 0.93, "b": 0.90}),   # AUC not, accuracy covered; regret
             draw(2, "a", 0.97, 0.99, 0.90, 0.93, {"a": 0.99, "b": 0.98})]
    assert [d["auc_covered"] for d in draws] == [True, False, True]
    assert [d["acc_covered"] for d in draws] == [False, True, True]
    assert [d["pool_best"] for d in draws] == ["a", "a", "a"]
    s = summarize(draws)
    assert (s["auc"]["covered"], s["accuracy"]["covered"], s["pick_is_best"]["covered"]) == (2, 2, 2)
    assert s["regret_max"] == pytest.approx(0.03) and s["regret_mean"] == pytest.approx(0.01)
    assert s["regret_mean_when_wrong"] == pytest.approx(0.03)
    assert (s["pool_auc_min"], s["pool_auc_max"], s["pool_auc_mid_range"]) == (0.82, 0.99, 2)
    assert s["accuracy_gap_mean"] == pytest.approx((0.07 + 0.01 + 0.03) / 3)
    lines = summary_lines(s)
    assert any("AUC" in line and "2/3 = 67%" in line for line in lines)
    assert any("below 90%" in line for line in lines)
    table = table_lines(draws)
    assert len(table) == 4 and " NO " in table[1] and table[2].endswith("0.030  -/-")
    with pytest.raises(ValueError):
        summarize([])


def test_corrected_fold_interval_is_the_nadeau_bengio_interval_of_the_fold_mean():
    from scipy.stats import t

    folds = [0.71, 0.80, 0.76, 0.84, 0.69]
    mean, low, high = corrected_fold_interval(folds, 5)
    se = np.std(folds, ddof=1) * math.sqrt(1 / 5 + 1 / 4)  # test/train = 1/(K-1)
    assert mean == pytest.approx(np.mean(folds))
    assert (low, high) == pytest.approx((mean - t.ppf(0.975, 4) * se, mean + t.ppf(0.975, 4) * se))
    assert corrected_fold_interval([0.7, None, math.nan], 5) is None and corrected_fold_interval(None, 5) is None


def test_score_draw_scores_the_corrected_interval_where_folds_are_recorded():
    base = {"draw": 0, "picked": "a", "cv_k": 5, "cv_auc": 0.76, "cv_auc_low": 0.72, "cv_auc_high": 0.80,
            "cv_acc": 0.70, "cv_acc_low": 0.66, "cv_acc_high": 0.74, "pool_auc": 0.83, "pool_acc": 0.75,
            "pool_aucs": {"a": 0.83, "b": 0.80},
            "cv_auc_folds": {"a": [0.71, 0.80, 0.76, 0.84, 0.69]}, "cv_acc_folds": {"a": [0.70, 0.71, 0.70, 0.71, 0.70]}}
    d = score_draw(base)
    assert d["auc_covered"] is False and d["nb_auc_covered"] is True  # 0.83 within 0.76 +/- 0.10
    assert d["acc_covered"] is False and d["nb_acc_covered"] is False  # folds 0.01 apart: narrow
    s = summarize([d])
    assert s["auc_corrected"]["covered"] == 1 and s["half_width"]["auc"] == pytest.approx(0.04)
    assert any(line.startswith("coverage of the corrected fold interval of AUC") and ": 1/1" in line for line in summary_lines(s))
    assert table_lines([d])[1].endswith("yes/NO")
