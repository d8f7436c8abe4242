"""Data preprocessing (section 7.4): scaling, standardization and whitening.

Features of very different ranges slow gradient descent down (figure 7.7) and push tanh units into
saturation; section 7.4 therefore normalizes the inputs before training. Each class here is a
scikit-learn transformer (:class:`sklearn.base.BaseEstimator` + :class:`~sklearn.base.TransformerMixin`):
``__init__`` only stores the settings, ``fit(X, y=None)`` checks them and learns from the *training*
data, learned attributes end in ``_``, then ``transform`` / ``fit_transform`` / ``inverse_transform`` /
``get_feature_names_out``. So they ``clone``, pickle, ``set_params``, go into ``make_pipeline`` and
``GridSearchCV``, and pass :func:`sklearn.utils.estimator_checks.check_estimator`.

``X`` has shape ``(n_samples, n_features)``. numpy arrays (and array-likes, data frames) are checked by
scikit-learn's :func:`~sklearn.utils.validation.validate_data` and come back as numpy arrays (float32
stays float32, anything else becomes float64); torch tensors are checked here, with the same rules,
and come back as tensors on the same device with the same floating dtype (integer tensors become the
default float dtype). Statistics are always computed in float64 and stored as float64 numpy arrays,
whatever the input. Bad input raises :class:`~optreg.errors.OptregValueError` /
:class:`~optreg.errors.OptregTypeError` (also ``ValueError`` / ``TypeError``) with scikit-learn's
wording after the owner, e.g. ``standard_scaler: X has 3 features, but StandardScaler is expecting 4
features as input.``; ``transform`` before ``fit`` raises :class:`NotFittedError`, which is both
optreg's error and :class:`sklearn.exceptions.NotFittedError`.

- :class:`MinMaxScaler`: min-max scaling, eq. (7.37), to ``feature_range``.
- :class:`StandardScaler`: z-score standardization, eqs. (7.38)-(7.40).
- :class:`PCAWhitening`: PCA whitening (section 7.4, figure 7.8): decorrelate, then give every
  component unit variance.
- :class:`ZCAWhitening`: ZCA (Mahalanobis) whitening: PCA whitening rotated back to the input axes.

A feature with zero variance (zero range) cannot be divided by (the chapter: "sigma cannot be 0; such a
feature carries no information and can be dropped"): the scalers report it in ``constant_features_``
and with a :class:`ConstantFeatureWarning`, and leave its scale at 1.
"""

from __future__ import annotations

import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OneToOneFeatureMixin, TransformerMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils.validation import FLOAT_DTYPES, check_array, check_is_fitted, validate_data

from optreg._checks import check_int, check_nonneg, check_number
from optreg.errors import OptregError, OptregTypeError, OptregValueError

__all__ = [
    "ConstantFeatureWarning",
    "MinMaxScaler",
    "NotFittedError",
    "PCAWhitening",
    "StandardScaler",
    "ZCAWhitening",
]

Data = Any  # numpy array, torch tensor or array-like of shape (n_samples, n_features)
_EPS64 = float(np.finfo(np.float64).eps)


class NotFittedError(OptregValueError, _SklearnNotFittedError):
    """``transform`` or ``inverse_transform`` was called before ``fit``.

    Both optreg's error (an :class:`~optreg.errors.OptregValueError`) and scikit-learn's
    :class:`sklearn.exceptions.NotFittedError` (a ``ValueError`` and an ``AttributeError``), so code that
    catches either keeps working.
    """


class ConstantFeatureWarning(UserWarning):
    """Some features are constant on the data ``fit`` saw; they are left unscaled."""


def _check_tensor(x: torch.Tensor, est: BaseEstimator, min_samples: int) -> torch.Tensor:
    """scikit-learn's ``check_array`` rules (and wording) for a tensor, without leaving torch."""
    t = x.detach()
    if t.is_complex():
        raise ValueError(f"Complex data not supported, got a tensor of dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim != 2:
        raise ValueError(f"Expected a 2D array of shape (n_samples, n_features), got shape {tuple(t.shape)}")
    name, shape = type(est).__name__, tuple(t.shape)
    if shape[0] < min_samples:
        raise ValueError(
            f"Found array with {shape[0]} sample(s) (shape={shape}) while a minimum of {min_samples} is "
            f"required by {name}."
        )
    if shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required by {name}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("Input X contains NaN or infinity.")
    return t


def _warn_constant(owner: str, idx: np.ndarray) -> None:
    shown = ", ".join(str(i) for i in idx[:10]) + (f", ... ({len(idx)} in all)" if len(idx) > 10 else "")
    warnings.warn(
        f"{owner}: features [{shown}] are constant on the fitted data; they are left unscaled (scale 1) "
        "instead of being divided by zero; consider dropping them",
        ConstantFeatureWarning,
        stacklevel=4,
    )


class _Transformer(TransformerMixin, BaseEstimator, metaclass=ABCMeta):
    """Shared machinery: input checks, float64 fitting, dtype/device handling, parameter caching.

    A subclass names the learned arrays its formulas read in ``_params``; ``_forward`` and ``_backward``
    receive them as tensors of the input's dtype and device (converted once per dtype/device and fit).
    """

    _owner = "transformer"
    _params: tuple[str, ...] = ()
    _min_samples = 1

    def _check_settings(self) -> None:
        """Check the settings given to ``__init__`` / ``set_params`` (called by ``fit``)."""

    @abstractmethod
    def _fit(self, x: torch.Tensor) -> None:
        """Learn the attributes from ``x`` (float64, validated)."""

    @abstractmethod
    def _forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The transformation, written with the learned tensors ``p``."""

    @abstractmethod
    def _backward(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The inverse transformation."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]  # float32 in, float32 out
        return tags

    def fit(self, X: Data, y: Any = None) -> Self:
        """Learn the statistics of ``X`` (shape ``(n_samples, n_features)``); ``y`` is ignored.

        Returns ``self``. A failed fit leaves the estimator unfitted (no attribute of an earlier fit
        survives it).
        """
        self._check_settings()
        self._forget()
        try:
            t, _ = self._validate(X, "fit")
            self._cache: dict[tuple[torch.dtype, torch.device], dict[str, torch.Tensor]] = {}
            self.n_samples_seen_ = int(t.shape[0])
            self._fit(t.to(torch.float64))
        except BaseException:
            self._forget()
            raise
        return self

    def transform(self, X: Data) -> Data:
        """Apply the fitted transformation to ``X`` (same number of features as in ``fit``)."""
        return self._apply(X, "transform", self._forward)

    def inverse_transform(self, X: Data) -> Data:
        """Map transformed data back to the input space."""
        return self._apply(X, "inverse_transform", self._backward)

    def _n_out(self) -> int:
        return self.n_features_in_

    def _forget(self) -> None:
        """Drop everything a previous ``fit`` learned."""
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")] + ["_cache"]:
            self.__dict__.pop(name, None)

    def _validate(self, x: Data, what: str) -> tuple[torch.Tensor, bool]:
        """``x`` checked (scikit-learn's rules) as a 2-D floating tensor, and whether to hand back numpy.

        ``fit`` records ``n_features_in_`` (and ``feature_names_in_`` for a data frame), ``transform``
        checks against them, ``inverse_transform`` checks the width against the output's.
        """
        fit = what == "fit"
        min_samples = self._min_samples if fit else 1
        try:
            if isinstance(x, torch.Tensor):
                t, to_numpy = _check_tensor(x, self, min_samples), False
                if what != "inverse_transform":
                    validate_data(self, t, skip_check_array=True, reset=fit)
            else:
                kw: dict[str, Any] = {"dtype": FLOAT_DTYPES, "ensure_min_samples": min_samples}
                if what == "inverse_transform":
                    arr = check_array(x, estimator=self, **kw)
                else:
                    arr = validate_data(self, x, reset=fit, **kw)
                if not arr.flags.writeable:  # torch.from_numpy warns on read-only memory (memmaps)
                    arr = arr.copy()
                t, to_numpy = torch.from_numpy(np.ascontiguousarray(arr)), True
            if what == "inverse_transform" and t.shape[1] != self._n_out():
                raise ValueError(
                    f"X has {t.shape[1]} features, but {type(self).__name__}.inverse_transform is expecting "
                    f"{self._n_out()} features as input."
                )
        except OptregError:
            raise
        except ValueError as e:
            raise OptregValueError(f"{self._owner}: {e}") from e
        except TypeError as e:
            raise OptregTypeError(f"{self._owner}: {e}") from e
        return t, to_numpy

    def _apply(self, x: Data, what: str, fn: Callable[..., torch.Tensor]) -> Data:
        try:
            check_is_fitted(self)
        except _SklearnNotFittedError:
            raise NotFittedError(
                f"{self._owner}: this {type(self).__name__} is not fitted yet; call fit(X) before {what}"
            ) from None
        t, to_numpy = self._validate(x, what)
        cache = self.__dict__.setdefault("_cache", {})
        key = (t.dtype, t.device)
        if key not in cache:
            cache[key] = {k: torch.as_tensor(getattr(self, k), dtype=t.dtype, device=t.device) for k in self._params}
        out = fn(t, cache[key])
        return out.numpy() if to_numpy else out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_cache", None)  # tensors per dtype / device: rebuilt on the next transform
        return state


class MinMaxScaler(OneToOneFeatureMixin, _Transformer):
    """Min-max scaling, eq. (7.37): ``x_hat = (x - min) / (max - min)`` per feature, mapped to
    ``feature_range = (a, b)`` as ``a + x_hat * (b - a)``.

    Learned: ``data_min_``, ``data_max_``, ``data_range_``, ``scale_``, ``min_`` (so that
    ``transform(x) = x * scale_ + min_``, as in :class:`sklearn.preprocessing.MinMaxScaler`),
    ``constant_features_`` (indices of zero-range features, which get scale 1), ``n_features_in_``,
    ``n_samples_seen_``.
    """

    _owner = "min_max_scaler"
    _params = ("scale_", "min_")

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.feature_range = feature_range

    def _check_settings(self) -> None:
        fr = self.feature_range
        if not isinstance(fr, tuple | list) or len(fr) != 2:
            raise OptregValueError(f"{self._owner}: feature_range must be a pair (min, max), got {fr!r}")
        a = check_number(self._owner, "feature_range[0]", fr[0])
        b = check_number(self._owner, "feature_range[1]", fr[1])
        if not a < b:
            raise OptregValueError(f"{self._owner}: feature_range must satisfy min < max, got {fr!r}")

    def _fit(self, x: torch.Tensor) -> None:
        a, b = (float(v) for v in self.feature_range)
        lo, hi = torch.aminmax(x, dim=0)
        self.data_min_, self.data_max_ = lo.cpu().numpy(), hi.cpu().numpy()
        self.data_range_ = self.data_max_ - self.data_min_
        # scikit-learn's rule (_handle_zeros_in_scale): a range below 10 machine epsilons counts as zero.
        const = self.data_range_ < 10 * _EPS64
        self.constant_features_ = np.flatnonzero(const)
        self.scale_ = (b - a) / np.where(const, 1.0, self.data_range_)
        self.min_ = a - self.data_min_ * self.scale_
        if const.any():
            _warn_constant(self._owner, self.constant_features_)

    def _forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.addcmul(p["min_"], x, p["scale_"])

    def _backward(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (z - p["min_"]) / p["scale_"]


class StandardScaler(OneToOneFeatureMixin, _Transformer):
    """Standardization (z-score), eqs. (7.38)-(7.40): ``x_hat = (x - mu) / sigma`` per feature, with
    ``mu = (1/N) sum x`` (7.38) and the population variance ``sigma^2 = (1/N) sum (x - mu)^2`` (7.39).

    ``with_mean=False`` skips the centring, ``with_std=False`` the division. Learned: ``mean_``, ``var_``,
    ``scale_`` (sigma, or 1 for constant features and when ``with_std=False``), ``constant_features_``,
    ``n_features_in_``, ``n_samples_seen_`` — as in :class:`sklearn.preprocessing.StandardScaler`, whose
    test for a constant feature (variance within the rounding error of the two-pass algorithm,
    Chan, Golub & LeVeque 1983) is used here too.
    """

    _owner = "standard_scaler"
    _params = ("shift_", "scale_")

    def __init__(self, with_mean: bool = True, with_std: bool = True) -> None:
        self.with_mean = with_mean
        self.with_std = with_std

    def _check_settings(self) -> None:
        for name in ("with_mean", "with_std"):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise OptregValueError(f"{self._owner}: {name} must be True or False, got {value!r}")

    def _fit(self, x: torch.Tensor) -> None:
        var, mean = torch.var_mean(x, dim=0, correction=0)
        self.mean_, self.var_ = mean.cpu().numpy(), var.cpu().numpy()
        n = x.shape[0]
        const = self.var_ <= n * _EPS64 * self.var_ + (n * self.mean_ * _EPS64) ** 2
        self.constant_features_ = np.flatnonzero(const) if self.with_std else np.zeros(0, dtype=np.int64)
        self.scale_ = np.where(const, 1.0, np.sqrt(self.var_)) if self.with_std else np.ones_like(self.var_)
        self.shift_ = self.mean_ if self.with_mean else np.zeros_like(self.mean_)
        if self.constant_features_.size:
            _warn_constant(self._owner, self.constant_features_)

    def _forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (x - p["shift_"]) / p["scale_"]

    def _backward(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.addcmul(p["shift_"], z, p["scale_"])


class _Whitening(_Transformer):
    """The fit shared by PCA and ZCA whitening: the centred data's SVD, sklearn's sign convention, eps."""

    _min_samples = 2
    eps: float

    def _components(self) -> int | None:
        """How many leading components to keep (``None``: all ``min(n_samples, n_features)``)."""
        return None

    def _check_settings(self) -> None:
        check_nonneg(self._owner, "eps", self.eps)

    def _fit(self, x: torch.Tensor) -> None:
        n, d = x.shape
        k_max = min(n, d)
        k = self._components()
        k = k_max if k is None else k
        if k > k_max:
            raise OptregValueError(
                f"{self._owner}: n_components must be <= min(n_samples, n_features) = {k_max}, got {k}"
            )
        mean = x.mean(dim=0)
        _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
        rows = torch.arange(vt.shape[0], device=vt.device)
        vt = vt * torch.sign(vt[rows, vt.abs().argmax(dim=1)]).unsqueeze(1)  # sklearn's svd_flip on V^T
        s_np = s.cpu().numpy()
        var = s_np**2 / (n - 1)
        total = var.sum()
        self.mean_ = mean.cpu().numpy()
        self.components_ = vt[:k].cpu().numpy()
        self.singular_values_ = s_np[:k]
        self.explained_variance_ = var[:k]
        self.explained_variance_ratio_ = var[:k] / total if total > 0 else np.zeros(k)
        self.n_components_ = k
        tol = s_np[0] * max(n, d) * _EPS64  # numpy.linalg.matrix_rank's tolerance
        zero = np.flatnonzero(s_np[:k] <= tol)
        if self.eps == 0 and zero.size:
            raise OptregValueError(
                f"{self._owner}: component {int(zero[0])} has zero variance (the data has rank "
                f"{int(np.sum(s_np > tol))}), so eps=0 would divide by zero; pass eps > 0 or "
                f"n_components <= {int(zero[0])}"
            )
        self.std_ = np.sqrt(self.explained_variance_ + self.eps)


class PCAWhitening(ClassNamePrefixFeaturesOutMixin, _Whitening):
    """PCA whitening (section 7.4, figure 7.8; see also section 9.1.1 of the book).

    With the centred data ``Xc = X - mean`` and its SVD ``Xc = U S V^T``, the principal axes are the rows
    of ``components_ = V^T`` and the variances along them ``explained_variance_ = S^2 / (N - 1)``.
    The whitened data ``z = (x - mean) V / sqrt(explained_variance_ + eps)`` has uncorrelated components
    of (sample) variance 1 when ``eps = 0``; ``eps > 0`` (UFLDL's regularized whitening) keeps
    near-zero-variance directions, such as the always-blank border pixels of digits, from blowing up.

    ``eps=0`` reproduces :class:`sklearn.decomposition.PCA` ``(whiten=True)`` exactly, signs included:
    each component is flipped so that its largest-magnitude entry is positive (sklearn's ``svd_flip``
    with ``u_based_decision=False``). Reference: Kessy, Lewin & Strimmer (2018), "Optimal whitening and
    decorrelation".

    Args:
        n_components: how many leading components to keep (default ``min(n_samples, n_features)``).
        eps: added to each variance before the square root; must be > 0 when a kept component has
            (numerically) zero variance.

    Learned: ``mean_``, ``components_`` (k, n_features), ``explained_variance_``,
    ``explained_variance_ratio_``, ``singular_values_``, ``n_components_``, ``n_features_in_``,
    ``n_samples_seen_``. The output features are named ``pcawhitening0``, ``pcawhitening1``, ...
    """

    _owner = "pca_whitening"
    _params = ("mean_", "components_", "std_")

    def __init__(self, n_components: int | None = None, eps: float = 1e-5) -> None:
        self.n_components = n_components
        self.eps = eps

    def _components(self) -> int | None:
        k = self.n_components
        if isinstance(k, np.integer):  # a grid built with numpy (np.arange) hands numpy integers
            k = int(k)
        return None if k is None else check_int(self._owner, "n_components", k, 1)

    def _check_settings(self) -> None:
        super()._check_settings()
        self._components()

    @property
    def _n_features_out(self) -> int:
        """The number of output features, for ``get_feature_names_out``."""
        return self.n_components_

    def _n_out(self) -> int:
        return self.n_components_

    def _forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((x - p["mean_"]) @ p["components_"].T) / p["std_"]

    def _backward(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (z * p["std_"]) @ p["components_"] + p["mean_"]


class ZCAWhitening(OneToOneFeatureMixin, _Whitening):
    """ZCA (zero-phase, Mahalanobis) whitening: ``z = (x - mean) W`` with the symmetric
    ``W = V diag(1 / sqrt(lambda + eps)) V^T = Sigma^(-1/2)`` (for ``eps = 0``).

    It is PCA whitening rotated back onto the input axes, so the output covariance is still the identity
    but, of all whitening transforms, ZCA's output is the closest to the (centred) input in mean squared
    error (Bell & Sejnowski 1997; Kessy, Lewin & Strimmer 2018): whitened images still look like images.
    All ``min(n_samples, n_features)`` components are used.

    Learned: everything :class:`PCAWhitening` learns, plus ``whitening_`` (W) and ``coloring_`` (its
    inverse on the data's span, ``V diag(sqrt(lambda + eps)) V^T``). The output features keep the input's
    names.
    """

    _owner = "zca_whitening"
    _params = ("mean_", "whitening_", "coloring_")

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def _fit(self, x: torch.Tensor) -> None:
        super()._fit(x)
        v = self.components_.T
        self.whitening_ = (v / self.std_) @ v.T
        self.coloring_ = (v * self.std_) @ v.T

    def _forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (x - p["mean_"]) @ p["whitening_"]

    def _backward(self, z: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return z @ p["coloring_"] + p["mean_"]
