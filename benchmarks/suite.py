"""Time `bench suite --demo`, and the suite against the same datasets run one `bench run` each.

    python benchmarks/suite.py [--write-docs]

In a fresh temporary folder (``$BENCH_CACHE`` there too): generates the demo suite's four
phantom datasets (timed on its own), runs ``bench suite --demo`` as a user does, then runs
each of its datasets as a separate ``bench run`` process with the suite's options. Prints
the wall time of each, the suite's verdict sentence, and the suite's wall time against the
sum of the separate runs: what the suite adds over its runs (the verdict across datasets,
the suite report), net of what it saves (one process, each backbone built once).
[targets: data generation + the suite within 300 s on a 2-core CPU; suite / sum of runs <= 1.05]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import add_option, recording

REPO = Path(__file__).resolve().parents[1]


def bench(args: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``bench ARGS`` in a subprocess (quiet, must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.cli", *args, "--quiet"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_flags(options: dict) -> list[str]:
    """The suite file's [run] table as bench run flags."""
    flags = []
    for key, value in options.items():
        if isinstance(value, bool):
            flags.append(f"--{key}" if value else f"--no-{key}")
        else:
            flags += [f"--{key}", str(value)]
    return flags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_option(parser)
    opts = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.suite.demo import RUN_OPTIONS, demo_datasets

    with recording("suite", opts.write_docs), tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        env = {**os.environ, "BENCH_CACHE": f"{tmp}/cache"}
        print(f"load average {os.getloadavg()[0]:.2f} at the start")
        t0 = time.perf_counter()
        os.environ["BENCH_CACHE"] = env["BENCH_CACHE"]
        datasets = demo_datasets()
        generate = time.perf_counter() - t0
        print(f"demo data: {len(datasets)} datasets generated in {generate:.0f} s")
        suite, suite_cpu = bench(["suite", "--demo", "--out", f"{tmp}/results", "--reports", f"{tmp}/reports",
                                  "--name", "demo"], env)
        verdict = json.loads(Path(tmp, "results", "demo", "verdict.json").read_text())
        print(f"bench suite --demo: {suite:.0f} s wall, {suite_cpu:.0f} s CPU ({generate + suite:.0f} s wall with the "
              f"data generation) [target <= 300 s] (load average {os.getloadavg()[0]:.2f} at its end)")
        print(f"verdict: {verdict['sentence']}")
        walls, cpus = {}, {}
        for name, path in datasets.items():
            walls[name], cpus[name] = bench(["run", "--data", str(path), *run_flags(RUN_OPTIONS), "--no-export",
                                             "--out", f"{tmp}/runs", "--reports", f"{tmp}/run-reports", "--name",
                                             name], env)
            print(f"bench run on {name}: {walls[name]:.0f} s wall, {cpus[name]:.0f} s CPU")
        wall, cpu = sum(walls.values()), sum(cpus.values())
        print(f"suite / sum of the {len(walls)} runs: wall {suite:.0f} / {wall:.0f} s = {suite / wall:.3f}, CPU "
              f"{suite_cpu:.0f} / {cpu:.0f} s = {suite_cpu / cpu:.3f} [target <= 1.05] (load average "
              f"{os.getloadavg()[0]:.2f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
