"""Patient/study groups given by the user (``--groups FILE.csv``), or read from DICOM
headers (:func:`header_groups`, ``--group-by``).

The file is a UTF-8 CSV (a byte-order mark is fine) whose header names at least the
columns ``path`` and ``group`` (any case, any order; other columns are ignored). Bytes that
are not UTF-8 are accepted in one place only: a ``path`` that names, byte for byte, a file
of the data folder whose name is not UTF-8 (bench's own groups.csv writes such a name as
its bytes); anywhere else the file is refused as not UTF-8. A cell that starts with ``'``
followed by ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or another ``'`` is read
without that ``'`` (how bench and spreadsheets keep such names from running as formulas)::

    path,group
    yes/Y1.jpg,patient01
    yes/Y2.jpg,patient01
    no/N5.jpg,"patient 7, visit 2"

``path`` is an image of the data folder, relative to it (``yes/Y1.jpg``; ``\\`` and a
leading ``./`` are accepted) or absolute but inside it. ``group`` is the patient/study
id, kept as written (surrounding spaces stripped). Images of one group must all land in
the same train/val/test split. Blank lines are skipped; images not listed are counted in
:attr:`UserGroups.missing`. Every problem is a one-line :class:`BenchError` naming the
file, the line (physical line of the file, the header being line 1) and the fix.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from bench.data.scan import DatasetIndex
from bench.data.regular_files import MAX_TABLE_BYTES, NotRegular, read_regular
from bench.errors import BenchError
from bench.tables import unquote_cell


@dataclass(frozen=True)
class UserGroups:
    group_of: dict[str, str]  # record path -> user group id (only paths listed in the CSV)
    missing: int  # readable images of the index not listed in the CSV
    source: str  # the CSV path as given (for reports)
    #: the kind of link the groups add: "user group" (--groups), "patient" or "study" (DICOM headers)
    kind: str = "user group"
    #: DICOM files without the header attribute (header groups only), listed for the user
    without: tuple[str, ...] = ()

    def members(self) -> dict[str, list[str]]:
        """Group id -> its sorted record paths, groups in sorted order."""
        out: dict[str, list[str]] = {}
        for path, group in self.group_of.items():
            out.setdefault(group, []).append(path)
        return {g: sorted(out[g]) for g in sorted(out)}


def _show(value: str, limit: int = 80) -> str:
    """``repr`` of a user value, shortened: messages stay one short line."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _fail(message: str) -> BenchError:
    return BenchError(" ".join(message.splitlines()))


def _decode(csv_path: Path) -> str:
    src = str(csv_path)
    if not csv_path.exists():
        raise _fail(f"groups file {src} does not exist; pass --groups with a CSV file with columns path,group")
    if csv_path.is_dir():
        raise _fail(f"groups file {src} is a folder, not a file; pass --groups with a CSV file with columns path,group")
    try:
        data = read_regular(csv_path, MAX_TABLE_BYTES)
    except NotRegular as exc:
        raise _fail(f"groups file {src} cannot be used ({exc}); pass --groups with a CSV file with columns path,group") from None
    except OSError as exc:
        raise _fail(f"cannot read groups file {src} ({exc.strerror or exc}); make it readable (permissions), then retry") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise _not_utf8(src, data[exc.start], data[: exc.start].count(b"\n") + 1, " (it looks like UTF-16)") from None
    return data.decode("utf-8-sig", "surrogateescape")  # each byte that is not UTF-8: a lone surrogate


def _not_utf8(src: str, byte: int, line: int, hint: str = "") -> BenchError:
    return _fail(
        f"groups file {src} is not UTF-8 text{hint}: byte 0x{byte:02x} on line {line} cannot be decoded; "
        "save it as UTF-8 CSV (in Excel: Save As > 'CSV UTF-8 (Comma delimited)')"
    )


def _undecoded(text: str) -> int | None:
    """The first byte of ``text`` that was not UTF-8 (decoded with surrogateescape), or None."""
    return next((ord(ch) - 0xDC00 for ch in text if 0xDC80 <= ord(ch) <= 0xDCFF), None)


def _check_encoding(rows: list[tuple[int, list[str]]], p_col: int, index: DatasetIndex, known: set[str],
                    src: str) -> None:
    """Bytes that are not UTF-8 are accepted only in a path naming a file of the data folder byte
    for byte (a file name that is not UTF-8, as bench's own groups.csv writes it); anywhere else
    the file is refused as not UTF-8, at the first such byte."""
    for line, row in rows:
        for col, cell in enumerate(row):
            byte = _undecoded(cell)
            if byte is None:
                continue
            if col == p_col and line > rows[0][0] and _relative(unquote_cell(cell.strip()), index.root) in known:
                continue
            raise _not_utf8(src, byte, line)


def _rows(text: str, src: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            raise _fail(f"groups file {src}: line {start} is not valid CSV ({exc}); fix the quoting on that line") from None
        if any(cell.strip() for cell in row):
            rows.append((start, row))


def _column(header: list[str], name: str, src: str) -> int:
    names = [h.strip().lower() for h in header]
    if names.count(name) > 1:
        raise _fail(f"groups file {src}: the header has {names.count(name)} '{name}' columns; keep one")
    if name not in names:
        found = ", ".join(_show(h.strip()) for h in header)
        odd = len(header) == 1 and any(sep in header[0] for sep in ";\t")
        hint = " (the file looks ';'- or tab-separated; save it comma-separated)" if odd else ""
        raise _fail(
            f"groups file {src} has no '{name}' column (columns found: {found}){hint}; "
            "the first line must be a header naming the columns path,group"
        )
    return names.index(name)


def _relative(raw: str, root: Path) -> str | None:
    """``raw`` as a POSIX path relative to ``root``; ``None`` when it points outside."""
    norm = raw.replace("\\", "/")
    if os.path.isabs(norm):
        absolute = Path(os.path.normpath(norm))
        for candidate in (absolute, absolute.parent.resolve() / absolute.name):
            try:
                return candidate.relative_to(root).as_posix()
            except ValueError:
                continue
        return None
    rel = posixpath.normpath(norm)
    return None if rel == "." or rel == ".." or rel.startswith("../") else rel


def _path_problem(raw: str, rel: str | None, index: DatasetIndex, known: set[str]) -> tuple[str, str]:
    """(problem, fix) for a path that is not one of the index's records."""
    root = index.root
    example = index.records[0].path
    fix = f"fix the path (relative to the data folder, like {example!r}) or remove the row"
    if rel is None:
        return f"names {_show(raw)}, which is outside the data folder {root}", fix
    on_disk = root / rel
    if os.path.lexists(on_disk):
        if on_disk.is_dir():
            return f"names {_show(raw)}, which is a folder, not an image", "list each image on its own row"
        reason = {s.path: s.reason for s in index.skipped}.get(rel, "hidden files and files outside class folders are ignored")
        return (
            f"names {_show(raw)}, which the scan skipped as unreadable or not an image: {reason}",
            "remove the row, or replace the file with a readable image and scan again",
        )
    lowered = {p.lower(): p for p in known}
    head, _, rest = rel.partition("/")
    guess = lowered.get(rel.lower()) or (rest if head == root.name and rest in known else None)
    hint = f" (did you mean {guess!r}? paths are case-sensitive and relative to the data folder)" if guess else ""
    return f"names {_show(raw)}, which does not exist in the data folder {root}{hint}", fix


def read_user_groups(csv_path: Path, index: DatasetIndex) -> UserGroups:
    """Read ``csv_path`` (columns ``path``, ``group``) against the scanned ``index``.

    Raises a one-line :class:`BenchError` for the first problem (see the module docstring),
    counting the other rows with a problem of the same kind.
    """
    csv_path = Path(csv_path)
    src = str(csv_path)
    rows = _rows(_decode(csv_path), src)
    example = index.records[0].path if index.records else "yes/Y1.jpg"
    if not rows:
        raise _fail(f"groups file {src} is empty; write a header line path,group, then one row per image like {example},patient01")
    (_, header), body = rows[0], rows[1:]
    known = {r.path for r in index.records}
    if any(_undecoded(cell) is not None for cell in header):
        _check_encoding(rows[:1], -1, index, known, src)
    p_col, g_col = _column(header, "path", src), _column(header, "group", src)
    _check_encoding(rows, p_col, index, known, src)
    if not body:
        raise _fail(f"groups file {src} has a header but no rows; add one row per image, like {example},patient01")

    group_of: dict[str, str] = {}
    seen: dict[str, tuple[int, str]] = {}
    problems: list[tuple[str, str, str]] = []  # (kind, problem, fix), in file order
    for line, row in body:
        raw = unquote_cell(row[p_col].strip()) if p_col < len(row) else ""
        group = unquote_cell(row[g_col].strip()) if g_col < len(row) else ""
        where = f"line {line}"
        if any("\n" in cell or "\r" in cell for cell in row):
            problems.append(("quote", f"{where} has a field spanning several lines (a quote \" that is never closed?)",
                             "close the quote or remove the stray \""))
        elif not raw:
            problems.append(("nopath", f"{where} has an empty path",
                             f"fill in the image path (relative to the data folder, like {example!r}) or remove the row"))
        elif not group:
            problems.append(("nogroup", f"{where} ({_show(raw)}) has an empty group",
                             "fill in the patient/study id or remove the row"))
        else:
            rel = _relative(raw, index.root)
            if rel not in known:
                problem, fix = _path_problem(raw, rel, index, known)
                problems.append(("path", f"{where} {problem}", fix))
            elif rel in seen:
                first, first_group = seen[rel]
                both = f"groups {_show(first_group)} and {_show(group)}"
                both = f"both in group {_show(group)}" if group == first_group else both
                problems.append(("twice", f"{_show(rel)} is listed twice, on lines {first} and {line} ({both})",
                                 "keep one row per image"))
            else:
                seen[rel] = (line, group)
                group_of[rel] = group
    if problems:
        kind, problem, fix = problems[0]
        more = sum(1 for k, _, _ in problems[1:] if k == kind)
        suffix = f" (and {more} more row{'s' if more > 1 else ''} like it)" if more else ""
        raise _fail(f"groups file {src}: {problem}{suffix}; {fix}")
    return UserGroups(group_of=group_of, missing=len(known) - len(group_of), source=src)


def header_groups(index: DatasetIndex, group_by: str) -> UserGroups | None:
    """The DICOM files of ``index`` grouped by ``group_by`` (``patient``, ``study``;
    :mod:`bench.data.header_groups`), ids ``patient-<salted hash>``; the files without the
    attribute in :attr:`UserGroups.without`. None when the index holds no DICOM file or
    ``group_by`` is ``none``."""
    from bench.data.header_groups import ATTRIBUTE

    if group_by not in ATTRIBUTE:
        return None
    dicom = [r for r in index.records if r.header is not None]
    if not dicom:
        return None
    group_of = {r.path: f"{group_by}-{r.header.get(group_by)}" for r in dicom if r.header.get(group_by)}
    without = tuple(sorted(r.path for r in dicom if not r.header.get(group_by)))
    return UserGroups(group_of=group_of, missing=len(without), source=f"DICOM {ATTRIBUTE[group_by]}",
                      kind=group_by, without=without)
