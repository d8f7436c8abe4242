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

- ``"standardize"``: ``z = (y - mean(y)) / std(y)`` alone (no warping).
- ``"log"``: ``z = log(y - min(y) + c)`` with ``c = 0.01 (median(y) - min(y))`` (scale-aware: the offset
  follows the spread of the typical values, so the transform is invariant to ``y -> a y + b``, ``a > 0``;
  ``c = std(y)`` if the median is the minimum, 1 if every value is the same). Compresses the large values
  logarithmically and stretches those near the minimum, like the log transform of HEBO's and SMAC's
  ``log`` cost (Cowen-Rivers et al. 2022, "HEBO", sec. 4.1; Hutter et al. 2011).
- ``"yeo-johnson"``: the power transform of Yeo & Johnson (2000, Biometrika 87(4), eq. 2.1) applied to
  the standardized targets ``u = (y - mean) / std``::

      psi(u; lambda) = ((u + 1)^lambda - 1) / lambda                        u >= 0, lambda != 0
                       log(u + 1)                                          u >= 0, lambda == 0
                       -((1 - u)^(2 - lambda) - 1) / (2 - lambda)           u < 0, lambda != 2
                       -log(1 - u)                                         u < 0, lambda == 2

  with ``lambda`` maximizing the Gaussian profile log-likelihood of ``psi(u)`` (Yeo & Johnson 2000,
  sec. 3; :func:`scipy.stats.yeojohnson`), as HEBO does (Cowen-Rivers et al. 2022, sec. 4.1, with
  Box-Cox / Yeo-Johnson). ``psi`` is increasing in ``u`` for every ``lambda``. Standardizing first makes
  ``lambda`` independent of the units of ``y``.
- ``"rank"``: the Gaussian copula transform ``z_i = Phi^-1((r_i - 1/2) / n)``, ``r_i`` the rank of ``y_i``
  (ties averaged), ``Phi`` the standard normal CDF (Salinas et al. 2020, "A quantile-based approach for
  hyperparameter transfer learning", ICML, sec. 4): only the order of the targets is kept, so any
  monotone change of the objective gives the same search.
"""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats

from optreg._checks import check_choice

__all__ = ["OUTPUT_TRANSFORMS", "transform_targets"]

#: The transforms ``output_transform=`` takes, in the order of the module docstring.
OUTPUT_TRANSFORMS = ("standardize", "log", "yeo-johnson", "rank")
#: The log warp's offset ``c`` as a fraction of ``median(y) - min(y)``.
LOG_OFFSET = 0.01


def _standardize(y: np.ndarray) -> np.ndarray:
    sd = y.std()
    return (y - y.mean()) / (sd if sd > 0 else 1.0)


def log_offset(y: np.ndarray) -> float:
    """The log warp's ``c``: ``0.01 (median(y) - min(y))``; ``std(y)`` if that is 0, else 1."""
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
    elif kind == "rank":
        n = len(y)
        z = scipy.special.ndtri((scipy.stats.rankdata(y) - 0.5) / n)
    else:
        z = y
    return _standardize(z)
