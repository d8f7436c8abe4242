"""Weight penalties against their closed forms (eqs. 7.58, 7.61, 7.62) and, through the Trainer, against
torch.optim.SGD's weight_decay on the weights only; the max-norm constraint against its definition."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from optreg.errors import OptregTypeError, OptregValueError
from optreg.optim import weights_only
from optreg.regularize import ElasticNet, elastic_net, l1, l2, max_norm_
from optreg.train import Trainer


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def weights_of(model: nn.Module) -> list[np.ndarray]:
    """The weight matrices, picked by hand (not by the code under test)."""
    return [model[0].weight.detach().numpy(), model[3].weight.detach().numpy()]


def test_l1_closed_form_on_weights_only():
    """Oracle: lambda * sum |W_ij| over the two weight matrices, computed in NumPy; biases and BN excluded."""
    model = small_net()
    expected = 0.3 * sum(np.abs(w).sum() for w in weights_of(model))
    assert l1(0.3)(model).item() == pytest.approx(expected, rel=1e-12)


def test_smooth_l1_is_eq_7_61():
    """Oracle: eq. (7.61), lambda * sum sqrt(theta_i^2 + eps)."""
    model = small_net()
    expected = 0.3 * sum(np.sqrt(w**2 + 1e-3).sum() for w in weights_of(model))
    assert l1(0.3, eps=1e-3)(model).item() == pytest.approx(expected, rel=1e-12)


def test_l2_closed_form_and_half():
    """Oracle: lambda * sum W_ij^2 (eq. 7.58 with the squared norm); half=True: lambda / 2 * sum W_ij^2."""
    model = small_net()
    sq = sum((w**2).sum() for w in weights_of(model))
    assert l2(0.3)(model).item() == pytest.approx(0.3 * sq, rel=1e-12)
    assert l2(0.3, half=True)(model).item() == pytest.approx(0.15 * sq, rel=1e-12)


def test_elastic_net_is_eq_7_62():
    """Oracle: eq. (7.62), lambda_1 sum |W| + lambda_2 sum W^2, by hand."""
    model = small_net()
    ws = weights_of(model)
    expected = 0.2 * sum(np.abs(w).sum() for w in ws) + 0.7 * sum((w**2).sum() for w in ws)
    assert elastic_net(0.2, 0.7)(model).item() == pytest.approx(expected, rel=1e-12)


def test_elastic_net_matches_sklearn_parametrization():
    """Oracle: scikit-learn's ElasticNet penalty alpha * l1_ratio ||w||_1 + 0.5 alpha (1 - l1_ratio) ||w||^2,
    evaluated by sklearn's own objective on a fitted model (loss + penalty = sklearn's dual-gap objective)."""
    from sklearn.linear_model import ElasticNet as SkElasticNet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = x @ np.array([1.0, 0.0, -2.0, 0.0, 0.5]) + 0.1 * rng.normal(size=40)
    sk = SkElasticNet(alpha=0.1, l1_ratio=0.3, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(x, y)
    w = torch.tensor(sk.coef_[None, :], requires_grad=True)
    pen = elastic_net(0.1 * 0.3, 0.1 * 0.7, half=True)
    xt, yt = torch.tensor(x), torch.tensor(y)
    objective = ((yt - (xt @ w.T).squeeze(1)) ** 2).mean() / 2 + pen([w])
    objective.backward()
    # sklearn's coefficients minimize the same objective (KKT): the gradient vanishes on the non-zero
    # coordinates; on the zero ones (autograd's subgradient of |.| at 0 is 0) the loss gradient is <= lambda_1
    grad, nonzero = w.grad[0].numpy(), sk.coef_ != 0
    assert 0 < nonzero.sum() < 5
    assert np.abs(grad[nonzero]).max() < 1e-8
    assert np.all(np.abs(grad[~nonzero]) <= 0.1 * 0.3 + 1e-10)


def test_include_all_and_custom_mask():
    model = small_net()
    everything = sum(float(p.detach().abs().sum()) for p in model.parameters())
    assert l1(1.0, include="all")(model).item() == pytest.approx(everything, rel=1e-12)
    first_only = float(model[0].weight.detach().abs().sum())

    def first(params):
        return [p is model[0].weight for p in params]

    assert l1(1.0, include=first)(model).item() == pytest.approx(first_only, rel=1e-12)
    assert l1(1.0, include=weights_only)(model).item() == pytest.approx(l1(1.0)(model).item(), rel=0)


def test_penalties_are_picklable_and_compare_by_value():
    p = elastic_net(0.1, 0.2, eps=1e-6)
    assert pickle.loads(pickle.dumps(p)) == p
    assert p == ElasticNet(0.1, 0.2, 1e-6)
    assert repr(l2(0.5, half=True)) == "L2(strength=0.5, half=True, include='weights')"


@pytest.mark.parametrize("half", [False, True])
def test_trainer_l2_penalty_equals_torch_sgd_weight_decay_on_weights(make_data_mlp, half):
    """Oracle: torch.optim.SGD with weight_decay on the weights' param group only (2 lambda, or lambda with
    half=True): the same trajectory as the Trainer's penalty=l2(lambda) with plain SGD (exercise 7-3)."""
    x, y = make_data_mlp
    lam = 0.05

    def fit(penalty, groups):
        model = small_net()
        opt = torch.optim.SGD(groups(model), lr=0.1, momentum=0.9)
        Trainer(model, opt, batch_size=16, epochs=3, penalty=penalty, seed=3).fit((x, y))
        return model

    def plain(model):
        return model.parameters()

    def decayed(model):
        params = list(model.parameters())
        decay = 2 * lam if not half else lam
        return [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    ours, ref = fit(l2(lam, half=half), plain), fit(None, decayed)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), name
    # and the decay did something: the run without it differs
    free = fit(None, plain)
    assert not torch.allclose(free[0].weight, ours[0].weight, atol=1e-3)


@pytest.fixture
def make_data_mlp():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: l1(-0.1), r"l1: strength must be in \[0, inf\), got -0.1"),
        (lambda: l2(-1), r"l2: strength must be in \[0, inf\), got -1"),
        (lambda: elastic_net(0.1, -0.2), r"elastic_net: l2_strength must be in \[0, inf\), got -0.2"),
        (lambda: l1(0.1, eps=0.0), r"l1: eps must be in \(0, inf\), got 0.0"),
        (lambda: l1(0.1, include="biases"), r"l1: include must be one of 'weights', 'all' or a mask function"),
        (lambda: max_norm_(nn.Linear(2, 2), 0.0), r"max_norm: max_norm must be in \(0, inf\), got 0.0"),
    ],
)
def test_bad_input_names_field_and_value(make, message):
    with pytest.raises(OptregValueError, match=message):
        make()


def test_bad_types():
    with pytest.raises(OptregTypeError, match="l2: half must be a bool, got 1"):
        l2(0.1, half=1)
    with pytest.raises(OptregTypeError, match="l1: the model must be an nn.Module or tensors"):
        l1(0.1)([1.0, 2.0])


# ------------------------------------------------------------------------------------------- max-norm

matrices = arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(1, 6)),
    elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None)
@given(w=matrices, c=st.floats(0.01, 20))
def test_max_norm_never_exceeds_bound_and_leaves_inside_rows_untouched(w, c):
    """Property (Srebro & Shraibman; Srivastava et al. 2014): after max_norm_ every row (a unit's incoming
    weights) has norm <= c; rows already inside are bit-for-bit unchanged; rows outside keep their direction."""
    layer = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    bias = layer.bias.detach().clone()
    max_norm_(layer, c)
    out = layer.weight.detach().numpy()
    norms = np.linalg.norm(w, axis=1)
    assert np.all(np.linalg.norm(out, axis=1) <= c * (1 + 1e-12))
    inside = norms <= c
    assert np.array_equal(out[inside], w[inside])
    outside = ~inside
    # (torch.renorm divides by ||w|| + 1e-7: a relative difference of at most 1e-7 / c)
    np.testing.assert_allclose(out[outside], w[outside] * (c / norms[outside])[:, None], rtol=2e-7 / c)
    assert torch.equal(layer.bias, bias)  # biases are not weights


def test_max_norm_conv_filters_per_output_channel():
    """Oracle: each output channel's filter (in, kh, kw) rescaled to norm <= c, by hand in NumPy."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3).double()
    with torch.no_grad():
        conv.weight.mul_(10)
    w = conv.weight.detach().numpy().copy()
    max_norm_(conv, 1.5)
    norms = np.linalg.norm(w.reshape(3, -1), axis=1)
    expected = w * np.minimum(1.0, 1.5 / norms)[:, None, None, None]
    np.testing.assert_allclose(conv.weight.detach().numpy(), expected, rtol=1e-6)


def test_penalties_by_name():
    from optreg.regularize import PENALTIES

    assert PENALTIES["elastic_net"](0.1, 0.2) == elastic_net(0.1, 0.2)
    assert sorted(PENALTIES) == ["elastic_net", "l1", "l2"]
