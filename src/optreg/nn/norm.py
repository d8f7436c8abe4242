r"""Layer-wise normalization (section 7.5): batch, layer, weight and local response normalization.

Every module here is a drop-in for its torch counterpart (same constructor arguments, same numbers, same
``state_dict`` keys) and runs torch's own kernels (``F.batch_norm``, ``F.layer_norm``,
``F.local_response_norm``) where the math is the same; what optreg adds is the chapter's reading of each
(equations in the docstrings), one module per idea where torch splits by input rank (:class:`BatchNorm`
for ``(N, C)``, ``(N, C, L)`` and ``(N, C, H, W)``), input checks with clear messages, the chapter's form of
LRN, a layer-normalized recurrent cell (eqs. 7.52-7.53, which torch lacks), and
:func:`recompute_batchnorm_statistics`, the exact whole-training-set statistics the chapter asks for after
training.

- :class:`BatchNorm`: eqs. (7.42)-(7.47), Ioffe & Szegedy (2015).
- :class:`LayerNorm`: eqs. (7.48)-(7.51), Ba, Kiros & Hinton (2016).
- :class:`LayerNormRNNCell` / :class:`LayerNormRNN`: eqs. (7.52)-(7.53).
- :func:`weight_norm`: eq. (7.54), Salimans & Kingma (2016).
- :class:`LocalResponseNorm`: eqs. (7.55)-(7.56), Krizhevsky, Sutskever & Hinton (2012).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from optreg._checks import check_choice, check_int, check_nonneg, check_number, check_positive, check_range
from optreg.errors import OptregTypeError, OptregValueError

__all__ = [
    "BatchNorm",
    "LayerNorm",
    "LayerNormRNN",
    "LayerNormRNNCell",
    "LocalResponseNorm",
    "WeightNorm",
    "recompute_batchnorm_statistics",
    "weight_norm",
]


def _check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptregValueError(f"{owner}: {name} must be true or false, got {value!r}")
    return value


# -------------------------------------------------------------------------------------- batch normalization


class BatchNorm(_BatchNorm):
    r"""Batch normalization of each feature / channel over the mini-batch, eqs. (7.42)-(7.47).

    In training, each channel :math:`c` of the net input :math:`z` is normalized by the mini-batch's
    statistics (over the batch and, for feature maps, every position), then scaled and shifted:

    .. math::
        \mu_B = \frac1K \sum_k z^{(k)}\ (7.43), \qquad
        \sigma_B^2 = \frac1K \sum_k (z^{(k)} - \mu_B)^2\ (7.44), \qquad
        \hat z = \frac{z - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} \odot \gamma + \beta\ (7.45).

    In evaluation the moving averages ``running_mean`` / ``running_var`` stand in for
    :math:`\mathbb E[z]`, :math:`\mathrm{Var}[z]` of eq. (7.42): ``r <- (1 - momentum) r + momentum x_B``
    (``momentum=None``: the cumulative average over all batches seen), with the *unbiased* batch variance,
    as torch keeps it. After training, :func:`recompute_batchnorm_statistics` replaces them by the exact
    statistics of the whole training set (the chapter's "用整个数据集上的均值和方差").

    Place it on the net input before the activation, :math:`a = f(\mathrm{BN}_{\gamma,\beta}(W a^{(l-1)}))`
    (7.47); the affine layer's bias is then redundant (``bias=False`` on the Linear / Conv).

    One module for every input rank: ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` and ``(N, C, D, H, W)``.
    The same arguments, buffers, ``state_dict`` and numbers as ``torch.nn.BatchNorm1d`` / ``2d`` / ``3d``
    (it *is* a ``torch.nn.modules.batchnorm._BatchNorm``, so torch's tools such as
    ``SyncBatchNorm.convert_sync_batchnorm`` and ``swa_utils.update_bn`` see it); ``F.batch_norm`` computes
    it. ``affine=False``: no :math:`\gamma, \beta`; ``track_running_stats=False``: batch statistics in
    evaluation too.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        owner = "BatchNorm"
        check_int(owner, "num_features", num_features, low=1)
        eps = check_positive(owner, "eps", eps)
        if momentum is not None:
            momentum = check_range(owner, "momentum", momentum, 0.0, 1.0)
        for name, flag in (("affine", affine), ("track_running_stats", track_running_stats), ("bias", bias)):
            _check_bool(owner, name, flag)
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype, bias=bias
        )

    def _check_input_dim(self, input: Tensor) -> None:
        c = self.num_features
        if not 2 <= input.dim() <= 5 or input.shape[1] != c:
            raise OptregValueError(
                f"BatchNorm: input must be (N, {c}), (N, {c}, L), (N, {c}, H, W) or (N, {c}, D, H, W) "
                f"(num_features={c}), got shape {tuple(input.shape)}"
            )
        if input.numel() == c and (self.training or self.running_mean is None):
            raise OptregValueError(
                f"BatchNorm: batch statistics need more than 1 value per channel (a batch of 1 has no variance, "
                f"eq. 7.44), got shape {tuple(input.shape)}"
            )


def _as_inputs(owner: str, data: Any, batch_size: int) -> Callable[[], Iterator[Tensor]]:
    """A re-iterable source of input batches from a tensor, an ``(x, y)`` split or an iterable of batches."""
    if isinstance(data, Tensor):
        x = data
    elif hasattr(data, "x") and hasattr(data, "y") and isinstance(data.x, Tensor):
        x = data.x
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(t, Tensor) and t.dim() > 0 for t in data)
        and data[0].shape[0] == data[1].shape[0]
    ):
        x = data[0]  # an (x, y) split (two tensors with the same number of examples)
    else:
        x = None
    if x is not None:
        if x.dim() == 0:
            raise OptregValueError(f"{owner}: data must have a batch dimension, got a 0-d tensor")
        return lambda: iter(x.split(batch_size))

    if not isinstance(data, Iterable) or isinstance(data, str | bytes):
        raise OptregTypeError(
            f"{owner}: data must be a tensor, an (x, y) split or an iterable of batches (a DataLoader), "
            f"got {type(data).__name__}"
        )

    def first(batch: Any) -> Tensor:
        if isinstance(batch, list | tuple) and batch:
            batch = batch[0]
        if not isinstance(batch, Tensor):
            raise OptregTypeError(
                f"{owner}: each batch must be a tensor or an (x, y, ...) tuple of tensors, got {type(batch).__name__}"
            )
        return batch

    if iter(data) is data:  # a one-shot iterator: keep its inputs for the later passes
        cached = [first(b) for b in data]
        return lambda: iter(cached)
    return lambda: (first(b) for b in data)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the statistics it needs are recorded."""


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged batch by batch in float64 (Chan et al.)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, z: Tensor) -> None:
        flat = z.detach().to(torch.float64).transpose(0, 1).reshape(z.shape[1], -1)
        nb = flat.shape[1]
        if nb == 0:
            return
        var_b, mean_b = torch.var_mean(flat, dim=1, correction=0)
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = nb, mean_b, var_b * nb
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + var_b * nb + delta.square() * (self.n * nb / n)
        self.n = n


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, data: Any, *, batch_size: int = 1024) -> nn.Module:
    r"""Replace every batch norm's moving averages by the exact statistics of the whole training set.

    The chapter (section 7.5.1): "当训练完成时, 用整个数据集上的均值 :math:`\mu` 和方差 :math:`\sigma` 来分别
    代替每次小批量样本的 :math:`\mu_B` 和 :math:`\sigma_B^2`". For every ``BatchNorm`` of ``model`` that
    tracks running statistics (optreg's and torch's: every ``_BatchNorm``), ``running_mean`` becomes the mean
    and ``running_var`` the unbiased variance (torch's convention for ``running_var``) of that layer's input,
    per channel, over all examples (and positions) of ``data``, as the layer sees it **in evaluation**: with
    the model in eval mode (no dropout) and every earlier batch norm already using its recomputed
    statistics. The layers are visited in the order the forward pass calls them, one pass over ``data``
    each (a pass stops as soon as the layer's input is recorded), so a net with :math:`m` batch norms costs
    about :math:`m/2` forward passes. The result does not depend on how ``data`` is batched.

    ``torch.optim.swa_utils.update_bn`` instead averages per-batch means and variances with the model in
    training mode: its variance misses the spread of the batch means, and later layers see inputs
    normalized by batch statistics, so it is exact only in special cases (the first layer's mean, equal
    batches).

    ``data``: a tensor of inputs (processed ``batch_size`` at a time), an ``(x, y)`` split (a 2-tuple of
    tensors or anything with ``.x`` and ``.y``), or an iterable of batches (a ``DataLoader``; each batch an
    input tensor or an ``(x, y, ...)`` tuple). A one-shot iterator is read once and its inputs kept in
    memory; a re-iterable one is read once per layer and must give the same examples each time (shuffling
    is fine, random augmentation is not). Inputs are moved to the device of the batch norms' buffers.
    A layer called several times per forward pass gets the statistics of all its inputs pooled.
    ``num_batches_tracked`` and ``momentum`` are left as they are, and so is every module's train / eval
    mode. Returns ``model``.
    """
    owner = "recompute_batchnorm_statistics"
    if not isinstance(model, nn.Module):
        raise OptregTypeError(f"{owner}: model must be a torch.nn.Module, got {type(model).__name__}")
    check_int(owner, "batch_size", batch_size, low=1)
    names = {
        m: name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    }
    batches = _as_inputs(owner, data, batch_size)
    if not names:
        return model
    device = next(iter(names)).running_mean.device

    def forward(hook_module: nn.Module, hook: Callable[..., None]) -> None:
        handle = hook_module.register_forward_pre_hook(hook)
        try:
            for x in batches():
                try:
                    model(x.to(device))
                except _Stop:
                    pass
        finally:
            handle.remove()

    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        # which batch norms the forward pass calls, in what order and how often (on the first batch)
        calls: dict[nn.Module, int] = {}
        handles = [
            bn.register_forward_pre_hook(lambda mod, args: calls.__setitem__(mod, calls.get(mod, 0) + 1))
            for bn in names
        ]
        try:
            first = next(batches(), None)
            if first is None:
                raise OptregValueError(f"{owner}: data has no batches")
            model(first.to(device))
        finally:
            for h in handles:
                h.remove()
        for bn in calls:
            moments = _Moments()
            once = calls[bn] == 1

            def record(mod: nn.Module, args: tuple[Any, ...], moments: _Moments = moments, once: bool = once) -> None:
                z = args[0]
                if z.dim() < 2 or z.shape[1] != mod.num_features:
                    raise OptregValueError(
                        f"{owner}: {names[mod]} has num_features={mod.num_features}, got an input of shape "
                        f"{tuple(z.shape)}"
                    )
                moments.add(z)
                if once:
                    raise _Stop

            forward(bn, record)
            if moments.n < 2 or moments.mean is None or moments.m2 is None:
                raise OptregValueError(
                    f"{owner}: {names[bn]} needs at least 2 values per channel for a variance, got {moments.n}"
                )
            bn.running_mean.copy_(moments.mean)
            bn.running_var.copy_(moments.m2 / (moments.n - 1))
    finally:
        for m, training in modes.items():
            m.training = training
    return model


# -------------------------------------------------------------------------------------- layer normalization


class LayerNorm(nn.LayerNorm):
    r"""Layer normalization of each sample over its features, eqs. (7.48)-(7.51).

    .. math::
        \mu = \frac1{n} \sum_i z_i\ (7.48), \qquad \sigma^2 = \frac1{n} \sum_i (z_i - \mu)^2\ (7.49),
        \qquad \hat z = \frac{z - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta\ (7.50),

    over the last ``len(normalized_shape)`` dimensions (the :math:`n^l` neurons of the layer; for a conv
    block ``(C, H, W)``). No batch statistics: the same in training and evaluation, usable with batches of
    one and in recurrent nets (:class:`LayerNormRNNCell`). (The chapter's "LN normalizes each column, BN each
    row" depends on the layout, see the errata: LN normalizes each sample, BN each feature.)

    The same arguments, parameters and numbers as ``torch.nn.LayerNorm`` (a subclass of it; ``F.layer_norm``
    computes it); an input whose trailing shape is not ``normalized_shape`` is refused with a clear error.
    """

    def __init__(
        self,
        normalized_shape: int | list[int] | tuple[int, ...] | torch.Size,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        owner = "LayerNorm"
        shape = (normalized_shape,) if isinstance(normalized_shape, Integral) else normalized_shape
        if (
            not isinstance(shape, list | tuple | torch.Size)
            or not shape
            or any(isinstance(n, bool) or not isinstance(n, Integral) or n < 1 for n in shape)
        ):
            raise OptregValueError(
                f"{owner}: normalized_shape must be an integer >= 1 or a non-empty list of them, "
                f"got {normalized_shape!r}"
            )
        eps = check_positive(owner, "eps", eps)
        _check_bool(owner, "elementwise_affine", elementwise_affine)
        _check_bool(owner, "bias", bias)
        super().__init__(tuple(int(n) for n in shape), eps, elementwise_affine, bias, device=device, dtype=dtype)

    def forward(self, input: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if input.dim() < k or tuple(input.shape[-k:]) != self.normalized_shape:
            raise OptregValueError(
                f"LayerNorm: input must end in normalized_shape {self.normalized_shape}, got shape {tuple(input.shape)}"
            )
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class LayerNormRNNCell(nn.Module):
    r"""A simple recurrent cell with layer normalization of the recurrent net input, eqs. (7.52)-(7.53).

    .. math::
        z_t = U h_{t-1} + W x_t\ (7.52), \qquad h_t = f(\mathrm{LN}_{\gamma,\beta}(z_t))\ (7.53).

    Batch normalization does not fit here (exercise 7-2: the statistics of :math:`z_t` change with
    :math:`t` and sequences differ in length); layer normalization uses only the :math:`H` units of one
    sample at one step, and keeps :math:`z_t` from growing or shrinking over time. There is no bias before
    the normalization (eq. 7.52); the shift :math:`\beta` of LN plays its part.

    Parameters: ``ih`` (:math:`W`, an ``nn.Linear(input_size, hidden_size, bias=False)``), ``hh``
    (:math:`U`, ``nn.Linear(hidden_size, hidden_size, bias=False)``), ``norm`` (:class:`LayerNorm` over
    ``hidden_size``: :math:`\gamma, \beta`). Linear layers so that :func:`optreg.init.apply` and
    :func:`weight_norm` handle them; torch's default init (uniform, bound :math:`1/\sqrt{\text{fan-in}}`).

    ``forward(input, hx=None)``: ``input`` ``(N, input_size)`` or ``(input_size,)``, ``hx`` the previous
    state ``(N, hidden_size)`` (zeros when ``None``), returns :math:`h_t`, as ``torch.nn.RNNCell``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = "LayerNormRNNCell"
        self.input_size = check_int(owner, "input_size", input_size, low=1)
        self.hidden_size = check_int(owner, "hidden_size", hidden_size, low=1)
        self.nonlinearity = check_choice(owner, "nonlinearity", nonlinearity, tuple(_NONLINEARITIES))
        self._f = _NONLINEARITIES[nonlinearity]
        factory = {"device": device, "dtype": dtype}
        self.ih = nn.Linear(input_size, hidden_size, bias=False, **factory)
        self.hh = nn.Linear(hidden_size, hidden_size, bias=False, **factory)
        self.norm = LayerNorm(hidden_size, eps, elementwise_affine, **factory)

    def step(self, wx: Tensor, h: Tensor) -> Tensor:
        """One step from a precomputed input term ``wx`` = :math:`W x_t` ``(N, H)`` and the state ``h``."""
        z = wx + self.hh(h)  # eq. (7.52)
        norm = self.norm
        return self._f(F.layer_norm(z, norm.normalized_shape, norm.weight, norm.bias, norm.eps))  # eq. (7.53)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        owner = "LayerNormRNNCell"
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise OptregValueError(
                f"{owner}: input must be (N, {self.input_size}) or ({self.input_size},), got shape {tuple(input.shape)}"
            )
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            h = hx if batched else hx.unsqueeze(0)
            if tuple(h.shape) != (x.shape[0], self.hidden_size):
                raise OptregValueError(
                    f"{owner}: hx must be ({x.shape[0]}, {self.hidden_size}) for this input, "
                    f"got shape {tuple(hx.shape)}"
                )
        out = self.step(self.ih(x), h)
        return out if batched else out.squeeze(0)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"


class LayerNormRNN(nn.Module):
    r"""A stack of :class:`LayerNormRNNCell` over sequences, with ``torch.nn.RNN``'s interface.

    ``forward(input, hx=None) -> (output, h_n)``: ``input`` ``(T, N, input_size)`` (``(N, T, input_size)``
    with ``batch_first``), ``output`` the last layer's states at every step (both directions concatenated
    when ``bidirectional``), ``h_n`` ``(num_layers * directions, N, hidden_size)`` the final states in
    torch's layout (the backward direction's final state is the one at step 1). ``dropout`` acts on the
    outputs of every layer but the last, in training, as torch's. :math:`W x_t` is computed for all steps
    at once; the recurrence (7.52)-(7.53) runs step by step. Cells: ``cells[layer * directions + d]``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = "LayerNormRNN"
        self.input_size = check_int(owner, "input_size", input_size, low=1)
        self.hidden_size = check_int(owner, "hidden_size", hidden_size, low=1)
        self.num_layers = check_int(owner, "num_layers", num_layers, low=1)
        self.batch_first = _check_bool(owner, "batch_first", batch_first)
        self.dropout = check_range(owner, "dropout", dropout, 0.0, 1.0, high_open=True)
        self.bidirectional = _check_bool(owner, "bidirectional", bidirectional)
        self.nonlinearity = nonlinearity
        dirs = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            LayerNormRNNCell(
                input_size if layer == 0 else hidden_size * dirs,
                hidden_size,
                nonlinearity,
                eps,
                device=device,
                dtype=dtype,
            )
            for layer in range(num_layers)
            for _ in range(dirs)
        )

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        owner = "LayerNormRNN"
        layout = "(N, T, F)" if self.batch_first else "(T, N, F)"
        if input.dim() != 3 or input.shape[-1] != self.input_size:
            raise OptregValueError(
                f"{owner}: input must be {layout} with F = {self.input_size}, got shape {tuple(input.shape)}"
            )
        x = input if self.batch_first else input.transpose(0, 1)  # (N, T, F)
        n, steps = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        if hx is not None and tuple(hx.shape) != (self.num_layers * dirs, n, self.hidden_size):
            raise OptregValueError(
                f"{owner}: hx must be ({self.num_layers * dirs}, {n}, {self.hidden_size}), got shape {tuple(hx.shape)}"
            )
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                cell = self.cells[layer * dirs + d]
                wx = cell.ih(x)  # W x_t for every t at once: (N, T, H)
                h = x.new_zeros(n, self.hidden_size) if hx is None else hx[layer * dirs + d]
                seq: list[Tensor] = [h] * steps
                for t in range(steps) if d == 0 else range(steps - 1, -1, -1):
                    h = cell.step(wx[:, t], h)
                    seq[t] = h
                outs.append(torch.stack(seq, dim=1) if steps else wx)
                finals.append(h)
            x = torch.cat(outs, dim=2) if dirs == 2 else outs[0]
            if self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        output = x if self.batch_first else x.transpose(0, 1)
        return output, torch.stack(finals, dim=0)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"nonlinearity={self.nonlinearity!r}, batch_first={self.batch_first}, dropout={self.dropout:g}, "
            f"bidirectional={self.bidirectional}"
        )


# ------------------------------------------------------------------------------------- weight normalization


def _unit_sum(t: Tensor, dim: int | None) -> Tensor:
    """The sum of each unit's slice (all dimensions but ``dim``, kept), or of everything (``dim=None``)."""
    if dim is None:
        return t.sum()
    dims = [d for d in range(t.dim()) if d != dim]
    return t.sum(dims, keepdim=True) if dims else t


def _unit_norm(v: Tensor, dim: int | None) -> Tensor:
    """:math:`\\|v_i\\|` for each unit ``i`` along ``dim`` (shaped to broadcast against ``v``), or ``\\|v\\|``."""
    if dim is None:
        return torch.linalg.vector_norm(v)
    dims = [d for d in range(v.dim()) if d != dim]
    return torch.linalg.vector_norm(v, dim=dims, keepdim=True) if dims else v.abs()


def _weight_norm_grads(grad_w: Tensor, g: Tensor, v: Tensor, dim: int | None) -> tuple[Tensor, Tensor]:
    r"""The gradients of :math:`W = g\, v / \|v\|` (eq. 7.54) in differentiable ops: with :math:`s = g/\|v\|`,
    :math:`\partial g = \langle \partial W, v\rangle / \|v\|` and
    :math:`\partial v = s\, \partial W - s\, (\partial g / \|v\|)\, v` (per unit ``i``)."""
    n = _unit_norm(v, dim)
    s = g / n
    grad_g = _unit_sum(grad_w * v, dim) / n
    return grad_g, s * grad_w - v * (s * grad_g / n)


class _FusedWeightNorm(torch.autograd.Function):
    """W(g, v) by torch's fused kernels, with second derivatives that are right.

    torch's fused ``_weight_norm_interface`` (what ``torch.nn.utils.parametrizations.weight_norm`` runs for
    ``dim`` 0 or the last one) is fast, but its double backward is wrong in torch 2.13 (``gradgradcheck``
    fails; Hessian-vector products through it disagree with finite differences). So: the fused forward and
    first-order backward, and under ``create_graph`` the same gradient written in differentiable ops
    (:func:`_weight_norm_grads`, recomputing the norm from ``v``), which autograd differentiates again.
    ``setup_context``, ``jvp`` and ``generate_vmap_rule`` make it work under ``torch.func`` (grad, jvp,
    hessian, vmap) and forward-mode AD.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, v: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        return torch.ops.aten._weight_norm_interface(v, g, dim)  # (W, the norms the fused backward needs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, int], output: tuple[Tensor, Tensor]) -> None:
        g, v, dim = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(g, v, output[1])
        ctx.save_for_forward(g, v)
        ctx.dim = dim

    @staticmethod
    def backward(ctx: Any, grad_w: Tensor, _grad_norms: Tensor | None) -> tuple[Tensor, Tensor, None]:
        g, v, norms = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward that can itself be differentiated
            grad_g, grad_v = _weight_norm_grads(grad_w, g, v, ctx.dim)
        else:
            grad_v, grad_g = torch.ops.aten._weight_norm_interface_backward(grad_w.contiguous(), v, g, norms, ctx.dim)
        return grad_g, grad_v, None

    @staticmethod
    def jvp(ctx: Any, dg: Tensor | None, dv: Tensor | None, _ddim: None) -> tuple[Tensor, None]:
        g, v = ctx.saved_tensors
        n = _unit_norm(v, ctx.dim)
        dw = torch.zeros_like(v)
        if dg is not None:
            dw = dw + v * (dg / n)
        if dv is not None:  # d(v / n) = dv / n - v <v, dv> / n^3
            s = g / n
            dw = dw + s * dv - v * (s * _unit_sum(v * dv, ctx.dim) / n.square())
        return dw, None


class WeightNorm(nn.Module):
    r"""The parametrization of eq. (7.54): :math:`W_{i,:} = \frac{g_i}{\|v_i\|} v_i` (see :func:`weight_norm`).

    ``forward(g, v)`` returns :math:`W`; the norm of each slice ``v[i]`` along ``dim`` is taken over all its
    other dimensions (``dim=None``: one norm over the whole tensor, :math:`g` a scalar).
    ``right_inverse(W)`` gives :math:`(g, v) = (\|W_i\|, W)`, so registering it leaves the weight unchanged.

    For ``dim`` 0 or the last dimension (float32 / float64) it runs torch's fused kernels, as
    ``torch.nn.utils.parametrizations.weight_norm`` does, but with correct second derivatives (torch's fused
    double backward is wrong, see ``_FusedWeightNorm``), so Hessian-vector products
    (:mod:`optreg.diagnostics`) through a weight-normalized layer are right; otherwise plain torch ops
    (:math:`v \cdot g / \|v\|`), as torch does too.
    """

    def __init__(self, dim: int | None = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        dim = self.dim
        if dim is not None and dim in (0, v.dim() - 1) and v.dtype in (torch.float32, torch.float64):
            return _FusedWeightNorm.apply(g.contiguous(), v.contiguous(), dim)[0]
        return v * (g / _unit_norm(v, dim))

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        return _unit_norm(weight, self.dim), weight

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def weight_norm(module: nn.Module, name: str = "weight", dim: int | None = 0) -> nn.Module:
    r"""Weight normalization of ``module.<name>`` (Salimans & Kingma 2016), eq. (7.54):

    .. math:: W_{i,:} = \frac{g_i}{\|v_i\|} v_i, \qquad 1 \le i \le n^l,

    a reparametrization that splits each output unit's weights into a length :math:`g_i` and a direction
    :math:`v_i`, both learned. For ``nn.Linear`` (``(out, in)``) and ``nn.ConvNd`` (``(out, in/groups, *k)``)
    the units are along ``dim=0`` (the default); for ``nn.ConvTranspose`` (``(in, out/groups, *k)``) pass
    ``dim=1``; ``dim=None`` normalizes the whole tensor by one norm. Any module with such a parameter
    works (an embedding, a recurrent cell's ``ih`` / ``hh`` Linear).

    Registered with ``torch.nn.utils.parametrize`` exactly as ``torch.nn.utils.parametrizations.weight_norm``
    registers its own: :math:`g` is ``module.parametrizations.<name>.original0`` (shape ``(out, 1, ...)``),
    :math:`v` ``original1``, the ``state_dict`` keys are torch's, and at registration :math:`g = \|W_i\|`,
    :math:`v = W` (the weight is unchanged). Unlike torch, a negative ``dim`` is refused (torch reads
    ``dim=-1`` as the whole tensor; pass ``None`` for that). To re-initialize a normalized weight, assign
    ``module.<name> = new_weight`` (the parametrization sets :math:`g, v` from it). Returns ``module``.
    """
    owner = "weight_norm"
    if not isinstance(module, nn.Module):
        raise OptregTypeError(f"{owner}: module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise OptregValueError(f"{owner}: name must be a string, got {name!r}")
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor) or weight.dim() == 0:
        raise OptregValueError(
            f"{owner}: name must name a weight tensor of {type(module).__name__} (with at least one dimension), "
            f"got {name!r}"
        )
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, Integral) or not 0 <= dim < weight.dim():
            raise OptregValueError(
                f"{owner}: dim must be None (the whole tensor) or an integer in [0, {weight.dim()}) for a weight "
                f"of shape {tuple(weight.shape)}, got {dim!r}"
            )
        dim = int(dim)
    parametrize.register_parametrization(module, name, WeightNorm(dim), unsafe=True)
    return module


# ----------------------------------------------------------------------------- local response normalization


class LocalResponseNorm(nn.LocalResponseNorm):
    r"""Local response normalization across neighbouring channels (Krizhevsky et al. 2012), eqs. (7.55)-(7.56).

    The chapter's form (``form="chapter"``), for channel :math:`p` of :math:`P`:

    .. math:: \hat Y^p = Y^p \Big/ \Big(k + \alpha \sum_{j=\max(1,\,p-n/2)}^{\min(P,\,p+n/2)} (Y^j)^2\Big)^{\beta}
        \quad (7.55),

    with :math:`n/2` rounded down, so the window holds :math:`2\lfloor n/2\rfloor + 1` channels (:math:`n`
    for odd :math:`n`). AlexNet: :math:`n = 5, k = 2, \alpha = 10^{-4}, \beta = 0.75` (the text's "10e-4"
    is :math:`10^{-4}`, see the errata), which are this module's defaults.

    ``form="torch"`` (the default) is ``torch.nn.LocalResponseNorm``'s convention, so that the module is a
    drop-in (same arguments, same numbers): :math:`\alpha` is divided by the window size ``size``, and the
    window is ``size`` channels, :math:`\lfloor n/2 \rfloor` before :math:`p` and
    :math:`\lceil n/2 \rceil - 1` after. The mapping, for odd ``size``: chapter :math:`\alpha` =
    torch ``alpha / size``, i.e. ``LocalResponseNorm(5, alpha=1e-4, k=2, form="chapter")`` (AlexNet's layer)
    equals ``torch.nn.LocalResponseNorm(5, alpha=5e-4, k=2)``. Note the defaults: AlexNet's numbers, not
    torch's ``k=1`` (pass ``k=1.0`` for torch's default layer), and with ``form="torch"`` they mean
    :math:`\alpha/n = 2\cdot10^{-5}` per square, not AlexNet's layer; AlexNet's layer is
    ``LocalResponseNorm(form="chapter")``.

    Apply it after the activation (it does not subtract a mean). Inputs ``(N, C, *)`` with at least one
    spatial dimension; ``F.local_response_norm`` computes both forms.
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, *, form: str = "torch"
    ) -> None:
        owner = "LocalResponseNorm"
        check_int(owner, "size", size, low=1)
        alpha = check_nonneg(owner, "alpha", alpha)
        beta = check_number(owner, "beta", beta)
        k = check_positive(owner, "k", k)
        check_choice(owner, "form", form, ("torch", "chapter"))
        super().__init__(size, alpha, beta, k)
        self.form = form

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 3:
            raise OptregValueError(
                f"LocalResponseNorm: input must be (N, C, L), (N, C, H, W) or more (channels of feature maps), "
                f"got shape {tuple(input.shape)}"
            )
        if self.form == "torch":
            return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)
        window = 2 * (self.size // 2) + 1  # eq. (7.55): channels p - n/2 ... p + n/2
        # torch's average over the window times alpha * window is eq. (7.55)'s alpha times the plain sum
        return F.local_response_norm(input, window, self.alpha * window, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, form={self.form!r}"
