"""Shared fixtures for the optimizer tests: a small float64 MLP problem and a runner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()


@pytest.fixture(scope="session")
def batches():
    """Fixed mini-batches, so every optimizer under comparison sees the same gradients sequence."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 32, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20, 32), generator=g)
    return x, y


def groups_of(model: torch.nn.Module, overrides: list[dict] | None) -> list[dict]:
    """Two parameter groups: the first layer and the last layer, with per-group overrides."""
    first = list(model[0].parameters())
    last = list(model[2].parameters())
    overrides = overrides or [{}, {}]
    return [{"params": first, **overrides[0]}, {"params": last, **overrides[1]}]


def run(model, opt, batches, steps: int = 100, scheduler=None):
    x, y = batches
    for t in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[t % len(x)]), y[t % len(y)])
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return model


def max_rel_err(m1, m2) -> float:
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(m1.parameters(), m2.parameters()))


@pytest.fixture(scope="session")
def problem():
    """The helpers above, as one fixture: ``problem.make_model()``, ``problem.run(...)``..."""
    import types

    return types.SimpleNamespace(make_model=make_model, groups_of=groups_of, run=run, max_rel_err=max_rel_err)
