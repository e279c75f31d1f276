"""The evaluation design of a run, and the one loop that runs any design.

A design says which searches to run, where the estimates that rank the backbones come
from, how a backbone's leaderboard row is made from its searches, and which model is
deployed. A single split is a cross-validation with one fold, as scikit-learn's
``PredefinedSplit`` is a splitter like any other:

* :class:`SingleSplit`: one search per backbone on the run's train/val split; its best
  trial, rebuilt as a full model, predicts the test split once. Estimates: the test split
  (:attr:`bench.schema.Source.TEST`). The deployed model is that model.
* :class:`NestedCV` (``--cv K --repeats R``): one search per backbone in every outer fold
  of every repeat, each fold's model predicting the images it held out; estimates pooled
  over those out-of-fold predictions (:attr:`bench.schema.Source.OUT_OF_FOLD`), with
  intervals over duplicate groups (Cawley & Talbot 2010 on keeping selection inside the
  fold; Varoquaux 2018 on fold spread). The deployed model is the winner searched once
  more on every cross-validated image.

:func:`run_design` runs either: the jobs in order, the rows, the leaderboard, the final
model. Nothing downstream asks which design it was: the rows say where their estimates
come from (:func:`bench.schema.row_source`).

Both designs add the floor baselines' rows (:mod:`bench.floor`: majority class, a logistic
regression on image-content statistics, a linear probe per backbone), scored on the same
split or folds: rows of ``kind`` floor, shown below the ranked backbones and never deployed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from bench.evaluate.leaderboard import write_leaderboard
from bench.pipeline import BackboneJob, run_backbone
from bench.schema import STOPPED, Source
from bench.search.runtime import FrozenPass

log = logging.getLogger(__name__)
#: What the leaderboard row of a cross-validated winner takes from its final model's search.
#: Images of the deployed model's latency measurement (6 at batch 1, 2 batches of 32) and
#: a batch of tracing it, for the --budget reserve (:meth:`NestedCV.final_evaluation_estimate`).
LATENCY_IMAGES = 6 + 2 * 32 + 32
FINAL_MODEL_KEYS = ("best_trial", "params_total", "params_trainable", "latency_ms_b1", "latency_ms_b32")


class Design:
    """What both designs share: ``--budget``'s time shares and the rows of stopped backbones."""

    searches_winner_again = False

    def __init__(self, run, frozen_pass: FrozenPass) -> None:
        self.run, self.frozen_pass = run, frozen_pass
        self.stopped: dict[str, str] = {}  # backbone -> why --budget stopped it (set by run_design)
        self.leader: str | None = None  # --cv with --budget: the best fold mean so far

    def budgeted(self, job: BackboneJob, remaining: list[BackboneJob], finished: dict, budget) -> BackboneJob | None:
        """``job`` with its share of the time left (:mod:`bench.budget`), or None when the
        budget stops it. A job finished earlier runs as it is (it is only read back)."""
        if job.files.result_json.exists():
            return job
        if job.name in budget.stopped:
            return None
        todo = [j for j in remaining if j.name not in budget.stopped]
        kept = self.kept_for(job, todo, budget)
        deadline = budget.deadline(len(todo), self.searches_winner_again, kept)
        if self.must_run(job, finished):
            return replace(job, deadline=deadline if deadline is not None else time.monotonic())
        if deadline is None:
            budget.stop(job.name, self.cut_reason(job, finished, budget))
            return None
        if job.name in finished:  # cached already
            return replace(job, deadline=deadline)
        cache_by = time.monotonic() + budget.free(self.searches_winner_again, kept) - budget.search_estimate()
        return replace(job, deadline=deadline, cache_by=cache_by)

    @staticmethod
    def wont_fit(job: BackboneJob, budget, error) -> None:
        """Stop ``job``'s backbone, whose caching stopped at its measured pace
        (:class:`bench.budget.CachingWontFit`)."""
        from bench.budget import duration_text

        budget.stop(job.name, f"not searched: caching its features would take about {duration_text(error.seconds)} "
                              f"(its pace on {error.measured} of {error.total} images), more than the budget "
                              f"({duration_text(budget.seconds)}) had left for it; stopped there")

    @staticmethod
    def cheapest_first(jobs: list[BackboneJob]) -> list[BackboneJob]:
        """``--budget``: each round of jobs (the one split, or one outer fold) in the order of
        its backbones' forward-pass cost (multiply-adds per image at the run's size), the
        cheapest first; ties keep the order of ``--backbones``."""
        rounds = {fold: i for i, fold in enumerate(dict.fromkeys(job.fold for job in jobs))}
        return sorted(jobs, key=lambda job: (rounds[job.fold], job.record.macs(job.size)))

    def kept_for(self, job: BackboneJob, todo: list[BackboneJob], budget) -> float:
        """Seconds kept back from ``job``'s share for searches that must run after it."""
        return 0.0

    def must_run(self, job: BackboneJob, finished: dict) -> bool:
        """Whether ``job`` runs (at one trial) even when no time is left: the run's first
        search (without it there is nothing to rank)."""
        return not finished

    def cut_reason(self, job: BackboneJob, finished: dict, budget) -> str:
        from bench.budget import duration_text

        return f"not searched: the budget ({duration_text(budget.seconds)}) was used up before its search"

    def race(self, finished: dict, budget) -> None:
        """After a round of searches: drop what is behind (only cross-validation races)."""

    def stopped_rows(self, finished: dict) -> list[dict]:
        """A row for each candidate the budget stopped before any of its searches ended."""
        import backbones

        rows = []
        for c in BackboneJob.candidates(self.run):
            if c.name in self.stopped and c.name not in finished:
                record = backbones.get(c.network)
                rows.append({"backbone": c.name, **c.columns(), "weights": c.weights, "baseline": c.baseline,
                             "status": STOPPED, "image_size": self.run.config.image_size or record.default_size,
                             "family": record.family, "message": self.stopped[c.name]})
        return rows


class SingleSplit(Design):
    """One search per backbone on the run's one split, ranked on the validation objective."""

    source = Source.TEST

    def jobs(self, cluster=None) -> list[BackboneJob]:
        return BackboneJob.for_run(self.run, cluster, self.frozen_pass)

    def describe(self, job: BackboneJob) -> str | None:
        return None

    def rows(self, finished: dict[str, list[dict]]) -> list[dict]:
        """A backbone's row is its one search's result; a floor baseline's its one result."""
        return [rows[0] for rows in finished.values()] + self.stopped_rows(finished) + _floor_rows(self.run)

    def partial_rows(self, finished: dict[str, list[dict]]) -> list[dict]:
        """Rows are ready as each backbone ends: the leaderboard grows with the run (the
        floor baselines join it at the end)."""
        return [rows[0] for rows in finished.values()]

    def deploy(self, winner: dict, sources: dict, n_jobs: int, deadline: float | None = None) -> bool:
        """The search's own best model is the one to deploy: nothing more to train, the
        winner's row is unchanged (False)."""
        return False


class NestedCV(Design):
    """Every backbone in every outer fold of every repeat; ranked on the out-of-fold estimates."""

    source = Source.OUT_OF_FOLD
    searches_winner_again = True

    def __init__(self, run, frozen_pass: FrozenPass) -> None:
        super().__init__(run, frozen_pass)
        self.plan = run.folds

    # -- --budget --------------------------------------------------------------------
    def budgeted(self, job: BackboneJob, remaining: list[BackboneJob], finished: dict, budget) -> BackboneJob | None:
        self.leader = self._standing(finished, budget)[0]  # the best so far, also between rounds
        return super().budgeted(job, remaining, finished, budget)

    def kept_for(self, job: BackboneJob, todo: list[BackboneJob], budget) -> float:
        """Every search keeps back the deployed model's evaluation; another backbone's search
        also the time of the leader's folds still to run."""
        kept = self.final_evaluation_estimate(budget)
        if self.leader is None or job.name == self.leader:
            return kept
        return kept + budget.search_estimate() * sum(j.name == self.leader for j in todo)

    def final_evaluation_estimate(self, budget) -> float:
        """Seconds for the deployed model's evaluation: unlike the folds' on cached features,
        its images go through the whole network (the final split's val and test images, and
        :data:`LATENCY_IMAGES`). At the leader's seconds per cached image when it was built
        and cached (build included: an overestimate)."""
        prepared = budget.prepared_seconds(self.leader) if self.leader else None
        if not prepared:
            return 0.0
        images = len(self.run.split.rows("val")) + len(self.run.split.rows("test")) + LATENCY_IMAGES
        return prepared * images / max(1, len(self.plan.cv_files))

    def must_run(self, job: BackboneJob, finished: dict) -> bool:
        """The leader's folds run (a trial each when no time is left): without all of them
        there is no estimate to rank and no model to deploy."""
        return job.name == self.leader or not finished

    def _fold_scores(self, finished: dict, budget) -> dict[str, dict[int, float]]:
        from bench.evaluate.crossval import CV_METRIC

        metric = CV_METRIC[self.run.config.search.objective]
        return {name: {r["repeat"] * self.plan.k + r["fold"]: float(r[f"test_{metric}"]) for r in rows
                       if r.get("status") == "ok" and r.get(f"test_{metric}") is not None}
                for name, rows in finished.items() if name not in budget.stopped}

    def _standing(self, finished: dict, budget) -> tuple[str | None, dict[str, dict]]:
        """The leader among the backbones not stopped (best fold mean of the objective's
        metric) and those behind it beyond the corrected interval
        (:func:`bench.budget.behind_leader`)."""
        from bench.budget import behind_leader
        from bench.evaluate.crossval import CV_METRIC
        from bench.schema import metric

        higher = metric(CV_METRIC[self.run.config.search.objective]).higher_is_better
        return behind_leader(self._fold_scores(finished, budget), self.plan.k, higher)

    def cut_reason(self, job: BackboneJob, finished: dict, budget) -> str:
        from bench.budget import duration_text

        done, total = len(finished.get(job.name, [])), self.plan.k * self.plan.repeats
        if not done:  # it never had a fold: nothing of it was searched
            return (f"not searched: the budget ({duration_text(budget.seconds)}) was used up before its first outer "
                    f"fold (the leader's folds run first)")
        return (f"stopped: the budget ({duration_text(budget.seconds)}) was used up after {done} of {total} outer "
                f"folds (the leader's folds run first)")

    def race(self, finished: dict, budget) -> None:
        """The racing rule of :func:`bench.budget.behind_leader` on the folds' own scores
        of the objective's metric."""
        from bench.budget import racing_sentence
        from bench.evaluate.crossval import CV_METRIC
        from bench.schema import label

        self.leader, behind = self._standing(finished, budget)
        metric_label = label(CV_METRIC[self.run.config.search.objective])
        for name, evidence in behind.items():
            budget.stop(name, racing_sentence(evidence, self.plan.k * self.plan.repeats, metric_label))

    def jobs(self, cluster=None) -> list[BackboneJob]:
        return BackboneJob.for_folds(self.run, cluster, self.frozen_pass)

    def describe(self, job: BackboneJob) -> str | None:
        repeat, fold = job.fold
        return f"cv repeat {repeat + 1}/{self.plan.repeats}, fold {fold + 1}/{self.plan.k}: {job.name}"

    def rows(self, finished: dict[str, list[dict]]) -> list[dict]:
        """A backbone's row: metrics pooled over its out-of-fold predictions with intervals,
        the fold spread, the probability of being best and the selection rule."""
        from bench.evaluate.crossval import cv_row, probability_best_by_backbone, selection_rule

        run, search = self.run, self.run.config.search
        rows = [cv_row(run.path, c.name, finished[c.name], self.plan, search.objective, search.seed,
                       stopped=self.stopped.get(c.name))
                for c in BackboneJob.candidates(run) if c.name in finished]
        best = probability_best_by_backbone(run.path, rows, self.plan, search.objective, search.seed)
        rule = selection_rule(search.objective, self.plan.k, self.plan.repeats)
        for row in rows:
            row["probability_best"] = best.get(row["backbone"])
            row["selection_rule"] = rule
        return rows + self.stopped_rows(finished) + _floor_rows(run)

    def partial_rows(self, finished: dict[str, list[dict]]) -> None:
        """No row before every fold has ended."""
        return None

    def deploy(self, winner: dict, sources: dict, n_jobs: int, deadline: float | None = None) -> bool:
        """Search the winner once more on all cross-validated images (the chief alone): the
        model that is exported. Its test metrics (the holdout's, if any) go into the
        winner's row (True: the row changed). ``deadline`` (``--budget``): the search starts
        no trial after it (it runs at least one)."""
        name = winner["backbone"]
        log.info(f"cv: {name} ranks first; searching it once more on all {len(self.plan.cv_files)} "
                 "cross-validated images for the model to deploy")
        job = replace(BackboneJob.final(self.run, name, n_jobs, frozen_pass=self.frozen_pass), deadline=deadline)
        final = run_backbone(job, sources)
        winner.update({k: v for k, v in final.items() if k.startswith(("hp_", "test_")) or k in FINAL_MODEL_KEYS})
        winner.update(final_status=final.get("status"), final_val_objective=final.get("val_objective"),
                      final_trials_done=final.get("trials_done"))
        return True


def _floor_rows(run) -> list[dict]:
    """The floor baselines' rows (:func:`bench.floor.floor_rows`); none with ``--no-floor``.
    The majority and content-logistic ones are scored here, once (a resumed run keeps them)."""
    from bench.floor import enabled, floor_rows, run_content_floors

    if not enabled(run.config):
        return []
    run_content_floors(run)
    return floor_rows(run)


def design_for(run, frozen_pass: FrozenPass) -> SingleSplit | NestedCV:
    """The run's design: nested cross-validation when it was started with ``--cv``."""
    return SingleSplit(run, frozen_pass) if run.folds is None else NestedCV(run, frozen_pass)


def run_design(run, cluster=None, frozen_pass: FrozenPass = FrozenPass(), sources: dict | None = None,
               release: bool = True):
    """Run every job of the run's design (resumable job by job), rank the backbones on the
    design's estimates, train the model to deploy. Returns the leaderboard table; None for
    a distributed worker (the chief ranks) or when no backbone has a row.

    ``sources``: built backbones kept by the caller for later runs (a suite); without it
    each backbone is freed after its last job. With ``--budget`` (:mod:`bench.budget`) the
    backbones of each round run cheapest first, each search gets its share of the time
    left, and jobs the budget stops are not run. ``release=False``: the backbones dropped
    at the end are not collected (:meth:`bench.collector.KeptBackbones.release`, a full
    collection of every object: about a second), for a process that ends soon after."""
    from bench.budget import Budget
    from bench.collector import KeptBackbones

    design = design_for(run, frozen_pass)
    jobs = design.jobs(cluster)
    keep = sources is not None
    sources = {} if sources is None else sources  # each backbone built once for all of its jobs
    budget = Budget.open(run) if cluster is None else None
    if budget is not None:
        jobs = design.cheapest_first(jobs)
    last_use = {job.source_key: i for i, job in enumerate(jobs)}
    kept = KeptBackbones()
    try:
        return _run_jobs(run, design, jobs, cluster, sources, keep, budget, last_use, kept)
    finally:
        if not keep:
            sources.clear()
        if release:
            kept.release()


def _run_jobs(run, design, jobs, cluster, sources, keep, budget, last_use, kept):
    """:func:`run_design`'s loop over its jobs, then the ranking and the model to deploy."""
    from bench.budget import CachingWontFit

    finished: dict[str, list[dict]] = {}
    for i, job in enumerate(jobs):
        if budget is not None:
            job = design.budgeted(job, jobs[i:], finished, budget)
            if job is None:
                continue
        if (what := design.describe(job)) is not None:
            log.info(what)
        started, ran = time.monotonic(), not job.files.result_json.exists()
        cached = job.name in finished  # its backbone's cache is already written
        built = job.source_key not in sources
        try:
            row = run_backbone(job, sources)
        except CachingWontFit as error:  # --budget: its caching would not end in time
            design.wont_fit(job, budget, error)
            sources.pop(job.source_key, None)
            continue
        if last_use[job.source_key] == i and not design.searches_winner_again and not keep:
            sources.pop(job.source_key, None)  # no later job needs this backbone: free its memory
        elif built and job.source_key in sources and last_use[job.source_key] > i:
            kept.keep()  # its folds to come: later collections need not walk it (bench.collector)
        if budget is not None:
            first = ran and not cached and row is not None
            budget.record(time.monotonic() - started if ran else None, row.get("prepare_seconds", 0.0) if first else 0.0,
                          job.name)
        if row is None:
            continue
        finished.setdefault(job.name, []).append(row)
        if budget is not None and (i + 1 == len(jobs) or jobs[i + 1].fold != job.fold):
            design.race(finished, budget)  # a round of folds has ended
        if (partial := design.partial_rows(finished)) is not None:
            write_leaderboard(partial, run.path)
    if cluster is not None and not cluster.is_chief or not finished:
        return None
    design.stopped = budget.stopped if budget is not None else {}
    rows = design.rows(finished)
    table = write_leaderboard(rows, run.path)
    ranked = table[table["rank"] == 1] if "rank" in table else table.iloc[0:0]
    if ranked.empty:
        return table
    winner = next(r for r in rows if r["backbone"] == ranked["backbone"].iloc[0])
    deadline = None  # --budget: the rest of it, less what evaluating and saving the model take
    if budget is not None:
        val = len(run.split.rows("val"))  # of the images the winner cached (train and val)
        share = val / max(1, val + len(run.split.rows("train")))
        after = budget.evaluation_seconds(winner["backbone"], share)
        deadline = time.monotonic() + max(0.0, budget.left() - after)
    changed = design.deploy(winner, sources, len(jobs), deadline)
    if budget is not None:
        budget.record()  # the time the model to deploy took, for the report
    return write_leaderboard(rows, run.path) if changed else table
