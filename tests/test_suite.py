"""``bench suite``: datasets run as ordinary run folders, a verdict across them, resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.demo import PhantomClass, make_phantom_data
from bench.data.phantom import LesionStyle
from bench.suite import demo
from bench.suite.demo import DATASETS, demo_datasets, demo_toml
from conftest import make_folder

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
STYLES = {"easy": LesionStyle(0.25, 0.8, 1.0)}
SUITE = """
[run]
backbones = "mobilenet_v2,vgg16"
weights = "none"
image-size = 32
max-trials = 1
epochs = 2
max-unfreeze = 0
val-size = 0.25
test-size = 0.3
"""
#: Cheap options for the demo suite's datasets in tests: two small backbones, one short trial.
CHEAP = ["--backbones", "mobilenet_v2,vgg16", "--image-size", "32", "--max-unfreeze", "0", "--max-trials", "1",
         "--epochs", "1"]


def _third(classes):
    return [PhantomClass(c.name, c.n // 3, c.style) for c in classes]


#: The demo suite's datasets with a third of their images each (same names, classes and styles).
SMALL_DEMO = {name: (_third(classes), what) for name, (classes, what) in DATASETS.items()}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, warm):
    """The demo suite's four phantom datasets and a folder of the user's as a fifth (cheap
    options from the command line), killed between its first two datasets, then inside the
    second (while caching features), resumed each time: the finished suite, what each step
    said, the state after the first kill, and the first dataset's leaderboard time stamp then.
    The demo's datasets have a third of their images here: the suite around them is tested,
    not their difficulty."""
    root = tmp_path_factory.mktemp("suite")
    extra = {"own": make_folder(root / "own", {"no": 12, "yes": 12}, size=48, seed=6)}
    toml = root / "suite.toml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "DATASETS", SMALL_DEMO)
        toml.write_text(demo_toml(demo_datasets(root / "cache"), extra=extra), encoding="utf-8")
    common = ["--out", root / "out", "--reports", root / "reports", "--name", "s", "--no-export"]
    def bench(*args, env=None):  # a process of its own: a kill must not take the test runner with it
        return warm.run(["suite", *map(str, args)], env=env)

    steps = {"between": bench(toml, *CHEAP, *common, env={"BENCH_KILL_AT": "suite-dataset"})}
    state = json.loads((root / "out" / "s" / "suite.json").read_text())
    first = root / "out" / "s" / "large-lesions" / "leaderboard.json"
    stamp = first.stat().st_mtime_ns
    steps["inside"] = bench("--resume", *common, env={"BENCH_KILL_AT": "caching"})
    steps["final"] = bench("--resume", *common)
    return root, steps, state, stamp


def names(root) -> list[str]:
    return [*DATASETS, "own"]


def test_a_killed_suite_resumes_between_datasets_and_inside_one(killed_and_resumed):
    root, steps, state, stamp = killed_and_resumed
    assert steps["between"].returncode == -9 and state["finished"] == ["large-lesions"]
    assert steps["inside"].returncode == -9
    final = steps["final"]
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"dataset 1/{len(names(root))} large-lesions: finished earlier, skipped" in steps["inside"].stderr
    assert "faint-lesions: resuming its run" in final.stderr  # the dataset killed while caching
    # random weights: MobileNetV2's BatchNorm statistics are set from each dataset's images; VGG16 has none to set
    assert "mobilenet_v2: set BatchNorm statistics from" in final.stderr and "vgg16: set BatchNorm" not in final.stderr
    suite = root / "out" / "s"
    assert json.loads((suite / "suite.json").read_text())["finished"] == names(root)
    assert (suite / "large-lesions" / "leaderboard.json").stat().st_mtime_ns == stamp  # not run again
    for name in names(root):  # every dataset an ordinary, finished run folder
        board = json.loads((suite / name / "leaderboard.json").read_text())
        board = [r for r in board if r["kind"] == "backbone"]  # the floor rows follow
        assert sorted(r["backbone"] for r in board) == ["mobilenet_v2", "vgg16"]
        assert (root / "reports" / "s" / name / "report.html").is_file()


def test_verdict_table_and_report_across_datasets(killed_and_resumed):
    root, steps, _, _ = killed_and_resumed
    out, n = steps["final"].stdout, len(names(root))
    assert "mean rank" in out and "test ROC AUC" in out
    verdict = json.loads((root / "out" / "s" / "verdict.json").read_text())
    assert verdict["sentence"] in out and [d["name"] for d in verdict["datasets"]] == names(root)
    assert verdict["datasets"][3]["classes"] == ["no_tumor", "ring", "solid"]  # three classes, its own estimate
    ranks = np.array(verdict["across"]["ranks"], dtype=float)
    assert ranks.shape == (n, 2) and all(sorted(r) in ([1, 2], [1.5, 1.5]) for r in ranks.tolist())
    assert np.isclose(sum(verdict["across"]["probability_best"]), 1.0)
    assert verdict["across"]["friedman"]["reason"] and verdict["across"]["nemenyi"]["computed"]  # 2 models
    pair = verdict["across"]["pairs"][0]
    assert pair["n"] == n and pair["wins"] + pair["ties"] + pair["losses"] == n
    assert not pair["bayes_reason"] and np.isclose(pair["p_a_better"] + pair["p_rope"] + pair["p_b_better"], 1.0)
    board = pd.read_csv(root / "out" / "s" / "leaderboard.csv")
    floor_rows, board = board[board["kind"] == "floor"], board[board["kind"] == "backbone"]
    assert len(board) == 2 * n and set(board["status"]) == {"ok"}
    # the floor: every dataset's floor rows, never ranked; the best one per dataset with each backbone's reading
    assert floor_rows["rank"].isna().all() and set(floor_rows["dataset"]) == set(names(root))
    assert (floor_rows["backbone"] == "content-logistic").sum() == n
    assert [f["dataset"] for f in verdict["floor"]] == names(root) and verdict["floor_sentence"] in out
    for f in verdict["floor"]:
        best = floor_rows[(floor_rows["dataset"] == f["dataset"]) & (floor_rows["backbone"] == f["floor"])].iloc[0]
        assert np.isclose(best["value"], f["value"]) and set(f["readings"]) == {"mobilenet_v2", "vgg16"}
        assert set(f["readings"].values()) <= {-1, 0, 1}
    row = board[(board["dataset"] == "imbalanced") & (board["backbone"] == "vgg16")].iloc[0]
    run_row = next(r for r in json.loads((root / "out" / "s" / "imbalanced" / "leaderboard.json").read_text())
                   if r["backbone"] == "vgg16")
    assert np.isclose(row["value"], run_row["test_roc_auc"]) and np.isclose(row["ci_low"], run_row["test_roc_auc_ci_low"])
    html = (root / "reports" / "s" / "suite.html").read_text()
    assert verdict["sentence"].split(";")[0] in html
    assert html.count("data:image/png;base64") >= 3  # heatmap, CD diagram, Bayesian matrix
    assert 'href="large-lesions/report.html"' in html and "[[datasets]]" in html  # links, and the suite file
    from markupsafe import escape

    assert "The floor on each dataset" in html and str(escape(verdict["floor_sentence"])) in html


def test_leaderboard_and_report_read_a_suite_folder(killed_and_resumed, tmp_path):
    root, _, _, _ = killed_and_resumed
    result = runner.invoke(app, ["leaderboard", str(root / "out" / "s"), "--sort", "mean_rank"])
    assert result.exit_code == 0, result.output
    assert "suite rank" in result.output and "mean rank" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith(tuple(names(root)))]
    assert sum("(floor)" not in line for line in lines) == 2 * len(names(root))  # datasets x 2 backbones, then the floor
    assert sum("content-logistic (floor)" in line for line in lines) == len(names(root))
    again = runner.invoke(app, ["report", str(root / "out" / "s"), "--reports", str(tmp_path)])
    assert again.exit_code == 0 and (tmp_path / "s" / "suite.html").is_file()


def test_a_suite_refuses_to_change_what_it_computes_on_resume(killed_and_resumed):
    root, _, _, _ = killed_and_resumed
    out = ["--out", str(root / "out"), "--name", "s"]
    result = runner.invoke(app, ["suite", str(root / "suite.toml"), *CHEAP[:-2], "--epochs", "3", "--resume", *out])
    assert result.exit_code == 2 and "--epochs 3 (the suite has 1)" in result.output
    fresh = runner.invoke(app, ["suite", str(root / "suite.toml"), *out])
    assert fresh.exit_code == 2 and "already exists; continue it with --resume --name s" in fresh.output


def test_floor_sentence_counts_the_datasets_where_the_leader_beats_its_floor():
    from bench.suite.floor import floor_sentence

    def floor(name, **readings):
        return {"dataset": name, "floor": "content-logistic", "readings": readings}

    floors = [floor("a", x=1, y=0), floor("b", x=0, y=1), floor("c", x=-1, y=0), {"dataset": "d", "floor": None}]
    text = floor_sentence(floors, "x")
    assert "x is better beyond noise on 1 of 3 datasets (a) and worse on c." in text
    assert "On c no backbone beats its floor baseline" in text  # b: y beats it; d: no floor, not counted
    none = floor_sentence([floor("a", x=0), floor("b", x=-1)], "x")
    assert "on 0 of 2 datasets and worse on b. On no dataset does any backbone beat its floor baseline" in none
    assert "No dataset has a finished floor baseline" in floor_sentence([{"dataset": "d", "floor": None}], "x")


def test_a_built_backbone_serves_the_next_dataset_with_that_run_s_own_weights(tmp_path):
    """The network built for one run, reused by another, starts from exactly the weights a
    fresh build for that run gives (random init, then BatchNorm calibrated on its images)."""
    import backbones
    from bench.search.source import BackboneSource

    record = backbones.get("mobilenet_v2")
    images = {k: lambda k=k: np.random.default_rng(k).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8) for k in (0, 1)}
    first = BackboneSource(record, "none", 32, tmp_path / "r1" / "mobilenet_v2", 0, images[0])
    model = first.base()
    reused = BackboneSource(record, "none", 32, tmp_path / "r2" / "mobilenet_v2", 0, images[1])
    reused.adopt(first)
    calls = []
    original = record.build
    object.__setattr__(record, "build", lambda *a, **k: calls.append(1) or original(*a, **k))
    try:
        again = reused.base()
    finally:
        object.__setattr__(record, "build", original)
    assert again is model and not calls  # no second build
    got = [w.copy() for w in again.get_weights()]
    fresh = BackboneSource(record, "none", 32, tmp_path / "r3" / "mobilenet_v2", 0, images[1]).base()
    assert all(np.array_equal(a, b) for a, b in zip(got, fresh.get_weights()))


@pytest.mark.slow
def test_a_chief_and_a_worker_share_a_suite(tmp_path, warm):
    """Distributed as for bench run: the worker runs the trials of every dataset, the chief
    ranks, reports and writes the verdict."""
    import re

    from test_distributed import _run_cluster

    text = SUITE.replace('backbones = "mobilenet_v2,vgg16"', 'backbones = "mobilenet_v2"').replace(
        "max-trials = 1", "max-trials = 2\ntuner = \"random\"").replace("epochs = 2", "epochs = 1")
    for i, name in enumerate(("one", "two")):
        make_phantom_data(tmp_path / name, [PhantomClass("normal", 10, None), PhantomClass("lesion", 10, STYLES["easy"])],
                          32, i, {"generator": "test"})
        text += f'\n[[datasets]]\nname = "{name}"\npath = "{name}"\n'
    (tmp_path / "suite.toml").write_text(text, encoding="utf-8")
    logs = _run_cluster(warm, ["suite", tmp_path / "suite.toml", "--out", tmp_path / "out", "--reports",
                         tmp_path / "reports", "--name", "d", "--no-export"], ("chief", "tuner0"))
    for name in ("one", "two"):
        trials = pd.read_csv(tmp_path / "out" / "d" / name / "mobilenet_v2" / "trials.csv")
        assert len(trials) == 2 and set(trials["ran_on"]) == {"tuner0"}
        assert len(re.findall(rf"dataset \d/2: {name}", logs["tuner0"])) == 1
    verdict = json.loads((tmp_path / "out" / "d" / "verdict.json").read_text())
    assert [d["name"] for d in verdict["datasets"]] == ["one", "two"]
    assert "the chief writes the verdict" in logs["tuner0"]

