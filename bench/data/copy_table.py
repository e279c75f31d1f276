"""Copy features of many images on disk: one file of fixed-size rows, read a row at a time.

A scan of 50,000 images computes ~14 kB of copy features per image (layout grids,
keypoints, ORB descriptors): 0.7 GB that held in memory grows with the dataset. A
:class:`CopyTable` keeps them in a temporary file instead (under ``TMPDIR``), written with
``pwrite`` as each image is read (by any process) and read back with ``pread``: a read
never maps the file, so nothing of it counts as the process's resident memory beyond the
rows in hand. It is a sequence of :class:`~bench.data.copy_features.CopyFeatures` (what
:func:`~bench.data.copies.find_links` takes), with :meth:`CopyTable.column` for the grids
the candidate search reads all at once (2 kB per image). It pickles as its path and rows,
so worker processes open the same file; the table that created the file deletes it when
it is closed or garbage-collected.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from bench.data.copy_features import DETAIL_FEATURES, GRID, CopyFeatures
from bench.row_reads import read_rows

#: Keypoints kept per image (ORB returns at most DETAIL_FEATURES).
MAX_POINTS = DETAIL_FEATURES
#: Bytes of an ORB descriptor.
DESCRIPTOR_BYTES = 32
#: One image's row. ``flags``: 1 = has ``spots`` and ``levels``, 2 = has descriptors.
ROW = np.dtype([
    ("layout", "<f2", (GRID, GRID)), ("spots", "<f2", (GRID, GRID)), ("frame", "<f4", (4,)),
    ("levels", "u1", (9,)), ("flags", "u1"), ("count", "<u2"),
    ("points", "<f4", (MAX_POINTS, 2)), ("descriptors", "u1", (MAX_POINTS, DESCRIPTOR_BYTES)),
])
#: Rows read at a time by :meth:`CopyTable.column` (~28 MB).
READ_ROWS = 2048


#: Temporary table files are named ``bench-copy-features-<pid>-<random>.rows``.
PREFIX = "bench-copy-features-"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(folder: str | Path | None = None) -> list[str]:
    """Table files in ``folder`` (default: the temporary folder) whose process has ended
    without removing them (``kill -9``, a lost machine): removed, and their names returned.
    A stop signal or an error removes a table's file itself; these are what is left."""
    folder = Path(folder or tempfile.gettempdir())
    removed = []
    for path in folder.glob(f"{PREFIX}*.rows"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            _remove(str(path))
            removed.append(path.name)
    return removed


class CopyTable(Sequence):
    """``len(rows)`` images' copy features: row ``rows[i]`` of the file at ``path`` is image ``i``.

    Make one with :meth:`create` (a new temporary file of ``n`` empty rows), fill it with
    :meth:`write`, and take a subset with :meth:`select` (same file, no copy).
    """

    def __init__(self, path: str | Path, rows: np.ndarray, keep=None) -> None:
        self.path = str(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._keep = keep  # the table that owns the file: it lives while any selection does
        self._fd: int | None = None

    @classmethod
    def create(cls, n: int, folder: str | Path | None = None) -> CopyTable:
        remove_orphans(folder)
        fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=".rows", dir=folder)
        try:
            os.ftruncate(fd, n * ROW.itemsize)
        finally:
            os.close(fd)
        table = cls(path, np.arange(n))
        table._removal = weakref.finalize(table, _remove, path)
        return table

    def hand_over(self, pid: int) -> None:
        """Before this process hands the table to process ``pid`` (pickled: its path and rows)
        and ends: the file is renamed as ``pid``'s (so no one takes it for an orphan once this
        process is gone) and no longer removed by this table: ``pid`` then owns it (:meth:`adopt`)."""
        owner = self._keep or self  # a selection's file is its creator's
        removal = getattr(owner, "_removal", None)
        if removal is None or not removal.alive:
            raise ValueError("only a table whose file this process created can hand it over")
        folder, name = os.path.split(self.path)
        renamed = os.path.join(folder, f"{PREFIX}{pid}-{name[len(PREFIX):].split('-', 1)[1]}")
        os.rename(self.path, renamed)
        removal.detach()
        owner.path = self.path = renamed

    def adopt(self) -> None:
        """This process owns the file of a table :meth:`hand_over` gave it: the file is
        removed when this table is garbage-collected or the process ends, as if it had
        created it. Nothing changes for a table whose file this process already removes."""
        removal = getattr(self._keep or self, "_removal", None)
        if removal is None or not removal.alive:
            self._removal = weakref.finalize(self, _remove, self.path)

    @classmethod
    def of(cls, features: Iterable[CopyFeatures], folder: str | Path | None = None) -> CopyTable:
        """A new table holding ``features`` (a list, another table...)."""
        features = list(features)
        table = cls.create(len(features), folder)
        for i, f in enumerate(features):
            table.write(i, f)
        return table

    # -- file access ---------------------------------------------------------------------

    def _handle(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR)
            weakref.finalize(self, os.close, self._fd)
        return self._fd

    def __getstate__(self) -> dict:
        return {"path": self.path, "rows": self.rows}  # another process opens the file itself

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["rows"])

    def write(self, i: int, f: CopyFeatures) -> None:
        """Store ``f`` as image ``i``."""
        row = np.zeros((), dtype=ROW)
        row["layout"], row["frame"] = f.layout, f.frame
        flags = 0
        if f.spots is not None and f.levels is not None:
            row["spots"], row["levels"] = f.spots, f.levels
            flags |= 1
        if f.descriptors is not None:
            k = min(len(f.descriptors), MAX_POINTS)
            row["points"][:k], row["descriptors"][:k], row["count"] = f.points[:k], f.descriptors[:k], k
            flags |= 2
        else:
            k = min(len(f.points), MAX_POINTS)
            row["points"][:k], row["count"] = f.points[:k], k
        row["flags"] = flags
        os.pwrite(self._handle(), row.tobytes(), int(self.rows[i]) * ROW.itemsize)

    # -- the sequence --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.select(np.arange(len(self))[i])
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of a table of {len(self)}")
        return _features(read_rows(self._handle(), self.rows[[i]], np.empty(1, dtype=ROW))[0])

    def select(self, index: Sequence[int] | np.ndarray) -> CopyTable:
        """The images ``index`` of this table, in that order (the same file)."""
        return CopyTable(self.path, self.rows[np.asarray(index, dtype=np.int64)], self._keep or self)

    def blocks(self, size: int = READ_ROWS):
        """The images' rows (structured arrays of :data:`ROW`), ``size`` at a time, in order."""
        for s in range(0, len(self), size):
            wanted = self.rows[s : s + size]
            yield read_rows(self._handle(), wanted, np.empty(len(wanted), dtype=ROW))

    def column(self, name: str) -> np.ndarray:
        """Field ``name`` (``layout``, ``spots``, ``frame``, ``levels``, ``count``) of every image."""
        return self.columns(name)[0]

    def columns(self, *names: str) -> list[np.ndarray]:
        """Fields ``names`` of every image, read in one pass over the rows."""
        out = [np.empty((len(self), *ROW[name].shape), dtype=ROW[name].base) for name in names]
        for s, block in zip(range(0, len(self), READ_ROWS), self.blocks()):
            for column, name in zip(out, names):
                column[s : s + len(block)] = block[name]
        return out


def _features(row: np.ndarray) -> CopyFeatures:
    k, flags = int(row["count"]), int(row["flags"])
    full = bool(flags & 1)
    return CopyFeatures(row["layout"].copy(), row["frame"].copy(), row["spots"].copy() if full else None,
                        row["levels"].copy() if full else None, row["points"][:k].copy(),
                        row["descriptors"][:k].copy() if flags & 2 else None)


def as_table(features: Sequence[CopyFeatures]) -> CopyTable:
    """``features`` as a :class:`CopyTable` (itself when it is one)."""
    return features if isinstance(features, CopyTable) else CopyTable.of(features)


def grids(features: Sequence[CopyFeatures], name: str, index: np.ndarray | None = None) -> np.ndarray:
    """``(n, GRID, GRID)`` float16: the ``layout`` or ``spots`` grids of ``features[index]``."""
    index = np.arange(len(features)) if index is None else np.asarray(index)
    if isinstance(features, CopyTable):
        return features.select(index).column(name)
    return np.stack([np.asarray(getattr(features[int(i)], name), dtype=np.float16) for i in index]) \
        if len(index) else np.zeros((0, GRID, GRID), np.float16)
