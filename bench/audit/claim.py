"""A reported number (``--claim accuracy=0.96``) and the verdict on it: whether it lies
inside the honest protocol's 95 % interval, and the sentence that says so.

Pure functions of their arguments (no files): :func:`parse_claim` reads the claim,
:func:`judge` places it against an interval, :func:`verdict_sentence` says it in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.errors import BenchError
from bench.schema import CI_METRICS, Estimate, metric

#: Other names a paper uses for a metric bench reports.
ALIASES = {"auc": "roc_auc", "sensitivity": "recall"}
INSIDE, ABOVE, BELOW, UNKNOWN = "inside", "above", "below", "unknown"


@dataclass(frozen=True)
class Claim:
    """A metric bench reports with an interval, and the value claimed for it (0 to 1)."""

    metric: str
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric}={self.value:g}"

    @property
    def label(self) -> str:
        return metric(self.metric).label

    def as_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "text": self.text, "label": self.label}


def parse_claim(text: str) -> Claim:
    """``METRIC=VALUE`` (``accuracy=0.96``, ``roc_auc=0.9``, ``accuracy=96%``) as a
    :class:`Claim`; one line naming the valid metrics otherwise."""
    valid = ", ".join(CI_METRICS)
    name, sep, raw = str(text).partition("=")
    name = name.strip().lower().replace("-", "_").replace(" ", "_")
    name = ALIASES.get(name, name)
    if not sep or not name:
        raise BenchError(f"--claim {text!r} is not METRIC=VALUE; write e.g. --claim accuracy=0.96 (metrics: {valid})")
    if name not in CI_METRICS:
        raise BenchError(f"--claim names unknown metric {name!r}; choose one of: {valid}")
    raw = raw.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%")) / (100 if percent else 1)
    except ValueError:
        raise BenchError(f"--claim {text!r}: {raw!r} is not a number; write e.g. --claim {name}=0.96") from None
    if not (0.0 <= value <= 1.0):  # also refuses nan
        raise BenchError(f"--claim {text!r}: {metric(name).label} lies between 0 and 1; write e.g. {name}=0.96 "
                         f"or {name}=96%")
    return Claim(name, value)


def judge(claim: Claim, honest: Estimate) -> str:
    """Where the claimed value lies against the honest interval: ``inside`` (bounds
    included), ``above``, ``below``, or ``unknown`` without an interval."""
    if not honest.has_interval:
        return UNKNOWN
    if claim.value > honest.high:
        return ABOVE
    if claim.value < honest.low:
        return BELOW
    return INSIDE


def _interval(e: Estimate) -> str:
    return f"[{e.low:.2f}, {e.high:.2f}]"


def verdict_sentence(claim: Claim, verdict: str, honest: Estimate, naive: Estimate, protocol: str,
                     copies: dict | None = None, reason: str = "") -> str:
    """The verdict in one sentence with the word "claim": where the claim lies against the
    honest 95 % interval (``protocol``: how the honest estimate was made, in words), then
    what the naive protocol gives and how many of its test images have a copy in its train
    split (``copies``: ``test_images`` and ``with_copy_in_train``); ``reason``: why there is
    no honest interval."""
    if verdict == UNKNOWN:
        return (f"The claim {claim.text} cannot be checked: the honest protocol ({protocol}) gives no 95 % interval "
                f"for {claim.label}{f' ({reason})' if reason else ''}.")
    where = {INSIDE: "inside", ABOVE: "outside (above)", BELOW: "outside (below)"}[verdict]
    support = "is consistent with it" if verdict == INSIDE else "does not support it"
    text = (f"The claim {claim.text} lies {where} the honest 95 % interval {_interval(honest)} ({protocol}): "
            f"the honest protocol {support}")
    if not naive.missing:
        text += f"; the naive protocol (one plain split, copies ignored) gives {naive.text(2, 2)}"
        if copies and copies.get("test_images"):
            text += (f", with {copies['with_copy_in_train']} of its {copies['test_images']} test images having a "
                     "copy in its train split")
    return text + "."


def oriented_best(rows: list[dict], name: str, source) -> dict | None:
    """The row of ``rows`` with the best estimate of metric ``name`` from ``source`` (the
    highest, or the lowest where lower is better); None when none has a value."""
    scored = [(Estimate.read(r, name, source).value, r) for r in rows]
    scored = [(v, r) for v, r in scored if not math.isnan(v)]
    if not scored:
        return None
    sign = 1 if metric(name).higher_is_better else -1
    return max(scored, key=lambda item: sign * item[0])[1]
