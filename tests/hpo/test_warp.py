"""Tests of the GP's output transforms (optreg.hpo.warp, ``output_transform=`` of gp-ei / gp-pi / gp-ucb).

Oracles: SciPy's Yeo-Johnson and Box-Cox (``scipy.stats.yeojohnson`` / ``boxcox``: values and
maximum-likelihood lambda, and a brute-force maximum of ``scipy.stats.yeojohnson_llf`` / ``boxcox_llf`` over
a lambda grid); ``scipy.stats.norm.ppf`` of the
ranks from ``scipy.stats.rankdata`` (Salinas et al. 2020's copula transform); NumPy's mean / std / log for
the standardize and log warps; the order of the inputs (monotonicity: argmin and argsort kept).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo.bayes import GPSampler
from optreg.hpo.space import Space
from optreg.hpo.warp import OUTPUT_TRANSFORMS, box_cox, log_offset, transform_targets, yeo_johnson


def _skewed(seed=0, n=40):
    """Rosenbrock-like targets: most small, a few orders of magnitude larger."""
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(2.0, 2.0, n))


def _std(z):
    return (z - z.mean()) / z.std()


def test_standardize_matches_numpy_mean_and_std():
    y = _skewed()
    np.testing.assert_allclose(transform_targets(y, "standardize"), (y - np.mean(y)) / np.std(y), rtol=1e-12)


def test_log_warp_matches_numpy_log_with_the_offset_of_the_median_gap():
    y = _skewed(1)
    c = np.median(y) - y.min()
    assert log_offset(y) == pytest.approx(c, rel=1e-12)
    np.testing.assert_allclose(transform_targets(y, "log"), _std(np.log(y - y.min() + c)), rtol=1e-10)


def test_log_warp_is_invariant_to_positive_affine_changes_of_the_target():
    y = _skewed(2)
    np.testing.assert_allclose(transform_targets(y, "log"), transform_targets(3e4 * y - 7.0, "log"), atol=1e-9)


@pytest.mark.parametrize("lmbda", [-1.3, 0.0, 0.4, 1.0, 2.0, 2.7])
def test_yeo_johnson_formula_matches_scipy(lmbda):
    u = np.linspace(-3, 5, 41)
    np.testing.assert_allclose(yeo_johnson(u, lmbda), scipy.stats.yeojohnson(u, lmbda=lmbda), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_yeo_johnson_lambda_and_values_match_scipy(seed):
    """The transform is scipy's Yeo-Johnson (MLE lambda) of the standardized targets, standardized; the
    lambda also maximizes scipy's profile log-likelihood over a dense grid (an oracle independent of
    scipy's optimizer)."""
    y = _skewed(seed)
    u = _std(y)
    ref, lmbda = scipy.stats.yeojohnson(u)
    np.testing.assert_allclose(transform_targets(y, "yeo-johnson"), _std(ref), rtol=1e-6, atol=1e-8)
    grid = np.linspace(-8, 8, 16001)
    brute = grid[np.argmax([scipy.stats.yeojohnson_llf(g, u) for g in grid])]
    assert abs(lmbda - brute) < 2e-3
    assert lmbda < 1  # a right-skewed target is compressed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_cox_lambda_and_values_match_scipy(seed):
    """Box-Cox (MLE lambda) of ``1 + (y - min) / std``, standardized: scipy.stats.boxcox's values and lambda;
    the lambda maximizes scipy's profile log-likelihood over a dense grid too."""
    y = _skewed(seed) * 1e3 + 5.0
    v = 1.0 + (y - y.min()) / y.std()
    ref, lmbda = scipy.stats.boxcox(v)
    np.testing.assert_allclose(transform_targets(y, "box-cox"), _std(ref), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(box_cox(v, lmbda), ref, rtol=1e-10)
    np.testing.assert_allclose(box_cox(v, 0.0), np.log(v), rtol=1e-12)
    grid = np.linspace(-8, 8, 16001)
    brute = grid[np.argmax([scipy.stats.boxcox_llf(g, v) for g in grid])]
    assert abs(lmbda - brute) < 2e-3


def test_box_cox_never_stretches_the_gaps_between_the_best_targets():
    """For lambda <= 1 the slope v^(lambda - 1) is at most 1: the transformed gaps (before the final
    standardization) are at most the gaps in units of std(y); Yeo-Johnson on standardized targets with
    the same data stretches them (slope (1 - u)^(1 - lambda) > 1 below the mean)."""
    y = _skewed(4)
    v = 1.0 + (y - y.min()) / y.std()
    _, lmbda = scipy.stats.boxcox(v)
    assert lmbda <= 1
    order = np.argsort(y)
    assert np.all(np.diff(box_cox(v, lmbda)[order]) <= np.diff(v[order]) * (1 + 1e-12))
    u = _std(y)
    _, lam_yj = scipy.stats.yeojohnson(u)
    below = order[u[order] < 0]
    assert np.any(np.diff(yeo_johnson(u, lam_yj)[below]) > np.diff(u[below]))


def test_rank_transform_matches_norm_ppf_of_the_ranks_with_ties():
    y = np.array([5.0, 1.0, 3.0, 3.0, 100.0, -2.0, 3.0, 8.0])
    ref = scipy.stats.norm.ppf((scipy.stats.rankdata(y) - 0.5) / len(y))
    np.testing.assert_allclose(transform_targets(y, "rank"), _std(ref), rtol=1e-10)


@pytest.mark.parametrize("kind", OUTPUT_TRANSFORMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_transform_is_increasing_keeps_the_argmin_and_is_standardized(kind, seed):
    y = _skewed(seed) - 30.0  # negative values too
    z = transform_targets(y, kind)
    assert np.argmin(z) == np.argmin(y)
    order = np.argsort(y)
    assert np.all(np.diff(z[order]) > 0)  # no ties in y: strictly increasing
    assert abs(z.mean()) < 1e-10 and z.std() == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("kind", OUTPUT_TRANSFORMS)
def test_constant_targets_give_zeros(kind):
    z = transform_targets(np.full(5, 2.5), kind)
    assert np.all(np.isfinite(z)) and np.allclose(z, 0.0)


def test_the_sampler_uses_the_transformed_incumbent_and_lie():
    """EI's incumbent is min g(y) = g(min y); the pending point's lie is max g(y)."""
    enc = Space({"x": hpo.Float(0.0, 1.0), "y": hpo.Float(0.0, 1.0)}).encoding()
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 2)), _skewed(3, 12)
    for kind in OUTPUT_TRANSFORMS:
        sampler = GPSampler(enc, "ei", output_transform=kind)
        z = transform_targets(y, kind)
        acq = sampler._acquisition(x, y, x[:1] * 0.5, None)
        assert acq.best.item() == pytest.approx(z.min()) == pytest.approx(z[np.argmin(y)])
        lie = acq.post.alpha.new_tensor(np.concatenate([z, [z.max()]]))
        post = acq.post
        assert post.x.shape[0] == 13
        # the posterior was conditioned on exactly z and the lie max z: K alpha = targets
        k = post.chol @ post.chol.T
        np.testing.assert_allclose((k @ post.alpha).numpy(), lie.numpy(), atol=1e-6)


def test_a_bad_output_transform_is_an_error_naming_the_field_and_value():
    space = {"x": hpo.Float(0.0, 1.0)}
    for method in ("gp-ei", "gp-pi", "gp-ucb"):
        message = rf"{method}: output_transform must be one of .*'rank', got 'boxcox'"
        with pytest.raises(OptregValueError, match=message):
            hpo.Study(space, method=method, output_transform="boxcox")
    with pytest.raises(OptregValueError, match=r"gp: output_transform must be one of .*, got 3"):
        transform_targets(np.ones(3), 3)


def _quadratic(p):
    return (p["x"] - 0.3) ** 2 + 10 * (p["y"] + 0.2) ** 4


QUAD = {"x": hpo.Float(-2.0, 2.0), "y": hpo.Float(-2.0, 2.0)}


def test_a_study_stores_and_resumes_the_output_transform(tmp_path):
    path = tmp_path / "warp.sqlite"
    ref = hpo.minimize(_quadratic, QUAD, method="gp-ei", n_trials=12, seed=1, output_transform="yeo-johnson")
    first = hpo.minimize(_quadratic, QUAD, method="gp-ei", n_trials=9, seed=1, storage=path, name="w",
                         output_transform="yeo-johnson")  # fmt: skip
    assert first.method.identity()["output_transform"] == "yeo-johnson"
    first.close()
    # resumed without the option: another study
    with pytest.raises(OptregValueError, match=r"different settings: stored .*yeo-johnson"):
        hpo.Study(QUAD, method="gp-ei", seed=1, storage=path, name="w")
    resumed = hpo.minimize(_quadratic, QUAD, method="gp-ei", n_trials=12, seed=1, storage=path, name="w",
                           output_transform="yeo-johnson")  # fmt: skip
    assert [t.params for t in resumed.trials] == [t.params for t in ref.trials]


def test_box_cox_is_the_default_and_changes_the_search_after_the_startup():
    default = hpo.minimize(_quadratic, QUAD, method="gp-ei", n_trials=10, seed=0)
    assert default.method.output_transform == "box-cox"
    assert default.method.identity()["output_transform"] == "box-cox"
    plain = hpo.minimize(_quadratic, QUAD, method="gp-ei", n_trials=10, seed=0, output_transform="standardize")
    start = plain.method.n_startup
    assert [t.params for t in plain.trials[:start]] == [t.params for t in default.trials[:start]]
    assert [t.params for t in plain.trials[start:]] != [t.params for t in default.trials[start:]]


def test_the_defaults_per_method():
    """box-cox for gp-ei and gp-ucb (they gained on Rosenbrock-4), standardize for gp-pi (it did not)."""
    got = {m: hpo.Study(QUAD, method=m).method.output_transform for m in ("gp-ei", "gp-pi", "gp-ucb")}
    assert got == {"gp-ei": "box-cox", "gp-pi": "standardize", "gp-ucb": "box-cox"}
    assert hpo.Study(QUAD, method="gp-pi", output_transform="box-cox").method.sampler.output_transform == "box-cox"


def test_a_study_stored_before_the_option_resumes_with_standardize(tmp_path):
    """Such a study's settings have no output_transform key, as a "standardize" study's now: it resumes
    with output_transform="standardize" and refuses the new default."""
    path = tmp_path / "old.sqlite"
    old = hpo.minimize(_quadratic, QUAD, method="gp-ucb", n_trials=7, seed=2, storage=path, name="o",
                       output_transform="standardize")  # fmt: skip
    assert "output_transform" not in old.method.identity()
    old.close()
    with pytest.raises(OptregValueError, match=r"different settings: stored .*, got .*box-cox"):
        hpo.Study(QUAD, method="gp-ucb", seed=2, storage=path, name="o")
    resumed = hpo.minimize(_quadratic, QUAD, method="gp-ucb", n_trials=9, seed=2, storage=path, name="o",
                           output_transform="standardize")  # fmt: skip
    assert len(resumed.trials) == 9 and math.isfinite(resumed.best_value)
