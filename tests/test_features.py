"""Memory-mapped cached features: same numbers as in RAM, memory flat."""

from __future__ import annotations

import numpy as np
import pytest

from bench.search.cache import FeatureCache
from bench.search.features import FeatureRows, pooled
from bench.search.hypermodel import BenchHyperModel, TrialData


def _entry(tmp_path, array: np.ndarray, name: str = "a") -> np.ndarray:
    cache = FeatureCache(tmp_path / "results" / "run" / "cache")
    key = cache.key(name=name)
    cache.save(key, array, {"name": name})
    loaded = cache.load(key)
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float16
    return loaded


def test_rows_of_indexed_segments_read_like_the_arrays_they_stand_for(tmp_path):
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(50, 3, 3, 4)).astype(np.float16)
    views = rng.normal(size=(20, 3, 3, 4)).astype(np.float16)
    fold = np.array([7, 3, 3, 49, 0, 12])  # any order, repeats allowed
    rows = FeatureRows([(_entry(tmp_path, pool, "pool"), fold), (_entry(tmp_path, views, "views"), None)])
    expected = np.concatenate([pool[fold], views]).astype(np.float32)
    assert len(rows) == 26 and rows.shape == (26, 3, 3, 4) and rows.ndim == 4
    np.testing.assert_array_equal(np.asarray(rows), expected)
    np.testing.assert_array_equal(rows[2:9], expected[2:9])  # a slice across both segments
    pick = np.array([25, 0, 6, 5, 13])
    np.testing.assert_array_equal(rows[pick], expected[pick])
    assert rows[pick].dtype == np.float32
    np.testing.assert_allclose(pooled(rows, np.mean), expected.mean(axis=(1, 2)), rtol=1e-6)


def test_the_folds_of_one_entry_pool_it_once_and_get_their_own_rows(tmp_path, monkeypatch):
    """Cross-validation: every fold indexes the run's one pool entry; its average and max
    pooling are computed once, in one pass over all its rows, and each fold reads its own
    rows of them, numbers unchanged. Pooling keeps nothing of the entry in RAM."""
    from bench.search import features

    monkeypatch.setattr(features, "_MATRICES", type(features._MATRICES)())
    monkeypatch.setattr(features, "_POOLED", type(features._POOLED)())
    passes = []
    original = features._pool_to_files
    monkeypatch.setattr(features, "_pool_to_files", lambda rows, reduces, *folder: passes.append(
        (len(rows), len(reduces))) or original(rows, reduces, *folder))
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(40, 3, 3, 5)).astype(np.float16)
    entry = _entry(tmp_path, pool, "pool")
    folds = [np.array([5, 1, 30, 2]), np.array([39, 0, 17]), np.arange(8, 20)]
    for reduce in (np.mean, np.max):
        for fold in folds:
            got = pooled(FeatureRows.of(entry, fold), reduce)
            np.testing.assert_array_equal(np.asarray(got), reduce(pool[fold].astype(np.float32), axis=(1, 2)))
    assert passes == [(40, 2)]  # the whole entry, once, for both poolings
    assert not features._MATRICES
    views = _entry(tmp_path, rng.normal(size=(6, 3, 3, 5)).astype(np.float16), "views")
    both = FeatureRows([(entry, folds[0]), (views, None)])
    np.testing.assert_allclose(np.asarray(pooled(both, np.mean)),
                               np.asarray(both).mean(axis=(1, 2)), rtol=1e-6)
    assert passes == [(40, 2), (6, 2)]
    # what is kept is bounded in bytes: with no room, only the newest pooled entry stays
    monkeypatch.setattr(features, "POOLED_BYTES", 0)
    third = _entry(tmp_path, rng.normal(size=(5, 3, 3, 5)).astype(np.float16), "third")
    pooled(FeatureRows.of(third, np.array([1])), np.max)
    assert len(features._POOLED) == 1
    pooled(FeatureRows.of(entry, folds[0]), np.mean)
    assert passes == [(40, 2), (6, 2), (5, 2), (40, 2)] and len(features._POOLED) == 1


def test_the_folds_of_one_entry_widen_it_to_float32_once_and_get_their_own_rows(tmp_path, monkeypatch):
    """A numpy-trained head reads its split whole (:func:`matrix`): the entry is widened
    once per process, each fold takes its rows of it, numbers as widening them alone; an
    entry over the kept bytes is read as its rows are asked for and not kept."""
    from bench.search import features
    from bench.search.features import matrix

    monkeypatch.setattr(features, "_MATRICES", type(features._MATRICES)())
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(30, 2, 2, 4)).astype(np.float16)
    entry = _entry(tmp_path, pool, "pool")
    folds = [np.array([7, 1, 29, 2]), np.arange(10, 25), np.array([0])]
    for fold in folds:
        got = matrix(FeatureRows.of(entry, fold))
        np.testing.assert_array_equal(got, pool[fold].astype(np.float32).reshape(len(fold), -1))
        assert got.flags.c_contiguous and got.dtype == np.float32
        got[:] = 0  # a fold's rows are its own: the kept entry is not written through them
    assert len(features._MATRICES) == 1  # widened once, for the three folds
    kept = next(iter(features._MATRICES.values()))
    np.testing.assert_array_equal(kept, pool.astype(np.float32).reshape(30, -1))
    with pytest.raises(ValueError):
        kept[0, 0] = 1.0  # read-only: shared by every fold
    # read in batches: the rows of the kept entry, gathered a batch at a time
    later = matrix(FeatureRows.of(entry, folds[1]), gather_later=True)
    assert isinstance(later, features.MatrixRows) and later.shape == (15, 16) and len(features._MATRICES) == 1
    expected = pool[folds[1]].astype(np.float32).reshape(15, -1)
    np.testing.assert_array_equal(later[np.array([3, 0, 14])], expected[[3, 0, 14]])
    np.testing.assert_array_equal(later[2:5], expected[2:5])
    np.testing.assert_array_equal(np.asarray(later), expected)
    # two segments (the entry's rows, then another entry whole) read in order
    views = _entry(tmp_path, rng.normal(size=(3, 2, 2, 4)).astype(np.float16), "views")
    both = matrix(FeatureRows([(entry, folds[0]), (views, None)]))
    np.testing.assert_array_equal(both, np.asarray(FeatureRows([(entry, folds[0]), (views, None)])).reshape(7, -1))
    assert len(features._MATRICES) == 2
    # bounded in bytes: an entry larger than the bound is read row by row and not kept
    monkeypatch.setattr(features, "MATRIX_BYTES", 4 * 30 * 16 - 1)
    features._MATRICES.clear()
    got = matrix(FeatureRows.of(entry, folds[1]))
    np.testing.assert_array_equal(got, pool[folds[1]].astype(np.float32).reshape(len(folds[1]), -1))
    assert not features._MATRICES


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise")
def test_reading_a_whole_memory_mapped_entry_keeps_resident_memory_flat(tmp_path):
    """Two passes over a 256 MiB entry, batch by batch, as epochs read it: without the
    release the whole file would end up resident in the process."""
    n, width = 4096, 32768  # float16 rows of 64 KiB
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, width))
    big[:] = 1.0
    big.flush()
    del big
    rows = FeatureRows.of(np.load(path, mmap_mode="r"))
    before = _rss_bytes()
    peak = before
    for _ in range(2):
        for start in range(0, n, 128):
            assert rows[start : start + 128].sum() == 128 * width
            peak = max(peak, _rss_bytes())
    assert peak - before < 128 * 2**20, f"resident memory grew by {(peak - before) / 2**20:.0f} MiB"


@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_a_memory_mapped_cache_gives_the_same_trial_as_the_in_ram_path(tmp_path, pooling):
    import keras_tuner as kt

    rng = np.random.default_rng(1)
    y_train, y_val = rng.integers(0, 2, 60), rng.integers(0, 2, 20)
    x_train = (rng.normal(size=(60, 2, 2, 8)) + y_train[:, None, None, None]).astype(np.float16)
    x_val = (rng.normal(size=(20, 2, 2, 8)) + y_val[:, None, None, None]).astype(np.float16)
    mapped = TrialData({0: FeatureRows.of(_entry(tmp_path, x_train, "t"))}, y_train,
                       {0: FeatureRows.of(_entry(tmp_path, x_val, "v"))}, y_val, n_classes=2, batch_size=16)
    in_ram = TrialData({0: x_train.astype(np.float32)}, y_train, {0: x_val.astype(np.float32)}, y_val,
                       n_classes=2, batch_size=16)
    histories = []
    for data in (mapped, in_ram):
        hp = kt.HyperParameters()
        hp.Fixed("pooling", pooling)
        hp.Fixed("dense_layers", 1)
        hp.Fixed("units_0", 32)
        hp.Fixed("dropout_0", 0.0)
        hp.Fixed("learning_rate", 1e-2)
        hypermodel = BenchHyperModel([0], {0: (2, 2, 8)}, data, top_factory=None)
        import keras

        keras.utils.set_random_seed(3)
        model = hypermodel.build(hp)
        histories.append(hypermodel.fit(hp, model, epochs=4, seed=3)["history"])
    assert histories[0] == histories[1]
    assert max(histories[0]["val_auc"]) > 0.8  # it learned something: the comparison is not of two no-ops


def _anon_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:"))


@pytest.mark.skipif(not hasattr(__import__("os"), "pread"), reason="needs pread")
def test_pooled_vectors_of_a_memory_mapped_split_stay_out_of_ram(tmp_path):
    """Avg and max pooling of a 128 MiB entry: in RAM as float32 they would be 62.5 MiB
    each (what grew at 50,000 images); read from a temporary file, the process's private
    memory grows by a few chunks at most."""
    n, shape = 8000, (2, 2, 2048)
    path = tmp_path / "cache" / "train.npy"
    path.parent.mkdir()
    entry = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, *shape))
    for start in range(0, n, 1000):
        entry[start : start + 1000] = (np.arange(start, start + 1000) % 97)[:, None, None, None] + np.arange(4).reshape(
            1, 2, 2, 1).astype(np.float16)
    entry.flush()
    del entry
    mapped = np.load(path, mmap_mode="r")
    y = np.arange(n) % 2
    data = TrialData({0: FeatureRows.of(mapped)}, y, {0: FeatureRows.of(mapped, np.arange(0, n, 7))}, y[::7],
                     n_classes=2)
    pick = np.array([0, 1, 2, 3, 4000, 4002, n - 1])
    expected = {"avg": np.mean, "max": np.max}
    before = _anon_bytes()
    peak = before
    for pooling, reduce in expected.items():
        x, x_val = data.features(0, pooling)
        assert x.shape == (n, 2048) and x_val.shape == (len(range(0, n, 7)), 2048)
        peak = max(peak, _anon_bytes())
        for start in range(0, n, 256):  # an epoch's reads
            x[np.sort(np.random.default_rng(start).choice(n, 32, replace=False))]
            x_val[start // 7 : start // 7 + 256]
        peak = max(peak, _anon_bytes())
        want = reduce(mapped[pick].astype(np.float32), axis=(1, 2))
        np.testing.assert_array_equal(x[pick], want)  # scattered rows and runs of them
        np.testing.assert_array_equal(x[4000:4003], reduce(mapped[4000:4003].astype(np.float32), axis=(1, 2)))
        np.testing.assert_array_equal(x_val[[1, 2]], reduce(mapped[[7, 14]].astype(np.float32), axis=(1, 2)))
    assert peak - before < 40 * 2**20, f"private memory grew by {(peak - before) / 2**20:.0f} MiB"


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_a_fold_predicts_its_held_out_rows_in_numpy_as_its_keras_model_does(tmp_path, pooling):
    """A numpy-trained head predicts a fold's held-out rows (memory-mapped, pooled by the
    entry's memo) in numpy: the same probabilities as the trial's Keras model, to float32
    rounding, and the fold's evaluation takes either."""
    import keras
    import keras_tuner as kt

    from bench.evaluate.final import _as_probabilities, predict_proba
    from bench.search.hypermodel import BenchHyperModel, TrialData, _after_pooling

    rng = np.random.default_rng(5)
    pool = rng.normal(size=(40, 3, 3, 8)).astype(np.float16)
    entry = _entry(tmp_path, pool, "pool")
    y = rng.integers(0, 2, 40)
    data = TrialData({0: FeatureRows.of(entry, np.arange(0, 30))}, y[:30], {0: FeatureRows.of(entry, np.arange(30, 35))},
                     y[30:35], n_classes=2, batch_size=8)
    hp = kt.HyperParameters()
    for name, value in {"pooling": pooling, "dense_layers": 1, "units_0": 16, "dropout_0": 0.3,
                        "learning_rate": 1e-2, "unfreeze": 0}.items():
        hp.Fixed(name, value)
    hypermodel = BenchHyperModel([0], {0: (3, 3, 8)}, data, top_factory=None)
    keras.utils.set_random_seed(2)
    model = hypermodel.build(hp)
    weights = _after_pooling(model).get_weights()
    held_out = FeatureRows.of(entry, np.array([39, 35, 37, 36, 38]))  # a fold's rows, in its own order
    by_numpy = _as_probabilities(hypermodel.predict_rows(hp, weights, held_out), 2)
    by_keras = predict_proba(model, held_out, 2)
    np.testing.assert_allclose(by_numpy, by_keras, rtol=1e-5, atol=1e-6)
    assert by_numpy.shape == (5, 2) and np.allclose(by_numpy.sum(axis=1), 1.0)
    assert np.ptp(by_numpy[:, 1]) > 1e-4  # the rows give different outputs: not a constant compared
