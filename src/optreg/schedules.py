"""Learning-rate schedules: pure functions of the step, plus :class:`ReduceOnPlateau`.

A schedule is any callable ``step -> lr`` where ``step`` is the 0-based iteration count ``t`` (an int >= 0)
and ``lr`` a float. The optimizer core accepts one wherever it accepts a number as ``lr``; the trainer calls
it once per iteration (or once per epoch, passing the epoch index, as in file 003's "divide the learning
rate by 10 after every epoch"; see :func:`per_epoch` to keep a per-iteration counter and change per epoch).

The schedules here are small frozen dataclasses: picklable, printable (``Exponential(lr=0.1, beta=0.96)``),
compared by value, and validated on construction. They follow the chapter's section 7.2.2 ("learning-rate
decay", eqs. (7.5)-(7.7)), section 7.2.3.3 (``alpha_t = alpha_0 / sqrt(t)``), file 002 (linear decay to a
floor), and the usual schedules of ``torch.optim.lr_scheduler`` (StepLR, MultiStepLR, ExponentialLR,
CosineAnnealingLR, LinearLR warm-up), whose learning rates they reproduce in closed form.

>>> s = warmup(cosine(0.1, total_steps=100), warmup_steps=10)   # the warm-up counts inside total_steps
>>> [round(s(t), 4) for t in (0, 5, 10, 55, 100)]
[0.0, 0.05, 0.1, 0.05, 0.0]

:class:`ReduceOnPlateau` is the one stateful schedule: it is fed a validation metric
(``.step(metric) -> lr``) and has the semantics of ``torch.optim.lr_scheduler.ReduceLROnPlateau``.
:class:`ScheduleLR` drives any torch optimizer with any of these schedules as a
``torch.optim.lr_scheduler.LRScheduler`` (it sets each group's lr to ``schedule(step)``);
:func:`as_multiplier` turns a schedule into an ``lr_lambda`` for ``torch.optim.lr_scheduler.LambdaLR``.
"""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

import torch
from torch.optim.lr_scheduler import LRScheduler

from optreg._checks import (
    check_choice,
    check_int,
    check_nonneg,
    check_number,
    check_range,
)
from optreg.errors import OptregTypeError, OptregValueError

__all__ = [
    "Constant",
    "Cosine",
    "Exponential",
    "InverseSqrt",
    "InverseTime",
    "LinearToFloor",
    "Multiplier",
    "Multistep",
    "NaturalExponential",
    "PerEpoch",
    "ReduceOnPlateau",
    "ScheduleLR",
    "StepDecay",
    "Warmup",
    "as_multiplier",
    "available",
    "constant",
    "cosine",
    "create",
    "exponential",
    "inverse_sqrt",
    "inverse_time",
    "linear_to_floor",
    "multistep",
    "natural_exponential",
    "per_epoch",
    "step_decay",
    "warmup",
]

Schedule = Callable[[int], float]


def _check_step(owner: str, step: Any) -> int:
    """The step ``t``: an integer >= 0 (numpy integers are accepted, bools are not)."""
    if isinstance(step, Integral) and not isinstance(step, bool):
        step = int(step)
    return check_int(owner, "step", step)


def _check_schedule(owner: str, schedule: Any) -> Schedule:
    """A callable ``step -> lr`` (a mapping with a ``"name"`` is built with :func:`create`)."""
    if isinstance(schedule, Mapping):
        spec = dict(schedule)
        if "name" not in spec:
            raise OptregValueError(f"{owner}: schedule given as a mapping needs a 'name', got {schedule!r}")
        schedule = create(spec.pop("name"), **spec)
    if isinstance(schedule, ReduceOnPlateau) or not callable(schedule):
        raise OptregTypeError(
            f"{owner}: schedule must be a callable step -> lr (ReduceOnPlateau is fed metrics, not steps), "
            f"got {schedule!r}"
        )
    check_nonneg(owner, "schedule(0)", schedule(0))
    return schedule


class _Schedule(ABC):
    """Base of the pure schedules: validates the step, then evaluates :meth:`_at`."""

    _owner: ClassVar[str] = "schedule"

    def __call__(self, step: int) -> float:
        return float(self._at(_check_step(self._owner, step)))

    @abstractmethod
    def _at(self, t: int) -> float:
        """The rate at a validated step ``t >= 0``."""

    def _set(self, name: str, value: Any) -> None:
        """Store a validated (normalised) field of the frozen dataclass."""
        object.__setattr__(self, name, value)

    def _check_lr(self) -> None:
        self._set("lr", check_nonneg(self._owner, "lr", self.lr))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Constant(_Schedule):
    """``alpha_t = alpha_0`` for every ``t``."""

    lr: float
    _owner: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        self._check_lr()

    def _at(self, t: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepDecay(_Schedule):
    """``alpha_t = alpha_0 * gamma ** floor(t / step_size)`` (torch ``StepLR``).

    Called with the epoch index and ``step_size=1, gamma=0.1`` it is file 003's per-epoch change
    ("divide the learning rate by 10 after every epoch").
    """

    lr: float
    step_size: int
    gamma: float = 0.1
    _owner: ClassVar[str] = "step_decay"

    def __post_init__(self) -> None:
        self._check_lr()
        check_int(self._owner, "step_size", self.step_size, 1)
        self._set("gamma", check_range(self._owner, "gamma", self.gamma, 0.0, 1.0, low_open=True))

    def _at(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.step_size)


@dataclass(frozen=True)
class Multistep(_Schedule):
    """``alpha_t = alpha_0 * gamma ** (number of milestones <= t)`` (torch ``MultiStepLR``).

    ``milestones`` are strictly increasing steps >= 1 (stored as a tuple).
    """

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1
    _owner: ClassVar[str] = "multistep"

    def __post_init__(self) -> None:
        self._check_lr()
        ms = self.milestones
        if isinstance(ms, str | bytes) or not isinstance(ms, Sequence) or len(ms) == 0:
            raise OptregValueError(
                f"{self._owner}: milestones must be a non-empty sequence of increasing integers >= 1, "
                f"got {ms!r}"
            )
        ms = tuple(check_int(self._owner, "milestones", m, 1) for m in ms)
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise OptregValueError(f"{self._owner}: milestones must be strictly increasing, got {list(ms)!r}")
        self._set("milestones", ms)
        self._set("gamma", check_range(self._owner, "gamma", self.gamma, 0.0, 1.0, low_open=True))

    def _at(self, t: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, t)


@dataclass(frozen=True)
class Exponential(_Schedule):
    """Exponential decay, eq. (7.6): ``alpha_t = alpha_0 * beta ** t`` with ``beta`` in (0, 1].

    The chapter's usual value is ``beta = 0.96``. Equal to torch ``ExponentialLR(gamma=beta)``.
    """

    lr: float
    beta: float = 0.96
    _owner: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        self._check_lr()
        self._set("beta", check_range(self._owner, "beta", self.beta, 0.0, 1.0, low_open=True))

    def _at(self, t: int) -> float:
        return self.lr * self.beta**t


@dataclass(frozen=True)
class NaturalExponential(_Schedule):
    """Natural exponential decay, eq. (7.7): ``alpha_t = alpha_0 * exp(-beta * t)`` with ``beta >= 0``."""

    lr: float
    beta: float
    _owner: ClassVar[str] = "natural_exponential"

    def __post_init__(self) -> None:
        self._check_lr()
        self._set("beta", check_nonneg(self._owner, "beta", self.beta))

    def _at(self, t: int) -> float:
        return self.lr * math.exp(-self.beta * t)


@dataclass(frozen=True)
class InverseTime(_Schedule):
    """Inverse time decay, eq. (7.5): ``alpha_t = alpha_0 / (1 + beta * t)`` with ``beta >= 0``."""

    lr: float
    beta: float
    _owner: ClassVar[str] = "inverse_time"

    def __post_init__(self) -> None:
        self._check_lr()
        self._set("beta", check_nonneg(self._owner, "beta", self.beta))

    def _at(self, t: int) -> float:
        return self.lr / (1.0 + self.beta * t)


@dataclass(frozen=True)
class InverseSqrt(_Schedule):
    """Inverse square-root decay (section 7.2.3.3, Adam: ``alpha_t = alpha_0 / sqrt(t)``).

    ``alpha_0 / sqrt(t)`` is undefined at ``t = 0``; optreg holds the rate for the first ``warmup`` steps
    and decays it continuously afterwards::

        alpha_t = alpha_0 * sqrt(warmup / max(t, warmup))      (warmup >= 1)

    With the default ``warmup=1`` this is exactly the chapter's ``alpha_0 / sqrt(t)`` for every ``t >= 1``,
    and ``alpha_0`` at ``t = 0``. A larger ``warmup`` gives the "rsqrt" schedule of Vaswani et al. (2017,
    "Attention is all you need") and T5 with a constant hold (wrap it in :func:`warmup` for a linear ramp).
    Reference: Kingma & Ba (2015), "Adam", section 4.
    """

    lr: float
    warmup: int = 1
    _owner: ClassVar[str] = "inverse_sqrt"

    def __post_init__(self) -> None:
        self._check_lr()
        check_int(self._owner, "warmup", self.warmup, 1)

    def _at(self, t: int) -> float:
        return self.lr * math.sqrt(self.warmup / max(t, self.warmup))


@dataclass(frozen=True)
class LinearToFloor(_Schedule):
    """Linear decay to a floor (file 002; Goodfellow et al. 2016, "Deep Learning", eq. 8.14)::

        eps_k = (1 - a) eps_0 + a eps_tau,   a = k / tau,   for k <= tau;   eps_k = eps_tau for k > tau

    with ``eps_0 = lr``, ``eps_tau = final_lr`` (file 002: "usually 1% of the initial rate") and
    ``tau = decay_steps``. Requires ``0 <= final_lr <= lr``. Equal to torch
    ``LinearLR(start_factor=1, end_factor=final_lr / lr, total_iters=decay_steps)``.
    """

    lr: float
    final_lr: float
    decay_steps: int
    _owner: ClassVar[str] = "linear_to_floor"
    _horizon: ClassVar[str] = "decay_steps"  # the field a warm-up counts inside (see Warmup)

    def __post_init__(self) -> None:
        self._check_lr()
        self._set("final_lr", check_range(self._owner, "final_lr", self.final_lr, 0.0, self.lr))
        check_int(self._owner, "decay_steps", self.decay_steps, 1)

    def _at(self, t: int) -> float:
        if t >= self.decay_steps:
            return self.final_lr
        # (1 - a) eps_0 + a eps_tau written as eps_0 - a (eps_0 - eps_tau): the same number up to rounding,
        # but non-increasing in t bit for bit; the max() guards the last ulp above the floor
        a = t / self.decay_steps
        return max(self.lr - a * (self.lr - self.final_lr), self.final_lr)


@dataclass(frozen=True)
class Cosine(_Schedule):
    """Cosine annealing (Loshchilov & Hutter 2017, "SGDR"), the closed form of torch ``CosineAnnealingLR``::

        alpha_t = min_lr + (lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2      for t <= total_steps

    After ``total_steps`` the rate stays at ``min_lr`` (a decay never climbs back). torch's
    ``CosineAnnealingLR`` instead keeps following the cosine, so its rate rises again towards ``lr`` over
    the next ``total_steps`` steps (period ``2 * total_steps``); the two agree for ``t <= total_steps``.
    Requires ``0 <= min_lr <= lr``.
    """

    lr: float
    total_steps: int
    min_lr: float = 0.0
    _owner: ClassVar[str] = "cosine"
    _horizon: ClassVar[str] = "total_steps"  # the field a warm-up counts inside (see Warmup)

    def __post_init__(self) -> None:
        self._check_lr()
        check_int(self._owner, "total_steps", self.total_steps, 1)
        self._set("min_lr", check_range(self._owner, "min_lr", self.min_lr, 0.0, self.lr))

    def _at(self, t: int) -> float:
        if t >= self.total_steps:
            return self.min_lr
        # (1 + cos x) / 2 = cos(x / 2) ** 2, which keeps full relative precision near the end
        return self.min_lr + (self.lr - self.min_lr) * math.cos(0.5 * math.pi * t / self.total_steps) ** 2


@dataclass(frozen=True)
class Warmup(_Schedule):
    """A linear warm-up joined to a schedule (Goyal et al. 2017, "Accurate, large minibatch SGD").

    With ``w = warmup_steps`` and ``s`` the schedule after the warm-up::

        alpha_t = start_lr + (s(0) - start_lr) * t / w      for t < w
        alpha_t = s(t - w)                                 for t >= w

    so the ramp ends exactly where ``s`` starts (``s(0)`` is the schedule's ``lr``). **The warm-up counts
    inside a schedule that has a length**: for :func:`cosine` (``total_steps``) and
    :func:`linear_to_floor` (``decay_steps``) ``s`` is that schedule shortened by ``w`` steps, so
    ``warmup(cosine(lr, total_steps=1000), 100)`` ramps for 100 steps, anneals over the next 900 and
    reaches ``min_lr`` at step 1000, as ``get_cosine_schedule_with_warmup`` (Hugging Face) and optax's
    ``warmup_cosine_decay_schedule`` count it (``warmup_steps`` must then be < that length). A schedule
    without a length (constant, exponential, step decay, ...) simply starts after the warm-up:
    ``s = schedule``. ``warmup(constant(lr), n, start_lr=f * lr)`` equals torch
    ``LinearLR(start_factor=f, total_iters=n)``. ``warmup_steps=0`` means no warm-up.
    """

    schedule: Schedule
    warmup_steps: int
    start_lr: float = 0.0
    _after: Schedule = field(init=False, repr=False, compare=False)
    _owner: ClassVar[str] = "warmup"

    def __post_init__(self) -> None:
        schedule = _check_schedule(self._owner, self.schedule)
        self._set("schedule", schedule)
        w = check_int(self._owner, "warmup_steps", self.warmup_steps, 0)
        self._set("start_lr", check_nonneg(self._owner, "start_lr", self.start_lr))
        horizon = getattr(type(schedule), "_horizon", None)
        after = schedule
        if horizon is not None and w > 0:
            length = getattr(schedule, horizon)
            if w >= length:
                raise OptregValueError(
                    f"{self._owner}: warmup_steps must be < the schedule's {horizon} = {length} (the warm-up "
                    f"counts inside it), got {w}"
                )
            after = dataclasses.replace(schedule, **{horizon: length - w})
        self._set("_after", after)

    def _at(self, t: int) -> float:
        if t >= self.warmup_steps:
            return self._after(t - self.warmup_steps)
        peak = self._after(0)
        return self.start_lr + (peak - self.start_lr) * (t / self.warmup_steps)


@dataclass(frozen=True)
class PerEpoch(_Schedule):
    """Change the rate once per epoch (file 003): ``alpha_t = schedule(t // steps_per_epoch)``.

    For a trainer that counts iterations while the schedule is written in epochs.
    """

    schedule: Schedule
    steps_per_epoch: int
    _owner: ClassVar[str] = "per_epoch"

    def __post_init__(self) -> None:
        self._set("schedule", _check_schedule(self._owner, self.schedule))
        check_int(self._owner, "steps_per_epoch", self.steps_per_epoch, 1)

    def _at(self, t: int) -> float:
        return self.schedule(t // self.steps_per_epoch)


# --- the lowercase factories (the public spelling; each returns the dataclass above) -------------------


def constant(lr: float) -> Constant:
    """A constant rate ``lr``."""
    return Constant(lr)


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> StepDecay:
    """``lr * gamma ** (t // step_size)`` (torch ``StepLR``); see :class:`StepDecay`."""
    return StepDecay(lr, step_size, gamma)


def multistep(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Multistep:
    """``lr * gamma ** (number of milestones <= t)`` (torch ``MultiStepLR``); see :class:`Multistep`."""
    return Multistep(lr, milestones, gamma)  # type: ignore[arg-type]


def exponential(lr: float, beta: float = 0.96) -> Exponential:
    """Eq. (7.6): ``lr * beta ** t``; see :class:`Exponential`."""
    return Exponential(lr, beta)


def natural_exponential(lr: float, beta: float) -> NaturalExponential:
    """Eq. (7.7): ``lr * exp(-beta * t)``; see :class:`NaturalExponential`."""
    return NaturalExponential(lr, beta)


def inverse_time(lr: float, beta: float) -> InverseTime:
    """Eq. (7.5): ``lr / (1 + beta * t)``; see :class:`InverseTime`."""
    return InverseTime(lr, beta)


def inverse_sqrt(lr: float, warmup: int = 1) -> InverseSqrt:
    """7.2.3.3: ``lr * sqrt(warmup / max(t, warmup))``; ``lr / sqrt(t)`` for ``t >= 1`` by default."""
    return InverseSqrt(lr, warmup)


def linear_to_floor(lr: float, final_lr: float, decay_steps: int) -> LinearToFloor:
    """File 002: ``lr`` linearly down to ``final_lr`` over ``decay_steps``, then constant."""
    return LinearToFloor(lr, final_lr, decay_steps)


def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Cosine:
    """Cosine annealing from ``lr`` to ``min_lr`` over ``total_steps``, then ``min_lr`` (:class:`Cosine`)."""
    return Cosine(lr, total_steps, min_lr)


def warmup(schedule: Schedule | Mapping[str, Any], warmup_steps: int, start_lr: float = 0.0) -> Warmup:
    """Linear warm-up from ``start_lr`` to ``schedule(0)``, then the schedule; inside its length, if it has
    one (``cosine``'s ``total_steps``, ``linear_to_floor``'s ``decay_steps``; see :class:`Warmup`).

    ``schedule`` is a callable ``step -> lr`` or a mapping ``{"name": ..., **kwargs}`` for :func:`create`.
    """
    return Warmup(schedule, warmup_steps, start_lr)  # type: ignore[arg-type]


def per_epoch(schedule: Schedule | Mapping[str, Any], steps_per_epoch: int) -> PerEpoch:
    """``schedule(t // steps_per_epoch)``: a schedule written in epochs, driven by an iteration counter."""
    return PerEpoch(schedule, steps_per_epoch)  # type: ignore[arg-type]


# --- the stateful schedule -----------------------------------------------------------------------------


class ReduceOnPlateau:
    """Reduce the rate when a validation metric stops improving (torch ``ReduceLROnPlateau``).

    Fed one metric per evaluation with :meth:`step`, which returns the current rate. A metric is an
    improvement when it beats the best so far by the threshold: ``mode="min"`` with ``"rel"`` needs
    ``metric < best * (1 - threshold)``, with ``"abs"`` ``metric < best - threshold`` (``"max"``: ``>``,
    ``best * (1 + threshold)``, ``best + threshold``). After more than ``patience`` evaluations without
    improvement the rate becomes ``max(lr * factor, min_lr)`` (ignored when it would change by ``eps`` or
    less), then ``cooldown`` evaluations pass during which bad evaluations are not counted. A NaN metric is
    never an improvement (as in torch).

    ``state_dict()`` / ``load_state_dict()`` save and restore the counters as a plain dict of Python numbers,
    so a resumed run continues identically; the settings come from the constructor.
    """

    _owner = "reduce_on_plateau"
    _state_keys = ("lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def __init__(
        self,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        o = self._owner
        self.initial_lr = check_nonneg(o, "lr", lr)
        self.mode = check_choice(o, "mode", mode, ("min", "max"))
        self.factor = check_range(o, "factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_int(o, "patience", patience, 0)
        self.threshold = check_nonneg(o, "threshold", threshold)
        self.threshold_mode = check_choice(o, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int(o, "cooldown", cooldown, 0)
        self.min_lr = check_range(o, "min_lr", min_lr, 0.0, self.initial_lr)
        self.eps = check_nonneg(o, "eps", eps)
        self._lr = self.initial_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return self._lr

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float) -> bool:
        best, th = self.best, self.threshold
        if self.mode == "min":
            return a < (best * (1.0 - th) if self.threshold_mode == "rel" else best - th)
        return a > (best * (1.0 + th) if self.threshold_mode == "rel" else best + th)

    def step(self, metric: float) -> float:
        """Feed one validation metric (a number or a 0-d tensor); returns the learning rate to use next."""
        try:
            current = float(metric)
        except (TypeError, ValueError) as exc:
            raise OptregTypeError(f"{self._owner}: metric must be a real number, got {metric!r}") from exc
        if isinstance(metric, bool):
            raise OptregTypeError(f"{self._owner}: metric must be a real number, got {metric!r}")
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad evaluations in cooldown are ignored
        if self.num_bad_epochs > self.patience:
            new_lr = max(self._lr * self.factor, self.min_lr)
            if self._lr - new_lr > self.eps:
                self._lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self._lr

    def state_dict(self) -> dict[str, float | int]:
        """The state as a plain dict of Python numbers (the keys of ``_state_keys``)."""
        return {
            "lr": self._lr,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (validated; unknown or missing keys are refused)."""
        o = f"{self._owner}.load_state_dict"
        if not isinstance(state, Mapping):
            raise OptregTypeError(f"{o}: state must be a mapping, got {type(state).__name__}")
        keys, expected = set(map(str, state)), set(self._state_keys)
        if keys != expected:
            raise OptregValueError(
                f"{o}: keys must be {sorted(expected)}, got {sorted(keys)} "
                f"(missing {sorted(expected - keys)}, unknown {sorted(keys - expected)})"
            )
        lr = check_nonneg(o, "lr", state["lr"])
        best = state["best"]
        if isinstance(best, bool) or not isinstance(best, Real) or math.isnan(best):
            raise OptregValueError(f"{o}: best must be a real number or +-inf, got {best!r}")
        bad, cool, last = (check_int(o, k, state[k], 0) for k in self._state_keys[2:])
        self._lr, self.best = lr, float(best)
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = bad, cool, last

    def __repr__(self) -> str:
        return (
            f"ReduceOnPlateau(lr={self._lr!r}, mode={self.mode!r}, factor={self.factor!r}, "
            f"patience={self.patience!r}, threshold={self.threshold!r}, "
            f"threshold_mode={self.threshold_mode!r}, "
            f"cooldown={self.cooldown!r}, min_lr={self.min_lr!r}, eps={self.eps!r})"
        )


# --- bridges to torch.optim.lr_scheduler --------------------------------------------------------------


class ScheduleLR(LRScheduler):
    """A ``torch.optim.lr_scheduler.LRScheduler`` that sets every param group's lr to ``schedule(step)``.

    The torch way to drive any optimizer with any optreg schedule (``warmup(...)`` included, whose rate
    at step 0 is 0): ``sched = ScheduleLR(opt, schedule)``, then ``opt.step(); sched.step()`` per update,
    exactly like torch's own schedulers. The optimizer's own lr is replaced from the start (it is kept as
    the groups' ``initial_lr``), so the rates are those of the manual loop
    ``group["lr"] = schedule(step)`` whatever lr the optimizer was built with. ``state_dict()`` /
    ``load_state_dict()`` are torch's (the schedule is a picklable dataclass and travels with them).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule | Mapping[str, Any], last_epoch: int = -1):
        self.schedule = _check_schedule("ScheduleLR", schedule)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [self.schedule(self.last_epoch)] * len(self.optimizer.param_groups)


@dataclass(frozen=True)
class Multiplier:
    """``lr_lambda(step) = schedule(step) / base_lr`` for ``torch.optim.lr_scheduler.LambdaLR``.

    LambdaLR sets each group's rate to ``initial_lr * lr_lambda(step)`` (``initial_lr``: the optimizer's lr
    when LambdaLR was built), so ``base_lr`` must be that lr for the group's rate to equal
    ``schedule(step)``; any other gives the same shape scaled by ``initial_lr / base_lr``. ``base_lr``
    defaults to ``schedule(0)`` (then the optimizer's lr must be ``schedule(0)``, and ``schedule(0)`` must
    be > 0: not so for a warm-up from 0; give ``base_lr`` or use :class:`ScheduleLR`, which needs neither).
    Picklable, and its state survives ``LambdaLR.state_dict()`` / ``load_state_dict()``.
    """

    schedule: Schedule
    base_lr: float | None = None
    lr0: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        schedule = _check_schedule("as_multiplier", self.schedule)
        object.__setattr__(self, "schedule", schedule)
        if self.base_lr is None:
            lr0 = check_number("as_multiplier", "schedule(0)", schedule(0))
            if lr0 <= 0.0:
                raise OptregValueError(
                    f"as_multiplier: schedule(0) must be > 0 to divide by it, got {lr0!r} (give base_lr, the "
                    "optimizer's lr, or use ScheduleLR)"
                )
        else:
            lr0 = check_range("as_multiplier", "base_lr", self.base_lr, 0.0, math.inf, low_open=True, high_open=True)
        object.__setattr__(self, "lr0", lr0)

    def __call__(self, step: int) -> float:
        return float(self.schedule(step)) / self.lr0


def as_multiplier(schedule: Schedule | Mapping[str, Any], base_lr: float | None = None) -> Multiplier:
    """A ``LambdaLR`` multiplier for ``schedule``: ``schedule(step) / base_lr``, where ``base_lr`` must be
    the optimizer's lr (default ``schedule(0)``); see :class:`Multiplier`. :class:`ScheduleLR` needs no
    such care.

    >>> import torch
    >>> s = exponential(0.1, 0.5)
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=s(0))
    >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, as_multiplier(s))
    >>> opt.step(); sched.step(); opt.param_groups[0]["lr"] == s(1)
    True
    """
    return Multiplier(schedule, base_lr)  # type: ignore[arg-type]


# --- registry -------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Any]] = {
    "constant": constant,
    "cosine": cosine,
    "exponential": exponential,
    "inverse_sqrt": inverse_sqrt,
    "inverse_time": inverse_time,
    "linear_to_floor": linear_to_floor,
    "multistep": multistep,
    "natural_exponential": natural_exponential,
    "per_epoch": per_epoch,
    "reduce_on_plateau": ReduceOnPlateau,
    "step_decay": step_decay,
    "warmup": warmup,
}


def available() -> list[str]:
    """The names :func:`create` accepts (``"reduce_on_plateau"`` is the stateful :class:`ReduceOnPlateau`)."""
    return sorted(_REGISTRY)


def create(name: str, **kwargs: Any) -> Any:
    """Build a schedule by name, e.g. ``create("cosine", lr=0.1, total_steps=1000)``.

    ``warmup`` and ``per_epoch`` take ``schedule`` as a callable or as a mapping ``{"name": ..., **kwargs}``.
    An unknown name raises :class:`OptregValueError`, an unknown or missing keyword :class:`OptregTypeError`;
    both list what is allowed.
    """
    check_choice("schedules.create", "name", name, available())
    factory = _REGISTRY[name]
    params = inspect.signature(factory).parameters
    allowed = list(params)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise OptregTypeError(
            f"schedules.create: {name} got unknown keyword(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise OptregTypeError(
            f"schedules.create: {name} needs keyword(s) {', '.join(missing)}; allowed: {', '.join(allowed)}"
        )
    return factory(**kwargs)
