"""The report's sections, each a dict of tables and sentences both templates render."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from bench.config import OBJECTIVE_LABELS, command_line, option_rows
from bench.evaluate.crossval import CV_METRIC
from bench.evaluate.paired import ALPHA
from bench import schema
from bench.schema import STOPPED, Estimate, Source, column, metric_with_ci, to_float
from bench.report import findings
from bench.report.copies_section import conflict_row, copies_summary
from bench.report.formatting import (
    DASH,
    Table,
    configuration,
    display_name,
    duration,
    files_text,
    flatten_limited,
    head_description,
    interval,
    lr,
    millions,
    num,
    p_text,
    to_int,
    weights_sentence,
)
from bench.report.load import RunData

#: Rows shown in long lists (skipped files, duplicate groups, ...) before "N more".
MAX_LIST_ROWS = 30
TOP_TRIALS = 5
#: The "search" value of the final model's trials in a cross-validated run's trials.csv.
FINAL = "final model"


def _objective_label(objective: str) -> str:
    return OBJECTIVE_LABELS.get(objective, objective)


#: The summary table's metrics, in the order the schema declares them; each with its 95 % CI.
SUMMARY_METRICS = tuple(schema.METRICS)
#: Labels the summary table words more fully than the schema.
SUMMARY_LABELS = {"brier_skill": "Brier skill (vs. training prevalence)"}
SELECTION_SCORE = "selection score (optimistic: best of trials \u00d7 epochs)"
#: A design's extra columns: (header, cell of a row and a metric) in the summary, (header,
#: cell of a row) in the leaderboard; empty for a single split (see :mod:`bench.report.folds_section`).
NO_COLUMNS: tuple = ()


def ranking_metric(data: RunData) -> str:
    """The metric whose estimate stands for the objective (ROC AUC for val_auc, ...)."""
    return CV_METRIC.get(data.objective, "roc_auc")


def estimate_text(row: dict, metric: str, source: Source) -> str:
    """``0.842 (0.71\u20130.94)``: the ``source`` estimate of ``metric`` with its 95 % CI."""
    return metric_with_ci(row, metric, style="dash", missing=DASH, source=source)


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def ci_unit_text(row: dict, source: Source = Source.TEST, detail: bool = True,
                 default: str = "resamples of the test images") -> str:
    """What an interval resamples: ``"resamples of duplicate groups (29 groups; ...)"`` or ``default``."""
    if row.get(f"{source.prefix}ci_unit") == "group":
        groups = to_int(row.get(f"{source.prefix}ci_groups"))
        return "resamples of duplicate groups" + (f" ({groups} groups; copies of one image are drawn together)"
                                                  if groups and detail else "")
    return default


def final_ok(row: dict) -> bool:
    """Whether the backbone's model to export exists (under --cv only the recommended
    backbone's final search makes one)."""
    status = row.get("final_status")
    return status == "ok" or (status is None and row.get("best_trial") is not None)


def summary_section(data: RunData, design: dict) -> dict:
    """The Summary of either design: the recommendation, its estimates from ``data.source``
    and the design's words and extra columns (``design``: the design parts of
    :func:`bench.report.build.context`)."""
    words, source = design["words"], data.source
    if not data.ok:
        return {"rule": words["rule"], "best": None, "holdout": design.get("holdout")}
    best, metric = data.ok[0], ranking_metric(data)
    r = best.row
    columns = design.get("summary_columns", NO_COLUMNS)
    headers = ["metric", f"{source.label} estimate", "95 % CI", *[h for h, _ in columns]]
    rows = [[SUMMARY_LABELS.get(m) or schema.metric(m).long_label, num(r.get(column(m, source))),
             interval(r, m, source), *[cell(r, m) for _, cell in columns]]
            for m in SUMMARY_METRICS if not Estimate.read(r, m, source).missing]
    ci_note = design["ci_note"]
    if len(data.classes) == 2:
        ci_note += f" Positive class: {data.classes[1]}."
    runner = data.ok[1] if len(data.ok) > 1 else None
    return {
        "rule": words["rule"],
        "best": best.name,
        "best_display": display_name(best),
        "configuration": configuration(r) if final_ok(r) else None,
        "headline": capital(", ".join([f"{source.label} {schema.label(metric)} {estimate_text(r, metric, source)}",
                                       *design["estimate_notes"](r)]) + "."),
        "rule_extra": design["rule_extra"],
        "holdout": design.get("holdout"),
        "metrics": Table(headers, rows, [False, *[True] * (len(headers) - 1)]),
        "ci_note": ci_note,
        "significance": design["significance"](best.name, runner.name if runner else None),
        "baseline_note": baseline_note(data, words["ranked_on"]),
    }


def baseline_note(data: RunData, ranked_on: str) -> str | None:
    """Where the original notebook's recipe (the baseline backbone) ranks."""
    baseline = next((b for b in data.backbones if b.row.get("baseline")), None)
    if baseline is None or not data.ok:
        return None
    best, metric, source = data.ok[0], ranking_metric(data), data.source
    if baseline is best:
        return f"The original notebook's recipe won: no searched configuration beat it {ranked_on}."
    if not baseline.ok:
        return f"The original notebook's recipe ({baseline.name}) failed: {baseline.row.get('message')}."
    return (f"The original notebook's recipe ({baseline.name}) ranks {to_int(baseline.row.get('rank'))} of "
            f"{len(data.ok)} {ranked_on}; its {source.label} {schema.label(metric)} is "
            f"{estimate_text(baseline.row, metric, source)} against {estimate_text(best.row, metric, source)} here.")


def trials_done(b) -> int:
    """Completed trials of every search of ``b`` from its trials.csv, else the leaderboard
    row's count."""
    if b.trials is not None and "status" in b.trials:
        return int((b.trials["status"].astype(str) == "completed").sum())
    return to_int(b.row.get("trials_done")) or 0


def leaderboard_table(data: RunData, columns=NO_COLUMNS, end_columns=NO_COLUMNS) -> Table:
    """One row per backbone, estimates from ``data.source``; ``columns`` follow the ranking
    metric, ``end_columns`` close the row (a design's extras: (header, cell of a row))."""
    source, metric = data.source, ranking_metric(data)
    others = [m for m in ("roc_auc", "accuracy", "f1") if m != metric][:2]
    failed = findings.failed_trial_counts(data)
    rows = []
    for b in [*data.ok, *data.failed]:
        r = b.row
        rows.append([
            str(to_int(r.get("rank")) or DASH) if b.ok else str(r.get("status") or "failed"), display_name(b),
            estimate_text(r, metric, source), *[cell(r) for _, cell in columns],
            *[estimate_text(r, m, source) for m in others], estimate_text(r, "recall", source),
            estimate_text(r, "specificity", source), num(r.get("val_objective")),
            f"{trials_done(b)} / {failed.get(b.name, 0)}", duration(r.get("search_seconds")),
            millions(r.get("params_total")),
            DASH if math.isnan(to_float(r.get("latency_ms_b1"))) else f"{to_float(r.get('latency_ms_b1')):.1f}",
            *[cell(r) for _, cell in end_columns],
        ])
    label = source.label
    headers = ["rank", "backbone", f"{label} {schema.label(metric)}", *[h for h, _ in columns],
               *[f"{label} {schema.label(m)}" for m in others], f"{label} sensitivity", f"{label} specificity",
               f"{_objective_label(data.objective)} selection score (optimistic)", "trials ok / failed",
               "search time", "parameters", "ms / image", *[h for h, _ in end_columns]]
    return Table(headers, rows, [True, False, *[True] * (len(headers) - 2)])


def leaderboard_note(data: RunData, words: dict) -> str:
    """The leaderboard's caption: how it is ranked, what the intervals resample, what the
    selection score is (``words``: the design's)."""
    source = data.source
    unit = next((ci_unit_text(b.row, source, detail=False) for b in data.ok
                 if b.row.get(f"{source.prefix}ci_unit")), words["ci_unit"])
    positive = f"({data.classes[1]})" if len(data.classes) == 2 else "(macro averages)"
    starts = weights_sentence([b.row for b in data.backbones])
    return (f"One row per backbone, ranked by {words['ranked_by']}. {capital(source.label)} values with 95 % bootstrap CIs in "
            f"parentheses, over {unit}; sensitivity and specificity are those of the positive class {positive}."
            f"{words['columns_note']} The {SELECTION_SCORE} is {words['selection_score']}"
            + (f" {starts}" if starts else ""))


def pareto_flags(backbones, source: Source = Source.TEST) -> dict[str, list[bool]]:
    """Pareto-optimal flags of ``backbones`` on accuracy (from ``source``) against latency and against size."""
    accuracy = [Estimate.read(b.row, "accuracy", source).value for b in backbones]
    return {
        "latency": findings.pareto_optimal([to_float(b.row.get("latency_ms_b1")) for b in backbones], accuracy),
        "params": findings.pareto_optimal([to_float(b.row.get("params_total")) for b in backbones], accuracy),
    }


def cost_table(backbones, flags: dict, source: Source = Source.TEST, pareto: bool = True) -> Table:
    """Accuracy (from ``source``) and cost per backbone; ``pareto`` adds the two Pareto columns."""
    headers = ["backbone", f"{source.label} accuracy (95 % CI)", "ms / image (batch 1)", "ms / image (batch 32)",
               "parameters", "trainable"]
    rows = [[display_name(b), metric_with_ci(b.row, "accuracy", style="dash", missing=DASH, source=source),
             num(b.row.get("latency_ms_b1"), 1), num(b.row.get("latency_ms_b32"), 2),
             millions(b.row.get("params_total")), millions(b.row.get("params_trainable"))]
            for b in backbones]
    if not pareto:
        return Table(headers, rows, [False, True, True, True, True, True])
    for i, row in enumerate(rows):
        row += ["\u2605 yes" if flags["latency"][i] else "", "\u2605 yes" if flags["params"][i] else ""]
    return Table(headers + ["Pareto: latency", "Pareto: size"], rows, [False, True, True, True, True, True, False, False])


LATENCY_NOTE = ("Latency is the median time per image on the machine that ran the search, at batch 1 and 32 "
                "(at 32, of the backbone's batches in the pass that made its features, when that pass ran in the same "
                "process in TensorFlow float32, and at 1 of that pass's network when the deployed model had not run: "
                "the head adds microseconds).")


def deployment_section(data: RunData, words: dict) -> dict:
    """Accuracy (from ``data.source``) against cost of the backbones whose cost was measured;
    the Pareto columns and figure where there are two or more to weigh."""
    measured = [b for b in data.ok if not (math.isnan(to_float(b.row.get("latency_ms_b1")))
                                          and math.isnan(to_float(b.row.get("params_total"))))]
    flags = pareto_flags(measured, source=data.source)
    pareto = len(measured) > 1
    table = cost_table(measured, flags, source=data.source, pareto=pareto)
    out = {"flags": flags, "table": table, "pareto": pareto, "backbones": measured}
    if not measured:
        return {**out, "text": words["no_cost"]}
    if not pareto:
        return {**out, "text": f"{words['one_cost'].format(name=measured[0].name)}, so there is no trade-off to weigh; "
                               f"the table shows its cost. {LATENCY_NOTE}"}
    fast = [b.name for b, f in zip(measured, flags["latency"]) if f]
    small = [b.name for b, f in zip(measured, flags["params"]) if f]
    text = (
        "A backbone is Pareto-optimal when no other one is at least as accurate and at least as fast (or small), "
        "and strictly better on one of the two. "
        + (f"On latency: {', '.join(fast)}. " if fast else "")
        + (f"On size: {', '.join(small)}. " if small else "")
        + f"{LATENCY_NOTE} {words['trade_off']}"
    )
    return {**out, "text": text}


def per_backbone_texts(data: RunData, design: dict) -> dict[str, str]:
    """Each finished backbone's estimate (from ``data.source``, with the design's notes) and
    its model."""
    source, metric = data.source, ranking_metric(data)
    return {b.name: "; ".join([f"{capital(source.label)} {schema.label(metric)} "
                               f"{estimate_text(b.row, metric, source)}", *design["estimate_notes"](b.row)])
            + ". " + design["model_text"](b) for b in data.ok}


def star(p) -> str:
    """`` *`` when a (Holm-adjusted) p-value is below the significance level."""
    return " *" if p is not None and not math.isnan(p) and p < ALPHA else ""


def p_holm(p, adjusted) -> str:
    """``"0.012 (Holm 0.036) *"``: a raw p-value, its Holm-adjusted one, a star on the adjusted one."""
    if adjusted is None or math.isnan(adjusted):
        return p_text(p)
    return f"{p_text(p)} (Holm {p_text(adjusted)}){star(adjusted)}"


def top_trials(done, objective: str, minimise: bool, kept) -> Table:
    """The best :data:`TOP_TRIALS` completed trials by ``objective``; a star on the ``kept`` one."""
    ordered = done.sort_values(objective, ascending=minimise, kind="stable").head(TOP_TRIALS)
    rows = []
    for _, tr in ordered.iterrows():
        hp = tr.to_dict()
        chosen = kept is not None and str(tr["trial"]) == str(kept)
        rows.append([
            str(tr["trial"]) + (" \u2605" if chosen else ""), num(tr.get(objective)),
            str(to_int(hp.get("unfreeze")) if to_int(hp.get("unfreeze")) is not None else DASH),
            head_description(hp), lr(hp.get("learning_rate")),
            f"{to_int(hp.get('best_epoch')) or DASH} / {to_int(hp.get('epochs_run')) or DASH}",
            duration(hp.get("seconds")),
        ])
    return Table(["trial", _objective_label(objective), "blocks fine-tuned", "head", "learning rate",
                  "best / run epochs", "time"], rows, [False, True, True, False, True, True, True])


def model_trials(b, objective: str):
    """The completed trials of the search that made ``b``'s model to export: every trial of
    a single split; under --cv the final model's search (none for a backbone without one)."""
    t = b.trials
    if t is None or not len(t) or objective not in t:
        return None
    done = t[t["status"].astype(str) == "completed"] if "status" in t else t
    if "search" in done:
        done = done[done["search"] == FINAL]
    return done if len(done) else None


def search_section(data: RunData, design: dict) -> dict:
    """Every completed trial (for the figures), the top trials of each model's search, the
    design's per-fold kept trials (``design["fold_trials"]``) and the failed trials."""
    import pandas as pd

    objective, words = data.objective, design["words"]
    frames, per_backbone, failed = [], [], []
    searches = any(b.trials is not None and "search" in b.trials for b in data.backbones)
    for b in data.backbones:
        t = b.trials
        if t is not None and len(t):
            t = t.assign(backbone=b.name)
            if "status" not in t:
                t["status"] = "completed"
            done = t[t["status"].astype(str) == "completed"]
            if objective in done:
                frames.append(done[done[objective].notna()])
            for _, tr in t[t["status"].astype(str) != "completed"].iterrows():
                message = tr.get("message")
                failed.append([b.name, *([str(tr.get("search", DASH))] if searches else []), str(tr["trial"]),
                               str(tr["status"]),
                               str(message) if isinstance(message, str) and message else "(no message recorded)"])
        mine = model_trials(b, objective)
        final = None if mine is None else {
            "table": top_trials(mine, objective, data.minimise, b.row.get("best_trial") if b.ok else None),
            "total": len(mine), "scope": words["search_scope"]}
        folds = design["fold_trials"](b)
        if folds is not None or final:
            per_backbone.append({"backbone": display_name(b), "folds": folds, "final": final})
    for b in data.failed:
        failed.append([b.name, *([DASH] if searches else []), DASH,
                       "stopped by --budget" if b.row.get("status") == STOPPED else "backbone failed",
                       str(b.row.get("message") or "(no message recorded)")])
    headers = ["backbone", *(["search"] if searches else []), "trial", "status", "message"]
    space = head_space_text(data)
    return {
        "trials": pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
        "per_backbone": per_backbone,
        "text": words["search"] + (" " + space if space else ""),
        "failed": Table(headers, failed) if failed else None,
        "n_trials": int(sum(len(b.trials) for b in data.backbones if b.trials is not None)),
    }


def head_space_text(data: RunData) -> str | None:
    """Which backbones' flatten heads ``--max-head-weights`` kept to the output layer alone
    (their rows' ``flatten_hidden`` is false), and why; None where none was."""
    limited = flatten_limited(data.backbones)
    if not limited:
        return None
    largest = {display_name(b): to_float(b.row.get("flatten_hidden_weights")) for b in limited}
    each = ", ".join(f"{millions(w)} ({name})" if len(largest) > 1 else millions(w) for name, w in largest.items())
    cap = to_int(data.config.get("max_head_weights"))
    return (f"Flatten heads were searched as the output layer alone on the flattened feature map of "
            f"{', '.join(largest)}: a hidden layer there would hold up to {each} weights, over --max-head-weights "
            f"{cap:,}; pooled heads took every choice of hidden layers (--max-head-weights 0 searches every head).")


def _capped(rows: list[list[str]]) -> tuple[list[list[str]], int]:
    return rows[:MAX_LIST_ROWS], max(0, len(rows) - MAX_LIST_ROWS)


def data_section(data: RunData) -> dict:
    ds, sp = data.dataset, data.split
    counts = {c: int(n) for c, n in (ds.get("counts") or {}).items()}
    total = sum(counts.values())
    classes = Table(
        ["class", "images", "share"],
        [[c, str(n), f"{100 * n / total:.1f} %" if total else DASH] for c, n in counts.items()]
        + ([["total", str(total), "100 %"]] if counts else []),
        [False, True, True],
    )
    raw_sizes = sp.get("sizes") or {}
    known = ("train", "val", "test")
    order = [s for s in known if s in raw_sizes] + [s for s in raw_sizes if s not in known]
    sizes = {s: raw_sizes[s] for s in order}
    split_classes = list(sp.get("classes") or counts)
    split_rows = [[s, *[str(sizes[s].get(c, 0)) for c in split_classes], str(sum(sizes[s].values()))] for s in sizes]
    if sizes:
        split_rows.append(["total", *[str(sum(sizes[s].get(c, 0) for s in sizes)) for c in split_classes],
                           str(sum(sum(v.values()) for v in sizes.values()))])
    split_table = Table(["split", *split_classes, "total"], split_rows, [False, *[True] * (len(split_classes) + 1)])
    skipped_rows, skipped_more = _capped([[s.get("path", ""), s.get("reason", "")] for s in ds.get("skipped") or []])
    exact = ds.get("exact_duplicates") or []
    exact_rows, exact_more = _capped([[str(len(g)), files_text(list(g))] for g in exact])
    groups = sp.get("duplicate_groups") or []
    group_rows, group_more = _capped(
        [[g.get("group", ""), g.get("kind", ""), g.get("split", g.get("part", "")), str(len(g.get("files") or [])),
          files_text(list(g.get("files") or []))] for g in sorted(groups, key=lambda g: -len(g.get("files") or []))])
    conflicts = sp.get("label_conflicts") or []
    conflict_rows, conflict_more = _capped([conflict_row(c) for c in conflicts])
    copies = copies_summary(sp)
    in_splits = sum(sum(v.values()) for v in sizes.values())
    return {
        "root": ds.get("root"),
        "synthetic": bool(ds.get("synthetic")),
        "classes": classes,
        "split": split_table,
        "split_note": (
            f"Split seed {sp.get('seed')}, validation fraction {sp.get('val_size')}, test fraction "
            f"{sp.get('test_size')}; duplicate groups are kept whole in one split, and label conflicts are "
            "left out of every split."
            + (f" {total - in_splits} of the {total} images are in no split (label conflicts)."
               if sp and total > in_splits else "")
            if sp else "split.json is missing from the run folder."
        ),
        "skipped": Table(["file", "reason"], skipped_rows, more=skipped_more) if skipped_rows else None,
        "exact": Table(["copies", "files"], exact_rows, [True, False], more=exact_more) if exact_rows else None,
        "groups": Table(["group", "kind", "split", "files", "examples"], group_rows,
                        [False, False, False, True, False], more=group_more) if group_rows else None,
        "groups_note": f"{len(groups)} groups of two or more files, largest first. The kind lists the links inside "
                       "a group: exact (identical bytes), resized/re-encoded, re-processed (contrast, gamma, blur, "
                       "crop ...), mirrored/rotated, user group (--groups), patient or study (the DICOM "
                       "headers' PatientID or StudyInstanceUID, --group-by).",
        "conflicts": Table(["excluded file", "label", "its copies of another label"], conflict_rows,
                           more=conflict_more) if conflict_rows else None,
        **copies,
        "folds": None,  # --cv: the outer folds (bench.report.folds_section)
    }


def reproduce_section(data: RunData, run_dir: Path, reports_dir: Path) -> dict:
    run = data.run
    command = run.get("command") or []
    config = data.config
    machine = run.get("machine") or {}
    versions = run.get("versions") or {}
    return {
        "command": shlex.join(str(c) for c in command) if command else "(not recorded)",
        "seed": config.get("seed"),
        "equivalent": shlex.join(command_line(config)),
        "config": Table(["option", "value", "changes results"],
                        [[flag, value, "yes" if changes else "no"] for flag, value, changes in option_rows(config)]),
        "versions": Table(["package", "version"], [[k, str(v)] for k, v in sorted(versions.items())]),
        "machine": Table(["property", "value"], [["platform", str(machine.get("platform", DASH))],
                                    ["processor", str(machine.get("processor", DASH))],
                                    ["CPU cores", str(machine.get("cpu_count", DASH))]]),
        "created": run.get("created"),
        "bench_version": run.get("bench_version"),
        "data_hash": run.get("data_hash"),
        "regenerate": shlex.join(["bench", "report", str(run_dir), "--reports", str(reports_dir)]),
    }
