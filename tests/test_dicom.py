"""DICOM files read as bench reads every image: recognised by content, windowed as the file
(or --window) says, MONOCHROME1 inverted, 8 bits; checked against pydicom's own
apply_modality_lut / apply_voi_lut on its bundled example files and on files written here."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from bench.config import parse_window
from bench.data.dicom import current_window, reading_window
from bench.data.images import UnreadableImage, open_rgb
from bench.errors import BenchError
from dicom_files import phantom, write_dicom


def grey(path, window=None) -> np.ndarray:
    rgb, fmt, _ = open_rgb(path, window)
    arr = np.asarray(rgb)
    assert fmt == "DICOM" and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    return arr[..., 0]


def scaled(values, lo, hi) -> np.ndarray:
    return np.clip(np.round((np.asarray(values, np.float64) - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def window_range(ds) -> tuple[float, float]:
    """DICOM PS3.3 C.11.2.1.2: the output range of a window, from the bits stored and the rescale."""
    bits = ds.BitsStored
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    return lo * slope + intercept, hi * slope + intercept


def linear_window(x, center, width) -> np.ndarray:
    """DICOM's LINEAR window to 0..255, written out (not pydicom's code)."""
    c, w = center - 0.5, width - 1
    return np.round(np.clip((np.asarray(x, np.float64) - c) / w + 0.5, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------ pydicom's example files


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_the_files_own_window_as_pydicom_applies_it(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    assert ds.WindowCenter == 600 and ds.WindowWidth == 1600
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    np.testing.assert_array_equal(grey(path), scaled(values, *window_range(ds)))
    np.testing.assert_array_equal(grey(path, "600,1600"), grey(path))


def test_every_transfer_syntax_of_one_picture_reads_the_same():
    pictures = [grey(get_testdata_file(n)) for n in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                                      "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm")]
    for other in pictures[1:]:
        np.testing.assert_array_equal(other, pictures[0])


def test_ct_rescale_without_a_window_is_scaled_from_its_own_range():
    path = get_testdata_file("CT_small.dcm")  # Rescale -1024, no window; its preamble is a TIFF header
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert float(ds.RescaleIntercept) == -1024 and "WindowCenter" not in ds
    np.testing.assert_array_equal(grey(path), scaled(hu, hu.min(), hu.max()))
    np.testing.assert_array_equal(grey(path, "minmax"), grey(path))
    np.testing.assert_array_equal(grey(path, "40,400"), linear_window(hu, 40, 400))  # a brain window in HU


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm"])
def test_compressed_examples_decode_with_the_plugins(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(grey(path), scaled(values, values.min(), values.max()))


def test_colour_examples_are_rgb_and_not_windowed():
    rgb, fmt, mode = open_rgb(get_testdata_file("SC_rgb_rle_16bit.dcm"))
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_16bit.dcm"))
    assert (fmt, mode) == ("DICOM", "RGB 16-bit")
    np.testing.assert_array_equal(np.asarray(rgb), scaled(ds.pixel_array, 0, 65535))
    rgb, _, mode = open_rgb(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    assert mode.startswith("YBR_FULL_422") and tuple(np.asarray(rgb)[0, 0]) == (254, 0, 0)  # red, as RGB


@pytest.mark.parametrize("name, reason", [
    ("examples_ybr_color.dcm", "multi-frame DICOM (30 frames); bench reads one picture per file"),
    ("rtplan.dcm", "DICOM file without an image (no pixel data; RT Plan Storage)"),
    ("MR_truncated.dcm", "cannot decode DICOM pixel data"),
])
def test_files_that_are_no_single_picture_are_refused_in_one_line(name, reason):
    with pytest.raises(UnreadableImage) as caught:
        open_rgb(get_testdata_file(name))
    assert str(caught.value).startswith(reason) and "\n" not in str(caught.value)


# ------------------------------------------------------------ files written from the phantom


def test_twelve_bit_file_with_window_and_every_compression(tmp_path):
    stored = phantom(1).astype(np.uint16) * 16  # 0..4080 in 12 bits
    plain = write_dicom(tmp_path / "plain.dcm", stored, bits_stored=12, window=(1500, 2000))
    expected = linear_window(stored, 1500, 2000)
    np.testing.assert_array_equal(grey(plain), expected)
    for syntax in ("rle", "j2k", "implicit"):
        np.testing.assert_array_equal(grey(write_dicom(tmp_path / f"{syntax}.dcm", stored, bits_stored=12,
                                                       window=(1500, 2000), syntax=syntax)), expected)


def test_signed_ct_with_rescale_and_the_users_window(tmp_path):
    hu = phantom(2).astype(np.int16) * 8 - 1000  # -1000..1040 HU
    stored = ((hu + 1024) // 2).astype(np.int16)  # slope 2, intercept -1024
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=2, intercept=-1024, window=(40, 400))
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1
    np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), stored * 2.0 - 1024)
    np.testing.assert_array_equal(grey(path), linear_window(stored * 2.0 - 1024, 40, 400))
    np.testing.assert_array_equal(grey(path, "-600,1500"), linear_window(stored * 2.0 - 1024, -600, 1500))  # lung
    np.testing.assert_array_equal(grey(path, "minmax"), scaled(stored, stored.min(), stored.max()))


def test_monochrome1_is_inverted(tmp_path):
    stored = phantom(3).astype(np.uint16) * 4
    m2 = write_dicom(tmp_path / "m2.dcm", stored, bits_stored=10, window=(500, 900))
    m1 = write_dicom(tmp_path / "m1.dcm", stored, bits_stored=10, window=(500, 900), photometric="MONOCHROME1")
    np.testing.assert_array_equal(grey(m1), 255 - grey(m2))
    np.testing.assert_array_equal(grey(m1, "minmax"), 255 - grey(m2, "minmax"))


def test_voi_lut_sequence_wins_over_the_window(tmp_path):
    stored = phantom(4).astype(np.uint16)
    lut = (np.sqrt(np.arange(256) / 255.0) * 4000).astype(np.uint16)  # a gamma-like VOI LUT
    path = write_dicom(tmp_path / "lut.dcm", stored, bits_stored=8, voi_lut=lut, window=(10, 20))
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(grey(path), scaled(apply_voi_lut(ds.pixel_array, ds), lut.min(), lut.max()))
    np.testing.assert_array_equal(grey(path), scaled(lut[stored], lut.min(), lut.max()))


def test_sigmoid_window_as_pydicom_applies_it(tmp_path):
    stored = phantom(5).astype(np.uint16) * 16
    path = write_dicom(tmp_path / "s.dcm", stored, bits_stored=12, window=(2000, 1500), voi_function="SIGMOID")
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(grey(path), scaled(apply_voi_lut(ds.pixel_array, ds), 0, 4095))


def test_minmax_dicom_reads_like_the_same_values_in_a_16_bit_png(tmp_path):
    stored = phantom(6).astype(np.uint16) * 16 + 100
    write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)  # no window: min-max
    Image.fromarray(stored).save(tmp_path / "a.png")
    assert open_rgb(tmp_path / "a.png")[2].startswith("I;16")
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "a.dcm")[0]), np.asarray(open_rgb(tmp_path / "a.png")[0]))


def test_recognised_by_content_without_extension_or_preamble(tmp_path):
    stored = phantom(7).astype(np.uint16) * 16
    expected = grey(write_dicom(tmp_path / "ref.dcm", stored, bits_stored=12))
    np.testing.assert_array_equal(grey(write_dicom(tmp_path / "IM0001", stored, bits_stored=12)), expected)
    raw = write_dicom(tmp_path / "raw.dcm", stored, bits_stored=12, preamble=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(grey(raw), expected)
    np.testing.assert_array_equal(grey(io.BytesIO(raw.read_bytes())), expected)  # a serve upload
    shutil.copy(tmp_path / "ref.dcm", tmp_path / "looks.png")  # a wrong extension changes nothing
    np.testing.assert_array_equal(grey(tmp_path / "looks.png"), expected)
    (tmp_path / "junk.dcm").write_bytes(b"\x08\x00" + bytes(300))
    with pytest.raises(UnreadableImage, match="not an image"):
        open_rgb(tmp_path / "junk.dcm")


def test_multi_frame_files_are_refused(tmp_path):
    with pytest.raises(UnreadableImage, match=r"^multi-frame DICOM \(3 frames\)"):
        open_rgb(write_dicom(tmp_path / "cine.dcm", phantom(8), frames=3))


def test_window_rule_in_force_and_its_checks(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", phantom(9).astype(np.uint16) * 16, bits_stored=12, window=(1000, 800))
    assert current_window() == "file"
    with reading_window("minmax"):
        assert current_window() == "minmax"
        np.testing.assert_array_equal(grey(path), grey(path, "minmax"))
    assert current_window() == "file"
    assert parse_window(" 40 , 400 ") == "40,400" and parse_window("MinMax") == "minmax"
    for bad in ("soft", "40", "40,0", "40,nan", "a,b"):
        with pytest.raises(BenchError, match="--window"):
            parse_window(bad)
