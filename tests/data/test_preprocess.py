"""optreg.data.preprocess against scikit-learn (MinMaxScaler, StandardScaler, PCA(whiten=True), its
estimator_checks suite, clone / Pipeline / GridSearchCV), SciPy (the inverse matrix square root of the
covariance, for ZCA) and numpy's covariance."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import preprocessing as skp
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from optreg.data import (
    ConstantFeatureWarning,
    MinMaxScaler,
    NotFittedError,
    PCAWhitening,
    StandardScaler,
    ZCAWhitening,
)
from optreg.errors import OptregError, OptregTypeError, OptregValueError

ALL = [MinMaxScaler, StandardScaler, PCAWhitening, ZCAWhitening]


def correlated(n: int = 300, d: int = 6, seed: int = 0) -> np.ndarray:
    """Gaussian data with distinct feature scales and correlations, well conditioned."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) + 2 * np.eye(d)
    return rng.normal(size=(n, d)) @ mixing * rng.uniform(0.5, 5, size=d) + rng.normal(0, 10, size=d)


@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 1), (-3.5, 2.0)])
def test_min_max_scaler_matches_sklearn(feature_range):
    x, x_new = correlated(), correlated(seed=1)
    ours = MinMaxScaler(feature_range).fit(x)
    ref = skp.MinMaxScaler(feature_range=feature_range).fit(x)
    for name in ("data_min_", "data_max_", "data_range_", "scale_", "min_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.transform(x_new), ref.transform(x_new), atol=1e-6)
    np.testing.assert_allclose(ours.inverse_transform(x_new), ref.inverse_transform(x_new), atol=1e-6)
    # eq. (7.37) in closed form, mapped to the range
    lo, hi = x.min(0), x.max(0)
    a, b = feature_range
    np.testing.assert_allclose(ours.transform(x), a + (x - lo) / (hi - lo) * (b - a), atol=1e-12)


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
def test_standard_scaler_matches_sklearn(with_mean, with_std):
    x, x_new = correlated(), correlated(seed=1)
    ours = StandardScaler(with_mean=with_mean, with_std=with_std).fit(x)
    ref = skp.StandardScaler(with_mean=with_mean, with_std=with_std).fit(x)
    np.testing.assert_allclose(ours.mean_, x.mean(0), rtol=1e-12)  # eq. (7.38)
    np.testing.assert_allclose(ours.var_, x.var(0), rtol=1e-12)  # eq. (7.39), population variance
    if with_std:
        np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(ours.transform(x_new), ref.transform(x_new), atol=1e-6)
    np.testing.assert_allclose(ours.inverse_transform(x_new), ref.inverse_transform(x_new), atol=1e-6)


def test_standard_scaler_closed_form_eq_7_40():
    x = correlated()
    z = StandardScaler().fit_transform(x)
    np.testing.assert_allclose(z, (x - x.mean(0)) / x.std(0), atol=1e-12)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-12)


@pytest.mark.parametrize("n_components", [None, 1, 4])
def test_pca_whitening_matches_sklearn_pca_whiten(n_components):
    x, x_new = correlated(), correlated(seed=1)
    ours = PCAWhitening(n_components=n_components, eps=0).fit(x)
    ref = PCA(n_components=n_components, whiten=True, svd_solver="full").fit(x)
    learned = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_", "singular_values_")
    for name in learned:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-9, atol=1e-9)
    assert ours.n_components_ == ref.n_components_
    np.testing.assert_allclose(ours.transform(x_new), ref.transform(x_new), atol=1e-6)
    z = ref.transform(x_new)
    np.testing.assert_allclose(ours.inverse_transform(z), ref.inverse_transform(z), atol=1e-6)


def test_pca_whitening_sign_convention_matches_sklearn_on_digits():
    """Real data, default (auto) sklearn solver: the signs of the leading components must agree."""
    x = load_digits().data
    ours = PCAWhitening(n_components=10, eps=0).fit(x)
    ref = PCA(n_components=10, whiten=True).fit(x)
    np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-6)
    np.testing.assert_allclose(ours.transform(x), ref.transform(x), atol=1e-6)


def test_pca_whitening_eps_matches_regularized_formula():
    """Oracle: sklearn's principal axes and variances in z = (x - mean) V / sqrt(lambda + eps)."""
    x, eps = correlated(), 0.7
    ref = PCA(whiten=False, svd_solver="full").fit(x)
    expected = (x - ref.mean_) @ ref.components_.T / np.sqrt(ref.explained_variance_ + eps)
    np.testing.assert_allclose(PCAWhitening(eps=eps).fit_transform(x), expected, atol=1e-9)


def test_zca_matches_scipy_inverse_sqrtm_of_covariance():
    x = correlated()
    zca = ZCAWhitening(eps=0).fit(x)
    expected = np.linalg.inv(scipy.linalg.sqrtm(np.cov(x, rowvar=False)).real)
    np.testing.assert_allclose(zca.whitening_, expected, atol=1e-9)
    np.testing.assert_allclose(zca.transform(x), (x - x.mean(0)) @ expected, atol=1e-9)


@pytest.mark.parametrize("cls", [PCAWhitening, ZCAWhitening])
def test_whitened_covariance_is_identity_numpy_cov(cls):
    z = cls(eps=0).fit_transform(correlated())
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(z.shape[1]), atol=1e-9)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)


def test_whitening_with_eps_on_digits_stays_finite_and_near_white():
    """digits has always-blank pixels: eps > 0 keeps them finite; the informative directions are white."""
    x = load_digits().data / 16.0
    with pytest.raises(OptregValueError, match="zero variance"):
        PCAWhitening(eps=0).fit(x)
    z = PCAWhitening(eps=1e-5).fit_transform(x)
    assert np.isfinite(z).all()
    cov = np.cov(z[:, :40], rowvar=False)  # components with variance >> eps
    np.testing.assert_allclose(cov, np.eye(40), atol=1e-2)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_zca_output_is_closest_to_input_among_whitening_rotations(seed):
    """Kessy et al. (2018): every whitening is z Q for orthogonal Q; ZCA minimizes ||z Q - (x - mean)||_F."""
    x = correlated(n=80, d=4, seed=seed % 1000)
    z = ZCAWhitening(eps=0).fit_transform(x)
    xc = x - x.mean(0)
    q = scipy.stats.ortho_group.rvs(4, random_state=seed)
    assert np.linalg.norm(z - xc) <= np.linalg.norm(z @ q - xc) + 1e-9
    pca = PCAWhitening(eps=0).fit_transform(x)  # PCA whitening is one of those rotations
    assert np.linalg.norm(z - xc) <= np.linalg.norm(pca - xc) + 1e-9


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 5)), elements=finite))
def test_scalers_inverse_transform_round_trip_property(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        for scaler in (MinMaxScaler((-2, 3)), StandardScaler()):
            z = scaler.fit_transform(x)
            assert np.isfinite(z).all()
            np.testing.assert_allclose(scaler.inverse_transform(z), x, atol=1e-9 * (1 + np.abs(x).max()))


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 5)), elements=finite))
def test_min_max_scaler_output_spans_feature_range_property(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        z = MinMaxScaler((-2, 3)).fit_transform(x)
    varying = x.max(0) - x.min(0) >= 10 * np.finfo(np.float64).eps
    np.testing.assert_allclose(z.min(0)[varying], -2, atol=1e-9)
    np.testing.assert_allclose(z.max(0)[varying], 3, atol=1e-9)
    assert (z >= -2 - 1e-9).all() and (z <= 3 + 1e-9).all()


@pytest.mark.parametrize("cls", ALL)
def test_inverse_transform_round_trip(cls):
    x = correlated(n=50, d=5)
    est = cls(eps=0) if cls in (PCAWhitening, ZCAWhitening) else cls()
    np.testing.assert_allclose(est.inverse_transform(est.fit_transform(x)), x, atol=1e-9)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_input_keeps_dtype_and_device_and_agrees_with_numpy(cls, dtype):
    x = correlated(n=60, d=5)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ref = cls().fit(x).transform(x)
    for device in devices:
        t = torch.tensor(x, dtype=dtype, device=device)
        est = cls().fit(t)
        out = est.transform(t)
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device == t.device
        back = est.inverse_transform(out)
        assert back.dtype == dtype and back.device == t.device
        tol = 1e-9 if dtype == torch.float64 else 1e-3
        np.testing.assert_allclose(out.cpu().double().numpy(), ref, atol=tol, rtol=tol)


def test_numpy_dtypes_in_and_out():
    x = correlated(n=20, d=3)
    assert StandardScaler().fit(x).transform(x.astype(np.float32)).dtype == np.float32
    assert StandardScaler().fit(x).transform(x).dtype == np.float64
    ints = np.arange(12).reshape(6, 2)
    out = MinMaxScaler().fit_transform(ints)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, skp.MinMaxScaler().fit_transform(ints))
    lists = MinMaxScaler().fit_transform(ints.tolist())
    assert isinstance(lists, np.ndarray)
    np.testing.assert_allclose(lists, out)
    t = MinMaxScaler().fit_transform(torch.arange(12).reshape(6, 2))
    assert t.dtype == torch.get_default_dtype()
    np.testing.assert_allclose(t.numpy(), out, atol=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_fit_returns_self_and_settings_are_untouched(cls):
    est = cls()
    before = est.get_params()
    assert est.fit(correlated(n=20, d=3)) is est
    assert est.get_params() == before
    assert repr(est).startswith(cls.__name__ + "(")


def test_standard_scaler_constant_feature_reported_and_matches_sklearn():
    x = correlated(n=40, d=4)
    x[:, 2] = 7.0
    with pytest.warns(ConstantFeatureWarning, match=r"features \[2\]"):
        ours = StandardScaler().fit(x)
    np.testing.assert_array_equal(ours.constant_features_, [2])
    assert ours.scale_[2] == 1.0
    z = ours.transform(x)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(z, skp.StandardScaler().fit_transform(x), atol=1e-9)


def test_min_max_scaler_constant_feature_reported_and_matches_sklearn():
    x = correlated(n=40, d=4)
    x[:, 0] = -1.5
    with pytest.warns(ConstantFeatureWarning, match=r"features \[0\]"):
        ours = MinMaxScaler().fit(x)
    np.testing.assert_array_equal(ours.constant_features_, [0])
    np.testing.assert_allclose(ours.transform(x), skp.MinMaxScaler().fit_transform(x), atol=1e-12)


def test_standard_scaler_on_digits_matches_sklearn_and_names_blank_pixels():
    x = load_digits().data
    blank = np.flatnonzero(x.std(0) == 0)
    with pytest.warns(ConstantFeatureWarning) as record:
        ours = StandardScaler().fit(x)
    np.testing.assert_array_equal(ours.constant_features_, blank)
    assert str(blank[0]) in str(record[0].message)
    np.testing.assert_allclose(ours.transform(x), skp.StandardScaler().fit_transform(x), atol=1e-9)


def test_no_constant_warning_without_std():
    x = np.ones((5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = StandardScaler(with_std=False).fit(x)
    assert est.constant_features_.size == 0


def test_pickle_round_trip_after_use():
    x = correlated(n=30, d=3)
    est = PCAWhitening().fit(x)
    est.transform(torch.tensor(x))  # fills the per-dtype parameter cache
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.transform(x), est.transform(x))


@pytest.mark.parametrize("cls", ALL)
def test_transform_before_fit_raises_not_fitted(cls):
    """Both optreg's NotFittedError and scikit-learn's (a ValueError and an AttributeError)."""
    for method in (cls().transform, cls().inverse_transform):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            method(np.zeros((2, 2)))
        with pytest.raises(SklearnNotFittedError):
            method(np.zeros((2, 2)))
    assert issubclass(NotFittedError, OptregError)
    assert issubclass(NotFittedError, AttributeError)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(cls())
    check_is_fitted(cls().fit(correlated(n=20, d=3)))


@pytest.mark.parametrize("cls", ALL)
def test_bad_input_raises_clear_errors(cls):
    """scikit-learn's wording (the oracle is its own validation), after optreg's owner prefix."""
    est = cls().fit(correlated(n=20, d=3))
    owner = est._owner
    name = cls.__name__
    for x in (np.zeros((2, 4)), torch.zeros(2, 4)):
        with pytest.raises(OptregValueError, match=f"^{owner}: X has 4 features, but {name} is expecting 3 features"):
            est.transform(x)
    with pytest.raises(OptregValueError, match=f"{name}.inverse_transform is expecting {est._n_out()} features"):
        est.inverse_transform(torch.zeros(2, est._n_out() + 1))
    with pytest.raises(OptregValueError, match="contains NaN"):
        est.transform(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(OptregValueError, match="contains NaN or infinity"):
        cls().fit(torch.tensor([[0.0, 1.0], [np.inf, 2.0], [1.0, 1.0]]))
    with pytest.raises(OptregValueError, match="contains infinity"):
        cls().fit(np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 1.0]]))
    for x in (np.zeros(3), torch.zeros(3)):
        with pytest.raises(OptregValueError, match="Expected (a )?2D array"):
            cls().fit(x)
    with pytest.raises(OptregValueError, match="could not convert string to float"):
        cls().fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(OptregValueError, match="Complex data not supported"):
        cls().fit(torch.ones(3, 2, dtype=torch.complex64))
    for x in (np.zeros((0, 3)), torch.zeros(0, 3)):
        with pytest.raises(OptregValueError, match=r"Found array with 0 sample\(s\)"):
            cls().fit(x)
    with pytest.raises(OptregTypeError, match="dense data is required"):
        cls().fit(scipy.sparse.csr_matrix(np.eye(3)))


@pytest.mark.parametrize("bad", [(1, 0), (2, 2), (0,), (0, 1, 2), ("a", 1), (0, float("nan")), 5])
def test_bad_feature_range(bad):
    est = MinMaxScaler(bad)  # scikit-learn's rule: __init__ stores, fit checks
    assert est.feature_range == bad
    with pytest.raises(OptregValueError, match="min_max_scaler: feature_range"):
        est.fit(correlated(n=5, d=2))


def test_bad_settings():
    x = correlated(n=20, d=3)
    with pytest.raises(OptregValueError, match="pca_whitening: n_components must be an integer >= 1, got 0"):
        PCAWhitening(n_components=0).fit(x)
    with pytest.raises(OptregValueError, match=r"n_components must be <= min\(n_samples, n_features\) = 3"):
        PCAWhitening(n_components=4).fit(x)
    with pytest.raises(OptregValueError, match="zca_whitening: eps"):
        ZCAWhitening(eps=-1.0).fit(x)
    with pytest.raises(OptregValueError, match="standard_scaler: with_mean must be True or False"):
        StandardScaler(with_mean="yes").fit(x)  # type: ignore[arg-type]
    with pytest.raises(OptregValueError, match=r"Found array with 1 sample\(s\) .* minimum of 2 is required"):
        PCAWhitening().fit(np.zeros((1, 3)))
    with pytest.raises(OptregValueError, match="Found array with 1 sample"):
        PCAWhitening().fit(torch.zeros(1, 3))
    est = MinMaxScaler()
    est.feature_range = (1, 0)  # changed after construction: fit validates again
    with pytest.raises(OptregValueError, match="feature_range"):
        est.fit(x)
    with pytest.raises(OptregValueError, match="feature_range"):
        MinMaxScaler().set_params(feature_range=(1, 0)).fit(x)
    # a grid built with numpy hands numpy integers: accepted as the integers they are
    assert PCAWhitening(n_components=np.int64(2)).fit(x).n_components_ == 2


# ------------------------------------------------------------------ scikit-learn's estimator API


@parametrize_with_checks([MinMaxScaler(), StandardScaler(), PCAWhitening(), ZCAWhitening()])
def test_sklearn_check_estimator(estimator, check):
    """scikit-learn's own API suite (sklearn.utils.estimator_checks), every check, no expected failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantFeatureWarning)  # one-sample and constant-column checks
        check(estimator)


@pytest.mark.parametrize("cls", ALL)
def test_clone_and_set_params_follow_sklearn(cls):
    """sklearn.base.clone: same settings, a fresh (unfitted) estimator; set_params returns self."""
    est = cls().fit(correlated(n=30, d=4))
    name, value = next(iter(cls().get_params().items()))
    other = {"feature_range": (-1.0, 2.0), "with_mean": False, "n_components": 2, "eps": 0.5}[name]
    assert est.set_params(**{name: other}) is est
    copy = clone(est)
    assert type(copy) is cls and copy is not est
    assert copy.get_params() == est.get_params() == {**cls().get_params(), name: other}
    with pytest.raises(NotFittedError):
        copy.transform(correlated(n=3, d=4))


def test_get_feature_names_out_matches_sklearn():
    """One-to-one scalers and ZCA name their outputs as sklearn's StandardScaler does; PCA whitening as
    sklearn's PCA does (class-name prefix)."""
    x = correlated(n=30, d=4)
    ref = skp.StandardScaler().fit(x)
    for est in (MinMaxScaler(), StandardScaler(), ZCAWhitening()):
        est.fit(x)
        np.testing.assert_array_equal(est.get_feature_names_out(), ref.get_feature_names_out())
        names = ["a", "b", "c", "d"]
        np.testing.assert_array_equal(est.get_feature_names_out(names), ref.get_feature_names_out(names))
    pca, sk_pca = PCAWhitening(n_components=3).fit(x), PCA(n_components=3).fit(x)
    expected = [n.replace("pca", "pcawhitening") for n in sk_pca.get_feature_names_out()]
    np.testing.assert_array_equal(pca.get_feature_names_out(), expected)


def test_failed_fit_leaves_the_estimator_unfitted():
    """A fit that raises must not leave an earlier fit's statistics behind (sklearn: fit starts afresh)."""
    x = load_digits().data
    est = PCAWhitening(eps=1e-5).fit(x)
    with pytest.raises(OptregValueError, match="zero variance"):
        est.set_params(eps=0).fit(x)  # digits has always-blank pixels
    assert not hasattr(est, "components_") and not hasattr(est, "n_features_in_")
    with pytest.raises(NotFittedError):
        est.transform(x)


def test_pickle_round_trip_of_a_fitted_estimator_keeps_numbers_for_tensors_and_numpy():
    x = correlated(n=30, d=3)
    for est in (MinMaxScaler((-1, 1)), StandardScaler(), PCAWhitening(n_components=2), ZCAWhitening()):
        est.fit(torch.tensor(x, dtype=torch.float32))
        t = est.transform(torch.tensor(x, dtype=torch.float32))
        copy = pickle.loads(pickle.dumps(est))
        assert copy.get_params() == est.get_params()
        assert torch.equal(copy.transform(torch.tensor(x, dtype=torch.float32)), t)
        np.testing.assert_array_equal(copy.transform(x), est.transform(x))


def _digits_grid(scaler, grid, n=600):
    """GridSearchCV over make_pipeline(scaler, LogisticRegression()) on the first n digits."""
    x, y = load_digits(return_X_y=True)
    pipe = make_pipeline(scaler, LogisticRegression(max_iter=2000))
    step = pipe.steps[0][0]
    search = GridSearchCV(pipe, {f"{step}__{k}": v for k, v in grid.items()}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        return search.fit(x[:n], y[:n])


@pytest.mark.parametrize(
    ("ours", "theirs", "grid"),
    [
        (StandardScaler(), skp.StandardScaler(), {"with_mean": [True, False], "with_std": [True, False]}),
        (MinMaxScaler(), skp.MinMaxScaler(), {"feature_range": [(0.0, 1.0), (-1.0, 1.0)]}),
        (PCAWhitening(eps=0), PCA(whiten=True, svd_solver="full"), {"n_components": [8, 20]}),
    ],
    ids=["standard", "min_max", "pca_whitening"],
)
def test_pipeline_grid_search_on_digits_matches_sklearn_scalers(ours, theirs, grid):
    """Oracle: the same GridSearchCV with scikit-learn's own scaler (or PCA(whiten=True)) in the pipeline."""
    a, b = _digits_grid(ours, grid), _digits_grid(theirs, grid)
    np.testing.assert_allclose(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"], atol=1e-9)
    assert [list(p.values()) for p in a.cv_results_["params"]] == [list(p.values()) for p in b.cv_results_["params"]]
    assert list(a.best_params_.values()) == list(b.best_params_.values())
    assert isinstance(a.best_estimator_[0], type(ours))
    assert a.best_estimator_[0] is not ours  # GridSearchCV cloned it
    assert a.score(load_digits().data[600:], load_digits().target[600:]) == pytest.approx(
        b.score(load_digits().data[600:], load_digits().target[600:]), abs=1e-9
    )
