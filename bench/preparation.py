"""``bench run``'s preparation of its run folder while the process imports TensorFlow.

The preparation (checks, the scan, copy detection, the split, the shortcut check: seconds
of reading files in worker processes) and the import of TensorFlow (seconds of one core)
do not need each other. :func:`prepare_beside_tensorflow` makes the first in a forked copy
of the process (:func:`bench.forked.beside`) while the process makes the second.

A copy is only forked from a process with no thread but its main one. Importing numpy
starts OpenBLAS's worker threads, and importing pandas starts Arrow's allocator thread, so
this module imports neither: what the preparation needs (:mod:`bench.run`: numpy, pandas,
Pillow) is imported in the copy, and in this process after TensorFlow.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config import RunConfig
    from bench.run import RunFolder


def prepare_beside_tensorflow(config: RunConfig) -> RunFolder:
    """:func:`bench.run.prepare_run`, its progress on the console, in a forked copy of
    this process while this one imports TensorFlow and what the run needs next; the scan's
    copy features (a temporary file) then belong to this process."""
    from bench.forked import beside
    from bench.terminal import quiet_tensorflow, scan_with_progress

    here = os.getpid()

    def prepare() -> RunFolder:
        from bench.data.copy_table import CopyTable
        from bench.run import prepare_run

        run = scan_with_progress(prepare_run, config)
        if os.getpid() != here and isinstance(run.index.features, CopyTable):
            run.index.features.hand_over(here)
        return run

    def meanwhile() -> None:
        quiet_tensorflow()
        import bench.run  # noqa: F401 - its imports (numpy, pandas) load here while the copy scans

    run = beside(prepare, meanwhile)
    from bench.data.copy_table import CopyTable

    if isinstance(run.index.features, CopyTable):
        run.index.features.adopt()  # a no-op when the preparation ran here
    return run
