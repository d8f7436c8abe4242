"""Search spaces: the distributions of the hyperparameters and the space they form (section 7.6).

A space is a plain dict ``{name: distribution}``::

    space = {"lr": Float(1e-4, 1.0, log=True), "dropout": Float(0.0, 0.5),
             "width": Int(16, 256, log=True), "act": Categorical(["relu", "tanh"]), "epochs": Fixed(10)}

File 001's practice: search the learning rate and regularization strengths on a log scale (``log=True``:
a multiplicative parameter is sampled uniformly in ``log x``), dropout on its own scale.

**Conditional parameters.** A parameter that exists only for some values of another carries
``when={"parent": value}`` (or ``{"parent": [v1, v2]}``, or several parents, all of which must match)::

    {"optimizer": Categorical(["sgd", "adam"]),
     "momentum": Float(0.0, 0.99, when={"optimizer": "sgd"}),
     "beta2": Float(0.9, 0.9999, when={"optimizer": "adam"})}

A parameter whose condition does not hold is *inactive*: it is absent from the trial's ``params``. A
parent is a :class:`Categorical`, an :class:`Int` or a :class:`Fixed` parameter (possibly conditional itself).

The distributions are frozen dataclasses, validated on construction, printable and picklable (like
:mod:`optreg.schedules`). :class:`Space` checks the dict (names, conditions, no cycles) and carries the
operations the methods share: sampling (7.6.2), the grid (7.6.1) and the unit-cube encoding of the
Gaussian-process methods (:class:`Encoding`).
"""

from __future__ import annotations

import itertools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np

from optreg._checks import check_int, check_number
from optreg.errors import OptregTypeError, OptregValueError

__all__ = ["Categorical", "Distribution", "Encoding", "Fixed", "Float", "Int", "Space"]

_Scalar = str | int | float | bool | None


def _check_scalar(owner: str, name: str, value: Any) -> _Scalar:
    """A JSON scalar (str, int, finite float, bool, None): what a trial's params may hold."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real) and math.isfinite(float(value)):
        return float(value)
    raise OptregValueError(f"{owner}: {name} must be a string, a finite number, a bool or None, got {value!r}")


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (``True`` is not ``1``, ``1`` is ``1.0``)."""
    return (isinstance(a, bool) == isinstance(b, bool)) and (a is None) == (b is None) and a == b


def _normalize_when(owner: str, when: Any) -> tuple[tuple[str, tuple[_Scalar, ...]], ...] | None:
    if when is None:
        return None
    if isinstance(when, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in when):
        when = dict(when)  # already normalized (a copy via dataclasses.replace or pickle)
    if not isinstance(when, Mapping) or not when:
        raise OptregValueError(f"{owner}: when must be a non-empty mapping {{parent: value(s)}}, got {when!r}")
    out = []
    for parent, values in when.items():
        if not isinstance(parent, str) or not parent:
            raise OptregValueError(f"{owner}: when's keys must be parameter names, got {parent!r}")
        vals = tuple(values) if isinstance(values, list | tuple) else (values,)
        if not vals:
            raise OptregValueError(f"{owner}: when[{parent!r}] must name at least one value, got {values!r}")
        out.append((parent, tuple(_check_scalar(owner, f"when[{parent!r}]", v) for v in vals)))
    return tuple(sorted(out))


class Distribution(ABC):
    """Base of the distributions: a frozen dataclass with a ``when`` condition (``None``: always active)."""

    when: Any
    _owner: ClassVar[str] = "distribution"

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check_when(self) -> None:
        self._set("when", _normalize_when(self._owner, self.when))

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "when":
                if v is not None:
                    parts.append("when=" + repr({k: vs[0] if len(vs) == 1 else list(vs) for k, vs in v}))
            elif f.default is MISSING or v != f.default:  # required fields and changed defaults
                parts.append(f"{f.name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> _Scalar:
        """One value drawn from the distribution (uniform on its scale)."""

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a value of the distribution."""

    @abstractmethod
    def grid(self, size: int) -> list[_Scalar]:
        """``size`` values spread over the range on its scale (all of a finite set)."""

    def check(self, name: str, value: Any) -> _Scalar:
        """``value`` if it belongs to the distribution, else an error naming ``name``."""
        if not self.contains(value):
            raise OptregValueError(f"hpo: {name} must be a value of {self!r}, got {value!r}")
        return _check_scalar("hpo", name, value)


def _check_bounds(owner: str, low: Any, high: Any, log: Any, integer: bool) -> tuple[Any, Any]:
    if integer:
        for n, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, Integral):
                raise OptregValueError(f"{owner}: {n} must be an integer, got {v!r}")
        low, high = int(low), int(high)
    else:
        low, high = check_number(owner, "low", low), check_number(owner, "high", high)
    if not isinstance(log, bool):
        raise OptregValueError(f"{owner}: log must be True or False, got {log!r}")
    if not high > low:
        hint = " (use hpo.Fixed for a single value)" if high == low else ""
        raise OptregValueError(f"{owner}: high must be greater than low = {low!r}{hint}, got {high!r}")
    if log and low <= 0:
        raise OptregValueError(f"{owner}: low must be > 0 on a log scale (log=True), got {low!r}")
    return low, high


class _Range(Distribution):
    """Base of :class:`Float` and :class:`Int`: ``low < high``, and ``low > 0`` on a log scale."""

    low: Any
    high: Any
    log: bool
    _integer: ClassVar[bool] = False

    def __post_init__(self) -> None:
        low, high = _check_bounds(self._owner, self.low, self.high, self.log, integer=self._integer)
        self._set("low", low)
        self._set("high", high)
        self._check_when()


@dataclass(frozen=True, repr=False)
class Float(_Range):
    """A real number in ``[low, high]``; ``log=True`` samples ``log x`` uniformly (needs ``low > 0``)."""

    low: float
    high: float
    log: bool = False
    when: Any = None
    _owner: ClassVar[str] = "Float"

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(min(self.high, max(self.low, math.exp(rng.uniform(math.log(self.low), math.log(self.high))))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, Real) and not isinstance(value, bool) and self.low <= float(value) <= self.high

    def grid(self, size: int) -> list[float]:
        if size == 1:
            return [math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2]
        pts = np.geomspace(self.low, self.high, size) if self.log else np.linspace(self.low, self.high, size)
        return [float(p) for p in pts]


@dataclass(frozen=True, repr=False)
class Int(_Range):
    """An integer in ``[low, high]`` (both included); ``log=True`` spreads the values on a log scale."""

    low: int
    high: int
    log: bool = False
    when: Any = None
    _owner: ClassVar[str] = "Int"
    _integer: ClassVar[bool] = True

    @property
    def _edges(self) -> tuple[float, float]:
        """The continuous range whose rounding gives each integer an equal share on the chosen scale."""
        lo, hi = self.low - 0.5, self.high + 0.5
        return (math.log(lo), math.log(hi)) if self.log else (lo, hi)

    def _from_line(self, t: float) -> int:
        x = math.exp(t) if self.log else t
        return int(min(self.high, max(self.low, round(x))))

    def sample(self, rng: np.random.Generator) -> int:
        if not self.log:
            return int(rng.integers(self.low, self.high + 1))
        return self._from_line(rng.uniform(*self._edges))

    def contains(self, value: Any) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool) and self.low <= value <= self.high

    def grid(self, size: int) -> list[int]:
        if self.high - self.low + 1 <= size:
            return list(range(self.low, self.high + 1))
        pts = np.geomspace(self.low, self.high, size) if self.log else np.linspace(self.low, self.high, size)
        return sorted({int(round(p)) for p in pts})


@dataclass(frozen=True, repr=False)
class Categorical(Distribution):
    """One of ``choices`` (distinct strings, numbers, bools or None), each equally likely."""

    choices: tuple[_Scalar, ...]
    when: Any = None
    _owner: ClassVar[str] = "Categorical"

    def __post_init__(self) -> None:
        c = self.choices
        if isinstance(c, str | bytes | Mapping) or not isinstance(c, Sequence | set | frozenset) or not len(c):
            raise OptregValueError(f"{self._owner}: choices must be a non-empty list of values, got {c!r}")
        c = tuple(_check_scalar(self._owner, "choices", v) for v in c)
        for i, v in enumerate(c):
            if any(_same(v, w) for w in c[:i]):
                raise OptregValueError(f"{self._owner}: choices must be distinct, got {list(c)!r}")
        self._set("choices", c)
        self._check_when()

    def index(self, value: Any) -> int:
        return next(i for i, c in enumerate(self.choices) if _same(c, value))

    def sample(self, rng: np.random.Generator) -> _Scalar:
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, value: Any) -> bool:
        return any(_same(c, value) for c in self.choices)

    def grid(self, size: int) -> list[_Scalar]:
        return list(self.choices)


@dataclass(frozen=True, repr=False)
class Fixed(Distribution):
    """A parameter that is not searched: every trial gets ``value``."""

    value: _Scalar
    when: Any = None
    _owner: ClassVar[str] = "Fixed"

    def __post_init__(self) -> None:
        self._set("value", _check_scalar(self._owner, "value", self.value))
        self._check_when()

    def sample(self, rng: np.random.Generator) -> _Scalar:
        return self.value

    def contains(self, value: Any) -> bool:
        return _same(self.value, value)

    def grid(self, size: int) -> list[_Scalar]:
        return [self.value]


class Space:
    """A checked search space: ``Space({"lr": Float(1e-4, 1, log=True), ...})``.

    ``names`` are in an order where every parent comes before the parameters that depend on it.
    ``fingerprint`` is the canonical JSON text that identifies the space in a study's storage.
    """

    def __init__(self, space: Mapping[str, Distribution] | Space) -> None:
        if isinstance(space, Space):
            space = space.dists
        if not isinstance(space, Mapping) or not space:
            raise OptregValueError(f"hpo: space must be a non-empty dict {{name: distribution}}, got {space!r}")
        for name, dist in space.items():
            if not isinstance(name, str) or not name:
                raise OptregValueError(f"hpo: space's names must be non-empty strings, got {name!r}")
            if not isinstance(dist, Distribution):
                raise OptregTypeError(
                    f"hpo: space[{name!r}] must be hpo.Float, Int, Categorical or Fixed, got {dist!r}"
                )
        self.dists: dict[str, Distribution] = dict(space)
        for name, dist in self.dists.items():
            for parent, values in dist.when or ():
                p = self.dists.get(parent)
                if p is None or parent == name:
                    raise OptregValueError(f"hpo: space[{name!r}].when names an unknown parameter, got {parent!r}")
                if not isinstance(p, Categorical | Int | Fixed):
                    raise OptregValueError(
                        f"hpo: space[{name!r}].when: a parent must be Categorical, Int or Fixed, got {parent}={p!r}"
                    )
                for v in values:
                    if not p.contains(v):
                        raise OptregValueError(
                            f"hpo: space[{name!r}].when[{parent!r}] must be a value of {p!r}, got {v!r}"
                        )
        self.names: tuple[str, ...] = self._order()
        self.fingerprint: str = json.dumps({n: repr(d) for n, d in self.dists.items()}, sort_keys=True)

    def _order(self) -> tuple[str, ...]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(n: str, path: tuple[str, ...]) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                raise OptregValueError(f"hpo: space's conditions form a cycle, got {' -> '.join((*path, n))}")
            state[n] = 1
            for parent, _ in self.dists[n].when or ():
                visit(parent, (*path, n))
            state[n] = 2
            order.append(n)

        for n in self.dists:
            visit(n, ())
        return tuple(order)

    def __repr__(self) -> str:
        return f"Space({self.dists!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.fingerprint == other.fingerprint

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.dists)

    def active(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active given the values of its parents in ``params``."""
        return all(p in params and any(_same(params[p], v) for v in vs) for p, vs in self.dists[name].when or ())

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One configuration, every active parameter drawn from its distribution (random search, 7.6.2)."""
        params: dict[str, Any] = {}
        for n in self.names:
            if self.active(n, params):
                params[n] = self.dists[n].sample(rng)
        return self._ordered(params)

    def _ordered(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {n: params[n] for n in self.dists if n in params}

    def check_params(self, params: Any) -> dict[str, Any]:
        """``params`` if they are a configuration of the space (active parameters only), else an error."""
        if not isinstance(params, Mapping):
            raise OptregValueError(f"hpo: params must be a dict, got {params!r}")
        unknown = [k for k in params if k not in self.dists]
        if unknown:
            raise OptregValueError(f"hpo: params names a parameter the space lacks, got {unknown[0]!r}")
        out: dict[str, Any] = {}
        for n in self.names:
            if self.active(n, out):
                if n not in params:
                    raise OptregValueError(f"hpo: params lack the active parameter {n!r}, got {dict(params)!r}")
                out[n] = self.dists[n].check(n, params[n])
            elif n in params:
                raise OptregValueError(f"hpo: params[{n!r}] is inactive (its condition fails), got {params[n]!r}")
        return self._ordered(out)

    def grid(self, size: int) -> Iterator[dict[str, Any]]:
        """Every combination of the grid values (:meth:`Distribution.grid`), inactive parameters left out.

        Grid search (7.6.1): with ``m_k`` values for parameter ``k`` there are up to ``m_1 x ... x m_K``
        configurations; a conditional parameter multiplies only the branches where it is active.
        """
        check_int("grid", "grid_size", size, 1)
        values = {n: d.grid(size) for n, d in self.dists.items()}

        def expand(i: int, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(self.names):
                yield self._ordered(params)
                return
            n = self.names[i]
            if not self.active(n, params):
                yield from expand(i + 1, params)
                return
            for v in values[n]:
                yield from expand(i + 1, {**params, n: v})

        return expand(0, {})

    def encoding(self) -> Encoding:
        """The unit-cube encoding used by the Gaussian-process methods."""
        return Encoding(self)


@dataclass(frozen=True)
class _Dim:
    """Where one parameter lives in the encoded vector."""

    name: str
    kind: str  # "float", "int", "onehot"
    start: int
    stop: int


class Encoding:
    """Maps configurations to points of the unit cube ``[0, 1]^D`` and back (for the GP, 7.6.3).

    - :class:`Float`: ``(x - low) / (high - low)``, or the same in ``log x`` when ``log=True`` (the warp).
    - :class:`Int`: the same over ``[low - 0.5, high + 0.5]`` (in ``log`` when ``log=True``), so that
      rounding the decoded number gives each integer an equal share of the cube.
    - :class:`Categorical`: one-hot, one coordinate per choice.
    - :class:`Fixed`: no coordinate.

    An inactive parameter is encoded as 0.5 (numbers) or all zeros (one-hot), the same for every trial.
    :meth:`canonical` snaps any point of the cube to an encodable one: integers rounded, one-hot groups
    to their argmax, inactive parameters to their constant.
    """

    def __init__(self, space: Space) -> None:
        self.space = space
        dims, d = [], 0
        for n, dist in space.dists.items():
            width = len(dist.choices) if isinstance(dist, Categorical) else 0 if isinstance(dist, Fixed) else 1
            kind = {Float: "float", Int: "int", Categorical: "onehot"}.get(type(dist))
            if width:
                dims.append(_Dim(n, kind, d, d + width))
                d += width
        self.dims: tuple[_Dim, ...] = tuple(dims)
        self.n_dims: int = d
        self._by_name = {dim.name: dim for dim in dims}
        #: Whether some parameter has a condition.
        self.conditional: bool = any(dist.when is not None for dist in space.dists.values())

    def _line(self, dist: Float | Int) -> tuple[float, float]:
        if isinstance(dist, Int):
            return dist._edges
        return (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        """The point of ``[0, 1]^D`` of a configuration, shape ``(D,)``."""
        u = np.zeros(self.n_dims)
        for dim in self.dims:
            dist = self.space.dists[dim.name]
            if dim.name not in params:
                u[dim.start : dim.stop] = 0.0 if dim.kind == "onehot" else 0.5
            elif dim.kind == "onehot":
                u[dim.start + dist.index(params[dim.name])] = 1.0
            else:
                lo, hi = self._line(dist)
                x = float(params[dim.name])
                u[dim.start] = ((math.log(x) if dist.log else x) - lo) / (hi - lo)
        return u

    def decode(self, u: np.ndarray) -> dict[str, Any]:
        """The configuration of a point ``u`` of shape ``(D,)`` (rounded, inactive parameters dropped)."""
        params: dict[str, Any] = {}
        for n in self.space.names:
            if not self.space.active(n, params):
                continue
            dist = self.space.dists[n]
            dim = self._by_name.get(n)
            if dim is None:
                params[n] = dist.value
            elif dim.kind == "onehot":
                params[n] = dist.choices[int(np.argmax(u[dim.start : dim.stop]))]
            else:
                lo, hi = self._line(dist)
                t = lo + float(np.clip(u[dim.start], 0.0, 1.0)) * (hi - lo)
                if isinstance(dist, Int):
                    params[n] = dist._from_line(t)
                else:
                    x = math.exp(t) if dist.log else t
                    params[n] = float(min(dist.high, max(dist.low, x)))
        return self.space._ordered(params)

    def canonical(self, u: np.ndarray) -> np.ndarray:
        """Each row of ``u`` (shape ``(S, D)``) replaced by the encoding of its decoded configuration."""
        out = np.clip(np.atleast_2d(u), 0.0, 1.0)
        values: dict[str, np.ndarray] = {}  # decoded values of the possible parents, per row
        for dim in self.dims:
            dist = self.space.dists[dim.name]
            if dim.kind == "int":
                lo, hi = self._line(dist)
                t = lo + out[:, dim.start] * (hi - lo)
                v = np.clip(np.round(np.exp(t) if dist.log else t), dist.low, dist.high)
                out[:, dim.start] = ((np.log(v) if dist.log else v) - lo) / (hi - lo)
                values[dim.name] = v
            elif dim.kind == "onehot":
                idx = np.argmax(out[:, dim.start : dim.stop], axis=1)
                out[:, dim.start : dim.stop] = 0.0
                out[np.arange(len(out)), dim.start + idx] = 1.0
                values[dim.name] = idx
        if self.conditional:
            active = self._active_rows(values, len(out))
            for dim in self.dims:
                out[~active[dim.name], dim.start : dim.stop] = 0.0 if dim.kind == "onehot" else 0.5
        return out

    def _active_rows(self, values: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Per parameter, which of ``n`` rows have it active (``values``: decoded integers, choice indices)."""
        active: dict[str, np.ndarray] = {}
        for name in self.space.names:
            mask = np.ones(n, dtype=bool)
            for parent, allowed in self.space.dists[name].when or ():
                p = self.space.dists[parent]
                if isinstance(p, Categorical):
                    ok = np.isin(
                        values[parent], [i for i, c in enumerate(p.choices) if any(_same(c, a) for a in allowed)]
                    )
                elif isinstance(p, Int):
                    ok = np.isin(values[parent], [a for a in allowed if isinstance(a, int) and not isinstance(a, bool)])
                else:
                    ok = np.full(n, any(_same(p.value, a) for a in allowed))
                mask &= ok & active[parent]
            active[name] = mask
        return active

    def neighbours(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The configurations one discrete move away: one categorical changed, or one integer moved by one."""
        out = []
        for n, dist in self.space.dists.items():
            if n not in params:
                continue
            if isinstance(dist, Categorical):
                moves = [c for c in dist.choices if not _same(c, params[n])]
            elif isinstance(dist, Int):
                moves = [v for v in (params[n] - 1, params[n] + 1) if dist.low <= v <= dist.high]
            else:
                continue
            for v in moves:
                new = {**params, n: v}
                # re-derive conditional parameters: drop the ones that became inactive, draw none new
                out.append(self._repair(new, params))
        return out

    def _repair(self, params: dict[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` made consistent with the conditions: newly active ones at their grid middle."""
        fixed: dict[str, Any] = {}
        for n in self.space.names:
            if not self.space.active(n, fixed):
                continue
            dist = self.space.dists[n]
            fixed[n] = params[n] if n in params else old.get(n, dist.grid(3)[len(dist.grid(3)) // 2])
        return self.space._ordered(fixed)


def product_size(space: Space, size: int) -> int:
    """How many configurations :meth:`Space.grid` yields (counted, not built, when there is no condition)."""
    if all(d.when is None for d in space.dists.values()):
        return math.prod(len(d.grid(size)) for d in space.dists.values())
    return sum(1 for _ in itertools.islice(space.grid(size), 10**7))
