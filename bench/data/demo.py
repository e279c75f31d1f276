"""A small synthetic two-class "brain MRI" dataset, so bench runs with no data download.

The images are axial head phantoms drawn with numpy (and scipy.fft): a dark background,
a bright scalp and skull ring, folded brain tissue with grey/white-matter contrast, dark
butterfly ventricles, a bias field and Rician-like noise. The ``tumor`` class adds one
lesion (irregular, solid or ring-enhancing, conspicuous: a demo should show learning) and
its mass effect.
Everything about the anatomy is drawn from the same distribution in both classes, so the
lesion is the only thing that separates them.

The data is deterministic: the same ``(n, size, seed)`` gives byte-identical PNG files
with the same numpy, scipy and Pillow versions. A hidden marker file, ``.bench-demo``,
records that the folder is synthetic; the dataset scanner skips hidden files, and reports
can call :func:`read_demo_marker` to say where the data came from.

Library use::

    from bench.data.demo import demo_data_dir
    folder = demo_data_dir()            # ~/.cache/bench/demo-v2-n200-s128-seed0
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.phantom import CONSPICUOUS, LesionStyle, render_slice
from bench.errors import BenchError

#: The marker written into demo folders and the cache folder's version: conspicuous lesions
#: (``phantom.CONSPICUOUS``) and 200 images per class by default, so the README's
#: first command learns. Cached folders with another marker are left alone and not reused.
GENERATOR = "bench.demo v2"
DEFAULT_N = 200
MARKER_NAME = ".bench-demo"
CLASS_NAMES = ("no_tumor", "tumor")

MIN_N = 5
MIN_SIZE = 32
MAX_SIZE = 1024


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def make_demo_data(dest: Path, n: int = DEFAULT_N, size: int = 128, seed: int = 0) -> Path:
    """Write ``n`` synthetic images per class to ``dest/no_tumor`` and ``dest/tumor``.

    Files are named ``tumor_0007.png`` and so on: 8-bit greyscale PNGs of
    ``size`` x ``size`` pixels. The folder appears all at once (it is generated in a
    temporary sibling and renamed), and carries the hidden marker ``.bench-demo``.
    Returns ``dest``.
    """
    _check_params(n, size, seed)
    classes = [PhantomClass(CLASS_NAMES[0], n, None), PhantomClass(CLASS_NAMES[1], n, CONSPICUOUS)]
    return make_phantom_data(dest, classes, size, seed, {"n": n, "generator": GENERATOR})


@dataclass(frozen=True)
class PhantomClass:
    """One class of a phantom dataset: its folder name, image count, and its tumours'
    :class:`~bench.data.phantom.LesionStyle` (None: no tumour)."""

    name: str
    n: int
    style: LesionStyle | None


def make_phantom_data(dest: Path, classes: list[PhantomClass], size: int, seed: int, marker: dict) -> Path:
    """Write each class's phantoms to ``dest/<class>/<class>_0007.png`` (image ``i`` of the
    class at position ``label`` drawn from the generator seeded ``[seed, label, i]``), all
    at once through a temporary sibling, with the marker ``.bench-demo`` (``marker`` plus
    ``synthetic``, ``size``, ``seed``). Returns ``dest``."""
    for c in classes:
        _check_params(c.n, size, seed)
    dest = Path(dest).expanduser()
    _check_dest(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for label, c in enumerate(classes):
            width = max(4, len(str(c.n - 1)))
            class_dir = tmp / c.name
            class_dir.mkdir()
            for index in range(c.n):
                rng = np.random.default_rng([seed, label, index])
                pixels = render_slice(rng, size, lesion=c.style is not None, conspicuous=c.style or False)
                _save_png(pixels, class_dir / f"{c.name}_{index:0{width}d}.png")
        info = {"synthetic": True, **marker, "size": size, "seed": seed}
        info["generator"] = info.pop("generator", GENERATOR)  # last, as every marker has it
        (tmp / MARKER_NAME).write_text(json.dumps(info) + "\n", encoding="utf-8")

        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        try:
            tmp.rename(dest)
        except OSError as exc:  # another process finished first, or dest reappeared
            raise BenchError(
                f"Demo data folder {dest} already exists and is not empty; "
                "choose another folder or delete it."
            ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def is_demo_data(folder: Path) -> bool:
    """True when ``folder`` was written by :func:`make_demo_data` (its marker is there)."""
    return (Path(folder) / MARKER_NAME).is_file()


def read_demo_marker(folder: Path) -> dict | None:
    """The marker's contents (``synthetic``, ``n``, ``size``, ``seed``, ``generator``).

    ``None`` when ``folder`` holds no demo marker or the marker cannot be read as JSON.
    """
    path = Path(folder) / MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def demo_data_dir(
    cache_dir: Path | None = None, n: int = DEFAULT_N, size: int = 128, seed: int = 0
) -> Path:
    """The demo dataset for these parameters, generated on first use and cached.

    The cache folder is ``cache_dir``, else ``$BENCH_CACHE``, else ``~/.cache/bench``;
    the dataset lives in a subfolder named after the parameters and generator version
    (``demo-v2-n200-s128-seed0``). A complete folder (marker present) is reused as is;
    one without a marker (an interrupted or foreign write) is deleted and regenerated.
    """
    _check_params(n, size, seed)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / demo_folder_name(n, size, seed)
    if is_demo_data(folder):
        return folder
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        raise BenchError(
            f"Demo data path {folder} is a file, not a folder; "
            "delete it or pass another cache_dir."
        )
    try:
        return make_demo_data(folder, n=n, size=size, seed=seed)
    except BenchError:
        if is_demo_data(folder):  # a concurrent call wrote the same data first
            return folder
        raise


def demo_folder_name(n: int = DEFAULT_N, size: int = 128, seed: int = 0) -> str:
    """Cache subfolder name for these parameters, e.g. ``demo-v2-n200-s128-seed0``."""
    version = GENERATOR.rsplit(" ", 1)[-1]
    return f"demo-{version}-n{n}-s{size}-seed{seed}"


def default_cache_dir() -> Path:
    """``$BENCH_CACHE`` when set and non-empty, else ``~/.cache/bench``."""
    env = os.environ.get("BENCH_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bench"


# ---------------------------------------------------------------------------------------
# Validation and file writing
# ---------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_params(n: int, size: int, seed: int) -> None:
    if not _is_int(n) or n < MIN_N:
        raise BenchError(
            f"Demo data needs at least {MIN_N} images per class. Received: n={n!r}; "
            f"pass an integer n >= {MIN_N}."
        )
    if not _is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        raise BenchError(
            f"Demo image size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels. "
            f"Received: size={size!r}; pass a size in that range."
        )
    if not _is_int(seed) or seed < 0:
        raise BenchError(
            f"Demo seed must be a non-negative integer. Received: seed={seed!r}; pass e.g. seed=0."
        )


def _check_dest(dest: Path) -> None:
    if dest.is_dir():
        if any(dest.iterdir()):
            raise BenchError(
                f"Demo data folder {dest} already exists and is not empty; "
                "choose another folder or delete it."
            )
    elif dest.exists():
        raise BenchError(
            f"Demo data path {dest} is a file, not a folder; choose another folder or delete it."
        )


def _save_png(pixels: np.ndarray, path: Path) -> None:
    # Fixed encoder options and no metadata chunks: same pixels, same bytes.
    Image.fromarray(pixels, mode="L").save(path, format="PNG", optimize=False, compress_level=6)


# ---------------------------------------------------------------------------------------
# The phantom
# ---------------------------------------------------------------------------------------
#
# Coordinates: x to the right, y downwards, both in [-1, 1] across the image. Inside the
# head, "brain coordinates" (bx, by) are the head's rotated frame scaled so the brain's
# outline is roughly the unit circle; negative by is anterior (top of the image).
