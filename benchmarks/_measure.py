"""Measuring helpers of the benchmarks: bench's log records and trial sidecars as figures, and timing.

Nothing here wraps or replaces bench code: :class:`BenchLog` is a ``logging.Handler`` on
the ``bench`` logger (with the trainer's per-epoch DEBUG records), and :func:`trial_figures`
reads what bench's trial loop writes (``trials_table`` and each trial's ``bench_trial.json``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path



def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def best_of(runs: int, work, warm_up: bool = False) -> float:
    """The quickest of ``runs`` calls of ``work()``, in seconds (after one untimed call
    with ``warm_up``)."""
    if warm_up:
        work()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return min(times)


def proc_status() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process in MiB (Linux /proc/self/status)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def load_now() -> tuple[float, float, float]:
    return os.getloadavg()


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class BenchLog(logging.Handler):
    """bench's log records, timestamped: the forward-pass seconds of feature caching
    ("cached train features of N images in X s"), the wall seconds of every training epoch
    (the trainer's DEBUG record, ``epoch_seconds``) and the end of every trial (the tuner's
    "trial ID (i/n): ..." line, logged in on_trial_end), when RSS is read; a trial's end
    takes the epochs recorded since the previous one."""

    CACHED = re.compile(r"cached \w+ features of \d+ images in ([\d.]+)s")
    TRIAL_END = re.compile(r"^\s*trial (\S+) \(")

    def __init__(self, echo: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.echo, self.forward, self.ends, self.epochs = echo, [], [], []
        self.by_seed: dict[int, list[float]] = {}  # trial seed -> its epochs (trials trained together log in turn)

    def emit(self, record: logging.LogRecord) -> None:
        now = time.perf_counter()
        if hasattr(record, "epoch_seconds"):
            if getattr(record, "trial_seed", None) is not None:
                self.by_seed.setdefault(record.trial_seed, []).append(round(record.epoch_seconds, 4))
            else:
                self.epochs.append(round(record.epoch_seconds, 4))
            return
        msg = record.getMessage()
        if m := self.CACHED.search(msg):
            self.forward.append(float(m.group(1)))
        elif m := self.TRIAL_END.match(msg):
            self.ends.append({"trial": m.group(1), "t": now, "epoch_seconds": self.epochs, **proc_status()})
            self.epochs = []
        if self.echo and record.levelno >= logging.INFO:
            progress(msg.strip())

    def mark(self) -> tuple[int, int]:
        self.by_seed = {}  # a new search: its trials' seeds start again
        return len(self.forward), len(self.ends)

    def forward_since(self, mark) -> float:
        return sum(self.forward[mark[0]:])

    def ends_since(self, mark) -> dict[str, dict]:
        return {e["trial"]: e for e in self.ends[mark[1]:]}


def attach_log(echo: bool) -> BenchLog:
    handler = BenchLog(echo)
    logger = logging.getLogger("bench")
    logger.setLevel(logging.INFO)
    logging.getLogger("bench.search.trainer").setLevel(logging.DEBUG)  # one record per epoch
    logger.addHandler(handler)
    return handler


def trial_figures(tuner, t_start: float, ends: dict[str, dict], by_seed: dict | None = None) -> list[dict]:
    """Per trial, in run order: hyperparameters, scores and where its seconds went, from
    trials_table, each trial's bench_trial.json and the log records (its epochs, by its
    seed when the record names it, and its end). A trial trained with others (its
    ``trained_together``) has its share of their time as its seconds; the time between
    trials is then not its own, and its ``tuner`` figure is None (the sum over trials
    still holds)."""
    rows, prev = [], t_start
    from bench.search.tuner import trials_table  # here: the timing helpers need no TensorFlow

    for row in trials_table(tuner).to_dict("records"):
        tid = row["trial"]
        sidecar = Path(tuner.get_trial_dir(tid)) / "bench_trial.json"
        info = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        end = ends.get(tid, {})
        own = (by_seed or {}).get(tuner.trial_seed(int(tid))) if hasattr(tuner, "trial_seed") else None
        epochs, phases = ((own if own is not None else end.get("epoch_seconds", [])) if info else []), []  # a failed trial wrote no sidecar
        for n in info.get("phase_epochs", [len(epochs)]):
            phases, epochs = [*phases, epochs[:n]], epochs[n:]
        cycle, prev = (end["t"] - prev, end["t"]) if end else (None, prev)
        seconds, build, fit = info.get("seconds"), info.get("build_seconds"), info.get("fit_seconds")
        flat = [e for phase in phases for e in phase]
        rows.append({
            "trial": tid, "status": row["status"], "val_auc": row.get("val_auc"),
            "values": {k: v for k, v in tuner.oracle.trials[tid].hyperparameters.values.items()
                       if not k.startswith("tuner/")},
            "best_epoch": info.get("best_epoch"), "epochs_run": info.get("epochs_run", 0),
            "phase_epochs": info.get("phase_epochs"), "seconds": seconds, "build": build, "fit": fit,
            "epoch_seconds": phases, "first_epoch": flat[0] if flat else None,
            "steady_epoch": med([e for phase in phases for e in phase[1:]]),
            "in_fit": fit - sum(flat) if fit is not None else None,  # optimizer setup, phase switch
            "after_fit": seconds - build - fit if seconds is not None else None,  # TensorBoard, checkpoint
            "tuner": (cycle - seconds if cycle is not None and seconds is not None
                      and info.get("trained_together", 1) == 1 else None),
            "cycle": cycle, "together": info.get("trained_together", 1),
            "rss": end.get("VmRSS"), "hwm": end.get("VmHWM"),
        })
    return rows


def fixed_overhead(trial: dict, fallback: float | None = None) -> float | None:
    """Trial seconds minus its epochs at each phase's steady (2nd+) epoch time: build,
    tracing, TensorBoard, checkpoint. ``fallback``: the steady epoch of one-epoch phases."""
    if trial["seconds"] is None or not trial["epoch_seconds"]:
        return None
    epochs = 0.0
    for phase in trial["epoch_seconds"]:
        steady = med(phase[1:]) if len(phase) > 1 else fallback
        if steady is None:
            return None
        epochs += len(phase) * steady
    return trial["seconds"] - epochs
