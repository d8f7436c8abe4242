"""Averaging the iterates (file 002, "Polyak averaging"), and averaged SGD (torch.optim.ASGD).

Polyak averaging keeps, next to the point ``theta_t`` the optimizer moves, the mean of the points it has visited,
``theta_bar_t = (1/t) sum_{i<=t} theta_i`` (file 002; Polyak & Juditsky, 1992): on a convex problem with noisy
gradients the average converges at the best rate while the iterates keep bouncing. For neural networks file 002
recommends an exponentially decaying average instead, ``theta_bar_t = a theta_bar_{t-1} + (1 - a) theta_t``.

:func:`polyak_average` wraps an optimizer (a transform): the same steps, and either average kept in the state as
``ax`` (torch's name); :func:`scale_by_asgd` is the step of averaged SGD; ``aliases.asgd`` (torch.optim.ASGD) chains
the two. :func:`averaged_parameters`, :func:`use_averaged` and :func:`load_averaged` read the average back out of
an optimizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregTypeError, OptregValueError
from optreg.optim import _foreach as F
from optreg.optim import transforms as T
from optreg.optim.transforms import Params, Transform, Updates, counter


class PolyakAverageState(NamedTuple):
    inner: Any  # the state of the optimizer whose iterates are averaged
    count: Tensor
    ax: list[Tensor]  # the average of the iterates (torch.optim.ASGD's name)


def polyak_average(
    inner: Transform, start: float = 0.0, decay: float | None = None, *, name: str = "polyak_average"
) -> Transform:
    """Polyak averaging (file 002) of the iterates of ``inner``: the same steps, and their average in the state.

    With ``theta_t`` the parameters after ``inner``'s step ``t``, the average starts at iterate ``start + 1``
    (``ax = theta_t`` up to there) and then follows

    - ``decay=None``: the arithmetic mean, ``ax_t = ax_{t-1} + mu_t (theta_t - ax_{t-1})`` with
      ``mu_t = 1 / max(1, t - start)``; for an integer ``start`` that is ``mean(theta_{start+1}, ..., theta_t)``,
      and ``start=0`` gives file 002's ``theta_bar_t = (1/t) sum_{i=1}^t theta_i``;
    - ``decay=a``: file 002's exponential average, ``ax_t = a ax_{t-1} + (1 - a) theta_t``.

    Both are what ``torch.optim.swa_utils.AveragedModel`` computes (plain, and with ``get_ema_multi_avg_fn(a)``)
    when updated after every step from ``start`` on. ``polyak_average(adamw(...), decay=0.999)`` is AdamW with
    an exponential average of its weights; ``inner`` keeps its own fast path (its ``write``). Read the average
    with :func:`averaged_parameters`, evaluate with it under :func:`use_averaged`.
    """
    if not isinstance(inner, Transform):
        raise OptregTypeError(f"{name}: inner must be a Transform, got {type(inner).__name__}")
    start = _checks.check_nonneg(name, "start", start)
    if decay is not None:
        decay = _checks.check_unit(name, "decay", decay)

    def init(params: Params) -> PolyakAverageState:
        return PolyakAverageState(inner.init(params), counter(params), [p.detach().clone() for p in params])

    def weight(count: Any) -> Any:
        """``mu_t`` for the iterate number ``count``."""
        since = T.count_as_float(count) - start
        if decay is None:
            return 1.0 / max(1.0, since) if F.is_number(since) else 1.0 / torch.clamp(since, min=1.0)
        if F.is_number(since):
            return 1.0 if since <= 1.0 else 1.0 - decay
        return 1.0 - decay * (since > 1.0).to(torch.float64)

    def average_(state: PolyakAverageState, theta: Sequence[Tensor]) -> Tensor:
        """Moves the average towards the new iterate ``theta``; returns the new count."""
        count = F.element(state.count) + 1
        mu = weight(count)
        if F.is_number(mu):
            for a, x in zip(state.ax, theta):
                a.copy_(x) if mu == 1 else a.lerp_(x, mu)
        else:
            (mu,) = F.hoist(mu, like=state.ax)
            torch._foreach_add_(state.ax, torch._foreach_mul(torch._foreach_sub(theta, state.ax), mu))
        return count

    def update(updates: Updates, state: PolyakAverageState, params: Params | None = None, **extra: Any):
        if params is None:
            raise OptregValueError(f"{name}: needs the parameters, got params=None")
        updates, new_inner = inner.update(updates, state.inner, params, **extra)
        count = average_(state, F.add_scaled(params, updates, 1.0))
        return updates, PolyakAverageState(new_inner, count, state.ax)

    def write(updates: Updates, state: PolyakAverageState, params: Params, alpha: Any, keep: Any):
        if inner.write is None:
            step, new_inner = inner.update(updates, state.inner, params)
            F.axpby_(params, step, alpha, keep)
        else:
            new_inner = inner.write(updates, state.inner, params, alpha, keep)
        return PolyakAverageState(new_inner, average_(state, params), state.ax)  # params: theta_t, in place

    return Transform(
        init, update, inner.elementwise, inner.needs_closure, write=None if inner.needs_closure else write
    )


class ScaleByAsgdState(NamedTuple):
    count: Tensor
    eta: Tensor  # eta_t, the step size of the coming step; float64, shape (1,) (see transforms.running_product)


def scale_by_asgd(
    lr: float = 0.01, lambd: float = 1e-4, alpha: float = 0.75, *, name: str = "scale_by_asgd"
) -> Transform:
    """The ASGD step (Bottou, 2012, "Stochastic gradient descent tricks"; Xu, 2011):
    ``u_t = -eta_t (u + lambd theta)``, that is ``theta <- theta (1 - lambd eta_t) - eta_t g``, with the decaying
    step size ``eta_t = lr / (1 + lambd lr (t - 1))^alpha`` (``eta_1 = lr``).

    ``lambd`` is both the l2 strength of Bottou's objective and the rate of the step-size decay. As in
    torch.optim.ASGD, ``eta`` is state: the next step's value is computed at the end of each step from the
    learning rate of that step, so a schedule's new ``lr`` takes effect one step later.
    """
    lr = T._check(_checks.check_nonneg, name, "lr", lr)
    lambd = _checks.check_nonneg(name, "lambd", lambd)
    alpha = _checks.check_nonneg(name, "alpha", alpha)

    def init(params: Params) -> ScaleByAsgdState:
        eta = torch.full((1,), float(lr), dtype=torch.float64, device=counter(params).device)
        return ScaleByAsgdState(count=counter(params), eta=eta)

    def update(updates: Updates, state: ScaleByAsgdState, params: Params | None = None):
        if params is None:
            raise OptregValueError(f"{name}: needs the parameters, got params=None")
        count = F.element(state.count) + 1
        (step,) = F.hoist(-F.element(state.eta), like=updates)
        if lambd != 0:
            out = F.add_scaled(updates, params, lambd)
            F.scale_(out, step)  # (in place on the new tensors: one temporary per parameter, not two)
        else:
            out = F.mul(updates, step)
        return out, next_state(count)

    def next_state(count: Any) -> ScaleByAsgdState:
        """The counter after this step, and ``eta`` for the next one (from this step's ``lr``)."""
        return ScaleByAsgdState(count, lr / (1.0 + lambd * lr * T.count_as_float(count)) ** alpha)

    def write(updates: Updates, state: ScaleByAsgdState, params: Params, scale: Any, keep: Any):
        # theta <- (keep - s eta lambd) theta - s eta u, no temporary: torch's param.mul_(1 - lambd eta), add_(g, -eta)
        eta = F.element(state.eta)
        F.axpby_(params, updates, -scale * eta, keep - scale * eta * lambd)
        return next_state(F.element(state.count) + 1)

    return Transform(init, update, True, write=write)


# ------------------------------------------------------------------------------------ reading it back


def _average_of(optimizer: torch.optim.Optimizer, p: Tensor) -> Tensor | None:
    state = optimizer.state.get(p) or {}
    keys = [k for k in state if k == "ax" or k.endswith(".ax")]
    if len(keys) > 1:
        raise OptregValueError(f"averaged_parameters: optimizer must keep one average per parameter, got {keys}")
    return state[keys[0]] if keys else None


def averaged_parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The averaged parameters, one per parameter of ``optimizer`` in the order of its groups.

    ``optimizer`` is an optreg optimizer whose chain ends in :func:`polyak_average` (``asgd`` does), or a
    torch.optim.ASGD. A parameter that has not been stepped yet is its own average (and is returned itself).
    The tensors are the optimizer's state: clone them to keep a copy, do not modify them.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    averages = [_average_of(optimizer, p) for p in params]
    if params and all(a is None for a in averages) and any(optimizer.state.get(p) for p in params):
        raise OptregValueError(
            "averaged_parameters: optimizer must average its iterates (asgd, or a chain ending in "
            f"polyak_average), got one whose state has {sorted(next(s for s in optimizer.state.values() if s))}"
        )
    return [p if a is None else a for p, a in zip(params, averages)]


@torch.no_grad()
def load_averaged(optimizer: torch.optim.Optimizer) -> None:
    """Copies the averaged parameters into the parameters (at the end of training, say)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p, a in zip(params, averaged_parameters(optimizer)):
        if a is not p:
            p.copy_(a)


@contextlib.contextmanager
def use_averaged(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """``with use_averaged(opt): evaluate(model)``: the averaged parameters inside, the iterates restored after."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
    load_averaged(optimizer)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
