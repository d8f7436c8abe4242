"""Shared fixtures for the trainer tests: synthetic, learnable data and small models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from optreg.train import Lambda


def _teacher_data(n: int = 96, d: int = 5, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by a random linear teacher (``y = argmax(x W)``): learnable by construction."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    return x, (x @ w).argmax(1)


def _mlp(d: int = 5, c: int = 3, hidden: int = 16, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(d, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, c))
    return nn.Sequential(*layers)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests use tiny tensors: one intra-op thread is faster, and avoids OpenMP oversubscription
    when pytest-xdist runs a worker per core (tens of times slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_data() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return _teacher_data


@pytest.fixture
def make_mlp() -> Callable[..., nn.Module]:
    return _mlp


@pytest.fixture
def same_params() -> Callable[[nn.Module, nn.Module], bool]:
    """Bitwise equality of two models' state dicts."""

    def check(a: nn.Module, b: nn.Module) -> bool:
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    return check


@pytest.fixture
def without_time() -> Callable:
    """A history's records with the wall-clock ``time`` field removed (the one non-reproducible field)."""

    def strip(history) -> tuple[list[dict], list[dict]]:
        epochs = [{k: v for k, v in r.items() if k != "time"} for r in history.epochs]
        return history.iterations, epochs

    return strip


class Interrupted(Exception):
    """Stands for a crash or a kill after some epoch."""


@pytest.fixture
def crash_after() -> Callable[[int], Lambda]:
    """``crash_after(epoch)``: a callback that raises ``crash_after.error`` (:class:`Interrupted`) at the end
    of that epoch, after the Checkpoint callback (so that epoch's checkpoint is on disk)."""

    def make(epoch: int) -> Lambda:
        def hook(trainer, record):
            if trainer.epoch == epoch:
                raise Interrupted

        crash = Lambda(on_epoch_end=hook)
        crash.order = 200
        return crash

    make.error = Interrupted  # type: ignore[attr-defined]
    return make
