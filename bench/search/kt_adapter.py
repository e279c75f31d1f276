"""Every KerasTuner internal that bench relies on, in one place.

bench drives KerasTuner through its public API: ``Tuner`` subclasses with their own
``run_trial`` and ``on_trial_end``, ``oracle.trials``, ``oracle.get_best_trials``,
``tuner.load_model`` and ``tuner.get_trial_dir``. Six things have no public form; each
lives here, and ``tests/test_kt_adapter.py`` pins the KerasTuner behaviour it assumes, so
an upgrade that changes one fails that test by name rather than a run:

* :func:`atomic_state_writes`: KerasTuner saves all its state (``oracle.json``, the
  tuner's json, every ``trial.json``) through ``keras_tuner.src.utils.save_json``, looked
  up when called. While the block runs, that function writes through a temporary file
  and a rename, so a kill mid-write leaves the previous complete file.
* :func:`checkpoint_path` / :func:`build_config_path`: where a trial's weights and build
  config go (``Tuner._get_checkpoint_fname`` / ``_get_build_config_fname``); bench writes
  them itself and ``Tuner.load_model`` reads them back.
* :class:`BuildHook`: ``Tuner.load_model`` builds the model through ``Tuner._try_build``;
  the hook routes that build to the tuner's own :meth:`BuildHook.build_trial_model`, and
  :func:`build_model` is KerasTuner's plain build (``Tuner._build_hypermodel``).
* :func:`settle_reloaded_trials`: the oracle's retry queue (``Oracle._retry_queue``) and
  its ``start_order`` / ``end_order``, after a crash.
* :func:`oracle_server` / :func:`chief_may_stop`: the chief's gRPC servicer
  (``keras_tuner.src.distribute.oracle_chief``).
* :func:`client_timeout`: how long a worker's request to the chief waits
  (``keras_tuner.src.distribute.oracle_client.TIMEOUT``, read at each call).

The two module attributes (``save_json``, ``TIMEOUT``) are replaced only inside a
``with`` block and restored after it; nothing is patched for the life of the process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.atomic import write_text_atomic


def _save_json_atomic(path, obj) -> str:
    """KerasTuner's ``save_json`` contract (write ``obj`` as JSON, return the text), atomically."""
    text = json.dumps(obj)
    write_text_atomic(Path(path), text)
    return text


@contextmanager
def atomic_state_writes() -> Iterator[None]:
    """KerasTuner writes its state files atomically while the block runs."""
    from keras_tuner.src import utils

    previous = utils.save_json
    utils.save_json = _save_json_atomic
    try:
        yield
    finally:
        utils.save_json = previous


def checkpoint_path(tuner, trial_id: str) -> Path:
    """Where ``tuner.load_model`` reads the weights of trial ``trial_id``."""
    return Path(tuner._get_checkpoint_fname(trial_id))


def build_config_path(tuner, trial_id: str) -> Path:
    """Where ``tuner.load_model`` reads the build config of trial ``trial_id``."""
    return Path(tuner._get_build_config_fname(trial_id))


def build_model(tuner, hp):
    """KerasTuner's own build of the hypermodel for ``hp`` (no session clearing, no checks)."""
    return tuner._build_hypermodel(hp)


class BuildHook:
    """Tuner mixin: every build KerasTuner makes itself (``load_model``) goes through
    :meth:`build_trial_model`, as bench's trials do."""

    def build_trial_model(self, hp):  # pragma: no cover - the tuner defines it
        raise NotImplementedError

    def _try_build(self, hp):
        return self.build_trial_model(hp)


def settle_reloaded_trials(oracle) -> None:
    """Never run a finished trial again after a crash.

    KerasTuner ends a trial with two writes: the trial's ``trial.json`` (status, score),
    then ``oracle.json`` (which trials are still running). A process killed between them
    leaves a trial that is finished in its own file but "running" in the oracle's, and on
    reload KerasTuner queues every running trial for a retry. Trials whose own file says
    they ended are taken out of that queue and counted as ended.

    Starting a trial is two writes as well (``trial.json``, then ``oracle.json``): a trial
    killed between them exists on disk, counts towards ``max_trials``, but is neither
    running nor queued in the oracle's state, so it would never run. Such trials are
    queued for a run.
    """
    ended = {tid for tid, trial in oracle.trials.items() if trial.status in ("COMPLETED", "FAILED")}
    oracle._retry_queue = [tid for tid in oracle._retry_queue if tid not in ended]
    oracle.end_order.extend(tid for tid in sorted(ended) if tid not in oracle.end_order)
    orphans = sorted(tid for tid in oracle.trials if tid not in ended and tid not in oracle._retry_queue)
    oracle.start_order.extend(tid for tid in orphans if tid not in oracle.start_order)
    oracle._retry_queue.extend(orphans)


def oracle_server(oracle, executor):
    """``(gRPC server, servicer)``: KerasTuner's chief servicer for ``oracle``, registered
    on a new server running on ``executor``; the caller binds a port and starts it."""
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(executor)
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    return server, servicer


def chief_may_stop(servicer, oracle) -> bool:
    """KerasTuner's own end of a chief's service: a worker asked to stop and no trial is left."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    return bool(servicer.stop_triggered and exit_chief(oracle))


@contextmanager
def client_timeout(seconds: float) -> Iterator[None]:
    """A worker's requests to the chief wait at most ``seconds`` while the block runs."""
    from keras_tuner.src.distribute import oracle_client

    previous = oracle_client.TIMEOUT
    oracle_client.TIMEOUT = seconds
    try:
        yield
    finally:
        oracle_client.TIMEOUT = previous
