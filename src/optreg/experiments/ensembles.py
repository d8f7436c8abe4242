r"""Model ensembles (files 001 and 004) and Monte Carlo dropout (eqs. 7.65-7.66): :mod:`optreg.train.ensemble`
on real data.

On one fixed split (seed 0) the same MLP is trained from ``M`` initializations (file 001, recipe 1); the
ensemble of the first ``k`` of them, and of every other run of ``k`` consecutive members (cyclically), gives
accuracy, NLL and ECE against ``k`` (probabilities averaged, not logits). Member 0's run also keeps snapshots
of its weights at several epochs (recipe 3, :class:`~optreg.train.ensemble.Snapshots`) and running averages
of its iterates (recipe 4, :class:`~optreg.train.ensemble.WeightAveraging`, which is
``torch.optim.swa_utils.AveragedModel``: the Polyak average from half-way, and an EMA). ``B`` members are
trained on bootstrap resamples of the training set (file 004, :meth:`Ensemble.from_bootstrap`), and one
network with dropout is sampled ``S`` times at test time (:func:`optreg.nn.dropout.mc_dropout_predict`).

Uncertainty: for an ensemble, the members' standard deviation of the probability of the predicted class;
for MC dropout, the samples' standard deviation of it. It is compared on wrong and right test predictions
(means, and the area under the ROC curve of "uncertainty flags a wrong prediction", 0.5 = no signal).
The probabilities behind the table are saved as ``predictions.npz``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optreg.data.datasets import Split
from optreg.experiments.base import Context, Result, claim, exceeds, mean_std, register
from optreg.experiments.regularization import _save_arrays
from optreg.nn.dropout import mc_dropout_predict
from optreg.report import plots
from optreg.train.ensemble import Ensemble, Snapshots, WeightAveraging, expected_calibration_error, reliability_bins

__all__ = ["MODEL", "auroc", "run", "uncertainty_split"]

MODEL = {"kind": "mlp", "hidden": [128, 128], "activation": "relu"}
LR, BATCH, LOG_EVERY = 1e-3, 32, 5
DROPOUT, MC_SAMPLES = 0.3, 30
EMA_DECAY = 0.95  # per averaged iterate (every LOG_EVERY-th update)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for telling ``positive`` examples apart (scikit-learn's
    ``roc_auc_score``); None when one class is absent."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, scores))


def uncertainty_split(mean: Tensor, std: Tensor, y: Tensor) -> dict[str, float | None]:
    """Two uncertainties on wrong and on right predictions, their means and their AUROC as detectors of wrong
    predictions: the spread of the predicted class's probability (``std`` gathered at ``argmax mean``), and the
    predictive entropy of the mean prediction, ``-sum_k p_k log p_k``."""
    predicted = mean.argmax(1)
    u = std.gather(1, predicted[:, None])[:, 0].double().numpy()
    p = mean.double()
    h = (-(p * p.clamp_min(1e-300).log()).sum(1)).numpy()
    wrong = (predicted != y).numpy()
    right = ~wrong
    return {
        "uncertainty (wrong)": float(u[wrong].mean()) if wrong.any() else None,
        "uncertainty (right)": float(u[right].mean()) if right.any() else None,
        "AUROC (uncertainty flags wrong)": auroc(u, wrong),
        "entropy (wrong)": float(h[wrong].mean()) if wrong.any() else None,
        "entropy (right)": float(h[right].mean()) if right.any() else None,
        "AUROC (entropy flags wrong)": auroc(h, wrong),
    }


def _scores(ensemble: Ensemble, test: Split) -> dict[str, Any]:
    """:meth:`Ensemble.evaluate` plus the members' mean ECE and the uncertainty split."""
    ev = ensemble.evaluate(test)
    members = [Ensemble([m]).evaluate(test)["ece"] for m in ensemble.members]
    mean, std = ensemble.predict_proba(test.x, return_std=True)
    return {"accuracy": ev["accuracy"], "mean member accuracy": ev["mean_member_accuracy"], "ece": ev["ece"],
            "mean member ece": float(np.mean(members)), "nll": ev["nll"], "spread": ev["spread"],
            "disagreement": ev["disagreement"], **(uncertainty_split(mean, std, test.y) if len(ensemble) > 1 else {})}


@register(
    "ensembles",
    title="Ensembles: accuracy and calibration against size; snapshots, averaging, bootstrap, MC dropout",
    figure="files 001, 004; eqs. 7.65-7.66",
    help="different inits (k = 1..M), snapshots, Polyak / EMA weights, bootstrap, MC dropout's uncertainty",
    options=("dataset", "epochs", "seeds"),
)
def run(ctx: Context) -> Result:
    members = max(2, ctx.seeds if ctx.seeds is not None else (3 if ctx.quick else 8))  # seeds = members
    boots = 2 if ctx.quick else 5
    epochs = ctx.epoch_count(default=15, quick=2)
    dataset = ctx.dataset or "mnist1d"
    data = ctx.load_data(0, dataset=dataset)
    test = data.test
    steps = -(-len(data.train.y) // BATCH) * epochs
    snap_epochs = sorted({int(round(e)) for e in np.linspace(max(1, epochs // 2), epochs, 5)})
    snapshots = Snapshots(snap_epochs)
    polyak = WeightAveraging("polyak", start_step=steps // 2)
    ema = WeightAveraging("ema", decay=EMA_DECAY)
    common = {"model_spec": MODEL, "optimizer": "adam", "hparams": {"lr": LR}, "batch_size": BATCH, "epochs": epochs,
              "data": data, "log_every": LOG_EVERY}
    ctx.expect_runs(members + boots + 1)  # the members, the bootstrap models, the dropout net
    runs = [ctx.train("member", seed=s, callbacks=[snapshots, polyak, ema] if s == 0 else (), **common)
            for s in range(members)]
    models = [r.model for r in runs]

    def fit_bootstrap(split: Split, m: int) -> nn.Module:
        return ctx.train(f"bootstrap {m}", seed=m, **{**common, "data": data._replace(train=split)}).model

    bootstrap = Ensemble.from_bootstrap(fit_bootstrap, data.train, boots, seed=0)
    dropout_run = ctx.train(f"dropout {DROPOUT}", seed=0, **{**common, "model_spec": {**MODEL, "dropout": DROPOUT}})
    mc_mean, mc_std = mc_dropout_predict(dropout_run.model, test.x.to(ctx.device), MC_SAMPLES,
                                         generator=torch.Generator(device=ctx.device).manual_seed(0))
    mc_mean, mc_std = mc_mean.cpu(), mc_std.cpu()
    deterministic = Ensemble([dropout_run.model]).predict_proba(test.x)

    table: list[dict[str, Any]] = []
    by_k: dict[int, list[dict[str, Any]]] = {}
    for k in range(1, members + 1):
        starts = range(members) if k < members else range(1)
        by_k[k] = [_scores(Ensemble([models[(i + j) % members] for j in range(k)]), test) for i in starts]
        row: dict[str, Any] = {"recipe": "different initializations", "members": k, "subsets": len(by_k[k])}
        for key in by_k[k][0]:
            row[key], sd = mean_std(s[key] for s in by_k[k])
            if key in ("accuracy", "ece"):
                row[f"{key} sd"] = sd
        table.append(row)
    recipes = {
        f"snapshots of member 0 (epochs {', '.join(map(str, snap_epochs))})": snapshots.ensemble(),
        f"Polyak average of member 0 (from step {steps // 2})": Ensemble([polyak.model]),
        f"EMA of member 0 (decay {EMA_DECAY} per {LOG_EVERY} steps)": Ensemble([ema.model]),
        "member 0 alone (final weights)": Ensemble([models[0]]),
        f"bootstrap resamples ({boots})": bootstrap,
    }
    for label, ens in recipes.items():
        table.append({"recipe": label, "members": len(ens), "subsets": 1, **_scores(ens, test)})
    y = test.y
    mc_row = {"recipe": f"MC dropout ({MC_SAMPLES} samples, p = {DROPOUT})", "members": MC_SAMPLES, "subsets": 1,
              "accuracy": float((mc_mean.argmax(1) == y).double().mean()),
              "ece": expected_calibration_error(mc_mean, y),
              "nll": float(-mc_mean.double().gather(1, y[:, None]).clamp_min(1e-300).log().mean()),
              **uncertainty_split(mc_mean, mc_std, y)}
    det_row = {"recipe": f"dropout net, deterministic (weight scaling, p = {DROPOUT})", "members": 1, "subsets": 1,
               "accuracy": float((deterministic.argmax(1) == y).double().mean()),
               "ece": expected_calibration_error(deterministic, y),
               "nll": float(-deterministic.double().gather(1, y[:, None]).clamp_min(1e-300).log().mean())}
    table += [mc_row, det_row]

    member_probs = Ensemble(models).member_probabilities(test.x)
    _save_arrays(ctx, "predictions.npz", {
        "y": y.numpy(), "members": member_probs.numpy(), "bootstrap": bootstrap.member_probabilities(test.x).numpy(),
        "snapshots": recipes[next(iter(recipes))].member_probabilities(test.x).numpy(),
        "mc_mean": mc_mean.numpy(), "mc_std": mc_std.numpy(), "deterministic": deterministic.numpy()})
    claims = _claims(table, by_k, recipes, mc_row, det_row, mc_mean, deterministic)
    figures = _figures(table, by_k, member_probs, y, mc_mean, mc_std, members)
    notes = (
        f"{data.name}, one split (seed 0); MLP {MODEL['hidden']} ({MODEL['activation']}), Adam lr {LR}, batch {BATCH}, "
        f"{epochs} epochs; members differ in their seed (weights, data order). Rows with k < {members} members "
        f"average the {members} cyclic runs of k consecutive members (sd = population std over them). Averaging "
        f"(Polyak, EMA) sees every {LOG_EVERY}th iterate (the trainer's log_every). Bootstrap member m: seed m on "
        "a resample of the training set drawn with replacement. Uncertainty = std of the predicted class's "
        "probability across members / dropout samples. ECE: 15 equal-width bins. predictions.npz holds the test "
        "probabilities (members, bootstrap, snapshots, mc_mean, mc_std, deterministic) and labels."
    )
    return Result(table=table, claims=claims, figures=figures, notes=notes)


def _claims(table, by_k, recipes, mc_row, det_row, mc_mean, deterministic) -> list[dict[str, Any]]:
    rows = {(r["recipe"], r["members"]): r for r in table}
    init = [r for r in table if r["recipe"] == "different initializations"]
    single, full = init[0], init[-1]
    m = full["members"]
    accs = [r["accuracy"] for r in init]
    monotone = all(b >= a - 1e-12 for a, b in zip(accs, accs[1:]))
    first_gain = accs[1] - accs[0]
    half = max(1, m // 2)
    late_gain = (accs[-1] - accs[half - 1]) / max(1, m - half)
    # the single members are the seeds: the ensemble (one value) against their spread (it borrows their variance)
    beats = exceeds([full["accuracy"]], [s["accuracy"] for s in by_k[1]])
    calibrates = exceeds([s["ece"] for s in by_k[1]], [full["ece"]])
    claims = [
        claim(f"an ensemble of k models beats a single model (file 001; here k = {m})",
              f"test accuracy: ensemble of {m} {full['accuracy']:.3f} vs single models {single['accuracy']:.3f} +- "
              f"{single['accuracy sd']:.3f} (mean +- sd over the {m} members); difference {beats.text}",
              beats.holds),
        claim("accuracy grows monotonically with the number of members, with diminishing returns (file 001)",
              "mean accuracy for k = 1.." + str(m) + ": " + " ".join(f"{a:.3f}" for a in accs)
              + f"; gain 1 -> 2: {first_gain:+.4f}, per member from {half} to {m}: {late_gain:+.4f}",
              bool(monotone and first_gain > late_gain)),
        claim("averaging the members' probabilities improves calibration",
              f"ECE: ensemble of {m} {full['ece']:.3f} vs its members {full['mean member ece']:.3f} (members minus "
              f"ensemble {calibrates.text}); NLL {full['nll']:.3f} vs single {single['nll']:.3f}",
              calibrates.holds),
    ]
    final = next(r for (label, _), r in rows.items() if label.startswith("member 0 alone"))
    poly = next(r for (label, _), r in rows.items() if label.startswith("Polyak"))
    emar = next(r for (label, _), r in rows.items() if label.startswith("EMA"))
    snap = next(r for (label, _), r in rows.items() if label.startswith("snapshots"))
    boot = next(r for (label, _), r in rows.items() if label.startswith("bootstrap"))
    claims += [
        claim("the smoothed (running-average) weights give a lower error than the last iterate (file 001, recipe 4; "
              "Polyak averaging, file 002)",
              f"test error: final weights {1 - final['accuracy']:.3f}, Polyak {1 - poly['accuracy']:.3f}, EMA "
              f"{1 - emar['accuracy']:.3f} (NLL {final['nll']:.3f} / {poly['nll']:.3f} / {emar['nll']:.3f})",
              poly["accuracy"] > final["accuracy"] and emar["accuracy"] > final["accuracy"]),
        claim("snapshots of one run make an ensemble better than the run's final model (file 001, recipe 3)",
              f"test accuracy: {snap['members']} snapshots {snap['accuracy']:.3f} vs final {final['accuracy']:.3f}; "
              f"ECE {snap['ece']:.3f} vs {final['ece']:.3f}",
              snap["accuracy"] > final["accuracy"]),
    ]
    same_size = next((r for r in init if r["members"] == boot["members"]), full)
    diverse = [("different inits", same_size), ("bootstrap", boot), ("snapshots", snap)]
    gains = [(name, r["disagreement"], r["accuracy"] - r["mean member accuracy"]) for name, r in diverse]
    by_dis = [g[0] for g in sorted(gains, key=lambda g: g[1])]
    by_gain = [g[0] for g in sorted(gains, key=lambda g: g[2])]
    claims.append(claim(
        "the more the members differ, the more the ensemble gains over them (file 001)",
        "disagreement / accuracy gain over the mean member: "
        + ", ".join(f"{n} ({r['members']}) {d:.3f} / {g:+.4f}" for (n, d, g), (_, r) in zip(gains, diverse)),
        by_dis == by_gain,
    ))
    claims.append(claim(
        "members trained on bootstrap resamples disagree more where the model is wrong: their spread measures "
        "uncertainty (file 004)",
        f"spread on wrong {boot['uncertainty (wrong)']:.3f} vs right {boot['uncertainty (right)']:.3f}; AUROC "
        f"{boot['AUROC (uncertainty flags wrong)']:.3f}",
        bool(boot["uncertainty (wrong)"] > boot["uncertainty (right)"]),
    ))
    claims.append(claim(
        "MC-dropout uncertainty is higher on wrong predictions (the Bayesian reading of dropout, eqs. 7.65-7.66)",
        f"std over {mc_row['members']} samples: wrong {mc_row['uncertainty (wrong)']:.3f} vs right "
        f"{mc_row['uncertainty (right)']:.3f}; AUROC {mc_row['AUROC (uncertainty flags wrong)']:.3f} (ensemble of "
        f"{m}: {full['uncertainty (wrong)']:.3f} vs {full['uncertainty (right)']:.3f}, AUROC "
        f"{full['AUROC (uncertainty flags wrong)']:.3f})",
        bool(mc_row["uncertainty (wrong)"] > mc_row["uncertainty (right)"]),
    ))
    claims.append(claim(
        "MC dropout's predictive entropy (of the averaged prediction, eq. 7.66) is higher on wrong predictions",
        f"entropy: wrong {mc_row['entropy (wrong)']:.3f} vs right {mc_row['entropy (right)']:.3f} nats; AUROC "
        f"{mc_row['AUROC (entropy flags wrong)']:.3f} (ensemble of {m}: AUROC "
        f"{full['AUROC (entropy flags wrong)']:.3f})",
        bool(mc_row["entropy (wrong)"] > mc_row["entropy (right)"]),
    ))
    gap = float((mc_mean - deterministic).abs().sum(1).mean() / 2)
    claims.append(claim(
        "dropout's test-time weight scaling approximates averaging the sampled sub-networks (section 7.7.4, the "
        "ensemble reading)",
        f"accuracy: weight scaling {det_row['accuracy']:.3f}, MC average {mc_row['accuracy']:.3f}; mean total "
        f"variation between their predictions {gap:.3f}",
        bool(abs(det_row["accuracy"] - mc_row["accuracy"]) < 0.02 and gap < 0.1),
    ))
    return claims


def _reliability(ax: Any, p: Tensor, y: Tensor, title: str) -> None:
    conf, acc, count = (t.numpy() for t in reliability_bins(p, y))
    width = 1 / len(conf)
    centers = (np.arange(len(conf)) + 0.5) * width
    full = count > 0
    ax.bar(centers[full], acc[full], width=width, edgecolor="k", alpha=0.7)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set(title=f"{title}: ECE {expected_calibration_error(p, y):.3f}", xlabel="confidence", ylabel="accuracy",
           xlim=(0, 1), ylim=(0, 1))


def _figures(table, by_k, member_probs, y, mc_mean, mc_std, members: int):
    ks = sorted(by_k)
    fig, axes = plots.new_figure(2, title=f"Ensembles of 1..{members} MLPs from different initializations")
    for ax, key, name in ((axes[0], "accuracy", "test accuracy"), (axes[1], "ece", "test ECE")):
        mean = np.array([np.mean([s[key] for s in by_k[k]]) for k in ks])
        sd = np.array([np.std([s[key] for s in by_k[k]]) for k in ks])
        ax.plot(ks, mean, "o-", label="ensemble of k")
        ax.fill_between(ks, mean - sd, mean + sd, alpha=0.2)
        for r in table:
            if r["recipe"] != "different initializations" and r.get(key) is not None:
                ax.axhline(r[key], linestyle=":", linewidth=1, label=r["recipe"], color=plots.colors(
                    [t["recipe"] for t in table])[r["recipe"]])
        ax.set(title=f"{name} against the number of members", xlabel="members k", ylabel=name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, frameon=False)
    rel, axes = plots.new_figure(3, title="Reliability diagrams (test set)", panel_size=(4.2, 3.8))
    _reliability(axes[0], member_probs[0], y, "member 0")
    _reliability(axes[1], member_probs.mean(0), y, f"ensemble of {members}")
    _reliability(axes[2], mc_mean, y, "MC dropout")
    unc, axes = plots.new_figure(2, title="Uncertainty on wrong vs right test predictions")
    for ax, (mean, std, title) in zip(axes, ((mc_mean, mc_std, "MC dropout"),
                                             (member_probs.mean(0), member_probs.std(0, correction=0),
                                              f"ensemble of {members}"))):
        predicted = mean.argmax(1)
        u = std.gather(1, predicted[:, None])[:, 0].numpy()
        wrong = (predicted != y).numpy()
        bins = np.linspace(0, max(float(u.max()), 1e-6), 30)
        ax.hist(u[~wrong], bins=bins, alpha=0.6, density=True, label=f"right ({(~wrong).sum()})")
        ax.hist(u[wrong], bins=bins, alpha=0.6, density=True, label=f"wrong ({wrong.sum()})")
        ax.set(title=f"{title}: std of the predicted class's probability", xlabel="std", ylabel="density")
        ax.legend(fontsize=8, frameon=False)
    return {"size": fig, "reliability": rel, "uncertainty": unc}

