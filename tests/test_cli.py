"""The CLI as a user drives it: every bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from conftest import make_folder

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every command runs in its own working folder: anything written there is seen, and stays out of the repo."""
    monkeypatch.chdir(tmp_path)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("Error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err


def test_backbones_table():
    result = invoke("backbones")
    assert result.exit_code == 0
    for name in ("xception", "resnet50", "efficientnet_b0", "convnext_tiny", "vgg16"):
        assert name in result.stdout
    assert "inside" in result.stdout and "tf" in result.stdout
    vgg = next(line for line in result.stdout.splitlines() if line.startswith("vgg16"))
    assert "GMACs/image" in result.stdout and vgg.split()[-1] == "15.347"  # what --budget orders by


def test_scan_prints_summary(image_folder, tmp_path):
    result = invoke("scan", image_folder)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "22 files, 22 readable images, 2 classes" in out
    assert "copies (--copy-threshold 0.7): 0 links" in out and "label conflicts: none" in out
    assert "no group crosses splits" in out and "wrote nothing" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # the working folder: nothing written
    assert "train" in out and "val" in out and "test" in out


def test_run_writes_run_folder(image_folder, tmp_path):
    out = tmp_path / "results"
    (image_folder / "cat" / "img_000_copy.png").write_bytes((image_folder / "cat" / "img_000.png").read_bytes())
    (tmp_path / "patients.csv").write_text("path,group\ncat/img_001.png,p1\ndog/img_001.png,p1\n")
    result = invoke("run", "--data", image_folder, "--backbones", "mobilenet_v2", "--weights", "none",
                    "--out", out, "--reports", tmp_path / "reports", "--name", "r1", "--seed", "3", "--image-size", "32", "--max-trials", "2",
                    "--epochs", "2", "--tuner", "random", "--max-unfreeze", "1", "--groups", tmp_path / "patients.csv",
                    "--no-export")  # the export at the end of a run: tests/test_export.py
    assert result.exit_code == 0, result.output
    assert "Recommended: mobilenet_v2. Only one backbone finished, so there is no runner-up" in result.stdout
    run = out / "r1"
    config = json.loads((run / "run.json").read_text())
    assert config["config"]["backbones"] == ["mobilenet_v2"] and config["config"]["seed"] == 3
    assert config["versions"]["tensorflow"] and config["data_hash"]
    split = json.loads((run / "split.json").read_text())
    assert {f["split"] for f in split["files"]} == {"train", "val", "test"}
    assert len(json.loads((run / "dataset.json").read_text())["files"]) == 23
    # the copy and the patient group each stay in one split; the run folder has what scan writes
    split_of = {f["path"]: f["split"] for f in split["files"]}
    assert split_of["cat/img_000.png"] == split_of["cat/img_000_copy.png"]
    assert split_of["cat/img_001.png"] == split_of["dog/img_001.png"]
    assert split["grouping"]["user_groups"]["missing"] == 21 and config["config"]["groups"].endswith("patients.csv")
    assert {row["kind"] for row in split["leakage_audit"]} == {"exact", "user group"}
    assert (run / "groups.csv").is_file() and (run / "copies.png").is_file()
    report_html = (tmp_path / "reports" / "r1" / "report.html").read_text()
    assert "Leakage audit" in report_html and "Linked copies, to check by eye" in report_html
    # calibration, operating points and subgroup accuracy, from the run's calibration.json
    report_md = (tmp_path / "reports" / "r1" / "report.md").read_text()
    fitted = json.loads((run / "mobilenet_v2" / "calibration.json").read_text())
    assert "### Probabilities and decisions" in report_md and "ECE before (95 % CI)" in report_md
    assert f"| mobilenet_v2 | {fitted['temperature']:.2f} |" in report_md
    assert "#### Operating points" in report_md and "sensitivity first" in report_md
    assert (tmp_path / "reports" / "r1" / "fig-decision-curve.png").is_file()
    assert "#### Test accuracy by file subgroup (mobilenet_v2" in report_md
    # the search wrote everything a user reads afterwards
    assert "rank" in result.stdout and "mobilenet_v2" in result.stdout and "test AUC" in result.stdout
    trials = pd.read_csv(run / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert {"unfreeze", "pooling", "learning_rate", "val_auc", "best_epoch", "seconds"} <= set(trials.columns)
    for trial_id in trials["trial"].astype(str).str.zfill(1):
        history = list((run / "mobilenet_v2" / "tuner").glob(f"trial_*{trial_id}/bench_trial.json"))
        assert history, trial_id
    predictions = pd.read_csv(run / "mobilenet_v2" / "test_predictions.csv")
    test_files = {f["path"] for f in split["files"] if f["split"] == "test"}
    assert set(predictions["file"]) == test_files
    leaderboard = json.loads((run / "leaderboard.json").read_text())
    assert leaderboard[0]["backbone"] == "mobilenet_v2" and leaderboard[0]["rank"] == 1
    assert 0 <= leaderboard[0]["test_accuracy_ci_low"] <= leaderboard[0]["test_accuracy"] <= leaderboard[0]["test_accuracy_ci_high"]
    import keras

    model = keras.saving.load_model(run / "mobilenet_v2" / "best_model.keras")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    assert model.predict_on_batch(images).shape == (2, 1)  # raw images in, probabilities out
    # a second run with the same name refuses rather than mixing results
    again = invoke("run", "--data", image_folder, "--weights", "none", "--out", out, "--name", "r1")
    assert_one_line_error(again, "already exists")


def test_demo_data_command(tmp_path):
    result = invoke("demo-data", tmp_path / "demo", "--n", "6", "--size", "64", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "demo").rglob("*.png"))) == 12
    scanned = invoke("scan", tmp_path / "demo")
    assert "SYNTHETIC" in scanned.stdout


@pytest.fixture
def bad_inputs(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "empty").mkdir()
    one_class = make_folder(tmp_path / "one", {"only": 5})
    small = make_folder(tmp_path / "small", {"a": 8, "b": 2})
    unreadable = tmp_path / "unreadable"
    for label in ("a", "b"):
        (unreadable / label).mkdir(parents=True)
        (unreadable / label / "x.png").write_text("not a png")
    return {
        "missing": (tmp_path / "nope", ["does not exist", "--data"]),
        "file": (a_file, ["is a file, not a folder"]),
        "empty": (tmp_path / "empty", ["no class sub-folders"]),
        "one_class": (one_class, ["only one class", "two or more"]),
        "small_class": (small, ["class 'b' has 2", "at least 3"]),
        "unreadable": (unreadable, ["no readable images", "2 files skipped"]),
    }


@pytest.mark.parametrize("case", ["missing", "file", "empty", "one_class", "small_class", "unreadable"])
@pytest.mark.parametrize("command", ["scan", "run"])
def test_bad_data_folders(bad_inputs, tmp_path, case, command):
    path, fragments = bad_inputs[case]
    out = tmp_path / "results"
    if command == "scan":
        result = invoke("scan", path)
    else:
        result = invoke("run", "--data", path, "--weights", "none", "--out", out, "--name", "x")
    assert_one_line_error(result, *fragments)
    assert not (out / "x").exists(), "nothing may be written for a refused run"


def test_a_missing_data_folder_is_named_before_the_default_weights_are_looked_for(tmp_path):
    """With the default --weights imagenet the data folder is checked first: it is what the
    user typed, and the weights may be missing (or need a download) as well."""
    out = tmp_path / "results"
    result = invoke("run", "--data", tmp_path / "nope", "--out", out, "--name", "x")
    assert_one_line_error(result, "does not exist", "--data")
    assert not (out / "x").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--val-size", "0.5", "--test-size", "0.5"], ["leaves nothing to train on"]),
        (["--backbones", "xception,resnet5"], ["unknown backbone 'resnet5'", "resnet50", "xception"]),
        (["--backbones", "xception", "--image-size", "48"], ["below xception's minimum of 71"]),
        (["--weights", "/no/such/weights.h5"], ["/no/such/weights.h5"]),
        (["--name", "../escape"], ["invalid run name"]),
    ],
)
def test_bad_options(image_folder, tmp_path, args, fragments):
    out = tmp_path / "results"
    result = invoke("run", "--data", image_folder, "--weights", "none", "--out", out, *args)
    assert_one_line_error(result, *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_folder(image_folder, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    for out, fragment in ((blocker, "is a file, not a folder"), (blocker / "sub", "cannot write to --out folder")):
        result = invoke("run", "--data", image_folder, "--weights", "none", "--out", out)
        assert_one_line_error(result, fragment, str(out))


def test_run_in_use_by_another_process(image_folder, tmp_path):
    import multiprocessing

    from bench.locks import RunLock

    out = tmp_path / "results"
    prepared = invoke("run", "--data", image_folder, "--weights", "none", "--out", out, "--reports", tmp_path / "reports",
                      "--name", "busy",
                      "--backbones", "mobilenet_v2", "--image-size", "32", "--max-trials", "1", "--epochs", "1",
                      "--no-export")
    assert prepared.exit_code == 0, prepared.output
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(out / "busy"), ready))
    holder.start()
    try:
        assert ready.wait(60)
        result = invoke("run", "--resume", "--name", "busy", "--out", out, "--no-export")
        assert_one_line_error(result, "run busy is in use by process", str(holder.pid))
    finally:
        holder.kill()
        holder.join()
    # the holder died without cleaning up: its stale lock is taken over
    again = invoke("run", "--resume", "--name", "busy", "--out", out, "--no-export")
    assert again.exit_code == 0, again.output
    with RunLock(out / "busy"):
        pass


def _hold_lock(run_dir, ready):
    import time

    from bench.locks import RunLock

    lock = RunLock(run_dir).acquire()  # noqa: F841 (held until the process is killed)
    ready.set()
    time.sleep(600)


def test_resume_refuses_options_that_change_results(image_folder, tmp_path):
    out = tmp_path / "results"
    first = invoke("run", "--data", image_folder, "--weights", "none", "--out", out, "--name", "g", "--no-export",
                   "--backbones", "mobilenet_v2", "--image-size", "32", "--max-trials", "1", "--epochs", "1",
                   "--tuner", "random", "--max-unfreeze", "0", "--reports", tmp_path / "reports")
    assert first.exit_code == 0, first.output
    board = (out / "g" / "leaderboard.csv").read_bytes()
    refused = invoke("run", "--resume", "--name", "g", "--out", out, "--epochs", "5", "--tuner", "bayesian",
                     "--augment", "--backbones", "mobilenet_v2")
    assert_one_line_error(refused, "--epochs 5 (run g has --epochs 1)", "--tuner bayesian (run g has --tuner random)",
                          "--augment (run g has --no-augment)", "drop them")
    assert "--backbones" not in refused.stderr  # same value as stored: allowed
    # options that do not change results are fine; the same data under another path too
    moved = tmp_path / "moved"
    import shutil

    shutil.copytree(image_folder, moved)
    allowed = invoke("run", "--resume", "--name", "g", "--out", out, "--no-export", "--reports", tmp_path / "r2",
                     "--epochs", "1", "--data", moved)
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "r2" / "g" / "report.html").exists()
    assert (out / "g" / "leaderboard.csv").read_bytes() == board
    (moved / "cat" / "img_000.png").unlink()
    changed = invoke("run", "--resume", "--name", "g", "--out", out, "--data", moved)
    assert_one_line_error(changed, "differs from the data run g started with")


def test_quiet_and_verbose_on_every_command(image_folder):
    import typer

    for name, command in typer.main.get_command(app).commands.items():
        flags = {opt for param in command.params for opt in param.opts}
        assert {"--quiet", "--verbose"} <= flags, name
    plain = invoke("scan", image_folder)
    assert plain.exit_code == 0 and "scanned 22 files" in plain.stderr
    quiet = invoke("scan", image_folder, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "" and "22 readable images" in quiet.stdout
    assert_one_line_error(invoke("scan", image_folder, "--quiet", "--verbose"), "contradict")


def test_verbose_shows_debug_messages_and_warnings_are_marked(capsys):
    import logging

    from bench.cli import configure_logging

    try:
        configure_logging(verbose=True)
        logging.getLogger("bench.search.cache").debug("a debug line")
        configure_logging()
        logging.getLogger("bench.search.cache").debug("hidden")
        logging.getLogger("bench.deploy.export").warning("not exported")
    finally:
        logging.getLogger("bench").handlers.clear()
        logging.getLogger("bench").setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "a debug line" in err and "hidden" not in err and "WARNING: not exported" in err
