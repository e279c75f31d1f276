"""Tests for the backbone registry, its records and weights resolution.

Every model is built at its minimum input size with ``weights=None``; the network is
never touched (Keras' download function is replaced wherever a download could start).
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import keras
import keras.src.utils.file_utils as keras_file_utils  # what keras.applications call
import numpy as np
import pytest

import backbones
from backbones.cost import count_macs
from backbones import WeightsSpec
from bench.errors import BenchError

REPO = Path(__file__).resolve().parents[1]
NAMES = backbones.list_backbones()
EXPECTED_NAMES = {
    "xception", "resnet50", "resnet50v2", "inception_v3", "mobilenet_v2",
    "mobilenet_v3_small", "efficientnet_b0", "efficientnetv2_b0", "densenet121",
    "convnext_tiny", "vgg16",
}
# Where each preprocessing mode maps uint8 0 and 255 (all channels together).
FAMILY_ENDS = {"tf": (-1.0, 1.0), "caffe": (-123.68, 151.061),
               "torch": (-2.1179, 2.64), "inside": (0.0, 255.0)}


class NetworkDisabled(OSError):
    """Raised by the stand-in for keras' get_file."""


@pytest.fixture(autouse=True)
def _seeded_fresh_session():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)  # gc.collect() would add ~0.4 s a test


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace Keras' get_file: record the file names asked for, never download.

    keras.applications call ``keras.src.utils.file_utils.get_file``; patching the
    public alias ``keras.utils.get_file`` would not reach them.
    """
    asked: list[str] = []

    def fake_get_file(fname: str, origin: str, **kwargs: object) -> str:
        asked.append(fname)
        raise NetworkDisabled(f"network disabled in tests: {origin}")

    monkeypatch.setattr(keras_file_utils, "get_file", fake_get_file)
    return asked


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _images(size: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _numpy(x: object) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


# ------------------------------------------------------------------------ registry

def test_catalog_has_the_expected_backbones() -> None:
    assert set(NAMES) == EXPECTED_NAMES
    assert NAMES == sorted(NAMES)


def test_get_ignores_case_and_accepts_dashes() -> None:
    assert backbones.get("ResNet50") is backbones.get("resnet50")
    assert backbones.get(" EfficientNet-B0 ").name == "efficientnet_b0"


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(BenchError) as info:
        backbones.get("resnet5")
    message = str(info.value)
    assert message.startswith("unknown backbone 'resnet5'")
    assert "valid: convnext_tiny, densenet121, " in message
    assert all(name in message for name in NAMES)
    assert "\n" not in message


@pytest.mark.parametrize(("pattern", "expected"), [
    ("resnet*", ["resnet50", "resnet50v2"]),
    ("*net*_b0", ["efficientnet_b0", "efficientnetv2_b0"]),
    ("MobileNet-V?", ["mobilenet_v2"]),
    ("*", NAMES),
    ("nothing*", []),
])
def test_wildcard_listing(pattern: str, expected: list[str]) -> None:
    assert backbones.list_backbones(pattern) == expected


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        backbones.register(backbones.get("vgg16"))


def test_records_are_frozen() -> None:
    record = backbones.get("vgg16")
    with pytest.raises(AttributeError):
        record.min_size = 8  # type: ignore[misc]


def test_import_does_not_load_tensorflow() -> None:
    code = ("import sys, backbones; backbones.get('xception'); "
            "sys.exit(int('tensorflow' in sys.modules or 'keras' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ------------------------------------------------------------------------- records

@pytest.mark.parametrize("name", NAMES)
def test_builds_at_min_size_with_clean_block_cuts(name: str) -> None:
    record = backbones.get(name)
    # Bump Keras' per-session name counters first: the boundary names must not
    # depend on how many layers the session created before (Xception's "add_7").
    for class_name, _, _ in record.renames:
        getattr(keras.layers, class_name)(*(("relu",) if class_name == "Activation" else ()))

    model = record.build(weights=None, image_size=record.min_size)

    assert model.input.shape[1:] == (record.min_size, record.min_size, 3)
    assert model.output.shape[-1] == record.feature_width
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    positions = [names.index(block) for block in record.blocks]  # all exist
    assert positions == sorted(positions)
    assert model.get_layer(record.blocks[-1]).output is model.output
    assert 4 <= len(record.blocks) <= 8
    # its cost: the catalog's count scaled to this size, within what padding changes on small maps
    assert 0.5 < count_macs(model) / record.macs(record.min_size) < 1.5
    # Normalisation layers at the input exactly when preprocessing is "inside".
    stem = model.layers[1:3]
    normalises = any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
                     for layer in stem)
    assert normalises == (record.preprocessing == "inside")

    # Clean cuts: Keras refuses to build a top model whose output needs more than
    # the boundary tensor; numerically, the top part fed with the boundary values
    # must give the full model's output.
    x = record.preprocess(_images(record.min_size))
    full = _numpy(model(x))
    scale = float(np.abs(full).max())
    assert scale > 0
    boundaries = keras.Model(model.input, [model.get_layer(b).output for b in record.blocks])
    values = boundaries(x)
    for n in range(record.max_unfreeze + 1):
        frozen, top = record.split(model, n)
        assert frozen.output.shape[1:] == tuple(values[-(n + 1)].shape[1:])
        np.testing.assert_allclose(_numpy(top(values[-(n + 1)])), full, rtol=1e-5,
                                   atol=1e-4 * scale, err_msg=f"{name}: cut {n}")


@pytest.mark.parametrize("name", ["vgg16", "resnet50v2", "mobilenet_v3_small"])  # quick to build at full size
def test_catalog_multiply_adds_are_the_built_models(name: str) -> None:
    """gmacs is count_macs of the model at its default size (and agrees with the published
    figures: VGG16 15.3 G, ResNet-50 v2 3.5 G, MobileNetV3-small 0.06 G)."""
    record = backbones.get(name)
    assert count_macs(record.build(weights=None)) / 1e9 == pytest.approx(record.gmacs, abs=5e-4)


def test_multiply_adds_count_each_kind_of_layer() -> None:
    """By hand: a 3 x 3 convolution, a depthwise, a separable and a dense layer."""
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)  # 8*8 * 9*4*6
    x = keras.layers.DepthwiseConv2D(3, padding="valid")(x)  # 6*6 * 9*6
    x = keras.layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2)(x)  # 6*6 * 6*2 * (9 + 5)
    x = keras.layers.Dense(3)(x)  # 6*6 * 5*3 (per position)
    assert count_macs(keras.Model(inputs, x)) == 64 * 216 + 36 * 54 + 36 * 12 * 14 + 36 * 15


@pytest.mark.parametrize("name", NAMES)
def test_include_preprocessing_is_kept_on(name: str) -> None:
    record = backbones.get(name)
    parameters = inspect.signature(record.resolve_constructor()).parameters
    if "include_preprocessing" in parameters:
        assert dict(record.constructor_kwargs)["include_preprocessing"] is True


@pytest.mark.parametrize("name", NAMES)
def test_below_min_size_is_refused(name: str) -> None:
    record = backbones.get(name)
    with pytest.raises(BenchError, match=f"below {name}'s minimum of {record.min_size}"):
        record.build(image_size=record.min_size - 1)


def test_min_size_message_names_the_fix() -> None:
    with pytest.raises(BenchError) as info:
        backbones.get("xception").build(image_size=48)
    assert str(info.value) == ("image size 48 is below xception's minimum of 71; "
                               "use --image-size 71 or more")


def test_size_is_checked_before_any_download(no_download: list[str]) -> None:
    with pytest.raises(BenchError, match="below xception's minimum of 71"):
        backbones.ensure_available(backbones.get("xception"), WeightsSpec("imagenet"), 48)
    assert no_download == []


def test_cut_layer_counts_from_the_top() -> None:
    record = backbones.get("resnet50")
    assert record.cut_layer(0) == "conv5_block3_out"
    assert record.cut_layer(1) == "conv5_block2_out"
    assert record.cut_layer(record.max_unfreeze) == record.blocks[0]
    for bad in (-1, len(record.blocks)):
        with pytest.raises(BenchError, match=f"choose 0 to {record.max_unfreeze}"):
            record.cut_layer(bad)


@pytest.mark.parametrize("name", NAMES)
def test_preprocessing_matches_keras_and_range(name: str) -> None:
    record = backbones.get(name)
    lo, hi = record.expected_range()
    assert (lo, hi) == pytest.approx(FAMILY_ENDS[record.preprocessing], abs=1e-3)
    black = record.preprocess(np.zeros((1, 4, 4, 3), np.uint8))
    white = record.preprocess(np.full((1, 4, 4, 3), 255, np.uint8))
    assert black.dtype == white.dtype == np.float32
    assert min(black.min(), white.min()) == pytest.approx(lo, abs=1e-4)
    assert max(black.max(), white.max()) == pytest.approx(hi, abs=1e-4)

    images = _images(16, n=4)
    out = record.preprocess(images)
    assert lo - 1e-4 <= out.min() and out.max() <= hi + 1e-4
    as_float = images.astype(np.float32)
    keras_module = importlib.import_module(record.resolve_constructor().__module__)
    expected = keras_module.preprocess_input(as_float.copy())
    np.testing.assert_allclose(record.preprocess(as_float), expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(as_float, images)  # input left untouched


# ------------------------------------------------------------------------- weights

def test_resolve_weights_keywords() -> None:
    assert backbones.resolve_weights("imagenet") == WeightsSpec("imagenet")
    assert backbones.resolve_weights(" None ") == WeightsSpec("none")
    assert str(backbones.resolve_weights("ImageNet")) == "imagenet"


def test_resolve_weights_paths(tmp_path: Path) -> None:
    weights_file = tmp_path / "mine.weights.h5"
    weights_file.touch()
    assert backbones.resolve_weights(str(weights_file)) == WeightsSpec("file", weights_file)
    assert backbones.resolve_weights(str(tmp_path)) == WeightsSpec("folder", tmp_path)

    missing = tmp_path / "nope.h5"
    with pytest.raises(BenchError, match="does not exist") as info:
        backbones.resolve_weights(str(missing))
    assert str(missing) in str(info.value) and "--weights none" in str(info.value)

    (tmp_path / "model.pt").touch()
    with pytest.raises(BenchError, match=r"not a Keras \.h5/\.weights\.h5 file"):
        backbones.resolve_weights(str(tmp_path / "model.pt"))
    with pytest.raises(BenchError, match="empty"):
        backbones.resolve_weights("  ")


def test_folder_without_the_file_is_refused(tmp_path: Path) -> None:
    record = backbones.get("xception")
    spec = backbones.resolve_weights(str(tmp_path))
    with pytest.raises(BenchError) as info:
        backbones.ensure_available(record, spec, 299)
    message = str(info.value)
    assert record.weights_file in message and str(tmp_path) in message

    (tmp_path / record.weights_file).touch()
    assert backbones.ensure_available(record, spec, 299) == tmp_path / record.weights_file


def test_weights_file_depends_on_size_for_mobilenet_v2() -> None:
    record = backbones.get("mobilenet_v2")
    assert record.weights_filename(128).endswith("_1.0_128_no_top.h5")
    assert record.weights_filename(100).endswith("_1.0_224_no_top.h5")  # Keras' fallback
    assert record.weights_filename() == record.weights_filename(224)


def test_keras_cache_dir_honours_keras_home(keras_home: Path) -> None:
    assert backbones.keras_cache_dir() == keras_home / "models"


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
@pytest.mark.parametrize("name", NAMES)
def test_imagenet_unavailable_names_file_folder_and_fix(
        name: str, keras_home: Path, no_download: list[str]) -> None:
    record = backbones.get(name)
    with pytest.raises(BenchError) as info:
        backbones.ensure_available(record, WeightsSpec("imagenet"), record.min_size)
    message = str(info.value)
    filename = record.weights_filename(record.min_size)
    assert filename in message
    assert str(keras_home / "models") in message
    assert "--weights none" in message and "\n" not in message
    # The record's file name is the one Keras itself asks for: no silent drift.
    assert no_download == [filename]


def test_mobilenet_v2_asks_keras_for_the_size_specific_file(
        keras_home: Path, no_download: list[str]) -> None:
    record = backbones.get("mobilenet_v2")
    with pytest.raises(BenchError):
        backbones.ensure_available(record, WeightsSpec("imagenet"), 96)
    assert no_download == [record.weights_filename(96)]


def test_cached_imagenet_file_needs_no_download(
        keras_home: Path, no_download: list[str]) -> None:
    record = backbones.get("densenet121")
    cached = keras_home / "models" / record.weights_file
    cached.parent.mkdir()
    cached.touch()
    assert backbones.ensure_available(record, WeightsSpec("imagenet"), 32) == cached
    assert no_download == []


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    record = backbones.get("mobilenet_v2")
    original = record.build(weights=None, image_size=32)
    path = tmp_path / "x.weights.h5"
    original.save_weights(path)

    spec = backbones.resolve_weights(str(path))
    assert backbones.ensure_available(record, spec, 32) == path
    loaded = backbones.build_with_weights(record, spec, 32)

    for ours, theirs in zip(loaded.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_of_another_backbone_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "vgg.weights.h5"
    backbones.get("vgg16").build(image_size=32).save_weights(path)
    with pytest.raises(BenchError, match=r"cannot load weights .* into mobilenet_v2"):
        backbones.build_with_weights(backbones.get("mobilenet_v2"),
                                     backbones.resolve_weights(str(path)), 32)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_keras_imagenet_file_gives_keras_imagenet_model(
        tmp_path: Path, keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keras' EfficientNet adds an input rescaling only when built with
    # weights="imagenet"; bench's model (weights=None architecture + Keras' file)
    # must compute the same, also after a save_weights / load_weights round trip.
    record = backbones.get("efficientnet_b0")
    source = record.build(weights=None, image_size=32)
    norm = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt_mean.assign(np.array([0.485, 0.456, 0.406], np.float32))  # as in Keras' file
    norm.adapt_variance.assign(np.array([0.229, 0.224, 0.225], np.float32) ** 2)
    norm.finalize_state()
    keras_file = keras_home / "models" / record.weights_file  # legacy HDF5, Keras' name
    keras_file.parent.mkdir()
    source.save(keras_file)
    monkeypatch.setattr(keras_file_utils, "get_file", lambda *a, **k: str(keras_file))

    x = record.preprocess(_images(32))
    expected = _numpy(record.build(weights="imagenet", image_size=32)(x))

    def assert_matches(model: keras.Model) -> None:
        np.testing.assert_allclose(_numpy(model(x)), expected, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(expected).max()))

    from_cache = backbones.build_with_weights(record, WeightsSpec("imagenet"), 32)
    assert_matches(from_cache)
    saved = tmp_path / "backbone.weights.h5"
    from_cache.save_weights(saved)
    reloaded = record.build(weights=None, image_size=32)
    reloaded.load_weights(saved)
    assert_matches(reloaded)
    # The same weights without the correction compute something else.
    assert not np.allclose(_numpy(source(x)), expected, rtol=1e-3, atol=0)
