"""No identifier leaves: DICOM files with planted names, IDs, birth dates, accession numbers
and UIDs go through scan, run (export, Grad-CAM, report, MLflow, TensorBoard), predict,
evaluate and report; every byte bench writes or prints (archives opened) is searched for them.
The run uses a window of its own, so the export's fidelity check (a fresh process reading the
DICOM test files) passes only if predict time reads DICOM as the run did."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.identifiers import identifying_values
from dicom_files import identifiers, patient_id, phantom, write_dicom

WINDOW = "2000,3000"
SYNTAXES = ("explicit", "rle", "j2k", "implicit")


def write_data(root: Path, first_patient: int, per_class: int, seed: int) -> list[str]:
    """Classes no/yes of DICOM phantoms, three images a patient, some compressed, one without
    PatientID, one refused (multi-frame), one damaged; the PatientIDs written."""
    ids = []
    for label, lesion in (("no", False), ("yes", True)):
        for i in range(per_class):
            pid = patient_id(first_patient + i // 3 + 100 * lesion)
            ids.append(pid)
            stored = phantom(seed + 10 * i + lesion, 48, lesion).astype(np.uint16) * 16
            write_dicom(root / label / f"im{i}.dcm", stored, patient=pid, bits_stored=12, window=(1800, 3600),
                        syntax=SYNTAXES[i % 4])
    write_dicom(root / "yes" / "noid", phantom(seed + 99, 48, True), patient=None)
    write_dicom(root / "no" / "cine.dcm", phantom(seed + 98, 48), patient=patient_id(first_patient + 90), frames=2)
    damaged = write_dicom(root / "no" / "damaged.dcm", phantom(seed + 97, 48), patient=patient_id(first_patient + 91))
    damaged.write_bytes(damaged.read_bytes()[:-500])
    return ids + [patient_id(first_patient + 90), patient_id(first_patient + 91)]


def secrets_of(*folders: Path) -> list[bytes]:
    """Every identifier planted in the folders' files: names, IDs, dates, UIDs (6+ characters)."""
    found = set()
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
                found.update(v.encode() for v in identifying_values(ds) if len(v) >= 6)
    return sorted(found)


def readable_bytes(path: Path) -> list[tuple[str, bytes]]:
    """A file's bytes, and the members of a zip (.keras, .npz) or gzip file, unpacked."""
    data = path.read_bytes()
    out = [(str(path), data)]
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            out += [(f"{path}:{name}", archive.read(name)) for name in archive.namelist()]
    elif data[:2] == b"\x1f\x8b":
        out.append((f"{path}:gunzip", gzip.decompress(data)))
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Every command, once: (working folder, [(command, stdout + stderr)], planted secrets)."""
    base = tmp_path_factory.mktemp("privacy")
    data, external = base / "input" / "data", base / "input" / "external"
    ids = write_data(data, 0, 9, 0) + write_data(external, 500, 4, 5000)
    work = base / "work"
    work.mkdir()
    runner, said = CliRunner(), []

    def bench(*args):
        result = runner.invoke(app, [str(a) for a in args])
        said.append((" ".join(map(str, args[:2])), result.output + (result.stderr or "")))
        assert result.exit_code == 0, result.output + (result.stderr or "")
        return result

    export = work / "results" / "r" / "export" / "mobilenet_v2"
    previous = os.getcwd()
    os.chdir(work)  # what lands in the working folder (MLflow's artifacts) is searched too
    try:
        commands(bench, data, external, work, export)
    finally:
        os.chdir(previous)
    return work, said, sorted(set(secrets_of(data, external)) | set(identifiers(*ids)))


def commands(bench, data: Path, external: Path, work: Path, export: Path) -> None:
    bench("scan", data, "--out", work / "scan", "--window", WINDOW)
    bench("run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
          "--max-trials", "1", "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--no-baseline",
          "--no-floor", "--window", WINDOW, "--out", work / "results", "--reports", work / "reports", "--name", "r",
          "--mlflow", f"sqlite:///{work / 'mlflow.db'}")
    bench("predict", export, data / "yes", "--csv", work / "predictions.csv")
    bench("evaluate", export, external, "--out", work / "evaluation")
    bench("report", work / "results" / "r", "--reports", work / "reports2")


def test_the_planted_identifiers_are_many_and_the_search_finds_them(session):
    work, _, secrets = session
    assert b"Qzxwrtyk^Vblmnop" in secrets and b"19230417" in secrets and b"ACCN7731XQ" in secrets
    assert patient_id(0).encode() in secrets and sum(s.startswith(b"1.2.826.0.1.3680043") for s in secrets) > 50
    source = work.parent / "input" / "data" / "no" / "im1.dcm"  # RLE-compressed pixels, plain header
    found = {secret for _, blob in readable_bytes(source) for secret in secrets if secret in blob}
    assert {patient_id(0).encode(), b"Qzxwrtyk^Vblmnop", b"OTHERID5521Z"} <= found


def test_no_identifier_in_any_file_written_or_line_printed(session):
    work, said, secrets = session
    files = [p for p in work.rglob("*") if p.is_file()]
    assert len(files) > 40 and any(p.suffix == ".keras" for p in files) and any(p.name.startswith("events.") for p in files)
    assert any(p.name == "overlap_reference.npz" for p in files) and any(p.name == "mlflow.db" for p in files)
    assert any("mlruns" in p.parts and p.name == "model_card.md" for p in files)  # MLflow's artifacts
    leaks = [(where, secret) for path in files for where, blob in readable_bytes(path) for secret in secrets
             if secret in blob]
    leaks += [(command, secret) for command, text in said for secret in secrets if secret in text.encode()]
    assert leaks == []


def test_refused_and_damaged_files_are_named_without_their_headers(session):
    work, said, _ = session
    scan_out = said[0][1]
    assert "no/cine.dcm: multi-frame DICOM (2 frames)" in scan_out
    assert "no/damaged.dcm: cannot decode DICOM pixel data" in scan_out
    assert "yes/noid" in scan_out and "1 DICOM files have no PatientID" in scan_out


def test_the_export_reads_dicom_with_the_runs_window(session):
    import json

    work, said, _ = session
    export = work / "results" / "r" / "export" / "mobilenet_v2"
    labels = json.loads((export / "labels.json").read_text())
    assert labels["dicom"]["window"] == WINDOW
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["checks"]["run"] and manifest["checks"]["passed"]  # a fresh process read the DICOM test files
    card = (export / "model_card.md").read_text()
    assert f"(`--window {WINDOW}`)" in card and "window center 2000, width 3000" in card
    run = json.loads((work / "results" / "r" / "run.json").read_text())
    assert run["config"]["window"] == WINDOW and run["config"]["group_by"] == "patient"
    evaluation = json.loads((work / "evaluation" / "evaluation.json").read_text())
    assert evaluation["data"]["n_images"] == 9 and evaluation["data"]["n_groups"] == 5  # 4 patients, 1 without ID
    predicted = (work / "predictions.csv").read_text()
    assert "im0.dcm" in predicted and "noid" in predicted  # DICOM with and without extension
    report = (work / "reports" / "r" / "report.md").read_text()
    assert "--window" in report and "Groups from the DICOM headers (--group-by patient)" in report
