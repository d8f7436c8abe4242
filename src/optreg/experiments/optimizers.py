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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from optreg import optim
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
from optreg.report.plots import Panel, contour_figure, curves_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "BATCH_SIZE",
    "LEARNING_RATES",
    "MODEL",
    "OPTIMIZERS",
    "TOY_FUNCTIONS",
    "ToyFunction",
    "run",
    "optimizer_claims",
    "run_2d",
    "toy_experiment",
    "toy_row",
    "toy_run",
    "toy_table",
]

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
    ctx.expect_runs(len(seeds) * len(OPTIMIZERS))
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
    note = diverged_note(runs)
    loss_panel = Panel(
        curves(runs, "loss"),
        title=f"Training loss per iteration ({where})",
        xlabel="iteration",
        ylabel=f"mini-batch loss (moving average over {max(1, steps_per_epoch // 2)})",
        smooth=max(1, steps_per_epoch // 2),
        log_y=True,
        note=note,
    )
    acc_panel = Panel(
        curves(runs, "val_accuracy", "epochs"),
        title=f"Validation accuracy per epoch ({where})",
        xlabel="epoch",
        ylabel="validation accuracy",
        x=list(range(1, epochs + 1)),
        integer_x=True,
        note=note,
    )
    title = f"Figure 7.6: optimizers on the same MLP (mean over {len(seeds)} seed(s); shading: ±1 sd)"
    figures = {"figure-7.6": curves_figure([loss_panel, acc_panel], title=title)}

    # the best optimizer is chosen on the validation split, never on the test split (which only reports it)
    best = max((r for r in table if r["val_accuracy"] is not None), key=lambda r: r["val_accuracy"], default=None)
    adam = next(r for r in table if r["optimizer"] == "adam")
    notes = [
        f"{data.name}: {len(data.train.y)} training, {len(data.val.y)} validation, {len(data.test.y)} test "
        f"examples; MLP {MODEL['hidden']} ReLU; {epochs} epochs of batch {BATCH_SIZE}; seeds {seeds}.",
        "Learning rates tuned once on digits' validation split (optreg.experiments.optimizers.LEARNING_RATES).",
    ]
    if adam["test_accuracy"] is not None:
        notes.append(f"Adam: test accuracy {adam['test_accuracy']:.4f} ± {adam['test_accuracy_sd']:.4f}.")
    if best is not None:
        test = "-" if best["test_accuracy"] is None else f"{best['test_accuracy']:.4f}"
        notes.append(
            f"Best by validation accuracy: {best['optimizer']} ({best['val_accuracy']:.4f}; its test accuracy {test})."
        )
    notes.append("x_sd columns: the standard deviation over the seeds (population).")
    finals = {name: [h.final("train_loss") for h in hs if not h.diverged] for name, hs in runs.items()}
    return Result(table=table, claims=optimizer_claims(finals), figures=figures, notes="\n".join(notes))


#: Section 7.2's claims against plain SGD: (optimizer, what it adds), each at its tuned learning rate.
AGAINST_SGD = (
    ("momentum", "momentum (section 7.2.3, eqs. 7.17-7.18) trains faster than plain SGD"),
    ("adam", "Adam (momentum with per-parameter adaptive rates, section 7.2.4) trains faster than plain SGD"),
)


def optimizer_claims(finals: Mapping[str, Sequence[float | None]]) -> list[dict[str, Any]]:
    """Figure 7.6's claims (:func:`~optreg.experiments.base.claim` rows) from each optimizer's final training
    losses (one per seed; diverged runs left out): each of :data:`AGAINST_SGD` ends the same number of epochs
    with a lower training loss than SGD, beyond seed noise (:func:`exceeds`), each at its tuned rate."""
    rows = []
    for name, text in AGAINST_SGD:
        lower = exceeds(finals.get("sgd", []), finals.get(name, []), fmt=".4f")
        rows.append(claim(f"{text}: a lower final training loss in the same epochs", f"sgd minus {name} {lower.text}",
                          lower.holds))  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------ 2-D test functions


@dataclass(frozen=True)
class ToyFunction:
    """A 2-D test function ``f(x1, x2)`` (works on floats, numpy arrays and torch tensors), where to start,
    its minimizer and minimum value, the plot window, the step budget, the convergence tolerance on ``f - f_min`` and
    the learning rate of each optimizer (:data:`OPTIMIZERS`) on it."""

    name: str
    formula: str
    f: Callable[[Any, Any], Any]
    start: tuple[float, float]
    argmin: tuple[float, float]
    f_min: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    steps: int
    tol: float
    lrs: dict[str, float]


def _quadratic(x1: Any, x2: Any) -> Any:
    return 0.1 * x1**2 + 2 * x2**2


def _rosenbrock(x1: Any, x2: Any) -> Any:
    return (1 - x1) ** 2 + 100 * (x2 - x1**2) ** 2


#: The toy problems of ``optreg toy``: file 003's ill-conditioned quadratic (the d2l book's ``f_2d``,
#: condition number 20, started at (-5, -2)) and Rosenbrock's banana valley (started at (-1.2, 1)).
#: Budgets: 100 steps (quadratic), 1000 (Rosenbrock). Learning rates: the best of the grid {1, 3} x 10^k,
#: k = -5..1 (no divergence, then the fewest steps after which ``f - f_min`` stays below the tolerance,
#: then the lowest final value), searched once.
TOY_FUNCTIONS: dict[str, ToyFunction] = {
    "quadratic": ToyFunction(
        "quadratic",
        "0.1 x1^2 + 2 x2^2",
        _quadratic,
        (-5.0, -2.0),
        (0.0, 0.0),
        0.0,
        (-5.5, 1.5),
        (-3.0, 3.0),
        100,
        1e-6,
        {
            "sgd": 0.3,
            "momentum": 0.03,
            "nesterov": 0.3,
            "adagrad": 30.0,
            "rmsprop": 0.1,
            "adadelta": 30.0,
            "adam": 3.0,
            "nadam": 1.0,
            "adamw": 30.0,
        },
    ),
    "rosenbrock": ToyFunction(
        "rosenbrock",
        "(1 - x1)^2 + 100 (x2 - x1^2)^2",
        _rosenbrock,
        (-1.2, 1.0),
        (1.0, 1.0),
        0.0,
        (-1.6, 1.6),
        (-0.6, 1.8),
        1000,
        1e-4,
        {
            "sgd": 0.003,
            "momentum": 0.003,
            "nesterov": 0.001,
            "adagrad": 1.0,
            "rmsprop": 0.01,
            "adadelta": 0.3,
            "adam": 0.3,
            "nadam": 0.03,
            "adamw": 0.1,
        },
    ),
}


def toy_run(function: ToyFunction, optimizer: str, lr: float | None = None, steps: int | None = None) -> np.ndarray:
    """The iterates ``x_0 .. x_T`` (shape ``(T + 1, 2)``) of ``optimizer`` minimizing ``function`` from its
    start, with its learning rate from ``function.lrs`` unless ``lr`` is given. Stops early at a NaN/Inf."""
    lr = function.lrs[optimizer] if lr is None else lr
    steps = function.steps if steps is None else steps
    x = torch.tensor(function.start, dtype=torch.float64, requires_grad=True)
    opt = optim.create(optimizer, [x], lr=lr)
    path = [x.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss = function.f(x[0], x[1])
        loss.backward()
        opt.step()
        if not torch.isfinite(x).all():
            break
        path.append(x.detach().clone())
    return torch.stack(path).numpy()


def steps_to_tol(values: np.ndarray, tol: float) -> int | None:
    """The first step ``t`` from which ``values[s] < tol`` for every ``s >= t`` (None if the last is not)."""
    above = np.flatnonzero(~(np.asarray(values) < tol))
    if above.size == 0:
        return 0
    t = int(above[-1]) + 1
    return t if t < len(values) else None


def toy_row(fname: str, function: ToyFunction, optimizer: str) -> tuple[dict[str, Any], np.ndarray]:
    """One optimizer on one toy function: ``(row, path)``. The row: function, optimizer, lr, the first step
    from which ``f - f_min`` stays below ``tol`` (None if it does not end there), the final value and whether
    it diverged; the path: :func:`toy_run`'s iterates."""
    with np.errstate(over="ignore", invalid="ignore"):
        path = toy_run(function, optimizer)
        values = function.f(path[:, 0], path[:, 1]) - function.f_min
    row = {
        "function": fname,
        "optimizer": optimizer,
        "lr": function.lrs[optimizer],
        "steps_to_tol": steps_to_tol(values, function.tol),
        "final_value": float(values[-1] + function.f_min),
        "diverged": len(path) < function.steps + 1,
    }
    return row, path


def toy_table(
    functions: Sequence[str] = tuple(TOY_FUNCTIONS), optimizers: Sequence[str] = OPTIMIZERS
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Run every optimizer on every toy function (names of :data:`TOY_FUNCTIONS`): ``(rows, paths)``, the
    rows of :func:`toy_row` and ``paths[function][optimizer]``."""
    rows, paths = [], {}
    for fname in functions:
        paths[fname] = {}
        for name in optimizers:
            row, paths[fname][name] = toy_row(fname, TOY_FUNCTIONS[fname], name)
            rows.append(row)
    return rows, paths


def _record_toy_run(ctx: Context, function: ToyFunction, row: dict[str, Any], path: np.ndarray) -> None:
    """Store one trajectory as a run (label ``<function>/<optimizer>``): one step record per iterate with
    ``loss = f(x_t)`` and the lr, the table row as its summary."""
    with np.errstate(over="ignore", invalid="ignore"):
        values = function.f(path[:, 0], path[:, 1])
    finite = int(np.argmin(np.isfinite(values))) if not np.isfinite(values).all() else len(values)
    steps = [
        {"step": t, "epoch": 0, "loss": float(v), "accuracy": None, "lr": row["lr"], "grad_norm": None}
        for t, v in enumerate(values[:finite])
    ]
    config = {
        "function": function.name,
        "formula": function.formula,
        "start": function.start,
        "steps": function.steps,
        "tol": function.tol,
        "optimizer": row["optimizer"],
        "hparams": {"lr": row["lr"]},
    }
    summary = {k: row[k] for k in ("steps_to_tol", "final_value", "diverged")}
    status = "diverged" if row["diverged"] else "finished"
    label = f"{row['function']}/{row['optimizer']}"
    ctx.record_run(label, seed=0, config=config, steps=steps, summary=summary, status=status)


def toy_experiment(
    ctx: Context, functions: Mapping[str, ToyFunction]
) -> tuple[list[dict[str, Any]], dict[str, Figure]]:
    """Every optimizer of :data:`OPTIMIZERS` on every toy function: the :func:`toy_row` rows and a contour
    figure ``trajectories-<function>`` per function whose panels (in quick mode: the legend of one panel)
    name the optimizer, its learning rate and a divergence. Each trajectory is stored as a run as soon as it
    is computed (:func:`_record_toy_run`), and their number announced first."""
    ctx.expect_runs(len(functions) * len(OPTIMIZERS))
    rows, figures = [], {}
    for fname, function in functions.items():
        named = {}
        for name in OPTIMIZERS:
            row, path = toy_row(fname, function, name)
            _record_toy_run(ctx, function, row, path)
            rows.append(row)
            named[f"{name}, lr {row['lr']:g}" + (" (diverged)" if row["diverged"] else "")] = path
        figures[f"trajectories-{fname}"] = contour_figure(
            function.f,
            named,
            xlim=function.xlim,
            ylim=function.ylim,
            title=f"{fname}: f = {function.formula}, start {function.start}, {function.steps} steps",
            log_levels=fname == "rosenbrock",
            separate=not ctx.quick,  # one panel per optimizer (quick: all on one, cheaper to draw)
            minimum=function.argmin,
        )
    return rows, figures


@register(
    "optimizers-2d",
    title="Optimizers on 2-D test functions",
    figure="7.4",
    help="trajectories of SGD ... AdamW on 0.1 x1^2 + 2 x2^2 and on Rosenbrock's function (contours)",
    options=(),
    why="toy problems: a fixed start, no data, no randomness, and a step budget per function instead of epochs",
)
def run_2d(ctx: Context) -> Result:
    """Each optimizer's trajectory on each toy function, drawn on its contours; every trajectory is also a
    run in the store (experiment ``optimizers-2d``, label ``<function>/<optimizer>``): one step record per
    iterate with ``loss = f(x_t)`` and the lr, and the table row as its summary."""
    rows, figures = toy_experiment(ctx, TOY_FUNCTIONS)
    by = {(r["function"], r["optimizer"]): r for r in rows}

    def steps(function: str, name: str) -> float:
        v = by[(function, name)]["steps_to_tol"]
        return math.inf if v is None else v

    def shown(function: str, name: str) -> str:
        r = by[(function, name)]
        reach = "never" if r["steps_to_tol"] is None else r["steps_to_tol"]
        return f"{name} {reach} (f - f_min at the end {r['final_value'] - TOY_FUNCTIONS[function].f_min:.2g})"

    fast = ("sgd", "momentum", "nesterov")
    measured = "; ".join(f"{f}: " + ", ".join(shown(f, n) for n in fast) for f in TOY_FUNCTIONS)
    claims = [
        claim("momentum and Nesterov reach the minimum in fewer steps than plain gradient descent on ill-conditioned "
              "functions (figure 7.4, section 7.2.3)", "steps to tolerance (never: not within the step budget): "
              + measured,
              all(steps(f, n) < steps(f, "sgd") for f in TOY_FUNCTIONS for n in ("momentum", "nesterov"))),
    ]  # fmt: skip
    notes = (
        "steps_to_tol: the first iteration from which f - f_min stays below the tolerance (1e-6 for the "
        "quadratic, 1e-4 for Rosenbrock). Learning rates per function: "
        "optreg.experiments.optimizers.TOY_FUNCTIONS (best of a {1, 3} x 10^k grid)."
    )
    return Result(table=rows, claims=claims, figures=figures, notes=notes)
