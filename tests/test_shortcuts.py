"""The shortcut check: file attributes alone must not predict the label unnoticed."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from typer.testing import CliRunner

from bench.cli import app
from bench.evaluate.shortcuts import WARN_AUC, feature_aucs, shortcut_check, shortcut_sentence
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


def test_each_feature_s_auc_is_scikit_learn_s_roc_auc_either_way_round():
    """The named features' AUCs against scikit-learn's roc_auc_score, column by column: two
    classes (either direction), three (the best one-vs-rest), tied values, a constant column."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    for n_classes in (2, 3):
        y = rng.integers(0, n_classes, 90)
        x = np.round(rng.normal(size=(90, 6)) + np.outer(y, [1.5, -1.0, 0.3, 0, 0, 0]), 1)  # ties
        x[:, 4] = 7.0  # constant: left out
        names = [f"f{j}" for j in range(6)]
        got = dict(feature_aucs(x, y, names))
        assert "f4" not in got and len(got) == 5
        for j, name in enumerate(names):
            if j == 4:
                continue
            if n_classes == 2:
                auc = roc_auc_score(y, x[:, j])
                expected = max(auc, 1 - auc)
            else:
                expected = max(roc_auc_score(y == k, x[:, j]) for k in range(3))
            assert got[name] == round(expected, 4), name
        assert list(got) == sorted(got, key=lambda k: -got[k])  # strongest first
    assert list(got)[:2] == ["f0", "f1"]  # the planted signals lead
    assert feature_aucs(x, np.zeros(90, int), names) == []  # one class: nothing to separate


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
