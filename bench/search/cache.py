"""FeatureCache: outputs of the frozen part of a backbone, computed once per image.

A cache entry is one float16 ``.npy`` array (one row per image, in split order) and a
``.json`` sidecar holding its key parts, shape and sha256. The key covers everything
the numbers depend on: backbone, a fingerprint of the actual backbone weights, image
size, cut layer, the image list (sha256 of every file, in order) and the augmentation
views. Entries are written atomically and verified on read; a damaged entry is
reported, deleted and recomputed.

Entries live in ``<run>/cache/``. When a new run needs an entry that another run in the
same output folder already computed (same key), it is hard-linked (or copied) over,
so later runs on the same data reuse the work.

float16 storage: features are stored as float16 (relative error <= 2**-11, about 5e-4)
and widened to float32 for training.
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from bench.progress import step
from bench.data.loading import augmented_views, label_indices, load_images
from bench.faults import crash_point
from bench.runfolder import (
    file_lock,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
)
from bench.search.runtime import mixed

if TYPE_CHECKING:
    from bench.config import SearchConfig
    from bench.search.source import BackboneSource

CACHE_FORMAT = 1
log = logging.getLogger(__name__)


def weights_fingerprint(model) -> str:
    """sha256 over every weight tensor of ``model`` (position, shape, dtype and values).

    Not the weights' names: Keras numbers unnamed layers (``conv2d_4``) by how many models
    the process built before, so the same backbone would get another fingerprint (and
    miss its cache) on a second build in one process."""
    h = hashlib.sha256()
    for position, w in enumerate(model.weights):
        value = np.ascontiguousarray(w.numpy())
        h.update(f"{position}:{value.shape}:{value.dtype}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def images_fingerprint(sha256s: list[str]) -> str:
    return hashlib.sha256("\n".join(sha256s).encode()).hexdigest()


class FeatureCache:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(**parts) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _paths(self, key: str, folder: Path | None = None) -> tuple[Path, Path]:
        folder = folder or self.folder
        return folder / f"{key}.npy", folder / f"{key}.json"

    def _valid(self, key: str, folder: Path) -> bool:
        npy, meta_path = self._paths(key, folder)
        if not npy.exists() or not meta_path.exists():
            return False
        try:
            meta = json.loads(meta_path.read_text())
            ok = npy.stat().st_size == meta["bytes"] and sha256_file(npy) == meta["sha256"]
        except (OSError, ValueError, KeyError):
            ok = False
        if not ok:
            log.warning(f"cache entry {npy} is damaged (size or checksum mismatch); rebuilding it")
            npy.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
        return ok

    def _adopt_from_siblings(self, key: str) -> bool:
        """Link a valid entry with this key from another run folder next to ours."""
        runs_root = self.folder.parent.parent
        if not runs_root.is_dir():
            return False
        for other in sorted(runs_root.glob(f"*/{self.folder.name}")):
            if other == self.folder or not self._valid(key, other):
                continue
            self.folder.mkdir(parents=True, exist_ok=True)
            for src, dst in zip(self._paths(key, other), self._paths(key)):
                tmp = dst.with_name(f".{dst.name}.link")
                tmp.unlink(missing_ok=True)
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            log.info(f"reusing cached features from {other.parent.name}")
            return True
        return False

    def load(self, key: str) -> np.ndarray | None:
        if self._valid(key, self.folder) or self._adopt_from_siblings(key):
            return np.load(self._paths(key)[0], allow_pickle=False)
        return None

    def save(self, key: str, array: np.ndarray, meta: dict) -> None:
        npy, meta_path = self._paths(key)
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array, dtype=np.float16), allow_pickle=False)
        data = buf.getvalue()
        write_bytes_atomic(npy, data)
        write_json_atomic(
            meta_path,
            {**meta, "shape": list(array.shape), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        )

    def get_or_compute(
        self, parts: dict[str, dict], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """``parts`` maps a name to its key parts; ``compute()`` returns arrays by name.

        Only when some entry is missing is ``compute`` called (once, for all of them:
        one forward pass yields every cut point).
        """
        keys = {name: self.key(**p) for name, p in parts.items()}
        found = {name: self.load(k) for name, k in keys.items()}
        if all(v is not None for v in found.values()):
            log.debug(f"feature cache: all {len(keys)} entries found in {self.folder} ({', '.join(keys)})")
            return {name: v.astype(np.float32) for name, v in found.items()}
        log.debug(f"feature cache: computing {', '.join(n for n, v in found.items() if v is None)} in {self.folder}")
        arrays = compute()
        out = {}
        for i, (name, key) in enumerate(keys.items()):
            if found[name] is not None:  # valid entries are kept as they are
                out[name] = found[name].astype(np.float32)
                continue
            self.save(key, arrays[name], parts[name])
            if i == 0:
                crash_point("caching")
            out[name] = arrays[name].astype(np.float16).astype(np.float32)
        return out


def run_prefix(model, images: np.ndarray, batch_size: int, progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Run a (multi-output) model over uint8 ``images`` in batches; float16 outputs."""
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        # predict_on_batch runs one compiled graph: ~40 % faster than an eager call here
        outs = model.predict_on_batch(images[start : start + batch_size])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        chunks.append([np.asarray(o, dtype=np.float16) for o in outs])
        if progress:
            progress(min(start + batch_size, len(images)))
    n_out = len(model.outputs)
    if not chunks:
        return [np.zeros((0, *model.outputs[i].shape[1:]), np.float16) for i in range(n_out)]
    return [np.concatenate([c[i] for c in chunks]) for i in range(n_out)]


def cached_features(
    source: BackboneSource, depths: list[int], run_dir: Path, data_root: Path, split, cfg: SearchConfig,
    pool: list[dict] | None = None, with_test: bool = False,
) -> tuple:
    """Features of train (+ augmented views) and val for every depth, cached.

    ``pool`` (cross-validation): the rows of every image any fold trains or validates on,
    in one fixed order. Their features are then one cache entry per depth, computed once
    and indexed per fold, so one backbone pass serves every fold and repeat (and a later
    run on the same images, whatever its folds). Without ``pool``, train and val are an
    entry each. ``with_test`` (with ``pool``): also the features of the split's test rows
    (an outer fold, all in the pool), as a sixth element.

    Returns ``(x_train, x_val, y_train, y_val, shapes[, x_test])``; the ``x`` are dicts
    by depth. Runs under a lock on the run's cache folder: processes sharing the run folder
    (distributed workers) make the backbone weights and each cache entry once; the
    others wait, then read them.
    """
    with file_lock(Path(run_dir) / "cache" / ".lock"):
        return _cached_features(source, depths, run_dir, data_root, split, cfg, pool, with_test)


def _cached_features(source, depths, run_dir, data_root, split, cfg, pool=None, with_test=False):
    base = source.base()
    fingerprint = weights_fingerprint(base)
    cache = FeatureCache(run_dir / "cache")
    rows = {s: split.rows(s) for s in ("train", "val")}
    if pool is not None:
        rows["pool"] = pool
        rows["test"] = split.rows("test") if with_test else []
    common = {"backbone": source.record.name, "weights": fingerprint, "size": source.image_size}
    if mixed():
        common["compute"] = "float16"  # features from float16 compute are not those of float32
    parts: dict[str, dict] = {}  # "<part>@<depth>" -> cache key parts
    jobs: dict[str, tuple[str, int]] = {}  # part -> (split, augmented views)
    views = cfg.aug_views if cfg.augment else 0
    plain = {"pool": ("pool", 0)} if pool is not None else {"train": ("train", 0), "val": ("val", 0)}
    for part, (s, n_views) in {**plain, "aug": ("train", views)}.items():
        if part == "aug" and not n_views:
            continue
        jobs[part] = (s, n_views)
        images = images_fingerprint([r["sha256"] for r in rows[s]])
        for d in depths:
            parts[f"{part}@{d}"] = {**common, "cut": source.record.cut_layer(d), "images": images,
                                    "views": n_views, "aug_seed": cfg.seed if n_views else None}

    def compute() -> dict[str, np.ndarray]:
        prefix = source.prefix(depths, base)
        out = {}
        for part, (s, n_views) in jobs.items():
            images = load_images(data_root, rows[s], source.image_size)
            if n_views:
                images = augmented_views(images, n_views, cfg.seed)
            t0 = time.perf_counter()
            with step(f"{source.record.name}: caching {part} features", len(images)) as progress:
                arrays = run_prefix(prefix, images, cfg.batch_size, progress=progress.update)
            log.info(f"{source.record.name}: cached {part} features of {len(images)} images in {time.perf_counter() - t0:.1f}s")
            out.update({f"{part}@{d}": a for d, a in zip(depths, arrays)})
        return out

    flat = cache.get_or_compute(parts, compute)
    if pool is not None:  # one entry for every image: this fold's rows, by position
        position = {r["path"]: i for i, r in enumerate(pool)}
        for s in ("train", "val", "test"):
            index = np.array([position[r["path"]] for r in rows[s]], dtype=np.int64)
            flat.update({f"{s}@{d}": flat[f"pool@{d}"][index] for d in depths})
    x_train, x_val = {}, {}
    for d in depths:
        x_train[d] = flat[f"train@{d}"]
        if f"aug@{d}" in flat:
            x_train[d] = np.concatenate([x_train[d], flat[f"aug@{d}"]])
        x_val[d] = flat[f"val@{d}"]
    y_train = label_indices(rows["train"], split.classes)
    y_train = np.concatenate([y_train] * (1 + views))
    y_val = label_indices(rows["val"], split.classes)
    shapes = {d: tuple(x_val[d].shape[1:]) for d in depths}
    if with_test:
        return x_train, x_val, y_train, y_val, shapes, {d: flat[f"test@{d}"] for d in depths}
    return x_train, x_val, y_train, y_val, shapes
