"""The shortcut check: file attributes alone must not predict the label unnoticed."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from typer.testing import CliRunner

from bench.cli import app
from bench.evaluate.shortcuts import WARN_AUC, shortcut_check, shortcut_sentence
from conftest import scan_like

Record = namedtuple("Record", "path label width height mode format bytes")


def _records(rng, n, size_follows_label: bool):
    out = []
    for i in range(n):
        label = "tumor" if i % 2 else "normal"
        side = (512 if label == "tumor" else 256) if size_follows_label else int(rng.choice([256, 512]))
        side += int(rng.integers(-8, 9))
        out.append(Record(f"{label}/{i}.png", label, side, side, "L", "PNG", int(side * side * rng.uniform(0.4, 0.6))))
    return out


def test_fires_when_the_label_follows_image_size():
    records = _records(np.random.default_rng(0), 120, size_follows_label=True)
    check = shortcut_check(records, ["normal", "tumor"], [r.path for r in records])
    assert check["auc"] >= 0.9 and check["ci_low"] >= WARN_AUC and check["warn"]
    assert shortcut_sentence(check).startswith("WARNING: shortcut check")


def test_quiet_when_attributes_carry_no_label():
    records = _records(np.random.default_rng(1), 120, size_follows_label=False)
    check = shortcut_check(records, ["normal", "tumor"], [r.path for r in records])
    assert check["auc"] < WARN_AUC and not check["warn"] and check["ci_low"] < 0.5 < check["ci_high"]


def test_the_forest_in_threads_scores_as_the_forest_on_one_core(monkeypatch):
    import bench.parallel

    records = _records(np.random.default_rng(3), 200, size_follows_label=False)
    groups = [r.path for r in records]
    monkeypatch.setattr(bench.parallel, "usable_cores", lambda: 1)
    one = shortcut_check(records, ["normal", "tumor"], groups)
    monkeypatch.setattr(bench.parallel, "usable_cores", lambda: 3)
    assert shortcut_check(records, ["normal", "tumor"], groups) == one


def test_trees_on_a_capped_sample_still_find_the_shortcut(monkeypatch):
    """Above TREE_SAMPLES training images each tree grows on that many (memory flat in the
    dataset's size); the check must still see a label that follows the image size."""
    import bench.evaluate.shortcuts as shortcuts

    records = _records(np.random.default_rng(0), 120, size_follows_label=True)
    groups = [r.path for r in records]
    import sklearn.ensemble

    grown = []

    class Forest(sklearn.ensemble.RandomForestClassifier):
        def fit(self, x, y, sample_weight=None):
            grown.append((len(x), self.max_samples))
            return super().fit(x, y, sample_weight)

    monkeypatch.setattr(sklearn.ensemble, "RandomForestClassifier", Forest)
    shortcut_check(records, ["normal", "tumor"], groups)
    assert grown and all(cap is None for _, cap in grown)  # under the cap: scikit-learn's default
    grown.clear()
    monkeypatch.setattr(shortcuts, "TREE_SAMPLES", 30)  # 96 training images per fold
    capped = shortcut_check(records, ["normal", "tumor"], groups)
    assert grown and all(n > 30 and cap == 30 for n, cap in grown)
    assert capped["auc"] >= 0.9 and capped["warn"]
    quiet = _records(np.random.default_rng(1), 120, size_follows_label=False)
    assert not shortcut_check(quiet, ["normal", "tumor"], [r.path for r in quiet])["warn"]


def test_copies_share_a_fold_and_tiny_classes_are_skipped():
    records = _records(np.random.default_rng(2), 40, size_follows_label=True)
    # one group per class: nothing can be cross-validated
    assert shortcut_check(records, ["normal", "tumor"], [r.label for r in records]) is None
    assert "not run" in shortcut_sentence(None)


def test_scan_reports_it(tmp_path):
    root = tmp_path / "data"
    for label, side in (("normal", 64), ("tumor", 128)):
        (root / label).mkdir(parents=True)
        for s in range(8):
            scan_like(s + (0 if label == "normal" else 50), side).save(root / label / f"s{s}.png")
    result = CliRunner().invoke(app, ["scan", str(root)])
    assert result.exit_code == 0, result.output
    assert "WARNING: shortcut check" in result.stdout and "out-of-fold AUC 1.00" in result.stdout
