"""Work spread over worker processes: how many cores this process may use, a pool whose
workers end with the process that started them, and a map over processes that hands each
worker a (large) state once, as it starts."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pickle import PicklingError

from threadpoolctl import threadpool_limits

from bench.stopping import quiet_worker_signals


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    """In a new child process: end with the process that started it. On Linux the kernel
    sends the child SIGTERM when that process ends, however it ends (``kill -9`` too), so
    no child is left blocked on a pipe or queue nobody reads; a parent already gone ends
    it at once."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: children notice the closed pipe instead
        pass
    if os.getppid() != parent:
        os._exit(1)


def _start_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    """In a new worker: :func:`end_with_parent`, Ctrl-C left to the parent, then ``initializer``."""
    end_with_parent(parent)
    quiet_worker_signals()
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose workers end with this process (:func:`_start_worker`)."""
    return ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))


_HELD: list = []  # in a worker process: what it was started with (see map_held)


def _hold(state) -> None:
    # one BLAS thread per process: the pool already uses every core. (OpenCV's threads are
    # left alone: cv2.setNumThreads hangs in a process forked from one whose pool has run.)
    threadpool_limits(1, user_api="blas")
    _HELD[:] = [state]


def _call_held(job: tuple[Callable, object]):
    function, task = job
    return function(_HELD[0], task)


def map_held(function: Callable, state, tasks: list, workers: int) -> list | None:
    """``[function(state, task) for task in tasks]`` in ``workers`` processes (the platform's
    default start method), each given ``state`` once as it starts; None when ``state``
    cannot be handed to a process (a start method that pickles, with something in it that
    cannot be pickled), for the caller to do the work here."""
    try:
        pool = worker_pool(min(workers, len(tasks)), _hold, (state,))
        try:
            return list(pool.map(_call_held, [(function, task) for task in tasks]))
        finally:  # stopped (a signal, an error): pending tasks are dropped, running ones end
            pool.shutdown(wait=True, cancel_futures=True)
    except (PicklingError, AttributeError, TypeError) as exc:
        if "pickle" not in str(exc).lower():
            raise
        return None
