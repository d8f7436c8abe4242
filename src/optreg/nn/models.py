"""Models from a small spec: the MLPs, CNNs and recurrent classifiers of the chapter's experiments.

A spec is a plain dict, as it comes from a TOML table; :func:`build` validates every key and returns a
``torch.nn.Module``. Three families:

``mlp``
    ``{"kind": "mlp", "in_features": 64, "hidden": [128, 128], "out_features": 10, "activation": "relu",
    "norm": None, "dropout": 0.0, "input_dropout": 0.0, "residual": False, "drop_connect": 0.0}``. Each
    hidden block is ``Linear -> norm -> activation -> dropout``; the output layer is a plain ``Linear``
    producing logits. ``drop_connect > 0`` makes each hidden ``Linear`` a
    :class:`optreg.nn.dropout.DropConnect` dropping its weights with that probability (Wan et al. 2013).
    The input is flattened first, so ``(N, 8, 8)`` images work with ``in_features = 64``. With
    ``residual = true`` a block whose input and output widths match adds its input back (an identity
    shortcut, He et al. 2016, "Deep residual learning"): ``h <- h + block(h)``, i.e. ``h + act(W h + b)``
    without norm and dropout; blocks that change the width stay plain.

``cnn1d`` / ``cnn2d``
    ``{"kind": "cnn2d", "in_channels": 1, "input_shape": [8, 8], "channels": [16, 32], "kernel_size": 3,
    "stride": 1, "pool": 2, "hidden": [64], "out_features": 10, ...}``. Each conv block is
    ``Conv(kernel_size, stride, padding) -> norm -> activation -> MaxPool(pool)`` (``pool = 1``: no
    pooling), then ``Flatten -> dropout`` and the same dense head as an MLP. ``kernel_size``, ``stride``,
    ``padding`` and ``pool`` are each one integer for every conv block or a list with one per block
    (``kernel_size = [5, 3], stride = [2, 1], pool = 1``: downsampling by strides alone); ``padding``
    defaults to ``kernel_size // 2`` for each block. A map of length ``n`` comes out of a block with
    length ``floor((n + 2 padding - kernel_size) / stride) + 1``, then ``floor(. / pool)`` (torch's
    ``ConvNd`` and ``MaxPoolNd``). Any input with ``in_channels * prod(input_shape)`` values per sample is
    accepted (``(N, 64)``, ``(N, 8, 8)``, ``(N, 1, 8, 8)``).

``rnn`` / ``gru`` / ``lstm``
    ``{"kind": "lstm", "in_features": 1, "hidden_size": 64, "num_layers": 1, "out_features": 10,
    "dropout": 0.0, "bidirectional": False, "norm": None, "readout": "last"}`` (``rnn`` also takes
    ``activation``: ``tanh`` or ``relu``). A sequence classifier: input ``(N, T, F)`` (or ``(N, T)`` when
    ``in_features == 1``); the head reads the last layer's outputs ``o_1 .. o_T`` (both directions
    concatenated when bidirectional) as ``readout`` says: ``"last"``, the final hidden state (``o_T`` of
    the forward direction, ``o_1`` of the backward one); ``"mean"``, ``(1/T) sum_t o_t``; ``"all"``, every
    step's output concatenated (``T * H`` values; needs ``seq_len = T``, which :func:`optreg.train.run`
    fills in from the data). ``dropout`` acts between stacked layers (torch's own) and on the readout
    before the output layer. ``gru`` / ``lstm`` also take ``dropout_scheme`` (section 7.7.4.1; default
    ``"between"``, the above), the other schemes running :class:`optreg.nn.dropout.DropoutGRU` /
    ``DropoutLSTM`` with drop probability ``dropout``: ``"non_recurrent"`` (Zaremba et al. 2014, figure
    7.11: a fresh mask per time step on the input of every layer above the first and on the last layer's
    outputs), ``"recurrent"`` (that, and a fresh mask per step on ``h_{t-1}`` entering the recurrent
    weights: the naive form of exercise 7-4), ``"state"`` (that, with the mask on the state carried on:
    the chapter's "dropping the hidden state at every time step"), ``"variational"`` (Gal & Ghahramani
    2016, figure 7.12: one mask per sequence on the same connections as ``"recurrent"``). Their head reads
    the masked outputs (no second dropout on the readout); ``input_dropout`` is the rate on the first
    layer's input (each time step's features; with ``"variational"`` one mask per sequence, which for a
    1-feature signal drops whole sequences), 0 by default; bidirectional nets take only ``"between"``.
    ``rnn`` with ``norm = "layer"`` is the layer-normalized recurrent net of eqs. (7.52)-(7.53)
    (:class:`optreg.nn.norm.LayerNormRNN`); no other norm fits a recurrent kind (batch normalization:
    exercise 7-2; ``gru`` / ``lstm`` are torch's fused layers).

Common keys: ``activation`` is one of :data:`ACTIVATIONS`. ``norm`` (section 7.5; optreg's modules from
:mod:`optreg.nn.norm`; which kinds take which: :data:`NORMS_BY_KIND`) is ``None`` / ``"none"`` (TOML has
no null); ``"batch"`` (:class:`~optreg.nn.norm.BatchNorm`, each feature / channel over the batch, eqs.
7.42-7.47) or ``"layer"`` (:class:`~optreg.nn.norm.LayerNorm` over each sample's features, for conv
blocks over ``(channels, *spatial)``, eqs. 7.48-7.51), placed on the net input before the activation;
``"weight"`` (:func:`~optreg.nn.norm.weight_norm` of every hidden Linear / Conv weight, eq. 7.54; the
output layer is left plain); ``"lrn"`` (conv nets only: :class:`~optreg.nn.norm.LocalResponseNorm` with
AlexNet's constants in the chapter's form, eq. 7.55, after each conv block's activation and before its
pooling; the dense head is not normalized). ``dropout`` is the *drop* probability (torch's inverted
dropout; the chapter's eq. 7.64 uses the keep probability, see the errata), applied to every hidden
representation that feeds a ``Linear`` layer; ``input_dropout`` to the input (section 7.7.4: keep it
small). Weights are torch's default init (use :func:`optreg.init.apply` for the chapter's schemes), so
``torch.manual_seed`` makes :func:`build` deterministic.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from optreg._checks import check_choice, check_int, check_range
from optreg.errors import OptregValueError
from optreg.nn.dropout import DropConnect
from optreg.nn.norm import BatchNorm, LayerNorm, LayerNormRNN, LocalResponseNorm, weight_norm

__all__ = [
    "ACTIVATIONS",
    "DROPOUT_SCHEMES",
    "NORMS",
    "NORMS_BY_KIND",
    "SequenceClassifier",
    "available",
    "build",
    "count_parameters",
    "describe",
    "keys",
    "make_activation",
    "validate",
]

ACTIVATIONS = ("relu", "tanh", "logistic", "sigmoid", "leaky_relu", "elu", "gelu", "identity", "linear")
"""Activation names (``logistic`` = ``sigmoid``, ``identity`` = ``linear``)."""

NORMS = (None, "none", "batch", "layer", "weight", "lrn")
"""Normalization choices (``None`` = ``"none"``); which fit each kind: :data:`NORMS_BY_KIND`."""

NORMS_BY_KIND = {
    "mlp": (None, "batch", "layer", "weight"),
    "cnn1d": (None, "batch", "layer", "weight", "lrn"),
    "cnn2d": (None, "batch", "layer", "weight", "lrn"),
    "rnn": (None, "layer"),
    "gru": (None,),
    "lstm": (None,),
}
"""The normalizations each model kind takes (``None``: none)."""

_NORM_MISFIT = {
    "lrn": "local response normalization (eq. 7.55) acts across the channels of conv feature maps; "
    "use it with kind cnn1d or cnn2d",
    "batch": "batch statistics of a recurrent net input change with the time step and the sequence length "
    "(exercise 7-2); use norm 'layer' with kind 'rnn' (eqs. 7.52-7.53)",
    "layer": "the layer-normalized recurrent net (eqs. 7.52-7.53) is built for kind 'rnn'; "
    "torch's fused gru / lstm layers have no normalized form",
    "weight": "torch's fused recurrent layers keep flat copies of their weights, which a reparametrization "
    "does not reach; use norm 'layer' with kind 'rnn'",
}

_KINDS = ("mlp", "cnn1d", "cnn2d", "rnn", "gru", "lstm")
DROPOUT_SCHEMES = ("between", "non_recurrent", "recurrent", "state", "variational")
"""Where a ``gru`` / ``lstm`` drops units (see the module docstring; section 7.7.4.1)."""
_SCHEME_OPTIONS = {  # DropoutGRU / DropoutLSTM options of each scheme but "between" (recurrent rate: dropout)
    "non_recurrent": {"recurrent": False, "variational": False, "drop_state": False},
    "recurrent": {"recurrent": True, "variational": False, "drop_state": False},
    "state": {"recurrent": True, "variational": False, "drop_state": True},
    "variational": {"recurrent": True, "variational": True, "drop_state": False},
}
READOUTS = ("last", "all", "mean")
"""What a recurrent classifier's head reads (see the module docstring)."""

# key -> default (a required key has no entry in the defaults)
_DENSE = {"activation": "relu", "norm": None, "dropout": 0.0, "input_dropout": 0.0, "hidden": []}
_CONV = {"in_channels": 1, "kernel_size": 3, "stride": 1, "padding": None, "pool": 2}  # padding None: k // 2
_RECURRENT = {"num_layers": 1, "dropout": 0.0, "bidirectional": False, "norm": None, "readout": "last",
              "seq_len": None}  # fmt: skip
_GATED = {"dropout_scheme": "between", "input_dropout": 0.0}
_KEYS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "mlp": (("in_features", "out_features"), {**_DENSE, "residual": False, "drop_connect": 0.0}),
    "cnn1d": (("input_shape", "channels", "out_features"), {**_DENSE, **_CONV}),
    "cnn2d": (("input_shape", "channels", "out_features"), {**_DENSE, **_CONV}),
    "rnn": (("in_features", "hidden_size", "out_features"), {**_RECURRENT, "activation": "tanh"}),
    "gru": (("in_features", "hidden_size", "out_features"), {**_RECURRENT, **_GATED}),
    "lstm": (("in_features", "hidden_size", "out_features"), {**_RECURRENT, **_GATED}),
}
_PER_LAYER = ("kernel_size", "stride", "padding", "pool")


def keys(kind: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``(required keys, {optional key: default})`` of a model kind (a default of None: see the docstring)."""
    check_choice("models", "kind", kind, _KINDS)
    required, defaults = _KEYS[kind]
    return required, dict(defaults)


def available() -> list[str]:
    """The model kinds :func:`build` knows."""
    return list(_KINDS)


def make_activation(name: str) -> nn.Module:
    """The ``torch.nn`` module of an activation name in :data:`ACTIVATIONS` (``leaky_relu``: slope 0.01)."""
    check_choice("models", "activation", name, ACTIVATIONS)
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name in ("logistic", "sigmoid"):
        return nn.Sigmoid()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "elu":
        return nn.ELU()
    if name == "gelu":
        return nn.GELU()
    return nn.Identity()


# ------------------------------------------------------------------------------------------ validation


def _int_list(owner: str, key: str, value: Any, *, nonempty: bool) -> list[int]:
    what = "a non-empty list" if nonempty else "a list"
    if not isinstance(value, list | tuple) or (nonempty and not value):
        raise OptregValueError(f"{owner}: {key} must be {what} of integers >= 1, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise OptregValueError(f"{owner}: {key} must be {what} of integers >= 1, got {value!r}")
    return list(value)


def _per_layer(owner: str, key: str, value: Any, n: int, low: int) -> list[int]:
    """One integer >= ``low`` for every conv block, or a list of ``n`` of them; returns the list."""
    what = f"{key} must be an integer >= {low} or a list of {n} (one per conv block) integers >= {low}"
    values = list(value) if isinstance(value, list | tuple) else [value] * n
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
        raise OptregValueError(f"{owner}: {what}, got {value!r}")
    return values


def _check_norm_fits(kind: str, norm: str | None) -> str | None:
    """``norm`` (already ``None`` for none) must be one of :data:`NORMS_BY_KIND` ``[kind]``."""
    fits = NORMS_BY_KIND[kind]
    if norm not in fits:
        check_choice(f"models.{kind}", "norm", norm, NORMS)
        takes = ", ".join(repr(n) for n in fits if n is not None) or "only none"
        raise OptregValueError(
            f"models.{kind}: norm {norm!r} does not fit kind {kind} (it takes {takes}): {_NORM_MISFIT[norm]}"
        )
    return norm


def validate(spec: Any) -> dict[str, Any]:
    """Check every key of ``spec`` and return it completed with the defaults (per-layer conv settings as
    lists, ``padding`` filled in); :func:`build` builds what this accepts, except for a conv net whose
    maps vanish (that needs the sizes, and is checked when building)."""
    if not isinstance(spec, Mapping):
        raise OptregValueError(f"models: spec must be a mapping (a dict / TOML table), got {spec!r}")
    if "kind" not in spec:
        raise OptregValueError(f"models: spec needs a 'kind', one of {', '.join(_KINDS)}")
    kind = check_choice("models", "kind", spec["kind"], _KINDS)
    owner = f"models.{kind}"
    required, defaults = _KEYS[kind]
    allowed = ("kind", *required, *defaults)
    for key in spec:
        if key not in allowed:
            raise OptregValueError(
                f"{owner}: unknown key {key!r} = {spec[key]!r}; allowed keys: {', '.join(allowed)}"
            )
    for key in required:
        if key not in spec:
            raise OptregValueError(f"{owner}: missing required key {key!r}")
    s = {**defaults, **spec}

    for key in ("in_features", "out_features", "hidden_size", "in_channels", "num_layers"):
        if key in s:
            check_int(owner, key, s[key], low=1)
    for key in ("dropout", "input_dropout", "drop_connect"):
        if key in s:
            s[key] = check_range(owner, key, s[key], 0.0, 1.0, high_open=True)
    if "hidden" in s:
        s["hidden"] = _int_list(owner, "hidden", s["hidden"], nonempty=False)
    if "channels" in s:
        s["channels"] = _int_list(owner, "channels", s["channels"], nonempty=True)
        n = len(s["channels"])
        s["kernel_size"] = _per_layer(owner, "kernel_size", s["kernel_size"], n, 1)
        if s["padding"] is None:
            s["padding"] = [k // 2 for k in s["kernel_size"]]
        for key, low in (("stride", 1), ("padding", 0), ("pool", 1)):
            s[key] = _per_layer(owner, key, s[key], n, low)
    if "residual" in s and not isinstance(s["residual"], bool):
        raise OptregValueError(f"{owner}: residual must be true or false, got {s['residual']!r}")
    if "readout" in s:
        check_choice(owner, "readout", s["readout"], READOUTS)
        if s["readout"] == "all":
            if s["seq_len"] is None:
                raise OptregValueError(f"{owner}: readout 'all' needs seq_len (the number of time steps T)")
            check_int(owner, "seq_len", s["seq_len"], low=1)
        elif s["seq_len"] is not None:
            check_int(owner, "seq_len", s["seq_len"], low=1)
    if "input_shape" in s:
        ndim = 1 if kind == "cnn1d" else 2
        shape = s["input_shape"]
        if not isinstance(shape, list | tuple) or len(shape) != ndim:
            raise OptregValueError(
                f"{owner}: input_shape must be a list of {ndim} integers >= 1 "
                f"({'[length]' if ndim == 1 else '[height, width]'}), got {shape!r}"
            )
        s["input_shape"] = _int_list(owner, "input_shape", shape, nonempty=True)
    if "norm" in s:
        check_choice(owner, "norm", s["norm"], NORMS)
        s["norm"] = None if s["norm"] == "none" else s["norm"]
        _check_norm_fits(kind, s["norm"])
    if "bidirectional" in s and not isinstance(s["bidirectional"], bool):
        raise OptregValueError(f"{owner}: bidirectional must be true or false, got {s['bidirectional']!r}")
    if "dropout_scheme" in s:
        check_choice(owner, "dropout_scheme", s["dropout_scheme"], DROPOUT_SCHEMES)
        if s["dropout_scheme"] != "between" and s["bidirectional"]:
            raise OptregValueError(
                f"{owner}: dropout_scheme {s['dropout_scheme']!r} runs a one-directional DropoutGRU / DropoutLSTM; "
                "a bidirectional net takes only 'between'"
            )
    if kind == "rnn":
        check_choice(owner, "activation", s["activation"], ("tanh", "relu"))
    elif "activation" in s:
        check_choice(owner, "activation", s["activation"], ACTIVATIONS)
    return s


# ------------------------------------------------------------------------------------------- builders


def _norm(kind: str | None, features: int | list[int]) -> nn.Module | None:
    """The normalization layer on the net input of ``features`` (an int, or ``[channels, *spatial]``)."""
    shape = [features] if isinstance(features, int) else features
    if kind == "layer":
        return LayerNorm(shape)
    if kind == "batch":
        return BatchNorm(shape[0])
    return None  # none, or a norm that is not a layer on the net input (weight: a reparametrization; lrn)


def _affine(layer: nn.Module, norm: str | None) -> nn.Module:
    """A hidden Linear / Conv layer, weight-normalized (eq. 7.54) when ``norm == "weight"``."""
    return weight_norm(layer) if norm == "weight" else layer


def _dense_layers(
    layers: OrderedDict[str, nn.Module], s: dict[str, Any], n_in: int, *, drop_first: bool
) -> None:
    """Append the hidden dense blocks and the output layer; ``drop_first``: dropout on their input."""
    if drop_first and s["dropout"] > 0:
        layers["drop0"] = nn.Dropout(s["dropout"])
    for i, width in enumerate(s["hidden"], start=1):
        block: OrderedDict[str, nn.Module] = OrderedDict()
        p_connect = s.get("drop_connect", 0.0)
        linear = DropConnect(n_in, width, p=p_connect) if p_connect > 0 else nn.Linear(n_in, width)
        block[f"fc{i}"] = _affine(linear, s["norm"])
        norm = _norm(s["norm"], width)
        if norm is not None:
            block[f"norm{i}"] = norm
        block[f"act{i}"] = make_activation(s["activation"])
        if s["dropout"] > 0:
            block[f"drop{i}"] = nn.Dropout(s["dropout"])
        if s.get("residual") and width == n_in:
            layers[f"res{i}"] = Residual(nn.Sequential(block))
        else:
            layers.update(block)
        n_in = width
    layers["out"] = nn.Linear(n_in, s["out_features"])


def _mlp(s: dict[str, Any]) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    if s["input_dropout"] > 0:
        layers["input_drop"] = nn.Dropout(s["input_dropout"])
    _dense_layers(layers, s, s["in_features"], drop_first=False)
    return nn.Sequential(layers)


class Residual(nn.Module):
    """``x + body(x)``: an identity shortcut around a block of the same width (He et al. 2016)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ToShape(nn.Module):
    """Reshape each sample to ``(channels, *shape)``; refuses inputs of the wrong size clearly."""

    def __init__(self, owner: str, shape: list[int]) -> None:
        super().__init__()
        self.owner = owner
        self.shape = list(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x[0].numel() != math.prod(self.shape):
            raise OptregValueError(
                f"{self.owner}: each sample must have {' x '.join(map(str, self.shape))} values, "
                f"got input of shape {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}"


def _cnn(s: dict[str, Any]) -> nn.Sequential:
    kind = s["kind"]
    dims = 1 if kind == "cnn1d" else 2
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    pool = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
    spatial = list(s["input_shape"])
    c_in = s["in_channels"]
    layers: OrderedDict[str, nn.Module] = OrderedDict(reshape=_ToShape(f"models.{kind}", [c_in, *spatial]))
    if s["input_dropout"] > 0:
        layers["input_drop"] = nn.Dropout(s["input_dropout"])
    for i, c_out in enumerate(s["channels"], start=1):
        k, stride, pad, p = (s[key][i - 1] for key in _PER_LAYER)
        layers[f"conv{i}"] = _affine(conv(c_in, c_out, k, stride=stride, padding=pad), s["norm"])
        spatial = [(n + 2 * pad - k) // stride + 1 for n in spatial]
        if min(spatial) < 1:
            raise OptregValueError(
                f"models.{kind}: input_shape {s['input_shape']} is too small for channels {s['channels']} "
                f"with kernel_size {s['kernel_size']}, stride {s['stride']}, padding {s['padding']} and "
                f"pool {s['pool']} (the maps vanish in block {i})"
            )
        norm = _norm(s["norm"], [c_out, *spatial])
        if norm is not None:
            layers[f"norm_c{i}"] = norm
        layers[f"act_c{i}"] = make_activation(s["activation"])
        if s["norm"] == "lrn":  # after the activation (section 7.5.3.2), AlexNet's layer
            layers[f"norm_c{i}"] = LocalResponseNorm(form="chapter")
        if p > 1:
            layers[f"pool{i}"] = pool(p)
            spatial = [n // p for n in spatial]
        if min(spatial) < 1:
            raise OptregValueError(
                f"models.{kind}: input_shape {s['input_shape']} is too small for channels {s['channels']} "
                f"with kernel_size {s['kernel_size']}, stride {s['stride']}, padding {s['padding']} and "
                f"pool {s['pool']} (the maps vanish after block {i})"
            )
        c_in = c_out
    layers["flatten"] = nn.Flatten()
    _dense_layers(layers, s, c_in * math.prod(spatial), drop_first=True)
    return nn.Sequential(layers)


class SequenceClassifier(nn.Module):
    """An RNN / GRU / LSTM (``batch_first``) whose last layer's outputs feed a Linear head (``readout``:
    the final state, ``"last"``; the mean over the steps, ``"mean"``; all steps, ``"all"``, with ``seq_len``).

    ``norm="layer"`` (``kind="rnn"`` only): the recurrent layer is :class:`optreg.nn.norm.LayerNormRNN`,
    :math:`h_t = f(\\mathrm{LN}(U h_{t-1} + W x_t))` (eqs. 7.52-7.53), in place of ``torch.nn.RNN``.
    ``dropout_scheme`` other than ``"between"`` (``gru`` / ``lstm``): the recurrent layer is
    :class:`optreg.nn.dropout.DropoutGRU` / ``DropoutLSTM`` (see the module docstring), whose masked output
    sequence the head reads (``"last"``: its last step).

    ``forward(x)``: ``x`` is ``(N, T, F)``, or ``(N, T)`` when ``F == 1``; returns ``(N, out_features)``
    logits. With ``bidirectional`` the forward direction's state at ``T`` and the backward direction's
    state at 1 are concatenated (``"last"``); ``"mean"`` and ``"all"`` read both directions' outputs.
    """

    def __init__(
        self,
        kind: str,
        in_features: int,
        hidden_size: int,
        out_features: int,
        *,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        activation: str = "tanh",
        norm: str | None = None,
        readout: str = "last",
        seq_len: int | None = None,
        dropout_scheme: str = "between",
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dropout_scheme = check_choice(f"models.{kind}", "dropout_scheme", dropout_scheme, DROPOUT_SCHEMES)
        if dropout_scheme != "between" and kind not in ("gru", "lstm"):
            raise OptregValueError(f"models.{kind}: dropout_scheme {dropout_scheme!r} needs kind gru or lstm")
        self.kind = check_choice("models", "kind", kind, ("rnn", "gru", "lstm"))
        self.norm = _check_norm_fits(self.kind, norm)
        self.readout = check_choice(f"models.{kind}", "readout", readout, READOUTS)
        if readout == "all":
            check_int(f"models.{kind}", "seq_len", seq_len, low=1)
        self.seq_len = seq_len
        self.in_features = in_features
        kwargs: dict[str, Any] = dict(
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        if dropout_scheme != "between":
            from optreg.nn.dropout import DropoutGRU, DropoutLSTM

            options = _SCHEME_OPTIONS[dropout_scheme]
            cls = DropoutGRU if kind == "gru" else DropoutLSTM
            self.rnn = cls(
                in_features, hidden_size, num_layers, batch_first=True, dropout=dropout,
                recurrent_dropout=dropout if options["recurrent"] else 0.0, input_dropout=input_dropout,
                variational=options["variational"], drop_state=options["drop_state"],
            )  # fmt: skip
        elif kind == "rnn" and norm == "layer":
            self.rnn: nn.Module = LayerNormRNN(in_features, hidden_size, nonlinearity=activation, **kwargs)
        elif kind == "rnn":
            self.rnn = nn.RNN(in_features, hidden_size, nonlinearity=activation, **kwargs)
        elif kind == "gru":
            self.rnn = nn.GRU(in_features, hidden_size, **kwargs)
        else:
            self.rnn = nn.LSTM(in_features, hidden_size, **kwargs)
        between = dropout_scheme == "between"
        self.input_dropout = nn.Dropout(input_dropout) if between and input_dropout > 0 else nn.Identity()
        self.dropout = nn.Dropout(dropout) if between and dropout > 0 else nn.Identity()
        width = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Linear(width * (seq_len if readout == "all" else 1), out_features)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.in_features == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise OptregValueError(
                f"models.{self.kind}: input must be (N, T, {self.in_features})"
                f"{' or (N, T)' if self.in_features == 1 else ''}, got shape {tuple(x.shape)}"
            )
        out, h = self.rnn(self.input_dropout(x))  # out: (N, T, dirs * H), the last layer's outputs
        if self.readout == "mean":
            return self.head(self.dropout(out.mean(dim=1)))
        if self.readout == "all":
            if out.shape[1] != self.seq_len:
                raise OptregValueError(
                    f"models.{self.kind}: readout 'all' was built for seq_len {self.seq_len} steps, got input "
                    f"of shape {tuple(x.shape)}"
                )
            return self.head(self.dropout(out.flatten(1)))
        if self.dropout_scheme != "between":  # the masked outputs (the mask of the last step is the readout's)
            return self.head(out[:, -1])
        if isinstance(h, tuple):  # LSTM: (h_n, c_n)
            h = h[0]
        dirs = 2 if self.rnn.bidirectional else 1
        last = torch.cat(list(h[-dirs:]), dim=1)  # the last layer's final state(s): (N, dirs * H)
        return self.head(self.dropout(last))


def build(spec: Mapping[str, Any]) -> nn.Module:
    """Validate ``spec`` (see the module docstring) and build the model.

    Bad specs raise :class:`~optreg.errors.OptregValueError` naming the key, the value and what is
    allowed. The result is an ``nn.Sequential`` with named layers (``fc1``, ``norm1``, ``act1``,
    ``drop1``, ..., ``out``) for ``mlp`` / ``cnn*``, a :class:`SequenceClassifier` for recurrent kinds.
    """
    s = validate(spec)
    if s["kind"] == "mlp":
        return _mlp(s)
    if s["kind"] in ("cnn1d", "cnn2d"):
        return _cnn(s)
    return SequenceClassifier(
        s["kind"],
        s["in_features"],
        s["hidden_size"],
        s["out_features"],
        num_layers=s["num_layers"],
        dropout=s["dropout"],
        bidirectional=s["bidirectional"],
        activation=s.get("activation", "tanh"),
        norm=s["norm"],
        readout=s["readout"],
        seq_len=s["seq_len"],
        dropout_scheme=s.get("dropout_scheme", "between"),
        input_dropout=s.get("input_dropout", 0.0),
    )


def count_parameters(model: nn.Module | Mapping[str, Any], *, trainable_only: bool = False) -> int:
    """The number of parameters of a module, or of the model a spec builds (buffers not counted)."""
    if isinstance(model, Mapping):
        model = build(model)
    if not isinstance(model, nn.Module):
        raise OptregValueError(f"models: count_parameters needs an nn.Module or a spec, got {model!r}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(spec: Mapping[str, Any]) -> str:
    """A one-line summary of a spec: the layer sizes, the options and the parameter count.

    >>> describe({"kind": "mlp", "in_features": 64, "hidden": [32], "out_features": 10})
    'mlp 64 -> 32 -> 10, activation relu, norm none, dropout 0; 2,410 parameters'
    """
    s = validate(spec)
    n = count_parameters(build(s))
    kind = s["kind"]
    if kind == "mlp":
        sizes = " -> ".join(map(str, [s["in_features"], *s["hidden"], s["out_features"]]))
        body = f"{sizes}, activation {s['activation']}, norm {s['norm'] or 'none'}, dropout {s['dropout']:g}"
    elif kind in ("cnn1d", "cnn2d"):
        shape = "x".join(map(str, s["input_shape"]))
        sizes = " -> ".join(map(str, [*s["hidden"], s["out_features"]]))
        body = (
            f"{s['in_channels']}x{shape} conv {s['channels']} (kernel {s['kernel_size']}, stride {s['stride']}, "
            f"padding {s['padding']}, pool {s['pool']})"
            f" -> {sizes}, activation {s['activation']}, norm {s['norm'] or 'none'}, dropout {s['dropout']:g}"
        )
    else:
        body = (
            f"{s['in_features']} -> {s['num_layers']} x {s['hidden_size']}"
            f"{' (bidirectional)' if s['bidirectional'] else ''} -> {s['out_features']}, "
            f"norm {s['norm'] or 'none'}, dropout {s['dropout']:g}"
            + (f" ({s['dropout_scheme']})" if s.get("dropout_scheme", "between") != "between" else "")
        )
    return f"{kind} {body}; {n:,} parameters"
