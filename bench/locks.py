"""Locks between processes: one writer per run folder (:class:`RunLock`) and work done
once per shared folder (:func:`file_lock`)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.errors import BenchError, is_disk_full


def read_only_message(run_dir: Path, exc: OSError) -> str:
    """The one line for a run folder bench cannot write into (its lock, its results)."""
    return (f"cannot write into the run folder {run_dir} ({exc.strerror or exc}); bench keeps its progress there: "
            f"make it writable (chmod -R u+w {run_dir}), or copy it to a writable place and pass that folder with --out")


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/.lock`` holding the PID.

    The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock
    file from a dead process is simply taken over.
    """

    def __init__(self, run_dir: Path, name: str = ".lock") -> None:
        self.path = Path(run_dir) / name
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as exc:  # permissions, a read-only file system (a full disk is said as such)
            if is_disk_full(exc):
                raise
            raise BenchError(read_only_message(self.path.parent, exc)) from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise BenchError(
                f"run {self.path.parent.name} is in use by process {pid}; wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Block until this process holds an exclusive ``flock`` on ``path`` (created if needed).

    Serialises work that must happen once per run folder (the split, backbone weights,
    feature caches) between processes that share it, e.g. distributed workers.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
