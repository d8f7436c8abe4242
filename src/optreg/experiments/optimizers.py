"""Figure 7.6: the optimizers of section 7.2 on the same network and data.

SGD (eq. 7.3), momentum (7.17-7.18), Nesterov (7.19-7.21), AdaGrad (7.8-7.9), RMSprop (7.10-7.11),
AdaDelta (7.12-7.15), Adam (7.16-7.22), Nadam (Dozat 2016) and AdamW (Loshchilov & Hutter 2019) train
the same MLP (64 -> 128 -> 10, ReLU, torch's default init) on the same data with the same mini-batches
(batch size 32, the same shuffling seed), for several seeds. The figure shows the training loss per
iteration (smoothed over half an epoch) and the validation accuracy per epoch, mean ± one standard
deviation over the seeds; the table the final training loss, validation and test accuracy and the time.

The chapter draws the figure on MNIST; the default here is scikit-learn's digits (8x8, embedded) so the
whole experiment runs in about a minute on two cores. ``--dataset mnist1d`` or a directory of IDX files
(e.g. the real MNIST) run it elsewhere; the learning rates stay those below.

Learning rates (:data:`LEARNING_RATES`) were tuned once, on digits' validation split: for each optimizer
the grid ``{1, 3} x 10^k`` was searched for the rate with the best mean validation accuracy after 20
epochs over two seeds (ties: the lower final training loss), widening the grid while the best rate sat at
its border (the tuning practice of file 001). Every other hyperparameter is the chapter's default
(momentum ρ = 0.9, β = 0.9 for RMSprop / AdaDelta, β1 = 0.9, β2 = 0.999; AdamW's weight decay 0.01).
"""

from __future__ import annotations

from optreg.experiments.base import Context, Result, RunHistory, curves, mean_std, register
from optreg.report.plots import Panel, curves_figure

__all__ = ["BATCH_SIZE", "LEARNING_RATES", "MODEL", "OPTIMIZERS", "run"]

#: The optimizers compared, in the order of section 7.2 (then the two Adam variants).
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "nadam", "adamw")

#: Tuned once on digits' validation split (see the module docstring).
LEARNING_RATES = {
    "sgd": 1.0,
    "momentum": 0.1,
    "nesterov": 0.3,
    "adagrad": 0.1,
    "rmsprop": 0.01,
    "adadelta": 10.0,
    "adam": 0.01,
    "nadam": 0.01,
    "adamw": 0.01,
}

#: The network: one hidden layer of 128 ReLU units (input and output sizes come from the data).
MODEL = {"kind": "mlp", "hidden": [128], "activation": "relu"}
BATCH_SIZE = 32


@register(
    "optimizers",
    title="Figure 7.6: optimizers on the same MLP",
    figure="7.6",
    help="SGD, momentum, Nesterov, AdaGrad, RMSprop, AdaDelta, Adam, Nadam, AdamW: loss and accuracy curves",
)
def run(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)
    epochs = ctx.epoch_count(default=20, quick=2)
    runs: dict[str, list[RunHistory]] = {name: [] for name in OPTIMIZERS}
    for seed in seeds:
        data = ctx.load_data(seed)
        for name in OPTIMIZERS:
            h = ctx.train(
                name,
                model_spec=MODEL,
                optimizer=name,
                hparams={"lr": LEARNING_RATES[name]},
                seed=seed,
                batch_size=BATCH_SIZE,
                epochs=epochs,
                data=data,
            )
            runs[name].append(h)

    table = []
    for name, histories in runs.items():
        ok = [h for h in histories if not h.diverged]
        loss, loss_sd = mean_std(h.final("train_loss") for h in ok)
        val, val_sd = mean_std(h.final("val_accuracy") for h in ok)
        test, test_sd = mean_std(h.test_accuracy for h in ok)
        seconds, _ = mean_std(h.seconds for h in histories)
        table.append(
            {
                "optimizer": name,
                "lr": LEARNING_RATES[name],
                "train_loss": loss,
                "train_loss_sd": loss_sd,
                "val_accuracy": val,
                "val_accuracy_sd": val_sd,
                "test_accuracy": test,
                "test_accuracy_sd": test_sd,
                "seconds": seconds,
                "diverged": len(histories) - len(ok),
            }
        )

    data = ctx.load_data(seeds[0])
    steps_per_epoch = -(-len(data.train.y) // BATCH_SIZE)
    where = f"{data.name}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}, batch {BATCH_SIZE}"
    loss_panel = Panel(
        curves(runs, "loss"),
        title=f"Training loss per iteration ({where})",
        xlabel="iteration",
        ylabel=f"mini-batch loss (moving average over {max(1, steps_per_epoch // 2)})",
        smooth=max(1, steps_per_epoch // 2),
        log_y=True,
    )
    acc_panel = Panel(
        curves(runs, "val_accuracy", "epochs"),
        title=f"Validation accuracy per epoch ({where})",
        xlabel="epoch",
        ylabel="validation accuracy",
        x=list(range(1, epochs + 1)),
        integer_x=True,
    )
    title = f"Figure 7.6: optimizers on the same MLP (mean and spread over {len(seeds)} seed(s))"
    figures = {"figure-7.6": curves_figure([loss_panel, acc_panel], title=title)}

    best = max((r for r in table if r["test_accuracy"] is not None), key=lambda r: r["test_accuracy"], default=None)
    adam = next(r for r in table if r["optimizer"] == "adam")
    notes = [
        f"{data.name}: {len(data.train.y)} training, {len(data.val.y)} validation, {len(data.test.y)} test "
        f"examples; MLP {MODEL['hidden']} ReLU; {epochs} epochs of batch {BATCH_SIZE}; seeds {seeds}.",
        "Learning rates tuned once on digits' validation split (optreg.experiments.optimizers.LEARNING_RATES).",
    ]
    if adam["test_accuracy"] is not None:
        notes.append(f"Adam: test accuracy {adam['test_accuracy']:.4f} ± {adam['test_accuracy_sd']:.4f}.")
    if best is not None:
        notes.append(f"Best test accuracy: {best['optimizer']} ({best['test_accuracy']:.4f}).")
    return Result(table=table, figures=figures, notes="\n".join(notes))
