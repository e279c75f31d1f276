"""The human summary ``bench scan`` prints: a few dozen lines at any dataset size.

Classes and counts, skipped files, copies per kind with the largest groups, label
conflicts, the split table, the leakage audit and the shortcut check; every group is in
groups.csv. It reads the data stage's objects and words the shortcut check of
:mod:`bench.evaluate.shortcuts`, so it sits above both.
"""

from __future__ import annotations

from tabulate import tabulate


def _listed(lines: list[str], limit: int, more: str) -> list[str]:
    return lines[:limit] + ([f"  ... {len(lines) - limit} more {more}"] if len(lines) > limit else [])


def dicom_lines(index, grouping) -> list[str]:
    """What the scan says about DICOM files: how many, the window rule, where their groups
    come from, and every file whose header lacks the attribute the groups need."""
    from bench.config import describe_window

    n = sum(1 for r in index.records if r.format == "DICOM")
    if not n:
        return []
    lines = [f"\nDICOM: {n} of {len(index.records)} images; window: {describe_window(index.window)} "
             f"(--window {index.window})"]
    u = grouping.user_groups
    if u and grouping.user_kind != "user group":
        lines.append(f"groups from the headers (--group-by {u['kind']}): {u['files']} files in {u['groups']} "
                     f"{u['kind']} group{'s' if u['groups'] != 1 else ''} ({u['source']}, kept as salted hashes)")
        without = u.get("without") or []
        if without:
            lines.append(f"{len(without)} DICOM files have no {u['source'].removeprefix('DICOM ')}: each is its own "
                         "group unless copies link it (not guessed):")
            lines.extend(_listed([f"  {p}" for p in without], 10, "in split.json (grouping.user_groups.without)"))
    elif u:
        lines.append(f"groups from {u['source']} (--groups): the DICOM headers are not used for groups")
    else:
        lines.append("groups from the headers: none (--group-by none)")
    return lines


def format_scan(index, split, grouping) -> str:
    """The human summary printed by ``bench scan``: a few dozen lines at any dataset size."""
    from bench.data.duplicates import GROUP_KINDS, KIND_ORDER, USER_KIND
    from bench.data.group_files import largest_groups

    counts = index.counts()
    lines = [f"data: {index.root}" + ("  (SYNTHETIC demo data)" if index.synthetic else "")]
    n_files = len(index.records) + sum(1 for s in index.skipped if s.reason != "class folder holds no readable images")
    lines.append(f"{n_files} files, {len(index.records)} readable images, {len(index.classes)} classes")
    lines.append(tabulate([[c, counts[c]] for c in index.classes], headers=["class", "images"]))
    if index.skipped:
        lines.append(f"\nskipped {len(index.skipped)}:")
        lines.extend(_listed([f"  {s.path}: {s.reason}" for s in index.skipped], 10, "skipped files"))
    lines.extend(dicom_lines(index, grouping))

    multi = [g for g in grouping.groups if g.size > 1]
    n_links = sum(len(g.links) for g in grouping.groups)
    lines.append(f"\ncopies (--copy-threshold {grouping.copy_threshold:g}): {n_links} links; "
                 f"{len(multi)} groups of 2+ files hold {sum(g.size for g in multi)} images")
    kind_rows, by_kind = [], grouping.links_by_kind()
    for kind in KIND_ORDER:
        groups = sum(1 for g in multi if kind in g.kinds)
        if kind in GROUP_KINDS:
            if grouping.user_groups and kind == grouping.user_kind:
                u = grouping.user_groups
                kind_rows.append([f"{kind} ({u['source']})",
                                  f"{u['files']} files in {u['groups']} group{'s' if u['groups'] != 1 else ''}", groups])
            continue
        kind_rows.append([kind, len(by_kind[kind]), groups])
    lines.append(tabulate(kind_rows, headers=["kind", "links", "groups with it"]))
    if grouping.user_groups and grouping.user_groups["missing"] and grouping.user_kind == USER_KIND:
        lines.append(f"{grouping.user_groups['missing']} images are not listed in {grouping.user_groups['source']} "
                     "(each is its own group unless copies link it)")
    if multi:
        lines.append("largest groups: " + ", ".join(
            f"{grouping.group_id(g)} ({g.size} files, {g.kind})" for g in largest_groups(grouping)))
    if grouping.refused:
        from bench.report.copies_section import refused_links_text

        lines.append(f"{len(grouping.refused)} weaker links were not used: their groups did not agree enough to merge "
                     "(contact sheet, split.json)")
        if split.linked:
            lines.append(refused_links_text(split.linked))
    if grouping.conflicts:
        lines.append(f"\nlabel conflicts: {len(grouping.conflicts)} files excluded from every split (a copy of each "
                     "carries another label):")
        lines.extend(_listed([
            f"  {c['file']} ({c['label']}) = " + ", ".join(f"{p} ({lab})" for p, lab in c["copies"])
            for c in grouping.conflicts], 10, "in groups.csv"))
    else:
        lines.append("\nlabel conflicts: none")
    sizes = split.sizes()
    rows = [[s, *(sizes[s][c] for c in index.classes), sum(sizes[s].values())] for s in sizes]
    lines.append(f"\nsplit (seed {split.seed}, val {split.val_size:g}, test {split.test_size:g}):")
    lines.append(tabulate(rows, headers=["split", *index.classes, "total"]))
    if split.audit:
        lines.append("\nleakage audit: linked pairs on different sides of a plain stratified random split "
                     "(same seed and fractions, groups ignored) and of bench's split")
        lines.append(tabulate([[a["kind"], a["pairs"], a["plain_split_crossing"], a["bench_crossing"]]
                               for a in split.audit],
                              headers=["kind", "linked pairs", "plain split", "bench split"]))
    from bench.evaluate.shortcuts import shortcut_sentence

    lines.append("\n" + shortcut_sentence(split.shortcut))
    split_of, crossing = {}, set()
    for f in split.files:
        if split_of.setdefault(f["group"], f["split"]) != f["split"]:
            crossing.add(f["group"])
    lines.append(
        "no group crosses splits" if not crossing else f"WARNING: groups crossing splits: {sorted(crossing)}"
    )
    return "\n".join(lines)
