"""A lean training loop for trials on cached features.

Keras' ``model.fit`` spends seconds of tracing and a fixed cost per epoch in callbacks,
iterators and metric bookkeeping, which is most of a trial when the model is a small
head on cached features. This loop compiles one gradient step, feeds numpy batches,
evaluates the validation split with one compiled call per epoch and computes metrics with
numpy. Semantics follow ``fit``: class weights scale each sample's loss
(mean over the batch), validation loss is unweighted, and early stopping restores the
weights of the best epoch on the objective. Each epoch ends with a DEBUG record on the
``bench.search.trainer`` logger (``bench run --verbose``) carrying its wall seconds
(``epoch_seconds``), which ``benchmarks/search_speed.py`` reads.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from bench.config import OBJECTIVES
from bench.evaluate.metrics import mann_whitney_auc
from bench.search.features import release_rows

log = logging.getLogger(__name__)


class NonFiniteLoss(Exception):
    """Training produced a NaN or infinite loss."""


def targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        return y.astype("float32").reshape(-1, 1)
    return np.eye(n_classes, dtype="float32")[y]


def _loss(n_classes: int):
    return keras.losses.BinaryCrossentropy() if n_classes == 2 else keras.losses.CategoricalCrossentropy()


def _f1(y: np.ndarray, pred: np.ndarray, labels) -> float:
    """Mean F1 over ``labels`` (0 where a label has no true and no predicted sample)."""
    values = []
    for c in labels:
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        values.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(values))


def scores(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, AUC and F1 of one epoch's predictions, in numpy (scikit-learn's
    definitions, checked against it in the tests, at a fraction of its per-call cost):
    binary: threshold 0.5, F1 of class 1; several classes: argmax, AUC one-vs-rest macro
    (nan when a class is missing), F1 macro over the classes in the labels or predictions."""
    y = np.asarray(y)
    if n_classes == 2:
        p = proba.reshape(-1)
        pred = (p >= 0.5).astype(int)
        return {"accuracy": float((pred == y).mean()), "auc": mann_whitney_auc(y, p), "f1": _f1(y, pred, [1])}
    pred = proba.argmax(axis=1)
    if len(np.unique(y)) != n_classes:
        auc = float("nan")
    else:
        auc = float(np.mean([mann_whitney_auc((y == c).astype(int), proba[:, c]) for c in range(n_classes)]))
    return {"accuracy": float((pred == y).mean()), "auc": auc, "f1": _f1(y, pred, np.union1d(y, pred))}


#: Keras' probability clipping in its cross-entropy losses.
PROBA_EPSILON = 1e-7


def sample_cross_entropy(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Keras' cross-entropy of each sample's probabilities: binary for one output column
    (targets as :func:`targets` gives them), categorical after normalising the rows for
    several; probabilities clipped at :data:`PROBA_EPSILON`."""
    p = np.asarray(proba, dtype=np.float64)
    if p.shape[1] == 1:
        p = np.clip(p, PROBA_EPSILON, 1 - PROBA_EPSILON)
        return -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))[:, 0]
    p = np.clip(p / p.sum(axis=1, keepdims=True), PROBA_EPSILON, 1 - PROBA_EPSILON)
    return -np.sum(y_true * np.log(p), axis=1)


def cross_entropy(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    """Keras' unweighted cross-entropy of probabilities, the mean over the samples."""
    return float(np.mean(sample_cross_entropy(y_true, proba)))


def sample_weights(y: np.ndarray, class_weight: dict[int, float] | None) -> np.ndarray:
    """Each sample's loss weight: its class's weight, or 1 without class weights."""
    if not class_weight:
        return np.ones(len(y), "float32")
    return np.array([class_weight[c] for c in y], "float32")


class History(dict):
    """Per-epoch metrics by Keras' key names, as the training loops return them;
    ``cut_short``: ``--budget``'s deadline, not the last epoch or early stopping, ended the
    training (:class:`Epochs`)."""

    cut_short = False


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of ``n`` training rows in epoch ``epoch`` (0-based, counted across a
    trial's phases), batches being its consecutive slices: drawn from ``seed`` and the
    epoch alone. Given the search's seed, every trial of a search sees the same batches
    (common random numbers: trials differ by their hyperparameters, not by their
    batches), and trials trained together (:func:`bench.search.head_training.train_together`)
    read each batch once."""
    return np.random.default_rng([epoch, seed % 2**32]).permutation(n)


class Epochs:
    """What both training loops do at the end of an epoch: its metrics into the history
    (Keras' key names), the best epoch on the objective (its weights kept), early stopping
    after ``patience`` epochs without improvement, and a DEBUG record with the epoch's
    seconds (``epoch_seconds``, which ``benchmarks/search_speed.py`` reads). With a
    ``deadline`` (``--budget``: the monotonic time at which the search's share of the time
    is used), training stops at the end of the epoch in which it passes, keeping the best
    epoch so far, and ``cut_short`` says so. (:func:`train`, whose epochs of fine-tuning can
    take most of a minute each, drops an epoch in progress between two batches instead,
    once the trial has a finished epoch.)"""

    def __init__(self, objective: str, patience: int, n_classes: int, deadline: float | None = None,
                 seed: int | None = None) -> None:
        self.objective, self.patience, self.n_classes = objective, patience, n_classes
        self.seed = seed  # the trial's, in each epoch's DEBUG record (trials trained together log in turn)
        self.direction = OBJECTIVES[objective]
        self.history = History()
        self.best, self.best_weights, self.waited = float("nan"), None, 0
        self.deadline, self.cut_short = deadline, False

    def end(self, epoch: int, started: float, loss: float, y, train_proba, y_val, y_val_true, val_proba,
            weights) -> bool:
        """Record epoch ``epoch`` (0-based); ``weights()`` gives a copy of the weights when
        this epoch is the best so far. True when training should stop."""
        logs = {"loss": loss, **scores(y, train_proba, self.n_classes),
                "val_loss": cross_entropy(y_val_true, val_proba, self.n_classes)}
        logs.update({f"val_{k}": v for k, v in scores(y_val, val_proba, self.n_classes).items()})
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        if _better(logs[self.objective], self.best, self.direction):
            self.best, self.best_weights, self.waited = logs[self.objective], weights(), 0
        else:
            self.waited += 1
        seconds = time.perf_counter() - started
        log.debug(f"    epoch {epoch + 1}: loss {logs['loss']:.4f}, {self.objective} {logs[self.objective]:.4f} "
                  f"({seconds:.3f} s)", extra={"epoch_seconds": seconds, "trial_seed": self.seed})
        if self.waited and self.waited >= self.patience:
            return True
        self.cut_short = self.history.cut_short = self.deadline is not None and time.monotonic() >= self.deadline
        return self.cut_short


class FusedAdam:
    """Adam as one in-place kernel per variable (``ResourceApplyAdam``).

    Same update as ``keras.optimizers.Adam`` (beta1 0.9, beta2 0.999, epsilon 1e-7),
    but Keras' version builds several temporaries the size of each variable per
    step; for a flatten head (100k x 256 weights) that is about 800 MB of fresh memory per
    step, whose page faults make the step several times slower.
    """

    def __init__(self, variables, learning_rate: float, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        import tensorflow as tf

        self.variables = [v.value for v in variables]  # the underlying tf.Variables
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.iterations = tf.Variable(0.0, trainable=False)
        self.lr, self.beta_1, self.beta_2, self.epsilon = learning_rate, beta_1, beta_2, epsilon

    def apply(self, grads) -> None:
        import tensorflow as tf

        self.iterations.assign_add(1.0)
        b1_power = tf.pow(self.beta_1, self.iterations)
        b2_power = tf.pow(self.beta_2, self.iterations)
        for var, m, v, grad in zip(self.variables, self.m, self.v, grads):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=m.handle, v=v.handle, beta1_power=b1_power, beta2_power=b2_power,
                lr=self.lr, beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon, grad=grad,
            )


def _better(value: float, best: float, direction: str) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if direction == "min" else value > best


def computes_in_float16(model) -> bool:
    """Whether ``model`` (or a layer of it) computes in float16 (Keras' ``mixed_float16``
    policy when it was built): its training then scales the loss."""
    return model.compute_dtype == "float16" or any(layer.compute_dtype == "float16" for layer in model.layers)


def as_float32(batch) -> np.ndarray:
    """A batch of features as float32 (no copy when it already is)."""
    return np.asarray(batch, dtype=np.float32)


def train(
    model: keras.Model,
    x, y: np.ndarray, x_val, y_val: np.ndarray, *,
    n_classes: int, learning_rate: float, epochs: int, batch_size: int = 32,
    class_weight: dict[int, float] | None = None, objective: str = "val_auc", patience: int = 5,
    seed: int = 0, order_seed: int | None = None, initial_epoch: int = 0, deadline: float | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` in place; returns per-epoch history (Keras' key names). ``deadline``:
    see :class:`Epochs` (the history is then shorter than ``epochs``); once the trial has a
    finished epoch (``initial_epoch`` counts a previous phase's), the deadline also stops
    an epoch between two batches, and that unfinished epoch is dropped (the history can then
    be empty: a phase whose first epoch did not finish). The batches of each
    epoch: :func:`epoch_order` of ``order_seed`` (None: ``seed``).

    ``x`` and ``x_val`` are arrays or :class:`~bench.search.features.FeatureRows`: they are
    read a batch at a time, so memory-mapped features stay on disk.

    The model ends with the weights of its best epoch on ``objective``.
    Raises :class:`NonFiniteLoss` when the training loss stops being finite.
    """
    import tensorflow as tf

    loss_fn = _loss(n_classes)
    optimizer = FusedAdam(model.trainable_variables, learning_rate)
    y_true = targets(y, n_classes)
    y_val_true = targets(y_val, n_classes)
    weights = sample_weights(y, class_weight)

    scaling = computes_in_float16(model)  # dynamic loss scaling keeps small gradients from underflowing
    scale = tf.Variable(2.0**15, trainable=False) if scaling else None

    @tf.function(reduce_retracing=True)
    def step(xb, yb, wb):
        with tf.GradientTape() as tape:
            proba = model(xb, training=True)
            loss = loss_fn(yb, proba, sample_weight=wb)
            scaled = loss * scale if scaling else loss
        grads = tape.gradient(scaled, optimizer.variables)
        if not scaling:
            optimizer.apply(grads)
            return loss, proba
        grads = [tf.cast(g, tf.float32) / scale for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

        def apply():
            optimizer.apply(grads)
            return scale

        def skip():  # overflow: drop this step, halve the scale
            return scale.assign(tf.maximum(scale / 2.0, 1.0))

        tf.cond(finite, apply, skip)
        return loss, proba

    @tf.function(reduce_retracing=True)
    def predict(xb):
        return model(xb, training=False)

    def predict_all(data) -> np.ndarray:
        return np.concatenate([predict(as_float32(data[i : i + 256])).numpy() for i in range(0, len(data), 256)])

    epochs_done = Epochs(objective, patience, n_classes, deadline)
    abandoned = False
    for epoch in range(initial_epoch, initial_epoch + epochs):
        t_epoch = time.perf_counter()
        order = epoch_order(seed if order_seed is None else order_seed, epoch, len(y))
        total, seen, train_proba = 0.0, 0, np.zeros((len(y), y_true.shape[1]), "float32")
        for start in range(0, len(order), batch_size):
            if deadline is not None and epoch > 0 and time.monotonic() >= deadline:
                abandoned = True  # the trial has a finished epoch: this one is dropped between batches
                break
            idx = np.sort(order[start : start + batch_size])
            loss, proba = step(as_float32(x[idx]), y_true[idx], weights[idx])
            loss = float(loss)
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss became {loss} at epoch {epoch + 1}; the learning rate is probably too high"
                )
            total += loss * len(idx)
            seen += len(idx)
            train_proba[idx] = proba.numpy()
        if abandoned:
            epochs_done.cut_short = epochs_done.history.cut_short = True
            break
        val_proba = predict_all(x_val)
        release_rows(x, x_val)  # a memory-mapped split's pages read this epoch: still in the page cache
        if epochs_done.end(epoch, t_epoch, total / seen, y, train_proba, y_val, y_val_true, val_proba,
                           model.get_weights):
            break
    if epochs_done.best_weights is not None:
        model.set_weights(epochs_done.best_weights)
    return epochs_done.history


_EVENT_FILES = itertools.count()


def _write_events(log_dir: Path, summaries: list[tuple[int, object]]) -> None:
    """One TensorBoard event file in ``log_dir`` holding ``(step, Summary)`` records, in
    the format ``tf.summary`` writes (TensorBoard's own record writer, without
    TensorFlow ops or a writer thread: about a millisecond per file)."""
    import os
    import socket
    import time as _time

    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    now = _time.time()
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{next(_EVENT_FILES)}"
    with open(log_dir / name, "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for step, summary in summaries:
            writer.write(event_pb2.Event(summary=summary, wall_time=now, step=step).SerializeToString())


@functools.cache
def _scalar_metadata():
    from tensorboard.plugins.scalar import metadata

    return metadata.create_summary_metadata(display_name=None, description=None)


def scalar_summary(tag: str, value: float):
    """The Summary ``tensorboard.plugins.scalar.summary_v2.scalar_pb(tag, value)`` makes
    (a float32 scalar; the same bytes, checked in the tests), built directly: a trial writes
    one per metric and epoch, and ``scalar_pb`` converts each through numpy."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=_scalar_metadata(), tensor=tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(), float_val=[value]))
    return summary


def write_tensorboard(history: dict[str, list[float]], log_dir: Path) -> None:
    """Per-epoch scalars in Keras' TensorBoard layout (``train/`` and ``validation/``)."""
    for sub, prefix in (("train", ""), ("validation", "val_")):
        records = [(epoch, scalar_summary("epoch_" + key[len(prefix):], float(value)))
                   for key, values in history.items()
                   if (prefix and key.startswith(prefix)) or (not prefix and not key.startswith("val_"))
                   for epoch, value in enumerate(values)]
        _write_events(Path(log_dir) / sub, records)


def write_hparams(log_dir: Path, hparams: dict, metrics: dict[str, float], trial_id: str) -> None:
    """The trial's hyperparameters and its best-epoch metrics for TensorBoard's HParams
    dashboard: a session record in ``log_dir`` and one ``best_<metric>`` scalar each, so
    ``tensorboard --logdir results/<run>`` compares every trial of every backbone (and
    fold) in one table and one parallel-coordinates view."""
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb

    def plain(value):
        return value if isinstance(value, (bool, int, float, str)) else str(value)

    session = hparams_pb({k: plain(v) for k, v in hparams.items()}, trial_id=trial_id)
    _write_events(Path(log_dir), [(0, session)] + [(0, scalar_summary(f"best_{key}", float(value)))
                                                   for key, value in metrics.items()])
