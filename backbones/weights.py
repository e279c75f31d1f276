"""Which weights a backbone starts from, checked before any training starts.

``--weights`` takes one of these, or a comma-separated list of them (each entry is a
starting point the run compares, :func:`parse_weights`):

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from backbones.registry import Backbone
from bench.errors import BenchError

if TYPE_CHECKING:
    import keras

WeightsKind = Literal["imagenet", "none", "file", "folder"]
#: What a weights label may hold: it names leaderboard rows and run folders.
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")
KEYWORDS = ("imagenet", "none")


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed ``--weights`` value: its kind and, for local weights, the path."""

    kind: WeightsKind
    path: Path | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.kind

    @property
    def canonical(self) -> str:
        """``imagenet``, ``none``, or the absolute path: the form a run stores."""
        return self.kind if self.path is None else os.path.abspath(self.path)

    @property
    def label(self) -> str:
        """The short name of these weights in row names (:func:`weights_label`)."""
        return weights_label(self.canonical)


def weights_items(text: str) -> list[str]:
    """The entries of a ``--weights`` value in canonical form (``imagenet``, ``none`` or an
    absolute path), empty entries dropped. Text only: nothing is looked up on disk."""
    items = []
    for raw in str(text).split(","):
        item = raw.strip()
        if item:
            items.append(item.lower() if item.lower() in KEYWORDS else os.path.abspath(os.path.expanduser(item)))
    return items


def weights_label(item: str) -> str:
    """The short name of one ``--weights`` entry: ``imagenet``, ``none``, a weights file's
    name without ``.weights.h5`` / ``.h5``, or a folder's name."""
    if item.strip().lower() in KEYWORDS:
        return item.strip().lower()
    name = Path(item).name
    for suffix in (".weights.h5", ".h5"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def parse_weights(text: str) -> list[WeightsSpec]:
    """Parse a ``--weights`` value: one entry or a comma-separated list of them, each as
    :func:`resolve_weights` parses it, in the order given.

    With several entries each one's :attr:`WeightsSpec.label` names rows
    (``<backbone>@<label>``) and folders, so labels must differ and be plain names.

    Raises:
        BenchError: for an empty value, a bad entry, an entry given twice, or two
            entries with the same label.
    """
    entries = [item.strip() for item in str(text).split(",") if item.strip()]
    if not entries:
        raise BenchError("empty --weights; pass imagenet, none, a .h5/.weights.h5 file or a folder of Keras "
                         "weight files, or a comma-separated list of them")
    specs = [resolve_weights(item) for item in entries]
    if len(specs) == 1:
        return specs
    seen: dict[str, WeightsSpec] = {}
    for spec in specs:
        if not LABEL_RE.match(spec.label):
            raise BenchError(f"--weights entry '{spec.canonical}' cannot name a row ({spec.label!r}); rename it to "
                             "letters, digits, '.', '_' or '-' (up to 60 characters)")
        other = seen.get(spec.label)
        if other is not None and other.canonical == spec.canonical:
            raise BenchError(f"--weights lists {spec.canonical} twice; give each starting point once")
        if other is not None:
            raise BenchError(f"--weights entries '{other.canonical}' and '{spec.canonical}' share the name "
                             f"{spec.label!r} (rows are named <backbone>@{spec.label}); rename one of them")
        seen[spec.label] = spec
    return specs


def weights_text(specs: list[WeightsSpec]) -> str:
    """The value a run stores for ``specs``: their canonical forms, comma-separated."""
    return ",".join(spec.canonical for spec in specs)


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
