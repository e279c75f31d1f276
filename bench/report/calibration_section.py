"""The report's "Probabilities and decisions" part: calibration before and after, the
operating points, and test accuracy per file subgroup (a shortcut check on the model).

Reads each backbone's ``calibration.json`` (:mod:`bench.evaluate.decisions`), its test
predictions and the scan's per-image attributes (``dataset.json``); computes nothing that
the run did not record except the subgroup accuracies, which are a function of
``test_predictions.csv``.
"""

from __future__ import annotations

import math

from bench.schema import Source, metric_with_ci, to_float
from bench.report.formatting import DASH, Table, num

POINT_NAMES = {"youden": "Youden's J (default)", "sensitivity": "sensitivity first", "specificity": "specificity first"}
#: How this part names the predictions of each source, and what it says about them.
WHERE = {Source.TEST: "test", Source.OUT_OF_FOLD: "out-of-fold"}
CALIBRATED_ON = {
    Source.TEST: "on the test split",
    Source.OUT_OF_FOLD: "on the pooled out-of-fold predictions (each image calibrated by the fold that held it out; T in "
                        "the table: the median over the folds)",
}
SKILL_REFERENCE = {Source.TEST: "the training prevalence", Source.OUT_OF_FOLD: "the out-of-fold class shares"}
POINTS_TITLE = {Source.TEST: "Operating points",
                Source.OUT_OF_FOLD: "Operating points (out of fold, each image at its own fold's thresholds)"}
SUBGROUP_SCOPE = {Source.TEST: "", Source.OUT_OF_FOLD: " (all repeats)"}


def read_calibration(data) -> dict:
    """Backbone name -> its calibration.json (backbones without one left out)."""
    out = {}
    for b in data.ok:
        calibration = data.files.backbone(b.name).calibration()
        if calibration is not None:
            out[b.name] = calibration
    return out


def _with_ci(summary: dict, key: str) -> str:
    return metric_with_ci(summary, key, style="dash", missing=DASH, source=Source.PLAIN)


def _pair(before: dict, after: dict, key: str) -> str:
    return f"{num(before.get(key), 2)} \u2192 {num(after.get(key), 2)}"


def calibration_table(reports: dict) -> Table | None:
    rows = []
    for name, rep in reports.items():
        before, after = rep.get("before"), rep.get("after")
        if not before or not after:
            continue
        weights = rep.get("class_weights")
        rows.append([name, num(rep.get("temperature"), 2), "yes" if weights else "no",
                     _with_ci(before, "ece"), _with_ci(after, "ece"), _pair(before, after, "slope"),
                     _pair(before, after, "intercept"), _pair(before, after, "brier_skill"), str(after.get("n_bins"))])
    if not rows:
        return None
    return Table(["backbone", "T", "prior shift undone", "ECE before (95 % CI)", "ECE after (95 % CI)",
                  "slope", "intercept", "Brier skill", "bins"], rows,
                 [False, True, False, True, True, True, True, True, True])


def calibration_note(reports: dict, source: Source = Source.TEST) -> str:
    fitted = next((r for r in reports.values() if r.get("fitted_on")), None)
    where = fitted["fitted_on"] if fitted else "validation"
    on, reference = CALIBRATED_ON[source], SKILL_REFERENCE[source]
    return (f"Every probability in this report is calibrated: softmax((log p \u2212 log w) / T), w the class weights "
            f"the model trained with (undoing the pull of balanced weights towards equal classes), T a temperature "
            f"fitted on {where} (maximum a posteriori, prior on log T with sd 0.5). Before \u2192 after, {on}: "
            "ECE over equal-count bins with a 95 % bootstrap CI over duplicate groups (ECE is biased upwards on "
            "small test sets; read its interval); calibration slope (1 = ideal, < 1 = too extreme) and "
            f"intercept (calibration-in-the-large, 0 = ideal); Brier skill against {reference} "
            "(1 perfect, 0 no better than the prevalence). A dash: undefined, e.g. the slope when the test images "
            "are perfectly separated.")


def operating_points_table(reports: dict, where: str = "test") -> Table | None:
    rows = []
    for name, rep in reports.items():
        chosen, tested = rep.get("operating_points") or {}, rep.get("test_operating_points") or {}
        for point, label in POINT_NAMES.items():
            if point not in chosen or point not in tested:
                continue
            c, t = chosen[point], tested[point]
            rows.append([name, label, num(c["threshold"], 3),
                         f"{num(c.get('val_sensitivity'), 2)} / {num(c.get('val_specificity'), 2)}",
                         metric_with_ci(t, "sensitivity", style="dash", missing=DASH, source=Source.PLAIN),
                         metric_with_ci(t, "specificity", style="dash", missing=DASH, source=Source.PLAIN),
                         num(t.get("ppv"), 2), num(t.get("npv"), 2)])
    if not rows:
        return None
    return Table(["backbone", "operating point", "threshold" if where == "test" else "threshold (median of folds)",
                  "val sens / spec", f"{where} sensitivity (95 % CI)", f"{where} specificity (95 % CI)", "PPV", "NPV"],
                 rows,
                 [False, False, True, True, True, True, True, True])


def operating_points_note(reports: dict, classes: list[str]) -> str:
    point = next((r["operating_points"] for r in reports.values() if r.get("operating_points")), None)
    if not point:
        return ""
    sens, spec = point.get("sensitivity", {}), point.get("specificity", {})
    small = ""
    if sens.get("n_val_positive") is not None:
        small = (f" On this validation split \"sensitivity \u2265 {sens.get('minimum')}\" allows "
                 f"{sens.get('allowed_errors')} missed of {sens.get('n_val_positive')} positives and \"specificity "
                 f"\u2265 {spec.get('minimum')}\" {spec.get('allowed_errors')} false alarms of "
                 f"{spec.get('n_val_negative')} negatives, so the test values, not the minima, say what a clinic gets.")
    return (f"Thresholds on P({classes[1]}) chosen on the calibrated validation predictions: Youden's J (the default "
            "decision), the highest-specificity threshold that keeps validation sensitivity at the minimum "
            "(--min-sensitivity), and the highest-sensitivity one that keeps specificity at its minimum "
            f"(--min-specificity). `bench predict --operating-point` uses them.{small} PPV and NPV hold for the test "
            "split's prevalence only.")


def subgroups(data, recommended) -> tuple[Table | None, str | None]:
    """Test (``--cv``: out-of-fold, all repeats) accuracy per colour mode, file format and
    size bucket of the recommended model."""
    from bench.evaluate.subgroups import subgroup_accuracy, subgroup_attributes, subgroup_summary

    if recommended is None:
        return None, None
    preds = recommended.predictions(data.source)
    if preds is None or not len(preds) or "correct" not in preds:
        return None, None
    records = {r["path"]: r for r in data.dataset.get("files") or []}
    if not records or not all(f in records for f in preds["file"]):
        return None, None
    groups_of = {f["path"]: str(f["group"]) for f in data.split.get("files") or [] if f.get("group") is not None}
    groups = [groups_of.get(f, f) for f in preds["file"]]
    attributes = [subgroup_attributes(_Record(records[f])) for f in preds["file"]]
    rows = subgroup_accuracy(list(preds["correct"]), attributes, labels=[str(v) for v in preds["label"]],
                             groups=groups, seed=data.seed)
    table_rows = []
    for r in rows:
        ci = "" if math.isnan(to_float(r.get("ci_low"))) else f" [{num(r['ci_low'], 2)}, {num(r['ci_high'], 2)}]"
        diff = DASH
        if not r.get("only_value") and not math.isnan(to_float(r.get("difference"))):
            low, high = to_float(r.get("difference_ci_low")), to_float(r.get("difference_ci_high"))
            diff = num(r["difference"], 2) + ("" if math.isnan(low) else f" [{num(low, 2)}, {num(high, 2)}]")
        mix = ", ".join(f"{c} {n}" for c, n in (r.get("class_counts") or {}).items())
        flag = "\u26a0" if r.get("flag") else ("too few" if r.get("too_few") else "")
        table_rows.append([r["attribute"], str(r["value"]), str(r["n"]), mix, num(r["accuracy"], 2) + ci, diff, flag])
    table = Table(["attribute", "value", "images", "classes", "accuracy [95 % CI]", "vs the rest [95 % CI]", ""],
                  table_rows, [False, False, True, False, True, True, False])
    return table, subgroup_summary(rows)


class _Record:
    """A dataset.json record with the attributes subgroup_attributes reads."""

    def __init__(self, row: dict):
        self.width, self.height = int(row.get("width") or 1), int(row.get("height") or 1)
        self.mode, self.format = row.get("mode"), row.get("format")


def cv_reports(data) -> dict:
    """--cv: calibration.json-like summaries of every backbone's pooled out-of-fold
    predictions: before (``raw_prob_*``) and after (``prob_*``) each fold's own
    calibration, with the folds' temperatures, and the operating points with each image
    decided at its own fold's threshold."""
    import numpy as np

    from bench.evaluate.calibration import calibration_summary
    from bench.evaluate.crossval import at_own_threshold
    from bench.evaluate.decisions import decision_curve_record
    from bench.evaluate.operating_points import evaluate_operating_points
    from bench.tables import probability_matrix

    out = {}
    for b in data.ok:
        oof = b.oof
        raw_columns = [f"raw_prob_{c}" for c in data.classes]
        if oof is None or not len(oof) or not all(c in oof for c in raw_columns):
            continue
        index = {c: i for i, c in enumerate(data.classes)}
        y = np.array([index[str(v)] for v in oof["label"]])
        groups = np.asarray(oof["group"], dtype=object)
        after = probability_matrix(oof, data.classes)
        before = np.column_stack([np.asarray(oof[c], dtype=np.float64) for c in raw_columns])
        prevalence = np.bincount(y, minlength=len(data.classes)) / len(y)
        fitted = {}
        for repeat, fold in sorted({(int(r), int(f)) for r, f in zip(oof["repeat"], oof["fold"])}):
            calibration = data.files.fold(repeat, fold, b.name).calibration()
            if calibration is not None:
                fitted[(repeat, fold)] = calibration
        temps = [f["temperature"] for f in fitted.values()]
        report = {
            "temperature": float(np.median(temps)) if temps else None,
            "temperature_range": [min(temps), max(temps)] if temps else None,
            "class_weights": next((f.get("class_weights") for f in fitted.values()), None),
            "fitted_on": f"each outer fold's inner validation split ({len(fitted)} folds)",
            "before": calibration_summary(y, before, prevalence=prevalence, groups=groups, seed=data.seed),
            "after": calibration_summary(y, after, prevalence=prevalence, groups=groups, seed=data.seed),
        }
        if len(data.classes) == 2 and len(fitted) == len({(r, f) for r, f in zip(oof["repeat"], oof["fold"])}):
            keys = list(zip(oof["repeat"].astype(int), oof["fold"].astype(int)))
            chosen, tested = {}, {}
            for point in POINT_NAMES:
                t = np.array([fitted[k]["operating_points"][point]["threshold"] for k in keys], dtype=float)
                # each image decided at its own fold's threshold: a 0.5 cut of the shifted scores
                row = evaluate_operating_points(y, at_own_threshold(after[:, 1], t), {point: 0.5}, groups=groups,
                                                seed=data.seed)[point]
                per_fold = [f["operating_points"][point] for f in fitted.values()]
                chosen[point] = {"threshold": float(np.median(t)),  # val rates: the folds' mean
                                 "val_sensitivity": float(np.nanmean([f["val_sensitivity"] for f in per_fold])),
                                 "val_specificity": float(np.nanmean([f["val_specificity"] for f in per_fold]))}
                tested[point] = {**row, "threshold": chosen[point]["threshold"]}
            report["operating_points"], report["test_operating_points"] = chosen, tested
            report["decision_curve"] = decision_curve_record(y, after[:, 1], groups, data.seed)
        out[b.name] = report
    return out


def section(data, reports: dict) -> dict:
    """The decision part of the report from ``reports`` (a design's decision reports: :func:`read_calibration` of a single split, :func:`cv_reports` of a cross-validated run)."""
    recommended = next((b for b in data.ok if b.row.get("rank") == 1), None)
    table, summary = subgroups(data, recommended)
    binary = len(data.classes) == 2
    return {
        "table": calibration_table(reports),
        "note": calibration_note(reports, data.source) if reports else "",
        "points": operating_points_table(reports, WHERE[data.source]) if binary else None,
        "points_title": POINTS_TITLE[data.source],
        "points_note": operating_points_note(reports, data.classes) if binary else
        "Operating points and decision curves are binary-only; with 3+ classes the decision is the most probable "
        "class.",
        "subgroups": table,
        "subgroups_model": recommended.name if recommended is not None else None,
        "subgroups_where": WHERE[data.source],
        "subgroups_summary": summary,
        "subgroups_note": (
            f"Accuracy of the recommended model's {WHERE[data.source]} decisions{SUBGROUP_SCOPE[data.source]} per "
            "colour mode, file format and size bucket (longer side), with 95 % bootstrap CIs over duplicate groups; "
            "\"vs the rest\": the difference from the other images of that attribute (\u26a0: its interval excludes "
            "0; no correction for the many subgroups). A subgroup of one class measures that class's sensitivity or "
            "specificity, not the attribute."),
        "where": WHERE[data.source],
    }
