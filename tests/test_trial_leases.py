"""Trial leases on the chief (bench.search.distributed.Leases, bench.search.kt_adapter):
a trial whose worker falls silent goes back to the queue, and a late report from that
worker is ignored. KerasTuner's own oracle and servicer without processes; then one gRPC
client and server in this process; then a real chief and two workers on 127.0.0.1, one
of them SIGKILLed in a trial."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from concurrent import futures

import keras
import keras_tuner as kt
import pandas as pd
import pytest
from keras_tuner.src import protos

from bench.search import kt_adapter
from bench.search.distributed import ENV_ID, ENV_IP, ENV_PORT, Leases, _search_over, renew_every, trial_lease
from conftest import make_folder

SERVICE = protos.get_service()


def _build(hp):
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(hp.Choice("units", [2, 4, 8]))(inputs))


def _oracle(folder, max_trials=2):
    tuner = kt.RandomSearch(hypermodel=_build, objective=kt.Objective("score", "max"), max_trials=max_trials, seed=1,
                            directory=str(folder), project_name="p", overwrite=False)
    tuner.save()  # as the chief does before it serves (KerasTuner reloads a project with a tuner file)
    return tuner.oracle


class Aborted(Exception):
    pass


class Context:
    """What the servicer reads of a gRPC call: its metadata; ``abort`` raises as gRPC's does."""

    def __init__(self, sender=None, lease=False):
        self.metadata = ([(kt_adapter.SENDER_KEY, sender)] if sender else []) + \
            ([(kt_adapter.LEASE_KEY, "renew")] if lease else [])

    def invocation_metadata(self):
        return self.metadata

    def abort(self, code, details):
        raise Aborted(code, details)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _chief(folder, timeout_s=10.0, max_trials=2):
    oracle = _oracle(folder, max_trials)
    clock = Clock()
    leases = Leases(timeout_s, clock=clock)
    server, servicer = kt_adapter.oracle_server(oracle, futures.ThreadPoolExecutor(max_workers=1), leases)
    return oracle, leases, servicer, clock


def _create(servicer, tuner_id) -> str:
    request = SERVICE.CreateTrialRequest(tuner_id=tuner_id)
    return servicer.CreateTrial(request, Context(tuner_id)).trial.trial_id


def _report(servicer, oracle, tuner_id, trial_id, score):
    """What a worker sends at the end of a trial: its metrics, then the trial as completed."""
    servicer.UpdateTrial(SERVICE.UpdateTrialRequest(trial_id=trial_id, metrics={"score": score}, step=0),
                         Context(tuner_id))
    trial = kt.engine.trial.Trial(oracle.get_space(), trial_id=trial_id, status="COMPLETED")
    servicer.EndTrial(SERVICE.EndTrialRequest(trial=trial.to_proto()), Context(tuner_id))


def _renew(servicer, tuner_id, trial_id):
    return servicer.GetTrial(SERVICE.GetTrialRequest(trial_id=trial_id), Context(tuner_id, lease=True))


def test_a_silent_workers_trial_goes_back_to_the_queue_and_its_late_report_is_ignored(tmp_path):
    oracle, leases, servicer, clock = _chief(tmp_path, timeout_s=10)
    assert _create(servicer, "tuner0") == "0" and _create(servicer, "tuner1") == "1"
    clock.now = 6
    _renew(servicer, "tuner0", "0")  # tuner0 trains and renews; tuner1 says nothing from now on
    clock.now = 10
    assert leases.requeue_silent(oracle) == []  # silent for exactly the timeout: not yet
    _report(servicer, oracle, "tuner0", "0", 0.5)
    clock.now = 10.5
    assert leases.requeue_silent(oracle) == ["1"] and leases.requeued == [("tuner1", "1")]
    assert kt_adapter.queued_trials(oracle) == ["1"] and kt_adapter.running_trials(oracle) == {}
    # every trial has been handed out and none is running, but trial 1 waits in the queue:
    # the search is not over (KerasTuner alone would stop here, or wait forever for tuner1)
    assert not _search_over(oracle)

    # tuner1 was not dead after all: its lease is refused, its reports are dropped
    with pytest.raises(Aborted, match="no longer held by worker tuner1"):
        _renew(servicer, "tuner1", "1")
    _report(servicer, oracle, "tuner1", "1", 0.99)
    assert leases.ignored_reports == [("tuner1", "1"), ("tuner1", "1")]
    assert oracle.trials["1"].status == "RUNNING" and not oracle.trials["1"].metrics.exists("score")
    assert oracle.end_order == ["0"]

    # the trial runs again on tuner0, whose result is the trial's
    assert _create(servicer, "tuner0") == "1"
    _renew(servicer, "tuner0", "1")
    _report(servicer, oracle, "tuner0", "1", 0.25)
    _report(servicer, oracle, "tuner1", "1", 0.99)  # a report later still: ignored too
    assert oracle.trials["1"].status == "COMPLETED" and oracle.trials["1"].score == 0.25
    assert oracle.end_order == ["0", "1"] and sorted(oracle.trials) == ["0", "1"]
    assert _search_over(oracle) and len(leases.ignored_reports) == 4
    assert kt_adapter.chief_may_stop(servicer, oracle) is False  # nobody asked to stop yet


def _poll(leases, oracle, clock, until: float) -> list[str]:
    """The chief's loop, every second up to ``until``: the trials it re-queued."""
    out = []
    while clock.now < until:
        clock.now = min(until, clock.now + 1)
        out += leases.requeue_silent(oracle)
    return out


def test_any_request_from_a_worker_keeps_its_trial(tmp_path):
    oracle, leases, servicer, clock = _chief(tmp_path, timeout_s=10)
    _create(servicer, "tuner0")
    for until in (8, 16, 24):  # the best trials so far: any call is contact
        assert _poll(leases, oracle, clock, until) == []
        servicer.GetBestTrials(SERVICE.GetBestTrialsRequest(num_trials=1), Context("tuner0"))
    assert _poll(leases, oracle, clock, 34) == []
    assert _poll(leases, oracle, clock, 35) == ["0"]  # silent for 11 s
    # a worker that comes back asks for work and gets the queued trial again, as a new holder
    assert _create(servicer, "tuner0") == "0" and kt_adapter.holds(oracle, "tuner0", "0")
    _report(servicer, oracle, "tuner0", "0", 0.5)
    assert oracle.trials["0"].score == 0.5 and leases.ignored_reports == []


def test_a_stalled_chief_does_not_blame_its_workers(tmp_path):
    """The chief's own process stood still (suspended, swapping) longer than the timeout:
    no worker could reach it meanwhile, so no trial goes back to the queue for that gap."""
    oracle, leases, servicer, clock = _chief(tmp_path, timeout_s=10)
    _create(servicer, "tuner0")
    leases.requeue_silent(oracle)
    clock.now = 60  # the chief's loop wakes up a minute later
    assert leases.requeue_silent(oracle) == []
    assert _poll(leases, oracle, clock, 70) == []  # and from then on the worker is silent again
    assert _poll(leases, oracle, clock, 71) == ["0"]


def test_a_requeued_trial_is_saved_to_the_oracle_state(tmp_path):
    """A chief restarted after a re-queue still has the trial queued, with no result."""
    oracle, leases, servicer, clock = _chief(tmp_path, timeout_s=5)
    _create(servicer, "tuner1")
    servicer.UpdateTrial(SERVICE.UpdateTrialRequest(trial_id="0", metrics={"score": 0.7}, step=0), Context("tuner1"))
    clock.now = 6
    assert leases.requeue_silent(oracle) == ["0"]
    reloaded = _oracle(tmp_path)
    assert reloaded._retry_queue == ["0"] and reloaded.ongoing_trials == {}
    assert not reloaded.trials["0"].metrics.exists("score")  # the silent worker's partial report is gone


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_worker_names_itself_and_learns_its_trial_went_back_to_the_queue(tmp_path, monkeypatch):
    """Over gRPC: the worker's requests carry its id, and its lease check says False once
    the chief has re-queued its trial."""
    from keras_tuner.src.distribute import oracle_client

    oracle, leases, servicer, clock = _chief(tmp_path / "chief", timeout_s=5)
    port = _free_port()
    server, servicer = kt_adapter.oracle_server(oracle, futures.ThreadPoolExecutor(max_workers=1), leases)
    assert server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
        monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner7")
        client = oracle_client.OracleClient(oracle=oracle)
        kt_adapter.identify_worker(client, "tuner7", f"127.0.0.1:{port}")
        with kt_adapter.client_timeout(10):
            trial = client.create_trial("tuner7")
            clock.now = 3
            with trial_lease(client, trial.trial_id, 5) as held:
                assert held() and leases.silent_for("tuner7") == 0  # the check itself is contact
                clock.now = 9
                assert leases.requeue_silent(oracle) == [trial.trial_id]
                assert not held()
            client.end_trial(trial)  # the late report: ignored
        assert leases.ignored_reports == [("tuner7", trial.trial_id)]
        assert kt_adapter.queued_trials(oracle) == [trial.trial_id] and oracle.end_order == []
    finally:
        server.stop(None)
    assert kt_adapter.renew_lease(client, trial.trial_id, timeout=0.5) is None  # no chief: neither held nor lost


def test_workers_renew_several_times_per_timeout():
    assert renew_every(120) == 5 and renew_every(5) == 1


def _start(warm, args: list, env: dict, tuner_id: str, **extra_env):
    """``bench ARGS`` as ``tuner_id``, a process of its own forked by the warm helper."""
    return warm.start([str(a) for a in args], env={**env, ENV_ID: tuner_id, **extra_env})


def _wait_until(condition, procs: dict, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        dead = {k: p.returncode for k, p in procs.items() if p.poll() is not None}
        assert not dead and time.monotonic() < deadline, f"{what}: not within {timeout_s} s; exited: {dead}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_not_waited_for(tmp_path, warm):
    """tuner1 takes a trial and is SIGKILLed in it (BENCH_KILL_AT=trial), never restarted:
    after --trial-timeout the chief hands the trial to tuner0, and the run ends with every
    trial once. tuner0 starts only once tuner1 holds a trial, so tuner1 surely gets one."""
    from bench.faults import ENV as KILL_AT

    data = make_folder(tmp_path / "data", {"a": 8, "b": 8}, size=32, seed=5)
    out, reports = tmp_path / "results", tmp_path / "reports"
    args = ["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
            "--max-trials", "3", "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--no-export",
            "--trial-timeout", "6", "--out", out, "--reports", reports, "--name", "lost"]
    env = {ENV_IP: "127.0.0.1", ENV_PORT: str(_free_port())}
    oracle_json = out / "lost" / "mobilenet_v2" / "tuner" / "oracle.json"

    def tuner1_holds_a_trial() -> bool:
        return oracle_json.exists() and "tuner1" in json.loads(oracle_json.read_text())["ongoing_trials"]

    t0 = time.monotonic()
    procs = {"chief": _start(warm, args, env, "chief"), "tuner1": _start(warm, args, env, "tuner1", **{KILL_AT: "trial"})}
    logs = {}
    try:
        _wait_until(tuner1_holds_a_trial, procs, 300, "tuner1 takes a trial")
        lost_trial = json.loads(oracle_json.read_text())["ongoing_trials"]["tuner1"]
        held_at = time.monotonic() - t0
        procs["tuner0"] = _start(warm, args, env, "tuner0")
        for tuner_id, proc in procs.items():
            proc.wait(timeout=300)
            logs[tuner_id] = proc.stderr
        wall = time.monotonic() - t0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    for tuner_id, text in logs.items():
        (tmp_path / f"{tuner_id}.log").write_text(text)
    assert procs["tuner1"].returncode == -signal.SIGKILL, logs["tuner1"][-3000:]
    for tuner_id in ("chief", "tuner0"):
        assert procs[tuner_id].returncode == 0, f"{tuner_id}:\n{logs[tuner_id][-3000:]}"

    requeued = re.findall(r"worker (\S+) silent for (\d+) s: trial (\d+) goes back to the queue", logs["chief"])
    assert [(w, t) for w, _, t in requeued] == [("tuner1", lost_trial)], logs["chief"][-3000:]
    assert int(requeued[0][1]) >= 6
    run = out / "lost"
    trials = pd.read_csv(run / "mobilenet_v2" / "trials.csv", dtype={"trial": str})
    assert sorted(trials["trial"]) == ["0", "1", "2"] and set(trials["status"]) == {"completed"}
    assert set(trials["ran_on"]) == {"tuner0"}  # the killed worker's trial ran on tuner0, once
    ran = re.findall(r"trial (\d+) \(worker tuner0\): completed", logs["tuner0"])
    assert sorted(ran) == ["0", "1", "2"], ran
    state = json.loads(oracle_json.read_text())
    assert sorted(state["end_order"]) == ["0", "1", "2"] and state["retry_queue"] == []
    board = json.loads((run / "leaderboard.json").read_text())
    assert board[0]["status"] == "ok" and board[0]["trials_done"] == 3
    print(f"\nlost worker: tuner1 killed in trial {lost_trial}; chief: worker {requeued[0][0]} silent for "
          f"{requeued[0][1]} s: trial {requeued[0][2]} goes back to the queue; trials {len(trials)} "
          f"(ran on: {', '.join(f'{k} {v}' for k, v in trials['ran_on'].value_counts().items())}), each once; wall time {wall:.1f} s (tuner1 took its trial at {held_at:.1f} s)")
