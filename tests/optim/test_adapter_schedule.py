"""A learning rate that changes every step rebuilds nothing (oracles: the chain rebuilt with each lr, i.e. the
adapter's exact path, bitwise; torch.optim under torch's LambdaLR; dynamo's compile counters)."""

from __future__ import annotations

import functools

import pytest
import torch

import optreg.optim as oo
import optreg.optim.optimizer as adapter

LRS = [0.02 / (1 + 0.3 * t) for t in range(14)]  # a new lr every step

# alias: hyperparameters (the aliases whose chain takes lr only as its trailing scale)
SCALED = {
    "sgd": {"weight_decay": 0.01},
    "momentum": {"momentum": 0.9, "weight_decay": 0.01},
    "nesterov": {"momentum": 0.9},
    "adagrad": {"eps": 1e-10, "eps_root": 0.0, "weight_decay": 0.01},
    "rmsprop": {"momentum": 0.5, "centered": True},
    "adadelta": {},
    "adam": {"weight_decay": 0.01},
    "adamw": {"weight_decay": 0.1},
    "nadam": {},
}


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (5,), (3, 4, 2)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in LRS]
    return params, grads


def _counting(factory):
    """``factory`` with a counter of its calls from Python (same signature, so the adapter sees the same
    hyperparameters). Calls while torch.compile traces are not counted: the compiled code does not call the
    factory (dynamo would replay the counter's increment with the graph, as any side effect)."""

    @functools.wraps(factory)
    def counted(**hparams):
        if not torch.compiler.is_compiling():
            counted.calls += 1
        return factory(**hparams)

    counted.calls = 0
    return counted


def _scheduled_run(opt, params, grads, lrs=LRS, step=None):
    for lr, gs in zip(lrs, grads):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, gs):
            p.grad = g.clone()
        (step or opt.step)()
    return [p.detach().clone() for p in params]


def _exact_step(opt, monkeypatch):
    """``opt.step`` on the exact path: the chain rebuilt for every new lr, as before the scaled path existed."""

    def step():
        with monkeypatch.context() as m:
            m.setattr(adapter, "_scales_with_lr", lambda *args: False)
            opt.step()

    return step


@pytest.mark.parametrize("per_tensor", [False, True], ids=["lists", "per-tensor"])
@pytest.mark.parametrize("name", sorted(SCALED))
def test_changing_lr_equals_the_rebuilt_chain_bitwise_and_builds_nothing(name, per_tensor, monkeypatch):
    """Scheduled steps give the numbers of the chain rebuilt with each lr, bit for bit, and after the step at
    which lr first changes (it verifies the lr-free chain once) the factory is never called again."""
    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0 if per_tensor else 1 << 40)
    start, grads = _problem()
    factory = _counting(oo.get(name))
    ours = [p.clone().requires_grad_(True) for p in start]
    opt = oo.Optimizer(ours, factory, lr=LRS[0], **SCALED[name])
    ref = [p.clone().requires_grad_(True) for p in start]
    ref_opt = oo.create(name, ref, lr=LRS[0], **SCALED[name])
    got = _scheduled_run(opt, ours, grads[:2], LRS[:2])
    calls = factory.calls
    got = _scheduled_run(opt, ours, grads[2:], LRS[2:])
    want = _scheduled_run(ref_opt, ref, grads, step=_exact_step(ref_opt, monkeypatch))
    assert factory.calls == calls
    assert opt._plans[0].scaled and not ref_opt._plans[0].scaled
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert not torch.equal(got[0], start[0])


@pytest.mark.parametrize("name", ["delta_bar_delta", "lr_twice", "lr_in_clip"])
def test_chain_that_uses_lr_elsewhere_is_rebuilt_for_each_lr(name):
    """Chains where lr is not only the trailing scale are not scaled: each new lr builds the chain again, and
    the result is that of the chain built with that lr (oracle: the transform's update applied by hand)."""
    factories = {
        "delta_bar_delta": oo.delta_bar_delta,  # lr is the rates' initial value
        "lr_twice": lambda lr=0.1: oo.chain(oo.scale(lr), oo.scale_by_learning_rate(lr)),  # -lr^2
        "lr_in_clip": lambda lr=0.1: oo.chain(oo.clip_by_global_norm(lr * 10), oo.scale_by_learning_rate(lr)),
    }
    factory = _counting(factories[name])
    start, grads = _problem()
    ours = [p.clone().requires_grad_(True) for p in start]
    opt = oo.Optimizer(ours, factory, lr=LRS[0])
    got = _scheduled_run(opt, ours, grads)
    assert factory.calls >= len(LRS)
    ref = [p.clone() for p in start]
    state = factories[name](lr=LRS[0]).init(ref)
    for lr, gs in zip(LRS, grads):
        updates, state = factories[name](lr=lr).update([g.clone() for g in gs], state, ref)
        torch._foreach_add_(ref, updates)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_lr_check_is_structural():
    """The check compares the chains built with different lrs: equal up to the trailing affine factors, which
    must scale with lr exactly."""
    scaled = adapter._scales_with_lr
    assert scaled(oo.adam(lr=1.0), [(0.5, oo.adam(lr=0.5)), (0.1, oo.adam(lr=0.1))])
    assert not scaled(oo.adam(lr=1.0), [(0.5, oo.adam(lr=0.5, beta2=0.99))])  # another chain
    assert not scaled(oo.adam(lr=1.0), [(0.5, oo.adam(lr=0.4))])  # does not scale with lr
    assert not scaled(oo.chain(oo.scale(1.0), oo.scale_by_learning_rate(1.0)),
                      [(0.5, oo.chain(oo.scale(0.5), oo.scale_by_learning_rate(0.5)))])  # lr^2
    assert not scaled(oo.scale_by_adam(), [(0.5, oo.scale_by_adam())])  # not a chain
    assert not scaled(oo.chain(oo.scale_by_adam()), [(0.5, oo.chain(oo.scale_by_adam()))])  # no trailing scale
    assert not scaled(oo.sgd_linesearch(lr=1.0), [(0.5, oo.sgd_linesearch(lr=0.5))])  # lr is the search's start


def test_schedule_callable_as_lr_is_not_scaled():
    """A schedule given as the lr itself is the transform's own counter-driven scale: the exact path, and the
    step follows the schedule (oracle: the closed form theta_t = theta_0 - sum_t lr(t) g with g = 1)."""
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = oo.create("sgd", [w], lr=lambda t: 0.1 / (t + 1))
    for _ in range(3):
        w.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    assert w.item() == pytest.approx(-(0.1 + 0.05 + 0.1 / 3), rel=1e-12)
    assert not opt._plans[0].scaled


@pytest.mark.parametrize("name, torch_cls, hp", [
    ("adam", torch.optim.Adam, {}), ("momentum", torch.optim.SGD, {"momentum": 0.9}),
    ("adamw", torch.optim.AdamW, {"weight_decay": 0.1}),
])
def test_lambda_lr_drives_the_optimizer_like_torch(name, torch_cls, hp, batches, problem):
    """torch's LambdaLR writes a new lr each step. Oracle: torch.optim under the same scheduler."""
    models = []
    for make in (lambda m: oo.create(name, m.parameters(), lr=0.02, **hp),
                 lambda m: torch_cls(m.parameters(), lr=0.02, **hp)):
        model = problem.make_model()
        opt = make(model)
        problem.run(model, opt, batches, steps=30, scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.97**t))
        models.append(model)
    assert problem.max_rel_err(*models) < 1e-10


def test_new_lr_is_still_checked():
    """On the scaled path a bad lr is refused at the next step, in optreg's format."""
    w = torch.zeros(2, requires_grad=True)
    opt = oo.create("adam", [w], lr=0.1)
    for lr in (0.1, 0.05):
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.ones(2)
        opt.step()
    assert opt._plans[0].scaled
    for bad in (-0.1, float("nan"), float("inf")):
        opt.param_groups[0]["lr"] = bad
        with pytest.raises(ValueError, match=r"adam: lr must be in \[0, inf\), got"):
            opt.step()


@pytest.mark.compile
@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_compiled_changing_lr_does_not_recompile_or_rebuild(name, monkeypatch):
    """Compiled: a new lr each step (from 0, a warm-up's start) is one graph and no factory call after the first
    steps; the numbers are the eager exact path's (rebuilt chains) to 1e-12."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    lrs = [0.0, *LRS[1:]]
    start, grads = _problem()
    factory = _counting(oo.get(name))
    ours = [p.clone().requires_grad_(True) for p in start]
    opt = oo.Optimizer(ours, factory, compile=True, lr=0.0, **SCALED[name])
    _scheduled_run(opt, ours, grads[:3], lrs[:3])
    calls, graphs = factory.calls, counters["stats"]["unique_graphs"]
    got = _scheduled_run(opt, ours, grads[3:], lrs[3:])
    assert factory.calls == calls
    assert counters["stats"]["unique_graphs"] == graphs == 1
    ref = [p.clone().requires_grad_(True) for p in start]
    ref_opt = oo.create(name, ref, lr=0.0, **SCALED[name])
    want = _scheduled_run(ref_opt, ref, grads, lrs, step=_exact_step(ref_opt, monkeypatch))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
