"""The duplicate-group (cluster) bootstrap of bench.evaluate.metrics: weights, agreement
with explicit resampling, the per-image draws unchanged, and coverage with copies."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from bench.evaluate import resampling
from bench.evaluate.metrics import bootstrap_ci, evaluate
from bench.evaluate.paired import paired_bootstrap_auc

BINARY = ["normal", "tumor"]


def duplicated(n_items: int, seed: int, signal: float = 1.2):
    """``n_items`` distinct images, each copied 1-4 times (copies share label and scores)."""
    rng = np.random.default_rng(seed)
    copies = rng.integers(1, 5, n_items)
    item = np.repeat(np.arange(n_items), copies)
    y_item = np.arange(n_items) % 2
    score_item = norm.cdf(rng.normal(signal * y_item, 1.0) / 2)
    groups = np.array([f"g{i:04d}" for i in item])
    return y_item[item], score_item[item], groups, item


def test_group_weights_draw_whole_groups():
    codes = np.array([0, 0, 1, 2, 2, 2, 3])
    rng = np.random.default_rng(4)
    (weights,) = list(resampling.resample_weights(rng, 7, 300, codes))
    assert weights.shape == (300, 7)
    for g in range(4):
        members = weights[:, codes == g]
        assert np.all(members == members[:, :1])  # copies always drawn together
    per_group = weights[:, [0, 2, 3, 6]]
    assert np.all(per_group.sum(axis=1) == 4)  # G = 4 groups drawn per resample
    # the counts are those of drawing G group indices with replacement from the same generator
    idx = np.random.default_rng(4).integers(0, 4, size=(300, 4))
    assert np.array_equal(per_group, np.stack([np.bincount(r, minlength=4) for r in idx]).astype(float))


def test_group_weights_across_chunks(monkeypatch):
    monkeypatch.setattr(resampling, "_CHUNK_CELLS", 50)  # 7 images -> chunks of 7 resamples
    codes = np.array([1, 1, 0, 2, 2, 0, 3])
    chunks = list(resampling.resample_weights(np.random.default_rng(0), 7, 30, codes))
    assert [len(c) for c in chunks] == [7, 7, 7, 7, 2]
    weights = np.concatenate(chunks)
    assert np.all(weights[:, [0, 2, 3, 6]].sum(axis=1) == 4)
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 2] == weights[:, 5])


def test_singleton_groups_reproduce_the_per_image_bootstrap_exactly():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 70)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 70), 0, 1)
    proba = np.column_stack([1 - p1, p1])
    singletons = [f"img{i:03d}" for i in range(70)]  # sorted ids in image order: codes 0..69
    per_image = bootstrap_ci(y, proba, BINARY, n_resamples=400, seed=9)
    per_group = bootstrap_ci(y, proba, BINARY, n_resamples=400, seed=9, groups=singletons)
    # the same draws; sums may round differently in the last bit (BLAS on another array)
    assert per_group.keys() == per_image.keys()
    for name in per_image:
        assert per_group[name] == pytest.approx(per_image[name], rel=1e-12, abs=1e-15), name
    scores_b = np.random.default_rng(3).random(70)
    assert paired_bootstrap_auc(y, p1, scores_b, n_resamples=300, seed=2) == pytest.approx(paired_bootstrap_auc(
        y, p1, scores_b, n_resamples=300, seed=2, groups=singletons
    ), rel=1e-12)
    # shuffled singleton ids draw different images: not the same numbers
    shuffled = list(np.random.default_rng(0).permutation(singletons))
    assert bootstrap_ci(y, proba, BINARY, n_resamples=400, seed=9, groups=shuffled)["brier"] != per_image["brier"]


def test_group_bootstrap_matches_explicit_group_resampling():
    y, p1, groups, item = duplicated(30, seed=5)
    proba = np.column_stack([1 - p1, p1])
    ci = bootstrap_ci(y, proba, BINARY, threshold=0.5, n_resamples=200, seed=6, groups=groups,
                      metrics=("accuracy", "roc_auc", "brier"))
    members = [np.flatnonzero(item == g) for g in range(30)]
    draws = np.random.default_rng(6).integers(0, 30, size=(200, 30))
    acc, auc, brier = [], [], []
    for row in draws:
        idx = np.concatenate([members[g] for g in row])
        pred = (p1[idx] >= 0.5).astype(int)
        acc.append(skm.accuracy_score(y[idx], pred))
        brier.append(skm.brier_score_loss(y[idx], p1[idx]))
        if len(set(y[idx].tolist())) == 2:
            auc.append(skm.roc_auc_score(y[idx], p1[idx]))
    for name, values in (("accuracy", acc), ("roc_auc", auc), ("brier", brier)):
        assert ci[name] == pytest.approx(tuple(np.percentile(values, [2.5, 97.5]))), name


def test_group_bootstrap_covers_near_95_percent_where_the_per_image_one_undercovers():
    """40 distinct items, each copied 1-4 times: 300 simulated test sets.

    The true accuracy is 0.8 (each item is right with probability 0.8, its copies with
    it) and the true AUC is Phi(1.2 / sqrt 2) (scores of the two classes normal, one
    apart by 1.2). Treating copies as independent images undercounts the variance by
    about E[m^2] / E[m] = 3 (m = copies), so the per-image intervals are far too narrow.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(2024)
    true_acc, true_auc = 0.8, norm.cdf(1.2 / np.sqrt(2))
    hits = {"image": np.zeros(2), "group": np.zeros(2)}
    n_sets = 300
    for s in range(n_sets):
        y, p1, groups, item = duplicated(40, seed=int(rng.integers(2**31)))
        right = (rng.random(40) < true_acc)[item]
        p_acc = np.where(right, y, 1 - y).astype(float)  # exactly right or wrong at 0.5
        for unit, g in (("image", None), ("group", groups)):
            acc = bootstrap_ci(y, np.column_stack([1 - p_acc, p_acc]), BINARY, n_resamples=500, seed=s,
                               metrics=("accuracy",), groups=g)["accuracy"]
            auc = bootstrap_ci(y, np.column_stack([1 - p1, p1]), BINARY, n_resamples=500, seed=s,
                               metrics=("roc_auc",), groups=g)["roc_auc"]
            hits[unit] += [acc[0] <= true_acc <= acc[1], auc[0] <= true_auc <= auc[1]]
    coverage = {unit: h / n_sets for unit, h in hits.items()}
    assert 0.90 <= coverage["group"][0] <= 0.99, coverage
    assert coverage["image"][0] < 0.85, coverage
    # percentile AUC intervals from 40 items undercover a little even when done right
    assert coverage["group"][1] >= 0.88 and coverage["image"][1] < 0.80, coverage
    assert time.perf_counter() - start < 60


def test_evaluate_with_groups_states_the_unit_and_is_wider_with_copies():
    y, p1, groups, _ = duplicated(40, seed=8)
    proba = np.column_stack([1 - p1, p1])
    per_image = evaluate(y, proba, BINARY, n_resamples=1000, seed=1)
    per_group = evaluate(y, proba, BINARY, n_resamples=1000, seed=1, groups=groups)
    assert per_group["ci_unit"] == "group" and per_group["ci_groups"] == 40
    assert per_image["ci_unit"] == "image" and per_image["ci_groups"] is None
    for name in ("accuracy", "roc_auc", "brier"):
        assert per_group[name] == per_image[name]  # point estimates do not depend on groups
        width = per_group[f"{name}_ci_high"] - per_group[f"{name}_ci_low"]
        assert width > 1.2 * (per_image[f"{name}_ci_high"] - per_image[f"{name}_ci_low"]), name


def test_group_ids_are_checked():
    y, p1, groups, _ = duplicated(10, seed=0)
    proba = np.column_stack([1 - p1, p1])
    with pytest.raises(ValueError, match="one group id per image"):
        bootstrap_ci(y, proba, BINARY, n_resamples=10, groups=groups[:-1])
    missing = groups.astype(object)
    missing[3] = None
    with pytest.raises(ValueError, match="missing ids"):
        bootstrap_ci(y, proba, BINARY, n_resamples=10, groups=missing)
    with pytest.raises(ValueError, match="missing ids"):
        bootstrap_ci(y, proba, BINARY, n_resamples=10, groups=np.where(np.arange(len(y)) == 2, np.nan, 1.0))
    import pandas as pd

    with pytest.raises(ValueError, match="missing ids"):  # e.g. a group column read with a gap
        bootstrap_ci(y, proba, BINARY, n_resamples=10, groups=pd.Series(groups, dtype="string").mask(y == 1))
    # integer ids work as well as strings
    codes = np.unique(groups, return_inverse=True)[1]
    assert bootstrap_ci(y, proba, BINARY, n_resamples=50, groups=codes) == bootstrap_ci(
        y, proba, BINARY, n_resamples=50, groups=groups
    )
