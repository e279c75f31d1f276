"""Cross-validation estimates from out-of-fold (OOF) predictions.

In a ``--cv K --repeats R`` run every cross-validated image is predicted once per repeat,
by the model of the one outer fold that held it out (chosen, thresholded and early-
stopped on that fold's inner validation split; Cawley & Talbot 2010 on why selection must
stay inside the fold). This module gathers those predictions per backbone
(``oof_predictions.csv``) and turns them into one leaderboard row: every metric pooled over
the OOF predictions of all repeats, with a 95 % interval from a bootstrap that draws
whole duplicate groups (copies are not independent images), and the spread across
folds (Varoquaux 2018: fold-to-fold spread alone understates the uncertainty).

Binary decisions use each fold's own validation threshold. The pooled threshold metrics
are computed on scores shifted per fold, ``0.5 + (p - t_fold) / 2``, which keeps every
decision (``p >= t_fold`` exactly when the shifted score is ``>= 0.5``) and lets one
threshold serve all folds; ROC AUC, PR AUC and Brier use the probabilities themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import OBJECTIVES
from bench.evaluate.comparisons import bootstrap_scores, corrected_resampled_ttest, holm, probability_best
from bench.evaluate.metrics import CI_METRICS, evaluate
from bench.evaluate.paired import pairwise_tests
from bench.atomic import read_json
from bench.runfolder import RunFiles
from bench.schema import STOPPED
from bench.tables import OOF_TEXT_COLUMNS, probability_matrix, read_table, text_frame, write_csv

#: The CV metric that estimates each validation objective (val_loss: the Brier score,
#: the proper score bench reports for every model).
CV_METRIC = {"val_auc": "roc_auc", "val_f1": "f1", "val_accuracy": "accuracy", "val_loss": "brier"}
#: Metrics that do not depend on the decision threshold.
THRESHOLD_FREE = ("roc_auc", "pr_auc", "brier")
#: Bootstrap resamples behind the intervals and the probability of being best.
CV_RESAMPLES = 1000


def oof_predictions(run_dir: Path, backbone: str, plan) -> pd.DataFrame:
    """Every outer fold's test predictions of ``backbone``, one row per image and repeat,
    with the fold, the image's duplicate group and the fold's decision threshold."""
    group_of = {r["path"]: r["group"] for r in plan.files}
    parts = []
    for repeat in range(plan.repeats):
        for fold in range(plan.k):
            search = RunFiles(run_dir).fold(repeat, fold, backbone)
            result = read_json(search.result_json)
            if result.get("status") != "ok":
                continue
            table = read_table(search.test_predictions_csv)
            parts.append(text_frame({
                "repeat": [repeat] * len(table), "fold": [fold] * len(table),
                "group": [group_of[f] for f in table["file"]],
                "threshold": [result.get("test_threshold")] * len(table),
                **{c: table[c].tolist() for c in table.columns},
            }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def read_oof(run_dir: Path, backbone: str) -> pd.DataFrame:
    """``<run>/<backbone>/oof_predictions.csv`` as written by :func:`cv_row` (names that are
    not valid UTF-8 come back unchanged; ``correct`` as booleans)."""
    oof = read_table(RunFiles(run_dir).backbone(backbone).oof_predictions_csv, text_columns=OOF_TEXT_COLUMNS)
    oof["correct"] = oof["correct"].astype(str).str.lower().isin(["true", "1"])
    return oof


def at_own_threshold(p1: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Positive-class scores shifted so that a 0.5 cut makes each image's decision at its
    own threshold: ``0.5 + (p - t) / 2`` is ``>= 0.5`` exactly when ``p >= t`` (see module doc)."""
    return np.clip(0.5 + (np.asarray(p1, dtype=float) - np.asarray(thresholds, dtype=float)) / 2.0, 0.0, 1.0)


def _decision_scores(oof: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Probabilities whose 0.5 cut gives each fold's own decisions (binary; see module doc)."""
    p = probability_matrix(oof, classes)
    if len(classes) != 2:
        return p
    shifted = at_own_threshold(p[:, 1], oof["threshold"])
    return np.stack([1.0 - shifted, shifted], axis=1)


def _labels(oof: pd.DataFrame, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in oof["label"]], dtype=int)


def cv_metrics(oof: pd.DataFrame, classes: list[str], seed: int = 0) -> dict:
    """Pooled OOF metrics with group-bootstrap intervals, as ``cv_<metric>`` keys."""
    y, groups = _labels(oof, classes), np.asarray(oof["group"], dtype=object)
    raw = evaluate(y, probability_matrix(oof, classes), classes, threshold=0.5 if len(classes) == 2 else None,
                   n_resamples=CV_RESAMPLES, seed=seed, groups=groups)
    decided = evaluate(y, _decision_scores(oof, classes), classes, threshold=0.5 if len(classes) == 2 else None,
                       n_resamples=CV_RESAMPLES, seed=seed, groups=groups)
    out = {"cv_n": int(len(oof)), "cv_images": int(oof["file"].nunique()), "cv_groups": int(len(set(groups)))}
    for metric in CI_METRICS:
        source = raw if metric in THRESHOLD_FREE else decided
        out[f"cv_{metric}"] = source.get(metric)
        out[f"cv_{metric}_ci_low"] = source.get(f"{metric}_ci_low")
        out[f"cv_{metric}_ci_high"] = source.get(f"{metric}_ci_high")
    out["cv_confusion_matrix"] = decided.get("confusion_matrix")
    return out


#: The range of every metric given a fold interval (:data:`CI_METRICS`: proportions, areas
#: under curves and the Brier score). With two or three folds the t interval can reach past
#: it (an AUC interval from -1.4 to 2.3 after two folds); the reported interval is cut to it,
#: which can only make it cover more often.
METRIC_RANGE = (0.0, 1.0)


def fold_interval(values, k: int, level: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> tuple[float, float] | tuple[None, None]:
    """The Nadeau-Bengio corrected interval of the mean of ``values``, one metric of each
    outer fold of a ``k``-fold CV (all repeats): ``mean -/+ t_{J-1} * sd * sqrt(1/J + 1/(k-1))``
    for ``J`` values (:func:`~bench.evaluate.comparisons.corrected_resampled_ttest` on the
    values themselves). Unlike a bootstrap over the pooled out-of-fold predictions, its
    variance counts how much the model changes with its training images, which is what an
    interval about a model trained on all of them needs; ``benchmarks/validity.py``
    measures how often it covers the deployed model's value. ``(None, None)`` with fewer
    than two values. ``bounds``: the metric's range, which the interval is cut to."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 2 or k < 2:
        return None, None
    test = corrected_resampled_ttest(v, n_train=k - 1, n_test=1, level=level)
    low, high = float(test.ci_low), float(test.ci_high)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def fold_spread(fold_rows: list[dict], k: int) -> dict:
    """Mean, standard deviation and corrected interval (:func:`fold_interval`) across outer
    folds (all repeats) of each fold's own test metrics."""
    out = {}
    for metric in CI_METRICS:
        values = np.array([float(r[f"test_{metric}"]) for r in fold_rows
                           if r.get("status") == "ok" and r.get(f"test_{metric}") is not None], dtype=float)
        values = values[~np.isnan(values)]
        out[f"cv_{metric}_fold_mean"] = float(values.mean()) if len(values) else None
        out[f"cv_{metric}_fold_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
        out[f"cv_{metric}_fold_ci_low"], out[f"cv_{metric}_fold_ci_high"] = fold_interval(values, k, bounds=METRIC_RANGE)
        out[f"cv_{metric}_folds"] = [None if np.isnan(v) else float(v) for v in values.tolist()]
    return out


def cv_row(run_dir: Path, name: str, fold_rows: list[dict], plan, objective: str, seed: int = 0,
           stopped: str | None = None) -> dict:
    """The leaderboard row of one backbone of a CV run (before ranking); writes its
    ``oof_predictions.csv``. A backbone with a failed fold has status ``failed``; one that
    ``--budget`` stopped (``stopped``: why) has status ``stopped`` and the spread of the
    folds it finished."""
    first = fold_rows[0]
    row = {key: first.get(key) for key in ("backbone", "family", "image_size", "weights", "baseline", "compute_dtype")}
    # a floor baseline (bench.evaluate.floor): its kind and what it is
    row.update({key: first[key] for key in ("kind", "floor_model", "probe_of", "probe_features") if key in first})
    row.update({key: first[key] for key in ("architecture",) if key in first})  # a run comparing several weights
    # how the features were computed: one cache entry serves every fold
    row.update({key: first[key] for key in ("frozen_pass_dtype", "frozen_pass_runtime", "openvino_precision",
                                            "openvino_parity") if key in first})
    row.update(objective=objective, cv_k=plan.k, cv_repeats=plan.repeats,
               trials_done=sum(int(r.get("trials_done") or 0) for r in fold_rows),
               trials_failed=sum(int(r.get("trials_failed") or 0) for r in fold_rows),
               search_seconds=round(sum(float(r.get("search_seconds") or 0.0) for r in fold_rows), 1))
    failed = [r for r in fold_rows if r.get("status") != "ok"]
    expected = plan.k * plan.repeats
    if stopped is not None:
        row.update(status=STOPPED, message=stopped, cv_folds_done=len(fold_rows) - len(failed))
        row.update(fold_spread(fold_rows, plan.k))
        return row
    if failed or len(fold_rows) != expected:
        row.update(status="failed", message=f"{len(failed)} of {expected} outer folds failed; see cv/*/{name}/trials.csv")
        return row
    oof = oof_predictions(run_dir, name, plan)
    write_csv(RunFiles(run_dir).backbone(name).oof_predictions_csv, oof)
    row.update(status="ok", val_objective=float(np.mean([float(r["val_objective"]) for r in fold_rows])))
    row.update(cv_metrics(oof, list(plan.classes), seed))
    row.update(fold_spread(fold_rows, plan.k))
    row["cv_objective"] = row.get(f"cv_{CV_METRIC[objective]}")
    return row


def probability_best_by_backbone(run_dir: Path, rows: list[dict], plan, objective: str, seed: int = 0) -> dict:
    """Share of repeats x group-bootstrap resamples in which each backbone has the best CV
    estimate of the objective; all backbones scored on the same resampled images."""
    ok = [r["backbone"] for r in rows if r.get("status") == "ok"]
    if not ok:
        return {}
    scores = oof_replicates(run_dir, ok, plan, objective, seed)
    best = probability_best(scores, maximise=OBJECTIVES[objective] != "min")
    return {name: float(b) for name, b in zip(ok, best)}


def oof_replicates(run_dir: Path, names: list[str], plan, objective: str, seed: int = 0,
                   n_resamples: int = CV_RESAMPLES) -> np.ndarray:
    """The CV estimate of the objective's metric of each backbone of ``names`` on repeats x
    group-bootstrap resamples of the cross-validated images, every backbone on the same
    resample: ``(plan.repeats * n_resamples, len(names))``, as the metric reads (not oriented)."""
    classes, metric = list(plan.classes), CV_METRIC[objective]
    tables = {name: read_oof(run_dir, name) for name in names}
    first = tables[names[0]]
    key = ["repeat", "file"]
    order = first[key].copy()
    probas, thresholds_free = [], metric in THRESHOLD_FREE
    for name in names:
        table = order.merge(tables[name], on=key, how="left", validate="one_to_one")
        p = probability_matrix(table, classes) if thresholds_free else _decision_scores(table, classes)
        probas.append([p[(table["repeat"] == rep).to_numpy()] for rep in range(plan.repeats)])
    stacked = np.array([[probas[m][rep] for m in range(len(names))] for rep in range(plan.repeats)])
    in_repeat = (order["repeat"] == 0).to_numpy()
    y = _labels(first[in_repeat], classes)
    groups = np.asarray(first.loc[in_repeat, "group"], dtype=object)
    return bootstrap_scores(y, stacked, classes, metric=metric, threshold=0.5 if len(classes) == 2 else None,
                            groups=groups, n_resamples=n_resamples, seed=seed)


def cv_pairwise_tests(run_dir: Path, names: list[str], plan, objective: str, seed: int = 0) -> list:
    """Every pair of ``names`` (rank order) on their out-of-fold predictions: DeLong's test
    clustered by duplicate group and McNemar with one vote per group (both over all
    repeats' OOF predictions, an image's repeats in its group's cluster), and the corrected
    resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) on the per-fold
    differences of the objective's metric; each family Holm-adjusted over all pairs."""
    run_dir = Path(run_dir)
    predictions, groups = {}, {}
    for name in names:
        oof = read_oof(run_dir, name)
        keys = [f"r{r}/{f}" for r, f in zip(oof["repeat"], oof["file"])]
        groups.update(zip(keys, oof["group"]))
        table = oof.drop(columns=["file"])
        table.insert(0, "file", keys)
        predictions[name] = table
    tests = pairwise_tests(predictions, list(plan.classes), seed=seed, groups=groups)
    metric = CV_METRIC[objective]
    per_fold = {name: _fold_metric(run_dir, name, plan, metric) for name in names}
    n_cv = len(plan.cv_files)
    n_test = n_cv / plan.k
    for test in tests:
        diffs = per_fold[test.a] - per_fold[test.b]
        if np.isnan(diffs).any():
            continue
        result = corrected_resampled_ttest(diffs, n_train=n_cv - n_test, n_test=n_test)
        test.ttest_metric = metric
        test.ttest_mean, test.ttest_t, test.ttest_df, test.ttest_p = result.mean, result.t, result.df, result.p_value
        test.ttest_ci_low, test.ttest_ci_high = result.ci_low, result.ci_high
    ran = [t for t in tests if t.ttest_p is not None]
    for test, p in zip(ran, holm([t.ttest_p for t in ran]) if ran else []):
        test.ttest_p_holm = float(p)
    return tests


def _fold_metric(run_dir: Path, name: str, plan, metric: str) -> np.ndarray:
    """``metric`` of each outer fold's own test predictions, repeat-major (nan where missing)."""
    values = []
    for repeat in range(plan.repeats):
        for fold in range(plan.k):
            row = read_json(RunFiles(run_dir).fold(repeat, fold, name).result_json)
            value = row.get(f"test_{metric}")
            values.append(np.nan if value is None else float(value))
    return np.array(values, dtype=float)


def selection_rule(objective: str, k: int, repeats: int) -> str:
    """The ranking rule, in words (the leaderboard and report state it)."""
    metric = CV_METRIC[objective]
    direction = "lowest" if OBJECTIVES[objective] == "min" else "highest"
    return (f"ranked by the cross-validated {metric} ({direction} first): out-of-fold predictions of {k} outer folds"
            f"{f' x {repeats} repeats' if repeats > 1 else ''}, each fold's model chosen on its own inner validation "
            "split; 95 % intervals from a bootstrap over duplicate groups")
