"""Methods that re-evaluate the loss within a step (file 002: line searches for CG, BFGS / L-BFGS).

The backtracking (Armijo) line search, as a transform that scales any descent direction, and ``sgd_linesearch``,
steepest descent with it; a strong-Wolfe line search shared by nonlinear conjugate gradient (``cg``), ``bfgs`` and
``lbfgs``; Newton's method with damping, exact or Hessian-free (``newton``, ``newton-cg``); and cyclic
``coordinate-descent``. All need ``optimizer.step(closure)`` and full-batch (deterministic) losses.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregValueError
from optreg.optim import _foreach as F
from optreg.optim.combine import chain
from optreg.optim.transforms import Params, Transform, Updates, scale


class BacktrackingState(NamedTuple):
    step_size: Tensor  # the step accepted at the last update, shape (1,)
    evaluations: Tensor  # loss evaluations at the last update, int64


def _dot(xs: list[Tensor], ys: list[Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(xs, ys)))


def scale_by_backtracking_linesearch(
    max_step: float = 1.0,
    decrease: float = 0.5,
    slope: float = 1e-4,
    max_backtracks: int = 30,
    *,
    name: str = "scale_by_backtracking_linesearch",
) -> Transform:
    """Backtracking line search (Armijo, 1966; Nocedal & Wright, Algorithm 3.1) along the incoming direction d.

    Tries ``a = max_step, decrease * max_step, ...`` and keeps the first with sufficient decrease,
    ``f(theta + a d) <= f(theta) + slope * a * g^T d``; returns ``a d``. If ``d`` is not a descent direction
    (``g^T d >= 0``) it searches along ``-g`` instead. After ``max_backtracks`` failures it returns the
    smallest step tried. Each trial calls the closure at the trial point (its gradients are left as the
    closure computed them, as torch.optim.LBFGS does).
    """
    max_step = _checks.check_positive(name, "max_step", max_step)
    decrease = _checks.check_range(name, "decrease", decrease, 0.0, 1.0, low_open=True, high_open=True)
    slope = _checks.check_range(name, "slope", slope, 0.0, 1.0, low_open=True, high_open=True)
    max_backtracks = _checks.check_int(name, "max_backtracks", max_backtracks, low=1)

    def init(params: Params) -> BacktrackingState:
        device = params[0].device if len(params) else None
        return BacktrackingState(
            torch.zeros(1, dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device)
        )

    def update(
        updates: Updates,
        state: BacktrackingState,
        params: Params | None = None,
        *,
        closure: Callable[[], Any],
        value: float,
        grads: list[Tensor],
    ):
        direction = list(updates)
        slope_0 = _dot(grads, direction)
        if slope_0 >= 0:  # not a descent direction: fall back to steepest descent
            direction = [-g for g in grads]
            slope_0 = -_dot(grads, grads)
        start = [p.detach().clone() for p in params]
        step, evaluations = max_step, 0
        for _ in range(max_backtracks):
            with torch.no_grad():
                for p, p0, d in zip(params, start, direction):
                    torch.add(p0, d, alpha=step, out=p)
            trial = float(closure())
            evaluations += 1
            if trial <= value + slope * step * slope_0:
                break
            step *= decrease
        with torch.no_grad():
            torch._foreach_copy_(params, start)
        state.step_size.fill_(step)
        state.evaluations.fill_(evaluations)
        return F.mul(direction, step), state

    return Transform(init, update, elementwise=False, needs_closure=True)


def sgd_linesearch(lr: float = 1.0, decrease: float = 0.5, slope: float = 1e-4, max_backtracks: int = 30) -> Transform:
    """Steepest descent ``theta <- theta - a g`` with ``a`` from a backtracking line search starting at ``lr``.

    Full-batch (the Armijo test compares losses of one fixed objective). Needs ``step(closure)``.
    """
    return chain(
        scale(-1.0, name="sgd_linesearch"),
        scale_by_backtracking_linesearch(lr, decrease, slope, max_backtracks, name="sgd_linesearch"),
    )


# ============================================================================ classical and second-order methods
#
# Each method below does ONE iteration per ``step(closure)``: a direction from the gradient (and curvature), then
# a line search along it. The state is kept as flat float64-free vectors in the parameters' dtype (shared leaves
# of the state tree, so ``state_dict`` saves and restores them). The closure follows torch's convention (zero the
# gradients, compute the loss, ``backward()``, return the loss); the line search writes each trial point into
# the parameters, calls the closure and reads the gradients it left, then restores the parameters.


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(flat: Tensor, like: Params) -> list[Tensor]:
    out, i = [], 0
    for p in like:
        out.append(flat[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


class _Objective:
    """``phi(t) = f(theta_0 + t d)`` and its derivative through the closure, counting evaluations."""

    def __init__(self, closure: Callable[[], Any], params: Params, start: Tensor) -> None:
        self.closure, self.params, self.start = closure, list(params), start
        self.evaluations = 0

    def at(self, point: Tensor) -> tuple[float, Tensor]:
        """The loss and flat gradient at ``point`` (the parameters hold ``point`` afterwards)."""
        with torch.no_grad():
            for p, v in zip(self.params, _unflat(point, self.params)):
                p.copy_(v)
        value = float(self.closure())
        self.evaluations += 1
        grad = _flat([torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]).detach().clone()
        return value, grad

    def restore(self) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, _unflat(self.start, self.params)):
                p.copy_(v)


def _cubic_min(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float, lo: float, hi: float) -> float:
    """The minimizer of the cubic through two points with their slopes (Nocedal & Wright, eq. 3.59), kept in
    ``[lo, hi]``; the bisection point when the cubic has no minimum there."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if disc >= 0:
        d2 = math.copysign(math.sqrt(disc), x2 - x1)
        denom = g2 - g1 + 2 * d2
        if denom != 0:
            t = x2 - (x2 - x1) * (g2 + d2 - d1) / denom
            if lo <= t <= hi and math.isfinite(t):
                return t
    return (lo + hi) / 2


def strong_wolfe(
    obj: _Objective, direction: Tensor, f0: float, g0: Tensor, step: float, *,
    c1: float = 1e-4, c2: float = 0.9, max_evaluations: int = 25,
) -> tuple[float, float, Tensor]:
    r"""A step length satisfying the strong Wolfe conditions (Nocedal & Wright, Algorithms 3.5 and 3.6):

    .. math:: f(\theta + a d) \le f(\theta) + c_1 a\, g^\top d,
              \quad |\nabla f(\theta + a d)^\top d| \le c_2 |g^\top d|.

    Bracketing by doubling, then zoom with safeguarded cubic interpolation. Returns ``(a, f, g)`` at the
    accepted point (or the best point seen when ``max_evaluations`` runs out). Shared by CG, BFGS and L-BFGS.
    """
    dphi0 = float(g0 @ direction)
    a_prev, f_prev, d_prev = 0.0, f0, dphi0
    best = (0.0, f0, g0)
    a = step
    lo = hi = None
    for i in range(max_evaluations):
        f, g = obj.at(obj.start + a * direction)
        dphi = float(g @ direction)
        if f < best[1]:
            best = (a, f, g)
        if f > f0 + c1 * a * dphi0 or (i > 0 and f >= f_prev):
            lo, hi = (a_prev, f_prev, d_prev), (a, f, dphi)
            break
        if abs(dphi) <= -c2 * dphi0:
            return a, f, g
        if dphi >= 0:
            lo, hi = (a, f, dphi), (a_prev, f_prev, d_prev)
            break
        a_prev, f_prev, d_prev = a, f, dphi
        a = 2 * a
    else:
        return best
    # zoom between lo (sufficient decrease, the lower value) and hi
    for _ in range(max_evaluations - obj.evaluations):
        (a_lo, f_lo, d_lo), (a_hi, f_hi, d_hi) = lo, hi
        left, right = min(a_lo, a_hi), max(a_lo, a_hi)
        width = right - left
        a = _cubic_min(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi, left + 0.1 * width, right - 0.1 * width)
        f, g = obj.at(obj.start + a * direction)
        dphi = float(g @ direction)
        if f < best[1]:
            best = (a, f, g)
        if f > f0 + c1 * a * dphi0 or f >= f_lo:
            hi = (a, f, dphi)
        else:
            if abs(dphi) <= -c2 * dphi0:
                return a, f, g
            if dphi * (a_hi - a_lo) >= 0:
                hi = lo
            lo = (a, f, dphi)
        if width < 1e-12 * max(1.0, right):
            break
    return best


class _IterState(NamedTuple):
    """The shared state of a line-search method: flat vectors (shared leaves) and counters."""

    step: Tensor  # iterations done, int64
    evaluations: Tensor  # loss evaluations in the last step (the closure call before it excluded), int64
    prev_grad: Tensor  # g_{k-1}
    direction: Tensor  # d_{k-1}
    extra: Tensor  # BFGS: the inverse-Hessian approximation (n x n); L-BFGS: s and y pairs (2, m, n); else empty
    pairs: Tensor  # L-BFGS: how many pairs ``extra`` holds, int64
    last: Tensor  # the last step's (a, g^T d) as float64, for the next initial step guess (N&W eq. 3.60)


def _method(
    name: str,
    direction_fn: Callable[[Tensor, _IterState, _Objective], Tensor],
    *,
    lr: float,
    line_search: str | None,
    after: Callable[[_IterState, Tensor, Tensor, Tensor], None] | None = None,
    extra_shape: Callable[[int], tuple[int, ...]] = lambda n: (0,),
    max_evaluations: int = 25,
    fallback: bool = True,
    c2: float = 0.9,
    guess_step: bool = False,
) -> Transform:
    """The common loop: ``d = direction_fn(g, state, objective)``, a step ``a d`` from the line search (strong
    Wolfe, Armijo backtracking, or ``lr`` unsearched), then ``after(state, s, y, g_new)`` updates the curvature
    pairs (``s = a d``, ``y = g_new - g``). A direction that is not a descent direction is replaced by ``-g``
    (``fallback``) or gives no step. ``guess_step``: the first trial step is ``a_{k-1} g_{k-1}^T d_{k-1} / g_k^T d_k``
    (N&W eq. 3.60, for methods whose directions are not naturally scaled, like CG); ``lr`` at the first one."""
    _checks.check_choice(name, "line_search", line_search, ("strong_wolfe", "armijo", None))

    def init(params: Params) -> _IterState:
        n = sum(p.numel() for p in params)
        like = params[0] if len(params) else torch.zeros(())
        zeros = like.new_zeros(n)
        i64 = torch.zeros((), dtype=torch.int64, device=like.device)
        last = torch.zeros(2, dtype=torch.float64, device=like.device)
        return _IterState(i64, i64.clone(), zeros, zeros.clone(), like.new_zeros(extra_shape(n)), i64.clone(), last)

    def update(updates: Updates, state: _IterState, params: Params | None = None, *,
               closure: Callable[[], Any], value: float, grads: list[Tensor]):
        g = _flat(grads).detach()
        start = _flat([p.detach() for p in params]).clone()
        obj = _Objective(closure, params, start)
        d = direction_fn(g, state, obj)
        slope = float(g @ d)
        if not slope < 0 and fallback:  # not a descent direction: restart with steepest descent
            d = -g
            slope = -float(g @ g)
        if not slope < 0:  # a stationary point (or, without fallback, no descent along d): no step
            obj.restore()
            return [torch.zeros_like(p) for p in params], state
        first = lr
        if guess_step and int(state.step) > 0 and float(state.last[1]) < 0:
            first = float(state.last[0]) * float(state.last[1]) / slope
        if line_search == "strong_wolfe":
            a, _, g_new = strong_wolfe(obj, d, value, g, first, c2=c2, max_evaluations=max_evaluations)
        elif line_search == "armijo":
            a = lr
            for _ in range(max_evaluations):
                f, g_new = obj.at(start + a * d)
                if f <= value + 1e-4 * a * slope:
                    break
                a *= 0.5
        else:
            a = lr
            g_new = None
        obj.restore()
        s = a * d
        if after is not None and g_new is not None:
            after(state, s, g_new - g, g_new)
        state.prev_grad.copy_(g)
        state.direction.copy_(d)
        state.step.add_(1)
        state.evaluations.fill_(obj.evaluations)
        state.last[0], state.last[1] = a, slope
        return _unflat(s, params), state

    return Transform(init, update, elementwise=False, needs_closure=True)


def cg(
    lr: float = 1.0, beta_rule: str = "polak_ribiere", restart: int = 0, line_search: str = "strong_wolfe",
    max_evaluations: int = 25,
) -> Transform:
    r"""Nonlinear conjugate gradient (file 002; Nocedal & Wright, sec. 5.2): :math:`d_k = -g_k + \beta_k d_{k-1}`,

    Fletcher-Reeves :math:`\beta = g_k^\top g_k / g_{k-1}^\top g_{k-1}` or Polak-Ribiere+
    :math:`\beta = \max(0, g_k^\top (g_k - g_{k-1}) / g_{k-1}^\top g_{k-1})`, restarted with steepest descent every
    ``restart`` iterations (0: every ``n``, the number of parameters) and whenever :math:`d_k` is not a descent
    direction. Strong-Wolfe line search with ``c2 = 0.4`` (SciPy's choice for CG; N&W suggest 0.1), its first trial
    step ``lr`` at the first iteration and N&W's eq. 3.60 guess afterwards. Full-batch; needs ``step(closure)``.
    """
    name = "cg"
    _checks.check_choice(name, "beta_rule", beta_rule, ("fletcher_reeves", "polak_ribiere"))
    lr = _checks.check_positive(name, "lr", lr)
    restart = _checks.check_int(name, "restart", restart, 0)

    def direction(g: Tensor, state: _IterState, obj: _Objective) -> Tensor:
        k = int(state.step)
        every = restart or g.numel()
        if k == 0 or k % every == 0:
            return -g
        g_prev = state.prev_grad
        denom = float(g_prev @ g_prev)
        if denom == 0:
            return -g
        beta = float(g @ g) / denom if beta_rule == "fletcher_reeves" else max(0.0, float(g @ (g - g_prev)) / denom)
        return -g + beta * state.direction

    return _method(name, direction, lr=lr, line_search=line_search, max_evaluations=max_evaluations, c2=0.4,
                   guess_step=True)


def bfgs(lr: float = 1.0, line_search: str = "strong_wolfe", max_evaluations: int = 25) -> Transform:
    r"""BFGS (file 002; Nocedal & Wright, Algorithm 6.1): :math:`d_k = -H_k g_k` with the inverse-Hessian update

    .. math:: H_{k+1} = (I - \rho s y^\top) H_k (I - \rho y s^\top) + \rho s s^\top, \qquad \rho = 1 / y^\top s,

    skipped when the curvature condition :math:`y^\top s > 0` fails; :math:`H_0 = (y^\top s / y^\top y) I` after
    the first step (N&W eq. 6.20). Stores an ``n x n`` matrix: for small models (use :func:`lbfgs` otherwise).
    """
    name = "bfgs"
    lr = _checks.check_positive(name, "lr", lr)

    def direction(g: Tensor, state: _IterState, obj: _Objective) -> Tensor:
        if int(state.step) == 0:
            return -g
        return -(state.extra @ g)

    def after(state: _IterState, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        ys = float(y @ s)
        if ys <= 1e-10 * float(y.norm() * s.norm()):
            return
        h = state.extra
        if int(state.step) == 0:
            h.copy_(torch.eye(s.numel(), dtype=h.dtype, device=h.device) * (ys / float(y @ y)))
        rho = 1.0 / ys
        hy = h @ y
        # (I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded (H symmetric)
        h.add_(torch.outer(s, s) * (rho * rho * float(y @ hy) + rho) - rho * (torch.outer(hy, s) + torch.outer(s, hy)))

    return _method(name, direction, lr=lr, line_search=line_search, after=after,
                   extra_shape=lambda n: (n, n), max_evaluations=max_evaluations)


def lbfgs(
    lr: float = 1.0, history_size: int = 10, line_search: str = "strong_wolfe", max_evaluations: int = 25
) -> Transform:
    r"""L-BFGS (Nocedal, 1980; N&W Algorithm 7.4): BFGS's direction from the last ``history_size`` pairs
    :math:`(s_i, y_i)` by the two-loop recursion, :math:`H_0 = (y^\top s / y^\top y) I` from the newest pair.
    Memory ``2 m n``. One iteration per ``step(closure)`` (torch.optim.LBFGS does up to ``max_iter`` per step).
    """
    name = "lbfgs"
    lr = _checks.check_positive(name, "lr", lr)
    m = _checks.check_int(name, "history_size", history_size, 1)

    def direction(g: Tensor, state: _IterState, obj: _Objective) -> Tensor:
        k = int(state.step)
        count = int(state.pairs) if k else 0
        if count == 0:
            return -g
        s_all, y_all = state.extra[0, :count], state.extra[1, :count]
        q = g.clone()
        alphas = []
        for i in range(count - 1, -1, -1):
            rho = 1.0 / float(y_all[i] @ s_all[i])
            a = rho * float(s_all[i] @ q)
            alphas.append((a, rho))
            q.add_(y_all[i], alpha=-a)
        gamma = float(s_all[-1] @ y_all[-1]) / float(y_all[-1] @ y_all[-1])
        r = gamma * q
        for i, (a, rho) in zip(range(count), reversed(alphas)):
            b = rho * float(y_all[i] @ r)
            r.add_(s_all[i], alpha=a - b)
        return -r

    def after(state: _IterState, s: Tensor, y: Tensor, g_new: Tensor) -> None:
        if float(y @ s) <= 1e-10 * float(y.norm() * s.norm()):
            return
        pairs = state.extra
        count = int(state.pairs)
        if count == m:
            pairs[:, :-1] = pairs[:, 1:].clone()
            count -= 1
        pairs[0, count], pairs[1, count] = s, y
        state.pairs.fill_(count + 1)

    return _method(name, direction, lr=lr, line_search=line_search, after=after,
                   extra_shape=lambda n: (2, m, n), max_evaluations=max_evaluations)


# ------------------------------------------------------------------------------------------------ Newton


@contextlib.contextmanager
def _backward_builds_graph():
    """While active, ``loss.backward()`` keeps the graph of the gradients (``create_graph=True``), so that the
    gradients the closure leaves in ``.grad`` can be differentiated again: Hessian-vector products from a
    standard torch closure."""
    original = torch.Tensor.backward

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        return original(self, gradient, retain_graph=True, create_graph=True, inputs=inputs)

    torch.Tensor.backward = backward
    try:
        with warnings.catch_warnings():
            # torch warns of the reference cycle parameter <-> gradient graph; _release breaks it after the step
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            yield
    finally:
        torch.Tensor.backward = original


def _graph_gradient(obj: _Objective) -> tuple[list[Tensor], Callable[[Tensor], Tensor]]:
    """Calls the closure once with the gradient graph kept; returns the gradients and ``v -> H v``."""
    with _backward_builds_graph(), torch.enable_grad():
        obj.closure()
    obj.evaluations += 1
    grads = [p.grad for p in obj.params]
    if any(g is None or g.grad_fn is None for g in grads):
        missing = [i for i, g in enumerate(grads) if g is None or g.grad_fn is None]
        for p in obj.params:  # leave plain gradients behind
            if p.grad is not None:
                p.grad = p.grad.detach()
        raise OptregValueError(
            f"newton: the closure's gradients of parameters {missing} carry no graph; the closure must compute the "
            "loss and call loss.backward() (torch's convention), not torch.autograd.grad without create_graph"
        )

    def hvp(v: Tensor) -> Tensor:
        parts = _unflat(v, obj.params)
        return _flat(torch.autograd.grad(grads, obj.params, parts, retain_graph=True)).detach()

    return grads, hvp


def _release(obj: _Objective) -> None:
    for p in obj.params:
        if p.grad is not None:
            p.grad = p.grad.detach()


def _conjugate_gradient(hvp: Callable[[Tensor], Tensor], b: Tensor, damping: float, iters: int,
                        tol: float) -> Tensor:
    """Solves ``(H + a I) x = b`` by CG (N&W Algorithm 5.2), stopping at negative curvature (truncated Newton:
    the direction found so far, or ``b`` itself at the first iteration, N&W Algorithm 7.1)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    target = tol * math.sqrt(rr)
    for i in range(iters):
        hp = hvp(p) + damping * p
        curv = float(p @ hp)
        if curv <= 0:
            return b.clone() if i == 0 else x
        alpha = rr / curv
        x.add_(p, alpha=alpha)
        r.add_(hp, alpha=-alpha)
        rr_new = float(r @ r)
        if math.sqrt(rr_new) <= target:
            break
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
    return x


def newton(
    lr: float = 1.0, damping: float = 0.0, hessian: str = "exact", cg_iterations: int = 50, cg_tol: float = 1e-10,
    line_search: str | None = "armijo", max_evaluations: int = 25,
) -> Transform:
    r"""Newton's method with damping (file 002): :math:`\theta \leftarrow \theta - a (H + \lambda I)^{-1} g`.

    ``hessian="exact"`` forms :math:`H` column by column from Hessian-vector products and solves with a Cholesky
    factorization (small models: ``n`` products a step), adding to the damping until :math:`H + \lambda I` is
    positive definite (a Newton step towards a saddle would otherwise be an ascent direction); ``hessian="cg"``
    is Hessian-free (Martens, 2010): conjugate gradient on products, truncated at negative curvature. The step
    ``a`` is ``lr`` or a backtracking (Armijo) search from it. The closure is called once more per step with the
    gradient graph kept (``loss.backward()`` then builds it).
    """
    name = "newton" if hessian == "exact" else "newton-cg"
    lr = _checks.check_positive(name, "lr", lr)
    damping = _checks.check_nonneg(name, "damping", damping)
    _checks.check_choice(name, "hessian", hessian, ("exact", "cg"))
    cg_iterations = _checks.check_int(name, "cg_iterations", cg_iterations, 1)
    cg_tol = _checks.check_positive(name, "cg_tol", cg_tol)

    def direction(g: Tensor, state: _IterState, obj: _Objective) -> Tensor:
        _, hvp = _graph_gradient(obj)
        try:
            if hessian == "cg":
                return -_conjugate_gradient(hvp, g, damping, cg_iterations, cg_tol)
            n = g.numel()
            eye = torch.eye(n, dtype=g.dtype, device=g.device)
            h = torch.stack([hvp(eye[i]) for i in range(n)], dim=1)
            h = (h + h.T) / 2
            shift = damping
            for _ in range(60):
                chol, info = torch.linalg.cholesky_ex(h + shift * eye)
                if int(info) == 0:
                    return -torch.cholesky_solve(g.unsqueeze(1), chol).squeeze(1)
                shift = max(2 * shift, 1e-3 * float(h.diagonal().abs().max()) + 1e-12)
            return -g
        finally:
            _release(obj)

    return _method(name, direction, lr=lr, line_search=line_search, max_evaluations=max_evaluations)


def newton_cg(
    lr: float = 1.0, damping: float = 0.0, cg_iterations: int = 50, cg_tol: float = 1e-10,
    line_search: str | None = "armijo", max_evaluations: int = 25,
) -> Transform:
    """Hessian-free Newton (Newton-CG): :func:`newton` with ``hessian="cg"``."""
    return newton(lr, damping, "cg", cg_iterations, cg_tol, line_search, max_evaluations)


newton_cg.__name__ = "newton-cg"


def coordinate_descent(lr: float = 1.0, exact: bool = True) -> Transform:
    r"""Cyclic coordinate descent (file 002): each step changes one coordinate, :math:`\theta_i`, in turn.

    ``exact=True`` takes the Newton step along the coordinate, :math:`\theta_i \leftarrow \theta_i - g_i / H_{ii}`
    (exact minimization for a quadratic), with :math:`H_{ii}` from one Hessian-vector product; otherwise
    :math:`\theta_i \leftarrow \theta_i - \text{lr}\, g_i`. On file 002's
    :math:`f = (x_1 - x_2)^2 + a (x_1^2 + x_2^2)` with small ``a`` the coordinates are strongly coupled and it
    crawls: each exact step shrinks the error only by the factor :math:`1/(1+a)`.
    """
    name = "coordinate_descent"
    lr = _checks.check_positive(name, "lr", lr)

    def direction(g: Tensor, state: _IterState, obj: _Objective) -> Tensor:
        i = int(state.step) % g.numel()
        d = torch.zeros_like(g)
        if exact:
            _, hvp = _graph_gradient(obj)
            try:
                e = torch.zeros_like(g)
                e[i] = 1.0
                h_ii = float(hvp(e)[i])
            finally:
                _release(obj)
            d[i] = -g[i] / h_ii if h_ii > 0 else -g[i]
        else:
            d[i] = -g[i]
        return d

    return _method(name, direction, lr=1.0 if exact else lr, line_search=None, fallback=False)


coordinate_descent.__name__ = "coordinate-descent"
