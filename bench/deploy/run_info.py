"""One backbone of a finished run (read through :class:`bench.runfolder.RunFiles`): what
export, predict, Grad-CAM and serve need."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.runfolder import RunFiles, SearchFiles, read_run


@dataclass
class RunInfo:
    """What export needs to know about one backbone of a finished run."""

    run_dir: Path
    backbone: str
    row: dict
    run: dict
    split: dict
    leaderboard: list[dict]

    @property
    def classes(self) -> list[str]:
        return list(self.split["classes"])

    @property
    def image_size(self) -> int:
        return int(self.row["image_size"])

    @property
    def threshold(self) -> float | None:
        t = self.row.get("test_threshold")
        return None if t is None or len(self.classes) != 2 else float(t)

    @property
    def positive_class(self) -> str | None:
        # final.py thresholds column 1 of the probabilities: the second class
        return self.classes[1] if len(self.classes) == 2 else None

    @property
    def calibration(self) -> dict | None:
        """What the final stage fitted on validation (temperature, class weights, operating
        points; :mod:`bench.evaluate.decisions`); None when the run folder has no calibration file."""
        return self.search.calibration()

    @property
    def search(self) -> SearchFiles:
        """The backbone's folder in the run: where its model, predictions and calibration live."""
        return RunFiles(self.run_dir).backbone(self.backbone)

    @property
    def model_path(self) -> Path:
        return self.search.best_model

    @property
    def data_root(self) -> Path | None:
        data = self.run.get("config", {}).get("data")
        return Path(data) if data else None

    @property
    def window(self) -> str:
        """The DICOM window rule the run read its images with (``--window``)."""
        return str(self.run.get("config", {}).get("window") or "file")

    @property
    def recommended(self) -> bool:
        return self.row.get("rank") == 1


def run_info(run_dir: Path, backbone: str | None = None) -> RunInfo:
    """One backbone of a finished run; ``backbone`` None picks the recommended one (rank 1)."""
    run = read_run(run_dir)
    board, ok = run.leaderboard, run.ranked()
    if backbone is None:
        if not ok:
            raise BenchError(f"run {run.path} has no successfully trained backbone to export; see its leaderboard.json")
        row = ok[0]
    else:
        matches = [r for r in board if r.get("backbone") == backbone]
        if not matches:
            names = ", ".join(r["backbone"] for r in board) or "none"
            raise BenchError(f"backbone {backbone!r} is not in run {run.path}; choose one of: {names}")
        row = matches[0]
        if row not in ok:
            names = ", ".join(r["backbone"] for r in ok) or "none"
            raise BenchError(f"backbone {backbone!r} failed or has no best_model.keras in run {run.path}; exportable: {names}")
    return RunInfo(run.path, row["backbone"], row, run.run, run.split, board)


def default_export_dir(run_dir: Path, backbone: str) -> Path:
    return Path(run_dir) / "export" / backbone
