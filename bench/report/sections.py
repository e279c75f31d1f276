"""The report's sections, each a dict of tables and sentences both templates render."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from bench.config import OBJECTIVE_LABELS, command_line, option_rows
from bench.evaluate.paired import ALPHA, PairTest
from bench import schema
from bench.schema import Estimate, Source, metric_with_ci, to_float
from bench.report import findings
from bench.report.copies_section import conflict_row, copies_summary
from bench.report.formatting import (
    DASH,
    Table,
    configuration,
    display_name,
    duration,
    files_text,
    fmt_p,
    fmt_signed,
    head_description,
    interval,
    lr,
    millions,
    num,
    p_text,
    to_int,
    with_ci,
)
from bench.report.load import RunData

#: Rows shown in long lists (skipped files, duplicate groups, ...) before "N more".
MAX_LIST_ROWS = 30
TOP_TRIALS = 5


def _objective_label(objective: str) -> str:
    return OBJECTIVE_LABELS.get(objective, objective)


#: The summary table's test metrics: (label, metric); every one with its 95 % CI.
SUMMARY_METRICS = tuple((schema.metric(m).long_label, m) for m in (
    "accuracy", "f1", "roc_auc", "recall", "specificity", "balanced_accuracy", "precision", "pr_auc", "brier"))
SELECTION_SCORE = "selection score (optimistic: best of trials \u00d7 epochs)"


def ci_unit_text(row: dict, source: Source = Source.TEST, detail: bool = True) -> str:
    """What an interval resamples: ``"resamples of duplicate groups (29 groups; ...)"`` or
    ``"resamples of the test images"``."""
    if row.get(f"{source.prefix}ci_unit") == "group":
        groups = to_int(row.get(f"{source.prefix}ci_groups"))
        return "resamples of duplicate groups" + (f" ({groups} groups; copies of one image are drawn together)"
                                                  if groups and detail else "")
    return "resamples of the test images"


def summary_section(data: RunData, pairs: dict) -> dict:
    objective = _objective_label(data.objective)
    direction = "lowest" if data.minimise else "highest"
    rule = (
        f"Chosen on the validation objective ({objective}, {direction} wins): each backbone's search kept its best "
        "trial by that objective, and the backbones are ranked by it. Test metrics are reported, never used to choose."
    )
    ok = data.ok
    if not ok:
        return {"rule": rule, "best": None}
    best = ok[0]
    runner = ok[1] if len(ok) > 1 else None
    test = pairs.get((best.name, runner.name)) if runner else None
    r = best.row
    rows = [[label, num(r.get(f"test_{m}")), interval(r, m)] for label, m in SUMMARY_METRICS]
    if not math.isnan(to_float(r.get("test_brier_skill"))):
        rows.append(["Brier skill (vs. training prevalence)", num(r.get("test_brier_skill")),
                     interval(r, "brier_skill")])
    metrics = Table(["test metric", "value", "95 % CI"], rows, [False, True, True])
    n_test = to_int(r.get("test_n"))
    level = to_float(r.get("test_ci_level"))
    resamples = to_int(r.get("test_ci_resamples"))
    ci_note = (
        f"On {n_test} test images; CIs are {100 * level:.0f} % percentile bootstrap intervals over "
        f"{resamples} {ci_unit_text(r)}."
        if n_test and resamples and not math.isnan(level) else ""
    )
    if len(best.row.get("test_positive_class") or "") and len(data.classes) == 2:
        ci_note += f" Positive class: {best.row['test_positive_class']}."
    baseline = next((b for b in data.backbones if b.row.get("baseline")), None)
    baseline_note = None
    if baseline is not None and baseline is not best:
        if baseline.ok:
            rank = to_int(baseline.row.get("rank"))
            baseline_note = (
                f"The original notebook's recipe ({baseline.name}) ranks {rank} of {len(ok)} on validation; "
                f"its test accuracy is {with_ci(baseline.row, 'accuracy')} against {with_ci(r, 'accuracy')} here."
            )
        else:
            baseline_note = f"The original notebook's recipe ({baseline.name}) failed: {baseline.row.get('message')}."
    elif baseline is best:
        baseline_note = "The original notebook's recipe won: no searched configuration beat it on validation."
    return {
        "rule": rule,
        "best": best.name,
        "best_display": display_name(best),
        "configuration": configuration(r),
        "headline": None,
        "rule_extra": f"{SELECTION_SCORE[:1].upper()}{SELECTION_SCORE[1:]}: {objective} "
                      f"{num(r.get('val_objective'))} (trial {r.get('best_trial')}).",
        "holdout": None,
        "metrics": metrics,
        "ci_note": ci_note,
        "significance": findings.significance_sentence(best.name, runner.name if runner else None, test),
        "baseline_note": baseline_note,
    }


def leaderboard_table(data: RunData) -> Table:
    rows = []
    for b in [*data.ok, *data.failed]:
        r = b.row
        rows.append([
            str(to_int(r.get("rank")) or DASH) if b.ok else "failed", display_name(b),
            with_ci(r, "accuracy"), with_ci(r, "f1"), with_ci(r, "roc_auc"),
            with_ci(r, "recall"), with_ci(r, "specificity"), num(r.get("val_objective")),
            f"{to_int(r.get('trials_done')) or 0} / {findings.failed_trial_counts(data).get(b.name, 0)}",
            duration(r.get("search_seconds")), millions(r.get("params_total")),
            DASH if math.isnan(to_float(r.get("latency_ms_b1"))) else f"{to_float(r.get('latency_ms_b1')):.1f}",
        ])
    headers = ["rank", "backbone", "test accuracy", "test F1", "test AUC",
               "sensitivity", "specificity", f"{_objective_label(data.objective)} selection score (optimistic)",
               "trials ok / failed",
               "search time", "parameters", "ms / image"]
    return Table(headers, rows, [True, False, True, True, True, True, True, True, True, True, True, True])


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


def deployment_section(data: RunData) -> dict:
    flags = pareto_flags(data.ok)
    table = cost_table(data.ok, flags)
    if not data.ok:
        return {"flags": flags, "table": table, "text": "No backbone finished, so there is nothing to weigh."}
    if len(data.ok) == 1:
        only = data.ok[0].name
        text = (f"Only {only} finished, so there is no trade-off to weigh; the table and figure show its cost. "
                "Latency is the median time per image on the machine that ran the search (batch 1 and batch 32).")
        return {"flags": flags, "table": table, "text": text}
    fast = [b.name for b, f in zip(data.ok, flags["latency"]) if f]
    small = [b.name for b, f in zip(data.ok, flags["params"]) if f]
    text = (
        "A backbone is Pareto-optimal when no other one is at least as accurate and at least as fast (or small), "
        "and strictly better on one of the two. "
        + (f"On latency: {', '.join(fast)}. " if fast else "")
        + (f"On size: {', '.join(small)}. " if small else "")
        + "Latency is the median time per image on the machine that ran the search (batch 1 and batch 32). "
        "The trade-off is drawn on test accuracy for information; the recommendation itself used validation only."
    )
    return {"flags": flags, "table": table, "text": text}


def star(p) -> str:
    """`` *`` when a (Holm-adjusted) p-value is below the significance level."""
    return " *" if p is not None and not math.isnan(p) and p < ALPHA else ""


def p_holm(p, adjusted) -> str:
    """``"0.012 (Holm 0.036) *"``: a raw p-value, its Holm-adjusted one, a star on the adjusted one."""
    if adjusted is None or math.isnan(adjusted):
        return p_text(p)
    return f"{p_text(p)} (Holm {p_text(adjusted)}){star(adjusted)}"


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


def search_section(data: RunData) -> dict:
    import pandas as pd

    objective = data.objective
    frames, top, failed = [], [], []
    for b in data.backbones:
        t = b.trials
        if t is None or t.empty:
            continue
        t = t.copy()
        t["backbone"] = b.name
        if "status" not in t:
            t["status"] = "completed"
        done = t[t["status"].astype(str) == "completed"]
        if objective in done and len(done):
            frames.append(done[done[objective].notna()])
            top.append({"backbone": display_name(b), "folds": None, "final": {
                "table": top_trials(done, objective, data.minimise, b.row.get("best_trial") if b.ok else None),
                "total": len(done), "scope": ""}})
        for _, tr in t[t["status"].astype(str) != "completed"].iterrows():
            message = tr.get("message")
            failed.append([b.name, str(tr["trial"]), str(tr["status"]),
                           str(message) if isinstance(message, str) and message else "(no message recorded)"])
    for b in data.failed:
        failed.append([b.name, DASH, "backbone failed", str(b.row.get("message") or "(no message recorded)")])
    trials = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return {
        "trials": trials,
        "per_backbone": top,
        "text": f"The objective is {_objective_label(objective)} on the validation split.",
        "failed": Table(["backbone", "trial", "status", "message"], failed) if failed else None,
        "n_trials": int(sum(len(b.trials) for b in data.backbones if b.trials is not None)),
    }


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
                       "crop ...), mirrored/rotated, user group (--groups).",
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
