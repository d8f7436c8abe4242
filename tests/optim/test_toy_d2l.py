"""File 003's toy numbers (the interactive book's optimization chapter), reproduced exactly.

Oracle: the printed results of the book's NumPy code, which the issue quotes to 6 decimals.
"""

from __future__ import annotations

import pytest
import torch

import optreg.optim as oo


def _descend(f, x0, optimizer_factory, steps):
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = optimizer_factory([x])
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()
    return x.detach()


@pytest.mark.parametrize("eta, expected", [(0.2, 0.060466), (0.05, 3.486784), (1.1, 61.917364)])
def test_gradient_descent_on_x_squared(eta, expected):
    x = _descend(lambda x: (x**2).sum(), [10.0], lambda p: oo.create("sgd", p, lr=eta), 10)
    assert x.item() == pytest.approx(expected, abs=5e-7)


def test_gradient_descent_on_round_quadratic():
    x = _descend(lambda x: x[0] ** 2 + 2 * x[1] ** 2, [-5.0, -2.0], lambda p: oo.create("sgd", p, lr=0.1), 20)
    assert x.tolist() == pytest.approx([-0.057646, -0.000073], abs=5e-7)


def _elongated(x):
    return 0.1 * x[0] ** 2 + 2 * x[1] ** 2


@pytest.mark.parametrize(
    "name, hparams, expected",
    [
        ("sgd", {"lr": 0.4}, [-0.943467, -0.000073]),
        ("momentum", {"lr": 0.6, "momentum": 0.5}, [0.007188, 0.002553]),
        ("adagrad", {"lr": 0.4, "eps": 0.0, "eps_root": 1e-6}, [-2.382563, -0.158591]),
        ("rmsprop", {"lr": 0.4, "beta": 0.9, "eps": 0.0, "eps_root": 1e-6}, [-0.010599, 0.000000]),
    ],
)
def test_methods_on_elongated_quadratic(name, hparams, expected):
    x = _descend(_elongated, [-5.0, -2.0], lambda p: oo.create(name, p, **hparams), 20)
    assert x.tolist() == pytest.approx(expected, abs=5e-7)
