r"""Data preprocessing and the speed of gradient descent: figures 7.7 and 7.8 (section 7.4).

Section 7.4: features of very different ranges make the loss surface an elongated valley, so the gradient
points mostly across the valley and gradient descent zigzags for many iterations (figure 7.7a);
normalized features give near-round contours whose gradient points at the minimum (figure 7.7b).
Standardization (eqs. 7.38-7.40) equalizes the scales; PCA whitening also removes the correlations
(figure 7.8).

Everything here is least squares, :math:`L(w) = \frac{1}{2N}\lVert Xw - y\rVert^2`, whose Hessian is the
same at every point: :math:`H = X^\top X / N`. Its condition number :math:`\kappa = \lambda_{max} /
\lambda_{min}` decides everything: gradient descent with the best constant step
:math:`\alpha^* = 2/(\lambda_{min} + \lambda_{max})` shrinks every error direction by at least
:math:`(\kappa - 1)/(\kappa + 1)` per iteration (Nesterov 2004, *Introductory Lectures on Convex
Optimization*, theorem 2.1.15; Boyd & Vandenberghe 2004, section 9.3), so it needs about
:math:`\frac{\kappa}{2}\ln(1/\text{tol})` iterations; with :math:`\kappa = 1` it lands on the minimum
in one step. Raw features are fitted as they are (no intercept: the uncentred mean is part of what makes
the raw problem ill-conditioned); standardized and whitened features are centred, so their target is the
centred :math:`y` (the intercept is solved exactly).

Three problems, each raw / standardized (:class:`~optreg.data.StandardScaler`) / PCA-whitened
(:class:`~optreg.data.PCAWhitening` with ``eps = 0``):

- ``fig7.7``: the chapter's example, :math:`x_1 \in [0, 10]`, :math:`x_2 \in [0, 1]` (uniform), a linear
  target plus noise: contours of :math:`L(w_1, w_2)` and the gradient-descent path on each representation;
- ``fig7.8``: a correlated 2-D Gaussian with different scales, drawn raw, standardized and whitened;
- the lab's dataset (``ctx.dataset``, its non-constant features): the Hessian's condition number, gradient
  descent on least-squares regression to the one-hot labels, and a softmax regression trained with SGD
  through :meth:`Context.train` at the step :math:`1/\lambda_{max}` of each representation (whitening for
  training uses ``eps = 0.01``, regularized as in UFLDL, so that near-empty directions of the training
  data do not blow up validation noise).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from optreg._checks import check_int, check_range
from optreg.data import ConstantFeatureWarning, PCAWhitening, Split, StandardScaler
from optreg.errors import OptregValueError
from optreg.experiments.base import Context, Result, RunHistory, claim, exceeds, mean_std, register
from optreg.experiments.lr_decay import training_panels
from optreg.report import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optreg.data import Splits

__all__ = [
    "REPRESENTATIONS",
    "Descent",
    "condition_number",
    "correlated_gaussian",
    "gradient_descent",
    "hessian",
    "iteration_bound",
    "preprocessing_claims",
    "representations",
    "run",
    "scaled_features",
    "transform_splits",
]

#: The three views of the data compared throughout.
REPRESENTATIONS = ("raw", "standardized", "whitened")
#: Mini-batch size of the softmax regressions trained on the lab's dataset.
BATCH_SIZE = 32

_OWNER = "preprocessing"


# ------------------------------------------------------------------------------------------ the math


def _matrix(x: Any, name: str = "x") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise OptregValueError(f"{_OWNER}: {name} must be a 2-D array (n >= 2 samples, d >= 1), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise OptregValueError(f"{_OWNER}: {name} must be finite (no NaN / Inf)")
    return a


def hessian(x: Any) -> np.ndarray:
    r"""The Hessian :math:`H = X^\top X / N` of the least-squares loss :math:`\frac{1}{2N}\lVert Xw - y\rVert^2`."""
    a = _matrix(x)
    return a.T @ a / a.shape[0]


def condition_number(x: Any) -> float:
    r""":math:`\kappa(H) = \lambda_{max} / \lambda_{min}` of :func:`hessian` (``inf`` when it is singular)."""
    eig = np.linalg.eigvalsh(hessian(x))
    return math.inf if eig[0] <= 0 else float(eig[-1] / eig[0])


def iteration_bound(kappa: float, tol: float) -> int:
    r"""Iterations after which gradient descent with :math:`\alpha^* = 2/(\lambda_{min}+\lambda_{max})` is
    guaranteed to have :math:`\lVert w_k - w^*\rVert \le \text{tol}\,\lVert w_0 - w^*\rVert`:
    :math:`\lceil \ln \text{tol} / \ln\frac{\kappa-1}{\kappa+1} \rceil` (1 when :math:`\kappa = 1`)."""
    kappa = check_range(_OWNER, "kappa", kappa, 1.0, math.inf)
    tol = check_range(_OWNER, "tol", tol, 0.0, 1.0, low_open=True, high_open=True)
    rate = (kappa - 1.0) / (kappa + 1.0)
    if rate <= tol:
        return 1
    return math.ceil(math.log(tol) / math.log(rate))


@dataclass(frozen=True)
class Descent:
    """A gradient-descent run on least squares: the iterates ``path`` (``(k + 1, *w.shape)``, only when
    kept), the ``iterations`` it needed (``None``: not within ``max_iter``), the step ``lr``, the minimum
    ``w_star`` and the condition number ``kappa`` of the Hessian."""

    path: np.ndarray | None
    iterations: int | None
    lr: float
    w_star: np.ndarray
    kappa: float


def gradient_descent(
    x: Any,
    y: Any,
    *,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    w0: Any = None,
    keep_path: bool = False,
) -> Descent:
    r"""Gradient descent :math:`w \leftarrow w - \alpha^* (Hw - X^\top y / N)` on
    :math:`\frac{1}{2N}\lVert Xw - y\rVert^2` with the best constant step :math:`\alpha^* = 2/(\lambda_{min} +
    \lambda_{max})`, from ``w0`` (default 0) until :math:`\lVert w_k - w^*\rVert \le \text{tol}\,\lVert w_0 -
    w^*\rVert` or ``max_iter`` iterations. ``y`` may be a vector or a matrix (one column per output)."""
    a = _matrix(x)
    t = np.asarray(y, dtype=np.float64)
    if t.ndim not in (1, 2) or t.shape[0] != a.shape[0] or not np.isfinite(t).all():
        raise OptregValueError(f"{_OWNER}: y must be finite with {a.shape[0]} rows, got shape {t.shape}")
    tol = check_range(_OWNER, "tol", tol, 0.0, 1.0, low_open=True, high_open=True)
    max_iter = check_int(_OWNER, "max_iter", max_iter, 1)
    n = a.shape[0]
    h, b = a.T @ a / n, a.T @ t / n
    eig = np.linalg.eigvalsh(h)
    if eig[0] <= eig[-1] * a.shape[1] * np.finfo(np.float64).eps:
        raise OptregValueError(f"{_OWNER}: the Hessian X^T X / N is singular (drop constant or duplicate features)")
    lr = 2.0 / (eig[0] + eig[-1])
    w_star = np.linalg.solve(h, b)
    w = np.zeros_like(w_star) if w0 is None else np.array(w0, dtype=np.float64).reshape(w_star.shape)
    start = float(np.linalg.norm(w - w_star))
    path = [w.copy()] if keep_path else None
    iterations = 0 if start == 0.0 else None
    for k in range(1, max_iter + 1 if iterations is None else 1):
        w = w - lr * (h @ w - b)
        if path is not None:
            path.append(w.copy())
        if np.linalg.norm(w - w_star) <= tol * start:
            iterations = k
            break
    return Descent(None if path is None else np.stack(path), iterations, float(lr), w_star, float(eig[-1] / eig[0]))


def representations(x: Any, *, eps: float = 0.0) -> dict[str, np.ndarray]:
    """``{"raw": x, "standardized": ..., "whitened": ...}``: :class:`StandardScaler` (eqs. 7.38-7.40) and
    :class:`PCAWhitening` (``eps`` added to each variance) fitted on ``x`` itself."""
    a = _matrix(x)
    return {
        "raw": a,
        "standardized": StandardScaler().fit_transform(a),
        "whitened": PCAWhitening(eps=eps).fit_transform(a),
    }


def _targets(y: np.ndarray, representation: str) -> np.ndarray:
    """Raw features keep ``y``; centred ones (standardized, whitened) get the centred ``y``."""
    return y if representation == "raw" else y - y.mean(axis=0)


def scaled_features(seed: int, n: int = 200, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    r"""Section 7.4's example: :math:`x_1 \sim U[0, 10]`, :math:`x_2 \sim U[0, 1]` and
    :math:`y = 0.5 x_1 + 3 x_2 + \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \text{noise}^2)`."""
    n = check_int(_OWNER, "n", n, 2)
    noise = check_range(_OWNER, "noise", noise, 0.0)
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0.0, 10.0, n), rng.uniform(0.0, 1.0, n)])
    return x, x @ np.array([0.5, 3.0]) + noise * rng.standard_normal(n)


def correlated_gaussian(seed: int, n: int = 400, corr: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    r"""Figure 7.8's cloud: a 2-D Gaussian with mean (4, 2), standard deviations (2, 0.5) and correlation
    ``corr``; the target is :math:`y = x_1 - 2 x_2 + \mathcal N(0, 0.25)`."""
    n = check_int(_OWNER, "n", n, 2)
    corr = check_range(_OWNER, "corr", corr, -1.0, 1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    sd = np.array([2.0, 0.5])
    cov = np.array([[1.0, corr], [corr, 1.0]]) * np.outer(sd, sd)
    x = rng.multivariate_normal([4.0, 2.0], cov, size=n)
    return x, x @ np.array([1.0, -2.0]) + 0.5 * rng.standard_normal(n)


def _fit_quietly(transformer: Any, x: np.ndarray) -> Any:
    with warnings.catch_warnings():  # constant features are dropped by the callers, or left as they are
        warnings.simplefilter("ignore", ConstantFeatureWarning)
        return transformer.fit(x)


def transform_splits(data: Splits, transformer: Any | None, columns: np.ndarray | None = None) -> Splits:
    """``data`` with ``columns`` of the features kept (default all) and ``transformer`` (a fresh
    scaler / whitening, or ``None``) fitted on the *training* split and applied to every split
    (section 7.4: the statistics come from the training data only)."""
    keep = slice(None) if columns is None else torch.as_tensor(columns, dtype=torch.long)
    x_train = data.train.x.flatten(1)[:, keep]
    fitted = None if transformer is None else _fit_quietly(transformer, x_train.double())

    def apply(split: Split) -> Split:
        x = split.x.flatten(1)[:, keep]
        z = x if fitted is None else fitted.transform(x.double())
        return Split(z.to(torch.float32).contiguous(), split.y)

    train, val, test = apply(data.train), apply(data.val), apply(data.test)
    return data._replace(train=train, val=val, test=test, input_shape=tuple(train.x.shape[1:]))


# ------------------------------------------------------------------------------------------ figures


def _loss_gap(h: np.ndarray, w_star: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    r""":math:`L(w) - L(w^*) = \frac12 (w - w^*)^\top H (w - w^*)` on a grid of :math:`(w_1, w_2)`."""

    def f(g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        d1, d2 = g1 - w_star[0], g2 - w_star[1]
        return 0.5 * (h[0, 0] * d1 * d1 + 2.0 * h[0, 1] * d1 * d2 + h[1, 1] * d2 * d2)

    return f


def _window(path: np.ndarray, w_star: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits around the path and the minimum with a margin; square, so round contours look round."""
    pts = np.vstack([path, w_star[None, :]])
    centre = (pts.max(axis=0) + pts.min(axis=0)) / 2
    half = 0.6 * float(np.max(pts.max(axis=0) - pts.min(axis=0))) + 1e-9
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def _contour_panels(panels: Mapping[str, tuple[np.ndarray, Descent]], title: str) -> Figure:
    """Figure 7.7: one panel per representation with the contours of the loss gap (levels spaced
    geometrically) and the gradient-descent path (start: circle, end: cross). ``plots.contour_figure``
    draws one panel per figure; this puts the panels side by side to compare them."""
    fig, axes = plots.new_figure(len(panels), title=title, panel_size=(4.8, 4.6))
    palette = plots.colors(list(panels))
    for ax, (name, (h, run)) in zip(axes, panels.items()):
        assert run.path is not None
        path = run.path
        xlim, ylim = _window(path, run.w_star)
        g1, g2 = np.meshgrid(np.linspace(*xlim, 160), np.linspace(*ylim, 160))
        gap = _loss_gap(h, run.w_star)(g1, g2)
        top = float(gap.max())
        levels = np.geomspace(max(top * 1e-4, 1e-12), top, 14)
        ax.contour(g1, g2, gap, levels=levels, colors="0.55", linewidths=0.7)
        color = palette[name]
        ax.plot(path[:, 0], path[:, 1], "-", color=color, linewidth=0.8, marker=".", markersize=2.5)
        ax.plot(path[0, 0], path[0, 1], "o", color=color, markersize=6)
        ax.plot(run.w_star[0], run.w_star[1], "x", color="black", markersize=8, mew=2)
        steps = "not reached" if run.iterations is None else f"{run.iterations} iterations"
        ax.set_title(f"{name}: kappa = {run.kappa:.3g}, {steps}", fontsize=10)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_xlabel("$w_1$")
        ax.set_ylabel("$w_2$")
    return fig


def _scatter_panels(views: Mapping[str, np.ndarray], title: str) -> Figure:
    """Figure 7.8: the 2-D data of each representation in its own panel, on equal axes (a round cloud
    looks round), with the sample correlation and standard deviations in the title. ``plots.scatter_figure``
    overlays its series in one panel, where the three clouds hide each other."""
    fig, axes = plots.new_figure(len(views), title=title, panel_size=(4.6, 4.4))
    palette = plots.colors(list(views))
    for ax, (name, z) in zip(axes, views.items()):
        ax.scatter(z[:, 0], z[:, 1], s=6, color=palette[name], alpha=0.6)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.axvline(0.0, color="grey", linewidth=0.6)
        sd = z.std(axis=0)
        corr = float(np.corrcoef(z[:, 0], z[:, 1])[0, 1])
        ax.set_title(f"{name}: sd = ({sd[0]:.2g}, {sd[1]:.2g}), corr = {corr:.2f}", fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("feature 1")
        ax.set_ylabel("feature 2")
    return fig


# ------------------------------------------------------------------------------------------ experiment


def _gd_row(problem: str, name: str, run: Descent | None, tol: float, max_iter: int) -> dict[str, Any]:
    """A table row for a gradient-descent run (``None``: the Hessian was singular, no numbers)."""
    return {
        "problem": problem,
        "representation": name,
        "condition_number": None if run is None else run.kappa,
        "gd_lr": None if run is None else run.lr,
        "gd_iterations": None if run is None else run.iterations,
        "gd_bound": None if run is None else iteration_bound(run.kappa, tol),
        "gd_max_iter": max_iter,
        "final_train_loss": None,
        "val_accuracy": None,
        "test_accuracy": None,
    }


def _dataset_views(data: Splits) -> tuple[np.ndarray, dict[str, Splits]]:
    """The non-constant features of the training split and the three representations of the splits."""
    x = data.train.x.flatten(1).double().numpy()
    columns = np.flatnonzero(np.ptp(x, axis=0) > 0)
    if columns.size == 0:
        raise OptregValueError(f"{_OWNER}: every feature of the training split is constant")
    views = {
        "raw": transform_splits(data, None, columns),
        "standardized": transform_splits(data, StandardScaler(), columns),
        "whitened": transform_splits(data, PCAWhitening(eps=1e-2), columns),
    }
    return columns, views


@register(
    "preprocessing",
    title="Data preprocessing: conditioning and gradient descent",
    figure="7.7, 7.8",
    help="GD contours raw vs standardized vs whitened, Hessian condition numbers, the data clouds, SGD on the data",
)
def run(ctx: Context) -> Result:
    tol = 1e-6
    toy_iter, data_iter = 20_000, (2_000 if ctx.quick else 20_000)
    epochs = ctx.epoch_count(default=10, quick=2)
    seeds = ctx.seed_list(default=1)
    table: list[dict[str, Any]] = []

    # figure 7.7: two features of very different ranges
    x77, y77 = scaled_features(0)
    panels = {}
    for name, z in representations(x77).items():
        descent = gradient_descent(z, _targets(y77, name), tol=tol, max_iter=toy_iter, keep_path=True)
        panels[name] = (hessian(z), descent)
        table.append(_gd_row("fig7.7: x1 in [0,10], x2 in [0,1]", name, descent, tol, toy_iter))
    fig77 = _contour_panels(panels, "Figure 7.7: gradient descent on raw vs normalized features")

    # figure 7.8: a correlated Gaussian, raw / standardized / whitened
    x78, y78 = correlated_gaussian(0)
    views78 = representations(x78)
    for name, z in views78.items():
        descent = gradient_descent(z, _targets(y78, name), tol=tol, max_iter=toy_iter)
        table.append(_gd_row("fig7.8: correlated Gaussian", name, descent, tol, toy_iter))
    fig78 = _scatter_panels(views78, "Figure 7.8: raw, standardized and PCA-whitened data")

    # the lab's dataset: conditioning and GD on one-hot regression (seed 0's training split), and a softmax
    # regression trained with SGD on each representation for every seed
    data = ctx.load_data(seeds[0])
    columns, _ = _dataset_views(data)
    problem = f"{data.name}: {columns.size} non-constant features"
    x_train = data.train.x.flatten(1).double().numpy()[:, columns]
    onehot = np.eye(data.n_classes)[data.train.y.numpy()]
    try:
        descents: dict[str, Descent | None] = {
            name: gradient_descent(z, _targets(onehot, name), tol=tol, max_iter=data_iter)
            for name, z in representations(x_train).items()
        }
    except OptregValueError as e:  # collinear features (a user's data): X^T X / N is singular
        ctx.log(f"preprocessing: no gradient-descent numbers for {data.name}: {e}")
        descents = dict.fromkeys(REPRESENTATIONS)
    runs: dict[str, list[RunHistory]] = {name: [] for name in REPRESENTATIONS}
    ctx.expect_runs(len(seeds) * len(REPRESENTATIONS))
    for seed in seeds:
        for name, view in _dataset_views(ctx.load_data(seed))[1].items():
            lam_max = float(np.linalg.eigvalsh(hessian(view.train.x.double().numpy()))[-1])
            runs[name].append(
                ctx.train(
                    name,
                    model_spec={"kind": "mlp", "hidden": []},
                    optimizer="sgd",
                    hparams={"lr": 1.0 / lam_max},
                    seed=seed,
                    batch_size=BATCH_SIZE,
                    epochs=epochs,
                    data=view,
                    config={"preprocessing": name, "features": int(view.train.x.shape[1])},
                )
            )
    for name in REPRESENTATIONS:
        row = _gd_row(problem, name, descents[name], tol, data_iter)
        finished = [h for h in runs[name] if not h.diverged]
        row["final_train_loss"] = mean_std(h.final("train_loss") for h in finished)[0]
        row["val_accuracy"] = mean_std(h.final("val_accuracy") for h in finished)[0]
        row["test_accuracy"] = mean_std(h.test_accuracy for h in finished)[0]
        table.append(row)

    steps_per_epoch = -(-len(data.train.y) // BATCH_SIZE)
    training = plots.curves_figure(
        training_panels(runs, epochs, smooth=max(1, steps_per_epoch // 2), prefix="softmax regression: "),
        title=f"Section 7.4 on {data.name}: raw vs standardized vs whitened inputs (SGD, lr = 1 / lambda_max)",
    )
    notes = (
        "Least squares L(w) = |Xw - y|^2 / 2N has the Hessian H = X^T X / N everywhere; gradient descent with "
        "the best constant step 2 / (lambda_min + lambda_max) needs about kappa / 2 * ln(1 / tol) iterations "
        f"(tol = {tol:g}; gd_bound is the guarantee, gd_iterations what it took, empty = not within gd_max_iter). "
    )
    if all(descents.values()):
        kappas = {r["representation"]: r["condition_number"] for r in table[-3:]}
        notes += (
            f"On {data.name} the condition number falls from {kappas['raw']:.3g} (raw) to "
            f"{kappas['standardized']:.3g} (standardized) and {kappas['whitened']:.3g} (whitened): "
            "standardizing removes the different scales, whitening also the correlations."
        )
    finals = {name: [h.final("train_loss") for h in runs[name] if not h.diverged] for name in REPRESENTATIONS}
    return Result(
        table=table,
        claims=preprocessing_claims(table, finals),
        figures={"fig7_7_contours": fig77, "fig7_8_scatter": fig78, "training": training},
        notes=notes,
    )


def preprocessing_claims(
    table: list[dict[str, Any]], finals: Mapping[str, list[float | None]]
) -> list[dict[str, Any]]:
    """Section 7.4's claims (:func:`~optreg.experiments.base.claim` rows) from the gradient-descent rows of
    ``table`` (one per problem and representation) and each representation's final training losses of the
    softmax regression (``finals``, per seed). The least-squares claims are closed forms (the condition
    number of ``H = X^T X / N``, deterministic iteration counts); a problem whose Hessian was singular (no
    numbers) is left out; the training claim compares means over seeds (:func:`exceeds`)."""
    by = {(r["problem"], r["representation"]): r for r in table if r["condition_number"] is not None}
    problems = [p for p in dict.fromkeys(r["problem"] for r in table) if all((p, n) in by for n in REPRESENTATIONS)]

    def kappa(p: str, n: str) -> float:
        return by[(p, n)]["condition_number"]

    def iterations(p: str, n: str) -> float:
        it = by[(p, n)]["gd_iterations"]
        return math.inf if it is None else it

    def short(p: str) -> str:
        return p.split(":", 1)[0]

    lower = [kappa(p, "standardized") < kappa(p, "raw") for p in problems]
    round_ = [kappa(p, "whitened") <= 1 + 1e-6 for p in problems]
    faster = [iterations(p, "standardized") < iterations(p, "raw") and iterations(p, "whitened") <= 2
              for p in problems]  # fmt: skip
    trained = exceeds(finals.get("raw", []), finals.get("standardized", []), fmt=".4f")
    return [
        claim("standardizing the features (eqs. 7.38-7.40) lowers the condition number of the loss surface (figure "
              "7.7: round instead of elongated contours)",
              "kappa raw -> standardized: " + ", ".join(f"{short(p)} {kappa(p, 'raw'):.3g} -> "
                                                      f"{kappa(p, 'standardized'):.3g}" for p in problems),
              bool(problems) and all(lower)),
        claim("PCA whitening also removes the correlations (figure 7.8): kappa = 1 (within 1e-6)",
              "kappa whitened: " + ", ".join(f"{short(p)} {kappa(p, 'whitened'):.9g}" for p in problems),
              bool(problems) and all(round_)),
        claim("gradient descent needs fewer iterations on normalized features (figure 7.7): fewer on standardized "
              "than on raw, and at most 2 on whitened",
              "iterations raw / standardized / whitened (never: not within gd_max_iter): "
              + ", ".join(f"{short(p)} " + " / ".join("never" if math.isinf(iterations(p, n)) else str(iterations(p, n))
                                                      for n in REPRESENTATIONS) for p in problems),
              bool(problems) and all(faster)),
        claim("SGD on standardized inputs reaches a lower training loss in the same epochs (softmax regression, lr "
              "1 / lambda_max of each representation)", f"raw minus standardized final training loss {trained.text}",
              trained.holds),
    ]  # fmt: skip
