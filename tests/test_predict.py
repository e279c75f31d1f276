"""bench predict: files and folders, unreadable files skipped, CSV, Grad-CAM files, and
agreement with the run's own test predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.errors import BenchError
from bench.deploy.export import export_run
from bench.deploy.predict import Predictor, collect_files, predict_paths
from conftest import noise_image



@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    return export_run(tiny_run, to=tmp_path_factory.mktemp("predict") / "model", check=False).path


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Three readable images (RGB non-square, grey, RGBA), a corrupt PNG, a text file."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    noise_image(rng, 48).resize((70, 45)).save(folder / "wide.png")
    noise_image(rng, 40, mode="L").save(folder / "sub" / "grey.jpg", format="JPEG")
    noise_image(rng, 36, mode="RGBA").save(folder / "alpha.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"ignored")
    return folder


def test_folder_with_a_corrupt_file(exported, mixed_folder, tmp_path, caplog):
    caplog.set_level("INFO", logger="bench")
    result = predict_paths(exported, [mixed_folder], csv=tmp_path / "out.csv")
    names = [Path(r.file).name for r in result.rows]
    assert names == ["alpha.png", "grey.jpg", "wide.png"]  # sorted paths: sub/grey.jpg after alpha.png
    assert {Path(f).name for f, _ in result.skipped} == {"corrupt.png", "notes.txt"}
    assert all(any(Path(f).name in m for m in caplog.messages) for f, _ in result.skipped)
    for row in result.rows:
        assert row.label in ("a", "b") and 0.0 <= row.probability <= 1.0
        assert row.probability == pytest.approx(row.probabilities[row.label])
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    lines = result.lines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 3 for line in lines)
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table.columns) == ["file", "label", "probability", "prob_a", "prob_b"]
    assert [Path(f).name for f in table["file"]] == names


def test_nothing_readable_is_an_error(exported, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    with pytest.raises(BenchError, match=r"no image could be predicted \(2 file\(s\) skipped"):
        predict_paths(exported, [tmp_path / "bad", tmp_path / "missing.png"])


def test_threshold_rule_decides_binary_labels(exported):
    predictor = Predictor.from_export(exported)
    t = predictor.threshold
    assert t is not None
    assert predictor.decide(np.array([1 - t, t])) == ("b", pytest.approx(t))
    below = np.nextafter(np.float32(t), np.float32(0))
    assert predictor.decide(np.array([1 - below, below]))[0] == "a"


def test_predictions_match_the_runs_test_predictions(exported, tiny_run):
    run = json.loads((tiny_run / "run.json").read_text())
    root = Path(run["config"]["data"])
    expected = pd.read_csv(tiny_run / "mobilenet_v2" / "test_predictions.csv")
    result = predict_paths(exported, [root / f for f in expected["file"]])
    assert [r.label for r in result.rows] == expected["prediction"].tolist()
    got = np.array([[r.probabilities["a"], r.probabilities["b"]] for r in result.rows])
    np.testing.assert_allclose(got, expected[["prob_a", "prob_b"]].to_numpy(), atol=1e-4)


def test_gradcam_files_match_image_sizes(exported, mixed_folder, tmp_path):
    result = predict_paths(exported, [mixed_folder / "wide.png", mixed_folder / "alpha.png"], gradcam_dir=tmp_path / "cams",
                           csv=tmp_path / "p.csv")
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["alpha_gradcam.png", "wide_gradcam.png"]
    with Image.open(tmp_path / "cams" / "wide_gradcam.png") as im:
        assert im.size == (70, 45) and im.mode == "RGB"
    assert pd.read_csv(tmp_path / "p.csv")["gradcam"].notna().all()
    assert all(Path(r.gradcam).is_file() for r in result.rows)


def test_run_folder_is_refused_with_the_fix(tiny_run):
    with pytest.raises(BenchError, match="run folder: export it first with `bench export"):
        Predictor.from_export(tiny_run)
    # while the app may load a run folder directly (in memory, nothing written)
    predictor = Predictor.load(tiny_run)
    assert predictor.classes == ["a", "b"] and not (tiny_run / "export").exists()


def test_collect_files(tmp_path, mixed_folder):
    files, missing = collect_files([mixed_folder, mixed_folder / "wide.png", tmp_path / "nope"])
    assert [f.name for f in files] == ["alpha.png", "corrupt.png", "notes.txt", "grey.jpg", "wide.png"]
    assert missing == [(str(tmp_path / "nope"), "not found")]


def _cli_has(name: str) -> bool:
    from bench.cli import app

    return any((c.name or c.callback.__name__) == name for c in app.registered_commands)


@pytest.mark.skipif(not _cli_has("predict"), reason="`bench predict` is not wired into bench/cli.py yet")
def test_cli_predict(exported, mixed_folder, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["predict", str(exported), str(mixed_folder), "--csv", str(tmp_path / "o.csv")])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if "\t" in line]) == 3
    assert "corrupt.png" in result.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    nothing = CliRunner().invoke(app, ["predict", str(exported), str(tmp_path / "bad")])
    assert nothing.exit_code == 2 and "no image could be predicted" in nothing.stderr


def test_operating_points_pick_the_validation_thresholds_from_labels_json(exported, tiny_run):
    labels = json.loads((exported / "labels.json").read_text())
    points = labels["operating_points"]
    assert set(points) == {"youden", "sensitivity", "specificity"}
    assert points["youden"]["threshold"] == labels["threshold"]
    assert labels["calibration"]["temperature"] > 0
    fitted = json.loads((tiny_run / "mobilenet_v2" / "calibration.json").read_text())
    for name, point in points.items():
        predictor = Predictor.from_export(exported, operating_point=name)
        assert predictor.threshold == point["threshold"] == fitted["operating_points"][name]["threshold"]
    # the sensitivity point never asks for more evidence than the specificity point
    assert points["sensitivity"]["threshold"] <= points["specificity"]["threshold"]


def test_operating_point_errors_are_one_line(exported, mixed_folder, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    bad = CliRunner().invoke(app, ["predict", str(exported), str(mixed_folder), "--operating-point", "cheapest"])
    assert bad.exit_code == 2 and "unknown --operating-point 'cheapest'" in bad.output
    assert "Traceback" not in bad.output
    old = tmp_path / "old_export"
    old.mkdir()
    for f in exported.iterdir():
        if f.is_file():
            (old / f.name).write_bytes(f.read_bytes())
    labels = json.loads((old / "labels.json").read_text())
    del labels["operating_points"]
    (old / "labels.json").write_text(json.dumps(labels))
    stale = CliRunner().invoke(app, ["predict", str(old), str(mixed_folder), "--operating-point", "sensitivity"])
    assert stale.exit_code == 2 and "no 'sensitivity' operating point" in stale.output
    ok = CliRunner().invoke(app, ["predict", str(exported), str(mixed_folder), "--operating-point", "specificity"])
    assert ok.exit_code == 0 and len(ok.stdout.strip().splitlines()) == 3
