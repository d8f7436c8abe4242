r"""Curvature of a loss: Hessian-vector products, extreme eigenvalues, trace, spectral density (section 7.1).

The chapter explains *why* training is hard through the Hessian :math:`H = \nabla^2_\theta L`: at a critical
point a minimum has every eigenvalue positive, a saddle has both signs (figure 7.1); a large top eigenvalue is a
sharp minimum (figure 7.2); a large ratio :math:`\lambda_{max} / \lambda_{min}` is ill-conditioning (file 002).
Nothing here forms :math:`H`: everything is built on one primitive, the Hessian-vector product

.. math:: H v = \nabla_\theta \left( \nabla_\theta L(\theta)^\top v \right)

(Pearlmutter, 1994), computed by double back-propagation.

- :func:`hvp`: :math:`Hv` over one batch or a whole loader (the full-data Hessian even for uneven batches:
  each batch's Hessian is weighted by its share of the examples).
- :func:`hessian_eigenvalues`: Lanczos with full re-orthogonalization (Golub & Van Loan, sec. 10.1); its Ritz
  values converge to both ends of the spectrum at once, in far fewer products than deflated power iteration.
- :func:`hessian_trace`: Hutchinson's estimator :math:`\operatorname{tr} H = E[z^\top H z]` with Rademacher
  probes, and its standard error.
- :func:`spectral_density`: stochastic Lanczos quadrature (Ubaru, Chen & Saad, 2017; Ghorbani et al., 2019):
  nodes and weights (summing to 1) of the eigenvalue distribution.
- :func:`classify_critical_point`: minimum / maximum / saddle, with the evidence.

Every function takes either ``(model, loss_fn, data)`` -- an ``nn.Module``, ``loss_fn(output, y)`` returning the
*mean* loss of a batch, and a batch ``(x, y)`` or an iterable of batches -- or a plain function of a parameter
vector with ``point=`` (the 2-D toy problems). The model is put in eval mode while it is measured (batch
normalization and dropout are then fixed functions) and put back; the parameters' ``.grad`` are never touched;
every random probe comes from ``generator`` (never the global RNG), so a second call gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from optreg._checks import check_choice, check_int, check_positive
from optreg.errors import OptregTypeError, OptregValueError

_OWNER = "diagnostics"

LossFn = Callable[[Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------------------------- the operator


@contextmanager
def _eval_mode(model: nn.Module | None):
    """Eval mode for the duration (BN and dropout fixed), the caller's mode restored afterwards, per module."""
    if model is None:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _batches(data: Any) -> list[tuple[Any, Any]]:
    """A batch ``(x, y)`` or an iterable of them, as a list of pairs (a loader is iterated once per call)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        return [(data[0], data[1])]
    if hasattr(data, "x") and hasattr(data, "y") and isinstance(data.x, Tensor):  # a split
        return [(data.x, data.y)]
    if isinstance(data, Iterable):
        out = []
        for b in data:
            if not (isinstance(b, (tuple, list)) and len(b) >= 2):
                raise OptregValueError(f"{_OWNER}: data must yield (x, y) batches, got an item {type(b).__name__}")
            out.append((b[0], b[1]))
        if not out:
            raise OptregValueError(f"{_OWNER}: data is empty")
        return out
    raise OptregTypeError(f"{_OWNER}: data must be a batch (x, y) or an iterable of batches, got {type(data).__name__}")


def _check_loss(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise OptregValueError(f"{_OWNER}: the loss must be a scalar tensor, got {shape}")
    if not torch.isfinite(loss).all():
        raise OptregValueError(f"{_OWNER}: the loss must be finite, got {loss.item()!r}")
    return loss.reshape(())


class HessianOperator:
    r"""The Hessian of a loss as a linear operator on flat vectors: ``op @ v`` is :math:`Hv`.

    Built from ``(model, loss_fn, data)`` or from ``fn`` and ``point`` (a function of one parameter vector).
    With one batch (or a function) the gradient graph is built once and every product reuses it: a product
    then costs one backward pass through the gradient graph instead of a forward and two backward passes. With
    several batches the graph of each batch is rebuilt for every product (memory stays that of one batch), and
    batch ``b``'s term is weighted by ``n_b / N`` so the result is the full-data Hessian's.

    Attributes: ``dim`` (number of parameters), ``dtype``, ``device``, ``products`` (HVPs computed so far),
    ``gradient`` (the flat full-data gradient, computed on first use).
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        loss_fn: LossFn | None = None,
        data: Any = None,
        *,
        point: Tensor | None = None,
    ) -> None:
        self.products = 0
        self._gradient: Tensor | None = None
        if isinstance(model, nn.Module):
            if loss_fn is None or not callable(loss_fn):
                raise OptregTypeError(f"{_OWNER}: loss_fn must be callable loss_fn(output, y), got {loss_fn!r}")
            if data is None:
                raise OptregValueError(f"{_OWNER}: data must be a batch (x, y) or an iterable of batches, got None")
            self.model: nn.Module | None = model
            self.params = [p for p in model.parameters() if p.requires_grad]
            if not self.params:
                raise OptregValueError(f"{_OWNER}: the model has no parameters that require grad")
            self.loss_fn = loss_fn
            self.batches = _batches(data)
            self.n_total = sum(len(y) for _, y in self.batches)
            if self.n_total == 0:
                raise OptregValueError(f"{_OWNER}: data has no examples")
            self._fn = None
        elif callable(model):
            if not isinstance(point, Tensor) or point.ndim != 1 or not point.is_floating_point():
                raise OptregValueError(
                    f"{_OWNER}: point must be a 1-D floating tensor (the parameter vector of fn), got {point!r}"
                )
            self.model, self._fn = None, model
            self.params = [point.detach().clone().requires_grad_(True)]
            self.batches = []
        else:
            raise OptregTypeError(f"{_OWNER}: model must be an nn.Module or a function of a vector, got {model!r}")
        self.dim = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self._graph: tuple[Tensor, ...] | None = None  # the cached gradient graph (one batch or a function)

    # ------------------------------------------------------------------------------------- internals

    def _loss(self, batch: tuple[Any, Any] | None) -> Tensor:
        if self._fn is not None:
            return _check_loss(self._fn(self.params[0]))
        x, y = batch
        return _check_loss(self.loss_fn(self.model(x), y))

    def _weighted(self) -> Iterable[tuple[float, tuple[Any, Any] | None]]:
        if self._fn is not None:
            yield 1.0, None
        else:
            for b in self.batches:
                yield len(b[1]) / self.n_total, b

    def _grad_graph(self, batch: tuple[Any, Any] | None) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            loss = self._loss(batch)
            return torch.autograd.grad(loss, self.params, create_graph=True)

    def _flat(self, parts: Sequence[Tensor | None]) -> Tensor:
        return torch.cat([
            (torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(parts, self.params)
        ])

    def _split(self, v: Tensor) -> list[Tensor]:
        out, i = [], 0
        for p in self.params:
            out.append(v[i:i + p.numel()].view_as(p))
            i += p.numel()
        return out

    # --------------------------------------------------------------------------------------- public

    def unflatten(self, v: Tensor) -> list[Tensor]:
        """A flat vector as a list of tensors shaped like the parameters."""
        return [t.clone() for t in self._split(v)]

    @property
    def gradient(self) -> Tensor:
        """The flat gradient of the (full-data) loss at the current parameters."""
        if self._gradient is None:
            total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
            with _eval_mode(self.model):
                for w, b in self._weighted():
                    with torch.enable_grad():
                        g = torch.autograd.grad(self._loss(b), self.params, allow_unused=True)
                    total.add_(self._flat(g), alpha=w)
            self._gradient = total
        return self._gradient

    def loss(self) -> float:
        """The (full-data) loss at the current parameters."""
        with torch.no_grad(), _eval_mode(self.model):
            return float(sum(w * self._loss(b) for w, b in self._weighted()))

    def matvec(self, v: Tensor) -> Tensor:
        """:math:`Hv` for a flat vector ``v`` of length ``dim``."""
        if not isinstance(v, Tensor) or v.shape != (self.dim,):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise OptregValueError(f"{_OWNER}: v must be a flat vector of {self.dim} entries, got {shape}")
        v = v.to(dtype=self.dtype, device=self.device)
        parts = self._split(v)
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        single = self._fn is not None or len(self.batches) == 1
        with _eval_mode(self.model):
            for w, b in self._weighted():
                if single:
                    if self._graph is None:
                        self._graph = self._grad_graph(b)
                    graph, retain = self._graph, True
                else:
                    graph, retain = self._grad_graph(b), False
                with torch.enable_grad():
                    hv = torch.autograd.grad(graph, self.params, parts, retain_graph=retain, allow_unused=True)
                out.add_(self._flat(hv), alpha=w)
        self.products += 1
        return out

    __matmul__ = matvec

    def dense(self) -> Tensor:
        """The full ``dim x dim`` Hessian, column by column (only for small models: ``dim`` products)."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        cols = [self.matvec(eye[i]) for i in range(self.dim)]
        h = torch.stack(cols, dim=1)
        return (h + h.T) / 2


def _operator(model: Any, loss_fn: Any, data: Any, point: Tensor | None) -> HessianOperator:
    if isinstance(model, HessianOperator):
        return model
    return HessianOperator(model, loss_fn, data, point=point)


def hvp(
    model: nn.Module | Callable[[Tensor], Tensor],
    loss_fn: LossFn | None,
    data: Any,
    v: Tensor | Sequence[Tensor],
    *,
    point: Tensor | None = None,
) -> Tensor | list[Tensor]:
    r"""The Hessian-vector product :math:`Hv = \nabla(\nabla L^\top v)` (Pearlmutter, 1994) by double backprop.

    ``v`` is a flat vector (the result is flat) or a list of tensors shaped like the parameters that require
    grad (the result is such a list). Over a loader the result is the full-data Hessian's (batches weighted by
    their size). For many products at one point build a :class:`HessianOperator`: it reuses the gradient graph.
    """
    op = _operator(model, loss_fn, data, point)
    if isinstance(v, Tensor):
        return op.matvec(v)
    v = list(v)
    if len(v) != len(op.params) or any(a.shape != p.shape for a, p in zip(v, op.params)):
        raise OptregValueError(
            f"{_OWNER}: v must have one tensor per parameter with its shape "
            f"{[tuple(p.shape) for p in op.params]}, got {[tuple(a.shape) for a in v]}"
        )
    return op.unflatten(op.matvec(torch.cat([a.reshape(-1) for a in v])))


# ------------------------------------------------------------------------------------------------ Lanczos


class _Lanczos:
    """Lanczos iterations on ``op`` from ``start``, extended one step at a time.

    Keeps the orthonormal basis ``Q`` (n x m) and the tridiagonal ``T = Q^T H Q`` (m x m); ``beta`` is the norm of
    the residual after the last step (0: the Krylov space is invariant and the Ritz values are exact eigenvalues).
    Full re-orthogonalization against the whole basis, done twice ("twice is enough", Parlett), keeps ``Q``
    orthonormal in floating point, so no ghost copies of converged eigenvalues appear.
    """

    def __init__(self, op: HessianOperator, start: Tensor) -> None:
        self.op = op
        self.basis = [start / start.norm()]
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.beta = 0.0
        self.invariant = False

    @property
    def m(self) -> int:
        return len(self.alphas)

    def step(self) -> None:
        q = self.basis[-1]
        w = self.op.matvec(q)
        alpha = float(torch.dot(w, q))
        Q = torch.stack(self.basis, dim=1)
        for _ in range(2):
            w = w - Q @ (Q.T @ w)
        self.alphas.append(alpha)
        self.beta = float(w.norm())
        if self.m == self.op.dim or self.beta <= 1e-10 * max(abs(a) for a in self.alphas + [1e-30]):
            self.invariant = True
            return
        self.betas.append(self.beta)
        self.basis.append(w / self.beta)

    def T(self) -> Tensor:
        T = torch.diag(torch.tensor(self.alphas, dtype=torch.float64))
        if self.m > 1:
            off = torch.tensor(self.betas[: self.m - 1], dtype=torch.float64)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        return T

    def Q(self) -> Tensor:
        return torch.stack(self.basis[: self.m], dim=1)


class Eigenvalues(NamedTuple):
    """What :func:`hessian_eigenvalues` found: eigenvalues (descending), eigenvectors (flat, as columns),
    residual norms ``||H v - lambda v||``, the number of Hessian-vector products, and whether every requested
    pair met the tolerance."""

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    products: int
    converged: bool


def _start(op: HessianOperator, generator: torch.Generator | None) -> Tensor:
    return torch.randn(op.dim, generator=generator, dtype=torch.float64).to(dtype=op.dtype, device=op.device)


def _picks(m: int, k: int, which: str) -> Tensor:
    """Indices of the wanted Ritz values among ``m`` in ascending order."""
    low = torch.arange(0, min(k, m))
    high = torch.arange(max(m - k, 0), m)
    if which == "largest":
        return high
    if which == "smallest":
        return low
    return torch.unique(torch.cat([low, high]))


def hessian_eigenvalues(
    model: nn.Module | Callable[[Tensor], Tensor] | HessianOperator,
    loss_fn: LossFn | None = None,
    data: Any = None,
    k: int = 5,
    which: str = "largest",
    *,
    point: Tensor | None = None,
    tol: float = 1e-6,
    max_products: int | None = None,
    generator: torch.Generator | None = None,
) -> Eigenvalues:
    r"""The ``k`` largest, smallest (most negative) or both (``k`` of each) Hessian eigenvalues, by Lanczos.

    Lanczos builds an orthonormal basis of the Krylov space :math:`\{v, Hv, H^2v, \dots\}` and the tridiagonal
    :math:`T = Q^\top H Q`; the eigenvalues of :math:`T` (Ritz values, from ``torch.linalg.eigh``) converge to
    the extreme eigenvalues of :math:`H`, both ends at once. A Ritz pair :math:`(\theta, Qs)` has residual
    :math:`\lVert H Q s - \theta Q s\rVert = \beta_m |s_m|`; the iteration stops as soon as every requested
    pair's residual is at most ``tol * max|theta|``, or after ``max_products`` products (default: the number of
    parameters, where the result is exact); ``converged`` says which happened -- it is never silent.
    """
    op = _operator(model, loss_fn, data, point)
    check_choice(_OWNER, "which", which, ("largest", "smallest", "both"))
    k = check_int(_OWNER, "k", k, 1)
    wanted = 2 * k if which == "both" else k
    if wanted > op.dim:
        raise OptregValueError(
            f"{_OWNER}: k must be at most the number of parameters ({op.dim}{' / 2' if which == 'both' else ''}), "
            f"got {k}"
        )
    tol = check_positive(_OWNER, "tol", tol)
    limit = op.dim if max_products is None else min(check_int(_OWNER, "max_products", max_products, 1), op.dim)
    used0 = op.products
    lz = _Lanczos(op, _start(op, generator))
    ok = False
    while True:
        lz.step()
        m = lz.m
        if m < wanted and not lz.invariant and m < limit:
            continue
        theta, S = torch.linalg.eigh(lz.T())
        residual = (0.0 if lz.invariant else lz.beta) * S[-1].abs()
        pick = _picks(m, k, which)
        ok = lz.invariant or bool((residual[pick] <= tol * max(float(theta.abs().max()), 1e-30)).all())
        if ok or m >= limit:
            break
    pick = pick[torch.argsort(theta[pick], descending=True)]
    vectors = (lz.Q().to(torch.float64) @ S[:, pick]).to(op.dtype)
    return Eigenvalues(
        values=theta[pick].to(op.dtype),
        vectors=vectors,
        residuals=residual[pick],
        products=op.products - used0,
        converged=ok,
    )


# ---------------------------------------------------------------------------------- trace and density


def _rademacher(op: HessianOperator, generator: torch.Generator | None) -> Tensor:
    z = torch.randint(0, 2, (op.dim,), generator=generator, dtype=torch.int64)
    return (2 * z - 1).to(dtype=op.dtype, device=op.device)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of ``tr H``: the mean of ``z^T H z`` over ``probes`` Rademacher vectors and its
    standard error ``std / sqrt(probes)``."""

    value: float
    stderr: float
    probes: int

    def __float__(self) -> float:
        return self.value


def hessian_trace(
    model: nn.Module | Callable[[Tensor], Tensor] | HessianOperator,
    loss_fn: LossFn | None = None,
    data: Any = None,
    *,
    probes: int = 100,
    point: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    r"""Hutchinson's estimator (1990): :math:`\operatorname{tr} H = E_z[z^\top H z]` for Rademacher ``z``
    (entries :math:`\pm 1`), with the standard error of the mean over ``probes`` probes."""
    op = _operator(model, loss_fn, data, point)
    probes = check_int(_OWNER, "probes", probes, 1)
    samples = []
    for _ in range(probes):
        z = _rademacher(op, generator)
        samples.append(float(torch.dot(z, op.matvec(z))))
    s = torch.tensor(samples, dtype=torch.float64)
    stderr = float(s.std(unbiased=True) / math.sqrt(probes)) if probes > 1 else math.inf
    return TraceEstimate(float(s.mean()), stderr, probes)


class Density(NamedTuple):
    """Stochastic Lanczos quadrature: ``nodes`` (probes x steps Ritz values) and ``weights`` (the same shape,
    each probe's row summing to 1/probes, all of them to 1). :meth:`smooth` gives a density on a grid."""

    nodes: Tensor
    weights: Tensor

    def smooth(self, grid: Tensor, sigma: float) -> Tensor:
        r"""The density :math:`\phi(t) = \sum_j w_j \mathcal N(t; \theta_j, \sigma^2)` on ``grid``."""
        sigma = check_positive(_OWNER, "sigma", sigma)
        g = grid.to(torch.float64).reshape(-1, 1)
        nodes, weights = self.nodes.reshape(1, -1), self.weights.reshape(1, -1)
        kernel = torch.exp(-0.5 * ((g - nodes) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return (kernel * weights).sum(dim=1)


def spectral_density(
    model: nn.Module | Callable[[Tensor], Tensor] | HessianOperator,
    loss_fn: LossFn | None = None,
    data: Any = None,
    *,
    steps: int = 30,
    probes: int = 4,
    point: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Density:
    r"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (Ubaru et al., 2017).

    For a unit probe :math:`v`, ``steps`` Lanczos steps give :math:`T = S \Theta S^\top`; the Gauss quadrature
    :math:`v^\top f(H) v \approx \sum_j S_{1j}^2 f(\theta_j)` makes :math:`(\theta_j, S_{1j}^2)` the nodes and
    weights of the spectral measure, exactly normalized (:math:`\sum_j S_{1j}^2 = 1`). Averaged over ``probes``
    Rademacher probes.
    """
    op = _operator(model, loss_fn, data, point)
    steps = min(check_int(_OWNER, "steps", steps, 1), op.dim)
    probes = check_int(_OWNER, "probes", probes, 1)
    nodes, weights = [], []
    for _ in range(probes):
        lz = _Lanczos(op, _rademacher(op, generator))
        while lz.m < steps and not lz.invariant:
            lz.step()
        theta, S = torch.linalg.eigh(lz.T())
        w = S[0] ** 2
        pad = steps - theta.numel()  # an invariant Krylov space ends early: pad with zero weights
        nodes.append(torch.cat([theta, theta.new_zeros(pad)]))
        weights.append(torch.cat([w / w.sum(), w.new_zeros(pad)]) / probes)
    return Density(torch.stack(nodes), torch.stack(weights))


# ----------------------------------------------------------------------------------- critical points


@dataclass(frozen=True)
class CriticalPoint:
    """The verdict of :func:`classify_critical_point` and its evidence."""

    kind: str  # "minimum", "maximum", "saddle", "degenerate" or "not critical"
    grad_norm: float
    largest: float
    smallest: float
    converged: bool

    def __str__(self) -> str:
        return (f"{self.kind}: |grad| = {self.grad_norm:.3g}, lambda_max = {self.largest:.4g}, "
                f"lambda_min = {self.smallest:.4g}")


def classify_critical_point(
    model: nn.Module | Callable[[Tensor], Tensor] | HessianOperator,
    loss_fn: LossFn | None = None,
    data: Any = None,
    *,
    point: Tensor | None = None,
    grad_tol: float = 1e-4,
    eig_tol: float = 1e-6,
    generator: torch.Generator | None = None,
) -> CriticalPoint:
    r"""Minimum, maximum or saddle point (section 7.1, figure 7.1), from the gradient norm and the extreme
    Hessian eigenvalues.

    A point is critical when :math:`\lVert\nabla L\rVert \le` ``grad_tol``. There, all eigenvalues
    :math:`> ` ``eig_tol`` :math:`\cdot\max|\lambda|` make a local minimum, all below minus that a maximum,
    both signs a saddle; a near-zero extreme eigenvalue with no negative one (or no positive one) is
    ``degenerate`` (second-order information cannot decide: flat directions, as in over-parameterized nets).
    """
    op = _operator(model, loss_fn, data, point)
    grad_tol = check_positive(_OWNER, "grad_tol", grad_tol)
    eig_tol = check_positive(_OWNER, "eig_tol", eig_tol)
    grad_norm = float(op.gradient.norm())
    ev = hessian_eigenvalues(op, k=1, which="both", generator=generator)
    largest, smallest = float(ev.values.max()), float(ev.values.min())
    scale = max(abs(largest), abs(smallest), 1e-30)
    if grad_norm > grad_tol:
        kind = "not critical"
    elif smallest > eig_tol * scale:
        kind = "minimum"
    elif largest < -eig_tol * scale:
        kind = "maximum"
    elif smallest < -eig_tol * scale and largest > eig_tol * scale:
        kind = "saddle"
    else:
        kind = "degenerate"
    return CriticalPoint(kind, grad_norm, largest, smallest, ev.converged)
