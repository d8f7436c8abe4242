"""Where a study's trials run: ``serial`` (:meth:`optreg.hpo.Study.optimize` in this process),
``processes``: local worker processes that share the study's SQLite file, or ``ray``: Ray tasks.

Each worker opens the same study (same storage, name and settings) and runs the serial loop: claiming a
trial is one write transaction (:meth:`optreg.hpo.storage.Storage.claim`), so no two workers run the same
trial and each proposal sees the trials the others are running (the GP methods' constant liar, the
halving rungs' ``WAIT``). The parent process waits for the workers, reports every finished trial to the
callback, and marks the running trial of a worker that died (a SIGKILL, an out-of-memory kill, a segfault,
``os._exit``) ``interrupted`` and starts a new worker in its place, so the trial is run again in a worker
process, never in the parent; a trial that has had ``max_attempts`` attempts (:data:`MAX_ATTEMPTS`) and
whose worker died in each is marked ``failed`` with an error that says so instead of being run again
(:meth:`optreg.hpo.storage.Storage.claim`), so an objective that kills its process on one configuration
costs that trial and nothing else. A worker that dies holding no trial is not replaced; once all workers
have exited, the parent runs whatever is left itself (a worker that could not start, say: its error is then
the parent's). Workers are started with the ``spawn`` method (safe with torch's threads), so the
objective must be picklable: a function defined at the top level of an importable module.

``ray`` (:func:`run_ray`): this process (the driver) owns the study. It claims up to ``n_workers`` trials,
runs each as a Ray task (``objective(params[, budget=][, trial=])``, shipped with cloudpickle, so a
closure works too) and stores each result as it arrives; the workers need no access to the storage file,
so the same code runs on a cluster (``address=``). A task whose worker dies (SIGKILL, out of memory, a lost
node) leaves its trial ``interrupted``, and the next claim runs it again (after ``max_attempts`` attempts it is
marked ``failed``), so the study loses nothing; the driver itself dying is the serial case (the trial is run again
on resume). An objective that takes ``trial=`` reports its intermediate values through a small Ray actor
on the driver's node that opens the same study storage (SQLite, so ``storage=`` is needed then).
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

__all__ = ["MAX_ATTEMPTS", "run_processes", "run_ray"]

#: How many times the ``processes`` and ``ray`` backends run a trial whose worker keeps dying before they mark
#: it failed (the default of ``max_attempts``).
MAX_ATTEMPTS = 3


def _work(settings: dict[str, Any], objective: Callable[..., Any], poll: float, max_attempts: int) -> None:
    """A worker process: open the shared study and run trials until the method is done."""
    from optreg.hpo.study import Study

    study = Study(**settings)
    try:
        study._run_serial(objective, None, poll, max_attempts)
    finally:
        study.close()


def _held(trials: list[Trial], pid: int | None) -> bool:
    """Whether process ``pid`` of this host left a trial ``running``, or ``interrupted`` and not yet run again."""
    from optreg.hpo.study import _HOST

    def holder(worker: str) -> tuple[str, str]:
        host, _, rest = worker.partition(":")
        return host, rest.partition(":")[0]

    return any(t.state in ("running", "interrupted") and holder(t.worker) == (_HOST, str(pid)) for t in trials)


def run_processes(
    study: Study,
    objective: Callable[..., Any],
    *,
    n_workers: int,
    callback: Callable[[Study, Trial], Any] | None,
    poll: float,
    max_attempts: int = MAX_ATTEMPTS,
) -> None:
    """Run ``study`` with ``n_workers`` local worker processes sharing its SQLite storage (see the module
    docstring): a worker that dies mid-trial is replaced, and its trial run again up to ``max_attempts`` times."""
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
    settings = _settings(study)
    ctx = multiprocessing.get_context("spawn")

    def start() -> Any:
        w = ctx.Process(target=_work, args=(settings, objective, poll, max_attempts), daemon=True)
        w.start()
        return w

    workers = [start() for _ in range(n_workers)]
    reported: set[int] = {t.number for t in study.trials if t.finished}

    def report(*_: Any) -> None:
        for t in study.trials:
            if t.finished and t.number not in reported:
                reported.add(t.number)
                if callback is not None:
                    callback(study, t)

    try:
        while any(w is not None for w in workers):
            for i, w in enumerate(workers):
                if w is not None and not w.is_alive():
                    w.join()  # reaped, so its pid counts as dead
                    died_in_trial = _held(study.trials, w.pid)
                    study.storage.interrupt_dead(_dead)
                    workers[i] = start() if died_in_trial else None  # the new worker runs the trial again
            report()
            time.sleep(poll)
    finally:
        for w in workers:
            if w is not None and w.is_alive():
                w.terminate()
            if w is not None:
                w.join()
    study.storage.interrupt_dead(_dead)
    study._run_serial(objective, report, poll, max_attempts)  # what the workers left (none could start, say)
    report()


def _settings(study: Study) -> dict[str, Any]:
    """The arguments that open ``study`` again in another process (its storage must be a file)."""
    return {
        "space": study.space,
        "method": study.method.name,
        "direction": study.direction,
        "n_trials": study.n_trials,
        "seed": study.seed,
        "storage": study.storage.path,
        "name": study.name,
        **study.options,
    }


class _Reports:
    """The ray backend's link for intermediate values: the remote tasks' ``trial.report`` and
    ``trial.should_stop`` go to a Ray actor holding the study (``actor``), one call each."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def report(self, trial: Trial, value: Any, step: Any) -> Trial:
        import ray

        return ray.get(self.actor.report.remote(trial.number, value, step))

    def should_stop(self, trial: Trial) -> bool:
        import ray

        return ray.get(self.actor.should_stop.remote(trial.number))


class _StudyActor:
    """A Ray actor (on the driver's node) that opens the study's storage and takes the tasks' reports."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from optreg.hpo.study import Study

        self.study = Study(**settings)

    def report(self, number: int, value: Any, step: Any) -> Trial:
        return self.study.report(number, value, step)

    def should_stop(self, number: int) -> bool:
        return self.study.should_stop(number)


def _ray_task(objective: Callable[..., Any], trial: Trial, link: Any) -> tuple[float | None, str | None, float]:
    """One trial in a Ray worker: ``(value, error, seconds)``."""
    from optreg.hpo.study import call_objective

    start = time.perf_counter()
    value, error = call_objective(objective, trial, link)
    return value, error, time.perf_counter() - start


def run_ray(
    study: Study,
    objective: Callable[..., Any],
    *,
    n_workers: int,
    callback: Callable[[Study, Trial], Any] | None,
    poll: float,
    address: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> None:
    """Run ``study`` with up to ``n_workers`` trials at a time as Ray tasks (see the module docstring).

    Uses the Ray runtime already initialized in this process; else starts one with ``ray.init(address)``
    (``None``: a local one) and shuts it down at the end."""
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise OptregValueError("hpo: backend='ray' needs Ray (pip install optreg[ray]), got no module 'ray'") from None
    from optreg.hpo.storage import SQLiteStorage
    from optreg.hpo.study import _dead, _worker, takes_trial
    from optreg.hpo.trial import WAIT

    reports = takes_trial(objective)
    if reports and not isinstance(study.storage, SQLiteStorage):
        raise OptregValueError(
            "hpo: backend='ray' with an objective that takes trial= needs a storage file (its reports are "
            "stored by an actor that opens it), got storage=None"
        )
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    actor = None
    inflight: dict[Any, Trial] = {}
    try:
        task = ray.remote(max_retries=0)(_ray_task)
        link = None
        if reports:
            here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
            actor = ray.remote(num_cpus=0, scheduling_strategy=here)(_StudyActor).remote(_settings(study))
            link = _Reports(actor)
        worker = _worker()
        while True:
            claimed: Any = None
            while len(inflight) < n_workers:
                claimed = study.storage.claim(study.method.propose, worker)
                if claimed is None or claimed is WAIT:
                    break
                inflight[task.remote(objective, claimed, link)] = claimed
            if not inflight:
                if claimed is None:
                    return
                study.storage.interrupt_dead(_dead)  # other processes hold what the method waits for
                time.sleep(poll)
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=max(poll, 1.0))
            for ref in ready:
                trial = inflight.pop(ref)
                try:
                    value, error, seconds = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the task itself failed (e.g. unpicklable result)
                    value, error, seconds = None, f"ray: {e}", None
                except ray.exceptions.RayError as e:  # the worker died: run the trial again
                    if trial.attempts < max_attempts:
                        study.storage.interrupt_dead(lambda w, t=trial: w == t.worker, only=trial.number)
                        continue
                    value, error, seconds = (
                        None,
                        f"ray: the worker died in each of {trial.attempts} attempts ({e})",
                        None,
                    )
                done = study.storage.finish(
                    trial.number, worker=worker, state="complete" if error is None else "failed", value=value,
                    seconds=seconds, error=error,
                )  # fmt: skip
                if callback is not None:
                    callback(study, done)
    except BaseException:
        for ref, trial in inflight.items():
            ray.cancel(ref, force=True)
            study.storage.interrupt_dead(lambda w, t=trial: w == t.worker, only=trial.number)
        raise
    finally:
        if actor is not None:
            ray.kill(actor)
        if started:
            ray.shutdown()
