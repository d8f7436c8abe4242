"""Gradient clipping (7.23, 7.24) against torch.nn.utils, and the bound as a property for all inputs."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

import optreg.optim as oo


def _grads(seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) * scale for s in [(4, 3), (3,), (2, 2, 2)]]


def _apply(tx, grads):
    out, _ = tx.update(grads, tx.init(grads), grads)
    return out


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_by_global_norm_matches_torch_clip_grad_norm(max_norm):
    grads = _grads(0, scale=3.0)
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    for ours, p in zip(_apply(oo.clip_by_global_norm(max_norm), grads), params):
        assert torch.allclose(ours, p.grad, rtol=1e-12)


def test_clip_by_value_matches_torch_clip_grad_value():
    grads = _grads(1, scale=2.0)
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_value_(params, 0.5)
    for ours, p in zip(_apply(oo.clip(0.5), grads), params):
        assert torch.equal(ours, p.grad)


def test_clip_by_value_asymmetric_interval_is_eq_7_23():
    g = [torch.tensor([-3.0, -0.5, 0.25, 4.0])]
    (out,) = _apply(oo.clip(1.0, low=-0.25), g)
    assert out.tolist() == [-0.25, -0.25, 0.25, 1.0]


def test_clip_by_norm_clips_each_tensor_to_its_bound():
    """Eq. 7.24 per tensor: ||g|| > b -> b g/||g||, else unchanged (the test is on ||g||, not ||g||^2)."""
    small = torch.tensor([0.3, 0.4])  # norm 0.5
    big = torch.tensor([3.0, 4.0])  # norm 5
    out_small, out_big = _apply(oo.clip_by_norm(0.6), [small, big])
    assert torch.equal(out_small, small)  # 0.5 <= 0.6 although ||g||^2 = 0.25 < 0.6 either way
    assert torch.allclose(out_big, big * 0.6 / (5.0 + 1e-6))
    # the erratum case: ||g|| = 0.7 > b = 0.6 but ||g||^2 = 0.49 < 0.6 -- must be clipped
    (out,) = _apply(oo.clip_by_norm(0.6), [torch.tensor([0.7, 0.0])])
    assert out[0].item() == pytest.approx(0.6, rel=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40),
    max_norm=st.floats(1e-3, 1e3),
)
def test_clipped_global_norm_never_exceeds_bound(values, max_norm):
    g = torch.tensor(values, dtype=torch.float64)
    grads = [g[: len(values) // 2], g[len(values) // 2 :]]
    clipped = _apply(oo.clip_by_global_norm(max_norm), grads)
    assert oo.global_norm(clipped).item() <= max_norm
    # and clipping only ever scales down, never changes direction
    assert oo.global_norm(clipped).item() <= oo.global_norm(grads).item() + 1e-12


def test_adaptive_clip_threshold_follows_running_average_of_norms():
    """Threshold b_t = factor * bias-corrected EMA of the clipped norms; a spike is clipped to it."""
    factor, beta = 2.0, 0.5
    tx = oo.clip_by_adaptive_norm(factor=factor, beta=beta)
    state = tx.init([torch.zeros(2)])
    avg, t = 0.0, 0
    for norm in [1.0, 1.0, 1.0, 50.0, 1.0]:
        g = [torch.tensor([norm, 0.0], dtype=torch.float64)]
        (out,), state = tx.update(g, state, None)
        threshold = math.inf if t == 0 else factor * avg / (1 - beta**t)
        expected = min(norm, threshold / (1 + 1e-6 / norm)) if threshold < norm else norm
        assert out[0].item() == pytest.approx(expected, rel=1e-9)
        avg = beta * avg + (1 - beta) * min(norm, threshold)
        t += 1
    assert state.norm.item() == pytest.approx(1.0)


def test_clipping_composes_in_an_optimizer_chain():
    """clip_by_global_norm + SGD equals torch's clip_grad_norm_ followed by torch.optim.SGD."""
    torch.manual_seed(0)
    w1 = torch.randn(5, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    ours = oo.Optimizer([w1], oo.chain(oo.clip_by_global_norm(0.1), oo.sgd(lr=0.5)))
    ref = torch.optim.SGD([w2], lr=0.5)
    for _ in range(5):
        for w, opt in ((w1, ours), (w2, ref)):
            opt.zero_grad()
            (w**4).sum().backward()
            if opt is ref:
                torch.nn.utils.clip_grad_norm_([w2], 0.1)
            opt.step()
    assert torch.allclose(w1, w2, rtol=1e-6)
