"""Every error optreg.optim raises on bad input is an optreg.OptregError, and also the ValueError / TypeError
that torch.optim raises for the same input (oracle: DESIGN.md's error contract; torch's error types)."""

from __future__ import annotations

import re

import pytest
import torch

import optreg
import optreg.optim as oo


def _w():
    return torch.zeros(2, requires_grad=True)


def _stepped(name: str, **hp):
    w = _w()
    opt = oo.create(name, [w], **hp)
    w.grad = torch.ones(2)
    opt.step()
    return w, opt


def _set_and_step(name: str, key: str, value):
    w, opt = _stepped(name)
    opt.param_groups[0][key] = value
    opt.step()


def _step_with_lr_schedule(schedule):
    w = _w()
    opt = oo.create("sgd", [w], lr=schedule)
    w.grad = torch.ones(2)
    opt.step()


def _sparse_step():
    w = _w()
    opt = oo.create("sgd", [w])
    w.grad = torch.ones(2).to_sparse()
    opt.step()


def _load_foreign_state():
    _, adam = _stepped("adam")
    w = _w()
    oo.create("momentum", [w]).load_state_dict(adam.state_dict())


def _no_params_for_decay():
    tx = oo.add_l2(0.1)
    tx.update([torch.ones(2)], tx.init([torch.ones(2)]), None)


def _mask_of_wrong_length():
    oo.masked(oo.add_l2(0.1), [True]).init([torch.ones(2), torch.ones(3)])


def _factory_declaring_maximize():
    def mine(lr: float = 0.1, maximize: bool = False):
        return oo.sgd(lr)

    oo.Optimizer([_w()], mine)


def _factory_without_default():
    def mine(lr):
        return oo.sgd(lr)

    oo.Optimizer([_w()], mine)


BAD = {
    # construction
    "unknown optimizer": (ValueError, lambda: oo.create("adamm", [_w()])),
    "unknown hyperparameter": (ValueError, lambda: oo.create("adam", [_w()], betaa=0.9)),
    "unknown group key": (ValueError, lambda: oo.create("adam", [{"params": [_w()], "lrr": 0.1}])),
    "lr out of range": (ValueError, lambda: oo.create("sgd", [_w()], lr=-1.0)),
    "beta as a bool": (ValueError, lambda: oo.create("adam", [_w()], beta1=True)),
    "tensor lr not 0-d": (ValueError, lambda: oo.create("adam", [_w()], lr=torch.tensor([0.1, 0.2]))),
    "tensor beta out of range": (ValueError, lambda: oo.create("adam", [_w()], beta1=torch.tensor(1.5))),
    "capturable=True": (ValueError, lambda: oo.create("adam", [_w()], capturable=True)),
    "differentiable=True": (ValueError, lambda: oo.create("sgd", [{"params": [_w()], "differentiable": True}])),
    "maximize not a bool": (ValueError, lambda: oo.create("sgd", [_w()], maximize="yes")),
    "nesterov without momentum": (ValueError, lambda: oo.create("sgd", [_w()], nesterov=True)),
    "hyperparameters for a Transform": (ValueError, lambda: oo.Optimizer([_w()], oo.adam(), lr=0.1)),
    "transform of the wrong kind": (TypeError, lambda: oo.Optimizer([_w()], 3)),
    "factory declares maximize": (TypeError, _factory_declaring_maximize),
    "factory without default": (TypeError, _factory_without_default),
    "register a non-callable": (ValueError, lambda: oo.register("x", 3)),
    # torch's own checks of the parameters (optim_db's error inputs for all optimizers)
    "params is a tensor": (TypeError, lambda: oo.create("sgd", _w())),
    "params is empty": (ValueError, lambda: oo.create("sgd", [])),
    "param is not a tensor": (TypeError, lambda: oo.create("sgd", [1.0])),
    "param is not a leaf": (ValueError, lambda: oo.create("sgd", [_w() * 2])),
    "params in a set": (TypeError, lambda: oo.create("sgd", [{"params": {_w()}}])),
    "param in two groups": (ValueError, lambda: oo.create("sgd", [{"params": [w := _w()]}, {"params": [w]}])),
    "group not a dict": (TypeError, lambda: oo.create("sgd", [_w()]).add_param_group([_w()])),
    "group without params": (ValueError, lambda: oo.create("sgd", [_w()]).add_param_group({"lr": 0.1})),
    # composing transforms
    "chain of a non-transform": (TypeError, lambda: oo.chain(oo.scale(1.0), "adam")),
    "masked of a non-transform": (TypeError, lambda: oo.masked("adam", [True])),
    "mask of the wrong length": (ValueError, _mask_of_wrong_length),
    "decay without params": (ValueError, _no_params_for_decay),
    "clip bounds reversed": (ValueError, lambda: oo.clip(1.0, low=2.0)),
    "clip norm not positive": (ValueError, lambda: oo.clip_by_global_norm(0.0)),
    "schedule lr negative": (ValueError, lambda: _step_with_lr_schedule(lambda t: -1.0)),
    # at a step
    "bad value written into a group": (ValueError, lambda: _set_and_step("adam", "beta2", 1.5)),
    "bad lr written on the scaled path": (ValueError, lambda: _set_and_step("adam", "lr", float("nan"))),
    "bad maximize written into a group": (ValueError, lambda: _set_and_step("sgd", "maximize", None)),
    "sparse gradient": (ValueError, _sparse_step),
    "line search without closure": (ValueError, lambda: _stepped("sgd_linesearch")),
    "foreign state loaded": (ValueError, _load_foreign_state),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_an_optreg_error_of_torchs_type(case):
    error, call = BAD[case]
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, optreg.OptregError), f"{type(info.value).__name__}: {info.value}"
    assert re.match(r"[A-Za-z_][\w<>]*: ", str(info.value)), str(info.value)  # names its owner first, as "adam: ..."
