"""Copy features on disk (bench.data.copy_table): what a scan of 50,000 images keeps out of memory."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
from dataclasses import fields

import numpy as np
import pytest
from conftest import scan_like

from bench.data.copy_features import CopyFeatures, copy_features, mirrored_features
from bench.data.copy_table import ROW, CopyTable, as_table, grids


def _same(a: CopyFeatures, b: CopyFeatures) -> None:
    for f in fields(CopyFeatures):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None), f.name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y)


def _features() -> list[CopyFeatures]:
    out = [copy_features(scan_like(seed, 128)) for seed in range(5)]
    out.append(mirrored_features(scan_like(7, 96)))  # no spots or levels
    flat = CopyFeatures(np.zeros((32, 32), np.float16), np.array([0, 0, 16, 16], np.float32),
                        np.zeros((32, 32), np.float16), np.zeros(9, np.uint8), np.zeros((0, 2), np.float32), None)
    out.append(flat)  # a blank picture: no keypoints, no descriptors
    return out


def test_a_table_reads_back_exactly_what_was_written():
    features = _features()
    assert any(f.spots is None for f in features) and any(f.descriptors is None for f in features)
    table = CopyTable.of(features)
    assert len(table) == len(features) and os.path.getsize(table.path) == len(features) * ROW.itemsize
    for f, g in zip(features, table):
        _same(f, g)
    _same(table[-1], features[-1])
    with pytest.raises(IndexError):
        table[len(features)]
    picked = table.select([4, 0, 2])
    for f, g in zip([features[4], features[0], features[2]], picked):
        _same(f, g)
    _same(table[1:3][1], features[2])
    np.testing.assert_array_equal(grids(picked, "layout"), np.stack([features[i].layout for i in (4, 0, 2)]))
    np.testing.assert_array_equal(grids(features, "spots", [1, 3]), grids(table, "spots", [1, 3]))
    assert as_table(table) is table


def test_column_reads_rows_far_apart_and_in_any_order(monkeypatch):
    import bench.data.copy_table as module

    monkeypatch.setattr(module, "READ_ROWS", 2)  # blocks of 2: spans, and rows read one by one
    features = _features()
    table = CopyTable.of(features)
    order = [6, 0, 5, 1, 3]
    np.testing.assert_array_equal(table.select(order).column("frame"), np.stack([features[i].frame for i in order]))
    blocks = list(table.select(order).blocks(2))
    assert [len(b) for b in blocks] == [2, 2, 1]
    frames, layouts = table.select(order).columns("frame", "layout")  # several fields, one pass
    np.testing.assert_array_equal(frames, np.stack([features[i].frame for i in order]))
    np.testing.assert_array_equal(layouts, np.stack([features[i].layout for i in order]))


def _read_in_a_child(table: CopyTable, i: int) -> tuple:
    f = table[i]
    return f.layout.tobytes(), None if f.descriptors is None else f.descriptors.tobytes()


def test_a_table_pickles_as_its_file_and_the_owner_removes_it():
    features = _features()
    table = CopyTable.of(features)
    assert len(pickle.dumps(table)) < 1000  # the path and the rows, not the features
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        layout, descriptors = pool.apply(_read_in_a_child, (table.select([3, 2]), 1))
    assert layout == features[2].layout.tobytes() and descriptors == features[2].descriptors.tobytes()
    path, picked = table.path, table.select([0])
    del table
    gc.collect()
    assert os.path.exists(path)  # a selection keeps its file
    _same(picked[0], features[0])
    del picked
    gc.collect()
    assert not os.path.exists(path)


def test_a_scan_keeps_no_copy_features_in_memory(tmp_path):
    """The scan writes every image's copy features to its table as it reads the file: none is
    left as an object in memory (at 50,000 images they would be 0.7 GB)."""
    from bench.data.scan import scan

    for label, seeds in (("a", range(4)), ("b", range(4, 8))):
        (tmp_path / label).mkdir()
        for s in seeds:
            scan_like(s, 96).save(tmp_path / label / f"{s}.png")
    gc.collect()
    index = scan(tmp_path, workers=1)
    gc.collect()
    assert isinstance(index.features, CopyTable) and len(index.features) == 8
    assert not [o for o in gc.get_objects() if isinstance(o, CopyFeatures)]
    _same(index.features[5], copy_features(scan_like(5, 96)))


def test_links_from_a_table_are_the_links_from_a_list(tmp_path):
    from bench.data.copies import find_links
    from bench.data.reprocess import FAMILIES
    from bench.data.scan import scan

    rng = np.random.default_rng(1)
    for label, seeds in (("a", range(5)), ("b", range(5, 10))):
        (tmp_path / label).mkdir()
        for s in seeds:
            scan_like(s, 128).save(tmp_path / label / f"{s}.png")
    for k, family in enumerate(("jpeg", "mirror/rotate", "crop")):
        FAMILIES[family](scan_like(k, 128), rng).save(tmp_path / "b" / f"copy{k}.png")
    index = scan(tmp_path, workers=1)
    reader = index.mirrored_reader()
    from_table = find_links(index.records, index.features, mirrored=reader, workers=1)
    from_list = find_links(index.records, list(index.features), mirrored=reader, workers=1)
    assert from_table == from_list and len(from_table) >= 3


def test_the_nearest_image_search_holds_at_most_64_mb_of_products_and_finds_the_same(monkeypatch):
    """Blocks shrink as n grows, so the products stay under 64 MB (256 rows at 50,000 images
    would take 410 MB); smaller blocks give the same candidates."""
    import bench.data.copy_candidates as candidates

    assert candidates.block_rows(1000) == candidates.BLOCK
    assert 8 * candidates.block_rows(50_000) * 50_000 * 4 <= 64 * 2**20
    rng = np.random.default_rng(0)
    grids_ = rng.normal(size=(600, 32, 32)).astype(np.float16)
    grids_[300:] = grids_[:300] + rng.normal(scale=0.3, size=(300, 32, 32)).astype(np.float16)
    whole = candidates.candidate_pairs(grids_)
    monkeypatch.setattr(candidates, "PRODUCT_CELLS", 8 * 600 * 7)  # blocks of 7 images
    assert candidates.block_rows(600) == 7
    np.testing.assert_array_equal(candidates.candidate_pairs(grids_), whole)
    assert {(i, i + 300) for i in range(300)} <= set(map(tuple, whole.tolist()))


def test_principal_axes_span_what_scikit_learn_pca_finds():
    """The candidate basis comes from the 256 x 256 scatter matrix, not an SVD of the
    40,000 x 256 sample (350 MB, the peak of a 50,000-image run's grouping); checked
    against scikit-learn's PCA (an SVD of the centred sample) on data with a clear gap
    after the 6th component."""
    from sklearn.decomposition import PCA

    from bench.data.copy_candidates import principal_axes

    rng = np.random.default_rng(0)
    scales = np.r_[np.linspace(10, 5, 6), np.full(26, 0.5)]
    sample = (rng.normal(size=(3000, 32)) * scales @ np.linalg.qr(rng.normal(size=(32, 32)))[0] + 3).astype(np.float32)
    axes = principal_axes(sample, 6)
    reference = PCA(6, svd_solver="full").fit(sample).components_.T
    assert axes.shape == (32, 6) and axes.dtype == np.float32
    # each axis is scikit-learn's up to sign, in the same order (largest variance first)
    np.testing.assert_allclose(np.abs(np.sum(axes * reference, axis=0)), 1.0, atol=1e-4)
    np.testing.assert_allclose(axes.T @ axes, np.eye(6), atol=1e-5)


def test_principal_axes_of_the_full_sample_hold_no_copy_of_it():
    """40,000 x 256 float32 (41 MB): an SVD made a centred copy and U (82 MB of arrays, 350 MB
    with its workspace); the scatter matrix needs a 4 MB block at a time."""
    import tracemalloc

    from bench.data.copy_candidates import principal_axes

    sample = np.random.default_rng(0).random((40_000, 256), dtype=np.float32)
    tracemalloc.start()
    try:
        principal_axes(sample, 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_one_process_reads_each_mirrored_image_once():
    """Checks come in the candidates' order; a single process (one usable core, or too few
    checks for workers) read each mirror image again whenever its READ_CACHE had moved on:
    74,766 mirrored reads (~5 ms each) for 5,000 demo images."""
    from bench.data.copy_details import READ_CACHE, _Check, _Checker, _confirm

    n_b = READ_CACHE + 88
    blank = CopyFeatures(np.zeros((32, 32), np.float16), np.zeros(4, np.float32), None, None,
                         np.zeros((0, 2), np.float32), None)
    reads = []

    def mirrored(i):
        reads.append(i)
        return blank

    rng = np.random.default_rng(0)
    checks = [_Check(a, n_b + b, ((1, 0.9),), False) for a in range(3) for b in range(n_b)]
    rng.shuffle(checks)
    links, counts, used = _confirm(_Checker([blank] * (2 * n_b), mirrored, 0.7), checks, workers=1)
    assert used == 1 and links == []
    assert counts["keypoint_checks"] == len(checks)
    assert counts["mirrored_read"] == len(reads) == n_b


def test_read_rows_reads_any_rows_in_any_order_and_a_table_any_index(tmp_path):
    """The one row reader of copy tables and the search's pooled rows (bench.row_reads)."""
    from bench.row_reads import read_rows

    data = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    path = tmp_path / "rows.bin"
    path.write_bytes(data.tobytes())
    fd = os.open(path, os.O_RDONLY)
    try:
        for rows in ([5, 6, 7, 8], [39, 0, 1, 2, 20, 20, 21], [], list(range(40))[::-1]):
            got = read_rows(fd, np.array(rows, dtype=np.int64), np.empty((len(rows), 3), np.float32))
            np.testing.assert_array_equal(got, data[rows])
    finally:
        os.close(fd)
    table = CopyTable.of([copy_features(scan_like(s, 64)) for s in range(3)])
    _same(table[-1], table[2])
    _same(table.select([2, 0])[0], table[2])
