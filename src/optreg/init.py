r"""Parameter initialization: the chapter's section 7.3 and the strategies of file 002.

Every *scheme* is a function acting on a weight tensor **in place** and returning it, in the style of
``torch.nn.init`` (trailing underscore); each takes an optional ``torch.Generator`` so that the same
generator seed gives the same tensor. Where torch has the same math (uniform, normal, Xavier, Kaiming,
orthogonal) its kernel does the drawing.

Fans follow torch (``torch.nn.init._calculate_fan_in_and_fan_out``): for a weight of shape
``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``; the chapter's
:math:`n^{(l-1)}` is ``fan_in`` and :math:`n^{(l)}` is ``fan_out``.

The variance argument (eqs. 7.27-7.31): with independent zero-mean weights and inputs, a neuron
:math:`z^l = \sum_i w^l_i a^{(l-1)}_i` has :math:`\mathrm{var}[z^l] = n^{(l-1)} \mathrm{var}[w^l]
\mathrm{var}[a^{(l-1)}]`, so keeping the forward signal's variance asks for
:math:`\mathrm{var}[w] = 1/n^{(l-1)}` (7.32, LeCun), the backward signal's for :math:`1/n^{(l)}` (7.33),
and the compromise is :math:`2/(n^{(l-1)} + n^{(l)})` (7.34, Glorot & Bengio 2010). A uniform law on
:math:`[-r, r]` has variance :math:`r^2/3` (7.35 with :math:`b - a = 2r`), hence (7.36)
:math:`r = \sqrt{6/(n^{(l-1)} + n^{(l)})}`.

Errata (see the chapter README): the text's eq. (7.36) writes "n^1" for :math:`n^l` and says the target
variance is 1; it is :math:`2/(n^{(l-1)}+n^{(l)})` of eq. (7.34). Eqs. (7.25)/(7.26) swap the two
activations: Glorot & Bengio (2010) use :math:`r = \sqrt{6/(n^{l-1}+n^l)}` for **tanh** and four times
that for the **logistic** function. optreg implements the paper's form.

Gains (:func:`gain`), one table for Xavier and orthogonal init (``activation=``):

============================  =====================================================================
activation                    gain
============================  =====================================================================
``linear`` / ``identity``     1
``tanh``                      1 (Glorot & Bengio 2010: tanh is linear with slope 1 at 0)
``logistic`` / ``sigmoid``    4 (Glorot & Bengio 2010: the logistic's slope at 0 is 1/4)
``relu``                      :math:`\sqrt{2}` (He et al. 2015: ReLU halves the second moment)
``leaky_relu``                :math:`\sqrt{2/(1 + a^2)}`, ``a`` = ``negative_slope`` (He et al. 2015)
============================  =====================================================================

This is *not* torch's ``calculate_gain`` table for tanh (5/3) and sigmoid (1): torch's values come from
a different (empirical / fixed-point) argument, ours from the Glorot paper. ELU and GELU have no standard
gain; pass ``gain=`` explicitly for them.

Bias rules (file 002, "对于偏置的看法"): zero in most cases; 0.1 for ReLU hidden units so they do not start
saturated (:func:`constant_`); 1 for an LSTM's forget gate (:func:`lstm_forget_bias_`, Gers et al. 2000,
Jozefowicz et al. 2015); for an output softmax, :math:`\mathrm{softmax}(b) = c` with :math:`c` the class
marginals (:func:`marginal_bias_`). :func:`apply` walks a model and applies a scheme and a bias rule.

References: Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural
networks"; LeCun, Bottou, Orr & Müller (1998), "Efficient BackProp"; He, Zhang, Ren & Sun (2015),
"Delving deep into rectifiers"; Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear
dynamics of learning in deep linear neural networks"; Martens (2010), "Deep learning via Hessian-free
optimization"; Goodfellow, Bengio & Courville (2016), *Deep Learning*, section 8.4.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from optreg._checks import check_choice, check_int, check_nonneg, check_number, check_positive
from optreg.errors import OptregValueError

__all__ = [
    "BIAS_RULES",
    "GAIN_ACTIVATIONS",
    "apply",
    "available",
    "constant_",
    "fans",
    "gain",
    "gaussian_",
    "he_normal_",
    "he_uniform_",
    "initialize_",
    "lecun_normal_",
    "lecun_uniform_",
    "lstm_forget_bias_",
    "marginal_bias",
    "marginal_bias_",
    "orthogonal_",
    "sparse_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

_OWNER = "init"
#: The activations :func:`gain` knows (the ones a scheme can be told about).
GAIN_ACTIVATIONS = ("linear", "identity", "tanh", "logistic", "sigmoid", "relu", "leaky_relu")
_MODES = ("fan_in", "fan_out")


# --------------------------------------------------------------------------------------------- helpers


def _check_tensor(tensor: Any, owner: str, min_dim: int = 0) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise OptregValueError(f"{owner}: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < min_dim:
        raise OptregValueError(
            f"{owner}: tensor must have at least {min_dim} dimensions (out, in, ...), "
            f"got shape {tuple(tensor.shape)}"
        )
    return tensor


def _check_generator(generator: Any, owner: str) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise OptregValueError(f"{owner}: generator must be a torch.Generator or None, got {generator!r}")
    return generator


def fans(tensor: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight, computed like torch.

    For shape ``(out, in, *kernel)`` (Linear: ``(out, in)``, ConvNd: ``(out, in/groups, *kernel)``)
    ``fan_in = in * prod(kernel)`` is the chapter's :math:`n^{(l-1)}` and ``fan_out = out * prod(kernel)``
    its :math:`n^{(l)}`.
    """
    _check_tensor(tensor, "init.fans", min_dim=2)
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def gain(activation: str = "linear", negative_slope: float = 0.01) -> float:
    r"""The gain of an activation, after Glorot & Bengio (2010) and He et al. (2015).

    ``linear``/``identity``/``tanh``: 1; ``logistic``/``sigmoid``: 4; ``relu``: :math:`\sqrt 2`;
    ``leaky_relu``: :math:`\sqrt{2/(1+a^2)}` with ``a = negative_slope``. See the module docstring for
    why tanh is 1 and the logistic 4 (the chapter's eqs. 7.25/7.26 swap them; erratum).
    """
    check_choice(_OWNER, "activation", activation, GAIN_ACTIVATIONS)
    if activation in ("linear", "identity", "tanh"):
        return 1.0
    if activation in ("logistic", "sigmoid"):
        return 4.0
    if activation == "relu":
        return math.sqrt(2.0)
    a = check_nonneg(_OWNER, "negative_slope", negative_slope)
    return math.sqrt(2.0 / (1.0 + a * a))


def _resolve_gain(owner: str, activation: str, gain_: float | None, negative_slope: float) -> float:
    if gain_ is not None:
        return check_positive(owner, "gain", gain_)
    return gain(activation, negative_slope)


def _fan(tensor: torch.Tensor, mode: str, owner: str) -> int:
    check_choice(owner, "mode", mode, _MODES)
    fan_in, fan_out = fans(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise OptregValueError(f"{owner}: tensor of shape {tuple(tensor.shape)} has {mode} = 0")
    return fan


# --------------------------------------------------------------------------------------------- schemes


def zeros_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """All weights 0: the *symmetric weights* failure of section 7.3.

    With every weight equal, all hidden units of a layer compute the same activation in the forward pass
    and receive the same gradient in the backward pass, so they stay identical forever ("对称权重现象").
    Kept to demonstrate that failure; ``generator`` is accepted for a uniform interface and unused.
    """
    _check_tensor(tensor, "init.zeros")
    _check_generator(generator, "init.zeros")
    return nn.init.zeros_(tensor)


def constant_(
    tensor: torch.Tensor, value: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Every entry set to ``value`` (bias rules: 0, or 0.1 for ReLU units, file 002).

    As weights, any constant is as symmetric as :func:`zeros_`.
    """
    _check_tensor(tensor, "init.constant")
    _check_generator(generator, "init.constant")
    return nn.init.constant_(tensor, check_number("init.constant", "value", value))


def gaussian_(
    tensor: torch.Tensor,
    mean: float = 0.0,
    std: float = 0.1,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Gaussian init :math:`w \sim \mathcal N(\mu, \sigma^2)` (section 7.3.0.1).

    The chapter's example is mean 0 and *variance* 0.01, i.e. ``std = 0.1`` (the default).
    """
    owner = "init.gaussian"
    _check_tensor(tensor, owner)
    mean = check_number(owner, "mean", mean)
    std = check_nonneg(owner, "std", std)
    return nn.init.normal_(tensor, mean, std, generator=_check_generator(generator, owner))


def uniform_(
    tensor: torch.Tensor, r: float = 0.1, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Uniform init on :math:`[-r, r]` (section 7.3.0.2); variance :math:`r^2/3` by eq. (7.35)."""
    owner = "init.uniform"
    _check_tensor(tensor, owner)
    r = check_nonneg(owner, "r", r)
    return nn.init.uniform_(tensor, -r, r, generator=_check_generator(generator, owner))


def lecun_normal_(
    tensor: torch.Tensor, mode: str = "fan_in", *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""LeCun normal: :math:`w \sim \mathcal N(0, 1/n)`, eq. (7.32) with ``mode="fan_in"``
    (:math:`n = n^{(l-1)}`), eq. (7.33) with ``mode="fan_out"`` (:math:`n = n^{(l)}`).

    Section 7.3.0.1's :math:`\mathcal N(0, \sqrt{1/n_{in}})`; LeCun et al. (1998), "Efficient BackProp".
    """
    owner = "init.lecun_normal"
    _check_tensor(tensor, owner, min_dim=2)
    std = 1.0 / math.sqrt(_fan(tensor, mode, owner))
    return nn.init.normal_(tensor, 0.0, std, generator=_check_generator(generator, owner))


def lecun_uniform_(
    tensor: torch.Tensor, mode: str = "fan_in", *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""LeCun uniform: :math:`w \sim U[-r, r]`, :math:`r = \sqrt{3/n}`, so that :math:`\mathrm{var}[w] = 1/n`
    (eqs. 7.32 / 7.33 with 7.35). ``mode`` picks :math:`n = n^{(l-1)}` (``fan_in``) or :math:`n^{(l)}`.
    """
    owner = "init.lecun_uniform"
    _check_tensor(tensor, owner, min_dim=2)
    r = math.sqrt(3.0 / _fan(tensor, mode, owner))
    return nn.init.uniform_(tensor, -r, r, generator=_check_generator(generator, owner))


def xavier_uniform_(
    tensor: torch.Tensor,
    activation: str = "linear",
    gain: float | None = None,
    negative_slope: float = 0.01,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Xavier / Glorot uniform: :math:`w \sim U[-r, r]`,
    :math:`r = g\sqrt{6/(n^{(l-1)} + n^{(l)})}` (eq. 7.36, corrected), so
    :math:`\mathrm{var}[w] = g^2 \cdot 2/(n^{(l-1)} + n^{(l)})` (eq. 7.34).

    The gain :math:`g` comes from ``activation`` (:func:`gain`: tanh 1, logistic 4, relu
    :math:`\sqrt 2`...) unless ``gain`` is given. Erratum: the chapter's (7.25)/(7.26) give the factor 4 to
    tanh; Glorot & Bengio (2010) give it to the logistic function, as here. Drawn by
    ``torch.nn.init.xavier_uniform_``.
    """
    owner = "init.xavier_uniform"
    _check_tensor(tensor, owner, min_dim=2)
    g = _resolve_gain(owner, activation, gain, negative_slope)
    return nn.init.xavier_uniform_(tensor, gain=g, generator=_check_generator(generator, owner))


def xavier_normal_(
    tensor: torch.Tensor,
    activation: str = "linear",
    gain: float | None = None,
    negative_slope: float = 0.01,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Xavier / Glorot normal: :math:`w \sim \mathcal N(0, g^2 \cdot 2/(n^{(l-1)} + n^{(l)}))` (eq. 7.34,
    section 7.3.0.1's :math:`\mathcal N(0, \sqrt{2/(n_{in}+n_{out})})`), gain as in :func:`xavier_uniform_`.
    Glorot & Bengio (2010); drawn by ``torch.nn.init.xavier_normal_``.
    """
    owner = "init.xavier_normal"
    _check_tensor(tensor, owner, min_dim=2)
    g = _resolve_gain(owner, activation, gain, negative_slope)
    return nn.init.xavier_normal_(tensor, gain=g, generator=_check_generator(generator, owner))


def _he_kwargs(
    owner: str, tensor: torch.Tensor, mode: str, activation: str, negative_slope: float, generator: Any
) -> dict[str, Any]:
    """Validate a He call; return the keyword arguments of torch's ``kaiming_*_`` (ReLU = leaky, a = 0)."""
    _check_tensor(tensor, owner, min_dim=2)
    check_choice(owner, "activation", activation, ("relu", "leaky_relu"))
    _fan(tensor, mode, owner)
    a = check_nonneg(owner, "negative_slope", negative_slope) if activation == "leaky_relu" else 0.0
    return {
        "a": a,
        "mode": mode,
        "nonlinearity": "leaky_relu",
        "generator": _check_generator(generator, owner),
    }


def he_normal_(
    tensor: torch.Tensor,
    mode: str = "fan_in",
    activation: str = "relu",
    negative_slope: float = 0.01,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""He / Kaiming normal: :math:`w \sim \mathcal N(0, 2/((1+a^2)\,n))`, with :math:`n` the fan of ``mode``
    (``fan_in`` keeps the forward variance, ``fan_out`` the backward one) and :math:`a` the leaky-ReLU
    slope (0 for ``relu``). Eq. (7.32) / (7.33) times the ReLU factor 2: a ReLU keeps half the second
    moment. He et al. (2015); drawn by ``torch.nn.init.kaiming_normal_``.
    """
    kwargs = _he_kwargs("init.he_normal", tensor, mode, activation, negative_slope, generator)
    return nn.init.kaiming_normal_(tensor, **kwargs)


def he_uniform_(
    tensor: torch.Tensor,
    mode: str = "fan_in",
    activation: str = "relu",
    negative_slope: float = 0.01,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""He / Kaiming uniform: :math:`w \sim U[-r, r]`, :math:`r = \sqrt{6/((1+a^2)\,n)}`, the same variance
    as :func:`he_normal_` (eq. 7.35). He et al. (2015); drawn by ``torch.nn.init.kaiming_uniform_``.
    """
    kwargs = _he_kwargs("init.he_uniform", tensor, mode, activation, negative_slope, generator)
    return nn.init.kaiming_uniform_(tensor, **kwargs)


def orthogonal_(
    tensor: torch.Tensor,
    activation: str = "linear",
    gain: float | None = None,
    negative_slope: float = 0.01,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""A random (semi-)orthogonal matrix times a gain :math:`g` (file 002: "随机正交矩阵 ... 增益因子 g").

    The weight is viewed as a ``(out, in * prod(kernel))`` matrix :math:`W`; :math:`W W^\top = g^2 I`
    when ``out <= in``, :math:`W^\top W = g^2 I` otherwise. Every singular value equals :math:`g`, so a
    deep *linear* network's input-output map neither grows nor shrinks any direction (Saxe, McClelland &
    Ganguli 2014). The gain comes from ``activation`` as in :func:`gain` unless ``gain`` is given. Drawn
    by ``torch.nn.init.orthogonal_`` (QR of a Gaussian matrix with the sign fix of Mezzadri 2007).
    """
    owner = "init.orthogonal"
    _check_tensor(tensor, owner, min_dim=2)
    g = _resolve_gain(owner, activation, gain, negative_slope)
    return nn.init.orthogonal_(tensor, gain=g, generator=_check_generator(generator, owner))


def sparse_(
    tensor: torch.Tensor,
    k: int = 15,
    std: float = 1.0,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Sparse init (Martens 2010): each unit gets **exactly** ``k`` non-zero incoming weights.

    For a weight of shape ``(out, in, *kernel)`` a unit is a row of the ``(out, fan_in)`` matrix; in each
    row ``k`` positions are drawn without replacement and filled from :math:`\mathcal N(0, \sigma^2)`
    (Martens used :math:`k = 15` and unit Gaussians, the defaults), the rest are 0. Unlike dense schemes,
    the size of each weight does not shrink with the fan-in, which keeps units diverse in wide layers
    (file 002). Not torch's ``sparse_``, which zeroes a *fraction* of each column.
    """
    owner = "init.sparse"
    _check_tensor(tensor, owner, min_dim=2)
    k = check_int(owner, "k", k, low=1)
    std = check_positive(owner, "std", std)
    generator = _check_generator(generator, owner)
    fan_in, _ = fans(tensor)
    if k > fan_in:
        raise OptregValueError(
            f"{owner}: k must be <= fan_in = {fan_in} for a weight of shape {tuple(tensor.shape)}, got {k}"
        )
    rows = tensor.shape[0]
    with torch.no_grad():
        # k smallest of `rows` independent uniform keys = a uniformly random k-subset per row.
        keys = torch.rand(rows, fan_in, generator=generator)
        idx = keys.argsort(dim=1)[:, :k]
        values = torch.randn(rows, k, generator=generator, dtype=tensor.dtype) * std
        dense = torch.zeros(rows, fan_in, dtype=tensor.dtype)
        dense.scatter_(1, idx, values)
        tensor.copy_(dense.reshape(tensor.shape).to(tensor.device))
    return tensor


# ------------------------------------------------------------------------------------------ bias rules


def marginal_bias(class_prior: Sequence[float] | torch.Tensor) -> torch.Tensor:
    r"""The output bias :math:`b` with :math:`\mathrm{softmax}(b) = c` (file 002's output-unit rule).

    :math:`b = \log c - \overline{\log c}` (the mean-centred log of the class marginals; any constant shift
    gives the same softmax, centring makes :math:`\sum_k b_k = 0`). ``class_prior`` may be probabilities or
    counts: it is normalised to sum 1; every entry must be > 0 (a class of probability 0 needs
    :math:`b = -\infty`). With small output weights the network starts out predicting the marginals.
    """
    owner = "init.marginal_bias"
    try:
        c = torch.as_tensor(class_prior, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise OptregValueError(
            f"{owner}: class_prior must be a sequence of numbers, got {class_prior!r}"
        ) from exc
    if c.dim() != 1 or c.numel() < 1:
        raise OptregValueError(
            f"{owner}: class_prior must be a non-empty 1-D sequence, got shape {tuple(c.shape)}"
        )
    if not torch.isfinite(c).all() or (c <= 0).any():
        raise OptregValueError(f"{owner}: class_prior entries must be finite and > 0, got {c.tolist()}")
    logc = torch.log(c / c.sum())
    return logc - logc.mean()


def marginal_bias_(bias: torch.Tensor, class_prior: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Set ``bias`` in place to :func:`marginal_bias` of ``class_prior`` (lengths must match)."""
    owner = "init.marginal_bias"
    _check_tensor(bias, owner)
    b = marginal_bias(class_prior)
    if bias.dim() != 1 or bias.numel() != b.numel():
        raise OptregValueError(
            f"{owner}: class_prior has {b.numel()} classes but the bias has shape {tuple(bias.shape)}"
        )
    with torch.no_grad():
        bias.copy_(b.to(dtype=bias.dtype, device=bias.device))
    return bias


def _lstm_biases(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """``(bias_ih, bias_hh, hidden_size)`` for each layer/direction of an nn.LSTM or nn.LSTMCell."""
    if isinstance(module, nn.LSTMCell):
        if module.bias:
            return [(module.bias_ih, module.bias_hh, module.hidden_size)]
        return []
    if isinstance(module, nn.LSTM):
        if not module.bias:
            return []
        out = []
        for layer in range(module.num_layers):
            for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
                out.append(
                    (
                        getattr(module, f"bias_ih_l{layer}{suffix}"),
                        getattr(module, f"bias_hh_l{layer}{suffix}"),
                        module.hidden_size,
                    )
                )
        return out
    raise OptregValueError(
        f"init.lstm_forget_bias: module must be an nn.LSTM or nn.LSTMCell, got {type(module).__name__}"
    )


def lstm_forget_bias_(module: nn.LSTM | nn.LSTMCell, value: float = 1.0) -> nn.Module:
    r"""Set the forget-gate bias of every layer (and direction) of an LSTM to ``value`` (file 002: 1).

    torch stacks the gates as :math:`(i, f, g, o)`, so the forget gate is rows ``[H, 2H)`` of
    ``bias_ih`` and ``bias_hh``, and its pre-activation is :math:`W_{if} x + b_{if} + W_{hf} h + b_{hf}`:
    only the **sum** :math:`b_{if} + b_{hf}` matters. optreg puts the whole ``value`` in ``bias_ih``
    and sets ``bias_hh``'s forget rows to 0, so the effective forget bias is exactly ``value`` (what Keras'
    ``unit_forget_bias`` gives with its single bias). The other gates' biases are left alone. A forget
    bias of 1 keeps the cell remembering at the start of training (Gers, Schmidhuber & Cummins 2000;
    Jozefowicz, Zaremba & Sutskever 2015). Returns the module.
    """
    value = check_number("init.lstm_forget_bias", "value", value)
    with torch.no_grad():
        for b_ih, b_hh, h in _lstm_biases(module):
            b_ih[h : 2 * h].fill_(value)
            b_hh[h : 2 * h].zero_()
    return module


# ---------------------------------------------------------------------------------- registry, dispatch

_SCHEMES: dict[str, Callable[..., torch.Tensor]] = {
    "zeros": zeros_,
    "constant": constant_,
    "gaussian": gaussian_,
    "normal": gaussian_,
    "uniform": uniform_,
    "lecun_normal": lecun_normal_,
    "lecun_uniform": lecun_uniform_,
    "xavier_uniform": xavier_uniform_,
    "xavier_normal": xavier_normal_,
    "glorot_uniform": xavier_uniform_,
    "glorot_normal": xavier_normal_,
    "he_normal": he_normal_,
    "he_uniform": he_uniform_,
    "kaiming_normal": he_normal_,
    "kaiming_uniform": he_uniform_,
    "orthogonal": orthogonal_,
    "sparse": sparse_,
}


def available() -> list[str]:
    """The names of the schemes (aliases included: ``normal`` = ``gaussian``, ``glorot_*`` = ``xavier_*``,
    ``kaiming_*`` = ``he_*``), sorted."""
    return sorted(_SCHEMES)


def _scheme(name: Any) -> Callable[..., torch.Tensor]:
    if not isinstance(name, str) or name not in _SCHEMES:
        raise OptregValueError(f"init: scheme must be one of {', '.join(available())}; got {name!r}")
    return _SCHEMES[name]


def _options(fn: Callable[..., torch.Tensor]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters
    return {n: p for n, p in params.items() if n not in ("tensor", "generator")}


def _check_options(name: str, options: dict[str, Any]) -> Callable[..., torch.Tensor]:
    fn = _scheme(name)
    allowed = _options(fn)
    for key in options:
        if key not in allowed:
            listed = ", ".join(allowed) or "none"
            raise OptregValueError(f"init.{name}: unknown option {key!r} (its options: {listed})")
    for key, p in allowed.items():
        if p.default is inspect.Parameter.empty and key not in options:
            raise OptregValueError(f"init.{name}: option {key!r} is required")
    return fn


def initialize_(
    tensor: torch.Tensor, scheme: str, *, generator: torch.Generator | None = None, **options: Any
) -> torch.Tensor:
    """Initialize ``tensor`` in place with the scheme named ``scheme`` (see :func:`available`) and its
    ``options`` (e.g. ``initialize_(w, "he_normal", mode="fan_out")``); unknown names raise
    :class:`~optreg.errors.OptregValueError`."""
    return _check_options(scheme, options)(tensor, generator=generator, **options)


# ------------------------------------------------------------------------------------------------ apply

BIAS_RULES = ("zeros", "relu", "lstm_forget", "marginal")
"""The named bias rules of :func:`apply` (file 002), besides a number (a constant) and ``None``."""

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd | nn.RNNBase)]


def _init_weights(
    module: nn.Module, fn: Callable[..., torch.Tensor], generator: torch.Generator | None, options: dict
) -> None:
    if nn.utils.parametrize.is_parametrized(module, "weight"):
        # e.g. weight normalization (optreg.nn.norm.weight_norm): draw W, then assign it, so the
        # parametrization's right_inverse sets its own parameters (g = ||W_i||, v = W) from it
        weight = module.weight.detach().clone()
        fn(weight, generator=generator, **options)
        module.weight = weight
        return
    if not isinstance(module, nn.RNNBase):
        fn(module.weight, generator=generator, **options)
        return
    gates = _GATES[module.mode]
    for pname, p in module.named_parameters(recurse=False):
        if not pname.startswith("weight_"):
            continue
        # weight_ih / weight_hh stack the gates along dim 0: each gate is its own (H, n) layer.
        chunks = p.data.chunk(gates, dim=0) if pname.startswith(("weight_ih", "weight_hh")) else (p.data,)
        for chunk in chunks:
            fn(chunk, generator=generator, **options)


def _biases(module: nn.Module) -> list[torch.Tensor]:
    if isinstance(module, nn.RNNBase):
        return [p for n, p in module.named_parameters(recurse=False) if n.startswith("bias_")]
    return [module.bias] if getattr(module, "bias", None) is not None else []


def _bias_rules(bias: Any) -> list[Any]:
    rules = list(bias) if isinstance(bias, list | tuple) else [bias]
    if not rules:
        raise OptregValueError("init: bias must not be an empty list")
    for rule in rules:
        if isinstance(rule, str):
            check_choice(_OWNER, "bias", rule, BIAS_RULES)
        else:
            check_number(_OWNER, "bias", rule)
    return rules


def apply(
    model: nn.Module,
    scheme: str,
    *,
    bias: str | float | Sequence[str | float] | None = "zeros",
    activation: str | None = None,
    generator: torch.Generator | None = None,
    class_prior: Sequence[float] | torch.Tensor | None = None,
    relu_bias: float = 0.1,
    forget_bias: float = 1.0,
    **options: Any,
) -> nn.Module:
    """Initialize every Linear / ConvNd / RNN / LSTM / GRU of ``model`` in place and return ``model``.

    Weights get ``scheme`` with ``options`` (see :func:`initialize_`); the layers are visited in
    ``model.modules()`` order, so one ``generator`` gives reproducible weights. Recurrent weights
    ``weight_ih`` / ``weight_hh`` stack the gates (LSTM ``i, f, g, o``; GRU ``r, z, n``) along dim 0:
    each gate block is initialized as a separate ``(hidden, n)`` matrix (so ``orthogonal`` gives an
    orthogonal matrix per gate, and the fans are those of one gate). Normalization layers are left alone.

    ``activation`` is the model's nonlinearity; it is passed to the schemes that depend on it (Xavier,
    He, orthogonal: the gain of :func:`gain`) and ignored by the others (``None``: each scheme's default).

    ``bias`` (file 002's rules): ``None`` leaves biases as they are; otherwise every bias of those layers is
    first set to 0, then each rule (a name or a list of names, applied in order) does its part:

    - ``"zeros"``: nothing more (the default; "大多数情况设置为零是没有问题的");
    - a number: every bias set to that constant;
    - ``"relu"``: the biases of the hidden Linear / Conv layers (all but the *output layer*, the last
      ``nn.Linear`` in ``model.modules()`` order) set to ``relu_bias`` (0.1), so ReLU units start active;
    - ``"lstm_forget"``: LSTM forget-gate biases set to ``forget_bias`` (1), as :func:`lstm_forget_bias_`;
    - ``"marginal"``: the output layer's bias set so that ``softmax(b) = class_prior``
      (:func:`marginal_bias`).

    E.g. ``apply(model, "he_normal", bias=["relu", "marginal"], class_prior=c)``.
    """
    if not isinstance(model, nn.Module):
        raise OptregValueError(f"init.apply: model must be a torch.nn.Module, got {type(model).__name__}")
    _check_generator(generator, "init.apply")
    fn = _scheme(scheme)
    accepted = _options(fn)
    if activation is not None and "activation" in accepted:
        options = {**options, "activation": activation}
    elif activation is not None:
        check_choice(_OWNER, "activation", activation, GAIN_ACTIVATIONS + ("elu", "gelu"))
    _check_options(scheme, options)
    rules = _bias_rules(bias) if bias is not None else []
    relu_bias = check_number(_OWNER, "relu_bias", relu_bias)
    forget_bias = check_number(_OWNER, "forget_bias", forget_bias)
    if "marginal" in rules and class_prior is None:
        raise OptregValueError("init.apply: bias rule 'marginal' needs class_prior (the class marginals c)")
    if class_prior is not None and "marginal" not in rules:
        raise OptregValueError("init.apply: class_prior is given but bias has no 'marginal' rule")

    layers = _weight_layers(model)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    output = linears[-1] if linears else None
    if ("marginal" in rules or "relu" in rules) and output is None:
        raise OptregValueError("init.apply: bias rules 'relu' / 'marginal' need an nn.Linear output layer")

    with torch.no_grad():
        for module in layers:
            _init_weights(module, fn, generator, options)
        if not rules:
            return model
        for module in layers:
            for b in _biases(module):
                b.zero_()
        for rule in rules:
            if not isinstance(rule, str):
                for module in layers:
                    for b in _biases(module):
                        b.fill_(float(rule))
            elif rule == "relu":
                for module in layers:
                    if module is not output and not isinstance(module, nn.RNNBase):
                        for b in _biases(module):
                            b.fill_(relu_bias)
            elif rule == "lstm_forget":
                for module in layers:
                    if isinstance(module, nn.LSTM):
                        lstm_forget_bias_(module, forget_bias)
            elif rule == "marginal":
                if output.bias is None:
                    raise OptregValueError(
                        "init.apply: bias rule 'marginal' needs an output layer with a bias"
                    )
                marginal_bias_(output.bias, class_prior)
    return model
