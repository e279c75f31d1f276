"""Which weights a backbone starts from, checked before any training starts.

``--weights`` takes one of:

- ``imagenet``: Keras' ImageNet weights, from Keras' cache (``$KERAS_HOME/models``,
  by default ``~/.keras/models``), downloaded by Keras if missing and possible;
- ``none``: random initialisation;
- a ``.h5`` / ``.weights.h5`` file, loaded into the backbone with ``load_weights``;
- a folder holding the no-top weight files under the names Keras gives them (for
  machines without internet: copy them from a machine that has Keras' cache).

:func:`ensure_available` runs before training so that a missing file stops the run
at once, with one line that names the file, the folder and the ways out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from backbones.registry import Backbone
from bench.errors import BenchError

if TYPE_CHECKING:
    import keras

WeightsKind = Literal["imagenet", "none", "file", "folder"]


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed ``--weights`` value: its kind and, for local weights, the path."""

    kind: WeightsKind
    path: Path | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.kind


def resolve_weights(spec: str) -> WeightsSpec:
    """Parse ``"imagenet"``, ``"none"`` (any case), or a weights file or folder path.

    Raises:
        BenchError: if the path does not exist or is not a Keras weights file.
    """
    text = spec.strip()
    if text.lower() in ("imagenet", "none"):
        return WeightsSpec(text.lower())  # type: ignore[arg-type]
    ways_out = ("pass --weights imagenet, --weights none, or a .h5/.weights.h5 file "
                "or a folder of Keras weight files")
    if not text:
        raise BenchError(f"empty weights value; {ways_out}")
    path = Path(text).expanduser()
    if path.is_dir():
        return WeightsSpec("folder", path)
    if path.is_file():
        if not path.name.endswith(".h5"):
            raise BenchError(f"weights file '{path}' is not a Keras .h5/.weights.h5 file; "
                             f"{ways_out}")
        return WeightsSpec("file", path)
    raise BenchError(f"weights path '{path}' does not exist; {ways_out}")


def keras_cache_dir() -> Path:
    """Folder where Keras keeps downloaded weights: ``$KERAS_HOME/models``.

    Same rule as Keras: ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras``
    when the home folder, or the chosen folder, is not writable). Read on each call,
    whereas Keras reads ``KERAS_HOME`` once when it is imported: set it before bench
    starts.
    """
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return Path(home) / "models"


def ensure_available(record: Backbone, spec: WeightsSpec,
                     image_size: int | None = None) -> Path | None:
    """Make sure ``record`` can be built with ``spec`` before any training starts.

    For ``imagenet``, a file missing from Keras' cache is downloaded the way Keras
    does it (by building the model with ``weights="imagenet"``, through
    ``keras.utils.get_file``).

    Returns:
        The weights file that will be loaded, or ``None`` for ``none``.

    Raises:
        BenchError: for an image size below the backbone's minimum, or naming the
            missing file, where it was looked for, and the fix.
    """
    record.check_size(record.default_size if image_size is None else image_size)
    if spec.kind == "none":
        return None
    if spec.kind == "file":
        return spec.path
    filename = record.weights_filename(image_size)
    if spec.kind == "folder":
        assert spec.path is not None
        path = spec.path / filename
        if not path.is_file():
            raise BenchError(
                f"weights folder '{spec.path}' has no {filename} (the no-top ImageNet "
                f"weights of {record.name}); put that file there, or use "
                f"--weights imagenet or --weights none"
            )
        return path
    cached = keras_cache_dir() / filename
    if not cached.is_file():
        _download_imagenet(record, image_size, cached)
    return cached


def build_with_weights(record: Backbone, spec: WeightsSpec,
                       image_size: int | None = None) -> keras.Model:
    """Build ``record`` at ``image_size`` with the weights ``spec`` names.

    Every model is Keras' ``weights=None`` architecture with the weights loaded into
    it, so ``save_weights`` / ``record.build(weights=None)`` + ``load_weights`` gives
    back the same model. Keras' ImageNet files (from its cache or a folder, or any
    file bearing Keras' name) are loaded as Keras loads them; for EfficientNet V1
    that includes the input correction Keras applies only for ``weights="imagenet"``
    (see :func:`_apply_imagenet_rescale`). Other files are loaded as they are.

    Raises:
        BenchError: if the weights are unavailable or do not fit the backbone.
    """
    path = ensure_available(record, spec, image_size)
    model = record.build(weights=None, image_size=image_size)
    if path is None:
        return model
    try:
        model.load_weights(path)
    except (ValueError, OSError) as err:
        raise BenchError(
            f"cannot load weights '{path}' into {record.name} ({_first_line(err)}); "
            f"pass {record.name}'s no-top weights ({record.weights_filename(image_size)}) "
            f"or use --weights imagenet or --weights none"
        ) from err
    if record.imagenet_rescale is not None and path.name == record.weights_filename(image_size):
        _apply_imagenet_rescale(model, record.imagenet_rescale)
    return model


def _download_imagenet(record: Backbone, image_size: int | None, target: Path) -> None:
    """Let Keras download its ImageNet file into ``target``'s folder, or explain why not.

    Building with ``weights="imagenet"`` makes Keras fetch the file with its own
    origin and hash check (``keras.utils.get_file``) and keep it in its cache.
    """
    ways_out = (f"use --weights none, or place {target.name} in {target.parent} "
                f"(or pass --weights PATH)")
    try:
        record.build(weights="imagenet", image_size=image_size)
    except Exception as err:  # keras.utils.get_file raises a bare Exception offline
        raise BenchError(
            f"ImageNet weights {target.name} for {record.name} are not in "
            f"{target.parent} and could not be downloaded ({_first_line(err)}); {ways_out}"
        ) from err
    if not target.is_file():
        raise BenchError(
            f"Keras stored {target.name} outside {target.parent} (was KERAS_HOME changed "
            f"after Keras was imported?); set KERAS_HOME before starting bench, or {ways_out}"
        )


def _apply_imagenet_rescale(model: keras.Model, factors: tuple[float, ...]) -> None:
    """Fold Keras' ImageNet-only input rescaling into the Normalization layer.

    With ``weights="imagenet"`` Keras' EfficientNet (V1) multiplies the output of its
    input ``Normalization`` by ``factors`` (keras issue tensorflow/tensorflow#49930).
    ``Normalization`` computes ``(x - mean) / sqrt(variance)``, so dividing the
    variance by ``factors**2`` gives the same result without the extra layer, and
    weights saved from the model keep the correction.
    """
    import keras

    norm = next(layer for layer in model.layers
                if isinstance(layer, keras.layers.Normalization))
    variance = keras.ops.convert_to_numpy(norm.adapt_variance)
    norm.adapt_variance.assign(variance / np.square(np.asarray(factors, variance.dtype)))
    norm.finalize_state()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
