"""Grad-CAM: the feature map inside the nested backbone, output shape, a heatmap that is
not constant, the overlay, and the deterministic grid of test images for reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import backbones
from bench.errors import BenchError
from bench.deploy.gradcam import GradCam, feature_layer, gradcam_grid, overlay, pick_examples, upsample
from bench.deploy.export import export_run
from bench.data.images import load_array
from bench.deploy.predict import Predictor
from conftest import noise_image



@pytest.fixture(scope="module")
def predictor(tiny_run, tmp_path_factory) -> Predictor:
    return Predictor.from_export(export_run(tiny_run, to=tmp_path_factory.mktemp("cam") / "m", check=False).path)


def test_heatmap_shape_and_not_constant(predictor):
    image = np.asarray(noise_image(np.random.default_rng(2), 48).resize((56, 40)))  # 40 high, 56 wide
    backbone = next(l for l in predictor.model.layers if isinstance(l, keras.Model) and l.name != "head")
    cams = [predictor.gradcam(image, class_index=k) for k in (0, 1)]
    for k, cam in enumerate(cams):
        assert cam.class_index == k and cam.layer in {layer.name for layer in backbone.layers}
        fmap = backbone.get_layer(cam.layer).output.shape
        assert cam.heatmap.shape == (fmap[1], fmap[2]) and fmap[1] * fmap[2] > 1
        full = cam.heatmap_for(image)
        assert full.shape == (40, 56) and full.dtype == np.float32
        assert 0.0 <= full.min() and full.max() <= 1.0
        np.testing.assert_allclose(cam.probabilities, predictor.probabilities(image), atol=1e-5)
    # A sigmoid model's two class scores have opposite gradients, so the ReLU keeps the
    # positive part of the weighted map for one class and the negative part for the other:
    # a map can be empty (no evidence for that class), but not both, and a non-empty one
    # is normalised to a maximum of 1 and varies over the image.
    shown = [cam for cam in cams if not cam.empty]
    assert shown
    for cam in shown:
        full = cam.heatmap_for(image)
        assert cam.heatmap.max() == pytest.approx(1.0) and full.std() > 1e-3, "the heatmap is constant"
        picture = overlay(image, full)
        assert picture.shape == image.shape and picture.dtype == np.uint8 and not np.array_equal(picture, image)
    assert predictor.gradcam(image).class_index == 1 == predictor.explained_class(cams[0].probabilities)


def test_run_model_and_export_give_the_same_heatmap(predictor, tiny_run):
    data = Path(json.loads((tiny_run / "run.json").read_text())["config"]["data"])
    square = load_array(data / "a" / "img_000.png", 32)
    run_model = keras.saving.load_model(tiny_run / "mobilenet_v2" / "best_model.keras", compile=False)
    from_run = GradCam(run_model)(square.astype("float32"), class_index=1)
    from_export = predictor.gradcam(square, class_index=1)
    assert from_run.layer == from_export.layer
    np.testing.assert_allclose(from_run.heatmap, from_export.heatmap, atol=1e-4)
    # the other class's evidence is a different map
    assert not np.allclose(predictor.gradcam(square, class_index=0).heatmap, from_export.heatmap)


def test_feature_layer_is_the_last_map_with_more_than_one_position():
    record = backbones.get("mobilenet_v2")
    at_64 = record.build(weights=None, image_size=64)
    assert feature_layer(at_64) == at_64.layers[-1].name  # the final 2x2 map
    at_32 = record.build(weights=None, image_size=32)
    name = feature_layer(at_32)
    shape = at_32.get_layer(name).output.shape
    assert at_32.output.shape[1:3] == (1, 1) and shape[1] * shape[2] > 1
    keras.backend.clear_session()


def test_upsample_undoes_the_square_padding():
    heat = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)  # bottom half hot, over the padded square
    tall = upsample(heat, 100, 40)
    assert tall.shape == (100, 40) and tall[:10].mean() < 0.2 and tall[-10:].mean() > 0.8
    wide = upsample(heat, 40, 100)  # a wide image sits in the middle of the square
    assert wide.shape == (40, 100) and 0.2 < wide.mean() < 0.8


def test_pick_examples_is_deterministic():
    table = pd.DataFrame({
        "file": ["a/3", "a/1", "a/2", "b/1", "b/2", "b/3", "a/4"],
        "label": ["a", "a", "a", "b", "b", "b", "a"],
        "prob_a": [0.9, 0.9, 0.2, 0.1, 0.8, 0.95, 0.6],
        "prob_b": [0.1, 0.1, 0.8, 0.9, 0.2, 0.05, 0.4],
        "prediction": ["a", "a", "b", "b", "a", "a", "a"],
    })
    correct, wrong = pick_examples(table, ["a", "b"], per_group=3)
    assert [r["file"] for r in correct] == ["a/1", "b/1", "a/3"]  # round robin by class, ties by file name
    assert [r["file"] for r in wrong] == ["b/3", "a/2", "b/2"]  # most confident mistakes first, ties by file name
    shuffled = table.sample(frac=1.0, random_state=1)
    assert pick_examples(shuffled, ["a", "b"], per_group=3) == (correct, wrong)


def test_gradcam_grid_png_is_deterministic(tiny_run, tmp_path):
    picks = gradcam_grid(tiny_run, tmp_path / "one.png", per_group=3)
    again = gradcam_grid(tiny_run, tmp_path / "two.png", per_group=3)
    assert picks == again and (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()
    table = pd.read_csv(tiny_run / "mobilenet_v2" / "test_predictions.csv")
    n_wrong = int((~table["correct"]).sum())
    n_right = len(table) - n_wrong
    assert [p["group"] for p in picks] == ["correct"] * min(3, n_right) + ["misclassified"] * min(3, n_wrong)
    assert all(p["correct"] == (p["group"] == "correct") for p in picks)
    with Image.open(tmp_path / "one.png") as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_gradcam_grid_needs_the_data(tiny_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    meta = json.loads((run_copy / "run.json").read_text())
    meta["config"]["data"] = str(tmp_path / "gone")
    (run_copy / "run.json").write_text(json.dumps(meta))
    with pytest.raises(BenchError, match="test images of run run are not available"):
        gradcam_grid(run_copy, tmp_path / "g.png")
