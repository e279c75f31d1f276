"""--runtime openvino: the frozen pass run by OpenVINO, checked against TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import backbones
import bench.search.cache
import bench.search.source
from bench.cli import app
from bench.config import RunConfig
from bench.errors import BenchError
from bench.run import execute, prepare_run
from bench.search import runtime
from conftest import make_folder
from test_cli import assert_one_line_error

from bench.search import openvino_runtime

cli = CliRunner()
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino not installed (the test extra installs it)")
TINY = ["--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--max-trials", "2",
        "--epochs", "2", "--max-unfreeze", "1", "--no-baseline", "--tuner", "random", "--no-export"]


@pytest.fixture(autouse=True)
def _no_settings_left_behind():
    """A run's runtime and precision travel with it: nothing of them stays in the process."""
    import keras

    yield
    assert keras.mixed_precision.global_policy().name == "float32"


def _entries(run_dir) -> dict[str, dict]:
    """Cache entry key -> sidecar."""
    return {p.stem: json.loads(p.read_text()) for p in (run_dir / "cache").glob("*.json")}


def test_without_openvino_installed_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if not installed
    data = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    result = cli.invoke(app, ["run", "--data", str(data), *TINY, "--out", str(tmp_path / "res"), "--name", "x",
                              "--runtime", "openvino"])
    assert_one_line_error(result, "--runtime openvino needs the openvino package",
                          "pip install 'bench[openvino]'", "--runtime tensorflow")
    assert not (tmp_path / "res" / "x").exists()  # refused before anything was written


@needs_openvino
@pytest.mark.parametrize(("mode", "gpu", "refused"), [
    ("off", False, False), ("bfloat16", False, False), ("auto", False, False),
    ("on", False, True), ("auto", True, True),  # float16: OpenVINO here is the CPU plugin
])
def test_openvino_takes_float32_and_bfloat16_not_float16(mode, gpu, refused):
    if refused:
        with pytest.raises(BenchError, match="in float32 or bfloat16, but .*float16; use --runtime tensorflow"):
            runtime.check_runtime("openvino", mode, gpu=gpu, bf16_cpu=True)
    else:
        runtime.check_runtime("openvino", mode, gpu=gpu, bf16_cpu=True)
    runtime.check_runtime("tensorflow", mode, gpu=gpu, bf16_cpu=True)  # TensorFlow runs them all


@needs_openvino
def test_float16_with_openvino_is_one_line_on_the_cli(tmp_path):
    data = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    result = cli.invoke(app, ["run", "--data", str(data), *TINY, "--out", str(tmp_path / "res"), "--name", "x",
                              "--runtime", "openvino", "--mixed-precision", "on"])
    assert_one_line_error(result, "--mixed-precision on means float16", "use --runtime tensorflow")


@needs_openvino
def test_openvino_runs_like_tensorflow_in_its_own_cache_entries(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data", {"a": 10, "b": 10}, size=48, seed=4)
    runs = {}
    for name in ("tensorflow", "openvino"):  # same data, seed and out folder: only the runtime differs
        config = RunConfig.from_dict(dict(data=data, backbones=["mobilenet_v2"], weights="none", image_size=32,
                                          out=tmp_path / "results", name=name, tuner="random", max_trials=2,
                                          epochs=2, max_unfreeze=1, baseline=False, runtime=name))
        runs[name] = prepare_run(config)
        execute(runs[name])
    tf_dir, ov_dir = runs["tensorflow"].path, runs["openvino"].path
    tf_entries, ov_entries = _entries(tf_dir), _entries(ov_dir)
    # separate entries: the OpenVINO run did not adopt its sibling's TensorFlow features
    assert len(ov_entries) == len(tf_entries) == 4 and not set(tf_entries) & set(ov_entries)
    assert all("runtime" not in m for m in tf_entries.values())
    assert all(m["runtime"] == "openvino" and m["openvino_precision"] == "f32" for m in ov_entries.values())
    # the same features within the tolerance (both stored as float16)
    by_part = {name: {(m["cut"], m["images"]): k for k, m in entries.items()}
               for name, entries in (("tensorflow", tf_entries), ("openvino", ov_entries))}
    assert by_part["tensorflow"].keys() == by_part["openvino"].keys()
    for part, tf_key in by_part["tensorflow"].items():
        ref, got = (np.load(d / "cache" / f"{k}.npy") for d, k in ((tf_dir, tf_key), (ov_dir, by_part["openvino"][part])))
        assert max(openvino_runtime.check_parity([ref], [got]).values()) <= openvino_runtime.PARITY_TOLERANCE
    # ... and the same trials
    tf_trials, ov_trials = (pd.read_csv(d / "mobilenet_v2" / "trials.csv") for d in (tf_dir, ov_dir))
    assert list(tf_trials["unfreeze"]) == list(ov_trials["unfreeze"])
    np.testing.assert_allclose(ov_trials["val_loss"], tf_trials["val_loss"], rtol=1e-2)
    # the result says how its features were made, with the parity figure
    result = json.loads((ov_dir / "mobilenet_v2" / "result.json").read_text())
    assert result["frozen_pass_runtime"] == "openvino" and result["openvino_precision"] == "f32"
    assert 0 < result["openvino_parity"] <= openvino_runtime.PARITY_TOLERANCE
    assert json.loads((tf_dir / "mobilenet_v2" / "result.json").read_text())["frozen_pass_runtime"] == "tensorflow"
    xml = list((ov_dir / "cache").glob("openvino-*.xml"))
    assert len(xml) == 1 and xml[0].with_suffix(".bin").exists()
    assert not list((tf_dir / "cache").glob("openvino-*"))

    # bfloat16 with OpenVINO: entries of their own, from the same IR (not converted again)
    import openvino

    conversions = []
    real_convert = openvino.convert_model
    monkeypatch.setattr(openvino, "convert_model", lambda *a, **k: conversions.append(1) or real_convert(*a, **k))
    ir_written = xml[0].stat().st_mtime_ns
    run = runs["openvino"]
    source = bench.search.source.source_for(backbones.get("mobilenet_v2"), "none", 32, run.path, run.index.root,
                                            run.split, 0)
    notes: dict = {}
    bench.search.cache.cached_features(source, [0, 1], run.path, run.index.root, run.split, run.config.search,
                                       frozen_pass=runtime.FrozenPass.of("bfloat16", "openvino"), notes=notes)
    assert not conversions and xml[0].stat().st_mtime_ns == ir_written
    bf16 = {k: m for k, m in _entries(ov_dir).items() if k not in ov_entries}
    assert len(bf16) == 4 and all(m["compute"] == "bfloat16" and m["runtime"] == "openvino" for m in bf16.values())
    # the parity check compares float32 with float32 (it checks the conversion), whatever the hint
    assert all(m["openvino_parity"] <= openvino_runtime.PARITY_TOLERANCE for m in bf16.values())
    assert notes["frozen_pass_runtime"] == "openvino" and notes["openvino_precision"] in ("bf16", "f32")


@needs_openvino
def test_features_off_the_tolerance_are_refused_and_the_ir_deleted(tmp_path, monkeypatch):
    real_call = openvino_runtime.OpenVinoPrefix.__call__
    monkeypatch.setattr(openvino_runtime.OpenVinoPrefix, "__call__",
                        lambda self, images: [f * 1.01 for f in real_call(self, images)])  # 1e-2 off
    data = make_folder(tmp_path / "data", {"a": 10, "b": 10}, size=48, seed=4)
    result = cli.invoke(app, ["run", "--quiet", "--data", str(data), *TINY, "--out", str(tmp_path / "res"),
                              "--name", "x", "--runtime", "openvino"])
    assert_one_line_error(result, "OpenVINO's features differ from TensorFlow's by 1.00e-02",
                          "over the tolerance 1.0e-03", "use --runtime tensorflow")
    cache = tmp_path / "res" / "x" / "cache"
    assert cache.is_dir() and not list(cache.glob("openvino-*")) and not list(cache.glob("*.npy"))
    assert not list(cache.glob(".*partial"))
