"""``from_torch`` / ``torch_hparams``: torch.optim's keywords in optreg's terms, with torch.optim as the oracle
(the same trajectory, the same refusals). optim_db's configurations run in test_optim_db.py."""

from __future__ import annotations

import inspect

import pytest
import torch

import optreg.optim as oo
from optreg.errors import OptregError, OptregTypeError, OptregValueError
from optreg.optim import torch_compat


def _trajectories_agree(problem, batches, torch_cls, params_of, steps=50, compile=False, **kwargs) -> float:
    m_ours, m_torch = problem.make_model(), problem.make_model()
    ours = oo.from_torch(torch_cls, params_of(m_ours), compile=compile, **kwargs)
    ref = torch_cls(params_of(m_torch), **kwargs)
    problem.run(m_ours, ours, batches, steps=steps)
    problem.run(m_torch, ref, batches, steps=steps)
    assert problem.max_rel_err(m_torch, problem.make_model()) > 1e-4  # it moved
    return problem.max_rel_err(m_ours, m_torch)


def test_from_torch_adam_with_betas_follows_torch_adam(batches, problem):
    """The issue's example: ``from_torch(torch.optim.Adam, params, lr=1e-3, betas=(0.9, 0.99))``."""
    err = _trajectories_agree(problem, batches, torch.optim.Adam, lambda m: m.parameters(), lr=1e-3, betas=(0.9, 0.99))
    assert err < 1e-6


@pytest.mark.parametrize(
    ("torch_cls", "group"),
    [
        (torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-6}),
        (torch.optim.Adadelta, {"rho": 0.8, "eps": 1e-4}),
        (torch.optim.Adagrad, {"eps": 1e-3, "lr_decay": 0.1}),
        (torch.optim.NAdam, {"betas": (0.8, 0.99), "decoupled_weight_decay": True, "weight_decay": 0.1}),
        (torch.optim.SGD, {"momentum": 0.5, "nesterov": True}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_group_with_torch_keywords_follows_torch(torch_cls, group, batches, problem):
    """A parameter group written with torch's keywords (``rho``, ``alpha``, Adadelta's ``eps``...) is translated
    like the constructor's: torch with the same groups is the oracle."""
    kwargs = {"momentum": 0.9} if torch_cls is torch.optim.SGD else {}
    err = _trajectories_agree(
        problem, batches, torch_cls, lambda m: problem.groups_of(m, [group, {}]), lr=0.05, **kwargs
    )
    assert err < 1e-6


@pytest.mark.compile
def test_from_torch_compiled_follows_torch(batches, problem):
    err = _trajectories_agree(
        problem, batches, torch.optim.RMSprop, lambda m: m.parameters(), compile=True, lr=0.01, alpha=0.9, momentum=0.5
    )
    assert err < 1e-6


def test_torch_hparams_fills_torch_defaults_and_renames():
    """torch's defaults, not optreg's (torch's SGD lr is 1e-3; its Adagrad epsilon sits outside the root)."""
    assert oo.torch_hparams(torch.optim.SGD) == (
        "sgd", {"lr": 1e-3, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False}
    )
    name, hp = oo.torch_hparams("rmsprop", alpha=0.9)
    assert name == "rmsprop" and (hp["beta"], hp["eps"], hp["eps_root"], hp["lr"]) == (0.9, 1e-8, 0.0, 0.01)
    name, hp = oo.torch_hparams("Adadelta", rho=0.95, eps=1e-5)
    assert name == "adadelta" and (hp["beta"], hp["eps_root"], hp["eps"]) == (0.95, 1e-5, 0.0)
    name, hp = oo.torch_hparams(torch.optim.Adagrad)
    assert (hp["eps"], hp["eps_root"]) == (1e-10, 0.0)
    name, hp = oo.torch_hparams(torch.optim.Adam, betas=(0.8, 0.9), maximize=True, foreach=False)
    assert (hp["beta1"], hp["beta2"], hp["maximize"], hp["foreach"]) == (0.8, 0.9, True, False)
    assert "betas" not in hp and "capturable" not in hp  # a flag only when given


@pytest.mark.parametrize("key", [k for k, e in torch_compat.ENTRIES.items() if not e.refused])
def test_every_torch_keyword_has_a_translation(key):
    """No torch option is dropped: every keyword of torch's constructor is translated or is a flag."""
    signature = inspect.signature(getattr(torch.optim, key).__init__).parameters
    missing = [k for k in signature if k not in ("self", "params") and k not in torch_compat.ENTRIES[key].rename
               and k not in torch_compat.FLAGS]
    assert not missing


def test_flags_become_group_keys_and_a_group_keeps_its_own():
    w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = oo.from_torch(torch.optim.SGD, [w, b], lr=0.1, foreach=False)
    assert opt.param_groups[0]["foreach"] is False
    opt = oo.from_torch(torch.optim.SGD, [{"params": [w], "foreach": True}, {"params": [b]}], foreach=False)
    assert [g["foreach"] for g in opt.param_groups] == [True, False]


def test_one_element_tensor_is_a_scalar_and_a_longer_one_is_refused_like_torch():
    p = [torch.nn.Parameter(torch.zeros(2))]
    lr = torch.tensor([[0.1]])
    assert oo.torch_hparams("Adam", lr=lr)[1]["lr"].shape == ()
    with pytest.raises(ValueError, match="1-element"):  # the oracle
        torch.optim.Adam(p, lr=torch.tensor([0.1, 0.2]))
    with pytest.raises(OptregValueError, match=r"Adam: lr must be a number or a 1-element tensor, got .*\(2,\)"):
        oo.from_torch(torch.optim.Adam, p, lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        ("Adam", {"foo": 1}, OptregTypeError, "'foo'"),
        ("Muon", {"maximize": True}, OptregTypeError, "'maximize'"),  # torch's Muon has no maximize
        ("Adam", {"betas": (0.9, torch.tensor(0.99))}, OptregValueError, "betas must be both"),
        ("Adam", {"lr": torch.tensor(0.01), "foreach": True}, OptregValueError, "lr as a tensor"),
        ("Adam", {"betas": 0.9}, OptregValueError, "betas must be a pair"),
    ],
)
def test_what_torch_refuses_is_refused(cls, kwargs, error, match):
    """torch.optim's constructor (the oracle) refuses each of these; from_torch does too, with an OptregError."""
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises((TypeError, ValueError)):
        getattr(torch.optim, cls)(p, **kwargs)
    with pytest.raises(error, match=match):
        oo.from_torch(cls, p, **kwargs)


@pytest.mark.parametrize("cls", ["LBFGS", "SparseAdam", "NoSuchOptimizer"])
def test_unsupported_classes_are_refused_by_name(cls):
    with pytest.raises(OptregValueError, match=cls if cls != "NoSuchOptimizer" else "cls_or_name must be one of"):
        oo.from_torch(cls, [torch.nn.Parameter(torch.zeros(2))])


def test_torch_base_class_errors_come_back_as_optreg_errors():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError):  # the oracle
        torch.optim.SGD(p, lr=0.1)
    with pytest.raises(OptregTypeError, match="SGD: params must be an iterable"):
        oo.from_torch(torch.optim.SGD, p, lr=0.1)
    with pytest.raises(OptregValueError, match="more than one parameter group"):
        oo.from_torch(torch.optim.SGD, [{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(OptregError, match="empty parameter list"):
        oo.from_torch(torch.optim.SGD, [], lr=0.1)
