"""CG, BFGS, L-BFGS, Newton, Newton-CG and coordinate descent (file 002) against SciPy's minimize (the oracle for
the minimum and the evaluation counts), torch.optim.LBFGS(line_search_fn="strong_wolfe"), and closed forms
(the strong Wolfe conditions, the damped Newton step on a quadratic, coordinate descent's 1/(1+a) rate)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch

import optreg.optim as oo
from optreg.errors import OptregError
from optreg.optim import second_order as sec

METHODS = {"cg": "CG", "bfgs": "BFGS", "lbfgs": "L-BFGS-B", "newton": "Newton-CG", "newton-cg": "Newton-CG"}


def rosen(x: torch.Tensor) -> torch.Tensor:
    return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def _minimize(name: str, f, x0: np.ndarray, *, tol: float = 1e-7, max_steps: int = 3000, **hp):
    """Runs optreg's method with step(closure) until ||g|| <= tol; returns (x, f, steps, closure calls)."""
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = oo.create(name, [x], **hp)
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    steps = 0
    for _ in range(max_steps):
        opt.step(closure)
        steps += 1
        with torch.enable_grad():
            g = torch.autograd.grad(f(x), x)[0]
        if float(g.norm()) <= tol:
            break
    return x.detach().numpy(), float(f(x.detach())), steps, calls[0]


def _scipy(method: str, x0: np.ndarray):
    kw = {"jac": so.rosen_der}
    if method == "Newton-CG":
        kw["hess"] = so.rosen_hess
    return so.minimize(so.rosen, x0, method=method, tol=1e-10, **kw)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("dim", [2, 10])
def test_rosenbrock_minimum_and_evaluations_against_scipy(name, dim):
    """The same minimum as scipy.optimize.minimize; closure calls within 3x SciPy's function evaluations plus one
    per step (torch's step(closure) contract evaluates at the start of every step)."""
    x0 = np.array([-1.2, 1.0]) if dim == 2 else np.array([1.3, 0.7, 0.8, 1.9, 1.2, 1.1, 0.9, 1.05, 0.95, 1.0])
    ref = _scipy(METHODS[name], x0)
    x, fx, steps, calls = _minimize(name, rosen, x0)
    np.testing.assert_allclose(x, ref.x, atol=1e-5)
    np.testing.assert_allclose(x, np.ones(dim), atol=1e-5)
    assert fx < 1e-10
    assert calls <= 3 * ref.nfev + steps


def _logistic():
    """Digits 0 vs 1, l2-regularized logistic regression: strictly convex, one minimum."""
    from sklearn.datasets import load_digits

    d = load_digits(n_class=2)
    x = torch.tensor(d.data / 16.0, dtype=torch.float64)
    y = torch.tensor(d.target, dtype=torch.float64)
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)

    def f(w):
        z = xb @ w
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-2 * (w[:-1] ** 2).sum()

    def f_np(w):
        wt = torch.tensor(w, requires_grad=True)
        v = f(wt)
        (g,) = torch.autograd.grad(v, wt)
        return float(v.detach()), g.numpy()

    return f, f_np, xb.shape[1]


@pytest.mark.parametrize("name", ["cg", "bfgs", "lbfgs", "newton", "newton-cg"])
def test_logistic_regression_reaches_scipys_minimum(name):
    f, f_np, n = _logistic()
    ref = so.minimize(f_np, np.zeros(n), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-16})
    x, fx, _, _ = _minimize(name, f, np.zeros(n), tol=1e-8)
    assert fx == pytest.approx(ref.fun, rel=1e-9)
    np.testing.assert_allclose(x, ref.x, atol=1e-4)


def test_lbfgs_matches_torch_lbfgs_minimum():
    """torch.optim.LBFGS(line_search_fn='strong_wolfe') as the peer: the same minimum of the logistic loss."""
    f, _, n = _logistic()
    w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    peer = torch.optim.LBFGS([w], line_search_fn="strong_wolfe", max_iter=500, tolerance_grad=1e-10,
                             tolerance_change=1e-14, history_size=10)

    def closure():
        peer.zero_grad()
        loss = f(w)
        loss.backward()
        return loss

    for _ in range(5):
        peer.step(closure)
    x, fx, _, _ = _minimize("lbfgs", f, np.zeros(n), tol=1e-8)
    assert fx == pytest.approx(float(f(w.detach())), rel=1e-9)
    np.testing.assert_allclose(x, w.detach().numpy(), atol=1e-4)


def test_strong_wolfe_step_satisfies_both_conditions():
    """N&W (3.7): sufficient decrease and the curvature condition, checked at the returned step."""
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)

    def f(x):
        return 0.5 * x @ a @ x + (x**4).sum()

    x = torch.tensor([2.0, -1.5], dtype=torch.float64, requires_grad=True)

    def closure():
        x.grad = None
        loss = f(x)
        loss.backward()
        return loss

    f0 = float(closure())
    g0 = x.grad.clone()
    obj = sec._Objective(closure, [x], x.detach().clone())
    d = -g0
    for first in (1e-3, 1.0, 10.0):
        step, fa, ga = sec.strong_wolfe(obj, d, f0, g0, first, c1=1e-4, c2=0.9)
        obj.restore()
        assert fa <= f0 + 1e-4 * step * float(g0 @ d)
        assert abs(float(ga @ d)) <= 0.9 * abs(float(g0 @ d))
        assert float(f(x.detach() + step * d)) == pytest.approx(fa)


def test_damped_newton_step_on_a_quadratic_is_the_closed_form():
    """One step, lr = 1, no line search: x1 = x0 - (A + a I)^{-1} (A x0 - b); with a = 0 it is the minimum."""
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x0 = torch.tensor([3.0, 3.0, -3.0], dtype=torch.float64)
    for hessian, damping in (("exact", 0.0), ("exact", 0.7), ("cg", 0.0), ("cg", 0.7)):
        x = x0.clone().requires_grad_(True)
        name = "newton" if hessian == "exact" else "newton-cg"
        opt = oo.create(name, [x], damping=damping, line_search=None)

        def closure(x=x, opt=opt):
            opt.zero_grad()
            loss = 0.5 * x @ a @ x - b @ x
            loss.backward()
            return loss

        opt.step(closure)
        expected = x0 - torch.linalg.solve(a + damping * torch.eye(3, dtype=torch.float64), a @ x0 - b)
        torch.testing.assert_close(x.detach(), expected, rtol=1e-10, atol=1e-10)
        assert x.grad is None or x.grad.grad_fn is None  # no graph left behind on .grad


def test_newton_at_a_saddle_still_descends():
    """f = x^2 - y^2 + y^4 / 4: H is indefinite near the origin; the damped step is still a descent direction."""
    x = torch.tensor([0.5, 0.1], dtype=torch.float64, requires_grad=True)

    def f(v):
        return v[0] ** 2 - v[1] ** 2 + v[1] ** 4 / 4

    opt = oo.create("newton", [x])

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    before = float(f(x.detach()))
    for _ in range(30):
        opt.step(closure)
    assert float(f(x.detach())) < before
    np.testing.assert_allclose(x.detach().numpy(), [0.0, np.sqrt(2.0)], atol=1e-6)  # the true minimum


@pytest.mark.parametrize("a", [0.5, 0.05])
def test_coordinate_descent_crawls_at_the_closed_form_rate(a):
    """File 002: f = (x1 - x2)^2 + a (x1^2 + x2^2); exact minimization along x1 gives x1 = x2 / (1 + a), then x2 =
    x1 / (1 + a): the error shrinks by exactly 1/(1 + a) a step, slowly when a is small."""
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = oo.create("coordinate-descent", [x])

    def closure():
        opt.zero_grad()
        loss = (x[0] - x[1]) ** 2 + a * (x[0] ** 2 + x[1] ** 2)
        loss.backward()
        return loss

    expected = [1.0, 1.0]
    for k in range(8):
        opt.step(closure)
        i = k % 2
        expected[i] = expected[1 - i] / (1 + a)
        np.testing.assert_allclose(x.detach().numpy(), expected, rtol=1e-12)


def test_state_dict_resumes_lbfgs_exactly():
    f, _, n = _logistic()

    def run(steps, resume_at=None):
        w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        opt = oo.create("lbfgs", [w], history_size=4)

        def closure():
            opt.zero_grad()
            loss = f(w)
            loss.backward()
            return loss

        for s in range(steps):
            if s == resume_at:
                saved = {k: v for k, v in opt.state_dict().items()}
                w2 = w.detach().clone().requires_grad_(True)
                opt2 = oo.create("lbfgs", [w2], history_size=4)
                opt2.load_state_dict(saved)
                w, opt = w2, opt2
            opt.step(closure)
        return w.detach()

    torch.testing.assert_close(run(12, resume_at=6), run(12), rtol=0, atol=0)


def test_bad_input_and_missing_closure():
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(OptregError, match="cg: beta_rule must be one of"):
        oo.create("cg", [x], beta_rule="hestenes")
    with pytest.raises(OptregError, match="lbfgs: history_size must be an integer >= 1"):
        oo.create("lbfgs", [x], history_size=0)
    with pytest.raises(OptregError, match="newton: damping must be"):
        oo.create("newton", [x], damping=-1.0)
    with pytest.raises(OptregError, match="line_search must be one of"):
        oo.create("bfgs", [x], line_search="wolfe")
    opt = oo.create("bfgs", [x])
    x.grad = torch.ones(2, dtype=torch.float64)
    with pytest.raises(OptregError, match="needs a closure"):
        opt.step()
