"""Final stage per backbone: rebuild the best trial as a full model (images in, class
probabilities out), calibrate it and choose its decision thresholds on validation
(:mod:`bench.evaluate.decisions`), and evaluate once on the held-out test split. The test
split is loaded here and nowhere else.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bench.forward import compiled, has_run, predict_batch
from bench.data.loading import image_batches, label_indices
from bench.evaluate.decisions import Decisions, headline, weight_vector
from bench.evaluate.metrics import brier_skill_score, classification_metrics, evaluate
from bench.layers import BackbonePreprocess
from bench.atomic import save_via_temp, write_json_atomic
from bench.runfolder import SearchFiles
from bench.progress import step
from bench.tables import text_frame, write_csv

log = logging.getLogger("bench.progress")


@dataclass(frozen=True)
class FinalSettings:
    """What the final stage needs besides the predictions: the class weights the model
    trained with (None: unweighted) and the minima of the constrained operating points."""

    class_weight: dict[int, float] | None = None
    min_sensitivity: float = 0.95
    min_specificity: float = 0.95


def set_trainable(base: keras.Model, cut_layer: str | None) -> None:
    """Freeze ``base`` except the layers above ``cut_layer`` (None: freeze everything)."""
    if cut_layer is None:
        base.trainable = False
        return
    top = keras.Model(base.get_layer(cut_layer).output, base.output)
    above = {id(layer) for layer in top.layers}
    base.trainable = True
    for layer in base.layers:
        layer.trainable = id(layer) in above


def load_trial_model(tuner, trial) -> keras.Model:
    """The trial's model (cached features in, probabilities out) with its best-epoch weights."""
    with warnings.catch_warnings():
        # Trial checkpoints hold weights only; Keras warns that the optimizer is not restored.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return tuner.load_model(trial)


def full_model(source, tuner, trial, with_features: bool = False):
    """Backbone + head of ``trial`` with its best-epoch weights, taking raw RGB images.

    ``with_features``: returns ``(model, features_model)``, where ``features_model`` shares
    every layer of ``model`` and also outputs the frozen backbone's average-pooled features
    (the linear probe's inputs, :mod:`bench.evaluate.floor`), so one pass over the test
    images gives both; None when the trial fine-tuned the backbone (its features are not
    the frozen ones)."""
    model = load_trial_model(tuner, trial)
    depth = trial.hyperparameters.get("unfreeze")
    if depth == 0:
        head, base = model, source.base()
        set_trainable(base, None)
    else:
        head, base = model.get_layer("head"), source.last_base
        set_trainable(base, source.record.cut_layer(depth))
    size = source.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = BackbonePreprocess(source.record.preprocessing, name="preprocess")(inputs)
    features = base(x, training=False)
    outputs = head(features)
    model = keras.Model(inputs, outputs, name=f"{source.record.name}_classifier")
    if not with_features:
        return model
    if depth != 0:
        return model, None
    flat = keras.layers.GlobalAveragePooling2D(name="frozen_pooled")(features) if len(features.shape) == 4 else features
    return model, keras.Model(inputs, [outputs, flat], name=f"{source.record.name}_with_features")


def predict_proba(model: keras.Model, images, n_classes: int, batch_size: int = 32, progress=None) -> np.ndarray:
    """(N, n_classes) probabilities; a sigmoid output p becomes columns (1-p, p).

    ``images``: an array (or cached features) fed ``batch_size`` rows at a time, or an
    iterable of batches (:func:`~bench.data.loading.image_batches`: the images are
    streamed, never all in memory). ``progress(done)`` is called after each batch."""
    batches = images
    if hasattr(images, "__len__") and hasattr(images, "__getitem__"):
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    chunks = []
    for batch in batches:
        chunks.append(np.asarray(predict_batch(model, batch)))
        if progress is not None:
            progress(sum(len(c) for c in chunks))
    return _as_probabilities(np.concatenate(chunks) if chunks else np.zeros((0, 1 if n_classes == 2 else n_classes)),
                             n_classes)


def _as_probabilities(out: np.ndarray, n_classes: int) -> np.ndarray:
    """A model's outputs as (N, n_classes) probabilities: a sigmoid p becomes (1-p, p)."""
    if n_classes == 2:
        p = out.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return out


def predict_with_features(model: keras.Model, batches, n_classes: int, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, features)`` of a two-output model (:func:`full_model` with
    features) over image batches, probabilities as :func:`predict_proba` gives them."""
    probs, feats, done = [], [], 0
    for batch in batches:
        p, f = predict_batch(model, batch)
        probs.append(np.asarray(p, dtype=np.float32))
        feats.append(np.asarray(f, dtype=np.float32))
        done += len(batch)
        if progress is not None:
            progress(done)
    out = np.concatenate(probs) if probs else np.zeros((0, 1 if n_classes == 2 else n_classes))
    width = model.outputs[1].shape[-1]
    pooled = np.concatenate(feats) if feats else np.zeros((0, width), np.float32)
    if n_classes == 2:
        p = out.reshape(-1)
        return np.stack([1.0 - p, p], axis=1), pooled
    return out, pooled


#: :func:`measure_latency` stops timing a batch size once at least MIN_TIMED_CALLS calls
#: add up to TIMED_SECONDS: a network that slow (a quarter of a second per image on a
#: laptop CPU) gives calls long enough for their median to hold still.
MIN_TIMED_CALLS, TIMED_SECONDS = 3, 0.5


def measure_latency(model: keras.Model, size: int, repeats: int = 5,
                    known: dict[int, float | None] | None = None, stand_in: keras.Model | None = None) -> dict[str, float]:
    """Median ms per image at batch 1 and batch 32 (after a warm-up call at each batch size
    the model has not run yet; ``repeats`` timed calls at batch 1, half as many at 32,
    fewer once :data:`MIN_TIMED_CALLS` of them take :data:`TIMED_SECONDS`), by the model's
    compiled forward pass (:func:`bench.forward.compiled`: traced once for both batch sizes,
    and shared with the evaluation that ran before on the same model, which usually ran
    full batches of 32).
    ``known``: ms per image already measured at a batch size on the same network in this
    process (the frozen pass over the images: :meth:`bench.search.source.BackboneSource.batch_ms`,
    the backbone being all but a dense layer's microseconds of the model), not measured again.
    ``stand_in``: the same network already traced in this process (the frozen pass's model,
    :attr:`bench.search.source.BackboneSource.frozen_model`), timed instead of ``model``
    when ``model`` has not run yet: tracing the model would cost more than timing it."""
    import tensorflow as tf

    timed = stand_in if stand_in is not None and not has_run(model) else model
    forward = compiled(timed)
    out = {f"latency_ms_b{batch}": ms for batch, ms in (known or {}).items() if ms is not None}
    for batch in (1, 32):
        if f"latency_ms_b{batch}" in out:
            continue
        x = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype("float32"))
        if not has_run(timed, batch):
            tf.nest.map_structure(np.asarray, forward(x))  # warm-up
        times: list[float] = []
        calls = repeats if batch == 1 else max(2, repeats // 2)
        while len(times) < calls and not (len(times) >= MIN_TIMED_CALLS and sum(times) >= TIMED_SECONDS):
            t0 = time.perf_counter()
            tf.nest.map_structure(np.asarray, forward(x))
            times.append(time.perf_counter() - t0)
        out[f"latency_ms_b{batch}"] = round(1000 * float(np.median(times)) / batch, 3)
    return out


def kept_val_probabilities(model: keras.Model, trial, source, split, batch_size: int = 32) -> dict | None:
    """``{"val": probabilities}`` of the deployed ``model`` (:func:`full_model`) on the
    split's val images from their float32 frozen features, kept by the caching pass in this
    process (:meth:`bench.search.source.BackboneSource.kept_rows`): the same network's
    outputs for the same images, so only the head runs. None when the trial fine-tuned the
    backbone (its features are not the frozen ones) or some val image was not kept."""
    if trial.hyperparameters.get("unfreeze") != 0:
        return None
    x = source.kept_rows(split.rows("val"))
    if x is None:
        return None
    head = model.get_layer("head")  # the trial's head (bench.search.hypermodel.build_head), on the backbone's output
    t0 = time.perf_counter()
    probabilities = predict_proba(head, x, len(split.classes), batch_size)
    log.info(f"{source.name}: final evaluation, the {len(x)} val images: "
             f"their frozen features from the caching pass (float32), through the head, in "
             f"{time.perf_counter() - t0:.1f}s")
    return {"val": probabilities}


def evaluate_on_test(
    model: keras.Model, split, data_root: Path, size: int, out_dir: Path, seed: int, batch_size: int = 32,
    settings: FinalSettings | None = None, features_model: keras.Model | None = None, features: dict | None = None,
    known: dict[str, np.ndarray] | None = None,
) -> dict:
    """Calibration and thresholds on val, then one evaluation on test; writes
    val_ and test_predictions.csv and calibration.json.

    The full model (raw images in) predicts the images themselves: the test split is
    loaded here and nowhere else. Without test images (``--cv`` with no holdout) only
    what was fitted on validation is returned. ``features_model`` (of :func:`full_model`)
    predicts the images instead (the same layers, so the same probabilities, and one
    compiled model rather than two), in the same pass filling ``features["test"]`` with the
    test images' pooled frozen features, rounded to float16 as the feature cache stores them.
    ``known``: probabilities of a part already computed (:func:`kept_val_probabilities`)."""
    n_classes = len(split.classes)
    val_rows, test_rows = split.rows("val"), split.rows("test")
    name = Path(out_dir).name
    probabilities = dict(known or {})
    for part, rows in (("val", val_rows), ("test", test_rows)):
        if not rows and part == "test" or part in probabilities:
            continue
        with step(f"{name}: final evaluation, predicting the {part} images", total=len(rows)) as s:
            batches = image_batches(data_root, rows, size, batch_size)
            if features_model is not None and features is not None:  # one compiled model for both parts
                probabilities[part], pooled = predict_with_features(features_model, batches, n_classes, s.update)
                if part == "test":
                    features["test"] = pooled.astype(np.float16).astype(np.float32)
            else:
                probabilities[part] = predict_proba(model, batches, n_classes, progress=s.update)
            log.info(s.line())
    return evaluate_predictions(split, probabilities["val"], probabilities.get("test"), out_dir, seed, settings)


def evaluate_fold(trial_model, depth: int, x_val: dict, x_test: dict, split, out_dir: Path, seed: int,
                  batch_size: int = 32, settings: FinalSettings | None = None) -> dict:
    """One outer fold of ``--cv``: the trial's model on the cached features of the fold's
    inner val images (calibration and thresholds) and of the images it held out (its
    out-of-fold predictions). Every cross-validated image is some fold's training image,
    so its features are in the run's cache anyway; the backbone does not run again.
    ``trial_model``: a Keras model, or a function of the rows giving the model's outputs
    (:meth:`bench.search.tuner.BenchTunerMixin.head_predictor`)."""
    n_classes = len(split.classes)
    if isinstance(trial_model, keras.Model):
        p_val, p_test = (predict_proba(trial_model, x[depth], n_classes, batch_size) for x in (x_val, x_test))
    else:
        p_val, p_test = (_as_probabilities(trial_model(x[depth]), n_classes) for x in (x_val, x_test))
    return evaluate_predictions(split, p_val, p_test, out_dir, seed, settings, intervals=False)


def _prediction_table(rows: list[dict], y: np.ndarray, classes: list[str], calibrated: np.ndarray,
                      raw: np.ndarray, decided: np.ndarray | None = None):
    columns = {"file": [r["path"] for r in rows], "label": [classes[i] for i in y],
               **{f"prob_{c}": calibrated[:, k] for k, c in enumerate(classes)}}
    if decided is not None:
        columns.update(prediction=[classes[i] for i in decided], correct=decided == y)
    columns.update({f"raw_prob_{c}": raw[:, k] for k, c in enumerate(classes)})
    return text_frame(columns)


def evaluate_predictions(split, p_val: np.ndarray, p_test: np.ndarray | None, out_dir: Path, seed: int,
                         settings: FinalSettings | None = None, intervals: bool = True) -> dict:
    """Calibrate and choose the operating points on the val predictions
    (:mod:`bench.evaluate.decisions`), evaluate the calibrated test predictions once
    (intervals over duplicate groups, Brier skill against the training prevalence), and
    write ``val_predictions.csv``, ``test_predictions.csv`` (calibrated ``prob_*``, raw
    ``raw_prob_*``) and ``calibration.json``.

    ``intervals=False`` (an outer fold of ``--cv``): the test metrics without intervals,
    and ``calibration.json`` with what was fitted on validation only (no calibration or
    operating-point checks on the test images). A fold's own intervals are not reported:
    the CV estimates pool the out-of-fold predictions of every fold and compute their
    intervals, calibration and operating points on them (:mod:`bench.evaluate.crossval`)."""
    settings = settings or FinalSettings()
    files = SearchFiles(out_dir)
    classes = split.classes
    n_classes = len(classes)
    val_rows, test_rows = split.rows("val"), split.rows("test")
    y_val = label_indices(val_rows, classes)
    name = Path(out_dir).name
    log.info(f"{name}: calibrating on {len(val_rows)} val images (temperature scaling, operating points)")
    decisions = Decisions.fit(y_val, p_val, weight_vector(settings.class_weight, n_classes),
                              settings.min_sensitivity, settings.min_specificity)
    threshold = decisions.threshold
    table = _prediction_table(val_rows, y_val, classes, decisions.calibrate(p_val), p_val)
    write_csv(files.val_predictions_csv, table)
    fitted = {"temperature": decisions.temperature, "threshold": threshold,
              "positive_class": str(classes[1]) if n_classes == 2 else None}
    if p_test is None or not test_rows:  # --cv without a holdout: the final model has no test images
        write_json_atomic(files.calibration_json, decisions.fitted())
        return {"n": 0, **fitted}
    y_test = label_indices(test_rows, classes)
    train_labels = label_indices(split.rows("train"), classes)
    prevalence = np.bincount(train_labels, minlength=n_classes) / max(1, len(train_labels))
    groups = [r["group"] for r in test_rows]
    calibrated = decisions.calibrate(p_test)
    if intervals:
        log.info(f"{name}: test metrics of {len(test_rows)} images, confidence intervals from 1000 bootstrap "
                 f"resamples of {len(set(groups))} groups")
        metrics = evaluate(y_test, calibrated, classes, threshold=threshold, n_resamples=1000, seed=seed,
                           groups=groups, prevalence=prevalence)
        log.info(f"{name}: calibration and operating-point checks on the test images")
        report = decisions.on_test(y_test, p_test, prevalence, groups, seed)
        write_json_atomic(files.calibration_json, report)
        metrics.update(headline(report))
    else:
        metrics = classification_metrics(y_test, calibrated, classes, threshold)
        metrics["brier_skill"] = brier_skill_score(y_test, calibrated, prevalence)
        write_json_atomic(files.calibration_json, decisions.fitted())
        metrics["temperature"] = decisions.temperature
    pred = (calibrated[:, 1] >= threshold).astype(int) if n_classes == 2 else calibrated.argmax(axis=1)
    table = _prediction_table(test_rows, y_test, classes, calibrated, p_test, pred)
    write_csv(files.test_predictions_csv, table)
    return metrics


def save_model(model: keras.Model, path: Path) -> None:
    """Save atomically (Keras wants the .keras suffix on the temporary name too)."""
    save_via_temp(path, model.save)


def write_result(path: Path, row: dict) -> None:
    write_json_atomic(path, {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
