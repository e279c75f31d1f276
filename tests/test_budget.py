"""--budget (bench.budget): the racing rule against an independent computation, the time
shares and their bookkeeping, and a run whose searches stop on time and whose cut
backbone keeps its row, marked stopped, with the reason in the leaderboard and report."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import backbones
from bench.budget import SAVE_AND_TIME_S, Budget, CachingWontFit, behind_leader, caching_watch, duration_text, racing_sentence
from bench.config import RunConfig
from bench.errors import BenchError
from bench.evaluate.leaderboard import format_leaderboard
from conftest import make_folder


def _corrected_interval(diffs, k):
    """Nadeau-Bengio by hand: mean -/+ t(J-1) * sd * sqrt(1/J + 1/(k-1))."""
    d = np.asarray(diffs, float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) * math.sqrt(1 / len(d) + 1 / (k - 1))
    return d.mean() - half, d.mean() + half


def test_a_backbone_behind_the_leader_beyond_the_interval_is_dropped():
    scores = {"lead": {0: 0.90, 1: 0.88, 2: 0.92},
              "far": {0: 0.70, 1: 0.69, 2: 0.74},  # about 0.19 behind on every fold
              "near": {0: 0.91, 1: 0.84, 2: 0.90}}  # behind on average, within noise
    leader, behind = behind_leader(scores, k=5)
    assert leader == "lead" and set(behind) == {"far"}
    low, high = _corrected_interval([0.90 - 0.70, 0.88 - 0.69, 0.92 - 0.74], 5)
    e = behind["far"]
    assert (e["ci_low"], e["ci_high"]) == pytest.approx((low, high)) and low > 0
    assert e["folds"] == 3 and e["mean"] == pytest.approx(np.mean([0.70, 0.69, 0.74]))
    near_low, _ = _corrected_interval([0.90 - 0.91, 0.88 - 0.84, 0.92 - 0.90], 5)
    assert near_low <= 0  # why "near" stays
    text = racing_sentence(e, 5, "ROC AUC")
    assert text.startswith("stopped early after 3 of 5 outer folds") and "lead's 0.900" in text


def test_one_fold_drops_nothing_and_lower_can_be_better():
    assert behind_leader({"a": {0: 0.9}, "b": {0: 0.1}}, k=5)[1] == {}
    leader, behind = behind_leader({"a": {0: 0.10, 1: 0.12, 2: 0.11}, "b": {0: 0.30, 1: 0.33, 2: 0.31}}, k=3,
                                   maximise=False)  # a Brier score: lower is better
    assert leader == "a" and set(behind) == {"b"}


def test_time_shares_reserve_and_saved_decisions(tmp_path):
    budget = Budget(100.0, tmp_path, start=time.monotonic())
    now = time.monotonic()
    assert budget.deadline(4, False) == pytest.approx(now + 25, abs=0.5)
    assert budget.reserve(True) == 0.0  # no search seen yet
    # a first search of 40 s of which 30 s built and cached a 3-GMAC backbone, then two on its cache
    budget.record(40.0, prepare=30.0, backbone="resnet50")
    budget.record(30.0, backbone="resnet50")
    budget.record(20.0, prepare=8.0, backbone="mobilenet_v2")
    assert budget.searches == [10.0, 30.0, 12.0]
    assert budget.reserve(True) == 12.0 and budget.reserve(False) == 0.0  # the median search, caching left out
    assert budget.prepared == [["resnet50", 30.0], ["mobilenet_v2", 8.0]]  # first searches, in order
    assert budget.prepared_seconds("resnet50") == 30.0 and budget.prepared_seconds("vgg16") is None
    # after the deployed model's search: a pass over its val share of the cached images at its caching pace,
    # and a fixed time to save and time it
    assert budget.evaluation_seconds("resnet50", 0.15) == pytest.approx(0.15 * 30.0 + SAVE_AND_TIME_S)
    assert budget.evaluation_seconds("vgg16", 0.15) == SAVE_AND_TIME_S  # never cached here: the fixed part
    budget.searches = [10.0, 30.0, 20.0]
    assert budget.deadline(4, True, kept=40.0) == pytest.approx(now + 10, abs=0.5)  # (100 - 20 - 40) / 4
    assert budget.deadline(1, True, kept=90.0) is None
    budget.stop("vgg16", "not searched: the budget (2 min) was used up before its search")
    budget.record()
    saved = json.loads((tmp_path / "budget.json").read_text())
    assert saved["stopped"] == {"vgg16": "not searched: the budget (2 min) was used up before its search"}

    class Run:
        path = tmp_path
        config = RunConfig(search=None)

    Run.config = RunConfig.from_dict({"budget": "100s"})
    again = Budget.open(Run)
    assert again.seconds == 100.0 and again.stopped == budget.stopped and again.spent_before >= 0
    assert again.searches == [10.0, 30.0, 20.0] and again.prepared == budget.prepared
    assert [duration_text(s) for s in (45, 600, 5400)] == ["45 s", "10 min", "1 h 30 min"]


def test_caching_stops_when_its_own_pace_says_it_cannot_end_in_time(monkeypatch):
    """From the second batch on, the pace of the batches after the first (which traces the
    pass) projects the end; past the time given, it stops with the estimate."""
    from bench import budget as budget_module

    clock = [100.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: clock[0])
    watch = caching_watch(by=150.0, total=320)
    clock[0] = 130.0
    watch(32)  # the first batch took 30 s (tracing): no projection from it
    clock[0] = 132.0
    watch(64)  # 2 s for 32 images: 256 left take 16 s, ending at 148 <= 150
    clock[0] = 136.0
    with pytest.raises(CachingWontFit) as stopped:
        watch(96)  # 6 s for 64 images: 224 left take 21 s, ending at 157 > 150
    assert stopped.value.seconds == pytest.approx(36.0 + 21.0) and (stopped.value.measured, stopped.value.total) == (96, 320)
    never = caching_watch(by=None, total=320)
    clock[0] = 10_000.0
    never(32), never(64)  # no budget: no check


def test_a_backbone_whose_caching_cannot_end_in_time_is_stopped_and_the_run_goes_on(tmp_path, monkeypatch):
    """The caching watch stops the second backbone while it caches: it gets a stopped row
    saying why, no cache entry is left of it, and the run ranks the first backbone."""
    from bench.run import execute, prepare_run
    from bench.search import cache as cache_module

    real = cache_module.caching_watch
    calls = []

    def watch_for(by, total):
        calls.append(by)
        if len(calls) == 1:  # the run's first backbone runs whatever the time
            assert by is None
            return real(by, total)

        def watch(done):
            if done >= 16:
                raise CachingWontFit(45.0, done, total)
        return watch

    monkeypatch.setattr(cache_module, "caching_watch", watch_for)
    data = make_folder(tmp_path / "data", {"a": 12, "b": 12}, size=48, seed=4)
    run = prepare_run(RunConfig.from_dict(dict(
        data=data, backbones=["mobilenet_v3_small", "mobilenet_v2"], weights="none", image_size=32,
        out=tmp_path / "results", reports=tmp_path / "reports", name="w", max_trials=1, epochs=1, max_unfreeze=0,
        baseline=False, floor=False, budget="10m", batch_size=8)))
    table = execute(run)
    assert calls[1] is not None  # the second backbone's caching was given a time to end by
    rows = {r["backbone"]: r for r in table.to_dict("records")}
    assert rows["mobilenet_v3_small"]["rank"] == 1
    assert rows["mobilenet_v2"]["status"] == "stopped" and rows["mobilenet_v2"]["message"].startswith(
        "not searched: caching its features would take about 45 s (its pace on 16 of ")
    metas = [json.loads(p.read_text()) for p in (run.path / "cache").rglob("*.json")]
    assert {m.get("backbone") for m in metas if "backbone" in m} == {"mobilenet_v3_small"}  # nothing half-written
    assert list(json.loads((run.path / "budget.json").read_text())["stopped"]) == ["mobilenet_v2"]


def test_a_trial_stops_with_the_epoch_in_which_its_deadline_passes():
    """Both training loops end their epochs with Epochs.end: past the deadline it stops
    training and says so; early stopping alone is not a cut; no deadline never stops."""
    from bench.search.trainer import Epochs

    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.4], [0.6], [0.5], [0.5]], np.float32)

    def end(epochs, epoch):
        return epochs.end(epoch, time.perf_counter(), 0.5, y, proba, y, proba, proba, lambda: [])

    later = Epochs("val_auc", patience=5, n_classes=2, deadline=time.monotonic() + 3600)
    assert not any(end(later, e) for e in range(4)) and not later.cut_short
    past = Epochs("val_auc", patience=5, n_classes=2, deadline=time.monotonic() - 1)
    assert end(past, 0) and past.cut_short and past.history.cut_short  # the history it returns says so too
    patient = Epochs("val_auc", patience=1, n_classes=2, deadline=time.monotonic() + 3600)
    assert not end(patient, 0)
    patient.deadline = time.monotonic() - 1
    assert end(patient, 1) and not patient.cut_short  # no better than epoch 1: early stopping ends it first
    assert not patient.history.cut_short


def test_a_long_epoch_is_dropped_between_batches_once_the_trial_has_a_finished_epoch(monkeypatch):
    """A fine-tuning epoch can take a minute: once the trial has a finished epoch, the Keras
    loop stops between two batches when the deadline passes, drops that unfinished epoch
    and keeps the best finished one; a phase that follows an earlier one (initial_epoch)
    can end with no epoch at all. The first epoch of a trial always finishes."""
    import keras

    from bench.search import trainer

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype("float32"), np.tile([0, 1], 32)

    def model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))

    clock = {"now": 0.0}

    def tick():  # the loop's clock: one second per look
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(trainer.time, "monotonic", tick)
    one = model()
    alone = trainer.train(one, x, y, x, y, n_classes=2, learning_rate=0.01, epochs=1, batch_size=16)
    cut = model()
    # epoch 1 ends at the first look (1 s); epoch 2 looks before each of its 4 batches (2, 3, 4 s): stopped at 4 s
    history = trainer.train(cut, x, y, x, y, n_classes=2, learning_rate=0.01, epochs=5, batch_size=16,
                            deadline=3.5)
    assert len(history["loss"]) == 1 and history.cut_short
    assert all(np.array_equal(a, b) for a, b in zip(cut.get_weights(), one.get_weights()))  # epoch 1's weights
    assert history["loss"] == alone["loss"]
    clock["now"] = 100.0
    second_phase = trainer.train(model(), x, y, x, y, n_classes=2, learning_rate=0.01, epochs=5, batch_size=16,
                                 initial_epoch=5, deadline=50.0)
    assert not second_phase.get("loss") and second_phase.cut_short
    first = trainer.train(model(), x, y, x, y, n_classes=2, learning_rate=0.01, epochs=5, batch_size=16,
                          deadline=50.0)
    assert len(first["loss"]) == 1 and first.cut_short  # past the deadline from the start: one whole epoch


def test_cheapest_first_round_by_round(tmp_path):
    """Under --budget each round runs its backbones by multiply-adds per image, the
    cheapest first (ties in the order of --backbones)."""
    from bench.designs import NestedCV, SingleSplit
    from bench.run import prepare_run
    from bench.search.runtime import FrozenPass

    data = make_folder(tmp_path / "data", {"a": 9, "b": 9}, size=32, seed=2)
    names = ["vgg16", "mobilenet_v2", "densenet121", "mobilenet_v3_small"]  # 15.3, 0.3, 2.8, 0.06 GMACs
    common = dict(data=data, backbones=names, weights="none", image_size=32, out=tmp_path / "results",
                  max_trials=2, epochs=1, budget="10m", floor=False, baseline=False)
    run = prepare_run(RunConfig.from_dict({**common, "cv": 3, "name": "c"}))
    design = NestedCV(run, FrozenPass())
    ordered = design.cheapest_first(design.jobs())
    cheapest = ["mobilenet_v3_small", "mobilenet_v2", "densenet121", "vgg16"]
    assert [j.name for j in ordered] == cheapest * 3  # fold by fold
    assert [j.fold for j in ordered] == [(0, f) for f in range(3) for _ in names]
    # each search keeps back the deployed model's evaluation on images, at the leader's seconds per
    # cached image (its build and caching); another backbone's also the leader's folds still to run
    from bench.designs import LATENCY_IMAGES

    budget = Budget(600.0, tmp_path, start=time.monotonic())
    design.leader = "vgg16"
    assert design.final_evaluation_estimate(budget) == 0.0  # the leader not cached yet: nothing known
    budget.record(25.0, prepare=18.0, backbone="vgg16")
    final = run.split
    images = len(final.rows("val")) + len(final.rows("test")) + LATENCY_IMAGES
    expected = 18.0 * images / len(run.folds.cv_files)
    assert design.final_evaluation_estimate(budget) == pytest.approx(expected) and expected > 0
    todo = ordered[4:]  # folds 2 and 3
    assert design.kept_for(ordered[7], todo, budget) == pytest.approx(expected)  # vgg16's own fold
    assert design.kept_for(ordered[4], todo, budget) == pytest.approx(expected + 7.0 * 2)  # median search 7 s
    # a backbone's first search is given a time by which its caching must end: the time left
    # less the reserves and one search; a backbone already cached is not
    roomy = Budget(600.0, tmp_path, start=time.monotonic(), searches=[5.0])
    finished = {"mobilenet_v3_small": [{"status": "ok", "repeat": 0, "fold": 0, "test_roc_auc": 0.7}]}
    first = design.budgeted(ordered[2], ordered[2:], finished, roomy)  # densenet121, fold 1
    free = roomy.free(True, design.kept_for(ordered[2], ordered[2:], roomy))
    assert 0 < free < 600 and first.cache_by == pytest.approx(time.monotonic() + free - 5.0, abs=0.5)
    again = design.budgeted(ordered[4], ordered[4:], finished, roomy)  # mobilenet_v3_small, fold 2: cached
    assert again is not None and again.cache_by is None and again.deadline is not None
    single = prepare_run(RunConfig.from_dict({**common, "name": "s"}))
    assert [j.name for j in SingleSplit.cheapest_first(SingleSplit(single, FrozenPass()).jobs())] == cheapest
    assert backbones.get("vgg16").macs(112) == pytest.approx(15.347e9 / 4)  # scaled by the image area


@pytest.mark.parametrize("value, seconds", [("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("30", 30.0)])
def test_budget_takes_a_duration(value, seconds):
    assert RunConfig.from_dict({"budget": value}).search.budget == seconds


@pytest.mark.parametrize("value", ["5", "ten minutes", "nan"])
def test_bad_budgets_are_one_line(tmp_path, value):
    from bench.run import validate

    with pytest.raises(BenchError, match="--budget"):
        validate(RunConfig.from_dict({"budget": value, "data": tmp_path}))


def test_a_run_stops_on_time_and_keeps_the_cut_backbone_as_a_stopped_row(tmp_path, monkeypatch):
    """The first search's share is already used when it starts (one trial of three), and
    then no time is left: the second backbone is not searched; it keeps a row, unranked,
    status stopped, and the report says what the budget cut."""
    from bench import budget as budget_module
    from bench.report.build import build_report
    from bench.run import execute, prepare_run

    calls = []

    def deadline(self, remaining, searches_winner_again, kept=0.0):
        calls.append(remaining)
        return time.monotonic() if len(calls) == 1 else None

    monkeypatch.setattr(budget_module.Budget, "deadline", deadline)
    data = make_folder(tmp_path / "data", {"a": 10, "b": 10}, size=48, seed=4)
    run = prepare_run(RunConfig.from_dict(dict(
        data=data, backbones=["mobilenet_v2", "densenet121"], weights="none", image_size=32, out=tmp_path / "results",
        reports=tmp_path / "reports", name="b", max_trials=3, epochs=4, max_unfreeze=0, baseline=False, floor=False,
        budget="10m")))
    table = execute(run)
    trials = pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")
    assert len(trials) == 1  # its share was used after the first trial ...
    (sidecar,) = (run.path / "mobilenet_v2" / "tuner").rglob("bench_trial.json")
    record = json.loads(sidecar.read_text())
    assert record["epochs_run"] == 1 and record["cut_short"] is True  # ... in its first epoch of four
    rows = {r["backbone"]: r for r in table.to_dict("records")}
    assert rows["mobilenet_v2"]["status"] == "ok" and rows["mobilenet_v2"]["rank"] == 1
    cut = rows["densenet121"]
    assert cut["status"] == "stopped" and pd.isna(cut["rank"]) and cut["image_size"] == 32
    assert cut["message"] == "not searched: the budget (10 min) was used up before its search"
    assert not (run.path / "densenet121").exists()
    printed = next(line for line in format_leaderboard(table).splitlines() if "densenet121" in line)
    assert "nan" not in printed and "stopped" in printed  # the terminal's table: no trials, no seconds, not "nan/nan"
    saved = json.loads((run.path / "budget.json").read_text())
    assert saved["budget_s"] == 600 and list(saved["stopped"]) == ["densenet121"]
    md, html = build_report(run.path, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert "*densenet121: not searched: the budget (10 min) was used up before its search*" in text
    assert "--budget 10 min: the searches" in text and "It stopped 1 backbone before the end: densenet121" in text
    assert "Not finished: not searched: the budget (10 min) was used up before its search." in text
    assert "| stopped by --budget |" in text


def test_cross_validation_races_and_keeps_time_for_the_leaders_folds(tmp_path):
    """After a round of folds the backbone far behind the leader is dropped, with its
    evidence in its row; when time runs short another backbone's fold is cut while the
    leader's folds still run (a trial each)."""
    from bench.designs import NestedCV
    from bench.evaluate.crossval import cv_row
    from bench.run import prepare_run
    from bench.search.runtime import FrozenPass

    data = make_folder(tmp_path / "data", {"a": 9, "b": 9}, size=32, seed=2)
    run = prepare_run(RunConfig.from_dict(dict(
        data=data, backbones=["mobilenet_v2", "densenet121", "vgg16"], weights="none", image_size=32, cv=3,
        out=tmp_path / "results", name="c", max_trials=2, epochs=1, budget="10m", floor=False, baseline=False)))
    design = NestedCV(run, FrozenPass())
    auc = {"mobilenet_v2": (0.95, 0.93), "densenet121": (0.60, 0.59), "vgg16": (0.96, 0.90)}
    finished = {name: [{"repeat": 0, "fold": f, "status": "ok", "test_roc_auc": v, "test_accuracy": v}
                       for f, v in enumerate(values)] for name, values in auc.items()}
    budget = Budget(600.0, run.path)
    design.race(finished, budget)
    assert design.leader == "mobilenet_v2" and list(budget.stopped) == ["densenet121"]
    assert budget.stopped["densenet121"].startswith("stopped early after 2 of 3 outer folds: its ROC AUC fold mean")
    row = cv_row(run.path, "densenet121", finished["densenet121"], run.folds, "val_auc",
                 stopped=budget.stopped["densenet121"])
    assert row["status"] == "stopped" and row["cv_folds_done"] == 2
    assert row["cv_roc_auc_fold_mean"] == pytest.approx(0.595) and "cv_roc_auc" not in row

    jobs = design.jobs()
    third = [j for j in jobs if j.fold == (0, 2)]
    budget.searches = [100.0, 100.0]
    budget.spent_before = 600.0 - 150.0  # 150 s left: the leader's last fold (100 s) and the final search (100 s)
    by_name = {j.name: j for j in third}
    assert design.budgeted(by_name["densenet121"], third, finished, budget) is None  # dropped by the race
    assert design.budgeted(by_name["vgg16"], third, finished, budget) is None  # no time once the leader's is kept
    assert budget.stopped["vgg16"].startswith("stopped: the budget (10 min) was used up after 2 of 3 outer folds")
    assert design.cut_reason(by_name["vgg16"], {}, budget) == (
        "not searched: the budget (10 min) was used up before its first outer fold (the leader's folds run first)")
    leader_job = design.budgeted(by_name["mobilenet_v2"], third, finished, budget)
    assert leader_job.deadline == pytest.approx(time.monotonic() + 50, abs=1)  # 150 s left less the final search
    budget.spent_before = 600.0  # no time at all: the leader's fold still runs, a trial
    assert design.budgeted(by_name["mobilenet_v2"], third, finished, budget).deadline <= time.monotonic()
    # before any round of folds has ended, the best backbone so far leads: when the time is
    # short the others' first folds are cut and its own folds go on
    early = {"vgg16": finished["vgg16"][:1]}
    short = Budget(600.0, run.path, spent_before=600.0 - 50.0, searches=[90.0])
    first_round = [j for j in jobs if j.fold == (0, 0)]
    mobile = next(j for j in first_round if j.name == "mobilenet_v2")
    assert design.budgeted(mobile, jobs, early, short) is None
    assert short.stopped["mobilenet_v2"] == ("not searched: the budget (10 min) was used up before its first outer fold "
                                            "(the leader's folds run first)")
    vgg_next = next(j for j in jobs if j.fold == (0, 1) and j.name == "vgg16")
    assert design.budgeted(vgg_next, jobs, early, short) is not None and design.leader == "vgg16"


def _budgeted_cv_run(tmp_path):
    """A 10-minute ``--budget`` run of mobilenet_v2 under ``--cv 2`` (3 trials of 1 epoch
    a search), executed; the tests patch the budget's clock first."""
    from bench.run import execute, prepare_run

    data = make_folder(tmp_path / "data", {"a": 9, "b": 9}, size=48, seed=5)
    run = prepare_run(RunConfig.from_dict(dict(
        data=data, backbones=["mobilenet_v2"], weights="none", image_size=32, cv=2, out=tmp_path / "results",
        reports=tmp_path / "reports", name="f", max_trials=3, epochs=1, max_unfreeze=0, baseline=False, floor=False,
        budget="10m")))
    execute(run)
    return run


def test_the_search_that_makes_the_deployed_model_gets_the_rest_of_the_budget(tmp_path, monkeypatch):
    """Under --cv the winner's final search runs within what is left of the budget: with
    none left it runs one trial, like every fold's search here."""
    from bench import budget as budget_module

    monkeypatch.setattr(budget_module.Budget, "deadline", lambda self, *a, **k: time.monotonic())
    monkeypatch.setattr(budget_module.Budget, "left", lambda self: -1.0)
    run = _budgeted_cv_run(tmp_path)
    for trials in [*run.path.glob("cv/*/mobilenet_v2/trials.csv"), run.path / "mobilenet_v2" / "trials.csv"]:
        assert len(pd.read_csv(trials)) == 1, trials


def test_the_deployed_models_search_leaves_time_to_evaluate_and_save_it(tmp_path, monkeypatch):
    """Its search stops starting trials once the budget left is no more than what the
    evaluation and saving are expected to take (Budget.evaluation_seconds): with 4 s left
    and 5 s expected, it runs one trial."""
    from bench import budget as budget_module

    left = {"final": False}
    real_estimate = budget_module.Budget.evaluation_seconds

    def expected(self, name, share):
        left["final"] = True  # from here on, the deployed model's search: 4 s of the budget left
        assert 0 < share < 1 and real_estimate(self, name, share) >= budget_module.SAVE_AND_TIME_S
        return 5.0

    monkeypatch.setattr(budget_module.Budget, "evaluation_seconds", expected)
    monkeypatch.setattr(budget_module.Budget, "left", lambda self: 4.0 if left["final"] else 600.0)
    run = _budgeted_cv_run(tmp_path)
    assert left["final"]
    assert all(len(pd.read_csv(t)) == 3 for t in run.path.glob("cv/*/mobilenet_v2/trials.csv"))  # 600 s left
    assert len(pd.read_csv(run.path / "mobilenet_v2" / "trials.csv")) == 1
