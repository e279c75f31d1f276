"""Compare two finished runs: identical split.json (and folds.json), every trials.csv
(each backbone's, and each outer fold's with ``--cv``), every held-out prediction file
and the leaderboard values (timing columns aside). Used to check that a refactor changed
structure, not results.

    python benchmarks/same_results.py results/smoke-before results/smoke-after

Exit 0 when they match; prints each difference otherwise.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

#: Columns that measure time (they differ run to run) and the run's own location.
TIMING = {"seconds", "search_seconds", "latency_ms_b1", "latency_ms_b32"}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def compare(before: Path, after: Path) -> list[str]:
    diffs = []
    if (before / "split.json").read_bytes() != (after / "split.json").read_bytes():
        diffs.append("split.json differs")
    if (before / "folds.json").exists() and (before / "folds.json").read_bytes() != (after / "folds.json").read_bytes():
        diffs.append("folds.json differs")
    for table in _tables(before):
        name = table.relative_to(before).as_posix()
        other = after / name
        if not other.exists():
            diffs.append(f"{name} is missing after")
            continue
        a, b = pd.read_csv(table), pd.read_csv(other)
        a, b = a.drop(columns=[c for c in a if c in TIMING]), b.drop(columns=[c for c in b if c in TIMING])
        if list(a.columns) != list(b.columns) or not a.equals(b):
            diffs.append(f"{name} differs")
    rows_a = json.loads((before / "leaderboard.json").read_text())
    rows_b = json.loads((after / "leaderboard.json").read_text())
    if len(rows_a) != len(rows_b):
        diffs.append(f"leaderboard: {len(rows_a)} rows before, {len(rows_b)} after")
    for ra, rb in zip(rows_a, rows_b):
        for key in sorted(set(ra) | set(rb)):
            if key in TIMING:
                continue
            if not _same(ra.get(key), rb.get(key)):
                diffs.append(f"leaderboard {ra.get('backbone')}.{key}: {ra.get(key)!r} -> {rb.get(key)!r}")
    return diffs


def _tables(run: Path) -> list[Path]:
    """Every trials.csv and prediction file of a run, its folds' included (not the export)."""
    names = ("trials.csv", "test_predictions.csv", "val_predictions.csv", "oof_predictions.csv")
    return sorted(p for name in names for p in run.rglob(name) if "export" not in p.relative_to(run).parts)


def main(argv: list[str]) -> int:
    before, after = Path(argv[0]), Path(argv[1])
    diffs = compare(before, after)
    tables = _tables(before)
    trials = [p for p in tables if p.name == "trials.csv"]
    if diffs:
        print("\n".join(diffs))
        return 1
    print(f"identical: split.json, {sum(len(pd.read_csv(p)) for p in trials)} trials in {len(trials)} trials.csv "
          f"files, {len(tables) - len(trials)} prediction files, "
          f"{len(json.loads((before / 'leaderboard.json').read_text()))} leaderboard rows (timing columns aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
