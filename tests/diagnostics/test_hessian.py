"""optreg.diagnostics.hessian against the exact Hessian (torch.func.hessian of the flattened loss, the oracle),
numpy's eigh of it, and closed forms on the 2-D toy functions (x^2 - y^2 is a saddle, eq. section 7.1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

from optreg import diagnostics as dg
from optreg.errors import OptregError


def _model(seed: int = 0, hidden: int = 12) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, hidden), torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(hidden, 3)
    ).double()


def _data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def exact_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The oracle: torch.func.hessian of the mean cross-entropy as a function of the flat parameter vector
    (eval mode, so dropout is off)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    was = model.training
    model.eval()

    def loss(v: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            parts[name] = v[i:i + n].view(shape)
            i += n
        return F.cross_entropy(functional_call(model, parts, (x,)), y)

    h = hessian(loss)(flat)
    model.train(was)
    return h


@pytest.fixture(scope="module")
def problem():
    model = _model()
    x, y = _data()
    h = exact_hessian(model, x, y)
    return model, x, y, h, torch.linalg.eigvalsh(h)


def test_hvp_matches_exact_hessian_times_vector(problem):
    model, x, y, h, _ = problem
    v = torch.randn(h.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(dg.hvp(model, F.cross_entropy, (x, y), v), h @ v, rtol=1e-10, atol=1e-12)
    # the list form: one tensor per parameter
    parts = dg.HessianOperator(model, F.cross_entropy, (x, y)).unflatten(v)
    out = dg.hvp(model, F.cross_entropy, (x, y), parts)
    torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]), h @ v, rtol=1e-10, atol=1e-12)


def test_loader_of_uneven_batches_gives_the_full_data_hessian(problem):
    """Batches of 30, 30 and 4: each batch's Hessian weighted by its share (an unweighted mean would be off)."""
    model, x, y, h, _ = problem
    loader = [(x[:30], y[:30]), (x[30:60], y[30:60]), (x[60:], y[60:])]
    v = torch.randn(h.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(dg.hvp(model, F.cross_entropy, loader, v), h @ v, rtol=1e-10, atol=1e-12)
    op = dg.HessianOperator(model, F.cross_entropy, loader)
    torch.testing.assert_close(op.dense(), h, rtol=1e-9, atol=1e-11)


def test_top_and_bottom_eigenvalues_match_eigh_of_the_exact_hessian(problem):
    model, x, y, _, exact = problem
    g = torch.Generator().manual_seed(0)
    top = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=5, which="largest", generator=g)
    assert top.converged
    torch.testing.assert_close(top.values, exact.flip(0)[:5], rtol=1e-4, atol=0)
    bottom = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=5, which="smallest", generator=g)
    assert bottom.converged
    torch.testing.assert_close(bottom.values, exact[:5].flip(0), rtol=1e-4, atol=1e-8)
    both = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=2, which="both", generator=g)
    torch.testing.assert_close(both.values[[0, 1, -2, -1]], exact[[-1, -2, 1, 0]], rtol=1e-4, atol=1e-8)


def test_eigenvectors_satisfy_the_eigen_equation(problem):
    model, x, y, h, _ = problem
    ev = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=3, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        v = ev.vectors[:, i]
        assert torch.linalg.norm(h @ v - ev.values[i] * v) <= 1e-5 * abs(float(ev.values[i]))
        assert float(ev.residuals[i]) <= 1e-5 * float(ev.values.abs().max())


def test_lanczos_needs_far_fewer_products_than_the_dimension(problem):
    """The top 3 eigenvalues to 1e-4 in well under n products (n = 111 here)."""
    model, x, y, h, exact = problem
    ev = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=3, tol=1e-6,
                                generator=torch.Generator().manual_seed(0))
    assert ev.products < h.shape[0] // 2
    torch.testing.assert_close(ev.values, exact.flip(0)[:3], rtol=1e-4, atol=0)


def test_not_converged_is_said_not_silent(problem):
    model, x, y, _, _ = problem
    ev = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=3, tol=1e-12, max_products=6,
                                generator=torch.Generator().manual_seed(0))
    assert ev.products == 6 and not ev.converged


def test_trace_within_two_percent_with_its_standard_error(problem):
    model, x, y, h, _ = problem
    est = dg.hessian_trace(model, F.cross_entropy, (x, y), probes=400, generator=torch.Generator().manual_seed(0))
    exact = float(torch.trace(h))
    assert abs(est.value - exact) <= 0.02 * abs(exact)
    assert abs(est.value - exact) <= 4 * est.stderr  # the stated error bar covers the truth
    assert est.probes == 400 and est.stderr > 0


def test_spectral_density_weights_sum_to_one_and_quadrature_is_exact_for_low_moments(problem):
    """Gauss quadrature on m Lanczos nodes is exact for polynomials of degree < 2m (Golub & Meurant): for each
    probe z, sum_j w_j theta_j^p = z^T H^p z / ||z||^2 for p = 0..3, checked against the exact Hessian and the
    same Rademacher probes; the weights sum to 1."""
    model, x, y, h, exact = problem
    probes, steps = 6, 20
    d = dg.spectral_density(model, F.cross_entropy, (x, y), steps=steps, probes=probes,
                            generator=torch.Generator().manual_seed(0))
    assert d.nodes.shape == d.weights.shape == (probes, steps)
    assert float(d.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((d.weights >= 0).all())
    g = torch.Generator().manual_seed(0)
    n = h.shape[0]
    for i in range(probes):
        z = (2 * torch.randint(0, 2, (n,), generator=g) - 1).double()
        for p in range(4):
            quad = float((d.weights[i] * probes * d.nodes[i] ** p).sum())
            moment = float(z @ torch.linalg.matrix_power(h, p) @ z) / n
            assert quad == pytest.approx(moment, rel=1e-8, abs=1e-12)
    # the extreme nodes reach the extreme eigenvalues (Lanczos converges there first)
    assert float(d.nodes.max()) == pytest.approx(float(exact.max()), rel=1e-6)
    grid = torch.linspace(float(exact.min()) - 1, float(exact.max()) + 1, 4001, dtype=torch.float64)
    density = d.smooth(grid, sigma=0.01)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-3)


def test_model_mode_grads_and_global_rng_left_as_they_were(problem):
    model, x, y, _, _ = problem
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = torch.get_rng_state()
    a = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=2, generator=torch.Generator().manual_seed(5))
    b = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=2, generator=torch.Generator().manual_seed(5))
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[3].weight.grad is None
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.values, b.values)  # a second call gives the same numbers
    model[0].weight.grad = None


def test_classify_the_saddle_minimum_and_maximum_of_toy_functions():
    """Closed forms: x^2 - y^2 has a saddle at 0 (figure 7.1), x^2 + 3y^2 a minimum, -(x^2 + y^2) a maximum."""
    zero = torch.zeros(2, dtype=torch.float64)
    saddle = dg.classify_critical_point(lambda v: v[0] ** 2 - v[1] ** 2, point=zero)
    assert saddle.kind == "saddle"
    assert saddle.largest == pytest.approx(2.0) and saddle.smallest == pytest.approx(-2.0)
    assert dg.classify_critical_point(lambda v: v[0] ** 2 + 3 * v[1] ** 2, point=zero).kind == "minimum"
    assert dg.classify_critical_point(lambda v: -(v[0] ** 2 + v[1] ** 2), point=zero).kind == "maximum"
    moved = dg.classify_critical_point(lambda v: v[0] ** 2 - v[1] ** 2, point=torch.tensor([1.0, 0.0]).double())
    assert moved.kind == "not critical" and moved.grad_norm == pytest.approx(2.0)
    flat = dg.classify_critical_point(lambda v: v[0] ** 2 + v[1] ** 4, point=zero)
    assert flat.kind == "degenerate"


def test_function_form_matches_the_closed_form_hessian():
    """Rosenbrock's Hessian at (1, 1) is [[802, -400], [-400, 200]]."""
    rosen = lambda v: (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2  # noqa: E731
    h = torch.tensor([[802.0, -400.0], [-400.0, 200.0]], dtype=torch.float64)
    ev = dg.hessian_eigenvalues(rosen, k=1, which="both", point=torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(ev.values, torch.linalg.eigvalsh(h).flip(0), rtol=1e-10, atol=1e-10)
    # Hutchinson: z^T H z = tr H + sum_{i != j} z_i z_j H_ij, exact for a diagonal Hessian, off by 2 H_12 = 800
    # either way for Rosenbrock's, so that the standard error is exactly 800 / sqrt(probes) * (sample std)
    quad = lambda v: v[0] ** 2 + 3 * v[1] ** 2  # noqa: E731
    est = dg.hessian_trace(quad, point=torch.zeros(2, dtype=torch.float64), probes=8)
    assert est.value == pytest.approx(8.0) and est.stderr == pytest.approx(0.0, abs=1e-12)
    est = dg.hessian_trace(rosen, point=torch.ones(2, dtype=torch.float64), probes=8)
    assert {round(s) for s in (est.value - 1002,)} <= {round(800 * (2 * k / 8 - 1)) for k in range(9)}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, d: dg.hessian_eigenvalues(m, F.cross_entropy, d, k=1000), "k must be at most"),
        (lambda m, d: dg.hessian_eigenvalues(m, F.cross_entropy, d, k=0), "k must be"),
        (lambda m, d: dg.hessian_eigenvalues(m, F.cross_entropy, d, which="middle"), "which must be"),
        (lambda m, d: dg.hvp(m, lambda o, y: F.cross_entropy(o, y, reduction="none"), d,
                             torch.zeros(111, dtype=torch.float64)), "must be a scalar"),
        (lambda m, d: dg.hvp(m, lambda o, y: F.cross_entropy(o, y) * float("nan"), d,
                             torch.zeros(111, dtype=torch.float64)), "must be finite"),
        (lambda m, d: dg.hvp(m, F.cross_entropy, d, torch.zeros(3)), "flat vector of 111"),
        (lambda m, d: dg.hessian_trace(m, F.cross_entropy, d, probes=0), "probes must be"),
        (lambda m, d: dg.hvp(torch.nn.Sequential(torch.nn.ReLU()), F.cross_entropy, d, torch.zeros(1)),
         "no parameters that require grad"),
        (lambda m, d: dg.hvp(lambda v: v.sum(), None, None, torch.zeros(1)), "point must be"),
    ],
)
def test_bad_input_is_a_clear_optreg_error(problem, call, match):
    model, x, y, _, _ = problem
    with pytest.raises(OptregError, match=match):
        call(model, (x, y))
