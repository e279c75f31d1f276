"""Search and evaluate every candidate of a run, then rank them.

Per candidate (a backbone with one starting point of ``--weights``,
:mod:`bench.candidates`): cache features -> KerasTuner search -> best trial as a full
model -> threshold on val -> one test evaluation -> ``result.json``. A candidate with a
``result.json`` is finished and skipped on ``--resume``; the tuner reloads its own state,
so completed trials are not run again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np

import backbones
from bench.candidates import BASELINE, Candidate, candidates
from bench.config import SearchConfig
from bench.evaluate.final import (
    FinalSettings,
    evaluate_fold,
    evaluate_on_test,
    full_model,
    kept_val_probabilities,
    load_trial_model,
    measure_latency,
    save_model,
    write_result,
)
from bench.faults import crash_point
from bench.floor import enabled as floor_enabled, frozen_test_features, probe
from bench.atomic import read_json
from bench.runfolder import TUNER_DIR, RunFiles, SearchFiles, fold_dir
from bench.search.hypermodel import BenchHyperModel, TrialData, balanced_class_weight
from bench.search.cache import cached_features
from bench.search.runtime import FrozenPass
from bench.search.source import depths_for, source_for
from bench.search.tuner import TrialSettings, best_trial, make_tuner, trial_hyperparameters, write_trials_csv

log = logging.getLogger(__name__)

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


@dataclass
class BackboneJob:
    """One candidate of a run (a backbone or the notebook baseline, with one starting
    point): what its search and evaluation need."""

    name: str  # the candidate's name: its row's backbone key and its folder
    index: int  # position in the run; a distributed chief serves this job's oracle on port + index
    baseline: bool
    run_dir: Path
    data_root: Path
    split: object  # bench.data.split.SplitManifest
    weights: str
    image_size: int | None
    search: SearchConfig
    cluster: object = None  # bench.search.distributed.Cluster in distributed mode
    fold: tuple[int, int] | None = None  # --cv: (repeat, outer fold); the split's test is that outer fold
    pool: list[dict] | None = None  # --cv: every cross-validated image, one feature cache entry for all folds
    frozen_pass: FrozenPass = FrozenPass()  # what computes the cached features, and in which precision
    candidate: Candidate | None = None  # None: the backbone ``name`` (or the baseline) with ``weights``
    floor: bool = False  # also fit the backbone's linear probe on its cached features (bench.floor)
    deadline: float | None = None  # --budget: monotonic time after which the search starts no trial
    cache_by: float | None = None  # --budget: monotonic time by which its caching must end, else it stops
    deploy_val: frozenset[str] = frozenset()  # paths of the deployed model's val images (its features are kept)

    @staticmethod
    def candidates(run) -> list[Candidate]:
        """Every candidate of ``run`` in order (:func:`bench.candidates.candidates`)."""
        return candidates(run.config)

    @classmethod
    def of(cls, run, candidate: Candidate, index: int, split, cluster=None, fold=None, pool=None,
           frozen_pass: FrozenPass = FrozenPass()) -> "BackboneJob":
        """The job of ``candidate`` of ``run`` (a :class:`bench.run.RunFolder`) on ``split``."""
        return cls(candidate.name, index, candidate.baseline, run.path, run.index.root, split, candidate.weights,
                   run.config.image_size, run.config.search, cluster, fold, pool, frozen_pass, candidate,
                   floor=floor_enabled(run.config) and not candidate.baseline,
                   deploy_val=frozenset(r["path"] for r in run.split.rows("val")))

    @classmethod
    def for_run(cls, run, cluster=None, frozen_pass: FrozenPass = FrozenPass()) -> list["BackboneJob"]:
        """Every candidate of ``run`` in order, the baseline's last."""
        return [cls.of(run, candidate, i, run.split, cluster, frozen_pass=frozen_pass)
                for i, candidate in enumerate(cls.candidates(run))]

    @classmethod
    def for_folds(cls, run, cluster=None, frozen_pass: FrozenPass = FrozenPass()) -> list["BackboneJob"]:
        """--cv: every candidate in every outer fold of every repeat (repeat-major, then fold)."""
        plan, jobs = run.folds, []
        pool = plan.cv_files
        for repeat in range(plan.repeats):
            for fold in range(plan.k):
                split = plan.split(repeat, fold)
                for candidate in cls.candidates(run):
                    jobs.append(cls.of(run, candidate, len(jobs), split, cluster, (repeat, fold), pool, frozen_pass))
        return jobs

    @classmethod
    def final(cls, run, name: str, index: int, cluster=None, frozen_pass: FrozenPass = FrozenPass()) -> "BackboneJob":
        """--cv: the deployable model of candidate ``name``, searched once more on all
        cross-validated images (the final train/val split); its test split is the holdout,
        possibly empty."""
        candidate = next(c for c in cls.candidates(run) if c.name == name)
        job = cls.of(run, candidate, index, run.split, cluster, pool=run.folds.cv_files, frozen_pass=frozen_pass)
        return replace(job, floor=False)  # the floor is scored in the folds

    @cached_property
    def pair(self) -> Candidate:
        """The candidate this job searches."""
        return self.candidate or Candidate(BASELINE if self.baseline else self.name, self.weights)

    @cached_property
    def record(self):
        return backbones.get(self.pair.network)

    @property
    def size(self) -> int:
        return self.image_size or self.record.default_size

    @property
    def source_key(self):
        """Jobs with the same key share one built backbone (:func:`prepare_search`'s ``sources``):
        the same network with the same starting weights."""
        return self.pair.source_name, self.size, self.weights, self.search.seed

    @property
    def files(self) -> SearchFiles:
        """This search's folder: ``<run>/<backbone>/`` or an outer fold's under ``cv/``."""
        run = RunFiles(self.run_dir)
        return run.backbone(self.name) if self.fold is None else run.fold(*self.fold, self.name)

    @property
    def out_dir(self) -> Path:
        return self.files.path

    @property
    def fold_label(self) -> str:
        """Which split this search ran on: ``r0-f2`` (--cv repeat 0, outer fold 2: its folder
        under ``cv/``), ``final`` (--cv's final model) or ``single split``."""
        if self.fold is not None:
            return fold_dir(Path(), *self.fold, self.name).parent.name
        return "final" if self.pool is not None else "single split"

    @property
    def worker(self) -> bool:
        return self.cluster is not None and not self.cluster.is_chief

    def search_settings(self) -> SearchConfig:
        """The search as configured; the baseline trains the notebook recipe once, for the
        notebook's 15 epochs unless ``--epochs`` was given."""
        if not self.baseline:
            return self.search
        epochs = NOTEBOOK_EPOCHS if self.search.epochs is None else self.search.epochs
        return replace(self.search, tuner="random", max_trials=1, epochs=epochs)


@dataclass
class PreparedSearch:
    """A backbone's search, ready to run: its settings, backbone source, tuner and depths."""

    config: SearchConfig
    source: object  # bench.search.source.BackboneSource
    tuner: object  # a KerasTuner tuner with bench's trial loop (bench.search.tuner)
    depths: list[int]
    x_val: dict | None = None  # --cv folds: cached features by depth of the inner val images ...
    x_test: dict | None = None  # ... and of the images the fold holds out
    final: FinalSettings = field(default_factory=FinalSettings)  # class weights, operating-point minima
    frozen_pass_notes: dict = field(default_factory=dict)  # runtime (and OpenVINO's precision, parity) of the features
    x_train: dict | None = None  # cached features by depth of the training images (the linear probe's)


def prepare_search(job: BackboneJob, sources: dict | None = None) -> PreparedSearch:
    """Build the backbone, cache its features (once per image) and make the tuner, which
    reloads any earlier state of this job's search.

    ``sources``: backbone sources kept between jobs of one process (the folds of a
    ``--cv`` run), so each backbone is built once, not once per fold."""
    cfg = job.search_settings()
    record = job.record
    trials_path, result_path = job.files.trials_csv, job.files.result_json
    key = job.source_key
    source = (sources or {}).get(key)
    if source is None or source.run_dir != Path(job.run_dir):  # another run (a suite's dataset): reuse its network
        donor = source
        source = source_for(record, job.weights, job.size, job.run_dir, job.data_root, job.split, cfg.seed,
                            folder=job.pair.source_name)
        source.adopt(donor)
        if sources is not None:
            sources[key] = source
    depths = [0] if job.baseline else depths_for(record, cfg.max_unfreeze)
    notes: dict = {}
    x_train, x_val, y_train, y_val, shapes, *x_test = cached_features(
        source, depths, job.run_dir, job.data_root, job.split, cfg, pool=job.pool, with_test=job.fold is not None,
        frozen_pass=job.frozen_pass, notes=notes, cache_by=job.cache_by, keep=job.deploy_val)
    n_classes = len(job.split.classes)
    data = TrialData(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, n_classes=n_classes,
        class_weight=balanced_class_weight(y_train, n_classes) if cfg.class_weights and not job.baseline else None,
        batch_size=cfg.batch_size, patience=cfg.trial_epochs if job.baseline else cfg.patience,
        objective=cfg.objective,  # the notebook trained every epoch; its best epoch is restored
        order_seed=cfg.seed,  # every trial of the search sees the same batches
    )
    hypermodel = BenchHyperModel(depths, shapes, data, source.top,  # the notebook's recipe is what it is
                                 max_head_weights=None if job.baseline else cfg.max_head_weights)
    settings = TrialSettings(epochs=cfg.trial_epochs, seed=cfg.seed, tensorboard=cfg.tensorboard,
                             cluster=job.cluster, job=job.index, trial_timeout_s=cfg.trial_timeout,
                             search_done=lambda: trials_path.exists() or result_path.exists(),
                             labels=(("backbone", job.name), ("fold", job.fold_label)), deadline=job.deadline)
    tuner = make_tuner(hypermodel, cfg, job.out_dir, TUNER_DIR, settings,
                       hyperparameters=_recipe_hyperparameters() if job.baseline else None)
    final = FinalSettings(data.class_weight, cfg.min_sensitivity, cfg.min_specificity)
    return PreparedSearch(cfg, source, tuner, depths, x_val, x_test[0] if x_test else None, final, notes, x_train)


def run_backbone(job: BackboneJob, sources: dict | None = None) -> dict | None:
    """Search (or the fixed notebook recipe for the baseline), evaluate, write result.json.

    Distributed: the chief serves the search of the job and evaluates; a worker only runs
    trials and returns None.
    """
    name, record, size, out_dir = job.name, job.record, job.size, job.out_dir
    result_path, trials_path = job.files.result_json, job.files.trials_csv
    if result_path.exists():
        log.info(f"{name}: finished earlier, skipped")
        return None if job.worker else read_json(result_path)
    if job.worker and trials_path.exists():
        log.info(f"{name}: search finished (the chief evaluates it), skipped")
        return None
    t0 = time.perf_counter()
    search = prepare_search(job, sources)
    prepare_seconds = time.perf_counter() - t0  # building the backbone, caching its features (or reading them)
    cfg, source, tuner, depths = search.config, search.source, search.tuner, search.depths
    budget = (f"up to {cfg.trial_epochs} epochs a trial" if cfg.tuner == "hyperband"
              else f"{cfg.max_trials} trials, {cfg.trial_epochs} epochs")
    log.info(f"{name}: searching ({cfg.tuner}, {budget}, unfreeze depths {depths}, {size}px)")
    tuner.search(verbose=0)
    if job.worker:
        keras.backend.clear_session()  # with a full garbage collection (free_memory, Keras' default)
        return None
    table = write_trials_csv(tuner, trials_path)
    search_seconds = time.perf_counter() - t0
    done = int((table["status"] == "completed").sum()) if len(table) else 0
    failed = len(table) - done
    where = {} if job.fold is None else {"repeat": job.fold[0], "fold": job.fold[1]}
    row = {
        **where, "backbone": name, **job.pair.columns(), "family": record.family, "image_size": size,
        "weights": job.weights,
        "baseline": job.baseline, "trials_done": done, "trials_failed": failed,
        "search_seconds": round(search_seconds, 1), "prepare_seconds": round(prepare_seconds, 1),
        "objective": cfg.objective,
        "compute_dtype": job.frozen_pass.compute_dtype,  # float16: --mixed-precision on
        "frozen_pass_dtype": job.frozen_pass.precision,  # the cached features: bfloat16 with --mixed-precision bfloat16
        **search.frozen_pass_notes,  # frozen_pass_runtime; with --runtime openvino its precision and parity figure
        **tuner.hypermodel.space_record(),  # whether --max-head-weights kept flatten heads to the output layer
    }
    trial = best_trial(tuner)
    if trial is None or done == 0:
        row.update(status="failed", message="every trial failed; see trials.csv")
        _probe(job, search)
        write_result(result_path, row)
        return row
    if job.fold is not None:  # the fold's model predicts its held-out images from the cache, once
        crash_point("final")
        model = tuner.head_predictor(trial) or load_trial_model(tuner, trial)  # numpy-trained heads predict in numpy
        metrics = evaluate_fold(model, trial.hyperparameters.get("unfreeze"), search.x_val,
                                search.x_test, job.split, out_dir, cfg.seed, cfg.batch_size, search.final)
        _record(row, trial, metrics)
        _probe(job, search)
    else:
        model, features_model = full_model(source, tuner, trial, with_features=True)
        save_model(model, job.files.best_model)
        crash_point("final")
        features: dict = {}
        # with the probe: one model evaluates and is timed, the deployed one's layers plus an average pooling of
        # its backbone's output (a compiled model costs seconds to trace; the pooling, microseconds to run)
        evaluated = features_model if job.floor and features_model is not None else model
        known = kept_val_probabilities(model, trial, source, job.split)  # None: the val images are predicted
        _record(row, trial, evaluate_on_test(model, job.split, job.data_root, size, out_dir, cfg.seed, cfg.batch_size,
                                             search.final, None if evaluated is model else evaluated, features, known))
        row["params_total"] = int(model.count_params())
        row["params_trainable"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        row.update(measure_latency(evaluated, size, known={32: source.batch_ms(32)}, stand_in=source.frozen_model))
        _probe(job, search, features.get("test"))
    write_result(result_path, row)  # after the probe's: a finished backbone has its probe
    keras.backend.clear_session()  # with a full garbage collection (free_memory, Keras' default)
    return row


def _probe(job: BackboneJob, search: PreparedSearch, test_features: np.ndarray | None = None) -> None:
    """The backbone's linear probe (:func:`bench.floor.probe`) on the depth-0 features its
    search cached: a fold's held-out rows are cached too; a single split's test features
    come from the evaluation pass (``test_features``) or, when the chosen model was
    fine-tuned or none was chosen, from one frozen pass over the test images."""
    if not job.floor or job.worker or 0 not in search.depths:
        return
    if job.fold is not None:
        x_test, where = search.x_test[0], "cached frozen features (the fold's held-out images)"
    elif test_features is not None:
        x_test, where = test_features, "pooled in the chosen model's evaluation pass (one pass, two outputs)"
    else:
        x_test, where = frozen_test_features(job, search.source), "one frozen pass over the test images"
    probe(job, search.x_train[0], search.x_val[0], x_test, where)


def _record(row: dict, trial, metrics: dict) -> None:
    """The chosen trial, its hyperparameters and its test (or held-out fold) metrics, into ``row``."""
    row.update(status="ok", best_trial=trial.trial_id, val_objective=trial.score)
    row.update({f"hp_{k}": v for k, v in trial_hyperparameters(trial.hyperparameters.values).items()})
    row.update({f"test_{k}": v for k, v in metrics.items() if k != "confusion_matrix"})
    if "confusion_matrix" in metrics:  # absent without test images (--cv without a --test-size holdout)
        row["test_confusion_matrix"] = metrics["confusion_matrix"]
