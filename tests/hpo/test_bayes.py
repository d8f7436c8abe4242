"""Tests of Bayesian optimization (optreg.hpo.bayes, Algorithm 7.1).

Oracles: Branin's known minimum 0.397887 (Dixon & Szego 1978); brute force over a dense grid for the
acquisition's maximum; the objective's known minimizer on mixed integer / categorical spaces; the
configurations of the space counted by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo import gp
from optreg.hpo.bayes import GPSampler
from optreg.hpo.space import Space

BRANIN_MIN = 0.397887357729738


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


BRANIN = {"x1": hpo.Float(-5.0, 10.0), "x2": hpo.Float(0.0, 15.0)}


def test_gp_ei_finds_branins_minimum_far_better_than_random():
    ei = hpo.minimize(branin, BRANIN, method="gp-ei", n_trials=25, seed=0)
    rnd = hpo.minimize(branin, BRANIN, method="random", n_trials=25, seed=0)
    assert ei.best_value - BRANIN_MIN < 0.05
    assert ei.best_value - BRANIN_MIN < (rnd.best_value - BRANIN_MIN) / 10
    assert all("gp" in t.meta for t in ei.trials[ei.method.n_startup :])  # the fits are stored


@pytest.mark.parametrize("method", ["gp-pi", "gp-ucb"])
def test_gp_pi_and_ucb_minimize_a_quadratic(method):
    space = {"x": hpo.Float(-2.0, 2.0), "y": hpo.Float(-2.0, 2.0)}
    study = hpo.minimize(lambda p: (p["x"] - 0.5) ** 2 + (p["y"] + 0.3) ** 2, space, method=method, n_trials=16,
                         seed=1)  # fmt: skip
    assert study.best_value < 0.02


MIXED = {
    "x": hpo.Float(1e-3, 1.0, log=True),
    "n": hpo.Int(1, 8),
    "c": hpo.Categorical(["a", "b", "c"]),
    "m": hpo.Float(0.0, 1.0, when={"c": "b"}),
}


def test_mixed_space_suggestions_are_valid_configurations():
    study = hpo.minimize(lambda p: p["x"] + p["n"] + len(p), MIXED, method="gp-ei", n_trials=12, seed=0)
    checked = Space(MIXED)
    for t in study.trials:
        assert checked.check_params(t.params) == t.params and type(t.params["n"]) is int
        assert ("m" in t.params) == (t.params["c"] == "b")


@pytest.mark.slow
def test_mixed_space_finds_the_discrete_optimum_and_stays_valid():
    space = {
        "x": hpo.Float(1e-3, 1.0, log=True),
        "n": hpo.Int(1, 8),
        "c": hpo.Categorical(["a", "b", "c"]),
        "m": hpo.Float(0.0, 1.0, when={"c": "b"}),
    }

    def f(p):
        return (math.log10(p["x"]) + 2) ** 2 + (p["n"] - 6) ** 2 / 4 + (0 if p["c"] == "b" else 2) + (
            (p.get("m", 0.5) - 0.7) ** 2
        )

    study = hpo.maximize(lambda p: -f(p), space, method="gp-ei", n_trials=30, seed=0)
    checked = Space(space)
    for t in study.trials:
        assert checked.check_params(t.params) == t.params and type(t.params["n"]) is int
    best = study.best_params
    assert best["c"] == "b" and best["n"] == 6 and study.best_value > -0.1


def test_a_finite_space_is_covered_without_duplicates():
    space = {"a": hpo.Categorical(["x", "y", "z"]), "b": hpo.Int(0, 1)}
    study = hpo.minimize(lambda p: {"x": 0, "y": 1, "z": 2}[p["a"]] + p["b"], space, method="gp-ei", n_trials=6,
                         seed=0, n_startup=2)  # fmt: skip
    assert len({tuple(t.params.items()) for t in study.trials}) == 6  # the 3 x 2 configurations


def _fitted_sampler(seed=0, n=12):
    space = Space(BRANIN)
    enc = space.encoding()
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    y = np.array([branin(enc.decode(u)) for u in x])
    return enc, x, y


def test_the_suggestion_maximizes_the_acquisition_brute_force():
    """The multi-start ascent reaches the maximum of log EI found by a dense 400 x 400 grid."""
    enc, x, y = _fitted_sampler()
    sampler = GPSampler(enc, "ei")
    u = sampler.suggest(x, y, np.zeros((0, 2)), np.random.default_rng(0))
    acq = sampler._acquisition(x, y, np.zeros((0, 2)), sampler.params_)
    g = np.linspace(0, 1, 400)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    with torch.no_grad():
        brute = acq(torch.tensor(grid)).max().item()
        ours = acq(torch.tensor(u[None])).item()
    assert ours >= brute - 1e-3


def test_constant_liar_moves_a_parallel_suggestion_away_from_pending_points():
    enc, x, y = _fitted_sampler()
    sampler = GPSampler(enc, "ei")
    first = sampler.suggest(x, y, np.zeros((0, 2)), np.random.default_rng(0))
    again = sampler.suggest(x, y, np.zeros((0, 2)), np.random.default_rng(0))
    np.testing.assert_array_equal(first, again)  # without the lie a second worker would duplicate it
    second = sampler.suggest(x, y, first[None], np.random.default_rng(0))
    assert np.abs(second - first).max() > 0.02


def test_parallel_asks_do_not_duplicate():
    study = hpo.Study(BRANIN, method="gp-ei", n_trials=20, seed=0)
    for _ in range(study.method.n_startup):
        t = study.ask()
        study.tell(t, branin(t.params))
    batch = [study.ask() for _ in range(4)]  # four workers ask before any tells
    pts = np.stack([study.method.encoding.encode(t.params) for t in batch])
    dists = np.abs(pts[:, None] - pts[None]).max(-1)[np.triu_indices(4, 1)]
    assert dists.min() > 0.01


def test_a_resumed_gp_study_proposes_what_an_uninterrupted_one_does(tmp_path):
    path = tmp_path / "gp.sqlite"
    ref = hpo.minimize(branin, BRANIN, method="gp-ei", n_trials=12, seed=3)
    first = hpo.minimize(branin, BRANIN, method="gp-ei", n_trials=9, seed=3, storage=path, name="b")
    first.close()
    resumed = hpo.minimize(branin, BRANIN, method="gp-ei", n_trials=12, seed=3, storage=path, name="b")
    assert [t.params for t in resumed.trials] == [t.params for t in ref.trials]


def test_gp_options_are_checked():
    with pytest.raises(OptregValueError, match=r"gp-ucb: beta must be in \(0, inf\), got -1"):
        hpo.Study(BRANIN, method="gp-ucb", beta=-1)
    with pytest.raises(ValueError, match=r"gp-ei: n_startup must be an integer >= 2, got 1"):
        hpo.Study(BRANIN, method="gp-ei", n_startup=1)
    with pytest.raises(TypeError, match=r"method 'gp-ei' takes no option 'beta'"):
        hpo.Study(BRANIN, method="gp-ei", beta=2.0)


def test_the_fit_is_warm_started_from_the_previous_trial():
    study = hpo.minimize(branin, BRANIN, method="gp-ei", n_trials=12, seed=0)
    fits = [gp.unpack(t.meta["gp"]) for t in study.trials if "gp" in t.meta]
    assert len(fits) == 12 - study.method.n_startup
    assert all(torch.isfinite(p.lengthscales).all() for p in fits)


@pytest.mark.parametrize("kind", ["ei", "pi", "ucb"])
def test_acquisition_gradient_matches_autograd(kind):
    """The climb's gradient (closed-form posterior derivatives) against torch.autograd through the acquisition."""
    enc, x, y = _fitted_sampler()
    sampler = GPSampler(enc, kind)
    acq = sampler._acquisition(x, y, x[:1] + 0.01, None)  # one pending point: the constant liar
    u = np.random.default_rng(1).random((6, 2))
    value, grad = acq.value_and_grad(u)
    ut = torch.tensor(u, requires_grad=True)
    ref = acq(ut)
    ref.sum().backward()
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(grad, ut.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_floats_are_climbed_again_once_the_integers_are_rounded():
    """On a mixed space the suggestion is a stationary point of log EI in its float coordinate, with the
    integer fixed at its rounded value (checked by scipy's bounded scalar minimizer on that slice)."""
    import scipy.optimize

    space = Space({"x": hpo.Float(-2.0, 2.0), "n": hpo.Int(0, 10)})
    enc = space.encoding()
    rng = np.random.default_rng(0)
    x = enc.canonical(rng.random((12, 2)))
    y = np.array([(p["x"] - 0.3) ** 2 + 0.1 * (p["n"] - 3.4) ** 2 for p in map(enc.decode, x)])
    sampler = GPSampler(enc, "ei")
    u = sampler.suggest(x, y, np.zeros((0, 2)), np.random.default_rng(0))
    acq = sampler._acquisition(x, y, np.zeros((0, 2)), sampler.params_)

    def on_slice(t):
        return -sampler._score(acq, np.array([[t, u[1]]]))[0]

    lo, hi = max(0.0, u[0] - 0.05), min(1.0, u[0] + 0.05)
    best = scipy.optimize.minimize_scalar(on_slice, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
    assert -on_slice(u[0]) >= -best.fun - 1e-6
