"""Optimizers by name, for configs and the command line: :func:`create` and :func:`available`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from optreg.errors import OptregValueError
from optreg.optim import aliases, second_order
from optreg.optim.optimizer import Factory, Optimizer

_REGISTRY: dict[str, Factory] = {
    f.__name__: f
    for f in (
        aliases.sgd,
        aliases.momentum,
        aliases.nesterov,
        aliases.adagrad,
        aliases.rmsprop,
        aliases.adadelta,
        aliases.adam,
        aliases.nadam,
        aliases.adamw,
        aliases.adamax,
        aliases.radam,
        aliases.delta_bar_delta,
        aliases.rprop,
        aliases.asgd,
        aliases.adafactor,
        aliases.muon,
        second_order.sgd_linesearch,
        second_order.cg,
        second_order.bfgs,
        second_order.lbfgs,
        second_order.newton,
        second_order.newton_cg,
        second_order.coordinate_descent,
    )
}


def available() -> list[str]:
    """The names :func:`create` accepts."""
    return sorted(_REGISTRY)


def register(name: str, factory: Factory) -> None:
    """Makes ``factory`` (a function of hyperparameters returning a Transform) available to :func:`create`."""
    if not callable(factory):
        raise OptregValueError(f"register: factory for {name!r} must be callable, got {factory!r}")
    _REGISTRY[name.lower()] = factory


def get(name: str) -> Factory:
    """The alias called ``name`` (case-insensitive)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise OptregValueError(f"create: optimizer must be one of {', '.join(available())}, got {name!r}")
    return _REGISTRY[key]


def create(
    name: str, params: Iterable[Tensor] | Iterable[dict[str, Any]], *, compile: bool = False, **hparams: Any
) -> Optimizer:
    """``create("adam", model.parameters(), lr=1e-3)``: any registered optimizer by name.

    An unknown name or hyperparameter raises a ValueError naming the optimizer, the field and what is allowed.
    """
    return Optimizer(params, get(name), compile=compile, **hparams)
