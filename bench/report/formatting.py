"""How the report writes things: tables, figures, numbers with intervals, p-values, durations,
and a trial's configuration in words."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field

from bench.schema import Estimate, Source, metric_with_ci, to_float

FIGURE_PREFIX = "fig-"
DASH = "\u2014"


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


def num(value, digits: int = 3) -> str:
    v = to_float(value)
    return DASH if math.isnan(v) else f"{v:.{digits}f}".replace("-", "\u2212")


def with_ci(row: dict, metric: str, digits: int = 3) -> str:
    return metric_with_ci(row, metric, digits, style="dash", missing=DASH)


def interval(row: dict, metric: str, source: Source = Source.TEST) -> str:
    """``0.71\u20130.94``: the 95 % CI of ``metric`` from ``source`` in ``row``; empty without one."""
    estimate = Estimate.read(row, metric, source)
    return f"{num(estimate.low, 2)}\u2013{num(estimate.high, 2)}" if estimate.has_interval else ""


def percent(value) -> str:
    """A probability as ``"73 %"`` (``"< 1 %"``, ``"> 99 %"`` near the ends; a dash when missing)."""
    v = to_float(value)
    if math.isnan(v):
        return DASH
    if 0 < v < 0.005:
        return "< 1 %"
    if 0.995 < v < 1:
        return "> 99 %"
    return f"{100 * v:.0f} %"


def duration(seconds) -> str:
    s = to_float(seconds)
    if math.isnan(s):
        return DASH
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def millions(value) -> str:
    v = to_float(value)
    if math.isnan(v):
        return DASH
    return f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v / 1e3:.1f} k"


def lr(value) -> str:
    v = to_float(value)
    return DASH if math.isnan(v) else f"{v:.2g}"


def to_int(value) -> int | None:
    v = to_float(value)
    return None if math.isnan(v) else int(v)


def head_description(hp: dict) -> str:
    """``pooling → hidden layers`` of a hyperparameter dict (keys without the hp_ prefix)."""
    pooling = {"avg": "global average pooling", "max": "global max pooling", "flatten": "flattened features"}.get(
        str(hp.get("pooling")), f"{hp.get('pooling')} pooling")
    n = to_int(hp.get("dense_layers")) or 0
    layers = []
    for i in range(n):
        units, drop = to_int(hp.get(f"units_{i}")), to_float(hp.get(f"dropout_{i}"))
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
    n = to_int(value)
    if n is None:
        return "unknown fine-tuning depth"
    if n == 0:
        return "backbone frozen (only the head is trained)"
    return f"top {n} block{'s' if n > 1 else ''} of the backbone fine-tuned"


def frozen_pass_description(row: dict) -> str | None:
    """How the cached (frozen-backbone) features the search trained and validated on were
    computed, when not by TensorFlow in float32 (``None`` then)."""
    dtype = row.get("frozen_pass_dtype") or "float32"
    runtime = row.get("frozen_pass_runtime") or "tensorflow"
    if runtime == "openvino":
        parity = to_float(row.get("openvino_parity"))
        check = "" if math.isnan(parity) else f" (checked in float32: features within {parity:.1e} of TensorFlow's)"
        return f"frozen pass by OpenVINO in {row.get('openvino_precision') or dtype}{check}"
    if dtype != "float32":
        return f"frozen pass in {dtype}"
    return None


def configuration(row: dict) -> str:
    hp = {k[3:]: v for k, v in row.items() if k.startswith("hp_")}
    size = to_float(row.get("image_size"))  # a float in a leaderboard whose floor rows have none
    parts = [
        f"{row.get('image_size') if math.isnan(size) else f'{size:.0f}'} px input, weights {row.get('weights')}",
        depth_description(hp.get("unfreeze")),
        head_description(hp),
        f"learning rate {lr(hp.get('learning_rate'))}",
    ]
    frozen = frozen_pass_description(row)
    if frozen:
        parts.append(frozen)
    thr = to_float(row.get("test_threshold"))
    if not math.isnan(thr) and row.get("test_positive_class"):
        parts.append(
            f"decision threshold {thr:.3f} on P({row['test_positive_class']}), chosen on validation (Youden's J)")
    return "; ".join(parts)


#: How the report names the keyword starting points of ``--weights``.
WEIGHTS_WORDS = {"imagenet": "ImageNet weights (Keras)", "none": "random initialisation"}


def weights_sentence(rows: list[dict]) -> str | None:
    """Which starting weights the rows used, when the run compares several (its rows carry
    ``architecture`` and are named ``<backbone>@<label>``); None otherwise."""
    starts: dict[str, str] = {}
    for row in rows:
        if row.get("architecture") is not None:
            weights = str(row.get("weights"))
            starts.setdefault(str(row.get("backbone")).rpartition("@")[2], WEIGHTS_WORDS.get(weights, weights))
    if not starts:
        return None
    return ("Each row is a backbone with one starting point, named after its @: "
            + "; ".join(f"{label}: {what}" for label, what in starts.items()) + ".")


def flatten_limited(backbones) -> list:
    """The backbones whose flatten heads ``--max-head-weights`` kept to the output layer
    (their rows' ``flatten_hidden`` is false; rows without it never had the limit)."""
    return [b for b in backbones if b.row.get("flatten_hidden") is False]


def display_name(b) -> str:
    """A backbone's name as the report shows it (a :class:`bench.report.load.BackboneResult`)."""
    return f"{b.name} (notebook recipe)" if b.row.get("baseline") else b.name


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def p_text(p: float | None) -> str:
    """A p-value for a table cell: ``"0.03"``, ``"< 0.001"``, ``"1"``, ``"n/a"``."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2g}" if p < 0.995 else "1"


def fmt_p(p: float | None) -> str:
    """``"p = 0.03"``, ``"p < 0.001"``, ``"p = n/a"``."""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_signed(x: float, digits: int = 3) -> str:
    """``+0.031`` / ``−0.031`` (typographic minus)."""
    text = f"{x:+.{digits}f}"
    return text.replace("-", "\u2212")


def files_text(files: list[str], limit: int = 4) -> str:
    """The first ``limit`` file names, then how many more."""
    shown = ", ".join(files[:limit])
    return shown + (f", \u2026 ({len(files) - limit} more)" if len(files) > limit else "")
