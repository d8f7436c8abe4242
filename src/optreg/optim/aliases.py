"""The chapter's optimizers, each a short chain of transforms that reads like its equation.

Every alias is a function of its hyperparameters returning a :class:`~optreg.optim.transforms.Transform`;
:class:`~optreg.optim.optimizer.Optimizer` calls it with each parameter group's values, so per-group
hyperparameters and torch's lr schedulers work. Names follow DESIGN.md: ``lr``, ``momentum`` (the chapter's
rho), ``beta`` (RMSprop / AdaDelta averages), ``beta1``, ``beta2``, ``eps`` (outside the root), ``eps_root``
(inside it), ``weight_decay``. Defaults follow the chapter; each docstring says how to reproduce torch.optim.
"""

from __future__ import annotations

from collections.abc import Callable

from optreg.errors import OptregValueError
from optreg.optim import _foreach as F
from optreg.optim import transforms as T
from optreg.optim.combine import chain
from optreg.optim.transforms import Transform

LR = float | Callable[[int], float]


def sgd(
    lr: LR = 0.01, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0, dampening: float = 0.0
) -> Transform:
    """Mini-batch SGD, eq. (7.3): ``theta <- theta - alpha g``, optionally with momentum (7.14) or Nesterov.

    ``weight_decay`` is coupled l2 (7.58). ``dampening`` scales the gradient in the momentum buffer,
    ``m_t = rho m_{t-1} + (1 - dampening) g_t``, except at the first step (``m_1 = g_1``, as torch does).
    Same as ``torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)`` with the same arguments.
    """
    name = "sgd"
    parts = [T.add_l2(weight_decay, name=name)]
    if nesterov and F.is_zero(momentum):
        raise OptregValueError(f"{name}: nesterov=True needs momentum in (0, 1), got momentum={momentum!r}")
    if not F.is_zero(momentum):
        parts.append(T.trace(momentum, nesterov=nesterov, dampening=dampening, name=name))
    parts.append(T.scale_by_learning_rate(lr, name=name))
    return chain(*parts)


def momentum(lr: LR = 0.01, momentum: float = 0.9, weight_decay: float = 0.0) -> Transform:
    """The momentum method, eq. (7.14): ``m_t = rho m_{t-1} + g_t``, ``theta <- theta - alpha m_t``.

    Same as ``torch.optim.SGD(lr, momentum=momentum)``; with a constant lr it is the chapter's
    ``dtheta_t = rho dtheta_{t-1} - alpha g_t``, an exponential moving average of ``-alpha/(1-rho) g`` (ex. 7-1).
    """
    return chain(
        T.add_l2(weight_decay, name="momentum"),
        T.trace(momentum, name="momentum"),
        T.scale_by_learning_rate(lr, name="momentum"),
    )


def nesterov(lr: LR = 0.01, momentum: float = 0.9, weight_decay: float = 0.0) -> Transform:
    """Nesterov accelerated gradient, eqs. (7.15)-(7.17), in Sutskever et al.'s form (torch SGD nesterov=True).

    The book evaluates the gradient at the look-ahead point ``theta + rho dtheta``; storing that point as the
    parameter turns the update into ``theta <- theta - alpha (g + rho m_t)`` with the gradient at the stored
    point, which is what this computes.
    """
    return chain(
        T.add_l2(weight_decay, name="nesterov"),
        T.trace(momentum, nesterov=True, name="nesterov"),
        T.scale_by_learning_rate(lr, name="nesterov"),
    )


def adagrad(
    lr: LR = 0.01,
    eps: float = 0.0,
    eps_root: float = 1e-10,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    lr_decay: float = 0.0,
) -> Transform:
    """AdaGrad, eqs. (7.8)-(7.9): ``theta <- theta - alpha_t / sqrt(G_t + eps) * g`` with ``G_0`` the
    ``initial_accumulator_value`` and ``alpha_t = alpha / (1 + (t - 1) lr_decay)`` (torch's inverse-time decay).

    torch.optim.Adagrad(lr, lr_decay, weight_decay, initial_accumulator_value, eps=1e-10) is
    ``adagrad(lr, eps=1e-10, eps_root=0, lr_decay=..., weight_decay=..., initial_accumulator_value=...)``.
    """
    return chain(
        T.add_l2(weight_decay, name="adagrad"),
        T.scale_by_adagrad(eps, eps_root, initial_accumulator_value, lr_decay, name="adagrad"),
        T.scale_by_learning_rate(lr, name="adagrad"),
    )


def rmsprop(
    lr: LR = 0.001,
    beta: float = 0.9,
    eps: float = 0.0,
    eps_root: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> Transform:
    """RMSprop, eqs. (7.10)-(7.11): ``G_t = beta G + (1-beta) g*g``, ``theta <- theta - alpha / sqrt(G_t + eps) g``.

    ``momentum > 0`` adds a trace after the scaling (as torch does). torch.optim.RMSprop(lr, alpha, eps) is
    ``rmsprop(lr, beta=alpha, eps=eps, eps_root=0)`` (torch's default alpha is 0.99, the chapter's beta 0.9).
    """
    parts = [
        T.add_l2(weight_decay, name="rmsprop"),
        T.scale_by_rms(beta, eps, eps_root, centered=centered, name="rmsprop"),
    ]
    if not F.is_zero(momentum):
        parts.append(T.trace(momentum, name="rmsprop"))
    parts.append(T.scale_by_learning_rate(lr, name="rmsprop"))
    return chain(*parts)


def adadelta(
    lr: LR = 1.0, beta: float = 0.9, eps_root: float = 1e-6, eps: float = 0.0, weight_decay: float = 0.0
) -> Transform:
    """AdaDelta, eqs. (7.12)-(7.13): ``dtheta_t = -sqrt(dX_{t-1} + eps) / sqrt(G_t + eps) g_t``.

    No learning rate in the chapter (``lr=1``). torch.optim.Adadelta(lr, rho, eps) is
    ``adadelta(lr, beta=rho, eps_root=eps)``.
    """
    return chain(
        T.add_l2(weight_decay, name="adadelta"),
        T.scale_by_adadelta(beta, eps_root, eps, name="adadelta"),
        T.scale_by_learning_rate(lr, name="adadelta"),
    )


def _with_weight_decay(name: str, core: Transform, lr: LR, weight_decay: float, decoupled: bool) -> Transform:
    """``core`` between its weight decay and the learning rate: coupled l2 before it (7.58), or AdamW's
    decoupled, lr-scaled decay after it, ``theta <- theta - alpha (u + w theta)`` (Loshchilov & Hutter, 2019)."""
    if decoupled:
        return chain(core, T.add_decayed_weights(weight_decay, name=name), T.scale_by_learning_rate(lr, name=name))
    return chain(T.add_l2(weight_decay, name=name), core, T.scale_by_learning_rate(lr, name=name))


def adam(
    lr: LR = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    decoupled_weight_decay: bool = False,
) -> Transform:
    """Adam, eqs. (7.18)-(7.22): momentum (7.18) + RMSprop (7.19), bias-corrected (7.20-7.21).

    ``weight_decay`` is coupled l2, as in torch.optim.Adam, which this reproduces with the same arguments;
    ``decoupled_weight_decay=True`` makes it :func:`adamw` (torch's Adam has the same switch; exercise 7-3:
    for Adam the two differ). ``amsgrad=True``: AMSGrad (Reddi et al., 2018), the running maximum of the second
    moment in the denominator (see :func:`~optreg.optim.transforms.scale_by_adam`), torch's ``amsgrad``.
    """
    core = T.scale_by_adam(beta1, beta2, eps, eps_root, amsgrad=amsgrad, name="adam")
    return _with_weight_decay("adam", core, lr, weight_decay, decoupled_weight_decay)


def nadam(
    lr: LR = 0.002,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
) -> Transform:
    """Nadam (Dozat, 2016): Adam with Nesterov momentum (section 7.2.3.3).

    Reproduces torch.optim.NAdam(lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay) with the
    same arguments; ``decoupled_weight_decay=True`` decays as AdamW does (torch's NAdamW).
    """
    core = T.scale_by_adam(beta1, beta2, eps, eps_root, nesterov=True, momentum_decay=momentum_decay, name="nadam")
    return _with_weight_decay("nadam", core, lr, weight_decay, decoupled_weight_decay)


def adamw(
    lr: LR = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.01,
    amsgrad: bool = False,
) -> Transform:
    """AdamW (Loshchilov & Hutter, 2019): Adam with decoupled, lr-scaled weight decay.

    ``theta <- theta - alpha (M_hat / (sqrt(G_hat) + eps) + w theta)``; reproduces torch.optim.AdamW (``amsgrad``
    included) with the same arguments.
    """
    core = T.scale_by_adam(beta1, beta2, eps, eps_root, amsgrad=amsgrad, name="adamw")
    return _with_weight_decay("adamw", core, lr, weight_decay, True)


def adamax(
    lr: LR = 0.002, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0
) -> Transform:
    """AdaMax (Kingma & Ba, 2015, section 7.1): Adam with the infinity norm, ``u_t = max(b2 u_{t-1}, |g_t|)``,
    ``theta <- theta - alpha / (1 - b1^t) * M_t / u_t``.

    ``weight_decay`` is coupled l2. Reproduces torch.optim.Adamax(lr, betas, eps, weight_decay) with the same
    arguments (torch's epsilon sits inside the maximum: ``max(b2 u, |g| + eps)``).
    """
    return _with_weight_decay("adamax", T.scale_by_adamax(beta1, beta2, eps, name="adamax"), lr, weight_decay, False)


def radam(
    lr: LR = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
) -> Transform:
    """RAdam (Liu et al., 2020): Adam with the variance of its adaptive learning rate rectified, plain momentum
    SGD for the first steps (see :func:`~optreg.optim.transforms.scale_by_radam`).

    Reproduces torch.optim.RAdam(lr, betas, eps, weight_decay, decoupled_weight_decay) with the same arguments.
    """
    core = T.scale_by_radam(beta1, beta2, eps, name="radam")
    return _with_weight_decay("radam", core, lr, weight_decay, decoupled_weight_decay)


def delta_bar_delta(
    lr: float = 0.01, increase: float = 1e-4, decrease: float = 0.1, beta: float = 0.7
) -> Transform:
    """Delta-bar-delta (Jacobs, 1988; file 002): per-parameter rates that grow while the gradient keeps its
    sign and shrink when it flips. ``lr`` is every rate's initial value. Full-batch training only."""
    return chain(
        T.scale_by_delta_bar_delta(lr, increase, decrease, beta, name="delta_bar_delta"),
        T.scale(-1.0, name="delta_bar_delta"),
    )
