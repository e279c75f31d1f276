"""Export a backbone of a finished run as a self-contained classifier.

``bench export RUN`` writes, by default to ``RUN/export/<backbone>/``:

* ``model.keras`` (and on request ``saved_model/``): a model that takes raw RGB images,
  ``uint8``, any height and width (a batch shares one size), and returns class
  probabilities in the order of ``labels.json``. Padding to a square, resizing and the
  backbone's own normalisation are layers inside the model, so nobody can feed it
  wrongly scaled pixels.
* on request ``model.tflite``: the same network for TFLite's builtin kernels, which lack
  float64 and most dynamic-shape ops, so it takes ``(1, size, size, 3)`` uint8 images
  already padded and resized (``labels.json`` ``tflite_input``); normalisation is inside.
* ``labels.json``: class order, positive class and the decision threshold chosen on the
  validation split (binary runs), the input contract.
* ``model_card.md``: data, split, test metrics with confidence intervals, the selection
  rule, intended use and limitations.
* ``manifest.json``: every file with its sha256, bench and library versions, the run it
  came from and the fidelity checks.
* ``overlap_reference.npz``: the run's train/val/test images as ``bench evaluate``'s
  overlap check needs them (sha256, perceptual hashes, copy features; no pixels).

The model and its layers: :mod:`bench.deploy.model`, :mod:`bench.layers`; the formats:
:mod:`bench.deploy.formats`; the fidelity check: :mod:`bench.deploy.verify`.

Loading ``model.keras`` needs bench installed (its custom layers are registered by
importing :mod:`bench.layers`); the SavedModel and TFLite files need only TensorFlow.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from bench import __version__
from bench.data.dicom import reading_window
from bench.deploy.formats import FORMATS, save_formats
from bench.deploy.model import EXPORT_FORMAT_VERSION, build_export_model, labels_dict
from bench.deploy.model_card import log_checks, model_card
from bench.deploy.run_info import RunInfo, default_export_dir, run_info
from bench.deploy.verify import check_export
from bench.errors import BenchError
from bench.outputs import check_not_input, describe_files, foreign_files, replace_folder
from bench.atomic import sha256_file, write_json_atomic, write_text_atomic
from bench.machine import library_versions

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    backbone: str
    formats: list[str]
    files: list[str]
    checks: dict = field(default_factory=dict)


def export_run(
    run_dir: Path,
    backbone: str | None = None,
    to: Path | None = None,
    formats: Iterable[str] | str = ("keras",),
    check: bool = True,
    index=None,
) -> ExportResult:
    """Export ``backbone`` (default: the recommended one) of ``run_dir`` to ``to``.

    ``index``: the run's own scan when this process made it (the end of ``bench run``), so
    the overlap reference is not read from the files again.

    The export is assembled in a temporary folder beside ``to`` and moved into place only
    when complete (and, with ``check``, when the fidelity checks pass). An existing
    earlier export at ``to`` is replaced; any other non-empty folder is refused.
    """
    formats = parse_formats(formats)
    info = run_info(run_dir, backbone)
    with reading_window(info.window):  # the overlap reference reads the run's files as the run did
        return _export(info, to, formats, check, index)


def _export(info: RunInfo, to: Path | None, formats: list[str], check: bool, index) -> ExportResult:
    dest = Path(to) if to is not None else default_export_dir(info.run_dir, info.backbone)
    check_export_dest(dest, info.run_dir)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as exc:
        raise BenchError(f"cannot write the export to {dest} ({exc.strerror or exc}); pass a writable folder with --to") from None
    try:
        log.info(f"exporting {info.backbone} ({', '.join(formats)}) from {info.run_dir}")
        model = build_export_model(info)
        save_formats(model, tmp, formats)
        labels = labels_dict(info, formats)
        write_json_atomic(tmp / "labels.json", labels)
        reference = write_overlap_reference(info.run_dir, tmp, index)
        checks = {"run": False, "reason": "not requested (--no-check)"}
        if check:
            log.info("checking the export in a fresh process against the run's test predictions "
                     "(validation predictions when the run has no test images)")
            checks = check_export(tmp, info.run_dir, fresh_process=True)
            log_checks(checks)
            if checks.get("run") and not checks.get("passed"):
                raise BenchError(
                    f"the exported model does not reproduce run {info.run_dir.name}'s test predictions: "
                    f"{checks['failure']}; nothing was written to {dest}"
                )
        write_text_atomic(tmp / "model_card.md", model_card(info, labels, formats, checks))
        manifest = write_manifest(tmp, info, formats, checks, reference)
        replace_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(f"wrote {dest}")
    return ExportResult(dest, info.backbone, formats, sorted(manifest["files"]), checks)


def parse_formats(formats: Iterable[str] | str) -> list[str]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item not in FORMATS:
            raise BenchError(f"unknown export format {item!r}; choose from: {', '.join(FORMATS)} (comma-separated)")
        if item not in out:
            out.append(item)
    if not out:
        raise BenchError(f"no export format given; choose from: {', '.join(FORMATS)}")
    return out


def check_export_dest(dest: Path, run_dir: Path) -> None:
    """Refuse (one line) an export folder that bench may not replace: a file, the run
    folder or anything holding it, or a non-empty folder that is not an earlier bench
    export holding only the files its manifest lists. An export is replaced as a whole,
    so a file of the user's in it would be lost."""
    from bench.atomic import read_json

    if dest.exists() and not dest.is_dir():
        raise BenchError(f"--to {dest} is a file, not a folder; pass a new or empty folder")
    check_not_input(dest, "--to", inputs=[run_dir])
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    try:
        manifest = read_json(dest / "manifest.json")
    except (BenchError, OSError, ValueError):
        manifest = None
    files = manifest.get("files") if isinstance(manifest, dict) and "format" in manifest else None
    if not isinstance(files, dict):
        raise BenchError(f"--to {dest} is not empty and is not a bench export; pass a new or empty folder")
    foreign = foreign_files(dest, [*files, "manifest.json"])
    if foreign:
        raise BenchError(f"--to {dest} is an earlier bench export but holds files bench did not write "
                         f"({describe_files(foreign)}); a new export replaces the whole folder, so move them out "
                         "or pass another --to")


def write_overlap_reference(run_dir: Path, folder: Path, index=None) -> dict:
    """The run's images as ``bench evaluate``'s overlap check needs them (sha256, hashes,
    copy features; :mod:`bench.data.overlap`), so an export checks external data without
    the run folder. When the run's data folder is gone the export goes on without it.
    ``index``: the run's scan, if this process made it (:func:`reference_from_run`)."""
    from bench.data.overlap import REFERENCE_FILE, reference_from_run, save_reference

    try:
        reference = reference_from_run(run_dir, index=index)
    except BenchError as exc:
        log.warning(f"no {REFERENCE_FILE} in the export (bench evaluate cannot check overlap with it): {exc}")
        return {"file": None, "reason": str(exc)}
    save_reference(reference, folder / REFERENCE_FILE)
    return {"file": REFERENCE_FILE, "images": len(reference.records), "missing": reference.missing,
            "changed": reference.changed}


def write_manifest(folder: Path, info: RunInfo, formats: list[str], checks: dict, reference: dict | None = None) -> dict:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    run = info.run
    manifest = {
        "format": EXPORT_FORMAT_VERSION,
        "bench_version": __version__,
        "versions": library_versions(),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "formats": formats,
        "files": files,
        "source": {
            "run_dir": str(info.run_dir.resolve()),
            "run_name": run.get("config", {}).get("name", info.run_dir.name),
            "backbone": info.backbone,
            "recommended": info.recommended,
            "rank": info.row.get("rank"),
            "best_trial": info.row.get("best_trial"),
            "run_created": run.get("created"),
            "run_command": run.get("command"),
            "run_bench_version": run.get("bench_version"),
            "data": run.get("config", {}).get("data"),
            "data_hash": run.get("data_hash"),
            "synthetic_data": bool(run.get("synthetic_data")),
            "weights": info.row.get("weights", run.get("config", {}).get("weights")),
            "model_sha256": sha256_file(info.model_path),
        },
        "checks": checks,
        "overlap_reference": reference,
    }
    write_json_atomic(folder / "manifest.json", manifest)
    return manifest


def up_to_date_export(run_dir: Path, check: bool = True) -> ExportResult | None:
    """The recommended model's export at its default place when it is already there and
    current (a resumed, finished run): its manifest names this bench export format, the
    same ``best_model.keras`` (sha256), every file it lists is unchanged, and its fidelity
    checks passed (or were not asked for). None otherwise."""
    from bench.atomic import read_json

    info = run_info(run_dir)
    dest = default_export_dir(info.run_dir, info.backbone)
    try:
        manifest = read_json(dest / "manifest.json")
    except (BenchError, OSError, ValueError):
        return None
    checks = manifest.get("checks") or {}
    if (manifest.get("format") != EXPORT_FORMAT_VERSION
            or manifest.get("source", {}).get("model_sha256") != sha256_file(info.model_path)
            or (check and not (checks.get("passed") or not checks.get("run")))):
        return None
    files = manifest.get("files") or {}
    for name, entry in files.items():
        path = dest / name
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            return None
    log.info(f"the export at {dest} is up to date (same model, files unchanged, checks passed): not redone")
    return ExportResult(dest, info.backbone, list(manifest.get("formats") or []), sorted(files), checks)


def export_winner(run_dir: Path, check: bool = True, index=None) -> ExportResult | None:
    """End of ``bench run``: export the recommended backbone to ``RUN/export/<backbone>`` and
    write its Grad-CAM grid of test images (:func:`bench.deploy.gradcam.write_run_gradcam`).

    The run's results are complete before this runs, so problems here are logged as
    warnings, not raised: a failed export never costs the user the run. ``index``: the
    run's scan, when this process made it (see :func:`export_run`).
    """
    try:
        current = up_to_date_export(run_dir, check)
        result = current or export_run(run_dir, check=check, index=index)
    except BenchError as exc:
        log.warning(f"the recommended model was not exported: {exc}")
        return None
    from bench.runfolder import RunFiles

    if current is not None and RunFiles(run_dir).backbone(result.backbone).gradcam_png.is_file():
        return result
    try:
        from bench.deploy.gradcam import write_run_gradcam

        with reading_window(run_info(run_dir, result.backbone).window):
            log.info(f"wrote {write_run_gradcam(run_dir, result.backbone)}")
    except BenchError as exc:
        log.warning(f"no Grad-CAM grid of test images: {exc}")
    return result
