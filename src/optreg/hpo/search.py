"""Grid search (7.6.1) and random search (7.6.2, Bergstra & Bengio 2012)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optreg._checks import check_int
from optreg.errors import OptregValueError
from optreg.hpo.method import Method, register
from optreg.hpo.space import Space, product_size
from optreg.hpo.trial import Proposal, Trial

__all__ = ["Grid", "Random"]

_MAX_GRID = 10**6


@register
class Grid(Method):
    """Every combination of ``grid_size`` values per numeric parameter and all choices of a categorical.

    Section 7.6.1: a continuous parameter is discretized according to its nature, not at equal intervals:
    a ``log=True`` parameter gets geometrically spaced values (``Float(0.01, 1, log=True)`` with
    ``grid_size=3``: 0.01, 0.1, 1), the others evenly spaced ones; an :class:`~optreg.hpo.Int` with at
    most ``grid_size`` values gets all of them. For hand-picked values ("empirical" values such as
    ``{0.01, 0.1, 0.5, 1.0}``) use a :class:`~optreg.hpo.Categorical`.

    The grid is visited in an order shuffled by the seed, so a study stopped early (``n_trials`` smaller
    than the grid) has still spread its trials over the grid; the method ends when the grid is done.
    """

    name = "grid"
    needs_n_trials = False

    def __init__(
        self, space: Space, *, seed: int, n_trials: int | None, direction: str, grid_size: int = 5
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.grid_size = check_int("grid", "grid_size", grid_size, 1)
        size = product_size(space, self.grid_size)
        if size > _MAX_GRID:
            raise OptregValueError(f"grid: the grid must have at most {_MAX_GRID} points, got {size}")
        points = list(space.grid(self.grid_size))
        order = self.rng(0).permutation(len(points))
        self.points: list[dict[str, Any]] = [points[i] for i in order]

    def identity(self) -> dict[str, Any]:
        return {"grid_size": self.grid_size}

    def propose(self, trials: Sequence[Trial]) -> Proposal | None:
        if self.capped(trials) or len(trials) >= len(self.points):
            return None
        return Proposal(self.points[len(trials)])


@register
class Random(Method):
    """Random search (7.6.2): each trial draws every active parameter independently from its distribution
    (uniform on its scale: log-uniform for ``log=True``). Trial ``k``'s configuration depends only on the
    seed and ``k``."""

    name = "random"

    def propose(self, trials: Sequence[Trial]) -> Proposal | None:
        if self.capped(trials):
            return None
        return Proposal(self.space.sample(self.rng(len(trials))))
