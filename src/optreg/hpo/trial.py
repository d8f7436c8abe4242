"""A trial (one evaluation of the objective), the live handle an objective reports through, and a method's
proposal of the next one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["STATES", "WAIT", "Proposal", "RunningTrial", "Trial"]

#: The states of a trial. ``interrupted``: its worker died while it ran (it is run again).
STATES = ("running", "complete", "failed", "interrupted")


@dataclass(frozen=True)
class Trial:
    """One evaluation: ``params`` (active parameters only), ``value`` (``None`` unless complete), ``state``,
    ``budget`` (the resource of a multi-fidelity method, else ``None``), ``seconds`` (wall time of the
    objective), ``error`` (why it failed, or why it was interrupted), ``attempts`` (2 or more when it was
    run again after an interruption) and ``meta`` (the method's bookkeeping, e.g. a halving rung)."""

    number: int
    params: dict[str, Any]
    state: str = "running"
    value: float | None = None
    budget: int | None = None
    seconds: float | None = None
    error: str | None = None
    attempts: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    worker: str = ""

    @property
    def finished(self) -> bool:
        """Complete or failed: the trial needs nothing more."""
        return self.state in ("complete", "failed")

    @property
    def intermediate(self) -> dict[int, float]:
        """The values reported with :meth:`RunningTrial.report`, ``{step: value}`` (its learning curve)."""
        return {int(step): float(value) for step, value in self.meta.get("curve", ())}

    @property
    def stopped(self) -> int | None:
        """The step at which the method stopped the trial early (``median-stop``), else ``None``."""
        return self.meta.get("stopped")


class _Link(Protocol):
    """Where a running trial's reports go: the :class:`~optreg.hpo.Study` (or a remote proxy of it)."""

    def report(self, trial: Trial, value: Any, step: Any) -> Trial: ...

    def should_stop(self, trial: Trial) -> bool: ...


class RunningTrial:
    """The trial an objective is running, handed to it as ``objective(params, trial=...)`` when the objective
    takes a ``trial`` keyword (Optuna's pruning interface)::

        def objective(params, trial):
            for epoch in range(1, 21):
                accuracy = train_one_epoch(params)
                trial.report(accuracy, epoch)       # stored at once in the study (one transaction)
                if trial.should_stop():             # the method's verdict, e.g. median-stop's rule
                    break
            return accuracy

    ``number``, ``params``, ``budget`` and ``attempts`` are those of the stored trial.
    """

    def __init__(self, trial: Trial, link: _Link) -> None:
        self._trial, self._link = trial, link
        self.number, self.budget, self.attempts = trial.number, trial.budget, trial.attempts
        self.params = dict(trial.params)

    def __repr__(self) -> str:
        return f"RunningTrial({self.number}, params={self.params!r}, budget={self.budget!r})"

    def report(self, value: Any, step: int) -> None:
        """Record the intermediate ``value`` (a finite number, in the objective's units) at ``step`` (an
        integer >= 0, e.g. the epochs done); a second report of the same step replaces the first."""
        self._trial = self._link.report(self._trial, value, step)

    def should_stop(self) -> bool:
        """Whether the method wants this trial stopped now (``median-stop``; always False for the others).
        Once it says yes, the trial is marked stopped at its last reported step."""
        return self._link.should_stop(self._trial)

    @property
    def intermediate(self) -> dict[int, float]:
        """The values reported so far, ``{step: value}``."""
        return self._trial.intermediate


@dataclass(frozen=True)
class Proposal:
    """What a method wants evaluated next: ``params``, the ``budget`` to give it, and ``meta``."""

    params: dict[str, Any]
    budget: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class _Wait:
    """The method cannot propose until running trials finish (e.g. a successive-halving rung)."""

    def __repr__(self) -> str:
        return "WAIT"

    def __reduce__(self) -> str:
        return "WAIT"


WAIT = _Wait()
