"""What a grouping leaves for people to check: ``groups.csv``, the contact sheet, warnings.

* ``groups.csv``: one row per readable image: its group, the group's size and kinds of
  link, the image's split (or ``excluded: label conflict``) and label.
* the contact sheet (``copies.png``): the weakest links of each kind (the ones most worth
  checking by eye), the largest group, and the links average linkage refused.
* :func:`large_group_warnings`: a group holding more than :data:`LARGE_GROUP` of the
  images, with the links that built it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bench.data.duplicates import GROUP_KINDS, KIND_ORDER, USER_KIND
from bench.runfolder import COPIES_PNG, GROUPS_CSV

log = logging.getLogger("bench")

#: A group holding more than this share of the images (and more than LARGE_GROUP_FILES
#: files: on a small dataset a pair is already 2 %) gets a warning.
LARGE_GROUP = 0.02
LARGE_GROUP_FILES = 4
#: Example links per kind on the contact sheet.
EXAMPLES = 6
EXCLUDED = "excluded: label conflict"


def group_rows(grouping, part_of: dict[str, str]) -> list[list]:
    """Rows of groups.csv (header first): every image, grouped, sorted by group then path.

    ``part_of``: group id -> where the group went (a split, a fold, "holdout").
    """
    rows = []
    for g in grouping.groups:
        gid = grouping.group_id(g)
        for i in g.members:
            rec = grouping.records[i]
            rows.append([gid, g.size, g.kind, part_of.get(gid, ""), rec.label, rec.path])
    for c in grouping.conflicts:
        rows.append(["", 1, "label conflict", EXCLUDED, c["label"], c["file"]])
    rows.sort(key=lambda r: (r[0] == "", r[0], r[5]))
    return [["group", "group_size", "kind", "split", "label", "path"], *rows]


def write_groups_csv(grouping, part_of: dict[str, str], path: Path) -> Path:
    from bench.atomic import write_text_atomic
    from bench.tables import rows_csv_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, rows_csv_text(group_rows(grouping, part_of)))
    return path


def largest_groups(grouping, count: int = 5) -> list:
    multi = [g for g in grouping.groups if g.size > 1]
    return sorted(multi, key=lambda g: (-g.size, g.members[0]))[:count]


def large_group_warnings(grouping, fraction: float = LARGE_GROUP, shown: int = 8) -> list[str]:
    """One warning (a few lines) per group holding more than ``fraction`` of the images."""
    n = len(grouping.records)
    out = []
    for g in largest_groups(grouping, count=len(grouping.groups)):
        if g.size <= max(fraction * n, LARGE_GROUP_FILES):
            break
        paths = grouping.records
        lines = [f"group {grouping.group_id(g)} holds {g.size} of {n} images ({100 * g.size / n:.1f} %, more than "
                 f"{100 * fraction:g} %; kinds: {g.kind}); check its links, or raise --copy-threshold:"]
        for link in sorted(g.links, key=lambda l: l.layout)[:shown]:
            lines.append(f"    {paths[link.a].path} <-> {paths[link.b].path} ({link.kind}, layout {link.layout:.2f}, "
                         f"{link.details} keypoints)")
        if len(g.links) > shown:
            lines.append(f"    ... {len(g.links) - shown} more links in groups.csv / split.json")
        if USER_KIND in g.kinds:
            lines.append("    (it includes a --groups group)")
        elif grouping.user_kind in g.kinds:
            lines.append(f"    (it includes the files of one {grouping.user_kind}: "
                         f"{grouping.user_groups['source']}, --group-by)")
        out.append("\n".join(lines))
    return out


def sheet_rows(grouping) -> list:
    """The contact sheet's rows: weakest links per kind, the largest group, refused links."""
    from bench.data.contact_sheet import SheetRow

    by_kind = grouping.links_by_kind()
    rows = []
    for kind in KIND_ORDER:
        if kind in GROUP_KINDS:
            if kind != grouping.user_kind:
                continue
            members = grouping.user_members()
            pairs = [(m[0], m[1]) for m in sorted(members.values(), key=len, reverse=True) if len(m) > 1]
            source = "--groups" if kind == USER_KIND else grouping.user_groups["source"]
            if pairs:
                rows.append(SheetRow(f"{kind} ({source}): {len(pairs)} groups of 2+ files, examples",
                                     [(grouping.records[a].path, grouping.records[b].path) for a, b in pairs[:EXAMPLES]],
                                     [f"group {grouping.user_group_of[a]}" for a, _ in pairs[:EXAMPLES]]))
            continue
        links = sorted(by_kind[kind], key=lambda l: (l.layout, l.details))
        if links:
            rows.append(SheetRow(f"{kind}: {len(links)} links, the weakest first",
                                 [(grouping.records[l.a].path, grouping.records[l.b].path) for l in links[:EXAMPLES]],
                                 [_caption(l) for l in links[:EXAMPLES]]))
    largest = largest_groups(grouping, 1)
    if largest:
        g = largest[0]
        rows.append(SheetRow(f"largest group {grouping.group_id(g)}: {g.size} files ({g.kind})",
                             [(grouping.records[i].path,) for i in g.members[: 2 * EXAMPLES]], []))
    if grouping.refused:
        refused = sorted(grouping.refused, key=lambda l: -l.layout)[:EXAMPLES]
        rows.append(SheetRow(f"refused: {len(grouping.refused)} links average linkage did not use (not grouped)",
                             [(grouping.records[l.a].path, grouping.records[l.b].path) for l in refused],
                             [_caption(l) for l in refused]))
    return rows


def _caption(link) -> str:
    return "identical bytes" if link.kind == "exact" else f"layout {link.layout:.2f}, {link.details} keypoints"


def write_contact_sheet(grouping, root: Path, out: Path) -> Path | None:
    """``out`` (PNG) with :func:`sheet_rows`; None when there is nothing linked."""
    from bench.data.contact_sheet import contact_sheet

    return contact_sheet(Path(root), sheet_rows(grouping), Path(out))


def grouping_for(index, copy_threshold: float, groups_csv: Path | None, group_by: str = "patient"):
    """Group ``index`` (``--groups`` read from ``groups_csv`` when given, else the DICOM files'
    patients or studies by ``group_by``), logging large-group warnings: what ``bench scan``
    and ``bench run`` both do before splitting."""
    from bench.data.header_groups import ATTRIBUTE
    from bench.data.split import group_index
    from bench.data.user_groups import header_groups, read_user_groups

    if groups_csv:
        given = read_user_groups(groups_csv, index)
        if group_by != "none" and any(r.header is not None for r in index.records):
            log.info(f"--groups {groups_csv} gives the groups: the DICOM headers' {ATTRIBUTE[group_by]} is not used")
    else:
        given = header_groups(index, group_by)
    grouping = group_index(index, copy_threshold, given)
    for warning in large_group_warnings(grouping):
        log.warning(warning)
    return grouping


#: What :func:`write_group_files` writes into its folder.
GROUP_FILES = (GROUPS_CSV, COPIES_PNG)


def write_group_files(grouping, part_of: dict[str, str], root: Path, folder: Path) -> tuple[Path, Path | None]:
    """groups.csv and the contact sheet copies.png (when anything is linked) in ``folder``."""
    folder = Path(folder)
    written = write_groups_csv(grouping, part_of, folder / GROUPS_CSV)
    return written, write_contact_sheet(grouping, root, folder / COPIES_PNG)
