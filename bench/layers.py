"""Keras layers that travel inside bench's models (serialisable, no Lambda layers).

Registered under the package name ``bench``: importing this module is what loading a
bench model (``best_model.keras``, an export's ``model.keras``) needs.

Resizing inside the model. bench trains and evaluates on images padded to a centred black
square and resized with Pillow's bilinear filter (:func:`bench.data.images.square_resize`).
Pillow's bilinear filter widens its support when it shrinks (it antialiases) and works in
fixed point with 8-bit rounding after each pass, so ``tf.image.resize`` does not give the
same pixels (up to several grey levels apart). :class:`SquareResize` therefore reimplements
Pillow's two-pass fixed-point algorithm (``libImaging/Resample.c``) with TensorFlow ops:
coefficients computed in float64 in Pillow's order of operations, quantised to 22-bit
integers, sums in int32 (exact), rounding and clipping after each pass as Pillow does. Its
output is bit-for-bit Pillow's, so the exported model on an original file computes exactly
what the run computed on that file; the fidelity check below tests this on every test image.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

_IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="bench")
class BackbonePreprocess(keras.layers.Layer):
    """Map RGB pixel values in [0, 255] to what a backbone family expects.

    ``mode`` is a registry record's ``preprocessing``: ``"tf"`` ([-1, 1]), ``"caffe"``
    (RGB->BGR, ImageNet mean subtracted), ``"torch"`` ([0, 1], ImageNet mean/std) or
    ``"inside"`` (the backbone normalises itself: only a cast to float32). Putting this
    layer in the model means nobody can feed it wrongly scaled pixels.
    """

    MODES = ("tf", "caffe", "torch", "inside")

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"Expected mode in {self.MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_IMAGENET_MEAN_BGR, dtype="float32")
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype="float32")
            std = ops.convert_to_tensor(_IMAGENET_STD, dtype="float32")
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


_PRECISION_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images (32 - 8 - 2)


# ----------------------------------------------------------------------------- layers


def _pil_bilinear_coefficients(in_size, out_size: int):
    """Pillow's bilinear resampling coefficients for ``in_size`` -> ``out_size``.

    Returns ``(index, weight, ksize)``: for output position ``i`` the input positions
    ``index[i, :ksize]`` with 22-bit fixed-point weights ``weight[i, :ksize]`` (zero
    where unused). Mirrors ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of
    ``libImaging/Resample.c``, operation for operation, in float64.
    """
    scale = tf.cast(in_size, tf.float64) / float(out_size)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)  # C's (int) truncates
    xmax = tf.minimum(tf.cast(center + support + 0.5, tf.int32), in_size) - xmin
    r = tf.range(ksize)
    index = xmin[:, None] + r[None, :]
    used = r[None, :] < xmax[:, None]
    distance = tf.abs((tf.cast(index, tf.float64) - center[:, None] + 0.5) * ss)
    w = tf.where(used & (distance < 1.0), 1.0 - distance, tf.zeros_like(distance))
    # Pillow adds the weights left to right; a sequential fold keeps its rounding.
    total = tf.foldl(lambda acc, col: acc + col, tf.transpose(w), initializer=tf.zeros([out_size], tf.float64))
    k = tf.where(total[:, None] != 0.0, w / total[:, None], w)
    weight = tf.where(used, tf.cast(0.5 + k * float(1 << _PRECISION_BITS), tf.int32), 0)
    return tf.minimum(index, in_size - 1), weight, ksize


def _pil_pass(x, index, weight, ksize, axis: int):
    """One fixed-point resampling pass of Pillow along ``axis`` (1: rows, 2: columns)."""

    def add_tap(acc, r):
        taps = tf.cast(tf.gather(x, index[:, r], axis=axis), tf.int32)
        w = weight[:, r]
        w = w[None, :, None, None] if axis == 1 else w[None, None, :, None]
        return acc + taps * w

    shape = tf.shape(tf.gather(x, index[:, 0], axis=axis))
    start = tf.fill(shape, tf.constant(1 << (_PRECISION_BITS - 1), tf.int32))  # Pillow's rounding offset
    acc = tf.foldl(add_tap, tf.range(ksize), initializer=start)
    return tf.cast(tf.clip_by_value(tf.math.floordiv(acc, 1 << _PRECISION_BITS), 0, 255), tf.uint8)


@keras.saving.register_keras_serializable(package="bench")
class SquareResize(keras.layers.Layer):
    """Pad RGB images to a centred black square and resize them to ``size`` x ``size``.

    Input: ``uint8`` ``(batch, height, width, 3)`` of any height and width. Output:
    ``float32`` ``(batch, size, size, 3)`` holding the integer pixel values that
    :func:`bench.data.images.square_resize` (Pillow, bilinear) gives for the same image, bit
    for bit. Images already ``size`` x ``size`` pass through unchanged.
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"Expected size >= 1. Received: size={size!r}")
        self.size = int(size)

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        if x.dtype != tf.uint8:
            x = tf.cast(tf.clip_by_value(tf.round(tf.cast(x, tf.float32)), 0.0, 255.0), tf.uint8)
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        side = tf.maximum(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        x = tf.pad(x, [[0, 0], [top, side - height - top], [left, side - width - left], [0, 0]])

        def resize():
            index, weight, ksize = _pil_bilinear_coefficients(side, self.size)
            across = _pil_pass(x, index, weight, ksize, axis=2)  # Pillow: horizontal pass first
            return _pil_pass(across, index, weight, ksize, axis=1)

        out = tf.cond(tf.equal(side, self.size), lambda: x, resize)
        out = tf.ensure_shape(out, [None, self.size, self.size, 3])
        return tf.cast(out, tf.float32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], self.size, self.size, 3), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="bench")
class ClassProbabilities(keras.layers.Layer):
    """One probability per class: a sigmoid output ``p`` becomes ``(1 - p, p)``."""

    def __init__(self, n_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)

    def call(self, inputs):
        if self.n_classes == 2 and inputs.shape[-1] == 1:
            return keras.ops.concatenate([1.0 - inputs, inputs], axis=-1)
        return inputs

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_classes)

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes}


@keras.saving.register_keras_serializable(package="bench")
class Calibrate(keras.layers.Layer):
    """Calibrated class probabilities: ``softmax((log p - log w) / T)``.

    ``p`` are the model's class probabilities, ``w`` the class weights it was trained with
    (subtracting ``log w`` undoes the prior shift that weighting causes) and ``T`` the
    temperature fitted on the validation split (:mod:`bench.evaluate.calibration`, whose
    :func:`~bench.evaluate.calibration.apply_temperature` computes the same in numpy).
    ``T = 1`` and equal weights give back ``p`` (up to the clipping of ``p`` to
    ``[1e-7, 1 - 1e-7]``).
    """

    EPS = 1e-7

    def __init__(self, temperature: float = 1.0, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, inputs):
        logits = ops.log(ops.clip(ops.cast(inputs, "float32"), self.EPS, 1.0 - self.EPS))
        if self.class_weights is not None:
            logits = logits - ops.log(ops.convert_to_tensor(self.class_weights, dtype="float32"))
        return ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "class_weights": self.class_weights}
