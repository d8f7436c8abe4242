"""Every invalid hyperparameter raises a ValueError naming the optimizer, the field, the value and the range."""

from __future__ import annotations

import math
import re

import pytest
import torch

import optreg
import optreg.optim as oo

BAD = [
    # (optimizer, field, bad value, the allowed range as printed)
    *[(name, "lr", v, "[0, inf)") for name in ("sgd", "momentum", "adam", "rmsprop", "adagrad") for v in (-0.1,)],
    ("adam", "lr", math.nan, "[0, inf)"),
    ("adam", "lr", math.inf, "[0, inf)"),
    ("sgd", "lr", -1e-3, "[0, inf)"),
    ("adam", "beta1", 1.0, "[0, 1)"),
    ("adam", "beta2", 1.5, "[0, 1)"),
    ("adamw", "beta2", -0.1, "[0, 1)"),
    ("nadam", "beta1", 1.2, "[0, 1)"),
    ("rmsprop", "beta", 1.0, "[0, 1)"),
    ("adadelta", "beta", -0.5, "[0, 1)"),
    ("momentum", "momentum", 1.0, "[0, 1)"),
    ("nesterov", "momentum", -0.9, "[0, 1)"),
    ("adam", "eps", -1e-8, "[0, inf)"),
    ("rmsprop", "eps_root", -1e-8, "[0, inf)"),
    ("adagrad", "eps_root", -1.0, "[0, inf)"),
    ("adadelta", "eps_root", -1e-6, "[0, inf)"),
    ("adamw", "weight_decay", -0.01, "[0, inf)"),
    ("nadam", "momentum_decay", -1.0, "[0, inf)"),
    ("delta_bar_delta", "decrease", 1.0, "[0, 1)"),
]


@pytest.mark.parametrize("name, field, value, allowed", BAD)
def test_invalid_hyperparameter_raises_clear_value_error(name, field, value, allowed):
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError) as info:
        oo.create(name, p, **{field: value})
    msg = str(info.value)
    assert msg.startswith(f"{name}: {field} must be in {allowed}"), msg
    assert repr(value) in msg
    assert isinstance(info.value, optreg.OptregError)


@pytest.mark.parametrize("name, field, value", [("adam", "beta2", 1.5), ("sgd", "lr", -1.0)])
def test_invalid_hyperparameter_in_a_param_group_raises(name, field, value):
    groups = [{"params": [torch.zeros(2, requires_grad=True)]}, {"params": [torch.zeros(1)], field: value}]
    with pytest.raises(ValueError, match=re.escape(f"{name}: {field} must be in")):
        oo.create(name, groups)


def test_invalid_value_written_by_hand_into_a_group_is_caught_at_the_next_step():
    x = torch.zeros(2, requires_grad=True)
    opt = oo.create("adam", [x], compile=False)
    opt.param_groups[0]["beta1"] = 2.0
    x.sum().backward()
    with pytest.raises(ValueError, match=r"adam: beta1 must be in \[0, 1\), got 2.0"):
        opt.step()


def test_unknown_optimizer_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"create: optimizer must be one of .*adam.*got 'adamm'"):
        oo.create("adamm", [torch.zeros(1, requires_grad=True)])


def test_unknown_keyword_names_optimizer_field_value_and_allowed():
    with pytest.raises(ValueError, match=r"adam: unknown hyperparameter 'betaa' \(= 0.9\); allowed: lr, beta1"):
        oo.create("adam", [torch.zeros(1, requires_grad=True)], betaa=0.9)


def test_unknown_key_in_param_group_is_refused():
    with pytest.raises(ValueError, match=r"sgd: unknown hyperparameter 'lrr'"):
        oo.create("sgd", [{"params": [torch.zeros(1, requires_grad=True)], "lrr": 0.1}])


def test_nesterov_without_momentum_is_refused_like_torch():
    with pytest.raises(ValueError, match=r"sgd: nesterov=True needs momentum"):
        oo.create("sgd", [torch.zeros(1, requires_grad=True)], nesterov=True)


def test_bool_is_not_a_learning_rate():
    with pytest.raises(ValueError, match="sgd: lr must be a real number"):
        oo.create("sgd", [torch.zeros(1, requires_grad=True)], lr=True)


def test_ready_made_transform_takes_no_hyperparameters():
    with pytest.raises(ValueError, match="a ready-made Transform takes no hyperparameters"):
        oo.Optimizer([torch.zeros(1, requires_grad=True)], oo.adam(), lr=0.1)


def test_available_lists_every_alias():
    assert {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "nadam", "adamw"} <= set(
        oo.available()
    )


def test_closure_less_step_for_a_method_that_needs_one_raises():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = oo.create("sgd_linesearch", [w])
    (w**2).sum().backward()
    with pytest.raises(ValueError, match=r"sgd_linesearch: step\(\) needs a closure .* got closure=None"):
        opt.step()


@pytest.mark.parametrize("name", ["sgd", "adam", "momentum"])
def test_an_lr_beyond_the_parameters_dtype_is_refused_before_a_step(name):
    """Oracle: torch.finfo(float32).max; torch itself overflows mid-step ("value cannot be converted to type
    float without overflow"), so the optimizer refuses it when the group is planned, naming the dtype."""
    p = [torch.zeros(2, requires_grad=True)]
    match = rf"{name}: lr must fit the parameters' dtype torch.float32"
    with pytest.raises(optreg.errors.OptregValueError, match=match):
        opt = oo.create(name, p, lr=1e300)
        p[0].grad = torch.ones(2)
        opt.step()
    q = [torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    opt = oo.create(name, q, lr=1e300)  # float64 holds it
    q[0].grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    assert torch.isfinite(q[0]).all()


def test_an_lr_raised_beyond_the_dtype_mid_run_is_refused_too():
    """The scheduled fast path (a new lr on a scaled plan) keeps the same bound: oracle torch.finfo(float32).max."""
    w = torch.zeros(2, requires_grad=True)
    opt = oo.create("adam", [w], lr=0.1)
    for lr in (0.1, 0.05):
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.ones(2)
        opt.step()
    assert opt._plans[0].scaled
    opt.param_groups[0]["lr"] = 1e300
    with pytest.raises(optreg.errors.OptregValueError, match=r"adam: lr must fit the parameters' dtype"):
        opt.step()
