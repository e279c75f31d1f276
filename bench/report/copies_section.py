"""The Data section's copies part: link kinds, the leakage audit, how groups were made,
label conflicts, and the shortcut check, all read from split.json."""

from __future__ import annotations

from bench.report.formatting import Table, files_text


def refused_links_text(linked: dict) -> str:
    """How the split placed the groups joined by refused links (split.json's ``refused_links_split``), in words."""
    from bench.data.placement import CUT, LABELS_DIFFER

    tolerance = 100 * linked.get("tolerance", 0.01)
    text = (f"Those links join {linked.get('units', 0)} sets of groups (the largest holds "
            f"{linked.get('largest_unit', 0)} images), each kept on one side of {linked.get('checked', 'the split')} "
            f"where that keeps every part within {tolerance:g} percentage point of its asked fraction: "
            f"{linked.get('crossing', 0)} linked pairs cross")
    rows = linked.get("crossing_links") or []
    if not rows:
        return text + "."
    cut = sum(1 for r in rows if r[4].startswith(CUT))
    other = sum(1 for r in rows if r[4] == LABELS_DIFFER)
    why = ([f"{cut} because their set was too large to keep whole and was cut where the fewest links cross"]
           if cut else []) + ([f"{other} because their groups belong to different classes"] if other else [])
    return text + f" ({'; '.join(why)}; listed in split.json)."


def conflict_row(c: dict) -> list[str]:
    if "file" in c:
        return [c["file"], c.get("label", ""), files_text([f"{p} ({lab})" for p, lab in c.get("copies") or []])]
    return [files_text(list(c.get("files") or [])), ", ".join(c.get("labels") or []), "(whole group, older run)"]


def copies_summary(sp: dict) -> dict:
    """Link kinds, the leakage audit and how the groups were made, from split.json."""
    from bench.data.duplicates import KIND_ORDER

    groups = sp.get("duplicate_groups") or []
    links = [link for g in groups for link in g.get("links") or []]
    kinds = [[k, str(sum(1 for link in links if link[2] == k)), str(sum(1 for g in groups if k in g.get("kind", "")))]
             for k in KIND_ORDER]
    kinds = [row for row in kinds if row[1] != "0" or row[2] != "0"]
    audit = sp.get("leakage_audit") or []
    settings = sp.get("grouping") or {}
    notes = []
    if settings.get("copy_threshold") is not None:
        notes.append(f"Copies were linked at --copy-threshold {settings['copy_threshold']:g}: both the layout of "
                     "the equalised pictures and their keypoints must agree (any flip or 90° rotation, monotone "
                     "intensity changes, blur, sharpening, re-encoding, resizing, crops and pads of up to 10 %).")
    user = settings.get("user_groups")
    if user and user.get("kind", "user group") != "user group":
        without = len(user.get("without") or [])
        notes.append(f"Groups from the DICOM headers (--group-by {user['kind']}): {user['files']} files in "
                     f"{user['groups']} {user['kind']} groups by {user['source']} (kept as salted hashes, never as the "
                     f"identifiers); {without} DICOM files had no such attribute and are each their own group unless "
                     "copies link them (listed in split.json).")
    elif user:
        notes.append(f"User groups from {user['source']}: {user['files']} files in {user['groups']} groups; "
                     f"{user['missing']} images were not listed.")
    refused = settings.get("refused_links") or []
    if refused:
        notes.append(f"{len(refused)} weaker links were not used to merge groups: the groups they would have joined "
                     "did not agree enough (fewer than half the pairs between them linked); the contact sheet shows "
                     "them.")
        if sp.get("refused_links_split"):
            notes.append(refused_links_text(sp["refused_links_split"]))
    largest = max(groups, key=lambda g: len(g.get("files") or []), default=None)
    if largest:
        notes.append(f"Largest group: {largest.get('group')} with {len(largest.get('files') or [])} files "
                     f"({largest.get('kind')}).")
    return {
        "kinds": Table(["kind", "links", "groups with it"], kinds, [False, True, True]) if kinds else None,
        "audit": Table(["kind", "linked pairs", "plain split: on different sides", "bench: on different sides"],
                       [[a["kind"], str(a["pairs"]), str(a["plain_split_crossing"]), str(a["bench_crossing"])]
                        for a in audit], [False, True, True, True]) if audit else None,
        "audit_note": ("A plain split is a stratified random split with the same seed and fractions that ignores the "
                       "groups (for --cv: a stratified random fold assignment, against repeat 1's outer folds). "
                       "Every pair it puts on different sides would have let a copy of a training image be "
                       "tested."),
        "copies_note": " ".join(notes),
        "shortcut": _shortcut_text(sp),
    }


def _shortcut_text(sp: dict) -> str | None:
    """The shortcut check's sentence; None when split.json has no shortcut check."""
    if "shortcut_check" not in sp:
        return None
    from bench.evaluate.shortcuts import shortcut_sentence

    return shortcut_sentence(sp.get("shortcut_check"))
