"""Caching throughput of the frozen pass, per runtime, with the feature differences.

    .venv/bin/python benchmarks/frozen_pass.py                                   # xception at 224
    .venv/bin/python benchmarks/frozen_pass.py --backbone mobilenet_v2 --size 96

One process, one backbone (random init, BatchNorm calibrated on 32 of the images), the
prefix of bench's default search (cuts of unfreeze depths 0..2: three outputs), ~128
synthetic brain slices (``bench.data.phantom``, as RGB). Side by side:

- TensorFlow float32: ``predict_on_batch``, as :func:`bench.search.cache.run_prefix` runs it;
- TensorFlow bfloat16: the same weights in a model built under Keras' ``mixed_bfloat16``;
- OpenVINO (when installed; ``--runtime openvino``, :mod:`bench.search.openvino_runtime`)
  with the float32 and the bfloat16 inference precision hints (what ``--mixed-precision
  off`` and ``bfloat16`` give it).

Each runtime makes ``--repeats`` timed passes over all images (more until each has run
``--min-seconds``) after one warm-up batch; the passes are interleaved across runtimes (load from other processes hits all alike)
and the median is reported. Feature differences are against TensorFlow float32 on all
images: ``parity`` is bench's measure (worst per-image relative L2 of the feature map,
:func:`bench.search.openvino_runtime.check_parity`; the worst output), ``pooled`` the same
after global average pooling, ``max abs`` the largest absolute difference. The one-time
cost of OpenVINO (convert + save, read + compile) is shown separately. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _docs import add_option, cpu_model, recording  # noqa: E402


def phantom_images(n: int, size: int) -> np.ndarray:
    from bench.data.phantom import render_slice

    slices = [render_slice(np.random.default_rng([0, i % 2, i]), size, lesion=bool(i % 2)) for i in range(n)]
    return np.repeat(np.stack(slices)[..., None], 3, axis=-1)


def pooled_parity(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    from bench.search.openvino_runtime import check_parity

    def pool(arrays):
        return [a.mean(axis=(1, 2)) if a.ndim == 4 else a for a in arrays]

    return max(check_parity(pool(reference), pool(got)).values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="xception")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--depths", default="0,1,2", help="unfreeze depths whose cut tensors the prefix returns")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per runtime, at least")
    parser.add_argument("--min-seconds", type=float, default=5.0,
                        help="more passes until each runtime has been timed this long (small models)")
    add_option(parser)
    opts = parser.parse_args()
    with recording("frozen_pass", opts.write_docs):

        import keras
        import tensorflow as tf
        import backbones
        from bench.search.openvino_runtime import OpenVinoPrefix, check_parity, convert_prefix
        from bench.search.source import BackboneSource, calibrate_batchnorm

        try:
            import openvino
        except ImportError:
            openvino = None

        record = backbones.get(opts.backbone)
        depths = [int(d) for d in opts.depths.split(",")]
        images = phantom_images(opts.images, opts.size)
        keras.utils.set_random_seed(0)
        base = record.build(weights=None, image_size=opts.size)
        calibrate_batchnorm(base, record.preprocessing, images[:32])
        source = BackboneSource(record, "none", opts.size, Path(tempfile.gettempdir()), 0)
        runners: dict[str, object] = {}
        setup: dict[str, str] = {}

        prefix32 = source.prefix(depths, base)
        runners["TensorFlow float32"] = lambda b: [np.asarray(o) for o in prefix32.predict_on_batch(b)]

        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            base16 = record.build(weights=None, image_size=opts.size)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        base16.set_weights(base.get_weights())
        prefix16 = source.prefix(depths, base16)
        runners["TensorFlow bfloat16"] = lambda b: [np.asarray(o, np.float32) for o in prefix16.predict_on_batch(b)]

        tmp = tempfile.TemporaryDirectory(prefix="bench-frozen-pass-")
        if openvino is not None:
            t0 = time.perf_counter()
            xml = convert_prefix(prefix32, Path(tmp.name), "bench")
            convert_s = time.perf_counter() - t0
            for precision in ("f32", "bf16"):
                t0 = time.perf_counter()
                runner = OpenVinoPrefix(xml, len(depths), precision)
                setup[f"OpenVINO {precision}"] = f"convert+save {convert_s:.1f} s (once), read+compile {time.perf_counter() - t0:.1f} s"
                runners[f"OpenVINO {precision}"] = runner

        def one_pass(run) -> tuple[float, list[np.ndarray]]:
            chunks = []
            t0 = time.perf_counter()
            for start in range(0, len(images), opts.batch):
                chunks.append(run(images[start : start + opts.batch]))
            seconds = time.perf_counter() - t0
            return seconds, [np.concatenate([c[i] for c in chunks]).astype(np.float32) for i in range(len(depths))]

        for run in runners.values():  # warm-up: graph tracing, kernel selection
            run(images[: opts.batch])
        load_before = os.getloadavg()[0]
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        features: dict[str, list[np.ndarray]] = {}
        while min(len(v) for v in seconds.values()) < opts.repeats or min(map(sum, seconds.values())) < opts.min_seconds:
            for name, run in runners.items():
                s, features[name] = one_pass(run)
                seconds[name].append(s)
        load_after = os.getloadavg()[0]

        from bench.search.runtime import BF16_FLAGS, cpu_bf16_flags

        has = cpu_bf16_flags()
        flags = {f: f in has for f in BF16_FLAGS}
        versions = f"tensorflow {tf.__version__}, keras {keras.__version__}" + (
            f", openvino {openvino.__version__}" if openvino is not None else ", openvino not installed")
        print(f"# {record.name} at {opts.size} px, random init, cuts {', '.join(record.cut_layer(d) for d in depths)}; "
              f"{opts.images} images, batch {opts.batch}, median of {len(seconds['TensorFlow float32'])} passes")
        print(f"# CPU: {cpu_model()}, {os.cpu_count()} cores; "
              + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
              + f"; load average {load_before:.1f} -> {load_after:.1f}")
        print(f"# {versions}")
        reference = features["TensorFlow float32"]
        base_rate = opts.images / statistics.median(seconds["TensorFlow float32"])
        header = f"{'runtime':<20} {'img/s':>7} {'vs f32':>7} {'parity':>9} {'pooled':>9} {'max abs':>9}  per-output parity"
        print(header)
        print("-" * len(header))
        for name in runners:
            rate = opts.images / statistics.median(seconds[name])
            parity = check_parity(reference, features[name])
            max_abs = max(float(np.abs(r - g).max()) for r, g in zip(reference, features[name]))
            print(f"{name:<20} {rate:7.1f} {rate / base_rate:6.2f}x {max(parity.values()):9.2e} "
                  f"{pooled_parity(reference, features[name]):9.2e} {max_abs:9.2e}  "
                  + " ".join(f"{v:.1e}" for v in parity.values()))
        scale = max(float(np.abs(r).max()) for r in reference)
        print(f"(largest |feature| in float32: {scale:.2f}; img/s range over passes: "
              + "; ".join(f"{n} {opts.images / max(v):.1f}-{opts.images / min(v):.1f}" for n, v in seconds.items()) + ")")
        for name, text in setup.items():
            print(f"{name}: {text}")
        if openvino is None:
            print("OpenVINO: not installed (pip install 'bench[openvino]')")
        tmp.cleanup()
        return 0


if __name__ == "__main__":
    sys.exit(main())
