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


def test_threshold_maximises_youden_j_at_the_midpoint_of_the_best_cut():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.10, 0.20, 0.35, 0.30, 0.40, 0.45, 0.90])
    # distinct scores, with labels:  .05n .10n .20n | .30p | .35n | .40p .45p .90p
    # cut (.20, .30]: sens 4/4, spec 3/4 -> J 0.75;  cut (.35, .40]: sens 3/4, spec 4/4 -> J 0.75
    # cut (.30, .35]: sens 3/4, spec 3/4 -> J 0.50;  every other cut is lower.
    # Tie: midpoints 0.25 and 0.375; 0.375 is closer to 0.5.
    t = choose_threshold(y, p)
    assert t == pytest.approx(0.375)
    pred = (p >= t).astype(int)
    j = skm.recall_score(y, pred) + skm.recall_score(y, pred, pos_label=0) - 1
    assert j == pytest.approx(0.75)
    # the same J from scikit-learn's ROC curve: the best cut's J is the maximum of tpr - fpr
    fpr, tpr, _ = skm.roc_curve(y, p)
    assert j == pytest.approx(np.max(tpr - fpr))


def test_threshold_is_the_midpoint_not_a_validation_score():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    # one best cut, (0.2, 0.8]: its midpoint is 0.5
    assert choose_threshold(y, p) == pytest.approx(0.5)
    p2 = np.array([0.1, 0.2, 0.3, 0.9])
    # perfect only for cut (0.2, 0.3]: midpoint 0.25 (not the score 0.3 itself)
    assert choose_threshold(y, p2) == pytest.approx(0.25)
    # a unique best cut far from 0.5 wins over a worse one near 0.5
    y3 = np.array([0, 0, 0, 1, 1, 1])
    p3 = np.array([0.01, 0.02, 0.45, 0.03, 0.04, 0.55])
    # cuts: (.02,.03] sens 1 spec 2/3 -> J 2/3; (.45,.55] sens 1/3 spec 1 -> J 1/3
    assert choose_threshold(y3, p3) == pytest.approx(0.025)


def test_threshold_ties_go_to_the_midpoint_closest_to_half_then_the_lower():
    # scores .1n .2p .3n .4p .6n .7p (a zig-zag): cuts (.1,.2], (.3,.4] and (.6,.7] all have
    # J = 1/3 and the other cuts J = 0. Midpoints .15, .35, .65: .35 and .65 are equally
    # close to 0.5 (in floating point .65 comes out a hair closer), the lower one wins.
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7])
    assert choose_threshold(y, p) == pytest.approx(0.35)
    assert choose_threshold(y[::-1], p[::-1]) == pytest.approx(0.35)  # order does not matter
    # two best cuts, one clearly closer: .1n .2p .3n .45p .55n .9p -> cuts (.1,.2], (.3,.45],
    # (.55,.9] with J = 1/3; midpoints .15, .375, .725: .375 is closest
    p2 = np.array([0.1, 0.2, 0.3, 0.45, 0.55, 0.9])
    assert choose_threshold(y, p2) == pytest.approx(0.375)
    # adjacent floats: the midpoint would round onto the lower score; the upper is returned
    lo = 0.3
    hi = np.nextafter(lo, 1.0)
    t = choose_threshold(np.array([0, 1]), np.array([lo, hi]))
    assert lo < t <= hi


def test_threshold_falls_back_to_half_without_an_informative_cut():
    # best J <= 0: the scores rank the classes backwards
    assert choose_threshold(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.5
    # one distinct score only
    assert choose_threshold(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == 0.5


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


# --------------------------------------------------------------------------- more intervals


def _direct_intervals(y, proba, classes, threshold, idx, level=0.95):
    """Percentile intervals of scikit-learn metrics on explicitly resampled arrays."""
    k = len(classes)
    values: dict[str, list[float]] = {name: [] for name in bm.CI_METRICS}
    for row in idx:
        yy, pp = y[row], proba[row]
        pred = (pp[:, 1] >= threshold).astype(int) if k == 2 else pp.argmax(axis=1)
        every_class = len(set(yy.tolist())) == k
        avg = "binary" if k == 2 else "macro"
        labels = list(range(k))
        values["accuracy"].append(skm.accuracy_score(yy, pred))
        values["brier"].append(skm.brier_score_loss(yy, pp[:, 1]) if k == 2 else
                               np.mean(np.sum((pp - np.eye(k)[yy]) ** 2, axis=1)))
        cm = skm.confusion_matrix(yy, pred, labels=labels)
        tn = cm.sum() - cm.sum(axis=0) - cm.sum(axis=1) + np.diag(cm)
        spec = tn / (tn + cm.sum(axis=0) - np.diag(cm))
        values["specificity"].append(spec[1] if k == 2 else spec.mean())
        values["precision"].append(skm.precision_score(yy, pred, average=avg, labels=labels, zero_division=0))
        if not every_class:
            continue  # recall, F1, AUCs, balanced accuracy undefined: dropped by bootstrap_ci
        values["balanced_accuracy"].append(skm.balanced_accuracy_score(yy, pred))
        values["recall"].append(skm.recall_score(yy, pred, average=avg, labels=labels))
        values["f1"].append(skm.f1_score(yy, pred, average=avg, labels=labels))
        if k == 2:
            values["roc_auc"].append(skm.roc_auc_score(yy, pp[:, 1]))
            values["pr_auc"].append(skm.average_precision_score(yy, pp[:, 1]))
        else:
            values["roc_auc"].append(skm.roc_auc_score(yy, pp, multi_class="ovr", average="macro", labels=labels))
            values["pr_auc"].append(skm.average_precision_score(np.eye(k)[yy], pp, average="macro"))
    tail = 100 * (1 - level) / 2
    return {name: tuple(np.percentile(v, [tail, 100 - tail])) for name, v in values.items()}


@pytest.mark.parametrize("kind", ["binary", "three"])
def test_every_ci_metric_matches_sklearn_on_the_same_resamples(kind):
    if kind == "binary":
        (y, proba), classes, threshold = binary_data(50, seed=11), BINARY, 0.45
    else:
        (y, proba), classes, threshold = three_class_data(45, seed=12), THREE, None
    assert set(bm.CI_METRICS) == {"accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1",
                                  "roc_auc", "pr_auc", "brier"}
    ci = bootstrap_ci(y, proba, classes, threshold=threshold, n_resamples=150, seed=3)
    # one chunk of resamples: the same index matrix numpy draws from default_rng(3)
    idx = np.random.default_rng(3).integers(0, len(y), size=(150, len(y)))
    expected = _direct_intervals(y, proba, classes, 0.45 if threshold is None else threshold, idx)
    for name in bm.CI_METRICS:
        assert ci[name] == pytest.approx(expected[name]), name


@pytest.mark.parametrize("kind", ["binary", "three"])
def test_evaluate_gives_intervals_for_every_ci_metric(kind):
    y, proba = binary_data(80, seed=13) if kind == "binary" else three_class_data(81, seed=13)
    classes = BINARY if kind == "binary" else THREE
    row = evaluate(y, proba, classes, n_resamples=300)
    for name in bm.CI_METRICS:
        low, high = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
        assert low <= row[name] <= high, name
        assert low < high, name
    assert row["ci_unit"] == "image" and row["ci_groups"] is None
    # without a prevalence the skill score and its interval are present but undefined
    assert all(math.isnan(row[k]) for k in ("brier_skill", "brier_skill_ci_low", "brier_skill_ci_high"))


# --------------------------------------------------------------------------- Brier skill score


def test_brier_skill_score_binary_by_hand():
    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.2, 0.7, 0.9, 0.4])
    # Brier = (0.04 + 0.09 + 0.01 + 0.16) / 4 = 0.075
    # always 0.4: (0.16 + 0.36 + 0.36 + 0.16) / 4 = 0.26;  1 - 0.075 / 0.26 = 37 / 52
    proba = np.column_stack([1 - p1, p1])
    assert bm.brier_skill_score(y, proba, [0.6, 0.4]) == pytest.approx(37 / 52)
    assert bm.brier_skill_score(y, proba, 0.4) == pytest.approx(37 / 52)  # positive-class share
    assert bm.brier_skill_score(y, p1, 0.4) == pytest.approx(37 / 52)  # (N,) positive column
    # forecasting the prevalence itself has no skill; a perfect forecast has skill 1
    assert bm.brier_skill_score(y, np.full(4, 0.4), 0.4) == pytest.approx(0.0)
    assert bm.brier_skill_score(y, y.astype(float), 0.4) == pytest.approx(1.0)
    # worse than the prevalence: negative
    assert bm.brier_skill_score(y, 1.0 - y.astype(float), 0.4) < 0


def test_brier_skill_score_three_classes_by_hand():
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    # Brier per image: 0.14, 0.06, 0.24, 0.54 -> 0.245
    # prevalence (.5, .25, .25): y=0 -> 0.375, y=1 or 2 -> 0.875 -> mean 0.75
    assert bm.brier_skill_score(y, proba, [0.5, 0.25, 0.25]) == pytest.approx(1 - 0.245 / 0.75)
    assert bm.brier_skill_score(y, proba, [0.5, 0.25, 0.25]) == pytest.approx(101 / 150)


def test_brier_skill_edge_cases_and_bad_input():
    # every label of a class the prevalence is certain about: the reference Brier is 0
    assert math.isnan(bm.brier_skill_score(np.ones(3, dtype=int), np.full(3, 0.9), 1.0))
    for bad in ([0.5, 0.6], [0.2, 0.3, 0.5], [-0.1, 1.1], float("nan")):
        with pytest.raises(ValueError, match="Expected prevalence"):
            bm.brier_skill_score(np.array([0, 1]), np.array([0.2, 0.7]), bad)
    y, proba = binary_data(20, seed=1)
    with pytest.raises(ValueError, match="prevalence="):
        bootstrap_ci(y, proba, BINARY, metrics=("brier_skill",), n_resamples=10)


def test_brier_skill_interval_and_resamples_match_direct_recomputation():
    y, proba = binary_data(60, seed=14)
    row = evaluate(y, proba, BINARY, n_resamples=200, seed=2, prevalence=0.3)
    assert row["brier_skill"] == pytest.approx(1 - row["brier"] / np.mean((0.3 - y) ** 2))
    assert row["brier_skill_ci_low"] <= row["brier_skill"] <= row["brier_skill_ci_high"]
    idx = np.random.default_rng(2).integers(0, 60, size=(200, 60))
    direct = [bm.brier_skill_score(y[i], proba[i], 0.3) for i in idx]
    assert (row["brier_skill_ci_low"], row["brier_skill_ci_high"]) == pytest.approx(
        tuple(np.percentile(direct, [2.5, 97.5]))
    )


def test_the_mann_whitney_auc_is_scikit_learns_roc_auc_with_ties_and_one_class():
    from sklearn.metrics import roc_auc_score

    from bench.evaluate.floor import val_score
    from bench.evaluate.metrics import mann_whitney_auc

    rng = np.random.default_rng(4)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        score = np.round(rng.random(40), 1)  # many ties
        assert mann_whitney_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(mann_whitney_auc(np.ones(5, int), rng.random(5)))
    from scipy.stats import rankdata

    from bench.evaluate.metrics import average_ranks

    for values in (np.round(rng.random(50), 1), rng.random(7), np.zeros(4), np.array([2.0, -1.0, 2.0, np.inf])):
        np.testing.assert_array_equal(average_ranks(values), rankdata(values))
    y3 = rng.integers(0, 3, 60)
    proba = rng.dirichlet(np.ones(3), 60)
    assert val_score(y3, proba, 3, "val_auc") == pytest.approx(
        roc_auc_score(y3, proba, multi_class="ovr", average="macro"), abs=1e-12)
    assert val_score(y, np.column_stack([1 - score, score]), 2, "val_auc") == pytest.approx(roc_auc_score(y, score))
