"""The compiled inference pass: one trace for every batch size, and a latency measurement
that warms up only the batch sizes the model has not run."""

from __future__ import annotations

import keras
import numpy as np

from bench.evaluate import final
from bench.forward import has_run, predict_batch


def _model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _counted_forward(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = final.compiled

    def counting(model):
        forward = real(model)
        return lambda x: calls.append(int(x.shape[0])) or forward(x)

    monkeypatch.setattr(final, "compiled", counting)
    return calls


def test_latency_warms_up_only_the_batch_sizes_the_model_has_not_run(monkeypatch):
    evaluated = _model()
    batch = np.zeros((32, 8, 8, 3), np.float32)
    np.testing.assert_allclose(predict_batch(evaluated, batch), evaluated(batch, training=False).numpy(), rtol=1e-6)
    assert has_run(evaluated, 32) and not has_run(evaluated, 1)
    calls = _counted_forward(monkeypatch)
    latency = final.measure_latency(evaluated, 8)
    assert calls == [1] * 6 + [32] * 2  # batch 32: no warm-up after the evaluation's batches of 32
    assert latency["latency_ms_b1"] > 0 and latency["latency_ms_b32"] > 0
    calls.clear()
    final.measure_latency(_model(), 8)  # a model that never ran: a warm-up call at each size
    assert calls == [1] * 6 + [32] * 3


def test_a_slow_network_is_timed_in_fewer_calls_and_its_median_is_its_call_time(monkeypatch):
    """Calls of a quarter of a second: three timed calls at batch 1 (they add up to more
    than TIMED_SECONDS) after the warm-up, and the latency is their median."""
    import time

    calls = []

    def slow(model):
        def forward(x):
            calls.append(int(x.shape[0]))
            time.sleep(0.25)
            return np.zeros((int(x.shape[0]), 1), np.float32)
        return forward

    monkeypatch.setattr(final, "compiled", slow)
    latency = final.measure_latency(_model(), 8)
    assert calls == [1] * (1 + final.MIN_TIMED_CALLS) + [32] * 3  # batch 32: a warm-up and two timed calls
    assert 250 <= latency["latency_ms_b1"] < 400
    assert 250 / 32 <= latency["latency_ms_b32"] < 400 / 32


def test_the_batch_latency_of_the_frozen_pass_is_not_measured_again(monkeypatch, tmp_path):
    """The caching pass times its batches (the first, which traces, left out); the deployed
    model's batch-32 latency is then their median per image, and only batch 1 is timed."""
    from bench.search.cache import run_prefix
    from bench.search.source import BackboneSource

    model = _model()
    timings: dict[int, list[float]] = {}
    images = [np.zeros((32, 8, 8, 3), np.uint8)] * 4 + [np.zeros((5, 8, 8, 3), np.uint8)]
    outs = list(run_prefix(model, images, timings=timings))
    assert len(outs) == 5 and sorted(timings) == [5, 32] and len(timings[32]) == 3  # the traced first left out
    source = BackboneSource.__new__(BackboneSource)
    source.pass_seconds = timings
    expected = round(1000 * float(np.median(timings[32])) / 32, 3)
    assert source.batch_ms(32) == expected and source.batch_ms(5) is None  # one batch of 5: too few to say
    calls = _counted_forward(monkeypatch)
    latency = final.measure_latency(_model(), 8, known={32: source.batch_ms(32), 1: None})
    assert calls == [1] * 6  # a warm-up and five timed calls at batch 1, nothing at 32
    assert latency["latency_ms_b32"] == expected and latency["latency_ms_b1"] > 0


def test_batch_one_is_timed_on_the_traced_frozen_pass_when_the_deployed_model_never_ran(monkeypatch):
    """Tracing a deployed ConvNeXt costs more than timing it: when the deployed model has
    not run, batch 1 is timed on the frozen pass's network (already traced), not on it."""
    frozen, deployed = _model(), _model()
    predict_batch(frozen, np.zeros((32, 8, 8, 3), np.uint8))
    compiled_for = []
    real = final.compiled
    monkeypatch.setattr(final, "compiled", lambda model: compiled_for.append(model) or real(model))
    latency = final.measure_latency(deployed, 8, known={32: 1.5}, stand_in=frozen)
    assert compiled_for == [frozen] and latency["latency_ms_b1"] > 0 and latency["latency_ms_b32"] == 1.5
    compiled_for.clear()
    predict_batch(deployed, np.zeros((4, 8, 8, 3), np.uint8))  # once the deployed model has run, it is timed itself
    final.measure_latency(deployed, 8, known={32: 1.5}, stand_in=frozen)
    assert compiled_for == [deployed]
