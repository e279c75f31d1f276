"""Floor baselines: majority, content-logistic and a linear probe per backbone, as rows of
every leaderboard (single split and --cv) with intervals, never ranked nor deployed; the
best of them against each backbone in the report and the verdict; the shortcut check
naming content features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.cli import app
from bench.evaluate.floor import C_GRID, CONTENT, MAJORITY, fit_logistic, floor_sentence, probe_name
from bench.evaluate.paired import PairTest

runner = CliRunner()
ARGS = ["--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--max-trials", "2", "--epochs", "1",
        "--tuner", "random", "--max-unfreeze", "0", "--no-baseline", "--no-export"]
FLOOR = [MAJORITY, CONTENT, probe_name("mobilenet_v2")]


def intensity_folder(root: Path, n: int = 30, size: int = 48, seed: int = 5) -> Path:
    """Two classes of blocky noise of one size and format whose intensity ranges differ:
    the label is in the intensity alone."""
    rng = np.random.default_rng(seed)
    for label, (lo, hi) in (("dark", (0, 150)), ("bright", (90, 256))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            blocks = rng.integers(lo, hi, size=(6, 6, 3), dtype=np.uint8)
            Image.fromarray(blocks, "RGB").resize((size, size), Image.Resampling.NEAREST).save(
                root / label / f"img_{i:03d}.png")
    return root


def _run(tmp_path: Path, *extra: str):
    data = intensity_folder(tmp_path / "data")
    result = runner.invoke(app, ["run", "--data", str(data), *ARGS, *extra, "--out", str(tmp_path / "results"),
                                 "--reports", str(tmp_path / "reports"), "--name", "r"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "results" / "r"
    return run, json.loads((run / "leaderboard.json").read_text()), result.stdout


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """A single-split run whose test features of the probe must come from the evaluation
    pass: a second frozen pass fails the run."""
    import bench.floor

    patch = pytest.MonkeyPatch()

    def no_second_pass(job, source):
        raise AssertionError("a second forward pass over the test images")

    patch.setattr(bench.floor, "frozen_test_features", no_second_pass)
    import bench.pipeline

    patch.setattr(bench.pipeline, "frozen_test_features", no_second_pass)
    try:
        yield _run(tmp_path_factory.mktemp("floor"))
    finally:
        patch.undo()


def test_single_split_leaderboard_has_floor_rows_with_intervals_below_the_ranked_backbone(split_run):
    run, board, _ = split_run
    by_name = {r["backbone"]: r for r in board}
    assert board[0]["backbone"] == "mobilenet_v2" and board[0]["rank"] == 1 and board[0]["kind"] == "backbone"
    for name in FLOOR:
        row = by_name[name]
        assert row["kind"] == "floor" and row["status"] == "ok" and row["rank"] is None
        for metric in ("accuracy", "roc_auc"):
            assert row[f"test_{metric}_ci_low"] <= row[f"test_{metric}"] <= row[f"test_{metric}_ci_high"]
        assert (run / name / "test_predictions.csv").is_file()
    assert by_name[MAJORITY]["test_roc_auc"] == 0.5
    # intensity carries the label: the content statistics see it, the majority cannot
    assert by_name[CONTENT]["test_roc_auc"] >= 0.9 > by_name[MAJORITY]["test_roc_auc"]
    assert by_name[CONTENT]["test_accuracy"] > by_name[MAJORITY]["test_accuracy"]
    assert by_name[CONTENT]["floor_c"] in C_GRID
    assert (run / "content.csv").is_file()


def test_the_probe_reads_cached_features_and_the_evaluation_pass(split_run):
    run, board, _ = split_run
    probe = next(r for r in board if r["backbone"] == probe_name("mobilenet_v2"))
    assert probe["probe_features"].startswith("train and val: cached frozen features; test: pooled in the chosen "
                                              "model's evaluation pass")
    # one cache entry per split (train, val) and depth: nothing else ran the backbone
    assert sorted(p.suffix for p in (run / "cache").glob("*.npy")) == [".npy", ".npy"]


def test_report_and_verdict_compare_each_backbone_with_the_best_floor(split_run):
    run, board, stdout = split_run
    floor = sorted((r for r in board if r["kind"] == "floor"), key=lambda r: -r["val_objective"])[0]["backbone"]
    report = (run.parent.parent / "reports" / "r" / "report.md").read_text()
    assert "### The floor" in report and f"best floor baseline {floor}" in report
    sentence = next(line for line in stdout.splitlines() if "best floor baseline" in line)
    assert sentence in report
    assert "beyond noise" in sentence and "DeLong Holm" in sentence and "McNemar Holm" in sentence
    beaten = sentence.startswith("mobilenet_v2 beats")
    assert beaten or sentence.startswith("mobilenet_v2 does not beat")


def test_cv_leaderboard_has_out_of_fold_floor_rows(tmp_path):
    run, board, stdout = _run(tmp_path, "--cv", "2")
    by_name = {r["backbone"]: r for r in board}
    assert board[0]["rank"] == 1 and board[0]["kind"] == "backbone"
    for name in FLOOR:
        row = by_name[name]
        assert row["kind"] == "floor" and row["status"] == "ok" and row["rank"] is None
        assert row["cv_roc_auc_ci_low"] <= row["cv_roc_auc"] <= row["cv_roc_auc_ci_high"]
        assert row["cv_images"] == by_name["mobilenet_v2"]["cv_images"]
        assert len(list((run / "cv").glob(f"r0-f*/{name}/result.json"))) == 2
    assert by_name[CONTENT]["cv_roc_auc"] > by_name[MAJORITY]["cv_roc_auc"] == 0.5
    assert "held-out images" in by_name[probe_name("mobilenet_v2")]["probe_features"]
    assert "best floor baseline" in stdout


def test_fit_logistic_matches_scikit_learn_at_the_chosen_c():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.0, size=160) > 0).astype(int)
    parts = {"train": slice(0, 100), "val": slice(100, 130), "test": slice(130, 160)}
    fit = fit_logistic(x[parts["train"]], y[parts["train"]], x[parts["val"]], y[parts["val"]], x[parts["test"]], 2,
                       "val_auc")
    scaler = StandardScaler().fit(x[parts["train"]])
    scores = {}
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(scaler.transform(x[parts["train"]]),
                                                                     y[parts["train"]])
        scores[c] = (roc_auc_score(y[parts["val"]], model.predict_proba(scaler.transform(x[parts["val"]]))[:, 1]),
                     model.predict_proba(scaler.transform(x[parts["test"]])))
    best = max(scores.values(), key=lambda s: s[0])[0]
    assert fit.val_objective == pytest.approx(best)
    assert fit.c == min(c for c in C_GRID if scores[c][0] == best)  # ties: the smaller C
    np.testing.assert_allclose(fit.p_test, scores[fit.c][1], atol=1e-4)


def test_the_floor_sentence_says_whether_a_backbone_beats_the_floor_beyond_noise():
    def pair(a, diff, p_delong, p_mcnemar, only_a, only_b):
        return PairTest(a, CONTENT, 50, only_a, only_b, p_mcnemar, auc_diff=diff, delong_p=p_delong,
                        delong_p_holm=p_delong, mcnemar_p_holm=p_mcnemar)

    level = [pair("xception", 0.02, 0.4, 0.6, 4, 3), pair("mobilenet_v2", -0.01, 0.7, 1.0, 2, 2)]
    text = floor_sentence(CONTENT, "ROC AUC 0.905 [0.87, 0.93]", level, "test")
    assert text.startswith(f"No backbone beats the best floor baseline {CONTENT}") and "beyond noise" in text
    assert "xception: DeLong Holm p = 0.40, McNemar Holm p = 0.60" in text
    above = [pair("xception", 0.06, 0.004, 0.03, 9, 1), level[1]]
    text = floor_sentence(CONTENT, "ROC AUC 0.905 [0.87, 0.93]", above, "test")
    assert text.startswith(f"xception beats the best floor baseline {CONTENT}") and "mobilenet_v2 does not" in text


def test_shortcut_warning_names_content_features_when_files_are_alike(tmp_path):
    data = intensity_folder(tmp_path / "data", n=20)
    result = runner.invoke(app, ["scan", str(data)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "shortcut check" in x)
    assert line.startswith("WARNING: shortcut check: ") and "intensity" in line and "predict the label" in line
    assert "image-content statistics" in line
