"""Progress of the long steps (caching features, the search), for people watching a run.

On a terminal the CLI installs a rich progress display (:func:`live_display`): each step
is a bar with its rate and time left, on stderr. Elsewhere (a log file, CI, a notebook
capturing output) a step writes plain log lines instead, one as each :data:`PLAIN_EVERY`
of its total passes (not at the end, which the caller reports), each with the rate and
the time left. ``--quiet`` shows neither (the log lines are INFO).

    with step("mobilenet_v2: caching train features", total=len(images), unit="images") as s:
        for done in ...:
            s.update(done)
"""

from __future__ import annotations

import contextlib
import logging
import time

log = logging.getLogger("bench.progress")

#: Plain mode: a line at every this share of the total (and at the end).
PLAIN_EVERY = 0.25
_display = None  # a rich.progress.Progress while the CLI shows one


def new_display(console):
    """The rich progress display bench shows on ``console`` (transient bars with counts,
    elapsed time and time left)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


@contextlib.contextmanager
def live_display(console):
    """Bars for every :func:`step` inside when ``console`` is a terminal and INFO messages
    are shown; plain log lines otherwise (and nothing with --quiet)."""
    if not (console.is_terminal and logging.getLogger("bench").isEnabledFor(logging.INFO)):
        yield None
        return
    with new_display(console) as progress, use_display(progress):
        yield progress


@contextlib.contextmanager
def use_display(progress):
    """Make ``progress`` (a started rich Progress) the display of every :func:`step` inside."""
    global _display
    previous, _display = _display, progress
    try:
        yield progress
    finally:
        _display = previous


def eta_text(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Step:
    """One long step with a known total; :meth:`update` with the count done so far."""

    def __init__(self, description: str, total: int, unit: str):
        self.description, self.total, self.unit = description, max(int(total), 0), unit
        self.started = time.perf_counter()
        self.done = 0
        self._next_line = PLAIN_EVERY
        self._task = None if _display is None else _display.add_task(description, total=self.total or None)
        self.shown = self._task is not None  # on a terminal display (else: plain log lines)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def remaining(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 and self.total else None

    def update(self, done: int, note: str = "") -> None:
        """``done`` of the total so far; ``note`` (e.g. the best score yet) is shown beside it."""
        self.done = min(int(done), self.total) if self.total else int(done)
        if _display is not None and self._task is not None:
            _display.update(self._task, completed=self.done,
                            description=f"{self.description}{f' ({note})' if note else ''}")
            return
        share = self.done / self.total if self.total else 1.0
        if share + 1e-9 >= self._next_line and self.done < self.total:  # the caller reports the end
            while self._next_line <= share + 1e-9:
                self._next_line += PLAIN_EVERY
            log.info(self.line(note))

    def line(self, note: str = "") -> str:
        left = self.remaining()
        eta = "" if left is None or self.done >= self.total else f", {eta_text(left)} left"
        return (f"{self.description}: {self.done}/{self.total} {self.unit} ({self.rate():.1f} {self.unit}/s{eta})"
                + (f"; {note}" if note else ""))

    def close(self) -> None:
        if _display is not None and self._task is not None:
            _display.remove_task(self._task)


@contextlib.contextmanager
def step(description: str, total: int, unit: str = "images"):
    """A :class:`Step` that removes its bar when the block ends."""
    s = Step(description, total, unit)
    try:
        yield s
    finally:
        s.close()


#: Off a terminal, a scan that has run this long starts writing plain progress lines.
PLAIN_SCAN_AFTER_S = 5.0


def with_scan_progress(console, fn, *args, **kwargs):
    """``fn(*args, progress=..., **kwargs)`` (a scan) with a bar on a terminal; off a
    terminal, plain lines at each quarter (files/s, time left) once the scan has taken
    :data:`PLAIN_SCAN_AFTER_S` (a quick scan says nothing)."""
    plain: list[Step] = []
    started = time.perf_counter()

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)
        if not console.is_terminal and (plain or time.perf_counter() - started >= PLAIN_SCAN_AFTER_S):
            if not plain:
                plain.append(Step("scanning", total, "files"))
                plain[0].started = started
            plain[0].update(done)

    with new_display(console) as progress:
        task = progress.add_task("scanning images", total=None)
        return fn(*args, progress=update, **kwargs)
