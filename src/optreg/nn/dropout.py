"""Dropout (section 7.7.4, eq. (7.64); file 004) and its variants: DropConnect, dropout for recurrent nets
(Zaremba et al., 2014, figure 7.11; variational dropout, Gal & Ghahramani, 2016, figure 7.12) and Monte Carlo
dropout prediction (Gal & Ghahramani, 2016; eqs. (7.65)-(7.66)).

**Drop probability and inverted scaling.** ``p`` is everywhere the probability of *dropping* a unit, and the
kept units are scaled by ``1 / (1 - p)`` during training, so that evaluation is the plain network (file 004,
torch's convention). Eq. (7.64) writes ``p`` for the *keep* probability, ``d(x) = m * x`` with
``m ~ Bernoulli(p)`` in training and ``p x`` at test time: the chapter's ``p`` is ``1 - p`` here, and
rescaling at training time by ``1 / (1 - p)`` instead of at test time by the keep probability gives the same
expected activation (an erratum-level difference of convention; see the chapter's README).

Randomness: every mask is drawn by :func:`torch.nn.functional.dropout` (on the layer's input, or on a tensor
of ones for a mask that is reused), so torch's global RNG (seeded by :class:`optreg.train.Trainer`) decides it
and :class:`Dropout` gives the same numbers as ``torch.nn.Dropout`` from the same RNG state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from optreg._checks import check_int, check_range
from optreg.errors import OptregTypeError, OptregValueError

__all__ = [
    "DropConnect",
    "Dropout",
    "DropoutGRU",
    "DropoutLSTM",
    "RNNMasks",
    "VariationalDropout",
    "is_stochastic",
    "mc_dropout_predict",
]


def _check_p(owner: str, p: float, name: str = "p") -> float:
    return check_range(owner, name, p, 0.0, 1.0, high_open=True)


def _mask(p: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An inverted-dropout mask: 0 with probability ``p``, ``1 / (1 - p)`` otherwise (drawn by F.dropout)."""
    return F.dropout(torch.ones(shape, dtype=like.dtype, device=like.device), p, True)


class Dropout(nn.Dropout):
    """Dropout with drop probability ``p`` in ``[0, 1)`` and inverted scaling, ``y = m * x / (1 - p)`` with
    ``m ~ Bernoulli(1 - p)`` per element in training, ``y = x`` in evaluation (eq. (7.64) with the chapter's
    keep probability ``1 - p``; file 004).

    ``torch.nn.Dropout`` itself (a subclass, computed by ``F.dropout``): the same numbers from the same RNG
    state; it only refuses ``p = 1`` (which drops everything) with a clear error. The usual rates
    (section 7.7.4): ``p = 0.5`` for hidden units, a small ``p`` (keep probability near 1) for the inputs.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(_check_p("dropout", p), inplace)


class DropConnect(nn.Linear):
    """A ``Linear`` layer whose *weights* are dropped (Wan et al., 2013; section 7.7.4: "drop connections").

    In training, ``y = x (M * W / (1 - p))^T + b`` with ``M ~ Bernoulli(1 - p)`` per weight entry, one mask per
    forward call (shared by the mini-batch: Wan et al. draw one per example, at ``N`` times the memory; their
    Gaussian moment-matching inference is replaced by the mean network); the bias is not dropped. In
    evaluation it is the plain ``Linear``. Parameters and state dict are ``nn.Linear``'s.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        p: float = 0.5,
        *,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        p = _check_p("drop_connect", p)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.p = p

    @classmethod
    def from_linear(cls, linear: nn.Linear, p: float = 0.5) -> DropConnect:
        """A DropConnect layer sharing nothing with ``linear`` but a copy of its weights."""
        if not isinstance(linear, nn.Linear):
            raise OptregTypeError(f"drop_connect: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, p, device=w.device, dtype=w.dtype)
        layer.load_state_dict(linear.state_dict())
        return layer

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return F.linear(input, self.weight, self.bias)
        return F.linear(input, F.dropout(self.weight, self.p, True), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:g}"


class VariationalDropout(nn.Module):
    """Dropout with one mask per sequence, shared by all time steps (Gal & Ghahramani, 2016; figure 7.12).

    Input ``(T, N, *F)``, or ``(N, T, *F)`` with ``batch_first=True``: the mask has shape ``(1, N, *F)``
    (``(N, 1, *F)``), drawn once per call and broadcast over time, with inverted scaling ``1 / (1 - p)``.
    Evaluation: the identity. For dropout on a recurrent net's inputs and outputs; the recurrent state's
    mask is applied inside the recurrence by :class:`DropoutGRU` / :class:`DropoutLSTM`.
    """

    def __init__(self, p: float = 0.5, batch_first: bool = False) -> None:
        super().__init__()
        self.p = _check_p("variational_dropout", p)
        self.batch_first = bool(batch_first)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return input
        if input.ndim < 2:
            raise OptregValueError(
                f"variational_dropout: input must be (T, N, ...) or (N, T, ...), got shape {tuple(input.shape)}"
            )
        shape = list(input.shape)
        shape[1 if self.batch_first else 0] = 1
        return input * _mask(self.p, tuple(shape), input)

    def extra_repr(self) -> str:
        return f"p={self.p:g}, batch_first={self.batch_first}"


# ---------------------------------------------------------------------------------------- recurrent nets


class RNNMasks(NamedTuple):
    """The dropout masks of one forward pass of a :class:`DropoutGRU` / :class:`DropoutLSTM`.

    ``inputs[l]``: on layer ``l``'s input, ``(1, N, F_l)`` (variational: one per sequence) or ``(T, N, F_l)``
    (a fresh mask per time step); ``recurrent[l]``: on the state ``h_{t-1}`` entering layer ``l``'s recurrent
    weights, ``(1, N, H)`` or ``(T, N, H)``; ``output``: on the last layer's output sequence. ``None``: no
    dropout there. Entries are 0 or ``1 / (1 - p)``.
    """

    inputs: list[Tensor | None]
    recurrent: list[Tensor | None]
    output: Tensor | None


class _DropoutRNN(nn.Module):
    """A stacked GRU / LSTM with dropout on its non-recurrent and (optionally) recurrent connections.

    The parameters have torch's names and layout (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``) and torch's initialization ``U(-1/sqrt(H), 1/sqrt(H))``, so a state dict of
    ``torch.nn.GRU`` / ``LSTM`` loads as is, and with no dropout the forward pass is theirs.
    """

    # set by DropoutGRU / DropoutLSTM, which also define ``_initial_state(hx, batch, like)`` and
    # ``_step(gi, h_in, state, w_hh_t, b_hh) -> state`` (``gi``: the step's input projection with ``b_ih``;
    # ``w_hh_t``: the recurrent weight transposed)
    _mode: str = ""
    _gates: int = 0
    _owner: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        *,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        input_dropout: float | None = None,
        variational: bool = False,
        drop_state: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = self._owner
        self.input_size = check_int(owner, "input_size", input_size, 1)
        self.hidden_size = check_int(owner, "hidden_size", hidden_size, 1)
        self.num_layers = check_int(owner, "num_layers", num_layers, 1)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = _check_p(owner, dropout, "dropout")
        self.recurrent_dropout = _check_p(owner, recurrent_dropout, "recurrent_dropout")
        self.input_dropout = self.dropout if input_dropout is None else _check_p(owner, input_dropout, "input_dropout")
        if not isinstance(variational, bool):
            raise OptregTypeError(f"{owner}: variational must be a bool, got {variational!r}")
        self.variational = variational
        if not isinstance(drop_state, bool):
            raise OptregTypeError(f"{owner}: drop_state must be a bool, got {drop_state!r}")
        self.drop_state = drop_state
        kw = {"device": device, "dtype": dtype}
        g = self._gates * hidden_size
        shells = []
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(g, n_in, **kw)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(g, hidden_size, **kw)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(g, **kw)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(g, **kw)))
            # torch's fused kernel for the layers whose recurrence is not dropped; its own weights on the meta
            # device are never used (functional_call substitutes ours). A tuple: not a registered submodule.
            rnn = nn.GRU if self._mode == "gru" else nn.LSTM
            shells.append(rnn(n_in, hidden_size, 1, bias, device="meta", dtype=dtype))
        self._shells = tuple(shells)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialization of its recurrent layers: every parameter ``U(-1/sqrt(H), 1/sqrt(H))``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _layer(self, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        b_ih = getattr(self, f"bias_ih_l{k}") if self.bias else None
        b_hh = getattr(self, f"bias_hh_l{k}") if self.bias else None
        return getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"), b_ih, b_hh

    def sample_masks(self, seq_len: int, batch: int, like: Tensor) -> RNNMasks:
        """Draw the masks of one forward pass (training): see :class:`RNNMasks`."""
        steps = 1 if self.variational else seq_len
        p, q, h = self.dropout, self.recurrent_dropout, self.hidden_size
        inputs: list[Tensor | None] = []
        recurrent: list[Tensor | None] = []
        for k in range(self.num_layers):
            n_in, p_in = (self.input_size, self.input_dropout) if k == 0 else (h, p)
            inputs.append(_mask(p_in, (steps, batch, n_in), like) if p_in > 0 else None)
            recurrent.append(_mask(q, (steps, batch, h), like) if q > 0 else None)
        return RNNMasks(inputs, recurrent, _mask(p, (steps, batch, h), like) if p > 0 else None)

    def _fused(self, k: int, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Layer ``k`` over the whole sequence by torch's kernel (no dropout on its recurrence)."""
        w_ih, w_hh, b_ih, b_hh = self._layer(k)
        params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh}
        if self.bias:
            params |= {"bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
        hx = state.unsqueeze(0) if isinstance(state, Tensor) else tuple(s.unsqueeze(0) for s in state)
        out, last = functional_call(self._shells[k], params, (x, hx))
        return out, last.squeeze(0) if isinstance(last, Tensor) else tuple(s.squeeze(0) for s in last)

    def _loop(self, k: int, x: Tensor, state: Any, mask: Tensor) -> tuple[Tensor, Any]:
        """Layer ``k`` step by step with the recurrent mask: ``h_{t-1} * mask`` enters the recurrent weights
        (the state itself is carried on), or with ``drop_state`` replaces the state.

        Speed (benchmarks/bench_dropout.py): every time step's input projection is one product, split by
        ``unbind`` (whose backward stacks the T gradients once; indexing ``gi[t]`` would zero-fill a
        ``(T, N, G)`` gradient per step, O(T^2) memory traffic), the recurrent weight is transposed once, and
        :meth:`_step` fuses the gates (one ``addmm``, one sigmoid for two gates, ``addcmul``, ``lerp``)."""
        w_ih, w_hh, b_ih, b_hh = self._layer(k)
        steps = F.linear(x, w_ih, b_ih).unbind(0)
        masks = [mask[0]] * len(steps) if mask.shape[0] == 1 else mask.unbind(0)
        w_hh_t = w_hh.t()
        outputs = []
        for gi, m in zip(steps, masks):
            if self.drop_state:
                state = state * m if isinstance(state, Tensor) else (state[0] * m, state[1])
                h_in = state if isinstance(state, Tensor) else state[0]
            else:
                h_in = (state if isinstance(state, Tensor) else state[0]) * m
            state = self._step(gi, h_in, state, w_hh_t, b_hh)
            outputs.append(state if isinstance(state, Tensor) else state[0])
        return torch.stack(outputs), state

    def forward(self, input: Tensor, hx: Any = None, *, masks: RNNMasks | None = None) -> tuple[Tensor, Any]:
        """``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``) as torch's modules; input ``(T, N, F)`` or
        ``(N, T, F)`` with ``batch_first``. In training the masks are drawn (:meth:`sample_masks`) unless given;
        given ``masks`` are used in any mode."""
        if input.ndim != 3:
            raise OptregValueError(f"{self._owner}: input must be 3-d (T, N, F) or (N, T, F), got {tuple(input.shape)}")
        x = input.transpose(0, 1) if self.batch_first else input
        if x.shape[2] != self.input_size:
            raise OptregValueError(f"{self._owner}: input has {x.shape[2]} features, expected {self.input_size}")
        seq_len, batch = x.shape[0], x.shape[1]
        if masks is None and self.training and max(self.dropout, self.recurrent_dropout, self.input_dropout) > 0:
            masks = self.sample_masks(seq_len, batch, x)
        states = self._initial_state(hx, batch, x)
        finals = []
        for k in range(self.num_layers):
            if masks is not None and masks.inputs[k] is not None:
                x = x * masks.inputs[k]
            recurrent = None if masks is None else masks.recurrent[k]
            x, last = self._fused(k, x, states[k]) if recurrent is None else self._loop(k, x, states[k], recurrent)
            finals.append(last)
        if masks is not None and masks.output is not None:
            x = x * masks.output
        output = x.transpose(0, 1) if self.batch_first else x
        return output, self._final_state(finals)

    def _final_state(self, finals: list[Any]) -> Any:
        if isinstance(finals[0], Tensor):
            return torch.stack(finals)
        return torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals])

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, dropout={self.dropout:g}, "
            f"recurrent_dropout={self.recurrent_dropout:g}, variational={self.variational}"
            + (f", input_dropout={self.input_dropout:g}" if self.input_dropout != self.dropout else "")
            + (", drop_state=True" if self.drop_state else "")
        )


def _check_state(owner: str, h: Tensor, layers: int, batch: int, hidden: int, name: str) -> Tensor:
    if not isinstance(h, Tensor) or tuple(h.shape) != (layers, batch, hidden):
        got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise OptregValueError(f"{owner}: {name} must have shape {(layers, batch, hidden)}, got {got}")
    return h


class DropoutGRU(_DropoutRNN):
    """A GRU (torch's equations and parameters) with dropout for recurrent nets (section 7.7.4.1).

    - ``dropout``: on the non-recurrent connections, the input of every layer and the output of the last one
      (``input_dropout``, when given, is the rate on the first layer's input instead).
    - ``recurrent_dropout``: on ``h_{t-1}`` where it enters the recurrent weights (the gates
      ``r, z, n`` see ``h_{t-1} * m_h``; the state carried on, ``z * h_{t-1}``, is not dropped; Gal &
      Ghahramani, 2016).
    - ``variational``: one mask per sequence for each of these, shared over the time steps; otherwise a fresh
      mask per time step.
    - ``drop_state``: the recurrent mask drops the state itself, ``h_{t-1} <- m_t * h_{t-1}``, which is then
      carried on (``z * h_{t-1}`` included): the chapter's "dropping the hidden state at every time step"
      (section 7.7.4.1), which erases a unit's memory with probability ``p`` per step.

    Figure 7.11 (Zaremba et al., 2014): ``dropout=p`` only. Figure 7.12, variational dropout:
    ``dropout=p, recurrent_dropout=p, variational=True``. Naive dropout of the recurrent connections, which
    the chapter warns against (exercise 7-4): ``recurrent_dropout=p, variational=False`` (a fresh mask per
    step on ``h_{t-1}`` entering the recurrent weights), with ``drop_state=True`` on the state carried on.
    Without recurrent dropout (and in evaluation) each layer runs torch's fused kernel; otherwise a
    step-by-step loop (:meth:`_DropoutRNN._loop`). Bidirectional nets are not supported.
    """

    _mode, _gates, _owner = "gru", 3, "dropout_gru"

    def _initial_state(self, hx: Any, batch: int, like: Tensor) -> list[Tensor]:
        if hx is None:
            return [like.new_zeros(batch, self.hidden_size)] * self.num_layers
        return list(_check_state(self._owner, hx, self.num_layers, batch, self.hidden_size, "hx"))

    def _step(self, gi: Tensor, h_in: Tensor, h: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> Tensor:
        """torch's GRU step: ``r, z = sigmoid(i_rz + W_hrz h_in + b_hrz)``, ``n = tanh(i_n + r (W_hn h_in +
        b_hn))``, ``h' = (1 - z) n + z h`` (``lerp(n, h, z)``)."""
        gh = h_in @ w_hh_t if b_hh is None else torch.addmm(b_hh, h_in, w_hh_t)
        i_rz, i_n = gi.split((2 * self.hidden_size, self.hidden_size), 1)
        h_rz, h_n = gh.split((2 * self.hidden_size, self.hidden_size), 1)
        r, z = torch.sigmoid(i_rz + h_rz).chunk(2, 1)
        n = torch.tanh(torch.addcmul(i_n, r, h_n))
        return torch.lerp(n, h, z)


class DropoutLSTM(_DropoutRNN):
    """An LSTM (torch's equations and parameters) with the dropout options of :class:`DropoutGRU`.

    The recurrent mask acts on ``h_{t-1}`` entering the recurrent weights; the cell state is not dropped.
    ``hx`` is ``(h_0, c_0)``; the result ``(output, (h_n, c_n))``.
    """

    _mode, _gates, _owner = "lstm", 4, "dropout_lstm"

    def _initial_state(self, hx: Any, batch: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        if hx is None:
            zero = like.new_zeros(batch, self.hidden_size)
            return [(zero, zero)] * self.num_layers
        if not isinstance(hx, tuple) or len(hx) != 2:
            raise OptregValueError(f"{self._owner}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        h0 = _check_state(self._owner, hx[0], self.num_layers, batch, self.hidden_size, "h_0")
        c0 = _check_state(self._owner, hx[1], self.num_layers, batch, self.hidden_size, "c_0")
        return list(zip(h0, c0))

    def _step(
        self, gi: Tensor, h_in: Tensor, state: tuple[Tensor, Tensor], w_hh_t: Tensor, b_hh: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """torch's LSTM step: ``i, f, g, o`` from ``gi + W_hh h_in + b_hh``; ``c' = f c + i g``, ``h' = o tanh(c')``."""
        gates = torch.addmm(gi, h_in, w_hh_t) if b_hh is None else torch.addmm(gi + b_hh, h_in, w_hh_t)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.addcmul(torch.sigmoid(f) * state[1], torch.sigmoid(i), torch.tanh(g))
        return torch.sigmoid(o) * torch.tanh(c), c


# ----------------------------------------------------------------------------------- MC dropout prediction

#: The module types :func:`mc_dropout_predict` keeps stochastic (in training mode) at test time.
STOCHASTIC: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    DropConnect,
    VariationalDropout,
    _DropoutRNN,
)


def is_stochastic(module: nn.Module) -> bool:
    """Whether ``module`` drops units in training mode: a dropout layer of torch or optreg, or a torch
    recurrent layer with ``dropout > 0`` (its dropout between layers)."""
    return isinstance(module, STOCHASTIC) or (isinstance(module, nn.RNNBase) and module.dropout > 0)


@torch.no_grad()
def mc_dropout_predict(
    model: nn.Module,
    x: Tensor,
    samples: int = 30,
    *,
    generator: torch.Generator | None = None,
    activation: str = "softmax",
    stochastic: Callable[[nn.Module], bool] = is_stochastic,
) -> tuple[Tensor, Tensor]:
    """Monte Carlo dropout (Gal & Ghahramani, 2016): the Bayesian prediction of eqs. (7.65)-(7.66),
    ``E_q(theta)[y] ~ 1/M sum_m f(x, theta_m)``, each ``theta_m`` a dropout sample of the network.

    The model runs in evaluation mode (batch normalization uses its running statistics) except its dropout
    layers (``stochastic(module)`` true, :func:`is_stochastic` by default), which stay on; ``samples`` (M)
    forward passes are averaged. Returns ``(mean, std)`` of the predicted probabilities over the samples
    (``activation``: ``"softmax"`` over the last dimension, ``"sigmoid"``, or ``"none"`` for a model that
    outputs probabilities), each of the output's shape; ``std`` is the spread of the M samples
    (``correction=0``). ``generator`` makes the masks reproducible: the passes then draw from torch's global RNG
    seeded from it inside :func:`torch.random.fork_rng`, and the caller's RNG state is untouched. Every
    module's training flag is restored afterwards.
    """
    owner = "mc_dropout_predict"
    if not isinstance(model, nn.Module):
        raise OptregTypeError(f"{owner}: model must be an nn.Module, got {type(model).__name__}")
    samples = check_int(owner, "samples", samples, 1)
    if activation not in ("softmax", "sigmoid", "none"):
        raise OptregValueError(f"{owner}: activation must be one of 'softmax', 'sigmoid', 'none', got {activation!r}")
    modes = [(m, m.training) for m in model.modules()]
    accelerated = x.device.type != "cpu"
    try:
        model.eval()
        for m, _ in modes:
            if stochastic(m):
                m.training = True
        with torch.random.fork_rng(
            devices=[x.device] if accelerated else [],
            device_type=x.device.type if accelerated else "cuda",
            enabled=generator is not None,
        ):
            if generator is not None:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                torch.manual_seed(seed) if accelerated else torch.default_generator.manual_seed(seed)
            outs = torch.stack([model(x) for _ in range(samples)])
    finally:
        for m, flag in modes:
            m.training = flag
    if activation == "softmax":
        outs = torch.softmax(outs, dim=-1)
    elif activation == "sigmoid":
        outs = torch.sigmoid(outs)
    return outs.mean(0), outs.std(0, correction=0)
