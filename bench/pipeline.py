"""Search and evaluate every backbone of a run, then rank them.

Per backbone: cache features -> KerasTuner search -> best trial as a full model ->
threshold on val -> one test evaluation -> ``result.json``. A backbone with a
``result.json`` is finished and skipped on ``--resume``; the tuner reloads its own state,
so completed trials are not run again.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Callable

import keras
import keras_tuner as kt
import numpy as np

import backbones
from bench.final import evaluate_on_test, full_model, measure_latency, save_model, write_result
from bench.faults import crash_point
from bench.hypermodel import BenchHyperModel, TrialData, balanced_class_weight
from bench.runfolder import read_json
from bench.config import SearchConfig
from bench.search import best_trial, cached_features, depths_for, make_tuner, source_for, write_trials_csv

Log = Callable[[str], None]
BASELINE = "xception_notebook"

#: The original notebook's recipe: frozen Xception, flatten -> 128 -> dropout 0.5 -> 32.
NOTEBOOK_RECIPE = {
    "unfreeze": 0, "pooling": "flatten", "dense_layers": 2, "units_0": 128, "dropout_0": 0.5,
    "units_1": 32, "dropout_1": 0.0, "learning_rate": 1e-3,
}
NOTEBOOK_EPOCHS = 15


def _recipe_hyperparameters() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    for name, value in NOTEBOOK_RECIPE.items():
        hp.Fixed(name, value)
    return hp


def run_backbone(
    name: str, run_dir: Path, data_root: Path, split, weights: str, image_size: int | None,
    cfg: SearchConfig, log: Log, baseline: bool = False, cluster=None, job: int = 0,
) -> dict | None:
    """Search (or the fixed notebook recipe when ``baseline``), evaluate, write result.json.

    Distributed (``cluster``): the chief serves the search of job ``job`` and evaluates;
    a worker only runs trials and returns None.
    """
    record = backbones.get("xception" if baseline else name)
    size = image_size or record.default_size
    out_dir = run_dir / name
    result_path = out_dir / "result.json"
    trials_path = out_dir / "trials.csv"
    worker = cluster is not None and not cluster.is_chief
    if result_path.exists():
        log(f"{name}: finished earlier, skipped")
        return None if worker else read_json(result_path)
    if worker and trials_path.exists():
        log(f"{name}: search finished (the chief evaluates it), skipped")
        return None
    t0 = time.perf_counter()
    source = source_for(record, weights, size, run_dir, data_root, split, cfg.seed)
    depths = [0] if baseline else depths_for(record, cfg.max_unfreeze)
    x_train, x_val, y_train, y_val, shapes = cached_features(source, depths, run_dir, data_root, split, cfg, log)
    n_classes = len(split.classes)
    data = TrialData(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, n_classes=n_classes,
        class_weight=balanced_class_weight(y_train, n_classes) if cfg.class_weights and not baseline else None,
        batch_size=cfg.batch_size, patience=cfg.patience, objective=cfg.objective,
    )
    hypermodel = BenchHyperModel(depths, shapes, data, source.top)
    if baseline:
        cfg = SearchConfig(**{**cfg.__dict__, "tuner": "random", "max_trials": 1,
                              "epochs": cfg.epochs if cfg.epochs != SearchConfig.epochs else NOTEBOOK_EPOCHS})
        data.patience = cfg.epochs  # the notebook trained every epoch; its best epoch is restored
    tuner = make_tuner(hypermodel, cfg, out_dir, "tuner", log,
                       hyperparameters=_recipe_hyperparameters() if baseline else None, cluster=cluster, job=job,
                       search_done=lambda: trials_path.exists() or result_path.exists())
    budget = f"up to {cfg.epochs} epochs a trial" if cfg.tuner == "hyperband" else f"{cfg.max_trials} trials, {cfg.epochs} epochs"
    log(f"{name}: searching ({cfg.tuner}, {budget}, unfreeze depths {depths}, {size}px)")
    tuner.search(verbose=0)
    if worker:
        keras.backend.clear_session()
        gc.collect()
        return None
    table = write_trials_csv(tuner, trials_path)
    search_seconds = time.perf_counter() - t0
    done = int((table["status"] == "completed").sum()) if len(table) else 0
    failed = len(table) - done
    row = {
        "backbone": name, "family": record.family, "image_size": size, "weights": weights,
        "baseline": baseline, "trials_done": done, "trials_failed": failed,
        "search_seconds": round(search_seconds, 1), "objective": cfg.objective,
        "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,  # float16: --mixed-precision
    }
    trial = best_trial(tuner)
    if trial is None or done == 0:
        row.update(status="failed", message="every trial failed; see trials.csv")
        write_result(result_path, row)
        return row
    model = full_model(source, tuner, trial)
    save_model(model, out_dir / "best_model.keras")
    crash_point("final")
    metrics = evaluate_on_test(model, split, data_root, size, out_dir, cfg.seed, cfg.batch_size)
    row.update(status="ok", best_trial=trial.trial_id, val_objective=trial.score)
    row.update({f"hp_{k}": v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")})
    row.update({f"test_{k}": v for k, v in metrics.items() if k != "confusion_matrix"})
    row["test_confusion_matrix"] = metrics["confusion_matrix"]
    row["params_total"] = int(model.count_params())
    row["params_trainable"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    row.update(measure_latency(model, size))
    write_result(result_path, row)
    keras.backend.clear_session()
    gc.collect()
    return row
