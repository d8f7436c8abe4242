"""Tests of the ``weight-decay`` experiment (section 7.7.2, eq. 7.63, exercise 7-3).

Oracles: the closed forms of the updates, checked on the parameters and gradients the runs recorded step by
step (eq. 7.63, ``(1 - w) theta - alpha g``; SGD with the l2 penalty, ``theta - alpha (g + lambda theta)``; the
momentum velocity's penalty part on a constant theta, ``lambda theta (1 - rho^t) / (1 - rho)``); torch.optim.Adam's
own second moment for :class:`GradientHistory`; SciPy's Welch t statistic for the 2-SE rule. No verdict of a
noisy claim is asserted.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from optreg import experiments
from optreg.errors import OptregValueError
from optreg.experiments import Context
from optreg.experiments.weight_decay import (
    COMPARISONS,
    LAMBDA,
    PAIR_SETUPS,
    SGD_LR,
    GradientHistory,
    Trajectory,
    effective_shrinkage,
    max_difference,
    roundoff_bound,
    sgd_7_63,
    shrinkage_stats,
    train_setup,
    weight_decay_7_63,
)
from optreg.train import Trainer

FIGURES = {"difference", "sweep", "shrinkage"}


@pytest.fixture(scope="module")
def quick(run_quick) -> tuple[Context, experiments.Result]:
    return run_quick("weight-decay")


def test_quick_run_writes_the_claims_table_and_figures(quick, read_csv, read_claims) -> None:
    ctx, result = quick
    assert set(result.figures) == FIGURES
    assert read_claims(result)
    sweep = read_csv(result.paths["table.csv"])  # the sweep: one row per method and strength
    assert sweep and {"method", "lambda"} <= set(sweep[0])
    for name in FIGURES:
        assert result.paths[name].stat().st_size > 0
    # quick mode: one seed; every pair in float64, the SGD pair in float32, the sweep's base and 2 x 2 runs
    assert len(ctx.run_ids) == len(PAIR_SETUPS) + 2 + 1 + 2 * 2


def test_reported_sgd_equivalence_is_float64_round_off(quick) -> None:
    """The first claim's number: l2 penalty vs eq. 7.63 in float64 differ by no more than round-off (the closed
    form says they are equal), while the decay itself moved the weights by far more."""
    _, result = quick
    row = result.claims[0]
    assert row["claim"].startswith("SGD: the l2 penalty")
    found = re.search(r"max \|diff\| (\S+) \(bound (\S+)\); the decay itself moved the weights by up to (\S+) ",
                      row["measured"])  # fmt: skip
    assert found, row["measured"]
    gap, bound, effect = (float(v) for v in found.groups())
    assert gap <= bound < 1e-12
    assert effect > 1e-5


def test_sgd_runs_follow_the_closed_forms_and_agree_to_round_off(tmp_path) -> None:
    """Oracle: the closed forms, on the recorded (theta_{t-1}, g_t, theta_t) of each step. Eq. 7.63's run:
    theta_t = (1 - alpha lambda) theta_{t-1} - alpha g_t with g_t the data gradient; the penalty's run: theta_t =
    theta_{t-1} - alpha g_t with g_t = data gradient + lambda theta_{t-1} (autograd). Then the two trajectories
    agree to float64 round-off, and both differ from the run without decay."""
    ctx = Context(quick=True, out=tmp_path)
    ctx.begin("weight-decay")
    data = ctx.load_data(0)
    runs = {}
    for name in ("sgd 7.63", "sgd l2 penalty", "sgd none"):
        t = Trajectory(grads=True)
        train_setup(ctx, name, seed=0, epochs=2, data=data, callbacks=[t])
        runs[name] = t
    decay, penalty = runs["sgd 7.63"], runs["sgd l2 penalty"]
    w = SGD_LR * LAMBDA
    assert decay.thetas[0].dtype == torch.float64 and len(decay.thetas) == len(decay.grads) + 1 > 10
    for prev, g, new in zip(decay.thetas, decay.grads, decay.thetas[1:]):
        torch.testing.assert_close(new, (1 - w) * prev - SGD_LR * g, rtol=0, atol=1e-15)
    for prev, g, new in zip(penalty.thetas, penalty.grads, penalty.thetas[1:]):
        torch.testing.assert_close(new, prev - SGD_LR * g, rtol=0, atol=1e-15)
    # the penalty's gradient is the data gradient plus lambda theta: the same data gradients as eq. 7.63's run
    for prev, g_pen, g_data in zip(penalty.thetas, penalty.grads, decay.grads):
        torch.testing.assert_close(g_pen - LAMBDA * prev, g_data, rtol=0, atol=1e-13)
    gap = max(max_difference(penalty.thetas, decay.thetas))
    assert gap <= roundoff_bound(penalty.thetas, torch.float64) < 1e-12
    assert max(max_difference(decay.thetas, runs["sgd none"].thetas)) > 1e-5


def test_sgd_7_63_with_momentum_matches_its_closed_form() -> None:
    """theta_t = (1 - w) theta_{t-1} - alpha m_t, m_t = rho m_{t-1} + g_t (the decay outside the velocity)."""
    alpha, w, rho = 0.1, 0.01, 0.9
    theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = weight_decay_7_63([theta], lr=alpha, decay=w, momentum=rho)
    expected, m = theta.detach().clone(), torch.zeros(3, dtype=torch.float64)
    grads = [torch.tensor(g, dtype=torch.float64) for g in ([0.3, -0.1, 2.0], [-1.0, 0.5, 0.25], [0.2, 0.2, -0.7])]
    for g in grads:
        theta.grad = g.clone()
        opt.step()
        m = rho * m + g
        expected = (1 - w) * expected - alpha * m
        torch.testing.assert_close(theta.detach(), expected, rtol=1e-15, atol=1e-15)


def test_sgd_7_63_rejects_bad_hyperparameters() -> None:
    with pytest.raises(OptregValueError, match="momentum"):
        sgd_7_63(momentum=-0.5)
    with pytest.raises(OptregValueError, match="weight_decay"):
        sgd_7_63(decay=-1.0)


def test_effective_shrinkage_on_a_constant_theta_is_the_geometric_sum() -> None:
    """With theta fixed, m^lambda_t = lambda theta (1 - rho^t) / (1 - rho): s_t = alpha lambda (1 - rho^t) / (1 - rho);
    without momentum it is eq. 7.63's w = alpha lambda at every step."""
    theta = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    alpha, lam, rho = 0.01, 0.005, 0.9
    s = effective_shrinkage([theta] * 41, alpha, lam, rho)
    assert len(s) == 40
    np.testing.assert_allclose(s, [alpha * lam * (1 - rho**t) / (1 - rho) for t in range(1, 41)], rtol=1e-12)
    np.testing.assert_allclose(effective_shrinkage([theta] * 5, alpha, lam, 0.0), [alpha * lam] * 4, rtol=1e-12)
    with pytest.raises(OptregValueError, match="lr"):
        effective_shrinkage([theta] * 3, 0.0, lam, rho)


def test_gradient_history_is_adams_own_second_moment() -> None:
    """Oracle: torch.optim.Adam's exp_avg_sq / (1 - beta2^T) after a run without weight decay."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > x[:, 1]).long()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.999))
    hist = GradientHistory(beta2=0.999)
    Trainer(model, opt, batch_size=16, epochs=3, seed=0, callbacks=[hist]).fit((x, y))
    assert hist.steps == 18
    for p, v_hat in zip(model.parameters(), hist.v_hat):
        ref = opt.state[p]["exp_avg_sq"] / (1 - 0.999**hist.steps)
        torch.testing.assert_close(v_hat, ref, rtol=1e-12, atol=1e-18)


def test_shrinkage_stats_on_known_ratios() -> None:
    """A model whose weights are the base's times a factor that grows with sqrt(v_hat): Spearman 1, the bin medians
    the factors; the weights on dead inputs (v_hat = 0) are left out of the correlation and reported apart."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    v_hat = []
    with torch.no_grad():
        for k, (p, q) in enumerate(zip(model.parameters(), base.parameters())):
            v = torch.arange(1, p.numel() + 1, dtype=torch.float64).reshape(p.shape) * 10.0**k
            if k == 0:
                v[:, 0] = 0.0  # input 0 is dead: no gradient ever
            v_hat.append(v)
            factor = 1 - 1 / (1 + v.sqrt())
            p.copy_(q * torch.where(v > 0, factor, torch.full_like(v, 0.25)))
    dead = torch.tensor([True, False, False, False])
    out = shrinkage_stats(model, base, v_hat, dead, bins=4)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["dead_ratio"] == pytest.approx(0.25)
    assert len(out["centers"]) == len(out["medians"]) == 4
    assert out["medians"] == sorted(out["medians"]) and out["centers"] == sorted(out["centers"])
    assert shrinkage_stats(model, base, v_hat)["dead_ratio"] is None


def test_comparisons_name_recorded_setups() -> None:
    names = set(PAIR_SETUPS) | {f"{n} float32" for n in ("sgd l2 penalty", "sgd 7.63")}
    assert all(a in names and b in names for _, a, b, _ in COMPARISONS)
