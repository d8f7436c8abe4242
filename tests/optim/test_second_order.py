"""The backtracking line search: every accepted step satisfies the Armijo condition (the closed-form oracle),
and the step before it (a / decrease) did not, unless the first trial was accepted."""

from __future__ import annotations

import pytest
import torch

import optreg.optim as oo

A = torch.tensor([[10.0, 2.0], [2.0, 1.0]], dtype=torch.float64)


def f(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ A @ x + (x**4).sum()


def _closure(opt, x):
    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("lr", [1.0, 0.05])
def test_backtracking_steps_satisfy_armijo_and_are_maximal(lr):
    x = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    opt = oo.create("sgd_linesearch", [x], lr=lr, decrease=0.5, slope=1e-4)
    closure = _closure(opt, x)

    start = f(x.detach()).item()
    for _ in range(15):
        x0 = x.detach().clone()
        f0 = f(x0).item()
        g0 = torch.func.grad(f)(x0)
        opt.step(closure)
        step = opt.state[x]["1.step_size"].item()
        assert torch.allclose(x.detach(), x0 - step * g0)
        assert f(x.detach()).item() <= f0 - 1e-4 * step * g0.dot(g0).item() + 1e-12
        if step < lr:
            bigger = x0 - 2 * step * g0
            assert f(bigger).item() > f0 - 1e-4 * 2 * step * g0.dot(g0).item()
    assert f(x.detach()).item() < 0.01 * start


def test_line_search_works_inside_a_chain_with_other_transforms():
    """A masked chain: the line search scales the direction given by the transforms before it."""
    x = torch.tensor([3.0, -1.0], dtype=torch.float64, requires_grad=True)
    tx = oo.chain(oo.scale(-1.0), oo.scale_by_backtracking_linesearch(max_step=1.0))
    opt = oo.Optimizer([x], tx)
    closure = _closure(opt, x)

    start = f(x.detach()).item()
    for _ in range(5):
        opt.step(closure)
    assert f(x.detach()).item() < start
