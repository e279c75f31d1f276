"""The design parts of a single split's report (see :func:`bench.report.build.context`):
its words, its statistical comparison on the test split (McNemar, paired bootstrap,
DeLong), its per-backbone figure (the kept trial's training curves beside the test
confusion matrix) and its ROC and precision-recall curves. Everything else in the report
is shared with a cross-validated run (:mod:`bench.report.sections`).
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.evaluate.paired import PairTest, pairwise_tests
from bench.report import findings
from bench.report.calibration_section import read_calibration
from bench.report.formatting import DASH, Table, configuration, fmt_p, fmt_signed, num, p_text, slug, to_int
from bench.report.load import RunData, gradcam_figure
from bench.report.rendering import as_figure
from bench.report.sections import SELECTION_SCORE, _objective_label, ci_unit_text, p_holm, star
from bench.schema import to_float


def groups_of_test_images(data: RunData, predictions: dict) -> dict | None:
    """File -> duplicate group of the test images (split.json), when every compared image has one;
    ``None`` (images as the unit) for runs whose split.json does not list its files."""
    groups = {f["path"]: str(f["group"]) for f in data.split.get("files") or []
              if f.get("split") == "test" and f.get("group") is not None}
    files = set().union(*(set(p["file"]) for p in predictions.values())) if predictions else set()
    return groups if files and files <= groups.keys() else None


def words(data: RunData) -> dict:
    """The single split's wording of the shared sections."""
    objective = _objective_label(data.objective)
    direction = "lowest" if data.minimise else "highest"
    return {
        "rule": (f"Chosen on the validation objective ({objective}, {direction} wins): each backbone's search kept its "
                 "best trial by that objective, and the backbones are ranked by it. Test metrics are reported, never "
                 "used to choose."),
        "ranked_on": "on validation",
        "ranked_by": f"{objective} (validation)",
        "ci_unit": "resamples of the test images",
        "columns_note": "",
        "selection_score": ("the kept trial's validation value, the best over all trials and epochs of the search: a "
                            "maximum over many tries on one small validation split."),
        "no_cost": "No backbone finished, so there is nothing to weigh.",
        "one_cost": "Only {name} finished",
        "trade_off": ("The trade-off is drawn on test accuracy for information; the recommendation itself used "
                      "validation only."),
        "search": f"The objective is {objective} on the validation split.",
        "search_scope": "",
        "fig_leaderboard": ("Points are test-set values, bars their 95 % bootstrap confidence intervals; backbones in "
                            "validation rank order, best on top."),
        "fig_deployment": ("Stars: Pareto-optimal (no other backbone is both more accurate and cheaper); circles: "
                           "dominated. Vertical bars: 95 % CI of test accuracy."),
        "where": "test split",
        "fig_calibration": ("Calibrated predicted probability against the observed frequency in equal-count bins of the "
                            "test split, bars the 95 % Wilson intervals; points on the diagonal are well calibrated. "
                            "ECE: expected calibration error over these bins. Below: how the predicted probabilities "
                            "are spread."),
        "decision_title": "Decision curve",
        "fig_decision": ("Net benefit = TP/N \u2212 FP/N \u00b7 t/(1\u2212t) of acting on the calibrated probability "
                         "at threshold t (Vickers & Elkin 2006), bands the 95 % bootstrap interval over duplicate groups "
                         "of the test split, against treating every image as positive and treating none. A model is "
                         "worth using at the thresholds where it lies above both."),
        "fig_search_lr": "Every completed trial of every backbone.",
        "fig_search_choices": ("Boxes summarise all completed trials; points are single trials, coloured by "
                               "backbone."),
    }


def ci_note(r: dict) -> str:
    n_test, level, resamples = to_int(r.get("test_n")), to_float(r.get("test_ci_level")), to_int(r.get("test_ci_resamples"))
    if not (n_test and resamples and not math.isnan(level)):
        return ""
    return (f"On {n_test} test images; CIs are {100 * level:.0f} % percentile bootstrap intervals over "
            f"{resamples} {ci_unit_text(r)}.")


def parts(data: RunData, run_dir: Path) -> dict:
    """The design parts of a single-split run's report (see :func:`bench.report.build.context`)."""
    from bench.report import figures as F

    predictions = {b.name: b.test_predictions for b in data.ok if b.has_predictions}
    tests = pairwise_tests(predictions, data.classes, seed=data.seed,
                           groups=groups_of_test_images(data, predictions)) if data.classes else []
    pairs = {(t.a, t.b): t for t in tests}
    pairs.update({(t.b, t.a): t.flipped() for t in tests})
    best = data.ok[0].row if data.ok else {}
    objective = _objective_label(data.objective)
    colours = F.backbone_colours([b.name for b in data.backbones])

    def backbone_figure(b, colour):
        return as_figure(
            f"training-{slug(b.name)}",
            F.training_and_confusion(b.history, b.row.get("test_confusion_matrix"), data.classes, colour),
            f"{b.name}: training and test confusion",
            f"Best trial ({b.row.get('best_trial')}): train (solid) and validation (dashed) per epoch; the red "
            "line marks the epoch whose weights were kept; a dotted line where fine-tuning began. Right: test "
            "confusion matrix, counts and share of each true class.")

    with F.style():
        roc_pr = as_figure("roc-pr", F.roc_pr(predictions, data.classes, colours),
                           "ROC and precision\u2013recall curves",
                           "Test split, all backbones overlaid. AP: average precision.")
    return {
        "evaluation": "single train/validation/test split",
        "words": words(data),
        "decisions": read_calibration(data),
        "rule_extra": f"{SELECTION_SCORE[:1].upper()}{SELECTION_SCORE[1:]}: {objective} "
                      f"{num(best.get('val_objective'))} (trial {best.get('best_trial')}).",
        "ci_note": ci_note(best),
        "significance": lambda a, b: findings.significance_sentence(a, b, pairs.get((a, b)) if b else None),
        "estimate_notes": lambda row: [],
        "model_text": lambda b: f"{configuration(b.row)}.",
        "fold_trials": lambda b: None,
        "backbone_figure": backbone_figure,
        "figures": {"roc_pr": roc_pr},
        "folds": None,
        "comparison": statistics_section(data, tests),
        "data": {},
        "gradcam": gradcam_figure(run_dir, data),
    }


def statistics_section(data: RunData, tests: list[PairTest]) -> dict:
    names = [b.name for b in data.ok if b.has_predictions]
    if len(names) < 2:
        return {
            "available": False,
            "text": "Only one backbone has test predictions, so there is nothing to compare it with."
            if names else "No backbone has test predictions, so there is nothing to compare.",
        }
    by_pair = {(t.a, t.b): t for t in tests}
    by_pair.update({(t.b, t.a): t.flipped() for t in tests})

    def matrix(cell, corner: str = "") -> Table:
        return Table([corner, *names], [[a, *[DASH if a == b else cell(by_pair[a, b]) for b in names]] for a in names],
                     [False, *[True] * len(names)])

    mcnemar = matrix(lambda t: p_holm(t.mcnemar_p, t.mcnemar_p_holm))
    binary = len(data.classes) == 2
    auc = delong = None
    if binary:
        def auc_cell(t: PairTest, p, adjusted) -> str:
            if t.auc_diff is None or math.isnan(t.auc_diff):
                return DASH
            return f"{fmt_signed(t.auc_diff)} ({fmt_p(p)}{'' if adjusted is None else f', Holm {p_text(adjusted)}'})" \
                   f"{star(p if adjusted is None else adjusted)}"

        auc = matrix(lambda t: auc_cell(t, t.auc_p, t.auc_p_holm), "row \u2212 column")
        delong = matrix(lambda t: auc_cell(t, t.delong_p, t.delong_p_holm), "row \u2212 column")
    readings = [{"pair": f"{t.a} vs {t.b}", "text": " ".join(
        x for x in (findings.mcnemar_reading(t), findings.auc_reading(t), findings.delong_reading(t)) if x)}
        for t in tests]
    grouped = tests[0].unit == "group"
    n, n_groups = tests[0].n, tests[0].n_groups
    unit = (f"the same {n} test images ({n_groups} duplicate groups: copies of one image count once)" if grouped
            else f"the same {n} test images")
    intro = (
        f"Each pair of backbones is compared on {unit}. McNemar's exact test asks whether the "
        f"{'groups' if grouped else 'images'} only one of the two gets right split more unevenly than chance would make "
        f"them{' (one vote per model and group: right on more than half of its images)' if grouped else ''}"
        + ("; the paired bootstrap (2000 resamples of " + ("duplicate groups" if grouped else "the test images")
           + ") and DeLong's test" + (" (clustered by duplicate group)" if grouped else "")
           + " ask whether their ROC AUCs differ (row minus column)" if binary else "")
        + ". Each cell shows the raw p-value and the Holm-adjusted one (over all pairs of that test); "
        "`*`: Holm-adjusted p < 0.05."
    )
    n_pairs = len(tests)
    caution = (
        f"{n_pairs} pairs are compared: at p < 0.05 about one pair in twenty looks different by chance alone, so the "
        "stars use Holm's adjustment, which keeps the chance of any false alarm over all pairs of a test below 5 %."
        if n_pairs > 1 else ""
    )
    return {
        "available": True,
        "intro": intro,
        "tables": [{"title": title, "table": table, "cls": "matrix split"} for title, table in (
            ("McNemar exact test, p-values (paired correctness)", mcnemar),
            ("Paired bootstrap of the AUC difference, row \u2212 column (p)", auc),
            ("DeLong's test of the AUC difference, row \u2212 column (p)", delong)) if table is not None],
        "readings": readings,
        "caution": caution,
        "n": n,
        "binary": binary,
    }
