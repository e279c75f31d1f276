"""Refused links as constraints of the split: linked groups go to one side when the fractions allow.

Average linkage (:mod:`bench.data.duplicates`) refuses a copy link that is too weak to
merge two groups (so that look-alikes cannot chain hundreds of images into one group).
Such a link still joins two images that are often copies of one scan: a random placement
of their groups would put the two on different sides of the split about half the time.
The split and the folds therefore treat refused links as constraints, one class at a time
(the placement is stratified by class):

1. **Units.** The groups of a class joined by refused links, directly or through other
   groups, form a *unit* (a connected component). The groups themselves stay as they are:
   a unit is only placed whole, it never becomes a group (the largest group is unchanged).
2. **Whole units first.** The units are placed by the split's own rule
   (:func:`bench.data.split.assign_groups`, or the fold placement of
   :mod:`bench.data.folds`), as if each unit were one group. The result is kept when every
   part ends within one percentage point of the class's images (:data:`TOLERANCE`) of its
   target, or no further than the groups alone end when that is further, and every part
   that the groups alone fill gets something.
3. **Cut only what is too large.** Otherwise the units above a size cap are cut into
   pieces of at most that many images, crossing as few links as a greedy partition finds:
   each piece grows from a peripheral group of what is left of the unit, taking the
   neighbouring group that has the most links into the piece (a chain is cut into
   consecutive runs, one link per cut). The caps tried, largest first: each part's target
   (a unit cut to fill one part and no more), then three quarters of it, again and again,
   down to the largest group; the first placement within the tolerance is kept. When
   none is, the placement is the one without constraints.
4. **Report.** :func:`crossing_report` lists every refused link whose two images still end
   in different parts, with its reason: its unit was cut to keep the fractions, or the two
   groups are placed with different classes (a stratified placement places each class's
   groups on their own; this is a likely label conflict or a false link).

Balanced partitioning with the fewest cut links is NP-hard; the greedy growth is the
classic graph-growing heuristic (Karypis & Kumar, "A fast and high quality multilevel
scheme for partitioning irregular graphs", SIAM J. Sci. Comput. 20(1), 1998, section 4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

#: How far (a share of the class's images) a part may end from its target so that units stay whole.
TOLERANCE = 0.01
CUT = "unit cut to keep the split fractions"
LABELS_DIFFER = "groups placed with different classes"


@dataclass(frozen=True)
class Unit:
    """Groups placed together; ``members[0]`` (its first group's first member) is its key, as for a group."""

    groups: tuple
    members: tuple[int, ...]
    size: int


def _unit(groups: list) -> Unit:
    groups = sorted(groups, key=lambda g: g.members[0])
    return Unit(tuple(groups), tuple(m for g in groups for m in g.members), sum(g.size for g in groups))


def refused_edges(grouping) -> list[tuple[int, int]]:
    """The refused links as pairs of group keys (first members), one per link; links to
    excluded files are left out."""
    key = {i: g.members[0] for g in grouping.groups for i in g.members}
    return [(key[l.a], key[l.b]) for l in grouping.refused if l.a in key and l.b in key and key[l.a] != key[l.b]]


def _adjacency(keys: set[int], edges: list[tuple[int, int]]) -> dict[int, dict[int, int]]:
    adj: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for a, b in edges:
        if a in keys and b in keys:
            adj[a][b] += 1
            adj[b][a] += 1
    return adj


def _components(nodes: list[int], adj) -> list[list[int]]:
    """Connected components of ``nodes`` (keys, ascending) within ``adj``; each sorted, in order of first key."""
    seen: set[int] = set()
    node_set = set(nodes)
    out = []
    for start in nodes:
        if start in seen:
            continue
        seen.add(start)
        comp, stack = [], [start]
        while stack:
            v = stack.pop()
            comp.append(v)
            for w in adj.get(v, ()):
                if w in node_set and w not in seen:
                    seen.add(w)
                    stack.append(w)
        out.append(sorted(comp))
    return out


def _far_end(comp: list[int], adj) -> int:
    """A peripheral node of ``comp``: the last one a breadth-first walk from its first node reaches."""
    inside, order, seen = set(comp), [comp[0]], {comp[0]}
    for v in order:
        for w in sorted(adj.get(v, ())):
            if w in inside and w not in seen:
                seen.add(w)
                order.append(w)
    return order[-1]


def _cut(comp: list[int], size: dict[int, int], adj, cap: int) -> list[list[int]]:
    """``comp`` in pieces of at most ``cap`` images (each node fits), cutting few links (module docstring)."""
    pieces, todo = [], [comp]
    while todo:
        part = todo.pop(0)
        if sum(size[v] for v in part) <= cap:
            pieces.append(part)
            continue
        inside = set(part)
        start = _far_end(part, adj)
        piece, total = {start}, size[start]
        into: dict[int, int] = defaultdict(int)  # frontier node -> links into the piece
        for w, n in adj[start].items():
            if w in inside:
                into[w] += n
        while True:
            fits = [v for v in into if total + size[v] <= cap]
            if not fits:
                break
            # most links into the piece, fewest left outside it; ties: the lower key
            v = max(fits, key=lambda v: (2 * into[v] - sum(n for w, n in adj[v].items() if w in inside), -v))
            piece.add(v)
            total += size[v]
            del into[v]
            for w, n in adj[v].items():
                if w in inside and w not in piece:
                    into[w] += n
        pieces.append(sorted(piece))
        todo = _components(sorted(inside - piece), adj) + todo
    return pieces


def _deviation(part_of: dict[int, object], size: dict[int, int], targets: dict) -> tuple[float, set]:
    filled = {p: 0 for p in targets}
    for key, part in part_of.items():
        filled[part] += size[key]
    return max(abs(filled[p] - targets[p]) for p in targets), {p for p in targets if filled[p] > 0}


def place_units(groups: list, edges: list[tuple[int, int]], targets: dict,
                place: Callable[[list], dict[int, object]]) -> dict[int, object]:
    """Place one class's ``groups`` into the parts of ``targets`` (part -> images) keeping
    the groups joined by ``edges`` (refused links as group keys) together where the
    fractions allow (module docstring). ``place(items)`` is the placement rule for items
    with ``size`` and ``members`` (groups or units), returning ``{members[0]: part}``; it is
    called afresh per try (it must seed itself). Returns ``{group first member: part}``;
    without edges among ``groups``, exactly ``place(groups)``.
    """
    plain = place(groups)
    size = {g.members[0]: g.size for g in groups}
    adj = _adjacency(set(size), edges)
    if not adj:
        return plain
    by_key = {g.members[0]: g for g in groups}
    tolerance, used = _deviation(plain, size, targets)
    tolerance = max(tolerance, TOLERANCE * sum(size.values())) + 1e-9
    comps = _components(sorted(size), adj)
    floor = max(size.values())
    largest = max(sum(size[v] for v in c) for c in comps)
    last = largest + 1  # a cap at or above the previous try's largest piece cuts the same pieces
    for cap in _caps(largest, floor, targets):
        if cap >= last:
            continue
        pieces = [p for c in comps for p in _cut(c, size, adj, cap)]
        units = [_unit([by_key[v] for v in p]) for p in pieces]
        got = place(units)
        part_of = {g.members[0]: got[u.members[0]] for u in units for g in u.groups}
        deviation, filled = _deviation(part_of, size, targets)
        if deviation <= tolerance and filled >= used:
            return part_of
        last = max(u.size for u in units)
    return plain


def _caps(largest: int, floor: int, targets: dict) -> list[int]:
    """The piece sizes to try, largest first: the largest unit (whole), then each part's
    target (a unit cut to fill one part whole and no more) and three quarters of it,
    again and again, down to the largest group."""
    caps = {largest, floor}
    for target in targets.values():
        cap = int(target)
        while cap > floor:
            caps.add(cap)
            cap = cap * 3 // 4
    return sorted((c for c in caps if floor <= c <= largest), reverse=True)


def linked_units(grouping, edges: list[tuple[int, int]]) -> list[tuple[list[int], int]]:
    """The units of two or more groups (components over refused links within each class):
    ``(group keys, images)`` each, in class order, then by first key."""
    out = []
    for groups in grouping.by_class.values():
        size = {g.members[0]: g.size for g in groups}
        for comp in _components(sorted(size), _adjacency(set(size), edges)):
            if len(comp) > 1:
                out.append((comp, sum(size[v] for v in comp)))
    return out


def crossing_report(grouping, parts: Callable[[int], tuple], checked: str) -> dict:
    """How the refused links fared: ``links``, ``units`` (of two or more groups), ``largest_unit``
    (images), ``tolerance``, ``checked`` (which parts were compared, in words), ``crossing``
    (links whose images end in different parts) and ``crossing_links`` (rows
    ``[path a, path b, part a, part b, reason]``, the parts where they first differ).

    ``parts(record)`` gives a record's parts (one per placement checked: the split, or the
    holdout and each repeat's outer fold), or ``()`` for an excluded record.
    """
    units = linked_units(grouping, refused_edges(grouping))
    unit_of = {v: (n, len(keys)) for keys, n in units for v in keys}
    key = {i: g.members[0] for g in grouping.groups for i in g.members}
    class_of = {g.members[0]: c for c, groups in grouping.by_class.items() for g in groups}
    rows = []
    for link in grouping.refused:
        pa, pb = (parts(link.a), parts(link.b)) if link.a in key and link.b in key else ((), ())
        if not pa or not pb or pa == pb:
            continue
        a, b = next((x, y) for x, y in zip(pa, pb) if x != y)
        if class_of[key[link.a]] != class_of[key[link.b]]:
            reason = LABELS_DIFFER
        else:
            n, groups = unit_of[key[link.a]]
            reason = f"{CUT}: its unit of {n} images in {groups} groups could not stay whole"
        rows.append([grouping.records[link.a].path, grouping.records[link.b].path, str(a), str(b), reason])
    return {"links": len(grouping.refused), "units": len(units), "largest_unit": max((n for _, n in units), default=0),
            "tolerance": TOLERANCE, "checked": checked, "crossing": len(rows), "crossing_links": rows}
