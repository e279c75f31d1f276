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

The gRPC port has no authentication or encryption: bind it on a private network only.
"""

from __future__ import annotations

import os
import logging
import re
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
    """Every trial the oracle will hand out has been created and ended."""
    return bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials and not oracle.ongoing_trials


def serve_oracle(oracle, cluster: Cluster, index: int, poll_s: float = CHIEF_POLL_S) -> None:
    """Serve ``oracle`` to the workers until every trial has ended (KerasTuner's chief).

    Uses KerasTuner's own servicer (:func:`bench.search.kt_adapter.oracle_server`); unlike
    its ``start_server`` this checks for the end every ``poll_s`` seconds and stops the
    server, so the next backbone's server can start at once.
    """
    if _search_over(oracle):
        return  # finished before a restart of the chief: nothing left to hand out
    from bench.search import kt_adapter

    address = f"{cluster.ip}:{cluster.job_port(index)}"
    server, servicer = kt_adapter.oracle_server(oracle, futures.ThreadPoolExecutor(max_workers=1))
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
    finally:
        server.stop(grace=1.0)


def worker_search(search: Callable[[], None], search_done: Callable[[], bool], cluster: Cluster, index: int) -> None:
    """Run ``search`` (KerasTuner's worker loop) until the chief says the search is over.

    A worker may start before the chief serves this backbone (the chief is still caching
    features or evaluating the previous backbone), or after it finished (another worker
    took the last trial). Requests therefore wait ``WORKER_WAIT_S`` seconds at a time; in
    between, ``search_done()`` (the chief wrote trials.csv) tells the worker to move on.
    """
    import grpc

    from bench.search import kt_adapter

    waiting = False
    with kt_adapter.client_timeout(WORKER_WAIT_S):
        while not search_done():
            try:
                search()
                return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise
                if not waiting:
                    log.info(f"{cluster.role}: waiting for the chief at {cluster.ip}:{cluster.job_port(index)}")
                    waiting = True
