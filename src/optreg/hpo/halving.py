"""Dynamic resource allocation (7.6.4): successive halving (Algorithm 7.2) and Hyperband (BOHB, in
:mod:`optreg.hpo.bohb`, is Hyperband with its :meth:`Hyperband.draw` hook drawing from a TPE model).

Both call ``objective(params, budget=r)`` with ``r`` in resource units (epochs, say): the resource that
evaluation is given. A trial's ``meta`` says where it stands: ``config`` (which configuration), ``rung``
(which round), and for Hyperband ``bracket`` and ``pass`` (BOHB adds ``model_budget`` to the first-round
trial of a configuration its model drew). A rung's survivors are chosen only when every trial of the rung is
finished (a failed trial ranks last; ties go to the lower config number), so the method is a pure function
of the stored trials and a resumed study continues the same rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from optreg._checks import check_int
from optreg.errors import OptregTypeError, OptregValueError
from optreg.hpo.method import Method, register
from optreg.hpo.space import Space
from optreg.hpo.trial import WAIT, Proposal, Trial, _Wait

__all__ = ["Halving", "Hyperband", "halving_rungs", "hyperband_brackets"]

Rungs = list[tuple[int, int]]  # (number of configurations, budget of each) per round


def halving_rungs(n: int, budget: int, *, cumulative: bool = False) -> Rungs:
    """The rounds of successive halving with ``n`` configurations and total resource ``budget``.

    Algorithm 7.2 with the erratum (Jamieson & Talwalkar 2016, Algorithm 1): ``K = ceil(log2 n)`` rounds;
    round ``t`` runs the ``|S_t|`` survivors with ``r_t = floor(B / (|S_t| K))`` each and keeps the best
    ``ceil(|S_t| / 2)``, so one configuration is left after round ``K - 1``. The resource allocated is
    ``sum_t |S_t| r_t <= B``.

    What a round's budget means depends on the objective. One that trains from scratch is given ``r_t``
    (the rounds' budgets are the ``r_t``: it spends exactly ``sum_t |S_t| r_t``). One that resumes a
    configuration from its previous, smaller budget (``cumulative=True``) is given Jamieson & Talwalkar's
    ``R_t = r_1 + ... + r_t``, the total after ``r_t`` *more* units, so that it too spends exactly
    ``sum_t |S_t| r_t``; given ``r_t`` it would spend only ``sum_t |S_t| (r_t - r_{t-1})``.
    """
    rounds = math.ceil(math.log2(n))
    sizes = [n]
    while len(sizes) < rounds:
        sizes.append(math.ceil(sizes[-1] / 2))
    rungs = [(s, budget // (s * rounds)) for s in sizes]
    if cumulative:
        total = 0
        for i, (s, r) in enumerate(rungs):
            total += r
            rungs[i] = (s, total)
    return rungs


def hyperband_brackets(max_budget: int, eta: int) -> list[Rungs]:
    """Hyperband's brackets (Li et al. 2017, Algorithm 1), from the most exploratory one ``s = s_max``.

    ``s_max = floor(log_eta R)``; bracket ``s`` starts ``n = ceil((s_max + 1) eta^s / (s + 1))``
    configurations with ``r = R eta^-s`` each; its round ``i`` runs ``floor(n eta^-i)`` of them with
    ``r eta^i`` each (rounded to an integer >= 1 when ``R`` is not a power of ``eta``).
    """
    s_max = 0
    while eta ** (s_max + 1) <= max_budget:
        s_max += 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))
        brackets.append([(n // eta**i, max(1, round(max_budget / eta ** (s - i)))) for i in range(s + 1)])
    return brackets


def _bracket(
    method: Method,
    trials: Sequence[Trial],
    rungs: Rungs,
    key: dict[str, int],
    draw: Callable[[int], tuple[dict[str, Any], dict[str, Any]]],
) -> Proposal | _Wait | None:
    """The next trial of one successive-halving bracket (its trials carry ``key`` in their meta); ``draw(c)``
    gives configuration ``c``'s parameters and any meta of its own when its first round is proposed."""
    mine: dict[tuple[int, int], Trial] = {}
    for t in trials:
        if all(t.meta.get(k) == v for k, v in key.items()):
            mine[(t.meta["rung"], t.meta["config"])] = t
    members = list(range(rungs[0][0]))
    for rung, (size, budget) in enumerate(rungs):
        members = members[:size]
        for c in members:
            if (rung, c) not in mine:
                params, extra = draw(c) if rung == 0 else (mine[(0, c)].params, {})
                return Proposal(params, budget, {**key, "rung": rung, "config": c, **extra})
        here = [mine[(rung, c)] for c in members]
        if not all(t.finished for t in here):
            return WAIT
        members = sorted(members, key=lambda c: (method.loss(mine[(rung, c)]), c))
    return None


@register
class Halving(Method):
    """Successive halving (Algorithm 7.2, corrected): ``n_trials`` = N configurations drawn at random,
    ``budget`` = B the total resource. ``cumulative=True`` for an objective that resumes a configuration
    from its previous budget (each round asks for the running total, so that the resource spent is still
    B's allocation). See :func:`halving_rungs` for the rounds."""

    name = "halving"
    needs_budget = True

    def __init__(
        self, space: Space, *, seed: int, n_trials: int | None, direction: str, budget: int, cumulative: bool = False
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        if n_trials is None or n_trials < 2:
            raise OptregValueError(f"halving: n_trials (N configurations) must be an integer >= 2, got {n_trials!r}")
        self.budget = check_int("halving", "budget", budget, 1)
        if not isinstance(cumulative, bool):
            raise OptregTypeError(f"halving: cumulative must be True or False, got {cumulative!r}")
        self.cumulative = cumulative
        self.rungs = halving_rungs(n_trials, self.budget, cumulative=cumulative)
        rounds = len(self.rungs)
        if self.rungs[0][1] < 1:
            raise OptregValueError(
                f"halving: budget must be >= n_trials * ceil(log2 n_trials) = {n_trials * rounds} so that the "
                f"first round gets 1 unit each, got {budget}"
            )

    def identity(self) -> dict[str, Any]:
        return {"n_trials": self.n_trials, "budget": self.budget, **({"cumulative": True} if self.cumulative else {})}

    def propose(self, trials: Sequence[Trial]) -> Proposal | _Wait | None:
        return _bracket(self, trials, self.rungs, {}, lambda c: (self.space.sample(self.rng(c)), {}))


@register
class Hyperband(Method):
    """Hyperband (Li et al. 2017): successive halving over the brackets of :func:`hyperband_brackets`,
    ``max_budget`` = R the most one trial gets, ``eta`` the halving rate (3).

    ``n_trials=None`` runs one pass over the brackets (Li et al.'s Algorithm 1); with ``n_trials``, passes
    with new configurations follow one another until ``n_trials`` trials have been run (the last pass may
    stop part-way). While a bracket waits for running trials (several workers), the next bracket starts.
    """

    name = "hyperband"
    needs_n_trials = False
    needs_budget = True

    def __init__(
        self, space: Space, *, seed: int, n_trials: int | None, direction: str, max_budget: int, eta: int = 3
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.eta = check_int(self.name, "eta", eta, 2)
        self.max_budget = check_int(self.name, "max_budget", max_budget, 1)
        self.brackets = hyperband_brackets(self.max_budget, self.eta)

    def identity(self) -> dict[str, Any]:
        return {"max_budget": self.max_budget, "eta": self.eta}

    def propose(self, trials: Sequence[Trial]) -> Proposal | _Wait | None:
        if self.capped(trials):
            return None
        passes = 1 + max((t.meta["pass"] for t in trials), default=0)
        for p in range(passes + (self.n_trials is not None)):
            waiting = False
            for b, rungs in enumerate(self.brackets):
                s = len(self.brackets) - 1 - b

                def draw(c: int, p: int = p, s: int = s) -> tuple[dict[str, Any], dict[str, Any]]:
                    return self.draw(trials, p, s, c)

                step = _bracket(self, trials, rungs, {"pass": p, "bracket": s}, draw)
                if step is WAIT:
                    waiting = True
                elif step is not None:
                    return step
            if waiting:
                return WAIT
        return None

    def draw(self, trials: Sequence[Trial], p: int, s: int, c: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Configuration ``c`` of bracket ``s`` in pass ``p`` and its extra meta: drawn at random from the
        generator of ``(seed, p, s, c)`` (the hook BOHB replaces with its model)."""
        return self.space.sample(self.rng(p, s, c)), {}
