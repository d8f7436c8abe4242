r"""Learning-rate decay side by side (section 7.2.2).

The chapter: the rate should be large at first, to make progress fast, and small near the optimum, to
stop oscillating around it. This experiment trains the same MLP with the same optimizer (SGD with
momentum :math:`\rho = 0.9`, eq. 7.14) from the same initial weights under each schedule of
:mod:`optreg.schedules`, all starting at :math:`\alpha_0` and spanning the same :math:`T` iterations:

=====================  =====================================================================================
``constant``           :math:`\alpha_t = \alpha_0`
``step``               :math:`\alpha_0 \gamma^{\lfloor t / s \rfloor}`, :math:`\gamma = 0.1`, :math:`s = T/3`
``exponential``        eq. (7.6), :math:`\alpha_0 \beta^{e}`, the chapter's :math:`\beta = 0.96` per epoch
                       :math:`e = \lfloor t / \text{steps per epoch} \rfloor`
``natural_exponential`` eq. (7.7), :math:`\alpha_0 e^{-\beta t}`, :math:`\beta = \ln(100) / T` (1 % at the end)
``inverse_time``       eq. (7.5), :math:`\alpha_0 / (1 + \beta t)`, :math:`\beta = 9 / T` (10 % at the end)
``inverse_sqrt``       :math:`\alpha_0 \sqrt{w / \max(t, w)}` (7.2.3.3's :math:`1/\sqrt t`, held for the
                       first epoch :math:`w`)
``linear_to_floor``    file 002: linear from :math:`\alpha_0` to :math:`\alpha_0 / 100` over :math:`T`
``cosine``             :math:`\frac{\alpha_0}{2}(1 + \cos(\pi t / T))` (Loshchilov & Hutter 2017)
``warmup_cosine``      a linear warm-up over the first 10 % of the steps, then cosine (Goyal et al. 2017)
=====================  =====================================================================================

The chapter's claim that decaying the rate lets the iterates settle lower than a constant rate is checked
for each schedule (a row of ``Result.claims``: ``optreg.experiments.base.claim``); where a schedule ends
with a higher training loss than the constant rate, the notes say that the claim does not hold there.

Eqs. (7.6) and (7.7) are one family (:math:`\beta_{7.6} = e^{-\beta_{7.7}}`); they differ here in the
chapter's usual per-epoch :math:`\beta = 0.96` for (7.6) and a per-iteration rate reaching 1 % for (7.7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from optreg import schedules as S
from optreg._checks import check_int, check_positive
from optreg.experiments.base import (
    Context,
    Result,
    RunHistory,
    claim,
    curves,
    diverged_note,
    exceeds,
    mean_std,
    register,
)
from optreg.report import plots

__all__ = ["SCHEDULES", "decay_claims", "make_schedules", "run", "training_panels"]

#: The schedules compared, in the order of the figures and the table.
SCHEDULES = (
    "constant",
    "step",
    "exponential",
    "natural_exponential",
    "inverse_time",
    "inverse_sqrt",
    "linear_to_floor",
    "cosine",
    "warmup_cosine",
)

MODEL = {"kind": "mlp", "hidden": [128], "activation": "relu"}
LR, MOMENTUM, BATCH_SIZE = 0.3, 0.9, 32


def make_schedules(lr: float, total_steps: int, steps_per_epoch: int) -> dict[str, Callable[[int], float]]:
    """The schedules of the module docstring for a run of ``total_steps`` iterations, starting at ``lr``."""
    lr = check_positive("lr-decay", "lr", lr)
    t = check_int("lr-decay", "total_steps", total_steps, 2)
    spe = check_int("lr-decay", "steps_per_epoch", steps_per_epoch, 1)
    warm = max(1, t // 10)
    return {
        "constant": S.constant(lr),
        "step": S.step_decay(lr, step_size=max(1, t // 3), gamma=0.1),
        "exponential": S.per_epoch(S.exponential(lr, beta=0.96), spe),
        "natural_exponential": S.natural_exponential(lr, beta=math.log(100.0) / t),
        "inverse_time": S.inverse_time(lr, beta=9.0 / t),
        "inverse_sqrt": S.inverse_sqrt(lr, warmup=spe),
        "linear_to_floor": S.linear_to_floor(lr, final_lr=lr / 100.0, decay_steps=t),
        "cosine": S.cosine(lr, total_steps=t),
        "warmup_cosine": S.warmup(S.cosine(lr, total_steps=t), warmup_steps=warm),  # the warm-up counts inside t
    }


def training_panels(
    runs: Mapping[str, Sequence[RunHistory]], epochs: int, *, smooth: int, prefix: str = ""
) -> list[plots.Panel]:
    """The two panels of a training comparison: the mini-batch loss per iteration (moving average over
    ``smooth`` iterations, log scale) and the validation accuracy per epoch, one curve (mean ± sd over the
    seeds) per label; diverged runs are left out (:func:`optreg.experiments.base.curves`), and each panel
    says which (:func:`~optreg.experiments.base.diverged_note`)."""
    note = diverged_note(runs)
    return [
        plots.Panel(
            curves(runs, "loss"),
            title=f"{prefix}training loss (moving average over {smooth} iterations)",
            xlabel="iteration",
            ylabel="cross-entropy",
            smooth=smooth,
            log_y=True,
            note=note,
        ),
        plots.Panel(
            curves(runs, "val_accuracy", "epochs"),
            x=list(range(1, epochs + 1)),
            title=f"{prefix}validation accuracy",
            xlabel="epoch",
            ylabel="accuracy",
            integer_x=True,
            note=note,
        ),
    ]


@register(
    "lr-decay",
    title="Learning-rate decay schedules",
    figure="section 7.2.2",
    help="constant, step, exponential (7.6), natural exp. (7.7), inverse time (7.5), 1/sqrt, linear, cosine, warm-up",
)
def run(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=2)
    epochs = ctx.epoch_count(default=15, quick=2)
    histories: dict[str, list[RunHistory]] = {name: [] for name in SCHEDULES}
    total = steps_per_epoch = 0
    built: dict[str, Callable[[int], float]] = {}
    ctx.expect_runs(len(seeds) * len(SCHEDULES))
    for seed in seeds:
        data = ctx.load_data(seed)
        steps_per_epoch = math.ceil(len(data.train.y) / BATCH_SIZE)
        total = epochs * steps_per_epoch
        built = make_schedules(LR, total, steps_per_epoch)
        for name, schedule in built.items():
            histories[name].append(
                ctx.train(
                    name,
                    model_spec=MODEL,
                    optimizer="momentum",
                    hparams={"lr": LR, "momentum": MOMENTUM},
                    seed=seed,
                    batch_size=BATCH_SIZE,
                    epochs=epochs,
                    schedule=schedule,
                    data=data,
                )
            )

    table: list[dict[str, Any]] = []
    for name, runs in histories.items():
        ok = [h for h in runs if not h.diverged]
        loss, loss_sd = mean_std(h.final("train_loss") for h in ok)
        val, val_sd = mean_std(h.final("val_accuracy") for h in ok)
        test, test_sd = mean_std(h.test_accuracy for h in ok)
        table.append(
            {
                "schedule": name,
                "lr_start": built[name](0),
                "lr_end": built[name](total - 1),
                "final_train_loss": loss,
                "final_train_loss_sd": loss_sd,
                "val_accuracy": val,
                "val_accuracy_sd": val_sd,
                "test_accuracy": test,
                "test_accuracy_sd": test_sd,
                "diverged": len(runs) - len(ok),
            }
        )

    lr_fig = plots.lr_figure(
        {name: runs[0].column("lr", "iterations") for name, runs in histories.items()},
        total,
        title=f"Learning rate per iteration ({epochs} epochs x {steps_per_epoch} iterations, SGD momentum 0.9)",
    )
    loss_fig = plots.curves_figure(
        training_panels(histories, epochs, smooth=max(1, steps_per_epoch // 2)),
        title=f"Section 7.2.2: the same MLP and optimizer under each schedule ({len(seeds)} seed(s))",
        legend="below",  # nine schedules: a legend inside a panel would cover the curves
    )
    finished = [r for r in table if r["final_train_loss"] is not None]
    notes = [
        f"Every run: MLP {MODEL['hidden']} ({MODEL['activation']}), SGD with momentum {MOMENTUM}, alpha_0 = {LR}, "
        f"batch {BATCH_SIZE}, {epochs} epochs, mean over {len(seeds)} seed(s); x_sd columns: the standard "
        "deviation over the seeds."
    ]
    if finished:
        best = min(finished, key=lambda r: r["final_train_loss"])
        notes.append(f"Lowest final training loss: {best['schedule']} ({best['final_train_loss']:.4g}).")
    with_val = [r for r in table if r["val_accuracy"] is not None]
    if with_val:  # chosen on the validation split, never on the test split
        top = max(with_val, key=lambda r: r["val_accuracy"])
        notes.append(f"Best by validation accuracy: {top['schedule']} ({top['val_accuracy']:.4f}).")
    claims = decay_claims({name: [h.final("train_loss") for h in runs if not h.diverged]
                           for name, runs in histories.items()})  # fmt: skip
    if claims:
        decaying = [r["schedule"] for r in table if r["schedule"] != "constant"]
        failed = [name for name, c in zip(decaying, claims) if c["verdict"] != "holds"]
        if failed:
            notes.append(
                f"Against the text: {', '.join(failed)} end{'s' if len(failed) == 1 else ''} with no lower training "
                "loss than the constant rate here (beyond seed noise)."
            )
    return Result(table=table, claims=claims, figures={"lr": lr_fig, "loss": loss_fig}, notes=" ".join(notes))


def decay_claims(finals: Mapping[str, Sequence[float | None]]) -> list[dict[str, Any]]:
    """One claim row per decaying schedule of ``finals`` (schedule -> the final training loss of each seed's
    finished run; diverged runs left out or None): section 7.2.2's "a constant rate keeps bouncing around the
    minimum at the level of its gradient noise; decaying it lets the iterates settle", measured as a lower
    final training loss than ``constant``'s beyond seed noise (:func:`~optreg.experiments.base.exceeds`; the
    mean and sd over the seeds shown with it). Empty when the constant rate has no final loss (it diverged)."""
    if not any(v is not None for v in finals.get("constant", ())):
        return []

    def text(name: str) -> str:
        loss, sd = mean_std(finals[name])
        return "diverged" if loss is None else f"{loss:.4g}" + ("" if sd is None else f" ± {sd:.2g}")

    rows = []
    for name, losses in finals.items():
        if name == "constant":
            continue
        lower = exceeds(finals["constant"], losses, fmt=".2g")
        measured = (f"final training loss (mean ± sd over the seeds) {text(name)} vs constant {text('constant')}; "
                    f"constant - {name} {lower.text}")  # fmt: skip
        rows.append(claim(f"{name} settles lower than a constant rate (section 7.2.2)", measured, lower.holds))
    return rows
