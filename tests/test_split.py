"""Duplicate-aware, stratified, seeded splitting."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.errors import BenchError
from bench.data.scan import scan
from bench.data.split import group_index, make_split, read_split, write_split
from conftest import make_folder


def _groups_cross(manifest) -> set[str]:
    seen, crossing = {}, set()
    for f in manifest.files:
        if seen.setdefault(f["group"], f["split"]) != f["split"]:
            crossing.add(f["group"])
    return crossing


def test_exact_and_near_duplicates_stay_together(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 20, "b": 20}, size=96)
    src = root / "a" / "img_000.png"
    (root / "a" / "copy.png").write_bytes(src.read_bytes())
    Image.open(src).resize((60, 60)).save(root / "a" / "resized.jpg", quality=85)
    index = scan(root)
    for seed in range(8):
        manifest = make_split(index, seed=seed)
        group = {f["path"]: f["group"] for f in manifest.files}
        assert group["a/img_000.png"] == group["a/copy.png"] == group["a/resized.jpg"]
        assert not _groups_cross(manifest)
    dup = [g for g in manifest.groups if "a/copy.png" in g["files"]][0]
    assert dup["kind"] == "exact+resized/re-encoded" and len(dup["files"]) == 3


def test_stratified_sizes_close_to_requested(tmp_path):
    index = scan(make_folder(tmp_path / "data", {"a": 40, "b": 20}))
    manifest = make_split(index, val_size=0.2, test_size=0.1, seed=3)
    sizes = manifest.sizes()
    assert sizes["val"] == {"a": 8, "b": 4}
    assert sizes["test"] == {"a": 4, "b": 2}
    assert sizes["train"] == {"a": 28, "b": 14}


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    index = scan(make_folder(tmp_path / "data", {"a": 15, "b": 15}))
    write_split(make_split(index, seed=7), tmp_path / "s1.json")
    write_split(make_split(scan(tmp_path / "data"), seed=7), tmp_path / "s2.json")
    write_split(make_split(index, seed=8), tmp_path / "s3.json")
    assert (tmp_path / "s1.json").read_bytes() == (tmp_path / "s2.json").read_bytes()
    assert (tmp_path / "s1.json").read_bytes() != (tmp_path / "s3.json").read_bytes()
    assert read_split(tmp_path / "s1.json").files == make_split(index, seed=7).files


def test_label_conflicts_excluded(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 6, "b": 6})
    (root / "b" / "same_as_a0.png").write_bytes((root / "a" / "img_000.png").read_bytes())
    manifest = make_split(scan(root))
    paths = {f["path"] for f in manifest.files}
    assert "a/img_000.png" not in paths and "b/same_as_a0.png" not in paths
    assert {c["file"]: c["copies"] for c in manifest.conflicts} == {
        "a/img_000.png": [["b/same_as_a0.png", "b"]], "b/same_as_a0.png": [["a/img_000.png", "a"]]}
    assert len(manifest.files) == 11  # 13 files less the two conflicting copies


def test_class_too_small(tmp_path):
    index = scan(make_folder(tmp_path / "data", {"a": 10, "b": 2}))
    with pytest.raises(BenchError, match="class 'b' has 2 usable images"):
        make_split(index)


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.7, 0.4), (0.0, 0.2), (0.2, 1.0)])
def test_bad_fractions(image_folder, val, test):
    with pytest.raises(BenchError, match="--(val|test)-size"):
        make_split(scan(image_folder), val_size=val, test_size=test)


@pytest.mark.slow
def test_real_data_no_group_crosses_splits(brain_index, tmp_path):
    index = brain_index
    grouping = group_index(index)
    for seed in (0, 1, 2):
        manifest = make_split(index, seed=seed, grouping=grouping)
        assert len(manifest.files) == 253
        assert not _groups_cross(manifest)
        sizes = manifest.sizes()
        for split in ("val", "test"):
            assert 30 <= sum(sizes[split].values()) <= 46
        # every exact duplicate set lies within one split
        split_of = {f["path"]: f["split"] for f in manifest.files}
        for paths in index.to_dict()["exact_duplicates"]:
            assert len({split_of[p] for p in paths}) == 1
    near = [g for g in manifest.groups if "resized/re-encoded" in g["kind"]]
    assert len(near) >= 10
    assert np.mean([len(g["files"]) for g in near]) >= 2
