"""The parts of the report that only a cross-validated run (``bench run --cv K``) has, and
its words for the shared sections (:mod:`bench.report.sections`): the cross-validation
section (fold strip plot, out-of-fold ROC bands, probability of being best), fold mean
± SD and P(best) beside the pooled estimates, each outer fold's kept trial, the final
model's search, the per-fold training curves, the paired comparisons across folds
(:mod:`bench.report.folds_comparison`) and the outer folds of the data. Chosen once, by
:func:`bench.report.build.context`. A pure function of the run folder: nothing is trained
or predicted.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.evaluate.coverage import coverage_sentence
from bench.evaluate.crossval import CV_RESAMPLES
from bench.report import folds_comparison
from bench.report.calibration_section import cv_reports
from bench.report.formatting import (
    DASH, Table, configuration, head_description, interval, lr, num, percent, slug, to_int)
from bench.report.load import RunData, gradcam_figure
from bench.report.rendering import as_figure
from bench.report.sections import _objective_label, ci_unit_text, final_ok, ranking_metric
from bench.schema import Source, label, metric_with_ci, to_float

#: The column of the fold mean and its corrected interval.
FOLD_COLUMN = "fold mean (corrected 95 % CI)"


def design(data: RunData) -> dict:
    """The CV design in numbers: k, repeats, folds, predictions, images, groups, holdout."""
    r = next((b.row for b in data.ok), None) or (data.backbones[0].row if data.backbones else {})
    k = to_int(r.get("cv_k")) or to_int(data.config.get("cv")) or 0
    repeats = to_int(r.get("cv_repeats")) or to_int(data.config.get("repeats")) or 1
    words = f"{k} outer folds" + (f" \u00d7 {repeats} repeats" if repeats > 1 else "")
    return {"k": k, "repeats": repeats, "folds": k * repeats, "words": words, "n": to_int(r.get("cv_n")),
            "images": to_int(r.get("cv_images")), "groups": to_int(r.get("cv_groups")), "holdout": data.holdout_n}


def has_holdout_scores(row: dict) -> bool:
    return (to_int(row.get("test_n")) or 0) > 0 and not math.isnan(to_float(row.get("test_accuracy")))


def rule_text(data: RunData) -> str:
    d, metric = design(data), ranking_metric(data)
    direction = "lowest" if data.minimise else "highest"
    return (f"Every backbone was searched, and its decision threshold chosen, inside each of the {d['words']} on that "
            "fold's own inner train/validation split; each fold's model then predicted only the images its fold held "
            f"out. The backbones are ranked by the {label(metric)} of these out-of-fold predictions ({direction} "
            "first). This cross-validated (CV) estimate is the expected performance of the whole procedure (search, "
            f"threshold, training), run on {d['k'] - 1}/{d['k']} of the images, on new images from the same source.")


def holdout_text(data: RunData, row: dict | None) -> str:
    n, size = data.holdout_n, data.config.get("test_size")
    if not n:
        return ("There is no untouched test set (the run had no --test-size): every image took part in "
                "cross-validation and in the final model's search, so the CV estimate is the performance estimate. "
                "Pass --test-size to keep a holdout for the final model.")
    if row is not None and has_holdout_scores(row):
        return (f"An untouched holdout of {n} images (--test-size {size}) was set aside before cross-validation; only "
                "the final model was scored on it, once, after the choice (the holdout columns). It played no part in "
                "choosing.")
    return (f"An untouched holdout of {n} images (--test-size {size}) was set aside before cross-validation, but the "
            "final model has no scores on it.")


def crossval_section(data: RunData) -> dict:
    """The cross-validation section's text (its figures: :func:`fold_figures`)."""
    d = design(data)
    return {
        "intro": (f"{d['words'].capitalize()} of whole duplicate groups, stratified by class: every one of the "
                  f"{d['images']} cross-validated images is predicted once{' per repeat' if d['repeats'] > 1 else ''}, "
                  "by the model of the fold that "
                  "held it out, which was searched, thresholded and early-stopped on that fold's inner split alone."),
        "rule_recorded": next((b.row.get("selection_rule") for b in data.ok if b.row.get("selection_rule")), None),
    }


def fold_figures(data: RunData) -> dict:
    """The cross-validation section's figures: per-fold scores, out-of-fold ROC bands and
    the probability of being best."""
    from bench.report import figures as F
    from bench.report import folds_figures as CF

    colours = F.backbone_colours([b.name for b in data.backbones])
    metric, d = ranking_metric(data), design(data)
    oof = {b.name: b.oof for b in data.ok if b.oof is not None and len(b.oof)}
    add = as_figure
    out = {}
    with F.style():
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
            "cv-folds", CF.fold_scores(scores, pooled, colours, label(metric), d["repeats"]),
            f"{label(metric)} per outer fold",
            f"Each marker is one outer fold's {label(metric)} on the images it held out (marker shape: repeat), the "
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
            f"How often each backbone has the best CV {label(metric)} when the duplicate groups are resampled "
            "(all backbones scored on the same resampled images).")
    return out


def backbone_figure(data: RunData):
    """Each backbone's figure: its outer folds' training curves (and the final model's) beside
    the out-of-fold confusion matrix (and the final model's on the holdout)."""
    from bench.report import folds_figures as CF

    def draw(b, colour):
        confusions = [("Out-of-fold", b.row.get("cv_confusion_matrix"))]
        if has_holdout_scores(b.row) and b.row.get("test_confusion_matrix") is not None:
            confusions.append(("Holdout (final)", b.row.get("test_confusion_matrix")))
        final = b.history if final_ok(b.row) and b.row.get("rank") == 1 else None
        return as_figure(
            f"training-{slug(b.name)}",
            CF.folds_and_confusion(b.fold_histories, final, confusions, data.classes, colour),
            f"{b.name}: training and out-of-fold confusion",
            "Validation loss and accuracy per epoch of each outer fold's kept trial (thin dashed lines)"
            + ("; thick: the final model's kept trial, train solid, validation dashed" if final else "")
            + ". Confusion matrix of the out-of-fold predictions of all repeats (each fold's own threshold), "
            "counts and share of each true class" + ("; beside it the final model's on the holdout."
                                                     if len(confusions) > 1 else "."))

    return draw


def data_note(data: RunData) -> str:
    folds, split = data.folds or {}, data.split
    d = design(data)
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


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def fold_trials(data: RunData):
    """The trial each outer fold of a backbone kept, with its held-out fold's score."""
    metric, objective = ranking_metric(data), data.objective

    def table(b) -> Table | None:
        rows = []
        for f in b.folds:
            hp = {k[3:]: v for k, v in f.items() if k.startswith("hp_")}
            ok = f.get("status") == "ok"
            rows.append([f"repeat {f['repeat'] + 1}, fold {f['fold'] + 1}", str(f.get("best_trial") or DASH),
                         num(f.get("val_objective")) if ok else "failed", num(f.get(f"test_{metric}")),
                         str(to_int(hp.get("unfreeze"))) if to_int(hp.get("unfreeze")) is not None else DASH,
                         head_description(hp) if ok else DASH, lr(hp.get("learning_rate"))])
        return Table(["outer fold", "kept trial", f"inner {_objective_label(objective)} (optimistic)",
                      f"held-out fold {label(metric)}", "blocks fine-tuned", "head", "learning rate"],
                     rows, [False, True, True, True, True, False, True]) if rows else None

    return table


def words(data: RunData) -> dict:
    """A cross-validated run's wording of the shared sections."""
    d, metric = design(data), ranking_metric(data)
    direction = "lowest" if data.minimise else "highest"
    holdout = any(has_holdout_scores(b.row) for b in data.ok)
    return {
        "rule": rule_text(data),
        "ranked_on": "in cross-validation",
        "ranked_by": f"the cross-validated {label(metric)} ({direction} first; {d['words']})",
        "ci_unit": "resamples of duplicate groups",
        "columns_note": (f" Every CV value pools all out-of-fold predictions. Fold mean: the mean of the outer folds' own "
                         f"{label(metric)}, with its interval corrected for their shared training images (the one to "
                         f"read for the deployed model); P(best): the share of resamples in which the backbone has the best CV "
                         f"{label(metric)}."
                         + (f" Holdout: the final model's {label(metric)} on the untouched holdout (the other "
                            "backbones have no final model; every holdout metric is in the summary)." if holdout
                            else "")),
        "selection_score": ("the mean over outer folds of each fold's kept trial's inner-validation value: optimistic, "
                            "not an estimate."),
        "no_cost": "No final model was trained, so there is no cost to show.",
        "one_cost": ("Only the recommended backbone's final model exists as a deployable model (the other "
                     "backbones were cross-validated, never trained on all images)"),
        "trade_off": "Accuracy is the cross-validated estimate.",
        "search": (f"Each backbone was searched {d['folds']} times, once inside each outer fold on its inner "
                   "train/validation split; the recommended backbone once more on all cross-validated images for the "
                   f"final model. The objective is {_objective_label(data.objective)} on the inner validation "
                   "split: it picks trials, and being the best of many tries it is optimistic; the held-out fold's "
                   "score beside it is the honest one."),
        "search_scope": ", final model's search on all cross-validated images",
        "fig_leaderboard": ("Points are pooled out-of-fold estimates, bars their 95 % CIs from a bootstrap over "
                            "duplicate groups; backbones in CV rank order, best on top."),
        "fig_deployment": ("Stars: Pareto-optimal; circles: dominated. Vertical bars: 95 % CI of the cross-validated "
                           "accuracy."),
        "where": "out-of-fold",
        "fig_calibration": ("Out-of-fold calibrated probability (all repeats; each image calibrated by the fold that "
                            "held it out) against the observed frequency in equal-count bins, bars the 95 % Wilson "
                            "intervals; points on the diagonal are well calibrated. ECE: expected calibration error "
                            "over these bins. Below: how the predicted probabilities are spread."),
        "decision_title": "Decision curve (out of fold)",
        "fig_decision": ("Net benefit = TP/N \u2212 FP/N \u00b7 t/(1\u2212t) of acting on the calibrated out-of-fold "
                         "probability (all repeats; each image calibrated by the fold that held it out) at threshold t "
                         "(Vickers & Elkin 2006), bands the 95 % bootstrap interval over duplicate groups, against "
                         "treating every image as positive and treating none."),
        "fig_search_lr": ("Every completed trial of every search (all outer folds and the final model), on its own "
                          "inner validation split."),
        "fig_search_choices": ("Boxes summarise all completed trials of all searches; points are single trials, "
                               "coloured by backbone."),
    }


def ci_note(data: RunData, r: dict) -> str:
    d = design(data)
    many = d["repeats"] > 1
    note = (f"CV estimates pool {d['n']} out-of-fold predictions ({d['images']} images"
            + (f" \u00d7 {d['repeats']} repeats" if many else "") + f", {d['groups']} duplicate groups); their CIs are "
            f"95 % percentile intervals over {CV_RESAMPLES} bootstrap resamples of duplicate groups (copies of one "
            "image" + (", and an image's repeats," if many else "") + " are drawn together). " + which_model_note(d)
            + " " + coverage_sentence(ranking_metric(data)))
    if has_holdout_scores(r):
        note += (f" Holdout: {to_int(r.get('test_n'))} images, 95 % intervals over "
                 f"{to_int(r.get('test_ci_resamples'))} {ci_unit_text(r, detail=False)}.")
    return note.strip()


def which_model_note(d: dict) -> str:
    """Which model each interval of a CV run is about (the design's words in ``d``)."""
    share = f"{d['k'] - 1}/{d['k']}"
    return (f"That interval counts only which images were tested, and it is about models trained on {share} of "
            "the images: the deployed model, trained on all of them, usually scores higher. The fold mean's "
            f"interval (t over the {d['folds']} outer folds' own scores, variance corrected for "
            "their shared training images as Nadeau and Bengio propose) also counts how the model changes with its "
            "training images: read it as the interval for the deployed model.")


def final_text(data: RunData, b) -> str:
    r = b.row
    if final_ok(r):
        return (f"{b.name} was then searched once more on all {design(data)['images']} cross-validated images (a "
                "train/validation split of them); that final model is the one exported. Its own selection score "
                f"({_objective_label(data.objective)} {num(r.get('final_val_objective'))}) is optimistic: "
                "the best of its trials \u00d7 epochs on a small validation split.")
    return (f"{b.name}'s search on all cross-validated images, which makes the model to export, did not "
            "finish: there is no final model.")


def model_text(data: RunData):
    images = design(data)["images"]

    def text(b) -> str:
        if to_int(b.row.get("rank")) == 1 and final_ok(b.row):
            return f"Final model (searched again on all {images} cross-validated images): {configuration(b.row)}."
        return ("No final model: only the recommended backbone is searched again on all cross-validated images. "
                "Each outer fold's search chose its own configuration (see \u201cWhat the search learned\u201d).")

    return text


def _fold_mean_ci(r: dict, m: str) -> str:
    """``0.861 (0.76–0.96)``: the fold mean and its corrected interval (the mean alone
    without one; see :func:`bench.evaluate.crossval.fold_interval`)."""
    low, high = to_float(r.get(f"cv_{m}_fold_ci_low")), to_float(r.get(f"cv_{m}_fold_ci_high"))
    mean = num(r.get(f"cv_{m}_fold_mean"))
    return mean if math.isnan(low) or math.isnan(high) else f"{mean} ({num(low, 2)}\u2013{num(high, 2)})"


def parts(data: RunData, run_dir: Path) -> dict:
    """The design parts of a cross-validated run's report (see
    :func:`bench.report.build.context`): its words, the folds-only pieces and the folds section."""
    tests = folds_comparison.cv_tests(data)
    pairs = {(t.a, t.b): t for t in tests}
    pairs.update({(t.b, t.a): t.flipped() for t in tests})
    d, metric = design(data), ranking_metric(data)
    best = data.ok[0] if data.ok else None
    holdout = best is not None and has_holdout_scores(best.row)
    any_holdout = any(has_holdout_scores(b.row) for b in data.ok)
    figs = fold_figures(data)
    return {
        "evaluation": f"cross-validated run ({d['words']})",
        "words": words(data),
        "decisions": cv_reports(data),
        "rule_extra": final_text(data, best) if best else "",
        "holdout": holdout_text(data, best.row if best else None),
        "ci_note": ci_note(data, best.row) if best else "",
        "significance": lambda a, b: folds_comparison.runner_up_sentence(a, b, pairs.get((a, b)) if b else None, metric),
        "estimate_notes": lambda row: [f"fold mean {_fold_mean_ci(row, metric)}",
                                       f"probability of being best {percent(row.get('probability_best'))}"],
        "summary_columns": [(FOLD_COLUMN, _fold_mean_ci)] + (
            [("holdout", lambda r, m: num(r.get(f"test_{m}"))), ("95 % CI", lambda r, m: interval(r, m))]
            if holdout else []),
        "leaderboard_columns": [(FOLD_COLUMN, lambda r: _fold_mean_ci(r, metric)),
                                ("P(best)", lambda r: percent(r.get("probability_best")))],
        "leaderboard_end_columns": [(f"holdout {label(metric)}", lambda r: metric_with_ci(
            r, metric, style="dash", missing=DASH))] if any_holdout else [],
        "model_text": model_text(data),
        "fold_trials": fold_trials(data),
        "backbone_figure": backbone_figure(data),
        "figures": {**figs, "roc_pr": None},  # test-split curves: only the final model has holdout predictions
        "folds": {**crossval_section(data), "design": d,
                  "figures": [figs["folds"], figs["roc"], figs["probability_best"]]},
        "comparison": folds_comparison.comparison_section(data, tests, d["folds"]),
        "data": {"folds": folds_table(data), "split_note": data_note(data)},
        "gradcam": gradcam_figure(run_dir, data, what="holdout images") if data.holdout_n else None,
    }
