"""The default search space against the one without ``--max-head-weights``: scores and cost.

Run from the repository root::

    .venv/bin/python benchmarks/head_space.py                  # seeds 0-4, frozen Xception@224, --cv 5
    .venv/bin/python benchmarks/head_space.py --quick          # one seed, MobileNetV2@96, 3 trials x 3 epochs

For each seed, two real ``bench run --cv 5`` processes on ``../shared/data/brain_mri``
(``--weights none``, frozen backbone, 10 trials x 10 epochs, the default tuner, no
baseline, no export), each in its own output folder (each caches its own features): the
default space, where a flatten head on Xception's 7x7x2048 map is the output layer alone,
and ``--max-head-weights 0``, where flatten heads also take one or two hidden layers
(up to 25.7 M weights). Same seed, same folds: the out-of-fold predictions are of the same
images, so the two cross-validated ROC AUCs are compared by the clustered DeLong test
(duplicate groups as clusters) bench uses between backbones. Printed per seed: wall
time, the leaderboard's search seconds, CV ROC AUC with its interval, the paired
difference with its interval and p-value, and the deployed model's head; then every
trial of every run by kind of head (inner validation AUC and seconds). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from _docs import add_option, recording  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.evaluate.delong import delong_test  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain_mri"
FULL = ["--backbones", "xception", "--image-size", "224", "--max-trials", "10", "--epochs", "10"]
QUICK = ["--backbones", "mobilenet_v2", "--image-size", "96", "--max-trials", "3", "--epochs", "3"]
COMMON = ["--weights", "none", "--max-unfreeze", "0", "--no-baseline", "--no-export", "--cv", "5"]
SPACES = {"default": [], "no limit": ["--max-head-weights", "0"]}


def run(args: list[str], label: str) -> float:
    """One ``bench run`` process; its wall seconds."""
    cmd = [sys.executable, "-m", "bench.cli", "run", *args]
    print(f"[{label}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def head_kind(pooling: str, dense_layers) -> str:
    hidden = int(dense_layers) if pd.notna(dense_layers) else 0
    if pooling == "flatten":
        return "flatten, hidden layers" if hidden else "flatten, output layer only"
    return f"{pooling} pooling"


def read_run(folder: Path) -> dict:
    """The backbone row, its out-of-fold predictions and every trial of the run's searches."""
    row = next(r for r in json.loads((folder / "leaderboard.json").read_text()) if r.get("kind") == "backbone")
    name = row["backbone"]
    oof = pd.read_csv(folder / name / "oof_predictions.csv").sort_values("file").reset_index(drop=True)
    trials = pd.concat([pd.read_csv(p) for p in folder.rglob("trials.csv")], ignore_index=True)
    return {"row": row, "oof": oof, "trials": trials[trials["status"] == "completed"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", help="split and search seeds (default 0-4; --quick: 0)")
    add_option(parser)
    opts = parser.parse_args()
    seeds = opts.seeds or ([0] if opts.quick else [0, 1, 2, 3, 4])
    size = QUICK if opts.quick else FULL
    with recording("head_space_quick" if opts.quick else "head_space", opts.write_docs):
        runs, trials = {}, []
        with tempfile.TemporaryDirectory(prefix="bench-head-space-") as tmp:
            for seed in seeds:
                for space, extra in SPACES.items():
                    out = Path(tmp, f"{space.replace(' ', '-')}-{seed}")
                    wall = run(["--data", str(opts.data), *size, *COMMON, "--seed", str(seed), *extra,
                                "--out", str(out), "--reports", f"{tmp}/reports", "--name", "run"],
                               f"seed {seed}, {space}")
                    runs[seed, space] = {**read_run(out / "run"), "wall": wall}
                    trials.append(runs[seed, space]["trials"].assign(space=space))
        name = "default", "no limit"
        print(f"# The default search space against --max-head-weights 0 ({' '.join(size)}, {' '.join(COMMON)})")
        print("| seed | space | wall s | search s | CV ROC AUC [95% CI] | deployed head |")
        print("|---|---|---|---|---|---|")
        for (seed, space), r in runs.items():
            row = r["row"]
            print(f"| {seed} | {space} | {r['wall']:.1f} | {row['search_seconds']:.0f} | {row['cv_roc_auc']:.3f} "
                  f"[{row['cv_roc_auc_ci_low']:.3f}, {row['cv_roc_auc_ci_high']:.3f}] | "
                  f"{head_kind(row.get('hp_pooling'), row.get('hp_dense_layers'))} |")
        print()
        print("Paired on the same images (same seed, same folds): default - no limit, clustered DeLong")
        diffs = []
        for seed in seeds:
            a, b = runs[seed, name[0]]["oof"], runs[seed, name[1]]["oof"]
            if not a["file"].equals(b["file"]):
                raise SystemExit(f"seed {seed}: the two runs' out-of-fold predictions are of different images")
            positive = [c for c in a.columns if c.startswith("prob_")][-1]
            y = (a["label"] == positive[len("prob_"):]).astype(int).to_numpy()
            t = delong_test(y, a[positive].to_numpy(), b[positive].to_numpy(), groups=a["group"].to_numpy())
            diffs.append(t.diff)
            walls = runs[seed, name[0]]["wall"], runs[seed, name[1]]["wall"]
            print(f"seed {seed}: {t.diff:+.3f} [{t.ci_low:+.3f}, {t.ci_high:+.3f}], p = {t.p_value:.2f} "
                  f"({t.n_groups} groups); wall {walls[0]:.1f} s against {walls[1]:.1f} s ({walls[1] / walls[0]:.2f}x)")
        if len(diffs) > 1:  # the seeds resplit and research the same images: a summary, not independent samples
            half = stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
            print(f"mean difference over {len(seeds)} seeds: {np.mean(diffs):+.3f} [{np.mean(diffs) - half:+.3f}, "
                  f"{np.mean(diffs) + half:+.3f}] (t interval over the seeds, which resplit the same images)")
        print()
        table = pd.concat(trials, ignore_index=True)
        table["head"] = [head_kind(p, d) for p, d in zip(table["pooling"], table["dense_layers"])]
        summary = table.groupby(["space", "head"]).agg(trials=("val_auc", "size"), val_auc=("val_auc", "mean"),
                                                       seconds=("seconds", "mean"))
        print("Every trial of every search (folds and final model), by head: mean inner validation AUC and seconds")
        print("| space | head | trials | mean val AUC | mean seconds per trial |")
        print("|---|---|---|---|---|")
        for (space, head), s in summary.iterrows():
            print(f"| {space} | {head} | {int(s.trials)} | {s.val_auc:.3f} | {s.seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
