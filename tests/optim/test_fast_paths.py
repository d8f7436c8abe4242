"""The eager fast paths give the transforms' own results (oracle: the materialized ``update`` of each
transform, i.e. its equation, and closed forms).

The eager optimizer runs a chain through ``write`` (trailing learning rate and decoupled decay folded into one
``addcdiv_``/``addcmul_``), tensor by tensor for large tensors, with counters returned as new values; the
reference here applies ``theta += update`` with lists, as the chain's equations read.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import optreg.optim as oo
import optreg.optim.optimizer as adapter

# alias: hyperparameters exercising every fast path (eps inside or outside the root, decays, momentum)
ALIASES = {
    "sgd": {"lr": 0.1, "weight_decay": 0.01},
    "momentum": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    "nesterov": {"lr": 0.05, "momentum": 0.9},
    "adagrad": {"lr": 0.1},
    "adagrad-eps-outside": {"lr": 0.1, "eps": 1e-10, "eps_root": 0.0, "weight_decay": 0.01},
    "rmsprop": {"lr": 0.01},
    "rmsprop-centered": {"lr": 0.01, "eps": 1e-8, "eps_root": 0.0, "centered": True, "momentum": 0.5},
    "adadelta": {"lr": 1.0},
    "adadelta-eps-outside": {"lr": 1.0, "eps": 1e-3},
    "adam": {"lr": 0.01},
    "adam-eps-root": {"lr": 0.01, "eps": 0.0, "eps_root": 1e-8, "weight_decay": 0.01},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "nadam": {"lr": 0.01},
    "delta_bar_delta": {"lr": 0.01},
}


def _problem(seed: int = 0) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (5,), (3, 4, 2)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(12)]
    return params, grads


@pytest.mark.parametrize("per_tensor", [False, True], ids=["lists", "per-tensor"])
@pytest.mark.parametrize("case", list(ALIASES))
def test_eager_write_path_equals_materialized_update(case, per_tensor, monkeypatch):
    """Optimizer.step (write path) == ``theta += tx.update(...)`` applied by hand, to 1e-12, over 12 steps."""
    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0 if per_tensor else 1 << 40)
    name = case.split("-")[0]
    hp = ALIASES[case]
    start, grads = _problem()
    ours = [p.clone().requires_grad_(True) for p in start]
    opt = oo.create(name, ours, **hp)
    ref = [p.clone() for p in start]
    tx = oo.get(name)(**hp)
    state = tx.init(ref)
    for gs in grads:
        for p, g in zip(ours, gs):
            p.grad = g.clone()
        opt.step()
        updates, state = tx.update([g.clone() for g in gs], state, ref)
        torch._foreach_add_(ref, updates)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-12)


class _CountState(NamedTuple):
    count: torch.Tensor


def _scale_by_step_number() -> oo.Transform:
    """A user's elementwise transform with a shared counter returned as a new value: ``u_t = t g_t``."""

    def init(params):
        return _CountState(torch.zeros((), dtype=torch.int64))

    def update(updates, state, params=None):
        t = int(state.count) + 1
        return [u * t for u in updates], _CountState(t)

    return oo.Transform(init, update, elementwise=True)


@pytest.mark.parametrize("per_tensor", [False, True], ids=["lists", "per-tensor"])
def test_functional_counter_advances_once_per_step(per_tensor, monkeypatch):
    """Closed form: with u_t = t g and g = 1, theta_T = theta_0 - lr sum_{t<=T} t; the counter reads T."""
    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0 if per_tensor else 1 << 40)
    params = [torch.zeros(3, requires_grad=True) for _ in range(4)]
    opt = adapter.Optimizer(params, oo.chain(_scale_by_step_number(), oo.scale(-0.1)))
    for _ in range(5):
        for p in params:
            p.grad = torch.ones(3)
        opt.step()
    for p in params:
        torch.testing.assert_close(p.detach(), torch.full((3,), -0.1 * 15))
    assert int(opt.state[params[0]]["0.count"]) == 5


def test_decoupled_decay_folds_into_the_parameter_write_closed_form():
    """chain(u, add_decayed_weights(w), scale(-lr)): theta <- (1 - lr w) theta - lr u (AdamW's form), with u = g."""
    p = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    tx = oo.chain(oo.identity(), oo.add_decayed_weights(0.5), oo.scale(-0.1))
    opt = adapter.Optimizer([p], tx)
    p.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()
    expected = (1 - 0.1 * 0.5) * torch.tensor([2.0, -1.0], dtype=torch.float64) - 0.1
    torch.testing.assert_close(p.detach(), expected)


@pytest.mark.parametrize("name", ["momentum", "adadelta", "adamw"])
def test_one_tensor_compiled_step_matches_eager_without_graph_break(name):
    """A group of one tensor takes the tensor-method paths; compiled, they trace in one graph (oracle: eager)."""
    from torch._dynamo.utils import counters

    counters.clear()
    p = torch.randn(7, dtype=torch.float64, requires_grad=True)
    q = p.detach().clone().requires_grad_(True)
    compiled, eager = oo.create(name, [p], compile=True), oo.create(name, [q])
    for step in range(3):
        g = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        p.grad, q.grad = g.clone(), g.clone()
        compiled.step()
        eager.step()
    assert not counters["graph_break"], dict(counters["graph_break"])
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cached_operand_rounds_like_a_python_number(dtype):
    """Oracle: torch's own Python-number path. A cached 0-d operand gives bit-identical results and dtype."""
    from optreg.optim._foreach import operand

    x = (torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    x[:2] = torch.tensor([0.0, -0.0])
    for s in (1e-8, 0.9, 1 / 3, 0.999, 7.123456789, -2.5e-6, 1e-30, 0.0, -0.0):
        c = operand(s, x)
        assert isinstance(c, torch.Tensor) and c.ndim == 0
        for got, want in ((x + c, x + s), (x * c, x * s), (x.clone().add_(c), x.clone().add_(s)),
                          (x.clone().mul_(c), x.clone().mul_(s))):
            assert got.dtype == want.dtype == dtype
            assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit()), (s, dtype)
        assert operand(s, x) is c  # cached


def test_operand_passes_tensors_and_other_devices_through():
    from optreg.optim import _foreach

    t = torch.tensor(0.5)
    assert _foreach.operand(t, torch.ones(2)) is t
    assert _foreach.operand(0.5, torch.ones(2, device="meta")) == 0.5
    assert _foreach.operand(0.5, torch.ones(2, dtype=torch.int64)) == 0.5
    for i in range(600):  # a new value every step (Adam's corrected epsilon) keeps the cache bounded
        _foreach.operand(1.0 + i * 1e-3, torch.ones(2))
    assert len(_foreach._OPERANDS) <= 256


def test_operand_cached_under_inference_mode_still_serves_autograd():
    """A cached operand first made inside ``torch.inference_mode`` must not be an inference tensor later."""
    from optreg.optim import _foreach

    value = 0.123456789
    _foreach._OPERANDS.pop((value, torch.float32), None)
    with torch.inference_mode():
        _foreach.operand(value, torch.ones(2))
    x = torch.ones(3, requires_grad=True)
    (x * _foreach.operand(value, x)).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), value))


def test_operand_is_on_the_cpu_whatever_the_default_device():
    from optreg.optim import _foreach

    torch.set_default_device("meta")
    try:
        c = _foreach.operand(0.987654321, torch.ones(2, device="cpu"))
    finally:
        torch.set_default_device(None)
    assert c.device.type == "cpu" and c.item() == pytest.approx(0.987654321)
