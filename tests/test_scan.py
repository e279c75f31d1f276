"""Scanning: formats by content, colour modes, skipped and ignored files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.errors import BenchError
from bench.data.images import load_array
from bench.data.scan import scan
from conftest import make_folder, noise_image


def _write(path, img, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)


def test_formats_detected_by_content_and_modes_converted(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    _write(root / "a" / "png named as jpg.JPG", noise_image(rng), "PNG")
    _write(root / "a" / "b.Bmp", noise_image(rng), "BMP")
    _write(root / "a" / "c.tif", noise_image(rng, mode="CMYK"), "TIFF")
    _write(root / "a" / "d.WEBP", noise_image(rng), "WEBP")
    _write(root / "a" / "e.jpeg", noise_image(rng, mode="L"), "JPEG")
    _write(root / "b" / "f.png", noise_image(rng, mode="LA"), "PNG")
    _write(root / "b" / "g.png", noise_image(rng, mode="P"), "PNG")
    _write(root / "b" / "h.png", noise_image(rng, mode="RGBA"), "PNG")
    sixteen = Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 1.7).astype(np.uint16))
    _write(root / "b" / "i 16 bit.png", sixteen, "PNG")

    index = scan(root)

    by_name = {r.path: r for r in index.records}
    assert len(index.records) == 9 and not index.skipped
    assert by_name["a/png named as jpg.JPG"].format == "PNG"
    assert by_name["a/c.tif"].mode == "CMYK"
    assert by_name["b/i 16 bit.png"].mode.startswith("I")
    for rec in index.records:
        arr = load_array(root / rec.path, 32)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    # 16-bit data is stretched to the full 8-bit range, not crushed to black.
    arr16 = load_array(root / "b" / "i 16 bit.png", 48)
    assert arr16.max() == 255 and arr16.min() == 0


def test_bad_files_are_skipped_with_reason_hidden_ignored(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    noise_image(np.random.default_rng(5), 64).save(buf, format="JPEG")
    (root / "b" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "b" / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "b" / ".hidden.png").write_bytes(b"junk")
    (root / "README.txt").write_text("top-level file")

    index = scan(root)

    reasons = {s.path: s.reason for s in index.skipped}
    assert set(reasons) == {"a/notes.txt", "a/empty.jpg", "b/truncated.jpg", "README.txt"}
    assert "not an image" in reasons["a/notes.txt"]
    assert "empty" in reasons["a/empty.jpg"]
    assert "decode" in reasons["b/truncated.jpg"]
    assert len(index.records) == 6


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "no class sub-folders"),
        ({"only": 4}, "only one class"),
    ],
)
def test_folder_level_errors(tmp_path, layout, message):
    root = make_folder(tmp_path / "data", layout)
    root.mkdir(exist_ok=True)
    with pytest.raises(BenchError, match=message):
        scan(root)


def test_no_readable_images(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.jpg").write_text("nope")
    with pytest.raises(BenchError, match="no readable images"):
        scan(tmp_path)


@pytest.mark.slow
def test_real_data_scan(brain_index):
    from bench.data.duplicates import exact_duplicate_sets

    index = brain_index
    assert len(index.records) == 253 and not index.skipped
    assert index.counts() == {"no": 98, "yes": 155}
    assert {r.mode for r in index.records} == {"L", "RGB", "RGBA", "P"}
    exact = exact_duplicate_sets(index.records)
    assert len(exact) == 22 and sum(map(len, exact)) == 47


# --- the parallel scan ----------------------------------------------------------------------


def _mixed_folder(root):
    """Readable images in two classes, plus an empty file, a non-image, a truncated JPEG and a stray file."""
    make_folder(root, {"a": 9, "b": 8})
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image")
    buf = io.BytesIO()
    noise_image(np.random.default_rng(5), 64).save(buf, format="JPEG")
    (root / "b" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "README.txt").write_text("top-level file")
    return root


def _assert_same_index(x, y):
    from dataclasses import fields

    from bench.data.copies import CopyFeatures

    assert x.records == y.records and x.skipped == y.skipped and x.classes == y.classes
    assert len(x.features) == len(y.features) == len(x.records)
    for fx, fy in zip(x.features, y.features):
        for f in fields(CopyFeatures):
            a, b = getattr(fx, f.name), getattr(fy, f.name)
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


class _CountingPool:
    """Stands in for :func:`bench.parallel.worker_pool` (optionally with a start method) and
    counts the pools made; its workers start as bench's do."""

    made = 0

    def __init__(self, method=None):
        self.method = method

    def __call__(self, workers, initializer=None, initargs=()):
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        from bench import parallel

        type(self).made += 1
        context = multiprocessing.get_context(self.method) if self.method is not None else None
        return ProcessPoolExecutor(workers, mp_context=context, initializer=parallel._start_worker,
                                   initargs=(os.getpid(), initializer, initargs))


@pytest.mark.parametrize("method", [None, "spawn"])
def test_parallel_scan_gives_the_serial_index(tmp_path, monkeypatch, method):
    """Worker processes (the default start method, and spawn) give the same records, skipped files
    with their reasons, and copy features as reading the files here; progress climbs to the total."""
    import bench.data.scan as scan_module

    root = _mixed_folder(tmp_path / "data")
    serial = scan(root, workers=1)
    reasons = {s.path: s.reason for s in serial.skipped}
    assert "empty" in reasons["a/empty.png"] and "not an image" in reasons["b/notes.txt"]
    assert "decode" in reasons["b/truncated.jpg"] and reasons["README.txt"] == "not inside a class folder"

    monkeypatch.setattr(scan_module, "PARALLEL_FROM", 2)
    made = _CountingPool.made
    monkeypatch.setattr(scan_module, "worker_pool", _CountingPool(method))
    calls = []
    parallel = scan(root, workers=2, progress=lambda done, total: calls.append((done, total)))

    assert _CountingPool.made == made + 1
    _assert_same_index(serial, parallel)
    files = 9 + 8 + 3  # the top-level README is not a class file
    dones = [d for d, _ in calls]
    assert dones == sorted(set(dones)) and dones[-1] == files and {t for _, t in calls} == {files}


def test_small_folders_are_scanned_in_this_process(tmp_path, monkeypatch):
    import bench.data.scan as scan_module

    root = _mixed_folder(tmp_path / "data")
    monkeypatch.setattr(scan_module, "worker_pool", None)  # would fail if called
    calls = []
    index = scan(root, workers=8, progress=lambda done, total: calls.append(done))
    assert len(index.records) == 17 and calls == list(range(1, 21))


_SCAN_HERE = {}  # the test below sets: the scanning process's id and the real _scan_files


def _dies_in_a_worker_on_class_b(root, jobs, table, start, *rest):
    """bench.data.scan._scan_files, except that a worker process given a file of class b dies."""
    import os

    if os.getpid() != _SCAN_HERE["pid"] and any(label == "b" for label, _ in jobs):
        os._exit(1)
    return _SCAN_HERE["real"](root, jobs, table, start, *rest)


@pytest.mark.skipif(__import__("multiprocessing").get_start_method() != "fork",
                    reason="the workers see the patched function only when forked")
def test_a_worker_that_dies_loses_no_file(tmp_path, monkeypatch, caplog):
    """A worker process killed mid-scan (as by the out-of-memory killer): its files are scanned here."""
    import os

    import bench.data.scan as scan_module

    root = _mixed_folder(tmp_path / "data")
    serial = scan(root, workers=1)
    monkeypatch.setitem(_SCAN_HERE, "pid", os.getpid())
    monkeypatch.setitem(_SCAN_HERE, "real", scan_module._scan_files)
    monkeypatch.setattr(scan_module, "PARALLEL_FROM", 2)
    monkeypatch.setattr(scan_module, "_scan_files", _dies_in_a_worker_on_class_b)
    calls = []
    with caplog.at_level("WARNING", logger="bench"):
        index = scan(root, workers=2, progress=lambda done, total: calls.append(done))
    _assert_same_index(serial, index)
    assert "worker process stopped" in caplog.text
    assert calls == sorted(set(calls)) and calls[-1] == 20


# --- the copy measures the scan and grouping compute, and grouping in worker processes -------


def test_deciles_are_numpys_percentiles():
    from bench.data.copies import deciles

    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, hi, shape).astype(np.uint8)
                for hi, shape in [(256, (256, 256)), (2, (7, 5)), (1, (3, 3)), (256, (1, 1)), (40, (97, 13))]]
    pictures.append(np.array([[0, 255]], dtype=np.uint8))
    pictures += [rng.integers(0, int(rng.integers(1, 257)), (int(rng.integers(1, 90)), int(rng.integers(1, 90))))
                 .astype(np.uint8) for _ in range(300)]
    for picture in pictures:
        expected = np.percentile(picture, np.arange(10, 100, 10)).round().astype(np.uint8)
        np.testing.assert_array_equal(deciles(picture), expected)


def test_cross_matches_are_opencvs_cross_checked_matches():
    import cv2
    from conftest import scan_like

    from bench.data.copies import copy_features
    from bench.data.copy_details import cross_matches
    from bench.data.reprocess import FAMILIES

    def opencv(a, b):
        found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a, b)
        return [(m.queryIdx, m.trainIdx) for m in found]

    rng = np.random.default_rng(0)
    pictures = [scan_like(seed, 128) for seed in range(6)]
    pictures += [FAMILIES[name](pictures[0], rng) for name in ("blur", "jpeg", "crop", "mirror/rotate")]
    descriptors = [copy_features(p).descriptors for p in pictures]
    # low-entropy random descriptors: many equal distances, where the first nearest must win
    descriptors += [(rng.integers(0, 2, (int(rng.integers(1, 40)), 32)) * rng.integers(0, 4, 32)).astype(np.uint8)
                    for _ in range(40)]
    descriptors += [np.zeros((3, 32), np.uint8), np.full((2, 32), 255, np.uint8)]  # distance 256
    checked = 0
    for a in descriptors:
        for b in descriptors:
            query, train = cross_matches(a, b)
            assert list(zip(query.tolist(), train.tolist())) == opencv(a, b)
            checked += len(query)
    assert checked > 1000


def _copies_folder(root):
    """Scan-like pictures in two classes and one re-processed copy of each of several of them."""
    from conftest import scan_like

    from bench.data.reprocess import FAMILIES

    rng = np.random.default_rng(4)
    for label, seeds in (("a", range(6)), ("b", range(6, 12))):
        (root / label).mkdir(parents=True)
        for s in seeds:
            scan_like(s, 128).save(root / label / f"s{s:02d}.png")
    for k, family in enumerate(("mirror/rotate", "blur", "crop", "jpeg", "pad", "gamma")):
        source = k if k % 2 else k + 6
        FAMILIES[family](scan_like(source, 128), rng).save(root / ("a" if source < 6 else "b") / f"copy{k}.png")
    return root


@pytest.mark.parametrize("method, reader, processes",
                         [(None, "index", 2), ("spawn", "index", 2), ("spawn", "lambda", 1)])
def test_links_from_worker_processes_are_the_links_found_here(tmp_path, monkeypatch, method, reader, processes):
    """Candidates, layout scores and keypoint checks in worker processes (the default start
    method, and spawn, which pickles the index's mirrored-features reader) confirm the same
    links; a reader that cannot be pickled keeps the checks in this process under spawn."""
    from bench import parallel
    from bench.data import copies, copy_candidates, copy_details

    index = scan(_copies_folder(tmp_path / "data"), workers=1)
    mirrored = index.mirrored_features if reader == "index" else lambda i: index.mirrored_features(i)
    here = copies.find_links(index.records, index.features, mirrored=mirrored, workers=1)
    assert sum(link.kind != "exact" for link in here) >= 5  # the copies are found, some of them mirrored
    assert any(link.kind == "mirrored/rotated" for link in here)

    made = _CountingPool.made
    monkeypatch.setattr(copy_details, "PARALLEL_CHECKS", 1)
    monkeypatch.setattr(copy_candidates, "PARALLEL_CANDIDATES", 2)
    monkeypatch.setattr(parallel, "ProcessPoolExecutor", _CountingPool(method))
    times = {}
    there = copies.find_links(index.records, index.features, mirrored=mirrored, workers=2, times=times)
    # a pool each for the candidate search, the layout scores and the keypoint checks
    assert _CountingPool.made == made + 3 and there == here and times["keypoint_processes"] == processes
    assert times["keypoint_checks"] > times["examined_pairs"] > 0 and times["mirrored_read"] > 0


def test_worker_processes_forked_after_opencv_ran_here_do_not_hang(tmp_path):
    """OpenCV's thread pool has run in this process (as in a test session, or a run that
    scanned before): worker processes forked from it must not wait on threads that were
    not forked (cv2.setNumThreads in such a process hangs). In a child process, with a
    time limit, so that a hang fails the test instead of stopping the suite."""
    import subprocess
    import sys
    from pathlib import Path

    root = _mixed_folder(tmp_path / "data")
    script = f"""
import numpy as np, cv2
import bench.data.copies as copies, bench.data.scan as scan_module
import bench.data.copy_candidates as candidates, bench.data.copy_details as details
cv2.GaussianBlur(np.zeros((3000, 3000), np.uint8), (0, 0), 3)  # OpenCV's threads start here
scan_module.PARALLEL_FROM, details.PARALLEL_CHECKS, candidates.PARALLEL_CANDIDATES = 2, 1, 2
index = scan_module.scan({str(root)!r}, workers=2)
times = {{}}
copies.find_links(index.records, index.features, mirrored=index.mirrored_features, workers=2, times=times)
print(len(index.records), times["keypoint_processes"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["17", "2"]
