"""``bench suite --demo``: a suite of synthetic datasets of graded difficulty, runnable anywhere.

Four phantom datasets (:mod:`bench.data.phantom`), from easy to hard: large bright
tumours; small faint ones; a 3:1 class imbalance; and three classes (no tumour, solid,
ring-enhancing). They are generated once into the demo cache (``$BENCH_CACHE`` or
``~/.cache/bench``) and reused; the suite file is written into the suite folder, so the
demo also shows what a suite file looks like.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.demo import MARKER_NAME, PhantomClass, default_cache_dir, make_phantom_data, read_demo_marker
from bench.data.phantom import LesionStyle

GENERATOR = "bench.suite-demo v2"
#: Image size of the demo datasets (px); the runs use it as --image-size.
SIZE = 72
NONE = None
#: name -> (classes, what makes it hard), easiest first.
DATASETS: dict[str, tuple[list[PhantomClass], str]] = {
    "large-lesions": ([PhantomClass("no_tumor", 80, NONE), PhantomClass("tumor", 80, LesionStyle(0.22, 0.7, 1.0))],
                      "large, bright solid tumours"),
    "faint-lesions": ([PhantomClass("no_tumor", 80, NONE),
                       PhantomClass("tumor", 80, LesionStyle(0.12, 0.2, 0.45, None))],
                      "small, faint tumours of every kind (solid, ring, dark)"),
    "imbalanced": ([PhantomClass("no_tumor", 120, NONE), PhantomClass("tumor", 40, LesionStyle(0.16, 0.45, 0.8))],
                   "one tumour for three normal scans, of middling size and contrast"),
    "three-class": ([PhantomClass("no_tumor", 60, NONE), PhantomClass("solid", 60, LesionStyle(0.18, 0.5, 0.9)),
                     PhantomClass("ring", 60, LesionStyle(0.18, 0.5, 0.9, "ring"))],
                    "three classes: no tumour, solid, ring-enhancing"),
}
#: The shared run options of the demo suite: the README's first command's three backbones,
#: random weights, one split each.
RUN_OPTIONS = {
    "backbones": "densenet121,vgg16,xception", "weights": "none", "image-size": SIZE,
    "max-trials": 2, "epochs": 10, "max-unfreeze": 0, "baseline": False,
}


def demo_datasets(cache_dir: Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Every demo dataset, generated on first use into ``<cache>/suite-demo-<version>-seed<seed>/``."""
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / \
        f"suite-demo-{GENERATOR.rsplit(' ', 1)[-1]}-seed{seed}"
    out = {}
    for name, (classes, _) in DATASETS.items():
        folder = root / name
        marker = read_demo_marker(folder)
        if marker is None or marker.get("generator") != GENERATOR:
            if folder.exists() and not (folder / MARKER_NAME).exists():
                import shutil

                shutil.rmtree(folder)  # an interrupted write of bench's own cache
            if not folder.exists():
                make_phantom_data(folder, classes, SIZE, seed, {"dataset": name, "generator": GENERATOR})
        out[name] = folder
    return out


def demo_toml(datasets: dict[str, Path], extra: dict | None = None) -> str:
    """The demo's suite file: the shared options, then one table per dataset."""
    lines = ["# bench suite --demo: synthetic phantom datasets of graded difficulty", "[run]"]
    for key, value in RUN_OPTIONS.items():
        lines.append(f"{key} = {_toml(value)}")
    for name, path in datasets.items():
        lines += ["", "[[datasets]]", f"# {DATASETS[name][1] if name in DATASETS else 'added to the demo'}",
                  f"name = {_toml(name)}", f"path = {_toml(str(path))}"]
    for name, path in (extra or {}).items():
        lines += ["", "[[datasets]]", f"name = {_toml(name)}", f"path = {_toml(str(path))}"]
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
