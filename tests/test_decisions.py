"""The final stage's decisions: calibration fitted on validation and applied to test, the
operating points chosen on calibrated validation probabilities, and what is recorded."""

from __future__ import annotations

import numpy as np
import pytest

from bench.evaluate.calibration import PRIOR_SD, apply_temperature, fit_temperature, nll
from bench.evaluate.decisions import Decisions, headline, weight_vector
from bench.evaluate.metrics import choose_threshold


def _weighted_model(n: int, prevalence: float, seed: int):
    """Labels and the probabilities of a balanced-weight model (odds inflated by (1-pi)/pi)."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 2.0, n) + np.log(prevalence / (1 - prevalence))  # a calibrated model's logits
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    shifted = true_logit + np.log((1 - prevalence) / prevalence)  # what balanced weights do to the odds
    p1 = 1 / (1 + np.exp(-shifted))
    return y, np.column_stack([1 - p1, p1])


def test_weight_vector():
    assert weight_vector(None, 2) is None
    assert weight_vector({0: 1.0, 1: 1.0}, 2) is None  # equal weights: nothing to undo
    assert weight_vector({0: 0.625, 1: 2.5}, 2) == [0.625, 2.5]
    assert weight_vector({0: 0.5, 1: 0.0, 2: 3.0}, 3) == [0.5, 1.0, 3.0]  # a class absent from training


def test_class_weight_prior_shift_is_undone_and_thresholds_come_from_calibrated_validation():
    prevalence = 0.2
    weights = {0: 1 / (2 * (1 - prevalence)), 1: 1 / (2 * prevalence)}  # balanced_class_weight's formula
    y_val, p_val = _weighted_model(400, prevalence, 1)
    y_test, p_test = _weighted_model(400, prevalence, 2)
    decisions = Decisions.fit(y_val, p_val, weight_vector(weights, 2), 0.9, 0.9)
    assert decisions.temperature == pytest.approx(
        fit_temperature(y_val, p_val, [weights[0], weights[1]], prior_sd=PRIOR_SD))
    calibrated_val = decisions.calibrate(p_val)
    # the raw model overstates the positives; calibrated it says ~the observed frequency
    assert p_val[:, 1].mean() > 0.35 and abs(calibrated_val[:, 1].mean() - y_val.mean()) < 0.03
    assert nll(y_test, decisions.calibrate(p_test)) < nll(y_test, p_test)
    assert decisions.threshold == choose_threshold(y_val, calibrated_val[:, 1])
    points = decisions.points
    assert points["sensitivity"]["val_sensitivity"] >= 0.9 and points["specificity"]["val_specificity"] >= 0.9
    report = decisions.on_test(y_test, p_test, np.array([1 - prevalence, prevalence]), None, seed=0)
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["class_weights"] == [weights[0], weights[1]]
    row = headline(report)
    assert row["ece"] == report["after"]["ece"] and row["raw_ece"] == report["before"]["ece"]
    assert row["threshold_sensitivity"] == points["sensitivity"]["threshold"]
    at = report["test_operating_points"]["sensitivity"]
    assert row["sensitivity_at_sensitivity"] == at["sensitivity"]
    calibrated = apply_temperature(p_test, decisions.temperature, decisions.class_weights)
    assert at["tp"] == int(((calibrated[:, 1] >= at["threshold"]) & (y_test == 1)).sum())
    curve = report["decision_curve"]
    assert len(curve["model"]) == len(curve["thresholds"]) == len(curve["treat_all"])


def test_multiclass_has_calibration_but_no_operating_points():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    logits = np.eye(3)[y] * 1.5 + rng.normal(0, 1, (600, 3))
    p = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)  # overconfident
    decisions = Decisions.fit(y, p, None, 0.95, 0.95)
    assert decisions.points is None and decisions.threshold is None and decisions.temperature > 1
    assert (decisions.calibrate(p).argmax(1) == p.argmax(1)).all()
    report = decisions.on_test(y, p, np.full(3, 1 / 3), None, seed=0)
    assert "test_operating_points" not in report and "decision_curve" not in report
    assert report["after"]["ece"] < report["before"]["ece"]
