"""Export: the in-model Pillow resize, reload fidelity (Keras, SavedModel, TFLite in a fresh
process), labels, model card, manifest, and refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.deploy.export import export_run
from bench.deploy.model import labels_dict
from bench.deploy.model_card import model_card
from bench.deploy.run_info import run_info
from bench.deploy.verify import KERAS_TOLERANCE, TFLITE_TOLERANCE, _tflite_runner, check_export
from bench.errors import BenchError
from bench.evaluate.calibration import apply_temperature
from bench.layers import SquareResize
from bench.data.images import square_resize
from bench.run import RunConfig, execute, prepare_run
from conftest import make_folder, noise_image

NON_SQUARE = [(60, 40), (36, 54), (48, 30)]


def make_tiny_run(base: Path) -> Path:
    """A tiny finished run (mobilenet_v2, random init, 32 px), built once under ``base``.

    48 px training images, some of them not square, so the model's own padding and
    resizing are exercised. Callers must not change the run folder.
    """
    run_dir = base / "results" / "tiny"
    if (run_dir / "leaderboard.json").is_file():
        return run_dir
    data = make_folder(base / "data", {"a": 12, "b": 12}, size=48, seed=4)
    rng = np.random.default_rng(11)
    for label in ("a", "b"):
        for i, (w, h) in enumerate(NON_SQUARE):
            noise_image(rng, 48).resize((w, h)).save(data / label / f"wide_{i}.png")
    config = RunConfig.from_dict(dict(data=data, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                      out=base / "results", name="tiny", tuner="random", max_trials=1, epochs=2,
                                      max_unfreeze=1, baseline=False))
    execute(prepare_run(config))
    return run_dir



@pytest.fixture(scope="module")
def full_export(tiny_run, tmp_path_factory):
    """All three formats, checked in a fresh process (the expensive part, done once)."""
    out = tmp_path_factory.mktemp("export") / "tiny_all"
    return export_run(tiny_run, to=out, formats="keras,savedmodel,tflite", check=True)


# ------------------------------------------------------------------ resize


@pytest.mark.parametrize("size", [32, 71, 224])
def test_square_resize_layer_is_pillow_bit_for_bit(size):
    rng = np.random.default_rng(size)
    layer = SquareResize(size)
    shapes = [(size, size), (size * 4, size * 4), (3 * size + 1, size), (size // 2, 5), (1, 7), (600, 451)]
    shapes += [tuple(int(v) for v in rng.integers(1, 700, 2)) for _ in range(6)]
    for h, w in shapes:
        smooth = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        for image in (rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.asarray(smooth)):
            expected = square_resize(Image.fromarray(image), size)
            got = np.asarray(layer(image[None]))[0]
            assert got.dtype == np.float32 and got.shape == (size, size, 3)
            np.testing.assert_array_equal(got, expected.astype(np.float32), err_msg=f"{h}x{w} -> {size}")


def test_square_resize_batch_and_serialisation():
    layer = SquareResize(40, name="r")
    clone = SquareResize.from_config(layer.get_config())
    batch = np.random.default_rng(0).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    out = np.asarray(clone(batch))
    for i in range(3):
        np.testing.assert_array_equal(out[i], square_resize(Image.fromarray(batch[i]), 40))


# ----------------------------------------------------------------- fidelity


def test_export_reproduces_the_runs_test_predictions_in_a_fresh_process(full_export, tiny_run):
    checks = full_export.checks
    assert checks["run"] and checks["passed"], checks
    info = run_info(tiny_run)
    assert checks["n_images"] == sum(1 for f in info.split["files"] if f["split"] == "test")
    for fmt, tol in (("keras", KERAS_TOLERANCE), ("savedmodel", KERAS_TOLERANCE), ("tflite", TFLITE_TOLERANCE)):
        res = checks["formats"][fmt]
        assert res["passed"] and res["max_abs_diff"] <= tol and res["label_mismatches"] == 0, (fmt, res)
    # the exact resize makes the Keras export agree far inside its tolerance
    assert checks["formats"]["keras"]["max_abs_diff"] < 1e-5


def test_exported_model_takes_raw_images_of_any_size(full_export, tiny_run):
    model = keras.saving.load_model(full_export.path / "model.keras", compile=False)
    source = keras.saving.load_model(tiny_run / "mobilenet_v2" / "best_model.keras", compile=False)
    fitted = run_info(tiny_run).calibration
    assert fitted["temperature"] != 1.0  # fitted on validation, applied inside the export
    assert model.input.dtype == "uint8" and tuple(model.input.shape[1:]) == (None, None, 3)
    rng = np.random.default_rng(3)
    for h, w in [(32, 32), (90, 40), (17, 200), (300, 301)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        probs = np.asarray(model(image[None]))[0]
        assert probs.shape == (2,) and abs(probs.sum() - 1) < 1e-6
        p = float(np.asarray(source(square_resize(Image.fromarray(image), 32)[None].astype("float32")))[0, 0])
        # the run's model, then the calibration fitted on validation (temperature, class weights)
        want = apply_temperature(np.array([[1 - p, p]]), fitted["temperature"], fitted["class_weights"])[0]
        np.testing.assert_allclose(probs, want, atol=1e-5)


def test_savedmodel_and_tflite_load_without_bench_layers(full_export, tiny_run):
    import tensorflow as tf

    image = np.asarray(Image.open(next((tiny_run.parent.parent / "data" / "a").glob("wide_*.png"))).convert("RGB"))
    keras_probs = np.asarray(keras.saving.load_model(full_export.path / "model.keras")(image[None]))[0]
    served = tf.saved_model.load(str(full_export.path / "saved_model"))
    np.testing.assert_allclose(np.asarray(served.serve(tf.constant(image[None])))[0], keras_probs, atol=KERAS_TOLERANCE)
    run = _tflite_runner(full_export.path / "model.tflite")
    labels = json.loads((full_export.path / "labels.json").read_text())
    assert "tflite_input" in labels
    arr = square_resize(Image.fromarray(image), labels["image_size"])
    np.testing.assert_allclose(run(arr), keras_probs, atol=TFLITE_TOLERANCE)


def test_fidelity_check_fails_when_predictions_differ(full_export, tiny_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    csv = run_copy / "mobilenet_v2" / "test_predictions.csv"
    table = pd.read_csv(csv)
    table.loc[0, "prob_a"] += 0.01
    table.loc[0, "prob_b"] -= 0.01
    table.to_csv(csv, index=False)
    checks = check_export(full_export.path, run_copy, fresh_process=False)
    assert checks["run"] and not checks["passed"]
    assert "keras" in checks["failure"] and table.loc[0, "file"] in checks["failure"]


def test_fidelity_check_is_skipped_without_the_data(full_export, tiny_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    meta = json.loads((run_copy / "run.json").read_text())
    meta["config"]["data"] = str(tmp_path / "gone")
    (run_copy / "run.json").write_text(json.dumps(meta))
    checks = check_export(full_export.path, run_copy, fresh_process=False)
    assert checks == {"run": False, "reason": f"the run's data folder {tmp_path / 'gone'} is not available"}


# -------------------------------------------------------- labels, card, manifest


def test_labels_card_and_manifest(full_export, tiny_run):
    path = full_export.path
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    labels = json.loads((path / "labels.json").read_text())
    assert labels["classes"] == ["a", "b"] and labels["positive_class"] == "b"
    assert labels["threshold"] == pytest.approx(board[0]["test_threshold"])
    assert labels["image_size"] == 32 and labels["backbone"] == "mobilenet_v2"
    card = (path / "model_card.md").read_text()
    assert "not a medical device" in card and "RANDOM INITIALISATION" in card and "SYNTHETIC" not in card
    assert "95% bootstrap confidence intervals" in card and "| accuracy |" in card and "Selection rule" in card
    assert "largest probability difference" in card
    manifest = json.loads((path / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()
    assert manifest["source"]["run_dir"] == str(tiny_run.resolve()) and manifest["source"]["backbone"] == "mobilenet_v2"
    assert manifest["source"]["recommended"] is True and manifest["checks"]["passed"] is True
    assert manifest["versions"]["tensorflow"] and manifest["bench_version"]
    assert not list(path.parent.glob(".*.tmp"))  # the temporary folder was moved into place


def test_model_card_banner_for_synthetic_data(tiny_run):
    info = run_info(tiny_run)
    info.run["synthetic_data"] = True
    card = model_card(info, labels_dict(info), ["keras"], {"run": False, "reason": "test"})
    assert card.index("SYNTHETIC DATA") < card.index("## Model")
    assert "Not run: test." in card


def test_default_location_and_reexport_replaces(tiny_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    first = export_run(run_copy, check=False)
    assert first.path == run_copy / "export" / "mobilenet_v2" and (first.path / "model.keras").is_file()
    manifest = json.loads((first.path / "manifest.json").read_text())
    (first.path / "stale.txt").write_text("old")  # a file an earlier export listed as its own
    manifest["files"]["stale.txt"] = {"sha256": "", "bytes": 3}
    (first.path / "manifest.json").write_text(json.dumps(manifest))
    second = export_run(run_copy, check=False)
    assert second.path == first.path and not (second.path / "stale.txt").exists()
    assert sorted(p.name for p in (run_copy / "export").iterdir()) == ["mobilenet_v2"]


def test_refusals(tiny_run, tmp_path):
    with pytest.raises(BenchError, match="not in run .*choose one of: mobilenet_v2"):
        export_run(tiny_run, backbone="resnet50", to=tmp_path / "x")
    with pytest.raises(BenchError, match="unknown export format 'onnx'"):
        export_run(tiny_run, to=tmp_path / "x", formats="keras,onnx")
    with pytest.raises(BenchError, match="not a run folder"):
        export_run(tmp_path, to=tmp_path / "x")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(BenchError, match="not empty and is not a bench export"):
        export_run(tiny_run, to=taken, check=False)
    assert (taken / "notes.txt").read_text() == "mine"


def test_failed_backbone_is_not_exportable(tiny_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    board = json.loads((run_copy / "leaderboard.json").read_text())
    board.append({"backbone": "resnet50", "status": "failed", "rank": None})
    (run_copy / "leaderboard.json").write_text(json.dumps(board))
    with pytest.raises(BenchError, match="failed or has no best_model.keras.*exportable: mobilenet_v2"):
        export_run(run_copy, backbone="resnet50", check=False)


def _cli_has(name: str) -> bool:
    from bench.cli import app

    return any((c.name or c.callback.__name__) == name for c in app.registered_commands)


@pytest.mark.skipif(not _cli_has("export"), reason="`bench export` is not wired into bench/cli.py yet")
def test_cli_export(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["export", str(tiny_run), "--to", str(tmp_path / "e"), "--no-check"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "model.keras").is_file()
    bad = CliRunner().invoke(app, ["export", str(tiny_run), "--format", "onnx"])
    assert bad.exit_code == 2 and "unknown export format" in bad.output


def test_export_winner_at_the_end_of_a_run(tiny_run, tmp_path, caplog):
    from bench.deploy.export import export_winner

    run_copy = tmp_path / "run"
    shutil.copytree(tiny_run, run_copy, ignore=shutil.ignore_patterns("tuner", "cache", "export"))
    caplog.set_level("INFO", logger="bench")
    result = export_winner(run_copy, check=False)
    assert result.path == run_copy / "export" / "mobilenet_v2"
    grid = json.loads((run_copy / "mobilenet_v2" / "gradcam_grid.json").read_text())
    assert grid["image"] == "gradcam_grid.png" and (run_copy / "mobilenet_v2" / "gradcam_grid.png").is_file()
    assert any("gradcam_grid.png" in m for m in caplog.messages)
    # a run with nothing exportable logs a warning instead of failing the finished run
    (run_copy / "leaderboard.json").write_text("[]")
    assert export_winner(run_copy) is None
    assert caplog.records[-1].levelname == "WARNING" and "not exported" in caplog.records[-1].getMessage()


def test_savedmodel_serving_tta_averages_each_image_and_its_mirror(full_export):
    import tensorflow as tf

    module = tf.saved_model.load(str(full_export.path / "saved_model"))
    image = np.random.default_rng(9).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    plain = np.asarray(module.serve(tf.constant(image)))
    mirrored = np.asarray(module.serve(tf.constant(image[:, :, ::-1].copy())))
    tta = np.asarray(module.serve_tta(tf.constant(image)))
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-6)
    assert "serving_tta" in module.signatures


def test_a_current_export_is_not_redone(tiny_run, tmp_path, caplog):
    from bench.deploy.export import export_winner

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "export", ignore_errors=True)
    first = export_winner(run, check=False)
    manifest = first.path / "manifest.json"
    written = manifest.stat().st_mtime_ns
    caplog.set_level("INFO", logger="bench")
    again = export_winner(run, check=False)  # a resumed, finished run
    assert again.path == first.path and manifest.stat().st_mtime_ns == written
    assert any("is up to date" in m for m in caplog.messages)
    (first.path / "labels.json").write_text("{}")  # a changed file: exported again
    export_winner(run, check=False)
    assert manifest.stat().st_mtime_ns != written and json.loads((first.path / "labels.json").read_text())
