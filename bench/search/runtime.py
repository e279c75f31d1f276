"""Process-wide TensorFlow settings of a run: op determinism and mixed precision.

Determinism: bench always seeds the split, the tuner, every trial (seed * 1000 + trial
id), augmentation and the bootstrap. That fixes *which* trials run and their initial
weights, but TensorFlow may still sum floating-point numbers in a different order from
run to run (multi-threaded reductions on CPU, atomics on GPU), so validation scores can
differ in the last digits and, through the Bayesian tuner, steer later trials
differently. ``--deterministic`` turns on ``tf.config.experimental.enable_op_determinism``:
same seed, same machine, same library versions -> identical trials.csv and leaderboard
(apart from timings). It can be slower, and an op without a deterministic kernel then
fails instead of running. Results still differ across machines, CPU vs GPU and
TensorFlow versions.

Mixed precision (``--mixed-precision``): ``auto`` computes in float16 (variables and the
output layer in float32, loss scaling in training) when a GPU is visible and in float32
on CPU, where float16 is slower, not faster; ``on`` / ``off`` force it.
"""

from __future__ import annotations

import logging

from bench.config import MIXED_PRECISION_MODES
from bench.errors import BenchError

log = logging.getLogger(__name__)



def check_mixed_precision(mode: str) -> str:
    if mode not in MIXED_PRECISION_MODES:
        raise BenchError(f"unknown --mixed-precision {mode!r}; choose one of: {', '.join(MIXED_PRECISION_MODES)}")
    return mode


def policy_for(mode: str) -> str:
    """Keras dtype policy name for a ``--mixed-precision`` mode on this machine."""
    check_mixed_precision(mode)
    if mode == "auto":
        import tensorflow as tf

        mode = "on" if tf.config.list_physical_devices("GPU") else "off"
    return "mixed_float16" if mode == "on" else "float32"


def configure(deterministic: bool, mixed_precision: str, seed: int) -> str:
    """Apply both settings for this process; returns the dtype policy in use."""
    import keras
    import tensorflow as tf

    if deterministic:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        log.info("deterministic: TensorFlow op determinism on")
    policy = policy_for(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    if policy != "float32":
        log.info(f"mixed precision: {policy} (float16 compute, float32 variables)")
    return policy


def mixed() -> bool:
    """Whether the current global Keras policy computes in float16."""
    import keras

    return keras.mixed_precision.global_policy().compute_dtype == "float16"
