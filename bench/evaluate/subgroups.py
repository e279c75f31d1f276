"""Per-subgroup accuracy of test (or out-of-fold) predictions: a shortcut check on the model itself.

Public medical datasets mix sources, and a model may learn the source (file format, colour
mode, image size) instead of the disease. :mod:`bench.evaluate.shortcuts` asks whether those
attributes alone predict the label; this module asks whether the *model* is right more often
on some of them than on the rest. A model that scores 0.98 on the PNG images and 0.60 on the
JPEG ones has learnt something about how the files were stored.

Conventions (reports quote these):

* Attributes per image (:func:`subgroup_attributes`): ``mode`` (Pillow colour mode of the
  original file, e.g. ``"L"``, ``"RGB"``), ``format`` (``"PNG"``, ``"JPEG"``, ...) and
  ``size``, a bucket of the longer side in pixels (:func:`size_bucket`): ``< 256 px``,
  ``256-511 px``, ``512-1023 px``, ``>= 1024 px``. The edges (:data:`SIZE_EDGES`) are fixed,
  not tuned to the data, so subgroups mean the same thing on every dataset. A missing mode or
  format is ``"unknown"``.
* ``correct``: one boolean per image, whether the model's decision (the thresholded or
  argmax prediction) was right. A subgroup's ``accuracy`` is its share of correct images.
* Interval of a subgroup's accuracy: 95 % percentile bootstrap *within* the subgroup: each
  resample draws the subgroup's images (or, with ``groups``, its duplicate groups, as
  :func:`bench.evaluate.resampling.resample_weights` does) with replacement, from a fresh
  ``numpy.random.default_rng(seed)``, so a subgroup's interval does not depend on which other
  subgroups exist.
* ``difference``: the subgroup's accuracy minus the accuracy on all *other* images (same
  attribute, any other value). Its interval comes from resamples of the whole set (images or
  duplicate groups, one fresh ``default_rng(seed)`` shared by every subgroup): in each
  resample, the drawn subgroup images' accuracy minus the drawn other images' accuracy.
  Resamples where either side is empty are dropped. ``flag`` is True when that interval
  excludes 0 (a difference the bootstrap calls real at the 95 % level; with several subgroups
  some flags may be chance, no multiplicity correction is applied).
* A subgroup with fewer than ``min_images`` images has no intervals (nan) and is never
  flagged (``too_few``); nor is one whose other images number fewer than ``min_images`` (its
  difference has no interval). An attribute with one value only (every
  image is JPEG) gives one row with ``only_value`` True and no difference.
* With ``labels``, each row carries ``class_counts`` (every class, zeros included) and
  ``single_class``: the class when the subgroup holds one class only. Its accuracy is then
  that class's sensitivity (recall), and a difference may come from the classes, not from
  the attribute; :func:`subgroup_summary` says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np

from bench.evaluate.resampling import (
    check_booleans,
    check_resamples,
    divide,
    group_codes,
    percentile_interval,
    resample_weights,
)

#: Longer-side edges (pixels) of the size buckets: < 256, 256-511, 512-1023, >= 1024.
SIZE_EDGES = (256, 512, 1024)
#: The bucket labels, smallest first.
SIZE_BUCKETS = (
    f"< {SIZE_EDGES[0]} px",
    *(f"{low}-{high - 1} px" for low, high in pairwise(SIZE_EDGES)),
    f">= {SIZE_EDGES[-1]} px",
)
#: The attributes :func:`subgroup_attributes` returns, in report order.
ATTRIBUTES = ("mode", "format", "size")
#: Confidence level of every interval here.
LEVEL = 0.95
UNKNOWN = "unknown"


def size_bucket(width, height) -> str:
    """The size bucket of an image by its longer side, one of :data:`SIZE_BUCKETS`."""
    sides = []
    for name, value in (("width", width), ("height", height)):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if not ok or not math.isfinite(value) or value <= 0 or value != int(value):
            raise ValueError(f"Expected {name} as a positive whole number of pixels. Received: {value!r}")
        sides.append(int(value))
    longer = max(sides)
    for edge, label in zip(SIZE_EDGES, SIZE_BUCKETS):
        if longer < edge:
            return label
    return SIZE_BUCKETS[-1]


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return UNKNOWN
    return str(value)


def subgroup_attributes(record) -> dict[str, str]:
    """``{"mode", "format", "size"}`` of an image record (anything with ``width``, ``height``,
    ``mode`` and ``format``, such as :class:`bench.data.scan.ImageRecord`)."""
    missing = [a for a in ("width", "height", "mode", "format") if not hasattr(record, a)]
    if missing:
        raise ValueError(
            f"Expected a record with width, height, mode and format. Received: {type(record).__name__} "
            f"without {', '.join(missing)}"
        )
    size = size_bucket(record.width, record.height)
    return {"mode": _text(record.mode), "format": _text(record.format), "size": size}


def _value_order(value: str) -> tuple:
    return (SIZE_BUCKETS.index(value) if value in SIZE_BUCKETS else len(SIZE_BUCKETS), value)


def _check_attributes(attributes, n: int) -> tuple[list[str], list[list[str]]]:
    """(attribute names, per attribute the value of every image), validated."""
    if isinstance(attributes, (str, bytes, Mapping)) or not isinstance(attributes, Sequence):
        raise ValueError(  # noqa: TRY004 (bad input is a ValueError throughout bench)
            f"Expected attributes as a list of dicts, one per image. Received: {type(attributes).__name__}"
        )
    if len(attributes) != n:
        raise ValueError(f"Expected one attribute dict per image ({n}). Received: {len(attributes)}")
    first = attributes[0]
    if not isinstance(first, Mapping) or not first:
        raise ValueError(f"Expected attributes as non-empty dicts. Received: {first!r} for image 0")
    names = list(first)
    for i, item in enumerate(attributes):
        if not isinstance(item, Mapping) or list(item) != names:
            raise ValueError(f"Expected every attribute dict to have the keys {names}. Received: {item!r} (image {i})")
    return names, [[_text(item[name]) for item in attributes] for name in names]


def _interval_or_nan(values: np.ndarray, enough: bool) -> tuple[float, float]:
    return percentile_interval(values, LEVEL) if enough else (math.nan, math.nan)


def subgroup_accuracy(
    correct,
    attributes: Sequence[Mapping[str, str]],
    labels=None,
    groups=None,
    n_resamples: int = 1000,
    seed: int = 0,
    min_images: int = 5,
) -> list[dict]:
    """Accuracy per attribute value, with bootstrap intervals and the difference to the other images.

    ``correct``: one boolean (or 0/1) per image. ``attributes``: one dict per image, all with the
    same keys (:func:`subgroup_attributes`). ``labels``: optional class name per image.
    ``groups``: optional duplicate-group id per image (copies share one), for the cluster
    bootstrap. Returns one dict per (attribute, value), attributes in their key order, values
    alphabetically (size buckets smallest first): ``attribute``, ``value``, ``n``, ``n_correct``,
    ``accuracy``, ``ci_low``, ``ci_high``, ``n_other``, ``accuracy_other``, ``difference``,
    ``difference_ci_low``, ``difference_ci_high``, ``flag``, ``too_few``, ``only_value``, plus
    ``n_groups`` with groups and ``class_counts`` / ``single_class`` with labels. See the
    module docstring for the conventions.
    """
    ok = check_booleans(correct, "correct")
    n = len(ok)
    if n == 0:
        raise ValueError("Expected at least one image in correct. Received: an empty array")
    check_resamples(n_resamples)
    if isinstance(min_images, bool) or not isinstance(min_images, (int, np.integer)) or min_images < 1:
        raise ValueError(f"Expected min_images as a whole number >= 1. Received: {min_images!r}")
    names, values = _check_attributes(attributes, n)
    classes: list[str] | None = None
    label_arr = None
    if labels is not None:
        label_arr = np.asarray([_text(v) for v in labels], dtype=object)
        if label_arr.shape != (n,):
            raise ValueError(f"Expected one label per image ({n}). Received: {len(label_arr)}")
        classes = sorted(set(label_arr.tolist()))
    codes = None if groups is None else group_codes(groups, n)

    # one (attribute, value, member mask) per subgroup
    subgroups: list[tuple[str, str, np.ndarray]] = []
    for name, column in zip(names, values):
        arr = np.asarray(column, dtype=object)
        for value in sorted(set(column), key=_value_order):
            subgroups.append((name, value, arr == value))
    counts = {name: len(set(column)) for name, column in zip(names, values)}
    hit = ok.astype(float)

    # the difference: whole-set resamples, every subgroup at once
    members = np.stack([mask for _, _, mask in subgroups], axis=1).astype(float)  # (n, s)
    members_hit = members * hit[:, None]
    parts: list[np.ndarray] = []
    for weights in resample_weights(np.random.default_rng(seed), n, n_resamples, codes):
        total, total_hit = weights.sum(axis=1, keepdims=True), (weights @ hit)[:, None]
        sub, sub_hit = weights @ members, weights @ members_hit
        parts.append(divide(sub_hit, sub, fill=np.nan) - divide(total_hit - sub_hit, total - sub, fill=np.nan))
    differences = np.concatenate(parts, axis=0)  # (n_resamples, s)

    rows = []
    for k, (name, value, mask) in enumerate(subgroups):
        idx = np.flatnonzero(mask)
        m, m_other = len(idx), n - len(idx)
        only = counts[name] == 1
        sub_codes = None if codes is None else group_codes(codes[idx], m)
        accs = []
        for weights in resample_weights(np.random.default_rng(seed), m, n_resamples, sub_codes):
            accs.append(divide(weights @ hit[idx], weights.sum(axis=1), fill=np.nan))
        low, high = _interval_or_nan(np.concatenate(accs), m >= min_images)
        row = {
            "attribute": name, "value": value, "n": m, "n_correct": int(ok[idx].sum()),
            "accuracy": float(hit[idx].mean()), "ci_low": low, "ci_high": high,
            "n_other": m_other, "accuracy_other": float(hit[~mask].mean()) if m_other else math.nan,
            "difference": math.nan, "difference_ci_low": math.nan, "difference_ci_high": math.nan,
            "flag": False, "too_few": m < min_images, "only_value": only,
        }
        if not only:
            row["difference"] = row["accuracy"] - row["accuracy_other"]
            d_low, d_high = _interval_or_nan(differences[:, k], m >= min_images and m_other >= min_images)
            row["difference_ci_low"], row["difference_ci_high"] = d_low, d_high
            row["flag"] = bool(d_low > 0 or d_high < 0)  # False when nan
        if codes is not None:
            row["n_groups"] = len(np.unique(codes[idx]))
        if classes is not None:
            present = label_arr[idx].tolist()
            row["class_counts"] = {c: present.count(c) for c in classes}
            held = [c for c, count in row["class_counts"].items() if count]
            row["single_class"] = held[0] if len(held) == 1 else None
        rows.append(row)
    return rows


def _with_ci(value: float, low: float, high: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if math.isnan(low) or math.isnan(high):
        return text
    return text + (f" [{low:+.2f}, {high:+.2f}]" if signed else f" [{low:.2f}, {high:.2f}]")


def _note(row: dict) -> str:
    notes = []
    if row.get("flag"):
        notes.append("FLAG: differs")
    if row.get("only_value"):
        notes.append("only value")
    elif row.get("too_few"):
        notes.append("too few for an interval")
    if row.get("single_class") is not None:
        notes.append(f"one class ({row['single_class']}): a sensitivity")
    return "; ".join(notes)


def format_subgroups(rows: list[dict]) -> str:
    """A plain-text table of :func:`subgroup_accuracy` rows for the terminal."""
    from tabulate import tabulate

    if not rows:
        return "(no subgroups)"
    with_classes = any("class_counts" in r for r in rows)
    headers = ["attribute", "value", "n", "accuracy [95% CI]", "vs other images [95% CI]"]
    headers += ["classes"] if with_classes else []
    headers += ["note"]
    table = []
    for r in rows:
        line = [r["attribute"], r["value"], str(r["n"]), _with_ci(r["accuracy"], r["ci_low"], r["ci_high"]),
                _with_ci(r["difference"], r["difference_ci_low"], r["difference_ci_high"], signed=True)]
        if with_classes:
            line.append(", ".join(f"{c} {k}" for c, k in r.get("class_counts", {}).items()))
        line.append(_note(r))
        table.append(line)
    return tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True,
                    colalign=["left", "left", "right", "right", "right"] + ["left"] * (len(headers) - 5))


def subgroup_summary(rows: list[dict]) -> str | None:
    """One sentence naming the flagged subgroups; None when none is flagged."""
    flagged = [r for r in rows if r.get("flag")]
    if not flagged:
        return None
    parts = []
    for r in flagged:
        text = (f"{r['attribute']} {r['value']} {r['accuracy']:.3f} (n = {r['n']}) vs {r['accuracy_other']:.3f} "
                f"on the other images (difference {r['difference']:+.3f}, 95 % CI "
                f"[{r['difference_ci_low']:+.2f}, {r['difference_ci_high']:+.2f}])")
        if r.get("single_class") is not None:
            text += (f", which holds only {r['single_class']} images, so its accuracy is the sensitivity for "
                     f"{r['single_class']} and the gap may come from the class, not the attribute")
        parts.append(text)
    return ("Accuracy differs by subgroup: " + "; ".join(parts) + ". The model may rely on how the files were "
            "stored rather than on the disease; check where these images came from.")
