"""Multi-tensor helpers used by the transforms.

A hyperparameter reaches a transform either as a Python number (the eager path) or as a 0-d tensor
(the compiled path, so that changing a learning rate never triggers a recompile). torch's fused
``_foreach_lerp_`` / ``_foreach_addcmul_`` / ``alpha=`` arguments take Python numbers only, so each helper
uses them when it can and falls back to ``_foreach_mul`` / ``_foreach_add`` with a tensor scalar otherwise.
Under ``torch.compile`` both forms fuse into the same kernel.

A list of one tensor (the eager optimizer's per-tensor path) takes the tensor's own method instead: a
``_foreach_*`` call on one tensor costs a few microseconds more than the method (measured 4% of an eager
AdaGrad step over 50 tensors of 200k), and the traced graph is the same. A Python number that such a method
takes as an operand goes in as a cached 0-d tensor (:func:`operand`): same result, less dispatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

Scalar = float | Tensor
Tensors = list[Tensor]


def is_number(x: object) -> bool:
    return not isinstance(x, Tensor)


# A Python number as an operand of a tensor op (``x.add_(eps)``, ``x * c``) is wrapped in a new 0-d tensor on
# every call, and the op then takes a slower kernel: on CPU ~2.5 us more dispatch (of a ~4.3 us op on a small
# tensor) and ~5 us more on 200k floats (22.5 against 17.6 us), measured. ``alpha=`` / ``value=`` arguments
# are not wrapped and need none of this.
_OPERANDS: dict[tuple[Any, torch.dtype], Tensor] = {}
_OPERAND_DTYPE = {torch.float32: torch.float32, torch.float16: torch.float32, torch.bfloat16: torch.float32,
                  torch.float64: torch.float64}


def operand(s: Scalar, x: Tensor) -> Scalar:
    """``s`` as the operand of an eager CPU op on ``x``: a cached 0-d tensor in the op's computation dtype.

    float32 for float32 / float16 / bfloat16 tensors (the dtype their CPU kernels compute in), float64 for
    float64: the op then rounds the number exactly as it would a Python number, so results are identical
    (tested for add, mul, in and out of place, every dtype). A 0-d operand never changes the result's dtype.
    Tensors, other devices and dtypes, and numbers under torch.compile (constants there) pass through.
    """
    dtype = _OPERAND_DTYPE.get(x.dtype)
    if not is_number(s) or dtype is None or not x.is_cpu or torch.compiler.is_compiling():
        return s
    key = (s, dtype) if s != 0 else (repr(float(s)), dtype)  # (0.0 == -0.0, but x * -0.0 is not x * 0.0)
    t = _OPERANDS.get(key)
    if t is None:
        if len(_OPERANDS) >= 256:  # a new value each step (Adam's corrected epsilon) must not grow it forever
            _OPERANDS.clear()
        with torch.inference_mode(False):  # made under inference_mode it could never enter an autograd graph
            t = _OPERANDS[key] = torch.tensor(s, dtype=dtype, device="cpu")  # (whatever the default device)
    return t


def element(x: Scalar) -> Scalar:
    """The value of a one-element state tensor: a Python number in eager mode (so the arithmetic on it is plain
    Python, not a chain of tiny tensor ops), a 0-d tensor while torch.compile traces. A number passes through."""
    if not isinstance(x, Tensor):
        return x
    if torch.compiler.is_compiling():
        return x.reshape(())
    return x.item()


# An opaque copy: torch.compile cannot see through it, so what feeds it is computed once, not inlined into the
# loops that read it. Defined with torch.library directly (not ``custom_op``, whose Python wrapper costs ~20 us
# per call against ~8 us here).
_LIB = torch.library.Library("optreg", "DEF")
_LIB.define("realize(Tensor x) -> Tensor")
_LIB.impl("realize", lambda x: x.clone(), "CompositeExplicitAutograd")


@torch.library.register_fake("optreg::realize")
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


def hoist(*xs: Scalar, like: Sequence[Tensor] = ()) -> tuple[Scalar, ...]:
    """Scalars derived from hyperparameters and counters, computed once per step rather than once per element.

    Under torch.compile, inductor inlines scalar arithmetic on 0-d tensors into every per-element loop that
    uses it: ``1 - beta``, Adam's ``sqrt(1 - beta2^t)``, a division, and the float64 -> float32 conversion
    then run once per vector of 8 floats (measured: compiled Adam 4% slower with tensor betas than with
    constant ones, 3-14% with the bias corrections inlined). Stacked, converted to the dtype of the tensors
    ``like`` (when they share one; the loops converted to it anyway) and passed through an opaque copy, they
    are computed in one tiny kernel and merely loaded by the loops. Numbers (eager mode) pass through.
    """
    at = [i for i, x in enumerate(xs) if not is_number(x)]
    if not at or not torch.compiler.is_compiling():
        return xs
    dtypes = {t.dtype for t in like}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
    packed = torch.ops.optreg.realize.default(torch.stack([xs[i].to(torch.float64) for i in at]).to(dtype))
    out = list(xs)
    for j, i in enumerate(at):
        out[i] = packed[j]
    return tuple(out)


def mul(xs: Sequence[Tensor], s: Scalar) -> Tensors:
    """``xs * s`` (new tensors)."""
    return [xs[0] * operand(s, xs[0])] if len(xs) == 1 else list(torch._foreach_mul(xs, s))


def scale_(xs: Sequence[Tensor], s: Scalar) -> None:
    """``xs *= s`` in place."""
    if len(xs) == 1:
        xs[0].mul_(operand(s, xs[0]))
    else:
        torch._foreach_mul_(xs, s)


def mul_each_(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> None:
    """``xs *= ys`` in place, elementwise, tensor by tensor."""
    if len(xs) == 1:
        xs[0].mul_(ys[0])
    else:
        torch._foreach_mul_(xs, ys)


def div_each_(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> None:
    """``xs /= ys`` in place, elementwise, tensor by tensor."""
    if len(xs) == 1:
        xs[0].div_(ys[0])
    else:
        torch._foreach_div_(xs, ys)


def addcmul_(xs: Sequence[Tensor], a: Sequence[Tensor], b: Sequence[Tensor], value: float = 1.0) -> None:
    """``xs += value * a * b`` in place (``value`` a number)."""
    if len(xs) == 1:
        xs[0].addcmul_(a[0], b[0], value=value)
    else:
        torch._foreach_addcmul_(xs, a, b, value=value)


def sqrt_(xs: Sequence[Tensor]) -> None:
    if len(xs) == 1:
        xs[0].sqrt_()
    else:
        torch._foreach_sqrt_(xs)


def rsqrt_(xs: Sequence[Tensor]) -> None:
    if len(xs) == 1:
        xs[0].rsqrt_()
    else:
        torch._foreach_rsqrt_(xs)


def add_(xs: Sequence[Tensor], s: Scalar) -> None:
    """``xs += s`` in place. ``_foreach_add_`` with a 0-d tensor computed in the graph makes dynamo read it
    with ``.item()`` (a graph break that drops the whole step to eager), so a tensor goes tensor by tensor."""
    if is_number(s) and len(xs) != 1:
        torch._foreach_add_(xs, s)
    else:
        for x in xs:
            x.add_(operand(s, x))


def add_scaled(xs: Sequence[Tensor], ys: Sequence[Tensor], a: Scalar) -> Tensors:
    """``xs + a * ys`` (new tensors)."""
    if len(xs) == 1:
        return [torch.add(xs[0], ys[0], alpha=a) if is_number(a) else xs[0] + ys[0] * a]
    if is_number(a):
        return list(torch._foreach_add(xs, ys, alpha=a))
    return list(torch._foreach_add(xs, torch._foreach_mul(ys, a)))


def ema_(avg: Sequence[Tensor], xs: Sequence[Tensor], decay: Scalar) -> None:
    """``avg = decay * avg + (1 - decay) * xs`` in place (an exponential moving average)."""
    if is_number(decay):
        if len(avg) == 1:
            avg[0].lerp_(xs[0], 1.0 - decay)
        else:
            torch._foreach_lerp_(avg, xs, 1.0 - decay)
    else:
        decay, weight = hoist(decay, 1.0 - decay, like=avg)
        torch._foreach_mul_(avg, decay)
        torch._foreach_add_(avg, torch._foreach_mul(xs, weight))


def ema_sq_(avg: Sequence[Tensor], xs: Sequence[Tensor], decay: Scalar) -> None:
    """``avg = decay * avg + (1 - decay) * xs * xs`` in place: ``mul_`` then ``addcmul_``, torch.optim's ops.

    (One tensor with a cached operand measured 3% faster for a whole eager RMSprop step than ``lerp_``
    towards a temporary ``x * x``, which writes one more array.)
    """
    if _single(avg) and is_number(decay):
        avg[0].mul_(operand(decay, avg[0])).addcmul_(xs[0], xs[0], value=1.0 - decay)
    elif is_number(decay):
        torch._foreach_mul_(avg, decay)
        torch._foreach_addcmul_(avg, xs, xs, value=1.0 - decay)
    else:
        ema_(avg, list(torch._foreach_mul(xs, xs)), decay)


def decay_add_(acc: Sequence[Tensor], xs: Sequence[Tensor], decay: Scalar) -> None:
    """``acc = decay * acc + xs`` in place (momentum's buffer, eq. 7.14): one pass for one tensor, two for a list."""
    if _single(acc) and is_number(decay):
        torch.add(xs[0], acc[0], alpha=decay, out=acc[0])
        return
    (decay,) = hoist(decay, like=acc)
    torch._foreach_mul_(acc, decay)
    torch._foreach_add_(acc, xs)


class Denominator(NamedTuple):
    """A per-tensor denominator ``d``, or its reciprocal ``1 / d`` when ``inverted`` (then ratios multiply)."""

    tensors: Tensors
    inverted: bool = False


def rsqrt_denominator(acc: Sequence[Tensor], eps_root: Scalar, eps: Scalar, *, owned: bool = False) -> Denominator:
    """``sqrt(acc + eps_root) + eps``: the chapter puts epsilon inside the root (7.9, 7.11), Adam outside (7.22).

    With epsilon only inside the root (the chapter's form) the reciprocal ``rsqrt(acc + eps_root)`` is returned
    instead (``inverted=True``): on CPU ``rsqrt`` costs about half of ``sqrt``, and ratios then multiply.
    ``owned=True`` says ``acc`` is a temporary of the caller's, so the root is taken in place: in eager mode
    every temporary alive at once is memory the allocator may return to the system and fault in again.
    """
    inside, outside = _nonzero(eps_root), _nonzero(eps)
    if inside:
        if owned:
            add_(acc, eps_root)
        else:
            acc = add(acc, eps_root)
        owned = True
        if not outside:
            denom = list(acc)
            rsqrt_(denom)
            return Denominator(denom, True)
    if owned:
        denom = list(acc)
        sqrt_(denom)
    else:
        denom = [acc[0].sqrt()] if len(acc) == 1 else list(torch._foreach_sqrt(acc))
    if outside:
        add_(denom, eps)
    return Denominator(denom)


def divide(num: Sequence[Tensor], den: Denominator) -> Tensors:
    """``num / d`` (new tensors)."""
    if len(num) == 1:
        return [num[0] * den.tensors[0] if den.inverted else num[0] / den.tensors[0]]
    return list(torch._foreach_mul(num, den.tensors) if den.inverted else torch._foreach_div(num, den.tensors))


def add_ratio_(xs: Sequence[Tensor], num: Sequence[Tensor], den: Denominator, value: Scalar) -> None:
    """``xs += value * num / d`` in place: one fused ``addcdiv_`` (``addcmul_`` for a reciprocal) in eager mode."""
    if is_number(value):
        if len(xs) == 1:
            x = xs[0]
            (x.addcmul_ if den.inverted else x.addcdiv_)(num[0], den.tensors[0], value=value)
        else:
            op = torch._foreach_addcmul_ if den.inverted else torch._foreach_addcdiv_
            op(xs, num, den.tensors, value=value)
    else:
        torch._foreach_add_(xs, torch._foreach_mul(divide(num, den), value))


def add(xs: Sequence[Tensor], s: Scalar) -> Tensors:
    """``xs + s`` (new tensors)."""
    return [x + operand(s, x) for x in xs] if not is_number(s) or len(xs) == 1 else list(torch._foreach_add(xs, s))


def axpby_(xs: Sequence[Tensor], ys: Sequence[Tensor], alpha: Scalar, keep: Scalar = 1.0) -> None:
    """``xs <- keep * xs + alpha * ys`` in place; ``ys`` must not be ``xs`` itself (``xs`` is scaled first)."""
    if not is_one(keep):
        scale_(xs, keep)
    if len(xs) == 1:
        xs[0].add_(ys[0], alpha=alpha) if is_number(alpha) else xs[0].add_(ys[0] * alpha)
    elif is_number(alpha):
        torch._foreach_add_(xs, ys, alpha=alpha)
    else:
        torch._foreach_add_(xs, torch._foreach_mul(ys, alpha))


def zeros_like(xs: Sequence[Tensor]) -> Tensors:
    return [torch.zeros_like(x, memory_format=torch.preserve_format) for x in xs]


def full_like(xs: Sequence[Tensor], value: float) -> Tensors:
    return [torch.full_like(x, value, memory_format=torch.preserve_format) for x in xs]


def _single(xs: Sequence[Tensor]) -> bool:
    """One tensor, in eager mode: plain tensor ops with ``out=`` serve there (a compiled graph fuses anyway)."""
    return len(xs) == 1 and not torch.compiler.is_compiling()


def _nonzero(x: Scalar) -> bool:
    """False only for a Python zero: a tensor hyperparameter is always applied (its value may change)."""
    return not is_zero(x)


def is_one(x: object) -> bool:
    """True for a Python one only (a tensor factor is always applied)."""
    return is_number(x) and x == 1


def is_zero(x: object) -> bool:
    """True for a Python zero only. In the compiled path a zero hyperparameter stays a Python 0.0, so
    structural choices (no momentum buffer when momentum is 0) are made at trace time."""
    return is_number(x) and x == 0
