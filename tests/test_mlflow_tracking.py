"""``bench run --mlflow URI`` against a real MLflow tracking server (SQLite backend store on
127.0.0.1, a free port), read back through ``MlflowClient``; a server that is down stops
the run in one line before any work."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app

mlflow = pytest.importorskip("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "artifacts"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 120 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def test_a_run_is_logged_as_parent_backbone_and_trial_runs(server, image_folder, tmp_path):
    result = CliRunner().invoke(app, [
        "run", "--data", str(image_folder), "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
        "--max-trials", "2", "--epochs", "2", "--tuner", "random", "--max-unfreeze", "0",
        "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--name", "tracked",
        "--mlflow", server])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("bench")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "tracked")
    run_json = __import__("json").loads((tmp_path / "results" / "tracked" / "run.json").read_text())
    assert parent.data.tags["bench.data_hash"] == run_json["data_hash"] and parent.data.tags["bench.split_seed"] == "0"
    assert parent.data.params["backbones"] and "test_roc_auc" in parent.data.metrics
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    floor = [c.info.run_name for c in children if c.data.tags.get("bench.level") == "floor"]
    assert sorted(floor) == ["content-logistic", "majority", "mobilenet_v2:linear-probe"]
    children = [c for c in children if c.data.tags.get("bench.level") == "backbone"]
    assert [c.info.run_name for c in children] == ["mobilenet_v2"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == children[0].info.run_id]
    assert len(trials) == 2 and all("learning_rate" in t.data.params for t in trials)
    history = client.get_metric_history(trials[0].info.run_id, "val_auc")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "report", "export"} <= artifacts
    report = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report.html" in report
    # logging the same finished run again reuses the parent run
    from bench.mlflow_tracking import log_run

    assert log_run(server, tmp_path / "results" / "tracked", tmp_path / "reports") == parent.info.run_id


def test_a_server_that_is_down_stops_the_run_before_any_work(image_folder, tmp_path):
    down = f"http://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(app, ["run", "--data", str(image_folder), "--backbones", "mobilenet_v2",
                                      "--weights", "none", "--out", str(tmp_path / "results"), "--name", "x",
                                      "--mlflow", down])
    assert result.exit_code == 2 and f"cannot reach the MLflow tracking server at {down}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "results" / "x").exists()
