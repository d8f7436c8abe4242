r"""Greedy supervised layer-wise pretraining (file 002, "监督预训练"; Bengio et al., 2007).

File 002: pretraining trains a simple model on a simplified problem before the target model; a *greedy*
algorithm splits the problem into parts and optimizes each part on its own ("not guaranteed to give the
best complete solution, but much cheaper than solving jointly, and mostly acceptable"); greedy supervised
pretraining is that for a deep network, layer by layer. For a deep MLP
:math:`f = o \circ h_L \circ \dots \circ h_1` (blocks :math:`h_l`, output layer :math:`o`):

1. stage :math:`l = 1, \dots, L`: train :math:`g_l \circ h_l \circ \dots \circ h_1` on the task with
   :math:`h_1, \dots, h_{l-1}` *frozen* (fixed, in evaluation mode, no gradient: :math:`h_l` learns on
   the features the layers below it already compute) and a temporary output layer :math:`g_l` (a fresh
   ``Linear(width_l, K)``; the last stage's is :math:`o` itself);
2. fine-tune: train all of :math:`o \circ h_L \circ \dots \circ h_1` jointly.

Section 7.8 of the chapter adds that modern methods (good initialization, ReLU, adaptive optimizers,
normalization) let us train deep networks end to end "no longer relying on the less efficient
pretraining and layer-wise training"; the ``pretraining`` experiment measures both.

:func:`greedy_layerwise` returns the trained ``nn.Sequential(*blocks, output)`` (a plain module: the
blocks and the output layer you passed, trained in place) and one :class:`~optreg.train.History` per
stage. Each stage is one :class:`~optreg.train.Trainer` run (so a ``batch_transform``, clipping, a
penalty, callbacks all apply), over the parameters of :math:`h_l` and :math:`g_l` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from optreg._checks import check_int
from optreg.errors import OptregTypeError, OptregValueError
from optreg.train.trainer import History, Trainer

__all__ = ["Frozen", "PretrainResult", "greedy_layerwise"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class Frozen(nn.Module):
    """``module`` as a fixed feature extractor: always in evaluation mode (dropout off, BN running
    statistics untouched), its forward pass under ``torch.no_grad()``, its parameters with
    ``requires_grad=False`` while wrapped (:meth:`release` gives them back)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._requires = [p.requires_grad for p in module.parameters()]
        module.requires_grad_(False)
        module.eval()

    def train(self, mode: bool = True) -> Frozen:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x)

    def release(self) -> nn.Module:
        """The wrapped module, its parameters' ``requires_grad`` as they were before."""
        for p, flag in zip(self.module.parameters(), self._requires):
            p.requires_grad_(flag)
        return self.module


@dataclass
class PretrainResult:
    """What :func:`greedy_layerwise` returns: ``model`` (``nn.Sequential(*blocks, output)``), ``stages``
    (one History per stage, the fine-tuning last when it ran), ``names`` (``"layer 1"``, ...,
    ``"fine-tune"``) and ``heads`` (the temporary output layers of stages 1..L-1)."""

    model: nn.Sequential
    stages: list[History] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    heads: list[nn.Module] = field(default_factory=list)


def _sample(train: Any) -> Tensor:
    """A few inputs of the training data (to read the blocks' widths off)."""
    if hasattr(train, "x"):
        return train.x[:2]
    if isinstance(train, tuple) and len(train) == 2 and isinstance(train[0], Tensor):
        return train[0][:2]
    try:
        first = next(iter(train))
    except (TypeError, StopIteration):
        raise OptregValueError(f"greedy_layerwise: train must hold at least one batch, got {train!r:.80}") from None
    return first[0][:2]


def _optimizer(optimizer: str | OptimizerFactory, hparams: Mapping[str, Any]) -> OptimizerFactory:
    if isinstance(optimizer, str):
        from optreg import optim

        return lambda params: optim.create(optimizer, params, **hparams)
    if not callable(optimizer):
        raise OptregTypeError(
            f"greedy_layerwise: optimizer must be a name or a callable params -> optimizer, got {optimizer!r}"
        )
    return optimizer


def greedy_layerwise(
    blocks: Sequence[nn.Module],
    output: nn.Module,
    train: Any,
    val: Any = None,
    *,
    epochs_per_layer: int,
    finetune_epochs: int,
    optimizer: str | OptimizerFactory = "adam",
    hparams: Mapping[str, Any] | None = None,
    head: Callable[[int, int, int], nn.Module] | None = None,
    seed: int = 0,
    on_stage_end: Callable[[int, str, nn.Module], None] | None = None,
    **trainer_options: Any,
) -> PretrainResult:
    r"""Greedy supervised layer-wise pretraining of ``nn.Sequential(*blocks, output)``, then fine-tuning
    (module docstring; file 002).

    Args:
        blocks: the hidden blocks :math:`h_1..h_L` (e.g. ``Sequential(Linear, ReLU)`` each), trained in place.
        output: the output layer :math:`o` (the last stage's head, then the model's).
        train, val: what :meth:`Trainer.fit` takes (tensors, ``Split``\ s, DataLoaders).
        epochs_per_layer: epochs of each stage :math:`l = 1..L` (>= 1).
        finetune_epochs: epochs of the joint fine-tuning (0: none).
        optimizer: a registered name (:func:`optreg.optim.create`, with ``hparams``) or a callable
            ``params -> torch.optim.Optimizer``; a fresh optimizer per stage, over that stage's
            trainable parameters (:math:`h_l` and :math:`g_l`; all of them when fine-tuning).
        head: ``head(stage, width, num_classes) -> module``, the temporary output layer of stage
            ``stage`` (0-based, ``< L - 1``) on ``width`` features; default ``nn.Linear(width, K)``
            initialized under ``torch.manual_seed(seed + stage)`` (the caller's RNG is left alone).
        seed: the trainers' seed (each stage's shuffling, dropout, transform) and the heads' seed.
        on_stage_end: ``on_stage_end(stage, name, model)`` after each stage, with that stage's model.
        trainer_options: the other :class:`Trainer` arguments (``batch_size``, ``batch_transform``,
            ``callbacks``, ``device``, ...), the same for every stage; ``epochs`` is set per stage.
    """
    blocks = list(blocks)
    if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
        raise OptregTypeError(
            f"greedy_layerwise: blocks must be a non-empty sequence of nn.Module, got {blocks!r:.80}"
        )
    if not isinstance(output, nn.Module):
        raise OptregTypeError(f"greedy_layerwise: output must be an nn.Module, got {type(output).__name__}")
    epochs_per_layer = check_int("greedy_layerwise", "epochs_per_layer", epochs_per_layer, 1)
    finetune_epochs = check_int("greedy_layerwise", "finetune_epochs", finetune_epochs, 0)
    seed = check_int("greedy_layerwise", "seed", seed, 0)
    if "epochs" in trainer_options:
        raise OptregValueError("greedy_layerwise: epochs is set per stage (epochs_per_layer, finetune_epochs)")
    make_optimizer = _optimizer(optimizer, dict(hparams or {}))
    device = trainer_options.get("device", "cpu")

    modes = [m.training for m in (*blocks, output)]
    with torch.no_grad():  # the widths of the blocks' outputs and the number of classes, in eval mode (no
        widths, h = [], _sample(train).to(device)  # BatchNorm statistics are touched)
        for block in blocks:
            h = block.to(device).eval()(h)
            widths.append(h.shape[-1])
        num_classes = output.to(device).eval()(h).shape[-1]
    for m, mode in zip((*blocks, output), modes):
        m.train(mode)

    result = PretrainResult(nn.Sequential(*blocks, output))
    for stage, block in enumerate(blocks):
        last = stage == len(blocks) - 1
        if last:
            top = output
        elif head is not None:
            top = head(stage, widths[stage], num_classes)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + stage)
                top = nn.Linear(widths[stage], num_classes)
        if not last:
            result.heads.append(top)
        frozen = Frozen(nn.Sequential(*blocks[:stage])) if stage else None
        parts = ([frozen] if frozen is not None else []) + [block, top]
        model = nn.Sequential(*parts)
        params = [*block.parameters(), *top.parameters()]
        trainer = Trainer(model, make_optimizer(params), epochs=epochs_per_layer, seed=seed, **trainer_options)
        result.stages.append(trainer.fit(train, val))
        result.names.append(f"layer {stage + 1}")
        if frozen is not None:
            frozen.release()
        if on_stage_end is not None:
            on_stage_end(stage, result.names[-1], model)
    if finetune_epochs:
        model = result.model
        trainer = Trainer(model, make_optimizer(list(model.parameters())), epochs=finetune_epochs, seed=seed,
                          **trainer_options)  # fmt: skip
        result.stages.append(trainer.fit(train, val))
        result.names.append("fine-tune")
        if on_stage_end is not None:
            on_stage_end(len(blocks), "fine-tune", model)
    return result
