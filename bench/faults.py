"""Crash points for fault-injection tests.

``BENCH_KILL_AT=<point>`` makes a ``bench`` process kill itself with SIGKILL (no
clean-up, no atexit, exactly like ``kill -9`` or a lost machine) when it reaches that
point. The kill-and-resume tests use it to crash at moments a timer cannot hit
reliably. Named points:

* ``caching``: after the first feature-cache entry of a backbone is written, before the rest;
* ``trial``: in a trial, after training and before its files are written and its result
  reported (a distributed worker lost mid-trial);
* ``final``: during the final stage, after the best model is saved and before the test
  evaluation and ``result.json`` are written;
* ``suite-dataset``: in ``bench suite``, between two datasets.

Counted points, ``write:N``: the process kills itself at its N-th durable write, after
the new content is complete in its temporary file and before that file is renamed into
place, so the target holds its previous version (or nothing) and the temporary file is
left behind as a real crash leaves it. Every write that outlives the process calls
:func:`durable_write`: the atomic writers of :mod:`bench.atomic` (every JSON, CSV,
Markdown and HTML file, figures, KerasTuner's ``oracle.json`` / ``trial.json`` /
``tuner0.json``, trial checkpoints, models), feature-cache entries, the contact sheet,
the copy-feature archive, OpenVINO models, and a trial's TensorBoard logs (appended in
place: the kill comes before the first event). A seeded draw of N over the number of
writes an uninterrupted run makes therefore crashes a run in every stage, from the split
to the report, at a moment that is the same on every machine (``tests/test_kill_anywhere.py``,
``benchmarks/kill_anywhere.py``).

``BENCH_WRITE_LOG=<file>`` appends one line per durable write to ``<file>``:
``<N>\\t<path>`` (the absolute target path), written before the write lands, so the
write a process was killed at is the log's last line. With a log, N counts on from the
lines already in it: the processes of a chain (a run, killed; its ``--resume``, killed
later; ...) share one count, and ``write:N`` names a moment of the whole chain. One
process at a time may use a log.

Both unset (always, outside tests) nothing is counted and nothing happens.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "BENCH_KILL_AT"
LOG_ENV = "BENCH_WRITE_LOG"
WRITE_PREFIX = "write:"

_lock = threading.Lock()
_count: int | None = None  # durable writes so far (this process, or the chain sharing the log)


def crash_point(name: str) -> None:
    """SIGKILL this process when ``BENCH_KILL_AT`` is ``name``."""
    if os.environ.get(ENV) == name:
        _kill()


def kill_at_write() -> int | None:
    """N of ``BENCH_KILL_AT=write:N``; None when unset or another point."""
    value = os.environ.get(ENV, "")
    if not value.startswith(WRITE_PREFIX):
        return None
    try:
        return int(value[len(WRITE_PREFIX):])
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: expected {WRITE_PREFIX}N with a whole number N") from None


def durable_write(path) -> None:
    """Count one durable write to ``path``: logged with ``BENCH_WRITE_LOG``; the process
    is SIGKILLed here when it is the write ``BENCH_KILL_AT=write:N`` names. Called by each
    writer once its new content is complete but not yet in place."""
    global _count
    log, at = os.environ.get(LOG_ENV), kill_at_write()
    if not log and at is None:
        return
    with _lock:
        if _count is None:
            _count = _lines(log) if log else 0
        _count += 1
        if log:
            with open(log, "a", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write(f"{_count}\t{os.path.abspath(os.fspath(path))}\n")
        if _count == at:
            _kill()


def writes_counted() -> int | None:
    """This process's count of durable writes (None: nothing counted yet), for a forked copy
    to hand back to the process it was forked from (:func:`continue_count`)."""
    return _count


def continue_count(count: int | None) -> None:
    """Go on counting from ``count``: the durable writes a forked copy of this process made
    on its behalf (:mod:`bench.forked`) count as this process's own, so ``write:N`` names
    the same moment whether or not the work was forked."""
    global _count
    if count is not None:
        with _lock:
            _count = count


def _lines(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
