"""Duplicate-aware, stratified, seeded train/val/test split, written once as split.json.

Whole duplicate groups (see :mod:`bench.data.duplicates`) are assigned to one split, class by
class. Within a class the groups are shuffled with the seed, then placed largest first,
each into the split whose quota is least filled (relative to its target), so the
realised fractions stay close to the requested ones even with large groups. Groups joined
by links that average linkage refused stay on one side too wherever the fractions allow
(:mod:`bench.data.placement`); the manifest says how many such links still cross, and why.
A file whose own copy carries another label is a label conflict: it is excluded from every
split and listed with its copies (the rest of its group stays). A user group (``--groups``)
spanning several labels is placed with its most frequent label, whole. The manifest also
holds the leakage audit (:mod:`bench.data.audit`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.audit import leakage_audit, plain_parts
from bench.data.copies import DEFAULT_COPY_THRESHOLD, find_links
from bench.data.duplicates import USER_KIND, DuplicateGroup, build_groups
from bench.data.placement import crossing_report, place_units, refused_edges
from bench.data.scan import DatasetIndex
from bench.data.user_groups import UserGroups
from bench.errors import BenchError

SPLITS = ("train", "val", "test")
SPLIT_FORMAT = 2


@dataclass
class SplitManifest:
    """The split of one run. ``files`` rows: path, sha256, label, split, group.

    ``groups``: the groups of two or more files with their kind, split, files and links;
    ``conflicts``: excluded files with their copies of another label; ``audit``: the
    leakage audit (:mod:`bench.data.audit`).
    """

    seed: int
    val_size: float
    test_size: float
    classes: list[str]
    files: list[dict]
    conflicts: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    grouping: dict = field(default_factory=dict)  # Grouping.settings(): threshold, user groups, refused links
    shortcut: dict | None = None  # bench.evaluate.shortcuts: file attributes alone vs the label
    linked: dict = field(default_factory=dict)  # bench.data.placement.crossing_report: refused links across parts

    def rows(self, split: str) -> list[dict]:
        return [f for f in self.files if f["split"] == split]

    def part_of_groups(self) -> dict[str, str]:
        """Group id -> its split (as groups.csv shows it; :meth:`FoldPlan.part_of_groups` for --cv):
        ``train+test`` for a group a plain split (``--plain-split``) put on both sides."""
        parts: dict[str, set[str]] = defaultdict(set)
        for f in self.files:
            parts[f["group"]].add(f["split"])
        return {group: "+".join(s for s in SPLITS if s in found) for group, found in parts.items()}

    def sizes(self) -> dict[str, dict[str, int]]:
        """``{split: {class: count}}`` for every split and class (zeros included)."""
        out = {s: {c: 0 for c in self.classes} for s in SPLITS}
        for f in self.files:
            out[f["split"]][f["label"]] += 1
        return out

    def to_dict(self) -> dict:
        return {
            "format": SPLIT_FORMAT,
            "seed": self.seed,
            "val_size": self.val_size,
            "test_size": self.test_size,
            "classes": self.classes,
            "sizes": self.sizes(),
            "files": self.files,
            "duplicate_groups": self.groups,
            "label_conflicts": self.conflicts,
            "leakage_audit": self.audit,
            "grouping": self.grouping,
            "refused_links_split": self.linked,
            "shortcut_check": self.shortcut,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "SplitManifest":
        return cls(
            seed=data["seed"],
            val_size=data["val_size"],
            test_size=data["test_size"],
            classes=list(data["classes"]),
            files=list(data["files"]),
            conflicts=list(data.get("label_conflicts", [])),
            groups=list(data.get("duplicate_groups", [])),
            audit=list(data.get("leakage_audit", [])),
            grouping=dict(data.get("grouping") or {}),
            shortcut=data.get("shortcut_check"),
            linked=dict(data.get("refused_links_split") or {}),
        )


def check_sizes(val_size: float, test_size: float) -> None:
    for name, value in (("--val-size", val_size), ("--test-size", test_size)):
        if not 0.0 < value < 1.0:
            raise BenchError(f"{name} must be a fraction between 0 and 1 (exclusive), got {value}; e.g. {name} 0.15")
    if val_size + test_size >= 1.0:
        raise BenchError(
            f"--val-size {val_size} + --test-size {test_size} = {val_size + test_size:g} leaves nothing to train on; "
            "make their sum less than 1 (default 0.15 + 0.15)"
        )


def _targets(n: int, val_size: float, test_size: float) -> dict[str, int]:
    n_val = max(1, round(n * val_size))
    n_test = max(1, round(n * test_size))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def assign_groups(
    groups: list[DuplicateGroup], targets: dict[str, int], rng: np.random.Generator
) -> dict[int, str]:
    """Assign whole ``groups`` (of one class) to the parts of ``targets`` (part -> images, each >= 1).

    The groups are shuffled with ``rng``, then placed largest first (ties keep the seeded
    order), each into the part whose target is least filled relative to its size (ties: the
    first part in ``targets``' order). Returns ``{first member index: part}``. Also used by
    :mod:`bench.data.folds` (test holdout, inner train/val and final splits).
    """
    order = [groups[i] for i in rng.permutation(len(groups))]
    order.sort(key=lambda g: -g.size)  # stable: ties keep the seeded order
    filled = {s: 0 for s in targets}
    out: dict[int, str] = {}
    for group in order:
        split = max(targets, key=lambda s: (targets[s] - filled[s]) / targets[s])
        filled[split] += group.size
        out[group.members[0]] = split
    return out


@dataclass
class Grouping:
    """The groups of an index, shared by :func:`make_split` and :func:`bench.data.folds.make_folds`.

    ``ids`` maps a group's first member to its id (``g0000``, in group order);
    ``conflicts`` lists the files excluded because a copy of theirs carries another label;
    ``by_class`` holds the usable groups under the class they are placed with (a user
    group spanning labels goes with its most frequent label), in group order; ``links``
    are all confirmed copy links and ``refused`` those that did not merge their clusters.
    """

    records: list
    groups: list[DuplicateGroup]
    ids: dict[int, str]
    conflicts: list[dict]
    by_class: dict[str, list[DuplicateGroup]]
    links: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    copy_threshold: float = DEFAULT_COPY_THRESHOLD
    #: {"source": csv or header attribute, "kind", "groups": n, "files": n, "missing": n, and for
    #: header groups "without": the DICOM files that lack the attribute}
    user_groups: dict | None = None
    user_group_of: dict[int, str] = field(default_factory=dict)
    user_kind: str = USER_KIND  # the kind of link the user or header groups add

    def group_id(self, group: DuplicateGroup) -> str:
        return self.ids[group.members[0]]

    def links_by_kind(self) -> dict[str, list]:
        """The links inside the groups (the ones that built them), by kind."""
        out: dict[str, list] = defaultdict(list)
        for g in self.groups:
            for link in g.links:
                out[link.kind].append(link)
        return out

    def user_members(self) -> dict[str, list[int]]:
        """``--groups`` id -> its (usable) records, ascending."""
        out: dict[str, list[int]] = defaultdict(list)
        for i, gid in sorted(self.user_group_of.items()):
            out[gid].append(i)
        return out

    def link_rows(self, links) -> list[list]:
        return [[self.records[l.a].path, self.records[l.b].path, l.kind, l.layout, l.details] for l in links]

    def listing(self, key: str, part_of: dict[int, str]) -> list[dict]:
        """The groups of two or more files: id, kind, ``key`` (their part, or "excluded"), files, links."""
        return [
            {
                "group": self.group_id(g),
                "kind": g.kind,
                key: part_of.get(g.members[0], "excluded"),
                "files": [self.records[i].path for i in g.members],
                "links": self.link_rows(g.links),
            }
            for g in self.groups
            if g.size > 1
        ]

    def settings(self) -> dict:
        """What split.json / folds.json record about how the groups were made."""
        return {"copy_threshold": self.copy_threshold, "user_groups": self.user_groups,
                "refused_links": self.link_rows(self.refused)}


def group_index(index: DatasetIndex, copy_threshold: float = DEFAULT_COPY_THRESHOLD,
                user_groups: UserGroups | None = None) -> Grouping:
    """Link ``index``'s copies, build the groups and separate the label conflicts (see :class:`Grouping`).

    Without copy features (an index scanned with ``copies=False``) only exact copies link.
    """
    records = index.records
    links = index.link_cache.get(copy_threshold)
    if links is None:
        links = find_links(records, index.features, copy_threshold, mirrored=index.mirrored_reader())
        index.link_cache[copy_threshold] = links
    user_of = {}
    if user_groups is not None:
        position = {r.path: i for i, r in enumerate(records)}
        user_of = {position[p]: g for p, g in user_groups.group_of.items() if p in position}
    kind = user_groups.kind if user_groups is not None else USER_KIND
    built = build_groups([r.label for r in records], links, user_of, kind)
    groups = built.groups
    group_ids = {g.members[0]: f"g{k:04d}" for k, g in enumerate(groups)}
    order = {c: k for k, c in enumerate(index.classes)}
    by_class: dict[str, list[DuplicateGroup]] = {c: [] for c in index.classes}
    for g in groups:
        counts = Counter(records[i].label for i in g.members)
        by_class[min(counts, key=lambda c: (-counts[c], order[c]))].append(g)
    conflicts = [
        {
            "file": records[c["file"]].path,
            "label": records[c["file"]].label,
            "copies": [[records[j].path, records[j].label] for j in c["copies"]],
        }
        for c in built.conflicts
    ]
    info = None
    if user_groups is not None:
        info = {"source": user_groups.source, "kind": kind, "groups": len(set(user_groups.group_of.values())),
                "files": len(user_of), "missing": user_groups.missing}
        if user_groups.kind != USER_KIND:
            info["without"] = list(user_groups.without)
    return Grouping(records, groups, group_ids, conflicts, by_class, links, built.refused,
                    copy_threshold, info, user_of, kind)


def make_split(index: DatasetIndex, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0,
               grouping: Grouping | None = None, plain: bool = False) -> SplitManifest:
    """Split ``index`` (grouped with the defaults unless ``grouping`` is given).

    ``plain``: the plain stratified random split of the leakage audit instead
    (:func:`bench.data.audit.plain_parts`, ``--plain-split``): each image placed on its own,
    copies and user groups ignored, so a group may straddle the parts. The groups are
    still made and listed (a straddling group's part reads ``train+test``), and the audit's
    bench column then counts the linked pairs this split puts on different sides.

    Raises :class:`BenchError` when a class is too small to split.
    """
    check_sizes(val_size, test_size)
    grouping = grouping or group_index(index)
    records, groups, group_ids, by_class = grouping.records, grouping.groups, grouping.ids, grouping.by_class

    def targets_of(n: int) -> dict[str, int]:
        return _targets(n, val_size, test_size)

    split_of_group: dict[int, str] = {}
    edges = refused_edges(grouping)
    for class_index, label in enumerate(index.classes):
        class_groups = by_class[label]
        n = sum(g.size for g in class_groups)
        targets = targets_of(n)
        units = n if plain else len(class_groups)
        if units < len(SPLITS) or targets["train"] < 1:
            grouped = "" if plain else f" ({len(class_groups)} after grouping duplicates)"
            raise BenchError(
                f"class {label!r} has {n} usable images{grouped} but a "
                f"train/val/test split needs at least 3 distinct images per class; add images to {label!r} or drop that class"
            )
        if plain:
            continue
        # each try of place_units draws the same seeded stream afresh
        split_of_group.update(place_units(class_groups, edges, targets, lambda items: assign_groups(
            items, targets, np.random.default_rng([seed, class_index]))))

    usable = {i for g in groups for i in g.members if plain or g.members[0] in split_of_group}
    plain_split = plain_parts(records, list(index.classes), usable, targets_of, seed)
    if plain:
        split_of_record = plain_split
        split_of_group = {g.members[0]: "+".join(s for s in SPLITS if s in {plain_split[i] for i in g.members})
                          for g in groups}
    else:
        split_of_record = {i: split_of_group[g.members[0]] for g in groups if g.members[0] in split_of_group
                           for i in g.members}
    files = [{"path": records[i].path, "sha256": records[i].sha256, "label": records[i].label,
              "split": split_of_record[i], "group": group_ids[g.members[0]]}
             for g in groups for i in g.members if i in split_of_record]
    files.sort(key=lambda f: f["path"])
    dup_groups = grouping.listing("split", split_of_group)
    audit = leakage_audit(grouping, split_of_record, plain_split)
    linked = crossing_report(grouping, lambda i: (split_of_record[i],) if i in split_of_record else (),
                             "train, val and test")
    return SplitManifest(seed, val_size, test_size, list(index.classes), files, grouping.conflicts, dup_groups,
                         audit, grouping.settings(), linked=linked)


def write_split(manifest: SplitManifest, path: Path) -> None:
    """Write split.json atomically; identical input gives a byte-identical file."""
    from bench.atomic import write_json_atomic

    write_json_atomic(path, manifest.to_dict())


def read_split(path: Path) -> SplitManifest:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read split file {path}: {exc}; delete the run folder or start a new run with --name") from None
    return SplitManifest.from_dict(data)
