"""Nested, group-aware, repeated cross-validation folds (bench.data.folds)."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest

from bench.data.duplicates import DuplicateGroup
from bench.data.folds import _place, check_cv, make_folds, read_folds, write_folds
from bench.data.scan import scan
from bench.data.split import make_split, read_split, write_split
from bench.errors import BenchError
from conftest import make_folder


def _with_pairs(root, counts, pairs, seed=0):
    """``counts`` distinct images per class, the first ``pairs[class]`` of them copied once (exact pairs)."""
    make_folder(root, counts, seed=seed)
    for label, n in pairs.items():
        for i in range(n):
            shutil.copy(root / label / f"img_{i:03d}.png", root / label / f"dup_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Singletons and exact pairs in three classes, plus one label conflict (c/img_008 copied into b)."""
    root = _with_pairs(tmp_path_factory.mktemp("mixed") / "data", {"a": 20, "b": 13, "c": 9}, {"a": 4, "b": 3, "c": 2})
    shutil.copy(root / "c" / "img_008.png", root / "b" / "conflict.png")
    return scan(root)


def _cv_paths(plan):
    return {f["path"] for f in plan.files if not f["holdout"]}


def _one_part_per_group(rows, key):
    part = {}
    for row in rows:
        part.setdefault(row["group"], set()).add(row[key])
    return all(len(p) == 1 for p in part.values())


def _partition(plan, repeat):
    """The set partition of repeat ``repeat`` (fold labels ignored)."""
    folds = {}
    for row in plan.oof_rows(repeat):
        folds.setdefault(row["fold"], set()).add(row["path"])
    return frozenset(frozenset(p) for p in folds.values())


@pytest.mark.parametrize("test_size", [0.0, 0.2])
def test_every_cv_image_in_exactly_one_fold_per_repeat(mixed, test_size):
    plan = make_folds(mixed, k=4, repeats=3, test_size=test_size, seed=5)
    cv = _cv_paths(plan)
    holdout = {f["path"] for f in plan.files if f["holdout"]}
    assert cv | holdout == {f["path"] for f in plan.files} and not cv & holdout
    assert len(plan.files) == 50  # 42 distinct + 9 copies + 1 conflicting copy, less the 2 conflicting files
    assert bool(holdout) == (test_size > 0)
    for r in range(3):
        tests = [plan.split(r, f).rows("test") for f in range(4)]
        paths = [p["path"] for rows in tests for p in rows]
        assert len(paths) == len(set(paths)) == len(cv) and set(paths) == cv
        assert sorted(row["path"] for row in plan.oof_rows(r)) == sorted(cv)
        assert all(rows for rows in tests)


@pytest.mark.parametrize("test_size", [0.0, 0.25])
def test_no_group_crosses_folds_inner_splits_or_holdout(mixed, test_size):
    plan = make_folds(mixed, k=3, repeats=2, test_size=test_size, seed=1)
    groups_seen = {f["group"] for f in plan.files}
    assert len(groups_seen) < len(plan.files)  # the pairs are there
    assert _one_part_per_group(plan.files, "holdout")
    assert _one_part_per_group(plan.files, "final")
    for r in range(2):
        assert _one_part_per_group(plan.oof_rows(r), "fold")
        for f in range(3):
            assert _one_part_per_group(plan.split(r, f).files, "split")
    assert _one_part_per_group(plan.final_split().files, "split")
    # the groups are exactly make_split's: same path -> group id, same conflicts
    manifest = make_split(mixed, seed=1)
    assert {f["path"]: f["group"] for f in plan.files} == {f["path"]: f["group"] for f in manifest.files}
    assert plan.conflicts == manifest.conflicts


def test_label_conflicts_are_excluded_and_listed(mixed):
    plan = make_folds(mixed, k=3)
    paths = {f["path"] for f in plan.files}
    assert "c/img_008.png" not in paths and "b/conflict.png" not in paths
    assert {c["file"]: c["copies"] for c in plan.conflicts} == {
        "b/conflict.png": [["c/img_008.png", "c"]], "c/img_008.png": [["b/conflict.png", "b"]]}
    listed = {g["group"]: g["part"] for g in plan.groups}
    assert set(listed.values()) <= {"cv"}  # only the conflicting copies are out; no group is


@pytest.mark.parametrize("k", [3, 4, 5, 7])
def test_per_class_fold_sizes_within_one_image(mixed, k):
    for seed in range(4):
        plan = make_folds(mixed, k=k, repeats=2, seed=seed)
        for r, folds in enumerate(plan.sizes()["folds"]):
            for label in plan.classes:
                counts = [fold[label] for fold in folds]
                assert max(counts) - min(counts) <= 1, (seed, r, label, counts)
                assert min(counts) >= 1


def test_fold_totals_within_one_image_with_singletons(tmp_path):
    # each class leaves one image over: those must land in different folds
    index = scan(make_folder(tmp_path / "data", {"a": 4, "b": 4, "c": 4, "d": 7}))
    for seed in range(5):
        plan = make_folds(index, k=3, repeats=2, seed=seed)
        for folds in plan.sizes()["folds"]:
            totals = [sum(fold.values()) for fold in folds]
            assert max(totals) - min(totals) <= 1, totals


def _groups(sizes):
    starts = np.cumsum([0, *sizes])
    return [DuplicateGroup(tuple(range(starts[i], starts[i] + s)), "x") for i, s in enumerate(sizes)]


def _loads(sizes, k, seed):
    groups = _groups(sizes)
    fold_of = _place(groups, k, np.random.default_rng(seed), [0] * k)
    return np.bincount([fold_of[g.members[0]] for g in groups], weights=sizes, minlength=k)


def test_placement_reaches_one_image_whenever_pairs_allow():
    """Brute force: with groups of 1 and 2 images the spread is <= 1 whenever any partition has it."""
    for k in (2, 3):
        for pairs, singles in itertools.product(range(6), range(6)):
            sizes = [2] * pairs + [1] * singles
            if len(sizes) < k:
                continue
            best = min(
                np.ptp(np.bincount(a, weights=sizes, minlength=k)) for a in itertools.product(range(k), repeat=len(sizes))
            )
            for seed in range(3):
                assert np.ptp(_loads(sizes, k, seed)) <= max(best, 1), (k, sizes)


def test_placement_spread_at_most_the_largest_group():
    rng = np.random.default_rng(3)
    for _ in range(300):
        k = int(rng.integers(2, 7))
        sizes = [int(s) for s in rng.integers(1, 8, size=int(rng.integers(k, 25)))]
        loads = _loads(sizes, k, int(rng.integers(1000)))
        assert np.ptp(loads) <= max(sizes) and loads.min() > 0, (sizes, loads)
    assert list(_loads([2, 2, 2], 2, 0)) in ([4, 2], [2, 4])  # the groups do not allow +-1 here


def test_repeats_differ_and_same_seed_reproduces(mixed):
    plan = make_folds(mixed, k=4, repeats=3, seed=2)
    partitions = [_partition(plan, r) for r in range(3)]
    assert len(set(partitions)) == 3
    again = make_folds(mixed, k=4, repeats=3, seed=2)
    assert again.to_dict() == plan.to_dict()
    assert make_folds(mixed, k=4, repeats=3, seed=3).files != plan.files


def test_repeats_get_distinct_partitions_on_tiny_data(tmp_path):
    # 3 + 3 singletons in 3 folds: only 6 partitions exist, so seeded draws alone would repeat one
    index = scan(make_folder(tmp_path / "data", {"a": 3, "b": 3}))
    plan = make_folds(index, k=3, repeats=6, seed=0)
    assert len({_partition(plan, r) for r in range(6)}) == 6
    plan = make_folds(index, k=3, repeats=8, seed=0)  # more repeats than partitions: reused, no error
    assert len({_partition(plan, r) for r in range(8)}) == 6


@pytest.mark.parametrize("val_size", [0.15, 0.3])
def test_inner_val_fraction_close_to_val_size(mixed, val_size):
    plan = make_folds(mixed, k=4, repeats=2, val_size=val_size, seed=4)
    for r in range(2):
        for f in range(4):
            sizes = plan.split(r, f).sizes()
            for label in plan.classes:
                n = sizes["train"][label] + sizes["val"][label]
                assert abs(sizes["val"][label] - n * val_size) <= 2  # pairs: one group off at most
                assert sizes["val"][label] >= 1 and sizes["train"][label] >= 1
            n_val, n = sum(sizes["val"].values()), sum(sizes["train"].values()) + sum(sizes["val"].values())
            assert abs(n_val / n - val_size) < 0.06


def test_split_rows_cover_exactly_the_right_files(mixed, tmp_path):
    plan = make_folds(mixed, k=3, repeats=2, test_size=0.2, seed=6)
    cv = _cv_paths(plan)
    for r, f in itertools.product(range(2), range(3)):
        manifest = plan.split(r, f)
        parts = {s: {row["path"] for row in manifest.rows(s)} for s in ("train", "val", "test")}
        assert parts["test"] == {x["path"] for x in plan.files if not x["holdout"] and x["fold"][r] == f}
        assert parts["val"] == {x["path"] for x in plan.files if not x["holdout"] and x["inner_val"][r][f] == "1"}
        assert parts["train"] | parts["val"] | parts["test"] == cv
        assert sum(len(p) for p in parts.values()) == len(cv) == len(manifest.files)
        assert set(manifest.files[0]) == {"path", "sha256", "label", "split", "group"}
    write_split(plan.split(1, 2), tmp_path / "split.json")  # a fold is a SplitManifest like any other
    assert read_split(tmp_path / "split.json").files == plan.split(1, 2).files
    with pytest.raises(IndexError):
        plan.split(2, 0)


@pytest.mark.parametrize("test_size", [0.0, 0.2])
def test_final_split(mixed, tmp_path, test_size):
    plan = make_folds(mixed, k=3, repeats=1, test_size=test_size, seed=0)
    final = plan.final_split()
    assert {r["path"] for r in final.rows("train") + final.rows("val")} == _cv_paths(plan)
    assert {r["path"] for r in final.rows("test")} == {f["path"] for f in plan.files if f["holdout"]}
    sizes = final.sizes()
    for label in plan.classes:
        assert sizes["train"][label] >= 1 and sizes["val"][label] >= 1
        assert (sizes["test"][label] >= 1) == (test_size > 0)
    if test_size == 0:
        assert final.rows("test") == [] and sizes["test"] == {c: 0 for c in plan.classes}
    write_split(final, tmp_path / "split.json")
    assert read_split(tmp_path / "split.json").sizes() == sizes


def test_folds_json_round_trip_and_byte_identical(mixed, tmp_path):
    plan = make_folds(mixed, k=4, repeats=2, test_size=0.2, seed=9)
    write_folds(plan, tmp_path / "a.json")
    back = read_folds(tmp_path / "a.json")
    assert back == plan
    write_folds(back, tmp_path / "b.json")
    write_folds(make_folds(scan(mixed.root), k=4, repeats=2, test_size=0.2, seed=9), tmp_path / "c.json")
    write_folds(make_folds(mixed, k=4, repeats=2, test_size=0.2, seed=10), tmp_path / "d.json")
    data = (tmp_path / "a.json").read_bytes()
    assert data == (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()
    assert data != (tmp_path / "d.json").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    row = next(f for f in json.loads(data)["files"] if not f["holdout"])
    assert len(row["fold"]) == 2 and [len(s) for s in row["inner_val"]] == [4, 4]
    assert back.split(1, 3).files == plan.split(1, 3).files


def test_read_folds_rejects_a_broken_file(mixed, tmp_path):
    path = tmp_path / "folds.json"
    path.write_text("{not json")
    with pytest.raises(BenchError, match="cannot read folds file"):
        read_folds(path)
    data = make_folds(mixed, k=3, seed=0).to_dict()
    data["files"][0]["fold"] = [7]  # fold 7 of 3
    path.write_text(json.dumps(data))
    with pytest.raises(BenchError, match="does not fit 1 x 3 folds"):
        read_folds(path)


@pytest.mark.parametrize("k, repeats, test_size, message", [
    (1, 1, 0.0, "--cv must be at least 2 (got 1); e.g. --cv 5"),
    (5, 0, 0.0, "--repeats must be at least 1 (got 0)"),
    (5, 1, 0.5, "--test-size 0.5 with --cv must be 0 (no holdout) or a fraction below 0.5"),
    (5, 1, 0.7, "--test-size 0.7 with --cv"),
    (5, 1, -0.1, "--test-size -0.1 with --cv"),
])
def test_bad_cv_options(mixed, k, repeats, test_size, message):
    with pytest.raises(BenchError) as exc:
        check_cv(k, repeats, test_size)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_folds(mixed, k, repeats, test_size=test_size)
    check_cv(2, 1, 0.0)  # the smallest valid settings pass


def test_bad_val_size(mixed):
    for val_size in (0.0, 1.0):
        with pytest.raises(BenchError, match=r"^--val-size must be a fraction between 0 and 1"):
            make_folds(mixed, 3, val_size=val_size)


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_cv_larger_than_the_smallest_class(tmp_path):
    index = scan(_with_pairs(tmp_path / "data", {"a": 10, "b": 5}, {"b": 1}))  # b: 5 groups, 6 images
    with pytest.raises(BenchError) as exc:
        make_folds(index, k=6)
    assert _one_line(exc) == (
        "--cv 6 is more than the 5 duplicate groups of class 'b' (each fold needs one); "
        "use --cv 5 or less, or add distinct images to 'b'"
    )
    assert len(make_folds(index, k=5).files) == 16
    with pytest.raises(BenchError, match=r"^--cv 5 is more than the 4 duplicate groups of class 'b' outside the "
                                         r"--test-size holdout \(each fold needs one\); use --cv 4 or less"):
        make_folds(index, k=5, test_size=0.1)


def test_class_with_fewer_than_three_groups(tmp_path):
    index = scan(_with_pairs(tmp_path / "data", {"a": 10, "b": 2}, {"b": 2}))  # b: 4 images, 2 groups
    with pytest.raises(BenchError) as exc:
        make_folds(index, k=2)
    assert _one_line(exc).startswith("class 'b' has 2 duplicate group(s) but cross-validation needs at least 3 per class")
    index = scan(make_folder(tmp_path / "data3", {"a": 10, "b": 3}))
    with pytest.raises(BenchError, match=r"outside the --test-size holdout .* or use --test-size 0 \(no holdout\)$"):
        make_folds(index, k=2, test_size=0.3)


def test_two_folds_that_starve_an_inner_split(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 10, "b": 4})
    for i in range(3):  # b: one group of 4 copies and 3 singletons: one fold gets the big group alone
        shutil.copy(root / "b" / "img_000.png", root / "b" / f"copy_{i}.png")
    index = scan(root)
    with pytest.raises(BenchError) as exc:
        make_folds(index, k=2)
    assert _one_line(exc).startswith("--cv 2 leaves a single duplicate group of class 'b' outside outer fold")
    assert "use --cv 3 or more" in str(exc.value)
    plan = make_folds(index, k=3)
    for r in range(plan.repeats):
        for f in range(3):
            assert all(plan.split(r, f).sizes()[s]["b"] >= 1 for s in ("train", "val", "test"))


@pytest.mark.slow
def test_real_data_folds(brain_index, tmp_path):
    index = brain_index
    plan = make_folds(index, k=5, repeats=2, seed=0)
    paths = {r.path for r in index.records}
    assert {f["path"] for f in plan.files} == paths and len(paths) == 253
    exact = index.to_dict()["exact_duplicates"]
    near = [g["files"] for g in plan.groups if "resized/re-encoded" in g["kind"]]
    assert len(exact) == 22 and len(near) >= 10
    for r in range(2):
        fold_of = {row["path"]: row["fold"] for row in plan.oof_rows(r)}
        assert sorted(fold_of) == sorted(paths)
        assert sorted(p for f in range(5) for p in (x["path"] for x in plan.split(r, f).rows("test"))) == sorted(paths)
        for files in exact + [g["files"] for g in plan.groups]:
            assert len({fold_of[p] for p in files}) == 1
        assert _one_part_per_group(plan.oof_rows(r), "fold")
        largest = max(len(g["files"]) for g in plan.groups)
        for label in plan.classes:
            counts = [fold[label] for fold in plan.sizes()["folds"][r]]
            assert max(counts) - min(counts) <= largest
    assert _partition(plan, 0) != _partition(plan, 1)
    write_folds(plan, tmp_path / "folds.json")
    assert read_folds(tmp_path / "folds.json") == plan
