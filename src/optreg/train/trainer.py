"""The training loop: mini-batch gradient descent with callbacks, one screen per idea.

Each iteration ``t`` draws a mini-batch of ``K`` examples, computes the mean loss and its gradient
(eq. (7.1)), optionally clips the gradient by its global norm (eq. (7.24), with the erratum fixed: the
test is ``||g|| > b``) and lets the optimizer apply ``theta_t = theta_{t-1} + Delta theta_t`` (eqs. (7.3),
(7.4)). One epoch is ``ceil(N / K)`` iterations (section 7.2.1; ``floor`` with ``drop_last``) over a
fresh permutation of the training set drawn from a seeded ``torch.Generator``.

Data in memory stay tensors and are indexed by the permutation (no DataLoader, no per-example Python).
A ``torch.utils.data.DataLoader`` (or any re-iterable of ``(x, y)`` batches) is taken as well: then the
loader does the batching and the order; :mod:`optreg.train.batches` says what the trainer seeds and what
the loader controls, and what resuming guarantees. Both go through one interface,
:class:`~optreg.train.batches.Batches` (one epoch of batches at a time). The loop reads
the device once per iteration: the loss, the number of correct predictions and the gradient norm are
fetched together (one stacked ``.tolist()`` on an accelerator). That read is also the divergence guard:
a NaN or infinite loss or gradient norm raises :class:`optreg.errors.DivergenceError` *before* the
optimizer step, so the model keeps its last finite parameters.

The engine never prints: progress, early stopping, learning-rate reduction and checkpoints are
callbacks (:mod:`optreg.train.callbacks`).

The per-batch hook, ``batch_transform(x, y, generator) -> (x, y)``, changes each training batch before
the forward pass (data augmentation, section 7.7.5; noise on the inputs or labels, file 004). It draws
from a generator of its own (seeded from the trainer's seed, saved in checkpoints), so with a transform
the batch order and the dropout masks are those of the run without it; without one the step costs one
``if`` more.

Under ``torchrun`` (or in any initialized process group of several ranks) the same loop is data-parallel
(:mod:`optreg.train.distributed`): the model trains wrapped in DistributedDataParallel, each rank takes
its share of every global batch (of ``batch_size`` examples in memory; a DataLoader with a
DistributedSampler shards itself), the recorded metrics are those of the global batch (the same on every
rank), and N ranks take the same steps as one process. (A ``batch_transform`` runs on each rank's share
with that rank's own generator: reproducible, but not the random draws of one process.)
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from optreg._checks import check_choice, check_int, check_positive
from optreg.errors import DivergenceError, OptregTypeError, OptregValueError
from optreg.train import distributed
from optreg.train.batches import Batches, TensorBatches, as_batches
from optreg.train.callbacks import Callback
from optreg.train.checkpoint import FORMAT, load_checkpoint

__all__ = ["EPOCH_FIELDS", "EVALUATION_FIELDS", "ITERATION_FIELDS", "METRICS", "History", "Trainer", "transform_seed"]

#: Fields of a per-iteration record (``None`` where a metric is not measured).
ITERATION_FIELDS = ("step", "epoch", "loss", "accuracy", "lr", "grad_norm")
#: Fields of a per-epoch record. ``time`` (wall-clock seconds) is the one field that is not reproducible.
EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time")
#: Fields of an evaluation record (``eval_every``): ``step`` is the number of updates done.
EVALUATION_FIELDS = ("step", "epoch", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
#: What the trainer can measure per iteration; the loss is always measured.
METRICS = ("loss", "accuracy", "grad_norm")


def transform_seed(seed: int, rank: int = 0) -> int:
    """The seed of a trainer's ``batch_transform`` generator: 64 bits of BLAKE2b of ``(seed, rank)``.

    A hash rather than ``seed + k``, so that no trainer seed's transform stream is another seed's
    shuffling or dropout stream (``seed`` and ``seed + 1``)."""
    digest = hashlib.blake2b(f"optreg.batch_transform:{seed}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class History:
    """What a run measured: ``iterations`` and ``epochs`` are lists of plain dicts.

    An iteration record has the fields :data:`ITERATION_FIELDS` (``step`` counts updates from 0, the
    loss and accuracy are those of the mini-batch before the update, ``lr`` is the rate the update used,
    ``grad_norm`` the global norm before clipping). An epoch record has :data:`EPOCH_FIELDS` (train
    metrics are means over the epoch's mini-batches weighted by batch size; ``val_*`` are ``None``
    without a validation split). ``evaluations`` (the trainer's ``eval_every``) has :data:`EVALUATION_FIELDS`:
    the validation and test scores after every ``eval_every`` updates (``None`` where there is no split).
    """

    iterations: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    def _records(self, which: str) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
        check_choice("history", "which", which, ("epochs", "iterations", "evaluations"))
        if which == "epochs":
            return EPOCH_FIELDS, self.epochs
        if which == "evaluations":
            return EVALUATION_FIELDS, self.evaluations
        return ITERATION_FIELDS, self.iterations

    def to_rows(self, which: str = "epochs") -> tuple[list[str], list[list[Any]]]:
        """``(columns, rows)`` of the epoch or iteration records, ready for a CSV writer or a table."""
        columns, records = self._records(which)
        return list(columns), [[r[c] for c in columns] for r in records]

    def column(self, name: str, which: str = "epochs") -> list[Any]:
        """One field over the run, e.g. ``history.column("val_loss")``."""
        columns, records = self._records(which)
        check_choice("history", "column", name, columns)
        return [r[name] for r in records]

    def state_dict(self) -> dict[str, Any]:
        return {
            "iterations": [dict(r) for r in self.iterations],
            "epochs": [dict(r) for r in self.epochs],
            "evaluations": [dict(r) for r in self.evaluations],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iterations = [dict(r) for r in state["iterations"]]
        self.epochs = [dict(r) for r in state["epochs"]]
        self.evaluations = [dict(r) for r in state.get("evaluations", [])]  # absent in older checkpoints


class Trainer:
    """Mini-batch training of ``model`` with ``optimizer`` (any ``torch.optim.Optimizer``).

    Args:
        model: the network; moved to ``device``.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters (``optreg.optim.Optimizer``
            is one).
        loss_fn: ``loss_fn(output, y) -> scalar``, the *mean* loss of the batch (eq. (7.1)).
        batch_size: ``K``, the number of examples per iteration.
        epochs: the total number of epochs (a resumed run counts the epochs already done).
        schedule: a callable ``step -> lr`` (``step`` counts updates from 0); before every update it sets
            the lr of every param group. ``None`` leaves the lr to the optimizer (and to callbacks).
        clip_grad_norm: clip the gradient to this global norm (eq. (7.24), as
            ``torch.nn.utils.clip_grad_norm_``).
        penalty: a callable ``model -> scalar tensor`` added to the training objective, e.g. a weight
            penalty ``lambda * l_p(theta)`` (eq. (7.58)); the recorded ``loss`` is the data loss alone.
        callbacks: :class:`~optreg.train.callbacks.Callback` objects, run in order of their ``order``
            attribute (stable; :class:`~optreg.train.callbacks.Checkpoint` runs last).
        seed: seeds the shuffling generator (``seed``; it permutes tensors in memory) and, for the duration
            of ``fit``, torch's global RNG (``seed + 1``, used by dropout, and by a DataLoader that shuffles
            without a generator of its own). The caller's global RNG state is restored after ``fit``.
        device: where the model and the data live during training.
        drop_last: drop the last, smaller batch (then an epoch is ``floor(N / K)`` iterations).
            ``batch_size`` and ``drop_last`` apply to tensors in memory; a DataLoader batches itself.
        log_every: keep an iteration record (and call ``on_step_end``) every ``log_every`` updates. The
            divergence guard still checks every update.
        metrics: what to measure per iteration among :data:`METRICS`; the loss is always measured, the
            accuracy only for integer targets, the gradient norm is always measured when clipping.
        eval_batch_size: batch size of :meth:`evaluate` (only bounds memory; the result is the mean loss).
        max_steps: stop after this many updates in all (the last epoch may then be partial; its record
            covers the batches it had), or at ``epochs``, whichever comes first. ``None``: epochs only.
        shuffle: ``False`` trains on tensors in a fixed batch order, the slices ``x[i*K:(i+1)*K]`` every
            epoch (a DataLoader keeps its own order either way).
        eval_every: after every ``eval_every`` updates, score the model on the validation split and on
            ``fit``'s ``test`` split (eval mode, no gradient; training is not changed by it) and append the
            scores to ``history.evaluations`` (:data:`EVALUATION_FIELDS`). ``None``: never.
        batch_transform: a callable ``(x, y, generator) -> (x, y)`` applied to every *training* batch
            before the forward pass (never to validation, test or :meth:`evaluate` data), for tensors in
            memory and DataLoaders alike: data augmentation (:func:`optreg.data.augment.as_batch_transform`,
            section 7.7.5) or input noise (:class:`optreg.regularize.noise.GaussianNoise`, file 004).
            ``generator`` is the trainer's own ``torch.Generator`` (CPU), seeded from ``seed`` (and the
            rank) by :func:`transform_seed`, separate from the shuffling generator and torch's global RNG:
            adding a transform changes neither the batch order nor the dropout masks. Its state goes into
            checkpoints, so a resumed run draws the same transformed batches. The transform must return a
            pair with the batch size kept and the label tensor's shape kept (a clear error otherwise).

    After ``fit``: ``history`` (a :class:`History`), ``step`` (updates done), ``epoch`` (epochs done).
    A callback may set ``trainer.stop = True`` to end the run after the current update.

    Data-parallel (:mod:`optreg.train.distributed`): constructing a Trainer under ``torchrun`` joins the
    process group; ``rank`` and ``world_size`` say where it runs. ``batch_size`` stays the global batch;
    callbacks with ``rank_zero_only`` run on rank 0 alone; ``fit``, ``evaluate`` and ``state_dict`` are
    collectives (every rank calls them); torch's global RNG is seeded per rank (``seed + 1 + rank * 2**32``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        batch_size: int = 32,
        epochs: int = 10,
        schedule: Callable[[int], float] | None = None,
        clip_grad_norm: float | None = None,
        penalty: Callable[[nn.Module], Tensor] | None = None,
        callbacks: Iterable[Callback] = (),
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        log_every: int = 1,
        metrics: Sequence[str] = ("loss", "accuracy", "grad_norm"),
        eval_batch_size: int = 1024,
        max_steps: int | None = None,
        shuffle: bool = True,
        eval_every: int | None = None,
        batch_transform: Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise OptregTypeError(f"trainer: model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise OptregTypeError(f"trainer: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        callables = (("loss_fn", loss_fn), ("schedule", schedule), ("penalty", penalty))
        for name, fn in (*callables, ("batch_transform", batch_transform)):
            if fn is not None and not callable(fn):
                raise OptregTypeError(f"trainer: {name} must be callable, got {fn!r}")
        self.batch_size = check_int("trainer", "batch_size", batch_size, 1)
        self.epochs = check_int("trainer", "epochs", epochs, 0)
        self.clip_grad_norm = (
            None if clip_grad_norm is None else check_positive("trainer", "clip_grad_norm", clip_grad_norm)
        )
        self.seed = check_int("trainer", "seed", seed, 0)
        self.log_every = check_int("trainer", "log_every", log_every, 1)
        self.eval_batch_size = check_int("trainer", "eval_batch_size", eval_batch_size, 1)
        self.max_steps = None if max_steps is None else check_int("trainer", "max_steps", max_steps, 1)
        self.eval_every = None if eval_every is None else check_int("trainer", "eval_every", eval_every, 1)
        for name, flag in (("drop_last", drop_last), ("shuffle", shuffle)):
            if not isinstance(flag, bool):
                raise OptregTypeError(f"trainer: {name} must be a bool, got {flag!r}")
        self.shuffle = shuffle
        if isinstance(metrics, str):
            raise OptregTypeError(f"trainer: metrics must be a sequence of names, got the string {metrics!r}")
        for m in metrics:
            check_choice("trainer", "metrics", m, METRICS)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise OptregValueError(f"trainer: device must be a torch device such as 'cpu', got {device!r}") from e
        distributed.setup()  # under torchrun: join the group (and make "cuda" this rank's GPU) before moving
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise OptregTypeError(f"trainer: callbacks must be Callback objects, got {cb!r}")
        self.callbacks: list[Callback] = sorted(callbacks, key=lambda cb: cb.order)
        tensors = itertools.chain(model.parameters(), model.buffers())
        self.model = model.to(self.device) if any(t.device != self.device for t in tensors) else model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.schedule = schedule
        self.penalty = penalty
        self.batch_transform = batch_transform
        self.drop_last = drop_last
        self.metrics = tuple(metrics)
        self._reset()

    def _reset(self) -> None:
        """A fresh run: empty history, counters at zero, the shuffling generator re-seeded."""
        self.history = History()
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.step = 0
        self.epoch = 0
        self.stop = False
        self.has_val = False
        self._accuracy: bool | None = "accuracy" in self.metrics
        self._source: Batches | None = None
        self._val: Batches | None = None
        self._test: Batches | None = None
        self._generator = torch.Generator().manual_seed(self.seed)
        self._transform_generator = torch.Generator().manual_seed(transform_seed(self.seed, self.rank))

    def measures(self, metric: str) -> bool:
        """Whether epoch records will carry ``metric`` (e.g. ``"val_accuracy"``) in the current ``fit``.

        Accuracies need integer targets; for a loader whose targets are seen only at its first batch (an
        ``IterableDataset``) they are assumed until then."""
        if metric.startswith("val_") and not self.has_val:
            return False
        return not metric.endswith("accuracy") or self._accuracy is not False

    # ------------------------------------------------------------------ fit
    def fit(
        self, train: Any, val: Any = None, *, test: Any = None, resume_from: str | Path | dict[str, Any] | None = None
    ) -> History:
        """Train for ``epochs`` epochs (or ``max_steps`` updates, or until a callback sets ``stop``) and
        return the history. ``test`` is scored only by ``eval_every``.

        ``train`` and ``val`` are ``Split`` objects or ``(x, y)`` tuples of tensors, DataLoaders or other
        re-iterables of ``(x, y)`` batches, or :class:`~optreg.train.batches.Batches`. ``resume_from`` is a
        checkpoint written by :class:`~optreg.train.callbacks.Checkpoint` (a path, or the loaded dict): the
        run goes on exactly as if it had never stopped (same parameters, bit for bit, and the same history;
        with a DataLoader, see :mod:`optreg.train.batches` for what that covers).
        """
        source = self._batches("trainer.fit: train", train, training=True)
        val_source = None if val is None else self._batches("trainer.fit: val", val, training=False)
        test_source = None if test is None else self._batches("trainer.fit: test", test, training=False)
        self._reset()
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._source, self._val, self._test = source, val_source, test_source
        self.has_val = val_source is not None
        accelerated = self.device.type != "cpu"
        devices = [self.device] if accelerated else []
        self._hooks = [cb for cb in self.callbacks if self.rank == 0 or not cb.rank_zero_only]
        with torch.random.fork_rng(devices=devices, device_type=self.device.type if accelerated else None):
            labels = source.labels()  # may read one example: inside fork_rng and before seeding, so harmless
            self._accuracy = "accuracy" in self.metrics and (None if labels is None else labels)
            self._seed_global_rng()
            for cb in self._hooks:
                cb.on_fit_start(self)
            if resume_from is not None:
                state = resume_from if isinstance(resume_from, dict) else load_checkpoint(resume_from)
                self.load_state_dict(state)
            self._net = distributed.wrap(self.model, self.device)  # DDP in a group of several ranks
            while self.epoch < self.epochs and not self.stop and not self._step_limit():
                start = time.perf_counter()
                train_loss, train_acc = self._train_epoch(source)
                scores = self._evaluate(val_source) if val_source is not None else {"loss": None, "accuracy": None}
                record = {
                    "epoch": self.epoch,
                    "train_loss": train_loss,
                    "train_accuracy": train_acc,
                    "val_loss": scores["loss"],
                    "val_accuracy": scores["accuracy"],
                    "lr": self.lr,
                    "time": time.perf_counter() - start,
                }
                self.history.epochs.append(record)
                self.epoch += 1
                for cb in self._hooks:
                    cb.on_epoch_end(self, record)
            for cb in self._hooks:
                cb.on_fit_end(self)
        return self.history

    def _seed_global_rng(self) -> None:
        """torch's global RNG (dropout) from ``seed + 1``; one stream per rank in a process group."""
        seed = self.seed + 1 + (self.rank << 32)
        if self.device.type != "cpu":
            torch.manual_seed(seed)  # the CPU's and the accelerators' global RNGs
        else:
            torch.default_generator.manual_seed(seed)  # leave any CUDA RNG alone

    @property
    def lr(self) -> float:
        """The learning rate of the optimizer's first param group, as a float."""
        lr = self.optimizer.param_groups[0]["lr"]
        return lr.item() if isinstance(lr, Tensor) else float(lr)

    def _step_limit(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    def _batches(self, owner: str, data: Any, *, training: bool) -> Batches:
        size = self.batch_size if training else self.eval_batch_size
        drop_last, shuffle = self.drop_last and training, self.shuffle and training
        source = as_batches(owner, data, batch_size=size, drop_last=drop_last, shuffle=shuffle, device=self.device)
        if self.world_size > 1 and isinstance(source, TensorBatches):  # a loader shards itself (DistributedSampler)
            return distributed.Shares(source)
        return source

    def _evaluate_now(self) -> None:
        """``eval_every``: the validation and test scores after ``self.step`` updates, into the history."""
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch}
        for name, source in (("val", self._val), ("test", self._test)):
            scores = self._evaluate(source) if source is not None else {"loss": None, "accuracy": None}
            record[f"{name}_loss"], record[f"{name}_accuracy"] = scores["loss"], scores["accuracy"]
        self.history.evaluations.append(record)

    def _train_epoch(self, source: Batches) -> tuple[float, float | None]:
        """One pass over the source's batches of this epoch (a fresh permutation of tensors in memory);
        returns the epoch's mean loss and accuracy."""
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        schedule, penalty, clip, transform = self.schedule, self.penalty, self.clip_grad_norm, self.batch_transform
        measure_norm = "grad_norm" in self.metrics or clip is not None
        log, callbacks, net, world = self.history.iterations, self._hooks, self._net, self.world_size
        net.train()
        batches = source.epoch(self.epoch, self._generator)
        if self._accuracy is None:  # targets not known before the first batch (e.g. an IterableDataset)
            first = next(batches, None)
            self._accuracy = first is not None and not first[1].is_floating_point()
            batches = itertools.chain([] if first is None else [first], batches)
        accuracy = self._accuracy
        loss_sum = correct_sum = 0.0
        seen = 0
        for xb, yb in batches:
            if transform is not None:
                xb, yb = self._transform(xb, yb)
            if schedule is not None:
                self._set_lr(schedule(self.step))
            output = net(xb)
            nb = n_local = yb.shape[0]
            weight = 1.0
            if world > 1:  # the global batch's size; the weight that makes DDP's mean of gradients the batch's
                nb, weight = distributed.global_count(n_local, yb.device)
            loss = loss_fn(output, yb) if n_local else output.sum() * 0.0  # an empty share joins DDP's reduce
            objective = loss if weight == 1 else loss * weight
            objective = objective if penalty is None else objective + penalty(model)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            stats = [loss]
            if accuracy:
                stats.append((output.argmax(-1) == yb).sum())
            if measure_norm:
                norm = get_total_norm([p.grad for p in self._params if p.grad is not None])
                if clip is not None:
                    clip_grads_with_norm_(self._params, clip, norm)
                stats.append(norm)
            if world == 1:
                values = self._fetch(stats)
            else:  # the global batch's loss and hits, the same on every rank (so is the guard's verdict)
                values = distributed.global_stats(stats, n_local, nb, summed=1 + accuracy)
            if not all(map(math.isfinite, values)):
                self._diverged(values, measure_norm)
            optimizer.step()

            loss_sum += values[0] * nb
            seen += nb
            if accuracy:
                correct_sum += values[1]
            if self.step % self.log_every == 0:
                record = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "loss": values[0],
                    "accuracy": values[1] / nb if accuracy else None,
                    "lr": self.lr,
                    "grad_norm": values[-1] if measure_norm else None,
                }
                log.append(record)
                for cb in callbacks:
                    cb.on_step_end(self, record)
            self.step += 1
            if self.eval_every is not None and self.step % self.eval_every == 0:
                self._evaluate_now()
            if self.stop or self._step_limit():
                break
        if seen == 0:
            raise OptregValueError(f"trainer: the training data yielded no batch in epoch {self.epoch}")
        return loss_sum / seen, (correct_sum / seen if accuracy else None)

    def _transform(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """The ``batch_transform`` of one training batch, drawn from the trainer's transform generator and
        checked: a pair back, the batch size and the label tensor's shape kept."""
        if xb.shape[0] == 0:  # an empty share of a global batch (data-parallel): nothing to transform
            return xb, yb
        out = self.batch_transform(xb, yb, self._transform_generator)  # type: ignore[misc]
        if not isinstance(out, tuple | list) or len(out) != 2:
            got = f"a {len(out)}-item {type(out).__name__}" if isinstance(out, tuple | list) else type(out).__name__
            raise OptregTypeError(
                f"trainer: batch_transform must return an (x, y) pair, got {got} from {self.batch_transform!r}"
            )
        x, y = out
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise OptregTypeError(
                f"trainer: batch_transform must return tensors (x, y), got {type(x).__name__}, {type(y).__name__}"
            )
        if x.ndim == 0 or x.shape[0] != xb.shape[0]:
            got = x.shape[0] if x.ndim else "a scalar"
            raise OptregValueError(f"trainer: batch_transform changed the batch size from {xb.shape[0]} to {got}")
        if y.shape != yb.shape:
            raise OptregValueError(
                f"trainer: batch_transform changed the shape of the labels from {tuple(yb.shape)} to {tuple(y.shape)}"
            )
        return x, y

    def _fetch(self, stats: list[Tensor]) -> list[float]:
        """The iteration's one read of the device: the statistics as Python numbers.

        On an accelerator they are stacked and fetched with one ``.tolist()`` (one synchronization). On
        the CPU there is nothing to synchronize and ``.item()`` per scalar is cheaper than a stack (about
        0.3 us each against 5 us), so it is used there; the numbers are the same.
        """
        if self.device.type == "cpu":
            return [s.item() for s in stats]
        dtype = torch.promote_types(stats[0].dtype, torch.float32)  # exact counts, float64 losses kept
        return torch.stack([s.detach().to(dtype) for s in stats]).tolist()

    def _set_lr(self, lr: float) -> None:
        lr = float(lr)
        if not 0.0 <= lr < math.inf:
            raise OptregValueError(
                f"trainer: the schedule must return a finite lr >= 0, got {lr!r} at step {self.step}"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _diverged(self, values: list[float], measured_norm: bool) -> None:
        names = ["loss"] + (["accuracy"] if self._accuracy else []) + (["grad_norm"] if measured_norm else [])
        bad = ", ".join(f"{n} = {v}" for n, v in zip(names, values) if not math.isfinite(v))
        clip = "" if self.clip_grad_norm is None else f" (now {self.clip_grad_norm:g})"
        error = DivergenceError(
            f"trainer: training diverged at step {self.step} (epoch {self.epoch}): {bad}. "
            f"Lower the learning rate (lr was {self.lr:g}), clip gradients (clip_grad_norm, e.g. 1.0){clip}, "
            "or check the data for NaN/Inf. The model keeps its parameters from before this step; "
            "the history so far is on this error's .history."
        )
        error.step, error.epoch, error.values, error.history = (
            self.step,
            self.epoch,
            dict(zip(names, values)),
            self.history,
        )
        raise error

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, split: Any) -> dict[str, float | None]:
        """Mean loss and accuracy of the model on ``split`` in eval mode (dropout off, BN running stats).

        ``split``: a ``Split`` or ``(x, y)`` tuple (evaluated in chunks of ``eval_batch_size``), or a
        DataLoader / re-iterable of ``(x, y)`` batches (in its batches). Returns
        ``{"loss": float, "accuracy": float | None}`` (accuracy only for integer targets): the mean over
        examples, ``sum_b loss_b * n_b / N``.
        """
        return self._evaluate(self._batches("trainer.evaluate", split, training=False))

    @torch.no_grad()
    def _evaluate(self, source: Batches) -> dict[str, float | None]:
        if self.world_size > 1:  # each rank scores its share with rank 0's buffers; the sums are all-reduced
            distributed.broadcast_buffers(self.model)
        was_training = self.model.training
        self.model.eval()
        sums = []  # per batch: [loss * n_batch, correct]; one device read at the end
        n, accuracy = 0, None
        for xb, yb in source.epoch(0, None):
            if accuracy is None:
                accuracy = "accuracy" in self.metrics and not yb.is_floating_point()
            output = self.model(xb)
            loss = self.loss_fn(output, yb).detach()
            hits = (output.argmax(-1) == yb).sum().to(loss.dtype) if accuracy else torch.zeros_like(loss)
            sums.append(torch.stack([loss * yb.shape[0], hits]))
            n += yb.shape[0]
        self.model.train(was_training)
        columns = torch.stack(sums).tolist() if sums else []
        total, hits = math.fsum(c[0] for c in columns), math.fsum(c[1] for c in columns)
        if self.world_size > 1:
            if accuracy is None:  # an empty share: the source says whether there are labels
                accuracy = "accuracy" in self.metrics and source.labels() is not False
            total, hits, n = distributed.all_reduce_sum([total, hits, n], self.device)
        if n == 0:
            raise OptregValueError("trainer.evaluate: the data yielded no batch")
        return {"loss": total / n, "accuracy": hits / n if accuracy else None}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The whole training state at an epoch boundary (what :class:`Checkpoint` writes)."""
        schedule_state = self.schedule.state_dict() if hasattr(self.schedule, "state_dict") else None
        rng: dict[str, Any] = {"shuffle": self._generator.get_state(), "torch": torch.get_rng_state()}
        if self.batch_transform is not None:
            rng["batch_transform"] = self._transform_generator.get_state()
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world_size > 1:  # every rank's own global RNG (rank 0's is also rng["torch"])
            rng["ranks"] = distributed.all_gather_object({k: v for k, v in rng.items() if k != "shuffle"})
        loaders = self._loader_generators()
        if loaders:  # a DataLoader's own generators (its order): resumed with the rest
            rng["loaders"] = [g.get_state() for g in loaders]
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": schedule_state,
            "callbacks": self._callback_states(),
            "rng": rng,
            "step": self.step,
            "epoch": self.epoch,
            "stop": self.stop,
            "history": self.history.state_dict(),
            "config": self._signature(),
        }

    def _signature(self) -> dict[str, Any]:
        """What a checkpoint must match to resume: the batching and data size (or the loader's)."""
        if self._source is None:
            out = {"batch_size": self.batch_size, "drop_last": self.drop_last, "n_train": 0}
        else:
            out = self._source.signature()
        if self.batch_transform is not None:  # only then: checkpoints of runs without one stay as they were
            out["batch_transform"] = type(self.batch_transform).__qualname__
        return out

    def _loader_generators(self) -> list[torch.Generator]:
        return [g for s in (self._source, self._val) if s is not None for g in s.generators()]

    def _keyed_callbacks(self) -> dict[str, Callback]:
        """Callbacks by ``"<class name>:<index among callbacks of that class>"``."""
        keyed: dict[str, Callback] = {}
        for cb in self.callbacks:
            name = type(cb).__name__
            keyed[f"{name}:{sum(k.startswith(name + ':') for k in keyed)}"] = cb
        return keyed

    def _callback_states(self) -> dict[str, dict[str, Any]]:
        """The state of every callback that has one (stateless ones, e.g. Progress, may come and go)."""
        return {key: s for key, cb in self._keyed_callbacks().items() if (s := cb.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the run must have the same data size and batching."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise OptregValueError(f"trainer: not an optreg training state (format {FORMAT!r} expected)")
        theirs = state["config"]
        if "batch_transform" in theirs and self.batch_transform is None:
            raise OptregValueError(
                f"trainer: cannot resume: the checkpoint has batch_transform={theirs['batch_transform']!r}, "
                "this run none"
            )
        for key, value in self._signature().items():
            if (stored := theirs.get(key, "absent")) != value:
                raise OptregValueError(
                    f"trainer: cannot resume: the checkpoint has {key}={stored!r}, this run {value!r}"
                )
        loaders = self._loader_generators()
        if len(state["rng"].get("loaders", [])) != len(loaders):
            raise OptregValueError(
                f"trainer: cannot resume: the checkpoint holds {len(state['rng'].get('loaders', []))} data loader "
                f"generator(s), this run's loaders {len(loaders)}"
            )
        ours = self._callback_states()
        if ours.keys() != state["callbacks"].keys():
            raise OptregValueError(
                f"trainer: cannot resume: the checkpoint's stateful callbacks are {sorted(state['callbacks'])}, "
                f"this trainer's {sorted(ours)}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])  # type: ignore[union-attr]
        for key, cb in self._keyed_callbacks().items():
            if key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][key])
        self._generator.set_state(state["rng"]["shuffle"])
        for g, g_state in zip(loaders, state["rng"].get("loaders", [])):
            g.set_state(g_state)
        rng = state["rng"]
        if self.rank > 0:  # this rank's own RNG; a rank the checkpoint's run did not have starts afresh
            ranks = rng.get("ranks", [])
            rng = ranks[self.rank] if self.rank < len(ranks) else None
        if rng is None:
            self._seed_global_rng()
        else:
            torch.set_rng_state(rng["torch"])
            if self.batch_transform is not None:  # (the signature check made sure the checkpoint has one)
                self._transform_generator.set_state(rng["batch_transform"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step, self.epoch, self.stop = state["step"], state["epoch"], state["stop"]
        self.history.load_state_dict(state["history"])
