"""The report's judgements in plain words: readings of the paired tests, Pareto fronts,
warning banners. Nothing here draws or writes files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.evaluate.paired import PairTest
from bench.evaluate.rows import to_float
from bench.report.formatting import fmt_p, fmt_signed

#: The "small test split" banner shows when a 95 % CI of test accuracy is wider than
#: plus or minus this (in proportion; 0.05 = 5 percentage points).
MAX_CI_HALF_WIDTH = 0.05
#: The "imbalanced classes" banner shows when the largest class has at least this many
#: times the images of the smallest.
IMBALANCE_RATIO = 4.0




def mcnemar_reading(t: PairTest) -> str:
    """One plain sentence on the McNemar result of ``t``."""
    head = f"McNemar {fmt_p(t.mcnemar_p)}: "
    if t.only_a + t.only_b == 0:
        return head + (
            f"{t.a} and {t.b} get exactly the same {t.n} test images right, so this test cannot tell them apart."
        )
    counts = f"({t.a} alone is right on {t.only_a} images, {t.b} alone on {t.only_b}, of {t.n})"
    if t.significant:
        better = t.a if t.only_a > t.only_b else t.b
        return head + (
            f"{t.a} and {t.b} disagree on which images they get right more than chance would explain {counts}; "
            f"{better} is the more accurate on these images."
        )
    return head + (
        f"the images only one of {t.a} and {t.b} gets right are split about as chance would split them {counts}; "
        "no evidence that their accuracy differs."
    )


def auc_reading(t: PairTest) -> str | None:
    """One plain sentence on the paired AUC bootstrap of ``t`` (None without one)."""
    if t.auc_diff is None:
        return None
    if math.isnan(t.auc_diff):
        return f"AUC {t.a} \u2212 {t.b}: undefined (the test split holds one class only)."
    text = (
        f"AUC {t.a} \u2212 {t.b} = {fmt_signed(t.auc_diff)} "
        f"(95 % CI {fmt_signed(t.auc_ci_low)} to {fmt_signed(t.auc_ci_high)}), paired bootstrap {fmt_p(t.auc_p)}: "
    )
    if t.auc_significant:
        better = t.a if t.auc_diff > 0 else t.b
        return text + f"{better} ranks positive above negative images reliably better."
    return text + "the interval includes 0, so no evidence that they rank images differently well."


def significance_sentence(best: str, runner_up: str | None, test: PairTest | None) -> str:
    """The Summary's sentence: is the recommended backbone significantly better than the runner-up?"""
    if runner_up is None:
        return "Only one backbone finished, so there is no runner-up to compare against."
    if test is None:
        return (f"The runner-up is {runner_up}, but the test predictions of one of the two are missing from the "
                "run folder, so they cannot be compared image by image.")
    if test.a != best:
        test = test.flipped()
    auc = ""
    if test.auc_diff is not None and not math.isnan(test.auc_diff):
        auc = (
            f"; AUC difference {fmt_signed(test.auc_diff)}, 95 % CI {fmt_signed(test.auc_ci_low)} to "
            f"{fmt_signed(test.auc_ci_high)}, paired bootstrap {fmt_p(test.auc_p)}"
        )
    stats = f"(McNemar exact test on the same {test.n} test images, {fmt_p(test.mcnemar_p)}{auc})"
    if test.significant and test.only_a > test.only_b:
        return f"{best} is significantly more accurate than the runner-up, {runner_up} {stats}."
    if test.significant:
        return (
            f"On the test images the runner-up, {runner_up}, is significantly more accurate than {best} {stats}; "
            "the choice stands because it was made on validation, but treat it with caution."
        )
    return f"{best} is not significantly better than the runner-up, {runner_up} {stats}."


# --------------------------------------------------------------------------- Pareto


def pareto_optimal(cost: Sequence[float], value: Sequence[float]) -> list[bool]:
    """True where no other point is at least as good on both axes and better on one
    (lower ``cost``, higher ``value``). Points with a missing (nan) coordinate are never
    optimal and dominate nothing."""
    c = np.asarray(cost, dtype=float)
    v = np.asarray(value, dtype=float)
    finite = np.isfinite(c) & np.isfinite(v)
    out = []
    for i in range(len(c)):
        if not finite[i]:
            out.append(False)
            continue
        dominated = finite & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        out.append(not bool(dominated.any()))
    return out


# --------------------------------------------------------------------------- banners


@dataclass(frozen=True)
class Banner:
    key: str  # random_weights | synthetic | small_test | imbalanced | failed_trials | no_result
    title: str
    text: str




def failed_trial_counts(data) -> dict[str, int]:
    """Failed (or invalid) trials per backbone: from trials.csv, else the leaderboard row."""
    out = {}
    for b in data.backbones:
        if b.trials is not None and "status" in b.trials:
            n = int((b.trials["status"].astype(str) != "completed").sum())
        else:
            value = to_float(b.row.get("trials_failed"))
            n = int(value) if math.isfinite(value) else 0
        out[b.name] = n
    return out


def banners(data) -> list[Banner]:
    """The warnings that apply to this run (a :class:`bench.report.load.RunData`), in a fixed order."""
    out: list[Banner] = []
    weights = {str(b.row.get("weights")) for b in data.backbones if b.row.get("weights") is not None}
    if data.config.get("weights") == "none" or "none" in weights:
        out.append(Banner(
            "random_weights", "Random initialisation",
            "Weights were \u201cnone\u201d: every backbone started from random weights. This is not transfer learning, "
            "and the numbers say nothing about how pretrained backbones would do.",
        ))
    if data.run.get("synthetic_data") or data.dataset.get("synthetic"):
        out.append(Banner(
            "synthetic", "Synthetic demo data",
            "The images are the synthetic demo set made by bench, not patient data. "
            "Use this report to see what bench produces, not to choose a model.",
        ))
    widths = []
    for b in data.ok:
        low, high = to_float(b.row.get("test_accuracy_ci_low")), to_float(b.row.get("test_accuracy_ci_high"))
        if math.isfinite(low) and math.isfinite(high):
            widths.append((high - low) / 2)
    n_test = sum((data.split.get("sizes") or {}).get("test", {}).values())
    if not widths and n_test:
        widths.append(1.96 * math.sqrt(0.25 / n_test))  # widest possible Wald interval
    if widths and max(widths) > MAX_CI_HALF_WIDTH + 1e-12:
        out.append(Banner(
            "small_test", "Small test split",
            f"The test split holds {n_test} images: the 95 % confidence interval of test accuracy spans up to "
            f"\u00b1{100 * max(widths):.0f} percentage points (more than \u00b1{100 * MAX_CI_HALF_WIDTH:.0f}). "
            "Differences smaller than that are noise.",
        ))
    counts = {c: int(n) for c, n in (data.dataset.get("counts") or {}).items()}
    if len(counts) >= 2:
        largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
        if counts[smallest] == 0 or counts[largest] / counts[smallest] >= IMBALANCE_RATIO:
            ratio = "all" if counts[smallest] == 0 else f"{counts[largest] / counts[smallest]:.1f} times"
            out.append(Banner(
                "imbalanced", "Very imbalanced classes",
                f"{largest} has {ratio} the images of {smallest} ({counts[largest]} vs {counts[smallest]}). "
                "Accuracy flatters a model that favours the large class; read sensitivity, specificity, "
                "F1 and AUC instead.",
            ))
    failed = failed_trial_counts(data)
    total = sum(failed.values())
    dead = [b.name for b in data.failed]
    if total or dead:
        parts = []
        if total:
            per = ", ".join(f"{name}: {n}" for name, n in failed.items() if n)
            parts.append(f"{total} trial{'s' if total != 1 else ''} failed ({per}).")
        if dead:
            parts.append(f"No result at all for {', '.join(dead)}.")
        parts.append("The messages are listed under \u201cWhat the search learned\u201d.")
        out.append(Banner("failed_trials", "Trials failed", " ".join(parts)))
    if not data.ok:
        out.append(Banner(
            "no_result", "No backbone finished",
            "Every backbone failed, so there is no recommendation. See the failed trials below.",
        ))
    return out
