"""optreg.nn.norm's layers against torch's modules: forward + backward, side by side in one process.

Each row times ``out = layer(x); out.backward(g)`` (input and parameter gradients) for optreg's module and
torch's own with the same arguments and the same float32 input, on the CPU with one torch thread. Samples
of ``calls`` back-to-back calls alternate between the two (ABBA order); the ratio is the median over the
pairs of optreg / torch, in wall time and in thread CPU time (steadier on a shared machine). Target: within
1.1x: optreg's layers run torch's kernels (for weight normalization the fused
``_weight_norm_interface`` and its first-order backward, as torch's parametrization does; optreg's own
autograd Function around them only changes the double backward), so the difference is optreg's input
checks and the Python of the Function.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm

from benchmarks._common import one_thread
from optreg.nn.norm import BatchNorm, LayerNorm, LocalResponseNorm, weight_norm


def _cases() -> list[tuple[str, Callable[[], nn.Module], Callable[[], nn.Module], tuple[int, ...], bool]]:
    """(name, optreg factory, torch factory, input shape, train mode)."""
    conv = nn.Conv2d(32, 32, 3, padding=1)
    lin = nn.Linear(512, 512)
    return [
        ("BatchNorm (256, 256), train", lambda: BatchNorm(256), lambda: nn.BatchNorm1d(256), (256, 256), True),
        (
            "BatchNorm (32, 32, 16, 16), train",
            lambda: BatchNorm(32),
            lambda: nn.BatchNorm2d(32),
            (32, 32, 16, 16),
            True,
        ),
        (
            "BatchNorm (32, 32, 16, 16), eval",
            lambda: BatchNorm(32),
            lambda: nn.BatchNorm2d(32),
            (32, 32, 16, 16),
            False,
        ),
        ("LayerNorm (256, 512)", lambda: LayerNorm(512), lambda: nn.LayerNorm(512), (256, 512), True),
        (
            "LayerNorm (32, 16, 8, 8) over (16, 8, 8)",
            lambda: LayerNorm([16, 8, 8]),
            lambda: nn.LayerNorm([16, 8, 8]),
            (32, 16, 8, 8),
            True,
        ),
        (
            "LocalResponseNorm(5) (16, 32, 16, 16), torch form",
            lambda: LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            lambda: nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
            (16, 32, 16, 16),
            True,
        ),
        (
            "LocalResponseNorm(5) (16, 32, 16, 16), chapter form vs torch alpha * 5",
            lambda: LocalResponseNorm(5, 1e-4, 0.75, 2.0, form="chapter"),
            lambda: nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0),
            (16, 32, 16, 16),
            True,
        ),
        (
            "weight_norm Linear(512, 512), batch 256",
            lambda: weight_norm(copy.deepcopy(lin)),
            lambda: torch_weight_norm(copy.deepcopy(lin)),
            (256, 512),
            True,
        ),
        (
            "weight_norm Conv2d(32, 32, 3) (16, 32, 16, 16)",
            lambda: weight_norm(copy.deepcopy(conv)),
            lambda: torch_weight_norm(copy.deepcopy(conv)),
            (16, 32, 16, 16),
            True,
        ),
    ]


def _sample(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, calls: int) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        x.grad = None
        layer(x).backward(g)
    return (time.perf_counter() - start) / calls, (time.thread_time() - start_cpu) / calls


def _run(quick: bool) -> dict:
    torch.manual_seed(0)
    pairs, calls = (8, 10) if quick else (40, 20)
    rows = []
    for name, make_ours, make_torch, shape, train in _cases():
        layers = {"optreg": make_ours().train(train), "torch": make_torch().train(train)}
        x = torch.randn(shape, requires_grad=True)
        g = torch.randn_like(layers["torch"](x))
        torch.testing.assert_close(layers["optreg"](x), layers["torch"](x))  # the same numbers
        wall: dict[str, list[float]] = {"optreg": [], "torch": []}
        cpu: dict[str, list[float]] = {"optreg": [], "torch": []}
        for rep in range(pairs + 1):  # the first pair warms up and is not counted
            order = ("optreg", "torch") if rep % 2 else ("torch", "optreg")
            for kind in order:
                w, c = _sample(layers[kind], x, g, calls)
                if rep:
                    wall[kind].append(w)
                    cpu[kind].append(c)
        ratio = statistics.median(a / b for a, b in zip(wall["optreg"], wall["torch"]))
        cpu_ratio = statistics.median(a / b for a, b in zip(cpu["optreg"], cpu["torch"]))
        rows.append(
            [
                name,
                round(statistics.median(wall["optreg"]) * 1e6, 1),
                round(statistics.median(wall["torch"]) * 1e6, 1),
                round(ratio, 3),
                round(cpu_ratio, 3),
                "<= 1.1",
            ]
        )
    return {
        "title": "Normalization layers: optreg.nn.norm vs torch.nn, forward + backward (CPU, float32)",
        "columns": ["layer, input", "optreg us/call", "torch us/call", "optreg / torch", "(CPU time)", "target"],
        "rows": rows,
        "notes": (
            f"{pairs} interleaved pairs (ABBA) of {calls} calls each, one torch thread, after one warm-up pair; "
            "a call is forward + backward with a fixed upstream gradient (input and parameter gradients). "
            "Times: medians; ratios: medians over the pairs. Both sides give the same outputs (checked). "
            "optreg's layers run torch's kernels (F.batch_norm, F.layer_norm, F.local_response_norm, the fused "
            "weight-norm kernels) behind an input-shape check, so the ratios measure that check and the noise."
        ),
    }


run = one_thread(_run)
