"""The exported model: the run's best model behind an exact Pillow resize, raw uint8
images in, class probabilities out; and ``labels.json``, its input/output contract."""

from __future__ import annotations

import re
from typing import Iterable

import keras

from bench.deploy.run_info import RunInfo
from bench.errors import BenchError
from bench.layers import BackbonePreprocess, Calibrate, ClassProbabilities, SquareResize

#: 2: the model ends in bench's Calibrate layer and labels.json holds the calibration and
#: the operating points.
EXPORT_FORMAT_VERSION = 2


def build_export_model(info: RunInfo) -> keras.Model:
    """The run's best model with raw-image input: any-size uint8 RGB -> class probabilities."""
    source = keras.saving.load_model(info.model_path, compile=False)
    inner = [layer for layer in source.layers if not isinstance(layer, keras.layers.InputLayer)]
    size = tuple(source.input.shape[1:])
    if not inner or not isinstance(inner[0], BackbonePreprocess) or inner[-1].name != "head" \
            or size != (info.image_size, info.image_size, 3):
        raise BenchError(f"{info.model_path} is not a bench model (BackbonePreprocess -> backbone -> head at "
                         f"{info.image_size}px); was it written by another bench version? Re-run the backbone")
    inputs = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = SquareResize(info.image_size, name="square_resize")(inputs)
    for layer in inner:  # BackbonePreprocess -> backbone -> head, a plain chain
        x = layer(x)
    outputs = ClassProbabilities(len(info.classes), name="raw_probabilities")(x)
    fitted = info.calibration
    if fitted is not None:
        outputs = Calibrate(fitted["temperature"], fitted.get("class_weights"), name="probabilities")(outputs)
    # TensorFlow's name scopes refuse '@' (a run comparing several weights names rows backbone@weights)
    return keras.Model(inputs, outputs, name=f"{re.sub(r'[^A-Za-z0-9_.-]', '_', info.backbone)}_export")


def dicom_contract(window: str) -> dict:
    """How DICOM files become the model's uint8 RGB input (``labels.json`` ``dicom``): done by
    bench before the model (``bench predict``, ``evaluate``, ``serve``), as in the run."""
    from bench.config import describe_window

    return {
        "window": window,
        "pixels": (f"modality LUT (rescale slope and intercept); window: {describe_window(window)}; the window's "
                   "range to 0..255, MONOCHROME1 inverted, grey copied to R, G and B (bench.data.dicom, before the "
                   "model)"),
        "frames": "single-frame files only",
    }


def labels_dict(info: RunInfo, formats: Iterable[str] = ("keras",)) -> dict:
    classes = info.classes
    out = {
        "format": EXPORT_FORMAT_VERSION,
        "classes": classes,
        "output": "probabilities, one per class, in the order of 'classes'",
        "input": {
            "dtype": "uint8",
            "channels": "RGB",
            "shape": "(batch, height, width, 3); any height and width, one size per batch",
            "inside_the_model": (
                f"pad to a centred black square, bilinear resize to {info.image_size}x{info.image_size} "
                "(bit-identical to Pillow's), then the backbone's own normalisation"
            ),
        },
        "image_size": info.image_size,
        "backbone": info.backbone,
        "dicom": dicom_contract(info.window),
    }
    if "tflite" in formats:
        out["tflite_input"] = (
            f"(1, {info.image_size}, {info.image_size}, 3) uint8 RGB, already padded to a centred black square "
            f"and bilinear-resized (bench.data.images.square_resize); normalisation is inside"
        )
    fitted = info.calibration
    if fitted is not None:
        out["calibration"] = {k: fitted[k] for k in ("temperature", "class_weights", "fitted_on", "method")}
    if len(classes) == 2:
        points = (fitted or {}).get("operating_points") or {}
        out.update(
            positive_class=info.positive_class,
            threshold=info.threshold,
            decision_rule=(
                f"'{info.positive_class}' when probability[{info.positive_class!r}] >= threshold, "
                f"else '{classes[0]}' (threshold chosen on the validation split)"
            ),
            operating_points={name: {"threshold": p["threshold"], "rule": p["rule"]} for name, p in points.items()},
        )
    else:
        out.update(positive_class=None, threshold=None, decision_rule="the class with the highest probability")
    return out
