"""Rows of a file of fixed-size rows, read with ``pread`` into an array of the caller's.

Nothing is mapped, so nothing read stays in the process's resident memory beyond the
array itself (the file stays in the kernel's page cache). Used by the feature rows of the
search (:class:`bench.search.features.RowFile`) and the copy features of a scan
(:class:`bench.data.copy_table.CopyTable`).
"""

from __future__ import annotations

import os

import numpy as np


def read_rows(fd: int, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (indices, any order, repeats allowed) of the open file ``fd`` into
    ``out``, a C-contiguous array of ``len(rows)`` rows whose size is the file's row size;
    one read per run of consecutive indices. Returns ``out``."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return out
    size = out.nbytes // len(rows)
    buffer = memoryview(out.reshape(-1).view(np.uint8))
    ends = [*(np.flatnonzero(np.diff(rows) != 1) + 1).tolist(), len(rows)]
    start = 0
    for end in ends:
        _read_into(fd, buffer[start * size : end * size], int(rows[start]) * size)
        start = end
    return out


def _read_into(fd: int, buffer: memoryview, offset: int) -> None:
    while len(buffer):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [buffer], offset)
        else:  # no preadv (Windows): a copy more
            data = os.pread(fd, len(buffer), offset)
            n = len(data)
            buffer[:n] = data
        if n <= 0:
            raise OSError(f"short read of file descriptor {fd} at byte {offset}")
        buffer, offset = buffer[n:], offset + n
