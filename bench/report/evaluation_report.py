"""``bench evaluate``'s report: ``evaluation.json`` and ``predictions.csv`` in,
``evaluation.md`` and ``evaluation.html`` out, in the style of ``bench report``.

A pure function of what the evaluate command recorded: nothing here predicts, and the
only numbers computed are the curves the figures draw from the probabilities. Figures
are PNG files beside ``evaluation.md`` (relative links) and the same bytes are embedded
as base64 in ``evaluation.html``, a single file that can be mailed.

    md_path, html_path = write_evaluation_report(out, evaluation, predictions)
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from bench.schema import Source, metric_with_ci, to_float
from bench.report.build import TEMPLATES, _environment, write_pages
from bench.report.findings import Banner
from bench.report.formatting import DASH, FIGURE_PREFIX, Table, num, to_int
from bench.report.rendering import as_figure

#: Below this many evaluated images the report warns that the intervals are wide.
SMALL_SET = 100
MAX_OVERLAP_ROWS = 50
MAX_SKIPPED_ROWS = 30
#: (key in evaluation["results"], how the report names it, prefix of its predictions.csv columns)
VARIANTS = (("plain", "plain", ""), ("tta", "TTA flip", "tta_"))
FIGURE_KEYS = ("confusion", "roc-pr", "calibration", "decision-curve")
POINTS = {"youden": "Youden's J", "sensitivity": "sensitivity-first", "specificity": "specificity-first"}
SPLITS = {"train": "training", "val": "validation", "test": "test"}
#: (label, metric key of an evaluate() row, averaged over classes when there are 3+)
METRICS = (("accuracy", "accuracy", False), ("balanced accuracy", "balanced_accuracy", False),
           ("ROC AUC", "roc_auc", True), ("PR AUC (average precision)", "pr_auc", True),
           ("sensitivity (recall)", "recall", True), ("specificity", "specificity", True),
           ("precision (PPV)", "precision", True), ("F1", "f1", True),
           ("Brier score (lower is better)", "brier", False), ("Brier skill", "brier_skill", False))
SECTIONS = ("Summary", "Metrics", "Errors, curves and decisions", "Calibration", "Overlap with the run", "Data")


def _ci(row: dict, key: str, digits: int = 3) -> str:
    return metric_with_ci(row or {}, key, digits, style="dash", missing=DASH, source=Source.PLAIN)


def _variants(evaluation: dict) -> list[tuple[str, str, str, dict]]:
    """(key, label, column prefix, results) of the variants the evaluation holds."""
    results = evaluation.get("results") or {}
    return [(k, label, prefix, results[k]) for k, label, prefix in VARIANTS if results.get(k)]


def _splits(rows: list[dict]) -> str:
    names = list(dict.fromkeys(SPLITS.get(r.get("reference_split"), str(r.get("reference_split"))) for r in rows))
    return "/".join(names) or "own"


def _folder(root) -> str:
    return Path(str(root)).name or str(root)


def _sentence(text) -> str:
    return str(text)[:1].upper() + str(text)[1:]


def banners(evaluation: dict) -> list[Banner]:
    """Overlap found (excluded or kept), no overlap check, a small set, then the command's warnings."""
    out, overlap, folder = [], evaluation["overlap"], _folder(evaluation["data"]["root"])
    rows = overlap.get("rows") or []
    n = len({r.get("file") for r in rows})
    what = (f"{n} image{'s' * (n != 1)} in {folder} {'are copies' if n != 1 else 'is a copy'} of the run's "
            f"{_splits(rows)} images")
    were = "they were" if n != 1 else "it was"
    if overlap.get("checked") and rows and overlap.get("kept"):
        out.append(Banner("overlap_kept", "KEPT: this is not an external test", f"{what}; {were} kept "
                          "(--keep-overlap): the metrics below include images the model was trained, tuned or tested "
                          "on, so they overstate how it does on new images."))
    elif overlap.get("checked") and rows:
        out.append(Banner("overlap_excluded", "Overlap with the run's images", f"{what}; {were} excluded from "
                          "every number below (pass --keep-overlap to keep them). See section 5."))
    elif not overlap.get("checked"):
        reason = _sentence(overlap.get("reason") or "no reason recorded")
        out.append(Banner("no_overlap_check", "No overlap check", f"{reason}. Whether {folder} shares images with the "
                          "data the model was trained, tuned or tested on is unknown."))
    n, accuracy = evaluation["evaluated"]["n"], evaluation["results"]["plain"]["metrics"]
    if n < SMALL_SET:
        half = (to_float(accuracy.get("accuracy_ci_high")) - to_float(accuracy.get("accuracy_ci_low"))) / 2
        span = "" if math.isnan(half) else \
            f": the 95 % interval of accuracy spans \u00b1{100 * half:.0f} percentage points"
        out.append(Banner("small_set", "Small external set", f"Only {n} images were evaluated{span}. Intervals are "
                          "wide; differences smaller than them are noise."))
    out += [Banner("warning", "Warning", _sentence(w)) for w in evaluation.get("warnings") or []]
    return out


def _unit(row: dict, n) -> str:
    """What the intervals resample, as a sentence."""
    resamples, groups = to_int(row.get("ci_resamples")), to_int(row.get("ci_groups"))
    draws = f"{resamples} resamples" if resamples else "resamples"
    what = (f"{draws} of {f'the {groups} ' if groups else ''}duplicate groups (copies of one image within the data "
            "are drawn together)" if row.get("ci_unit") == "group" else f"{draws} of the {n} images")
    level = 100 * to_float(row.get("ci_level"), 0.95)
    return f"Intervals are {level:.0f} % percentile bootstrap intervals over {what}."


def summary(evaluation: dict) -> dict:
    """The summary paragraph and its note on the intervals."""
    model, variants, n = evaluation["model"], _variants(evaluation), evaluation["evaluated"]["n"]
    classes, plain = list(model["classes"]), variants[0][3]["metrics"]
    source = f"exported from run {model['run_name']}" if model.get("run_name") else "exported model"
    temperature = to_float(model.get("temperature"))
    calibration = ("no calibration temperature recorded" if math.isnan(temperature)
                   else f"probabilities calibrated with temperature {num(temperature, 2)}")
    text = (f"{model.get('backbone')} ({source}, {model.get('source')}; {model.get('image_size')} px input; "
            f"{calibration}) on {n} images of {evaluation['data']['root']} ({len(classes)} classes: "
            f"{', '.join(classes)}).")
    names = [("ROC AUC", "roc_auc"), ("accuracy", "accuracy"), ("sensitivity", "recall"),
             ("specificity", "specificity")]
    if len(classes) == 2:
        threshold = to_float(plain.get("threshold"), to_float(model.get("threshold")))
        point = POINTS.get(model.get("operating_point"), model.get("operating_point") or "default")
        positive = model.get("positive_class") or classes[1]
        head = f"At the {point} operating point (threshold {num(threshold)} on P({positive}))"
    else:
        head = "Deciding by the most probable class"
        names = [(name if key == "accuracy" else f"{name} (macro{' one-vs-rest' * (key == 'roc_auc')})", key)
                 for name, key in names]
    for _, label, _, res in variants:
        lead = head if label == "plain" else "With test-time augmentation (the image and its left-right flip averaged)"
        text += f" {lead}: " + ", ".join(f"{name} {_ci(res['metrics'], key)}" for name, key in names) + "."
    return {"text": text, "note": _unit(plain, n)}


def _macro(label: str) -> str:
    """``"F1 (macro)"``, ``"sensitivity (recall, macro)"``."""
    return label[:-1] + ", macro)" if label.endswith(")") else label + " (macro)"


def metrics_table(evaluation: dict) -> Table:
    variants = _variants(evaluation)
    multi = len(evaluation["model"]["classes"]) > 2
    rows = [[_macro(label) if multi and macro else label, *[_ci(v[3].get("metrics"), key) for v in variants]]
            for label, key, macro in METRICS]
    rows.append(["images", *[str(to_int((v[3].get("metrics") or {}).get("n"))) for v in variants]])
    if not multi:
        rows.append(["threshold", *[num((v[3].get("metrics") or {}).get("threshold")) for v in variants]])
    return Table(["metric", *[f"{v[1]} (95 % CI)" for v in variants]], rows, [False] + [True] * len(variants))


def operating_points_table(evaluation: dict) -> Table | None:
    chosen, rows = evaluation["model"].get("operating_point"), []
    for _, label, _, res in _variants(evaluation):
        points = res.get("operating_points") or {}
        for name in sorted(points, key=lambda p: (list(POINTS).index(p) if p in POINTS else len(POINTS), p)):
            r = points[name]
            rows.append([label, POINTS.get(name, name) + (" \u2605" if name == chosen else ""), num(r.get("threshold")),
                         _ci(r, "sensitivity"), _ci(r, "specificity"), num(r.get("ppv"), 2), num(r.get("npv"), 2),
                         " / ".join(str(to_int(r.get(k))) for k in ("tp", "fp", "tn", "fn"))])
    return Table(["", "operating point", "threshold", "sensitivity (95 % CI)", "specificity (95 % CI)", "PPV", "NPV",
                  "TP / FP / TN / FN"], rows, [False, False] + [True] * 6) if rows else None


def calibration_table(evaluation: dict) -> Table:
    rows = []
    for _, label, _, res in _variants(evaluation):
        c = res.get("calibration") or {}
        rows.append([label, _ci(c, "ece"), num(c.get("slope"), 2), num(c.get("intercept"), 2),
                     num(c.get("brier_skill"), 2), str(c.get("n_bins", DASH))])
    return Table(["", "ECE (95 % CI)", "slope", "intercept", "Brier skill", "bins"], rows, [False] + [True] * 5)


def overlap_table(overlap: dict) -> Table | None:
    rows = [[str(r.get("file")), str(r.get("label")), str(r.get("kind")), num(r.get("layout"), 2),
             DASH if to_int(r.get("details")) is None else str(to_int(r.get("details"))),
             str(r.get("reference")) + ("" if r.get("reference_label") in (None, r.get("label"))
                                        else f" (filed as {r.get('reference_label')})"),
             SPLITS.get(r.get("reference_split"), str(r.get("reference_split")))] for r in overlap.get("rows") or []]
    return Table(["file", "label", "kind", "layout", "keypoints", "copy of", "its split"], rows[:MAX_OVERLAP_ROWS],
                 [False, False, False, True, True, False, False], max(0, len(rows) - MAX_OVERLAP_ROWS)) \
        if rows else None


def data_section(evaluation: dict) -> dict:
    data, evaluated = evaluation["data"], evaluation["evaluated"]
    found, used = data.get("class_counts") or {}, evaluated.get("class_counts") or {}
    classes = list(dict.fromkeys([*evaluation["model"]["classes"], *found, *used]))
    skipped = [[str(s.get("path")), str(s.get("reason"))] for s in data.get("skipped") or []]
    groups = to_int(data.get("n_groups"))
    return {
        "root": data["root"],
        "text": f"{data.get('n_files')} files, {data.get('n_images')} readable images, {evaluated['n']} evaluated.",
        "counts": Table(["class", "images found", "evaluated"],
                        [[c, str(found.get(c, 0)), str(used.get(c, 0))] for c in classes], [False, True, True]),
        "skipped": Table(["file", "reason"], skipped[:MAX_SKIPPED_ROWS], more=max(0, len(skipped) - MAX_SKIPPED_ROWS))
        if skipped else None,
        "groups": None if groups is None else f"{groups} duplicate groups among the {data.get('n_images')} images: "
        "copies of one image within the data fall in one group, and the bootstrap draws groups.",
    }


def _frames(evaluation: dict, predictions) -> dict:
    """Name -> a predictions frame with ``label`` and ``prob_<class>`` columns, per variant (for the figures)."""
    import pandas as pd

    classes = list(evaluation["model"]["classes"])
    rows = predictions[predictions["label"].astype(str).isin(classes).to_numpy()]
    return {label: pd.DataFrame({"label": rows["label"].astype(str).to_numpy(),
                                 **{f"prob_{c}": rows[f"{prefix}prob_{c}"].to_numpy() for c in classes}})
            for _, label, prefix, _ in _variants(evaluation)
            if len(rows) and all(f"{prefix}prob_{c}" in rows for c in classes)}


def make_figures(evaluation: dict, predictions) -> dict:
    """Confusion matrices, ROC/PR, reliability and (binary) decision curves: {key: Figure or None}."""
    from bench.report import figures as F

    classes, variants = list(evaluation["model"]["classes"]), _variants(evaluation)
    frames = _frames(evaluation, predictions)
    colours = F.backbone_colours([label for _, label, _, _ in variants])
    point = POINTS.get(evaluation["model"].get("operating_point"), "chosen")
    at = f"at the {point} operating point" if len(classes) == 2 else "deciding by the most probable class"
    out = dict.fromkeys(FIGURE_KEYS)
    with F.style():
        fig, axes = F.new_figure(1.2 + 3.2 * len(variants), 2.4 + 0.3 * len(classes), ncols=len(variants))
        for ax, (_, label, _, res) in zip(axes, variants):
            F.confusion_panel(ax, (res.get("metrics") or {}).get("confusion_matrix"), classes, f"Confusion ({label})")
        out["confusion"] = as_figure("confusion", fig, "Confusion matrix",
                                     f"Counts and share of each true class, {at}.")
        if frames:
            out["roc-pr"] = as_figure("roc-pr", F.roc_pr(frames, classes, colours), "ROC and precision\u2013recall "
                                      "curves", "Every evaluated image. AP: average precision.")
            out["calibration"] = as_figure(
                "calibration", F.reliability(frames, classes, colours, where="external data"), "Reliability diagram",
                "Predicted probability against the observed frequency in equal-count bins, bars the 95 % Wilson "
                "intervals; points on the diagonal are well calibrated. ECE: expected calibration error over these "
                "bins. Below: how the predicted probabilities are spread.")
        curves = {label: {"decision_curve": res.get("decision_curve")} for _, label, _, res in variants}
        fig = F.decision_curves(curves, classes, colours) if len(classes) == 2 else None
        if fig is not None:
            fig.axes[0].set_title("Decision curve (external data)")
        out["decision-curve"] = as_figure(
            "decision-curve", fig, "Decision curve",
            "Net benefit = TP/N \u2212 FP/N \u00b7 t/(1\u2212t) of acting on the probability at threshold t (Vickers "
            "& Elkin 2006), bands the 95 % bootstrap interval, against treating every image as positive and treating "
            "none. The model is worth using at the thresholds where it lies above both.")
    return out


def context(evaluation: dict, predictions) -> dict:
    model, overlap = evaluation["model"], evaluation["overlap"]
    classes = list(model["classes"])
    binary = len(classes) == 2
    head = (TEMPLATES / "_style.html.j2").read_text(encoding="utf-8")
    style = re.search(r"<style>.*?</style>", head, flags=re.DOTALL)
    from markupsafe import Markup

    return {
        "title": f"bench evaluation: {model.get('backbone')} on {_folder(evaluation['data']['root'])}",
        "created": evaluation.get("created"), "command": evaluation.get("command"), "classes": classes,
        "style": Markup(style.group(0) if style else ""), "sections": SECTIONS,
        "banners": banners(evaluation), "summary": summary(evaluation), "metrics": metrics_table(evaluation),
        "tta": any(k == "tta" for k, *_ in _variants(evaluation)),
        "points": operating_points_table(evaluation) if binary else None,
        "points_note": (f"Thresholds on P({classes[1]}) the export records, chosen on the run's calibrated validation "
                        "predictions (\u2605: the one the metrics above use); sensitivity and specificity on these "
                        "images with 95 % bootstrap CIs. PPV and NPV hold for this data's prevalence only.")
        if binary else "Operating points and decision curves are binary-only; with 3+ classes the decision is the "
                       "most probable class.",
        "calibration": calibration_table(evaluation),
        "calibration_note": "ECE over equal-count bins with a 95 % bootstrap CI (biased upwards on small sets; read "
                            "its interval); calibration slope (1 = ideal, < 1 = too extreme) and intercept "
                            "(calibration-in-the-large, 0 = ideal); Brier skill against a constant forecast of the "
                            "class shares (1 perfect, 0 no better). A dash: undefined.",
        "overlap": overlap, "overlap_table": overlap_table(overlap),
        "data": data_section(evaluation), "fig": make_figures(evaluation, predictions),
    }


def write_evaluation_report(out_dir: Path, evaluation: dict, predictions) -> tuple[Path, Path]:
    """Write ``evaluation.md`` (with its PNG figures beside it) and the self-contained
    ``evaluation.html`` into ``out_dir``; returns (markdown path, html path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = context(evaluation, predictions)
    env = _environment()
    markdown = env.get_template("evaluation.md.j2").render(**ctx)
    html = env.get_template("evaluation.html.j2").render(**ctx)
    figures = [f for f in ctx["fig"].values() if f is not None]
    # only this report's own figure names: an evaluation may share its folder with other files
    stale = [f"{FIGURE_PREFIX}{key}.png" for key, f in ctx["fig"].items() if f is None]
    return write_pages(out, "evaluation", markdown, html, figures, stale)
