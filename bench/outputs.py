"""Where bench may write: into folders it owns, never over or beside what it did not write.

An output folder is bench's when it is new, empty, or a folder bench filled before and
nobody has changed since: every file in it is one that bench lists as its own (the
folder's marker, or an export's ``manifest.json``) with the checksum bench recorded.
Anything else in the folder is the user's, and bench refuses the folder in one line
before any work starts; ``force`` lets a user write there anyway, over bench's own file
names only. Whatever the flags, bench never writes inside the data folder it reads
(the next scan would read its outputs as images) nor over one of the command's inputs.

:func:`claim_folder` checks a folder before the work; :meth:`OutputFolder.record` lists
what was written, so the next run with the same folder may replace it.
:func:`replace_folder` puts a finished folder in place of an earlier one in one rename.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

from bench.errors import BenchError

#: The file that lists what bench wrote into an output folder.
MARKER = ".bench-output.json"


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def is_inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies under it, links resolved."""
    path, folder = _resolved(path), _resolved(folder)
    return path == folder or folder in path.parents


def folder_files(folder: Path) -> list[str]:
    """Every file and link under ``folder``, as sorted POSIX paths relative to it."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out.extend((rel / name).as_posix() for name in files)
        out.extend((rel / name).as_posix() for name in dirs if os.path.islink(os.path.join(root, name)))
    return sorted(out)


def foreign_files(folder: Path, owned: Iterable[str]) -> list[str]:
    """Files in ``folder`` that are not bench's: not among the relative paths ``owned``
    (the names bench wrote there), or a link or special file where bench wrote a file."""
    owned = set(owned)
    return [name for name in folder_files(folder)
            if name not in owned or (folder / name).is_symlink() or not (folder / name).is_file()]


def describe_files(names: list[str]) -> str:
    """The first few of ``names``, for a one-line message."""
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_not_input(path: Path, option: str, *, inputs: Iterable[Path | None] = (), data: Path | None = None,
                    names: Iterable[str] | None = None) -> None:
    """Refuse an output ``path`` inside the data folder, or one that would write over an
    input: the input is ``path`` itself, or one of the files ``names`` bench writes in the
    folder ``path`` (any file under it when ``names`` is None)."""
    if data is not None and is_inside(path, data):
        raise BenchError(f"{option} {path} is inside the data folder {data}; bench never writes there "
                         "(the next scan would read its files as images): pass a folder outside it")
    targets = None if names is None else {_resolved(Path(path) / n) for n in names} | {_resolved(path)}
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        if (_resolved(item) in targets) if targets is not None else is_inside(item, path):
            raise BenchError(f"{option} {path} would write over the input {item}; pass another {option}")


@dataclass
class OutputFolder:
    """A folder bench may fill: checked by :func:`claim_folder`, listed by :meth:`record`."""

    path: Path
    kind: str
    previous: list[str] = field(default_factory=list)

    def record(self, written: Iterable[Path | None]) -> Path:
        """List ``written`` (files in this folder) in its marker; the files bench wrote
        here before and did not write again are removed."""
        from bench.atomic import write_json_atomic

        files = sorted(Path(p).relative_to(self.path).as_posix() for p in written if p is not None)
        for name in set(self.previous) - set(files):
            (self.path / name).unlink(missing_ok=True)
        write_json_atomic(self.path / MARKER, {"kind": self.kind, "files": files,
                                               "written": datetime.now().isoformat(timespec="seconds")})
        return self.path / MARKER


def _marker(folder: Path) -> dict | None:
    from bench.atomic import read_json

    try:
        marker = read_json(folder / MARKER)
    except (BenchError, OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, list) or not all(isinstance(v, str) for v in files):
        return None
    return marker


def claim_folder(folder: Path, kind: str, option: str, *, names: Iterable[str], inputs: Iterable[Path | None] = (),
                 data: Path | None = None, force: bool = False) -> OutputFolder:
    """Check before any work that bench may write the files ``names`` into ``folder``
    (``option`` names it in errors); create it. Refused in one line: a path inside
    ``data``, one where a written file would replace an input, a file, or a folder holding
    anything bench did not write (unless ``force``)."""
    folder = Path(folder)
    check_not_input(folder, option, inputs=inputs, data=data, names=names)
    if folder.exists() and not folder.is_dir():
        raise BenchError(f"{option} {folder} is a file, not a folder; pass a folder (new, or one bench wrote)")
    previous: list[str] = []
    if folder.is_dir():
        marker = _marker(folder)
        if marker is not None and marker.get("kind") == kind:
            previous = marker["files"]
        foreign = foreign_files(folder, [*previous, MARKER] if marker is not None else previous)
        if foreign and not force:
            raise BenchError(f"{option} {folder} holds files bench did not write ({describe_files(foreign)}); "
                             f"pass a new or empty folder, or add --force to write beside them")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {option} {folder} ({exc.strerror or exc}); pass a writable folder") from None
    return OutputFolder(folder, kind, previous)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2``); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: Path, dest: Path) -> None:
    """Put the finished folder ``new`` at ``dest`` (same parent folder). An earlier ``dest``
    is swapped out in one atomic rename where the system allows it, then removed; at no
    moment is ``dest`` missing or half-written. Elsewhere it is renamed aside first and
    renamed back if the second rename fails."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        new.rename(dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # now holds the earlier folder
        return
    old = dest.with_name(f".{dest.name}.old-{datetime.now().strftime('%Y%m%d%H%M%S%f')}")
    dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
