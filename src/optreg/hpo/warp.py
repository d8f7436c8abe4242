"""Output transforms (warpings) of the targets before a GP is fitted to them: ``output_transform=`` of
``gp-ei``, ``gp-pi`` and ``gp-ucb``.

A GP with a stationary kernel and Gaussian noise assumes the targets are roughly Gaussian with one scale
everywhere. Objectives of hyperparameter search rarely are: a few bad configurations can be orders of
magnitude worse than the good ones (Rosenbrock's values span 0 to about 4000 on its box), and a GP fitted to
such values spends its length scales and output scale on the large ones and sees the basin of the minimum
as flat. A monotone increasing transform ``g`` of the targets keeps their order, so the minimizer of the
transformed targets is the minimizer of the targets (EI's incumbent is ``g(min y) = min g(y)``), while the
GP sees a better-behaved function. Each transform here maps ``y`` ``(n,)`` (to minimize) to ``z`` ``(n,)``,
standardized at the end (mean 0, standard deviation 1; the GP's hyperparameter bounds and priors are set for
standardized targets):

- ``"standardize"``: ``z = (y - mean(y)) / std(y)`` alone (no warping; optreg's only transform before).
- ``"log"``: ``z = log(y - min(y) + c)`` with ``c = median(y) - min(y)``, i.e. ``log(1 + (y - min) / c)``
  up to a constant (scale-aware: invariant to ``y -> a y + b``, ``a > 0``; ``c = std(y)`` if the median
  is the minimum, 1 if every value is the same). Linear near the minimum, logarithmic for the values far
  above the median, like the log of SMAC's runtimes (Hutter et al. 2011, "Sequential model-based
  optimization for general algorithm configuration"). A small ``c`` (``0.01 (median - min)``) stretches the
  best few values into outliers and the search fails (the sweep below).
- ``"yeo-johnson"``: the power transform of Yeo & Johnson (2000, Biometrika 87(4)) of the standardized
  targets ``u = (y - mean) / std``::

      psi(u; lambda) = ((u + 1)^lambda - 1) / lambda                        u >= 0, lambda != 0
                       log(u + 1)                                          u >= 0, lambda == 0
                       -((1 - u)^(2 - lambda) - 1) / (2 - lambda)           u < 0, lambda != 2
                       -log(1 - u)                                         u < 0, lambda == 2

  with ``lambda`` maximizing the Gaussian profile log-likelihood of ``psi(u)`` (:func:`scipy.stats.yeojohnson`;
  HEBO's output warping, Cowen-Rivers et al. 2022, JAIR 74). ``psi`` is increasing in ``u`` for every
  ``lambda``; standardizing first makes ``lambda`` independent of the units of ``y``. For ``lambda < 1``
  it also stretches the values below the mean, by the slope ``(1 - u)^(1 - lambda) > 1``.
- ``"box-cox"`` (the default of gp-ei and gp-ucb): the power transform of Box & Cox (1964, JRSS B 26(2),
  eq. 1) of the gaps to
  the best target in units of the standard deviation, shifted to 1: ``v = 1 + (y - min(y)) / std(y) >= 1``,
  ``z = (v^lambda - 1) / lambda`` (``log v`` at ``lambda = 0``), ``lambda`` maximizing the Gaussian profile
  log-likelihood (:func:`scipy.stats.boxcox`). It is Yeo-Johnson's positive branch on ``v - 1``; its slope
  ``v^(lambda - 1)`` is at most 1 for ``lambda <= 1``, so the gaps between the best targets are never
  stretched, only the large values compressed.
- ``"rank"``: the Gaussian copula transform ``z_i = Phi^-1((r_i - 1/2) / n)``, ``r_i`` the rank of ``y_i``
  (ties averaged), ``Phi`` the standard normal CDF (Salinas et al. 2020, "A quantile-based approach for
  hyperparameter transfer learning", ICML): only the order of the targets is kept, so any monotone change
  of the objective gives the same search.

Evidence for the default (``benchmarks/sweep_output_transform.py``: gp-ei, 50 trials, bench_hpo's
functions, median simple regret over seeds): ``"box-cox"`` lowers Rosenbrock-4's regret from 4.72 to 2.65
over seeds 0-19 (mean log10 regret 0.33 lower, Welch 2 SE = 0.13) and the mixed function's from 1.4e-7 to
2.5e-9 (seeds 0-19), and leaves Branin, Hartmann-3, Hartmann-6 and Styblinski-Tang-4 within seed noise.
``"log"`` does as well on Rosenbrock-4 and the mixed function but is worse on Branin (3.8e-5 against 1.9e-5,
beyond 2 SE over 20 seeds); ``"rank"`` and the log with a small offset are worse on every function but the
mixed one: the copula keeps no magnitudes, so EI cannot tell a near-optimal point from a merely good one.
A failure that the MLE warps share: on Branin, seeds 3 and 12 of 0-19, ``"box-cox"`` (and ``"yeo-johnson"``
on seed 3) piles its trials at the boundary point ``(10, 3.0)`` (regret 1.55), next to the minimum
``(9.42, 2.48)``: the more trials sit there, the lower the MLE ``lambda`` (-0.65 at trial 9, -1.75 at trial
23), the flatter everything else looks; ``"standardize"`` never does in those 20 seeds (worst regret
2.9e-4), and clamping ``lambda >= 0`` does not remove it (seed 12). Clamping ``lambda <= 1`` changed only
Hartmann-3 and -6, within seed noise (seeds 0-19), so the MLE is used as it is. gp-ucb (seeds 0-4):
Rosenbrock-4 7.81 -> 1.86 (beyond 2 SE), Branin and Styblinski-Tang-4 within noise; gp-pi: Rosenbrock-4
4.22 -> 3.83 (within noise) and 2 of 5 Branin runs stuck as above, so gp-pi keeps ``"standardize"``.
"""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats

from optreg._checks import check_choice

__all__ = ["OUTPUT_TRANSFORMS", "box_cox", "log_offset", "transform_targets", "yeo_johnson"]

#: The transforms ``output_transform=`` takes, in the order of the module docstring.
OUTPUT_TRANSFORMS = ("standardize", "log", "yeo-johnson", "box-cox", "rank")
#: The log warp's offset ``c`` as a fraction of ``median(y) - min(y)``.
LOG_OFFSET = 1.0
#: The bounds of the Box-Cox lambda (``-inf, inf``: the MLE as it is; a knob of the sweep).
BOX_COX_LAMBDA_BOUNDS = (-float("inf"), float("inf"))


def _standardize(y: np.ndarray) -> np.ndarray:
    sd = y.std()
    return (y - y.mean()) / (sd if sd > 0 else 1.0)


def log_offset(y: np.ndarray) -> float:
    """The log warp's ``c``: ``median(y) - min(y)`` (times :data:`LOG_OFFSET`); ``std(y)`` if that is 0,
    else 1."""
    c = LOG_OFFSET * float(np.median(y) - y.min())
    if c > 0:
        return c
    sd = float(y.std())
    return sd if sd > 0 else 1.0


def yeo_johnson(u: np.ndarray, lmbda: float) -> np.ndarray:
    """``psi(u; lambda)`` of Yeo & Johnson (2000), eq. (2.1), elementwise (the module docstring's cases)."""
    out = np.empty_like(u, dtype=float)
    pos = u >= 0
    if abs(lmbda) < 1e-12:
        out[pos] = np.log1p(u[pos])
    else:
        out[pos] = np.expm1(lmbda * np.log1p(u[pos])) / lmbda
    if abs(lmbda - 2) < 1e-12:
        out[~pos] = -np.log1p(-u[~pos])
    else:
        out[~pos] = -np.expm1((2 - lmbda) * np.log1p(-u[~pos])) / (2 - lmbda)
    return out


def box_cox(v: np.ndarray, lmbda: float) -> np.ndarray:
    """``(v^lambda - 1) / lambda`` (``log v`` at ``lambda = 0``) for ``v > 0``: Box & Cox (1964), eq. (1)."""
    logv = np.log(v)
    return logv if abs(lmbda) < 1e-12 else np.expm1(lmbda * logv) / lmbda


def transform_targets(y: np.ndarray, kind: str = "standardize") -> np.ndarray:
    """The targets ``y`` ``(n,)`` (finite, to minimize) under the output transform ``kind``
    (:data:`OUTPUT_TRANSFORMS`), standardized: ``(n,)``. Every transform is non-decreasing in ``y``
    (strictly increasing but for ``"rank"``'s ties), so ``argmin`` is kept."""
    kind = check_choice("gp", "output_transform", kind, OUTPUT_TRANSFORMS)
    y = np.asarray(y, dtype=float)
    if kind == "log":
        z = np.log(y - y.min() + log_offset(y))
    elif kind == "yeo-johnson":
        u = _standardize(y)
        if np.ptp(u) > 0:
            lmbda = float(scipy.stats.yeojohnson_normmax(u))
            z = yeo_johnson(u, lmbda)
        else:
            z = u
    elif kind == "box-cox":
        sd = y.std()
        if sd > 0:
            v = 1.0 + (y - y.min()) / sd
            lo, hi = BOX_COX_LAMBDA_BOUNDS
            lmbda = min(max(float(scipy.stats.boxcox_normmax(v, method="mle")), lo), hi)
            z = box_cox(v, lmbda)
        else:
            z = y
    elif kind == "rank":
        n = len(y)
        z = scipy.special.ndtri((scipy.stats.rankdata(y) - 0.5) / n)
    else:
        z = y
    return _standardize(z)
