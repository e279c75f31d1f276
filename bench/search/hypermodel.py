"""The search space, in one place: head x learning rate x unfreeze depth.

A trial's model never contains the frozen part of the backbone: it takes the cached
output of the frozen prefix (see :mod:`bench.search.cache`) as input.

* unfreeze depth 0: the model is the head alone, on the final feature map;
* unfreeze depth N > 0: the model is the top N blocks of the backbone (BatchNorm kept in
  inference mode) followed by the head, on the output of the layer below block N. It is
  trained in two phases, as fastai's ``fine_tune``: first the head alone on the depth-0
  cache (the top blocks are frozen, so this is exact), then the top blocks and head
  together at a tenth of the learning rate.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import keras
import keras_tuner as kt
import numpy as np

from bench.config import OBJECTIVES
from bench.search.features import GLOBAL_POOLINGS, FeatureRows, matrix, pooled
from bench.search import head_training
from bench.search.trainer import NonFiniteLoss, train

POOLINGS = ("avg", "max", "flatten")
#: The reduction over the map of each global pooling (what Keras' layers compute).
POOL_REDUCE = dict(zip(("avg", "max"), GLOBAL_POOLINGS))
UNITS = (32, 64, 128, 256)
MAX_DENSE = 2
LR_MIN, LR_MAX = 1e-4, 1e-2
FINETUNE_LR_FACTOR = 0.1


@dataclass
class TrialData:
    """Cached features per unfreeze depth, labels, and how to train on them."""

    x_train: dict[int, FeatureRows | np.ndarray]  # FeatureRows: memory-mapped cache entries
    y_train: np.ndarray  # class indices
    x_val: dict[int, FeatureRows | np.ndarray]
    y_val: np.ndarray
    n_classes: int
    class_weight: dict[int, float] | None = None
    batch_size: int = 32
    patience: int = 5
    objective: str = "val_auc"
    order_seed: int = 0  # the batches' order (every trial of the search shares it: trainer.epoch_order)
    _pooled: dict = field(default_factory=dict, repr=False)
    _matrices: dict = field(default_factory=dict, repr=False)

    def features(self, depth: int, pooling: str | None = None) -> tuple:
        """(train, val) inputs at ``depth`` (arrays or FeatureRows); at depth 0 with avg/max
        pooling, the pooled vectors (computed once: pooling is not trained, so pooling the
        cache is exact; of a memory-mapped cache, read from a temporary file: see
        :func:`~bench.search.features.pooled`)."""
        if depth or pooling not in ("avg", "max"):
            return self.x_train[depth], self.x_val[depth]
        if pooling not in self._pooled:
            reduce = POOL_REDUCE[pooling]
            self._pooled[pooling] = tuple(pooled(a, reduce) for a in (self.x_train[0], self.x_val[0]))
        return self._pooled[pooling]

    def matrices(self, pooling: str) -> tuple:
        """(train, val) at depth 0 as float32 matrices, a row per image (pooled, or the
        flattened map), read once and kept for every later trial with this pooling (the
        caller checks that they fit :data:`~bench.search.head_training.MEMORY_BUDGET_BYTES`);
        the train rows of a kept cache entry as :class:`~bench.search.features.MatrixRows`
        of it, gathered a batch at a time (:func:`~bench.search.features.matrix`)."""
        if pooling not in self._matrices:
            train, val = self.features(0, pooling)
            self._matrices[pooling] = (matrix(train, gather_later=True), matrix(val))
        return self._matrices[pooling]


def _cut_short(history, epochs: int) -> bool:
    """Whether ``--budget``'s deadline ended training of ``epochs`` epochs before the last
    (as the training loop's :class:`~bench.search.trainer.History` says; early stopping is not a cut)."""
    return len(history["loss"]) < epochs and getattr(history, "cut_short", False)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """n / (k * count_c): each class contributes equally to the loss."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {c: float(len(y) / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}


def build_head(feature_shape: tuple, pooling: str, dense: list[tuple[int, float]], n_classes: int) -> keras.Model:
    """pooling -> [Dense(relu) -> Dropout] * len(dense) -> Dense(sigmoid|softmax)."""
    inputs = keras.Input(shape=feature_shape, name="features")
    x = {
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }[pooling](name=f"pool_{pooling}")(inputs)
    for i, (units, dropout) in enumerate(dense):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    if n_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="output", dtype="float32")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="output", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="head")


def largest_flatten_hidden(feature_shape: tuple) -> int:
    """Weights of the largest hidden layer the space declares after a flattened map of
    ``feature_shape``: the map's values x the most units."""
    return int(np.prod(feature_shape)) * max(UNITS)


def flatten_takes_hidden(feature_shape: tuple, max_head_weights: int | None) -> bool:
    """Whether the search puts hidden layers after a flattened map of ``feature_shape``:
    when the largest of them (:func:`largest_flatten_hidden`) holds at most
    ``max_head_weights`` weights (``--max-head-weights``; 0 or None: whatever its size)."""
    return not max_head_weights or largest_flatten_hidden(feature_shape) <= max_head_weights


def head_spec(hp: kt.HyperParameters, flatten_hidden: bool = True) -> tuple[str, list[tuple[int, float]]]:
    """Declare (or read) the head hyperparameters; returns (pooling, [(units, dropout)]).
    Without ``flatten_hidden`` (see :func:`flatten_takes_hidden`) the hidden layers are
    declared for the pooled heads only: a flatten head is then the output layer on the
    flattened map, and its trials record ``dense_layers`` as 0 (:func:`recorded`)."""
    pooling = hp.Choice("pooling", list(POOLINGS))
    hidden_after = [p for p in POOLINGS if flatten_hidden or p != "flatten"]
    dense = []
    with nullcontext() if flatten_hidden else hp.conditional_scope("pooling", hidden_after):
        n_dense = hp.Int("dense_layers", 0, MAX_DENSE) or 0  # None where inactive
        for i in range(MAX_DENSE):
            with hp.conditional_scope("dense_layers", list(range(i + 1, MAX_DENSE + 1))):
                units = hp.Choice(f"units_{i}", list(UNITS))
                dropout = hp.Float(f"dropout_{i}", 0.0, 0.5, step=0.1)
            if i < n_dense:
                dense.append((units, round(dropout, 2)))
    return pooling, dense


def recorded(values: dict) -> dict:
    """A trial's hyperparameter values as records show them: ``dense_layers`` 0 where the
    search declared none (a flatten head under ``--max-head-weights``)."""
    if "pooling" in values and "dense_layers" not in values:
        return {**values, "dense_layers": 0}
    return values


class BenchHyperModel(kt.HyperModel):
    """``build(hp)`` declares the whole search space; ``fit`` runs one or two phases.

    ``top_factory(depth)`` returns ``(top_model, input_shape)`` for depth > 0: the backbone
    layers above the cut, built with the run's backbone weights. ``max_head_weights``
    (``--max-head-weights``; None: no limit) decides whether flatten heads take hidden
    layers (:func:`flatten_takes_hidden`).
    """

    def __init__(
        self,
        depths: list[int],
        feature_shapes: dict[int, tuple],
        data: TrialData,
        top_factory: Callable[[int], keras.Model],
        max_head_weights: int | None = None,
    ) -> None:
        super().__init__(name="bench")
        self.depths = list(depths)
        self.feature_shapes = feature_shapes
        self.data = data
        self.top_factory = top_factory
        self.flatten_hidden = flatten_takes_hidden(feature_shapes[0], max_head_weights)
        #: --budget: the monotonic time at which this search's share is used; a trial in
        #: progress then ends with the epoch it is in (set by the tuner)
        self.deadline: float | None = None
        #: dense heads trained by bench.search.head_training (False: every trial by the
        #: Keras-model loop of bench.search.trainer; benchmarks compare the two)
        self.fast_heads = os.environ.get("BENCH_HEAD_TRAINER", "fast") != "keras"
        #: while the tuner discovers the search space (BenchTunerMixin): builds declare the
        #: hyperparameters and make no Keras model
        self.declare_only = False

    def space_record(self) -> dict:
        """For the backbone's result row: whether flatten heads took hidden layers, and the
        largest such layer on this map, in weights (the report says what the limit cut)."""
        return {"flatten_hidden": self.flatten_hidden,
                "flatten_hidden_weights": largest_flatten_hidden(self.feature_shapes[0])}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        depth = hp.Choice("unfreeze", self.depths) if len(self.depths) > 1 else hp.Fixed("unfreeze", self.depths[0])
        pooling, dense = head_spec(hp, self.flatten_hidden)
        hp.Float("learning_rate", LR_MIN, LR_MAX, sampling="log")
        if self.declare_only:
            return None
        head = build_head(self.feature_shapes[0], pooling, dense, self.data.n_classes)
        if depth == 0:
            model = head
        else:
            top = self.top_factory(depth)
            inputs = keras.Input(shape=self.feature_shapes[depth], name="cut_features")
            outputs = head(top(inputs, training=False))  # BatchNorm stays in inference mode
            model = keras.Model(inputs, outputs, name=f"top{depth}_head")
        return model

    # -- training -------------------------------------------------------------------
    def _train(self, model, depth, pooling, lr, epochs, initial_epoch, seed):
        """Train ``model`` (a head on the depth-0 cache, or the top blocks and head on
        the depth's cache): a dense head whose inputs fit in memory by
        :func:`~bench.search.head_training.train_head`, anything else by
        :func:`~bench.search.trainer.train`."""
        d = self.data
        x, x_val = d.features(depth, pooling)
        kwargs = dict(n_classes=d.n_classes, learning_rate=lr, epochs=epochs, batch_size=d.batch_size,
                      class_weight=d.class_weight, objective=d.objective, patience=d.patience, seed=seed,
                      order_seed=d.order_seed, initial_epoch=initial_epoch, deadline=self.deadline)
        if depth == 0 and pooling is not None:
            dense = _after_pooling(model)  # on pooled or flattened rows
            if self.fast_heads and head_training.fits(dense, x, x_val):
                return head_training.train_head(dense, x, d.y_train, x_val, d.y_val, **kwargs)
            if x.ndim == 2:  # pooled vectors: the Keras loop trains the layers after the pooling layer
                model = dense
        return train(model, x, d.y_train, x_val, d.y_val, **kwargs)

    def fit_rows(self, hp, *, epochs: int, seed: int) -> dict | None:
        """Train a depth-0 trial's dense head without building its Keras model, when it
        trains in numpy (:mod:`~bench.search.head_training`): returns ``fit``'s result with
        the best epoch's ``weights`` (of the layers after pooling, see
        :meth:`load_head_weights`), or None when the trial needs its model. Raises
        :class:`~bench.search.trainer.NonFiniteLoss` when its loss stops being finite."""
        (result,) = self.fit_together([(hp, seed)], epochs=epochs)
        if isinstance(result, NonFiniteLoss):
            raise result
        return result

    def fit_together(self, trials: list[tuple], *, epochs: int) -> list:
        """:meth:`fit_rows` of several trials ``[(hp, seed)]`` at once: those on the same
        pooled (or flattened) rows train together (:func:`~bench.search.head_training.train_together`:
        each batch read once, every trial's numbers those of training it alone). Returns a
        result per trial: ``fit``'s with its weights, ``fit_seconds`` (its share of the
        group's time) and ``together`` (the trials in its group), the :class:`~bench.search.trainer.NonFiniteLoss` that ended it, or
        None: the trial needs its model; or, after the first trial, its head is kept in
        TensorFlow variables (too large to hold several) or would take the heads past
        :data:`~bench.search.head_training.TOGETHER_WEIGHTS` (it is trained later)."""
        d = self.data
        out: list = [None] * len(trials)
        groups: dict[str, list] = {}
        held = 0  # weights of the heads taken so far
        # the flatten heads' rows first: pooling then reads their float32 matrix (features.matrix)
        # instead of widening the cache entry once more
        order = sorted(range(len(trials)), key=lambda i: trials[i][0].get("pooling") != "flatten")
        for i in order:
            hp, seed = trials[i]
            if "flatten" in groups and hp.get("pooling") != "flatten":
                d.matrices("flatten")  # once made, kept: the later calls only look it up
            spec = self._row_spec(hp, alone=len(trials) == 1)
            if spec is not None and (i == 0 or held + spec[-1] <= head_training.TOGETHER_WEIGHTS):
                pooling, dense, width, n_out, n_weights = spec
                held += n_weights
                start = head_training.initial_weights(width, dense, n_out, seed)
                member = head_training.Member(start, [rate for _, rate in dense], hp.get("learning_rate"), seed)
                groups.setdefault(pooling, []).append((i, member))
        for pooling, items in groups.items():
            x, x_val = d.matrices(pooling)
            t0 = time.perf_counter()
            outcomes = head_training.train_together(
                [member for _, member in items], x, d.y_train, x_val, d.y_val, n_classes=d.n_classes, epochs=epochs,
                batch_size=d.batch_size, class_weight=d.class_weight, objective=d.objective, patience=d.patience,
                order_seed=d.order_seed, deadline=self.deadline)
            share = (time.perf_counter() - t0) / len(items)
            for (i, _), outcome in zip(items, outcomes):
                if isinstance(outcome, NonFiniteLoss):
                    out[i] = outcome
                    continue
                history, weights = outcome
                out[i] = {"history": history, "phase_epochs": [len(history["loss"])], "weights": weights,
                          "cut_short": _cut_short(history, epochs), "fit_seconds": share, "together": len(items)}
        return out

    def _row_spec(self, hp, alone: bool = True) -> tuple | None:
        """``(pooling, dense, width, n_out, n_weights)`` of a depth-0 trial whose dense head trains in
        numpy without its Keras model (float32, both splits and its arrays in memory: see
        :func:`~bench.search.head_training.size_fits`); None for any other. Not ``alone``
        (trained with others), a head of over :data:`~bench.search.head_training.MAX_WEIGHTS`
        weights is None too."""
        if not self.fast_heads or hp.get("unfreeze") != 0 or "tuner/trial_id" in hp.values:
            return None  # Hyperband's continued trials start from their parent's checkpoint
        if keras.mixed_precision.global_policy().compute_dtype != "float32":
            return None
        d = self.data
        pooling, dense = head_spec(hp, self.flatten_hidden)
        x, x_val = d.features(0, pooling)
        n_out = 1 if d.n_classes == 2 else d.n_classes
        units = [units for units, _ in dense]
        if not head_training.size_fits(x, x_val, units, n_out):
            return None
        width = int(np.prod(x.shape[1:]))
        n_weights = head_training.head_weights(width, units, n_out)
        if not alone and n_weights > head_training.MAX_WEIGHTS:
            return None
        return pooling, dense, width, n_out, n_weights

    def predict_rows(self, hp, weights: list, x) -> np.ndarray:
        """A depth-0 trial's output on cached depth-0 rows ``x`` (a fold's held-out images),
        from the ``weights`` of its layers after pooling (as :meth:`fit_rows` trained
        them), in numpy: pooled as its trials pooled (:meth:`TrialData.features`), then
        its dense layers without dropout. The Keras model of the trial gives the same
        numbers to float32 rounding, after building and tracing it (tens of milliseconds
        per fold)."""
        pooling, dense = head_spec(hp, self.flatten_hidden)
        if pooling in ("avg", "max"):
            x = pooled(x, POOL_REDUCE[pooling])
        head = head_training.DenseHead(weights, [rate for _, rate in dense], binary=self.data.n_classes == 2)
        return head.predict(matrix(x))

    @staticmethod
    def load_head_weights(model: keras.Model, weights: list) -> None:
        """Give a depth-0 trial's built head the weights :meth:`fit_rows` trained."""
        _after_pooling(model).set_weights(weights)

    def fit(self, hp, model, *args, epochs: int = 10, seed: int = 0, **kwargs):
        """Train; returns ``{"history": {metric: [per epoch]}, "phase_epochs": [...]}``.

        The model ends with the weights of its best epoch (on the objective), across
        both phases.
        """
        depth, pooling, lr = hp.get("unfreeze"), hp.get("pooling"), hp.get("learning_rate")
        if depth == 0:
            hist = self._train(model, 0, pooling, lr, epochs, 0, seed)
            return {"history": hist, "phase_epochs": [len(hist["loss"])], "cut_short": _cut_short(hist, epochs)}
        warm = max(1, epochs // 2)
        tune = max(1, epochs - warm)
        hist1 = self._train(model.get_layer("head"), 0, pooling, lr, warm, 0, seed)
        if self.past_deadline():  # --budget: the time share ran out in the head's phase
            return {"history": hist1, "phase_epochs": [len(hist1["loss"])], "cut_short": True}
        best1 = _best(hist1, self.data.objective)
        warm_weights = model.get_weights()
        hist2 = self._train(model, depth, None, lr * FINETUNE_LR_FACTOR, tune, len(hist1["loss"]), seed + 1)
        if not hist2.get("loss"):  # --budget: the time share ran out in the first fine-tuning epoch
            model.set_weights(warm_weights)
            return {"history": hist1, "phase_epochs": [len(hist1["loss"])], "cut_short": True}
        if _better(best1, _best(hist2, self.data.objective), self.data.objective):
            model.set_weights(warm_weights)  # fine-tuning never beat the warmed-up head
        merged = {k: list(hist1.get(k, [])) + list(hist2.get(k, [])) for k in hist1.keys() | hist2.keys()}
        return {"history": merged, "phase_epochs": [len(hist1["loss"]), len(hist2["loss"])],
                "cut_short": _cut_short(hist2, tune)}

    def past_deadline(self) -> bool:
        """Whether ``--budget``'s deadline for this search has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline


def _after_pooling(head: keras.Model) -> keras.Model:
    """The head's layers after its pooling layer, as a model on the rows the pooling layer
    gives (a flattened map's, or one value per channel), sharing the head's weights."""
    pool = next(layer for layer in head.layers if layer.name.startswith("pool_"))
    width = int(np.prod(head.input.shape[1:])) if pool.name == "pool_flatten" else head.input.shape[-1]
    inputs = keras.Input(shape=(width,), name="pooled")
    x = inputs
    for layer in head.layers[head.layers.index(pool) + 1 :]:
        x = layer(x)
    return keras.Model(inputs, x, name="head_after_pooling")


def _best(history: dict, objective: str) -> float:
    values = np.asarray(history[objective], dtype=float)
    return float(np.nanmin(values) if OBJECTIVES[objective] == "min" else np.nanmax(values))


def _better(a: float, b: float, objective: str) -> bool:
    """True when ``a`` is strictly better than ``b`` on ``objective``."""
    return a < b if OBJECTIVES[objective] == "min" else a > b


def best_epoch(history: dict, objective: str) -> int:
    """0-based index of the best epoch on ``objective`` (first one on ties)."""
    values = np.asarray(history[objective], dtype=float)
    values = np.where(np.isnan(values), np.inf if OBJECTIVES[objective] == "min" else -np.inf, values)
    return int(np.argmin(values) if OBJECTIVES[objective] == "min" else np.argmax(values))
