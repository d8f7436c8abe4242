r"""The ill-conditioning monitor (file 002, after Goodfellow et al., sec. 8.2.1).

A gradient step :math:`-\epsilon g` changes the loss, to second order, by

.. math:: L(\theta - \epsilon g) - L(\theta) \approx -\epsilon\, g^\top g + \tfrac12 \epsilon^2\, g^\top H g .

Ill-conditioning shows when the curvature term outgrows the gradient term,
:math:`\tfrac12 \epsilon^2 g^\top H g > \epsilon g^\top g`: the step then *raises* the loss although the gradient
is large. The monitor records both terms along training: a steadily growing :math:`\lVert g\rVert^2` while the
loss stalls is the symptom the notes describe, and ``ratio > 1`` says the learning rate is too large for the
curvature in the gradient's direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from optreg._checks import check_int
from optreg.diagnostics.hessian import HessianOperator
from optreg.errors import OptregTypeError
from optreg.train.callbacks import Callback

if TYPE_CHECKING:
    from optreg.train.trainer import Trainer


class ConditioningMonitor(Callback):
    r"""A trainer callback logging :math:`g^\top g`, :math:`g^\top H g` and their balance every ``every`` steps.

    Args:
        loss_fn: ``loss_fn(output, y)``, the mean loss (the trainer's).
        data: a fixed probe batch ``(x, y)`` (or an iterable of batches) on which both terms are measured, so that
            values along training are comparable (not the noisy training batch).
        every: measure after every ``every``-th update.

    ``records`` holds one dict per measurement: ``step``, ``lr`` (the first group's), ``grad_sq`` (:math:`g^\top g`),
    ``curvature`` (:math:`g^\top H g`), ``first_order`` (:math:`\epsilon g^\top g`), ``second_order``
    (:math:`\tfrac12\epsilon^2 g^\top H g`) and ``ratio`` (second / first; > 1: the step along -g raises the loss).
    """

    def __init__(self, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Any, *, every: int = 10) -> None:
        if not callable(loss_fn):
            raise OptregTypeError(f"ConditioningMonitor: loss_fn must be callable, got {loss_fn!r}")
        self.loss_fn, self.data = loss_fn, data
        self.every = check_int("ConditioningMonitor", "every", every, 1)
        self.records: list[dict[str, float]] = []

    def measure(self, model: torch.nn.Module, lr: float) -> dict[str, float]:
        """Both terms at the model's current parameters, for a step of size ``lr``."""
        op = HessianOperator(model, self.loss_fn, self.data)
        g = op.gradient
        grad_sq = float(g @ g)
        curvature = float(g @ op.matvec(g))
        first, second = lr * grad_sq, 0.5 * lr * lr * curvature
        return {
            "lr": lr, "grad_sq": grad_sq, "curvature": curvature, "first_order": first, "second_order": second,
            "ratio": second / first if first > 0 else float("inf"),
        }

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.step % self.every:
            return
        lr = float(trainer.optimizer.param_groups[0]["lr"])
        self.records.append({"step": trainer.step, **self.measure(trainer.model, lr)})

    def state_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [dict(r) for r in state.get("records", [])]
