"""TensorBoard HParams: every trial of a run records its hyperparameters, the backbone and
the fold beside its best-epoch metrics, read back from the event files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest




def _hparams_sessions(log_dir: Path) -> list[tuple[dict, dict]]:
    """(hyperparameters, best-metric scalars) of every HParams session record in ``log_dir``."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions = []
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        hparams, scalars = {}, {}
        for record in tf.data.TFRecordDataset(str(events)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for key, v in data.session_start_info.hparams.items():
                            hparams[key] = v.string_value or v.number_value or v.bool_value
                elif value.tag.startswith("best_"):
                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
        if hparams:
            sessions.append((hparams, scalars))
    return sessions


def test_every_trial_writes_its_hyperparameters_and_best_metrics(tiny_run):
    trials = sorted((tiny_run / "mobilenet_v2" / "tuner").glob("trial_*"))
    assert trials
    for trial in trials:
        (hparams, scalars), = _hparams_sessions(trial / "logs")
        record = json.loads((trial / "trial.json").read_text())
        assert hparams["backbone"] == "mobilenet_v2" and hparams["fold"] == "single split"
        assert hparams["learning_rate"] == pytest.approx(record["hyperparameters"]["values"]["learning_rate"])
        assert hparams["pooling"] == record["hyperparameters"]["values"]["pooling"]
        history = json.loads((trial / "bench_trial.json").read_text())
        best = history["best_epoch"] - 1
        assert scalars["best_val_auc"] == pytest.approx(history["history"]["val_auc"][best], abs=1e-6)
        assert scalars["best_loss"] == pytest.approx(history["history"]["loss"][best], abs=1e-6)


@pytest.mark.parametrize("value", [0.123, 1e-30, -2.5, float("nan"), 3.0e38])
def test_a_scalar_summary_is_the_one_tensorboard_makes(value):
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    from bench.search.trainer import scalar_summary

    assert scalar_summary("epoch_loss", value).SerializeToString() == scalar_pb("epoch_loss", value).SerializeToString()
