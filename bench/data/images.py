"""Opening image files by content, upright by their EXIF orientation, and turning every
colour mode into 8-bit RGB.

Scanning, loading for training and prediction all go through :func:`open_rgb`, so an
image means the same pixels everywhere in bench. DICOM files (recognised by content,
before Pillow looks: some carry a TIFF header in their preamble) are read by
:mod:`bench.data.dicom` with the window rule in force.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data import dicom
from bench.data.regular_files import MAX_IMAGE_BYTES, NotRegular, open_regular

#: Formats bench accepts, as Pillow names them after reading the file's content
#: (extensions are ignored). MPO is the multi-picture JPEG some cameras write. DICOM is
#: read by pydicom (:mod:`bench.data.dicom`).
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP"})

#: Images above this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 100_000_000


#: Rows of a high-bit-depth image scaled to 8 bits at a time (bounds the float64 copy).
_ROWS = 256


class UnreadableImage(Exception):
    """The file is not an accepted, decodable image; the message says why."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    * integer/float modes with more than 8 bits (``I;16*``, ``I``, ``F``) are scaled
      linearly from the image's own min..max to 0..255 (12-bit scanners leave the top
      bits unused, so a fixed /257 would give a near-black picture);
    * modes with transparency (``LA``, ``RGBA``, ``PA``, ``P`` with transparency) are
      composited over black, the background of a scan;
    * everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) goes
      through Pillow's own conversion.
    """
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img)  # its own dtype: float64 only a block of rows at a time
        lo, hi = float(arr.min()), float(arr.max())
        out = np.zeros(arr.shape, dtype=np.uint8)
        if hi > lo:
            scale = 255.0 / (hi - lo)
            for start in range(0, arr.shape[0], _ROWS):
                block = arr[start:start + _ROWS].astype(np.float64)
                out[start:start + _ROWS] = np.round((block - lo) * scale).astype(np.uint8)
        return Image.fromarray(out, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


#: EXIF Orientation (tag 0x0112) -> the transpose that shows the picture upright, as
#: ``PIL.ImageOps.exif_transpose`` applies it (1, and any other value, is upright already).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_ORIENTATION = 0x0112


def _orientation(img: Image.Image) -> Image.Transpose | None:
    """The transpose that turns ``img`` upright by its EXIF Orientation tag (phones store a
    photo as the sensor saw it and say how to turn it); None when it is upright or has no tag.
    A damaged EXIF block leaves the picture as stored."""
    try:
        value = img.getexif().get(_ORIENTATION)
    except (OSError, SyntaxError, ValueError, TypeError):
        return None
    return _UPRIGHT.get(value) if isinstance(value, int) else None


def _uploaded(stream):
    """An image already in memory (a ``bench serve`` upload, a file object), at most
    :data:`MAX_IMAGE_BYTES` long; kept open by the caller."""
    size = getattr(stream, "size", None)
    if size is None and hasattr(stream, "getbuffer"):
        size = stream.getbuffer().nbytes
    if size is not None and size > MAX_IMAGE_BYTES:
        raise NotRegular(f"file too large ({size / 2**20:,.0f} MB; limit {MAX_IMAGE_BYTES / 2**20:,.0f} MB)")
    return contextlib.nullcontext(stream)


def open_rgb(path: Path, window: str | None = None) -> tuple[Image.Image, str, str]:
    """Open ``path`` by content and return ``(rgb_image, format, original_mode)``; the
    image is turned upright by its EXIF Orientation tag, as ``PIL.ImageOps.exif_transpose``
    does (a phone photo of a film is read the way it is shown). A DICOM file is windowed
    by ``window`` (None: :func:`bench.data.dicom.current_window`); its format is ``DICOM``
    and its mode the photometric interpretation and bits (``MONOCHROME2 12-bit``).

    Raises :class:`UnreadableImage` with a short reason for anything that is not an
    accepted image or cannot be fully decoded.
    """
    try:
        source = _uploaded(path) if hasattr(path, "read") else open_regular(path)
    except NotRegular as exc:
        raise UnreadableImage(str(exc)) from None
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from None
    try:
        with source as stream, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if _is_dicom(stream):
                try:
                    rgb, mode = dicom.read_rgb(stream, MAX_PIXELS, window)
                except dicom.DicomUnreadable as exc:
                    raise UnreadableImage(str(exc)) from None
                return rgb, dicom.FORMAT, mode
            with Image.open(stream) as img:
                fmt = img.format or "unknown"
                if fmt not in ACCEPTED_FORMATS:
                    raise UnreadableImage(f"unsupported image format {fmt}")
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise UnreadableImage(
                        f"image too large ({width}x{height} pixels; limit {MAX_PIXELS:,}), "
                        "possible decompression bomb"
                    )
                mode = img.mode
                img.load()
                turn = _orientation(img)
                rgb = _to_rgb(img)
                rgb = rgb.transpose(turn) if turn is not None else rgb
                rgb.load()
                return rgb, fmt, mode
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image (content not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"decompression bomb refused: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow signals truncated/corrupt data with OSError/SyntaxError/ValueError.
        raise UnreadableImage(f"cannot decode image: {exc}") from None


def _is_dicom(stream) -> bool:
    """The stream (at its start, seekable) looks like DICOM by its first bytes; left at its start."""
    try:
        head = stream.read(dicom.HEAD_BYTES)
        stream.seek(0)
    except (AttributeError, OSError, ValueError):
        return False
    return isinstance(head, bytes) and dicom.looks_like_dicom(head)


def load_array(path: Path, size: int) -> np.ndarray:
    """Load ``path`` as a ``(size, size, 3)`` uint8 RGB array.

    The image is padded to a square with black (keeping the anatomy's aspect ratio,
    unlike a plain resize) and resized with bilinear filtering.
    """
    rgb, _, _ = open_rgb(path)
    return square_resize(rgb, size)


def square_resize(rgb: Image.Image, size: int) -> np.ndarray:
    """Pad ``rgb`` to a centred black square and resize it to ``size`` x ``size``."""
    width, height = rgb.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("RGB", (side, side), (0, 0, 0))
        canvas.paste(rgb, ((side - width) // 2, (side - height) // 2))
        rgb = canvas
    if side != size:
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)
