"""Composing transforms: :func:`chain` and :func:`masked` (a transform applied to some parameters only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from torch import Tensor

from optreg.optim.transforms import Params, Transform, Updates


class ChainState(NamedTuple):
    states: tuple[Any, ...]


def chain(*transforms: Transform) -> Transform:
    """Applies ``transforms`` in order: the output updates of one are the input of the next.

    ``chain(scale_by_adam(), scale_by_learning_rate(1e-3))`` is Adam; every alias in ``aliases.py`` is such
    a chain, so its code reads like the chapter's equation.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise TypeError(f"chain: argument {i} must be a Transform, got {type(t).__name__}")

    def init(params: Params) -> ChainState:
        return ChainState(tuple(t.init(params) for t in transforms))

    def run(parts: tuple[Transform, ...], updates: Updates, state: ChainState, params: Params | None, extra):
        """Applies ``parts`` (all transforms, or all but a stateless final scale) in order."""
        new_states = list(state.states)
        for i, t in enumerate(parts):
            updates, new_states[i] = (
                t.update(updates, new_states[i], params, **extra) if t.needs_closure
                else t.update(updates, new_states[i], params)
            )
        if all(n is o for n, o in zip(new_states, state.states)):
            return updates, state
        return updates, ChainState(tuple(new_states))

    def update(updates: Updates, state: ChainState, params: Params | None = None, **extra: Any):
        return run(transforms, updates, state, params, extra)

    head = None
    if len(transforms) > 1 and transforms[-1].scale is not None:

        def head_update(updates: Updates, state: ChainState, params: Params | None = None):
            return run(transforms[:-1], updates, state, params, {})

        head = (head_update, transforms[-1].scale)
    needs_closure = any(t.needs_closure for t in transforms)
    return Transform(
        init, update, all(t.elementwise for t in transforms), needs_closure, head=None if needs_closure else head
    )


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
        raise TypeError(f"masked: inner must be a Transform, got {type(inner).__name__}")

    def init(params: Params) -> MaskedState:
        flags = list(mask(params) if callable(mask) else mask)
        if len(flags) != len(params):
            raise ValueError(f"masked: mask must have one entry per parameter ({len(params)}), got {len(flags)}")
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
