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
What is counted is what the reads made resident, not the bytes asked for: on a page
fault Linux also maps cached pages around the one asked for (``fault_around_bytes``, or a
whole large folio), so a few scattered rows can make several times their bytes resident. On
Linux :class:`FeatureRows` reads the process's file-backed resident size
(``/proc/self/statm``) around each read; elsewhere it counts the bytes of the rows. The
trainer releases both splits after every epoch as well (:func:`release_rows`), so a
finished trial leaves nothing mapped.

Avg/max-pooled vectors (:func:`pooled`) of a memory-mapped split are computed once and
written to an unnamed temporary file beside the entry (:class:`RowFile`), whose rows are
read with ``pread``: they do not sit in RAM either (35k x 1,280 float32 is 180 MB per
pooling at 50,000 images, so the trials' memory would grow with the number of images).
Not memory-mapped: scattered batches from a mapping fault their folios in again on every
batch, which makes an epoch several times slower than ``pread``. A cache entry is pooled
whole, once per process and pooling, whatever rows of it are asked for: the folds of a
cross-validation (and their linear probes) index one entry's pooled file by their rows,
rather than each pooling its own rows again.

A trial that reads all of its rows at once (a dense head trained in numpy, see
:mod:`bench.search.head_training`) gets them from :func:`matrix`: a whole cache entry
widened to float32 once per process and kept in RAM while the kept ones hold at most
:data:`MATRIX_BYTES`, each fold (and the deployed model's search) taking its rows of it.
Widening float16 is the slow part of reading a flattened map (numpy converts value by
value, several times slower than copying the floats), so it is done once per entry, not
once per fold.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from bench.row_reads import read_rows

#: Bytes read from memory-mapped segments between two releases of their pages.
RELEASE_BYTES = 64 * 2**20
#: Rows per chunk when pooling a whole split (:func:`pooled`).
POOL_CHUNK = 256
#: Bytes of whole pooled entries (unnamed temporary files beside the cache, not memory)
#: kept for later calls (:func:`pooled`), the most recently used first: every backbone of
#: a run on a few thousand images, two entries at a time of one on 50,000.
POOLED_BYTES = 2**30
#: Bytes of whole cache entries kept in RAM as float32 matrices (:func:`matrix`), the
#: most recently used first: every backbone's flattened map of a run on a few hundred
#: images; an entry larger than this is read row by row, as before, and not kept.
MATRIX_BYTES = 2**30
#: The global poolings of the search (average, max): an entry pooled for one is pooled for
#: both in the same pass.
GLOBAL_POOLINGS = (np.mean, np.max)
_PAGE = mmap.PAGESIZE


def file_resident_bytes() -> int | None:
    """Bytes of files mapped into this process that are resident (the ``shared`` field of
    ``/proc/self/statm``: file-backed and shared memory); None where there is no procfs."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[2]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _memmap(array: np.ndarray) -> np.memmap | None:
    """The memory map behind ``array``, or None for an array in RAM."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    return base


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of the memory map behind ``array`` (no-op for RAM arrays)."""
    handle = getattr(_memmap(array), "_mmap", None)
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
        mapped = any(_memmap(self.segments[s][0]) is not None for s in np.unique(which))
        before = file_resident_bytes() if mapped else None
        asked = 0
        for s in np.unique(which):
            array, rows = self.segments[s]
            mask = which == s
            local = index[mask] - self._starts[s]
            if rows is not None:
                local = rows[local]
            out[mask] = _take(array, local)
            asked += len(local) * int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
        if mapped:
            after = None if before is None else file_resident_bytes()
            self._count(asked if after is None else max(0, after - before))
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[: len(self)]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def mapped_folder(self) -> Path | None:
        """The folder of the first memory-mapped file behind these rows (None: all in RAM)."""
        for array, _ in self.segments:
            name = getattr(_memmap(array), "filename", None)
            if name:
                return Path(name).parent
        return None

    def _count(self, n_bytes: int) -> None:
        self._read += n_bytes
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


class RowFile:
    """A read-only array kept in an open file, rows read with ``pread`` into a new array.

    Nothing is mapped, so nothing read stays resident (the file stays in the page cache);
    supports what :class:`FeatureRows` asks of a segment: ``len``, ``shape``, ``dtype``,
    ``x[a:b]`` and ``x[index_array]``. Closes the file when it goes.
    """

    def __init__(self, fh, shape: tuple[int, ...], dtype=np.float32) -> None:
        self._fh, self.shape, self.dtype = fh, tuple(shape), np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows = np.arange(*key.indices(len(self))) if isinstance(key, slice) else np.asarray(key, np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        return read_rows(self._fh.fileno(), rows, out)


def release_rows(*xs) -> None:
    """:meth:`FeatureRows.release` of each of ``xs`` that is :class:`FeatureRows`."""
    for x in xs:
        if isinstance(x, FeatureRows):
            x.release()


def as_rows(x) -> FeatureRows:
    return x if isinstance(x, FeatureRows) else FeatureRows.of(x)


def pooled(x, reduce: Callable[..., np.ndarray]) -> np.ndarray | FeatureRows:
    """``reduce(x, axis=(1, 2))`` (global average or max pooling) of every row, in float32,
    computed :data:`POOL_CHUNK` rows at a time.

    Rows in RAM give an array in RAM. Memory-mapped rows give :class:`FeatureRows` of a
    :class:`RowFile`, an unnamed temporary file in the entry's folder (gone with it), so
    the pooled split is not resident either. Rows of whole cache entries (as
    :class:`~bench.search.cache.FeatureCache` maps them) pool each entry once, all its
    rows, and index the result (:func:`_pooled_entry`): pooling is row by row, so the
    numbers are those of pooling the rows alone.
    """
    rows = as_rows(x)
    if len(rows) and all(_entry_key(array) is not None for array, _ in rows.segments):
        return FeatureRows([(_pooled_entry(array, reduce), index) for array, index in rows.segments])
    if len(rows) == 0:
        return np.zeros((0, rows.shape[-1]), np.float32)
    if rows.mapped_folder() is None:
        return np.concatenate(list(_chunks(rows, reduce)))
    return FeatureRows.of(_pool_to_files(rows, [reduce])[0])


def _reduced(chunk: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` over the map of every row of ``chunk``, in float32."""
    return reduce(chunk, axis=(1, 2)).astype(np.float32, copy=False)


def _chunks(rows: FeatureRows, reduce):
    return (_reduced(rows[i : i + POOL_CHUNK], reduce) for i in range(0, len(rows), POOL_CHUNK))


def _pool_to_files(rows, reduces: list, folder: Path | None = None) -> list[RowFile]:
    """The ``rows`` (memory-mapped FeatureRows, or an array in RAM of the entry in
    ``folder``) pooled by each of ``reduces``, each in an unnamed temporary file beside
    them, in one pass: each chunk is read (and widened to float32) once for all of them."""
    files = []
    try:
        for _ in reduces:
            try:
                files.append(tempfile.TemporaryFile(dir=folder or rows.mapped_folder(), prefix=".pooled-"))  # noqa: SIM115 (RowFile keeps it open)
            except OSError:  # a folder we cannot write to: the system's temporary folder
                files.append(tempfile.TemporaryFile(prefix="bench-pooled-"))  # noqa: SIM115
        for i in range(0, len(rows), POOL_CHUNK):
            chunk = rows[i : i + POOL_CHUNK]
            for fh, reduce in zip(files, reduces):
                fh.write(np.ascontiguousarray(_reduced(chunk, reduce)).tobytes())
        for fh in files:
            fh.flush()
    except BaseException:
        for fh in files:
            fh.close()
        raise
    release_rows(rows)  # the trials on these vectors do not read the rows they came from
    return [RowFile(fh, (len(rows), rows.shape[-1])) for fh in files]


_POOLED: OrderedDict = OrderedDict()  # (entry key, reduce) -> RowFile of the whole entry pooled


def _entry_key(array) -> tuple | None:
    """What identifies a whole memory-mapped file behind ``array`` (its path, place in the
    file, shape, and the file's identity and modification time); None for anything else
    (arrays in RAM, views of part of a mapping, 2-d rows that need no pooling)."""
    if not isinstance(array, np.memmap) or not isinstance(array.base, mmap.mmap) or array.ndim != 4:
        return None
    name = getattr(array, "filename", None)
    try:
        stat = os.stat(name)
    except (TypeError, OSError):
        return None
    return (os.path.realpath(name), array.offset, array.shape, array.dtype.str, stat.st_ino, stat.st_mtime_ns)


def _pooled_entry(array: np.memmap, reduce) -> RowFile:
    """The whole entry ``array`` pooled by ``reduce``, computed on first use and kept while
    the kept ones hold at most :data:`POOLED_BYTES` (the cross-validation of several
    backbones runs their folds in turn, so each backbone's entries are asked for again
    after the others')."""
    entry = _entry_key(array)
    key = (entry, reduce)
    if key in _POOLED:
        _POOLED.move_to_end(key)
        return _POOLED[key]
    # the other global pooling in the same pass (its trials come too), and from the entry's
    # float32 matrix if a flatten head has made it (pooling alone does not: it stays out of RAM)
    reduces = [reduce] + [r for r in GLOBAL_POOLINGS if r is not reduce and (entry, r) not in _POOLED]
    whole = _MATRICES.get(entry)
    files = (_pool_to_files(FeatureRows.of(array), reduces) if whole is None
             else _pool_to_files(whole.reshape(array.shape), reduces, Path(array.filename).parent))
    for r, pooled_file in zip(reduces, files):
        _POOLED[(entry, r)] = pooled_file
    _POOLED.move_to_end(key)
    size = lambda f: 4 * int(np.prod(f.shape, dtype=np.int64))  # noqa: E731 (float32 rows)
    while len(_POOLED) > 1 and sum(size(f) for f in _POOLED.values()) > POOLED_BYTES:
        _POOLED.popitem(last=False)  # files still read by some rows stay open with them
    return _POOLED[key]


_MATRICES: OrderedDict = OrderedDict()  # entry key -> the whole entry as a float32 matrix


class MatrixRows:
    """Rows ``index`` of a float32 matrix, gathered when asked for: ``x[idx]`` is
    ``matrix[index[idx]]`` (a batch is one gather from the kept entry, and the split is
    never copied whole). Supports ``len``, ``shape``, ``ndim``, ``x[a:b]``, ``x[index_array]``
    and ``np.asarray(x)``."""

    dtype = np.dtype("float32")
    ndim = 2

    def __init__(self, matrix: np.ndarray, index: np.ndarray) -> None:
        self.matrix, self.index = matrix, np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.index), self.matrix.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        return self.matrix[self.index[key]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.matrix[self.index]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def matrix(x, gather_later: bool = False) -> np.ndarray | MatrixRows:
    """All rows of ``x`` (an array, FeatureRows or MatrixRows) as one C-contiguous float32
    matrix, a row per image (a feature map flattened as ``keras.layers.Flatten`` does,
    channels last).

    Rows of whole memory-mapped cache entries are taken from the entry's float32 matrix
    (:func:`_entry_matrix`), widened once per process; the values are those of widening
    the rows alone. ``gather_later``: the rows of one such entry come as
    :class:`MatrixRows` of it, read a batch at a time (a split read in batches)."""
    if isinstance(x, MatrixRows):
        return x if gather_later else np.asarray(x)
    if isinstance(x, FeatureRows) and len(x) and all(_entry_key(a) is not None for a, _ in x.segments):
        kept = [(_entry_matrix(a), rows) for a, rows in x.segments]
        if all(m is not None for m, _ in kept):
            if gather_later and len(kept) == 1:
                m, rows = kept[0]
                return MatrixRows(m, np.arange(len(m)) if rows is None else rows)
            parts = [m if rows is None else m[rows] for m, rows in kept]
            return parts[0] if len(parts) == 1 and kept[0][1] is not None else np.concatenate(parts)
    array = np.asarray(x if isinstance(x, np.ndarray) else x[:], dtype=np.float32)
    return np.ascontiguousarray(array.reshape(len(array), -1))


def _entry_matrix(array: np.memmap) -> np.ndarray | None:
    """The whole entry ``array`` as a float32 matrix in RAM, computed on first use and
    kept while the kept ones hold at most :data:`MATRIX_BYTES`; None when the entry alone
    is larger (its rows are then read as they are asked for)."""
    n_bytes = 4 * int(np.prod(array.shape, dtype=np.int64))
    if n_bytes > MATRIX_BYTES:
        return None
    key = _entry_key(array)
    if key in _MATRICES:
        _MATRICES.move_to_end(key)
        return _MATRICES[key]
    while _MATRICES and sum(m.nbytes for m in _MATRICES.values()) + n_bytes > MATRIX_BYTES:
        _MATRICES.popitem(last=False)
    whole = np.empty((len(array), int(np.prod(array.shape[1:]))), np.float32)
    flat = array.reshape(len(array), -1)
    for start in range(0, len(array), POOL_CHUNK):  # widened in place, the mapping's pages let go as read
        np.copyto(whole[start : start + POOL_CHUNK], flat[start : start + POOL_CHUNK])
        release_pages(array)
    whole.flags.writeable = False  # shared by every fold: nobody writes into it
    _MATRICES[key] = whole
    return whole
