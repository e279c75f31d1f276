"""The figures only a cross-validated run (``bench run --cv K``) has: per-fold scores,
out-of-fold ROC curves with group-bootstrap bands, the probability of being best, and
each backbone's outer folds' training curves beside its out-of-fold confusion matrix.

Same conventions as :mod:`bench.report.figures`: plain data in, a matplotlib Figure (or
``None`` when there is nothing to draw) out, one fixed colour per backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.evaluate.resampling import group_codes, resample_weights
from bench.report.figures import WIDTH, confusion_panel, new_figure, shown
from bench.tables import probability_matrix

#: False positive rates the ROC bands are computed on.
ROC_GRID = np.linspace(0.0, 1.0, 101)
#: Group-bootstrap resamples behind a ROC band.
ROC_RESAMPLES = 1000
#: Backbones whose ROC legend fits inside the panel; more go in two columns under it.
LEGEND_INSIDE = 5
REPEAT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# --------------------------------------------------------------------------- ROC with a band


def _roc_points(weights: np.ndarray, positive: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of every weight row (images sorted by falling score), one point per
    distinct score plus the origin; rows without a positive or a negative are dropped."""
    tp = np.cumsum(weights * positive, axis=1)[:, ends]
    fp = np.cumsum(weights * ~positive, axis=1)[:, ends]
    p, n = tp[:, -1:], fp[:, -1:]
    keep = (p[:, 0] > 0) & (n[:, 0] > 0)
    tp, fp, p, n = tp[keep], fp[keep], p[keep], n[keep]
    zero = np.zeros((len(tp), 1))
    return np.hstack([zero, fp / n]), np.hstack([zero, tp / p])


def _on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The highest TPR each curve reaches at FPR <= each grid value, for all rows at once:
    row ``i`` is shifted by ``2 i`` so one ``searchsorted`` serves every row."""
    offset = 2.0 * np.arange(len(fpr))[:, None]
    idx = np.searchsorted((fpr + offset).ravel(), (grid[None, :] + offset).ravel(), side="right") - 1
    return tpr.ravel()[idx].reshape(len(fpr), len(grid))


def roc_band(y_true, score, groups, grid: np.ndarray = ROC_GRID, n_resamples: int = ROC_RESAMPLES, seed: int = 0,
             level: float = 0.95) -> dict:
    """The ROC curve of ``score`` for the binary targets ``y_true`` and a pointwise
    ``level`` band of its TPR on the FPR ``grid``, from a bootstrap that draws whole
    duplicate ``groups`` (one id per prediction).

    Vectorised: a resample is a vector of per-prediction counts, so every resample's
    curve is a cumulative sum over the predictions sorted once by score. Returns ``fpr`` /
    ``tpr`` (the curve itself), ``grid``, ``low`` / ``high`` (the band; nan where no
    resample had both classes) and ``resamples`` (how many had both).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    order = np.argsort(-s, kind="stable")
    positive, s = y[order], s[order]
    ends = np.append(np.flatnonzero(np.diff(s) != 0), len(s) - 1)  # last prediction of each tied score
    codes = group_codes(np.asarray(groups)[order], len(s))
    fpr, tpr = _roc_points(np.ones((1, len(s))), positive, ends)
    curves = []
    for weights in resample_weights(np.random.default_rng(seed), len(s), n_resamples, codes):
        f, t = _roc_points(weights, positive, ends)
        if len(f):
            curves.append(_on_grid(f, t, grid))
    nan = np.full(len(grid), np.nan)
    if not curves:
        return {"fpr": fpr[0] if len(fpr) else nan, "tpr": tpr[0] if len(tpr) else nan, "grid": grid, "low": nan,
                "high": nan, "resamples": 0}
    stacked = np.concatenate(curves)
    low, high = np.percentile(stacked, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {"fpr": fpr[0], "tpr": tpr[0], "grid": grid, "low": low, "high": high, "resamples": len(stacked)}


def _targets(oof: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets, scores, groups): the positive class for 2 classes, else one-vs-rest
    pooled over classes (micro average), each prediction keeping its duplicate group."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in oof["label"]])
    proba = probability_matrix(oof, classes)
    groups = oof["group"].astype(str).to_numpy()
    if len(classes) == 2:
        return y == 1, proba[:, 1], groups
    return np.eye(len(classes), dtype=bool)[y].ravel(), proba.ravel(), np.repeat(groups, len(classes))


def roc_bands(oof: dict[str, pd.DataFrame], classes: Sequence[str], colours: dict, auc: dict[str, str],
              seed: int = 0):
    """Out-of-fold ROC curve of every backbone (all repeats pooled) with its 95 % band;
    ``auc`` holds each backbone's legend text (its CV AUC with CI). With three or more
    backbones a second panel shows the two best alone, where their bands can be told apart."""
    bands = {}
    for name, table in oof.items():
        y, s, g = _targets(table, classes)
        if y.min() != y.max():
            bands[name] = roc_band(y, s, g, seed=seed)
    if not bands:
        return None
    names = list(bands)
    panels = [names, names[:2]] if len(names) > 2 else [names]
    below = len(names) > LEGEND_INSIDE  # a long legend goes under the panels, off the curves
    height = 3.9 + (0.17 * math.ceil((len(names) + 1) / 2) + 0.2 if below else 0.0)
    fig, axes = new_figure(WIDTH if len(panels) > 1 else WIDTH * 0.55, height, ncols=len(panels), sharey=True)
    what = f"positive class: {shown(classes[1])}" if len(classes) == 2 else "one-vs-rest, micro-averaged"
    for ax, shown_names in zip(axes, panels):
        for name in shown_names:
            band = bands[name]
            ax.fill_between(band["grid"], band["low"], band["high"], step="post", color=colours[name], alpha=0.16,
                            lw=0)
            ax.plot(band["fpr"], band["tpr"], color=colours[name], lw=1.8, drawstyle="steps-post",
                    label=f"{name} ({auc.get(name, '')})" if ax is axes[0] else None)
        ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls=":", label="chance" if ax is axes[0] else None)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 \u2212 specificity (false positive rate)")
        ax.set_aspect("equal")
    axes[0].set(title=f"Out-of-fold ROC ({what})", ylabel="sensitivity (true positive rate)")
    if below:
        fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7.5, loc="outside lower center", ncols=2,
                   frameon=False)
    else:
        axes[0].legend(fontsize=7.5, loc="lower right")
    if len(panels) > 1:
        axes[1].set_title(f"The two best: {names[0]}, {names[1]}")
    return fig


# --------------------------------------------------------------------------- per-fold scores


def fold_scores(scores: dict[str, list[tuple[int, int, float]]], pooled: dict[str, tuple[float, float, float]],
                colours: dict, label: str, repeats: int):
    """Each backbone's score of every outer fold (one marker per repeat) beside its pooled
    out-of-fold estimate with 95 % CI (black). ``scores``: name -> (repeat, fold, value);
    ``pooled``: name -> (value, low, high)."""
    names = [n for n in scores if any(np.isfinite(v) for _, _, v in scores[n])]
    if not names:
        return None
    crowded = 3.4 + 1.3 * len(names) > WIDTH  # a backbone's slot narrower than its name: names slanted
    fig, (ax,) = new_figure(min(WIDTH, 3.4 + 1.3 * len(names)), 3.6 + (0.8 if crowded else 0.0))
    for i, name in enumerate(names):
        points = sorted(scores[name])
        n = len(points)
        xs = i - 0.28 + (0.4 * np.arange(n) / max(n - 1, 1) if n > 1 else np.array([0.2]))
        for x, (repeat, fold, value) in zip(xs, points):
            ax.scatter(x, value, s=34, marker=REPEAT_MARKERS[repeat % len(REPEAT_MARKERS)], color=colours[name],
                       edgecolor="white", linewidth=0.5, zorder=3)
        values = np.array([v for _, _, v in points], dtype=float)
        if np.isfinite(values).any():
            ax.hlines(np.nanmean(values), xs[0] - 0.04, xs[-1] + 0.04, color=colours[name], lw=1.2, alpha=0.7)
        v, lo, hi = pooled.get(name, (np.nan, np.nan, np.nan))
        if np.isfinite(v):
            err = [[v - lo if np.isfinite(lo) else 0], [hi - v if np.isfinite(hi) else 0]]
            ax.errorbar(i + 0.3, v, yerr=err, fmt="D", color="#222222", ecolor="#222222", markersize=5, capsize=3,
                        elinewidth=1.5, zorder=4)
    ax.set_xticks(range(len(names)), names)
    if crowded:
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set(title=f"{label} of every outer fold", ylabel=label, xlabel=None)
    ax.grid(axis="x", visible=False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=REPEAT_MARKERS[r % len(REPEAT_MARKERS)], ls="", color="#777777",
                      label=f"repeat {r + 1}") for r in range(repeats)]
    handles += [Line2D([], [], color="#777777", lw=1.2, label="fold mean"),
                Line2D([], [], marker="D", color="#222222", ls="", label="pooled out-of-fold (95 % CI)")]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def probability_best(values: dict[str, float], colours: dict):
    """Horizontal bars: each backbone's probability of having the best CV estimate."""
    names = [n for n, v in values.items() if v is not None and np.isfinite(v)]
    if not names:
        return None
    fig, (ax,) = new_figure(WIDTH * 0.62, 0.9 + 0.38 * len(names))
    y = np.arange(len(names))[::-1]
    shares = np.array([values[n] for n in names], dtype=float)
    ax.barh(y, shares, color=[colours[n] for n in names], height=0.6)
    for yi, v in zip(y, shares):
        ax.annotate(f"{100 * v:.0f} %", (v, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.12)
    ax.set(title="Probability of being best", xlabel="share of bootstrap resamples in which it ranks first")
    ax.grid(axis="y", visible=False)
    return fig


# --------------------------------------------------------------------------- per backbone


def folds_and_confusion(fold_histories: Sequence[dict | None], final: dict | None,
                        confusions: Sequence[tuple[str, object]], classes: Sequence[str], colour):
    """Validation loss and accuracy per epoch of every outer fold's kept trial (thin) and
    of the final model's (train solid, validation dashed, thick), then one confusion matrix
    per ``(title, matrix)`` in ``confusions``."""
    fig, axes = new_figure(WIDTH, 2.9, ncols=2 + len(confusions))
    for ax, metric, title in zip(axes[:2], ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.set(title=title, xlabel="epoch")
        drawn = 0
        for history in fold_histories:
            values = ((history or {}).get("history") or {}).get(f"val_{metric}")
            if values:
                ax.plot(range(1, len(values) + 1), values, color=colour, lw=0.9, alpha=0.45, ls="--",
                        label="outer folds (val)" if not drawn else None)
                drawn += 1
        hist = (final or {}).get("history") or {}
        for key, text, ls in ((metric, "final model (train)", "-"), (f"val_{metric}", "final model (val)", "--")):
            if hist.get(key):
                ax.plot(range(1, len(hist[key]) + 1), hist[key], color=colour, lw=2, ls=ls, label=text)
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes, color="#777")
            continue
        ax.xaxis.get_major_locator().set_params(integer=True)
        if metric == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="best")
    for ax, (title, matrix) in zip(axes[2:], confusions):
        confusion_panel(ax, matrix, classes, title)
    return fig
