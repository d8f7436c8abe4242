"""The Tree-structured Parzen Estimator, ``tpe`` (Bergstra et al. 2011, "Algorithms for hyper-parameter
optimization"): the other instance of SMBO (Algorithm 7.1, section 7.6.3) besides the Gaussian process.

Instead of modelling ``p(y | x)``, TPE models ``p(x | y)`` with two densities. The complete trials are
sorted by their loss and split at the ``gamma`` quantile: the best ``n_l = min(ceil(gamma n), 25)`` form
the good set, the rest (with the failed and the running trials) the bad set, and

    l(x) = p(x | y < y*),   g(x) = p(x | y >= y*).

Bergstra et al. show that expected improvement at ``y*`` is monotone in ``l(x) / g(x)``, so each step draws
``n_ei_candidates`` points from ``l`` and proposes the one maximizing ``log l(x) - log g(x)``.

**The Parzen estimators.** Each density is a mixture of one kernel per trial of its set and a prior
kernel (weights below), in the unit coordinates of :class:`~optreg.hpo.space.Encoding`
(``log`` parameters warped):

- :class:`~optreg.hpo.Float`: a Gaussian truncated to ``[0, 1]`` centred on the trial's coordinate; the
  prior is centred at 0.5 with standard deviation 1 (the whole range).
- :class:`~optreg.hpo.Int`: the same on ``[low - 0.5, high + 0.5]`` (on the log scale when ``log=True``);
  a draw is rounded, and the density of an integer is its kernel's mass over the integer's bin.
- :class:`~optreg.hpo.Categorical`: trial ``i``'s kernel puts ``(1 + a / C) / (1 + a)`` on its choice and
  ``(a / C) / (1 + a)`` on each of the others (``C`` choices, ``a = prior_weight / (n + 1)``): smoothed
  frequencies; the prior kernel is uniform.

Bandwidths (``bandwidth=``): ``"neighbours"`` (hyperopt's and Optuna's univariate rule: a kernel's
standard deviation is the larger of the distances to its neighbours among the sorted centres and the range's
ends, the outermost ones ignoring the ends) or ``"scott"`` (``0.2 n^(-1 / (d + 4))``, Scott's rule with
Optuna's constant, ``d`` the parameters modelled jointly), both clipped to
``[1 / min(100, n + 2), 1]`` (the "magic clip" of hyperopt: ``n + 1`` kernels). Default ``"neighbours"``,
per coordinate in the multivariate model too (as Optuna 5 does); on Styblinski-Tang-4 (BENCHMARKS.md's
protocol, seeds 0-4, uniform kernel weights) the multivariate model with ``"scott"`` had a median regret of
36.5, with ``"neighbours"`` 19.5.

**Kernel weights.** A trial's kernel has weight 1, except that with more than ``n_recent`` (25) trials in a
set the older ones get a linear ramp from ``1 / n`` to 1 (hyperopt's linear forgetting, which Optuna keeps);
``n_recent=None``: all 1. The prior kernel has weight ``prior_weight``.

**Univariate and multivariate.** With ``multivariate=False`` (the 2011 paper) each parameter has its
own ``l`` and ``g``, and ``log l(x) - log g(x)`` is the sum over the parameters. ``multivariate=True``
(Falkner et al. 2018, BOHB; the default, as in Optuna 5 for one objective) models the parameters that are
always active jointly: one product kernel per trial, ``l(x) = sum_i w_i prod_d k_id(x_d) / sum_i w_i``, and a
candidate takes all its coordinates from one trial's kernel, so the dependence between parameters (which
basin of a multimodal function a good trial is in) is kept. On BENCHMARKS.md's six functions (50 trials x 5
seeds) the joint model had the lower median regret on five and tied on Hartmann-3, hence the default.

**Conditional parameters** (``when=``) are always modelled one by one, each from the trials in which it
exists (its prior alone when none of the good trials has it); a candidate's score sums over its active
parameters.

**Startup and parallel workers.** The first ``n_startup`` trials (and every trial until one is complete) are
random search (7.6.2), trial ``k`` drawn from the generator of ``(seed, k)``. Failed trials count as bad;
running ones too (a constant liar: the region around a pending point gains ``g`` mass, so parallel workers
do not propose the same point). Trial ``k``'s proposal depends only on the seed, ``k`` and the stored
trials, so a resumed study proposes what an uninterrupted one does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr, ndtri

from optreg._checks import check_choice, check_int, check_positive, check_range
from optreg.errors import OptregValueError
from optreg.hpo.method import Method, register
from optreg.hpo.space import Encoding, Int, Space, _Dim
from optreg.hpo.trial import Proposal, Trial

__all__ = ["BANDWIDTHS", "TPE", "bandwidths", "split", "truncnorm_logmass", "truncnorm_logpdf"]

BANDWIDTHS = ("neighbours", "scott")
_MAX_GOOD = 25
_LOG_TINY = -700.0  # log of a mass below float64's range (the floor of an integer bin's log mass)


# ------------------------------------------------------------------------------------------ the kernels
def truncnorm_logpdf(u: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``log`` of the density on ``[0, 1]`` of ``N(mu, sigma^2)`` truncated to ``[0, 1]`` (broadcast):
    ``log phi((u - mu) / sigma) - log sigma - log(Phi((1 - mu) / sigma) - Phi(-mu / sigma))``."""
    z = (u - mu) / sigma
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi) - np.log(sigma) - _log_norm(mu, sigma)


def _log_norm(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``log(Phi((1 - mu) / sigma) - Phi(-mu / sigma))``; ``mu`` in ``[0, 1]``, so the mass is not tiny."""
    return np.log(ndtr((1.0 - mu) / sigma) - ndtr(-mu / sigma))


def truncnorm_logmass(lo: np.ndarray, hi: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``log`` of the mass over ``[lo, hi]`` (inside ``[0, 1]``) of ``N(mu, sigma^2)`` truncated to ``[0, 1]``
    (broadcast), computed on the side of ``mu`` away from the bin so it does not round to 0 (floored
    at ``exp(-700)``)."""
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    # for a bin right of mu use the upper tails: Phi(-a) - Phi(-b), accurate when both are small
    right = a > 0
    hi_t, lo_t = np.where(right, -a, b), np.where(right, -b, a)
    with np.errstate(divide="ignore"):
        log_hi, log_lo = log_ndtr(hi_t), log_ndtr(lo_t)
        diff = log_hi + np.log1p(-np.exp(np.minimum(log_lo - log_hi, 0.0)))
    return np.maximum(diff, _LOG_TINY) - _log_norm(mu, sigma)


def truncnorm_sample(rng: np.random.Generator, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """One draw from each ``N(mu_i, sigma_i^2)`` truncated to ``[0, 1]``, by inverting the CDF."""
    p_lo, p_hi = ndtr(-mu / sigma), ndtr((1.0 - mu) / sigma)
    u = p_lo + rng.random(np.shape(mu)) * (p_hi - p_lo)
    return np.clip(mu + sigma * ndtri(u), 0.0, 1.0)


def bandwidths(mus: np.ndarray, rule: str, n_joint: int = 1) -> np.ndarray:
    """The standard deviations of the kernels centred at ``mus`` ``(n,)`` in ``[0, 1]`` (prior excluded):
    ``"neighbours"`` or ``"scott"`` (module docstring), clipped to ``[1 / min(100, n + 2), 1]``."""
    n = len(mus)
    if n == 0:
        return np.zeros(0)
    if rule == "scott":
        sigma = np.full(n, 0.2 * n ** (-1.0 / (n_joint + 4)))
    else:
        order = np.argsort(mus, kind="stable")
        ends = np.concatenate([[0.0], mus[order], [1.0]])
        gaps = np.diff(ends)  # (n + 1,)
        s = np.maximum(gaps[:-1], gaps[1:])
        if n >= 2:  # the outermost kernels ignore the range's ends
            s[0], s[-1] = gaps[1], gaps[-2]
        sigma = np.empty(n)
        sigma[order] = s
    return np.clip(sigma, 1.0 / min(100.0, n + 2.0), 1.0)


def forgetting_weights(n: int, n_recent: int | None) -> np.ndarray:
    """The weights of ``n`` kernels in trial order: 1 for the ``n_recent`` latest, a linear ramp from ``1 / n``
    up to 1 for the older ones (hyperopt's linear forgetting, Bergstra et al. 2013); all 1 when ``None``."""
    w = np.ones(n)
    if n_recent is not None and n > n_recent:
        w[: n - n_recent] = np.linspace(1.0 / n, 1.0, n - n_recent)
    return w


def split(losses: np.ndarray, gamma: float) -> np.ndarray:
    """Whether each of the complete trials (their ``losses``, in trial order) is in the good set: the
    ``min(ceil(gamma n), 25)`` smallest losses (ties to the earlier trial)."""
    n = len(losses)
    n_good = min(math.ceil(gamma * n), _MAX_GOOD) if n else 0
    good = np.zeros(n, dtype=bool)
    good[np.argsort(losses, kind="stable")[:n_good]] = True
    return good


# ------------------------------------------------------------------------------------------ the densities
@dataclass
class _Kernels:
    """One parameter's kernels (``k`` = the trials' kernels, then the prior's): numeric ``mu``, ``sigma``
    ``(k,)``, or categorical ``probs`` ``(k, C)``."""

    dim: _Dim
    dist: Any
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    probs: np.ndarray | None = None

    @classmethod
    def fit(cls, dim: _Dim, dist: Any, obs: np.ndarray, rule: str, prior_weight: float, n_joint: int) -> _Kernels:
        """``obs``: the trials' unit coordinates (numeric) or choice indices (categorical)."""
        if dim.kind == "onehot":
            c = len(dist.choices)
            a = prior_weight / (len(obs) + 1)
            probs = np.full((len(obs) + 1, c), a / c)
            probs[np.arange(len(obs)), obs.astype(int)] += 1.0
            probs[-1] = 1.0 / c
            return cls(dim, dist, probs=probs / probs.sum(1, keepdims=True))
        sigma = np.append(bandwidths(obs, rule, n_joint), 1.0)
        return cls(dim, dist, mu=np.append(obs, 0.5), sigma=sigma)

    def log_kernels(self, x: np.ndarray, enc: Encoding) -> np.ndarray:
        """``log k_i(x_j)`` ``(m, k)`` at the candidates' values ``x`` ``(m,)`` (coordinates or indices)."""
        if self.probs is not None:
            return np.log(self.probs[:, x.astype(int)].T)
        if self.dim.kind == "int":
            lo, hi = _bin(self.dist, enc, x)
            return truncnorm_logmass(lo[:, None], hi[:, None], self.mu, self.sigma)
        return truncnorm_logpdf(x[:, None], self.mu, self.sigma)

    def sample(self, rng: np.random.Generator, comp: np.ndarray) -> np.ndarray:
        """One value from kernel ``comp[j]`` for each ``j`` (coordinates or indices)."""
        if self.probs is not None:
            cum = np.cumsum(self.probs[comp], axis=1)
            return np.minimum((rng.random(len(comp))[:, None] > cum).sum(1), self.probs.shape[1] - 1)
        return truncnorm_sample(rng, self.mu[comp], self.sigma[comp])


def _bin(dist: Int, enc: Encoding, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit-coordinate bin ``[lo, hi]`` of the integer that each coordinate ``u`` decodes to."""
    lo_line, hi_line = dist._edges
    t = lo_line + np.clip(u, 0, 1) * (hi_line - lo_line)
    k = np.clip(np.round(np.exp(t) if dist.log else t), dist.low, dist.high)
    edges = (np.log(k - 0.5), np.log(k + 0.5)) if dist.log else (k - 0.5, k + 0.5)
    return tuple(np.clip((e - lo_line) / (hi_line - lo_line), 0.0, 1.0) for e in edges)  # type: ignore[return-value]


class _Density:
    """A Parzen estimator of ``p(x)`` over the ``dims`` (one, or the joint group) from observed points."""

    def __init__(self, kernels: list[_Kernels], weights: np.ndarray, prior_weight: float) -> None:
        self.kernels = kernels
        w = np.append(weights, prior_weight)
        self.log_w = np.log(w / w.sum())
        self.w = w / w.sum()

    def log_pdf(self, xs: list[np.ndarray], enc: Encoding) -> np.ndarray:
        """``log p(x_j)`` ``(m,)`` at candidates whose values per dimension are ``xs[d]`` ``(m,)``."""
        total = sum(kern.log_kernels(x, enc) for kern, x in zip(self.kernels, xs, strict=True))
        return logsumexp(self.log_w + total, axis=1)

    def sample(self, rng: np.random.Generator, m: int) -> list[np.ndarray]:
        comp = rng.choice(len(self.w), size=m, p=self.w)
        return [kern.sample(rng, comp) for kern in self.kernels]


# ------------------------------------------------------------------------------------------ the method
@register
class TPE(Method):
    """``tpe``: the Tree-structured Parzen Estimator (module docstring; Bergstra et al. 2011).

    Options: ``n_startup`` (random trials first, default 10), ``n_ei_candidates`` (draws from ``l`` per
    step, 24), ``gamma`` (the good fraction, 0.1, at most 25 trials), ``prior_weight`` (1.0),
    ``multivariate`` (True), ``bandwidth`` (``"neighbours"``, or ``"scott"``), ``n_recent`` (25, or None).
    """

    name = "tpe"

    def __init__(
        self,
        space: Space,
        *,
        seed: int,
        n_trials: int | None,
        direction: str,
        n_startup: int = 10,
        n_ei_candidates: int = 24,
        gamma: float = 0.1,
        prior_weight: float = 1.0,
        multivariate: bool = True,
        bandwidth: str = "neighbours",
        n_recent: int | None = 25,
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.n_startup = check_int("tpe", "n_startup", n_startup, 1)
        self.n_ei_candidates = check_int("tpe", "n_ei_candidates", n_ei_candidates, 1)
        self.gamma = check_range("tpe", "gamma", gamma, 0.0, 1.0, low_open=True)
        self.prior_weight = check_positive("tpe", "prior_weight", prior_weight)
        if not isinstance(multivariate, bool):
            raise OptregValueError(f"tpe: multivariate must be True or False, got {multivariate!r}")
        self.multivariate = multivariate
        self.bandwidth = check_choice("tpe", "bandwidth", bandwidth, BANDWIDTHS)
        self.n_recent = None if n_recent is None else check_int("tpe", "n_recent", n_recent, 1)
        self.encoding = space.encoding()
        dims = self.encoding.dims
        joint = [d for d in dims if space.dists[d.name].when is None] if multivariate else []
        #: The groups modelled jointly: the unconditional parameters (multivariate), else one per parameter.
        self.groups: list[list[_Dim]] = ([joint] if joint else []) + [[d] for d in dims if d not in joint]

    def identity(self) -> dict[str, Any]:
        return {
            "n_startup": self.n_startup, "n_ei_candidates": self.n_ei_candidates, "gamma": self.gamma,
            "prior_weight": self.prior_weight, "multivariate": self.multivariate, "bandwidth": self.bandwidth,
            "n_recent": self.n_recent,
        }  # fmt: skip

    def _value(self, dim: _Dim, params: dict[str, Any]) -> float:
        """The observed value of ``dim``: its unit coordinate, or its choice index."""
        dist = self.space.dists[dim.name]
        if dim.kind == "onehot":
            return float(dist.index(params[dim.name]))
        return float(self.encoding.encode({dim.name: params[dim.name]})[dim.start])

    def _densities(self, group: list[_Dim], points: list[tuple[int, dict[str, Any]]]) -> _Density:
        """The Parzen estimator of ``group`` from ``points``, ``(order, params)`` (kernel weights by order)."""
        have = sorted((p for p in points if all(d.name in p[1] for d in group)), key=lambda p: p[0])
        kernels = [
            _Kernels.fit(
                d, self.space.dists[d.name], np.array([self._value(d, params) for _, params in have]),
                self.bandwidth, self.prior_weight, len(group),
            )
            for d in group
        ]  # fmt: skip
        return _Density(kernels, forgetting_weights(len(have), self.n_recent), self.prior_weight)

    def propose(self, trials: Sequence[Trial]) -> Proposal | None:
        if self.capped(trials):
            return None
        number = len(trials)
        rng = self.rng(number)
        if number < self.n_startup or not self.groups or not any(t.state == "complete" for t in trials):
            return Proposal(self.space.sample(rng))
        return self.suggest([(t.params, self.loss(t)) for t in trials], rng)

    def suggest(self, observations: Sequence[tuple[dict[str, Any], float]], rng: np.random.Generator) -> Proposal:
        """The configuration maximizing ``log l(x) - log g(x)`` among ``n_ei_candidates`` draws from ``l``, with
        ``l`` and ``g`` fitted to ``observations`` (see :meth:`fit_observations`; at least one finite loss)."""
        fits = self.fit_observations(observations)
        m = self.n_ei_candidates
        # draw every coordinate of m candidates from l (inactive ones are dropped by decode)
        u = np.zeros((m, self.encoding.n_dims))
        for group, below, _ in fits:
            for dim, x in zip(group, below.sample(rng, m), strict=True):
                if dim.kind == "onehot":
                    u[np.arange(m), dim.start + x.astype(int)] = 1.0
                else:
                    u[:, dim.start] = x
        cands = [self.encoding.decode(row) for row in u]
        score = self.score(fits, cands)
        best = int(np.argmax(score))
        return Proposal(cands[best], meta={"tpe_score": float(score[best])})

    def fit(self, trials: Sequence[Trial]) -> list[tuple[list[_Dim], _Density, _Density]]:
        """Per group of parameters, ``l`` (the good trials) and ``g`` (the other complete trials, the failed
        and the running ones) fitted to ``trials`` (in number order, at least one complete)."""
        return self.fit_observations([(t.params, self.loss(t)) for t in trials])

    def fit_observations(
        self, observations: Sequence[tuple[dict[str, Any], float]]
    ) -> list[tuple[list[_Dim], _Density, _Density]]:
        """:meth:`fit` on ``(params, loss)`` pairs in trial order (the forgetting weights' order): a finite loss
        is a complete observation, split at the ``gamma`` quantile; ``inf`` (failed or running) is bad."""
        done = [(i, p, y) for i, (p, y) in enumerate(observations) if math.isfinite(y)]
        is_good = split(np.array([y for _, _, y in done]), self.gamma)
        good = [(i, p) for (i, p, _), g in zip(done, is_good, strict=True) if g]
        bad = [(i, p) for (i, p, _), g in zip(done, is_good, strict=True) if not g]
        bad += [(i, p) for i, (p, y) in enumerate(observations) if not math.isfinite(y)]
        return [(group, self._densities(group, good), self._densities(group, bad)) for group in self.groups]

    def score(self, fits: list[tuple[list[_Dim], _Density, _Density]], cands: list[dict[str, Any]]) -> np.ndarray:
        """``log l(x) - log g(x)`` ``(m,)`` of each configuration of ``cands``, summed over the groups it has."""
        score = np.zeros(len(cands))
        for group, below, above in fits:
            rows = np.array([all(d.name in c for d in group) for c in cands])
            if not rows.any():
                continue
            xs = [np.array([self._value(d, c) for c, r in zip(cands, rows, strict=True) if r]) for d in group]
            score[rows] += below.log_pdf(xs, self.encoding) - above.log_pdf(xs, self.encoding)
        return score
