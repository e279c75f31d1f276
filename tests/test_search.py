"""Search and evaluation: search space, unfreezing, feature cache, test isolation,
failed trials, resume, and an end-to-end run on tiny synthetic data."""

from __future__ import annotations

import json
import os
import time

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest

import backbones
import bench.evaluate.final
import bench.pipeline
import bench.data.loading
import bench.search.cache
import bench.search.source
import bench.search.tuner
from bench.evaluate.final import set_trainable
from bench.search.hypermodel import UNITS, BenchHyperModel, build_head
from bench.run import RunConfig, execute, prepare_run
from conftest import make_folder


@pytest.fixture(autouse=True)
def _clear_keras():
    yield
    keras.backend.clear_session(free_memory=False)  # a full collection would add ~0.3 s a test


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
@pytest.mark.parametrize("dense", [[], [(64, 0.0)], [(128, 0.5), (32, 0.0)]])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_every_head_option_builds(pooling, dense, n_classes):
    head = build_head((3, 3, 16), pooling, dense, n_classes)
    out = head(np.random.rand(4, 3, 3, 16).astype("float32"))
    assert out.shape == (4, 1 if n_classes == 2 else n_classes)
    probs = np.asarray(out)
    assert ((probs >= 0) & (probs <= 1)).all()
    if n_classes > 2:
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert sum(isinstance(layer, keras.layers.Dense) for layer in head.layers) == len(dense) + 1
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in head.layers) == sum(d > 0 for _, d in dense)


def test_search_space_declares_every_choice():
    data = bench.search.hypermodel.TrialData({0: np.zeros((2, 2, 2, 4))}, np.zeros(2, int), {0: np.zeros((2, 2, 2, 4))},
                                      np.zeros(2, int), n_classes=2)
    hm = BenchHyperModel([0, 1, 2], {0: (2, 2, 4)}, data, top_factory=None)
    hp = kt.HyperParameters()
    hp.Fixed("unfreeze", 0)
    hm.build(hp)
    names = {p.name for p in hp.space}
    assert {"unfreeze", "pooling", "dense_layers", "units_0", "dropout_0", "units_1", "dropout_1",
            "learning_rate"} <= names
    pooling = next(p for p in hp.space if p.name == "pooling")
    assert set(pooling.values) == {"avg", "max", "flatten"}
    units = next(p for p in hp.space if p.name == "units_0")
    assert set(units.values) == set(UNITS) and 32 in UNITS and 128 in UNITS  # the notebook's head fits


@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_flatten_heads_take_hidden_layers_only_within_max_head_weights(tmp_path, tuner):
    """Over --max-head-weights, every sampled flatten head is the output layer on the map
    and records dense_layers 0, while pooled heads keep their hidden layers; at the limit
    (the map's values x 256 units) flatten heads take hidden layers again."""
    shape = (2, 2, 4)  # 16 values: the largest hidden layer after flattening is 16 x 256 weights
    data = bench.search.hypermodel.TrialData({0: np.zeros((2, *shape))}, np.zeros(2, int),
                                             {0: np.zeros((2, *shape))}, np.zeros(2, int), n_classes=2)
    oracles = {"random": kt.oracles.RandomSearchOracle, "bayesian": kt.oracles.BayesianOptimizationOracle}
    seen = {}
    for limit in (16 * max(UNITS) - 1, 16 * max(UNITS)):
        hm = BenchHyperModel([0], {0: shape}, data, top_factory=None, max_head_weights=limit)
        space = kt.HyperParameters()
        hm.build(space)
        oracle = oracles[tuner](objective=kt.Objective("score", "max"), max_trials=40, seed=3, hyperparameters=space)
        oracle._set_project_dir(str(tmp_path / f"{tuner}{limit}"), "p")
        heads = []
        for i in range(40):
            trial = oracle.create_trial(str(i))
            values = bench.search.tuner.trial_hyperparameters(trial.hyperparameters.values)
            model = hm.build(trial.hyperparameters)
            hidden = sum(isinstance(layer, keras.layers.Dense) for layer in model.layers) - 1
            assert hidden == values["dense_layers"]
            heads.append((values["pooling"], hidden))
            oracle.update_trial(trial.trial_id, {"score": float(i % 7)})
            oracle.end_trial(trial)
        seen[limit] = heads
    capped, allowed = seen[16 * max(UNITS) - 1], seen[16 * max(UNITS)]
    assert {h for p, h in capped if p == "flatten"} == {0} and any(p == "flatten" for p, _ in capped)
    assert any(h > 0 for p, h in capped if p != "flatten")
    assert any(h > 0 for p, h in allowed if p == "flatten")


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_unfreeze_depth_makes_exactly_the_top_blocks_trainable(name, depth):
    record = backbones.get(name)
    base = record.build(weights=None, image_size=32)
    set_trainable(base, record.cut_layer(depth) if depth else None)
    trainable = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    if depth == 0:
        assert not trainable and not base.trainable_weights
        return
    cut = base.get_layer(record.cut_layer(depth))
    top = keras.Model(cut.output, base.output)
    expected = {layer.name for layer in top.layers if layer.weights}
    assert trainable == expected and expected
    # everything at or below the boundary is frozen
    below = {layer.name for layer in base.layers if layer.weights} - expected
    assert all(not base.get_layer(n).trainable for n in below)


def _tiny_run(tmp_path, counts=None, **overrides):
    """A tiny run of the search; without floor baselines (tests/test_floor.py covers them)."""
    data = make_folder(tmp_path / "data", counts or {"a": 10, "b": 10}, size=48, seed=4)
    config = RunConfig.from_dict({**dict(data=data, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                         out=tmp_path / "results", name="t", tuner="random", max_trials=2, epochs=2,
                                         max_unfreeze=1, baseline=False, floor=False), **overrides})
    return prepare_run(config)


def test_cached_features_match_backbone_output(tmp_path):
    run = _tiny_run(tmp_path)
    record = backbones.get("mobilenet_v2")
    cfg = run.config.search
    source = bench.search.source.source_for(record, "none", 32, run.path, run.index.root, run.split, 0)
    x_train, x_val, y_train, y_val, shapes = bench.search.cache.cached_features(
        source, [0, 1], run.path, run.index.root, run.split, cfg)
    # the backbone's own output: full model on its own preprocessing, image by image
    base = source.base()
    images = bench.data.loading.load_images(run.index.root, run.split.rows("val"), 32)
    exact = np.asarray(base(record.preprocess(images), training=False))
    # float16 storage: relative error <= 2**-11 plus a floor for values near zero
    np.testing.assert_allclose(x_val[0], exact, rtol=2e-3, atol=1e-3 * np.abs(exact).max())
    # the depth-1 cache feeds the top block to the same final features
    top = source.top(1)
    np.testing.assert_allclose(np.asarray(top(x_val[1])), exact, rtol=1e-2, atol=1e-2 * np.abs(exact).max())
    # a second call reads the cache instead of recomputing
    calls = []
    monkey = bench.search.cache.run_prefix
    bench.search.cache.run_prefix = lambda *a, **k: calls.append(1) or monkey(*a, **k)
    try:
        again = bench.search.cache.cached_features(source, [0, 1], run.path, run.index.root, run.split, cfg)
    finally:
        bench.search.cache.run_prefix = monkey
    assert not calls
    np.testing.assert_array_equal(again[1][0], x_val[0])


def _images_read_by_stage(monkeypatch) -> dict[str, list[str]]:
    """The paths of the images bench decodes for a model, in order, before the final stage
    (``"search"``) and from its evaluation on (``"final"``), filled as a run goes."""
    loaded: dict[str, list[str]] = {"search": [], "final": []}
    stage = {"now": "search"}
    real = bench.data.loading._load_row  # every image bench decodes for a model goes through it

    def spy(root, row, size):
        loaded[stage["now"]].append(row["path"])
        return real(root, row, size)

    real_eval = bench.evaluate.final.evaluate_on_test

    def eval_spy(*args, **kwargs):
        stage["now"] = "final"
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(bench.data.loading, "_load_row", spy)
    monkeypatch.setattr(bench.pipeline, "evaluate_on_test", eval_spy)
    return loaded


def test_test_split_is_only_loaded_by_the_final_stage(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path)
    test_paths = {r["path"] for r in run.split.rows("test")}
    loaded = _images_read_by_stage(monkeypatch)
    execute(run)
    assert loaded["search"] and not set(loaded["search"]) & test_paths
    assert test_paths <= set(loaded["final"])


@pytest.mark.parametrize("keep_bytes", [None, 0])
def test_the_deployed_model_predicts_its_val_images_from_the_kept_frozen_features(tmp_path, monkeypatch, keep_bytes):
    """A frozen winner's val predictions come from the caching pass's float32 features, not
    from a second pass over the images; they are the deployed model's own predictions on
    those images. Past the bound on kept features the images go through the model again."""
    if keep_bytes is not None:
        monkeypatch.setattr(bench.search.cache, "KEEP_BYTES", keep_bytes)
    run = _tiny_run(tmp_path, max_unfreeze=0)
    val_paths = {r["path"] for r in run.split.rows("val")}
    loaded = _images_read_by_stage(monkeypatch)
    execute(run)
    again = val_paths & set(loaded["final"])
    assert again == (set() if keep_bytes is None else val_paths)
    assert sorted(loaded["search"]).count(sorted(val_paths)[0]) == 1  # the caching pass read each val image once
    saved = pd.read_csv(run.path / "mobilenet_v2" / "val_predictions.csv").set_index("file")
    deployed = keras.saving.load_model(run.path / "mobilenet_v2" / "best_model.keras", compile=False)
    rows = run.split.rows("val")
    images = bench.data.loading.load_images(run.index.root, rows, 32).astype("float32")
    p = np.asarray(deployed.predict_on_batch(images)).reshape(-1)
    raw = saved.loc[[r["path"] for r in rows], f"raw_prob_{run.split.classes[1]}"].to_numpy()
    np.testing.assert_allclose(raw, p, atol=1e-5)


def test_failed_trial_is_a_row_and_search_goes_on(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path, max_trials=3)
    real_fit = BenchHyperModel.fit_rows
    calls = {"n": 0}

    def flaky_fit(self, hp, **kwargs):  # every trial's head trains in numpy here
        calls["n"] += 1
        if calls["n"] == 2:
            raise kt.errors.FailedTrialError("simulated out of memory")
        return real_fit(self, hp, **kwargs)

    monkeypatch.setattr(BenchHyperModel, "fit_rows", flaky_fit)
    table = execute(run)
    trials = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 3
    failed = trials[trials["status"] == "failed"]
    assert len(failed) == 1 and "simulated out of memory" in failed["message"].iloc[0]
    row = table.iloc[0]
    assert row["status"] == "ok" and row["trials_done"] == 2 and row["trials_failed"] == 1


def test_nan_loss_fails_the_trial(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path, max_trials=1, max_unfreeze=0)  # a head trained without a Keras model
    from bench.search import head_training

    real_weights = head_training.initial_weights

    def nan_output(*args, **kwargs):  # the head's output kernel starts as NaN
        weights = real_weights(*args, **kwargs)
        weights[-2][:] = np.nan
        return weights

    monkeypatch.setattr(head_training, "initial_weights", nan_output)
    table = execute(run)
    trials = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert trials["status"].tolist() == ["failed"] and "NaN" in trials["message"].iloc[0].replace("nan", "NaN")
    assert table[table["kind"] == "backbone"].iloc[0]["status"] == "failed"


def test_resume_skips_completed_trials_and_finished_backbones(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path, max_trials=2)
    execute(run)
    first = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    # a finished backbone is skipped entirely
    monkeypatch.setattr(bench.search.tuner.BenchTunerMixin, "run_trial",
                        lambda *a, **k: pytest.fail("a completed trial ran again"))
    execute(run)
    # an unfinished backbone (result.json gone) with a larger budget runs only the new trial
    monkeypatch.undo()
    (run.path / "mobilenet_v2" / "result.json").unlink()
    ran = []
    real = bench.search.tuner.BenchTunerMixin.run_trial

    def counting(self, trial, *a, **k):
        ran.append(trial.trial_id)
        return real(self, trial, *a, **k)

    monkeypatch.setattr(bench.search.tuner.BenchTunerMixin, "run_trial", counting)
    run.config.search.max_trials = 3
    execute(run)
    after = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert len(ran) == 1 and len(after) == 3
    pd.testing.assert_frame_equal(after.iloc[:2][first.columns], first, check_dtype=False)


def test_consecutive_seeds_draw_independent_searches(tmp_path):
    """KerasTuner draws a search's k-th value from random.Random(oracle seed + k): with
    seeds 1, 2, 3, ... each search reused its neighbour's draws one place on, and over 30
    consecutive --seed values the pooling choice came out max 140 times, avg 62 (of 300)."""
    from collections import Counter

    from bench.search.hypermodel import head_spec
    from bench.search.tuner import oracle_seed

    drawn = Counter()
    for seed in range(30):
        space = kt.HyperParameters()
        head_spec(space)
        space.Float("learning_rate", 1e-4, 1e-2, sampling="log")
        oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=10,
                                               seed=oracle_seed(seed), hyperparameters=space)
        oracle._set_project_dir(str(tmp_path / str(seed)), "p")
        for i in range(10):
            trial = oracle.create_trial(str(i))
            drawn[trial.hyperparameters.values["pooling"]] += 1
            oracle.update_trial(trial.trial_id, {"score": 0.5})
            oracle.end_trial(trial)
    assert all(70 <= drawn[p] <= 130 for p in ("avg", "max", "flatten")), drawn  # 100 each expected, sd 8
    assert oracle_seed(0) != 0 and len({oracle_seed(s) for s in range(1000)}) == 1000


def test_a_run_stored_without_max_head_weights_resumes_with_every_head(tmp_path):
    """A run.json without the key was written by a search over every head: resuming it with
    the current default would change its search space under its completed trials."""
    from bench.run import resume_run

    run = _tiny_run(tmp_path)
    assert resume_run(tmp_path / "results", "t").config.search.max_head_weights == 2_000_000
    stored = json.loads((run.path / "run.json").read_text())
    del stored["config"]["max_head_weights"]
    (run.path / "run.json").write_text(json.dumps(stored))
    assert resume_run(tmp_path / "results", "t").config.search.max_head_weights == 0


def test_multiclass_run(tmp_path):
    run = _tiny_run(tmp_path, counts={"a": 8, "b": 8, "c": 8}, max_trials=1)
    table = execute(run)
    row = table.iloc[0]
    assert row["status"] == "ok"
    assert np.array(row["test_confusion_matrix"]).shape == (3, 3)
    preds = pd.read_csv(run.path / "mobilenet_v2" / "test_predictions.csv")
    assert {"prob_a", "prob_b", "prob_c"} <= set(preds.columns)
    np.testing.assert_allclose(preds[["prob_a", "prob_b", "prob_c"]].sum(axis=1), 1.0, rtol=1e-4)


def test_notebook_baseline_row(tmp_path):
    run = _tiny_run(tmp_path, backbones=["xception"], image_size=71, baseline=True, max_trials=1, epochs=2,
                    max_unfreeze=0)
    table = execute(run)
    assert list(table[table["kind"] == "backbone"]["backbone"].sort_values()) == ["xception", "xception_notebook"]
    baseline = table[table["backbone"] == "xception_notebook"].iloc[0]
    assert bool(baseline["baseline"]) and baseline["status"] == "ok"
    trials = pd.read_csv(run.path / "xception_notebook" / "trials.csv")
    recipe = trials.iloc[0]
    assert (recipe["pooling"], recipe["dense_layers"], recipe["units_0"], recipe["dropout_0"], recipe["units_1"],
            recipe["learning_rate"]) == ("flatten", 2, 128, 0.5, 32, 1e-3)
    # Xception's 3x3x2048 map at 71 px into 256 units is over the default --max-head-weights: the search's
    # flatten heads are the output layer alone, while the recipe keeps its two hidden layers
    searched = table[table["backbone"] == "xception"].iloc[0]
    assert not searched["flatten_hidden"] and bool(baseline["flatten_hidden"])
    assert searched["flatten_hidden_weights"] == 3 * 3 * 2048 * 256
    # the recipe shares the xception backbone weights and its cached features
    assert not (run.path / "xception_notebook" / "backbone.weights.npz").exists()
    assert (run.path / "xception" / "backbone.weights.npz").exists()
    # both heads trained without a Keras model (the recipe's, 2.4 M weights, with TensorFlow arrays) keep the
    # arrays they trained as their checkpoint, and the deployed model's head holds exactly those arrays
    for name in ("xception", "xception_notebook"):
        tuner_dir = run.path / name / "tuner"
        assert not list(tuner_dir.rglob("checkpoint.weights.h5"))
        best = table[table["backbone"] == name].iloc[0]["best_trial"]
        (arrays,) = tuner_dir.rglob(f"trial_{best}/head.weights.npz")
        with np.load(arrays) as saved:
            trained = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        deployed = keras.saving.load_model(run.path / name / "best_model.keras", compile=False)
        head = deployed.get_layer("head").get_weights()
        assert len(head) == len(trained) and all(np.array_equal(a, b) for a, b in zip(head, trained))


def test_the_starting_weights_a_suite_hands_on_are_those_of_the_backbone_as_built(tmp_path):
    """A random-init backbone's weights before its BatchNorm calibration (what a later run of
    a suite starts from) are a fresh build's with the same seed, and calibration changed the
    BatchNorm statistics only."""
    from bench.search.source import batchnorm_layers

    run = _tiny_run(tmp_path)
    source = bench.search.source.source_for(backbones.get("mobilenet_v2"), "none", 32, run.path, run.index.root,
                                            run.split, 0)
    calibrated = source.base()
    keras.utils.set_random_seed(0)
    fresh = backbones.build_with_weights(backbones.get("mobilenet_v2"), backbones.resolve_weights("none"), 32)
    statistics = {id(v) for bn in batchnorm_layers(calibrated) for v in (bn.moving_mean, bn.moving_variance)}
    changed = 0
    for variable, start, built, now in zip(calibrated.weights, source._starting_weights(), fresh.get_weights(),
                                           calibrated.get_weights()):
        np.testing.assert_array_equal(start, built)
        if not np.array_equal(start, now):
            assert id(variable) in statistics
            changed += 1
    assert changed > 0


def test_the_backbone_is_handed_out_with_its_original_weights_after_fine_tuning(tmp_path):
    """A fine-tuning trial trains the layers top() hands out; the next base() (the next
    trial, fold or cache lookup) has the run's original weights again, and the cache key's
    fingerprint stays theirs."""
    from bench.search.source import weights_fingerprint

    run = _tiny_run(tmp_path)
    source = bench.search.source.source_for(backbones.get("mobilenet_v2"), "none", 32, run.path, run.index.root,
                                            run.split, 0)
    original = [w.copy() for w in source.base().get_weights()]
    assert source.fingerprint() == weights_fingerprint(source.base())
    top = source.top(1)
    for w in top.trainable_weights:
        w.assign(w + 1.0)  # as a fine-tuning trial would change them
    assert not all(np.array_equal(a, b) for a, b in zip(source.last_base.get_weights(), original))
    restored = source.base().get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(restored, original))
    assert source.fingerprint() == weights_fingerprint(source.base())


def test_a_later_process_loads_the_saved_backbone_weights_exactly_also_from_a_keras_weights_file(tmp_path):
    """The run's backbone weights file (a numpy archive) gives a later process (a resume, a
    worker) the calibrated weights bit for bit, with the same fingerprint, so it reuses the
    cache; a run folder that holds Keras' ``backbone.weights.h5`` instead is read too."""
    from bench.search.source import KERAS_WEIGHTS_FILE, WEIGHTS_FILE, BackboneSource

    run = _tiny_run(tmp_path)
    record = backbones.get("mobilenet_v2")

    def later_process(weights: str = "none") -> BackboneSource:  # nothing of the first source kept
        keras.utils.set_random_seed(123)  # a build would now draw other weights
        return bench.search.source.source_for(record, weights, 32, run.path, run.index.root, run.split, 0)

    first = bench.search.source.source_for(record, "none", 32, run.path, run.index.root, run.split, 0)
    built = [w.copy() for w in first.base().get_weights()]
    folder = run.path / "mobilenet_v2"
    assert (folder / WEIGHTS_FILE).is_file() and not (folder / KERAS_WEIGHTS_FILE).exists()
    assert not list(folder.glob(".tmp-*"))
    again = later_process()
    assert all(np.array_equal(a, b) for a, b in zip(again.base().get_weights(), built, strict=True))
    assert again.fingerprint() == first.fingerprint() and not again._built

    first.base().save_weights(folder / KERAS_WEIGHTS_FILE)  # a run folder in Keras' format
    (folder / WEIGHTS_FILE).unlink()
    from_keras = later_process()
    assert all(np.array_equal(a, b) for a, b in zip(from_keras.base().get_weights(), built, strict=True))
    assert not from_keras._built and not (folder / WEIGHTS_FILE).exists()


def test_batchnorm_calibration_sets_the_same_statistics_eagerly_and_compiled(monkeypatch):
    """Small networks set their BatchNorm statistics eagerly, large ones as a compiled graph:
    the two give the same moving means and variances (float32 rounding), from the batch."""
    import keras

    from bench.search import source as source_module

    record = backbones.get("mobilenet_v2")
    images = np.random.default_rng(4).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    stats = {}
    for mode, limit in (("eager", 2**40), ("compiled", 0)):
        monkeypatch.setattr(source_module, "EAGER_CALIBRATION_BYTES", limit)
        keras.utils.set_random_seed(0)
        model = record.build(weights=None, image_size=32)
        momenta = [bn.momentum for bn in source_module.batchnorm_layers(model)]
        source_module.calibrate_batchnorm(model, record.preprocessing, images)
        bns = source_module.batchnorm_layers(model)
        stats[mode] = [np.concatenate([bn.moving_mean.numpy(), bn.moving_variance.numpy()]) for bn in bns]
        assert [bn.momentum for bn in bns] == momenta  # the layers' own momentum is back
    assert not np.allclose(stats["eager"][0][:3], 0.0)  # statistics of the images, not the initial zeros
    for eager, compiled in zip(stats["eager"], stats["compiled"]):
        np.testing.assert_allclose(eager, compiled, rtol=1e-4, atol=1e-5)


def test_augmented_views_are_cached_and_used(tmp_path):
    run = _tiny_run(tmp_path, augment=True, aug_views=2, max_trials=1, max_unfreeze=0)
    record = backbones.get("mobilenet_v2")
    cfg = run.config.search
    source = bench.search.source.source_for(record, "none", 32, run.path, run.index.root, run.split, 0)
    x_train, x_val, y_train, _, _ = bench.search.cache.cached_features(
        source, [0], run.path, run.index.root, run.split, cfg)
    n_train = len(run.split.rows("train"))
    assert len(x_train[0]) == len(y_train) == 3 * n_train
    # views differ from the originals, labels repeat in view-major order
    assert not np.allclose(x_train[0][:n_train], x_train[0][n_train : 2 * n_train])
    np.testing.assert_array_equal(y_train[:n_train], y_train[n_train : 2 * n_train])
    metas = [json.loads(p.read_text()) for p in (run.path / "cache").glob("*.json")]
    assert sorted(m["views"] for m in metas) == [0, 0, 2]


def test_hyperband_runs_and_continues_trials(tmp_path):
    run = _tiny_run(tmp_path, tuner="hyperband", epochs=3, max_unfreeze=0)
    table = execute(run)
    trials = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert len(trials) >= 3 and set(trials["status"]) == {"completed"}
    assert (trials["tuner/initial_epoch"] > 0).any()  # a promoted trial continued from a checkpoint
    assert table.iloc[0]["status"] == "ok"


def test_keras_tuner_state_is_written_atomically(tmp_path, monkeypatch):
    """oracle.json / trial.json: a crash mid-write leaves the previous complete file."""
    import json
    import os

    from keras_tuner.src import utils as kt_utils

    from bench.search.kt_adapter import atomic_state_writes

    path = tmp_path / "oracle.json"
    with atomic_state_writes():
        kt_utils.save_json(str(path), {"trials": 1})

        def lost_power(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", lost_power)
        with pytest.raises(OSError):
            kt_utils.save_json(str(path), {"trials": 2})
    assert json.loads(path.read_text()) == {"trials": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete the checksum"])
def test_damaged_cache_entry_is_detected_and_rebuilt(tmp_path, damage, caplog):
    from bench.search.cache import FeatureCache

    folder = tmp_path / "results" / "run" / "cache"  # no sibling runs to adopt entries from
    cache = FeatureCache(folder)
    parts = {"train@0": {"backbone": "b", "cut": "x", "images": "abc"}}
    calls = []

    def compute():
        calls.append(1)
        return {"train@0": np.arange(12, dtype=np.float32).reshape(3, 4)}

    first = {k: np.array(v) for k, v in cache.get_or_compute(parts, compute).items()}  # entries are memory-mapped
    npy = next(folder.glob("*.npy"))
    data = bytearray(npy.read_bytes())
    if damage == "flip a byte":
        data[-1] ^= 0xFF
        npy.write_bytes(bytes(data))
    elif damage == "truncate":
        npy.write_bytes(bytes(data[: len(data) // 2]))
    else:
        npy.with_suffix(".json").unlink()
    again = cache.get_or_compute(parts, compute)
    assert len(calls) == 2, "the damaged entry must be recomputed"
    np.testing.assert_array_equal(again["train@0"], first["train@0"])
    if damage != "delete the checksum":
        assert any(r.levelname == "WARNING" and "damaged" in r.getMessage() and "rebuilding" in r.getMessage()
                   for r in caplog.records), caplog.messages
    third = cache.get_or_compute(parts, compute)  # the rebuilt entry is valid again
    assert len(calls) == 2 and np.array_equal(third["train@0"], first["train@0"])


def test_an_unchanged_cache_entry_is_hashed_once_per_process(tmp_path, monkeypatch):
    """The folds load each entry again and again: its checksum is computed once while the
    file keeps its size, modification time and inode, but a file modified within the
    file system's clock resolution of the check ("racy") is hashed again, and a change
    is still caught. The process that writes an entry does not read it back to hash it."""
    from bench.search import cache as cache_module

    hashed = []
    real = cache_module.sha256_file
    monkeypatch.setattr(cache_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    cache = cache_module.FeatureCache(tmp_path / "results" / "run" / "cache")
    parts = {"pool@0": {"backbone": "b", "cut": "x", "images": "abc"}}
    written = cache.get_or_compute(parts, lambda: {"pool@0": np.arange(12, dtype=np.float32).reshape(3, 4)})
    assert hashed == [] and written["pool@0"].shape == (3, 4)  # the entry it wrote is not read back to be hashed
    npy = next(cache.folder.glob("*.npy"))
    key = npy.stem
    assert cache.load(key) is not None and cache.load(key) is not None
    assert len(hashed) == 2  # just written: racy, hashed each time
    old = time.time() - 60
    os.utime(npy, (old, old))
    hashed.clear()
    for _ in range(3):
        assert cache.load(key) is not None
    assert len(hashed) == 1  # unchanged for a minute: hashed once
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF
    npy.write_bytes(bytes(data))  # a new modification time
    assert cache.load(key) is None and not npy.exists()  # damaged: dropped, to be rebuilt


def test_trial_ended_in_its_own_file_is_not_rerun_after_a_crash(tmp_path, monkeypatch):
    """Killed between KerasTuner's trial.json and oracle.json writes: the trial is done."""
    run = _tiny_run(tmp_path, max_trials=2)
    execute(run)
    tuner_dir = run.path / "mobilenet_v2" / "tuner"
    oracle_file = tuner_dir / "oracle.json"
    state = json.loads(oracle_file.read_text())
    last = state["end_order"].pop()  # oracle.json as it was before the last trial's end was recorded
    state["ongoing_trials"] = {"tuner0": last}
    oracle_file.write_text(json.dumps(state))
    (run.path / "mobilenet_v2" / "result.json").unlink()
    (run.path / "mobilenet_v2" / "trials.csv").unlink()
    monkeypatch.setattr(bench.search.tuner.BenchTunerMixin, "run_trial",
                        lambda *a, **k: pytest.fail("a trial that had ended ran again"))
    execute(run)
    trials = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}


def test_trial_started_only_in_its_own_file_runs_after_a_crash(tmp_path):
    """Killed between KerasTuner's trial.json and oracle.json writes when a trial starts."""
    run = _tiny_run(tmp_path, max_trials=2)
    execute(run)
    tuner_dir = run.path / "mobilenet_v2" / "tuner"
    oracle_file = tuner_dir / "oracle.json"
    state = json.loads(oracle_file.read_text())
    last = state["end_order"].pop()  # oracle.json as it was before the last trial started
    state["start_order"].remove(last)
    state["ongoing_trials"] = {}
    oracle_file.write_text(json.dumps(state))
    trial_file = tuner_dir / f"trial_{last}" / "trial.json"
    trial_state = json.loads(trial_file.read_text())
    trial_state.update(status="RUNNING", score=None, best_step=0)
    trial_state["metrics"] = {"metrics": {}}
    trial_file.write_text(json.dumps(trial_state))
    (tuner_dir / f"trial_{last}" / "bench_trial.json").unlink()
    (run.path / "mobilenet_v2" / "result.json").unlink()
    (run.path / "mobilenet_v2" / "trials.csv").unlink()
    execute(run)
    trials = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert (tuner_dir / f"trial_{last}" / "bench_trial.json").exists()  # it ran


def test_weights_fingerprint_does_not_depend_on_how_many_models_were_built():
    """Keras numbers unnamed layers per process; the cache key must not see that."""
    from bench.search.source import weights_fingerprint

    record = backbones.get("xception")
    keras.utils.set_random_seed(1)
    first = record.build(weights=None, image_size=71)
    keras.utils.set_random_seed(1)
    second = record.build(weights=None, image_size=71)  # its unnamed layers get other numbers
    assert [w.path for w in first.weights] != [w.path for w in second.weights]
    assert weights_fingerprint(first) == weights_fingerprint(second)
    second.weights[0].assign(second.weights[0] + 1.0)
    assert weights_fingerprint(first) != weights_fingerprint(second)


def test_leaderboard_csv_writes_rank_as_an_integer(tmp_path):
    from bench.evaluate.leaderboard import write_leaderboard

    rows = [{"backbone": "b", "status": "ok", "objective": "val_auc", "val_objective": 0.7},
            {"backbone": "a", "status": "ok", "objective": "val_auc", "val_objective": 0.9},
            {"backbone": "c", "status": "failed", "objective": "val_auc", "message": "every trial failed"}]
    write_leaderboard(rows, tmp_path)
    lines = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [["1", "a"], ["2", "b"], ["", "c"]]
    assert [r["rank"] for r in json.loads((tmp_path / "leaderboard.json").read_text())] == [1, 2, None]


def test_printed_leaderboard_keeps_three_decimals(tmp_path):
    """0.960 is printed as 0.960, not re-parsed by the table formatter into 0.96."""
    from bench.evaluate.leaderboard import format_leaderboard, write_leaderboard

    rows = [{"backbone": "a", "status": "ok", "objective": "val_auc", "val_objective": 0.96, "test_roc_auc": 0.9,
             "test_roc_auc_ci_low": 0.8, "test_roc_auc_ci_high": 0.95},
            {"backbone": "b", "status": "ok", "objective": "val_auc", "val_objective": 0.9241}]
    text = format_leaderboard(write_leaderboard(rows, tmp_path))
    assert " 0.960 " in text and " 0.924 " in text and "0.900 [0.80, 0.95]" in text
