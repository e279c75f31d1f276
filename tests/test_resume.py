"""Kill a real `bench run` mid-search and finish it with --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_folder


def _bench(*args) -> list[str]:
    return [sys.executable, "-m", "bench.cli", *map(str, args)]


def _completed(run: Path) -> dict[str, float]:
    """Trials KerasTuner has recorded as completed -> mtime of their bench history file.

    (bench_trial.json is written inside the trial, just before KerasTuner marks it done:
    a trial killed in between is the in-flight one and legitimately runs again.)
    """
    done = {}
    for trial_json in run.glob("mobilenet_v2/tuner/trial_*/trial.json"):
        try:
            status = json.loads(trial_json.read_text()).get("status")
        except ValueError:  # being written right now
            continue
        history = trial_json.parent / "bench_trial.json"
        if status == "COMPLETED" and history.exists():
            done[trial_json.parent.name] = history.stat().st_mtime
    return done


@pytest.mark.slow
def test_kill_during_search_then_resume(tmp_path):
    data = make_folder(tmp_path / "data", {"a": 12, "b": 12}, size=48, seed=9)
    out = tmp_path / "results"
    args = ["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--max-trials", "6", "--epochs", "2", "--tuner", "random", "--max-unfreeze", "1", "--out", out,
            "--name", "k"]
    run = out / "k"
    proc = subprocess.Popen(_bench(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(_completed(run)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _completed(run)
    split_before = (run / "split.json").read_bytes()
    cache_before = {p.name: p.stat().st_mtime for p in (run / "cache").glob("*.npy")}
    assert 2 <= len(done_before) < 6 and not (run / "leaderboard.json").exists()

    resumed = subprocess.run(_bench("run", "--resume", "--name", "k", "--out", out), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "split.json").read_bytes() == split_before
    assert {p.name: p.stat().st_mtime for p in (run / "cache").glob("*.npy")} == cache_before
    done_after = _completed(run)
    for trial, mtime in done_before.items():
        assert done_after[trial] == mtime, f"completed {trial} ran again"
    trials = pd.read_csv(run / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
    board = json.loads((run / "leaderboard.json").read_text())
    assert board[0]["backbone"] == "mobilenet_v2" and board[0]["status"] == "ok"
    # a finished run resumed again does nothing new
    again = subprocess.run(_bench("run", "--resume", "--name", "k", "--out", out), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "finished earlier, skipped" in again.stderr
