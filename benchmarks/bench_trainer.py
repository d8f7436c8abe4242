"""The trainer's overhead against a hand-written PyTorch loop doing the same work.

Both train the same MLP (64-128-10, ReLU) from the same initial weights with ``torch.optim.Adam``
(lr 1e-3), batch size 32, on digits-sized synthetic data (1500 x 64, 10 classes), over the same seeded
permutations, in one process. Runs are interleaved in pairs (hand, trainer / trainer, hand, ...); the
median wall-clock milliseconds per epoch are reported, and the median over pairs of the trainer / hand ratio
of wall time and of thread CPU time (steadier when other processes share the cores). Target: trainer <=
1.05x the hand loop.
A probe row trains a single Linear(64, 10) layer, ~10x cheaper per step, as a probe of the trainer's own
per-step cost in microseconds.

Rows:
- ``loss only``: the trainer with ``metrics=("loss",)`` against a loop that records each batch loss;
- ``loss+acc+grad_norm``: the trainer's default metrics against a loop that measures the same three
  numbers per batch (``.item()`` each: on the CPU that is cheaper than one stacked ``.tolist()``);
- ``+ clip 1.0``: the same with gradient clipping by global norm (``clip_grad_norm_`` in the hand loop);
- ``DataLoader``: the default metrics, both sides iterating the same ``torch.utils.data.DataLoader``
  (``TensorDataset``, batch 32, ``shuffle=True`` with a seeded generator) instead of indexing tensors; the
  loader's own per-batch cost (fetching and collating 32 examples) is in both times alike.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._common import one_thread
from optreg.train import Trainer

N, D, C, HIDDEN, BATCH, LR = 1500, 64, 10, 128, 32, 1e-3


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    return x, y


def _loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))


def _tensor_batches(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    perm = torch.randperm(N, generator=gen)
    for i in range(0, N, BATCH):
        idx = perm[i : i + BATCH]
        yield x[idx], y[idx]


def _hand_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, full: bool, clip: float | None,
               loader: bool = False):  # fmt: skip
    """The reference: what one writes by hand (nanoGPT style), recording the same per-step numbers."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(0)
    data = _loader(x, y) if loader else None
    log = []
    for _ in range(epochs):
        model.train()
        for xb, yb in data if data is not None else _tensor_batches(x, y, gen):
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if full:
                if clip is None:
                    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
                else:
                    norm = torch.nn.utils.clip_grad_norm_(params, clip)
                acc = (out.argmax(-1) == yb).sum()
                log.append((loss.item(), acc.item(), norm.item()))
            else:
                log.append(loss.item())
            opt.step()
    return log


def _trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, full: bool, clip: float | None,
             loader: bool = False):  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    metrics = ("loss", "accuracy", "grad_norm") if full else ("loss",)
    trainer = Trainer(model, opt, batch_size=BATCH, epochs=epochs, clip_grad_norm=clip, metrics=metrics, seed=0)
    return trainer.fit(_loader(x, y) if loader else (x, y))


def _run(quick: bool) -> dict:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, C))
    linear = nn.Linear(D, C)
    x, y = _data()
    epochs, reps = (1, 6) if quick else (1, 60)
    configs = [
        ("loss only", mlp, False, None, False),
        ("loss+acc+grad_norm", mlp, True, None, False),
        ("+ clip 1.0", mlp, True, 1.0, False),
        ("overhead probe: Linear(64,10), loss+acc+grad_norm", linear, True, None, False),
        ("DataLoader (shuffle, batch 32), loss+acc+grad_norm", mlp, True, None, True),
    ]
    steps = math.ceil(N / BATCH)  # per epoch
    rows = []
    for name, base, full, clip, loader in configs:
        wall: dict[str, list[float]] = {"hand": [], "trainer": []}
        cpu: dict[str, list[float]] = {"hand": [], "trainer": []}
        for rep in range(reps + 1):  # the first round warms up and is not counted
            order = (("hand", _hand_loop), ("trainer", _trainer))
            for kind, fn in order if rep % 2 else order[::-1]:  # ABBA: a drifting load hits both alike
                model = copy.deepcopy(base)
                start, start_cpu = time.perf_counter(), time.thread_time()
                fn(model, x, y, epochs, full, clip, loader)
                if rep:
                    wall[kind].append((time.perf_counter() - start) / epochs)
                    cpu[kind].append((time.thread_time() - start_cpu) / epochs)
        # a pair (hand, trainer) runs back to back under the same load: the median of the pairs' ratios
        ratio = statistics.median(t / h for t, h in zip(wall["trainer"], wall["hand"]))
        cpu_ratio = statistics.median(t / h for t, h in zip(cpu["trainer"], cpu["hand"]))
        overhead_us = statistics.median(t - h for t, h in zip(cpu["trainer"], cpu["hand"])) / steps * 1e6
        hand, ours = statistics.median(wall["hand"]), statistics.median(wall["trainer"])
        rows.append(
            [
                name,
                round(hand * 1e3, 2),
                round(ours * 1e3, 2),
                round(ratio, 3),
                round(cpu_ratio, 3),
                round(overhead_us, 1),
            ]
        )
    return {
        "title": "Trainer overhead vs a hand-written PyTorch loop (MLP 64-128-10, Adam, 1500x64, batch 32)",
        "columns": [
            "metrics",
            "hand loop ms/epoch",
            "trainer ms/epoch",
            "trainer / hand",
            "trainer / hand (CPU time)",
            "overhead us/step (CPU time)",
        ],
        "rows": rows,
        "notes": (
            f"{reps} interleaved pairs (hand, trainer back to back, ABBA order) of {epochs} epoch each, one torch "
            "thread; same initial weights, permutations and per-step measurements on both sides. Times: medians; "
            "ratios and overhead: medians over the pairs (each pair shares the machine's load of the moment). "
            "CPU time is the main thread's (all work runs there), steadier than wall time on a shared machine. "
            "Target: trainer / hand <= 1.05 on the MLP rows (the DataLoader row included); the probe row (a model "
            "~10x cheaper per step) shows the trainer's own per-step cost."
        ),
    }


run = one_thread(_run)


if __name__ == "__main__":
    result = run()
    print(result["title"])
    print(" | ".join(result["columns"]))
    for row in result["rows"]:
        print(" | ".join(str(v) for v in row))
    print(result["notes"])
