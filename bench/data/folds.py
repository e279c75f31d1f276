"""Nested, group-aware, stratified, repeated cross-validation: the fold plan, written once as folds.json.

``bench run --cv K --repeats R`` evaluates a backbone on K outer folds, R times over. The
plan is built from the same duplicate groups and label conflicts as the plain split
(:func:`bench.data.split.group_index`); conflicting groups are excluded everywhere and a
group's copies always land on the same side of every split. Groups joined by links that
average linkage refused are kept on one side of every step below wherever the fractions
allow (:mod:`bench.data.placement`: each step places such units whole, and cuts one only
when it is too large for the step's targets); folds.json says how many such links still
cross the holdout or an outer fold, and why.

Algorithm, for each class separately (stratification):

1. **Holdout** (only when ``test_size > 0``): the class's groups are split into a CV part
   and a test holdout with :func:`bench.data.split.assign_groups`, the assignment
   ``make_split`` uses. The holdout never takes part in cross-validation; it is the test
   set of the final, deployable model.
2. **Outer folds**, per repeat ``r``: the CV groups are shuffled with a seed derived from
   ``(seed, r)``, then placed largest first, each into the fold with the largest remaining
   deficit for that class. All folds share the target ``n_class / k``, so that is the
   least-filled fold; ties go to the fold with the fewest images over the classes placed
   so far (so fold totals balance too), then to a seeded fold order. A repeat whose
   partition equals an earlier repeat's, or whose folds leave an inner split without a
   class (see below), is drawn again with the next derived seed (up to 32 draws).
3. **Inner split**, per (repeat, fold): the outer-train part (the CV images outside that
   fold) is split into inner train and inner val (fraction ``val_size``) with
   ``assign_groups``, seeded per (repeat, fold, class). The inner val set drives the
   backbone search and early stopping; the outer fold is its untouched test set.
4. **Final split**: all CV images into train/val (``val_size``), test = the holdout
   (possibly empty), for the model that is deployed.

Balance guarantee (per repeat and class, sizes in images): fold sizes differ by at most
the class's largest CV group (each group goes to a least-filled fold, which keeps every
fold within one group of the least filled). When all of the class's groups hold one or
two images, the sizes differ by at most 1 whenever any partition of those groups into
``k`` folds allows it (otherwise by 2, e.g. three pairs into two folds: 4/2). Every fold
holds at least one group of every class (``k`` is at most the class's group count). With
singleton groups only, the fold totals over all classes also differ by at most 1.

scikit-learn's ``StratifiedGroupKFold`` is the related reference. bench does its own
because that splitter greedily evens out class *proportions* but bounds no fold size (on
data of singletons and pairs it sometimes leaves a class's folds 2 images apart where 1
is possible), has no repeats with distinct partitions, and gives neither the holdout nor
the nested, group-aware inner train/val split of each fold that bench's search needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.duplicates import DuplicateGroup
from bench.data.scan import DatasetIndex
from bench.data.audit import leakage_audit, plain_parts
from bench.data.placement import crossing_report, place_units, refused_edges
from bench.data.split import Grouping, SplitManifest, assign_groups, group_index
from bench.errors import BenchError

FOLDS_FORMAT = 2
MAX_DRAWS = 32
_HOLDOUT, _OUTER, _INNER, _FINAL = 1, 2, 3, 4  # seed tags: each step draws from its own stream


def check_cv(k: int, repeats: int, test_size: float) -> None:
    """One-line :class:`BenchError` for a bad ``--cv``/``--repeats``/``--test-size`` combination."""
    if k < 2:
        raise BenchError(
            f"--cv must be at least 2 (got {k}); e.g. --cv 5 for five folds, or leave --cv out for one train/val/test split"
        )
    if repeats < 1:
        raise BenchError(f"--repeats must be at least 1 (got {repeats}); e.g. --repeats 3 to repeat the --cv {k} folds three times")
    if not 0.0 <= test_size < 0.5:
        raise BenchError(
            f"--test-size {test_size:g} with --cv must be 0 (no holdout) or a fraction below 0.5; "
            "e.g. --test-size 0.15, or 0 to cross-validate every image"
        )


def _check_val_size(val_size: float) -> None:
    if not 0.0 < val_size < 1.0:
        raise BenchError(f"--val-size must be a fraction between 0 and 1 (exclusive), got {val_size}; e.g. --val-size 0.15")


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def _fold_counts(rows: list[dict], classes: list[str], k: int, repeat: int) -> list[dict[str, int]]:
    out = [{c: 0 for c in classes} for _ in range(k)]
    for row in rows:
        if not row["holdout"]:
            out[row["fold"][repeat]][row["label"]] += 1
    return out


@dataclass
class FoldPlan:
    """The fold plan of one run. ``files``: one row per usable image, sorted by path.

    Row keys: ``path``, ``sha256``, ``label``, ``group``, ``holdout`` (bool), ``final``
    (``train``/``val``/``test``: the final split), ``fold`` (per repeat, the outer test
    fold; empty for holdout rows) and ``inner_val`` (per repeat, a string of ``k``
    characters: ``"1"`` at position ``f`` when the image is in fold ``f``'s inner val set;
    empty for holdout rows).
    """

    k: int
    repeats: int
    seed: int
    val_size: float
    test_size: float
    classes: list[str]
    files: list[dict]
    conflicts: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)  # over the outer folds of repeat 0 (and the holdout)
    grouping: dict = field(default_factory=dict)
    linked: dict = field(default_factory=dict)  # refused links across the holdout or an outer fold, and why

    @property
    def cv_files(self) -> list[dict]:
        """Rows of every cross-validated image (all but the holdout), in plan order."""
        return [r for r in self.files if not r["holdout"]]

    def _check(self, repeat: int, fold: int | None = None) -> None:
        if not 0 <= repeat < self.repeats or (fold is not None and not 0 <= fold < self.k):
            raise IndexError(f"no fold {fold} of repeat {repeat} in a plan of {self.repeats} x {self.k} folds")

    def _manifest(self, part_of, test_size: float) -> SplitManifest:
        files, split_of_group = [], {}
        for row in self.files:
            part = part_of(row)
            if part is not None:
                files.append({key: row[key] for key in ("path", "sha256", "label", "group")} | {"split": part})
                split_of_group[row["group"]] = part
        groups = [
            {"group": g["group"], "kind": g["kind"], "split": split_of_group.get(g["group"], "excluded"), "files": list(g["files"])}
            for g in self.groups
        ]
        return SplitManifest(self.seed, self.val_size, test_size, list(self.classes), files, list(self.conflicts), groups,
                             list(self.audit), dict(self.grouping), linked=dict(self.linked))

    def split(self, repeat: int, fold: int) -> SplitManifest:
        """Repeat ``repeat``, outer fold ``fold``: train/val = inner train/val, test = the outer fold.

        Holdout rows are not part of it (their groups are listed as ``excluded``).
        """
        self._check(repeat, fold)

        def part(row):
            if row["holdout"]:
                return None
            if row["fold"][repeat] == fold:
                return "test"
            return "val" if row["inner_val"][repeat][fold] == "1" else "train"

        return self._manifest(part, 1.0 / self.k)

    def final_split(self) -> SplitManifest:
        """Train/val of all CV images; test = the holdout (empty when ``test_size`` is 0)."""
        return self._manifest(lambda row: row["final"], self.test_size)

    def part_of_groups(self) -> dict[str, str]:
        """Group id -> "holdout" or its outer fold in repeat 0 ("fold 1"...), as groups.csv shows it."""
        return {row["group"]: "holdout" if row["holdout"] else f"fold {row['fold'][0] + 1}" for row in self.files}

    def oof_rows(self, repeat: int) -> list[dict]:
        """Every CV image of ``repeat`` with its outer fold: where its out-of-fold prediction comes from."""
        self._check(repeat)
        return [
            {key: row[key] for key in ("path", "sha256", "label", "group")} | {"fold": row["fold"][repeat]}
            for row in self.files
            if not row["holdout"]
        ]

    def sizes(self) -> dict:
        """``{"cv": {class: n}, "holdout": {class: n}, "folds": [[{class: n} per fold] per repeat]}``."""
        cv, holdout = {c: 0 for c in self.classes}, {c: 0 for c in self.classes}
        for row in self.files:
            (holdout if row["holdout"] else cv)[row["label"]] += 1
        folds = [_fold_counts(self.files, self.classes, self.k, r) for r in range(self.repeats)]
        return {"cv": cv, "holdout": holdout, "folds": folds}

    def to_dict(self) -> dict:
        return {
            "format": FOLDS_FORMAT,
            "k": self.k,
            "repeats": self.repeats,
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
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FoldPlan":
        """Rebuild a plan; ``ValueError`` when the rows do not fit ``k``/``repeats``/``classes``."""
        if data.get("format") not in (1, FOLDS_FORMAT):  # format 1: the same without copy detection's audit
            raise ValueError(f"format {data.get('format')!r}, expected {FOLDS_FORMAT}")
        plan = cls(
            k=int(data["k"]),
            repeats=int(data["repeats"]),
            seed=data["seed"],
            val_size=data["val_size"],
            test_size=data["test_size"],
            classes=list(data["classes"]),
            files=list(data["files"]),
            conflicts=list(data.get("label_conflicts", [])),
            groups=list(data.get("duplicate_groups", [])),
            audit=list(data.get("leakage_audit", [])),
            grouping=dict(data.get("grouping") or {}),
            linked=dict(data.get("refused_links_split") or {}),
        )
        for row in plan.files:
            if not _row_ok(row, plan):
                raise ValueError(f"row {row.get('path')!r} does not fit {plan.repeats} x {plan.k} folds")
        return plan


def _row_ok(row: dict, plan: FoldPlan) -> bool:
    if row["label"] not in plan.classes:
        return False
    if row["holdout"]:
        return row["final"] == "test" and row["fold"] == [] and row["inner_val"] == []
    folds, inner = row["fold"], row["inner_val"]
    return (
        row["final"] in ("train", "val")
        and len(folds) == len(inner) == plan.repeats
        and all(isinstance(f, int) and 0 <= f < plan.k for f in folds)
        and all(len(s) == plan.k and set(s) <= {"0", "1"} and s[f] == "0" for s, f in zip(inner, folds))
    )


def _place(groups: list[DuplicateGroup], k: int, rng: np.random.Generator, totals: list[int]) -> dict[int, int]:
    """Outer folds of one class's groups: ``{first member: fold}`` (see the module docstring).

    ``totals`` (images per fold over the classes placed so far) breaks ties and is updated.
    """
    order = [groups[i] for i in rng.permutation(len(groups))]
    order.sort(key=lambda g: -g.size)  # stable: ties keep the seeded order
    rank = rng.permutation(k)
    filled = [0] * k
    out = {}
    for group in order:
        fold = min(range(k), key=lambda f: (filled[f], totals[f], rank[f]))
        filled[fold] += group.size
        totals[fold] += group.size
        out[group.members[0]] = fold
    return out


def _two_way(groups: list[DuplicateGroup], fraction: float, parts: tuple[str, str], tags: tuple,
             edges: list) -> dict[int, str]:
    """Split one class's groups (two or more) into ``parts``, the second taking ``fraction`` of the images,
    seeded by ``_rng(*tags)`` and keeping groups joined by ``edges`` together where it can."""
    n = sum(g.size for g in groups)
    n_second = min(n - 1, max(1, round(n * fraction)))
    targets = {parts[0]: n - n_second, parts[1]: n_second}
    return place_units(groups, edges, targets, lambda items: assign_groups(items, targets, _rng(*tags)))


def _check_group_counts(k: int, cv_groups: dict[str, list], all_groups: dict[str, list], holdout: bool) -> None:
    label = min(cv_groups, key=lambda c: len(cv_groups[c]))
    n = len(cv_groups[label])
    where = " outside the --test-size holdout" if holdout else ""
    if n < 3:
        no_holdout = " or use --test-size 0 (no holdout)" if holdout and len(all_groups[label]) >= 3 else ""
        raise BenchError(
            f"class {label!r} has {n} duplicate group(s){where} but cross-validation needs at least 3 per class "
            f"(outer test fold, inner train, inner val); add distinct images to {label!r}{no_holdout}"
        )
    if k > n:
        raise BenchError(
            f"--cv {k} is more than the {n} duplicate groups of class {label!r}{where} (each fold needs one); "
            f"use --cv {n} or less, or add distinct images to {label!r}"
        )


def _starved(fold_of: dict[int, int], cv_groups: dict[str, list], k: int) -> tuple[str, int] | None:
    """(class, fold) when the CV images outside ``fold`` hold fewer than two groups of the class."""
    for label, groups in cv_groups.items():
        for fold in range(k):
            if sum(fold_of[g.members[0]] != fold for g in groups) < 2:
                return label, fold
    return None


def _outer_folds(cv_groups: dict[str, list], k: int, seed: int, repeat: int, earlier: list[tuple],
                 edges: list) -> dict[int, int]:
    """Outer folds of one repeat: the first of up to ``MAX_DRAWS`` seeded draws that is usable and new
    (groups joined by ``edges`` kept in one fold where the fold sizes allow)."""
    order = [g.members[0] for groups in cv_groups.values() for g in groups]
    fallback, starved = None, None
    for draw in range(MAX_DRAWS):
        fold_of, totals = {}, [0] * k
        for class_index, groups in enumerate(cv_groups.values()):
            before = list(totals)
            placed = place_units(groups, edges, {f: sum(g.size for g in groups) / k for f in range(k)},
                                 lambda items: _place(items, k, _rng(seed, _OUTER, repeat, draw, class_index), list(before)))
            for g in groups:
                totals[placed[g.members[0]]] += g.size
            fold_of.update(placed)
        bad = _starved(fold_of, cv_groups, k)
        if bad is not None:
            starved = starved or bad
            continue
        relabel: dict[int, int] = {}
        canonical = tuple(relabel.setdefault(fold_of[m], len(relabel)) for m in order)
        if canonical not in earlier:
            earlier.append(canonical)
            return fold_of
        fallback = fallback or fold_of  # same partition as an earlier repeat: used only if no draw differs
    if fallback is not None:
        return fallback
    label, fold = starved
    raise BenchError(
        f"--cv {k} leaves a single duplicate group of class {label!r} outside outer fold {fold} (repeat {repeat}), "
        f"so its inner train/val split cannot hold {label!r} on both sides; use --cv 3 or more, or add distinct images to {label!r}"
    )


def make_folds(
    index: DatasetIndex, k: int, repeats: int = 1, val_size: float = 0.15, test_size: float = 0.0, seed: int = 0,
    grouping: Grouping | None = None,
) -> FoldPlan:
    """The nested, repeated ``k``-fold plan of ``index`` (algorithm and guarantees: module docstring).

    Every class needs at least 3 duplicate groups in the CV part (outside the holdout) and
    at least ``k`` of them (one per outer fold); ``k = 2`` is refused when no seeded draw
    leaves two groups of every class outside each fold (inner train and inner val each
    need one). Each case, and a bad option, raises a one-line :class:`BenchError`.
    """
    check_cv(k, repeats, test_size)
    _check_val_size(val_size)
    grouping = grouping or group_index(index)
    classes = list(index.classes)

    holdout: set[int] = set()
    edges = refused_edges(grouping)
    for class_index, label in enumerate(classes):
        groups = grouping.by_class[label]
        if test_size > 0 and len(groups) >= 2:
            part = _two_way(groups, test_size, ("cv", "test"), (seed, _HOLDOUT, class_index), edges)
            holdout.update(m for m, p in part.items() if p == "test")
    cv_groups = {c: [g for g in grouping.by_class[c] if g.members[0] not in holdout] for c in classes}
    _check_group_counts(k, cv_groups, grouping.by_class, test_size > 0)

    partitions: list[tuple] = []
    fold_of = [_outer_folds(cv_groups, k, seed, r, partitions, edges) for r in range(repeats)]
    inner_val: list[list[set[int]]] = [[set() for _ in range(k)] for _ in range(repeats)]
    final: dict[int, str] = {}
    for class_index, groups in enumerate(cv_groups.values()):
        for r in range(repeats):
            for f in range(k):
                outer_train = [g for g in groups if fold_of[r][g.members[0]] != f]
                part = _two_way(outer_train, val_size, ("train", "val"), (seed, _INNER, r, f, class_index), edges)
                inner_val[r][f].update(m for m, p in part.items() if p == "val")
        final.update(_two_way(groups, val_size, ("train", "val"), (seed, _FINAL, class_index), edges))

    files, part_of, parts_of = [], {}, {}
    for label in classes:
        for g in grouping.by_class[label]:
            first, in_holdout = g.members[0], g.members[0] in holdout
            row = {
                "group": grouping.group_id(g),
                "label": label,
                "holdout": in_holdout,
                "final": "test" if in_holdout else final[first],
                "fold": [] if in_holdout else [fold_of[r][first] for r in range(repeats)],
                "inner_val": [] if in_holdout else [
                    "".join("1" if first in inner_val[r][f] else "0" for f in range(k)) for r in range(repeats)
                ],
            }
            for i in g.members:
                rec = grouping.records[i]
                files.append({"path": rec.path, "sha256": rec.sha256, **row, "label": rec.label,
                              "fold": list(row["fold"]), "inner_val": list(row["inner_val"])})
                part_of[i] = "holdout" if in_holdout else f"fold {row['fold'][0]}"
                parts_of[i] = ("holdout",) if in_holdout else ("cv", *(f"repeat {r + 1} fold {f + 1}"
                                                                        for r, f in enumerate(row["fold"])))
    files.sort(key=lambda f: f["path"])
    groups = grouping.listing("part", {m: ("holdout" if m in holdout else "cv") for m in final.keys() | holdout})
    plain = _plain_folds(grouping.records, classes, set(part_of), k, test_size, seed)
    return FoldPlan(k, repeats, seed, val_size, test_size, classes, files, grouping.conflicts, groups,
                    leakage_audit(grouping, part_of, plain), grouping.settings(),
                    crossing_report(grouping, lambda i: parts_of.get(i, ()),
                                    ("the holdout and " if test_size > 0 else "") + "every repeat's outer folds"))


def _plain_folds(records: list, classes: list[str], included: set[int], k: int, test_size: float,
                 seed: int) -> dict[int, str]:
    """A plain stratified random fold assignment (groups ignored), for the leakage audit:
    per class, the test fraction first (the holdout), then the rest dealt round the folds."""

    def targets(n: int) -> dict[str, int]:
        n_test = round(n * test_size) if test_size > 0 else 0
        rest = n - n_test
        return {"holdout": n_test, **{f"fold {f}": rest // k + (1 if f < rest % k else 0) for f in range(k)}}

    return plain_parts(records, classes, included, targets, seed)


def write_folds(plan: FoldPlan, path: Path) -> None:
    """Write folds.json atomically; identical input gives a byte-identical file."""
    from bench.atomic import write_json_atomic

    write_json_atomic(path, plan.to_dict())


def read_folds(path: Path) -> FoldPlan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return FoldPlan.from_dict(data)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise BenchError(
            f"cannot read folds file {path}: {detail}; delete the run folder or start a new run with --name"
        ) from None
