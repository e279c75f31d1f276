"""Copy detection and grouping: re-processed copies link, look-alikes do not, one weak link
cannot chain groups, conflicts are narrow, user groups join, and the leakage audit counts."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import namedtuple

import imagehash
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.cli import app
from bench.data.copies import Link, copy_features, find_links, keypoints_needed, mirrored_features
from bench.data.duplicates import build_groups
from bench.data.reprocess import FAMILIES
from bench.data.scan import scan
from bench.data.split import group_index, make_split, write_split
from bench.data.user_groups import read_user_groups
from conftest import scan_like

Record = namedtuple("Record", "path label sha256 phash dhash")


def _record(image: Image.Image, name: str, label: str = "a") -> Record:
    grey = image.convert("L")
    return Record(name, label, hashlib.sha256(image.tobytes() + str(image.size).encode()).hexdigest(),
                  str(imagehash.phash(grey)), str(imagehash.dhash(grey)))


def _links(images: list[Image.Image], threshold: float = 0.7) -> list[Link]:
    records = [_record(img, f"img_{i}") for i, img in enumerate(images)]
    features = [copy_features(img) for img in images]
    return find_links(records, features, threshold, mirrored=lambda i: mirrored_features(images[i]))


def _scan_folder(root, seeds: dict[str, range], size: int = 96):
    """``root/<label>/sNN.png``: one scan-like picture per seed (NN), distinct per seed."""
    for label, labelled in seeds.items():
        (root / label).mkdir(parents=True)
        for s in labelled:
            scan_like(s, size).save(root / label / f"s{s:02d}.png")
    return root


def _pairs(links) -> set[frozenset]:
    return {frozenset((link.a, link.b)) for link in links}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_of_copies_links_to_its_original_and_nothing_else(family):
    originals = [scan_like(seed) for seed in range(4)]
    copies = [FAMILIES[family](img, np.random.default_rng([k, 2])) for k, img in enumerate(originals)]
    pairs = _pairs(_links(originals + copies))
    assert pairs == {frozenset((k, k + 4)) for k in range(4)}


def test_black_padding_around_a_bright_cornered_picture_is_trimmed_away(brain_mri):
    # yes/Y183.jpg: a scan whose corners are white; a black pad around it changed every
    # pixel's rank and the content frame, and its padded copy was never a candidate
    from bench.data.framing import trim
    from bench.data.images import open_rgb

    original = open_rgb(brain_mri / "yes" / "Y183.jpg")[0].convert("L")
    padded = FAMILIES["pad"](original, np.random.default_rng(3))
    assert padded.size != original.size
    assert trim(padded).size == trim(original).size
    a, b = (copy_features(img).layout.astype(float).ravel() for img in (original, padded))
    assert np.corrcoef(a, b)[0, 1] > 0.95  # the same layout, so the pair becomes a candidate
    others = [open_rgb(p)[0] for p in sorted(brain_mri.glob("yes/*"))[:12] if p.name != "Y183.jpg"]
    pairs = _pairs(_links([original, padded, *others]))
    assert frozenset((0, 1)) in pairs and not any(0 in p or 1 in p for p in pairs - {frozenset((0, 1))})


def test_link_kinds_name_what_changed():
    base = scan_like(1)
    images = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base.resize((150, 150)),
              base.point(lambda v: round(255 * (v / 255) ** 2))]
    kinds = {frozenset((link.a, link.b)): link.kind for link in _links(images)}
    assert kinds[frozenset((0, 1))] == "mirrored/rotated"
    assert kinds[frozenset((0, 2))] == "resized/re-encoded"
    assert kinds[frozenset((0, 3))] == "re-processed"


def test_dark_low_contrast_lookalikes_with_close_hashes_do_not_link():
    # two different dark, low-contrast slices whose pHash and dHash nearly agree: a hash-only detector links them
    dark = [scan_like(seed).point(lambda v: v // 10) for seed in range(40)]
    ph = [imagehash.phash(img) for img in dark]
    dh = [imagehash.dhash(img) for img in dark]
    i, j = min(((i, j) for i in range(40) for j in range(i + 1, 40)), key=lambda p: (ph[p[0]] - ph[p[1]]) + (dh[p[0]] - dh[p[1]]))
    assert ph[i] - ph[j] <= 14 and dh[i] - dh[j] <= 14  # close hashes: a hash-only detector would link them
    assert _links([dark[i], dark[j]]) == []
    # ... while a contrast-stretched copy of one of them still links to it
    stretched = dark[i].point(lambda v: min(255, v * 9))
    assert _pairs(_links([dark[i], dark[j], stretched])) == {frozenset((0, 2))}


def test_threshold_tightens_and_loosens_both_measures():
    assert keypoints_needed(0.95, 0.7) == 12 and keypoints_needed(0.7, 0.7) == 20
    assert keypoints_needed(0.8, 0.7) == 16 and keypoints_needed(0.8, 0.9) > keypoints_needed(0.8, 0.7)
    base = scan_like(3)
    cropped = base.crop((30, 0, 192, 192))  # into the content: the border trim undoes a crop of background
    (link,) = _links([base, cropped], 0.7)
    assert 0.9 < link.layout < 0.99 and link.details >= 20
    assert _links([base, cropped], 0.99) == []  # the tightest --copy-threshold refuses even this crop


def _clique(members: list[int], kind: str = "re-processed") -> list[Link]:
    return [Link(a, b, kind, 0.95, 80) for k, a in enumerate(members) for b in members[k + 1:]]


def test_one_weak_link_does_not_chain_two_groups():
    labels = ["a"] * 10 + ["b"] * 10
    weak = Link(9, 10, "re-processed", 0.71, 21)
    built = build_groups(labels, _clique(list(range(10))) + _clique(list(range(10, 20))) + [weak])
    assert sorted(g.size for g in built.groups) == [10, 10]
    assert built.refused == [weak] and built.conflicts == []


def test_a_path_of_weak_links_stays_short():
    # 40 look-alikes, each falsely linked to the next: connected components would make one group of 40
    links = [Link(i, i + 1, "re-processed", 0.75, 20) for i in range(39)]
    built = build_groups(["a"] * 40, links)
    assert max(g.size for g in built.groups) <= 3


def test_copies_that_do_not_all_link_to_each_other_still_group():
    # an original with a left crop and a right crop: each crop links to the original, not to the other
    built = build_groups(["a"] * 3, [Link(0, 1, "re-processed", 0.9, 50), Link(0, 2, "re-processed", 0.9, 50)])
    assert [g.members for g in built.groups] == [(0, 1, 2)]


def test_label_conflict_excludes_only_the_conflicting_copies():
    # 0, 1, 2 are copies of one slice labelled "a"; 3 is a copy of 1 and 2 filed under "b"
    links = _clique([0, 1, 2]) + [Link(1, 3, "re-processed", 0.9, 40), Link(2, 3, "re-processed", 0.9, 40)]
    built = build_groups(["a", "a", "a", "b", "a"], links)
    assert {c["file"] for c in built.conflicts} == {1, 2, 3}
    assert [g.members for g in built.groups] == [(0,), (4,)]
    assert {c["file"]: c["copies"] for c in built.conflicts}[3] == [1, 2]


def test_user_groups_join_copies_across_labels(tmp_path):
    root = _scan_folder(tmp_path / "data", {"no": range(0, 8), "yes": range(8, 16)})
    scan_like(3, 96).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "no" / "s03_mirror.png")
    # patient p1: a "no" slice and a "yes" slice (a patient may have both); p2: two "yes" slices
    (tmp_path / "groups.csv").write_text("path,group\nno/s00.png,p1\nyes/s08.png,p1\nyes/s09.png,p2\n"
                                         "yes/s10.png,p2\nno/s03.png,p3\n")
    index = scan(root)
    user = read_user_groups(tmp_path / "groups.csv", index)
    assert user.missing == 12
    grouping = group_index(index, user_groups=user)
    manifest = make_split(index, seed=0, grouping=grouping)
    split_of = {f["path"]: f["split"] for f in manifest.files}
    assert split_of["no/s00.png"] == split_of["yes/s08.png"] and split_of["yes/s09.png"] == split_of["yes/s10.png"]
    assert split_of["no/s03.png"] == split_of["no/s03_mirror.png"]
    assert manifest.conflicts == [] and len(manifest.files) == 17
    kinds = {g["group"]: g["kind"] for g in manifest.groups}
    assert sorted(kinds.values()) == ["mirrored/rotated", "user group", "user group"]  # p3 has one file
    # the audit counts the user-group pairs (1 + 1) and the mirror link, none split apart by bench
    audit = {row["kind"]: row for row in manifest.audit}
    assert audit["user group"]["pairs"] == 2 and audit["user group"]["bench_crossing"] == 0
    assert audit["mirrored/rotated"]["pairs"] == 1 and audit["mirrored/rotated"]["bench_crossing"] == 0
    # same seed, same groups: byte-identical split.json
    write_split(manifest, tmp_path / "a.json")
    write_split(make_split(scan(root), seed=0, grouping=group_index(scan(root), user_groups=user)), tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_leakage_audit_counts_what_a_plain_split_would_leak(tmp_path):
    root = _scan_folder(tmp_path / "data", {"no": range(0, 20), "yes": range(20, 40)})
    for s in range(0, 40, 2):  # every other image also has a contrast-changed copy
        label = "no" if s < 20 else "yes"
        scan_like(s, 96).point(lambda v: min(255, int(v * 1.25))).save(root / label / f"s{s:02d}_c.png")
    manifest = make_split(scan(root), seed=0)
    (row,) = manifest.audit
    assert row["kind"] == "re-processed" and row["pairs"] == 20
    assert row["bench_crossing"] == 0 and row["plain_split_crossing"] >= 3


def test_scan_cli_summary_groups_csv_and_contact_sheet(tmp_path):
    root = _scan_folder(tmp_path / "data", {"no": range(0, 10), "yes": range(10, 20)})
    scan_like(1, 96).rotate(90).save(root / "no" / "s01_rot.png")
    (root / "no" / "s02_same.png").write_bytes((root / "no" / "s02.png").read_bytes())
    (tmp_path / "groups.csv").write_text("path,group\nyes/s10.png,p7\nyes/s11.png,p7\n")
    out = tmp_path / "out" / "groups.csv"
    result = CliRunner().invoke(app, ["scan", str(root), "--groups", str(tmp_path / "groups.csv"),
                                      "--out", str(out.parent)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "mirrored/rotated" in text and "leakage audit" in text and "20 images are not listed" in text
    assert len(text.splitlines()) < 60
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 22 and {r["path"] for r in rows} >= {"no/s01_rot.png", "no/s02_same.png"}
    group = {r["path"]: r["group"] for r in rows}
    assert group["no/s01.png"] == group["no/s01_rot.png"] and group["yes/s10.png"] == group["yes/s11.png"]
    sheet = out.with_name("copies.png")
    with Image.open(sheet) as img:
        assert img.width >= 400 and img.height > 150


@pytest.mark.parametrize("content, fragment", [
    ("path,group\nno/missing.png,p1\n", "does not exist"),
    ("path,group\nno/s00.png,p1\nno/s00.png,p2\n", "listed twice"),
    ("path,group\nno/s00.png,\n", "empty group"),
    ("file,patient\nno/s00.png,p1\n", "no 'path' column"),
])
def test_scan_groups_file_errors_are_one_line(tmp_path, content, fragment):
    root = _scan_folder(tmp_path / "data", {"no": range(0, 3), "yes": range(10, 13)}, size=64)
    (tmp_path / "g.csv").write_text(content)
    result = CliRunner().invoke(app, ["scan", str(root), "--groups", str(tmp_path / "g.csv"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out" / "groups.csv").exists()


def test_bad_copy_threshold_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--copy-threshold", "1.5"])
    assert result.exit_code == 2 and "--copy-threshold must be at most" in result.output


@pytest.mark.slow
def test_brain_mri_copies_of_every_family_link(brain_mri, tmp_path):
    from bench.data.images import open_rgb

    paths = sorted(brain_mri.glob("*/*"))[::40][:6]
    originals = [open_rgb(p)[0] for p in paths]
    for f_index, (family, transform) in enumerate(FAMILIES.items()):
        copies = [transform(img, np.random.default_rng([k, f_index])) for k, img in enumerate(originals)]
        pairs = _pairs(_links(originals + copies))
        assert {frozenset((k, k + 6)) for k in range(6)} <= pairs, family


@pytest.mark.slow
def test_brain_mri_groups_run_folder_files(brain_index, tmp_path):
    index = brain_index
    grouping = group_index(index)
    manifest = make_split(index, seed=0, grouping=grouping)
    data = json.loads(json.dumps(manifest.to_dict()))
    assert len(index.to_dict()["exact_duplicates"]) == 22
    assert all(row["bench_crossing"] == 0 for row in data["leakage_audit"])
    assert sum(row["plain_split_crossing"] for row in data["leakage_audit"]) > 0
    assert max(len(g["files"]) for g in data["duplicate_groups"]) <= 0.02 * len(index.records)
    assert all(g["links"] for g in data["duplicate_groups"])
    # every pair a hash-only detector links (pHash and dHash both within 8 bits) is grouped too
    group = {f["path"]: f["group"] for f in data["files"]}
    ph = [imagehash.hex_to_hash(r.phash) for r in index.records]
    dh = [imagehash.hex_to_hash(r.dhash) for r in index.records]
    close = [(a.path, b.path) for i, a in enumerate(index.records) for j, b in enumerate(index.records)
             if i < j and ph[i] - ph[j] <= 8 and dh[i] - dh[j] <= 8]
    assert len(close) >= 30 and all(group[a] == group[b] for a, b in close)
