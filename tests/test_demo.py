"""The synthetic demo dataset: layout, determinism, lesions, caching, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench.data.demo as demo
from bench.data.demo import (
    default_cache_dir,
    demo_data_dir,
    demo_folder_name,
    is_demo_data,
    make_demo_data,
    read_demo_marker,
    render_slice,
)
from bench.errors import BenchError

N, SIZE = 6, 48  # tiny and fast: 12 images


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo") / "data", n=N, size=SIZE, seed=0)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.int16)


def lesion_pair(seed: int, index: int, size: int, conspicuous: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tumour image ``index`` and the same anatomy rendered without its lesion."""
    with_lesion = render_slice(np.random.default_rng([seed, 1, index]), size, lesion=True, conspicuous=conspicuous)
    without = render_slice(np.random.default_rng([seed, 1, index]), size, lesion=False)
    return with_lesion.astype(np.int16), without.astype(np.int16)


# --- layout -----------------------------------------------------------------------------


def test_layout_counts_and_names(demo_folder):
    assert sorted(p.name for p in demo_folder.iterdir()) == [".bench-demo", "no_tumor", "tumor"]
    for cls in ("no_tumor", "tumor"):
        names = sorted(p.name for p in (demo_folder / cls).iterdir())
        assert names == [f"{cls}_{i:04d}.png" for i in range(N)]


def test_marker_says_synthetic(demo_folder):
    marker = json.loads((demo_folder / ".bench-demo").read_text(encoding="utf-8"))
    expected = {"synthetic": True, "n": N, "size": SIZE, "seed": 0, "generator": "bench.demo v2"}
    assert marker == expected
    assert is_demo_data(demo_folder)
    assert read_demo_marker(demo_folder) == expected


def test_no_partial_folder_left_beside_dest(demo_folder):
    assert [p.name for p in demo_folder.parent.iterdir()] == ["data"]


def test_images_are_square_greyscale_heads_on_black(demo_folder):
    for path in sorted(demo_folder.rglob("*.png")):
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.mode == "L"
            assert img.size == (SIZE, SIZE)
        a = pixels(path)
        corners = np.concatenate([a[:3, :3], a[:3, -3:], a[-3:, :3], a[-3:, -3:]]).ravel()
        centre = a[SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4]
        assert corners.mean() < 25, f"{path.name}: background is not dark"
        assert centre.mean() > 2 * corners.mean() + 30, f"{path.name}: no head in the middle"
        assert a.max() > 150, f"{path.name}: no bright skull ring"


def test_smallest_size_works(tmp_path):
    folder = make_demo_data(tmp_path / "small", n=5, size=32)
    for path in folder.rglob("*.png"):
        with Image.open(path) as img:
            assert img.size == (32, 32)


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = make_demo_data(tmp_path / "a", n=5, size=SIZE, seed=3)
    b = make_demo_data(tmp_path / "b", n=5, size=SIZE, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_another_seed_gives_other_images(tmp_path):
    a = make_demo_data(tmp_path / "a", n=5, size=SIZE, seed=0)
    b = make_demo_data(tmp_path / "b", n=5, size=SIZE, seed=1)
    for path in sorted(a.rglob("*.png")):
        assert path.read_bytes() != (b / path.relative_to(a)).read_bytes(), path.name


def test_images_within_a_class_differ(demo_folder):
    for cls in ("no_tumor", "tumor"):
        arrays = [pixels(p) for p in sorted((demo_folder / cls).glob("*.png"))]
        for i in range(len(arrays)):
            for j in range(i + 1, len(arrays)):
                assert np.abs(arrays[i] - arrays[j]).mean() > 5, (cls, i, j)


# --- the lesion is what separates the classes ------------------------------------------


def test_files_are_the_rendered_slices(demo_folder):
    for i in range(N):
        no = render_slice(np.random.default_rng([0, 0, i]), SIZE, lesion=False)
        yes = render_slice(np.random.default_rng([0, 1, i]), SIZE, lesion=True, conspicuous=True)
        assert np.array_equal(pixels(demo_folder / "no_tumor" / f"no_tumor_{i:04d}.png"), no)
        assert np.array_equal(pixels(demo_folder / "tumor" / f"tumor_{i:04d}.png"), yes)


def test_every_tumor_file_holds_a_visible_local_lesion(demo_folder):
    for i in range(N):
        on_disk = pixels(demo_folder / "tumor" / f"tumor_{i:04d}.png")
        _, without = lesion_pair(0, i, SIZE, conspicuous=True)
        changed = np.abs(on_disk - without) > 8
        assert changed.any(), f"tumor_{i:04d}: the lesion vanished"
        # Local: a blob (with its edema and mass effect), not the whole head.
        assert changed.mean() < 0.4, f"tumor_{i:04d}: lesion covers {changed.mean():.0%}"
        inner = np.zeros_like(changed)
        inner[2:-2, 2:-2] = True
        assert not (changed & ~inner).any(), f"tumor_{i:04d}: lesion touches the image border"


def test_benchmark_lesions_range_from_subtle_to_obvious():
    """The default draws (the copy benchmark's phantoms): subtle to obvious."""
    contrasts, areas = [], []
    for i in range(40):
        with_lesion, without = lesion_pair(7, i, SIZE)
        diff = np.abs(with_lesion - without)
        changed = diff > 8
        assert changed.any(), f"lesion {i} vanished"
        contrasts.append(diff[changed].mean())
        areas.append(changed.mean())
    assert min(contrasts) >= 10  # always there,
    assert min(contrasts) < 25  # sometimes subtle,
    assert max(contrasts) > 40  # sometimes obvious,
    assert max(areas) / min(areas) > 10  # and of varied size.


def lesion_sizes(conspicuous: bool, size: int = 96, count: int = 30) -> tuple[list, list]:
    contrasts, areas = [], []
    for i in range(count):
        with_lesion, without = lesion_pair(7, i, size, conspicuous=conspicuous)
        changed = (with_lesion - without) > 8
        contrasts.append(float((with_lesion - without)[changed].mean()) if changed.any() else 0.0)
        areas.append(float(changed.mean()))
    return contrasts, areas


def test_demo_lesions_are_all_obvious_and_larger_than_the_benchmarks():
    """The demo must be learnable by a small random network (README's first command): every
    demo lesion is a bright mass of at least ~1 % of the image, half as large and bright again, in the median, as the default draws."""
    contrasts, areas = lesion_sizes(conspicuous=True)
    subtle_contrasts, subtle_areas = lesion_sizes(conspicuous=False)
    assert min(contrasts) > 45, contrasts
    assert min(areas) > 0.01, areas
    assert min(subtle_contrasts) < 25  # the benchmark keeps its subtle lesions
    assert np.median(areas) > 1.5 * np.median(subtle_areas)
    assert np.median(contrasts) > 1.5 * np.median(subtle_contrasts)


def test_tumor_class_deviates_more_from_lesion_free_anatomy(demo_folder):
    """The class-level statistic a user would notice: without lesions both would be 0."""

    def deviation(cls: str, label: int, i: int) -> float:
        on_disk = pixels(demo_folder / cls / f"{cls}_{i:04d}.png")
        twin = render_slice(np.random.default_rng([0, label, i]), SIZE, lesion=False)
        return float(np.abs(on_disk - twin).mean())

    no = [deviation("no_tumor", 0, i) for i in range(N)]
    yes = [deviation("tumor", 1, i) for i in range(N)]
    assert max(no) == 0.0
    assert min(yes) > 0.05


# --- marker and cache --------------------------------------------------------------------


def test_is_demo_data_needs_the_marker(tmp_path, demo_folder):
    assert is_demo_data(demo_folder)
    assert not is_demo_data(tmp_path)
    assert not is_demo_data(tmp_path / "missing")
    (tmp_path / ".bench-demo").write_text("not json", encoding="utf-8")
    assert is_demo_data(tmp_path)
    assert read_demo_marker(tmp_path) is None


def test_cache_folder_name_encodes_parameters():
    assert demo_folder_name() == "demo-v2-n200-s128-seed0"
    assert demo_folder_name(n=5, size=32, seed=2) == "demo-v2-n5-s32-seed2"


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_demo_data_dir_generates_once_then_reuses(tmp_path):
    cache = tmp_path / "cache"
    first = demo_data_dir(cache, n=5, size=32, seed=0)
    assert first == cache / "demo-v2-n5-s32-seed0"
    assert is_demo_data(first)
    before = mtimes(first)
    assert len([k for k in before if k.endswith(".png")]) == 10

    second = demo_data_dir(cache, n=5, size=32, seed=0)
    assert second == first
    assert mtimes(second) == before  # nothing rewritten
    assert sorted(p.name for p in cache.iterdir()) == ["demo-v2-n5-s32-seed0"]


def test_demo_data_dir_keys_on_parameters(tmp_path):
    a = demo_data_dir(tmp_path, n=5, size=32, seed=0)
    b = demo_data_dir(tmp_path, n=5, size=32, seed=1)
    assert a != b
    first = "tumor/tumor_0000.png"
    assert (a / first).read_bytes() != (b / first).read_bytes()


def test_demo_data_dir_regenerates_a_folder_without_marker(tmp_path):
    half = tmp_path / "demo-v2-n5-s32-seed0"
    (half / "tumor").mkdir(parents=True)
    (half / "tumor" / "tumor_0000.png").write_bytes(b"truncated")
    folder = demo_data_dir(tmp_path, n=5, size=32, seed=0)
    assert folder == half
    assert is_demo_data(folder)
    with Image.open(folder / "tumor" / "tumor_0000.png") as img:
        assert img.size == (32, 32)
    assert len(list(folder.rglob("*.png"))) == 10


def test_cache_location_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    folder = demo_data_dir(n=5, size=32)
    assert folder == tmp_path / "env-cache" / "demo-v2-n5-s32-seed0"

    monkeypatch.delenv("BENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "bench"


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"n": 4}, "n=4"),
        ({"n": 0}, "n=0"),
        ({"n": 2.5}, "n=2.5"),
        ({"n": True}, "n=True"),
        ({"size": 31}, "size=31"),
        ({"size": 1025}, "size=1025"),
        ({"size": "128"}, "size='128'"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_bad_parameters_are_bench_errors(tmp_path, kwargs, names):
    with pytest.raises(BenchError) as info:
        make_demo_data(tmp_path / "out", **kwargs)
    message = str(info.value)
    assert names in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(BenchError):
        demo_data_dir(tmp_path / "cache", **kwargs)


def test_non_empty_destination_is_refused(tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine", encoding="utf-8")
    expected = "already exists and is not empty; choose another folder or delete it"
    with pytest.raises(BenchError, match=expected):
        make_demo_data(dest, n=5, size=32)
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_existing_demo_folder_is_not_overwritten(tmp_path):
    dest = make_demo_data(tmp_path / "d", n=5, size=32)
    with pytest.raises(BenchError, match="already exists"):
        make_demo_data(dest, n=5, size=32)


def test_destination_that_is_a_file_is_refused(tmp_path):
    dest = tmp_path / "file.png"
    dest.write_bytes(b"x")
    with pytest.raises(BenchError, match="is a file"):
        make_demo_data(dest, n=5, size=32)


def test_empty_destination_is_used(tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    assert make_demo_data(dest, n=5, size=32) == dest
    assert is_demo_data(dest)


def test_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = demo.render_slice

    def flaky(rng, size, lesion, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk on fire")
        return real(rng, size, lesion, **kwargs)

    monkeypatch.setattr(demo, "render_slice", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        make_demo_data(tmp_path / "out", n=5, size=32)
    assert list(tmp_path.iterdir()) == []


# --- the README's first command can learn it ---------------------------------------------


@pytest.mark.slow
def test_random_densenet_features_separate_demo_lesions_but_not_subtle_ones():
    """Why the first command uses DenseNet121 on v2 lesions (benchmarks/demo_learnability.py):
    a logistic regression on its random features separates the demo's conspicuous tumours
    (AUC > 0.85 at 40 images per class) and not the subtle ones (< 0.75). If the generator
    or the random backbone changes so that the demo is not learnable, this fails."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_learnability.py"
    spec = importlib.util.spec_from_file_location("demo_learnability", path)
    bench_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_module)
    scores = {}
    for conspicuous in (True, False):
        x, y = bench_module.images(40, conspicuous)
        avg, _ = bench_module.random_features("densenet121", x)
        scores[conspicuous] = bench_module.cv_auc(avg, y)
    assert scores[True] > 0.85, scores
    assert scores[False] < 0.75, scores
