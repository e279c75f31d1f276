"""The parts of the report that only a cross-validated run (``bench run --cv K``) has, and
the design-specific parts of its report: the cross-validation section (fold strip plot,
out-of-fold ROC bands, probability of being best), the paired comparisons across folds
(corrected resampled t-test with DeLong and McNemar on the out-of-fold predictions), the
final-model notes, and its summary, leaderboard, deployment and search parts, for the one
report template (:mod:`bench.report.build`). A pure function of the run folder: the
pairwise tests are recomputed from the stored out-of-fold predictions, nothing is trained
or predicted.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.schema import Source
from bench.report import cv_sections as C
from bench.report.cv_search import search_section
from bench.report.formatting import Table, display_name, interval, num, slug
from bench.report.load import RunData, gradcam_figure
from bench.runfolder import FOLDS_JSON


def cv_tests(data: RunData) -> list:
    """:func:`bench.evaluate.crossval.cv_pairwise_tests` of every finished backbone, in rank
    order; empty when folds.json or an oof_predictions.csv is missing."""
    names = [b.name for b in data.ok if b.oof is not None and len(b.oof)]
    if len(names) < 2 or not data.folds:
        return []
    from bench.data.folds import FoldPlan
    from bench.evaluate.crossval import cv_pairwise_tests

    try:
        plan = FoldPlan.from_dict(data.folds)
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"cannot read {data.path / FOLDS_JSON} ({exc}); the run folder is damaged") from None
    return cv_pairwise_tests(data.path, names, plan, data.objective, seed=data.seed)


def make_cv_figures(data: RunData, deployment: dict, search: dict, decisions: dict) -> dict:
    from bench.report import cv_figures as CF
    from bench.report import figures as F

    out: dict = {"backbone": {}}
    colours = F.backbone_colours([b.name for b in data.backbones])
    metric = C.cv_metric(data)
    d = C.design(data)
    rows = [b.row for b in data.ok]
    oof = {b.name: b.oof for b in data.ok if b.oof is not None and len(b.oof)}

    add = F.as_figure

    with F.style():
        out["leaderboard"] = add(
            "leaderboard", F.leaderboard_points(rows, colours, source=Source.OUT_OF_FOLD), "CV F1 and ROC AUC",
            "Points are pooled out-of-fold estimates, bars their 95 % CIs from a bootstrap over duplicate groups; "
            "backbones in CV rank order, best on top.")
        scores = {}
        for b in data.ok:
            points = [(f["repeat"], f["fold"], float(f.get(f"test_{metric}") if f.get(f"test_{metric}") is not None
                                                     else "nan")) for f in b.folds if f.get("status") == "ok"]
            if not points:  # outer folds' result.json missing: the leaderboard's per-fold list, repeat-major
                values = b.row.get(f"cv_{metric}_folds") or []
                points = [(i // max(d["k"], 1), i % max(d["k"], 1), float("nan") if v is None else float(v))
                          for i, v in enumerate(values)]
            scores[b.name] = points
        pooled = {b.name: tuple(float(b.row.get(f"cv_{metric}{s}") if b.row.get(f"cv_{metric}{s}") is not None
                                      else "nan") for s in ("", "_ci_low", "_ci_high")) for b in data.ok}
        out["folds"] = add(
            "cv-folds", CF.fold_scores(scores, pooled, colours, C.label(metric), d["repeats"]),
            f"{C.label(metric)} per outer fold",
            f"Each marker is one outer fold's {C.label(metric)} on the images it held out (marker shape: repeat), the "
            "short line their mean; black diamonds: the pooled out-of-fold estimate with its 95 % CI (bootstrap over "
            "duplicate groups). The spread of the markers is how much one split can mislead. The pooled estimate can sit "
            "below the fold mean: pooling ranks together scores of different fold models, whose scales differ.")
        auc_text = {b.name: f"AUC {num(b.row.get('cv_roc_auc'))}, CI {interval(b.row, 'roc_auc', Source.OUT_OF_FOLD)}"
                    for b in data.ok}
        out["roc"] = add(
            "cv-roc", CF.roc_bands(oof, data.classes, colours, auc_text, seed=data.seed),
            "Out-of-fold ROC curves",
            f"Every backbone's out-of-fold predictions of all repeats pooled; shaded: pointwise 95 % band of the "
            f"sensitivity at each false positive rate, from {CF.ROC_RESAMPLES} bootstrap resamples of duplicate "
            "groups.")
        out["probability_best"] = add(
            "cv-probability-best", CF.probability_best({b.name: _float(b.row.get("probability_best"))
                                                        for b in data.ok}, colours),
            "Probability of being best",
            f"How often each backbone has the best CV {C.label(metric)} when the duplicate groups are resampled "
            "(all backbones scored on the same resampled images).")
        out["deployment"] = None
        if deployment.get("pareto"):
            out["deployment"] = add(
                "deployment", F.deployment([b.row for b in deployment["backbones"]], colours, deployment["flags"],
                                           source=Source.OUT_OF_FOLD), "Accuracy against cost",
                "Stars: Pareto-optimal; circles: dominated. Vertical bars: 95 % CI of the cross-validated accuracy.")
        for b in data.ok:
            confusions = [("Out-of-fold", b.row.get("cv_confusion_matrix"))]
            if C.has_holdout_scores(b.row) and b.row.get("test_confusion_matrix") is not None:
                confusions.append(("Holdout (final)", b.row.get("test_confusion_matrix")))
            final = b.history if C.final_ok(b.row) and b.row.get("rank") == 1 else None
            out["backbone"][b.name] = add(
                f"training-{slug(b.name)}",
                CF.folds_and_confusion(b.fold_histories, final, confusions, data.classes, colours[b.name]),
                f"{b.name}: training and out-of-fold confusion",
                "Validation loss and accuracy per epoch of each outer fold's kept trial (thin dashed lines)"
                + ("; thick: the final model's kept trial, train solid, validation dashed" if final else "")
                + ". Confusion matrix of the out-of-fold predictions of all repeats (each fold's own threshold), "
                "counts and share of each true class" + ("; beside it the final model's on the holdout."
                                                         if len(confusions) > 1 else "."))
        out["calibration"] = add(
            "calibration", F.reliability(oof, data.classes, colours, where="out-of-fold"),
            "Reliability diagram (calibrated)",
            "Out-of-fold calibrated probability (all repeats; each image calibrated by the fold that held it out) "
            "against the observed frequency in equal-count bins, bars the 95 % Wilson intervals; points on the "
            "diagonal are well calibrated. ECE: expected calibration error over these bins. Below: how the predicted "
            "probabilities are spread.")
        out["decision_curve"] = None
        if len(data.classes) == 2:
            out["decision_curve"] = add(
                "decision-curve", F.decision_curves(decisions, data.classes, colours, where="out-of-fold"),
                "Decision curve (out of fold)",
                "Net benefit = TP/N \u2212 FP/N \u00b7 t/(1\u2212t) of acting on the calibrated out-of-fold probability "
                "(all repeats; each image calibrated by the fold that held it out) at threshold t (Vickers & Elkin "
                "2006), bands the 95 % bootstrap interval over duplicate groups, against treating every image as "
                "positive and treating none.")
        trials = search["trials"]
        out["search_lr"] = add(
            "search-lr", F.search_learning_rate(trials, data.objective, colours) if len(trials) else None,
            "Objective against learning rate",
            "Every completed trial of every search (all outer folds and the final model), on its own inner "
            "validation split.")
        out["search_choices"] = add(
            "search-choices", F.search_choices(trials, data.objective, colours) if len(trials) else None,
            "Objective by fine-tuning depth, pooling and dense layers",
            "Boxes summarise all completed trials of all searches; points are single trials, coloured by backbone.")
    return out


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def parts(data: RunData, run_dir: Path, decisions: dict) -> dict:
    """The design-specific parts of a cross-validated run's report (see
    :func:`bench.report.build.context`): the folds section and the parts whose content
    differs from a single split's."""
    tests = cv_tests(data)
    pairs = {(t.a, t.b): t for t in tests}
    pairs.update({(t.b, t.a): t.flipped() for t in tests})
    deployment = C.deployment_section(data)
    search = search_section(data)
    figs = make_cv_figures(data, deployment, search, decisions)
    figs["roc_pr"] = None  # test-split curves: only the final model has holdout predictions
    design = C.design(data)
    return {
        "evaluation": f"cross-validated run ({design['words']})",
        "summary": C.summary_section(data, pairs),
        "leaderboard": C.leaderboard_table(data),
        "leaderboard_note": C.leaderboard_note(data),
        "folds": {**C.crossval_section(data), "design": design,
                  "figures": [figs["folds"], figs["roc"], figs["probability_best"]]},
        "comparison": C.comparison_section(data, tests),
        "deployment": deployment,
        "search": search,
        "per_backbone_text": {b.name: "{estimate} {model}".format(**C.per_backbone_text(data, b)) for b in data.ok},
        "data": {"folds": folds_table(data), "split_note": data_note(data)},
        "fig": figs,
        "gradcam": gradcam_figure(run_dir, data, what="holdout images") if data.holdout_n else None,
    }


def data_note(data: RunData) -> str:
    folds, split = data.folds or {}, data.split
    d = C.design(data)
    text = (f"Cross-validation: {d['words']} of whole duplicate groups, stratified by class, seed "
            f"{folds.get('seed', split.get('seed'))} (folds.json); inside each outer fold an inner validation "
            f"fraction of {folds.get('val_size', split.get('val_size'))}. Duplicate groups stay whole in one fold, "
            "and label conflicts are left out. The split table is the final model's: its train/validation split of "
            "all cross-validated images")
    return text + (f", with the untouched holdout (--test-size {split.get('test_size')}) as test." if data.holdout_n
                   else "; there is no holdout.")


def folds_table(data: RunData) -> Table | None:
    """Images per class in every outer fold (folds.json) and the holdout."""
    sizes = (data.folds or {}).get("sizes") or {}
    classes = list((data.folds or {}).get("classes") or data.classes)
    rows = []
    for r, folds in enumerate(sizes.get("folds") or []):
        for f, counts in enumerate(folds):
            rows.append([f"repeat {r + 1}, fold {f + 1}", *[str(counts.get(c, 0)) for c in classes],
                         str(sum(counts.values()))])
    for name, key in (("all cross-validated", "cv"), ("holdout (untouched)", "holdout")):
        counts = sizes.get(key) or {}
        if sum(counts.values()):
            rows.append([name, *[str(counts.get(c, 0)) for c in classes], str(sum(counts.values()))])
    if not rows:
        return None
    return Table(["outer fold", *classes, "total"], rows, [False, *[True] * (len(classes) + 1)])
