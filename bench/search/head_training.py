"""Dense heads trained at the speed of their arithmetic.

A trial at unfreeze depth 0 trains a head of dense layers on cached vectors (pooled, or
a flattened feature map): a few hundred rows, a few epochs, a few million multiply-adds
per batch. Run through a Keras model and a compiled step per batch, most of its time is
not arithmetic: each new model traces its own step and predict functions, and every
batch crosses from Python into TensorFlow and back. Here the head is a handful of numpy
arrays (kernels and biases, in the order ``model.get_weights()`` lists them): the forward
pass, back-propagation and Adam's update are matrix products and in-place array
operations, with nothing to trace or compile, and the Keras model only lends its initial
weights and receives the trained ones. A head over :data:`MAX_WEIGHTS` weights (a flatten
head on a large map) keeps its arrays in TensorFlow variables, and its rows in one tensor,
and runs the same steps as single TensorFlow ops, eagerly (:class:`TensorHead`): still
nothing traced, a batch one gather, and Adam one fused pass over each array.

The semantics are :func:`bench.search.trainer.train`'s: Keras' initial weights (a built
model's own, or the same distributions drawn by :func:`initial_weights`), Adam with
Keras' constants, class weights scaling each sample's loss (mean over the batch),
inverted dropout in training only, Keras' clipped cross-entropy, an unweighted
validation loss, early stopping that restores the best epoch on the objective, and the
same history keys. From the same initial weights and without dropout
a trial follows the Keras path's numbers to float32 rounding
(``tests/test_head_training.py``); initial weights drawn here and dropout masks come from
numpy's random stream, so a trial's scores agree with the Keras path's within seed noise
(``benchmarks/search_speed.py`` shows both paths on the same trials). The end of each
epoch (metrics, best epoch, early stopping) is the Keras path's own
(:class:`bench.search.trainer.Epochs`).

:func:`fits` (for a built model) and :func:`size_fits` say whether a head qualifies:
dense layers only, float32 compute, and both splits and the head's arrays small enough
to hold in memory (:data:`MEMORY_BUDGET_BYTES`). Anything else (fine-tuned blocks,
float16 heads, splits over the budget) takes the Keras path. ``BENCH_HEAD_TRAINER=keras``
sends every trial there (benchmarks compare the two).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bench.search.features import MatrixRows, matrix
from bench.search.trainer import Epochs, NonFiniteLoss, epoch_order, sample_cross_entropy, sample_weights, targets

#: Largest train + validation inputs, in float32 bytes, held in memory for one trial.
MEMORY_BUDGET_BYTES = 768 * 2**20
#: Largest head, in weights, whose arrays are numpy's (:class:`DenseHead`). Above it (a
#: flatten head on a large feature map: tens of millions of weights) memory traffic over
#: the weights sets the pace, and TensorFlow's fused Adam kernel (one multi-threaded pass
#: over each array) beats numpy's dozen single-threaded passes by about two to one, so
#: those heads keep their arrays in TensorFlow variables (:class:`TensorHead`).
MAX_WEIGHTS = 2_000_000
#: Arrays of a head's size a trial holds: weights, Adam's two moments, gradients, the best
#: epoch's copy.
WEIGHT_COPIES = 5
#: Weights of the heads trained together (:func:`train_together`) at most: about 100 MB
#: with their copies (:data:`WEIGHT_COPIES`).
TOGETHER_WEIGHTS = 2 * MAX_WEIGHTS + 1_000_000
#: Keras' Adam constants (keras.optimizers.Adam defaults).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7
#: Elements of an array Adam updates at a time (5 float32 blocks stay in a core's L2 cache).
ADAM_BLOCK = 64 * 1024


def head_layers(model) -> list[tuple[str, float]] | None:
    """The head's layers after its input as ``[("dense", 0.0) | ("dropout", rate), ...]``
    ending with the output layer, or None when it holds anything else (pooling, a
    backbone block, a non-ReLU hidden activation)."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Dropout):
            out.append(("dropout", float(layer.rate)))
        elif isinstance(layer, keras.layers.Dense):
            activation = keras.activations.serialize(layer.activation)
            name = activation if isinstance(activation, str) else activation.get("config", {}).get("name", activation)
            out.append(("dense", name))
        else:
            return None
    if not out or out[-1][0] != "dense" or out[-1][1] not in ("sigmoid", "softmax"):
        return None
    if any(kind == "dense" and act != "relu" for kind, act in out[:-1]):
        return None
    return out


def head_weights(width: int, units: list[int], n_out: int) -> int:
    """Weights (kernels and biases) of a head of hidden layers ``units`` and ``n_out``
    outputs on rows of ``width`` values."""
    sizes = [width, *units, n_out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def size_fits(x, x_val, units: list[int], n_out: int) -> bool:
    """Whether a head of hidden layers ``units`` and ``n_out`` outputs on rows of ``x``
    trains here: both splits (as :func:`~bench.search.features.matrix` makes them) and the head's weights with
    Adam's state within :data:`MEMORY_BUDGET_BYTES`."""
    width = int(np.prod(x.shape[1:]))
    n_weights = head_weights(width, units, n_out)
    rows = 4 * (x.shape[0] + x_val.shape[0]) * width
    return int(np.prod(x_val.shape[1:])) == width and rows + 4 * WEIGHT_COPIES * n_weights <= MEMORY_BUDGET_BYTES


def fits(model, x, x_val) -> bool:
    """Whether ``model`` trains here on ``x`` (as :func:`~bench.search.features.matrix` makes it): dense
    layers only, float32 compute, and both splits within :data:`MEMORY_BUDGET_BYTES`."""
    width = int(np.prod(x.shape[1:]))
    if model.input.shape[-1] != width or len(model.input.shape) != 2:
        return False
    if model.compute_dtype != "float32" or any(layer.compute_dtype != "float32" for layer in model.layers):
        return False
    if head_layers(model) is None:
        return False
    units = [layer.units for layer in model.layers if hasattr(layer, "units")]
    return size_fits(x, x_val, units[:-1], units[-1])


def initial_weights(width: int, dense: list[tuple[int, float]], n_out: int, seed: int) -> list[np.ndarray]:
    """Keras' defaults for a head of ``dense`` layers ``[(units, dropout)]`` on rows of
    ``width`` values and ``n_out`` outputs: Glorot-uniform kernels, zero biases, in
    ``get_weights()`` order."""
    rng = np.random.default_rng(seed)
    sizes = [width] + [units for units, _ in dense] + [n_out]
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = np.float32(math.sqrt(6.0 / (fan_in + fan_out)))
        kernel = rng.random((fan_in, fan_out), dtype=np.float32)  # drawn in float32: a flatten head's
        kernel *= 2 * limit  # kernel (tens of millions of weights) in a fraction of float64's time
        kernel -= limit
        weights += [kernel, np.zeros(fan_out, np.float32)]
    return weights


# -- one epoch in numpy ------------------------------------------------------------------
class DenseHead:
    """A dense head's weights and Adam's state as float32 arrays (in ``get_weights()``
    order), with the forward pass, back-propagation and Adam's in-place update."""

    def __init__(self, weights: list[np.ndarray], rates: list[float], binary: bool) -> None:
        self.params = [np.array(w, dtype=np.float32) for w in weights]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.scratch = [np.empty_like(p) for p in self.params]
        self.grads = [np.empty_like(p) for p in self.params]
        self.rates, self.binary, self.steps = list(rates), binary, 0
        self._batch: np.ndarray | None = None  # :meth:`take`'s buffer

    def forward(self, x: np.ndarray, rng: np.random.Generator | None = None):
        """Output probabilities; with ``rng`` (training), dropout is on and the
        activations and masks are returned for :meth:`backward`."""
        acts, masks, h = [x], [], x
        for i, rate in enumerate(self.rates):
            h = h @ self.params[2 * i]
            h += self.params[2 * i + 1]
            np.maximum(h, 0.0, out=h)
            if rng is not None and rate > 0:
                mask = _dropout_mask(rng, h.shape, rate)
                h *= mask
                masks.append(mask)
            else:
                masks.append(None)
            acts.append(h)
        logits = h @ self.params[-2]
        logits += self.params[-1]
        return _activate(logits, self.binary), acts, masks

    def backward(self, proba, y, w, acts, masks) -> list[np.ndarray]:
        """Gradients of the batch's weighted loss (mean over the batch, as Keras reduces
        it) from the output probabilities (the cross-entropy's gradient at the logits is
        ``proba - y``)."""
        delta = (proba - y) * (w / np.float32(len(w)))[:, None]
        grads = self.grads
        for i in range(len(self.rates), -1, -1):
            np.matmul(acts[i].T, delta, out=grads[2 * i])  # into a kept buffer: no fresh pages per step
            np.sum(delta, axis=0, out=grads[2 * i + 1])
            if i:
                delta = delta @ self.params[2 * i].T
                if masks[i - 1] is not None:
                    delta *= masks[i - 1]
                delta *= acts[i] > 0
        return grads

    def adam(self, grads: list[np.ndarray], lr: float) -> None:
        """Keras' Adam step, in place (``lr * sqrt(1 - b2^t) / (1 - b1^t)``, epsilon
        outside the root), a cache-sized block of each array at a time: a flatten head's
        kernel (tens of millions of weights) is then read from memory about once per
        step instead of once per operation."""
        self.steps += 1
        lr_t = np.float32(lr * math.sqrt(1.0 - BETA_2**self.steps) / (1.0 - BETA_1**self.steps))
        for p, m, v, g, tmp in zip(self.params, self.m, self.v, grads, self.scratch):
            p, m, v, g, tmp = (a.reshape(-1) for a in (p, m, v, g, tmp))
            for start in range(0, p.size, ADAM_BLOCK):
                block = slice(start, start + ADAM_BLOCK)
                _adam_block(p[block], m[block], v[block], g[block], tmp[block], lr_t)

    def predict(self, x: np.ndarray, batch: int = 1024) -> np.ndarray:
        return np.concatenate([self.forward(x[i:i + batch])[0] for i in range(0, len(x), batch)])

    def hold(self, x: np.ndarray):
        """``x`` as this head reads its rows (:meth:`take`): the array itself."""
        return x

    def take(self, x, idx: np.ndarray):
        """The rows ``idx`` of ``x`` (as :meth:`hold` gave it): one batch, copied into a
        buffer kept for the purpose and valid until the next call (a fresh array per
        batch of a flattened map, megabytes, costs its page faults on every step)."""
        if isinstance(x, MatrixRows):
            x, idx = x.matrix, x.index[idx]
        kept = self._batch
        if kept is None or kept.shape[0] < len(idx) or kept.shape[1:] != x.shape[1:] or kept.dtype != x.dtype:
            kept = self._batch = np.empty((len(idx), *x.shape[1:]), x.dtype)
        return np.take(x, idx, axis=0, out=kept[: len(idx)], mode="clip")  # "clip": unbuffered; idx is in range

    def copy_params(self) -> list[np.ndarray]:
        """A copy of the weights (the best epoch's, kept while training goes on)."""
        return [p.copy() for p in self.params]


class TensorHead(DenseHead):
    """A :class:`DenseHead` over :data:`MAX_WEIGHTS` weights (a flatten head on a large
    map: tens of millions), whose weights and Adam state live in TensorFlow variables.
    Its matrix products and Adam's update run as single TensorFlow ops, eagerly: nothing
    is traced or compiled, and Adam is TensorFlow's fused kernel (``ResourceApplyAdam``,
    the same update as :meth:`DenseHead.adam`), one multi-threaded pass over each array
    where numpy makes a dozen single-threaded ones. Such a step is bound by memory
    traffic over the weights, so the pass count is its speed."""

    def __init__(self, weights: list[np.ndarray], rates: list[float], binary: bool) -> None:
        import tensorflow as tf

        self.tf = tf
        self.vars = [tf.Variable(np.asarray(w, dtype=np.float32)) for w in weights]
        self.m = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.best: list[np.ndarray] | None = None  # the best epoch's weights, written in place
        self.rates, self.binary, self.steps = list(rates), binary, 0

    @property
    def params(self) -> list[np.ndarray]:
        """The weights as numpy arrays of their own (Adam updates the variables in place)."""
        return [np.array(v.numpy(), copy=True) for v in self.vars]

    def hold(self, x: np.ndarray):
        """The rows as one TensorFlow tensor, copied once: a batch is then one gather, not
        a numpy copy and its conversion."""
        return self.tf.constant(np.asarray(x))

    def take(self, x, idx: np.ndarray):
        return self.tf.gather(x, idx)

    def copy_params(self) -> list[np.ndarray]:
        """The weights copied into numpy arrays kept for the purpose: no fresh memory per
        improved epoch (a new copy of a 100 MB kernel costs its page faults), and none
        from TensorFlow's allocator, which keeps what it once held for reuse (a variable's
        copy would also make Adam's next in-place update copy the variable first)."""
        if self.best is None:
            self.best = [np.empty(v.shape, np.float32) for v in self.vars]
        for kept, v in zip(self.best, self.vars):
            np.copyto(kept, v.numpy())
        return self.best

    def forward(self, x: np.ndarray, rng: np.random.Generator | None = None):
        tf = self.tf
        h = tf.convert_to_tensor(x)
        acts, masks = [h], []
        for i, rate in enumerate(self.rates):
            h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, self.vars[2 * i]), self.vars[2 * i + 1]))
            mask = None
            if rng is not None and rate > 0:
                mask = _dropout_mask(rng, tuple(h.shape), rate)
                h = h * mask
            masks.append(mask)
            acts.append(h)
        logits = tf.nn.bias_add(tf.matmul(h, self.vars[-2]), self.vars[-1]).numpy()
        return _activate(logits, self.binary), acts, masks

    def backward(self, proba, y, w, acts, masks) -> list:
        tf = self.tf
        delta = tf.convert_to_tensor((proba - y) * (w / np.float32(len(w)))[:, None])
        grads = [None] * len(self.vars)
        for i in range(len(self.rates), -1, -1):
            grads[2 * i] = tf.matmul(acts[i], delta, transpose_a=True)
            grads[2 * i + 1] = tf.reduce_sum(delta, axis=0)
            if i:
                delta = tf.matmul(delta, self.vars[2 * i], transpose_b=True)
                if masks[i - 1] is not None:
                    delta = delta * masks[i - 1]
                delta = tf.where(acts[i] > 0, delta, 0.0)
        return grads

    def adam(self, grads: list, lr: float) -> None:
        self.steps += 1
        for p, m, v, g in zip(self.vars, self.m, self.v, grads):
            self.tf.raw_ops.ResourceApplyAdam(
                var=p.handle, m=m.handle, v=v.handle, beta1_power=np.float32(BETA_1**self.steps),
                beta2_power=np.float32(BETA_2**self.steps), lr=np.float32(lr), beta1=np.float32(BETA_1),
                beta2=np.float32(BETA_2), epsilon=np.float32(EPSILON), grad=g)


def _dropout_mask(rng: np.random.Generator, shape: tuple, rate: float) -> np.ndarray:
    """Inverted dropout's mask: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    return (rng.random(shape, dtype=np.float32) >= rate).astype(np.float32) / np.float32(1.0 - rate)


def _adam_block(p, m, v, g, tmp, lr_t) -> None:
    m *= BETA_1
    np.multiply(g, 1.0 - BETA_1, out=tmp)
    m += tmp
    v *= BETA_2
    np.square(g, out=tmp)
    tmp *= 1.0 - BETA_2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += EPSILON
    np.divide(m, tmp, out=tmp)
    tmp *= lr_t
    p -= tmp


def _activate(logits: np.ndarray, binary: bool) -> np.ndarray:
    if binary:
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))).astype(np.float32)
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _batch_loss(proba: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """The batch's class-weighted cross-entropy, the mean over the batch (as Keras reduces it)."""
    return float(np.sum(sample_cross_entropy(y, proba) * w) / len(w))


def train_head(model, x, y: np.ndarray, x_val, y_val: np.ndarray, **kwargs) -> dict[str, list[float]]:
    """Train the dense head ``model`` in place (:func:`fits` must hold): its weights are
    the start, and it ends with the best epoch's (see :func:`train_rows`)."""
    layers = head_layers(model)
    hidden = [i for i, (kind, _) in enumerate(layers[:-1]) if kind == "dense"]
    # a rate per hidden layer (0 where no dropout follows it)
    rates = [layers[i + 1][1] if layers[i + 1][0] == "dropout" else 0.0 for i in hidden]
    history, weights = train_rows(model.get_weights(), rates, x, y, x_val, y_val, **kwargs)
    model.set_weights(weights)
    return history


def train_rows(
    weights: list[np.ndarray], rates: list[float], x, y: np.ndarray, x_val, y_val: np.ndarray, *,
    learning_rate: float, seed: int = 0, order_seed: int | None = None, **kwargs,
) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """Train a dense head given as its initial ``weights`` (kernels and biases in
    ``get_weights()`` order) and the dropout ``rates`` after each hidden layer, on rows
    ``x`` (arrays or FeatureRows, flattened by :func:`~bench.search.features.matrix`); returns the per-epoch
    history (the keys :func:`bench.search.trainer.train` gives) and the best epoch's
    weights. ``seed``: its dropout masks, and the batches' order unless ``order_seed`` is
    given; ``kwargs``: those of :func:`train_together`. Raises
    :class:`~bench.search.trainer.NonFiniteLoss` when the loss stops being finite."""
    (outcome,) = train_together([Member(weights, rates, learning_rate, seed)], x, y, x_val, y_val,
                                order_seed=seed if order_seed is None else order_seed, **kwargs)
    if isinstance(outcome, NonFiniteLoss):
        raise outcome
    return outcome


@dataclass(frozen=True)
class Member:
    """One head of :func:`train_together`: its initial weights (``get_weights()`` order),
    dropout rate after each hidden layer, learning rate, and the seed of its dropout masks."""

    weights: list
    rates: list[float]
    learning_rate: float
    seed: int


def train_together(
    members: list[Member], x, y: np.ndarray, x_val, y_val: np.ndarray, *,
    n_classes: int, epochs: int, batch_size: int = 32, class_weight: dict[int, float] | None = None,
    objective: str = "val_auc", patience: int = 5, order_seed: int = 0, initial_epoch: int = 0,
    deadline: float | None = None,
) -> list:
    """Train the dense heads ``members`` on the same rows and the same batches
    (:func:`~bench.search.trainer.epoch_order` of ``order_seed``): each batch is gathered
    once and every head still in training takes its step on it. A head's numbers are
    those of training it alone: nothing but the batch is shared (its dropout masks come
    from its own seed), and each stops on its own (early stopping, or a loss that stops
    being finite). Returns, per member, ``(history, best epoch's weights)``, or the
    :class:`~bench.search.trainer.NonFiniteLoss` that ended it (``deadline``: see
    :class:`~bench.search.trainer.Epochs`)."""
    heads = [_head_for(m.weights)(m.weights, m.rates, n_classes == 2) for m in members]
    holder = heads[0]
    if any(type(h) is not type(holder) for h in heads):
        raise ValueError("heads trained together keep their arrays alike (all numpy, or all TensorFlow)")
    x, x_val = holder.hold(matrix(x, gather_later=True)), holder.hold(matrix(x_val))
    y_true, y_val_true = targets(y, n_classes), targets(y_val, n_classes)
    weights = sample_weights(y, class_weight)
    rngs = [np.random.default_rng(m.seed) for m in members]
    runs = [Epochs(objective, patience, n_classes, deadline, seed=m.seed) for m in members]
    outcome: list = [None] * len(members)
    active = list(range(len(members)))
    for epoch in range(initial_epoch, initial_epoch + epochs):
        if not active:
            break
        order = epoch_order(order_seed, epoch, len(y))
        spent = dict.fromkeys(active, 0.0)  # each head's seconds this epoch, the shared gathers split
        total = dict.fromkeys(active, 0.0)
        train_proba = {i: np.zeros((len(y), y_true.shape[1]), "float32") for i in active}
        for start in range(0, len(order), batch_size):
            if not active:
                break
            t_batch = time.perf_counter()
            idx = np.sort(order[start:start + batch_size])
            xb, yb, wb = holder.take(x, idx), y_true[idx], weights[idx]
            shared = (time.perf_counter() - t_batch) / len(active)
            for i in list(active):
                t_head = time.perf_counter()
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a non-finite loss ends it
                    proba, acts, masks = heads[i].forward(xb, rngs[i])
                    loss = _batch_loss(proba, yb, wb)
                if not math.isfinite(loss):
                    outcome[i] = NonFiniteLoss(f"loss became {loss} at epoch {epoch + 1}; "
                                               "the learning rate is probably too high")
                    active.remove(i)
                    continue
                with np.errstate(over="ignore", invalid="ignore"):
                    heads[i].adam(heads[i].backward(proba, yb, wb, acts, masks), members[i].learning_rate)
                total[i] += loss * len(idx)
                train_proba[i][idx] = proba
                spent[i] += shared + time.perf_counter() - t_head
        for i in list(active):
            started = time.perf_counter() - spent[i]  # the epoch's seconds are this head's own
            if runs[i].end(epoch, started, total[i] / len(y), y, train_proba[i], y_val, y_val_true,
                           heads[i].predict(x_val), heads[i].copy_params):
                active.remove(i)
    return [outcome[i] if outcome[i] is not None else
            (runs[i].history, runs[i].best_weights if runs[i].best_weights is not None else heads[i].params)
            for i in range(len(members))]


def _head_for(weights: list) -> type:
    """Where a head of these arrays keeps them: numpy, or TensorFlow variables over
    :data:`MAX_WEIGHTS` weights."""
    return TensorHead if sum(int(np.prod(np.shape(w))) for w in weights) > MAX_WEIGHTS else DenseHead
