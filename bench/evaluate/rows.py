"""Reading the flat result rows (``result.json``, ``leaderboard.json``): a value as a
number or NaN, and a metric with its 95 % confidence interval as one short text.

The leaderboard printed by ``bench run``, the report and an export's model card all show
test metrics with their intervals; they format them here, each in its own style.
"""

from __future__ import annotations

import math

#: Interval styles: "brackets" ``0.842 [0.71, 0.94]`` (terminal, model card), "dash"
#: ``0.842 (0.71–0.94)`` (the report).
CI_STYLES = ("brackets", "dash")


def to_float(value, default: float = float("nan")) -> float:
    """``value`` as a float; ``default`` when it is missing, not a number, or NaN."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(out) else out


def metric_with_ci(row: dict, metric: str, digits: int = 3, ci_digits: int = 2, style: str = "brackets",
                   missing: str = "-", prefix: str = "test_") -> str:
    """``row[prefix + metric]`` with its ``_ci_low`` / ``_ci_high`` bounds; ``missing`` when
    there is no value, the value alone when there is no interval."""
    if style not in CI_STYLES:
        raise ValueError(f"Expected style in {CI_STYLES}. Received: style={style!r}")
    value = to_float(row.get(f"{prefix}{metric}"))
    if math.isnan(value):
        return missing
    low, high = to_float(row.get(f"{prefix}{metric}_ci_low")), to_float(row.get(f"{prefix}{metric}_ci_high"))
    if math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f}"
    if style == "dash":
        return f"{value:.{digits}f} ({low:.{ci_digits}f}\u2013{high:.{ci_digits}f})"
    return f"{value:.{digits}f} [{low:.{ci_digits}f}, {high:.{ci_digits}f}]"
