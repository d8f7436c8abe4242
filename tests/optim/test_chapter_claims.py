"""The chapter's own claims about the update rules, checked against their closed forms."""

from __future__ import annotations

import pytest
import torch

import optreg.optim as oo


def _quadratic_grad(theta: torch.Tensor) -> torch.Tensor:
    """Gradient of f = 0.5 theta^T A theta + b^T theta with a fixed ill-conditioned A."""
    a = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.1]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    return a @ theta + b


def _run(transform, steps: int = 30, theta0=(1.0, -1.0, 2.0)):
    """Applies ``transform`` to the quadratic; returns the parameter trajectory and the gradients seen."""
    theta = torch.tensor(theta0, dtype=torch.float64)
    state = transform.init([theta])
    thetas, grads = [theta.clone()], []
    for _ in range(steps):
        g = _quadratic_grad(theta)
        grads.append(g)
        (u,), state = transform.update([g], state, [theta])
        theta = theta + u
        thetas.append(theta.clone())
    return thetas, grads


def test_exercise_7_1_momentum_is_ema_of_scaled_negative_gradient():
    """Ex. 7-1: dtheta_t = rho dtheta_{t-1} - alpha g_t is an exponential moving average of -alpha/(1-rho) g."""
    alpha, rho = 0.05, 0.9
    thetas, grads = _run(oo.momentum(lr=alpha, momentum=rho))
    ema = torch.zeros(3, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        ema = rho * ema + (1 - rho) * (-alpha / (1 - rho) * g)  # EMA with weight (1 - rho), started at 0
        assert torch.allclose(thetas[t] - thetas[t - 1], ema, rtol=1e-12, atol=1e-15)


def test_nesterov_book_form_equals_implemented_form_under_change_of_variables():
    """Eqs. 7.15-7.17 evaluate g at theta + rho dtheta; the implemented form stores phi = theta + rho dtheta."""
    alpha, rho = 0.05, 0.9
    phis, _ = _run(oo.nesterov(lr=alpha, momentum=rho))
    theta = phis[0].clone()  # at t = 0, dtheta = 0 so phi_0 = theta_0
    dtheta = torch.zeros(3, dtype=torch.float64)
    for t in range(1, len(phis)):
        dtheta = rho * dtheta - alpha * _quadratic_grad(theta + rho * dtheta)  # eq. 7.17
        theta = theta + dtheta
        assert torch.allclose(phis[t], theta + rho * dtheta, rtol=1e-12, atol=1e-13)


def test_exercise_7_3_weight_decay_equals_l2_for_sgd():
    """Ex. 7-3, first half: for SGD, coupled l2 (7.58), decoupled lr-scaled decay and eq. 7.63 coincide."""
    alpha, lam = 0.1, 0.05
    l2, _ = _run(oo.chain(oo.add_l2(lam), oo.scale_by_learning_rate(alpha)))
    decoupled, _ = _run(oo.chain(oo.add_decayed_weights(lam), oo.scale_by_learning_rate(alpha)))
    eq_7_63, _ = _run(oo.chain(oo.scale_by_learning_rate(alpha), oo.decay_weights(alpha * lam)))
    for a, b, c in zip(l2, decoupled, eq_7_63):
        assert torch.allclose(a, b, rtol=1e-12) and torch.allclose(a, c, rtol=1e-12)


@pytest.mark.parametrize(
    "inner",
    [
        pytest.param(lambda: oo.scale_by_adam(), id="adam"),
        pytest.param(lambda: oo.trace(0.9), id="momentum"),
    ],
)
def test_exercise_7_3_weight_decay_differs_from_l2_for_adam_and_momentum(inner):
    """Ex. 7-3, second half: with Adam (and momentum) the penalty passes through the adaptive/averaged step, so
    l2 (decay before the chain) and decoupled decay (after it) give different trajectories."""
    alpha, lam = 0.05, 0.1
    coupled, _ = _run(oo.chain(oo.add_l2(lam), inner(), oo.scale_by_learning_rate(alpha)))
    decoupled, _ = _run(oo.chain(inner(), oo.add_decayed_weights(lam), oo.scale_by_learning_rate(alpha)))
    gap = max((a - b).abs().max().item() for a, b in zip(coupled, decoupled))
    assert gap > 1e-3


def test_adam_first_step_is_sign_of_gradient_times_lr():
    """Eqs. 7.18-7.22 with bias correction: the first Adam step is -alpha g/(|g| + eps), i.e. about -alpha sign(g)."""
    thetas, grads = _run(oo.adam(lr=0.01), steps=1)
    g = grads[0]
    assert torch.allclose(thetas[1] - thetas[0], -0.01 * g / (g.abs() + 1e-8), rtol=1e-12)


def test_adagrad_matches_closed_form_7_8_7_9():
    """G_t = sum g^2 (7.8), dtheta = -alpha / sqrt(G_t + eps) g (7.9), eps inside the root (chapter default)."""
    alpha, eps = 0.1, 1e-10
    thetas, grads = _run(oo.adagrad(lr=alpha))
    acc = torch.zeros(3, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        acc = acc + g * g
        assert torch.allclose(thetas[t] - thetas[t - 1], -alpha / torch.sqrt(acc + eps) * g, rtol=1e-12)


def test_adadelta_matches_closed_form_7_12_7_13():
    beta, eps = 0.9, 1e-6
    thetas, grads = _run(oo.adadelta(beta=beta, eps_root=eps))
    big_g = torch.zeros(3, dtype=torch.float64)
    dx = torch.zeros(3, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        big_g = beta * big_g + (1 - beta) * g * g  # 7.10
        step = -torch.sqrt(dx + eps) / torch.sqrt(big_g + eps) * g  # 7.13
        dx = beta * dx + (1 - beta) * step * step  # 7.12
        assert torch.allclose(thetas[t] - thetas[t - 1], step, rtol=1e-12)


def test_delta_bar_delta_matches_jacobs_rule():
    """Jacobs (1988): kappa increase if dbar_{t-1} d_t > 0, phi decrease if < 0, dbar = (1-theta) d + theta dbar."""
    lr0, kappa, phi, th = 0.05, 0.01, 0.2, 0.7
    thetas, grads = _run(oo.delta_bar_delta(lr=lr0, increase=kappa, decrease=phi, beta=th))
    rate = torch.full((3,), lr0, dtype=torch.float64)
    bar = torch.zeros(3, dtype=torch.float64)
    for t, d in enumerate(grads, start=1):
        rate = torch.where(bar * d > 0, rate + kappa, torch.where(bar * d < 0, rate * (1 - phi), rate))
        bar = (1 - th) * d + th * bar
        assert torch.allclose(thetas[t] - thetas[t - 1], -rate * d, rtol=1e-12)


def test_masked_l2_penalizes_weights_not_biases():
    """File 004: l2 on the weights only. Biases receive the plain gradient, weights g + lambda w."""
    w = torch.randn(3, 2, dtype=torch.float64)
    b = torch.randn(2, dtype=torch.float64)
    gw, gb = torch.randn(3, 2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    tx = oo.masked(oo.add_l2(0.5), oo.weights_only)
    state = tx.init([w, b])
    (uw, ub), _ = tx.update([gw, gb], state, [w, b])
    assert torch.equal(ub, gb)
    assert torch.allclose(uw, gw + 0.5 * w)


def test_learning_rate_schedule_inside_the_chain_follows_its_closed_form():
    """scale_by_learning_rate accepts a schedule: step t uses alpha_t (here 7.6, alpha_0 beta^t)."""
    sched = lambda t: 0.1 * 0.5**t  # noqa: E731
    thetas, grads = _run(oo.sgd(lr=sched), steps=5)
    for t, g in enumerate(grads):
        assert torch.allclose(thetas[t + 1] - thetas[t], -sched(t) * g, rtol=1e-12)
