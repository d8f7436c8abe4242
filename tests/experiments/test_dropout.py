"""Tests of the ``dropout`` and ``rnn-dropout`` experiments (section 7.7.4, figures 7.10-7.12, exercise 7-4).

Oracles: closed forms (E[W d(h) + b] = W h + b for inverted dropout, the expected Hamming distance
2 p (1 - p) n between two masks, a deterministic net's Monte Carlo average being the net itself), the
reshape written out, torch.autograd.functional.jacobian for the input influence; the quick runs' tables
are checked for their structure (one row per claim, every verdict one of the two words), never for a verdict.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optreg.data.datasets import Split, Splits
from optreg.experiments import dropout as X
from optreg.nn import build
from optreg.nn.dropout import Dropout


def _mlp(p: float) -> nn.Sequential:
    torch.manual_seed(0)
    return build({"kind": "mlp", "in_features": 5, "hidden": [7, 6], "out_features": 3, "dropout": p})


def test_expectation_check_against_the_closed_form_of_inverted_dropout():
    """E[W d(h) + b] = W h + b (inverted scaling): the Monte Carlo mean sits within 3 standard errors of the
    evaluation-mode pre-activation, the norm ratio is 1 and masks without 1/(1-p) give 1 - p."""
    model = _mlp(0.4)
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    out = X.expectation_check(model, x, samples=3000)
    assert out["p"] == 0.4
    assert out["within_3se"] > 0.98
    assert out["norm_ratio"] == pytest.approx(1.0, abs=0.02)
    assert out["unscaled_ratio"] == pytest.approx(0.6 * out["norm_ratio"])


def test_mask_diversity_is_the_binomial_closed_form():
    """Two independent masks of n units differ in 2 p (1 - p) n places on average."""
    g = torch.Generator().manual_seed(0)
    for p in (0.1, 0.5, 0.7):
        assert X.mask_diversity(p, 200, 4000, g) == pytest.approx(2 * p * (1 - p) * 200, rel=0.02)


def test_ensemble_check_of_a_net_without_dropout_is_the_net_itself():
    """A deterministic net's Monte Carlo average is the net: zero distance, full agreement, equal accuracy."""
    model = _mlp(0.0)
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g))
    for row in X.ensemble_check(model, split, (1, 5), seed=0):
        assert row["tv_distance"] == pytest.approx(0.0, abs=1e-7)
        assert row["agreement"] == 1.0 and row["mc_accuracy"] == row["eval_accuracy"]


def test_ensemble_check_converges_to_the_weight_scaled_net_with_more_masks():
    model = _mlp(0.5)
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(200, 5, generator=g), torch.randint(0, 3, (200,), generator=g))
    rows = X.ensemble_check(model, split, (1, 400), seed=0)
    assert rows[1]["tv_distance"] < rows[0]["tv_distance"] / 3


def test_draw_masks_are_the_models_own_dropout_masks():
    """The drawn masks are those the model's Dropout layers produce from the same seed on a vector of ones."""
    torch.manual_seed(0)
    model = build({"kind": "mlp", "in_features": 5, "hidden": [7, 6], "out_features": 3, "dropout": 0.5,
                   "input_dropout": 0.3})
    widths, masks = X._draw_masks(model, 4, seed=3)
    assert widths == [5, 7, 6, 3]
    torch.manual_seed(3)
    expected = [Dropout(0.3)(torch.ones(1, 5))[0] > 0, Dropout(0.5)(torch.ones(1, 7))[0] > 0,
                Dropout(0.5)(torch.ones(1, 6))[0] > 0]
    for got, want in zip(masks[:3], expected):
        assert torch.equal(got, want[:4])
    assert masks[3] is None


def test_as_frames_is_the_reshape_written_out():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(6, 40, generator=g), torch.arange(6))
    data = Splits(split, split, split, 10, (40,), "mnist1d")
    framed = X.as_frames(data, 2)
    assert framed.input_shape == (20, 2) and framed.train.x.shape == (6, 20, 2)
    for n, t, j in ((0, 0, 0), (3, 7, 1), (5, 19, 1)):
        assert framed.train.x[n, t, j] == split.x[n, 2 * t + j]


def _gru(scheme: str = "between", p: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return build({"kind": "gru", "in_features": 2, "hidden_size": 5, "out_features": 3, "dropout_scheme": scheme,
                  "dropout": p})


def test_input_influence_against_the_jacobian():
    """Oracle: torch.autograd.functional.jacobian of each example's true-class logit, per step norm, mean."""
    model = _gru()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 6, 2, generator=g), torch.tensor([0, 2, 1, 2])
    got = X.input_influence(model, x, y, draws=1)
    norms = []
    for n in range(4):
        jac = torch.autograd.functional.jacobian(lambda xi, n=n: model(xi[None])[0, y[n]], x[n])  # (T, F)
        norms.append(jac.norm(dim=1))
    assert torch.allclose(torch.as_tensor(got, dtype=torch.float32), torch.stack(norms).mean(0), atol=1e-6)


def test_with_scheme_keeps_the_weights_and_drift_is_zero_without_recurrent_masks():
    """The re-schemed classifier equals the original in evaluation mode; schemes without recurrent masks do not
    move the hidden states (drift 0, norms those of the mean network), per-step state masks do."""
    model = _gru()
    x = torch.randn(3, 8, 2, generator=torch.Generator().manual_seed(2))
    clean = model.rnn(x)[0].norm(dim=2).mean(0)
    for scheme in ("between", "non_recurrent", "state"):
        other = X._with_scheme(model, scheme, 0.0 if scheme == "between" else 0.3)
        assert torch.allclose(other.eval()(x), model.eval()(x), atol=1e-6)
        drift, norm = X.masked_drift(other, x, draws=2)
        if scheme == "state":
            assert drift[-1] > 0
        else:
            assert (drift == 0).all()
            assert torch.allclose(torch.as_tensor(norm, dtype=torch.float32), clean, atol=1e-6)


def test_variational_scheme_drops_the_inputs_with_one_mask_per_sequence():
    """Figure 7.12 (Gal & Ghahramani): the experiment's variational GRU masks its inputs, outputs and recurrent
    state, each with one mask for all time steps (shape (1, N, F)); the other schemes keep every input.
    Oracle: the masks the built model draws (optreg.nn.dropout.RNNMasks), and its forward pass with the input
    mask applied by hand to an unmasked copy."""
    for label, scheme in X.RNN_SCHEMES.items():
        if scheme == "between":
            continue
        spec = {**X.GRU, **X.rnn_dropout(scheme, X.RNN_P), "in_features": X.FRAME, "out_features": 10}
        rnn = build(spec).rnn
        masks = rnn.sample_masks(20, 5, torch.zeros(1))
        if scheme == "variational":
            assert masks.inputs[0].shape == (1, 5, X.FRAME)
            assert masks.recurrent[0].shape == masks.output.shape == (1, 5, X.GRU["hidden_size"])
            m = masks.inputs[0]
            assert ((m == 0) | torch.isclose(m, torch.tensor(1.0 / (1.0 - X.RNN_P)))).all()  # inverted scaling
        else:
            assert masks.inputs[0] is None, label
    torch.manual_seed(0)
    spec = {**X.GRU, **X.rnn_dropout("variational", 0.5), "in_features": X.FRAME, "out_features": 10}
    model = build(spec)
    x = torch.randn(5, 20, X.FRAME, generator=torch.Generator().manual_seed(3))
    masks = model.rnn.sample_masks(20, 5, x)
    kept = masks._replace(inputs=[None])
    got = model.rnn(x, masks=masks)[0]
    by_hand = model.rnn(x * masks.inputs[0].transpose(0, 1), masks=kept)[0]  # (N, T, F) times (N, 1, F)
    assert torch.allclose(got, by_hand, atol=1e-6)


@pytest.mark.parametrize(("name", "claims", "figures"), [
    ("dropout", 9, {"sweep", "ensemble", "thinned"}),
    ("rnn-dropout", 7, {"rnn", "masks"}),
])
def test_quick_run_writes_a_claims_table_and_figures(run_quick, read_csv, read_claims, name, claims, figures):
    ctx, result = run_quick(name)
    assert len(read_claims(result)) == claims
    assert figures <= set(result.paths) and all(result.paths[f].stat().st_size > 0 for f in figures)
    rows = read_csv(result.paths["table.csv"])  # the per-setting table: one row per setting or scheme
    settings = [r["setting" if name == "dropout" else "scheme"] for r in rows]
    assert settings == ([label for label, _ in X._mlp_settings(True)] if name == "dropout" else list(X.RNN_SCHEMES))
    assert len(ctx.run_ids) == (4 if name == "dropout" else len(X.RNN_SCHEMES))
