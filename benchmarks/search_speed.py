"""Search-speed benchmark: the figures behind the search's performance targets.

Run from the repository root::

    .venv/bin/python benchmarks/search_speed.py            # full (a few minutes on 2 cores)
    .venv/bin/python benchmarks/search_speed.py --quick    # smoke run (a few minutes)

Data: ``../shared/data/brain_mri`` next to the repository (``--data`` to change it),
``--weights none`` (BatchNorm calibrated on training images, as ``bench run`` does), image
size 224, seed 0. Everything is written to a temporary folder that is removed at the end.
The script prints figures only; it asserts nothing about timings.

Each section is a function that returns a dict of figures; :func:`render` prints them all
(``--json FILE`` also writes them). Targets in brackets:

1. :func:`frozen_search`: feature caching (one forward pass over train+val) and a search
   (the default tuner) of Xception heads at depth 0 on the cache; total / caching time
   [<= 1.3x]; fixed cost per trial [<= 50 ms]. Per-trial
   seconds split into build, epochs (the first one includes tracing), TensorBoard and
   checkpoint, and tuner bookkeeping between trials.
1b. :func:`training_paths`: the same trials trained by both paths of the trial loop (dense
   heads in numpy, the Keras-model loop): val AUC and seconds side by side.
2. :func:`naive_baseline`: the same trials (same hyperparameters, same trial seed) trained
   as one full model, image -> BackbonePreprocess -> frozen Xception (BatchNorm in inference
   mode) -> head, with the backbone forward pass in every epoch (``_naive.py``); a subset is
   measured and the whole search projected; speed-up [>= 40x]; val AUC side by side.
3. :func:`partial_unfreeze` (top 2 blocks): bench's two-phase training on the cached prefix
   vs the naive full model with the top 2 blocks trainable [>= 3x]; val AUC side by side.
4. :func:`memory`: RSS after trial 2 and after the last trial of a 20-trial search on the
   cached features, in a fresh subprocess [growth at most 10 %]: avg heads only, the
   default space, and the space without ``--max-head-weights``.

Everything runs through bench's own setup (``prepare_run``, ``BackboneJob``,
``prepare_search``, ``make_tuner``); single trials with given hyperparameters run through
``make_tuner`` with every hyperparameter fixed, as bench trains the notebook baseline.
Timings come from bench itself: each trial's ``bench_trial.json`` (``seconds``,
``build_seconds``, ``fit_seconds``) and bench's log records (the forward-pass seconds of
caching; the seconds of each training epoch, the trainer's DEBUG record; the end of each
trial, when RSS is read), caught by a ``logging.Handler`` on the ``bench`` logger.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner as kt
from _measure import (
    BenchLog,
    attach_log,
    fixed_overhead,
    load_now,
    med,
    proc_status,
    progress,
    trial_figures,
)
from _naive import NaiveHyperModel
from _speed_report import render

from _docs import add_option, recording

from bench.config import RunConfig
from bench.data.loading import load_images
from bench.pipeline import BackboneJob, prepare_search
from bench.run import prepare_run, resume_run
from bench.search.hypermodel import BenchHyperModel
from bench.search.source import source_for
from bench.search.tuner import TrialSettings, make_tuner

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain_mri"
BACKBONE, IMAGE_SIZE, SEED, WEIGHTS = "xception", 224, 0, "none"
PARTIAL_DEPTH = 2
MEMORY_MARK = "MEMORY_RESULT "

FULL = {"trials": 10, "epochs": 10, "naive": True, "compare_trials": 2, "compare_epochs": 3,
        "partial_trials": 2, "partial_epochs": 4, "memory_trials": 20, "memory_epochs": 3}
QUICK = {"trials": 2, "epochs": 2, "naive": False, "compare_trials": 0, "compare_epochs": 0,
         "partial_trials": 1, "partial_epochs": 2, "memory_trials": 4, "memory_epochs": 1}


# --------------------------------------------------------------------------- bench setup
@dataclass
class Context:
    data: Path
    folder: Path
    settings: dict
    log: BenchLog
    state: dict = field(default_factory=dict)  # objects later sections reuse (not figures)


def new_run(ctx: Context, name: str, trials: int, epochs: int, max_unfreeze: int):
    config = RunConfig.from_dict({
        "data": ctx.data, "backbones": [BACKBONE], "weights": WEIGHTS, "image_size": IMAGE_SIZE, "out": ctx.folder,
        "name": name, "seed": SEED, "max_trials": trials, "epochs": epochs,
        "max_unfreeze": max_unfreeze, "augment": False, "baseline": False})
    return prepare_run(config)


def build_backbone(job) -> float:
    """Seconds to build the run's backbone and write backbone.weights.npz (with weights none:
    random init + BatchNorm calibration); prepare_search then loads that file, as every later
    process of a run does."""
    t0 = time.perf_counter()
    source_for(job.record, job.weights, job.size, job.run_dir, job.data_root, job.split, job.search.seed).base()
    seconds = time.perf_counter() - t0
    # A second build in one process gets other auto-numbered weight names ("conv2d_4"), which
    # bench's cache key (weights_fingerprint) includes: reset them, as in a fresh process, so
    # the memory subprocesses find this cache.
    keras.backend.clear_session()
    return seconds


def run_fixed(ctx: Context, hypermodel, cfg, directory: Path, project: str, values: dict, epochs: int) -> dict:
    """One trial with ``values`` through bench's trial loop: a tuner from make_tuner with every
    hyperparameter fixed (trial id 0, so seed ``seed * 1000``); its figures."""
    hp = kt.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    cfg = replace(cfg, tuner="random", max_trials=1, epochs=epochs)
    settings = TrialSettings(epochs=epochs, seed=cfg.seed, tensorboard=cfg.tensorboard)
    tuner = make_tuner(hypermodel, cfg, directory, project, settings, hyperparameters=hp)
    mark, t0 = ctx.log.mark(), time.perf_counter()
    tuner.search(verbose=0)
    return trial_figures(tuner, t0, ctx.log.ends_since(mark), ctx.log.by_seed)[0]


def split_images(run, size: int):
    return tuple(load_images(run.index.root, run.split.rows(s), size) for s in ("train", "val"))


# --------------------------------------------------------------------------- sections
def frozen_search(ctx: Context) -> dict:
    s, out = ctx.settings, {"load": load_now(), "trials_n": ctx.settings["trials"], "epochs": ctx.settings["epochs"]}
    progress(f"1. frozen search: preparing the run folder in {ctx.folder}")
    t0 = time.perf_counter()
    run = new_run(ctx, "frozen", s["trials"], s["epochs"], max_unfreeze=0)
    out["prepare_s"] = time.perf_counter() - t0
    out["sizes"] = {k: len(run.split.rows(k)) for k in ("train", "val", "test")}
    out["classes"] = list(run.split.classes)
    job = BackboneJob.for_run(run)[0]
    progress("building the backbone (weights none: BatchNorm calibration)")
    out["backbone_s"] = build_backbone(job)
    progress("prepare_search: caching depth-0 features (fresh cache)")
    mark, t0 = ctx.log.mark(), time.perf_counter()
    prepared = prepare_search(job)
    out["cache_s"], out["forward_s"] = time.perf_counter() - t0, ctx.log.forward_since(mark)
    progress(f"search (default tuner): {s['trials']} trials x {s['epochs']} epochs on cached features")
    mark, t0 = ctx.log.mark(), time.perf_counter()
    prepared.tuner.search(verbose=0)
    out["search_s"] = time.perf_counter() - t0
    trials = trial_figures(prepared.tuner, t0, ctx.log.ends_since(mark), ctx.log.by_seed)
    steady = med([t["steady_epoch"] for t in trials])
    for t in trials:
        t["fixed"] = fixed_overhead(t, steady)
    done = [t for t in trials if t["seconds"] is not None]
    out.update(
        trials=trials, steady_epoch_s=steady, total_s=out["cache_s"] + out["search_s"],
        fixed_sum_s=sum(t["fixed"] or 0.0 for t in done),
        epochs_sum_s=sum(t["seconds"] - (t["fixed"] or 0.0) for t in done),
        # between trials: each trial's cycle (end to end) less its own seconds, summed (a trial trained with
        # others runs in an earlier trial's cycle, so only the sum is the tuner's)
        tuner_sum_s=sum(t["cycle"] - t["seconds"] for t in done if t["cycle"] is not None),
        outside_s=out["search_s"] - sum(t["cycle"] for t in done if t["cycle"] is not None),
        together_max=max((t["together"] for t in done), default=1),
        flatten_inputs=int(math.prod(prepared.tuner.hypermodel.feature_shapes[0])),
    )
    ctx.state["frozen"] = (run, prepared, {t["trial"]: t["values"] for t in trials})
    return out


def training_paths(ctx: Context, frozen: dict) -> dict:
    """The frozen search's trials again, each trained by both paths of bench's trial loop
    with the same hyperparameters and trial seed: dense heads in numpy
    (bench.search.head_training, the default) and the Keras-model loop
    (bench.search.trainer, ``fast_heads`` off); best val AUC and seconds of each."""
    run, prepared, values = ctx.state["frozen"]
    hypermodel, rows = prepared.tuner.hypermodel, []
    out = {"load": load_now(), "epochs": ctx.settings["epochs"]}
    for tid in sorted(values):
        row = {"trial": tid, "values": values[tid]}
        for path, fast in (("numpy", True), ("keras", False)):
            progress(f"trial {tid}: {path} path")
            hypermodel.fast_heads = fast
            try:
                row[path] = run_fixed(ctx, hypermodel, prepared.config, run.path / "paths", f"{path}-{tid}", values[tid],
                                      ctx.settings["epochs"])
            finally:
                hypermodel.fast_heads = True
        rows.append(row)
    diffs = [r["numpy"]["val_auc"] - r["keras"]["val_auc"] for r in rows
             if r["numpy"]["val_auc"] is not None and r["keras"]["val_auc"] is not None]
    out.update(rows=rows, numpy_s=sum(r["numpy"]["seconds"] or 0 for r in rows),
               keras_s=sum(r["keras"]["seconds"] or 0 for r in rows), auc_diffs=diffs)
    return out


def naive_baseline(ctx: Context, frozen: dict) -> dict:
    s = ctx.settings
    if not s["naive"]:
        return {"skipped": True}
    run, prepared, values = ctx.state["frozen"]
    out, n_epochs = {"load": load_now(), "epochs": s["compare_epochs"]}, s["compare_epochs"]
    progress("2. naive baseline: loading images for the full model")
    t0 = time.perf_counter()
    naive = NaiveHyperModel(prepared.tuner.hypermodel, prepared.source, *split_images(run, IMAGE_SIZE))
    out["images_s"] = time.perf_counter() - t0
    pairs = []
    for tid in sorted(values)[: s["compare_trials"]]:
        progress(f"trial {tid}: cached, then naive, {n_epochs} epochs")
        cached = run_fixed(ctx, prepared.tuner.hypermodel, prepared.config, run.path / "compare", f"cached-{tid}",
                           values[tid], n_epochs)
        slow = run_fixed(ctx, naive, prepared.config, run.path / "compare", f"naive-{tid}", values[tid], n_epochs)
        pairs.append({"trial": tid, "values": values[tid], "cached": cached, "naive": slow})
    naive.release()
    keras.backend.clear_session(free_memory=True)
    slow = [p["naive"] for p in pairs]
    steady = med([t["steady_epoch"] for t in slow]) or \
        sum(t["fit"] for t in slow) / max(1, sum(t["epochs_run"] for t in slow))
    fixed = med([fixed_overhead(t, steady) for t in slow])
    epochs_run = [t["epochs_run"] for t in frozen["trials"] if t["epochs_run"]]
    projected = out["images_s"] + sum(fixed + e * steady for e in epochs_run)
    total, search = frozen["total_s"], frozen["search_s"]
    out.update(
        pairs=pairs, measured_s=sum(t["seconds"] for t in slow), measured_epochs=sum(t["epochs_run"] for t in slow),
        steady_epoch_s=steady, fixed_s=fixed, epochs_run=sum(epochs_run), projected_s=projected,
        projected_full_s=out["images_s"] + len(frozen["trials"]) * (fixed + frozen["epochs"] * steady),
        speedup=projected / total, speedup_search=(projected - out["images_s"]) / search,
        cross_check=(search + sum(epochs_run) * frozen["forward_s"]) / total,
        epoch_ratio=steady / frozen["steady_epoch_s"] if frozen["steady_epoch_s"] else None,
    )
    return out


def partial_unfreeze(ctx: Context, frozen: dict) -> dict:
    s, depth = ctx.settings, PARTIAL_DEPTH
    n_trials, n_epochs = s["partial_trials"], s["partial_epochs"]
    out = {"load": load_now(), "depth": depth, "trials_n": n_trials, "epochs": n_epochs}
    progress(f"3. partial unfreeze: a run with --max-unfreeze {depth}")
    run = new_run(ctx, "partial", frozen["trials_n"], n_epochs, max_unfreeze=depth)
    job = BackboneJob.for_run(run)[0]
    out["cut"] = job.record.cut_layer(depth)
    out["backbone_s"] = build_backbone(job)
    progress("prepare_search: caching every cut point in one forward pass")
    mark, t0 = ctx.log.mark(), time.perf_counter()
    prepared = prepare_search(job)
    out["cache_s"], out["forward_s"] = time.perf_counter() - t0, ctx.log.forward_since(mark)
    out["depths"] = prepared.depths
    cached_hm = prepared.tuner.hypermodel
    naive = NaiveHyperModel(cached_hm, prepared.source, *split_images(run, IMAGE_SIZE)) if s["naive"] else None
    values, rows = ctx.state["frozen"][2], []
    for tid in sorted(values)[:n_trials]:
        v = {**values[tid], "unfreeze": depth}
        progress(f"depth {depth} trial {tid}: cached")
        row = {"trial": tid, "values": v, "naive": None,
               "cached": run_fixed(ctx, cached_hm, prepared.config, run.path / "compare", f"cached-{tid}", v, n_epochs)}
        if naive is not None:
            progress(f"depth {depth} trial {tid}: naive")
            row["naive"] = run_fixed(ctx, naive, prepared.config, run.path / "compare", f"naive-{tid}", v, n_epochs)
            naive.release()
        rows.append(row)
    keras.backend.clear_session(free_memory=True)
    cached_s = sum(r["cached"]["seconds"] for r in rows)
    out.update(rows=rows, cached_s=cached_s, cached_total_s=out["cache_s"] + cached_s)
    if naive is not None and rows:
        naive_s = sum(r["naive"]["seconds"] for r in rows)
        n = frozen["trials_n"]
        out.update(naive_s=naive_s, ratio=naive_s / out["cached_total_s"], ratio_trials=naive_s / cached_s,
                   projected_n=n, projected_ratio=n * naive_s / len(rows) / (out["cache_s"] + n * cached_s / len(rows)))
    return out


class AvgHeads(BenchHyperModel):
    """bench's search space with pooling pinned to 'avg' (dense layers, units, dropout and
    learning rate still searched): every head is small, so RSS growth is leakage."""

    def build(self, hp):
        hp.Fixed("pooling", "avg")
        return super().build(hp)


#: Section 4's searches: avg heads only (growth = leakage), the default space, and the space
#: without --max-head-weights (flatten heads with hidden layers: tens of millions of weights).
MEMORY_SPACES = ("cheap", "default", "no-limit")


def memory(ctx: Context) -> dict:
    s = ctx.settings
    out = {"trials_n": s["memory_trials"], "epochs": s["memory_epochs"], "image_size": IMAGE_SIZE}
    for kind in MEMORY_SPACES:
        progress(f"4. memory ({kind} heads): {s['memory_trials']}-trial search in a subprocess")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--data", str(ctx.data), "--memory-child",
               str(ctx.folder), "--memory-trials", str(s["memory_trials"]), "--memory-epochs",
               str(s["memory_epochs"]), "--memory-space", kind]
        load = load_now()
        child = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO)
        lines = [ln for ln in child.stdout.splitlines() if ln.startswith(MEMORY_MARK)]
        if not lines:
            out[kind] = {"load": load, "error": f"exit {child.returncode}", "stderr": child.stderr[-3000:]}
            continue
        result = {"load": load, **json.loads(lines[-1][len(MEMORY_MARK):])}
        rows = result["rows"]
        if len(rows) >= 2:
            result["growth"] = {key: 100 * (rows[-1][key] - rows[1][key]) / rows[1][key]
                                for key in ("hwm", "rss") if rows[1][key] and rows[-1][key]}
        out[kind] = result
    return out


def memory_child(folder: Path, trials: int, epochs: int, space: str) -> int:
    """In a fresh process: reopen the frozen run, load its cache, run a search, print RSS per trial."""
    start = proc_status()
    log = attach_log(echo=False)
    run = resume_run(folder, "frozen")
    job = BackboneJob.for_run(run)[0]
    prepared = prepare_search(job)  # loads backbone.weights.npz and the cached features
    hm = prepared.tuner.hypermodel
    if space != "default":  # cheap: pooling pinned to avg; no-limit: --max-head-weights 0
        hm = (AvgHeads if space == "cheap" else BenchHyperModel)(hm.depths, hm.feature_shapes, hm.data, hm.top_factory)
    cfg = replace(prepared.config, max_trials=trials, epochs=epochs)
    settings = TrialSettings(epochs=epochs, seed=cfg.seed, tensorboard=cfg.tensorboard)
    tuner = make_tuner(hm, cfg, job.out_dir, f"memory-{space}", settings)
    loaded = proc_status()
    mark, t0 = log.mark(), time.perf_counter()
    tuner.search(verbose=0)
    seconds = time.perf_counter() - t0
    rows = [{"trial": t["trial"], "values": t["values"], "status": t["status"], "rss": t["rss"], "hwm": t["hwm"]}
            for t in trial_figures(tuner, t0, log.ends_since(mark), log.by_seed)]
    print(MEMORY_MARK + json.dumps({"rows": rows, "seconds": seconds, "start": start, "loaded": loaded}), flush=True)
    return 0


# --------------------------------------------------------------------------- main
def machine() -> str:
    import tensorflow as tf

    return (f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
            f"tensorflow {tf.__version__}, keras {keras.__version__}, keras-tuner {kt.__version__}, "
            f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few trials/epochs, no naive baseline (smoke run)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"image folder (default {DEFAULT_DATA})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folders (path is printed)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    add_option(parser)
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-trials", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--memory-epochs", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory-space", choices=MEMORY_SPACES, default="default", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    data = args.data.expanduser().resolve()
    if not data.is_dir():
        print(f"error: data folder {data} not found. search_speed.py measures on the brain MRI images "
              f"(one sub-folder per class, e.g. 'yes'/'no'); put them at {DEFAULT_DATA} or pass --data FOLDER.",
              file=sys.stderr)
        return 2
    if args.memory_child:
        return memory_child(args.memory_child, args.memory_trials, args.memory_epochs, args.memory_space)

    t_script = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bench-search-speed-"))
    ctx = Context(data, folder, QUICK if args.quick else FULL, attach_log(echo=True))
    results: dict = {"meta": {
        "command": shlex.join([sys.executable, *sys.argv]), "quick": args.quick, "machine": machine(),
        "load_start": load_now(), "data": str(data), "backbone": BACKBONE, "weights": WEIGHTS,
        "image_size": IMAGE_SIZE, "seed": SEED}}
    try:
        results["frozen"] = frozen_search(ctx)
        results["paths"] = training_paths(ctx, results["frozen"])
        results["naive"] = naive_baseline(ctx, results["frozen"])
        results["partial"] = partial_unfreeze(ctx, results["frozen"])
        results["memory"] = memory(ctx)
    finally:
        results["meta"].update(load_end=load_now(), wall_s=time.perf_counter() - t_script,
                               kept=str(folder) if args.keep else None)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        with recording("search_speed_quick" if args.quick else "search_speed", args.write_docs,
                       load=results["meta"]["load_start"]):
            render(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
