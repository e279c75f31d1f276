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
and widened to float32 for training, one batch at a time: entries are read memory-mapped
(:mod:`bench.search.features`) and written as they are computed (:class:`EntryWriter`),
so neither the images nor the features of a split are ever in memory at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from bench.forward import predict_batch
from bench.progress import step
from bench.data.loading import augmented_batches, image_batches, label_indices, load_images
from bench.faults import crash_point, durable_write
from bench.atomic import sha256_file, write_json_atomic
from bench.budget import caching_watch
from bench.locks import file_lock
from bench.search.features import FeatureRows
from bench.search.runtime import FrozenPass

if TYPE_CHECKING:
    from bench.config import SearchConfig
    from bench.search.source import BackboneSource

#: Part of every key: entries computed from images decoded another way (format 2: turned
#: upright by their EXIF orientation) are never reused.
CACHE_FORMAT = 2
log = logging.getLogger(__name__)


def images_fingerprint(sha256s: list[str]) -> str:
    return hashlib.sha256("\n".join(sha256s).encode()).hexdigest()


class EntryWriter:
    """One float16 ``.npy`` entry written as it is computed: the header, then rows batch by
    batch (sha256 taken on the way), into a hidden temporary file; :meth:`commit` checks
    the row count, then renames it into place and writes the sidecar (the entry exists
    only once complete). Plain file writes, not a memory map: written pages are not the
    process's memory."""

    def __init__(self, npy: Path, meta_path: Path, shape: tuple[int, ...], meta: dict) -> None:
        self.npy, self.meta_path, self.shape, self.meta = npy, meta_path, tuple(int(d) for d in shape), meta
        self.tmp = npy.with_name(f".{npy.name}.partial")
        npy.parent.mkdir(parents=True, exist_ok=True)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")), "fortran_order": False, "shape": self.shape})
        self._file = open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self._bytes = 0
        self.rows = 0
        self._put(header.getvalue())

    def _put(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._bytes += len(data)

    def write(self, rows: np.ndarray) -> None:
        if tuple(rows.shape[1:]) != self.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape[1:]} for an entry of shape {self.shape}")
        self._put(np.ascontiguousarray(rows, dtype="<f2").tobytes())
        self.rows += len(rows)

    def commit(self) -> None:
        if self.rows != self.shape[0]:
            self.abort()
            raise ValueError(f"cache entry {self.npy.name}: {self.rows} rows written, {self.shape[0]} expected")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        durable_write(self.npy)
        os.replace(self.tmp, self.npy)
        write_json_atomic(self.meta_path, {**self.meta, "shape": list(self.shape), "bytes": self._bytes,
                                           "sha256": self._hash.hexdigest()})

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


#: Checksums of entries this process read: path -> (size, modification time, inode, sha256).
_CHECKED: dict[str, tuple[int, int, int, str]] = {}
#: A checksum is reused only for a file last modified this long before it was computed: a
#: file system's clock can be coarse, so a write just after the check could keep the same
#: modification time ("racy" entries are hashed again, as git does with its index).
RACY_NS = 2 * 10**9


def _checksum(npy: Path) -> str:
    """An entry's sha256, computed once per process while the file is unchanged (its size,
    modification time and inode): the folds of a run load each entry again and again, and
    an Xception entry is a hundred megabytes to hash."""
    st = npy.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    seen = _CHECKED.get(str(npy))
    if seen is not None and seen[:3] == stamp:
        return seen[3]
    checked_at = time.time_ns()
    digest = sha256_file(npy)
    if checked_at - st.st_mtime_ns > RACY_NS:
        _CHECKED[str(npy)] = (*stamp, digest)
    return digest


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
            ok = npy.stat().st_size == meta["bytes"] and _checksum(npy) == meta["sha256"]
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
                durable_write(dst)
                os.replace(tmp, dst)
            log.info(f"reusing cached features from {other.parent.name}")
            return True
        return False

    def meta(self, key: str) -> dict:
        """The sidecar of a present entry (its key parts, shape, checksum and notes)."""
        return json.loads(self._paths(key)[1].read_text())

    def load(self, key: str) -> np.ndarray | None:
        """The entry, memory-mapped read-only (float16), or ``None`` when it is missing."""
        if self._valid(key, self.folder) or self._adopt_from_siblings(key):
            return self.mapped(key)
        return None

    def mapped(self, key: str) -> np.ndarray:
        """The entry as it is on disk, memory-mapped read-only, without checking its
        checksum: what :meth:`load` returns once it has checked it, and how this process
        opens an entry it has just written and committed (its writer hashed the very bytes
        it wrote; an entry of 50,000 images is gigabytes to read back)."""
        return np.load(self._paths(key)[0], mmap_mode="r", allow_pickle=False)

    def writer(self, key: str, shape: tuple[int, ...], meta: dict) -> EntryWriter:
        return EntryWriter(*self._paths(key), shape, meta)

    def save(self, key: str, array: np.ndarray, meta: dict) -> None:
        out = self.writer(key, array.shape, meta)
        out.write(array)
        out.commit()

    def get_or_compute(
        self, parts: dict[str, dict], compute: Callable[[], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """``parts`` maps a name to its key parts; ``compute()`` returns arrays by name
        (for small entries; the caching pass streams instead). Only when some entry is
        missing is ``compute`` called. Returns the entries memory-mapped."""
        keys = {name: self.key(**p) for name, p in parts.items()}
        found = {name: self.load(k) for name, k in keys.items()}
        if any(v is None for v in found.values()):
            arrays = compute()
            for name, key in keys.items():
                if found[name] is None:
                    self.save(key, arrays[name], parts[name])
                    found[name] = self.mapped(key)  # just written: not read back
        return found


def run_prefix(model, batches: Iterable[np.ndarray], progress: Callable[[int], None] | None = None,
               timings: dict[int, list[float]] | None = None,
               wide: Callable[[int, list[np.ndarray]], None] | None = None) -> Iterator[list[np.ndarray]]:
    """Run a (multi-output) model over uint8 image batches; yields its float16 outputs
    batch by batch (``progress(images done)`` after each). ``timings``: the seconds of
    each call after the first (which traces the pass) go into ``timings[batch size]``.
    ``wide(first image, outputs)``: each batch's outputs as computed, before rounding."""
    done = 0
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        outs = predict_batch(model, batch)  # one compiled graph, traced once per model
        if timings is not None and i:
            timings.setdefault(len(batch), []).append(time.perf_counter() - t0)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        if wide is not None:
            wide(done, [np.asarray(o) for o in outs])
        done += len(batch)
        if progress:
            progress(done)
        yield [np.asarray(o).astype(np.float16) for o in outs]  # bfloat16 outputs too


def cached_features(
    source: BackboneSource, depths: list[int], run_dir: Path, data_root: Path, split, cfg: SearchConfig,
    pool: list[dict] | None = None, with_test: bool = False, frozen_pass: FrozenPass = FrozenPass(),
    notes: dict | None = None, cache_by: float | None = None, keep: frozenset[str] = frozenset(),
) -> tuple:
    """Features of train (+ augmented views) and val for every depth, cached, computed by
    ``frozen_pass`` (its runtime and precision; the cache keys on both).

    ``pool`` (cross-validation): the rows of every image any fold trains or validates on,
    in one fixed order. Their features are then one cache entry per depth, computed once
    and indexed per fold, so one backbone pass serves every fold and repeat (and a later
    run on the same images, whatever its folds). Without ``pool``, train and val are an
    entry each. ``with_test`` (with ``pool``): also the features of the split's test rows
    (an outer fold, all in the pool), as a sixth element. ``notes``: a dict to fill with
    how the features were computed (``frozen_pass_runtime``; with OpenVINO its precision
    and parity, from the entries' sidecars, so also when they were cached earlier).
    ``cache_by`` (``--budget``): the monotonic time by which caching must end, else it
    stops and raises :class:`bench.budget.CachingWontFit` (:func:`bench.budget.caching_watch`).
    ``keep``: paths of images (the deployed model's validation images) whose depth-0
    features, when this call computes them in TensorFlow float32 (the deployed model's
    own pass), are kept unrounded in ``source.kept`` (at most :data:`KEEP_BYTES`), so the
    deployed model need not pass over those images again.

    Returns ``(x_train, x_val, y_train, y_val, shapes[, x_test])``; the ``x`` are dicts
    by depth. Runs under a lock on the run's cache folder: processes sharing the run folder
    (distributed workers) make the backbone weights and each cache entry once; the
    others wait, then read them.
    """
    with file_lock(Path(run_dir) / "cache" / ".lock"):
        return _cached_features(source, depths, run_dir, data_root, split, cfg, pool, with_test, frozen_pass, notes,
                                cache_by, keep)


def _cached_features(source, depths, run_dir, data_root, split, cfg, pool, with_test, frozen_pass, notes, cache_by,
                     keep):
    base = source.base()
    fingerprint = source.fingerprint()
    cache = FeatureCache(run_dir / "cache")
    rows = {s: split.rows(s) for s in ("train", "val")}
    if pool is not None:
        rows["pool"] = pool
        rows["test"] = split.rows("test") if with_test else []
    common = {"backbone": source.record.name, "weights": fingerprint, "size": source.image_size}
    compute, runtime = frozen_pass.precision, frozen_pass.runtime
    if compute != "float32":
        common["compute"] = compute  # features from float16/bfloat16 compute are not those of float32
    if runtime != "tensorflow":
        common["runtime"] = runtime  # nor are OpenVINO's those of TensorFlow
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

    keys = {name: cache.key(**p) for name, p in parts.items()}
    found = {name: cache.load(key) for name, key in keys.items()}
    todo = [part for part in jobs if any(found[f"{part}@{d}"] is None for d in depths)]
    sidecar = {}  # stored in each new entry's sidecar
    if todo:
        if runtime == "openvino":
            first = rows[jobs[todo[0]][0]]
            prefix = _openvino_prefix(source, depths, base, fingerprint, cache, data_root, first, compute)
            sidecar = {"openvino_precision": prefix.precision, "openvino_parity": prefix.parity}
        else:
            prefix = source.prefix(depths, base, compute)
        out_shapes = [tuple(int(n) for n in o.shape[1:]) for o in prefix.outputs]
    sizes = {part: len(rows[jobs[part][0]]) * (jobs[part][1] or 1) for part in todo}
    watch, offset = caching_watch(cache_by, sum(sizes.values())), 0  # --budget: stop what cannot end in time
    for i, part in enumerate(todo):
        s, n_views = jobs[part]
        n_images = sizes[part]
        writers = {d: cache.writer(keys[f"{part}@{d}"], (n_images, *shape), {**parts[f"{part}@{d}"], **sidecar})
                   for d, shape in zip(depths, out_shapes) if found[f"{part}@{d}"] is None}
        size = source.image_size
        batches = (augmented_batches(data_root, rows[s], size, n_views, cfg.seed) if n_views
                   else image_batches(data_root, rows[s], size, cfg.batch_size))
        t0 = time.perf_counter()
        try:
            with step(f"{source.name}: caching {part} features", n_images) as progress:
                def update(done: int, at: int = offset) -> None:
                    progress.update(done)
                    watch(at + done)

                deployed = compute == "float32" and runtime == "tensorflow"  # the deployed model's own pass
                timed = source.pass_seconds if deployed else None
                if deployed:
                    source.frozen_model = prefix
                wide = _keeper(source, rows[s], keep, depths, out_shapes) if deployed and not n_views else None
                for outputs in run_prefix(prefix, batches, progress=update, timings=timed, wide=wide):
                    for d, features in zip(depths, outputs):
                        if d in writers:
                            writers[d].write(features)
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        for j, (d, w) in enumerate(writers.items()):
            w.commit()
            found[f"{part}@{d}"] = cache.mapped(keys[f"{part}@{d}"])  # just written: not read back
            if i == 0 and j == 0:
                crash_point("caching")  # tests: killed with one complete entry on disk
        log.info(f"{source.name}: cached {part} features of {n_images} images in {time.perf_counter() - t0:.1f}s")
        offset += n_images

    if notes is not None:
        notes.update(_frozen_pass_notes(cache, keys.values(), runtime))
    x_train, x_val, x_test = {}, {}, {}
    if pool is not None:  # one entry for every image: this fold's rows, by position
        position = {r["path"]: i for i, r in enumerate(pool)}
        where = {s: np.array([position[r["path"]] for r in rows[s]], dtype=np.int64) for s in ("train", "val", "test")}
    for d in depths:
        if pool is not None:
            segment = {s: (found[f"pool@{d}"], where[s]) for s in ("train", "val", "test")}
        else:
            segment = {s: (found[f"{s}@{d}"], None) for s in ("train", "val")}
        train_segments = [segment["train"]]
        if f"aug@{d}" in found:
            train_segments.append((found[f"aug@{d}"], None))
        x_train[d] = FeatureRows(train_segments)
        x_val[d] = FeatureRows([segment["val"]])
        if with_test:
            x_test[d] = FeatureRows([segment["test"]])
    y_train = label_indices(rows["train"], split.classes)
    y_train = np.concatenate([y_train] * (1 + views))
    y_val = label_indices(rows["val"], split.classes)
    shapes = {d: tuple(x_val[d].shape[1:]) for d in depths}
    if with_test:
        return x_train, x_val, y_train, y_val, shapes, x_test
    return x_train, x_val, y_train, y_val, shapes


#: Bytes of float32 frozen features the caching pass of one backbone keeps in RAM for the
#: deployed model's validation images (:func:`_keeper`; an Xception at 299 px keeps up to 80
#: images); more than this, and those images go through the deployed model again.
KEEP_BYTES = 64 * 2**20


def _keeper(source, rows: list[dict], keep: frozenset[str], depths: list[int], shapes: list[tuple]):
    """``run_prefix``'s ``wide``: stores the float32 depth-0 outputs of the rows of ``rows``
    whose path is in ``keep`` in ``source.kept`` (:meth:`BackboneSource.kept_rows`); None
    when nothing is to be kept or they would take more than :data:`KEEP_BYTES`."""
    if 0 not in depths or not keep:
        return None
    at = depths.index(0)
    wanted = {i: r["path"] for i, r in enumerate(rows) if r["path"] in keep}
    if not wanted or len(wanted) * 4 * int(np.prod(shapes[at])) > KEEP_BYTES:
        return None

    def wide(first: int, outputs: list[np.ndarray]) -> None:
        block = outputs[at]
        for i in range(first, first + len(block)):
            if i in wanted:
                source.kept[wanted[i]] = np.array(block[i - first], dtype=np.float32)

    return wide


def _openvino_prefix(source, depths, base, fingerprint, cache, data_root, rows, compute):
    """The frozen pass as an OpenVINO runner, its IR kept in the cache folder and checked
    against TensorFlow on the first images of ``rows`` (:mod:`bench.search.openvino_runtime`)."""
    from bench.search.openvino_runtime import HINTS, PARITY_IMAGES, openvino_prefix

    cuts = [source.record.cut_layer(d) for d in depths]
    key = cache.key(kind="openvino-ir", backbone=source.record.name, weights=fingerprint, size=source.image_size,
                    cuts=cuts)
    images = load_images(data_root, rows[:PARITY_IMAGES], source.image_size)
    t0 = time.perf_counter()
    runner = openvino_prefix(source.prefix(depths, base), cache.folder, key, images, HINTS[compute], names=cuts)
    log.info(f"{source.name}: OpenVINO ready in {time.perf_counter() - t0:.1f}s (convert or reuse, compile, "
             f"check: features {runner.parity:.1e} from TensorFlow's), computing in {runner.precision}")
    return runner


def _frozen_pass_notes(cache, keys, runtime: str) -> dict:
    """How the entries ``keys`` were computed: the runtime, and with OpenVINO the precision
    it computed in and the worst parity figure of their sidecars."""
    notes = {"frozen_pass_runtime": runtime}
    if runtime == "openvino":
        metas = [cache.meta(k) for k in keys]
        notes["openvino_precision"] = ",".join(sorted({m.get("openvino_precision", "?") for m in metas}))
        notes["openvino_parity"] = max((m["openvino_parity"] for m in metas if "openvino_parity" in m), default=None)
    return notes
