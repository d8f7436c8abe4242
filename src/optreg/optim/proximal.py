"""The proximal l1 step: soft-thresholding after the gradient step, so l1 gives exact zeros (figure 7.9).

A (sub)gradient step on ``lambda ||theta||_1`` moves a weight by ``-alpha lambda sign(theta)`` and jumps over
zero instead of landing on it: the weights hover around 0 without reaching it. The proximal gradient method
(ISTA; Daubechies et al., 2004; Beck & Teboulle, 2009) takes the gradient step on the smooth loss only and then
applies the proximal operator of ``alpha lambda ||.||_1``, soft-thresholding::

    theta <- prox(theta - alpha g) = sign(theta - alpha g) * max(|theta - alpha g| - alpha lambda, 0)

which sets every coordinate with ``|theta - alpha g| <= alpha lambda`` to exactly zero, the sparse solutions
the chapter attributes to l1 (section 7.7.1). Its fixed points are the minimizers of
``loss + lambda ||theta||_1``: on least squares it converges to the lasso.

**How it gets the learning rate.** A transform after the learning-rate scale sees the update
``u = -alpha g``, not ``alpha``, and the threshold is ``alpha lambda``: :func:`prox_l1` takes the same ``lr``
as the chain's :func:`~optreg.optim.transforms.scale_by_learning_rate` (a number or the same schedule, read
at its own step counter, which advances in step with the scale's). It must come *after* that scale in the
chain (and after any later step-direction transforms): it returns ``prox(theta + u) - theta``, so the
parameters become ``prox(theta + u)``. In the eager optimizer that value is written directly (bit for bit);
the zeros are exact in every path (``theta + (0 - theta) == 0``). :func:`proximal_sgd` is the whole method as
an alias for :class:`~optreg.optim.optimizer.Optimizer`, so that group learning rates and torch's schedulers
move the threshold with the step.

``lr=1.0`` (the default) makes ``strength`` the per-step threshold itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregValueError
from optreg.optim import _foreach as FE
from optreg.optim.combine import chain, masked, weights_only
from optreg.optim.transforms import EmptyState, Params, Transform, Updates, _check, counter, scale_by_learning_rate

__all__ = ["prox_l1", "proximal_sgd", "soft_threshold"]


def soft_threshold(x: Tensor, tau: float | Tensor) -> Tensor:
    """``sign(x) * max(|x| - tau, 0)``, the proximal operator of ``tau ||.||_1`` (``tau >= 0``).

    A Python number goes to torch's kernel :func:`torch.nn.functional.softshrink`; a 0-d tensor ``tau`` (the
    compiled path) uses the formula.
    """
    if isinstance(tau, Tensor):
        return torch.sign(x) * torch.clamp(x.abs() - tau.to(x.dtype), min=0)
    return F.softshrink(x, tau)


class ProxL1State(NamedTuple):
    count: Tensor


def prox_l1(
    strength: float, *, lr: float | Tensor | Callable[[int], float] = 1.0, name: str = "prox_l1"
) -> Transform:
    """Proximal step of ``strength * ||theta||_1`` after the gradient step: ``theta <- S(theta + u, lr * strength)``.

    ``S`` is :func:`soft_threshold` and ``u`` the incoming update (already ``-lr g`` or a momentum/Adam step
    scaled by ``lr``): place it last in the chain, after the learning-rate scale, with the same ``lr`` (see the
    module docstring; ``lr`` may be a schedule ``step -> lr``). ``masked(prox_l1(...), weights_only)`` spares
    the biases. ``strength >= 0``.
    """
    strength = _check(_checks.check_nonneg, name, "strength", strength)
    schedule = lr if callable(lr) and not isinstance(lr, Tensor) else None
    if schedule is None:
        lr = _check(_checks.check_nonneg, name, "lr", lr)

    def init(params: Params) -> ProxL1State | EmptyState:
        return ProxL1State(count=counter(params)) if schedule is not None else EmptyState()

    def threshold(state: ProxL1State | EmptyState) -> tuple[float | Tensor, ProxL1State | EmptyState]:
        if schedule is None:
            return lr * strength, state
        count = FE.element(state.count)
        step_lr = _checks.check_nonneg(name, "lr", schedule(int(count)))
        return step_lr * strength, ProxL1State(count=count + 1)

    def prox(updates: Updates, params: Params | None, tau: float | Tensor) -> list[Tensor]:
        if params is None:
            raise OptregValueError(f"{name}: needs the parameters (update(updates, state, params))")
        return [soft_threshold(p + u, tau) for p, u in zip(params, updates)]

    def update(updates: Updates, state: ProxL1State | EmptyState, params: Params | None = None):
        tau, state = threshold(state)
        return [new - p for new, p in zip(prox(updates, params, tau), params)], state

    def write(updates: Updates, state: ProxL1State | EmptyState, params: Params, alpha, keep):
        tau, new_state = threshold(state)
        if FE.is_one(alpha) and FE.is_one(keep):  # theta <- S(theta + u): written as is
            for p, new in zip(params, prox(updates, params, tau)):
                p.copy_(new)
        else:  # theta <- keep theta + alpha (S(theta + u) - theta)
            steps = [new - p for new, p in zip(prox(updates, params, tau), params)]
            FE.axpby_(list(params), steps, alpha, keep)
        return new_state

    return Transform(init, update, True, write=write)


def proximal_sgd(lr: float = 1e-2, strength: float = 0.0, all_parameters: bool = False) -> Transform:
    """Proximal gradient descent (ISTA) for ``loss + strength * ||W||_1``: ``theta <- S(theta - lr g, lr strength)``.

    An alias for :class:`~optreg.optim.optimizer.Optimizer`: ``Optimizer(model.parameters(), proximal_sgd,
    lr=0.1, strength=1e-3)``. The l1 term acts on the weights only (``ndim > 1``, as the penalties of
    :mod:`optreg.regularize`), on every parameter with ``all_parameters=True``.
    """
    prox = prox_l1(strength, lr=lr, name="proximal_sgd")
    return chain(
        scale_by_learning_rate(lr, name="proximal_sgd"), prox if all_parameters else masked(prox, weights_only)
    )
