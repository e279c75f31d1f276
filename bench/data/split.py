"""Duplicate-aware, stratified, seeded train/val/test split, written once as split.json.

Whole duplicate groups (see :mod:`bench.data.duplicates`) are assigned to one split, class by
class. Within a class the groups are shuffled with the seed, then placed largest first,
each into the split whose quota is least filled (relative to its target), so the
realised fractions stay close to the requested ones even with large groups.
Groups whose copies carry different labels are label conflicts: they are excluded from
every split and listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.duplicates import DuplicateGroup, group_duplicates
from bench.data.scan import DatasetIndex
from bench.errors import BenchError

SPLITS = ("train", "val", "test")
SPLIT_FORMAT = 1


@dataclass
class SplitManifest:
    """The split of one run. ``files`` rows: path, sha256, label, split, group."""

    seed: int
    val_size: float
    test_size: float
    classes: list[str]
    files: list[dict]
    conflicts: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)

    def rows(self, split: str) -> list[dict]:
        return [f for f in self.files if f["split"] == split]

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
    """The duplicate groups of an index, shared by :func:`make_split` and :func:`bench.data.folds.make_folds`.

    ``ids`` maps a group's first member to its id (``g0000``, in group order); ``conflicts``
    lists the groups whose copies carry different labels (excluded everywhere);
    ``by_class`` holds the usable groups of each class, in group order.
    """

    records: list
    groups: list[DuplicateGroup]
    ids: dict[int, str]
    conflicts: list[dict]
    by_class: dict[str, list[DuplicateGroup]]

    def group_id(self, group: DuplicateGroup) -> str:
        return self.ids[group.members[0]]

    def listing(self, key: str, part_of: dict[int, str]) -> list[dict]:
        """The groups of two or more files: id, kind, files and ``key``: their part (or "excluded")."""
        return [
            {
                "group": self.group_id(g),
                "kind": g.kind,
                key: part_of.get(g.members[0], "excluded"),
                "files": [self.records[i].path for i in g.members],
            }
            for g in self.groups
            if g.size > 1
        ]


def group_index(index: DatasetIndex) -> Grouping:
    """Group ``index``'s duplicates and separate the label conflicts (see :class:`Grouping`)."""
    records = index.records
    groups = group_duplicates(records)
    group_ids = {g.members[0]: f"g{k:04d}" for k, g in enumerate(groups)}

    conflicts, by_class = [], {c: [] for c in index.classes}
    for g in groups:
        labels = sorted({records[i].label for i in g.members})
        if len(labels) > 1:
            conflicts.append(
                {"group": group_ids[g.members[0]], "labels": labels, "files": [records[i].path for i in g.members]}
            )
        else:
            by_class[labels[0]].append(g)
    return Grouping(records, groups, group_ids, conflicts, by_class)


def make_split(index: DatasetIndex, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0) -> SplitManifest:
    """Split ``index``; raises :class:`BenchError` when a class is too small to split."""
    check_sizes(val_size, test_size)
    grouping = group_index(index)
    records, groups, group_ids, by_class = grouping.records, grouping.groups, grouping.ids, grouping.by_class

    split_of_group: dict[int, str] = {}
    for class_index, label in enumerate(index.classes):
        class_groups = by_class[label]
        n = sum(g.size for g in class_groups)
        targets = _targets(n, val_size, test_size)
        if len(class_groups) < len(SPLITS) or targets["train"] < 1:
            raise BenchError(
                f"class {label!r} has {n} usable images ({len(class_groups)} after grouping duplicates) but a "
                f"train/val/test split needs at least 3 distinct images per class; add images to {label!r} or drop that class"
            )
        rng = np.random.default_rng([seed, class_index])
        split_of_group.update(assign_groups(class_groups, targets, rng))

    files = []
    for g in groups:
        split = split_of_group.get(g.members[0])
        if split is None:
            continue
        for i in g.members:
            rec = records[i]
            files.append(
                {"path": rec.path, "sha256": rec.sha256, "label": rec.label, "split": split, "group": group_ids[g.members[0]]}
            )
    files.sort(key=lambda f: f["path"])
    dup_groups = grouping.listing("split", split_of_group)
    return SplitManifest(seed, val_size, test_size, list(index.classes), files, grouping.conflicts, dup_groups)


def write_split(manifest: SplitManifest, path: Path) -> None:
    """Write split.json atomically; identical input gives a byte-identical file."""
    from bench.runfolder import write_json_atomic

    write_json_atomic(path, manifest.to_dict())


def read_split(path: Path) -> SplitManifest:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read split file {path}: {exc}; delete the run folder or start a new run with --name") from None
    return SplitManifest.from_dict(data)
