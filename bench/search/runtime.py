"""How a run computes: the frozen pass's runtime and precision, op determinism.

:class:`FrozenPass` says what runs the frozen pass (the caching of features, the floor of
every search) and in which dtype. It is built once from the run's configuration
(:meth:`FrozenPass.for_config`) and travels explicitly with every job
(:class:`bench.pipeline.BackboneJob`) to the feature cache, which keys on it: features from
another precision or runtime are other numbers. Nothing here keeps state between runs;
Keras' own global dtype policy is set only inside :func:`run_settings` and restored after.

Determinism: bench always seeds the split, the tuner, every trial (seed * 1000 + trial
id), augmentation and the bootstrap. That fixes *which* trials run and their initial
weights, but TensorFlow may still sum floating-point numbers in a different order from
run to run (multi-threaded reductions on CPU, atomics on GPU), so validation scores can
differ in the last digits and, through the Bayesian tuner, steer later trials
differently. ``--deterministic`` turns on ``tf.config.experimental.enable_op_determinism``:
same seed, same machine, same library versions -> identical trials.csv and leaderboard
(apart from timings). It can be slower, and an op without a deterministic kernel then
fails instead of running. Results still differ across machines, CPU vs GPU and
TensorFlow versions. TensorFlow has no public switch to turn op determinism off again,
so it stays on for the rest of the process.

Mixed precision (``--mixed-precision``): ``on`` computes everything in float16
(variables and the output layer in float32, loss scaling in training): fast on GPUs, slower
than float32 on CPUs. ``bfloat16`` computes the frozen pass in bfloat16 (Keras
``mixed_bfloat16``: float32 variables) and everything else in float32: CPUs with AMX or
AVX512-BF16 run it faster, and bfloat16 keeps float32's range, so nothing needs loss
scaling. ``off``: float32. ``auto``: ``on`` when a GPU is visible, else float32 (see
:data:`AUTO_BFLOAT16` for why not bfloat16 on such CPUs).

Runtime (``--runtime``): ``tensorflow`` runs the frozen pass with Keras; ``openvino`` with
OpenVINO's CPU plugin at the same precision (float32 or bfloat16; float16 is refused), see
:mod:`bench.search.openvino_runtime`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.config import MIXED_PRECISION_MODES, RUNTIMES
from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.config import RunConfig

log = logging.getLogger(__name__)

#: Whether ``auto`` uses bfloat16 for the frozen pass on CPUs that support it. Off: bfloat16
#: features move validation scores by more than a re-run does, for a modest gain in the
#: caching pass (figures: docs/performance.md). So bfloat16 is opt-in.
AUTO_BFLOAT16 = False

#: /proc/cpuinfo flags of CPUs with bfloat16 arithmetic in hardware.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def check_mixed_precision(mode: str) -> str:
    if mode not in MIXED_PRECISION_MODES:
        raise BenchError(f"unknown --mixed-precision {mode!r}; choose one of: {', '.join(MIXED_PRECISION_MODES)}")
    return mode


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of :data:`BF16_FLAGS` this CPU has (Linux ``/proc/cpuinfo``; none elsewhere)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [f for f in BF16_FLAGS if f in flags]


def precision_for(mode: str, gpu: bool | None = None, bf16_cpu: bool | None = None) -> tuple[str, str]:
    """``(global Keras policy, frozen-pass compute dtype)`` for a ``--mixed-precision`` mode."""
    check_mixed_precision(mode)
    if mode == "auto":
        if gpu is None:
            import tensorflow as tf

            gpu = bool(tf.config.list_physical_devices("GPU"))
        if bf16_cpu is None:
            bf16_cpu = bool(cpu_bf16_flags())
        mode = "on" if gpu else ("bfloat16" if AUTO_BFLOAT16 and bf16_cpu else "off")
    if mode == "on":
        return "mixed_float16", "float16"
    if mode == "bfloat16":
        return "float32", "bfloat16"
    return "float32", "float32"


def check_runtime(runtime: str, mode: str, gpu: bool | None = None, bf16_cpu: bool | None = None) -> None:
    """Refuse (one line) a ``--runtime`` that cannot run here or cannot run ``--mixed-precision mode``."""
    if runtime not in RUNTIMES:
        raise BenchError(f"unknown --runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if runtime != "openvino":
        return
    from bench.search.openvino_runtime import require_openvino

    require_openvino()
    if precision_for(mode, gpu, bf16_cpu)[1] == "float16":
        why = "a GPU is visible, so --mixed-precision auto means float16" if mode == "auto" else \
            f"--mixed-precision {mode} means float16"
        raise BenchError(f"--runtime openvino runs the frozen pass on the CPU in float32 or bfloat16, but {why}; "
                         "use --runtime tensorflow, or --mixed-precision off or bfloat16")


@dataclass(frozen=True)
class FrozenPass:
    """What runs a run's frozen pass and in which compute dtype.

    ``precision`` is ``float32``, ``bfloat16`` (the frozen pass alone; training stays in
    float32) or ``float16`` (``--mixed-precision on``: the whole run computes in float16
    under Keras' ``mixed_float16`` policy, see :attr:`policy`)."""

    runtime: str = "tensorflow"  # tensorflow or openvino
    precision: str = "float32"  # float32, bfloat16 or float16

    @classmethod
    def of(cls, mixed_precision: str = "off", runtime: str = "tensorflow", gpu: bool | None = None,
           bf16_cpu: bool | None = None) -> "FrozenPass":
        """The frozen pass of ``--mixed-precision mixed_precision --runtime runtime`` on this
        machine (``auto`` looks for a GPU and bfloat16 hardware unless told); refuses (one
        line) a combination that cannot run."""
        check_runtime(runtime, mixed_precision, gpu, bf16_cpu)
        return cls(runtime, precision_for(mixed_precision, gpu, bf16_cpu)[1])

    @classmethod
    def for_config(cls, config: "RunConfig") -> "FrozenPass":
        return cls.of(config.mixed_precision, config.runtime)

    @property
    def policy(self) -> str:
        """Keras dtype policy for the models a run builds: ``mixed_float16`` with float16
        compute, else ``float32`` (a bfloat16 frozen pass sets its own, see
        :meth:`bench.search.source.BackboneSource.prefix`)."""
        return "mixed_float16" if self.precision == "float16" else "float32"

    @property
    def compute_dtype(self) -> str:
        """What the trained models compute in: float16 under ``mixed_float16``, else float32."""
        return "float16" if self.precision == "float16" else "float32"


@contextmanager
def run_settings(frozen_pass: FrozenPass, deterministic: bool = False, seed: int = 0) -> Iterator[None]:
    """Keras' global dtype policy for ``frozen_pass`` (and, with ``deterministic``, seeded
    RNGs and TensorFlow op determinism) while the block runs; the previous policy after."""
    import keras

    if deterministic:
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        log.info("deterministic: TensorFlow op determinism on")
    if frozen_pass.policy != "float32":
        log.info(f"mixed precision: {frozen_pass.policy} (float16 compute, float32 variables)")
    if frozen_pass.precision == "bfloat16":
        has = cpu_bf16_flags()
        log.info(f"frozen pass in bfloat16 ({'CPU has ' + ', '.join(has) if has else 'no bfloat16 hardware found: may be slower'})")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(frozen_pass.policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
