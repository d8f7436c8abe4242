"""Label smoothing against F.cross_entropy(label_smoothing=) and the chapter's closed form (section 7.7.6),
distillation against the KL divergence written out and Hinton et al.'s T^2 argument, FitNets hints against
their formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optreg.errors import OptregValueError
from optreg.regularize import (
    distillation_loss,
    hint_loss,
    hint_regressor,
    label_smoothing_cross_entropy,
    smooth_labels,
)


def logits_and_target(n=7, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64) * 3, torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35, 0.9])
def test_uniform_form_matches_torch_label_smoothing(eps):
    """Oracle: F.cross_entropy(label_smoothing=eps) (Szegedy et al.'s (1 - eps) y + eps / K), to 1e-6."""
    z, y = logits_and_target()
    ours = label_smoothing_cross_entropy(z, y, eps, form="uniform")
    assert torch.allclose(ours, F.cross_entropy(z, y, label_smoothing=eps), atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 0.95])
def test_chapter_form_matches_its_closed_form(eps):
    """Oracle: section 7.7.6's soft target [eps/(K-1), ..., 1 - eps, ..., eps/(K-1)], written out element by
    element, and -sum_k y~_k log softmax(z)_k averaged over the batch."""
    z, y = logits_and_target()
    n, k = z.shape
    total = 0.0
    for i in range(n):
        logp = [z[i, j].item() - math.log(sum(math.exp(z[i, m].item()) for m in range(k))) for j in range(k)]
        target = [1 - eps if j == y[i] else eps / (k - 1) for j in range(k)]
        total += -sum(t * lp for t, lp in zip(target, logp))
    ours = label_smoothing_cross_entropy(z, y, eps, form="chapter")
    assert ours.item() == pytest.approx(total / n, rel=1e-12)


def test_chapter_form_is_uniform_form_with_rescaled_eps():
    """The chapter's eps equals torch's label_smoothing eps * K / (K - 1) (for eps <= (K - 1) / K)."""
    z, y = logits_and_target(k=4)
    eps = 0.3
    ref = F.cross_entropy(z, y, label_smoothing=eps * 4 / 3)
    assert torch.allclose(label_smoothing_cross_entropy(z, y, eps), ref, atol=1e-12)


def test_chapter_form_on_spatial_logits_and_reductions():
    """(N, K, L) logits as F.cross_entropy takes them: per-position losses against the flattened closed form."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 5), generator=g)
    flat = label_smoothing_cross_entropy(z.permute(0, 2, 1).reshape(15, 4), y.reshape(15), 0.2, reduction="none")
    per = label_smoothing_cross_entropy(z, y, 0.2, reduction="none")
    assert per.shape == (3, 5) and torch.allclose(per.reshape(15), flat, atol=1e-14)
    assert torch.allclose(label_smoothing_cross_entropy(z, y, 0.2, reduction="sum"), flat.sum(), atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    k=st.integers(2, 12),
    eps=st.floats(0.0, 0.999),
    form=st.sampled_from(["chapter", "uniform"]),
    seed=st.integers(0, 99),
)
def test_smoothed_targets_sum_to_one_and_keep_the_argmax(k, eps, form, seed):
    """Property: every smoothed target is a distribution (>= 0, sums to 1); eps = 0 gives the one-hot."""
    y = torch.randint(0, k, (6,), generator=torch.Generator().manual_seed(seed))
    t = smooth_labels(y, k, eps, form).double()
    assert torch.all(t >= 0)
    assert torch.allclose(t.sum(-1), torch.ones(6, dtype=torch.float64), atol=1e-6)
    if eps == 0:
        assert torch.equal(t, F.one_hot(y, k).double())


def test_smooth_labels_closed_forms():
    y = torch.tensor([2])
    chapter = smooth_labels(y, 5, 0.2, "chapter")
    uniform = smooth_labels(y, 5, 0.2, "uniform")
    assert torch.allclose(chapter, torch.tensor([[0.05, 0.05, 0.8, 0.05, 0.05]]))
    assert torch.allclose(uniform, torch.tensor([[0.04, 0.04, 0.84, 0.04, 0.04]]))


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_label_smoothing_bad_eps(eps):
    z, y = logits_and_target()
    with pytest.raises(OptregValueError, match=rf"label_smoothing_cross_entropy: eps must be in \[0, 1\), got {eps}"):
        label_smoothing_cross_entropy(z, y, eps)


def test_label_smoothing_bad_form():
    z, y = logits_and_target()
    with pytest.raises(OptregValueError, match="form must be one of 'chapter', 'uniform', got 'hinton'"):
        label_smoothing_cross_entropy(z, y, 0.1, form="hinton")


# --------------------------------------------------------------------------------------- distillation


def test_distillation_loss_matches_kl_written_out():
    """Oracle: alpha T^2 (1/N) sum_n sum_k q_k (log q_k - log p_k) + (1 - alpha) CE, with q, p the softmaxes
    at temperature T written as exp / sum exp."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    t = torch.randn(6, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (6,), generator=g)
    T, alpha = 3.0, 0.7
    q = torch.exp(t / T) / torch.exp(t / T).sum(1, keepdim=True)
    p = torch.exp(s / T) / torch.exp(s / T).sum(1, keepdim=True)
    kl = (q * (q.log() - p.log())).sum(1).mean()
    hard = -(torch.log(torch.exp(s) / torch.exp(s).sum(1, keepdim=True))[torch.arange(6), y]).mean()
    expected = alpha * T**2 * kl + (1 - alpha) * hard
    assert distillation_loss(s, t, y, T=T, alpha=alpha).item() == pytest.approx(expected.item(), rel=1e-12)
    assert distillation_loss(s, t, None, T=T).item() == pytest.approx((T**2 * kl).item(), rel=1e-12)


def test_distillation_soft_gradient_is_independent_of_T_thanks_to_T_squared():
    """Hinton et al. (2015), sec. 2.1: for T large against zero-mean logits, d(T^2 KL)/dz_i -> (z_i - v_i) / (K N);
    without the T^2 factor the gradient would shrink as 1 / T^2."""
    g = torch.Generator().manual_seed(0)
    n, k = 5, 6
    v = torch.randn(n, k, generator=g, dtype=torch.float64)
    z0 = torch.randn(n, k, generator=g, dtype=torch.float64)
    v, z0 = v - v.mean(1, keepdim=True), z0 - z0.mean(1, keepdim=True)
    limit = (z0 - v) / (k * n)
    grads = {}
    for T in (10.0, 30.0, 100.0):
        z = z0.clone().requires_grad_(True)
        distillation_loss(z, v, None, T=T).backward()
        grads[T] = z.grad
    rel = {T: ((gr - limit).norm() / limit.norm()).item() for T, gr in grads.items()}
    for T, r in rel.items():  # the deviation is first order in 1 / T
        assert r < 1.0 / T
    assert rel[10.0] * 10 == pytest.approx(rel[100.0] * 100, rel=0.05)
    ratio = (grads[10.0].norm() / grads[100.0].norm()).item()
    assert ratio == pytest.approx(1.0, abs=0.1)  # without T^2 it would be (100 / 10)^2 = 100


def test_distillation_does_not_differentiate_the_teacher():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    distillation_loss(s, t, torch.tensor([0, 1, 2]), T=2.0, alpha=0.5).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"T": 0.0}, r"distillation_loss: T must be in \(0, inf\), got 0.0"),
    ({"T": -2}, r"distillation_loss: T must be in \(0, inf\), got -2"),
    ({"alpha": 1.5}, r"distillation_loss: alpha must be in \[0, 1\], got 1.5"),
])
def test_distillation_bad_input(kwargs, message):
    with pytest.raises(OptregValueError, match=message):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, **kwargs)


# ---------------------------------------------------------------------------------------------- hints


def test_hint_loss_formula_and_gradients():
    """Oracle: Romero et al. (2015) eq. 3, 1/2 ||u_h - r(v_g)||^2 per example (written as a loop), batch mean;
    the regressor and the student get gradients, the teacher none."""
    torch.manual_seed(0)
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    reg = nn.Linear(3, 5)
    expected = sum(0.5 * ((teacher[i] - reg(student[i])) ** 2).sum() for i in range(4)) / 4
    loss = hint_loss(student, teacher, reg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert student.grad is not None and reg.weight.grad is not None and teacher.grad is None


def test_hint_regressor_matches_the_teacher_shape():
    """FitNets' convolutional regressor: kernel (H_s - H_t + 1, W_s - W_t + 1) maps the student's map onto
    the teacher's; when the teacher's features are such a convolution of the student's, the regressor with
    those weights has hint loss 0."""
    torch.manual_seed(0)
    reg = hint_regressor((4, 8, 8), (6, 5, 5))
    assert isinstance(reg, nn.Conv2d) and reg.kernel_size == (4, 4)
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 5, 5)
    assert hint_loss(s, t, reg).ndim == 0
    assert isinstance(hint_regressor((3,), (7,)), nn.Linear)
    teacher_map = nn.Conv2d(4, 6, 4)
    t = teacher_map(s).detach()
    assert hint_loss(s, t, reg).item() > 0.1
    reg.load_state_dict(teacher_map.state_dict())
    assert hint_loss(s, t, reg).item() == 0.0


def test_hint_loss_shape_mismatch():
    with pytest.raises(OptregValueError, match=r"hint_loss: the projected student features must have the teacher's"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(OptregValueError, match="hint_regressor: the student's map"):
        hint_regressor((2, 3, 3), (2, 5, 5))
