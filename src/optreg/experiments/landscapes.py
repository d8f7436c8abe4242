"""Curvature of trained networks (sections 7.1, 7.5; figure 7.2; file 002): the Hessian spectrum, sharp and flat
minima, loss landscapes with and without batch normalization, and the ill-conditioning monitor.

- ``spectrum``: stochastic Lanczos quadrature of an MLP's Hessian on digits at initialization and after training.
- ``flat-minima`` (figure 7.2): small against large batches: sharpness (top eigenvalue, worst increase in a
  ball) and test accuracy (Keskar et al., 2017).
- ``landscape``: filter-normalized 2-D loss planes (Li et al., 2018) of a deep MLP, plain, with batch
  normalization and with skip connections, and a 1-D interpolation from the initial to the trained weights.
- ``conditioning`` (file 002): ``g^T g`` against ``g^T H g`` along a training run.

Each returns a table of measured numbers and the claims it measures (``Result.claims``, each with a verdict:
holds / does not hold here).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from optreg import diagnostics as dg
from optreg.experiments.base import Context, Result, claim, exceeds, register
from optreg.report.plots import Panel, curves_figure, new_figure
from optreg.train import build_model


def _probe(data: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training examples: a fixed batch on which curvature is measured."""
    return data.train.x[:n], data.train.y[:n]


# ---------------------------------------------------------------------------------------------- spectrum


@register("spectrum", title="Hessian spectrum of an MLP", figure="7.1",
          help="eigenvalue density (stochastic Lanczos quadrature) of an MLP's Hessian at init and after training",
          options=("dataset", "epochs"), why="one trained model (seed 0) is measured")
def run_spectrum(ctx: Context) -> Result:
    data = ctx.load_data(0)
    spec = {"kind": "mlp", "hidden": [32], "activation": "tanh"}
    epochs = ctx.epoch_count(default=30, quick=3)
    probe = _probe(data, 256 if ctx.quick else 1024)
    steps, probes = (20, 2) if ctx.quick else (60, 4)
    init_model = build_model(spec, data, seed=0)
    ctx.expect_runs(1)
    run = ctx.train("mlp-32", model_spec=spec, optimizer="adam", hparams={"lr": 3e-3}, seed=0, batch_size=32,
                    epochs=epochs)
    densities, tops = {}, {}
    for label, model in (("initialization", init_model), ("trained", run.model)):
        op = dg.HessianOperator(model, F.cross_entropy, probe)
        densities[label] = dg.spectral_density(op, steps=steps, probes=probes,
                                               generator=torch.Generator().manual_seed(0))
        tops[label] = dg.hessian_eigenvalues(op, k=1, which="both", generator=torch.Generator().manual_seed(1))
    rows = []
    for label, d in densities.items():
        top, low = float(tops[label].values.max()), float(tops[label].values.min())
        rows.append({"weights": label, "lambda_max": top, "lambda_min": low,
                     "bulk_fraction": float(d.weights[d.nodes.abs() < 0.05 * top].sum()),
                     "test_accuracy": run.test_accuracy if label == "trained" else None})  # fmt: skip
    lmax, lmin, bulk = (rows[1][k] for k in ("lambda_max", "lambda_min", "bulk_fraction"))
    claims = [
        claim("after training the spectrum is a bulk near zero with a few large outliers (Sagun et al., 2017)",
              f"{bulk:.0%} of the spectral weight has |lambda| < 5% of lambda_max = {lmax:.3g}", bulk > 0.8),
        claim("a trained network sits at a point with negative curvature directions too (not a strict minimum)",
              f"lambda_min = {lmin:.3g} (lambda_max {lmax:.3g})", lmin < 0),
        claim("training moves to a region of larger top curvature than the initialization",
              f"lambda_max: init {float(tops['initialization'].values.max()):.3g}, trained {lmax:.3g}",
              lmax > float(tops["initialization"].values.max())),
    ]
    fig, axes = new_figure(2, title=f"Hessian eigenvalue density, MLP {spec['hidden']} on {data.name}")
    for ax, (label, d) in zip(axes, densities.items()):
        lo, hi = float(d.nodes.min()), float(d.nodes.max())
        pad = 0.05 * (hi - lo + 1e-12)
        grid = torch.linspace(lo - pad, hi + pad, 400, dtype=torch.float64)
        sigma = max((hi - lo) / 100, 1e-6)
        ax.semilogy(grid.numpy(), d.smooth(grid, sigma).numpy() + 1e-12)
        ax.set_title(f"{label}: lambda in [{lo:.3g}, {hi:.3g}]")
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density (SLQ, Gaussian-smoothed)")
    notes = (f"Stochastic Lanczos quadrature with {steps} steps and {probes} Rademacher probes on {len(probe[1])} "
             f"training examples; test accuracy of the trained model {run.test_accuracy}.")
    notes += " bulk_fraction: the spectral weight with |lambda| < 5% of lambda_max."
    return Result(table=rows, claims=claims, figures={"density": fig}, notes=notes)


# ------------------------------------------------------------------------------------------- flat minima


@register("flat-minima", title="Sharp and flat minima", figure="7.2",
          help="small vs large batches: sharpness (top Hessian eigenvalue, worst loss increase in a ball) and "
               "test accuracy",
          options=("dataset", "epochs", "seeds"))
def run_flat_minima(ctx: Context) -> Result:
    spec = {"kind": "mlp", "hidden": [64], "activation": "relu"}
    epochs = ctx.epoch_count(default=40, quick=3)
    seeds = ctx.seed_list(default=3)
    batches = {"small batch (16)": 16, "large batch (full)": None}
    table: dict[str, list[dict[str, float]]] = {k: [] for k in batches}
    ctx.expect_runs(len(seeds) * len(batches))
    for seed in seeds:
        data = ctx.load_data(seed)
        probe = _probe(data, 512 if not ctx.quick else 256)
        for label, k in batches.items():
            bs = len(data.train.y) if k is None else k
            run = ctx.train(label, model_spec=spec, optimizer="sgd", hparams={"lr": 0.1 if k else 0.5}, seed=seed,
                            batch_size=bs, epochs=epochs if k else epochs * 4)
            s = dg.sharpness(run.model, F.cross_entropy, probe, radius=0.5, ascent_steps=5 if ctx.quick else 10,
                             generator=torch.Generator().manual_seed(seed))
            table[label].append({"top_eigenvalue": s.top_eigenvalue, "max_increase": s.max_increase,
                                 "test_accuracy": run.test_accuracy or float("nan"),
                                 "train_loss": run.final("train_loss") or float("nan")})
    rows = []
    for label, runs in table.items():
        row = {"setting": label}
        for key in ("train_loss", "top_eigenvalue", "max_increase", "test_accuracy"):
            row[key] = float(np.mean([r[key] for r in runs]))
        rows.append(row)
    small, large = rows[0], rows[1]
    per_seed = [{key: [r[key] for r in runs] for key in ("top_eigenvalue", "test_accuracy")} for runs in table.values()]
    sharper = exceeds(per_seed[1]["top_eigenvalue"], per_seed[0]["top_eigenvalue"], fmt=".3g")
    better = exceeds(per_seed[0]["test_accuracy"], per_seed[1]["test_accuracy"])
    claims = [
        claim("large batches converge to sharper minima (Keskar et al., 2017; figure 7.2)",
              f"top eigenvalue: small {small['top_eigenvalue']:.3g}, large {large['top_eigenvalue']:.3g}; large - "
              f"small {sharper.text}", sharper.holds),
        claim("flat minima generalize better",
              f"test accuracy: small {small['test_accuracy']:.3f}, large {large['test_accuracy']:.3f}; small - large "
              f"{better.text}", better.holds),
    ]
    notes = (f"Means over {len(seeds)} seed(s). Full batch runs 4x the epochs (the same number of epochs would "
              "give it far fewer updates). Worst increase in a ball of radius 0.5 by projected gradient ascent.")
    fig, (ax,) = new_figure(title="Sharpness against test accuracy")
    for label, runs in table.items():
        ax.scatter([r["top_eigenvalue"] for r in runs], [r["test_accuracy"] for r in runs], label=label)
    ax.set_xlabel("top Hessian eigenvalue")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return Result(table=rows, claims=claims, figures={"sharpness": fig}, notes=notes)


# --------------------------------------------------------------------------------------------- landscape


@register("landscape", title="Loss landscapes with and without batch normalization and skip connections",
          figure="", help="filter-normalized 2-D loss planes (Li et al., 2018) of a deep MLP: plain, BN, residual",
          options=("dataset", "epochs"), why="one run per architecture (seed 0): the planes are the measurement")
def run_landscape(ctx: Context) -> Result:
    data = ctx.load_data(0)
    epochs = ctx.epoch_count(default=20, quick=2)
    steps = 5 if ctx.quick else 25
    probe = _probe(data, 256 if ctx.quick else 1024)
    specs = {
        "no norm": {"kind": "mlp", "hidden": [64] * (3 if ctx.quick else 6), "activation": "relu"},
        "batch norm": {"kind": "mlp", "hidden": [64] * (3 if ctx.quick else 6), "activation": "relu", "norm": "batch"},
        "skip connections": {"kind": "mlp", "hidden": [64] * (3 if ctx.quick else 6), "activation": "relu",
                             "residual": True},
    }
    planes, lines, rows = {}, {}, []
    ctx.expect_runs(len(specs))
    for label, spec in specs.items():
        start = dg.flat_parameters(build_model(spec, data, seed=0))
        run = ctx.train(label, model_spec=spec, optimizer="sgd", hparams={"lr": 0.05, "momentum": 0.9}, seed=0,
                        batch_size=64, epochs=epochs)
        model = run.model
        planes[label] = dg.plane(model, F.cross_entropy, probe, span=1.0, steps=steps,
                                 generator=torch.Generator().manual_seed(0))
        lines[label] = dg.interpolate(model, F.cross_entropy, probe, start, dg.flat_parameters(model), steps=21,
                                      margin=0.25)
        p = planes[label].losses
        centre = float(p[steps // 2, steps // 2])
        rows.append({"model": label, "test_accuracy": run.test_accuracy, "loss_at_centre": centre,
                     "mean_rise_on_plane": float((p - centre).mean()), "max_on_plane": float(p.max())})
    nb, bn, skip = rows[0], rows[1], rows[2]
    claims = [
        claim("batch normalization makes the landscape smoother (Santurkar et al., 2018): a smaller rise around the "
              "trained point along filter-normalized directions",
              f"mean rise over the plane: no norm {nb['mean_rise_on_plane']:.3g}, BN {bn['mean_rise_on_plane']:.3g}",
              bn["mean_rise_on_plane"] < nb["mean_rise_on_plane"]),
        claim("skip connections make a deep net's landscape smoother (Li et al., 2018, figure 5)",
              f"mean rise over the plane: no skips {nb['mean_rise_on_plane']:.3g}, skips "
              f"{skip['mean_rise_on_plane']:.3g}",
              skip["mean_rise_on_plane"] < nb["mean_rise_on_plane"]),
    ]
    fig, axes = new_figure(len(planes), title="Loss on a filter-normalized plane through the trained weights")
    for ax, (label, pl) in zip(axes, planes.items()):
        cs = ax.contourf(pl.alphas.numpy(), pl.betas.numpy(), np.log10(pl.losses.numpy().T + 1e-12), levels=20)
        fig.colorbar(cs, ax=ax, label="log10 loss")
        ax.plot(0, 0, "k*")
        ax.set_title(label)
        ax.set_xlabel("alpha (direction 1)")
        ax.set_ylabel("beta (direction 2)")
    fig_line = curves_figure([Panel({k: [v[1].tolist()] for k, v in lines.items()},
                                    x={k: v[0].tolist() for k, v in lines.items()}, log_y=True,
                                    title="From the initial (0) to the trained weights (1)",
                                    xlabel="alpha", ylabel="loss")])
    notes = (f"One run per architecture (seed 0), SGD lr 0.05 momentum 0.9, batch 64, {epochs} epochs; the planes "
             f"span [-1, 1]^2 in {steps} x {steps} points on {len(probe[1])} training examples; mean_rise_on_plane: "
             "the mean loss over the plane minus the loss at its centre (the trained weights).")  # fmt: skip
    return Result(table=rows, claims=claims, figures={"planes": fig, "interpolation": fig_line}, notes=notes)


# ------------------------------------------------------------------------------------------ conditioning


@register("conditioning", title="The ill-conditioning monitor", figure="",
          help="g^T g and g^T H g along training (file 002): when the curvature term outgrows the gradient term",
          options=("dataset", "epochs"), why="one run per learning rate (seed 0)")
def run_conditioning(ctx: Context) -> Result:
    data = ctx.load_data(0)
    epochs = ctx.epoch_count(default=20, quick=2)
    probe = _probe(data, 256 if ctx.quick else 512)
    spec = {"kind": "mlp", "hidden": [64, 64], "activation": "tanh"}
    every = 5 if ctx.quick else 20
    monitors, rows = {}, []
    lrs = (0.05, 0.5)
    ctx.expect_runs(len(lrs))
    for lr in lrs:
        label = f"sgd lr={lr}"
        monitor = dg.ConditioningMonitor(F.cross_entropy, probe, every=every)
        run = ctx.train(label, model_spec=spec, optimizer="sgd", hparams={"lr": lr}, seed=0, batch_size=32,
                        epochs=epochs, callbacks=[monitor])
        monitors[label] = monitor.records
        rec = monitor.records
        rows.append({"run": label, "grad_sq_first": rec[0]["grad_sq"], "grad_sq_last": rec[-1]["grad_sq"],
                     "ratio_max": max(r["ratio"] for r in rec), "steps_ratio_over_1": sum(r["ratio"] > 1 for r in rec),
                     "final_train_loss": run.final("train_loss"), "test_accuracy": run.test_accuracy})
    small, big = rows[0], rows[1]
    claims = [
        claim("the gradient norm does not shrink during training, although the loss falls (file 002: "
              "g^T g grows while learning slows)",
              f"lr 0.05: g^T g {small['grad_sq_first']:.3g} -> {small['grad_sq_last']:.3g}",
              small["grad_sq_last"] >= small["grad_sq_first"]),
        claim("with a larger learning rate the curvature term (eps^2/2) g^T H g overtakes eps g^T g",
              f"max ratio: lr 0.05 {small['ratio_max']:.3g}, lr 0.5 {big['ratio_max']:.3g}",
              big["ratio_max"] > 1 >= small["ratio_max"]),
    ]
    panels = [
        Panel({k: [[r["grad_sq"] for r in v]] for k, v in monitors.items()}, log_y=True, title="g^T g",
              xlabel="step", ylabel="g^T g", x={k: [r["step"] for r in v] for k, v in monitors.items()}),
        Panel({k: [[abs(r["curvature"]) for r in v]] for k, v in monitors.items()}, log_y=True, title="|g^T H g|",
              xlabel="step", ylabel="|g^T H g|", x={k: [r["step"] for r in v] for k, v in monitors.items()}),
        Panel({k: [[max(r["ratio"], 1e-6) for r in v]] for k, v in monitors.items()}, log_y=True,
              title="(eps/2) g^T H g / g^T g (> 1: the step raises the loss)", xlabel="step", ylabel="ratio",
              x={k: [r["step"] for r in v] for k, v in monitors.items()}),
    ]
    notes = (f"One run per learning rate (seed 0), SGD, batch 32, {epochs} epochs; g^T g and g^T H g measured every "
             f"{every} steps on {len(probe[1])} training examples; ratio = (eps/2) g^T H g / g^T g.")  # fmt: skip
    return Result(table=rows, claims=claims, notes=notes,
                  figures={"monitor": curves_figure(panels, title="Ill-conditioning monitor")})  # fmt: skip
