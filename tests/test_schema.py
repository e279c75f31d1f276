"""The result schema (bench.schema): metrics declared once, one typed estimate per source."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import schema
from bench.evaluate.metrics import evaluate
from bench.schema import CI_METRICS, Estimate, Source, column, metric_with_ci, row_source


def test_every_metric_evaluate_reports_is_declared_with_its_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(y * 0.6 + rng.random(60) * 0.5, 0, 1)
    result = evaluate(y, np.stack([1 - p, p], axis=1), ["no", "yes"], n_resamples=50, seed=0, prevalence=0.5)
    scalar = {k for k, v in result.items() if isinstance(v, float) and not k.endswith(("_ci_low", "_ci_high"))}
    assert scalar - {"threshold", "ci_level"} <= set(schema.METRICS), scalar - set(schema.METRICS)
    for name in CI_METRICS:
        estimate = Estimate.read(result, name, Source.PLAIN)
        assert estimate.has_interval and estimate.low <= estimate.value <= estimate.high, name


def test_an_estimate_reads_its_own_source_only():
    row = {"test_roc_auc": 0.91, "test_roc_auc_ci_low": 0.85, "test_roc_auc_ci_high": 0.96,
           "cv_roc_auc": 0.88, "cv_roc_auc_ci_low": 0.8, "cv_roc_auc_ci_high": 0.93, "cv_objective": 0.9}
    test, oof = Estimate.read(row, "roc_auc", Source.TEST), Estimate.read(row, "roc_auc", Source.OUT_OF_FOLD)
    assert (test.value, test.low, test.high, test.source) == (0.91, 0.85, 0.96, Source.TEST)
    assert (oof.value, oof.low, oof.high, oof.source) == (0.88, 0.8, 0.93, Source.OUT_OF_FOLD)
    assert row_source(row) is Source.OUT_OF_FOLD and row_source({"val_objective": 1}) is Source.TEST
    assert column("f1", Source.OUT_OF_FOLD, "low") == "cv_f1_ci_low" and column("f1", Source.PLAIN) == "f1"


@pytest.mark.parametrize("row, style, expected", [
    ({"test_f1": 0.8421, "test_f1_ci_low": 0.711, "test_f1_ci_high": 0.94}, "brackets", "0.842 [0.71, 0.94]"),
    ({"test_f1": 0.8421, "test_f1_ci_low": 0.711, "test_f1_ci_high": 0.94}, "dash", "0.842 (0.71\u20130.94)"),
    ({"test_f1": 0.8421}, "brackets", "0.842"),  # no interval: the value alone
    ({"test_f1": None}, "brackets", "-"),
    ({"test_f1": float("nan"), "test_f1_ci_low": 0.1, "test_f1_ci_high": 0.2}, "dash", "-"),
])
def test_metric_with_ci_text(row, style, expected):
    assert metric_with_ci(row, "f1", style=style) == expected


def test_labels_and_direction_are_declared_once():
    assert schema.metric("brier").long_label == "Brier score (lower is better)"
    assert schema.METRICS["roc_auc"].higher_is_better and not schema.METRICS["brier"].higher_is_better
    assert schema.label("not_declared") == "not declared"
    assert "brier_skill" not in CI_METRICS and "brier" in CI_METRICS
    with pytest.raises(ValueError, match="Expected style"):
        Estimate.read({}, "f1").text(style="bars")
    assert math.isnan(Estimate.read({}, "f1").value)
