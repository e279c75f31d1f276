"""Image-content statistics: what an image looks like, without any anatomy.

Each image is read once (:func:`bench.data.images.open_rgb`: upright, 8-bit), turned to
grey and resized to :data:`SIZE` x :data:`SIZE` (no padding: the shape of the file is
among the shortcut check's file attributes already). From those pixels, in numpy:

* the intensity histogram: :data:`BINS` equal bins of 0..255, as fractions of the pixels;
* intensity level and spread: mean, standard deviation, 5th, 50th and 95th percentiles;
* texture: the gradient magnitude (central differences) mean, standard deviation and
  90th percentile, and the standard deviation inside 4 x 4 blocks (local variance):
  its mean and spread over the blocks;
* background: the outer frame (:data:`FRAME` pixels wide): its mean, standard deviation
  and share of near-black pixels (below 16), the centre's mean (the middle half) and
  centre minus frame.

A model on these numbers is the floor a backbone must beat (the ``content-logistic``
floor baseline) and one of the inputs of the shortcut check
(:mod:`bench.evaluate.shortcuts`): when they predict the label, a network can too without
looking at anatomy (DeGrave et al., Nat Mach Intell 2021).

:class:`ContentTable` keeps the statistics by image (path and sha256), so a run computes
them once (``content.csv`` in the run folder) and every design, fold and resume reads them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.images import UnreadableImage, open_rgb
from bench.errors import BenchError

#: Side of the grey image the statistics are computed on.
SIZE = 64
#: Bins of the intensity histogram.
BINS = 16
#: Width of the outer frame, in pixels of the SIZE x SIZE image.
FRAME = 6
#: Side of the blocks whose standard deviation measures local variance.
BLOCK = 4
#: Grey level below which a pixel counts as black background.
DARK = 16

NAMES: tuple[str, ...] = (
    *(f"intensity histogram bin {i}" for i in range(BINS)),
    "intensity mean", "intensity sd", "intensity p5", "intensity median", "intensity p95",
    "gradient mean", "gradient sd", "gradient p90",
    "local variance mean", "local variance sd",
    "border mean", "border sd", "border dark share", "centre mean", "centre minus border",
)


def statistics(grey: np.ndarray) -> np.ndarray:
    """The :data:`NAMES` statistics of one ``(SIZE, SIZE)`` grey image (0..255), float64."""
    g = np.asarray(grey, dtype=np.float64)
    hist = np.histogram(g, bins=BINS, range=(0.0, 256.0))[0] / g.size
    p5, p50, p95 = np.percentile(g, [5, 50, 95])
    gy, gx = np.gradient(g)
    grad = np.hypot(gx, gy)
    n = (g.shape[0] // BLOCK) * BLOCK
    blocks = g[:n, :n].reshape(n // BLOCK, BLOCK, n // BLOCK, BLOCK).std(axis=(1, 3))
    frame = np.ones(g.shape, bool)
    frame[FRAME:-FRAME, FRAME:-FRAME] = False
    border = g[frame]
    q = g.shape[0] // 4
    centre = g[q:-q, q:-q]
    return np.array([
        *hist, g.mean(), g.std(), p5, p50, p95,
        grad.mean(), grad.std(), np.percentile(grad, 90),
        blocks.mean(), blocks.std(),
        border.mean(), border.std(), float(np.mean(border < DARK)), centre.mean(), centre.mean() - border.mean(),
    ], dtype=np.float64)


def image_statistics(path: Path) -> np.ndarray:
    """The statistics of the image file ``path``; raises BenchError when it cannot be read."""
    from PIL import Image

    try:
        rgb, _, _ = open_rgb(path)
    except (UnreadableImage, OSError) as exc:
        raise BenchError(f"cannot read {path} ({exc}); the data folder changed since the scan: restore the file "
                         "or start a new run") from None
    grey = rgb.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return statistics(np.asarray(grey, dtype=np.uint8))


@dataclass
class ContentTable:
    """Content statistics by image: ``(path, sha256) -> row`` of :data:`NAMES`."""

    rows: dict[tuple[str, str], np.ndarray]

    def matrix(self, files: list[dict]) -> np.ndarray:
        """``(len(files), len(NAMES))`` for split rows (``path``, ``sha256``), in order."""
        if not files:
            return np.zeros((0, len(NAMES)))
        return np.stack([self.rows[(f["path"], f["sha256"])] for f in files])

    def covers(self, files: list[dict]) -> bool:
        return all((f["path"], f["sha256"]) in self.rows for f in files)

    @classmethod
    def compute(cls, root: Path, files: list[dict], known: "ContentTable | None" = None) -> "ContentTable":
        """The statistics of every file of ``files`` (dicts or records with ``path`` and
        ``sha256``, paths relative to ``root``), decoded in threads; rows already in
        ``known`` are not computed again."""
        keys = [(_get(f, "path"), _get(f, "sha256")) for f in files]
        rows = {k: v for k, v in (known.rows if known else {}).items() if k in set(keys)}
        todo = sorted({k for k in keys if k not in rows})
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
                for key, row in zip(todo, pool.map(lambda k: image_statistics(Path(root) / k[0]), todo)):
                    rows[key] = row
        return cls(rows)

    def write(self, path: Path) -> None:
        """``content.csv``: path, sha256 and one column per statistic."""
        import pandas as pd

        from bench.tables import write_csv

        keys = sorted(self.rows)
        table = pd.DataFrame([self.rows[k] for k in keys], columns=list(NAMES)) if keys else \
            pd.DataFrame(columns=list(NAMES))
        # object columns: a string dtype would refuse names that are not valid UTF-8
        table.insert(0, "sha256", pd.Series([k[1] for k in keys], dtype=object))
        table.insert(0, "path", pd.Series([k[0] for k in keys], dtype=object))
        write_csv(path, table)

    @classmethod
    def read(cls, path: Path) -> "ContentTable | None":
        """The table written by :meth:`write`; None when it is absent or not of this layout."""
        import pandas as pd

        if not Path(path).is_file():
            return None
        try:
            table = pd.read_csv(path, dtype={"path": str, "sha256": str}, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError):
            return None
        if list(table.columns) != ["path", "sha256", *NAMES]:
            return None
        values = table[list(NAMES)].to_numpy(np.float64)
        return cls({(p, s): values[i] for i, (p, s) in enumerate(zip(table["path"], table["sha256"]))})


def _get(item, key: str):
    return item[key] if isinstance(item, dict) else getattr(item, key)
