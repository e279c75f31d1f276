"""Files written whole or not at all: a temporary file in the same folder, then a rename,
so a crash never leaves a half-written file behind; and the matching readers (JSON, a
file's sha256)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from bench.faults import durable_write


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never half-written).

    The file gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        durable_write(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    # surrogateescape: file names that are not valid UTF-8 round-trip unchanged
    write_bytes_atomic(path, text.encode("utf-8", "surrogateescape"))


def write_json_atomic(path: Path, data) -> None:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline), atomically.

    Non-ASCII text is written as ``\\u`` escapes, so names that are not valid UTF-8
    (lone surrogates after decoding) still make valid JSON and read back unchanged.
    """
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n")


def save_via_temp(path: Path, save) -> None:
    """Atomic write for libraries that save to a path themselves (Keras models, weights).

    ``save(tmp)`` writes a hidden temporary file beside ``path`` with the same name
    (Keras picks the format from the suffix), which is then renamed into place.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    save(tmp)
    durable_write(path)
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


#: What :func:`read_json` tells the user to do about a file that is not JSON, unless told better.
DAMAGED_FIX = "the file is damaged: restore it from a copy, or write it again with the bench command that made it"


def read_json(path: Path, fix: str = DAMAGED_FIX):
    """The JSON content of ``path``. A file that is not UTF-8 JSON (truncated, edited, overwritten)
    raises a one-line :class:`~bench.errors.BenchError` naming it and ``fix``; a missing or
    unreadable file raises the usual ``OSError``."""
    from bench.errors import BenchError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise BenchError(f"cannot read {path}: not valid JSON ({reason[:120]}); {fix}") from None
