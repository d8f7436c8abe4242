"""Why training is hard (section 7.1, 7.2.3.4; file 002): saddle points, the exploding-gradient cliff, and
second-order methods against first-order ones.

- ``saddle`` (figure 7.1): optimizers near the saddle of ``x^2 - y^2 + y^4/4``, and how rare minima are among
  random critical points as the dimension grows (the chapter's ``p^n`` argument).
- ``cliff`` (figure 7.5): the one-neuron RNN's loss surface and gradient descent with and without clipping.
- ``trajectories`` (figure 7.4): every optimizer on the ill-conditioned quadratic, Rosenbrock and the saddle;
  momentum against Nesterov.
- ``second-order``: Newton, Newton-CG, CG, BFGS, L-BFGS against Adam, full batch, on softmax regression and a
  small MLP: loss against function evaluations and against wall time.

Each returns a table of measured numbers and the claims it tests (``Result.claims``: the measured number and a
verdict, holds / does not hold here).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from optreg import diagnostics as dg
from optreg import optim
from optreg.experiments.base import Context, Result, claim, register
from optreg.experiments.optimizers import TOY_FUNCTIONS, ToyFunction, steps_to_tol, toy_experiment, toy_run
from optreg.report.plots import Panel, contour_figure, curves_figure, new_figure

# ------------------------------------------------------------------------------------------------ saddle


def _saddle(v: torch.Tensor) -> torch.Tensor:
    return v[0] ** 2 - v[1] ** 2 + v[1] ** 4 / 4


def _run_2d(name: str, start: tuple[float, float], steps: int, **hp: Any) -> np.ndarray:
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = optim.create(name, [x], **hp)
    path = [x.detach().clone()]

    def closure():
        opt.zero_grad()
        loss = _saddle(x)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
        path.append(x.detach().clone())
    return torch.stack(path).numpy()


def _pure_newton(start: tuple[float, float], steps: int) -> np.ndarray:
    """Undamped Newton, x <- x - H^{-1} g: it jumps to the nearest critical point, the saddle included."""
    x = torch.tensor(start, dtype=torch.float64)
    path = [x.clone()]
    for _ in range(steps):
        g = torch.func.grad(_saddle)(x)
        h = torch.func.hessian(_saddle)(x)
        x = x - torch.linalg.solve(h, g)
        path.append(x.clone())
    return torch.stack(path).numpy()


def _escape_step(path: np.ndarray) -> int | None:
    """The first step with |y| > 1 (the iterate has left the saddle's neighbourhood), or None."""
    hits = np.nonzero(np.abs(path[:, 1]) > 1.0)[0]
    return int(hits[0]) if hits.size else None


def positive_definite_fraction(n: int, samples: int, generator: torch.Generator) -> float:
    """The fraction of random symmetric matrices (GOE: ``(A + A^T) / 2``, Gaussian entries) of size ``n`` whose
    eigenvalues are all positive: a random critical point's chance of being a minimum (Dauphin et al., 2014)."""
    a = torch.randn(samples, n, n, generator=generator, dtype=torch.float64)
    eig = torch.linalg.eigvalsh((a + a.transpose(1, 2)) / 2)
    return float((eig > 0).all(dim=1).double().mean())


@register("saddle", title="Saddle points", figure="7.1",
          help="optimizers near the saddle of x^2 - y^2 + y^4/4; how rare minima are among critical points",
          options=(), why="2-D problems and random matrices: no data, fixed seeds, step budgets")
def run_saddle(ctx: Context) -> Result:
    start, steps = (1.0, 1e-3), 120  # 2-D problems: cheap, so quick mode runs the same
    ctx.expect_runs(0)  # nothing trained on data, nothing stored
    methods = {
        "sgd": ("sgd", {"lr": 0.05}),
        "momentum": ("momentum", {"lr": 0.05, "momentum": 0.9}),
        "adam": ("adam", {"lr": 0.05}),
        "newton (damped, H + aI > 0)": ("newton", {}),
    }
    paths = {label: _run_2d(name, start, steps, **hp) for label, (name, hp) in methods.items()}
    paths["newton (undamped)"] = _pure_newton(start, min(steps, 20))
    claims = []
    escape = {label: _escape_step(p) for label, p in paths.items()}
    grad_norms = {}
    for label, p in paths.items():
        g = np.stack([torch.func.grad(_saddle)(torch.tensor(q)).numpy() for q in p])
        grad_norms[label] = np.linalg.norm(g, axis=1)
    gn = grad_norms["sgd"][: escape["sgd"] or len(paths["sgd"])]
    sgd_stall = int((gn < 0.1 * gn[0]).sum())
    claims.append(claim(
        "gradient descent slows down near a saddle point (the gradient vanishes there)",
        f"sgd: {sgd_stall} steps with |g| below a tenth of its start value (min {gn.min():.3g}, start "
        f"{gn[0]:.3g}) before it escapes (|y| > 1 at step {escape['sgd']})",
        sgd_stall >= 10,
    ))
    end = paths["newton (undamped)"][-1]
    claims.append(claim(
        "Newton's method is attracted to saddle points (it seeks any zero of the gradient; Dauphin et al.)",
        f"undamped Newton ends at ({end[0]:.2g}, {end[1]:.2g}), f = {float(_saddle(torch.tensor(end))):.3g}",
        bool(np.abs(end).max() < 1e-6),
    ))
    claims.append(claim(
        "momentum and adaptive methods escape faster than plain gradient descent",
        ", ".join(f"{k}: {v if v is not None else 'never'}" for k, v in escape.items() if "undamped" not in k),
        all((escape[k] or 10**9) < (escape["sgd"] or 10**9) for k in ("momentum", "adam")),
    ))
    g = torch.Generator().manual_seed(0)
    samples = 2000 if ctx.quick else 20000
    dims = list(range(1, 7 if ctx.quick else 9))
    fractions = [positive_definite_fraction(n, samples, g) for n in dims]
    claims.append(claim(
        "in high dimensions most critical points are saddles: a minimum needs every direction to curve up "
        "(probability ~ p^n)",
        "P(all eigenvalues > 0) of random symmetric matrices: "
        + ", ".join(f"n={n}: {f:.2g}" for n, f in zip(dims, fractions)),
        all(b <= a for a, b in zip(fractions, fractions[1:])) and fractions[-1] < 0.01,
    ))
    fig_paths = contour_figure(
        lambda x, y: x**2 - y**2 + y**4 / 4, paths, xlim=(-1.2, 1.2), ylim=(-2.2, 2.2),
        title=f"f = x^2 - y^2 + y^4/4 from {start}: the saddle at 0, minima at (0, +-sqrt 2)", minimum=(0, 2**0.5),
        xlabel="x", ylabel="y",
    )
    fig, (ax1, ax2) = new_figure(2, title="Near the saddle: gradient norm, and how rare minima are")
    for label, gn in grad_norms.items():
        ax1.semilogy(gn + 1e-16, label=label)
    ax1.set_xlabel("step")
    ax1.set_ylabel("|grad f|")
    ax1.legend(fontsize=8)
    ax2.semilogy(dims, [max(f, 1.0 / samples) for f in fractions], "o-", label="measured (GOE)")
    ax2.semilogy(dims, [0.5**n for n in dims], "--", color="0.5", label="0.5^n (independent signs)")
    ax2.set_xlabel("dimension n")
    ax2.set_ylabel("P(critical point is a minimum)")
    ax2.legend(fontsize=8)
    notes = ("Minima get rarer much faster than p^n: the eigenvalues of a random symmetric matrix repel each other, "
             "so all-positive spectra are exponentially rarer than independent signs would give.")
    rows = [
        {"method": label, "steps": len(p) - 1, "escape_step": escape[label],
         "min_grad_norm": float(grad_norms[label].min()), "final_x": float(p[-1][0]), "final_y": float(p[-1][1]),
         "final_f": float(_saddle(torch.tensor(p[-1])))}
        for label, p in paths.items()
    ]  # fmt: skip
    notes += (" escape_step: the first step with |y| > 1 (empty: never); P(minimum) of random symmetric matrices, "
              "by dimension, is in the claims.")  # fmt: skip
    return Result(table=rows, claims=claims, figures={"trajectories": fig_paths, "saddle": fig}, notes=notes)


# ------------------------------------------------------------------------------------------------- cliff


@register("cliff", title="The exploding-gradient cliff", figure="7.5",
          help="one-neuron RNN h_t = sigmoid(w h_{t-1} + b): its loss surface and gradient descent with and "
               "without clipping",
          options=(), why="a one-neuron RNN on a fixed sequence: no data, no randomness, a step budget")
def run_cliff(ctx: Context) -> Result:
    n = 81 if ctx.quick else 241
    ctx.expect_runs(0)  # gradient descent on a 2-parameter surface, nothing stored
    ws = torch.linspace(-2.0, 8.0, n, dtype=torch.float64)
    bs = torch.linspace(-5.0, 2.0, n, dtype=torch.float64)
    wg, bg = torch.meshgrid(ws, bs, indexing="ij")
    wg.requires_grad_(True)
    bg.requires_grad_(True)
    loss = dg.rnn_cliff_loss(wg, bg)
    gw, gb = torch.autograd.grad(loss.sum(), (wg, bg))
    gnorm = torch.sqrt(gw**2 + gb**2)
    start, lr, clip = (4.35, -2.15), 1.0, 0.3
    iterations = 40 if ctx.quick else 100
    free = dg.gradient_descent_path(start, lr=lr, iterations=iterations)
    clipped = dg.gradient_descent_path(start, lr=lr, iterations=iterations, clip=clip)
    step_free = free.diff(dim=0).norm(dim=1)
    step_clip = clipped.diff(dim=0).norm(dim=1)
    final_free = float(dg.rnn_cliff_loss(free[-1, 0], free[-1, 1]))
    final_clip = float(dg.rnn_cliff_loss(clipped[-1, 0], clipped[-1, 1]))
    ratio = float(gnorm.max() / gnorm.median())
    claims = [
        claim("the loss surface of a recurrent net has cliffs: regions where the gradient is huge",
              f"max |grad| / median |grad| over the grid = {ratio:.3g}", ratio > 10),
        claim("an unclipped gradient step on the cliff throws the parameters far away",
              f"longest unclipped step {float(step_free.max()):.3g} (lr = {lr})", float(step_free.max()) > 2.0),
        claim(f"clipping the gradient norm to b = {clip} bounds every step by lr * b (eq. 7.24)",
              f"longest clipped step {float(step_clip.max()):.3g}", float(step_clip.max()) <= lr * clip + 1e-12),
        claim("clipping reaches a lower loss from the same start",
              f"final loss: clipped {final_clip:.3g}, unclipped {final_free:.3g}", final_clip < final_free),
    ]
    surface = dg.rnn_cliff_loss(wg.detach(), bg.detach()).numpy()

    def f(x, y):
        return dg.rnn_cliff_loss(torch.as_tensor(x), torch.as_tensor(y)).numpy()

    fig_paths = contour_figure(
        f, {"gradient descent": free.numpy(), f"clipped at {clip}": clipped.numpy()},
        xlim=(-2.0, 8.0), ylim=(-5.0, 2.0), title="(h_100 - 0.65)^2 for h_t = sigmoid(w h_{t-1} + b), h_0 = 0.3",
        levels=25, xlabel="w", ylabel="b",
    )
    fig, (ax1, ax2) = new_figure(2, title="The cliff: the loss and its gradient along w")
    j = int(torch.argmin((bs - start[1]).abs()))
    ax1.plot(ws.numpy(), surface[:, j])
    ax1.set_xlabel("w")
    ax1.set_ylabel(f"loss at b = {float(bs[j]):.2f}")
    ax2.semilogy(ws.numpy(), gnorm[:, j].detach().numpy() + 1e-16)
    ax2.set_xlabel("w")
    ax2.set_ylabel("|grad|")
    rows = [
        {"method": label, "clip": c, "iterations": iterations, "longest_step": float(step.max()),
         "final_w": float(path[-1, 0]), "final_b": float(path[-1, 1]), "final_loss": final}
        for label, c, step, path, final in (("gradient descent", None, step_free, free, final_free),
                                            (f"clipped at {clip}", clip, step_clip, clipped, final_clip))
    ]  # fmt: skip
    return Result(table=rows, claims=claims, figures={"surface": fig_paths, "slice": fig},
                  notes=f"Start (w, b) = {start}, on the face of the cliff; lr {lr:g}; max |grad| / median |grad| "
                  f"over the {n} x {n} grid: {ratio:.3g}.")  # fmt: skip


# ------------------------------------------------------------------------------------------ second-order


def _full_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, wd: float):
    params = [p for p in model.parameters()]

    def loss_fn() -> torch.Tensor:
        return F.cross_entropy(model(x), y) + wd * sum((p**2).sum() for p in params if p.ndim > 1)

    return params, loss_fn


def _trace(make_model, x, y, wd, name: str, hp: dict[str, Any], budget: int) -> dict[str, list[float]]:
    """Loss after each step against closure calls and seconds, up to ``budget`` closure calls."""
    model = make_model()
    params, loss_fn = _full_batch(model, x, y, wd)
    opt = optim.create(name, params, **hp)
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    out: dict[str, list[float]] = {"loss": [], "calls": [], "seconds": []}
    t0 = time.perf_counter()
    with torch.no_grad():
        out["loss"].append(float(loss_fn()))
    out["calls"].append(0)
    out["seconds"].append(0.0)
    while calls[0] < budget:
        opt.step(closure)
        with torch.no_grad():
            out["loss"].append(float(loss_fn()))
        out["calls"].append(calls[0])
        out["seconds"].append(time.perf_counter() - t0)
    return out


@register("second-order", title="Second-order methods against Adam", figure="",
          help="Newton, Newton-CG, CG, BFGS, L-BFGS vs Adam, full batch: loss against evaluations and wall time",
          options=("dataset",), why="full-batch runs from one fixed initialization with an evaluation budget")
def run_second_order(ctx: Context) -> Result:
    data = ctx.load_data(0)
    x, y = data.train.x.double(), data.train.y
    n_in, n_out = x.shape[1], int(y.max()) + 1
    budget = 12 if ctx.quick else 150
    ctx.expect_runs(0)  # full-batch closures, outside the trainer and the store
    problems = {"softmax regression": lambda: _seeded(lambda: torch.nn.Linear(n_in, n_out).double())}
    if not ctx.quick:
        problems["MLP (tanh, 16 hidden)"] = lambda: _seeded(lambda: torch.nn.Sequential(
            torch.nn.Linear(n_in, 16), torch.nn.Tanh(), torch.nn.Linear(16, n_out)).double())
    methods = {
        "adam": ("adam", {"lr": 0.05}),
        "cg": ("cg", {}),
        "bfgs": ("bfgs", {}),
        "lbfgs": ("lbfgs", {}),
        "newton-cg": ("newton-cg", {"damping": 1e-4, "cg_iterations": 10}),
    }
    rows = []
    figures = {}
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for pname, make in problems.items():
        results[pname] = {}
        for label, (name, hp) in methods.items():
            if name == "bfgs" and sum(p.numel() for p in make().parameters()) > 2000:
                continue
            results[pname][label] = _trace(make, x, y, 1e-4, name, hp, budget)
        best = min(min(r["loss"]) for r in results[pname].values())
        for label, r in results[pname].items():
            gap = np.array(r["loss"]) - best
            hit = np.nonzero(gap <= 1e-3 * max(1.0, abs(best)))[0]
            reach = int(r["calls"][hit[0]]) if hit.size else None
            rows.append({
                "problem": pname, "method": label, "steps": len(r["loss"]) - 1, "closure calls": r["calls"][-1],
                "final loss": r["loss"][-1], "calls to within 1e-3 of best": reach,
                "seconds": round(r["seconds"][-1], 3),
            })
        figures[f"loss-{pname.split()[0].lower()}"] = curves_figure([
            Panel({k: [v["loss"]] for k, v in results[pname].items()}, title=f"{pname}: loss vs closure calls",
                  xlabel="closure calls (loss + gradient evaluations)", ylabel="full-batch loss", log_y=True,
                  x={k: v["calls"] for k, v in results[pname].items()}),
            Panel({k: [v["loss"]] for k, v in results[pname].items()}, title=f"{pname}: loss vs wall time",
                  xlabel="seconds", ylabel="full-batch loss", log_y=True,
                  x={k: v["seconds"] for k, v in results[pname].items()}),
        ], title=f"Full-batch training of a {pname} on {data.name if hasattr(data, 'name') else ctx.dataset}")
    by = {(r["problem"], r["method"]): r for r in rows}
    soft = "softmax regression"

    def reach(method: str) -> float:
        v = by[(soft, method)]["calls to within 1e-3 of best"]
        return math.inf if v is None else v

    claims = [
        claim("second-order (and quasi-Newton) methods need far fewer evaluations than first-order ones on a "
              "smooth convex problem",
              f"calls to within 1e-3 of the best loss: adam {reach('adam')}, lbfgs {reach('lbfgs')}, "
              f"newton-cg {reach('newton-cg')}, bfgs {reach('bfgs')}",
              min(reach("lbfgs"), reach("newton-cg"), reach("bfgs")) < reach("adam")),
        claim("each second-order step costs more than a first-order step",
              "seconds per step: " + ", ".join(
                  f"{r['method']} {r['seconds'] / max(r['steps'], 1) * 1e3:.1f} ms" for r in rows
                  if r["problem"] == soft),
              by[(soft, "newton-cg")]["seconds"] / max(by[(soft, "newton-cg")]["steps"], 1)
              > by[(soft, "adam")]["seconds"] / max(by[(soft, "adam")]["steps"], 1)),
    ]
    notes = (f"Full batch, float64, from one fixed initialization; {budget} closure calls per method; 'calls to "
             "within 1e-3 of best': the first closure call whose loss is within 1e-3 * max(1, |best|) of the "
             "best loss any method reached. Seconds are wall time (not reproducible).")  # fmt: skip
    return Result(table=rows, claims=claims, figures=figures, notes=notes)


def _seeded(make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


# ------------------------------------------------------------------------------------------- trajectories


def _saddle_2d(x1: Any, x2: Any) -> Any:
    return x1**2 - x2**2 + x2**4 / 4


#: The saddle of :func:`run_saddle` as a toy function of ``optreg toy``'s kind (x2 escapes to +-sqrt 2).
SADDLE = ToyFunction(
    "saddle", "x1^2 - x2^2 + x2^4 / 4", _saddle_2d, (1.0, 1e-3), (0.0, 2**0.5), -1.0, (-1.2, 1.2), (-0.5, 2.0), 150,
    1e-4,
    {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.5, "rmsprop": 0.01, "adadelta": 1.0,
     "adam": 0.05, "nadam": 0.05, "adamw": 0.05},
)


def _sign_flips(values: np.ndarray) -> int:
    s = np.sign(values[np.abs(values) > 1e-12])
    return int((s[1:] != s[:-1]).sum())


@register("trajectories", title="Optimizer trajectories", figure="7.4",
          help="every optimizer on the ill-conditioned quadratic, Rosenbrock and a saddle; momentum vs Nesterov",
          options=(), why="2-D test functions: no data, no randomness, step budgets")
def run_trajectories(ctx: Context) -> Result:
    """Every optimizer on the two toy functions of ``optimizers-2d`` and on :data:`SADDLE`
    (:func:`~optreg.experiments.optimizers.toy_experiment`: each trajectory a stored run, each panel naming
    its lr), and figure 7.4's momentum against Nesterov."""
    rows, figures = toy_experiment(ctx, {**TOY_FUNCTIONS, "saddle": SADDLE})
    # figure 7.4: momentum against Nesterov at the same learning rate and momentum, on the quadratic
    quad = TOY_FUNCTIONS["quadratic"]
    pair = {name: toy_run(quad, name, lr=0.1, steps=60) for name in ("momentum", "nesterov")}
    flips = {name: _sign_flips(p[:, 1]) for name, p in pair.items()}
    amplitude = {name: float(np.abs(p[1:, 1]).mean()) for name, p in pair.items()}
    reach = {name: steps_to_tol(quad.f(p[:, 0], p[:, 1]), quad.tol) for name, p in pair.items()}
    figures["momentum-vs-nesterov"] = contour_figure(
        quad.f, pair, xlim=quad.xlim, ylim=quad.ylim,
        title=f"figure 7.4: momentum vs Nesterov, lr 0.1, rho 0.9, on {quad.formula}", minimum=quad.argmin,
    )
    claims = [
        claim("Nesterov's look-ahead gradient damps momentum's oscillation across the steep direction (figure 7.4)",
              f"mean |x2| over 60 steps: momentum {amplitude['momentum']:.3g}, nesterov {amplitude['nesterov']:.3g}; "
              f"sign changes of x2: {flips['momentum']} and {flips['nesterov']}; steps to f < {quad.tol:g}: "
              f"{reach['momentum']} and {reach['nesterov']}",
              amplitude["nesterov"] < amplitude["momentum"]),
    ]
    notes = "Learning rates: optreg.experiments.optimizers.TOY_FUNCTIONS and curvature.SADDLE."
    return Result(table=rows, claims=claims, figures=figures, notes=notes)
