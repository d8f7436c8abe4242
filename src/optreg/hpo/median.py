"""The median stopping rule (7.6.4, dynamic resource allocation): ``median-stop``.

Golovin et al. 2017 ("Google Vizier", section 3.2.1) and Optuna's ``MedianPruner``: a trial is stopped at
step ``s`` when the best value it has reported up to ``s`` is worse than the median of the values that the
earlier finished trials reported at the same step ``s``. A learning curve that is already below the
typical curve rarely overtakes it, so its remaining epochs go to new configurations instead.

The configurations are those of random search (trial ``k`` draws from the seed and ``k``, as ``random``
does), so ``median-stop`` and ``random`` with the same seed try the same configurations, and
``median-stop`` spends fewer epochs on the bad ones. The objective takes ``trial=`` and reports its curve
(:class:`~optreg.hpo.RunningTrial`); the rule is evaluated on the stored trials, so it holds across
workers and after a resume.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from optreg._checks import check_int
from optreg.hpo.method import Method, register
from optreg.hpo.space import Space
from optreg.hpo.trial import Proposal, Trial

__all__ = ["MedianStop", "median_stop"]


def median_stop(curve: dict[int, float], others: Sequence[dict[int, float]], *, n_startup: int, n_warmup: int) -> bool:
    """The median rule on losses (smaller is better): whether a trial with ``curve`` ``{step: loss}`` should
    stop at its last step ``s``, given the curves of the earlier finished trials ``others``.

    Stop iff ``s >= n_warmup``, at least ``n_startup`` of ``others`` reported step ``s``, and
    ``min_{t <= s} curve[t] > median {c[s] : c in others, s in c}``.
    """
    if not curve:
        return False
    step = max(curve)
    if step < n_warmup:
        return False
    at_step = [c[step] for c in others if step in c]
    if len(at_step) < max(1, n_startup):
        return False
    best = min(v for t, v in curve.items() if t <= step)
    return best > statistics.median(at_step)


@register
class MedianStop(Method):
    """``median-stop``: random search whose trials stop early by the median rule (:func:`median_stop`).

    ``n_startup``: how many earlier finished trials must have reached a step before the rule is applied
    there (5); ``n_warmup``: a trial is never stopped at a step below it (1: not before its first report
    at step 1, with steps counted in epochs done). A stopped trial is ``complete`` with the value its
    objective returned and ``stopped`` (its ``meta``) set to the step; :attr:`optreg.hpo.Study.best_trial`
    passes over stopped trials.
    """

    name = "median-stop"
    needs_reports = True

    def __init__(
        self, space: Space, *, seed: int, n_trials: int | None, direction: str, n_startup: int = 5, n_warmup: int = 1
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.n_startup = check_int(self.name, "n_startup", n_startup, 1)
        self.n_warmup = check_int(self.name, "n_warmup", n_warmup, 0)

    def identity(self) -> dict[str, int]:
        return {"n_startup": self.n_startup, "n_warmup": self.n_warmup}

    def propose(self, trials: Sequence[Trial]) -> Proposal | None:
        if self.capped(trials):
            return None
        return Proposal(self.space.sample(self.rng(len(trials))))

    def _losses(self, trial: Trial) -> dict[int, float]:
        sign = 1.0 if self.direction == "minimize" else -1.0
        return {s: sign * v for s, v in trial.intermediate.items()}

    def should_stop(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        others = [self._losses(t) for t in trials if t.number != trial.number and t.state == "complete"]
        return median_stop(self._losses(trial), others, n_startup=self.n_startup, n_warmup=self.n_warmup)
