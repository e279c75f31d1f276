"""Kill a real `bench run` (SIGKILL) while caching, mid-search and during the final
evaluation, and finish it with --resume: no completed trial runs again and the
leaderboard has the shape of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import completed_trials, make_folder


def _args(*args) -> list[str]:
    return [str(a) for a in args]


def _completed(run: Path) -> dict[str, float]:
    return completed_trials(run)


@pytest.mark.slow
def test_kill_during_search_then_resume(tmp_path, warm):
    data = make_folder(tmp_path / "data", {"a": 12, "b": 12}, size=48, seed=9)
    out = tmp_path / "results"
    args = ["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--max-trials", "6", "--epochs", "2", "--tuner", "random", "--max-unfreeze", "1", "--no-export", "--out", out,
            "--reports", tmp_path / "reports",
            "--name", "k"]
    run = out / "k"
    proc = warm.start(_args(*args))
    deadline = time.time() + 300
    while len(_completed(run)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _completed(run)
    split_before = (run / "split.json").read_bytes()
    cache_before = {p.name: p.stat().st_mtime for p in (run / "cache").glob("*.npy")}
    assert 2 <= len(done_before) < 6 and not (run / "leaderboard.json").exists()

    resumed = warm.run(_args("run", "--resume", "--name", "k", "--out", out, "--no-export"))
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
    again = warm.run(_args("run", "--resume", "--name", "k", "--out", out, "--no-export"))
    assert again.returncode == 0 and "finished earlier, skipped" in again.stderr


ARGS = ["--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--max-trials", "3",
        "--epochs", "2", "--tuner", "random", "--max-unfreeze", "1", "--no-export"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, warm):
    """The data and the leaderboard of the same run, never interrupted."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = make_folder(root / "data", {"a": 12, "b": 12}, size=48, seed=9)
    out = root / "results"
    done = warm.run(_args("run", "--data", data, *ARGS, "--out", out, "--reports", root / "reports", "--name", "u"))
    assert done.returncode == 0, done.stderr[-3000:]
    return data, pd.read_csv(out / "u" / "leaderboard.csv")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["caching", "final"])
def test_kill_at_crash_point_then_resume(tmp_path, uninterrupted, point, warm):
    data, reference = uninterrupted
    out = tmp_path / "results"
    run = out / "k"
    killed = warm.run(_args("run", "--data", data, *ARGS, "--out", out, "--reports", tmp_path / "reports", "--name", "k"),
                      env={"BENCH_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run / "leaderboard.csv").exists() and not (run / "mobilenet_v2" / "result.json").exists()
    entries = sorted((run / "cache").glob("*.npy"))
    done_before = _completed(run)
    if point == "caching":
        assert len(entries) == 1 and not done_before  # killed after the first of 4 cache entries
    else:
        assert len(entries) == 4 and len(done_before) == 3 and (run / "mobilenet_v2" / "best_model.keras").exists()
    first_entry = entries[0].stat().st_mtime_ns

    resumed = warm.run(_args("run", "--resume", "--name", "k", "--out", out, "--no-export"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert entries[0].stat().st_mtime_ns == first_entry, "a valid cache entry was rebuilt"
    assert len(list((run / "cache").glob("*.npy"))) == 4
    done_after = _completed(run)
    assert len(done_after) == 3 and all(done_after[t] == m for t, m in done_before.items()), "a completed trial ran again"
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board.columns) == list(reference.columns) and len(board) == len(reference)
    assert board.loc[0, "status"] == "ok" and board.loc[0, "trials_done"] == 3
    if point == "caching":
        assert "cached train features" in resumed.stderr


def test_a_preparation_stopped_before_run_json_is_prepared_again(tmp_path):
    """Killed before run.json landed, a run folder holds only its preparation's files:
    there is no run to resume, and the same command prepares it again over them. A folder
    holding anything else is still refused."""
    from bench.config import RunConfig
    from bench.errors import BenchError
    from bench.run import prepare_run

    data = make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=32, seed=1)

    def config():
        return RunConfig.from_dict(dict(data=data, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                        out=tmp_path / "results", name="r", max_trials=1, epochs=1))

    run = prepare_run(config())
    (run.path / "run.json").unlink()  # as a kill just before that write leaves it
    (run.path / ".run.json.tmp-123").write_text("{")  # and the temporary file of the write
    again = prepare_run(config())
    assert (again.path / "run.json").is_file() and again.path == run.path
    (run.path / "run.json").unlink()
    (run.path / "notes.txt").write_text("mine")
    with pytest.raises(BenchError, match="already exists; continue it with --resume"):
        prepare_run(config())
    assert (run.path / "notes.txt").read_text() == "mine"
