"""``bench evaluate``: an export on an external folder, the overlap check (exact, mirrored and
contrast-changed copies of the run's images are found and excluded), class checks,
test-time augmentation, and what is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from bench.cli import app
from bench.deploy.export import export_run
from bench.deploy.predict import Predictor
from conftest import noise_image



@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    return export_run(tiny_run, to=tmp_path_factory.mktemp("evaluate") / "model", check=False).path


@pytest.fixture(scope="module")
def external(tiny_run, tmp_path_factory) -> Path:
    """New images of both classes, plus copies of three of the run's own images: an exact
    copy, a mirrored one and a contrast-changed one."""
    data = json.loads((tiny_run / "run.json").read_text())["config"]["data"]
    root = tmp_path_factory.mktemp("external") / "hospital_b"
    rng = np.random.default_rng(77)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            noise_image(rng, 48).save(root / label / f"new_{i}.png")
    shutil.copy(Path(data) / "a" / "img_000.png", root / "a" / "exact_copy.png")
    ImageOps.mirror(Image.open(Path(data) / "b" / "img_001.png")).save(root / "b" / "mirrored_copy.png")
    Image.open(Path(data) / "a" / "img_002.png").point(lambda v: min(255, round(v * 1.25))).save(
        root / "a" / "contrast_copy.png")
    return root


COPIES = {"a/exact_copy.png": "exact", "b/mirrored_copy.png": "mirrored/rotated", "a/contrast_copy.png": "re-processed"}


def test_overlap_is_found_listed_and_excluded(exported, external, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(exported), str(external), "--out", str(out), "--tta", "flip"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "evaluation.json").read_text())
    found = {r["file"]: r["kind"] for r in evaluation["overlap"]["rows"]}
    assert found == COPIES
    assert "overlap with the run's images: 3" in result.output and "excluded" in result.output
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == evaluation["evaluated"]["n"] == 16
    assert not set(COPIES) & set(predictions["file"])
    # test-time augmentation: the mean of the image's and its mirror image's probabilities
    predictor = Predictor.from_export(exported)
    image = np.asarray(Image.open(external / predictions["file"][0]).convert("RGB"))
    plain, mirrored = predictor.probabilities(image), predictor.probabilities(image[:, ::-1])
    assert predictions["prob_b"][0] == pytest.approx(plain[1], abs=1e-6)
    assert predictions["tta_prob_b"][0] == pytest.approx((plain[1] + mirrored[1]) / 2, abs=1e-6)
    for key in ("plain", "tta"):
        res = evaluation["results"][key]
        assert res["metrics"]["n"] == 16 and res["metrics"]["ci_unit"] == "group"
        assert set(res["operating_points"]) == {"youden", "sensitivity", "specificity"}
        assert "ece_ci_low" in res["calibration"]
    assert (out / "evaluation.html").is_file() and (out / "evaluation.md").is_file()


def test_keep_overlap_keeps_and_marks_the_copies(exported, external, tmp_path):
    out = tmp_path / "kept"
    result = CliRunner().invoke(app, ["evaluate", str(exported), str(external), "--out", str(out), "--keep-overlap"])
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    marked = dict(zip(predictions["file"], predictions["overlap"]))
    assert len(predictions) == 19 and all(marked[f] == kind for f, kind in COPIES.items())


def test_a_run_folder_evaluates_its_recommended_model(tiny_run, external, tmp_path):
    out = tmp_path / "from_run"
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), str(external), "--out", str(out)])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["overlap"]["checked"] and len(evaluation["overlap"]["rows"]) == 3


def test_mismatched_classes_are_refused_in_one_line(exported, external, tmp_path):
    renamed = tmp_path / "renamed"
    shutil.copytree(external, renamed)
    (renamed / "b").rename(renamed / "tumour")
    result = CliRunner().invoke(app, ["evaluate", str(exported), str(renamed), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "tumour not among a, b" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x" / "evaluation.json").exists()
    bad_tta = CliRunner().invoke(app, ["evaluate", str(exported), str(external), "--tta", "rotate"])
    assert bad_tta.exit_code == 2 and "unknown --tta 'rotate'" in bad_tta.output


def test_a_given_scan_of_the_data_is_used_as_is(exported, external, tmp_path, monkeypatch):
    """Several models scored on one folder: the caller's scan (copy features and links
    inside) serves each evaluation, and the folder is not scanned again."""
    import bench.data.scan
    from bench.deploy.external import evaluate_external

    index = bench.data.scan.scan(external, copies=True)
    monkeypatch.setattr(bench.data.scan, "scan", lambda *a, **k: pytest.fail("the data was scanned again"))
    first = evaluate_external(exported, external, tmp_path / "one", index=index)
    second = evaluate_external(exported, external, tmp_path / "two", index=index)
    for evaluation in (first, second):
        assert {r["file"]: r["kind"] for r in evaluation["overlap"]["rows"]} == COPIES
        assert evaluation["evaluated"]["n"] == 16
    assert first["results"]["plain"]["metrics"] == second["results"]["plain"]["metrics"]
