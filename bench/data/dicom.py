"""DICOM files as 8-bit pictures: recognised by content, windowed as the file (or the user) says.

A file is DICOM when it has the 128-byte preamble followed by ``DICM``, or, without
preamble, when it starts with a little-endian tag of group 0002 or 0008 and pydicom reads
a data set with pixel data from it. Extensions are ignored, as for every other format.

Grey pictures (``MONOCHROME1``, ``MONOCHROME2``) become 8 bits in four steps:

1. the modality LUT: Rescale Slope and Intercept, or the Modality LUT Sequence
   (``pydicom.pixels.apply_modality_lut``), so CT pixels are Hounsfield units;
2. the window rule (``--window``, :func:`bench.config.parse_window`):

   * ``file`` (the default): the file's own VOI LUT Sequence, else its first Window
     Center and Width (``pydicom.pixels.apply_voi_lut``: LINEAR, LINEAR_EXACT or SIGMOID
     as the file says); a file with neither is scaled from its own min..max;
   * ``minmax``: the image's own min..max, as bench scales 16-bit PNG and TIFF files;
   * ``C,W``: the window of center C and width W (the LINEAR function of DICOM PS3.3
     C.11.2.1.2), for every file;

3. the window's output range to 0..255 (its lowest output black, its highest white);
4. ``MONOCHROME1`` (white is zero) inverted, so bone is white in every picture.

Colour pictures (``RGB``, ``YBR_*``: pydicom converts them to RGB; ``PALETTE COLOR``
through its palette) are not windowed: more than 8 bits are scaled from the bits stored.

Multi-frame files (more than one frame) are refused with one line: bench reads one
picture per file. Compressed transfer syntaxes are decoded by pydicom's plugins: Pillow
(JPEG baseline, JPEG 2000) is always there; ``pip install 'bench[dicom]'`` adds pylibjpeg
for JPEG Lossless, 12-bit JPEG and JPEG-LS.

The window rule in force is :func:`current_window`: ``bench run`` sets the run's rule
(:func:`reading_window`) for as long as it reads images, an export records it in
``labels.json`` and ``bench predict``, ``evaluate`` and ``serve`` read DICOM files with it.

Nothing here writes or logs a header value: pydicom's own warnings and log messages
(which quote invalid values, names included) are silenced, and reasons given for a file
that cannot be read are cleared of the file's identifying values
(:func:`bench.data.identifiers.scrub`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings

import numpy as np

from bench.config import describe_window, parse_window  # noqa: F401 (the rule's words, re-exported)

#: The rule when none is given.
DEFAULT_WINDOW = "file"

FORMAT = "DICOM"
_PREAMBLE = 128
_MAGIC = b"DICM"
#: Bytes :func:`looks_like_dicom` needs.
HEAD_BYTES = _PREAMBLE + len(_MAGIC)
#: Groups a DICOM data set without preamble starts with (file meta, identifying), little endian.
_RAW_STARTS = (b"\x02\x00", b"\x08\x00")
_GREY = ("MONOCHROME1", "MONOCHROME2")

# pydicom quotes header values (names too) in warnings and log lines about invalid ones.
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
_pydicom_log = logging.getLogger("pydicom")
_pydicom_log.addHandler(logging.NullHandler())
_pydicom_log.propagate = False


class DicomUnreadable(Exception):
    """A DICOM file bench cannot turn into a picture; the message says why (no header values)."""


def _pydicom():
    import pydicom
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE  # no value checks (and no warnings quoting values)
    return pydicom


# ------------------------------------------------------------------ the window rule


_process_rule = [DEFAULT_WINDOW]
_rule_lock = threading.Lock()


def current_window() -> str:
    """The window rule DICOM files are read with now (see the module docstring)."""
    return _process_rule[0]


@contextlib.contextmanager
def reading_window(rule: str | None):
    """Read DICOM files with ``rule`` (None: leave the rule in force) in this process and its
    threads until the block ends (the scan hands the rule to its worker processes)."""
    if rule is None:
        yield current_window()
        return
    rule = parse_window(rule)
    with _rule_lock:
        before = _process_rule[0]
        _process_rule[0] = rule
    try:
        yield rule
    finally:
        with _rule_lock:
            _process_rule[0] = before


# ------------------------------------------------------------------ recognising


def looks_like_dicom(head: bytes) -> bool:
    """The first :data:`HEAD_BYTES` bytes of a file look like DICOM (preamble and ``DICM``,
    or a data set without preamble: confirmed only by reading it)."""
    return head[_PREAMBLE:HEAD_BYTES] == _MAGIC or head[:2] in _RAW_STARTS


def read_dataset(stream, pixels: bool = True):
    """The pydicom data set of the file object ``stream`` (at its start)."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    head = stream.read(HEAD_BYTES)
    stream.seek(0)
    with_preamble = head[_PREAMBLE:HEAD_BYTES] == _MAGIC
    try:
        ds = pydicom.dcmread(stream, force=not with_preamble, stop_before_pixels=not pixels)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OverflowError,
            NotImplementedError, OSError):
        raise DicomUnreadable("not an image (content not recognised)") from None
    if not with_preamble:
        if not (len(ds) and "Rows" in ds and "Columns" in ds):
            raise DicomUnreadable("not an image (content not recognised)")
        _set_transfer_syntax(ds)
    return ds


def _set_transfer_syntax(ds) -> None:
    """A data set read without file meta: its transfer syntax from how pydicom read it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little
                              else ExplicitVRBigEndian)


# ------------------------------------------------------------------ decoding


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def mode_of(ds) -> str:
    """How the file stores its picture, as bench lists it (``MONOCHROME2 12-bit``)."""
    photometric = str(ds.get("PhotometricInterpretation") or "unknown").upper()
    bits = ds.get("BitsStored") or ds.get("BitsAllocated")
    signed = " signed" if ds.get("PixelRepresentation") == 1 else ""
    return f"{photometric} {bits}-bit{signed}" if bits else photometric


def check_picture(ds, max_pixels: int) -> None:
    """Refuse a data set that is no single picture of at most ``max_pixels`` (one line each)."""
    from bench.data.identifiers import scrub

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = ds.get("SOPClassUID")
        name = getattr(kind, "name", None) or "no SOP class"
        raise DicomUnreadable(scrub(f"DICOM file without an image (no pixel data; {name})", ds))
    frames = _frames(ds)
    if frames > 1:
        raise DicomUnreadable(f"multi-frame DICOM ({frames} frames); bench reads one picture per file: "
                              "save each frame as its own file")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * columns > max_pixels:
        raise DicomUnreadable(f"image too large ({columns}x{rows} pixels; limit {max_pixels:,}), "
                              "possible decompression bomb")


def stored_pixels(ds) -> np.ndarray:
    """The stored values of a single-frame data set (decoded by pydicom's plugins)."""
    from bench.data.identifiers import scrub

    try:
        return ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError, ValueError, NotImplementedError, ... per plugin
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = "; ".join(lines[1:] if len(lines) > 1 else lines)[:240] or type(exc).__name__
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and getattr(syntax, "is_compressed", False) and not _has_pylibjpeg():
            raise DicomUnreadable(scrub(f"cannot decode compressed DICOM ({syntax.name}: {detail}); "
                                        "pip install 'bench[dicom]' adds the pylibjpeg decoders", ds)) from None
        raise DicomUnreadable(scrub(f"cannot decode DICOM pixel data ({detail})", ds)) from None


def _has_pylibjpeg() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("pylibjpeg") is not None
    except (ImportError, ValueError):
        return False


def _to_8bit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly from ``lo``..``hi`` to 0..255 (rounded, clipped); all zero
    when the range is empty. The same arithmetic as bench's 16-bit PNG path."""
    out = np.zeros(values.shape, dtype=np.uint8)
    if hi == lo or not (math.isfinite(lo) and math.isfinite(hi)):
        return out
    scaled = np.round((values.astype(np.float64) - lo) * (255.0 / (hi - lo)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _minmax(values: np.ndarray) -> np.ndarray:
    return _to_8bit(values, float(values.min()), float(values.max())) if values.size else values.astype(np.uint8)


def _window_view(ds, center: float, width: float):
    """A data set holding what ``apply_windowing`` needs from ``ds``, with the window given."""
    from pydicom.dataset import Dataset

    view = Dataset()
    for keyword in ("PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleSlope",
                    "RescaleIntercept", "ModalityLUTSequence"):
        if keyword in ds:
            setattr(view, keyword, ds.get(keyword))
    view.BitsStored = int(view.get("BitsStored") or 16)
    view.PixelRepresentation = int(view.get("PixelRepresentation") or 0)
    view.WindowCenter, view.WindowWidth, view.VOILUTFunction = center, width, "LINEAR"
    return view


def _windowing_range(ds) -> tuple[float, float]:
    """The output range of ``apply_windowing`` for ``ds``: what it gives far below and above the window."""
    from pydicom.pixels import apply_windowing

    with np.errstate(over="ignore", invalid="ignore"):
        ends = apply_windowing(np.array([-1e300, 1e300]), ds)
    return float(ends[0]), float(ends[1])


def _lut_range(ds) -> tuple[float, float]:
    """The lowest and highest entry of the first VOI LUT: its output range (some files
    declare 16 bits per entry and use 12, so the descriptor's depth is not used)."""
    from pydicom.pixels import apply_voi

    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    first, count = int(descriptor[1]), int(descriptor[0]) or 2**16
    entries = np.asarray(apply_voi(np.arange(first, first + count, dtype=np.int64), ds))
    return float(entries.min()), float(entries.max())


def grey_8bit(values: np.ndarray, ds, rule: str) -> np.ndarray:
    """Modality values (after the modality LUT) -> uint8 by ``rule``, ``MONOCHROME1`` inverted.

    ``file``: the VOI LUT Sequence's entries (their min..max) or the window's output range
    to 0..255; ``minmax`` and files without either: the image's own min..max."""
    from pydicom.pixels import apply_voi_lut, apply_windowing

    rule = parse_window(rule)
    lut = ds.get("VOILUTSequence")
    valid_lut = bool(lut) and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    try:
        if rule == "minmax" or (rule == "file" and not (valid_lut or has_window)):
            out = _minmax(values)
        elif rule == "file" and valid_lut:
            whole = values if values.dtype.kind in "iu" else np.round(values).astype(np.int64)
            low, high = _lut_range(ds)
            out = _to_8bit(np.asarray(apply_voi_lut(whole, ds)), low, high)
        elif rule == "file":
            low, high = _windowing_range(ds)
            out = _to_8bit(np.asarray(apply_voi_lut(values, ds, prefer_lut=False)), low, high)
        else:
            center, width = (float(v) for v in rule.split(","))
            view = _window_view(ds, center, width)
            low, high = _windowing_range(view)
            out = _to_8bit(np.asarray(apply_windowing(values, view)), low, high)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError) as exc:
        from bench.data.identifiers import scrub

        raise DicomUnreadable(scrub(f"cannot apply the DICOM window ({exc})", ds)) from None
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out
    return out


def colour_8bit(pixels: np.ndarray, ds) -> np.ndarray:
    """RGB (pydicom already turned ``YBR_*`` into RGB; ``PALETTE COLOR`` goes through its
    palette) as uint8, more than 8 bits scaled from the bits stored (or the palette's)."""
    from pydicom.pixels import apply_color_lut

    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        bits = 16 if pixels.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored") or 8 * pixels.dtype.itemsize)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise DicomUnreadable(f"DICOM {photometric} picture of shape {pixels.shape}: not one RGB picture")
    if bits <= 8 and pixels.dtype == np.uint8:
        return pixels
    return _to_8bit(pixels, 0.0, float(2**bits - 1))


def picture(ds, rule: str | None = None) -> np.ndarray:
    """The 8-bit picture of a single-frame data set: ``(rows, columns)`` for grey,
    ``(rows, columns, 3)`` for colour (see the module docstring); ``rule`` None: the rule in force."""
    from pydicom.pixels import apply_modality_lut

    rule = current_window() if rule is None else rule
    pixels = stored_pixels(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric in _GREY or (pixels.ndim == 2 and not photometric):
        if pixels.ndim != 2:
            raise DicomUnreadable(f"DICOM {photometric} picture of shape {pixels.shape}: not one grey picture")
        try:
            values = apply_modality_lut(pixels, ds)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            from bench.data.identifiers import scrub

            raise DicomUnreadable(scrub(f"cannot apply the DICOM modality LUT ({exc})", ds)) from None
        return grey_8bit(np.asarray(values), ds, rule)
    return colour_8bit(pixels, ds)


def read_rgb(stream, max_pixels: int, rule: str | None = None):
    """``(8-bit RGB Pillow image, mode)`` of the DICOM file ``stream`` (its start), or
    :class:`DicomUnreadable` with a one-line reason."""
    from PIL import Image

    ds = read_dataset(stream)
    check_picture(ds, max_pixels)
    out = picture(ds, rule)
    image = Image.fromarray(out, mode="L" if out.ndim == 2 else "RGB")
    return image.convert("RGB"), mode_of(ds)
