"""``bench report``: a run folder in, ``report.md`` and ``report.html`` out.

A pure function of the files in the run folder (see :mod:`bench.report.load`): nothing
here trains or predicts. Figures are PNG files beside ``report.md`` (relative links, so
the Markdown reads on GitHub) and the same bytes are embedded as base64 in
``report.html``, which is therefore a single file that can be mailed.

    from bench.report import build_report
    md_path, html_path = build_report(Path("results/run-1"), Path("reports"))
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.evaluate.paired import pairwise_tests
from bench.report import findings, sections
from bench.report.calibration_section import decision_reports
from bench.report.calibration_section import section as decisions_section
from bench.report.formatting import (
    FIGURE_PREFIX,
    Figure,
    configuration,
    display_name,
    slug,
)
from bench.report.load import RunData, copies_figure, gradcam_figure, load_run
from bench.schema import Source
from bench.atomic import write_bytes_atomic, write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"
#: The report's one template pair: ``report.md.j2`` and ``report.html.j2``.
TEMPLATE = "report"


def make_figures(data: RunData, deployment: dict, search: dict, decisions: dict) -> dict:
    """All figures, keyed by name; per-backbone ones under ``"backbone"``: {name: Figure}.
    ``decisions``: :func:`~bench.report.calibration_section.decision_reports` of ``data``."""
    from bench.report import figures as F

    out: dict = {"backbone": {}}
    names = [b.name for b in data.backbones]
    colours = F.backbone_colours(names)
    with_preds = {b.name: b.test_predictions for b in data.ok if b.has_predictions}

    add = F.as_figure

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
                f"training-{slug(b.name)}",
                F.training_and_confusion(b.history, b.row.get("test_confusion_matrix"), data.classes, colours[b.name]),
                f"{b.name}: training and test confusion",
                f"Best trial ({b.row.get('best_trial')}): train (solid) and validation (dashed) per epoch; the red "
                "line marks the epoch whose weights were kept; a dotted line where fine-tuning began. Right: test "
                "confusion matrix, counts and share of each true class.")
        out["roc_pr"] = add(
            "roc-pr", F.roc_pr(with_preds, data.classes, colours), "ROC and precision\u2013recall curves",
            "Test split, all backbones overlaid. AP: average precision.")
        out["calibration"] = add(
            "calibration", F.reliability(with_preds, data.classes, colours), "Reliability diagram (calibrated)",
            "Calibrated predicted probability against the observed frequency in equal-count bins of the test split, "
            "bars the 95 % Wilson intervals; points on the diagonal are well calibrated. ECE: expected calibration "
            "error over these bins. Below: how the predicted probabilities are spread.")
        out["decision_curve"] = None
        if len(data.classes) == 2:
            out["decision_curve"] = add(
                "decision-curve", F.decision_curves(decisions, data.classes, colours), "Decision curve",
                "Net benefit = TP/N − FP/N · t/(1−t) of acting on the calibrated probability at "
                "threshold t (Vickers & Elkin 2006), bands the 95 % bootstrap interval over duplicate groups of the "
                "test split, against treating every image as positive and treating none. A model is worth using at "
                "the thresholds where it lies above both.")
        trials = search["trials"]
        out["search_lr"] = add(
            "search-lr", F.search_learning_rate(trials, data.objective, colours) if len(trials) else None,
            "Objective against learning rate", "Every completed trial of every backbone.")
        out["search_choices"] = add(
            "search-choices", F.search_choices(trials, data.objective, colours) if len(trials) else None,
            "Objective by fine-tuning depth, pooling and dense layers",
            "Boxes summarise all completed trials; points are single trials, coloured by backbone.")
    return out


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


def groups_of_test_images(data: RunData, predictions: dict) -> dict | None:
    """File -> duplicate group of the test images (split.json), when every compared image has one;
    ``None`` (images as the unit) for runs whose split.json does not list its files."""
    groups = {f["path"]: str(f["group"]) for f in data.split.get("files") or []
              if f.get("split") == "test" and f.get("group") is not None}
    files = set().union(*(set(p["file"]) for p in predictions.values())) if predictions else set()
    return groups if files and files <= groups.keys() else None


#: The report's sections in order: (key, title, short title in the HTML menu, HTML anchor);
#: "folds" only where the run has folds.
SECTIONS = (("summary", "Summary", "Summary", "summary"), ("leaderboard", "Leaderboard", "Leaderboard", "leaderboard"),
            ("folds", "Cross-validation", "Cross-validation", "crossval"),
            ("deployment", "Pick for deployment", "Deployment", "deployment"),
            ("statistics", "Statistical comparison", "Statistics", "statistics"),
            ("per_backbone", "Per backbone", "Per backbone", "per-backbone"),
            ("search", "What the search learned", "Search", "search"), ("data", "Data", "Data", "data"),
            ("reproduce", "Reproduce", "Reproduce", "reproduce"))


def split_parts(data: RunData, run_dir: Path, decisions: dict) -> dict:
    """The design-specific parts of a single-split run's report (see :func:`context`): its
    statistical comparison is on the test split (McNemar, paired bootstrap, DeLong), and it
    has no folds section."""
    predictions = {b.name: b.test_predictions for b in data.ok if b.has_predictions}
    tests = pairwise_tests(predictions, data.classes, seed=data.seed,
                           groups=groups_of_test_images(data, predictions)) if data.classes else []
    pairs = {(t.a, t.b): t for t in tests}
    pairs.update({(t.b, t.a): t.flipped() for t in tests})
    deployment = sections.deployment_section(data)
    search = sections.search_section(data)
    return {
        "evaluation": "single train/validation/test split",
        "summary": sections.summary_section(data, pairs),
        "leaderboard": sections.leaderboard_table(data),
        "leaderboard_note": leaderboard_note(data),
        "folds": None,
        "comparison": sections.statistics_section(data, tests),
        "deployment": deployment,
        "search": search,
        "per_backbone_text": {b.name: f"{configuration(b.row)}." for b in data.ok},
        "data": {},
        "fig": make_figures(data, deployment, search, decisions),
        "gradcam": gradcam_figure(run_dir, data),
    }


def context(data: RunData, run_dir: Path, reports_dir: Path) -> dict:
    """The one report context, of a single split or a cross-validated run alike: the parts
    that differ by design come from :func:`split_parts` or
    :func:`bench.report.folds_section.parts`, chosen once by where the run's estimates come
    from; everything else is built here for both."""
    from bench.report import folds_section

    decisions = decision_reports(data)  # the decision part and its figure both draw on it
    design_parts = {Source.TEST: split_parts, Source.OUT_OF_FOLD: folds_section.parts}[data.source]
    parts = design_parts(data, run_dir, decisions)
    figs = parts.pop("fig")
    figs["gradcam"], figs["copies"] = parts.pop("gradcam"), copies_figure(run_dir)
    texts = parts.pop("per_backbone_text")
    per_backbone = [{"name": display_name(b), "ok": b.ok, "message": b.row.get("message"),
                     "figure": figs["backbone"].get(b.name), "text": texts.get(b.name)} for b in data.backbones]
    shown = [s for s in SECTIONS if s[0] != "folds" or parts["folds"]]
    return {
        **parts,
        "run_name": data.name,
        "created": data.run.get("created"),
        "classes": data.classes,
        "banners": findings.banners(data),
        "failed_backbones": [(b.name, b.row.get("message") or "no message") for b in data.failed],
        "decisions": decisions_section(data, decisions),
        "per_backbone": per_backbone,
        "data": {**sections.data_section(data), **parts["data"]},
        "reproduce": sections.reproduce_section(data, run_dir, reports_dir),
        "fig": figs,
        "objective": sections._objective_label(data.objective),
        "nav": [{"no": i, "title": title, "short": short, "id": anchor, "md_anchor": slug_anchor(title)}
                for i, (_, title, short, anchor) in enumerate(shown, 1)],
        "no": {key: i for i, (key, *_) in enumerate(shown, 1)},
    }


def slug_anchor(title: str) -> str:
    """The anchor GitHub gives a Markdown heading's words: lower case, spaces as hyphens."""
    return "-".join(title.lower().split())


def leaderboard_note(data: RunData) -> str:
    """The leaderboard's caption: what the intervals resample and what the selection score is."""
    unit = next((sections.ci_unit_text(b.row, detail=False) for b in data.ok if b.row.get("test_ci_unit")),
                "resamples of the test images")
    positive = f"({data.classes[1]})" if len(data.classes) == 2 else "(macro averages)"
    return (f"One row per backbone, ranked by {sections._objective_label(data.objective)} (validation). Test values "
            f"with 95 % bootstrap CIs in parentheses, over {unit}; sensitivity and specificity are those of the positive "
            f"class {positive}. The {sections.SELECTION_SCORE} is the kept trial's validation value, the best over "
            "all trials and epochs of the search: a maximum over many tries on one small validation split.")


def render(ctx: dict) -> tuple[str, str]:
    """(Markdown, HTML) text of the report for a :func:`context`: one template pair for every design."""
    env = _environment()
    return env.get_template(f"{TEMPLATE}.md.j2").render(**ctx), env.get_template(f"{TEMPLATE}.html.j2").render(**ctx)


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
    return write_pages(out, "report", markdown, html, _all_figures(ctx["fig"]))


def write_pages(out: Path, stem: str, markdown: str, html: str, figures: list[Figure],
                stale: list[str] | None = None) -> tuple[Path, Path]:
    """``<stem>.md`` with its figures beside it and ``<stem>.html`` into ``out``, readable by
    all. Figure files left from an earlier build go: every ``fig-*.png`` not drawn now, or
    (``stale`` given) only those named there."""
    keep = {f.file for f in figures}
    for f in figures:
        write_bytes_atomic(out / f.file, f.data)
    old = out.glob(f"{FIGURE_PREFIX}*.png") if stale is None else (out / name for name in stale)
    for path in old:
        if path.name not in keep:
            path.unlink(missing_ok=True)
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
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
