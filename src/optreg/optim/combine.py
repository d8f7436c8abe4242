"""Composing transforms: :func:`chain` and :func:`masked` (a transform applied to some parameters only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optreg.errors import OptregTypeError, OptregValueError
from optreg.optim import _foreach as F
from optreg.optim.transforms import Params, Transform, Updates


class ChainState(NamedTuple):
    states: tuple[Any, ...]


class ChainParts(NamedTuple):
    """How :func:`chain` composed a transform (read with :func:`chain_parts`).

    ``transforms[tail:]`` are the trailing affine transforms (learning rate, decoupled decay); their
    composition ``u -> a u + b theta``, ``affine = (a, b)``, is what ``write`` folds into the parameter write.
    """

    transforms: tuple[Transform, ...]
    tail: int
    affine: tuple[Any, Any]


def chain_parts(tx: Transform) -> ChainParts | None:
    """The parts of a transform made by :func:`chain`; None for any other transform."""
    return getattr(tx.update, "chain_parts", None)


def chain(*transforms: Transform) -> Transform:
    """Applies ``transforms`` in order: the output updates of one are the input of the next.

    ``chain(scale_by_adam(), scale_by_learning_rate(1e-3))`` is Adam; every alias in ``aliases.py`` is such
    a chain, so its code reads like the chapter's equation.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise OptregTypeError(f"chain: argument {i} must be a Transform, got {type(t).__name__}")

    def init(params: Params) -> ChainState:
        return ChainState(tuple(t.init(params) for t in transforms))

    def run(steps: Sequence[int], updates: Updates, states: list[Any], params: Params | None, extra: dict[str, Any]):
        """Applies ``transforms[i]`` for ``i`` in ``steps``, in order, replacing their entries of ``states``."""
        for i in steps:
            t = transforms[i]
            updates, states[i] = (
                t.update(updates, states[i], params, **extra) if t.needs_closure
                else t.update(updates, states[i], params)
            )
        return updates

    def result(state: ChainState, states: list[Any]) -> ChainState:
        if torch.compiler.is_compiling():  # (dynamo cannot trace ``is`` between tuples)
            return ChainState(tuple(states))
        for n, o in zip(states, state.states):
            if n is not o:
                return ChainState(tuple(states))
        return state

    def update(updates: Updates, state: ChainState, params: Params | None = None, **extra: Any):
        states = list(state.states)
        updates = run(range(len(transforms)), updates, states, params, extra)
        return updates, result(state, states)

    # The trailing affine transforms (learning rate, decoupled decay) fold into the parameter write: with
    # u_final = a u + b theta, theta <- keep theta + alpha u_final = (keep + alpha b) theta + (alpha a) u.
    last = len(transforms)
    a, b = 1.0, 0.0
    while last and transforms[last - 1].affine is not None:
        a_i, b_i = transforms[last - 1].affine
        a, b = a * a_i, b + a * b_i
        last -= 1
    writer = transforms[last - 1].write if last else None
    # what runs before the write: the transforms up to the writer, less those that change nothing (l2 of 0)
    before = [i for i in range(last - 1 if writer else last) if not _is_identity(transforms[i])]

    def write(updates: Updates, state: ChainState, params: Params, alpha: Any, keep: Any) -> ChainState:
        states = list(state.states)
        updates = run(before, updates, states, params, {})
        keep = keep if F.is_zero(b) else keep + alpha * b  # (a Python 1 stays one: no pass to scale by a tensor 1)
        if writer is not None:
            states[last - 1] = writer(updates, states[last - 1], params, alpha * a, keep)
        else:
            F.axpby_(params, updates, alpha * a, keep)
        return ChainState(tuple(states))

    update.chain_parts = ChainParts(transforms, last, (a, b))  # (read by chain_parts)
    needs_closure = any(t.needs_closure for t in transforms)
    return Transform(
        init, update, all(t.elementwise for t in transforms), needs_closure, write=None if needs_closure else write
    )


def _is_identity(t: Transform) -> bool:
    """A transform declared ``u -> 1 u + 0 theta`` with Python numbers (an l2 penalty of 0, say)."""
    return t.affine is not None and F.is_one(t.affine[0]) and F.is_zero(t.affine[1])


Mask = Sequence[bool] | Callable[[Params], Sequence[bool]]


class MaskedState(NamedTuple):
    inner: Any
    index: tuple[int, ...]  # static: the positions of the parameters the inner transform sees


def weights_only(params: Params) -> list[bool]:
    """The usual mask for decay and l2: weight matrices and kernels yes, biases and norm gains no (file 004)."""
    return [p.ndim > 1 for p in params]


def masked(inner: Transform, mask: Mask) -> Transform:
    """Applies ``inner`` to the parameters where ``mask`` is true; the others' updates pass through unchanged.

    ``mask`` is a list of booleans (one per parameter) or a function of the parameter list returning one,
    e.g. :func:`weights_only`. ``masked(add_l2(1e-4), weights_only)`` penalizes weights, never biases.
    """
    if not isinstance(inner, Transform):
        raise OptregTypeError(f"masked: inner must be a Transform, got {type(inner).__name__}")

    def init(params: Params) -> MaskedState:
        flags = list(mask(params) if callable(mask) else mask)
        if len(flags) != len(params):
            raise OptregValueError(
                f"masked: mask must have one entry per parameter ({len(params)}), got {len(flags)}"
            )
        index = tuple(i for i, f in enumerate(flags) if f)
        return MaskedState(inner=inner.init([params[i] for i in index]), index=index)

    def update(updates: Updates, state: MaskedState, params: Params | None = None, **extra: Any):
        index = state.index
        sub_params = None if params is None else [params[i] for i in index]
        if "grads" in extra:
            extra = {**extra, "grads": [extra["grads"][i] for i in index]}
        sub, new_inner = inner.update([updates[i] for i in index], state.inner, sub_params, **extra)
        out: list[Tensor] = list(updates)
        for j, i in enumerate(index):
            out[i] = sub[j]
        return out, state if new_inner is state.inner else MaskedState(new_inner, index)

    return Transform(init, update, inner.elementwise, inner.needs_closure)
