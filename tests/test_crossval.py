"""`bench run --cv K --repeats R`: out-of-fold predictions for every image once per repeat,
one backbone pass for all folds, CV estimates with group-bootstrap intervals, a ranking
on them, the winner searched again on all CV images, kill-and-resume, bad options."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from bench.cli import app
from conftest import completed_trials, make_folder

runner = CliRunner()
ARGS = ["--backbones", "mobilenet_v2,mobilenet_v3_small", "--weights", "none", "--image-size", "32", "--max-trials", "2",
        "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--no-baseline", "--no-export"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _data(root: Path) -> Path:
    data = make_folder(root / "data", {"a": 12, "b": 12}, size=48, seed=21)
    shutil.copyfile(data / "a" / "img_000.png", data / "a" / "copy_of_000.png")  # a duplicate group of two
    return data


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    data = _data(root)
    result = invoke("run", "--data", data, *ARGS, "--cv", "3", "--repeats", "2", "--out", root / "results",
                    "--reports", root / "reports", "--name", "cv")
    assert result.exit_code == 0, result.output
    return root / "results" / "cv", result


def test_the_run_prints_its_verdict_with_the_paired_test_against_the_runner_up(cv_run):
    _, result = cv_run
    verdict = next(line for line in result.stdout.splitlines() if line.startswith("Recommended: "))
    assert "runner-up" in verdict and "p = " in verdict and "out-of-fold" in verdict, verdict


def test_every_image_is_predicted_once_per_repeat_by_the_fold_that_held_it_out(cv_run):
    run, _ = cv_run
    folds = json.loads((run / "folds.json").read_text())
    files = {f["path"]: f for f in folds["files"]}
    for backbone in ("mobilenet_v2", "mobilenet_v3_small"):
        oof = pd.read_csv(run / backbone / "oof_predictions.csv")
        assert len(oof) == 2 * len(files)
        for repeat in (0, 1):
            part = oof[oof["repeat"] == repeat]
            assert sorted(part["file"]) == sorted(files)
            for _, row in part.iterrows():
                assert files[row["file"]]["fold"][repeat] == row["fold"]
                assert row["group"] == files[row["file"]]["group"]
        # each fold's own validation threshold made its decisions
        assert ((oof["prob_b"] >= oof["threshold"]) == (oof["prediction"] == "b")).all()
        thresholds = oof.groupby(["repeat", "fold"])["threshold"].nunique()
        assert (thresholds == 1).all()


def test_one_backbone_pass_serves_every_fold(cv_run):
    run, result = cv_run
    for backbone in ("mobilenet_v2", "mobilenet_v3_small"):
        assert result.stderr.count(f"{backbone}: cached pool features of 25 images") == 1
        # random weights: BatchNorm set once per backbone, from training images, and said with its time
        assert re.search(rf"{backbone}: set BatchNorm statistics from \d+ training images \(random weights\) "
                         r"in [\d.]+s", result.stderr)
        assert result.stderr.count(f"{backbone}: set BatchNorm statistics") == 1
        assert f"{backbone}: cached train features" not in result.stderr
    entries = [json.loads(p.read_text()) for p in (run / "cache").glob("*.json")]
    assert sorted(e["backbone"] for e in entries) == ["mobilenet_v2", "mobilenet_v3_small"]  # depth 0 only: one entry each


def test_cv_estimates_rank_and_the_winner_is_searched_again(cv_run):
    run, result = cv_run
    board = [r for r in json.loads((run / "leaderboard.json").read_text()) if r["kind"] == "backbone"]  # then the floor
    assert [r["rank"] for r in board] == [1, 2]
    assert board[0]["cv_objective"] >= board[1]["cv_objective"]  # val_auc: highest cross-validated AUC first
    assert sum(r["probability_best"] for r in board) == pytest.approx(1.0)
    for r in board:
        assert r["cv_k"] == 3 and r["cv_repeats"] == 2 and r["cv_n"] == 50 and r["cv_images"] == 25
        assert r["cv_groups"] == 24  # the copy and its original are one group
        for metric in ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "recall", "specificity", "brier"):
            assert r[f"cv_{metric}_ci_low"] <= r[f"cv_{metric}"] <= r[f"cv_{metric}_ci_high"], metric
        assert len(r["cv_roc_auc_folds"]) == 6 and r["cv_roc_auc_fold_sd"] >= 0
        assert "cross-validated roc_auc" in r["selection_rule"]
        oof = pd.read_csv(run / r["backbone"] / "oof_predictions.csv")
        assert r["cv_roc_auc"] == pytest.approx(roc_auc_score(oof["label"] == "b", oof["prob_b"]))
        assert r["cv_accuracy"] == pytest.approx(oof["correct"].mean())
    winner, other = board[0]["backbone"], board[1]["backbone"]
    assert (run / winner / "best_model.keras").is_file() and not (run / other / "best_model.keras").exists()
    assert board[0]["test_n"] == 0 and board[0]["test_threshold"] is not None  # no holdout: no test metrics
    assert not list((run / "cv").glob("*/*/best_model.keras"))  # fold models are not kept
    assert "P(best)" in result.stdout and "CV AUC [95% CI]" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--cv", "1"], "--cv must be at least 2, got 1"),
    (["--cv", "3", "--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--repeats", "2"], "--repeats 2 needs --cv K"),
    (["--cv", "3", "--test-size", "0.5"], "--test-size 0.5 with --cv must be 0"),
    (["--cv", "20"], "is more than the 12 duplicate groups of class"),
])
def test_bad_cv_options_are_one_line_and_write_nothing(tmp_path, args, message):
    data = _data(tmp_path)
    result = invoke("run", "--data", data, *ARGS, *args, "--out", tmp_path / "results", "--name", "bad")
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and message in err, err
    assert not (tmp_path / "results" / "bad").exists()


def test_resume_refuses_other_folds(cv_run, tmp_path):
    run, _ = cv_run
    refused = invoke("run", "--resume", "--name", "cv", "--out", run.parent, "--cv", "5", "--repeats", "2")
    assert refused.exit_code == 2 and "--cv 5 (run cv has --cv 3)" in refused.stderr


def _completed(run: Path) -> dict[str, float]:
    return completed_trials(run, "cv/*/*/tuner/trial_*/trial.json")


@pytest.mark.slow
def test_kill_inside_a_cv_run_then_resume(tmp_path, warm):
    data = make_folder(tmp_path / "data", {"a": 9, "b": 9}, size=48, seed=5)
    out = tmp_path / "results"
    args = ["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--max-trials", "3", "--epochs", "2", "--tuner", "random", "--max-unfreeze", "0", "--cv", "3",
            "--no-export", "--out", out, "--reports", tmp_path / "reports", "--name", "k"]
    run = out / "k"
    proc = warm.start([str(a) for a in args])
    deadline = time.time() + 300
    while len(_completed(run)) < 4 and proc.poll() is None and time.time() < deadline:  # inside the second fold
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _completed(run)
    assert 4 <= len(before) < 9 and not (run / "leaderboard.json").exists()
    resumed = warm.run(["run", "--resume", "--name", "k", "--out", str(out), "--no-export"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _completed(run)
    again = [t for t, m in before.items() if after.get(t) != m]
    assert not again, f"completed trials ran again: {again} (of {sorted(before)})"
    assert len([t for t in after if t.startswith("cv/")]) == 9  # 3 folds x 3 trials
    oof = pd.read_csv(run / "mobilenet_v2" / "oof_predictions.csv")
    assert sorted(oof["file"]) == sorted(f["path"] for f in json.loads((run / "folds.json").read_text())["files"])
    board = json.loads((run / "leaderboard.json").read_text())
    assert board[0]["status"] == "ok" and np.isfinite(board[0]["cv_roc_auc"])
    assert (run / "mobilenet_v2" / "best_model.keras").is_file()


def test_pairwise_tests_on_out_of_fold_predictions(cv_run):
    from bench.data.folds import read_folds
    from bench.evaluate.crossval import cv_pairwise_tests

    run, _ = cv_run
    plan = read_folds(run / "folds.json")
    [test] = cv_pairwise_tests(run, ["mobilenet_v2", "mobilenet_v3_small"], plan, "val_auc")
    assert test.n == 50 and test.unit == "group" and test.n_groups == 24  # both repeats, copies in one cluster
    assert test.ttest_metric == "roc_auc" and test.ttest_df == 5  # 3 folds x 2 repeats - 1
    folds = {b: [json.loads(p.read_text())["test_roc_auc"] for p in sorted((run / "cv").glob(f"*/{b}/result.json"))]
             for b in ("mobilenet_v2", "mobilenet_v3_small")}
    assert test.ttest_mean == pytest.approx(np.mean(np.subtract(folds["mobilenet_v2"], folds["mobilenet_v3_small"])))
    for p, adjusted in ((test.mcnemar_p, test.mcnemar_p_holm), (test.delong_p, test.delong_p_holm),
                        (test.ttest_p, test.ttest_p_holm)):
        assert 0 <= p <= 1 and adjusted == pytest.approx(p)  # one pair: Holm changes nothing


def test_export_of_a_cv_run_without_holdout_checks_on_validation_images(cv_run, tmp_path, caplog):
    from bench.deploy.export import export_winner

    run, _ = cv_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("cache", "cv"))
    caplog.set_level("INFO", logger="bench")
    result = export_winner(copy)
    assert result is not None and result.checks["passed"] and result.checks["images"] == "validation"
    assert result.checks["n_images"] == len(pd.read_csv(copy / result.backbone / "val_predictions.csv"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Grad-CAM grid shows test images only" in w for w in warnings)
    card = (result.path / "model_card.md").read_text()
    assert "validation images from their original files" in card and "cross-validat" in card.lower()


def test_each_fold_calibrates_on_its_inner_validation_and_the_report_pools_them(cv_run):
    from bench.evaluate.calibration import apply_temperature

    run, _ = cv_run
    oof = pd.read_csv(run / "mobilenet_v2" / "oof_predictions.csv")
    for (repeat, fold), part in oof.groupby(["repeat", "fold"]):
        fitted = json.loads((run / "cv" / f"r{repeat}-f{fold}" / "mobilenet_v2" / "calibration.json").read_text())
        raw = part[["raw_prob_a", "raw_prob_b"]].to_numpy()
        want = apply_temperature(raw, fitted["temperature"], fitted["class_weights"])
        np.testing.assert_allclose(part[["prob_a", "prob_b"]].to_numpy(), want, atol=1e-6)
        assert part["threshold"].iloc[0] == pytest.approx(fitted["operating_points"]["youden"]["threshold"])
        # a fold's own file holds what was fitted on its inner validation and its point metrics: the
        # intervals, calibration checks and operating points on test images are the pooled ones below
        assert "after" not in fitted and "test_operating_points" not in fitted
        result = json.loads((run / "cv" / f"r{repeat}-f{fold}" / "mobilenet_v2" / "result.json").read_text())
        assert 0 <= result["test_roc_auc"] <= 1 and "test_roc_auc_ci_low" not in result
    board = {r["backbone"]: r for r in json.loads((run / "leaderboard.json").read_text())}
    row = board["mobilenet_v2"]
    assert row["cv_roc_auc_ci_low"] <= row["cv_roc_auc"] <= row["cv_roc_auc_ci_high"]
    text = (run.parent.parent / "reports" / "cv" / "report.md").read_text()
    assert "### Probabilities and decisions" in text and "on the pooled out-of-fold predictions" in text
    assert "#### Operating points (out of fold, each image at its own fold's thresholds)" in text
    assert "![Decision curve (out of fold)](fig-decision-curve.png)" in text


def test_tensorboard_hparams_name_the_fold_of_each_trial(cv_run):
    from test_tracking import _hparams_sessions

    run, _ = cv_run
    folds = {}
    for logs in run.glob("cv/r*-f*/mobilenet_v2/tuner/trial_*/logs"):
        (hparams, _), = _hparams_sessions(logs)
        folds[logs.parents[3].name] = hparams["fold"]
    assert folds and all(label == folder for folder, label in folds.items())
    (final, _), = _hparams_sessions(next(run.glob("*/tuner/trial_*")) / "logs")  # the winner, searched again
    assert final["fold"] == "final"


def test_a_fold_interval_stays_within_the_metric_range():
    """Two outer folds far apart give a t interval (one degree of freedom) past 0 and 1;
    the row reports it cut to the metric's range, and a well-inside interval unchanged."""
    from bench.evaluate.crossval import fold_interval, fold_spread

    raw = fold_interval([0.2, 0.9], 5)
    assert raw[0] < 0 and raw[1] > 1  # what a user saw: an AUC interval of -1.4 to 2.3
    rows = [{"status": "ok", **{f"test_{m}": v for m in ("roc_auc", "accuracy")}} for v in (0.2, 0.9)]
    spread = fold_spread(rows, 5)
    assert (spread["cv_roc_auc_fold_ci_low"], spread["cv_roc_auc_fold_ci_high"]) == (0.0, 1.0)
    assert spread["cv_roc_auc_fold_mean"] == pytest.approx(0.55)
    inside = [{"status": "ok", "test_roc_auc": v} for v in (0.80, 0.84, 0.78, 0.82, 0.81)]
    low, high = fold_spread(inside, 5)["cv_roc_auc_fold_ci_low"], fold_spread(inside, 5)["cv_roc_auc_fold_ci_high"]
    assert (low, high) == fold_interval([0.80, 0.84, 0.78, 0.82, 0.81], 5) and 0 < low < high < 1
