"""Figure 7.3: the batch size K in mini-batch gradient descent.

Plain SGD (eq. 7.3, ``theta_t = theta_{t-1} - alpha g_t`` with the mean gradient of K examples, eq. 7.1)
trains the same MLP (64 -> 128 -> 10, ReLU) with K = 1, 8, 32, 128 and the full training set, for the same
number of epochs. One epoch is ceil(N / K) iterations (section 7.2.1), so the runs make very different
numbers of updates.

The learning-rate rule is the chapter's setting for this figure: **the same learning rate alpha = 0.1 for
every batch size** (no scaling with K). Then, as the chapter describes, (a) per iteration, larger batches
lower the loss faster and more smoothly (their gradient estimates are less noisy), while K = 1 oscillates;
(b) per epoch (the same number of examples seen, the same computation), smaller batches lower the loss
faster, because they make more updates.

Panel (a) draws the mini-batch loss against the iteration (log iteration axis; the y axis is cut at 1.5
times the initial loss): a moving average over the last :data:`SMOOTH_FRACTION` of the iterations so far
(a constant width on the log axis), with the unsmoothed loss faint behind it, so the oscillation of K = 1
shows without hiding the other curves; the curves that stop early (the large batches make few updates)
end in a dot. Panel (b) draws the epoch's mean training loss against the epoch. Mean (± one standard
deviation, shaded) over the seeds. Both claims are checked on the measured curves (``Result.claims``, rows
of :func:`optreg.experiments.base.claim`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
from optreg.report.plots import Panel, curves_figure

__all__ = ["BATCH_SIZES", "LEARNING_RATE", "MODEL", "SMOOTH_FRACTION", "batch_claims", "run"]

#: The batch sizes compared; ``None`` is the whole training set (batch gradient descent).
BATCH_SIZES: tuple[int | None, ...] = (1, 8, 32, 128, None)
#: One learning rate for every batch size (see the module docstring).
LEARNING_RATE = 0.1
MODEL = {"kind": "mlp", "hidden": [128], "activation": "relu"}
#: Panel (a)'s moving average: over the last 20 % of the iterations so far.
SMOOTH_FRACTION = 0.2


def _label(k: int | None, n: int) -> str:
    return f"K = {n} (full batch)" if k is None else f"K = {k}"


@register(
    "batch-size",
    title="Figure 7.3: batch size in mini-batch SGD",
    figure="7.3",
    help="SGD with K = 1, 8, 32, 128, full batch: loss per iteration and per epoch (same lr 0.1)",
)
def run(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=2)
    epochs = ctx.epoch_count(default=5, quick=2)
    n_train = len(ctx.load_data(seeds[0]).train.y)
    labels = {k: _label(k, n_train) for k in BATCH_SIZES}
    runs: dict[str, list[RunHistory]] = {label: [] for label in labels.values()}
    sizes: dict[str, int] = {}
    ctx.expect_runs(len(seeds) * len(BATCH_SIZES))
    for seed in seeds:
        data = ctx.load_data(seed)
        for k, label in labels.items():
            batch = len(data.train.y) if k is None else k
            sizes[label] = batch
            h = ctx.train(
                label,
                model_spec=MODEL,
                optimizer="sgd",
                hparams={"lr": LEARNING_RATE},
                seed=seed,
                batch_size=batch,
                epochs=epochs,
                data=data,
                config={"batch_rule": f"same lr {LEARNING_RATE} for every K"},
            )
            runs[label].append(h)

    table = []
    for label, histories in runs.items():
        ok = [h for h in histories if not h.diverged]
        loss, loss_sd = mean_std(h.final("train_loss") for h in ok)
        val, _ = mean_std(h.final("val_accuracy") for h in ok)
        test, test_sd = mean_std(h.test_accuracy for h in ok)
        seconds, _ = mean_std(h.seconds for h in histories)
        per_epoch = -(-n_train // sizes[label])
        table.append(
            {
                "batch_size": sizes[label],
                "iterations_per_epoch": per_epoch,
                "iterations": per_epoch * epochs,
                "train_loss": loss,
                "train_loss_sd": loss_sd,
                "val_accuracy": val,
                "test_accuracy": test,
                "test_accuracy_sd": test_sd,
                "seconds": seconds,
                "diverged": len(histories) - len(ok),
            }
        )

    loss = curves(runs, "loss")
    start = max((r[0] for rs in loss.values() for r in rs if r), default=1.0)
    note = diverged_note(runs)
    per_iteration = Panel(
        loss,
        title=f"(a) loss per iteration (moving average over the last {SMOOTH_FRACTION:.0%}; faint: raw)",
        xlabel="iteration (log scale)",
        ylabel="mini-batch loss",
        x={label: range(1, 1 + max((len(r) for r in rs), default=0)) for label, rs in loss.items()},
        log_x=True,
        ylim=(0.0, 1.5 * start),
        smooth_fraction=SMOOTH_FRACTION,
        raw=True,
        mark_ends=True,
        note=note,
    )
    per_epoch_panel = Panel(
        curves(runs, "train_loss", "epochs"),
        title="(b) loss per epoch",
        xlabel="epoch",
        ylabel="mean training loss over the epoch",
        x=list(range(1, epochs + 1)),
        integer_x=True,
        log_y=True,
        note=note,
    )
    title = f"Figure 7.3: batch size K in SGD (lr {LEARNING_RATE} for every K, {len(seeds)} seed(s))"
    figures = {"figure-7.3": curves_figure([per_iteration, per_epoch_panel], title=title)}
    finals = {label: [h.final("train_loss") for h in hs if not h.diverged] for label, hs in runs.items()}
    claims = batch_claims(loss, finals, sizes)
    notes = (
        f"{n_train} training examples; plain SGD, lr {LEARNING_RATE} for every batch size; {epochs} epochs; "
        f"seeds {seeds}; train_loss_sd: the standard deviation over the seeds. The claims are figure 7.3's."
    )
    return Result(table=table, claims=claims, figures=figures, notes=notes)


def batch_claims(
    loss: Mapping[str, Sequence[Sequence[float]]],
    final: Mapping[str, Sequence[float | None]],
    sizes: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Figure 7.3's two claims, measured (:func:`~optreg.experiments.base.claim` rows).

    (a) per iteration, a larger batch lowers the loss faster: the mean mini-batch loss over iterations
    ``t/2 .. t`` (``t``: the number of iterations of the shortest run that is not the full batch; one
    value per seed) falls as K grows, among the batch sizes that reach ``t``. (b) per epoch, a smaller batch
    lowers it faster: the final epoch's training loss (``final``: label -> one value per seed) rises with K.
    Each step between neighbouring batch sizes must be beyond seed noise
    (:func:`~optreg.experiments.base.exceeds`). ``loss``: label -> the runs' per-iteration losses (diverged
    runs left out); ``sizes``: label -> K.
    """
    order = sorted(sizes, key=lambda label: sizes[label])
    reach = [len(r) for label in order[:-1] for r in loss.get(label, []) if r]
    rows = []
    if reach:
        t = min(reach)
        window = {
            label: [float(np.mean(r[t // 2 : t])) for r in loss[label]]
            for label in order
            if loss.get(label) and all(len(r) >= t for r in loss[label])
        }
        ks = [label for label in order if label in window]
        steps = {(a, b): exceeds(window[a], window[b], fmt=".3g") for a, b in zip(ks, ks[1:])}
        measured = (
            f"mean mini-batch loss over iterations {t // 2 + 1}-{t}: "
            + ", ".join(f"{label} {np.mean(window[label]):.3g}" for label in ks)
            + "".join(f"; {a} - {b}: {c.text}" for (a, b), c in steps.items())
        )
        falls = all(c.holds for c in steps.values())
        rows.append(claim("per iteration, a larger batch lowers the loss faster", measured, falls and len(ks) > 1))
    done = [label for label in order if any(v is not None for v in final.get(label, ()))]
    if len(done) > 1:
        steps = {(a, b): exceeds(final[b], final[a], fmt=".3g") for a, b in zip(done, done[1:])}
        measured = (
            "final epoch's training loss: "
            + ", ".join(f"{label} {mean_std(final[label])[0]:.3g}" for label in done)
            + "".join(f"; {b} - {a}: {c.text}" for (a, b), c in steps.items())
        )
        rises = all(c.holds for c in steps.values())
        rows.append(claim("per epoch, a smaller batch lowers the loss faster (more updates)", measured, rises))
    return rows
