"""The proximal l1 step: proximal gradient descent (ISTA) converges to scikit-learn's Lasso with its exact
zeros, while a subgradient l1 penalty never lands on zero (section 7.7.1, figure 7.9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

import optreg.optim as oo
from optreg.errors import OptregValueError
from optreg.optim.proximal import proximal_sgd, soft_threshold
from optreg.regularize import l1


@pytest.fixture(scope="module")
def lasso_problem():
    """A sparse least-squares problem, n > d (strongly convex: ISTA converges linearly), and its lasso."""
    rng = np.random.default_rng(0)
    n, d = 60, 12
    x = rng.normal(size=(n, d))
    w_true = np.zeros(d)
    w_true[[0, 3, 7]] = [2.0, -1.5, 1.0]
    y = x @ w_true + 0.3 * rng.normal(size=n)
    alpha = 0.15
    # sklearn minimizes 1/(2n) ||y - X w||^2 + alpha ||w||_1
    sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(x, y).coef_
    lipschitz = np.linalg.eigvalsh(x.T @ x / n).max()
    return torch.tensor(x), torch.tensor(y), alpha, sk, 1.0 / lipschitz


def smooth_loss(model, x, y):
    """1/(2n) ||y - X w||^2, sklearn's scaling of the squared loss."""
    return 0.5 * ((model(x).squeeze(1) - y) ** 2).mean()


def ista(x, y, alpha, lr, steps, transform):
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1, bias=False).double()
    opt = oo.Optimizer(model.parameters(), transform)
    for _ in range(steps):
        opt.zero_grad()
        smooth_loss(model, x, y).backward()
        opt.step()
    return model.weight.detach()[0].numpy()


def test_ista_converges_to_sklearn_lasso_with_exact_zeros(lasso_problem):
    """Oracle: sklearn.linear_model.Lasso (coordinate descent). Proximal gradient descent with step 1/L on the
    same objective reaches its coefficients to 1e-8, with zeros exactly where Lasso has zeros."""
    x, y, alpha, sk, lr = lasso_problem
    tx = oo.chain(oo.scale_by_learning_rate(lr), oo.prox_l1(alpha, lr=lr))
    w = ista(x, y, alpha, lr, 300, tx)
    assert np.sum(sk == 0) >= 4  # the problem really is sparse
    np.testing.assert_allclose(w, sk, atol=1e-8)
    assert np.array_equal(w == 0, sk == 0)


def test_proximal_sgd_alias_through_the_adapter_with_a_torch_scheduler(lasso_problem):
    """The same method as the alias ``proximal_sgd`` with its hyperparameters in the param group; a torch
    scheduler that halves the lr moves the threshold with the step (the fixed point is still the lasso)."""
    x, y, alpha, sk, lr = lasso_problem
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1, bias=False).double()
    opt = oo.Optimizer(model.parameters(), proximal_sgd, lr=lr, strength=alpha)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[100], gamma=0.5)
    for _ in range(400):
        opt.zero_grad()
        smooth_loss(model, x, y).backward()
        opt.step()
        sched.step()
    w = model.weight.detach()[0].numpy()
    np.testing.assert_allclose(w, sk, atol=1e-8)
    assert np.array_equal(w == 0, sk == 0)


def test_subgradient_l1_penalty_gives_no_exact_zeros(lasso_problem):
    """Figure 7.9's point the other way round: gradient descent on the same objective with the l1 term as a
    penalty (autograd's subgradient) hovers around the lasso's zeros without reaching them."""
    x, y, alpha, sk, lr = lasso_problem
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1, bias=False).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    penalty = l1(alpha)
    for _ in range(300):
        opt.zero_grad()
        (smooth_loss(model, x, y) + penalty(model)).backward()
        opt.step()
    w = model.weight.detach()[0].numpy()
    zeros = sk == 0
    assert np.sum(w == 0) == 0
    assert np.abs(w[zeros]).max() < 2 * lr * alpha  # close to zero: within a step of it
    np.testing.assert_allclose(w[~zeros], sk[~zeros], atol=0.05)


def test_prox_l1_is_soft_thresholding_after_the_step():
    """Oracle: sign(v) max(|v| - lr lambda, 0) with v = theta - lr g, written with NumPy; exact zeros."""
    theta = torch.tensor([1.0, -0.05, 0.2, -2.0, 0.01], dtype=torch.float64)
    g = torch.tensor([0.5, 0.0, 1.5, -1.0, 0.0], dtype=torch.float64)
    lr, lam = 0.1, 0.5
    p = theta.clone().requires_grad_(True)
    opt = oo.Optimizer([p], oo.chain(oo.scale_by_learning_rate(lr), oo.prox_l1(lam, lr=lr)))
    p.grad = g.clone()
    opt.step()
    v = (theta - lr * g).numpy()
    expected = np.sign(v) * np.maximum(np.abs(v) - lr * lam, 0)
    assert np.array_equal(p.detach().numpy(), expected)
    assert int((p == 0).sum()) == 3
    # the functional update path (no fused write) gives the same zeros and values to rounding
    updates, _ = oo.prox_l1(lam, lr=lr).update([-lr * g], None, [theta])
    new = theta + updates[0]
    assert np.array_equal(new.numpy() == 0, expected == 0)
    np.testing.assert_allclose(new.numpy(), expected, atol=1e-15)


def test_prox_l1_with_a_schedule_reads_its_own_counter():
    """With lr a schedule, the threshold at step t is schedule(t) * lambda, in step with scale_by_learning_rate."""
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)

    def schedule(t):
        return 0.1 / (1 + t)

    opt = oo.Optimizer([p], oo.chain(oo.scale_by_learning_rate(schedule), oo.prox_l1(1.0, lr=schedule)))
    expected = 1.0
    for t in range(3):
        p.grad = torch.zeros(1, dtype=torch.float64)
        opt.step()
        expected = max(expected - schedule(t), 0.0)
        assert p.item() == pytest.approx(expected, abs=1e-15)


def test_soft_threshold_tensor_threshold_matches_softshrink():
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)
    tau = torch.tensor(0.3, dtype=torch.float64)
    assert torch.equal(soft_threshold(x, tau), torch.nn.functional.softshrink(x, 0.3))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strength": -0.1}, r"prox_l1: strength must be in \[0, inf\), got -0.1"),
    ({"strength": 0.1, "lr": -1.0}, r"prox_l1: lr must be in \[0, inf\), got -1.0"),
])
def test_prox_l1_bad_input(kwargs, message):
    with pytest.raises(OptregValueError, match=message):
        oo.prox_l1(**kwargs)


@pytest.mark.compile
@pytest.mark.slow
def test_proximal_sgd_compiled_equals_eager(lasso_problem):
    """The compiled path (lr a 0-d tensor, the formula instead of softshrink) gives the eager numbers and zeros."""
    x, y, alpha, sk, lr = lasso_problem
    results = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(x.shape[1], 1, bias=False).double()
        opt = oo.Optimizer(model.parameters(), proximal_sgd, lr=lr, strength=alpha, compile=compile)
        for _ in range(100):
            opt.zero_grad()
            smooth_loss(model, x, y).backward()
            opt.step()
        results.append(model.weight.detach()[0])
    assert torch.allclose(results[0], results[1], rtol=0, atol=1e-14)
    assert torch.equal(results[0] == 0, results[1] == 0) and int((results[0] == 0).sum()) >= 4
