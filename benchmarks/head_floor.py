"""How close a flatten head's epoch comes to what the machine can do.

Run from the repository root::

    .venv/bin/python benchmarks/head_floor.py                # Xception@224's map: 100,352 inputs
    .venv/bin/python benchmarks/head_floor.py --write-docs

A dense head on a flattened feature map (``--inputs`` values per image, ``--units`` hidden
units, one output) trained on ``--rows`` images in batches of 32, as a search trains it
(:func:`bench.search.head_training.train_rows`, random data, no dropout). Its epoch needs,
per batch, a forward product (reading the kernel), the kernel's gradient (writing it) and
Adam (reading the kernel, both moments and the gradient, writing three of them); and once
per epoch the validation rows' forward product. The floor adds up those steps at the
speeds it measures, each alone: the matrix products at the machine's sgemm rate
(TensorFlow's, the faster of TensorFlow and numpy), Adam at TensorFlow's fused kernel's
time over the kernel. Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _docs import add_option, recording
from _measure import attach_log, best_of

BATCH = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=7 * 7 * 2048, help="values per row (default: Xception@224's map)")
    parser.add_argument("--units", default="128,256", help="hidden units, comma-separated")
    parser.add_argument("--rows", type=int, default=177, help="training rows (the brain MRI train split)")
    parser.add_argument("--val-rows", type=int, default=38)
    parser.add_argument("--epochs", type=int, default=5)
    add_option(parser)
    opts = parser.parse_args()

    import tensorflow as tf

    from bench.search import head_training as H

    with recording("head_floor", opts.write_docs):
        log = attach_log(echo=False)  # the trainer's per-epoch seconds
        rng = np.random.default_rng(0)
        d, n = opts.inputs, opts.rows
        x = rng.standard_normal((n, d), dtype=np.float32)
        xv = rng.standard_normal((opts.val_rows, d), dtype=np.float32)
        y = (rng.random(n) > 0.5).astype(int)
        yv = np.arange(opts.val_rows) % 2
        steps = -(-n // BATCH)
        print(f"# A flatten head's epoch against its floor: {d:,} inputs, {n} training rows in batches of {BATCH} "
              f"({steps} steps), {opts.val_rows} validation rows")
        copy_a = np.ones(25_000_000, np.float32)
        copy_b = np.empty_like(copy_a)
        copy_s = best_of(5, lambda: np.copyto(copy_b, copy_a), warm_up=True)
        print(f"memory: a 100 MB copy {copy_s * 1000:.1f} ms ({2 * copy_a.nbytes / copy_s / 1e9:.1f} GB/s read + write)")
        rows = []
        for units in (int(u) for u in opts.units.split(",")):
            kernel = rng.standard_normal((d, units), dtype=np.float32)
            flops = 2 * n * d * units
            np_s = best_of(5, lambda: x @ kernel, warm_up=True)
            xt, kt = tf.constant(x), tf.constant(kernel)
            tf_s = best_of(5, lambda: tf.matmul(xt, kt).numpy(), warm_up=True)
            rate = max(flops / np_s, flops / tf_s)
            variables = [tf.Variable(tf.zeros([d, units])) for _ in range(3)]
            grad = tf.ones([d, units])

            def adam():
                tf.raw_ops.ResourceApplyAdam(var=variables[0].handle, m=variables[1].handle, v=variables[2].handle,
                                             beta1_power=0.9, beta2_power=0.999, lr=1e-3, beta1=0.9, beta2=0.999,
                                             epsilon=1e-7, grad=grad)

            adam_s = best_of(5, adam, warm_up=True)
            # forward and gradient products over the training rows, the validation rows' forward product
            products_s = (2 * n + opts.val_rows) * d * units * 2 / rate
            floor = products_s + steps * adam_s
            start = H.initial_weights(d, [(units, 0.0)], 1, 0)
            log.epochs = []
            t0 = time.perf_counter()
            H.train_rows(start, [0.0], x, y, xv, yv, n_classes=2, learning_rate=1e-3, epochs=opts.epochs,
                         patience=opts.epochs)
            run_s, seconds = time.perf_counter() - t0, log.epochs
            rows.append((units, d * units, flops / np_s / 1e9, flops / tf_s / 1e9, adam_s, floor,
                         run_s - sum(seconds), seconds[0], float(np.median(seconds[1:]))))
        print()
        print("| units | kernel weights | sgemm numpy GFLOP/s | sgemm TensorFlow GFLOP/s | fused Adam over the kernel ms "
              "| epoch floor s | set-up s | first epoch s | steady epoch s (median of 2+) | steady / floor |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for units, weights, np_rate, tf_rate, adam_s, floor, setup_s, first_s, steady in rows:
            print(f"| {units} | {weights / 1e6:.1f} M | {np_rate:.0f} | {tf_rate:.0f} | {adam_s * 1000:.1f} | "
                  f"{floor:.3f} | {setup_s:.3f} | {first_s:.3f} | {steady:.3f} | {steady / floor:.2f}x |")
        print()
        print(f"floor = matrix products of the epoch at the faster sgemm rate + {steps} x the fused Adam step; the "
              "kernel's gradient write, the batch gathers and the per-epoch metrics are not in it; set-up = the "
              "run outside its epochs (the head's variables and Adam's moments, the rows as one tensor, the best "
              "epoch's weights handed back)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
