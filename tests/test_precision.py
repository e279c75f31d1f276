"""Frozen-pass precision: bfloat16 detection, the mode table, cache keys, the run's settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

import backbones
import bench.search.cache
import bench.search.source
from bench.config import RunConfig
from bench.errors import BenchError
from bench.run import prepare_run
from bench.search import runtime
from conftest import make_folder

SAPPHIRE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"


def test_bf16_hardware_is_read_from_the_cpu_flags():
    assert runtime.cpu_bf16_flags(SAPPHIRE) == ["amx_bf16", "avx512_bf16"]
    assert runtime.cpu_bf16_flags(SKYLAKE) == []
    assert runtime.cpu_bf16_flags("") == []


@pytest.mark.parametrize(("mode", "gpu", "bf16_cpu", "expected"), [
    ("on", False, False, ("mixed_float16", "float16")),
    ("off", True, True, ("float32", "float32")),
    ("bfloat16", False, True, ("float32", "bfloat16")),
    ("auto", True, True, ("mixed_float16", "float16")),  # a GPU: float16
    ("auto", False, False, ("float32", "float32")),  # no bfloat16 hardware: float32
])
def test_precision_modes(mode, gpu, bf16_cpu, expected):
    assert runtime.precision_for(mode, gpu=gpu, bf16_cpu=bf16_cpu) == expected


def test_auto_on_a_bf16_cpu_follows_the_measured_decision(monkeypatch):
    monkeypatch.setattr(runtime, "AUTO_BFLOAT16", True)
    assert runtime.precision_for("auto", gpu=False, bf16_cpu=True) == ("float32", "bfloat16")
    monkeypatch.setattr(runtime, "AUTO_BFLOAT16", False)
    assert runtime.precision_for("auto", gpu=False, bf16_cpu=True) == ("float32", "float32")


def test_unknown_mode_is_refused():
    with pytest.raises(BenchError, match="unknown --mixed-precision 'half'"):
        runtime.precision_for("half")


def test_bfloat16_and_float32_features_are_separate_cache_entries(tmp_path):
    data = make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=48, seed=4)
    config = RunConfig.from_dict(dict(data=data, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                      out=tmp_path / "results", name="t", tuner="random", max_trials=1, epochs=1,
                                      max_unfreeze=0, baseline=False))
    run = prepare_run(config)
    record = backbones.get("mobilenet_v2")
    source = bench.search.source.source_for(record, "none", 32, run.path, run.index.root, run.split, 0)
    features = {}
    for mode in ("off", "bfloat16"):  # one process, two frozen passes: each keyed by its own precision
        features[mode] = np.asarray(bench.search.cache.cached_features(
            source, [0], run.path, run.index.root, run.split, run.config.search,
            frozen_pass=runtime.FrozenPass.of(mode))[1][0])
    metas = [json.loads(p.read_text()) for p in (run.path / "cache").glob("*.json")]
    assert sorted(m.get("compute", "float32") for m in metas) == ["bfloat16", "bfloat16", "float32", "float32"]
    a, b = features["off"], features["bfloat16"]
    assert not np.array_equal(a, b)  # other numbers ...
    # ... of the same features, though a random MobileNetV2 amplifies bfloat16's rounding (8 bits of
    # mantissa) layer by layer (relative L2 differences of about 0.4; far less for Xception)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8


@pytest.mark.parametrize(("mode", "precision", "policy", "compute"), [
    ("off", "float32", "float32", "float32"),
    ("bfloat16", "bfloat16", "float32", "float32"),  # the frozen pass alone: training stays float32
    ("on", "float16", "mixed_float16", "float16"),
])
def test_frozen_pass_is_built_from_the_options(mode, precision, policy, compute):
    frozen = runtime.FrozenPass.of(mode, gpu=False, bf16_cpu=False)
    assert frozen == runtime.FrozenPass("tensorflow", precision)
    assert (frozen.policy, frozen.compute_dtype) == (policy, compute)
    config = RunConfig.from_dict(dict(mixed_precision=mode))
    assert runtime.FrozenPass.for_config(config).precision == precision


def test_run_settings_restore_the_keras_policy():
    """Two runs in one process: the second never sees the first's precision."""
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"
    with runtime.run_settings(runtime.FrozenPass(precision="float16")):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError), runtime.run_settings(runtime.FrozenPass(precision="float16")):
        raise RuntimeError("a failed run")
    assert keras.mixed_precision.global_policy().name == "float32"
    with runtime.run_settings(runtime.FrozenPass(precision="bfloat16")):  # the frozen pass sets its own
        assert keras.mixed_precision.global_policy().name == "float32"


def test_execute_carries_the_frozen_pass_to_every_job(tmp_path, monkeypatch):
    """The runtime and precision come from the run's configuration, in the jobs, not from the process."""
    import keras

    import bench.designs
    from bench.run import execute

    data = make_folder(tmp_path / "data", {"a": 6, "b": 6}, size=48, seed=4)
    seen = []

    def fake_backbone(job, sources=None):
        seen.append((job.frozen_pass, keras.mixed_precision.global_policy().name))

    monkeypatch.setattr(bench.designs, "run_backbone", fake_backbone)
    for name, mode in (("half", "on"), ("full", "off")):
        config = RunConfig.from_dict(dict(data=data, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                          out=tmp_path / "results", name=name, baseline=False, mixed_precision=mode))
        execute(prepare_run(config))
        assert keras.mixed_precision.global_policy().name == "float32"
    assert seen == [(runtime.FrozenPass("tensorflow", "float16"), "mixed_float16"),
                    (runtime.FrozenPass("tensorflow", "float32"), "float32")]
