"""The renderer of ``search_speed.py``: every section's figures as Markdown-ish text."""

from __future__ import annotations

import statistics

from tabulate import tabulate


def f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def times(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}x"


def head_text(values: dict) -> str:
    parts = [values.get("pooling", "?")]
    for i in range(int(values.get("dense_layers", 0))):
        parts.append(f"{values.get(f'units_{i}')}/{round(float(values.get(f'dropout_{i}', 0.0)), 2)}")
    return " ".join(parts)


def epochs_text(trial: dict) -> str:
    """Epoch seconds of each training phase, e.g. '0.73 0.06 | 11.85 11.15'."""
    return " | ".join(" ".join(f"{e:.2f}" for e in phase) for phase in trial["epoch_seconds"]) or "-"


def load_text(load) -> str:
    return f"(load average then: {load[0]:.2f} 1-min, {load[1]:.2f} 5-min)"


def render(results: dict) -> None:
    """Print every figure in ``results`` (the dicts the sections returned)."""
    lines: list[str] = []

    def emit(text: str = "") -> None:
        lines.append(text)

    def table(rows, headers) -> None:
        emit(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        emit()

    meta = results["meta"]
    emit("# bench search-speed benchmark (targets in brackets)")
    emit()
    emit(f"command: {meta['command']}")
    emit(f"mode: {'QUICK (smoke run: figures are not comparable with the targets)' if meta['quick'] else 'full'}")
    emit(f"machine: {meta['machine']}")
    emit("load average at start (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in meta["load_start"]))
    emit(f"data: {meta['data']}; backbone {meta['backbone']}, weights {meta['weights']}, "
         f"image size {meta['image_size']}, seed {meta['seed']}")
    emit()
    if "frozen" in results:
        _frozen(results["frozen"], emit, table)
    if "paths" in results:
        _paths(results["paths"], emit, table)
    if "naive" in results:
        _naive(results["naive"], results["frozen"], emit, table)
    if "partial" in results:
        _partial(results["partial"], emit, table)
    if "memory" in results:
        _memory(results["memory"], results["frozen"], emit, table)
    emit("load average at end (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in meta["load_end"]))
    emit(f"benchmark wall time: {meta['wall_s']:.0f}s")
    if meta.get("kept"):
        emit(f"kept run folders: {meta['kept']}")
    print("\n".join(lines), flush=True)


def _frozen(r: dict, emit, table) -> None:
    sizes = r["sizes"]
    emit(f"split: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test images, classes {r['classes']}")
    emit()
    emit(f"## 1. Frozen search: {r['trials_n']} trials x {r['epochs']} epochs, depth 0, no augmentation, "
         f"the default tuner (Bayesian optimisation) {load_text(r['load'])}")
    emit()
    cache, forward, total = r["cache_s"], r["forward_s"], r["total_s"]
    table([
        ["scan + split (prepare_run; not part of the target)", f(r["prepare_s"])],
        ["backbone build + BatchNorm calibration, backbone.weights.npz written (weights none only; not in total)",
         f(r["backbone_s"])],
        [(f"(a) prepare_search: cached_features, fresh cache ({sizes['train'] + sizes['val']} train+val "
          "images), + tuner"), f(cache)],
        ["(a) of which bare forward pass (run_prefix)", f(forward)],
        ["(a) of which build + load weights, fingerprint, load images, save cache, make tuner", f(cache - forward)],
        [f"(b) search on the cache ({r['trials_n']} trials)", f(r["search_s"])],
        ["(c) total = (a) + (b)", f(total)],
        ["total / (a) [target <= 1.3x]", times(total / cache, 2)],
        ["total / bare forward pass", times(total / forward, 2) if forward else "-"],
    ], ["frozen search", "seconds"])
    trials = r["trials"]
    table([[t["trial"], head_text(t["values"]), f"{t['values']['learning_rate']:.2e}", t["epochs_run"],
            f(t["val_auc"], 4), f(t["seconds"]), f(t["build"]), f(t["first_epoch"]), f(t["steady_epoch"], 3),
            f(t["in_fit"]), f(t["after_fit"]), f(t["tuner"]), f(t["fixed"])] for t in trials],
          ["trial", "head (pool units/dropout)", "lr", "epochs", "val_auc", "trial s", "build s",
           "epoch 1 s (+trace)", "epoch 2+ s (median)", "fit outside epochs s", "tensorboard + checkpoint s",
           "tuner s (after previous trial)", "fixed overhead s"])
    walls = [t["seconds"] for t in trials if t["seconds"] is not None]
    if walls:
        emit(f"per-trial seconds: min {min(walls):.2f} / median {statistics.median(walls):.2f} / max {max(walls):.2f}; "
             f"fixed overhead per trial median {f(statistics.median([t['fixed'] for t in trials if t['fixed'] is not None] or [0.0]))}s "
             f"(= trial s - epochs x steady epoch: build, tracing, TensorBoard, checkpoint) [target <= 0.05s]; "
             f"steady epoch median {f(r['steady_epoch_s'], 3)}s")
        emit(f"search time split: {r['fixed_sum_s']:.1f}s fixed overhead + {r['epochs_sum_s']:.1f}s epochs + "
             f"{r['tuner_sum_s']:.1f}s tuner bookkeeping between trials (oracle, trial state, gc) + "
             f"{r['outside_s']:.1f}s outside trials (end of search)")
        if r.get("together_max", 1) > 1:
            emit(f"trials trained together (bench.search.cohort): up to {r['together_max']} heads on the same rows "
                 "shared each batch; a trial's seconds are its share of their time, its epochs its own, and the "
                 "time between trials is given as a sum only ('-' per trial)")
        emit()


def _paths(r: dict, emit, table) -> None:
    emit(f"## 1b. The same trials by both training paths ({r['epochs']} epochs, trial seed = seed x 1000) "
         f"{load_text(r['load'])}")
    emit()
    emit("numpy: dense heads trained without a Keras model (bench.search.head_training, the default: numpy arrays, "
         "or TensorFlow variables and eager ops for heads over its weight limit); keras: the Keras-model loop "
         "(bench.search.trainer). The numpy path "
         "draws its initial weights (same distribution) and dropout masks from numpy's generator, so the two "
         "differ by seed noise; from the same initial weights and without dropout they agree to float32 rounding "
         "(tests/test_head_training.py).")
    emit()
    table([[row["trial"], head_text(row["values"]), f"{row['values']['learning_rate']:.2e}",
            f(row["numpy"]["val_auc"], 4), f(row["keras"]["val_auc"], 4),
            f((row["numpy"]["val_auc"] or 0) - (row["keras"]["val_auc"] or 0), 4),
            f"{row['numpy']['best_epoch']}/{row['keras']['best_epoch']}",
            f(row["numpy"]["seconds"], 3), f(row["keras"]["seconds"], 3)] for row in r["rows"]],
          ["trial", "head", "lr", "val_auc numpy", "val_auc keras", "difference", "best epoch n/k", "numpy s",
           "keras s"])
    d = r["auc_diffs"]
    if d:
        emit(f"val AUC difference numpy - keras over {len(d)} trials: mean {statistics.mean(d):+.4f}, "
             f"largest |difference| {max(map(abs, d)):.4f}; seconds {r['numpy_s']:.1f} (numpy) against "
             f"{r['keras_s']:.1f} (keras)")
        emit()


def _naive(r: dict, frozen: dict, emit, table) -> None:
    if r.get("skipped"):
        emit("## 2. Naive baseline: skipped (--quick)")
        emit()
        return
    emit("## 2. Naive baseline: full model (image -> BackbonePreprocess -> frozen Xception -> head), backbone "
         f"forward pass every epoch {load_text(r['load'])}")
    emit()
    pairs, n = r["pairs"], len(frozen["trials"])
    table([
        ["naive trials measured (trials x epochs)", f"{len(pairs)} x {r['epochs']}"],
        ["naive seconds, measured", f(r["measured_s"])],
        ["naive seconds per trial-epoch (measured total / epochs)", f(r["measured_s"] / max(1, r["measured_epochs"]))],
        ["naive steady epoch (median of epochs 2+)", f(r["steady_epoch_s"])],
        [("naive fixed overhead per trial (median of trial s - epochs x steady epoch: build, restore weights, "
          "tracing, checkpoint)"), f(r["fixed_s"])],
        ["naive one-off image loading", f(r["images_s"])],
        [f"projected naive search, same {n} trials with their epochs run ({r['epochs_run']})", f(r["projected_s"], 0)],
        [f"projected naive search, {n} x {frozen['epochs']} epochs (no early stopping)", f(r["projected_full_s"], 0)],
        ["cached total (a)+(b) from section 1", f(frozen["total_s"])],
        ["speed-up: projected naive / cached total [target >= 40x]", times(r["speedup"])],
        ["speed-up: projected naive / cached search only (b)", times(r["speedup_search"])],
        [("cross-check, load-independent: naive >= (b) + epochs run x bare forward pass of (a), both measured "
          "under the same load; speed-up >="), times(r["cross_check"])],
        ["per trial-epoch: naive steady epoch / cached steady epoch", times(r["epoch_ratio"], 0)],
    ], ["naive baseline", "value"])
    emit(f"same trials both ways (same hyperparameters, trial seed = seed x 1000, {r['epochs']} epochs, "
         "same backbone.weights.npz):")
    table([[p["trial"], head_text(p["values"]), f"{p['values']['learning_rate']:.2e}", r["epochs"],
            f(p["cached"]["val_auc"], 4), f(p["naive"]["val_auc"], 4),
            f"{p['cached']['best_epoch']}/{p['naive']['best_epoch']}", f(p["cached"]["seconds"]),
            f(p["naive"]["seconds"]), epochs_text(p["naive"])] for p in pairs],
          ["trial", "head", "lr", "epochs", "val_auc cached", "val_auc naive", "best epoch c/n", "cached s",
           "naive s", "naive epochs s (1st incl. tracing)"])


def _partial(r: dict, emit, table) -> None:
    warm = max(1, r["epochs"] // 2)
    emit(f"## 3. Partial unfreeze: top {r['depth']} blocks of Xception (cut at {r['cut']}), {r['trials_n']} trials x "
         f"{r['epochs']} epochs ({warm} head-only + {r['epochs'] - warm} fine-tune) {load_text(r['load'])}")
    emit()
    table([[row["trial"], head_text(row["values"]), f"{row['values']['learning_rate']:.2e}",
            "+".join(map(str, row["cached"]["phase_epochs"] or [])), f(row["cached"]["val_auc"], 4),
            f(row["naive"]["val_auc"], 4) if row["naive"] else "-", f(row["cached"]["seconds"]),
            f(row["naive"]["seconds"]) if row["naive"] else "-", epochs_text(row["cached"]),
            epochs_text(row["naive"]) if row["naive"] else "-"] for row in r["rows"]],
          ["trial", "head", "lr", "epochs (phase1+2)", "val_auc cached", "val_auc naive", "cached s", "naive s",
           "cached epochs s (phase1 | phase2)", "naive epochs s (phase1 | phase2)"])
    rows = [
        ["backbone build + BatchNorm calibration (weights none only; not in total)", f(r["backbone_s"])],
        [f"prepare_search, depths {r['depths']} (one forward pass, every cut)", f(r["cache_s"])],
        ["of which bare forward pass", f(r["forward_s"])],
        ["cached trials", f(r["cached_s"])],
        ["cached total (caching + trials)", f(r["cached_total_s"])],
    ]
    if "naive_s" in r:
        rows += [["naive trials (full model, top blocks trainable in phase 2)", f(r["naive_s"])],
                 ["ratio naive / cached total [target >= 3x]", times(r["ratio"])],
                 ["ratio naive / cached trials only (cache already there)", times(r["ratio_trials"])],
                 [f"projected {r['projected_n']} trials at this size: naive / cached total", times(r["projected_ratio"])]]
    table(rows, [f"depth {r['depth']}", "seconds"])


def _memory(r: dict, frozen: dict, emit, table) -> None:
    emit(f"## 4. Memory: {r['trials_n']}-trial search (default tuner) x {r['epochs']} epochs on the cached depth-0 features "
         f"(image size {r['image_size']}; each search in a fresh subprocess, RSS read from /proc/self/status at "
         "the end of every trial)")
    emit()
    labels = {
        "cheap": "4a. cheap heads: pooling pinned to avg, the rest of the space searched (growth = leakage)",
        "default": "4b. the default search space (a flatten head on this map is the output layer alone: "
                   f"{frozen['flatten_inputs'] // 1000}k weights)",
        "no-limit": f"4c. --max-head-weights 0: flatten heads also with hidden layers, up to "
                    f"{frozen['flatten_inputs'] // 1000}k x 256 weights (TensorFlow's allocator keeps the largest "
                    "head's memory once it has held it)",
    }
    for kind, label in labels.items():
        m = r.get(kind)
        if m is None:
            continue
        emit(f"### {label} {load_text(m['load'])}")
        emit()
        if "error" in m:
            emit(f"memory subprocess failed ({m['error']}):")
            emit(m["stderr"])
            continue
        rows = m["rows"]
        table([[x["trial"], head_text(x["values"]), x["status"], f(x["rss"], 0), f(x["hwm"], 0)] for x in rows],
              ["trial", "head", "status", "VmRSS MiB", "VmHWM (peak) MiB"])
        emit(f"RSS at start (after imports) {m['start'].get('VmRSS', 0):.0f} MiB, after loading the cache (prepare_search) "
             f"{m['loaded'].get('VmRSS', 0):.0f} MiB (peak {m['loaded'].get('VmHWM', 0):.0f}); "
             f"search took {m['seconds']:.1f}s")
        emit()
        if m.get("growth"):
            a, b = rows[1], rows[-1]
            table([[name, f(a[key], 0), f(b[key], 0), f"{m['growth'][key]:+.1f} % [target: at most +10 %]"]
                   for key, name in (("hwm", "peak RSS (VmHWM)"), ("rss", "current RSS (VmRSS)"))
                   if key in m["growth"]],
                  ["memory", "after trial 2 (MiB)", f"after trial {len(rows)} (MiB)", "growth"])
