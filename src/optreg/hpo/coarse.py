"""Coarse-to-fine search (file 001, tuning practice 4 and 5): random search in stages, each narrowed
around the best results of the stage before, with a warning when a best value lies at the border."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from optreg._checks import check_int, check_range
from optreg.errors import OptregValueError
from optreg.hpo.method import Method, register
from optreg.hpo.space import Categorical, Distribution, Fixed, Float, Int, Space, _same
from optreg.hpo.trial import WAIT, Proposal, Trial, _Wait

__all__ = ["BorderWarning", "CoarseToFine"]


class BorderWarning(UserWarning):
    """The best value of a parameter lies at the border of its range: a better one may lie outside it."""


def _line(d: Float | Int) -> tuple[float, float]:
    return (math.log(d.low), math.log(d.high)) if d.log else (float(d.low), float(d.high))


@register
class CoarseToFine(Method):
    """``stages`` rounds of random search sharing ``n_trials``; before each round after the first, every
    numeric range shrinks to the span of the best ``keep`` fraction of the previous round's complete trials
    (on its own scale, log for ``log=True``), widened by ``margin`` of the previous width on each side
    and kept inside the original range; a categorical keeps the choices those trials used (a parent of a
    condition keeps all). ``budgets`` (one per stage, e.g. ``(1, 5, 20)`` epochs as in file 001) makes the
    objective ``objective(params, budget=r)``.

    File 001: "beware of optima at the border": whenever a stage's best value of a numeric parameter lies
    within ``margin / 2`` of the original range's width from one of its ends, a :class:`BorderWarning`
    names it, and the trials of the next stage carry ``meta["border"]`` (the parameters at the border).
    """

    name = "coarse-to-fine"

    def __init__(
        self,
        space: Space,
        *,
        seed: int,
        n_trials: int | None,
        direction: str,
        stages: int = 3,
        keep: float = 0.25,
        margin: float = 0.1,
        budgets: Sequence[int] | None = None,
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.stages = check_int(self.name, "stages", stages, 1)
        self.keep = check_range(self.name, "keep", keep, 0.0, 1.0, low_open=True)
        self.margin = check_range(self.name, "margin", margin, 0.0, 1.0)
        if budgets is not None:
            if isinstance(budgets, str) or not isinstance(budgets, Sequence) or len(budgets) != self.stages:
                raise OptregValueError(
                    f"{self.name}: budgets must be a list of {self.stages} integers (one per stage), got {budgets!r}"
                )
            budgets = tuple(check_int(self.name, "budgets", b, 1) for b in budgets)
        self.budgets = budgets
        self.needs_budget = budgets is not None
        if n_trials is not None and n_trials < 2 * self.stages:
            raise OptregValueError(f"{self.name}: n_trials must be >= 2 * stages = {2 * self.stages}, got {n_trials}")

    def identity(self) -> dict[str, Any]:
        return {"n_trials": self.n_trials, "stages": self.stages, "keep": self.keep, "margin": self.margin,
                "budgets": None if self.budgets is None else list(self.budgets)}  # fmt: skip

    def _sizes(self) -> list[int]:
        n, k = self.n_trials, self.stages
        return [n // k + (i < n % k) for i in range(k)]

    def narrow(self, space: Space, trials: Sequence[Trial]) -> tuple[Space, list[str]]:
        """The space of the next stage given the previous stage's ``trials`` (and the names at the border)."""
        done = sorted((t for t in trials if t.state == "complete"), key=self.loss)
        top = done[: max(1, math.ceil(self.keep * len(done)))]
        if not top:
            return space, []
        parents = {p for d in space.dists.values() for p, _ in d.when or ()}
        border = []
        new: dict[str, Distribution] = {}
        for name, d in space.dists.items():
            vals = [t.params[name] for t in top if name in t.params]
            new[name] = d
            if not vals or isinstance(d, Fixed):
                continue
            if isinstance(d, Categorical):
                if name not in parents:
                    new[name] = Categorical([c for c in d.choices if any(_same(c, v) for v in vals)], when=d.when)
                continue
            lo, hi = _line(d)
            ts = [math.log(v) if d.log else float(v) for v in vals]
            olo, ohi = _line(self.space.dists[name])  # the original range
            b0 = top[0].params.get(name)
            if b0 is not None:
                best = math.log(b0) if d.log else float(b0)
                if min(best - olo, ohi - best) <= self.margin / 2 * (ohi - olo):
                    border.append(name)
            pad = self.margin * (hi - lo)
            a, b = max(lo, min(ts) - pad), min(hi, max(ts) + pad)
            back = (lambda t: math.exp(t)) if d.log else (lambda t: t)
            if isinstance(d, Int):
                ia, ib = max(d.low, math.floor(back(a) + 1e-9)), min(d.high, math.ceil(back(b) - 1e-9))
                new[name] = Int(ia, ib, log=d.log, when=d.when) if ib > ia else Fixed(ia, when=d.when)
            else:
                a, b = max(d.low, back(a)), min(d.high, back(b))
                new[name] = Float(a, b, log=d.log, when=d.when) if b > a else Fixed(a, when=d.when)
        return Space(new), border

    _final_checked = False

    @staticmethod
    def _warn_border(border: list[str], stage: int, *, final: bool = False) -> None:
        if border:
            warnings.warn(
                f"coarse-to-fine: the best {', '.join(border)} of stage {stage}{' (the last)' if final else ''} lies "
                f"at the border of its range; a better value may lie outside it (widen the range)",
                BorderWarning,
                stacklevel=3,
            )

    def propose(self, trials: Sequence[Trial]) -> Proposal | _Wait | None:
        if self.n_trials is None:
            raise OptregValueError(f"{self.name}: n_trials must be an integer >= {2 * self.stages}, got None")
        number = len(trials)
        ends = [sum(self._sizes()[: i + 1]) for i in range(self.stages)]
        if number >= self.n_trials:
            # the study is over: the last stage's best gets the same check, once, when all its trials are in
            last = trials[ends[-2] if self.stages > 1 else 0 : ends[-1]]
            if not self._final_checked and all(t.finished for t in last):
                self._final_checked = True
                space = self.space
                for k in range(self.stages):
                    space, border = self.narrow(space, trials[(ends[k - 1] if k else 0) : ends[k]])
                self._warn_border(border, self.stages - 1, final=True)
            return None
        stage = next(i for i, e in enumerate(ends) if number < e)
        space, border = self.space, []
        for k in range(stage):
            previous = trials[(ends[k - 1] if k else 0) : ends[k]]
            if not all(t.finished for t in previous):
                return WAIT
            space, border = self.narrow(space, previous)
        if number == ends[stage - 1]:  # once, as the stage starts
            self._warn_border(border, stage - 1)
        meta: dict[str, Any] = {"stage": stage, **({"border": border} if border else {})}
        budget = None if self.budgets is None else self.budgets[stage]
        return Proposal(space.sample(self.rng(number)), budget, meta)
