"""bench.evaluate.paired: McNemar with one vote per duplicate group, the extended PairTest
(DeLong and Holm fields), and compare_pair / pairwise_tests with groups."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from bench.evaluate import paired
from bench.evaluate.delong import delong_test
from bench.evaluate.paired import (
    PairTest,
    compare_pair,
    mcnemar_counts,
    mcnemar_exact,
    paired_bootstrap_auc,
    pairwise_tests,
)

CLASSES = ["healthy", "tumour"]


# --------------------------------------------------------------------------- McNemar per group


def test_group_votes_by_hand():
    # group: images (A right?, B right?)             A vote   B vote   discordant
    # g1: (1,1) (1,0) (0,0)       A 2/3, B 1/3       right    wrong    only A
    # g2: (1,0) (0,0)             A 1/2, B 0/2       undecided wrong    neither (tie rule)
    # g3: (0,1)                   A 0/1, B 1/1       wrong    right    only B
    # g4: (1,1) (1,1) (1,0) (1,1) A 4/4, B 3/4       right    right    neither
    # g5: (0,1) (0,1)             A 0/2, B 2/2       wrong    right    only B
    # g6: (1,0) (0,1)             A 1/2, B 1/2       undecided both     neither
    groups = ["g1"] * 3 + ["g2"] * 2 + ["g3"] + ["g4"] * 4 + ["g5"] * 2 + ["g6"] * 2
    a = [1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0]
    b = [1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert mcnemar_counts(a, b) == (4, 4)  # per image
    assert mcnemar_counts(a, b, groups=groups) == (1, 2)
    assert mcnemar_exact(a, b, groups=groups) == pytest.approx(mcnemar(np.array([[1, 1], [2, 0]]), exact=True).pvalue)
    # the order of images and the spelling of ids do not matter
    order = np.random.default_rng(0).permutation(len(a))
    codes = {g: i for i, g in enumerate(sorted(set(groups)))}
    assert mcnemar_counts(np.array(a)[order], np.array(b)[order], groups=np.array([codes[g] for g in groups])[order]) \
        == (1, 2)


@pytest.mark.parametrize(("wins_a", "wins_b"), [(9, 1), (3, 3), (12, 2), (0, 6)])
def test_group_mcnemar_matches_statsmodels_on_group_votes(wins_a, wins_b):
    rng = np.random.default_rng(wins_a * 10 + wins_b)
    a, b, groups = [], [], []
    for g in range(wins_a + wins_b + 5):
        size = int(rng.integers(1, 5))
        if g < wins_a:  # A right on every copy, B wrong on every copy
            pa, pb = [1] * size, [0] * size
        elif g < wins_a + wins_b:
            pa, pb = [0] * size, [1] * size
        else:  # concordant groups: both right
            pa = pb = [1] * size
        a += pa
        b += pb
        groups += [f"g{g:03d}"] * size
    p = mcnemar_exact(a, b, groups=groups)
    assert p == pytest.approx(mcnemar(np.array([[5, wins_a], [wins_b, 0]]), exact=True).pvalue)


def test_singleton_groups_give_the_per_image_test():
    rng = np.random.default_rng(3)
    a, b = rng.random(60) < 0.7, rng.random(60) < 0.55
    assert mcnemar_exact(a, b, groups=[f"s{i}" for i in range(60)]) == mcnemar_exact(a, b)
    assert mcnemar_counts(a, b, groups=np.arange(60)) == mcnemar_counts(a, b)


def test_copies_do_not_count_as_independent_evidence():
    # 12 images only A gets right, all copies of one scan: per image p < 0.001, per group p = 1
    a = np.array([True] * 12 + [True] * 20)
    b = np.array([False] * 12 + [True] * 20)
    groups = ["dup"] * 12 + [f"s{i}" for i in range(20)]
    assert mcnemar_exact(a, b) < 0.001
    assert mcnemar_counts(a, b, groups=groups) == (1, 0)
    assert mcnemar_exact(a, b, groups=groups) == 1.0
    with pytest.raises(ValueError, match="one group id per image"):
        mcnemar_exact(a, b, groups=groups[:-1])


# --------------------------------------------------------------------------- PairTest and compare_pair


def _table(scores: np.ndarray, y: np.ndarray, threshold: float = 0.5, files=None) -> pd.DataFrame:
    files = files if files is not None else [f"f{i:03d}.png" for i in range(len(y))]
    return pd.DataFrame({"file": files, "label": [CLASSES[k] for k in y], f"prob_{CLASSES[0]}": 1 - scores,
                         f"prob_{CLASSES[1]}": scores, "correct": (scores >= threshold).astype(int) == y})


def _data(n_items: int = 40, seed: int = 0):
    """Binary test images with duplicates (1-3 copies; a model scores copies alike), three
    models of falling skill."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(n_items), rng.integers(1, 4, n_items))
    y_item = np.arange(n_items) % 2
    latent = rng.normal(y_item * 1.0, 1.0)
    models = {name: 1 / (1 + np.exp(-(skill * latent + rng.normal(0, 1, n_items))))[item]
              for name, skill in (("alpha", 2.0), ("beta", 1.0), ("gamma", 0.3))}
    y = y_item[item]
    files = [f"f{i:03d}.png" for i in range(len(y))]
    groups = {f: f"g{item[i]:03d}" for i, f in enumerate(files)}
    return y, models, files, groups


def test_pairtest_keeps_its_fields_and_flips_the_new_ones():
    old = PairTest("x", "y", 50, 12, 2, 0.013, 0.05, -0.01, 0.11, 0.12)
    assert (old.unit, old.delong_p, old.mcnemar_p_holm, old.n_groups) == ("image", None, None, None)
    t = dataclasses.replace(old, unit="group", n_groups=30, groups_only_a=7, groups_only_b=1, delong_se=0.02,
                            delong_z=2.5, delong_p=0.012, delong_ci_low=0.01, delong_ci_high=0.09,
                            mcnemar_p_holm=0.04, auc_p_holm=0.24, delong_p_holm=0.036)
    f = t.flipped()
    assert (f.a, f.b, f.only_a, f.only_b, f.groups_only_a, f.groups_only_b) == ("y", "x", 2, 12, 1, 7)
    assert (f.auc_diff, f.auc_ci_low, f.auc_ci_high) == (-0.05, -0.11, 0.01)
    assert (f.delong_z, f.delong_ci_low, f.delong_ci_high, f.delong_se) == (-2.5, -0.09, -0.01, 0.02)
    assert (f.delong_p, f.mcnemar_p_holm, f.auc_p_holm, f.delong_p_holm, f.unit) == (0.012, 0.04, 0.24, 0.036, "group")
    assert f.flipped() == t
    assert t.delong_significant and not old.delong_significant


def test_compare_pair_without_groups_adds_delong_on_images():
    y, models, files, _ = _data(seed=1)
    t = compare_pair("alpha", "beta", _table(models["alpha"], y), _table(models["beta"], y), CLASSES, n_resamples=200)
    d = delong_test(y, models["alpha"], models["beta"])
    assert (t.delong_se, t.delong_z, t.delong_p, t.delong_ci_low, t.delong_ci_high) == (
        d.se, d.z, d.p_value, d.ci_low, d.ci_high)
    assert t.auc_diff == pytest.approx(d.diff)
    assert t.unit == "image" and t.n_groups is None and t.groups_only_a is None
    assert t.mcnemar_p_holm is None  # Holm needs the family: pairwise_tests


def test_compare_pair_with_groups_uses_groups_everywhere():
    y, models, files, groups = _data(seed=2)
    ta, tb = _table(models["alpha"], y), _table(models["gamma"], y)
    shuffled = tb.sample(frac=1.0, random_state=0)  # rows joined by file, not order
    t = compare_pair("alpha", "gamma", ta, shuffled, CLASSES, n_resamples=300, seed=4, groups=groups)
    ids = np.array([groups[f] for f in files])
    correct_a, correct_b = ta["correct"].to_numpy(), tb["correct"].to_numpy()
    assert t.unit == "group" and t.n_groups == 40 and t.n == len(y)
    assert (t.only_a, t.only_b) == mcnemar_counts(correct_a, correct_b)  # images, as before
    assert (t.groups_only_a, t.groups_only_b) == mcnemar_counts(correct_a, correct_b, groups=ids)
    assert t.mcnemar_p == mcnemar_exact(correct_a, correct_b, groups=ids)
    boot = paired_bootstrap_auc(y, models["alpha"], models["gamma"], n_resamples=300, seed=4, groups=ids)
    assert (t.auc_diff, t.auc_ci_low, t.auc_ci_high, t.auc_p) == pytest.approx(
        (boot["diff"], boot["ci_low"], boot["ci_high"], boot["p_value"]))
    d = delong_test(y, models["alpha"], models["gamma"], groups=ids)
    assert (t.delong_se, t.delong_p) == pytest.approx((d.se, d.p_value))
    plain = compare_pair("alpha", "gamma", ta, tb, CLASSES, n_resamples=300, seed=4)
    assert t.delong_se > plain.delong_se  # copies are not extra evidence
    # a pandas Series works too; a missing file is an error
    series = pd.Series(groups)
    assert compare_pair("alpha", "gamma", ta, tb, CLASSES, n_resamples=300, seed=4, groups=series) == t
    with pytest.raises(ValueError, match="duplicate group for every compared image"):
        compare_pair("alpha", "gamma", ta, tb, CLASSES, n_resamples=50, groups=dict(list(groups.items())[1:]))


def test_pairwise_tests_fill_holm_adjusted_p_values_over_all_pairs():
    y, models, files, groups = _data(seed=3)
    tables = {name: _table(s, y) for name, s in models.items()}
    for g in (None, groups):
        tests = pairwise_tests(tables, CLASSES, n_resamples=200, groups=g)
        assert [(t.a, t.b) for t in tests] == [("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma")]
        for field in ("mcnemar_p", "auc_p", "delong_p"):
            raw = [getattr(t, field) for t in tests]
            expected = multipletests(raw, method="holm")[1]
            assert [getattr(t, f"{field}_holm") for t in tests] == pytest.approx(list(expected)), field
            assert all(getattr(t, f"{field}_holm") >= getattr(t, field) for t in tests)
        assert all(t.unit == ("image" if g is None else "group") for t in tests)
    # one pair: nothing to adjust
    single = pairwise_tests({"alpha": tables["alpha"], "beta": tables["beta"]}, CLASSES, n_resamples=50)[0]
    assert single.mcnemar_p_holm == single.mcnemar_p and single.delong_p_holm == single.delong_p


def test_pairwise_tests_multiclass_has_no_auc_tests():
    rng = np.random.default_rng(5)
    classes = ["a", "b", "c"]
    y = np.arange(30) % 3

    def table(skill):
        logits = skill * np.eye(3)[y] + rng.normal(0, 1, (30, 3))
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        frame = pd.DataFrame({"file": [f"f{i}" for i in range(30)], "label": [classes[k] for k in y]})
        for j, c in enumerate(classes):
            frame[f"prob_{c}"] = proba[:, j]
        frame["correct"] = proba.argmax(axis=1) == y
        return frame

    tests = pairwise_tests({"m1": table(3.0), "m2": table(1.0), "m3": table(0.2)}, classes)
    raw = [t.mcnemar_p for t in tests]
    assert [t.mcnemar_p_holm for t in tests] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    for t in tests:
        assert t.auc_p is None and t.delong_p is None and t.auc_p_holm is None and t.delong_p_holm is None


def test_nan_p_values_pass_through_holm_in_pairwise_tests(monkeypatch):
    y, models, files, _ = _data(seed=6)
    tables = {name: _table(s, y) for name, s in models.items()}
    real = paired.delong_test

    def undefined_for_gamma(y_true, a, b, groups=None):
        out = real(y_true, a, b, groups=groups)
        if np.array_equal(b, models["gamma"]):
            return dataclasses.replace(out, p_value=float("nan"))
        return out

    monkeypatch.setattr(paired, "delong_test", undefined_for_gamma)
    tests = pairwise_tests(tables, CLASSES, n_resamples=50)
    ab, ag, bg = tests
    assert math.isnan(ag.delong_p_holm) and math.isnan(bg.delong_p_holm)
    assert ab.delong_p_holm == pytest.approx(ab.delong_p)  # adjusted among the one defined p-value


def test_each_model_is_resampled_once_across_its_pairs_with_the_same_results(monkeypatch):
    """Every pair draws the same resamples, so a model's resampled AUCs are computed once
    for all its pairs; the differences are those of resampling each pair on its own."""
    from bench.evaluate import paired
    from bench.evaluate.resampling import Ranked, group_codes, resample_weights

    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 80)
    models = {name: np.clip(0.5 + shift * (y - 0.5) + rng.normal(0, 0.3, 80), 0, 1)
              for name, shift in (("a", 0.6), ("b", 0.3), ("c", 0.1))}
    groups = np.repeat(np.arange(40), 2)
    paired._RESAMPLED.clear()
    drawn = []
    monkeypatch.setattr(paired, "resample_weights", lambda *a, **k: drawn.append(1) or resample_weights(*a, **k))
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    results = {p: paired.paired_bootstrap_auc(y, models[p[0]], models[p[1]], n_resamples=400, seed=3, groups=groups)
               for p in pairs}
    assert len(drawn) == 3  # one resampling per model, not one per model and pair
    codes = group_codes(groups, 80)
    for first, second in pairs:  # each pair on its own, chunk by chunk
        ra, rb = (Ranked.build(models[m], y == 1) for m in (first, second))
        diffs = np.concatenate([ra.auc(w) - rb.auc(w) for w in resample_weights(np.random.default_rng(3), 80, 400, codes)])
        diffs = diffs[~np.isnan(diffs)]
        low, high = np.percentile(diffs, [2.5, 97.5])
        out = results[(first, second)]
        assert out["ci_low"] == pytest.approx(low) and out["ci_high"] == pytest.approx(high)
        assert out["p_value"] == pytest.approx(min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))))
    assert results[("a", "c")]["diff"] > 0.1  # a clear difference: not comparing constants
