"""The sections of a cross-validated run's report (``bench run --cv K``), each a dict of
tables and sentences the CV templates render. A CV run is ranked on out-of-fold (OOF)
estimates, so nothing here calls a test split the judge: the holdout (``--test-size``),
when there is one, was scored once, by the final model only, after the choice.
"""

from __future__ import annotations

import math

from bench.evaluate.crossval import CV_METRIC, CV_RESAMPLES
from bench.evaluate.paired import PairTest
from bench import schema
from bench.schema import Source, metric_with_ci, to_float
from bench.report import findings, sections
from bench.report.formatting import (
    DASH,
    Table,
    configuration,
    display_name,
    duration,
    fmt_p,
    fmt_signed,
    interval,
    mean_sd,
    num,
    percent,
    to_int,
)
from bench.report.load import RunData

#: The summary table's rows, in order.
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "recall", "specificity", "f1", "roc_auc", "pr_auc", "brier")
FINAL = "final model"


def cv_metric(data: RunData) -> str:
    """The metric whose CV estimate ranks the backbones (ROC AUC for val_auc, ...)."""
    return CV_METRIC.get(data.objective, "roc_auc")


def label(metric: str) -> str:
    return schema.label(metric)


def cv_ci(row: dict, metric: str) -> str:
    return metric_with_ci(row, metric, style="dash", missing=DASH, source=Source.OUT_OF_FOLD)


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


def final_ok(row: dict) -> bool:
    """Whether the recommended backbone's final search (all CV images) produced a model."""
    status = row.get("final_status")
    return status == "ok" or (status is None and row.get("best_trial") is not None)


# --------------------------------------------------------------------------- summary


def rule_text(data: RunData) -> str:
    d, metric = design(data), cv_metric(data)
    direction = "lowest" if data.minimise else "highest"
    return (f"Every backbone was searched, and its decision threshold chosen, inside each of the {d['words']} on that "
            "fold's own inner train/validation split; each fold's model then predicted only the images its fold held "
            f"out. The backbones are ranked by the {label(metric)} of these out-of-fold predictions ({direction} "
            "first). This cross-validated (CV) estimate is the expected performance of the whole procedure (search, "
            "threshold, training) on new images from the same source.")


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


def pair_parts(t: PairTest, metric: str) -> list[tuple[str, str, float | None, str | None]]:
    """(test, statistic in words, Holm-adjusted p, favoured backbone) of each test run on ``t``."""
    out = []
    if t.delong_p is not None and t.auc_diff is not None and not math.isnan(t.auc_diff):
        out.append(("DeLong", f"ROC AUC difference {fmt_signed(t.auc_diff)}, DeLong (clustered by duplicate group) "
                              f"{fmt_p(_adjusted(t.delong_p, t.delong_p_holm))}",
                    _adjusted(t.delong_p, t.delong_p_holm), t.a if t.auc_diff > 0 else t.b))
    ga, gb = (t.groups_only_a, t.groups_only_b) if t.groups_only_a is not None else (t.only_a, t.only_b)
    out.append(("McNemar", f"{t.a} right on {ga} duplicate groups {t.b} missed, {t.b} on {gb}, McNemar "
                           f"{fmt_p(_adjusted(t.mcnemar_p, t.mcnemar_p_holm))}",
                _adjusted(t.mcnemar_p, t.mcnemar_p_holm), t.a if ga > gb else t.b if gb > ga else None))
    if t.ttest_p is not None and t.ttest_mean is not None:
        out.append(("corrected resampled t-test",
                    f"per-fold {label(t.ttest_metric or metric)} difference {fmt_signed(t.ttest_mean)} on average, "
                    f"corrected resampled t-test {fmt_p(_adjusted(t.ttest_p, t.ttest_p_holm))}",
                    _adjusted(t.ttest_p, t.ttest_p_holm), _favoured_by_mean(t)))
    return out


def _favoured_by_mean(t: PairTest) -> str | None:
    if t.ttest_mean is None or t.ttest_mean == 0:
        return None
    lower_better = t.ttest_metric == "brier"
    return t.a if (t.ttest_mean > 0) != lower_better else t.b


def _adjusted(p, holm):
    return p if holm is None else holm


def runner_up_sentence(best: str, runner: str | None, test: PairTest | None, metric: str) -> str:
    if runner is None:
        return "Only one backbone finished, so there is no runner-up to compare against."
    if test is None:
        return (f"The runner-up is {runner}, but the two cannot be compared prediction by prediction (folds.json or "
                "an oof_predictions.csv is missing from the run folder).")
    if test.a != best:
        test = test.flipped()
    parts = pair_parts(test, metric)
    details = "; ".join(text for _, text, _, _ in parts)
    for_best = [name for name, _, p, fav in parts if findings.significant(p) and fav == best]
    for_runner = [name for name, _, p, fav in parts if findings.significant(p) and fav == runner]
    where = "on the out-of-fold predictions, p-values Holm-adjusted over all pairs"
    if for_runner:
        return (f"By {', '.join(for_runner)}, the runner-up, {runner}, is significantly better than {best} ({where}: "
                f"{details}); the ranking follows the CV estimate of the objective, so weigh both.")
    if for_best:
        return f"{best} is significantly better than the runner-up, {runner}, by {', '.join(for_best)} ({where}: {details})."
    return (f"{best} is not significantly better than the runner-up, {runner}: no paired test reaches Holm-adjusted "
            f"p < 0.05 ({where}: {details}).")


def summary_section(data: RunData, pairs: dict) -> dict:
    rule = rule_text(data)
    if not data.ok:
        return {"rule": rule, "best": None, "holdout": holdout_text(data, None)}
    d, metric = design(data), cv_metric(data)
    best = data.ok[0]
    r = best.row
    runner = data.ok[1] if len(data.ok) > 1 else None
    holdout = has_holdout_scores(r)
    headers = ["metric", "CV estimate", "95 % CI", "fold mean \u00b1 SD"] + (["holdout", "95 % CI"] if holdout else [])
    rows = []
    for m in SUMMARY_METRICS:
        row = [schema.metric(m).long_label, num(r.get(f"cv_{m}")),
               interval(r, m, Source.OUT_OF_FOLD), mean_sd(r.get(f"cv_{m}_fold_mean"), r.get(f"cv_{m}_fold_sd"))]
        if holdout:
            row += [num(r.get(f"test_{m}")), interval(r, m)]
        rows.append(row)
    many = d["repeats"] > 1
    ci_note = (f"CV estimates pool {d['n']} out-of-fold predictions ({d['images']} images"
               + (f" \u00d7 {d['repeats']} repeats" if many else "") + f", {d['groups']} duplicate groups); CIs are "
               f"95 % percentile intervals over {CV_RESAMPLES} bootstrap resamples of duplicate groups (copies of one "
               "image" + (", and an image's repeats," if many else "") + " are drawn together); fold mean \u00b1 SD "
               f"over the {d['folds']} outer folds' own scores.")
    if len(data.classes) == 2:
        ci_note += f" Positive class: {data.classes[1]}."
    if holdout:
        ci_note += (f" Holdout: {to_int(r.get('test_n'))} images, 95 % intervals over "
                    f"{to_int(r.get('test_ci_resamples'))} {sections.ci_unit_text(r, detail=False)}.")
    if final_ok(r):
        final = (f"{best.name} was then searched once more on all {d['images']} cross-validated images (a "
                 "train/validation split of them); that final model is the one exported. Its own selection score "
                 f"({sections._objective_label(data.objective)} {num(r.get('final_val_objective'))}) is optimistic: "
                 "the best of its trials \u00d7 epochs on a small validation split.")
    else:
        final = (f"{best.name}'s search on all cross-validated images, which makes the model to export, did not "
                 "finish: there is no final model.")
    return {
        "rule": rule,
        "best": best.name,
        "best_display": display_name(best),
        "configuration": configuration(r) if final_ok(r) else None,
        "headline": (f"Cross-validated {label(metric)} {cv_ci(r, metric)}, fold mean \u00b1 SD "
                     f"{mean_sd(r.get(f'cv_{metric}_fold_mean'), r.get(f'cv_{metric}_fold_sd'))}, probability of "
                     f"being best {percent(r.get('probability_best'))}."),
        "rule_extra": final,
        "holdout": holdout_text(data, r),
        "metrics": Table(headers, rows, [False, *[True] * (len(headers) - 1)]),
        "ci_note": ci_note,
        "significance": runner_up_sentence(best.name, runner.name if runner else None,
                                           pairs.get((best.name, runner.name)) if runner else None, metric),
        "baseline_note": baseline_note(data),
    }


def baseline_note(data: RunData) -> str | None:
    baseline = next((b for b in data.backbones if b.row.get("baseline")), None)
    if baseline is None:
        return None
    metric, best = cv_metric(data), data.ok[0]
    if baseline is best:
        return "The original notebook's recipe won: no searched configuration beat it in cross-validation."
    if not baseline.ok:
        return f"The original notebook's recipe ({baseline.name}) failed: {baseline.row.get('message')}."
    return (f"The original notebook's recipe ({baseline.name}) ranks {to_int(baseline.row.get('rank'))} of "
            f"{len(data.ok)} in cross-validation; its CV {label(metric)} is {cv_ci(baseline.row, metric)} against "
            f"{cv_ci(best.row, metric)} here.")


# --------------------------------------------------------------------------- leaderboard


def leaderboard_table(data: RunData) -> Table:
    metric = cv_metric(data)
    others = [m for m in ("roc_auc", "accuracy", "f1") if m != metric][:2]
    holdout = any(has_holdout_scores(b.row) for b in data.ok)
    failed = findings.failed_trial_counts(data)
    rows = []
    for b in [*data.ok, *data.failed]:
        r = b.row
        row = [str(to_int(r.get("rank")) or DASH) if b.ok else "failed", display_name(b), cv_ci(r, metric),
               mean_sd(r.get(f"cv_{metric}_fold_mean"), r.get(f"cv_{metric}_fold_sd")),
               percent(r.get("probability_best")), *[cv_ci(r, m) for m in others], cv_ci(r, "recall"),
               cv_ci(r, "specificity"), num(r.get("val_objective")),
               f"{trials_done(b)} / {failed.get(b.name, 0)} ({duration(r.get('search_seconds'))})"]
        if holdout:
            row.append(metric_with_ci(r, metric, style="dash", missing=DASH))
        rows.append(row)
    headers = ["rank", "backbone", f"CV {label(metric)}", "fold mean \u00b1 SD", "P(best)",
               *[f"CV {label(m)}" for m in others], "CV sensitivity", "CV specificity",
               f"{sections._objective_label(data.objective)} selection score (optimistic)",
               "trials ok / failed (search time)"] + ([f"holdout {label(metric)}"] if holdout else [])
    return Table(headers, rows, [True, False, *[True] * (len(headers) - 2)])


def trials_done(b) -> int:
    """Completed trials of every search of ``b`` (outer folds and final model) from the
    trials.csv files, else the leaderboard row's count (the outer folds')."""
    if b.trials is not None and "status" in b.trials:
        return int((b.trials["status"].astype(str) == "completed").sum())
    return to_int(b.row.get("trials_done")) or 0


def leaderboard_note(data: RunData) -> str:
    d, metric = design(data), cv_metric(data)
    direction = "lowest" if data.minimise else "highest"
    holdout = any(has_holdout_scores(b.row) for b in data.ok)
    return (f"One row per backbone, ranked by the cross-validated {label(metric)} ({direction} first; {d['words']}). "
            "CV values pool every out-of-fold prediction, with 95 % CIs over bootstrap resamples of duplicate groups; "
            f"fold mean \u00b1 SD: the outer folds' own {label(metric)}; P(best): the share of resamples in which the "
            f"backbone has the best CV {label(metric)}. The {sections.SELECTION_SCORE} is the mean over outer folds of "
            "each fold's kept trial's inner-validation value: optimistic, not an estimate."
            + (f" Holdout: the final model's {label(metric)} on the untouched holdout (the other backbones have no final "
               "model; every holdout metric is in the summary)." if holdout else ""))


# --------------------------------------------------------------------------- cross-validation


def crossval_section(data: RunData) -> dict:
    """The cross-validation section's text (its figures: :func:`bench.report.folds_section.make_cv_figures`)."""
    d = design(data)
    return {
        "intro": (f"{d['words'].capitalize()} of whole duplicate groups, stratified by class: every one of the "
                  f"{d['images']} cross-validated images is predicted once{' per repeat' if d['repeats'] > 1 else ''}, "
                  "by the model of the fold that "
                  "held it out, which was searched, thresholded and early-stopped on that fold's inner split alone."),
        "rule_recorded": next((b.row.get("selection_rule") for b in data.ok if b.row.get("selection_rule")), None),
    }


def comparison_section(data: RunData, tests: list[PairTest]) -> dict:
    """The statistical comparison of a cross-validated run: every pair on the out-of-fold
    predictions (DeLong, McNemar) and across the outer folds (corrected resampled t-test)."""
    d, metric = design(data), cv_metric(data)
    out = {"available": len(tests) > 0}
    if not tests:
        ok = [b for b in data.ok if b.oof is not None]
        out["text"] = ("No backbone finished, so there is nothing to compare." if not ok else
                       "Only one backbone finished, so there is nothing to compare it with." if len(ok) < 2 else
                       "The paired tests need folds.json and every backbone's oof_predictions.csv; the run folder "
                       "lacks one of them.")
        return out
    binary = any(t.auc_diff is not None for t in tests)
    rows = []
    for t in tests:
        ga, gb = (t.groups_only_a, t.groups_only_b) if t.groups_only_a is not None else (t.only_a, t.only_b)
        auc = DASH if t.auc_diff is None or math.isnan(t.auc_diff) else (
            f"{fmt_signed(t.auc_diff)} ({num(t.delong_ci_low, 2)} to {num(t.delong_ci_high, 2)})")
        ttest = DASH if t.ttest_mean is None else (
            f"{fmt_signed(t.ttest_mean)} ({num(t.ttest_ci_low, 2)} to {num(t.ttest_ci_high, 2)})")
        row = [f"{t.a} vs {t.b}"]
        if binary:
            row += [auc, sections.p_holm(t.delong_p, t.delong_p_holm) if t.delong_p is not None else DASH]
        row += [f"{ga} / {gb}", sections.p_holm(t.mcnemar_p, t.mcnemar_p_holm), ttest,
                sections.p_holm(t.ttest_p, t.ttest_p_holm) if t.ttest_p is not None else DASH]
        rows.append(row)
    headers = ["pair (A vs B)"]
    if binary:
        headers += ["ROC AUC A \u2212 B (95 % CI)", "DeLong p"]
    headers += ["groups only A / only B right", "McNemar p", f"fold {label(metric)} A \u2212 B (95 % CI)",
                "corrected t-test p"]
    t0 = tests[0]
    out.update({
        "tables": [{"title": None, "table": Table(headers, rows, [False, *[True] * (len(headers) - 1)]),
                    "cls": "wide split"}],
        "intro": (
            f"Every pair on the out-of-fold predictions of all repeats ({t0.n} predictions, {t0.n_groups} duplicate "
            "groups; an image's repeats count in its group). "
            + ("DeLong's test, clustered by duplicate group, compares the ROC AUCs (95 % CI of the difference). "
               if binary else "")
            + "McNemar's exact test counts one vote per model and group (right on more than half of the group's "
            "predictions) and compares the groups only one of the two gets right. The corrected resampled t-test "
            f"(Nadeau & Bengio) compares the {d['folds']} outer folds' own {label(metric)}, with the variance inflated "
            "for the overlap of the folds' training sets. Each p-value is shown raw and Holm-adjusted over all pairs "
            "of that test; * marks Holm-adjusted p < 0.05."),
        "caution": (("DeLong and McNemar treat the fold models as fixed and see" if binary else
                     "McNemar treats the fold models as fixed and sees") + " only the prediction-level noise; the "
                    "t-test also sees how much the result moves between folds, but has few degrees of freedom "
                    f"({d['folds'] - 1}). Read a difference as real when they agree."),
        "readings": [{"pair": f"{t.a} vs {t.b}", "text": pair_reading(t, metric, d['folds'])} for t in tests],
    })
    return out


def pair_reading(t: PairTest, metric: str, n_folds: int) -> str:
    """The tests of one pair in plain words, naming the direction."""
    ga, gb = (t.groups_only_a, t.groups_only_b) if t.groups_only_a is not None else (t.only_a, t.only_b)
    text = (f"{t.a} was right on {ga} duplicate groups {t.b} missed, {t.b} on {gb} that {t.a} missed "
            f"(McNemar {_p_pair(t.mcnemar_p, t.mcnemar_p_holm)}).")
    if t.delong_p is not None and t.auc_diff is not None and not math.isnan(t.auc_diff):
        text += (f" ROC AUC {t.a} \u2212 {t.b} = {fmt_signed(t.auc_diff)} (95 % CI {fmt_signed(t.delong_ci_low)} to "
                 f"{fmt_signed(t.delong_ci_high)}; DeLong {_p_pair(t.delong_p, t.delong_p_holm)}).")
    if t.ttest_mean is not None and t.ttest_p is not None:
        text += (f" Over the {n_folds} outer folds, {label(t.ttest_metric or metric)} {t.a} \u2212 {t.b} = "
                 f"{fmt_signed(t.ttest_mean)} on average (95 % CI {fmt_signed(t.ttest_ci_low)} to "
                 f"{fmt_signed(t.ttest_ci_high)}; corrected t-test {_p_pair(t.ttest_p, t.ttest_p_holm)}).")
    found = [(name, fav) for name, _, p, fav in pair_parts(t, metric) if findings.significant(p)]
    if not found:
        return text + " No test finds a difference at Holm-adjusted p < 0.05."
    return text + " Significant after Holm: " + "; ".join(
        f"{name}, in favour of {fav}" if fav else name for name, fav in found) + "."


def _p_pair(p, holm) -> str:
    return fmt_p(p) + ("" if holm is None else f", Holm-adjusted {fmt_p(holm)}")


# --------------------------------------------------------------------------- per backbone, deployment


def per_backbone_text(data: RunData, b) -> dict:
    metric, d = cv_metric(data), design(data)
    r = b.row
    estimate = (f"CV {label(metric)} {cv_ci(r, metric)}; fold mean \u00b1 SD "
                f"{mean_sd(r.get(f'cv_{metric}_fold_mean'), r.get(f'cv_{metric}_fold_sd'))}; probability of being "
                f"best {percent(r.get('probability_best'))}.")
    if to_int(r.get("rank")) == 1 and final_ok(r):
        model = f"Final model (searched again on all {d['images']} cross-validated images): {configuration(r)}."
    else:
        model = ("No final model: only the recommended backbone is searched again on all cross-validated images. "
                 "Each outer fold's search chose its own configuration (section 6).")
    return {"estimate": estimate, "model": model}


def deployment_section(data: RunData) -> dict:
    measured = [b for b in data.ok if not (math.isnan(to_float(b.row.get("latency_ms_b1")))
                                          and math.isnan(to_float(b.row.get("params_total"))))]
    flags = sections.pareto_flags(measured, source=Source.OUT_OF_FOLD)
    latency = ("Latency is the median time per image on the machine that ran the search (batch 1 and batch 32).")
    if len(measured) < 2:
        table = sections.cost_table(measured, flags, source=Source.OUT_OF_FOLD, pareto=False)
        text = ("Only the recommended backbone's final model exists as a deployable model (the other backbones were "
                "cross-validated, never trained on all images), so there is no trade-off to weigh; the table shows "
                "its cost. " if measured else "No final model was trained, so there is no cost to show. ") + latency
        return {"flags": flags, "table": table, "text": text, "pareto": False}
    fast = [b.name for b, f in zip(measured, flags["latency"]) if f]
    small = [b.name for b, f in zip(measured, flags["params"]) if f]
    text = ("A backbone is Pareto-optimal when no other one is at least as accurate and at least as fast (or small), "
            "and strictly better on one of the two. " + (f"On latency: {', '.join(fast)}. " if fast else "")
            + (f"On size: {', '.join(small)}. " if small else "") + latency
            + " Accuracy is the cross-validated estimate.")
    return {"flags": flags, "table": sections.cost_table(measured, flags, source=Source.OUT_OF_FOLD), "text": text,
            "pareto": True, "backbones": measured}
