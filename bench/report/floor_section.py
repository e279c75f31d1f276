"""The report's floor: the floor baselines' estimates and every backbone against the best one.

The floor baselines (:mod:`bench.evaluate.floor`) are scored on the same test split, or
the same out-of-fold predictions, as the backbones. The best of them (by the estimate
that ranks the backbones: the validation objective, or the cross-validated one) is
compared with each backbone by the paired tests the statistics section uses between
backbones: McNemar's exact test and DeLong's test, by duplicate group, Holm-adjusted over
the backbones (:func:`bench.evaluate.floor.versus_floor`). The section's sentence says in
words whether any backbone beats it beyond noise; ``bench run`` prints it under its verdict.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.evaluate.floor import READING_WORDS as READING
from bench.evaluate.floor import best_floor, describe, floor_sentence, p_values_text, reading, versus_floor
from bench.report.formatting import DASH, Table, fmt_signed
from bench.report.load import RunData
from bench.report.sections import estimate_text, ranking_metric
from bench.schema import Source, label, to_float



def _comparable(data: RunData, b) -> pd.DataFrame | None:
    """``b``'s held-out predictions as the paired tests take them: the test split's, or
    (out of fold) every repeat's with a file key ``r<repeat>/<file>`` and its group."""
    table = b.predictions(data.source)
    if table is None or not len(table):
        return None
    if data.source is Source.OUT_OF_FOLD:
        table = table.copy()
        table["file"] = [f"r{r}/{f}" for r, f in zip(table["repeat"], table["file"])]
    return table


def _groups(data: RunData, tables: list[pd.DataFrame]) -> dict | None:
    if data.source is Source.OUT_OF_FOLD:
        return {f: str(g) for t in tables for f, g in zip(t["file"], t["group"])}
    from bench.report.split_section import groups_of_test_images

    return groups_of_test_images(data, dict(enumerate(tables)))


def versus_best_floor(data: RunData) -> tuple:
    """The best floor baseline of the run (by the estimate that ranks the backbones) and
    each finished backbone's paired tests against it (:func:`versus_floor`); ``(None, [])``
    when no floor baseline finished."""
    key = "cv_objective" if data.source is Source.OUT_OF_FOLD else "val_objective"
    best_row = best_floor([b.row for b in data.floor], key, data.minimise)
    if best_row is None:
        return None, []
    best = next(b for b in data.floor if b.name == best_row["backbone"])
    floor_table = _comparable(data, best)
    predictions = {b.name: t for b in data.ok if (t := _comparable(data, b)) is not None}
    if floor_table is None or not predictions:
        return best, []
    groups = _groups(data, [floor_table, *predictions.values()])
    return best, versus_floor(predictions, best.name, floor_table, data.classes, seed=data.seed, groups=groups)


def floor_section(data: RunData) -> dict:
    """The floor table, the tests against the best floor baseline and the sentence."""
    if not data.floor:
        return {"available": False, "sentence": None}
    source, metric = data.source, ranking_metric(data)
    headers = ["floor baseline", "what it is", f"{source.label} accuracy", f"{source.label} {label(metric)}",
               "chosen on"]
    rows = [[b.name, describe(b.name) if b.ok else f"failed: {b.row.get('message')}",
             estimate_text(b.row, "accuracy", source), estimate_text(b.row, metric, source),
             _chosen(b.row)] for b in data.floor]
    table = Table(headers, rows, [False, False, True, True, False])
    best, tests = versus_best_floor(data)
    if best is None:
        return {"available": True, "table": table, "tests": None, "sentence": "No floor baseline finished."}
    estimate = f"{label(metric)} {estimate_text(best.row, metric, source)}"
    sentence = floor_sentence(best.name, estimate, tests, source.label)
    test_rows = [[t.a, DASH if math.isnan(to_float(t.auc_diff)) else fmt_signed(t.auc_diff),
                  p_values_text(t) or DASH, READING[reading(t)]] for t in tests]
    tests_table = Table(["backbone", f"AUC difference vs {best.name}", "paired tests (Holm over backbones)",
                         "reading"], test_rows, [False, True, False, False]) if tests else None
    return {"available": True, "table": table, "tests": tests_table, "sentence": sentence, "best": best.name,
            "intro": _intro(data, best.name)}


def _chosen(row: dict) -> str:
    c = to_float(row.get("floor_c"))
    return DASH if math.isnan(c) else f"C = {c:g} on validation"


def _intro(data: RunData, best: str) -> str:
    where = ("their out-of-fold predictions (the same outer folds)" if data.source is Source.OUT_OF_FOLD
             else "the same test images")
    return ("Floor baselines never look at anatomy, or only through the frozen backbone: the majority class, "
            "a logistic regression on image-content statistics (intensity histogram, texture, border) and, per "
            f"backbone, a linear probe on its cached frozen features. They are scored on {where} as the backbones, "
            "with the same intervals, and are never the model to deploy. Each backbone is compared with the best "
            f"of them ({best}) by McNemar's exact test and DeLong's test, Holm-adjusted over the backbones.")
