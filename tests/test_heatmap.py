"""bench.report.heatmap draws what seaborn's heatmap draws (the independent implementation
it replaces), without drawing the whole figure to do it."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.report.figures import style  # noqa: E402
from bench.report.heatmap import heatmap  # noqa: E402

CASES = {
    "confusion": (np.array([[0.77, 0.23], [0.13, 0.87]]), "Blues", 0, 1, None),
    "signed, with blank cells": (np.array([[np.nan, 0.6, -0.2], [-0.95, np.nan, 0.1], [0.2, -0.1, np.nan]]),
                                 "RdBu", -1, 1, {"label": "P(row better)", "shrink": 0.8}),
    "ranks, wider than tall": (np.array([[1.0, 3.0, 2.0, 4.0], [4.0, 1.0, np.nan, 2.0]]), "YlGnBu_r", 1, 4,
                               {"label": "rank"}),
}


def _drawn(ax) -> dict:
    """What a reader sees of a heatmap: the cells' colours, the annotations (text, place,
    colour), the tick labels at their places, the limits and the colour bar's label."""
    ax.figure.canvas.draw()
    mesh = ax.collections[0]
    colours = np.ma.getdata(mesh.get_facecolors())
    shown = ~np.ma.getmaskarray(mesh.get_array()).ravel()
    return {
        "cells": np.round(colours[: len(shown)][shown] if len(colours) == len(shown) else colours, 4),
        "texts": sorted((t.get_text(), t.get_position(), matplotlib.colors.to_hex(t.get_color())) for t in ax.texts),
        "xticks": [(round(x, 3), t.get_text()) for x, t in zip(ax.get_xticks(), ax.get_xticklabels())],
        "yticks": [(round(y, 3), t.get_text()) for y, t in zip(ax.get_yticks(), ax.get_yticklabels())],
        "limits": (ax.get_xlim(), ax.get_ylim()),
        "colorbar": [a.get_ylabel() for a in ax.figure.axes if a is not ax],
    }


@pytest.mark.parametrize("case", list(CASES))
def test_the_heatmap_shows_what_seaborns_shows(case):
    values, cmap, vmin, vmax, colorbar = CASES[case]
    rows, columns = values.shape
    labels = np.array([[f"{v:.2f}" for v in row] for row in values])
    xs, ys = [f"c{j}" for j in range(columns)], [f"r{i}" for i in range(rows)]
    with style():
        ours, theirs = plt.subplots()[1], plt.subplots()[1]
        heatmap(ours, values, labels, cmap, vmin, vmax, xs, ys, fontsize=8, colorbar=colorbar)
        sns.heatmap(values, mask=np.isnan(values), annot=labels, fmt="", cmap=cmap, vmin=vmin, vmax=vmax, ax=theirs,
                    linewidths=1, linecolor="white", xticklabels=xs, yticklabels=ys, annot_kws={"fontsize": 8},
                    cbar=colorbar is not None, cbar_kws=colorbar or {})
        mine, seaborn = _drawn(ours), _drawn(theirs)
    for key in ("texts", "xticks", "yticks", "limits", "colorbar"):
        assert mine[key] == seaborn[key], key
    np.testing.assert_allclose(mine["cells"], seaborn["cells"], atol=1e-3)
    # white text on the dark cells and dark text on the light ones, the blank cells unannotated
    assert len(mine["texts"]) == int(np.isfinite(values).sum())
    assert {colour for *_, colour in mine["texts"]} <= {"#ffffff", "#262626"}
