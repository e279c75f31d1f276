"""Copy detection: recall per re-processing family, false links, and grouping at scale.

    .venv/bin/python benchmarks/copies.py                 # all three parts (~10 min here)
    .venv/bin/python benchmarks/copies.py --scale 5000    # a smaller scale part
    .venv/bin/python benchmarks/copies.py --scale 0       # recall and false links only
    .venv/bin/python benchmarks/copies.py --only-scale    # the scale part only (~7 min)

1. **Recall per family.** From ../shared/data/brain_mri, every other image that is not
   already a copy of another (held apart: one per group of the data's own grouping) gets
   a copy made by each family of :data:`bench.data.reprocess.FAMILIES` (random parameters
   within the promised range, seeded). For each family, the copies are written beside
   the original data in a temporary folder, and ``bench scan``'s own scan and grouping
   run on it. Recall = copies that end up in their original's group [target >= 99 %].
   A link from a copy to an image outside its original's group is a false link.
2. **False links on distinct images.** (a) brain MRI: links between a "yes" and a "no"
   image of the original data (15,190 pairs; a link there is either a false link or a
   mislabelled copy, and is listed); (b) 1,000 synthetic phantoms from bench's demo
   generator, all distinct by construction, all drawn from the same anatomy (the hardest
   case: they share their layout): every link is false. [target <= 0.1 % of pairs]
3. **Scale.** N synthetic images (demo phantoms at 96 px; 5 % of them re-processed copies
   of others), features computed in worker processes (the scan's per-image work), then
   :func:`bench.data.copies.find_links` and :func:`bench.data.duplicates.build_groups`
   timed in this process [target: 50,000 grouped in <= 5 min]; peak RSS of this process.

Prints its figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter, namedtuple
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data.copies import DEFAULT_COPY_THRESHOLD, copy_features, find_links
from bench.data.duplicates import build_groups
from bench.data.images import open_rgb
from bench.data.reprocess import FAMILIES
from bench.data.scan import scan
from bench.data.split import group_index

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain_mri"


def _group_of(grouping) -> dict[str, int]:
    return {grouping.records[i].path: k for k, g in enumerate(grouping.groups) for i in g.members}


def recall_per_family(data: Path, threshold: float) -> tuple[list[list], int, int]:
    """Rows [family, copies, linked, recall %, false links] and the held-apart count."""
    base = group_index(scan(data), threshold)
    held = [g.members[0] for g in base.groups if g.size == 1][::2]
    rows, false_total = [], 0
    with tempfile.TemporaryDirectory(prefix="bench-copies-") as tmp:
        for f_index, (family, transform) in enumerate(FAMILIES.items()):
            root = Path(tmp) / f"f{f_index}"
            for label in {r.label for r in base.records}:
                (root / label).mkdir(parents=True)
            for rec in base.records:
                os.symlink(data / rec.path, root / rec.path)
            rng = np.random.default_rng([1, f_index])
            copy_of = {}
            for i in held:
                rec = base.records[i]
                copy = transform(open_rgb(data / rec.path)[0], rng)
                name = f"{rec.label}/copy_{i:04d}.png"
                copy.save(root / name)
                copy_of[name] = rec.path
            grouping = group_index(scan(root), threshold)
            group = _group_of(grouping)
            linked = sum(c in group and group.get(c) == group.get(o) for c, o in copy_of.items())
            base_group = _group_of(base)
            # a false link: a copy linked to an image outside its own original's base group
            false = 0
            for link in grouping.links:
                a, b = grouping.records[link.a].path, grouping.records[link.b].path
                for c, other in ((a, b), (b, a)):
                    if c in copy_of and other in base_group and base_group[other] != base_group[copy_of[c]]:
                        false += 1
                        print(f"  false link ({family}): {c} (copy of {copy_of[c]}) <-> {other}: {link}")
            direct = {(grouping.records[l.a].path, grouping.records[l.b].path) for l in grouping.links}
            for c, o in copy_of.items():
                if not (c in group and group.get(c) == group.get(o)):
                    why = ("linked, but not grouped (average linkage)" if (o, c) in direct or (c, o) in direct
                           else "not linked")
                    print(f"  missed ({family}): {c} (copy of {o}): {why}")
            false_total += false
            rows.append([family, len(copy_of), linked, 100.0 * linked / len(copy_of), false])
            shutil.rmtree(root)
    return rows, len(held), false_total


def brain_cross_label(data: Path, threshold: float) -> tuple[int, int, list]:
    index = scan(data)
    grouping = group_index(index, threshold)
    labels = Counter(r.label for r in index.records)
    pairs = int(np.prod(list(labels.values()))) if len(labels) == 2 else 0
    cross = [l for l in grouping.links if index.records[l.a].label != index.records[l.b].label]
    return pairs, len(cross), [(index.records[l.a].path, index.records[l.b].path, l.kind) for l in cross]


Record = namedtuple("Record", "path label sha256 phash dhash")


def _phantom(job: tuple[int, int, int | None, str | None]):
    """(index, seed, copy_of, family) -> (Record, features): a phantom, or a re-processed copy of one."""
    import imagehash

    from bench.data.phantom import render_slice

    index, size, source, family = job
    seed = index if source is None else source
    image = Image.fromarray(render_slice(np.random.default_rng([seed, 99]), size, seed % 2 == 1))
    if source is not None:
        image = FAMILIES[family](image, np.random.default_rng([index, 5])).convert("L")
    raw = image.tobytes() + str(image.size).encode()
    record = Record(f"img_{index:06d}", "tumor" if seed % 2 else "no_tumor", hashlib.sha256(raw).hexdigest(),
                    str(imagehash.phash(image)), str(imagehash.dhash(image)))
    return record, copy_features(image)


def phantom_set(n: int, size: int, copies: float, seed: int = 0) -> list[tuple[int, int, int | None, str | None]]:
    rng = np.random.default_rng(seed)
    n_copies = int(n * copies)
    sources = rng.choice(n - n_copies, n_copies, replace=False)
    names = list(FAMILIES)
    jobs = [(i, size, None, None) for i in range(n - n_copies)]
    jobs += [(n - n_copies + k, size, int(s), names[k % len(names)]) for k, s in enumerate(sources)]
    return jobs


def features_of(jobs, processes: int):
    with Pool(processes) as pool:
        out = pool.map(_phantom, jobs, chunksize=64)
    return [r for r, _ in out], [f for _, f in out]


def distinct_phantoms(n: int, threshold: float) -> tuple[int, int]:
    records, features = features_of(phantom_set(n, 128, 0.0, seed=3), os.cpu_count() or 1)
    links = find_links(records, features, threshold)
    return n * (n - 1) // 2, len(links)


def scale(n: int, threshold: float) -> dict:
    jobs = phantom_set(n, 96, 0.05)
    t0 = time.perf_counter()
    records, features = features_of(jobs, os.cpu_count() or 1)
    t1 = time.perf_counter()
    links = find_links(records, features, threshold)
    t2 = time.perf_counter()
    groups = build_groups([r.label for r in records], links)
    t3 = time.perf_counter()
    n_copies = sum(1 for j in jobs if j[2] is not None)
    group_of = {i: k for k, g in enumerate(groups.groups) for i in g.members}
    found = sum(group_of.get(j[0]) is not None and group_of.get(j[0]) == group_of.get(j[2]) for j in jobs if j[2] is not None)
    largest = max(g.size for g in groups.groups)
    return {"n": n, "features_s": t1 - t0, "links_s": t2 - t1, "groups_s": t3 - t2, "links": len(links),
            "copies": n_copies, "copies_found": found, "largest": largest,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def recall_and_false_links(opts) -> None:
    from tabulate import tabulate

    t0 = time.perf_counter()
    rows, held, false_total = recall_per_family(opts.data, opts.threshold)
    print(f"\n## 1. recall per family: {held} held-apart brain MRI images, one copy each per family "
          f"({time.perf_counter() - t0:.0f} s) [target >= 99 % each]")
    print(tabulate(rows, headers=["family", "copies", "grouped with original", "recall %", "false links"],
                   floatfmt=".1f"))
    print(f"lowest recall: {min(r[3] for r in rows):.1f} %; false links from copies: {false_total}")

    print("\n## 2. false links on distinct images [target <= 0.1 % of pairs]")
    pairs, cross, listed = brain_cross_label(opts.data, opts.threshold)
    print(f"brain MRI yes x no pairs: {cross} links of {pairs} pairs ({100 * cross / max(pairs, 1):.3f} %)")
    for a, b, kind in listed:
        print(f"  {a} <-> {b} ({kind})")
    if opts.phantoms:
        pairs, links = distinct_phantoms(opts.phantoms, opts.threshold)
        print(f"distinct synthetic phantoms: {links} links of {pairs} pairs ({100 * links / pairs:.4f} %)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threshold", type=float, default=DEFAULT_COPY_THRESHOLD)
    parser.add_argument("--scale", type=int, default=50_000, help="images in the scale part (0: skip)")
    parser.add_argument("--phantoms", type=int, default=1000, help="distinct phantoms for the false-link rate")
    parser.add_argument("--only-scale", action="store_true", help="skip parts 1 and 2")
    opts = parser.parse_args()
    print(f"# copy detection, --copy-threshold {opts.threshold}")
    if not opts.only_scale:
        recall_and_false_links(opts)
    if opts.scale:
        r = scale(opts.scale, opts.threshold)
        print(f"\n## 3. scale: {r['n']} synthetic images (96 px phantoms, {r['copies']} re-processed copies) "
              f"[target: grouped in <= 300 s]")
        print(f"features (the scan's per-image work, {os.cpu_count()} processes): {r['features_s']:.0f} s "
              f"({r['n'] / r['features_s']:.0f} images/s)")
        print(f"grouping: find_links {r['links_s']:.0f} s + build_groups {r['groups_s']:.1f} s = "
              f"{r['links_s'] + r['groups_s']:.0f} s; {r['links']} links, largest group {r['largest']}, "
              f"copies grouped with their source {r['copies_found']}/{r['copies']}, other links "
              f"{r['links'] - r['copies_found']}")
        print(f"peak RSS of this process: {r['peak_mib'] / 1024:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
