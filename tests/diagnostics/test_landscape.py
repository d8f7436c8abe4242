"""optreg.diagnostics.landscape and conditioning against closed forms: a least-squares model is exactly quadratic
(H = 2 [X 1]^T [X 1] / N), ReLU networks are invariant to rescaling one layer by c and the next by 1/c, and
figure 7.5's RNN loss is checked against a plain Python recurrence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from optreg import diagnostics as dg
from optreg.errors import OptregError
from optreg.optim import create
from optreg.train import Trainer


def _least_squares(seed: int = 0):
    """A Linear model at its least-squares optimum (closed form), with the exact Hessian of the mean squared error."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + 0.1 * torch.randn(50, generator=g).double()
    a = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], dim=1)
    sol = torch.linalg.lstsq(a, y.unsqueeze(1)).solution.squeeze(1)
    model = torch.nn.Linear(4, 1).double()
    with torch.no_grad():
        model.weight.copy_(sol[:4].unsqueeze(0))
        model.bias.copy_(sol[4:])
    hess = 2 * a.T @ a / 50
    return model, (x, y.unsqueeze(1)), hess


def _mse(out, y):
    return F.mse_loss(out, y)


def test_interpolate_hits_both_end_points_and_restores_the_model():
    model, data, _ = _least_squares()
    theta_b = dg.flat_parameters(model)
    theta_a = torch.zeros_like(theta_b)
    alphas, losses = dg.interpolate(model, _mse, data, theta_a, theta_b, steps=11)
    assert alphas[0] == 0 and alphas[-1] == 1
    assert float(losses[-1]) == pytest.approx(float(_mse(model(data[0]), data[1])), rel=1e-12)
    assert float(losses[0]) == pytest.approx(float((data[1] ** 2).mean()), rel=1e-12)
    # on an exact quadratic the path is a parabola in alpha: third differences vanish
    assert float(losses.diff(n=3).abs().max()) < 1e-10
    assert torch.equal(dg.flat_parameters(model), theta_b)


def test_filter_normalized_directions_follow_li_et_al():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 5))
    (d,) = dg.filter_normalized_directions(model, 1, generator=torch.Generator().manual_seed(1))
    i = 0
    for p in model.parameters():
        part = d[i:i + p.numel()].view_as(p)
        i += p.numel()
        if p.ndim == 1:
            assert torch.count_nonzero(part) == 0  # biases excluded
        else:
            dims = tuple(range(1, p.ndim))
            norm = torch.linalg.vector_norm
            torch.testing.assert_close(norm(part, dim=dims), norm(p.detach(), dim=dims))


def test_filter_normalized_plane_is_invariant_to_relu_rescaling():
    """Li et al. (2018), sec. 4: scaling layer 1 (weights and bias) by c and layer 2's weights by 1/c leaves a
    ReLU net's function, and the filter-normalized plane around it, unchanged."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 2, (40,))
    base = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).double()
    scaled = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).double()
    c = 7.0
    with torch.no_grad():
        scaled[0].weight.copy_(c * base[0].weight)
        scaled[0].bias.copy_(c * base[0].bias)
        scaled[2].weight.copy_(base[2].weight / c)
        scaled[2].bias.copy_(base[2].bias)
    a = dg.plane(base, F.cross_entropy, (x, y), steps=5, generator=torch.Generator().manual_seed(3))
    b = dg.plane(scaled, F.cross_entropy, (x, y), steps=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.losses, b.losses, rtol=1e-10, atol=1e-12)
    # without filter normalization the plane changes (the invariance is not trivial)
    raw = [torch.randn(a.center.numel(), generator=torch.Generator().manual_seed(k), dtype=torch.float64) * 0.3
           for k in (5, 6)]
    pa = dg.plane(base, F.cross_entropy, (x, y), directions=raw, steps=5)
    pb = dg.plane(scaled, F.cross_entropy, (x, y), directions=raw, steps=5)
    assert float((pa.losses - pb.losses).abs().max()) > 1e-3


def test_plane_centre_is_the_model_and_the_model_is_restored():
    model, data, _ = _least_squares()
    before = dg.flat_parameters(model)
    p = dg.plane(model, _mse, data, steps=5, generator=torch.Generator().manual_seed(0))
    assert float(p.losses[2, 2]) == pytest.approx(float(_mse(model(data[0]), data[1])), rel=1e-12)
    assert torch.equal(dg.flat_parameters(model), before)


def test_trajectory_plane_recovers_a_planar_path():
    """Iterates that move in a 2-D subspace: PCA explains all of the variance with its two directions."""
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    ts = torch.linspace(0, 1, 12, dtype=torch.float64)
    iterates = [t * u + t**2 * v for t in ts.flip(0)]
    d1, d2, coords, explained = dg.trajectory_plane(iterates)
    assert float(explained.sum()) == pytest.approx(1.0, abs=1e-10)
    recon = coords @ torch.stack([d1, d2])
    torch.testing.assert_close(recon, torch.stack(iterates) - iterates[-1], rtol=1e-9, atol=1e-9)


def test_sharpness_at_a_quadratic_minimum_is_half_lambda_r_squared():
    """At the least-squares optimum L(theta + delta) - L = delta^T H delta / 2, at most lambda_max r^2 / 2."""
    model, data, hess = _least_squares()
    lam = float(torch.linalg.eigvalsh(hess).max())
    s = dg.sharpness(model, _mse, data, radius=0.1, generator=torch.Generator().manual_seed(0))
    assert s.top_eigenvalue == pytest.approx(lam, rel=1e-8)
    assert s.max_increase == pytest.approx(0.5 * lam * 0.1**2, rel=1e-6)


def test_conditioning_monitor_matches_the_closed_form_terms():
    """g^T H g with H = 2 A^T A / N exactly, along a real training run; ratio = (lr/2) g^T H g / g^T g."""
    model, (x, y), hess = _least_squares()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    monitor = dg.ConditioningMonitor(_mse, (x, y), every=5)
    opt = create("sgd", model.parameters(), lr=0.05)
    Trainer(model, opt, loss_fn=_mse, batch_size=10, epochs=2, callbacks=[monitor], metrics=("loss",)).fit((x, y))
    assert [r["step"] for r in monitor.records] == [0, 5]
    op = dg.HessianOperator(model, _mse, (x, y))
    g = op.gradient
    last = monitor.measure(model, 0.05)
    assert last["curvature"] == pytest.approx(float(g @ hess @ g), rel=1e-9)
    assert last["grad_sq"] == pytest.approx(float(g @ g), rel=1e-12)
    assert last["ratio"] == pytest.approx(0.5 * 0.05 * float(g @ hess @ g) / float(g @ g), rel=1e-9)


def test_rnn_cliff_loss_is_figure_7_5s_recurrence():
    def plain(w: float, b: float) -> float:
        h = 0.3
        for _ in range(100):
            h = 1 / (1 + math.exp(-(w * h + b)))
        return (h - 0.65) ** 2

    w = torch.tensor([-2.0, 1.0, 4.25, 6.0], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0, -2.1, -3.0], dtype=torch.float64)
    out = dg.rnn_cliff_loss(w, b)
    for i in range(4):
        assert float(out[i]) == pytest.approx(plain(float(w[i]), float(b[i])), rel=1e-12)
    wg, bg = torch.meshgrid(torch.linspace(-4, 8, 5), torch.linspace(-4, 2, 3), indexing="ij")
    assert dg.rnn_cliff_loss(wg, bg).shape == (5, 3)


def test_clipping_bounds_every_step_on_the_cliff():
    """Eq. 7.24: a clipped step is at most lr * threshold long; unclipped, a step on the cliff's face is far longer."""
    start = (4.3, -2.1)
    free = dg.gradient_descent_path(start, lr=2.0, iterations=30)
    clipped = dg.gradient_descent_path(start, lr=2.0, iterations=30, clip=0.5)
    steps_free = free.diff(dim=0).norm(dim=1)
    steps_clipped = clipped.diff(dim=0).norm(dim=1)
    assert float(steps_clipped.max()) <= 2.0 * 0.5 + 1e-12
    assert float(steps_free.max()) > 4 * float(steps_clipped.max())


def test_bad_input_is_a_clear_optreg_error():
    model, data, _ = _least_squares()
    theta = dg.flat_parameters(model)
    with pytest.raises(OptregError, match="theta_a must be a flat vector of 5"):
        dg.interpolate(model, _mse, data, torch.zeros(3), theta)
    with pytest.raises(OptregError, match="span must be"):
        dg.plane(model, _mse, data, span=0)
    with pytest.raises(OptregError, match="directions must be two"):
        dg.plane(model, _mse, data, directions=[theta])
    with pytest.raises(OptregError, match="at least 3"):
        dg.trajectory_plane([theta, theta])
    with pytest.raises(OptregError, match="radius must be"):
        dg.sharpness(model, _mse, data, radius=-1)
    with pytest.raises(OptregError, match="every must be"):
        dg.ConditioningMonitor(_mse, data, every=0)
