"""Copies linked only weakly: do refused links still cross the split and the outer folds?

    .venv/bin/python benchmarks/linked_copies.py                     # 2 x (60 chains of 6 + 250 singles)
    .venv/bin/python benchmarks/linked_copies.py --chains 20 --singles 60 --seeds 2   # a quick look

Data: synthetic phantoms (96 px, bench's demo generator; "no" without and "yes" with a
lesion). Per class, ``--chains`` chains of ``--length`` images drift from one slice toward
another (:func:`bench.data.reprocess.drift_chain`: each image blends the other slice in
``--step`` further and is re-processed by a random family), so neighbours in a chain are
copies and its ends are not; ``--singles`` distinct slices fill the rest. ``bench scan``'s
own scan and grouping run on the folder once (average linkage refuses the links that
would chain a whole run of slices into one group).

Then, for each seed, the train/val/test split (15 % / 15 %) and the ``--cv 5`` plan (with
a 15 % holdout) are made twice: as bench makes them (refused links kept as constraints,
:mod:`bench.data.placement`) and with the refused links ignored. For each: how many
refused (linked) pairs cross the split (train/val/test) or the plan (holdout or an outer
fold), the split fractions and the largest distance of a class's part from its target in
percentage points [target: 0 pairs cross; every fraction within 1 point; the largest
group unchanged].

Prints its figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data.folds import make_folds  # noqa: E402
from bench.data.phantom import render_slice  # noqa: E402
from bench.data.placement import linked_units, refused_edges  # noqa: E402
from bench.data.reprocess import drift_chain  # noqa: E402
from bench.data.scan import scan  # noqa: E402
from bench.data.split import group_index, make_split  # noqa: E402

from _docs import add_option, recording  # noqa: E402

SPLIT = {"train": 0.70, "val": 0.15, "test": 0.15}


def write_data(root: Path, chains: int, length: int, singles: int, step: float, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, lesion in (("no", False), ("yes", True)):
        (root / label).mkdir(parents=True)
        for c in range(chains):
            start, end = (Image.fromarray(render_slice(rng, size, lesion)) for _ in range(2))
            for k, img in enumerate(drift_chain(start, end, length, step, rng)):
                img.save(root / label / f"chain{c:03d}_{k}.png")
        for s in range(singles):
            Image.fromarray(render_slice(rng, size, lesion)).save(root / label / f"single{s:04d}.png")


def crossing(grouping, part_of_path: dict[str, tuple]) -> int:
    path = [r.path for r in grouping.records]
    return sum(part_of_path[path[l.a]] != part_of_path[path[l.b]] for l in grouping.refused
               if path[l.a] in part_of_path and path[l.b] in part_of_path)


def split_figures(index, grouping, seed: int) -> dict:
    manifest = make_split(index, seed=seed, grouping=grouping)
    sizes = manifest.sizes()
    total = len(manifest.files)
    worst = 0.0
    for label in index.classes:
        n = sum(sizes[s][label] for s in sizes)
        worst = max(worst, *(abs(sizes[s][label] / n - SPLIT[s]) * 100 for s in sizes))
    return {"parts": {f["path"]: (f["split"],) for f in manifest.files},
            "fractions": {s: sum(sizes[s].values()) / total for s in sizes}, "worst_pp": worst}


def fold_figures(index, grouping, seed: int, k: int) -> dict:
    plan = make_folds(index, k=k, test_size=0.15, seed=seed, grouping=grouping)
    sizes = plan.sizes()
    worst = 0.0
    for label in index.classes:
        cv, n = sizes["cv"][label], sizes["cv"][label] + sizes["holdout"][label]
        worst = max(worst, abs(sizes["holdout"][label] / n - 0.15) * 100,
                    *(abs(fold[label] / cv - 1 / k) * 100 for fold in sizes["folds"][0]))
    return {"parts": {f["path"]: (f["holdout"], *f["fold"]) for f in plan.files}, "worst_pp": worst}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=60, help="chains per class (default 60)")
    parser.add_argument("--length", type=int, default=6, help="images per chain (default 6)")
    parser.add_argument("--singles", type=int, default=250, help="distinct images per class besides the chains")
    parser.add_argument("--step", type=float, default=0.12, help="how much further each chain image drifts (0.12)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", type=int, default=5, help="split seeds 0..N-1 (default 5)")
    parser.add_argument("--cv", type=int, default=5)
    add_option(parser)
    opts = parser.parse_args()
    with recording("linked_copies", opts.write_docs), tempfile.TemporaryDirectory(prefix="bench-linked-") as tmp:
        root = Path(tmp) / "data"
        print(f"# copies linked only weakly: per class {opts.chains} drifting chains of {opts.length} "
              f"(step {opts.step:g}, re-processed) + {opts.singles} singles, {opts.size} px phantoms")
        write_data(root, opts.chains, opts.length, opts.singles, opts.step, opts.size, seed=0)
        clock = time.perf_counter()
        index = scan(root)
        grouping = group_index(index)
        grouped_s = time.perf_counter() - clock
        units = linked_units(grouping, refused_edges(grouping))
        largest = max(g.size for g in grouping.groups)
        print(f"{len(index.records)} images scanned and grouped in {grouped_s:.0f} s: {len(grouping.groups)} groups "
              f"(largest {largest} images), {len(grouping.links)} links, {len(grouping.refused)} refused by average "
              f"linkage; they join {len(units)} units of 2+ groups (largest {max((n for _, n in units), default=0)} "
              "images)")
        ignored = dataclasses.replace(grouping, refused=[])
        rows = []
        for seed in range(opts.seeds):
            clock = time.perf_counter()
            kept = split_figures(index, grouping, seed)
            kept_s = time.perf_counter() - clock
            plain = split_figures(index, ignored, seed)
            fk, fp = fold_figures(index, grouping, seed, opts.cv), fold_figures(index, ignored, seed, opts.cv)
            f = kept["fractions"]
            rows.append([seed, crossing(grouping, kept["parts"]), crossing(grouping, plain["parts"]),
                         f"{f['train']:.3f}/{f['val']:.3f}/{f['test']:.3f}", f"{kept['worst_pp']:.2f}",
                         f"{plain['worst_pp']:.2f}", crossing(grouping, fk["parts"]), crossing(grouping, fp["parts"]),
                         f"{fk['worst_pp']:.2f}", f"{fp['worst_pp']:.2f}", f"{kept_s:.2f}"])
        from tabulate import tabulate

        print(f"\nrefused (linked) pairs across the split and across the --cv {opts.cv} plan (holdout 0.15, outer "
              "folds); worst pp = the largest distance of a class's part from its asked fraction, in percentage "
              "points [target: 0 pairs; <= 1 pp]")
        print(tabulate(rows, headers=["seed", "split: kept", "split: ignored", "train/val/test", "worst pp",
                                      "worst pp ignored", "folds: kept", "folds: ignored", "folds worst pp",
                                      "worst pp ignored", "split s"]))
        print(f"largest group {largest} images in both (the groups are the grouping's own; only their placement "
              "changes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
