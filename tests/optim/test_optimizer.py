"""The torch adapter's own behaviour (oracle: torch.optim's conventions)."""

from __future__ import annotations

import pytest
import torch

import optreg.optim as oo


@pytest.mark.parametrize("per_tensor", [False, True])
def test_parameter_without_gradient_is_skipped_like_torch(per_tensor, monkeypatch):
    """torch.optim skips params whose .grad is None; so does the adapter, and the others still match torch."""
    import optreg.optim.optimizer as adapter

    monkeypatch.setattr(adapter, "_PER_TENSOR_MIN_NUMEL", 0 if per_tensor else 1 << 40)
    torch.manual_seed(0)
    a1, b1 = torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)
    a2, b2 = a1.detach().clone().requires_grad_(True), b1.detach().clone().requires_grad_(True)
    ours = oo.create("momentum", [a1, b1], lr=0.1, momentum=0.9)
    ref = torch.optim.SGD([a2, b2], lr=0.1, momentum=0.9)
    for step in range(6):
        for a, b, opt in ((a1, b1, ours), (a2, b2, ref)):
            opt.zero_grad()
            loss = (a**2).sum() + ((b**2).sum() if step % 2 else 0.0)
            loss.backward()
            opt.step()
    assert torch.allclose(a1, a2) and torch.allclose(b1, b2)


def test_masked_state_is_stored_only_for_masked_parameters():
    w = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    b0 = b.detach().clone()
    tx = oo.chain(oo.masked(oo.scale_by_adam(), oo.weights_only), oo.scale_by_learning_rate(0.1))
    opt = oo.Optimizer([w, b], tx)
    (w.sum() + b.sum()).backward()
    opt.step()
    assert set(opt.state[w]) == {f"0.masked.{k}" for k in ("count", "mu", "nu", "beta1_power", "beta2_power")}
    assert b not in opt.state or not opt.state[b]
    # the bias took a plain SGD step: -0.1 * grad, with grad = 1
    assert torch.allclose(b.detach(), b0 - 0.1)


@pytest.mark.compile
def test_changing_lr_does_not_recompile():
    """Hyperparameters enter the compiled step as 0-d tensors: a new lr is a new value, not a new graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    w = torch.randn(8, requires_grad=True)
    opt = oo.create("adam", [w], compile=True, lr=0.1)
    for step in range(5):
        opt.param_groups[0]["lr"] = 0.1 / (step + 1)
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.compile
def test_compiled_step_follows_a_gradient_whose_strides_change():
    """The compiled step skips inductor's own size/stride asserts (dynamo's guards check the same): a gradient
    that turns non-contiguous midway must recompile, not be read with the old strides. Oracle: torch.optim.SGD."""
    torch.manual_seed(0)
    w1 = torch.randn(4, 3, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    ours = oo.create("momentum", [w1], compile=True, lr=0.1, momentum=0.9)
    ref = torch.optim.SGD([w2], lr=0.1, momentum=0.9)
    for step in range(5):
        for w, opt in ((w1, ours), (w2, ref)):
            g = torch.arange(12.0).reshape(4, 3) * (step + 1) + w.detach()
            w.grad = g.t().contiguous().t() if step >= 2 else g  # same values, column-major from step 2
            opt.step()
        assert torch.allclose(w1, w2, rtol=1e-6), step


@pytest.mark.compile
def test_compiled_and_eager_agree_with_zero_hyperparameter_turned_on_later():
    """A weight decay of 0 is compiled out; setting it later recompiles once and still matches eager."""
    torch.manual_seed(0)
    w1 = torch.randn(6, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    eager = oo.create("adam", [w1], lr=0.05)
    comp = oo.create("adam", [w2], compile=True, lr=0.05)
    for step in range(6):
        for w, opt in ((w1, eager), (w2, comp)):
            if step == 3:
                opt.param_groups[0]["weight_decay"] = 0.1
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
    assert torch.allclose(w1, w2, rtol=1e-6)


def test_closure_is_evaluated_and_its_loss_returned():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = oo.create("sgd", [w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    assert w.tolist() == pytest.approx([0.8, -1.6])


def test_repr_lists_groups_and_hyperparameters():
    opt = oo.create("adam", [torch.zeros(2, requires_grad=True)], lr=0.01)
    text = repr(opt)
    assert "Optimizer(adam)" in text and "lr=0.01" in text and "beta2=0.999" in text


def test_fixed_transform_optimizer_and_user_transform():
    """A user's own functional transform (returns new state tensors) also works: state is copied back."""
    from typing import NamedTuple

    class Count(NamedTuple):
        n: torch.Tensor

    def init(params):
        return Count(torch.zeros(()))

    def update(updates, state, params=None):
        n = state.n + 1  # functional: a new tensor
        return [-0.5 * u / n for u in updates], Count(n)

    w = torch.tensor([4.0], requires_grad=True)
    opt = oo.Optimizer([w], oo.Transform(init, update))
    for _ in range(3):
        opt.zero_grad()
        w.sum().backward()  # gradient 1
        opt.step()
    assert w.item() == pytest.approx(4.0 - 0.5 * (1 + 1 / 2 + 1 / 3))
    assert opt.state[w]["n"].item() == 3.0
