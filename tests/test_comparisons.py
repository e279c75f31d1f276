"""bench.evaluate.comparisons: corrected resampled t-test, Holm, probability best."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench.evaluate.comparisons import bootstrap_scores, corrected_resampled_ttest, holm, probability_best
from bench.evaluate.metrics import bootstrap_ci, classification_metrics

BINARY = ["normal", "tumor"]


# --------------------------------------------------------------------------- corrected resampled t-test


def test_corrected_ttest_by_hand():
    # 2 repeats x 5 folds, 80 training and 20 test images per fold
    diffs = [0.02, 0.05, -0.01, 0.03, 0.04, 0.00, 0.02, 0.03, 0.01, 0.05]
    out = corrected_resampled_ttest(diffs, n_train=80, n_test=20)
    mean = 0.024  # sum 0.24 / 10
    # deviations x 1000: -4 26 -34 6 16 -24 -4 6 -14 26; squares sum to 3640e-6
    var = sum((d - mean) ** 2 for d in diffs) / 9
    assert var == pytest.approx(0.00364 / 9)
    se = math.sqrt((1 / 10 + 20 / 80) * var)
    t = mean / se
    assert (out.mean, out.se, out.t, out.df, out.n) == pytest.approx((mean, se, t, 9, 10))
    assert out.p_value == pytest.approx(2 * stats.t.sf(abs(t), 9))
    half = stats.t.ppf(0.975, 9) * se
    assert (out.ci_low, out.ci_high) == pytest.approx((mean - half, mean + half))
    assert out.level == 0.95 and out.as_dict()["df"] == 9
    # 90 % interval
    narrow = corrected_resampled_ttest(diffs, 80, 20, level=0.9)
    assert narrow.ci_high - narrow.ci_low == pytest.approx(2 * stats.t.ppf(0.95, 9) * se)


@pytest.mark.parametrize(("r", "k", "seed"), [(10, 10, 0), (5, 2, 1), (3, 5, 2)])
def test_corrected_ttest_against_an_independent_reimplementation(r, k, seed):
    """The corrected statistic is the plain one-sample t (scipy) shrunk by
    sqrt((1/J) / (1/J + n_test/n_train)) (Nadeau & Bengio 2003, Bouckaert & Frank 2004)."""
    rng = np.random.default_rng(seed)
    diffs = rng.normal(0.01, 0.03, r * k)
    n = 300
    n_test = n / k
    n_train = n - n_test
    out = corrected_resampled_ttest(diffs, n_train, n_test)
    plain = stats.ttest_1samp(diffs, 0.0)
    j = r * k
    shrink = math.sqrt((1 / j) / (1 / j + n_test / n_train))
    assert out.t == pytest.approx(plain.statistic * shrink)
    assert out.p_value == pytest.approx(2 * stats.t.sf(abs(plain.statistic * shrink), j - 1))
    assert out.p_value > plain.pvalue  # the correction is conservative
    # with a vanishing test share the correction disappears: scipy's t-test and its CI
    limit = corrected_resampled_ttest(diffs, n_train=1e12, n_test=1e-6)
    assert limit.t == pytest.approx(plain.statistic) and limit.p_value == pytest.approx(plain.pvalue)
    ci = plain.confidence_interval(0.95)
    assert (limit.ci_low, limit.ci_high) == pytest.approx((ci.low, ci.high))


def test_corrected_ttest_degenerate_cases_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero = corrected_resampled_ttest(np.zeros(10), 90, 10)
        assert (zero.mean, zero.se, zero.t, zero.p_value, zero.ci_low, zero.ci_high) == (0, 0, 0, 1, 0, 0)
        up = corrected_resampled_ttest(np.full(6, 0.1), 90, 10)
        assert up.p_value == 0.0 and up.t == math.inf and up.ci_low == up.ci_high == pytest.approx(0.1)
        down = corrected_resampled_ttest([-0.02] * 4, 90, 10)
        assert down.p_value == 0.0 and down.t == -math.inf
    for bad, match in (([0.1], "at least 2"), ([0.1, float("nan")], "finite"), ([[0.1, 0.2]], "1-D")):
        with pytest.raises(ValueError, match=match):
            corrected_resampled_ttest(bad, 90, 10)
    with pytest.raises(ValueError, match="n_train"):
        corrected_resampled_ttest([0.1, 0.2], 0, 10)


# --------------------------------------------------------------------------- Holm


def test_holm_by_hand_and_against_statsmodels():
    # sorted: .005 x4 = .02; .01 x3 = .03; .03 x2 = .06; .04 x1 = .04 -> running max .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 30):
        p = rng.random(size) ** 3
        assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    tied = np.array([0.02, 0.5, 0.02, 0.001, 0.5, 0.3])
    assert holm(tied) == pytest.approx(multipletests(tied, method="holm")[1])


def test_holm_passes_nan_through():
    out = holm([0.01, float("nan"), 0.04, None, 0.03, 0.005])
    assert np.isnan(out[[1, 3]]).all()
    assert out[[0, 2, 4, 5]] == pytest.approx([0.03, 0.06, 0.06, 0.02])  # adjusted among the four
    assert np.isnan(holm([float("nan"), None])).all()
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm([0.2, 1.5])


# --------------------------------------------------------------------------- probability best


def test_probability_best_constructed():
    scores = np.array([[1, 2, 3], [3, 2, 1], [2, 2, 1], [1, 1, 1], [np.nan, 5, 0]], dtype=float)
    # rows: best 2 | best 0 | tie 0,1 | tie all | dropped (nan)
    assert probability_best(scores) == pytest.approx([(1 + 0.5 + 1 / 3) / 4, (0.5 + 1 / 3) / 4, (1 + 1 / 3) / 4])
    # a loss: lowest wins. rows: 0 | 2 | 2 | tie all
    assert probability_best(scores, maximise=False) == pytest.approx([(1 + 1 / 3) / 4, 1 / 12, (2 + 1 / 3) / 4])
    assert probability_best(scores).sum() == pytest.approx(1.0)
    assert np.isnan(probability_best(np.full((3, 2), np.nan))).all()
    with pytest.raises(ValueError, match="n_rows, n_models"):
        probability_best(np.ones(4))


def _models(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    latent = rng.normal(1.5 * y, 1.0)
    scores = [1 / (1 + np.exp(-(skill * latent + rng.normal(0, 1, n)))) for skill in (2.0, 0.6, 0.2)]
    probas = np.stack([np.column_stack([1 - s, s]) for s in scores])  # (3 models, n, 2)
    return y, probas


def test_bootstrap_scores_share_the_resamples_with_bootstrap_ci():
    y, probas = _models()
    groups = [f"g{i // 2:02d}" for i in range(60)]  # pairs of neighbours as groups
    for g in (None, groups):
        scores = bootstrap_scores(y, probas, BINARY, metric="roc_auc", groups=g, n_resamples=300, seed=5)
        assert scores.shape == (300, 3)
        for j in range(3):
            ci = bootstrap_ci(y, probas[j], BINARY, n_resamples=300, seed=5, metrics=("roc_auc",), groups=g)
            assert tuple(np.percentile(scores[:, j], [2.5, 97.5])) == pytest.approx(ci["roc_auc"])
    # identical models get identical columns: the same weights for every model
    twin = bootstrap_scores(y, probas[[0, 0]], BINARY, metric="brier", n_resamples=100)
    assert np.array_equal(twin[:, 0], twin[:, 1])
    # no resamples: the point estimates
    point = bootstrap_scores(y, probas, BINARY, metric="accuracy", threshold=[0.3, 0.5, 0.7], n_resamples=0)
    expected = [classification_metrics(y, probas[j], BINARY, t)["accuracy"] for j, t in enumerate([0.3, 0.5, 0.7])]
    assert point == pytest.approx(np.array([expected]))


def test_bootstrap_scores_over_repeats_and_probability_best():
    y, probas = _models(seed=1)
    rng = np.random.default_rng(2)
    second = np.clip(probas[:, :, 1] + rng.normal(0, 0.05, (3, 60)), 0, 1)  # another CV repeat
    repeats = np.stack([probas, np.stack([1 - second, second], axis=-1)])  # (2 repeats, 3 models, 60, 2)
    scores = bootstrap_scores(y, repeats, BINARY, metric="roc_auc", n_resamples=200, seed=3)
    assert scores.shape == (400, 3)
    for r in range(2):  # rows r * 200 + b: repeat r on resample b
        alone = bootstrap_scores(y, repeats[r], BINARY, metric="roc_auc", n_resamples=200, seed=3)
        assert np.array_equal(scores[r * 200:(r + 1) * 200], alone)
    best = probability_best(scores)
    assert best.sum() == pytest.approx(1.0)
    assert best[0] > 0.8 and best[0] > best[1] > best[2] and best[2] < 0.01  # AUCs about .87, .77, .50
    brier = bootstrap_scores(y, repeats, BINARY, metric="brier", n_resamples=200)
    assert probability_best(brier, maximise=False) == pytest.approx(probability_best(-brier))
    assert not np.allclose(probability_best(brier, maximise=False), probability_best(brier))
    with pytest.raises(ValueError, match="metric"):
        bootstrap_scores(y, probas, BINARY, metric="auc")
    with pytest.raises(ValueError, match="prevalence="):
        bootstrap_scores(y, probas, BINARY, metric="brier_skill")
    skill = bootstrap_scores(y, probas, BINARY, metric="brier_skill", prevalence=0.5, n_resamples=0)
    assert skill[0, 0] > skill[0, 2]
