"""The model card's YAML front matter: its metrics in Hugging Face's ``model-index`` layout,
each with its confidence interval in structured fields.

Hugging Face reads a model card's metadata from a YAML block between ``---`` lines at the
top of the Markdown (huggingface.co/docs/hub/model-cards). The documented layout is
``model-index: - name, results: - {task: {type, name}, dataset: {name, type, split,
revision}, metrics: - {type, value, name}}``; bench adds to each metric the fields
``ci_low``, ``ci_high``, ``ci_level``, ``ci_method`` and ``estimate`` (``test``: the held-out
test split, scored once after the choice; ``out-of-fold``: cross-validation, every image
predicted by a model that never saw it) and ``n``, the images behind the estimate. Readers
that know only the documented fields skip them. The values are the leaderboard row's own
numbers, unrounded.

The YAML is written here (block style, strings as JSON-quoted scalars, which YAML reads
as they are), so exporting needs no YAML library.
"""

from __future__ import annotations

import json
import math
import re

from bench.deploy.run_info import RunInfo
from bench.schema import Estimate, Source, to_float

#: Metrics the front matter lists, by where the estimate comes from, in this order.
INDEX_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "precision", "recall", "specificity",
                 "brier")
#: Hugging Face metric ids where one exists (hf.co/metrics); other metrics keep bench's name.
HF_METRIC = {"brier": "brier_score"}
ESTIMATES = {Source.TEST: "test", Source.OUT_OF_FOLD: "out-of-fold"}
#: What a bootstrap resampled, by the row's ``ci_unit``.
UNITS = {"group": "groups of linked copies", "image": "images"}


def _metric(row: dict, name: str, source: Source) -> dict | None:
    e = Estimate.read(row, name, source)
    if e.missing:
        return None
    p = source.prefix
    out = {"type": HF_METRIC.get(name, name), "value": e.value,
           "name": f"{ESTIMATES[source]} {e.metric.label}", "estimate": ESTIMATES[source]}
    if e.has_interval:
        level = to_float(row.get(f"{p}ci_level"), 0.95)
        # cross-validated rows resample duplicate groups and do not record it
        unit = row.get(f"{p}ci_unit") or ("group" if source is Source.OUT_OF_FOLD else "image")
        resamples = row.get(f"{p}ci_resamples")
        out.update(ci_low=e.low, ci_high=e.high, ci_level=level,
                   ci_method=f"bootstrap over {UNITS.get(unit, unit + 's')}" + (f", {resamples} resamples" if resamples else ""))
    n = to_float(row.get(f"{p}n"))
    if not math.isnan(n):
        out["n"] = int(n)
    return out


def _result(info: RunInfo, source: Source) -> dict | None:
    metrics = [m for m in (_metric(info.row, name, source) for name in INDEX_METRICS) if m is not None]
    if not metrics:
        return None
    config = info.run.get("config", {})
    dataset = {"name": str(config.get("data") or "image folder").rstrip("/").rsplit("/", 1)[-1],
               "type": "imagefolder", "split": ESTIMATES[source]}
    if info.run.get("data_hash"):
        dataset["revision"] = f"sha256:{info.run['data_hash']}"
    return {"task": {"type": "image-classification", "name": "Image Classification"}, "dataset": dataset,
            "metrics": metrics}


def model_index(info: RunInfo) -> dict:
    """The front matter's content: library, tags and the ``model-index`` of the backbone's
    estimates (out of fold first for a cross-validated run, then the test split when it has one)."""
    sources = [Source.OUT_OF_FOLD, Source.TEST] if info.row.get("cv_objective") is not None else [Source.TEST]
    results = [r for r in (_result(info, s) for s in sources) if r is not None]
    run_name = info.run.get("config", {}).get("name") or info.run_dir.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run_name}-{info.backbone}")
    return {"library_name": "keras", "pipeline_tag": "image-classification",
            "tags": ["bench", "image-classification", "medical-imaging"],
            "model-index": [{"name": name, "results": results}]}


def _scalar(value) -> str:
    if isinstance(value, (dict, list)):  # only empty ones reach here
        return "{}" if isinstance(value, dict) else "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        return (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def to_yaml(value, indent: int = 0) -> list[str]:
    """Block-style YAML lines of nested dicts and lists of scalars."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines += to_yaml(v, indent + 2)
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
        return lines
    for v in value:
        sub = to_yaml(v, indent + 2) if isinstance(v, (dict, list)) and v else [f"{pad}  {_scalar(v)}"]
        lines.append(f"{pad}- {sub[0][indent + 2:]}")
        lines += sub[1:]
    return lines


def front_matter(info: RunInfo) -> str:
    """``---``, the YAML of :func:`model_index`, ``---``: the first lines of ``model_card.md``."""
    return "\n".join(["---", *to_yaml(model_index(info)), "---"]) + "\n"
