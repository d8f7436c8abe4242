"""Weight penalties (section 7.7.1, file 004) and the max-norm constraint.

A penalty is a small frozen dataclass (picklable, printable, compared by value, validated on construction)
called as ``penalty(model) -> scalar tensor``; it fits :class:`optreg.train.Trainer`'s ``penalty=``, which
adds it to the mean data loss, so the objective is eq. (7.58)::

    (1/N) sum_n L(y_n, f(x_n; theta)) + lambda l_p(theta)

>>> import torch
>>> model = torch.nn.Linear(3, 2)
>>> float(l2(0.0)(model))
0.0

**What is penalized.** The weights only, never biases or normalization gains and shifts (file 004: "we only
penalize the weights W^[l], not the biases b^[l]"): by default the tensors with ``ndim > 1``
(:func:`optreg.optim.combine.weights_only`, the mask the optimizer's weight decay uses). ``include="all"``
penalizes every parameter; ``include`` may also be any function ``list[Tensor] -> list[bool]`` over the
model's parameters in ``model.parameters()`` order (the contract of :func:`optreg.optim.masked`). The model
may also be given as an iterable of tensors.

**Scaling of the l2 term.** Eq. (7.58) adds ``lambda l_2(theta)`` with ``l_2(theta)`` the squared Euclidean norm
``sum_i theta_i^2`` (the l2 penalty of ridge regression, as the chapter's own l1 of eq. (7.61) is an
elementwise sum); :func:`l2` follows it: ``l2(lam)`` is ``lam * ||theta||^2`` and its gradient ``2 lam theta``,
so it equals ``torch.optim.SGD(weight_decay=2 * lam)`` on the weights (and
``optreg.optim.add_l2(2 * lam)``). ``half=True`` gives ``lam / 2 * ||theta||^2`` (file 004's
``lambda / (2n) ||W||_F^2`` with ``lambda / n`` written ``lam``; torch's ``weight_decay=lam``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optreg._checks import check_nonneg, check_positive
from optreg.errors import OptregTypeError, OptregValueError
from optreg.optim.combine import weights_only

__all__ = ["L1", "L2", "PENALTIES", "ElasticNet", "elastic_net", "l1", "l2", "max_norm_", "select_parameters"]

#: ``include`` is ``"weights"``, ``"all"`` or a mask function over the parameter list.
Include = str | Callable[[list[Tensor]], Sequence[bool]]


def _all_parameters(params: list[Tensor]) -> list[bool]:
    return [True] * len(params)


_NAMED_INCLUDES: dict[str, Callable[[list[Tensor]], Sequence[bool]]] = {
    "weights": weights_only,
    "all": _all_parameters,
}


def _check_include(owner: str, include: Any) -> Include:
    if isinstance(include, str):
        if include not in _NAMED_INCLUDES:
            allowed = ", ".join(repr(k) for k in _NAMED_INCLUDES)
            raise OptregValueError(f"{owner}: include must be one of {allowed} or a mask function, got {include!r}")
    elif not callable(include):
        raise OptregTypeError(f"{owner}: include must be 'weights', 'all' or a mask function, got {include!r}")
    return include


def select_parameters(owner: str, model: nn.Module | Iterable[Tensor], include: Include = "weights") -> list[Tensor]:
    """The parameters of ``model`` that ``include`` selects (see the module docstring)."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else list(model)
    for p in params:
        if not isinstance(p, Tensor):
            raise OptregTypeError(f"{owner}: the model must be an nn.Module or tensors, got a {type(p).__name__}")
    mask = _NAMED_INCLUDES[include] if isinstance(include, str) else include
    flags = list(mask(params))
    if len(flags) != len(params):
        raise OptregValueError(f"{owner}: include must give one flag per parameter ({len(params)}), got {len(flags)}")
    return [p for p, keep in zip(params, flags) if keep]


def _total(owner: str, params: list[Tensor], term: Callable[[Tensor], Tensor]) -> Tensor:
    """``sum_p term(p)`` as a 0-d tensor (a float 0 on the default dtype when nothing is selected)."""
    if not params:
        return torch.zeros(())
    return torch.stack([term(p) for p in params]).sum()


def _abs_sum(eps: float | None) -> Callable[[Tensor], Tensor]:
    if eps is None:
        return lambda p: p.abs().sum()
    return lambda p: torch.sqrt(p.square() + eps).sum()


def _square_sum(p: Tensor) -> Tensor:
    return p.square().sum()


class _Penalty:
    """Shared by the penalties: ``__call__`` selects the parameters and sums the terms."""

    _owner: ClassVar[str] = "penalty"
    include: Include

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _params(self, model: nn.Module | Iterable[Tensor]) -> list[Tensor]:
        return select_parameters(self._owner, model, self.include)


@dataclass(frozen=True)
class L1(_Penalty):
    """``lambda * l_1(theta) = lambda * sum_i |theta_i|`` (eq. (7.58) with p = 1; file 004).

    l1 is not differentiable at 0; autograd's subgradient there is 0. ``eps`` switches to the chapter's smooth
    form, eq. (7.61): ``lambda * sum_i sqrt(theta_i^2 + eps)`` (``eps`` a small constant > 0). A gradient step on
    either form does not set weights to exactly zero; :func:`optreg.optim.prox_l1` does (figure 7.9).
    """

    strength: float
    eps: float | None = None
    include: Include = "weights"
    _owner: ClassVar[str] = "l1"

    def __post_init__(self) -> None:
        self._set("strength", check_nonneg(self._owner, "strength", self.strength))
        if self.eps is not None:
            self._set("eps", check_positive(self._owner, "eps", self.eps))
        self._set("include", _check_include(self._owner, self.include))

    def __call__(self, model: nn.Module | Iterable[Tensor]) -> Tensor:
        return self.strength * _total(self._owner, self._params(model), _abs_sum(self.eps))


@dataclass(frozen=True)
class L2(_Penalty):
    """``lambda * ||theta||^2 = lambda * sum_i theta_i^2`` (eq. (7.58) with p = 2); ``half=True``: ``lambda / 2 * ...``.

    The gradient is ``2 lambda theta`` (``lambda theta`` with ``half``): with plain SGD the same trajectory as
    ``torch.optim.SGD(weight_decay=2 * lambda)`` (``weight_decay=lambda`` with ``half``) on the same weights, and
    as eq. (7.63)'s weight decay with ``w = 2 alpha lambda`` (exercise 7-3).
    """

    strength: float
    half: bool = False
    include: Include = "weights"
    _owner: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        self._set("strength", check_nonneg(self._owner, "strength", self.strength))
        if not isinstance(self.half, bool):
            raise OptregTypeError(f"{self._owner}: half must be a bool, got {self.half!r}")
        self._set("include", _check_include(self._owner, self.include))

    def __call__(self, model: nn.Module | Iterable[Tensor]) -> Tensor:
        scale = self.strength / 2 if self.half else self.strength
        return scale * _total(self._owner, self._params(model), _square_sum)


@dataclass(frozen=True)
class ElasticNet(_Penalty):
    """Elastic net (Zou & Hastie, 2005), eq. (7.62): ``lambda_1 l_1(theta) + lambda_2 l_2(theta)``.

    The two terms are those of :class:`L1` (``eps``: the smooth form 7.61) and :class:`L2` (``half``).
    scikit-learn's ``ElasticNet(alpha, l1_ratio)`` penalty is ``l1_strength = alpha * l1_ratio`` and
    ``l2_strength = alpha * (1 - l1_ratio)`` with ``half=True`` (on top of its ``1 / (2n)`` squared loss).
    """

    l1_strength: float
    l2_strength: float
    eps: float | None = None
    half: bool = False
    include: Include = "weights"
    _owner: ClassVar[str] = "elastic_net"

    def __post_init__(self) -> None:
        self._set("l1_strength", check_nonneg(self._owner, "l1_strength", self.l1_strength))
        self._set("l2_strength", check_nonneg(self._owner, "l2_strength", self.l2_strength))
        if self.eps is not None:
            self._set("eps", check_positive(self._owner, "eps", self.eps))
        if not isinstance(self.half, bool):
            raise OptregTypeError(f"{self._owner}: half must be a bool, got {self.half!r}")
        self._set("include", _check_include(self._owner, self.include))

    def __call__(self, model: nn.Module | Iterable[Tensor]) -> Tensor:
        params = self._params(model)
        abs_sum = _abs_sum(self.eps)
        l2_scale = self.l2_strength / 2 if self.half else self.l2_strength
        return _total(self._owner, params, lambda p: self.l1_strength * abs_sum(p) + l2_scale * _square_sum(p))


def l1(strength: float, *, eps: float | None = None, include: Include = "weights") -> L1:
    """The l1 penalty ``strength * sum |theta_i|`` (eq. 7.58), or its smooth form (eq. 7.61) with ``eps``."""
    return L1(strength, eps, include)


def l2(strength: float, *, half: bool = False, include: Include = "weights") -> L2:
    """The l2 penalty ``strength * ||theta||^2`` (eq. 7.58); ``half=True``: ``strength / 2 * ||theta||^2``."""
    return L2(strength, half, include)


def elastic_net(
    l1_strength: float,
    l2_strength: float,
    *,
    eps: float | None = None,
    half: bool = False,
    include: Include = "weights",
) -> ElasticNet:
    """Elastic net, eq. (7.62): ``l1_strength * l_1(theta) + l2_strength * l_2(theta)`` (see :class:`ElasticNet`)."""
    return ElasticNet(l1_strength, l2_strength, eps, half, include)


#: The penalties by name (for a run description: ``PENALTIES[spec["name"]](**rest)``).
PENALTIES: dict[str, Callable[..., _Penalty]] = {"l1": l1, "l2": l2, "elastic_net": elastic_net}


@torch.no_grad()
def max_norm_(
    model: nn.Module | Iterable[Tensor],
    max_norm: float,
    *,
    dim: int = 0,
    include: Include = "weights",
) -> None:
    """Max-norm constraint, in place: every unit's incoming weight vector gets norm ``<= max_norm``.

    ``w_i <- w_i * min(1, c / ||w_i||)`` for each slice ``w_i`` along ``dim`` (Srebro & Shraibman, 2005; used
    with dropout by Srivastava et al., 2014, sec. 5.1, ``c`` typically 3 to 4). For a ``Linear`` weight
    ``(out, in)`` and ``dim=0`` the slices are the rows, the weights into each output unit; for a ``Conv``
    kernel ``(out, in, *k)`` each output channel's filter. Slices already inside the ball are left untouched
    (bit for bit). Computed by :func:`torch.renorm` (which scales by ``c / (||w_i|| + 1e-7)``, so a rescaled
    slice ends just inside the bound). Apply it after every optimizer step, e.g. from a callback's
    ``on_step_end``; by default to the weights only (``include`` as for the penalties).
    """
    c = check_positive("max_norm", "max_norm", max_norm)
    for p in select_parameters("max_norm", model, include):
        if p.ndim == 0:
            raise OptregValueError("max_norm: a 0-d parameter has no units; include selected one")
        if not -p.ndim <= dim < p.ndim:
            raise OptregValueError(f"max_norm: dim must be in [{-p.ndim}, {p.ndim}) for a {p.ndim}-d weight, got {dim}")
        p.renorm_(2, dim, c)
