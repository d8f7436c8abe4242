"""BOHB, ``bohb`` (Falkner, Klein & Hutter 2018, "BOHB: Robust and Efficient Hyperparameter Optimization at
Scale", ICML): Hyperband (7.6.4) whose new configurations come from a Parzen-estimator model (7.6.3).

The brackets, their rounds and budgets, the passes and the promotions are exactly those of
:class:`~optreg.hpo.halving.Hyperband` (this class only replaces its :meth:`~Hyperband.draw` hook). Each new
configuration (the first round of a bracket) is drawn as in Falkner et al.'s Algorithm 2:

1. with probability ``rho`` (1/3, the paper's random fraction), at random, exactly as ``hyperband`` draws it
   (the generator of ``(seed, pass, bracket, config)``; the coin and the model use another generator, that of
   ``(seed, pass, bracket, config, 1)``, so with ``rho = 1`` BOHB proposes what ``hyperband`` does);
2. otherwise from the observations ``D_b`` of the largest budget ``b`` with ``|D_b| >= N_min + 2`` complete
   trials, ``N_min = d + 1`` (``n_min``; ``d`` the searched parameters, :class:`~optreg.hpo.Fixed` ones
   excluded): a TPE (:mod:`optreg.hpo.tpe`) fitted on ``D_b`` alone proposes the best of ``n_ei_candidates``
   draws from ``l`` by ``log l(x) - log g(x)``, ``l`` the best ``gamma`` fraction of ``D_b``;
3. at random (as in 1) when no budget has enough observations.

Departures from the paper, for the reuse of optreg's TPE: the good set is TPE's ``min(ceil(gamma n), 25)``
best (the paper's ``max(N_min, q n)``, and ``g`` the rest rather than ``max(N_min, n - n_l)``); the kernels
are TPE's (truncated Gaussians with the ``bandwidth`` rule and a prior kernel; no forgetting) rather than
statsmodels' product kernels, and the candidates are drawn from ``l`` itself (the paper widens its bandwidths
by ``b_w = 3``). ``multivariate=True`` (default, the paper's multivariate KDE) models the unconditional
parameters jointly. A failed or running trial of budget ``b`` counts in ``g`` (TPE's rule), not in
``|D_b|``.

A proposal depends only on the seed, the bracket, the configuration and the stored trials, so a resumed
study proposes what an uninterrupted one does. The meta of a configuration's first-round trial says which
budget's model drew it (``model_budget``; absent for a random draw; its promotions, later rounds of the same
``pass``, ``bracket`` and ``config``, do not repeat it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optreg._checks import check_choice, check_int, check_range
from optreg.errors import OptregValueError
from optreg.hpo.halving import Hyperband
from optreg.hpo.method import register
from optreg.hpo.space import Space
from optreg.hpo.tpe import BANDWIDTHS, TPE
from optreg.hpo.trial import Trial

__all__ = ["BOHB"]


@register
class BOHB(Hyperband):
    """``bohb``: Hyperband with TPE-drawn configurations (module docstring; Falkner et al. 2018).

    Options: those of ``hyperband`` (``max_budget``, ``eta``), ``rho`` (the random fraction, 1/3), ``n_min``
    (``N_min``, default ``d + 1``: a budget feeds the model from ``N_min + 2`` complete trials), ``multivariate``
    (True), ``gamma`` (the good fraction, 0.15: the paper's ``q``), ``n_ei_candidates`` (64: its ``N_s``),
    ``bandwidth`` (TPE's rule, ``"neighbours"`` or ``"scott"``).
    """

    name = "bohb"

    def __init__(
        self,
        space: Space,
        *,
        seed: int,
        n_trials: int | None,
        direction: str,
        max_budget: int,
        eta: int = 3,
        rho: float = 1 / 3,
        n_min: int | None = None,
        multivariate: bool = True,
        gamma: float = 0.15,
        n_ei_candidates: int = 64,
        bandwidth: str = "neighbours",
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction, max_budget=max_budget, eta=eta)
        self.rho = check_range("bohb", "rho", rho, 0.0, 1.0)
        if not isinstance(multivariate, bool):
            raise OptregValueError(f"bohb: multivariate must be True or False, got {multivariate!r}")
        self.gamma = check_range("bohb", "gamma", gamma, 0.0, 1.0, low_open=True)
        self.n_ei_candidates = check_int("bohb", "n_ei_candidates", n_ei_candidates, 1)
        self.bandwidth = check_choice("bohb", "bandwidth", bandwidth, BANDWIDTHS)
        #: The model: optreg's TPE with these settings, fitted on one budget's observations at a time.
        self.tpe = TPE(
            space, seed=seed, n_trials=None, direction=direction, gamma=self.gamma, multivariate=multivariate,
            n_ei_candidates=self.n_ei_candidates, bandwidth=self.bandwidth, n_recent=None,
        )  # fmt: skip
        self.multivariate = multivariate
        d = len(self.tpe.encoding.dims)
        self.n_min = d + 1 if n_min is None else check_int("bohb", "n_min", n_min, 1)

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(), "rho": self.rho, "n_min": self.n_min, "multivariate": self.multivariate,
            "gamma": self.gamma, "n_ei_candidates": self.n_ei_candidates, "bandwidth": self.bandwidth,
        }  # fmt: skip

    def observations(self, trials: Sequence[Trial]) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        """The model's data: the largest budget ``b`` with at least ``n_min + 2`` complete trials, and every
        trial of budget ``b`` as ``(params, loss)`` in trial order (``inf`` for a failed or running one);
        ``None`` when no budget has enough."""
        by_budget: dict[int, list[Trial]] = {}
        for t in trials:
            if t.budget is not None:
                by_budget.setdefault(t.budget, []).append(t)
        for b in sorted(by_budget, reverse=True):
            if sum(t.state == "complete" for t in by_budget[b]) >= self.n_min + 2:
                return b, [(t.params, self.loss(t)) for t in sorted(by_budget[b], key=lambda t: t.number)]
        return None

    def draw(self, trials: Sequence[Trial], p: int, s: int, c: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Configuration ``c`` of bracket ``s`` in pass ``p``: Falkner et al.'s Algorithm 2 (module docstring)."""
        rng = self.rng(p, s, c, 1)
        if self.tpe.groups and rng.random() >= self.rho:
            data = self.observations(trials)
            if data is not None:
                budget, obs = data
                return self.tpe.suggest(obs, rng).params, {"model_budget": budget}
        return super().draw(trials, p, s, c)
