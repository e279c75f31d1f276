"""One call made in a forked copy of this process while this process does other work.

``bench run`` prepares its run folder (the scan, copy detection, the split and the
shortcut check: seconds of reading files in worker processes) while it imports
TensorFlow (seconds of one core); neither needs the other. :func:`beside` forks a copy
that makes the call and hands its result back through a pipe, pickled, while this process
runs the other work. The copy is made before anything threaded is loaded: where this
process already runs threads, or the platform is not Linux, or the fork fails, both run
here one after the other, with the same result.

What the copy leaves behind is this process's, as if the call had run here:
- its return value, or the exception it raised (a :class:`~bench.errors.BenchError`, a
  stop signal, Ctrl-C), re-raised here; an unexpected error carries the copy's traceback
  as a note;
- its durable writes count as this process's own (:mod:`bench.faults`: ``write:N``);
- killed by SIGKILL (a ``kill -9``, the memory killer, a crash point), it takes this
  process with it, as a crash of one process would;
- this process stopped while it waits (Ctrl-C, a stop signal, an error), the copy gets
  SIGTERM and is waited for, so its ``finally`` blocks run (worker pools shut down,
  temporary files removed); this process ending any other way ends the copy too
  (:func:`bench.parallel.end_with_parent`).
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

from bench import faults
from bench.parallel import end_with_parent

T = TypeVar("T")


def can_fork() -> bool:
    """Whether :func:`beside` forks here: Linux, and no thread but the main one (forking a
    threaded process copies locks other threads may hold). Threads are counted by the
    kernel (``/proc/self/task``): ``threading`` does not see those started by C code or
    ``_thread``."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def beside(call: Callable[[], T], meanwhile: Callable[[], object]) -> T:
    """``call()`` in a forked copy of this process while this process runs ``meanwhile()``;
    what ``call`` returned (or raised), once both are done. See the module docstring."""
    if not can_fork():
        meanwhile()
        return call()
    read, write, parent = *os.pipe(), os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        meanwhile()
        return call()
    if pid == 0:
        _in_the_copy(call, read, write, parent)  # never returns
    os.close(write)
    try:
        meanwhile()
        with os.fdopen(read, "rb") as answer:
            read = None
            sent = answer.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:
        if read is not None:
            os.close(read)
        _stop(pid)
        raise
    return _outcome(sent, status)


def _in_the_copy(call: Callable[[], object], read: int, write: int, parent: int) -> None:
    """The forked copy: make the call, send what came of it, leave at once (``os._exit``)."""
    code = 1
    try:
        os.close(read)
        end_with_parent(parent)
        try:
            message = ("returned", call(), None)
        except BaseException as exc:
            message = ("raised", exc, traceback.format_exc())
            exc.__traceback__ = None  # its frames (and what they held) are freed below
        data = _pickled(message + (faults.writes_counted(),))
        del message
        gc.collect()  # what the call left behind is freed here, as it would be in one process
        with os.fdopen(write, "wb") as out:
            out.write(data)
        code = 0
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _pickled(message: tuple) -> bytes:
    try:
        return pickle.dumps(message)
    except Exception as exc:  # noqa: BLE001 (an object that does not pickle: say what it was)
        kind, value, text, count = message
        said = text or f"{type(value).__name__} returned, which cannot be handed back ({exc})"
        return pickle.dumps(("raised", None, said, count))


def _outcome(sent: bytes, status: int):
    """What the copy's message says (its result, or its exception raised here)."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGKILL:  # a crash of the copy is a crash of the command
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"the forked copy of this process ended by {signal.Signals(signum).name}")
    try:
        kind, value, text, count = pickle.loads(sent)
    except Exception as exc:  # noqa: BLE001 (nothing or half a message came)
        raise RuntimeError(f"the forked copy of this process ended (exit status {os.waitstatus_to_exitcode(status)}) "
                           "without handing back its result") from exc
    faults.continue_count(count)
    if kind == "returned":
        return value
    if value is None:
        raise RuntimeError(f"in the forked copy of this process:\n{text}")
    if isinstance(value, Exception) and not getattr(value, "exit_code", None):  # a bug: where it happened
        value.add_note(f"in the forked copy of this process:\n{text}")
    raise value


#: Seconds a stopped copy has to run its ``finally`` blocks before it is killed.
STOP_GRACE_S = 30.0


def _stop(pid: int) -> None:
    """SIGTERM to the copy, then wait for it (its ``finally`` blocks run); SIGKILL if it
    has not ended within :data:`STOP_GRACE_S`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.02)
    except ChildProcessError:  # already waited for
        pass
