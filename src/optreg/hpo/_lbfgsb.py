"""Many independent L-BFGS-B runs whose function evaluations are batched (the D-BE idea, arXiv 2511.13625).

Each start keeps its own L-BFGS-B state (its own memory, line search and stopping test: the runs are
*decoupled*, unlike one L-BFGS-B over the sum of all starts, where one badly scaled start slows every
other); what they share is the evaluation: every round, the point each unfinished run asks for is
gathered and ``fun`` is called once on all of them. SciPy's L-BFGS-B drives each run from its own thread
that blocks in its callback until the batch is evaluated (one event per run, so a round wakes each thread
once), so only one thread works at a time and the
result is the same as running the starts one by one (the batch a run is evaluated in does not change
its numbers beyond rounding, and the batches themselves are the same on every call).

With SciPy >= 1.15, whose L-BFGS-B is C code with a reverse-communication entry point
(``scipy.optimize._lbfgsb.setulb``: it returns whenever it needs ``f`` and ``g``), no threads are needed:
:func:`_reverse_communication` keeps one workspace per run and steps each until it asks for an evaluation,
exactly as ``scipy.optimize.minimize`` drives it (same defaults, so the same iterates), which saves the
thread switches and SciPy's per-iteration Python wrapper (about 10 ms of a 50 ms suggestion). The threads
remain the path for an older SciPy, or for a ``setulb`` of another signature.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import scipy.optimize

try:  # SciPy >= 1.15: setulb(m, x, l, u, nbd, f, g, factr, pgtol, wa, iwa, task, lsave, isave, dsave, maxls, ln_task)
    from scipy.optimize import _lbfgsb as _scipy_lbfgsb

    _SETULB = _scipy_lbfgsb.setulb if "ln_task" in (_scipy_lbfgsb.setulb.__doc__ or "") else None
except ImportError:  # pragma: no cover - a SciPy without the module
    _SETULB = None

__all__ = ["batched_lbfgsb"]

_FTOL = 2.2204460492503131e-09  # scipy.optimize.minimize's default for L-BFGS-B


def batched_lbfgsb(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    bounds: np.ndarray,
    *,
    maxiter: int = 200,
    gtol: float = 1e-2,
    ftol: float = _FTOL,
    reverse_communication: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize each row's problem from ``x0`` ``(S, C)`` within ``bounds`` ``(C, 2)`` (the same for all).

    ``fun(rows, x)`` takes the indices ``rows`` ``(B,)`` of the runs still going (``B <= S``) and their
    points ``x`` ``(B, C)``, and returns their values ``(B,)`` and gradients ``(B, C)``. Returns the end
    points ``(S, C)`` and their values ``(S,)``. An exception raised by ``fun`` stops every run and is raised here.
    ``reverse_communication=False`` takes the threads even where SciPy's ``setulb`` could be driven directly.
    """
    if _SETULB is not None and reverse_communication:
        return _reverse_communication(fun, x0, bounds, maxiter=maxiter, gtol=gtol, ftol=ftol)
    options = {"maxiter": maxiter, "gtol": gtol, "ftol": ftol}
    s = len(x0)
    if s == 1:  # no batching to do
        res = scipy.optimize.minimize(
            lambda z: _one(fun, z), x0[0], jac=True, method="L-BFGS-B", bounds=bounds, options=options
        )
        return res.x[None], np.array([res.fun])
    lock = threading.Lock()
    all_asked = threading.Event()  # set by the last run to ask (or to finish) in a round
    ready = [threading.Event() for _ in range(s)]  # set when run i's answer is there
    asked: dict[int, np.ndarray] = {}  # run -> the point it waits on
    answers: dict[int, tuple[float, np.ndarray] | None] = {}  # None: stop
    waiting = [s]  # runs still going that have not asked in this round

    def arrive() -> None:
        with lock:
            waiting[0] -= 1
            if waiting[0] == 0:
                all_asked.set()

    out_x, out_f = x0.astype(float).copy(), np.full(s, np.inf)
    errors: list[BaseException] = []
    done = np.zeros(s, dtype=bool)

    def run(i: int) -> None:
        def f(z: np.ndarray) -> tuple[float, np.ndarray]:
            asked[i] = z.copy()
            arrive()
            ready[i].wait()
            ready[i].clear()
            answer = answers.pop(i)
            if answer is None:
                raise _Abort
            return answer

        try:
            res = scipy.optimize.minimize(
                f, x0[i], jac=True, method="L-BFGS-B", bounds=bounds, options=options
            )
            out_x[i], out_f[i] = res.x, res.fun
        except _Abort:
            pass
        finally:
            done[i] = True
            arrive()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(s)]
    for t in threads:
        t.start()
    while True:
        all_asked.wait()
        all_asked.clear()
        order = sorted(asked)
        if not order:
            break
        points = np.stack([asked.pop(i) for i in order])
        with lock:
            waiting[0] = len(order)  # the runs answered now each ask again or finish
        try:
            values, grads = fun(np.array(order), points)
        except BaseException as e:  # stop the runs, then raise it here
            errors.append(e)
            answers.update(dict.fromkeys(order))
        else:
            for j, i in enumerate(order):
                answers[i] = (float(values[j]), np.array(grads[j], dtype=float))
        for i in order:
            ready[i].set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out_x, out_f


#: scipy.optimize.minimize's L-BFGS-B defaults: maxcor, maxls
_MAXCOR, _MAXLS = 10, 20
_FG, _NEW_X, _STOP, _MAXITER = 3, 1, 5, 504  # setulb's task codes (SciPy's status_messages)


def _reverse_communication(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    bounds: np.ndarray,
    *,
    maxiter: int,
    gtol: float,
    ftol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`batched_lbfgsb` through SciPy's reverse-communication ``setulb``, one workspace per run; each
    round steps every unfinished run until it asks for ``f`` and ``g`` at a new point (or stops: converged,
    ``maxiter`` iterations, or a line search that failed), then evaluates all those points in one call."""
    s, n = x0.shape
    lo, hi = np.asarray(bounds[:, 0], dtype=float), np.asarray(bounds[:, 1], dtype=float)
    nbd = np.where(np.isfinite(lo), np.where(np.isfinite(hi), 2, 1), np.where(np.isfinite(hi), 3, 0)).astype(np.int32)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    x = np.ascontiguousarray(np.clip(np.asarray(x0, dtype=float), bounds[:, 0], bounds[:, 1]))  # as minimize does
    m, factr = _MAXCOR, ftol / np.finfo(float).eps
    wa = np.zeros((s, 2 * m * n + 5 * n + 11 * m * m + 8 * m))
    iwa = np.zeros((s, 3 * n), dtype=np.int32)
    task, ln_task = np.zeros((s, 2), dtype=np.int32), np.zeros((s, 2), dtype=np.int32)
    lsave, isave, dsave = np.zeros((s, 4), dtype=np.int32), np.zeros((s, 44), dtype=np.int32), np.zeros((s, 29))
    iterations = np.zeros(s, dtype=int)
    rows = np.arange(s)
    f, g = fun(rows, x.copy())  # minimize evaluates the start first, and setulb's first request is for it
    f, g = np.array(f, dtype=float), np.array(g, dtype=float)  # x's rows are updated in place by setulb
    while len(rows):
        asking = []
        for i in rows:
            xi, gi = x[i], g[i].copy()
            while True:
                _SETULB(m, xi, lo, hi, nbd, f[i], gi, factr, gtol, wa[i], iwa[i], task[i], lsave[i], isave[i],
                        dsave[i], _MAXLS, ln_task[i])  # fmt: skip
                if task[i, 0] == _FG:
                    asking.append(i)
                    break
                if task[i, 0] != _NEW_X:
                    break  # converged, stopped, or the line search failed: x[i] and f[i] are the result
                iterations[i] += 1
                if iterations[i] >= maxiter:
                    task[i] = (_STOP, _MAXITER)
        rows = np.array(asking, dtype=int)
        if len(rows):
            values, grads = fun(rows, x[rows].copy())
            f[rows], g[rows] = values, grads
    return x, f


class _Abort(Exception):
    """Raised in a run's callback to end it after ``fun`` failed."""


def _one(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], z: np.ndarray
) -> tuple[float, np.ndarray]:
    values, grads = fun(np.zeros(1, dtype=int), z[None])
    return float(values[0]), np.array(grads[0], dtype=float)
