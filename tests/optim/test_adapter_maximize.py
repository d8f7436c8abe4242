"""``maximize``, torch.optim's group key, for every optimizer (oracle: torch.optim with maximize=True; for the
methods torch lacks, the definition: maximizing f is minimizing -f)."""

from __future__ import annotations

import pytest
import torch

import optreg.optim as oo

# (optreg alias, its hyperparameters, torch class, torch's), float64, chosen so that each reproduces torch
CASES = {
    "sgd": ("sgd", {"lr": 0.05, "weight_decay": 0.1}, torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.1}),
    "sgd-momentum": ("momentum", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}, torch.optim.SGD,
                     {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
    "sgd-nesterov": ("nesterov", {"lr": 0.05, "momentum": 0.9}, torch.optim.SGD,
                     {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("adagrad", {"lr": 0.1, "eps": 1e-10, "eps_root": 0.0, "weight_decay": 0.1}, torch.optim.Adagrad,
                {"lr": 0.1, "weight_decay": 0.1}),
    "rmsprop": ("rmsprop", {"lr": 0.01, "beta": 0.99, "eps": 1e-8, "eps_root": 0.0, "momentum": 0.5},
                torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5}),
    "adadelta": ("adadelta", {"lr": 1.0, "beta": 0.9, "eps_root": 1e-6, "weight_decay": 0.1}, torch.optim.Adadelta,
                 {"lr": 1.0, "weight_decay": 0.1}),
    "adam": ("adam", {"lr": 0.01, "weight_decay": 0.1}, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adamw": ("adamw", {"lr": 0.01, "weight_decay": 0.1}, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "nadam": ("nadam", {"lr": 0.01}, torch.optim.NAdam, {"lr": 0.01}),
}


def _run(problem, batches, make, steps: int = 12):
    model = problem.make_model()
    problem.run(model, make(model), batches, steps=steps)
    return model


def _groups(model, maximize: list[bool]):
    """The problem's two groups (first layer, last layer) with their own ``maximize``."""
    return [{"params": list(model[i].parameters()), "maximize": m} for i, m in zip((0, 2), maximize)]


@pytest.mark.parametrize("per_group", [False, True], ids=["one-group", "per-group"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_maximize_follows_torch_optim(case, per_group, batches, problem):
    """maximize=True (for the whole optimizer, or for the first of two groups only) follows torch.optim's
    trajectory with maximize=True to 1e-8 over 12 float64 steps; and it really goes uphill (differs from
    maximize=False)."""
    name, hp, torch_cls, torch_hp = CASES[case]
    flags = [True, False] if per_group else [True, True]
    ours = _run(problem, batches, lambda m: oo.create(name, _groups(m, flags), **hp))
    ref = _run(problem, batches, lambda m: torch_cls(_groups(m, flags), **torch_hp))
    downhill = _run(problem, batches, lambda m: oo.create(name, m.parameters(), **hp))
    assert problem.max_rel_err(ours, ref) < 1e-8
    assert problem.max_rel_err(ours, downhill) > 1e-3


@pytest.mark.compile
@pytest.mark.parametrize("case", ["adam", "sgd-momentum"])
def test_maximize_compiled_follows_torch_optim(case, batches, problem):
    """The compiled step honours maximize per group too (oracle: torch.optim, maximize on the first group)."""
    name, hp, torch_cls, torch_hp = CASES[case]
    ours = _run(problem, batches, lambda m: oo.create(name, _groups(m, [True, False]), compile=True, **hp))
    ref = _run(problem, batches, lambda m: torch_cls(_groups(m, [True, False]), **torch_hp))
    assert problem.max_rel_err(ours, ref) < 1e-8


def test_maximize_one_tensor_at_a_time_follows_torch(batches, problem, monkeypatch):
    """The eager per-tensor path (large tensors) negates each gradient too. Oracle: torch.optim.Adam."""
    import optreg.optim.optimizer as adapter

    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0)
    name, hp, torch_cls, torch_hp = CASES["adam"]
    ours = _run(problem, batches, lambda m: oo.create(name, m.parameters(), maximize=True, **hp))
    ref = _run(problem, batches, lambda m: torch_cls(m.parameters(), maximize=True, **torch_hp))
    assert problem.max_rel_err(ours, ref) < 1e-8


def test_maximize_written_into_a_group_later_is_honoured(batches, problem):
    """Setting group['maximize'] by hand between steps takes effect at the next step, as in torch.optim.SGD."""
    models = []
    for make in (lambda m: oo.create("momentum", m.parameters(), lr=0.05, momentum=0.9),
                 lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)):
        model = problem.make_model()
        opt = make(model)
        problem.run(model, opt, batches, steps=4)
        opt.param_groups[0]["maximize"] = True
        problem.run(model, opt, batches, steps=4)
        models.append(model)
    assert problem.max_rel_err(*models) < 1e-10


def test_maximize_with_a_ready_made_transform():
    """A ready-made Transform takes maximize as well. Oracle: torch.optim.SGD(lr=0.1, maximize=True)."""
    w1 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    ours = oo.Optimizer([w1], oo.chain(oo.scale_by_learning_rate(0.1)), maximize=True)
    ref = torch.optim.SGD([w2], lr=0.1, maximize=True)
    for _ in range(3):
        for w, opt in ((w1, ours), (w2, ref)):
            opt.zero_grad()
            (-(w**2).sum()).backward()
            opt.step()
    assert torch.equal(w1, w2)
    assert ours.param_groups[0]["maximize"] is True


def test_maximize_with_a_line_search_minimizes_minus_f():
    """A line search with maximize=True on f takes the steps of the same line search on -f (the definition);
    the closure's own loss is what step() returns."""
    target = torch.tensor([3.0, -1.0], dtype=torch.float64)

    def f(w):
        return -((w - target) ** 2).sum()  # concave: its maximum is at target

    def trajectory(maximize: bool, sign: float):
        w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = oo.create("sgd_linesearch", [w], lr=1.0, maximize=maximize)
        losses = []

        def closure():
            opt.zero_grad()
            loss = sign * f(w)
            loss.backward()
            return loss

        for _ in range(4):
            losses.append(opt.step(closure).item())
        return w.detach(), losses

    w_max, losses = trajectory(True, 1.0)
    w_min, neg_losses = trajectory(False, -1.0)
    assert torch.equal(w_max, w_min)
    assert losses == [-v for v in neg_losses]
    assert torch.allclose(w_max, target)


def test_maximize_is_in_param_groups_and_state_dict_like_torch():
    """Like torch.optim's: a default of False in every group, per-group overrides, and saved in state_dict."""
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = oo.create("adam", [{"params": [a]}, {"params": [b], "maximize": True}])
    ref = torch.optim.Adam([{"params": [a]}, {"params": [b], "maximize": True}])
    assert [g["maximize"] for g in opt.param_groups] == [g["maximize"] for g in ref.param_groups] == [False, True]
    saved = opt.state_dict()
    assert [g["maximize"] for g in saved["param_groups"]] == [False, True]
    fresh = oo.create("adam", [{"params": [a]}, {"params": [b]}])
    fresh.load_state_dict(saved)
    assert [g["maximize"] for g in fresh.param_groups] == [False, True]


def test_maximize_must_be_a_bool():
    with pytest.raises(ValueError, match=r"sgd: maximize must be True or False, got 1"):
        oo.create("sgd", [torch.zeros(1, requires_grad=True)], maximize=1)
