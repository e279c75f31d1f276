"""The per-dataset estimates a suite compares, read from each dataset's run folder.

A dataset's estimate of a backbone is the one its run ranks on for the suite: the
objective's metric (``val_auc`` -> ROC AUC, ``val_loss`` -> Brier score, ...) on the
held-out images, i.e. the test split of a single-split run or the pooled out-of-fold
predictions of a ``--cv`` run, with its 95 % group-bootstrap interval from the run's
leaderboard. Never the validation objective: that one chose the backbone's trial.

:func:`replicates` re-draws those estimates on bootstrap resamples of each dataset's
duplicate groups (every backbone on the same resample), which is what the probability of
being best across datasets resamples within a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import OBJECTIVES
from bench.data.folds import read_folds
from bench.evaluate.comparisons import bootstrap_scores
from bench.evaluate.crossval import CV_METRIC, THRESHOLD_FREE, oof_replicates
from bench.runfolder import RunFiles, read_run
from bench.schema import Estimate, Source, is_floor, label, metric, row_source, to_float
from bench.tables import probability_matrix

#: Bootstrap resamples per dataset behind the probability of being best across datasets.
REPLICATES = 500


@dataclass
class DatasetResult:
    """One dataset's run as the suite reads it."""

    name: str
    run_dir: Path
    classes: list[str]
    objective: str  # the run's validation objective, e.g. val_auc
    rows: dict  # backbone -> its leaderboard row
    seed: int = 0

    @property
    def metric(self) -> str:
        """The metric that estimates the objective on held-out images (roc_auc for val_auc)."""
        return CV_METRIC[self.objective]

    @property
    def maximise(self) -> bool:
        return OBJECTIVES[self.objective] != "min"

    @property
    def source(self) -> Source:
        return row_source(next(iter(self.rows.values()))) if self.rows else Source.TEST

    @property
    def metric_label(self) -> str:
        return f"{self.source.label} {label(self.metric)}"

    def status(self, model: str) -> str:
        row = self.rows.get(model)
        if row is None:
            return "not run"
        return "ok" if row.get("status") == "ok" and not self.estimate(model).missing else "failed"

    def estimate(self, model: str) -> Estimate:
        row = self.rows.get(model) or {}
        return Estimate.read(row, self.metric, self.source)

    def oriented(self, model: str) -> float:
        """The estimate, higher is better (a loss negated); nan unless the model ran."""
        row = self.rows.get(model)
        if row is None or row.get("status") != "ok":
            return float("nan")
        value = self.estimate(model).value
        return value if self.maximise else -value


def read_dataset(name: str, run_dir: Path) -> DatasetResult:
    """A dataset's finished run folder (one-line errors when it is not one)."""
    run = read_run(run_dir)
    config = run.config
    rows = {str(r["backbone"]): r for r in run.leaderboard}
    return DatasetResult(name, Path(run_dir), run.classes, config.get("objective", "val_auc"), rows,
                         int(config.get("seed", 0) or 0))


def replicates(ds: DatasetResult, models: list[str], n_resamples: int = REPLICATES) -> np.ndarray:
    """``(n_resamples, len(models))`` bootstrap replicates of each model's estimate on
    ``ds``, drawn over its duplicate groups, every model on the same resample; higher is
    better; nan columns for models that did not run. With ``--cv --repeats R`` the rows
    are repeats x resamples."""
    ran = [m for m in models if not np.isnan(ds.oriented(m))]
    if not ran:
        return np.full((n_resamples, len(models)), np.nan)
    if ds.source is Source.OUT_OF_FOLD:
        plan = read_folds(RunFiles(ds.run_dir).folds_json)
        scores = oof_replicates(ds.run_dir, ran, plan, ds.objective, ds.seed, n_resamples)
    else:
        scores = _test_replicates(ds, ran, n_resamples)
    scores = scores if ds.maximise else -scores
    out = np.full((len(scores), len(models)), np.nan)
    for j, model in enumerate(models):
        if model in ran:
            out[:, j] = scores[:, ran.index(model)]
    return out


def _test_replicates(ds: DatasetResult, models: list[str], n_resamples: int) -> np.ndarray:
    """Replicates of the test-split estimates (single split): each model's test
    predictions aligned on the first one's images, resampled over duplicate groups; the
    decision threshold of a threshold metric is each model's own (``test_threshold``)."""
    run = RunFiles(ds.run_dir)
    split = run.read_split() or {}
    group_of = {f["path"]: f.get("group", f["path"]) for f in split.get("files", [])}
    tables = [run.backbone(m).test_predictions() for m in models]
    order = tables[0][["file"]]
    aligned = [order.merge(t, on="file", how="left", validate="one_to_one") for t in tables]
    index = {c: i for i, c in enumerate(ds.classes)}
    y = np.array([index[str(v)] for v in aligned[0]["label"]], dtype=int)
    probas = np.array([probability_matrix(t, ds.classes) for t in aligned])
    threshold = None
    if len(ds.classes) == 2 and ds.metric not in THRESHOLD_FREE:
        threshold = np.array([to_float(ds.rows[m].get("test_threshold"), 0.5) for m in models])
    elif len(ds.classes) == 2:
        threshold = 0.5
    groups = np.array([group_of.get(f, f) for f in order["file"]], dtype=object)
    return bootstrap_scores(y, probas, ds.classes, metric=ds.metric, threshold=threshold, groups=groups,
                            n_resamples=n_resamples, seed=ds.seed)


def models_of(results: list[DatasetResult], order: list[str] | None = None) -> list[str]:
    """Every model (backbone row) of the suite: those named in ``order`` first, in that
    order (the suite's --backbones), then any other row (the notebook baseline) as the runs
    list them. Floor baselines (:mod:`bench.evaluate.floor`) stay in each run's leaderboard
    and report, out of the comparison across datasets, which picks a model to use."""
    out = [m for m in order or [] if any(m in ds.rows for ds in results)]
    for ds in results:
        out.extend(m for m, row in ds.rows.items() if m not in out and not is_floor(row))
    return out


def estimates_frame(results: list[DatasetResult], models: list[str]) -> pd.DataFrame:
    """One row per dataset x model: the estimate and its interval as the run reports them,
    its status (ok / failed / not run) and which estimate it is."""
    rows = []
    for ds in results:
        for model in models:
            est = ds.estimate(model)
            rows.append({"dataset": ds.name, "backbone": model, "status": ds.status(model),
                         "metric": ds.metric, "estimate": ds.metric_label, "maximise": ds.maximise,
                         "value": est.value, "ci_low": est.low, "ci_high": est.high,
                         "classes": len(ds.classes)})
    return pd.DataFrame(rows)


def cell_text(row: dict) -> str:
    """``0.912 [0.88, 0.94]``, ``failed`` or ``not run`` for one dataset x backbone row."""
    if row["status"] != "ok":
        return row["status"]
    nan = float("nan")
    est = Estimate(metric(row["metric"]), Source.TEST, row["value"] if row["value"] is not None else nan,
                   row["ci_low"] if row["ci_low"] is not None else nan,
                   row["ci_high"] if row["ci_high"] is not None else nan)
    return est.text()


def verdict_rows(verdict: dict, rank_format: str = " ({:g})") -> list[list[str]]:
    """verdict.json's datasets x backbones as text rows: the dataset, which estimate, then per
    backbone its estimate with interval and its rank there (``rank_format``), and a last row
    with each backbone's mean rank."""
    models = verdict["models"]
    by = {(r["dataset"], r["backbone"]): r for r in verdict["estimates"]}
    floors = {f["dataset"]: f for f in verdict.get("floor", [])}
    rows = []
    for ds in verdict["datasets"]:
        cells = []
        for m in models:
            r = by[(ds["name"], m)]
            cells.append(cell_text(r) + (rank_format.format(r["rank"]) if r.get("rank") is not None else ""))
        rows.append([ds["name"], ds["estimate"], *cells, *([floor_text(floors.get(ds["name"]))] if floors else [])])
    rows.append(["mean rank", "", *(f"{v:.2f}" if v is not None else "-" for v in verdict["across"]["mean_ranks"]),
                 *([""] if floors else [])])
    return rows


def floor_text(floor: dict | None) -> str:
    """``content-logistic 0.832 [0.65, 0.97]``: a dataset's best floor baseline and its estimate."""
    if not floor or floor.get("floor") is None:
        return "-"
    return f"{floor['floor']} " + cell_text({**floor, "status": "ok"})
