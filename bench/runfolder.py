"""The run folder ``<out>/<run>/``: its files, named once, and :class:`RunFiles`, the one
object that knows where each of them lives and reads them back. Every file is written
atomically (:mod:`bench.atomic`), so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.atomic import read_json, write_json_atomic
from bench.errors import BenchError
from bench.tables import OOF_TEXT_COLUMNS, PREDICTION_TEXT_COLUMNS, TRIALS_TEXT_COLUMNS, read_table

#: The run folder's files, named once. ``<run>/``: run.json (how the run started: its
#: configuration, command, versions; written last when preparing, so it marks a prepared
#: folder), dataset.json (the scan), split.json (and folds.json with ``--cv``), groups.csv
#: and copies.png (the linked copies), header_salt.txt (the salt of the group ids made
#: from DICOM headers, :mod:`bench.data.header_groups`), content.csv (each image's content statistics,
#: :mod:`bench.data.content`), leaderboard.csv/.json, checklist.md/.json (written by the
#: report: :mod:`bench.report.checklists`); ``<run>/<backbone>/`` (or
#: ``<run>/cv/r<R>-f<F>/<backbone>/``): trials.csv, result.json, best_model.keras,
#: calibration.json, the held-out predictions, the Grad-CAM grid and the tuner's folder.
RUN_JSON = "run.json"
DATASET_JSON = "dataset.json"
SPLIT_JSON = "split.json"
FOLDS_JSON = "folds.json"
GROUPS_CSV = "groups.csv"
COPIES_PNG = "copies.png"
CONTENT_CSV = "content.csv"
#: The salt of the group ids made from DICOM headers (bench.data.header_groups).
HEADER_SALT = "header_salt.txt"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"
TRIALS_CSV = "trials.csv"
RESULT_JSON = "result.json"
BEST_MODEL = "best_model.keras"
CALIBRATION_JSON = "calibration.json"
TEST_PREDICTIONS = "test_predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
OOF_PREDICTIONS = "oof_predictions.csv"
TUNER_DIR = "tuner"
TRIAL_HISTORY = "bench_trial.json"
GRADCAM_PNG = "gradcam_grid.png"
GRADCAM_JSON = "gradcam_grid.json"
CV_DIR = "cv"
#: A suite folder (bench suite): the suite as it started, its file, and its verdict across datasets.
SUITE_JSON, SUITE_TOML, VERDICT_JSON = "suite.json", "suite.toml", "verdict.json"
#: An audit folder (bench audit): the claim, the protocols' configuration, then the estimates and the verdict.
AUDIT_JSON = "audit.json"
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def default_run_name() -> str:
    return datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S")


def check_run_name(name: str) -> str:
    if not RUN_NAME_RE.match(name):
        raise BenchError(
            f"invalid run name {name!r}; use letters, digits, '.', '_' or '-' (up to 100 characters, not starting with '.' or '-')"
        )
    return name


def check_writable(folder: Path, option: str) -> Path:
    """Make sure ``folder`` exists (creating it) and is writable, or raise BenchError."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise BenchError(f"{option} {folder} is a file, not a folder; pass a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BenchError(
            f"cannot write to {option} folder {folder} ({exc.strerror or exc}); pass a writable folder with {option}"
        ) from None
    return folder


def check_can_write(folder: Path, option: str) -> Path:
    """Raise the one-line BenchError of :func:`check_writable` unless ``folder`` could be
    made and written, creating nothing: an output location checked before any work, so a
    refused command leaves no folder behind. A folder that exists is written to (a temporary
    file, removed at once); else its nearest existing parent must be a writable folder."""
    folder = Path(folder).expanduser()
    if folder.is_dir():
        return check_writable(folder, option)
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent == folder:
        raise BenchError(f"{option} {folder} is a file, not a folder; pass a folder path")
    if not parent.is_dir():
        raise BenchError(f"cannot write to {option} folder {folder} ({parent} is a file, not a folder); "
                         f"pass a writable folder with {option}")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise BenchError(
            f"cannot write to {option} folder {folder} ({exc.strerror or exc} in {parent}); pass a writable folder "
            f"with {option}"
        ) from None
    return folder


# ------------------------------------------------------------------- reading its files


def read_run_file(path: Path, required: bool = False):
    """A JSON file of a run folder; None when it is absent and not ``required``."""
    path = Path(path)
    if not path.exists() and not required:
        return None
    fix = "the run folder is damaged, re-run or restore the file"
    try:
        return read_json(path, fix)
    except OSError as exc:
        raise BenchError(f"cannot read {path} ({exc}); {fix}") from None


def read_run_table(path: Path, text_columns=PREDICTION_TEXT_COLUMNS):
    """A CSV of a run folder (:func:`bench.tables.read_table`); None when it is absent, an
    empty frame when it is empty."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return None
    try:
        return read_table(path, text_columns=text_columns)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError) as exc:
        raise BenchError(f"cannot read {path} ({exc}); the run folder is damaged, re-run or restore the file") from None


def _with_correct(table):
    if table is not None and len(table) and "correct" in table:
        table["correct"] = table["correct"].astype(str).str.lower().isin(["true", "1"])
    return table


# ------------------------------------------------------------------------ the layout


@dataclass(frozen=True)
class SearchFiles:
    """One search's folder: ``<run>/<backbone>/`` (the final model's) or, in a ``--cv`` run,
    ``<run>/cv/r<R>-f<F>/<backbone>/`` (one outer fold's)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def trials_csv(self) -> Path:
        return self.path / TRIALS_CSV

    @property
    def result_json(self) -> Path:
        return self.path / RESULT_JSON

    @property
    def best_model(self) -> Path:
        return self.path / BEST_MODEL

    @property
    def calibration_json(self) -> Path:
        return self.path / CALIBRATION_JSON

    @property
    def test_predictions_csv(self) -> Path:
        return self.path / TEST_PREDICTIONS

    @property
    def val_predictions_csv(self) -> Path:
        return self.path / VAL_PREDICTIONS

    @property
    def oof_predictions_csv(self) -> Path:
        return self.path / OOF_PREDICTIONS

    @property
    def gradcam_png(self) -> Path:
        return self.path / GRADCAM_PNG

    @property
    def gradcam_json(self) -> Path:
        return self.path / GRADCAM_JSON

    @property
    def tuner(self) -> Path:
        return self.path / TUNER_DIR

    def result(self) -> dict | None:
        return read_run_file(self.result_json)

    def calibration(self) -> dict | None:
        return read_run_file(self.calibration_json)

    def trials(self):
        return read_run_table(self.trials_csv, text_columns=TRIALS_TEXT_COLUMNS)

    def test_predictions(self):
        """test_predictions.csv (``correct`` as booleans); None when absent."""
        return _with_correct(read_run_table(self.test_predictions_csv))

    def oof_predictions(self):
        """oof_predictions.csv (``correct`` as booleans); None when absent."""
        return _with_correct(read_run_table(self.oof_predictions_csv, text_columns=OOF_TEXT_COLUMNS))

    def trial_history(self, trial) -> dict | None:
        """The tuner's ``bench_trial.json`` of ``trial`` (None when absent or no trial)."""
        if trial is None or (isinstance(trial, float) and math.isnan(trial)):
            return None
        path = self.tuner / f"trial_{trial}" / TRIAL_HISTORY
        if not path.exists() and self.tuner.is_dir():
            # trial ids may be zero-padded in folder names but not in a numeric JSON field
            try:
                wanted = int(trial)
            except (TypeError, ValueError):
                return None
            for candidate in sorted(self.tuner.glob(f"trial_*/{TRIAL_HISTORY}")):
                suffix = candidate.parent.name.removeprefix("trial_")
                if suffix.isdigit() and int(suffix) == wanted:
                    path = candidate
                    break
        return read_run_file(path)


@dataclass
class RunFiles:
    """``<out>/<run>/``: where each of its files lives, and their parsed contents."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def dataset_json(self) -> Path:
        return self.path / DATASET_JSON

    @property
    def split_json(self) -> Path:
        return self.path / SPLIT_JSON

    @property
    def folds_json(self) -> Path:
        return self.path / FOLDS_JSON

    @property
    def groups_csv(self) -> Path:
        return self.path / GROUPS_CSV

    @property
    def copies_png(self) -> Path:
        return self.path / COPIES_PNG

    @property
    def content_csv(self) -> Path:
        return self.path / CONTENT_CSV

    @property
    def header_salt(self) -> Path:
        return self.path / HEADER_SALT

    @property
    def leaderboard_csv(self) -> Path:
        return self.path / LEADERBOARD_CSV

    @property
    def leaderboard_json(self) -> Path:
        return self.path / LEADERBOARD_JSON

    def backbone(self, name: str) -> SearchFiles:
        """``<run>/<backbone>/``: the search (and final model) of ``name``."""
        return SearchFiles(self.path / str(name))

    def fold(self, repeat: int, fold: int, backbone: str) -> SearchFiles:
        """``<run>/cv/r<repeat>-f<fold>/<backbone>/``: one outer fold's search in a ``--cv`` run."""
        return SearchFiles(fold_dir(self.path, repeat, fold, backbone))

    def fold_searches(self, backbone: str) -> list[SearchFiles]:
        """Every outer fold's folder of ``backbone`` that exists, in name order."""
        return [SearchFiles(p) for p in sorted((self.path / CV_DIR).glob(f"r*-f*/{backbone}"))]

    @property
    def is_prepared(self) -> bool:
        return self.run_json.is_file()

    @property
    def has_leaderboard(self) -> bool:
        return self.run_json.is_file() and self.leaderboard_json.is_file()

    def read_run_json(self) -> dict:
        return read_run_file(self.run_json, required=True)

    def read_split(self) -> dict | None:
        return read_run_file(self.split_json)

    def read_dataset(self) -> dict | None:
        return read_run_file(self.dataset_json)

    def read_folds(self) -> dict | None:
        return read_run_file(self.folds_json)

    def read_leaderboard(self) -> list[dict]:
        return read_run_file(self.leaderboard_json, required=True)

    def finished(self) -> "FinishedRun":
        """The folder with its run.json, split.json, dataset.json and leaderboard.json read;
        one-line errors when it is not a run folder with at least one finished backbone."""
        if not self.path.is_dir():
            raise BenchError(f"run folder {self.path} does not exist; pass a folder written by `bench run`, "
                             "e.g. results/<run>")
        if not self.run_json.is_file():
            raise BenchError(f"{self.path} is not a run folder (no run.json); pass a folder written by `bench run`, "
                             "e.g. results/<run>")
        if not self.leaderboard_json.is_file():
            raise BenchError(f"{self.path} has no leaderboard.json: no backbone has finished yet; "
                             f"finish it with `bench run --resume --name {self.name}`")
        return FinishedRun(self.path, self.read_run_json(), self.read_split() or {}, self.read_dataset() or {},
                           self.read_leaderboard())


@dataclass
class FinishedRun(RunFiles):
    """A run folder with the files every later stage reads: ``run.json``, ``split.json``,
    ``dataset.json`` and ``leaderboard.json`` (the report, export, predict, Grad-CAM and
    the Streamlit app all read a run through :func:`read_run`)."""

    run: dict
    split: dict
    dataset: dict
    leaderboard: list[dict]

    @property
    def config(self) -> dict:
        return self.run.get("config", {})

    @property
    def classes(self) -> list[str]:
        return list(self.split.get("classes") or self.dataset.get("classes") or [])

    def ranked(self) -> list[dict]:
        """Rows of backbones that finished with a result and a saved model, best rank first."""
        ok = [r for r in self.leaderboard if r.get("status") == "ok" and r.get("rank") is not None
              and self.backbone(str(r.get("backbone"))).best_model.is_file()]
        return sorted(ok, key=lambda r: r["rank"])


def read_run(run_dir: Path) -> FinishedRun:
    """Read a run folder that has at least one finished backbone; one-line errors otherwise."""
    return RunFiles(run_dir).finished()


def fold_dir(run_dir: Path, repeat: int, fold: int, backbone: str) -> Path:
    """Where one outer fold's search of ``backbone`` writes in a ``--cv`` run:
    ``<run>/cv/r<repeat>-f<fold>/<backbone>/``."""
    return Path(run_dir) / CV_DIR / f"r{repeat}-f{fold}" / backbone


@dataclass
class RunsFolder:
    """A folder of ordinary run folders, one per part (a suite's datasets, an audit's
    protocols), with a state file (:attr:`STATE`) that lists the finished parts."""

    path: Path  # <out>/<name>
    reports: Path  # <reports>/<name>: its own report and each part's report folder
    STATE = ""  # the state file's name, set by each kind

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state_file(self) -> Path:
        return self.path / self.STATE

    def state(self) -> dict:
        return read_json(self.state_file, f"restore {self.state_file} or start anew with another --name")

    def finished(self) -> list[str]:
        return list(self.state().get("finished", []))

    def mark_finished(self, part: str) -> None:
        state = self.state()
        state["finished"] = [*state.get("finished", []), part]
        write_json_atomic(self.state_file, state)

    def run_dir(self, part: str) -> Path:
        return self.path / part


def is_suite_dir(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``bench suite``."""
    return (Path(path) / SUITE_JSON).is_file()


def is_audit_dir(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``bench audit``."""
    return (Path(path) / AUDIT_JSON).is_file()


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run folder with a leaderboard (finished or partly finished)."""
    return RunFiles(path).has_leaderboard
