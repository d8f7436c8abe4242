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
is zero stays a Python zero, so unused work (momentum 0, weight decay 0) is not compiled in.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Iterator
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from optreg.errors import OptregTypeError, OptregValueError
from optreg.optim.combine import ChainState, MaskedState
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


# -------------------------------------------------------------------------------------- the adapter


def _signature_defaults(factory: Factory) -> dict[str, Any]:
    out = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
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


def _tensorizable(name: str, v: Any) -> bool:
    return name in _DYNAMIC and isinstance(v, Real) and not isinstance(v, bool) and v != 0


class Optimizer(torch.optim.Optimizer):
    """A :class:`torch.optim.Optimizer` running an optreg transform chain.

    Args:
        params: an iterable of tensors or of parameter-group dicts (torch's format; a group may override any
            hyperparameter).
        transform: an alias such as :func:`optreg.optim.adam` (hyperparameters come from ``**defaults`` and the
            groups), or a ready-made :class:`Transform` (no hyperparameters).
        compile: run the update through :func:`torch.compile` (see the module docstring).
        **defaults: hyperparameters of ``transform``, e.g. ``lr=1e-3``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        transform: Factory | Transform,
        *,
        compile: bool = False,
        **defaults: Any,
    ) -> None:
        if isinstance(transform, Transform):
            if defaults:
                raise OptregValueError(
                    f"Optimizer: a ready-made Transform takes no hyperparameters, got {sorted(defaults)}"
                )
            self._factory: Factory | None = None
            self._fixed: Transform | None = transform
            self._name = "transform"
            full: dict[str, Any] = {}
        elif callable(transform):
            self._factory, self._fixed = transform, None
            self._name = getattr(transform, "__name__", "transform")
            full = _signature_defaults(transform)
            self._check_names(defaults, full)
            full.update(defaults)
        else:
            raise OptregTypeError(f"Optimizer: transform must be an alias or a Transform, got {transform!r}")
        self._hp_names = tuple(full)
        self._compile = bool(compile)
        self._trees: dict[int, Any] = {}
        self._split: dict[int, list[Any]] = {}
        self._tx_cache: dict[tuple[Any, ...], Transform] = {}
        self._hp_tensors: dict[int, dict[str, Any]] = {}
        self._hp_seen: dict[int, tuple[Any, ...]] = {}
        self._compiled: Callable[..., None] | None = None
        super().__init__(params, full)

    # ---------------------------------------------------------------------------------- hyperparameters

    def _check_names(self, given: dict[str, Any], allowed: dict[str, Any]) -> None:
        for key, value in given.items():
            if key not in allowed:
                raise OptregValueError(
                    f"{self._name}: unknown hyperparameter {key!r} (= {value!r}); "
                    f"allowed: {', '.join(allowed)}"
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

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; the group's keys and hyperparameters are validated first."""
        if self._factory is not None:
            extra = {k: v for k, v in param_group.items() if k != "params" and k not in _TORCH_GROUP_KEYS}
            self._check_names(extra, self.defaults)
            self._transform(self._hparams({**self.defaults, **extra}))
        super().add_param_group(param_group)

    # ----------------------------------------------------------------------------------------- state

    def _group_tree(self, gi: int, group: dict[str, Any]) -> Any:
        """The group's state tree; its tensors are the ones in ``self.state``, created on first use."""
        tree = self._trees.get(gi)
        if tree is not None:
            return tree
        params = group["params"]
        tree = self._transform(self._hparams(group)).init(list(params))
        restore = bool(params) and any(self.state.get(p) for p in params)
        for key, positions, leaf in _leaves(tree, list(range(len(params)))):
            if restore and positions:
                saved = self.state[params[positions[0]]].get(key)
                if saved is None:
                    raise OptregValueError(
                        f"{self._name}: loaded state has no entry {key!r} for this transform "
                        "(was it saved by a different optimizer or hyperparameters?)"
                    )
                leaf.copy_(saved)
            for q in positions:
                self.state[params[q]][key] = leaf
        self._trees[gi] = tree
        self._split.pop(gi, None)
        return tree

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, keeping each state leaf's own dtype (a counter stays int64).

        torch would cast every floating state tensor to its parameter's dtype; optreg's counters and
        float64 accumulators must survive exactly for a resumed run to reproduce the uninterrupted one.
        """
        saved = state_dict["state"]
        super().load_state_dict({**state_dict, "state": {}})
        self._trees.clear()
        self._hp_seen.clear()
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if index in saved:
                    self.state[p] = {k: v.to(p.device) if isinstance(v, Tensor) else v
                                     for k, v in saved[index].items()}
                index += 1
        for gi, group in enumerate(self.param_groups):
            if any(self.state.get(p) for p in group["params"]):
                self._group_tree(gi, group)

    # ------------------------------------------------------------------------------------------ step

    def _group_args(self, gi: int, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], Any, list[int]] | None:
        """The parameters with a gradient, their gradients, their state tree and their positions in the group."""
        params = group["params"]
        grads = [p.grad for p in params]  # (read once: ``.grad`` is a property lookup, ~0.2 us a tensor)
        keep = [i for i, g in enumerate(grads) if g is not None]
        if not keep:
            return None
        tree = self._group_tree(gi, group)
        for i in keep:
            if grads[i].is_sparse:
                raise OptregValueError(f"{self._name}: sparse gradients are not supported")
        if len(keep) == len(params):
            return list(params), grads, tree, keep
        return [params[i] for i in keep], [grads[i] for i in keep], _select(tree, keep), keep

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient; ``closure`` re-evaluates the loss (torch's contract)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            args = self._group_args(gi, group)
            if args is not None:
                work.append((gi, group, self._transform(self._hparams(group)), *args))
        if not work:
            return loss
        if self._compile and not any(w[2].needs_closure for w in work):
            self._compiled_step(work)
            return loss
        for gi, _, tx, params, grads, tree, keep in work:
            if tx.needs_closure:
                self._apply_with_closure(tx, closure, loss, params, grads, tree)
            elif tx.elementwise and sum(p.numel() for p in params) >= _PER_TENSOR_MIN_NUMEL * len(params):
                self._apply_per_tensor(gi, tx, params, grads, keep)
            else:
                _apply(tx, params, grads, tree)
        return loss

    def _apply_with_closure(
        self, tx: Transform, closure: Callable[[], Any] | None, loss: Any, params: list[Tensor],
        grads: list[Tensor], tree: Any,
    ) -> None:
        """A method that re-evaluates the loss (a line search): it gets the closure, the loss and the gradients."""
        if closure is None:
            raise OptregValueError(
                f"{self._name}: step() needs a closure that re-evaluates the loss (this method does a line "
                "search), got closure=None; call optimizer.step(closure)"
            )

        def evaluate() -> Any:
            with torch.enable_grad():
                return closure()

        grads = [g.clone() for g in grads]
        updates, new_tree = tx.update(grads, tree, params, closure=evaluate, value=float(loss), grads=grads)
        _copy_into(tree, new_tree)
        torch._foreach_add_(params, updates)

    def _apply_per_tensor(
        self, gi: int, tx: Transform, params: list[Tensor], grads: list[Tensor], keep: list[int]
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
        copy_lists = True
        new_tree = None
        for j, i in enumerate(keep):
            new_tree = _apply(tx, [params[j]], [grads[j]], subtrees[i], None)
            if j == 0:
                copy_lists = _replaces_lists(subtrees[i], new_tree)
            if copy_lists:
                _copy_into(subtrees[i], new_tree, "lists")
        _copy_into(subtrees[keep[-1]], new_tree, "shared")

    # --------------------------------------------------------------------------------- compiled path

    def _tensor_hparams(self, gi: int, group: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """0-d tensors for the non-zero dynamic hyperparameters, refreshed in place when the group changes."""
        hparams = self._hparams(group)  # already validated: step() built their transform
        seen = tuple(hparams.values())
        cached = self._hp_tensors.get(gi)
        if cached is not None and self._hp_seen.get(gi) == seen:
            return cached
        out: dict[str, Any] = {}
        for k, v in hparams.items():
            if _tensorizable(k, v):
                old = cached.get(k) if cached else None
                if isinstance(old, Tensor):
                    old.fill_(float(v))
                    out[k] = old
                else:
                    out[k] = torch.tensor(float(v), dtype=torch.float64, device=device)
            else:
                out[k] = float(v) if isinstance(v, Real) and not isinstance(v, bool) else v
        self._hp_tensors[gi], self._hp_seen[gi] = out, seen
        return out

    def _compiled_step(self, work: list[tuple[Any, ...]]) -> None:
        if self._compiled is None:
            self._compiled = _compile_step(self._factory, self._fixed, self._name)
        batch = []
        for gi, group, _, params, grads, tree, _ in work:
            hp = self._tensor_hparams(gi, group, params[0].device) if self._factory is not None else {}
            batch.append((params, grads, tree, hp))
        self._compiled(batch)

    def __repr__(self) -> str:
        lines = [f"Optimizer({self._name}{', compile=True' if self._compile else ''})"]
        for i, group in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={group[k]!r}" for k in self._hp_names)
            lines.append(f"  group {i}: {len(group['params'])} tensors, {hp}")
        return "\n".join(lines)


# torch.optim.lr_scheduler and friends add these keys to groups; they are not hyperparameters of ours.
_TORCH_GROUP_KEYS = ("initial_lr", "name", "differentiable", "foreach", "fused", "capturable", "maximize")


def _apply(tx: Transform, params: list[Tensor], grads: list[Tensor], tree: Any, which: str | None = "all") -> Any:
    """``theta += update`` and the new state written back; returns the new state tree.

    In eager mode a transform with ``write`` (a chain) adds its update to the parameters itself, in as few
    passes as torch.optim's for-loop (the learning rate folded into one ``addcdiv_``); under torch.compile
    the plain update is traced and inductor fuses it. ``which`` says what of the new state to write back
    (see :func:`_copy_into`; None: nothing, the caller does it).
    """
    if tx.write is not None and not torch.compiler.is_compiling():
        new_tree = tx.write(grads, tree, params, 1.0, 1.0)
    else:
        updates, new_tree = tx.update(grads, tree, params)
        torch._foreach_add_(params, updates)
    if which is not None:
        _copy_into(tree, new_tree, which)
    return new_tree


def _compile_step(factory: Factory | None, fixed: Transform | None, name: str) -> Callable[..., None]:
    """A compiled ``step(batch)`` for one optimizer.

    Each optimizer gets its own code object, so dynamo's per-code cache (and its recompile limit) is its own:
    many optimizers in one process never push each other out of the cache.
    """

    def step(batch: list[tuple[list[Tensor], list[Tensor], Any, dict[str, Any]]]) -> None:
        for params, grads, tree, hp in batch:
            tx = fixed if factory is None else factory(**hp)
            _apply(tx, params, grads, tree)

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
