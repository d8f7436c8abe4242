"""The cost of a learning-rate schedule: one optimizer step with a constant lr against one whose lr changes.

Adam and SGD with momentum on the parameters of a Linear(64, 10), eager and compiled, one thread, CPU. Both
steps get their lr the way the Trainer's ``schedule=`` sets it (``group["lr"] = float(lr)`` for every group
before every update, as torch's LambdaLR does too): the scheduled step the next value of
``schedules.exponential(beta=0.9999)`` (a new value every step, evaluated beforehand), the constant step
the same value again, alternately on one optimizer (see ``_Lr``). Each timed call is that write plus
``step()``. The gradients stay fixed, so only the optimizer is measured.

Target: scheduled / constant <= 1.02, eager and compiled; and no recompilation (the ``recompiles`` column
counts graphs compiled during the timed steps). torch.optim.Adam is timed the same way as a yardstick of
the noise (torch rebuilds nothing either way). Medians over interleaved repetitions (bench_optim's ``_race``).

One thread: no op runs in parallel on tensors this small, and on a shared host a second OpenMP thread makes
the step wait at a barrier for a descheduled thread (measured: Adam's median step 5.9 ms with 2 threads on a
loaded host, 0.2 ms with one).
"""

from __future__ import annotations

import types

import torch

import optreg.optim as oo
from benchmarks._common import one_thread
from benchmarks.bench_optim import _race
from optreg import schedules

LR = 1e-3
# name: (optreg alias, its hyperparameters, torch class and hyperparameters for the yardstick row, or None)
METHODS = {
    "adam": ("adam", {}, (torch.optim.Adam, {})),
    "sgd-momentum": ("momentum", {"momentum": 0.9}, None),
}


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 10)
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return params


STEPS = 1 << 16  # the schedule's values, computed beforehand (the schedule's own cost is not the optimizer's)


class _Lr:
    """One optimizer seen two ways, as the Trainer drives it: before each ``step()`` the lr is written into every
    group. ``scheduled.step()`` writes the schedule's next value (a new lr), ``constant.step()`` the current one
    again (an unchanged lr). Timing both on the *same* optimizer (same tensors, same compiled code) leaves
    only the difference between a changed and an unchanged lr: two instances differ by a few percent by
    themselves (memory placement), more than the effect measured here."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        schedule = schedules.exponential(LR, 0.9999)  # a new value every step
        self.opt, self.lrs, self.t = opt, [float(schedule(t)) for t in range(STEPS)], 0
        self.scheduled = types.SimpleNamespace(step=lambda: self._step(1))
        self.constant = types.SimpleNamespace(step=lambda: self._step(0))

    def _step(self, advance: int) -> None:
        self.t += advance
        lr = self.lrs[self.t % STEPS]
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _run(quick: bool) -> dict:
    reps = 400 if quick else 3000
    rows = []
    for method, (name, hp, peer) in METHODS.items():
        for compile in (False, True):
            lr = _Lr(oo.create(name, _params(), compile=compile, lr=LR, **hp))
            for _ in range(3):  # the first steps compile, and verify the chain that takes lr as a factor
                lr.scheduled.step()
            before = _graphs()
            t_sched, t_const, ratio, spread = _race(lr.scheduled, lr.constant, reps)
            rows.append([
                method, "compile=True" if compile else "eager", f"{t_const * 1e3:.1f}", f"{t_sched * 1e3:.1f}",
                f"{ratio:.3f}", spread, "<= 1.02", str(_graphs() - before) if compile else "",
            ])
        if peer is not None:
            cls, thp = peer
            lr = _Lr(cls(_params(), lr=LR, foreach=False, **thp))
            t_sched, t_const, ratio, spread = _race(lr.scheduled, lr.constant, reps)
            rows.append([f"{method} (torch.optim)", "for-loop", f"{t_const * 1e3:.1f}", f"{t_sched * 1e3:.1f}",
                         f"{ratio:.3f}", spread, "(noise)", ""])
    notes = (
        "Linear(64, 10): a 10x64 weight and a bias, float32, one thread. One timed call: the lr written into every "
        "group, then step(). Ratio: median over interleaved pairs of scheduled / constant; range: the medians "
        "of 3 rounds. A scheduled step reuses the chain built with lr = 1 and passes lr as the factor of the "
        "parameter write (optimizer.py, 'Learning-rate schedules'); before that change it rebuilt the chain "
        "every step. Timings of a few tens of microseconds: on a busy host they move by several percent."
    )
    return {
        "title": "Learning-rate schedule: scheduled step vs constant-lr step (Linear(64, 10))",
        "columns": ["method", "path", "constant us", "scheduled us", "ratio", "range", "target", "recompiles"],
        "rows": rows,
        "notes": notes,
    }


run = one_thread(_run)
