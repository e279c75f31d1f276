"""The backbone record and the registry that holds one record per backbone.

A :class:`Backbone` says everything the pipeline needs to know about one pretrained
Keras application: how to construct it, which input sizes it accepts, which input
normalisation its ImageNet weights expect, how wide its final feature map is, and where
"unfreeze the top N blocks" cuts it. The shape follows timm's ``PretrainedCfg`` (a typed,
frozen record); the registry follows timm's ``_registry.py`` (``register``, ``get``,
``list_backbones`` with wildcards).

Importing this module does not import Keras or TensorFlow: constructors are dotted
names that :meth:`Backbone.build` resolves when a model is actually built.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from bench.errors import BenchError

if TYPE_CHECKING:
    import keras

Preprocessing = Literal["tf", "caffe", "torch", "inside"]
"""How a backbone's ImageNet weights expect their inputs (RGB values in [0, 255]):

- ``"tf"``: scaled to [-1, 1] (``x / 127.5 - 1``).
- ``"caffe"``: RGB -> BGR, ImageNet channel means subtracted, no scaling.
- ``"torch"``: scaled to [0, 1], then ImageNet mean/std normalised per channel.
- ``"inside"``: the model normalises its own inputs; feed raw [0, 255] values.
"""

# The constants of keras.applications.imagenet_utils.preprocess_input.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Backbone:
    """One pretrained backbone, modelled on timm's ``PretrainedCfg``.

    Attributes:
        name: Registry name, lower case with underscores (``"xception"``).
        family: Architecture family (``"resnet"``, ``"efficientnet"``, ...).
        constructor: Dotted name of the Keras constructor, resolved lazily
            (``"keras.applications.Xception"``).
        default_size: Input size (px) the ImageNet weights were trained at.
        min_size: Smallest input size the constructor accepts with
            ``include_top=False``.
        preprocessing: Input normalisation the weights expect (see
            :data:`Preprocessing`).
        feature_width: Channels of the final feature map (before pooling).
        gmacs: Multiply-adds of one image at ``default_size``, in billions, as
            :func:`backbones.cost.count_macs` counts them on the built model
            (convolutions and dense layers): what ranks backbones by cost.
        blocks: Block boundaries, bottom to top: names of layers whose outputs are
            clean cuts (the rest of the network depends on that tensor alone). The
            last entry produces the final feature map. Unfreezing the top ``n``
            blocks freezes the model up to and including ``blocks[-(n + 1)]``.
        weights_file: File name Keras downloads for the ImageNet no-top weights;
            ``{size}`` stands for the input size when the file depends on it.
        weights_sizes: Input sizes with their own weights file (only when
            ``weights_file`` contains ``{size}``); other sizes use
            ``default_size``'s file, as Keras does.
        constructor_kwargs: Extra keyword arguments for the constructor.
        renames: ``(layer class, index among that class's layers, new name)``:
            stable names :meth:`build` gives to layers Keras leaves auto-named
            (``"add_7"``), whose numbers depend on how many layers the session
            created before. Only used for weightless layers or the final layer.
        imagenet_rescale: Per-channel factor that Keras inserts after the input
            ``Normalization`` layer only when it builds the model with
            ``weights="imagenet"`` (EfficientNet V1). Loading the same weights from
            a local file must apply it too; see ``backbones.weights``.
        notes: Free text for reports and model cards.
    """

    name: str
    family: str
    constructor: str
    default_size: int
    min_size: int
    preprocessing: Preprocessing
    feature_width: int
    gmacs: float
    blocks: tuple[str, ...]
    weights_file: str
    weights_sizes: tuple[int, ...] = ()
    constructor_kwargs: tuple[tuple[str, object], ...] = ()
    renames: tuple[tuple[str, int, str], ...] = ()
    imagenet_rescale: tuple[float, ...] | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.name != _normalise(self.name):
            raise ValueError(f"backbone name must be lower case with '_': {self.name!r}")
        if self.preprocessing not in get_args(Preprocessing):
            raise ValueError(f"{self.name}: unknown preprocessing {self.preprocessing!r}")
        if not 0 < self.min_size <= self.default_size:
            raise ValueError(f"{self.name}: need 0 < min_size <= default_size")
        if not self.blocks or len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"{self.name}: blocks must be non-empty and unique")
        if ("{size}" in self.weights_file) != bool(self.weights_sizes):
            raise ValueError(f"{self.name}: '{{size}}' in weights_file needs weights_sizes")

    def macs(self, image_size: int | None = None) -> float:
        """Multiply-adds of one image at ``image_size`` (default: :attr:`default_size`):
        :attr:`gmacs` scaled by the image area (the counts of convolutions on a
        smaller map; near the smallest sizes padding makes it approximate)."""
        size = self.default_size if image_size is None else int(image_size)
        return self.gmacs * 1e9 * (size / self.default_size) ** 2

    # ----------------------------------------------------------------- building

    @property
    def max_unfreeze(self) -> int:
        """Largest valid unfreeze depth (``len(blocks) - 1``)."""
        return len(self.blocks) - 1

    def resolve_constructor(self) -> Callable[..., keras.Model]:
        """Import and return the Keras constructor named by :attr:`constructor`."""
        module_name, _, attr = self.constructor.rpartition(".")
        return getattr(importlib.import_module(module_name), attr)

    def check_size(self, image_size: int) -> None:
        """Raise :class:`BenchError` if ``image_size`` is below :attr:`min_size`."""
        if image_size < self.min_size:
            raise BenchError(
                f"image size {image_size} is below {self.name}'s minimum of "
                f"{self.min_size}; use --image-size {self.min_size} or more"
            )

    def build(self, weights: str | None = None, image_size: int | None = None) -> keras.Model:
        """Build the backbone without its classifier (``include_top=False``).

        Args:
            weights: ``None`` (random init), ``"imagenet"`` (Keras downloads or reuses
                its cached file) or a weights file path, passed to the constructor.
                Prefer ``backbones.weights.build_with_weights``: it checks the
                weights first and always returns the ``weights=None`` architecture
                (Keras' EfficientNet adds an input layer for ``"imagenet"`` only).
            image_size: Square input size in px; defaults to :attr:`default_size`.

        Returns:
            A functional model mapping ``(batch, s, s, 3)`` inputs, preprocessed with
            :meth:`preprocess`, to the final feature map.
        """
        size = self.default_size if image_size is None else int(image_size)
        self.check_size(size)
        model = self.resolve_constructor()(
            include_top=False,
            weights=weights,
            input_shape=(size, size, 3),
            **dict(self.constructor_kwargs),
        )
        for class_name, index, new_name in self.renames:
            matches = [layer for layer in model.layers if type(layer).__name__ == class_name]
            matches[index].name = new_name
        return model

    def weights_filename(self, image_size: int | None = None) -> str:
        """Name of the ImageNet no-top weights file Keras uses at ``image_size``."""
        if not self.weights_sizes:
            return self.weights_file
        size = image_size if image_size in self.weights_sizes else self.default_size
        return self.weights_file.format(size=size)

    # ------------------------------------------------------------ preprocessing

    def preprocess(self, x: ArrayLike) -> np.ndarray:
        """Map RGB values in [0, 255] (uint8 or float, channels last) to model inputs.

        Same arithmetic as the family's ``keras.applications.*.preprocess_input``,
        but always returns a new float32 array (Keras' version may modify a float
        input in place). For ``"inside"`` the values are only cast: the model
        normalises them itself, so normalising here too would do it twice.
        """
        x = np.array(x, dtype=np.float32)  # always a copy
        if self.preprocessing == "tf":
            return x / np.float32(127.5) - np.float32(1.0)
        if self.preprocessing == "caffe":
            return x[..., ::-1] - _CAFFE_MEAN_BGR
        if self.preprocessing == "torch":
            return (x / np.float32(255.0) - _TORCH_MEAN) / _TORCH_STD
        return x

    def expected_range(self) -> tuple[float, float]:
        """Smallest and largest value :meth:`preprocess` yields for inputs in [0, 255]."""
        if self.preprocessing == "tf":
            return (-1.0, 1.0)
        if self.preprocessing == "caffe":
            return (float(-_CAFFE_MEAN_BGR.max()), float((255.0 - _CAFFE_MEAN_BGR).max()))
        if self.preprocessing == "torch":
            return (float((-_TORCH_MEAN / _TORCH_STD).min()),
                    float(((1.0 - _TORCH_MEAN) / _TORCH_STD).max()))
        return (0.0, 255.0)

    # ------------------------------------------------------------------ cutting

    def cut_layer(self, n: int) -> str:
        """Name of the last frozen layer when the top ``n`` blocks are trainable."""
        if not 0 <= n <= self.max_unfreeze:
            raise BenchError(
                f"cannot unfreeze {n} blocks of {self.name}: choose 0 to "
                f"{self.max_unfreeze} (its block boundaries: {', '.join(self.blocks)})"
            )
        return self.blocks[-(n + 1)]

    def split(self, model: keras.Model, n: int) -> tuple[keras.Model, keras.Model]:
        """Split a model from :meth:`build` into ``(frozen prefix, trainable top)``.

        The prefix maps images to the output of :meth:`cut_layer` ``(n)``; the top
        maps that tensor to the final feature map, sharing the layers (and weights)
        of ``model``, so ``top(prefix(x))`` equals ``model(x)``. For ``n == 0`` the
        top is an identity model.
        """
        import keras

        boundary = model.get_layer(self.cut_layer(n)).output
        prefix = keras.Model(model.input, boundary, name=f"{self.name}_frozen")
        if n == 0:
            identity = keras.Input(shape=boundary.shape[1:])
            return prefix, keras.Model(identity, identity, name=f"{self.name}_top")
        return prefix, keras.Model(boundary, model.output, name=f"{self.name}_top")


# ---------------------------------------------------------------------- registry

_REGISTRY: dict[str, Backbone] = {}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(record: Backbone) -> Backbone:
    """Add ``record`` to the registry; a name can be registered once."""
    if record.name in _REGISTRY:
        raise ValueError(f"backbone {record.name!r} is already registered")
    _REGISTRY[record.name] = record
    return record


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard (``"resnet*"``), sorted."""
    pattern = _normalise(pattern)
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def get(name: str) -> Backbone:
    """Look a backbone up by name (case-insensitive, ``-`` accepted for ``_``).

    Raises:
        BenchError: for an unknown name, listing the valid ones.
    """
    key = _normalise(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BenchError(f"unknown backbone {name!r}{hint}; valid: {', '.join(list_backbones())}")
