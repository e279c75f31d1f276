"""The model card's YAML front matter (Hugging Face ``model-index`` layout): it parses,
carries the leaderboard's own numbers with their intervals, and says which estimate each is."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # the test extra installs PyYAML; bench writes the YAML itself

from bench.deploy.model_index import INDEX_METRICS, to_yaml  # noqa: E402
from bench.schema import Estimate, Source  # noqa: E402


def _card(run: Path) -> str:
    from bench.deploy.model_card import model_card
    from bench.deploy.run_info import run_info

    return model_card(run_info(run), {"decision_rule": "tumour when P(tumour) >= threshold", "threshold": 0.5},
                      ["keras"], {"run": False, "reason": "test"})


def front_matter(card: str) -> tuple[dict, str]:
    """The card's metadata (parsed) and the Markdown after it."""
    assert card.startswith("---\n")
    head, _, body = card[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def _check_metrics(result: dict, row: dict, source: Source, estimate: str) -> None:
    assert result["task"] == {"type": "image-classification", "name": "Image Classification"}
    assert result["dataset"]["split"] == estimate and result["dataset"]["type"] == "imagefolder"
    listed = {m["type"]: m for m in result["metrics"]}
    expected = [n for n in INDEX_METRICS if not Estimate.read(row, n, source).missing]
    assert list(listed) == [{"brier": "brier_score"}.get(n, n) for n in expected]
    for name in expected:
        e, m = Estimate.read(row, name, source), listed[{"brier": "brier_score"}.get(name, name)]
        assert m["value"] == e.value and m["estimate"] == estimate  # the leaderboard's number, unrounded
        assert m["ci_low"] == e.low and m["ci_high"] == e.high and m["ci_low"] <= m["value"] <= m["ci_high"]
        assert m["ci_level"] == 0.95 and "bootstrap" in m["ci_method"] and m["n"] == row[f"{source.prefix}n"]
        assert m["name"].startswith(estimate)


def test_single_split_card_front_matter_carries_the_test_estimates_with_intervals(tmp_path):
    from test_report import make_run

    run = make_run(tmp_path)
    (run / "alpha" / "best_model.keras").write_bytes(b"not a model")
    meta, body = front_matter(_card(run))
    row = json.loads((run / "leaderboard.json").read_text())[0]
    assert meta["library_name"] == "keras" and meta["pipeline_tag"] == "image-classification"
    (entry,) = meta["model-index"]
    assert entry["name"] == "handmade-alpha" and len(entry["results"]) == 1
    result = entry["results"][0]
    assert result["dataset"] == {"name": "mri", "type": "imagefolder", "split": "test", "revision": "sha256:" + "ab" * 32}
    _check_metrics(result, row, Source.TEST, "test")
    assert body.lstrip().startswith("# Model card: alpha exported from run handmade")


def test_cv_card_front_matter_gives_the_out_of_fold_estimate_then_the_holdout(tmp_path):
    from test_report_cv import make_cv_run

    run = make_cv_run(tmp_path / "results")
    meta, body = front_matter(_card(run))
    row = next(r for r in json.loads((run / "leaderboard.json").read_text()) if r.get("rank") == 1)
    oof, holdout = meta["model-index"][0]["results"]
    _check_metrics(oof, row, Source.OUT_OF_FOLD, "out-of-fold")
    _check_metrics(holdout, row, Source.TEST, "test")
    assert "## Expected performance (cross-validation)" in body


def test_cv_card_without_holdout_lists_only_the_out_of_fold_estimate(tmp_path):
    from test_report_cv import make_cv_run

    run = make_cv_run(tmp_path / "results", {"alpha": 0.5, "beta": 0.3}, holdout=False)
    meta, _ = front_matter(_card(run))
    (only,) = meta["model-index"][0]["results"]
    assert only["dataset"]["split"] == "out-of-fold" and {m["estimate"] for m in only["metrics"]} == {"out-of-fold"}


def test_the_exported_card_starts_with_the_front_matter(tiny_run, tmp_path):
    from bench.deploy.export import export_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    exported = export_run(run, to=tmp_path / "export", formats="keras", check=False)
    meta, body = front_matter((exported.path / "model_card.md").read_text(encoding="utf-8"))
    row = json.loads((run / "leaderboard.json").read_text())[0]
    _check_metrics(meta["model-index"][0]["results"][0], row, Source.TEST, "test")
    assert "## Test metrics" in body and "| accuracy |" in body


def test_the_yaml_writer_round_trips_awkward_values():
    value = {"plain": "a: b # c", "quotes": 'say "hi"\\n', "unicode": "\u00b1 5 \u2013 \u00e9", "empty": [],
             "nothing": {}, "none": None, "flag": True, "int": 3, "float": 0.1 + 0.2, "nan": float("nan"),
             "nested": [{"a": [1, 2], "b": {"c": "-d"}}, "- e", ["x"]], "model-index": [{"name": "n"}]}
    back = yaml.safe_load("\n".join(to_yaml(value)))
    assert math.isnan(back.pop("nan")) and back == {k: v for k, v in value.items() if k != "nan"}
