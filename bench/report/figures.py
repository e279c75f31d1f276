"""The report's figures, drawn with matplotlib (Agg canvas, no pyplot state) and seaborn.

Every function takes plain data and returns a :class:`matplotlib.figure.Figure`, or
``None`` when there is nothing to draw; :func:`bench.report.rendering.png` turns a figure into PNG bytes.
Colours are fixed per backbone (:func:`backbone_colours`) so a backbone looks the same
in every figure.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.config import OBJECTIVE_LABELS
from bench.schema import Estimate, Source, to_float
from bench.schema import column as metric_column
from bench.tables import probability_matrix

WIDTH = 9.0  # inches; full report column


@contextlib.contextmanager
def style():
    """seaborn's whitegrid look for the figures drawn inside, without touching global rc."""
    import matplotlib
    import seaborn as sns

    with contextlib.ExitStack() as stack:
        stack.enter_context(sns.axes_style("whitegrid", {"grid.color": "#e6e6e6", "axes.edgecolor": "#bbbbbb"}))
        stack.enter_context(sns.plotting_context("paper", font_scale=1.15))
        stack.enter_context(matplotlib.rc_context({
            "axes.titleweight": "bold", "axes.titlesize": 11, "axes.titlelocation": "left",
            "legend.frameon": False, "figure.facecolor": "white", "savefig.facecolor": "white",
            "font.family": "DejaVu Sans",
        }))
        yield


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    """A constrained-layout Figure on an Agg canvas and its axes (always a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, list(axes.ravel())


def backbone_colours(names: Sequence[str]) -> dict[str, tuple]:
    """A colour per backbone, each its own: seaborn's colour-blind palette for up to its
    10 colours (asked for more, it starts again from the first), evenly spaced hues for
    more backbones (all eleven registered ones)."""
    import seaborn as sns

    palette = sns.color_palette("colorblind")
    if len(names) > len(palette):
        palette = sns.color_palette("husl", len(names))
    return {name: palette[i] for i, name in enumerate(names)}




# --------------------------------------------------------------------------- leaderboard


def leaderboard_points(rows: list[dict], colours: dict, source: Source = Source.TEST):
    """F1 and ROC AUC per backbone with their 95 % CIs (rank order, best on top), as
    estimated from ``source`` (the test split, or out of fold)."""
    what = source.label
    if not rows:
        return None
    names = [r["backbone"] for r in rows]
    y = np.arange(len(rows))[::-1]
    fig, axes = new_figure(WIDTH, 0.9 + 0.38 * len(rows), ncols=2, sharey=True)
    for ax, metric, title in zip(axes, ("f1", "roc_auc"), ("F1", "ROC AUC")):
        for yi, r in zip(y, rows):
            estimate = Estimate.read(r, metric, source)
            v, lo, hi = estimate.value, estimate.low, estimate.high
            if math.isnan(v):
                continue
            err = [[v - lo if math.isfinite(lo) else 0], [hi - v if math.isfinite(hi) else 0]]
            ax.errorbar(v, yi, xerr=err, fmt="o", color=colours[r["backbone"]], ecolor=colours[r["backbone"]],
                        elinewidth=2, capsize=3, markersize=7)
            ax.annotate(f"{v:.3f}", (v, yi), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8,
                        color="#444444")
        ax.set_title(f"{what[:1].upper()}{what[1:]} {title}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(f"{what} {title}, bars: 95 % bootstrap CI")
    axes[0].set_yticks(y, names)
    if any(r.get(metric_column("roc_auc", source)) is not None for r in rows):
        axes[1].axvline(0.5, color="#999999", lw=1, ls=":")
    return fig


# --------------------------------------------------------------------------- deployment


def deployment(rows: list[dict], colours: dict, pareto: dict[str, list[bool]], source: Source = Source.TEST):
    """Accuracy (estimated from ``source``: test, or out of fold) against latency and
    against parameter count, Pareto front marked.

    ``pareto`` maps ``"latency"`` / ``"params"`` to one flag per row.
    """
    if not rows:
        return None
    fig, axes = new_figure(WIDTH, 3.4, ncols=2, sharey=True)
    what = source.label
    estimates = [Estimate.read(r, "accuracy", source) for r in rows]
    acc = np.array([e.value for e in estimates])
    lo, hi = np.array([e.low for e in estimates]), np.array([e.high for e in estimates])
    axes_spec = (
        ("latency", np.array([to_float(r.get("latency_ms_b1")) for r in rows]), "latency, ms per image (batch 1)",
         "Accuracy against latency"),
        ("params", np.array([to_float(r.get("params_total")) for r in rows]) / 1e6, "parameters, millions",
         "Accuracy against size"),
    )
    for ax, (key, x, xlabel, title) in zip(axes, axes_spec):
        flags = pareto.get(key, [False] * len(rows))
        ok = np.isfinite(x) & np.isfinite(acc)
        for i, r in enumerate(rows):
            if not ok[i]:
                continue
            c = colours[r["backbone"]]
            yerr = [[acc[i] - lo[i]], [hi[i] - acc[i]]] if np.isfinite(lo[i]) and np.isfinite(hi[i]) else None
            ax.errorbar(x[i], acc[i], yerr=yerr, fmt="none", ecolor=c, alpha=0.35, elinewidth=1.5, capsize=2)
            ax.scatter(x[i], acc[i], s=90 if flags[i] else 55, color=c if flags[i] else "white", edgecolor=c,
                       linewidth=2, zorder=3, marker="*" if flags[i] else "o")
            ax.annotate(r["backbone"], (x[i], acc[i]), xytext=(6, 4), textcoords="offset points", fontsize=8)
        front = sorted((x[i], acc[i]) for i in range(len(rows)) if flags[i] and ok[i])
        if len(front) > 1:
            fx, fy = zip(*front)
            ax.plot(fx, fy, color="#777777", lw=1, ls="--", zorder=2, drawstyle="steps-post", label="Pareto front")
        if ok.sum() and np.nanmax(x[ok]) / max(np.nanmin(x[ok]), 1e-9) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        if ok.any():
            span = np.nanmax(x[ok]) - np.nanmin(x[ok])
            if ax.get_xscale() == "linear":
                pad = 0.25 * span if span > 0 else 0.5 * max(np.nanmax(x[ok]), 1e-3)
                ax.set_xlim(max(0.0, np.nanmin(x[ok]) - pad), np.nanmax(x[ok]) + pad)
    axes[0].set_ylabel(f"{what} accuracy (95 % CI)")
    axes[0].set_ylim(max(0.0, np.nanmin(lo) - 0.05) if np.isfinite(lo).any() else 0, 1.02)
    handles = [
        _marker("*", "#555555", True, "Pareto-optimal"), _marker("o", "#555555", False, "dominated"),
    ]
    axes[1].legend(handles=handles, loc="lower right", fontsize=8)
    return fig


def _marker(marker: str, colour, filled: bool, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], marker=marker, ls="", markersize=9 if marker == "*" else 7, markeredgewidth=2,
                  markeredgecolor=colour, markerfacecolor=colour if filled else "white", label=label)


# --------------------------------------------------------------------------- per backbone


def shown(name: str) -> str:
    """A name as figures can draw it: bytes that are not valid UTF-8 become U+FFFD."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def training_and_confusion(history: dict | None, confusion, classes: Sequence[str], colour):
    """Loss and accuracy per epoch (train and val) of the best trial, and the test confusion matrix."""
    fig, axes = new_figure(WIDTH, 2.9, ncols=3)
    hist = (history or {}).get("history") or {}
    epochs_run = max((len(v) for v in hist.values()), default=0)
    for ax, metric, title in zip(axes[:2], ("loss", "accuracy"), ("Loss", "Accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if not hist.get(metric) and not hist.get(f"val_{metric}"):
            ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes, color="#777")
            continue
        for key, label, ls in ((metric, "train", "-"), (f"val_{metric}", "val", "--")):
            values = hist.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, ls=ls, marker="o", markersize=3, color=colour,
                        alpha=1.0 if label == "val" else 0.55, label=label)
        phases = history.get("phase_epochs") or []
        if len(phases) == 2 and phases[0] and phases[1]:
            ax.axvline(phases[0] + 0.5, color="#999999", lw=1, ls=":")
            ax.text(phases[0] + 0.6, 0.98, "fine-tuning", transform=ax.get_xaxis_transform(), va="top",
                    fontsize=7, color="#777777")
        best = history.get("best_epoch")
        if best:
            ax.axvline(best, color="#d62728", lw=1, alpha=0.6)
            ax.text(best + 0.1, 0.02, "best", transform=ax.get_xaxis_transform(), fontsize=7, color="#d62728")
        ax.set_xlim(0.5, max(epochs_run, 1) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if metric == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="best")
    confusion_panel(axes[2], confusion, classes, "Test confusion matrix")
    return fig


def confusion_panel(ax, confusion, classes: Sequence[str], title: str) -> None:
    """A confusion matrix (counts and share of each true class) on ``ax``, or "not available"."""
    from bench.report.heatmap import heatmap

    ax.set_title(title)
    cm = np.asarray(confusion if confusion is not None else [], dtype=float)
    if cm.ndim == 2 and cm.size and cm.shape[0] == len(classes):
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        labels = [[f"{int(cm[i, j])}\n{100 * share[i, j]:.0f} %" for j in range(cm.shape[1])] for i in range(cm.shape[0])]
        names = [shown(c) for c in classes]
        heatmap(ax, share, labels, "Blues", 0, 1, names, names, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(axis="y", rotation=0)
        ax.grid(False)
    else:
        ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="#777")


def _scores(pred: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(targets, scores) for the ROC/PR curves: positive class for 2 classes, else
    one-vs-rest pooled over classes (micro average)."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in pred["label"]])
    proba = probability_matrix(pred, classes)
    if len(classes) == 2:
        return (y == 1).astype(int), proba[:, 1]
    onehot = np.eye(len(classes))[y]
    return onehot.ravel().astype(int), proba.ravel()


def roc_pr(predictions: dict[str, pd.DataFrame], classes: Sequence[str], colours: dict):
    """ROC and precision-recall curves of every backbone, overlaid."""
    from sklearn.metrics import (
        auc,
        average_precision_score,
        precision_recall_curve,
        roc_curve,
    )

    if not predictions:
        return None
    fig, axes = new_figure(WIDTH, 3.7, ncols=2)
    prevalence = None
    for name, pred in predictions.items():
        y, s = _scores(pred, classes)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        axes[0].plot(fpr, tpr, color=colours[name], lw=1.8, label=f"{name} (AUC {auc(fpr, tpr):.3f})",
                     drawstyle="steps-post")
        precision, recall, _ = precision_recall_curve(y, s)
        axes[1].plot(recall, precision, color=colours[name], lw=1.8, drawstyle="steps-post",
                     label=f"{name} (AP {average_precision_score(y, s):.3f})")
        prevalence = y.mean()
    axes[0].plot([0, 1], [0, 1], color="#999999", lw=1, ls=":", label="chance")
    if prevalence is not None:
        axes[1].axhline(prevalence, color="#999999", lw=1, ls=":", label=f"chance ({prevalence:.2f})")
    what = f"positive class: {shown(classes[1])}" if len(classes) == 2 else "one-vs-rest, micro-averaged"
    axes[0].set(title=f"ROC ({what})", xlabel="1 \u2212 specificity (false positive rate)",
                ylabel="sensitivity (true positive rate)")
    axes[1].set(title="Precision\u2013recall", xlabel="recall (sensitivity)", ylabel="precision")
    for ax in axes:
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.legend(fontsize=7.5, loc="lower right" if ax is axes[0] else "lower left")
    return fig


def reliability(predictions: dict[str, pd.DataFrame], classes: Sequence[str], colours: dict,
                where: str = "test split"):
    """Reliability diagram (observed frequency against predicted probability) in equal-count
    bins with 95 % Wilson intervals, overlaid, with the distribution of predicted
    probabilities underneath (``where``: which predictions, for the title)."""
    from bench.evaluate.calibration import default_n_bins, ece, reliability_bins

    if not predictions:
        return None
    fig, axes = new_figure(WIDTH * 0.62, 4.6, nrows=2, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top, bottom = axes
    binary = len(classes) == 2
    n_bins = default_n_bins(max(len(p) for p in predictions.values()))
    for offset, (name, pred) in enumerate(predictions.items()):
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[str(v)] for v in pred["label"]])
        proba = probability_matrix(pred, classes)
        bins = reliability_bins(y, proba, n_bins)
        s = np.array([b["mean_score"] for b in bins]) + 0.004 * (offset - (len(predictions) - 1) / 2)
        f = np.array([b["observed"] for b in bins])
        err = np.clip([[b["observed"] - b["low"] for b in bins], [b["high"] - b["observed"] for b in bins]], 0, None)
        top.errorbar(s, f, yerr=err, color=colours[name], lw=1.4, alpha=0.85, capsize=2, marker="o", ms=4,
                     label=f"{name} (ECE {ece(y, proba, n_bins):.3f})")
        score = proba[:, 1] if binary else proba.max(axis=1)
        bottom.hist(score, bins=np.linspace(0, 1, 21), histtype="step", color=colours[name], lw=1.6)
    top.plot([0, 1], [0, 1], color="#999999", lw=1, ls=":", label="perfectly calibrated")
    top.set(title=f"Reliability ({where}, {n_bins} equal-count bins)", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
            ylabel=f"observed share {shown(classes[1])}" if binary else "observed accuracy")
    top.legend(fontsize=7.5, loc="upper left")
    bottom.set(xlabel=f"predicted P({shown(classes[1])})" if binary else "predicted probability of the chosen class",
               ylabel="images")
    return fig


def decision_curves(reports: dict[str, dict], classes: Sequence[str], colours: dict, where: str = "test split"):
    """Net benefit over threshold probabilities (decision curve analysis) of every binary
    backbone, with its 95 % bootstrap band, against treating all and treating none."""
    curves = {name: r["decision_curve"] for name, r in reports.items() if r.get("decision_curve")}
    if not curves:
        return None
    fig, (ax,) = new_figure(WIDTH * 0.62, 3.6)
    first = next(iter(curves.values()))
    t = np.asarray(first["thresholds"], dtype=float)
    treat_all = np.asarray(first["treat_all"], dtype=float)
    prevalence = float(first.get("prevalence", np.nan))
    for name, c in curves.items():
        model = np.asarray(c["model"], dtype=float)
        ax.plot(t, model, color=colours[name], lw=1.6, label=name)
        if c.get("model_low") is not None:
            ax.fill_between(t, np.asarray(c["model_low"], float), np.asarray(c["model_high"], float),
                            color=colours[name], alpha=0.15, lw=0)
    ax.plot(t, treat_all, color="#555555", lw=1.2, ls="--", label=f"treat all as {shown(classes[1])}")
    ax.axhline(0, color="#999999", lw=1, ls=":", label="treat none")
    top = max(prevalence if np.isfinite(prevalence) else 0.1, 0.05)
    ax.set(xlim=(0, 1), ylim=(-0.1 * top, 1.15 * top), xlabel=f"threshold probability of {shown(classes[1])}",
           ylabel="net benefit", title=f"Decision curve ({where})")
    ax.legend(fontsize=7.5, loc="upper right")
    return fig


# --------------------------------------------------------------------------- search


def search_learning_rate(trials: pd.DataFrame, objective: str, colours: dict):
    """Objective of every completed trial against its learning rate (log scale)."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    if trials.empty or "learning_rate" not in trials or trials["learning_rate"].isna().all():
        return None
    fig, (ax,) = new_figure(WIDTH * 0.62, 3.3)
    sns.scatterplot(data=trials, x="learning_rate", y=objective, hue="backbone", palette=colours, s=45, ax=ax,
                    edgecolor="white", linewidth=0.5, alpha=0.9)
    ax.set_xscale("log")
    rates = trials["learning_rate"].dropna().astype(float)
    rates = rates[rates > 0]
    if len(rates):  # from decade to decade, so that at least two are labelled
        ax.set_xlim(10.0 ** math.floor(math.log10(rates.min())), 10.0 ** math.ceil(math.log10(rates.max()) + 1e-9))
    ax.xaxis.set_minor_formatter(NullFormatter())  # labels at the decades only: minor ones overlap
    ax.set(title=f"{OBJECTIVE_LABELS.get(objective, objective)} against learning rate", xlabel="learning rate",
           ylabel=OBJECTIVE_LABELS.get(objective, objective))
    ax.legend(fontsize=7.5, title=None, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the points
    return fig


@contextlib.contextmanager
def _seeded_global_numpy(seed: int):
    """Seed numpy's global generator for the block, then put its previous state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def search_choices(trials: pd.DataFrame, objective: str, colours: dict):
    """Objective by unfreeze depth, head pooling and dense layers (box + points, all trials)."""
    import seaborn as sns

    columns = [c for c in ("unfreeze", "pooling", "dense_layers") if c in trials and trials[c].notna().any()]
    if trials.empty or not columns:
        return None
    titles = {"unfreeze": "top blocks fine-tuned", "pooling": "head pooling", "dense_layers": "hidden dense layers"}
    fig, axes = new_figure(WIDTH, 3.2, ncols=len(columns), sharey=True)
    for ax, column in zip(axes, columns):
        frame = trials.dropna(subset=[column]).copy()
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values):
            frame[column] = values.astype(int).astype(str)
            order = sorted(frame[column].unique(), key=int)
        else:
            frame[column] = values.astype(str)
            order = sorted(frame[column].unique())
        with warnings.catch_warnings():
            # seaborn 0.13 passes matplotlib 3.11's deprecated ``vert`` to bxp
            warnings.filterwarnings("ignore", message=".*vert: bool was deprecated", category=DeprecationWarning)
            sns.boxplot(data=frame, x=column, y=objective, order=order, ax=ax, color="#eeeeee", showfliers=False,
                        width=0.55, linewidth=1)
        with _seeded_global_numpy(0):  # seaborn jitters with np.random; keep the PNG reproducible
            sns.stripplot(data=frame, x=column, y=objective, order=order, hue="backbone", palette=colours, ax=ax,
                          dodge=len(colours) > 1, size=5, jitter=0.12, edgecolor="white", linewidth=0.4,
                          legend=ax is axes[-1])
        ax.set(title=titles[column], xlabel=None, ylabel=OBJECTIVE_LABELS.get(objective, objective))
    if axes[-1].get_legend() is not None:
        axes[-1].legend(fontsize=7.5, title=None, loc="best")
    return fig
