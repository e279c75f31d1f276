"""Inputs are regular files of bounded size (bench.data.regular_files): FIFOs, devices,
links out of the data folder and huge files are skipped with their reason, never read."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.cli import app
from bench.data.images import _to_rgb
from bench.data.regular_files import NotRegular, read_regular, regular_file
from bench.data.scan import scan
from conftest import deadline, make_folder


@pytest.fixture
def data(tmp_path):
    return make_folder(tmp_path / "data", {"no": 4, "yes": 4}, size=48)


def skipped(index) -> dict[str, str]:
    return {s.path: s.reason for s in index.skipped}


def test_fifo_device_and_outside_links_are_skipped_with_their_reason(data, tmp_path):
    os.mkfifo(data / "yes" / "p.jpg")
    (data / "yes" / "zero.png").symlink_to("/dev/zero")
    (data / "root").symlink_to("/")  # a class folder linked to /
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (40, 40), "white").save(outside)
    (data / "no" / "outside.png").symlink_to(outside)
    (data / "no" / "inside.png").symlink_to(data / "no" / "img_000.png")  # a link within DATA is read
    with deadline(60):
        index = scan(data, workers=1)
    reasons = skipped(index)
    assert "FIFO" in reasons["yes/p.jpg"]
    assert "outside the data folder" in reasons["yes/zero.png"]
    assert "outside the data folder" in reasons["root"] and not any(p.startswith("root/") for p in reasons)
    assert "outside the data folder" in reasons["no/outside.png"]
    assert "no/inside.png" in {r.path for r in index.records}
    assert {r.label for r in index.records} == {"no", "yes"}


def test_special_files_are_refused_by_kind_before_reading(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(NotRegular, match="FIFO"):
        read_regular(fifo)
    with pytest.raises(NotRegular, match="character device"):
        regular_file("/dev/zero")
    with pytest.raises(NotRegular, match="a folder"):
        regular_file(tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(NotRegular, match="file too large"):
        read_regular(big, max_bytes=1024)
    assert read_regular(big, max_bytes=4096) == b"x" * 2048


def test_groups_file_that_is_a_device_is_one_line(data):
    with deadline(60):
        result = CliRunner().invoke(app, ["scan", str(data), "--groups", "/dev/zero"])
    assert result.exit_code == 2 and "character device" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("mode, dtype", [("I;16", np.uint16), ("F", np.float32)])
def test_high_bit_depth_scaling_is_unchanged_and_lean(mode, dtype):
    """8-bit scaling of a 16-bit or float image: the same pixels as one float64 pass over
    the whole image, with a float64 copy of a block of rows only."""
    rng = np.random.default_rng(3)
    pixels = (rng.integers(100, 4000, (2000, 1500)) if mode == "I;16" else rng.random((2000, 1500)) * 50).astype(dtype)
    img = Image.fromarray(pixels)
    assert img.mode == mode
    whole = pixels.astype(np.float64)
    expected = np.round((whole - whole.min()) * (255.0 / (whole.max() - whole.min()))).astype(np.uint8)
    del whole
    tracemalloc.start()
    rgb = _to_rgb(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(np.asarray(rgb)[..., 0], expected)
    assert peak < 3 * pixels.nbytes + 8 * 1024 * 1024, peak  # one float64 copy alone is 4x a 16-bit image


def test_an_upload_in_memory_is_read_and_its_size_checked(monkeypatch):
    """`bench serve` hands the loader an uploaded file object, not a path."""
    import io

    import bench.data.images as images

    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "white").save(buffer, format="PNG")
    rgb, fmt, _ = images.open_rgb(io.BytesIO(buffer.getvalue()))
    assert rgb.size == (30, 20) and fmt == "PNG"
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(images.UnreadableImage, match="file too large"):
        images.open_rgb(io.BytesIO(buffer.getvalue()))
