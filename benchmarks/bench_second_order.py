"""Classical and second-order methods against scipy.optimize.minimize: iterations and function evaluations.

Rosenbrock in 2-D (from (-1.2, 1)) and 10-D (SciPy's documentation start), and l2-regularized logistic regression
on digits 0 vs 1, run to ||g|| <= 1e-7. optreg's counts are closure calls through ``optimizer.step(closure)``,
which by torch's contract evaluates once at the start of every step (SciPy reuses the line search's last point):
the ``optreg - steps`` column removes that one call per step, for a like-for-like count. Counts, not times:
deterministic, so no range. Wall time is reported for the logistic problem (median of 3, ratio to SciPy).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import scipy.optimize as so
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import optreg.optim as oo

PAIRS = [("cg", "CG"), ("bfgs", "BFGS"), ("lbfgs", "L-BFGS-B"), ("newton", "Newton-CG"), ("newton-cg", "Newton-CG")]


def _rosen(x):
    return ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def _logistic():
    d = load_digits(n_class=2)
    xb = torch.cat([torch.tensor(d.data / 16.0), torch.ones(len(d.data), 1, dtype=torch.float64)], dim=1)
    y = torch.tensor(d.target, dtype=torch.float64)
    return lambda w: F.binary_cross_entropy_with_logits(xb @ w, y) + 1e-2 * (w[:-1] ** 2).sum()


def _ours(name: str, f, x0: np.ndarray, tol: float = 1e-7) -> tuple[int, int, float]:
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = oo.create(name, [x])
    calls = [0]

    def closure():
        calls[0] += 1
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    steps = 0
    for _ in range(5000):
        opt.step(closure)
        steps += 1
        with torch.enable_grad():
            if float(torch.autograd.grad(f(x), x)[0].norm()) <= tol:
                break
    return steps, calls[0], float(f(x.detach()))


def _theirs(method: str, f, x0: np.ndarray, tol: float = 1e-7):
    def fun(w):
        wt = torch.tensor(w, requires_grad=True)
        v = f(wt)
        (g,) = torch.autograd.grad(v, wt)
        return float(v.detach()), g.numpy()

    kw = {}
    if method == "Newton-CG":
        def hessp(w, p):
            wt = torch.tensor(w, requires_grad=True)
            (g,) = torch.autograd.grad(f(wt), wt, create_graph=True)
            return torch.autograd.grad(g, wt, torch.tensor(p))[0].numpy()

        kw["hessp"] = hessp
    options = {"gtol": tol} if method != "Newton-CG" else {"xtol": 1e-12}
    return so.minimize(fun, x0, jac=True, method=method, options=options, **kw)


def run(quick: bool = False) -> dict:
    problems = [
        ("rosenbrock 2-D", _rosen, np.array([-1.2, 1.0])),
        ("rosenbrock 10-D", _rosen, np.array([1.3, 0.7, 0.8, 1.9, 1.2, 1.1, 0.9, 1.05, 0.95, 1.0])),
        ("logistic, digits 0/1 (65 params)", _logistic(), np.zeros(65)),
    ]
    rows = []
    for label, f, x0 in problems:
        for ours, theirs in PAIRS:
            steps, calls, fx = _ours(ours, f, x0)
            ref = _theirs(theirs, f, x0)
            row = [label, ours, f"{steps} / {calls} / {calls - steps}", theirs, f"{ref.nit} / {ref.nfev}",
                   f"{fx:.3g} vs {ref.fun:.3g}"]
            if label.startswith("logistic"):
                reps = 1 if quick else 3
                t_ours = statistics.median(_timed(_ours, ours, f, x0) for _ in range(reps))
                t_theirs = statistics.median(_timed(_theirs, theirs, f, x0) for _ in range(reps))
                row.append(f"{t_ours / t_theirs:.2f}")
            else:
                row.append("")
            rows.append(row)
    return {
        "title": "Second-order and classical methods vs scipy.optimize.minimize (iterations, evaluations)",
        "columns": ["problem", "optreg", "steps / closure calls / calls - steps", "SciPy", "nit / nfev",
                    "final loss (ours vs SciPy)", "time ratio"],
        "rows": rows,
        "notes": (
            "optreg's newton forms the exact Hessian from n HVPs and its evaluations include one closure call per "
            "step that keeps the gradient graph; SciPy's Newton-CG gets Hessian-vector products through hessp "
            "(not counted as evaluations). Time ratios are optreg / SciPy on the same torch objective."
        ),
    }


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0
