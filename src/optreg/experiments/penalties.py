r"""l1 and l2 regularization (section 7.7.1, figure 7.9; file 004): sparsity, shrinkage and the train / test gap.

Eq. (7.58) adds :math:`\lambda \ell_p(\theta)` to the mean loss; it is the Lagrangian form of the constrained
problem (7.59)-(7.60), :math:`\min L(\theta)` subject to :math:`\ell_p(\theta) \le 1`. Figure 7.9: the l1 ball
has corners on the axes, so the constrained optimum usually sits on an axis, a *sparse* vector; the l2 ball
has none. The chapter (and file 004: "like LASSO, l1 makes the parameters sparse") promises exact zeros, but
a (sub)gradient step on :math:`\lambda \lVert\theta\rVert_1` moves a weight by :math:`\pm\alpha\lambda` and
jumps over zero; the proximal step (:func:`optreg.optim.prox_l1`, soft-thresholding after the step, ISTA)
lands on it. This experiment measures all of it.

1. **Figure 7.9, computed** (:func:`constrained_optimum`): a 2-D quadratic loss, its contours, the l1 and l2
   balls and the exact constrained optima (minimum over the ball's edges for l1; the Lagrange condition
   :math:`(A + \mu I)\theta = A c` solved for :math:`\mu` for l2); over random problems, how often each
   optimum has a zero coordinate; and, on the penalized form with the :math:`\lambda` of the KKT conditions
   (:func:`kkt_strength`), the paths of the subgradient method and of ISTA.
2. **Digits**: softmax regression and a one-hidden-layer MLP, trained with plain SGD (the same learning rate,
   epochs and batches) with each method of :data:`METHODS` over the strengths :data:`STRENGTHS`: accuracy
   (train / validation / test), the train - test gap, the fraction of weights that are exactly zero, the
   fraction below :data:`TINY` in size, the weights' l1 and l2 norms, and their histograms. Biases are never
   penalized (file 004). The elastic net (eq. 7.62) uses :math:`\lambda_1 = \lambda_2 = \lambda / 2`, its l1
   part by the proximal step (so that it can give exact zeros too).

The table is the sweep (one row per model, method and strength); the claims are ``Result.claims``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from optreg._checks import check_choice, check_nonneg
from optreg.errors import OptregValueError
from optreg.experiments.base import Context, Result, RunHistory, claim, exceeds, mean_std, register
from optreg.optim import Optimizer, create
from optreg.optim.proximal import proximal_sgd
from optreg.regularize import l1, l2, select_parameters
from optreg.report import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optreg.data import Splits

__all__ = [
    "METHODS",
    "MODELS",
    "STRENGTHS",
    "TINY",
    "constrained_optimum",
    "kkt_strength",
    "method_setup",
    "penalized_path",
    "random_problems",
    "run",
    "train_penalized",
    "weight_stats",
]

METHODS = ("none", "l2", "l1 (subgradient)", "l1 smooth (7.61)", "l1 (proximal)", "elastic net (proximal)")
#: lambda of eq. (7.58): the objective is the mean cross-entropy + lambda l_p(W) (l2: lambda ||W||^2).
STRENGTHS = (1e-4, 1e-3, 1e-2)
#: The two models: softmax regression (no hidden layer) and an MLP with one hidden layer.
MODELS: dict[str, dict[str, Any]] = {
    "softmax regression": {"kind": "mlp", "hidden": []},
    "mlp 256": {"kind": "mlp", "hidden": [256], "activation": "relu"},
}
LR, BATCH_SIZE = 0.1, 32
#: eps of the smooth l1 (eq. 7.61).
SMOOTH_EPS = 1e-6
#: "Near zero": |w| below this.
TINY = 1e-3

_OWNER = "penalties"


# ------------------------------------------------------------------------------------ figure 7.9 (2-D)


def _quadratic(a: np.ndarray, c: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda t: 0.5 * float((t - c) @ a @ (t - c))


def constrained_optimum(a: Any, c: Any, p: int) -> np.ndarray:
    r"""The minimizer of :math:`f(\theta) = \frac12 (\theta - c)^\top A (\theta - c)` over the ball
    :math:`\lVert\theta\rVert_p \le 1` (eqs. 7.59-7.60), for ``p`` 1 or 2, 2-D, ``A`` symmetric positive
    definite. Exact: inside the ball it is ``c``; otherwise for l1 the best point of the four edges (a 1-D
    quadratic on each, clamped to the edge), for l2 :math:`\theta(\mu) = (A + \mu I)^{-1} A c` with the
    :math:`\mu > 0` that puts it on the circle (bisection: :math:`\lVert\theta(\mu)\rVert` decreases in
    :math:`\mu`)."""
    a, c = np.asarray(a, dtype=np.float64), np.asarray(c, dtype=np.float64)
    check_choice(_OWNER, "p", p, (1, 2))
    if a.shape != (2, 2) or c.shape != (2,) or np.linalg.eigvalsh((a + a.T) / 2)[0] <= 0:
        raise OptregValueError(f"{_OWNER}: A must be a 2x2 positive definite matrix and c a 2-vector")
    if np.linalg.norm(c, ord=p) <= 1:
        return c.copy()
    if p == 2:
        lo, hi = 0.0, 1.0
        while np.linalg.norm(np.linalg.solve(a + hi * np.eye(2), a @ c)) > 1:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.linalg.norm(np.linalg.solve(a + mid * np.eye(2), a @ c)) > 1 else (lo, mid)
        return np.linalg.solve(a + hi * np.eye(2), a @ c)
    f = _quadratic(a, c)
    vertices = [np.array(v, dtype=np.float64) for v in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    best, best_f = vertices[0], f(vertices[0])
    for u, v in zip(vertices, vertices[1:] + vertices[:1]):
        d = v - u  # theta(s) = u + s d, f'(s) = d^T A (u + s d - c) = 0
        s = float(np.clip(d @ a @ (c - u) / (d @ a @ d), 0.0, 1.0))
        point = u + s * d
        if s in (0.0, 1.0):
            point = np.round(point)  # a vertex, exactly
        if f(point) < best_f:
            best, best_f = point, f(point)
    return best


def kkt_strength(a: Any, c: Any, theta: Any) -> float:
    r"""The :math:`\lambda` for which ``theta`` (a point on the l1 sphere with a non-zero coordinate, e.g.
    :func:`constrained_optimum`) minimizes the penalized form :math:`f(\theta) + \lambda\lVert\theta\rVert_1`
    (eq. 7.58): from the KKT condition :math:`\nabla f(\theta)_i + \lambda\,\mathrm{sign}(\theta_i) = 0` on a
    non-zero coordinate :math:`i` (the largest)."""
    a, c, theta = (np.asarray(v, dtype=np.float64) for v in (a, c, theta))
    i = int(np.argmax(np.abs(theta)))
    if theta[i] == 0:
        raise OptregValueError(f"{_OWNER}: theta must have a non-zero coordinate")
    return float(-(a @ (theta - c))[i] / np.sign(theta[i]))


def penalized_path(
    a: Any, c: Any, strength: float, start: Sequence[float], *, method: str, lr: float = 0.1, steps: int = 200
) -> np.ndarray:
    r"""The iterates of minimizing :math:`\frac12(\theta-c)^\top A(\theta-c) + \lambda\lVert\theta\rVert_1` from
    ``start`` with optreg's optimizers: ``method="subgradient"`` (SGD on the loss plus
    :func:`optreg.regularize.l1`, autograd's subgradient) or ``"proximal"`` (:func:`optreg.optim.proximal.proximal_sgd`:
    the gradient step on the loss, then soft-thresholding, ISTA). Returns ``(steps + 1, 2)``."""
    check_choice(_OWNER, "method", method, ("subgradient", "proximal"))
    strength = check_nonneg(_OWNER, "strength", strength)
    a_t, c_t = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(c), dtype=torch.float64)
    theta = nn.Parameter(torch.as_tensor(np.asarray(start, dtype=np.float64)).clone())
    penalty = l1(strength, include="all")
    if method == "proximal":
        opt: torch.optim.Optimizer = Optimizer([theta], proximal_sgd, lr=lr, strength=strength, all_parameters=True)
    else:
        opt = create("sgd", [theta], lr=lr)
    path = [theta.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        d = theta - c_t
        loss = 0.5 * d @ a_t @ d
        (loss if method == "proximal" else loss + penalty([theta])).backward()
        opt.step()
        path.append(theta.detach().clone())
    return torch.stack(path).numpy()


def random_problems(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random 2-D problems ``(A, c)``: ``A`` with eigenvalues uniform in [0.2, 1] along a random rotation,
    ``c`` at a random angle and a distance uniform in [1.5, 3] from 0 (outside both balls)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        phi, psi = rng.uniform(0, 2 * np.pi, 2)
        r = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
        a = r @ np.diag(rng.uniform(0.2, 1.0, 2)) @ r.T
        out.append((a, rng.uniform(1.5, 3.0) * np.array([np.cos(psi), np.sin(psi)])))
    return out


# ------------------------------------------------------------------------------------ digits


def _proximal(params: Iterable[Tensor], lr: float = LR, strength: float = 0.0) -> Optimizer:
    """ISTA: SGD, then soft-thresholding of the weights (:func:`optreg.optim.proximal.proximal_sgd`)."""
    return Optimizer(params, proximal_sgd, lr=lr, strength=strength)


def method_setup(method: str, strength: float) -> tuple[Any, dict[str, Any], Any]:
    """``(optimizer, its hyperparameters, penalty or None)`` of a method of :data:`METHODS` at ``strength``:
    the penalty goes into the trainer's objective (eq. 7.58; weights only), the proximal methods take the l1
    part into the optimizer (soft-thresholding after each SGD step)."""
    check_choice(_OWNER, "method", method, METHODS)
    strength = check_nonneg(_OWNER, "strength", strength)
    sgd = ("sgd", {"lr": LR})
    if method == "none":
        return (*sgd, None)
    if method == "l2":
        return (*sgd, l2(strength))
    if method == "l1 (subgradient)":
        return (*sgd, l1(strength))
    if method == "l1 smooth (7.61)":
        return (*sgd, l1(strength, eps=SMOOTH_EPS))
    if method == "l1 (proximal)":
        return _proximal, {"lr": LR, "strength": strength}, None
    return _proximal, {"lr": LR, "strength": strength / 2}, l2(strength / 2)  # elastic net, eq. (7.62)


def train_penalized(
    ctx: Context, model: str, method: str, strength: float, *, seed: int, epochs: int, data: Splits | None = None
) -> RunHistory:
    """Train ``MODELS[model]`` with ``method`` at ``strength`` (plain SGD, lr :data:`LR`, batch
    :data:`BATCH_SIZE`) through :meth:`Context.train_spec`; the same arguments give the same weights."""
    check_choice(_OWNER, "model", model, tuple(MODELS))
    optimizer, hparams, penalty = method_setup(method, strength)
    spec = {
        "name": f"{model} {method}" + ("" if method == "none" else f" lambda={strength:g}"),
        "model": MODELS[model],
        "optimizer": {"name": optimizer, **hparams},
        "train": {"batch_size": BATCH_SIZE, "epochs": epochs, "seed": seed, "penalty": penalty},
    }
    data = ctx.load_data(seed) if data is None else data
    config = {"model_name": model, "method": method, "strength": strength, "penalty": penalty}
    return ctx.train_spec(spec, data, config=config)


def weight_stats(model: nn.Module, dead_inputs: Tensor | None = None) -> dict[str, float]:
    """Over the weights (``ndim > 1``, as the penalties see them): the fraction that is exactly zero, the
    fraction with :math:`|w| <` :data:`TINY`, :math:`\\lVert W\\rVert_1`, :math:`\\lVert W\\rVert_2` and
    :math:`\\max |w|`. With ``dead_inputs`` (a boolean mask of the input features that are 0 in every
    training example), also ``live_zero_fraction``: the exact zeros among the weights that do not multiply a
    dead input (the first Linear layer's columns of those inputs get no gradient from the data at all)."""
    params = select_parameters(_OWNER, model)
    w = torch.cat([p.detach().flatten() for p in params]).double()
    out = {
        "zero_fraction": float((w == 0).double().mean()),
        "tiny_fraction": float((w.abs() < TINY).double().mean()),
        "l1_norm": float(w.abs().sum()),
        "l2_norm": float(w.norm()),
        "max_abs": float(w.abs().max()),
    }
    if dead_inputs is not None:
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        if first.weight.shape[1] != dead_inputs.numel():
            raise OptregValueError(
                f"{_OWNER}: dead_inputs must have one flag per input feature ({first.weight.shape[1]}), "
                f"got {dead_inputs.numel()}"
            )
        live = [p[:, ~dead_inputs.flatten()] if p is first.weight else p for p in params]
        lw = torch.cat([p.detach().flatten() for p in live])
        out["live_zero_fraction"] = float((lw == 0).double().mean())
    return out


@torch.no_grad()
def _scores(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    model.eval()
    out = model(x)
    return float(nn.functional.cross_entropy(out, y)), float((out.argmax(-1) == y).double().mean())


def _per_seed(runs: list[RunHistory], data: dict[int, Splits]) -> list[dict[str, Any]]:
    """The seed, scores and weight statistics of each finished run (one dict per seed)."""
    out = []
    for h in runs:
        if h.diverged:
            continue
        d = data[h.seed]
        train_loss, train_acc = _scores(h.model, d.train.x, d.train.y)  # type: ignore[arg-type]
        out.append({
            "seed": h.seed, "train_accuracy": train_acc, "val_accuracy": h.final("val_accuracy"),
            "test_accuracy": h.test_accuracy,
            "gap": train_acc - h.test_accuracy, "loss_gap": h.test_loss - train_loss,  # type: ignore[operator]
            **weight_stats(h.model, (d.train.x == 0).all(0)),  # type: ignore[arg-type]
        })  # fmt: skip
    return out


def _row(
    model: str, method: str, strength: float | None, per_seed: list[dict[str, Any]], runs: list[RunHistory]
) -> dict[str, Any]:
    """One table row: the means over seeds of :func:`_per_seed`'s values (and the test accuracy's sd)."""
    row: dict[str, Any] = {"model": model, "method": method, "lambda": strength, "diverged": len(runs) - len(per_seed)}
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        row[key] = mean_std(s[key] for s in per_seed)[0]
        if key == "test_accuracy":
            row["test_accuracy_sd"] = mean_std(s[key] for s in per_seed)[1]
    for key in ("gap", "loss_gap", "zero_fraction", "live_zero_fraction", "tiny_fraction", "l1_norm", "l2_norm",
                "max_abs"):  # fmt: skip
        row[key] = mean_std(s[key] for s in per_seed)[0]
    return row


# ------------------------------------------------------------------------------------ figures


def _fig79(a: np.ndarray, c: np.ndarray, paths: dict[str, np.ndarray], strength: float) -> Figure:
    """Figure 7.9: loss contours, the l2 and l1 balls and their constrained optima; then the penalized
    problem's paths (subgradient vs proximal)."""
    fig, axes = plots.new_figure(
        3, title="Figure 7.9, computed: constrained optima on the l2 and l1 balls", panel_size=(4.8, 4.6)
    )
    f = _quadratic(a, c)
    g1, g2 = np.meshgrid(np.linspace(-1.6, 3.0, 200), np.linspace(-1.6, 3.0, 200))
    d1, d2 = g1 - c[0], g2 - c[1]
    gz = 0.5 * (a[0, 0] * d1 * d1 + 2 * a[0, 1] * d1 * d2 + a[1, 1] * d2 * d2)
    s = np.linspace(0, 2 * np.pi, 400)
    balls = {2: (np.cos(s), np.sin(s)), 1: (np.array([1, 0, -1, 0, 1]), np.array([0, 1, 0, -1, 0]))}
    for ax, p in zip(axes[:2], (2, 1)):
        opt = constrained_optimum(a, c, p)
        levels = sorted({f(opt) * m for m in (0.15, 0.4, 1.0, 1.8, 3.0, 4.5)})
        ax.contour(g1, g2, gz, levels=levels, colors="0.55", linewidths=0.8)
        ax.contour(g1, g2, gz, levels=[f(opt)], colors="tab:blue", linewidths=1.6)
        ax.plot(*balls[p], color="tab:red", linewidth=1.8, label=f"l{p} = 1")
        ax.plot(*c, "k*", markersize=10, label="unconstrained minimum")
        ax.plot(*opt, "o", color="tab:blue", markersize=8, label=f"optimum ({opt[0]:.3g}, {opt[1]:.3g})")
        ax.axhline(0, color="0.8", linewidth=0.6)
        ax.axvline(0, color="0.8", linewidth=0.6)
        ax.set_aspect("equal")
        ax.set_xlim(-1.6, 3.0)
        ax.set_ylim(-1.6, 3.0)
        ax.set_title(f"l{p} ball: the loss contour touches it at the optimum", fontsize=10)
        ax.set_xlabel("$\\theta_1$")
        ax.set_ylabel("$\\theta_2$")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    palette = plots.colors(list(paths))
    opt = constrained_optimum(a, c, 1)
    for label, path in paths.items():
        ax.plot(
            path[:, 0],
            path[:, 1],
            ".-",
            color=palette[label],
            markersize=2.5,
            linewidth=0.8,
            label=f"{label}: ends at ({path[-1, 0]:.3g}, {path[-1, 1]:.3g})",
        )
    ax.plot(*balls[1], color="tab:red", linewidth=1.0)
    ax.plot(*opt, "o", color="tab:blue", markersize=8, fillstyle="none", label="l1-constrained optimum")
    ax.axhline(0, color="0.8", linewidth=0.6)
    ax.set_title(f"penalized form (7.58), lambda = {strength:.3g} from the KKT conditions", fontsize=10)
    ax.set_xlabel("$\\theta_1$")
    ax.set_ylabel("$\\theta_2$")
    ax.legend(fontsize=7, loc="lower left")
    zoom = ax.inset_axes((0.52, 0.55, 0.45, 0.4))  # theta_2 near the end: the subgradient hovers, prox is 0
    for label, path in paths.items():
        tail = path[len(path) // 2 :]
        zoom.plot(np.arange(len(path) // 2, len(path)), tail[:, 1], color=palette[label], linewidth=0.8)
    zoom.axhline(0, color="0.5", linewidth=0.6)
    zoom.set_title("$\\theta_2$ over the second half of the steps", fontsize=7)
    zoom.tick_params(labelsize=6)
    return fig


def _histogram_figure(weights: dict[str, np.ndarray], title: str) -> Figure:
    """One panel per method: the histogram of :math:`\\log_{10} |w|`, with the exact zeros as a separate bar
    on the left (a weight the subgradient keeps near 0 and one the proximal step sets to 0 look the same on a
    linear axis)."""
    ncols = 3
    fig, axes = plots.new_figure(ncols, -(-len(weights) // ncols), title=title, panel_size=(4.0, 3.0))
    low, high = -9.0, 1.0
    bins = np.linspace(low, high, 61)
    palette = plots.colors(list(weights))
    for ax, (label, w) in zip(axes, weights.items()):
        nonzero = np.abs(w[w != 0])
        ax.hist(np.clip(np.log10(nonzero), low, high), bins=bins, color=palette[label], log=True)
        zeros = int((w == 0).sum())
        if zeros:
            ax.bar([low - 1.0], [zeros], width=0.8, color="black", log=True)
        ax.set_xticks([low - 1.0, -8, -6, -4, -2, 0], ["0", "1e-8", "1e-6", "1e-4", "0.01", "1"], fontsize=7)
        ax.set_xlim(low - 1.6, high)
        ax.set_title(f"{label}: {100 * zeros / w.size:.1f}% exactly 0", fontsize=9)
        ax.set_xlabel("|w| (black: exactly 0; first bin: below 1e-9)")
        ax.set_ylabel("count (log)")
    for ax in axes[len(weights) :]:
        ax.set_visible(False)
    return fig


def _sweep_figure(rows: list[dict[str, Any]], strengths: Sequence[float]) -> Figure:
    panels = []
    for model in MODELS:
        by = {m: [r for r in rows if r["model"] == model and r["method"] == m] for m in METHODS if m != "none"}
        for key, label, log_y in (
            ("zero_fraction", "fraction of weights exactly 0", False),
            ("test_accuracy", "test accuracy", False),
            ("gap", "train - test accuracy", False),
            ("l2_norm", "||W||_2", True),
        ):
            series = {m: [[r[key] for r in rs]] for m, rs in by.items() if rs}
            panels.append(
                plots.Panel(
                    series,
                    x=list(strengths),
                    log_x=True,
                    log_y=log_y,
                    title=f"{model}: {label}",
                    xlabel="lambda",
                    ylabel=label,
                    legend=key == "zero_fraction",
                    spread="none",
                )
            )
    return plots.curves_figure(panels, ncols=4, title="The strength sweep (none: see the table)")


# ------------------------------------------------------------------------------------ experiment


@register(
    "penalties",
    title="l1, l2 and elastic-net penalties: sparsity, shrinkage and the generalization gap",
    figure="7.9",
    help="figure 7.9 computed; l1 (subgradient / smooth / proximal), l2, elastic net on digits: exact zeros, "
    "weight histograms, accuracy and train-test gap over the strength",
    options=("dataset", "seeds", "epochs"),
)
def run(ctx: Context) -> Result:
    quick = ctx.quick
    seeds = ctx.seed_list(default=2)
    epochs = ctx.epoch_count(default=25, quick=1)
    strengths = (STRENGTHS[1], STRENGTHS[-1]) if quick else STRENGTHS
    claims: list[dict[str, Any]] = []
    settings = sum(1 if method == "none" else len(strengths) for method in METHODS)
    ctx.expect_runs(2 + len(MODELS) * settings * len(seeds))  # figure 7.9's two paths, then the digits runs

    # --- figure 7.9 in 2-D
    a = np.array([[1.0, 0.35], [0.35, 0.45]])
    c = np.array([1.7, 0.45])
    opt1, opt2 = constrained_optimum(a, c, 1), constrained_optimum(a, c, 2)
    lam = kkt_strength(a, c, opt1)
    start = (-0.8, 1.6)
    paths = {
        m: penalized_path(a, c, lam, start, method=m, steps=60 if quick else 300) for m in ("subgradient", "proximal")
    }
    problems = random_problems(200 if quick else 2000, seed=0)
    sparse1 = np.mean([np.any(constrained_optimum(pa, pc, 1) == 0) for pa, pc in problems])
    sparse2 = np.mean([np.any(constrained_optimum(pa, pc, 2) == 0) for pa, pc in problems])
    for method, path in paths.items():
        ctx.record_run(
            f"fig7.9 {method}",
            seed=0,
            config={"part": "fig7.9", "method": method, "lambda": lam},
            summary={"final_theta": path[-1].tolist()},
        )
    fig79 = _fig79(a, c, paths, lam)
    end_sub, end_prox = paths["subgradient"][-1], paths["proximal"][-1]
    tail_sub = np.abs(paths["subgradient"][-20:, 1])
    claims.append(
        claim(
            "the l1 constraint usually puts the optimum on an axis (a sparse vector); the l2 constraint does not "
            "(figure 7.9)",
            f"{len(problems)} random 2-D quadratics outside both balls: optimum with a zero coordinate l1 "
            f"{100 * sparse1:.1f}%, l2 {100 * sparse2:.1f}%; the figure's problem: l1 optimum ({opt1[0]:.3g}, "
            f"{opt1[1]:.3g}), l2 optimum ({opt2[0]:.3g}, {opt2[1]:.3g})",
            bool(sparse1 > 0.5 and sparse2 == 0),
        )
    )
    claims.append(
        claim(
            "a subgradient step on lambda ||theta||_1 jumps over zero instead of landing on it; the proximal step "
            "(soft-thresholding) lands on it (2-D, penalized form 7.58 with the KKT lambda)",
            f"after {len(paths['proximal']) - 1} steps: subgradient theta_2 = {end_sub[1]:.3g} (|theta_2| over the "
            f"last 20 steps {tail_sub.min():.2g}..{tail_sub.max():.2g}), proximal theta_2 = {end_prox[1]:.3g}, "
            f"theta_1 = {end_prox[0]:.4g} (l1 optimum {opt1[0]:.4g})",
            bool(end_prox[1] == 0 and np.all(tail_sub > 0)),
        )
    )

    # --- digits: every method at every strength, for both models
    data = {seed: ctx.load_data(seed) for seed in seeds}
    rows: list[dict[str, Any]] = []
    scored: dict[tuple[str, str, float | None], list[dict[str, Any]]] = {}
    histograms: dict[str, np.ndarray] = {}
    hist_strength = strengths[-2] if len(strengths) > 2 else strengths[-1]
    for model in MODELS:
        for method in METHODS:
            for strength in [None] if method == "none" else strengths:
                runs = [
                    train_penalized(ctx, model, method, strength or 0.0, seed=s, epochs=epochs, data=data[s])
                    for s in seeds
                ]
                scored[(model, method, strength)] = _per_seed(runs, data)
                rows.append(_row(model, method, strength, scored[(model, method, strength)], runs))
                if model == "softmax regression" and strength in (None, hist_strength) and not runs[0].diverged:
                    histograms[method] = torch.cat(
                        [p.detach().flatten() for p in select_parameters(_OWNER, runs[0].model)]
                    ).numpy()

    def get(model: str, method: str, strength: float | None) -> dict[str, Any]:
        return next(r for r in rows if r["model"] == model and r["method"] == method and r["lambda"] == strength)

    def seeds_of(r: Mapping[str, Any], key: str) -> list[Any]:
        """``key`` of each seed's finished run of the row ``r``'s setting."""
        return [s[key] for s in scored[(r["model"], r["method"], r["lambda"])]]

    def best(model: str, method: str) -> dict[str, Any]:
        """The strength with the best validation accuracy (never the test's)."""
        return max(
            (r for r in rows if r["model"] == model and r["method"] == method),
            key=lambda r: -math.inf if r["val_accuracy"] is None else r["val_accuracy"],
        )

    top = strengths[-1]
    for model in MODELS:
        prox = [get(model, "l1 (proximal)", s)["live_zero_fraction"] for s in strengths]
        sub = [get(model, "l1 (subgradient)", s) for s in strengths]
        pick = best(model, "l1 (proximal)")
        claims.append(
            claim(
                f"{model}: l1 gives sparse solutions, exact zeros, with the proximal step (criterion: the fraction of "
                "exact zeros among the live weights grows with lambda and passes 1/2 at the largest)",
                "live weights exactly 0 by lambda "
                + ", ".join(f"{s:g}: {100 * z:.1f}%" for s, z in zip(strengths, prox))
                + f"; at the validation-best lambda {pick['lambda']:g}: {100 * pick['live_zero_fraction']:.1f}% "
                f"(test accuracy {pick['test_accuracy']:.3f})",
                all(b >= a_ for a_, b in zip(prox, prox[1:])) and prox[-1] > 0.5,
            )
        )
        claims.append(
            claim(
                f"{model}: the plain subgradient of l1 gives no exact zeros, only small weights (criterion: < 1% of "
                "all weights exactly 0 at every lambda)",
                f"exactly 0 / below {TINY:g} by lambda "
                + ", ".join(
                    f"{s:g}: {100 * r['zero_fraction']:.2f}% / {100 * r['tiny_fraction']:.1f}%"
                    for s, r in zip(strengths, sub)
                ),
                all(r["zero_fraction"] < 0.01 for r in sub),
            )
        )
        smooth = [get(model, "l1 smooth (7.61)", s) for s in strengths]
        claims.append(
            claim(
                f"{model}: the smooth l1 of eq. 7.61 (eps = {SMOOTH_EPS:g}) is differentiable but gives no exact "
                "zeros either (criterion: < 1% at every lambda)",
                ", ".join(
                    f"lambda {s:g}: {100 * r['zero_fraction']:.2f}% exactly 0 ({100 * r['live_zero_fraction']:.2f}% "
                    f"of the live weights), ||W||_1 {r['l1_norm']:.3g} (subgradient {q['l1_norm']:.3g})"
                    for s, r, q in zip(strengths, smooth, sub)
                ),
                all(r["zero_fraction"] < 0.01 for r in smooth),
            )
        )
        none = get(model, "none", None)
        l2s = [get(model, "l2", s) for s in strengths]
        shrinks = [exceeds(seeds_of(none, "l2_norm"), seeds_of(r, "l2_norm"), fmt=".3g") for r in l2s]
        claims.append(
            claim(
                f"{model}: l2 shrinks the weights but does not set them to zero (criterion: ||W||_2 below the "
                "unpenalized one at every lambda, no exact zeros)",
                f"||W||_2: none {none['l2_norm']:.3g}, l2 "
                + ", ".join(f"{s:g}: {r['l2_norm']:.3g} ({c.text})" for s, r, c in zip(strengths, l2s, shrinks))
                + f"; exact zeros at most {100 * max(r['zero_fraction'] for r in l2s):.2f}%",
                all(c.holds for c in shrinks) and all(r["zero_fraction"] == 0 for r in l2s),
            )
        )
        en = [get(model, "elastic net (proximal)", s)["live_zero_fraction"] for s in strengths]
        l2z = [r["live_zero_fraction"] for r in l2s]
        claims.append(
            claim(
                f"{model}: the elastic net (7.62, lambda_1 = lambda_2 = lambda / 2) lies between l2 and l1 in sparsity "
                "(criterion: l2 <= elastic net <= l1 in exact zeros among the live weights, at every lambda)",
                ", ".join(
                    f"lambda {s:g}: l2 {100 * x:.1f}%, elastic {100 * y:.1f}%, l1 {100 * z:.1f}%"
                    for s, x, y, z in zip(strengths, l2z, en, prox)
                ),
                all(x <= y <= z for x, y, z in zip(l2z, en, prox)),
            )
        )
        gaps = {m: get(model, m, top)["gap"] for m in METHODS if m != "none"}
        narrower = {m: exceeds(seeds_of(none, "gap"), seeds_of(get(model, m, top), "gap")) for m in gaps}
        claims.append(
            claim(
                f"{model}: regularization narrows the gap between training and test accuracy (criterion: every "
                f"penalty at lambda {top:g} has a smaller gap than none)",
                f"train - test accuracy: none {none['gap']:.3f}, "
                + ", ".join(f"{m} {g:.3f} ({narrower[m].text})" for m, g in gaps.items()),
                all(c.holds for c in narrower.values()),
            )
        )
    gain, seed_gain = {}, {}
    for model in MODELS:
        none = get(model, "none", None)
        picks = {m: best(model, m) for m in METHODS if m != "none"}
        gain[model] = {m: r["test_accuracy"] - none["test_accuracy"] for m, r in picks.items()}
        raises = {m: exceeds(seeds_of(r, "test_accuracy"), seeds_of(none, "test_accuracy")) for m, r in picks.items()}
        top_method = max(gain[model], key=lambda m: gain[model][m])
        # per seed (the same seed's data and initial weights): the best penalty's test accuracy minus none's
        base = dict(zip(seeds_of(none, "seed"), seeds_of(none, "test_accuracy")))
        pairs = zip(seeds_of(picks[top_method], "seed"), seeds_of(picks[top_method], "test_accuracy"))
        seed_gain[model] = [acc - base[seed] for seed, acc in pairs if seed in base]
        claims.append(
            claim(
                f"{model}: regularization improves generalization (7.7): a penalty whose lambda is chosen by "
                "validation raises the test accuracy",
                f"test accuracy none {none['test_accuracy']:.3f}; at the validation-best lambda: "
                + ", ".join(
                    f"{m} (lambda {r['lambda']:g}) {r['test_accuracy']:.3f} ({raises[m].text})"
                    for m, r in picks.items()
                ),
                any(c.holds for c in raises.values()),
            )
        )
    soft, deep = (max(gain[m].values()) for m in MODELS)
    less = exceeds(*(seed_gain[m] for m in MODELS))
    claims.append(
        claim(
            "l1 / l2 help an over-parameterized network less than a shallow model (section 7.7: their effect is "
            "often less marked than in shallow machine learning models)",
            f"best gain in test accuracy from a penalty: softmax regression {soft:+.3f}, mlp 256 {deep:+.3f}; "
            f"difference {less.text}",
            less.holds,
        )
    )

    fig_hist = _histogram_figure(
        {m: w for m, w in histograms.items()},
        f"Softmax regression on {data[seeds[0]].name}: the weights (lambda = {hist_strength:g}; none: unpenalized)",
    )
    fig_sweep = _sweep_figure(rows, strengths)
    notes = (
        f"Plain SGD (lr {LR:g}, batch {BATCH_SIZE}, {epochs} epochs) on {data[seeds[0]].name}, {len(seeds)} seed(s), "
        "means over seeds; weights only (biases never penalized). lambda is eq. 7.58's (l2: lambda ||W||^2); elastic "
        "net: lambda_1 = lambda_2 = lambda / 2 with its l1 part proximal. zero_fraction: weights exactly 0; "
        "live_zero_fraction: the same among the live weights (not on a pixel that is 0 in every training image: "
        "those get no gradient from the data, so a penalty that shrinks them by a factor each step, such as the "
        "smooth l1 with lr lambda <= sqrt(eps), ends in float underflow, exactly 0); "
        f"tiny_fraction: |w| < {TINY:g}; gap: train - test accuracy of the final model; loss_gap: test - train "
        "cross-entropy. Best lambda by validation accuracy. Figure 7.9: A = "
        f"{a.tolist()}, c = {c.tolist()}."
    )
    return Result(table=rows, claims=claims, figures={"fig7_9": fig79, "weights": fig_hist, "sweep": fig_sweep},
                  notes=notes)  # fmt: skip
