"""bench.evaluate.metrics: agreement with scikit-learn / statsmodels, the threshold rule, bootstrap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from bench.evaluate import metrics as bm
from bench.evaluate.metrics import (
    METRICS,
    bootstrap_ci,
    choose_threshold,
    classification_metrics,
    evaluate,
)
from bench.evaluate.paired import mcnemar_exact, paired_bootstrap_auc

BINARY = ["normal", "tumor"]
THREE = ["glioma", "meningioma", "pituitary"]


def binary_data(n: int, seed: int = 0, signal: float = 0.35):
    """Labels and (n, 2) probabilities with some signal, a few tied scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(signal * y + rng.uniform(0.0, 1.0 - signal, n), 0.0, 1.0).round(2)
    return y, np.column_stack([1.0 - p1, p1])


def three_class_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    rng.shuffle(y)
    logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


# --------------------------------------------------------------------------- point metrics


@pytest.mark.parametrize("threshold", [None, 0.3, 0.62])
def test_binary_metrics_agree_with_sklearn(threshold):
    y, proba = binary_data(60, seed=3)
    m = classification_metrics(y, proba, BINARY, threshold=threshold)
    t = 0.5 if threshold is None else threshold
    pred = (proba[:, 1] >= t).astype(int)
    assert m["threshold"] == t
    assert m["positive_class"] == "tumor"
    assert m["n"] == 60
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, proba[:, 1]))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]))


def test_three_class_metrics_agree_with_sklearn():
    y, proba = three_class_data(45, seed=4)
    m = classification_metrics(y, proba, THREE)
    pred = proba.argmax(axis=1)
    assert m["threshold"] is None and m["positive_class"] is None
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    onehot = np.eye(3)[y]
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, proba, average="macro"))
    # multi-class Brier: mean over images of sum_k (p_k - onehot_k)^2
    assert m["brier"] == pytest.approx(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba, labels=[0, 1, 2]))


def test_specificity_from_hand_counted_confusion_matrix():
    # true:  0 0 0 0 0 1 1 1      p1 >= 0.5 -> pred: 0 0 0 1 1 1 1 0
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.4])
    m = classification_metrics(y, np.column_stack([1 - p1, p1]), BINARY)
    assert m["confusion_matrix"] == [[3, 2], [1, 2]]  # TN FP / FN TP
    assert m["specificity"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 4)


def test_multiclass_specificity_is_macro_one_vs_rest():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    proba = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = classification_metrics(y, proba, THREE)
    # class 0: FP=1 of 4 negatives; class 1: FP=1 of 4; class 2: FP=0 of 4
    assert m["specificity"] == pytest.approx(np.mean([3 / 4, 3 / 4, 4 / 4]))


def test_undefined_metrics_are_nan_not_errors():
    y = np.zeros(5, dtype=int)
    p1 = np.array([0.1, 0.4, 0.6, 0.2, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warnings either
        m = classification_metrics(y, np.column_stack([1 - p1, p1]), BINARY)
    for name in ("roc_auc", "pr_auc", "recall", "f1", "balanced_accuracy"):
        assert math.isnan(m[name]), name
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["precision"] == 0.0  # zero_division=0: TP = 0 with one predicted positive
    assert m["accuracy"] == pytest.approx(4 / 5)

    # a class missing from a 3-class test set: macro AUC undefined
    y3, proba3 = three_class_data(12)
    keep = y3 != 2
    m3 = classification_metrics(y3[keep], proba3[keep], THREE)
    assert math.isnan(m3["roc_auc"]) and math.isnan(m3["recall"])
    assert not math.isnan(m3["accuracy"])


def test_bad_input_names_the_problem():
    y, proba = binary_data(10)
    with pytest.raises(ValueError, match=r"Expected proba of shape \(N, 3\)"):
        classification_metrics(y, proba, THREE)
    with pytest.raises(ValueError, match="Expected y_true values in 0..1"):
        classification_metrics(y + 1, proba, BINARY)
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(y, proba * 5, BINARY)
    y3, proba3 = three_class_data(9)
    with pytest.raises(ValueError, match="threshold=None"):
        classification_metrics(y3, proba3, THREE, threshold=0.4)


# --------------------------------------------------------------------------- threshold


def test_threshold_maximises_youden_j():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.10, 0.20, 0.35, 0.30, 0.40, 0.45, 0.90])
    # at 0.5: sens 1/4, spec 1 -> J 0.25; at 0.40: sens 3/4, spec 1 -> J 0.75 (the maximum)
    t = choose_threshold(y, p)
    assert t == pytest.approx(0.40)
    pred = (p >= t).astype(int)
    j = skm.recall_score(y, pred) + skm.recall_score(y, pred, pos_label=0) - 1
    assert j == pytest.approx(0.75)


def test_threshold_ties_go_to_closest_to_half():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    # every threshold in (0.2, 0.8] separates perfectly; 0.5 itself is a candidate
    assert choose_threshold(y, p) == 0.5
    p2 = np.array([0.1, 0.2, 0.3, 0.9])
    # perfect at 0.3 only (0.5 misses a positive)
    assert choose_threshold(y, p2) == pytest.approx(0.3)


def test_threshold_falls_back_to_half_with_one_class():
    assert choose_threshold(np.ones(6, dtype=int), np.linspace(0.1, 0.9, 6)) == 0.5
    assert choose_threshold(np.zeros(3, dtype=int), np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])) == 0.5


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    small_y, small_p = binary_data(40, seed=1)
    large_y, large_p = binary_data(800, seed=1)
    small = bootstrap_ci(small_y, small_p, BINARY, n_resamples=500)
    large = bootstrap_ci(large_y, large_p, BINARY, n_resamples=500)
    point = classification_metrics(small_y, small_p, BINARY)
    for name in ("accuracy", "f1", "roc_auc"):
        low, high = small[name]
        assert low <= point[name] <= high, name
        assert large[name][1] - large[name][0] < 0.6 * (high - low), name


def test_bootstrap_is_seeded():
    y, proba = binary_data(40, seed=2)
    a = bootstrap_ci(y, proba, BINARY, n_resamples=300, seed=7)
    assert bootstrap_ci(y, proba, BINARY, n_resamples=300, seed=7) == a
    assert bootstrap_ci(y, proba, BINARY, n_resamples=300, seed=8) != a


def test_bootstrap_resamples_match_direct_recomputation():
    """The vectorised count-weighted metrics equal metrics of the resampled arrays."""
    rng = np.random.default_rng(5)
    for y, proba, classes, threshold in [
        (*binary_data(30, seed=5), BINARY, 0.42),
        (*three_class_data(30, seed=5), THREE, None),
    ]:
        idx = rng.integers(0, len(y), size=(25, len(y)))
        weights = np.stack([np.bincount(row, minlength=len(y)) for row in idx]).astype(float)
        data = bm._Data.build(y, proba, classes, threshold)
        batch = data.metrics(weights, METRICS)
        for b, row in enumerate(idx):
            direct = classification_metrics(y[row], proba[row], classes, threshold)
            for name in METRICS:
                assert batch[name][b] == pytest.approx(direct[name], nan_ok=True), name


def test_bootstrap_drops_undefined_resamples():
    # one positive in 30: many resamples lack it, their AUC is dropped, not an error
    y = np.zeros(30, dtype=int)
    y[0] = 1
    p1 = np.linspace(0.05, 0.95, 30)[::-1]
    ci = bootstrap_ci(y, np.column_stack([1 - p1, p1]), BINARY, n_resamples=200)
    assert ci["roc_auc"] == (1.0, 1.0)
    only_negatives = bootstrap_ci(np.zeros(8, dtype=int), np.full((8, 2), 0.5), BINARY, n_resamples=50)
    assert all(math.isnan(v) for v in only_negatives["roc_auc"])


def test_evaluate_flat_row():
    y, proba = binary_data(40, seed=6)
    y_val, proba_val = binary_data(40, seed=7)
    t = choose_threshold(y_val, proba_val[:, 1])
    row = evaluate(y, proba, BINARY, threshold=t, n_resamples=200)
    assert row["threshold"] == t
    for name in ("accuracy", "f1", "roc_auc"):
        assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"]
    assert row["ci_level"] == 0.95 and row["ci_resamples"] == 200
    assert set(METRICS) <= set(row)
    assert all(not isinstance(v, (dict, np.ndarray)) for v in row.values())


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize("table", [[[10, 5], [1, 20]], [[30, 0], [0, 4]], [[3, 7], [8, 2]], [[0, 12], [2, 0]]])
def test_mcnemar_matches_statsmodels(table):
    from statsmodels.stats.contingency_tables import mcnemar

    (both, a_only), (b_only, neither) = table
    correct_a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    correct_b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    expected = mcnemar(np.array(table), exact=True).pvalue
    assert mcnemar_exact(correct_a, correct_b) == pytest.approx(expected)


def test_mcnemar_without_discordant_pairs_is_one():
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same) == 1.0


def test_paired_bootstrap_identical_models():
    y, proba = binary_data(40, seed=8)
    out = paired_bootstrap_auc(y, proba, proba, n_resamples=500)
    assert out == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_detects_a_better_model():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 80)
    good = np.clip(0.6 * y + rng.uniform(0, 0.4, 80), 0, 1)
    weak = np.clip(0.1 * y + rng.uniform(0, 0.9, 80), 0, 1)
    out = paired_bootstrap_auc(y, good, weak, n_resamples=1000)
    assert out["diff"] == pytest.approx(skm.roc_auc_score(y, good) - skm.roc_auc_score(y, weak))
    assert out["ci_low"] > 0 and out["p_value"] < 0.05
    reverse = paired_bootstrap_auc(y, weak, good, n_resamples=1000)
    assert reverse["diff"] == pytest.approx(-out["diff"]) and reverse["p_value"] < 0.05
