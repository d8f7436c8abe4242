"""Where a study's trials run: ``serial`` (:meth:`optreg.hpo.Study.optimize` in this process) or
``processes``: local worker processes that share the study's SQLite file.

Each worker opens the same study (same storage, name and settings) and runs the serial loop: claiming a
trial is one write transaction (:meth:`optreg.hpo.storage.Storage.claim`), so no two workers run the same
trial and each proposal sees the trials the others are running (the GP methods' constant liar, the
halving rungs' ``WAIT``). The parent process waits for the workers, reports every finished trial to the
callback, and marks the running trial of a worker that died (a SIGKILL, an out-of-memory kill)
``interrupted``, so another worker runs it again; once all workers have exited, the parent runs whatever
is left itself. Workers are started with the ``spawn`` method (safe with torch's threads), so the
objective must be picklable: a function defined at the top level of an importable module.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optreg.errors import OptregValueError

if TYPE_CHECKING:
    from optreg.hpo.study import Study
    from optreg.hpo.trial import Trial

__all__ = ["run_processes"]


def _work(settings: dict[str, Any], objective: Callable[..., Any], poll: float) -> None:
    """A worker process: open the shared study and run trials until the method is done."""
    from optreg.hpo.study import Study

    study = Study(**settings)
    try:
        study._run_serial(objective, None, poll)
    finally:
        study.close()


def run_processes(
    study: Study,
    objective: Callable[..., Any],
    *,
    n_workers: int,
    callback: Callable[[Study, Trial], Any] | None,
    poll: float,
) -> None:
    """Run ``study`` with ``n_workers`` local worker processes sharing its SQLite storage."""
    from optreg.hpo.storage import SQLiteStorage
    from optreg.hpo.study import _dead

    if not isinstance(study.storage, SQLiteStorage):
        raise OptregValueError("hpo: backend='processes' needs a storage file shared by the workers, got storage=None")
    try:
        pickle.dumps(objective)
    except Exception as e:
        raise OptregValueError(
            f"hpo: backend='processes' needs a picklable objective (a top-level function of a module), "
            f"got {objective!r} ({e})"
        ) from None
    settings = {
        "space": study.space,
        "method": study.method.name,
        "direction": study.direction,
        "n_trials": study.n_trials,
        "seed": study.seed,
        "storage": study.storage.path,
        "name": study.name,
        **study.options,
    }
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_work, args=(settings, objective, poll), daemon=True) for _ in range(n_workers)]
    for w in workers:
        w.start()
    reported: set[int] = {t.number for t in study.trials if t.finished}
    try:
        while True:
            alive = [w for w in workers if w.is_alive()]
            if len(alive) < len(workers):
                for w in workers:
                    if not w.is_alive():
                        w.join()  # reaped, so its pid counts as dead
                study.storage.interrupt_dead(_dead)
            for t in study.trials:
                if t.finished and t.number not in reported:
                    reported.add(t.number)
                    if callback is not None:
                        callback(study, t)
            if not alive:
                break
            time.sleep(poll)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join()
    study.storage.interrupt_dead(_dead)
    study._run_serial(objective, callback, poll)  # what the workers left (a worker killed mid-trial)
