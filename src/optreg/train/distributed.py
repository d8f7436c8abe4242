"""Data-parallel training on ``torch.distributed``: the process group, each rank's share of an epoch,
metrics reduced across ranks, and a launcher for N local processes.

optreg has no parallel machinery of its own. Under ``torchrun`` (or in a process that has initialized a
process group), :class:`optreg.train.Trainer` wraps its model in
:class:`torch.nn.parallel.DistributedDataParallel` (DDP: gloo for CPU tensors, NCCL for CUDA tensors) and
every rank trains on its share of every global batch. :func:`launch` starts N local processes that do so
(``optreg train CONFIG --nproc N``).

**Why N ranks take the same step as one process.** The update of iteration ``t`` uses the gradient of
the mean loss over the global batch ``B`` of ``K`` examples (eq. (7.1))::

    g = (1/K) sum_{n in B} grad L(x_n, y_n; theta)

Rank ``r`` of ``W`` computes the mean over its share ``B_r = B[r::W]`` (every ``W``-th example of the
batch, starting at ``r``), ``g_r = (1/|B_r|) sum_{n in B_r} grad L``, and DDP replaces every rank's
gradient by the mean over ranks of what each back-propagated. With each rank's loss weighted by
``w_r = W |B_r| / K`` (:func:`global_count`; 1 when ``W`` divides ``K``)::

    (1/W) sum_r w_r g_r = (1/K) sum_r sum_{n in B_r} grad L = g

so the optimizer sees the global batch's gradient on every rank (Goyal et al. 2017, "Accurate, Large
Minibatch SGD", section 2; Li et al. 2020, "PyTorch Distributed", section 3). Only the order of the
floating-point sums differs: in float64 the parameters agree to about 1e-15 relative.

**The shares.** Every rank draws the same permutation of the training set from the same seeded
generator and takes ``B[r::W]`` of each global batch (:class:`Shares`). When ``W`` divides ``K``,
rank ``r`` sees ``perm[r::W]`` over the epoch: the strided split of torch's
:class:`~torch.utils.data.DistributedSampler` (without its padding: a short last batch is weighted
instead, so no example counts twice). ``batch_size`` is always the *global* batch ``K``: the same config on
1 or N processes is the same run, and a checkpoint resumes on any number of processes.

**What each rank holds.** The whole in-memory data set, the model (DDP broadcasts rank 0's weights at the
start), the optimizer state (identical on every rank, since the gradients are) and torch's global RNG,
seeded per rank (dropout masks differ between ranks, as they would between the examples of one batch).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue as queue_module
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from optreg._checks import check_int
from optreg.errors import OptregError, OptregTypeError
from optreg.train.batches import Batches, TensorBatches

__all__ = [
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "default_backend",
    "Shares",
    "global_count",
    "global_stats",
    "is_initialized",
    "launch",
    "local_rank",
    "rank",
    "setup",
    "teardown",
    "world_size",
    "wrap",
]


# ------------------------------------------------------------------------------------ who am I


def is_initialized() -> bool:
    """Whether this process is in an initialized default process group."""
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def rank() -> int:
    """This process's rank: the process group's, else torchrun's ``RANK`` variable, else 0."""
    return dist.get_rank() if is_initialized() else _env_int("RANK", 0)


def world_size() -> int:
    """The number of processes: the process group's size, else torchrun's ``WORLD_SIZE``, else 1."""
    return dist.get_world_size() if is_initialized() else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """The rank among the processes on this machine (torchrun's ``LOCAL_RANK``; else the rank)."""
    return _env_int("LOCAL_RANK", rank())


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` where CUDA and NCCL are available (each tensor's device picks its backend,
    so CPU training on a GPU machine still works), else ``"gloo"``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


# ------------------------------------------------------------------------------------ the process group


def setup(
    backend: str | None = None,
    *,
    init_method: str = "env://",
    rank: int | None = None,
    world_size: int | None = None,
    timeout: timedelta | None = None,
) -> bool:
    """Join the default process group if this process is one of several; returns whether it is in one.

    Does nothing when a group is already initialized, or when this is a single process (``world_size``,
    default torchrun's ``WORLD_SIZE``, is 1 or unset). Otherwise calls
    :func:`torch.distributed.init_process_group` with ``backend`` (default :func:`default_backend`) and
    ``init_method`` (default ``"env://"``: torchrun's ``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK``), and,
    where the backend includes NCCL, makes ``cuda:LOCAL_RANK`` the current device (so ``device="cuda"``
    means this rank's GPU).
    """
    if is_initialized():
        return True
    size = _env_int("WORLD_SIZE", 1) if world_size is None else world_size
    if size <= 1:
        return False
    backend = default_backend() if backend is None else backend
    if "nccl" in backend and torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    kwargs: dict[str, Any] = {"backend": backend, "init_method": init_method, "world_size": size}
    kwargs["rank"] = _env_int("RANK", 0) if rank is None else rank
    if timeout is not None:
        kwargs["timeout"] = timeout
    dist.init_process_group(**kwargs)
    return True


def teardown() -> None:
    """Leave the default process group (if any)."""
    if is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a process group of several ranks, else ``model`` itself (also
    when it is wrapped already).

    The wrapper shares the model's parameters (an optimizer built on ``model.parameters()`` keeps working)
    and broadcasts rank 0's parameters and buffers when it is built; its backward averages the gradients.
    """
    from torch.nn.parallel import DistributedDataParallel

    if world_size() <= 1 or isinstance(model, DistributedDataParallel):
        return model

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index], output_device=index)
    return DistributedDataParallel(model)


# ------------------------------------------------------------------------------------ the shares


class Shares(Batches):
    """This rank's share of the batches of tensors in memory (a :class:`TensorBatches`).

    Training: every rank draws the same permutation from the trainer's generator; global batch ``i`` is
    ``perm[i*K : (i+1)*K]`` and rank ``r`` of ``W`` gets its examples ``r, r + W, r + 2W, ...``, so the
    ``W`` shares of a batch are the batch (when ``W`` divides ``K``, rank ``r`` sees ``perm[r::W]`` over
    the epoch: DistributedSampler's split, without its padding). A share may be empty (a last batch of
    fewer than ``W`` examples). Evaluation: ``x[r::W]`` in chunks. The signature is the source's (the
    global batching), so a checkpoint resumes on any number of ranks.
    """

    def __init__(self, source: TensorBatches) -> None:
        self.source, self.n_examples = source, source.n_examples

    def epoch(self, index: int, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        s, r, w = self.source, rank(), world_size()
        x, y, k = s.x, s.y, s.batch_size
        if not s.shuffle:
            xs, ys = x[r::w], y[r::w]
            for i in range(0, xs.shape[0], k):
                yield xs[i : i + k], ys[i : i + k]
            return
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        for i in range(s.iters):
            share = perm[i * k : (i + 1) * k][r::w]
            yield x[share], y[share]

    def labels(self) -> bool | None:
        return self.source.labels()

    def signature(self) -> dict[str, Any]:
        return self.source.signature()


def global_count(n_local: int, device: torch.device | str = "cpu") -> tuple[int, float]:
    """``(K, w_r)``: the global batch's size (the sum of the ranks' shares, one all-reduce) and
    ``w_r = W |B_r| / K``, the factor on this rank's mean loss that makes DDP's mean of the ranks'
    gradients the global batch's gradient (module docstring); ``(n_local, 1.0)`` in one process."""
    w = world_size()
    if w <= 1:
        return n_local, 1.0
    count = torch.tensor([n_local], dtype=torch.int64, device=device)
    dist.all_reduce(count)
    n_global = int(count.item())
    return n_global, w * n_local / n_global


# ------------------------------------------------------------------------------------ collectives


def all_reduce_sum(values: Sequence[float | Tensor], device: torch.device | str = "cpu") -> list[float]:
    """The sums over ranks of a few scalars, with one all-reduce (float64, exact for counts)."""
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).detach() for v in values])
    if world_size() > 1:
        dist.all_reduce(stacked)
    return stacked.tolist()


def global_stats(stats: list[Tensor], n_local: int, n_global: int, summed: int) -> list[float]:
    """The global batch's statistics from a rank's: ``stats[0]`` is the share's mean loss, ``stats[1:summed]``
    are counts (correct predictions), the rest are kept (the gradient norm: of DDP's averaged gradient,
    hence the same on every rank). Returns ``[mean loss over the global batch, summed counts..., kept...]``.
    """
    share = stats[0].detach() * (n_local / n_global)  # an empty share's loss is 0 (see the trainer)
    reduced = all_reduce_sum([share, *stats[1:summed]], stats[0].device)
    return reduced + [s.item() for s in stats[summed:]]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process. A collective."""
    if world_size() <= 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others will read); a no-op alone."""
    if world_size() > 1:
        dist.barrier()


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (e.g. BatchNorm running statistics, which each rank updates from
    its own share). A collective; nothing to do in one process."""
    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


# ------------------------------------------------------------------------------------ launching


def _rank_main(
    index: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    nproc: int,
    init_method: str,
    backend: str | None,
    threads: int,
    timeout: timedelta | None,
    results: Any,
) -> None:
    """The body of each process started by :func:`launch`."""
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc))
    torch.set_num_threads(threads)
    setup(backend, init_method=init_method, rank=index, world_size=nproc, timeout=timeout)
    try:
        value = fn(*args)
        results.put((index, pickle.dumps(value)))  # plain bytes: no tensor shared with a dying process
    finally:
        teardown()


def launch(
    fn: Callable[..., Any],
    nproc: int,
    *args: Any,
    backend: str | None = None,
    threads: int | None = None,
    timeout: timedelta | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` new local processes that form one process group; returns their
    results in rank order.

    The processes are spawned (:func:`torch.multiprocessing.start_processes`), so ``fn`` and ``args`` must
    pickle (``fn`` a module-level function) and the results too. Each process gets torchrun's variables
    (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), ``threads`` torch threads (default: the CPU count divided by
    ``nproc``, at least 1) and joins the group through a rendezvous file in a fresh temporary folder
    (no port to pick), with ``backend`` (default :func:`default_backend`) and ``timeout`` for every
    collective (default torch's). If a process fails, the others are stopped and
    :class:`torch.multiprocessing.ProcessRaisedException` (its message holds the failing rank's traceback)
    or ``ProcessExitedException`` is raised here.
    """
    nproc = check_int("launch", "nproc", nproc, 1)
    if not callable(fn):
        raise OptregTypeError(f"launch: fn must be callable, got {fn!r}")
    threads = max(1, (os.cpu_count() or 1) // nproc) if threads is None else check_int("launch", "threads", threads, 1)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="optreg-launch-") as folder:
        init_method = Path(folder, "rendezvous").resolve().as_uri()
        results = mp.get_context("spawn").Queue()
        procs = mp.start_processes(
            _rank_main,
            args=(fn, args, nproc, init_method, backend, threads, timeout, results),
            nprocs=nproc,
            join=False,
            start_method="spawn",
        )
        out: dict[int, Any] = {}

        def receive(wait: float) -> None:
            index, payload = results.get(timeout=wait)
            out[index] = pickle.loads(payload)

        try:
            while True:
                with contextlib.suppress(queue_module.Empty):
                    while True:  # read while they run: a process whose result fills the pipe cannot exit
                        receive(0.01)
                if procs.join(timeout=0.05):  # raises if a process failed (after stopping the others)
                    break
            with contextlib.suppress(queue_module.Empty):
                while len(out) < nproc:
                    receive(5.0)
        finally:
            for p in procs.processes:
                if p.is_alive():
                    p.terminate()
                p.join()
    missing = sorted(set(range(nproc)) - out.keys())
    if missing:
        raise OptregError(f"launch: ranks {missing} exited without returning from fn")
    return [out[i] for i in range(nproc)]
