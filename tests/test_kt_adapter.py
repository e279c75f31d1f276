"""The KerasTuner behaviour bench relies on beyond its public API (bench.search.kt_adapter).

Each test pins one assumption of the adapter against the installed KerasTuner: a version
that changes it fails here, by name, instead of in a run (a torn oracle.json after a
crash, a finished trial run twice, a worker waiting an hour for a chief).
"""

from __future__ import annotations

import json
import os

import keras
import keras_tuner as kt
import numpy as np
import pytest

from bench.search import kt_adapter


def _build(hp):
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(hp.Choice("units", [2, 4]), name="dense")(inputs)
    return keras.Model(inputs, outputs)


class _Tuner(kt_adapter.BuildHook, kt.RandomSearch):
    def __init__(self, *args, **kwargs):
        self.builds = 0
        super().__init__(*args, **kwargs)

    def build_trial_model(self, hp):
        self.builds += 1
        return kt_adapter.build_model(self, hp)


def _tuner(folder, **kwargs):
    return _Tuner(hypermodel=_build, objective=kt.Objective("score", "max"), max_trials=3, seed=1,
                  directory=str(folder), project_name="p", overwrite=False, **kwargs)


def test_every_state_file_is_saved_through_save_json_looked_up_at_call_time(tmp_path, monkeypatch):
    """oracle.json, the tuner's json and trial.json all go through ``utils.save_json``, the
    name atomic_state_writes replaces (KerasTuner looks it up on each save, not at import)."""
    from keras_tuner.src import utils

    written = []
    real = utils.save_json
    monkeypatch.setattr(utils, "save_json", lambda path, obj: written.append(os.path.basename(path)) or real(path, obj))
    tuner = _tuner(tmp_path)
    trial = tuner.oracle.create_trial("tuner0")
    tuner.oracle.update_trial(trial.trial_id, {"score": 0.5})
    trial.status = "COMPLETED"
    tuner.oracle.end_trial(trial)
    tuner.save()
    assert {"oracle.json", "trial.json", "tuner0.json"} <= set(written)


def test_atomic_state_writes_keep_the_previous_file_and_restore_save_json(tmp_path, monkeypatch):
    from keras_tuner.src import utils

    original = utils.save_json
    tuner = _tuner(tmp_path)
    oracle_json = tmp_path / "p" / "oracle.json"
    with kt_adapter.atomic_state_writes():
        assert utils.save_json is not original
        tuner.oracle.create_trial("tuner0")  # saves the oracle's state
        before = oracle_json.read_text()
        assert list(json.loads(before)["ongoing_trials"]) == ["tuner0"]
        tuner.oracle.end_order.append("x")  # changes it ...

        def lost_power(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", lost_power)
        with pytest.raises(OSError):
            tuner.oracle.save()  # ... whose write is cut short
        monkeypatch.undo()
    assert oracle_json.read_text() == before
    assert not [p for p in oracle_json.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert utils.save_json is original  # only inside the block
    with pytest.raises(RuntimeError), kt_adapter.atomic_state_writes():
        raise RuntimeError("a failed search")
    assert utils.save_json is original


def test_load_model_builds_through_the_hook_and_reads_the_adapters_paths(tmp_path):
    """``Tuner.load_model`` builds with ``_try_build`` (bench's hook) and reads the weights
    from ``_get_checkpoint_fname`` (checkpoint_path), where bench's trial loop writes them."""
    tuner = _tuner(tmp_path)
    trial = tuner.oracle.create_trial("tuner0")
    model = tuner.build_trial_model(trial.hyperparameters)
    weights = [np.full(w.shape, 0.25 * (i + 1), "float32") for i, w in enumerate(model.weights)]
    model.set_weights(weights)
    checkpoint = kt_adapter.checkpoint_path(tuner, trial.trial_id)
    assert checkpoint.parent == kt_adapter.build_config_path(tuner, trial.trial_id).parent
    assert str(checkpoint.parent) == tuner.get_trial_dir(trial.trial_id)
    model.save_weights(checkpoint)
    kt_adapter.build_config_path(tuner, trial.trial_id).write_text(json.dumps(model.get_build_config()))
    builds = tuner.builds
    loaded = tuner.load_model(trial)
    assert tuner.builds == builds + 1
    for got, want in zip(loaded.get_weights(), weights):
        np.testing.assert_array_equal(got, want)


def test_build_model_is_the_plain_build_of_the_hypermodel(tmp_path):
    tuner = _tuner(tmp_path)
    hp = kt.HyperParameters()
    hp.Fixed("units", 4)
    model = kt_adapter.build_model(tuner, hp)
    assert isinstance(model, keras.Model) and model.get_layer("dense").units == 4


def _crash_with_a_running_trial(folder, status: str | None):
    """A tuner that started a trial and was killed; ``status``: what the trial's own file says."""
    tuner = _tuner(folder)
    trial = tuner.oracle.create_trial("tuner0")
    tuner.save()  # KerasTuner reloads a project whose tuner file exists
    if status is not None:
        path = folder / "p" / f"trial_{trial.trial_id}" / "trial.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "status": status, "score": 0.5}))
    return trial.trial_id


def test_reload_queues_running_trials_for_retry(tmp_path):
    """What settle_reloaded_trials corrects: on reload KerasTuner moves every trial the
    oracle's file lists as running into ``_retry_queue`` and hands it out again first."""
    tid = _crash_with_a_running_trial(tmp_path, status=None)
    oracle = _tuner(tmp_path).oracle
    assert oracle._retry_queue == [tid] and oracle.ongoing_trials == {}
    assert isinstance(oracle.start_order, list) and isinstance(oracle.end_order, list)
    assert oracle.create_trial("tuner0").trial_id == tid


def test_settle_takes_a_trial_that_ended_in_its_own_file_out_of_the_retry_queue(tmp_path):
    tid = _crash_with_a_running_trial(tmp_path, status="COMPLETED")
    oracle = _tuner(tmp_path).oracle
    assert oracle._retry_queue == [tid]
    kt_adapter.settle_reloaded_trials(oracle)
    assert oracle._retry_queue == [] and tid in oracle.end_order
    assert oracle.create_trial("tuner0").trial_id != tid


def test_settle_queues_a_trial_the_oracle_never_recorded(tmp_path):
    """Killed between a new trial's trial.json and oracle.json: the trial exists only on disk."""
    tuner = _tuner(tmp_path)
    tuner.save()
    state = (tmp_path / "p" / "oracle.json").read_text()
    tid = tuner.oracle.create_trial("tuner0").trial_id
    (tmp_path / "p" / "oracle.json").write_text(state)  # oracle.json from before the trial started
    oracle = _tuner(tmp_path).oracle
    assert tid in oracle.trials and oracle._retry_queue == [] and tid not in oracle.start_order
    kt_adapter.settle_reloaded_trials(oracle)
    assert oracle._retry_queue == [tid] and tid in oracle.start_order
    assert oracle.create_trial("tuner0").trial_id == tid


def test_a_project_killed_before_its_first_tuner_file_is_reloaded(tmp_path):
    """KerasTuner writes the tuner's own file after the trial's trial.json and oracle.json, and
    reloads only a project that has it: killed between them, a finished first trial would run
    again. keep_started_project writes the file (the tuner's state: an empty dict) first."""
    tuner = _tuner(tmp_path)
    assert tuner.get_state() == {}
    trial = tuner.oracle.create_trial("tuner0")
    trial.status = "COMPLETED"
    tuner.oracle.update_trial(trial.trial_id, {"score": 0.5})
    tuner.oracle.end_trial(trial)  # trial.json and oracle.json written; killed before tuner0.json
    assert not (tmp_path / "p" / "tuner0.json").exists()
    assert _tuner(tmp_path).oracle.trials == {}  # KerasTuner alone: a new oracle, the trial runs again
    kt_adapter.keep_started_project(tmp_path / "p", "tuner0")
    oracle = _tuner(tmp_path).oracle
    kt_adapter.settle_reloaded_trials(oracle)  # as bench.search.tuner.make_tuner does
    assert oracle.trials[trial.trial_id].status == "COMPLETED" and trial.trial_id in oracle.end_order
    assert oracle.create_trial("tuner0").trial_id != trial.trial_id


def test_the_oracle_keeps_one_trial_per_worker_until_it_reports(tmp_path):
    """What trial leases rely on: ``ongoing_trials`` is keyed by worker id, a worker that
    asks again gets the trial it holds, the retry queue is handed out before any new trial
    (from its end), and ``end_trial`` takes the trial out of ``ongoing_trials``."""
    oracle = _tuner(tmp_path).oracle
    first = oracle.create_trial("tuner0")
    assert oracle.create_trial("tuner0") is first and set(oracle.ongoing_trials) == {"tuner0"}
    second = oracle.create_trial("tuner1")
    assert kt_adapter.running_trials(oracle) == {"tuner0": first.trial_id, "tuner1": second.trial_id}
    assert kt_adapter.requeue(oracle, "tuner1", second.trial_id) and oracle._retry_queue == [second.trial_id]
    assert not kt_adapter.requeue(oracle, "tuner1", second.trial_id)  # no longer its trial
    assert oracle.create_trial("tuner2").trial_id == second.trial_id
    oracle.update_trial(first.trial_id, {"score": 0.5})
    first.status = "COMPLETED"
    oracle.end_trial(first)
    assert kt_adapter.running_trials(oracle) == {"tuner2": second.trial_id}


def test_oracle_server_serves_keras_tuners_servicer(tmp_path):
    from concurrent import futures

    from bench.search.distributed import Leases
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    oracle = _tuner(tmp_path).oracle
    server, servicer = kt_adapter.oracle_server(oracle, futures.ThreadPoolExecutor(max_workers=1), Leases(60))
    assert isinstance(servicer, OracleServicer)
    assert servicer.oracle is oracle and servicer.stop_triggered is False
    assert not kt_adapter.chief_may_stop(servicer, oracle)
    servicer.stop_triggered = True  # a worker asked to stop, and no trial is running or asked for
    oracle.tuner_ids = set()
    assert kt_adapter.chief_may_stop(servicer, oracle)
    oracle.create_trial("tuner0")  # a trial still running: the chief goes on serving
    assert not kt_adapter.chief_may_stop(servicer, oracle)
    server.stop(None)


def test_client_timeout_is_read_by_each_request_and_restored(monkeypatch):
    from keras_tuner.src.distribute import oracle_client

    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    client = oracle_client.OracleClient(oracle=None)
    seen = []

    class Stub:
        def CreateTrial(self, request, **kwargs):
            seen.append(kwargs["timeout"])
            raise KeyError("no chief")

    client.stub = Stub()
    original = oracle_client.TIMEOUT
    with kt_adapter.client_timeout(7.5):
        with pytest.raises(KeyError):
            client.create_trial("tuner0")
    assert seen == [7.5] and oracle_client.TIMEOUT == original
