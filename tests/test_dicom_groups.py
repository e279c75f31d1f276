"""Groups from DICOM headers: a patient's images stay in one split (--group-by), merged with
copy groups, --groups still wins, a file without PatientID is listed, and the ids are
salted hashes, never the identifiers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import RunConfig
from bench.data.group_files import grouping_for
from bench.data.header_groups import pseudonym
from bench.data.scan import scan
from bench.data.split import make_split
from bench.errors import BenchError
from bench.run import check_options, prepare_run
from conftest import make_folder
from dicom_files import patient_id, phantom, write_dicom

runner = CliRunner()
STUDY = "1.2.826.0.1.3680043.8.498.777"


def write_folder(root):
    """Classes no/yes, 12 DICOM files each: 4 patients of 3 images per class (one study each,
    the first patient of yes with three studies), one yes file without PatientID, an exact copy
    of no/p0-0.dcm (its header too), no/p3-other.dcm of patient 3 holding no/p0-1's picture
    at 8 bits (a re-encoded copy: it joins patients 0 and 3), and two PNGs."""
    for label, lesion in (("no", False), ("yes", True)):
        for p in range(4):
            pid = patient_id(p + 10 * lesion)
            for k in range(3):
                study = f"{STUDY}.{int(lesion)}.{p}" + (f".{k}" if lesion and p == 0 else "")
                write_dicom(root / label / f"p{p}-{k}.dcm", phantom(100 * p + k + 1000 * lesion, 48, lesion)
                            .astype(np.uint16) * 16, patient=pid, study=study, bits_stored=12)
    write_dicom(root / "yes" / "anonymous.dcm", phantom(77, 48, True), patient=None)
    copy = (root / "no" / "p0-0.dcm").read_bytes()
    (root / "no" / "copy-of-p0").write_bytes(copy)  # identical bytes: the same PatientID
    write_dicom(root / "no" / "p3-other.dcm", phantom(1, 48), patient=patient_id(3))  # = no/p0-1
    make_folder(root, {"no": 0, "yes": 0})
    from PIL import Image

    Image.fromarray(phantom(5, 48)).save(root / "no" / "extra.png")
    Image.fromarray(phantom(6, 48, True)).save(root / "yes" / "extra.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("dg") / "data")


@pytest.fixture(scope="module")
def index(folder):
    return scan(folder)


def split_of(index, group_by="patient", groups=None):
    grouping = grouping_for(index, 0.7, groups, group_by)
    split = make_split(index, 0.2, 0.2, 0, grouping=grouping)
    return grouping, {f["path"]: f["split"] for f in split.files}, split


def test_a_patients_images_stay_in_one_split(index):
    grouping, where, split = split_of(index)
    assert grouping.user_kind == "patient" and grouping.user_groups["source"] == "DICOM PatientID"
    assert grouping.user_groups["groups"] == 8 and grouping.user_groups["without"] == ["yes/anonymous.dcm"]
    for label in ("no", "yes"):
        for p in range(4):
            assert len({where[f"{label}/p{p}-{k}.dcm"] for k in range(3)}) == 1
    assert where["no/p3-other.dcm"] == where["no/p3-0.dcm"] == where["no/p0-0.dcm"] == where["no/copy-of-p0"]
    patient_rows = [a for a in split.audit if a["kind"] == "patient"]
    assert patient_rows[0]["pairs"] == 6 * 3 + 2 * 6 and patient_rows[0]["bench_crossing"] == 0
    merged = next(g for g in grouping.groups if g.size == 8)  # patients 0 and 3 of no, joined by copies
    assert merged.kinds == ("exact", "resized/re-encoded", "patient")
    assert sum(1 for g in grouping.groups if g.kind == "patient") == 6


def test_study_groups_and_none(index):
    grouping, where, _ = split_of(index, "study")
    assert grouping.user_kind == "study" and grouping.user_groups["source"] == "DICOM StudyInstanceUID"
    assert grouping.user_groups["without"] == []  # every file has a study UID
    sizes = sorted(len(m) for m in grouping.user_members().values())
    assert sizes.count(4) == 1 and sizes.count(3) == 6 and sizes.count(1) == 5  # yes/p0: three studies
    grouping, _, _ = split_of(index, "none")
    assert grouping.user_groups is None and all("patient" not in g.kinds for g in grouping.groups)


def test_groups_csv_wins_over_the_headers(index, tmp_path, caplog):
    csv = tmp_path / "groups.csv"
    csv.write_text("path,group\nno/p0-0.dcm,A\nyes/p0-0.dcm,A\n")
    with caplog.at_level("INFO", logger="bench"):
        grouping, where, _ = split_of(index, "patient", csv)
    assert grouping.user_kind == "user group" and grouping.user_groups["source"] == str(csv)
    assert where["no/p0-0.dcm"] == where["yes/p0-0.dcm"]
    assert "the DICOM headers' PatientID is not used" in caplog.text


def test_group_ids_are_salted_hashes_never_the_ids(folder, index):
    header = next(r.header for r in index.records if r.path == "no/p0-0.dcm")
    assert header.patient == pseudonym(patient_id(0), index.salt) and len(header.patient) == 16
    assert header.study == pseudonym(f"{STUDY}.0.0", index.salt)
    again = scan(folder)
    assert next(r.header for r in again.records if r.path == "no/p0-0.dcm").patient != header.patient  # another salt
    assert all(r.header is None for r in index.records if r.format == "PNG")
    assert "header" not in json.dumps(index.to_dict()) and "PIDQ" not in repr(index)


def test_scan_says_where_groups_came_from_and_lists_files_without_id(folder, tmp_path):
    result = runner.invoke(app, ["scan", str(folder), "--out", str(tmp_path / "scan")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "DICOM: 27 of 29 images; window: each file's own VOI LUT or window" in out
    assert "groups from the headers (--group-by patient): 26 files in 8 patient groups (DICOM PatientID" in out
    assert "1 DICOM files have no PatientID: each is its own group unless copies link it (not guessed):" in out
    assert "  yes/anonymous.dcm" in out and "patient (DICOM PatientID)" in out
    groups_csv = (tmp_path / "scan" / "groups.csv").read_text()
    assert ",patient," in groups_csv and ",exact+resized/re-encoded+patient," in groups_csv
    assert "PIDQ" not in groups_csv + out
    result = runner.invoke(app, ["scan", str(folder), "--group-by", "none", "--window", "minmax"])
    assert "groups from the headers: none (--group-by none)" in result.stdout and "(--window minmax)" in result.stdout
    result = runner.invoke(app, ["scan", str(folder), "--window", "wide"])
    assert result.exit_code == 2 and "--window 'wide' is not a window rule" in result.stderr


def test_run_folder_stores_the_salt_and_resume_refuses_a_new_window(folder, tmp_path):
    config = RunConfig.from_dict(dict(data=folder, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                      out=tmp_path / "results", name="g", baseline=False, window="40, 400"))
    run = prepare_run(config)
    salt = (run.path / "header_salt.txt").read_text().strip()
    assert salt == run.index.salt and run.config.window == "40,400"
    stored = json.loads((run.path / "run.json").read_text())["config"]
    assert stored["window"] == "40,400" and stored["group_by"] == "patient"
    split = json.loads((run.path / "split.json").read_text())
    assert split["grouping"]["user_groups"]["kind"] == "patient"
    for name in ("split.json", "dataset.json", "groups.csv", "content.csv"):
        assert b"PIDQ" not in (run.path / name).read_bytes()
    check_options(run.config, {"window": "40,400"}, "g")  # the same rule, written as stored
    with pytest.raises(BenchError, match=r"--window 40,600 \(run g has --window 40,400\)"):
        check_options(run.config, {"window": "40,600"}, "g")
    with pytest.raises(BenchError, match="--group-by study"):
        check_options(run.config, {"group_by": "study"}, "g")


def test_png_folders_are_untouched(tmp_path):
    root = make_folder(tmp_path / "png", {"a": 6, "b": 6}, size=16)
    grouping = grouping_for(scan(root), 0.7, None, "patient")
    assert grouping.user_groups is None
    shutil.rmtree(root)
