"""Per-backbone search: cache the frozen features, then run KerasTuner over them.

Layout inside the run folder, per backbone ``<run>/<backbone>/``:
``backbone.weights.h5`` (the exact backbone weights of this run, random or pretrained),
``tuner/`` (KerasTuner's project: oracle state, one folder per trial with
``bench_trial.json`` (history, best epoch, seconds) and TensorBoard logs), and
``trials.csv``. Features are cached in ``<run>/cache/`` (see :mod:`bench.features`).
"""

from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path
from typing import Callable

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd

import backbones
from bench.config import SearchConfig
from bench.errors import BenchError, disk_full_message, is_disk_full
from bench.data import augmented_views, label_indices, load_images
from bench.features import FeatureCache, images_fingerprint, run_prefix, weights_fingerprint
from bench.hypermodel import OBJECTIVES, BenchHyperModel, TrialData, balanced_class_weight, best_epoch
from bench.layers import BackbonePreprocess
from bench.runtime import mixed
from bench.runfolder import file_lock, save_via_temp, write_json_atomic, write_text_atomic
from bench.trainer import NonFiniteLoss, write_tensorboard

Log = Callable[[str], None]
GC_EVERY = 5
TUNERS = {"bayesian": kt.BayesianOptimization, "random": kt.RandomSearch, "hyperband": kt.Hyperband}


class BackboneSource:
    """Builds the run's backbone, always with the same weights.

    The first build uses the requested weights (random init seeded by the run seed,
    ImageNet through Keras' cache, or a local file) and saves them to
    ``backbone.weights.h5``; a later process loads that file. Within a process the
    built model is kept and handed out again with its original weights restored
    (building Xception and loading its weights cost ~5 s per fine-tuning trial).
    """

    def __init__(
        self, record, weights: str, image_size: int, folder: Path, seed: int,
        calibration_images: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.record, self.weights, self.image_size, self.seed = record, weights, image_size, seed
        self.weights_file = Path(folder) / "backbone.weights.h5"
        self.calibration_images = calibration_images
        self.last_base: keras.Model | None = None
        self._original: list[np.ndarray] | None = None

    def base(self) -> keras.Model:
        """The backbone with this run's original weights, every layer trainable."""
        if self.last_base is not None and self._original is not None:
            model = self.last_base
            model.set_weights(self._original)  # undo any fine-tuning of an earlier trial
            model.trainable = True
            for layer in model.layers:
                layer.trainable = True
            return model
        if self.weights_file.exists():
            model = self.record.build(weights=None, image_size=self.image_size)
            model.load_weights(self.weights_file)
        else:
            keras.utils.set_random_seed(self.seed)
            spec = backbones.resolve_weights(self.weights)
            model = backbones.build_with_weights(self.record, spec, self.image_size)
            if spec.kind == "none":
                if self.calibration_images is None:
                    raise ValueError("random-init backbones need calibration_images (see calibrate_batchnorm)")
                calibrate_batchnorm(model, self.record.preprocessing, self.calibration_images())
            self.weights_file.parent.mkdir(parents=True, exist_ok=True)
            save_via_temp(self.weights_file, model.save_weights)
        self.last_base, self._original = model, model.get_weights()
        return model

    def top(self, depth: int) -> keras.Model:
        """The layers above unfreeze boundary ``depth``, as a model on the cut tensor."""
        base = self.base()
        cut = base.get_layer(self.record.cut_layer(depth))
        return keras.Model(cut.output, base.output, name="top")

    def prefix(self, depths: list[int], base: keras.Model | None = None) -> keras.Model:
        """Images (uint8) -> the cut tensors of ``depths``, preprocessing included."""
        base = base or self.base()
        extractor = keras.Model(base.input, [base.get_layer(self.record.cut_layer(d)).output for d in depths])
        inputs = keras.Input((self.image_size, self.image_size, 3), name="image")
        outputs = extractor(BackbonePreprocess(self.record.preprocessing)(inputs))
        return keras.Model(inputs, outputs if isinstance(outputs, (list, tuple)) else [outputs], name="prefix")


#: Training images whose statistics initialise BatchNorm of randomly initialised backbones.
CALIBRATION_IMAGES = 32


def source_for(record, weights: str, image_size: int, run_dir: Path, data_root: Path, split, seed: int) -> BackboneSource:
    """The run's :class:`BackboneSource` for ``record`` (weights kept in ``<run>/<record>``)."""
    train_rows = split.rows("train")
    spread = train_rows[:: max(1, len(train_rows) // CALIBRATION_IMAGES)][:CALIBRATION_IMAGES]  # all classes
    return BackboneSource(
        record, weights, image_size, Path(run_dir) / record.name, seed,
        calibration_images=lambda: load_images(data_root, spread, image_size),
    )


def calibrate_batchnorm(base: keras.Model, preprocessing: str, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics from one batch of training images.

    Randomly initialised networks in inference mode shrink activations layer by layer
    (moving variance 1 does not normalise anything): MobileNetV2's final features are
    ~1e-12, Xception's ~1e-5, i.e. constant. One forward pass in training mode with
    momentum 0 makes each BatchNorm's moving mean/variance the batch statistics of its
    input (data-dependent initialisation), so ``--weights none`` gives usable random
    features. Only training images are used. Pretrained weights are never touched.
    """
    bns = [layer for layer in base._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        x = BackbonePreprocess(preprocessing)(images.astype("float32"))
        base(x, training=True)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum


def depths_for(record, max_unfreeze: int) -> list[int]:
    return list(range(0, min(max_unfreeze, len(record.blocks) - 1) + 1))


def cached_features(
    source: BackboneSource, depths: list[int], run_dir: Path, data_root: Path, split, cfg: SearchConfig, log: Log
) -> tuple[dict, dict, np.ndarray, np.ndarray, dict[int, tuple]]:
    """Features of train (+ augmented views) and val for every depth, cached.

    Runs under a lock on the run's cache folder: processes sharing the run folder
    (distributed workers) make the backbone weights and each cache entry once; the
    others wait, then read them.
    """
    with file_lock(Path(run_dir) / "cache" / ".lock"):
        return _cached_features(source, depths, run_dir, data_root, split, cfg, log)


def _cached_features(source, depths, run_dir, data_root, split, cfg, log):
    base = source.base()
    fingerprint = weights_fingerprint(base)
    cache = FeatureCache(run_dir / "cache", log=log)
    rows = {s: split.rows(s) for s in ("train", "val")}
    common = {"backbone": source.record.name, "weights": fingerprint, "size": source.image_size}
    if mixed():
        common["compute"] = "float16"  # features from float16 compute are not those of float32
    parts: dict[str, dict] = {}  # "<part>@<depth>" -> cache key parts
    jobs: dict[str, tuple[str, int]] = {}  # part -> (split, augmented views)
    views = cfg.aug_views if cfg.augment else 0
    for part, (s, n_views) in {"train": ("train", 0), "val": ("val", 0), "aug": ("train", views)}.items():
        if part == "aug" and not n_views:
            continue
        jobs[part] = (s, n_views)
        images = images_fingerprint([r["sha256"] for r in rows[s]])
        for d in depths:
            parts[f"{part}@{d}"] = {**common, "cut": source.record.cut_layer(d), "images": images,
                                    "views": n_views, "aug_seed": cfg.seed if n_views else None}

    def compute() -> dict[str, np.ndarray]:
        prefix = source.prefix(depths, base)
        out = {}
        for part, (s, n_views) in jobs.items():
            images = load_images(data_root, rows[s], source.image_size)
            if n_views:
                images = augmented_views(images, n_views, cfg.seed)
            t0 = time.perf_counter()
            arrays = run_prefix(prefix, images, cfg.batch_size)
            log(f"{source.record.name}: cached {part} features of {len(images)} images in {time.perf_counter() - t0:.1f}s")
            out.update({f"{part}@{d}": a for d, a in zip(depths, arrays)})
        return out

    flat = cache.get_or_compute(parts, compute)
    x_train, x_val = {}, {}
    for d in depths:
        x_train[d] = flat[f"train@{d}"]
        if f"aug@{d}" in flat:
            x_train[d] = np.concatenate([x_train[d], flat[f"aug@{d}"]])
        x_val[d] = flat[f"val@{d}"]
    y_train = label_indices(rows["train"], split.classes)
    y_train = np.concatenate([y_train] * (1 + views))
    y_val = label_indices(rows["val"], split.classes)
    shapes = {d: tuple(x_val[d].shape[1:]) for d in depths}
    return x_train, x_val, y_train, y_val, shapes


class DiskFull(BenchError, kt.errors.FatalError):
    """A trial could not write its results: stops the search (KerasTuner would record
    any other exception as a failed trial and go on, losing every later trial)."""


class BenchTunerMixin:
    """Replaces KerasTuner's run_trial: seeded build, two-phase fit, best-epoch metrics,
    one checkpoint write per trial (only when it is the best so far), a JSON sidecar."""

    bench_epochs: int = 10
    bench_seed: int = 0
    bench_log: Log = staticmethod(lambda msg: None)
    bench_tensorboard: bool = True
    bench_cluster = None  # bench.distributed.Cluster in distributed mode
    bench_job: int = 0  # index of this backbone in the run (the chief serves it on port + index)
    bench_search_done: Callable[[], bool] = staticmethod(lambda: False)

    def run_trial(self, trial, *args, **kwargs):
        try:
            return self._bench_run_trial(trial)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(disk_full_message(exc)) from None
            raise

    def _bench_run_trial(self, trial):
        hp = trial.hyperparameters
        epochs = hp.values.get("tuner/epochs", self.bench_epochs) - hp.values.get("tuner/initial_epoch", 0)
        trial_seed = self.bench_seed * 1000 + int(trial.trial_id)
        keras.utils.set_random_seed(trial_seed)
        t0 = time.perf_counter()
        model = self._try_build(hp)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        try:
            result = self.hypermodel.fit(hp, model, epochs=max(1, epochs), seed=trial_seed)
        except NonFiniteLoss as exc:
            raise kt.errors.FailedTrialError(str(exc)) from None
        history = {k: [float(v) for v in vals] for k, vals in result["history"].items()}
        if self.bench_tensorboard:
            write_tensorboard(history, trial_dir / "logs")
        objective = self.oracle.objective.name
        best = best_epoch(history, objective)
        metrics = {k: v[best] for k, v in history.items()}
        if not math.isfinite(metrics[objective]):
            raise kt.errors.FailedTrialError(f"{objective} is {metrics[objective]} at every epoch")
        if self._is_best_so_far(metrics[objective]) or isinstance(self, kt.Hyperband):
            # Hyperband continues later trials from this one: it needs both files.
            save_via_temp(Path(self._get_checkpoint_fname(trial.trial_id)), model.save_weights)
            write_json_atomic(Path(self._get_build_config_fname(trial.trial_id)), model.get_build_config())
        seconds = time.perf_counter() - t0
        write_json_atomic(
            trial_dir / "bench_trial.json",
            {"history": history, "best_epoch": best + 1, "epochs_run": len(history["loss"]),
             "phase_epochs": result["phase_epochs"], "seconds": round(seconds, 3), "tuner_id": self.tuner_id},
        )
        return metrics

    def _try_build(self, hp):
        # KerasTuner clears the session and runs a full gc.collect() before every build
        # (0.7 s here). Clearing is enough to drop the old graph; a full collection
        # every GC_EVERY trials keeps memory flat (see benchmarks/search_speed.py).
        self._bench_builds = getattr(self, "_bench_builds", 0) + 1
        keras.backend.clear_session(free_memory=self._bench_builds % GC_EVERY == 0)
        return self._build_hypermodel(hp)

    def _is_best_so_far(self, value: float) -> bool:
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        if not best:
            return True
        return value < best[0].score if self.oracle.objective.direction == "min" else value > best[0].score

    def search(self, *args, **kwargs):
        """Single process: KerasTuner's loop. Distributed: the chief serves the oracle,
        a worker runs trials until the chief's search is over (see bench.distributed)."""
        cluster = self.bench_cluster
        if cluster is None:
            return super().search(*args, **kwargs)
        import contextlib
        import os

        from bench.distributed import serve_oracle, worker_search

        # KerasTuner 1.4 prints a debug line for every conditional hyperparameter it sends
        # over gRPC (conditions.Parent.to_proto), and the chief's console display: keep
        # stdout for bench's own output.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            if cluster.is_chief:
                self.oracle.verbose = 0
                self.save()
                return serve_oracle(self.oracle, cluster, self.bench_job, self.bench_log)
            return worker_search(lambda: super(BenchTunerMixin, self).search(*args, **kwargs),
                                 self.bench_search_done, cluster, self.bench_job, self.bench_log)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        score = trial.score
        if trial.status == "COMPLETED":
            status = f"{self.oracle.objective.name} {score:.4f}" if score is not None else "completed"
        else:
            status = trial.status.lower()
        if trial.status != "COMPLETED" and trial.message:
            status += f": {_last_line(trial.message)}"
        if self.bench_cluster is not None:  # a worker's oracle is a gRPC client: no trial list here
            self.bench_log(f"  trial {trial.trial_id} ({self.bench_cluster.role}): {status}")
            return
        done = len([t for t in self.oracle.trials.values() if t.status in ("COMPLETED", "FAILED", "INVALID")])
        self.bench_log(f"  trial {trial.trial_id} ({done}/{self.oracle.max_trials or '?'}): {status}")


def _last_line(message: str) -> str:
    lines = [ln.strip() for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _save_json_atomic(path, obj) -> str:
    text = json.dumps(obj)
    write_text_atomic(Path(path), text)
    return text


def atomic_keras_tuner_state() -> None:
    """Make KerasTuner write its state (oracle.json, tuner_*.json, trial.json) atomically.

    KerasTuner writes them in place; a kill in the middle of a write would leave a
    truncated JSON file that makes ``--resume`` fail. Every such write goes through
    ``keras_tuner.src.utils.save_json`` (looked up at call time), replaced here.
    """
    from keras_tuner.src import utils as kt_utils

    kt_utils.save_json = _save_json_atomic


def settle_reloaded_trials(oracle) -> None:
    """Never run a finished trial again after a crash.

    KerasTuner ends a trial with two writes: the trial's ``trial.json`` (status, score),
    then ``oracle.json`` (which trials are still running). A process killed between them
    leaves a trial that is finished in its own file but "running" in the oracle's, and on
    reload KerasTuner queues every running trial for a retry. Trials whose own file says
    they ended are taken out of that queue and counted as ended.

    Starting a trial is two writes as well (``trial.json``, then ``oracle.json``): a trial
    killed between them exists on disk, counts towards ``max_trials``, but is neither
    running nor queued in the oracle's state, so it would never run. Such trials are
    queued for a run.
    """
    ended = {tid for tid, trial in oracle.trials.items() if trial.status in ("COMPLETED", "FAILED")}
    oracle._retry_queue = [tid for tid in oracle._retry_queue if tid not in ended]
    oracle.end_order.extend(tid for tid in sorted(ended) if tid not in oracle.end_order)
    orphans = sorted(tid for tid in oracle.trials if tid not in ended and tid not in oracle._retry_queue)
    oracle.start_order.extend(tid for tid in orphans if tid not in oracle.start_order)
    oracle._retry_queue.extend(orphans)


def make_tuner(hypermodel, cfg: SearchConfig, directory: Path, project: str, log: Log, hyperparameters=None,
               cluster=None, job: int = 0, search_done: Callable[[], bool] | None = None):
    base_cls = TUNERS[cfg.tuner]
    tuner_cls = type(f"Bench{base_cls.__name__}", (BenchTunerMixin, base_cls), {})
    kwargs = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(cfg.objective, OBJECTIVES[cfg.objective]),
        # KerasTuner treats seed 0 as "no seed" (seed or random.randint(...)): shift by one
        seed=cfg.seed + 1,
        directory=str(directory),
        project_name=project,
        overwrite=False,
        max_consecutive_failed_trials=10**6,
    )
    if hyperparameters is not None:
        kwargs.update(hyperparameters=hyperparameters, tune_new_entries=False)
    if cfg.tuner == "hyperband":
        kwargs.update(max_epochs=max(2, cfg.epochs), factor=3)
    else:
        kwargs.update(max_trials=cfg.max_trials)
    from bench.distributed import job_environment

    atomic_keras_tuner_state()

    with job_environment(cluster, job):  # a worker's oracle client connects to PORT + job
        tuner = tuner_cls(**kwargs)
    if cluster is None or cluster.is_chief:
        settle_reloaded_trials(tuner.oracle)
    tuner.bench_epochs, tuner.bench_seed, tuner.bench_log = cfg.epochs, cfg.seed, log
    tuner.bench_cluster, tuner.bench_job = cluster, job
    if search_done is not None:
        tuner.bench_search_done = search_done
    tuner.bench_tensorboard = cfg.tensorboard
    return tuner


def best_trial(tuner):
    """The trial the final stage uses: the best objective, ties going to the earliest trial.

    Ties are common on small validation splits. KerasTuner's own order among tied trials
    can change when its state is reloaded (``--resume``), and only the first trial to
    reach a score saved a checkpoint (see ``_is_best_so_far``): the earliest tied trial
    with a checkpoint is the same choice in an uninterrupted and a resumed run.
    """
    scored = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED" and t.score is not None
              and math.isfinite(t.score)]
    if not scored:
        return None
    sign = 1 if tuner.oracle.objective.direction == "min" else -1
    scored.sort(key=lambda t: (sign * t.score, int(t.trial_id)))
    with_checkpoint = [t for t in scored if Path(tuner._get_checkpoint_fname(t.trial_id)).exists()]
    return with_checkpoint[0] if with_checkpoint else scored[0]


def trials_table(tuner) -> pd.DataFrame:
    """One flat row per trial: id, every hyperparameter, val metrics, best epoch, seconds, status."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        row = {"trial": trial_id, "status": trial.status.lower()}
        row.update({k: v for k, v in trial.hyperparameters.values.items()})
        for name in ("val_loss", "val_accuracy", "val_auc", "val_f1", "loss", "accuracy", "auc", "f1"):
            if trial.metrics.exists(name):
                row[name] = trial.metrics.get_last_value(name)
        sidecar = Path(tuner.get_trial_dir(trial_id)) / "bench_trial.json"
        if sidecar.exists():

            info = json.loads(sidecar.read_text())
            row.update(best_epoch=info["best_epoch"], epochs_run=info["epochs_run"], seconds=info["seconds"],
                       ran_on=info.get("tuner_id", "tuner0"))
        row["message"] = _last_line(trial.message) if trial.status != "COMPLETED" else ""
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials_csv(tuner, path: Path) -> pd.DataFrame:
    table = trials_table(tuner)
    write_text_atomic(path, table.to_csv(index=False))
    return table


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
