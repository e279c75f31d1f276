"""bench.report for a cross-validated run (``bench run --cv K``): built from a hand-made CV
run folder whose leaderboard comes from bench's own CV code (cv_row, probability best,
the ranking) over hand-made outer-fold predictions, so nothing trains. The report's
sections, numbers, pairwise tests and wording; the OOF ROC band; the model card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.folds import FoldPlan, write_folds
from bench.evaluate.crossval import (
    cv_pairwise_tests,
    cv_row,
    probability_best_by_backbone,
    selection_rule,
)
from bench.evaluate.leaderboard import write_leaderboard
from bench.evaluate.metrics import evaluate
from bench.report import build_report, findings, formatting
from bench.report.load import load_run
from test_report import CLASSES, _history, _trials, _write_json

K, REPEATS, N_CV, N_HOLDOUT = 3, 2, 36, 10
SEED = 7
#: The one report's sections; a cross-validated run adds "Cross-validation" (its folds).
CV_SECTIONS = ["Summary", "Leaderboard", "Cross-validation", "Pick for deployment", "Statistical comparison",
               "Per backbone", "What the search learned", "Data", "Reproduce"]


def _files(holdout: bool, classes: list[str] = CLASSES) -> list[dict]:
    """folds.json rows: N_CV images in groups of whole duplicates (every fourth image has a
    copy), outer fold by group and repeat, an inner validation set per fold; the holdout last."""
    rows = []
    for i in range(N_CV):
        group = i // 2 if i % 4 < 2 else 1000 + i  # images 4j and 4j+1 are copies of one scan
        label = classes[(i // 2) % len(classes) if i % 4 < 2 else i % len(classes)]
        folds = [(group // 3 + r) % K for r in range(REPEATS)]  # every class in every fold
        inner = ["".join("1" if g != f and (group + g) % 4 == 0 else "0" for g in range(K)) for f in folds]
        rows.append({"path": f"{label}/cv_{i:03d}.png", "sha256": "0" * 64, "label": label, "group": f"g{group:04d}",
                     "holdout": False, "final": "val" if i % 6 == 0 else "train", "fold": folds, "inner_val": inner})
    for i in range(N_HOLDOUT if holdout else 0):
        rows.append({"path": f"{classes[i % len(classes)]}/hold_{i:03d}.png", "sha256": "0" * 64,
                     "label": classes[i % len(classes)],
                     "group": f"h{i:04d}", "holdout": True, "final": "test", "fold": [], "inner_val": []})
    return sorted(rows, key=lambda r: r["path"])


def _scored(paths: list[str], labels: list[str], skill: float, seed: int, threshold: float | None,
            classes: list[str] = CLASSES) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.array([classes.index(v) for v in labels])
    if len(classes) == 2:
        p = np.clip(0.5 + skill * (y - 0.5) + rng.normal(0, 0.25, len(y)), 0.01, 0.99)
        proba, pred = np.stack([1 - p, p], axis=1), (p >= threshold).astype(int)
    else:
        logits = 4 * skill * np.eye(len(classes))[y] + rng.normal(0, 1, (len(y), len(classes)))
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        pred = proba.argmax(axis=1)
    table = pd.DataFrame({"file": paths, "label": labels})
    for j, c in enumerate(classes):
        table[f"prob_{c}"] = proba[:, j]
    return table.assign(prediction=[classes[c] for c in pred], correct=pred == y)


def _metrics(table: pd.DataFrame, groups: list[str], threshold: float | None, classes: list[str] = CLASSES) -> dict:
    y = np.array([classes.index(v) for v in table["label"]])
    m = evaluate(y, table[[f"prob_{c}" for c in classes]].to_numpy(), classes, threshold=threshold,
                 n_resamples=100, seed=0, groups=groups, prevalence=np.full(len(classes), 1 / len(classes)))
    row = {f"test_{k}": v for k, v in m.items() if k != "confusion_matrix"}
    row["test_confusion_matrix"] = m["confusion_matrix"]
    return row


def make_cv_run(root: Path, skills: dict | None = None, holdout: bool = True, name: str = "cvrun",
                classes: list[str] = CLASSES, failed: tuple[str, ...] = ()) -> Path:
    """A ``--cv 3 --repeats 2`` run folder as `bench run` leaves it, by hand: every outer
    fold's result.json, test_predictions.csv, trials.csv and kept trial's history, then
    the leaderboard from bench's own CV code and the winner's final model (holdout
    predictions when ``holdout``). Backbones in ``failed`` lose their second fold."""
    skills = skills or {"alpha": 0.55, "beta": 0.45, "gamma": 0.05}
    run = root / name
    files = _files(holdout, classes)
    binary = len(classes) == 2
    plan = FoldPlan(K, REPEATS, SEED, 0.15, 0.2 if holdout else 0.0, list(classes), files, [],
                    [{"group": "g0000", "kind": "exact", "part": "cv", "files": [files[0]["path"], files[1]["path"]]}])
    write_folds(plan, run / "folds.json")
    _write_json(run / "run.json", {
        "bench_version": "0.1.0", "command": ["bench", "run", "--data", "/data/mri", "--cv", "3", "--repeats", "2"],
        "config": {"data": "/data/mri", "backbones": list(skills), "weights": "imagenet", "seed": SEED, "cv": K,
                   "repeats": REPEATS, "val_size": 0.15, "test_size": 0.2 if holdout else 0.0, "image_size": 64,
                   "out": str(root), "reports": "reports", "name": name, "tuner": "bayesian", "max_trials": 2,
                   "epochs": 4, "objective": "val_auc", "batch_size": 32, "augment": False, "aug_views": 4,
                   "max_unfreeze": 2, "baseline": False},
        "created": "2026-01-02T03:04:05+00:00", "data_hash": "cd" * 32,
        "machine": {"platform": "Linux-test", "processor": "x86_64", "cpu_count": 2}, "synthetic_data": False,
        "versions": {"bench": "0.1.0"},
    })
    counts = {c: sum(f["label"] == c for f in files) for c in classes}
    _write_json(run / "dataset.json", {"root": "/data/mri", "synthetic": False, "classes": classes, "counts": counts,
                                       "files": [], "skipped": [], "exact_duplicates": []})
    final = plan.final_split()
    sizes = {s: {c: sum(1 for f in final.files if f["split"] == s and f["label"] == c) for c in classes}
             for s in ("train", "val", "test")}
    _write_json(run / "split.json", {"format": 1, "seed": SEED, "val_size": 0.15, "test_size": plan.test_size,
                                     "classes": classes, "sizes": sizes, "files": final.files,
                                     "duplicate_groups": [], "label_conflicts": []})
    group_of = {f["path"]: f["group"] for f in files}
    fold_rows: dict[str, list[dict]] = {}
    for b, (name_, skill) in enumerate(skills.items()):
        for repeat in range(REPEATS):
            for fold in range(K):
                folder = run / "cv" / f"r{repeat}-f{fold}" / name_
                held = [f for f in files if not f["holdout"] and f["fold"][repeat] == fold]
                threshold = 0.44 + 0.03 * fold if binary else None
                table = _scored([f["path"] for f in held], [f["label"] for f in held], skill,
                                seed=100 * b + 10 * repeat + fold, threshold=threshold, classes=classes)
                folder.mkdir(parents=True, exist_ok=True)
                table.to_csv(folder / "test_predictions.csv", index=False)
                _trials(2, 0, "00", seed=b + fold).to_csv(folder / "trials.csv", index=False)
                _write_json(folder / "tuner" / "trial_00" / "bench_trial.json", _history(3 + fold % 2))
                row = {"repeat": repeat, "fold": fold, "backbone": name_, "family": name_, "image_size": 64,
                       "weights": "imagenet", "baseline": False, "trials_done": 2, "trials_failed": 0,
                       "search_seconds": 3.0, "objective": "val_auc", "status": "ok", "best_trial": "00",
                       "val_objective": 0.9 - 0.1 * b + 0.01 * fold, "hp_unfreeze": fold % 2, "hp_pooling": "avg",
                       "hp_dense_layers": 0, "hp_learning_rate": 1e-3, "test_threshold": threshold,
                       **_metrics(table, [group_of[f] for f in table["file"]], threshold, classes)}
                if name_ in failed and (repeat, fold) == (0, 1):  # as pipeline.run_backbone writes a failed search
                    row = {k: v for k, v in row.items() if not k.startswith(("test_", "hp_", "best", "val_"))}
                    row.update(status="failed", message="every trial failed; see trials.csv", trials_done=0,
                               trials_failed=2)
                    (folder / "test_predictions.csv").unlink()
                    _trials(0, 2, "none", seed=fold).to_csv(folder / "trials.csv", index=False)
                _write_json(folder / "result.json", row)
                fold_rows.setdefault(name_, []).append(row)
    rows = [cv_row(run, n, fold_rows[n], plan, "val_auc", SEED) for n in skills]
    best = probability_best_by_backbone(run, rows, plan, "val_auc", SEED)
    for row in rows:
        row["probability_best"] = best.get(row["backbone"])
        row["selection_rule"] = selection_rule("val_auc", K, REPEATS)
    table = write_leaderboard(rows, run)
    winner = next(r for r in rows if r["backbone"] == table["backbone"].iloc[0])
    folder = run / winner["backbone"]
    _trials(3, 0, "01", seed=9).to_csv(folder / "trials.csv", index=False)
    _write_json(folder / "tuner" / "trial_01" / "bench_trial.json", _history(4))
    (folder / "best_model.keras").write_bytes(b"not a model")  # run_info (the model card) wants the file
    final_row = {"best_trial": "01", "params_total": 2_500_000, "params_trainable": 300_000, "latency_ms_b1": 7.5,
                 "latency_ms_b32": 1.5, "hp_unfreeze": 1, "hp_pooling": "avg", "hp_dense_layers": 0,
                 "hp_learning_rate": 1e-3, "test_n": 0,
                 **({"test_threshold": 0.5, "test_positive_class": classes[1]} if binary else {})}
    if holdout:
        held = [f for f in files if f["holdout"]]
        preds = _scored([f["path"] for f in held], [f["label"] for f in held], 0.5, seed=999,
                        threshold=0.5 if binary else None, classes=classes)
        preds.to_csv(folder / "test_predictions.csv", index=False)
        final_row.update(_metrics(preds, [f["group"] for f in held], 0.5 if binary else None, classes))
    winner.update(final_row, final_status="ok", final_val_objective=0.97)
    write_leaderboard(rows, run)
    return run


@pytest.fixture(scope="module")
def cv_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvreport")
    run = make_cv_run(root / "results")
    md, html = build_report(run, root / "reports")
    return run, md, html


@pytest.fixture(scope="module")
def cv_no_holdout(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvreport-noholdout")
    run = make_cv_run(root / "results", {"alpha": 0.5, "beta": 0.3}, holdout=False)
    md, html = build_report(run, root / "reports")
    return run, md, html


def _board(run: Path) -> list[dict]:
    return json.loads((run / "leaderboard.json").read_text())


# --------------------------------------------------------------------------- layout


def test_cv_report_has_the_cv_sections_in_order(cv_built):
    run, md, html = cv_built
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    assert re.findall(r"^## \d\. (.+)$", text, flags=re.M) == CV_SECTIONS
    positions = [page.index(f"</span>{s}</h2>") for s in CV_SECTIONS]
    assert positions == sorted(positions)
    # the pairs are compared across the folds, not in the single split's test-set matrices
    assert "McNemar exact test, p-values (paired correctness)" not in text and "corrected t-test p" in text
    pngs = {p.name for p in md.parent.glob("*.png")}
    assert {"fig-cv-folds.png", "fig-cv-roc.png", "fig-cv-probability-best.png", "fig-leaderboard.png",
            "fig-calibration.png", "fig-search-lr.png", "fig-search-choices.png", "fig-training-alpha.png",
            "fig-training-beta.png", "fig-training-gamma.png"} <= pngs
    assert "fig-roc-pr.png" not in pngs  # test-split curves: only the final model has holdout predictions
    assert "fig-deployment.png" not in pngs  # one measured model: no trade-off to draw
    links = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))
    assert links == pngs
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(pngs)


def _fold_cell(r: dict, metric: str, k: int) -> str:
    """The fold mean with its Nadeau-Bengio interval, computed here from the folds' own
    scores: mean -/+ t(J-1) * sd * sqrt(1/J + 1/(k-1)), cut to the metric's range [0, 1]."""
    from scipy.stats import t

    folds = np.array(r[f"cv_{metric}_folds"], dtype=float)
    mean, j = folds.mean(), len(folds)
    half = t.ppf(0.975, j - 1) * folds.std(ddof=1) * np.sqrt(1 / j + 1 / (k - 1))
    low, high = max(mean - half, 0.0), min(mean + half, 1.0)
    return f"{formatting.num(mean)} ({formatting.num(low, 2)}\u2013{formatting.num(high, 2)})"


def test_cv_summary_states_the_rule_the_estimate_and_the_holdout(cv_built):
    run, md, html = cv_built
    text = md.read_text(encoding="utf-8")
    summary = text[text.index("## 1."):text.index("## 2.")]
    r = _board(run)[0]
    assert r["rank"] == 1 and r["backbone"] == "alpha"
    estimate = (f"CV ROC AUC {r['cv_roc_auc']:.3f} ({r['cv_roc_auc_ci_low']:.2f}\u2013"
                f"{r['cv_roc_auc_ci_high']:.2f}), fold mean {_fold_cell(r, 'roc_auc', k=3)}, "
                f"probability of being best {formatting.percent(r['probability_best'])}.")
    assert estimate in summary
    assert "inside each of the 3 outer folds \u00d7 2 repeats" in summary
    assert "ranked by the ROC AUC of these out-of-fold predictions (highest first)" in summary
    assert "expected performance of the whole procedure (search, threshold, training), run on 2/3 of the images" in summary
    assert "searched once more on all 36 cross-validated images" in summary
    assert "selection score (val AUC 0.970) is optimistic" in summary
    assert "An untouched holdout of 10 images (--test-size 0.2)" in summary and "no part in choosing" in summary
    # nothing says a test split chose or confirmed anything
    for wrong in ("never used to choose", "chosen on the validation objective", "On the test images",
                  "Small test split", "test split"):
        assert wrong not in summary, wrong
    for metric in ("accuracy", "balanced_accuracy", "recall", "specificity", "f1", "roc_auc", "pr_auc", "brier"):
        cells = [formatting.num(r[f"cv_{metric}"]), f"{formatting.num(r[f'cv_{metric}_ci_low'], 2)}\u2013"
                 f"{formatting.num(r[f'cv_{metric}_ci_high'], 2)}",
                 _fold_cell(r, metric, k=3),
                 formatting.num(r[f"test_{metric}"])]
        assert re.search(r"\| +" + r" +\| +".join(map(re.escape, cells)) + r" +\|", summary), metric
    assert "72 out-of-fold predictions (36 images \u00d7 2 repeats" in summary
    assert "resamples of duplicate groups" in summary and "Holdout: 10 images" in summary
    assert "about models trained on 2/3 of the images" in summary
    assert "read it as the interval for the deployed model" in summary
    assert "In bench's validity benchmark (" in summary and "lay inside the corrected fold interval in " in summary


def test_cv_leaderboard_shows_estimates_probability_best_and_the_optimistic_score(cv_built):
    run, md, html = cv_built
    text = md.read_text(encoding="utf-8")
    board = text[text.index("## 2."):text.index("## 3.")]
    header = next(line for line in board.splitlines() if line.startswith("|   rank"))
    for h in ("CV ROC AUC", "fold mean (corrected 95 % CI)", "P(best)", "CV accuracy", "CV F1", "CV sensitivity",
              "CV specificity", "val AUC selection score (optimistic)", "trials ok / failed", "search time",
              "holdout ROC AUC"):
        assert h in header, h
    for r in _board(run):
        line = next(x for x in board.splitlines() if re.match(rf"\| +{r['rank']} \| {r['backbone']} ", x))
        assert formatting.with_ci({"test_roc_auc": r["cv_roc_auc"], "test_roc_auc_ci_low": r["cv_roc_auc_ci_low"],
                                   "test_roc_auc_ci_high": r["cv_roc_auc_ci_high"]}, "roc_auc") in line
        assert formatting.percent(r["probability_best"]) in line and formatting.num(r["val_objective"]) in line
        # every search's trials: 6 outer folds x 2, and the winner's final search's 3
        trials = f"{15 if r['rank'] == 1 else 12} / 0 | +{re.escape(formatting.duration(r['search_seconds']))}"
        assert re.search(rf"\| +{trials} \|", line), line
        holdout = line.rstrip(" |").rsplit("|", 1)[1].strip()  # the last column: the final model only
        assert holdout == (formatting.with_ci(r, "roc_auc") if r["rank"] == 1 else "\u2014")
    assert "mean over outer folds of each fold's kept trial's inner-validation value" in board


def test_cv_section_pairwise_table_is_cv_pairwise_tests_with_holm(cv_built):
    from bench.data.folds import read_folds

    run, md, html = cv_built
    text, page = md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")
    assert ("Selection rule as recorded in leaderboard.json: \u201cranked by the cross-validated roc_auc"
            in text[text.index("## 3."):text.index("## 4.")])
    section = text[text.index("## 5."):text.index("## 6.")]
    tests = cv_pairwise_tests(run, ["alpha", "beta", "gamma"], read_folds(run / "folds.json"), "val_auc", seed=SEED)
    assert len(tests) == 3 and all(t.unit == "group" and t.ttest_p is not None for t in tests)
    for t in tests:
        line = next(x for x in section.splitlines() if x.startswith(f"| {t.a} vs {t.b} "))
        for p, holm in ((t.delong_p, t.delong_p_holm), (t.mcnemar_p, t.mcnemar_p_holm), (t.ttest_p, t.ttest_p_holm)):
            cell = f"{formatting.p_text(p)} (Holm {formatting.p_text(holm)})"
            assert cell + (" *" if holm < 0.05 else " ") in line + " ", (cell, line)
        assert f"{t.groups_only_a} / {t.groups_only_b}" in line and formatting.fmt_signed(t.auc_diff) in line
        assert (f"{t.a} was right on {t.groups_only_a} duplicate groups {t.b} missed, {t.b} on {t.groups_only_b} "
                f"that {t.a} missed") in section
    assert any(t.delong_p_holm < 0.05 for t in tests)  # alpha against the chance-level gamma
    assert "Significant after Holm: DeLong, in favour of alpha" in section
    assert '<table class="wide split">' in page and '<span class="ci">(Holm ' in page


def test_cv_per_backbone_deployment_search_and_data(cv_built):
    run, md, html = cv_built
    text = md.read_text(encoding="utf-8")
    per = text[text.index("## 6."):text.index("## 7.")]
    assert "Final model (searched again on all 36 cross-validated images): 64 px input" in per
    assert per.count("No final model: only the recommended backbone is searched again") == 2
    assert "Out-of-fold calibrated probability (all repeats" in per and "beside it the final model's on the holdout" in per
    deploy = text[text.index("## 4."):text.index("## 5.")]
    assert "Only the recommended backbone's final model exists as a deployable model" in deploy
    assert "| alpha " in deploy and "| beta " not in deploy and "Pareto" not in deploy
    search = text[text.index("## 7."):text.index("## 8.")]
    assert search.count("the trial each outer fold kept") == 3
    assert "repeat 2, fold 3" in search and "final model's search on all cross-validated images" in search
    assert "39 trials in all" in search  # 3 backbones x 6 folds x 2 trials, and the final search's 3
    data = text[text.index("## 8."):text.index("## 9.")]
    assert "**Outer folds per class** (cross-validation, folds.json)" in data
    assert "| holdout (untouched)" in data and "Final model's split per class" in data


def test_cv_banner_replaces_the_small_test_banner(cv_built):
    run, _, _ = cv_built
    keys = [b.key for b in findings.banners(load_run(run))]
    assert "small_test" not in keys and "wide_cv" in keys


def test_cv_report_without_a_holdout(cv_no_holdout):
    run, md, html = cv_no_holdout
    text = md.read_text(encoding="utf-8")
    summary = text[text.index("## 1."):text.index("## 2.")]
    assert "There is no untouched test set (the run had no --test-size)" in summary
    board = text[text.index("## 2."):text.index("## 3.")]
    header = next(line for line in board.splitlines() if line.startswith("|   rank"))
    assert "holdout" not in header and "Holdout:" not in board
    assert "| holdout" not in summary and "fig-gradcam.png" not in text
    assert "beside it the final model's on the holdout" not in text
    assert "Runner-up.** alpha " in summary
    assert _board(run)[0]["test_n"] == 0


def test_cv_report_three_classes_and_a_failed_backbone(tmp_path):
    """Multi-class: no DeLong (AUC tests need two classes), one-vs-rest ROC; a backbone with a
    failed outer fold has no CV estimate and is listed as failed with its trials' messages."""
    classes = ["glioma", "meningioma", "none"]
    run = make_cv_run(tmp_path / "results", {"alpha": 0.6, "beta": 0.3, "broken": 0.4}, classes=classes,
                      failed=("broken",))
    md, html = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    board = {r["backbone"]: r for r in _board(run)}
    assert board["broken"]["status"] == "failed" and "1 of 6 outer folds failed" in board["broken"]["message"]
    assert re.findall(r"^## \d\. (.+)$", text, flags=re.M) == CV_SECTIONS
    section = text[text.index("## 5."):text.index("## 6.")]
    header = next(line for line in section.splitlines() if line.startswith("| pair"))
    assert "DeLong" not in header and "McNemar p" in header and "corrected t-test p" in header
    assert section.count(" vs ") >= 1 and "| alpha vs beta " in section and "broken" not in section
    assert "*broken failed: 1 of 6 outer folds failed" in text
    assert "No result at all for broken" in text and "ResourceExhaustedError" in text  # the failed fold's trials
    assert (md.parent / "fig-cv-roc.png").is_file() and not (md.parent / "fig-training-broken.png").exists()


def test_single_split_report_has_no_cv_wording(tmp_path):
    from test_report import SECTIONS, make_run

    run = make_run(tmp_path)
    md, _ = build_report(run, tmp_path / "reports")
    text = md.read_text(encoding="utf-8")
    assert re.findall(r"^## \d\. (.+)$", text, flags=re.M) == SECTIONS
    assert "cross-validat" not in text.lower() and "out-of-fold" not in text.lower()


# --------------------------------------------------------------------------- the ROC band


def test_roc_band_curve_is_sklearns_and_the_band_draws_whole_groups():
    from sklearn.metrics import roc_curve

    from bench.report.folds_figures import roc_band

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    s = np.round(np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, 80), 0, 1), 2)  # ties too
    band = roc_band(y, s, np.arange(80), n_resamples=300, seed=1)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(band["fpr"], fpr) and np.allclose(band["tpr"], tpr)
    assert band["resamples"] == 300 and np.all(band["low"] <= band["high"])
    assert band["low"][0] >= 0 and band["high"][-1] == 1.0
    # every image copied once, the copies in one group: the same curve, and the same draws
    # as the singletons (a resample picks whole groups), so the same band
    twice = roc_band(np.repeat(y, 2), np.repeat(s, 2), np.repeat(np.arange(80), 2), n_resamples=300, seed=1)
    assert np.allclose(twice["fpr"], fpr) and np.allclose(twice["tpr"], tpr)
    assert np.allclose(twice["low"], band["low"]) and np.allclose(twice["high"], band["high"])
    # ignoring the copies (each its own group) pretends to twice the data: a narrower band
    naive = roc_band(np.repeat(y, 2), np.repeat(s, 2), np.arange(160), n_resamples=300, seed=1)
    assert np.mean(naive["high"] - naive["low"]) < 0.85 * np.mean(band["high"] - band["low"])


# --------------------------------------------------------------------------- the model card


def _card(run: Path) -> str:
    from bench.deploy.model_card import model_card
    from bench.deploy.run_info import run_info

    info = run_info(run)
    return model_card(info, {"decision_rule": "tumour when P(tumour) >= threshold", "threshold": 0.5}, ["keras"],
                      {"run": False, "reason": "test"})


def test_model_card_of_a_cv_run_gives_the_cv_estimate_and_the_holdout(cv_built):
    from bench.schema import Source, metric_with_ci

    run, _, _ = cv_built
    card, r = _card(run), _board(run)[0]
    assert "## Expected performance (cross-validation)" in card
    assert f"| roc auc | {metric_with_ci(r, 'roc_auc', ci_digits=3, source=Source.OUT_OF_FOLD)} |" in card
    assert "72 out-of-fold predictions of 36 images in" in card and "(3 folds x 2 repeats)" in card
    assert f"{r['cv_groups']} duplicate groups" in card
    assert "they are about models trained on 2/3 of the images" in card
    lo, hi = r["cv_roc_auc_fold_ci_low"], r["cv_roc_auc_fold_ci_high"]
    assert (f"The interval to read for this model: roc auc per outer fold {r['cv_roc_auc_fold_mean']:.3f} "
            f"[{lo:.3f}, {hi:.3f}]") in card
    assert _fold_cell(r, "roc_auc", k=3).endswith(f"({formatting.num(lo, 2)}\u2013{formatting.num(hi, 2)})")
    assert "In bench's validity benchmark (" in card
    assert "3 outer folds x 2 repeats of whole duplicate groups" in card
    assert "## Holdout test metrics (n = 10, 95% bootstrap confidence intervals)" in card
    assert f"| accuracy | {metric_with_ci(r, 'accuracy', ci_digits=3)} |" in card
    assert "no part in choosing" in card and "No untouched test set" not in card
    assert "The test split was used once" not in card and "## Test metrics" not in card


def test_model_card_of_a_cv_run_without_holdout_says_there_is_no_test_set(cv_no_holdout):
    run, _, _ = cv_no_holdout
    card = _card(run)
    assert "## Expected performance (cross-validation)" in card and "## No untouched test set" in card
    assert "This model has no untouched test set" in card and "--test-size" in card
    assert "## Test metrics" not in card and "## Holdout test metrics" not in card
    assert "kept no holdout (no --test-size)" in card  # the fidelity check's reason
    assert "| test (holdout)" not in card  # an empty holdout is not a row of the split table


def test_model_card_of_a_single_split_run_has_no_cv_text(tmp_path):
    from test_report import make_run

    run = make_run(tmp_path)
    (run / "alpha" / "best_model.keras").write_bytes(b"not a model")
    card = _card(run)
    assert "## Test metrics (n = 40, 95% bootstrap confidence intervals)" in card
    assert "The test split was used once, after selection" in card
    assert "cross-valid" not in card and "out-of-fold" not in card and "holdout" not in card


def test_single_split_and_cv_runs_render_through_one_context_and_one_template_pair(tmp_path, monkeypatch):
    """Both designs go through :func:`bench.report.build.context` and ``report.{md,html}.j2``;
    only the cross-validated run has the folds section."""
    import jinja2

    from bench.report import build
    from test_report import make_run

    contexts, templates = [], []
    real_context, real_get = build.context, jinja2.Environment.get_template
    monkeypatch.setattr(build, "context", lambda *a: contexts.append(real_context(*a)) or contexts[-1])
    monkeypatch.setattr(jinja2.Environment, "get_template",
                        lambda self, name, *a, **k: templates.append(name) or real_get(self, name, *a, **k))
    build_report(make_run(tmp_path / "single"), tmp_path / "reports")
    build_report(make_cv_run(tmp_path / "cv", {"alpha": 0.8, "beta": 0.6}), tmp_path / "reports")
    pages = [t for t in templates if not t.startswith("_")]  # the partials: macros, data, reproduce, head
    assert pages == ["report.md.j2", "report.html.j2"] * 2
    assert templates[:len(templates) // 2] == templates[len(templates) // 2:]  # the same partials, too
    assert not any(p.name.startswith("report_cv") for p in build.TEMPLATES.iterdir())
    single, cv = contexts
    assert single.keys() == cv.keys()
    assert single["folds"] is None and cv["folds"]["figures"]
    assert [s["title"] for s in cv["nav"]] == CV_SECTIONS
    assert [s["title"] for s in single["nav"]] == [s for s in CV_SECTIONS if s != "Cross-validation"]


@pytest.mark.parametrize("n_backbones", [3, 11])
def test_the_roc_legend_stays_off_the_curves(n_backbones):
    """Up to five backbones the legend sits in the panel's corner; with more (eleven in an
    all-backbone run) it goes under the panels in two columns, not over the curves."""
    from bench.report import figures
    from bench.report.folds_figures import roc_bands

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    names = [f"backbone{i}" for i in range(n_backbones)]
    oof = {}
    for i, name in enumerate(names):
        p = np.clip(0.5 + (0.1 + 0.03 * i) * (y - 0.5) + rng.normal(0, 0.25, 60), 0.01, 0.99)
        oof[name] = pd.DataFrame({"label": np.where(y == 1, "yes", "no"), "prob_no": 1 - p, "prob_yes": p,
                                  "group": np.arange(60)})
    with figures.style():
        fig = roc_bands(oof, ["no", "yes"], figures.backbone_colours(names), {n: "AUC" for n in names})
        fig.canvas.draw()
        first = fig.axes[0]
        if n_backbones <= 5:
            assert first.get_legend() is not None and not fig.legends
        else:
            assert first.get_legend() is None and len(fig.legends) == 1
            legend = fig.legends[0]
            assert len(legend.get_texts()) == n_backbones + 1  # and "chance"
            assert legend.get_window_extent().y1 <= min(ax.get_window_extent().y0 for ax in fig.axes)


@pytest.mark.parametrize("names", [["alpha", "beta", "gamma"], ["convnext_tiny", "xception", "densenet121", "resnet50",
                                   "resnet50v2", "mobilenet_v2", "mobilenet_v3_small", "vgg16", "inception_v3",
                                   "efficientnetv2_b0", "efficientnet_b0"]])
def test_the_backbone_names_under_the_fold_scores_do_not_overlap(names):
    """Eleven backbones' names under their fold markers ran into each other; they are slanted
    once a backbone's slot is narrower than its name, and stay level for a few."""
    from bench.report import figures
    from bench.report.folds_figures import fold_scores

    scores = {n: [(0, f, 0.5 + 0.05 * f) for f in range(5)] for n in names}
    pooled = {n: (0.6, 0.5, 0.7) for n in names}
    with figures.style():
        fig = fold_scores(scores, pooled, figures.backbone_colours(names), "ROC AUC", 1)
        fig.canvas.draw()
        labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
        boxes = [t.get_window_extent() for t in labels]
    assert [t.get_text() for t in labels] == names
    angle = np.radians(labels[0].get_rotation())
    if angle == 0:  # level names: side by side, apart
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    else:  # slanted names are parallel lines: the tick spacing across them is at least a line of text
        spacing = boxes[1].x1 - boxes[0].x1
        line = labels[0].get_fontsize() * fig.dpi / 72
        assert spacing * np.sin(angle) >= line
    assert (angle == 0) == (len(names) <= 3)
