"""Tests of the ``penalties`` experiment (section 7.7.1, figure 7.9).

Oracles: SciPy's SLSQP for the constrained optima of figure 7.9 (the l1 ball written smoothly with
``theta = p - q``, ``p, q >= 0``) and for the penalized form (7.58) at the KKT strength; the weights of a
retrained model (same spec, same seed: the same weights) for the fraction of exact zeros the table reports;
scikit-learn's l1-penalized multinomial logistic regression for the proximal method's solution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from optreg import experiments
from optreg.errors import OptregValueError
from optreg.experiments import Context
from optreg.experiments.penalties import (
    METHODS,
    MODELS,
    STRENGTHS,
    constrained_optimum,
    kkt_strength,
    method_setup,
    penalized_path,
    random_problems,
    train_penalized,
    weight_stats,
)
from optreg.regularize import L1, L2

FIGURES = {"fig7_9", "weights", "sweep"}


@pytest.fixture(scope="module")
def quick(run_quick) -> tuple[Context, experiments.Result]:
    return run_quick("penalties")


def test_quick_run_writes_a_claims_table_figures_and_the_sweep(quick, read_csv, read_claims) -> None:
    ctx, result = quick
    assert set(result.figures) == FIGURES
    for name in (*FIGURES, "table.csv", "claims.csv", "table.md", "metrics.csv"):
        assert result.paths[name].is_file() and result.paths[name].stat().st_size > 0
    assert len(read_claims(result)) == 2 + 7 * len(MODELS) + 1
    sweep = read_csv(result.paths["table.csv"])
    strengths = (STRENGTHS[1], STRENGTHS[-1])  # quick mode
    assert [(r["model"], r["method"]) for r in sweep] == [
        (m, k) for m in MODELS for k in METHODS for _ in ([None] if k == "none" else strengths)
    ]
    for r in sweep:
        assert 0 <= float(r["zero_fraction"]) <= float(r["tiny_fraction"]) <= 1
        assert 0 <= float(r["live_zero_fraction"]) <= 1 and 0 <= float(r["test_accuracy"]) <= 1
    labels = {r["label"] for r in ctx.open_store().runs("penalties")}
    assert "softmax regression l1 (proximal) lambda=0.01" in labels and "fig7.9 proximal" in labels


def test_reported_zero_fraction_is_the_weights(quick, read_csv, tmp_path) -> None:
    """Retrain the proximal-l1 setting (same spec and seed: the same weights) and count its zeros directly."""
    _, result = quick
    row = next(
        r
        for r in read_csv(result.paths["table.csv"])
        if r["model"] == "softmax regression" and r["method"] == "l1 (proximal)" and r["lambda"] == "0.01"
    )
    ctx = Context(quick=True, out=tmp_path)
    ctx.begin("check")
    h = train_penalized(ctx, "softmax regression", "l1 (proximal)", 0.01, seed=0, epochs=1)
    weights = [p.detach() for p in h.model.parameters() if p.ndim > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros > 0
    assert float(row["zero_fraction"]) == pytest.approx(zeros, abs=5e-4)  # the table rounds to 4 digits
    biases = [p.detach() for p in h.model.parameters() if p.ndim == 1]
    assert all(bool((b != 0).all()) for b in biases)  # biases are never thresholded (file 004)


def _slsqp(a: np.ndarray, c: np.ndarray, p: int) -> np.ndarray:
    f = lambda t: 0.5 * (t - c) @ a @ (t - c)  # noqa: E731
    if p == 2:
        res = minimize(
            f,
            np.zeros(2),
            method="SLSQP",
            constraints=[{"type": "ineq", "fun": lambda t: 1 - t @ t}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        return res.x
    g = lambda z: f(z[:2] - z[2:])  # noqa: E731  theta = p - q with p, q >= 0, sum(p + q) <= 1
    res = minimize(
        g,
        np.full(4, 0.1),
        method="SLSQP",
        bounds=[(0, None)] * 4,
        constraints=[{"type": "ineq", "fun": lambda z: 1 - z.sum()}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return res.x[:2] - res.x[2:]


@pytest.mark.parametrize("p", [1, 2])
def test_constrained_optimum_matches_scipy(p: int) -> None:
    for a, c in random_problems(25, seed=3):
        np.testing.assert_allclose(constrained_optimum(a, c, p), _slsqp(a, c, p), atol=2e-5)


def test_constrained_optimum_inside_the_ball_is_the_minimum_and_bad_input_raises() -> None:
    a = np.eye(2)
    np.testing.assert_array_equal(constrained_optimum(a, [0.3, -0.2], 1), [0.3, -0.2])
    with pytest.raises(OptregValueError, match="p must be one of"):
        constrained_optimum(a, [2.0, 0.0], 3)
    with pytest.raises(OptregValueError, match="positive definite"):
        constrained_optimum(-a, [2.0, 0.0], 1)


def test_kkt_strength_makes_the_penalized_minimizer_the_constrained_one() -> None:
    """Eq. (7.58) with lambda from the KKT conditions has the same minimizer as (7.59)-(7.60): SciPy on the
    penalized form (smooth with theta = p - q) finds the l1-constrained optimum."""
    for a, c in random_problems(10, seed=4):
        opt = constrained_optimum(a, c, 1)
        lam = kkt_strength(a, c, opt)
        assert lam > 0

        def g(z: np.ndarray, a=a, c=c, lam=lam) -> float:
            return 0.5 * (z[:2] - z[2:] - c) @ a @ (z[:2] - z[2:] - c) + lam * z.sum()

        res = minimize(g, np.full(4, 0.1), method="L-BFGS-B", bounds=[(0, None)] * 4, options={"ftol": 1e-15})
        np.testing.assert_allclose(res.x[:2] - res.x[2:], opt, atol=1e-4)


def test_proximal_path_lands_on_the_axis_and_the_subgradient_path_does_not() -> None:
    a, c = np.array([[1.0, 0.35], [0.35, 0.45]]), np.array([1.7, 0.45])
    opt = constrained_optimum(a, c, 1)
    assert opt[1] == 0.0  # the figure's problem has a sparse l1 optimum
    lam = kkt_strength(a, c, opt)
    prox = penalized_path(a, c, lam, (-0.8, 1.6), method="proximal", steps=400)
    sub = penalized_path(a, c, lam, (-0.8, 1.6), method="subgradient", steps=400)
    assert prox.shape == sub.shape == (401, 2)
    assert prox[-1, 1] == 0.0 and prox[-1, 0] == pytest.approx(opt[0], abs=1e-6)
    assert np.all(sub[-50:, 1] != 0.0)  # hovers around the axis
    assert np.abs(sub[-50:, 1]).max() < 2 * 0.1 * lam  # on a cycle within two steps of size lr * lambda


def test_weight_stats_counts_over_weights_only() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [0.0, -1e-4, 3.0]]))
        model[2].weight.copy_(torch.tensor([[0.0, -4.0]]))
        model[0].bias.zero_()  # biases are not weights: their zeros do not count
    stats = weight_stats(model, dead_inputs=torch.tensor([True, False, False]))
    w = np.array([0.0, 2.0, 0.0, 0.0, -1e-4, 3.0, 0.0, -4.0])
    assert stats["zero_fraction"] == pytest.approx(np.mean(w == 0))
    assert stats["tiny_fraction"] == pytest.approx(np.mean(np.abs(w) < 1e-3))
    assert stats["l1_norm"] == pytest.approx(np.abs(w).sum()) and stats["l2_norm"] == pytest.approx(np.linalg.norm(w))
    live = np.array([2.0, 0.0, -1e-4, 3.0, 0.0, -4.0])  # without the first input's column
    assert stats["live_zero_fraction"] == pytest.approx(np.mean(live == 0))
    with pytest.raises(OptregValueError, match="one flag per input feature"):
        weight_stats(model, dead_inputs=torch.tensor([True]))


def test_method_setup() -> None:
    opt, hp, pen = method_setup("elastic net (proximal)", 0.02)
    assert hp == {"lr": 0.1, "strength": 0.01} and pen == L2(0.01)  # lambda_1 = lambda_2 = lambda / 2 (7.62)
    assert method_setup("l1 smooth (7.61)", 0.02)[2] == L1(0.02, eps=1e-6)
    assert method_setup("none", 0.0)[2] is None
    with pytest.raises(OptregValueError, match="method must be one of"):
        method_setup("l3", 0.1)
    with pytest.raises(OptregValueError, match="strength must be"):
        method_setup("l2", -1.0)


@pytest.mark.slow
def test_proximal_method_reaches_the_l1_logistic_regression_of_sklearn(tmp_path) -> None:
    """Full-batch ISTA (the 'l1 (proximal)' optimizer) on softmax regression minimizes eq. 7.58,
    mean CE + lambda ||W||_1 (bias free): scikit-learn's LogisticRegression(l1_ratio=1, C = 1 / (N lambda))
    minimizes the same objective; the objectives agree and so do most of the zero patterns."""
    from sklearn.linear_model import LogisticRegression

    from optreg.data import load
    from optreg.experiments.penalties import _proximal

    data = load("digits", 0)
    x, y = data.train.x[:600].double(), data.train.y[:600]
    lam = 0.01
    model = torch.nn.Linear(64, 10).double()
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = _proximal(model.parameters(), lr=1.0, strength=lam)
    for _ in range(3000):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def objective(w: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(x @ w.T + b, y) + lam * w.abs().sum())

    sk = LogisticRegression(l1_ratio=1.0, C=1 / (len(y) * lam), solver="saga", tol=1e-8, max_iter=20000)
    sk.fit(x.numpy(), y.numpy())
    ours = objective(model.weight.detach(), model.bias.detach())
    theirs = objective(torch.as_tensor(sk.coef_), torch.as_tensor(sk.intercept_))
    assert ours == pytest.approx(theirs, rel=1e-3)
    zeros_ours, zeros_sk = model.weight.detach().numpy() == 0, sk.coef_ == 0
    assert zeros_ours.mean() > 0.3
    assert np.mean(zeros_ours == zeros_sk) > 0.95
