"""Tests of neural architecture search (optreg.hpo.nas, 7.6.4.1, Zoph & Le 2017).

Oracles: the closed form of the REINFORCE gradient of a softmax token, ``d log p(a) / dz = onehot(a) - p``,
and of its entropy, ``dH / dz = -p (log p + H)``; torch.distributions.Categorical and torch.optim.Adam for one
update; the moving average computed by hand; random search (optreg's ``random``) as the baseline method on a
synthetic reward whose best architecture is known; numpy.geomspace for a Float's grid; the shapes of the
torch modules optreg.nn.build makes from a spec; a study run without interruption for resume.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from optreg import hpo
from optreg.errors import OptregError, OptregValueError
from optreg.hpo.nas import NAS, Controller, choices_of
from optreg.hpo.space import Space

SMALL = {f"p{i}": hpo.Categorical(["a", "b", "c", "d"]) for i in range(4)}
SMALL_BEST = {"p0": "c", "p1": "a", "p2": "d", "p3": "b"}


def _matches(p):
    return sum(p[k] == v for k, v in SMALL_BEST.items()) / 4


# the lab's MLP space: layers 1..4, a width per layer that exists only if layers >= k (37,440 architectures)
MLP = hpo.nas_space(max_layers=4, widths=(16, 32, 64, 128, 256), activations=("relu", "tanh", "gelu", "elu"),
                    norms=("none", "batch", "layer"), dropouts=(0.0, 0.1, 0.2, 0.3))  # fmt: skip
MLP_BEST = {"layers": 3, "width_1": 128, "width_2": 64, "width_3": 32, "activation": "tanh", "norm": "layer",
            "dropout": 0.1}  # fmt: skip


def _mlp_reward(p):
    """A stand-in validation accuracy, 1.0 at MLP_BEST only, lower the further an architecture is from it."""
    r = 1.0 - 0.15 * abs(p["layers"] - 3)
    for k in range(1, 4):
        w = p.get(f"width_{k}")
        r -= 0.1 * (abs(math.log2(w / MLP_BEST[f"width_{k}"])) / 4 if w is not None else 1)
    return r - 0.1 * (p["activation"] != "tanh") - 0.1 * (p["norm"] != "layer") - 0.5 * abs(p["dropout"] - 0.1)


def _method(space, **options):
    return NAS(Space(space), seed=0, n_trials=None, direction="maximize", **options)


# ------------------------------------------------------------------------------ the REINFORCE gradient
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_reinforce_gradient_of_one_token_is_the_closed_form(beta):
    """Oracle: for one softmax token with logits z and advantage A, the surrogate loss
    -A log p(a) - beta H has gradient -A (onehot(a) - p) + beta p (log p + H) with respect to z."""
    space = Space({"op": hpo.Categorical(["conv3", "conv5", "pool", "skip", "id"])})
    ctl = Controller(space, choices_of(space, None), hidden=8, seed=3)
    advantage = 0.7
    for a, choice in enumerate(space.dists["op"].choices):
        path = ctl.walk({"op": choice})
        (name, z), = path.tokens  # fmt: skip
        assert name == "op"
        z.retain_grad()
        (-advantage * path.log_prob - beta * path.entropy).backward()
        p = torch.softmax(z.detach(), 0)
        h = -(p * p.log()).sum()
        expected = -advantage * (torch.eye(5, dtype=p.dtype)[a] - p) + beta * p * (p.log() + h)
        torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(path.log_prob.detach(), p[a].log())
        torch.testing.assert_close(path.entropy.detach(), h)
        ctl.zero_grad()


def test_one_update_is_adam_on_the_reinforce_loss_with_the_moving_average_baseline():
    """Oracle: torch.distributions.Categorical for log p and H, torch.optim.Adam for the step, and the
    baseline by hand: b starts at the first reward (advantage 0), trial k's advantage is R_k - b_{k-1},
    b_k = d b_{k-1} + (1 - d) R_k."""
    space = {"op": hpo.Categorical(["a", "b", "c"])}
    m = _method(space, hidden=6, lr=0.01, entropy=0.2, baseline_decay=0.8)
    state = m.fresh()
    oracle = Controller(m.space, m.choices, hidden=6, seed=0)
    opt = torch.optim.Adam(oracle.parameters(), lr=0.01)
    rewards, picks = [0.5, 0.9, 0.2, 0.6], ["b", "a", "c", "a"]
    b = None
    for r, a in zip(rewards, picks):
        with torch.enable_grad():
            m.observe(state, {"op": a}, r)
        adv = 0.0 if b is None else r - b
        b = r if b is None else 0.8 * b + 0.2 * r
        (_, z), = oracle.walk({"op": a}).tokens  # fmt: skip
        dist = torch.distributions.Categorical(logits=z)
        opt.zero_grad()
        (-adv * dist.log_prob(torch.tensor(["a", "b", "c"].index(a))) - 0.2 * dist.entropy()).backward()
        opt.step()
        assert state.baseline == pytest.approx(b, abs=1e-15)
        for p, q in zip(state.controller.parameters(), oracle.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert (state.n_rewards, state.n_updates) == (4, 4)


def test_batch_size_averages_the_losses_of_m_trials_before_one_step():
    """Oracle: the same four observations by hand: one Adam step on the mean of the first two surrogate
    losses (both from the untouched controller), then one on the mean of the last two."""
    space = {"op": hpo.Categorical(["a", "b", "c"]), "k": hpo.Int(1, 3)}
    m = _method(space, hidden=5, lr=0.02, entropy=0.0, batch_size=2)
    state = m.fresh()
    oracle = Controller(m.space, m.choices, hidden=5, seed=0)
    opt = torch.optim.Adam(oracle.parameters(), lr=0.02)
    obs = [
        ({"op": "a", "k": 2}, 0.3),
        ({"op": "c", "k": 1}, 0.8),
        ({"op": "b", "k": 3}, 0.1),
        ({"op": "a", "k": 1}, 0.9),
    ]
    b, losses = None, []
    for i, (params, r) in enumerate(obs):
        with torch.enable_grad():
            m.observe(state, params, r)
        adv = 0.0 if b is None else r - b
        b = r if b is None else 0.9 * b + 0.1 * r
        losses.append(-adv * oracle.walk(params).log_prob)
        if i % 2 == 1:
            opt.zero_grad()
            ((losses[0] + losses[1]) / 2).backward()
            opt.step()
            losses = []
            for p, q in zip(state.controller.parameters(), oracle.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        else:
            assert len(state.pending) == 1
    assert state.n_updates == 2


# ------------------------------------------------------------------------------ the controller learns
def test_the_controller_learns_the_best_architecture():
    """On a reward that counts matches with one architecture (256 of them), 150 trials raise that
    architecture's probability from about uniform (1/256) to most of the mass."""
    study = hpo.maximize(_matches, SMALL, method="nas", n_trials=150, seed=0)
    before = study.method.fresh().controller.probability(SMALL_BEST)
    after = study.method.state(study.trials).controller.probability(SMALL_BEST)
    assert before == pytest.approx(1 / 256, rel=0.3)
    assert after > 0.5
    last = [t.params for t in study.trials[-20:]]
    assert sum(p == SMALL_BEST for p in last) >= 10


@pytest.mark.slow
def test_nas_beats_random_search_over_seeds_on_the_mlp_space():
    """Oracle: random search with the same budget. Over 5 seeds of 300 trials on the conditional MLP space
    (37,440 architectures, best unique), nas's median regret is below random search's, and the median
    probability of the best architecture ends far above its probability before training (~1/24,000)."""
    regret = {"nas": [], "random": []}
    probs, before = [], []
    for seed in range(5):
        for method in ("nas", "random"):
            study = hpo.maximize(_mlp_reward, MLP, method=method, n_trials=300, seed=seed)
            regret[method].append(_mlp_reward(MLP_BEST) - study.best_value)
            if method == "nas":
                probs.append(study.method.state(study.trials).controller.probability(MLP_BEST))
                before.append(study.method.fresh().controller.probability(MLP_BEST))
    assert statistics.median(regret["nas"]) < statistics.median(regret["random"])
    assert statistics.median(probs) > 1000 * statistics.median(before)
    assert max(before) < 1e-4


# ------------------------------------------------------------------------------ conditional parameters
def test_conditional_parameters_are_respected_and_get_no_token():
    """width_k is present exactly when layers >= k, every value is one of its choices (the space's own
    check), and the controller emits a token only for the active, non-Fixed parameters."""
    space = {**MLP, "epochs": hpo.Fixed(5)}
    study = hpo.maximize(_mlp_reward, space, method="nas", n_trials=40, seed=1)
    s = Space(space)
    ctl = study.method.state(study.trials).controller
    layers_seen = set()
    for t in study.trials:
        assert s.check_params(t.params) == t.params
        layers_seen.add(t.params["layers"])
        for k in range(1, 5):
            assert (f"width_{k}" in t.params) == (t.params["layers"] >= k)
        names = [n for n, _ in ctl.walk(t.params).tokens]
        assert names == [n for n in s.names if n in t.params and n != "epochs"]
        assert t.params["epochs"] == 5
    assert len(layers_seen) >= 3


def test_float_is_chosen_on_its_grid_and_int_on_its_values():
    """Oracle: numpy.geomspace / linspace give the grid of a Float; an Int takes every integer."""
    space = {"lr": hpo.Float(1e-4, 1e-1, log=True), "drop": hpo.Float(0.0, 0.5), "n": hpo.Int(2, 6)}
    study = hpo.minimize(lambda p: abs(math.log10(p["lr"]) + 2) + p["drop"] + p["n"], space, method="nas",
                         n_trials=30, seed=0, grid={"lr": 4, "drop": 3})  # fmt: skip
    lrs, drops = np.geomspace(1e-4, 1e-1, 4), np.linspace(0.0, 0.5, 3)
    for t in study.trials:
        assert np.isclose(lrs, t.params["lr"], rtol=1e-12).any()
        assert np.isclose(drops, t.params["drop"]).any()
        assert t.params["n"] in range(2, 7)
    c = choices_of(Space(space), 5)
    assert len(c["lr"]) == len(c["drop"]) == 5 and c["n"] == (2, 3, 4, 5, 6)
    assert study.method.reward(study.trials[0]) == -study.trials[0].value  # minimizing: R = -value


# ------------------------------------------------------------------------------ resume and determinism
def _same_state(a, b):
    for p, q in zip(a.controller.parameters(), b.controller.parameters(), strict=True):
        assert torch.equal(p, q)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert all(torch.equal(torch.as_tensor(sa[k][n]), torch.as_tensor(sb[k][n])) for n in sa[k])
    assert a.baseline == b.baseline and a.n_updates == b.n_updates


def test_resume_equals_an_uninterrupted_run(tmp_path):
    """Oracle: the same study run without interruption. Killed (KeyboardInterrupt) in trial 14 and resumed
    from its SQLite storage by a new Study (which replays the stored trials), it proposes the same
    architectures, and its controller (weights, Adam's moments, baseline) ends bit for bit the same."""
    kw = dict(method="nas", n_trials=30, seed=5, batch_size=2)
    whole = hpo.maximize(_mlp_reward, MLP, storage=tmp_path / "a.sqlite", name="s", **kw)

    calls = []

    def dies(p):
        calls.append(1)
        if len(calls) == 15:
            raise KeyboardInterrupt
        return _mlp_reward(p)

    with pytest.raises(KeyboardInterrupt):
        hpo.maximize(dies, MLP, storage=tmp_path / "b.sqlite", name="s", **kw)
    assert sum(t.state == "complete" for t in hpo.Study(MLP, storage=tmp_path / "b.sqlite", name="s",
               direction="maximize", method="nas", seed=5, batch_size=2).trials) == 14  # fmt: skip
    resumed = hpo.maximize(_mlp_reward, MLP, storage=tmp_path / "b.sqlite", name="s", **kw)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]
    assert [t.meta for t in resumed.trials] == [t.meta for t in whole.trials]
    _same_state(resumed.method.state(resumed.trials), whole.method.state(whole.trials))
    # the running process's state (built trial by trial) equals a replay from scratch by a fresh method
    fresh = NAS(Space(MLP), seed=5, n_trials=30, direction="maximize", batch_size=2)
    _same_state(fresh.state(whole.trials), whole.method.state(whole.trials))


def test_trials_told_out_of_order_replay_to_the_same_controller():
    """Ask three trials, tell them 2, 0, 1: the kept state is rebuilt when an earlier trial completes after
    a later one, and equals a fresh replay of the complete trials in number order."""
    study = hpo.Study(SMALL, method="nas", direction="maximize", seed=2)
    asked = [study.ask() for _ in range(3)]
    for i in (2, 0, 1):
        study.tell(asked[i], _matches(asked[i].params))
        study.ask()  # the method runs on the trials so far
    fresh = NAS(Space(SMALL), seed=2, n_trials=None, direction="maximize")
    _same_state(study.method.state(study.trials), fresh.state(study.trials))
    assert study.method.state(study.trials).seen == [0, 1, 2]


def test_same_seed_same_trials_and_the_global_rngs_are_left_alone():
    """Two runs with one seed propose the same architectures; another seed others; torch's and numpy's
    global RNG states are what they were before (the controller has its own generators)."""
    torch.manual_seed(123)
    np.random.seed(7)  # noqa: NPY002
    t_state, n_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
    a = hpo.maximize(_matches, SMALL, method="nas", n_trials=12, seed=4)
    assert torch.equal(torch.get_rng_state(), t_state)
    assert np.random.get_state()[1].tolist() == n_state[1].tolist()  # noqa: NPY002
    b = hpo.maximize(_matches, SMALL, method="nas", n_trials=12, seed=4, cell="lstm")
    c = hpo.maximize(_matches, SMALL, method="nas", n_trials=12, seed=5)
    assert [t.params for t in a.trials] == [t.params for t in b.trials] != [t.params for t in c.trials]
    g = hpo.maximize(_matches, SMALL, method="nas", n_trials=12, seed=4, cell="gru")
    assert [t.params for t in g.trials] != [t.params for t in a.trials]
    assert "nas" in hpo.methods()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("space", "options", "match"),
    [
        ({"lr": hpo.Float(1e-4, 1.0, log=True)}, {}, r"nas: space\['lr'\] is a Float.*grid"),
        ({"lr": hpo.Float(0.0, 1.0), "k": hpo.Int(1, 3)}, {"grid": {"k": 1, "lr": 3}}, r"nas: grid\['k'\] must be"),
        ({"lr": hpo.Float(0.0, 1.0)}, {"grid": {"width": 3}}, r"nas: grid names a parameter .* got 'width'"),
        ({"lr": hpo.Float(0.0, 1.0)}, {"grid": 1}, r"nas: grid must be an integer >= 2, got 1"),
        ({"n": hpo.Int(1, 10**6)}, {}, r"nas: space\['n'\] has 1000000 values"),
        ({"a": hpo.Categorical([1, 2])}, {"lr": -1.0}, r"nas: lr must be in \(0, inf\)"),
        ({"a": hpo.Categorical([1, 2])}, {"cell": "rnn"}, r"nas: cell must be one of 'lstm', 'gru'"),
        ({"a": hpo.Categorical([1, 2])}, {"baseline_decay": 1.0}, r"nas: baseline_decay must be in \[0, 1\)"),
        ({"a": hpo.Categorical([1, 2])}, {"batch_size": 0}, r"nas: batch_size must be an integer >= 1"),
        ({"a": hpo.Categorical([1, 2])}, {"temperature": 2}, r"method 'nas' takes no option 'temperature'"),
        ({}, {}, r"hpo: space must be a non-empty dict"),
    ],
)
def test_bad_input_is_an_error_naming_the_field(space, options, match):
    with pytest.raises(OptregError, match=match):
        hpo.maximize(_matches, space, method="nas", n_trials=3, seed=0, **options)


def test_an_unbounded_float_is_refused_naming_the_bound():
    with pytest.raises(OptregValueError, match="Float: high must be finite, got inf"):
        hpo.Float(0.0, math.inf)


def test_a_space_of_fixed_parameters_needs_no_token():
    study = hpo.maximize(lambda p: p["x"], {"x": hpo.Fixed(2.0)}, method="nas", n_trials=3, seed=0)
    assert [t.params for t in study.trials] == [{"x": 2.0}] * 3


# ------------------------------------------------------------------------------ the lab's model builder
def test_nas_space_gives_specs_the_model_builder_builds():
    """Oracle: the torch modules optreg.nn.build makes: the Linear layers' widths are the sampled widths,
    the activation and norm modules are the sampled ones."""
    from optreg.nn import models

    space = hpo.nas_space(max_layers=3, widths=(8, 16), activations=("relu", "tanh"), norms=("none", "layer"),
                          dropouts=(0.0, 0.2))  # fmt: skip
    assert list(space) == ["layers", "width_1", "width_2", "width_3", "activation", "norm", "dropout"]
    assert space["width_1"].when is None and dict(space["width_3"].when) == {"layers": (3,)}
    rng = np.random.default_rng(0)
    s = Space(space)
    for _ in range(20):
        p = s.sample(rng)
        spec = hpo.nas_to_model_spec(p, in_features=64, out_features=10)
        model = models.build(spec)
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert [m.out_features for m in linear[:-1]] == [p[f"width_{k}"] for k in range(1, p["layers"] + 1)]
        assert linear[0].in_features == 64 and linear[-1].out_features == 10
        act = torch.nn.ReLU if p["activation"] == "relu" else torch.nn.Tanh
        assert sum(isinstance(m, act) for m in model.modules()) == p["layers"]
        assert any(isinstance(m, torch.nn.Dropout) for m in model.modules()) == (p["dropout"] > 0)
        assert (spec["norm"] == "layer") == any("norm" in n for n, _ in model.named_modules())
    fixed = hpo.nas_space(max_layers=2, min_layers=2, widths=(32,), activations=("relu",), norms=("batch",),
                          dropouts=(0.1,))  # fmt: skip
    assert all(isinstance(d, hpo.Fixed) for d in fixed.values())
    assert hpo.nas_to_model_spec(Space(fixed).sample(rng)) == {
        "kind": "mlp",
        "hidden": [32, 32],
        "activation": "relu",
        "norm": "batch",
        "dropout": 0.1,
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": ()}, r"nas_space: widths must be a non-empty list"),
        ({"widths": (0, 8)}, r"nas_space: widths must be an integer >= 1, got 0"),
        ({"activations": ("swish",)}, r"nas_space: activations must be one of"),
        ({"norms": ("lrn",)}, r"nas_space: norms must be one of"),
        ({"dropouts": (1.0,)}, r"nas_space: dropouts must be numbers in \[0, 1\), got 1.0"),
        ({"max_layers": 0}, r"nas_space: max_layers must be an integer >= 1, got 0"),
        ({"max_layers": 2, "min_layers": 3}, r"nas_space: max_layers must be an integer >= 3, got 2"),
    ],
)
def test_nas_space_bad_input(kwargs, match):
    with pytest.raises(OptregValueError, match=match):
        hpo.nas_space(**kwargs)


def test_nas_to_model_spec_bad_input():
    with pytest.raises(OptregValueError, match="nas_to_model_spec: params need 'layers'"):
        hpo.nas_to_model_spec({"width_1": 8})
    with pytest.raises(OptregValueError, match="nas_to_model_spec: params need 'width_2' for layers = 2"):
        hpo.nas_to_model_spec({"layers": 2, "width_1": 8})
    with pytest.raises(OptregValueError, match="models.mlp: dropout must be in"):
        hpo.nas_to_model_spec({"layers": 0, "dropout": 2.0}, in_features=4, out_features=2)


@pytest.mark.slow
def test_nas_on_the_lab_mlp_on_digits():
    """A real search: nas over the MLP space on digits, each trial one optreg.train.run scored by its
    validation accuracy (never the test split); every trial trains, and the best beats chance by far."""
    from optreg.data import load
    from optreg.train import run

    data = load("digits", 0, val_fraction=0.2)
    space = hpo.nas_space(max_layers=2, widths=(16, 64), activations=("relu", "tanh"), norms=("none", "layer"),
                          dropouts=(0.0, 0.2))  # fmt: skip

    def objective(p):
        spec = {"model": hpo.nas_to_model_spec(p), "optimizer": {"name": "adam", "lr": 0.01},
                "train": {"epochs": 3, "batch_size": 64}}  # fmt: skip
        return run(spec, data, seed=0).final("val_accuracy")

    study = hpo.maximize(objective, space, method="nas", n_trials=6, seed=0)
    assert all(t.state == "complete" and 0.0 <= t.value <= 1.0 for t in study.trials)
    assert study.best_value > 0.5
    assert study.method.state(study.trials).n_updates == 6
