"""Report stage: ``bench report`` turns a run folder into ``report.md`` and ``report.html``.

A pure function of the files in the run folder: :mod:`~bench.report.load` reads them,
:mod:`~bench.report.sections` and :mod:`~bench.report.findings` turn them into tables and
plain-words judgements, :mod:`~bench.report.formatting` writes the numbers,
:mod:`~bench.report.figures` draws the plots, :mod:`~bench.report.build` renders the
Jinja templates (figures as PNG files beside ``report.md`` and embedded as base64 in the
single-file ``report.html``), and :mod:`~bench.report.browser` checks the HTML in
headless Chromium. One context (:func:`~bench.report.build.context`) and one template
pair serve a single split and a cross-validated run (``bench run --cv K``) alike; the
sections are written once, reading estimates from the run's :class:`~bench.schema.Source`;
the design's words and the parts only one design has come from
:mod:`~bench.report.split_section` or :mod:`~bench.report.folds_section` (the
cross-validation section, fold columns, per-fold kept trials, the final model's search,
:mod:`~bench.report.folds_figures` and the paired tests of
:mod:`~bench.report.folds_comparison`), chosen once in the report context.
:mod:`~bench.report.checklists` fills TRIPOD+AI and CLAIM from the run and writes
``checklist.md`` / ``checklist.json`` into the run folder, which the report links.
:mod:`~bench.report.scan_summary` is the text ``bench scan`` prints (the data stage's
objects and the shortcut check of :mod:`bench.evaluate.shortcuts`). Nothing here trains
or predicts.

    from bench.report import build_report
    md_path, html_path = build_report(Path("results/run-1"), Path("reports"))
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "build_report": "build", "render": "build", "load_run": "load", "RunData": "load",
})
