"""Bad input end to end: broken, hostile or unusual files and folders, and a full disk.

Each test drives the real CLI (typer's CliRunner, in process) the way a user would and
checks what that user would notice: a skipped file listed with its reason, a run that
finishes, names that survive unchanged, a data folder left untouched, a one-line error.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile
from typer.testing import CliRunner

from bench.cli import app
from bench.tables import read_table
from conftest import deadline, make_folder, noise_image

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every command runs in its own working folder: anything written there is seen, and stays out of the repo."""
    monkeypatch.chdir(tmp_path)


def invoke(*args):
    return runner.invoke(app, [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args])


def tiny_run(data: Path, tmp: Path, name: str = "u", max_trials: int = 2):
    """A real but tiny `bench run` (random weights, 32 px, 1 epoch, frozen backbone)."""
    return invoke(
        "run", "--data", data, "--weights", "none", "--backbones", "mobilenet_v2", "--image-size", "32",
        "--max-trials", max_trials, "--epochs", "1", "--tuner", "random", "--max-unfreeze", "0", "--no-export",
        "--out", tmp / "results", "--reports", tmp / "reports", "--name", name,
    )


def assert_ok(result) -> None:
    """Exit code 0; an unexpected exception is re-raised with its own traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


def skipped_lines(stdout: str) -> dict[str, str]:
    """``bench scan``'s "skipped N:" block as {path: reason}."""
    lines = stdout.splitlines()
    if not any(line.startswith("skipped ") for line in lines):
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("skipped ")) + 1
    out = {}
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        path, _, reason = line.strip().partition(": ")
        out[path] = reason
    return out


def class_counts(stdout: str) -> dict[str, int]:
    """``bench scan``'s class table as {class: images}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["class", "images"]) + 2
    out = {}
    for line in lines[start:]:
        if not line.strip():
            break
        label, count = line.rsplit(None, 1)
        out[label.strip()] = int(count)
    return out


def assert_summary(stdout: str, files: int, readable: int, classes: int = 2) -> None:
    assert f"{files} files, {readable} readable images, {classes} classes" in stdout, stdout


# --- 1, 2: empty and truncated files -------------------------------------------------


def test_zero_byte_image_is_skipped_as_empty(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 5, "b": 5})
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "b" / "zero.jpg").touch()

    result = invoke("scan", root)

    assert result.exit_code == 0, result.output
    assert_summary(result.stdout, files=12, readable=10)
    skipped = skipped_lines(result.stdout)
    assert set(skipped) == {"a/zero.png", "b/zero.jpg"}, result.stdout
    assert all("empty" in reason for reason in skipped.values()), skipped


def test_truncated_jpeg_is_skipped_as_undecodable(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 5, "b": 5}, fmt="JPEG")
    buf = io.BytesIO()
    noise_image(np.random.default_rng(7), 96).save(buf, format="JPEG", quality=95)
    whole = buf.getvalue()
    # header intact (Pillow identifies it as a 96x96 JPEG), scan data cut off
    (root / "b" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    with Image.open(root / "b" / "cut.jpg") as probe:
        assert probe.format == "JPEG" and probe.size == (96, 96)

    result = invoke("scan", root)

    assert result.exit_code == 0, result.output
    assert_summary(result.stdout, files=11, readable=10)
    skipped = skipped_lines(result.stdout)
    assert list(skipped) == ["b/cut.jpg"], result.stdout
    assert "cannot decode" in skipped["b/cut.jpg"], skipped


# --- 3: decompression bomb ------------------------------------------------------------


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A real 8x8 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed: Pillow trusts it)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("pillow_limit", ["default", "disabled"])
def test_decompression_bomb_is_refused_without_decoding(tmp_path, monkeypatch, pillow_limit):
    import resource

    root = make_folder(tmp_path / "data", {"a": 5, "b": 5})
    bomb = root / "a" / "bomb.png"
    _png_claiming(bomb, 30000, 30000)
    assert bomb.stat().st_size < 200
    with monkeypatch.context() as m:
        m.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(bomb) as probe:  # header only; the crafted size is what Pillow reads
            assert probe.format == "PNG" and probe.size == (30000, 30000)
    if pillow_limit == "disabled":
        # Some libraries switch Pillow's own guard off globally; bench's limit must still hold.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    decoded = []

    class DecodedBomb(BaseException):
        pass

    def guard(original):
        def load(self, *args, **kwargs):
            if Path(getattr(self, "filename", "") or "").name == "bomb.png":
                decoded.append(self.size)
                raise DecodedBomb(f"bench decoded the bomb ({self.size})")
            return original(self, *args, **kwargs)

        return load

    monkeypatch.setattr(ImageFile.ImageFile, "load", guard(ImageFile.ImageFile.load))
    monkeypatch.setattr(Image.Image, "load", guard(Image.Image.load))

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with deadline(120):
        result = invoke("scan", root)
    seconds = time.perf_counter() - t0
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    assert not decoded, "the bomb's pixel data was decoded"
    assert result.exit_code == 0, result.output
    assert_summary(result.stdout, files=11, readable=10)
    skipped = skipped_lines(result.stdout)
    assert list(skipped) == ["a/bomb.png"], result.stdout
    reason = skipped["a/bomb.png"].lower()
    assert "decompression bomb" in reason or "too large" in reason, reason
    assert seconds < 20, f"scanning 11 tiny files took {seconds:.1f}s"
    # 30000 x 30000 RGB is 2.7 GB: a decode attempt would show up in the peak RSS
    assert rss_growth_mb < 500, f"peak memory grew by {rss_growth_mb:.0f} MB"


# --- 4: symbolic link loops -----------------------------------------------------------


def test_symlink_loops_are_not_followed(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 5, "b": 5})
    nested = root / "a" / "nested"
    nested.mkdir()
    noise_image(np.random.default_rng(11)).save(nested / "deep.png")
    os.symlink("..", root / "a" / "up")  # a/up -> a: a cycle
    os.symlink("../..", nested / "top")  # a/nested/top -> the data folder: a cycle through both classes
    os.symlink("self.png", root / "b" / "self.png")  # a file link pointing to itself
    with pytest.raises(OSError) as loop:
        (root / "b" / "self.png").stat()
    assert loop.value.errno == errno.ELOOP

    with deadline(60):  # following the loop would never finish
        result = invoke("scan", root)

    assert result.exit_code == 0, result.output
    # every real image once (the nested one included), nothing reached through a loop
    assert_summary(result.stdout, files=12, readable=11)
    assert class_counts(result.stdout) == {"a": 6, "b": 5}
    skipped = skipped_lines(result.stdout)
    assert list(skipped) == ["b/self.png"], result.stdout
    assert "link" in skipped["b/self.png"], skipped
    assert "a/up" not in result.stdout and "nested/top" not in result.stdout

    from bench.data.scan import scan

    index = scan(root)
    assert sorted(r.path for r in index.records) == sorted(
        [f"a/img_{i:03d}.png" for i in range(5)] + ["a/nested/deep.png"] + [f"b/img_{i:03d}.png" for i in range(5)]
    )
    assert index.counts() == {"a": 6, "b": 5}


# --- 5: unicode and non-UTF-8 names ---------------------------------------------------


def _disk_names(root: Path) -> tuple[set[str], set[str]]:
    """(class folder names, image paths relative to ``root``) as Python sees them on disk."""
    broot = os.fsencode(root)
    classes = {os.fsdecode(name) for name in os.listdir(broot) if os.path.isdir(os.path.join(broot, name))}
    files = set()
    for dirpath, _, filenames in os.walk(broot):
        for name in filenames:
            files.add(os.fsdecode(os.path.relpath(os.path.join(dirpath, name), broot)))
    return classes, files


PLAIN = [b"img_%03d.png", b"img_%03d.png"]
#: Extra files: the 1st and 3rd go to the first class, the 2nd to the second.
UNICODE_FILES = ["naïve é.png", "スキャン.png", "scan 01 (copy).png"]
# DejaVu Sans has no CJK glyphs: the report's figures show boxes for 腫瘍 (cosmetic, not tested here)
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
@pytest.mark.parametrize(
    "classes, stems, odd_files",
    [
        pytest.param(["glioma_ü", "腫瘍"], PLAIN, UNICODE_FILES, id="unicode"),
        pytest.param(
            # a non-UTF-8 class name, and every image of it has a non-UTF-8 name, so some are in val and test
            ["glioma_ü", b"tumour_\xfe"], [b"img_%03d.png", b"img_%03d\xff.png"],
            [b"scan_\xff.png", "スキャン.png", b"\xe9t\xe9.png"], id="non-utf8-class-and-files",
        ),
    ],
)
def test_names_survive_a_run(tmp_path, classes, stems, odd_files):
    root = tmp_path / "data"
    broot = os.fsencode(root)
    rng = np.random.default_rng(21)
    for k, label in enumerate(classes):
        folder = os.path.join(broot, os.fsencode(label))
        os.makedirs(folder)
        names = [stems[k] % i for i in range(10)] + [os.fsencode(f) for f in odd_files[k::2]]
        for name in names:
            buf = io.BytesIO()
            noise_image(rng).save(buf, format="PNG")
            with open(os.path.join(folder, name), "wb") as fh:
                fh.write(buf.getvalue())
    classes_on_disk, files_on_disk = _disk_names(root)
    assert classes_on_disk == {os.fsdecode(c) for c in classes}
    assert {os.fsdecode(f) for f in odd_files} <= {p.split("/", 1)[1] for p in files_on_disk}
    assert len(files_on_disk) == 23

    with deadline(300):
        result = tiny_run(root, tmp_path)

    assert_ok(result)
    run = tmp_path / "results" / "u"
    dataset = json.loads((run / "dataset.json").read_text(encoding="utf-8"))
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    assert dataset["classes"] == split["classes"] == sorted(classes_on_disk)
    assert {f["path"] for f in dataset["files"]} == files_on_disk
    assert {f["path"] for f in split["files"]} == files_on_disk
    assert {f["label"] for f in split["files"]} == classes_on_disk
    # every listed path opens the very file on disk, with the recorded content
    for f in dataset["files"]:
        with open(os.path.join(broot, os.fsencode(f["path"])), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == f["sha256"]

    predictions = read_table(run / "mobilenet_v2" / "test_predictions.csv")
    assert {f"prob_{c}" for c in classes_on_disk} <= set(predictions.columns)
    assert set(predictions["label"]) == classes_on_disk
    assert set(predictions["prediction"]) <= classes_on_disk
    assert set(predictions["file"]) == {f["path"] for f in split["files"] if f["split"] == "test"}
    leaderboard = json.loads((run / "leaderboard.json").read_text(encoding="utf-8"))
    assert leaderboard[0]["backbone"] == "mobilenet_v2" and leaderboard[0]["status"] == "ok"
    assert leaderboard[0]["test_positive_class"] == sorted(classes_on_disk)[1]
    html = (tmp_path / "reports" / "u" / "report.html").read_bytes().decode("utf-8", "surrogateescape")
    for name in classes_on_disk:
        assert name in html


# --- 6: read-only data folder ---------------------------------------------------------


def _snapshot(root: Path) -> dict[bytes, tuple]:
    """Every entry under ``root`` (hidden ones and ``root`` itself included): type, mode,
    size, mtime, ctime and content hash. As root, chmod does not stop writes: this does."""
    broot = os.fsencode(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in [b"", *dirnames, *filenames] if dirpath == broot else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            out[os.path.relpath(path, broot)] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest,
            )
    return out


def test_read_only_data_folder_is_used_and_left_untouched(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 10, "b": 10}, seed=4)
    (root / ".notes").write_text("hidden file: ignored by the scan, must survive untouched")
    (root / "b" / ".cache").mkdir()
    (root / "b" / ".cache" / "x.bin").write_bytes(b"\0" * 10)
    (root / "a" / "Thumbs.db").write_bytes(b"thumbs")
    (root / "README.txt").write_text("top-level file")
    modes = {p: p.lstat().st_mode for p in [root, *root.rglob("*")]}
    for path in modes:
        os.chmod(path, stat.S_IMODE(modes[path]) & ~0o222)  # chmod -R a-w
    try:
        assert not os.stat(root).st_mode & 0o222
        before = _snapshot(root)
        assert len(before) == 28 and b".notes" in before and b"b/.cache/x.bin" in before

        with deadline(300):
            result = tiny_run(root, tmp_path)

        assert_ok(result)
        after = _snapshot(root)
    finally:
        for path, mode in modes.items():
            os.chmod(path, stat.S_IMODE(mode))
    assert after == before, {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k)}
    run = tmp_path / "results" / "u"
    assert json.loads((run / "leaderboard.json").read_text())[0]["status"] == "ok"
    assert (tmp_path / "reports" / "u" / "report.html").exists()


# --- 7: the output disk fills up ------------------------------------------------------


@pytest.mark.slow  # two runs, ~45 s
def test_disk_full_during_search_stops_cleanly_and_resumes(tmp_path, monkeypatch):
    import bench.atomic

    data = make_folder(tmp_path / "data", {"a": 10, "b": 10}, seed=5)
    real_write = bench.atomic.write_bytes_atomic
    sidecars: list[Path] = []

    def write_on_a_full_disk(path, data):
        if Path(path).name == "bench_trial.json":
            sidecars.append(Path(path))
            if len(sidecars) == 2:  # the 2nd trial finishes training, then cannot save its results
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(bench.atomic, "write_bytes_atomic", write_on_a_full_disk)
    with deadline(300):
        full = tiny_run(data, tmp_path, "full", max_trials=3)

    assert full.exit_code == 2, full.output
    assert full.exception is None or isinstance(full.exception, SystemExit), full.exception
    assert "Traceback" not in full.output
    errors = [line for line in full.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, full.stderr
    assert full.stderr.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("Error: no space left on the device"), errors[0]
    assert "--resume" in errors[0] and str(sidecars[1]) in errors[0], errors[0]
    # the search stopped at the full disk: no 3rd trial, no backbone result recorded as failed
    assert len(sidecars) == 2
    run = tmp_path / "results" / "full"
    first = sidecars[0]
    assert first.exists() and not sidecars[1].exists()
    assert not list(sidecars[1].parent.glob(".bench_trial.json.*"))  # no temp file left behind
    assert not (run / "mobilenet_v2" / "result.json").exists()
    assert not (run / "leaderboard.json").exists()
    first_mtime = first.stat().st_mtime_ns

    monkeypatch.undo()  # space was freed
    with deadline(300):
        resumed = invoke("run", "--resume", "--name", "full", "--out", tmp_path / "results", "--no-export")

    assert_ok(resumed)
    trials = pd.read_csv(run / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials
    assert first.stat().st_mtime_ns == first_mtime, "the completed 1st trial ran again"
    assert sidecars[1].exists()
    board = json.loads((run / "leaderboard.json").read_text())
    assert board[0]["backbone"] == "mobilenet_v2" and board[0]["status"] == "ok"
    assert board[0]["trials_done"] == 3 and board[0]["trials_failed"] == 0
