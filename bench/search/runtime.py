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

Mixed precision (``--mixed-precision``): ``on`` computes everything in float16
(variables and the output layer in float32, loss scaling in training): fast on GPUs, slower
than float32 on CPUs. ``bfloat16`` computes the frozen pass (the caching of features,
the floor of every search) in bfloat16 (Keras ``mixed_bfloat16``: float32 variables) and
everything else in float32: CPUs with AMX or AVX512-BF16 run it faster, and bfloat16 keeps
float32's range, so nothing needs loss scaling. ``off``: float32. ``auto``: ``on`` when a
GPU is visible, else float32 (see :data:`AUTO_BFLOAT16` for why not bfloat16 on such CPUs).
Features from another compute precision are other numbers: the cache keys on it.

Runtime (``--runtime``): ``tensorflow`` runs the frozen pass with Keras; ``openvino`` with
OpenVINO's CPU plugin at the same precision (float32 or bfloat16; float16 is refused), see
:mod:`bench.search.openvino_runtime`. The cache keys on it too.
"""

from __future__ import annotations

import logging

from bench.config import MIXED_PRECISION_MODES, RUNTIMES
from bench.errors import BenchError

log = logging.getLogger(__name__)



#: Whether ``auto`` uses bfloat16 for the frozen pass on CPUs that support it. Off: on the
#: brain MRI scans (Xception@224, random weights, the same 10 random-tuner trials) bfloat16
#: features moved validation AUCs by up to 0.046, while a re-run moved them by 0; the caching
#: pass was 1.22x faster (README, "Frozen-pass precision"). So bfloat16 is opt-in.
AUTO_BFLOAT16 = False

#: /proc/cpuinfo flags of CPUs with bfloat16 arithmetic in hardware.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")

_frozen_pass = "float32"  # this process's frozen-pass precision (set by configure)
_runtime = "tensorflow"  # what runs it (set by configure)


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


def policy_for(mode: str) -> str:
    """Keras global dtype policy name for a ``--mixed-precision`` mode on this machine."""
    return precision_for(mode)[0]


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


def configure(deterministic: bool, mixed_precision: str, seed: int, runtime: str = "tensorflow") -> str:
    """Apply the settings for this process; returns the global dtype policy in use."""
    import keras
    import tensorflow as tf

    global _frozen_pass, _runtime
    check_runtime(runtime, mixed_precision)
    _runtime = runtime
    if deterministic:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        log.info("deterministic: TensorFlow op determinism on")
    policy, _frozen_pass = precision_for(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    if policy != "float32":
        log.info(f"mixed precision: {policy} (float16 compute, float32 variables)")
    if _frozen_pass == "bfloat16":
        has = cpu_bf16_flags()
        log.info(f"frozen pass in bfloat16 ({'CPU has ' + ', '.join(has) if has else 'no bfloat16 hardware found: may be slower'})")
    return policy


def frozen_pass_dtype() -> str:
    """Compute dtype of the frozen pass in this process: float32, float16 or bfloat16."""
    return "float16" if mixed() else _frozen_pass


def frozen_pass_runtime() -> str:
    """What runs the frozen pass in this process: tensorflow or openvino."""
    return _runtime


def mixed() -> bool:
    """Whether the current global Keras policy computes in float16."""
    import keras

    return keras.mixed_precision.global_policy().compute_dtype == "float16"
