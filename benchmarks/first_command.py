"""Time the README's first command: its `bench run` part, as a user runs it.

    python benchmarks/first_command.py [--times 2] [--write-docs]

Reads the first ``bash`` block of README.md, takes the ``bench run ...`` part of its
command, and runs it ``--times`` times as on a fresh machine: in a fresh temporary folder
each, with ``--out`` and ``--reports`` there and ``$BENCH_CACHE`` pointing there too, so
every run generates the demo data first. Prints, per run, the wall time and
the load average at its start, then the last run's leaderboard (validation selection
score, test ROC AUC with its 95 % CI) and the report's sentence about the runner-up. On a
shared machine the wall time grows with the load; the CPU time (user + system) much less.
[target: the `bench run` part within 120 s on a 2-core CPU]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import add_option, recording

REPO = Path(__file__).resolve().parents[1]


def first_command(readme: Path = REPO / "README.md") -> list[str]:
    """The arguments after ``bench run`` in the README's first bash block."""
    block = re.search(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S).group(1)
    line = " ".join(block.replace("\\\n", " ").split("\n")[0].split())
    part = line[line.index("bench run "):]
    return shlex.split(part)[2:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=2, help="how many runs to time")
    add_option(parser)
    opts = parser.parse_args()
    args = first_command()
    with recording("first_command", opts.write_docs):
        print(f"# bench run {shlex.join(args)}")
        walls = []
        for i in range(opts.times):
            with tempfile.TemporaryDirectory(prefix="bench-first-command-") as tmp:
                load = os.getloadavg()
                cmd = [sys.executable, "-m", "bench.cli", "run", *args, "--out", f"{tmp}/results",
                       "--reports", f"{tmp}/reports", "--quiet"]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                env = {**os.environ, "BENCH_CACHE": f"{tmp}/cache"}
                subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=env)
                walls.append(time.perf_counter() - t0)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                print(f"run {i + 1}: {walls[-1]:.0f} s wall, {cpu:.0f} s CPU (user + system; load average "
                      f"{load[0]:.2f} at its start, {os.getloadavg()[0]:.2f} at its end)", flush=True)
                name = args[args.index("--name") + 1] if "--name" in args else None
                run_dir = next(Path(tmp, "results").iterdir()) if name is None else Path(tmp, "results", name)
                board = json.loads((run_dir / "leaderboard.json").read_text())
                report = next(Path(tmp, "reports").glob("*/report.md")).read_text(encoding="utf-8")
        print(f"slowest {max(walls):.0f} s [target <= 120 s]")
        print("leaderboard of the last run (rank by the validation selection score; test ROC AUC, 95 % CI):")
        for row in board:
            auc = f"{row['test_roc_auc']:.3f} [{row['test_roc_auc_ci_low']:.2f}, {row['test_roc_auc_ci_high']:.2f}]"
            print(f"  {row['rank']}  {row['backbone']:<14} val {row['val_objective']:.3f}  test AUC {auc}")
        sentence = next((line for line in report.splitlines() if "runner-up" in line), "(no runner-up sentence)")
        print(sentence)
    return 0


if __name__ == "__main__":
    sys.exit(main())
