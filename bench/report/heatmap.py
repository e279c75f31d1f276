"""An annotated heatmap on a matplotlib axis: the confusion matrices and the suite's tables.

Drawn with matplotlib alone, in seaborn's ``heatmap`` look (cells on integer edges with
white lines between them, row 0 at the top, ticks at the cell centres, no spines, dark
text on light cells and white text on dark ones). seaborn's ``heatmap`` draws the whole
figure once to place its labels, which costs a tenth of a second per panel (over a
second for a report with eleven backbones) and is then thrown away: the report renders
the figure anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Cells at or above this relative luminance get dark text, the others white (seaborn's rule).
LIGHT = 0.408


def heatmap(ax, values, labels, cmap: str, vmin: float, vmax: float, xticklabels: Sequence[str],
            yticklabels: Sequence[str], fontsize: float = 9, colorbar: dict | None = None):
    """``values`` (rows x columns) as coloured cells on ``ax``, each annotated with its entry
    of ``labels``; nan cells are left blank (the axis background shows, unannotated).
    ``colorbar``: keyword arguments of ``Figure.colorbar`` (``label``, ``shrink``); none
    without it. Returns the mesh."""
    import matplotlib as mpl
    from seaborn.utils import relative_luminance

    values = np.asarray(values, dtype=float)
    rows, columns = values.shape
    colours = mpl.colormaps[cmap]
    norm = mpl.colors.Normalize(vmin=vmin, vmax=vmax)
    mesh = ax.pcolormesh(np.ma.masked_invalid(values), cmap=colours, norm=norm, edgecolors="white", linewidth=1)
    fill = colours(norm(np.nan_to_num(values)))
    dark = np.reshape(relative_luminance(fill.reshape(-1, 4)), (rows, columns)) < LIGHT
    for i in range(rows):
        for j in range(columns):
            if not np.isnan(values[i, j]):
                ax.text(j + 0.5, i + 0.5, labels[i][j], ha="center", va="center", fontsize=fontsize,
                        color="w" if dark[i, j] else ".15")
    ax.set(xlim=(0, columns), ylim=(rows, 0))  # row 0 at the top
    ax.set_xticks(np.arange(columns) + 0.5, list(xticklabels))
    ax.set_yticks(np.arange(rows) + 0.5, list(yticklabels))
    for spine in ax.spines.values():
        spine.set_visible(False)
    if colorbar is not None:
        bar = ax.figure.colorbar(mesh, ax=ax, **colorbar)
        bar.outline.set_visible(False)
    return mesh
