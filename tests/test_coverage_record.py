"""The measured coverage that run reports quote (bench.evaluate.coverage): read from the
record benchmarks/validity.py writes, in words that name the command and both counts."""

from __future__ import annotations

import json

from bench.evaluate.coverage import RECORD, coverage_sentence, read_record


def _record(**over):
    cov = lambda k, n: {"covered": k, "n": n, "rate": k / n, "ci_low": 0.0, "ci_high": 1.0}  # noqa: E731
    record = {"what": "20 draws of 250 images", "command": "python benchmarks/validity.py --draws 20",
              "coverage": {"bootstrap_auc": cov(9, 20), "bootstrap_accuracy": cov(13, 20),
                           "fold_auc": cov(20, 20), "fold_accuracy": cov(19, 20)}}
    record.update(over)
    return record


def test_sentence_names_the_command_and_both_counts():
    text = coverage_sentence("roc_auc", _record())
    assert "python benchmarks/validity.py --draws 20" in text
    assert "AUC" in text and "corrected fold interval in 20 of 20 draws" in text
    assert "bootstrap interval of the pooled out-of-fold estimate in 9 of 20" in text
    acc = coverage_sentence("accuracy", _record())
    assert "accuracy" in acc and "in 19 of 20 draws" in acc and "in 13 of 20" in acc
    other = coverage_sentence("f1", _record())
    assert "(measured for AUC; not for this metric)" in other


def test_no_record_no_sentence(tmp_path):
    assert read_record(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_record(tmp_path / "bad.json") is None
    assert coverage_sentence("roc_auc", {}) == ""


def test_the_shipped_record_is_a_measurement_with_its_command():
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert record["command"].startswith("python benchmarks/validity.py")
    for key in ("bootstrap_auc", "bootstrap_accuracy", "fold_auc", "fold_accuracy"):
        c = record["coverage"][key]
        assert 0 <= c["covered"] <= c["n"] and c["n"] >= 20
