"""EXIF orientation: a picture stored sideways with an Orientation tag (as phones save
photos) is read upright everywhere bench decodes images, as ``PIL.ImageOps.exif_transpose``
shows it."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from bench.cli import app
from conftest import scan_like

#: Orientation value -> the transpose that stores an upright picture so that the tag turns it back.
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def upright() -> Image.Image:
    """A scan-like picture, wider than tall (so a turn changes its shape)."""
    return scan_like(30, 96).crop((0, 0, 96, 72)).convert("RGB")


def stored_with_tag(picture: Image.Image, orientation: int, path, fmt: str = "PNG") -> None:
    turn = STORED[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    (picture.transpose(turn) if turn is not None else picture).save(path, format=fmt, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_decode_path_turns_the_picture_upright_as_pillow_does(tmp_path, orientation):
    from bench.data.images import load_array, open_rgb
    from bench.deploy.predict import read_image

    picture = upright()
    path = tmp_path / f"o{orientation}.png"
    stored_with_tag(picture, orientation, path)
    with Image.open(path) as img:
        pillow = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    expected = np.asarray(picture)
    assert np.array_equal(pillow, expected)
    rgb, _, _ = open_rgb(path)
    assert rgb.size == (96, 72) and np.array_equal(np.asarray(rgb), expected)  # scan, copies, contact sheet
    assert np.array_equal(read_image(path), expected)  # bench predict
    assert np.array_equal(read_image(io.BytesIO(path.read_bytes())), expected)  # bench serve uploads
    picture.save(tmp_path / "upright.png")
    assert np.array_equal(load_array(path, 48), load_array(tmp_path / "upright.png", 48))  # training, evaluation


def test_scan_links_a_photo_turned_by_its_tag_as_the_same_picture_not_a_rotated_copy(tmp_path):
    data = tmp_path / "data"
    for label, offset in (("no", 0), ("yes", 10)):
        (data / label).mkdir(parents=True)
        for i in range(5):
            scan_like(offset + i, 96).save(data / label / f"s{i}.png")
    picture = upright()
    picture.save(data / "no" / "film.png")
    stored_with_tag(picture, 6, data / "no" / "film_phone.png")  # the same pixels once upright
    result = CliRunner().invoke(app, ["scan", str(data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in csv.DictReader((tmp_path / "out" / "groups.csv").open())}
    film, phone = rows["no/film.png"], rows["no/film_phone.png"]
    assert film["group"] == phone["group"] and film["group_size"] == "2"
    assert film["kind"] == phone["kind"] == "resized/re-encoded"  # same picture, other file: not mirrored/rotated
    assert f"{film['group']} (2 files, resized/re-encoded)" in result.stdout
