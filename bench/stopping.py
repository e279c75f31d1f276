"""Stopping on a signal as on Ctrl-C, and ending the process when a command is done.

SIGTERM and SIGHUP (a ``kill``, a closed terminal, a batch system's time limit) raise
:class:`Stopped` in the main thread, so every ``finally`` and ``with`` block on the way out
runs: worker pools are shut down, temporary files are removed, and what was completed stays
where it was written. :func:`exit_at_once` ends the console command without the seconds
Python spends freeing TensorFlow's objects at exit."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

#: The signals that stop a command the way Ctrl-C does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal arrived; like KeyboardInterrupt, ``except Exception`` does not catch it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self):  # pickled by its signal's number (a forked copy hands it back: bench.forked)
        return (Stopped, (self.signum,))

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, _frame) -> None:
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block (main thread only), SIGTERM and SIGHUP raise :class:`Stopped`; the
    earlier handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def quiet_worker_signals() -> None:
    """In a worker process: Ctrl-C is the parent's to handle (the worker finishes its task);
    a stop signal ends the worker at once, without a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)


def exit_at_once(code) -> None:
    """End the process with ``code`` (as ``SystemExit`` takes it) once the exit handlers have
    run (logging, MLflow, temporary folders) and the output is flushed, without freeing every
    object first: a process that built a backbone spends one to two seconds of its exit
    tearing down TensorFlow's graphs. With a non-daemon thread still running, the usual exit
    (which waits for it)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    code = 0 if code is None else int(code)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)
