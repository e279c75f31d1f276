"""Build the groups that must stay in one split: copies, then user groups on top.

Input: the confirmed copy links of :mod:`bench.data.copies` (exact, resized/re-encoded,
re-processed, mirrored/rotated) and, optionally, the user's own groups (``--groups``:
patient or study IDs, :mod:`bench.data.user_groups`) or, for DICOM files, the patients or
studies of their headers (:mod:`bench.data.header_groups`).

1. **Exact copies** (same sha256) always form one unit.
2. **Average linkage, not chains.** Units are merged link by link, strongest first; two
   clusters merge only when at least :data:`AGREEMENT` of the image pairs between them
   are linked. Two copies of one slice agree with each other's copies, so their clusters
   merge; one false link between two groups of 10 is 1 of 100 pairs and merges nothing.
   A false link can add at most one image to a cluster, never chain hundreds.
3. **Label conflicts, narrowly.** A file whose own copy (a link inside its cluster)
   carries another label is excluded, with that copy; the rest of the cluster stays,
   split into its still-linked parts.
4. **User groups** (or header groups) join whole clusters on top (so a patient's copies
   and slices stay together). They may span labels: that is not a conflict.

Every group records its kinds of link (``kinds``) and the links that built it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bench.data.copies import COPY_KINDS, Link

#: Share of the image pairs between two clusters that must be linked for them to merge.
AGREEMENT = 0.5
USER_KIND = "user group"
#: Kinds of group given rather than found: ``--groups``, and the DICOM headers' patients and studies.
GROUP_KINDS = (USER_KIND, "patient", "study")
#: Link kinds in the order tables list them.
KIND_ORDER = (*COPY_KINDS, *GROUP_KINDS)


@dataclass(frozen=True)
class DuplicateGroup:
    """Indices (into the record list) of images that must stay in one split."""

    members: tuple[int, ...]
    kinds: tuple[str, ...] = ()  # link kinds inside the group ("user group" included); () for a single image
    links: tuple[Link, ...] = field(default=(), compare=False)

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def kind(self) -> str:
        return "+".join(self.kinds) if self.kinds else "single"


@dataclass
class Groups:
    """The result: usable groups, excluded conflicts, and the copy links that were refused."""

    groups: list[DuplicateGroup]
    conflicts: list[dict]  # {"file": i, "copies": [j, ...], "labels": [...]} per excluded file
    refused: list[Link]  # links whose clusters did not agree enough to merge


class _Sets:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


def _average_linkage(n: int, links: list[Link]) -> tuple[_Sets, list[Link]]:
    """Merge along ``links`` (exact first, then strongest first) while clusters agree."""
    sets = _Sets(n)
    for link in links:
        if link.kind == "exact":
            sets.union(link.a, link.b)
    unit_of = [sets.find(i) for i in range(n)]
    # an exact-copy set counts once: its copies agree with everything it agrees with
    size = {u: 1 for u in set(unit_of)}
    between: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    copy_links = [l for l in links if l.kind != "exact"]
    for link in copy_links:
        a, b = unit_of[link.a], unit_of[link.b]
        if a != b:
            between[a][b] += 1
            between[b][a] += 1
    pending = sorted(copy_links, key=lambda l: (-l.layout, -l.details, l.a, l.b))
    while True:  # a refused link may agree once its clusters have grown: retry until nothing merges
        refused, merged = [], False
        for link in pending:
            a, b = sets.find(link.a), sets.find(link.b)
            if a == b:
                continue
            if between[a].get(b, 0) >= AGREEMENT * size[a] * size[b]:
                keep = sets.union(a, b)
                gone = b if keep == a else a
                size[keep] += size.pop(gone)
                for other, count in between.pop(gone).items():
                    between[other].pop(gone, None)
                    if other != keep:
                        between[keep][other] += count
                        between[other][keep] += count
                between[keep].pop(gone, None)
                merged = True
            else:
                refused.append(link)
        if not merged:
            break
        pending = refused
    return sets, [l for l in refused if sets.find(l.a) != sets.find(l.b)]


def build_groups(labels: list[str], links: list[Link], user_groups: dict[int, str] | None = None,
                 user_kind: str = USER_KIND) -> Groups:
    """Partition records ``0..len(labels)-1`` (see the module docstring). Deterministic.
    ``user_kind``: the kind a group joined by ``user_groups`` records (one of :data:`GROUP_KINDS`)."""
    n = len(labels)
    sets, refused = _average_linkage(n, links)
    accepted = [l for l in links if sets.find(l.a) == sets.find(l.b)]

    # 3. conflicts: files whose own (accepted) copy carries another label
    copies_of: dict[int, set[int]] = defaultdict(set)
    for link in accepted:
        copies_of[link.a].add(link.b)
        copies_of[link.b].add(link.a)
    excluded = {i for i in copies_of if any(labels[j] != labels[i] for j in copies_of[i])}
    conflicts = [
        {"file": i, "copies": sorted(copies_of[i]), "labels": sorted({labels[i], *(labels[j] for j in copies_of[i])})}
        for i in sorted(excluded)
    ]

    # re-form clusters from the accepted links between files that stay
    parts = _Sets(n)
    kept_links = [l for l in accepted if l.a not in excluded and l.b not in excluded]
    for link in kept_links:
        parts.union(link.a, link.b)
    # 4. user groups on top
    joined_by_user: set[int] = set()
    if user_groups:
        first_of: dict[str, int] = {}
        for i in sorted(user_groups):
            if i in excluded:
                continue
            j = first_of.setdefault(user_groups[i], i)
            if j != i:
                root = parts.union(i, j)
                joined_by_user.add(root)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        if i not in excluded:
            members[parts.find(i)].append(i)
    links_of: dict[int, list[Link]] = defaultdict(list)
    for link in kept_links:
        links_of[parts.find(link.a)].append(link)
    user_roots = {parts.find(r) for r in joined_by_user}
    groups = []
    for root, idx in sorted(members.items(), key=lambda item: item[1][0]):
        kinds = {l.kind for l in links_of[root]}
        if root in user_roots and len(idx) > 1:
            kinds.add(user_kind)
        groups.append(DuplicateGroup(tuple(idx), tuple(k for k in KIND_ORDER if k in kinds), tuple(links_of[root])))
    return Groups(groups, conflicts, refused)


def exact_duplicate_sets(records: list) -> list[list[str]]:
    """Sets of paths with identical bytes (two or more files each), sorted."""
    by_sha: dict[str, list[str]] = {}
    for rec in records:
        by_sha.setdefault(rec.sha256, []).append(rec.path)
    return sorted(sorted(p) for p in by_sha.values() if len(p) > 1)
