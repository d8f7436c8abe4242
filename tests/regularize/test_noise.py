"""Noise injection (file 004): inputs, weights and labels, each against what it must equal."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from optreg.errors import OptregTypeError, OptregValueError
from optreg.regularize import GaussianNoise, WeightNoise, gaussian_noise, label_noise, perturbed_weights


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def test_gaussian_noise_is_x_plus_std_randn_from_the_generator():
    """Oracle: x + std * torch.randn(generator) drawn from an identically seeded generator."""
    x = torch.randn(4, 3, dtype=torch.float64)
    ours = gaussian_noise(x, 0.3, generator=torch.Generator().manual_seed(5))
    ref = x + 0.3 * torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(ours, ref)
    xb, yb = GaussianNoise(0.3)(x, "labels", torch.Generator().manual_seed(5))
    assert torch.equal(xb, ref) and yb == "labels"
    assert pickle.loads(pickle.dumps(GaussianNoise(0.3))) == GaussianNoise(0.3)


def test_gaussian_noise_statistics():
    """Its mean and standard deviation over many draws are 0 and std (a 5-sigma band)."""
    x = torch.zeros(200_000, dtype=torch.float64)
    e = gaussian_noise(x, 0.5, generator=torch.Generator().manual_seed(0))
    assert abs(e.mean().item()) < 5 * 0.5 / 200_000**0.5
    assert e.std().item() == pytest.approx(0.5, rel=0.01)


def test_weight_noise_wrapper_equals_a_model_with_perturbed_weights():
    """Oracle: a copy of the model whose weights were set to theta + eps by hand (the same eps): same output,
    and its gradient equals the wrapper's gradient with respect to the unperturbed weights."""
    model = net()
    x = torch.randn(6, 3, dtype=torch.float64)
    wrapped = WeightNoise(model, 0.1, generator=torch.Generator().manual_seed(1)).train()
    out = wrapped(x)
    g = torch.Generator().manual_seed(1)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in (ref[0].weight, ref[2].weight):  # weights only, in parameter order
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    assert torch.allclose(out, ref(x), atol=1e-14)
    out.square().sum().backward()
    ref(x).square().sum().backward()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-12)
    assert torch.equal(wrapped.eval()(x), model(x))  # evaluation: no noise


def test_perturbed_weights_restores_bit_for_bit_and_keeps_the_perturbed_gradient():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, dtype=torch.float64)
    with perturbed_weights(model, 0.2, generator=torch.Generator().manual_seed(2)) as noise:
        assert not torch.equal(model[0].weight, before["0.weight"])
        assert torch.equal(model[0].bias, before["0.bias"])  # biases untouched by default
        assert torch.allclose(model[0].weight, before["0.weight"] + noise[0], atol=0)
        model(x).sum().backward()
        perturbed_output = model(x).detach()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model[0].weight.grad is not None
    assert not torch.allclose(perturbed_output, model(x))
    with pytest.raises(RuntimeError), perturbed_weights(model, 0.2):
        raise RuntimeError("inside")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["uniform", "other", "shuffle"])
def test_label_noise_changes_exactly_the_chosen_fraction(mode):
    y = torch.arange(10).repeat(30)  # 300 labels, 10 classes
    noisy = label_noise(y, 0.2, mode=mode, generator=torch.Generator().manual_seed(0))
    again = label_noise(y, 0.2, mode=mode, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)  # seeded
    changed = int((noisy != y).sum())
    assert changed <= 60
    if mode == "other":
        assert changed == 60
    if mode == "uniform":  # ~ 60 * 9/10 changed (a draw may return the original class)
        assert 40 <= changed <= 60
    if mode == "shuffle":  # class frequencies kept
        assert torch.equal(torch.bincount(noisy, minlength=10), torch.bincount(y, minlength=10))
    assert noisy.min() >= 0 and noisy.max() < 10


def test_full_shuffle_is_a_permutation_and_zero_fraction_is_the_identity():
    y = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(label_noise(y, 0.0), y)
    shuffled = label_noise(y, 1.0, mode="shuffle", generator=torch.Generator().manual_seed(0))
    assert torch.equal(shuffled.sort().values, y.sort().values)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: gaussian_noise(torch.zeros(2), -1.0), OptregValueError, r"gaussian_noise: std must be in \[0, inf\)"),
    (lambda: gaussian_noise(torch.zeros(2, dtype=torch.long), 1.0), OptregTypeError, "floating-point"),
    (lambda: label_noise(torch.tensor([0, 1]), 1.2), OptregValueError, r"label_noise: fraction must be in \[0, 1\]"),
    (lambda: label_noise(torch.tensor([0, 1]), 0.5, mode="flip"), OptregValueError, "label_noise: mode must be"),
    (lambda: label_noise(torch.tensor([0, 3]), 0.5, num_classes=2), OptregValueError, r"labels must be in \[0, 2\)"),
    (lambda: label_noise(torch.tensor([0.0, 1.0]), 0.5), OptregTypeError, "integer labels"),
    (lambda: WeightNoise(nn.Linear(2, 2), -0.1), OptregValueError, r"weight_noise: std must be in \[0, inf\)"),
])
def test_noise_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
