"""Cross-validation cost: ``bench run --cv 5`` against the same run on one split.

Run from the repository root::

    .venv/bin/python benchmarks/cv_speed.py                       # frozen Xception@224, 10 x 10
    .venv/bin/python benchmarks/cv_speed.py --quick               # MobileNetV2@96, 3 trials x 3 epochs
    .venv/bin/python benchmarks/search_speed.py --json naive.json # first, for the naive comparison
    .venv/bin/python benchmarks/cv_speed.py --naive-json naive.json

Both runs are real ``bench run`` processes on ``../shared/data/brain_mri`` (``--weights
none``, frozen backbone, no baseline, no export), in a temporary folder. Printed figures:
wall time of each, their ratio [target <= 1.4x: one backbone pass serves all folds],
what each run records (its caching lines, its BatchNorm calibration line (``--weights none``:
a pass of the backbone over 32 training images in training mode, which the features depend
on) and the leaderboard's search seconds, which include both) [one split: search seconds /
the backbone's passes over images <= 1.3x; the ratio to the caching lines alone beside it],
peak RSS of each process and the peak within each outer fold of the CV run [flat across
folds], and, with ``--naive-json`` (the output of ``search_speed.py``, whose naive
projection trains the full image model with the backbone inside), five naive searches
against the CV run [target >= 100x]. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _docs import add_option, recording  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain_mri"
FULL = ["--backbones", "xception", "--image-size", "224", "--max-trials", "10", "--epochs", "10"]
QUICK = ["--backbones", "mobilenet_v2", "--image-size", "96", "--max-trials", "3", "--epochs", "3"]
COMMON = ["--weights", "none", "--max-unfreeze", "0", "--no-baseline", "--no-export"]  # the default tuner
FOLD_LINE = re.compile(r"cv repeat (\d+)/\d+, fold (\d+)/\d+")
CACHE_LINE = re.compile(r": cached .* features of \d+ images in ([\d.]+)s")
CALIBRATION_LINE = re.compile(r": set BatchNorm statistics from \d+ training images .* in ([\d.]+)s")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(args: list[str], label: str) -> dict:
    """One ``bench run`` process: wall seconds, peak RSS, and the peak RSS within each
    stage its log announces (outer folds; the final model)."""
    cmd = [sys.executable, "-m", "bench.cli", "run", *args]
    print(f"[{label}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stage, peaks, done = "start", {}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            value = rss_mib(proc.pid)
            if value is not None:
                peaks[stage] = max(peaks.get(stage, 0.0), value)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tail, caching, calibration = [], [], []
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
        cached, calibrated = CACHE_LINE.search(line), CALIBRATION_LINE.search(line)
        if cached:
            caching.append(float(cached.group(1)))
        if calibrated:
            calibration.append(float(calibrated.group(1)))
        match = FOLD_LINE.search(line)
        if match:
            stage = f"repeat {match.group(1)} fold {match.group(2)}"
        elif "searching it once more" in line:
            stage = "final model"
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{''.join(tail)}")
    return {"wall_s": time.perf_counter() - t0, "peak_mib": max(peaks.values()), "stages": peaks,
            "caching_s": sum(caching), "calibration_s": sum(calibration)}


def recorded(results: Path, name: str) -> dict:
    """What the run itself records: the backbone row's search seconds (leaderboard)."""
    board = json.loads((results / name / "leaderboard.json").read_text())
    row = next(r for r in board if r.get("kind", "backbone") == "backbone")
    return {"search_seconds": float(row.get("search_seconds") or 0.0), "cv_images": row.get("cv_images")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--naive-json", type=Path, help="search_speed.py --json output (naive projection)")
    add_option(parser)
    opts = parser.parse_args()
    with recording("cv_speed_quick" if opts.quick else "cv_speed", opts.write_docs):
        size = QUICK if opts.quick else FULL
        with tempfile.TemporaryDirectory(prefix="bench-cv-speed-") as tmp:
            out = ["--data", str(opts.data), *size, *COMMON, "--out", f"{tmp}/results", "--reports", f"{tmp}/reports"]
            single = run([*out, "--name", "single"], "one split")
            cv = run([*out, "--name", "cv", "--cv", str(opts.cv)], f"--cv {opts.cv}")
            single.update(recorded(Path(tmp, "results"), "single"))
            cv.update(recorded(Path(tmp, "results"), "cv"))
            n_cv = cv["cv_images"]
        print(f"# Cross-validation cost ({' '.join(size)}, frozen, default tuner, {n_cv} images)")
        for label, r in (("one split", single), (f"--cv {opts.cv}", cv)):
            passes = r["caching_s"] + r["calibration_s"]
            print(f"{label + ':':11s} {r['wall_s']:.1f} s wall, peak RSS {r['peak_mib']:.0f} MiB; as the run records "
                  f"it: the backbone's passes over images {passes:.1f} s (its 'set BatchNorm statistics ... in' line, "
                  f"{r['calibration_s']:.1f} s, and 'cached ... in' lines, {r['caching_s']:.1f} s), search_seconds "
                  f"{r['search_seconds']:.1f} s (backbone build, calibration, caching and trials): search_seconds / "
                  f"passes = {r['search_seconds'] / passes:.2f}x" + (" [target <= 1.3x]" if r is single else "")
                  + f"; / the caching lines alone {r['search_seconds'] / r['caching_s']:.2f}x")
        print(f"--cv {opts.cv} against one split, wall: {cv['wall_s'] / single['wall_s']:.2f}x [target <= 1.4x]; "
              f"search_seconds: {cv['search_seconds'] / max(single['search_seconds'], 1e-9):.2f}x "
              f"(the {opts.cv} fold searches and the final model's search, one backbone pass; forward pass "
              f"{single['caching_s']:.1f} s in the one-split run, {cv['caching_s']:.1f} s in the CV run)")
        folds = {k: v for k, v in cv["stages"].items() if k.startswith("repeat")}
        print("peak RSS per stage of the CV run (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in cv["stages"].items()))
        if folds:
            lo, hi = min(folds.values()), max(folds.values())
            print(f"fold peaks: {lo:.0f}-{hi:.0f} MiB, spread {100 * (hi - lo) / lo:.1f} % [flat across folds]")
        if opts.naive_json:
            naive = json.loads(opts.naive_json.read_text())["naive"]
            one = naive["projected_full_s"]
            print(f"naive (search_speed.py projection of one 10 x 10 search with the backbone inside the model): "
                  f"{one:.0f} s; five of them {5 * one:.0f} s = {5 * one / cv['wall_s']:.0f}x the --cv {opts.cv} run "
                  "[target >= 100x]")
        return 0


if __name__ == "__main__":
    sys.exit(main())
