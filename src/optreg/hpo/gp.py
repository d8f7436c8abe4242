"""Gaussian-process regression and acquisition functions for Bayesian optimization (7.6.3), in torch.

Pure tensor functions (float64), shapes in the docstrings, in the style of Optuna's ``optuna/_gp``; the
sampler that uses them is :class:`optreg.hpo.bayes.GPSampler`. Inputs live in the unit cube (see
:class:`optreg.hpo.space.Encoding`: log parameters already warped), targets are standardized by the
caller. The model (Rasmussen & Williams 2006, ch. 2 and 5):

- kernel: ``k(x, x') = s * matern52(r)``, ``r^2 = sum_d (x_d - x'_d)^2 / l_d^2`` (one length scale per
  dimension, ARD), ``matern52(r) = (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r)``;
- observations ``y = f(x) + eps``, ``eps ~ N(0, noise)``;
- posterior (R&W eqs. 2.25-2.26) through the Cholesky factor ``L L^T = K + noise I``
  (``torch.linalg.cholesky_ex``, with a growing jitter when it fails), never an explicit inverse;
- hyperparameters ``(l, s, noise)`` fitted by maximizing the log marginal likelihood (R&W eq. 2.30)
  plus weak priors (:func:`log_prior`), with L-BFGS-B over their logarithms.

Acquisitions (for minimization, ``best`` the smallest target seen): expected improvement, eq. (7.57),
as its logarithm (:func:`log_ei`, Ament et al. 2023, "Unexpected improvements to expected improvement"),
so that it neither vanishes nor loses its gradient far from the incumbent; probability of improvement
(:func:`log_pi`); and the GP upper confidence bound of the negated target (:func:`ucb`, Srinivas et al. 2010).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from optreg.hpo._lbfgsb import batched_lbfgsb

__all__ = [
    "GPParams",
    "Posterior",
    "condition",
    "default_params",
    "fit_params",
    "kernel",
    "log_ei",
    "log_ei_with_grad",
    "log_h",
    "log_marginal_likelihood",
    "log_pi",
    "log_prior",
    "matern52",
    "objective_with_grad",
    "pack",
    "predict",
    "predict_with_grad",
    "ucb",
    "unpack",
]

_SQRT5 = math.sqrt(5.0)
_LOG_2PI = math.log(2 * math.pi)
#: Bounds of the fitted hyperparameters (on the unit cube, standardized targets).
LENGTHSCALE_BOUNDS = (1e-2, 1e2)
OUTPUTSCALE_BOUNDS = (1e-2, 1e2)
NOISE_BOUNDS = (1e-7, 1.0)


class GPParams(NamedTuple):
    """Kernel hyperparameters: ``lengthscales`` ``(D,)``, ``outputscale`` ``()`` and ``noise`` ``()``."""

    lengthscales: Tensor
    outputscale: Tensor
    noise: Tensor


class _Matern52(torch.autograd.Function):
    """``matern52`` of the squared distance ``d2``, with the derivative ``-5/6 (1 + sqrt5 r) exp(-sqrt5 r)``
    written out: it is finite at ``d2 = 0``, where differentiating through ``sqrt`` is not."""

    @staticmethod
    def forward(ctx, d2: Tensor) -> Tensor:  # type: ignore[override]
        s5r = _SQRT5 * d2.clamp_min(0).sqrt()
        e = torch.exp(-s5r)
        ctx.save_for_backward(s5r, e)
        return (1 + s5r + (5.0 / 3.0) * d2) * e

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        s5r, e = ctx.saved_tensors
        return grad * (-5.0 / 6.0) * (1 + s5r) * e


def matern52(x1: Tensor, x2: Tensor, lengthscales: Tensor) -> Tensor:
    """The Matern-5/2 correlation of ``x1`` ``(..., n, D)`` and ``x2`` ``(..., m, D)``, scaled by
    ``lengthscales`` ``(D,)``: ``(..., n, m)``."""
    a, b = x1 / lengthscales, x2 / lengthscales
    # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b: one matrix product instead of an (n, m, D) difference (six
    # times faster for the 2048 raw points a suggestion scores); the rounding can make it -1e-16, hence the clamp
    d2 = a.square().sum(-1).unsqueeze(-1) + b.square().sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return _Matern52.apply(d2.clamp_min(0))


def kernel(x1: Tensor, x2: Tensor, params: GPParams) -> Tensor:
    """``s * matern52(x1, x2)``: ``(..., n, D), (..., m, D) -> (..., n, m)``."""
    return params.outputscale * matern52(x1, x2, params.lengthscales)


def _cholesky(a: Tensor) -> Tensor:
    """The lower Cholesky factor of the SPD matrix ``a`` ``(n, n)``; a jitter ``1e-10 * mean(diag)``,
    growing tenfold, is added to the diagonal while the factorization fails."""
    factor, info = torch.linalg.cholesky_ex(a)
    jitter = 1e-10 * a.diagonal().mean().detach()
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    while info.item() != 0:
        if jitter > 1e2:
            raise torch.linalg.LinAlgError("hpo.gp: the kernel matrix is not positive definite")
        factor, info = torch.linalg.cholesky_ex(a + jitter * eye)
        jitter = jitter * 10
    return factor


class Posterior(NamedTuple):
    """A GP conditioned on ``x`` ``(n, D)``: ``chol`` ``(n, n)`` of ``K + noise I`` and
    ``alpha = (K + noise I)^-1 y`` ``(n,)``."""

    x: Tensor
    params: GPParams
    chol: Tensor
    alpha: Tensor


def condition(x: Tensor, y: Tensor, params: GPParams) -> Posterior:
    """The posterior given observations ``x`` ``(n, D)``, ``y`` ``(n,)``."""
    k = kernel(x, x, params) + params.noise * torch.eye(x.shape[0], dtype=x.dtype)
    chol = _cholesky(k)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
    return Posterior(x, params, chol, alpha)


def predict(post: Posterior, x: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean and variance of the latent ``f`` at ``x`` ``(..., m, D)``: two ``(..., m)`` tensors.

    ``mean = k_*^T alpha``, ``var = s - ||L^-1 k_*||^2`` (R&W eqs. 2.25-2.26), clamped at ``1e-12 s``.
    """
    ks = kernel(x, post.x, post.params)  # (..., m, n)
    mean = ks @ post.alpha
    chol = post.chol.expand(*ks.shape[:-2], *post.chol.shape)
    v = torch.linalg.solve_triangular(chol, ks.transpose(-1, -2), upper=False)  # (..., n, m)
    var = post.params.outputscale - v.square().sum(-2)
    return mean, var.clamp_min(1e-12 * post.params.outputscale)


def predict_with_grad(post: Posterior, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`predict` at ``x`` ``(m, D)`` and the gradients of the mean and the variance with respect to
    ``x``, in closed form (no autograd graph through the kernel): ``(m,), (m,), (m, D), (m, D)``.

    With ``k_j = s matern52(r_j^2)``, ``r_j^2 = sum_d (x_d - X_jd)^2 / l_d^2``:
    ``dk_j/dx_d = s matern52'(r_j^2) 2 (x_d - X_jd) / l_d^2``, ``matern52'(r^2) = -5/6 (1 + sqrt5 r)
    exp(-sqrt5 r)``; then ``d mean/dx = sum_j alpha_j dk_j/dx`` and, from ``var = s - k^T (K + noise
    I)^-1 k``, ``d var/dx = -2 sum_j [(K + noise I)^-1 k]_j dk_j/dx`` (zero where the variance is clamped).
    """
    params = post.params
    diff = (x.unsqueeze(-2) - post.x.unsqueeze(-3)) / params.lengthscales  # (m, n, D), scaled
    d2 = diff.square().sum(-1)
    s5r = _SQRT5 * d2.clamp_min(0).sqrt()
    e = torch.exp(-s5r)
    ks = params.outputscale * (1 + s5r + (5.0 / 3.0) * d2) * e  # (m, n)
    dk_dd2 = params.outputscale * (-5.0 / 6.0) * (1 + s5r) * e  # d k / d r^2
    dk = (2 * dk_dd2).unsqueeze(-1) * diff / params.lengthscales  # (m, n, D): d k_j / d x
    mean = ks @ post.alpha
    v = torch.linalg.solve_triangular(post.chol, ks.T, upper=False)  # (n, m)
    var = params.outputscale - v.square().sum(0)
    kinv_k = torch.linalg.solve_triangular(post.chol.T, v, upper=True).T  # (m, n)
    dmean = torch.einsum("mnd,n->md", dk, post.alpha)
    dvar = -2 * torch.einsum("mnd,mn->md", dk, kinv_k)
    floor = 1e-12 * params.outputscale
    clamped = var < floor
    return mean, var.clamp_min(floor), dmean, torch.where(clamped.unsqueeze(-1), 0.0, dvar)


def log_marginal_likelihood(x: Tensor, y: Tensor, params: GPParams) -> Tensor:
    """``log p(y | x) = -1/2 y^T alpha - sum_i log L_ii - n/2 log 2 pi`` (R&W eq. 2.30): a scalar."""
    post = condition(x, y, params)
    n = x.shape[0]
    return -0.5 * (y @ post.alpha) - post.chol.diagonal().log().sum() - 0.5 * n * _LOG_2PI


def log_prior(params: GPParams) -> Tensor:
    """Weak priors that keep the fit sane with few points (the ones of Optuna's GPSampler): on each inverse
    squared length scale ``lam = 1 / l^2`` the density ``exp(-(0.1 / lam + 0.1 lam))``, on the output
    scale Gamma(2, 1), on the noise Gamma(1.1, 30). A scalar (up to a constant)."""
    lam = params.lengthscales.pow(-2)
    s, noise = params.outputscale, params.noise
    return -(0.1 / lam + 0.1 * lam).sum() + (s.log() - s) + (0.1 * noise.log() - 30.0 * noise)


def _unpack(raw: Tensor, d: int) -> GPParams:
    return GPParams(raw[:d].exp(), raw[d].exp(), raw[d + 1].exp())


def pack(params: GPParams) -> list[float]:
    """``params`` as the list ``[log l_1, ..., log l_D, log s, log noise]`` (JSON-able, for a warm start)."""
    return [*params.lengthscales.log().tolist(), params.outputscale.log().item(), params.noise.log().item()]


def unpack(raw: list[float]) -> GPParams:
    """The inverse of :func:`pack`."""
    t = torch.tensor(raw, dtype=torch.float64)
    return _unpack(t, len(raw) - 2)


def default_params(d: int) -> GPParams:
    """``l = 1`` in each of ``d`` dimensions, ``s = 1``, ``noise = 1e-2``: the default start of :func:`fit_params`."""
    one = torch.tensor(1.0, dtype=torch.float64)
    return GPParams(torch.ones(d, dtype=torch.float64), one, torch.tensor(1e-2, dtype=torch.float64))


def objective_with_grad(sq: Tensor, y: Tensor, raw: Tensor, *, prior: bool = True) -> tuple[float, Tensor]:
    """``log_marginal_likelihood (+ log_prior)`` at the packed ``raw`` ``(D + 2,)`` (see :func:`pack`) and its
    gradient with respect to ``raw``, in closed form (no autograd graph: the fit calls it some 20 times a
    suggestion, and the graph of the Cholesky factor costs more than the formulas).

    ``sq`` ``(n, n, D)`` holds ``(x_id - x_jd)^2``. With ``K = s M + noise I``, ``M = matern52(r^2)``,
    ``alpha = K^-1 y`` and ``W = alpha alpha^T - K^-1`` (R&W eq. 5.9: ``d log p / d theta = 1/2 tr(W dK/d theta)``;
    ``K^-1`` is formed from the Cholesky factor, as eq. 5.9 needs it whole):
    ``d/d log s = s/2 sum(W * M)``, ``d/d log noise = noise/2 tr W``, and, as
    ``d r^2 / d log l_d = -2 (x_id - x_jd)^2 / l_d^2``, ``d/d log l_d = -s sum_ij W_ij M'_ij sq_ijd / l_d^2`` with
    ``M'(r^2) = -5/6 (1 + sqrt5 r) exp(-sqrt5 r)``. The priors' (:func:`log_prior`) derivatives:
    ``-0.2 (l^2 - l^-2)``, ``1 - s`` and ``0.1 - 30 noise``.
    """
    d = sq.shape[-1]
    ls2 = (2 * raw[:d]).exp()
    s, noise = raw[d].exp(), raw[d + 1].exp()
    d2 = (sq / ls2).sum(-1)
    s5r = _SQRT5 * d2.sqrt()
    e = torch.exp(-s5r)
    m = (1 + s5r + (5.0 / 3.0) * d2) * e
    n = y.shape[0]
    k = s * m
    k.diagonal().add_(noise)
    chol = _cholesky(k)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
    value = -0.5 * (y @ alpha) - chol.diagonal().log().sum() - 0.5 * n * _LOG_2PI
    w = torch.outer(alpha, alpha) - torch.cholesky_inverse(chol)
    dm = (-5.0 / 6.0) * (1 + s5r) * e
    grad = torch.empty(d + 2, dtype=raw.dtype)
    grad[:d] = -s * torch.einsum("ij,ijd->d", w * dm, sq) / ls2
    grad[d] = 0.5 * s * (w * m).sum()
    grad[d + 1] = 0.5 * noise * w.diagonal().sum()
    if prior:
        value = value - 0.1 * (ls2 + 1 / ls2).sum() + (raw[d] - s) + (0.1 * raw[d + 1] - 30.0 * noise)
        grad[:d] -= 0.2 * (ls2 - 1 / ls2)
        grad[d] += 1 - s
        grad[d + 1] += 0.1 - 30.0 * noise
    return value.item(), grad


def fit_params(x: Tensor, y: Tensor, *, prior: bool = True, init: GPParams | None = None) -> GPParams:
    """Hyperparameters maximizing ``log_marginal_likelihood (+ log_prior)`` for ``x`` ``(n, D)``, ``y`` ``(n,)``.

    L-BFGS-B (SciPy's, through :func:`optreg.hpo._lbfgsb.batched_lbfgsb`) over ``(log l, log s, log noise)``
    within the ``*_BOUNDS``, with the gradient in closed form (:func:`objective_with_grad`), from
    :func:`default_params`; with ``init`` (a warm start, e.g. the previous fit), from ``init``, and again from
    the default start if that one is better than where ``init`` led.
    """
    d = x.shape[1]
    bounds = np.log(np.array([LENGTHSCALE_BOUNDS] * d + [OUTPUTSCALE_BOUNDS, NOISE_BOUNDS], dtype=float))
    sq = (x.unsqueeze(-2) - x.unsqueeze(-3)).square()  # (n, n, D): what the length scales divide

    def loss(rows: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # one run: rows == [0]
        value, grad = objective_with_grad(sq, y, torch.from_numpy(raw[0]), prior=prior)
        return np.array([-value]), -grad.numpy()[None]

    def run(start: GPParams) -> tuple[np.ndarray, float]:
        raw, value = batched_lbfgsb(loss, np.array([pack(start)]), bounds, maxiter=15000, gtol=1e-4, ftol=1e-6)
        return raw[0], float(value[0])

    raw, value = run(default_params(d) if init is None else init)
    if init is not None:
        default = np.clip(np.array([pack(default_params(d))]), bounds[:, 0], bounds[:, 1])
        if loss(np.zeros(1, dtype=int), default)[0][0] < value:
            raw, value = run(default_params(d))
    return _unpack(torch.tensor(raw, dtype=x.dtype), d)


def log_h(z: Tensor) -> Tensor:
    """``log(phi(z) + z Phi(z))``, accurate for every ``z`` (Ament et al. 2023, eq. 9).

    ``z > -1``: directly. ``-1/sqrt(eps) < z <= -1``: ``-z^2/2 - log(2 pi)/2 + log1mexp(log(erfcx(-z/sqrt2)
    |z|) + log(pi/2)/2)``. Below: the asymptote ``-z^2/2 - log(2 pi)/2 - 2 log|z|``. Each branch gets its
    input clamped into its own range, so the unused branches give no NaN gradients.
    """
    tiny = 1.0 / math.sqrt(torch.finfo(z.dtype).eps)
    z_hi = z.clamp_min(-1.0)
    direct = torch.log(torch.exp(-0.5 * z_hi.square()) / math.sqrt(2 * math.pi) + z_hi * torch.special.ndtr(z_hi))
    z_mid = z.clamp(-tiny, -1.0)
    w = torch.log(torch.special.erfcx(-z_mid / math.sqrt(2)) * -z_mid) + 0.5 * math.log(math.pi / 2)
    w = w.clamp_max(-1e-300)
    log1mexp = torch.where(w > -math.log(2), torch.log(-torch.expm1(w)), torch.log1p(-torch.exp(w)))
    mid = -0.5 * z_mid.square() - 0.5 * _LOG_2PI + log1mexp
    z_lo = z.clamp_max(-tiny)
    low = -0.5 * z_lo.square() - 0.5 * _LOG_2PI - 2 * torch.log(-z_lo)
    return torch.where(z > -1.0, direct, torch.where(z > -tiny, mid, low))


def log_ei(mean: Tensor, var: Tensor, best: Tensor | float) -> Tensor:
    """``log EI`` for minimization, eq. (7.57): ``EI = int max(y* - y, 0) N(y; mean, var) dy
    = sigma h((y* - mean) / sigma)``, so ``log EI = log sigma + log_h(z)``. Same shape as ``mean``."""
    sigma = var.sqrt()
    return sigma.log() + log_h((best - mean) / sigma)


def log_ei_with_grad(mean: Tensor, var: Tensor, best: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`log_ei` and its partial derivatives with respect to ``mean`` and ``var``, in closed form.

    With ``h'(z) = Phi(z)`` and ``r = Phi(z) / h(z) = exp(log Phi(z) - log_h(z))`` (computed in logs, so it
    stays finite where both underflow): ``d/d mean = -r / sigma``, ``d/d var = (1 - z r) / (2 var)``.
    """
    sigma = var.sqrt()
    z = (best - mean) / sigma
    lh = log_h(z)
    r = torch.exp(torch.special.log_ndtr(z) - lh)
    return sigma.log() + lh, -r / sigma, (1 - z * r) / (2 * var)


def log_pi(mean: Tensor, var: Tensor, best: Tensor | float) -> Tensor:
    """``log P(f(x) < y*) = log Phi((y* - mean) / sigma)`` (probability of improvement)."""
    return torch.special.log_ndtr((best - mean) / var.sqrt())


def ucb(mean: Tensor, var: Tensor, beta: float) -> Tensor:
    """GP-UCB of the negated target (minimization): ``-mean + sqrt(beta) sigma``."""
    return -mean + math.sqrt(beta) * var.sqrt()
