"""Memory and time of one `bench run` as the dataset grows.

    .venv/bin/python benchmarks/scale.py [--sizes 5000,50000] [--xception] [--root /tmp/bench-scale]

For each size, writes (once, then reuses) that many synthetic demo images (half per class,
`bench demo-data`, 128 px) under ROOT, then runs, in a fresh process,

    bench run --data ROOT/demo-N --weights none --backbones mobilenet_v2 --image-size 96
              --max-unfreeze 0 --max-trials 4 --epochs 5 --no-baseline

(frozen, so it fits in minutes) and prints the wall time and the peak resident memory of
that process (``wait4``'s ``ru_maxrss``; the fresh-process export check is a separate,
smaller process and is sampled apart), plus the stage during which the peak came, from
the run's own log lines and ``/proc/PID/status`` sampled every 0.2 s. ``--xception`` adds
a heavier backbone: Xception at 160 px on the smallest size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _docs import add_option, recording  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ensure_data(root: Path, n_images: int) -> Path:
    from bench.data.demo import is_demo_data, make_demo_data

    folder = root / f"demo-{n_images}"
    if not is_demo_data(folder):
        t0 = time.perf_counter()
        print(f"writing {n_images} synthetic images to {folder} ...", flush=True)
        make_demo_data(folder, n=n_images // 2, size=128, seed=0)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def measure(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (wait4), and the log line current at the peak."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    with open(log_path, "w", buffering=1) as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)

        def sample() -> None:
            while proc.poll() is None:
                samples.append((time.perf_counter() - t0, _rss_kib(proc.pid)))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for line in proc.stdout:
            now = time.perf_counter() - t0
            log.write(f"[{now:7.1f}s {_rss_kib(proc.pid) / 2**20:5.2f}G] {line}")
            lines.append((now, line.rstrip()))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
    wall = time.perf_counter() - t0
    at, peak_sampled = max(samples, key=lambda s: s[1]) if samples else (0.0, 0)
    stage = next((text for t, text in reversed(lines) if t <= at and text.strip()), "")
    return {"rc": proc.returncode, "wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20,
            "peak_at_s": at, "peak_stage": stage[:90], "log": str(log_path)}


def run(data: Path, out: Path, backbone: str, size: int) -> dict:
    name = f"{backbone}-{size}px-{data.name}"
    stamp = f"{name}-{int(time.time())}"
    # A folder of its own: runs in one --out folder adopt each other's feature caches.
    cmd = [sys.executable, "-m", "bench.cli", "run", "--data", str(data), "--weights", "none",
           "--backbones", backbone, "--image-size", str(size), "--max-unfreeze", "0", "--max-trials", "4",
           "--epochs", "5", "--no-baseline", "--out", str(out / "results" / stamp), "--reports",
           str(out / "reports"), "--name", stamp]
    result = measure(cmd, out / f"{name}.log")
    return {"what": f"{backbone}@{size}, {data.name}", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,50000")
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench-scale"))
    parser.add_argument("--xception", action="store_true", help="also Xception@160 on the smallest size")
    parser.add_argument("--only-xception", action="store_true")
    add_option(parser)
    args = parser.parse_args()
    with recording("scale", args.write_docs):
        sizes = [int(s) for s in args.sizes.split(",")]
        args.root.mkdir(parents=True, exist_ok=True)
        folders = {n: ensure_data(args.root, n) for n in sizes}
        results = []
        if not args.only_xception:
            for n in sizes:
                results.append(run(folders[n], args.root, "mobilenet_v2", 96))
                print(results[-1], flush=True)
        if args.xception or args.only_xception:
            results.append(run(folders[min(sizes)], args.root, "xception", 160))
            print(results[-1], flush=True)
        print(f"\n{'run':34s} {'rc':>3s} {'wall':>8s} {'peak RSS':>9s}  peak during")
        for r in results:
            print(f"{r['what']:34s} {r['rc']:3d} {r['wall_s']:7.0f}s {r['peak_rss_gib']:8.2f}G  "
                  f"{r['peak_at_s']:.0f} s: {r['peak_stage']}")
        mobile = [r for r in results if r["what"].startswith("mobilenet_v2")]
        if len(mobile) >= 2:
            ratio = mobile[-1]["peak_rss_gib"] / mobile[0]["peak_rss_gib"]
            print(f"peak RSS ratio, largest / smallest: {ratio:.2f} (target <= 1.25)")


if __name__ == "__main__":
    main()
