"""The CSV files bench writes, read back by bench and opened in spreadsheets: file names that
are not UTF-8 round-trip byte for byte; cells that a spreadsheet would run as a formula are
written as text."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from conftest import make_folder

runner = CliRunner()

#: File names that are not valid UTF-8 (Latin-1 bytes), as old scanners and zip files leave them.
LATIN1_NAMES = (b"caf\xe9.png", b"r\xf6ntgen.png")


def test_groups_csv_of_a_file_name_that_is_not_utf8_round_trips_as_groups(tmp_path):
    from bench.data.scan import scan
    from bench.data.user_groups import read_user_groups

    data = make_folder(tmp_path / "data", {"cat": 6, "dog": 6}, size=32)
    for k, name in enumerate(LATIN1_NAMES):
        os.rename(data / "cat" / f"img_00{k}.png", os.path.join(os.fsencode(data / "cat"), name))
    written = runner.invoke(app, ["scan", str(data), "--out", str(tmp_path / "out")])
    assert written.exit_code == 0, written.output
    raw = (tmp_path / "out" / "groups.csv").read_bytes()
    assert all(b"cat/" + name in raw for name in LATIN1_NAMES)  # the name's own bytes
    given = tmp_path / "patients.csv"
    shutil.copy(tmp_path / "out" / "groups.csv", given)

    result = runner.invoke(app, ["scan", str(data), "--groups", str(given)])
    assert result.exit_code == 0, result.output
    assert "user group" in result.stdout
    index = scan(data, copies=False)
    expected = {row[5]: row[0] for row in csv.reader(raw.decode("utf-8", "surrogateescape").splitlines()[1:])}
    groups = read_user_groups(given, index)
    assert groups.group_of == expected and groups.missing == 0
    for name in LATIN1_NAMES:
        assert "cat/" + os.fsdecode(name) in groups.group_of


@pytest.mark.parametrize("row", [b"cat/img_002.png,M\xfcller\n", b"cat/caf\xe9-missing.png,p1\n"])
def test_bytes_that_are_not_utf8_outside_a_matching_file_name_are_refused(tmp_path, row):
    """Only a path naming a file byte for byte may hold them; a Latin-1 group id or a path that
    names nothing is the usual 'not UTF-8' line."""
    data = make_folder(tmp_path / "data", {"cat": 4, "dog": 4}, size=32)
    given = tmp_path / "patients.csv"
    given.write_bytes(b"path,group\n" + row)
    result = runner.invoke(app, ["scan", str(data), "--groups", str(given)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"groups file {given} is not UTF-8 text: byte 0x" in result.stderr and "on line 2" in result.stderr
