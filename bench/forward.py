"""A model's inference pass, compiled once per model for every batch size.

``model.predict_on_batch`` traces its graph for the first batch's shape and again, with an
open batch dimension, for the next shape it meets: a feature pass (full batches, then the
last, smaller one) and an evaluation (validation, then test) each trace a backbone twice,
about half a second per trace for a small network at a small image size. Here the graph is
traced once, with the batch dimension open from the start, and kept for as long as the
model lives, so the caching pass, the evaluation and the latency measurement of one model
share one trace.
"""

from __future__ import annotations

import weakref

import numpy as np

_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_BATCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> batch sizes it has run


def compiled(model):
    """``model(x, training=False)`` as one ``tf.function`` whose input signature is the
    model's own input with an open batch dimension (made on first use, kept with the model)."""
    fn = _COMPILED.get(model)
    if fn is None:
        import tensorflow as tf

        ref = weakref.ref(model)  # the function must not keep the model alive
        spec = tf.TensorSpec([None, *model.input.shape[1:]], model.input.dtype)
        fn = tf.function(lambda x: ref()(x, training=False), autograph=False, input_signature=[spec])
        _COMPILED[model] = fn
    return fn


def predict_batch(model, batch):
    """``model.predict_on_batch(batch)`` by :func:`compiled`: a numpy array, or a list of
    them for a model of several outputs. A model that is not a Keras model (an OpenVINO
    prefix) is called as it is."""
    import keras
    import tensorflow as tf

    if not isinstance(model, keras.Model):
        return model.predict_on_batch(batch)
    fn = compiled(model)
    out = fn(tf.convert_to_tensor(np.asarray(batch), dtype=fn.input_signature[0].dtype))
    _BATCHES.setdefault(model, set()).add(len(batch))
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return np.asarray(out)


def has_run(model, batch_size: int | None = None) -> bool:
    """Whether :func:`predict_batch` has run ``model`` on a batch of ``batch_size`` (its
    compiled pass is then warm for that shape: a latency measurement needs no warm-up);
    ``None``: on a batch of any size (its pass is traced)."""
    return bool(_BATCHES.get(model)) if batch_size is None else batch_size in _BATCHES.get(model, ())
