"""Tests of optreg.nn.norm (section 7.5).

Oracles: torch.nn.BatchNorm1d / 2d / 3d, torch.nn.LayerNorm, torch.nn.LocalResponseNorm and
torch.nn.utils.parametrizations.weight_norm (forward, backward, running statistics, eval mode, to 1e-6 in
float64); the chapter's closed forms computed directly (eqs. 7.43-7.45, 7.48-7.50, 7.52-7.53, 7.54, 7.55);
the whole training set's mean and unbiased variance computed directly layer by layer (for
recompute_batchnorm_statistics); torch.autograd.gradcheck for optreg's own ops (the layer-normalized
recurrent cell and net) and for the weight-norm parametrization.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from optreg import init
from optreg.errors import OptregError, OptregTypeError, OptregValueError
from optreg.nn.norm import (
    BatchNorm,
    LayerNorm,
    LayerNormRNN,
    LayerNormRNNCell,
    LocalResponseNorm,
    WeightNorm,
    recompute_batchnorm_statistics,
    weight_norm,
)

# torch's forward-mode AD (torch.func.jvp / hessian) scripts its decompositions once per process
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

D = torch.float64


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> None:
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize_affine(*mods: nn.Module, seed: int = 0) -> None:
    """Give every module the same random gain and shift (so gradients w.r.t. both are non-trivial)."""
    g = gen(seed)
    params = list(mods[0].parameters())
    values = [torch.randn(p.shape, generator=g, dtype=D) for p in params]
    with torch.no_grad():
        for m in mods:
            for p, v in zip(m.parameters(), values):
                p.copy_(v)


def forward_backward(module: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and parameter gradients under a fixed random upstream gradient."""
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    upstream = torch.randn(out.shape, generator=gen(seed), dtype=D)
    module.zero_grad(set_to_none=True)
    out.backward(upstream)
    grads = [p.grad for p in module.parameters()]
    return (out.detach(), x.grad, *grads)


def assert_same_pass(ours: nn.Module, ref: nn.Module, x: torch.Tensor, seed: int) -> None:
    a, b = forward_backward(ours, x, seed), forward_backward(ref, x, seed)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        close(u, v)


# ---------------------------------------------------------------------------------------- batch norm


TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
SHAPES = {2: (16, 3), 3: (6, 3, 5), 4: (4, 3, 5, 4), 5: (3, 3, 2, 3, 4)}


@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
@pytest.mark.parametrize("momentum", [0.1, None, 0.0, 1.0])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_batchnorm_matches_torch_train_and_eval(ndim: int, momentum: float | None, affine: bool, track: bool) -> None:
    """Oracle: torch.nn.BatchNorm1d / 2d / 3d: outputs, all gradients, running statistics, eval mode."""
    ours = BatchNorm(3, momentum=momentum, affine=affine, track_running_stats=track, dtype=D)
    ref = TORCH_BN[ndim](3, momentum=momentum, affine=affine, track_running_stats=track, dtype=D)
    if affine:
        randomize_affine(ours, ref)
    g = gen(ndim)
    for step in range(3):  # training: batch statistics, moving averages updated
        x = torch.randn(SHAPES[ndim], generator=g, dtype=D) * (step + 1) + step
        assert_same_pass(ours, ref, x, seed=step)
    for ba, bb in zip(ours.buffers(), ref.buffers()):
        close(ba.to(D), bb.to(D))
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    ours.eval()
    ref.eval()
    x = torch.randn(SHAPES[ndim], generator=g, dtype=D) * 2 - 1
    assert_same_pass(ours, ref, x, seed=9)


def test_batchnorm_closed_form_eqs_7_43_to_7_45_and_moving_average() -> None:
    """Train: (z - mu_B) / sqrt(sigma_B^2 + eps) * gamma + beta with the biased batch variance (7.44);
    the moving averages: r <- (1 - m) r + m * batch statistic (unbiased variance, torch's convention);
    eval: the same normalization with the moving averages in place of the batch statistics (7.42)."""
    eps, m = 1e-3, 0.3
    bn = BatchNorm(4, eps=eps, momentum=m, dtype=D)
    randomize_affine(bn, seed=1)
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    z = torch.randn(5, 4, 6, generator=gen(2), dtype=D) * 3 + 1  # (N, C, L): statistics over N and L
    flat = z.transpose(0, 1).reshape(4, -1)
    mu, var = flat.mean(1), ((flat - flat.mean(1, keepdim=True)) ** 2).mean(1)
    expected = (z - mu[:, None]) / torch.sqrt(var[:, None] + eps) * gamma[:, None] + beta[:, None]
    close(bn(z), expected)
    k = flat.shape[1]
    close(bn.running_mean, m * mu)
    close(bn.running_var, (1 - m) * torch.ones(4, dtype=D) + m * var * k / (k - 1))
    bn.eval()
    rm, rv = bn.running_mean[:, None], bn.running_var[:, None]
    close(bn(z), (z - rm) / torch.sqrt(rv + eps) * gamma[:, None] + beta[:, None])


def test_batchnorm_is_a_torch_batchnorm_with_torch_state_dict() -> None:
    ref = nn.BatchNorm2d(5, momentum=0.2)
    ref(torch.randn(4, 5, 3, 3))
    ours = BatchNorm(5, momentum=0.2)
    ours.load_state_dict(ref.state_dict())  # strict: the same keys
    assert isinstance(ours, nn.modules.batchnorm._BatchNorm)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert "BatchNorm(5, eps=1e-05, momentum=0.2" in repr(ours)


def test_batchnorm_bias_false_matches_torch() -> None:
    ours, ref = BatchNorm(3, bias=False, dtype=D), nn.BatchNorm1d(3, bias=False, dtype=D)
    assert ours.bias is None
    assert_same_pass(ours, ref, torch.randn(7, 3, generator=gen(3), dtype=D), seed=3)


# ---------------------------------------------------------------------------------------- layer norm


@pytest.mark.parametrize(("shape", "x_shape"), [(5, (4, 5)), ((3, 4), (2, 6, 3, 4)), ([2, 3, 3], (2, 2, 3, 3))])
@pytest.mark.parametrize(("affine", "bias"), [(True, True), (True, False), (False, False)])
def test_layernorm_matches_torch(shape: object, x_shape: tuple[int, ...], affine: bool, bias: bool) -> None:
    """Oracle: torch.nn.LayerNorm (outputs and gradients, train and eval alike)."""
    ours = LayerNorm(shape, eps=1e-4, elementwise_affine=affine, bias=bias, dtype=D)
    ref = nn.LayerNorm(shape, eps=1e-4, elementwise_affine=affine, bias=bias, dtype=D)
    if affine:
        randomize_affine(ours, ref, seed=4)
    x = torch.randn(x_shape, generator=gen(5), dtype=D) * 3 + 2
    assert_same_pass(ours, ref, x, seed=5)
    ours.eval()
    ref.eval()
    assert_same_pass(ours, ref, x, seed=6)
    assert ours.state_dict().keys() == ref.state_dict().keys()


def test_layernorm_closed_form_eqs_7_48_to_7_50() -> None:
    """Each sample over its n features: (z - mu) / sqrt(sigma^2 + eps) * gamma + beta, biased sigma^2."""
    ln = LayerNorm(6, eps=1e-3, dtype=D)
    randomize_affine(ln, seed=6)
    z = torch.randn(4, 6, generator=gen(7), dtype=D) * 5
    mu = z.sum(1, keepdim=True) / 6
    var = ((z - mu) ** 2).sum(1, keepdim=True) / 6
    close(ln(z), (z - mu) / torch.sqrt(var + 1e-3) * ln.weight.detach() + ln.bias.detach())
    close(ln(z[:1]), ln(z)[:1])  # no batch statistics: a batch of one is normalized the same way


# ----------------------------------------------------------------------------- local response norm


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("x_shape", [(2, 7, 5), (2, 7, 3, 4), (1, 7, 2, 2, 3)])
def test_lrn_torch_form_matches_torch(size: int, x_shape: tuple[int, ...]) -> None:
    """Oracle: torch.nn.LocalResponseNorm with the same arguments (drop-in)."""
    ours = LocalResponseNorm(size, alpha=0.03, beta=0.6, k=1.5)
    ref = nn.LocalResponseNorm(size, alpha=0.03, beta=0.6, k=1.5)
    x = torch.randn(x_shape, generator=gen(size), dtype=D) * 4
    assert_same_pass(ours, ref, x, seed=size)


def lrn_eq_7_55(y: torch.Tensor, n: int, k: float, alpha: float, beta: float) -> torch.Tensor:
    """Eq. (7.55) literally: channel p divided by (k + alpha * sum_{j=max(1,p-n/2)}^{min(P,p+n/2)} Y_j^2)^beta."""
    big_p = y.shape[1]
    out = torch.empty_like(y)
    for p in range(1, big_p + 1):
        lo, hi = max(1, p - n // 2), min(big_p, p + n // 2)
        s = sum(y[:, j - 1] ** 2 for j in range(lo, hi + 1))
        out[:, p - 1] = y[:, p - 1] / (k + alpha * s) ** beta
    return out


@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_lrn_chapter_form_matches_eq_7_55(n: int) -> None:
    """Oracle: eq. (7.55) computed channel by channel (the window p - n/2 ... p + n/2, alpha undivided)."""
    y = torch.relu(torch.randn(3, 7, 4, 4, generator=gen(10 + n), dtype=D)) * 20
    ours = LocalResponseNorm(n, alpha=1e-3, beta=0.75, k=2.0, form="chapter")
    close(ours(y), lrn_eq_7_55(y, n, 2.0, 1e-3, 0.75))
    x = y.clone().requires_grad_(True)
    x2 = y.clone().requires_grad_(True)
    ours(x).square().sum().backward()
    lrn_eq_7_55(x2, n, 2.0, 1e-3, 0.75).square().sum().backward()
    close(x.grad, x2.grad)


def test_lrn_defaults_are_alexnets_and_the_mapping_to_torch() -> None:
    """Defaults n=5, k=2, alpha=1e-4, beta=0.75 (AlexNet); AlexNet's layer (form="chapter") equals
    torch.nn.LocalResponseNorm(5, alpha=5e-4, k=2): torch divides alpha by n."""
    lrn = LocalResponseNorm()
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k, lrn.form) == (5, 1e-4, 0.75, 2.0, "torch")
    y = torch.relu(torch.randn(2, 9, 5, 5, generator=gen(11), dtype=D)) * 50
    close(LocalResponseNorm(form="chapter")(y), lrn_eq_7_55(y, 5, 2.0, 1e-4, 0.75))
    close(LocalResponseNorm(form="chapter")(y), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(y))
    close(LocalResponseNorm()(y), nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(y))
    assert not torch.allclose(LocalResponseNorm()(y), LocalResponseNorm(form="chapter")(y))
    assert isinstance(lrn, nn.LocalResponseNorm) and "form='torch'" in repr(lrn)


# ------------------------------------------------------------------------------------------ weight norm


WN_CASES = [
    (lambda: nn.Linear(6, 4), (5, 6), 0),
    (lambda: nn.Linear(6, 4), (5, 6), None),
    (lambda: nn.Conv1d(3, 4, 3), (2, 3, 7), 0),
    (lambda: nn.Conv2d(3, 4, 3, groups=1), (2, 3, 6, 6), 0),
    (lambda: nn.Conv2d(4, 6, 3, groups=2), (2, 4, 5, 5), 0),
    (lambda: nn.ConvTranspose2d(3, 4, 3), (2, 3, 4, 4), 1),
    (lambda: nn.Linear(6, 4), (5, 6), 1),
]


@pytest.mark.parametrize(("make", "x_shape", "dim"), WN_CASES)
def test_weight_norm_matches_torch_parametrization(make, x_shape: tuple[int, ...], dim: int | None) -> None:
    """Oracle: torch.nn.utils.parametrizations.weight_norm: same (g, v) shapes and state_dict keys, outputs and
    gradients of g, v, bias and the input, before and after an SGD step on (g, v)."""
    torch.manual_seed(12)
    base = make().to(D)
    ours, ref = weight_norm(copy.deepcopy(base), dim=dim), torch_weight_norm(copy.deepcopy(base), dim=dim)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert a.shape == b.shape
        close(a, b)
    close(ours.weight, base.weight)  # registering leaves the weight unchanged: g = ||W_i||, v = W
    x = torch.randn(x_shape, generator=gen(13), dtype=D)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.5)
    opt_b = torch.optim.SGD(ref.parameters(), lr=0.5)
    for step in range(2):
        assert_same_pass(ours, ref, x, seed=step)
        opt_a.step()
        opt_b.step()
    close(ours.weight, ref.weight)
    ours.load_state_dict(ref.state_dict())


def test_weight_norm_closed_form_eq_7_54() -> None:
    """W_i = g_i v_i / ||v_i||: each row has norm |g_i| and the direction of v_i, whatever the scale of v."""
    lin = weight_norm(nn.Linear(5, 3).to(D))
    pz = lin.parametrizations.weight
    with torch.no_grad():
        pz.original0.copy_(torch.tensor([[2.0], [-0.5], [3.0]], dtype=D))
        pz.original1.copy_(torch.randn(3, 5, generator=gen(14), dtype=D) * 7)
    g, v = pz.original0.detach(), pz.original1.detach()
    expected = torch.stack([g[i, 0] * v[i] / torch.sqrt((v[i] ** 2).sum()) for i in range(3)])
    close(lin.weight, expected)
    close(lin.weight.norm(dim=1), g.abs().squeeze(1))
    with torch.no_grad():
        pz.original1.mul_(10.0)
    close(lin.weight, expected)  # invariant to the length of v


@pytest.mark.parametrize(
    ("shape", "dim"), [((4, 3), 0), ((4, 3, 2), 0), ((4, 3, 2), 2), ((4, 3, 2), 1), ((4, 3), None), ((5,), 0)]
)
def test_weight_norm_gradcheck_and_gradgradcheck(shape: tuple[int, ...], dim: int | None) -> None:
    """torch.autograd.gradcheck and gradgradcheck of the parametrization W(g, v): the fused path (dim 0 or
    the last one) and the plain one (a middle dim, the whole tensor)."""
    v = torch.randn(shape, generator=gen(15), dtype=D, requires_grad=True)
    g = (WeightNorm(dim).right_inverse(v.detach())[0] * 1.3).requires_grad_(True)
    assert torch.autograd.gradcheck(WeightNorm(dim), (g, v))
    assert torch.autograd.gradgradcheck(WeightNorm(dim), (g, v))


@pytest.mark.parametrize("dim", [0, 1])
def test_weight_norm_hessian_vector_product_matches_finite_differences(dim: int) -> None:
    """Oracle: central differences of the gradient, (grad(theta + h u) - grad(theta - h u)) / 2h, for the
    loss of a weight-normalized Linear as a function of (g, v). (torch 2.13's fused weight_norm gets this
    wrong for dim 0: its double backward is broken; optreg's runs a differentiable backward under
    create_graph.)"""
    torch.manual_seed(16)
    lin = weight_norm(nn.Linear(4, 3).to(D), dim=dim)
    x, y = torch.randn(6, 4, generator=gen(16), dtype=D), torch.randn(6, 3, generator=gen(17), dtype=D)
    params = [lin.parametrizations.weight.original0, lin.parametrizations.weight.original1]
    direction = [torch.randn(p.shape, generator=gen(18 + i), dtype=D) for i, p in enumerate(params)]

    def grads(create_graph: bool = False) -> tuple[torch.Tensor, ...]:
        loss = torch.tanh(lin(x) - y).square().sum()
        return torch.autograd.grad(loss, params, create_graph=create_graph)

    first = grads(create_graph=True)
    hvp = torch.autograd.grad(sum((a * u).sum() for a, u in zip(first, direction)), params)
    h, shifted = 1e-5, []
    for sign in (1, -1):
        with torch.no_grad():
            for p, u in zip(params, direction):
                p.add_(sign * h * u)
        shifted.append(grads())
        with torch.no_grad():
            for p, u in zip(params, direction):
                p.sub_(sign * h * u)
    for a, plus, minus in zip(hvp, *shifted):
        close(a, (plus - minus) / (2 * h))


def test_weight_norm_under_torch_func_matches_eq_7_54_written_out() -> None:
    """torch.func.hessian (forward-over-reverse), jvp and vmap through the parametrization equal the same
    transforms of W = g v / ||v|| written with plain torch ops (eq. 7.54), which autograd differentiates."""
    torch.manual_seed(19)
    lin = weight_norm(nn.Linear(4, 3).to(D))
    x = torch.randn(5, 4, generator=gen(19), dtype=D)
    params = {k: p.detach() for k, p in lin.named_parameters()}

    def eq_7_54(p: dict[str, torch.Tensor]) -> torch.Tensor:
        g, v = p["parametrizations.weight.original0"], p["parametrizations.weight.original1"]
        return torch.tanh(x @ (g * v / v.norm(dim=1, keepdim=True)).T + p["bias"]).square().sum()

    def ours(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tanh(torch.func.functional_call(lin, p, (x,))).square().sum()

    def flat(tree: object) -> torch.Tensor:
        return torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(tree)])

    close(flat(torch.func.hessian(ours)(params)), flat(torch.func.hessian(eq_7_54)(params)))
    tangent = {k: torch.randn(p.shape, generator=gen(20), dtype=D) for k, p in params.items()}
    close(torch.func.jvp(ours, (params,), (tangent,))[1], torch.func.jvp(eq_7_54, (params,), (tangent,))[1])
    batched = torch.func.vmap(lambda xi: torch.func.functional_call(lin, params, (xi,)))(x.unsqueeze(1))
    close(batched.squeeze(1), lin(x).detach())


def test_init_apply_reaches_a_weight_normalized_layer() -> None:
    """optreg.init.apply draws W and assigns it through the parametrization (LeCun normal: var 1/fan_in)."""
    lin = weight_norm(nn.Linear(400, 300))
    init.apply(lin, "lecun_normal", generator=gen(17))
    assert abs(lin.weight.var().item() * 400 - 1) < 0.03  # 120k draws: the sample variance is within ~1%
    close(lin.parametrizations.weight.original0.detach().squeeze(1), lin.weight.detach().norm(dim=1))


# ------------------------------------------------------------------------------ layer-normalized RNN


def ln_rnn_step(x, h, w, u, gamma, beta, eps, f=torch.tanh):
    """Eqs. (7.52)-(7.53) directly: z = U h + W x; h' = f(gamma (z - mu) / sqrt(sigma^2 + eps) + beta)."""
    z = h @ u.T + x @ w.T
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    return f((z - mu) / torch.sqrt(var + eps) * gamma + beta)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_layernorm_rnn_cell_closed_form_eqs_7_52_7_53(nonlinearity: str) -> None:
    torch.manual_seed(18)
    cell = LayerNormRNNCell(3, 5, nonlinearity, eps=1e-4, dtype=D)
    randomize_affine(cell.norm, seed=18)
    x = torch.randn(4, 3, generator=gen(19), dtype=D)
    h = torch.randn(4, 5, generator=gen(20), dtype=D)
    f = torch.tanh if nonlinearity == "tanh" else torch.relu
    w, u, gamma, beta = cell.ih.weight, cell.hh.weight, cell.norm.weight, cell.norm.bias
    close(cell(x, h), ln_rnn_step(x, h, w, u, gamma, beta, 1e-4, f))
    close(cell(x), ln_rnn_step(x, torch.zeros(4, 5, dtype=D), w, u, gamma, beta, 1e-4, f))
    close(cell(x[0], h[0]), cell(x, h)[0])  # unbatched input, as torch.nn.RNNCell


def test_layernorm_rnn_cell_gradcheck() -> None:
    """gradcheck of the cell w.r.t. the input, the state and every parameter (through functional_call)."""
    torch.manual_seed(21)
    cell = LayerNormRNNCell(2, 3, dtype=D)
    randomize_affine(cell.norm, seed=21)
    names = [n for n, _ in cell.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in cell.parameters())
    x = torch.randn(2, 2, generator=gen(22), dtype=D, requires_grad=True)
    h = torch.randn(2, 3, generator=gen(23), dtype=D, requires_grad=True)

    def fn(x, h, *ps):
        return torch.func.functional_call(cell, dict(zip(names, ps)), (x, h))

    assert torch.autograd.gradcheck(fn, (x, h, *params))


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.05, 20.0), seed=st.integers(0, 10_000))
def test_layernorm_rnn_cell_is_invariant_to_rescaling_its_weights(scale: float, seed: int) -> None:
    """LN(c z) = LN(z) for c > 0: scaling W and U together leaves h_t unchanged (up to eps)."""
    torch.manual_seed(seed)
    cell = LayerNormRNNCell(3, 4, eps=1e-12, dtype=D)
    x = torch.randn(2, 3, dtype=D)
    h = torch.randn(2, 4, dtype=D)
    before = cell(x, h)
    with torch.no_grad():
        cell.ih.weight.mul_(scale)
        cell.hh.weight.mul_(scale)
    close(cell(x, h), before)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layernorm_rnn_is_its_cells_stepped_in_torchs_layout(bidirectional: bool, batch_first: bool) -> None:
    """Oracle: the cells stepped by hand (the backward direction over the reversed sequence, layer 2 reading
    both directions of layer 1), h_n in torch.nn.RNN's (layers * directions, N, H) layout."""
    torch.manual_seed(24)
    net = LayerNormRNN(2, 3, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, dtype=D)
    x = torch.randn(4, 5, 2, generator=gen(25), dtype=D)  # (N, T, F)
    hx = torch.randn(2 * (2 if bidirectional else 1), 4, 3, generator=gen(26), dtype=D)
    out, h_n = net(x if batch_first else x.transpose(0, 1), hx)
    if not batch_first:
        out = out.transpose(0, 1)
    dirs = 2 if bidirectional else 1
    layer_in, finals = x, []
    for layer in range(2):
        seqs = []
        for d in range(dirs):
            cell, h = net.cells[layer * dirs + d], hx[layer * dirs + d]
            steps = list(range(5)) if d == 0 else list(range(4, -1, -1))
            states = {}
            for t in steps:
                h = cell(layer_in[:, t], h)
                states[t] = h
            seqs.append(torch.stack([states[t] for t in range(5)], 1))
            finals.append(h)
        layer_in = torch.cat(seqs, 2)
    close(out, layer_in)
    close(h_n, torch.stack(finals))
    assert out.shape == (4, 5, 3 * dirs) and h_n.shape == (2 * dirs, 4, 3)


def test_layernorm_rnn_gradcheck_and_dropout_between_layers() -> None:
    torch.manual_seed(27)
    net = LayerNormRNN(2, 3, num_layers=2, bidirectional=True, batch_first=True, dtype=D)
    x = torch.randn(2, 3, 2, generator=gen(28), dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: net(t)[0], (x,))
    drop = LayerNormRNN(2, 3, num_layers=2, dropout=0.5, batch_first=True, dtype=D)
    torch.manual_seed(29)
    a = drop(x)[0]
    torch.manual_seed(30)
    assert not torch.equal(a, drop(x)[0])  # training: a new dropout mask between the layers
    drop.eval()
    assert torch.equal(drop(x)[0], drop(x)[0])


# --------------------------------------------------------------------------- recompute_batchnorm_statistics


def bn_net() -> nn.Sequential:
    """BatchNorms (optreg's and torch's) on (N, C, L) and (N, C), none of them first, with dropout between."""
    torch.manual_seed(31)
    net = nn.Sequential(
        nn.Linear(6, 4 * 10), nn.Unflatten(1, (4, 10)), BatchNorm(4), nn.ReLU(),          # 2: ours, (N, C, L)
        nn.Conv1d(4, 3, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Dropout(0.3), nn.Flatten(),  # 5: torch's
        nn.Linear(24, 5), BatchNorm(5, momentum=None), nn.ReLU(), nn.Linear(5, 2),        # 10: ours, (N, C)
    ).to(D)  # fmt: skip
    net.train()
    x = torch.randn(64, 6, generator=gen(32), dtype=D)
    for _ in range(3):  # some moving averages to replace
        net(x * 2 + 1)
    return net


def train_data(n: int = 103) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(33)
    return torch.randn(n, 6, generator=g, dtype=D) * 1.5 + 0.5, torch.randint(0, 2, (n,), generator=g)


def exact_statistics(net: nn.Sequential, x: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The oracle: layer by layer, the eval-mode input of each batch norm over the whole set at once (the
    earlier ones already set), its per-channel mean and unbiased variance computed directly."""
    ref = copy.deepcopy(net).eval()
    stats = {}
    for i, layer in enumerate(ref):
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                z = ref[:i](x)
            flat = z.transpose(0, 1).reshape(z.shape[1], -1)
            mean = flat.mean(1)
            var = ((flat - mean[:, None]) ** 2).sum(1) / (flat.shape[1] - 1)
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            stats[i] = (mean, var)
    return stats


def test_recompute_gives_the_whole_sets_statistics_with_uneven_batches() -> None:
    """Oracle: each layer's statistics computed directly over the whole set (103 examples, a DataLoader of
    batches 32, 32, 32, 7); torch's update_bn (per-batch averages, train-mode inputs) misses them."""
    net = bn_net()
    x, y = train_data()
    expected = exact_statistics(net, x)
    swa = copy.deepcopy(net)
    tracked = [int(b.num_batches_tracked) for b in net if hasattr(b, "num_batches_tracked")]
    out = recompute_batchnorm_statistics(net, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    assert out is net
    for i, (mean, var) in expected.items():
        close(net[i].running_mean, mean, 1e-9)
        close(net[i].running_var, var, 1e-9)
    assert [int(b.num_batches_tracked) for b in net if hasattr(b, "num_batches_tracked")] == tracked  # left alone
    update_bn(DataLoader(TensorDataset(x, y), batch_size=32), swa)
    for i, (_, var) in expected.items():
        assert (swa[i].running_var - var).abs().max() > 1e-3


def test_recompute_same_result_for_every_form_of_data() -> None:
    """A tensor (any batch_size), an (x, y) split, a Split-like object, a list of uneven batches, a one-shot
    generator of (x, y) batches and a DataLoader all give the same statistics."""
    x, y = train_data()
    base = bn_net()
    expected = exact_statistics(base, x)
    pieces = [x[:50], x[50:51], x[51:90], x[90:]]
    forms = [
        x,
        (x, y),
        types.SimpleNamespace(x=x, y=y),
        pieces,
        ((p, None) for p in pieces),
        DataLoader(TensorDataset(x), batch_size=10),
    ]
    for data in forms:
        net = copy.deepcopy(base)
        recompute_batchnorm_statistics(net, data, batch_size=17)
        for i, (mean, var) in expected.items():
            close(net[i].running_mean, mean, 1e-9)
            close(net[i].running_var, var, 1e-9)


class Wrapped(nn.Module):
    """bn_net, then a batch norm without running statistics; one more batch norm registered but never called."""

    def __init__(self) -> None:
        super().__init__()
        self.body = bn_net()
        self.untracked = BatchNorm(2, track_running_stats=False).to(D)
        self.unused = BatchNorm(3).to(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.untracked(self.body(x))


def test_recompute_restores_modes_and_leaves_other_layers_alone() -> None:
    net = Wrapped()
    with torch.no_grad():
        net.unused.running_mean.fill_(3.0)
    net.body[7].eval()  # a dropout layer already in eval mode stays so; the rest stays in train mode
    modes = {name: m.training for name, m in net.named_modules()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recompute_batchnorm_statistics(net, train_data()[0])
    assert {name: m.training for name, m in net.named_modules()} == modes
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"body.{i}.{b}" for i in (2, 5, 10) for b in ("running_mean", "running_var")}
    plain = nn.Sequential(nn.Linear(2, 2))
    assert recompute_batchnorm_statistics(plain, torch.randn(4, 2)) is plain


def test_recompute_pools_the_inputs_of_a_batchnorm_called_twice() -> None:
    """A shared batch norm applied to two (independent) inputs gets the statistics of both together."""

    class Siamese(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.bn = nn.Linear(3, 4), nn.Linear(3, 4), BatchNorm(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.a(x)) + self.bn(self.b(x))

    torch.manual_seed(34)
    net = Siamese().to(D)
    x = torch.randn(50, 3, generator=gen(35), dtype=D)
    recompute_batchnorm_statistics(net, x, batch_size=16)
    with torch.no_grad():
        z = torch.cat([net.a(x), net.b(x)])
    close(net.bn.running_mean, z.mean(0), 1e-9)
    close(net.bn.running_var, z.var(0), 1e-9)


def test_recompute_bad_input() -> None:
    net = bn_net()
    with pytest.raises(OptregTypeError, match="model must be a torch.nn.Module"):
        recompute_batchnorm_statistics("net", torch.randn(4, 6))
    with pytest.raises(OptregTypeError, match="data must be a tensor, an \\(x, y\\) split or an iterable"):
        recompute_batchnorm_statistics(net, 3.0)
    with pytest.raises(OptregTypeError, match="each batch must be a tensor"):
        recompute_batchnorm_statistics(net, [[1.0, 2.0]])
    with pytest.raises(OptregValueError, match="data has no batches"):
        recompute_batchnorm_statistics(net, [])
    with pytest.raises(OptregValueError, match="batch_size must be an integer >= 1, got 0"):
        recompute_batchnorm_statistics(net, torch.randn(4, 6), batch_size=0)
    with pytest.raises(OptregValueError, match="needs at least 2 values per channel for a variance, got 1"):
        recompute_batchnorm_statistics(nn.Sequential(nn.Linear(6, 3), BatchNorm(3)).to(D), torch.randn(1, 6, dtype=D))


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BatchNorm(0), "BatchNorm: num_features must be an integer >= 1, got 0"),
        (lambda: BatchNorm(2.5), "BatchNorm: num_features must be an integer >= 1, got 2.5"),
        (lambda: BatchNorm(4, eps=0.0), r"BatchNorm: eps must be in \(0, inf\), got 0.0"),
        (lambda: BatchNorm(4, eps=-1e-5), r"BatchNorm: eps must be in \(0, inf\), got -1e-05"),
        (lambda: BatchNorm(4, momentum=1.5), r"BatchNorm: momentum must be in \[0, 1\], got 1.5"),
        (lambda: BatchNorm(4, momentum=-0.1), r"BatchNorm: momentum must be in \[0, 1\], got -0.1"),
        (lambda: BatchNorm(4, affine="yes"), "BatchNorm: affine must be true or false, got 'yes'"),
        (lambda: LayerNorm(0), "LayerNorm: normalized_shape must be an integer >= 1 or a non-empty list"),
        (lambda: LayerNorm([3, 0]), r"LayerNorm: normalized_shape must be .*got \[3, 0\]"),
        (lambda: LayerNorm([]), r"LayerNorm: normalized_shape must be .*got \[\]"),
        (lambda: LayerNorm(4, eps=0), r"LayerNorm: eps must be in \(0, inf\), got 0"),
        (lambda: LocalResponseNorm(0), "LocalResponseNorm: size must be an integer >= 1, got 0"),
        (lambda: LocalResponseNorm(5, alpha=-1.0), r"LocalResponseNorm: alpha must be in \[0, inf\), got -1.0"),
        (lambda: LocalResponseNorm(5, k=0.0), r"LocalResponseNorm: k must be in \(0, inf\), got 0.0"),
        (lambda: LocalResponseNorm(5, form="alexnet"), "form must be one of 'torch', 'chapter', got 'alexnet'"),
        (lambda: weight_norm(nn.Linear(3, 2), name="kernel"), "weight_norm: name must name a weight tensor .*'kernel'"),
        (lambda: weight_norm(nn.Linear(3, 2), dim=2), r"dim must be None .* in \[0, 2\) .*\(2, 3\), got 2"),
        (lambda: weight_norm(nn.Linear(3, 2), dim=-1), "torch reads dim=-1 as the whole tensor|got -1"),
        (lambda: weight_norm("linear"), "weight_norm: module must be a torch.nn.Module, got str"),
        (lambda: LayerNormRNNCell(0, 3), "LayerNormRNNCell: input_size must be an integer >= 1, got 0"),
        (lambda: LayerNormRNNCell(2, 3, "sigmoid"), "nonlinearity must be one of 'tanh', 'relu', got 'sigmoid'"),
        (lambda: LayerNormRNN(2, 3, dropout=1.0), r"LayerNormRNN: dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, match: str) -> None:
    with pytest.raises(OptregError, match=match):
        make()


@pytest.mark.parametrize(
    ("module", "x_shape", "match"),
    [
        (BatchNorm(4), (8, 3), r"BatchNorm: input must be \(N, 4\), .* \(num_features=4\), got shape \(8, 3\)"),
        (BatchNorm(4), (8,), r"got shape \(8,\)"),
        (BatchNorm(4), (2, 4, 3, 3, 3, 3), r"got shape \(2, 4, 3, 3, 3, 3\)"),
        (BatchNorm(4), (1, 4), "batch statistics need more than 1 value per channel"),
        (BatchNorm(4, track_running_stats=False).eval(), (1, 4, 1), "need more than 1 value per channel"),
        (
            LayerNorm([3, 4]),
            (2, 4, 3),
            r"LayerNorm: input must end in normalized_shape \(3, 4\), got shape \(2, 4, 3\)",
        ),
        (LocalResponseNorm(), (8, 6), r"LocalResponseNorm: input must be \(N, C, L\).*got shape \(8, 6\)"),
        (LayerNormRNNCell(2, 3), (4, 3), r"LayerNormRNNCell: input must be \(N, 2\) or \(2,\), got shape \(4, 3\)"),
        (LayerNormRNN(2, 3), (4, 2), r"LayerNormRNN: input must be \(T, N, F\) with F = 2, got shape \(4, 2\)"),
    ],
)
def test_input_that_does_not_fit_the_layer_is_refused(module: nn.Module, x_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(OptregValueError, match=match):
        module(torch.randn(x_shape))


def test_bad_recurrent_state_shapes() -> None:
    with pytest.raises(OptregValueError, match=r"hx must be \(4, 3\) for this input, got shape \(3, 3\)"):
        LayerNormRNNCell(2, 3)(torch.randn(4, 2), torch.randn(3, 3))
    with pytest.raises(OptregValueError, match=r"LayerNormRNN: hx must be \(2, 4, 3\), got shape \(1, 4, 3\)"):
        LayerNormRNN(2, 3, bidirectional=True, batch_first=True)(torch.randn(4, 5, 2), torch.randn(1, 4, 3))
