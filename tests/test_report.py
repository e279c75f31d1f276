"""bench.report: builds from a hand-made run folder, statistics agree with scipy /
statsmodels / scikit-learn, banners show exactly when their condition holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.evaluate.metrics import evaluate
from bench.evaluate import paired
from bench.report import build_report, findings, formatting
from bench.report.load import load_run

CLASSES = ["healthy", "tumour"]
N_TEST = 40


# --------------------------------------------------------------------------- a hand-made run folder


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _predictions(seed: int, skill: float, classes: list[str] = CLASSES) -> pd.DataFrame:
    """N_TEST test predictions whose scores separate the classes by ``skill``."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = np.arange(N_TEST) % k
    if k == 2:
        p = np.clip(0.5 + skill * (y - 0.5) + rng.normal(0, 0.22, N_TEST), 0.01, 0.99)
        proba = np.stack([1 - p, p], axis=1)
        pred = (p >= 0.5).astype(int)
    else:
        logits = 4 * skill * np.eye(k)[y] + rng.normal(0, 1, (N_TEST, k))
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        pred = proba.argmax(axis=1)
    table = pd.DataFrame({"file": [f"{classes[c]}/img_{i:03d}.png" for i, c in enumerate(y)],
                          "label": [classes[c] for c in y]})
    for j, c in enumerate(classes):
        table[f"prob_{c}"] = proba[:, j]
    table["prediction"] = [classes[c] for c in pred]
    table["correct"] = pred == y
    return table


def _trials(n_ok: int, n_failed: int, best: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_ok + n_failed):
        ok = i < n_ok
        dense = i % 3
        row = {
            "trial": f"{i:02d}", "status": "completed" if ok else "failed", "unfreeze": i % 2,
            "pooling": ["avg", "max", "flatten"][i % 3], "dense_layers": dense,
            "learning_rate": float(10 ** rng.uniform(-4, -2)),
            "val_loss": 0.5 if ok else np.nan, "val_accuracy": 0.8 if ok else np.nan,
            "val_auc": (0.95 if f"{i:02d}" == best else float(rng.uniform(0.6, 0.9))) if ok else np.nan,
            "val_f1": 0.7 if ok else np.nan, "best_epoch": 2 if ok else np.nan, "epochs_run": 3 if ok else np.nan,
            "seconds": 4.2 if ok else np.nan,
            "message": "" if ok else "ResourceExhaustedError: OOM when allocating tensor | shape [32,7,7,2048]",
            "units_0": 64 if dense >= 1 else np.nan, "dropout_0": 0.2 if dense >= 1 else np.nan,
            "units_1": 32 if dense >= 2 else np.nan, "dropout_1": 0.0 if dense >= 2 else np.nan,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _history(epochs: int = 4) -> dict:
    t = np.arange(1, epochs + 1)
    return {
        "history": {"loss": list(1 / t), "accuracy": list(0.6 + 0.08 * t / epochs), "auc": list(0.7 + 0.05 * t),
                    "f1": list(0.5 + 0.05 * t), "val_loss": list(1.2 / t), "val_accuracy": list(0.55 + 0.05 * t),
                    "val_auc": list(0.6 + 0.06 * t), "val_f1": list(0.5 + 0.04 * t)},
        "best_epoch": epochs - 1, "epochs_run": epochs, "phase_epochs": [2, epochs - 2], "seconds": 3.0,
    }


def split_test_files(classes: list[str] = CLASSES) -> list[dict]:
    """split.json's test rows of :func:`make_run`: the first ``4 k`` images (``k`` classes) make
    ``2 k`` duplicate groups of two images of one class (with two classes: 40 images, 36
    groups); every other image is its own group."""
    k = len(classes)
    rows = []
    for i in range(N_TEST):
        group = f"dup{i % k + k * (i // (2 * k))}" if i < 4 * k else f"t{i:03d}"
        rows.append({"path": f"{classes[i % k]}/img_{i:03d}.png", "label": classes[i % k], "group": group,
                     "split": "test", "sha256": "0" * 64})
    return rows


def make_run(root: Path, backbones: dict | None = None, weights: str = "imagenet", synthetic: bool = False,
             counts: dict | None = None, name: str = "handmade", classes: list[str] = CLASSES) -> Path:
    """A run folder as `bench run` writes it, by hand: ``backbones`` maps name to
    ``{"status": "ok"|"failed", "skill": float, "failed_trials": int}``. split.json lists the
    test images with their duplicate groups (:func:`split_test_files`), and the test intervals
    resample those groups, as `bench run` does."""
    backbones = backbones if backbones is not None else {
        "alpha": {"status": "ok", "skill": 0.5, "failed_trials": 1},
        "beta": {"status": "ok", "skill": 0.1, "failed_trials": 0},
    }
    counts = counts or dict(zip(classes, [120, 110, 100, 90][: len(classes)]))
    run = root / name
    _write_json(run / "run.json", {
        "bench_version": "0.1.0",
        "command": ["bench", "run", "--data", "/data/mri", "--backbones", ",".join(backbones), "--seed", "7"],
        "config": {"data": "/data/mri", "backbones": list(backbones), "weights": weights, "seed": 7,
                   "val_size": 0.15, "test_size": 0.15, "image_size": 64, "out": str(root), "reports": "reports",
                   "name": name, "tuner": "bayesian", "max_trials": 3, "epochs": 4, "objective": "val_auc",
                   "batch_size": 32, "augment": False, "aug_views": 4, "max_unfreeze": 2, "baseline": False},
        "created": "2026-01-02T03:04:05+00:00", "data_hash": "ab" * 32,
        "machine": {"platform": "Linux-test", "processor": "x86_64", "cpu_count": 2},
        "synthetic_data": synthetic, "versions": {"bench": "0.1.0", "numpy": np.__version__, "python": "3.11"},
    })
    _write_json(run / "dataset.json", {
        "root": "/data/mri", "synthetic": synthetic, "classes": list(counts), "counts": counts, "files": [],
        "skipped": [{"path": "healthy/notes.txt", "reason": "not an image (unknown format)"}],
        "exact_duplicates": [["tumour/a.png", "tumour/a_copy.png"]],
    })
    _write_json(run / "split.json", {
        "format": 1, "seed": 7, "val_size": 0.15, "test_size": 0.15, "classes": list(counts),
        "sizes": {"train": {c: n - 40 for c, n in counts.items()}, "val": dict.fromkeys(counts, 20),
                  "test": {c: int(np.sum(np.arange(N_TEST) % len(classes) == i)) for i, c in enumerate(classes)}},
        "files": split_test_files(classes),
        "duplicate_groups": [{"group": "g0001", "kind": "exact", "split": "train",
                              "files": ["tumour/a.png", "tumour/a_copy.png"]}],
        "label_conflicts": [],
    })
    rows = []
    rank = 0
    for i, (bname, spec) in enumerate(backbones.items()):
        folder = run / bname
        failed = spec.get("failed_trials", 0)
        row = {"backbone": bname, "status": spec["status"], "family": bname, "image_size": 64, "weights": weights,
               "baseline": False, "objective": "val_auc", "trials_done": 0 if spec["status"] != "ok" else 3,
               "trials_failed": failed, "search_seconds": 42.0 + i}
        if spec["status"] == "ok":
            rank += 1
            best = "01"
            trials = _trials(3, failed, best, seed=i)
            pred = _predictions(seed=10 + i, skill=spec["skill"], classes=classes)
            y = np.array([classes.index(v) for v in pred["label"]])
            groups = {f["path"]: f["group"] for f in split_test_files(classes)}
            metrics = evaluate(y, pred[[f"prob_{c}" for c in classes]].to_numpy(), classes,
                               threshold=0.5 if len(classes) == 2 else None, n_resamples=200, seed=0,
                               groups=[groups[f] for f in pred["file"]], prevalence=np.full(len(classes), 1 / len(classes)))
            row.update(status="ok", rank=rank, best_trial=best, val_objective=0.95 - 0.05 * i, hp_unfreeze=1,
                       hp_pooling="avg", hp_dense_layers=1, hp_units_0=64, hp_dropout_0=0.2,
                       hp_learning_rate=1e-3, params_total=3_000_000 - 1_000_000 * i,
                       params_trainable=400_000, latency_ms_b1=8.0 + 4 * i, latency_ms_b32=2.0 + i)
            row.update({f"test_{k}": v for k, v in metrics.items() if k != "confusion_matrix"})
            row["test_confusion_matrix"] = metrics["confusion_matrix"]
            folder.mkdir(parents=True, exist_ok=True)
            pred.to_csv(folder / "test_predictions.csv", index=False)
            _write_json(folder / "tuner" / f"trial_{best}" / "bench_trial.json", _history())
        else:
            trials = _trials(0, max(failed, 1), "none", seed=i)
            row["message"] = "every trial failed; see trials.csv"
        folder.mkdir(parents=True, exist_ok=True)
        trials.to_csv(folder / "trials.csv", index=False)
        _write_json(folder / "result.json", row)
        rows.append(row)
    _write_json(run / "leaderboard.json", rows)
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default hand-made run (2 backbones, one failed trial) and its report, built once."""
    root = tmp_path_factory.mktemp("report")
    run = make_run(root / "results")
    md, html = build_report(run, root / "reports")
    return run, md, html


# --------------------------------------------------------------------------- the report


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing (the text is what these tests read)."""
    import bench.report.build

    keys = ("leaderboard", "deployment", "roc_pr", "calibration", "decision_curve", "search_lr", "search_choices")
    monkeypatch.setattr(bench.report.build, "make_figures", lambda *args: {"backbone": {}, **dict.fromkeys(keys)})




SECTIONS = ["Summary", "Leaderboard", "Pick for deployment", "Statistical comparison", "Per backbone",
            "What the search learned", "Data", "Reproduce"]


def test_report_builds_both_files_with_sections_in_order(built):
    run, md, html = built
    assert md == run.parents[1] / "reports" / "handmade" / "report.md"
    assert html == md.with_name("report.html")
    text = md.read_text(encoding="utf-8")
    headings = re.findall(r"^## \d\. (.+)$", text, flags=re.M)
    assert headings == SECTIONS
    page = html.read_text(encoding="utf-8")
    positions = [page.index(f"</span>{s}</h2>") for s in SECTIONS]
    assert positions == sorted(positions)


def test_markdown_links_figures_beside_it(built):
    _, md, _ = built
    text = md.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 7  # leaderboard, deployment, 2 x training, roc/pr, calibration, search
    for link in links:
        assert "/" not in link and (md.parent / link).is_file()
        assert (md.parent / link).read_bytes().startswith(b"\x89PNG")
    pngs = {p.name for p in md.parent.glob("*.png")}
    assert pngs == set(links)
    assert re.search(r"^\| +rank \| backbone +\|", text, flags=re.M)  # GitHub (pipe) tables
    assert re.search(r"^\|-+:\|:-+\|", text, flags=re.M)  # with column alignment


def test_html_is_self_contained(built):
    _, md, html = built
    page = html.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    n_png = len(list(md.parent.glob("*.png")))
    assert len(sources) == n_png
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("<table") >= 10


def test_report_content(built):
    _, md, html = built
    text = md.read_text(encoding="utf-8")
    page = html.read_text(encoding="utf-8")
    assert "**Recommended: alpha**" in text
    assert "chosen on the validation objective" in text.lower() and "never used to choose" in text
    summary = text.split("## 2.")[0]
    assert "runner-up, beta" in summary and "McNemar exact test" in summary and "paired bootstrap" in summary
    # the failed trial's message, pipe escaped in Markdown and escaped as HTML
    assert "OOM when allocating tensor \\| shape" in text
    assert "OOM when allocating tensor | shape" in page
    assert "McNemar p < 0.001: alpha and beta disagree" in text and "**alpha vs beta.**" in text
    assert "| 0.001 *" not in text and "< 0.001 (Holm < 0.001) *" in text
    assert "&lt;" not in text
    assert "healthy/notes.txt" in text and "not an image" in text  # skipped
    assert "g0001" in text  # duplicate group
    assert "bench run --data /data/mri --backbones alpha,beta --seed 7" in text
    assert "Seed 7" in text
    # the default fixture: 40 test images and one failed trial
    assert text.count("> [!WARNING]") == 2 and "**Small test split.**" in text and "**Trials failed.**" in text
    assert page.count('class="banner') == 2 and 'data-banner="failed_trials"' in page


def test_single_split_summary_states_intervals_and_the_optimistic_selection_score(built):
    run, md, html = built
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    row = json.loads((run / "leaderboard.json").read_text())[0]
    summary = text.split("## 2.")[0]
    for label, metric in (("sensitivity (recall)", "recall"), ("specificity", "specificity"),
                          ("balanced accuracy", "balanced_accuracy"), ("PR AUC", "pr_auc"),
                          ("Brier score (lower is better)", "brier"),
                          ("Brier skill (vs. training prevalence)", "brier_skill")):
        low, high = formatting.num(row[f"test_{metric}_ci_low"], 2), formatting.num(row[f"test_{metric}_ci_high"], 2)
        assert re.search(rf"^\| {re.escape(label)} +\| +{formatting.num(row[f'test_{metric}'])} \| +{low}\u2013{high} \|",
                         summary, flags=re.M), label
    assert row["test_ci_unit"] == "group" and row["test_ci_groups"] == 36
    assert "200 resamples of duplicate groups (36 groups; copies of one image are drawn together)" in summary
    assert "over resamples of duplicate groups" in text.split("## 3.")[0]  # the leaderboard's caption
    assert "Selection score (optimistic: best of trials \u00d7 epochs): val AUC 0.950 (trial 01)" in summary
    assert "val AUC selection score (optimistic)" in text and "val AUC selection score (optimistic)" in page


def test_single_split_pairs_use_the_duplicate_groups_of_split_json(built):
    """The report's tests are pairwise_tests with the test images' groups, not per image."""
    run, md, _ = built
    text = md.read_text(encoding="utf-8")
    groups = {f["path"]: f["group"] for f in json.loads((run / "split.json").read_text())["files"]}
    preds = {b: pd.read_csv(run / b / "test_predictions.csv") for b in ("alpha", "beta")}
    [t] = paired.pairwise_tests(preds, CLASSES, seed=7, groups=groups)
    assert t.unit == "group" and t.n_groups == 36 and (t.groups_only_a, t.groups_only_b) != (t.only_a, t.only_b)
    assert "compared on the same 40 test images (36 duplicate groups" in text
    assert (f"alpha is right on {t.groups_only_a} groups beta misses, beta on {t.groups_only_b} that alpha misses, "
            "of 36 duplicate groups") in text
    assert f"DeLong's test, clustered by duplicate group, {formatting.fmt_p(t.delong_p)}" in text
    assert "**DeLong's test of the AUC difference, row \u2212 column (p)**" in text
    stats = text[text.index("## 4."):text.index("## 5.")]
    assert f"| {formatting.fmt_signed(t.auc_diff)} ({formatting.fmt_p(t.delong_p)}, Holm " in stats


def test_pairwise_matrix_stars_follow_holm_adjusted_p_values():
    """A raw p below 0.05 whose Holm-adjusted p is not gets no star; the raw and adjusted
    values are both shown, in the McNemar, bootstrap and DeLong matrices."""
    from bench.report import split_section
    from bench.report.load import BackboneResult, RunData

    preds = _predictions(1, 0.5)
    data = RunData(Path("."), "x", {}, {}, {}, CLASSES, [
        BackboneResult(n, {"status": "ok", "rank": i + 1}, test_predictions=preds) for i, n in enumerate("abc")])
    common = dict(auc_diff=0.1, auc_ci_low=0.01, auc_ci_high=0.2, unit="group", n_groups=30, groups_only_a=5,
                  groups_only_b=1)
    tests = [paired.PairTest("a", "b", 40, 6, 1, 0.03, auc_p=0.02, mcnemar_p_holm=0.06, auc_p_holm=0.04,
                             delong_p=0.01, delong_p_holm=0.03, **common),
             paired.PairTest("a", "c", 40, 6, 1, 0.01, auc_p=0.04, mcnemar_p_holm=0.03, auc_p_holm=0.08,
                             delong_p=0.04, delong_p_holm=0.08, **common),
             paired.PairTest("b", "c", 40, 6, 1, 0.5, auc_p=0.5, mcnemar_p_holm=0.5, auc_p_holm=0.5,
                             delong_p=0.5, delong_p_holm=0.5, **common)]
    stats = split_section.statistics_section(data, tests)
    tables = {t["title"].split()[0]: t["table"] for t in stats["tables"]}
    assert list(tables) == ["McNemar", "Paired", "DeLong's"]
    stats.update(mcnemar=tables["McNemar"], auc=tables["Paired"], delong=tables["DeLong's"])
    mcnemar = {(r[0], name): cell for r in stats["mcnemar"].rows for name, cell in zip("abc", r[1:])}
    assert mcnemar["a", "b"] == mcnemar["b", "a"] == "0.03 (Holm 0.06)"  # raw p < 0.05, but not after Holm
    assert mcnemar["a", "c"] == "0.01 (Holm 0.03) *"
    auc = {(r[0], name): cell for r in stats["auc"].rows for name, cell in zip("abc", r[1:])}
    assert auc["a", "b"] == "+0.100 (p = 0.02, Holm 0.04) *" and auc["b", "a"].startswith("\u22120.100")
    assert auc["a", "c"] == "+0.100 (p = 0.04, Holm 0.08)"
    delong = {(r[0], name): cell for r in stats["delong"].rows for name, cell in zip("abc", r[1:])}
    assert delong["a", "b"] == "+0.100 (p = 0.01, Holm 0.03) *" and delong["a", "c"] == "+0.100 (p = 0.04, Holm 0.08)"
    assert "Holm-adjusted p < 0.05" in stats["intro"] and "30 duplicate groups" in stats["intro"]
    assert "Holm" in stats["caution"]
    reading = stats["readings"][0]["text"]
    assert reading.startswith("McNemar p = 0.03, Holm-adjusted p = 0.06:") and "weak evidence" in reading
    assert "a is right on 5 groups b misses, b on 1 that a misses, of 30 duplicate groups" in reading


def test_one_ok_backbone_and_one_failed_backbone(tmp_path):
    run = make_run(tmp_path, {"alpha": {"status": "ok", "skill": 0.5},
                              "broken": {"status": "failed", "failed_trials": 2}})
    md, html = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert "**Recommended: alpha**" in text
    assert "Only one backbone finished, so there is no runner-up" in text
    assert "Only one backbone has test predictions, so there is nothing to compare" in text
    assert "broken failed: every trial failed; see trials.csv" in text
    assert "No result at all for broken" in text
    assert "fig-training-broken.png" not in text and (md.parent / "fig-training-alpha.png").is_file()
    assert html.exists()


def test_rebuild_is_identical_and_drops_stale_figures(tmp_path, no_figures):
    run = make_run(tmp_path)
    md, html = build_report(run, tmp_path / "reports")
    before = {p.name: p.read_bytes() for p in md.parent.iterdir()}
    stale = md.parent / "fig-training-old.png"
    stale.write_bytes(b"\x89PNG old")
    mine = md.parent / "notes.png"  # not the report's: left alone
    mine.write_bytes(b"\x89PNG mine")
    build_report(run, tmp_path / "reports")
    assert not stale.exists() and mine.exists()
    mine.unlink()
    assert {p.name: p.read_bytes() for p in md.parent.iterdir()} == before


def test_figures_are_reproducible():
    """The jittered strip plot is the one figure with randomness in it."""
    from bench.report import figures, rendering

    trials = pd.concat([_trials(4, 0, "01", seed=s).assign(backbone=b) for s, b in enumerate(["alpha", "beta"])])
    colours = figures.backbone_colours(["alpha", "beta"])
    state = np.random.get_state()[1].copy()
    with figures.style():
        first = rendering.png(figures.search_choices(trials, "val_auc", colours))
        second = rendering.png(figures.search_choices(trials, "val_auc", colours))
    assert first == second
    assert (np.random.get_state()[1] == state).all()  # numpy's global generator is left as it was


def test_every_backbone_has_its_own_colour_and_the_learning_rate_axis_is_legible():
    """All eleven backbones in one figure: eleven different colours (the colour-blind
    palette has ten and repeats its first); the learning-rate axis labels decades only
    (its minor labels ran into each other) and the legend sits beside the points."""
    from bench.report import figures

    names = [f"backbone{i}" for i in range(11)]
    colours = figures.backbone_colours(names)
    assert len({tuple(np.round(c, 6)) for c in colours.values()}) == 11
    assert len({tuple(np.round(c, 6)) for c in figures.backbone_colours(names[:3]).values()}) == 3
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({"backbone": np.repeat(names, 4), "learning_rate": 10 ** rng.uniform(-3.6, -2.3, 44),
                           "val_auc": rng.uniform(0.4, 0.9, 44)})
    with figures.style():
        fig = figures.search_learning_rate(trials, "val_auc", colours)
        fig.canvas.draw()
        ax = fig.axes[0]
        assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
        assert len(shown) >= 2  # at least two decades labelled
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, not over the points


def test_missing_optional_files(tmp_path, no_figures):
    """A damaged but readable run: no split.json or dataset.json, one backbone without its
    predictions, history and trials.csv. The report says what is missing instead of failing."""
    run = make_run(tmp_path, {"alpha": {"status": "ok", "skill": 0.5}, "beta": {"status": "ok", "skill": 0.2}})
    for path in ("split.json", "dataset.json", "beta/test_predictions.csv", "beta/trials.csv",
                 "beta/tuner/trial_01/bench_trial.json"):
        (run / path).unlink()
    md, html = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert "2 classes (healthy, tumour)" in text  # taken from the prediction columns
    assert ("The runner-up is beta, but the two cannot be compared prediction by prediction (the test predictions "
            "of one of the two are missing") in text
    assert "Only one backbone has test predictions" in text
    assert "split.json is missing from the run folder." in text


def test_no_backbone_finished(tmp_path, no_figures):
    run = make_run(tmp_path, {"broken": {"status": "failed", "failed_trials": 1}})
    md, html = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert "No recommendation: no backbone finished" in text
    assert "**No backbone finished.**" in text
    assert "No backbone has test predictions" in text
    assert 'data-banner="no_result"' in html.read_text(encoding="utf-8")


def test_three_classes(tmp_path, no_figures):
    classes = ["glioma", "meningioma", "none"]
    run = make_run(tmp_path, classes=classes)
    md, html = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert "**Recommended: alpha**" in text and "(macro averages)" in text
    assert "McNemar exact test on the same 40 test images" in text and "AUC difference" not in text
    assert "Paired bootstrap of the AUC difference" not in text


def test_three_class_figures_draw():
    from bench.report import figures, rendering

    classes = ["glioma", "meningioma", "none"]
    preds = {"alpha": _predictions(1, 0.8, classes), "beta": _predictions(2, 0.3, classes)}
    colours = figures.backbone_colours(list(preds))
    with figures.style():
        for fig in (figures.roc_pr(preds, classes, colours), figures.reliability(preds, classes, colours),
                    # no training history (bench_trial.json missing): the panels say so
                    figures.training_and_confusion(None, [[5, 1, 0], [2, 4, 1], [0, 0, 7]], classes, colours["alpha"])):
            assert rendering.png(fig).startswith(b"\x89PNG")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        build_report(tmp_path / "missing", tmp_path / "reports")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no run.json"):
        build_report(tmp_path / "empty", tmp_path / "reports")
    run = make_run(tmp_path)
    (run / "leaderboard.json").unlink()
    with pytest.raises(BenchError, match="no backbone has finished"):
        build_report(run, tmp_path / "reports")


# --------------------------------------------------------------------------- statistics


def _correct(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    return a, b


def _as_predictions(correct: np.ndarray, score: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"file": [f"f{i}" for i in range(len(y))], "label": [CLASSES[k] for k in y],
                         f"prob_{CLASSES[0]}": 1 - score, f"prob_{CLASSES[1]}": score, "correct": correct})


@pytest.mark.parametrize("cells", [(10, 9, 1, 20), (30, 0, 0, 4), (3, 7, 8, 2), (0, 12, 2, 0), (5, 1, 6, 5)])
def test_pair_mcnemar_agrees_with_scipy_and_statsmodels(cells):
    from scipy.stats import binomtest

    both, a_only, b_only, neither = cells
    a, b = _correct(*cells)
    y = np.arange(len(a)) % 2
    rng = np.random.default_rng(0)
    t = paired.compare_pair("a", "b", _as_predictions(a, rng.random(len(y)), y),
                           _as_predictions(b, rng.random(len(y)), y), CLASSES, n_resamples=200)
    assert (t.n, t.only_a, t.only_b) == (len(a), a_only, b_only)
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert t.mcnemar_p == pytest.approx(expected)
    statsmodels = pytest.importorskip("statsmodels.stats.contingency_tables")
    table = np.array([[both, a_only], [b_only, neither]])
    assert t.mcnemar_p == pytest.approx(statsmodels.mcnemar(table, exact=True).pvalue)


def test_pair_auc_bootstrap_agrees_with_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s_a = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 60), 0, 1)
    s_b = rng.random(60)
    right = np.ones(60, dtype=bool)
    t = paired.compare_pair("a", "b", _as_predictions(right, s_a, y), _as_predictions(right, s_b, y), CLASSES,
                           n_resamples=200, seed=5)
    assert t.auc_diff == pytest.approx(roc_auc_score(y, s_a) - roc_auc_score(y, s_b))
    # the same resamples, scored image by image with scikit-learn
    idx = np.random.default_rng(5).integers(0, 60, size=(200, 60))
    diffs = np.array([roc_auc_score(y[i], s_a[i]) - roc_auc_score(y[i], s_b[i]) for i in idx if len(set(y[i])) == 2])
    assert (t.auc_ci_low, t.auc_ci_high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))
    assert t.auc_p == pytest.approx(min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))))
    assert t.auc_significant and "reliably better" in findings.auc_reading(t)
    same = paired.compare_pair("a", "b", _as_predictions(right, s_a, y), _as_predictions(right, s_a, y), CLASSES,
                              n_resamples=100)
    assert same.auc_diff == 0 and same.auc_p == 1.0 and "includes 0" in findings.auc_reading(same)


def test_pairs_join_on_file_not_on_row_order():
    a, b = _correct(5, 6, 0, 1)
    y = np.arange(12) % 2
    pa = _as_predictions(a, np.full(12, 0.7), y)
    pb = _as_predictions(b, np.full(12, 0.7), y).iloc[::-1].reset_index(drop=True)
    t = paired.pairwise_tests({"a": pa, "b": pb}, CLASSES, n_resamples=50)[0]
    assert (t.only_a, t.only_b) == (6, 0)


def test_readings_and_summary_sentence():
    sig = paired.PairTest("x", "y", 50, only_a=12, only_b=2, mcnemar_p=0.013, auc_diff=0.05, auc_ci_low=-0.01,
                         auc_ci_high=0.11, auc_p=0.12)
    assert findings.mcnemar_reading(sig).startswith("McNemar p = 0.013: x and y disagree on which images they get "
                                                  "right more than chance would explain")
    assert "x is the more accurate" in findings.mcnemar_reading(sig)
    sentence = findings.significance_sentence("x", "y", sig)
    assert sentence.startswith("x is significantly more accurate than the runner-up, y")
    assert "p = 0.013" in sentence and "paired bootstrap p = 0.12" in sentence
    # seen from the runner-up's side, the roles swap
    assert findings.significance_sentence("y", "x", sig).startswith("On the test images the runner-up, x, is "
                                                                 "significantly more accurate than y")
    not_sig = paired.PairTest("x", "y", 50, only_a=4, only_b=3, mcnemar_p=1.0)
    assert "no evidence" in findings.mcnemar_reading(not_sig)
    assert findings.significance_sentence("x", "y", not_sig).startswith("x is not significantly better than the "
                                                                     "runner-up, y")
    tie = paired.PairTest("x", "y", 50, only_a=0, only_b=0, mcnemar_p=1.0)
    assert "exactly the same 50 test images right" in findings.mcnemar_reading(tie)
    assert "no runner-up" in findings.significance_sentence("x", None, None)
    assert formatting.fmt_p(0.0004) == "p < 0.001" and formatting.fmt_p(float("nan")) == "p = n/a"


@pytest.mark.parametrize(
    ("cost", "value", "expected"),
    [
        ([1, 2, 3], [0.7, 0.8, 0.9], [True, True, True]),
        ([1, 2, 3], [0.9, 0.8, 0.95], [True, False, True]),
        ([5, 5, 1], [0.8, 0.8, 0.5], [True, True, True]),  # exact ties both stay
        ([5, 4, 1], [0.8, 0.8, 0.5], [False, True, True]),  # same accuracy, cheaper wins
        ([2, float("nan"), 1], [0.9, 0.99, 0.9], [False, False, True]),
    ],
)
def test_pareto_optimal(cost, value, expected):
    assert findings.pareto_optimal(cost, value) == expected


# --------------------------------------------------------------------------- banners


def _banners(run: Path) -> list[str]:
    return [b.key for b in findings.banners(load_run(run))]


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _narrow_cis(run: Path, half: float = 0.03) -> None:
    def narrow(rows):
        for r in rows:
            if r["status"] == "ok":
                r["test_accuracy_ci_low"] = r["test_accuracy"] - half
                r["test_accuracy_ci_high"] = r["test_accuracy"] + half
    _edit(run / "leaderboard.json", narrow)


@pytest.fixture
def clean_run(tmp_path) -> Path:
    """No warning applies: imagenet weights, real data, narrow CIs, balanced classes, no failures."""
    run = make_run(tmp_path, {"alpha": {"status": "ok", "skill": 0.5}, "beta": {"status": "ok", "skill": 0.2}})
    _narrow_cis(run)
    return run


def test_no_banner_when_nothing_applies(clean_run):
    assert _banners(clean_run) == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda run: _edit(run / "run.json", lambda d: d["config"].update(weights="none")), "random_weights"),
        (lambda run: _edit(run / "run.json", lambda d: d.update(synthetic_data=True)), "synthetic"),
        (lambda run: _narrow_cis(run, 0.051), "small_test"),
        (lambda run: _edit(run / "dataset.json", lambda d: d.update(counts={"healthy": 400, "tumour": 100})),
         "imbalanced"),
        (lambda run: _edit(run / "dataset.json", lambda d: d.update(counts={"healthy": 30, "tumour": 0})),
         "imbalanced"),
        (lambda run: _edit(run / "leaderboard.json", lambda rows: rows[1].update(trials_failed=2))
         or (run / "beta" / "trials.csv").unlink(), "failed_trials"),
    ],
)
def test_each_banner_alone(clean_run, change, key):
    change(clean_run)
    assert _banners(clean_run) == [key]


@pytest.mark.parametrize(("half", "shown"), [(0.05, False), (0.0501, True), (0.2, True)])
def test_small_test_threshold(clean_run, half, shown):
    _narrow_cis(clean_run, half)
    assert ("small_test" in _banners(clean_run)) is shown


@pytest.mark.parametrize(("counts", "shown"), [((390, 100), False), ((400, 100), True), ((100, 100), False)])
def test_imbalance_threshold(clean_run, counts, shown):
    _edit(clean_run / "dataset.json", lambda d: d.update(counts=dict(zip(CLASSES, counts))))
    assert ("imbalanced" in _banners(clean_run)) is shown


def test_failed_trials_counted_from_trials_csv(clean_run):
    trials = pd.read_csv(clean_run / "alpha" / "trials.csv", dtype={"message": str})
    trials.loc[0, ["status", "message"]] = ["invalid", "Expected ... Received: ..."]
    trials.to_csv(clean_run / "alpha" / "trials.csv", index=False)
    banner = findings.banners(load_run(clean_run))
    assert [b.key for b in banner] == ["failed_trials"] and "1 trial failed (alpha: 1)" in banner[0].text


def test_small_test_falls_back_to_split_size(tmp_path):
    run = make_run(tmp_path, {"broken": {"status": "failed"}})
    keys = _banners(run)
    assert "small_test" in keys  # 40 test images: a CI of about +-15 points, no backbone to read it from


def test_all_banners_rendered(tmp_path, no_figures):
    run = make_run(tmp_path, weights="none", synthetic=True, counts={"healthy": 500, "tumour": 50})
    md, html = build_report(run, tmp_path / "reports")
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    for title in ("Random initialisation", "Synthetic demo data", "Small test split", "Very imbalanced classes",
                  "Trials failed"):
        assert f"**{title}.**" in text and f"<strong>{title}.</strong>" in page
    assert text.count("> [!WARNING]") == 5
    # banners come before the first section
    assert text.index("Random initialisation") < text.index("## 1. Summary")


def test_configuration_says_when_features_came_from_another_frozen_pass():
    """Heads trained on bfloat16 or OpenVINO features are not heads trained on TensorFlow's
    float32 ones: the report's configuration line says so, and stays as it was otherwise."""
    from bench.report.formatting import configuration

    row = {"image_size": 96, "weights": "none", "hp_unfreeze": 0, "hp_learning_rate": 1e-3, "hp_pooling": "avg",
           "hp_dense_layers": 0}
    plain = configuration({**row, "frozen_pass_dtype": "float32", "frozen_pass_runtime": "tensorflow"})
    assert "frozen pass" not in plain and plain == configuration(row)
    assert "frozen pass in bfloat16" in configuration({**row, "frozen_pass_dtype": "bfloat16"})
    ov = configuration({**row, "frozen_pass_dtype": "bfloat16", "frozen_pass_runtime": "openvino",
                        "openvino_precision": "bf16", "openvino_parity": 5.7e-6})
    assert "frozen pass by OpenVINO in bf16 (checked in float32: features within 5.7e-06 of TensorFlow's)" in ov


def test_the_search_section_names_the_backbones_whose_flatten_heads_the_limit_kept_to_one_layer(built):
    from bench.report.load import load_run
    from bench.report.sections import head_space_text

    data = load_run(built[0])
    assert head_space_text(data) is None  # rows written before the limit existed, or with nothing cut
    data.backbones[0].row.update(flatten_hidden=False, flatten_hidden_weights=7 * 7 * 2048 * 256)
    data.backbones[1].row.update(flatten_hidden=True, flatten_hidden_weights=2 * 2 * 1280 * 256)
    data.run["config"]["max_head_weights"] = 2_000_000
    text = head_space_text(data)
    assert "map of alpha:" in text and "beta" not in text
    assert "25.69 M weights, over --max-head-weights 2,000,000" in text


def test_configuration_gives_the_input_size_in_whole_pixels():
    """A leaderboard with floor rows (no image size) reads the size column as floats."""
    from bench.report.formatting import configuration

    row = {"weights": "none", "hp_unfreeze": 0, "hp_learning_rate": 1e-3, "hp_pooling": "avg", "hp_dense_layers": 0}
    assert configuration({**row, "image_size": 224.0}).startswith("224 px input, ")
    assert configuration({**row, "image_size": 96}).startswith("96 px input, ")


def test_every_leaderboard_metric_carries_its_interval(built):
    """Sensitivity and specificity were the leaderboard's two test metrics without one."""
    from bench.report.load import load_run
    from bench.report.sections import leaderboard_table

    run, _, _ = built
    table = leaderboard_table(load_run(run))
    for name in ("test accuracy", "test F1", "test ROC AUC", "test sensitivity", "test specificity"):
        column = table.headers.index(name)
        ok = [row for row in table.rows if row[0] != "failed"]
        assert ok and all("(" in row[column] and "\u2013" in row[column] for row in ok), (name, ok)


@pytest.mark.parametrize("fork", [True, False])
def test_figures_rendered_together_are_the_bytes_rendered_one_by_one(monkeypatch, fork):
    """A report's figures are rendered after all are drawn, half of them in a forked process:
    each in the style it was drawn in (the learning-rate axis picks its ticks when rendered),
    byte for byte what rendering it at once gives; where forking fails, all of them here."""
    from bench.report import figures, rendering

    names = ["alpha", "beta", "gamma"]
    colours = figures.backbone_colours(names)
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({"backbone": np.repeat(names, 5), "learning_rate": 10 ** rng.uniform(-3.6, -2.3, 15),
                           "val_auc": rng.uniform(0.2, 1.0, 15)})

    def draw() -> list:
        with figures.style():
            return [rendering.as_figure(f"lr{i}", figures.search_learning_rate(trials, "val_auc", colours), "t", "c")
                    for i in range(3)] + [rendering.as_figure("none", None, "t", "c")]

    at_once = draw()
    if not fork:
        monkeypatch.setattr(rendering.os, "fork", lambda: (_ for _ in ()).throw(OSError("no fork here")))
    with rendering.rendered_together():
        together = draw()
        assert all(f.data == b"" for f in together[:3])  # rendered as the block ends
    assert together[3] is None and at_once[3] is None
    assert [f.data for f in together[:3]] == [f.data for f in at_once[:3]]
    assert all(f.data.startswith(b"\x89PNG") for f in together[:3])
