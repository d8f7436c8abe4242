"""The torch adapter: any transform chain as a real :class:`torch.optim.Optimizer`.

``Optimizer(model.parameters(), adam, lr=1e-3)`` takes an alias (a function of hyperparameters returning a
:class:`Transform`) and behaves like a torch optimizer: parameter groups with their own hyperparameters,
``step(closure)``, ``zero_grad``, ``state_dict`` / ``load_state_dict`` (a resumed run continues to the same
numbers), and torch's lr schedulers (they write ``group["lr"]``, read back at every step). A ready-made
``Transform`` is accepted too; it then has no hyperparameters for groups or schedulers to change.

State lives where torch keeps it, ``optimizer.state[param]``, one entry per leaf of the transform's state
(keys like ``"1.mu"``: chain position, field). Counters shared by a group are stored with each of its
parameters (the same tensor). One difference from torch.optim follows: a step counter (Adam's bias
correction) counts the steps of the *group*; torch counts per parameter, which differs only for a parameter
that has no gradient on some steps.

``compile=True`` runs the whole update of every group, from gradients to the in-place parameter write,
through :func:`torch.compile`: the chain fuses into one kernel per tensor. Real-valued hyperparameters enter
the compiled function as 0-d tensors, so changing a learning rate never recompiles; a hyperparameter that
is zero stays a Python zero, so unused work (momentum 0, weight decay 0) is not compiled in (lr excepted:
a schedule that starts from 0 must not recompile).

**Group keys.** Besides the transform's hyperparameters, a group (or the constructor) takes these keys of
torch.optim's, and refuses any other with an error that names it and lists what is allowed:

- ``maximize`` (default False, in ``param_groups`` and ``state_dict`` like torch's): honoured for every
  optimizer, an alias, a ready-made Transform or a line search. As in torch.optim the gradient is negated
  before anything else (weight decay included); a method that re-evaluates the loss minimizes ``-f``, so the
  closure's value is negated too (``step`` still returns the closure's own loss). Costs nothing when False.
- ``foreach``, ``fused`` (None, True or False): accepted and not used. In torch they only choose an
  implementation of the same update; optreg chooses its own path (multi-tensor ops, one tensor at a time for
  large tensors), and ``compile=True`` is its fused kernel.
- ``capturable``, ``differentiable``: False or None. True is refused: optreg's step is neither CUDA-graph
  capturable (its counters are read on the host in eager mode) nor differentiable through.
- ``initial_lr`` (written by torch's lr schedulers), ``name``, ``param_names`` (torch's, for named
  parameters): bookkeeping, kept as given, groups only.

Keys are checked when a group is added; a hyperparameter or ``maximize`` written into a group by hand is
checked at the next step.

**Tensor hyperparameters.** A hyperparameter may be a 0-d real tensor (torch.optim takes a Tensor lr); it is
checked like a number, once, when it enters (``lr=torch.tensor([0.1, 0.2])`` and ``beta1=torch.tensor(1.5)``
are refused), and then used as is. A tensor lr may be changed in place, as torch's schedulers do
(``group["lr"].fill_(...)``): the next step uses the new value (eager: through the scaled path below; a chain
that is not scaled by lr takes lr when it is built). The compiled path hands its own 0-d tensors to the
factories while tracing; those are not checked again there.

**Learning-rate schedules.** A step whose lr changed costs what a constant-lr step costs. When a chain takes lr
only as its trailing scale, the adapter keeps the chain built with ``lr = 1`` and hands the group's lr to its
``write`` as the factor of the parameter write (``theta <- theta + lr u_1``): nothing is rebuilt when lr
changes, and the numbers are those of the chain rebuilt with that lr (for the aliases the same floating-point
operations: bitwise equal, tested).
This is verified, not assumed, once per set of the other hyperparameters (at the first step where lr changes
alone): the chains built with lr = 1, lr = 0.5 and the group's lr must be the same code over the same values
(closures compared recursively) up to their trailing affine transforms, whose composition must scale with lr
exactly. Any other chain (lr a schedule callable, lr used elsewhere, as delta-bar-delta's initial rate or a
line search's first step) is rebuilt for each new lr, as before. On the scaled path a new lr is checked by the
adapter (a finite number >= 0, the check of every alias's ``scale_by_learning_rate``). The compiled path
refreshes its 0-d lr in place.

**Structural changes.** A hyperparameter whose change changes the state (momentum from 0 to 0.9 in sgd) gets
its new state the way torch.optim makes it: leaves whose key, shape and dtype match are kept with their
values, new ones start from the transform's ``init`` (a zero momentum buffer, so its first value is the
gradient, as torch's lazily created buffer). Leaves no longer used stay in ``optimizer.state`` (torch keeps a
momentum buffer when momentum is set to 0) and are taken up again if the structure comes back.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections.abc import Callable, Iterable, Iterator
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from optreg import _checks
from optreg.errors import OptregError, OptregTypeError, OptregValueError
from optreg.optim.combine import ChainState, MaskedState, chain_parts
from optreg.optim.transforms import Transform

Factory = Callable[..., Transform]


# ------------------------------------------------------------------------------------ state trees


def _is_namedtuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _leaves(tree: Any, index: list[int], prefix: str = "") -> Iterator[tuple[str, list[int], Tensor]]:
    """Yields ``(key, positions, tensor)`` for every tensor leaf of a state tree.

    ``index`` maps positions in the tree's parameter lists to positions in the group. A per-parameter
    leaf (an element of a list) belongs to one position; a shared leaf (a counter) to all of them.
    """
    if isinstance(tree, Tensor):
        yield prefix.rstrip("."), list(index), tree
    elif isinstance(tree, list):
        for j, t in enumerate(tree):
            if isinstance(t, Tensor):
                yield prefix.rstrip("."), [index[j]], t
    elif isinstance(tree, MaskedState):
        yield from _leaves(tree.inner, [index[i] for i in tree.index], prefix + "masked.")
    elif isinstance(tree, ChainState):
        for i, s in enumerate(tree.states):
            yield from _leaves(s, index, f"{prefix}{i}.")
    elif _is_namedtuple(tree):
        for name in tree._fields:
            yield from _leaves(getattr(tree, name), index, f"{prefix}{name}.")
    elif isinstance(tree, tuple):
        for i, s in enumerate(tree):
            yield from _leaves(s, index, f"{prefix}{i}.")


def _select(tree: Any, keep: list[int]) -> Any:
    """The sub-tree for the parameters at positions ``keep`` (those with a gradient this step)."""
    if isinstance(tree, list):
        return [tree[i] for i in keep]
    if isinstance(tree, MaskedState):
        where = {p: j for j, p in enumerate(keep)}
        inner_keep = [k for k, i in enumerate(tree.index) if i in where]
        return MaskedState(_select(tree.inner, inner_keep), tuple(where[tree.index[k]] for k in inner_keep))
    if _is_namedtuple(tree):
        return type(tree)(*(_select(f, keep) for f in tree))
    if isinstance(tree, tuple):
        return tuple(_select(f, keep) for f in tree)
    return tree


def _copy_into(old: Any, new: Any, which: str = "all", _in_list: bool = False) -> None:
    """Writes a transform's new state values into the stored tensors (a no-op for those updated in place).

    ``which`` is ``"all"``, ``"lists"`` (per-parameter leaves only) or ``"shared"`` (counters only).
    """
    if isinstance(old, Tensor):
        if old is not new and (which == "all" or (which == "lists") == _in_list):
            old.copy_(new) if isinstance(new, Tensor) else old.fill_(new)
    elif isinstance(old, list):
        if which != "shared" and old is not new:
            for o, n in zip(old, new):
                _copy_into(o, n, which, True)
    elif isinstance(old, tuple) and (torch.compiler.is_compiling() or old is not new):  # no tuple ``is`` in dynamo
        for o, n in zip(old, new):
            _copy_into(o, n, which)


def _replaces_lists(old: Any, new: Any) -> bool:
    """Whether a new state tree holds new per-parameter lists (a functional transform's) rather than the old."""
    if isinstance(old, list):
        return old is not new
    if isinstance(old, tuple) and old is not new:
        return any(_replaces_lists(o, n) for o, n in zip(old, new))
    return False


# ------------------------------------------------------------------------------------- group keys

# keys of torch.optim's that a group may hold besides the transform's hyperparameters (module docstring)
_ADAPTER_DEFAULTS: dict[str, Any] = {"maximize": False}
_IMPLEMENTATION_FLAGS = ("foreach", "fused")  # None / True / False, not used
_UNSUPPORTED_FLAGS = {  # False / None only
    "capturable": "optreg's step is not CUDA-graph capturable; compile=True is its fused step",
    "differentiable": "optreg's step is not differentiable through",
}
_BOOKKEEPING = ("initial_lr", "name", "param_names")  # any value, groups only
_FLAG_KEYS = (*_ADAPTER_DEFAULTS, *_IMPLEMENTATION_FLAGS, *_UNSUPPORTED_FLAGS)  # also constructor keywords
_GROUP_KEYS = (*_FLAG_KEYS, *_BOOKKEEPING)


def _check_group_key(owner: str, key: str, value: Any) -> None:
    """A torch.optim group key (one of ``_GROUP_KEYS``) with a value optreg honours."""
    if key in _ADAPTER_DEFAULTS:
        if not isinstance(value, bool):
            raise OptregValueError(f"{owner}: {key} must be True or False, got {value!r}")
    elif key in _IMPLEMENTATION_FLAGS:
        if value is not None and not isinstance(value, bool):
            raise OptregValueError(f"{owner}: {key} must be None, True or False, got {value!r}")
    elif key in _UNSUPPORTED_FLAGS and value is not None and value is not False:
        raise OptregValueError(f"{owner}: {key} must be False or None, got {value!r} ({_UNSUPPORTED_FLAGS[key]})")


def _is_real(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


# ---------------------------------------------------------------------------- comparing transforms

_EMPTY_CELL = object()
_ATOMS = (bool, int, float, complex, str, bytes, type(None))


def _cell(c: types.CellType) -> Any:
    try:
        return c.cell_contents
    except ValueError:  # a cell not assigned yet
        return _EMPTY_CELL


def _same(x: Any, y: Any, seen: set[tuple[int, int]], init_only: bool = False) -> bool:
    """Whether two values made by separate calls of a factory are the same: the same objects, equal numbers and
    strings, containers of same values, functions with the same code over the same defaults and closure values.

    Conservative: anything else (a tensor, an arbitrary object) is the same only as itself. ``init_only``
    compares transforms by their ``init`` alone (then equal means: the same state structure and values).
    """
    if x is y:
        return True
    if type(x) is not type(y):
        return False
    if isinstance(x, _ATOMS):
        return x == y
    if init_only and isinstance(x, Transform):
        return _same(x.init, y.init, seen, True)
    if isinstance(x, types.FunctionType):
        if x.__code__ is not y.__code__:
            return False
        pair = (id(x), id(y))
        if pair in seen:
            return True
        seen.add(pair)
        cells_x = tuple(_cell(c) for c in x.__closure__ or ())
        cells_y = tuple(_cell(c) for c in y.__closure__ or ())
        return (
            _same(x.__defaults__, y.__defaults__, seen, init_only)
            and _same(x.__kwdefaults__, y.__kwdefaults__, seen, init_only)
            and _same(cells_x, cells_y, seen, init_only)
        )
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(_same(a, b, seen, init_only) for a, b in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k], seen, init_only) for k in x)
    if isinstance(x, functools.partial):
        return _same((x.func, x.args, x.keywords), (y.func, y.args, y.keywords), seen, init_only)
    return False


def _same_state(tx1: Transform, tx2: Transform) -> bool:
    """Whether two transforms make the same state (the same ``init`` code over the same values)."""
    return tx1 is tx2 or _same(tx1.init, tx2.init, set(), init_only=True)


# Probes of the learning-rate check: exactly representable, so that ``x * a`` is exact for the aliases' ``-1``.
_LR_PROBES = (1.0, 0.5)


def _scales_with_lr(unit: Transform, probes: list[tuple[float, Transform]]) -> bool:
    """Whether ``unit`` (a chain built with lr = 1), written with the factor ``x``, is each probe chain (built with
    lr = ``x``): the same transforms up to the trailing affine ones, and those composing to ``x`` times unit's.
    """
    parts = chain_parts(unit)
    if parts is None or unit.needs_closure or unit.write is None or parts.tail == len(parts.transforms):
        return False
    a1, b1 = parts.affine
    if not (_is_real(a1) and _is_real(b1)) or a1 == 0:
        return False
    head = parts.transforms[: parts.tail]
    for x, tx in probes:
        other = chain_parts(tx)
        if other is None or other.tail != parts.tail or len(other.transforms) != len(parts.transforms):
            return False
        if (tx.elementwise, tx.needs_closure) != (unit.elementwise, unit.needs_closure):
            return False
        a, b = other.affine
        if not (_is_real(a) and _is_real(b)) or a != x * a1 or b != x * b1:
            return False
        if not _same(head, other.transforms[: other.tail], set()):
            return False
    return True


# -------------------------------------------------------------------------------------- the adapter


def _signature_defaults(factory: Factory) -> dict[str, Any]:
    out = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in _GROUP_KEYS:
            raise OptregTypeError(
                f"Optimizer: {factory.__name__} declares {p.name!r}, a group key the adapter implements "
                f"itself; allowed hyperparameter names: any but {', '.join(_GROUP_KEYS)}"
            )
        if p.default is p.empty:
            raise OptregTypeError(f"Optimizer: hyperparameter {p.name!r} of {factory.__name__} needs a default")
        out[p.name] = p.default
    return out


# Hyperparameters that schedules commonly change: in the compiled path they are 0-d tensors, so a new value is
# not a new graph. The others (eps, momentum_decay, ...) are compiled in as constants: changing one recompiles,
# and none of them puts a per-element pow or division into the kernel.
_DYNAMIC = frozenset({"lr", "momentum", "beta", "beta1", "beta2", "weight_decay"})
# Mean elements per tensor from which the eager path runs an elementwise chain one tensor at a time.
_PER_TENSOR_MIN_NUMEL = 1 << 15
_UNKNOWN = object()


def _tensorizable(name: str, v: Any) -> bool:
    """A 0-d tensor in the compiled path: non-zero dynamic numbers, and lr always (no branch depends on it)."""
    return name in _DYNAMIC and _is_real(v) and (v != 0 or name == "lr")


class _Plan:
    """What a group's step runs, made from the group's values: ``key`` (every hyperparameter but lr, and
    ``maximize``) and ``lr``. ``alpha`` is the factor of the parameter write: the group's lr when ``scaled``
    (``tx`` is then the chain built with lr = 1), else 1. ``hp``: the compiled path's hyperparameters."""

    __slots__ = ("key", "lr", "tx", "alpha", "scaled", "maximize", "hp", "lr_view", "lr_max")

    def __init__(self, key: tuple[Any, ...], lr: Any, tx: Transform, scaled: bool, maximize: bool) -> None:
        self.key, self.lr, self.tx, self.scaled, self.maximize = key, lr, tx, scaled, maximize
        self.alpha: Any = (float(lr) if _is_real(lr) else lr) if scaled else 1.0
        self.hp: dict[str, Any] | None = None
        self.lr_view: Any = None  # (a numpy view of hp["lr"], see _new_plan)
        self.lr_max = math.inf  # the largest lr the parameters' dtype holds (see _new_plan)


class Optimizer(torch.optim.Optimizer):
    """A :class:`torch.optim.Optimizer` running an optreg transform chain.

    Args:
        params: an iterable of tensors or of parameter-group dicts (torch's format; a group may override any
            hyperparameter and hold torch's group keys, see the module docstring).
        transform: an alias such as :func:`optreg.optim.adam` (hyperparameters come from ``**defaults`` and the
            groups), or a ready-made :class:`Transform` (no hyperparameters).
        compile: run the update through :func:`torch.compile` (see the module docstring).
        **defaults: hyperparameters of ``transform``, e.g. ``lr=1e-3``, and torch's ``maximize``, ``foreach``,
            ``fused``, ``capturable``, ``differentiable``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        transform: Factory | Transform,
        *,
        compile: bool = False,
        **defaults: Any,
    ) -> None:
        flags = {k: defaults.pop(k) for k in list(defaults) if k in _FLAG_KEYS}
        if isinstance(transform, Transform):
            if defaults:
                raise OptregValueError(
                    f"Optimizer: a ready-made Transform takes no hyperparameters, got {sorted(defaults)} "
                    f"(allowed: {', '.join(_FLAG_KEYS)})"
                )
            self._factory: Factory | None = None
            self._fixed: Transform | None = transform
            self._name = "transform"
            full: dict[str, Any] = {}
        elif callable(transform):
            self._factory, self._fixed = transform, None
            self._name = getattr(transform, "__name__", "transform")
            full = _signature_defaults(transform)
        else:
            raise OptregTypeError(f"Optimizer: transform must be an alias or a Transform, got {transform!r}")
        self._hp_names = tuple(full)
        self._check_keys({**defaults, **flags}, _FLAG_KEYS)
        full.update(defaults)
        self._has_lr = "lr" in full
        self._key_names = (*(k for k in full if k != "lr"), *_ADAPTER_DEFAULTS)
        self._compile = bool(compile)
        self._trees: dict[int, Any] = {}
        self._tree_tx: dict[int, Transform] = {}
        self._split: dict[int, list[Any]] = {}
        self._tx_cache: dict[tuple[Any, ...], Transform] = {}
        self._units: dict[tuple[Any, ...], Transform | None] = {}
        self._plans: dict[int, _Plan] = {}
        self._compiled: Callable[..., None] | None = None
        try:
            super().__init__(params, {**full, **_ADAPTER_DEFAULTS, **flags})
        except OptregError:
            raise
        except (TypeError, ValueError) as e:  # torch's own checks of params (and their message)
            raise (OptregTypeError if isinstance(e, TypeError) else OptregValueError)(f"{self._name}: {e}") from e

    # ---------------------------------------------------------------------------------- hyperparameters

    def _check_keys(self, given: dict[str, Any], also: tuple[str, ...]) -> None:
        """Every key of ``given`` is a hyperparameter or one of the torch keys ``also`` (checked by value)."""
        for key, value in given.items():
            if key in also:
                _check_group_key(self._name, key, value)
            elif key not in self._hp_names:
                names = ", ".join(self._hp_names) or "none"
                raise OptregValueError(
                    f"{self._name}: unknown hyperparameter {key!r} (= {value!r}); allowed: {names}; "
                    f"and torch's keys {', '.join(also)}"
                )

    def _hparams(self, group: dict[str, Any]) -> dict[str, Any]:
        return {k: group[k] for k in self._hp_names}

    def _transform(self, hparams: dict[str, Any]) -> Transform:
        """The transform for these hyperparameter values (built, and so validated, once per distinct set)."""
        if self._fixed is not None:
            return self._fixed
        key = tuple(hparams.values())
        try:
            tx = self._tx_cache.get(key)
        except TypeError:  # an unhashable value: build afresh
            return self._factory(**hparams)
        if tx is None:
            if len(self._tx_cache) > 64:
                self._tx_cache.clear()
            tx = self._tx_cache[key] = self._factory(**hparams)
        return tx

    def _unit(self, hparams: dict[str, Any], verify: bool) -> Transform | None:
        """The chain built with lr = 1 when it is verified to be the group's chain with lr as a write factor
        (see :func:`_scales_with_lr`), else None. Verified once per set of the other hyperparameters, and only
        when ``verify`` (lr changed alone, or lr is a tensor): a step that changes those too (a cycled momentum)
        pays one build, not three."""
        rest = tuple(v for k, v in hparams.items() if k != "lr")
        try:
            unit = self._units.get(rest, _UNKNOWN)
        except TypeError:  # an unhashable value
            return None
        if unit is _UNKNOWN and verify:
            if len(self._units) > 64:
                self._units.clear()
            unit = self._units[rest] = self._verified_unit(hparams)
        return None if unit is _UNKNOWN else unit

    def _verified_unit(self, hparams: dict[str, Any]) -> Transform | None:
        exact = self._transform(hparams)  # (checks every value)
        try:
            probes = [(x, self._factory(**{**hparams, "lr": x})) for x in _LR_PROBES]
        except (TypeError, ValueError):  # a factory that refuses a probe value: keep the exact path
            return None
        unit, lr = probes[0][1], hparams["lr"]
        return unit if _scales_with_lr(unit, [*probes[1:], *([(lr, exact)] if _is_real(lr) else [])]) else None

    def _plan(self, gi: int, group: dict[str, Any]) -> _Plan:
        """The group's plan; a new lr on a scaled plan only changes its write factor (and compiled 0-d lr)."""
        key = tuple([group[k] for k in self._key_names])
        plan = self._plans.get(gi)
        if plan is not None:
            try:
                same = plan.key == key
            except (RuntimeError, TypeError, ValueError):  # (a tensor that compares ambiguously)
                same = False
            if same:
                if not self._has_lr:
                    return plan
                lr = group["lr"]
                if lr is plan.lr:
                    return plan
                if type(lr) is float and type(plan.lr) is float:
                    if lr == plan.lr:
                        return plan
                    if plan.scaled and 0.0 <= lr <= plan.lr_max:  # else _new_plan checks it
                        plan.lr = plan.alpha = lr
                        if plan.lr_view is not None:
                            plan.lr_view[()] = lr
                        elif plan.hp is not None:
                            plan.hp["lr"].fill_(lr)
                        return plan
            return self._new_plan(gi, group, key, lr_only=same)
        return self._new_plan(gi, group, key, lr_only=False)

    def _new_plan(self, gi: int, group: dict[str, Any], key: tuple[Any, ...], lr_only: bool) -> _Plan:
        hparams = self._hparams(group)
        maximize = group["maximize"]
        _check_group_key(self._name, "maximize", maximize)
        lr = hparams.get("lr")
        first = group["params"][0] if group["params"] else None
        lr_max = torch.finfo(first.dtype).max if first is not None and first.is_floating_point() else math.inf
        if _is_real(lr) and lr_max < abs(lr) < math.inf:  # it would overflow in the step (a torch RuntimeError)
            raise OptregValueError(
                f"{self._name}: lr must fit the parameters' dtype {first.dtype} (at most {lr_max:.4g}), got {lr!r}"
            )
        tx, scaled = self._fixed, False
        if self._factory is not None:
            unit = None
            if self._has_lr and (_is_real(lr) or isinstance(lr, Tensor)):
                # (a tensor lr at once: the chain built with it holds -lr, which would not follow an in-place change)
                unit = self._unit(hparams, verify=lr_only or isinstance(lr, Tensor))
            if unit is not None:
                if isinstance(lr, Tensor):
                    _checks.check_tensor(_checks.check_nonneg, self._name, "lr", lr)
                else:
                    _checks.check_nonneg(self._name, "lr", lr)
                tx, scaled = unit, True
            else:
                tx = self._transform(hparams)
        plan = _Plan(key, lr, tx, scaled, maximize)
        plan.lr_max = lr_max
        if self._compile and self._factory is not None:
            plan.hp = _tensor_hparams(hparams, group["params"][0].device)
            if scaled and _is_real(lr) and plan.hp["lr"].is_cpu:
                # A new lr is written through a numpy view of the 0-d tensor: ``fill_`` also bumps the tensor's
                # version, which the compiled call then pays for (measured on Linear(64, 10): +10-14 us a step
                # with fill_, +3-6 us with the view, of ~190 us; benchmarks/bench_schedule.py)
                plan.lr_view = plan.hp["lr"].numpy()
        self._plans[gi] = plan
        return plan

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; the group's keys and hyperparameters are validated first."""
        if not isinstance(param_group, dict):
            raise OptregTypeError(f"{self._name}: param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise OptregValueError(f"{self._name}: a param group needs 'params', got keys {sorted(param_group)}")
        extra = {k: v for k, v in param_group.items() if k != "params"}
        self._check_keys(extra, _GROUP_KEYS)
        if self._factory is not None:
            self._transform(self._hparams({**self.defaults, **extra}))
        try:
            super().add_param_group(param_group)
        except (TypeError, ValueError) as e:  # torch's own checks of params (and their message)
            raise (OptregTypeError if isinstance(e, TypeError) else OptregValueError)(f"{self._name}: {e}") from e
        group = self.param_groups[-1]
        try:  # what init refuses (Muon: a vector) is refused here, as torch's constructor does, at no memory cost
            self._transform(self._hparams(group)).init([p.detach().to("meta") for p in group["params"]])
        except BaseException:
            self.param_groups.pop()
            raise

    # ----------------------------------------------------------------------------------------- state

    def _group_tree(self, gi: int, params: list[Tensor], tx: Transform, strict: bool = False) -> Any:
        """The group's state tree for ``tx``; its tensors are the ones in ``self.state``, created on first use.

        A ``tx`` whose state differs from the tree's (a structural change) gets a new tree that takes over the
        stored leaves whose key, shape and dtype match (all of them, or an error, when ``strict``: a loaded state).
        """
        tree = self._trees.get(gi)
        if tree is not None and _same_state(self._tree_tx[gi], tx):
            self._tree_tx[gi] = tx
            return tree
        tree = tx.init(list(params))
        for key, positions, leaf in _leaves(tree, list(range(len(params)))):
            if not positions:
                continue
            saved = self.state[params[positions[0]]].get(key)
            if strict and saved is None:
                raise OptregValueError(
                    f"{self._name}: loaded state has no entry {key!r} for this transform "
                    "(was it saved by a different optimizer or hyperparameters?)"
                )
            if strict or (
                isinstance(saved, Tensor) and (saved.shape, saved.dtype, saved.device) == (leaf.shape, leaf.dtype,
                                                                                            leaf.device)
            ):
                leaf.copy_(saved)
            for q in positions:
                self.state[params[q]][key] = leaf
        self._trees[gi], self._tree_tx[gi] = tree, tx
        self._split.pop(gi, None)
        return tree

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, keeping each state leaf's own dtype (a counter stays int64).

        torch would cast every floating state tensor to its parameter's dtype; optreg's counters and
        float64 accumulators must survive exactly for a resumed run to reproduce the uninterrupted one.
        """
        saved = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})
        for group in self.param_groups:  # (a state saved without a key of ours gets its default)
            for k in (*self._hp_names, *_ADAPTER_DEFAULTS):
                group.setdefault(k, self.defaults[k])
        for cache in (self._trees, self._tree_tx, self._split, self._plans):
            cache.clear()
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if index in saved:
                    self.state[p] = {k: v.to(p.device) if isinstance(v, Tensor) else v
                                     for k, v in saved[index].items()}
                index += 1
        for gi, group in enumerate(self.param_groups):
            if any(self.state.get(p) for p in group["params"]):
                self._group_tree(gi, group["params"], self._plan(gi, group).tx, strict=True)

    # ------------------------------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient; ``closure`` re-evaluates the loss (torch's contract)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            grads = [p.grad for p in params]  # (read once: ``.grad`` is a property lookup, ~0.2 us a tensor)
            keep = [i for i, g in enumerate(grads) if g is not None]
            if not keep:
                continue
            for i in keep:
                if grads[i].is_sparse:
                    raise OptregValueError(f"{self._name}: sparse gradients are not supported")
            plan = self._plan(gi, group)
            tree = self._group_tree(gi, params, plan.tx)
            if len(keep) == len(params):
                work.append((gi, plan, list(params), grads, tree, keep))
            else:
                work.append((gi, plan, [params[i] for i in keep], [grads[i] for i in keep], _select(tree, keep), keep))
        if not work:
            return loss
        if self._compile and not any(w[1].tx.needs_closure for w in work):
            self._compiled_step(work)
            return loss
        for gi, plan, params, grads, tree, keep in work:
            tx = plan.tx
            if tx.needs_closure:
                self._apply_with_closure(plan, closure, loss, params, grads, tree)
            elif tx.elementwise and sum(p.numel() for p in params) >= _PER_TENSOR_MIN_NUMEL * len(params):
                self._apply_per_tensor(gi, plan, params, grads, keep)
            else:
                _apply(tx, params, grads, tree, "all", plan.alpha, plan.maximize)
        return loss

    def _apply_with_closure(
        self, plan: _Plan, closure: Callable[[], Any] | None, loss: Any, params: list[Tensor], grads: list[Tensor],
        tree: Any,
    ) -> None:
        """A method that re-evaluates the loss (a line search): it gets the closure, the loss and the gradients.

        With ``maximize`` it minimizes ``-f``: the gradients, the loss and every value of the closure negated.
        """
        if closure is None:
            raise OptregValueError(
                f"{self._name}: step() needs a closure that re-evaluates the loss (this method does a line "
                "search), got closure=None; call optimizer.step(closure)"
            )
        maximize = plan.maximize

        def evaluate() -> Any:
            with torch.enable_grad():
                value = closure()
            return -value if maximize else value

        grads = [g.neg() if maximize else g.clone() for g in grads]
        value = float(loss.detach() if isinstance(loss, Tensor) else loss)
        value = -value if maximize else value
        updates, new_tree = plan.tx.update(grads, tree, params, closure=evaluate, value=value, grads=grads)
        _copy_into(tree, new_tree)
        torch._foreach_add_(params, updates, alpha=plan.alpha)

    def _apply_per_tensor(
        self, gi: int, plan: _Plan, params: list[Tensor], grads: list[Tensor], keep: list[int]
    ) -> None:
        """Runs an elementwise chain one tensor at a time.

        In eager mode a chain over lists allocates its temporaries for all tensors at once; for large tensors
        that is tens of MB of fresh pages every step, which the allocator returns to the system and faults in
        again. One tensor at a time, each temporary is freed before the next is made and its memory reused,
        as in torch.optim's for-loop path. Every tensor's update starts from the same shared counters (an
        elementwise transform returns new counters instead of mutating them); they are written back once.
        """
        subtrees = self._split.get(gi)
        if subtrees is None:
            n = len(self.param_groups[gi]["params"])
            subtrees = self._split[gi] = [_select(self._trees[gi], [i]) for i in range(n)]
        # An in-place transform returns its per-parameter lists themselves: then there is nothing to copy back
        # (the first tensor's call tells), and the walk over the state is skipped for the others.
        tx, alpha, maximize = plan.tx, plan.alpha, plan.maximize
        copy_lists = True
        new_tree = None
        for j, i in enumerate(keep):
            new_tree = _apply(tx, [params[j]], [grads[j]], subtrees[i], None, alpha, maximize)
            if j == 0:
                copy_lists = _replaces_lists(subtrees[i], new_tree)
            if copy_lists:
                _copy_into(subtrees[i], new_tree, "lists")
        _copy_into(subtrees[keep[-1]], new_tree, "shared")

    # --------------------------------------------------------------------------------- compiled path

    def _compiled_step(self, work: list[tuple[Any, ...]]) -> None:
        if self._compiled is None:
            self._compiled = _compile_step(self._factory, self._fixed, self._name)
        self._compiled([(p, g, tree, plan.hp or {}, plan.maximize) for _, plan, p, g, tree, _ in work])

    def __repr__(self) -> str:
        lines = [f"Optimizer({self._name}{', compile=True' if self._compile else ''})"]
        for i, group in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={group[k]!r}" for k in (*self._hp_names, *_ADAPTER_DEFAULTS))
            lines.append(f"  group {i}: {len(group['params'])} tensors, {hp}")
        return "\n".join(lines)


def _tensor_hparams(hparams: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The compiled path's hyperparameters: 0-d float64 tensors for the dynamic ones (see ``_tensorizable``),
    floats for the other numbers, anything else (a user's tensor, a flag) as is. Already validated."""
    return {
        k: torch.tensor(float(v), dtype=torch.float64, device=device) if _tensorizable(k, v)
        else float(v) if _is_real(v) else v
        for k, v in hparams.items()
    }


def _apply(
    tx: Transform, params: list[Tensor], grads: list[Tensor], tree: Any, which: str | None = "all",
    alpha: Any = 1.0, maximize: bool = False,
) -> Any:
    """``theta += alpha * update`` and the new state written back; returns the new state tree.

    ``maximize`` negates the gradients first (torch.optim's ``maximize``). In eager mode a transform with
    ``write`` (a chain) adds its update to the parameters itself, in as few passes as torch.optim's for-loop
    (the learning rate folded into one ``addcdiv_``); under torch.compile the plain update is traced and
    inductor fuses it. ``which`` says what of the new state to write back (see :func:`_copy_into`; None:
    nothing, the caller does it).
    """
    if maximize:
        grads = [torch.neg(grads[0])] if len(grads) == 1 else list(torch._foreach_neg(grads))
    if tx.write is not None and not torch.compiler.is_compiling():
        new_tree = tx.write(grads, tree, params, alpha, 1.0)
    else:
        updates, new_tree = tx.update(grads, tree, params)
        torch._foreach_add_(params, updates, alpha=alpha)
    if which is not None:
        _copy_into(tree, new_tree, which)
    return new_tree


def _compile_step(factory: Factory | None, fixed: Transform | None, name: str) -> Callable[..., None]:
    """A compiled ``step(batch)`` for one optimizer.

    Each optimizer gets its own code object, so dynamo's per-code cache (and its recompile limit) is its own:
    many optimizers in one process never push each other out of the cache.
    """

    def step(batch: list[tuple[list[Tensor], list[Tensor], Any, dict[str, Any], bool]]) -> None:
        for params, grads, tree, hp, maximize in batch:
            tx = fixed if factory is None else factory(**hp)
            _apply(tx, params, grads, tree, "all", 1.0, maximize)

    code = step.__code__.replace(co_name=f"optreg_{name}_step")
    fresh = types.FunctionType(code, step.__globals__, code.co_name, step.__defaults__, step.__closure__)
    return torch.compile(fresh, dynamic=False, options=_INDUCTOR_OPTIONS)


# The tensors of a step share only their 0-d hyperparameters, which is enough for inductor to fuse all of them
# into one loop that streams every tensor at once (hundreds of arrays); one loop per tensor, as torch's fused
# kernels do, measured 1.2x faster for 50 tensors on 2 cores (BENCHMARKS.md). ``size_asserts``: inductor's
# wrapper re-checks every input's sizes and strides on each call (~1 us a tensor: 174 us of a step over 150
# tensors, measured), which dynamo's guards have just checked (``dynamic=False``: every size is guarded).
# Passed per compile, so the process-wide inductor configuration is left alone.
_INDUCTOR_OPTIONS = {"score_fusion_memory_threshold": 4096, "size_asserts": False}
