"""``bench report``: a run folder in, ``report.md`` and ``report.html`` out.

A pure function of the files in the run folder (see :mod:`bench.report.load`): nothing
here trains or predicts. Figures are PNG files beside ``report.md`` (relative links, so
the Markdown reads on GitHub) and the same bytes are embedded as base64 in
``report.html``, which is therefore a single file that can be mailed.

    from bench.report import build_report
    md_path, html_path = build_report(Path("results/run-1"), Path("reports"))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from bench.report import findings, sections
from bench.report.calibration_section import section as decisions_section
from bench.report.floor_section import floor_section
from bench.report.formatting import FIGURE_PREFIX, Figure, display_name
from bench.report.load import RunData, copies_figure, load_run
from bench.report.rendering import as_figure, rendered_together
from bench.schema import STOPPED, Source
from bench.atomic import write_bytes_atomic, write_text_atomic

log = logging.getLogger("bench.progress")

TEMPLATES = Path(__file__).parent / "templates"
#: The report's one template pair: ``report.md.j2`` and ``report.html.j2``.
TEMPLATE = "report"


def make_figures(data: RunData, design: dict, deployment: dict, search: dict, decisions: dict) -> dict:
    """All figures, keyed by name; per-backbone ones under ``"backbone"``: {name: Figure}.
    Estimates from ``data.source``; ``design``: the design parts of :func:`context` (its words,
    its per-backbone figure and the figures only it has); ``decisions``: its decision reports."""
    from bench.report import figures as F

    out: dict = {"backbone": {}}
    colours = F.backbone_colours([b.name for b in data.backbones])
    source, words, add = data.source, design["words"], as_figure
    predictions = {b.name: p for b in data.ok if (p := b.predictions(source)) is not None and len(p)}

    with F.style():
        rows = [b.row for b in data.ok]
        out["leaderboard"] = add(
            "leaderboard", F.leaderboard_points(rows, colours, source=source),
            f"{sections.capital(source.label)} F1 and ROC AUC", words["fig_leaderboard"])
        out["deployment"] = add(
            "deployment", F.deployment([b.row for b in deployment["backbones"]], colours, deployment["flags"],
                                       source=source), "Accuracy against cost", words["fig_deployment"]
        ) if deployment["pareto"] else None  # one measured model: no trade-off to draw
        for b in data.ok:
            out["backbone"][b.name] = design["backbone_figure"](b, colours[b.name])
        out["calibration"] = add(
            "calibration", F.reliability(predictions, data.classes, colours, where=words["where"]),
            "Reliability diagram (calibrated)", words["fig_calibration"])
        out["decision_curve"] = add(
            "decision-curve", F.decision_curves(decisions, data.classes, colours, where=words["where"]),
            words["decision_title"], words["fig_decision"]) if len(data.classes) == 2 else None
        trials = search["trials"]
        out["search_lr"] = add(
            "search-lr", F.search_learning_rate(trials, data.objective, colours) if len(trials) else None,
            "Objective against learning rate", words["fig_search_lr"])
        out["search_choices"] = add(
            "search-choices", F.search_choices(trials, data.objective, colours) if len(trials) else None,
            "Objective by fine-tuning depth, pooling and dense layers", words["fig_search_choices"])
    return {**out, **design["figures"]}


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


#: The report's sections in order: (key, title, short title in the HTML menu, HTML anchor);
#: "folds" only where the run has folds.
SECTIONS = (("summary", "Summary", "Summary", "summary"), ("leaderboard", "Leaderboard", "Leaderboard", "leaderboard"),
            ("folds", "Cross-validation", "Cross-validation", "crossval"),
            ("deployment", "Pick for deployment", "Deployment", "deployment"),
            ("statistics", "Statistical comparison", "Statistics", "statistics"),
            ("per_backbone", "Per backbone", "Per backbone", "per-backbone"),
            ("search", "What the search learned", "Search", "search"), ("data", "Data", "Data", "data"),
            ("reproduce", "Reproduce", "Reproduce", "reproduce"))


def context(data: RunData, run_dir: Path, reports_dir: Path) -> dict:
    """The one report context, of a single split or a cross-validated run alike. The one
    design choice of the report is made here, by where the run's estimates come from: the
    design parts (:func:`bench.report.split_section.parts` or
    :func:`bench.report.folds_section.parts`) give the design's words, its decision
    reports, its statistical comparison and the pieces only folds have; every section is
    then built once, for both, by :mod:`bench.report.sections`."""
    from bench.report import folds_section, split_section

    design = {Source.TEST: split_section.parts, Source.OUT_OF_FOLD: folds_section.parts}[data.source](data, run_dir)
    words, decisions = design["words"], design["decisions"]  # the decision part and its figure both draw on them
    deployment = sections.deployment_section(data, words)
    search = sections.search_section(data, design)
    figs = make_figures(data, design, deployment, search, decisions)
    figs["gradcam"], figs["copies"] = design["gradcam"], copies_figure(run_dir)
    texts = sections.per_backbone_texts(data, design)
    per_backbone = [{"name": display_name(b), "ok": b.ok, "message": b.row.get("message"),
                     "stopped": b.row.get("status") == STOPPED,
                     "figure": figs["backbone"].get(b.name), "text": texts.get(b.name)} for b in data.backbones]
    shown = [s for s in SECTIONS if s[0] != "folds" or design["folds"]]
    return {
        "evaluation": design["evaluation"],
        "summary": sections.summary_section(data, design),
        "leaderboard": sections.leaderboard_table(data, design.get("leaderboard_columns", ()),
                                                  design.get("leaderboard_end_columns", ())),
        "leaderboard_note": sections.leaderboard_note(data, words),
        "floor": floor_section(data),
        "folds": design["folds"],
        "comparison": design["comparison"],
        "deployment": deployment,
        "search": search,
        "run_name": data.name,
        "created": data.run.get("created"),
        "classes": data.classes,
        "banners": findings.banners(data),
        "failed_backbones": [not_finished_text(b) for b in data.failed],
        "budget": budget_text(run_dir),
        "decisions": decisions_section(data, decisions),
        "per_backbone": per_backbone,
        "data": {**sections.data_section(data), **design["data"]},
        "reproduce": sections.reproduce_section(data, run_dir, reports_dir),
        "fig": figs,
        "objective": sections._objective_label(data.objective),
        "nav": [{"no": i, "title": title, "short": short, "id": anchor, "md_anchor": slug_anchor(title)}
                for i, (_, title, short, anchor) in enumerate(shown, 1)],
        "no": {key: i for i, (key, *_) in enumerate(shown, 1)},
    }


def not_finished_text(b) -> str:
    """``densenet121 failed: ...`` or, for a backbone ``--budget`` stopped, its evidence."""
    message = b.row.get("message") or "no message"
    return f"{b.name}: {message}" if b.row.get("status") == STOPPED else f"{b.name} failed: {message}"


def budget_text(run_dir: Path) -> str:
    """The run's ``--budget``, the time its searches used and what it stopped (empty without one)."""
    from bench.budget import duration_text, read_budget

    b = read_budget(run_dir)
    if not b:
        return ""
    stopped = b.get("stopped") or {}
    cut = (f"It stopped {len(stopped)} backbone{'s' if len(stopped) != 1 else ''} before the end: "
           + ", ".join(stopped) + " (why: above).") if stopped else "Every backbone finished its searches."
    return (f"--budget {duration_text(b['budget_s'])}: the searches, the final evaluation and the model to deploy "
            f"used {duration_text(b['spent_s'])}; each search stopped once its share of the time left was used, "
            f"a trial in progress at the end of its epoch. {cut}")


def slug_anchor(title: str) -> str:
    """The anchor GitHub gives a Markdown heading's words: lower case, spaces as hyphens."""
    return "-".join(title.lower().split())


def render(ctx: dict) -> tuple[str, str]:
    """(Markdown, HTML) text of the report for a :func:`context`: one template pair for every design."""
    env = _environment()
    return env.get_template(f"{TEMPLATE}.md.j2").render(**ctx), env.get_template(f"{TEMPLATE}.html.j2").render(**ctx)


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote, and the report's verdict (the recommendation,
    whether it beats the runner-up by the paired test, and whether any backbone beats the
    best floor baseline beyond noise). Unpacks as ``(markdown path, html path)``."""

    markdown: Path
    html: Path
    verdict: str

    def __iter__(self):
        return iter((self.markdown, self.html))


def verdict(summary: dict, floor: dict | None = None) -> str:
    """``Recommended: <backbone>. <the paired test against the runner-up>`` (or why there is
    none), then the floor sentence (:mod:`bench.report.floor_section`) on its own line."""
    after = f"\n{floor['sentence']}" if floor and floor.get("sentence") else ""
    if not summary.get("best"):
        return f"No recommendation: no backbone finished. {summary.get('rule', '')}".strip() + after
    return f"Recommended: {summary['best_display']}. {summary['significance']}" + after


def build_report(run_dir: Path, reports_dir: Path = Path("reports")) -> Report:
    """Write ``<reports_dir>/<run>/report.md`` (with its PNG figures) and ``report.html``.

    Reads only the files in ``run_dir``; raises :class:`BenchError` when it is not a run
    folder or the reports folder cannot be written.
    """
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    from bench.runfolder import check_writable

    out = check_writable(Path(reports_dir) / (run_dir.resolve().name or data.name), "--reports")
    log.info(f"report: computing its tables, comparisons and figures into {out}")
    with rendered_together():  # the figures' PNGs, half of them in a second process (bench.report.rendering)
        ctx = context(data, run_dir, Path(reports_dir))
    ctx["checklists"] = checklists(data, run_dir, out, ctx["no"])
    figures = _all_figures(ctx["fig"])
    log.info(f"report: writing report.md, report.html and {len(figures)} figures")
    markdown, html = render(ctx)
    return Report(*write_pages(out, "report", markdown, html, figures), verdict(ctx["summary"], ctx["floor"])
                  + (f"\n{ctx['budget']}" if ctx["budget"] else ""))


def checklists(data: RunData, run_dir: Path, out: Path, numbers: dict) -> dict:
    """Write TRIPOD+AI and CLAIM filled from the run (``checklist.md`` / ``.json``) into the
    run folder (:mod:`bench.report.checklists`), pointing at the report's sections by their
    ``numbers``; what the report says of them: the counts and the link from ``out`` (None
    when the run folder cannot be written, e.g. a read-only copy of a run)."""
    from bench.report.checklists import counts_line, fill, write_checklists

    sections = {key: (numbers[key], title) for key, title, *_ in SECTIONS if key in numbers}
    filled = fill(data, sections)
    try:
        md, _ = write_checklists(filled, run_dir)
        link = Path(os.path.relpath(md, out)).as_posix()
    except OSError as exc:
        log.warning(f"report: cannot write checklist.md into {run_dir} ({exc.strerror or exc}); the report gives "
                    "the counts only")
        link = None
    return {"link": link, "lines": [counts_line(c) for c in filled["checklists"]]}


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
