r"""Regularization through the training procedure and the targets: early stopping (section 7.7.3, Prechelt
1998), label smoothing (section 7.7.6, exercise 7-5) and knowledge distillation with FitNets hints (section
7.7.6, Hinton et al. 2015; file 002, Romero et al. 2015).

``early-stopping``
    One long over-fitting run per seed (an MLP on a small digits subset whose training and validation labels
    are 30 % wrong, so that memorizing them hurts the clean test error), the validation and test scores of
    every epoch stored. Every stopping criterion of :class:`optreg.train.EarlyStopping` (a plain patience,
    Prechelt's GL_alpha, PQ_alpha, UP_s) is then replayed on the stored epoch records, which is exactly
    what it would have decided live (its decisions read the records only): where it stops, which epoch it
    keeps (the lowest validation loss so far, ``restore_best``), the test error of that epoch, and the
    epochs it trained, against the *oracle* (the epoch of minimum validation loss over the whole run).

``label-smoothing``
    The same MLP trained with the smoothed cross-entropy for a sweep of ``eps``, in the chapter's form
    (``1 - eps`` on the true class, ``eps / (K - 1)`` on the others) and the uniform one (``(1 - eps) y +
    eps / K``): test accuracy, calibration (ECE, reliability diagrams), and the logit gap ``z_y - mean_{k !=
    y} z_k`` on the training set per epoch against its closed-form optimum under smoothing,
    ``log((1 - eps)(K - 1) / eps)`` (chapter) and ``log(1 + K (1 - eps) / eps)`` (uniform); with hard
    targets (``eps = 0``) there is no finite optimum.

``distillation``
    A big teacher MLP, a small (deeper, thinner) student trained alone, the student distilled from the
    teacher (``alpha T^2 KL(q_T || p_T) + (1 - alpha) CE``), and the student first guided by a hint (its
    middle layer regresses the teacher's middle layer through a learned linear projection, FitNets stage 1)
    then distilled (stage 2). Plus a numerical check of the ``T^2`` factor: the norm of the soft term's
    gradient with respect to the student's logits for several ``T``, with and without it.

Runs whose loss is not the plain cross-entropy (label smoothing, distillation, hints) are trained by a
:class:`~optreg.train.Trainer` built exactly as :func:`optreg.train.run` builds it (the same seeded model,
optimizer and loop: with the plain cross-entropy they give the same numbers as :meth:`Context.train`) and
recorded with :meth:`Context.record_run` (their iteration records and summary; the store keeps no epoch
records for them). The predictions the tables summarize are saved next to them as ``predictions.npz``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optreg.data.datasets import Split, Splits
from optreg.experiments import format_table
from optreg.experiments.base import Context, Result, claim, exceeds, fmt_value, mean_std, register
from optreg.regularize import distillation_loss, hint_loss, hint_regressor, label_smoothing_cross_entropy
from optreg.regularize.noise import label_noise
from optreg.report import plots
from optreg.train import EarlyStopping, History, Lambda, Trainer
from optreg.train.ensemble import expected_calibration_error, reliability_bins
from optreg.train.run import build_model, build_optimizer

__all__ = [
    "CRITERIA",
    "EPS",
    "TEMPERATURES",
    "FitResult",
    "closed_form_gap",
    "fit_with_loss",
    "logit_gap",
    "noisy_subset",
    "predict_logits",
    "run_distillation",
    "run_early_stopping",
    "run_label_smoothing",
    "soft_gradient_norms",
    "stopping_point",
]

# ------------------------------------------------------------------------------------------ shared parts


@dataclass
class FitResult:
    """One run trained by :func:`fit_with_loss`: the trained ``model``, its ``history``, the store id, and
    the test scores under the plain cross-entropy (``test_loss``, ``test_accuracy``)."""

    label: str
    seed: int
    model: nn.Module
    history: History
    run_id: int
    test_loss: float | None
    test_accuracy: float | None
    seconds: float


def fit_with_loss(
    ctx: Context,
    label: str,
    *,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Splits,
    seed: int,
    epochs: int,
    batch_size: int,
    optimizer: str = "adam",
    hparams: Mapping[str, Any] | None = None,
    parameters: Iterable[Tensor] | None = None,
    train: Any = None,
    val: Any = None,
    callbacks: Sequence[Any] = (),
    log_every: int = 1,
    config: Mapping[str, Any] | None = None,
    metrics: Sequence[str] = ("loss", "accuracy", "grad_norm"),
    score_test: bool = True,
) -> FitResult:
    """Train ``model`` with ``loss_fn`` as :func:`optreg.train.run` trains (the same :class:`Trainer`, optimizer
    built by :func:`~optreg.train.run.build_optimizer` over ``parameters`` (default: the model's), seeded
    by ``seed``) and record it in the context's store (:meth:`Context.record_run`), with progress events.

    ``train`` / ``val`` default to ``data.train`` / ``data.val``; with ``score_test`` the test scores are the
    plain cross-entropy and accuracy of ``model`` on ``data.test`` (None without test examples).
    """
    params = list(model.parameters() if parameters is None else parameters)
    opt = build_optimizer(optimizer, params, dict(hparams or {}))
    train = data.train if train is None else train
    val = data.val if val is None else val
    progress = ctx.progress
    hooks = list(callbacks)
    if progress is not None:
        steps = math.ceil(len(train[1]) / batch_size)
        progress("start", {"experiment": ctx.experiment, "label": label, "seed": seed, "epochs": epochs,
                           "steps_per_epoch": steps})
        info = {"label": label, "seed": seed, "epochs": epochs}
        hooks.append(Lambda(on_epoch_end=lambda trainer, record: progress("epoch", {**info, "record": record})))
    trainer = Trainer(model, opt, loss_fn=loss_fn, batch_size=batch_size, epochs=epochs, callbacks=hooks,
                      seed=seed, device=ctx.device, log_every=log_every, metrics=metrics)
    start = time.perf_counter()
    history = trainer.fit(train, val if val is not None and len(val[1]) else None)
    seconds = time.perf_counter() - start
    test_loss = test_accuracy = None
    if score_test and len(data.test.y):
        logits = predict_logits(model, data.test.x, ctx.device)
        y = data.test.y.to(logits.device)
        test_loss = float(F.cross_entropy(logits, y))
        test_accuracy = float((logits.argmax(1) == y).double().mean())
    last = history.epochs[-1] if history.epochs else {}
    summary = {"test_loss": test_loss, "test_accuracy": test_accuracy, "seconds": seconds,
               "final_train_loss": last.get("train_loss"), "final_val_loss": last.get("val_loss"),
               "final_val_accuracy": last.get("val_accuracy"), "epochs": trainer.epoch, "steps": trainer.step}
    record = {"dataset": data.name, "optimizer": optimizer, "hparams": {k: v for k, v in opt.defaults.items()
                                                                        if isinstance(v, int | float | bool)},
              "batch_size": batch_size, "epochs": epochs, "n_train": len(train[1]), **dict(config or {})}
    run_id = ctx.record_run(label, seed=seed, config=record, steps=history.iterations, summary=summary, started=True)
    return FitResult(label, seed, model, history, run_id, test_loss, test_accuracy, seconds)


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, device: str | torch.device = "cpu", batch_size: int = 2048) -> Tensor:
    """The model's outputs on ``x`` in evaluation mode (its mode restored), on the CPU."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(xb.to(device)).cpu() for xb in x.split(batch_size)])
    finally:
        model.train(was)


def _save_arrays(ctx: Context, name: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as ``<invocation folder>/<name>`` (a new file: never one that exists)."""
    path = ctx.output_folder() / name
    if path.exists():
        raise FileExistsError(f"experiments: '{path}' exists; a result is never replaced")
    np.savez_compressed(path, **arrays)
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    return fmt_value(value, f".{digits}f", missing="n/a")


# ---------------------------------------------------------------------------------------- early stopping

#: The criteria compared: ``label -> EarlyStopping keyword arguments`` (all on the validation loss; strips of
#: 5 epochs for PQ and UP, Prechelt's setting).
CRITERIA: dict[str, dict[str, Any]] = {
    "patience 3": {"criterion": "patience", "patience": 3},
    "patience 10": {"criterion": "patience", "patience": 10},
    "patience 20": {"criterion": "patience", "patience": 20},
    "GL 1": {"criterion": "gl", "alpha": 1.0},
    "GL 2": {"criterion": "gl", "alpha": 2.0},
    "GL 5": {"criterion": "gl", "alpha": 5.0},
    "GL 10": {"criterion": "gl", "alpha": 10.0},
    "PQ 0.5": {"criterion": "pq", "alpha": 0.5},
    "PQ 1": {"criterion": "pq", "alpha": 1.0},
    "PQ 2": {"criterion": "pq", "alpha": 2.0},
    "UP 2": {"criterion": "up", "strips": 2},
    "UP 3": {"criterion": "up", "strips": 3},
}

ES_MODEL = {"kind": "mlp", "hidden": [256, 256], "activation": "relu"}
ES_TRAIN, ES_NOISE, ES_LR, ES_BATCH = 600, 0.3, 1e-3, 32


class _Replay:
    """The part of a :class:`~optreg.train.Trainer` that :class:`~optreg.train.EarlyStopping` reads: its
    ``stop`` flag, and ``measures`` (every metric of a stored record is there)."""

    def __init__(self) -> None:
        self.stop = False

    def measures(self, metric: str) -> bool:
        return True


def stopping_point(records: Sequence[Mapping[str, Any]], **criterion: Any) -> tuple[int | None, int | None]:
    """Replay :class:`~optreg.train.EarlyStopping` (monitor ``val_loss``, ``**criterion``) on stored epoch
    records: ``(stopped_epoch, best_epoch)``, the 0-based epoch after which it stops the run (None: it never
    does) and the epoch of the best validation loss up to then (the one ``restore_best`` keeps).

    The callback decides from the records alone, so this is what it decides in a live run of the same
    records (the test checks it against one).
    """
    cb = EarlyStopping(monitor="val_loss", restore_best=False, **criterion)
    trainer = _Replay()
    cb.on_fit_start(trainer)  # type: ignore[arg-type]
    for record in records:
        cb.on_epoch_end(trainer, dict(record))  # type: ignore[arg-type]
        if trainer.stop:
            break
    return cb.stopped_epoch, cb.best_epoch


def noisy_subset(data: Splits, n_train: int, fraction: float, seed: int) -> Splits:
    """The first ``n_train`` training examples, with ``fraction`` of their labels and of the validation labels
    replaced by another class (:func:`optreg.regularize.noise.label_noise`, mode ``other``); test untouched."""
    g = torch.Generator().manual_seed(10_000 + seed)
    k = data.n_classes
    x, y = data.train.x[:n_train], data.train.y[:n_train]
    train = Split(x, label_noise(y, fraction, num_classes=k, mode="other", generator=g))
    val = Split(data.val.x, label_noise(data.val.y, fraction, num_classes=k, mode="other", generator=g))
    return data._replace(train=train, val=val)


def _weight_norm(model: nn.Module) -> float:
    return float(torch.sqrt(sum(p.detach().double().square().sum() for p in model.parameters())))


@register(
    "early-stopping",
    title="Early stopping: when each criterion stops, and the test error it keeps",
    figure="section 7.7.3",
    help="one long over-fitting run (noisy labels); patience, Prechelt's GL / PQ / UP replayed on it vs the oracle",
)
def run_early_stopping(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)
    epochs = ctx.epoch_count(default=100, quick=12)
    curves: list[dict[str, Any]] = []
    ctx.expect_runs(len(seeds))  # one long run per seed; the criteria are replayed on it
    for seed in seeds:
        data = noisy_subset(ctx.load_data(seed), ES_TRAIN, ES_NOISE, seed)
        spe = math.ceil(len(data.train.y) / ES_BATCH)
        norms: list[float] = []
        spec = {
            "name": "mlp (noisy labels)",
            "model": ES_MODEL,
            "init": None,
            "optimizer": {"name": "adam", "lr": ES_LR},
            "schedule": None,
            "train": {"batch_size": ES_BATCH, "epochs": epochs, "seed": seed, "log_every": spe, "eval_every": spe},
        }
        keep_norm = Lambda(on_epoch_end=lambda trainer, record, out=norms: out.append(_weight_norm(trainer.model)))
        run = ctx.train_spec(spec, data, callbacks=[keep_norm],
                             config={"label_noise": ES_NOISE, "n_train": len(data.train.y)})
        by_epoch = {e["epoch"]: e for e in run.evaluations}
        curves.append({
            "seed": seed,
            "records": run.epochs,
            "val_loss": [r["val_loss"] for r in run.epochs],
            "train_loss": [r["train_loss"] for r in run.epochs],
            "test_error": [1.0 - by_epoch[r["epoch"]]["test_accuracy"] for r in run.epochs],
            "test_loss": [by_epoch[r["epoch"]]["test_loss"] for r in run.epochs],
            "norm": norms,
        })

    def summarize(label: str, points: list[tuple[int, int | None]], rule: str) -> dict[str, Any]:
        """``points``: per seed ``(kept epoch, stopped epoch or None)``."""
        kept = _kept(curves, points)
        at_stop = [c["test_error"][len(c["test_error"]) - 1 if s is None else s] for c, (_, s) in zip(curves, points)]
        trained = _trained(curves, points)
        oracle = [int(np.argmin(c["val_loss"])) for c in curves]
        err, err_sd = mean_std(kept)
        return {
            "criterion": label,
            "rule": rule,
            "stopped (of seeds)": sum(s is not None for _, s in points),
            "epochs trained": mean_std(trained)[0],
            "epochs trained per seed": " ".join(str(t) for t in trained),
            "kept epoch per seed": " ".join(str(k + 1) for k, _ in points),
            "test error (kept)": err,
            "test error sd": err_sd,
            "test error at stop": mean_std(at_stop)[0],
            "test loss (kept)": mean_std(c["test_loss"][k] for c, (k, _) in zip(curves, points))[0],
            "param norm (kept)": mean_std(c["norm"][k] for c, (k, _) in zip(curves, points))[0],
            "epochs / oracle's": mean_std(t / (o + 1) for t, o in zip(trained, oracle))[0],
            "error / oracle's": mean_std(
                e / max(c["test_error"][o], 1e-12) for e, c, o in zip(kept, curves, oracle))[0],
        }

    rules = {"patience": "no new best for {patience} epochs", "gl": "GL(t) > {alpha}",
             "pq": "GL(t) / P_5(t) > {alpha} at a strip end", "up": "E_va up in {strips} successive 5-epoch strips"}
    table: list[dict[str, Any]] = []
    stops: dict[str, list[tuple[int, int | None]]] = {}
    for label, kw in CRITERIA.items():
        points = []
        for c in curves:
            stopped, best = stopping_point(c["records"], **kw)
            points.append((best if best is not None else len(c["val_loss"]) - 1, stopped))
        stops[label] = points
        table.append(summarize(label, points, rules[kw["criterion"]].format(**kw)))
    oracle = [int(np.argmin(c["val_loss"])) for c in curves]
    oracle_row = summarize("oracle", list(zip(oracle, oracle)),
                           "stop right at the epoch of minimum validation loss (known only in hindsight)")
    oracle_row["stopped (of seeds)"] = None
    last_row = summarize("no early stopping", [(len(c["val_loss"]) - 1, None) for c in curves],
                         f"the last of {epochs} epochs")
    last_row["stopped (of seeds)"] = None
    table += [oracle_row, last_row]

    claims = _early_stopping_claims(table, curves, stops, epochs)
    figure = _early_stopping_figure(curves[0], stops, epochs)
    notes = (
        f"MLP {ES_MODEL['hidden']} ({ES_MODEL['activation']}), Adam lr {ES_LR}, batch {ES_BATCH}, {epochs} epochs on "
        f"the first {len(data.train.y)} training examples of {data.name} with {ES_NOISE:.0%} of the "
        f"training and validation labels replaced by another class (test labels clean), {len(seeds)} seed(s) "
        "(split, noise, weights); test error = 1 - test accuracy of the kept epoch (the lowest validation loss up "
        "to the stop), mean over seeds, sd = population std over seeds. Each criterion is replayed on the stored "
        "per-epoch validation losses (E_va = validation cross-entropy; E_tr = training loss, for PQ). "
        "'epochs / oracle's' is the training cost relative to stopping right at the oracle epoch."
    )
    return Result(table=table, claims=claims, figures={"curves": figure}, notes=notes)


def _kept(curves: list[dict[str, Any]], points: list[tuple[int, int | None]], key: str = "test_error") -> list[float]:
    """Per seed, ``key`` (a per-epoch list of ``curves``) at the kept epoch of ``points`` ``(kept, stopped)``."""
    return [c[key][k] for c, (k, _) in zip(curves, points)]


def _trained(curves: list[dict[str, Any]], points: list[tuple[int, int | None]]) -> list[int]:
    """Per seed, the epochs trained before the stop of ``points`` (all of them when it never stopped)."""
    return [(s + 1) if s is not None else len(c["val_loss"]) for c, (_, s) in zip(curves, points)]


def _early_stopping_claims(
    table: list[dict[str, Any]], curves: list[dict[str, Any]], stops: dict[str, list[tuple[int, int | None]]],
    epochs: int,
) -> list[dict[str, Any]]:
    rows = {r["criterion"]: r for r in table}
    oracle, last = rows["oracle"], rows["no early stopping"]
    crit = [rows[label] for label in CRITERIA]
    fired = [r for r in crit if r["stopped (of seeds)"]]
    at_oracle = [(int(np.argmin(c["val_loss"])), None) for c in curves]
    at_last = [(len(c["val_loss"]) - 1, None) for c in curves]
    better = exceeds(_kept(curves, at_last), _kept(curves, at_oracle))
    shorter = exceeds(_kept(curves, at_last, "norm"), _kept(curves, at_oracle, "norm"), fmt=".2f")
    claims = [
        claim("early stopping is a simple, effective regularizer (section 7.7.3): the model of the best validation "
              "epoch generalizes better than the over-trained one",
              f"test error: oracle epoch {_fmt(oracle['test error (kept)'])} vs last epoch "
              f"{_fmt(last['test error (kept)'])} (last - oracle {better.text}; test loss "
              f"{_fmt(oracle['test loss (kept)'])} vs {_fmt(last['test loss (kept)'])})",
              better.holds),
        claim("early stopping limits how far the weights travel (its l2-like effect; Bishop 1995)",
              f"||theta||: at the oracle epoch {_fmt(oracle['param norm (kept)'], 2)}, at the end "
              f"{_fmt(last['param norm (kept)'], 2)} (end - oracle {shorter.text})",
              shorter.holds),
    ]
    gl1 = stops["GL 1"]
    later = sum(1 for c, (_, s) in zip(curves, gl1) if s is not None and int(np.argmin(c["val_loss"])) > s)
    minima = [_local_minima(c["val_loss"]) for c in curves]
    claims.append(claim(
        "the validation curve need not be a single U: it can rise and fall again, so the stopping rule must be "
        "tuned to the task (Prechelt 1998)",
        f"runs whose validation loss reached a new minimum after GL_1 had fired: {later} of {len(curves)}; local "
        f"minima of the validation loss per run: {' '.join(map(str, minima))}",
        later > 0 or max(minima) > 1,
    ))
    if len(fired) >= 4:
        order = sorted(fired, key=lambda r: r["epochs trained"])
        third = max(1, len(order) // 3)
        fast, slow = order[:third], order[-third:]
        fe, se = np.mean([r["test error (kept)"] for r in fast]), np.mean([r["test error (kept)"] for r in slow])
        ft, st = np.mean([r["epochs trained"] for r in fast]), np.mean([r["epochs trained"] for r in slow])
        from scipy.stats import spearmanr

        rho = float(spearmanr([r["epochs trained"] for r in fired], [r["test error (kept)"] for r in fired])[0])

        def group(rs: list[dict[str, Any]], of: Callable[..., list[float] | list[int]]) -> list[float]:
            """Per seed, the mean over the criteria ``rs`` of ``of(curves, points)`` (errors, epochs)."""
            return [float(np.mean(v)) for v in zip(*(of(curves, stops[r["criterion"]]) for r in rs))]

        gen = exceeds(group(fast, _kept), group(slow, _kept))
        cost = exceeds(group(slow, _trained), group(fast, _trained), fmt=".1f")
        claims.append(claim(
            "slower criteria (those that stop later) give slightly better generalization at a much higher "
            "training cost (Prechelt 1998)",
            f"fastest third ({', '.join(r['criterion'] for r in fast)}): test error {fe:.3f} in {ft:.1f} epochs; "
            f"slowest third ({', '.join(r['criterion'] for r in slow)}): {se:.3f} in {st:.1f} epochs "
            f"({st / ft:.2g}x the time, error x{se / max(fe, 1e-12):.3f}); per seed, fast - slow error {gen.text}, "
            f"slow - fast epochs {cost.text}; Spearman rho(epochs, error) over the {len(fired)} criteria that fired "
            f"= {rho:.2f}",
            gen.holds and cost.holds,
        ))
    else:
        claims.append(claim(
            "slower criteria (those that stop later) give slightly better generalization at a much higher "
            "training cost (Prechelt 1998)",
            f"only {len(fired)} criteria stopped within {epochs} epochs: too few to compare", False))
    def kept_val_loss(r: dict[str, Any]) -> float:  # chosen by validation, never by test
        return float(np.mean([c["val_loss"][k] for c, (k, _) in zip(curves, stops[r["criterion"]])]))

    best = min(crit, key=kept_val_loss)
    close = exceeds([1.05 * e for e in _kept(curves, at_oracle)], _kept(curves, stops[best["criterion"]]))
    claims.append(claim(
        "a stopping criterion gets close to the best possible stop (the oracle epoch, known only in hindsight)",
        f"the criterion with the lowest validation loss at its kept epoch, {best['criterion']}: "
        f"test error {_fmt(best['test error (kept)'])} vs the oracle's "
        f"{_fmt(oracle['test error (kept)'])}, {best['epochs trained']:.1f} epochs trained; 1.05 x oracle's - "
        f"its {close.text}",
        close.holds,
    ))
    return claims


def _local_minima(values: Sequence[float], window: int = 2) -> int:
    """Strict local minima of a curve over ``+- window`` neighbours (its endpoints count if lower than theirs)."""
    v = np.asarray(values, dtype=float)
    return int(sum(all(v[i] < v[j] for j in range(max(0, i - window), min(len(v), i + window + 1)) if j != i)
                   for i in range(len(v))))


def _early_stopping_figure(curve: dict[str, Any], stops: dict[str, list[tuple[int, int | None]]], epochs: int):
    fig, axes = plots.new_figure(3, title=f"Early stopping on one over-fitting run (seed {curve['seed']})")
    x = np.arange(1, len(curve["val_loss"]) + 1)
    palette = plots.colors(list(CRITERIA))
    oracle = int(np.argmin(curve["val_loss"]))
    ax = axes[0]
    ax.plot(x, curve["train_loss"], color="0.5", label="training loss (noisy labels)")
    ax.plot(x, curve["val_loss"], color="k", label="validation loss (noisy labels)")
    for label, points in stops.items():
        kept, stopped = points[0]
        if stopped is not None:
            ax.plot(stopped + 1, curve["val_loss"][stopped], "v", color=palette[label], markersize=7,
                    label=f"{label} stops")
    ax.plot(oracle + 1, curve["val_loss"][oracle], "*", color="k", markersize=12, label="oracle (min val loss)")
    ax.set(title="losses; where each criterion stops", xlabel="epoch", ylabel="cross-entropy")
    ax.legend(fontsize=6, ncol=2, frameon=False)
    ax = axes[1]
    ax.plot(x, curve["test_error"], color="k", label="test error (clean labels)")
    for label, points in stops.items():
        kept, stopped = points[0]
        ax.plot(kept + 1, curve["test_error"][kept], "o", color=palette[label], markersize=6,
                label=f"{label} keeps epoch {kept + 1}")
    ax.plot(oracle + 1, curve["test_error"][oracle], "*", color="k", markersize=12, label="oracle")
    ax.set(title="test error; the epoch each criterion keeps", xlabel="epoch", ylabel="test error")
    ax.legend(fontsize=6, ncol=2, frameon=False)
    ax = axes[2]
    ax.plot(x, curve["norm"], color="k")
    ax.axvline(oracle + 1, color="k", linestyle=":", label="oracle epoch")
    ax.set(title="||theta|| grows as training goes on", xlabel="epoch", ylabel="parameter norm")
    ax.legend(fontsize=8, frameon=False)
    for a in axes:
        a.grid(True, alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------- label smoothing

#: The smoothing strengths of the sweep (each in both forms; eps = 0 is the plain cross-entropy, run once).
EPS = (0.0, 0.05, 0.1, 0.2)
LS_MODEL = {"kind": "mlp", "hidden": [256, 256], "activation": "relu"}
LS_LR, LS_BATCH = 1e-3, 32
#: Epochs per dataset in full mode (to convergence on the training set).
LS_EPOCHS = {"mnist1d": 25, "digits": 30}


def closed_form_gap(eps: float, k: int, form: str = "chapter") -> float:
    r"""The logit gap :math:`z_y - z_j` (every :math:`j \ne y`) that minimizes the smoothed cross-entropy of one
    example: the softmax must equal the smoothed target, so the gap is the log-ratio of its entries,
    :math:`\log\frac{(1-\epsilon)(K-1)}{\epsilon}` (chapter) or :math:`\log\frac{1-\epsilon+\epsilon/K}{\epsilon/K}`
    (uniform); :math:`+\infty` for :math:`\epsilon = 0` (hard targets have no finite minimizer)."""
    if eps == 0:
        return math.inf
    if form == "chapter":
        return math.log((1.0 - eps) * (k - 1) / eps)
    return math.log((1.0 - eps + eps / k) / (eps / k))


def logit_gap(logits: Tensor, y: Tensor) -> float:
    """The mean over examples of ``z_y - mean_{j != y} z_j``."""
    z = logits.double()
    true = z.gather(1, y[:, None])[:, 0]
    others = (z.sum(1) - true) / (z.shape[1] - 1)
    return float((true - others).mean())


def _ls_datasets(ctx: Context) -> list[str]:
    return [str(ctx.dataset)] if ctx.dataset is not None else ["mnist1d", "digits"]


@register(
    "label-smoothing",
    title="Label smoothing: accuracy, calibration and logit growth",
    figure="section 7.7.6, ex. 7-5",
    help="eps sweep in the chapter's and the uniform form: accuracy, ECE, reliability diagrams, logit gap vs its bound",
)
def run_label_smoothing(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)  # so that the verdicts can tell a difference from seed noise (~3 min)
    settings = [(0.0, "chapter")] + [(e, f) for e in EPS[1:] for f in ("chapter", "uniform")]
    if ctx.quick:
        settings = [(0.0, "chapter"), (0.1, "chapter"), (0.1, "uniform")]
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    gaps: dict[tuple[str, float, str], list[list[float]]] = {}
    probs: dict[tuple[str, float, str], tuple[Tensor, Tensor]] = {}
    per_seed: dict[tuple[str, float, str], list[dict[str, Any]]] = {}  # (dataset, eps, row's form) -> runs
    check = None
    ctx.expect_runs(len(_ls_datasets(ctx)) * len(seeds) * len(settings))
    for dataset in _ls_datasets(ctx):
        epochs = ctx.epoch_count(default=LS_EPOCHS.get(dataset, 25), quick=3)
        runs: dict[tuple[float, str], list[dict[str, Any]]] = {s: [] for s in settings}
        for seed in seeds:
            data = ctx.load_data(seed, dataset=dataset)
            k = data.n_classes
            for eps, form in settings:
                model = build_model(LS_MODEL, data, seed=seed)
                trace: list[float] = []
                gap_cb = Lambda(on_epoch_end=lambda trainer, record, x=data.train.x, y=data.train.y, out=trace:
                                out.append(logit_gap(predict_logits(trainer.model, x, ctx.device), y)))

                def loss(z: Tensor, y: Tensor, eps: float = eps, form: str = form) -> Tensor:
                    return label_smoothing_cross_entropy(z, y, eps, form)

                fit_with_loss(ctx, f"{dataset} eps={eps:g} {form}", model=model, loss_fn=loss, data=data,
                                    seed=seed, epochs=epochs, batch_size=LS_BATCH, hparams={"lr": LS_LR},
                                    callbacks=[gap_cb], log_every=10,
                                    config={"model": LS_MODEL, "eps": eps, "form": form})
                scores = {}
                for split in ("val", "test"):
                    s = getattr(data, split)
                    z = predict_logits(model, s.x, ctx.device)
                    p = z.softmax(1)
                    scores[split] = {
                        "accuracy": float((p.argmax(1) == s.y).double().mean()),
                        "ece": expected_calibration_error(p, s.y),
                        "nll": float(F.cross_entropy(z.double(), s.y)),
                        "confidence": float(p.max(1).values.double().mean()),
                        "logit_norm": float(z.double().norm(dim=1).mean()),
                    }
                    if split == "test":
                        key = f"{dataset}|{eps:g}|{form}|{seed}"
                        arrays[f"p|{key}"] = p.numpy()
                        arrays[f"y|{dataset}|{seed}"] = s.y.numpy()
                        if seed == seeds[0]:
                            probs[(dataset, eps, form)] = (p, s.y)
                        if check is None and eps > 0 and form == "chapter":
                            check = _exercise_7_5(z, s.y, eps)
                runs[(eps, form)].append({"val": scores["val"], "test": scores["test"], "gap": trace,
                                          "train_gap": trace[-1]})
                gaps.setdefault((dataset, eps, form), []).append(trace)
        for eps, form in settings:
            rs = runs[(eps, form)]
            row: dict[str, Any] = {"dataset": dataset, "form": "none (hard targets)" if eps == 0 else form, "eps": eps}
            for key in ("accuracy", "ece", "nll", "confidence", "logit_norm"):
                row[f"test {key}"], sd = mean_std(r["test"][key] for r in rs)
                if key in ("accuracy", "ece"):
                    row[f"test {key} sd"] = sd
            row["val ece"] = mean_std(r["val"]["ece"] for r in rs)[0]
            row["train logit gap"] = mean_std(r["train_gap"] for r in rs)[0]
            half = [r["gap"][len(r["gap"]) // 2] for r in rs]
            row["gap growth (2nd half)"] = row["train logit gap"] - float(np.mean(half))
            row["closed-form gap"] = closed_form_gap(eps, k, form)
            row["epochs"] = epochs
            rows.append(row)
            per_seed[(dataset, eps, row["form"])] = rs

    claims = _label_smoothing_claims(rows, per_seed, check)
    figures = _label_smoothing_figures(rows, gaps, probs)
    _save_arrays(ctx, "predictions.npz", arrays)
    notes = (
        f"MLP {LS_MODEL['hidden']}, Adam lr {LS_LR}, batch {LS_BATCH}; {len(seeds)} seed(s), mean (sd = population "
        "std over seeds). ECE: 15 equal-width confidence bins. 'train logit gap': mean over training examples of "
        "z_y - mean_{j != y} z_j after the last epoch; 'closed-form gap': the gap that minimizes the smoothed loss "
        "(inf for hard targets); 'gap growth (2nd half)': its change over the second half of training. Test "
        "probabilities of every run: predictions.npz (keys p|dataset|eps|form|seed, y|dataset|seed)."
    )
    return Result(table=rows, claims=claims, figures=figures, notes=notes)


def _exercise_7_5(z: Tensor, y: Tensor, eps: float) -> dict[str, float]:
    """Exercise 7-5 with numbers: the chapter's smoothed cross-entropy against its closed form, against torch's
    soft-target cross-entropy, and against the uniform form with ``eps K / (K - 1)``."""
    from optreg.regularize.losses import smooth_labels

    k = z.shape[1]
    z = z.double()
    logp = F.log_softmax(z, 1)
    true = logp.gather(1, y[:, None])[:, 0]
    closed = (-(1 - eps) * true - eps / (k - 1) * (logp.sum(1) - true)).mean()
    ours = label_smoothing_cross_entropy(z, y, eps, "chapter")
    soft = F.cross_entropy(z, smooth_labels(y, k, eps, "chapter").double())
    uniform = label_smoothing_cross_entropy(z, y, eps * k / (k - 1), "uniform")
    return {"eps": eps, "loss": float(ours), "closed": abs(float(ours - closed)), "soft": abs(float(ours - soft)),
            "uniform": abs(float(ours - uniform))}


def _label_smoothing_claims(
    rows: list[dict[str, Any]],
    per_seed: Mapping[tuple[str, float, str], list[dict[str, Any]]],
    check: dict[str, float] | None,
) -> list[dict[str, Any]]:
    """The claims of section 7.7.6 from the table ``rows`` and each row's runs, ``per_seed[(dataset, eps,
    form)]`` (one dict per seed: ``test`` scores, ``gap`` trace, ``train_gap``), compared over seeds with
    :func:`~optreg.experiments.base.exceeds`."""

    def seeds_of(r: Mapping[str, Any], key: str) -> list[float]:
        runs = per_seed[(r["dataset"], r["eps"], r["form"])]
        if key == "growth":  # the train logit gap's change over the second half of training
            return [run["train_gap"] - run["gap"][len(run["gap"]) // 2] for run in runs]
        return [run["train_gap"] if key == "train_gap" else run["test"][key] for run in runs]

    claims = []
    if check is not None:
        worst = max(check["closed"], check["soft"], check["uniform"])
        claims.append(claim(
            "exercise 7-5: with smoothed targets the cross-entropy is -(1 - eps) log p_y - eps/(K-1) sum_{k != y} "
            "log p_k (the uniform form with eps K/(K-1))",
            f"eps = {check['eps']:g} on test logits: |ours - closed form| = {check['closed']:.1e}, |ours - torch "
            f"soft-target CE| = {check['soft']:.1e}, |ours - uniform(eps K/(K-1))| = {check['uniform']:.1e}",
            worst < 1e-6,  # torch's soft targets are float32 (smooth_labels uses the default dtype)
        ))
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]
        hard = rs[0]
        smooth = [r for r in rs if r["eps"] > 0]
        if not smooth:
            continue
        bounds = [exceeds(r["closed-form gap"] * 1.1, seeds_of(r, "train_gap"), fmt=".2f") for r in smooth]
        growing = exceeds(seeds_of(hard, "growth"), 0.0, fmt=".2f")
        beyond = exceeds(seeds_of(hard, "train_gap"), max(r["closed-form gap"] for r in smooth), fmt=".2f")
        claims.append(claim(
            f"{dataset}: label smoothing stops the logits from growing without bound (section 7.7.6: hard targets "
            "push the true class's score ever further above the others)",
            f"hard targets: train logit gap {hard['train logit gap']:.2f}, still growing by "
            f"{hard['gap growth (2nd half)']:+.2f} over the second half; smoothed: "
            + ", ".join(f"eps {r['eps']:g} {r['form'][0]} {r['train logit gap']:.2f} (bound "
                        f"{r['closed-form gap']:.2f}, {r['gap growth (2nd half)']:+.2f}; 1.1 x bound - gap {c.text})"
                        for r, c in zip(smooth, bounds))
            + f"; hard targets' growth {growing.text}, its gap minus the largest bound {beyond.text}",
            all(c.holds for c in bounds) and growing.holds and beyond.holds,
        ))
        chosen = min(smooth, key=lambda r: r["val ece"])
        calibrates = exceeds(seeds_of(hard, "ece"), seeds_of(chosen, "ece"))
        claims.append(claim(
            f"{dataset}: label smoothing improves calibration",
            f"test ECE: hard targets {hard['test ece']:.3f} (confidence {hard['test confidence']:.3f}, accuracy "
            f"{hard['test accuracy']:.3f}); eps {chosen['eps']:g} {chosen['form']} (lowest validation ECE) "
            f"{chosen['test ece']:.3f} (confidence {chosen['test confidence']:.3f}); every setting: "
            + ", ".join(f"{r['eps']:g}{r['form'][0]} {r['test ece']:.3f}" for r in smooth)
            + f"; hard - chosen {calibrates.text}",
            calibrates.holds,
        ))
        worst = min(smooth, key=lambda r: r["test accuracy"])
        harmless = exceeds(seeds_of(worst, "accuracy"), seeds_of(hard, "accuracy"), margin=-0.01)
        claims.append(claim(
            f"{dataset}: label smoothing usually does not hurt classification (section 7.7.6)",
            f"test accuracy: hard targets {hard['test accuracy']:.3f}; smoothed "
            f"{min(r['test accuracy'] for r in smooth):.3f}"
            f"..{max(r['test accuracy'] for r in smooth):.3f} (lowest at eps {worst['eps']:g} {worst['form']}; "
            f"lowest - hard {harmless.text}; criterion: not below by more than 0.01)",
            harmless.holds,
        ))
    return claims


def _label_smoothing_figures(rows, gaps, probs):
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig_ece, axes = plots.new_figure(2, len(datasets), title="Label smoothing: calibration and accuracy against eps")
    for i, dataset in enumerate(datasets):
        ax_e, ax_a = axes[2 * i], axes[2 * i + 1]
        rs = [r for r in rows if r["dataset"] == dataset]
        for form, marker in (("chapter", "o"), ("uniform", "s")):
            pts = [r for r in rs if r["form"] == form or r["eps"] == 0]
            xs = [r["eps"] for r in pts]
            ax_e.plot(xs, [r["test ece"] for r in pts], marker=marker, label=f"{form} form")
            ax_a.plot(xs, [r["test accuracy"] for r in pts], marker=marker, label=f"{form} form")
        ax_e.set(title=f"{dataset}: test ECE", xlabel="eps", ylabel="expected calibration error")
        ax_a.set(title=f"{dataset}: test accuracy", xlabel="eps", ylabel="accuracy")
        for a in (ax_e, ax_a):
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8, frameon=False)
    # reliability diagrams: hard targets vs the chapter form at each eps, first seed
    shown = [key for key in probs if key[2] == "chapter"]
    fig_rel, axes = plots.new_figure(len(shown) // len(datasets), len(datasets), panel_size=(3.6, 3.4),
                                     title="Reliability diagrams (test set, first seed; chapter form)")
    for ax, key in zip(axes, shown):
        p, y = probs[key]
        conf, acc, count = (t.numpy() for t in reliability_bins(p, y))
        edges = np.linspace(0, 1, len(conf) + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        full = count > 0
        ax.bar(centers[full], acc[full], width=1 / len(conf), edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(title=f"{key[0]} eps={key[1]:g}: ECE {expected_calibration_error(p, y):.3f}", xlabel="confidence",
               ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    gap_panels = []
    for dataset in datasets:
        series = {f"eps={e:g} {f}": runs for (d, e, f), runs in gaps.items() if d == dataset}
        gap_panels.append(plots.Panel(series, title=f"{dataset}: training logit gap z_y - mean z_j", xlabel="epoch",
                                      ylabel="mean logit gap",
                                      x=list(range(1, 1 + max(len(r[0]) for r in series.values())))))
    fig_gap = plots.curves_figure(gap_panels, title="Hard targets keep pushing the logits apart; smoothing bounds them")
    return {"calibration": fig_ece, "reliability": fig_rel, "logit-gap": fig_gap}


# ------------------------------------------------------------------------------------------ distillation

TEACHER = {"kind": "mlp", "hidden": [512, 512], "activation": "relu"}
STUDENT = {"kind": "mlp", "hidden": [32, 32, 32], "activation": "relu"}
#: Distillation's temperature and the weight of the soft term (Hinton et al. 2015 use a large weight on it).
KD_T, KD_ALPHA = 4.0, 0.9
KD_LR, KD_BATCH = 1e-3, 32
#: The temperatures of the T^2 check.
TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _prefix(model: nn.Module, upto: str) -> nn.Sequential:
    """The layers of a built MLP (an ``nn.Sequential``) up to and including the child named ``upto``; they are
    the model's own modules (training the prefix trains the model)."""
    names = [n for n, _ in model.named_children()]
    if upto not in names:
        raise KeyError(upto)
    return nn.Sequential(*[m for n, m in model.named_children()][: names.index(upto) + 1])


def _middle(spec: Mapping[str, Any]) -> str:
    """The activation of the middle hidden layer of an MLP spec (``act2`` of three, ``act1`` of two)."""
    return f"act{(len(spec['hidden']) + 1) // 2}"


def _width(spec: Mapping[str, Any]) -> int:
    """The width of :func:`_middle`'s layer."""
    return int(spec["hidden"][(len(spec["hidden"]) + 1) // 2 - 1])


class _WithTeacher(nn.Module):
    """The student, and (not a submodule: never trained, always in evaluation mode) the teacher, whose logits
    for the batch just seen are ``teacher_logits`` (for the distillation loss)."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self._teacher = (teacher.eval(),)
        self.teacher_logits: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            self.teacher_logits = self._teacher[0](x)
        return self.student(x)


def soft_gradient_norms(
    student_logits: Tensor, teacher_logits: Tensor, temperatures: Iterable[float]
) -> list[dict[str, float]]:
    r"""For each ``T``: the Frobenius norm of the gradient of the soft term with respect to the student's logits,
    with the ``T^2`` factor (``distillation_loss(..., target=None)``, autograd) and without it, and the
    high-temperature limit of the former, :math:`\|(z - \bar z) - (v - \bar v)\|_F / (K N)` (Hinton et al.,
    sec. 2.1: for ``T`` large against the logits the scaled gradient is :math:`(z_i - v_i) / (K N)` for
    zero-mean logits, independent of ``T``)."""
    z0 = student_logits.detach().double()
    v = teacher_logits.detach().double()
    n, k = z0.shape
    limit = float(((z0 - z0.mean(1, keepdim=True)) - (v - v.mean(1, keepdim=True))).norm() / (k * n))
    out = []
    for t in temperatures:
        z = z0.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(distillation_loss(z, v, None, T=t), z)
        g = float(grad.norm())
        out.append({"T": float(t), "scaled": g, "unscaled": g / (t * t), "limit": limit})
    return out


@register(
    "distillation",
    title="Knowledge distillation and FitNets hints",
    figure="section 7.7.6, file 002",
    help="teacher, student alone, student distilled (T, soft targets, T^2), student with hints; the T^2 factor checked",
)
def run_distillation(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)
    epochs = ctx.epoch_count(default=20, quick=2)
    hint_epochs = max(1, epochs // 4)
    dataset = ctx.dataset or "mnist1d"
    results: dict[str, list[float]] = {k: [] for k in ("teacher", "student alone", "student distilled",
                                                         "student with hints")}
    secs: dict[str, list[float]] = {k: [] for k in results}
    norms: list[dict[str, float]] = []
    arrays: dict[str, np.ndarray] = {}
    ctx.expect_runs(len(seeds) * 5)  # teacher, student alone, distilled, hints' two stages
    for seed in seeds:
        data = ctx.load_data(seed, dataset=dataset)
        common = {"optimizer": "adam", "hparams": {"lr": KD_LR}, "seed": seed, "batch_size": KD_BATCH,
                  "epochs": epochs, "data": data, "log_every": 10}
        teacher = ctx.train("teacher", model_spec=TEACHER, **common)
        alone = ctx.train("student alone", model_spec=STUDENT, **common)
        for label, run in (("teacher", teacher), ("student alone", alone)):
            results[label].append(run.test_accuracy)
            secs[label].append(run.seconds)
        t_model = teacher.model.eval()

        # distilled: the same student, soft targets from the teacher
        student = build_model(STUDENT, data, seed=seed)
        wrapped = _WithTeacher(student, t_model)

        def kd(z: Tensor, y: Tensor, w: _WithTeacher = wrapped) -> Tensor:
            return distillation_loss(z, w.teacher_logits, y, T=KD_T, alpha=KD_ALPHA)

        fit = fit_with_loss(ctx, "student distilled", model=wrapped, loss_fn=kd, data=data, seed=seed,
                            epochs=epochs, batch_size=KD_BATCH, hparams={"lr": KD_LR}, log_every=10,
                            config={"model": STUDENT, "teacher": TEACHER, "T": KD_T, "alpha": KD_ALPHA})
        results["student distilled"].append(fit.test_accuracy)
        secs["student distilled"].append(fit.seconds)

        # hints (FitNets): stage 1 regresses the teacher's middle layer from the student's, stage 2 distils
        student = build_model(STUDENT, data, seed=seed)
        guided, hint = _prefix(student, _middle(STUDENT)), _prefix(t_model, _middle(TEACHER))
        targets = {s: Split(getattr(data, s).x, predict_logits(hint, getattr(data, s).x, ctx.device))
                   for s in ("train", "val")}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            regressor = hint_regressor((_width(STUDENT),), (_width(TEACHER),)).to(ctx.device)

        def hint_fn(g: Tensor, h: Tensor, r: nn.Module = regressor) -> Tensor:
            return hint_loss(g, h, r)

        stage1 = fit_with_loss(ctx, "hints: stage 1", model=guided, loss_fn=hint_fn, data=data, seed=seed,
                               epochs=hint_epochs, batch_size=KD_BATCH, hparams={"lr": KD_LR},
                               parameters=[*guided.parameters(), *regressor.parameters()],
                               train=targets["train"], val=targets["val"], log_every=10, metrics=("loss",),
                               score_test=False,
                               config={"model": STUDENT, "teacher": TEACHER, "stage": 1})
        wrapped = _WithTeacher(student, t_model)
        stage2 = fit_with_loss(ctx, "student with hints", model=wrapped,
                               loss_fn=lambda z, y, w=wrapped: distillation_loss(z, w.teacher_logits, y, T=KD_T,
                                                                                 alpha=KD_ALPHA),
                               data=data, seed=seed, epochs=epochs, batch_size=KD_BATCH, hparams={"lr": KD_LR},
                               log_every=10, config={"model": STUDENT, "teacher": TEACHER, "stage": 2, "T": KD_T,
                                                     "alpha": KD_ALPHA})
        results["student with hints"].append(stage2.test_accuracy)
        secs["student with hints"].append(stage1.seconds + stage2.seconds)
        if seed == seeds[0]:
            z = predict_logits(alone.model, data.test.x, ctx.device)
            v = predict_logits(t_model, data.test.x, ctx.device)
            norms = soft_gradient_norms(z, v, TEMPERATURES)
            arrays = {"student_logits": z.numpy(), "teacher_logits": v.numpy(), "y": data.test.y.numpy(),
                      **{key: np.array([r[key] for r in norms]) for key in ("T", "scaled", "unscaled", "limit")}}

    from optreg.nn.models import count_parameters

    sizes = {"teacher": TEACHER, "student alone": STUDENT, "student distilled": STUDENT, "student with hints": STUDENT}
    table = []
    for label, accs in results.items():
        mean, sd = mean_std(accs)
        table.append({"model": label, "hidden": str(sizes[label]["hidden"]),
                      "parameters": count_parameters(build_model(sizes[label], data, seed=0)),
                      "test accuracy": mean, "test accuracy sd": sd,
                      "min": min(accs), "max": max(accs), "per seed": " ".join(f"{a:.3f}" for a in accs),
                      "seconds": mean_std(secs[label])[0]})
    claims = _distillation_claims(table, results, norms)
    _save_arrays(ctx, "predictions.npz", arrays)
    figure = _distillation_figure(table, norms)
    notes = (
        f"{dataset}; teacher MLP {TEACHER['hidden']}, student MLP {STUDENT['hidden']}; Adam lr {KD_LR}, batch "
        f"{KD_BATCH}, {epochs} epochs each; distillation alpha = {KD_ALPHA}, T = {KD_T}; hints: stage 1 "
        f"({hint_epochs} epochs) trains the student up to its {_middle(STUDENT)} and a linear regressor to the "
        f"teacher's {_middle(TEACHER)} (FitNets, 1/2 ||u_h - r(v_g)||^2), stage 2 distils the whole student. "
        f"{len(seeds)} seed(s) (split, weights); sd = population std over seeds. The T^2 check uses seed "
        f"{seeds[0]}'s trained student-alone and teacher logits on the test set (predictions.npz)."
    )
    norm_rows = [{"T": r["T"], "grad norm with T^2": r["scaled"], "grad norm without T^2": r["unscaled"],
                  "high-T limit": r["limit"]} for r in norms]
    notes += "\n\nThe soft term's gradient with respect to the student's logits (test set):\n\n"
    notes += format_table(norm_rows)
    return Result(table=table, claims=claims, figures={"distillation": figure}, notes=notes)


def _distillation_claims(table, results, norms) -> list[dict[str, Any]]:
    rows = {r["model"]: r for r in table}
    alone, kd, hints, teacher = (rows[k] for k in ("student alone", "student distilled", "student with hints",
                                                     "teacher"))
    wins = sum(a < b for a, b in zip(results["student alone"], results["student distilled"]))
    soft = exceeds(results["student distilled"], results["student alone"])
    hinted = exceeds(results["student with hints"], results["student distilled"])
    claims = [
        claim("a student trained on the teacher's soft targets beats the same student trained alone (Hinton et al. "
              "2015; section 7.7.6)",
              f"test accuracy: alone {alone['test accuracy']:.3f} +- {alone['test accuracy sd']:.3f}, distilled "
              f"{kd['test accuracy']:.3f} +- {kd['test accuracy sd']:.3f} (better in {wins} of "
              f"{len(results['student alone'])} seeds; distilled - alone {soft.text}); teacher "
              f"{teacher['test accuracy']:.3f}",
              soft.holds),
        claim("hints from the teacher's middle layer help train a deep, thin student beyond distillation alone "
              "(FitNets, Romero et al. 2015; file 002)",
              f"test accuracy: hints + distillation {hints['test accuracy']:.3f} +- {hints['test accuracy sd']:.3f} vs "
              f"distillation alone {kd['test accuracy']:.3f} (hints - distillation {hinted.text}) vs alone "
              f"{alone['test accuracy']:.3f}",
              hinted.holds),
    ]
    if norms:
        scaled = [r["scaled"] for r in norms]
        unscaled = [r["unscaled"] for r in norms]
        hi = [r for r in norms if r["T"] >= 4]
        spread = max(r["scaled"] for r in hi) / min(r["scaled"] for r in hi)
        claims.append(claim(
            "the T^2 factor keeps the soft targets' gradient at the same scale whatever T (Hinton et al. 2015, "
            "sec. 2.1)",
            "||grad_z|| with T^2: " + ", ".join(f"T={r['T']:g} {r['scaled']:.3g}" for r in norms)
            + f" (max/min over T >= 4: {spread:.2f}; high-T limit {norms[0]['limit']:.3g}); without it the norm falls "
            f"{max(unscaled) / min(unscaled):.3g}x from T={norms[0]['T']:g} to T={norms[-1]['T']:g}",
            bool(spread < 1.5 and max(unscaled) / min(unscaled) > 10 * max(scaled) / min(scaled)
                 and abs(norms[-1]["scaled"] / norms[-1]["limit"] - 1) < 0.1),
        ))
    return claims


def _distillation_figure(table, norms):
    fig, (ax_a, ax_g) = plots.new_figure(2, title="Distillation: accuracies and the T^2 factor")
    models = [r for r in table if "test accuracy" in r]
    palette = plots.colors([r["model"] for r in models])
    ax_a.bar(range(len(models)), [r["test accuracy"] for r in models],
             yerr=[r["test accuracy sd"] or 0 for r in models], color=[palette[r["model"]] for r in models], capsize=4)
    ax_a.set_xticks(range(len(models)), [r["model"] for r in models], rotation=15, fontsize=8)
    lo = min(r["min"] for r in models)
    ax_a.set(title="test accuracy (mean +- sd over seeds)", ylabel="accuracy", ylim=(max(0.0, lo - 0.1), None))
    if norms:
        ts = [r["T"] for r in norms]
        ax_g.loglog(ts, [r["scaled"] for r in norms], "o-", label="with T^2 (distillation_loss)")
        ax_g.loglog(ts, [r["unscaled"] for r in norms], "s-", label="without T^2")
        ax_g.axhline(norms[0]["limit"], color="k", linestyle=":", label="high-T limit ||z - v||/(KN)")
        ax_g.set(title="gradient of the soft term w.r.t. the student's logits", xlabel="temperature T",
                 ylabel="||grad||_F")
        ax_g.legend(fontsize=8, frameon=False)
    for a in (ax_a, ax_g):
        a.grid(True, alpha=0.3)
    return fig

