"""Scan an image folder (one sub-folder per class) into a :class:`DatasetIndex`.

Every readable image becomes an :class:`ImageRecord` with its sha256, perceptual hashes,
size and original colour mode. Unreadable files are skipped and listed with the reason;
hidden files (``.*``, ``.DS_Store``) are ignored silently. Files are read in worker
processes on every usable core (a folder of a few files in this process); the index is
the same either way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import imagehash

from bench.data import dicom
from bench.data.header_groups import HeaderKeys, header_keys, new_salt
from bench.data.images import UnreadableImage, open_rgb
from bench.data.regular_files import NotRegular, leaves, read_regular
from bench.errors import BenchError
from bench.parallel import usable_cores, worker_pool

#: Marker file written by ``bench demo-data``; a folder holding it is synthetic.
DEMO_MARKER = ".bench-demo"


@dataclass(frozen=True)
class ImageRecord:
    """One readable image. ``path`` is relative to the data folder, POSIX style."""

    path: str
    label: str
    sha256: str
    phash: str
    dhash: str
    width: int
    height: int
    mode: str
    format: str
    bytes: int = 0  # file size (the shortcut check uses it)
    #: DICOM files: salted hashes of PatientID and StudyInstanceUID (bench.data.header_groups);
    #: kept in memory for grouping, never written (dataset.json leaves them out)
    header: HeaderKeys | None = field(default=None, repr=False, compare=False)


#: The :class:`ImageRecord` fields dataset.json holds.
RECORD_FIELDS = tuple(f.name for f in fields(ImageRecord) if f.name != "header")


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class MirroredReader:
    """Copy features of image ``i`` (``paths[i]``, under ``root``) flipped left-right, read again
    from disk: what the keypoint check needs for a mirror-image candidate."""

    root: Path
    paths: tuple[str, ...]
    window: str = dicom.DEFAULT_WINDOW  # the DICOM window rule the scan read with

    def __call__(self, i: int):
        from bench.data.copy_features import mirrored_features

        path = self.root / self.paths[i]
        try:
            return mirrored_features(open_rgb(path, self.window)[0])
        except UnreadableImage as exc:  # deleted, truncated or replaced since the scan read it
            raise BenchError(f"cannot read {path} again ({exc}); the data folder changed during the scan: "
                             "leave it unchanged while bench reads it, then scan again") from None


@dataclass
class DatasetIndex:
    root: Path
    classes: list[str]
    records: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)
    synthetic: bool = False
    #: Copy-detection features per record (:mod:`bench.data.copies`), in a temporary file
    #: (:class:`~bench.data.copy_table.CopyTable`) that lives as long as the index; empty
    #: when the scan was asked not to compute them.
    features: list = field(default_factory=list, repr=False)
    #: Copy links already found, by threshold (bench.data.split.group_index): finding them
    #: is the costly part of grouping, and a split and a fold plan of one index share them.
    link_cache: dict = field(default_factory=dict, repr=False, compare=False)
    #: The DICOM window rule the files were read with (bench.data.dicom).
    window: str = dicom.DEFAULT_WINDOW
    #: The salt of the records' header keys (bench.data.header_groups); a run stores it.
    salt: str = field(default_factory=new_salt, repr=False, compare=False)

    def mirrored_features(self, i: int):
        """Record ``i``'s copy features, flipped left-right (read again from disk)."""
        return self.mirrored_reader()(i)

    def mirrored_reader(self) -> MirroredReader:
        """:meth:`mirrored_features` as a small object worker processes can be given."""
        return MirroredReader(self.root, tuple(r.path for r in self.records), self.window)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for rec in self.records:
            out[rec.label] += 1
        return out

    def to_dict(self) -> dict:
        from bench.data.duplicates import exact_duplicate_sets

        return {
            "root": str(self.root),
            "synthetic": self.synthetic,
            "classes": self.classes,
            "counts": self.counts(),
            "files": [{name: getattr(r, name) for name in RECORD_FIELDS} for r in self.records],
            "skipped": [asdict(s) for s in self.skipped],
            "exact_duplicates": exact_duplicate_sets(self.records),
        }

    def content_hash(self) -> str:
        """Hash of (path, label, sha256) of every file: changes iff the data changed."""
        h = hashlib.sha256()
        for rec in self.records:
            h.update(f"{rec.path}\0{rec.label}\0{rec.sha256}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in {"Thumbs.db", "desktop.ini", "__MACOSX"}


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def check_data_folder(root: Path) -> Path:
    """Fail with a one-line :class:`BenchError` unless ``root`` is an existing folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise BenchError(f"data folder {root} does not exist; pass --data with a folder holding one sub-folder per class")
    if not root.is_dir():
        raise BenchError(f"data path {root} is a file, not a folder; pass the folder that holds one sub-folder per class")
    return root.resolve()


def _class_files(class_dir: Path) -> list[Path]:
    files: list[Path] = []
    # os.walk does not follow symlinked folders, so symlink loops cannot trap it.
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not _hidden(f))
    return files


#: Below this many files the scan runs in this process: starting worker processes costs about
#: what it saves (``benchmarks/copies.py --cutoffs`` measures the cut-over; a larger process
#: forks more slowly).
PARALLEL_FROM = 32
#: Most files one worker task holds (fewer for small folders, so every core gets some).
CHUNK = 64

log = logging.getLogger("bench")


def _scan_file(root: Path, label: str, fpath: Path, copies: bool, window: str, salt: str | None):
    """One file -> ``(ImageRecord, copy features or None)``, or ``(SkippedFile, None)`` with the reason.
    DICOM files are windowed by ``window``; with ``salt``, their header keys are hashed with it."""
    rel = _rel(fpath, root)
    try:
        data = read_regular(fpath, inside=root)
        if not data:
            raise UnreadableImage("empty file (0 bytes)")
        rgb, fmt, mode = open_rgb(io.BytesIO(data), window)  # the bytes just hashed: the file is read once
    except (UnreadableImage, NotRegular) as exc:
        return SkippedFile(rel, str(exc)), None
    except OSError as exc:
        return SkippedFile(rel, f"cannot read file: {exc.strerror or exc}"), None
    gray = rgb.convert("L")
    record = ImageRecord(
        path=rel,
        label=label,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(gray)),
        dhash=str(imagehash.dhash(gray)),
        width=rgb.width,
        height=rgb.height,
        mode=mode,
        format=fmt,
        bytes=len(data),
        header=header_keys(data, salt) if fmt == dicom.FORMAT and salt else None,
    )
    if not copies:
        return record, None
    from bench.data.copy_features import copy_features

    return record, copy_features(gray)


def _scan_files(root: Path, jobs: list[tuple[str, Path]], table, start: int, window: str = dicom.DEFAULT_WINDOW,
                salt: str | None = None) -> list:
    """:func:`_scan_file` over ``jobs``, whose copy features go to rows ``start``, ``start + 1``...
    of ``table`` (a :class:`~bench.data.copy_table.CopyTable`, or None for none); the
    records and skipped files. A worker process's task: everything it needs is in its arguments."""
    items = []
    for k, (label, fpath) in enumerate(jobs):
        item, features = _scan_file(root, label, fpath, table is not None, window, salt)
        if features is not None:
            table.write(start + k, features)
        items.append(item)
    return items


def _scan_parallel(root: Path, jobs: list[tuple[str, Path]], table, workers: int,
                   progress: Callable[[int, int], None] | None, window: str, salt: str | None) -> list:
    """:func:`_scan_files` over ``jobs`` in ``workers`` processes (the platform's default start
    method), in chunks; results in ``jobs``' order, ``progress`` called as chunks finish."""
    size = max(1, min(CHUNK, len(jobs) // (workers * 4)))
    starts = list(range(0, len(jobs), size))
    results: list = [None] * len(starts)
    done = 0
    pool = worker_pool(min(workers, len(starts)))
    try:
        futures = {pool.submit(_scan_files, root, jobs[s : s + size], table, s, window, salt): k
                   for k, s in enumerate(starts)}
        for future in as_completed(futures):
            k = futures[future]
            try:
                results[k] = future.result()
            except BrokenProcessPool:  # a worker died (killed, out of memory): its chunks are scanned below
                continue
            done += len(results[k])
            if progress is not None:
                progress(done, len(jobs))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    left = [k for k, r in enumerate(results) if r is None]
    if left:
        log.warning(f"a scan worker process stopped; scanning the {sum(len(jobs[starts[k]:starts[k] + size]) for k in left)} "
                    "files it had not finished in this process")
        for k in left:
            results[k] = _scan_files(root, jobs[starts[k] : starts[k] + size], table, starts[k], window, salt)
            done += len(results[k])
            if progress is not None:
                progress(done, len(jobs))
    return [item for chunk in results for item in chunk]


def read_files(root: Path, jobs: list[tuple[str, Path]], copies: bool = True, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None, salt: str | None = None) -> tuple[list, object]:
    """Read ``jobs`` (``(label, file)`` pairs, files under ``root``): an :class:`ImageRecord` or a
    :class:`SkippedFile` per job, in order, and (``copies``) a
    :class:`~bench.data.copy_table.CopyTable` whose row ``k`` holds job ``k``'s copy features
    (empty for a skipped file), else None. In ``workers`` processes (default: every usable
    core) from :data:`PARALLEL_FROM` files on; the same either way. DICOM files are read
    with the window rule in force (:func:`bench.data.dicom.current_window`) and, with
    ``salt``, their header keys hashed with it."""
    window = dicom.current_window()
    table = None
    if copies:
        from bench.data.copy_table import CopyTable

        table = CopyTable.create(len(jobs))
    workers = usable_cores() if workers is None else workers
    if workers > 1 and len(jobs) >= PARALLEL_FROM:
        return _scan_parallel(root, jobs, table, workers, progress, window, salt), table
    items = []
    for done, job in enumerate(jobs, start=1):
        items.extend(_scan_files(root, [job], table, done - 1, window, salt))
        if progress is not None:
            progress(done, len(jobs))
    return items, table


def scan(root: Path, progress: Callable[[int, int], None] | None = None, copies: bool = True,
         workers: int | None = None, salt: str | None = None) -> DatasetIndex:
    """Scan ``root`` into a :class:`DatasetIndex`.

    ``progress(done, total)`` is called as files are done (after each file, or each chunk
    of files in parallel), for progress bars. ``copies``: also compute each image's
    copy-detection features (needed to group copies; a resumed run reads its groups from
    split.json and skips them). ``workers``: processes reading the files (default: every
    usable core; folders under :data:`PARALLEL_FROM` files are read in this process). The
    index is the same whichever way the files were read. DICOM files are read with the window
    rule in force (:func:`bench.data.dicom.reading_window`); their PatientID and
    StudyInstanceUID are kept as hashes salted with ``salt`` (default: a new random one).
    Raises :class:`BenchError` for a missing/empty folder, fewer than two classes, or no
    readable image at all.
    """
    root = check_data_folder(root)
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    outside = {e.name for e in entries if not _hidden(e.name) and e.is_symlink() and leaves(Path(e.path), root)}
    class_dirs = [Path(e.path) for e in entries if not _hidden(e.name) and e.is_dir() and e.name not in outside]
    skipped = [
        SkippedFile(e.name, f"symbolic link leading outside the data folder (to {os.path.realpath(e.path)})")
        if e.name in outside else SkippedFile(e.name, "not inside a class folder")
        for e in entries
        if not _hidden(e.name) and (e.name in outside or not e.is_dir())
    ]
    if not class_dirs:
        raise BenchError(
            f"data folder {root} has no class sub-folders; put each class's images in a sub-folder named after the class"
        )
    jobs = [(cdir.name, f) for cdir in class_dirs for f in _class_files(cdir)]
    salt = salt or new_salt()
    items, table = read_files(root, jobs, copies, workers, progress, salt)
    records: list[ImageRecord] = [item for item in items if isinstance(item, ImageRecord)]
    skipped.extend(item for item in items if isinstance(item, SkippedFile))
    features = [] if table is None else table.select([k for k, item in enumerate(items)
                                                      if isinstance(item, ImageRecord)])
    if not records:
        raise BenchError(
            f"no readable images in {root} ({len(skipped)} files skipped); add JPEG/PNG/BMP/TIFF/WebP/DICOM images to the class folders"
        )
    classes = sorted({r.label for r in records})
    if len(classes) < 2:
        raise BenchError(
            f"only one class with images ({classes[0]!r}) in {root}; a classifier needs two or more class sub-folders with images"
        )
    empty = [c.name for c in class_dirs if c.name not in classes]
    skipped.extend(SkippedFile(name, "class folder holds no readable images") for name in empty)
    return DatasetIndex(
        root=root,
        classes=classes,
        records=records,
        skipped=skipped,
        synthetic=(root / DEMO_MARKER).exists(),
        features=features,
        window=dicom.current_window(),
        salt=salt,
    )
