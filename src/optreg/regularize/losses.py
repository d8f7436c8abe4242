"""Losses that regularize through the targets: label smoothing (section 7.7.6, exercise 7-5), knowledge
distillation (Hinton et al., 2015) and FitNets hints (Romero et al., 2015; file 002).

Shapes: ``logits`` are ``(N, K)`` or ``(N, K, d1, ...)`` with the class dimension 1 (as
:func:`torch.nn.functional.cross_entropy`), ``target`` holds class indices ``(N,)`` / ``(N, d1, ...)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optreg._checks import check_choice, check_int, check_positive, check_range
from optreg.errors import OptregTypeError, OptregValueError

__all__ = ["distillation_loss", "hint_loss", "hint_regressor", "label_smoothing_cross_entropy", "smooth_labels"]

FORMS = ("chapter", "uniform")
REDUCTIONS = ("mean", "sum", "none")


def _check_eps(owner: str, eps: float) -> float:
    return check_range(owner, "eps", eps, 0.0, 1.0, high_open=True)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def smooth_labels(target: Tensor, num_classes: int, eps: float, form: str = "chapter") -> Tensor:
    """The smoothed target distributions, shape ``target.shape + (num_classes,)``.

    ``form="chapter"`` (section 7.7.6): ``1 - eps`` on the true class and ``eps / (K - 1)`` on each other class.
    ``form="uniform"`` (Szegedy et al., 2016; torch's ``label_smoothing``): ``(1 - eps) onehot + eps / K``, i.e.
    ``1 - eps + eps / K`` on the true class and ``eps / K`` elsewhere. Each row sums to 1.
    """
    owner = "smooth_labels"
    eps = _check_eps(owner, eps)
    check_choice(owner, "form", form, FORMS)
    k = check_int(owner, "num_classes", num_classes, 2)
    onehot = F.one_hot(target, k).to(torch.get_default_dtype())
    if form == "uniform":
        return onehot * (1.0 - eps) + eps / k
    return onehot * (1.0 - eps) + (1.0 - onehot) * (eps / (k - 1))


def label_smoothing_cross_entropy(
    logits: Tensor, target: Tensor, eps: float, form: str = "chapter", *, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy against label-smoothed targets, ``-sum_k y~_k log softmax(z)_k`` (section 7.7.6).

    ``form="chapter"``: the chapter's soft target ``y~ = [eps/(K-1), ..., 1 - eps, ..., eps/(K-1)]``;
    ``form="uniform"``: ``y~ = (1 - eps) y + eps / K`` (Szegedy et al., 2016), which is
    ``F.cross_entropy(logits, target, label_smoothing=eps)`` and is computed by it. The chapter's form with
    ``eps`` is the uniform form with ``eps * K / (K - 1)`` (for ``eps <= (K - 1) / K``); it is computed here
    directly as ``-((1 - eps) log p_y + eps / (K - 1) sum_{k != y} log p_k)``. ``eps`` is in ``[0, 1)``;
    ``eps = 0`` is the plain cross-entropy. ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """
    owner = "label_smoothing_cross_entropy"
    eps = _check_eps(owner, eps)
    check_choice(owner, "form", form, FORMS)
    check_choice(owner, "reduction", reduction, REDUCTIONS)
    if logits.ndim < 2:
        raise OptregValueError(f"{owner}: logits must be (N, K, ...), got shape {tuple(logits.shape)}")
    if form == "uniform":
        return F.cross_entropy(logits, target, label_smoothing=eps, reduction=reduction)
    k = logits.shape[1]
    if k < 2:
        raise OptregValueError(f"{owner}: the chapter's form needs K >= 2 classes, got {k}")
    logp = F.log_softmax(logits, dim=1)
    true = logp.gather(1, target.unsqueeze(1)).squeeze(1)
    others = logp.sum(1) - true
    return _reduce(-((1.0 - eps) * true + (eps / (k - 1)) * others), reduction)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None,
    T: float = 4.0,
    alpha: float = 0.9,
) -> Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean, 2015; section 7.7.6)::

        alpha * T^2 * KL(softmax(v / T) || softmax(z / T)) + (1 - alpha) * CE(z, target)

    with ``z`` the student's and ``v`` the teacher's logits, the KL divergence averaged over the batch (the soft
    part's cross-entropy ``-sum q log p`` minus the teacher's entropy, a constant: same gradient). The soft
    part's gradient with respect to ``z_i`` is ``T (p_i - q_i)`` per example, which for ``T`` large against the
    logits and zero-mean logits is ``(z_i - v_i) / K``: the ``T^2`` factor keeps it independent of ``T`` (Hinton
    et al., sec. 2.1), so ``T`` can be tuned without re-tuning ``alpha``. ``alpha`` in ``[0, 1]`` weights the
    soft part; ``target=None`` gives the soft part alone (``T^2 KL``). The teacher is not differentiated
    (its logits are detached). ``T > 0``.
    """
    owner = "distillation_loss"
    T = check_positive(owner, "T", T)
    alpha = check_range(owner, "alpha", alpha, 0.0, 1.0)
    if student_logits.shape != teacher_logits.shape:
        raise OptregValueError(
            f"{owner}: student and teacher logits must have the same shape, got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    log_p = F.log_softmax(student_logits / T, dim=1)
    log_q = F.log_softmax(teacher_logits.detach() / T, dim=1)
    soft = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * (T * T)
    if target is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, target)


def hint_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    projection: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """FitNets hint loss (Romero et al., 2015, eq. 3; file 002): ``1/2 ||u_h(x) - r(v_g(x))||^2``.

    The student's guided layer ``v_g`` regresses the teacher's hint layer ``u_h`` through a learned regressor
    ``r`` (``projection``, e.g. from :func:`hint_regressor`; ``None``: the identity, the shapes must then
    match). The squared distance is summed over the features and averaged over the batch. The teacher's
    features are detached (the teacher is fixed); ``projection``'s parameters and the student's get gradients.
    """
    owner = "hint_loss"
    if projection is not None and not callable(projection):
        raise OptregTypeError(f"{owner}: projection must be callable (a module), got {projection!r}")
    guided = student_features if projection is None else projection(student_features)
    hint = teacher_features.detach()
    if guided.shape != hint.shape:
        raise OptregValueError(
            f"{owner}: the projected student features must have the teacher's shape {tuple(hint.shape)}, "
            f"got {tuple(guided.shape)}"
        )
    return 0.5 * (guided - hint).square().reshape(guided.shape[0], -1).sum(1).mean()


def hint_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """The FitNets regressor from a student's feature shape to a teacher's (per example, batch dim left out).

    Vectors ``(d_s,) -> (d_t,)``: a ``Linear``. Maps ``(C_s, H_s, W_s) -> (C_t, H_t, W_t)``: a convolution with
    kernel ``(H_s - H_t + 1, W_s - W_t + 1)``, which is how Romero et al. (sec. 2.2) keep the regressor small
    (``H_s >= H_t`` and ``W_s >= W_t``); ``(C, L)`` maps get the 1-d analogue.
    """
    owner = "hint_regressor"
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t) or len(s) not in (1, 2, 3):
        raise OptregValueError(
            f"{owner}: shapes must be (d,), (C, L) or (C, H, W) of the same kind, got {s} and {t}"
        )
    if len(s) == 1:
        return nn.Linear(s[0], t[0])
    kernel = tuple(a - b + 1 for a, b in zip(s[1:], t[1:]))
    if min(kernel) < 1:
        raise OptregValueError(f"{owner}: the student's map {s[1:]} must be at least the teacher's {t[1:]}")
    conv = nn.Conv1d if len(s) == 2 else nn.Conv2d
    return conv(s[0], t[0], kernel)
