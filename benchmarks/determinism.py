"""How reproducible is a run WITHOUT --deterministic? Two identical runs, compared.

    .venv/bin/python benchmarks/determinism.py [--data DIR] [--flag]

Runs the same `bench run` twice (same seed, separate output folders so each computes
its own caches) and prints whether trials.csv, the leaderboard and the test predictions
are identical, and the largest numeric difference, timing columns excluded. ``--flag``
adds --deterministic to both runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from _docs import add_option, recording  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
from bench.schema import TIMING_COLUMNS as TIME_COLUMNS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brain_mri")
    parser.add_argument("--flag", action="store_true", help="pass --deterministic")
    add_option(parser)
    args = parser.parse_args()
    with recording("determinism", args.write_docs):
        options = ["--data", str(args.data), "--backbones", "mobilenet_v2", "--weights", "none", "--image-size", "96",
                   "--max-trials", "4", "--epochs", "3", "--tuner", "bayesian", "--max-unfreeze", "1", "--seed", "5",
                   "--no-export", "--name", "d"] + (["--deterministic"] if args.flag else [])
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for i in range(2):
                out = Path(tmp) / f"out{i}"
                subprocess.run([sys.executable, "-m", "bench.cli", "run", *options, "--out", str(out), "--reports",
                                str(out / "reports")], check=True, capture_output=True)
                runs.append(out / "d")
            print(f"data {args.data}, --deterministic {'on' if args.flag else 'off'}")
            for rel in ("mobilenet_v2/trials.csv", "leaderboard.csv", "mobilenet_v2/test_predictions.csv"):
                a, b = (pd.read_csv(r / rel).drop(columns=list(TIME_COLUMNS), errors="ignore") for r in runs)
                numeric = a.select_dtypes("number").columns
                diff = float((a[numeric] - b[numeric]).abs().max().max()) if len(numeric) else 0.0
                print(f"{rel:36s} identical: {a.equals(b)!s:5s}  largest difference: {diff:.3g}")


if __name__ == "__main__":
    main()
