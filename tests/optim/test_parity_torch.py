"""Parity with torch.optim (the oracle): each alias follows torch's trajectory to 1e-6 relative over 100 steps
on a small MLP, over two parameter groups with their own hyperparameters, eager and compiled.

Run in float64 so that the comparison measures the algorithm, not float32 rounding amplified by 100 steps of
training (in float32 the two agree to a few 1e-6).
"""

from __future__ import annotations

import pytest
import torch

import optreg.optim as oo
from optreg.errors import OptregValueError

# (optreg alias, its hyperparameters, torch class, torch kwargs, per-group overrides as (ours, torch's))
CASES = {
    "sgd": ("sgd", {"lr": 0.1}, torch.optim.SGD, {"lr": 0.1}, ({"lr": 0.05}, {"lr": 0.05})),
    "sgd-momentum": (
        "momentum", {"lr": 0.05, "momentum": 0.9}, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9},
        ({"momentum": 0.5}, {"momentum": 0.5}),
    ),
    "sgd-nesterov": (
        "nesterov", {"lr": 0.05, "momentum": 0.9}, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        ({"lr": 0.1}, {"lr": 0.1}),
    ),
    "adagrad": (
        "adagrad", {"lr": 0.1, "eps": 1e-10, "eps_root": 0.0}, torch.optim.Adagrad, {"lr": 0.1},
        ({"weight_decay": 0.01}, {"weight_decay": 0.01}),
    ),
    "rmsprop": (
        "rmsprop", {"lr": 0.01, "beta": 0.99, "eps": 1e-8, "eps_root": 0.0}, torch.optim.RMSprop, {"lr": 0.01},
        ({"beta": 0.9}, {"alpha": 0.9}),
    ),
    "rmsprop-centered-momentum": (
        "rmsprop", {"lr": 0.01, "beta": 0.99, "eps": 1e-8, "eps_root": 0.0, "momentum": 0.9, "centered": True},
        torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "centered": True},
        ({"lr": 0.005}, {"lr": 0.005}),
    ),
    "adadelta": (
        "adadelta", {"lr": 1.0, "beta": 0.9, "eps_root": 1e-6}, torch.optim.Adadelta, {"lr": 1.0},
        ({"beta": 0.95}, {"rho": 0.95}),
    ),
    "adam": (
        "adam", {"lr": 0.01}, torch.optim.Adam, {"lr": 0.01},
        ({"beta2": 0.99, "weight_decay": 0.01}, {"betas": (0.9, 0.99), "weight_decay": 0.01}),
    ),
    "nadam": (
        "nadam", {"lr": 0.01, "momentum_decay": 4e-3}, torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 4e-3},
        ({"beta1": 0.8}, {"betas": (0.8, 0.999)}),
    ),
    "adamw": (
        "adamw", {"lr": 0.01, "weight_decay": 0.1}, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1},
        ({"weight_decay": 0.5}, {"weight_decay": 0.5}),
    ),
    # torch's options (issue 8), each against the torch class that has it
    "sgd-dampening": (
        "sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}, torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}, ({"dampening": 0.2}, {"dampening": 0.2}),
    ),
    "sgd-dampening-l2": (
        "sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.9, "weight_decay": 0.01}, torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.9, "weight_decay": 0.01}, ({"lr": 0.1}, {"lr": 0.1}),
    ),
    "adagrad-lr_decay": (
        "adagrad", {"lr": 0.1, "eps": 1e-10, "eps_root": 0.0, "lr_decay": 0.05, "initial_accumulator_value": 0.1},
        torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.1},
        ({"lr_decay": 0.5, "weight_decay": 0.01}, {"lr_decay": 0.5, "weight_decay": 0.01}),
    ),
    "adam-amsgrad": (
        "adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}, torch.optim.Adam,
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01},
        ({"beta2": 0.9}, {"betas": (0.9, 0.9)}),
    ),
    "adam-decoupled": (
        "adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, torch.optim.Adam,
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ({"amsgrad": True}, {"amsgrad": True}),
    ),
    "adamw-amsgrad": (
        "adamw", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}, torch.optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
        ({"beta2": 0.95}, {"betas": (0.9, 0.95)}),
    ),
    "nadam-decoupled": (
        "nadam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, torch.optim.NAdam,
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ({"decoupled_weight_decay": False}, {"decoupled_weight_decay": False}),
    ),
    "adamax": (
        "adamax", {"lr": 0.01}, torch.optim.Adamax, {"lr": 0.01},
        ({"beta2": 0.99, "weight_decay": 0.01}, {"betas": (0.9, 0.99), "weight_decay": 0.01}),
    ),
    "radam": (
        "radam", {"lr": 0.01}, torch.optim.RAdam, {"lr": 0.01},
        ({"beta2": 0.99, "weight_decay": 0.01}, {"betas": (0.9, 0.99), "weight_decay": 0.01}),
    ),
    "radam-decoupled": (
        "radam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, torch.optim.RAdam,
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        # beta2 = 0.7: rho_inf = 5.67, so the rectified branch starts late (t = 10, against t = 6) in this group
        ({"beta2": 0.7}, {"betas": (0.9, 0.7)}),
    ),
}


def _pair(problem, case: str, compile: bool, groups: int = 2):
    name, hp, torch_cls, torch_hp, (ours_g, torch_g) = CASES[case]
    m_ours, m_torch = problem.make_model(), problem.make_model()
    if groups == 1:
        ours = oo.create(name, m_ours.parameters(), compile=compile, **hp)
        ref = torch_cls(m_torch.parameters(), **torch_hp)
    else:
        ours = oo.create(name, problem.groups_of(m_ours, [ours_g, {}]), compile=compile, **hp)
        ref = torch_cls(problem.groups_of(m_torch, [torch_g, {}]), **torch_hp)
    return m_ours, ours, m_torch, ref


COMPILE = [pytest.param(False, id="eager"), pytest.param(True, id="compiled", marks=pytest.mark.compile)]
# (compile, groups, steps): two groups with their own hyperparameters for 100 steps, one group for 50; the
# compiled one-group run is slow (it compiles the chain the two-group run has compiled already)
MODES = [
    pytest.param(False, 2, 100, id="eager-two-groups"),
    pytest.param(False, 1, 50, id="eager-one-group"),
    pytest.param(True, 2, 100, id="compiled-two-groups", marks=pytest.mark.compile),
    pytest.param(True, 1, 50, id="compiled-one-group", marks=[pytest.mark.compile, pytest.mark.slow]),
]


@pytest.mark.parametrize(("compile", "groups", "steps"), MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_alias_follows_torch_optim(case, compile, groups, steps, batches, problem):
    from torch._dynamo.utils import counters

    counters.clear()
    m_ours, ours, m_torch, ref = _pair(problem, case, compile=compile, groups=groups)
    problem.run(m_ours, ours, batches, steps=steps)
    problem.run(m_torch, ref, batches, steps=steps)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6
    if compile:  # the whole step compiled: no graph break, no fallback to eager
        assert not counters["graph_break"], dict(counters["graph_break"])
        assert counters["stats"]["unique_graphs"] >= 1
    # the run really moved the parameters (a no-op optimizer would fail the comparison above only by luck)
    assert problem.max_rel_err(m_ours, problem.make_model()) > 1e-3


@pytest.mark.parametrize("case", sorted(CASES))
def test_alias_follows_torch_optim_one_tensor_at_a_time(case, batches, problem, monkeypatch):
    """The eager path's per-tensor mode (used for large tensors) gives torch's trajectory too."""
    import optreg.optim.optimizer as adapter

    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0)
    m_ours, ours, m_torch, ref = _pair(problem, case, compile=False)
    problem.run(m_ours, ours, batches)
    problem.run(m_torch, ref, batches)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6


@pytest.mark.parametrize("compile", COMPILE)
def test_torch_lr_scheduler_drives_optimizer_like_torch(batches, compile, problem):
    """torch.optim.lr_scheduler.StepLR writes group['lr']; ours reads it every step, as torch.optim.Adam does."""
    m_ours, m_torch = problem.make_model(), problem.make_model()
    ours = oo.create("adam", m_ours.parameters(), compile=compile, lr=0.02)
    ref = torch.optim.Adam(m_torch.parameters(), lr=0.02)
    s1 = torch.optim.lr_scheduler.StepLR(ours, step_size=10, gamma=0.5)
    s2 = torch.optim.lr_scheduler.StepLR(ref, step_size=10, gamma=0.5)
    problem.run(m_ours, ours, batches, steps=60, scheduler=s1)
    problem.run(m_torch, ref, batches, steps=60, scheduler=s2)
    assert ours.param_groups[0]["lr"] == pytest.approx(0.02 * 0.5**6)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6


@pytest.mark.parametrize("compile", COMPILE)
def test_state_dict_round_trip_resumes_to_same_numbers(batches, compile, problem):
    """Save after 40 steps, load into a fresh model + optimizer, continue: bitwise equal to 80 uninterrupted."""
    m_full = problem.make_model()
    opt_full = oo.create("nadam", m_full.parameters(), compile=compile, lr=0.01)
    problem.run(m_full, opt_full, batches, steps=80)

    m_a = problem.make_model()
    opt_a = oo.create("nadam", m_a.parameters(), compile=compile, lr=0.01)
    problem.run(m_a, opt_a, batches, steps=40)
    saved_model = {k: v.clone() for k, v in m_a.state_dict().items()}
    saved_opt = opt_a.state_dict()
    assert saved_opt["state"][0]["1.count"].dtype == torch.int64

    m_b = problem.make_model(seed=5)
    m_b.load_state_dict(saved_model)
    opt_b = oo.create("nadam", m_b.parameters(), compile=compile, lr=0.01)
    opt_b.load_state_dict(saved_opt)
    x, y = batches
    problem.run(m_b, opt_b, (torch.cat([x[40:], x[:40]]), torch.cat([y[40:], y[:40]])), steps=40)
    for a, b in zip(m_full.parameters(), m_b.parameters()):
        assert torch.equal(a, b)
    assert opt_b.state_dict()["state"][0]["1.mu_product"].dtype == torch.float64


def test_state_lives_in_torch_state_per_parameter(problem):
    model = problem.make_model()
    opt = oo.create("adam", model.parameters())
    model(torch.randn(2, 6, dtype=torch.float64)).sum().backward()
    opt.step()
    w = model[0].weight
    assert set(opt.state[w]) == {"1.count", "1.mu", "1.nu", "1.beta1_power", "1.beta2_power"}
    assert opt.state[w]["1.mu"].shape == w.shape
    assert int(opt.state[w]["1.count"]) == 1


@pytest.mark.parametrize("nesterov", [False, True], ids=["dampening", "no-dampening-nesterov"])
def test_sgd_momentum_buffer_is_torch_momentum_buffer_step_by_step(nesterov, batches, problem):
    """torch.optim.SGD's ``momentum_buffer`` (the oracle) equals our trace at every step: the first step stores the
    raw gradient (no dampening), the later ones ``rho m + (1 - dampening) g``."""
    dampening = 0.0 if nesterov else 0.7
    m_ours, m_torch = problem.make_model(), problem.make_model()
    kw = {"lr": 0.1, "momentum": 0.9, "dampening": dampening, "nesterov": nesterov}
    ours = oo.create("sgd", m_ours.parameters(), **kw)
    ref = torch.optim.SGD(m_torch.parameters(), **kw)
    w_ours, w_torch = m_ours[0].weight, m_torch[0].weight
    x, y = batches
    for t in range(5):
        for model, opt in ((m_ours, ours), (m_torch, ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[t]), y[t]).backward()
            opt.step()
        if t == 0:
            assert torch.equal(ours.state[w_ours]["1.momentum"], w_torch.grad)
        torch.testing.assert_close(ours.state[w_ours]["1.momentum"], ref.state[w_torch]["momentum_buffer"])
    assert problem.max_rel_err(m_ours, m_torch) < 1e-12


def test_sgd_dampening_with_nesterov_is_refused_like_torch():
    """torch.optim.SGD refuses Nesterov with dampening (the oracle raises ValueError); so does optreg."""
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="dampening"):
        torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5, nesterov=True)
    with pytest.raises(OptregValueError, match="sgd: nesterov=True needs dampening=0"):
        oo.create("sgd", p, lr=0.1, momentum=0.9, dampening=0.5, nesterov=True)


def test_adam_decoupled_weight_decay_is_adamw(batches, problem):
    """torch 2.13: Adam(decoupled_weight_decay=True) is AdamW; optreg's adam(decoupled_weight_decay=True) follows
    torch.optim.AdamW (the oracle) bitwise-close, and its state is laid out as adamw's."""
    m_ours, m_torch = problem.make_model(), problem.make_model()
    ours = oo.create("adam", m_ours.parameters(), lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    ref = torch.optim.AdamW(m_torch.parameters(), lr=0.01, weight_decay=0.1)
    problem.run(m_ours, ours, batches, steps=50)
    problem.run(m_torch, ref, batches, steps=50)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-9
    m_adamw = problem.make_model()
    adamw = oo.create("adamw", m_adamw.parameters(), lr=0.01, weight_decay=0.1)
    problem.run(m_adamw, adamw, batches, steps=1)
    assert set(ours.state[m_ours[0].weight]) == set(adamw.state[m_adamw[0].weight])
