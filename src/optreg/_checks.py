"""Validation helpers shared by every component.

They raise :class:`optreg.errors.OptregValueError` with one message format everywhere::

    adam: beta2 must be in [0, 1), got 1.5

``owner`` is the thing being configured (an optimizer, a schedule, a scaler), ``name`` the field.
A hyperparameter given as a tensor (torch.optim takes a Tensor lr) goes through :func:`check_tensor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch

from optreg.errors import OptregValueError


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return f"{x:g}"


def check_number(owner: str, name: str, value: Any) -> float:
    """``value`` must be a finite real number (bools are refused); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise OptregValueError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise OptregValueError(f"{owner}: {name} must be finite, got {value!r}")
    return value


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` must be a finite number in the interval; the message prints the interval.

    >>> check_range("adam", "beta2", 0.999, 0, 1, high_open=True)
    0.999
    """
    interval = f"{'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise OptregValueError(f"{owner}: {name} must be a real number in {interval}, got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise OptregValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    return v


def check_nonneg(owner: str, name: str, value: Any) -> float:
    """A finite number >= 0 (a learning rate, an epsilon, a weight decay)."""
    return check_range(owner, name, value, 0.0, math.inf, high_open=True)


def check_positive(owner: str, name: str, value: Any) -> float:
    """A finite number > 0."""
    return check_range(owner, name, value, 0.0, math.inf, low_open=True, high_open=True)


def check_unit(owner: str, name: str, value: Any) -> float:
    """A decay rate in [0, 1) (beta, beta1, beta2, momentum)."""
    return check_range(owner, name, value, 0.0, 1.0, high_open=True)


def check_int(owner: str, name: str, value: Any, low: int = 0) -> int:
    """An integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptregValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise OptregValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return value


def check_choice(owner: str, name: str, value: Any, choices: tuple[Any, ...] | list[Any]) -> Any:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise OptregValueError(f"{owner}: {name} must be one of {allowed}, got {value!r}")
    return value


class _TensorValue(float):
    """A 0-d tensor's value as a float that prints as the tensor, so that any check reports what was given."""

    __slots__ = ("_text",)

    def __new__(cls, tensor: torch.Tensor) -> _TensorValue:
        self = super().__new__(cls, tensor.item())
        self._text = repr(tensor)
        return self

    def __repr__(self) -> str:
        return self._text


def check_tensor(check: Callable[[str, str, Any], Any], owner: str, name: str, value: torch.Tensor) -> torch.Tensor:
    """A hyperparameter given as a tensor: a real 0-d tensor whose value passes ``check``; returns the tensor.

    ``check`` is any of the checks above; its message shows the tensor as given::

        adam: beta1 must be in [0, 1), got tensor(1.5000)

    Reads the value once (``.item()``, a device synchronization on an accelerator): call it when a value
    enters, not on every step.
    """
    if value.ndim != 0 or value.dtype == torch.bool or value.is_complex():
        raise OptregValueError(f"{owner}: {name} must be a real number or a real 0-d tensor, got {value!r}")
    check(owner, name, _TensorValue(value))
    return value
