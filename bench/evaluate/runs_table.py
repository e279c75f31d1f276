"""``bench leaderboard RESULTS_DIR...``: every backbone of every run in one table.

Each argument is a run folder or a folder of run folders (``results/``). One row per
backbone of each finished run: the run's name, data hash, split seed, image size,
weights, design (single split or K-fold CV), the objective, and the headline metrics with
their 95 % intervals: test metrics for a single split, out-of-fold (CV) metrics for a
``--cv`` run (which also keeps its holdout test metrics when it has one). Runs on
different data (another data hash) are **flagged**, never mixed silently: rows carry a
``data`` letter (A, B, ...) and the table warns when there is more than one. Rows whose
numbers come from different kinds of estimate (test vs CV) say so in ``estimate``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.schema import BACKBONE_KIND, FLOOR_KIND, Source, metric_with_ci, to_float
from bench.runfolder import SUITE_JSON, VERDICT_JSON, is_audit_dir, is_run_dir, is_suite_dir, read_run

#: Metrics the table shows (each with its CI), in order.
METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "f1", "recall", "specificity", "brier")
#: Columns ``--sort`` accepts besides the metrics.
SORT_KEYS = ("run", "backbone", "objective_value", "mean_rank", *METRICS)


def run_folders(paths: list[Path]) -> list[Path]:
    """The run folders named by ``paths`` (a run folder, or a folder holding run folders)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if is_run_dir(path):
            found.append(path)
        elif is_suite_dir(path):  # a suite folder: each dataset's run folder, in the suite's order
            found.extend(path / d["name"] for d in _read_json(path / SUITE_JSON)["spec"]["datasets"]
                         if is_run_dir(path / d["name"]))
        elif is_audit_dir(path):  # an audit folder: its honest and naive run folders
            found.extend(p for p in (path / "honest", path / "naive") if is_run_dir(p))
        elif path.is_dir():
            inner = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
            if not inner:
                raise BenchError(f"{path} holds no finished run folder (run.json and leaderboard.json); "
                                 "pass run folders or the --out folder of bench run")
            found.extend(inner)
        else:
            raise BenchError(f"{path} does not exist; pass run folders or the --out folder of bench run")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise BenchError("no run folders given; pass run folders or the --out folder of bench run")
    return unique


def rows_of(run_dir: Path) -> list[dict]:
    """One row per backbone of a run, with the run's settings and the headline metrics."""
    run = read_run(run_dir)
    config = run.config
    cv = bool(config.get("cv"))
    suite = _suite_ranks(Path(run_dir))
    out = []
    for r in run.leaderboard:
        prefix = "cv_" if cv else "test_"
        row = {
            "run": run.name, "backbone": r.get("backbone"), "kind": r.get("kind") or BACKBONE_KIND, "status": r.get("status"),
            "rank": r.get("rank"), "data_hash": run.run.get("data_hash"), "seed": config.get("seed"),
            "image_size": r.get("image_size") or config.get("image_size"),
            "weights": r.get("weights") or config.get("weights"),
            "design": f"{config.get('cv')}-fold CV" + (f" x {config.get('repeats')}" if (config.get("repeats") or 1) > 1
                                                       else "") if cv else "single split",
            "estimate": "out-of-fold" if cv else "test",
            "objective": r.get("objective") or config.get("objective"),
            "objective_value": r.get("cv_objective") if cv else r.get("val_objective"),
        }
        for metric in METRICS:
            for suffix in ("", "_ci_low", "_ci_high"):
                row[f"{metric}{suffix}"] = r.get(f"{prefix}{metric}{suffix}")
        if suite is not None:
            row.update(suite.get(r.get("backbone"), {"suite": suite["_name"]}))
        out.append(row)
    return out


def _suite_ranks(run_dir: Path) -> dict | None:
    """Backbone -> suite name, its rank on this dataset and its mean rank across the
    suite's datasets, when ``run_dir`` is a dataset of a suite with a verdict; else None."""
    verdict_path = run_dir.parent / VERDICT_JSON
    if not is_suite_dir(run_dir.parent) or not verdict_path.is_file():
        return None
    verdict = _read_json(verdict_path)
    mean = dict(zip(verdict["models"], verdict["across"]["mean_ranks"]))
    out: dict = {"_name": run_dir.parent.name}
    for row in verdict["estimates"]:
        if row["dataset"] == run_dir.name:
            out[row["backbone"]] = {"suite": run_dir.parent.name, "suite_rank": row.get("rank"),
                                    "mean_rank": mean.get(row["backbone"])}
    return out


def _read_json(path: Path) -> dict:
    from bench.atomic import read_json

    return read_json(path)


def cross_run_table(paths: list[Path], sort: str = "roc_auc") -> pd.DataFrame:
    """Every backbone of every run under ``paths``, best first by ``sort`` (Brier: lowest
    first; run/backbone: alphabetical), with a ``data`` letter per distinct data hash."""
    if sort not in SORT_KEYS:
        raise BenchError(f"unknown --sort {sort!r}; choose one of: {', '.join(SORT_KEYS)}")
    rows = [row for folder in run_folders(paths) for row in rows_of(folder)]
    table = pd.DataFrame(rows)
    letters = {h: chr(ord("A") + k) for k, h in enumerate(dict.fromkeys(table["data_hash"]))}
    table.insert(2, "data", [letters[h] for h in table["data_hash"]])
    if sort not in table:
        raise BenchError(f"--sort {sort} needs a suite folder (bench suite); sort these runs by another key")
    ascending = sort in ("run", "backbone", "brier", "mean_rank")
    key = table[sort].map(lambda v: to_float(v) if sort not in ("run", "backbone") else v)
    order = key.sort_values(ascending=ascending, na_position="last", kind="stable").index
    return table.loc[order].reset_index(drop=True)


def mixed_data_warning(table: pd.DataFrame) -> str | None:
    """A line when the runs were made on different data (their scores are not comparable)."""
    hashes = table.drop_duplicates("data")[["data", "data_hash"]].sort_values("data")
    if len(hashes) < 2:
        return None
    names = "; ".join(f"{r.data} = {str(r.data_hash)[:12]}" for r in hashes.itertuples())
    text = (f"WARNING: these runs used {len(hashes)} different datasets ({names}): compare rows only within one "
            "data letter")
    if "mean_rank" in table:
        text += "; a suite's 'suite rank' (on that dataset) and 'mean rank' (across its datasets) compare backbones"
    return text


def display_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells for the terminal and Markdown tables."""
    headers = ["run", "backbone", "data", "design", "weights", "px", "seed", "objective", "estimate",
               *(m.replace("_", " ") + " [95% CI]" for m in METRICS)]
    suite = "mean_rank" in table
    if suite:
        headers[3:3] = ["suite rank", "mean rank"]
    cells = []
    for r in table.to_dict(orient="records"):
        ranks = [_rank(r.get("suite_rank")), _rank(r.get("mean_rank"), 2)] if suite else []
        value = to_float(r.get("objective_value"))
        cells.append([
            str(r["run"]), str(r["backbone"]) + (" (floor)" if r.get("kind") == FLOOR_KIND else "")
            + ("" if r.get("status") == "ok" else f" ({r.get('status')})"),
            r["data"], *ranks, r["design"], str(r["weights"]), str(r["image_size"]), str(r["seed"]),
            (f"{r['objective']}{' (CV)' if r['estimate'] == 'out-of-fold' else ''} {value:.3f}"
             if not math.isnan(value) else str(r["objective"])), r["estimate"],
            *(metric_with_ci(r, m, source=Source.PLAIN) for m in METRICS),
        ])
    return headers, cells


def _rank(value, digits: int = 1) -> str:
    value = to_float(value)
    return "-" if math.isnan(value) else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def format_table(table: pd.DataFrame, fmt: str = "simple") -> str:
    from tabulate import tabulate

    headers, cells = display_rows(table)
    text = tabulate(cells, headers=headers, tablefmt=fmt, disable_numparse=True)
    warning = mixed_data_warning(table)
    return text if warning is None else f"{warning}\n\n{text}"


def write_table_files(table: pd.DataFrame, csv: Path | None, md: Path | None) -> list[Path]:
    """``bench leaderboard --csv/--md``: the table as CSV (every column; text cells quoted as
    :mod:`bench.tables` does) and as Markdown; the paths written."""
    from bench.atomic import write_text_atomic
    from bench.tables import csv_text

    written = []
    for path, text in ((csv, csv_text(table) if csv else None), (md, format_table(table, "pipe") + "\n" if md else None)):
        if path is None:
            continue
        try:
            write_text_atomic(Path(path), text)
        except OSError as exc:
            raise BenchError(f"cannot write {path} ({exc.strerror or exc}); pass a writable path") from None
        written.append(Path(path))
    return written
