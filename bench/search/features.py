"""Cached features as trials read them: rows of memory-mapped float16 files, float32 batches.

A trial never holds a split's features in memory. :class:`FeatureRows` is a list of
segments, each a float16 array (usually ``np.load(..., mmap_mode="r")`` of a cache entry)
and optionally the rows of it to use, in order; indexing it with a slice or an integer
array reads only those rows and widens them to float32. So the train split of one CV fold
is the run's one pool entry indexed by the fold's rows, and the train split with augmented
views is the plain entry followed by the views' entry, without a copy of either.

Pages of a memory-mapped file that were read stay mapped into the process, where they
count as its resident memory, until the mapping lets them go; after every
:data:`RELEASE_BYTES` read, :class:`FeatureRows` tells the kernel it no longer needs them
(``madvise(MADV_DONTNEED)``; the file stays in the page cache, so the next epoch still
reads from memory, not disk). Resident memory then stays flat in the number of images.
"""

from __future__ import annotations

import mmap
from typing import Callable

import numpy as np

#: Bytes read from memory-mapped segments between two releases of their pages.
RELEASE_BYTES = 64 * 2**20
#: Rows per chunk when pooling a whole split (:func:`pooled`).
POOL_CHUNK = 256


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of the memory map behind ``array`` (no-op for RAM arrays)."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    handle = getattr(base, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


class FeatureRows:
    """Rows of one or more arrays, read as float32 a batch at a time.

    ``segments``: ``(array, rows)`` pairs, ``rows`` an integer index into ``array`` or
    ``None`` for all of it; the rows of the segments follow each other in order.
    Supports ``len``, ``shape``, ``ndim``, ``x[a:b]``, ``x[index_array]`` and
    ``np.asarray(x)`` (everything at once: for small arrays and tests).
    """

    def __init__(self, segments: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        self.segments = [(a, None if rows is None else np.asarray(rows, dtype=np.int64)) for a, rows in segments]
        lengths = [len(a) if rows is None else len(rows) for a, rows in self.segments]
        self._starts = np.cumsum([0, *lengths])
        shapes = {tuple(a.shape[1:]) for a, _ in self.segments}
        if len(shapes) > 1:
            raise ValueError(f"segments of different feature shapes: {sorted(shapes)}")
        self._row_shape = shapes.pop() if shapes else (0,)
        self._read = 0

    @classmethod
    def of(cls, array: np.ndarray, rows: np.ndarray | None = None) -> FeatureRows:
        return cls([(array, rows)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._row_shape)

    dtype = np.dtype("float32")

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        index = np.asarray(key, dtype=np.int64)
        if index.ndim != 1:
            raise TypeError("FeatureRows takes a slice or a 1-d integer index")
        index = np.where(index < 0, index + len(self), index)
        out = np.empty((len(index), *self._row_shape), np.float32)
        which = np.searchsorted(self._starts, index, side="right") - 1
        for s in np.unique(which):
            array, rows = self.segments[s]
            mask = which == s
            local = index[mask] - self._starts[s]
            if rows is not None:
                local = rows[local]
            out[mask] = _take(array, local)
            self._count(array, int(mask.sum()))
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[: len(self)]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def _count(self, array: np.ndarray, n_rows: int) -> None:
        if not isinstance(array, np.memmap) and not isinstance(getattr(array, "base", None), np.memmap):
            return
        self._read += n_rows * array[:1].nbytes
        if self._read >= RELEASE_BYTES:
            self.release()

    def release(self) -> None:
        """Let the kernel take back the pages read so far (see the module docstring)."""
        for array, _ in self.segments:
            release_pages(array)
        self._read = 0


def _take(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for any integer ``rows``: a contiguous run is one slice (one
    sequential read of a memory map); otherwise sorted fancy indexing, put back in order."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return array[rows[0] : rows[-1] + 1]
    order = np.argsort(rows, kind="stable")
    picked = array[rows[order]]
    out = np.empty_like(picked)
    out[order] = picked
    return out


def as_rows(x) -> FeatureRows:
    return x if isinstance(x, FeatureRows) else FeatureRows.of(x)


def pooled(x, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """``reduce(x, axis=(1, 2))`` (global average or max pooling) of every row, in float32,
    computed :data:`POOL_CHUNK` rows at a time: a pooled split is small and stays in RAM."""
    rows = as_rows(x)
    if len(rows) == 0:
        return np.zeros((0, rows.shape[-1]), np.float32)
    return np.concatenate([reduce(rows[i : i + POOL_CHUNK], axis=(1, 2)) for i in range(0, len(rows), POOL_CHUNK)])
