"""Leaderboard: one flat row per backbone, ranked by the VALIDATION objective.

Test metrics are reported next to the rank, never used to choose it. Floor baselines
(``kind`` floor, :mod:`bench.evaluate.floor`) follow the ranked backbones, ordered by the
same estimate but never ranked: the rank-1 row, the one deployed, is always a backbone.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.config import OBJECTIVES
from bench.schema import BACKBONE_KIND, FLOOR_KIND, Source, ci_columns, column, metric_with_ci, row_source
from bench.atomic import write_json_atomic
from bench.runfolder import RunFiles
from bench.tables import records_frame, write_csv


def source_of(table) -> Source:
    """Where a leaderboard's (table or rows) ranking estimates come from: out of fold in a
    ``--cv`` run, else the test split (:func:`bench.schema.row_source`)."""
    return row_source(table if isinstance(table, pd.DataFrame) else table[0] if table else {})


def rank(rows: list[dict]) -> pd.DataFrame:
    """Rows ordered best first with an integer ``rank`` on backbones that finished: by the
    cross-validation estimate of the objective in a ``--cv`` run, else by the validation
    objective. The test split never decides the rank. Then the floor baselines that
    finished, by the same estimate and without a rank; then every failed row."""
    table = records_frame(rows)
    if table.empty:
        return table
    table["kind"] = table["kind"].fillna(BACKBONE_KIND) if "kind" in table else BACKBONE_KIND
    objective = table["objective"].dropna().iloc[0]
    cv = source_of(table) is Source.OUT_OF_FOLD
    key = "cv_objective" if cv else "val_objective"
    floor = table["kind"] == FLOOR_KIND
    ok = table[(table["status"] == "ok") & ~floor].copy()
    ok_floor = table[(table["status"] == "ok") & floor].copy()
    bad = table[table["status"] != "ok"].copy()
    ascending = OBJECTIVES[objective] == "min"
    if len(ok):
        ok = ok.sort_values(key, ascending=ascending, kind="stable")
    if len(ok_floor) and key in ok_floor:
        ok_floor = ok_floor.sort_values(key, ascending=ascending, kind="stable")
    ok["rank"] = range(1, len(ok) + 1)
    table = pd.concat([ok, ok_floor, bad], ignore_index=True)
    cv_columns = ["cv_objective", "probability_best", *ci_columns(("roc_auc", "accuracy", "f1"), Source.OUT_OF_FOLD)]
    front = ["rank", "backbone", "kind", "status", *(cv_columns if cv else []), "val_objective",
             *ci_columns(("accuracy", "f1", "roc_auc"), Source.TEST),
             column("recall", Source.TEST), column("specificity", Source.TEST)]
    # the rest alphabetically: a row read back from result.json (resume) has its keys sorted
    return table[[c for c in front if c in table] + sorted(c for c in table if c not in front)]


def write_leaderboard(rows: list[dict], run_dir: Path) -> pd.DataFrame:
    table = rank(rows)
    csv = table.copy()
    if "rank" in csv:  # failed rows have no rank: an integer column with blanks, not 1.0
        csv["rank"] = csv["rank"].astype("Int64")
    write_csv(RunFiles(run_dir).leaderboard_csv, csv)
    records = [{k: _clean(v) for k, v in r.items()} for r in table.to_dict(orient="records")]
    for record in records:
        if record.get("rank") is not None:
            record["rank"] = int(record["rank"])
    write_json_atomic(RunFiles(run_dir).leaderboard_json, records)
    return table


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value




def format_leaderboard(table: pd.DataFrame) -> str:
    """The table ``bench run`` prints at the end."""
    rows = []
    for _, r in table.iterrows():
        r = r.to_dict()
        floor = r.get("kind") == FLOOR_KIND
        rows.append([
            "floor" if floor else "" if pd.isna(r.get("rank")) else int(r["rank"]), r["backbone"], r["status"],
            "-" if pd.isna(r.get("val_objective")) else f"{r['val_objective']:.3f}",
            metric_with_ci(r, "accuracy"), metric_with_ci(r, "f1"), metric_with_ci(r, "roc_auc"),
            "-" if floor or pd.isna(r.get("trials_done")) else f"{r['trials_done']:.0f}/{r.get('trials_failed') or 0:.0f}",
            "-" if pd.isna(r.get("search_seconds")) else f"{r['search_seconds']:.0f}",
            "-" if pd.isna(r.get("latency_ms_b1")) else f"{r['latency_ms_b1']:.1f}",
        ])
    objective = table["objective"].dropna().iloc[0] if len(table) else "val"
    headers = ["rank", "backbone", "status", objective, "test acc [95% CI]", "test F1 [95% CI]",
               "test AUC [95% CI]", "trials ok/failed", "search s", "ms/img"]
    if source_of(table) is Source.OUT_OF_FOLD:  # the CV estimates decide; the holdout test (if any) comes after
        headers[3:3] = ["P(best)", "CV acc [95% CI]", "CV F1 [95% CI]", "CV AUC [95% CI]"]
        headers[7] = f"mean inner {objective}"
        for row, (_, r) in zip(rows, table.iterrows()):
            r = r.to_dict()
            best = r.get("probability_best")
            row[3:3] = ["-" if best is None or pd.isna(best) else f"{best:.2f}",
                        *(metric_with_ci(r, m, source=Source.OUT_OF_FOLD) for m in ("accuracy", "f1", "roc_auc"))]
    return tabulate(rows, headers=headers, disable_numparse=True)  # 0.960 stays 0.960
