"""Build the external-validation example of docs/calibration.md from ../shared/data/brain_mri.

    .venv/bin/python benchmarks/external_demo.py /tmp/external_demo

writes two folders (symbolic links to the original files, plus a few new files):

* ``train/``: two thirds of the scans (every file whose position in its class folder is
  not divisible by 3): what ``bench run`` trains, validates and tests on;
* ``hospital_b/``: the other third, as a stand-in for a second site, plus 12 copies of
  ``train/`` scans re-processed the way merged public datasets hold them (mirrored,
  contrast-changed, gamma-changed, re-encoded; ``bench.data.reprocess``). ``bench evaluate``
  must find those copies (and any copies the original data already holds across the two
  thirds) and exclude them.

It says nothing about another hospital's scanners: the two folders come from one dataset.
It shows what ``bench evaluate`` does, not how well a model transfers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data.images import open_rgb
from bench.data.reprocess import FAMILIES

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain_mri"
COPY_FAMILIES = ("mirror/rotate", "contrast/brightness", "gamma", "jpeg")


def build(data: Path, out: Path, copies: int = 12, seed: int = 0) -> tuple[int, int, int]:
    """(train files, external files, re-processed copies added to the external folder)."""
    rng = np.random.default_rng(seed)
    n_train = n_external = 0
    train_files: list[Path] = []
    for class_dir in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for part in ("train", "hospital_b"):
            (out / part / class_dir.name).mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        for k, f in enumerate(files):
            part = "hospital_b" if k % 3 == 0 else "train"
            link = out / part / class_dir.name / f.name
            if not link.exists():
                os.symlink(f.resolve(), link)
            if part == "train":
                n_train += 1
                train_files.append(f)
            else:
                n_external += 1
    picked = rng.choice(len(train_files), size=min(copies, len(train_files)), replace=False)
    for n, i in enumerate(sorted(picked)):
        source = train_files[i]
        family = COPY_FAMILIES[n % len(COPY_FAMILIES)]
        copy = FAMILIES[family](open_rgb(source)[0], rng)
        copy.save(out / "hospital_b" / source.parent.name / f"copy_{n:02d}_{family.split('/')[0]}.png")
    return n_train, n_external, len(picked)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    out = Path(sys.argv[1])
    n_train, n_external, n_copies = build(DEFAULT_DATA, out)
    print(f"{out / 'train'}: {n_train} scans; {out / 'hospital_b'}: {n_external} other scans + {n_copies} "
          f"re-processed copies of training scans ({', '.join(COPY_FAMILIES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
