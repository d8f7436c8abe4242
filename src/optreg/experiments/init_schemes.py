r"""Parameter initialization (section 7.3): the signal through a deep network at initialization, and training.

Section 7.3's argument: a unit :math:`z^l = \sum_i w_i^l a_i^{(l-1)}` has :math:`\mathrm{var}[z^l] =
n^{(l-1)} \mathrm{var}[w^l] \mathrm{var}[a^{(l-1)}]` (eq. 7.31), so the signal's variance is multiplied by
:math:`n^{(l-1)} \mathrm{var}[w]` at every layer. Weights that are too small make it vanish after a few
layers (and keep a sigmoid-type unit in its linear region); weights that are too large saturate tanh units
(gradient :math:`\approx 0`) or blow ReLU signals up. :math:`\mathrm{var}[w] = 1/n^{(l-1)}` (7.32, LeCun),
:math:`2/(n^{(l-1)} + n^{(l)})` (7.34, Xavier) and :math:`2/n^{(l-1)}` for ReLU (He et al. 2015) keep it
steady. All-zero weights fail differently: every hidden unit computes the same thing and receives the same
gradient, so they stay identical (the *symmetric weights* problem) — here, with zero biases too, the hidden
activations and their gradients are exactly 0 and only the output bias learns: accuracy stays near chance.

The experiment builds a deep MLP (``DEPTH`` hidden layers of ``WIDTH`` units) with tanh and with ReLU units,
initializes it with each scheme of :data:`SCHEMES` (biases 0), and

1. measures the activations of every hidden layer on standardized training inputs at initialization (their
   standard deviation per layer, and their distribution for the tanh network: Glorot & Bengio 2010, fig. 3);
2. trains it (SGD with momentum, the same settings for every scheme) and reports the curves, the accuracy
   and the number of distinct units of the last hidden layer after training.

The inputs are standardized (eqs. 7.38-7.40, fitted on the training split) so that they have the zero mean
and unit variance the variance argument assumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from optreg._checks import check_choice
from optreg.data import StandardScaler
from optreg.errors import OptregValueError
from optreg.experiments.base import Context, Result, RunHistory, claim, exceeds, mean_std, register
from optreg.experiments.lr_decay import training_panels
from optreg.experiments.preprocessing import transform_splits
from optreg.report import plots
from optreg.train import build_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEPTH",
    "NETWORKS",
    "SCHEMES",
    "WIDTH",
    "distinct_units",
    "hidden_activations",
    "init_claims",
    "init_config",
    "model_spec",
    "run",
]

DEPTH, WIDTH = 6, 64
NETWORKS = ("tanh", "relu")
#: The schemes compared (section 7.3 and file 002), as ``{"scheme": ..., **options}`` for
#: :func:`optreg.init.apply`; ``activation`` is filled in per network for the gain-aware ones.
SCHEMES: dict[str, dict[str, Any]] = {
    "zeros": {"scheme": "zeros"},
    "gaussian": {"scheme": "gaussian", "std": 0.1},  # the chapter's N(0, 0.01): variance 0.01
    "uniform": {"scheme": "uniform", "r": 0.1},
    "lecun": {"scheme": "lecun_normal"},
    "xavier": {"scheme": "xavier_uniform"},
    "he": {"scheme": "he_normal"},
    "orthogonal": {"scheme": "orthogonal"},
    "sparse": {"scheme": "sparse", "k": 15},
}
LR, MOMENTUM, BATCH_SIZE = 0.02, 0.9, 64


def model_spec(activation: str) -> dict[str, Any]:
    """The deep MLP: ``DEPTH`` hidden layers of ``WIDTH`` units with ``activation``."""
    check_choice("init", "activation", activation, NETWORKS)
    return {"kind": "mlp", "hidden": [WIDTH] * DEPTH, "activation": activation}


def init_config(name: str, activation: str) -> dict[str, Any]:
    """The ``init`` entry of :meth:`Context.train` for the scheme ``name`` on a network of ``activation``.

    Xavier and orthogonal get the network's gain (tanh 1, ReLU :math:`\\sqrt 2`); He always uses its ReLU
    variance :math:`2/n^{(l-1)}` (on the tanh network too, where it is twice LeCun's); the others have no gain.
    """
    check_choice("init", "scheme", name, tuple(SCHEMES))
    check_choice("init", "activation", activation, NETWORKS)
    config = dict(SCHEMES[name])
    if config["scheme"] in ("xavier_uniform", "orthogonal"):
        config["activation"] = activation
    elif config["scheme"] == "he_normal":
        config["activation"] = "relu"
    return config


@torch.no_grad()
def hidden_activations(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every hidden activation layer (``act1``, ``act2``, ... of :func:`optreg.nn.build`'s MLP)
    on the inputs ``x``, in order, each of shape ``(N, units)``."""
    layers = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1].startswith("act")]
    if not layers:
        raise OptregValueError("init: the model has no activation layers named act1, act2, ...")
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach())) for m in layers]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return outputs


def distinct_units(activations: torch.Tensor) -> int:
    """How many different units a layer has: the number of distinct columns of its ``(N, units)``
    activations (units computing exactly the same function of the inputs count once)."""
    if activations.ndim != 2:
        raise OptregValueError(f"init: activations must have shape (N, units), got {tuple(activations.shape)}")
    return int(torch.unique(activations.T, dim=0).shape[0])


def _histogram_figure(values: dict[str, list[np.ndarray]], title: str) -> Figure:
    """One panel per scheme: the distribution of each hidden layer's activations (Glorot & Bengio 2010,
    fig. 3), layer 1 light to layer ``DEPTH`` dark. ``plots`` has no histogram builder; this is one."""
    ncols = 4
    fig, axes = plots.new_figure(ncols, -(-len(values) // ncols), title=title, panel_size=(3.6, 2.8))
    shades = [str(g) for g in np.linspace(0.75, 0.0, DEPTH)]
    bins = np.linspace(-1.0, 1.0, 41)
    for ax, (name, layers) in zip(axes, values.items()):
        for i, a in enumerate(layers):
            density, _ = np.histogram(np.clip(a, -1.0, 1.0), bins=bins, density=True)
            ax.stairs(density, bins, color=shades[i], label=f"layer {i + 1}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("activation")
        ax.set_ylabel("density")
    axes[0].legend(fontsize=6, frameon=False)
    for ax in axes[len(values) :]:
        ax.set_visible(False)
    return fig


@register(
    "init",
    title="Parameter initialization in a deep MLP",
    figure="section 7.3",
    help="zeros, Gaussian, uniform, LeCun, Xavier, He, orthogonal, sparse on deep tanh / ReLU MLPs",
)
def run(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=1)
    epochs = ctx.epoch_count(default=10, quick=2)
    table: list[dict[str, Any]] = []
    stds: dict[str, dict[str, list[list[float]]]] = {a: {s: [] for s in SCHEMES} for a in NETWORKS}
    hists: dict[str, list[np.ndarray]] = {}
    runs: dict[str, dict[str, list[RunHistory]]] = {a: {s: [] for s in SCHEMES} for a in NETWORKS}
    units: dict[tuple[str, str], list[int]] = {}
    ctx.expect_runs(len(seeds) * len(NETWORKS) * len(SCHEMES))
    for seed in seeds:
        data = transform_splits(ctx.load_data(seed), StandardScaler())
        probe = data.train.x[:512]
        check = data.val.x if len(data.val.y) else data.test.x
        for activation in NETWORKS:
            spec = model_spec(activation)
            for name in SCHEMES:
                init = init_config(name, activation)
                acts = hidden_activations(build_model(spec, data, seed=seed, init=init), probe)
                stds[activation][name].append([float(a.std()) for a in acts])
                if activation == "tanh" and seed == seeds[0]:
                    hists[name] = [a.flatten().numpy() for a in acts]
                history = ctx.train(
                    f"{activation}-{name}",
                    model_spec=spec,
                    optimizer="momentum",
                    hparams={"lr": LR, "momentum": MOMENTUM},
                    seed=seed,
                    batch_size=BATCH_SIZE,
                    epochs=epochs,
                    init=init,
                    data=data,
                    config={"network": activation, "scheme": name},
                )
                runs[activation][name].append(history)
                last = hidden_activations(history.model, check)[-1]
                units.setdefault((activation, name), []).append(distinct_units(last))

    for activation in NETWORKS:
        for name in SCHEMES:
            done = [h for h in runs[activation][name] if not h.diverged]
            std = np.mean(stds[activation][name], axis=0)
            table.append(
                {
                    "network": activation,
                    "scheme": name,
                    "init": SCHEMES[name]["scheme"],
                    "act_std_layer1": float(std[0]),
                    "act_std_last": float(std[-1]),
                    "distinct_units_last": min(units[(activation, name)]),
                    "final_train_loss": mean_std(h.final("train_loss") for h in done)[0],
                    "val_accuracy": mean_std(h.final("val_accuracy") for h in done)[0],
                    "test_accuracy": mean_std(h.test_accuracy for h in done)[0],
                    "diverged": len(runs[activation][name]) - len(done),
                }
            )

    layers = list(range(1, DEPTH + 1))
    # a scheme whose std is 0 (zeros) has no place on the log axis: plots names it on the panel instead of
    # drawing it at 1e-300, which would squash every other scheme into one line
    signal = plots.curves_figure(
        [
            plots.Panel(
                stds[a],
                x=layers,
                title=f"{a} network",
                xlabel="hidden layer",
                ylabel="std of the activations (log scale)",
                log_y=True,
                integer_x=True,
            )
            for a in NETWORKS
        ],
        title=f"Section 7.3: the signal through {DEPTH} hidden layers of {WIDTH} units at initialization",
        legend="below",
    )
    histograms = _histogram_figure(hists, "Activations of the tanh network at initialization, per layer")
    steps_per_epoch = -(-len(data.train.y) // BATCH_SIZE)
    panels = [
        panel
        for a in NETWORKS
        for panel in training_panels(runs[a], epochs, smooth=max(1, steps_per_epoch // 2), prefix=f"{a}: ")
    ]
    training = plots.curves_figure(panels, title="Training from each initialization", ncols=2, legend="below")
    zeros = [r for r in table if r["scheme"] == "zeros"]
    notes = (
        f"MLP with {DEPTH} hidden layers of {WIDTH} units, standardized inputs, biases 0, SGD with momentum "
        f"{MOMENTUM} at lr {LR}, batch {BATCH_SIZE}, {epochs} epochs, {len(seeds)} seed(s). "
        "act_std_*: standard deviation of the hidden activations at initialization (layer 1 and the last "
        "hidden layer); distinct_units_last: distinct units of the last hidden layer after training "
        f"(out of {WIDTH}; ReLU units that are 0 on every input count as one). Zero weights: "
        + "; ".join(
            f"the {r['network']} network keeps {r['distinct_units_last']} distinct unit(s), validation accuracy "
            + ("-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.3f}")
            for r in zeros
        )
        + " (the symmetric weights problem of section 7.3). Diverged runs are left out of the training curves."
    )
    val = {(a, s): [h.final("val_accuracy") for h in runs[a][s] if not h.diverged] for a in NETWORKS for s in SCHEMES}
    return Result(
        table=table,
        claims=init_claims(stds, units, val),
        figures={"activations": signal, "histograms": histograms, "training": training},
        notes=notes,
    )


#: The variance-preserving scheme of each network (section 7.3: Xavier for tanh, He for ReLU).
PRESERVING = {"tanh": "xavier", "relu": "he"}


def init_claims(
    stds: dict[str, dict[str, list[list[float]]]],
    units: dict[tuple[str, str], list[int]],
    val: dict[tuple[str, str], list[float | None]],
) -> list[dict[str, Any]]:
    """Section 7.3's claims (:func:`~optreg.experiments.base.claim` rows) from the activations' standard
    deviation per layer at initialization (``stds[network][scheme]``: one list of ``DEPTH`` values per seed),
    the distinct units of the last hidden layer after training (``units[(network, scheme)]``, per seed) and
    the final validation accuracies (``val[(network, scheme)]``, per seed).

    The signal's criteria are ratios of the last hidden layer's std to the first's, averaged over seeds
    (eq. 7.31 multiplies the variance by ``n var[w]`` per layer): "vanishes" is a ratio below 1/2, "kept" a
    ratio within a factor of 2. The symmetric-weights claim is a count (every seed, every network)."""

    def ratio(network: str, scheme: str) -> float:
        return float(np.mean([layers[-1] / layers[0] if layers[0] > 0 else 0.0 for layers in stds[network][scheme]]))

    small = {a: ratio(a, "gaussian") for a in NETWORKS}
    kept = {a: ratio(a, PRESERVING[a]) for a in NETWORKS}
    zeros = {a: max(units[(a, "zeros")]) for a in NETWORKS}
    beats = {a: exceeds(val[(a, PRESERVING[a])], val[(a, "zeros")]) for a in NETWORKS}
    pairs = ", ".join(f"{a} {PRESERVING[a]}" for a in NETWORKS)
    return [
        claim("all-zero weights keep every hidden unit identical (the symmetric weights problem, section 7.3): one "
              "distinct unit in the last hidden layer after training",
              ", ".join(f"{a}: {zeros[a]} distinct of {WIDTH}" for a in NETWORKS), all(z == 1 for z in zeros.values())),
        claim("weights that are too small make the signal vanish with depth (eq. 7.31; N(0, 0.01) here): the last "
              "hidden layer's std below half the first's",
              "std last / first: " + ", ".join(f"{a} {small[a]:.3g}" for a in NETWORKS),
              all(r < 0.5 for r in small.values())),
        claim(f"a variance-preserving initialization keeps the signal steady ({pairs}; eq. 7.34, He et al. 2015): "
              "the last hidden layer's std within a factor 2 of the first's",
              "std last / first: " + ", ".join(f"{a} {PRESERVING[a]} {kept[a]:.3g}" for a in NETWORKS),
              all(0.5 <= r <= 2.0 for r in kept.values())),
        claim(f"training from it beats training from zeros ({pairs}): higher validation accuracy",
              "; ".join(f"{a}: {PRESERVING[a]} minus zeros {beats[a].text}" for a in NETWORKS),
              all(c.holds for c in beats.values())),
    ]  # fmt: skip
