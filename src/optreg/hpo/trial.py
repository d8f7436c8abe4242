"""A trial (one evaluation of the objective) and a method's proposal of the next one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATES", "WAIT", "Proposal", "Trial"]

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
