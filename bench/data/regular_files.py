"""Inputs are regular files of bounded size, checked before a byte is read.

Reading a FIFO blocks forever, a character device such as ``/dev/zero`` never ends, and a
folder linked to ``/`` holds the whole machine: :func:`regular_file` looks at a path with
``stat`` only (which neither opens nor blocks) and says, in a short reason, why a path is
not something bench reads. Links are followed; with ``inside`` given, a link that leads
out of that folder is refused too (a data folder holds its own images).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The largest image file bench reads (bytes): far above any medical image bench takes
#: (a 16-bit 10,000 x 10,000 PNG is at most ~200 MB), far below what exhausts memory.
MAX_IMAGE_BYTES = 512 * 1024 * 1024
#: The largest --groups CSV (bytes): a million rows of long paths fit in it.
MAX_TABLE_BYTES = 256 * 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegular(Exception):
    """The path is not a regular file bench may read; the message says why."""


def _megabytes(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def leaves(path: Path, folder: Path) -> bool:
    """``path``, links resolved, lies outside ``folder`` (links resolved too)."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return not (real == base or real.startswith(base.rstrip(os.sep) + os.sep))


def regular_file(path: Path, max_bytes: int = MAX_IMAGE_BYTES, inside: Path | None = None) -> os.stat_result:
    """``stat`` of ``path`` when it is a regular file (after links) of at most ``max_bytes``
    (and, with ``inside``, within that folder); :class:`NotRegular` otherwise."""
    path = Path(path)
    if inside is not None and path.is_symlink() and leaves(path, inside):
        raise NotRegular(f"symbolic link leading outside the data folder (to {os.path.realpath(path)})")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotRegular("broken symbolic link" if path.is_symlink() else "file not found") from None
    except OSError as exc:
        raise NotRegular(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise NotRegular(f"{kind}, not a regular file")
    if info.st_size > max_bytes:
        raise NotRegular(f"file too large ({_megabytes(info.st_size)}; limit {_megabytes(max_bytes)})")
    return info


def open_regular(path: Path, max_bytes: int = MAX_IMAGE_BYTES, inside: Path | None = None):
    """``path`` opened for reading (binary) after :func:`regular_file`. Opened without
    blocking and checked again on the open file, so a path swapped for a FIFO or device
    between the two looks is refused, not read."""
    regular_file(path, max_bytes, inside)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # OSError (permissions) is the caller's
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        raise NotRegular("changed while being opened; not a regular file of bounded size")
    return os.fdopen(fd, "rb")


def read_regular(path: Path, max_bytes: int = MAX_IMAGE_BYTES, inside: Path | None = None) -> bytes:
    """The bytes of ``path`` (:func:`open_regular`), never more than ``max_bytes``: a file
    that grows while it is read is cut off and refused."""
    with open_regular(path, max_bytes, inside) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotRegular(f"file too large (over {_megabytes(max_bytes)})")
    return data
