"""bench.evaluate.calibration: hand-computed ECE and bins, slope/intercept against statsmodels,
temperature scaling and the class-weight prior correction, the bootstrap, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit, softmax
from statsmodels.stats.proportion import proportion_confint

from bench.evaluate import calibration as cal
from bench.evaluate.calibration import (
    apply_temperature,
    calibration_slope_intercept,
    calibration_summary,
    PRIOR_SD,
    ece,
    fit_temperature,
    nll,
    reliability_bins,
)
from bench.evaluate.metrics import brier_skill_score


def binary(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.column_stack([1.0 - p1, p1])


def calibrated_binary(n: int, seed: int, mean: float = 0.0, sd: float = 2.0):
    """True logits z, labels drawn from expit(z): expit(z) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(mean, sd, n)
    y = (rng.uniform(size=n) < expit(z)).astype(int)
    return z, y


def calibrated_three(n: int, seed: int, sd: float = 1.5):
    """True (n, 3) logits and labels drawn from their softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, sd, (n, 3))
    p = softmax(logits, axis=1)
    y = (rng.uniform(size=(n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, y


def naive_ece(score, outcome, n_bins):
    """Straight from the definition, for comparison."""
    order = np.argsort(score, kind="stable")
    total = 0.0
    for idx in np.array_split(order, min(n_bins, len(score))):
        total += len(idx) / len(score) * abs(outcome[idx].mean() - score[idx].mean())
    return total


# Seven binary images, two equal-count bins (np.array_split: sizes 4 and 3).
P7 = [0.9, 0.1, 0.6, 0.3, 0.2, 0.8, 0.4]
Y7 = [1, 0, 0, 1, 0, 1, 1]
# Sorted by p1: 0.1(y=0) 0.2(0) 0.3(1) 0.4(1) | 0.6(0) 0.8(1) 0.9(1)
# bin 1: mean score (0.1 + 0.2 + 0.3 + 0.4) / 4 = 0.25, observed 2/4 = 0.5, gap 0.25, weight 4/7
# bin 2: mean score (0.6 + 0.8 + 0.9) / 3 = 2.3/3, observed 2/3, gap |2/3 - 2.3/3| = 0.1, weight 3/7
# ECE = 4/7 * 0.25 + 3/7 * 0.1 = 1.3 / 7
ECE7 = 1.3 / 7


# --------------------------------------------------------------------------- ECE and bins


def test_ece_binary_by_hand():
    assert ece(Y7, binary(P7), n_bins=2) == pytest.approx(ECE7, abs=1e-12)
    # one bin: |mean y - mean p| = |4/7 - 3.3/7| = 0.7/7
    assert ece(Y7, binary(P7), n_bins=1) == pytest.approx(0.1, abs=1e-12)
    # more bins than images: one image per bin, ECE = mean |y - p1|
    # = (0.1 + 0.1 + 0.6 + 0.7 + 0.2 + 0.2 + 0.6) / 7 = 2.5 / 7
    assert ece(Y7, binary(P7), n_bins=50) == pytest.approx(2.5 / 7, abs=1e-12)


def test_ece_multiclass_top_label_by_hand():
    proba = np.array([
        [0.7, 0.2, 0.1],  # y 0: confidence 0.7, correct
        [0.3, 0.5, 0.2],  # y 2: 0.5, wrong
        [0.1, 0.1, 0.8],  # y 2: 0.8, correct
        [0.4, 0.4, 0.2],  # y 1: tie goes to class 0 -> 0.4, wrong
        [0.05, 0.9, 0.05],  # y 1: 0.9, correct
        [0.2, 0.2, 0.6],  # y 0: 0.6, wrong
    ])
    y = [0, 2, 2, 1, 1, 0]
    # sorted confidences: 0.4 0.5 0.6 (all wrong) | 0.7 0.8 0.9 (all right)
    # bin 1: |0 - 0.5| = 0.5; bin 2: |1 - 0.8| = 0.2; ECE = 0.5 * 0.5 + 0.5 * 0.2 = 0.35
    # (had the tie gone to class 1, bin 1 would be |1/3 - 0.5| and ECE 0.1833)
    assert ece(y, proba, n_bins=2) == pytest.approx(0.35, abs=1e-12)


def test_ece_matches_definition_with_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 53)
    p1 = rng.uniform(size=53).round(1)  # many tied scores, straddling bins
    for n_bins in (1, 3, 7, 10, 53):
        assert ece(y, binary(p1), n_bins) == pytest.approx(naive_ece(p1, (y == 1).astype(float), n_bins), abs=1e-12)


def test_weighted_ece_is_the_ece_of_the_drawn_copies():
    """The bootstrap core rebins each resample: weights (counts) act as repeated images."""
    rng = np.random.default_rng(5)
    n = 40
    score = rng.uniform(size=n).round(2)
    outcome = rng.integers(0, 2, n).astype(float)
    weights = rng.integers(0, 4, (6, n)).astype(float)
    got = cal._ece_weighted(score, outcome, weights, 4)
    for row, value in zip(weights.astype(int), got):
        expected = naive_ece(np.repeat(score, row), np.repeat(outcome, row), 4)
        assert value == pytest.approx(expected, abs=1e-12)
    assert cal._ece_weighted(score, outcome, np.ones((1, n)), 4)[0] == pytest.approx(naive_ece(score, outcome, 4))


def test_reliability_bins_by_hand_and_wilson_against_statsmodels():
    bins = reliability_bins(Y7, binary(P7), n_bins=2)
    assert [b["count"] for b in bins] == [4, 3]
    assert [b["mean_score"] for b in bins] == pytest.approx([0.25, 2.3 / 3])
    assert [b["observed"] for b in bins] == pytest.approx([0.5, 2 / 3])
    assert [(b["score_low"], b["score_high"]) for b in bins] == [(0.1, 0.4), (0.6, 0.9)]
    for b, hits in zip(bins, (2, 2)):
        low, high = proportion_confint(hits, b["count"], alpha=0.05, method="wilson")
        assert (b["low"], b["high"]) == pytest.approx((low, high), abs=1e-12)
    # ECE is the count-weighted mean gap of these bins
    assert sum(b["count"] / 7 * abs(b["observed"] - b["mean_score"]) for b in bins) == pytest.approx(ECE7)


@pytest.mark.parametrize(("hits", "n"), [(0, 5), (5, 5), (1, 3), (7, 13), (0, 1), (40, 41)])
def test_wilson_against_statsmodels(hits, n):
    expected = proportion_confint(hits, n, alpha=0.05, method="wilson")
    assert cal._wilson(hits, n) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- slope and intercept


def test_slope_intercept_by_hand():
    # z = -1 for four images (one positive), +1 for four (three positive): the two-point
    # logistic fit is saturated, a - b = logit(1/4), a + b = logit(3/4) -> b = log 3, a = 0;
    # with the slope fixed at 1 the symmetric data give intercept 0 as well.
    p1 = expit(np.array([-1.0] * 4 + [1.0] * 4))
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    out = calibration_slope_intercept(y, binary(p1))
    assert out["slope"] == pytest.approx(math.log(3.0), abs=1e-8)
    assert out["intercept"] == pytest.approx(0.0, abs=1e-8)
    # constant prediction 0.5, 3 of 4 positive: intercept = logit(3/4) - logit(0.5) = log 3; slope undefined
    out = calibration_slope_intercept([1, 1, 1, 0], binary([0.5] * 4))
    assert out["intercept"] == pytest.approx(math.log(3.0), abs=1e-8)
    assert math.isnan(out["slope"])


def statsmodels_intercept(y, p):
    """Calibration-in-the-large: logistic regression on a constant with logit(p) as offset."""
    z = np.log(p / (1.0 - p))
    return sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=z).fit().params[0]


def statsmodels_fit(y, p):
    z = np.log(p / (1.0 - p))
    slope = sm.GLM(y, sm.add_constant(z), family=sm.families.Binomial()).fit().params[1]
    return slope, statsmodels_intercept(y, p)


def test_slope_intercept_agree_with_statsmodels_binary():
    z, y = calibrated_binary(300, seed=1, mean=-0.7, sd=1.0)
    p1 = expit(1.7 * z + 0.4)
    out = calibration_slope_intercept(y, binary(p1))
    slope, intercept = statsmodels_fit(y, p1)
    assert out["slope"] == pytest.approx(slope, abs=1e-7)
    assert out["intercept"] == pytest.approx(intercept, abs=1e-7)


def test_slope_intercept_agree_with_statsmodels_multiclass():
    logits, y = calibrated_three(300, seed=2)
    proba = softmax(1.5 * logits, axis=1)
    out = calibration_slope_intercept(y, proba)
    expected = [statsmodels_fit((y == k).astype(int), proba[:, k]) for k in range(3)]
    assert out["per_class"]["slope"] == pytest.approx([s for s, _ in expected], abs=1e-7)
    assert out["per_class"]["intercept"] == pytest.approx([i for _, i in expected], abs=1e-7)
    assert out["slope"] == pytest.approx(np.mean([s for s, _ in expected]))
    assert out["intercept"] == pytest.approx(np.mean([i for _, i in expected]))


def test_slope_intercept_known_answers_on_large_samples():
    z, y = calibrated_binary(20000, seed=3, mean=-0.5, sd=1.5)
    good = calibration_slope_intercept(y, binary(expit(z)))
    assert good["slope"] == pytest.approx(1.0, abs=0.05)
    assert good["intercept"] == pytest.approx(0.0, abs=0.05)
    extreme = calibration_slope_intercept(y, binary(expit(2.0 * z)))  # too extreme: slope 1/2
    assert extreme["slope"] == pytest.approx(0.5, abs=0.03)
    shifted = calibration_slope_intercept(y, binary(expit(z - 1.0)))  # predictions too low by 1 logit
    assert shifted["slope"] == pytest.approx(1.0, abs=0.05)
    assert shifted["intercept"] == pytest.approx(1.0, abs=0.05)


def test_slope_intercept_nan_cases():
    # perfectly separated: slope infinite -> nan; calibration-in-the-large still defined
    y, p1 = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]
    out = calibration_slope_intercept(y, binary(p1))
    assert math.isnan(out["slope"])
    assert out["intercept"] == pytest.approx(statsmodels_intercept(np.array(y), np.array(p1)), abs=1e-7)
    assert out["intercept"] == pytest.approx(0.0, abs=1e-8)  # symmetric: sum expit(z) = 2 = sum y at a = 0
    # quasi-complete separation (a tie at the boundary) is still nan
    assert math.isnan(calibration_slope_intercept([0, 0, 1, 1], binary([0.1, 0.5, 0.5, 0.9]))["slope"])
    # one class only: both nan
    out = calibration_slope_intercept([1, 1, 1], binary([0.2, 0.6, 0.9]))
    assert math.isnan(out["slope"]) and math.isnan(out["intercept"])
    # multi-class: a class absent from y makes the macro values nan, the others stay defined
    logits, y3 = calibrated_three(60, seed=6)
    y3 = np.where(y3 == 2, 0, y3)
    out = calibration_slope_intercept(y3, softmax(logits, axis=1))
    assert math.isnan(out["slope"]) and math.isnan(out["per_class"]["slope"][2])
    assert np.isfinite(out["per_class"]["slope"][:2]).all()


# --------------------------------------------------------------------------- temperature scaling


@pytest.mark.parametrize(("sharpness", "above_one"), [(3.0, True), (0.5, False)])
def test_temperature_binary(sharpness, above_one):
    z, y = calibrated_binary(2000, seed=7)
    proba = binary(expit(sharpness * z))  # 3: overconfident, 0.5: underconfident
    t = fit_temperature(y, proba)
    assert isinstance(t, float)
    assert (t > 1.0) == above_one
    assert t == pytest.approx(sharpness, rel=0.15)
    calibrated = apply_temperature(proba, t)
    assert nll(y, calibrated) < nll(y, proba) - 0.01
    assert np.array_equal(calibrated[:, 1] >= 0.5, proba[:, 1] >= 0.5)
    assert np.allclose(calibrated.sum(axis=1), 1.0)
    # it is the minimum: moving T either way raises the NLL
    for other in (t * 1.1, t / 1.1):
        assert nll(y, apply_temperature(proba, other)) > nll(y, calibrated)


@pytest.mark.parametrize(("sharpness", "above_one"), [(2.5, True), (0.4, False)])
def test_temperature_three_class(sharpness, above_one):
    logits, y = calibrated_three(2000, seed=8)
    proba = softmax(sharpness * logits, axis=1)
    t = fit_temperature(y, proba)
    assert (t > 1.0) == above_one
    assert t == pytest.approx(sharpness, rel=0.15)
    calibrated = apply_temperature(proba, t)
    assert calibrated.shape == proba.shape
    assert nll(y, calibrated) < nll(y, proba) - 0.01
    assert np.array_equal(np.argmax(calibrated, axis=1), np.argmax(proba, axis=1))
    assert np.allclose(calibrated.sum(axis=1), 1.0)


def test_apply_temperature_identity_at_one():
    rng = np.random.default_rng(9)
    p2 = binary(np.r_[rng.uniform(size=20), 0.0, 1.0, 0.5])
    p3 = np.vstack([rng.dirichlet([1, 1, 1], 20), [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]])
    for proba in (p2, p3):
        assert np.allclose(apply_temperature(proba, 1.0), proba, rtol=0.0, atol=1e-6)
        assert np.allclose(apply_temperature(proba, 1.0, class_weights=[2.0] * proba.shape[1]), proba, atol=1e-6)


def test_nll_by_hand():
    # -(log 0.9 + log 0.8 + log 0.5) / 3, the probability of the true class each time
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    assert nll([1, 0, 1], proba) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.5)) / 3)
    # a zero probability on the true class is clipped to 1e-7, not inf
    assert nll([0], np.array([[0.0, 1.0]])) == pytest.approx(-math.log(1e-7))


def test_class_weight_prior_correction_binary():
    """A model trained with balanced class weights on a 20 % prevalence over-predicts the
    positive class; dividing out the weights restores the prevalence."""
    z, y = calibrated_binary(5000, seed=10, mean=-1.7, sd=1.2)
    true_p = expit(z)
    prevalence = y.mean()
    assert prevalence == pytest.approx(0.2, abs=0.03)
    w = {0: 1.0 / (2 * (1 - prevalence)), 1: 1.0 / (2 * prevalence)}  # balanced_class_weight
    shifted = w[1] * true_p / (w[1] * true_p + w[0] * (1 - true_p))  # p proportional to w * true p
    proba = binary(shifted)
    assert proba[:, 1].mean() > prevalence + 0.15
    corrected = apply_temperature(proba, 1.0, class_weights=w)
    assert corrected[:, 1].mean() == pytest.approx(prevalence, abs=0.01)
    assert np.allclose(corrected[:, 1], true_p, atol=1e-6)
    # the correction flips decisions at 0.5: that is its purpose
    assert (corrected[:, 1] >= 0.5).sum() < (proba[:, 1] >= 0.5).sum()
    t_w = fit_temperature(y, proba, class_weights=w)
    t_0 = fit_temperature(y, proba)
    assert t_w == pytest.approx(1.0, abs=0.1)
    assert nll(y, apply_temperature(proba, t_w, w)) < nll(y, apply_temperature(proba, t_0)) - 0.02
    # only ratios matter; a dict and an array are the same thing
    scaled = np.array([w[0], w[1]]) * 10.0
    assert np.allclose(apply_temperature(proba, 1.3, scaled), apply_temperature(proba, 1.3, w))
    assert fit_temperature(y, proba, scaled) == pytest.approx(t_w, rel=1e-4)


def test_class_weight_prior_correction_three_class():
    logits, _ = calibrated_three(50, seed=11)
    true_p = softmax(logits, axis=1)
    w = np.array([0.5, 1.0, 4.0])
    shifted = true_p * w / (true_p * w).sum(axis=1, keepdims=True)
    assert np.allclose(apply_temperature(shifted, 1.0, class_weights=w), true_p, atol=1e-6)
    # an unlisted class gets weight 1
    assert np.allclose(apply_temperature(shifted, 1.0, {0: 0.5, 2: 4.0}), true_p, atol=1e-6)


# --------------------------------------------------------------------------- summary and bootstrap


def overconfident_binary(n: int, seed: int):
    z, y = calibrated_binary(n, seed)
    return y, binary(expit(2.5 * z))


def test_summary_fields():
    y, proba = overconfident_binary(38, seed=12)
    out = calibration_summary(y, proba, prevalence=0.4, n_resamples=200)
    assert out["n_bins"] == 3  # default for 38 images: min(10, max(2, 38 // 10))
    assert len(out["bins"]) == 3 and sum(b["count"] for b in out["bins"]) == 38
    assert out["ece"] == pytest.approx(ece(y, proba, 3))
    assert out["nll"] == pytest.approx(nll(y, proba))
    si = calibration_slope_intercept(y, proba)
    assert (out["slope"], out["intercept"]) == pytest.approx((si["slope"], si["intercept"]), nan_ok=True)
    assert out["brier_skill"] == pytest.approx(brier_skill_score(y, proba, 0.4))
    assert math.isnan(calibration_summary(y, proba, n_resamples=10)["brier_skill"])
    assert (out["ci_unit"], out["ci_resamples"], out["ci_level"], out["n"]) == ("image", 200, 0.95, 38)
    assert calibration_summary(y, proba, n_resamples=10, n_bins=5)["n_bins"] == 5
    assert calibration_summary(y[:4], proba[:4], n_resamples=10, n_bins=10)["n_bins"] == 4
    assert [cal.default_n_bins(n) for n in (5, 38, 100, 5000)] == [2, 3, 10, 10]


def test_bootstrap_interval_is_deterministic_and_contains_the_estimate():
    y, proba = overconfident_binary(200, seed=13)
    a = calibration_summary(y, proba, n_resamples=300, seed=1)
    b = calibration_summary(y, proba, n_resamples=300, seed=1)
    c = calibration_summary(y, proba, n_resamples=300, seed=2)
    assert (a["ece_ci_low"], a["ece_ci_high"]) == (b["ece_ci_low"], b["ece_ci_high"])
    assert (a["ece_ci_low"], a["ece_ci_high"]) != (c["ece_ci_low"], c["ece_ci_high"])
    assert a["ece_ci_low"] < a["ece"] < a["ece_ci_high"]
    assert a["ece_ci_high"] - a["ece_ci_low"] > 0.02
    logits, y3 = calibrated_three(150, seed=14)
    m = calibration_summary(y3, softmax(2.5 * logits, axis=1), n_resamples=300)
    assert m["ece_ci_low"] < m["ece"] < m["ece_ci_high"]


def test_group_bootstrap():
    y, proba = overconfident_binary(120, seed=15)
    plain = calibration_summary(y, proba, n_resamples=300, seed=3)
    singletons = calibration_summary(y, proba, groups=np.arange(120), n_resamples=300, seed=3)
    assert (singletons["ece_ci_low"], singletons["ece_ci_high"]) == (plain["ece_ci_low"], plain["ece_ci_high"])
    grouped = calibration_summary(y, proba, groups=[f"g{i // 4}" for i in range(120)], n_resamples=300, seed=3)
    assert grouped["ci_unit"] == "group"
    assert grouped["ece"] == plain["ece"]
    assert (grouped["ece_ci_low"], grouped["ece_ci_high"]) != (plain["ece_ci_low"], plain["ece_ci_high"])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("y", "proba"),
    [
        ([0, 1], [0.2, 0.7]),  # 1-D
        ([0, 1], [[1.0], [1.0]]),  # one column
        ([0, 1, 1], binary([0.2, 0.7])),  # length mismatch
        ([0, 2], binary([0.2, 0.7])),  # label outside 0..K-1
        ([0, 1], [[-0.2, 1.2], [0.3, 0.7]]),  # outside [0, 1]
        ([0, 1], [[np.nan, 1.0], [0.3, 0.7]]),  # nan
        ([0, 1], [[0.5, 0.9], [0.3, 0.7]]),  # row not summing to 1
        ([0.5, 1], binary([0.2, 0.7])),  # non-integer label
    ],
)
def test_bad_inputs_raise(y, proba):
    for call in (
        lambda: ece(y, proba),
        lambda: nll(y, proba),
        lambda: fit_temperature(y, proba),
        lambda: calibration_slope_intercept(y, proba),
        lambda: reliability_bins(y, proba),
        lambda: calibration_summary(y, proba, n_resamples=5),
    ):
        with pytest.raises(ValueError, match="Expected"):
            call()


def test_bad_parameters_raise():
    proba = binary([0.2, 0.7, 0.4])
    y = [0, 1, 1]
    for t in (0, -1.0, float("nan"), float("inf"), "hot", None):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(proba, t)
    for w in ([1.0], [1.0, 0.0], [1.0, -2.0], {2: 1.0}, {"tumor": 2.0}, [1.0, np.nan]):
        with pytest.raises(ValueError, match="class"):
            apply_temperature(proba, 1.0, class_weights=w)
        with pytest.raises(ValueError, match="class"):
            fit_temperature(y, proba, class_weights=w)
    with pytest.raises(ValueError, match="shape"):
        apply_temperature([0.2, 0.7], 1.0)
    for n_bins in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_bins"):
            ece(y, proba, n_bins=n_bins)
    with pytest.raises(ValueError, match="n_resamples"):
        calibration_summary(y, proba, n_resamples=0)
    with pytest.raises(ValueError, match="group"):
        calibration_summary(y, proba, groups=[0, 1], n_resamples=5)


def test_temperature_prior_keeps_a_separable_validation_split_from_running_to_the_bound():
    # 38 validation images, every one on the right side: the plain fit sharpens without end
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 19)
    p1 = np.where(y == 1, rng.uniform(0.6, 0.95, 38), rng.uniform(0.05, 0.4, 38))
    proba = np.column_stack([1 - p1, p1])
    assert fit_temperature(y, proba) == pytest.approx(0.05, rel=1e-3)
    t = fit_temperature(y, proba, prior_sd=PRIOR_SD)
    assert 0.3 < t < 1.0


def test_temperature_prior_is_negligible_with_many_images():
    rng = np.random.default_rng(6)
    n = 5000
    y = rng.integers(0, 2, n)
    z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.5, n)
    p1 = 1 / (1 + np.exp(-3 * z))  # overconfident by about a factor 3 in the logits
    proba = np.column_stack([1 - p1, p1])
    plain, prior = fit_temperature(y, proba), fit_temperature(y, proba, prior_sd=PRIOR_SD)
    assert plain > 2
    assert abs(np.log(prior) - np.log(plain)) < 0.02
    with pytest.raises(ValueError, match="prior_sd"):
        fit_temperature(y, proba, prior_sd=0)
