"""After the search, before the test: calibrate the chosen model's probabilities and choose
its decision thresholds, both on validation; then describe both on the test images.

1. **Calibration** (:mod:`bench.evaluate.calibration`). The searched models train with
   balanced class weights, which pulls their probabilities towards equal classes; the
   notebook baseline trains unweighted. Each model's probabilities are therefore mapped
   ``softmax((log p - log w) / T)``: ``w`` the class weights it trained with (undoing the
   prior shift; all ones for the baseline) and ``T`` a temperature fitted on the
   validation split (MAP, prior on log T with sd :data:`~bench.evaluate.calibration.PRIOR_SD`).
   Every probability bench reports, thresholds, exports and serves is the calibrated one;
   the raw outputs are kept (``raw_prob_*`` columns) for the before/after comparison.
2. **Operating points** (binary; :mod:`bench.evaluate.operating_points`): thresholds on
   the calibrated validation probabilities for Youden's J (the default decision), for
   sensitivity >= ``--min-sensitivity`` and for specificity >= ``--min-specificity``.
3. **On test** (or a fold's held-out images): calibration before and after (ECE with a
   group-bootstrap interval, slope, intercept, Brier skill, reliability bins), the test
   sensitivity and specificity at each operating point, and the decision curve; written
   to ``calibration.json`` beside ``result.json``.
"""

from __future__ import annotations

import math

import numpy as np

from bench.evaluate.calibration import PRIOR_SD, apply_temperature, calibration_summary, fit_temperature
from bench.evaluate.operating_points import choose_operating_points, decision_curve, evaluate_operating_points

#: The operating point that makes the default decision (labels.json ``threshold``).
DEFAULT_POINT = "youden"


def weight_vector(class_weight: dict[int, float] | None, n_classes: int) -> list[float] | None:
    """The training class weights as K numbers (None: unweighted). A class absent from
    training (weight 0) gets 1: there is no prior shift to undo for it."""
    if not class_weight:
        return None
    out = [float(class_weight.get(k, 1.0)) or 1.0 for k in range(n_classes)]
    return None if all(math.isclose(w, out[0]) for w in out) else out


class Decisions:
    """What was fitted on validation: the calibration map and (binary) the operating points."""

    def __init__(self, temperature: float, class_weights: list[float] | None, points: dict | None, n_val: int):
        self.temperature = temperature
        self.class_weights = class_weights
        self.points = points
        self.n_val = n_val

    @classmethod
    def fit(cls, y_val: np.ndarray, p_val: np.ndarray, class_weights: list[float] | None,
            min_sensitivity: float, min_specificity: float) -> Decisions:
        temperature = fit_temperature(y_val, p_val, class_weights, prior_sd=PRIOR_SD)
        points = None
        if p_val.shape[1] == 2:
            calibrated = apply_temperature(p_val, temperature, class_weights)
            points = choose_operating_points(y_val, calibrated[:, 1], min_sensitivity, min_specificity)
        return cls(temperature, class_weights, points, len(y_val))

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        return apply_temperature(proba, self.temperature, self.class_weights)

    @property
    def threshold(self) -> float | None:
        return None if self.points is None else float(self.points[DEFAULT_POINT]["threshold"])

    def fitted(self) -> dict:
        """The part labels.json and the export need."""
        return {
            "temperature": self.temperature,
            "class_weights": self.class_weights,
            "fitted_on": f"validation ({self.n_val} images)",
            "method": "temperature scaling after undoing the class-weight prior shift: softmax((log p - log w) / T)",
            "operating_points": self.points,
        }

    def on_test(self, y: np.ndarray, raw: np.ndarray, prevalence: np.ndarray, groups, seed: int) -> dict:
        """Calibration before/after, operating points and decision curve on ``raw`` test predictions."""
        calibrated = self.calibrate(raw)
        out = {
            **self.fitted(),
            "before": calibration_summary(y, raw, prevalence=prevalence, groups=groups, seed=seed),
            "after": calibration_summary(y, calibrated, prevalence=prevalence, groups=groups, seed=seed),
        }
        if self.points is not None:
            out["test_operating_points"] = evaluate_operating_points(y, calibrated[:, 1], self.points, groups=groups,
                                                                     seed=seed)
            out["decision_curve"] = decision_curve_record(y, calibrated[:, 1], groups, seed)
        return out


def decision_curve_record(y: np.ndarray, p1: np.ndarray, groups, seed: int) -> dict:
    """:func:`~bench.evaluate.operating_points.decision_curve` with its arrays as lists (for JSON)."""
    curve = decision_curve(y, p1, groups=groups, seed=seed)
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in curve.items()}


def headline(report: dict) -> dict:
    """The scalars of ``calibration.json`` that go into result.json and the leaderboard."""
    out = {"temperature": report["temperature"]}
    for when, prefix in (("after", ""), ("before", "raw_")):
        summary = report.get(when) or {}
        for key in ("ece", "ece_ci_low", "ece_ci_high", "slope", "intercept"):
            if key in summary:
                name = key if key.startswith("ece") else f"calibration_{key}"
                out[f"{prefix}{name}"] = summary[key]
    for name, point in (report.get("test_operating_points") or {}).items():
        if name == DEFAULT_POINT:
            continue
        out[f"threshold_{name}"] = point["threshold"]
        for metric in ("sensitivity", "specificity"):
            for suffix in ("", "_ci_low", "_ci_high"):
                out[f"{metric}{suffix}_at_{name}"] = point[f"{metric}{suffix}"]
    return out
