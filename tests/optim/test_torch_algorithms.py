"""The rest of torch.optim as optreg chains: rprop, asgd, adafactor, muon.

Oracles: torch.optim.Rprop / ASGD / Adafactor / Muon (same keywords, float64, 50 steps, one and two parameter
groups, to 1e-6 relative), torch.optim.swa_utils.AveragedModel and file 002's closed form for Polyak averaging,
torch.linalg.svd for the Newton-Schulz orthogonalization, torch.library.opcheck for its custom op.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import optreg.optim as oo
from optreg.errors import OptregValueError
from optreg.optim import matrix

TORCH = {"rprop": torch.optim.Rprop, "asgd": torch.optim.ASGD, "adafactor": torch.optim.Adafactor,
         "muon": torch.optim.Muon}

# (optreg name, hyperparameters, per-group overrides): the same keywords go to torch, whose names optreg keeps
CASES = {
    "rprop": ("rprop", {"lr": 0.01}, {"etas": (0.4, 1.3), "step_sizes": (1e-5, 0.5)}),
    "asgd": ("asgd", {"lr": 0.05, "lambd": 1e-2, "t0": 10, "weight_decay": 0.01}, {"lr": 0.1, "alpha": 0.5}),
    "asgd-default": ("asgd", {}, {"lr": 0.05, "t0": 0}),
    "adafactor": ("adafactor", {"weight_decay": 0.1}, {"d": 1.5, "beta2_decay": -1.0, "eps": (1e-8, 1e-2)}),
    "adafactor-lr": ("adafactor", {"lr": 0.05}, {"lr": 0.2, "weight_decay": 0.2}),
    "muon": ("muon", {"lr": 0.02}, {"momentum": 0.8, "ns_steps": 6, "weight_decay": 0.0}),
    "muon-plain": (
        "muon", {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
        {"ns_coefficients": (3.4, -4.7, 2.0), "adjust_lr_fn": "original"},
    ),
}


def _groups(model, name: str, n_groups: int, override: dict) -> list[dict]:
    """One group of everything, or the first and last layer with ``override`` on the first. Muon takes the weight
    matrices only (torch.optim.Muon refuses vectors); the biases then get no optimizer in either run."""
    layers = [model[0], model[2]]
    params = [[layer.weight] if name == "muon" else list(layer.parameters()) for layer in layers]
    if n_groups == 1:
        return [{"params": params[0] + params[1]}]
    return [{"params": params[0], **override}, {"params": params[1]}]


def _pair(problem, case: str, n_groups: int, compile: bool = False):
    name, hp, override = CASES[case]
    m_ours, m_torch = problem.make_model(), problem.make_model()
    ours = oo.create(name, _groups(m_ours, name, n_groups, override), compile=compile, **hp)
    ref = TORCH[name](_groups(m_torch, name, n_groups, override), **hp)
    return m_ours, ours, m_torch, ref


def _max_rel(xs, ys) -> float:
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(xs, ys))


@pytest.mark.parametrize("n_groups", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_follows_torch_optim(case, n_groups, batches, problem):
    m_ours, ours, m_torch, ref = _pair(problem, case, n_groups)
    problem.run(m_ours, ours, batches, steps=50)
    problem.run(m_torch, ref, batches, steps=50)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6
    assert problem.max_rel_err(m_ours, problem.make_model()) > 1e-3  # it really trained
    if CASES[case][0] == "asgd":  # the average too: torch's state "ax"
        assert _max_rel(oo.averaged_parameters(ours), oo.averaged_parameters(ref)) < 1e-6


@pytest.mark.parametrize("case", sorted(CASES))
def test_follows_torch_optim_one_tensor_at_a_time(case, batches, problem, monkeypatch):
    """The eager path's per-tensor mode (for large tensors) gives torch's trajectory too."""
    import optreg.optim.optimizer as adapter

    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0)
    m_ours, ours, m_torch, ref = _pair(problem, case, 2)
    problem.run(m_ours, ours, batches, steps=50)
    problem.run(m_torch, ref, batches, steps=50)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6


@pytest.mark.compile
@pytest.mark.parametrize("case", ["rprop", "asgd", "adafactor", "muon"])
def test_compiled_follows_torch_optim(case, batches, problem):
    """compile=True: the whole step in one graph (Muon's Newton-Schulz as an opaque op), torch's numbers."""
    from torch._dynamo.utils import counters

    counters.clear()
    m_ours, ours, m_torch, ref = _pair(problem, case, 2, compile=True)
    problem.run(m_ours, ours, batches, steps=50)
    problem.run(m_torch, ref, batches, steps=50)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1


@pytest.mark.parametrize("name, lr", [("rprop", 0.01), ("asgd", 0.05), ("adafactor", 0.01), ("muon", 0.02)])
def test_tensor_lr_follows_torch_optim(name, lr, batches, problem):
    """A 0-d tensor learning rate (torch's optim_db "Tensor lr") gives torch's trajectory."""
    m_ours, m_torch = problem.make_model(), problem.make_model()
    ours = oo.create(name, [m_ours[0].weight, m_ours[2].weight], lr=torch.tensor(lr))
    ref = TORCH[name]([m_torch[0].weight, m_torch[2].weight], lr=torch.tensor(lr))
    problem.run(m_ours, ours, batches, steps=30)
    problem.run(m_torch, ref, batches, steps=30)
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6


@pytest.mark.parametrize("name", sorted(TORCH))
def test_keywords_and_defaults_are_torchs(name):
    """Every hyperparameter of torch's class (less the implementation flags) is ours, by name and default."""
    flags = {"params", "foreach", "maximize", "differentiable", "capturable", "fused"}
    theirs = {k: p.default for k, p in inspect.signature(TORCH[name]).parameters.items() if k not in flags}
    ours = {k: p.default for k, p in inspect.signature(oo.get(name)).parameters.items()}
    assert ours == theirs
    assert name in oo.available()


# tensors of every rank (Adafactor factors the last two dimensions of a 3-D one; Muon: tall and wide matrices)
SHAPES = {"rprop": [(6, 5), (5,), (3, 4, 2), ()], "asgd": [(6, 5), (5,), (3, 4, 2), ()],
          "adafactor": [(6, 5), (5,), (3, 4, 2), ()], "muon": [(6, 5), (5, 6)]}
DIRECT_HP = {"rprop": {}, "asgd": {"t0": 3, "lambd": 0.01}, "adafactor": {"weight_decay": 0.1}, "muon": {"lr": 0.02}}


@pytest.mark.parametrize("per_tensor", [False, True], ids=["lists", "per-tensor"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_any_shape_follows_torch_and_write_path_equals_update(name, per_tensor, monkeypatch):
    """On tensors of every rank with given gradients: torch's numbers, and the eager write path (the step folded
    into the parameter write) equal to ``theta += tx.update(...)``, the chain's equations applied by hand."""
    import optreg.optim.optimizer as adapter

    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0 if per_tensor else 1 << 40)
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES[name]]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES[name]] for _ in range(12)]
    ours, theirs, by_hand = ([p.clone().requires_grad_(True) for p in start] for _ in range(3))
    opt = oo.create(name, ours, **DIRECT_HP[name])
    ref = TORCH[name](theirs, **DIRECT_HP[name])
    tx = oo.get(name)(**DIRECT_HP[name])
    by_hand = [p.detach() for p in by_hand]
    state = tx.init(by_hand)
    for gs in grads:
        for p, q, grad in zip(ours, theirs, gs):
            p.grad, q.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
        updates, state = tx.update([grad.clone() for grad in gs], state, by_hand)
        torch._foreach_add_(by_hand, updates)
    assert _max_rel(ours, theirs) < 1e-6
    for a, b in zip(ours, by_hand):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-12)
    if name == "asgd":
        assert _max_rel(oo.averaged_parameters(opt), oo.averaged_parameters(ref)) < 1e-6
        for a, b in zip(oo.averaged_parameters(opt), state.ax):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["rprop", "asgd"])
def test_complex_parameters_follow_torch_optim(name):
    """torch's Rprop and ASGD take a complex parameter as two real ones (view_as_real); so do ours."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, generator=g, dtype=torch.complex128)
    grads = [torch.randn(4, 3, generator=g, dtype=torch.complex128) for _ in range(20)]
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    opt = oo.create(name, [ours], **DIRECT_HP[name])
    ref = TORCH[name]([theirs], **DIRECT_HP[name])
    for grad in grads:
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    assert _max_rel([torch.view_as_real(ours)], [torch.view_as_real(theirs)]) < 1e-6
    assert _max_rel([torch.view_as_real(ours)], [torch.view_as_real(start)]) > 1e-3


@pytest.mark.parametrize("name", ["adafactor", "muon"])
def test_complex_parameters_are_refused(name):
    """torch's Adafactor and Muon refuse complex parameters (at the first step); ours too (no silent bfloat16 cast)."""
    p = torch.zeros(3, 2, dtype=torch.complex64, requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(OptregValueError, match=rf"^{name}: parameters must be real, got one of dtype torch.complex64$"):
        oo.create(name, [p]).step()  # (refused at the first step, or at construction if the adapter runs init then)


# --------------------------------------------------------------------------------------------- averaging


def test_asgd_average_is_the_mean_of_the_iterates_from_t0_plus_2(batches, problem):
    """File 002's closed form, theta_bar = mean of the iterates visited: torch's mu = 1/max(1, t-1-t0) averages
    theta_{t0+2} .. theta_t."""
    model = problem.make_model()
    opt = oo.create("asgd", model.parameters(), lr=0.05, t0=7)
    x, y = batches
    iterates = []
    for t in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[t % len(x)]), y[t % len(y)]).backward()
        opt.step()
        iterates.append([p.detach().clone() for p in model.parameters()])
    expected = [torch.stack(ps).mean(0) for ps in zip(*iterates[8:])]  # theta_9 .. theta_30 (1-based)
    assert _max_rel(oo.averaged_parameters(opt), expected) < 1e-12
    assert _max_rel(iterates[-1], expected) > 1e-3  # the average is not the last iterate


@pytest.mark.parametrize("decay", [None, 0.9])
def test_polyak_average_matches_torch_averaged_model(decay, batches, problem):
    """polyak_average(start=0): file 002's (1/t) sum theta_i, and its exponential form a theta_bar + (1-a) theta_t,
    as torch.optim.swa_utils.AveragedModel computes them when updated after every step."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = problem.make_model()
    tx = oo.polyak_average(oo.momentum(lr=0.05, momentum=0.9), decay=decay)
    opt = oo.Optimizer(model.parameters(), tx)
    averaged = AveragedModel(model, multi_avg_fn=None if decay is None else get_ema_multi_avg_fn(decay))
    x, y = batches
    for t in range(25):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[t % len(x)]), y[t % len(y)]).backward()
        opt.step()
        averaged.update_parameters(model)
    assert _max_rel(oo.averaged_parameters(opt), list(averaged.module.parameters())) < 1e-12
    assert _max_rel(list(model.parameters()), list(averaged.module.parameters())) > 1e-3


def test_use_averaged_swaps_the_average_in_and_the_iterate_back(batches, problem):
    model = problem.make_model()
    opt = oo.create("asgd", model.parameters(), lr=0.05, t0=0)
    problem.run(model, opt, batches, steps=10)
    iterate = [p.detach().clone() for p in model.parameters()]
    average = [a.clone() for a in oo.averaged_parameters(opt)]
    with oo.use_averaged(opt):
        assert all(torch.equal(p, a) for p, a in zip(model.parameters(), average))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), iterate))
    oo.load_averaged(opt)
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), average))


def test_averaged_parameters_refuses_an_optimizer_without_an_average(batches, problem):
    model = problem.make_model()
    fresh = oo.create("adam", model.parameters())
    assert all(a is p for a, p in zip(oo.averaged_parameters(fresh), model.parameters()))  # not stepped yet
    problem.run(model, fresh, batches, steps=1)
    with pytest.raises(OptregValueError, match=r"^averaged_parameters: optimizer must average its iterates"):
        oo.averaged_parameters(fresh)


# ------------------------------------------------------------------------------------------------ Muon


def test_newton_schulz_converges_to_the_orthogonal_factor_of_the_svd():
    """With the classic cubic coefficients (1.5, -0.5, 0) the iteration converges to U V^T (torch.linalg.svd),
    up to bfloat16 rounding; Muon's quintic stops short of it on purpose (singular values about 0.7-1.2)."""
    g = torch.Generator().manual_seed(0)
    for shape in [(12, 5), (5, 12)]:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        assert (matrix.newton_schulz(x, (1.5, -0.5, 0.0), 40, 1e-7) - u @ vh).abs().max() < 3e-2
        sv = torch.linalg.svdvals(matrix.newton_schulz(x, (3.4445, -4.7750, 2.0315), 5, 1e-7))
        assert sv.min() > 0.6 and sv.max() < 1.25


def test_newton_schulz_op_passes_opcheck():
    """The custom op behind the compiled path: its fake kernel agrees with the real one (torch.library.opcheck)."""
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.optreg.newton_schulz.default, (x, 3.4445, -4.775, 2.0315, 5, 1e-7),
                          test_utils=("test_schema", "test_faketensor"))


def test_muon_refuses_a_vector_parameter(problem):
    """torch.optim.Muon takes 2-D parameters only; so does ours, with an error that says what to do."""
    model = problem.make_model()
    model(torch.randn(2, 6, dtype=torch.float64)).sum().backward()
    with pytest.raises(OptregValueError, match=r"^muon: every parameter must be a 2-D matrix .* shape \(16,\)"):
        oo.create("muon", model.parameters()).step()  # (at the first step, or at construction: see above)


def test_muon_on_matrices_next_to_adamw_via_masked_follows_torch(batches, problem):
    """The usual Muon setup (torch's docstring): Muon for the matrices, AdamW for the rest, here one optreg chain
    per kind of tensor through ``masked``, against the two torch optimizers side by side."""
    m_ours, m_torch = problem.make_model(), problem.make_model()
    is_matrix = [p.ndim == 2 for p in m_ours.parameters()]
    is_vector = [not f for f in is_matrix]
    tx = oo.chain(oo.masked(oo.muon(lr=0.02), is_matrix), oo.masked(oo.adamw(lr=0.01), is_vector))
    ours = oo.Optimizer(m_ours.parameters(), tx)
    muon = torch.optim.Muon([p for p in m_torch.parameters() if p.ndim == 2], lr=0.02)
    adamw = torch.optim.AdamW([p for p in m_torch.parameters() if p.ndim != 2], lr=0.01)
    x, y = batches
    for t in range(30):
        for opt in (ours, muon, adamw):
            opt.zero_grad()
        torch.nn.functional.cross_entropy(m_ours(x[t % len(x)]), y[t % len(y)]).backward()
        torch.nn.functional.cross_entropy(m_torch(x[t % len(x)]), y[t % len(y)]).backward()
        ours.step()
        muon.step()
        adamw.step()
    assert problem.max_rel_err(m_ours, m_torch) < 1e-6


# -------------------------------------------------------------------------------------- state and input


@pytest.mark.parametrize("case", ["rprop", "asgd", "adafactor", "muon"])
def test_state_dict_round_trip_resumes_to_same_numbers(case, batches, problem):
    name, hp, override = CASES[case]
    m_full = problem.make_model()
    opt_full = oo.create(name, _groups(m_full, name, 2, override), **hp)
    problem.run(m_full, opt_full, batches, steps=30)

    m_a = problem.make_model()
    opt_a = oo.create(name, _groups(m_a, name, 2, override), **hp)
    problem.run(m_a, opt_a, batches, steps=15)
    m_b = problem.make_model(seed=5)
    m_b.load_state_dict(m_a.state_dict())
    opt_b = oo.create(name, _groups(m_b, name, 2, override), **hp)
    opt_b.load_state_dict(opt_a.state_dict())
    x, y = batches
    problem.run(m_b, opt_b, (torch.cat([x[15:], x[:15]]), torch.cat([y[15:], y[:15]])), steps=15)
    assert all(torch.equal(a, b) for a, b in zip(m_full.parameters(), m_b.parameters()))


def test_adafactor_keeps_factored_state_for_matrices(problem):
    """Shazeer & Stern's point: an n x m matrix keeps n + m second-moment numbers, a vector keeps its own size."""
    model = problem.make_model()
    opt = oo.create("adafactor", model.parameters())
    model(torch.randn(2, 6, dtype=torch.float64)).sum().backward()
    opt.step()
    w, b = model[0].weight, model[0].bias  # (16, 6), (16,)
    assert opt.state[w]["0.row_var"].shape == (16, 1) and opt.state[w]["0.col_var"].shape == (1, 6)
    assert "0.variance" not in opt.state[w] and opt.state[b]["0.variance"].shape == (16,)


BAD = [
    ("rprop", {"lr": -0.1}, r"^rprop: lr must be in \[0, inf\), got -0.1$"),
    ("rprop", {"etas": (1.0, 0.5)}, r"^rprop: etas must satisfy 0 < eta_minus < 1 < eta_plus, got \(1.0, 0.5\)$"),
    ("rprop", {"etas": (0.5,)}, r"^rprop: etas must be a tuple of 2 numbers \(eta_minus, eta_plus\), got \(0.5,\)$"),
    ("rprop", {"step_sizes": (1.0, 1e-3)}, r"^rprop: step_sizes must satisfy 0 <= min <= max, got \(1.0, 0.001\)$"),
    ("rprop", {"step_sizes": (-1.0, 1.0)}, r"^rprop: step_sizes must satisfy 0 <= min <= max"),
    ("asgd", {"lr": -1.0}, r"^asgd: lr must be in \[0, inf\), got -1.0$"),
    ("asgd", {"weight_decay": -0.5}, r"^asgd: weight_decay must be in \[0, inf\), got -0.5$"),
    ("asgd", {"lambd": -1e-4}, r"^asgd: lambd must be in \[0, inf\)"),
    ("asgd", {"t0": -3}, r"^asgd: t0 must be in \[0, inf\), got -3$"),
    ("adafactor", {"lr": -0.01}, r"^adafactor: lr must be in \[0, inf\)"),
    ("adafactor", {"eps": (-1e-30, 1e-3)}, r"^adafactor: eps\[0\] must be in \[0, inf\), got -1e-30$"),
    ("adafactor", {"eps": 1e-3}, r"^adafactor: eps must be a pair \(eps1 or None, eps2\), got 0.001$"),
    ("adafactor", {"d": 0.0}, r"^adafactor: d must be in \[1, inf\], got 0.0$"),
    ("adafactor", {"beta2_decay": 0.8}, r"^adafactor: beta2_decay must be in \[-inf, 0\], got 0.8$"),
    ("adafactor", {"weight_decay": -0.1}, r"^adafactor: weight_decay must be in \[0, inf\)"),
    ("muon", {"lr": -1e-3}, r"^muon: lr must be in \[0, inf\)"),
    ("muon", {"momentum": 1.0}, r"^muon: momentum must be in \[0, 1\), got 1.0$"),
    ("muon", {"ns_steps": 0}, r"^muon: ns_steps must be an integer in \[1, 99\], got 0$"),
    ("muon", {"ns_steps": 100}, r"^muon: ns_steps must be an integer in \[1, 99\], got 100$"),
    ("muon", {"ns_steps": 2.5}, r"^muon: ns_steps must be an integer in \[1, 99\], got 2.5$"),
    ("muon", {"ns_coefficients": (3.4, -4.7)}, r"^muon: ns_coefficients must be a tuple of 3 numbers \(a, b, c\)"),
    ("muon", {"adjust_lr_fn": "arbitrary"},
     r"^muon: adjust_lr_fn must be one of None, 'original', 'match_rms_adamw', got 'arbitrary'$"),
    ("muon", {"nesterov": 1}, r"^muon: nesterov must be True or False, got 1$"),
]


@pytest.mark.parametrize("name, hp, message", BAD, ids=[f"{n}-{next(iter(h))}" for n, h, _ in BAD])
def test_bad_input_raises_in_the_one_format(name, hp, message, problem):
    with pytest.raises(OptregValueError, match=message):
        oo.create(name, problem.make_model().parameters(), **hp)


def test_polyak_average_needs_a_transform_to_average():
    from optreg.errors import OptregTypeError

    with pytest.raises(OptregTypeError, match=r"^polyak_average: inner must be a Transform, got function$"):
        oo.polyak_average(oo.adam)
    with pytest.raises(OptregValueError, match=r"^polyak_average: decay must be in \[0, 1\), got 1.0$"):
        oo.polyak_average(oo.adam(), decay=1.0)
