"""Hessian diagnostics: Lanczos against deflated power iteration (PyHessian's method), and the cost of an HVP.

- Products to reach the top-3 eigenvalues of a trained MLP's Hessian to 1e-3 relative (the exact spectrum from
  ``torch.func.hessian`` is the reference): optreg's Lanczos with full re-orthogonalization against deflated
  power iteration as PyHessian runs it (each eigenvector by power iteration on ``H - sum lambda_j v_j v_j^T``,
  stopped when the Rayleigh quotient changes by less than 1e-3 relative; written here, since the released
  PyHessian 0.1 cannot run on torch 2.13). Target: Lanczos needs at most a quarter of the products.
- The peers in the same run: PyHessian 0.1's ``hessian.eigenvalues(top_n=3)`` (deflated power iteration; its
  HVPs counted by wrapping ``pyhessian.hessian.hessian_vector_product``) and hessian-eigenthings 1.0.0a5's
  ``lanczos(HessianOperator(...), k=3)`` (its HVPs counted by wrapping the operator's ``matvec``), with the
  accuracy each reaches.
- One HVP against one gradient (forward + backward) on a 784-256-256-10 MLP with 512 samples: optreg's
  operator reuses the gradient graph, a fresh double-backward rebuilds it. Target: <= 1.3x a gradient.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.flop_counter import FlopCounterMode

from optreg import diagnostics as dg


def _trained_mlp() -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float64) / 16
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 5), torch.nn.Tanh(), torch.nn.Linear(5, 10)).double()
    # near a minimum, not at a saturated one (at zero training loss the Hessian has only a handful of directions)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=60, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return model, (x, y)


def _power_products(op: dg.HessianOperator, exact_top: torch.Tensor, k: int, gen: torch.Generator) -> tuple[int, bool]:
    """HVPs deflated power iteration (PyHessian's method) needs for the top ``k``, each eigenvector iterated until
    its Rayleigh quotient is within 1e-3 of the exact eigenvalue (an oracle stop: the peer's best case)."""
    start = op.products
    found: list[tuple[float, torch.Tensor]] = []
    ok = True
    for j in range(k):
        v = torch.randn(op.dim, generator=gen, dtype=op.dtype)
        v /= v.norm()
        target = float(exact_top[j])
        for _ in range(3000):
            hv = op.matvec(v)
            for lam, u in found:
                hv -= lam * torch.dot(u, v) * u
            value = float(torch.dot(hv, v))
            v = hv / hv.norm()
            if abs(value - target) <= 1e-3 * abs(target):
                break
        else:
            ok = False
        found.append((value, v))
    return op.products - start, ok


def _peers(model, data, exact_top: torch.Tensor, k: int) -> dict[str, tuple[int, float]]:
    """HVPs and the largest relative error of the top-k eigenvalues for PyHessian and hessian-eigenthings."""
    out = {}
    try:
        import sys

        import pyhessian  # noqa: F401 - its package __init__ shadows the module name with the class

        ph = sys.modules["pyhessian.hessian"]

        calls = [0]
        original = ph.hessian_vector_product

        def counted(*args, **kwargs):
            calls[0] += 1
            return original(*args, **kwargs)

        ph.hessian_vector_product = counted
        try:
            torch.manual_seed(0)  # PyHessian draws its start vectors from the global RNG
            values, _ = ph.hessian(model, F.cross_entropy, data=data, cuda=False).eigenvalues(top_n=k)
        finally:
            ph.hessian_vector_product = original
            for p in model.parameters():  # PyHessian leaves graph-carrying .grad behind
                p.grad = None
            model.train()
        got = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
        out["PyHessian 0.1 (power iteration)"] = (calls[0], float(((got - exact_top).abs() / exact_top.abs()).max()))
    except Exception as e:
        out[f"PyHessian 0.1: {type(e).__name__}"] = (0, float("nan"))
    try:
        import hessian_eigenthings as he

        op = he.HessianOperator(model, [data], he.supervised_loss(F.cross_entropy))
        calls = [0]
        matvec = op.matvec

        def counted_matvec(v):
            calls[0] += 1
            return matvec(v)

        op.matvec = counted_matvec
        res = he.lanczos(op, k=k, which="LA", seed=0)
        got = torch.as_tensor(res.eigenvalues, dtype=torch.float64).sort(descending=True).values[:k]
        err = float(((got - exact_top).abs() / exact_top.abs()).max())
        out["hessian-eigenthings 1.0.0a5 (lanczos)"] = (calls[0], err)
    except Exception as e:
        out[f"hessian-eigenthings: {type(e).__name__}: {e}"[:80]] = (0, float("nan"))
    return out


def _time(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run(quick: bool = False) -> dict:
    rows = []
    model, data = _trained_mlp()
    op = dg.HessianOperator(model, F.cross_entropy, data)
    exact = torch.linalg.eigvalsh(op.dense()).flip(0)
    k = 3
    seeds = range(3 if quick else 5)
    lanczos, power, lanczos_ok, power_ok = [], [], [], []
    for s in seeds:
        ev = dg.hessian_eigenvalues(op, k=k, tol=1e-4, generator=torch.Generator().manual_seed(s))
        lanczos.append(ev.products)
        lanczos_ok.append(bool(((ev.values - exact[:k]).abs() <= 1e-3 * exact[:k].abs()).all()))
        n, ok = _power_products(op, exact[:k], k, torch.Generator().manual_seed(s))
        power.append(n)
        power_ok.append(ok)
    ratio = statistics.median(a / b for a, b in zip(lanczos, power))
    peers = _peers(model, data, exact[:k], k)
    rows.append([
        f"top-{k} eigenvalues, MLP 64-5-10 ({op.dim} params, 60 L-BFGS iterations on all 1797 digits)",
        f"{statistics.median(lanczos):g} ({min(lanczos)}-{max(lanczos)}), within 1e-3: {all(lanczos_ok)}",
        f"deflated power iteration {statistics.median(power):g} ({min(power)}-{max(power)}), "
        f"within 1e-3: {all(power_ok)}",
        f"{ratio:.2f}", "<= 0.25",
    ])
    for name, (n, err) in peers.items():
        rows.append([f"top-{k}, peer {name}", f"optreg Lanczos: {statistics.median(lanczos):g} HVPs",
                     f"{n} HVPs, max relative error {err:.1e}",
                     f"{statistics.median(lanczos) / n:.2f}" if n else "could not run", ""])

    torch.manual_seed(0)
    big = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    x, y = torch.randn(512, 784), torch.randint(0, 10, (512,))
    params = list(big.parameters())
    big_op = dg.HessianOperator(big, F.cross_entropy, (x, y))
    v = torch.randn(big_op.dim)

    def gradient():
        torch.autograd.grad(F.cross_entropy(big(x), y), params)

    def fresh_hvp():
        g = torch.autograd.grad(F.cross_entropy(big(x), y), params, create_graph=True)
        torch.autograd.grad(g, params, big_op.unflatten(v))

    big_op.matvec(v)  # builds the graph once
    reps = 5 if quick else 20
    ratios_cached, ratios_fresh = [], []
    for _ in range(3):
        g_t = statistics.median(_time(gradient, reps))
        h_t = statistics.median(_time(lambda: big_op.matvec(v), reps))
        f_t = statistics.median(_time(fresh_hvp, reps))
        ratios_cached.append(h_t / g_t)
        ratios_fresh.append(f_t / g_t)
    rows.append([
        "one HVP / one gradient, MLP 784-256-256-10, 512 samples (graph reused)",
        f"{statistics.median(ratios_cached):.2f} ({min(ratios_cached):.2f}-{max(ratios_cached):.2f})",
        f"rebuilt each HVP: {statistics.median(ratios_fresh):.2f} ({min(ratios_fresh):.2f}-{max(ratios_fresh):.2f})",
        f"{statistics.median(ratios_cached):.2f}", "<= 1.3",
    ])
    # the floor: the matmul FLOPs of one HVP (reverse over reverse, graph reused) over those of one gradient,
    # counted by torch's FlopCounterMode; forward over reverse on a cached forward needs the same matmuls
    with FlopCounterMode(display=False) as counter:
        gradient()
    grad_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        big_op.matvec(v)
    hvp_flops = counter.get_total_flops()
    rows.append([
        "matmul FLOPs of one HVP / one gradient (torch FlopCounterMode), same model",
        f"{hvp_flops / 1e6:.0f} MFLOP / {grad_flops / 1e6:.0f} MFLOP", "",
        f"{hvp_flops / grad_flops:.3f}", "floor of the 1.3 target",
    ])
    return {
        "title": "Hessian diagnostics: Lanczos vs deflated power iteration; HVP cost",
        "columns": ["case", "optreg", "peer", "ratio", "target"],
        "rows": rows,
        "notes": (
            "Products counted by the operator; each row's range is over seeds (eigenvalues) or over three rounds of "
            "median timings (HVP). The peer for the HVP row is the usual double backward that rebuilds the gradient "
            "graph for every product (hessian-eigenthings' way). The FLOP row is why the 1.3x target cannot be met on "
            "this model: an HVP needs 1.34x a gradient's matmul FLOPs (the first layer's 784x256 products are as many "
            "as in a gradient, the others three times as many), so 1.3 is below the arithmetic floor; the measured "
            "time ratio's excess over 1.34 is the transposed-operand matmuls and the elementwise double-backward ops."
        ),
    }
