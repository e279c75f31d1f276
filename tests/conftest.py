"""Shared fixtures: seeds, tiny image folders, the real brain MRI data."""

from __future__ import annotations

import os

#: Thread pools capped in the workers of ``pytest -n N`` (README): the workers share the
#: cores, so each runs TensorFlow and BLAS on its share (one thread each on 2 cores, 2
#: workers); otherwise each would start a pool as wide as the machine, and their threads
#: would take turns on the same cores. Set before numpy and TensorFlow start their pools.
THREAD_CAPS: dict[str, str] = {}
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if _name not in os.environ:
            os.environ[_name] = THREAD_CAPS[_name] = _threads


def user_environment() -> dict[str, str]:
    """The environment without :data:`THREAD_CAPS`: what a user's shell gives a process."""
    return {k: v for k, v in os.environ.items() if k not in THREAD_CAPS}

import random
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BRAIN_MRI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brain_mri"


@pytest.fixture(autouse=True)
def _seed():
    """Seed every generator a test may touch (never at import time)."""
    random.seed(0)
    np.random.seed(0)
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(0)
    yield


#: Test modules that take longest on one worker (their module fixtures and end-to-end runs),
#: longest first. They are collected first so that ``pytest -n 2 --dist loadscope`` (README)
#: hands them out before the quick ones, and the workers finish together instead of one
#: waiting while the other runs a long module it started last.
LONGEST_FIRST = ("test_suite", "test_search", "test_export", "test_kill_anywhere", "test_crossval", "test_resume",
                 "test_bad_input", "test_backbones", "test_serve", "test_weights_axis", "test_mlflow_tracking",
                 "test_dicom_privacy", "test_cli", "test_demo", "test_distributed")


def pytest_collection_modifyitems(session, config, items) -> None:
    """Put the modules of :data:`LONGEST_FIRST` first, in that order (the rest keep theirs)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def noise_image(rng: np.random.Generator, size: int = 48, mode: str = "RGB") -> Image.Image:
    """A random, blocky image: distinct content, so no accidental near duplicates."""
    blocks = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(blocks, "RGB").resize((size, size), Image.Resampling.NEAREST)
    return img.convert(mode) if mode != "RGB" else img


def scan_like(seed: int, size: int = 192) -> Image.Image:
    """A scan-like greyscale picture: dark background, a bright outline, random inner structures.

    Distinct seeds give distinct pictures of the same overall layout (as two patients' scans are).
    """
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng([seed, 17])
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    m = size * 0.08
    draw.ellipse([m, m * 1.2, size - m, size - m * 1.2], fill=int(rng.integers(150, 200)), outline=240,
                 width=max(2, size // 60))
    for _ in range(25):
        x, y = rng.uniform(size * 0.2, size * 0.8, 2)
        rx, ry = rng.uniform(size * 0.02, size * 0.12, 2)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=int(rng.integers(20, 255)))
    for _ in range(12):
        x0, y0, x1, y1 = rng.uniform(size * 0.2, size * 0.8, 4)
        draw.line([x0, y0, x1, y1], fill=int(rng.integers(0, 255)), width=int(rng.integers(1, 4)))
    return img.filter(ImageFilter.GaussianBlur(0.8))


def make_folder(root: Path, counts: dict[str, int], size: int = 48, seed: int = 0, fmt: str = "PNG") -> Path:
    """Create ``root/<class>/img_<i>.png`` with ``counts[class]`` distinct images."""
    rng = np.random.default_rng(seed)
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise_image(rng, size).save(root / label / f"img_{i:03d}.{ext}", format=fmt)
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two classes, 12 and 10 distinct images."""
    return make_folder(tmp_path / "data", {"cat": 12, "dog": 10})


@pytest.fixture
def brain_mri() -> Path:
    if not BRAIN_MRI.is_dir():
        pytest.skip(f"real data not found at {BRAIN_MRI}")
    return BRAIN_MRI


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny finished run (:func:`test_export.make_tiny_run`), built once per session and
    shared by the export, predict, evaluate, Grad-CAM, serve and tracking tests; they
    must not change it."""
    from test_export import make_tiny_run

    return make_tiny_run(tmp_path_factory.getbasetemp() / "tiny_export_run")


@pytest.fixture(scope="session")
def warm():
    """`bench` commands in processes of their own, forked from one process that has imported
    TensorFlow (tests/warm_bench.py): for tests that kill a command or need a fresh process."""
    from warm_bench import WarmBench

    with WarmBench() as helper:
        yield helper


@pytest.fixture(scope="session")
def brain_index():
    """``scan(brain_mri)``, once for the session: its copy links are cached inside it, so
    every test that groups the real data after the first pays nothing for it. Tests must
    not change it."""
    if not BRAIN_MRI.is_dir():
        pytest.skip(f"real data not found at {BRAIN_MRI}")
    from bench.data.scan import scan

    return scan(BRAIN_MRI)


def completed_trials(run: Path, pattern: str = "mobilenet_v2/tuner/trial_*/trial.json") -> dict[str, float]:
    """Trials KerasTuner has recorded as completed (``pattern`` below ``run``) -> mtime of
    their bench history file, keyed by the trial folder relative to ``run``.

    (bench_trial.json is written inside the trial, just before KerasTuner marks it done:
    a trial killed in between is the in-flight one and legitimately runs again.)
    """
    import json

    done = {}
    for trial_json in run.glob(pattern):
        try:
            status = json.loads(trial_json.read_text()).get("status")
        except ValueError:  # being written right now
            continue
        history = trial_json.parent / "bench_trial.json"
        if status == "COMPLETED" and history.exists():
            done[str(trial_json.parent.relative_to(run))] = history.stat().st_mtime
    return done


class TookTooLong(BaseException):
    """Raised by :func:`deadline` (a BaseException: bench's own handlers must not swallow it)."""


@contextmanager
def deadline(seconds: int):
    """Fail the test instead of hanging it when the body runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TookTooLong(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
