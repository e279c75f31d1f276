"""model_card.md of an export: data, split, selection rule, test metrics, limitations; for a
cross-validated run (``--cv``) the CV estimate as the expected performance, and the
holdout's metrics only when ``--test-size`` kept one."""

from __future__ import annotations

import logging
import math

from bench.deploy.formats import FILES
from bench.deploy.model_index import front_matter
from bench.deploy.run_info import RunInfo
from bench.deploy.verify import TFLITE_TOLERANCE
from bench.evaluate.crossval import CV_METRIC
from bench.evaluate.coverage import coverage_sentence
from bench.schema import Source, metric_with_ci, to_float

log = logging.getLogger(__name__)


TEMPLATE = "model_card.md.j2"
#: Test metrics the card lists, when the run has them.
CARD_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "precision", "recall", "specificity")
#: Cross-validated metrics the card lists for a --cv run (each with its group-bootstrap CI).
CV_CARD_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "recall", "specificity", "brier")


def model_card(info: RunInfo, labels: dict, formats: list[str], checks: dict) -> str:
    """The card: YAML front matter with the metrics and their intervals in Hugging Face's
    ``model-index`` layout (:mod:`bench.deploy.model_index`), then the Markdown of
    ``templates/model_card.md.j2`` filled from the run's files."""
    import jinja2

    run, row = info.run, info.row
    config = run.get("config", {})
    params, trainable = row.get("params_total"), row.get("params_trainable")
    parameters = (f"Parameters: {params:,} total, {trainable:,} trainable during fine-tuning"
                  if isinstance(params, int) and isinstance(trainable, int) else f"Parameters: {row.get('params_total', '-')}")
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.deploy", "templates"), keep_trailing_newline=False,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["code"] = lambda value: f"`{value}`"
    cv = cv_context(info)
    text = env.get_template(TEMPLATE).render(
        backbone=info.backbone, run_name=config.get("name", info.run_dir.name), run=run, row=row, config=config,
        split=info.split, classes=info.classes, size=info.image_size, labels=labels, formats=formats,
        synthetic=bool(run.get("synthetic_data")), weights=str(row.get("weights", config.get("weights"))),
        machine=run.get("machine", {}), recommended=info.recommended, parameters=parameters,
        hyperparameters=", ".join(f"{k[3:]}={v}" for k, v in sorted(row.items()) if k.startswith("hp_")),
        files=[FILES[f] for f in formats], n_ok=sum(1 for r in info.leaderboard if r.get("status") == "ok"),
        metrics=[(name.replace("_", " "), metric_with_ci(row, name, ci_digits=3))
                 for name in CARD_METRICS if row.get(f"test_{name}") is not None],
        checks=_checks_lines(checks, cv), tflite_tolerance=TFLITE_TOLERANCE, nan=float("nan"), cv=cv,
    )
    return front_matter(info) + "\n" + text.rstrip("\n") + "\n"


def _count(value) -> int | None:
    v = to_float(value)
    return None if math.isnan(v) else int(v)


def cv_context(info: RunInfo) -> dict | None:
    """What the card says about a cross-validated run (``bench run --cv K``); None for a
    single-split run. The CV estimate is the expected performance; the holdout
    (``--test-size``), when there is one, is the final model's only untouched test."""
    row, config = info.row, info.run.get("config", {})
    if row.get("cv_objective") is None and not config.get("cv"):
        return None
    objective = row.get("objective", config.get("objective"))
    metric = CV_METRIC.get(objective, "roc_auc")
    holdout_n = _count(row.get("test_n")) or 0
    return {
        "k": _count(row.get("cv_k")) or config.get("cv"),
        "repeats": _count(row.get("cv_repeats")) or config.get("repeats") or 1,
        "n": _count(row.get("cv_n")),
        "images": _count(row.get("cv_images")),
        "groups": _count(row.get("cv_groups")),
        "metric": metric.replace("_", " "),
        "estimate": metric_with_ci(row, metric, ci_digits=3, source=Source.OUT_OF_FOLD),
        "fold_mean": to_float(row.get(f"cv_{metric}_fold_mean")),
        "fold_low": to_float(row.get(f"cv_{metric}_fold_ci_low")),
        "fold_high": to_float(row.get(f"cv_{metric}_fold_ci_high")),
        "coverage": coverage_sentence(metric),
        "probability_best": to_float(row.get("probability_best")),
        "rule": row.get("selection_rule"),
        "metrics": [(name.replace("_", " "), metric_with_ci(row, name, ci_digits=3, source=Source.OUT_OF_FOLD))
                    for name in CV_CARD_METRICS if row.get(f"cv_{name}") is not None],
        "holdout": holdout_n > 0 and row.get("test_accuracy") is not None,
        "holdout_n": holdout_n,
        "test_size": config.get("test_size"),
    }


def _checks_lines(checks: dict, cv: dict | None = None) -> list[str]:
    if not checks.get("run"):
        if cv is not None and not cv["holdout"]:
            return ["Not run: the check compares the export with the run's predictions on its test images, and this "
                    "cross-validated run kept no holdout (no --test-size) for the final model "
                    f"({checks.get('reason', 'not requested')})."]
        return [f"Not run: {checks.get('reason', 'not requested')}."]
    out = [f"A fresh Python process loaded the export and predicted the run's {checks.get('n_images')} "
           f"{checks.get('images', 'test')} images from their original files:", ""]
    for fmt, res in checks.get("formats", {}).items():
        out.append(
            f"- {fmt}: largest probability difference {res['max_abs_diff']:.2e} (tolerance {res['tolerance']:g}), "
            f"{res['label_mismatches']} label differences"
            + (f" ({res['label_mismatches_near_threshold']} within tolerance of the threshold)"
               if res.get("label_mismatches_near_threshold") else "")
            + (": passed" if res["passed"] else ": FAILED")
        )
    return out


def log_checks(checks: dict) -> None:
    """The fidelity check's result, one log line per format."""
    if not checks.get("run"):
        log.info(f"fidelity check skipped: {checks.get('reason')}")
        return
    for line in _checks_lines(checks)[2:]:
        log.info("  " + line[2:])
