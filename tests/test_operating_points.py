"""bench.evaluate.operating_points: validation-chosen clinical operating points (hand-worked
examples, tie and edge conventions, optimality against brute force), their test-set scores,
and decision curves (Vickers & Elkin 2006) against hand arithmetic and a plain loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from bench.evaluate.metrics import bootstrap_ci, choose_threshold
from bench.evaluate.operating_points import (
    OPERATING_POINTS,
    choose_operating_points,
    decision_curve,
    evaluate_operating_points,
    net_benefit,
    require_binary,
    threshold_for_sensitivity,
    threshold_for_specificity,
    treat_all_net_benefit,
)

# Ten validation images with distinct scores, ascending; 5 positives (P), 5 negatives (N):
#   0.05 N | 0.12 P | 0.20 N | 0.28 N | 0.36 P | 0.44 N | 0.58 P | 0.66 N | 0.74 P | 0.90 P
VAL_P = np.array([0.05, 0.12, 0.20, 0.28, 0.36, 0.44, 0.58, 0.66, 0.74, 0.90])
VAL_Y = np.array([0, 1, 0, 0, 1, 0, 1, 0, 1, 1])


def counts(y, p, t):
    """(tp, fp, tn, fn) at threshold t, one image at a time."""
    tp = fp = tn = fn = 0
    for yi, pi in zip(y, p):
        if pi >= t:
            tp, fp = tp + (yi == 1), fp + (yi == 0)
        else:
            fn, tn = fn + (yi == 1), tn + (yi == 0)
    return tp, fp, tn, fn


def sens_spec(y, p, t):
    tp, fp, tn, fn = counts(y, p, t)
    return tp / (tp + fn), tn / (tn + fp)


def random_set(seed: int, n: int = 120, signal: float = 1.5, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    y[:2] = [0, 1]  # both classes always
    p = norm.cdf(rng.normal(signal * y - signal / 2, 1.0))
    if decimals is not None:
        p = np.round(p, decimals)  # many tied scores
    return y, p


# --------------------------------------------------------------------------- thresholds by hand


def test_hand_worked_thresholds_at_080():
    # Sensitivity >= 0.8 allows missing 1 of the 5 positives, so only the lowest positive
    # (0.12) may be left out; the cut must keep 0.36. Candidate cuts in (0.12, 0.36]:
    #   (0.12, 0.20]: negatives below = {0.05}             -> spec 1/5
    #   (0.20, 0.28]: negatives below = {0.05, 0.20}       -> spec 2/5
    #   (0.28, 0.36]: negatives below = {0.05, 0.20, 0.28} -> spec 3/5  <- best; midpoint 0.32
    assert threshold_for_sensitivity(VAL_Y, VAL_P, 0.8) == pytest.approx(0.32)
    # Specificity >= 0.8 allows flagging 1 of the 5 negatives, so only the highest negative
    # (0.66) may be called positive; the cut must lie above 0.44. The lowest such cut,
    # (0.44, 0.58], keeps positives {0.58, 0.74, 0.90} -> sens 3/5; midpoint 0.51.
    assert threshold_for_specificity(VAL_Y, VAL_P, 0.8) == pytest.approx(0.51)
    # Specificity >= 1.0: no negative above the cut, i.e. the cut lies above 0.66;
    # (0.66, 0.74] keeps {0.74, 0.90} -> sens 2/5; midpoint 0.70.
    assert threshold_for_specificity(VAL_Y, VAL_P, 1.0) == pytest.approx(0.70)
    # Sensitivity >= 1.0: every positive kept, so the cut lies at or below 0.12;
    # (0.05, 0.12] flags 4 of 5 negatives -> spec 1/5; midpoint 0.085.
    assert threshold_for_sensitivity(VAL_Y, VAL_P, 1.0) == pytest.approx(0.085)
    # Youden J per cut (sens + spec - 1): the best is 0.4, at (0.28, 0.36] (0.8 + 0.6 - 1),
    # (0.44, 0.58] (0.6 + 0.8 - 1) and (0.66, 0.74] (0.4 + 1.0 - 1); the midpoint closest
    # to 0.5 wins: 0.51.
    assert choose_threshold(VAL_Y, VAL_P) == pytest.approx(0.51)


def test_hand_worked_thresholds_sit_strictly_between_scores():
    for t in (
        threshold_for_sensitivity(VAL_Y, VAL_P, 0.8),
        threshold_for_specificity(VAL_Y, VAL_P, 0.8),
        threshold_for_specificity(VAL_Y, VAL_P, 1.0),
        threshold_for_sensitivity(VAL_Y, VAL_P, 1.0),
    ):
        below, above = VAL_P[VAL_P < t].max(), VAL_P[VAL_P > t].min()
        assert t not in VAL_P
        assert t == pytest.approx((below + above) / 2)  # the midpoint of its gap


def test_hand_worked_operating_points_dict():
    points = choose_operating_points(VAL_Y, VAL_P, min_sensitivity=0.8, min_specificity=0.8)
    assert tuple(points) == OPERATING_POINTS
    sens, spec, youden = points["sensitivity"], points["specificity"], points["youden"]
    assert sens["threshold"] == pytest.approx(0.32) and spec["threshold"] == pytest.approx(0.51)
    assert youden["threshold"] == pytest.approx(0.51) and youden["minimum"] is None
    # validation rates at the thresholds, from the table in the test above
    assert (sens["val_sensitivity"], sens["val_specificity"]) == pytest.approx((0.8, 0.6))
    assert (spec["val_sensitivity"], spec["val_specificity"]) == pytest.approx((0.6, 0.8))
    assert sens["minimum"] == 0.8 and spec["minimum"] == 0.8
    assert "0.8" in sens["rule"] and "sensitivity" in sens["rule"]
    for point in points.values():
        assert point["n_val_positive"] == 5 and point["n_val_negative"] == 5
        assert point["achievable"] is True
    assert sens["allowed_errors"] == 1 and spec["allowed_errors"] == 1  # floor(5 * 0.2)


def test_hand_worked_test_set_rates_and_counts():
    points = choose_operating_points(VAL_Y, VAL_P, min_sensitivity=0.8, min_specificity=1.0)
    # thresholds: sensitivity 0.32, youden 0.51, specificity 0.70 (see above)
    # Test set, 8 images: positives 0.95 0.60 0.40 0.30; negatives 0.80 0.50 0.35 0.10
    y_test = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p_test = np.array([0.95, 0.60, 0.40, 0.30, 0.80, 0.50, 0.35, 0.10])
    out = evaluate_operating_points(y_test, p_test, points, n_resamples=200, seed=3)
    assert set(out) == set(OPERATING_POINTS)
    # t = 0.32: positives >= t: 0.95 0.60 0.40 (TP 3, FN 1: 0.30); negatives >= t: 0.80 0.50 0.35 (FP 3, TN 1)
    row = out["sensitivity"]
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (3, 3, 1, 1)
    assert row["sensitivity"] == pytest.approx(3 / 4) and row["specificity"] == pytest.approx(1 / 4)
    assert row["ppv"] == pytest.approx(3 / 6) and row["npv"] == pytest.approx(1 / 2)
    # t = 0.51: positives 0.95 0.60 (TP 2, FN 2); negatives 0.80 (FP 1, TN 3)
    row = out["youden"]
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (2, 1, 3, 2)
    assert row["sensitivity"] == pytest.approx(2 / 4) and row["specificity"] == pytest.approx(3 / 4)
    assert row["ppv"] == pytest.approx(2 / 3) and row["npv"] == pytest.approx(3 / 5)
    # t = 0.70: positives 0.95 (TP 1, FN 3); negatives 0.80 (FP 1, TN 3)
    row = out["specificity"]
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (1, 1, 3, 3)
    assert row["sensitivity"] == pytest.approx(1 / 4) and row["specificity"] == pytest.approx(3 / 4)
    assert row["n"] == 8 and row["ci_unit"] == "image" and row["ci_resamples"] == 200


# --------------------------------------------------------------------------- conventions


def test_ties_in_specificity_go_to_higher_sensitivity():
    # 0.1 N | 0.2 P | 0.3 N | 0.4 P | 0.5 P | 0.6 P, sensitivity >= 0.5 (miss <= 2 of 4):
    #   cut (0.3, 0.4]: sens 3/4, spec 2/2;  cut (0.4, 0.5]: sens 2/4, spec 2/2 (also feasible)
    # Same specificity, so the rule keeps the higher sensitivity: 0.35, not the highest
    # feasible threshold 0.45.
    y, p = np.array([0, 1, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert threshold_for_sensitivity(y, p, 0.5) == pytest.approx(0.35)
    # Mirror: 0.1 N | 0.2 N | 0.3 N | 0.4 P | 0.5 N | 0.6 P, specificity >= 0.5 (flag <= 2 of 4):
    #   cut (0.2, 0.3]: sens 2/2, spec 2/4;  cut (0.3, 0.4]: sens 2/2, spec 3/4
    # Same sensitivity: the higher specificity wins, 0.35, not the lowest feasible 0.25.
    y, p = np.array([0, 0, 0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert threshold_for_specificity(y, p, 0.5) == pytest.approx(0.35)


def test_tied_scores_fall_on_the_same_side():
    # 0.2 N | 0.5 P, P, N: the three tied images cannot be separated
    y, p = np.array([0, 1, 1, 0]), np.array([0.2, 0.5, 0.5, 0.5])
    assert threshold_for_sensitivity(y, p, 1.0) == pytest.approx(0.35)  # keeps the tie: spec 1/2
    assert threshold_for_specificity(y, p, 0.5) == pytest.approx(0.35)  # flagging one negative is allowed
    assert threshold_for_specificity(y, p, 1.0) == pytest.approx(0.75)  # must drop the whole tie: (0.5 + 1) / 2


def test_edge_cuts():
    # every image positive: the midpoint between 0 and the lowest score
    y, p = np.array([1, 0, 1]), np.array([0.2, 0.5, 0.8])
    assert threshold_for_sensitivity(y, p, 1.0) == pytest.approx(0.1)
    # no image positive: the midpoint between the highest score and 1
    y, p = np.array([1, 0, 1, 0]), np.array([0.2, 0.3, 0.4, 0.6])
    assert threshold_for_specificity(y, p, 1.0) == pytest.approx(0.8)
    # lowest score exactly 0 and needed: 0.0 (the only threshold calling it positive)
    y, p = np.array([1, 0, 1]), np.array([0.0, 0.5, 0.8])
    t = threshold_for_sensitivity(y, p, 1.0)
    assert t == 0.0 and sens_spec(y, p, t)[0] == 1.0
    # highest score exactly 1 and a negative: just above 1, so that image is negative
    y, p = np.array([1, 0, 1, 0]), np.array([0.2, 0.3, 0.4, 1.0])
    t = threshold_for_specificity(y, p, 1.0)
    assert 1.0 < t < 1.0 + 1e-12 and sens_spec(y, p, t) == (0.0, 1.0)
    point = choose_operating_points(y, p, min_specificity=1.0)["specificity"]
    assert point["val_specificity"] == 1.0 and point["achievable"] is True
    # lowest score slightly below 0 (float noise the probability check tolerates): that score itself
    y, p = np.array([1, 0, 1]), np.array([-1e-7, 0.5, 0.8])
    t = threshold_for_sensitivity(y, p, 1.0)
    assert t == -1e-7 and sens_spec(y, p, t)[0] == 1.0
    # adjacent floats: the midpoint would round onto the lower score; the upper one is used
    lo = 0.5
    hi = float(np.nextafter(lo, 1.0))
    t = threshold_for_sensitivity(np.array([0, 1]), np.array([lo, hi]), 1.0)
    assert t == hi and sens_spec([0, 1], [lo, hi], t) == (1.0, 1.0)


def test_one_class_falls_back_and_is_flagged():
    p = np.linspace(0.1, 0.9, 7)
    for y in (np.ones(7, dtype=int), np.zeros(7, dtype=int)):
        assert threshold_for_sensitivity(y, p) == 0.5
        assert threshold_for_specificity(y, p) == 0.5
        points = choose_operating_points(y, p)
        assert all(points[name]["threshold"] == 0.5 for name in OPERATING_POINTS)
        assert all(points[name]["achievable"] is False for name in OPERATING_POINTS)
    positives_only = choose_operating_points(np.ones(7, dtype=int), p)["sensitivity"]
    assert positives_only["n_val_negative"] == 0 and math.isnan(positives_only["val_specificity"])
    # youden with no cut better than chance: choose_threshold's 0.5, flagged
    points = choose_operating_points(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert points["youden"]["threshold"] == 0.5 and points["youden"]["achievable"] is False
    assert points["sensitivity"]["achievable"] is True


def test_allowed_errors_with_few_positives():
    # 19 positives: sensitivity >= 0.95 means missing floor(19 * 0.05) = 0 of them
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(19, dtype=int), np.zeros(40, dtype=int)]
    p = rng.random(len(y))
    point = choose_operating_points(y, p, min_sensitivity=0.95)["sensitivity"]
    assert point["n_val_positive"] == 19 and point["allowed_errors"] == 0
    assert point["val_sensitivity"] == 1.0
    assert point["threshold"] < p[y == 1].min()
    # 20 positives: one miss allowed (20 * 0.05 = 1), and the rule uses it
    y20 = np.r_[np.ones(20, dtype=int), np.zeros(40, dtype=int)]
    p20 = np.r_[p[:19], 0.001, p[19:]]  # the extra positive scores lowest of all
    point = choose_operating_points(y20, p20, min_sensitivity=0.95)["sensitivity"]
    assert point["allowed_errors"] == 1 and point["val_sensitivity"] == pytest.approx(19 / 20)


# --------------------------------------------------------------------------- properties


def candidate_thresholds(p):
    """Every distinct validation decision, by brute force: edges plus midpoints of gaps."""
    s = np.unique(p)
    return [s[0] / 2] + [(a + b) / 2 for a, b in itertools.pairwise(s)] + [(s[-1] + 1) / 2]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 2])
def test_constrained_thresholds_are_optimal(seed, decimals):
    y, p = random_set(seed, decimals=decimals)
    minimum = [0.8, 0.9, 0.95][seed % 3]
    table = [(t, *sens_spec(y, p, t)) for t in candidate_thresholds(p)]

    t = threshold_for_sensitivity(y, p, minimum)
    sens, spec = sens_spec(y, p, t)
    assert sens >= minimum
    best_spec = max(sp for _, se, sp in table if se >= minimum)
    assert spec == best_spec
    assert sens == max(se for _, se, sp in table if se >= minimum and sp == best_spec)

    t = threshold_for_specificity(y, p, minimum)
    sens, spec = sens_spec(y, p, t)
    assert spec >= minimum
    best_sens = max(se for _, se, sp in table if sp >= minimum)
    assert sens == best_sens
    assert spec == max(sp for _, se, sp in table if sp >= minimum and se == best_sens)

    for t in (threshold_for_sensitivity(y, p, minimum), threshold_for_specificity(y, p, minimum)):
        assert not np.any(p == t)  # never on a validation score
        assert any(t == pytest.approx(c, abs=1e-15) for c in candidate_thresholds(p))  # a midpoint


@pytest.mark.parametrize("seed", range(4))
def test_sensitivity_youden_specificity_order(seed):
    y, p = random_set(seed, n=300, signal=1.2)
    points = choose_operating_points(y, p, 0.95, 0.95)
    t_sens, t_youden, t_spec = (points[name]["threshold"] for name in ("sensitivity", "youden", "specificity"))
    assert t_sens < t_youden < t_spec
    assert points["sensitivity"]["val_sensitivity"] >= 0.95
    assert points["specificity"]["val_specificity"] >= 0.95
    assert points["youden"]["threshold"] == choose_threshold(y, p)


# --------------------------------------------------------------------------- test-set intervals


def test_intervals_are_bootstrap_ci_and_deterministic():
    y_val, p_val = random_set(10)
    y, p = random_set(11, n=150)
    points = choose_operating_points(y_val, p_val)
    out = evaluate_operating_points(y, p, points, n_resamples=300, seed=7)
    again = evaluate_operating_points(y, p, {k: v["threshold"] for k, v in points.items()}, n_resamples=300, seed=7)
    assert out == again  # deterministic; thresholds given as plain numbers work too
    for name, row in out.items():
        ci = bootstrap_ci(y, np.column_stack([1 - p, p]), ["n", "p"], threshold=points[name]["threshold"],
                          n_resamples=300, seed=7, metrics=("recall", "specificity"))
        assert (row["sensitivity_ci_low"], row["sensitivity_ci_high"]) == ci["recall"]
        assert (row["specificity_ci_low"], row["specificity_ci_high"]) == ci["specificity"]
        assert row["sensitivity_ci_low"] <= row["sensitivity"] <= row["sensitivity_ci_high"]
        assert row["specificity_ci_low"] <= row["specificity"] <= row["specificity_ci_high"]
        assert row["tp"] + row["fp"] + row["tn"] + row["fn"] == len(y)
    groups = np.arange(len(y)) // 3
    grouped = evaluate_operating_points(y, p, points, groups=groups, n_resamples=300, seed=7)
    assert grouped["youden"]["ci_unit"] == "group"
    assert grouped["youden"]["sensitivity"] == out["youden"]["sensitivity"]
    assert grouped["youden"]["sensitivity_ci_low"] != out["youden"]["sensitivity_ci_low"]


def test_undefined_ppv_npv_are_nan():
    y, p = np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4])
    out = evaluate_operating_points(y, p, {"none": 0.9, "all": 0.05}, n_resamples=20)
    assert math.isnan(out["none"]["ppv"]) and out["none"]["npv"] == 0.5
    assert math.isnan(out["all"]["npv"]) and out["all"]["ppv"] == 0.5


# --------------------------------------------------------------------------- decision curves

# N = 10, prevalence 0.4
DCA_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
DCA_P = np.array([0.9, 0.6, 0.3, 0.1, 0.7, 0.4, 0.25, 0.15, 0.1, 0.05])


def test_net_benefit_by_hand():
    nb = net_benefit(DCA_Y, DCA_P, [0.1, 0.2, 0.5])
    # pt = 0.1 (odds 1/9): treated positives 0.9 0.6 0.3 0.1 (TP 4; 0.1 >= 0.1 counts),
    #   treated negatives 0.7 0.4 0.25 0.15 0.1 (FP 5): NB = 4/10 - 5/10 * 1/9 = 0.34444...
    # pt = 0.2 (odds 0.25): TP 3 (0.9 0.6 0.3), FP 3 (0.7 0.4 0.25): NB = 0.3 - 0.3 * 0.25 = 0.225
    # pt = 0.5 (odds 1): TP 2 (0.9 0.6), FP 1 (0.7): NB = 0.2 - 0.1 = 0.1
    assert nb == pytest.approx([0.4 - 0.5 / 9, 0.225, 0.1])
    # treat all: 0.4 - 0.6 * odds
    assert treat_all_net_benefit(DCA_Y, [0.1, 0.2, 0.5]) == pytest.approx([0.4 - 0.6 / 9, 0.25, -0.2])


def loop_net_benefit(y, p, thresholds):
    out = []
    for pt in thresholds:
        tp = sum(1 for yi, pi in zip(y, p) if pi >= pt and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p) if pi >= pt and yi == 0)
        out.append(tp / len(y) - fp / len(y) * pt / (1 - pt))
    return np.array(out)


@pytest.mark.parametrize("seed", range(3))
def test_net_benefit_matches_loop(seed):
    y, p = random_set(seed, n=80, decimals=2)
    t = np.r_[0.0, np.arange(1, 100) / 100.0]
    assert net_benefit(y, p, t) == pytest.approx(loop_net_benefit(y, p, t), abs=1e-12)
    assert net_benefit(y, np.column_stack([1 - p, p]), t) == pytest.approx(net_benefit(y, p, t))
    # at pt = 0 treating everyone above 0 is treating all
    assert net_benefit(y, p, [0.0])[0] == pytest.approx(treat_all_net_benefit(y, [0.0])[0]) == y.mean()


def test_perfect_classifier_net_benefit_is_prevalence():
    y = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    t = np.arange(1, 100) / 100.0
    assert net_benefit(y, y.astype(float), t) == pytest.approx(np.full(len(t), y.mean()))
    # a merely separating score: the same wherever pt falls in the gap
    p = np.where(y == 1, 0.8, 0.3)
    assert net_benefit(y, p, [0.35, 0.5, 0.8]) == pytest.approx([0.25, 0.25, 0.25])


def test_decision_curve_defaults_and_bands():
    y, p = random_set(21, n=200)
    curve = decision_curve(y, p, n_resamples=400, seed=1)
    t = curve["thresholds"]
    assert len(t) == 99 and t[0] == pytest.approx(0.01) and t[-1] == pytest.approx(0.99)
    assert curve["model"] == pytest.approx(net_benefit(y, p, t))
    assert curve["treat_all"] == pytest.approx(treat_all_net_benefit(y, t))
    assert np.all(curve["treat_none"] == 0)
    assert curve["prevalence"] == pytest.approx(y.mean()) and curve["n"] == 200
    low, high = curve["model_low"], curve["model_high"]
    assert np.all(low <= curve["model"] + 1e-12) and np.all(curve["model"] <= high + 1e-12)
    assert np.all(high - low > 0)
    again = decision_curve(y, p, n_resamples=400, seed=1)
    assert np.array_equal(again["model_low"], low) and np.array_equal(again["model_high"], high)
    other = decision_curve(y, p, n_resamples=400, seed=2)
    assert not np.array_equal(other["model_low"], low)
    bare = decision_curve(y, p, n_resamples=0)
    assert bare["model_low"] is None and bare["model_high"] is None


def test_decision_curve_bands_match_explicit_resampling():
    # the weights @ indicator shortcut equals recomputing net benefit on resampled images
    y, p = random_set(4, n=60)
    t = np.array([0.1, 0.3, 0.5, 0.7])
    curve = decision_curve(y, p, t, n_resamples=200, seed=9)
    idx = np.random.default_rng(9).integers(0, len(y), size=(200, len(y)))  # resample_weights' draws
    values = np.array([loop_net_benefit(y[i], p[i], t) for i in idx])
    assert curve["model_low"] == pytest.approx(np.percentile(values, 2.5, axis=0))
    assert curve["model_high"] == pytest.approx(np.percentile(values, 97.5, axis=0))


def test_group_bands_match_explicit_group_resampling():
    # each resample draws G groups with replacement and keeps all copies of a drawn group;
    # N of a resample is the number of images it holds, which varies
    y_item, p_item = random_set(6, n=40)
    copies = np.random.default_rng(6).integers(1, 4, len(y_item))
    item = np.repeat(np.arange(len(y_item)), copies)
    y, p = y_item[item], p_item[item]
    t = np.array([0.2, 0.4, 0.6])
    curve = decision_curve(y, p, t, groups=item, n_resamples=150, seed=2)
    drawn = np.random.default_rng(2).integers(0, len(y_item), size=(150, len(y_item)))
    values = []
    for groups in drawn:
        idx = np.concatenate([np.flatnonzero(item == g) for g in groups])
        values.append(loop_net_benefit(y[idx], p[idx], t))
    assert curve["model_low"] == pytest.approx(np.percentile(values, 2.5, axis=0))
    assert curve["model_high"] == pytest.approx(np.percentile(values, 97.5, axis=0))


def test_group_bootstrap_changes_bands():
    rng = np.random.default_rng(8)
    y_item, p_item = random_set(8, n=60)
    copies = rng.integers(1, 5, len(y_item))  # each image copied 1-4 times
    item = np.repeat(np.arange(len(y_item)), copies)
    y, p, groups = y_item[item], p_item[item], [f"g{i}" for i in item]
    plain = decision_curve(y, p, groups=None, n_resamples=400, seed=0)
    grouped = decision_curve(y, p, groups=groups, n_resamples=400, seed=0)
    assert grouped["ci_unit"] == "group" and plain["ci_unit"] == "image"
    assert np.array_equal(grouped["model"], plain["model"])
    assert not np.allclose(grouped["model_low"], plain["model_low"])
    # copies are not independent: drawing them together widens the bands
    assert np.mean(grouped["model_high"] - grouped["model_low"]) > np.mean(plain["model_high"] - plain["model_low"])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("minimum", [0.0, -0.1, 1.5, float("nan"), "high", None])
def test_bad_minimum(minimum):
    with pytest.raises(ValueError, match=r"Expected minimum in \(0, 1\]"):
        threshold_for_sensitivity(VAL_Y, VAL_P, minimum)
    with pytest.raises(ValueError, match=r"Expected minimum in \(0, 1\]"):
        threshold_for_specificity(VAL_Y, VAL_P, minimum)
    with pytest.raises(ValueError, match=r"Expected min_sensitivity in \(0, 1\]. Received"):
        choose_operating_points(VAL_Y, VAL_P, min_sensitivity=minimum)
    with pytest.raises(ValueError, match=r"Expected min_specificity in \(0, 1\]. Received"):
        choose_operating_points(VAL_Y, VAL_P, min_specificity=minimum)


def test_multiclass_probabilities_are_rejected():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=10)
    y = rng.integers(0, 2, 10)
    message = r"binary-only.*Received: 3 classes"
    calls = [
        lambda: threshold_for_sensitivity(y, proba),
        lambda: threshold_for_specificity(y, proba),
        lambda: choose_operating_points(y, proba),
        lambda: evaluate_operating_points(y, proba, {"youden": 0.5}, n_resamples=10),
        lambda: net_benefit(y, proba, [0.2]),
        lambda: decision_curve(y, proba, n_resamples=10),
        lambda: require_binary(3),
        lambda: require_binary(["glioma", "meningioma", "pituitary"]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()
    require_binary(2)
    require_binary(["normal", "tumor"])


def test_other_bad_input():
    with pytest.raises(ValueError, match=r"Expected y_val values in 0..1"):
        threshold_for_sensitivity(np.array([0, 1, 2]), np.array([0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match=r"Expected probabilities in \[0, 1\]"):
        choose_operating_points(np.array([0, 1]), np.array([-3.0, 4.0]))
    with pytest.raises(ValueError, match=r"Expected threshold probabilities in \[0, 1\)"):
        net_benefit(DCA_Y, DCA_P, [0.5, 1.0])
    with pytest.raises(ValueError, match=r"Expected threshold probabilities in \[0, 1\)"):
        treat_all_net_benefit(DCA_Y, [-0.1])
    with pytest.raises(ValueError, match=r"Expected n_resamples >= 0"):
        decision_curve(DCA_Y, DCA_P, n_resamples=-1)
    with pytest.raises(ValueError, match=r"Expected a finite threshold for operating point 'x'"):
        evaluate_operating_points(DCA_Y, DCA_P, {"x": {"threshold": None}}, n_resamples=10)
    with pytest.raises(ValueError, match=r"Expected groups as one group id per image"):
        evaluate_operating_points(DCA_Y, DCA_P, {"x": 0.5}, groups=[1, 2], n_resamples=10)
