"""The report's judgements in plain words: readings of the paired tests, Pareto fronts,
warning banners. Nothing here draws or writes files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.evaluate.paired import ALPHA, PairTest
from bench.schema import STOPPED, Estimate, Source, to_float
from bench.report.formatting import fmt_p, fmt_signed

#: The "small test split" banner shows when a 95 % CI of test accuracy is wider than
#: plus or minus this (in proportion; 0.05 = 5 percentage points).
MAX_CI_HALF_WIDTH = 0.05
#: The "imbalanced classes" banner shows when the largest class has at least this many
#: times the images of the smallest.
IMBALANCE_RATIO = 4.0




def _holm(p, adjusted) -> str:
    """``"p = 0.012"`` or ``"p = 0.012, Holm-adjusted p = 0.036"``."""
    if adjusted is None or math.isnan(adjusted) or adjusted == p:
        return fmt_p(p)
    return f"{fmt_p(p)}, Holm-adjusted {fmt_p(adjusted)}"


def significant(p) -> bool:
    """A p-value below :data:`~bench.evaluate.paired.ALPHA` (None and NaN are not)."""
    return p is not None and not math.isnan(p) and p < ALPHA


def mcnemar_reading(t: PairTest) -> str:
    """One plain sentence on the McNemar result of ``t`` (Holm-adjusted where available)."""
    p = t.mcnemar_p if t.mcnemar_p_holm is None else t.mcnemar_p_holm
    head = f"McNemar {_holm(t.mcnemar_p, t.mcnemar_p_holm)}: "
    grouped = t.unit == "group" and t.groups_only_a is not None
    only_a, only_b = (t.groups_only_a, t.groups_only_b) if grouped else (t.only_a, t.only_b)
    what = "duplicate groups" if grouped else "images"
    if only_a + only_b == 0:
        return head + (
            f"{t.a} and {t.b} get exactly the same {t.n_groups if grouped else t.n} test {what} right, so this test "
            "cannot tell them apart."
        )
    if grouped:
        counts = (f"({t.a} is right on {only_a} groups {t.b} misses, {t.b} on {only_b} that {t.a} misses, of "
                  f"{t.n_groups} duplicate groups, one vote per group)")
    else:
        counts = f"({t.a} alone is right on {only_a} images, {t.b} alone on {only_b}, of {t.n})"
    if significant(p):
        better = t.a if only_a > only_b else t.b
        return head + (
            f"{t.a} and {t.b} disagree on which {what} they get right more than chance would explain {counts}; "
            f"{better} is the more accurate on these {what}."
        )
    if significant(t.mcnemar_p):
        return head + (f"the {what} only one of {t.a} and {t.b} gets right are split unevenly {counts}, but not "
                       "beyond chance after Holm's adjustment for the pairs compared: weak evidence.")
    return head + (
        f"the {what} only one of {t.a} and {t.b} gets right are split about as chance would split them {counts}; "
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
        f"(95 % CI {fmt_signed(t.auc_ci_low)} to {fmt_signed(t.auc_ci_high)}), paired bootstrap "
        f"{_holm(t.auc_p, t.auc_p_holm)}: "
    )
    if significant(t.auc_p if t.auc_p_holm is None else t.auc_p_holm):
        better = t.a if t.auc_diff > 0 else t.b
        return text + f"{better} ranks positive above negative images reliably better."
    if significant(t.auc_p):
        return text + "below 0.05 alone, but not after Holm's adjustment for the pairs compared: weak evidence."
    return text + "the interval includes 0, so no evidence that they rank images differently well."


def delong_reading(t: PairTest) -> str | None:
    """One plain sentence on DeLong's test of ``t`` (None where it was not run)."""
    if t.delong_p is None or t.auc_diff is None or math.isnan(t.auc_diff):
        return None
    kind = "DeLong's test, clustered by duplicate group," if t.unit == "group" else "DeLong's test"
    ci = ""
    if t.delong_ci_low is not None and not math.isnan(t.delong_ci_low):
        ci = f" (95 % CI {fmt_signed(t.delong_ci_low)} to {fmt_signed(t.delong_ci_high)})"
    verdict = ("the difference is significant" if significant(t.delong_p if t.delong_p_holm is None else t.delong_p_holm)
               else "no evidence of a difference")
    return f"{kind} {_holm(t.delong_p, t.delong_p_holm)}{ci}: {verdict}."


def no_comparison(runner_up: str | None, test: PairTest | None, missing: str) -> str | None:
    """Why the recommended backbone cannot be compared with the runner-up (none, or the
    predictions ``missing`` describes are gone); None when it can."""
    if runner_up is None:
        return "Only one backbone finished, so there is no runner-up to compare against."
    if test is None:
        return f"The runner-up is {runner_up}, but the two cannot be compared prediction by prediction ({missing})."
    return None


def significance_sentence(best: str, runner_up: str | None, test: PairTest | None) -> str:
    """The Summary's sentence: is the recommended backbone significantly better than the runner-up?"""
    if (why := no_comparison(runner_up, test, "the test predictions of one of the two are missing from the "
                                              "run folder")) is not None:
        return why
    if test.a != best:
        test = test.flipped()
    auc = ""
    if test.auc_diff is not None and not math.isnan(test.auc_diff):
        auc = (
            f"; AUC difference {fmt_signed(test.auc_diff)}, 95 % CI {fmt_signed(test.auc_ci_low)} to "
            f"{fmt_signed(test.auc_ci_high)}, paired bootstrap {fmt_p(test.auc_p)}"
        )
        if test.delong_p is not None:
            auc += f", DeLong {fmt_p(test.delong_p)}"
    grouped = test.unit == "group" and test.groups_only_a is not None
    where = f"the same {test.n} test images" + (
        f" ({test.n_groups} duplicate groups, one vote per group)" if grouped else "")
    stats = f"(McNemar exact test on {where}, {fmt_p(test.mcnemar_p)}{auc})"
    only_a, only_b = (test.groups_only_a, test.groups_only_b) if grouped else (test.only_a, test.only_b)
    if test.significant and only_a > only_b:
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
    key: str  # random_weights | synthetic | plain_split | small_test (wide_cv with --cv) | imbalanced |
    #          failed_trials | no_result
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
    if weights and weights != {"none"} and "none" in weights:
        out.append(Banner(
            "random_weights", "Random initialisation",
            "The rows named @none started from random weights: they are not transfer learning, and they say how "
            "much the other starting points add, not how pretrained backbones do elsewhere.",
        ))
    elif data.config.get("weights") == "none" or "none" in weights:
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
    if data.config.get("plain_split"):
        crossing = sum(int(a.get("bench_crossing") or 0) for a in data.split.get("leakage_audit") or [])
        out.append(Banner(
            "plain_split", "Plain split, copies ignored",
            f"The split ignored copies and --groups (--plain-split): {crossing} linked pairs of images sit on "
            "different sides, so test images can have a copy in training and the test estimates are optimistic. "
            "It is there to compare with a group-aware run (bench audit), not to report.",
        ))
    out.extend(_wide_intervals(data))
    out.extend(_imbalance_and_failures(data))
    return out


#: The wide-interval banner's key, title and where the estimates come from, by source (a wording table).
WIDE_INTERVALS = {
    Source.TEST: ("small_test", "Small test split", "The test split holds {n} images"),
    Source.OUT_OF_FOLD: ("wide_cv", "Small data, wide intervals",
                         "Cross-validation used {images} images in {groups} duplicate groups"),
}


def _wide_intervals(data) -> list[Banner]:
    """The run's accuracy intervals (from ``data.source``) are wider than
    \u00b1:data:`MAX_CI_HALF_WIDTH`; without any interval, the widest Wald interval the
    held-out images allow."""
    source = data.source
    widths = [(e.high - e.low) / 2 for e in (Estimate.read(b.row, "accuracy", source) for b in data.ok)
              if e.has_interval]
    row = data.ok[0].row if data.ok else {}
    n = int(to_float(row.get(f"{source.prefix}n"), 0)) or sum((data.split.get("sizes") or {}).get("test", {}).values())
    if not widths and n:
        widths.append(1.96 * math.sqrt(0.25 / n))  # widest possible Wald interval
    if not widths or max(widths) <= MAX_CI_HALF_WIDTH + 1e-12:
        return []
    key, title, where = WIDE_INTERVALS[source]
    where = where.format(n=n, images=int(to_float(row.get("cv_images"), 0)), groups=int(to_float(row.get("cv_groups"), 0)))
    return [Banner(
        key, title,
        f"{where}: the 95 % confidence interval of {source.label} accuracy spans up to \u00b1{100 * max(widths):.0f} "
        f"percentage points (more than \u00b1{100 * MAX_CI_HALF_WIDTH:.0f}). Differences smaller than that are noise.",
    )]


def _imbalance_and_failures(data) -> list[Banner]:
    out = []
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
    dead = [b.name for b in data.failed if b.row.get("status") != STOPPED]  # --budget's stops are not failures
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
