"""The run folder: ``<out>/<run>/`` with run.json, dataset.json, split.json and later the
search results. Every file is written atomically (temp file in the same folder, then
rename), so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

from bench.errors import BenchError

#: The run folder's files, named once. ``<run>/``: run.json (how the run started: its
#: configuration, command, versions; written last when preparing, so it marks a prepared
#: folder), dataset.json (the scan), split.json (and folds.json with ``--cv``), groups.csv,
#: leaderboard.csv/.json; ``<run>/<backbone>/`` (or ``<run>/cv/r<R>-f<F>/<backbone>/``):
#: trials.csv, result.json, best_model.keras, the held-out predictions.
RUN_JSON = "run.json"
DATASET_JSON = "dataset.json"
SPLIT_JSON = "split.json"
FOLDS_JSON = "folds.json"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"
TRIALS_CSV = "trials.csv"
RESULT_JSON = "result.json"
BEST_MODEL = "best_model.keras"
TEST_PREDICTIONS = "test_predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
OOF_PREDICTIONS = "oof_predictions.csv"
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSIONED_PACKAGES = (
    "bench", "tensorflow", "keras", "keras-tuner", "numpy", "pandas", "scikit-learn",
    "scipy", "pillow", "imagehash", "seaborn", "matplotlib", "typer",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never half-written).

    The file gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    # surrogateescape: file names that are not valid UTF-8 round-trip unchanged
    write_bytes_atomic(path, text.encode("utf-8", "surrogateescape"))


def write_json_atomic(path: Path, data) -> None:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline), atomically.

    Non-ASCII text is written as ``\\u`` escapes, so names that are not valid UTF-8
    (lone surrogates after decoding) still make valid JSON and read back unchanged.
    """
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n")


def save_via_temp(path: Path, save) -> None:
    """Atomic write for libraries that save to a path themselves (Keras models, weights).

    ``save(tmp)`` writes a hidden temporary file beside ``path`` with the same name
    (Keras picks the format from the suffix), which is then renamed into place.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    save(tmp)
    tmp.replace(path)


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``<run>/.lock`` holding the PID.

    The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock
    file from a dead process is simply taken over.
    """

    def __init__(self, run_dir: Path, name: str = ".lock") -> None:
        self.path = Path(run_dir) / name
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise BenchError(
                f"run {self.path.parent.name} is in use by process {pid}; wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Block until this process holds an exclusive ``flock`` on ``path`` (created if needed).

    Serialises work that must happen once per run folder (the split, backbone weights,
    feature caches) between processes that share it, e.g. distributed workers.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


#: Text columns of the per-image CSVs bench writes (test/val predictions).
PREDICTION_TEXT_COLUMNS = ("file", "label", "prediction")


def text_frame(columns: dict):
    """A DataFrame whose column names and text values may hold file or class names that
    are not valid UTF-8.

    pandas' default string dtype (pyarrow) refuses the surrogates that stand for such
    bytes; here names and text columns are plain Python objects, and bench's CSV writers
    encode them back to the original bytes (surrogateescape).
    """
    import pandas as pd

    values = {}
    for i, column in enumerate(columns.values()):
        column = list(column)
        text = any(isinstance(v, (str, list, dict)) for v in column)
        values[i] = pd.Series(column, dtype=object) if text else pd.Series(column)
    frame = pd.DataFrame(values)
    frame.columns = pd.Index(list(columns), dtype=object)
    return frame


def probability_matrix(table, classes) -> "object":
    """(N, n_classes) float array from a prediction table's ``prob_<class>`` columns.

    Column by column: selecting a list of names would build a pandas string index,
    which refuses class names that are not valid UTF-8.
    """
    import numpy as np

    return np.column_stack([np.asarray(table[f"prob_{c}"], dtype=np.float64) for c in classes])


def records_frame(rows: list[dict]):
    """:func:`text_frame` from records (one dict per row; missing keys become NaN)."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    return text_frame({name: [row.get(name, float("nan")) for row in rows] for name in names})


def read_table(path: Path, text_columns=PREDICTION_TEXT_COLUMNS):
    """Read a CSV bench wrote; names that are not valid UTF-8 come back unchanged.

    Columns in ``text_columns`` stay text; the others become numbers or booleans where
    every value parses (as ``pandas.read_csv`` would do).
    """
    import pandas as pd

    raw = pd.read_csv(path, header=None, dtype=object, encoding="utf-8", encoding_errors="surrogateescape")
    if raw.empty:
        return pd.DataFrame()
    names = list(raw.iloc[0])
    body = raw.iloc[1:].reset_index(drop=True)
    columns = {}
    for i, name in enumerate(names):
        column = body[i]
        if name not in text_columns:
            present = column.dropna()
            if len(present) and present.isin(["True", "False"]).all():
                column = column.map({"True": True, "False": False})
            else:
                try:
                    column = pd.to_numeric(column)
                except (ValueError, TypeError):
                    pass
        columns[name] = column
    return text_frame(columns)


def library_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def machine_info() -> dict[str, str | int]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 0,
    }


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


# ----------------------------------------------------------------------- a finished run


@dataclass
class FinishedRun:
    """The files every later stage reads from a run folder: ``run.json``, ``split.json``,
    ``dataset.json`` and ``leaderboard.json`` (the report, export, predict, Grad-CAM and
    the Streamlit app all read a run through :func:`read_run`)."""

    path: Path
    run: dict
    split: dict
    dataset: dict
    leaderboard: list[dict]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        return self.run.get("config", {})

    @property
    def classes(self) -> list[str]:
        return list(self.split.get("classes") or self.dataset.get("classes") or [])

    def ranked(self) -> list[dict]:
        """Rows of backbones that finished with a result and a saved model, best rank first."""
        ok = [r for r in self.leaderboard if r.get("status") == "ok" and r.get("rank") is not None
              and (self.path / str(r.get("backbone")) / BEST_MODEL).is_file()]
        return sorted(ok, key=lambda r: r["rank"])


def read_run_file(path: Path, required: bool = False):
    """A JSON file of a run folder; None when it is absent and not ``required``."""
    path = Path(path)
    if not path.exists() and not required:
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path} ({exc}); the run folder is damaged, re-run or restore the file") from None


def read_run(run_dir: Path) -> FinishedRun:
    """Read a run folder that has at least one finished backbone; one-line errors otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"run folder {run_dir} does not exist; pass a folder written by `bench run`, e.g. results/<run>")
    if not (run_dir / RUN_JSON).is_file():
        raise BenchError(f"{run_dir} is not a run folder (no run.json); pass a folder written by `bench run`, "
                         "e.g. results/<run>")
    if not (run_dir / LEADERBOARD_JSON).is_file():
        raise BenchError(f"{run_dir} has no leaderboard.json: no backbone has finished yet; "
                         f"finish it with `bench run --resume --name {run_dir.name}`")
    return FinishedRun(run_dir, read_run_file(run_dir / RUN_JSON, required=True),
                       read_run_file(run_dir / SPLIT_JSON) or {}, read_run_file(run_dir / DATASET_JSON) or {},
                       read_run_file(run_dir / LEADERBOARD_JSON, required=True))


def fold_dir(run_dir: Path, repeat: int, fold: int, backbone: str) -> Path:
    """Where one outer fold's search of ``backbone`` writes in a ``--cv`` run:
    ``<run>/cv/r<repeat>-f<fold>/<backbone>/``."""
    return Path(run_dir) / "cv" / f"r{repeat}-f{fold}" / backbone


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run folder with a leaderboard (finished or partly finished)."""
    return (Path(path) / RUN_JSON).is_file() and (Path(path) / LEADERBOARD_JSON).is_file()
