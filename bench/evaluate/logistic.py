"""Logistic recalibration fits behind the calibration slope and intercept
(:func:`bench.evaluate.calibration.calibration_slope_intercept`): maximum likelihood by
Newton's method with step halving, numpy only.

Slope: the coefficient ``b`` of ``logit P(y=1) = a + b z``, ``z = logit(p)``; intercept
(calibration-in-the-large): the ``a`` of ``logit P(y=1) = a + z``, ``z`` an offset
(Cox 1958; Van Calster et al., J Clin Epidemiol 74:167, 2016).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit

_NEWTON_ITER = 100
_NEWTON_TOL = 1e-10


def _logistic_newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> np.ndarray | None:
    """Maximum-likelihood coefficients of ``logit P(y=1) = x @ beta + offset`` by Newton's
    method with step halving; ``None`` if it does not converge."""
    beta = np.zeros(x.shape[1])

    def loglik(b: np.ndarray) -> float:
        eta = x @ b + offset
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(_NEWTON_ITER):
        mu = expit(x @ beta + offset)
        grad = x.T @ (y - mu)
        hess = x.T @ (x * (mu * (1.0 - mu))[:, None])
        if not np.all(np.isfinite(hess)) or np.linalg.cond(hess) > 1e12:
            return None
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while True:
            candidate = beta + scale * step
            value = loglik(candidate)
            if value >= current - 1e-12 * (1.0 + abs(current)):
                break
            scale /= 2.0
            if scale < 1e-10:
                return None
        beta, current = candidate, value
        if not np.all(np.isfinite(beta)):
            return None
        if np.max(np.abs(scale * step)) < _NEWTON_TOL * (1.0 + np.max(np.abs(beta))):
            return beta
    return None


def slope_intercept(target: np.ndarray, p: np.ndarray, eps: float) -> tuple[float, float]:
    """(slope, intercept) of a boolean ``target`` against its probability ``p`` (clipped to
    ``[eps, 1 - eps]``); nan where undefined (one class only; the slope also when
    ``logit(p)`` separates the classes; either when Newton does not converge)."""
    nan = float("nan")
    t = target.astype(float)
    n_pos = int(target.sum())
    if n_pos == 0 or n_pos == len(target):
        return nan, nan
    z = logit(np.clip(p, eps, 1.0 - eps))
    ones = np.ones((len(z), 1))
    fit = _logistic_newton(ones, t, z)
    intercept = float(fit[0]) if fit is not None else nan
    pos, neg = z[target], z[~target]
    separated = pos.min() >= neg.max() or pos.max() <= neg.min()  # also true when z is constant
    slope = nan
    if not separated:
        fit = _logistic_newton(np.column_stack([ones, z]), t, np.zeros(len(z)))
        slope = float(fit[1]) if fit is not None else nan
    return slope, intercept
