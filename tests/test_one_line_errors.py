"""Faults that reach bench half-way through a command: files changed during a scan, a run
folder that cannot be written, JSON files that are not JSON, output folders that cannot be
written. Each is one line on stderr naming the problem and the fix, exit code 2, no traceback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.cli import app
from conftest import make_folder, scan_like

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: "), err
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err


def mirrored_pair_folder(root: Path) -> Path:
    """Two classes of scan-like pictures, one of them also saved mirrored: grouping it reads
    that file again from disk (the mirror-image check)."""
    for label, offset in (("no", 0), ("yes", 10)):
        (root / label).mkdir(parents=True)
        for i in range(5):
            scan_like(offset + i, 96).save(root / label / f"s{i}.png")
    scan_like(1, 96).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "no" / "s1_flip.png")
    return root


@pytest.mark.parametrize("change", ["delete", "truncate"])
def test_files_changed_during_a_scan_are_one_line(tmp_path, monkeypatch, change):
    """Files deleted or truncated after the scan read them but before grouping read them again."""
    import bench.data.scan as scan_module

    root = mirrored_pair_folder(tmp_path / "data")
    read_files = scan_module.read_files

    def read_then_change(*args, **kwargs):
        out = read_files(*args, **kwargs)
        for path in root.glob("*/*.png"):
            path.unlink() if change == "delete" else path.write_bytes(path.read_bytes()[:40])
        return out

    monkeypatch.setattr(scan_module, "read_files", read_then_change)
    result = invoke("scan", root)
    assert_one_line_error(result, f"cannot read {root / 'no' / 's1_flip.png'} again",
                          "the data folder changed during the scan", "scan again")


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made unwritable: by its mode, or (as root, whom modes do not stop) by the
    file system's immutable attribute."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without the immutable attribute")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def prepared_run(tmp_path: Path, name: str = "r") -> Path:
    """A run folder as `bench run` prepares it (run.json, split.json...), without its search."""
    from bench.config import RunConfig
    from bench.run import prepare_run

    data = make_folder(tmp_path / "data", {"cat": 8, "dog": 8}, size=32)
    config = RunConfig.from_dict({"data": data, "out": tmp_path / "results", "name": name, "weights": "none",
                                  "backbones": "mobilenet_v2", "image_size": 32})
    return prepare_run(config).path


def test_resume_on_a_read_only_run_folder_is_one_line(tmp_path):
    run_dir = prepared_run(tmp_path)
    with read_only(run_dir):
        result = invoke("run", "--resume", "--name", "r", "--out", tmp_path / "results", "--no-export")
    assert_one_line_error(result, f"cannot write into the run folder {run_dir}", "chmod -R u+w", "--out")


def test_corrupt_run_json_for_resume_is_one_line(tmp_path):
    run_dir = prepared_run(tmp_path)
    run_json = run_dir / "run.json"
    run_json.write_text(run_json.read_text()[:50])
    result = invoke("run", "--resume", "--name", "r", "--out", tmp_path / "results", "--no-export")
    assert_one_line_error(result, f"cannot read {run_json}: not valid JSON", "restore its run.json",
                          "start a new run with another --name")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_corrupt_labels_json_is_one_line(tmp_path, command):
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.keras").write_bytes(b"not loaded: labels.json is read first")
    (export / "labels.json").write_text('{"classes": ["cat", "dog"], "image_si')
    data = make_folder(tmp_path / "data", {"cat": 2, "dog": 2}, size=32)
    args = [export, data / "cat"] if command == "predict" else [export, data, "--out", tmp_path / "eval"]
    result = invoke(command, *args)
    assert_one_line_error(result, f"cannot read {export / 'labels.json'}: not valid JSON", "export the run again")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("command", ["scan", "evaluate"])
def test_copy_threshold_nan_is_refused_before_any_work(tmp_path, command):
    data = make_folder(tmp_path / "data", {"cat": 2, "dog": 2}, size=32)
    args = [data] if command == "scan" else [tmp_path / "missing-model", data]
    result = invoke(command, *args, "--copy-threshold", "nan")
    assert_one_line_error(result, "--copy-threshold must be a finite number, got nan")


def _no_work(*args, **kwargs):
    raise AssertionError("the data folder was scanned before the output folders were checked")


@pytest.mark.parametrize("where", ["file in the way", "read-only folder"])
def test_unwritable_reports_folder_stops_bench_run_before_any_work(tmp_path, monkeypatch, where):
    import bench.run

    data = make_folder(tmp_path / "data", {"cat": 8, "dog": 8}, size=32)
    monkeypatch.setattr(bench.run, "scan", _no_work)
    locked = tmp_path / "locked"
    locked.mkdir()
    if where == "file in the way":
        (locked / "reports").write_text("a file where a folder should be")
        reports = locked / "reports" / "sub"
        context = contextlib.nullcontext()
    else:
        reports = locked / "reports"
        context = read_only(locked)
    started = time.perf_counter()
    with context:
        result = invoke("run", "--data", data, "--weights", "none", "--backbones", "mobilenet_v2", "--image-size", "32",
                        "--max-trials", "1", "--epochs", "1", "--out", tmp_path / "results", "--reports", reports,
                        "--name", "r")
    assert_one_line_error(result, f"cannot write to --reports folder {reports}", "pass a writable folder with --reports")
    assert time.perf_counter() - started < 30  # a search of this run takes longer; the scan is not even called
    assert not (tmp_path / "results").exists() and not reports.exists()


def test_unwritable_reports_folder_stops_a_resume_before_its_scan(tmp_path, monkeypatch):
    import bench.run

    prepared_run(tmp_path)
    monkeypatch.setattr(bench.run, "scan", _no_work)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = invoke("run", "--resume", "--name", "r", "--out", tmp_path / "results", "--no-export",
                    "--reports", tmp_path / "blocker" / "reports")
    assert_one_line_error(result, "cannot write to --reports folder", "blocker is a file, not a folder")


def test_unwritable_evaluate_out_is_refused_before_the_model_is_loaded(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.keras").write_bytes(b"never loaded: --out is checked first")
    (export / "labels.json").write_text('{"classes": ["cat", "dog"], "image_size": 32}')
    data = make_folder(tmp_path / "data", {"cat": 2, "dog": 2}, size=32)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    out = tmp_path / "blocker" / "eval"
    result = invoke("evaluate", export, data, "--out", out)
    assert_one_line_error(result, f"cannot write to --out folder {out}", "pass a writable folder with --out")


def test_the_console_command_ends_with_its_exit_code_and_all_its_output(tmp_path):
    """The installed entry point (``bench.cli.main``) ends the process itself once the
    command is done: the exit code and everything written must still come out whole."""
    import sys

    entry = [sys.executable, "-c", "from bench.cli import main; main()"]
    bad = subprocess.run([*entry, "scan", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ") and len(bad.stderr.splitlines()) == 1, bad.stderr
    listed = subprocess.run([*entry, "backbones"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.rstrip().splitlines()[-1].startswith("xception")  # the table's last row
    assert subprocess.run([*entry, "no-such-command"], capture_output=True, text=True, timeout=120).returncode == 2
