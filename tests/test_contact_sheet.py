"""The contact sheet of linked images: drawn, deterministic, robust to broken files."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.contact_sheet import SheetRow, contact_sheet, embed_png

THUMB = 48


@pytest.fixture
def images(tmp_path) -> Path:
    return make_images(tmp_path / "data")


def make_images(root: Path) -> Path:
    """A gradient, its mirror, a greyscale square, a corrupt PNG and a few more."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    rgb = np.stack([np.tile(ramp, (40, 1)), np.tile(ramp[::-1], (40, 1)), np.full((40, 64), 90, np.uint8)], -1)
    Image.fromarray(rgb, "RGB").save(root / "a" / "grad.png")
    Image.fromarray(rgb[:, ::-1], "RGB").save(root / "b" / "grad_mirrored.png")
    grey = np.zeros((50, 50), np.uint8)
    grey[10:40, 10:40] = 220
    Image.fromarray(grey, "L").save(root / "a" / "square_grey.png")
    Image.fromarray(grey, "L").resize((30, 30)).save(root / "b" / "ñ_square_small.jpg", format="JPEG")
    (root / "b" / "corrupt.png").write_bytes(b"\x89PNG not really an image" + bytes(range(200)))
    for i in range(9):
        Image.new("RGB", (20 + i, 30), (20 * i, 100, 200 - 20 * i)).save(root / "a" / f"member_{i}.png")
    return root


def rows(n: int) -> list[SheetRow]:
    pairs = SheetRow("mirrored/rotated: 2 links", [("a/grad.png", "b/grad_mirrored.png"),
                                                   ("a/square_grey.png", "b/ñ_square_small.jpg")],
                     ["score 0.97", ""])
    group = SheetRow("largest group g0012: 3 files",
                     [("a/grad.png",), ("b/corrupt.png",), ("a/member_0.png",)], ["", "", ""])
    many = SheetRow("resized/re-encoded: 9 links",
                    [(f"a/member_{i}.png", "a/grad.png") for i in range(9)], [f"score 0.9{i}" for i in range(9)])
    return [pairs, group, many][:n]


def test_a_sheet_shows_the_linked_images(images, tmp_path):
    out = contact_sheet(images, rows(3), tmp_path / "sheets" / "links.png", thumb=THUMB, max_items=3)
    assert out == tmp_path / "sheets" / "links.png" and out.exists()
    assert not out.with_suffix(".tmp.png").exists()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 400
        pixels = np.asarray(img.convert("RGB"))
    # the first thumbnail sits under the first title, inside the first frame
    first = pixels[40:40 + THUMB // 2, 20:20 + THUMB // 2]
    assert not np.all(first == 255)
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 5  # a gradient, not a flat tile


def test_more_rows_make_a_taller_sheet_and_long_rows_are_cut(images, tmp_path):
    heights = []
    for n in (1, 2, 3):
        out = contact_sheet(images, rows(n), tmp_path / f"{n}.png", thumb=THUMB, max_items=3)
        with Image.open(out) as img:
            heights.append(img.height)
            widths = img.width
    assert heights[0] < heights[1] < heights[2]
    # 3 pairs of 48 px thumbnails fit in 400 px, so the 9-pair row was cut to max_items
    assert widths == 400
    wide = contact_sheet(images, rows(3), tmp_path / "wide.png", thumb=THUMB, max_items=9)
    with Image.open(wide) as img:
        assert img.width > 400


def test_the_title_says_how_many_were_left_out(images, tmp_path, monkeypatch):
    from bench.data import contact_sheet as module

    seen: list[str] = []
    real = module._fit
    monkeypatch.setattr(module, "_fit", lambda text, font, width: seen.append(text) or real(text, font, width))
    contact_sheet(images, rows(3), tmp_path / "s.png", thumb=THUMB, max_items=3)
    assert "resized/re-encoded: 9 links  +6 more" in seen
    assert "largest group g0012: 3 files" in seen  # a group row shows up to 2 * max_items
    assert "ñ_square_small.jpg" in seen


def test_a_corrupt_or_missing_file_becomes_an_unreadable_tile(images, tmp_path):
    row = SheetRow("exact copies: 2 links", [("b/corrupt.png", "a/missing.png")], ["broken"])
    out = contact_sheet(images, [row], tmp_path / "broken.png", thumb=THUMB)
    with Image.open(out) as img:
        pixels = np.asarray(img.convert("RGB"))
    left, right = pixels[46:54, 20:16 + THUMB], pixels[46:54, 24 + THUMB:20 + 2 * THUMB]
    assert np.all(left == 150) and np.all(right == 150)  # both grey tiles, above their label
    assert not np.all(pixels[42 + THUMB // 2 - 6:42 + THUMB // 2 + 6, 20:20 + THUMB] == 150)  # the label


def test_the_same_call_gives_the_same_bytes(images, tmp_path):
    a = contact_sheet(images, rows(3), tmp_path / "a.png", thumb=THUMB).read_bytes()
    b = contact_sheet(images, rows(3), tmp_path / "b.png", thumb=THUMB).read_bytes()
    assert a == b


def test_nothing_to_show_writes_nothing(images, tmp_path):
    assert contact_sheet(images, [], tmp_path / "none.png") is None
    empty = [SheetRow("exact copies: 0 links", [], []), SheetRow("group", [], [])]
    assert contact_sheet(images, empty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "none.tmp.png").exists()


def test_embed_png_is_a_data_uri(images, tmp_path):
    out = contact_sheet(images, rows(1), tmp_path / "e.png", thumb=THUMB)
    uri = embed_png(out)
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        embedded = img.size
    with Image.open(out) as img:
        assert embedded == img.size



def test_many_rows_and_names_the_font_cannot_draw(images, tmp_path):
    from bench.data.contact_sheet import _font, _printable

    assert _printable("ñ_scan.png", _font(11)) in ("ñ_scan.png", "n_scan.png")
    assert "?" in _printable("中.png", _font(11)) or _printable("中.png", _font(11)) == "中.png"
    many = [SheetRow(f"group g{i:04d}: 2 files", [("b/ñ_square_small.jpg",), ("a/grad.png",)], ["", ""])
            for i in range(40)]
    out = contact_sheet(images, many, tmp_path / "many.png", thumb=24)
    with Image.open(out) as img:
        assert img.height > 40 * 24


def test_the_old_bitmap_font_still_draws(images, tmp_path, monkeypatch):
    from PIL import ImageFont

    from bench.data import contact_sheet as module

    if not hasattr(ImageFont, "load_default_imagefont"):
        pytest.skip("Pillow without the bitmap default font loader")
    monkeypatch.setattr(module, "_font", lambda size: ImageFont.load_default_imagefont())
    out = contact_sheet(images, rows(3) + [SheetRow("中文 ñ", [("a/grad.png",)], ["Ωmega…"])],
                        tmp_path / "bitmap.png", thumb=THUMB)
    assert out is not None and out.exists()
