"""bench.evaluate.delong against slow, independent implementations of DeLong, DeLong &
Clarke-Pearson (1988) and Obuchowski (1997), and the clustered estimator's properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from bench.evaluate.delong import auc_covariance, delong_test


def psi(x: float, y: float) -> float:
    """DeLong's kernel: 1 if the positive scores higher, 1/2 on a tie, else 0."""
    return 1.0 if x > y else 0.5 if x == y else 0.0


def placements(y, scores):
    """V10 (per positive) and V01 (per negative) of each model, pair by pair: O(m n k)."""
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    k = scores.shape[1]
    v10 = np.array([[sum(psi(scores[i, r], scores[j, r]) for j in neg) / len(neg) for r in range(k)] for i in pos])
    v01 = np.array([[sum(psi(scores[i, r], scores[j, r]) for i in pos) / len(pos) for r in range(k)] for j in neg])
    return pos, neg, v10, v01


def slow_delong(y, scores):
    """AUCs, S10 and S01 (DeLong et al. 1988, eqs. for the two-sample U-statistics)."""
    pos, neg, v10, v01 = placements(y, scores)
    m, n, k = len(pos), len(neg), scores.shape[1]
    theta = v10.mean(axis=0)
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = sum((v10[i, r] - theta[r]) * (v10[i, s] - theta[s]) for i in range(m)) / (m - 1)
            s01[r, s] = sum((v01[j, r] - theta[r]) * (v01[j, s] - theta[s]) for j in range(n)) / (n - 1)
    return theta, s10, s01, m, n


def slow_obuchowski(y, scores, groups):
    """AUCs and their covariance by Obuchowski (1997), cluster by cluster."""
    pos, neg, v10, v01 = placements(y, scores)
    big_m, big_n, k = len(pos), len(neg), scores.shape[1]
    theta = v10.mean(axis=0)
    clusters = sorted(set(groups))
    n_clusters = len(clusters)
    sums10 = {c: np.zeros(k) for c in clusters}
    sums01 = {c: np.zeros(k) for c in clusters}
    m_i = dict.fromkeys(clusters, 0)
    n_i = dict.fromkeys(clusters, 0)
    for a, i in enumerate(pos):
        sums10[groups[i]] += v10[a]
        m_i[groups[i]] += 1
    for b, j in enumerate(neg):
        sums01[groups[j]] += v01[b]
        n_i[groups[j]] += 1
    c = n_clusters / (n_clusters - 1)
    cov = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10 = c / big_m * sum((sums10[g][r] - m_i[g] * theta[r]) * (sums10[g][s] - m_i[g] * theta[s])
                                  for g in clusters)
            s01 = c / big_n * sum((sums01[g][r] - n_i[g] * theta[r]) * (sums01[g][s] - n_i[g] * theta[s])
                                  for g in clusters)
            s11_rs = c * sum((sums10[g][r] - m_i[g] * theta[r]) * (sums01[g][s] - n_i[g] * theta[s]) for g in clusters)
            s11_sr = c * sum((sums10[g][s] - m_i[g] * theta[s]) * (sums01[g][r] - n_i[g] * theta[r]) for g in clusters)
            cov[r, s] = s10 / big_m + s01 / big_n + (s11_rs + s11_sr) / (big_m * big_n)
    return theta, cov


def two_models(n: int, seed: int, p_pos: float = 0.4, decimals: int = 1):
    """Correlated scores of two models, rounded so that there are ties within and across classes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < p_pos).astype(int)
    y[:2], y[2:4] = 1, 0  # both classes at least twice
    latent = rng.normal(1.0 * y, 1.0)
    a = np.round(latent + rng.normal(0, 0.7, n), decimals)
    b = np.round(0.5 * latent + rng.normal(0, 1.0, n), decimals)
    return y, a, b


@pytest.mark.parametrize(("n", "seed", "p_pos"), [(30, 0, 0.5), (47, 1, 0.3), (64, 2, 0.7), (25, 3, 0.5)])
def test_delong_matches_the_slow_1988_computation(n, seed, p_pos):
    y, a, b = two_models(n, seed, p_pos)
    theta, s10, s01, m, n_neg = slow_delong(y, np.column_stack([a, b]))
    cov = s10 / m + s01 / n_neg
    contrast = np.array([1.0, -1.0])
    se = math.sqrt(contrast @ cov @ contrast)
    diff = theta[0] - theta[1]
    out = delong_test(y, a, b)
    assert (out.auc_a, out.auc_b) == pytest.approx((roc_auc_score(y, a), roc_auc_score(y, b)))
    assert (out.auc_a, out.auc_b) == pytest.approx(tuple(theta))
    assert out.diff == pytest.approx(diff)
    assert out.se == pytest.approx(se)
    assert out.z == pytest.approx(diff / se)
    assert out.p_value == pytest.approx(2 * norm.sf(abs(diff / se)))
    assert (out.ci_low, out.ci_high) == pytest.approx((diff - 1.959963984540054 * se, diff + 1.959963984540054 * se))
    assert (out.n_pos, out.n_neg, out.n_groups) == (m, n_neg, None)
    aucs, full = auc_covariance(y, np.column_stack([a, b, a + b]))  # three models at once
    _, s10_3, s01_3, _, _ = slow_delong(y, np.column_stack([a, b, a + b]))
    assert full == pytest.approx(s10_3 / m + s01_3 / n_neg)


@pytest.mark.parametrize(("n", "n_clusters", "seed"), [(40, 15, 0), (55, 30, 1), (36, 6, 2)])
def test_clustered_matches_the_slow_obuchowski_computation(n, n_clusters, seed):
    # clusters mixing positives and negatives, so the cross term S11 matters
    y, a, b = two_models(n, seed)
    rng = np.random.default_rng(seed + 10)
    groups = [f"c{g:02d}" for g in rng.integers(0, n_clusters, n)]
    scores = np.column_stack([a, b])
    theta, cov = slow_obuchowski(y, scores, groups)
    aucs, fast = auc_covariance(y, scores, groups)
    assert aucs == pytest.approx(theta)
    assert fast == pytest.approx(cov, rel=1e-10, abs=1e-15)
    out = delong_test(y, a, b, groups=groups)
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert out.se == pytest.approx(se)
    assert out.p_value == pytest.approx(2 * norm.sf(abs(theta[0] - theta[1]) / se))
    assert out.n_groups == len(set(groups))


def test_clustered_with_singleton_groups_is_delong_up_to_the_small_sample_factors():
    """Singletons: Obuchowski's estimate is DeLong's with I/(I-1) in place of m/(m-1) and
    n/(n-1); exactly so term by term, and the two standard errors differ by O(1/N)."""
    y, a, b = two_models(80, seed=4, p_pos=0.35)
    singletons = np.arange(80)
    plain = delong_test(y, a, b)
    clustered = delong_test(y, a, b, groups=singletons)
    assert (clustered.auc_a, clustered.auc_b, clustered.diff) == (plain.auc_a, plain.auc_b, plain.diff)
    _, s10, s01, m, n = slow_delong(y, np.column_stack([a, b]))
    contrast = np.array([1.0, -1.0])
    i = m + n
    expected_var = i / (i - 1) * ((m - 1) / m * (contrast @ s10 @ contrast) / m
                                  + (n - 1) / n * (contrast @ s01 @ contrast) / n)
    assert clustered.se**2 == pytest.approx(expected_var, rel=1e-10)
    assert clustered.se == pytest.approx(plain.se, rel=0.02)
    # balanced classes: a single factor 2(m-1)/(2m-1) on the whole variance
    yb, ab, bb = two_models(60, seed=5, p_pos=0.5)
    yb = np.arange(60) % 2
    m = 30
    ratio = delong_test(yb, ab, bb, groups=np.arange(60)).se ** 2 / delong_test(yb, ab, bb).se ** 2
    assert ratio == pytest.approx(2 * (m - 1) / (2 * m - 1), rel=1e-10)


def test_duplicating_every_image_in_a_group_of_two_changes_nothing_when_clustered():
    """Obuchowski on images each copied twice (the copies one cluster) equals Obuchowski on
    the de-duplicated images with singleton groups exactly, and so DeLong's on them up to
    the factors above; plain DeLong on the copies is about sqrt(2) too confident."""
    y, a, b = two_models(50, seed=6)
    twice = np.repeat(np.arange(50), 2)
    dup = delong_test(y[twice], a[twice], b[twice], groups=twice)
    dedup_clustered = delong_test(y, a, b, groups=np.arange(50))
    dedup_plain = delong_test(y, a, b)
    assert dup.diff == pytest.approx(dedup_plain.diff)
    assert dup.se == pytest.approx(dedup_clustered.se, rel=1e-10)
    assert dup.p_value == pytest.approx(dedup_clustered.p_value, rel=1e-8)
    assert dup.se == pytest.approx(dedup_plain.se, rel=0.03)
    naive = delong_test(y[twice], a[twice], b[twice])
    assert naive.se == pytest.approx(dedup_plain.se / math.sqrt(2), rel=0.03)


def test_clustered_test_keeps_its_size_with_copies_where_the_plain_one_does_not():
    """Null hypothesis true (two equally good models), 40 items with 1-4 copies each."""
    rng = np.random.default_rng(0)
    rejections = {"plain": 0, "clustered": 0}
    n_sets = 400
    for _ in range(n_sets):
        copies = rng.integers(1, 5, 40)
        item = np.repeat(np.arange(40), copies)
        y_item = np.arange(40) % 2
        latent = rng.normal(1.0 * y_item, 1.0)
        a, b = latent + rng.normal(0, 1, 40), latent + rng.normal(0, 1, 40)
        rejections["plain"] += delong_test(y_item[item], a[item], b[item]).p_value < 0.05
        rejections["clustered"] += delong_test(y_item[item], a[item], b[item], groups=item).p_value < 0.05
    rate = {k: v / n_sets for k, v in rejections.items()}
    assert rate["clustered"] <= 0.09 and rate["plain"] >= 0.15, rate


def test_degenerate_and_undefined_cases_without_warnings():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = delong_test(y, s, s)
        assert (same.diff, same.se, same.z, same.p_value, same.ci_low, same.ci_high) == (0, 0, 0, 1, 0, 0)
        perfect = delong_test(y, y + 0.1 * s, y + 0.2 * s)  # both AUC 1: no variance at all
        assert perfect.auc_a == perfect.auc_b == 1.0 and perfect.p_value == 1.0
        # monotone transforms give the same ranks: same AUC, zero variance, also clustered
        assert delong_test(y, s, s**2, groups=[0, 0, 1, 1, 2, 2]).p_value == 1.0
        one_positive = delong_test(np.array([0, 0, 1]), np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.1, 0.3]))
        assert one_positive.auc_a == 1.0 and all(math.isnan(v) for v in (one_positive.se, one_positive.p_value))
        no_positive = delong_test(np.zeros(4, dtype=int), s[:4], s[:4])
        assert math.isnan(no_positive.auc_a) and math.isnan(no_positive.p_value)
        one_group = delong_test(y, s, s[::-1], groups=["g"] * 6)
        assert math.isnan(one_group.se) and one_group.n_groups == 1
    # (N, 2) probability arrays use the positive column; as_dict for reports
    proba = np.column_stack([1 - s, s])
    assert delong_test(y, proba, s[::-1]).as_dict() == delong_test(y, s, s[::-1]).as_dict()
    with pytest.raises(ValueError, match="score_b"):
        delong_test(y, s, s[:5])
    with pytest.raises(ValueError, match="finite"):
        auc_covariance(y, np.where(y == 1, np.nan, s))
