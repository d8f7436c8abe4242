"""torch.optim's group keys and tensor hyperparameters in the adapter (oracle: torch.optim's behaviour and its
error inputs, ``optim_db``'s ``error_inputs_func``: same error type; and optreg's one message format)."""

from __future__ import annotations

import re

import pytest
import torch

import optreg
import optreg.optim as oo


def _p():
    return torch.zeros(2, requires_grad=True)


@pytest.mark.parametrize("key", ["capturable", "differentiable"])
def test_unhonoured_flag_set_to_true_is_refused_naming_key_and_value(key):
    for where in ("constructor", "group"):
        with pytest.raises(ValueError, match=rf"adam: {key} must be False or None, got True \(") as info:
            if where == "constructor":
                oo.create("adam", [_p()], **{key: True})
            else:
                oo.create("adam", [{"params": [_p()], key: True}])
        assert isinstance(info.value, optreg.OptregError)


@pytest.mark.parametrize("key, value", [("capturable", False), ("capturable", None), ("differentiable", False),
                                        ("foreach", True), ("foreach", None), ("fused", True), ("fused", False)])
def test_flags_torch_uses_for_its_implementation_are_accepted(key, value):
    """foreach / fused choose an implementation of the same update in torch: accepted, kept in the group."""
    opt = oo.create("adam", [{"params": [_p()], key: value}], lr=0.1)
    assert opt.param_groups[0][key] is value
    opt = oo.create("sgd", [_p()], **{key: value})
    assert opt.param_groups[0][key] is value


@pytest.mark.parametrize("key", ["foreach", "fused"])
def test_implementation_flag_must_be_none_or_bool(key):
    with pytest.raises(ValueError, match=rf"sgd: {key} must be None, True or False, got 'yes'"):
        oo.create("sgd", [_p()], **{key: "yes"})


def test_bookkeeping_keys_are_accepted_in_groups():
    """initial_lr (torch's schedulers write it), name and named parameters (torch's param_names) pass through."""
    w, b = torch.zeros(2, 2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = oo.create("sgd", [{"params": [("w", w), ("b", b)], "name": "layer", "initial_lr": 0.1}], lr=0.1)
    group = opt.param_groups[0]
    assert group["name"] == "layer" and group["initial_lr"] == 0.1 and group["param_names"] == ["w", "b"]


def test_unknown_group_key_names_the_key_and_lists_what_is_allowed():
    with pytest.raises(ValueError) as info:
        oo.create("sgd", [{"params": [_p()], "amsgrad2": True}])
    msg = str(info.value)
    assert msg.startswith("sgd: unknown hyperparameter 'amsgrad2' (= True); allowed: lr, momentum")
    for allowed in ("maximize", "foreach", "fused", "capturable", "differentiable", "initial_lr", "name"):
        assert allowed in msg
    assert isinstance(info.value, optreg.OptregError)


def test_ready_made_transform_takes_only_torch_flags():
    tx = oo.chain(oo.scale_by_learning_rate(0.1))
    opt = oo.Optimizer([_p()], tx, maximize=True, foreach=False)
    assert opt.param_groups[0]["maximize"] is True
    with pytest.raises(ValueError, match=r"transform: unknown hyperparameter 'lr'"):
        oo.Optimizer([{"params": [_p()], "lr": 0.1}], tx)


def test_torch_lr_scheduler_keys_are_kept(batches, problem):
    """torch's schedulers add initial_lr to every group; the optimizer still steps and saves its state."""
    model = problem.make_model()
    opt = oo.create("adam", model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))
    problem.run(model, opt, batches, steps=3, scheduler=sched)
    assert opt.param_groups[0]["initial_lr"] == 0.01
    assert opt.state_dict()["param_groups"][0]["initial_lr"] == 0.01


# ------------------------------------------------------------------------------ torch's own checks of params


@pytest.mark.parametrize("params, error, pattern", [
    (torch.zeros(1, requires_grad=True), TypeError, "params argument given to the optimizer should be an iterable"),
    ("dup", ValueError, "some parameters appear in more than one parameter group"),
    ("names", ValueError, "all optimizer params should be with/without names"),
    ([], ValueError, "optimizer got an empty parameter list"),
])
def test_torch_param_errors_keep_their_type_and_message_and_are_optreg_errors(params, error, pattern):
    """optim_db's error inputs for every optimizer: the same error type and message as torch, as an OptregError."""
    p = torch.zeros(1, 1, requires_grad=True)
    if params == "dup":
        params = [{"params": p}, {"params": p}]
    elif params == "names":
        params = [("weight", p), torch.zeros(1, 1, requires_grad=True)]
    with pytest.raises(error, match=re.escape(pattern)) as info:
        oo.create("adam", params)
    assert isinstance(info.value, optreg.OptregError)


def test_param_group_that_is_not_a_dict_or_lacks_params():
    opt = oo.create("sgd", [_p()])
    with pytest.raises(TypeError, match="sgd: param_group must be a dict, got list") as info:
        opt.add_param_group([_p()])
    assert isinstance(info.value, optreg.OptregError)
    with pytest.raises(ValueError, match=r"sgd: a param group needs 'params', got keys \['lr'\]"):
        opt.add_param_group({"lr": 0.1})


# ------------------------------------------------------------------------------- tensor hyperparameters


@pytest.mark.parametrize("name, field, value, message", [
    ("sgd", "lr", torch.tensor([0.1, 0.2]),
     "sgd: lr must be a real number or a real 0-d tensor, got tensor([0.1000, 0.2000])"),
    ("adadelta", "lr", torch.tensor([0.1, 0.2]), "adadelta: lr must be a real number or a real 0-d tensor"),
    ("adam", "lr", torch.tensor(-1.0), "adam: lr must be in [0, inf), got tensor(-1.)"),
    ("adam", "beta1", torch.tensor(1.5), "adam: beta1 must be in [0, 1), got tensor(1.5000)"),
    ("rmsprop", "beta", torch.tensor(True),
     "rmsprop: beta must be a real number or a real 0-d tensor, got tensor(True)"),
    ("momentum", "momentum", torch.tensor(float("nan")), "momentum: momentum must be in [0, 1), got tensor(nan)"),
])
def test_tensor_hyperparameter_is_checked_like_a_number(name, field, value, message):
    """A tensor must be 0-d and in range; the message is optreg's format, showing the tensor as given."""
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        oo.create(name, [_p()], **{field: value})
    assert isinstance(info.value, optreg.OptregError)


def test_tensor_hyperparameter_written_into_a_group_later_is_checked_at_the_next_step():
    w = _p()
    opt = oo.create("adam", [w], lr=0.1)
    w.sum().backward()
    opt.step()
    opt.param_groups[0]["lr"] = torch.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match=r"adam: lr must be a real number or a real 0-d tensor"):
        opt.step()


COMPILE = [pytest.param(False, id="eager"), pytest.param(True, id="compiled", marks=pytest.mark.compile)]


@pytest.mark.parametrize("compile", COMPILE)
@pytest.mark.parametrize("name, torch_cls", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_tensor_lr_follows_torch_with_tensor_lr(name, torch_cls, compile, batches, problem):
    """A 0-d tensor lr, changed in place midway, as torch.optim allows. Oracle: torch.optim with the same tensor
    lr (for-loop path). Compiled: the tensor is not read with .item() in the traced step (no graph break)."""
    from torch._dynamo.utils import counters

    counters.clear()
    models = []
    for make in (lambda m, lr: oo.create(name, m.parameters(), compile=compile, lr=lr),
                 lambda m, lr: torch_cls(m.parameters(), lr=lr, foreach=False)):
        lr = torch.tensor(0.02, dtype=torch.float64)
        model = problem.make_model()
        opt = make(model, lr)
        problem.run(model, opt, batches, steps=5)
        lr.fill_(0.01)
        problem.run(model, opt, batches, steps=5)
        models.append(model)
    assert problem.max_rel_err(*models) < 1e-10
    if compile:
        assert not counters["graph_break"], dict(counters["graph_break"])
