"""The export's file formats: Keras (always), TensorFlow SavedModel, TFLite."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from bench.errors import BenchError
from bench.layers import SquareResize

FORMATS = ("keras", "savedmodel", "tflite")
FILES = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}


def save_formats(model: keras.Model, folder: Path, formats: list[str]) -> None:
    # the Keras file is always written: the checks, Grad-CAM and `bench predict` use it
    model.save(folder / FILES["keras"])
    if "savedmodel" in formats:
        save_tf_saved_model(model, folder / FILES["savedmodel"])
    if "tflite" in formats:
        (folder / FILES["tflite"]).write_bytes(tflite_bytes(model))


class _Serving(tf.Module):
    """The SavedModel's content: the model, ``serve`` (also the ``serving_default``
    signature) and ``serve_tta`` (the ``serving_tta`` signature: the mean of the
    probabilities of each image and of its left-right mirror image, test-time
    augmentation). ``keras.Model.export`` would store every variable twice."""

    def __init__(self, model: keras.Model, image_shape: tuple):
        super().__init__()
        self.model = model
        spec = [tf.TensorSpec((None, *image_shape), tf.uint8, name="image")]
        self.serve = tf.function(lambda image: self.model(image, training=False), input_signature=spec)
        self.serve_tta = tf.function(
            lambda image: (self.model(image, training=False) + self.model(tf.reverse(image, axis=[2]), training=False))
            / 2.0,
            input_signature=spec,
        )


def save_tf_saved_model(model: keras.Model, path: Path) -> None:
    """A TensorFlow SavedModel of ``model`` (uint8 images in, probabilities out); loading
    it needs TensorFlow only: ``tf.saved_model.load(path).serve(images)``, or
    ``.serve_tta(images)`` for the flip-averaged probabilities."""
    module = _Serving(model, tuple(model.input.shape[1:]))
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve,
                                                       "serving_tta": module.serve_tta})


def fixed_size_model(model: keras.Model) -> keras.Model:
    """The export without its :class:`SquareResize`: input ``(size, size, 3)`` uint8, already
    padded and resized (what :func:`bench.data.images.load_array` returns); same outputs."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not isinstance(layers[0], SquareResize):
        raise ValueError("Expected a bench export model starting with SquareResize.")
    size = layers[0].size
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = inputs
    for layer in layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_fixed_size")


def tflite_bytes(model: keras.Model) -> bytes:
    """Float32 TFLite flatbuffer of the export's fixed-size part (TFLite builtin ops only).

    TFLite's builtin kernels have no float64 and few dynamic-shape ops, so the exact
    Pillow resize (:class:`SquareResize`) stays out: the TFLite model takes
    ``(1, size, size, 3)`` uint8 images already padded to a square and resized as
    :func:`bench.data.images.square_resize` does (labels.json, ``tflite_input``).
    """
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        # Keras' own export here: converting the _Serving module's SavedModel gives NaNs
        fixed_size_model(model).export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError and friends
            raise BenchError(f"TFLite conversion failed ({str(exc).splitlines()[0][:300]}); export without tflite") from None
