"""Which images of an external test folder are copies of a run's own images.

An external test set is only external when none of its images is a copy of an image the
model was trained, tuned or tested on. :func:`find_overlap` links an external folder to
a run's images with the copy detector of ``bench scan`` (:mod:`bench.data.copies`:
exact, resized/re-encoded, re-processed, mirrored/rotated copies) and lists each external
image that is a copy, with the run image it copies and that image's split.

The run's side is a :class:`Reference`: its images' hashes and copy features, made from
the run's data folder (:func:`reference_from_run`) or read from a ``.npz`` file
(:func:`save_reference` / :func:`load_reference`, e.g. carried by an export, so that the
check still works once the training data is gone).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.config import DEFAULT_COPY_THRESHOLD
from bench.data.copies import GRID, CopyFeatures, Link, find_links
from bench.data.copy_table import READ_ROWS, CopyTable, as_table
from bench.errors import BenchError
from bench.faults import durable_write
from bench.runfolder import RunFiles

#: The file name an export folder is expected to carry its run's reference under.
REFERENCE_FILE = "overlap_reference.npz"  # in an export folder, beside model.keras
#: Version of the ``.npz`` layout written by :func:`save_reference`.
REFERENCE_FORMAT = 1
#: Columns kept per reference image (in the ``.npz`` file too, in this order).
RECORD_FIELDS = ("path", "label", "split", "sha256", "phash", "dhash")
#: Length of an ORB descriptor (bytes).
DESCRIPTOR_BYTES = 32


@dataclass(frozen=True)
class ReferenceRecord:
    """One image of the run, as the overlap check needs it. ``path`` is relative to the
    run's data folder; ``split`` is ``train``, ``val`` or ``test``."""

    path: str
    label: str
    split: str
    sha256: str
    phash: str
    dhash: str


@dataclass
class Reference:
    """A run's images for the overlap check.

    ``features[i]`` belongs to ``records[i]``; an empty ``features`` list means only exact
    (sha256) copies can be found. ``source``: where it came from (a run folder or a file).
    ``missing``: files of the run that could not be read (gone or unreadable), ``changed``:
    files whose content differs from the run's (their sha256 in split.json); both are left out.
    """

    records: list[ReferenceRecord]
    features: list[CopyFeatures] = field(default_factory=list, repr=False)
    source: str = ""
    missing: int = 0
    changed: int = 0

    def __post_init__(self) -> None:
        if self.features and len(self.features) != len(self.records):
            raise ValueError(f"{len(self.features)} copy features for {len(self.records)} reference records")


def reference_from_index(index, splits: dict[str, str], source: str = "") -> Reference:
    """A :class:`Reference` from a scanned folder (:class:`~bench.data.scan.DatasetIndex`).

    ``splits``: ``{path: split}`` for the files that belong to the run (paths as in the
    index, relative to its root); files of the index not in ``splits`` are left out. The
    index's features are kept when it has them (``scan(..., copies=True)``).
    """
    keep = [i for i, rec in enumerate(index.records) if rec.path in splits]
    records = [ReferenceRecord(rec.path, rec.label, splits[rec.path], rec.sha256, rec.phash, rec.dhash)
               for rec in (index.records[i] for i in keep)]
    features = index.features or []
    if isinstance(features, CopyTable):  # a scan's: selects its rows without reading them
        features = features.select(keep)
    elif features:
        features = [features[i] for i in keep]
    return Reference(records, features, source or str(index.root))


def _run_json(path: Path):
    from bench.atomic import read_json

    if not path.is_file():
        raise BenchError(f"{path.parent} is not a run folder (no {path.name}); pass a folder written by `bench run`, "
                         "e.g. results/<run>, or an export folder that carries its reference")
    fix = "the run folder is damaged, re-run or restore the file"
    try:
        return read_json(path, fix)
    except OSError as exc:
        raise BenchError(f"cannot read {path} ({exc}); {fix}") from None


def reference_from_run(run_dir: Path, progress: Callable[[int, int], None] | None = None,
                       index=None) -> Reference:
    """The :class:`Reference` of a run folder: every file split.json lists, read again from
    the run's data folder (run.json's ``config.data``) with its hashes and copy features
    computed exactly as ``bench scan`` does.

    Files that are gone or unreadable are left out and counted in ``missing``; files whose
    sha256 differs from split.json's are left out and counted in ``changed``.
    ``progress(done, total)`` is called as files are read. Raises :class:`BenchError` when
    the run folder is not one or its data folder no longer exists.

    ``index``: the run's own scan, when this process made it (``bench run`` exporting its
    winner) with copy features for every file: the files are not read again; the same
    reference, in split.json's order.
    """
    from bench.data.scan import DatasetIndex, ImageRecord, read_files

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"run folder {run_dir} does not exist; pass a folder written by `bench run`, "
                         "e.g. results/<run>")
    layout = RunFiles(run_dir)
    run = _run_json(layout.run_json)
    files = (_run_json(layout.split_json) or {}).get("files") or []
    if index is not None and index.records and len(index.features) == len(index.records):
        root, table = Path(index.root), index.features
        position = {r.path: i for i, r in enumerate(index.records)}
        rows = [position.get(row["path"], -1) for row in files]
        items = [index.records[i] if i >= 0 else None for i in rows]
    else:
        data = ((run or {}).get("config") or {}).get("data")
        if not data:
            raise BenchError(f"{layout.run_json} names no data folder; the run folder is damaged, "
                             "pass the run's export folder (it carries the run's reference) instead")
        root = Path(data)
        if not root.is_dir():
            raise BenchError(f"the data folder of run {run_dir.name} ({root}) no longer exists, so its images cannot "
                             "be compared; restore it, or pass the run's export folder, which carries the run's "
                             "reference")
        # read as bench scan reads files (in worker processes, copy features to a file on disk)
        jobs = [(row.get("label", ""), root / row["path"]) for row in files]
        items, table = read_files(root, jobs, copies=True, progress=progress)
        rows = list(range(len(items)))
    records, kept, splits = [], [], {}
    missing = changed = 0
    for row, item, at in zip(files, items, rows):
        if not isinstance(item, ImageRecord):
            missing += 1
        elif row.get("sha256") and row["sha256"] != item.sha256:
            changed += 1
        else:
            records.append(replace(item, path=row["path"]))
            kept.append(at)
            splits[row["path"]] = row.get("split", "")
    index = DatasetIndex(root, sorted({r.label for r in records}), records, features=table.select(kept))
    ref = reference_from_index(index, splits, source=str(run_dir))
    ref.missing, ref.changed = missing, changed
    return ref


# ------------------------------------------------------------------------- the .npz file


def save_reference(ref: Reference, path: Path) -> None:
    """Write ``ref`` as one compressed ``.npz`` file, atomically (temp file, then rename).

    Arrays (no pickled objects): ``meta`` (uint8, UTF-8 JSON: format, source, missing,
    changed, whether features are present, and the records as columns ``RECORD_FIELDS``),
    ``layouts`` and ``spots`` ``(n, 32, 32)`` float16, ``frames`` ``(n, 4)`` float32,
    ``levels`` ``(n, 9)`` uint8, ``points`` ``(K, 2)`` float32 and ``descriptors``
    ``(K, 32)`` uint8 (every image's keypoints, concatenated), ``offsets`` ``(n + 1,)``
    int64 (image i's keypoints are rows ``offsets[i]:offsets[i + 1]``; an image without
    descriptors has none). Without features, n = 0 for the feature arrays.
    """
    feats = as_table(ref.features) if ref.features else None
    n = len(feats) if feats is not None else 0
    counts = np.zeros(n, np.int64)
    if feats is not None:  # an image without descriptors has no keypoints in the file
        count, flags = feats.columns("count", "flags")
        counts[:] = np.where(flags & 2, count, 0)
    meta = {
        "format": REFERENCE_FORMAT, "source": ref.source, "missing": ref.missing, "changed": ref.changed,
        "features": feats is not None,
        "records": {name: [getattr(r, name) for r in ref.records] for name in RECORD_FIELDS},
    }
    total = int(counts.sum())

    def rows(field_name: str):
        if feats is not None:
            for block in feats.blocks():
                yield block[field_name]

    def keypoints(field_name: str):
        if feats is not None:
            for s, block in zip(range(0, n, READ_ROWS), feats.blocks()):
                c = counts[s : s + len(block)]
                yield np.concatenate([r[:k] for r, k in zip(block[field_name], c)]) if c.sum() else None

    # ASCII JSON: file names that are not valid UTF-8 (surrogates) round-trip as escapes
    meta_bytes = np.frombuffer(json.dumps(meta, ensure_ascii=True).encode("ascii"), dtype=np.uint8)
    write_npz(Path(path), {
        "meta": (meta_bytes.dtype, meta_bytes.shape, [meta_bytes]),
        "layouts": (np.float16, (n, GRID, GRID), rows("layout")),
        "spots": (np.float16, (n, GRID, GRID), rows("spots")),
        "frames": (np.float32, (n, 4), rows("frame")),
        "levels": (np.uint8, (n, 9), rows("levels")),
        "points": (np.float32, (total, 2), keypoints("points")),
        "descriptors": (np.uint8, (total, DESCRIPTOR_BYTES), keypoints("descriptors")),
        "offsets": (np.int64, (n + 1,), [np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)]),
    })


def write_npz(path: Path, arrays: dict) -> None:
    """A compressed ``.npz`` file (as ``np.savez_compressed`` writes), each array written from
    its chunks: ``arrays``: name -> (dtype, shape, chunks along the first axis). Atomic: a
    temporary file beside ``path``, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for name, (dtype, shape, chunks) in arrays.items():
                dtype = np.dtype(dtype)
                with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": tuple(int(v) for v in shape)}
                    np.lib.format.write_array_header_2_0(fh, header)
                    written = 0
                    for chunk in chunks:
                        if chunk is not None and chunk.size:
                            fh.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
                            written += chunk.size
                    if written != int(np.prod(shape)):
                        raise ValueError(f"{name}: {written} values written for shape {shape}")
        durable_write(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_reference(path: Path) -> Reference:
    """Read a file written by :func:`save_reference`; :class:`BenchError` (one line) when it
    is missing, damaged or of another format."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"reference file {path} not found; pass the run folder, or an export folder that holds "
                         f"{REFERENCE_FILE}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays["meta"].tobytes().decode("ascii"))
        if meta.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {REFERENCE_FORMAT}")
        columns = meta["records"]
        records = [ReferenceRecord(*row) for row in zip(*(columns[name] for name in RECORD_FIELDS))]
        if any(len(columns[name]) != len(records) for name in RECORD_FIELDS):
            raise ValueError("record columns of different lengths")
        features = _features(arrays, len(records)) if meta.get("features") else []
        return Reference(records, features, str(meta.get("source", "")), int(meta.get("missing", 0)),
                         int(meta.get("changed", 0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            UnicodeDecodeError) as exc:
        reason = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) and exc.args else str(exc)
        reason = " ".join(reason.split()) or type(exc).__name__
        raise BenchError(f"cannot read reference file {path} ({reason[:200]}); it is damaged or not a bench "
                         "reference, write it again from the run folder") from None


def _features(arrays: dict[str, np.ndarray], n: int) -> list[CopyFeatures]:
    layouts, spots, frames, levels = arrays["layouts"], arrays["spots"], arrays["frames"], arrays["levels"]
    points, descriptors, offsets = arrays["points"], arrays["descriptors"], arrays["offsets"]
    shapes_ok = (layouts.shape == spots.shape == (n, GRID, GRID) and frames.shape == (n, 4)
                 and levels.shape == (n, 9) and offsets.shape == (n + 1,) and points.ndim == 2
                 and points.shape[1:] == (2,) and descriptors.shape == (len(points), DESCRIPTOR_BYTES)
                 and offsets[0] == 0 and offsets[-1] == len(points) and bool(np.all(np.diff(offsets) >= 0)))
    if not shapes_ok:
        raise ValueError(f"feature arrays do not fit {n} records")
    out = []
    for i in range(n):
        s, e = int(offsets[i]), int(offsets[i + 1])
        out.append(CopyFeatures(layouts[i].astype(np.float16), frames[i].astype(np.float32),
                                spots[i].astype(np.float16), levels[i].astype(np.uint8),
                                points[s:e].astype(np.float32), descriptors[s:e].astype(np.uint8) if e > s else None))
    return out


# ------------------------------------------------------------------------- the check


def _strength(link: Link) -> tuple:
    return (link.kind == "exact", link.layout, link.details)


def find_overlap(reference: Reference, external, threshold: float = DEFAULT_COPY_THRESHOLD) -> list[dict]:
    """The images of ``external`` that are copies of an image of ``reference``, in
    ``external``'s order.

    ``external``: a :class:`~bench.data.scan.DatasetIndex` from ``scan(DATA, copies=True)``.
    One dict per copy: ``file`` and ``label`` (the external image), ``kind`` (as ``bench
    scan`` names links: exact, resized/re-encoded, re-processed, mirrored/rotated),
    ``layout`` and ``details`` (the link's scores), ``reference``, ``reference_split`` and
    ``reference_label`` (the run's image it copies). An external image that copies several
    run images is listed once, with the strongest link (exact first, then the highest layout
    score); one that is an exact duplicate of another external image that copies a run
    image is listed with that link too.

    When the reference or the external index has no copy features, only exact copies
    (same sha256) are found.

    :func:`~bench.data.copies.find_links` runs on the run's images followed by the
    external ones, so it also scores reference-reference and external-external candidate
    pairs, which are then dropped: wasted work, but bounded by its candidate and detail
    budgets. Mirror checks re-read each external image from disk at most once; reference
    images are never the mirrored side (they come first), so the check needs no reference
    image files.
    """
    n_ref = len(reference.records)
    records = [*reference.records, *external.records]
    both = bool(reference.features) and bool(external.features)
    features = [*reference.features, *external.features] if both else []
    if both and len(external.features) != len(external.records):
        raise ValueError(f"{len(external.features)} copy features for {len(external.records)} external records")

    def mirrored(i: int) -> CopyFeatures | None:
        return external.mirrored_features(i - n_ref) if i >= n_ref else None

    links = find_links(records, features, threshold, mirrored=mirrored)
    best: dict[int, Link] = {}
    twin: dict[int, int] = {}  # external image -> the earlier external image with the same sha256
    for link in links:
        if link.b < n_ref:
            continue
        if link.a >= n_ref:
            if link.kind == "exact":
                twin[link.b] = link.a
            continue
        if link.b not in best or _strength(link) > _strength(best[link.b]):
            best[link.b] = link
    for b, a in twin.items():
        if b not in best and a in best:
            best[b] = best[a]
    out = []
    for b in sorted(best):
        link, ext, ref = best[b], external.records[b - n_ref], reference.records[best[b].a]
        out.append({"file": ext.path, "label": ext.label, "kind": link.kind, "layout": link.layout,
                    "details": link.details, "reference": ref.path, "reference_split": ref.split,
                    "reference_label": ref.label})
    return out
