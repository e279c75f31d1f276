"""What a run folder shows about itself, as named facts a checklist item can point to.

Each fact is a short sentence built from the run's own files (run.json, dataset.json,
split.json, groups.csv, folds.json, leaderboard.json, each backbone's calibration.json,
predictions and Grad-CAM grid, the export) with pointers to where the evidence lies: files
relative to the run folder, and report sections by key (``data``, ``reproduce``...). A
fact whose evidence is absent is not made, so the items that need it fall back to
"partial" or "needs a person" (:func:`bench.report.checklists.items.status`).
"""

from __future__ import annotations

from typing import Callable

from bench.report.checklists import data_facts as D, model_facts as M
from bench.report.checklists.facts import Fact, Run
from bench.report.load import RunData

#: Every fact builder by name: the names the checklists' items use.
BUILDERS: dict[str, Callable[[Run], Fact | None]] = {f.__name__: f for f in (
    D.task, D.design, D.summary, D.source, D.inclusion, D.quality, D.preprocessing, D.outcome, D.inputs, D.sizes,
    D.precision, D.missing, D.partition, D.disjoint, D.flow, D.same_source, M.model, M.software, M.init, M.training,
    M.selection, M.ensembling, M.metrics, M.uncertainty, M.calibration, M.thresholds, M.imbalance, M.operating,
    M.robustness, M.explain, M.internal, M.failures, M.limitations, M.export, M.prediction_code, M.input_handling,
    M.reproduce)}


def gather(data: RunData, sections=()) -> dict[str, Fact]:
    """Every fact the run folder supports, by name; ``sections``: the keys of the report's sections."""
    run = Run(data, sections)
    facts = {name: build(run) for name, build in BUILDERS.items()}
    # a fact is evidence only with a pointer to it: a file of the run or a section of the report
    return {name: fact for name, fact in facts.items() if fact is not None and (fact.files or fact.sections)}

