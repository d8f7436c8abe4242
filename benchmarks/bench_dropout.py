"""A variational-dropout GRU's training cost per epoch against torch's nn.GRU, side by side in one process.

Every row trains the same classifier (a GRU of 64 units on MNIST-1D read as 20 frames of 2 samples, as in the
``rnn-dropout`` experiment, and a Linear head; Adam, batch 64) on the same batches: forward, backward and the
optimizer step. Rows:

- torch's ``nn.GRU`` without dropout (CPU, no cuDNN): the reference, ratio 1;
- torch's ``nn.GRU(num_layers=2, dropout=p)``: torch's only recurrent dropout, *between* stacked layers (twice
  the work of one layer);
- optreg's :class:`~optreg.nn.dropout.DropoutGRU` with variational dropout (``dropout=p,
  recurrent_dropout=p, variational=True``: masks inside the recurrence, so a step-by-step cell loop) in three
  versions: the straightforward loop it had before (``gi[t]`` indexing, three gate products; kept here as
  the baseline), with ``unbind`` only, and the current loop (``unbind``, fused gates: one ``addmm``, one
  sigmoid for r and z, ``addcmul``, ``lerp``); the current loop with ``torch.compile`` of its cell step (full
  mode only; its compile time reported);
- DropoutGRU with non-recurrent dropout only (torch's fused kernel between the masks).

Samples of ``batches`` training steps rotate the order of the rows; each sample's times are divided by the
torch reference's in that sample, and a row reports the median ratio over the samples with its range (min -
max), and the median cost of an epoch (3200 examples, 50 batches). One torch thread.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks._common import one_thread
from optreg.nn.dropout import DropoutGRU

T, FRAME, HIDDEN, CLASSES, BATCH, EPOCH, P = 20, 2, 64, 10, 64, 3200, 0.25


class _LoopBefore(DropoutGRU):
    """DropoutGRU's cell loop before the speed-up: ``gi[t]`` per step (whose backward zero-fills a ``(T, N, 3H)``
    gradient at every step) and the gates as separate products."""

    unbind = False

    def _loop(self, k: int, x: Tensor, state: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        w_ih, w_hh, b_ih, b_hh = self._layer(k)
        gi = F.linear(x, w_ih, b_ih)
        steps = gi.unbind(0) if self.unbind else [gi[t] for t in range(x.shape[0])]
        outputs = []
        for t, g in enumerate(steps):
            h_in = state * mask[t if mask.shape[0] > 1 else 0]
            i_r, i_z, i_n = g.chunk(3, 1)
            h_r, h_z, h_n = F.linear(h_in, w_hh, b_hh).chunk(3, 1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            state = (1 - z) * n + z * state
            outputs.append(state)
        return torch.stack(outputs), state


class _LoopUnbind(_LoopBefore):
    """The loop before, with ``unbind`` instead of ``gi[t]`` (the first of the two changes alone)."""

    unbind = True


class _Classifier(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _variants(quick: bool) -> dict[str, Callable[[], nn.Module]]:
    torch.manual_seed(0)
    ref = nn.GRU(FRAME, HIDDEN, batch_first=True)
    variational = {"dropout": P, "recurrent_dropout": P, "variational": True, "batch_first": True}

    def ours(cls: type[DropoutGRU], **kw) -> nn.Module:
        rnn = cls(FRAME, HIDDEN, **kw)
        rnn.load_state_dict(ref.state_dict())
        return rnn

    def compiled() -> nn.Module:
        rnn = ours(DropoutGRU, **variational)
        rnn._step = torch.compile(rnn._step)  # type: ignore[method-assign]
        return rnn

    out: dict[str, Callable[[], nn.Module]] = {
        "torch nn.GRU, no dropout (reference)": lambda: copy.deepcopy(ref),
        f"torch nn.GRU 2 layers, dropout={P:g} between layers": lambda: nn.GRU(
            FRAME, HIDDEN, 2, batch_first=True, dropout=P
        ),
        "optreg variational, loop before (gi[t], separate gates)": lambda: ours(_LoopBefore, **variational),
        "optreg variational, loop before + unbind": lambda: ours(_LoopUnbind, **variational),
        "optreg variational, current loop (unbind + fused gates)": lambda: ours(DropoutGRU, **variational),
        "optreg non-recurrent only (torch's kernel between masks)": lambda: ours(
            DropoutGRU, dropout=P, batch_first=True
        ),
    }
    if not quick:
        out["optreg variational, current loop, torch.compile'd cell step"] = compiled
    return out


def _check_same(models: dict[str, nn.Module], x: Tensor) -> dict[str, float]:
    """The three loops compute the same function: equal outputs and gradients under the same masks.
    Returns the seconds of each loop's check (its first forward and backward: a compiled one compiles here)."""
    loops = {name: m for name, m in models.items() if name.startswith("optreg variational")}
    masks = next(iter(loops.values())).rnn.sample_masks(T, x.shape[0], x)
    ref_out, ref_grads = None, None
    seconds = {}
    for name, m in loops.items():
        start = time.perf_counter()
        out = m.head(m.rnn(x, masks=masks)[0][:, -1])
        grads = torch.autograd.grad(out.square().sum(), list(m.rnn.parameters()))
        seconds[name] = time.perf_counter() - start
        if ref_out is None:
            ref_out, ref_grads = out, grads
        else:
            torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
            for a, b in zip(grads, ref_grads):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return seconds


def _sample(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batches: int) -> float:
    start = time.perf_counter()
    for i in range(batches):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / batches


def _run(quick: bool) -> dict:
    from optreg.data import load

    data = load("mnist1d", 0, val_fraction=0.2)
    x = data.train.x.reshape(len(data.train.y), T, FRAME)
    y = data.train.y
    reps, batches = (3, 3) if quick else (9, 10)
    models: dict[str, nn.Module] = {}
    compile_s = None
    for name, make in _variants(quick).items():
        torch.manual_seed(0)
        models[name] = _Classifier(make()).train()
    first = _check_same(models, x[:BATCH])
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    for name, m in models.items():  # warm-up (a compiled step compiled in the check, and may again here)
        start = time.perf_counter()
        _sample(m, opts[name], x, y, 2)
        if "compile" in name:
            compile_s = first[name] + time.perf_counter() - start
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for n in order:
            times[n].append(_sample(models[n], opts[n], x, y, batches))
    ref = names[0]
    per_epoch = EPOCH // BATCH
    rows = []
    for n in names:
        ratios = [a / b for a, b in zip(times[n], times[ref])]
        rows.append([
            n,
            round(statistics.median(times[n]) * per_epoch, 2),
            round(statistics.median(ratios), 2),
            f"{min(ratios):.2f} - {max(ratios):.2f}",
        ])  # fmt: skip
    before = statistics.median(times[names[2]])
    after = statistics.median(times[names[4]])
    notes = (
        f"GRU({FRAME} -> {HIDDEN}) + Linear head, Adam, batch {BATCH}, {T} steps, dropout p = {P:g}; an epoch = "
        f"{per_epoch} batches; {reps} samples of {batches} training steps in rotating order, one torch thread, "
        f"after a warm-up of 2 steps each. The loops' outputs and gradients agree (checked). Current loop vs the "
        f"loop before: {before / after:.2f}x faster."
    )
    if compile_s is not None:
        notes += (f" torch.compile of the cell step: its first forward and backward and two training steps "
                  f"(compile included) {compile_s:.1f} s.")  # fmt: skip
    return {
        "title": "Variational-dropout GRU: cost per training epoch against torch's nn.GRU (CPU, float32)",
        "columns": ["model", "s / epoch", "ratio to nn.GRU (median)", "range"],
        "rows": rows,
        "notes": notes,
    }


run = one_thread(_run)
