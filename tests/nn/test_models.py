"""Tests of optreg.nn.models.

Oracles: hand-built torch.nn.Sequential models carrying the same weights, with torch's own normalization
modules (BatchNorm1d / 2d, LayerNorm, LocalResponseNorm, parametrizations.weight_norm) where the builder
uses optreg's (same outputs in train and eval mode), torch's LSTM / GRU / RNN output sequence and the
layer-normalized RNN's (the classifier reads the last layer's final state), the closed-form parameter
counts (Linear (in + 1) * out, ConvNd (c_in k^d + 1) c_out, torch's recurrent layer layout, one gain per
unit for weight normalization), and the binomial law of inverted dropout (drop probability p, survivors
scaled by 1 / (1 - p)); for per-layer conv settings, residual MLPs and the recurrent readouts
("all", "mean"), torch ConvNd / MaxPoolNd / RNN / GRU / LSTM and hand-written shortcuts with the same weights.
"""

from __future__ import annotations

import math
import tomllib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm

from optreg.errors import OptregValueError
from optreg.nn import build, count_parameters, describe, make_activation
from optreg.nn import models as M
from optreg.nn.norm import BatchNorm, LayerNorm, LayerNormRNN, LocalResponseNorm


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters and buffers in module order (the two models must have the same layout)."""
    ps, pd = list(src.parameters()), list(dst.parameters())
    assert [p.shape for p in ps] == [p.shape for p in pd]
    bs, bd = list(src.buffers()), list(dst.buffers())
    assert [b.shape for b in bs] == [b.shape for b in bd]
    with torch.no_grad():
        for a, b in zip(ps + bs, pd + bd):
            b.copy_(a)


# -------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("spec", "x_shape"),
    [
        ({"kind": "mlp", "in_features": 64, "hidden": [32, 16], "out_features": 10}, (5, 64)),
        ({"kind": "mlp", "in_features": 64, "hidden": [32], "out_features": 10}, (5, 8, 8)),
        ({"kind": "mlp", "in_features": 7, "out_features": 3}, (4, 7)),  # softmax regression
        ({"kind": "cnn2d", "input_shape": [8, 8], "channels": [4, 8], "out_features": 10}, (3, 64)),
        ({"kind": "cnn2d", "input_shape": [8, 8], "channels": [4], "out_features": 10}, (3, 8, 8)),
        (
            {"kind": "cnn2d", "input_shape": [8, 8], "channels": [4], "hidden": [12], "out_features": 10},
            (3, 1, 8, 8),
        ),
        (
            {"kind": "cnn1d", "input_shape": [40], "channels": [8, 16], "hidden": [32], "out_features": 10},
            (6, 40),
        ),
        (
            {"kind": "cnn1d", "in_channels": 2, "input_shape": [40], "channels": [4], "out_features": 10},
            (6, 2, 40),
        ),
        (
            {"kind": "cnn1d", "input_shape": [10], "channels": [4], "kernel_size": 4, "out_features": 2},
            (6, 10),
        ),
        ({"kind": "rnn", "in_features": 1, "hidden_size": 8, "out_features": 10}, (4, 40)),
        ({"kind": "gru", "in_features": 3, "hidden_size": 8, "num_layers": 2, "out_features": 5}, (4, 11, 3)),
        (
            {"kind": "lstm", "in_features": 1, "hidden_size": 8, "bidirectional": True, "out_features": 10},
            (4, 9, 1),
        ),
    ],
)
def test_output_shape(spec: dict, x_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build(spec)
    out = model(torch.randn(x_shape))
    assert out.shape == (x_shape[0], spec["out_features"])
    assert torch.isfinite(out).all()


def test_available_kinds_all_build() -> None:
    assert M.available() == ["mlp", "cnn1d", "cnn2d", "rnn", "gru", "lstm"]
    minimal = {
        "mlp": {"in_features": 4, "out_features": 2},
        "cnn1d": {"input_shape": [6], "channels": [2], "out_features": 2},
        "cnn2d": {"input_shape": [4, 4], "channels": [2], "out_features": 2},
        "rnn": {"in_features": 4, "hidden_size": 3, "out_features": 2},
        "gru": {"in_features": 4, "hidden_size": 3, "out_features": 2},
        "lstm": {"in_features": 4, "hidden_size": 3, "out_features": 2},
    }
    for kind in M.available():
        assert isinstance(build({"kind": kind, **minimal[kind]}), nn.Module)


# ----------------------------------------------------------------------------- closed-form parameter counts


def mlp_count(sizes: list[int], norm: str | None) -> int:
    dense = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    per_unit = {"batch": 2, "layer": 2, "weight": 1}.get(norm, 0)  # gain + shift, or the gain g_i of (7.54)
    return dense + per_unit * sum(sizes[1:-1])


@settings(max_examples=25, deadline=None)
@given(
    n_in=st.integers(1, 30),
    hidden=st.lists(st.integers(1, 20), max_size=3),
    n_out=st.integers(1, 10),
    norm=st.sampled_from([None, "batch", "layer", "weight"]),
)
def test_mlp_parameter_count_closed_form(n_in: int, hidden: list[int], n_out: int, norm: str | None) -> None:
    """sum over layers of (in + 1) * out, plus 2 per normalized hidden unit (gain and shift; 1 with weight
    normalization: W = g v / ||v|| keeps v the shape of W and adds one g per unit)."""
    spec = {"kind": "mlp", "in_features": n_in, "hidden": hidden, "out_features": n_out, "norm": norm}
    assert count_parameters(build(spec)) == mlp_count([n_in, *hidden, n_out], norm)
    assert count_parameters(spec) == mlp_count([n_in, *hidden, n_out], norm)


@pytest.mark.parametrize("norm", [None, "batch", "layer", "weight", "lrn"])
@pytest.mark.parametrize("dims", [1, 2])
def test_cnn_parameter_count_closed_form(norm: str | None, dims: int) -> None:
    k, c_in, channels, hidden, n_out = 3, 2, [4, 6], [10], 5
    shape = [16] if dims == 1 else [8, 8]
    spec = {
        "kind": f"cnn{dims}d", "in_channels": c_in, "input_shape": shape, "channels": channels,
        "kernel_size": k, "hidden": hidden, "out_features": n_out, "norm": norm,
    }  # fmt: skip
    expected, c, spatial = 0, c_in, shape
    for c_out in channels:
        expected += (c * k**dims + 1) * c_out  # eq. of a ConvNd layer: weight + bias
        if norm == "batch":
            expected += 2 * c_out
        elif norm == "layer":
            expected += 2 * c_out * math.prod(spatial)  # LayerNorm over (C, *spatial); 'same' padding
        elif norm == "weight":
            expected += c_out  # one g per output channel
        spatial = [n // 2 for n in spatial]  # lrn has no parameters
        c = c_out
    expected += mlp_count([c * math.prod(spatial), *hidden, n_out], None if norm == "lrn" else norm)
    assert count_parameters(build(spec)) == expected


@pytest.mark.parametrize(("kind", "gates"), [("rnn", 1), ("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_parameter_count_closed_form(kind: str, gates: int, bidirectional: bool) -> None:
    """Per layer and direction: gates * (H * (in + H) + 2 H) (torch keeps b_ih and b_hh), then the head."""
    f, h, layers, n_out = 3, 7, 2, 4
    d = 2 if bidirectional else 1
    spec = {
        "kind": kind, "in_features": f, "hidden_size": h, "num_layers": layers,
        "out_features": n_out, "bidirectional": bidirectional,
    }  # fmt: skip
    expected = sum(d * gates * (h * ((f if i == 0 else d * h) + h) + 2 * h) for i in range(layers))
    expected += (d * h + 1) * n_out
    assert count_parameters(build(spec)) == expected
    if kind == "rnn":  # eqs. 7.52-7.53: W (H x in), U (H x H), no bias before LN, then gamma and beta (2 H)
        expected = sum(d * (h * ((f if i == 0 else d * h) + h) + 2 * h) for i in range(layers))
        assert count_parameters(build({**spec, "norm": "layer"})) == expected + (d * h + 1) * n_out


# ------------------------------------------------------------------------------- oracle: hand-built torch


@pytest.mark.parametrize("norm", [None, "batch", "layer", "weight"])
def test_mlp_equals_hand_built_sequential(norm: str | None) -> None:
    spec = {
        "kind": "mlp", "in_features": 12, "hidden": [16, 8], "out_features": 3,
        "activation": "tanh", "norm": norm, "dropout": 0.3,
    }  # fmt: skip
    torch.manual_seed(1)
    model = build(spec)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in [(12, 16), (16, 8)]:
        layers.append(torch_weight_norm(nn.Linear(a, b)) if norm == "weight" else nn.Linear(a, b))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(b))
        elif norm == "layer":
            layers.append(nn.LayerNorm(b))
        layers += [nn.Tanh(), nn.Dropout(0.3)]
    layers.append(nn.Linear(8, 3))
    ref = nn.Sequential(*layers)
    copy_weights(model, ref)
    x = torch.randn(20, 12)
    # train mode: same seed => same dropout masks and batch statistics
    torch.manual_seed(2)
    a = model(x)
    torch.manual_seed(2)
    b = ref(x)
    torch.testing.assert_close(a, b)
    model.eval()
    ref.eval()
    torch.testing.assert_close(model(x), ref(x))


def test_cnn2d_equals_hand_built_sequential() -> None:
    spec = {
        "kind": "cnn2d", "input_shape": [8, 8], "channels": [4, 6], "hidden": [10], "out_features": 3,
        "activation": "gelu", "norm": "batch", "dropout": 0.2,
    }  # fmt: skip
    assert isinstance(build(spec).norm_c1, BatchNorm)
    torch.manual_seed(3)
    model = build(spec)
    ref = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.GELU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(24, 10), nn.BatchNorm1d(10), nn.GELU(), nn.Dropout(0.2),
        nn.Linear(10, 3),
    )  # fmt: skip
    copy_weights(model, ref)
    x = torch.randn(7, 64)
    torch.manual_seed(4)
    a = model(x)
    torch.manual_seed(4)
    torch.testing.assert_close(a, ref(x))
    model.eval()
    ref.eval()
    torch.testing.assert_close(model(x), ref(x))


@pytest.mark.parametrize(
    "cnn",
    [
        {"kind": "cnn2d", "input_shape": [8, 8], "channels": [6, 7], "hidden": [10]},
        {"kind": "cnn1d", "input_shape": [12], "channels": [6], "hidden": []},
    ],
)
def test_cnn_lrn_equals_hand_built_with_torch_lrn(cnn: dict) -> None:
    """norm 'lrn': AlexNet's layer (eq. 7.55: n=5, k=2, alpha=1e-4, beta=0.75) after each conv activation =
    torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2) (torch divides alpha by n); no norm in the head."""
    dims = 2 if cnn["kind"] == "cnn2d" else 1
    conv, pool = (nn.Conv2d, nn.MaxPool2d) if dims == 2 else (nn.Conv1d, nn.MaxPool1d)
    torch.manual_seed(40)
    model = build({**cnn, "out_features": 3, "norm": "lrn"})
    layers: list[nn.Module] = [nn.Unflatten(1, (1, *cnn["input_shape"]))]
    c, spatial = 1, math.prod(cnn["input_shape"])
    for c_out in cnn["channels"]:
        layers += [conv(c, c_out, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0), pool(2)]
        c, spatial = c_out, spatial // 2**dims
    layers.append(nn.Flatten())
    n_in = c * spatial
    for width in cnn["hidden"]:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    ref = nn.Sequential(*layers, nn.Linear(n_in, 3))
    copy_weights(model, ref)
    assert isinstance(model.norm_c1, LocalResponseNorm) and model.norm_c1.form == "chapter"
    x = torch.randn(5, math.prod(cnn["input_shape"])) * 30
    torch.testing.assert_close(model(x), ref(x))
    assert not any(isinstance(m, LocalResponseNorm | nn.BatchNorm1d) for m in model[model_index(model, "flatten") :])


def model_index(model: nn.Sequential, name: str) -> int:
    return list(dict(model.named_children())).index(name)


def test_weight_norm_reparametrizes_hidden_layers_only() -> None:
    spec = {"kind": "cnn1d", "input_shape": [8], "channels": [3], "hidden": [5], "out_features": 2}
    model = build({**spec, "norm": "weight"})
    assert parametrize.is_parametrized(model.conv1, "weight") and parametrize.is_parametrized(model.fc1, "weight")
    assert not parametrize.is_parametrized(model.out)
    g = model.fc1.parametrizations.weight.original0
    torch.testing.assert_close(model.fc1.weight.norm(dim=1), g.detach().abs().squeeze(1))


@pytest.mark.parametrize(("kind", "norm"), [("rnn", None), ("gru", None), ("lstm", None), ("rnn", "layer")])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_classifier_reads_last_state_of_torch_rnn(kind: str, norm: str | None, bidirectional: bool) -> None:
    """Logits = head(output[:, -1, :H] (forward) ++ output[:, 0, H:] (backward)) of torch's RNN, or of the
    layer-normalized RNN (eqs. 7.52-7.53) with norm 'layer'."""
    torch.manual_seed(5)
    spec = {
        "kind": kind, "in_features": 2, "hidden_size": 6, "num_layers": 2,
        "out_features": 3, "bidirectional": bidirectional, "norm": norm,
    }  # fmt: skip
    model = build(spec)
    assert isinstance(model.rnn, LayerNormRNN if norm else nn.RNNBase)
    x = torch.randn(4, 9, 2)
    out, _ = model.rnn(x)
    last = out[:, -1, :6]
    if bidirectional:
        last = torch.cat([last, out[:, 0, 6:]], dim=1)
    torch.testing.assert_close(model(x), model.head(last))


def test_rnn_relu_activation_and_sequence_of_scalars() -> None:
    model = build(
        {"kind": "rnn", "in_features": 1, "hidden_size": 5, "out_features": 2, "activation": "relu"}
    )
    assert model.rnn.nonlinearity == "relu"
    x = torch.randn(3, 12)
    torch.testing.assert_close(model(x), model(x.unsqueeze(-1)))


# -------------------------------------------------------------------------------- norm / dropout / modes


def test_norm_and_dropout_layers_present_when_asked() -> None:
    base = {"kind": "mlp", "in_features": 4, "hidden": [5, 5], "out_features": 2}
    plain = build(base)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.Dropout) for m in plain.modules())
    m = build({**base, "norm": "batch", "dropout": 0.5, "input_dropout": 0.1})
    assert sum(isinstance(x, BatchNorm) for x in m.modules()) == 2  # optreg's modules
    assert [x.p for x in m.modules() if isinstance(x, nn.Dropout)] == [0.1, 0.5, 0.5]
    m = build({**base, "norm": "layer"})
    assert sum(isinstance(x, LayerNorm) for x in m.modules()) == 2
    assert build({**base, "norm": "none"}).state_dict().keys() == plain.state_dict().keys()
    c = build({"kind": "cnn1d", "input_shape": [8], "channels": [3], "out_features": 2, "norm": "batch"})
    assert isinstance(c.norm_c1, BatchNorm)
    c = build({"kind": "cnn2d", "input_shape": [4, 4], "channels": [3], "out_features": 2, "norm": "layer"})
    assert isinstance(c.norm_c1, LayerNorm) and c.norm_c1.normalized_shape == (3, 4, 4)
    r = build(
        {
            "kind": "lstm",
            "in_features": 1,
            "hidden_size": 4,
            "num_layers": 2,
            "out_features": 2,
            "dropout": 0.2,
        }
    )
    assert r.rnn.dropout == 0.2 and isinstance(r.dropout, nn.Dropout)


@pytest.mark.parametrize("name", M.ACTIVATIONS)
def test_activations_match_torch_functions(name: str) -> None:
    x = torch.linspace(-3, 3, 13)
    ref = {
        "relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid, "sigmoid": torch.sigmoid,
        "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.01), "elu": nn.functional.elu,
        "gelu": nn.functional.gelu, "identity": lambda t: t, "linear": lambda t: t,
    }[name]  # fmt: skip
    torch.testing.assert_close(make_activation(name)(x), ref(x))
    spec = {"kind": "mlp", "in_features": 2, "hidden": [3], "out_features": 1, "activation": name}
    assert type(build(spec).act1) is type(make_activation(name))


def test_dropout_train_vs_eval_mode() -> None:
    """Train: each hidden unit dropped with probability p (5-sigma binomial band), survivors scaled by
    1 / (1 - p) (inverted dropout); eval: deterministic and equal to the model without dropout."""
    p = 0.3
    spec = {"kind": "mlp", "in_features": 20, "hidden": [200], "out_features": 4, "dropout": p}
    torch.manual_seed(6)
    model = build(spec)
    ref = build({**spec, "dropout": 0.0})
    copy_weights(model, ref)
    x = torch.randn(100, 20)
    seen = {}
    model.drop1.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    model.train()
    a = model(x)
    hid, dropped = seen["inp"], seen["out"]
    live = hid != 0
    n = int(live.sum())
    frac = ((dropped == 0) & live).sum().item() / n
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n)
    kept = (dropped != 0) & live
    torch.testing.assert_close(dropped[kept], hid[kept] / (1 - p))
    assert not torch.equal(a, model(x))  # a new mask each call
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    torch.testing.assert_close(model(x), ref(x))


def test_batch_norm_train_uses_batch_statistics_eval_running() -> None:
    torch.manual_seed(7)
    model = build({"kind": "mlp", "in_features": 3, "hidden": [4], "out_features": 2, "norm": "batch"})
    x = torch.randn(16, 3) * 5 + 2
    seen = {}
    model.norm1.register_forward_hook(lambda mod, inp, out: seen.update(out=out))
    model.train()
    model(x)
    torch.testing.assert_close(seen["out"].mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    model.eval()
    model(x)
    assert seen["out"].mean(0).abs().max() > 1e-2  # running stats have moved only 10% of the way


def test_build_is_deterministic_under_manual_seed() -> None:
    spec = {"kind": "cnn1d", "input_shape": [20], "channels": [3], "hidden": [5], "out_features": 2}
    torch.manual_seed(8)
    a = build(spec)
    torch.manual_seed(8)
    b = build(spec)
    c = build(spec)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_spec_from_toml_table() -> None:
    table = tomllib.loads(
        """
        [model]
        kind = "mlp"
        in_features = 64
        hidden = [128, 128]
        out_features = 10
        activation = "relu"
        norm = "none"
        dropout = 0.5
        """
    )["model"]
    model = build(table)
    assert count_parameters(model) == mlp_count([64, 128, 128, 10], None)
    n = mlp_count([64, 128, 128, 10], None)
    assert (
        describe(table)
        == f"mlp 64 -> 128 -> 128 -> 10, activation relu, norm none, dropout 0.5; {n:,} parameters"
    )


def test_describe_other_kinds_name_the_parameter_count() -> None:
    for spec in [
        {"kind": "cnn2d", "input_shape": [8, 8], "channels": [4], "out_features": 10},
        {"kind": "gru", "in_features": 1, "hidden_size": 4, "out_features": 2, "bidirectional": True},
    ]:
        text = describe(spec)
        assert text.startswith(spec["kind"])
        assert text.endswith(f"{count_parameters(build(spec)):,} parameters")


# ---------------------------------------------------------------------------------------------- errors

MLP = {"kind": "mlp", "in_features": 4, "out_features": 2}
CNN = {"kind": "cnn2d", "input_shape": [8, 8], "channels": [4], "out_features": 2}
LSTM = {"kind": "lstm", "in_features": 1, "hidden_size": 4, "out_features": 2}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([("kind", "mlp")], "spec must be a mapping"),
        ({"in_features": 3}, "needs a 'kind'"),
        ({**MLP, "kind": "transformer"}, "kind must be one of .*got 'transformer'"),
        (
            {**MLP, "widths": [3]},
            "models.mlp: unknown key 'widths' = \\[3\\]; allowed keys: kind, in_features",
        ),
        ({"kind": "mlp", "in_features": 4}, "missing required key 'out_features'"),
        ({**MLP, "in_features": 0}, "in_features must be an integer >= 1, got 0"),
        ({**MLP, "out_features": 2.0}, "out_features must be an integer >= 1, got 2.0"),
        ({**MLP, "hidden": 8}, "hidden must be a list of integers >= 1, got 8"),
        ({**MLP, "hidden": [8, 0]}, "hidden must be a list"),
        ({**MLP, "hidden": [True]}, "hidden must be a list"),
        ({**MLP, "activation": "swish"}, "activation must be one of .*got 'swish'"),
        ({**MLP, "norm": "group"}, "norm must be one of .*got 'group'"),
        ({**MLP, "dropout": 1.0}, "dropout must be in \\[0, 1\\), got 1.0"),
        ({**MLP, "input_dropout": -0.1}, "input_dropout must be in"),
        ({**CNN, "input_shape": [8]}, "input_shape must be a list of 2 integers"),
        ({**CNN, "kind": "cnn1d"}, "input_shape must be a list of 1 integers"),
        ({**CNN, "channels": []}, "channels must be a non-empty list"),
        ({**CNN, "channels": [4, 4, 4, 4]}, "input_shape \\[8, 8\\] is too small"),
        ({**CNN, "pool": 0}, "pool must be an integer >= 1"),
        ({**CNN, "kernel_size": "3"}, "kernel_size must be an integer"),
        ({**LSTM, "activation": "tanh"}, "models.lstm: unknown key 'activation'"),
        ({**LSTM, "norm": "batch"}, "models.lstm: norm 'batch' does not fit kind lstm .*exercise 7-2"),
        ({**LSTM, "kind": "rnn", "norm": "batch"}, "norm 'batch' does not fit kind rnn \\(it takes 'layer'\\)"),
        ({**LSTM, "kind": "gru", "norm": "layer"}, "norm 'layer' does not fit kind gru \\(it takes only none\\)"),
        ({**LSTM, "kind": "rnn", "norm": "weight"}, "norm 'weight' does not fit kind rnn"),
        ({**LSTM, "kind": "rnn", "norm": "lrn"}, "norm 'lrn' does not fit kind rnn"),
        ({**MLP, "norm": "lrn"}, "models.mlp: norm 'lrn' does not fit kind mlp .*use it with kind cnn1d or cnn2d"),
        ({**LSTM, "kind": "rnn", "activation": "gelu"}, "activation must be one of 'tanh', 'relu'"),
        ({**LSTM, "bidirectional": "yes"}, "bidirectional must be true or false"),
        ({**LSTM, "num_layers": 0}, "num_layers must be an integer >= 1"),
    ],
)
def test_bad_spec_raises_clear_error(spec: object, match: str) -> None:
    with pytest.raises(OptregValueError, match=match):
        build(spec)


def test_bad_inputs_at_forward_time() -> None:
    with pytest.raises(OptregValueError, match="each sample must have 1 x 8 x 8 values"):
        build(CNN)(torch.randn(2, 60))
    with pytest.raises(OptregValueError, match=r"input must be \(N, T, 1\) or \(N, T\)"):
        build(LSTM)(torch.randn(2, 5, 3))
    with pytest.raises(OptregValueError, match="activation must be one of"):
        make_activation("softplus")
    with pytest.raises(OptregValueError, match="needs an nn.Module or a spec"):
        count_parameters(42)


# -------------------------------------------------------------------- per-layer convs, residuals, readouts
@pytest.mark.parametrize("dims", [1, 2])
def test_cnn_per_layer_kernels_strides_paddings_equal_hand_built_torch(dims: int) -> None:
    """Oracle: torch ConvNd / MaxPoolNd with the same per-layer settings and weights (strided downsampling,
    no pooling in block 1, pooling 2 in block 2, an explicit padding and the default kernel_size // 2)."""
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.MaxPool2d)
    shape = [40] if dims == 1 else [12, 12]
    spec = {
        "kind": f"cnn{dims}d", "in_channels": 2, "input_shape": shape, "channels": [4, 6, 3],
        "kernel_size": [5, 3, 1], "stride": [2, 1, 1], "padding": [0, 1, 0], "pool": [1, 2, 1],
        "hidden": [7], "out_features": 3,
    }  # fmt: skip
    torch.manual_seed(8)
    model = build(spec)
    n = [((v - 5) // 2 + 1) // 2 for v in shape]  # block 1: k 5, stride 2, no padding; block 2 pools by 2
    ref = nn.Sequential(
        nn.Unflatten(1, (2, *shape)),
        conv(2, 4, 5, stride=2), nn.ReLU(),
        conv(4, 6, 3, padding=1), nn.ReLU(), pool(2),
        conv(6, 3, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * math.prod(n), 7), nn.ReLU(), nn.Linear(7, 3),
    )  # fmt: skip
    copy_weights(model, ref)
    x = torch.randn(5, 2 * math.prod(shape))
    torch.testing.assert_close(model(x), ref(x))
    default = M.validate({**spec, "padding": None, "kernel_size": 3, "stride": 2})
    assert default["padding"] == [1, 1, 1] and default["stride"] == [2, 2, 2] and default["pool"] == [1, 2, 1]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"stride": [1, 2, 3]}, r"stride must be an integer >= 1 or a list of 2 \(one per conv block\)"),
        ({"padding": -1}, "padding must be an integer >= 0"),
        ({"kernel_size": [3, 0]}, "kernel_size must be an integer >= 1"),
        ({"stride": 4, "pool": 1, "kernel_size": 9, "padding": 0}, "too small .* maps vanish in block 1"),
    ],
)
def test_bad_per_layer_conv_settings(change: dict, match: str) -> None:
    with pytest.raises(OptregValueError, match=match):
        build({**CNN, "channels": [4, 4], **change})


def test_residual_mlp_equals_hand_built_shortcuts() -> None:
    """h = h + act(W h + b) where the widths match (blocks 2 and 3), plain blocks elsewhere; oracle: the
    same weights in hand-written torch code. Without ``residual`` the same seed gives the same weights."""
    spec = {"kind": "mlp", "in_features": 6, "hidden": [8, 8, 8, 5], "out_features": 3, "activation": "tanh"}
    torch.manual_seed(2)
    model = build({**spec, "residual": True})
    assert [n for n, _ in model.named_children()] == ["flatten", "fc1", "act1", "res2", "res3", "fc4", "act4", "out"]
    torch.manual_seed(2)
    plain = build(spec)
    assert [p.tolist() for p in model.parameters()] == [p.tolist() for p in plain.parameters()]
    (w1, b1), (w2, b2), (w3, b3), (w4, b4), (wo, bo) = zip(*[iter(list(plain.parameters()))] * 2)
    x = torch.randn(4, 6)
    h = torch.tanh(x @ w1.T + b1)
    h = h + torch.tanh(h @ w2.T + b2)
    h = h + torch.tanh(h @ w3.T + b3)
    h = torch.tanh(h @ w4.T + b4)
    torch.testing.assert_close(model(x), h @ wo.T + bo)
    with pytest.raises(OptregValueError, match="residual must be true or false"):
        build({**spec, "residual": 1})


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["all", "mean"])
def test_readout_all_and_mean_equal_hand_built_torch(kind: str, bidirectional: bool, readout: str) -> None:
    """Oracle: torch's RNN / GRU / LSTM with the same weights; the head reads every step's outputs
    flattened ("all") or their mean over the steps ("mean")."""
    torch.manual_seed(9)
    spec = {
        "kind": kind, "in_features": 2, "hidden_size": 5, "num_layers": 2, "out_features": 3,
        "bidirectional": bidirectional, "readout": readout, "seq_len": 7,
    }  # fmt: skip
    model = build(spec)
    rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind](
        2, 5, num_layers=2, batch_first=True, bidirectional=bidirectional
    )
    width = 5 * (2 if bidirectional else 1)
    head = nn.Linear(width * (7 if readout == "all" else 1), 3)
    copy_weights(model, nn.ModuleList([rnn, head]))
    x = torch.randn(4, 7, 2)
    out, _ = rnn(x)
    expected = head(out.flatten(1) if readout == "all" else out.mean(1))
    torch.testing.assert_close(model(x), expected)
    if readout == "all":
        with pytest.raises(OptregValueError, match="readout 'all' was built for seq_len 7"):
            model(torch.randn(4, 6, 2))


def test_readout_errors() -> None:
    with pytest.raises(OptregValueError, match="readout must be one of 'last', 'all', 'mean', got 'first'"):
        build({**LSTM, "readout": "first"})
    with pytest.raises(OptregValueError, match="readout 'all' needs seq_len"):
        build({**LSTM, "readout": "all"})
    assert M.keys("gru")[1]["readout"] == "last"
