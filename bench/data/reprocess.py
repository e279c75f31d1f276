"""Re-processing transforms that turn an image into a "copy" bench must still recognise.

Public datasets are often merged from sources that re-saved, mirrored, contrast-changed
or augmented the same slices. :data:`FAMILIES` names one function per family of such
changes; each takes a Pillow image and a numpy random generator and returns the copy.
The copy benchmark (``benchmarks/copies.py``) and the tests apply them to held-apart
images and check that :mod:`bench.data.copies` links every copy to its original.

The parameter ranges are the ones bench promises to recognise: flips and 90° rotations,
gamma 0.5-2, contrast or brightness ±30 %, histogram equalisation, sharpening, Gaussian
blur (σ ≤ 2), JPEG quality ≥ 50, resizing 0.5-2×, cropping or padding up to 10 % of a
side, shifts up to 5 % of a side, greyscale↔RGB.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

_ORIENTATIONS = (
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


def _extreme_or_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Half the time one of the range's ends (the hardest case), else uniform inside it."""
    return float(rng.choice([lo, hi])) if rng.random() < 0.5 else float(rng.uniform(lo, hi))


def mirror_or_rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(_ORIENTATIONS[int(rng.integers(len(_ORIENTATIONS)))])


def gamma(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    g = _extreme_or_uniform(rng, 0.5, 2.0)
    lut = [round(255 * (v / 255) ** g) for v in range(256)]
    return img.point(lut * len(img.getbands()))


def contrast_brightness(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    enhancer = ImageEnhance.Contrast if rng.random() < 0.5 else ImageEnhance.Brightness
    return enhancer(img).enhance(_extreme_or_uniform(rng, 0.7, 1.3))


def equalise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.equalize(img)


def sharpen(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.5:
        return img.filter(ImageFilter.SHARPEN)
    return img.filter(ImageFilter.UnsharpMask(radius=float(rng.uniform(1, 3)), percent=int(rng.integers(100, 251))))


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(_extreme_or_uniform(rng, 0.5, 2.0)))


def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(_extreme_or_uniform(rng, 50, 95)))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert(img.mode) if img.mode in ("L", "RGB") else out.copy()


def resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    s = _extreme_or_uniform(rng, 0.5, 2.0)
    w, h = img.size
    return img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC)


def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Remove up to 10 % of the width and height, split at random between opposite sides."""
    w, h = img.size
    fx, fy = _extreme_or_uniform(rng, 0.02, 0.10), _extreme_or_uniform(rng, 0.0, 0.10)
    if rng.random() < 0.5:
        fx, fy = fy, fx
    left, top = round(w * fx * rng.random()), round(h * fy * rng.random())
    return img.crop((left, top, left + w - round(w * fx), top + h - round(h * fy)))


def pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Add a black border (zero padding), of up to 10 % of each side's length."""
    w, h = img.size
    left, right = (round(w * _extreme_or_uniform(rng, 0.0, 0.10)) for _ in range(2))
    top, bottom = (round(h * _extreme_or_uniform(rng, 0.0, 0.10)) for _ in range(2))
    return ImageOps.expand(img, border=(left, top, right, bottom), fill=0)


def shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Move the picture by up to 5 % of each side, filling with black (the frame stays)."""
    w, h = img.size
    dx, dy = (round(n * rng.uniform(-0.05, 0.05)) for n in (w, h))
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy), fillcolor=0)


def grey_rgb(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.convert("L") if img.mode != "L" else img.convert("RGB")


#: Family name -> transform, in the order the benchmark reports them.
FAMILIES: dict[str, Transform] = {
    "mirror/rotate": mirror_or_rotate,
    "gamma": gamma,
    "contrast/brightness": contrast_brightness,
    "equalise": equalise,
    "sharpen": sharpen,
    "blur": blur,
    "jpeg": jpeg,
    "resize": resize,
    "crop": crop,
    "pad": pad,
    "shift": shift,
    "grey/rgb": grey_rgb,
}


def drift_chain(start: Image.Image, end: Image.Image, length: int, step: float,
                rng: np.random.Generator) -> list[Image.Image]:
    """``length`` images that drift from ``start`` toward ``end``: image ``k`` blends ``end``
    in at ``k * step`` and (for ``k >= 1``) is re-processed by one family of :data:`FAMILIES`
    drawn with ``rng``. Neighbours are copies of each other, the chain's ends no longer are,
    like neighbouring slices of one volume saved by different tools: the copy links that
    average linkage refuses to chain into one group. ``start`` and ``end`` share a size
    and mode."""
    a = np.asarray(start, dtype=np.float32)
    b = np.asarray(end, dtype=np.float32)
    names = list(FAMILIES)
    out = []
    for k in range(length):
        img = Image.fromarray(np.clip((1 - k * step) * a + k * step * b, 0, 255).astype(np.uint8))
        out.append(FAMILIES[names[int(rng.integers(len(names)))]](img, rng) if k else img)
    return out
