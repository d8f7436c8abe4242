"""A study: a search space, a method, and the trials stored so far; ``minimize`` / ``maximize`` run one.

>>> from optreg import hpo
>>> study = hpo.minimize(lambda p: (p["x"] - 1) ** 2, {"x": hpo.Float(-3.0, 3.0)}, method="random",
...                      n_trials=20, seed=0)
>>> round(study.best_params["x"], 1), len(study.trials)
(0.8, 20)

The engine's rules: nothing is printed and no file is written except the ``storage`` path the caller
hands in; progress is reported through ``callback(study, trial)`` after every finished trial.

Intermediate values: an objective that takes a ``trial`` keyword gets the running trial
(:class:`~optreg.hpo.RunningTrial`) and may ``trial.report(value, step)`` its learning curve and ask
``trial.should_stop()`` (the ``median-stop`` method's rule); ask / tell users call :meth:`Study.report`
and :meth:`Study.should_stop`.

Failures: an objective that raises an ``Exception``, or returns NaN, an infinity or something that is not
a number, gives a ``failed`` trial with its ``error``, and the study goes on. A ``KeyboardInterrupt`` (or
any other ``BaseException``) marks the running trial ``interrupted`` and propagates; the trial is run again
when the study is resumed. A study resumed with the same ``storage`` and ``name`` keeps every finished
trial; a trial left ``running`` by a process that no longer exists (a SIGKILL) is marked ``interrupted``
and run again first.
"""

from __future__ import annotations

import inspect
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from optreg import _sqlite
from optreg._checks import check_choice, check_int
from optreg.errors import OptregTypeError, OptregValueError
from optreg.hpo.method import create_method
from optreg.hpo.space import Space
from optreg.hpo.storage import MemoryStorage, SQLiteStorage, Storage
from optreg.hpo.trial import WAIT, RunningTrial, Trial

__all__ = ["BACKENDS", "Study", "maximize", "minimize"]

#: Where the trials of ``optimize`` run: ``serial`` (this process), ``processes`` (local workers) or
#: ``ray`` (Ray tasks, local or on a cluster; :func:`optreg.hpo.executors.run_ray`).
BACKENDS = ("serial", "processes", "ray")

_TOKEN = uuid.uuid4().hex[:12]
_HOST = socket.gethostname()


def _worker() -> str:
    """This process as a trial's worker: ``host:pid:token`` (the token tells a reused pid apart)."""
    return f"{_HOST}:{os.getpid()}:{_TOKEN}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead too
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _dead(worker: str) -> bool:
    """Whether the process ``worker`` names is gone: a process of this host that no longer exists, or this
    process's pid with another token. Workers on other hosts are never judged dead here."""
    host, _, rest = worker.partition(":")
    pid, _, token = rest.partition(":")
    if host != _HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return token != _TOKEN
    return not _pid_alive(int(pid))


def _as_value(value: Any) -> tuple[float | None, str | None]:
    """The objective's return value as a finite float, or ``None`` and why it is not one."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        value = item()
    if isinstance(value, bool) or not isinstance(value, Real):
        return None, f"the objective must return a number, got {value!r}"
    v = float(value)
    if not math.isfinite(v):
        return None, f"the objective returned {v!r}"
    return v, None


def takes_keyword(objective: Callable[..., Any], name: str, *, unknown: bool = False) -> bool:
    """Whether ``objective`` accepts the keyword ``name`` (a parameter of that name, or ``**kwargs``);
    ``unknown`` when its signature cannot be read (a builtin)."""
    try:
        params = inspect.signature(objective).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return unknown
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def takes_trial(objective: Callable[..., Any]) -> bool:
    """Whether ``objective`` accepts a ``trial`` keyword (then it gets the :class:`RunningTrial`)."""
    return takes_keyword(objective, "trial")


def call_objective(objective: Callable[..., Any], trial: Trial, link: Any) -> tuple[float | None, str | None]:
    """Run ``objective`` on a claimed trial: ``objective(params[, budget=r][, trial=RunningTrial])``.
    Returns ``(value, None)`` or ``(None, error)``; a ``BaseException`` that is not an ``Exception``
    (KeyboardInterrupt) propagates."""
    kwargs: dict[str, Any] = {} if trial.budget is None else {"budget": trial.budget}
    if takes_trial(objective):
        kwargs["trial"] = RunningTrial(trial, link)
    try:
        result = objective(dict(trial.params), **kwargs)
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    return _as_value(result)


class Study:
    """A hyperparameter search (section 7.6): ask / tell by hand, or :meth:`optimize` an objective.

    Parameters
    ----------
    space:
        ``{name: hpo.Float | hpo.Int | hpo.Categorical | hpo.Fixed}`` (see :mod:`optreg.hpo.space`).
    method:
        One of :func:`optreg.hpo.methods`; its options are passed as further keywords (``budget=`` for
        ``halving``, ``max_budget=`` and ``eta=`` for ``hyperband`` and ``bohb``, ``grid_size=`` for ``grid``, ...).
    direction:
        ``"minimize"`` or ``"maximize"``.
    n_trials:
        How many trials (for ``halving``: how many configurations ``N``). ``None``: no limit for ask / tell,
        the whole grid for ``grid``, one pass over the brackets for ``hyperband`` and ``bohb``.
    seed:
        Same seed, same space, same results: trial ``k``'s draws depend only on the seed and ``k``.
    storage, name:
        A SQLite file path (``None``: in memory) and the study's name in it. Opening an existing name
        resumes that study; it must have the same space, method, settings, direction and seed.
    """

    def __init__(
        self,
        space: Mapping[str, Any] | Space,
        *,
        method: str = "random",
        direction: str = "minimize",
        n_trials: int | None = None,
        seed: int = 0,
        storage: str | os.PathLike[str] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        self.space = Space(space)
        self.method = create_method(
            method, self.space, seed=seed, n_trials=n_trials, direction=direction, options=options
        )
        self.direction, self.n_trials, self.seed, self.options = direction, n_trials, seed, dict(options)
        name = "study" if name is None else name
        if not isinstance(name, str) or not name:
            raise OptregValueError(f"hpo: name must be a non-empty string, got {name!r}")
        self.name = name
        info = {
            "direction": direction,
            "space": self.space.fingerprint,
            "method": method,
            "settings": _sqlite.dumps(self.method.identity()),
            "seed": seed,
        }
        if storage is None:
            self.storage: Storage = MemoryStorage(name, info)
        elif isinstance(storage, str | os.PathLike):
            self.storage = SQLiteStorage(storage, name, info)
        else:
            raise OptregValueError(f"hpo: storage must be a file path or None, got {storage!r}")
        self.storage.interrupt_dead(_dead)
        self._asked: dict[int, float] = {}

    def __repr__(self) -> str:
        m, d = self.method.name, self.direction
        return f"Study({self.name!r}, method={m!r}, direction={d!r}, storage={self.storage})"

    def close(self) -> None:
        """Close the storage (every trial is already stored)."""
        self.storage.close()

    # ------------------------------------------------------------------ results
    @property
    def trials(self) -> list[Trial]:
        """Every trial, in number order (as stored now)."""
        return self.storage.trials()

    @property
    def best_trial(self) -> Trial:
        """The best complete trial; with budgets, among those run with the largest budget (the values of
        smaller budgets are not comparable with it); trials stopped early (``median-stop``) only if no
        trial ran to its end. ``top_trials(1)[0]``."""
        return self.top_trials(1)[0]

    def top_trials(self, k: int) -> list[Trial]:
        """The ``k`` best complete trials, best first, by the study's direction, among the trials
        :attr:`best_trial` chooses from (the largest budget; trials stopped early only if no trial ran to
        its end); ties keep the lower trial number. For an ensemble of a search's best models
        (:meth:`optreg.train.ensemble.Ensemble.from_study`, file 001)."""
        k = check_int("hpo.top_trials", "k", k, 1)
        done = [t for t in self.trials if t.state == "complete"]
        if not done:
            raise OptregValueError(f"hpo: study {self.name!r} has no complete trial yet")
        done = [t for t in done if t.stopped is None] or done
        budgets = [t.budget for t in done if t.budget is not None]
        if budgets:
            done = [t for t in done if t.budget == max(budgets)]
        if k > len(done):
            at = f" at the largest budget ({max(budgets)})" if budgets else ""
            raise OptregValueError(
                f"hpo.top_trials: k must be at most the number of comparable complete trials of study "
                f"{self.name!r} ({len(done)}{at}), got {k}"
            )
        return sorted(done, key=self.method.loss)[:k]  # stable: trials come in number order

    @property
    def best_params(self) -> dict[str, Any]:
        """The parameters of :attr:`best_trial`."""
        return dict(self.best_trial.params)

    @property
    def best_value(self) -> float:
        """The value of :attr:`best_trial`."""
        return float(self.best_trial.value)

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Trial | None:
        """Claim the next trial (``running``, held by this process): an interrupted one first, else the
        method's proposal. ``None`` when there is nothing to run now (the method is done, or it waits for
        running trials to be told)."""
        trial = self.storage.claim(self.method.propose, _worker())
        if trial is WAIT or trial is None:
            return None
        self._asked[trial.number] = time.perf_counter()
        return trial

    def tell(self, trial: Trial | int, value: Any = None, *, error: str | None = None) -> Trial:
        """Record the result of a trial from :meth:`ask`: ``value`` (a finite number) makes it ``complete``;
        ``error=`` (a message), NaN, an infinity or a non-number makes it ``failed``. Returns the stored trial."""
        if trial is None:
            raise OptregValueError(
                "hpo: tell: trial is None: ask() returns None when the study has no trial to run now (it is done, "
                "or waits for running trials to finish), so there is nothing to tell"
            )
        number = trial.number if isinstance(trial, Trial) else trial
        if error is not None:
            if not isinstance(error, str):
                raise OptregValueError(f"hpo: error must be a string, got {error!r}")
            v = None
        else:
            v, error = _as_value(value)
        start = self._asked.pop(number, None) if isinstance(number, int) else None
        seconds = None if start is None else time.perf_counter() - start
        return self.storage.finish(
            number, worker=_worker(), state="complete" if error is None else "failed", value=v,
            seconds=seconds, error=error,
        )  # fmt: skip

    def report(self, trial: Trial | RunningTrial | int, value: Any, step: Any) -> Trial:
        """Store the intermediate ``value`` (finite) of a running trial at ``step`` (an integer >= 0);
        returns the stored trial. A second report of the same step replaces the first."""
        number = trial if isinstance(trial, int) else trial.number
        v, error = _as_value(value)
        if error is not None:
            raise OptregValueError(f"hpo: trial.report: value must be a finite number, got {value!r}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise OptregValueError(f"hpo: trial.report: step must be an integer >= 0, got {step!r}")

        def add(meta: dict[str, Any]) -> dict[str, Any]:
            curve = {int(s): float(x) for s, x in meta.get("curve", ())}
            curve[step] = v
            return {**meta, "curve": sorted([s, x] for s, x in curve.items())}

        return self.storage.update_meta(number, worker=self._holder(number), update=add)

    def should_stop(self, trial: Trial | RunningTrial | int) -> bool:
        """Whether the method wants the running trial stopped now (the ``median-stop`` rule on the stored
        curves); when it does, the trial is marked ``stopped`` at its last reported step."""
        number = trial if isinstance(trial, int) else trial.number
        trials = self.trials
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < len(trials):
            raise OptregValueError(f"hpo: study {self.name!r} has no trial number {number!r}")
        now = trials[number]
        if now.stopped is not None:
            return True
        if not self.method.should_stop(now, trials):
            return False
        step = max(now.intermediate)
        self.storage.update_meta(number, worker=now.worker, update=lambda m: {**m, "stopped": step})
        return True

    def _holder(self, number: Any) -> str:
        """The worker that holds trial ``number`` (this process, or the process a proxy reports for)."""
        trials = self.trials
        if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < len(trials):
            return trials[number].worker
        return _worker()

    # ------------------------------------------------------------------ running
    def optimize(
        self,
        objective: Callable[..., Any],
        *,
        n_workers: int = 1,
        backend: str = "serial",
        callback: Callable[[Study, Trial], Any] | None = None,
        poll: float = 0.05,
        address: str | None = None,
        max_attempts: int | None = None,
    ) -> Study:
        """Run trials until the method is done: each calls ``objective(params)``, or
        ``objective(params, budget=r)`` for a multi-fidelity method (and ``trial=`` when the objective takes
        it). ``backend="ray"`` runs ``n_workers`` trials at a time as Ray tasks; ``address`` is the cluster's
        (``None``: a Ray already initialized, else a local one). ``max_attempts`` (``processes`` and ``ray``;
        default :data:`optreg.hpo.executors.MAX_ATTEMPTS`): how many times a trial whose worker dies (a
        SIGKILL, a segfault, ``os._exit``) is run in all before it is marked ``failed``. Returns the study."""
        if not callable(objective):
            raise OptregTypeError(f"hpo: objective must be callable, got {objective!r}")
        if callback is not None and not callable(callback):
            raise OptregTypeError(f"hpo: callback must be callable, got {callback!r}")
        check_choice("hpo", "backend", backend, BACKENDS)
        check_int("hpo", "n_workers", n_workers, 1)
        if self.method.needs_n_trials and self.n_trials is None:
            raise OptregValueError(f"hpo: method {self.method.name!r} needs n_trials, an integer >= 1, got None")
        if self.method.needs_reports and not takes_trial(objective):
            raise OptregValueError(
                f"hpo: method {self.method.name!r} needs an objective that takes trial= and calls "
                f"trial.report(value, step), got {objective!r}"
            )
        if self.method.needs_budget and not takes_keyword(objective, "budget", unknown=True):
            raise OptregValueError(
                f"hpo: method {self.method.name!r} calls objective(params, budget=r) (r in resource units, e.g. "
                f"epochs), but the objective takes no 'budget': {objective!r}"
            )
        if address is not None and backend != "ray":
            raise OptregValueError(f"hpo: address is for backend='ray', got backend={backend!r}")
        if max_attempts is not None:
            if backend == "serial":
                raise OptregValueError(
                    "hpo: max_attempts is for backend='processes' or 'ray' (a serial study's process is its worker), "
                    f"got backend={backend!r}"
                )
            check_int("hpo", "max_attempts", max_attempts, 1)
        from optreg.hpo.executors import MAX_ATTEMPTS, run_processes, run_ray

        attempts = MAX_ATTEMPTS if max_attempts is None else max_attempts
        if backend == "ray":
            run_ray(self, objective, n_workers=n_workers, callback=callback, poll=poll, address=address,
                    max_attempts=attempts)  # fmt: skip
            return self
        if backend == "serial":
            if n_workers != 1:
                raise OptregValueError(
                    f"hpo: n_workers > 1 needs backend='processes' or 'ray' (serial runs one trial at a time), "
                    f"got {n_workers}"
                )
            self._run_serial(objective, callback, poll)
            return self
        run_processes(self, objective, n_workers=n_workers, callback=callback, poll=poll, max_attempts=attempts)
        return self

    def _run_serial(
        self, objective: Callable[..., Any], callback: Callable | None, poll: float, max_attempts: int | None = None
    ) -> None:
        while True:
            trial = self.storage.claim(self.method.propose, _worker(), max_attempts)
            if trial is None:
                return
            if trial is WAIT:  # other workers hold the trials the method waits for
                self.storage.interrupt_dead(_dead)
                time.sleep(poll)
                continue
            done = self._evaluate(objective, trial)
            if callback is not None:
                callback(self, done)

    def _evaluate(self, objective: Callable[..., Any], trial: Trial) -> Trial:
        """Run one claimed trial and store its end (complete, failed, or interrupted and re-raised)."""
        start = time.perf_counter()
        try:
            value, error = call_objective(objective, trial, self)
        except BaseException:
            self.storage.interrupt_dead(lambda w: w == trial.worker, only=trial.number)
            raise
        return self.storage.finish(
            trial.number, worker=trial.worker, state="complete" if error is None else "failed", value=value,
            seconds=time.perf_counter() - start, error=error,
        )  # fmt: skip


def _runner(direction: str, doc: str) -> Callable[..., Study]:
    def run(
        objective: Callable[..., Any],
        space: Mapping[str, Any],
        *,
        method: str = "random",
        n_trials: int | None = None,
        seed: int = 0,
        storage: str | os.PathLike[str] | None = None,
        name: str | None = None,
        n_workers: int = 1,
        backend: str = "serial",
        callback: Callable[[Study, Trial], Any] | None = None,
        address: str | None = None,
        max_attempts: int | None = None,
        **options: Any,
    ) -> Study:
        if not callable(objective):
            raise OptregTypeError(f"hpo: objective must be callable, got {objective!r}")
        study = Study(
            space, method=method, direction=direction, n_trials=n_trials, seed=seed, storage=storage, name=name,
            **options,
        )  # fmt: skip
        return study.optimize(
            objective, n_workers=n_workers, backend=backend, callback=callback, address=address,
            max_attempts=max_attempts,
        )  # fmt: skip

    run.__name__ = run.__qualname__ = direction
    run.__doc__ = doc
    return run


minimize = _runner(
    "minimize",
    """Search ``space`` for the parameters that minimize ``objective(params)`` (a validation error, say).

    ``minimize(objective, space, *, method="random", n_trials=None, seed=0, storage=None, name=None,
    n_workers=1, backend="serial", callback=None, address=None, max_attempts=None, **options)``: the arguments of
    :class:`Study` and :meth:`Study.optimize`; ``options`` go to the method. Returns the study
    (``study.best_params``, ``study.best_value``, ``study.trials``).
    """,
)
maximize = _runner("maximize", """As :func:`minimize`, for an objective to maximize (a validation accuracy).""")
