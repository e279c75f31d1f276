"""The shortcut check: can the label be told from how each file was stored?

Public medical datasets mix sources (hospitals, scanners, websites), and a model can learn
the source instead of the disease. bench records, per image, its width, height, colour
mode, file format and size in bytes. If those alone predict the label, so can a network:
a high score below means the data carries a shortcut, and a test score may measure it.

A small random forest (scikit-learn, 100 trees, leaves of at least 3 images, each tree
grown on at most TREE_SAMPLES images) is trained
on those attributes only (width, height, aspect ratio, log pixel count, bytes per pixel,
one-hot mode and format) and scored out of fold: stratified group 5-fold, so copies of one
image (the split's groups) never sit on both sides. The trees grow in threads on every
usable core (the same forest as on one: scikit-learn draws each tree's seed first; its time
at scale is in ``docs/performance.md``). The score is the out-of-fold ROC AUC
(macro one-vs-rest for 3+ classes) with a 95 % bootstrap interval over the groups
(:func:`bench.evaluate.metrics.bootstrap_ci`). It warns at :data:`WARN_AUC` or more.
"""

from __future__ import annotations

import math

import numpy as np

#: Out-of-fold AUC at or above which the check warns.
WARN_AUC = 0.70
FOLDS = 5
#: Training images each tree is grown on, at most (its bootstrap sample; all of the fold's
#: below that, as scikit-learn's default): a tree's size grows with its sample, so the cap
#: keeps the forest's memory flat however many images the dataset has.
TREE_SAMPLES = 10_000


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


def shortcut_check(records: list, classes: list[str], groups: list[str], seed: int = 0) -> dict | None:
    """The out-of-fold AUC of the attributes-only model, its interval and whether it warns.

    ``groups``: one group id per record (copies share one). None when a class has fewer
    than FOLDS groups (too few to cross-validate).
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
    proba = np.zeros((len(records), len(classes)))
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for train, test in folds.split(x, y, g):
        model = RandomForestClassifier(n_estimators=100, min_samples_leaf=3, random_state=seed, n_jobs=usable_cores(),
                                       max_samples=TREE_SAMPLES if len(train) > TREE_SAMPLES else None)
        model.fit(x[train], y[train])
        proba[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    auc = float(classification_metrics(y, proba, classes)["roc_auc"])
    low, high = bootstrap_ci(y, proba, classes, metrics=("roc_auc",), groups=g, seed=seed)["roc_auc"]
    return {"auc": round(auc, 4), "ci_low": round(float(low), 4), "ci_high": round(float(high), 4),
            "warn": bool(auc >= WARN_AUC), "attributes": names, "images": len(records), "folds": FOLDS}


def shortcut_sentence(check: dict | None) -> str:
    """One line for ``bench scan`` and the report."""
    if not check:
        return "shortcut check: not run (a class has fewer than 5 groups to cross-validate)"
    text = (f"shortcut check: width, height, mode, format and file size alone predict the label with "
            f"out-of-fold AUC {check['auc']:.2f} [{check['ci_low']:.2f}, {check['ci_high']:.2f}]")
    if check["warn"]:
        return (f"WARNING: {text} (>= {WARN_AUC:.2f}): the classes differ in how their files were stored, so a "
                "model can learn the source instead of the disease; check where each class came from")
    return text + f" (below {WARN_AUC:.2f}: no sign that storage alone gives the label away)"


def check_split(index, manifest) -> dict | None:
    """The check on the images of ``manifest`` (label conflicts left out), grouped as it groups them."""
    position = {r.path: r for r in index.records}
    rows = [(position[f["path"]], f["group"]) for f in manifest.files if f["path"] in position]
    return shortcut_check([r for r, _ in rows], list(manifest.classes), [g for _, g in rows], seed=manifest.seed)
