"""The verdict across a suite's datasets: ``verdict.json`` and ``leaderboard.csv`` in the suite folder.

Each dataset contributes its run's held-out estimate of each backbone
(:mod:`bench.evaluate.suite_table`); :func:`bench.evaluate.across_datasets.compare_across`
ranks them per dataset and tests the ranking across datasets. The suite report
(:mod:`bench.report.suite_report`) and ``bench leaderboard`` read these two files only.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from bench.atomic import write_json_atomic
from bench.errors import BenchError
from bench.evaluate.suite_table import verdict_rows
from bench.runfolder import LEADERBOARD_CSV, VERDICT_JSON
from bench.schema import is_floor
from bench.suite.floor import dataset_floor, floor_sentence
from bench.tables import write_csv

log = logging.getLogger("bench")


def write_verdict(suite, rope: float) -> dict:
    """Compare the suite's finished datasets; write and return ``verdict.json``'s content."""
    from bench.evaluate.across_datasets import compare_across, json_ready
    from bench.evaluate.suite_table import estimates_frame, models_of, read_dataset, replicates

    finished = set(suite.finished())
    datasets = [d for d in suite.spec.datasets if d.name in finished]
    if not datasets:
        raise BenchError(f"suite {suite.name} has no finished dataset yet; continue it with "
                         f"`bench suite --resume --name {suite.name}`")
    log.info(f"suite {suite.name}: comparing {len(datasets)} datasets (group bootstrap within each)")
    results = [read_dataset(d.name, suite.run_dir(d.name)) for d in datasets]
    shared = suite.spec.shared.get("backbones")
    models = models_of(results, [shared] if isinstance(shared, str) else list(shared or []))
    scores = np.array([[ds.oriented(m) for m in models] for ds in results], dtype=float)
    reps = [replicates(ds, models) for ds in results]
    seed = int(suite.spec.shared.get("seed", 0) or 0)
    across = compare_across([ds.name for ds in results], models, scores, rope=rope, replicates=reps, seed=seed)
    frame = estimates_frame(results, models)
    frame.insert(2, "kind", "backbone")
    frame["rank"] = [across.ranks[i, j] for i in range(len(results)) for j in range(len(models))]
    frame["mean_rank"] = [across.mean_ranks[j] for _ in results for j in range(len(models))]
    floors = [dataset_floor(ds) for ds in results]
    best = models[int(np.argsort(across.mean_ranks, kind="stable")[0])] if models else None
    write_csv(suite.path / LEADERBOARD_CSV, pd.concat([frame, _floor_frame(results)], ignore_index=True))
    verdict = {
        "suite": suite.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rope": rope,
        "datasets": [{"name": ds.name, "path": str(d.path), "metric": ds.metric, "estimate": ds.metric_label,
                      "maximise": ds.maximise, "classes": ds.classes, "source": ds.source.name,
                      "objective": ds.objective} for ds, d in zip(results, datasets)],
        "models": models,
        "estimates": json_ready(frame.to_dict("records")),
        "across": across.as_dict(),
        "sentence": across.verdict,
        "floor": json_ready(floors),
        "floor_sentence": floor_sentence(floors, best) if best is not None else "",
        "unfinished": [d.name for d in suite.spec.datasets if d.name not in finished],
    }
    write_json_atomic(suite.path / VERDICT_JSON, verdict)
    return verdict


def _floor_frame(results) -> pd.DataFrame:
    """The floor baselines' rows of the suite's leaderboard.csv: every dataset's, never ranked."""
    from bench.evaluate.suite_table import estimates_frame

    parts = []
    for ds in results:
        names = [m for m, row in ds.rows.items() if is_floor(row)]
        if names:
            parts.append(estimates_frame([ds], names).assign(kind="floor", rank=np.nan, mean_rank=np.nan))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def format_suite_table(verdict: dict) -> str:
    """Datasets x backbones: each cell the estimate with its interval and the rank on that
    dataset; a last row with each backbone's mean rank."""
    from tabulate import tabulate

    floor = ["best floor baseline"] if verdict.get("floor") else []
    return tabulate(verdict_rows(verdict), headers=["dataset", "estimate", *verdict["models"], *floor],
                    disable_numparse=True)
