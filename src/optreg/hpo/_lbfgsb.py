"""Many independent L-BFGS-B runs whose function evaluations are batched (the D-BE idea, arXiv 2511.13625).

Each start keeps its own L-BFGS-B state (its own memory, line search and stopping test: the runs are
*decoupled*, unlike one L-BFGS-B over the sum of all starts, where one badly scaled start slows every
other); what they share is the evaluation: every round, the point each unfinished run asks for is
gathered and ``fun`` is called once on all of them. SciPy's L-BFGS-B drives each run from its own thread
that blocks in its callback until the batch is evaluated (one event per run, so a round wakes each thread
once), so only one thread works at a time and the
result is the same as running the starts one by one (the batch a run is evaluated in does not change
its numbers beyond rounding, and the batches themselves are the same on every call).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import scipy.optimize

__all__ = ["batched_lbfgsb"]


def batched_lbfgsb(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    bounds: np.ndarray,
    *,
    maxiter: int = 200,
    gtol: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize each row's problem from ``x0`` ``(S, C)`` within ``bounds`` ``(C, 2)`` (the same for all).

    ``fun(rows, x)`` takes the indices ``rows`` ``(B,)`` of the runs still going (``B <= S``) and their
    points ``x`` ``(B, C)``, and returns their values ``(B,)`` and gradients ``(B, C)``. Returns the end
    points ``(S, C)`` and their values ``(S,)``. An exception raised by ``fun`` stops every run and is raised here.
    """
    s = len(x0)
    if s == 1:  # no batching to do
        res = scipy.optimize.minimize(
            lambda z: _one(fun, z), x0[0], jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": maxiter, "gtol": gtol},
        )  # fmt: skip
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
                f, x0[i], jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter, "gtol": gtol}
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


class _Abort(Exception):
    """Raised in a run's callback to end it after ``fun`` failed."""


def _one(
    fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], z: np.ndarray
) -> tuple[float, np.ndarray]:
    values, grads = fun(np.zeros(1, dtype=int), z[None])
    return float(values[0]), np.array(grads[0], dtype=float)
