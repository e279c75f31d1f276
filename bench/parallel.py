"""Work spread over worker processes: how many cores this process may use, and a map over
processes that hands each worker a (large) state once, as it starts."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pickle import PicklingError

from threadpoolctl import threadpool_limits


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        with ProcessPoolExecutor(min(workers, len(tasks)), initializer=_hold, initargs=(state,)) as pool:
            return list(pool.map(_call_held, [(function, task) for task in tasks]))
    except (PicklingError, AttributeError, TypeError) as exc:
        if "pickle" not in str(exc).lower():
            raise
        return None
