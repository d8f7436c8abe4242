"""Callbacks: how the trainer is watched and steered without touching its loop.

A callback overrides any of four hooks: ``on_fit_start(trainer)``, ``on_step_end(trainer, record)``
(after every logged update), ``on_epoch_end(trainer, record)`` and ``on_fit_end(trainer)``. It may set
``trainer.stop = True`` to end the run, change the optimizer's param groups, or read ``trainer.history``.
A callback with state implements ``state_dict`` / ``load_state_dict`` so that checkpoints resume it.
Callbacks run in order of their ``order`` attribute (stable), so :class:`Checkpoint` (order 100) saves the
state after every other callback has updated it.

In data-parallel training (:mod:`optreg.train.distributed`) every rank has the same records, so callbacks
that steer the run (early stopping, reduce-on-plateau) run on every rank and decide alike. A callback
with ``rank_zero_only = True`` (one that only writes or prints: :class:`Progress`, the lab's recorder)
runs on rank 0 alone; any callback can read ``trainer.rank`` and ``trainer.world_size``
(:class:`Checkpoint` runs everywhere, since gathering the state is a collective, writes on rank 0, and
waits until it is written).

The engine never prints: :class:`Progress` and :class:`Lambda` hand the records to the caller.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optreg._checks import check_choice, check_int, check_nonneg, check_range
from optreg.errors import OptregTypeError, OptregValueError
from optreg.train.checkpoint import save_checkpoint

if TYPE_CHECKING:
    from optreg.train.trainer import Trainer

__all__ = ["CRITERIA", "MONITORS", "Callback", "Checkpoint", "EarlyStopping", "Lambda", "Progress", "ReduceLROnPlateau"]

#: Epoch-record fields a callback can monitor.
MONITORS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


class Callback:
    """Base class: every hook does nothing, the state is empty."""

    order: int = 0
    #: Run on rank 0 only in data-parallel training (for callbacks that only write or print).
    rank_zero_only: bool = False

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (before a checkpoint's state is restored)."""

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after every logged update with its iteration record."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Called after every epoch with its epoch record (``trainer.epoch`` already counts it)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when the run ends normally (not after a divergence)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (nothing to restore here)."""


def _check_monitor(owner: str, monitor: str, mode: str) -> None:
    check_choice(owner, "monitor", monitor, MONITORS)
    check_choice(owner, "mode", mode, ("min", "max"))


def _require(owner: str, monitor: str, trainer: Trainer) -> None:
    """At fit start: the monitored metric must be measured in this run."""
    if not trainer.measures(monitor):
        why = "fit() got no validation split" if monitor.startswith("val_") else "accuracy is not measured"
        raise OptregValueError(f"{owner}: monitor {monitor!r} has no value in this run ({why})")


#: Early-stopping criteria: a patience count, or Prechelt's (1998) GL, PQ and UP.
CRITERIA = ("patience", "gl", "pq", "up")


class EarlyStopping(Callback):
    """Stop when the monitored epoch metric stops improving (section 7.7.3).

    The validation error stands in for the expected error; training stops when it no longer decreases.
    Which rule decides "no longer" is task dependent (the chapter, citing Prechelt 1998, "Early stopping - but
    when?"); ``criterion`` picks one:

    ``"patience"`` (default): an epoch improves on the best so far when ``value < best - min_delta`` (mode
    ``"min"``) or ``value > best + min_delta`` (mode ``"max"``); after ``patience`` epochs in a row without
    improvement the run stops (``patience=0``: at the first one).

    Prechelt's criteria, for an error to minimize (mode ``"min"``, a monitored value >= 0). With ``E_va(t)``
    the monitored value after epoch ``t`` (1-based), ``E_opt(t) = min_{t' <= t} E_va(t')``, and *strips* of
    ``strip`` = k epochs (epochs ``n+1 .. n+k`` with ``n`` divisible by ``k``):

    - ``"gl"`` (GL_alpha): the generalization loss ``GL(t) = 100 (E_va(t) / E_opt(t) - 1)``; stop after the
      first epoch with ``GL(t) > alpha``.
    - ``"pq"`` (PQ_alpha): the training progress over the strip ending at ``t``,
      ``P_k(t) = 1000 (sum_{t'=t-k+1..t} E_tr(t') / (k min_{t'=t-k+1..t} E_tr(t')) - 1)`` with ``E_tr`` the
      ``train_monitor`` field; stop after the first end-of-strip epoch with ``GL(t) / P_k(t) > alpha``.
    - ``"up"`` (UP_s): stop after the end-of-strip epoch ``t`` when the validation error has gone up in
      ``strips`` = s successive strips, ``E_va(t) > E_va(t - k) > ... > E_va(t - s k)`` compared at strip ends
      (UP_1: the first end-of-strip epoch with ``E_va(t) > E_va(t - k)``).

    GL is evaluated every epoch, PQ and UP at the ends of strips (Prechelt's definitions; his experiments also
    measured ``E_va`` only at strip ends). ``patience`` and ``min_delta`` belong to ``"patience"`` only. The last
    computed ``gl``, ``progress`` (``P_k``) and ``ups`` (successive strips up) are attributes.

    With ``restore_best`` the model gets the weights of the best epoch back when the run ends.
    Attributes: ``best``, ``best_epoch``, ``stopped_epoch`` (``None`` if it never stopped the run).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
        *,
        criterion: str = "patience",
        alpha: float | None = None,
        strips: int | None = None,
        strip: int = 5,
        train_monitor: str = "train_loss",
    ) -> None:
        owner = "early_stopping"
        _check_monitor(owner, monitor, mode)
        self.monitor, self.mode = monitor, mode
        self.patience = check_int(owner, "patience", patience, 0)
        self.min_delta = check_nonneg(owner, "min_delta", min_delta)
        self.restore_best = bool(restore_best)
        self.criterion = check_choice(owner, "criterion", criterion, CRITERIA)
        self.strip = check_int(owner, "strip", strip, 1)
        self.train_monitor = check_choice(owner, "train_monitor", train_monitor, MONITORS)
        self.alpha = self.strips = None
        if criterion != "patience" and mode != "min":
            raise OptregValueError(
                f"{owner}: criterion {criterion!r} is defined for an error to minimize, needs mode 'min', got {mode!r}"
            )
        if criterion in ("gl", "pq"):
            if alpha is None:
                raise OptregValueError(f"{owner}: criterion {criterion!r} needs alpha (a threshold >= 0), got None")
            self.alpha = check_nonneg(owner, "alpha", alpha)
        elif alpha is not None:
            raise OptregValueError(f"{owner}: alpha applies to criteria 'gl' and 'pq', not {criterion!r}")
        if criterion == "up":
            if strips is None:
                raise OptregValueError(f"{owner}: criterion 'up' needs strips (s, an integer >= 1), got None")
            self.strips = check_int(owner, "strips", strips, 1)
        elif strips is not None:
            raise OptregValueError(f"{owner}: strips applies to criterion 'up', not {criterion!r}")
        self._clear()

    def _clear(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.best_state: dict[str, Any] | None = None
        # Prechelt's criteria: the current strip's training errors, the previous strip end's validation error
        self.gl: float | None = None
        self.progress: float | None = None
        self.ups = 0
        self.strip_train: list[float] = []
        self.previous: float | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        _require("early_stopping", self.monitor, trainer)
        if self.criterion == "pq":
            _require("early_stopping", self.train_monitor, trainer)
        self._clear()

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _keep_best(self, trainer: Trainer, value: float, epoch: int) -> None:
        self.best, self.best_epoch, self.wait = value, epoch, 0
        if self.restore_best:
            self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        value = record[self.monitor]
        if self.criterion != "patience":
            if self._prechelt_stops(trainer, record, value):
                self.stopped_epoch = record["epoch"]
                trainer.stop = True
            return
        if self._improves(value):
            self._keep_best(trainer, value, record["epoch"])
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = record["epoch"]
            trainer.stop = True

    def _prechelt_stops(self, trainer: Trainer, record: dict[str, Any], value: float) -> bool:
        """Whether GL_alpha, PQ_alpha or UP_s (Prechelt 1998, sec. 2.2) stops after this epoch."""
        if not value >= 0:
            raise OptregValueError(
                f"early_stopping: criterion {self.criterion!r} needs an error >= 0, got {self.monitor} = {value!r}"
            )
        if value < self.best:
            self._keep_best(trainer, value, record["epoch"])
        self.gl = _ratio_minus_one(value, self.best, 100.0)
        if self.criterion == "gl":
            return self.gl > self.alpha
        if self.criterion == "pq":
            self.strip_train = [*self.strip_train, record[self.train_monitor]][-self.strip :]
        if (record["epoch"] + 1) % self.strip:
            return False
        if self.criterion == "pq":
            window = self.strip_train
            self.progress = _ratio_minus_one(sum(window) / len(window), min(window), 1000.0)
            if self.progress == 0:
                return self.gl > 0
            return self.gl / self.progress > self.alpha
        self.ups = self.ups + 1 if self.previous is not None and value > self.previous else 0
        self.previous = value
        return self.ups >= self.strips

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        keys = ("best", "best_epoch", "stopped_epoch", "wait", "best_state")
        if self.criterion != "patience":
            keys += ("gl", "progress", "ups", "strip_train", "previous")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def _ratio_minus_one(value: float, reference: float, scale: float) -> float:
    """``scale * (value / reference - 1)`` for ``value >= reference >= 0`` (0 when both are 0, inf for 0 < value)."""
    if reference > 0:
        return scale * (value / reference - 1.0)
    return 0.0 if value == 0 else math.inf


class ReduceLROnPlateau(Callback):
    """Drive :class:`optreg.schedules.ReduceOnPlateau` with an epoch metric: after every epoch it is fed
    ``record[monitor]`` and the rate it returns becomes the lr of every param group.

    The starting rate is the optimizer's first param group's lr at fit start. The arguments are those of
    ``ReduceOnPlateau`` (and of ``torch.optim.lr_scheduler.ReduceLROnPlateau``). It cannot be combined
    with a trainer ``schedule``: both would set the lr.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        owner = "reduce_lr_on_plateau"
        _check_monitor(owner, monitor, mode)
        self.monitor = monitor
        self.options = {
            "mode": mode,
            "factor": check_range(owner, "factor", factor, 0.0, 1.0, low_open=True, high_open=True),
            "patience": check_int(owner, "patience", patience, 0),
            "threshold": check_nonneg(owner, "threshold", threshold),
            "threshold_mode": check_choice(owner, "threshold_mode", threshold_mode, ("rel", "abs")),
            "cooldown": check_int(owner, "cooldown", cooldown, 0),
            "min_lr": check_nonneg(owner, "min_lr", min_lr),
        }
        self.plateau: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        _require("reduce_lr_on_plateau", self.monitor, trainer)
        if trainer.schedule is not None:
            raise OptregValueError(
                "reduce_lr_on_plateau: the trainer also has a schedule; both would set the lr, use one"
            )
        from optreg.schedules import ReduceOnPlateau  # a component; imported when first used

        self.plateau = ReduceOnPlateau(trainer.lr, **self.options)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        lr = float(self.plateau.step(record[self.monitor]))
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])


class Checkpoint(Callback):
    """Save the whole training state to ``path`` every ``every`` epochs and after the last epoch.

    ``path`` may contain ``{epoch}`` (the number of epochs done) to keep one file per save, e.g.
    ``"runs/ckpt-{epoch:03d}.pt"``; otherwise the file is replaced atomically each time. Runs after every
    other callback (``order = 100``) so the saved state includes theirs. ``last`` is the last path written.
    In data-parallel training every rank gathers the state (a collective) and rank 0 alone writes it.
    """

    order = 100

    def __init__(self, path: str | os.PathLike[str], every: int = 1) -> None:
        self.path = os.fspath(path)
        if not self.path:
            raise OptregValueError("checkpoint: path must be a file path, got ''")
        self.every = check_int("checkpoint", "every", every, 1)
        self.last: str | None = None

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.epoch % self.every == 0 or trainer.epoch >= trainer.epochs or trainer.stop:
            state, path = trainer.state_dict(), self.path.format(epoch=trainer.epoch)
            self.last = os.fspath(save_checkpoint(state, path)) if trainer.rank == 0 else path
            if trainer.world_size > 1:  # every rank may read the file once the callback returns
                from optreg.train.distributed import barrier

                barrier()


class Lambda(Callback):
    """A callback from plain functions: ``Lambda(on_epoch_end=lambda trainer, record: ...)``."""

    def __init__(
        self,
        *,
        on_fit_start: Callable[[Trainer], None] | None = None,
        on_step_end: Callable[[Trainer, dict[str, Any]], None] | None = None,
        on_epoch_end: Callable[[Trainer, dict[str, Any]], None] | None = None,
        on_fit_end: Callable[[Trainer], None] | None = None,
    ) -> None:
        self._hooks = {
            "on_fit_start": on_fit_start,
            "on_step_end": on_step_end,
            "on_epoch_end": on_epoch_end,
            "on_fit_end": on_fit_end,
        }
        for name, fn in self._hooks.items():
            if fn is not None and not callable(fn):
                raise OptregTypeError(f"lambda: {name} must be callable, got {fn!r}")

    def on_fit_start(self, trainer: Trainer) -> None:
        if self._hooks["on_fit_start"] is not None:
            self._hooks["on_fit_start"](trainer)

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._hooks["on_step_end"] is not None:
            self._hooks["on_step_end"](trainer, record)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._hooks["on_epoch_end"] is not None:
            self._hooks["on_epoch_end"](trainer, record)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._hooks["on_fit_end"] is not None:
            self._hooks["on_fit_end"](trainer)


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line for an epoch record: ``epoch 3/10  train_loss 0.4123  ...  lr 0.001  0.12s``."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}"]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        if record[key] is not None:
            parts.append(f"{key} {record[key]:.4f}")
    parts.append(f"lr {record['lr']:.3g}")
    parts.append(f"{record['time']:.2f}s")
    return "  ".join(parts)


class Progress(Callback):
    """Hand a one-line summary of every epoch (:func:`format_epoch`) to ``write`` (e.g. the CLI's console);
    on rank 0 only in data-parallel training."""

    rank_zero_only = True

    def __init__(self, write: Callable[[str], None]) -> None:
        if not callable(write):
            raise OptregTypeError(f"progress: write must be callable, got {write!r}")
        self.write = write

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.write(format_epoch(record, trainer.epochs))
