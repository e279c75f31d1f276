"""Peak memory of the default two-backbone run on the brain MRI data.

    .venv/bin/python benchmarks/memory.py            # bench run --backbones xception,resnet50 --weights none
    .venv/bin/python benchmarks/memory.py --cv 5     # the same with --cv 5: peak per outer fold too

A real ``bench run`` process (default search: 10 trials x 10 epochs, unfreeze <= 2, each
backbone at its own size, notebook baseline on; no export) in a temporary folder; its
resident memory is sampled every 0.2 s. Prints the wall time, the peak RSS [target <= 6 GB]
and, with ``--cv``, the peak within each outer fold [flat across folds]. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cv_speed import DEFAULT_DATA, run

from _docs import add_option, recording  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbones", default="xception,resnet50")
    parser.add_argument("--cv", type=int)
    add_option(parser)
    opts = parser.parse_args()
    with recording("memory", opts.write_docs):
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            args = ["--data", str(opts.data), "--backbones", opts.backbones, "--weights", "none", "--no-export",
                    "--out", f"{tmp}/results", "--reports", f"{tmp}/reports", "--name", "m"]
            if opts.cv:
                args += ["--cv", str(opts.cv)]
            result = run(args, "memory")
        print(f"# bench run --backbones {opts.backbones} --weights none{f' --cv {opts.cv}' if opts.cv else ''}")
        print(f"wall {result['wall_s']:.0f} s, peak RSS {result['peak_mib'] / 1024:.2f} GiB [target <= 6 GB]")
        print("peak RSS per stage (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in result["stages"].items()))
        return 0


if __name__ == "__main__":
    sys.exit(main())
