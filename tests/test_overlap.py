"""The overlap check: external images that copy a run's images are found (exact, mirrored,
re-processed, resized), new images are not, and the reference survives a save/load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bench.data.overlap import (Reference, find_overlap, load_reference, reference_from_index, reference_from_run,
                                save_reference)
from bench.data.reprocess import FAMILIES
from bench.data.scan import scan
from bench.errors import BenchError
from conftest import scan_like

SIZE = 128
#: The run's images: path -> (seed, split).
RUN = {"a/s00.png": (0, "train"), "a/s01.png": (1, "val"), "a/s02.png": (2, "test"),
       "b/s03.png": (3, "train"), "b/s04.png": (4, "train"), "b/s05.png": (5, "test")}
#: The external copies: path -> (kind, the run image it copies).
COPIES = {"a/exact.png": ("exact", "a/s00.png"), "a/mirror.png": ("mirrored/rotated", "a/s01.png"),
          "b/contrast.png": ("re-processed", "b/s03.png"), "b/resized.png": ("resized/re-encoded", "b/s05.png")}
NEW = ("a/new10.png", "b/new11.png", "b/new12.png")


def _save(img: Image.Image, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(run data folder, its index, external folder, its index)."""
    base = tmp_path_factory.mktemp("overlap")
    data, ext = base / "data", base / "external"
    for path, (seed, _) in RUN.items():
        _save(scan_like(seed, SIZE), data / path)
    (ext / "a").mkdir(parents=True)
    shutil.copyfile(data / "a/s00.png", ext / "a/exact.png")
    _save(scan_like(1, SIZE).transpose(Image.Transpose.FLIP_LEFT_RIGHT), ext / "a/mirror.png")
    _save(FAMILIES["contrast/brightness"](scan_like(3, SIZE), np.random.default_rng(1)), ext / "b/contrast.png")
    _save(scan_like(5, SIZE).resize((96, 96), Image.Resampling.BICUBIC), ext / "b/resized.png")
    for path, seed in zip(NEW, (10, 11, 12)):
        _save(scan_like(seed, SIZE), ext / path)
    return data, scan(data, copies=True), ext, scan(ext, copies=True)


@pytest.fixture(scope="module")
def reference(folders) -> Reference:
    return reference_from_index(folders[1], {path: split for path, (_, split) in RUN.items()})


def _expected() -> list[dict]:
    label = {path: path.split("/")[0] for path in RUN}
    return [{"file": f, "label": f.split("/")[0], "kind": kind, "reference": ref, "reference_split": RUN[ref][1],
             "reference_label": label[ref]} for f, (kind, ref) in sorted(COPIES.items())]


def _without_scores(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("layout", "details")} for row in rows]


def test_the_copies_and_only_the_copies_are_found_with_their_kinds(folders, reference):
    rows = find_overlap(reference, folders[3])
    assert _without_scores(rows) == _expected()
    assert all(0.7 <= row["layout"] <= 1.0 for row in rows)
    assert all(row["details"] >= 12 for row in rows if row["kind"] != "exact")
    assert not {row["file"] for row in rows} & set(NEW)


def test_reference_from_index_keeps_only_the_runs_files(folders):
    ref = reference_from_index(folders[1], {"a/s00.png": "train", "b/s05.png": "test"})
    assert [(r.path, r.label, r.split) for r in ref.records] == [("a/s00.png", "a", "train"),
                                                                 ("b/s05.png", "b", "test")]
    assert len(ref.features) == 2 and ref.source == str(folders[1].root)
    rows = find_overlap(ref, folders[3])
    assert sorted(row["file"] for row in rows) == ["a/exact.png", "b/resized.png"]


def test_saved_reference_gives_the_same_overlap(folders, reference, tmp_path):
    path = tmp_path / "ref" / "reference.npz"
    save_reference(reference, path)
    assert [p.name for p in path.parent.iterdir()] == ["reference.npz"]  # no temporary file left
    loaded = load_reference(path)
    assert loaded.records == reference.records and loaded.source == reference.source
    for a, b in zip(loaded.features, reference.features):
        for name in ("layout", "frame", "spots", "levels", "points"):
            x, y = getattr(a, name), getattr(b, name)
            assert np.array_equal(x, y) and x.dtype == y.dtype
        assert (a.descriptors is None and b.descriptors is None) or np.array_equal(a.descriptors, b.descriptors)
    assert find_overlap(loaded, folders[3]) == find_overlap(reference, folders[3])
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickled objects
        assert z["layouts"].shape == (6, 32, 32) and z["layouts"].dtype == np.float16
        assert z["offsets"].shape == (7,) and z["descriptors"].shape[1] == 32


def test_a_reference_without_features_round_trips_and_finds_only_exact_copies(folders, reference, tmp_path):
    bare = Reference(reference.records, [], "bare")
    save_reference(bare, tmp_path / "bare.npz")
    loaded = load_reference(tmp_path / "bare.npz")
    assert loaded.features == [] and loaded.records == bare.records
    for ref in (bare, loaded):
        rows = find_overlap(ref, folders[3])
        assert [(row["file"], row["kind"], row["reference"]) for row in rows] == [("a/exact.png", "exact", "a/s00.png")]


def test_image_without_keypoints_round_trips(reference, tmp_path):
    from bench.data.copies import copy_features

    flat = copy_features(Image.new("L", (40, 40), 90))
    assert flat.descriptors is None
    ref = Reference(reference.records[:1], [flat], "flat")
    save_reference(ref, tmp_path / "flat.npz")
    back = load_reference(tmp_path / "flat.npz").features[0]
    assert back.descriptors is None and back.points.shape == (0, 2)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "no-meta"])
def test_a_damaged_reference_file_is_a_one_line_error(reference, tmp_path, damage):
    path = tmp_path / "reference.npz"
    save_reference(reference, path)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all\n")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "missing":
        path.unlink()
    else:
        np.savez_compressed(path, layouts=np.zeros((1, 32, 32), np.float16))
    with pytest.raises(BenchError) as info:
        load_reference(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_external_exact_duplicates_of_a_copy_are_listed_too(folders, reference, tmp_path):
    ext = tmp_path / "ext"
    _save(FAMILIES["gamma"](scan_like(4, SIZE), np.random.default_rng(0)), ext / "a/gamma.png")
    (ext / "b").mkdir()
    shutil.copyfile(ext / "a/gamma.png", ext / "b/gamma_again.png")
    _save(scan_like(20, SIZE), ext / "b/new20.png")
    rows = find_overlap(reference, scan(ext, copies=True))
    assert [(row["file"], row["kind"], row["reference"]) for row in rows] == [
        ("a/gamma.png", "re-processed", "b/s04.png"), ("b/gamma_again.png", "re-processed", "b/s04.png")]


def _fake_run(run_dir, data) -> None:
    import hashlib

    run_dir.mkdir()
    files = [{"path": path, "sha256": hashlib.sha256((data / path).read_bytes()).hexdigest(), "label": path[0],
              "split": split, "group": i} for i, (path, (_, split)) in enumerate(RUN.items())]
    (run_dir / "split.json").write_text(json.dumps({"files": files}))
    (run_dir / "run.json").write_text(json.dumps({"config": {"data": str(data)}}))


def test_reference_from_run_reads_the_runs_files_again(folders, reference, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folders[0], data)
    _fake_run(tmp_path / "run", data)
    (data / "a/s02.png").unlink()  # gone since the run
    scan_like(30, SIZE).save(data / "b/s04.png")  # changed since the run
    seen = []
    ref = reference_from_run(tmp_path / "run", progress=lambda done, total: seen.append((done, total)))
    assert (ref.missing, ref.changed, ref.source) == (1, 1, str(tmp_path / "run"))
    assert seen[-1] == (6, 6)
    kept = [r for r in reference.records if r.path not in ("a/s02.png", "b/s04.png")]
    assert ref.records == kept
    assert find_overlap(ref, folders[3]) == find_overlap(reference, folders[3])


def test_reference_from_run_without_its_data_folder_is_a_one_line_error(folders, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folders[0], data)
    _fake_run(tmp_path / "run", data)
    shutil.rmtree(data)
    with pytest.raises(BenchError) as info:
        reference_from_run(tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and str(data) in message and "export" in message
    with pytest.raises(BenchError, match="not a run folder"):
        reference_from_run(tmp_path)  # no run.json


def test_reference_from_run_with_the_runs_own_scan_reads_no_file(folders, tmp_path, monkeypatch):
    """At the end of `bench run` the export's reference comes from the run's scan in memory
    (50,000 images: ~100 s of reading saved): the same reference as reading the files."""
    import bench.data.scan

    data = tmp_path / "data"
    shutil.copytree(folders[0], data)
    _fake_run(tmp_path / "run", data)
    index = scan(data, copies=True)
    from_files = reference_from_run(tmp_path / "run")
    monkeypatch.setattr(bench.data.scan, "read_files", lambda *a, **k: pytest.fail("read the files again"))
    shutil.rmtree(data)  # not even needed any more
    from_index = reference_from_run(tmp_path / "run", index=index)
    assert from_index.records == from_files.records and len(from_index.records) == len(RUN)
    assert (from_index.missing, from_index.changed, from_index.source) == (0, 0, str(tmp_path / "run"))
    for a, b in zip(from_index.features, from_files.features):
        _same_features(a, b)
    assert find_overlap(from_index, folders[3]) == find_overlap(from_files, folders[3])
    # an index without copy features (a resumed run's) reads the files as before
    with pytest.raises(BenchError, match="no longer exists"):
        reference_from_run(tmp_path / "run", index=bench.data.scan.DatasetIndex(data, ["a", "b"], index.records))


def _same_features(a, b) -> None:
    for name in ("layout", "frame", "spots", "levels", "points", "descriptors"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)
