"""The chapter's optimizers, each a short chain of transforms that reads like its equation.

Every alias is a function of its hyperparameters returning a :class:`~optreg.optim.transforms.Transform`;
:class:`~optreg.optim.optimizer.Optimizer` calls it with each parameter group's values, so per-group
hyperparameters and torch's lr schedulers work. Names follow DESIGN.md: ``lr``, ``momentum`` (the chapter's
rho), ``beta`` (RMSprop / AdaDelta averages), ``beta1``, ``beta2``, ``eps`` (outside the root), ``eps_root``
(inside it), ``weight_decay``. Defaults follow the chapter; each docstring says how to reproduce torch.optim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optreg import _checks
from optreg.errors import OptregValueError
from optreg.optim import _foreach as F
from optreg.optim import averaging, matrix
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


# ---- the rest of torch.optim


def rprop(
    lr: float = 0.01, etas: tuple[float, float] = (0.5, 1.2), step_sizes: tuple[float, float] = (1e-6, 50)
) -> Transform:
    """Rprop (Riedmiller & Braun, 1993), torch.optim.Rprop with the same arguments: a step size per element,
    ``theta <- theta - Delta_t sign(g_t)``, grown by ``eta_plus`` while the gradient keeps its sign and shrunk by
    ``eta_minus`` when it flips (:func:`~optreg.optim.transforms.scale_by_rprop`). ``lr`` is the initial step size.
    Full-batch training, like its relative delta-bar-delta (file 002)."""
    return chain(T.scale_by_rprop(lr, etas, step_sizes, name="rprop"), T.scale(-1.0, name="rprop"))


def asgd(
    lr: float = 0.01, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0
) -> Transform:
    """Averaged SGD (Polyak & Juditsky, 1992; Bottou, 2012), torch.optim.ASGD with the same arguments.

    ``g <- g + w theta`` (coupled ``weight_decay``, eq. 7.58), ``theta_t = theta_{t-1} (1 - lambd eta_t) - eta_t g``
    with ``eta_t = lr / (1 + lambd lr (t-1))^alpha`` (:func:`~optreg.optim.averaging.scale_by_asgd`), and the
    Polyak average of file 002 over the iterates from ``theta_{t0+2}`` on,
    ``ax_t = ax_{t-1} + (theta_t - ax_{t-1}) / max(1, t-1-t0)`` (torch's ``mu``;
    :func:`~optreg.optim.averaging.polyak_average` with ``start = t0 + 1``). The default ``t0 = 1e6`` averages
    nothing in a short run (``ax = theta``). Evaluate the average with :func:`optreg.optim.use_averaged`.
    """
    name = "asgd"
    t0 = _checks.check_nonneg(name, "t0", t0)
    step = chain(T.add_l2(weight_decay, name=name), averaging.scale_by_asgd(lr, lambd, alpha, name=name))
    return averaging.polyak_average(step, start=t0 + 1.0, name=name)


def _product(lr: Any, weight_decay: Any) -> Any:
    """``lr * weight_decay``, a Python zero when either is one (so no decay is compiled in)."""
    return 0.0 if F.is_zero(lr) or F.is_zero(weight_decay) else lr * weight_decay


def adafactor(
    lr: float = 0.01,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
) -> Transform:
    """Adafactor (Shazeer & Stern, 2018) in torch.optim.Adafactor's variant, which it reproduces with the same
    arguments (torch's names; ``eps = (eps1, eps2)`` stays a pair, ``eps1=None`` the dtype's machine epsilon)::

        U_t = G_t / max(sqrt(V_t), eps1)              factored second moment (matrix.scale_by_factored_rms)
        U_t <- U_t / max(1, RMS(U_t) / d)             update clipping (matrix.clip_by_block_rms)
        alpha_t = max(eps2, RMS(theta_{t-1})) rho_t,  rho_t = min(lr, 1/sqrt(t))   relative step size
        theta_t = theta_{t-1} - lr w theta_{t-1} - alpha_t U_t

    Weight decay is decoupled and scaled by ``lr`` (not by ``alpha_t``), as in torch. There is no first moment
    (the paper's beta1 = 0): the state of an n x m matrix is n + m numbers.
    """
    name = "adafactor"
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise OptregValueError(f"{name}: eps must be a pair (eps1 or None, eps2), got {eps!r}")
    eps1, eps2 = eps
    if eps1 is not None:
        _checks.check_nonneg(name, "eps[0]", eps1)
    _checks.check_nonneg(name, "eps[1]", eps2)
    lr = T._check(_checks.check_nonneg, name, "lr", lr)
    weight_decay = T._check(_checks.check_nonneg, name, "weight_decay", weight_decay)
    return chain(
        matrix.scale_by_factored_rms(beta2_decay, eps1, name=name),
        matrix.clip_by_block_rms(d, name=name),
        matrix.scale_by_param_block_rms(eps2, name=name),
        matrix.scale_by_relative_step(lr, name=name),
        T.decay_weights(_product(lr, weight_decay), name=name),
    )


def muon(
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> Transform:
    """Muon (Jordan et al., 2024, "Muon: an optimizer for hidden layers"): momentum, orthogonalized.

    For each weight matrix::

        B_t = mu B_{t-1} + (1 - mu) g_t;   B~_t = (1 - mu) g_t + mu B_t  (nesterov)  or  B_t
        O_t = NS(B~_t) ~ U V^T  where B~_t = U S V^T    (Newton-Schulz, ns_steps, in bfloat16)
        theta_t = (1 - lr w) theta_{t-1} - lr r(shape) O_t

    Every singular value of the step is about 1: it moves all directions of the matrix alike, however
    ill-conditioned the gradient. Decoupled, lr-scaled weight decay (default 0.1) and ``r(shape)``
    (``adjust_lr_fn``) as in torch.optim.Muon, which this reproduces with the same arguments. 2-D parameters only,
    refused at the first step (see :func:`~optreg.optim.matrix.orthogonalize`): give biases and embeddings to
    another optimizer, e.g. adamw.
    """
    name = "muon"
    lr = T._check(_checks.check_nonneg, name, "lr", lr)
    weight_decay = T._check(_checks.check_nonneg, name, "weight_decay", weight_decay)
    if not isinstance(nesterov, bool):
        raise OptregValueError(f"{name}: nesterov must be True or False, got {nesterov!r}")
    return chain(
        matrix.ema_momentum(momentum, nesterov=nesterov, name=name),
        matrix.orthogonalize(ns_coefficients, ns_steps, eps, name=name),
        matrix.scale_by_shape(adjust_lr_fn, name=name),
        T.scale_by_learning_rate(lr, name=name),
        T.decay_weights(_product(lr, weight_decay), name=name),
    )
