"""Multi-tensor helpers used by the transforms.

A hyperparameter reaches a transform either as a Python number (the eager path) or as a 0-d tensor
(the compiled path, so that changing a learning rate never triggers a recompile). torch's fused
``_foreach_lerp_`` / ``_foreach_addcmul_`` / ``alpha=`` arguments take Python numbers only, so each helper
uses them when it can and falls back to ``_foreach_mul`` / ``_foreach_add`` with a tensor scalar otherwise.
Under ``torch.compile`` both forms fuse into the same kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Scalar = float | Tensor
Tensors = list[Tensor]


def is_number(x: object) -> bool:
    return not isinstance(x, Tensor)


def element(x: Tensor) -> Scalar:
    """The value of a one-element state tensor: a Python float in eager mode (so the arithmetic on it is plain
    Python, not a chain of tiny tensor ops), a 0-d tensor while torch.compile traces."""
    if torch.compiler.is_compiling():
        return x.reshape(())
    return x.item()


def mul(xs: Sequence[Tensor], s: Scalar) -> Tensors:
    return list(torch._foreach_mul(xs, s))



def add_(xs: Sequence[Tensor], s: Scalar) -> None:
    """``xs += s`` in place. ``_foreach_add_`` with a 0-d tensor computed in the graph makes dynamo read it
    with ``.item()`` (a graph break that drops the whole step to eager), so a tensor goes tensor by tensor."""
    if is_number(s):
        torch._foreach_add_(xs, s)
    else:
        for x in xs:
            x.add_(s)


def add_scaled(xs: Sequence[Tensor], ys: Sequence[Tensor], a: Scalar) -> Tensors:
    """``xs + a * ys`` (new tensors)."""
    if is_number(a):
        return list(torch._foreach_add(xs, ys, alpha=a))
    return list(torch._foreach_add(xs, torch._foreach_mul(ys, a)))



def ema_(avg: Sequence[Tensor], xs: Sequence[Tensor], decay: Scalar) -> None:
    """``avg = decay * avg + (1 - decay) * xs`` in place (an exponential moving average)."""
    if is_number(decay):
        torch._foreach_lerp_(avg, xs, 1.0 - decay)
    else:
        torch._foreach_mul_(avg, decay)
        torch._foreach_add_(avg, torch._foreach_mul(xs, 1.0 - decay))


def ema_sq_(avg: Sequence[Tensor], xs: Sequence[Tensor], decay: Scalar) -> None:
    """``avg = decay * avg + (1 - decay) * xs * xs`` in place."""
    torch._foreach_mul_(avg, decay)
    if is_number(decay):
        torch._foreach_addcmul_(avg, xs, xs, value=1.0 - decay)
    else:
        torch._foreach_add_(avg, torch._foreach_mul(torch._foreach_mul(xs, xs), 1.0 - decay))


def rsqrt_denominator(acc: Sequence[Tensor], eps_root: Scalar, eps: Scalar, *, owned: bool = False) -> Tensors:
    """``sqrt(acc + eps_root) + eps``: the chapter puts epsilon inside the root (7.9, 7.11), Adam outside (7.22).

    ``owned=True`` says ``acc`` is a temporary of the caller's, so the root is taken in place: in eager mode
    every temporary alive at once is memory the allocator may return to the system and fault in again.
    """
    if _nonzero(eps_root):
        if owned:
            add_(acc, eps_root)
        else:
            acc = [a + eps_root for a in acc] if not is_number(eps_root) else torch._foreach_add(acc, eps_root)
            owned = True
    if owned:
        denom = list(acc)
        torch._foreach_sqrt_(denom)
    else:
        denom = list(torch._foreach_sqrt(acc))
    if _nonzero(eps):
        add_(denom, eps)
    return denom


def addcdiv_(xs: Sequence[Tensor], num: Sequence[Tensor], den: Sequence[Tensor], value: Scalar) -> None:
    """``xs += value * num / den`` in place, one fused pass in eager mode."""
    if is_number(value):
        torch._foreach_addcdiv_(xs, num, den, value=value)
    else:
        torch._foreach_add_(xs, torch._foreach_mul(torch._foreach_div(num, den), value))


def zeros_like(xs: Sequence[Tensor]) -> Tensors:
    return [torch.zeros_like(x, memory_format=torch.preserve_format) for x in xs]


def full_like(xs: Sequence[Tensor], value: float) -> Tensors:
    return [torch.full_like(x, value, memory_format=torch.preserve_format) for x in xs]


def _nonzero(x: Scalar) -> bool:
    """False only for a Python zero: a tensor hyperparameter is always applied (its value may change)."""
    return not is_zero(x)


def is_zero(x: object) -> bool:
    """True for a Python zero only. In the compiled path a zero hyperparameter stays a Python 0.0, so
    structural choices (no momentum buffer when momentum is 0) are made at trace time."""
    return is_number(x) and x == 0
