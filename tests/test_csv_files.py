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


#: File names a spreadsheet would run as formulas, and harmless look-alikes.
FORMULA_NAMES = ('=HYPERLINK("x").png', "-neg.png", "+1+2.png", "@SUM(A1).png",
                 "\tTAB.png", "'=quoted.png", "'plain.png")


def test_text_cells_that_start_a_formula_are_quoted_and_read_back_unchanged(tmp_path):
    from bench.tables import csv_text, read_table, text_frame, write_csv

    frame = text_frame({"file": [*FORMULA_NAMES, "-3", "ok.png"], "label": ["=cmd|' /C calc'!A0", *["a"] * 8],
                        "prob_a": [-0.5, 1e-9, -2.0, 0.0, 1.0, 0.25, -1e-12, 3.0, -4.5]})
    text = csv_text(frame)
    cells = [row for row in csv.reader(text.splitlines())][1:]
    for row in cells:
        for cell in row:
            numeric = cell.lstrip("+-").replace(".", "", 1).replace("e-", "", 1).isdigit()
            assert not cell.startswith(("=", "+", "@", "\t", "\r")) and (not cell.startswith("-") or numeric), cell
    assert cells[0][0] == "'" + FORMULA_NAMES[0] and cells[1][0] == "'-neg.png" and cells[5][0] == "''=quoted.png"
    assert cells[6][0] == "'plain.png" and cells[7][0] == "-3"  # nothing to quote: left as written
    assert [row[2] for row in cells] == ["-0.5", "1e-09", "-2.0", "0.0", "1.0", "0.25", "-1e-12", "3.0", "-4.5"]
    write_csv(tmp_path / "t.csv", frame)
    back = read_table(tmp_path / "t.csv")
    assert list(back["file"]) == [*FORMULA_NAMES, "-3", "ok.png"] and back["label"][0] == "=cmd|' /C calc'!A0"
    assert back["prob_a"].dtype.kind == "f" and list(back["prob_a"]) == list(frame["prob_a"])


def test_every_csv_of_a_run_quotes_formula_names_and_bench_reads_them_back(tmp_path):
    from bench.data.scan import scan
    from bench.data.user_groups import read_user_groups
    from bench.tables import TRIALS_TEXT_COLUMNS, read_table
    from conftest import noise_image
    import numpy as np

    classes = ('=HYPERLINK("x")', "-neg")  # paths, labels and predictions start with them
    data = make_folder(tmp_path / "data", dict.fromkeys(classes, 8), size=32)
    rng = np.random.default_rng(5)
    for k, name in enumerate(FORMULA_NAMES):
        noise_image(rng, 32).save(data / classes[k % 2] / name, format="PNG")
    result = runner.invoke(app, [
        "run", "--data", str(data), "--weights", "none", "--backbones", "mobilenet_v2", "--image-size", "32",
        "--max-trials", "1", "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--no-export",
        "--test-size", "0.4", "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--name", "f"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "results" / "f"
    written = [run / "groups.csv", run / "leaderboard.csv", *sorted(run.glob("mobilenet_v2/*.csv"))]
    assert {p.name for p in written} >= {"test_predictions.csv", "val_predictions.csv", "trials.csv"}
    for path in written:
        for row in csv.reader(path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()):
            for cell in row:
                if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                    float(cell)  # only numbers may start so
    index = scan(data, copies=False)
    every = {r.path for r in index.records}
    assert read_user_groups(run / "groups.csv", index).group_of.keys() == every  # bench's groups.csv, given back
    predicted = set()
    for name in ("test_predictions.csv", "val_predictions.csv"):
        predicted |= set(read_table(run / "mobilenet_v2" / name)["file"])
    assert predicted and predicted <= every
    odd = {f"{classes[k % 2]}/{n}" for k, n in enumerate(FORMULA_NAMES)}
    assert predicted & odd, "no formula-like name among the predicted files"
    test = read_table(run / "mobilenet_v2" / "test_predictions.csv")
    assert set(test["label"]) == set(classes) and set(test["prediction"]) <= set(classes)
    assert read_table(run / "mobilenet_v2" / "trials.csv", TRIALS_TEXT_COLUMNS)["status"].tolist() == ["completed"]
