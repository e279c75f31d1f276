"""The result schema: every metric a run reports, declared once, and the one typed
estimate that says where it comes from.

A result row (``result.json``, a leaderboard row) holds an estimate of metric ``m`` as
three columns: ``<source>m``, ``<source>m_ci_low`` and ``<source>m_ci_high``, where the
source is the held-out test split (``test_``) or the out-of-fold predictions of a
cross-validation (``cv_``); a row of an external evaluation or of the cross-run table
carries them unprefixed. :class:`Estimate` reads those columns, so nothing else spells
them; :data:`METRICS` says how each metric is named, whether it has an interval and
which way is better, as :mod:`bench.config` declares the options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Metric:
    """One reported metric: its column name, label, whether it carries a 95 % interval,
    and whether a higher value is better."""

    name: str
    label: str
    has_ci: bool = True
    higher_is_better: bool = True
    kind: type = float

    @property
    def long_label(self) -> str:
        """The label, with a note when lower values are better."""
        return self.label if self.higher_is_better else f"{self.label} (lower is better)"


#: Every scalar metric bench reports for a classifier, in the order tables show them.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy"),
    Metric("balanced_accuracy", "balanced accuracy"),
    Metric("precision", "precision"),
    Metric("recall", "sensitivity (recall)"),
    Metric("specificity", "specificity"),
    Metric("f1", "F1"),
    Metric("roc_auc", "ROC AUC"),
    Metric("pr_auc", "PR AUC"),
    Metric("brier", "Brier score", higher_is_better=False),
    Metric("brier_skill", "Brier skill"),
)}
#: Metrics that need the reference prevalence (the Brier skill score against it).
SKILL_METRICS = ("brier_skill",)
#: Metrics computed from one set of predictions (besides n, the confusion matrix and the threshold).
PREDICTION_METRICS = tuple(name for name in METRICS if name not in SKILL_METRICS)
#: Metrics given a bootstrap confidence interval.
CI_METRICS = tuple(name for name in PREDICTION_METRICS if METRICS[name].has_ci)


def metric(name: str) -> Metric:
    """The declared metric ``name``; an undeclared one is shown under its own name."""
    return METRICS.get(name) or Metric(name, name.replace("_", " "))


def label(name: str) -> str:
    return metric(name).label


#: A leaderboard row's ``kind``: a searched candidate (a backbone, or the notebook recipe),
#: or a floor baseline (:mod:`bench.evaluate.floor`: a model that never looks at anatomy,
#: or a linear probe on frozen features), scored on the same images, never deployed.
BACKBONE_KIND = "backbone"
FLOOR_KIND = "floor"


#: A leaderboard row's ``status`` for a backbone ``--budget`` stopped before it finished
#: (``message`` says why; :mod:`bench.budget`); such rows are not ranked.
STOPPED = "stopped"

#: Columns of trials and leaderboard rows that measure time (seconds, milliseconds): the
#: only ones two identical runs may differ in.
TIMING_COLUMNS = ("seconds", "search_seconds", "prepare_seconds", "latency_ms_b1", "latency_ms_b32", "build_seconds",
                  "fit_seconds")


def is_floor(row) -> bool:
    """Whether a leaderboard row (a dict or a pandas row) is a floor baseline's."""
    return row.get("kind") == FLOOR_KIND


class Source(Enum):
    """Where an estimate comes from, and the column prefix it is stored under."""

    TEST = "test_"  # the held-out test split, predicted once by the chosen model
    OUT_OF_FOLD = "cv_"  # every cross-validated image, predicted by the fold that held it out
    PLAIN = ""  # a row about one set of predictions (external evaluation, cross-run table)

    @property
    def prefix(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        return {"test_": "test", "cv_": "CV", "": ""}[self.value]


def column(name: str, source: Source = Source.TEST, bound: str | None = None) -> str:
    """The row column of metric ``name`` from ``source``; ``bound``: ``"low"``/``"high"``."""
    return f"{source.prefix}{name}" + (f"_ci_{bound}" if bound else "")


def ci_columns(names, source: Source) -> list[str]:
    """Value and bounds of each metric in ``names``, in that order."""
    return [column(n, source, b) for n in names for b in (None, "low", "high")]


def row_source(row_or_columns) -> Source:
    """The source of a row's (or a table's) estimates that rank it: out of fold when it
    holds a cross-validated objective, else the test split."""
    keys = getattr(row_or_columns, "columns", row_or_columns)
    return Source.OUT_OF_FOLD if "cv_objective" in keys else Source.TEST


#: Interval styles: "brackets" ``0.842 [0.71, 0.94]`` (terminal, model card), "dash"
#: ``0.842 (0.71–0.94)`` (reports).
CI_STYLES = ("brackets", "dash")


def to_float(value, default: float = float("nan")) -> float:
    """``value`` as a float; ``default`` when it is missing, not a number, or NaN."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(out) else out


@dataclass(frozen=True)
class Estimate:
    """A metric's value with its 95 % interval (NaN where absent), and its source."""

    metric: Metric
    source: Source
    value: float
    low: float = math.nan
    high: float = math.nan

    @classmethod
    def read(cls, row: dict, name: str, source: Source = Source.TEST) -> "Estimate":
        """The estimate of ``name`` in ``row`` (missing columns read as NaN)."""
        get = row.get
        return cls(metric(name), source, to_float(get(column(name, source))),
                   to_float(get(column(name, source, "low"))), to_float(get(column(name, source, "high"))))

    @property
    def missing(self) -> bool:
        return math.isnan(self.value)

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def text(self, digits: int = 3, ci_digits: int = 2, style: str = "brackets", missing: str = "-") -> str:
        """``0.842 [0.71, 0.94]`` (or the ``dash`` style); the value alone without an
        interval; ``missing`` without a value."""
        if style not in CI_STYLES:
            raise ValueError(f"Expected style in {CI_STYLES}. Received: style={style!r}")
        if self.missing:
            return missing
        if not self.has_interval:
            return f"{self.value:.{digits}f}"
        if style == "dash":
            return f"{self.value:.{digits}f} ({self.low:.{ci_digits}f}\u2013{self.high:.{ci_digits}f})"
        return f"{self.value:.{digits}f} [{self.low:.{ci_digits}f}, {self.high:.{ci_digits}f}]"


def metric_with_ci(row: dict, name: str, digits: int = 3, ci_digits: int = 2, style: str = "brackets",
                   missing: str = "-", source: Source = Source.TEST) -> str:
    """The estimate of ``name`` from ``source`` in ``row`` as one short text (:meth:`Estimate.text`)."""
    return Estimate.read(row, name, source).text(digits, ci_digits, style, missing)
