"""torch.optim's options in optreg (amsgrad, dampening, decoupled_weight_decay, lr_decay) and the new aliases
(adamax, radam): their validation, and resuming their new state. Their trajectories are checked against
torch.optim in test_parity_torch.py and test_optim_db.py."""

from __future__ import annotations

import re

import pytest
import torch

import optreg.optim as oo
from optreg.errors import OptregValueError


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("sgd", {"momentum": 0.9, "dampening": 1.5}, "sgd: dampening must be in [0, 1], got 1.5"),
        ("sgd", {"momentum": 0.9, "dampening": -0.1}, "sgd: dampening must be in [0, 1], got -0.1"),
        ("adagrad", {"lr_decay": -0.5}, "adagrad: lr_decay must be in [0, inf), got -0.5"),
        ("adamax", {"beta2": 1.0}, "adamax: beta2 must be in [0, 1), got 1.0"),
        ("radam", {"eps": -1e-8}, "radam: eps must be in [0, inf), got -1e-08"),
        ("radam", {"beta1": 1.0}, "radam: beta1 must be in [0, 1), got 1.0"),
    ],
)
def test_bad_option_is_refused_with_the_field_and_value(name, hparams, message):
    with pytest.raises(OptregValueError, match="^" + re.escape(message) + "$"):
        oo.create(name, [torch.nn.Parameter(torch.zeros(2))], **hparams)


def test_radam_threshold_below_four_is_refused():
    """The rectification ``r_t`` is real only for ``rho_t > 4`` (Liu et al., 2020)."""
    with pytest.raises(OptregValueError, match=r"threshold must be in \[4, inf\], got 3"):
        oo.scale_by_radam(threshold=3)


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
        ("adagrad", {"lr": 0.1, "lr_decay": 0.1}),
        ("adam", {"lr": 0.01, "amsgrad": True}),
        ("radam", {"lr": 0.01}),
        ("adamax", {"lr": 0.01}),
    ],
)
def test_resumed_run_with_new_state_reproduces_the_uninterrupted_one(name, hparams, batches, problem):
    """Save after 10 steps (inside RAdam's unrectified phase), load, continue: bitwise the 40 uninterrupted steps.
    The new state (dampening's and lr_decay's counters, AMSGrad's maximum) survives ``state_dict``."""
    m_full = problem.make_model()
    problem.run(m_full, oo.create(name, m_full.parameters(), **hparams), batches, steps=40)
    m_a = problem.make_model()
    opt_a = oo.create(name, m_a.parameters(), **hparams)
    problem.run(m_a, opt_a, batches, steps=10)
    m_b = problem.make_model(seed=3)
    m_b.load_state_dict(m_a.state_dict())
    opt_b = oo.create(name, m_b.parameters(), **hparams)
    opt_b.load_state_dict(opt_a.state_dict())
    x, y = batches
    problem.run(m_b, opt_b, (torch.cat([x[10:], x[:10]]), torch.cat([y[10:], y[:10]])), steps=30)
    for a, b in zip(m_full.parameters(), m_b.parameters()):
        assert torch.equal(a, b)
