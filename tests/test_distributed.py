"""KerasTuner's distributed mode: one chief and two workers share one search."""

from __future__ import annotations

import json
import os
import re
import socket

import pandas as pd
import pytest

from bench.search.distributed import ENV_ID, ENV_IP, ENV_PORT, cluster_from_env
from bench.errors import BenchError
from conftest import make_folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cluster_from_environment():
    assert cluster_from_env({}) is None
    chief = cluster_from_env({ENV_ID: "chief", ENV_IP: "10.0.0.1", ENV_PORT: "8000"})
    assert chief.is_chief and chief.job_port(2) == 8002
    worker = cluster_from_env({ENV_ID: "tuner3", ENV_IP: "10.0.0.1", ENV_PORT: "8000"})
    assert not worker.is_chief and worker.role == "worker tuner3"
    with pytest.raises(BenchError, match=f"{ENV_PORT} not set"):
        cluster_from_env({ENV_ID: "chief", ENV_IP: "10.0.0.1"})
    with pytest.raises(BenchError, match="not a port number"):
        cluster_from_env({ENV_ID: "chief", ENV_IP: "10.0.0.1", ENV_PORT: "http"})


def _run_cluster(warm, args: list, ids: tuple[str, ...] = ("chief", "tuner0", "tuner1")) -> dict[str, str]:
    """``bench ARGS`` as a chief and workers on 127.0.0.1, each a process of its own (forked by
    the ``warm`` fixture's helper); each one's stderr, after all exited 0."""
    env = {ENV_IP: "127.0.0.1", ENV_PORT: str(_free_port())}
    procs = {tuner_id: warm.start([str(a) for a in args], env={**env, ENV_ID: tuner_id}) for tuner_id in ids}
    logs = {}
    try:
        for tuner_id, proc in procs.items():
            proc.wait(timeout=900)
            logs[tuner_id] = proc.stderr
            assert proc.returncode == 0, f"{tuner_id}:\n{logs[tuner_id][-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, 9)
                proc.wait()
    return logs


@pytest.mark.slow
def test_chief_and_two_workers_run_every_trial_once(tmp_path, warm):
    data = make_folder(tmp_path / "data", {"a": 12, "b": 12}, size=48, seed=4)
    out, reports = tmp_path / "results", tmp_path / "reports"
    args = ["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--max-trials", "5", "--epochs", "2", "--tuner", "random", "--max-unfreeze", "1", "--no-export",
            "--out", out, "--reports", reports, "--name", "dist"]
    logs = _run_cluster(warm, args)

    run = out / "dist"
    trials = pd.read_csv(run / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 5 and trials["trial"].is_unique and set(trials["status"]) == {"completed"}
    assert set(trials["ran_on"]) <= {"tuner0", "tuner1"}  # the chief only serves
    # every trial was run by exactly one worker: each logs the trials it ran
    ran = {tid: [int(t) for t in re.findall(rf"trial (\d+) \(worker {tid}\): completed", logs[tid])]
           for tid in ("tuner0", "tuner1")}
    assert sorted(ran["tuner0"] + ran["tuner1"]) == sorted(trials["trial"]), ran
    assert all(trials.set_index("trial").loc[t, "ran_on"] == tid for tid, ids in ran.items() for t in ids)
    # the split and the feature cache were made once, by whichever process came first
    cached = [line for log in logs.values() for line in log.splitlines() if "cached train features" in line]
    assert len(cached) == 1, cached
    # the chief ranks and reports; the workers say so and stop
    board = json.loads((run / "leaderboard.json").read_text())
    assert [row["backbone"] for row in board if row["kind"] == "backbone"] == ["mobilenet_v2"]
    assert board[0]["status"] == "ok" and {row["status"] for row in board} == {"ok"}  # the floor rows too
    assert board[0]["trials_done"] == 5
    assert (reports / "dist" / "report.html").exists()
    for tuner_id in ("tuner0", "tuner1"):
        assert "the chief writes the leaderboard" in logs[tuner_id]


@pytest.mark.slow
def test_workers_take_trials_from_every_fold_of_a_cv_run(tmp_path, warm):
    data = make_folder(tmp_path / "data", {"a": 9, "b": 9}, size=48, seed=6)
    out, reports = tmp_path / "results", tmp_path / "reports"
    args = ["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--max-trials", "2", "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--cv", "3",
            "--no-export", "--out", out, "--reports", reports, "--name", "dcv"]
    logs = _run_cluster(warm, args)
    run = out / "dcv"
    for fold in range(3):  # every fold's trials ran once, on the workers
        trials = pd.read_csv(run / "cv" / f"r0-f{fold}" / "mobilenet_v2" / "trials.csv")
        assert len(trials) == 2 and set(trials["status"]) == {"completed"}
        assert set(trials["ran_on"]) <= {"tuner0", "tuner1"}
    cached = [line for log in logs.values() for line in log.splitlines() if "cached pool features" in line]
    assert len(cached) == 1, cached  # one backbone pass for every fold, by one process
    board = json.loads((run / "leaderboard.json").read_text())
    assert board[0]["status"] == "ok" and board[0]["cv_k"] == 3 and (run / "mobilenet_v2" / "best_model.keras").exists()


def test_the_first_process_prepares_the_run_and_the_others_join_it(tmp_path):
    from bench.search.distributed import Cluster
    from bench.run import RunConfig, open_distributed

    data = make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=32, seed=1)
    chief, worker = Cluster("chief", "127.0.0.1", 8000), Cluster("tuner0", "127.0.0.1", 8000)

    def config(**kw):
        return RunConfig.from_dict(dict(data=data, backbones="mobilenet_v2", weights="none", out=tmp_path / "out",
                                        name="j", **kw))

    with pytest.raises(BenchError, match="needs --name"):
        open_distributed(RunConfig.from_dict(dict(data=data, weights="none", out=tmp_path / "out")), {}, chief)
    first = open_distributed(config(epochs=3), {"epochs": 3}, worker)  # a worker may well arrive first
    split = (first.path / "split.json").read_bytes()
    joined = open_distributed(config(epochs=3), {"epochs": 3, "data": data}, chief)
    assert joined.path == first.path and joined.config.search.epochs == 3
    assert (first.path / "split.json").read_bytes() == split  # made once
    # --trial-timeout does not change results: each process keeps its own (the chief's rules)
    assert first.config.search.trial_timeout == 120
    timed = open_distributed(config(), {"trial_timeout": "30s"}, Cluster("tuner2", "127.0.0.1", 8000))
    assert timed.config.search.trial_timeout == 30 and timed.config.search.epochs == 3
    with pytest.raises(BenchError, match="--trial-timeout must be at least 5, got 1"):
        open_distributed(config(), {"trial_timeout": "1"}, chief)
    with pytest.raises(BenchError, match=r"worker tuner1 joining run j cannot change .*--epochs 5 \(run j has --epochs 3\)"):
        open_distributed(config(epochs=5), {"epochs": 5}, Cluster("tuner1", "127.0.0.1", 8000))
