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
