"""Floor baselines: what a backbone must beat to have learned anything beyond the obvious.

Three kinds of model are scored on the same splits and folds as the backbones, with the
same calibration, thresholds and group-bootstrap intervals
(:func:`bench.evaluate.final.evaluate_predictions`), and each is one leaderboard row of
``kind`` :data:`bench.schema.FLOOR_KIND`, never ranked with the backbones nor deployed:

* ``majority``: always the training prevalence (ROC AUC 0.5; its decisions go to the
  commonest class);
* ``content-logistic``: an L2 logistic regression on the image-content statistics of
  :mod:`bench.data.content` (intensity histogram, texture, border and background): a
  model that never looks at anatomy. When it scores close to the backbones, low-level
  intensity carries the label (DeGrave et al., Nat Mach Intell 2021, on shortcuts);
* ``<backbone>:linear-probe``: an L2 logistic regression on the backbone's frozen
  features, globally average-pooled, read from the search's feature cache (Kornblith et
  al., CVPR 2019: the linear probe as the reference for transfer). A searched head that
  does not beat its own probe bought nothing with its search.

Both logistic regressions standardise the features on the training images and choose the
inverse regularisation strength ``C`` from :data:`C_GRID` on the validation images, by the
run's objective (ties: the smaller ``C``, the simpler model), as the search chooses a
trial. :func:`versus_floor` compares every backbone with the best floor baseline by the
paired tests used between backbones (McNemar, DeLong; Holm-adjusted over the backbones)
and :func:`floor_sentence` says in words whether any backbone beats it beyond noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.evaluate.comparisons import holm
from bench.evaluate.metrics import mann_whitney_auc
from bench.evaluate.paired import ALPHA, PairTest, compare_pair

MAJORITY = "majority"
CONTENT = "content-logistic"
PROBE_SUFFIX = ":linear-probe"
#: Inverse L2 strengths tried, weakest regularisation last.
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))
#: Feature matrices (rows x columns) below this size are fitted on one BLAS thread.
SMALL = 2_000_000
#: What each floor baseline is, in words (the report's table and the row's ``floor_model``).
DESCRIPTIONS = {
    MAJORITY: "the training prevalence for every image",
    CONTENT: "L2 logistic regression on image-content statistics (intensity histogram, texture, border)",
    PROBE_SUFFIX: "L2 logistic regression on the frozen backbone's average-pooled features",
}


def probe_name(backbone: str) -> str:
    """The floor row of ``backbone``'s linear probe: ``<backbone>:linear-probe``."""
    return f"{backbone}{PROBE_SUFFIX}"


def describe(name: str) -> str:
    return DESCRIPTIONS[PROBE_SUFFIX] if name.endswith(PROBE_SUFFIX) else DESCRIPTIONS[name]


@dataclass(frozen=True)
class FloorFit:
    """A floor baseline's probabilities on the validation and test images, the chosen
    ``C`` (None for the majority) and its validation score by the run's objective."""

    p_val: np.ndarray
    p_test: np.ndarray
    c: float | None
    val_objective: float


def majority(y_train: np.ndarray, n_val: int, n_test: int, n_classes: int, objective: str,
             y_val: np.ndarray) -> FloorFit:
    """The training prevalence as every image's probabilities."""
    prevalence = np.bincount(y_train, minlength=n_classes) / max(1, len(y_train))
    p_val, p_test = np.tile(prevalence, (n_val, 1)), np.tile(prevalence, (n_test, 1))
    return FloorFit(p_val, p_test, None, val_score(y_val, p_val, n_classes, objective))


def val_score(y: np.ndarray, proba: np.ndarray, n_classes: int, objective: str) -> float:
    """The run's objective on validation predictions (``val_loss``: cross-entropy), nan
    where undefined (one class only)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    if not len(y):
        return math.nan
    if objective == "val_loss":
        return float(log_loss(y, np.clip(proba, 1e-7, 1.0), labels=list(range(n_classes))))
    if objective == "val_accuracy":
        return float(accuracy_score(y, proba.argmax(axis=1)))
    if objective == "val_f1":
        return float(f1_score(y, proba.argmax(axis=1), average="binary" if n_classes == 2 else "macro",
                              zero_division=0))
    if len(np.unique(y)) < 2:
        return math.nan
    if n_classes == 2:
        return mann_whitney_auc(y, proba[:, 1])
    if len(np.unique(y)) < n_classes:  # scikit-learn's one-vs-rest AUC is undefined then too
        return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(n_classes))))
    return float(np.mean([mann_whitney_auc((y == c).astype(int), proba[:, c]) for c in range(n_classes)]))


def fit_logistic(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 x_test: np.ndarray, n_classes: int, objective: str, grid: Sequence[float] = C_GRID) -> FloorFit:
    """L2 logistic regression (scikit-learn, lbfgs) on features standardised on the
    training images; ``C`` chosen on validation by ``objective`` (:func:`val_score`; ties
    and undefined scores: the smaller ``C``). Raises ValueError when the training images
    hold one class only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise ValueError("the training images hold one class only")
    scaler = StandardScaler().fit(x_train)
    xs_train, xs_val, xs_test = (scaler.transform(np.asarray(x, dtype=np.float64)) for x in (x_train, x_val, x_test))
    minimise = objective == "val_loss"
    best: tuple | None = None
    model = LogisticRegression(max_iter=2000, warm_start=True)  # each C starts from the last one's solution
    # small problems: one BLAS thread (threads cost more than they save there, and on shared
    # cores they multiply the time many times over)
    with blas_threads(1 if xs_train.size < SMALL else None):
        for c in sorted(grid):
            model.set_params(C=c)
            model.fit(xs_train, y_train)
            p_val = _proba(model, xs_val, n_classes)
            score = val_score(y_val, p_val, n_classes, objective)
            key = math.inf if math.isnan(score) else (score if minimise else -score)
            if best is None or key < best[0]:
                best = (key, c, p_val, _proba(model, xs_test, n_classes), score)
    _, c, p_val, p_test, score = best
    return FloorFit(p_val, p_test, c, score)


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (each look costs milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_threads(limit: int | None):
    """A block in which BLAS runs on at most ``limit`` threads (None: as it is)."""
    return _blas_controller().limit(limits=limit)


def _proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``(len(x), n_classes)`` probabilities, a column per class even if training missed one."""
    out = np.zeros((len(x), n_classes))
    if len(x):
        out[:, model.classes_] = model.predict_proba(x)
    return out


# ------------------------------------------------------------- against the backbones


def best_floor(rows: Sequence[dict], key: str, minimise: bool) -> dict | None:
    """The floor row ranked first by ``key`` (the ranking estimate of the design: the
    validation objective, or the cross-validated one), among those that finished."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get(key) is not None and not _nan(r.get(key))]
    if not ok:
        return None
    return sorted(ok, key=lambda r: float(r[key]) if minimise else -float(r[key]))[0]


def _nan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def versus_floor(predictions: Mapping[str, pd.DataFrame], floor: str, floor_predictions: pd.DataFrame,
                 classes: Sequence[str], seed: int = 0, groups=None) -> list[PairTest]:
    """Each backbone of ``predictions`` (in order) against the floor baseline ``floor`` on
    the images both predicted (:func:`bench.evaluate.paired.compare_pair`: McNemar, the
    paired AUC bootstrap and DeLong, by duplicate group when ``groups`` is given); each
    test's p-values Holm-adjusted over the backbones (Holm 1979)."""
    tests = [compare_pair(name, floor, table, floor_predictions, classes, seed=seed, groups=groups)
             for name, table in predictions.items()]
    for field in ("mcnemar_p", "auc_p", "delong_p"):
        ran = [t for t in tests if getattr(t, field) is not None and not math.isnan(getattr(t, field))]
        for t, p in zip(ran, holm([getattr(t, field) for t in ran]) if ran else []):
            setattr(t, f"{field}_holm", float(p))
    return tests


#: A reading (:func:`reading`) in words, for tables.
READING_WORDS = {1: "beats the floor", 0: "no difference beyond noise", -1: "below the floor"}


def reading(test: PairTest) -> int:
    """+1: the backbone beats the floor beyond noise (DeLong's test of the AUC, or McNemar's
    on correctness, Holm-adjusted p < ALPHA, in its favour); -1: the floor beats it; 0: no
    difference beyond noise."""
    auc = test.delong_p_holm is not None and test.delong_p_holm < ALPHA and test.auc_diff is not None
    mcnemar = test.mcnemar_p_holm is not None and test.mcnemar_p_holm < ALPHA
    votes = []
    if auc:
        votes.append(1 if test.auc_diff > 0 else -1)
    if mcnemar:
        a, b = (test.groups_only_a, test.groups_only_b) if test.unit == "group" else (test.only_a, test.only_b)
        votes.append(1 if a > b else -1)
    if 1 in votes and -1 not in votes:
        return 1
    if -1 in votes and 1 not in votes:
        return -1
    return 0


def p_values_text(test: PairTest) -> str:
    """``DeLong Holm p = 0.002, McNemar Holm p = 0.21`` (the tests that ran)."""
    parts = []
    if test.delong_p_holm is not None:
        parts.append(f"DeLong Holm {_p(test.delong_p_holm)}")
    if test.mcnemar_p_holm is not None:
        parts.append(f"McNemar Holm {_p(test.mcnemar_p_holm)}")
    return ", ".join(parts)


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def floor_sentence(floor: str, floor_estimate: str, tests: Sequence[PairTest], source: str) -> str:
    """In words: which backbones beat the best floor baseline beyond noise, which do not.

    ``floor_estimate``: its headline estimate as text (``ROC AUC 0.87 [0.80, 0.93]``);
    ``source``: where the estimates come from (``test``, ``CV``)."""
    if not tests:
        return f"Best floor baseline: {floor} ({source} {floor_estimate}); no backbone has predictions to compare."
    above = [t for t in tests if reading(t) > 0]
    below = [t for t in tests if reading(t) < 0]
    level = [t for t in tests if reading(t) == 0]
    head = f"best floor baseline {floor} ({describe(floor)}; {source} {floor_estimate})"
    if not above:
        text = (f"No backbone beats the {head} beyond noise" if len(tests) > 1 else
                f"{tests[0].a} does not beat the {head} beyond noise")
        detail = "; ".join(f"{t.a}: {p_values_text(t)}" for t in tests)
        text += f" ({detail})."
        if below:
            text += f" The floor baseline is better than {_names(below)}."
        return text + " The backbones' scores here may come from what the floor already sees."
    text = f"{_names(above)} beat{'s' if len(above) == 1 else ''} the {head} beyond noise (" + \
        "; ".join(f"{t.a}: {p_values_text(t)}" for t in above) + ")."
    if level:
        text += f" {_names(level)} do{'es' if len(level) == 1 else ''} not (" + \
            "; ".join(f"{t.a}: {p_values_text(t)}" for t in level) + ")."
    if below:
        text += f" The floor baseline is better than {_names(below)}."
    return text


def _names(tests: Sequence[PairTest]) -> str:
    names = [t.a for t in tests]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
