"""Per-backbone search: cache the frozen features, then run KerasTuner over them.

Layout inside the run folder, per backbone ``<run>/<backbone>/``:
``backbone.weights.npz`` (the exact backbone weights of this run, random or pretrained),
``tuner/`` (KerasTuner's project: oracle state, one folder per trial with
``bench_trial.json`` (history, best epoch, seconds and where they went) and TensorBoard
logs), and ``trials.csv``. Features are cached in ``<run>/cache/`` (see :mod:`bench.search.cache`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd

from bench.config import DEFAULT_EPOCHS, DEFAULT_TRIAL_TIMEOUT_S, OBJECTIVES, SearchConfig
from bench.errors import BenchError, disk_full_message, is_disk_full
from bench.faults import crash_point, durable_write
from bench.progress import Step, eta_text
from bench.atomic import save_via_temp, write_json_atomic
from bench.search import kt_adapter
from bench.search.cohort import TrialsAhead
from bench.search.hypermodel import best_epoch, recorded
from bench.search.trainer import NonFiniteLoss, write_hparams, write_tensorboard
from bench.tables import write_csv

log = logging.getLogger(__name__)
GC_EVERY = 5
#: Parameters above which a trial's model is collected as soon as the trial ends.
LARGE_MODEL_PARAMS = 5_000_000
TUNERS = {"bayesian": kt.BayesianOptimization, "random": kt.RandomSearch, "hyperband": kt.Hyperband}


class TimeShareUsed(Exception):
    """The search's share of ``--budget`` is used: it starts no further trial."""


class DiskFull(BenchError, kt.errors.FatalError):
    """A trial could not write its results: stops the search (KerasTuner would record
    any other exception as a failed trial and go on, losing every later trial)."""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of one backbone's search shares (given to the tuner's constructor)."""

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    tensorboard: bool = True
    cluster: object = None  # bench.search.distributed.Cluster in distributed mode
    job: int = 0  # index of this backbone in the run (the chief serves it on port + index)
    search_done: Callable[[], bool] = lambda: False  # a worker stops once this is true
    #: the chief re-queues a trial whose worker has been silent this long (--trial-timeout)
    trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S
    #: Written into every trial's TensorBoard HParams record beside its hyperparameters
    #: (the backbone and, under --cv, the fold), so one view compares them all.
    labels: tuple[tuple[str, str], ...] = ()
    #: --budget: the monotonic time after which the search starts no further trial
    deadline: float | None = None


def trial_hyperparameters(values: dict) -> dict:
    """A trial's own hyperparameters from its values (KerasTuner's bookkeeping ``tuner/*``
    left out), as records show them (:func:`~bench.search.hypermodel.recorded`)."""
    return recorded({k: v for k, v in values.items() if not k.startswith("tuner/")})


class BenchTunerMixin(kt_adapter.BuildHook):
    """Replaces KerasTuner's run_trial: seeded build, two-phase fit, best-epoch metrics,
    one checkpoint write per trial (only when it is the best so far), a JSON sidecar."""

    def __init__(self, *args, settings: TrialSettings, **kwargs):
        self.settings = settings
        self._trial_seconds: list[float] = []  # this process's trials, for the time left
        self._search_step = None  # the search's progress bar, on a terminal
        self._builds = 0  # models built by this tuner
        self._last_params = 0  # parameters of the last one
        self._dropped: set[str] = set()  # a worker's trials that went back to the chief's queue
        self._ahead = TrialsAhead()  # trials trained with an earlier one (bench.search.cohort)
        super().__init__(*args, **kwargs)
        if hasattr(self.hypermodel, "deadline"):  # --budget: a trial in progress ends with its epoch
            self.hypermodel.deadline = settings.deadline

    def _populate_initial_space(self):
        """KerasTuner builds the hypermodel until it has seen every conditional
        hyperparameter; bench's hypermodel then only declares them (a model per build
        would cost a tenth of a second per search, six searches per backbone under --cv 5)."""
        declaring = hasattr(self.hypermodel, "declare_only")
        if declaring:
            self.hypermodel.declare_only = True
        try:
            super()._populate_initial_space()
        finally:
            if declaring:
                self.hypermodel.declare_only = False

    def run_trial(self, trial, *args, **kwargs):
        cluster = self.settings.cluster
        try:
            if cluster is None or cluster.is_chief:
                return self._bench_run_trial(trial, held=lambda: True)
            from bench.search.distributed import trial_lease

            with trial_lease(self.oracle, trial.trial_id, self.settings.trial_timeout_s) as held:
                return self._bench_run_trial(trial, held)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(disk_full_message(exc)) from None
            raise

    def _bench_run_trial(self, trial, held: Callable[[], bool]):
        """``held()``: this process still runs the trial (False: a worker's trial went back
        to the chief's queue; then nothing is written, and the chief ignores the report)."""
        hp = trial.hyperparameters
        epochs = hp.values.get("tuner/epochs", self.settings.epochs) - hp.values.get("tuner/initial_epoch", 0)
        trial_seed = self.trial_seed(int(trial.trial_id))
        keras.utils.set_random_seed(trial_seed)
        t0 = time.perf_counter()
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        fit_rows = getattr(self.hypermodel, "fit_rows", None)
        try:
            # a head trained without Keras (head_training) builds no model: its arrays are its checkpoint;
            # trained with the trials that come next when the oracle draws them at random (bench.search.cohort)
            result = self._ahead.result(self, trial, max(1, epochs), self.trial_seed) if fit_rows else None
            if isinstance(result, NonFiniteLoss):
                raise result
            if result is None and fit_rows:
                result = fit_rows(hp, epochs=max(1, epochs), seed=trial_seed)
            model, t_built = None, t0  # no model built
            if result is None:
                model = self.build_trial_model(hp)
                t_built = time.perf_counter()
                result = self.hypermodel.fit(hp, model, epochs=max(1, epochs), seed=trial_seed)
        except NonFiniteLoss as exc:
            raise kt.errors.FailedTrialError(str(exc)) from None
        t_fit = time.perf_counter()
        history = {k: [float(v) for v in vals] for k, vals in result["history"].items()}
        objective = self.oracle.objective.name
        best = best_epoch(history, objective)
        metrics = {k: v[best] for k, v in history.items()}
        crash_point("trial")
        if not held():
            log.warning(f"  trial {trial.trial_id} ({self.settings.cluster.role}): went back to the chief's queue "
                        "while this worker was silent; its result is dropped")
            self._dropped.add(trial.trial_id)
            return metrics
        if self.settings.tensorboard:
            durable_write(trial_dir / "logs")  # appended in place: counted (and killed at) before the first event
            write_tensorboard(history, trial_dir / "logs")
            write_hparams(trial_dir / "logs", {**dict(self.settings.labels), **trial_hyperparameters(hp.values)}, metrics,
                          f"{dict(self.settings.labels).get('backbone', '')}/{trial.trial_id}")
        if not math.isfinite(metrics[objective]):
            raise kt.errors.FailedTrialError(f"{objective} is {metrics[objective]} at every epoch")
        hyperband, best_so_far = isinstance(self, kt.Hyperband), self._is_best_so_far(metrics[objective])
        if model is None and not hyperband and best_so_far:
            # the head's arrays as they are: no Keras model to build (tens of millions of weights
            # drawn by Keras' initialiser for a flatten head, then overwritten) nor an HDF5 file
            save_via_temp(kt_adapter.head_checkpoint_path(self, trial.trial_id),
                          lambda tmp: save_arrays(tmp, result["weights"]))
        elif best_so_far or hyperband:
            # Hyperband continues later trials from this one: it needs both files.
            if model is None:
                model = self.build_trial_model(hp)
                self.hypermodel.load_head_weights(model, result["weights"])
            save_via_temp(kt_adapter.checkpoint_path(self, trial.trial_id), model.save_weights)
            write_json_atomic(kt_adapter.build_config_path(self, trial.trial_id), model.get_build_config())
        seconds = time.perf_counter() - t0
        if "fit_seconds" in result:  # trained with others: its share of their time, not the whole of it
            seconds += result["fit_seconds"] - (t_fit - t_built)
            t_fit = t_built + result["fit_seconds"]
        self._trial_seconds.append(seconds)
        cut_short = bool(result.get("cut_short"))
        if cut_short:
            log.info(f"  trial {trial.trial_id}: --budget: the search's share of the time ran out during it; it "
                     f"stopped after {len(history['loss'])} of {epochs} epochs, with its best epoch so far")
        write_json_atomic(
            trial_dir / "bench_trial.json",
            {"history": history, "best_epoch": best + 1, "epochs_run": len(history["loss"]), "cut_short": cut_short,
             "phase_epochs": result["phase_epochs"], "seconds": round(seconds, 3), "tuner_id": self.tuner_id,
             # where the seconds went: model build, fit (each epoch: the trainer's DEBUG records)
             "build_seconds": round(t_built - t0, 3), "fit_seconds": round(t_fit - t_built, 3),
             "trained_together": result.get("together", 1)},  # trials whose heads shared its batches
        )
        register_directions(trial, metrics, objective)
        return metrics

    def trial_seed(self, number: int) -> int:
        """The seed of trial ``number`` (its initial weights, dropout masks, Keras' random state)."""
        return self.settings.seed * 1000 + number

    def load_model(self, trial):
        """The trial's model with its best epoch's weights: a head saved as arrays is built
        and given them; any other trial is KerasTuner's own ``load_model``."""
        arrays = kt_adapter.head_checkpoint_path(self, trial.trial_id)
        if not arrays.exists():
            return super().load_model(trial)
        model = self.build_trial_model(trial.hyperparameters)
        self.hypermodel.load_head_weights(model, load_arrays(arrays))
        return model

    def head_predictor(self, trial) -> Callable[[object], np.ndarray] | None:
        """Probabilities of ``trial``'s model on cached depth-0 rows, in numpy, when its
        head was trained in numpy and saved as arrays (:meth:`BenchHyperModel.predict_rows`);
        None for any other trial (its Keras model predicts)."""
        arrays = kt_adapter.head_checkpoint_path(self, trial.trial_id)
        if not arrays.exists() or trial.hyperparameters.get("unfreeze") != 0:
            return None
        weights = load_arrays(arrays)
        return lambda x: self.hypermodel.predict_rows(trial.hyperparameters, weights, x)

    def build_trial_model(self, hp):
        """The model of ``hp``, for a trial or for ``load_model``, in a cleared session.

        KerasTuner clears the session and runs a full ``gc.collect()`` before every build,
        a cost paid per trial. Clearing is enough to drop the old graph; a full collection
        every GC_EVERY builds keeps memory flat (benchmarks/search_speed.py). A dead large
        model (a flatten head on a 10x10x2048 map holds over a GB with its Adam slots) is
        collected before the next build, or several would linger at once."""
        self._builds += 1
        large = self._last_params > LARGE_MODEL_PARAMS
        keras.backend.clear_session(free_memory=large or self._builds % GC_EVERY == 0)
        model = kt_adapter.build_model(self, hp)
        self._last_params = model.count_params()
        return model

    def _is_best_so_far(self, value: float) -> bool:
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        if not best:
            return True
        return value < best[0].score if self.oracle.objective.direction == "min" else value > best[0].score

    def search(self, *args, **kwargs):
        """Single process: KerasTuner's loop. Distributed: the chief serves the oracle,
        a worker runs trials until the chief's search is over (see bench.search.distributed)."""
        with kt_adapter.atomic_state_writes():
            return self._search(*args, **kwargs)

    def _search(self, *args, **kwargs):
        cluster = self.settings.cluster
        if cluster is None:
            from bench.search.distributed import job_environment

            try:
                with job_environment(None, self.settings.job):
                    return super().search(*args, **kwargs)
            except TimeShareUsed:
                return None
            finally:  # the search's bar (a terminal's, see on_trial_end) goes when its search does
                if self._search_step is not None:
                    self._search_step.close()
                    self._search_step = None
        import contextlib

        from bench.search.distributed import serve_oracle, worker_search

        # KerasTuner 1.4 prints a debug line for every conditional hyperparameter it sends
        # over gRPC (conditions.Parent.to_proto), and the chief's console display: keep
        # stdout for bench's own output.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            if cluster.is_chief:
                self.oracle.verbose = 0
                self.save()
                return serve_oracle(self.oracle, cluster, self.settings.job, self.settings.trial_timeout_s)
            return worker_search(lambda: super(BenchTunerMixin, self).search(*args, **kwargs),
                                 self.settings.search_done, cluster, self.settings.job)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        log.debug(f"  trial {trial.trial_id} hyperparameters: {trial.hyperparameters.values}")
        score = trial.score
        if trial.status == "COMPLETED":
            status = f"{self.oracle.objective.name} {score:.4f}" if score is not None else "completed"
        else:
            status = trial.status.lower()
        if trial.status != "COMPLETED" and trial.message:
            status += f": {_last_line(trial.message)}"
        if self.settings.cluster is not None:  # a worker's oracle is a gRPC client: no trial list here
            if trial.trial_id in self._dropped:
                return
            log.info(f"  trial {trial.trial_id} ({self.settings.cluster.role}): {status}")
            return
        done = len([t for t in self.oracle.trials.values() if t.status in ("COMPLETED", "FAILED", "INVALID")])
        total = self.oracle.max_trials
        progress = search_progress(self.oracle, done, total, self._trial_seconds)
        if self._search_step is None and total:
            self._search_step = Step(f"{dict(self.settings.labels).get('backbone', 'search')}: trials", total, "trials")
        if self._search_step is not None and self._search_step.shown:
            self._search_step.update(done, progress)
        log.info(f"  trial {trial.trial_id} ({done}/{total or '?'}): {status}" + (f"; {progress}" if progress else ""))
        if self.settings.deadline is not None and time.monotonic() >= self.settings.deadline and done < (total or 0):
            log.info(f"  --budget: this search's share of the time is used; it stops after {done} of {total} trials")
            raise TimeShareUsed()


def save_arrays(path: Path, arrays: list) -> None:
    """``arrays`` into an uncompressed ``.npz`` at ``path`` (any name: numpy adds no suffix
    to an open file)."""
    with open(path, "wb") as fh:
        np.savez(fh, *arrays)


def load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays :func:`save_arrays` wrote to ``path``, in order."""
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def register_directions(trial, metrics: dict, objective: str) -> None:
    """Tell the trial which way each of its metrics other than the objective improves
    (losses down, the rest up). KerasTuner otherwise infers it for every new metric name
    by instantiating Keras' metric of that name, TensorFlow variables included: tens of
    milliseconds per trial. The objective is left to KerasTuner (it takes the direction
    from the objective, and a registered objective would tell it the trial reported
    itself)."""
    for name in metrics:
        if name != objective and not trial.metrics.exists(name):
            trial.metrics.register(name, direction="min" if name.endswith("loss") else "max")


def search_progress(oracle, done: int, total: int | None, seconds: list[float]) -> str:
    """``best val_auc 0.8412; ~2 min 10 s left``: the best score so far and the time left
    (the median of this process's trial times, times the trials still to run)."""
    from statistics import median

    best = oracle.get_best_trials(1)
    parts = []
    if best and best[0].score is not None:
        parts.append(f"best {oracle.objective.name} {best[0].score:.4f}")
    if seconds and total and done < total:
        parts.append(f"~{eta_text(median(seconds) * (total - done))} left")
    return "; ".join(parts)


def _last_line(message: str) -> str:
    lines = [ln.strip() for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def oracle_seed(seed: int) -> int:
    """KerasTuner's seed for ``--seed``. Its oracle draws the k-th hyperparameter value of a
    search from ``random.Random(seed + k)``, so consecutive seeds would draw the same values
    one place apart (``--seed 1`` nearly repeating ``--seed 0``'s trials); spread over 32
    bits, each ``--seed`` draws a stream of its own. Never 0, which KerasTuner reads as
    "no seed"."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0]) or 1


def make_tuner(hypermodel, cfg: SearchConfig, directory: Path, project: str, settings: TrialSettings,
               hyperparameters=None):
    """A KerasTuner tuner of ``cfg.tuner``'s kind with bench's trial loop, reloading any
    earlier state in ``directory/project``; ``hyperparameters`` fixes the search space."""
    base_cls = TUNERS[cfg.tuner]
    tuner_cls = type(f"Bench{base_cls.__name__}", (BenchTunerMixin, base_cls), {})
    kwargs = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(cfg.objective, OBJECTIVES[cfg.objective]),
        seed=oracle_seed(cfg.seed),
        directory=str(directory),
        project_name=project,
        overwrite=False,
        max_consecutive_failed_trials=10**6,
    )
    if hyperparameters is not None:
        kwargs.update(hyperparameters=hyperparameters, tune_new_entries=False)
    if cfg.tuner == "hyperband":
        kwargs.update(max_epochs=max(2, cfg.trial_epochs), factor=3)
    else:
        kwargs.update(max_trials=cfg.max_trials)
    from bench.search.distributed import job_environment

    cluster = settings.cluster
    # a worker's oracle client connects to PORT + job
    with kt_adapter.atomic_state_writes(), job_environment(cluster, settings.job):
        if cluster is None or cluster.is_chief:  # a worker's oracle is the chief's
            kt_adapter.keep_started_project(directory / project, os.environ.get("KERASTUNER_TUNER_ID", "tuner0"))
        tuner = tuner_cls(settings=settings, **kwargs)
    if cluster is None or cluster.is_chief:
        kt_adapter.settle_reloaded_trials(tuner.oracle)
    else:  # the chief knows which worker sends each request (trial leases, bench.search.distributed)
        kt_adapter.identify_worker(tuner.oracle, cluster.tuner_id, f"{cluster.ip}:{cluster.job_port(settings.job)}")
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
    with_checkpoint = [t for t in scored if kt_adapter.has_checkpoint(tuner, t.trial_id)]
    return with_checkpoint[0] if with_checkpoint else scored[0]


def trials_table(tuner) -> pd.DataFrame:
    """One flat row per trial: id, every hyperparameter, val metrics, best epoch, seconds, status."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        row = {"trial": trial_id, "status": trial.status.lower()}
        row.update(recorded(trial.hyperparameters.values))
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
    write_csv(path, table)
    return table
