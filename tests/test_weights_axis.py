"""Starting weights as a compared axis: ``--weights none,PATH`` makes each (backbone,
weights) pair a row of the leaderboard, the paired tests, the report, the export and
``bench leaderboard``; resume keeps the pairs; one weights value keeps today's names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import backbones
from bench.candidates import BASELINE, Candidate, candidates
from bench.cli import app
from bench.config import RunConfig
from bench.errors import BenchError
from conftest import make_folder

runner = CliRunner()
TINY = ["--backbones", "mobilenet_v2", "--image-size", "32", "--max-trials", "1", "--epochs", "1",
        "--tuner", "random", "--max-unfreeze", "0", "--no-export"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: "), err
    for fragment in fragments:
        assert fragment in err, err


def pretrained_file(path: Path, images: Path) -> Path:
    """MobileNetV2 weights 'pre-trained' elsewhere: another random start, its BatchNorm
    statistics taken from another dataset's images (``images``), saved as Keras saves them."""
    import keras

    from bench.data.loading import load_images
    from bench.search.source import calibrate_batchnorm

    keras.utils.set_random_seed(1)
    record = backbones.get("mobilenet_v2")
    model = record.build(weights=None, image_size=32)
    rows = [{"path": p.relative_to(images).as_posix()} for p in sorted(images.rglob("*.png"))]
    calibrate_batchnorm(model, record.preprocessing, load_images(images, rows, 32))
    model.save_weights(path)
    keras.backend.clear_session()
    return path


@pytest.fixture(scope="module")
def axis(tmp_path_factory):
    """One run comparing random initialisation with a weights file, and its command output."""
    root = tmp_path_factory.mktemp("weights_axis")
    data = make_folder(root / "data", {"a": 12, "b": 12}, size=48, seed=9)
    other = make_folder(root / "other", {"x": 8, "y": 8}, size=48, seed=21)
    pre = pretrained_file(root / "pre.weights.h5", other)
    out = root / "results"
    result = invoke("run", "--data", data, *TINY, "--weights", f"none,{pre}", "--out", out,
                    "--reports", root / "reports", "--name", "w")
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "pre": pre, "out": out, "run": out / "w", "stdout": result.stdout}


# ------------------------------------------------------------------ parsing and naming


def test_a_weights_list_parses_to_labelled_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pre.weights.h5").touch()
    specs = backbones.parse_weights(" NONE, pre.weights.h5 ,imagenet")
    assert [s.label for s in specs] == ["none", "pre", "imagenet"]
    assert backbones.weights_text(specs) == f"none,{tmp_path / 'pre.weights.h5'},imagenet"
    assert backbones.weights_items("none, ./pre.weights.h5") == ["none", str(tmp_path / "pre.weights.h5")]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pre.h5").touch()
    (tmp_path / "my pre.h5").touch()
    for text, fragment in [("none,none", "lists none twice"),
                           ("pre.weights.h5,./pre.weights.h5", "twice"),
                           ("pre.weights.h5,b/pre.h5", "share the name 'pre'"),
                           ("none,imagenett", "does not exist"),
                           ("none,my pre.h5", "cannot name a row"),
                           (" , ", "empty --weights")]:
        with pytest.raises(BenchError, match=fragment):
            backbones.parse_weights(text)
    assert backbones.parse_weights("my pre.h5")[0].kind == "file"  # one entry names no row


def test_candidates_are_named_after_the_backbone_with_one_weights_value():
    one = RunConfig(backbones=["mobilenet_v2", "xception"], weights="none", baseline=True)
    assert [c.name for c in candidates(one)] == ["mobilenet_v2", "xception", BASELINE]
    assert candidates(one)[2].source_name == "xception" and candidates(one)[2].columns() == {}
    several = RunConfig(backbones=["mobilenet_v2", "xception"], weights="none,/w/pre.weights.h5", baseline=True)
    assert [c.name for c in candidates(several)] == [
        "mobilenet_v2@none", "mobilenet_v2@pre", "xception@none", "xception@pre",
        f"{BASELINE}@none", f"{BASELINE}@pre"]
    baseline = candidates(several)[-1]
    assert (baseline.network, baseline.source_name, baseline.weights) == ("xception", "xception@pre", "/w/pre.weights.h5")
    assert Candidate("xception", "none", True).columns() == {"architecture": "xception"}


def test_bad_weights_lists_stop_before_any_work(image_folder, tmp_path):
    out = tmp_path / "results"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "pre.weights.h5").touch()
    (tmp_path / "pre.h5").touch()
    (tmp_path / "broken.weights.h5").write_bytes(b"not an HDF5 file")
    cases = [("none,none", "lists none twice"),
             ("none,nonsense", "weights path 'nonsense' does not exist"),
             (f"{tmp_path / 'a' / 'pre.weights.h5'},{tmp_path / 'pre.h5'}", "share the name 'pre'"),
             (f"none,{tmp_path / 'broken.weights.h5'}", "cannot load weights")]
    for i, (weights, fragment) in enumerate(cases):
        result = invoke("run", "--data", image_folder, *TINY, "--weights", weights, "--out", out, "--name", f"bad{i}")
        assert_one_line_error(result, fragment)
        assert not (out / f"bad{i}").exists()


# ------------------------------------------------------------------ a run over two starting points


def test_each_pair_is_a_row_with_its_own_search_and_results(axis):
    run = axis["run"]
    board = json.loads((run / "leaderboard.json").read_text())
    board = [r for r in board if r["kind"] == "backbone"]  # the floor rows follow
    names = [r["backbone"] for r in board]
    assert sorted(names) == ["mobilenet_v2@none", "mobilenet_v2@pre"]
    assert {r["architecture"] for r in board} == {"mobilenet_v2"}
    assert {r["backbone"]: r["weights"] for r in board} == {"mobilenet_v2@none": "none",
                                                            "mobilenet_v2@pre": str(axis["pre"])}
    assert all(r["status"] == "ok" for r in board) and [r["rank"] for r in board] == [1, 2]
    stored = json.loads((run / "run.json").read_text())["config"]
    assert stored["weights"] == f"none,{axis['pre']}" and stored["backbones"] == ["mobilenet_v2"]
    # each pair starts from its own weights, caches its own features and predicts on its own
    none_w, pre_w = (run / n / "backbone.weights.npz" for n in ("mobilenet_v2@none", "mobilenet_v2@pre"))
    assert none_w.read_bytes() != pre_w.read_bytes()
    assert len(list((run / "cache").glob("*.npy"))) == 4  # train and val, per pair
    probs = [pd.read_csv(run / n / "test_predictions.csv").filter(like="prob_").to_numpy() for n in names]
    assert probs[0].shape == probs[1].shape and not np.allclose(probs[0], probs[1])
    assert not (run / "mobilenet_v2").exists()
    for name in names:
        assert name in axis["stdout"]


def test_report_compares_the_pairs_and_names_their_weights(axis):
    report = (axis["root"] / "reports" / "w" / "report.md").read_text()
    line = next(line for line in report.splitlines() if "Each row is a backbone with one starting point" in line)
    assert "named after its @: " in line and "none: random initialisation" in line and f"pre: {axis['pre']}" in line
    paired = [line for line in report.splitlines() if line.startswith("| row − column")]  # DeLong, bootstrap
    assert paired and all("mobilenet_v2@none" in line and "mobilenet_v2@pre" in line for line in paired)
    assert "The rows named @none started from random weights" in report
    html = (axis["root"] / "reports" / "w" / "report.html").read_text()
    assert "mobilenet_v2@pre" in html and "Each row is a backbone with one starting point" in html


def test_the_export_is_the_winning_pair(axis):
    from bench.deploy.export import export_run
    from bench.deploy.verify import check_export

    run = axis["run"]
    winner = json.loads((run / "leaderboard.json").read_text())[0]
    exported = export_run(run, check=False)
    assert exported.backbone == winner["backbone"] and exported.path == run / "export" / winner["backbone"]
    assert json.loads((exported.path / "labels.json").read_text())["backbone"] == winner["backbone"]
    checks = check_export(exported.path, run, fresh_process=False)  # the winner's own test predictions
    assert checks["run"] and checks["passed"], checks
    card = (exported.path / "model_card.md").read_text()
    assert winner["backbone"] in card and str(winner["weights"]) in card


def test_bench_leaderboard_lists_every_pair(axis):
    result = invoke("leaderboard", axis["out"])
    assert result.exit_code == 0, result.output
    assert "mobilenet_v2@none" in result.stdout and "mobilenet_v2@pre" in result.stdout


def test_resume_finishes_the_missing_pair_and_guards_the_list(axis, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "results" / "w"
    shutil.copytree(axis["run"], run)
    done = run / "mobilenet_v2@none" / "result.json"
    first = done.read_bytes(), done.stat().st_mtime_ns
    shutil.rmtree(run / "mobilenet_v2@pre")  # stopped before the second pair began
    (run / "leaderboard.json").write_text(json.dumps(json.loads((run / "leaderboard.json").read_text())[:1]))
    changed = invoke("run", "--resume", "--name", "w", "--out", run.parent, "--weights", "none")
    assert_one_line_error(changed, f"--weights none (run w has --weights none,{axis['pre']})")
    monkeypatch.chdir(axis["pre"].parent)  # the same list, written another way
    resumed = invoke("run", "--resume", "--name", "w", "--out", run.parent, "--weights", "NONE, pre.weights.h5",
                     "--reports", tmp_path / "reports", "--no-export")
    assert resumed.exit_code == 0, resumed.output
    assert (done.read_bytes(), done.stat().st_mtime_ns) == first  # finished earlier, not run again
    board = json.loads((run / "leaderboard.json").read_text())
    board = [r for r in board if r["kind"] == "backbone"]  # the floor rows follow
    assert sorted(r["backbone"] for r in board) == ["mobilenet_v2@none", "mobilenet_v2@pre"]
    again = json.loads((axis["run"] / "leaderboard.json").read_text())
    again = [r for r in again if r["kind"] == "backbone"]  # the floor rows follow
    keep = ("backbone", "rank", "val_objective", "test_accuracy", "test_roc_auc")
    assert [{k: r.get(k) for k in keep} for r in board] == [{k: r.get(k) for k in keep} for r in again]


def test_one_weights_value_keeps_the_backbone_names(tiny_run):
    """The shared single-weights run (``--weights none``): rows, folders and run.json as always."""
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    board = [r for r in board if r["kind"] == "backbone"]  # the floor rows follow
    assert [r["backbone"] for r in board] == ["mobilenet_v2"] and "architecture" not in board[0]
    assert board[0]["weights"] == "none"
    assert json.loads((tiny_run / "run.json").read_text())["config"]["weights"] == "none"
    top = {p.name for p in tiny_run.iterdir() if not p.name.startswith(".")} - {"export"}
    assert top == {"cache", "content.csv", "dataset.json", "groups.csv", "leaderboard.csv", "leaderboard.json",
                   "run.json", "split.json", "mobilenet_v2", "majority", "content-logistic", "mobilenet_v2:linear-probe"}
    assert not any("@" in p.name for p in tiny_run.rglob("*"))


@pytest.mark.slow
def test_cross_validation_over_two_starting_points(axis, tmp_path):
    result = invoke("run", "--data", axis["data"], *TINY, "--weights", f"none,{axis['pre']}", "--cv", "2",
                    "--out", tmp_path / "results", "--reports", tmp_path / "reports", "--name", "cv")
    assert result.exit_code == 0, result.output
    run = tmp_path / "results" / "cv"
    board = json.loads((run / "leaderboard.json").read_text())
    board = [r for r in board if r["kind"] == "backbone"]  # the floor rows follow
    assert sorted(r["backbone"] for r in board) == ["mobilenet_v2@none", "mobilenet_v2@pre"]
    assert {r["architecture"] for r in board} == {"mobilenet_v2"} and all(r["cv_k"] == 2 for r in board)
    for name in ("mobilenet_v2@none", "mobilenet_v2@pre"):
        assert sorted(p.parent.name for p in (run / "cv").glob(f"r0-f*/{name}")) == ["r0-f0", "r0-f1"]
        assert (run / name / "oof_predictions.csv").is_file()
    winner = board[0]["backbone"]
    assert (run / winner / "best_model.keras").is_file()  # searched again on every CV image
    assert not (run / next(r["backbone"] for r in board if r["rank"] == 2) / "best_model.keras").exists()
    assert "P(best)" in result.stdout and "mobilenet_v2@pre" in result.stdout
