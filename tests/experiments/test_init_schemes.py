"""Tests of the ``init`` experiment (section 7.3).

Oracles: the definition of the symmetric-weights failure (with zero weights every hidden unit of a layer
has the same weights and the same activation, before and after training: checked on the weight matrices
themselves), a forward pass written out with ``torch.nn.functional`` for the recorded activations,
``numpy.unique`` for the distinct units, and the chapter's variance law (7.31): a layer multiplies the
signal's variance by n * var[w], so with n * var[w] < 1 (uniform r = 0.1: 64 * 0.01 / 3) the activations
shrink layer after layer, and with sparse init (15 unit Gaussian inputs per unit) a ReLU signal grows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optreg import experiments
from optreg.errors import OptregValueError
from optreg.experiments import Context
from optreg.experiments.init_schemes import (
    DEPTH,
    NETWORKS,
    PRESERVING,
    SCHEMES,
    WIDTH,
    distinct_units,
    hidden_activations,
    init_config,
    model_spec,
)
from optreg.train import build_model


@pytest.fixture(scope="module")
def quick(run_quick) -> tuple[Context, experiments.Result]:
    return run_quick("init")


def rows(result: experiments.Result) -> dict[tuple[str, str], dict]:
    return {(r["network"], r["scheme"]): r for r in result.table}


def test_quick_run_has_figures_a_sane_table_and_store_rows(quick: tuple[Context, experiments.Result]) -> None:
    ctx, result = quick
    assert set(result.figures) == {"activations", "histograms", "training"}
    for name in (*result.figures, "table.csv", "table.md", "metrics.csv"):
        assert result.paths[name].is_file() and result.paths[name].stat().st_size > 0
    table = rows(result)
    assert list(table) == [(a, s) for a in NETWORKS for s in SCHEMES]
    runs = ctx.open_store().runs("init")
    assert [r["label"] for r in runs] == [f"{a}-{s}" for a, s in table]
    for run, row in zip(runs, table.values()):
        assert run["status"] == ("diverged" if row["diverged"] else "finished")
        assert run["config"]["init"]["scheme"] == SCHEMES[row["scheme"]]["scheme"]
        if not row["diverged"]:
            assert 0.0 <= row["val_accuracy"] <= 1.0 and row["final_train_loss"] > 0.0
            assert len(ctx.open_store().epochs(run["id"])) == run["config"]["epochs"]
        assert 1 <= row["distinct_units_last"] <= WIDTH
    for a in NETWORKS:  # the well-scaled schemes train and keep every unit distinct on tanh
        assert table[(a, "xavier")]["diverged"] == 0
    assert all(table[("tanh", s)]["distinct_units_last"] == WIDTH for s in SCHEMES if s != "zeros")


def test_zero_init_keeps_the_hidden_units_identical(quick: tuple[Context, experiments.Result]) -> None:
    """Section 7.3's symmetric weights: one distinct unit, no signal, accuracy near chance (10 classes)."""
    _, result = quick
    for a in NETWORKS:
        row = rows(result)[(a, "zeros")]
        assert row["act_std_layer1"] == 0.0 and row["act_std_last"] == 0.0
        assert row["distinct_units_last"] == 1
        assert row["val_accuracy"] <= 0.2


def test_claims_follow_the_table(quick: tuple[Context, experiments.Result], read_claims) -> None:
    """Oracle: the table (quick mode has one seed, so the claims' std ratios are its act_std_last /
    act_std_layer1 and the training claim a plain comparison of its validation accuracies); zero weights give
    one distinct unit (section 7.3's closed form, checked on the weights below)."""
    _, result = quick
    table = rows(result)
    zero, small, kept, trained = read_claims(result)
    assert zero["verdict"] == "holds"
    for row, scheme in ((small, lambda a: "gaussian"), (kept, lambda a: PRESERVING[a])):
        ratio = {a: table[(a, scheme(a))]["act_std_last"] / table[(a, scheme(a))]["act_std_layer1"] for a in NETWORKS}
        assert all(f"{ratio[a]:.3g}" in row["measured"] for a in NETWORKS)
        ok = all(r < 0.5 for r in ratio.values()) if row is small else all(0.5 <= r <= 2 for r in ratio.values())
        assert row["verdict"] == ("holds" if ok else "does not hold here")
    better = all(table[(a, PRESERVING[a])]["val_accuracy"] > table[(a, "zeros")]["val_accuracy"] for a in NETWORKS)
    assert trained["verdict"] == ("holds" if better else "does not hold here")


def test_zero_init_weights_stay_symmetric_through_training(tmp_path) -> None:
    """The failure on the weights themselves: every row of every hidden weight matrix equals every other row
    after training (here they stay exactly 0), while a random init gives distinct rows."""
    ctx = Context(quick=True, out=tmp_path)
    data = ctx.load_data(0)
    for name, symmetric in (("zeros", True), ("lecun", False)):
        h = ctx.train(
            name,
            model_spec=model_spec("tanh"),
            optimizer="momentum",
            hparams={"lr": 0.05},
            seed=0,
            batch_size=64,
            epochs=1,
            init=init_config(name, "tanh"),
            data=data,
        )
        hidden = [m for m in h.model.modules() if isinstance(m, torch.nn.Linear)][:-1]
        assert len(hidden) == DEPTH
        for layer in hidden:
            w = layer.weight.detach()
            same = bool((w == w[0]).all()) and bool((layer.bias == layer.bias[0]).all())
            assert same is symmetric


def test_hidden_activations_match_a_functional_forward_pass() -> None:
    ctx = Context(quick=True)
    data = ctx.load_data(0)
    x = data.train.x[:50]
    for a in NETWORKS:
        model = build_model(model_spec(a), data, seed=1, init=init_config("xavier", a))
        acts = hidden_activations(model, x)
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        h = x
        for layer, got in zip(linears[:-1], acts, strict=True):
            h = F.linear(h, layer.weight, layer.bias)
            h = torch.tanh(h) if a == "tanh" else F.relu(h)
            torch.testing.assert_close(got, h)
        assert model.training  # the hooks are gone and the mode restored
        assert not any(m._forward_hooks for m in model.modules())


def test_distinct_units_match_numpy_unique() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(30, 5, generator=g)
    acts = torch.cat([base, base[:, :2], torch.zeros(30, 3)], dim=1)  # 5 + 2 copies + 3 identical zero units
    assert distinct_units(acts) == np.unique(acts.numpy().T, axis=0).shape[0] == 6
    with pytest.raises(OptregValueError, match="units"):
        distinct_units(torch.zeros(4))


def test_signal_follows_the_variance_law(quick: tuple[Context, experiments.Result]) -> None:
    """Eq. (7.31): n * var[w] < 1 shrinks the signal each layer; sparse init blows a ReLU signal up."""
    table = rows(quick[1])
    for a in NETWORKS:
        r = table[(a, "uniform")]  # 64 inputs * (0.1^2 / 3) = 0.21 per layer
        assert r["act_std_last"] < 0.1 * r["act_std_layer1"]
    r = table[("relu", "sparse")]
    assert r["act_std_last"] > 10 * r["act_std_layer1"]
    r = table[("tanh", "sparse")]
    assert r["act_std_last"] > 0.8  # saturated: most tanh units sit near +-1


def test_init_config_and_bad_input() -> None:
    assert init_config("xavier", "relu") == {"scheme": "xavier_uniform", "activation": "relu"}
    assert init_config("he", "tanh") == {"scheme": "he_normal", "activation": "relu"}
    assert init_config("gaussian", "tanh") == {"scheme": "gaussian", "std": 0.1}
    with pytest.raises(OptregValueError, match="scheme"):
        init_config("glorot", "tanh")
    with pytest.raises(OptregValueError, match="activation"):
        model_spec("sigmoid")
    with pytest.raises(OptregValueError, match="act"):
        hidden_activations(torch.nn.Linear(3, 2), torch.zeros(1, 3))


def test_same_seed_same_numbers(tmp_path, quick: tuple[Context, experiments.Result]) -> None:
    again = experiments.get("init").fn(Context(quick=True, out=tmp_path))  # no PNG rendering
    assert again.table == quick[1].table


def test_activations_figure_leaves_zero_std_out_of_the_log_axis(quick: tuple[Context, experiments.Result]) -> None:
    """Zeros' std is 0: not drawn at 1e-300 (which squashed every other scheme into one line); the y axis
    spans the other schemes (oracle: the table's smallest positive std), and each panel names zeros."""
    _, result = quick
    fig = result.figures["activations"]
    for ax, network in zip(fig.axes, NETWORKS):
        assert "zeros" not in [ln.get_label() for ln in ax.get_lines()]
        assert "zeros" in ax.get_title() and "not drawn" in ax.get_title()
        positive = [v for r in result.table if r["network"] == network
                    for v in (r["act_std_layer1"], r["act_std_last"]) if v > 0]  # fmt: skip
        low, high = ax.get_ylim()
        assert min(positive) / 10 < low <= min(positive) and high >= max(positive)
    (legend,) = fig.legends  # below the panels
    assert "zeros" not in [t.get_text() for t in legend.get_texts()]
