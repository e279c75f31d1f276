"""Every KerasTuner internal that bench relies on, in one place.

bench drives KerasTuner through its public API: ``Tuner`` subclasses with their own
``run_trial`` and ``on_trial_end``, ``oracle.trials``, ``oracle.get_best_trials``,
``tuner.load_model`` and ``tuner.get_trial_dir``. Seven things have no public form; each
lives here, and ``tests/test_kt_adapter.py`` pins the KerasTuner behaviour it assumes, so
an upgrade that changes one fails that test by name rather than a run:

* :func:`atomic_state_writes`: KerasTuner saves all its state (``oracle.json``, the
  tuner's json, every ``trial.json``) through ``keras_tuner.src.utils.save_json``, looked
  up when called. While the block runs, that function writes through a temporary file
  and a rename, so a kill mid-write leaves the previous complete file.
* :func:`checkpoint_path` / :func:`build_config_path`: where a trial's weights and build
  config go (``Tuner._get_checkpoint_fname`` / ``_get_build_config_fname``); bench writes
  them itself and ``Tuner.load_model`` reads them back. A head trained without a Keras
  model keeps its arrays in :func:`head_checkpoint_path` instead (the trial's own folder,
  ``tuner.get_trial_dir``), which bench's tuner reads itself.
* :class:`BuildHook`: ``Tuner.load_model`` builds the model through ``Tuner._try_build``;
  the hook routes that build to the tuner's own :meth:`BuildHook.build_trial_model`, and
  :func:`build_model` is KerasTuner's plain build (``Tuner._build_hypermodel``).
* :func:`keep_started_project`: KerasTuner reloads a project only when the tuner's own
  file (``tuner0.json``, ``BaseTuner._get_tuner_fname``) exists.
* :func:`settle_reloaded_trials`: the oracle's retry queue (``Oracle._retry_queue``) and
  its ``start_order`` / ``end_order``, after a crash.
* :func:`upcoming_trials`: the values of the trials the oracle will create next, while
  it draws them at random whatever the results (``RandomSearchOracle``; and
  ``BayesianOptimizationOracle`` before ``num_initial_points`` trials completed): a dry
  run of ``Oracle._random_values`` on its seed state (``_seed_state``) and the values
  tried so far (``_tried_so_far``, ``_compute_values_hash``), both put back after it.
* :func:`oracle_server` / :func:`chief_may_stop`: the chief's gRPC servicer
  (``keras_tuner.src.distribute.oracle_chief``).
* :func:`client_timeout`: how long a worker's request to the chief waits
  (``keras_tuner.src.distribute.oracle_client.TIMEOUT``, read at each call).
* Trial leases (:func:`identify_worker`, :func:`renew_lease`, :func:`running_trials`,
  :func:`requeue`, :func:`queued_trials`): KerasTuner's reports name a trial but not the
  worker that sends them, and its oracle keeps a trial in ``Oracle.ongoing_trials`` (keyed
  by worker) until that worker reports. bench's workers name themselves in the gRPC
  metadata of every request (a client interceptor on ``OracleClient.stub``); the chief's
  servicer (a subclass of KerasTuner's) reads it, counts every request as contact, and
  accepts a report only from the worker the oracle lists as running that trial. A silent
  worker's trial moves from ``ongoing_trials`` to ``Oracle._retry_queue``.

The two module attributes (``save_json``, ``TIMEOUT``) are replaced only inside a
``with`` block and restored after it; nothing is patched for the life of the process.
"""

from __future__ import annotations

import functools
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


def head_checkpoint_path(tuner, trial_id: str) -> Path:
    """Where bench keeps the weights of a trial whose head trained without a Keras model
    (:meth:`bench.search.hypermodel.BenchHyperModel.fit_rows`): its arrays in
    ``get_weights()`` order, read back by the tuner's ``load_model``."""
    return Path(tuner.get_trial_dir(trial_id)) / "head.weights.npz"


def has_checkpoint(tuner, trial_id: str) -> bool:
    """Whether trial ``trial_id`` saved its weights, in either form."""
    return checkpoint_path(tuner, trial_id).exists() or head_checkpoint_path(tuner, trial_id).exists()


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


def keep_started_project(project_dir: Path, tuner_id: str) -> None:
    """Make KerasTuner reload a project whose oracle has started, before a tuner is made on it.

    KerasTuner reloads a project only when the tuner's own file ``<tuner_id>.json`` exists,
    and writes it last at the end of a trial: the trial's ``trial.json``, ``oracle.json``,
    then the tuner's file. A process killed before the first trial's tuner file landed
    leaves a finished trial that a new tuner would not reload: its oracle would start
    afresh and run that trial again. Where ``oracle.json`` exists and the tuner's file does
    not, the tuner's file is written with the tuner's state (``BaseTuner.get_state``: an
    empty dict), so the new tuner reloads the oracle and its trials."""
    project_dir = Path(project_dir)
    tuner_file = project_dir / f"{tuner_id}.json"
    if (project_dir / "oracle.json").exists() and not tuner_file.exists():
        write_text_atomic(tuner_file, json.dumps({}))


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


#: gRPC metadata keys: the worker that sends a request; a lease renewal.
SENDER_KEY, LEASE_KEY = "bench-tuner-id", "bench-lease"


def upcoming_trials(oracle, n: int) -> list[tuple[int, dict]]:
    """``(trial number, values)`` of up to ``n`` trials ``oracle`` creates after those it
    holds, as long as it draws them at random whatever the results; none when it may not
    (another oracle, a trial waiting to be retried, the search space exhausted). The
    oracle's state is as before. The values are those its ``create_trial`` gives, provided
    every trial in between completes or fails (no trial is retried)."""
    import keras_tuner as kt

    kind = type(oracle)
    if kind is kt.oracles.RandomSearchOracle:
        random_left = n
    elif kind is kt.oracles.BayesianOptimizationOracle:
        completed = sum(t.status == "COMPLETED" for t in oracle.trials.values())
        initial = oracle.num_initial_points or max(3 * len(oracle.hyperparameters.space), 3)
        random_left = initial - completed - 1  # the trial running now completes first
    else:
        return []
    if oracle._retry_queue:
        return []
    held = len(oracle.trials)
    n = min(n, random_left, (oracle.max_trials or held + n) - held)
    seed_state, tried = oracle._seed_state, set(oracle._tried_so_far)
    out = []
    try:
        for k in range(max(0, n)):
            values = oracle._random_values()
            if values is None:
                break
            hps = oracle.hyperparameters.copy()
            hps.values = values
            hps.ensure_active_values()
            oracle._tried_so_far.add(oracle._compute_values_hash(hps.values))
            out.append((held + k, hps.values))
    finally:
        oracle._seed_state, oracle._tried_so_far = seed_state, tried
    return out


def _locked(func):
    """``func(oracle, ...)`` under the oracle's own lock (KerasTuner's ``synchronized``,
    re-entrant: the oracle's methods called inside do not wait for it)."""

    @functools.wraps(func)
    def call(oracle, *args, **kwargs):
        from keras_tuner.src.engine.oracle import synchronized

        return synchronized(func)(oracle, *args, **kwargs)

    return call


@_locked
def holds(oracle, tuner_id, trial_id: str) -> bool:
    """The oracle lists worker ``tuner_id`` as running trial ``trial_id``."""
    trial = oracle.ongoing_trials.get(tuner_id)
    return trial is not None and trial.trial_id == trial_id


@_locked
def _if_held(oracle, tuner_id, trial_id: str, report, ignored):
    """``report()`` when ``tuner_id`` holds ``trial_id`` (one step under the oracle's lock,
    so a re-queue cannot fall between the check and the report), else ``ignored()``."""
    return report() if holds(oracle, tuner_id, trial_id) else ignored()


@_locked
def running_trials(oracle) -> dict[str, str]:
    """Worker id -> the id of the trial the oracle has handed it and not yet seen end."""
    return {tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()}


def queued_trials(oracle) -> list[str]:
    """Trials waiting in the oracle's queue to be handed out again."""
    return list(oracle._retry_queue)


@_locked
def requeue(oracle, tuner_id: str, trial_id: str) -> bool:
    """Take ``trial_id`` from worker ``tuner_id`` and queue it to be handed out next.

    Whatever the worker reported for it is dropped (the trial runs again from the start),
    and the worker no longer counts as one the chief waits for; a request from it later
    makes it a worker again. False when the worker no longer holds the trial."""
    from keras_tuner.src.engine.metrics_tracking import MetricsTracker

    if not holds(oracle, tuner_id, trial_id):
        return False
    trial = oracle.ongoing_trials.pop(tuner_id)
    oracle.tuner_ids.discard(tuner_id)
    trial.metrics, trial.score, trial.best_step = MetricsTracker(), None, 0
    oracle._retry_queue.append(trial_id)  # handed out before any new trial (the queue pops from its end)
    oracle._save_trial(trial)
    oracle.save()
    return True


def _sender(context) -> str | None:
    return dict(context.invocation_metadata() or ()).get(SENDER_KEY)


def _leased_servicer(oracle, leases):
    """KerasTuner's chief servicer, with every request counted as contact from its worker
    (``leases.contact(tuner_id)``) and reports accepted only from the worker that holds
    the trial (else ``leases.ignored(tuner_id, trial_id)`` and nothing changes)."""
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    service = protos.get_service()

    class LeasedServicer(OracleServicer):
        def _contact(self, context):
            sender = _sender(context)
            if sender is not None:
                leases.contact(sender)
            return sender

        def CreateTrial(self, request, context):
            self._contact(context)
            leases.contact(request.tuner_id)
            return super().CreateTrial(request, context)

        def UpdateTrial(self, request, context):
            sender = self._contact(context)

            def ignore():
                leases.ignored(sender, request.trial_id)
                return service.UpdateTrialResponse(trial=self.oracle.get_trial(request.trial_id).to_proto())

            return _if_held(self.oracle, sender, request.trial_id,
                            lambda: super(LeasedServicer, self).UpdateTrial(request, context), ignore)

        def EndTrial(self, request, context):
            sender = self._contact(context)
            trial_id = request.trial.trial_id

            def ignore():
                leases.ignored(sender, trial_id)
                return service.EndTrialResponse()

            return _if_held(self.oracle, sender, trial_id,
                            lambda: super(LeasedServicer, self).EndTrial(request, context), ignore)

        def GetTrial(self, request, context):
            sender = self._contact(context)
            if dict(context.invocation_metadata() or ()).get(LEASE_KEY) and not holds(self.oracle, sender, request.trial_id):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"trial {request.trial_id} is no longer held by worker {sender}")
            return super().GetTrial(request, context)

        def GetSpace(self, request, context):
            self._contact(context)
            return super().GetSpace(request, context)

        def UpdateSpace(self, request, context):
            self._contact(context)
            return super().UpdateSpace(request, context)

        def GetBestTrials(self, request, context):
            self._contact(context)
            return super().GetBestTrials(request, context)

    return LeasedServicer(oracle)


def oracle_server(oracle, executor, leases):
    """``(gRPC server, servicer)``: KerasTuner's chief servicer for ``oracle`` with trial
    leases (see the module's notes; ``leases``: ``contact(tuner_id)`` and
    ``ignored(tuner_id, trial_id)``), registered on a new server running on ``executor``;
    the caller binds a port and starts it."""
    import grpc
    from keras_tuner.src import protos

    server = grpc.server(executor)
    servicer = _leased_servicer(oracle, leases)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    return server, servicer


def chief_may_stop(servicer, oracle) -> bool:
    """KerasTuner's own end of a chief's service (a worker asked to stop, no trial is
    running and no worker waits for one), with no trial left in the queue either."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    return bool(servicer.stop_triggered and exit_chief(oracle) and not queued_trials(oracle))


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


def identify_worker(client, tuner_id: str, address: str) -> None:
    """Every request of ``client`` (a worker's ``OracleClient``) to the chief at ``address``
    names ``tuner_id`` in its gRPC metadata."""
    import collections

    import grpc
    from keras_tuner.src import protos

    fields = ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")

    class CallDetails(collections.namedtuple("CallDetails", fields), grpc.ClientCallDetails):
        pass

    class Sender(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            metadata = [*(details.metadata or ()), (SENDER_KEY, tuner_id)]
            return continuation(CallDetails(details.method, details.timeout, metadata, details.credentials,
                                            details.wait_for_ready, details.compression), request)

    channel = grpc.intercept_channel(grpc.insecure_channel(address), Sender())
    client.stub = protos.get_service_grpc().OracleStub(channel)


def renew_lease(client, trial_id: str, timeout: float) -> bool | None:
    """Tell the chief this worker still runs ``trial_id`` (a worker's ``OracleClient``).

    True: renewed; False: the chief no longer lists this worker as running it (it went
    back to the queue); None: no answer within ``timeout`` seconds."""
    import grpc
    from keras_tuner.src import protos

    try:
        client.stub.GetTrial(protos.get_service().GetTrialRequest(trial_id=trial_id), timeout=timeout,
                             metadata=((LEASE_KEY, "renew"),))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return False
        return None
    return True
