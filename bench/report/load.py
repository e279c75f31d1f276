"""Read a finished (or partly finished) run folder into plain data for the report.

Only files are read: run.json, dataset.json, split.json, leaderboard.json and, per
backbone, trials.csv, test_predictions.csv and the best trial's bench_trial.json.
Missing optional files give ``None`` (the report says so); a folder without run.json or
leaderboard.json is not a run the report can describe and raises :class:`BenchError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.config import OBJECTIVES
from bench.evaluate.rows import to_float
from bench.runfolder import read_run, read_run_file, read_table



@dataclass
class BackboneResult:
    """One leaderboard row and the per-backbone files next to it."""

    name: str
    row: dict
    trials: pd.DataFrame | None = None
    test_predictions: pd.DataFrame | None = None
    history: dict | None = None

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    @property
    def has_predictions(self) -> bool:
        return self.ok and self.test_predictions is not None and len(self.test_predictions) > 0


@dataclass
class RunData:
    path: Path
    name: str
    run: dict
    dataset: dict
    split: dict
    classes: list[str]
    backbones: list[BackboneResult] = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.run.get("config", {})

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

    def probability_columns(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]




def _read_csv(path: Path, **kwargs) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return read_table(path, **kwargs)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError) as exc:
        raise BenchError(f"cannot read {path} ({exc}); the run folder is damaged, re-run or restore the file") from None


def _trial_history(backbone_dir: Path, best_trial) -> dict | None:
    if best_trial is None or (isinstance(best_trial, float) and math.isnan(best_trial)):
        return None
    tuner = backbone_dir / "tuner"
    path = tuner / f"trial_{best_trial}" / "bench_trial.json"
    if not path.exists() and tuner.is_dir():
        # trial ids may be zero-padded in folder names but not in a numeric JSON field
        try:
            wanted = int(best_trial)
        except (TypeError, ValueError):
            return None
        for candidate in sorted(tuner.glob("trial_*/bench_trial.json")):
            suffix = candidate.parent.name.removeprefix("trial_")
            if suffix.isdigit() and int(suffix) == wanted:
                path = candidate
                break
    return read_run_file(path)


def load_run(run_dir: Path) -> RunData:
    """Read ``run_dir`` (``<out>/<run>/``); raises BenchError when it is not a run folder."""
    finished = read_run(run_dir)
    run_dir, run, leaderboard = finished.path, finished.run, finished.leaderboard
    dataset, split, classes = finished.dataset, finished.split, finished.classes
    data = RunData(path=run_dir, name=run_dir.name, run=run, dataset=dataset, split=split, classes=classes)
    for row in leaderboard:
        name = str(row.get("backbone"))
        folder = run_dir / name
        ok = row.get("status") == "ok"
        trials = _read_csv(folder / "trials.csv", text_columns=("trial", "message"))
        predictions = _read_csv(folder / "test_predictions.csv") if ok else None
        history = _trial_history(folder, row.get("best_trial")) if ok else None
        data.backbones.append(BackboneResult(name, row, trials, predictions, history))
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
                f"{run_dir / b.name / 'test_predictions.csv'} lacks columns {', '.join(missing)}; "
                "it was not written by this version of bench; re-run the backbone"
            )
        predictions["correct"] = predictions["correct"].astype(str).str.lower().isin(["true", "1"])
    return data


def label_indices(data: RunData, labels) -> np.ndarray:
    index = {c: i for i, c in enumerate(data.classes)}
    return np.array([index[str(label)] for label in labels], dtype=int)
