"""Search-speed benchmark: the figures behind issue #3's performance targets.

Run from the repository root::

    .venv/bin/python benchmarks/search_speed.py            # full (15-25 min on 2 cores)
    .venv/bin/python benchmarks/search_speed.py --quick    # smoke run (a few minutes)

Data: ``../shared/data/brain_mri`` next to the repository (``--data`` to change it),
``--weights none`` (BatchNorm calibrated on 64 training images, as ``bench run`` does),
image size 224, seed 0. Everything is written to a temporary folder that is removed at
the end. The script prints figures only; it asserts nothing about timings.

Sections (targets from issue #3 in brackets):

1. Frozen search: feature caching (one forward pass over train+val) and a KerasTuner
   RandomSearch of Xception heads at depth 0 on the cache; total / forward pass [<= 3x].
   Per-trial seconds are split into fixed overhead (build, tracing, TensorBoard,
   checkpoint, tuner bookkeeping) and epochs.
2. Naive baseline: the same trials (same hyperparameters, same trial seeds) trained as
   one full model, image -> BackbonePreprocess -> frozen Xception (BatchNorm in
   inference mode) -> head, with the backbone forward pass in every epoch; a subset is
   measured and the whole search projected; speed-up [>= 40x]; val AUC side by side.
3. Partial unfreeze (top 2 blocks): bench's two-phase training on the cached prefix vs
   the naive full model with the top 2 blocks trainable [>= 3x]; val AUC side by side.
4. Memory: RSS after trial 2 and after the last trial of a 20-trial search on cached
   features, in a fresh subprocess [growth within 15 %].

Timing splits come from wrapping (not changing) bench's functions in this process:
``bench.hypermodel.train`` (start/end of training), ``bench.trainer.scores`` (called
twice per epoch, so the second call marks the end of an epoch) and
``bench.search.write_tensorboard``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain_mri"
BACKBONE = "xception"
IMAGE_SIZE = 224
SEED = 0
WEIGHTS = "none"
MEMORY_MARK = "MEMORY_RESULT "

FULL = dict(trials=10, epochs=10, naive=True, compare_trials=2, compare_epochs=3,
            partial_trials=2, partial_epochs=4, memory_trials=20, memory_epochs=3)
QUICK = dict(trials=2, epochs=2, naive=False, compare_trials=0, compare_epochs=0,
             partial_trials=1, partial_epochs=2, memory_trials=4, memory_epochs=1)


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MiB (Linux /proc/self/status)."""
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


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"(load average now: {one:.2f} 1-min, {five:.2f} 5-min)"


def fmt_s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- probes
class Probe:
    """Timestamps from bench's own functions, wrapped in this process only."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self._saved: list[tuple] = []

    def __enter__(self):
        import bench.hypermodel
        import bench.search
        import bench.trainer

        probe = self
        train, scores, write_tb = bench.hypermodel.train, bench.trainer.scores, bench.search.write_tensorboard
        calls = {"n": 0}

        def timed_train(*args, **kwargs):
            calls["n"] = 0
            probe.events.append(("train_start", time.perf_counter()))
            try:
                return train(*args, **kwargs)
            finally:
                probe.events.append(("train_end", time.perf_counter()))

        def timed_scores(*args, **kwargs):
            result = scores(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] % 2 == 0:  # train scores, then val scores: the epoch is done
                probe.events.append(("epoch_end", time.perf_counter()))
            return result

        def timed_tb(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return write_tb(*args, **kwargs)
            finally:
                probe.events.append(("tensorboard", t0, time.perf_counter()))

        self._saved = [(bench.hypermodel, "train", train), (bench.trainer, "scores", scores),
                       (bench.search, "write_tensorboard", write_tb)]
        bench.hypermodel.train, bench.trainer.scores, bench.search.write_tensorboard = timed_train, timed_scores, timed_tb
        return self

    def __exit__(self, *exc):
        for module, name, value in self._saved:
            setattr(module, name, value)

    def mark(self, name: str) -> int:
        self.events.append((name, time.perf_counter()))
        return len(self.events) - 1

    def split(self, start: int, end: int) -> dict:
        """Breakdown of the events between two marks (one trial)."""
        ev = self.events[start : end + 1]
        t_start, t_end = ev[0][1], ev[-1][1]
        trains, epochs, tb = [], [], 0.0
        current = None
        for e in ev:
            if e[0] == "train_start":
                current = [e[1], []]
            elif e[0] == "epoch_end" and current is not None:
                current[1].append(e[1])
            elif e[0] == "train_end" and current is not None:
                trains.append((current[0], current[1], e[1]))
                current = None
            elif e[0] == "tensorboard":
                tb += e[2] - e[1]
        first_epoch, later, per_call = None, [], []
        for i, (t0, ends, t1) in enumerate(trains):
            bounds = [t0, *ends]
            durations = [b - a for a, b in zip(bounds, bounds[1:])]
            per_call.append(durations)
            if i == 0 and durations:
                first_epoch, durations = durations[0], durations[1:]
            later.extend(durations)
        build = (trains[0][0] - t_start) if trains else None
        n_epochs = sum(len(ends) for _, ends, _ in trains)
        after = (t_end - trains[-1][2]) if trains else None
        return {"wall": t_end - t_start, "build": build, "first_epoch": first_epoch, "later": later,
                "epochs": n_epochs, "tensorboard": tb, "after": after,
                "train_total": sum(t1 - t0 for t0, _, t1 in trains), "per_call": per_call}


# --------------------------------------------------------------------------- naive model
def naive_hypermodel_class():
    import keras
    import keras_tuner as kt  # noqa: F401

    from bench.final import set_trainable
    from bench.hypermodel import (FINETUNE_LR_FACTOR, LR_MAX, LR_MIN, BenchHyperModel, _best, _better,
                                  build_head, head_spec)
    from bench.layers import BackbonePreprocess

    class NaiveHyperModel(BenchHyperModel):
        """Same search space and head as BenchHyperModel, but the model takes images:
        image -> BackbonePreprocess -> backbone(training=False) -> head, so every epoch runs
        the whole backbone forward. Depth N > 0 trains in bench's two phases (head alone,
        then top N blocks + head at a tenth of the learning rate)."""

        def __init__(self, depths, feature_shapes, data, source, images_train, images_val):
            super().__init__(depths, feature_shapes, data, top_factory=None)
            self.source, self.images_train, self.images_val = source, images_train, images_val
            self.base = None

        def build(self, hp):
            # The same declarations, in the same order, as BenchHyperModel.build: the head
            # is created first, so its initial weights match the cached trial's.
            depth = hp.Choice("unfreeze", self.depths) if len(self.depths) > 1 else hp.Fixed("unfreeze", self.depths[0])
            pooling, dense = head_spec(hp)
            hp.Float("learning_rate", LR_MIN, LR_MAX, sampling="log")
            head = build_head(self.feature_shapes[0], pooling, dense, self.data.n_classes)
            base = self.source.base()  # loads backbone.weights.h5: the cached run's exact weights
            set_trainable(base, None)
            size = self.source.image_size
            inputs = keras.Input((size, size, 3), name="image")
            x = BackbonePreprocess(self.source.record.preprocessing, name="preprocess")(inputs)
            outputs = head(base(x, training=False))  # BatchNorm in inference mode
            self.base = base
            return keras.Model(inputs, outputs, name=f"naive_depth{depth}")

        def _naive_train(self, model, lr, epochs, initial_epoch, seed):
            import bench.hypermodel  # looked up per call, so the timing probe sees it

            d = self.data
            return bench.hypermodel.train(model, self.images_train, d.y_train, self.images_val, d.y_val, n_classes=d.n_classes,
                         learning_rate=lr, epochs=epochs, batch_size=d.batch_size, class_weight=d.class_weight,
                         objective=d.objective, patience=d.patience, seed=seed, initial_epoch=initial_epoch)

        def fit(self, hp, model, *args, epochs: int = 10, seed: int = 0, **kwargs):
            depth, lr = hp.get("unfreeze"), hp.get("learning_rate")
            if depth == 0:
                hist = self._naive_train(model, lr, epochs, 0, seed)
                return {"history": hist, "phase_epochs": [len(hist["loss"])]}
            warm, tune = max(1, epochs // 2), max(1, epochs - max(1, epochs // 2))
            hist1 = self._naive_train(model, lr, warm, 0, seed)
            best1 = _best(hist1, self.data.objective)
            warm_weights = model.get_weights()
            set_trainable(self.base, self.source.record.cut_layer(depth))
            hist2 = self._naive_train(model, lr * FINETUNE_LR_FACTOR, tune, len(hist1["loss"]), seed + 1)
            if _better(best1, _best(hist2, self.data.objective), self.data.objective):
                model.set_weights(warm_weights)
            merged = {k: list(hist1.get(k, [])) + list(hist2.get(k, [])) for k in hist1.keys() | hist2.keys()}
            return {"history": merged, "phase_epochs": [len(hist1["loss"]), len(hist2["loss"])]}

    return NaiveHyperModel


def run_like_tuner(hypermodel, values: dict, trial_id: str, epochs: int, probe: Probe, free_memory: bool) -> dict:
    """One trial the way BenchTunerMixin.run_trial does it (seed, clear_session, build, fit),
    with every hyperparameter pinned by hp.Fixed; no tuner bookkeeping."""
    import keras
    import keras_tuner as kt

    from bench.hypermodel import best_epoch

    hp = kt.HyperParameters()
    for name, value in values.items():
        if not name.startswith("tuner/"):
            hp.Fixed(name, value)
    trial_seed = SEED * 1000 + int(trial_id)
    start = probe.mark("trial_start")
    keras.utils.set_random_seed(trial_seed)
    keras.backend.clear_session(free_memory=free_memory)
    model = hypermodel.build(hp)
    result = hypermodel.fit(hp, model, epochs=epochs, seed=trial_seed)
    end = probe.mark("trial_end")
    history = result["history"]
    best = best_epoch(history, "val_auc")
    del model
    return {"split": probe.split(start, end), "val_auc": history["val_auc"][best], "best_epoch": best + 1,
            "epochs_run": len(history["loss"]), "phase_epochs": result["phase_epochs"]}


# --------------------------------------------------------------------------- helpers
def epochs_text(sp: dict) -> str:
    """Epoch seconds of each training phase, e.g. '0.73 0.06 | 11.85 11.15'."""
    return " | ".join(" ".join(f"{d:.2f}" for d in call) for call in sp["per_call"]) or "-"


def fixed_overhead(sp: dict) -> float:
    """Trial seconds minus its epochs at the trial's own steady (2nd+) epoch time."""
    steady = med(sp["later"])
    return sp["wall"] - sp["epochs"] * steady if steady is not None else float("nan")


def head_text(values: dict) -> str:
    parts = [values.get("pooling", "?")]
    for i in range(int(values.get("dense_layers", 0))):
        parts.append(f"{values.get(f'units_{i}')}/{round(float(values.get(f'dropout_{i}', 0.0)), 2)}")
    return " ".join(parts)


def instrument_tuner(tuner, probe: Probe) -> dict:
    """Wrap on_trial_begin / run_trial / on_trial_end of this tuner instance to mark times
    and read RSS after every trial."""
    marks: dict[str, dict] = {}
    run_trial, begin, end = tuner.run_trial, tuner.on_trial_begin, tuner.on_trial_end

    def on_trial_begin(trial):
        marks[trial.trial_id] = {"begin": probe.mark("trial_begin")}
        return begin(trial)

    def timed_run_trial(trial, *args, **kwargs):
        m = marks.setdefault(trial.trial_id, {})
        m["run_start"] = probe.mark("run_start")
        try:
            return run_trial(trial, *args, **kwargs)
        finally:
            m["run_end"] = probe.mark("run_end")

    def on_trial_end(trial):
        result = end(trial)
        m = marks.setdefault(trial.trial_id, {})
        m["end"] = probe.mark("trial_end")
        m.update(proc_status())
        return result

    tuner.on_trial_begin, tuner.run_trial, tuner.on_trial_end = on_trial_begin, timed_run_trial, on_trial_end
    return marks


def setup(data: Path, folder: Path, trials: int, epochs: int, max_unfreeze: int):
    """prepare_run + the BackboneSource exactly as bench.pipeline.run_backbone builds it."""
    import backbones
    import bench.search
    from bench.run import RunConfig, prepare_run

    config = RunConfig(data=data, backbones=[BACKBONE], weights=WEIGHTS, seed=SEED, image_size=IMAGE_SIZE,
                       out=folder, name="speed", tuner="random", max_trials=trials, epochs=epochs,
                       max_unfreeze=max_unfreeze, augment=False, baseline=False)
    run = prepare_run(config)
    record = backbones.get(BACKBONE)
    if hasattr(bench.search, "source_for"):
        source = bench.search.source_for(record, WEIGHTS, IMAGE_SIZE, run.path, run.index.root, run.split, SEED)
    else:  # older bench: the same construction as bench.pipeline.run_backbone
        from bench.data import load_images

        train_rows = run.split.rows("train")
        spread = train_rows[:: max(1, len(train_rows) // 64)][:64]
        source = bench.search.BackboneSource(record, WEIGHTS, IMAGE_SIZE, run.path / record.name, SEED,
                                             lambda: load_images(run.index.root, spread, IMAGE_SIZE))
    return run, source


def trial_data(x_train, x_val, y_train, y_val, n_classes, cfg):
    from bench.hypermodel import TrialData, balanced_class_weight

    return TrialData(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, n_classes=n_classes,
                     class_weight=balanced_class_weight(y_train, n_classes) if cfg.class_weights else None,
                     batch_size=cfg.batch_size, patience=cfg.patience, objective=cfg.objective)


def forward_seconds(logs: list[str]) -> float:
    """Sum of 'cached <part> features of N images in Xs' lines (the bare forward passes)."""
    total = 0.0
    for line in logs:
        if " features of " in line and line.rstrip().endswith("s"):
            total += float(line.rsplit(" in ", 1)[1].rstrip("s"))
    return total


# --------------------------------------------------------------------------- memory child
def memory_child(run_dir: Path, data: Path, trials: int, epochs: int, size: int, cheap: bool) -> None:
    """A fresh process: load the cached features, run a RandomSearch, report RSS per trial."""
    import backbones
    from bench.hypermodel import BenchHyperModel
    from bench.search import BackboneSource, SearchConfig, cached_features, make_tuner
    from bench.split import read_split

    before_import = proc_status()
    split = read_split(run_dir / "split.json")
    record = backbones.get(BACKBONE)
    source = BackboneSource(record, WEIGHTS, size, run_dir / record.name, SEED)  # weights file exists
    cfg = SearchConfig(tuner="random", max_trials=trials, epochs=epochs, max_unfreeze=0, seed=SEED)
    logs: list[str] = []
    x_train, x_val, y_train, y_val, shapes = cached_features(source, [0], run_dir, data, split, cfg, logs.append)
    data_obj = trial_data(x_train, x_val, y_train, y_val, len(split.classes), cfg)
    source.last_base = None
    if cheap:
        class CheapHeads(BenchHyperModel):
            """bench's search space with pooling pinned to 'avg' (dense layers, units, dropout
            and learning rate still searched): every head is small, so RSS growth is leakage."""

            def build(self, hp):
                hp.Fixed("pooling", "avg")
                return super().build(hp)

        hypermodel = CheapHeads([0], shapes, data_obj, source.top)
    else:
        hypermodel = BenchHyperModel([0], shapes, data_obj, source.top)
    tuner = make_tuner(hypermodel, cfg, run_dir / ("memory-cheap" if cheap else "memory-full"), "tuner",
                       lambda m: None)
    probe = Probe()
    with probe:
        marks = instrument_tuner(tuner, probe)
        loaded = proc_status()
        t0 = time.perf_counter()
        tuner.search(verbose=0)
        seconds = time.perf_counter() - t0
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        m = marks.get(trial_id, {})
        rows.append({"trial": trial_id, "head": head_text(trial.hyperparameters.values), "status": trial.status,
                     "rss": m.get("VmRSS"), "hwm": m.get("VmHWM")})
    print(MEMORY_MARK + json.dumps({"rows": rows, "seconds": seconds, "start": before_import, "loaded": loaded,
                                    "cache_logs": logs}), flush=True)


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few trials/epochs, no naive baseline (smoke run)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"image folder (default {DEFAULT_DATA})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder (path is printed)")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-trials", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--memory-epochs", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory-size", type=int, default=IMAGE_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--memory-cheap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    data = args.data.expanduser().resolve()
    if not data.is_dir():
        print(f"error: data folder {data} not found. search_speed.py measures on the brain MRI images "
              f"(one sub-folder per class, e.g. 'yes'/'no'); put them at {DEFAULT_DATA} or pass --data FOLDER.",
              file=sys.stderr)
        return 2
    if args.memory_child:
        memory_child(args.memory_child, data, args.memory_trials, args.memory_epochs, args.memory_size, args.memory_cheap)
        return 0

    settings = QUICK if args.quick else FULL
    t_script = time.perf_counter()
    load_start = os.getloadavg()

    import keras
    import keras_tuner as kt
    import tensorflow as tf
    from tabulate import tabulate

    from bench.data import load_images
    from bench.hypermodel import BenchHyperModel
    from bench.search import cached_features, make_tuner, trials_table

    out: list[str] = []

    def emit(text: str = "") -> None:
        out.append(text)
        print(text, flush=True)

    def table(rows, headers) -> None:
        emit(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        emit()

    emit("# bench search-speed benchmark (issue #3 targets)")
    emit()
    emit(f"command: {shlex.join([sys.executable, *sys.argv])}")
    emit(f"mode: {'QUICK (smoke run: figures are not comparable with the targets)' if args.quick else 'full'}")
    emit(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
         f"tensorflow {tf.__version__}, keras {keras.__version__}, keras-tuner {kt.__version__}, "
         f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    emit(f"load average at start (1/5/15 min): {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}")
    emit(f"data: {data}; backbone {BACKBONE}, weights {WEIGHTS}, image size {IMAGE_SIZE}, seed {SEED}")
    emit()

    folder = Path(tempfile.mkdtemp(prefix="bench-search-speed-"))
    try:
        # ---------------------------------------------------------------- 1. frozen search
        progress(f"preparing run folder in {folder}")
        t0 = time.perf_counter()
        run, source = setup(data, folder, settings["trials"], settings["epochs"], max_unfreeze=0)
        t_prepare = time.perf_counter() - t0
        cfg = run.config.search_config()
        sizes = {s: len(run.split.rows(s)) for s in ("train", "val", "test")}
        n_classes = len(run.split.classes)
        emit(f"split: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test images, "
             f"classes {run.split.classes}")
        emit()

        progress("building backbone + BatchNorm calibration (weights none)")
        import bench.search

        calibrate, calib = bench.search.calibrate_batchnorm, {"s": 0.0}

        def timed_calibrate(*a, **k):
            c0 = time.perf_counter()
            try:
                return calibrate(*a, **k)
            finally:
                calib["s"] += time.perf_counter() - c0

        bench.search.calibrate_batchnorm = timed_calibrate
        t0 = time.perf_counter()
        try:
            source.base()
        finally:
            bench.search.calibrate_batchnorm = calibrate
        t_calibrate = time.perf_counter() - t0
        source.last_base = None

        progress("caching depth-0 features (fresh cache folder)")
        logs: list[str] = []
        t0 = time.perf_counter()
        x_train, x_val, y_train, y_val, shapes = cached_features(source, [0], run.path, run.index.root, run.split,
                                                                 cfg, logs.append)
        t_cache = time.perf_counter() - t0
        t_forward = forward_seconds(logs)
        source.last_base = None
        data_obj = trial_data(x_train, x_val, y_train, y_val, n_classes, cfg)

        progress(f"RandomSearch: {cfg.max_trials} trials x {cfg.epochs} epochs on cached features")
        hypermodel = BenchHyperModel([0], shapes, data_obj, source.top)
        probe = Probe()
        with probe:
            t0 = time.perf_counter()
            tuner = make_tuner(hypermodel, cfg, run.path / BACKBONE, "tuner", lambda m: progress(m.strip()))
            marks = instrument_tuner(tuner, probe)
            tuner.search(verbose=0)
            t_search = time.perf_counter() - t0
        trials = trials_table(tuner)
        search_values = {tid: dict(t.hyperparameters.values) for tid, t in tuner.oracle.trials.items()}
        total = t_cache + t_search

        emit(f"## 1. Frozen search: {cfg.max_trials} trials x {cfg.epochs} epochs, depth 0, no augmentation, "
             f"RandomSearch {load_note()}")
        emit()
        rows = [
            ["scan + split (prepare_run; not part of the target)", fmt_s(t_prepare)],
            ["backbone build + BatchNorm calibration on 64 train images (weights none only; not in total)",
             fmt_s(t_calibrate)],
            ["(cal) of which calibrate_batchnorm (one eager training-mode pass over 64 images)", fmt_s(calib["s"])],
            [f"(a) cached_features, fresh cache ({sizes['train'] + sizes['val']} train+val images)", fmt_s(t_cache)],
            ["(a) of which bare forward pass (run_prefix)", fmt_s(t_forward)],
            ["(a) of which build + load weights, fingerprint, load images, save cache", fmt_s(t_cache - t_forward)],
            [f"(b) search on the cache ({cfg.max_trials} trials)", fmt_s(t_search)],
            ["(c) total = (a) + (b)", fmt_s(total)],
            ["total / (a) [target <= 3x]", f"{total / t_cache:.2f}x"],
            ["total / bare forward pass", f"{total / t_forward:.2f}x" if t_forward else "-"],
        ]
        table(rows, ["frozen search", "seconds"])

        per_trial, last_end = [], None
        steady_all = []
        for tid in sorted(marks):
            m = marks[tid]
            if "begin" not in m or "end" not in m:
                continue
            sp = probe.split(m["begin"], m["end"])
            gap = probe.events[m["begin"]][1] - last_end if last_end is not None else None
            last_end = probe.events[m["end"]][1]
            tuner_s = (probe.events[m["run_start"]][1] - probe.events[m["begin"]][1]) + \
                      (probe.events[m["end"]][1] - probe.events[m["run_end"]][1])
            steady_all.extend(sp["later"])
            per_trial.append((tid, sp, gap, tuner_s))
        steady_global = med(steady_all)
        rows, fixed_all, epoch_share = [], [], []
        by_id = trials.set_index("trial") if len(trials) else None
        for tid, sp, gap, tuner_s in per_trial:
            values = search_values[tid]
            steady = med(sp["later"]) or steady_global or 0.0
            fixed = sp["wall"] - sp["epochs"] * steady
            fixed_all.append(fixed)
            epoch_share.append(sp["epochs"] * steady)
            auc = by_id.loc[tid].get("val_auc") if by_id is not None and tid in by_id.index else None
            rows.append([tid, head_text(values), f"{values['learning_rate']:.2e}", sp["epochs"],
                         fmt_s(auc, 4) if auc is not None else "-", fmt_s(sp["wall"]), fmt_s(sp["build"]),
                         fmt_s(sp["first_epoch"]), fmt_s(med(sp["later"]), 3), fmt_s(sp["tensorboard"]),
                         fmt_s(sp["after"]), fmt_s(tuner_s), fmt_s(gap), fmt_s(fixed)])
        table(rows, ["trial", "head (pool units/dropout)", "lr", "epochs", "val_auc", "trial s", "build s",
                     "epoch 1 s (+trace)", "epoch 2+ s (median)", "tensorboard s", "after train s",
                     "tuner s", "gap before s", "fixed overhead s"])
        walls = [sp["wall"] for _, sp, _, _ in per_trial]
        gaps = [g for _, _, g, _ in per_trial if g is not None]
        if walls:
            emit(f"per-trial seconds: min {min(walls):.2f} / median {med(walls):.2f} / max {max(walls):.2f}; "
                 f"fixed overhead per trial median {med(fixed_all):.2f}s "
                 f"(= trial s - epochs x steady epoch; build, tf.function tracing, TensorBoard, checkpoint, "
                 f"tuner); steady epoch median {fmt_s(steady_global, 3)}s")
            emit(f"search time split: {sum(fixed_all):.1f}s fixed overhead + {sum(epoch_share):.1f}s epochs + "
                 f"{sum(gaps):.1f}s between trials (oracle) + "
                 f"{t_search - sum(walls) - sum(gaps):.1f}s outside trials (tuner setup, end of search)")
            emit()

        # ---------------------------------------------------------------- 2. naive baseline
        naive_cls = naive_hypermodel_class()
        ids = sorted(search_values)
        naive_rows, compare_rows = [], []
        if settings["naive"]:
            emit(f"## 2. Naive baseline: full model (image -> BackbonePreprocess -> frozen Xception -> head), "
                 f"backbone forward pass every epoch {load_note()}")
            emit()
            progress("loading images for the naive model")
            t0 = time.perf_counter()
            images_train = load_images(run.index.root, run.split.rows("train"), IMAGE_SIZE)
            images_val = load_images(run.index.root, run.split.rows("val"), IMAGE_SIZE)
            t_images = time.perf_counter() - t0
            naive = naive_cls([0], shapes, data_obj, source, images_train, images_val)
            chosen = ids[: settings["compare_trials"]]
            n_epochs = settings["compare_epochs"]
            naive_splits = []
            with probe:
                for tid in chosen:
                    values = search_values[tid]
                    progress(f"trial {tid} ({head_text(values)}): cached, {n_epochs} epochs")
                    cached = run_like_tuner(hypermodel, values, tid, n_epochs, probe, free_memory=False)
                    progress(f"trial {tid}: naive, {n_epochs} epochs")
                    slow = run_like_tuner(naive, values, tid, n_epochs, probe, free_memory=True)
                    naive_splits.append(slow["split"])
                    compare_rows.append([tid, head_text(values), f"{values['learning_rate']:.2e}", n_epochs,
                                         fmt_s(cached["val_auc"], 4), fmt_s(slow["val_auc"], 4),
                                         f"{cached['best_epoch']}/{slow['best_epoch']}",
                                         fmt_s(cached["split"]["wall"]), fmt_s(slow["split"]["wall"]),
                                         epochs_text(slow["split"])])
            naive.base = None
            source.last_base = None
            keras.backend.clear_session(free_memory=True)
            naive_steady = med([d for sp in naive_splits for d in sp["later"]]) or \
                sum(sp["train_total"] for sp in naive_splits) / max(1, sum(sp["epochs"] for sp in naive_splits))
            naive_fixed = med([fixed_overhead(sp) for sp in naive_splits])
            naive_epochs = sum(sp["epochs"] for sp in naive_splits)
            naive_wall = sum(sp["wall"] for sp in naive_splits)
            epochs_run = [by_id.loc[tid]["epochs_run"] for tid in ids
                          if by_id is not None and tid in by_id.index and "epochs_run" in by_id.columns]
            projected = t_images + sum(naive_fixed + e * naive_steady for e in epochs_run)
            projected_full = t_images + len(ids) * (naive_fixed + cfg.epochs * naive_steady)
            rows = [
                ["naive trials measured (trials x epochs)", f"{len(naive_splits)} x {n_epochs}"],
                ["naive seconds, measured", fmt_s(naive_wall)],
                ["naive seconds per trial-epoch (measured total / epochs)", fmt_s(naive_wall / naive_epochs)],
                ["naive steady epoch (median of epochs 2+, both trials)", fmt_s(naive_steady)],
                ["naive fixed overhead per trial (median of trial s - epochs x its own steady epoch: build, "
                 "load weights, tracing)", fmt_s(naive_fixed)],
                ["naive one-off image loading", fmt_s(t_images)],
                [f"projected naive search, same {len(ids)} trials with their epochs run ({int(sum(epochs_run))})",
                 fmt_s(projected, 0)],
                [f"projected naive search, {len(ids)} x {cfg.epochs} epochs (no early stopping)",
                 fmt_s(projected_full, 0)],
                ["cached total (a)+(b) from section 1", fmt_s(total)],
                ["speed-up: projected naive / cached total [target >= 40x]", f"{projected / total:.1f}x"],
                ["speed-up: projected naive / cached search only (b)", f"{(projected - t_images) / t_search:.1f}x"],
                ["cross-check, load-independent: naive >= (b) + epochs run x bare forward pass of (a), "
                 "both measured under the same load; speed-up >=", f"{(t_search + sum(epochs_run) * t_forward) / total:.1f}x"],
                ["per trial-epoch: naive steady epoch / cached steady epoch",
                 f"{naive_steady / steady_global:.0f}x" if steady_global else "-"],
            ]
            table(rows, ["naive baseline", "value"])
            emit(f"same trials both ways (same hyperparameters, trial seed {SEED}*1000+trial id, "
                 f"{n_epochs} epochs, same backbone.weights.h5):")
            table(compare_rows, ["trial", "head", "lr", "epochs", "val_auc cached", "val_auc naive",
                                 "best epoch c/n", "cached s", "naive s", "naive epochs s (1st incl. tracing)"])
        else:
            emit("## 2. Naive baseline: skipped (--quick)")
            emit()

        # ---------------------------------------------------------------- 3. partial unfreeze
        depth = 2
        p_trials, p_epochs = settings["partial_trials"], settings["partial_epochs"]
        emit(f"## 3. Partial unfreeze: top {depth} blocks of Xception (cut at "
             f"{source.record.cut_layer(depth)}), {p_trials} trials x {p_epochs} epochs "
             f"({max(1, p_epochs // 2)} head-only + {p_epochs - max(1, p_epochs // 2)} fine-tune) {load_note()}")
        emit()
        progress(f"caching depths [0, {depth}]")
        logs2: list[str] = []
        t0 = time.perf_counter()
        x_train2, x_val2, y_train2, y_val2, shapes2 = cached_features(source, [0, depth], run.path, run.index.root,
                                                                      run.split, cfg, logs2.append)
        t_cache2 = time.perf_counter() - t0
        source.last_base = None
        data2 = trial_data(x_train2, x_val2, y_train2, y_val2, n_classes, cfg)
        cached_hm = BenchHyperModel([0, depth], shapes2, data2, source.top)
        chosen = ids[:p_trials]
        partial_rows, cached_trials_s, naive_trials_s = [], [], []
        naive_p = None
        if settings["naive"]:
            images_train = load_images(run.index.root, run.split.rows("train"), IMAGE_SIZE)
            images_val = load_images(run.index.root, run.split.rows("val"), IMAGE_SIZE)
            naive_p = naive_cls([0, depth], shapes2, data2, source, images_train, images_val)
        with probe:
            for tid in chosen:
                values = {**search_values[tid], "unfreeze": depth}
                progress(f"depth {depth} trial {tid} ({head_text(values)}): cached")
                cached = run_like_tuner(cached_hm, values, tid, p_epochs, probe, free_memory=True)
                source.last_base = None
                cached_trials_s.append(cached["split"]["wall"])
                row = [tid, head_text(values), f"{values['learning_rate']:.2e}",
                       "+".join(map(str, cached["phase_epochs"])), fmt_s(cached["val_auc"], 4)]
                c_epochs = epochs_text(cached["split"])
                if naive_p is not None:
                    progress(f"depth {depth} trial {tid}: naive")
                    slow = run_like_tuner(naive_p, values, tid, p_epochs, probe, free_memory=True)
                    naive_p.base = None
                    source.last_base = None
                    naive_trials_s.append(slow["split"]["wall"])
                    row += [fmt_s(slow["val_auc"], 4), fmt_s(cached["split"]["wall"]), fmt_s(slow["split"]["wall"]),
                            c_epochs, epochs_text(slow["split"])]
                else:
                    row += ["-", fmt_s(cached["split"]["wall"]), "-", c_epochs, "-"]
                partial_rows.append(row)
        keras.backend.clear_session(free_memory=True)
        cached_p_total = t_cache2 + sum(cached_trials_s)
        table(partial_rows, ["trial", "head", "lr", "epochs (phase1+2)", "val_auc cached", "val_auc naive",
                             "cached s", "naive s", "cached epochs s (phase1 | phase2)",
                             "naive epochs s (phase1 | phase2)"])
        rows = [
            [f"cached_features depths [0, {depth}] (one forward pass, both cuts)", fmt_s(t_cache2)],
            ["of which bare forward pass", fmt_s(forward_seconds(logs2))],
            ["cached trials", fmt_s(sum(cached_trials_s))],
            ["cached total (caching + trials)", fmt_s(cached_p_total)],
        ]
        if naive_trials_s:
            naive_p_total = sum(naive_trials_s)
            rows += [["naive trials (full model, top 2 blocks trainable in phase 2)", fmt_s(naive_p_total)],
                     ["ratio naive / cached total [target >= 3x]", f"{naive_p_total / cached_p_total:.1f}x"],
                     ["ratio naive / cached trials only (cache already there)",
                      f"{naive_p_total / sum(cached_trials_s):.1f}x"]]
            per_c = sum(cached_trials_s) / len(cached_trials_s)
            per_n = naive_p_total / len(naive_trials_s)
            rows.append([f"projected {cfg.max_trials} trials at this size: naive / cached total",
                         f"{cfg.max_trials * per_n / (t_cache2 + cfg.max_trials * per_c):.1f}x"])
        table(rows, [f"depth {depth}", "seconds"])

        # ---------------------------------------------------------------- 4. memory
        m_trials = settings["memory_trials"]
        m_epochs = settings["memory_epochs"]
        emit(f"## 4. Memory: {m_trials}-trial RandomSearch x {m_epochs} epochs on the cached depth-0 features "
             f"(image size {IMAGE_SIZE}; each search in a fresh subprocess, RSS read from /proc/self/status "
             f"after every trial's on_trial_end)")
        emit()
        flat_inputs = 1
        for dim in shapes[0]:
            flat_inputs *= int(dim)
        for cheap in (True, False):
            label = ("4a. cheap heads: pooling pinned to avg, the rest of the space searched (growth here = leakage)"
                     if cheap else f"4b. full search space: flatten heads with up to {flat_inputs // 1000}k x 256 weights "
                     "(peak follows the largest head sampled so far)")
            emit(f"### {label} {load_note()}")
            emit()
            progress(f"memory ({'cheap heads' if cheap else 'full space'}): {m_trials}-trial search in a subprocess")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--memory-child",
                   str(run.path), "--memory-trials", str(m_trials), "--memory-epochs", str(m_epochs),
                   "--memory-size", str(IMAGE_SIZE)] + (["--memory-cheap"] if cheap else [])
            child = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            result = None
            for line in child.stdout.splitlines():
                if line.startswith(MEMORY_MARK):
                    result = json.loads(line[len(MEMORY_MARK):])
            if result is None:
                emit(f"memory subprocess failed (exit {child.returncode}):")
                emit(child.stderr[-3000:])
                continue
            mrows = result["rows"]
            table([[r["trial"], r["head"], r["status"].lower(), fmt_s(r["rss"], 0), fmt_s(r["hwm"], 0)]
                   for r in mrows], ["trial", "head", "status", "VmRSS MiB", "VmHWM (peak) MiB"])
            emit(f"RSS after imports {result['start'].get('VmRSS', 0):.0f} MiB, after loading the cache "
                 f"{result['loaded'].get('VmRSS', 0):.0f} MiB (peak {result['loaded'].get('VmHWM', 0):.0f}); "
                 f"search took {result['seconds']:.1f}s")
            emit()
            if len(mrows) >= 2:
                a, b = mrows[1], mrows[-1]
                rows = []
                for key, name in (("hwm", "peak RSS (VmHWM)"), ("rss", "current RSS (VmRSS)")):
                    if a[key] and b[key]:
                        rows.append([name, f"{a[key]:.0f}", f"{b[key]:.0f}",
                                     f"{100 * (b[key] - a[key]) / a[key]:+.1f} % [target within 15 %]"])
                table(rows, ["memory", "after trial 2 (MiB)", f"after trial {len(mrows)} (MiB)", "growth"])

        load_end = os.getloadavg()
        emit(f"load average at end (1/5/15 min): {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f}")
        emit(f"benchmark wall time: {time.perf_counter() - t_script:.0f}s")
    finally:
        if args.keep:
            emit(f"kept run folder: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
