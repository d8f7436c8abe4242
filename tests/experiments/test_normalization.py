"""Tests of the ``normalization`` experiment (section 7.5, exercise 7-2).

Oracles: eq. (7.45) written out for the recorded pre-activations of a batch-normalized layer (with
``gamma = 1, beta = 0`` at initialization, each unit's input is standardized with the batch's biased
variance); ``torch.nn.RNN`` for the unnormalized recurrent net and eqs. (7.52)-(7.53) with
``torch.nn.functional.layer_norm`` for the layer-normalized one; eq. (7.45) with the stored running
statistics for per-step BN past the trained length; closed forms for :func:`distribution_shift`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optreg import experiments
from optreg.errors import OptregValueError
from optreg.experiments import Context
from optreg.experiments.base import RunHistory
from optreg.experiments.normalization import (
    CNN_NORMS,
    NORMS,
    RNN_NORMS,
    LayerStatistics,
    SequenceNet,
    distribution_shift,
    epochs_to,
    mlp_spec,
    pre_activations,
    with_blank_rows,
)
from optreg.nn import build

FIGURES = {"mlp", "covariate_shift", "cnn", "batch_size", "rnn"}


@pytest.fixture(scope="module")
def quick(run_quick) -> tuple[Context, experiments.Result]:
    return run_quick("normalization")


def test_quick_run_writes_a_claims_table_figures_and_runs(quick, read_csv, read_claims) -> None:
    ctx, result = quick
    assert set(result.figures) == FIGURES
    for name in (*FIGURES, "table.csv", "claims.csv", "table.md", "metrics.csv"):
        assert result.paths[name].is_file() and result.paths[name].stat().st_size > 0
    claims = read_claims(result)
    assert len(claims) == 18
    assert all(any(ch.isdigit() for ch in row["measured"]) for row in claims)  # every claim carries a number
    mlp = read_csv(result.paths["table.csv"])  # the deep MLP: one row per normalization and learning rate
    assert {(r["norm"], float(r["lr"])) for r in mlp} >= {(n, 0.1) for n in NORMS}
    labels = {r["label"] for r in ctx.open_store().runs("normalization")}
    assert {f"mlp {n} lr=0.1" for n in NORMS} | {f"cnn {n}" for n in CNN_NORMS} <= labels
    assert {f"rnn {n}" for n in RNN_NORMS} <= labels  # trained outside train.run, recorded with record_run
    for part in ("deep MLP", "CNN", "batch size", "Recurrent nets", "whole-training-set"):
        assert part in result.notes


def test_quick_run_counts_the_statistics_per_step_bn_stores(quick) -> None:
    """Exercise 7-2 in numbers: per-step BN keeps 2 H statistics per time step (8 steps, H = 64), shared BN 2 H."""
    _, result = quick
    row = next(r for r in result.claims if r["claim"].startswith("BN with statistics per time step"))
    assert "per-step BN 1024, shared BN 128, LN 0" in row["measured"]


def test_pre_activations_of_batch_norm_follow_eq_7_45() -> None:
    """At initialization (gamma 1, beta 0) the input of act1 is (z - mean_B) / sqrt(var_B + eps) of fc1's output,
    with the batch's biased variance (7.43-7.45); the running statistics do not move."""
    torch.manual_seed(0)
    model = build({**mlp_spec("batch", depth=2, width=16), "in_features": 5, "out_features": 3})
    x = torch.randn(40, 5)
    before = model.norm1.running_mean.clone()
    z = model.fc1(x).detach()
    expected = (z - z.mean(0)) / torch.sqrt(z.var(0, correction=0) + model.norm1.eps)
    acts = pre_activations(model, x)
    assert len(acts) == 2 and acts[0].shape == (40, 16)
    torch.testing.assert_close(acts[0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.norm1.running_mean, before, rtol=0, atol=0)


def test_pre_activations_flatten_conv_maps_per_channel() -> None:
    model = build(
        {
            "kind": "cnn2d",
            "input_shape": [8, 8],
            "channels": [4],
            "hidden": [],
            "norm": "batch",
            "in_channels": 1,
            "out_features": 3,
        }
    )
    x = torch.randn(6, 64)
    (acts,) = pre_activations(model, x)
    assert acts.shape == (6 * 8 * 8, 4)  # every position of every example, one column per channel
    torch.testing.assert_close(acts.mean(0), torch.zeros(4), rtol=0, atol=1e-5)  # BN per channel (7.43)


def test_pre_activations_need_activation_layers() -> None:
    with pytest.raises(OptregValueError, match="no activation layers"):
        pre_activations(torch.nn.Linear(3, 2), torch.randn(4, 3))


def test_layer_statistics_records_the_asked_updates() -> None:
    from optreg.optim import create
    from optreg.train import Trainer

    torch.manual_seed(0)
    model = build({**mlp_spec("none", depth=3, width=8), "in_features": 4, "out_features": 2})
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    stats = LayerStatistics(x[:16], at=[0, 1, 3, 8])
    Trainer(model, create("sgd", model.parameters(), lr=0.1), batch_size=16, epochs=2, callbacks=[stats]).fit((x, y))
    assert [r["step"] for r in stats.records] == [0, 1, 3, 8]
    assert all(r["mean"].shape == (3, 8) and r["std"].shape == (3, 8) for r in stats.records)
    final = pre_activations(model, x[:16])  # the last record is the trained model's (8 = 2 epochs x 4 updates)
    np.testing.assert_allclose(stats.records[-1]["mean"][0], final[0].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_distribution_shift_closed_form() -> None:
    """A unit whose mean moves by one standard deviation and whose spread doubles has shift 1 + ln 2; a
    constant unit is left out; a distribution that does not change has shift 0."""
    a = {"step": 0, "mean": np.array([[0.0, 5.0], [1.0, 1.0]]), "std": np.array([[1.0, 0.0], [2.0, 2.0]])}
    b = {"step": 1, "mean": np.array([[1.0, 5.0], [1.0, 1.0]]), "std": np.array([[2.0, 0.0], [2.0, 2.0]])}
    shift = distribution_shift([a, b, b])
    np.testing.assert_allclose(shift, [1.0 + math.log(2.0), 0.0], rtol=1e-12)
    with pytest.raises(OptregValueError, match="at least 2"):
        distribution_shift([a])


def test_plain_sequence_net_is_torch_rnn() -> None:
    """SequenceNet('none') is h_t = tanh(W x_t + b + U h_{t-1}), torch.nn.RNN with the same weights."""
    torch.manual_seed(0)
    net = SequenceNet("none", 8, 16, 10, 8)
    rnn = torch.nn.RNN(8, 16, batch_first=True)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(net.ih.weight)
        rnn.bias_ih_l0.copy_(net.ih.bias)
        rnn.weight_hh_l0.copy_(net.hh.weight)
        rnn.bias_hh_l0.zero_()
    x = torch.randn(5, 64)
    _, h = rnn(x.reshape(5, 8, 8))
    torch.testing.assert_close(net(x), net.head(h[0]), rtol=1e-5, atol=1e-6)


def test_layer_norm_sequence_net_follows_eqs_7_52_7_53() -> None:
    torch.manual_seed(1)
    net = SequenceNet("layer", 8, 16, 10, 8)
    with torch.no_grad():
        net.cell.norm.weight.uniform_(0.5, 1.5)
        net.cell.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 8)  # a length the net was not built for: LN needs no per-step state
    h = torch.zeros(4, 16)
    for t in range(3):
        z = x[:, t] @ net.ih.weight.T + h @ net.hh.weight.T  # (7.52)
        h = torch.tanh(F.layer_norm(z, (16,), net.cell.norm.weight, net.cell.norm.bias, 1e-5))  # (7.53)
    torch.testing.assert_close(net(x), net.head(h), rtol=1e-5, atol=1e-6)


def test_per_step_batch_norm_reuses_the_last_step_past_the_trained_length() -> None:
    """In evaluation, step t uses BN number t (eq. 7.45 with its running statistics), steps past the last one
    reuse the last; shared BN has one set for all steps."""
    torch.manual_seed(2)
    net = SequenceNet("batch-per-step", 8, 4, 3, 2)
    assert len(net.bn) == 2
    with torch.no_grad():
        for i, bn in enumerate(net.bn):
            bn.running_mean.fill_(0.3 * (i + 1))
            bn.running_var.fill_(1.5 + i)
    net.eval()
    x = torch.randn(3, 4 * 8)  # 4 steps, built for 2
    h = torch.zeros(3, 4)
    for t in range(4):
        bn = net.bn[min(t, 1)]
        z = net.ih(x.reshape(3, 4, 8)[:, t]) + net.hh(h)
        h = torch.tanh((z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
    torch.testing.assert_close(net(x), net.head(h), rtol=1e-5, atol=1e-6)
    assert len(SequenceNet("batch-shared", 8, 4, 3, 2).bn) == 1


def test_sequence_net_refuses_a_bad_norm() -> None:
    with pytest.raises(OptregValueError, match="norm must be one of"):
        SequenceNet("group", 8, 4, 3, 2)


def test_with_blank_rows_prepends_zero_rows() -> None:
    x = torch.rand(2, 64)
    padded = with_blank_rows(x, 3)
    assert padded.shape == (2, 88)
    assert torch.equal(padded[:, :24], torch.zeros(2, 24)) and torch.equal(padded[:, 24:], x)
    assert torch.equal(with_blank_rows(x, 0), x)


def test_epochs_to_counts_from_one() -> None:
    h = RunHistory(epochs=[{"epoch": e, "train_loss": v} for e, v in enumerate([1.0, 0.5, 0.2, 0.1])])
    assert epochs_to(h, 0.3) == 3 and epochs_to(h, 0.05) is None
