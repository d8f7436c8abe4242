"""A hyperparameter change that changes the state's structure (momentum turned on or off after the first step).
Oracle: torch.optim.SGD, which creates its momentum buffer lazily at first use and keeps it when momentum is 0."""

from __future__ import annotations

import copy

import pytest
import torch

import optreg.optim as oo

COMPILE = [pytest.param(False, id="eager"), pytest.param(True, id="compiled", marks=pytest.mark.compile)]


def _sgd_pair(problem, compile: bool, momentum: float):
    m_ours, m_torch = problem.make_model(), problem.make_model()
    ours = oo.create("sgd", problem.groups_of(m_ours, None), compile=compile, lr=0.05, momentum=momentum)
    ref = torch.optim.SGD(problem.groups_of(m_torch, None), lr=0.05, momentum=momentum)
    return m_ours, ours, m_torch, ref


def _run_with_momentum_schedule(problem, batches, model, opt, schedule: dict[int, tuple[float, ...]]):
    """Steps of the problem; at the step numbers in ``schedule`` each group's momentum is set to its value."""
    x, y = batches
    for t in range(12):
        for g, value in zip(opt.param_groups, schedule.get(t, ())):
            g["momentum"] = value
        problem.run(model, opt, (x[t:t + 1], y[t:t + 1]), steps=1)


@pytest.mark.parametrize("compile", COMPILE)
@pytest.mark.parametrize("start, schedule", [
    (0.0, {3: (0.9, 0.9)}),  # on
    (0.9, {3: (0.0, 0.0)}),  # off
    (0.0, {3: (0.9, 0.9), 6: (0.0, 0.0), 9: (0.5, 0.5)}),  # on, off, on again: torch resumes its old buffer
    (0.0, {3: (0.9, 0.0), 7: (0.0, 0.8)}),  # one group at a time
], ids=["on", "off", "on-off-on", "per-group"])
def test_turning_momentum_on_and_off_follows_torch_sgd(start, schedule, compile, batches, problem):
    m_ours, ours, m_torch, ref = _sgd_pair(problem, compile, start)
    _run_with_momentum_schedule(problem, batches, m_ours, ours, schedule)
    _run_with_momentum_schedule(problem, batches, m_torch, ref, schedule)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-10
    # the run moved the parameters, and differently from plain SGD (momentum had an effect)
    plain = problem.make_model()
    _run_with_momentum_schedule(problem, batches, plain, oo.create("sgd", plain.parameters(), lr=0.05), {})
    assert problem.max_rel_err(m_ours, plain) > 1e-4


def test_state_kept_across_a_structural_change_and_saved():
    """rmsprop: turning momentum on keeps the squared-gradient average (same key and shape) and adds a zero
    buffer; the state_dict of the new structure loads into a fresh optimizer created with it and continues the
    same (oracle: the uninterrupted run)."""
    torch.manual_seed(0)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    opt = oo.create("rmsprop", [w], lr=0.01)
    grads = [torch.randn(4, dtype=torch.float64) for _ in range(6)]
    w.grad = grads[0]
    opt.step()
    nu = opt.state[w]["1.nu"].clone()
    opt.param_groups[0]["momentum"] = 0.9
    w.grad = grads[1]
    opt.step()
    assert set(opt.state[w]) == {"1.nu", "2.momentum"}
    assert torch.allclose(opt.state[w]["1.nu"], 0.9 * nu + 0.1 * grads[1] ** 2)
    saved, w_saved = copy.deepcopy(opt.state_dict()), w.detach().clone()  # (state_dict holds the live tensors)
    for g in grads[2:]:
        w.grad = g
        opt.step()
    w2 = w_saved.clone().requires_grad_(True)
    fresh = oo.create("rmsprop", [w2], lr=0.01, momentum=0.9)
    fresh.load_state_dict(saved)
    for g in grads[2:]:
        w2.grad = g
        fresh.step()
    assert torch.equal(w, w2)


def test_hyperparameter_change_that_keeps_the_structure_keeps_the_state():
    """momentum 0.9 -> 0.5 changes no state: the buffer goes on (oracle: torch.optim.SGD)."""
    w1 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    ours, ref = oo.create("sgd", [w1], lr=0.1, momentum=0.9), torch.optim.SGD([w2], lr=0.1, momentum=0.9)
    for t in range(6):
        for w, opt in ((w1, ours), (w2, ref)):
            if t == 3:
                opt.param_groups[0]["momentum"] = 0.5
            w.grad = w.detach() ** 2
            opt.step()
    assert torch.allclose(w1, w2, rtol=1e-12)
