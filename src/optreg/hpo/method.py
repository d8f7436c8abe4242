"""The search methods' common contract and their registry (``hpo.methods()``).

A method is asked, again and again, for the next trial given every trial of the study so far (running
ones included): :meth:`Method.propose` returns a :class:`~optreg.hpo.trial.Proposal`, ``WAIT`` (nothing
can be proposed until running trials finish) or ``None`` (the method is done). Its answer depends only
on its settings, the seed and those trials, never on hidden state: a study resumed from its storage
continues where it stopped, and several workers sharing one storage continue each other's work.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import ThreadpoolController

from optreg._checks import check_choice, check_int
from optreg.errors import OptregTypeError, OptregValueError
from optreg.hpo.space import Space
from optreg.hpo.trial import Proposal, Trial, _Wait

__all__ = ["DIRECTIONS", "Method", "create_method", "methods", "register"]

DIRECTIONS = ("minimize", "maximize")
#: The order of :func:`methods`: that of section 7.6.
_ORDER = (
    "grid", "random", "halving", "hyperband", "bohb", "median-stop", "gp-ei", "gp-pi", "gp-ucb", "tpe",
    "coarse-to-fine", "nas",
)  # fmt: skip
_REGISTRY: dict[str, type[Method]] = {}
#: Methods whose module is imported on first use (torch and SciPy's optimizers are not needed before).
_LAZY = {
    "bohb": "optreg.hpo.bohb",
    "gp-ei": "optreg.hpo.bayes",
    "gp-pi": "optreg.hpo.bayes",
    "gp-ucb": "optreg.hpo.bayes",
    "tpe": "optreg.hpo.tpe",
}


class Method(ABC):
    """Base of the search methods. Subclasses take their options as keyword-only ``__init__`` arguments
    (after ``space, *, seed, n_trials, direction``) and set ``name``."""

    name: ClassVar[str]
    #: Whether ``minimize`` needs ``n_trials`` (a method that ends by itself, like ``grid``, does not).
    needs_n_trials: ClassVar[bool] = True
    #: Whether the method needs intermediate values (an objective taking ``trial=`` and calling ``report``).
    needs_reports: ClassVar[bool] = False
    #: Whether the method calls ``objective(params, budget=r)`` (multi-fidelity methods).
    needs_budget: bool = False

    def __init__(self, space: Space, *, seed: int, n_trials: int | None, direction: str) -> None:
        self.space = space
        self.seed = seed
        self.n_trials = n_trials
        self.direction = direction

    def identity(self) -> dict[str, Any]:
        """The settings a resumed study must share with the stored one (besides space, direction, seed)."""
        return {}

    @abstractmethod
    def propose(self, trials: Sequence[Trial]) -> Proposal | _Wait | None:
        """The next trial to run given ``trials`` (all of them, in number order), ``WAIT`` or ``None``."""

    def should_stop(self, trial: Trial, trials: Sequence[Trial]) -> bool:
        """Whether the running ``trial`` (with the values it reported so far) should stop now, given every
        trial of the study; by default never."""
        return False

    # ------------------------------------------------------------------ helpers for subclasses
    def loss(self, trial: Trial) -> float:
        """The value to minimize: the trial's value (negated when maximizing); ``inf`` unless complete."""
        if trial.state != "complete" or trial.value is None:
            return math.inf
        return trial.value if self.direction == "minimize" else -trial.value

    def rng(self, *key: int) -> np.random.Generator:
        """A generator determined by the seed and ``key`` (e.g. the trial number): the same on resume."""
        return np.random.default_rng([self.seed, *key])

    def capped(self, trials: Sequence[Trial]) -> bool:
        """Whether ``n_trials`` trials exist already."""
        return self.n_trials is not None and len(trials) >= self.n_trials


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def methods() -> tuple[str, ...]:
    """The names of the registered methods, in the order of section 7.6."""
    return tuple(sorted({*_REGISTRY, *_LAZY}, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)))


def _options(cls: type[Method]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in ("seed", "n_trials", "direction")}


def create_method(
    name: Any, space: Space, *, seed: Any, n_trials: Any, direction: Any, options: dict[str, Any]
) -> Method:
    """The method ``name`` with its ``options`` checked (an unknown option is an error naming it)."""
    if not isinstance(name, str) or name not in methods():
        check_choice("hpo", "method", name, methods())
    if name not in _REGISTRY:
        importlib.import_module(_LAZY[name])
    cls = _REGISTRY[name]
    allowed = _options(cls)
    for key in options:
        if key not in allowed:
            raise OptregTypeError(
                f"hpo: method {name!r} takes no option {key!r}, got {key}={options[key]!r} "
                f"(its options: {', '.join(allowed) or 'none'})"
            )
    missing = [k for k, p in allowed.items() if p.default is p.empty and k not in options]
    if missing:
        raise OptregTypeError(f"hpo: method {name!r} needs the option {missing[0]!r} (e.g. {missing[0]}=...)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise OptregValueError(f"hpo: seed must be an integer in [0, 2**63), got {seed!r}")
    if n_trials is not None:
        check_int("hpo", "n_trials", n_trials, 1)
    check_choice("hpo", "direction", direction, DIRECTIONS)
    return cls(space, seed=seed, n_trials=n_trials, direction=direction, **options)


@functools.cache
def _blas() -> ThreadpoolController:
    """The thread pools of the loaded BLAS / OpenMP libraries, found once: ``threadpool_limits`` looks
    them up again on every call, which costs milliseconds, a tenth of a suggestion. SciPy's own OpenBLAS
    (the one its L-BFGS-B and LAPACK wrappers call, apart from NumPy's) is loaded first, so that it is among
    them: a controller made before it loads would leave it on every core."""
    import scipy.linalg  # loads SciPy's OpenBLAS
    import scipy.optimize  # noqa: F401

    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which BLAS runs on one thread (a surrogate's matrices are too small to gain from more,
    and the threads only contend with the study's workers)."""
    return _blas().limit(limits=1)

