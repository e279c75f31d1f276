"""How often a cross-validated run's intervals cover the deployed model's value, as
``benchmarks/validity.py`` measured it (``measured_coverage.json`` beside this module,
written by that benchmark's ``--record``; nothing here computes it).

The benchmark draws small datasets from a large pool, runs ``bench run --cv`` on each and
scores the recommended backbone's deployed model (searched again and trained on all of the
draw's images) on the rest of the pool. Two intervals are scored against that value:

* ``bootstrap``: the pooled out-of-fold estimate's interval (a bootstrap over duplicate
  groups). It counts which test images happened to be drawn, not how the model changes
  with its training images, and it is about models trained on (k-1)/k of the data.
* ``fold``: the fold mean with the Nadeau-Bengio corrected interval
  (:func:`bench.evaluate.crossval.fold_interval`), whose variance counts the training
  sets' variability too.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORD = Path(__file__).with_name("measured_coverage.json")
METRIC_KEYS = {"roc_auc": "auc", "accuracy": "accuracy"}


def read_record(path: Path = RECORD) -> dict | None:
    """The recorded measurement, or None when there is none (or it cannot be read)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("coverage") else None


def _count(c: dict) -> str:
    return f"{c['covered']} of {c['n']}"


def coverage_sentence(metric: str, record: dict | None = None) -> str:
    """One sentence on the measured coverage of both intervals of ``metric`` (AUC or
    accuracy; any other metric borrows the nearest measured one and says so); empty when
    nothing is recorded."""
    record = record if record is not None else read_record()
    if not record:
        return ""
    key = METRIC_KEYS.get(metric, "auc")
    measured = "AUC" if key == "auc" else "accuracy"
    cov = record["coverage"]
    fold, boot = cov.get(f"fold_{key}"), cov.get(f"bootstrap_{key}")
    if not fold or not boot:
        return ""
    note = "" if metric in METRIC_KEYS else f" (measured for {measured}; not for this metric)"
    return (f"In bench's validity benchmark ({record['what']}: {record['command']}), the deployed model's "
            f"{measured} on the rest of the pool lay inside the corrected fold interval in {_count(fold)} draws, "
            f"and inside the bootstrap interval of the pooled out-of-fold estimate in {_count(boot)}{note}.")
