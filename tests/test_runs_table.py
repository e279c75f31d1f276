"""``bench leaderboard``: every backbone of several runs in one table, sorted, with runs on
other data flagged, as terminal text, CSV and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from bench.cli import app
from bench.evaluate.runs_table import cross_run_table, mixed_data_warning


def _run(root: Path, name: str, data_hash: str, rows: list[dict], cv: int | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"name": name, "seed": 3, "image_size": 96, "weights": "none", "objective": "val_auc", "cv": cv,
              "repeats": 1}
    (folder / "run.json").write_text(json.dumps({"config": config, "data_hash": data_hash}))
    (folder / "leaderboard.json").write_text(json.dumps(rows))
    return folder


def _row(backbone: str, auc: float, rank: int | None = 1, prefix: str = "test_", status: str = "ok") -> dict:
    row = {"backbone": backbone, "status": status, "rank": rank, "objective": "val_auc", "val_objective": 0.8}
    if status == "ok":
        row.update({f"{prefix}roc_auc": auc, f"{prefix}roc_auc_ci_low": auc - 0.1, f"{prefix}roc_auc_ci_high": auc + 0.05,
                    f"{prefix}brier": 1 - auc})
    return row


def _results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    _run(root, "r1", "hash-a", [_row("xception", 0.81), _row("resnet50", 0.74, 2), _row("vgg16", 0, None, status="failed")])
    cv_row = {**_row("mobilenet_v2", 0.88, prefix="cv_"), "cv_objective": 0.88}
    _run(root, "r2", "hash-a", [cv_row], cv=5)
    _run(root, "other", "hash-b", [_row("xception", 0.95)])
    return root


def test_rows_of_every_run_sorted_with_other_data_flagged(tmp_path):
    root = _results(tmp_path)
    table = cross_run_table([root])
    assert list(zip(table["run"], table["backbone"])) == [
        ("other", "xception"), ("r2", "mobilenet_v2"), ("r1", "xception"), ("r1", "resnet50"), ("r1", "vgg16")]
    assert dict(zip(table["run"], table["data"])) == {"other": "A", "r1": "B", "r2": "B"}  # folders in name order
    assert table.loc[table["run"] == "r2", "estimate"].item() == "out-of-fold"
    assert table.loc[table["run"] == "r2", "design"].item() == "5-fold CV"
    warning = mixed_data_warning(table)
    assert warning.startswith("WARNING: these runs used 2 different datasets") and "B = hash-a" in warning
    assert mixed_data_warning(cross_run_table([root / "r1", root / "r2"])) is None
    by_brier = cross_run_table([root], sort="brier")  # lower is better
    assert list(by_brier["backbone"][:2]) == ["xception", "mobilenet_v2"] and by_brier["run"][0] == "other"


def test_cli_prints_and_writes_csv_and_markdown(tmp_path):
    root = _results(tmp_path)
    result = CliRunner().invoke(app, ["leaderboard", str(root / "r1"), str(root / "other"), "--sort", "run",
                                      "--csv", str(tmp_path / "all.csv"), "--md", str(tmp_path / "all.md")])
    assert result.exit_code == 0, result.output
    assert "WARNING: these runs used 2 different datasets" in result.stdout
    assert "0.810 [0.71, 0.86]" in result.stdout and "vgg16 (failed)" in result.stdout
    table = pd.read_csv(tmp_path / "all.csv")
    assert list(table["run"]) == ["other", "r1", "r1", "r1"] and "roc_auc_ci_low" in table
    assert (tmp_path / "all.md").read_text().count("| r1 ") == 3


def test_bad_arguments_are_one_line(tmp_path):
    root = _results(tmp_path)
    bad_sort = CliRunner().invoke(app, ["leaderboard", str(root), "--sort", "speed"])
    assert bad_sort.exit_code == 2 and "unknown --sort 'speed'" in bad_sort.output
    missing = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "holds no finished run folder" in empty.output
    assert "Traceback" not in bad_sort.output + missing.output + empty.output
