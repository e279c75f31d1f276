"""Every backbone under cross-validation, and the same question under ``--budget``.

Run from the repository root::

    .venv/bin/python benchmarks/budget.py                 # all backbones, --cv 5, then --budget 3m
    .venv/bin/python benchmarks/budget.py --budget 30m    # the longer budget
    .venv/bin/python benchmarks/budget.py --quick         # two small backbones at 64 px, --budget 1m

Two real ``bench run`` processes on ``../shared/data/brain_mri`` (``--weights none``, each
backbone at its default size, no export), in a temporary folder:

1. ``--cv 5 --backbones '*' --max-unfreeze 0`` without a budget: its wall time against
   the sum of its caching passes (the "cached ... in" lines: one forward pass per image
   and backbone) [target <= 1.3x], and its recommendation with the CV interval.
2. ``--cv 5 --backbones '*' --budget B`` with the default search space (fine-tuning
   included): its wall time, what it ran, what it stopped and why (budget.json), and its
   recommendation beside the first run's, with whether their fold intervals overlap.

Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _docs import add_option, recording
from cv_speed import run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain_mri"
COMMON = ["--weights", "none", "--cv", "5", "--no-export", "--no-baseline"]


def board(results: Path, name: str) -> list[dict]:
    return json.loads((results / name / "leaderboard.json").read_text())


def recommendation(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r.get("rank") == 1), None)


def interval(row: dict) -> str:
    low, high = row.get("cv_roc_auc_fold_ci_low"), row.get("cv_roc_auc_fold_ci_high")
    return (f"CV ROC AUC {row['cv_roc_auc']:.3f} [{row['cv_roc_auc_ci_low']:.3f}, {row['cv_roc_auc_ci_high']:.3f}], "
            f"fold mean {row['cv_roc_auc_fold_mean']:.3f} [{low:.3f}, {high:.3f}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--quick", action="store_true", help="mobilenet_v2 and densenet121 at 64 px, --budget 1m")
    add_option(parser)
    opts = parser.parse_args()
    chosen = ["--backbones", "mobilenet_v2,densenet121", "--image-size", "64", "--max-trials", "3", "--epochs", "3"] \
        if opts.quick else ["--backbones", "*"]
    budget = "1m" if opts.quick else opts.budget
    with recording("budget_quick" if opts.quick else "budget", opts.write_docs):
        with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
            out = ["--data", str(opts.data), *chosen, *COMMON, "--out", f"{tmp}/results", "--reports", f"{tmp}/reports"]
            full = run([*out, "--name", "frozen", "--max-unfreeze", "0"], "no budget, --max-unfreeze 0")
            timed = run([*out, "--name", "budget", "--budget", budget], f"--budget {budget}")
            frozen_rows, budget_rows = board(Path(tmp, "results"), "frozen"), board(Path(tmp, "results"), "budget")
            spent = json.loads(Path(tmp, "results", "budget", "budget.json").read_text())
        backbones = [r for r in frozen_rows if r.get("kind", "backbone") == "backbone"]
        print(f"# Every backbone under --cv 5 ({len(backbones)} backbones: "
              f"{', '.join(r['backbone'] for r in backbones)}; weights none, "
              f"{'64 px' if opts.quick else 'each at its default size'})")
        print(f"no budget, --max-unfreeze 0: {full['wall_s']:.0f} s wall; {full['caching_s']:.0f} s in its caching "
              f"passes (one forward pass per image and backbone): {full['wall_s'] / full['caching_s']:.2f}x "
              "[target <= 1.3x]")
        best = recommendation(frozen_rows)
        if best:
            print(f"  recommends {best['backbone']}: {interval(best)}")
        print(f"--budget {budget} (default search space, fine-tuning included): {timed['wall_s']:.0f} s wall "
              f"(the searches, final model included, used {spent['spent_s']:.0f} s of {spent['budget_s']:.0f} s); "
              f"caching passes {timed['caching_s']:.0f} s")
        prepared = spent.get("prepared", [])
        print(f"  cached, cheapest first: {', '.join(f'{n} ({s:.0f} s)' for n, s in prepared)}")
        for r in budget_rows:
            if r.get("kind", "backbone") != "backbone":
                continue
            state = (f"rank {r['rank']:.0f}, every fold" if r.get("status") == "ok"
                     else str(r.get("message")))
            print(f"  {r['backbone']}: {state}")
        chosen_row = recommendation(budget_rows)
        if chosen_row and best:
            overlap = (chosen_row["cv_roc_auc_fold_ci_low"] <= best["cv_roc_auc_fold_ci_high"]
                       and best["cv_roc_auc_fold_ci_low"] <= chosen_row["cv_roc_auc_fold_ci_high"])
            print(f"  recommends {chosen_row['backbone']}: {interval(chosen_row)}; its fold interval "
                  f"{'overlaps' if overlap else 'does not overlap'} that of the unbudgeted run's pick, "
                  f"{best['backbone']}")
        elif not chosen_row:
            print("  recommends nothing: no backbone finished its folds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
