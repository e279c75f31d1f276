"""The leakage audit: what a plain split would have leaked, and what bench's split does.

For each kind of link (exact, resized/re-encoded, re-processed, mirrored/rotated, user
group, or the patient or study of DICOM headers) the audit counts the linked pairs of images, how many of them a plain stratified
random split (scikit-learn's ``train_test_split(stratify=labels)`` idea: each class's
files shuffled with the same seed and cut at the same fractions, groups ignored) puts on
different sides, and how many bench's split does (0 for the links inside groups, by
construction: a group never straddles parts). Copy links come from the groups; a user
(or header) group of ``m`` files counts its ``m (m - 1) / 2`` pairs. The copy links that average
linkage refused to use (weak links between clusters that did not otherwise agree) get a
row of their own: the split keeps them on one side where the fractions allow
(:mod:`bench.data.placement`), and the row shows where they landed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from bench.data.duplicates import GROUP_KINDS, KIND_ORDER

REFUSED = "refused (not grouped)"


def plain_parts(records: list, classes: list[str], included: set[int], targets_of, seed: int) -> dict[int, str]:
    """Record -> part of a plain stratified random split: per class, shuffle with the seed, cut in order.

    ``targets_of(n)`` gives ``{part: images}`` for a class of ``n`` images (the same
    targets bench's split aims at).
    """
    out: dict[int, str] = {}
    for class_index, label in enumerate(classes):
        idx = [i for i in sorted(included) if records[i].label == label]
        order = np.random.default_rng([seed, class_index, 7]).permutation(len(idx))
        start = 0
        for part, count in targets_of(len(idx)).items():
            for k in order[start : start + count]:
                out[idx[int(k)]] = part
            start += count
    return out


def _crossing_pairs(parts: list[str]) -> int:
    """Pairs among items with these parts that are in different parts."""
    m = len(parts)
    return m * (m - 1) // 2 - sum(c * (c - 1) // 2 for c in Counter(parts).values())


def leakage_audit(grouping, bench_part: dict[int, str], plain_part: dict[int, str]) -> list[dict]:
    """One row per link kind present: pairs, crossing in a plain split, crossing in bench's split."""
    rows = []

    def row(kind: str, pairs: list[tuple[int, int]]) -> None:
        pairs = [(a, b) for a, b in pairs if a in bench_part and b in bench_part]
        if pairs:
            rows.append({
                "kind": kind,
                "pairs": len(pairs),
                "plain_split_crossing": sum(plain_part[a] != plain_part[b] for a, b in pairs),
                "bench_crossing": sum(bench_part[a] != bench_part[b] for a, b in pairs),
            })

    by_kind = grouping.links_by_kind()
    for kind in KIND_ORDER:
        if kind not in GROUP_KINDS:
            row(kind, [(link.a, link.b) for link in by_kind[kind]])
            continue
        if kind != grouping.user_kind:
            continue
        members = [[i for i in m if i in bench_part] for m in grouping.user_members().values()]
        pairs = sum(len(m) * (len(m) - 1) // 2 for m in members)
        if pairs:
            rows.append({
                "kind": kind,
                "pairs": pairs,
                "plain_split_crossing": sum(_crossing_pairs([plain_part[i] for i in m]) for m in members),
                "bench_crossing": sum(_crossing_pairs([bench_part[i] for i in m]) for m in members),
            })
    row(REFUSED, [(l.a, l.b) for l in grouping.refused])
    return rows


def copies_across(files: list[dict], into: str = "test", source: str = "train") -> int:
    """Images of part ``into`` that have a copy in part ``source``: an image of their group
    there (``files``: split.json's rows, each with its split and group). 0 for bench's own
    split, by construction; a plain split (``--plain-split``) puts copies on both sides."""
    groups_in_source = {f["group"] for f in files if f["split"] == source}
    return sum(1 for f in files if f["split"] == into and f["group"] in groups_in_source)
