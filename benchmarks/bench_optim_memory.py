"""Memory of an optimizer step: optreg against torch.optim, 10M float32 parameters in 50 tensors, CPU.

Two figures per optimizer, each side by side with torch's, in one process:

- ``state MB``: the bytes of the optimizer's state (distinct storages of every tensor in ``optimizer.state``);
- ``step peak MB``: the most memory the step holds at once *beyond* parameters, gradients and state, i.e. its
  temporaries. It is read from torch's profiler allocation events (every CPU allocation and free, in order),
  so it does not depend on whether the C allocator returns freed pages to the system.

The eager path is compared with torch's default for-loop, the compiled path with torch's fused kernel where
torch has one and its ``foreach`` path otherwise (the multi-tensor path whose list temporaries are the case
to watch).

Named to run after ``bench_optim`` (benchmarks run in name order): its compilations would otherwise warm
torch inductor's in-memory caches before ``bench_optim`` measures the cold compile cost.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

import optreg.optim as oo
from benchmarks.bench_optim import METHODS, N_TENSORS, SHAPE, TOTAL, _params

MB = float(1 << 20)


def state_mb(opt: torch.optim.Optimizer) -> float:
    """Bytes of the distinct storages held in ``opt.state`` (a shared counter is counted once)."""
    seen: dict[int, int] = {}
    for per_param in opt.state.values():
        for v in per_param.values():
            if isinstance(v, torch.Tensor):
                storage = v.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values()) / MB


def step_peak_mb(opt: torch.optim.Optimizer, steps: int = 2) -> float:
    """The peak of (bytes allocated - bytes freed) during ``steps`` steps, from the profiler's memory events."""
    opt.step()  # lazy state and compilation happen before the measurement
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            opt.step()
    # every allocation (+bytes) and free (-bytes) with its time; the public event list attributes most of
    # them to operators, the raw kineto events keep each one
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak / MB


def run(quick: bool = False) -> dict:
    torch.set_num_threads(2)
    methods = ["adam", "rmsprop"] if quick else list(METHODS)
    rows = []
    for method in methods:
        name, hp, torch_cls, torch_hp, fused = METHODS[method]
        pairs = [
            (
                "eager",
                oo.create(name, _params(), **hp),
                "torch for-loop",
                torch_cls(_params(), foreach=False, **torch_hp),
            ),
            (
                "compile=True",
                oo.create(name, _params(), compile=True, **hp),
                "torch fused" if fused else "torch foreach",
                torch_cls(_params(), **({"fused": True} if fused else {"foreach": True}), **torch_hp),
            ),
        ]
        for label, ours, peer_label, peer in pairs:
            ours_peak, peer_peak = step_peak_mb(ours), step_peak_mb(peer)
            ours_state, peer_state = state_mb(ours), state_mb(peer)
            rows.append([
                method, label, peer_label, f"{ours_state:.1f}", f"{peer_state:.1f}", f"{ours_state / peer_state:.2f}",
                f"{ours_peak:.1f}", f"{peer_peak:.1f}",
            ])
            del ours, peer
    notes = (
        f"{N_TENSORS} tensors of {SHAPE[0]}x{SHAPE[1]} float32 ({TOTAL / 1e6:.0f}M parameters, "
        f"{TOTAL * 4 / MB:.0f} MB), 2 threads. 'state': the optimizer's state tensors (optreg keeps a group's "
        "counters once, torch one step tensor per parameter). 'step peak': the largest amount of memory held "
        "by a step's temporaries at one time, from torch's profiler allocation events over two steps. "
        "optreg's eager path runs large tensors one at a time, so its temporaries are a few tensors' worth, "
        "as in torch's for-loop; torch's foreach path holds whole lists of them."
    )
    return {
        "title": "Optimizer memory: optreg vs torch.optim (CPU)",
        "columns": ["method", "optreg path", "torch path", "optreg state MB", "torch state MB", "state ratio",
                    "optreg step peak MB", "torch step peak MB"],
        "rows": rows,
        "notes": notes,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
