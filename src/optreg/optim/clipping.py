"""Gradient clipping (section 7.2.3.4; Pascanu et al., 2013), against exploding gradients.

Errata (see the chapter's README): in clipping by value, "if smaller than b set it to b" means *larger*
than b; eq. (7.24) tests ``||g|| > b``, not ``||g||^2 > b``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregValueError
from optreg.optim import _foreach as F
from optreg.optim.transforms import EmptyState, Params, Transform, Updates, _check, counter, running_product

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing; we do the same, so the two agree.
_NORM_EPS = 1e-6


def clip(high: float, low: float | None = None, *, name: str = "clip") -> Transform:
    """Clipping by value, eq. (7.23): ``g <- max(min(g, b), a)`` elementwise, with ``[a, b] = [low, high]``.

    ``low`` defaults to ``-high`` (torch.nn.utils.clip_grad_value_).
    """
    high = _checks.check_number(name, "high", high)
    low = -high if low is None else _checks.check_number(name, "low", low)
    if low > high:
        raise OptregValueError(f"{name}: low must be <= high, got low={low!r}, high={high!r}")

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        return [u.clamp(low, high) for u in updates], state

    return Transform(init, update, True)


def _clip_coefficient(norm: Tensor, max_norm: float | Tensor) -> Tensor:
    """``min(1, b / (||g|| + 1e-6))``: eq. (7.24), with torch's guard against a zero norm."""
    return torch.clamp(max_norm / (norm + _NORM_EPS), max=1.0)


def global_norm(updates: Updates) -> Tensor:
    """``||g||_2`` over all tensors together (0-d tensor)."""
    if not updates:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(updates)))


def clip_by_norm(max_norm: float, *, name: str = "clip_by_norm") -> Transform:
    """Clipping by norm, eq. (7.24), each tensor on its own: ``g <- b g / ||g||`` when ``||g|| > b``."""
    max_norm = _check(_checks.check_positive, name, "max_norm", max_norm)

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        return [u * _clip_coefficient(torch.linalg.vector_norm(u), max_norm) for u in updates], state

    return Transform(init, update, True)


class ClipByGlobalNormState(NamedTuple):
    norm: Tensor  # the last global norm seen, before clipping (a diagnostic of exploding gradients)


def clip_by_global_norm(max_norm: float, *, name: str = "clip_by_global_norm") -> Transform:
    """Clipping by norm, eq. (7.24), over all parameters together (torch.nn.utils.clip_grad_norm_).

    ``g <- g * min(1, b / (||g|| + 1e-6))``: the clipped global norm never exceeds ``b``.
    """
    max_norm = _check(_checks.check_positive, name, "max_norm", max_norm)

    def init(params: Params) -> ClipByGlobalNormState:
        return ClipByGlobalNormState(norm=torch.zeros((), device=counter(params).device))

    def update(updates: Updates, state: ClipByGlobalNormState, params: Params | None = None):
        norm = global_norm(updates)
        state.norm.copy_(norm)
        return F.mul(updates, _clip_coefficient(norm, max_norm)), state

    return Transform(init, update)  # looks across tensors


class AdaptiveClipState(NamedTuple):
    count: Tensor
    beta_power: Tensor  # beta^t, shape (1,), for the bias correction
    average: Tensor  # running average of recent (clipped) global norms
    norm: Tensor  # the last global norm seen, before clipping


def clip_by_adaptive_norm(
    factor: float = 2.0, beta: float = 0.98, *, name: str = "clip_by_adaptive_norm"
) -> Transform:
    """Clipping by norm with a threshold that follows the recent gradients (section 7.2.3.4).

    The chapter: "the threshold b can also be adjusted automatically from the average gradient over a recent
    period". Here ``b_t = factor * n_bar_{t-1}``, where ``n_bar`` is the bias-corrected exponential moving
    average (decay ``beta``) of the *clipped* global norms, so one spike does not raise the threshold for the
    next. The first step only records its norm.
    """
    factor = _check(_checks.check_positive, name, "factor", factor)
    beta = _check(_checks.check_unit, name, "beta", beta)

    def init(params: Params) -> AdaptiveClipState:
        count = counter(params)
        zero = torch.zeros((), device=count.device)
        return AdaptiveClipState(count=count, beta_power=running_product(params), average=zero, norm=zero.clone())

    def update(updates: Updates, state: AdaptiveClipState, params: Params | None = None):
        norm = global_norm(updates)
        state.norm.copy_(norm)
        debiased = state.average / (1 - state.beta_power[0]).clamp(min=1e-12)
        threshold = torch.where(state.count > 0, factor * debiased, torch.full_like(debiased, torch.inf))
        coef = _clip_coefficient(norm, threshold.to(norm.dtype))
        clipped_norm = torch.minimum(norm, threshold.to(norm.dtype))
        state.average.mul_(beta).add_((1 - beta) * clipped_norm)
        state.count.add_(1)
        state.beta_power.mul_(beta)
        return F.mul(updates, coef), state

    return Transform(init, update)  # looks across tensors
