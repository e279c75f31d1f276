"""The Bayesian signed-rank test with a region of practical equivalence (ROPE).

Benavoli, Corani, Demšar & Zaffalon, "Time for a change: a tutorial for comparing
multiple classifiers through Bayesian analysis", JMLR 18(77):1-36 (2017), section 4.2
(after Benavoli et al., ICML 2014). The test reads one difference per dataset,
``z_i = a_i - b_i`` (scores oriented so higher is better), and answers three questions at
once: how probable is it that A is practically better than B, that the two are
practically equivalent (a difference within ``rope``), or that B is better?

The differences' distribution gets a Dirichlet-process prior whose base measure is one
pseudo-observation ``z_0 = 0`` of strength ``s``; its posterior puts weights
``w ~ Dirichlet(s, 1, ..., 1)`` on ``z_0, z_1, ..., z_n``. For each weight draw

    theta_A    = sum_i sum_j w_i w_j H(z_i + z_j - 2 r)
    theta_B    = sum_i sum_j w_i w_j H(-(z_i + z_j) - 2 r)
    theta_rope = 1 - theta_A - theta_B

with ``H`` the Heaviside step (``H(0) = 1/2``) and ``r`` the ROPE half-width: the
probability mass of the Walsh averages ``(z_i + z_j) / 2`` above ``r``, below ``-r`` and
in between. P(A better), P(rope), P(B better) are the shares of draws in which each of
the three is the largest. ``s = 0.5`` and the pseudo-observation at 0 are the defaults of
baycomp's ``SignedRankTest`` (J. Demšar's reference implementation), which the tests use
as an independent check.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRIOR_STRENGTH", "N_SAMPLES", "bayesian_signed_rank"]

#: Weight of the prior pseudo-observation at 0 (baycomp's default).
PRIOR_STRENGTH = 0.5
#: Monte Carlo draws of the posterior (baycomp's default).
N_SAMPLES = 50_000
_CHUNK = 10_000  # draws per matrix product, to bound memory with many datasets


def _step(x: np.ndarray) -> np.ndarray:
    """Heaviside step with H(0) = 1/2."""
    return (x > 0).astype(float) + 0.5 * (x == 0)


def bayesian_signed_rank(diffs, rope: float, prior: float = PRIOR_STRENGTH, n_samples: int = N_SAMPLES,
                         seed: int = 0) -> tuple[float, float, float]:
    """P(A better), P(practically equivalent), P(B better) from per-dataset differences.

    Parameters
    ----------
    diffs : array_like
        One difference A - B per dataset (finite; scores oriented so higher is better).
    rope : float
        Half-width of the region of practical equivalence, in the score's units (>= 0).
    prior : float
        Strength of the prior pseudo-observation at 0.
    n_samples : int
        Posterior draws; the probabilities carry a Monte Carlo error of about
        ``sqrt(p (1 - p) / n_samples)``.
    seed : int
        Seed of the draws (same seed, same probabilities).

    Returns
    -------
    tuple of float
        ``(p_a_better, p_rope, p_b_better)``, summing to 1. With ``rope = 0``,
        ``p_rope`` is 0.
    """
    z = np.asarray(diffs, dtype=float)
    if z.ndim != 1 or len(z) < 1 or not np.all(np.isfinite(z)):
        raise ValueError(f"Expected diffs as a 1-D array of finite differences. Received: {z!r}")
    if not np.isfinite(rope) or rope < 0:
        raise ValueError(f"Expected rope >= 0. Received: {rope!r}")
    if not prior > 0 or int(n_samples) < 1:
        raise ValueError(f"Expected prior > 0 and n_samples >= 1. Received: prior={prior!r}, n_samples={n_samples!r}")
    points = np.concatenate([[0.0], z])
    sums = points[:, None] + points[None, :]
    above, below = _step(sums - 2 * rope), _step(-sums - 2 * rope)
    rng = np.random.default_rng(seed)
    alpha = np.concatenate([[float(prior)], np.ones(len(z))])
    counts = np.zeros(3)
    for start in range(0, int(n_samples), _CHUNK):
        w = rng.dirichlet(alpha, min(_CHUNK, int(n_samples) - start))
        theta_a = np.einsum("si,ij,sj->s", w, above, w)
        theta_b = np.einsum("si,ij,sj->s", w, below, w)
        theta = np.column_stack([theta_a, 1.0 - theta_a - theta_b, theta_b])
        counts += np.bincount(np.argmax(theta, axis=1), minlength=3)
    p = counts / counts.sum()
    return float(p[0]), float(p[1]), float(p[2])
