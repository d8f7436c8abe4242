"""Neural architecture search (7.6.4.1, Zoph & Le 2017): a controller RNN emits an architecture, trained by
REINFORCE with the validation accuracy as reward.

The method ``nas`` works on any space of :class:`~optreg.hpo.Categorical`, :class:`~optreg.hpo.Int` and
discretized :class:`~optreg.hpo.Float` parameters, conditional ones included; :func:`nas_space` is the
space of the lab's MLP builder (:mod:`optreg.nn.models`) and :func:`nas_to_model_spec` turns a trial's
parameters into the model spec::

    space = hpo.nas_space(max_layers=3, widths=(32, 64, 128), activations=("relu", "tanh"))
    study = hpo.maximize(lambda p: val_accuracy(hpo.nas_to_model_spec(p)), space, method="nas",
                         n_trials=100, seed=0)

**The controller** (:class:`Controller`) is an LSTM (or GRU) cell that emits one token per active
parameter, in the order of :attr:`Space.names <optreg.hpo.Space.names>` (a parent before the parameters
its value switches on). At step ``t`` it reads ``x_t = e(a_{t-1}) + q_t`` (the embedding of the previous
choice, a learned start vector at ``t = 1``, plus an embedding ``q_t`` of the parameter being chosen), updates
its state ``h_t = cell(x_t, h_{t-1})`` and draws the choice ``a_t`` from ``softmax(W_t h_t + c_t)``, a head of
its own for each parameter over that parameter's values. A parameter whose condition fails given the
choices so far (``width_3`` when ``layers = 2``) gets no token; a :class:`~optreg.hpo.Fixed` one none either.
So ``p(a) = prod_t softmax(W_t h_t + c_t)[a_t]`` over the emitted tokens (Zoph & Le, section 3.1).

**Training** (Zoph & Le, section 3.2, eq. 2 with a baseline): for a completed trial with reward ``R`` (the
trial's value when maximizing, minus it when minimizing) and baseline ``b``, the controller descends

    L(theta) = -(R - b) log p_theta(a) - beta H(a),     grad L = -(R - b) grad log p_theta(a) - beta grad H

(REINFORCE, Williams 1992; ``H = -sum_t sum_k p_tk log p_tk``, the entropy of the emitted steps' softmaxes,
an exploration bonus with weight ``beta = entropy``, 0.01 by default). For one token with logits ``z``,
``d log p(a) / dz = onehot(a) - softmax(z)``. The gradient is averaged over ``batch_size`` trials (Zoph &
Le's m children) and applied by Adam (``lr``; Zoph & Le use Adam too). The baseline is the exponential
moving average of the earlier rewards, ``b_k = d b_{k-1} + (1 - d) R_k`` (``d = baseline_decay``), started
at the first reward (so the first trial's advantage is 0); trial ``k``'s advantage is ``R_k - b_{k-1}``.
Failed trials give no update (no reward).

**Resume and determinism.** The controller's weights are drawn from a ``torch.Generator`` seeded by the
study's seed (uniform in ``[-0.08, 0.08]``, Zoph & Le's init), and trial ``k``'s tokens from a generator
seeded by ``(seed, k)``; the global RNGs of torch and numpy are never touched. The controller is a
function of the stored trials: its state (weights, Adam's moments, the baseline) is what replaying the
complete trials in number order gives. A running process keeps that state and only replays the trials it
has not seen (the same operations in the same order, so the same bits); a resumed study, or a worker that
sees trials complete out of order, replays them all from the start. Resuming a killed study therefore
continues exactly as if it had never stopped.

**Floats and large integer ranges.** The controller chooses among finitely many values. A Float is
discretized into ``grid`` values (``grid=5`` for every Float, or ``grid={"lr": 7, ...}`` per name) spread
on its scale by :meth:`Float.grid <optreg.hpo.Float.grid>` (geometric when ``log=True``); a Float without
a grid is an error naming it. An Int takes all its values unless ``grid`` names it (then
:meth:`Int.grid <optreg.hpo.Int.grid>`'s values); an Int with more than :data:`MAX_CHOICES` values needs a
grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from optreg._checks import check_choice, check_int, check_nonneg, check_positive, check_unit
from optreg.errors import OptregValueError
from optreg.hpo.method import Method, one_blas_thread, register
from optreg.hpo.space import Categorical, Distribution, Fixed, Float, Int, Space, _same
from optreg.hpo.trial import Proposal, Trial

__all__ = ["CELLS", "MAX_CHOICES", "NAS", "Controller", "ControllerState", "nas_space", "nas_to_model_spec"]

#: The controller's recurrent cells.
CELLS = ("lstm", "gru")
#: The most values one token may choose among (an Int with more needs ``grid``).
MAX_CHOICES = 1024
#: Zoph & Le's initialization: every controller weight uniform in [-INIT_RANGE, INIT_RANGE].
INIT_RANGE = 0.08
_DTYPE = torch.float64


def choices_of(space: Space, grid: int | Mapping[str, int] | None, owner: str = "nas") -> dict[str, tuple[Any, ...]]:
    """The finite set of values of every non-Fixed parameter of ``space`` (see the module docstring)."""
    if grid is not None and not isinstance(grid, Mapping):
        grid = {n: check_int(owner, "grid", grid, 2) for n, d in space.dists.items() if isinstance(d, Float)}
    grid = dict(grid or {})
    for n, k in grid.items():
        d = space.dists.get(n)
        if not isinstance(d, Float | Int):
            raise OptregValueError(
                f"{owner}: grid names a parameter that is not a Float or Int of the space, got {n!r}"
            )
        check_int(owner, f"grid[{n!r}]", k, 2)
    out: dict[str, tuple[Any, ...]] = {}
    for n, d in space.dists.items():
        if isinstance(d, Fixed):
            continue
        if isinstance(d, Categorical):
            values: tuple[Any, ...] = d.choices
        elif n in grid:
            values = tuple(d.grid(grid[n]))
        elif isinstance(d, Float):
            raise OptregValueError(
                f"{owner}: space[{n!r}] is a Float, which the controller can only choose on a grid: pass grid=K "
                f"(K values per Float, geometric when log=True) or grid={{{n!r}: K}}, got {d!r} with no grid"
            )
        else:
            if d.high - d.low + 1 > MAX_CHOICES:
                raise OptregValueError(
                    f"{owner}: space[{n!r}] has {d.high - d.low + 1} values, more than {MAX_CHOICES} tokens: pass "
                    f"grid={{{n!r}: K}} to choose among K of them, got {d!r}"
                )
            values = tuple(range(d.low, d.high + 1))
        out[n] = values
    return out


class Path(NamedTuple):
    """One pass of the controller: the architecture (``params``, Fixed parameters included), the summed
    ``log_prob`` of its tokens, the summed ``entropy`` of their softmaxes, and per token its parameter's name
    and ``logits`` (the tensors of the graph, for gradients)."""

    params: dict[str, Any]
    log_prob: Tensor
    entropy: Tensor
    tokens: list[tuple[str, Tensor]]


class Controller(nn.Module):
    """The controller RNN of Zoph & Le (2017): one token per active parameter (module docstring).

    ``choices``: the values of every parameter that gets a token (:func:`choices_of`); ``seed`` seeds the
    initialization (its own generator; the global RNG is left alone).
    """

    def __init__(
        self, space: Space, choices: Mapping[str, Sequence[Any]], *, hidden: int = 64, cell: str = "lstm", seed: int = 0
    ) -> None:
        super().__init__()
        self.space = space
        self.choices = {n: tuple(choices[n]) for n in space.names if n in choices}
        self.order = tuple(self.choices)
        self.hidden = hidden
        self.cell_kind = cell
        kw = {"dtype": _DTYPE}
        n_tok = max(1, len(self.order))
        with torch.random.fork_rng(devices=[]):  # torch's default init draws from the global RNG: restore it
            self.start = nn.Parameter(torch.empty(hidden, **kw))
            self.query = nn.Embedding(n_tok, hidden, **kw)
            self.embed = nn.ModuleList(nn.Embedding(len(self.choices[n]), hidden, **kw) for n in self.order)
            self.heads = nn.ModuleList(nn.Linear(hidden, len(self.choices[n]), **kw) for n in self.order)
            self.cell = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(hidden, hidden, **kw)
        g = torch.Generator().manual_seed(_torch_seed(seed, 0))  # the weights: from the seed alone
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-INIT_RANGE, INIT_RANGE, generator=g)
        self._slot = {n: i for i, n in enumerate(self.order)}

    def index(self, name: str, value: Any) -> int | None:
        """The token of ``value`` among ``name``'s choices (``None`` if it is not one of them)."""
        return next((k for k, c in enumerate(self.choices[name]) if _same(c, value)), None)

    def walk(self, params: Mapping[str, Any] | None = None, generator: torch.Generator | None = None) -> Path | None:
        """Sample an architecture (``params=None``, tokens drawn with ``generator``), or score ``params`` (the
        tokens are its values: teacher forcing). ``None`` when ``params`` has a value off the choices."""
        h = torch.zeros(1, self.hidden, dtype=_DTYPE)
        c = torch.zeros_like(h)
        x = self.start
        out: dict[str, Any] = {}
        log_prob = torch.zeros((), dtype=_DTYPE)
        entropy = torch.zeros((), dtype=_DTYPE)
        tokens: list[tuple[str, Tensor]] = []
        for n in self.space.names:
            if not self.space.active(n, out):
                continue
            d = self.space.dists[n]
            if isinstance(d, Fixed):
                out[n] = d.value
                continue
            i = self._slot[n]
            inp = (x + self.query.weight[i]).unsqueeze(0)
            if self.cell_kind == "lstm":
                h, c = self.cell(inp, (h, c))
            else:
                h = self.cell(inp, h)
            logits = self.heads[i](h)[0]
            logp = torch.log_softmax(logits, dim=0)
            if params is None:
                k = int(torch.multinomial(logp.detach().exp(), 1, generator=generator))
            else:
                if n not in params:
                    return None
                found = self.index(n, params[n])
                if found is None:
                    return None
                k = found
            log_prob = log_prob + logp[k]
            entropy = entropy - (logp.exp() * logp).sum()
            tokens.append((n, logits))
            out[n] = self.choices[n][k]
            x = self.embed[i].weight[k]
        return Path(self.space._ordered(out), log_prob, entropy, tokens)

    def probability(self, params: Mapping[str, Any]) -> float:
        """``p(params)``, the probability that the controller emits this architecture (0 if it cannot)."""
        with torch.no_grad():
            path = self.walk(params)
        return 0.0 if path is None else math.exp(float(path.log_prob))

    def sample(self, generator: torch.Generator) -> Path:
        """One architecture drawn from the controller (no gradient kept)."""
        with torch.no_grad():
            path = self.walk(None, generator)
        assert path is not None
        return path


def _torch_seed(*key: int) -> int:
    """A 64-bit seed for ``torch.Generator.manual_seed`` determined by ``key`` (the study's seed, a number)."""
    a, b = np.random.SeedSequence(list(key)).generate_state(2, np.uint32)
    return (int(a) << 32) | int(b)


@dataclass
class ControllerState:
    """What replaying the complete trials gives: the controller, its Adam optimizer, the baseline ``b``
    (``None`` before the first reward), the rewards seen, the updates done, and the losses of the current,
    not yet full batch. ``seen`` lists the numbers of the trials replayed (a complete trial never changes)."""

    controller: Controller
    optimizer: torch.optim.Optimizer
    baseline: float | None = None
    n_rewards: int = 0
    n_updates: int = 0
    pending: list[Tensor] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)


@register
class NAS(Method):
    """``nas``: neural architecture search by a controller RNN trained with REINFORCE (7.6.4.1, Zoph & Le 2017).

    Options: ``hidden`` (the cell's size, 64), ``cell`` (``"lstm"`` or ``"gru"``), ``lr`` (Adam's, 0.005),
    ``baseline_decay`` (``d`` of the moving-average baseline, 0.9), ``entropy`` (the bonus weight ``beta``,
    0.01), ``batch_size`` (trials per update, 1), ``grid`` (the discretization of Floats and large Ints). The
    reward is the trial's value (maximize) or its negative (minimize), used as it is: the accuracy in
    ``[0, 1]`` is its intended scale. See the module docstring for the equations.
    """

    name = "nas"

    def __init__(
        self,
        space: Space,
        *,
        seed: int,
        n_trials: int | None,
        direction: str,
        hidden: int = 64,
        cell: str = "lstm",
        lr: float = 0.005,
        baseline_decay: float = 0.9,
        entropy: float = 0.01,
        batch_size: int = 1,
        grid: int | Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.hidden = check_int(self.name, "hidden", hidden, 1)
        self.cell = check_choice(self.name, "cell", cell, CELLS)
        self.lr = check_positive(self.name, "lr", lr)
        self.baseline_decay = check_unit(self.name, "baseline_decay", baseline_decay)
        self.entropy = check_nonneg(self.name, "entropy", entropy)
        self.batch_size = check_int(self.name, "batch_size", batch_size, 1)
        self.choices = choices_of(space, grid, self.name)
        self.grid = grid if grid is None or isinstance(grid, int) else dict(grid)
        self._state: ControllerState | None = None

    def identity(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "cell": self.cell, "lr": self.lr, "baseline_decay": self.baseline_decay,
                "entropy": self.entropy, "batch_size": self.batch_size, "grid": self.grid}  # fmt: skip

    def reward(self, trial: Trial) -> float:
        """``R``: the value of a complete trial, negated when minimizing."""
        return -self.loss(trial)

    def fresh(self) -> ControllerState:
        """The controller before any trial (weights from the seed)."""
        controller = Controller(self.space, self.choices, hidden=self.hidden, cell=self.cell, seed=self.seed)
        return ControllerState(controller, torch.optim.Adam(controller.parameters(), lr=self.lr, foreach=True))

    def observe(self, state: ControllerState, params: Mapping[str, Any], reward: float) -> None:
        """One REINFORCE observation: advantage ``R - b``, the baseline's update, and a step of Adam on the
        mean surrogate loss once ``batch_size`` observations are pending."""
        path = state.controller.walk(params)
        if path is None:  # off the controller's choices: nothing to learn from
            return
        b = reward if state.baseline is None else state.baseline
        advantage = reward - b
        state.baseline = self.baseline_decay * b + (1.0 - self.baseline_decay) * reward
        state.n_rewards += 1
        if not path.tokens:  # a space of Fixed parameters: nothing to choose, nothing to learn
            return
        state.pending.append(-advantage * path.log_prob - self.entropy * path.entropy)
        if len(state.pending) == self.batch_size:
            state.optimizer.zero_grad()
            torch.stack(state.pending).mean().backward()
            state.optimizer.step()
            state.pending = []
            state.n_updates += 1

    def state(self, trials: Sequence[Trial]) -> ControllerState:
        """The controller trained on the complete ``trials`` in number order (replayed where not seen yet)."""
        done = [t for t in trials if t.state == "complete" and t.value is not None]
        numbers = [t.number for t in done]
        state = self._state
        if state is None or state.seen != numbers[: len(state.seen)]:
            state = self.fresh()
        # one thread: these ops are tiny (threads only slow them down) and the bits do not depend on the caller's
        with torch.enable_grad(), one_blas_thread():
            for t in done[len(state.seen) :]:
                self.observe(state, t.params, self.reward(t))
                state.seen.append(t.number)
        self._state = state
        return state

    def propose(self, trials: Sequence[Trial]) -> Proposal | None:
        if self.capped(trials):
            return None
        number = len(trials)
        state = self.state(trials)
        with one_blas_thread():
            path = state.controller.sample(torch.Generator().manual_seed(_torch_seed(self.seed, number, 1)))
        meta = {"log_prob": float(path.log_prob), "baseline": state.baseline}
        return Proposal(path.params, meta=meta)


# ------------------------------------------------------------------------------------------- the lab's MLP
def nas_space(
    *,
    max_layers: int = 3,
    min_layers: int = 1,
    widths: Sequence[int] = (32, 64, 128, 256),
    activations: Sequence[str] = ("relu", "tanh", "gelu"),
    norms: Sequence[str] = ("none", "batch", "layer"),
    dropouts: Sequence[float] = (0.0, 0.1, 0.3),
) -> dict[str, Distribution]:
    """The search space of the lab's MLP (:mod:`optreg.nn.models`, ``kind = "mlp"``): ``layers`` (hidden
    layers, ``min_layers`` to ``max_layers``), ``width_1`` .. ``width_K`` (``width_k`` exists only when
    ``layers >= k``), ``activation``, ``norm`` and ``dropout`` (one value for every hidden layer, as the
    builder takes them). A list with one value becomes a :class:`~optreg.hpo.Fixed`. Turn a trial's params
    into a model spec with :func:`nas_to_model_spec`."""
    from optreg.nn.models import ACTIVATIONS, NORMS_BY_KIND

    owner = "nas_space"
    check_int(owner, "min_layers", min_layers, 0)
    check_int(owner, "max_layers", max_layers, max(1, min_layers))

    def values(name: str, seq: Any, check: Any) -> tuple[Any, ...]:
        if isinstance(seq, str | bytes) or not isinstance(seq, Sequence) or not seq:
            raise OptregValueError(f"{owner}: {name} must be a non-empty list, got {seq!r}")
        return tuple(check(v) for v in seq)

    ws = values("widths", widths, lambda v: check_int(owner, "widths", v, 1))
    acts = values("activations", activations, lambda v: check_choice(owner, "activations", v, ACTIVATIONS))
    mlp_norms = ("none", *(n for n in NORMS_BY_KIND["mlp"] if n is not None))
    ns = values("norms", norms, lambda v: check_choice(owner, "norms", "none" if v is None else v, mlp_norms))
    ds = values("dropouts", dropouts, lambda v: _check_dropout(owner, v))

    def dist(vals: tuple[Any, ...], when: Any = None) -> Distribution:
        return Fixed(vals[0], when=when) if len(vals) == 1 else Categorical(list(vals), when=when)

    space: dict[str, Distribution] = {
        "layers": Int(min_layers, max_layers) if max_layers > min_layers else Fixed(max_layers)
    }
    for k in range(1, max_layers + 1):
        when = None if k <= min_layers else {"layers": list(range(k, max_layers + 1))}
        space[f"width_{k}"] = dist(ws, when)
    space["activation"] = dist(acts)
    space["norm"] = dist(ns)
    space["dropout"] = dist(ds)
    return space


def _check_dropout(owner: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
        raise OptregValueError(f"{owner}: dropouts must be numbers in [0, 1), got {v!r}")
    return float(v)


def nas_to_model_spec(params: Mapping[str, Any], **spec: Any) -> dict[str, Any]:
    """The MLP spec of a :func:`nas_space` trial: ``{"kind": "mlp", "hidden": [width_1, .., width_L],
    "activation": ..., "norm": ..., "dropout": ..., **spec}``, ``spec`` adding keys such as ``in_features``
    and ``out_features`` (which :func:`optreg.train.run` otherwise fills in from the data). Parameters the
    trial lacks are left to the builder's defaults; with both sizes given the spec is checked by
    :func:`optreg.nn.models.validate`."""
    from optreg.nn.models import validate

    owner = "nas_to_model_spec"
    if not isinstance(params, Mapping):
        raise OptregValueError(f"{owner}: params must be a dict, got {params!r}")
    if "layers" not in params:
        raise OptregValueError(f"{owner}: params need 'layers' (the number of hidden layers), got {dict(params)!r}")
    layers = check_int(owner, "params['layers']", params["layers"], 0)
    hidden = []
    for k in range(1, layers + 1):
        if f"width_{k}" not in params:
            raise OptregValueError(f"{owner}: params need 'width_{k}' for layers = {layers}, got {dict(params)!r}")
        hidden.append(check_int(owner, f"params['width_{k}']", params[f"width_{k}"], 1))
    out: dict[str, Any] = {"kind": "mlp", "hidden": hidden}
    for key in ("activation", "norm", "dropout"):
        if key in params:
            out[key] = params[key]
    out.update(spec)
    if "in_features" in out and "out_features" in out:
        validate(out)
    return out
