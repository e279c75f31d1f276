"""Reporting checklists filled from a run: TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM
(2024 update; Tejani et al., Radiology: Artificial Intelligence 2024).

:mod:`~bench.report.checklists.tripod_ai` and :mod:`~bench.report.checklists.claim` hold
the items as data (numbers, sections, paraphrased topics, the evidence each needs);
:mod:`~bench.report.checklists.evidence` turns the run folder into named facts with
pointers to files and report sections; :mod:`~bench.report.checklists.compose` marks every
item auto, partial or needs a person and writes ``checklist.md`` and ``checklist.json``
into the run folder. :func:`bench.report.build_report` calls it, so ``bench run`` and
``bench report RUN`` both write them.
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "fill": "compose", "write_checklists": "compose", "markdown": "compose", "counts_line": "compose", "gather": "evidence",
})
