"""Tests of optreg.init.

Oracles: the chapter's closed forms (eqs. 7.32-7.36, with the Glorot & Bengio 2010 erratum), checked on
large tensors within 5 standard errors of the sample second moment; torch.nn.init (same generator seed
=> same tensor, same bounds / std, torch's fan computation); the definitions (W W^T = g^2 I,
softmax(b) = c, exactly k non-zeros per unit); torch.nn.LSTMCell for the gate layout.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optreg import init
from optreg.errors import OptregValueError

# Kurtosis E[w^4] / E[w^2]^2 of the zero-mean laws: Var(mean(w^2)) = (kurtosis - 1) var^2 / n.
GAUSS, UNIFORM = 3.0, 9.0 / 5.0


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_variance(w: torch.Tensor, var: float, kurtosis: float, sigmas: float = 5.0) -> None:
    """mean(w^2) estimates var (the mean is 0); its standard error is var * sqrt((kurtosis - 1) / n)."""
    n = w.numel()
    m2 = w.double().pow(2).mean().item()
    se = var * math.sqrt((kurtosis - 1.0) / n)
    assert abs(m2 - var) <= sigmas * se, f"mean(w^2) = {m2:.6g}, expected {var:.6g} +- {sigmas} x {se:.3g}"
    assert abs(w.double().mean().item()) <= sigmas * math.sqrt(var / n)


SHAPES = [(300, 500), (64, 32, 5, 5)]  # Linear (out, in) and Conv2d (out, in, kh, kw)


def fans_of(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# ---------------------------------------------------------------------------------------------- fans


@pytest.mark.parametrize("shape", [(3, 5), (7, 2, 3), (8, 4, 3, 3), (2, 6, 3, 2, 2)])
def test_fans_match_torch_fan_computation(shape: tuple[int, ...]) -> None:
    w = torch.empty(shape)
    assert init.fans(w) == nn.init._calculate_fan_in_and_fan_out(w)


# --------------------------------------------------------------------- variances: chapter closed forms


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_lecun_normal_variance_matches_eq_7_32_and_7_33(shape: tuple[int, ...], mode: str) -> None:
    fan_in, fan_out = fans_of(shape)
    w = init.lecun_normal_(torch.empty(shape), mode=mode, generator=seeded(1))
    assert_variance(w, 1.0 / (fan_in if mode == "fan_in" else fan_out), GAUSS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_lecun_uniform_variance_and_bound_match_eqs_7_32_7_35(shape: tuple[int, ...], mode: str) -> None:
    fan_in, fan_out = fans_of(shape)
    n = fan_in if mode == "fan_in" else fan_out
    w = init.lecun_uniform_(torch.empty(shape), mode=mode, generator=seeded(2))
    assert_variance(w, 1.0 / n, UNIFORM)
    r = math.sqrt(3.0 / n)
    assert w.abs().max().item() <= r
    assert w.abs().max().item() >= r * (1 - 1e-3)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("activation", "g"), [("linear", 1.0), ("tanh", 1.0), ("logistic", 4.0), ("relu", math.sqrt(2.0))]
)
def test_xavier_normal_variance_matches_eq_7_34(shape: tuple[int, ...], activation: str, g: float) -> None:
    fan_in, fan_out = fans_of(shape)
    w = init.xavier_normal_(torch.empty(shape), activation=activation, generator=seeded(3))
    assert_variance(w, g * g * 2.0 / (fan_in + fan_out), GAUSS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("activation", "g"), [("tanh", 1.0), ("logistic", 4.0), ("sigmoid", 4.0)])
def test_xavier_uniform_bound_matches_eq_7_36_glorot_erratum(
    shape: tuple[int, ...], activation: str, g: float
) -> None:
    """Glorot & Bengio (2010): r = sqrt(6/(n_in+n_out)) for tanh, 4x for the logistic (the text swaps them),
    and the variance is 2/(n_in+n_out) times g^2 (eq. 7.34), not 1."""
    fan_in, fan_out = fans_of(shape)
    r = g * math.sqrt(6.0 / (fan_in + fan_out))
    w = init.xavier_uniform_(torch.empty(shape), activation=activation, generator=seeded(4))
    assert w.abs().max().item() <= r
    assert w.abs().max().item() >= r * (1 - 1e-3)
    assert_variance(w, r * r / 3.0, UNIFORM)  # eq. (7.35) with b - a = 2r
    assert_variance(w, g * g * 2.0 / (fan_in + fan_out), UNIFORM)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(("activation", "slope"), [("relu", 0.0), ("leaky_relu", 0.2)])
@pytest.mark.parametrize("law", ["normal", "uniform"])
def test_he_variance_is_2_over_fan(
    shape: tuple[int, ...], mode: str, activation: str, slope: float, law: str
) -> None:
    """He et al. (2015): var = 2 / ((1 + a^2) n), n the fan of `mode`."""
    fan_in, fan_out = fans_of(shape)
    n = fan_in if mode == "fan_in" else fan_out
    fn = init.he_normal_ if law == "normal" else init.he_uniform_
    w = fn(torch.empty(shape), mode=mode, activation=activation, negative_slope=slope, generator=seeded(5))
    assert_variance(w, 2.0 / ((1.0 + slope**2) * n), GAUSS if law == "normal" else UNIFORM)


def test_gaussian_and_uniform_match_their_parameters() -> None:
    """Section 7.3.0.1 (N(0, sigma^2), default variance 0.01) and 7.3.0.2 / eq. (7.35) (U[-r, r])."""
    w = init.gaussian_(torch.empty(400, 400), generator=seeded(6))
    assert_variance(w, 0.01, GAUSS)
    w = init.gaussian_(torch.empty(400, 400), mean=0.0, std=0.3, generator=seeded(6))
    assert_variance(w, 0.09, GAUSS)
    w = init.gaussian_(torch.empty(400, 400), mean=2.0, std=0.5, generator=seeded(6))
    assert abs(w.mean().item() - 2.0) <= 5 * 0.5 / 400
    w = init.uniform_(torch.empty(400, 400), r=0.7, generator=seeded(7))
    assert_variance(w, 0.7**2 / 3.0, UNIFORM)
    assert w.abs().max().item() <= 0.7


def test_zeros_and_constant_fill() -> None:
    assert torch.equal(init.zeros_(torch.randn(3, 4)), torch.zeros(3, 4))
    assert torch.equal(init.constant_(torch.randn(3, 4), 0.1), torch.full((3, 4), 0.1))


# ------------------------------------------------------------------------------ gains: Glorot vs torch


def test_gain_table_glorot_and_he() -> None:
    """tanh / linear 1 and logistic 4 (Glorot & Bengio 2010); ReLU and leaky ReLU as torch's calculate_gain
    (He et al. 2015)."""
    assert init.gain("linear") == init.gain("identity") == init.gain("tanh") == 1.0
    assert init.gain("logistic") == init.gain("sigmoid") == 4.0
    assert init.gain("relu") == pytest.approx(nn.init.calculate_gain("relu"))
    assert init.gain("leaky_relu", 0.2) == pytest.approx(nn.init.calculate_gain("leaky_relu", 0.2))
    assert init.gain("leaky_relu") == pytest.approx(nn.init.calculate_gain("leaky_relu"))


# ------------------------------------------------------------------ equality with torch.nn.init (oracle)


@pytest.mark.parametrize("shape", [(50, 70), (16, 8, 3, 3)])
def test_xavier_equals_torch_xavier_with_gain(shape: tuple[int, ...]) -> None:
    for ours, theirs in [
        (init.xavier_uniform_, nn.init.xavier_uniform_),
        (init.xavier_normal_, nn.init.xavier_normal_),
    ]:
        a = ours(torch.empty(shape), activation="logistic", generator=seeded(11))
        b = theirs(torch.empty(shape), gain=4.0, generator=seeded(11))
        torch.testing.assert_close(a, b)
        a = ours(torch.empty(shape), gain=1.7, generator=seeded(12))
        b = theirs(torch.empty(shape), gain=1.7, generator=seeded(12))
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_he_equals_torch_kaiming(mode: str) -> None:
    shape = (32, 16, 3, 3)
    a = init.he_normal_(torch.empty(shape), mode=mode, generator=seeded(13))
    b = nn.init.kaiming_normal_(torch.empty(shape), mode=mode, nonlinearity="relu", generator=seeded(13))
    torch.testing.assert_close(a, b)
    a = init.he_uniform_(
        torch.empty(shape), mode=mode, activation="leaky_relu", negative_slope=0.1, generator=seeded(14)
    )
    b = nn.init.kaiming_uniform_(torch.empty(shape), a=0.1, mode=mode, generator=seeded(14))
    torch.testing.assert_close(a, b)


def test_lecun_equals_torch_kaiming_linear() -> None:
    """LeCun normal is kaiming_normal_ with gain 1 (nonlinearity='linear')."""
    a = init.lecun_normal_(torch.empty(40, 60), generator=seeded(15))
    b = nn.init.kaiming_normal_(torch.empty(40, 60), nonlinearity="linear", generator=seeded(15))
    torch.testing.assert_close(a, b)


def test_kaiming_normal_std_matches_torch_statistically() -> None:
    """Independent draws (different seeds): the sample std of ours and of torch's agree within 5 SE."""
    shape = (512, 256)
    a = init.he_normal_(torch.empty(shape), generator=seeded(16))
    b = nn.init.kaiming_normal_(torch.empty(shape), nonlinearity="relu", generator=seeded(17))
    var = 2.0 / 256
    se = var * math.sqrt(2.0 / a.numel())
    assert abs(a.pow(2).mean().item() - b.pow(2).mean().item()) <= 5 * math.sqrt(2) * se


@pytest.mark.parametrize(("shape", "g"), [((20, 50), 1.0), ((50, 20), 2.0), ((8, 4, 3, 3), math.sqrt(2))])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(shape: tuple[int, ...], g: float) -> None:
    """Saxe et al. (2014): W W^T = g^2 I (wide) or W^T W = g^2 I (tall); same tensor as torch's."""
    w = init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=g, generator=seeded(18))
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    torch.testing.assert_close(gram, g * g * torch.eye(gram.shape[0], dtype=torch.float64))
    ref = nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=g, generator=seeded(18))
    torch.testing.assert_close(w, ref)


def test_orthogonal_gain_from_activation() -> None:
    w = init.orthogonal_(torch.empty(10, 10, dtype=torch.float64), activation="relu", generator=seeded(19))
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(10, dtype=torch.float64))


# ----------------------------------------------------------------------------------- reproducibility

RANDOM = {
    "gaussian": {},
    "uniform": {},
    "lecun_normal": {},
    "lecun_uniform": {},
    "xavier_uniform": {},
    "xavier_normal": {},
    "he_normal": {},
    "he_uniform": {},
    "orthogonal": {},
    "sparse": {"k": 5},
}


@pytest.mark.parametrize("scheme", sorted(RANDOM))
def test_same_generator_seed_gives_same_tensor(scheme: str) -> None:
    a = init.initialize_(torch.empty(30, 40), scheme, generator=seeded(21), **RANDOM[scheme])
    b = init.initialize_(torch.empty(30, 40), scheme, generator=seeded(21), **RANDOM[scheme])
    c = init.initialize_(torch.empty(30, 40), scheme, generator=seeded(22), **RANDOM[scheme])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    d = init.initialize_(torch.empty(30, 40), scheme, **RANDOM[scheme])
    torch.manual_seed(5)
    e = init.initialize_(torch.empty(30, 40), scheme, **RANDOM[scheme])
    assert torch.equal(d, e)


def test_every_available_scheme_runs() -> None:
    names = init.available()
    assert names == sorted(names)
    assert set(RANDOM) | {"zeros", "constant"} <= set(names)
    for name in names:
        opts = {"value": 0.5} if name == "constant" else RANDOM.get(name, {})
        w = init.initialize_(torch.full((12, 20), float("nan")), name, generator=seeded(0), **opts)
        assert torch.isfinite(w).all()


# --------------------------------------------------------------------------------------------- sparse


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 20), fan_in=st.integers(1, 40), data=st.data())
def test_sparse_has_exactly_k_nonzeros_per_unit(rows: int, fan_in: int, data: st.DataObject) -> None:
    """Martens (2010): every unit (row) has exactly k non-zero incoming weights."""
    k = data.draw(st.integers(1, fan_in))
    w = init.sparse_(torch.empty(rows, fan_in), k=k, generator=seeded(data.draw(st.integers(0, 1000))))
    assert ((w != 0).sum(dim=1) == k).all()


def test_sparse_conv_units_and_value_distribution() -> None:
    w = init.sparse_(torch.empty(64, 8, 3, 3), k=10, std=0.5, generator=seeded(23))
    assert ((w.reshape(64, -1) != 0).sum(dim=1) == 10).all()
    nz = w[w != 0]
    assert_variance(nz, 0.25, GAUSS)
    # positions uniform over the fan-in: each of the 72 inputs is chosen with probability 10/72 per unit
    big = init.sparse_(torch.empty(4000, 72), k=10, generator=seeded(24))
    counts = (big != 0).sum(dim=0).double()
    p = 10 / 72
    assert ((counts - 4000 * p).abs() <= 5 * math.sqrt(4000 * p * (1 - p))).all()


# ----------------------------------------------------------------------------------------- bias rules


@settings(max_examples=50, deadline=None)
@given(c=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=12))
def test_marginal_bias_softmax_equals_class_marginals(c: list[float]) -> None:
    """File 002: softmax(b) = c (torch.softmax as the oracle), with c normalised; b sums to 0."""
    b = init.marginal_bias(c)
    target = torch.tensor(c, dtype=torch.float64) / sum(c)
    torch.testing.assert_close(torch.softmax(b, dim=0), target)
    assert abs(b.sum().item()) <= 1e-9 * max(1.0, b.abs().max().item())


def test_marginal_bias_in_place_on_a_linear_layer() -> None:
    layer = nn.Linear(4, 3)
    init.marginal_bias_(layer.bias, [10, 30, 60])
    torch.testing.assert_close(torch.softmax(layer.bias.detach(), 0), torch.tensor([0.1, 0.3, 0.6]))


def test_lstm_forget_bias_matches_torch_gate_layout() -> None:
    """With zero weights, h0 = 0 and c0 = 1, torch's LSTMCell gives c1 = sigmoid(b_f) * 1 + sigmoid(b_i) *
    tanh(b_g): with b_f = 1 and the rest 0, c1 = sigmoid(1)."""
    cell = nn.LSTMCell(3, 5)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.zero_()
        cell.bias_ih.zero_()
        cell.bias_hh.normal_()
    init.lstm_forget_bias_(cell)
    assert torch.equal(cell.bias_hh[5:10], torch.zeros(5))  # the whole 1 sits in bias_ih
    with torch.no_grad():
        cell.bias_hh.zero_()
        _, c1 = cell(torch.randn(2, 3), (torch.zeros(2, 5), torch.ones(2, 5)))
    torch.testing.assert_close(c1, torch.full((2, 5), torch.sigmoid(torch.tensor(1.0)).item()))


def test_apply_lstm_forget_rule_on_stacked_bidirectional_lstm() -> None:
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    init.apply(lstm, "orthogonal", bias="lstm_forget", generator=seeded(25))
    expected = torch.zeros(16)
    expected[4:8] = 1.0
    for name, p in lstm.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.equal(p.detach(), expected), name
        elif name.startswith("bias_hh"):
            assert torch.equal(p.detach(), torch.zeros(16)), name
        elif name.startswith("weight_hh"):  # each gate block is its own orthogonal matrix
            for block in p.detach().double().chunk(4, dim=0):
                torch.testing.assert_close(
                    block @ block.T, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0
                )


# --------------------------------------------------------------------------------- apply(model, ...)


def mlp(sizes: list[int], act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def test_apply_initializes_linear_and_conv_weights_with_the_scheme() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    g = seeded(26)
    init.apply(model, "xavier_uniform", activation="logistic", generator=g)
    for layer in (model[0], model[3]):
        fan_in, fan_out = init.fans(layer.weight)
        r = 4.0 * math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max().item() <= r
        assert layer.weight.abs().max().item() >= 0.9 * r
        assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))
    # the same generator seed reproduces the whole model
    again = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    init.apply(again, "xavier_uniform", activation="logistic", generator=seeded(26))
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_apply_relu_and_marginal_bias_rules() -> None:
    model = mlp([6, 16, 16, 3], nn.ReLU)
    c = [0.2, 0.5, 0.3]
    init.apply(model, "he_normal", bias=["relu", "marginal"], class_prior=c, generator=seeded(27))
    assert torch.equal(model[0].bias.detach(), torch.full((16,), 0.1))
    assert torch.equal(model[2].bias.detach(), torch.full((16,), 0.1))
    torch.testing.assert_close(torch.softmax(model[4].bias.detach(), 0), torch.tensor(c))
    # with zero output weights, the network predicts the class marginals for every input
    with torch.no_grad():
        model[4].weight.zero_()
    torch.testing.assert_close(torch.softmax(model(torch.randn(5, 6)), 1), torch.tensor([c] * 5))


def test_apply_bias_constant_none_and_norm_layers_untouched() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
    before = model[0].bias.detach().clone()
    init.apply(model, "lecun_normal", bias=None, generator=seeded(28))
    assert torch.equal(model[0].bias.detach(), before)
    init.apply(model, "lecun_normal", bias=0.25, generator=seeded(28))
    assert torch.equal(model[3].bias.detach(), torch.full((2,), 0.25))
    assert torch.equal(model[1].weight.detach(), torch.ones(8))
    assert torch.equal(model[1].bias.detach(), torch.zeros(8))


def test_apply_recurrent_gates_get_their_own_fans() -> None:
    """Each GRU gate block (hidden, in) is a layer of its own: lecun_normal var = 1 / in (eq. 7.32)."""
    gru = nn.GRU(200, 300)
    init.apply(gru, "lecun_normal", generator=seeded(29))
    for block in gru.weight_ih_l0.detach().chunk(3, dim=0):
        assert_variance(block, 1.0 / 200, GAUSS)
    for block in gru.weight_hh_l0.detach().chunk(3, dim=0):
        assert_variance(block, 1.0 / 300, GAUSS)


def test_apply_on_models_built_by_optreg_nn() -> None:
    from optreg.nn import build

    model = build(
        {"kind": "cnn2d", "input_shape": [8, 8], "channels": [4], "hidden": [16], "out_features": 10}
    )
    init.apply(model, "he_uniform", bias=["relu", "marginal"], class_prior=[1.0] * 10, generator=seeded(30))
    assert torch.equal(model.conv1.bias.detach(), torch.full((4,), 0.1))
    assert torch.equal(model.out.bias.detach(), torch.zeros(10))  # uniform marginals => b = 0
    rnn = build({"kind": "lstm", "in_features": 1, "hidden_size": 8, "out_features": 3})
    init.apply(rnn, "orthogonal", bias="lstm_forget", generator=seeded(31))
    assert torch.equal(rnn.rnn.bias_ih_l0.detach()[8:16], torch.ones(8))


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_weights_keep_hidden_units_identical_symmetry(value: float) -> None:
    """Section 7.3: with equal weights every hidden unit has the same activation and gradient, so SGD
    never separates them; a random scheme breaks the symmetry."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    for scheme, symmetric in [("constant", True), ("xavier_normal", False)]:
        model = mlp([5, 6, 6, 3])
        opts = {"value": value} if scheme == "constant" else {}
        init.apply(model, scheme, generator=seeded(32), **opts)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            grad = model[0].weight.grad
            assert torch.allclose(grad, grad[:1].expand_as(grad)) == symmetric
            opt.step()
        hidden = model[1](model[0](x))
        w1 = model[0].weight.detach()
        assert torch.allclose(w1, w1[:1].expand_as(w1)) == symmetric
        assert torch.allclose(hidden, hidden[:, :1].expand_as(hidden)) == symmetric


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: init.initialize_(torch.empty(3, 4), "bogus"), "scheme must be one of"),
        (lambda: init.initialize_(torch.empty(3, 4), "he_normal", gain=2.0), "unknown option 'gain'"),
        (lambda: init.initialize_(torch.empty(3, 4), "constant"), "option 'value' is required"),
        (lambda: init.xavier_uniform_(torch.empty(3, 4), activation="softplus"), "activation must be one of"),
        (lambda: init.xavier_uniform_(torch.empty(3, 4), gain=-1.0), "gain must be"),
        (lambda: init.xavier_uniform_(torch.empty(5)), "at least 2 dimensions"),
        (lambda: init.he_normal_(torch.empty(3, 4), activation="tanh"), "activation must be one of"),
        (lambda: init.he_normal_(torch.empty(3, 4), mode="fan_avg"), "mode must be one of"),
        (lambda: init.lecun_normal_(torch.empty(3, 0)), "fan_in = 0"),
        (lambda: init.gaussian_(torch.empty(3, 4), std=-0.1), "std must be"),
        (lambda: init.uniform_(torch.empty(3, 4), r=float("nan")), "r must be"),
        (lambda: init.sparse_(torch.empty(3, 4), k=5), "k must be <= fan_in = 4"),
        (lambda: init.sparse_(torch.empty(3, 4), k=0), "k must be an integer >= 1"),
        (lambda: init.gaussian_(torch.empty(3, 4), generator=7), "generator must be"),
        (lambda: init.zeros_([1, 2]), "must be a torch.Tensor"),
        (lambda: init.marginal_bias([0.5, 0.0, 0.5]), "finite and > 0"),
        (lambda: init.marginal_bias([]), "non-empty"),
        (lambda: init.marginal_bias(["a"]), "sequence of numbers"),
        (lambda: init.marginal_bias_(torch.empty(3), [0.5, 0.5]), "2 classes"),
        (lambda: init.lstm_forget_bias_(nn.GRU(2, 3)), "nn.LSTM or nn.LSTMCell"),
        (lambda: init.apply("model", "zeros"), "must be a torch.nn.Module"),
        (lambda: init.apply(mlp([2, 3]), "zeros", bias="ones"), "bias must be one of"),
        (lambda: init.apply(mlp([2, 3]), "zeros", bias=[]), "empty"),
        (lambda: init.apply(mlp([2, 3]), "zeros", bias="marginal"), "needs class_prior"),
        (lambda: init.apply(mlp([2, 3]), "zeros", class_prior=[0.5, 0.5, 1.0]), "no 'marginal' rule"),
        (lambda: init.apply(mlp([2, 3]), "gaussian", activation="swish"), "activation must be one of"),
        (lambda: init.apply(mlp([2, 3]), "he_normal", activation="tanh"), "activation must be one of"),
        (lambda: init.apply(mlp([2, 3]), "xavier_normal", bogus=1), "unknown option 'bogus'"),
        (lambda: init.apply(nn.LSTM(2, 3), "zeros", bias="relu"), "need an nn.Linear output layer"),
    ],
)
def test_bad_input_raises_clear_error(call, match: str) -> None:
    with pytest.raises(OptregValueError, match=match):
        call()
