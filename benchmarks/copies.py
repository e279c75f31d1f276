"""Copy detection: recall per re-processing family, false links, and grouping at scale.

    .venv/bin/python benchmarks/copies.py                 # all three parts
    .venv/bin/python benchmarks/copies.py --scale 5000    # a smaller scale part
    .venv/bin/python benchmarks/copies.py --scale 0       # recall and false links only
    .venv/bin/python benchmarks/copies.py --only-scale    # the scale part only
    .venv/bin/python benchmarks/copies.py --cutoffs       # where the worker processes start to pay

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
   of others) written as PNG files to a folder (once: a later run with the same N finds
   them there), then ``bench scan``'s own steps on that folder, timed one by one:
   :func:`bench.data.scan.scan` (worker processes on every usable core), the copy links
   (:func:`bench.data.copies.find_links`, with its stage times: candidates, layout scores,
   keypoint checks in worker processes, which read the mirrored images they need from
   disk) and the rest of the grouping (:func:`bench.data.group_files.grouping_for`:
   build_groups and the large-group checks) [target: 50,000 scanned and grouped in
   <= 5 min]; peak RSS of this process and of the largest worker process.

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

from _measure import best_of  # noqa: E402
from bench.data.copies import DEFAULT_COPY_THRESHOLD, copy_features, find_links
from bench.data.images import open_rgb
from bench.data.reprocess import FAMILIES
from bench.data.scan import scan
from bench.parallel import usable_cores
from bench.data.split import group_index

from _docs import add_option, recording  # noqa: E402


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


def phantom_image(job: tuple[int, int, int | None, str | None]) -> tuple[str, Image.Image]:
    """(index, size, copy_of, family) -> (label, image): a phantom, or a re-processed copy of one."""
    from bench.data.phantom import render_slice

    index, size, source, family = job
    seed = index if source is None else source
    image = Image.fromarray(render_slice(np.random.default_rng([seed, 99]), size, seed % 2 == 1))
    if source is not None:
        image = FAMILIES[family](image, np.random.default_rng([index, 5])).convert("L")
    return ("tumor" if seed % 2 else "no_tumor"), image


def _phantom(job: tuple[int, int, int | None, str | None]):
    """(index, size, copy_of, family) -> (Record, features), in memory."""
    import imagehash

    label, image = phantom_image(job)
    raw = image.tobytes() + str(image.size).encode()
    record = Record(f"img_{job[0]:06d}", label, hashlib.sha256(raw).hexdigest(),
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


PHANTOM_MARKER = ".bench-phantoms"  # hidden: the scan ignores it


def _write_phantom(task: tuple[str, tuple]) -> None:
    folder, job = task
    label, image = phantom_image(job)
    image.save(Path(folder) / label / f"img_{job[0]:06d}.png")


def phantom_folder(folder: Path, jobs, processes: int) -> bool:
    """Write ``jobs`` as ``folder/<label>/img_<index>.png`` unless the folder already holds
    exactly these (its marker names them); True when it wrote them."""
    key = hashlib.sha256(repr(jobs).encode()).hexdigest()
    marker = folder / PHANTOM_MARKER
    if marker.exists() and marker.read_text() == key:
        return False
    if folder.exists() and any(folder.iterdir()) and not marker.exists():
        raise SystemExit(f"{folder} is not empty and was not written by this benchmark; pass another --folder")
    shutil.rmtree(folder, ignore_errors=True)
    for label in ("no_tumor", "tumor"):
        (folder / label).mkdir(parents=True)
    with Pool(processes) as pool:
        pool.map(_write_phantom, [(str(folder), job) for job in jobs], chunksize=64)
    marker.write_text(key)
    return True


def scale(n: int, threshold: float, folder: Path | None) -> dict:
    """Write (or reuse) a folder of ``n`` phantoms, then time ``bench scan``'s scan and grouping of it."""
    from bench.data.group_files import grouping_for

    jobs = phantom_set(n, 96, 0.05)
    folder = folder or Path(tempfile.gettempdir()) / f"bench-phantoms-{n}"
    t = time.perf_counter()
    wrote = phantom_folder(folder, jobs, os.cpu_count() or 1)
    write_s = time.perf_counter() - t
    calls = []
    t0 = time.perf_counter()
    index = scan(folder, progress=lambda done, total: calls.append(done))
    t1 = time.perf_counter()
    stages: dict[str, float] = {}
    # what group_index does first (it keeps the links in index.link_cache), with its stage times
    links = find_links(index.records, index.features, threshold, mirrored=index.mirrored_features, times=stages)
    index.link_cache[threshold] = links
    t2 = time.perf_counter()
    grouping = grouping_for(index, threshold, None)  # the rest of bench scan's grouping: build_groups and the checks
    t3 = time.perf_counter()
    number = {rec.path: int(Path(rec.path).stem.split("_")[1]) for rec in index.records}
    group_of = {number[grouping.records[i].path]: k for k, g in enumerate(grouping.groups) for i in g.members}
    copies = [j for j in jobs if j[2] is not None]
    found = sum(group_of.get(j[0]) is not None and group_of.get(j[0]) == group_of.get(j[2]) for j in copies)
    source_pairs = {frozenset((j[0], j[2])) for j in copies}
    other = sum(frozenset((number[index.records[l.a].path], number[index.records[l.b].path])) not in source_pairs
                for l in links)
    return {"n": n, "folder": folder, "wrote": wrote, "write_s": write_s, "scan_s": t1 - t0, "links_s": t2 - t1,
            "stages": stages, "groups_s": t3 - t2, "links": len(links), "other_links": other,
            "records": len(index.records),
            "skipped": len(index.skipped), "progress_ok": calls == sorted(calls) and calls[-1:] == [n],
            "copies": len(copies), "copies_found": found, "largest": max(g.size for g in grouping.groups),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def cutoffs(data: Path) -> None:
    """Serial against parallel, where the parallel paths start (bench.data.scan.PARALLEL_FROM,
    bench.data.copy_candidates.PARALLEL_CANDIDATES): the scan of small folders (96 px phantoms, brain
    MRI files), and the candidate search + layout scores of 2,000-20,000 phantoms."""
    import bench.data.scan as scan_module
    from bench.data import copy_candidates
    from bench.data.copy_candidates import _candidates, _layouts

    print(f"\n## cut-offs: best of 3, {usable_cores()} usable cores")
    phantoms = Path(tempfile.gettempdir()) / "bench-phantoms-cutoffs"
    jobs = phantom_set(20_000, 96, 0.05)
    phantom_folder(phantoms, jobs, os.cpu_count() or 1)
    sources = {"96 px phantoms": sorted(phantoms.glob("*/*.png")), "brain MRI": sorted(data.glob("*/*"))}
    scan_module.PARALLEL_FROM, copy_candidates.PARALLEL_CANDIDATES = 1, 1
    rows = []
    for name, files in sources.items():
        for n in (8, 16, 32, 64, 128):
            with tempfile.TemporaryDirectory(prefix="bench-cutoff-") as tmp:
                for f in files[:: max(1, len(files) // n)][:n]:
                    (Path(tmp) / f.parent.name).mkdir(exist_ok=True)
                    os.symlink(f, Path(tmp) / f.parent.name / f.name)
                rows.append([f"scan, {name}", n]
                            + [best_of(3, lambda w=w, tmp=tmp: scan(Path(tmp), workers=w)) for w in (1, 2)])
    index = scan(phantoms)
    grids = np.stack([f.layout for f in index.features]).astype(np.float32)
    spots = np.stack([f.spots for f in index.features]).astype(np.float32)
    for n in (2000, 5000, 10_000, 20_000):
        sets = [grids[:n], spots[:n]]
        pairs = np.array(sorted(_candidates(sets, 1)), dtype=np.int64).reshape(-1, 2)
        rows.append(["candidates + layout, 96 px phantoms", n] + [
            best_of(2, lambda w=w, sets=sets, pairs=pairs: (_candidates(sets, w), _layouts(sets, pairs, w)))
            for w in (1, 2)])
    from tabulate import tabulate

    print(tabulate(rows, headers=["work", "images", "1 process (s)", "2 processes (s)"], floatfmt=".3f"))


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
    parser.add_argument("--cutoffs", action="store_true",
                        help="only measure where the parallel scan and grouping start to pay (small sizes)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the scale part writes its images, or finds them from an earlier run "
                             "(default: <temp>/bench-phantoms-<N>)")
    add_option(parser)
    opts = parser.parse_args()
    with recording("copies_cutoffs" if opts.cutoffs else "copies", opts.write_docs):
        print(f"# copy detection, --copy-threshold {opts.threshold}")
        if opts.cutoffs:
            cutoffs(opts.data)
            return 0
        if not opts.only_scale:
            recall_and_false_links(opts)
        if opts.scale:
            r = scale(opts.scale, opts.threshold, opts.folder)
            st = r["stages"]
            total = r["scan_s"] + r["links_s"] + r["groups_s"]
            print(f"\n## 3. scale: {r['n']} synthetic images in {r['folder']} (96 px phantom PNGs, {r['copies']} "
                  f"re-processed copies; {'written' if r['wrote'] else 'reused'}, {r['write_s']:.0f} s) "
                  f"[target: scanned and grouped in <= 300 s]")
            print(f"{usable_cores()} usable CPU cores; scan {r['scan_s']:.0f} s ({r['n'] / r['scan_s']:.0f} images/s; "
                  f"{r['records']} records, {r['skipped']} skipped, progress {'ok' if r['progress_ok'] else 'WRONG'})")
            print(f"find_links {r['links_s']:.0f} s: candidates {st['candidates_s']:.0f} s "
                  f"({st['candidate_pairs']} pairs), "
                  f"layout {st['layout_s']:.0f} s ({st['examined_pairs']} pairs worth a keypoint check), keypoints "
                  f"{st['keypoints_s']:.0f} s ({st['keypoint_checks']} checks, {st['mirrored_read']} mirrored images "
                  f"read, {st['keypoint_processes']} processes)")
            print(f"build_groups and the rest of the grouping {r['groups_s']:.1f} s; {r['links']} links "
                  f"({r['other_links']} not between a copy and its source), largest group {r['largest']}, copies "
                  f"grouped with their source {r['copies_found']}/{r['copies']}")
            print(f"scan + grouping: {total:.0f} s ({r['n'] / total:.0f} images/s); peak RSS of this process "
                  f"{r['peak_mib'] / 1024:.2f} GiB, of the largest worker process {r['worker_peak_mib'] / 1024:.2f} GiB")
        return 0


if __name__ == "__main__":
    sys.exit(main())
