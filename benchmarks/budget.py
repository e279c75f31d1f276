"""Every backbone under cross-validation, and the same question under ``--budget``.

Run from the repository root::

    .venv/bin/python benchmarks/budget.py                 # all backbones, --cv 5, then --budget 3m
    .venv/bin/python benchmarks/budget.py --budget 30m    # the longer budget
    .venv/bin/python benchmarks/budget.py --quick         # two small backbones at 64 px, --budget 1m

Two real ``bench run`` processes on ``../shared/data/brain_mri`` (``--weights none``, each
backbone at its default size, no export), in a temporary folder:

1. ``--cv 5 --backbones '*' --max-unfreeze 0`` without a budget: its wall time against
   the sum of its passes of the backbones over images (the "cached ... in" lines: one
   forward pass per image and backbone; and the "set BatchNorm statistics ... in" lines of
   random weights: one pass over 32 training images in training mode) [target <= 1.3x],
   beside its ratio to the caching lines alone, and its recommendation with the CV interval.
2. ``--cv 5 --backbones '*' --budget B`` with the default search space (fine-tuning
   included): its wall time, what it ran, what it stopped and why (budget.json), and its
   recommendation beside the first run's, with whether their fold intervals overlap.

``--finetune`` asks the fine-tuning question instead, against a reference run on the
leading backbones (``--leaders a,b,c``, or the ``--top`` 3 of run 1, which then runs first):

3. ``--cv 5 --backbones '*' --budget 30m`` (``--finetune-budget``) with the default search
   space: its wall time against the budget, what it ran and what it stopped;
4. ``--cv 5 --backbones LEADERS`` with the same space and no budget: its wall time and
   recommendation, and whether the budgeted run's pick has a fold interval overlapping
   that of this run's pick.

``--quick --finetune`` runs both on two small backbones at 64 px with a one-minute budget.

``--times K`` runs run 1 K times, one after another, each in a fresh results folder, and
prints each ratio and their spread (the machine's own drift from run to run is part of
it).

``--demo N`` runs run 1 alone on ``bench demo-data --n N --size 256`` (2N synthetic
phantom images instead of the brain MRI scans): how the ratio moves when the passes grow
with the number of images and the fixed costs (start-up, building each backbone, the
deployed model, the report) do not.

Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def overlap(a: dict, b: dict) -> bool:
    """Whether the fold intervals of two leaderboard rows overlap."""
    return a["cv_roc_auc_fold_ci_low"] <= b["cv_roc_auc_fold_ci_high"] and \
        b["cv_roc_auc_fold_ci_low"] <= a["cv_roc_auc_fold_ci_high"]


def ranked(rows: list[dict]) -> list[dict]:
    """The ranked backbone rows, best first."""
    rows = [r for r in rows if r.get("kind", "backbone") == "backbone" and r.get("rank") is not None
            and r.get("status") == "ok"]
    return sorted(rows, key=lambda r: float(r["rank"]))


def print_budgeted(label: str, timed: dict, spent: dict, rows: list[dict]) -> None:
    """A budgeted run: wall time against its budget, what it cached, and each backbone's fate."""
    print(f"{label}: {timed['wall_s']:.0f} s wall (the searches, final model included, used "
          f"{spent['spent_s']:.0f} s of {spent['budget_s']:.0f} s); caching passes {timed['caching_s']:.0f} s")
    prepared = spent.get("prepared", [])
    print(f"  cached, cheapest first: {', '.join(f'{n} ({s:.0f} s)' for n, s, *_ in prepared)}")
    for r in rows:
        if r.get("kind", "backbone") != "backbone":
            continue
        state = f"rank {r['rank']:.0f}, every fold" if r.get("status") == "ok" else str(r.get("message"))
        print(f"  {r['backbone']}: {state}")


def finetune(out: list[str], results: Path, every: list[str], leaders: list[str], budget: str) -> None:
    """Runs 3 and 4: every backbone with fine-tuning under the budget, and the leaders
    without one, each in an output folder of its own (each caches its features itself)."""
    timed = run([*out, *every, "--out", str(results / "budgeted"), "--name", "finetune-budget", "--budget", budget],
                f"{every[1]}, --budget {budget}")
    full = run([*out, "--backbones", ",".join(leaders), "--out", str(results / "unbudgeted"), "--name", "finetune"],
               "leaders, no budget")
    spent = json.loads((results / "budgeted" / "finetune-budget" / "budget.json").read_text())
    budget_rows, full_rows = board(results / "budgeted", "finetune-budget"), board(results / "unbudgeted", "finetune")
    print(f"# Fine-tuning (--cv 5, the default search space: every unfreeze depth): --backbones {every[1]} under "
          f"--budget {budget}, against the leading backbones ({', '.join(leaders)}) without a budget")
    print_budgeted(f"--budget {budget}", timed, spent, budget_rows)
    best = recommendation(full_rows)
    print(f"the leaders, no budget: {full['wall_s']:.0f} s wall; caching passes {full['caching_s']:.0f} s")
    if best:
        print(f"  recommends {best['backbone']}: {interval(best)}")
    print_pick(f"--budget {budget} recommends", recommendation(budget_rows), best)


def print_pick(lead: str, pick: dict | None, best: dict | None) -> None:
    """The budgeted run's recommendation ``pick`` beside the unbudgeted run's ``best``:
    whether their fold intervals overlap; or that the budgeted run recommends nothing."""
    if pick and best:
        print(f"{lead} {pick['backbone']}: {interval(pick)}; its fold interval "
              f"{'overlaps' if overlap(pick, best) else 'does not overlap'} that of the unbudgeted run's pick, "
              f"{best['backbone']}")
    elif not pick:
        print(f"{lead} nothing: no backbone finished its folds")


def passes(full: dict) -> float:
    """Run 1's seconds in its backbones' passes over images (caching and BatchNorm lines)."""
    return full["caching_s"] + full["calibration_s"]


def ratio(full: dict) -> float:
    """Run 1's wall time over its backbones' passes over images."""
    return full["wall_s"] / passes(full)


def frozen_label(k: int, times: int) -> str:
    """Run 1's name; the k-th (from 1) of ``times`` where it runs several times."""
    return "no budget, --max-unfreeze 0" + (f", run {k} of {times}" if times > 1 else "")


def print_frozen(full: dict, label: str) -> None:
    """Run 1's wall time against its backbones' passes over images."""
    print(f"{label}: {full['wall_s']:.0f} s wall; {passes(full):.0f} s in the backbones' passes over "
          f"images (caching lines {full['caching_s']:.0f} s: one forward pass per image and backbone; BatchNorm "
          f"statistics lines {full['calibration_s']:.0f} s): {ratio(full):.2f}x [target <= 1.3x]; "
          f"{full['wall_s'] / full['caching_s']:.2f}x the caching lines alone")


def frozen_runs(out: list[str], results: Path, times: int) -> list[dict]:
    """Run 1 ``times`` times, each in a results folder of its own (a run next to another
    would reuse its cached features), the first in ``results``."""
    return [run([*out, "--out", str(results if k == 1 else results.with_name(f"{results.name}-{k}")),
                 "--name", "frozen", "--max-unfreeze", "0"], frozen_label(k, times))
            for k in range(1, times + 1)]


def print_frozen_runs(fulls: list[dict]) -> None:
    """Each run 1 and, with several, the spread of the ratio (runs one after another: the
    machine's own drift is part of it)."""
    for k, full in enumerate(fulls, 1):
        print_frozen(full, frozen_label(k, len(fulls)))
    if len(fulls) > 1:
        ratios = sorted(ratio(f) for f in fulls)
        print(f"  {len(fulls)} runs: {ratios[0]:.2f}x to {ratios[-1]:.2f}x, median {statistics.median(ratios):.2f}x "
              "[target <= 1.3x]")


def demo(n: int, write_docs: bool, times: int = 1) -> int:
    """Run 1 on ``2 n`` synthetic phantom images (:func:`bench.data.demo.make_demo_data`)."""
    from bench.data.demo import make_demo_data

    with recording("budget_demo", write_docs), tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        data = make_demo_data(Path(tmp, "demo"), n=n, size=256, seed=0)
        out = ["--data", str(data), "--backbones", "*", *COMMON, "--reports", f"{tmp}/reports"]
        fulls = frozen_runs(out, Path(tmp, "results"), times)
        print(f"# Every backbone under --cv 5 on {2 * n} synthetic phantom images (bench demo-data --n {n} --size 256; "
              "weights none, each backbone at its default size)")
        print_frozen_runs(fulls)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--quick", action="store_true", help="mobilenet_v2 and densenet121 at 64 px, --budget 1m")
    parser.add_argument("--finetune", action="store_true",
                        help="the fine-tuning comparison on the leading backbones instead (runs 3 and 4; hours)")
    parser.add_argument("--leaders", help="--finetune: these backbones (comma-separated) instead of run 1's best")
    parser.add_argument("--top", type=int, default=3, help="--finetune without --leaders: how many of run 1's best")
    parser.add_argument("--finetune-budget", default="30m")
    parser.add_argument("--demo", type=int, metavar="N", help="run 1 alone, on N synthetic images per class")
    parser.add_argument("--times", type=int, default=1, metavar="K",
                        help="run 1 K times, one after another, each in a fresh folder: the spread of its ratio")
    add_option(parser)
    opts = parser.parse_args()
    if opts.demo:
        return demo(opts.demo, opts.write_docs, opts.times)
    small = ["--image-size", "64", "--max-trials", "3", "--epochs", "3"]
    chosen = ["--backbones", "mobilenet_v2,densenet121", *small] if opts.quick else ["--backbones", "*"]
    budget = "1m" if opts.quick else opts.budget
    if opts.finetune:
        section = "budget_finetune_quick" if opts.quick else "budget_finetune"
        with recording(section, opts.write_docs), tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
            results = Path(tmp, "results")
            out = ["--data", str(opts.data), *(small if opts.quick else []), *COMMON, "--reports", f"{tmp}/reports"]
            leaders = opts.leaders.split(",") if opts.leaders else None
            if leaders is None:
                run([*out, *chosen[:2], "--out", str(results), "--name", "frozen", "--max-unfreeze", "0"],
                    "no budget, --max-unfreeze 0")
                leaders = [r["backbone"] for r in ranked(board(results, "frozen"))][:opts.top]
                print(f"run 1 ({chosen[1]}, --max-unfreeze 0) ranks first: {', '.join(leaders)}")
            finetune(out, results, chosen[:2], leaders, "1m" if opts.quick else opts.finetune_budget)
        return 0
    with recording("budget_quick" if opts.quick else "budget", opts.write_docs):
        with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
            out = ["--data", str(opts.data), *chosen, *COMMON, "--reports", f"{tmp}/reports"]
            fulls = frozen_runs(out, Path(tmp, "results"), opts.times)
            timed = run([*out, "--out", f"{tmp}/results", "--name", "budget", "--budget", budget], f"--budget {budget}")
            frozen_rows, budget_rows = board(Path(tmp, "results"), "frozen"), board(Path(tmp, "results"), "budget")
            spent = json.loads(Path(tmp, "results", "budget", "budget.json").read_text())
        backbones = [r for r in frozen_rows if r.get("kind", "backbone") == "backbone"]
        print(f"# Every backbone under --cv 5 ({len(backbones)} backbones: "
              f"{', '.join(r['backbone'] for r in backbones)}; weights none, "
              f"{'64 px' if opts.quick else 'each at its default size'})")
        print_frozen_runs(fulls)
        best = recommendation(frozen_rows)
        if best:
            print(f"  recommends {best['backbone']}: {interval(best)}")
        print_budgeted(f"--budget {budget} (default search space, fine-tuning included)", timed, spent, budget_rows)
        print_pick("  recommends", recommendation(budget_rows), best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
