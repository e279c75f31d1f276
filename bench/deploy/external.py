"""``bench evaluate MODEL_OR_RUN DATA``: an exported model (or a run's recommended one) on
an external labelled folder, one sub-folder per class.

1. **Classes.** DATA's class folders must be among the model's classes (``labels.json``);
   otherwise one line lists the mismatch (exit 2). A model class with no folder in DATA is
   evaluated as absent (its recall and AUC are undefined) and warned about.
2. **Overlap check.** DATA is scanned as ``bench scan`` scans (copy features included) and
   every image that is a copy (exact, resized/re-encoded, re-processed, mirrored/rotated)
   of one of the run's train/val/test images is listed (:mod:`bench.data.overlap`). The
   reference comes from the export (``overlap_reference.npz``) or from the run's data
   folder. Overlapping images are excluded unless ``--keep-overlap``: they make an
   external test not external.
3. **Metrics** of the model's (calibrated) probabilities, decided at the named operating
   point (binary) or by the argmax: every metric of :func:`bench.evaluate.metrics.evaluate`
   with 95 % bootstrap CIs over DATA's own duplicate groups; calibration (ECE with CI,
   slope, intercept, Brier skill against DATA's own prevalence); sensitivity and
   specificity at each of the model's operating points; the decision curve. With
   ``--tta flip`` everything again for the flip-averaged probabilities.
4. ``evaluation.json``, ``predictions.csv`` and ``evaluation.md`` / ``evaluation.html``
   (:mod:`bench.report.evaluation_report`) in the output folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.config import DEFAULT_COPY_THRESHOLD
from bench.errors import BenchError

log = logging.getLogger(__name__)

EVALUATION_FORMAT = 1


@dataclass
class EvaluateOptions:
    backbone: str | None = None
    keep_overlap: bool = False
    tta: str = "none"
    operating_point: str | None = None
    copy_threshold: float = DEFAULT_COPY_THRESHOLD
    seed: int = 0
    command: str = ""


def check_classes(model_classes: list[str], data_classes: list[str], data: Path) -> list[str]:
    """One-line error when DATA has a class folder the model does not know; the model's
    classes absent from DATA are returned (a warning, not an error)."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise BenchError(
            f"class folders of {data} do not match the model's classes: {', '.join(unknown)} not among "
            f"{', '.join(model_classes)} (labels.json); rename the folders to the model's class names")
    return [c for c in model_classes if c not in data_classes]


def reference_for(model_or_run: Path, predictor):
    """The run's images for the overlap check, and where they came from; (None, reason)
    when neither the export nor the run's data folder provides them."""
    from bench.data.overlap import REFERENCE_FILE, load_reference, reference_from_run
    from bench.atomic import read_json
    from bench.runfolder import is_run_dir

    stored = Path(predictor.source) / REFERENCE_FILE
    if stored.is_file():
        return load_reference(stored), None
    run_dir = Path(model_or_run) if is_run_dir(model_or_run) else None
    manifest = Path(predictor.source) / "manifest.json"
    if run_dir is None and manifest.is_file():
        recorded = read_json(manifest).get("source", {}).get("run_dir")
        run_dir = Path(recorded) if recorded and is_run_dir(Path(recorded)) else None
    if run_dir is None:
        return None, (f"{predictor.source} has no {REFERENCE_FILE} and its run folder is not available; "
                      "export the run again with this bench version")
    try:
        return reference_from_run(run_dir), None
    except BenchError as exc:
        return None, str(exc)


def _group_of(index, threshold: float) -> dict[str, str]:
    """DATA's own duplicate groups, DICOM files joined by PatientID (copies, and a patient's
    images, within the external set resample together)."""
    from bench.data.split import group_index
    from bench.data.user_groups import header_groups

    grouping = group_index(index, threshold, header_groups(index, "patient"))
    return {index.records[m].path: grouping.group_id(g) for g in grouping.groups for m in g.members}


def results_for(y: np.ndarray, proba: np.ndarray, classes: list[str], threshold: float | None, points: dict | None,
                groups: list[str], seed: int) -> dict:
    """Metrics, calibration, operating points and decision curve of one set of probabilities."""
    from bench.evaluate.calibration import calibration_summary
    from bench.evaluate.decisions import decision_curve_record
    from bench.evaluate.metrics import evaluate
    from bench.evaluate.operating_points import evaluate_operating_points

    prevalence = np.bincount(y, minlength=len(classes)) / len(y)
    metrics = evaluate(y, proba, classes, threshold=threshold, n_resamples=1000, seed=seed, groups=groups,
                       prevalence=prevalence)
    out = {"metrics": metrics,
           "calibration": calibration_summary(y, proba, prevalence=prevalence, groups=groups, seed=seed),
           "operating_points": None, "decision_curve": None}
    if len(classes) == 2:
        if points:
            out["operating_points"] = evaluate_operating_points(y, proba[:, 1], points, groups=groups, seed=seed)
        out["decision_curve"] = decision_curve_record(y, proba[:, 1], groups, seed)
    return out


def evaluate_external(model_or_run: Path, data: Path, out: Path, options: EvaluateOptions | None = None,
                      index=None) -> dict:
    """Run the whole evaluation; returns the ``evaluation.json`` content (also written).

    ``index``: the scan of ``data`` with copy features, when the caller has one: several
    models scored on one folder scan it, and link its copies, once."""
    from bench.data.overlap import find_overlap
    from bench.data.scan import scan
    from bench.deploy.predict import TTA_MODES, Predictor, predict_files
    from bench.atomic import write_json_atomic
    from bench.runfolder import check_can_write, check_writable
    from bench.tables import text_frame, write_csv

    options = options or EvaluateOptions()
    if options.tta not in TTA_MODES:
        raise BenchError(f"unknown --tta {options.tta!r}; choose one of: {', '.join(TTA_MODES)}")
    check_can_write(Path(out), "--out")  # before the model is loaded and the data scanned
    predictor = Predictor.load(Path(model_or_run), options.backbone, options.operating_point)
    classes = predictor.classes
    out = check_writable(Path(out), "--out")
    if index is None:
        log.info(f"scanning {data} (copy features for the overlap check)")
        from bench.data.dicom import reading_window

        with reading_window(predictor.window):  # DICOM pixels as the model's run read them
            index = scan(Path(data), copies=True)
    absent = check_classes(classes, index.classes, Path(data))
    warnings = [f"no images of class {c} in {data}: its recall and AUC are undefined" for c in absent]

    reference, reason = reference_for(Path(model_or_run), predictor)
    overlap_rows = [] if reference is None else find_overlap(reference, index, options.copy_threshold)
    overlapping = {r["file"]: r["kind"] for r in overlap_rows}
    if overlap_rows:
        log.warning(f"{len(overlap_rows)} image(s) in {data} are copies of the run's own images: "
                    + ("kept (--keep-overlap): this is not an external test" if options.keep_overlap
                       else "excluded (--keep-overlap keeps them)"))
    records = [r for r in index.records if options.keep_overlap or r.path not in overlapping]
    if not records:
        raise BenchError(f"every image in {data} is a copy of the run's own images; nothing external is left to "
                         "evaluate (--keep-overlap evaluates them anyway)")
    group_of = _group_of(index, options.copy_threshold)

    modes = ["none"] + (["flip"] if options.tta == "flip" else [])
    files = [Path(data) / r.path for r in records]
    skipped: list = []
    log.info(f"predicting {len(files)} images")
    probs = {"none": np.stack([p for _, _, p in predict_files(predictor, files, skipped)])}
    if options.tta == "flip":
        log.info(f"predicting their {len(files)} mirror images (test-time augmentation)")
        mirrored = np.stack([p for _, _, p in predict_files(predictor, files, skipped, tta="mirror")])
        probs["flip"] = (probs["none"] + mirrored) / 2.0
    if skipped:  # unreadable after the scan read them (changed meanwhile): keep the rows aligned
        raise BenchError(f"{skipped[0][0]} could not be read again ({skipped[0][1]}); re-run bench evaluate")
    y = np.array([classes.index(r.label) for r in records])
    groups = [group_of.get(r.path, r.path) for r in records]
    points = (predictor.labels.get("operating_points") or {}) if len(classes) == 2 else None
    point_thresholds = {name: p["threshold"] for name, p in (points or {}).items()} or None
    threshold = predictor.threshold if len(classes) == 2 else None
    results, table = {}, {"file": [r.path for r in records], "label": [r.label for r in records]}
    for mode in modes:
        proba = probs[mode].astype(np.float64)
        key, prefix = ("plain", "") if mode == "none" else ("tta", "tta_")
        results[key] = results_for(y, proba, classes, threshold, point_thresholds, groups, options.seed)
        decided = (proba[:, 1] >= threshold).astype(int) if threshold is not None else proba.argmax(1)
        table.update({f"{prefix}prob_{c}": proba[:, k] for k, c in enumerate(classes)})
        table[f"{prefix}prediction"] = [classes[k] for k in decided]
        table[f"{prefix}correct"] = decided == y
    table["overlap"] = [overlapping.get(r.path, "") for r in records]
    n = len(records)
    evaluation = {
        "format": EVALUATION_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": options.command,
        "model": {
            "source": str(predictor.source), "backbone": predictor.labels.get("backbone"), "classes": classes,
            "positive_class": predictor.positive_class,
            "temperature": (predictor.labels.get("calibration") or {}).get("temperature"),
            "image_size": predictor.image_size, "run_name": _run_name(predictor),
            "operating_point": (options.operating_point or "youden") if len(classes) == 2 else None,
            "threshold": threshold,
        },
        "data": {
            "root": str(index.root), "n_files": len(index.records) + len(index.skipped), "n_images": len(index.records),
            "class_counts": index.counts(), "skipped": [{"path": s.path, "reason": s.reason} for s in index.skipped],
            "n_groups": len(set(group_of.values())),
        },
        "overlap": {
            "checked": reference is not None, "reason": reason,
            "reference": None if reference is None else reference.source,
            "threshold": options.copy_threshold, "kept": options.keep_overlap, "rows": overlap_rows,
        },
        "evaluated": {"n": n, "class_counts": {c: int((y == k).sum()) for k, c in enumerate(classes)}},
        "results": results,
        "tta": options.tta,
        "warnings": warnings,
    }
    write_json_atomic(out / "evaluation.json", evaluation)
    frame = text_frame(table)
    write_csv(out / "predictions.csv", frame)
    from bench.report.evaluation_report import write_evaluation_report

    write_evaluation_report(out, evaluation, frame)
    return evaluation


def _run_name(predictor) -> str | None:
    from bench.atomic import read_json

    manifest = Path(predictor.source) / "manifest.json"
    return read_json(manifest).get("source", {}).get("run_name") if manifest.is_file() else None


def summary_lines(evaluation: dict) -> list[str]:
    """What ``bench evaluate`` prints: data, overlap, headline metrics with CIs."""
    from bench.schema import Source, metric_with_ci

    model, data, overlap = evaluation["model"], evaluation["data"], evaluation["overlap"]
    lines = [(f"model: {model['backbone']} ({model['source']}); data: {data['root']} "
              f"({data['n_images']} images, {data['n_groups']} groups)")]
    if not overlap["checked"]:
        lines.append(f"overlap check: not run ({overlap['reason']})")
    else:
        kinds: dict[str, int] = {}
        for r in overlap["rows"]:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        found = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"
        action = "kept (--keep-overlap)" if overlap["kept"] else "excluded"
        lines.append(f"overlap with the run's images: {len(overlap['rows'])} ({found})"
                     + (f", {action}" if overlap["rows"] else ""))
    for key, label in (("plain", "as exported"), ("tta", "TTA flip")):
        res = evaluation["results"].get(key)
        if not res:
            continue
        m = res["metrics"]
        parts = [f"{name} {metric_with_ci(m, metric, source=Source.PLAIN)}" for name, metric in
                 (("AUC", "roc_auc"), ("accuracy", "accuracy"), ("sensitivity", "recall"),
                  ("specificity", "specificity"))]
        ece = metric_with_ci(res["calibration"], "ece", source=Source.PLAIN)
        lines.append(f"{label} (n={evaluation['evaluated']['n']}): " + ", ".join(parts) + f", ECE {ece}")
    lines.extend(f"warning: {w}" for w in evaluation["warnings"])
    from bench.report.evaluation_report import SMALL_SET

    if evaluation["evaluated"]["n"] < SMALL_SET:
        lines.append(f"warning: only {evaluation['evaluated']['n']} images evaluated: the 95 % intervals are wide")
    return lines
