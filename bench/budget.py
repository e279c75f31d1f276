"""``--budget``: a run that stops on time with the best answer it can defend.

Four rules, all written into the run folder (``budget.json``) and kept by ``--resume``:

* **Cheapest first.** The backbones run in the order of their forward pass's cost (the
  multiply-adds of one image at the run's size, :meth:`backbones.registry.Backbone.macs`),
  round by round of outer folds under ``--cv``: a short budget covers as many backbones
  as it can, and no expensive backbone eats the time of several cheap ones. Multiply-adds
  rank the cost only roughly (seconds per multiply-add differ several-fold between
  architectures, and at small sizes fixed costs dominate), so they order the backbones
  and do not predict seconds.
* **Time shares.** Before each search, the time left (less a reserve for the search that
  makes the deployed model under ``--cv`` and for its evaluation on images, and the time of
  the leader's folds still to run)
  is shared equally among the searches still to run; a search stops starting trials once
  its share is used, and a trial in progress ends with the epoch in which the share runs
  out, keeping its best epoch (every search runs at least one trial of one epoch). An
  epoch of fine-tuning (about 50 s for ConvNeXt-tiny's top two blocks on 200 images,
  tracing included, on a 2-core CPU) is not waited for: once the trial has a finished
  epoch, it stops between two batches and the unfinished epoch is dropped. When no
  time is left, the remaining searches are not run, and their backbones are marked as cut.
  The search that makes the deployed model gets what is left, less the time expected for
  evaluating and saving that model (:meth:`Budget.evaluation_seconds`).
* **Caching that fits.** A backbone's first search also builds it and caches its
  features, which no search deadline interrupts; the run's first backbone always runs.
  Any other is given the time left (after the reserves above, and one search's time kept
  for its own search) for that, and is stopped, with its cache entries discarded, once its
  own pace says it cannot make it: from its second batch on, the pace of its batches after
  the first (which traces the pass) projects the end of its caching past that time. The
  pace is measured, not predicted: seconds per multiply-add differ several-fold between
  architectures (ConvNeXt's are several times VGG16's on a CPU), and on small networks
  fixed costs (building, tracing) dominate, so no estimate from the backbones cached
  before is a bound. A backbone whose features are already cached does not pass over
  its images, and is not stopped.
* **Racing** (``--cv``): after each round of outer folds, every backbone is compared with
  the leader (the best fold mean of the objective's metric) on the folds both finished, by
  the corrected resampled t-test (:func:`~bench.evaluate.comparisons.corrected_resampled_ttest`,
  Nadeau & Bengio). A backbone whose whole 95 % interval of the difference lies on the
  leader's side is dropped: its remaining folds are not run. With one fold done nothing is
  dropped. The test is repeated after every round, so the chance of dropping a backbone
  that is in fact as good is larger than 2.5 %; a dropped backbone keeps its row, marked
  "stopped early", with the evidence.

Rows of backbones that did not finish say which rule stopped them (``status`` ``stopped``,
``message`` the evidence); they are not ranked.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.atomic import read_json, write_json_atomic

log = logging.getLogger(__name__)
BUDGET_JSON = "budget.json"
#: Seconds :meth:`Budget.evaluation_seconds` keeps for saving the deployed model and timing
#: it at batch 1 (about 0.5 s for VGG16 and 1.5 s for ConvNeXt-tiny on a 2-core CPU).
SAVE_AND_TIME_S = 1.0


def duration_text(seconds: float) -> str:
    """``25 min``, ``1 h 30 min``, ``45 s``."""
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def read_budget(run_dir) -> dict:
    """A run folder's ``budget.json`` (empty without ``--budget``): the budget, the time
    used, the searches' seconds and what was stopped, with why."""
    path = Path(run_dir) / BUDGET_JSON
    return read_json(path) if path.exists() else {}


@dataclass
class Budget:
    """The run's time budget, its clock and its decisions (see the module notes)."""

    seconds: float
    path: Path  # the run folder
    spent_before: float = 0.0  # by earlier processes of this run (--resume)
    stopped: dict[str, str] = field(default_factory=dict)  # backbone -> why it did not finish
    start: float = field(default_factory=time.monotonic)
    #: seconds of each search after its preparation (the trials and the evaluation)
    searches: list[float] = field(default_factory=list)
    #: [backbone, seconds its first search spent building it and caching its features], in
    #: the order they ran
    prepared: list[list] = field(default_factory=list)

    @classmethod
    def open(cls, run) -> Budget | None:
        """The budget of ``run`` (None without ``--budget``), with what earlier processes
        of the run spent and decided."""
        seconds = run.config.search.budget
        if seconds is None:
            return None
        saved = read_budget(run.path)
        return cls(float(seconds), Path(run.path), float(saved.get("spent_s", 0.0)), dict(saved.get("stopped", {})),
                   searches=list(saved.get("searches", [])), prepared=list(saved.get("prepared", [])))

    def elapsed(self) -> float:
        return self.spent_before + time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def search_estimate(self) -> float:
        """What a search takes after its preparation: the median of those seen so far (0
        before any)."""
        return statistics.median(self.searches) if self.searches else 0.0

    def reserve(self, searches_winner_again: bool) -> float:
        """Time kept for the search that makes the deployed model (``--cv``)."""
        return self.search_estimate() if searches_winner_again else 0.0

    def free(self, searches_winner_again: bool, kept: float = 0.0) -> float:
        """Seconds left for the searches still to run, less the reserve and ``kept``
        seconds for searches that must run later."""
        return self.left() - self.reserve(searches_winner_again) - kept

    def evaluation_seconds(self, name: str, share: float) -> float:
        """Seconds to keep, after the search that makes the deployed model, for evaluating
        and saving it: a pass over ``share`` of the images ``name`` cached, at the pace of
        its first search (building and caching it: an over-estimate; a fine-tuned model
        passes its validation images through the whole network again), and
        :data:`SAVE_AND_TIME_S` to save it and time it at batch 1."""
        return share * (self.prepared_seconds(name) or 0.0) + SAVE_AND_TIME_S

    def prepared_seconds(self, name: str) -> float | None:
        """Seconds ``name``'s first search spent building and caching it (None before)."""
        return next((float(seconds) for backbone, seconds, *_ in self.prepared if backbone == name), None)

    def deadline(self, remaining: int, searches_winner_again: bool, kept: float = 0.0) -> float | None:
        """The monotonic time at which the next search stops starting trials: its equal
        share of the time left, less ``kept`` seconds for searches that must run later;
        None when no time is left."""
        free = self.free(searches_winner_again, kept)
        if free <= 0:
            return None
        return time.monotonic() + free / max(1, remaining)

    def record(self, seconds: float | None = None, prepare: float = 0.0, backbone: str | None = None) -> None:
        """Note a finished search's ``seconds``, of which ``prepare`` built and cached
        ``backbone`` the first time; save the clock and the decisions."""
        if seconds is not None:
            self.searches.append(round(max(0.0, float(seconds) - prepare), 3))
            if backbone is not None and self.prepared_seconds(backbone) is None:
                self.prepared.append([backbone, round(float(prepare), 3)])
        write_json_atomic(self.path / BUDGET_JSON, {
            "budget_s": self.seconds, "spent_s": round(self.elapsed(), 3), "stopped": self.stopped,
            "searches": self.searches, "prepared": self.prepared})

    def stop(self, name: str, why: str) -> None:
        if name not in self.stopped:
            self.stopped[name] = why
            log.warning(f"--budget: {name} {why}")
        self.record()


class CachingWontFit(Exception):
    """``--budget``: a backbone's caching, at its measured pace, would end after the time it
    was given (:func:`caching_watch`)."""

    def __init__(self, seconds: float, measured: int, total: int) -> None:
        super().__init__(f"caching would take about {seconds:.0f} s")
        self.seconds, self.measured, self.total = seconds, measured, total


def caching_watch(by: float | None, total: int) -> Callable[[int], None]:
    """A progress callback for caching ``total`` images (called with the images done so
    far, after each batch) that raises :class:`CachingWontFit` when the caching cannot end
    by the monotonic time ``by``: from the second batch on, at the pace of the batches
    after the first (which traces the pass). No check without ``by``."""
    started = time.monotonic()
    marks: list[tuple[int, float]] = []

    def watch(done: int) -> None:
        if by is None:
            return
        marks.append((done, time.monotonic()))
        (first, at), (done, now) = marks[0], marks[-1]
        if done <= first or done >= total:
            return
        left = (now - at) / (done - first) * (total - done)
        if now + left > by:
            raise CachingWontFit(now - started + left, done, total)

    return watch


def behind_leader(fold_scores: dict[str, dict[int, float]], k: int, maximise: bool = True,
                  level: float = 0.95) -> tuple[str | None, dict[str, dict]]:
    """The racing rule on per-fold scores ``{backbone: {fold index: score}}``.

    The leader has the best mean over its folds. Every other backbone with at least two
    folds in common with it is compared on those folds: the corrected resampled t-test of
    the differences leader - backbone (or backbone - leader when lower is better). Returns
    the leader and, for each backbone whose whole ``level`` interval of the difference lies
    on the leader's side, the evidence: folds compared, both means, the difference and its
    interval."""
    from bench.evaluate.comparisons import corrected_resampled_ttest

    means = {name: float(np.mean(list(s.values()))) for name, s in fold_scores.items() if s}
    if len(means) < 2:
        return (next(iter(means)) if means else None), {}
    leader = (max if maximise else min)(means, key=lambda name: (means[name], name))
    out = {}
    for name, scores in fold_scores.items():
        common = sorted(set(scores) & set(fold_scores[leader]))
        if name == leader or len(common) < 2:
            continue
        lead = np.array([fold_scores[leader][f] for f in common])
        mine = np.array([scores[f] for f in common])
        diffs = lead - mine if maximise else mine - lead
        if not np.all(np.isfinite(diffs)):
            continue
        test = corrected_resampled_ttest(diffs, n_train=k - 1, n_test=1, level=level)
        if test.ci_low > 0:
            out[name] = {"folds": len(common), "leader": leader, "mean": float(mine.mean()),
                         "leader_mean": float(lead.mean()), "difference": test.mean,
                         "ci_low": test.ci_low, "ci_high": test.ci_high, "p": test.p_value}
    return leader, out


def racing_sentence(evidence: dict, k: int, metric: str) -> str:
    """Why a backbone was dropped, in one sentence."""
    e = evidence
    return (f"stopped early after {e['folds']} of {k} outer folds: its {metric} fold mean {e['mean']:.3f} is behind "
            f"{e['leader']}'s {e['leader_mean']:.3f} on the same folds by {e['difference']:.3f} "
            f"(corrected 95 % interval {e['ci_low']:.3f} to {e['ci_high']:.3f}, Nadeau-Bengio t-test; p = "
            f"{e['p']:.3g})")
