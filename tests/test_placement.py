"""Refused links as constraints of the split and the folds (bench.data.placement)."""

from __future__ import annotations

import dataclasses
from collections import Counter, namedtuple
from types import SimpleNamespace

import numpy as np
import pytest

from bench.data.copy_details import Link
from bench.data.duplicates import DuplicateGroup
from bench.data.folds import make_folds
from bench.data.placement import CUT, LABELS_DIFFER, TOLERANCE, _cut, place_units
from bench.data.split import Grouping, assign_groups, make_split, read_split, write_split

Rec = namedtuple("Rec", "path label sha256")


def _grouping(units: dict[str, list[list[int]]], cross: list[tuple[str, int, str, int]] = ()) -> tuple:
    """A :class:`Grouping` built directly: per class, units given as chains of group sizes
    (consecutive groups joined by one refused link); ``cross`` adds refused links
    ``(class, unit, class, unit)`` between the first groups of two units."""
    records, groups, by_class, refused, first_of = [], [], {}, [], {}
    for label, chains in units.items():
        by_class[label] = []
        for u, sizes in enumerate(chains):
            previous = None
            for size in sizes:
                members = tuple(range(len(records), len(records) + size))
                records.extend(Rec(f"{label}/{i:05d}.png", label, f"{i:064x}") for i in members)
                group = DuplicateGroup(members, ("exact",) if size > 1 else ())
                groups.append(group)
                by_class[label].append(group)
                first_of.setdefault((label, u), members[0])
                if previous is not None:
                    refused.append(Link(previous.members[-1], members[0], "re-processed", 0.8, 30))
                previous = group
    for ca, ua, cb, ub in cross:
        a, b = sorted((first_of[(ca, ua)], first_of[(cb, ub)]))
        refused.append(Link(a, b, "re-processed", 0.8, 30))
    ids = {g.members[0]: f"g{k:05d}" for k, g in enumerate(groups)}
    grouping = Grouping(records, groups, ids, [], by_class, [], refused)
    return SimpleNamespace(classes=list(units)), grouping


def _realistic(n_classes=(2000, 1000), seed=0) -> tuple:
    """Per class about 40 % of the images in chains of 2-8 groups (groups of 1-3 images), the rest single."""
    rng = np.random.default_rng(seed)
    units = {}
    for c, n in zip("ab", n_classes):
        chains, left = [], n
        while left > 0.6 * n:
            sizes = [int(s) for s in rng.integers(1, 4, int(rng.integers(2, 9)))]
            chains.append(sizes)
            left -= sum(sizes)
        chains += [[1]] * left
        units[c] = [chains[i] for i in rng.permutation(len(chains))]
    return _grouping(units)


def _crossing(grouping, part_of_path) -> int:
    return sum(part_of_path[grouping.records[l.a].path] != part_of_path[grouping.records[l.b].path]
               for l in grouping.refused)


def _within(counts: dict, targets: dict, n: int) -> bool:
    return all(abs(counts[p] - targets[p]) <= TOLERANCE * n + 1e-9 for p in targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_refused_links_on_one_side_within_one_point(seed):
    index, grouping = _realistic()
    assert len(grouping.refused) > 400
    manifest = make_split(index, seed=seed, grouping=grouping)
    split_of = {f["path"]: f["split"] for f in manifest.files}
    assert _crossing(grouping, split_of) == 0
    assert manifest.linked["crossing"] == 0 and manifest.linked["crossing_links"] == []
    assert manifest.linked["links"] == len(grouping.refused) and manifest.linked["largest_unit"] <= 24
    sizes, total = manifest.sizes(), len(manifest.files)
    for label, n in (("a", 2000), ("b", 1000)):
        assert _within({s: sizes[s][label] for s in sizes}, {"train": 0.7 * n, "val": 0.15 * n, "test": 0.15 * n}, n)
    for s, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(sum(sizes[s].values()) / total - fraction) <= TOLERANCE
    # the groups are those of the grouping: each group in one split, none merged
    assert len(manifest.groups) == sum(1 for g in grouping.groups if g.size > 1)
    # the plain placement (links ignored) splits hundreds of those pairs
    plain = {}
    for c, label in enumerate(index.classes):
        groups = grouping.by_class[label]
        n = sum(g.size for g in groups)
        targets = {"train": n - round(0.15 * n) * 2, "val": round(0.15 * n), "test": round(0.15 * n)}
        plain.update(assign_groups(groups, targets, np.random.default_rng([seed, c])))
    plain_of = {grouping.records[i].path: plain[g.members[0]] for g in grouping.groups for i in g.members}
    assert _crossing(grouping, plain_of) > 100


def test_every_outer_fold_and_the_holdout_keep_refused_links_together():
    index, grouping = _realistic(seed=1)
    plan = make_folds(index, k=5, repeats=2, test_size=0.15, seed=3, grouping=grouping)
    rows = {f["path"]: f for f in plan.files}
    for l in grouping.refused:
        a, b = rows[grouping.records[l.a].path], rows[grouping.records[l.b].path]
        assert a["holdout"] == b["holdout"] and a["fold"] == b["fold"]
    assert plan.linked["crossing"] == 0 and plan.linked["links"] == len(grouping.refused)
    sizes = plan.sizes()
    for label in ("a", "b"):
        n = sizes["cv"][label] + sizes["holdout"][label]
        assert abs(sizes["holdout"][label] - 0.15 * n) <= TOLERANCE * n
        for repeat in sizes["folds"]:
            assert _within({f: fold[label] for f, fold in enumerate(repeat)},
                           {f: sizes["cv"][label] / 5 for f in range(5)}, sizes["cv"][label])
    assert plan.split(1, 4).linked == plan.linked  # every fold's manifest carries the report


def test_a_unit_too_large_is_cut_at_the_fewest_links_and_reported(tmp_path):
    # class a: one chain of 160 single images (80 % of the class; train's target is 140) and 40 singles
    index, grouping = _grouping({"a": [[1] * 160] + [[1]] * 40, "b": [[1]] * 100})
    for seed in range(3):
        manifest = make_split(index, seed=seed, grouping=grouping)
        split_of = {f["path"]: f["split"] for f in manifest.files}
        # cut once: 140 consecutive images fill train, the other 20 go to val or test
        assert _crossing(grouping, split_of) == manifest.linked["crossing"] == 1
        assert manifest.linked["largest_unit"] == 160 and manifest.linked["units"] == 1
        [row] = manifest.linked["crossing_links"]
        assert row[4] == f"{CUT}: its unit of 160 images in 160 groups could not stay whole"
        assert {row[2], row[3]} in ({"train", "val"}, {"train", "test"})
        sizes = manifest.sizes()
        assert (sizes["train"]["a"], sizes["val"]["a"], sizes["test"]["a"]) == (140, 30, 30)
    write_split(manifest, tmp_path / "split.json")
    assert read_split(tmp_path / "split.json").linked == manifest.linked
    # five folds of 40: the chain fills four folds whole, each cut once (3 links cross), and no fold is
    # off its size
    plan = make_folds(index, k=5, seed=1, grouping=grouping)
    assert plan.linked["crossing"] == 4 - 1
    assert all(fold["a"] == 40 for fold in plan.sizes()["folds"][0])


def test_cut_finds_the_bridge_and_cuts_a_chain_in_runs():
    # two cliques of 5 joined by one link: a cap of 5 cuts that link only
    nodes = list(range(10))
    edges = [(a, b) for part in (range(5), range(5, 10)) for a in part for b in part if a < b] + [(4, 5)]
    adj = {}
    for a, b in edges:
        adj.setdefault(a, {})[b] = 1
        adj.setdefault(b, {})[a] = 1
    pieces = _cut(nodes, {v: 1 for v in nodes}, adj, 5)
    assert sorted(pieces) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    chain = {v: {w: 1 for w in (v - 1, v + 1) if 0 <= w < 10} for v in range(10)}
    pieces = _cut(nodes, {v: 1 for v in nodes}, chain, 4)
    assert sorted(len(p) for p in pieces) == [2, 4, 4] and all(p == list(range(p[0], p[0] + len(p))) for p in pieces)


def test_without_refused_links_the_placement_is_the_plain_one():
    groups = [DuplicateGroup((i,)) for i in range(30)]
    targets = {"train": 20, "val": 5, "test": 5}

    def place(items):
        return assign_groups(items, targets, np.random.default_rng([4, 0]))

    assert place_units(groups, [], targets, place) == place(groups)
    assert place_units(groups, [(100, 101)], targets, place) == place(groups)  # links to other groups: none here


def test_same_seed_same_placement_other_seed_differs():
    index, grouping = _realistic(n_classes=(600, 300), seed=2)
    first = make_split(index, seed=5, grouping=grouping)
    again = make_split(index, seed=5, grouping=grouping)
    other = make_split(index, seed=6, grouping=grouping)
    assert first.files == again.files and first.linked == again.linked
    assert first.files != other.files and other.linked["crossing"] == 0
    plan = make_folds(index, k=3, seed=5, grouping=grouping)
    assert plan.files == make_folds(index, k=3, seed=5, grouping=grouping).files


def test_a_link_between_classes_that_crosses_says_why():
    # the link joins a unit of class a with one of class b: each class is placed on its own
    units = {"a": [[1, 1]] + [[1]] * 40, "b": [[1, 1]] + [[1]] * 40}
    index, grouping = _grouping(units, cross=[("a", 1, "b", 1)])
    crossings = Counter()
    for seed in range(6):
        manifest = make_split(index, seed=seed, grouping=grouping)
        split_of = {f["path"]: f["split"] for f in manifest.files}
        assert _crossing(grouping, split_of) == manifest.linked["crossing"]
        for row in manifest.linked["crossing_links"]:
            crossings[row[4]] += 1
    assert set(crossings) == {LABELS_DIFFER}  # the chains inside a class never cross


def test_scanned_chains_of_reprocessed_copies_stay_on_one_side(tmp_path):
    """End to end: phantom slices that drift in chains (neighbours are re-processed copies,
    the ends are not), scanned and grouped by bench; refused links cross neither the split
    nor the outer folds."""
    from PIL import Image

    from bench.data.phantom import render_slice
    from bench.data.reprocess import drift_chain
    from bench.data.scan import scan
    from bench.data.split import group_index
    from bench.report.scan_summary import format_scan

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for label, lesion in (("no", False), ("yes", True)):
        (root / label).mkdir(parents=True)
        for c in range(5):
            start, end = (Image.fromarray(render_slice(rng, 96, lesion)) for _ in range(2))
            for k, img in enumerate(drift_chain(start, end, 6, 0.12, rng)):
                img.save(root / label / f"chain{c}_{k}.png")
        for s in range(14):
            Image.fromarray(render_slice(rng, 96, lesion)).save(root / label / f"single{s:02d}.png")
    index = scan(root)
    grouping = group_index(index)
    assert grouping.refused and max(g.size for g in grouping.groups) <= 6
    for seed in range(4):
        manifest = make_split(index, seed=seed, grouping=grouping)
        assert _crossing(grouping, {f["path"]: f["split"] for f in manifest.files}) == 0
        plan = make_folds(index, k=3, test_size=0.15, seed=seed, grouping=grouping)
        assert _crossing(grouping, {f["path"]: (f["holdout"], *f["fold"]) for f in plan.files}) == 0
    ignored = dataclasses.replace(grouping, refused=[])  # the same groups, the refused links ignored
    assert any(_crossing(grouping, {f["path"]: f["split"] for f in make_split(index, seed=s, grouping=ignored).files})
               for s in range(4))
    audit = {row["kind"]: row for row in manifest.audit}["refused (not grouped)"]
    assert audit["bench_crossing"] == 0 and audit["pairs"] == len(grouping.refused)
    summary = format_scan(index, manifest, grouping)
    assert f"{len(grouping.refused)} weaker links were not used" in summary
    assert "each kept on one side of train, val and test" in summary and "0 linked pairs cross." in summary
