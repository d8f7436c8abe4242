"""Where the trainer's mini-batches come from: in-memory tensors or a DataLoader, behind one interface.

A :class:`Batches` hands the trainer one epoch of ``(x, y)`` mini-batches at a time
(``epoch(index, generator)``) and says what a checkpoint must match to resume (``signature``) and which
random generators of its own a checkpoint must save (``generators``). Two kinds are built from what
:meth:`optreg.train.Trainer.fit` is given (:func:`as_batches`):

- :class:`TensorBatches`, for tensors in memory (a ``Split`` or an ``(x, y)`` tuple): each training
  epoch indexes the tensors by a fresh permutation drawn from the trainer's seeded generator, in
  ``ceil(N / K)`` slices of ``K`` (``floor`` with ``drop_last``), section 7.2.1; evaluation slices the
  tensors in order. No DataLoader, no per-example Python.
- :class:`LoaderBatches`, for a ``torch.utils.data.DataLoader`` or any *re-iterable* of ``(x, y)``
  batches (a list of pairs, a custom class whose ``__iter__`` starts a new pass): each epoch is one fresh
  ``iter()`` of it, each batch moved to the trainer's device. The loader does the batching, shuffling and
  sampling; the trainer's ``batch_size`` and ``drop_last`` do not apply.

Seeding with a loader (the trainer's guarantee, same seed -> same numbers, holds in each case):

- a loader that draws from torch's *global* RNG: ``shuffle=True`` without a ``generator``, and every
  pass of a DataLoader without a ``generator``, training or validation, which draws its workers' base
  seed from it even with ``num_workers=0``. The trainer seeds that RNG (``seed + 1``) for the duration
  of ``fit``, so the order is a function of the trainer's seed; the stream is shared with dropout, so the
  dropout masks differ from those of a run on tensors (give each loader a ``generator`` to keep them).
- a loader with its own ``generator`` (or a sampler with one): the order is the loader's; the trainer
  neither seeds nor resets it. Its state advances with every epoch, so a second ``fit`` over the same
  loader object continues the stream: seed a fresh generator per run to repeat one
  (:func:`optreg.train.run` builds nothing of the kind: it trains on tensors).
- a sampler with ``set_epoch`` (``DistributedSampler``): called with the epoch number before each epoch.

Checkpoints (``Trainer.state_dict``) are taken at epoch boundaries and include the state of every
generator the loader holds (``loader.generator``, ``loader.sampler.generator``,
``loader.batch_sampler.sampler.generator``), so resuming a run over a DataLoader gives the same batches
as the uninterrupted run whenever the loader's order comes from those generators or from the global RNG
(the cases above). A custom iterable whose order depends on state the trainer cannot see resumes at the
next epoch with a fresh ``iter()`` and is only as reproducible as that iterable is.

This is the seam for data-parallel training: a source whose ``epoch`` yields this rank's shard of each
epoch (the same permutation on every rank, then every ``world_size``-th example) is one more
:class:`Batches`, and ``Trainer.fit`` accepts a :class:`Batches` as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from optreg.errors import OptregTypeError, OptregValueError

__all__ = ["Batches", "LoaderBatches", "TensorBatches", "as_batches"]


class Batches:
    """A source of ``(x, y)`` mini-batches, one epoch at a time (subclass and override :meth:`epoch`)."""

    #: The number of examples in one epoch, None when unknown.
    n_examples: int | None = None

    def epoch(self, index: int, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        """The mini-batches of epoch ``index``; ``generator`` is the trainer's seeded shuffling generator
        (None for evaluation)."""
        raise OptregTypeError(f"{type(self).__name__}: a Batches subclass must define epoch()")

    def labels(self) -> bool | None:
        """Whether the targets are integer class labels (accuracy is measured); None: unknown before the
        first batch."""
        return None

    def signature(self) -> dict[str, Any]:
        """What a checkpoint taken on this source must match to resume on it."""
        return {}

    def generators(self) -> list[torch.Generator]:
        """The random generators the source owns (their state goes into checkpoints)."""
        return []


def _as_pair(owner: str, split: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a ``Split`` (anything with ``.x`` and ``.y``) or a 2-tuple of tensors, checked."""
    if hasattr(split, "x") and hasattr(split, "y"):
        x, y = split.x, split.y
    else:
        x, y = split
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise OptregTypeError(f"{owner}: x and y must be torch tensors, got {type(x).__name__}, {type(y).__name__}")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise OptregValueError(
            f"{owner}: x and y must have the same number of examples, got shapes {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise OptregValueError(f"{owner}: the split is empty")
    return x, y


class TensorBatches(Batches):
    """Mini-batches of in-memory tensors ``x``, ``y`` (same first dimension ``N``).

    ``shuffle=True`` (training): epoch ``e`` is ``x[perm[i*K:(i+1)*K]]`` for a permutation
    ``perm = torch.randperm(N, generator=generator)``, ``ceil(N / K)`` batches (``floor`` with
    ``drop_last``). ``shuffle=False`` (evaluation): the slices ``x[i*K:(i+1)*K]`` in order.
    """

    def __init__(self, x: Tensor, y: Tensor, *, batch_size: int, drop_last: bool = False, shuffle: bool = True):
        self.x, self.y, self.batch_size, self.drop_last, self.shuffle = x, y, batch_size, drop_last, shuffle
        self.n_examples = n = x.shape[0]
        self.iters = n // batch_size if drop_last else -(-n // batch_size)
        if self.iters == 0:
            raise OptregValueError(
                f"trainer: drop_last with batch_size={batch_size} leaves no batch of a {n}-example train split"
            )

    def epoch(self, index: int, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        x, y, k = self.x, self.y, self.batch_size
        if not self.shuffle:
            for i in range(self.iters):
                yield x[i * k : (i + 1) * k], y[i * k : (i + 1) * k]
            return
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        for i in range(self.iters):
            idx = perm[i * k : (i + 1) * k]
            yield x[idx], y[idx]

    def labels(self) -> bool:
        return not self.y.is_floating_point()

    def signature(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "drop_last": self.drop_last, "n_train": self.n_examples}


def _samplers(loader: Any) -> list[Any]:
    """The sampler objects of a DataLoader (its sampler and its batch sampler's sampler)."""
    out = [getattr(loader, "sampler", None)]
    batch_sampler = getattr(loader, "batch_sampler", None)
    out.append(getattr(batch_sampler, "sampler", None))
    return [s for s in out if s is not None]


class LoaderBatches(Batches):
    """The batches of a ``DataLoader`` or any re-iterable of ``(x, y)`` pairs, moved to ``device``.

    Each epoch is one ``iter(loader)``; before it, a sampler with ``set_epoch`` (``DistributedSampler``)
    gets the epoch number. Every batch must be a pair (tuple or list) of tensors with the same first
    dimension.
    """

    def __init__(self, loader: Iterable[Any], *, device: torch.device, owner: str = "trainer") -> None:
        self.loader, self.device, self.owner = loader, device, owner
        dataset = getattr(loader, "dataset", None)
        try:
            self.n_examples = len(dataset) if dataset is not None else None  # type: ignore[arg-type]
        except TypeError:  # an IterableDataset without __len__
            self.n_examples = None

    def _batch(self, item: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise OptregTypeError(f"{self.owner}: each batch must be an (x, y) pair, got {type(item).__name__}")
        x, y = item
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise OptregTypeError(
                f"{self.owner}: batch x and y must be torch tensors, got {type(x).__name__}, {type(y).__name__}"
            )
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            raise OptregValueError(
                f"{self.owner}: batch x and y must have the same number of examples, got shapes "
                f"{tuple(x.shape)}, {tuple(y.shape)}"
            )
        if x.device != self.device:
            x = x.to(self.device, non_blocking=x.is_pinned())
        if y.device != self.device:
            y = y.to(self.device, non_blocking=y.is_pinned())
        return x, y

    def epoch(self, index: int, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        for sampler in _samplers(self.loader):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(index)
        batch = self._batch
        for item in self.loader:
            yield batch(item)

    def labels(self) -> bool | None:
        """Read off one example without iterating the loader: the first item of a list of batches, or
        ``dataset[0]`` of a DataLoader over a map-style dataset; None otherwise (decided at the first batch)."""
        try:
            if isinstance(self.loader, Sequence):
                y = self.loader[0][1]
            elif isinstance(self.loader, torch.utils.data.DataLoader) and not isinstance(
                self.loader.dataset, torch.utils.data.IterableDataset
            ):
                y = self.loader.dataset[0][1]  # type: ignore[index]
            else:
                return None
        except (IndexError, KeyError, TypeError):
            return None
        if isinstance(y, Tensor):
            return not y.is_floating_point()
        return isinstance(y, int) and not isinstance(y, bool)

    def signature(self) -> dict[str, Any]:
        try:
            n_batches = len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            n_batches = None
        return {"loader": type(self.loader).__name__, "n_batches": n_batches, "n_train": self.n_examples}

    def generators(self) -> list[torch.Generator]:
        found: list[torch.Generator] = []
        for owner in (self.loader, *_samplers(self.loader)):
            g = getattr(owner, "generator", None)
            if isinstance(g, torch.Generator) and not any(g is f for f in found):
                found.append(g)
        return found


def as_batches(
    owner: str,
    data: Any,
    *,
    batch_size: int,
    drop_last: bool = False,
    shuffle: bool = True,
    device: torch.device,
) -> Batches:
    """The :class:`Batches` for what ``Trainer.fit`` / ``evaluate`` was given.

    A :class:`Batches` is used as it is; a ``Split`` (``.x``, ``.y``) or an ``(x, y)`` tuple of tensors
    becomes :class:`TensorBatches` (moved to ``device``); a DataLoader or another re-iterable of batches
    becomes :class:`LoaderBatches`. A one-shot iterator (a generator) is refused: every epoch needs a new pass.
    Nothing is iterated here (a DataLoader starts no workers until the first epoch).
    """
    if isinstance(data, Batches):
        return data
    if (hasattr(data, "x") and hasattr(data, "y")) or (
        isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    ):
        x, y = (t.to(device) for t in _as_pair(owner, data))
        return TensorBatches(x, y, batch_size=batch_size, drop_last=drop_last, shuffle=shuffle)
    if isinstance(data, tuple) and len(data) == 2 and not any(isinstance(t, tuple | list) for t in data):
        _as_pair(owner, data)  # an (x, y) pair that is not two tensors: the tensors' own error
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise OptregTypeError(
            f"{owner}: expected a Split (with .x and .y), an (x, y) tuple of tensors, a DataLoader or a "
            f"re-iterable of (x, y) batches, got {type(data).__name__}"
        )
    if isinstance(data, Iterator):
        raise OptregTypeError(
            f"{owner}: a one-shot iterator ({type(data).__name__}) cannot be trained on for several epochs; "
            "pass a DataLoader, a list of (x, y) batches, or an object whose __iter__ starts a new pass"
        )
    return LoaderBatches(data, device=device, owner=owner)
