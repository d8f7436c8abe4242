"""Tests of the Tree-structured Parzen Estimator (optreg.hpo.tpe, Bergstra et al. 2011).

Oracles: scipy.stats.truncnorm (pdf, cdf) and a numeric integral for the kernels; a sort (numpy.argsort
of the losses) for the good / bad split; the smoothed frequencies written out by hand for a categorical;
random search (7.6.2) on the same seeds for the smoke test; Branin's known minimum.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo import tpe
from optreg.hpo.space import Space

BRANIN = {"x1": hpo.Float(-5.0, 10.0), "x2": hpo.Float(0.0, 15.0)}
BRANIN_MIN = 0.397887357729738


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


@pytest.mark.parametrize(("mu", "sigma"), [(0.5, 1.0), (0.03, 0.05), (0.97, 0.2), (0.0, 0.01), (1.0, 0.3)])
def test_truncated_gaussian_kernel_matches_scipy_truncnorm_and_integrates_to_one(mu, sigma):
    u = np.linspace(0, 1, 101)
    a, b = (0 - mu) / sigma, (1 - mu) / sigma
    want = scipy.stats.truncnorm.logpdf(u, a, b, loc=mu, scale=sigma)
    np.testing.assert_allclose(tpe.truncnorm_logpdf(u, np.array(mu), np.array(sigma)), want, rtol=1e-10, atol=1e-10)
    total, _ = scipy.integrate.quad(lambda x: math.exp(tpe.truncnorm_logpdf(np.array(x), mu, sigma)), 0, 1, points=[mu])
    assert total == pytest.approx(1.0, abs=1e-8)
    lo, hi = np.array([0.0, 0.2, 0.6, 0.9]), np.array([0.2, 0.6, 0.9, 1.0])
    dist = scipy.stats.truncnorm(a, b, loc=mu, scale=sigma)
    # the oracle's differences taken on the tail away from the bin, as it is tiny there
    want_mass = np.where(lo > mu, dist.sf(lo) - dist.sf(hi), dist.cdf(hi) - dist.cdf(lo))
    got = tpe.truncnorm_logmass(lo, hi, np.array(mu), np.array(sigma))
    np.testing.assert_allclose(np.exp(got), want_mass, rtol=1e-8, atol=1e-300)
    assert np.exp(got).sum() == pytest.approx(1.0, abs=1e-10)


def test_a_far_integer_bin_keeps_a_finite_log_mass_scipy_sf_oracle():
    # a bin 30 standard deviations away: Phi(b) - Phi(a) rounds to 0 but its tails do not
    got = tpe.truncnorm_logmass(np.array(0.8), np.array(0.9), np.array(0.2), np.array(0.02))
    want = np.log(scipy.stats.norm.sf(30) - scipy.stats.norm.sf(35)) - np.log(
        scipy.stats.norm.cdf(40) - scipy.stats.norm.cdf(-10)
    )
    assert float(got) == pytest.approx(want, rel=1e-9)


def test_draws_follow_the_truncated_gaussian_kolmogorov_smirnov_against_scipy():
    rng = np.random.default_rng(0)
    mu, sigma = np.full(4000, 0.1), np.full(4000, 0.3)
    x = tpe.truncnorm_sample(rng, mu, sigma)
    assert x.min() >= 0 and x.max() <= 1
    ks = scipy.stats.kstest(x, scipy.stats.truncnorm(-0.1 / 0.3, 0.9 / 0.3, loc=0.1, scale=0.3).cdf)
    assert ks.pvalue > 0.01


def test_the_split_is_the_gamma_quantile_of_a_sort():
    rng = np.random.default_rng(1)
    for n in (1, 7, 30, 100, 400):
        losses = rng.normal(size=n)
        losses[: n // 3] = np.round(losses[: n // 3], 1)  # some ties
        good = tpe.split(losses, 0.1)
        k = min(math.ceil(0.1 * n), 25)
        assert good.sum() == k
        assert np.max(losses[good]) <= np.min(losses[~good], initial=np.inf)
        assert set(np.flatnonzero(good)) == set(np.argsort(losses, kind="stable")[:k])


def test_bandwidths_neighbour_rule_by_hand_and_magic_clip():
    mus = np.array([0.5, 0.1, 0.9, 0.3])
    # sorted 0.1 0.3 0.5 0.9 with ends 0, 1: the inner ones take the larger neighbour gap, the outer ones
    # their inner gap; the clip's floor is 1 / (4 + 2)
    want = {0.1: 0.2, 0.3: 0.2, 0.5: 0.4, 0.9: 0.4}
    np.testing.assert_allclose(tpe.bandwidths(mus, "neighbours"), [want[m] for m in mus])
    np.testing.assert_allclose(tpe.bandwidths(np.array([0.5, 0.51]), "neighbours"), [0.25, 0.25])
    np.testing.assert_allclose(tpe.bandwidths(np.full(10, 0.3), "scott", 4), 0.2 * 10 ** (-1 / 8))


def test_forgetting_weights_by_hand():
    np.testing.assert_array_equal(tpe.forgetting_weights(3, 25), [1, 1, 1])
    np.testing.assert_allclose(tpe.forgetting_weights(6, 3), [1 / 6, (1 / 6 + 1) / 2, 1, 1, 1, 1])
    np.testing.assert_array_equal(tpe.forgetting_weights(40, None), np.ones(40))


def test_categorical_kernels_are_smoothed_frequencies():
    space = Space({"c": hpo.Categorical(["a", "b", "c"])})
    method = hpo.Study(space, method="tpe", seed=0).method
    dim = method.encoding.dims[0]
    kern = tpe._Kernels.fit(dim, space.dists["c"], np.array([0.0, 0.0, 2.0]), "neighbours", 1.0, 1)
    a = 1.0 / 4  # prior_weight / (3 trials + prior)
    row = np.array([1 + a / 3, a / 3, a / 3]) / (1 + a)
    np.testing.assert_allclose(kern.probs, [row, row, row[[1, 2, 0]], [1 / 3, 1 / 3, 1 / 3]])


def test_same_seed_same_trials_and_another_seed_differs():
    a = hpo.minimize(branin, BRANIN, method="tpe", n_trials=25, seed=4)
    b = hpo.minimize(branin, BRANIN, method="tpe", n_trials=25, seed=4)
    c = hpo.minimize(branin, BRANIN, method="tpe", n_trials=25, seed=5)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


@pytest.mark.parametrize("multivariate", [False, True])
def test_a_resumed_tpe_study_proposes_what_an_uninterrupted_one_does(tmp_path, multivariate):
    path = tmp_path / "tpe.sqlite"
    kw = {"method": "tpe", "seed": 3, "multivariate": multivariate}
    ref = hpo.minimize(branin, BRANIN, n_trials=20, **kw)
    first = hpo.minimize(branin, BRANIN, n_trials=14, storage=path, name="b", **kw)
    first.close()
    resumed = hpo.minimize(branin, BRANIN, n_trials=20, storage=path, name="b", **kw)
    assert [t.params for t in resumed.trials] == [t.params for t in ref.trials]


@pytest.mark.parametrize("multivariate", [False, True])
def test_tpe_beats_random_search_on_branin_over_seeds(multivariate):
    def best(method, seed, **kw):
        return hpo.minimize(branin, BRANIN, method=method, n_trials=40, seed=seed, **kw).best_value - BRANIN_MIN

    ours = [best("tpe", s, multivariate=multivariate) for s in range(4)]
    theirs = [best("random", s) for s in range(4)]  # the same 10 startup trials per seed
    assert np.median(ours) < 0.5 * np.median(theirs)
    assert sum(o <= r for o, r in zip(ours, theirs, strict=True)) >= 3


def test_mixed_and_conditional_spaces_give_valid_configurations_and_find_the_optimum():
    space = {
        "opt": hpo.Categorical(["sgd", "adam"]),
        "momentum": hpo.Float(0.0, 0.99, when={"opt": "sgd"}),
        "beta": hpo.Float(1e-4, 1e-1, log=True, when={"opt": "adam"}),
        "n": hpo.Int(1, 64, log=True),
        "k": hpo.Int(0, 8),
        "epochs": hpo.Fixed(3),
    }

    def f(p):
        base = (math.log10(p["beta"]) + 2) ** 2 if p["opt"] == "adam" else 2.0 + (p["momentum"] - 0.9) ** 2
        return base + (math.log2(p["n"]) - 3) ** 2 / 4 + abs(p["k"] - 5) / 2

    for multivariate in (False, True):
        study = hpo.minimize(f, space, method="tpe", n_trials=60, seed=0, multivariate=multivariate)
        checked = Space(space)
        for t in study.trials:
            assert checked.check_params(t.params) == t.params
        late = study.trials[30:]
        assert sum(t.params["opt"] == "adam" for t in late) > 20  # the better branch
        assert study.best_value < 0.8
        assert study.best_params["opt"] == "adam" and study.best_params["k"] == 5


def test_conditional_parameters_use_only_the_trials_that_have_them():
    space = Space({"opt": hpo.Categorical(["sgd", "adam"]), "m": hpo.Float(0.0, 1.0, when={"opt": "sgd"})})
    method = hpo.Study(space, method="tpe", seed=0, n_startup=1).method
    trials = [
        hpo.Trial(0, {"opt": "sgd", "m": 0.2}, "complete", 1.0),
        hpo.Trial(1, {"opt": "adam"}, "complete", 0.0),
        hpo.Trial(2, {"opt": "sgd", "m": 0.7}, "complete", 2.0),
    ]
    fits = {tuple(d.name for d in g): (lo, hi) for g, lo, hi in method.fit(trials)}
    below, above = fits[("m",)]
    np.testing.assert_allclose(below.kernels[0].mu, [0.5])  # the only good trial lacks m: the prior alone
    np.testing.assert_allclose(above.kernels[0].mu, [0.2, 0.7, 0.5])
    adam, sgd = method.score(method.fit(trials), [{"opt": "adam"}, {"opt": "sgd", "m": 0.2}])
    assert adam > sgd


@pytest.mark.parametrize("state", ["running", "failed"])
def test_running_and_failed_trials_count_as_bad(state):
    method = hpo.Study(BRANIN, method="tpe", seed=0).method
    study = hpo.minimize(branin, BRANIN, method="tpe", n_trials=15, seed=0)
    trials = list(study.trials)
    point = method.propose(trials).params
    before = method.score(method.fit(trials), [point])[0]
    lied = [*trials, hpo.Trial(len(trials), point, state)]
    after = method.score(method.fit(lied), [point])[0]
    assert after < before - 0.5  # g grows a kernel at the point


def test_parallel_asks_do_not_duplicate():
    study = hpo.Study(BRANIN, method="tpe", n_trials=30, seed=0)
    for _ in range(15):
        t = study.ask()
        study.tell(t, branin(t.params))
    batch = [study.ask() for _ in range(4)]
    pts = np.stack([study.method.encoding.encode(t.params) for t in batch])
    assert np.abs(pts[:, None] - pts[None]).max(-1)[np.triu_indices(4, 1)].min() > 1e-6


def test_tpe_is_listed_and_its_options_are_checked():
    assert "tpe" in hpo.methods()
    with pytest.raises(OptregValueError, match=r"tpe: gamma must be in \(0, 1\], got 0"):
        hpo.Study(BRANIN, method="tpe", gamma=0)
    with pytest.raises(OptregValueError, match=r"tpe: gamma must be in \(0, 1\], got 1.5"):
        hpo.Study(BRANIN, method="tpe", gamma=1.5)
    with pytest.raises(OptregValueError, match=r"tpe: gamma must be a real number in \(0, 1\], got 'high'"):
        hpo.Study(BRANIN, method="tpe", gamma="high")
    with pytest.raises(ValueError, match=r"tpe: n_ei_candidates must be an integer >= 1, got 0"):
        hpo.Study(BRANIN, method="tpe", n_ei_candidates=0)
    with pytest.raises(ValueError, match=r"tpe: n_startup must be an integer >= 1, got -2"):
        hpo.Study(BRANIN, method="tpe", n_startup=-2)
    with pytest.raises(ValueError, match=r"tpe: prior_weight must be in \(0, inf\), got 0"):
        hpo.Study(BRANIN, method="tpe", prior_weight=0)
    with pytest.raises(ValueError, match=r"tpe: multivariate must be True or False, got 'yes'"):
        hpo.Study(BRANIN, method="tpe", multivariate="yes")
    with pytest.raises(ValueError, match=r"tpe: bandwidth must be one of"):
        hpo.Study(BRANIN, method="tpe", bandwidth="silverman")
    with pytest.raises(ValueError, match=r"tpe: n_recent must be an integer >= 1, got 0"):
        hpo.Study(BRANIN, method="tpe", n_recent=0)
    with pytest.raises(TypeError, match=r"method 'tpe' takes no option 'beta'"):
        hpo.Study(BRANIN, method="tpe", beta=2.0)
