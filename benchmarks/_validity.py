"""The arithmetic of ``validity.py``, without training: draws, coverage, regret, the summary.

Each draw is a dict with the recommended backbone's cross-validated estimates
(``cv_auc``, ``cv_auc_low``, ``cv_auc_high``, the same for ``cv_acc``), its values on the
rest of the pool (``pool_auc``, ``pool_acc``, with their own intervals), every backbone's
pool AUC (``pool_aucs``) and per-fold values (``cv_auc_folds``, ``cv_acc_folds``).
:func:`score_draw` adds what the draw scores: whether each interval covers its pool value,
the pool's best backbone and the regret; and the same coverage for a candidate wider
interval, :func:`corrected_fold_interval`, which bench does not report.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

#: Coverage below which the intervals need widening (the nominal level is 95 %).
COVERAGE_FLOOR = 0.90
#: The pool AUC range in which coverage says something: near 0.5 or 1.0 an interval covers
#: (or misses) for reasons that have little to do with its width.
MID_RANGE = (0.70, 0.95)


def stratified_counts(class_sizes: dict[str, int], n: int) -> dict[str, int]:
    """How many images of each class a draw of ``n`` takes: proportional to the pool's
    classes (largest remainders), at least one of each class, never more than a class has."""
    total = sum(class_sizes.values())
    if n < len(class_sizes) or n > total:
        raise ValueError(f"a draw of {n} images needs {len(class_sizes)} to {total} (the pool's size)")
    exact = {c: n * size / total for c, size in class_sizes.items()}
    counts = {c: max(1, math.floor(v)) for c, v in exact.items()}
    by_remainder = sorted(class_sizes, key=lambda c: exact[c] - math.floor(exact[c]), reverse=True)
    while sum(counts.values()) < n:
        for c in by_remainder:
            if sum(counts.values()) < n and counts[c] < class_sizes[c]:
                counts[c] += 1
    while sum(counts.values()) > n:  # the at-least-one rule overshot: take from the largest
        largest = max(counts, key=counts.get)
        counts[largest] -= 1
    return counts


def draw_files(files_by_class: dict[str, list[str]], n: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """A stratified draw of ``n`` files without replacement, per class in sorted order."""
    counts = stratified_counts({c: len(f) for c, f in files_by_class.items()}, n)
    out = {}
    for c in sorted(files_by_class):
        files = sorted(files_by_class[c])
        out[c] = [files[i] for i in sorted(rng.choice(len(files), size=counts[c], replace=False))]
    return out


def covers(low: float | None, high: float | None, value: float | None) -> bool | None:
    """Whether ``[low, high]`` holds ``value`` (ends included); None when any is missing."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high, value)):
        return None
    return low <= value <= high


def best_and_regret(pool_aucs: dict[str, float], picked: str) -> tuple[str, float]:
    """The backbone with the highest pool AUC, and the pool AUC the pick loses to it (0 when
    the pick is the best or ties it)."""
    valid = {b: v for b, v in pool_aucs.items() if v is not None and not math.isnan(v)}
    if picked not in valid:
        raise ValueError(f"the picked backbone {picked!r} has no pool AUC")
    best = max(sorted(valid), key=lambda b: valid[b])
    return best, max(0.0, valid[best] - valid[picked])


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (``statsmodels``' ``method="wilson"``)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0; got k={k}, n={n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def corrected_fold_interval(folds: list | None, k: int, level: float = 0.95) -> tuple[float, float, float] | None:
    """The mean of the per-fold values of a ``k``-fold cross-validation with bench's corrected
    interval of it (:func:`bench.evaluate.crossval.fold_interval`, Nadeau-Bengio); None with
    fewer than two fold values."""
    from bench.evaluate.crossval import fold_interval

    values = [v for v in (folds or []) if v is not None and not math.isnan(v)]
    low, high = fold_interval(values, k, level)
    return None if low is None else (float(np.mean(values)), low, high)


def score_draw(draw: dict) -> dict:
    """``draw`` with ``auc_covered``, ``acc_covered``, ``pool_best``, ``pick_is_best``, ``regret``
    and, where it has per-fold values, the corrected interval (``nb_auc``, ``nb_auc_low``,
    ``nb_auc_high``, ``nb_auc_covered``; the same for ``acc``)."""
    best, regret = best_and_regret(draw["pool_aucs"], draw["picked"])
    out = {**draw,
           "auc_covered": covers(draw["cv_auc_low"], draw["cv_auc_high"], draw["pool_auc"]),
           "acc_covered": covers(draw["cv_acc_low"], draw["cv_acc_high"], draw["pool_acc"]),
           "pool_best": best, "pick_is_best": regret == 0.0, "regret": regret}
    for metric in ("auc", "acc"):
        folds = (draw.get(f"cv_{metric}_folds") or {}).get(draw["picked"])
        interval = corrected_fold_interval(folds, draw.get("cv_k", len(folds or [])))
        mean, low, high = interval or (None, None, None)
        out.update({f"nb_{metric}": mean, f"nb_{metric}_low": low, f"nb_{metric}_high": high,
                    f"nb_{metric}_covered": covers(low, high, draw[f"pool_{metric}"])})
    return out


def half_width(draws: list[dict], low: str, high: str) -> float:
    """Mean half-width of an interval over the draws that have it."""
    widths = [(d[high] - d[low]) / 2 for d in draws if d.get(low) is not None and d.get(high) is not None]
    return float(np.mean(widths)) if widths else math.nan


def coverage(flags: list[bool | None]) -> dict:
    """Covered count, draws counted (missing ones left out), the rate and its Wilson interval."""
    counted = [f for f in flags if f is not None]
    k, n = sum(counted), len(counted)
    low, high = wilson_interval(k, n) if n else (math.nan, math.nan)
    return {"covered": k, "n": n, "rate": k / n if n else math.nan, "ci_low": low, "ci_high": high}


def summarize(draws: list[dict]) -> dict:
    """Coverage of both intervals, how often the pick is the pool's best, regret, and the
    range of the picked models' pool AUC (and how many draws fall in :data:`MID_RANGE`)."""
    if not draws:
        raise ValueError("no draws to summarize")
    regrets = [d["regret"] for d in draws]
    pool_aucs = [d["pool_auc"] for d in draws]
    gaps = [d["pool_acc"] - d["cv_acc"] for d in draws]
    return {
        "draws": len(draws),
        "auc": coverage([d["auc_covered"] for d in draws]),
        "accuracy": coverage([d["acc_covered"] for d in draws]),
        "auc_corrected": coverage([d.get("nb_auc_covered") for d in draws]),
        "accuracy_corrected": coverage([d.get("nb_acc_covered") for d in draws]),
        "half_width": {"auc": half_width(draws, "cv_auc_low", "cv_auc_high"),
                       "accuracy": half_width(draws, "cv_acc_low", "cv_acc_high"),
                       "auc_corrected": half_width(draws, "nb_auc_low", "nb_auc_high"),
                       "accuracy_corrected": half_width(draws, "nb_acc_low", "nb_acc_high")},
        "pick_is_best": coverage([d["pick_is_best"] for d in draws]),
        "regret_mean": float(np.mean(regrets)), "regret_max": float(np.max(regrets)),
        "regret_mean_when_wrong": float(np.mean([r for r in regrets if r > 0])) if any(regrets) else 0.0,
        "pool_auc_min": float(np.min(pool_aucs)), "pool_auc_max": float(np.max(pool_aucs)),
        "pool_auc_mid_range": sum(MID_RANGE[0] <= v <= MID_RANGE[1] for v in pool_aucs),
        "accuracy_gap_mean": float(np.mean(gaps)),
        "auc_gap_mean": float(np.mean([d["pool_auc"] - d["cv_auc"] for d in draws])),
    }


def summary_lines(s: dict) -> list[str]:
    """The summary as printed: coverage with its interval against the 90 % floor, the pick, regret."""
    def cov(c: dict) -> str:
        return f"{c['covered']}/{c['n']} = {c['rate']:.0%} [Wilson 95 %: {c['ci_low']:.0%}, {c['ci_high']:.0%}]"

    w = s["half_width"]
    lines = [f"coverage of the bootstrap interval of AUC (pooled out-of-fold): {cov(s['auc'])}; mean half-width {w['auc']:.3f}",
             f"coverage of the bootstrap interval of accuracy (pooled out-of-fold): {cov(s['accuracy'])}; mean half-width "
             f"{w['accuracy']:.3f}"]
    for name, key in (("AUC", "auc"), ("accuracy", "accuracy")):
        if s[key]["n"] and s[key]["rate"] < COVERAGE_FLOOR:
            lines.append(f"  {name}: below {COVERAGE_FLOOR:.0%}: not an interval for the deployed model")
    for name, key in (("AUC", "auc_corrected"), ("accuracy", "accuracy_corrected")):
        if s[key]["n"]:
            lines.append(f"coverage of the corrected fold interval of {name} (fold mean, Nadeau-Bengio): "
                         f"{cov(s[key])}; mean half-width {w[key]:.3f}")
            if s[key]["rate"] < COVERAGE_FLOOR:
                lines.append(f"  {name}: below {COVERAGE_FLOOR:.0%}: the corrected interval needs widening too")
    lines += [f"pick is the pool's best backbone: {cov(s['pick_is_best'])}",
              f"regret (pool AUC lost to the pool's best): mean {s['regret_mean']:.3f}, max {s['regret_max']:.3f}, "
              f"mean when the pick is not the best {s['regret_mean_when_wrong']:.3f}",
              f"pool value minus CV estimate, mean: AUC {s['auc_gap_mean']:+.3f}, accuracy {s['accuracy_gap_mean']:+.3f}",
              f"picked models' pool AUC: {s['pool_auc_min']:.3f} to {s['pool_auc_max']:.3f}; "
              f"{s['pool_auc_mid_range']}/{s['draws']} draws within {MID_RANGE[0]:.2f}-{MID_RANGE[1]:.2f}"]
    return lines


def table_lines(draws: list[dict]) -> list[str]:
    """One line per draw: the pick, its CV and pool AUC and accuracy, covered, the pool's best, regret."""
    def yes(flag) -> str:
        return "-" if flag is None else ("yes" if flag else "NO")

    head = (f"{'draw':>4s} {'picked':13s} {'CV AUC [95 % CI]':22s} {'pool AUC':8s} {'cov':3s} "
            f"{'CV acc [95 % CI]':22s} {'pool acc':8s} {'cov':3s} {'pool best':13s} {'regret':>6s}  NB cov")
    lines = [head]
    for d in draws:
        lines.append(
            f"{d['draw']:4d} {d['picked']:13s} {d['cv_auc']:.3f} [{d['cv_auc_low']:.3f}, {d['cv_auc_high']:.3f}] "
            f"{d['pool_auc']:8.3f} {yes(d['auc_covered']):3s} "
            f"{d['cv_acc']:.3f} [{d['cv_acc_low']:.3f}, {d['cv_acc_high']:.3f}] {d['pool_acc']:8.3f} "
            f"{yes(d['acc_covered']):3s} {d['pool_best']:13s} {d['regret']:6.3f}  "
            f"{yes(d.get('nb_auc_covered'))}/{yes(d.get('nb_acc_covered'))}")
    return lines
