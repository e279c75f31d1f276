"""Keras layers that travel inside bench's models (serialisable, no Lambda layers)."""

from __future__ import annotations

import keras
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
