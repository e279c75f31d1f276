"""Stopping on a signal as on Ctrl-C: SIGTERM and SIGHUP (a ``kill``, a closed terminal, a
batch system's time limit) raise :class:`Stopped` in the main thread, so every ``finally``
and ``with`` block on the way out runs: worker pools are shut down, temporary files are
removed, and what was completed stays where it was written."""

from __future__ import annotations

import signal
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
