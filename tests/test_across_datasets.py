"""bench.evaluate.across_datasets, rank_tests and bayes_signed_rank: the verdict across
datasets, checked against published worked examples and independent implementations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.evaluate.across_datasets import MISSING_RULE, TIE_RULE, compare_across, pairwise, verdict
from bench.evaluate.bayes_signed_rank import bayesian_signed_rank
from bench.evaluate.rank_tests import friedman, iman_davenport, nemenyi, probability_best_hierarchical, ranks

# Demšar, "Statistical comparisons of classifiers over multiple data sets", JMLR 7:1-30
# (2006), Table 6: AUC of C4.5 with four settings on 14 UCI data sets (its Table 2 holds the
# first two columns). The table prints 0.975 for both C4.5+cf and C4.5+m+cf on "voting" but
# ranks C4.5+cf second there (its mean ranks need it); 0.9751 restores that order, as in
# SciPy's own test of friedmanchisquare (scipy/stats/tests/test_stats.py), which enters the
# same table.
DEMSAR_MODELS = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
DEMSAR_DATASETS = ["adult (sample)", "breast cancer", "breast cancer wisconsin", "cmc", "ionosphere", "iris",
                   "liver disorders", "lung cancer", "lymphography", "mushroom", "primary tumor", "rheum", "voting",
                   "wine"]
DEMSAR_AUC = np.array([
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.9751, 0.975], [0.957, 0.978, 0.946, 0.970],
])

# baycomp's documentation example (J. Demšar's baycomp, docs/functions.rst and docs/classes.rst):
# mean accuracy (%) of naive Bayes (nbc) and J48 over 10 x 10-fold CV on 54 UCI data sets,
# from its docs/code/accuracies.txt, here to 4 decimals (the probabilities do not move).
# Published: SignedRankTest.probs(nbc, j48, rope=1) == (0.23124, 0.00666, 0.7621).
NBC = [95.946, 71.3952, 83.3377, 49.9859, 76.1667, 86.2174, 86.2174, 81.8725, 52.8114, 75.04, 71.935, 50.125,
       72.0312, 60.0, 83.6875, 84.3609, 98.3112, 89.4024, 93.3332, 87.7909, 87.5999, 56.8472, 85.1, 62.6653,
       74.6364, 96.3893, 95.7607, 90.2994, 92.169, 93.3748, 80.4167, 87.72, 75.26, 68.1114, 47.1979, 91.1472,
       85.5937, 86.6222, 93.8144, 76.7118, 92.1958, 89.8262, 79.2193, 95.4169, 59.0333, 62.0667, 46.3208, 58.7878,
       79.968, 64.9286, 98.7058, 97.1964, 57.6143, 93.9818]
J48 = [98.6423, 77.2214, 77.1957, 49.4983, 83.5001, 86.2899, 86.2899, 80.2121, 64.2067, 72.17, 72.3117, 39.6625,
       71.5098, 60.0, 78.5709, 80.5173, 99.1861, 90.1159, 93.5999, 99.437, 85.8, 56.8472, 76.3714, 64.0936, 97.8023,
       98.9173, 100.0, 97.1814, 78.5925, 96.6051, 73.1667, 88.6162, 74.3234, 69.7781, 41.0079, 94.1428, 88.9546,
       89.9792, 97.841, 74.6761, 92.6344, 92.8516, 81.0597, 94.1661, 63.5, 77.6667, 46.7834, 76.5353, 74.872,
       60.9525, 90.7286, 95.0368, 57.0753, 92.6091]


@pytest.fixture(scope="module")
def demsar():
    return compare_across(DEMSAR_DATASETS, DEMSAR_MODELS, DEMSAR_AUC)


# --------------------------------------------------------------------------- Demšar 2006


def test_demsar_table6_mean_ranks(demsar):
    assert demsar.mean_ranks == pytest.approx([3.143, 2.000, 2.893, 1.964], abs=5e-4)


def test_demsar_table6_friedman_and_iman_davenport():
    f = friedman(DEMSAR_AUC)
    assert f.computed and (f.n_datasets, f.n_models) == (14, 4)
    assert f.chi2_untied == pytest.approx(9.28, abs=5e-3)  # Demšar's chi^2_F
    assert iman_davenport(9.28, 14, 4)[0] == pytest.approx(3.69, abs=5e-3)  # Demšar's F_F
    assert iman_davenport(f.chi2_untied, 14, 4)[0] == pytest.approx(3.69, abs=5e-3)
    # The tie-corrected statistic, as SciPy's test of the same table records it (verified there with MATLAB and R)
    assert (f.chi2, f.p_value) == pytest.approx((10.2283464566929, 0.0167215803284414), abs=1e-9)
    assert (f.ff, f.ff_p) == pytest.approx(iman_davenport(f.chi2, 14, 4))
    # F_F on 3 and 39 degrees of freedom; its critical value at 0.05 is 2.85 (Demšar), so the null is rejected
    assert stats.f.ppf(0.95, 3, 39) == pytest.approx(2.85, abs=5e-3) and f.ff > 2.85
    assert f.ff_p == pytest.approx(stats.f.sf(f.ff, 3, 39))


def test_demsar_nemenyi_critical_difference(demsar):
    n = nemenyi(DEMSAR_AUC, alpha=0.05)
    assert n.q_alpha == pytest.approx(2.569, abs=5e-4)
    assert n.cd == pytest.approx(1.25, abs=5e-3)
    # Nemenyi finds no pair apart in this example (the largest gap, 3.143 - 1.964, is under the CD),
    # and its p-values say the same as the CD for every pair
    mean = demsar.mean_ranks
    gaps = np.abs(mean[:, None] - mean[None, :])
    assert gaps.max() == pytest.approx(1.179, abs=1e-3)
    assert np.array_equal(n.p_values < 0.05, gaps > n.cd)
    assert np.allclose(np.diag(n.p_values), 1.0)


def test_demsar_table2_wilcoxon():
    (pair,) = pairwise(DEMSAR_MODELS[:2], DEMSAR_AUC[:, :2])
    # C4.5 against C4.5+m: R+ = 12 (C4.5 higher), R- = 93, zero differences split; T = min = 12
    assert (pair.r_plus, pair.r_minus) == (12.0, 93.0)
    assert min(pair.r_plus, pair.r_minus) <= 21  # Demšar's critical value for N = 14 at alpha = 0.05
    # the normal approximation: z = (12 - 52.5) / sqrt(14 * 15 * 29 / 24) = -2.54, p = 0.011
    assert pair.p_value == pytest.approx(0.011, abs=5e-4)
    assert pair.p_holm == pair.p_value  # one pair, nothing to adjust
    assert (pair.wins, pair.ties, pair.losses) == (0, 8, 6)  # with the default ROPE of 0.01


def test_wilcoxon_is_holm_adjusted_over_all_pairs(demsar):
    pairs = demsar.pairs
    assert len(pairs) == 6
    raw = np.array([p.p_value for p in pairs])
    order = np.argsort(raw)
    # Holm by hand: p_(i) * (m - i + 1), running maximum, capped at 1
    by_hand = np.minimum(np.maximum.accumulate(raw[order] * (6 - np.arange(6))), 1)
    assert np.array([p.p_holm for p in pairs])[order] == pytest.approx(by_hand)


# --------------------------------------------------------------------------- autorank, independently


@pytest.mark.parametrize("seed", [None, 3])
def test_agrees_with_autorank(seed):
    from autorank import autorank

    if seed is None:
        scores, models = DEMSAR_AUC, DEMSAR_MODELS
    else:
        scores = np.random.default_rng(seed).normal(0.8, 0.05, size=(9, 5)) + np.linspace(0, 0.04, 5)
        models = [f"m{i}" for i in range(5)]
    ours = compare_across([f"d{i}" for i in range(len(scores))], models, scores)
    theirs = autorank(pd.DataFrame(scores, columns=models), alpha=0.05, verbose=False, force_mode="nonparametric")
    assert theirs.omnibus == "friedman"
    assert ours.mean_ranks == pytest.approx(theirs.rankdf.loc[models, "meanrank"].to_numpy())
    assert ours.nemenyi.cd == pytest.approx(theirs.cd, rel=1e-4)
    assert ours.friedman.p_value == pytest.approx(theirs.pvalue)


# --------------------------------------------------------------------------- Bayesian signed-rank


def test_bayesian_signed_rank_reproduces_baycomps_published_example():
    # diffs are nbc - j48, so "A better" is baycomp's "left" (nbc better)
    got = bayesian_signed_rank(np.subtract(NBC, J48), rope=1)
    assert got == pytest.approx((0.23124, 0.00666, 0.7621), abs=0.01)
    assert sum(got) == pytest.approx(1.0)


@pytest.mark.parametrize("n, shift, rope", [(5, 0.0, 0.01), (10, 0.01, 0.01), (20, 0.02, 0.05), (12, 0.01, 0.0)])
def test_bayesian_signed_rank_agrees_with_baycomp(n, shift, rope):
    from baycomp import SignedRankTest

    rng = np.random.default_rng(n)
    a = rng.normal(0.8, 0.05, n)
    b = a - shift + rng.normal(0, 0.02, n)
    ours = bayesian_signed_rank(a - b, rope, seed=1)
    theirs = SignedRankTest.probs(a, b, rope=rope, random_state=1)
    if rope == 0:
        assert ours[1] == 0.0
        ours = (ours[0], ours[2])
    assert ours == pytest.approx(tuple(theirs), abs=0.01)


def test_bayesian_signed_rank_direction_seed_and_rope():
    up = np.array([0.05, 0.04, 0.06, 0.03, 0.05, 0.07])
    better, rope, worse = bayesian_signed_rank(up, rope=0.01)
    assert better > 0.95 and worse < 0.01
    assert bayesian_signed_rank(-up, rope=0.01) == pytest.approx((worse, rope, better), abs=0.01)
    assert bayesian_signed_rank(up, 0.01, seed=4) == bayesian_signed_rank(up, 0.01, seed=4)
    assert bayesian_signed_rank(up / 100, rope=0.01)[1] > 0.95  # all inside the ROPE
    with pytest.raises(ValueError, match="Expected rope >= 0"):
        bayesian_signed_rank(up, rope=-1)


def test_compare_across_stores_the_bayesian_test_per_pair():
    result = compare_across(["d"] * 54, ["nbc", "j48"], np.column_stack([NBC, J48]), rope=1)
    pair = result.pair("j48", "nbc")
    assert (pair.p_a_better, pair.p_rope, pair.p_b_better) == pytest.approx((0.7621, 0.00666, 0.23124), abs=0.01)
    matrix = result.bayes_matrix()
    assert matrix[1, 0] == pytest.approx([pair.p_a_better, pair.p_rope, pair.p_b_better])
    assert np.isnan(matrix[0, 0]).all()


# --------------------------------------------------------------------------- ranks and edge cases


def test_missing_cells_rank_below_every_model_that_ran():
    s = np.array([[0.9, np.nan, 0.8, np.nan], [0.7, 0.8, 0.9, 0.6], [np.nan] * 4])
    r = ranks(s)
    assert r[0] == pytest.approx([1, 3.5, 2, 3.5])  # the two failed share places 3 and 4
    assert r[1] == pytest.approx([3, 2, 1, 4])
    assert np.isnan(r[2]).all()  # nobody ran: left out
    result = compare_across(["a", "b", "none"], list("wxyz"), s)
    assert result.n_ranked == 2 and result.mean_ranks == pytest.approx([2, 2.75, 1.5, 3.75])
    assert "below every model that ran" in MISSING_RULE and result.as_dict()["missing_rule"] == MISSING_RULE
    assert "x on 2 datasets" in result.verdict and "z on 2 datasets" in result.verdict


def test_ties_share_the_average_place():
    assert ranks([[0.9, 0.9, 0.8], [0.5, 0.5, 0.5]]) == pytest.approx(np.array([[1.5, 1.5, 3], [2, 2, 2]]))


def test_wins_ties_losses_use_the_rope():
    s = np.array([[0.900, 0.905], [0.80, 0.70], [0.70, 0.75], [0.5, np.nan]])
    (pair,) = pairwise(["a", "b"], s, rope=0.01)
    assert (pair.n, pair.wins, pair.ties, pair.losses) == (3, 1, 1, 1)
    (strict,) = pairwise(["a", "b"], s, rope=0.0)
    assert (strict.wins, strict.ties, strict.losses) == (1, 0, 2)
    assert "ROPE" in TIE_RULE


def test_two_models_two_datasets_say_the_tests_need_more_datasets():
    result = compare_across(["a", "b"], ["densenet121", "vgg16"], [[0.91, 0.88], [0.85, 0.86]])
    assert not result.friedman.computed and "3 models" in result.friedman.reason
    assert result.nemenyi.computed
    (pair,) = result.pairs
    assert math.isnan(pair.p_value) and "at least 6 datasets" in pair.wilcoxon_reason
    assert "p =" not in result.verdict and "p <" not in result.verdict and "P(" not in result.verdict
    assert "need at least 3 datasets" in result.verdict


def test_one_dataset_and_one_model():
    one = compare_across(["a"], ["x", "y", "z"], [[0.9, 0.8, 0.7]])
    assert one.verdict.startswith("x ranked first on the only dataset (mean rank 1.00)")
    assert not one.friedman.computed and not one.nemenyi.computed and one.pairs[0].bayes_reason
    assert "only model" in compare_across(["a", "b"], ["x"], [[0.9], [0.8]]).verdict


def test_all_zero_differences_give_nan_with_a_reason():
    s = np.tile([[0.8, 0.8, 0.7]], (7, 1)) + np.arange(7)[:, None] * 0.01
    pairs = pairwise(["a", "b", "c"], s)
    assert math.isnan(pairs[0].p_value) and math.isnan(pairs[0].p_holm)
    assert "same on every dataset" in pairs[0].wilcoxon_reason
    assert pairs[1].p_value < 0.05 and not math.isnan(pairs[1].p_holm)
    assert not friedman(np.ones((4, 3))).computed


def test_verdict_in_plain_words():
    s = np.array([[0.95, 0.93, 0.80], [0.91, 0.905, 0.82], [0.90, 0.897, 0.85], [0.88, 0.86, 0.81],
                  [0.84, 0.86, 0.79]])
    result = compare_across([f"d{i}" for i in range(5)], ["densenet121", "vgg16", "resnet50"], s)
    text = result.verdict
    assert text.startswith("densenet121 ranked first on 4 of 5 datasets (mean rank 1.20); against the runner-up "
                           "vgg16 it is practically equivalent on 2 datasets, better on 2 and worse on 1")
    pair = result.pair("densenet121", "vgg16")
    assert f"P(better) {pair.p_a_better:.2f}, P(equivalent) {pair.p_rope:.2f}" in text
    assert f"Friedman p = {result.friedman.p_value:.2g}" in text
    assert verdict(result) == text


def test_verdict_when_the_first_two_tie_or_never_meet():
    tied = compare_across(["a", "b", "c"], ["x", "y", "z"], [[0.9, 0.8, 0.1], [0.8, 0.9, 0.1], [0.85, 0.85, 0.2]])
    assert tied.verdict.startswith("x and y share the best mean rank (1.50); x is practically equivalent on 1 "
                                   "dataset, better on 1 and worse on 1")
    apart = compare_across(["a", "b", "c"], ["x", "y"], [[0.9, np.nan], [np.nan, 0.9], [0.9, np.nan]])
    assert "against the runner-up y it cannot be compared: they ran on no dataset in common." in apart.verdict


def test_as_dict_is_json_with_nan_as_none():
    result = compare_across(["a", "b", "c"], ["x", "y", "z"], [[0.9, np.nan, 0.7], [0.8, 0.6, 0.7], [0.7, 0.6, 0.5]],
                            replicates=[np.full((3, 3), 0.5)] * 3)
    d = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert d["scores"][0][1] is None and d["pairs"][0]["p_value"] is None
    assert d["friedman"]["computed"] is True and len(d["nemenyi"]["p_values"]) == 3
    assert d["mean_ranks"] == pytest.approx(result.mean_ranks.tolist()) and d["verdict"] == result.verdict


def test_programmer_misuse_raises_expected_received():
    with pytest.raises(ValueError, match="Expected one score column per model"):
        compare_across(["a"], ["x", "y"], [[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="Expected one dataset name per row"):
        compare_across(["a", "b"], ["x", "y"], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="Received: shape"):
        ranks([0.1, 0.2])
    with pytest.raises(ValueError, match="Expected one replicate array per dataset"):
        compare_across(["a"], ["x", "y"], [[0.1, 0.2]], replicates=[])


# --------------------------------------------------------------------------- hierarchical probability best


def test_probability_best_a_dominant_model_gets_one():
    rng = np.random.default_rng(0)
    per_dataset = [rng.normal(0.7, 0.05, size=(50, 3)) + [0.5, 0, 0] for _ in range(4)]
    assert probability_best_hierarchical(per_dataset, 500) == pytest.approx([1, 0, 0])


def test_probability_best_identical_models_share():
    rng = np.random.default_rng(1)
    per_dataset = []
    for _ in range(3):
        x = rng.normal(0.8, 0.05, size=(40, 1))
        per_dataset.append(np.hstack([x, x, x - 0.3]))
    assert probability_best_hierarchical(per_dataset, 500) == pytest.approx([0.5, 0.5, 0])


def test_probability_best_draws_datasets_then_replicates():
    # A is best on datasets 1 and 2, B on dataset 3: A has the lower mean rank exactly when at least two of
    # the three drawn datasets are A's, P = 1 - (1/3)**3 - 3 (2/3)(1/3)**2 = 20/27
    per_dataset = [np.array([[0.9, 0.8]]), np.array([[0.7, 0.6], [0.8, 0.7]]), np.array([[0.5, 0.6]])]
    got = probability_best_hierarchical(per_dataset, 20000, seed=2)
    assert got == pytest.approx([20 / 27, 7 / 27], abs=0.01)


def test_probability_best_is_seeded_and_follows_the_missing_rule():
    rng = np.random.default_rng(3)
    per_dataset = [rng.normal(0.8, 0.05, size=(30, 3)) for _ in range(5)]
    first = probability_best_hierarchical(per_dataset, 300, seed=7)
    assert np.array_equal(first, probability_best_hierarchical(per_dataset, 300, seed=7))
    assert not np.array_equal(first, probability_best_hierarchical(per_dataset, 300, seed=8))
    assert first.sum() == pytest.approx(1.0)
    # model 0 failed on every dataset but one, where it is the only one that ran
    failed = [np.column_stack([np.full(30, np.nan), x[:, 1:]]) for x in per_dataset]
    failed[0] = np.column_stack([per_dataset[0][:, 0], np.full((30, 2), np.nan)])
    # (a dataset on which nobody ran is left out.) Model 0 ranks 1 on dataset 0 and last elsewhere: it has the
    # lowest mean rank exactly when dataset 0 is drawn at least 3 times out of 5, P = 0.058
    shares = probability_best_hierarchical(failed + [np.full((5, 3), np.nan)], 20000)
    assert shares[0] == pytest.approx(stats.binom.sf(2, 5, 0.2), abs=0.01)
    # a resample on which one model's metric is undefined is left out, not ranked last
    holes = [np.array([[0.9, 0.1], [np.nan, 0.95]])]
    assert probability_best_hierarchical(holes, 100) == pytest.approx([1, 0])
