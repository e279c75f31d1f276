"""``bench report``: a run folder in, ``report.md`` and ``report.html`` out.

A pure function of the files in the run folder (see :mod:`bench.report.load`): nothing
here trains or predicts. Figures are PNG files beside ``report.md`` (relative links, so
the Markdown reads on GitHub) and the same bytes are embedded as base64 in
``report.html``, which is therefore a single file that can be mailed.

    from bench.report import build_report
    md_path, html_path = build_report(Path("results/run-1"), Path("reports"))
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import stats
from bench.report.load import BackboneResult, RunData, load_run
from bench.runfolder import write_bytes_atomic, write_text_atomic

__all__ = ["build_report", "load_run", "render"]

TEMPLATES = Path(__file__).parent / "templates"
FIGURE_PREFIX = "fig-"
#: Rows shown in long lists (skipped files, duplicate groups, ...) before "N more".
MAX_LIST_ROWS = 30
TOP_TRIALS = 5
DASH = "\u2014"


# --------------------------------------------------------------------------- small types


@dataclass
class Table:
    """A table both templates render: Markdown through tabulate, HTML through a macro."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-aligned columns
    more: int = 0  # rows left out

    def __post_init__(self):
        if not self.numeric:
            self.numeric = [False] * len(self.headers)

    def markdown(self) -> str:
        from tabulate import tabulate

        def cell(value) -> str:
            # pipes end a cell; "<tag" would be taken for HTML by GitHub
            text = str(value).replace("|", "\\|").replace("\n", " ")
            return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)

        text = tabulate(
            [[cell(v) for v in row] for row in self.rows], headers=[cell(h) for h in self.headers],
            tablefmt="pipe", colalign=["right" if n else "left" for n in self.numeric], disable_numparse=True,
        )
        if self.more:
            text += f"\n\n\u2026 and {self.more} more."
        return text


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    data: bytes
    width_in: float
    height_in: float

    @property
    def file(self) -> str:
        return f"{FIGURE_PREFIX}{self.key}.png"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.data).decode("ascii")

    @property
    def display_width(self) -> int:
        return round(self.width_in * 108)


# --------------------------------------------------------------------------- formatting


def _f(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def num(value, digits: int = 3) -> str:
    v = _f(value)
    return DASH if math.isnan(v) else f"{v:.{digits}f}".replace("-", "\u2212")


def with_ci(row: dict, metric: str, digits: int = 3) -> str:
    v = _f(row.get(f"test_{metric}"))
    if math.isnan(v):
        return DASH
    lo, hi = _f(row.get(f"test_{metric}_ci_low")), _f(row.get(f"test_{metric}_ci_high"))
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} ({lo:.2f}\u2013{hi:.2f})"


def _interval(row: dict, metric: str) -> str:
    return f"{num(row.get(f'test_{metric}_ci_low'), 2)}\u2013{num(row.get(f'test_{metric}_ci_high'), 2)}"


def duration(seconds) -> str:
    s = _f(seconds)
    if math.isnan(s):
        return DASH
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def millions(value) -> str:
    v = _f(value)
    if math.isnan(v):
        return DASH
    return f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v / 1e3:.1f} k"


def lr(value) -> str:
    v = _f(value)
    return DASH if math.isnan(v) else f"{v:.2g}"


def _int(value) -> int | None:
    v = _f(value)
    return None if math.isnan(v) else int(v)


def head_description(hp: dict) -> str:
    """``pooling → hidden layers`` of a hyperparameter dict (keys without the hp_ prefix)."""
    pooling = {"avg": "global average pooling", "max": "global max pooling", "flatten": "flattened features"}.get(
        str(hp.get("pooling")), f"{hp.get('pooling')} pooling")
    n = _int(hp.get("dense_layers")) or 0
    layers = []
    for i in range(n):
        units, drop = _int(hp.get(f"units_{i}")), _f(hp.get(f"dropout_{i}"))
        text = f"{units} units" if units else "dense"
        if not math.isnan(drop) and drop > 0:
            text += f", dropout {drop:.2g}"
        layers.append(text)
    if n == 0:
        dense = "no hidden dense layer"
    else:
        dense = f"{n} hidden dense layer{'s' if n > 1 else ''} (" + "; ".join(layers) + ")"
    return f"{pooling}, {dense}"


def depth_description(value) -> str:
    n = _int(value)
    if n is None:
        return "unknown fine-tuning depth"
    if n == 0:
        return "backbone frozen (only the head is trained)"
    return f"top {n} block{'s' if n > 1 else ''} of the backbone fine-tuned"


def configuration(row: dict) -> str:
    hp = {k[3:]: v for k, v in row.items() if k.startswith("hp_")}
    parts = [
        f"{row.get('image_size')} px input, weights {row.get('weights')}",
        depth_description(hp.get("unfreeze")),
        head_description(hp),
        f"learning rate {lr(hp.get('learning_rate'))}",
    ]
    thr = _f(row.get("test_threshold"))
    if not math.isnan(thr) and row.get("test_positive_class"):
        parts.append(
            f"decision threshold {thr:.3f} on P({row['test_positive_class']}), chosen on validation (Youden's J)")
    return "; ".join(parts)


def display_name(b: BackboneResult) -> str:
    return f"{b.name} (notebook recipe)" if b.row.get("baseline") else b.name


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


# --------------------------------------------------------------------------- sections


def _objective_label(objective: str) -> str:
    from bench.report.figures import OBJECTIVE_LABELS

    return OBJECTIVE_LABELS.get(objective, objective)


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
    metrics = Table(
        ["test metric", "value", "95 % CI"],
        [
            *[[label, num(r.get(f"test_{m}")), _interval(r, m)]
              for label, m in (("accuracy", "accuracy"), ("F1", "f1"), ("ROC AUC", "roc_auc"))],
            ["sensitivity (recall)", num(r.get("test_recall")), ""],
            ["specificity", num(r.get("test_specificity")), ""],
            ["balanced accuracy", num(r.get("test_balanced_accuracy")), ""],
            ["precision", num(r.get("test_precision")), ""],
            ["PR AUC", num(r.get("test_pr_auc")), ""],
            ["Brier score (lower is better)", num(r.get("test_brier")), ""],
        ],
        [False, True, True],
    )
    n_test = _int(r.get("test_n"))
    level = _f(r.get("test_ci_level"))
    resamples = _int(r.get("test_ci_resamples"))
    ci_note = (
        f"On {n_test} test images; CIs are {100 * level:.0f} % percentile bootstrap intervals over "
        f"{resamples} resamples of the test images."
        if n_test and resamples and not math.isnan(level) else ""
    )
    if len(best.row.get("test_positive_class") or "") and len(data.classes) == 2:
        ci_note += f" Positive class: {best.row['test_positive_class']}."
    baseline = next((b for b in data.backbones if b.row.get("baseline")), None)
    baseline_note = None
    if baseline is not None and baseline is not best:
        if baseline.ok:
            rank = _int(baseline.row.get("rank"))
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
        "val_objective": f"{objective} {num(r.get('val_objective'))} (trial {r.get('best_trial')})",
        "metrics": metrics,
        "ci_note": ci_note,
        "significance": stats.significance_sentence(best.name, runner.name if runner else None, test),
        "baseline_note": baseline_note,
    }


def leaderboard_table(data: RunData) -> Table:
    rows = []
    for b in [*data.ok, *data.failed]:
        r = b.row
        rows.append([
            str(_int(r.get("rank")) or DASH) if b.ok else "failed", display_name(b),
            with_ci(r, "accuracy"), with_ci(r, "f1"), with_ci(r, "roc_auc"),
            num(r.get("test_recall")), num(r.get("test_specificity")), num(r.get("val_objective")),
            f"{_int(r.get('trials_done')) or 0} / {stats.failed_trial_counts(data).get(b.name, 0)}",
            duration(r.get("search_seconds")), millions(r.get("params_total")),
            DASH if math.isnan(_f(r.get("latency_ms_b1"))) else f"{_f(r.get('latency_ms_b1')):.1f}",
        ])
    headers = ["rank", "backbone", "test accuracy", "test F1", "test AUC",
               "sensitivity", "specificity", _objective_label(data.objective), "trials ok / failed",
               "search time", "parameters", "ms / image"]
    return Table(headers, rows, [True, False, True, True, True, True, True, True, True, True, True, True])


def deployment_section(data: RunData) -> dict:
    rows = [b.row for b in data.ok]
    accuracy = [_f(r.get("test_accuracy")) for r in rows]
    flags = {
        "latency": stats.pareto_optimal([_f(r.get("latency_ms_b1")) for r in rows], accuracy),
        "params": stats.pareto_optimal([_f(r.get("params_total")) for r in rows], accuracy),
    }
    table = Table(
        ["backbone", "test accuracy (95 % CI)", "ms / image (batch 1)", "ms / image (batch 32)", "parameters",
         "trainable", "Pareto: latency", "Pareto: size"],
        [[display_name(b), with_ci(b.row, "accuracy"),
          num(b.row.get("latency_ms_b1"), 1), num(b.row.get("latency_ms_b32"), 2),
          millions(b.row.get("params_total")), millions(b.row.get("params_trainable")),
          "\u2605 yes" if flags["latency"][i] else "", "\u2605 yes" if flags["params"][i] else ""]
         for i, b in enumerate(data.ok)],
        [False, True, True, True, True, True, False, False],
    )
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


def statistics_section(data: RunData, tests: list[stats.PairTest]) -> dict:
    names = [b.name for b in data.ok if b.has_predictions]
    if len(names) < 2:
        return {
            "available": False,
            "text": "Only one backbone has test predictions, so there is nothing to compare it with."
            if names else "No backbone has test predictions, so there is nothing to compare.",
        }
    by_pair = {(t.a, t.b): t for t in tests}
    by_pair.update({(t.b, t.a): t.flipped() for t in tests})

    def star(p):
        return " *" if p is not None and not math.isnan(p) and p < stats.ALPHA else ""

    mcnemar = Table(
        ["", *names],
        [[a, *[DASH if a == b else f"{stats.p_text(by_pair[a, b].mcnemar_p)}{star(by_pair[a, b].mcnemar_p)}"
               for b in names]] for a in names],
        [False, *[True] * len(names)],
    )
    binary = len(data.classes) == 2
    auc = None
    if binary:
        def auc_cell(t: stats.PairTest) -> str:
            if t.auc_diff is None or math.isnan(t.auc_diff):
                return DASH
            return f"{stats.fmt_signed(t.auc_diff)} ({stats.fmt_p(t.auc_p)}){star(t.auc_p)}"

        auc = Table(
            ["row \u2212 column", *names],
            [[a, *[DASH if a == b else auc_cell(by_pair[a, b]) for b in names]] for a in names],
            [False, *[True] * len(names)],
        )
    readings = []
    for t in tests:
        line = stats.mcnemar_reading(t)
        extra = stats.auc_reading(t)
        readings.append({"pair": f"{t.a} vs {t.b}", "mcnemar": line, "auc": extra})
    n_pairs = len(tests)
    caution = (
        f"{n_pairs} pairs are compared without correction for multiple testing: at p < 0.05 about one pair in "
        "twenty looks different by chance alone, so read a lone small p-value with care."
        if n_pairs > 1 else ""
    )
    return {
        "available": True,
        "mcnemar": mcnemar,
        "auc": auc,
        "readings": readings,
        "caution": caution,
        "n": tests[0].n,
        "binary": binary,
    }


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
            ordered = done.sort_values(objective, ascending=data.minimise, kind="stable").head(TOP_TRIALS)
            rows = []
            for _, tr in ordered.iterrows():
                hp = tr.to_dict()
                chosen = b.ok and str(tr["trial"]) == str(b.row.get("best_trial"))
                rows.append([
                    str(tr["trial"]) + (" \u2605" if chosen else ""), num(tr.get(objective)),
                    str(_int(hp.get("unfreeze")) if _int(hp.get("unfreeze")) is not None else DASH),
                    head_description(hp), lr(hp.get("learning_rate")),
                    f"{_int(hp.get('best_epoch')) or DASH} / {_int(hp.get('epochs_run')) or DASH}",
                    duration(hp.get("seconds")),
                ])
            top.append({
                "backbone": display_name(b),
                "table": Table(["trial", _objective_label(objective), "blocks fine-tuned", "head", "learning rate",
                                "best / run epochs", "time"], rows,
                               [False, True, True, False, True, True, True]),
                "total": len(done),
            })
        for _, tr in t[t["status"].astype(str) != "completed"].iterrows():
            message = tr.get("message")
            failed.append([b.name, str(tr["trial"]), str(tr["status"]),
                           str(message) if isinstance(message, str) and message else "(no message recorded)"])
    for b in data.failed:
        failed.append([b.name, DASH, "backbone failed", str(b.row.get("message") or "(no message recorded)")])
    trials = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return {
        "trials": trials,
        "top": top,
        "failed": Table(["backbone", "trial", "status", "message"], failed) if failed else None,
        "n_trials": int(sum(len(b.trials) for b in data.backbones if b.trials is not None)),
    }


def _capped(rows: list[list[str]]) -> tuple[list[list[str]], int]:
    return rows[:MAX_LIST_ROWS], max(0, len(rows) - MAX_LIST_ROWS)


def _files(files: list[str], limit: int = 4) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f", \u2026 ({len(files) - limit} more)" if len(files) > limit else "")


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
    exact_rows, exact_more = _capped([[str(len(g)), _files(list(g))] for g in exact])
    groups = sp.get("duplicate_groups") or []
    group_rows, group_more = _capped(
        [[g.get("group", ""), g.get("kind", ""), g.get("split", ""), str(len(g.get("files") or [])),
          _files(list(g.get("files") or []))] for g in groups])
    conflicts = sp.get("label_conflicts") or []
    conflict_rows, conflict_more = _capped(
        [[c.get("group", ""), ", ".join(c.get("labels") or []), _files(list(c.get("files") or []))] for c in conflicts])
    in_splits = sum(sum(v.values()) for v in sizes.values())
    n_near = sum(1 for g in groups if g.get("kind") == "near")
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
        "groups_note": f"{len(groups)} multi-file groups ({n_near} of them near duplicates: "
                       "re-saved or resized copies).",
        "conflicts": Table(["group", "labels", "files"], conflict_rows, more=conflict_more) if conflict_rows else None,
    }


def _config_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def reproduce_section(data: RunData, run_dir: Path, reports_dir: Path) -> dict:
    run = data.run
    command = run.get("command") or []
    config = data.config
    machine = run.get("machine") or {}
    versions = run.get("versions") or {}
    return {
        "command": shlex.join(str(c) for c in command) if command else "(not recorded)",
        "seed": config.get("seed"),
        "config": Table(["option", "value"], [[k, _config_value(v)] for k, v in sorted(config.items())]),
        "versions": Table(["package", "version"], [[k, str(v)] for k, v in sorted(versions.items())]),
        "machine": Table(["property", "value"], [["platform", str(machine.get("platform", DASH))],
                                    ["processor", str(machine.get("processor", DASH))],
                                    ["CPU cores", str(machine.get("cpu_count", DASH))]]),
        "created": run.get("created"),
        "bench_version": run.get("bench_version"),
        "data_hash": run.get("data_hash"),
        "regenerate": shlex.join(["bench", "report", str(run_dir), "--reports", str(reports_dir)]),
    }


# --------------------------------------------------------------------------- figures


def make_figures(data: RunData, deployment: dict, search: dict) -> dict:
    """All figures, keyed by name; per-backbone ones under ``"backbone"``: {name: Figure}."""
    from bench.report import figures as F

    out: dict = {"backbone": {}}
    names = [b.name for b in data.backbones]
    colours = F.backbone_colours(names)
    with_preds = {b.name: b.test_predictions for b in data.ok if b.has_predictions}

    def add(key, fig, title, caption):
        if fig is None:
            return None
        w, h = fig.get_size_inches()
        made = Figure(key, title, caption, F.png(fig), float(w), float(h))
        fig.clear()
        return made

    with F.style():
        rows = [b.row for b in data.ok]
        out["leaderboard"] = add(
            "leaderboard", F.leaderboard_points(rows, colours), "Test F1 and ROC AUC",
            "Points are test-set values, bars their 95 % bootstrap confidence intervals; backbones in validation rank "
            "order, best on top.")
        out["deployment"] = add(
            "deployment", F.deployment(rows, colours, deployment["flags"]), "Accuracy against cost",
            "Stars: Pareto-optimal (no other backbone is both more accurate and cheaper); circles: dominated. "
            "Vertical bars: 95 % CI of test accuracy.")
        for b in data.ok:
            out["backbone"][b.name] = add(
                f"training-{_slug(b.name)}",
                F.training_and_confusion(b.history, b.row.get("test_confusion_matrix"), data.classes, colours[b.name]),
                f"{b.name}: training and test confusion",
                f"Best trial ({b.row.get('best_trial')}): train (solid) and validation (dashed) per epoch; the red "
                "line marks the epoch whose weights were kept; a dotted line where fine-tuning began. Right: test "
                "confusion matrix, counts and share of each true class.")
        out["roc_pr"] = add(
            "roc-pr", F.roc_pr(with_preds, data.classes, colours), "ROC and precision\u2013recall curves",
            "Test split, all backbones overlaid. AP: average precision.")
        out["calibration"] = add(
            "calibration", F.reliability(with_preds, data.classes, colours), "Reliability diagram",
            "Predicted probability against the observed frequency in equal-width bins of the test split (dot size: "
            "images in the bin); points on the diagonal are well calibrated. ECE: expected calibration error. "
            "Below: how the predicted probabilities are spread.")
        trials = search["trials"]
        out["search_lr"] = add(
            "search-lr", F.search_learning_rate(trials, data.objective, colours) if len(trials) else None,
            "Objective against learning rate", "Every completed trial of every backbone.")
        out["search_choices"] = add(
            "search-choices", F.search_choices(trials, data.objective, colours) if len(trials) else None,
            "Objective by fine-tuning depth, pooling and dense layers",
            "Boxes summarise all completed trials; points are single trials, coloured by backbone.")
    return out


def gradcam_figure(run_dir: Path, data: RunData) -> Figure | None:
    """The recommended model's Grad-CAM grid, written by ``bench run``/``bench export``
    (``bench.explain.write_run_gradcam``); the report only embeds it, never predicts."""
    if not data.ok:
        return None
    best = data.ok[0].name
    png, meta = Path(run_dir) / best / "gradcam_grid.png", Path(run_dir) / best / "gradcam_grid.json"
    if not png.is_file():
        return None
    from PIL import Image

    with Image.open(png) as img:
        width, height = img.size
    picks = json.loads(meta.read_text()).get("picks", []) if meta.is_file() else []
    wrong = sum(1 for p in picks if not p.get("correct"))
    caption = (f"{len(picks)} test images picked deterministically ({len(picks) - wrong} correct, {wrong} "
               "misclassified); warm colours mark the regions that raised the score of the class named on each "
               "image.") if picks else "Test images with their Grad-CAM heatmaps."
    return Figure("gradcam", f"Grad-CAM of the recommended model ({best})", caption, png.read_bytes(),
                  width / 100, height / 100)


def _all_figures(figs: dict) -> list[Figure]:
    found = [f for k, f in figs.items() if k != "backbone" and f is not None]
    return found + [f for f in figs["backbone"].values() if f is not None]


# --------------------------------------------------------------------------- build


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = lambda table: table.markdown()
    return env


def context(data: RunData, run_dir: Path, reports_dir: Path) -> dict:
    tests = stats.pairwise_tests(
        {b.name: b.test_predictions for b in data.ok if b.has_predictions}, data.classes,
        seed=int(_f(data.config.get("seed")) if not math.isnan(_f(data.config.get("seed"))) else 0),
    ) if data.classes else []
    pairs = {(t.a, t.b): t for t in tests}
    pairs.update({(t.b, t.a): t.flipped() for t in tests})
    deployment = deployment_section(data)
    search = search_section(data)
    figs = make_figures(data, deployment, search)
    figs["gradcam"] = gradcam_figure(run_dir, data)
    per_backbone = []
    for b in data.backbones:
        per_backbone.append({
            "name": display_name(b),
            "ok": b.ok,
            "configuration": configuration(b.row) if b.ok else None,
            "message": b.row.get("message"),
            "figure": figs["backbone"].get(b.name),
            "has_predictions": b.has_predictions,
        })
    return {
        "run_name": data.name,
        "created": data.run.get("created"),
        "classes": data.classes,
        "banners": stats.banners(data),
        "summary": summary_section(data, pairs),
        "leaderboard": leaderboard_table(data),
        "failed_backbones": [(b.name, b.row.get("message") or "no message") for b in data.failed],
        "deployment": deployment,
        "statistics": statistics_section(data, tests),
        "per_backbone": per_backbone,
        "search": search,
        "data": data_section(data),
        "reproduce": reproduce_section(data, run_dir, reports_dir),
        "fig": figs,
        "objective": _objective_label(data.objective),
    }


def render(ctx: dict) -> tuple[str, str]:
    """(Markdown, HTML) text of the report for a :func:`context`."""
    env = _environment()
    return env.get_template("report.md.j2").render(**ctx), env.get_template("report.html.j2").render(**ctx)


def build_report(run_dir: Path, reports_dir: Path = Path("reports")) -> tuple[Path, Path]:
    """Write ``<reports_dir>/<run>/report.md`` (with its PNG figures) and ``report.html``.

    Reads only the files in ``run_dir``; raises :class:`BenchError` when it is not a run
    folder or the reports folder cannot be written. Returns (markdown path, html path).
    """
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    from bench.runfolder import check_writable

    out = check_writable(Path(reports_dir) / (run_dir.resolve().name or data.name), "--reports")
    ctx = context(data, run_dir, Path(reports_dir))
    markdown, html = render(ctx)
    figures = _all_figures(ctx["fig"])
    keep = {f.file for f in figures}
    for f in figures:
        write_bytes_atomic(out / f.file, f.data)
    for stale in out.glob(f"{FIGURE_PREFIX}*.png"):
        if stale.name not in keep:
            stale.unlink()
    md_path, html_path = out / "report.md", out / "report.html"
    write_text_atomic(md_path, markdown)
    write_text_atomic(html_path, html)
    for path in (md_path, html_path, *(out / f.file for f in figures)):
        _readable(path)
    return md_path, html_path


def _readable(path: Path) -> None:
    """Atomic writes go through a private (0600) temporary file; a report is meant to be shared."""
    try:
        os.chmod(path, 0o644)
    except OSError:  # pragma: no cover - e.g. a file system without permissions
        pass
