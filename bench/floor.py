"""The floor baselines of a run (:mod:`bench.evaluate.floor`), on the run's own splits.

Each floor baseline is scored like a backbone's search: on the run's one split
(``<run>/<name>/``) or in every outer fold of a ``--cv`` run (``<run>/cv/r<R>-f<F>/<name>/``),
its validation and test (or held-out fold) predictions calibrated, thresholded and
evaluated by :func:`bench.evaluate.final.evaluate_predictions`, its row in
``result.json``. So every stage that reads a search (the out-of-fold pooling of
:func:`bench.evaluate.crossval.cv_row`, the paired tests, the report) reads a floor
baseline the same way; its row's ``kind`` keeps it out of the ranking and the deployment.

* ``majority`` and ``content-logistic``: :func:`run_content_floors`, after the backbones,
  from the content statistics the run computed once (``content.csv``);
* ``<backbone>:linear-probe``: :func:`probe`, called by the backbone's own job
  (:func:`bench.pipeline.run_backbone`) while it holds its cached features: the train and
  validation features (and, in a fold, those of the held-out images) are the cache
  entries the search trained on, average-pooled; the test images of a single split are
  pooled from the evaluation pass of the chosen model when it kept the backbone frozen
  (one pass, two outputs), else from one frozen pass over the test images.

A failure is a row (status ``failed`` and its message), as for a backbone.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from bench.atomic import read_json
from bench.data.content import SIZE, ContentTable
from bench.data.loading import label_indices
from bench.evaluate.floor import CONTENT, MAJORITY, FloorFit, describe, fit_logistic, majority, probe_name
from bench.runfolder import RunFiles, SearchFiles
from bench.schema import FLOOR_KIND, STOPPED

log = logging.getLogger(__name__)


def enabled(config) -> bool:
    """Whether the run scores floor baselines (``--floor``, on unless ``--no-floor``)."""
    return bool(getattr(config, "floor", True))


def floor_names(run) -> list[str]:
    """The floor rows of ``run``: majority, content-logistic and a probe per backbone
    candidate (not the notebook recipe, which trains Xception again)."""
    from bench.candidates import candidates

    return [MAJORITY, CONTENT, *(probe_name(c.name) for c in candidates(run.config) if not c.baseline)]


def _files(run_dir, name: str, fold: tuple[int, int] | None) -> SearchFiles:
    run = RunFiles(run_dir)
    return run.backbone(name) if fold is None else run.fold(*fold, name)


def _splits(run) -> list[tuple[object, tuple[int, int] | None]]:
    """(split, fold) of every search of the run's design: the one split, or every outer fold."""
    if run.folds is None:
        return [(run.split, None)]
    plan = run.folds
    return [(plan.split(r, f), (r, f)) for r in range(plan.repeats) for f in range(plan.k)]


def content_table(run) -> ContentTable:
    """The content statistics of every image of the run: ``content.csv``, computed (and
    written) only where it is missing or does not cover the run's images."""
    path = run.files.content_csv
    table = ContentTable.read(path)
    if table is None or not table.covers(run.split.files):
        log.info("floor: computing the content statistics of the run's images")
        table = ContentTable.compute(run.index.root, run.split.files, table)
        table.write(path)
    return table


def write_floor(name: str, split, files: SearchFiles, search, fit: FloorFit, seconds: float, fold=None,
                **extra) -> dict:
    """Calibrate, threshold and evaluate ``fit``'s predictions as a search's are, write its
    predictions and ``result.json``; returns its row."""
    from bench.evaluate.final import evaluate_predictions, write_result

    files.path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    metrics = evaluate_predictions(split, fit.p_val, fit.p_test, files.path, search.seed, intervals=fold is None)
    row = _row(name, search, fold, **extra)
    row.update(status="ok", val_objective=fit.val_objective, floor_c=fit.c,
               search_seconds=round(seconds + time.perf_counter() - t0, 2))
    row.update({f"test_{k}": v for k, v in metrics.items() if k != "confusion_matrix"})
    if "confusion_matrix" in metrics:
        row["test_confusion_matrix"] = metrics["confusion_matrix"]
    write_result(files.result_json, row)
    return row


def _row(name: str, search, fold, **extra) -> dict:
    where = {} if fold is None else {"repeat": fold[0], "fold": fold[1]}
    return {**where, "backbone": name, "kind": FLOOR_KIND, "family": "floor baseline", "floor_model": describe(name),
            "baseline": False, "trials_done": 0, "trials_failed": 0, "objective": search.objective, **extra}


def failed_floor(name: str, files: SearchFiles, search, message: str, fold=None, **extra) -> dict:
    from bench.evaluate.final import write_result

    files.path.mkdir(parents=True, exist_ok=True)
    row = {**_row(name, search, fold, **extra), "status": "failed", "message": message}
    write_result(files.result_json, row)
    log.warning(f"{name}: {message}")
    return row


def run_content_floors(run) -> None:
    """``majority`` and ``content-logistic`` on every split of the run's design; those with
    a ``result.json`` are done (``--resume``)."""
    search, classes = run.config.search, list(run.split.classes)
    table = None
    for split, fold in _splits(run):
        y = {s: label_indices(split.rows(s), classes) for s in ("train", "val", "test")}
        for name in (MAJORITY, CONTENT):
            files = _files(run.path, name, fold)
            if files.result_json.exists():
                continue
            t0 = time.perf_counter()
            if name == MAJORITY:
                fit = majority(y["train"], len(y["val"]), len(y["test"]), len(classes), search.objective, y["val"])
                write_floor(name, split, files, search, fit, time.perf_counter() - t0, fold)
                continue
            table = table or content_table(run)
            x = {s: table.matrix(split.rows(s)) for s in ("train", "val", "test")}
            try:
                fit = fit_logistic(x["train"], y["train"], x["val"], y["val"], x["test"], len(classes),
                                   search.objective)
            except ValueError as exc:
                failed_floor(name, files, search, f"cannot fit: {exc}", fold, image_size=SIZE)
                continue
            write_floor(name, split, files, search, fit, time.perf_counter() - t0, fold, image_size=SIZE)
    log.info("floor: majority and content-logistic scored")


def pooled_rows(x) -> np.ndarray:
    """Global average pooling of cached features (``(N, h, w, c)``; already flat rows pass
    through), read a chunk at a time, as float32."""
    from bench.search.features import pooled

    if len(x.shape) == 2:
        return np.asarray(x, dtype=np.float32)
    return np.asarray(pooled(x, np.mean), dtype=np.float32)


def plain_rows(x):
    """The plain training rows of cached training features: without the augmented views
    that follow them (:class:`bench.search.features.FeatureRows` segments)."""
    from bench.search.features import FeatureRows

    return FeatureRows([x.segments[0]]) if isinstance(x, FeatureRows) else x


def probe(job, x_train, x_val, x_test, test_source: str) -> dict:
    """The linear probe of ``job``'s backbone on its depth-0 cached features (``x_train``,
    ``x_val``: the search's, ``x_test``: pooled test features or cached held-out rows),
    written beside the backbone's search; returns its row. ``test_source``: where the test
    features came from, recorded in the row."""
    name = probe_name(job.name)
    files = _files(job.run_dir, name, job.fold)
    extra = {"image_size": job.size, "weights": job.weights, "probe_of": job.name,
             "probe_features": f"train and val: cached frozen features; test: {test_source}"}
    t0 = time.perf_counter()
    classes = list(job.split.classes)
    y = {s: label_indices(job.split.rows(s), classes) for s in ("train", "val")}
    try:
        fit = fit_logistic(pooled_rows(plain_rows(x_train)), y["train"], pooled_rows(x_val), y["val"],
                           pooled_rows(x_test), len(classes), job.search.objective)
    except ValueError as exc:
        return failed_floor(name, files, job.search, f"cannot fit: {exc}", job.fold, **extra)
    row = write_floor(name, job.split, files, job.search, fit, time.perf_counter() - t0, job.fold, **extra)
    log.info(f"{name}: fitted on {len(y['train'])} cached feature rows (C = {fit.c:g}) in {row['search_seconds']}s")
    return row


def frozen_test_features(job, source) -> np.ndarray:
    """Average-pooled depth-0 features of the test images of a single split, by one frozen
    pass (the backbone's original weights), float16 like the cache: for a probe whose
    backbone's chosen model was fine-tuned (its evaluation pass saw other features)."""
    from bench.data.loading import image_batches
    from bench.search.cache import run_prefix

    rows = job.split.rows("test")
    prefix = source.prefix([0], source.base(), job.frozen_pass.precision)
    parts = [np.asarray(out[0], dtype=np.float32)
             for out in run_prefix(prefix, image_batches(job.data_root, rows, job.size, job.search.batch_size))]
    if not parts:
        return np.zeros((0, prefix.outputs[0].shape[-1]), np.float32)
    features = np.concatenate(parts)
    return features.mean(axis=(1, 2)) if features.ndim == 4 else features


def stopped_backbones(run_dir) -> dict[str, str]:
    """The backbones ``--budget`` stopped in this run (``budget.json``), with why."""
    from bench.budget import read_budget

    return dict(read_budget(run_dir).get("stopped", {}))


def floor_rows(run) -> list[dict]:
    """The floor rows of ``run`` (before ranking): each one's ``result.json`` on a single
    split, its out-of-fold row (:func:`bench.evaluate.crossval.cv_row`) with ``--cv``. A
    probe whose backbone's job has not written one (a failed or older search) is a failed row."""
    from bench.candidates import candidates

    stopped = stopped_backbones(run.path)
    probes = {probe_name(c.name): c.name for c in candidates(run.config) if not c.baseline}
    rows = []
    for name in floor_names(run):
        results = []
        for _, fold in _splits(run):
            path = _files(run.path, name, fold).result_json
            results.append(read_json(path) if path.exists() else None)
        if any(r is None for r in results):
            row = {"backbone": name, "kind": FLOOR_KIND, "family": "floor baseline", "floor_model": describe(name),
                   "objective": run.config.search.objective, "status": "failed",
                   "message": "no result: its backbone's search did not score it (failed, or run by an earlier "
                              "version of bench)"}
            if probes.get(name) in stopped:
                row.update(status=STOPPED, message=f"not scored on every split: --budget stopped {probes[name]}")
            rows.append(row)
            continue
        if run.folds is None:
            rows.append(results[0])
            continue
        from bench.evaluate.crossval import cv_row

        plan, search = run.folds, run.config.search
        rows.append(cv_row(run.path, name, results, plan, search.objective, search.seed))
    return rows
