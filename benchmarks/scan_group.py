"""Scan a folder and find its copy links, as `bench run` does before splitting.

    .venv/bin/python benchmarks/scan_group.py /tmp/bench-scale/demo-50000

(`benchmarks/scale.py` writes that folder: 50,000 synthetic demo images, 128 px.) Prints
the scan's and the copy search's wall times, each stage of the search, and the peak RSS
of this process and of its largest worker process (``getrusage``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data.copies import find_links  # noqa: E402
from bench.data.scan import scan  # noqa: E402
from bench.parallel import usable_cores  # noqa: E402

from _docs import add_option, recording  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="image folder, one sub-folder per class")
    add_option(parser)
    opts = parser.parse_args()
    with recording("scan_group", opts.write_docs):
        measure(opts.folder)


def measure(root: Path) -> None:
    t0 = time.perf_counter()
    index = scan(root)
    t1 = time.perf_counter()
    times: dict = {}
    links = find_links(index.records, index.features, mirrored=index.mirrored_reader(), times=times)
    t2 = time.perf_counter()
    gib = 2**20  # ru_maxrss is in KiB
    print(f"{len(index.records)} images, {usable_cores()} usable cores: scan {t1 - t0:.0f} s, copy links "
          f"{t2 - t1:.0f} s, together {t2 - t0:.0f} s (target <= 300 s); {len(links)} links")
    print("stages:", {k: round(v, 1) if isinstance(v, float) else v for k, v in times.items()})
    print(f"peak RSS: this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / gib:.2f} GiB, "
          f"largest worker {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / gib:.2f} GiB")


if __name__ == "__main__":
    main()
