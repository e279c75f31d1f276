"""The suite report's figures: the critical-difference diagram of mean ranks, the matrix
of Bayesian signed-rank probabilities, and the datasets x models table as a heatmap with
each cell's 95 % interval.

Same conventions as :mod:`bench.report.figures`: plain arrays in, a matplotlib Figure (or
``None`` when there is nothing to draw) out, to be drawn inside
:func:`bench.report.figures.style` and embedded with :func:`bench.report.figures.as_figure`;
:func:`write_png` saves one as a PNG file. Arrays come from
:class:`bench.evaluate.across_datasets.AcrossDatasets` (``mean_ranks``, ``nemenyi``,
``bayes_matrix()``, ``ranks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.report.figures import WIDTH, backbone_colours, new_figure
from bench.report.rendering import png

FAILED = "failed"


def write_png(fig, path: Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (see :func:`bench.report.rendering.png`); returns ``path``."""
    path = Path(path)
    path.write_bytes(png(fig))
    return path


def _check_square(models: Sequence[str], values: np.ndarray, name: str, tail: tuple = ()) -> np.ndarray:
    k = len(models)
    if values.shape != (k, k) + tail:
        raise ValueError(f"Expected {name} of shape {(k, k) + tail} for {k} models. Received: shape {values.shape}")
    return values


def cd_diagram(models: Sequence[str], mean_ranks, p_values, cd: float, alpha: float = 0.05,
               colours: dict | None = None):
    """Demšar's critical-difference diagram: the models on an axis of mean rank (1 = best,
    on the left), a bar joining each group of models whose pairwise Nemenyi p-values are
    all at least ``alpha`` (not significantly different), and the critical difference
    ``cd`` drawn as an interval above the axis. Drawn by scikit-posthocs'
    ``critical_difference_diagram``. ``None`` with fewer than 2 models or without a
    critical difference (Nemenyi not computed)."""
    import pandas as pd
    import scikit_posthocs

    mean = np.asarray(mean_ranks, dtype=float)
    p = _check_square(models, np.asarray(p_values, dtype=float), "p_values")
    if len(models) < 2 or not np.isfinite(cd) or not np.all(np.isfinite(mean)):
        return None
    colours = colours or backbone_colours(list(models))
    k = len(models)
    fig, (ax,) = new_figure(WIDTH, 1.6 + 0.32 * ((k + 1) // 2) + 0.25 * k / 2)
    ranks = pd.Series(mean, index=list(models))
    sig = pd.DataFrame(np.where(np.isfinite(p), p, 1.0), index=list(models), columns=list(models))
    scikit_posthocs.critical_difference_diagram(
        ranks, sig, ax=ax, alpha=alpha, color_palette={m: colours[m] for m in models},
        label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
        label_props={"fontsize": 9}, crossbar_props={"color": "#444444", "linewidth": 2.5},
    )
    low = float(mean.min())
    ax.plot([low, low + cd], [0.7, 0.7], color="#aa3333", lw=2, solid_capstyle="butt")
    for x in (low, low + cd):
        ax.plot([x, x], [0.55, 0.85], color="#aa3333", lw=1.5)
    ax.text(low + cd / 2, 0.95, f"CD = {cd:.2f} (Nemenyi, \u03b1 = {alpha:g})", ha="center", va="bottom",
            fontsize=8.5, color="#aa3333")
    ax.set_xlim(min(1.0, low) - 0.05, max(float(k), float(mean.max()), low + cd) + 0.05)
    ax.set_ylim(top=1.5)
    ax.grid(False)
    ax.set_title("Mean rank across datasets (1 = best); bars join models Nemenyi does not tell apart", pad=26)
    return fig


def bayes_matrix(models: Sequence[str], probabilities):
    """Bayesian signed-rank probabilities for every ordered pair: cell (row i, column j)
    is coloured by P(i better) - P(j better) (blue: the row model is better, red: worse,
    white: practically equivalent or undecided) and annotated with P(i better) above
    P(practically equivalent). ``probabilities``: ``(k, k, 3)`` as
    ``AcrossDatasets.bayes_matrix()``; nan cells (the diagonal, pairs the test could not
    be computed for) stay blank. ``None`` with fewer than 2 models."""
    from bench.report.heatmap import heatmap

    prob = _check_square(models, np.asarray(probabilities, dtype=float), "probabilities", (3,))
    k = len(models)
    if k < 2:
        return None
    side = min(WIDTH, 2.4 + 0.95 * k)
    fig, (ax,) = new_figure(side, min(WIDTH, 1.4 + 0.8 * k))
    net = prob[..., 0] - prob[..., 2]
    labels = np.array([["\u2014" if np.isnan(prob[i, j, 0]) else f"{prob[i, j, 0]:.2f}\n\u2248 {prob[i, j, 1]:.2f}"
                        for j in range(k)] for i in range(k)])
    heatmap(ax, net, labels, "RdBu", -1, 1, list(models), list(models), fontsize=8.5,
            colorbar={"label": "P(row better) \u2212 P(column better)", "shrink": 0.8})
    for i in range(k):  # the blank (nan) cells get a dash
        for j in range(k):
            if np.isnan(net[i, j]):
                ax.text(j + 0.5, i + 0.5, "\u2014", ha="center", va="center", fontsize=9, color="#999999")
    ax.set(xlabel="column model", ylabel="row model")
    ax.set_title("Bayesian signed-rank: P(row better)\nand \u2248 P(practically equivalent)")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    ax.grid(False)
    return fig


def _cell(value: float, low: float, high: float) -> str:
    if np.isnan(value):
        return FAILED
    if np.isnan(low) or np.isnan(high):
        return f"{value:.3f}"
    return f"{value:.3f}\n[{low:.2f}, {high:.2f}]"


def scores_heatmap(datasets: Sequence[str], models: Sequence[str], point, low, high, objectives: Sequence[str],
                   ranks=None):
    """The datasets x models table: each cell annotated "0.912 [0.88, 0.94]" (the
    estimate and its 95 % interval, each dataset on its own ``objectives[d]``, e.g.
    "ROC AUC" or "Brier score, lower is better"), coloured by the per-dataset rank when
    ``ranks`` is given (1 = best, darkest) and else by the estimate scaled within its row
    (higher darker). A nan estimate is a model that failed: a grey cell marked "failed".
    ``None`` without datasets or models."""
    from bench.report.heatmap import heatmap

    value = np.asarray(point, dtype=float)
    n, k = len(datasets), len(models)
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    for name, array in (("point", value), ("low", lo), ("high", hi)) + (() if ranks is None else
                                                                          (("ranks", np.asarray(ranks, float)),)):
        if array.shape != (n, k):
            raise ValueError(f"Expected {name} of shape ({n}, {k}) (datasets x models). Received: shape {array.shape}")
    if len(objectives) != n:
        raise ValueError(f"Expected one objective label per dataset ({n}). Received: {len(objectives)}")
    if n == 0 or k == 0:
        return None
    if ranks is not None:
        shade, vmin, vmax, label = np.asarray(ranks, dtype=float), 1, max(k, 2), "rank on the dataset (1 = best)"
        cmap = "YlGnBu_r"
    else:
        span = np.nanmax(value, axis=1, keepdims=True) - np.nanmin(value, axis=1, keepdims=True)
        shade = (value - np.nanmin(value, axis=1, keepdims=True)) / np.where(span > 0, span, 1)
        vmin, vmax, label, cmap = 0, 1, "estimate, scaled within its dataset", "YlGnBu"
    shade = np.where(np.isnan(value), np.nan, shade)
    labels = np.array([[_cell(value[d, j], lo[d, j], hi[d, j]) for j in range(k)] for d in range(n)])
    fig, (ax,) = new_figure(min(16.0, max(WIDTH * 0.6, 2.6 + 1.5 * k)), 1.3 + 0.62 * n)
    ax.set_facecolor("#e9e9e9")
    heatmap(ax, shade, labels, cmap, vmin, vmax, list(models), [f"{d}\n{o}" for d, o in zip(datasets, objectives)],
            fontsize=8, colorbar={"label": label, "shrink": 0.8})
    for d, j in zip(*np.nonzero(np.isnan(value))):  # blank (nan) cells: the model failed there
        ax.text(j + 0.5, d + 0.5, FAILED, ha="center", va="center", fontsize=8, color="#666666", style="italic")
    ax.set_title("Each dataset's estimate with its 95 % interval")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    ax.grid(False)
    return fig
