"""Methods that re-evaluate the loss within a step (file 002: line searches for CG, BFGS / L-BFGS).

For now: the backtracking (Armijo) line search, as a transform that scales any descent direction, and
``sgd_linesearch``, steepest descent with it. These need ``optimizer.step(closure)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optreg import _checks
from optreg.optim import _foreach as F
from optreg.optim.combine import chain
from optreg.optim.transforms import Params, Transform, Updates, scale


class BacktrackingState(NamedTuple):
    step_size: Tensor  # the step accepted at the last update, shape (1,)
    evaluations: Tensor  # loss evaluations at the last update, int64


def _dot(xs: list[Tensor], ys: list[Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(xs, ys)))


def scale_by_backtracking_linesearch(
    max_step: float = 1.0,
    decrease: float = 0.5,
    slope: float = 1e-4,
    max_backtracks: int = 30,
    *,
    name: str = "scale_by_backtracking_linesearch",
) -> Transform:
    """Backtracking line search (Armijo, 1966; Nocedal & Wright, Algorithm 3.1) along the incoming direction d.

    Tries ``a = max_step, decrease * max_step, ...`` and keeps the first with sufficient decrease,
    ``f(theta + a d) <= f(theta) + slope * a * g^T d``; returns ``a d``. If ``d`` is not a descent direction
    (``g^T d >= 0``) it searches along ``-g`` instead. After ``max_backtracks`` failures it returns the
    smallest step tried. Each trial calls the closure at the trial point (its gradients are left as the
    closure computed them, as torch.optim.LBFGS does).
    """
    max_step = _checks.check_positive(name, "max_step", max_step)
    decrease = _checks.check_range(name, "decrease", decrease, 0.0, 1.0, low_open=True, high_open=True)
    slope = _checks.check_range(name, "slope", slope, 0.0, 1.0, low_open=True, high_open=True)
    max_backtracks = _checks.check_int(name, "max_backtracks", max_backtracks, low=1)

    def init(params: Params) -> BacktrackingState:
        device = params[0].device if len(params) else None
        return BacktrackingState(
            torch.zeros(1, dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device)
        )

    def update(
        updates: Updates,
        state: BacktrackingState,
        params: Params | None = None,
        *,
        closure: Callable[[], Any],
        value: float,
        grads: list[Tensor],
    ):
        direction = list(updates)
        slope_0 = _dot(grads, direction)
        if slope_0 >= 0:  # not a descent direction: fall back to steepest descent
            direction = [-g for g in grads]
            slope_0 = -_dot(grads, grads)
        start = [p.detach().clone() for p in params]
        step, evaluations = max_step, 0
        for _ in range(max_backtracks):
            with torch.no_grad():
                for p, p0, d in zip(params, start, direction):
                    torch.add(p0, d, alpha=step, out=p)
            trial = float(closure())
            evaluations += 1
            if trial <= value + slope * step * slope_0:
                break
            step *= decrease
        with torch.no_grad():
            torch._foreach_copy_(params, start)
        state.step_size.fill_(step)
        state.evaluations.fill_(evaluations)
        return F.mul(direction, step), state

    return Transform(init, update, elementwise=False, needs_closure=True)


def sgd_linesearch(lr: float = 1.0, decrease: float = 0.5, slope: float = 1e-4, max_backtracks: int = 30) -> Transform:
    """Steepest descent ``theta <- theta - a g`` with ``a`` from a backtracking line search starting at ``lr``.

    Full-batch (the Armijo test compares losses of one fixed objective). Needs ``step(closure)``.
    """
    return chain(
        scale(-1.0, name="sgd_linesearch"),
        scale_by_backtracking_linesearch(lr, decrease, slope, max_backtracks, name="sgd_linesearch"),
    )
