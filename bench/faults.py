"""Crash points for fault-injection tests.

``BENCH_KILL_AT=<point>`` makes a ``bench run`` process kill itself with SIGKILL (no
clean-up, no atexit, exactly like ``kill -9`` or a lost machine) when it reaches that
point. The kill-and-resume tests use it to crash at moments a timer cannot hit
reliably. Points:

* ``caching``: after the first feature-cache entry of a backbone is written, before the rest;
* ``trial``: in a trial, after training and before its files are written and its result
  reported (a distributed worker lost mid-trial);
* ``final``: during the final stage, after the best model is saved and before the test
  evaluation and ``result.json`` are written.

Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "BENCH_KILL_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
