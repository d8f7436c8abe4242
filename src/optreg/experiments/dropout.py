r"""Dropout (section 7.7.4, eq. 7.64; file 004; figures 7.10-7.12; exercise 7-4).

``dropout`` (figure 7.10): an MLP (two hidden ReLU layers of 256) on MNIST-1D (digits with ``--dataset``)
with dropout on its hidden units at each rate of :data:`RATES`, DropConnect (Wan et al. 2013) at
:data:`CONNECT_RATES`, and input dropout at :data:`INPUT_RATES` (with hidden dropout 0.5). For each: the
clean (evaluation-mode) training accuracy and loss, validation and test, and the train - validation gap.
On the trained p = 0.5 net it then checks the two readings of eq. (7.64):

- inverted dropout needs no scaling at test time: the mean of many training-mode passes of the layer after
  a dropout layer equals its evaluation-mode value (exactly, in expectation: it is linear in the mask);
- dropout trains an ensemble of :math:`2^n` subnetworks sharing weights, and the weight-scaled
  (evaluation-mode) net approximates their average, the Monte Carlo estimate of eq. (7.66)
  (:func:`optreg.nn.dropout.mc_dropout_predict`).

``rnn-dropout`` (figures 7.11, 7.12; exercise 7-4): a GRU (64 units) on MNIST-1D read as 20 frames of 2
samples, under each ``dropout_scheme`` of :mod:`optreg.nn.models` at the same rate: none, non-recurrent
only (Zaremba et al. 2014, figure 7.11), a fresh mask per step on :math:`h_{t-1}` entering the recurrent
weights, a fresh mask per step on the state carried on (the chapter's "dropping the hidden state at every
time step"), and variational (Gal & Ghahramani 2016, figure 7.12: one mask per sequence on the inputs, the
outputs and the recurrent state; the other schemes keep every input). Exercise 7-4
answered with numbers: on the network trained without dropout, each scheme's masks are applied and the
influence of the input at step t on the decision, :math:`\lVert \partial\, \mathrm{logit}_y / \partial
x_t \rVert`, and the drift of the masked hidden states from the mean network's are measured over t.

Each returns a table of the per-setting numbers and the chapter's claims it tests (``Result.claims``: claim,
measured, verdict). Values are means over seeds, ``_sd`` the standard deviation over seeds (population).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optreg.data.datasets import Split, Splits
from optreg.experiments.base import Comparison, Context, Result, RunHistory, claim, curves, exceeds, mean_std, register
from optreg.nn import build
from optreg.nn.dropout import Dropout, mc_dropout_predict
from optreg.report import plots

__all__ = [
    "CONNECT_RATES",
    "INPUT_DROPPED",
    "INPUT_RATES",
    "RATES",
    "RNN_SCHEMES",
    "as_frames",
    "input_influence",
    "masked_drift",
    "rnn_dropout",
    "run_dropout",
    "run_rnn_dropout",
    "scores",
]

# ------------------------------------------------------------------------------------------------ shared


@torch.no_grad()
def scores(model: nn.Module, split: Split) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``model`` in evaluation mode on a split (its mode restored)."""
    was = model.training
    model.eval()
    try:
        logits = model(split.x)
    finally:
        model.train(was)
    return float(F.cross_entropy(logits, split.y)), float((logits.argmax(-1) == split.y).double().mean())


def _per_seed(runs: Sequence[RunHistory], data: Mapping[int, Splits]) -> list[dict[str, Any]]:
    """The clean train / validation / test scores and the gaps of each finished run (one dict per seed)."""
    per_seed = []
    for h in runs:
        if h.diverged or h.model is None:
            continue
        d = data[h.seed]
        train_loss, train_acc = scores(h.model, d.train)
        val_loss, val_acc = scores(h.model, d.val)
        per_seed.append({
            "train_accuracy": train_acc, "val_accuracy": val_acc, "test_accuracy": h.test_accuracy,
            "gap": train_acc - val_acc, "train_loss": train_loss, "val_loss": val_loss,
            "loss_gap": val_loss - train_loss,
        })  # fmt: skip
    return per_seed


def _summaries(per_seed: Sequence[Mapping[str, Any]], runs: Sequence[RunHistory]) -> dict[str, Any]:
    """Mean and sd over seeds of :func:`_per_seed`'s scores; how many of ``runs`` finished and diverged."""
    out: dict[str, Any] = {"runs": len(per_seed), "diverged": len(runs) - len(per_seed)}
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "gap", "train_loss", "val_loss", "loss_gap"):
        out[key], out[f"{key}_sd"] = mean_std(r[key] for r in per_seed)
    return out


def _notes_table(rows: list[dict[str, Any]]) -> str:
    from optreg.experiments import format_table

    return format_table(rows)


def _fmt(row: Mapping[str, Any], key: str) -> str:
    value, sd = row.get(key), row.get(f"{key}_sd")
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" (sd {sd:.3f})" if sd else "")


# ---------------------------------------------------------------------------------------- dropout (MLP)

#: Drop probabilities of the hidden units in the sweep (p = 0: no dropout).
RATES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
#: DropConnect's drop probabilities of the hidden layers' weights.
CONNECT_RATES = (0.2, 0.5)
#: Input dropout rates, each with hidden dropout 0.5 (section 7.7.4: keep the input's rate small).
INPUT_RATES = (0.1, 0.5)
MLP = {"kind": "mlp", "hidden": [256, 256], "activation": "relu"}
MLP_LR, MLP_BATCH = 1e-3, 64


def _mlp_settings(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    rates, connect, inputs = ((0.0, 0.5), (0.5,), (0.1,)) if quick else (RATES, CONNECT_RATES, INPUT_RATES)
    out = [(f"dropout {p:g}", {"dropout": p}) for p in rates]
    out += [(f"dropconnect {p:g}", {"drop_connect": p}) for p in connect]
    out += [(f"input {p:g} + dropout 0.5", {"dropout": 0.5, "input_dropout": p}) for p in inputs]
    return out


@torch.no_grad()
def expectation_check(model: nn.Sequential, x: Tensor, samples: int) -> dict[str, float]:
    """Inverted dropout's test-time rule, measured: the pre-activation ``z = W d(h) + b`` of the layer after
    the model's first hidden dropout layer, averaged over ``samples`` training-mode masks, against its
    evaluation-mode value (eq. (7.64) with inverted scaling: ``E[d(h)] = h``, so ``E[z] = z_eval``).

    Returns the fraction of entries whose Monte Carlo mean lies within 3 standard errors of the evaluation
    value (0.997 for a correct rule, by the central limit theorem), the ratio of the norms of the two (1 when
    the scaling is right; ``1 - p`` for masks without the ``1 / (1 - p)``) and the same ratio for unscaled
    masks, computed from the same draws."""
    names = list(model._modules)
    k = next(i for i, n in enumerate(names) if n.startswith("drop") and isinstance(model[i], nn.Dropout))
    below, drop, after = model[:k], model[k], model[k + 1]
    h = below.eval()(x)
    z_eval = after(h)
    total = torch.zeros_like(z_eval)
    square = torch.zeros_like(z_eval)
    for _ in range(samples):
        z = after(F.dropout(h, drop.p, True))
        total += z
        square += z * z
    mean = total / samples
    se = ((square / samples - mean**2).clamp_min(0) / samples).sqrt()
    within = ((mean - z_eval).abs() <= 3 * se + 1e-6).double().mean()
    bias = after.bias if after.bias is not None else torch.zeros(z_eval.shape[-1])
    ratio = (mean - bias).norm() / (z_eval - bias).norm()
    return {"within_3se": float(within), "norm_ratio": float(ratio), "unscaled_ratio": float(ratio * (1 - drop.p)),
            "p": drop.p}  # fmt: skip


@torch.no_grad()
def ensemble_check(model: nn.Module, split: Split, counts: Sequence[int], seed: int) -> list[dict[str, float]]:
    """The weight-scaled net against the Monte Carlo average of ``M`` dropout subnetworks (eq. 7.66,
    :func:`mc_dropout_predict`), for each ``M`` of ``counts``: the mean total-variation distance between
    their predicted distributions, the fraction of examples where their classes agree, and both accuracies."""
    model.eval()
    logits = model(split.x)
    p_eval = logits.softmax(-1)
    acc_eval = float((logits.argmax(-1) == split.y).double().mean())
    rows = []
    for m in counts:
        mean, _ = mc_dropout_predict(model, split.x, samples=m, generator=torch.Generator().manual_seed(seed))
        rows.append({
            "samples": m,
            "tv_distance": float(0.5 * (mean - p_eval).abs().sum(-1).mean()),
            "agreement": float((mean.argmax(-1) == p_eval.argmax(-1)).double().mean()),
            "mc_accuracy": float((mean.argmax(-1) == split.y).double().mean()),
            "eval_accuracy": acc_eval,
        })  # fmt: skip
    return rows


def mask_diversity(p: float, units: int, pairs: int, generator: torch.Generator) -> float:
    """The mean Hamming distance between two masks of ``units`` units drawn by :class:`Dropout` (p), over
    ``pairs`` pairs: how different two sampled subnetworks are (``2 p (1 - p) units`` in expectation)."""
    drop = Dropout(p).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        a = drop(torch.ones(pairs, units)) > 0
        b = drop(torch.ones(pairs, units)) > 0
    return float((a != b).double().sum(-1).mean())


def _draw_masks(model: nn.Sequential, shown: int, seed: int) -> tuple[list[int], list[Tensor | None]]:
    """The layer widths and one mask per layer (None: that layer has no dropout) that the model's own
    dropout layers draw for one example in training mode (on a vector of ones); the output layer has none."""
    widths: list[int] = []
    for module in model:
        if isinstance(module, nn.Linear):
            if not widths:
                widths.append(module.in_features)
            widths.append(module.out_features)
    masks: list[Tensor | None] = [None] * len(widths)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = 0
        for name, module in model.named_children():
            if isinstance(module, nn.Linear) and name != "out":
                layer += 1
            if isinstance(module, nn.Dropout):
                masks[0 if name == "input_drop" else layer] = module.train()(torch.ones(1, widths[layer]))[0] > 0
    return widths, [None if m is None else m[:shown] for m in masks]


def thinned_network_figure(widths: Sequence[int], masks: Sequence[Tensor | None], shown: int) -> Any:
    """Figure 7.10: the network (the first ``shown`` units of each layer) and the same network thinned by
    the masks (crossed units dropped, with all their connections)."""
    fig, axes = plots.new_figure(2, title="Figure 7.10: dropout thins the network (a mask the trained net drew)",
                                 panel_size=(5.2, 4.4))  # fmt: skip
    sizes = [min(shown, w) for w in widths]
    for ax, thinned in zip(axes, (False, True)):
        pos = [[(i, (s - 1) / 2 - j) for j in range(s)] for i, s in enumerate(sizes)]
        alive = [
            [True] * s if not thinned or masks[i] is None else [bool(v) for v in masks[i]][:s]
            for i, s in enumerate(sizes)
        ]
        for i in range(len(sizes) - 1):
            for j, (x0, y0) in enumerate(pos[i]):
                for k, (x1, y1) in enumerate(pos[i + 1]):
                    if alive[i][j] and alive[i + 1][k]:
                        ax.plot([x0, x1], [y0, y1], color="0.55", linewidth=0.6, zorder=1)
        for i, layer in enumerate(pos):
            for j, (x, y) in enumerate(layer):
                on = alive[i][j]
                ax.scatter([x], [y], s=170, zorder=2, color="white" if on else "0.85",
                           edgecolors="black" if on else "0.6", linewidths=1.2)  # fmt: skip
                if not on:
                    ax.plot([x - 0.12, x + 0.12], [y - 0.25, y + 0.25], color="tab:red", zorder=3)
                    ax.plot([x - 0.12, x + 0.12], [y + 0.25, y - 0.25], color="tab:red", zorder=3)
        names = ["input"] + [f"hidden {i}" for i in range(1, len(sizes) - 1)] + ["output"]
        ax.set_xticks(range(len(sizes)), [f"{n}\n({min(shown, w)} of {w})" for n, w in zip(names, widths)])
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.set_title("after dropout (one mask)" if thinned else "standard network", fontsize=11)
    return fig


@register(
    "dropout",
    title="Dropout: rate sweep, DropConnect, test-time scaling and the ensemble view",
    figure="7.10",
    help="MLP on MNIST-1D: train / validation gap against the drop rate, DropConnect, input dropout; "
    "inverted scaling and weight scaling vs the Monte Carlo average (eqs. 7.64-7.66)",
)
def run_dropout(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=2)
    epochs = ctx.epoch_count(default=40, quick=2)
    dataset = ctx.dataset if ctx.dataset is not None else "mnist1d"
    data = {seed: ctx.load_data(seed, dataset=dataset) for seed in seeds}
    settings = _mlp_settings(ctx.quick)
    runs: dict[str, list[RunHistory]] = {label: [] for label, _ in settings}
    ctx.expect_runs(len(seeds) * len(settings))
    for seed in seeds:
        for label, options in settings:
            runs[label].append(ctx.train(
                label, model_spec={**MLP, **options}, optimizer="adam", hparams={"lr": MLP_LR}, seed=seed,
                batch_size=MLP_BATCH, epochs=epochs, data=data[seed],
            ))  # fmt: skip
    rows = []
    scored = {label: _per_seed(runs[label], data) for label, _ in settings}
    for label, options in settings:
        kind = "dropconnect" if "drop_connect" in options else "input" if "input_dropout" in options else "dropout"
        rate = options.get("drop_connect", options.get("input_dropout", options.get("dropout", 0.0)))
        rows.append({"setting": label, "kind": kind, "p": rate, **_summaries(scored[label], runs[label])})
    by = {r["setting"]: r for r in rows}
    sweep = [r for r in rows if r["kind"] == "dropout" and r["val_accuracy"] is not None]
    base = by["dropout 0"]
    best = max(sweep, key=lambda r: r["val_accuracy"])
    half = by["dropout 0.5"]
    reference = next(h for h in runs["dropout 0.5"] if h.model is not None and not h.diverged)
    ref_data = data[reference.seed]
    n_hidden = sum(MLP["hidden"])
    samples = 200 if ctx.quick else 4000
    expect = expectation_check(reference.model, ref_data.val.x, samples)  # type: ignore[arg-type]
    counts = (1, 10, 50) if ctx.quick else (1, 3, 10, 30, 100, 300, 1000)
    ensemble = ensemble_check(reference.model, ref_data.test, counts, seed=reference.seed)  # type: ignore[arg-type]
    final = ensemble[-1]
    generator = torch.Generator().manual_seed(0)
    diversity = {p: mask_diversity(p, MLP["hidden"][0], 500 if ctx.quick else 5000, generator)
                 for p in RATES if p > 0}  # fmt: skip
    connect = [r for r in rows if r["kind"] == "dropconnect" and r["gap"] is not None]
    inputs = sorted((r for r in rows if r["kind"] == "input" and r["val_accuracy"] is not None), key=lambda r: r["p"])

    def gaps(rs: Sequence[dict[str, Any]], key: str = "gap") -> str:
        return ", ".join(f"{r['setting']}: {r[key]:.3f}" for r in rs if r[key] is not None)

    def seeds_of(r: Mapping[str, Any], key: str) -> list[float | None]:
        return [s[key] for s in scored[r["setting"]]]

    def below_base(rs: Sequence[dict[str, Any]], key: str = "gap") -> tuple[bool, str]:
        """Every row's ``key`` below p = 0's beyond seed noise, and each comparison's text."""
        cs = {r["setting"]: exceeds(seeds_of(base, key), seeds_of(r, key)) for r in rs if r is not base}
        return all(c.holds for c in cs.values()), "; p = 0 minus " + ", ".join(f"{k}: {c.text}" for k, c in cs.items())

    narrow, narrow_text = below_base(sweep)
    narrow_loss, narrow_loss_text = below_base(sweep, "loss_gap")
    chosen = exceeds(seeds_of(best, "test_accuracy"), seeds_of(base, "test_accuracy"))
    halves = {r["setting"]: exceeds(seeds_of(half, "val_accuracy"), seeds_of(r, "val_accuracy"))
              for r in sweep if r is not half}  # fmt: skip
    small_input = (exceeds(seeds_of(inputs[0], "val_accuracy"), seeds_of(inputs[-1], "val_accuracy"))
                   if len(inputs) > 1 else None)  # fmt: skip
    connect_narrow, connect_text = below_base(connect)
    claims = [
        claim("dropout narrows the gap between training and validation (7.7.4): accuracy gap below p = 0's at every "
              "rate", "train - validation accuracy gap " + gaps(sweep) + narrow_text, narrow),
        claim("... and the loss gap (validation - training cross-entropy) likewise",
              "loss gap " + gaps(sweep, "loss_gap") + narrow_loss_text, narrow_loss),
        claim("dropout improves generalization: the rate chosen on the validation set beats no dropout",
              f"best by validation p = {best['p']:g}: val {_fmt(best, 'val_accuracy')}, test "
              f"{_fmt(best, 'test_accuracy')}; p = 0: val {_fmt(base, 'val_accuracy')}, test "
              f"{_fmt(base, 'test_accuracy')}; test difference {chosen.text}", best is not base and chosen.holds),
        claim("p = 0.5 works best for hidden units (7.7.4): the best rate by validation accuracy is 0.5",
              f"validation accuracy at 0.5: {_fmt(half, 'val_accuracy')}; best: p = {best['p']:g}; 0.5 minus "
              + ", ".join(f"{k}: {c.text}" for k, c in halves.items()),
              best is half and all(c.holds for c in halves.values())),
        claim("at p = 0.5 the sampled subnetworks are the most diverse (7.7.4)",
              "mean Hamming distance between two masks of 256 units: "
              + ", ".join(f"p={p:g}: {d:.1f}" for p, d in diversity.items()),
              max(diversity, key=lambda p: diversity[p]) == 0.5),
        claim("the input's drop rate should be small (keep probability near 1) (7.7.4)",
              "validation accuracy " + ", ".join(f"{r['setting']}: {_fmt(r, 'val_accuracy')}" for r in inputs)
              + (f"; smallest minus largest {small_input.text}" if small_input else ""),
              small_input is not None and small_input.holds),
        claim("dropping connections instead of units (DropConnect, Wan et al. 2013) also narrows the gap",
              "accuracy gap " + gaps([base, *connect]) + connect_text, bool(connect) and connect_narrow),
        claim("inverted dropout needs no scaling at test time (eq. 7.64, file 004): the evaluation-mode layer equals "
              "the expectation of the training-mode one",
              f"next layer's pre-activation, mean of {samples} masks vs evaluation mode (p = {expect['p']:g}, "
              f"validation set): {expect['within_3se']:.4f} of the entries within 3 standard errors (0.997 "
              f"expected); norm ratio {expect['norm_ratio']:.4f} (masks without 1/(1-p): "
              f"{expect['unscaled_ratio']:.4f})",
              expect["within_3se"] >= 0.99 and abs(expect["norm_ratio"] - 1) < 0.02),
        claim(f"dropout trains an ensemble of 2^n subnetworks (n = {n_hidden}: 2^{n_hidden}) and the weight-scaled "
              "net approximates their average (eq. 7.66): classes agree on >= 95% of test examples, accuracy within "
              "1 point", f"M = {final['samples']} masks: agreement {final['agreement']:.3f}, mean total-variation "
              f"distance {final['tv_distance']:.4f}, accuracy MC {final['mc_accuracy']:.3f} vs weight-scaled "
              f"{final['eval_accuracy']:.3f}",
              final["agreement"] >= 0.95 and abs(final["mc_accuracy"] - final["eval_accuracy"]) <= 0.01),
    ]  # fmt: skip

    sweep_fig = plots.curves_figure(
        [
            plots.Panel({k: [[r[k] for r in sweep]] for k in ("train_accuracy", "val_accuracy", "test_accuracy")},
                        x=[r["p"] for r in sweep], title="accuracy (evaluation mode) against p", xlabel="drop rate p",
                        ylabel="accuracy"),
            plots.Panel({"accuracy gap (train - val)": [[r["gap"] for r in sweep]],
                         "loss gap (val - train)": [[r["loss_gap"] for r in sweep]]},
                        x=[r["p"] for r in sweep], title="generalization gap against p", xlabel="drop rate p"),
            plots.Panel(curves({k: runs[k] for k in runs if k.startswith(("dropout", "dropconnect"))}, "val_loss",
                               "epochs"), x=list(range(1, epochs + 1)), title="validation loss per epoch",
                        xlabel="epoch", ylabel="cross-entropy", integer_x=True),
        ],
        title=f"Dropout on MLP {MLP['hidden']} ({data[seeds[0]].name}), {epochs} epochs, {len(seeds)} seed(s)",
    )  # fmt: skip
    ensemble_fig = plots.curves_figure(
        [
            plots.Panel({"MC average of M subnetworks": [[r["mc_accuracy"] for r in ensemble]],
                         "weight-scaled net": [[r["eval_accuracy"] for r in ensemble]]},
                        x=[r["samples"] for r in ensemble], log_x=True, title="test accuracy",
                        xlabel="masks M", ylabel="accuracy"),
            plots.Panel({"total-variation distance": [[r["tv_distance"] for r in ensemble]],
                         "1 - class agreement": [[1 - r["agreement"] for r in ensemble]]},
                        x=[r["samples"] for r in ensemble], log_x=True, log_y=True,
                        title="MC average vs weight-scaled net", xlabel="masks M"),
        ],
        title="The ensemble view (eqs. 7.65-7.66): the p = 0.5 net's subnetworks averaged",
    )  # fmt: skip
    shown = 6
    with_input = [h for h in runs.get("input 0.1 + dropout 0.5", []) if h.model is not None]
    widths, masks = _draw_masks((with_input[0] if with_input else reference).model, shown, seed=0)  # type: ignore[arg-type]
    mask_fig = thinned_network_figure(widths, masks, shown)
    columns = ("setting", "train_accuracy", "val_accuracy", "val_accuracy_sd", "test_accuracy", "gap", "gap_sd",
               "train_loss", "val_loss", "loss_gap")  # fmt: skip
    notes = "\n\n".join([
        f"Data: {data[seeds[0]].name}; MLP {MLP['hidden']} (ReLU), Adam lr {MLP_LR:g}, batch {MLP_BATCH}, {epochs} "
        f"epochs, the final model; {len(seeds)} seed(s): means, _sd = standard deviation over seeds. Train scores are "
        "the clean (evaluation-mode) scores on the whole training split; the best rate is chosen on validation. "
        "Drop rate p is the probability of dropping (eq. 7.64 writes the keep probability 1 - p).",
        f"Weight scaling vs the Monte Carlo average (p = 0.5 net, seed {reference.seed}, test set):\n\n"
        + _notes_table(ensemble),
        "A claim that does not hold is a finding on this data with these settings (the criterion is in its text).",
    ])  # fmt: skip
    table = [{k: r[k] for k in columns} for r in rows]
    return Result(table=table, claims=claims, notes=notes,
                  figures={"sweep": sweep_fig, "ensemble": ensemble_fig, "thinned": mask_fig})  # fmt: skip


# ------------------------------------------------------------------------------------------ rnn-dropout

#: The recurrent dropout schemes compared (label -> models dropout_scheme; "none": no dropout).
RNN_SCHEMES = {
    "none": "between",
    "non-recurrent (fig. 7.11)": "non_recurrent",
    "per-step on h entering W_hh": "recurrent",
    "per-step on the state (naive)": "state",
    "variational (fig. 7.12)": "variational",
}
#: The schemes that also drop the raw input, with one mask per sequence (variational: Gal & Ghahramani's masks on
#: the inputs, the outputs and the recurrent state, figure 7.12); the others keep every input.
INPUT_DROPPED = ("variational",)
FRAME = 2  # MNIST-1D's 40 samples read as 20 frames of 2
GRU = {"kind": "gru", "hidden_size": 64}
RNN_P, RNN_LR, RNN_BATCH = 0.25, 1e-2, 64


def rnn_dropout(scheme: str, p: float) -> dict[str, Any]:
    """The dropout entries of the GRU's model spec for ``scheme`` (a ``dropout_scheme``) at rate ``p``: ``p`` on
    the scheme's connections, and on the input too (``input_dropout``) for the schemes of
    :data:`INPUT_DROPPED`."""
    return {"dropout_scheme": scheme, "dropout": p, "input_dropout": p if scheme in INPUT_DROPPED else 0.0}


def as_frames(data: Splits, frame: int) -> Splits:
    """MNIST-1D signals ``(N, L)`` as sequences of ``L / frame`` frames of ``frame`` samples, ``(N, L/frame,
    frame)``: the same values, in order."""
    length = data.input_shape[-1]

    def cut(split: Split) -> Split:
        return Split(split.x.reshape(len(split.y), length // frame, frame), split.y)

    return data._replace(train=cut(data.train), val=cut(data.val), test=cut(data.test),
                         input_shape=(length // frame, frame))  # fmt: skip


def _with_scheme(model: nn.Module, scheme: str, p: float) -> nn.Module:
    """A classifier with ``dropout_scheme`` ``scheme`` at rate ``p`` (:func:`rnn_dropout`: the input too where
    the scheme drops it) and the weights of ``model`` (same names)."""
    spec = {"kind": "gru", "hidden_size": model.rnn.hidden_size, "in_features": model.in_features,  # type: ignore[union-attr]
            "out_features": model.head.out_features, **rnn_dropout(scheme, p)}  # type: ignore[union-attr]
    other = build(spec)
    other.load_state_dict(model.state_dict())
    return other


def input_influence(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> np.ndarray:
    """``E || d logit_y / d x_t ||`` for each step t (mean over the examples and ``draws`` training-mode
    mask draws; evaluation mode when the model has no dropout): how much the input at step t still moves
    the decision at the end of the sequence."""
    model.train()
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(draws):
        xi = x.clone().requires_grad_(True)
        logit = model(xi).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(logit, xi)
        total += grad.norm(dim=2).mean(0).double()
    model.eval()
    return (total / draws).numpy()


@torch.no_grad()
def masked_drift(model: nn.Module, x: Tensor, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """The relative distance of the masked hidden states from the mean network's at each step,
    ``E ||h_t^mask - h_t|| / ||h_t||`` (masks of the recurrent layer's scheme, no output mask), and the mean
    norm ``||h_t^mask||``; for a scheme without recurrent masks both are the mean network's (0, ``||h_t||``)."""
    rnn = model.rnn  # type: ignore[union-attr]
    was = rnn.training
    rnn.eval()
    clean = rnn(x)[0]
    drift = torch.zeros(x.shape[1], dtype=torch.float64)
    norm = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(draws):
        if hasattr(rnn, "sample_masks"):
            masks = rnn.sample_masks(x.shape[1], x.shape[0], x)._replace(output=None)
            out = rnn(x, masks=masks)[0]
        else:
            out = clean
        drift += ((out - clean).norm(dim=2) / clean.norm(dim=2).clamp_min(1e-12)).mean(0).double()
        norm += out.norm(dim=2).mean(0).double()
    rnn.train(was)
    return (drift / draws).numpy(), (norm / draws).numpy()


def rnn_masks_figure(models: Mapping[str, nn.Module], steps: int, units: int, seed: int) -> Any:
    """Figures 7.11 and 7.12: the masks each scheme draws for one sequence (units x time steps; black =
    dropped), on the input of the recurrent layer (its first ``units`` features), on its output and on the
    recurrent connection."""
    shown = {label: m for label, m in models.items() if hasattr(m.rnn, "sample_masks")}  # type: ignore[union-attr]
    fig, axes = plots.new_figure(3, len(shown), panel_size=(3.8, 1.9),
                                 title="Figures 7.11 / 7.12: the masks of one sequence (black: dropped)")  # fmt: skip
    like = torch.zeros(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for row, (label, model) in enumerate(shown.items()):
            rnn = model.rnn  # type: ignore[union-attr]
            masks = rnn.sample_masks(steps, 1, like)
            panels = (("input", masks.inputs[0], rnn.input_size), ("output", masks.output, rnn.hidden_size),
                      ("recurrent", masks.recurrent[0], rnn.hidden_size))  # fmt: skip
            for col, (what, mask, size) in enumerate(panels):
                ax = axes[3 * row + col]
                width = min(units, size)
                image = np.ones((width, steps)) if mask is None else (
                    mask[:, 0, :width].expand(steps, width).T.numpy() > 0).astype(float)  # fmt: skip
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
                if mask is None:
                    note = " (no mask)"
                else:  # an input of a few features: say how many this draw dropped (none is likely)
                    note = f" ({int((image[:, 0] == 0).sum())} of {width} dropped)" if what == "input" else ""
                ax.set_title(f"{label}: {what}{note}", fontsize=9)
                ax.set_yticks([])
                ax.set_xlabel("time step" if row == len(shown) - 1 else "")
    return fig


@register(
    "rnn-dropout",
    title="Dropout in a recurrent net: non-recurrent, naive per-step, variational",
    figure="7.11, 7.12, ex. 7-4",
    help="GRU on MNIST-1D frames: no dropout / non-recurrent only / per-step masks on the recurrent "
    "connections or the state / variational; why naive recurrent dropout hurts, in numbers",
    options=("seeds", "epochs"),
    why="a GRU on MNIST-1D read as 20 frames of 2 samples",
)
def run_rnn_dropout(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=2)
    epochs = ctx.epoch_count(default=20, quick=1)
    data = {seed: as_frames(ctx.load_data(seed, dataset="mnist1d", val_fraction=0.2), FRAME) for seed in seeds}
    runs: dict[str, list[RunHistory]] = {label: [] for label in RNN_SCHEMES}
    ctx.expect_runs(len(seeds) * len(RNN_SCHEMES))
    for seed in seeds:
        for label, scheme in RNN_SCHEMES.items():
            spec = {**GRU, **rnn_dropout(scheme, 0.0 if label == "none" else RNN_P)}
            runs[label].append(ctx.train(label, model_spec=spec, optimizer="adam", hparams={"lr": RNN_LR}, seed=seed,
                                         batch_size=RNN_BATCH, epochs=epochs, data=data[seed]))  # fmt: skip
    scored = {label: _per_seed(runs[label], data) for label in RNN_SCHEMES}
    rows = [{"scheme": label, **_summaries(scored[label], runs[label])} for label in RNN_SCHEMES]
    by = {r["scheme"]: r for r in rows}

    # exercise 7-4: each scheme's masks on the network trained without dropout
    plain = next(h for h in runs["none"] if h.model is not None and not h.diverged)
    probe = data[plain.seed].val
    n = min(len(probe.y), 64 if ctx.quick else 400)
    x, y = probe.x[:n], probe.y[:n]
    draws = 1 if ctx.quick else 8
    torch.manual_seed(plain.seed)
    masked = {label: _with_scheme(plain.model, scheme, RNN_P if label != "none" else 0.0)  # type: ignore[arg-type]
              for label, scheme in RNN_SCHEMES.items()}  # fmt: skip
    influence = {label: input_influence(m, x, y, draws) for label, m in masked.items()}
    drift = {label: masked_drift(m, x, draws) for label, m in masked.items()}
    steps = x.shape[1]
    q = max(1, steps // 4)

    def memory(label: str) -> float:
        """Influence of the first quarter of the steps relative to the last quarter's."""
        s = influence[label]
        return float(s[:q].mean() / s[-q:].mean())

    mem = {label: memory(label) for label in RNN_SCHEMES}
    for r in rows:
        r["early_late_influence"] = mem[r["scheme"]]
        r["drift_at_T"] = float(drift[r["scheme"]][0][-1])
        r["state_norm_at_T"] = float(drift[r["scheme"]][1][-1])
    none, nonrec, rec = by["none"], by["non-recurrent (fig. 7.11)"], by["per-step on h entering W_hh"]
    state, var = by["per-step on the state (naive)"], by["variational (fig. 7.12)"]
    v = "val_accuracy"
    s_label, v_label = "per-step on the state (naive)", "variational (fig. 7.12)"
    r_label = "per-step on h entering W_hh"

    def acc(r: Mapping[str, Any]) -> str:
        return f"{r['scheme']} {_fmt(r, v)}"

    def beats(a: Mapping[str, Any], b: Mapping[str, Any], key: str = v, margin: float = 0.0) -> Comparison:
        """``a``'s per-seed ``key`` above ``b``'s beyond seed noise (:func:`exceeds`)."""
        return exceeds([s[key] for s in scored[a["scheme"]]], [s[key] for s in scored[b["scheme"]]], margin=margin)

    hurts, nonrec_gap, nonrec_val = beats(none, state), beats(none, nonrec, "gap"), beats(nonrec, none, margin=-0.01)
    var_gap, var_val = beats(none, var, "gap"), beats(var, none, margin=-0.01)
    var_rec, var_state = beats(var, rec), beats(var, state)
    ok = all(r[v] is not None for r in rows)
    claims = [
        claim("dropping the hidden state at every time step hurts the recurrent net (7.7.4.1, ex. 7-4): lower "
              "validation accuracy than no dropout", f"{acc(state)}; {acc(none)}; none minus it {hurts.text}",
              ok and hurts.holds),
        claim("ex. 7-4, why: it erases the memory of early inputs: the influence of the first quarter of the steps "
              "on the decision, relative to the last quarter's, falls by more than 2x under its masks",
              f"influence early / late (the net trained without dropout, {draws} mask draws): "
              + ", ".join(f"{k}: {mem[k]:.3g}" for k in (s_label, v_label, r_label, "none")),
              mem[s_label] < mem["none"] / 2),
        claim("ex. 7-4, why: fresh masks on the recurrent connections compound over time: the masked hidden states "
              "drift further from the mean network's with every step",
              f"relative drift at step 2 (the first with a state to mask) -> {steps}: "
              + ", ".join(f"{k}: {drift[k][0][1]:.3f} -> {drift[k][0][-1]:.3f}" for k in (s_label, r_label, v_label)),
              drift[s_label][0][-1] > drift[s_label][0][1] and drift[r_label][0][-1] > drift[r_label][0][1]),
        claim("dropout on the non-recurrent connections only (Zaremba et al., fig. 7.11) narrows the train - "
              "validation gap", f"accuracy gap {nonrec['gap']:.3f} vs none {none['gap']:.3f}; none minus it "
              f"{nonrec_gap.text}", ok and nonrec_gap.holds),
        claim("... without the harm: validation accuracy not below no dropout's (within 0.01)",
              f"{acc(nonrec)}; {acc(none)}; difference {nonrec_val.text}", ok and nonrec_val.holds),
        claim("variational dropout (one mask for all time steps on the inputs, outputs and recurrent connections; Gal "
              "& Ghahramani, fig. 7.12) narrows the gap and does not hurt: gap below none's, validation accuracy "
              "within 0.01",
              f"gap {var['gap']:.3f} vs {none['gap']:.3f} (none minus it {var_gap.text}); {acc(var)}; {acc(none)} "
              f"(difference {var_val.text})", ok and var_gap.holds and var_val.holds),
        claim("on the recurrent connections, the same mask at every step (variational) beats a fresh one per step "
              "(variational also drops its inputs, the per-step schemes do not)",
              f"{acc(var)}; {acc(rec)}; {acc(state)}; variational minus per-step on h {var_rec.text}, minus per-step "
              f"on the state {var_state.text}", ok and var_rec.holds and var_state.holds),
    ]  # fmt: skip

    t_axis = list(range(1, steps + 1))
    fig = plots.curves_figure(
        [
            plots.Panel(curves(runs, "val_accuracy", "epochs"), x=list(range(1, epochs + 1)),
                        title="validation accuracy", xlabel="epoch", ylabel="accuracy", integer_x=True),
            plots.Panel({k: [list(s)] for k, s in influence.items()}, x=t_axis, log_y=True,
                        title="influence of x_t on the decision (no-dropout net, each scheme's masks)",
                        xlabel="time step t", ylabel="E ||d logit_y / d x_t||"),
            plots.Panel({k: [list(d[0])] for k, d in drift.items() if k != "none"}, x=t_axis,
                        title="drift of the masked states from the mean net", xlabel="time step t",
                        ylabel="E ||h_t^mask - h_t|| / ||h_t||"),
            plots.Panel({k: [list(d[1])] for k, d in drift.items()}, x=t_axis, title="hidden-state norm",
                        xlabel="time step t", ylabel="E ||h_t||"),
        ],
        ncols=2,
        title=f"GRU({GRU['hidden_size']}) on MNIST-1D ({steps} frames of {FRAME}), p = {RNN_P:g}, {len(seeds)} seed(s)",
    )  # fmt: skip
    masks_fig = rnn_masks_figure(masked, steps, 16, seed=0)
    columns = ("scheme", "train_accuracy", "val_accuracy", "val_accuracy_sd", "test_accuracy", "gap", "gap_sd",
               "loss_gap", "early_late_influence", "drift_at_T", "state_norm_at_T")  # fmt: skip
    notes = "\n\n".join([
        f"GRU with {GRU['hidden_size']} units on MNIST-1D read as {steps} frames of {FRAME} samples (validation 20% "
        f"of the training part), drop rate p = {RNN_P:g} in every scheme, Adam lr {RNN_LR:g}, batch {RNN_BATCH}, "
        f"{epochs} epochs, the final model; {len(seeds)} seed(s): means, _sd = standard deviation over seeds. "
        "Schemes (optreg.nn.models dropout_scheme): non-recurrent = a fresh mask per step on the layer's outputs "
        "(the raw input is not dropped); per-step on h = that plus a fresh mask per step on h_{t-1} entering W_hh "
        "(the state carried on by z * h_{t-1} is kept); per-step on the state = that mask on the state itself, "
        "carried on; variational = one mask per sequence on the inputs (input_dropout p: each of a frame's "
        f"{FRAME} features, dropped in every frame of the sequence), on the outputs and on h_{{t-1}} entering W_hh "
        "(Gal & Ghahramani's inputs, outputs and recurrent state). Only variational drops the raw input, so its "
        "comparisons with the other schemes include that input dropout too.",
        "Table: one row per scheme (train: clean training accuracy; early_late_influence, drift_at_T and "
        "state_norm_at_T (the mean ||h_T|| of the masked states): exercise 7-4's measures on the net trained "
        "without dropout, under that scheme's masks).",
        "A claim that does not hold is a finding on this data with these settings (the criterion is in its text).",
    ])  # fmt: skip
    table = [{k: r[k] for k in columns} for r in rows]
    return Result(table=table, claims=claims, figures={"rnn": fig, "masks": masks_fig}, notes=notes)
