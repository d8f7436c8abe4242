"""torch's own optimizer test configurations as the oracle for ``optreg.optim.from_torch`` (issue 8).

For every ``OptimizerInfo`` in ``torch.testing._internal.common_optimizers.optim_db``, every ``OptimizerInput`` of
its ``optim_inputs_func`` on the CPU, the CUDA-only ones run on the CPU with ``capturable`` dropped, and the
default configuration with each of torch's implementation flags it supports (``foreach``, ``fused``,
``differentiable``): torch's optimizer and ours, built by ``from_torch`` with the same keywords, train the same
float64 MLP from the same start for 50 steps, with one parameter group and with two (the second with its own
torch keywords), and must agree to 1e-6 (relative). Each configuration either matches, or is in
``DOCUMENTED`` (refused with an OptregError, the reason given), or its flag is in ``IMPLEMENTATION_FLAGS``
(dropped, or accepted by the adapter and then matching, or refused). None mismatches, none is silently ignored.

The ``error_inputs_func`` cases on the CPU: where torch raises, ``from_torch`` (or the first step) raises an
OptregError; where torch warns, ours warns too.

Counts, torch 2.13 (each configuration runs with one group and with two):
  configurations  154 = 145 match (CPU inputs, CUDA-only inputs without capturable, implementation flags;
                  maximize everywhere) + 9 documented (LBFGS, SparseAdam)
  error inputs    124 = 108 raise (or warn) like torch + 16 documented
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings

import pytest
import torch
from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db

import optreg.optim as oo
from optreg.errors import OptregError

STEPS = 50
TOL = 1e-6

# Configurations optreg refuses, by design or for now, with the reason: from_torch must raise an OptregError.
DOCUMENTED = {
    "torch's LBFGS runs up to max_iter iterations per step(closure); optreg's lbfgs one per step: the same minimum "
    "(tests/optim/test_second_order_methods.py), not the same trajectory":
        lambda cls, kw: cls == "LBFGS",
    "SparseAdam needs sparse gradients, which optreg's optimizers refuse":
        lambda cls, kw: cls == "SparseAdam",
}

# torch's implementation-only flags: they choose a kernel, not a trajectory.
IMPLEMENTATION_FLAGS = {
    "capturable": "CUDA-graph capture of the step; dropped from the CUDA-only inputs, which run on the CPU here",
    "foreach": "torch's multi-tensor kernels; the adapter accepts it (the trajectory must match) or refuses it",
    "fused": "torch's fused kernels; the adapter accepts it (the trajectory must match) or refuses it",
    "differentiable": "autograd through the step; the adapter accepts it (the trajectory must match) or refuses it "
    "(torch's own run is the oracle without it: in grad mode it cannot update leaf parameters)",
}

# The second group's own torch keywords (besides half the learning rate): group-level translation is tested too.
GROUP_OVERRIDES = {
    "Adam": {"betas": (0.8, 0.99)},
    "AdamW": {"betas": (0.8, 0.99)},
    "NAdam": {"betas": (0.8, 0.99)},
    "RAdam": {"betas": (0.8, 0.99)},
    "Adamax": {"betas": (0.8, 0.99)},
    "RMSprop": {"alpha": 0.9},
    "Adadelta": {"rho": 0.8},
    "Adagrad": {"lr_decay": 0.01},
    "SGD": {"weight_decay": 0.01},
    "Rprop": {"etas": (0.4, 1.1)},
    "ASGD": {"lambd": 1e-3},
    "Adafactor": {"beta2_decay": -0.5},
    "Muon": {"momentum": 0.9},
}


def _reason(table: dict, cls: str, kwargs: dict) -> str | None:
    return next((reason for reason, applies in table.items() if applies(cls, kwargs)), None)


def _configurations() -> list[tuple[str, object, str, dict]]:
    """``(id, info, where, kwargs)``: CPU inputs, CUDA-only inputs without capturable, implementation flags."""
    out = []
    for info in optim_db:
        cpu = info.optim_inputs_func("cpu")
        seen = {(i.desc, repr(i.kwargs)) for i in cpu}
        cuda_only = [i for i in info.optim_inputs_func("cuda") if (i.desc, repr(i.kwargs)) not in seen]
        rows = [("cpu", i.desc, i.kwargs) for i in cpu]
        rows += [("cuda-only", i.desc, {k: v for k, v in i.kwargs.items() if k != "capturable"}) for i in cuda_only]
        rows += [("flag", f"default & {flag}", {flag: True}) for flag in info.supported_impls]
        for n, (where, desc, kwargs) in enumerate(rows):
            slug = re.sub(r"[^A-Za-z0-9]+", "_", desc).strip("_")
            out.append((f"{info.name}-{n}-{where}-{slug}", info, where, kwargs))
    return out


CONFIGS = _configurations()


def _params(model: torch.nn.Module, cls: str, groups: int, kwargs: dict) -> list:
    """The MLP's first and last layer, as one group or as two (the second with its own torch keywords)."""
    first, last = list(model[0].parameters()), list(model[2].parameters())
    if cls == "Muon":  # Muon takes matrices only
        first, last = [p for p in first if p.ndim == 2], [p for p in last if p.ndim == 2]
    if groups == 1:
        return first + last
    lr = kwargs.get("lr", inspect.signature(getattr(torch.optim, cls).__init__).parameters["lr"].default)
    return [{"params": first}, {"params": last, "lr": 0.5 * float(lr), **GROUP_OVERRIDES.get(cls, {})}]


@pytest.mark.parametrize("groups", [1, 2], ids=["one-group", "two-groups"])
@pytest.mark.parametrize(
    ("info", "where", "kwargs"),
    [pytest.param(info, where, kw, id=id_) for id_, info, where, kw in CONFIGS],
)
def test_from_torch_follows_torch_on_optim_db(info, where, kwargs, groups, batches, problem):
    """torch.optim (the oracle) and optreg's from_torch on the same model: 50 steps, agreement to 1e-6 relative."""
    cls = info.name
    documented = _reason(DOCUMENTED, cls, kwargs)
    m_torch, m_ours = problem.make_model(), problem.make_model()
    if documented:
        with pytest.raises(OptregError):
            oo.from_torch(info.optim_cls, _params(m_ours, cls, groups, kwargs), **copy.deepcopy(kwargs))
        return
    # torch's differentiable step runs in grad mode and so cannot update leaf parameters: its oracle is the same
    # configuration without the flag (the same numbers, in torch's own tests)
    oracle = {k: v for k, v in kwargs.items() if k != "differentiable"}
    ref = info.optim_cls(_params(m_torch, cls, groups, kwargs), **copy.deepcopy(oracle))
    assert oo.torch_hparams(cls)[0] in oo.available(), f"{cls} is not available in optreg"
    flag = next((f for f in IMPLEMENTATION_FLAGS if kwargs.get(f)), None)
    try:
        ours = oo.from_torch(info.optim_cls, _params(m_ours, cls, groups, kwargs), **copy.deepcopy(kwargs))
        problem.run(m_ours, ours, batches, steps=STEPS)
    except OptregError as e:
        if flag is None or flag not in str(e):  # only an implementation flag may be refused, by its name
            raise
        return
    problem.run(m_torch, ref, batches, steps=STEPS)
    assert problem.max_rel_err(m_ours, m_torch) < TOL
    # the run moved the parameters well beyond the tolerance, so the agreement above means something
    assert problem.max_rel_err(m_torch, problem.make_model()) > 100 * TOL


def _error_cases() -> list:
    out = []
    for info in optim_db:
        if info.optim_error_inputs_func is None:
            continue
        for n, case in enumerate(info.optim_error_inputs_func("cpu", torch.float64)):
            inp = case.optimizer_error_input
            slug = re.sub(r"[^A-Za-z0-9]+", "_", inp.desc).strip("_")
            out.append(pytest.param(info, case, id=f"{info.name}-{n}-{slug}"))
    return out


def _error_params(params):
    """The case's parameters, or (``None``) a fresh 2-D float64 one (2-D, so Muon takes it)."""
    return [torch.nn.Parameter(torch.randn(2, 2, dtype=torch.float64))] if params is None else params


@pytest.mark.parametrize(("info", "case"), _error_cases())
def test_from_torch_raises_where_torch_raises_on_optim_db(info, case):
    """optim_db's error inputs (torch as the oracle): where torch raises, ours raises an OptregError."""
    inp = case.optimizer_error_input
    cls, kwargs = info.name, inp.kwargs
    documented = _reason(DOCUMENTED, cls, kwargs)
    if not documented:
        assert oo.torch_hparams(cls)[0] in oo.available(), f"{cls} is not available in optreg"
    params = _error_params(inp.params)
    warns = issubclass(case.error_type, Warning)

    def build_and_step(factory):
        opt = factory(params, **copy.deepcopy(kwargs))
        if case.error_on == OptimizerErrorEnum.STEP_ERROR:
            opt.step()
        return opt

    # the oracle really raises (or warns) here
    if warns:
        with pytest.warns(case.error_type, match=case.error_regex):
            build_and_step(info.optim_cls)
    else:
        with pytest.raises(case.error_type, match=case.error_regex):
            build_and_step(info.optim_cls)
    ours = lambda params, **kw: oo.from_torch(info.optim_cls, params, **kw)  # noqa: E731
    if warns and not documented:
        with pytest.warns(case.error_type, match=case.error_regex):
            build_and_step(ours)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OptregError):
            build_and_step(ours)
