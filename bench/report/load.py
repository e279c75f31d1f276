"""Read a finished (or partly finished) run folder into plain data for the report.

Only files are read: run.json, dataset.json, split.json, leaderboard.json and, per
backbone, trials.csv, test_predictions.csv and the best trial's bench_trial.json; a
cross-validated run (``--cv``) adds folds.json and, per backbone, oof_predictions.csv and
every outer fold's result.json, trials.csv and kept trial's bench_trial.json.
Missing optional files give ``None`` (the report says so); a folder without run.json or
leaderboard.json is not a run the report can describe and raises :class:`BenchError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.config import OBJECTIVES
from bench.schema import Source, is_floor, row_source, to_float
from bench.report.formatting import Figure
from bench.runfolder import RunFiles, read_run



@dataclass(slots=True)
class BackboneResult:
    """One leaderboard row and the per-backbone files next to it."""

    name: str
    row: dict
    trials: pd.DataFrame | None = None
    test_predictions: pd.DataFrame | None = None
    history: dict | None = None
    #: --cv: the out-of-fold predictions (oof_predictions.csv), every outer fold's
    #: result.json (repeat-major, with ``repeat`` / ``fold``) and its kept trial's history.
    oof: pd.DataFrame | None = None
    folds: list[dict] = field(default_factory=list)
    fold_histories: list[dict | None] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    def predictions(self, source: Source) -> pd.DataFrame | None:
        """The held-out predictions the ``source`` estimates come from: the test split's or the
        out-of-fold ones."""
        return {Source.TEST: self.test_predictions, Source.OUT_OF_FOLD: self.oof}.get(source)

    @property
    def has_predictions(self) -> bool:
        return self.ok and self.test_predictions is not None and len(self.test_predictions) > 0


@dataclass(slots=True)
class RunData:
    """A run folder as the report reads it. Slotted: what the report computes from it
    (e.g. :func:`bench.report.calibration_section.decision_reports`) is passed along, never
    kept on it."""

    path: Path
    name: str
    run: dict
    dataset: dict
    split: dict
    classes: list[str]
    backbones: list[BackboneResult] = field(default_factory=list)
    folds: dict | None = None  # --cv: folds.json
    #: The floor baselines' rows (``kind`` floor, :mod:`bench.evaluate.floor`) with their
    #: predictions, kept apart from the backbones: every section about backbones ignores them.
    floor: list[BackboneResult] = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.run.get("config", {})

    @property
    def seed(self) -> int:
        """The run's seed (0 when not recorded): the report's bootstraps use it."""
        return int(to_float(self.config.get("seed"), 0))

    @property
    def source(self) -> Source:
        """Where the run's ranking estimates come from (:func:`bench.schema.row_source` of its
        rows): the test split, or out of fold for a cross-validated run (``--cv K``, also when
        every backbone failed)."""
        keys = {k for b in self.backbones for k, v in b.row.items() if v is not None}
        return row_source(keys | ({"cv_objective"} if to_float(self.config.get("cv"), 0) else set()))

    @property
    def holdout_n(self) -> int:
        """--cv: images of the untouched holdout (``--test-size``), 0 without one."""
        sizes = (self.split.get("sizes") or {}).get("test") or {}
        return int(sum(sizes.values()))

    @property
    def objective(self) -> str:
        for b in self.backbones:
            if b.row.get("objective"):
                return str(b.row["objective"])
        return str(self.config.get("objective", "val_auc"))

    @property
    def minimise(self) -> bool:
        return OBJECTIVES.get(self.objective, "max") == "min"

    @property
    def ok(self) -> list[BackboneResult]:
        """Backbones with a result, in leaderboard rank order."""
        ranked = [b for b in self.backbones if b.ok]
        return sorted(ranked, key=lambda b: to_float(b.row.get("rank"), math.inf))

    @property
    def failed(self) -> list[BackboneResult]:
        return [b for b in self.backbones if not b.ok]

    @property
    def files(self) -> RunFiles:
        """The run folder's layout: where each of its files lives."""
        return RunFiles(self.path)

    def probability_columns(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]




def _fold_results(run: RunFiles, name: str, k: int, repeats: int):
    """Every outer fold's result.json of ``name`` (with ``repeat`` / ``fold``), its kept
    trial's history and its trials.csv (with a ``search`` column), repeat-major."""
    rows, histories, trials = [], [], []
    for repeat in range(repeats):
        for fold in range(k):
            search = run.fold(repeat, fold, name)
            row = search.result()
            if row is None:
                continue
            rows.append({**row, "repeat": repeat, "fold": fold})
            histories.append(search.trial_history(row.get("best_trial")) if row.get("status") == "ok" else None)
            table = search.trials()
            if table is not None and len(table):
                trials.append(table.assign(search=f"repeat {repeat + 1}, fold {fold + 1}"))
    return rows, histories, trials


def _load_folds(data: RunData) -> None:
    """The outer folds' files, where the run has them (``--cv``): folds.json, the OOF
    predictions and every outer fold's files; every search's trials (outer folds, then the
    final model's) in ``trials`` with a ``search`` column. A single split has none of them."""
    run = data.files
    data.folds = run.read_folds()
    first = next((b.row for b in data.backbones if b.row.get("cv_k") is not None), {})
    k = int(to_float(first.get("cv_k"), to_float(data.config.get("cv"), 0)))
    repeats = int(to_float(first.get("cv_repeats"), to_float(data.config.get("repeats"), 1)))
    for b in data.floor:
        b.oof = run.backbone(b.name).oof_predictions() if b.ok else None
    for b in data.backbones:
        b.oof = run.backbone(b.name).oof_predictions() if b.ok else None
        b.folds, b.fold_histories, parts = _fold_results(run, b.name, k, repeats)
        if k and b.trials is not None and len(b.trials):
            parts.append(b.trials.assign(search="final model"))
        if parts:
            b.trials = pd.concat(parts, ignore_index=True)


def load_run(run_dir: Path) -> RunData:
    """Read ``run_dir`` (``<out>/<run>/``); raises BenchError when it is not a run folder."""
    run = read_run(run_dir)
    data = RunData(path=run.path, name=run.name, run=run.run, dataset=run.dataset, split=run.split,
                   classes=run.classes)
    for row in run.leaderboard:
        name = str(row.get("backbone"))
        search = run.backbone(name)
        ok = row.get("status") == "ok"
        predictions = search.test_predictions() if ok else None
        history = search.trial_history(row.get("best_trial")) if ok else None
        if is_floor(row):
            data.floor.append(BackboneResult(name, row, None, predictions))
            continue
        data.backbones.append(BackboneResult(name, row, search.trials(), predictions, history))
    if not data.classes:  # split.json and dataset.json missing: the probability columns name the classes
        for b in data.backbones:
            if b.test_predictions is not None and len(b.test_predictions):
                data.classes = [c[5:] for c in b.test_predictions.columns if c.startswith("prob_")]
                break
    for b in data.backbones:
        predictions = b.test_predictions
        if predictions is None or not len(predictions):
            continue
        missing = [c for c in ("file", "label", "correct", *data.probability_columns()) if c not in predictions]
        if missing:
            raise BenchError(
                f"{run.backbone(b.name).test_predictions_csv} lacks columns {', '.join(missing)}; "
                "it was not written by this version of bench; re-run the backbone"
            )
    _load_folds(data)
    return data


def label_indices(data: RunData, labels) -> np.ndarray:
    index = {c: i for i, c in enumerate(data.classes)}
    return np.array([index[str(label)] for label in labels], dtype=int)


def copies_figure(run_dir: Path) -> Figure | None:
    """The contact sheet of linked copies, written by ``bench run`` beside split.json."""
    png = RunFiles(run_dir).copies_png
    if not png.is_file():
        return None
    from PIL import Image

    with Image.open(png) as img:
        width, height = img.size
    return Figure("copies", "Linked copies, to check by eye",
                  "The weakest links of each kind first (the most worth checking), the largest group, and links "
                  "that were refused; groups.csv in the run folder lists every image's group.",
                  png.read_bytes(), width / 100, height / 100)


def gradcam_figure(run_dir: Path, data: RunData, what: str = "test images") -> Figure | None:
    """The recommended model's Grad-CAM grid, written by ``bench run``/``bench export``
    (``bench.deploy.gradcam.write_run_gradcam``); the report only embeds it, never predicts."""
    if not data.ok:
        return None
    best = data.ok[0].name
    search = RunFiles(run_dir).backbone(best)
    png, meta = search.gradcam_png, search.gradcam_json
    if not png.is_file():
        return None
    from PIL import Image

    with Image.open(png) as img:
        width, height = img.size
    picks = json.loads(meta.read_text()).get("picks", []) if meta.is_file() else []
    wrong = sum(1 for p in picks if not p.get("correct"))
    caption = (f"{len(picks)} {what} picked deterministically ({len(picks) - wrong} correct, {wrong} "
               "misclassified); warm colours mark the regions that raised the score of the class named on each "
               "image.") if picks else f"{what[:1].upper()}{what[1:]} with their Grad-CAM heatmaps."
    return Figure("gradcam", f"Grad-CAM of the recommended model ({best})", caption, png.read_bytes(),
                  width / 100, height / 100)
