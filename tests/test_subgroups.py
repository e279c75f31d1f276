"""Per-subgroup accuracy (by mode, format, size bucket) with bootstrap intervals: a shortcut check."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pytest

from bench.evaluate.subgroups import (
    SIZE_BUCKETS,
    format_subgroups,
    size_bucket,
    subgroup_accuracy,
    subgroup_attributes,
    subgroup_summary,
)

Record = namedtuple("Record", "path label width height mode format bytes")


def _attrs(formats, mode="L", side=300):
    return [{"mode": mode, "format": f, "size": size_bucket(side, side)} for f in formats]


def _row(rows, attribute, value):
    (row,) = [r for r in rows if r["attribute"] == attribute and r["value"] == value]
    return row


def test_size_bucket_edges():
    assert SIZE_BUCKETS == ("< 256 px", "256-511 px", "512-1023 px", ">= 1024 px")
    assert size_bucket(1, 1) == "< 256 px"
    assert size_bucket(255, 100) == "< 256 px"
    assert size_bucket(100, 256) == "256-511 px"  # the longer side decides
    assert size_bucket(511, 511) == "256-511 px"
    assert size_bucket(512, 20) == "512-1023 px"
    assert size_bucket(1023, 1023) == "512-1023 px"
    assert size_bucket(1024, 10) == ">= 1024 px"
    assert size_bucket(np.int64(5000), 4000) == ">= 1024 px"
    for bad in [(0, 10), (-3, 10), (10.5, 10), (True, 10), ("512", 10), (float("nan"), 10)]:
        with pytest.raises(ValueError, match="Expected"):
            size_bucket(*bad)


def test_subgroup_attributes_of_a_record():
    rec = Record("a/1.png", "a", 600, 300, "RGB", "PNG", 1000)
    assert subgroup_attributes(rec) == {"mode": "RGB", "format": "PNG", "size": "512-1023 px"}
    assert subgroup_attributes(Record("a/2", "a", 10, 10, "L", None, 0))["format"] == "unknown"
    with pytest.raises(ValueError, match="Expected a record"):
        subgroup_attributes(object())


def test_png_all_right_jpeg_half_right_flags_jpeg():
    formats = ["PNG"] * 60 + ["JPEG"] * 60
    correct = [True] * 60 + [i % 2 == 0 for i in range(60)]
    rows = subgroup_accuracy(correct, _attrs(formats), n_resamples=500, seed=0)
    jpeg, png = _row(rows, "format", "JPEG"), _row(rows, "format", "PNG")
    assert (jpeg["n"], jpeg["n_correct"], jpeg["n_other"]) == (60, 30, 60)
    assert jpeg["accuracy"] == pytest.approx(0.5) and jpeg["accuracy_other"] == pytest.approx(1.0)
    assert jpeg["difference"] == pytest.approx(-0.5) and png["difference"] == pytest.approx(0.5)
    assert jpeg["flag"] and png["flag"]
    assert jpeg["ci_low"] < 0.5 < jpeg["ci_high"]
    assert jpeg["difference_ci_low"] < -0.5 < jpeg["difference_ci_high"] < 0
    # every PNG is right, so every resample of the PNG images scores 1
    assert png["ci_low"] == png["ci_high"] == 1.0
    summary = subgroup_summary(rows)
    assert "format JPEG 0.500 (n = 60)" in summary and "-0.500" in summary
    table = format_subgroups(rows)
    assert "JPEG" in table and "FLAG" in table and "0.500 [" in table
    # mode and size have one value each: one row, no difference, never flagged
    (mode,) = [r for r in rows if r["attribute"] == "mode"]
    assert mode["only_value"] and not mode["flag"] and math.isnan(mode["difference"])
    assert mode["n"] == 120 and mode["accuracy"] == pytest.approx(0.75)
    assert [r["attribute"] for r in rows] == ["mode", "format", "format", "size"]
    assert "only value" in table


def test_no_real_difference_is_not_flagged():
    # exactly the same accuracy in both formats: a difference of exactly 0, never flagged
    rows = subgroup_accuracy([True, True, True, False] * 20, _attrs(["PNG"] * 40 + ["JPEG"] * 40), n_resamples=500)
    assert all(r["difference"] == 0 and not r["flag"] for r in rows if r["attribute"] == "format")
    assert subgroup_summary(rows) is None
    # outcome independent of format (80 % right everywhere), 100 seeded data sets: the flag is
    # a 95 % interval excluding 0, so it fires about as often as a two-proportion z-test at 5 %
    # (which, on these data sets, rejects 12 times) and on the same data sets, nearly always
    flags, z_rejects = [], []
    for data_seed in range(100):
        rng = np.random.default_rng(data_seed)
        correct = rng.random(200) < 0.8
        formats = rng.choice(["PNG", "JPEG"], 200)
        rows = subgroup_accuracy(correct, [{"format": f} for f in formats], n_resamples=300)
        flags.append(rows[0]["flag"])
        assert rows[0]["flag"] == rows[1]["flag"]  # two values: one difference, seen from both sides
        a, b = correct[formats == "JPEG"], correct[formats == "PNG"]
        pooled = correct.mean()
        z = (a.mean() - b.mean()) / math.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
        z_rejects.append(math.erfc(abs(z) / math.sqrt(2)) < 0.05)
    assert sum(flags) <= 15
    assert sum(f == r for f, r in zip(flags, z_rejects)) >= 95


def test_interval_matches_a_hand_written_bootstrap_loop():
    formats = ["PNG"] * 7 + ["JPEG"] * 13
    correct = np.array([1, 1, 0, 1, 1, 1, 0] + [1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0], dtype=bool)
    rows = subgroup_accuracy(correct, _attrs(formats), n_resamples=400, seed=11)
    jpeg = _row(rows, "format", "JPEG")
    sub = correct[7:]
    # within the subgroup: draw 13 of its images with replacement, per resample
    rng = np.random.default_rng(11)
    draws = rng.integers(0, len(sub), size=(400, len(sub)))
    accs = [sub[d].mean() for d in draws]
    assert (jpeg["ci_low"], jpeg["ci_high"]) == pytest.approx(tuple(np.percentile(accs, [2.5, 97.5])))
    # the difference: draw 20 of all images, JPEG accuracy minus PNG accuracy among those drawn
    rng = np.random.default_rng(11)
    diffs = []
    for d in rng.integers(0, 20, size=(400, 20)):
        j, p = d[d >= 7], d[d < 7]
        if len(j) and len(p):
            diffs.append(correct[j].mean() - correct[p].mean())
    expected = tuple(np.percentile(diffs, [2.5, 97.5]))
    assert (jpeg["difference_ci_low"], jpeg["difference_ci_high"]) == pytest.approx(expected)


def test_interval_close_to_wilson_for_large_n():
    n, hits = 2000, 1400
    correct = np.arange(n) < hits
    rows = subgroup_accuracy(correct, _attrs(["PNG"] * n), n_resamples=2000, seed=0)
    (row,) = [r for r in rows if r["attribute"] == "format"]
    p, z = hits / n, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert row["ci_low"] == pytest.approx(centre - half, abs=0.005)
    assert row["ci_high"] == pytest.approx(centre + half, abs=0.005)


def test_duplicate_groups_widen_the_interval():
    # 40 distinct images, each stored 5 times (one duplicate group each); copies share the outcome
    base = np.arange(40) % 3 != 0
    correct = np.repeat(base, 5)
    groups = [f"g{i}" for i in np.repeat(np.arange(40), 5)]
    formats = ["PNG"] * 100 + ["JPEG"] * 100
    per_image = _row(subgroup_accuracy(correct, _attrs(formats), n_resamples=1000), "format", "PNG")
    per_group = _row(subgroup_accuracy(correct, _attrs(formats), groups=groups, n_resamples=1000), "format", "PNG")
    assert per_group["accuracy"] == per_image["accuracy"]
    assert per_group["n_groups"] == 20 and per_image.get("n_groups") is None

    def width(r, key="ci"):
        return r[f"{key}_high"] - r[f"{key}_low"]

    assert width(per_group) > 1.6 * width(per_image)
    assert width(per_group, "difference_ci") > 1.6 * width(per_image, "difference_ci")


def test_small_subgroup_has_no_interval_and_is_not_flagged():
    formats = ["PNG"] * 50 + ["BMP"] * 3
    correct = [True] * 50 + [False] * 3
    rows = subgroup_accuracy(correct, _attrs(formats), n_resamples=200, min_images=5)
    bmp = _row(rows, "format", "BMP")
    assert bmp["too_few"] and not bmp["flag"] and bmp["accuracy"] == 0.0 and bmp["difference"] == -1.0
    assert all(math.isnan(bmp[k]) for k in ("ci_low", "ci_high", "difference_ci_low", "difference_ci_high"))
    png = _row(rows, "format", "PNG")  # its own interval exists; its difference (vs 3 images) has none
    assert not png["too_few"] and png["ci_low"] == 1.0 and not png["flag"] and math.isnan(png["difference_ci_low"])
    assert "too few" in format_subgroups(rows)
    assert subgroup_summary(rows) is None
    # the same subgroup with min_images=3 gets an interval and a flag
    assert _row(subgroup_accuracy(correct, _attrs(formats), min_images=3), "format", "BMP")["flag"]


def test_class_counts_and_single_class():
    formats = ["PNG"] * 30 + ["JPEG"] * 30
    labels = ["normal"] * 30 + ["tumor"] * 10 + ["normal"] * 20
    correct = [True] * 30 + [False] * 20 + [True] * 10
    rows = subgroup_accuracy(correct, _attrs(formats), labels=labels, n_resamples=300)
    png, jpeg = _row(rows, "format", "PNG"), _row(rows, "format", "JPEG")
    assert png["class_counts"] == {"normal": 30, "tumor": 0} and png["single_class"] == "normal"
    assert jpeg["class_counts"] == {"normal": 20, "tumor": 10} and jpeg["single_class"] is None
    assert png["flag"]
    summary = subgroup_summary(rows)
    assert "holds only normal images" in summary and "sensitivity" in summary
    assert "one class (normal)" in format_subgroups(rows)


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    correct = rng.random(80) < 0.7
    attrs = _attrs(rng.choice(["PNG", "JPEG"], 80).tolist())
    a = subgroup_accuracy(correct, attrs, n_resamples=200, seed=5)
    assert a == subgroup_accuracy(correct, attrs, n_resamples=200, seed=5)
    assert a != subgroup_accuracy(correct, attrs, n_resamples=200, seed=6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"correct": [True, False]}, "one attribute dict per image"),
        ({"correct": [0.3, 1, 0]}, "booleans"),
        ({"correct": ["yes", "no", "no"]}, "booleans"),
        ({"correct": []}, "at least one image|one attribute dict"),
        ({"labels": ["a", "b"]}, "one label per image"),
        ({"groups": ["g1", None, "g2"]}, "group id"),
        ({"attributes": [{"format": "PNG"}, {"mode": "L"}, {"format": "PNG"}]}, "same keys|the keys"),
        ({"attributes": {"format": "PNG"}}, "list of dicts"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"min_images": 0}, "min_images"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"correct": [True, False, True], "attributes": _attrs(["PNG", "JPEG", "PNG"])} | kwargs
    with pytest.raises(ValueError, match=match):
        subgroup_accuracy(**args)
