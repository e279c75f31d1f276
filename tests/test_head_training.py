"""Dense heads trained in numpy (bench.search.head_training): the same training as the
Keras-model loop (bench.search.trainer) where no random stream differs, metrics equal to
scikit-learn's, the best epoch restored, and the cases it leaves to the Keras path."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from bench.search import head_training as H
from bench.search.hypermodel import _after_pooling, build_head
from bench.search.trainer import NonFiniteLoss, scores, train


def _data(n=120, d=64, n_val=40, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, classes))
    x = rng.normal(size=(n, d)).astype("float32")
    xv = rng.normal(size=(n_val, d)).astype("float32")
    label = lambda a: np.argmax(a @ w + rng.normal(size=(len(a), classes)) * 3, axis=1)  # noqa: E731
    return x, label(x), xv, label(xv)


def _head(dense, classes=2, d=64):
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(3)
    return _after_pooling(build_head((2, 2, d), "avg", dense, classes))


#: Which arrays a head trains with: numpy's, or TensorFlow variables (every head over MAX_WEIGHTS)
ARRAYS = {"numpy": H.MAX_WEIGHTS, "tensorflow": 0}


@pytest.mark.parametrize("arrays", list(ARRAYS))
@pytest.mark.parametrize("dense,classes", [([], 2), ([(16, 0.0)], 2), ([(16, 0.0), (8, 0.0)], 3)])
def test_without_dropout_it_trains_as_the_keras_loop_does(dense, classes, arrays, monkeypatch):
    monkeypatch.setattr(H, "MAX_WEIGHTS", ARRAYS[arrays])
    x, y, xv, yv = _data(classes=classes)
    kwargs = dict(n_classes=classes, learning_rate=3e-3, epochs=6, batch_size=32, class_weight={0: 1.5, 1: 0.7, 2: 1.0},
                  objective="val_loss", patience=10, seed=5)
    keras_model, numpy_model = _head(dense, classes), _head(dense, classes)
    assert all(np.array_equal(a, b) for a, b in zip(keras_model.get_weights(), numpy_model.get_weights()))
    slow = train(keras_model, x, y, xv, yv, **kwargs)
    fast = H.train_head(numpy_model, x, y, xv, yv, **kwargs)
    assert set(fast) == set(slow)
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], rel=1e-3, abs=1e-4), key
    for a, b in zip(keras_model.get_weights(), numpy_model.get_weights()):
        assert np.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("arrays", list(ARRAYS))
def test_dropout_training_learns_and_restores_the_best_epoch(arrays, monkeypatch):
    monkeypatch.setattr(H, "MAX_WEIGHTS", ARRAYS[arrays])
    x, y, xv, yv = _data(n=200, d=32)
    model = _head([(32, 0.3)], d=32)
    history = H.train_head(model, x, y, xv, yv, n_classes=2, learning_rate=1e-2, epochs=12, seed=1, patience=20)
    best = int(np.argmax(history["val_auc"]))
    assert max(history["val_auc"]) > 0.75
    proba = model.predict(xv, verbose=0)
    assert roc_auc_score(yv, proba.ravel()) == pytest.approx(history["val_auc"][best], abs=1e-6)
    again = _head([(32, 0.3)], d=32)
    assert H.train_head(again, x, y, xv, yv, n_classes=2, learning_rate=1e-2, epochs=12, seed=1,
                        patience=20) == history  # seeded: the same masks and order


def test_early_stopping_and_a_diverging_loss():
    x, y, xv, yv = _data()
    history = H.train_head(_head([]), x, y, xv, yv, n_classes=2, learning_rate=1e-3, epochs=40, patience=2,
                           objective="val_accuracy")
    assert len(history["loss"]) < 40
    x_bad = x.copy()
    x_bad[5, 3] = np.inf  # the first batch's loss is not a number
    with pytest.raises(NonFiniteLoss, match="learning rate"):
        H.train_head(_head([(8, 0.0)]), x_bad, y, xv, yv, n_classes=2, learning_rate=1e-3, epochs=3)


def _sklearn_scores(y, proba, classes):
    """The reference: scikit-learn's accuracy, ROC AUC (one-vs-rest macro) and F1."""
    if classes == 2:
        pred = (proba.reshape(-1) >= 0.5).astype(int)
        return {"accuracy": float((pred == y).mean()), "auc": roc_auc_score(y, proba.reshape(-1)),
                "f1": f1_score(y, pred, zero_division=0)}
    pred = proba.argmax(axis=1)
    return {"accuracy": float((pred == y).mean()), "auc": roc_auc_score(y, proba, multi_class="ovr"),
            "f1": f1_score(y, pred, average="macro", zero_division=0)}


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_epoch_scores_equal_scikit_learn(classes):
    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 200)
    proba = rng.dirichlet(np.ones(classes), 200).astype("float32")
    proba[:20] = proba[20:40]  # ties
    if classes == 2:
        proba = proba[:, 1:]
    assert scores(y, proba, classes) == pytest.approx(_sklearn_scores(y, proba, classes))
    pred_one = np.zeros((200, classes), "float32")
    pred_one[:, 0] = 1.0  # every prediction one class: macro F1 over the classes present
    if classes > 2:
        assert scores(y, pred_one, classes)["f1"] == pytest.approx(
            f1_score(y, pred_one.argmax(1), average="macro", zero_division=0))
    missing = y % (classes - 1) if classes > 2 else np.zeros_like(y)
    assert np.isnan(scores(missing, proba, classes)["auc"])


def test_fits_only_dense_float32_heads_within_the_memory_budget(monkeypatch):
    x, y, xv, yv = _data()
    head = _head([(8, 0.1)])
    assert H.fits(head, x, xv)
    monkeypatch.setattr(H, "MEMORY_BUDGET_BYTES", 1000)
    assert not H.fits(head, x, xv)
    monkeypatch.undo()
    rows = 4 * (len(x) + len(xv)) * 64
    weights = 64 * 8 + 8 + 8 + 1
    monkeypatch.setattr(H, "MEMORY_BUDGET_BYTES", rows + 4 * H.WEIGHT_COPIES * weights - 1)  # the head's arrays: 4 bytes short
    assert not H.fits(head, x, xv) and not H.size_fits(x, xv, [8], 1)
    monkeypatch.undo()
    assert H.size_fits(x, xv, [8], 1)
    assert H.size_fits(x, xv, [40_000], 1) and 64 * 40_000 > H.MAX_WEIGHTS  # a head trained in TensorFlow variables
    assert not H.fits(head, x[:, :10], xv[:, :10])  # not the head's width
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = _after_pooling(build_head((2, 2, 64), "avg", [(8, 0.0)], 2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not H.fits(half, x, xv)


def test_initial_weights_are_keras_glorot_uniform():
    """The kernels drawn without a Keras model have Keras' GlorotUniform distribution
    (uniform on +/- sqrt(6 / (fan_in + fan_out))) and the biases are zeros."""
    weights = H.initial_weights(3000, [(200, 0.0)], 1, seed=4)
    assert [w.shape for w in weights] == [(3000, 200), (200,), (200, 1), (1,)]
    assert all(w.dtype == np.float32 for w in weights) and not weights[1].any() and not weights[3].any()
    keras_kernel = keras.initializers.GlorotUniform(seed=4)((3000, 200)).numpy()
    limit = np.sqrt(6 / 3200)
    ours = weights[0]
    assert np.abs(ours).max() <= limit and np.abs(keras_kernel).max() <= limit
    assert ours.std() == pytest.approx(limit / np.sqrt(3), rel=0.01)  # a uniform's standard deviation
    assert keras_kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.01)
    assert abs(float(ours.mean())) < 0.01 * limit
