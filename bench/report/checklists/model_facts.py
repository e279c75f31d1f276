"""Facts about the models, their evaluation, the checks and the results (see
:mod:`bench.report.checklists.evidence`)."""

from __future__ import annotations

from bench.report.checklists.facts import Fact, Run, _ci, _n, _objective, _plural
from bench.runfolder import (CALIBRATION_JSON, GRADCAM_JSON, GRADCAM_PNG, LEADERBOARD_JSON, OOF_PREDICTIONS,
                             RUN_JSON, SPLIT_JSON, TEST_PREDICTIONS, TRIALS_CSV)
from bench.report.formatting import flatten_limited
from bench.schema import Estimate, Source, metric, to_float

#: Metrics a leaderboard row may hold, in the order the facts name them.
METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "precision", "recall", "specificity",
           "brier", "brier_skill", "ece", "calibration_slope", "calibration_intercept")

#: Labels of the calibration metrics, which the schema does not name.
LABELS = {"ece": "ECE", "calibration_slope": "calibration slope", "calibration_intercept": "calibration intercept"}


# --------------------------------------------------------------------------- the models


def model(r: Run) -> Fact | None:
    row = r.row
    if r.best is None or row.get("hp_pooling") is None:
        return None
    params = _n(row.get("params_total"))
    output = "one sigmoid output" if len(r.data.classes) == 2 else "a softmax over the classes"
    return r.fact(f"{r.best.name}: image backbone at {_n(row.get('image_size'))} px, then {row.get('hp_pooling')} "
                  f"pooling, {_n(row.get('hp_dense_layers'))} dense layer(s) and {output}; top "
                  f"{_n(row.get('hp_unfreeze'))} block(s) fine-tuned; {params:,} parameters "
                  f"({_n(row.get('params_trainable')):,} trainable)",
                  (LEADERBOARD_JSON, r.best_file("best_model.keras")), ("per_backbone",))


def software(r: Run) -> Fact | None:
    versions, machine = r.data.run.get("versions") or {}, r.data.run.get("machine") or {}
    if not versions:
        return None
    shown = ", ".join(f"{k} {versions[k]}" for k in ("bench", "python", "tensorflow", "keras", "keras-tuner",
                                                       "scikit-learn", "numpy") if k in versions)
    return r.fact(f"{shown}; machine {machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPUs",
                  (RUN_JSON,), ("reproduce",))


def init(r: Run) -> Fact | None:
    weights = r.config.get("weights")
    if not weights:
        return None
    what = {"imagenet": "ImageNet weights (transfer learning)", "none": "random weights (no transfer learning)"}
    return r.fact(f"backbone weights: {what.get(weights, weights)}; heads start at random, seed "
                  f"{r.config.get('seed')}", (RUN_JSON, LEADERBOARD_JSON))


def training(r: Run) -> Fact | None:
    c = r.config
    if not c.get("epochs"):
        return None
    trials = [f"{b.name}/{TRIALS_CSV}" for b in r.data.backbones]
    done = sum(_n(b.row.get("trials_done")) for b in r.data.backbones)
    limited = flatten_limited(r.data.backbones)
    dense = (f"dense layers (none after a flattened map where they would exceed {_n(c.get('max_head_weights')):,} "
             "weights)" if limited else "dense layers")
    return r.fact(f"{c.get('tuner')} search of up to {_plural(_n(c.get('max_trials')), 'trial')} per backbone over "
                  "learning rate, "
                  f"pooling, {dense} and fine-tuning depth (up to {c.get('max_unfreeze')} blocks); up to "
                  f"{c.get('epochs')} epochs with early stopping (patience {c.get('patience', '?')}), batch "
                  f"{c.get('batch_size')}, class weights {'on' if c.get('class_weights', True) else 'off'}, "
                  f"augmentation {'on' if c.get('augment') else 'off'}; {_plural(done, 'trial model')} trained",
                  (RUN_JSON, *trials), ("search",))


def selection(r: Run) -> Fact | None:
    if r.best is None:
        return None
    rank = "their cross-validated estimate" if r.cv else f"the validation {_objective(r)}"
    return r.fact(f"per backbone, the trial with the best validation {_objective(r)}; backbones ranked by {rank}; "
                  f"{r.held_out} images never used to choose", (LEADERBOARD_JSON, r.best_file(TRIALS_CSV)),
                  ("summary", "deployment"))


def ensembling(r: Run) -> Fact | None:
    if not r.data.backbones:
        return None
    return r.fact("none: every candidate is one model, and the recommendation is a single model", (LEADERBOARD_JSON,))


def metrics(r: Run) -> Fact | None:
    shown = [LABELS.get(m) or metric(m).label for m in METRICS if not r.estimate(m).missing]
    if not shown:
        return None
    return r.fact(f"{r.held_out} {', '.join(shown)}; plots: ROC and PR curves, reliability diagram"
                  + (", decision curve" if len(r.data.classes) == 2 else ""),
                  (LEADERBOARD_JSON,), ("leaderboard", "per_backbone"))


def uncertainty(r: Run) -> Fact | None:
    p = r.source.prefix
    if not r.estimate("accuracy").has_interval:
        return None
    # cross-validated rows resample duplicate groups and do not record it
    unit = r.row.get(f"{p}ci_unit") or ("group" if r.cv else "image")
    resamples = r.row.get(f"{p}ci_resamples")
    level = to_float(r.row.get(f"{p}ci_level"), 0.95)
    tests = ("paired tests between backbones (DeLong for AUC, McNemar for accuracy, Holm-adjusted)"
             if len(r.data.ok) > 1 else "one backbone, so no paired test")
    how = f"{resamples} resamples of {unit}s" if resamples else f"resampling {unit}s"
    return r.fact(f"{100 * level:.0f} % bootstrap confidence intervals ({how}) on every metric; {tests}",
                  (LEADERBOARD_JSON,), ("statistics", "leaderboard"))


def calibration(r: Run) -> Fact | None:
    cal = r.calibration
    if not cal or "temperature" not in cal:
        return None
    before, after = cal.get("before") or {}, cal.get("after") or {}
    change = (f"; {r.held_out} ECE {to_float(before.get('ece')):.3f} before, {to_float(after.get('ece')):.3f} after"
              if before and after else "")
    return r.fact(f"recalibrated by temperature scaling (T = {to_float(cal['temperature']):.3g}) fitted on "
                  f"{cal.get('fitted_on', 'validation')}{change}", (r.best_file(CALIBRATION_JSON),), ("per_backbone",))


def thresholds(r: Run) -> Fact | None:
    cal = r.calibration or {}
    points = cal.get("operating_points") or {}
    if points:
        rules = "; ".join(f"{name} {to_float(p.get('threshold')):.3g} ({p.get('rule')})" for name, p in points.items())
        return r.fact(f"output: a calibrated probability per class; thresholds chosen on validation: {rules}",
                      (r.best_file(CALIBRATION_JSON), LEADERBOARD_JSON), ("per_backbone",))
    if r.best is not None and len(r.data.classes) > 2:
        return r.fact("output: a probability per class; the prediction is the most probable class (no threshold)",
                      (LEADERBOARD_JSON,))
    return None


def imbalance(r: Run) -> Fact | None:
    if "class_weights" not in r.config:
        return None
    if not r.config["class_weights"]:
        return r.fact("no class-imbalance method: plain loss, no resampling", (RUN_JSON,))
    return r.fact("class weights inverse to class frequency in the training loss, no resampling; their prior shift "
                  "is undone before calibration", (RUN_JSON, r.best_file(CALIBRATION_JSON)))


def operating(r: Run) -> Fact | None:
    points = (r.calibration or {}).get("test_operating_points") or {}
    if not points:  # e.g. cross-validation: the row's sensitivity and specificity at the decision threshold
        sens, spec = r.estimate("recall"), r.estimate("specificity")
        if len(r.data.classes) != 2 or not (sens.has_interval and spec.has_interval):
            return None
        return r.fact(f"{r.held_out}, with 95 % CIs, at the decision threshold: sensitivity {_ci(sens)}, specificity "
                      f"{_ci(spec)}", (LEADERBOARD_JSON,), ("leaderboard",))

    def one(name, p):
        sens = Estimate(metric("sensitivity"), Source.PLAIN, to_float(p.get("sensitivity")),
                        to_float(p.get("sensitivity_ci_low")), to_float(p.get("sensitivity_ci_high")))
        spec = Estimate(metric("specificity"), Source.PLAIN, to_float(p.get("specificity")),
                        to_float(p.get("specificity_ci_low")), to_float(p.get("specificity_ci_high")))
        return f"at the {name} operating point sensitivity {_ci(sens)}, specificity {_ci(spec)}"

    return r.fact(f"{r.held_out}, with 95 % CIs: " + "; ".join(one(n, p) for n, p in points.items()),
                  (r.best_file(CALIBRATION_JSON),), ("per_backbone",))


# --------------------------------------------------------------------------- checks and results


def robustness(r: Run) -> Fact | None:
    check = r.data.split.get("shortcut_check") or {}
    if check.get("auc") is None:
        return None
    verdict = "warns" if check.get("warn") else "does not warn"
    return r.fact(f"shortcut check: file attributes alone predict the label with AUC {to_float(check['auc']):.2f} "
                  f"[{to_float(check.get('ci_low')):.2f}, {to_float(check.get('ci_high')):.2f}] ({verdict}); accuracy "
                  "by file subgroup; leakage audit of linked copies", (SPLIT_JSON,), ("data", "per_backbone"))


def explain(r: Run) -> Fact | None:
    if r.best is None or not r.has(r.best_file(GRADCAM_PNG)):
        return None
    return r.fact("Grad-CAM heatmaps of the recommended model on held-out images, "
                  "correct and misclassified, picked deterministically",
                  (r.best_file(GRADCAM_PNG), r.best_file(GRADCAM_JSON)), ("per_backbone",))


def internal(r: Run) -> Fact | None:
    n = _n(r.row.get(f"{r.source.prefix}n"))
    if r.best is None or not n:
        return None
    what = (f"out-of-fold predictions of {n} images, each by a model that never saw it" if r.cv
            else f"{n} held-out test images, never used for fitting or choosing")
    return r.fact(f"internal evaluation on {what}",
                  (LEADERBOARD_JSON, r.best_file(OOF_PREDICTIONS if r.cv else TEST_PREDICTIONS)), ("leaderboard",))


def failures(r: Run) -> Fact | None:
    predictions = r.best.predictions(r.source) if r.best else None
    if predictions is None or not len(predictions) or "correct" not in predictions:
        return None
    wrong = int((~predictions["correct"].astype(bool)).sum())
    name = r.best_file(OOF_PREDICTIONS if r.cv else TEST_PREDICTIONS)
    return r.fact(f"{wrong} of {len(predictions)} {r.held_out} predictions wrong, each listed in {name} (column "
                  "correct); confusion matrix in leaderboard.json; misclassified images among the Grad-CAM picks",
                  (name, LEADERBOARD_JSON, r.best_file(GRADCAM_PNG)), ("per_backbone",))


def limitations(r: Run) -> Fact | None:
    if r.best is None:
        return None
    from bench.report import findings

    flagged = [b.title for b in findings.banners(r.data)]
    if (r.data.split.get("shortcut_check") or {}).get("warn"):
        flagged.append("file attributes predict the label (shortcut check)")
    crossing = sum(_n(a.get("bench_crossing")) for a in r.data.split.get("leakage_audit") or [])
    if crossing:
        flagged.append(f"{crossing} linked pairs of copies cross partitions")
    text = "the run flags: " + "; ".join(flagged) if flagged else "the run flags no caution of its own"
    return r.fact(text + "; evaluation is internal only (one source)", (LEADERBOARD_JSON, SPLIT_JSON), ("summary",))


def export(r: Run) -> Fact | None:
    if r.best is None or not r.has(f"export/{r.best.name}/model_card.md"):
        return None
    base = f"export/{r.best.name}"
    return r.fact(f"{base}/: the model with its padding, resizing, scaling and calibration inside, labels.json, "
                  "model_card.md and manifest.json (checksums)",
                  (f"{base}/model.keras", f"{base}/labels.json", f"{base}/model_card.md", f"{base}/manifest.json"))


def prediction_code(r: Run) -> Fact | None:
    if r.best is None or not r.has(r.best_file("best_model.keras")):
        return None
    name = r.best_file(OOF_PREDICTIONS if r.cv else TEST_PREDICTIONS)
    return r.fact(f"the saved Keras model {r.best_file('best_model.keras')} predicted the held-out images through "
                  f"bench's evaluation code; every probability is in {name}",
                  (r.best_file("best_model.keras"), name, f"export/{r.best.name}/model.keras"))


def input_handling(r: Run) -> Fact | None:
    if r.best is None or not r.has(f"export/{r.best.name}/model_card.md"):
        return None
    return r.fact("the export takes RGB images of any size and pads, resizes and scales them itself; bench predict "
                  "reports and skips unreadable files; its model card lists the inputs it is not meant for",
                  (f"export/{r.best.name}/model_card.md",))


def reproduce(r: Run) -> Fact | None:
    if not r.data.run.get("command"):
        return None
    return r.fact(f"the command, its full configuration, seed {r.config.get('seed')}, library versions and the data "
                  "hash repeat the run; bench report RUN rebuilds the report", (RUN_JSON,), ("reproduce",))
