r"""Loss landscapes, sharpness and the exploding-gradient cliff (sections 7.1 and 7.2.3.4, figures 7.2 and 7.5).

- :func:`interpolate`: the loss along :math:`(1 - \alpha)\theta_a + \alpha\theta_b` (Goodfellow et al., 2015).
- :func:`filter_normalized_directions` and :func:`plane`: the loss on a 2-D plane
  :math:`\theta^* + \alpha d_1 + \beta d_2` through the trained point along random directions rescaled filter by
  filter, :math:`d_{i} \leftarrow d_{i} \lVert\theta_{i}\rVert / \lVert d_{i}\rVert` (Li et al., 2018, "Visualizing
  the loss landscape of neural nets"); biases and normalization parameters (tensors of one dimension) get a zero
  direction. The plane is then invariant to the rescalings a ReLU network is invariant to.
- :func:`trajectory_plane`: the training trajectory projected on the plane of its two principal components
  (PCA of the iterates relative to the final point, Li et al., sec. 7).
- :func:`sharpness`: the top Hessian eigenvalue and the worst loss increase in a ball of radius ``radius``
  (Keskar et al., 2017: sharp minima generalize worse, figure 7.2).
- :func:`rnn_cliff_loss` and :func:`gradient_descent_path`: figure 7.5's one-neuron RNN
  :math:`h_t = \sigma(w h_{t-1} + b)`, :math:`h_0 = 0.3`, loss :math:`(h_{100} - 0.65)^2` over :math:`(w, b)`,
  and gradient descent's path on it with and without clipping (eq. 7.24).

All of them leave the model's parameters, mode and ``.grad`` as they found them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from optreg._checks import check_int, check_nonneg, check_positive
from optreg.diagnostics.hessian import _OWNER, HessianOperator, _batches, _check_loss, _eval_mode, hessian_eigenvalues
from optreg.errors import OptregValueError

LossFn = Callable[[Tensor, Tensor], Tensor]


def _params(model: nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise OptregValueError(f"{_OWNER}: the model has no parameters that require grad")
    return params


def flat_parameters(model: nn.Module) -> Tensor:
    """The model's trainable parameters as one flat vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in _params(model)]).clone()


@contextmanager
def _kept_parameters(model: nn.Module):
    """Restores the parameters' values afterwards, whatever the body wrote into them."""
    saved = [p.detach().clone() for p in _params(model)]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(_params(model), saved):
                p.copy_(s)


def _load(model: nn.Module, flat: Tensor) -> None:
    with torch.no_grad():
        i = 0
        for p in _params(model):
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


def _data_loss(model: nn.Module, loss_fn: LossFn, batches: list[tuple[Any, Any]]) -> float:
    n = sum(len(y) for _, y in batches)
    with torch.no_grad():
        return float(sum(_check_loss(loss_fn(model(x), y)) * (len(y) / n) for x, y in batches))


def _check_vector(name: str, v: Tensor, dim: int) -> Tensor:
    if not isinstance(v, Tensor) or v.shape != (dim,):
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise OptregValueError(f"{_OWNER}: {name} must be a flat vector of {dim} entries, got {shape}")
    return v


# ---------------------------------------------------------------------------------------- 1-D and 2-D


def interpolate(
    model: nn.Module, loss_fn: LossFn, data: Any, theta_a: Tensor, theta_b: Tensor, *,
    steps: int = 25, margin: float = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""``(alphas, losses)`` along :math:`(1-\alpha)\theta_a + \alpha\theta_b` for ``alpha`` from ``-margin`` to
    ``1 + margin`` (flat parameter vectors, e.g. from :func:`flat_parameters` at initialization and after
    training). The loss over a loader is the full-data mean."""
    dim = sum(p.numel() for p in _params(model))
    theta_a, theta_b = _check_vector("theta_a", theta_a, dim), _check_vector("theta_b", theta_b, dim)
    steps = check_int(_OWNER, "steps", steps, 2)
    margin = check_nonneg(_OWNER, "margin", margin)
    batches = _batches(data)
    alphas = torch.linspace(-margin, 1 + margin, steps, dtype=torch.float64)
    losses = torch.empty(steps, dtype=torch.float64)
    with _eval_mode(model), _kept_parameters(model):
        for i, a in enumerate(alphas):
            _load(model, (1 - a) * theta_a + a * theta_b)
            losses[i] = _data_loss(model, loss_fn, batches)
    return alphas, losses


def filter_normalized_directions(
    model: nn.Module, n: int = 2, *, generator: torch.Generator | None = None
) -> list[Tensor]:
    """``n`` flat random directions, filter-normalized as in Li et al. (2018), sec. 4.

    For a weight tensor (2 or more dimensions) each filter -- a slice along the first, output dimension, i.e. a
    row of a Linear weight or one output channel of a convolution -- gets the norm of the same filter of the
    parameters. Tensors of one dimension (biases, normalization gains) get zero: they are excluded.
    """
    n = check_int(_OWNER, "n", n, 1)
    out = []
    for _ in range(n):
        parts = []
        for p in _params(model):
            d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p)
            if p.ndim <= 1:
                d.zero_()
            else:
                dims = tuple(range(1, p.ndim))
                norm = torch.linalg.vector_norm
                d.mul_(norm(p.detach(), dim=dims, keepdim=True) / norm(d, dim=dims, keepdim=True).clamp_min(1e-30))
            parts.append(d.reshape(-1))
        out.append(torch.cat(parts))
    return out


@dataclass(frozen=True)
class Plane:
    """The loss on ``center + alphas[i] * d1 + betas[j] * d2``: ``losses[i, j]``."""

    alphas: Tensor
    betas: Tensor
    losses: Tensor
    center: Tensor
    d1: Tensor
    d2: Tensor


def plane(
    model: nn.Module, loss_fn: LossFn, data: Any, *, directions: Sequence[Tensor] | None = None,
    span: float = 1.0, steps: int = 21, generator: torch.Generator | None = None,
) -> Plane:
    """The loss on a ``steps x steps`` grid over ``[-span, span]^2`` centred on the current parameters, along
    ``directions`` (default: two :func:`filter_normalized_directions` from ``generator``)."""
    span = check_positive(_OWNER, "span", span)
    steps = check_int(_OWNER, "steps", steps, 2)
    center = flat_parameters(model)
    if directions is None:
        directions = filter_normalized_directions(model, 2, generator=generator)
    if len(directions) != 2:
        raise OptregValueError(f"{_OWNER}: directions must be two flat vectors, got {len(directions)}")
    d1, d2 = (_check_vector(f"directions[{i}]", d, center.numel()) for i, d in enumerate(directions))
    batches = _batches(data)
    grid = torch.linspace(-span, span, steps, dtype=torch.float64)
    losses = torch.empty(steps, steps, dtype=torch.float64)
    with _eval_mode(model), _kept_parameters(model):
        for i, a in enumerate(grid):
            for j, b in enumerate(grid):
                _load(model, center + a * d1 + b * d2)
                losses[i, j] = _data_loss(model, loss_fn, batches)
    return Plane(grid, grid.clone(), losses, center, d1, d2)


def trajectory_plane(iterates: Iterable[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PCA of a training trajectory (Li et al., 2018, sec. 7): ``(d1, d2, coords, explained)``.

    ``iterates`` are flat parameter vectors, the last one the final point; ``d1, d2`` are the top two principal
    directions of ``theta_t - theta_final`` (unit vectors), ``coords`` the ``(T, 2)`` projections, ``explained``
    the fraction of the variance each direction explains. Use ``plane(..., directions=(d1, d2), ...)`` around the
    final point to draw the landscape under the path.
    """
    thetas = torch.stack([t.detach().to(torch.float64) for t in iterates])
    if thetas.ndim != 2 or thetas.shape[0] < 3:
        raise OptregValueError(f"{_OWNER}: iterates must be at least 3 flat vectors, got shape {tuple(thetas.shape)}")
    diffs = thetas - thetas[-1]
    _, s, vh = torch.linalg.svd(diffs, full_matrices=False)
    d1, d2 = vh[0], vh[1]
    coords = diffs @ torch.stack([d1, d2], dim=1)
    var = s**2
    return d1, d2, coords, var[:2] / var.sum().clamp_min(1e-300)


# ------------------------------------------------------------------------------------------ sharpness


@dataclass(frozen=True)
class Sharpness:
    """``top_eigenvalue`` of the Hessian and ``max_increase``: the largest ``L(theta + delta) - L(theta)`` found
    with ``||delta|| <= radius`` (a lower bound on the true maximum, by projected gradient ascent)."""

    top_eigenvalue: float
    max_increase: float
    radius: float
    loss: float


def sharpness(
    model: nn.Module, loss_fn: LossFn, data: Any, *, radius: float = 0.05, ascent_steps: int = 20,
    generator: torch.Generator | None = None,
) -> Sharpness:
    r"""Sharpness of a minimum (Keskar et al., 2017; figure 7.2): the top Hessian eigenvalue and
    :math:`\max_{\lVert\delta\rVert \le r} L(\theta + \delta) - L(\theta)`, the latter by projected gradient
    ascent started from ``r`` times the top eigenvector (the quadratic model's maximizer)."""
    radius = check_positive(_OWNER, "radius", radius)
    ascent_steps = check_int(_OWNER, "ascent_steps", ascent_steps, 0)
    op = HessianOperator(model, loss_fn, data)
    top = hessian_eigenvalues(op, k=1, generator=generator)
    batches = op.batches
    center = flat_parameters(model)
    params = _params(model)
    best = 0.0
    with _eval_mode(model), _kept_parameters(model):
        base = _data_loss(model, loss_fn, batches)
        for sign in (1.0, -1.0):
            delta = sign * radius * top.vectors[:, 0].to(center)
            for _ in range(ascent_steps + 1):
                _load(model, center + delta)
                n = sum(len(y) for _, y in batches)
                grad = torch.zeros_like(center)
                value = 0.0
                for x, y in batches:
                    with torch.enable_grad():
                        loss = _check_loss(loss_fn(model(x), y)) * (len(y) / n)
                        g = torch.autograd.grad(loss, params)
                    grad += torch.cat([t.reshape(-1) for t in g])
                    value += float(loss.detach())
                best = max(best, value - base)
                delta = delta + radius / max(ascent_steps, 1) * grad / grad.norm().clamp_min(1e-30)
                delta = delta * min(1.0, radius / float(delta.norm()))
    return Sharpness(float(top.values[0]), best, radius, base)


# ---------------------------------------------------------------------------------- figure 7.5's cliff


def rnn_cliff_loss(w: Tensor, b: Tensor, *, steps: int = 100, h0: float = 0.3, target: float = 0.65) -> Tensor:
    r"""Figure 7.5: :math:`(h_T - 0.65)^2` for :math:`h_t = \sigma(w h_{t-1} + b)`, :math:`h_0 = 0.3`, ``T = 100``.

    ``w`` and ``b`` broadcast (e.g. a meshgrid): the whole surface in one vectorized pass; differentiable, so
    gradient descent can run on it. Near the bifurcation of the map the loss changes by almost its whole range
    over a tiny change of ``w``: the cliff whose gradient explodes.
    """
    steps = check_int(_OWNER, "steps", steps, 1)
    w, b = torch.broadcast_tensors(torch.as_tensor(w), torch.as_tensor(b))
    h = torch.full_like(w, h0, dtype=torch.result_type(w, 1.0))
    for _ in range(steps):
        h = torch.sigmoid(w * h + b)
    return (h - target) ** 2


def gradient_descent_path(
    start: tuple[float, float], *, lr: float = 0.1, iterations: int = 100, clip: float | None = None,
    steps: int = 100,
) -> Tensor:
    """Gradient descent on :func:`rnn_cliff_loss` from ``start = (w, b)``: the ``(iterations + 1, 2)`` path.

    ``clip`` rescales a gradient whose norm exceeds it to that norm (eq. 7.24, the chapter's ``||g|| > b`` test,
    optreg.optim.clip_by_global_norm); without it a step on the cliff's face throws the iterate far away.
    """
    lr = check_positive(_OWNER, "lr", lr)
    iterations = check_int(_OWNER, "iterations", iterations, 0)
    from optreg.optim import clip_by_global_norm

    clipper = None if clip is None else clip_by_global_norm(check_positive(_OWNER, "clip", clip))
    theta = torch.tensor(start, dtype=torch.float64)
    path = [theta.clone()]
    state = clipper.init([theta]) if clipper else None
    for _ in range(iterations):
        t = theta.clone().requires_grad_(True)
        loss = rnn_cliff_loss(t[0], t[1], steps=steps)
        (g,) = torch.autograd.grad(loss, t)
        if clipper is not None:
            (g,), state = clipper.update([g], state, [theta])
        theta = theta - lr * g
        if not torch.isfinite(theta).all():
            break
        path.append(theta.clone())
    return torch.stack(path)
