"""bench never overwrites or deletes a file it did not write: `bench scan`'s outputs and
`bench export --to` (bench.outputs)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.outputs import MARKER, claim_folder, replace_folder
from conftest import make_folder

runner = CliRunner()
PATIENT_IDS = "path,group\nyes/img_000.png,patient-17\nyes/img_001.png,patient-17\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.fixture
def data(tmp_path):
    return make_folder(tmp_path / "data", {"no": 6, "yes": 6}, size=48)


def test_scan_in_the_folder_of_the_users_groups_csv_leaves_it_alone(data, tmp_path, monkeypatch):
    """The user's patient-ID file groups.csv, in the folder bench scan runs in, is read and
    never rewritten; the scan writes nothing unless asked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "groups.csv").write_text(PATIENT_IDS)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("scan", data, "--groups", "groups.csv")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "groups.csv").read_text() == PATIENT_IDS
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert "wrote nothing" in result.output


def test_scan_out_onto_the_users_groups_csv_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "groups.csv").write_text(PATIENT_IDS)
    assert_refused(invoke("scan", data, "--groups", "groups.csv", "--out", "."), "would write over the input")
    assert_refused(invoke("scan", data, "--groups", "groups.csv", "--out", ".", "--force"), "input")
    assert (tmp_path / "groups.csv").read_text() == PATIENT_IDS


def test_scan_never_writes_inside_the_data_folder(data):
    before = sorted(p.name for p in (data / "yes").iterdir())
    assert_refused(invoke("scan", data, "--out", data / "yes"), "inside the data folder")
    assert_refused(invoke("scan", data, "--out", data / "new", "--force"), "inside the data folder")
    assert sorted(p.name for p in (data / "yes").iterdir()) == before and not (data / "new").exists()


def test_scan_out_folder_of_its_own(data, tmp_path):
    out = tmp_path / "scan"
    result = invoke("scan", data, "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "groups.csv").open()))
    assert len(rows) == 12
    assert json.loads((out / MARKER).read_text())["files"] == sorted(p.name for p in out.iterdir() if p.name != MARKER)
    again = invoke("scan", data, "--out", out)  # its own folder: replaced
    assert again.exit_code == 0, again.output


def test_scan_out_folder_with_other_files_is_refused_unless_forced(data, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "groups.csv").write_text(PATIENT_IDS)
    assert_refused(invoke("scan", data, "--out", out), "holds files bench did not write", "--force")
    assert (out / "groups.csv").read_text() == PATIENT_IDS
    result = invoke("scan", data, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "groups.csv").read_text() != PATIENT_IDS  # what --force asked for


def test_scan_out_checked_before_the_scan(data, tmp_path, monkeypatch):
    """A refused --out costs nothing: the scan never starts."""
    import bench.data.scan

    def fail(*_a, **_k):
        raise AssertionError("scanned before checking --out")

    monkeypatch.setattr(bench.data.scan, "scan", fail)
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert_refused(invoke("scan", data, "--out", target), "is a file")


def test_a_file_the_user_adds_to_a_scan_folder_is_kept(data, tmp_path):
    out = tmp_path / "scan"
    assert invoke("scan", data, "--out", out).exit_code == 0
    (out / "my_review.txt").write_text("checked group 3")
    assert_refused(invoke("scan", data, "--out", out), "my_review.txt")
    assert (out / "my_review.txt").read_text() == "checked group 3"


def test_export_to_a_folder_that_is_not_an_export_keeps_the_users_files(tiny_run, tmp_path):
    """mkdir proj; echo '{}' > proj/manifest.json; echo notes > proj/important.txt;
    bench export RUN --to proj: refused, important.txt kept."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "manifest.json").write_text("{}")
    (proj / "important.txt").write_text("notes")
    assert_refused(invoke("export", tiny_run, "--to", proj, "--no-check"), "not a bench export")
    assert (proj / "important.txt").read_text() == "notes"
    assert sorted(p.name for p in proj.iterdir()) == ["important.txt", "manifest.json"]


def test_export_over_an_earlier_export_with_a_users_file_is_refused(tiny_run, tmp_path):
    proj = tmp_path / "proj"
    assert invoke("export", tiny_run, "--to", proj, "--no-check").exit_code == 0
    (proj / "important.txt").write_text("notes")
    assert_refused(invoke("export", tiny_run, "--to", proj, "--no-check"), "important.txt", "did not write")
    assert (proj / "important.txt").read_text() == "notes"
    (proj / "important.txt").unlink()
    assert invoke("export", tiny_run, "--to", proj, "--no-check").exit_code == 0  # its own export: replaced


def test_export_into_or_around_the_run_folder_is_refused(tiny_run, tmp_path):
    assert_refused(invoke("export", tiny_run, "--to", tiny_run, "--no-check"), "--to")
    assert_refused(invoke("export", tiny_run, "--to", tiny_run.parent, "--no-check"), "--to")


def test_replace_folder_swaps_in_one_step(tmp_path):
    dest, new = tmp_path / "export", tmp_path / ".export.tmp"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_folder(new, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"] and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_claim_folder_keeps_inputs_and_lists_what_it_wrote(tmp_path):
    folder = claim_folder(tmp_path / "out", "scan", "--out", names=("a.csv", "b.png"))
    (folder.path / "a.csv").write_text("1")
    (folder.path / "b.png").write_text("2")
    folder.record([folder.path / "a.csv", folder.path / "b.png"])
    again = claim_folder(tmp_path / "out", "scan", "--out", names=("a.csv", "b.png"))
    (again.path / "a.csv").write_text("3")
    again.record([again.path / "a.csv", None])  # b.png not written this time: bench's stale copy goes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([MARKER, "a.csv"])
    with pytest.raises(Exception, match="holds files bench did not write"):
        claim_folder(tmp_path / "out", "export", "--out", names=("a.csv",))  # another kind's folder
    shutil.rmtree(tmp_path / "out")
