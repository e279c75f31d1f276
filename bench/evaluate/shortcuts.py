"""The shortcut check: can the label be told from how each file was stored, or from
what the image looks like without any anatomy?

Public medical datasets mix sources (hospitals, scanners, websites), and a model can learn
the source instead of the disease. bench records, per image, its width, height, colour
mode, file format and size in bytes, and its content statistics
(:mod:`bench.data.content`: intensity histogram, texture, border and background). If
those alone predict the label, so can a network: a high score below means the data
carries a shortcut (the source, the scanner, the exposure, or a gross difference a
network needs no anatomy to see), and a test score may measure it. The check names the
features that carry the signal: those that best separate the classes on their own
(:func:`feature_aucs`), so a reader knows where to look.

A small random forest (scikit-learn, 100 trees, leaves of at least 3 images, each tree
grown on at most TREE_SAMPLES images) is trained
on those features (width, height, aspect ratio, log pixel count, bytes per pixel,
one-hot mode and format, then the content statistics) and scored out of fold: stratified group 5-fold, so copies of one
image (the split's groups) never sit on both sides. The trees grow in threads on every
usable core (the same forest as on one: scikit-learn draws each tree's seed first; its time
at scale is in ``docs/performance.md``). The score is the out-of-fold ROC AUC
(macro one-vs-rest for 3+ classes) with a 95 % bootstrap interval over the groups
(:func:`bench.evaluate.metrics.bootstrap_ci`). It warns at :data:`WARN_AUC` or more when the
interval's lower bound is above chance (0.5): a few images give wide intervals, and a
warning must not rest on noise.
"""

from __future__ import annotations

import math

import numpy as np

#: Out-of-fold AUC at or above which the check warns.
WARN_AUC = 0.70
FOLDS = 5
#: Features named in the warning, at most (the strongest alone first).
NAMED = 4
#: Single-feature AUC (either direction) from which a feature is named as carrying the label.
FEATURE_AUC = 0.65
#: Training images each tree is grown on, at most (its bootstrap sample; all of the fold's
#: below that, as scikit-learn's default): a tree's size grows with its sample, so the cap
#: keeps the forest's memory flat however many images the dataset has.
TREE_SAMPLES = 10_000
#: Training images from which the forest grows its trees in parallel threads; below it,
#: one thread is faster (joblib's start-up and polling cost more than the trees).
PARALLEL_TREES_FROM = 1_000


def attribute_matrix(records: list) -> tuple[np.ndarray, list[str]]:
    """Per record: the numeric attributes, then one-hot mode and format. Returns (X, column names)."""
    modes = sorted({r.mode for r in records})
    formats = sorted({r.format for r in records})
    rows = []
    for r in records:
        pixels = max(r.width * r.height, 1)
        size = getattr(r, "bytes", 0) or 0
        rows.append([r.width, r.height, r.width / max(r.height, 1), math.log2(pixels), size / pixels,
                     *(float(r.mode == m) for m in modes), *(float(r.format == f) for f in formats)])
    names = ["width", "height", "aspect", "log2 pixels", "bytes per pixel",
             *(f"mode {m}" for m in modes), *(f"format {f}" for f in formats)]
    return np.array(rows, dtype=np.float64), names


def feature_aucs(x: np.ndarray, y: np.ndarray, names: list[str]) -> list[tuple[str, float]]:
    """Each feature's ROC AUC alone, whichever direction separates better (``max(AUC, 1 -
    AUC)``; for 3+ classes the best one-vs-rest), strongest first; constant features left out.

    A feature's AUC against a class is its Mann-Whitney U over the class's rows and the
    others', divided by the number of pairs (ties count half), as ``roc_auc_score`` gives it;
    scipy computes it for every feature in one call."""
    from scipy.stats import mannwhitneyu

    classes = np.unique(y)
    varies = np.ptp(x, axis=0) > 0 if len(x) else np.zeros(x.shape[1], bool)
    if len(classes) < 2 or not varies.any():
        return []
    best = np.zeros(x.shape[1])
    for k in classes[1:] if len(classes) == 2 else classes:
        inside = y == k
        u = mannwhitneyu(x[inside], x[~inside], axis=0, method="asymptotic", use_continuity=False).statistic
        best = np.maximum(best, np.asarray(u, dtype=np.float64) / (inside.sum() * (~inside).sum()))
    if len(classes) == 2:
        best = np.maximum(best, 1.0 - best)
    out = [(name, round(float(auc), 4)) for name, auc, kept in zip(names, best, varies) if kept]
    return sorted(out, key=lambda item: -item[1])


def shortcut_check(records: list, classes: list[str], groups: list[str], seed: int = 0,
                   content: np.ndarray | None = None) -> dict | None:
    """The out-of-fold AUC of the model on file attributes (and content statistics), its
    interval, whether it warns and the features that carry the signal.

    ``groups``: one group id per record (copies share one). ``content``: the content
    statistics of each record (:data:`bench.data.content.NAMES` columns), or None for
    file attributes alone. None when a class has fewer than FOLDS groups (too few to
    cross-validate).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    from bench.evaluate.metrics import bootstrap_ci, classification_metrics
    from bench.parallel import usable_cores

    y = np.array([classes.index(r.label) for r in records])
    g = np.asarray(groups)
    for k in range(len(classes)):
        if len(set(g[y == k])) < FOLDS:
            return None
    x, names = attribute_matrix(records)
    if content is not None:
        from bench.data.content import NAMES

        x, names = np.hstack([x, np.asarray(content, dtype=np.float64)]), [*names, *NAMES]
    proba = np.zeros((len(records), len(classes)))
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for train, test in folds.split(x, y, g):
        threads = usable_cores() if len(train) >= PARALLEL_TREES_FROM else 1
        model = RandomForestClassifier(n_estimators=100, min_samples_leaf=3, random_state=seed, n_jobs=threads,
                                       max_samples=TREE_SAMPLES if len(train) > TREE_SAMPLES else None)
        model.fit(x[train], y[train])
        proba[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    auc = float(classification_metrics(y, proba, classes)["roc_auc"])
    low, high = bootstrap_ci(y, proba, classes, metrics=("roc_auc",), groups=g, seed=seed)["roc_auc"]
    strongest = feature_aucs(x, y, names)
    carriers = [(n, a) for n, a in strongest if a >= FEATURE_AUC][:NAMED]
    return {"auc": round(auc, 4), "ci_low": round(float(low), 4), "ci_high": round(float(high), 4),
            "warn": bool(auc >= WARN_AUC and low > 0.5), "attributes": names, "images": len(records), "folds": FOLDS,
            "content": content is not None, "carriers": [[n, a] for n, a in carriers]}


def feature_phrase(carriers: list) -> str:
    """``intensity histogram bins 3-5 (AUC alone 0.84-0.90) and border mean (0.80)``:
    the named features, consecutive histogram bins run together."""
    bins, others = {}, []
    for name, auc in carriers:
        if name.startswith("intensity histogram bin "):
            bins[int(name.rsplit(" ", 1)[1])] = auc
        else:
            others.append((name, f"{auc:.2f}"))
    runs: list[list[int]] = []
    for b in sorted(bins):
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    parts = []
    for run in runs:
        aucs = [bins[b] for b in run]
        span = f"{min(aucs):.2f}" if len(run) == 1 or min(aucs) == max(aucs) else f"{min(aucs):.2f}-{max(aucs):.2f}"
        parts.append((f"intensity histogram bin {run[0]}" if len(run) == 1 else
                      f"intensity histogram bins {run[0]}-{run[-1]}", span))
    parts += others
    parts.sort(key=lambda p: -float(p[1].split("-")[-1]))
    words = [f"{name} ({auc})" for name, auc in parts]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def shortcut_sentence(check: dict | None) -> str:
    """One line for ``bench scan`` and the report."""
    if not check:
        return "shortcut check: not run (a class has fewer than 5 groups to cross-validate)"
    what = ("file attributes (width, height, mode, format, file size) and image-content statistics (intensity "
            "histogram, texture, border)" if check.get("content") else "width, height, mode, format and file size")
    interval = f"out-of-fold AUC {check['auc']:.2f} [{check['ci_low']:.2f}, {check['ci_high']:.2f}]"
    carriers = check.get("carriers") or []
    if check["warn"] and carriers:
        return (f"WARNING: shortcut check: {feature_phrase(carriers)} predict the label (each alone: AUC in "
                f"brackets); {what} together: {interval} (>= {WARN_AUC:.2f}): a model can score this high without "
                "looking at anatomy (the source, the scanner or the exposure may give the label away); check where "
                "each class came from, and compare the backbones with the floor baselines")
    text = f"shortcut check: {what} alone predict the label with {interval}"
    if check["warn"]:
        cause = ("the classes differ in how their files were stored or in how their images look overall"
                 if check.get("content") else "the classes differ in how their files were stored")
        return (f"WARNING: {text} (>= {WARN_AUC:.2f}): {cause}, so a model can learn the source instead of the "
                "disease; check where each class came from")
    return text + f" (below {WARN_AUC:.2f}: no sign that {'storage or simple image statistics' if check.get('content') else 'storage alone'} give the label away)"


def check_split(index, manifest, content=None) -> dict | None:
    """The check on the images of ``manifest`` (label conflicts left out), grouped as it
    groups them; ``content``: a :class:`bench.data.content.ContentTable` covering them, or
    None for file attributes alone."""
    position = {r.path: r for r in index.records}
    files = [f for f in manifest.files if f["path"] in position]
    x = content.matrix(files) if content is not None else None
    return shortcut_check([position[f["path"]] for f in files], list(manifest.classes), [f["group"] for f in files],
                          seed=manifest.seed, content=x)
