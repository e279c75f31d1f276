"""--deterministic: two runs with the same seed give identical results; mixed precision trains."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import make_folder

#: Columns that measure time, not results.
from bench.schema import TIMING_COLUMNS as TIME_COLUMNS  # noqa: E402


#: Two `bench run`s one after the other in one fresh process: op determinism is
#: process-wide and cannot be switched off again, so it must not leak into the test
#: process; one process for both runs saves a TensorFlow start-up.
_TWO_RUNS = """
import sys
from bench.cli import app
data, *runs = sys.argv[1:]
for out, name in zip(runs[::2], runs[1::2]):
    app(["run", "--data", data, "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "32",
         "--max-trials", "3", "--epochs", "3", "--tuner", "bayesian", "--max-unfreeze", "1", "--seed", "5",
         "--deterministic", "--no-export", "--out", out, "--reports", out + "/reports", "--name", name],
        standalone_mode=False)
"""


def _read(run):
    trials = pd.read_csv(run / "mobilenet_v2" / "trials.csv")
    board = json.loads((run / "leaderboard.json").read_text())
    return trials, board


@pytest.mark.slow
def test_deterministic_runs_are_identical(tmp_path):
    data = make_folder(tmp_path / "data", {"a": 14, "b": 14}, size=48, seed=2)
    # separate output folders: the second run computes its own caches instead of reusing the first's
    result = subprocess.run([sys.executable, "-c", _TWO_RUNS, str(data), str(tmp_path / "one"), "a",
                             str(tmp_path / "two"), "b"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("deterministic: TensorFlow op determinism on") == 2
    first_trials, first_board = _read(tmp_path / "one" / "a")
    second_trials, second_board = _read(tmp_path / "two" / "b")
    assert len(first_trials) == 3 and set(first_trials["status"]) == {"completed"}
    pd.testing.assert_frame_equal(first_trials.drop(columns=["seconds"]), second_trials.drop(columns=["seconds"]),
                                  check_exact=True)
    strip = [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in first_board]
    assert strip == [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in second_board]
    a = pd.read_csv(tmp_path / "one" / "a" / "mobilenet_v2" / "test_predictions.csv")
    b = pd.read_csv(tmp_path / "two" / "b" / "mobilenet_v2" / "test_predictions.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_mixed_precision_training_keeps_float32_outputs_and_learns():
    import keras

    from bench.search.trainer import train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 16)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((16,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(hidden)
        model = keras.Model(inputs, outputs)
        assert model.layers[1].compute_dtype == "float16" and model.layers[1].kernel.dtype == "float32"
        history = train(model, x[:64], y[:64], x[64:], y[64:], n_classes=2, learning_rate=1e-2, epochs=30,
                        batch_size=16, patience=30)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(history["loss"]))
    assert max(history["val_auc"]) > 0.9
