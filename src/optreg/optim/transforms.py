"""The per-step rules of the chapter, as composable gradient transforms (section 7.2, Table 7.1).

The chapter splits the methods into *learning-rate adaptation* (AdaGrad, RMSprop, AdaDelta) and
*direction optimization* (momentum, Nesterov, clipping), and calls Adam "momentum + RMSprop". optreg makes
that split its architecture, in the style of Optax: a :class:`Transform` is a pair of pure-looking
functions ``init(params) -> state`` and ``update(updates, state, params) -> (updates, state)``; an optimizer
is a short :func:`optreg.optim.combine.chain` of them (see ``aliases.py``).

Contract (every transform here keeps it, and so must a user's own):

- ``updates`` and ``params`` are lists of tensors; ``update`` must not modify the incoming ``updates`` in
  place (they may be the gradients themselves) but may return new tensors or its own state tensors.
- ``state`` is a NamedTuple whose fields are per-parameter lists of tensors, 0-d tensors shared by the
  group (counters), nested states, or static Python values. Transforms update their per-parameter state
  tensors *in place* and return the same tensors (so the compiled path writes no copies); a functional
  transform that returns new tensors also works, the :class:`~optreg.optim.optimizer.Optimizer` copies them
  back. Shared counters are returned as new values (a Python number in eager mode, read with
  ``optreg.optim._foreach.element``), never mutated: an elementwise transform then runs tensor by tensor
  from the same counters.
- Hyperparameters are Python numbers, or 0-d tensors in the compiled path; numbers are validated here.
- Updates are *added* to the parameters: the learning-rate scale flips the sign (``-alpha g``, eq. 7.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregValueError
from optreg.optim import _foreach as F

Params = Sequence[Tensor]
Updates = list[Tensor]
State = Any


class Transform(NamedTuple):
    """A gradient transformation: ``init(params) -> state``, ``update(updates, state, params) -> (updates, state)``.

    ``elementwise=True`` promises that the update of each tensor depends only on that tensor (its gradient,
    parameter and per-parameter state) and on shared counters that advance once per call (see below). The adapter may
    then run the transform one tensor at a time (faster in eager mode for large tensors). Transforms that
    look across tensors (global-norm clipping) must leave it False, the default for a user's transform.

    ``needs_closure=True`` marks a transform that re-evaluates the loss (a line search): its ``update`` also
    takes keyword arguments ``closure`` (re-evaluates the loss at the current parameters), ``value`` (the loss
    at the start of the step) and ``grads`` (the raw gradients), and the optimizer refuses a step without one.

    ``affine=(a, b)`` declares a stateless ``u -> a u + b theta`` (a learning rate, a weight decay). ``write``,
    when given, is ``write(updates, state, params, alpha, keep) -> state``: it performs
    ``theta <- keep theta + alpha update(updates, state, theta)`` in place, in fewer passes over memory than
    materializing the update (e.g. one ``addcdiv_`` for a ratio ``m / d``), reading ``theta`` before writing it.
    A chain folds its trailing affine transforms into ``alpha`` and ``keep`` and hands them to the last real
    transform's ``write``, which is how the eager optimizer applies Adam in as few passes as torch's for-loop.
    Both are optimizations: the result is the same as ``theta += update(...)``.

    A transform with ``elementwise=True`` must return its shared counters as new values (Python numbers or
    tensors) rather than mutate them in place: the adapter runs it tensor by tensor from the same counters and
    writes them back once.
    """

    init: Callable[[Params], State]
    update: Callable[..., tuple[Updates, State]]
    elementwise: bool = False
    needs_closure: bool = False
    affine: tuple[float | Tensor, float | Tensor] | None = None
    write: Callable[..., State] | None = None


class EmptyState(NamedTuple):
    """The state of a stateless transform."""


def _check(check: Callable[..., float], owner: str, field: str, value: Any) -> Any:
    """Validate a hyperparameter given as a number or as a tensor (torch.optim takes a Tensor lr).

    A tensor must be 0-d and in range, like a number (:func:`optreg._checks.check_tensor`; it is returned as
    is, so an in-place change of it is seen). While torch.compile traces, tensors pass unchecked: they are
    the adapter's own 0-d copies of values that were checked when they entered the group.
    """
    if isinstance(value, Tensor):
        return value if torch.compiler.is_compiling() else _checks.check_tensor(check, owner, field, value)
    return check(owner, field, value)


def _check_fraction(owner: str, field: str, value: Any) -> float:
    """A number in [0, 1] (a dampening)."""
    return _checks.check_range(owner, field, value, 0.0, 1.0)


def _as_float(count: Any) -> Any:
    """A step counter as a float: a Python int passes through, an int64 tensor (compiled) becomes float64."""
    return count if F.is_number(count) else count.to(torch.float64)


def counter(params: Params) -> Tensor:
    """A 0-d int64 step counter on the parameters' device (a tensor, so a compiled step never recompiles)."""
    device = params[0].device if len(params) else None
    return torch.zeros((), dtype=torch.int64, device=device)


def running_product(params: Params) -> Tensor:
    """A float64 running product, e.g. ``beta^t`` kept as ``beta^t = beta * beta^(t-1)``.

    Shape (1,), not 0-d: torch.compile 2.13 on CPU silently drops every mutation of a graph that mutates a 0-d
    float64 input (float32 0-d and float64 (1,) are fine). A running product rather than ``beta ** t`` keeps
    ``pow`` out of the compiled per-element loop (inductor inlines scalar expressions there).
    """
    device = params[0].device if len(params) else None
    return torch.ones(1, dtype=torch.float64, device=device)


# --------------------------------------------------------------------------------------------- basic


def identity() -> Transform:
    """Leaves the updates unchanged."""

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        return updates, state

    return Transform(init, update, True, affine=(1.0, 0.0))


def scale(step_size: float, *, name: str = "scale") -> Transform:
    """Multiplies the updates by a constant: ``u <- step_size * u``."""
    step_size = _check(_checks.check_number, name, "step_size", step_size)

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        return F.mul(updates, *F.hoist(step_size, like=updates)), state

    return Transform(init, update, True, affine=(step_size, 0.0))


class ScaleByScheduleState(NamedTuple):
    count: Tensor


def scale_by_learning_rate(
    lr: float | Callable[[int], float], *, flip_sign: bool = True, name: str = "scale_by_learning_rate"
) -> Transform:
    """``u <- -alpha_t u``: the learning rate of eq. (7.3), a constant or a schedule ``step -> lr`` (7.5-7.7).

    A schedule is read at the transform's own step counter (0 at the first update). In the compiled path a
    schedule costs a graph break per step; prefer the optimizer's ``lr`` with a trainer or torch scheduler there.
    """
    sign = -1.0 if flip_sign else 1.0
    if callable(lr) and not isinstance(lr, Tensor):
        schedule = lr

        def init_s(params: Params) -> ScaleByScheduleState:
            return ScaleByScheduleState(count=counter(params))

        def update_s(updates: Updates, state: ScaleByScheduleState, params: Params | None = None):
            count = F.element(state.count)
            step_lr = _checks.check_nonneg(name, "lr", schedule(int(count)))
            return F.mul(updates, sign * step_lr), ScaleByScheduleState(count=count + 1)

        return Transform(init_s, update_s, True)

    lr = _check(_checks.check_nonneg, name, "lr", lr)
    return scale(-lr if flip_sign else lr, name=name)


# --------------------------------------------------------------------------------- direction (7.2.3)


class TraceState(NamedTuple):
    momentum: list[Tensor]
    count: Tensor | None = None  # with dampening only: the steps taken (the first one is not damped)


def trace(decay: float = 0.9, *, nesterov: bool = False, dampening: float = 0.0, name: str = "trace") -> Transform:
    """Momentum, eq. (7.14), in the form torch.optim.SGD uses: ``m_t = rho m_{t-1} + g_t``.

    The chapter writes ``dtheta_t = rho dtheta_{t-1} - alpha g_t``; with a constant learning rate the two are the
    same trajectory (``dtheta_t = -alpha m_t``). ``nesterov=True`` returns ``g_t + rho m_t`` (Sutskever et al.,
    2013), which is the book's look-ahead form (7.15-7.17) under the change of variables
    ``phi = theta + rho dtheta`` (a test checks this).

    ``dampening`` (torch.optim.SGD's): ``m_t = rho m_{t-1} + (1 - dampening) g_t`` for ``t > 1``, and
    ``m_1 = g_1``: torch starts the buffer at the first gradient itself, undamped, and so does this.
    """
    decay = _check(_checks.check_unit, name, "momentum", decay)
    dampening = _check(_check_fraction, name, "dampening", dampening)
    damped = not F.is_zero(dampening)
    if nesterov and damped:
        raise OptregValueError(f"{name}: nesterov=True needs dampening=0, got dampening={dampening!r}")

    def init(params: Params) -> TraceState:
        return TraceState(momentum=F.zeros_like(params), count=counter(params) if damped else None)

    def update(updates: Updates, state: TraceState, params: Params | None = None):
        m = state.momentum
        if not damped:
            F.decay_add_(m, updates, decay)
        else:
            count = F.element(state.count)
            if F.is_number(count):
                weight = 1.0 if count == 0 else 1.0 - dampening
            else:  # (compiled: the counter is a tensor)
                weight = 1.0 - dampening * (count > 0).to(torch.float64)
            (weight,) = F.hoist(weight, like=m)
            F.axpby_(m, updates, weight, decay)
            state = TraceState(m, count + 1)
        out = F.add_scaled(updates, m, decay) if nesterov else list(m)
        return out, state

    return Transform(init, update, True)


# ------------------------------------------------------------------------ learning-rate adaptation

# What a ratio method computes for one step: ``(terms, denominator, new state)``, the update being
# ``sum_i c_i n_i / d`` over the terms ``(n_i, c_i)``.
Ratio = tuple[list[tuple[Sequence[Tensor], Any]], F.Denominator, State]


def _ratio_transform(init: Callable[[Params], State], prepare: Callable[[Updates, State], Ratio]) -> Transform:
    """An elementwise transform whose update is ``sum_i c_i n_i / d`` (AdaGrad, RMSprop, Adam, Nadam).

    ``update`` materializes the ratio; ``write`` adds it to the parameters with one ``addcdiv_`` per term
    (``addcmul_`` when the denominator comes as its reciprocal, see :func:`F.rsqrt_denominator`),
    as torch.optim's for-loop does, instead of a division into a temporary and a separate addition.
    """

    def update(updates: Updates, state: State, params: Params | None = None):
        terms, denom, new_state = prepare(updates, state)
        (num, c), rest = terms[0], terms[1:]
        out = F.divide(num, denom)
        if not F.is_one(c):
            F.scale_(out, c)
        for num, c in rest:
            F.add_ratio_(out, num, denom, c)
        return out, new_state

    def write(updates: Updates, state: State, params: Params, alpha: Any, keep: Any) -> State:
        terms, denom, new_state = prepare(updates, state)
        if not F.is_one(keep):
            F.scale_(params, keep)
        for num, c in terms:
            F.add_ratio_(params, num, denom, alpha * c)
        return new_state

    return Transform(init, update, True, write=write)


class ScaleByAdagradState(NamedTuple):
    sum_of_squares: list[Tensor]
    count: Tensor | None = None  # with lr_decay only: the steps taken


def scale_by_adagrad(
    eps: float = 0.0,
    eps_root: float = 1e-10,
    initial_accumulator_value: float = 0.0,
    lr_decay: float = 0.0,
    *,
    name: str = "scale_by_adagrad",
) -> Transform:
    """AdaGrad (Duchi et al., 2011), eqs. (7.8)-(7.9): ``G_t = sum g*g``, ``u = g / (sqrt(G_t + eps_root) + eps)``.

    The chapter adds epsilon inside the root (7.9) and suggests 1e-7 to 1e-10 (its "e^-7" is an erratum).
    torch.optim.Adagrad adds it outside: ``eps=1e-10, eps_root=0`` reproduces torch.
    ``initial_accumulator_value`` is ``G_0`` (torch's name). ``lr_decay`` is torch's inverse-time decay of the
    step, eq. (7.5): ``u_t = g_t / ((1 + (t - 1) lr_decay) (sqrt(G_t + eps_root) + eps))``, so the learning rate
    of step ``t`` is torch's ``clr = lr / (1 + (t - 1) lr_decay)``.
    """
    eps = _check(_checks.check_nonneg, name, "eps", eps)
    eps_root = _check(_checks.check_nonneg, name, "eps_root", eps_root)
    init_value = _check(_checks.check_nonneg, name, "initial_accumulator_value", initial_accumulator_value)
    lr_decay = _check(_checks.check_nonneg, name, "lr_decay", lr_decay)
    decayed = not F.is_zero(lr_decay)

    def init(params: Params) -> ScaleByAdagradState:
        return ScaleByAdagradState(F.full_like(params, init_value), counter(params) if decayed else None)

    def prepare(updates: Updates, state: ScaleByAdagradState) -> Ratio:
        F.addcmul_(state.sum_of_squares, updates, updates)
        denom = F.rsqrt_denominator(state.sum_of_squares, eps_root, eps)
        if not decayed:
            return [(updates, 1.0)], denom, state
        count = F.element(state.count)  # t - 1
        (c,) = F.hoist(1.0 / (1.0 + _as_float(count) * lr_decay), like=updates)
        return [(updates, c)], denom, ScaleByAdagradState(state.sum_of_squares, count + 1)

    return _ratio_transform(init, prepare)


class ScaleByRmsState(NamedTuple):
    nu: list[Tensor]
    mu: list[Tensor] | None


def scale_by_rms(
    beta: float = 0.9,
    eps: float = 0.0,
    eps_root: float = 1e-8,
    *,
    initial_scale: float = 0.0,
    centered: bool = False,
    name: str = "scale_by_rms",
) -> Transform:
    """RMSprop (Tieleman & Hinton, 2012), eqs. (7.10)-(7.11).

    ``G_t = beta G_{t-1} + (1 - beta) g*g``, ``u = g / (sqrt(G_t + eps_root) + eps)``. The chapter puts epsilon
    inside the root (7.11). ``centered=True`` divides by the variance ``G_t - M_t^2`` instead (Graves, 2013).
    torch.optim.RMSprop: ``beta=alpha, eps=eps, eps_root=0``.
    """
    beta = _check(_checks.check_unit, name, "beta", beta)
    eps = _check(_checks.check_nonneg, name, "eps", eps)
    eps_root = _check(_checks.check_nonneg, name, "eps_root", eps_root)
    initial_scale = _checks.check_nonneg(name, "initial_scale", initial_scale)

    def init(params: Params) -> ScaleByRmsState:
        return ScaleByRmsState(
            nu=F.full_like(params, initial_scale), mu=F.zeros_like(params) if centered else None
        )

    def prepare(updates: Updates, state: ScaleByRmsState) -> Ratio:
        F.ema_sq_(state.nu, updates, beta)
        acc = state.nu
        if centered:
            F.ema_(state.mu, updates, beta)
            acc = list(torch._foreach_addcmul(state.nu, state.mu, state.mu, value=-1))
        return [(updates, 1.0)], F.rsqrt_denominator(acc, eps_root, eps, owned=centered), state

    return _ratio_transform(init, prepare)


class ScaleByAdadeltaState(NamedTuple):
    nu: list[Tensor]
    delta_nu: list[Tensor]


def scale_by_adadelta(
    beta: float = 0.9, eps_root: float = 1e-6, eps: float = 0.0, *, name: str = "scale_by_adadelta"
) -> Transform:
    """AdaDelta (Zeiler, 2012), eqs. (7.12)-(7.13).

    ``G_t`` as in RMSprop (7.10); ``u_t = sqrt(dX_{t-1} + eps_root) / (sqrt(G_t + eps_root) + eps) * g_t`` and
    ``dX_t = beta dX_{t-1} + (1 - beta) u_t*u_t``. The running average of squared steps takes the place of
    the learning rate; epsilon sits inside both roots, as in the chapter, Zeiler and torch.optim.Adadelta
    (``beta=rho, eps_root=eps``). As in Zeiler and torch, ``dX`` averages the unscaled step ``u_t``: with the
    usual ``lr = 1`` it is exactly the chapter's ``dtheta``.
    """
    beta = _check(_checks.check_unit, name, "beta", beta)
    eps_root = _check(_checks.check_nonneg, name, "eps_root", eps_root)
    eps = _check(_checks.check_nonneg, name, "eps", eps)

    def init(params: Params) -> ScaleByAdadeltaState:
        return ScaleByAdadeltaState(nu=F.zeros_like(params), delta_nu=F.zeros_like(params))

    def update(updates: Updates, state: ScaleByAdadeltaState, params: Params | None = None):
        F.ema_sq_(state.nu, updates, beta)
        if F.is_zero(eps):
            # sqrt(dX + eps_root) / sqrt(G + eps_root) = rsqrt((G + eps_root) / (dX + eps_root)): one root, and
            # rsqrt at that, instead of two square roots (each costs several memory passes' time on CPU)
            delta = F.add(state.nu, eps_root)
            F.div_each_(delta, F.add(state.delta_nu, eps_root))
            F.rsqrt_(delta)
        else:
            delta = F.add(state.delta_nu, eps_root)
            F.sqrt_(delta)
            delta = F.divide(delta, F.rsqrt_denominator(state.nu, eps_root, eps))
        F.mul_each_(delta, updates)
        F.ema_sq_(state.delta_nu, delta, beta)
        return delta, state

    return Transform(init, update, True)


class ScaleByAdamState(NamedTuple):
    count: Tensor
    mu: list[Tensor]
    nu: list[Tensor]
    beta1_power: Tensor  # beta1^t, shape (1,)
    beta2_power: Tensor  # beta2^t, shape (1,)
    mu_product: Tensor | None  # Nadam: prod_{i<=t} mu_i, shape (1,)
    decay_power: Tensor | None  # Nadam: 0.96^(t * momentum_decay), shape (1,)
    nu_max: list[Tensor] | None = None  # AMSGrad: max_{i<=t} G_i


def _maximum_(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> None:
    """``xs <- max(xs, ys)`` in place, elementwise."""
    if len(xs) == 1:
        torch.maximum(xs[0], ys[0], out=xs[0])
    else:
        torch._foreach_maximum_(xs, ys)


def scale_by_adam(
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    amsgrad: bool = False,
    nesterov: bool = False,
    momentum_decay: float = 4e-3,
    name: str = "scale_by_adam",
) -> Transform:
    """Adam (Kingma & Ba, 2015), eqs. (7.18)-(7.22); ``nesterov=True`` is Nadam (Dozat, 2016).

    ``M_t = b1 M + (1-b1) g`` (7.18), ``G_t = b2 G + (1-b2) g*g`` (7.19), bias corrections (7.20, 7.21), and
    ``u = M_hat / (sqrt(G_hat + eps_root) + eps)`` (7.22, epsilon outside the root as in the chapter and torch).
    The chapter's "beta2 usually 0.99" is an erratum: the paper's default, used here, is 0.999.

    ``amsgrad=True`` is AMSGrad (Reddi et al., 2018): the denominator uses the running maximum
    ``Gmax_t = max(Gmax_{t-1}, G_t)`` of the *uncorrected* second moments, and the bias correction of the
    current step is applied to it, ``u = M_hat / (sqrt(Gmax_t / (1 - b2^t) + eps_root) + eps)``: torch.optim.Adam's
    placement (the paper has no bias correction; some implementations take the maximum of ``G_hat`` instead).

    Nadam follows Dozat's momentum schedule, as torch.optim.NAdam does:
    ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))`` and
    ``u = (1 - mu_t) / (1 - prod_{i<=t} mu_i) * g / d + mu_{t+1} / (1 - prod_{i<=t+1} mu_i) * M_t / d``.

    ``beta^t`` is kept as a running product (the product of the betas actually used, should they change).
    """
    beta1 = _check(_checks.check_unit, name, "beta1", beta1)
    beta2 = _check(_checks.check_unit, name, "beta2", beta2)
    eps = _check(_checks.check_nonneg, name, "eps", eps)
    eps_root = _check(_checks.check_nonneg, name, "eps_root", eps_root)
    momentum_decay = _check(_checks.check_nonneg, name, "momentum_decay", momentum_decay)
    use_eps, use_eps_root = not F.is_zero(eps), not F.is_zero(eps_root)

    def init(params: Params) -> ScaleByAdamState:
        one = running_product(params)
        extra = (one.clone(), one.clone()) if nesterov else (None, None)
        nu_max = F.zeros_like(params) if amsgrad else None
        return ScaleByAdamState(
            counter(params), F.zeros_like(params), F.zeros_like(params), one, one.clone(), *extra, nu_max
        )

    def prepare(updates: Updates, state: ScaleByAdamState) -> Ratio:
        beta1_power = F.element(state.beta1_power) * beta1
        beta2_power = F.element(state.beta2_power) * beta2
        F.ema_(state.mu, updates, beta1)
        F.ema_sq_(state.nu, updates, beta2)
        second = state.nu
        if amsgrad:
            _maximum_(state.nu_max, state.nu)
            second = state.nu_max
        # sqrt(G / bc2 + eps_root) + eps = (sqrt(G + eps_root bc2) + eps sqrt(bc2)) / sqrt(bc2): the bias
        # correction moves into the terms' coefficients, so the denominator takes one root and one addition.
        bc2 = 1.0 - beta2_power
        root_bc2 = bc2**0.5
        count = F.element(state.count) + 1
        if not nesterov:
            nums, coefs, extra = [state.mu], [root_bc2 / (1.0 - beta1_power)], (None, None)
        else:
            decay = 0.96**momentum_decay
            decay_power = F.element(state.decay_power) * decay
            mu_t = beta1 * (1.0 - 0.5 * decay_power)
            mu_next = beta1 * (1.0 - 0.5 * decay_power * decay)
            mu_product = F.element(state.mu_product) * mu_t
            nums = [updates, state.mu]
            coefs = [root_bc2 * (1.0 - mu_t) / (1.0 - mu_product), root_bc2 * mu_next / (1.0 - mu_product * mu_next)]
            extra = (mu_product, decay_power)
        inner = eps_root * bc2 if use_eps_root else 0.0
        inner, outer, *coefs = F.hoist(inner, eps * root_bc2 if use_eps else 0.0, *coefs, like=state.nu)
        new = ScaleByAdamState(count, state.mu, state.nu, beta1_power, beta2_power, *extra, state.nu_max)
        return list(zip(nums, coefs)), F.rsqrt_denominator(second, inner, outer), new

    return _ratio_transform(init, prepare)


class ScaleByAdamaxState(NamedTuple):
    mu: list[Tensor]
    nu: list[Tensor]  # u_t, the exponentially weighted infinity norm
    beta1_power: Tensor  # beta1^t, shape (1,)


def scale_by_adamax(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, *, name: str = "scale_by_adamax"
) -> Transform:
    """AdaMax (Kingma & Ba, 2015, section 7.1): Adam with the infinity norm in place of the l2 norm.

    ``M_t = b1 M + (1-b1) g`` (7.18), ``u_t = max(b2 u_{t-1}, |g_t| + eps)`` (the limit ``p -> inf`` of the
    ``l_p`` moment ``(b2^p v + (1-b2^p) |g|^p)^(1/p)``, which needs no bias correction), and
    ``update = M_t / ((1 - b1^t) u_t)``. The paper has no epsilon; torch.optim.Adamax adds it inside the
    maximum, as here, so the same arguments reproduce torch.
    """
    beta1 = _check(_checks.check_unit, name, "beta1", beta1)
    beta2 = _check(_checks.check_unit, name, "beta2", beta2)
    eps = _check(_checks.check_nonneg, name, "eps", eps)

    def init(params: Params) -> ScaleByAdamaxState:
        return ScaleByAdamaxState(F.zeros_like(params), F.zeros_like(params), running_product(params))

    def prepare(updates: Updates, state: ScaleByAdamaxState) -> Ratio:
        beta1_power = F.element(state.beta1_power) * beta1
        F.ema_(state.mu, updates, beta1)
        F.scale_(state.nu, beta2)
        magnitude = [u.abs() for u in updates] if len(updates) == 1 else list(torch._foreach_abs(updates))
        if not F.is_zero(eps):
            F.add_(magnitude, eps)
        _maximum_(state.nu, magnitude)
        (c,) = F.hoist(1.0 / (1.0 - beta1_power), like=state.nu)
        return [(state.mu, c)], F.Denominator(list(state.nu)), ScaleByAdamaxState(state.mu, state.nu, beta1_power)

    return _ratio_transform(init, prepare)


class ScaleByRadamState(NamedTuple):
    count: Tensor
    mu: list[Tensor]
    nu: list[Tensor]
    beta1_power: Tensor  # beta1^t, shape (1,)
    beta2_power: Tensor  # beta2^t, shape (1,)


def scale_by_radam(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, *, threshold: float = 5.0, name: str = "scale_by_radam"
) -> Transform:
    """Rectified Adam (Liu et al., 2020, algorithm 2): Adam whose adaptive step is switched on once the variance
    of the adaptive learning rate is tractable.

    With ``M_t``, ``G_t`` as in Adam (7.18, 7.19), ``rho_inf = 2 / (1 - b2) - 1`` and
    ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)`` (the length of the approximated simple moving average):
    while ``rho_t <= threshold`` the update is the bias-corrected momentum ``M_hat``; after it,
    ``r_t M_hat sqrt(1 - b2^t) / (sqrt(G_t) + eps)`` with the rectification
    ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.
    The paper's threshold is 4; torch.optim.RAdam (and the authors' code) use 5, the default here, and add
    epsilon to the uncorrected root, as here: the same arguments reproduce torch.
    """
    beta1 = _check(_checks.check_unit, name, "beta1", beta1)
    beta2 = _check(_checks.check_unit, name, "beta2", beta2)
    eps = _check(_checks.check_nonneg, name, "eps", eps)
    threshold = _checks.check_range(name, "threshold", threshold, 4.0)

    def init(params: Params) -> ScaleByRadamState:
        one = running_product(params)
        return ScaleByRadamState(counter(params), F.zeros_like(params), F.zeros_like(params), one, one.clone())

    def update(updates: Updates, state: ScaleByRadamState, params: Params | None = None):
        count = F.element(state.count) + 1
        beta1_power = F.element(state.beta1_power) * beta1
        beta2_power = F.element(state.beta2_power) * beta2
        F.ema_(state.mu, updates, beta1)
        F.ema_sq_(state.nu, updates, beta2)
        new = ScaleByRadamState(count, state.mu, state.nu, beta1_power, beta2_power)
        bc1, bc2 = 1.0 - beta1_power, 1.0 - beta2_power
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * _as_float(count) * beta2_power / bc2

        def adaptive_coef(rect_sq: Any) -> Any:
            return (rect_sq * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5 * bc2**0.5 / bc1

        if F.is_number(rho_t):  # eager: the branch is known
            if rho_t <= threshold:
                return F.mul(state.mu, 1.0 / bc1), new
            out = F.divide(state.mu, F.rsqrt_denominator(state.nu, 0.0, eps))
            F.scale_(out, adaptive_coef((rho_t - 4.0) * (rho_t - 2.0)))
            return out, new
        # compiled: both branches, selected per element from a flag computed once
        on = rho_t > threshold
        rect_sq = torch.where(on, (rho_t - 4.0) * (rho_t - 2.0), 0.0)
        adaptive, plain = F.hoist(torch.where(on, adaptive_coef(rect_sq), 0.0), 1.0 / bc1, like=state.nu)
        out = [torch.where(on, m * adaptive / (v.sqrt() + eps), m * plain) for m, v in zip(state.mu, state.nu)]
        return out, new

    return Transform(init, update, True)


class ScaleByDeltaBarDeltaState(NamedTuple):
    lrs: list[Tensor]
    bar: list[Tensor]


def scale_by_delta_bar_delta(
    lr: float = 0.01,
    increase: float = 1e-4,
    decrease: float = 0.1,
    beta: float = 0.7,
    *,
    name: str = "scale_by_delta_bar_delta",
) -> Transform:
    """Delta-bar-delta (Jacobs, 1988; file 002): a learning rate per parameter, for full-batch training.

    With ``d_t`` the gradient and ``dbar_t = (1 - beta) d_t + beta dbar_{t-1}`` its running average, each rate
    grows additively by ``increase`` (kappa) when ``dbar_{t-1} d_t > 0`` (the sign is stable), shrinks
    multiplicatively by ``decrease`` (phi) when ``dbar_{t-1} d_t < 0`` (the sign flipped), and the update is
    ``eps_t * d_t`` (the alias flips the sign). On mini-batches the sign of ``d`` is noise, so use full batches.
    """
    lr = _check(_checks.check_positive, name, "lr", lr)
    increase = _check(_checks.check_nonneg, name, "increase", increase)
    decrease = _check(_checks.check_unit, name, "decrease", decrease)
    beta = _check(_checks.check_unit, name, "beta", beta)

    def init(params: Params) -> ScaleByDeltaBarDeltaState:
        return ScaleByDeltaBarDeltaState(lrs=F.full_like(params, float(lr)), bar=F.zeros_like(params))

    def update(updates: Updates, state: ScaleByDeltaBarDeltaState, params: Params | None = None):
        for rate, bar, d in zip(state.lrs, state.bar, updates):
            agree = bar * d
            grown = rate + increase
            shrunk = rate * (1.0 - decrease)
            rate.copy_(torch.where(agree > 0, grown, torch.where(agree < 0, shrunk, rate)))
        F.ema_(state.bar, updates, beta)
        return list(torch._foreach_mul(updates, state.lrs)), state

    return Transform(init, update, True)


# --------------------------------------------------------------------------------------- weight decay


def _add_scaled_params(weight_decay: float, name: str, sign: float = 1.0) -> Transform:
    """``u <- u + sign * weight_decay * theta``: the one mechanism behind l2, AdamW decay and eq. (7.63)."""
    weight_decay = _check(_checks.check_nonneg, name, "weight_decay", weight_decay)
    factor = weight_decay if sign > 0 else -weight_decay

    def init(params: Params) -> EmptyState:
        return EmptyState()

    def update(updates: Updates, state: EmptyState, params: Params | None = None):
        if params is None:
            raise OptregValueError(f"{name}: needs the parameters, got params=None")
        if F.is_zero(weight_decay):
            return updates, state
        return F.add_scaled(updates, params, *F.hoist(factor, like=params)), state

    return Transform(init, update, True, affine=(1.0, factor))


def add_l2(weight_decay: float = 0.0, *, name: str = "add_l2") -> Transform:
    """l2 regularization, *coupled*: ``g <- g + lambda theta`` (the gradient of ``lambda/2 ||theta||^2``, eq. 7.58).

    Put it first in a chain, so every later transform (momentum, Adam's second moment...) sees the penalty.
    This is what torch.optim's ``weight_decay`` does for SGD, Adam, RMSprop, Adagrad, Adadelta and NAdam.
    """
    return _add_scaled_params(weight_decay, name)


def add_decayed_weights(weight_decay: float = 0.0, *, name: str = "add_decayed_weights") -> Transform:
    """Weight decay, *decoupled*: ``u <- u + w theta`` added to the update rather than the gradient.

    Placed just before the learning-rate scale it gives ``theta <- theta - alpha (u + w theta)``, the
    lr-scaled decay of AdamW (Loshchilov & Hutter, 2019) and torch.optim.AdamW. Placed *after* the
    learning-rate scale it is :func:`decay_weights`, eq. (7.63).
    For plain SGD all three forms are the same trajectory (exercise 7-3); for Adam they are not.
    """
    return _add_scaled_params(weight_decay, name)


def decay_weights(weight_decay: float = 0.0, *, name: str = "decay_weights") -> Transform:
    """Weight decay as the chapter writes it, eq. (7.63): ``theta <- (1 - w) theta - alpha g``.

    Goes *after* the learning-rate scale (``u <- u - w theta``), so the decay is not multiplied by alpha:
    it equals :func:`add_l2` with ``lambda = w / alpha`` for SGD at a constant learning rate.
    """
    return _add_scaled_params(weight_decay, name, sign=-1.0)


# ------------------------------------------------------------------------------ the rest of torch.optim


def count_as_float(count: Any) -> Any:
    """A step counter as a float: a Python float, or a float64 tensor under torch.compile (``int64 - 1.5`` and
    ``int64 ** -0.5`` would give float32)."""
    return float(count) if F.is_number(count) else count.to(torch.float64)


def _check_numbers(owner: str, field: str, value: Any, n: int, what: str) -> tuple[float, ...]:
    """A tuple (or list) of ``n`` finite real numbers, e.g. Rprop's ``etas``; ``what`` names its entries."""
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise OptregValueError(f"{owner}: {field} must be a tuple of {n} numbers {what}, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
            raise OptregValueError(f"{owner}: {field} must be a tuple of {n} finite numbers {what}, got {value!r}")
    return tuple(float(v) for v in value)


class ScaleByRpropState(NamedTuple):
    prev: list[Tensor]  # the previous gradient, zero where its sign flipped
    step_size: list[Tensor]  # Delta, one step size per element


def scale_by_rprop(
    lr: float = 0.01,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    name: str = "scale_by_rprop",
) -> Transform:
    """Rprop (Riedmiller & Braun, 1993): a step size per element, driven by the sign of the gradient alone.

    A relative of delta-bar-delta (file 002, :func:`scale_by_delta_bar_delta`), but both changes are
    multiplicative and only the gradient's sign moves the parameter. With ``g'_{t-1}`` the stored gradient::

        Delta_t = min(eta_plus  Delta_{t-1}, Delta_max)   if g'_{t-1} g_t > 0   (same sign: accelerate)
        Delta_t = max(eta_minus Delta_{t-1}, Delta_min)   if g'_{t-1} g_t < 0   (sign flipped: overshot)
        Delta_t = Delta_{t-1}                             otherwise
        g'_t = 0 where the sign flipped, else g_t;    u_t = sign(g'_t) Delta_t

    Setting ``g'_t = 0`` after a flip skips that element's step and its next adaptation: the variant without
    weight-backtracking that Igel & Huesken (2000) call iRprop-, which torch.optim.Rprop implements.
    ``Delta_0 = lr``; later learning rates are not read (as in torch). ``etas = (eta_minus, eta_plus)`` with
    ``0 < eta_minus < 1 < eta_plus``, ``step_sizes = (Delta_min, Delta_max)``. Meant for full batches (the sign
    of a mini-batch gradient is noise), like delta-bar-delta. The alias flips the sign of ``u``.
    """
    lr = _check(_checks.check_nonneg, name, "lr", lr)
    eta_minus, eta_plus = _check_numbers(name, "etas", etas, 2, "(eta_minus, eta_plus)")
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise OptregValueError(f"{name}: etas must satisfy 0 < eta_minus < 1 < eta_plus, got {etas!r}")
    step_min, step_max = _check_numbers(name, "step_sizes", step_sizes, 2, "(min, max)")
    if not 0.0 <= step_min <= step_max:
        raise OptregValueError(f"{name}: step_sizes must satisfy 0 <= min <= max, got {step_sizes!r}")

    def init(params: Params) -> ScaleByRpropState:
        # a complex parameter is two real ones (as in torch): a step size for each part
        sizes = [torch.full_like(p, complex(lr, lr) if p.is_complex() else float(lr)) for p in params]
        return ScaleByRpropState(prev=F.zeros_like(params), step_size=sizes)

    def update(updates: Updates, state: ScaleByRpropState, params: Params | None = None):
        out = []
        for g, prev, step in zip(updates, state.prev, state.step_size):
            is_complex = g.is_complex()
            if is_complex:
                g, prev, step = torch.view_as_real(g), torch.view_as_real(prev), torch.view_as_real(step)
            factor = torch.mul(g, prev).sign_()
            flipped = factor < 0
            factor.masked_fill_(factor > 0, eta_plus).masked_fill_(flipped, eta_minus).masked_fill_(factor == 0, 1.0)
            step.mul_(factor).clamp_(step_min, step_max)
            g = g.masked_fill(flipped, 0.0)
            prev.copy_(g)
            u = g.sign_().mul_(step)
            out.append(torch.view_as_complex(u) if is_complex else u)
        return out, state

    return Transform(init, update, True)
