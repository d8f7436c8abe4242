"""Optimizers that treat a weight as a matrix: Adafactor (factored second moments) and Muon (orthogonalized
momentum), torch.optim.Adafactor and torch.optim.Muon as chains.

Their transforms work tensor by tensor (a row mean, a norm, a matrix iteration), so they are not elementwise in
the arithmetic sense; but the update of each tensor depends only on that tensor and on shared counters, which
is all that :class:`~optreg.optim.transforms.Transform`'s ``elementwise=True`` promises (the adapter may run
them one tensor at a time), so they declare it, as ``clip_by_norm`` does.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregValueError
from optreg.optim import _foreach as F
from optreg.optim import transforms as T
from optreg.optim.transforms import EmptyState, Params, Transform, Updates, counter

# ------------------------------------------------------------------------------------------ Adafactor


def _rms(x: Tensor) -> Tensor:
    """``RMS(x) = ||x||_2 / sqrt(numel)`` (0-d)."""
    return torch.linalg.vector_norm(x) / math.sqrt(x.numel())


def _refuse_complex(name: str, params: Params) -> None:
    """Factored moments and orthogonalization are defined for real matrices (torch refuses complex ones too)."""
    for p in params:
        if p.is_complex():
            raise OptregValueError(f"{name}: parameters must be real, got one of dtype {p.dtype}")


class ScaleByFactoredRmsState(NamedTuple):
    count: Tensor
    row_var: list[Tensor | None]  # R, shape (..., n, 1), for a tensor of two or more dimensions
    col_var: list[Tensor | None]  # C, shape (..., 1, m)
    variance: list[Tensor | None]  # V, for a vector (or a scalar)


def scale_by_factored_rms(
    beta2_decay: float = -0.8, eps1: float | None = None, *, name: str = "scale_by_factored_rms"
) -> Transform:
    """Adafactor's second moment (Shazeer & Stern, 2018, Algorithms 4-5), factored for matrices.

    ``beta2_t = 1 - t^beta2_decay`` (the paper's 1 - t^-0.8). For a matrix ``G`` (n x m; the last two dimensions
    of a larger tensor) only the row and column means of ``G*G`` are averaged::

        R_t = beta2_t R_{t-1} + (1 - beta2_t) mean_cols(G*G)      (n x 1)
        C_t = beta2_t C_{t-1} + (1 - beta2_t) mean_rows(G*G)      (1 x m)
        V_t = R_t C_t / max(mean_rows(R_t), eps1)                 (the rank-1 estimate of E[G*G])

    (means rather than the paper's sums: the ratio is the same), so the state is n + m numbers instead of n m.
    A vector keeps ``V_t = beta2_t V_{t-1} + (1 - beta2_t) G*G`` in full. ``u = G / max(sqrt(V_t), eps1)``.
    ``eps1=None`` is the machine epsilon of the parameter's dtype. This is torch.optim.Adafactor's variant
    (eps1 as a floor rather than the paper's 1e-30 added to ``G*G``).
    """
    beta2_decay = _checks.check_range(name, "beta2_decay", beta2_decay, high=0.0)
    if eps1 is not None:
        eps1 = _checks.check_nonneg(name, "eps1", eps1)

    def init(params: Params) -> ScaleByFactoredRmsState:
        _refuse_complex(name, params)
        rows, cols, full = [], [], []
        for p in params:
            factored = p.ndim > 1
            rows.append(p.new_zeros((*p.shape[:-1], 1)) if factored else None)
            cols.append(p.new_zeros((*p.shape[:-2], 1, p.shape[-1])) if factored else None)
            full.append(None if factored else torch.zeros_like(p, memory_format=torch.preserve_format))
        return ScaleByFactoredRmsState(counter(params), rows, cols, full)

    def update(updates: Updates, state: ScaleByFactoredRmsState, params: Params | None = None):
        count = F.element(state.count) + 1
        (weight,) = F.hoist(T.count_as_float(count) ** beta2_decay, like=updates)  # 1 - beta2_t
        out = []
        for g, row, col, var in zip(updates, state.row_var, state.col_var, state.variance):
            eps = torch.finfo(g.dtype).eps if eps1 is None else eps1
            if var is None:
                row.lerp_(torch.linalg.vector_norm(g, dim=-1, keepdim=True).square_().div_(g.size(-1)), weight)
                col.lerp_(torch.linalg.vector_norm(g, dim=-2, keepdim=True).square_().div_(g.size(-2)), weight)
                estimate = (row @ col).div_(row.mean(dim=-2, keepdim=True).clamp_(min=eps))
            else:
                var.lerp_(g * g, weight)
                estimate = var.clone()
            out.append(estimate.clamp_(min=eps * eps).rsqrt_().mul_(g))
        return out, ScaleByFactoredRmsState(count, state.row_var, state.col_var, state.variance)

    return Transform(init, update, True)


def clip_by_block_rms(d: float = 1.0, *, name: str = "clip_by_block_rms") -> Transform:
    """Update clipping (Shazeer & Stern, 2018, section 6): ``u <- u / max(1, RMS(u) / d)``, tensor by tensor."""
    d = _checks.check_range(name, "d", d, 1.0)

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        return [u / torch.clamp(_rms(u) / d, min=1.0) for u in updates], state

    return Transform(init, update, True)


def scale_by_param_block_rms(min_scale: float = 1e-3, *, name: str = "scale_by_param_block_rms") -> Transform:
    """Relative step size (Shazeer & Stern, 2018, section 8): ``u <- max(min_scale, RMS(theta)) u``, per tensor.

    The step is then proportional to the scale of the parameter it changes (``min_scale``: torch's eps2).
    """
    min_scale = _checks.check_nonneg(name, "min_scale", min_scale)

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        if params is None:
            raise OptregValueError(f"{name}: needs the parameters, got params=None")
        return [u * torch.clamp(_rms(p), min=min_scale) for u, p in zip(updates, params)], state

    return Transform(init, update, True)


class ScaleByRelativeStepState(NamedTuple):
    count: Tensor


def scale_by_relative_step(lr: float = 0.01, *, name: str = "scale_by_relative_step") -> Transform:
    """``u <- -rho_t u`` with ``rho_t = min(lr, 1 / sqrt(t))`` (Shazeer & Stern, 2018, section 8; ``lr`` is their
    0.01 cap, which torch.optim.Adafactor makes the learning rate)."""
    lr = T._check(_checks.check_nonneg, name, "lr", lr)

    def init(params: Params) -> ScaleByRelativeStepState:
        return ScaleByRelativeStepState(count=counter(params))

    def update(updates: Updates, state: ScaleByRelativeStepState, params: Params | None = None):
        count, rho = relative_step(state)
        (step,) = F.hoist(-rho, like=updates)
        return F.mul(updates, step), ScaleByRelativeStepState(count)

    def relative_step(state: ScaleByRelativeStepState) -> tuple[Any, Any]:
        count = F.element(state.count) + 1
        cap = 1.0 / T.count_as_float(count) ** 0.5
        if F.is_number(lr) and F.is_number(cap):
            return count, min(lr, cap)
        return count, torch.minimum(torch.as_tensor(lr, dtype=torch.float64), torch.as_tensor(cap, dtype=torch.float64))

    def write(updates: Updates, state: ScaleByRelativeStepState, params: Params, scale: Any, keep: Any):
        count, rho = relative_step(state)  # theta <- keep theta - scale rho u, with no temporary
        F.axpby_(params, updates, -scale * rho, keep)
        return ScaleByRelativeStepState(count)

    return Transform(init, update, True, write=write)


def _product(lr: Any, weight_decay: Any) -> Any:
    """``lr * weight_decay``, a Python zero when either is one (so no decay is compiled in)."""
    return 0.0 if F.is_zero(lr) or F.is_zero(weight_decay) else lr * weight_decay


# ----------------------------------------------------------------------------------------------- Muon


class EmaMomentumState(NamedTuple):
    momentum_buffer: list[Tensor]


def ema_momentum(momentum: float = 0.95, *, nesterov: bool = True, name: str = "ema_momentum") -> Transform:
    """Momentum as an exponential moving average: ``B_t = mu B_{t-1} + (1 - mu) g_t``, returning ``B_t``, or with
    ``nesterov=True`` ``(1 - mu) g_t + mu B_t`` (torch.optim.Muon's form; :func:`~optreg.optim.transforms.trace`
    is torch.optim.SGD's ``B_t = mu B_{t-1} + g_t``). The two differ by the factor ``1 - mu``, which matters
    before an orthogonalization only through its rounding."""
    momentum = T._check(_checks.check_unit, name, "momentum", momentum)

    def init(params: Params) -> EmaMomentumState:
        return EmaMomentumState(momentum_buffer=F.zeros_like(params))

    def update(updates: Updates, state: EmaMomentumState, params: Params | None = None):
        weight, mu = F.hoist(1.0 - momentum, momentum, like=updates)
        out = []
        for g, buf in zip(updates, state.momentum_buffer):
            buf.lerp_(g, weight)
            out.append(torch.lerp(g, buf, mu) if nesterov else buf)
        return out, state

    return Transform(init, update, True)


def newton_schulz(x: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """``O ~ U V^T`` for ``x = U S V^T``: the quintic Newton-Schulz iteration of Jordan et al. (2024), in bfloat16.

    ``X_0 = x / max(||x||_F, eps)`` (so every singular value is at most 1), then ``steps`` times
    ``A = X X^T``, ``X <- a X + (b A + c A A) X``: each step maps every singular value ``s`` to
    ``a s + b s^3 + c s^5`` and leaves the singular vectors alone. The default coefficients (3.4445, -4.7750,
    2.0315) have a steep slope at 0, so that five steps bring the singular values near 1 (into roughly
    [0.5, 1.5], not onto 1: Jordan et al. found that does not hurt); the classic cubic (1.5, -0.5, 0) converges
    to ``U V^T`` itself, slowly. Computed on the wider orientation of ``x`` and in bfloat16, exactly as
    torch.optim.Muon does (same operations), and returned in ``x``'s dtype (contiguous).
    """
    a, b, c = coefficients
    y = x.to(torch.bfloat16, copy=True)
    tall = x.size(0) > x.size(1)
    if tall:
        y = y.T
    y.div_(y.norm().clamp(min=eps))
    for _ in range(steps):
        gram = y @ y.T
        y = torch.addmm(y, torch.addmm(gram, gram, gram, beta=b, alpha=c), y, beta=a)
    return (y.T if tall else y).to(x.dtype, memory_format=torch.contiguous_format)


# Under torch.compile the iteration runs as one opaque op: inductor would fuse its bfloat16 steps with float32
# intermediates and round differently from the eager kernels (measured: 1.7e-2 apart on a 16 x 6 matrix), and
# torch.optim.Muon rounds as the eager kernels do.
_LIB = torch.library.Library("optreg", "FRAGMENT")
_LIB.define("newton_schulz(Tensor x, float a, float b, float c, int steps, float eps) -> Tensor")
_LIB.impl(
    "newton_schulz", lambda x, a, b, c, steps, eps: newton_schulz(x, (a, b, c), steps, eps), "CompositeExplicitAutograd"
)


@torch.library.register_fake("optreg::newton_schulz")
def _(x: Tensor, a: float, b: float, c: float, steps: int, eps: float) -> Tensor:
    return x.new_empty(x.shape)  # (contiguous, as the op's result)


def orthogonalize(
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    ns_steps: int = 5,
    eps: float = 1e-7,
    *,
    name: str = "orthogonalize",
) -> Transform:
    """``u <- NS(u)``: each update matrix replaced by its orthogonalization (:func:`newton_schulz`).

    The parameters must be 2-D (as torch.optim.Muon requires): a vector has no orthogonal factor to speak of,
    and a convolution kernel would need a choice of reshape. Refused at the first step otherwise.
    """
    a, b, c = T._check_numbers(name, "ns_coefficients", ns_coefficients, 3, "(a, b, c)")
    if isinstance(ns_steps, float) and ns_steps.is_integer():  # (the compiled path hands numbers over as floats)
        ns_steps = int(ns_steps)
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 1 <= ns_steps <= 99:
        raise OptregValueError(f"{name}: ns_steps must be an integer in [1, 99], got {ns_steps!r}")
    eps = _checks.check_nonneg(name, "eps", eps)

    def init(params: Params) -> EmptyState:
        _refuse_complex(name, params)
        for p in params:
            if p.ndim != 2:
                raise OptregValueError(
                    f"{name}: every parameter must be a 2-D matrix (as in torch.optim.Muon: optimize biases and "
                    f"other tensors with another optimizer, or leave them out with optreg.optim.masked), got a "
                    f"parameter of shape {tuple(p.shape)}"
                )
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        if torch.compiler.is_compiling():
            return [torch.ops.optreg.newton_schulz.default(u, a, b, c, ns_steps, eps) for u in updates], state
        return [newton_schulz(u, (a, b, c), ns_steps, eps) for u in updates], state

    return Transform(init, update, True)


_ADJUST_LR = (None, "original", "match_rms_adamw")


def _shape_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


def scale_by_shape(adjust_lr_fn: str | None = None, *, name: str = "scale_by_shape") -> Transform:
    """``u <- r(shape) u``, torch.optim.Muon's ``adjust_lr_fn`` for an ``A x B`` matrix: ``"original"`` (or None)
    ``r = sqrt(max(1, A / B))`` (Jordan et al., 2024), ``"match_rms_adamw"`` ``r = 0.2 sqrt(max(A, B))`` (Liu et
    al., 2025, "Muon is scalable for LLM training"), which gives the update AdamW's RMS."""
    _checks.check_choice(name, "adjust_lr_fn", adjust_lr_fn, _ADJUST_LR)

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        return [u * _shape_ratio(adjust_lr_fn, u.shape) for u in updates], state

    def write(updates: Updates, state: EmptyState, params: Params, alpha: Any, keep: Any) -> EmptyState:
        # theta <- keep theta + (alpha r) u: torch's param.mul_(1 - lr w) then param.add_(O, alpha=-lr r)
        for p, u in zip(params, updates):
            F.axpby_([p], [u], alpha * _shape_ratio(adjust_lr_fn, u.shape), keep)
        return state

    return Transform(init, update, True, write=write)
