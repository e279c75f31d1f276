"""Registry of pretrained Keras image backbones, one record per backbone.

>>> import backbones
>>> record = backbones.get("xception")
>>> record.min_size, record.preprocessing
(71, 'tf')
>>> backbones.list_backbones("resnet*")
['resnet50', 'resnet50v2']

Importing the package registers the records of :mod:`backbones.catalog`; it does not
import Keras or TensorFlow (that happens when a model is first built).
"""

from backbones import catalog as _catalog  # noqa: F401  (registers the records)
from backbones.registry import Backbone, Preprocessing, get, list_backbones, register
from backbones.weights import (
    WeightsSpec,
    build_with_weights,
    ensure_available,
    keras_cache_dir,
    parse_weights,
    resolve_weights,
    weights_items,
    weights_label,
    weights_text,
)

__all__ = [
    "Backbone",
    "Preprocessing",
    "WeightsSpec",
    "build_with_weights",
    "ensure_available",
    "get",
    "keras_cache_dir",
    "list_backbones",
    "register",
    "parse_weights",
    "resolve_weights",
    "weights_items",
    "weights_label",
    "weights_text",
]
