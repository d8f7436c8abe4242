r"""Weight decay and l2 regularization (section 7.7.2, eq. 7.63; exercise 7-3), measured.

Eq. (7.63) decays the parameters at every update, :math:`\theta_t \leftarrow (1 - w)\theta_{t-1} - \alpha g_t`.
The chapter says that in plain SGD this is l2 regularization, and that in Adam it is not (Loshchilov & Hutter,
2017/2019, AdamW). The closed form is the proof of the first half: with the penalty
:math:`\frac\lambda2\lVert\theta\rVert^2` the SGD step is :math:`\theta - \alpha(g + \lambda\theta) =
(1 - \alpha\lambda)\theta - \alpha g`, which is (7.63) with :math:`w = \alpha\lambda`. With momentum the
penalty's gradient :math:`\lambda\theta` enters the velocity and is summed over :math:`\sim 1/(1-\rho)` steps,
so it shrinks the weights like (7.63) with :math:`w \approx \alpha\lambda / (1 - \rho)`, not :math:`\alpha\lambda`;
with Adam it is divided by :math:`\sqrt{\hat v}`, so weights with a large gradient history are shrunk less.

The experiment trains the same MLP (same initial weights, same mini-batches: the same seed) on the same data:

1. **SGD, float64** (:data:`PAIR_SETUPS`): the l2 penalty :math:`\frac\lambda2\lVert\theta\rVert^2` in the
   objective (:func:`optreg.regularize.l2` with ``half=True``, every parameter, its gradient by autograd),
   optreg's ``sgd(weight_decay=lambda)`` (coupled l2 in the optimizer) and eq. (7.63) with :math:`w = \alpha
   \lambda` (:func:`sgd_7_63`); the largest parameter difference at every step, against the round-off bound
   :func:`roundoff_bound` and against the decay's own effect (the run without decay). The penalty pair again
   in float32, the precision a user trains in.
2. **Momentum** (:math:`\rho = 0.9`): coupled l2 against (7.63) with :math:`w = \alpha\lambda` and with
   :math:`w = \alpha\lambda / (1 - \rho)`; the effective shrinkage per step of the coupled run
   (:func:`effective_shrinkage`), the final weight norms and test accuracies over the seeds.
3. **Adam**: ``adam(weight_decay=lambda)`` (coupled l2) against ``adamw(weight_decay=lambda)`` (decoupled,
   :math:`\theta \leftarrow \theta - \alpha(\hat m / (\sqrt{\hat v} + \epsilon) + \lambda\theta)`): the
   parameter difference in float64, then in float32 a sweep over :data:`LAMBDAS` on the data (digits by
   default), :data:`SEEDS` seeds: the test accuracy at the strength chosen by validation, the final weight
   norms, and Loshchilov & Hutter's mechanism measured per weight (:func:`shrinkage_stats`): the ratio
   :math:`|\theta_i| / |\theta_i^{\lambda=0}|` to the same seed's run without decay, against the weight's
   gradient history :math:`\sqrt{\hat v_i}` of that run (Adam's second moment, :class:`GradientHistory`).

Every verdict that compares means over seeds requires the difference to exceed two standard errors
(``base.exceeds`` / ``base.differs``). The table is the sweep, one row per method and strength; the claims
are ``Result.claims``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from optreg._checks import check_nonneg, check_positive
from optreg.experiments.base import (
    Context,
    Result,
    RunHistory,
    claim,
    differs,
    exceeds,
    fmt_value,
    mean_std,
    register,
)
from optreg.optim import Optimizer
from optreg.optim import transforms as T
from optreg.optim.combine import chain
from optreg.regularize import l2
from optreg.report import plots
from optreg.train import Callback, Trainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optreg.data import Splits

__all__ = [
    "ADAM_LR",
    "COMPARISONS",
    "LAMBDA",
    "LAMBDAS",
    "MODEL",
    "MOMENTUM",
    "MOMENTUM_LR",
    "PAIR_SETUPS",
    "SGD_LR",
    "GradientHistory",
    "Trajectory",
    "effective_shrinkage",
    "max_difference",
    "roundoff_bound",
    "run",
    "sgd_7_63",
    "shrinkage_stats",
    "train_setup",
    "weight_decay_7_63",
]

MODEL = {"kind": "mlp", "hidden": [64], "activation": "relu"}
BATCH_SIZE = 32
#: Plain SGD's learning rate; with :data:`LAMBDA` it gives w = alpha lambda = 5e-4, the chapter's typical w.
SGD_LR = 0.1
#: Momentum's learning rate and rho: alpha / (1 - rho) = 0.1, plain SGD's.
MOMENTUM_LR, MOMENTUM = 0.01, 0.9
#: Adam's learning rate (and AdamW's), the usual default.
ADAM_LR = 1e-3
#: lambda of the pairs (parts 1 and 2, and part 3's float64 pair): the penalty lambda/2 ||theta||^2.
LAMBDA = 5e-3
#: The Adam sweep (part 3): one lambda for both, as ``weight_decay`` of adam (coupled) and of adamw.
LAMBDAS = (5e-4, 5e-3, 5e-2, 5e-1)
#: Seeds of the full run.
SEEDS = 3
_OWNER = "weight-decay"
_F64, _F32 = torch.float64, torch.float32
#: The pairs compared step by step: ``(what, run a, run b, precision)``; the runs are :data:`PAIR_SETUPS`' names
#: (float64), ``"<name> float32"`` the float32 runs.
COMPARISONS = (
    ("sgd: l2 penalty vs 7.63, float64", "sgd l2 penalty", "sgd 7.63", _F64),
    ("sgd: l2 penalty vs 7.63, float32", "sgd l2 penalty float32", "sgd 7.63 float32", _F32),
    ("sgd: weight_decay vs 7.63, float64", "sgd weight_decay", "sgd 7.63", _F64),
    ("sgd: 7.63 vs no decay", "sgd 7.63", "sgd none", _F64),
    ("momentum: l2 vs 7.63 w = alpha lambda", "momentum l2", "momentum 7.63 w=al", _F64),
    ("momentum: l2 vs 7.63 w = alpha lambda / (1 - rho)", "momentum l2", "momentum 7.63 w=al/(1-rho)", _F64),
    ("momentum: l2 vs no decay", "momentum l2", "momentum none", _F64),
    ("adam: l2 vs adamw", "adam l2", "adamw", _F64),
    ("adam: l2 vs no decay", "adam l2", "adam none", _F64),
    ("adam: adamw vs no decay", "adamw", "adam none", _F64),
)


# ------------------------------------------------------------------------------------------- optimizers


def sgd_7_63(lr: float = 0.01, decay: float = 0.0, momentum: float = 0.0) -> T.Transform:
    r"""Eq. (7.63) as an optimizer: :math:`\theta \leftarrow (1 - w)\theta - \alpha g` with ``decay`` :math:`= w`
    (not multiplied by ``lr``); with ``momentum`` :math:`\rho > 0`, :math:`\theta \leftarrow (1 - w)\theta - \alpha
    m_t`, :math:`m_t = \rho m_{t-1} + g_t` (eq. 7.14; the decay stays outside the velocity)."""
    check_nonneg(_OWNER, "momentum", momentum)
    parts = [T.trace(momentum, name="sgd_7_63")] if momentum > 0 else []
    return chain(*parts, T.scale_by_learning_rate(lr, name="sgd_7_63"), T.decay_weights(decay, name="sgd_7_63"))


def weight_decay_7_63(params: Iterable[Any], lr: float = 0.01, decay: float = 0.0, momentum: float = 0.0) -> Optimizer:
    """:func:`sgd_7_63` as a torch optimizer (what a run spec's ``optimizer.name`` may hold)."""
    return Optimizer(params, sgd_7_63, lr=lr, decay=decay, momentum=momentum)


#: The setups of parts 1-3's pairs: ``name -> (optimizer, hyperparameters, penalty or None)``.
PAIR_SETUPS: dict[str, tuple[Any, dict[str, float], Any]] = {
    "sgd l2 penalty": ("sgd", {"lr": SGD_LR}, l2(LAMBDA, half=True, include="all")),
    "sgd weight_decay": ("sgd", {"lr": SGD_LR, "weight_decay": LAMBDA}, None),
    "sgd 7.63": (weight_decay_7_63, {"lr": SGD_LR, "decay": SGD_LR * LAMBDA}, None),
    "sgd none": ("sgd", {"lr": SGD_LR}, None),
    "momentum l2": ("momentum", {"lr": MOMENTUM_LR, "momentum": MOMENTUM, "weight_decay": LAMBDA}, None),
    "momentum 7.63 w=al": (
        weight_decay_7_63, {"lr": MOMENTUM_LR, "decay": MOMENTUM_LR * LAMBDA, "momentum": MOMENTUM}, None
    ),
    "momentum 7.63 w=al/(1-rho)": (
        weight_decay_7_63,
        {"lr": MOMENTUM_LR, "decay": MOMENTUM_LR * LAMBDA / (1 - MOMENTUM), "momentum": MOMENTUM},
        None,
    ),
    "momentum none": ("momentum", {"lr": MOMENTUM_LR, "momentum": MOMENTUM}, None),
    "adam l2": ("adam", {"lr": ADAM_LR, "weight_decay": LAMBDA}, None),
    "adamw": ("adamw", {"lr": ADAM_LR, "weight_decay": LAMBDA}, None),
    "adam none": ("adam", {"lr": ADAM_LR}, None),
}


# ------------------------------------------------------------------------------------------- recording


def _flat(tensors: Iterable[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    return torch.cat([(torch.zeros_like(p) if t is None else t).detach().flatten() for t, p in zip(tensors, like)])


class Trajectory(Callback):
    """The parameters (all of them, flattened, in ``model.parameters()`` order) before the first step and after
    every step: ``thetas[t]`` is :math:`\\theta_t`; with ``grads=True`` also ``grads[t - 1]``, the gradient
    :math:`g_t` the step used (``p.grad``, the penalty's part included when the penalty is in the objective)."""

    def __init__(self, grads: bool = False) -> None:
        self.record_grads = grads
        self.thetas: list[Tensor] = []
        self.grads: list[Tensor] = []

    def _params(self, trainer: Trainer) -> list[Tensor]:
        return list(trainer.model.parameters())

    def on_fit_start(self, trainer: Trainer) -> None:
        ps = self._params(trainer)
        self.thetas.append(_flat(ps, ps).clone())

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        ps = self._params(trainer)
        self.thetas.append(_flat(ps, ps).clone())
        if self.record_grads:
            self.grads.append(_flat([p.grad for p in ps], ps).clone())


class GradientHistory(Callback):
    r"""Adam's second moment of the data gradient of each parameter, computed alongside any run:
    :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2`, and at the end :math:`\hat v = v_T / (1 - \beta_2^T)`
    (eqs. 7.19, 7.21); for a run of Adam without decay it is that optimizer's own :math:`\hat v`. ``v_hat`` is a
    list in ``model.parameters()`` order."""

    def __init__(self, beta2: float = 0.999) -> None:
        self.beta2 = beta2
        self.v: list[Tensor] = []
        self.steps = 0
        self.v_hat: list[Tensor] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.v = [torch.zeros_like(p, dtype=torch.float64) for p in trainer.model.parameters()]

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.steps += 1
        for v, p in zip(self.v, trainer.model.parameters()):
            if p.grad is not None:
                v.mul_(self.beta2).add_(p.grad.detach().double() ** 2, alpha=1 - self.beta2)
            else:
                v.mul_(self.beta2)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.v_hat = [v / (1 - self.beta2**self.steps) for v in self.v] if self.steps else list(self.v)


@contextmanager
def _default_dtype(dtype: torch.dtype):
    """Models built inside are ``dtype`` (the engine builds them in the default dtype); restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _as_dtype(data: Splits, dtype: torch.dtype) -> Splits:
    """``data`` with its features in ``dtype`` (itself when they are already)."""
    if all(s.x.dtype == dtype for s in data if hasattr(s, "x")):
        return data
    return data._replace(**{k: type(s)(s.x.to(dtype), s.y) for k, s in zip(data._fields, data) if hasattr(s, "x")})


def train_setup(
    ctx: Context,
    name: str,
    *,
    seed: int,
    epochs: int,
    data: Splits,
    dtype: torch.dtype = torch.float64,
    callbacks: Sequence[Callback] = (),
    setup: tuple[Any, Mapping[str, float], Any] | None = None,
) -> RunHistory:
    """Train :data:`MODEL` with the setup ``name`` of :data:`PAIR_SETUPS` (or ``setup``) in ``dtype`` through
    :meth:`Context.train_spec` (recorded like every run); the same seed gives the same initial weights and
    mini-batches whatever the setup. The engine builds models in torch's default dtype, so that is set to
    ``dtype`` for the run (and restored after it), and the data's features are cast to it."""
    optimizer, hparams, penalty = PAIR_SETUPS[name] if setup is None else setup
    precision = {torch.float64: "float64", torch.float32: "float32"}[dtype]
    spec = {
        "name": f"{name} {precision}",
        "model": MODEL,
        "optimizer": {"name": optimizer, **hparams},
        "train": {"batch_size": BATCH_SIZE, "epochs": epochs, "seed": seed, "penalty": penalty},
    }
    with _default_dtype(dtype):
        return ctx.train_spec(
            spec, _as_dtype(data, dtype), callbacks=callbacks, config={"setup": name, "dtype": precision}
        )


# ------------------------------------------------------------------------------------------- measures


def max_difference(a: Sequence[Tensor], b: Sequence[Tensor]) -> list[float]:
    r""":math:`\max_i |\theta^a_{t,i} - \theta^b_{t,i}|` for every step :math:`t \ge 1` of two trajectories."""
    return [float((x - y).abs().max()) for x, y in zip(a[1:], b[1:])]


def roundoff_bound(thetas: Sequence[Tensor], dtype: torch.dtype) -> float:
    r"""What round-off alone may make of two trajectories that are equal in exact arithmetic: a few units in the
    last place per step, accumulated over the :math:`T` steps, :math:`4 T \epsilon \max_{t,i} |\theta_{t,i}|`
    (:math:`\epsilon` the machine epsilon of ``dtype``)."""
    scale = max(float(t.abs().max()) for t in thetas)
    return 4 * (len(thetas) - 1) * torch.finfo(dtype).eps * scale


def effective_shrinkage(thetas: Sequence[Tensor], lr: float, strength: float, momentum: float) -> list[float]:
    r"""The shrinkage per step that the coupled l2 penalty applies through momentum's velocity.

    The velocity is linear in the gradient, so its penalty part is exactly :math:`m^\lambda_t = \rho
    m^\lambda_{t-1} + \lambda\theta_{t-1}`, and the step moves :math:`\theta` by :math:`-\alpha m^\lambda_t` for
    it. Returned per step: the fraction of :math:`\theta_{t-1}` removed along itself, :math:`s_t = \alpha \langle
    m^\lambda_t, \theta_{t-1}\rangle / \lVert\theta_{t-1}\rVert^2`, to compare with (7.63)'s :math:`w`
    (:math:`\alpha\lambda` in plain SGD; :math:`\alpha\lambda / (1 - \rho)` once :math:`\theta` changes slowly
    over :math:`1/(1 - \rho)` steps)."""
    check_positive(_OWNER, "lr", lr)
    m = torch.zeros_like(thetas[0])
    out = []
    for prev in thetas[:-1]:
        m = momentum * m + strength * prev
        out.append(float(lr * (m @ prev) / (prev @ prev)))
    return out


def _weights(model: nn.Module) -> list[Tensor]:
    return [p.detach() for p in model.parameters() if p.ndim > 1]


def _norm(model: nn.Module) -> float:
    return float(torch.cat([p.detach().double().flatten() for p in model.parameters()]).norm())


def shrinkage_stats(
    model: nn.Module, base: nn.Module, v_hat: Sequence[Tensor], dead_inputs: Tensor | None = None, bins: int = 8
) -> dict[str, Any]:
    r"""Per weight (``ndim > 1``): the ratio :math:`r_i = |\theta_i| / |\theta_i^{\lambda=0}|` of ``model`` to the
    same seed's run without decay ``base``, against :math:`\sqrt{\hat v_i}` (``v_hat``: the base run's
    :class:`GradientHistory`, in ``parameters()`` order).

    Returns ``spearman`` (rank correlation of :math:`\sqrt{\hat v_i}` and :math:`r_i` over the weights with
    :math:`\hat v_i > 0`: positive when weights with a large gradient history keep more of their size),
    ``centers`` / ``medians`` (the median :math:`r_i` in ``bins`` quantile bins of :math:`\sqrt{\hat v_i}`: the
    geometric mean of each bin's edges), and with ``dead_inputs`` (a boolean mask of the input features that are
    0 in every training example: the first layer's weights on them get no data gradient at all)
    ``dead_ratio``, the median :math:`|\theta_i / \theta_i^{\lambda=0}|` of those weights (None without any).
    """
    sel = [i for i, p in enumerate(model.parameters()) if p.ndim > 1]
    w = torch.cat([p.double().flatten() for p in _weights(model)])
    w0 = torch.cat([p.double().flatten() for p in _weights(base)])
    v = torch.cat([v_hat[i].double().flatten() for i in sel])
    ratio = (w.abs() / w0.abs().clamp_min(torch.finfo(torch.float64).tiny)).numpy()
    rms = v.sqrt().numpy()
    live = rms > 0
    out: dict[str, Any] = {"spearman": None, "centers": [], "medians": [], "dead_ratio": None}
    if live.sum() > 2:
        out["spearman"] = float(stats.spearmanr(rms[live], ratio[live]).statistic)
        edges = np.quantile(rms[live], np.linspace(0, 1, bins + 1))
        idx = np.clip(np.searchsorted(edges, rms[live], side="right") - 1, 0, bins - 1)
        for k in range(bins):
            hit = ratio[live][idx == k]
            if hit.size:
                out["centers"].append(float(math.sqrt(max(edges[k], 1e-30) * edges[k + 1])))
                out["medians"].append(float(np.median(hit)))
    if dead_inputs is not None and bool(dead_inputs.any()):
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        first0 = next(m for m in base.modules() if isinstance(m, nn.Linear))
        mask = dead_inputs.flatten()
        a, b = first.weight.detach()[:, mask].double(), first0.weight.detach()[:, mask].double()
        out["dead_ratio"] = float((a.abs() / b.abs().clamp_min(torch.finfo(torch.float64).tiny)).median())
    return out


def _mean(values: Iterable[float | None]) -> float:
    m = mean_std(values)[0]
    return math.nan if m is None else m


# ------------------------------------------------------------------------------------------- figures


def _difference_figure(curves: dict[str, dict[str, list[list[float]]]], notes: dict[str, str]) -> Figure:
    panels = [
        plots.Panel(
            series,
            title=title,
            xlabel="step",
            ylabel="max |theta_a - theta_b|",
            log_y=True,
            spread="minmax",
            note=notes.get(title, ""),
        )
        for title, series in curves.items()
    ]
    return plots.curves_figure(
        panels, title="Exercise 7-3: the largest parameter difference between two runs from the same start and batches"
    )


def _sweep_figure(rows: list[dict[str, Any]], lambdas: Sequence[float], none: dict[str, Any]) -> Figure:
    panels = []
    for key, label, log_y in (
        ("test_accuracy", "test accuracy", False),
        ("val_accuracy", "validation accuracy", False),
        ("weight_norm", "||theta|| at the end", True),
    ):
        series = {m: [[r[key] for r in rows if r["method"] == m]] for m in ("adam l2", "adamw")}
        series["no decay (lambda = 0)"] = [[none[key]] * len(lambdas)]
        panels.append(
            plots.Panel(series, x=list(lambdas), log_x=True, log_y=log_y, title=f"{label} vs lambda", xlabel="lambda",
                        ylabel=label, spread="none")  # fmt: skip
        )
    return plots.curves_figure(panels, title="Adam with l2 (coupled) vs AdamW (decoupled) at the same lambda")


def _shrinkage_figure(binned: dict[float, dict[str, list[tuple[list[float], list[float]]]]]) -> Figure:
    panels = []
    for lam, by_method in binned.items():
        series = {m: [ys for _, ys in runs] for m, runs in by_method.items() if runs}
        xs = {m: runs[0][0] for m, runs in by_method.items() if runs}
        panels.append(
            plots.Panel(
                series,
                x=xs,
                log_x=True,
                title=f"lambda = {lam:g}",
                xlabel="sqrt(v_hat) of the weight (run without decay)",
                ylabel="median |theta| / |theta without decay|",
                spread="minmax",
            )
        )
    return plots.curves_figure(
        panels,
        ncols=min(4, len(panels)),
        title="Loshchilov & Hutter: with Adam, l2 shrinks the weights with a small gradient history most",
    )


# ------------------------------------------------------------------------------------------- experiment


@register(
    "weight-decay",
    title="Weight decay (7.63) vs l2 regularization in SGD, momentum and Adam (AdamW)",
    figure="ex. 7-3",
    help="exercise 7-3 measured: SGD l2 = weight decay to round-off; momentum and Adam differ; Adam+l2 vs AdamW "
    "over lambda (accuracy by validation, weight norms, shrinkage against sqrt(v))",
    options=("dataset", "seeds", "epochs"),
)
def run(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=SEEDS)
    pair_epochs = ctx.epoch_count(default=8, quick=1)
    sweep_epochs = ctx.epoch_count(default=15, quick=1)
    lambdas = (LAMBDAS[1], LAMBDAS[-1]) if ctx.quick else LAMBDAS
    pairs64 = list(PAIR_SETUPS)
    pairs32 = ["sgd l2 penalty", "sgd 7.63"]
    ctx.expect_runs(len(seeds) * (len(pairs64) + len(pairs32) + 1 + 2 * len(lambdas)))
    claims: list[dict[str, Any]] = []

    # --- parts 1-3: the pairs, float64 (and the SGD pair in float32)
    diff: dict[str, list[list[float]]] = {}
    bound: dict[str, list[float]] = {}
    shrink: list[list[float]] = []
    pair_runs: dict[str, list[RunHistory]] = {name: [] for name in pairs64}
    steps = 0
    data = {seed: ctx.load_data(seed) for seed in seeds}
    for seed in seeds:
        traj: dict[str, list[Tensor]] = {}
        for name in pairs64:
            t = Trajectory()
            h = train_setup(ctx, name, seed=seed, epochs=pair_epochs, data=data[seed], callbacks=[t])
            pair_runs[name].append(h)
            traj[name] = t.thetas
        for name in pairs32:
            t = Trajectory()
            train_setup(ctx, name, seed=seed, epochs=pair_epochs, data=data[seed], dtype=torch.float32, callbacks=[t])
            traj[f"{name} float32"] = t.thetas
        steps = len(traj["sgd 7.63"]) - 1

        for key, x, y, dtype in COMPARISONS:
            diff.setdefault(key, []).append(max_difference(traj[x], traj[y]))
            bound.setdefault(key, []).append(roundoff_bound(traj[x], dtype))
        shrink.append(effective_shrinkage(traj["momentum l2"], MOMENTUM_LR, LAMBDA, MOMENTUM))
        del traj

    def worst(key: str) -> float:
        return max(max(c) for c in diff[key])

    def within(key: str) -> bool:
        return all(max(c) <= b for c, b in zip(diff[key], bound[key]))

    eq64, eq32 = "sgd: l2 penalty vs 7.63, float64", "sgd: l2 penalty vs 7.63, float32"
    wd64, effect = "sgd: weight_decay vs 7.63, float64", "sgd: 7.63 vs no decay"
    claims.append(
        claim(
            "SGD: the l2 penalty lambda/2 ||theta||^2 and weight decay (7.63) with w = alpha lambda give the same "
            "trajectory (exercise 7-3; closed form (1 - alpha lambda) theta - alpha g = theta - alpha (g + lambda "
            "theta)); criterion: float64 difference within the round-off bound 4 T eps max|theta|",
            f"float64, {steps} steps, {len(seeds)} seed(s): max |diff| {worst(eq64):.3g} (bound "
            f"{max(bound[eq64]):.3g}); the decay itself moved the weights by up to {worst(effect):.3g} "
            f"(alpha {SGD_LR:g}, lambda {LAMBDA:g}, w {SGD_LR * LAMBDA:g})",
            within(eq64) and worst(effect) > 1e3 * max(bound[eq64]),
        )
    )
    claims.append(
        claim(
            "SGD in float32, as a user trains: the two forms still agree to float32 round-off (criterion: within "
            "4 T eps32 max|theta|)",
            f"max |diff| {worst(eq32):.3g} (bound {max(bound[eq32]):.3g}; {worst(eq32) / worst(effect):.2g} of the "
            f"decay's own effect); the same pair in float64 stays at {worst(eq64):.2g}, so this is round-off "
            "amplified by the training itself, not a difference of the two forms",
            within(eq32),
        )
    )
    claims.append(
        claim(
            "frameworks implement weight decay as l2 in the optimizer (7.7.2): optreg's sgd(weight_decay=lambda) "
            "is (7.63) with w = alpha lambda (criterion: float64 difference within round-off)",
            f"max |diff| {worst(wd64):.3g} (0 means the same floating-point operations: the adapter folds both "
            "into one parameter write)",
            within(wd64),
        )
    )

    m1, m2, m0 = (
        "momentum: l2 vs 7.63 w = alpha lambda",
        "momentum: l2 vs 7.63 w = alpha lambda / (1 - rho)",
        "momentum: l2 vs no decay",
    )
    claims.append(
        claim(
            "momentum: l2 and (7.63) with w = alpha lambda are no longer the same trajectory (criterion: float64 "
            "difference 1000 times the round-off bound)",
            f"max |diff| {worst(m1):.3g} (round-off bound {max(bound[m1]):.3g}; l2 vs no decay {worst(m0):.3g})",
            worst(m1) > 1e3 * max(bound[m1]),
        )
    )
    half = [s[len(s) // 2 :] for s in shrink]
    amplification = _mean(float(np.mean(h)) for h in half) / (MOMENTUM_LR * LAMBDA)
    claims.append(
        claim(
            "momentum: the velocity sums the penalty's gradient, so coupled l2 shrinks the weights like (7.63) with "
            "w = alpha lambda / (1 - rho) (criterion: the measured shrinkage per step over the second half of "
            "training within 10% of 1 / (1 - rho) times alpha lambda)",
            f"shrinkage per step / (alpha lambda) = {amplification:.3f} (1 / (1 - rho) = {1 / (1 - MOMENTUM):.3g}); "
            f"first step {shrink[0][0] / (MOMENTUM_LR * LAMBDA):.3f}",
            abs(amplification * (1 - MOMENTUM) - 1) < 0.1,
        )
    )
    norm = {k: [_norm(h.model) for h in runs] for k, runs in pair_runs.items()}  # type: ignore[arg-type]
    acc = {k: [h.test_accuracy for h in runs] for k, runs in pair_runs.items()}
    d_norm = differs(norm["momentum 7.63 w=al"], norm["momentum l2"], fmt=".3g")
    d_acc = differs(acc["momentum l2"], acc["momentum 7.63 w=al"], fmt=".3g")
    claims.append(
        claim(
            "momentum: l2 and (7.63) with w = alpha lambda do not have the same effect on the weights (criterion: "
            "the final ||theta|| differ by more than 2 SE over the seeds)",
            f"||theta||: l2 {_mean(norm['momentum l2']):.4g}, 7.63 w = alpha lambda "
            f"{_mean(norm['momentum 7.63 w=al']):.4g}, w = alpha lambda / (1 - rho) "
            f"{_mean(norm['momentum 7.63 w=al/(1-rho)']):.4g}, none {_mean(norm['momentum none']):.4g}; "
            f"difference {d_norm.text}",
            d_norm.holds,
        )
    )
    claims.append(
        claim(
            "momentum: l2 and (7.63) with w = alpha lambda do not have the same effect on the test accuracy "
            "(criterion: the test accuracies differ by more than 2 SE over the seeds)",
            f"test accuracy: l2 {_mean(acc['momentum l2']):.4f}, 7.63 w = alpha lambda "
            f"{_mean(acc['momentum 7.63 w=al']):.4f}, w = alpha lambda / (1 - rho) "
            f"{_mean(acc['momentum 7.63 w=al/(1-rho)']):.4f}; difference {d_acc.text}",
            d_acc.holds,
        )
    )
    gap_al = abs(_mean(norm["momentum 7.63 w=al"]) - _mean(norm["momentum l2"]))
    gap_rescaled = abs(_mean(norm["momentum 7.63 w=al/(1-rho)"]) - _mean(norm["momentum l2"]))
    claims.append(
        claim(
            "momentum: (7.63) with the rescaled w = alpha lambda / (1 - rho) is closer to l2 than w = alpha lambda "
            "(criterion: a smaller parameter difference and a smaller gap in ||theta||)",
            f"max |diff| {worst(m2):.3g} vs {worst(m1):.3g}; ||theta|| gap {gap_rescaled:.3g} vs {gap_al:.3g}",
            worst(m2) < worst(m1) and gap_rescaled < gap_al,
        )
    )
    a1, a0, aw0 = "adam: l2 vs adamw", "adam: l2 vs no decay", "adam: adamw vs no decay"
    claims.append(
        claim(
            "Adam: l2 (coupled weight_decay) and AdamW's decoupled decay at the same lambda are not the same "
            "trajectory (Loshchilov & Hutter; criterion: float64 difference 1000 times the round-off bound)",
            f"lambda {LAMBDA:g}: max |diff| {worst(a1):.3g} (bound {max(bound[a1]):.3g}); vs no decay: l2 "
            f"{worst(a0):.3g}, adamw {worst(aw0):.3g}",
            worst(a1) > 1e3 * max(bound[a1]),
        )
    )

    # --- part 3: the Adam sweep on the data, float32
    runs: dict[tuple[str, float], list[RunHistory]] = {}
    base: list[RunHistory] = []
    history: list[GradientHistory] = []
    for seed in seeds:
        g = GradientHistory()
        base.append(
            train_setup(ctx, "adam none", seed=seed, epochs=sweep_epochs, data=data[seed], dtype=torch.float32,
                        callbacks=[g])  # fmt: skip
        )
        history.append(g)
        for method in ("adam l2", "adamw"):
            for lam in lambdas:
                setup = (PAIR_SETUPS[method][0], {"lr": ADAM_LR, "weight_decay": lam}, None)
                runs.setdefault((method, lam), []).append(
                    train_setup(ctx, f"{method} lambda={lam:g}", seed=seed, epochs=sweep_epochs, data=data[seed],
                                dtype=torch.float32, setup=setup)  # fmt: skip
                )
    dead = [(data[s].train.x == 0).all(0) for s in seeds]
    rows: list[dict[str, Any]] = []
    binned: dict[float, dict[str, list[tuple[list[float], list[float]]]]] = {lam: {} for lam in lambdas}
    per_seed: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for (method, lam), hs in runs.items():
        st = [
            shrinkage_stats(h.model, b.model, gh.v_hat, dm)  # type: ignore[arg-type]
            for h, b, gh, dm in zip(hs, base, history, dead)
        ]
        per_seed[(method, lam)] = st
        binned[lam][method] = [(s["centers"], s["medians"]) for s in st if s["medians"]]
        other = runs[("adamw" if method == "adam l2" else "adam l2", lam)]
        gaps = [
            max(float((p - q).detach().abs().max()) for p, q in zip(h.model.parameters(), o.model.parameters()))  # type: ignore[union-attr]
            for h, o in zip(hs, other)
        ]
        row: dict[str, Any] = {"method": method, "lambda": lam}
        row["val_accuracy"], row["val_accuracy_sd"] = mean_std(h.final("val_accuracy") for h in hs)
        row["test_accuracy"], row["test_accuracy_sd"] = mean_std(h.test_accuracy for h in hs)
        row["weight_norm"], row["weight_norm_sd"] = mean_std(_norm(h.model) for h in hs)  # type: ignore[arg-type]
        row["max_diff_to_other"] = max(gaps)
        row["spearman"] = mean_std(s["spearman"] for s in st)[0]
        row["dead_ratio"] = mean_std(s["dead_ratio"] for s in st)[0]
        row["diverged"] = sum(h.diverged for h in hs)
        rows.append(row)
    none_row = {
        "val_accuracy": mean_std(h.final("val_accuracy") for h in base)[0],
        "test_accuracy": mean_std(h.test_accuracy for h in base)[0],
        "weight_norm": mean_std(_norm(h.model) for h in base)[0],  # type: ignore[arg-type]
    }

    def best(method: str) -> dict[str, Any]:
        """The lambda with the best mean validation accuracy (never the test's)."""
        return max((r for r in rows if r["method"] == method), key=lambda r: r["val_accuracy"] or -math.inf)

    def get(method: str, lam: float) -> dict[str, Any]:
        return next(r for r in rows if r["method"] == method and r["lambda"] == lam)

    norms = {
        lam: differs(
            [_norm(h.model) for h in runs[("adamw", lam)]],  # type: ignore[arg-type]
            [_norm(h.model) for h in runs[("adam l2", lam)]],  # type: ignore[arg-type]
        )
        for lam in lambdas
    }
    claims.append(
        claim(
            "Adam: at the same lambda, l2 and decoupled decay do not have the same effect on the weights "
            "(criterion: ||theta|| differs by more than 2 SE over the seeds at every lambda)",
            "||theta|| adam l2 / adamw by lambda: "
            + ", ".join(
                f"{lam:g}: {get('adam l2', lam)['weight_norm']:.3g} / {get('adamw', lam)['weight_norm']:.3g}"
                for lam in lambdas
            )
            + f" (no decay {none_row['weight_norm']:.3g})",
            all(d.holds for d in norms.values()),
        )
    )
    bl, bw = best("adam l2"), best("adamw")
    d_best = exceeds(
        [h.test_accuracy for h in runs[("adamw", bw["lambda"])]],
        [h.test_accuracy for h in runs[("adam l2", bl["lambda"])]],
    )
    claims.append(
        claim(
            "AdamW generalizes better than Adam with l2 (Loshchilov & Hutter 2019), each at its lambda chosen by "
            "validation (criterion: test accuracy higher by more than 2 SE over the seeds)",
            f"adamw (lambda {bw['lambda']:g}) {bw['test_accuracy']:.4f}, adam l2 (lambda {bl['lambda']:g}) "
            f"{bl['test_accuracy']:.4f}, no decay {none_row['test_accuracy']:.4f}; difference "
            f"{d_best.text}",
            d_best.holds,
        )
    )
    corr = {
        lam: exceeds(
            [s["spearman"] for s in per_seed[("adam l2", lam)]], [s["spearman"] for s in per_seed[("adamw", lam)]]
        )
        for lam in lambdas
    }
    claims.append(
        claim(
            "Adam: l2's gradient is divided by sqrt(v_hat), so l2 shrinks weights with a large gradient history less "
            "than decoupled decay does (Loshchilov & Hutter; criterion: the rank correlation of |theta| / |theta "
            "without decay| with sqrt(v_hat) is higher for adam l2 than for adamw by more than 2 SE, at every lambda)",
            "Spearman adam l2 / adamw by lambda: "
            + ", ".join(
                f"{lam:g}: {fmt_value(get('adam l2', lam)['spearman'], '.2f')} / "
                f"{fmt_value(get('adamw', lam)['spearman'], '.2f')}"
                for lam in lambdas
            ),
            all(c.holds for c in corr.values()),
        )
    )
    has_dead = all(bool(d.any()) for d in dead)
    if has_dead:
        expected = {lam: (1 - ADAM_LR * lam) ** history[0].steps for lam in lambdas}  # T: the steps trained
        err = max(abs(get("adamw", lam)["dead_ratio"] / expected[lam] - 1) for lam in lambdas)
        claims.append(
            claim(
                "AdamW decays a weight without data gradient by exactly (1 - alpha lambda)^T (closed form; criterion: "
                "the median ratio within 1e-3 of it)",
                f"{int(dead[0].sum())} input(s) 0 in every training example; median |theta / theta without decay| by "
                "lambda: "
                + ", ".join(f"{lam:g}: {get('adamw', lam)['dead_ratio']:.4g} ({expected[lam]:.4g})" for lam in lambdas)
                + f"; largest relative error {err:.2g}",
                err < 1e-3,
            )
        )
        claims.append(
            claim(
                "Adam with l2 removes such weights much faster: their gradient is lambda theta alone, which Adam's "
                "step divides by its own size, so they move by about alpha per step towards 0 whatever lambda "
                "(criterion: the median ratio below AdamW's at every lambda)",
                "median ratio adam l2 by lambda: "
                + ", ".join(f"{lam:g}: {get('adam l2', lam)['dead_ratio']:.3g}" for lam in lambdas),
                all(get("adam l2", lam)["dead_ratio"] < get("adamw", lam)["dead_ratio"] for lam in lambdas),
            )
        )

    # --- figures and notes
    titles = {"SGD": "sgd", "momentum": "momentum", "Adam": "adam"}
    curves_by_panel = {
        f"{title} (alpha {lr:g}, lambda {LAMBDA:g}, float64 unless said)": {
            k.split(": ", 1)[1]: v for k, v in diff.items() if k.startswith(prefix + ":")
        }
        for (title, prefix), lr in zip(titles.items(), (SGD_LR, MOMENTUM_LR, ADAM_LR))
    }
    fig_diff = _difference_figure(curves_by_panel, {})
    fig_sweep = _sweep_figure(rows, lambdas, none_row)
    fig_shrink = _shrinkage_figure(binned)
    name = data[seeds[0]].name
    notes = (
        f"Every run: MLP {MODEL['hidden']} ({MODEL['activation']}) on {name}, batch {BATCH_SIZE}, the same seed "
        f"giving the same initial weights and mini-batches; {len(seeds)} seed(s). Pairs (figure 'difference'): "
        f"{pair_epochs} epoch(s) ({steps} steps), float64 unless said; SGD alpha {SGD_LR:g}, momentum alpha "
        f"{MOMENTUM_LR:g} rho {MOMENTUM:g}, Adam alpha {ADAM_LR:g}; lambda {LAMBDA:g} (the penalty lambda/2 "
        "||theta||^2 on every parameter, biases included, as the optimizers' weight_decay does). 'l2 penalty' is "
        "optreg.regularize.l2(lambda, half=True, include='all') in the objective (its gradient by autograd); "
        "'weight_decay' the optimizer's coupled l2; '7.63' the decay outside the gradient, sgd_7_63. Curves that "
        "are 0 at every step cannot be drawn on the log axis (the panel says so). Sweep (figures 'sweep', "
        f"'shrinkage'): float32, {sweep_epochs} epoch(s), adam(weight_decay=lambda) vs adamw(weight_decay=lambda), "
        "means over seeds; best lambda by validation accuracy; spearman: rank correlation of |theta_i| / |theta_i "
        "without decay| with sqrt(v_hat_i) of the run without decay (weights with v_hat > 0); dead_ratio: the "
        "median of that ratio over the first layer's weights on inputs that are 0 in every training example; "
        "max_diff_to_other: the largest |theta_adam l2 - theta_adamw| at the end. The shrinkage figure bins "
        "sqrt(v_hat) by quantiles for each seed and draws them at the first seed's bin centres. The table is the "
        "sweep."
    )
    return Result(
        table=rows, claims=claims, figures={"difference": fig_diff, "sweep": fig_sweep, "shrinkage": fig_shrink},
        notes=notes,
    )
