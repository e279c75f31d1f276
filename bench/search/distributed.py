"""KerasTuner's distributed mode: one chief serves the search, many workers run trials.

Every process runs the same ``bench run`` command on a shared run folder, with
KerasTuner's three environment variables:

* ``KERASTUNER_TUNER_ID``: ``chief`` on the chief, a unique id (``tuner0``, ...) per worker;
* ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``: where the chief listens.

The chief holds each backbone's oracle (which trial to run next) and serves it over gRPC;
workers ask it for trials, train them and report back, so no trial runs twice. bench
searches its backbones one after another, so the chief serves backbone ``i`` (in the
order of ``--backbones``, then the notebook baseline) on port ``PORT + i``: a worker can
never take a trial of one backbone from the server of another. When a backbone's search
is over, the chief writes its ``trials.csv`` and evaluates it on the test split while the
workers go on with the next backbone; at the end the chief writes the leaderboard, the
report and the export. The split, the backbone weights and the feature caches are made
once, under a file lock in the shared run folder, and read by everyone else.

A worker that dies (its machine lost, ``kill -9``) never reports its trial, and
KerasTuner's chief would wait for it forever. bench's chief keeps a lease per trial
instead: every request a worker sends counts as contact (a worker renews the lease of its
trial every :func:`renew_every` seconds while it trains), and a trial whose worker has been
silent for longer than ``--trial-timeout`` goes back to the queue, to be handed out before
any new trial. From then on only the worker the trial is handed to next may report it: a
late report from the silent worker is ignored (logged, never counted), and a worker that
learns its trial went back to the queue writes none of its files.

The gRPC port has no authentication or encryption: bind it on a private network only.
"""

from __future__ import annotations

import os
import logging
import re
import threading
import time
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from bench.errors import BenchError

log = logging.getLogger(__name__)

ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
#: How long a worker's request waits for the chief before it checks whether the
#: backbone's search is already over (then it moves on) or keeps waiting.
WORKER_WAIT_S = 10.0
#: How often the chief checks whether every trial of a backbone has ended.
CHIEF_POLL_S = 0.5
#: How often a worker that has no trial left to take asks again while the search goes on
#: (a trial of a lost worker may come back to the queue).
WORKER_POLL_S = 1.0
#: A worker renews its trial's lease at least this often (more often under a short
#: ``--trial-timeout``: five renewals fit in one timeout).
RENEW_MAX_S = 5.0


def renew_every(trial_timeout_s: float) -> float:
    """Seconds between a worker's lease renewals under ``--trial-timeout trial_timeout_s``."""
    return min(RENEW_MAX_S, trial_timeout_s / 5)


@dataclass(frozen=True)
class Cluster:
    tuner_id: str
    ip: str
    port: int

    @property
    def is_chief(self) -> bool:
        return "chief" in self.tuner_id  # KerasTuner's own rule

    @property
    def role(self) -> str:
        return "chief" if self.is_chief else f"worker {self.tuner_id}"

    @property
    def lock_name(self) -> str:
        """The run-folder lock this process holds: the chief the run's own, each worker one per id."""
        return ".lock" if self.is_chief else ".lock-" + re.sub(r"[^A-Za-z0-9._-]", "_", self.tuner_id)

    def job_port(self, index: int) -> int:
        return self.port + index


def cluster_from_env(environ=None) -> Cluster | None:
    """The cluster this process belongs to, or None for an ordinary single-process run."""
    environ = os.environ if environ is None else environ
    names = (ENV_ID, ENV_IP, ENV_PORT)
    present = [n for n in names if environ.get(n)]
    if not present:
        return None
    missing = [n for n in names if n not in present]
    if missing:
        raise BenchError(
            f"distributed mode needs all of {', '.join(names)}; {', '.join(missing)} not set "
            "(set all three, or none for a single-machine run; see 'Scaling out' in the docs)"
        )
    try:
        port = int(environ[ENV_PORT])
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise BenchError(f"{ENV_PORT}={environ[ENV_PORT]!r} is not a port number; use a free port such as 8000")
    return Cluster(environ[ENV_ID], environ[ENV_IP], port)


@contextmanager
def job_environment(cluster: Cluster | None, index: int) -> Iterator[None]:
    """Point KerasTuner's client at backbone ``index``'s server while a tuner is built.

    ``cluster`` None: a local search, even in a process started in distributed mode (the
    chief searches the final model of a ``--cv`` run alone): KerasTuner's environment
    variables are hidden meanwhile, or KerasTuner would serve or join an oracle."""
    if cluster is None:
        saved_env = {k: os.environ.pop(k) for k in (ENV_ID, ENV_IP, ENV_PORT) if k in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved_env)
        return
    saved = os.environ.get(ENV_PORT)
    os.environ[ENV_PORT] = str(cluster.job_port(index))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ENV_PORT, None)
        else:
            os.environ[ENV_PORT] = saved


def _search_over(oracle) -> bool:
    """Every trial the oracle will hand out has been created and ended (none running, none queued)."""
    from bench.search import kt_adapter

    return (bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials and not oracle.ongoing_trials
            and not kt_adapter.queued_trials(oracle))


class Leases:
    """The chief's view of its workers: when each last called, and whose trial to re-queue.

    ``contact`` is called by the gRPC servicer's thread, ``requeue_silent`` by the chief's
    loop; ``clock`` is monotonic seconds (a test passes its own)."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._checked: float | None = None  # the clock at the last requeue_silent
        self.requeued: list[tuple[str, str]] = []  # (worker, trial), in order
        self.ignored_reports: list[tuple[str | None, str]] = []

    def contact(self, tuner_id: str) -> None:
        with self._lock:
            self._last[tuner_id] = self.clock()

    def silent_for(self, tuner_id: str) -> float:
        """Seconds since ``tuner_id`` last called (0 for one never heard of: its clock starts now)."""
        with self._lock:
            now = self.clock()
            return now - self._last.setdefault(tuner_id, now)

    def requeue_silent(self, oracle) -> list[str]:
        """Put back in the queue every trial whose worker has been silent for longer than
        the timeout; the ids of those trials. Called every few seconds: after a longer gap
        (half the timeout) the chief itself was stalled, and every worker's clock restarts."""
        from bench.search import kt_adapter

        now = self.clock()
        stalled = self._checked is not None and now - self._checked > self.timeout_s / 2
        self._checked = now
        if stalled:  # the chief itself was not running (suspended, swapping): nobody could reach it
            with self._lock:
                self._last = dict.fromkeys(self._last, now)
            return []
        out = []
        for tuner_id, trial_id in sorted(kt_adapter.running_trials(oracle).items()):
            silent = self.silent_for(tuner_id)
            if silent > self.timeout_s and kt_adapter.requeue(oracle, tuner_id, trial_id):
                log.warning(f"chief: worker {tuner_id} silent for {silent:.0f} s: trial {trial_id} goes back to the queue")
                self.requeued.append((tuner_id, trial_id))
                out.append(trial_id)
        return out

    def ignored(self, tuner_id: str | None, trial_id: str) -> None:
        """A report on ``trial_id`` from a worker that does not hold it: dropped."""
        self.ignored_reports.append((tuner_id, trial_id))
        log.warning(f"chief: late report on trial {trial_id} from worker {tuner_id} ignored "
                    "(the trial went back to the queue when that worker fell silent)")


def serve_oracle(oracle, cluster: Cluster, index: int, trial_timeout_s: float, poll_s: float = CHIEF_POLL_S) -> None:
    """Serve ``oracle`` to the workers until every trial has ended (KerasTuner's chief).

    Uses KerasTuner's own servicer, with trial leases
    (:func:`bench.search.kt_adapter.oracle_server`); unlike its ``start_server`` this
    checks for the end every ``poll_s`` seconds and stops the server, so the next
    backbone's server can start at once, and re-queues the trials of workers silent for
    longer than ``trial_timeout_s``.
    """
    if _search_over(oracle):
        return  # finished before a restart of the chief: nothing left to hand out
    from bench.search import kt_adapter

    leases = Leases(trial_timeout_s)
    address = f"{cluster.ip}:{cluster.job_port(index)}"
    server, servicer = kt_adapter.oracle_server(oracle, futures.ThreadPoolExecutor(max_workers=1), leases)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise BenchError(
            f"the chief cannot listen on {address} (address not local or port in use); "
            f"set {ENV_IP} to this machine's private address and {ENV_PORT} to a free port"
        )
    server.start()
    log.info(f"chief: serving the search on {address}; start the workers with {ENV_PORT}={cluster.port}")
    try:
        while not kt_adapter.chief_may_stop(servicer, oracle) and not _search_over(oracle):
            time.sleep(poll_s)
            leases.requeue_silent(oracle)
    finally:
        server.stop(grace=1.0)


def worker_search(search: Callable[[], None], search_done: Callable[[], bool], cluster: Cluster, index: int,
                  poll_s: float = WORKER_POLL_S) -> None:
    """Run ``search`` (KerasTuner's worker loop) until the chief says the search is over.

    A worker may start before the chief serves this backbone (the chief is still caching
    features or evaluating the previous backbone), or after it finished (another worker
    took the last trial). Requests therefore wait ``WORKER_WAIT_S`` seconds at a time; in
    between, ``search_done()`` (the chief wrote trials.csv) tells the worker to move on.
    KerasTuner's loop ends once no new trial is left to hand out, while other workers may
    still run theirs; one of those may come back to the queue (its worker lost), so the
    worker asks again every ``poll_s`` seconds until the search is done.
    """
    import grpc

    from bench.search import kt_adapter

    waiting = False
    with kt_adapter.client_timeout(WORKER_WAIT_S):
        while not search_done():
            try:
                search()
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise
                if not waiting:
                    log.info(f"{cluster.role}: waiting for the chief at {cluster.ip}:{cluster.job_port(index)}")
                    waiting = True
                continue
            time.sleep(poll_s)


@contextmanager
def trial_lease(client, trial_id: str, trial_timeout_s: float) -> Iterator[Callable[[], bool]]:
    """A worker runs trial ``trial_id`` of the chief behind ``client`` (its ``OracleClient``):
    the lease is renewed every :func:`renew_every` seconds in a background thread while the
    block runs. Yields ``held()``: asks the chief now; False once the trial went back to the
    queue (no answer counts as held: the chief decides when the report arrives)."""
    from bench.search import kt_adapter

    every = renew_every(trial_timeout_s)
    stop, lost = threading.Event(), threading.Event()

    def renew():
        while not stop.wait(every):
            if kt_adapter.renew_lease(client, trial_id, timeout=every) is False:
                lost.set()
                return

    threading.Thread(target=renew, name=f"lease-{trial_id}", daemon=True).start()
    try:
        yield lambda: not lost.is_set() and kt_adapter.renew_lease(client, trial_id, timeout=every) is not False
    finally:
        stop.set()  # the thread ends after its current renewal at the latest
