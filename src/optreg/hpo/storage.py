"""Where a study keeps its trials: in memory, or in a SQLite file shared by processes.

The SQLite file (:class:`SQLiteStorage`) has two tables and a schema version (``PRAGMA user_version``):

``studies``
    ``id, name`` (unique), ``direction, space`` (the space's fingerprint, JSON), ``method``, ``settings``
    (JSON: the method's settings a resume must share), ``seed, created``.
``trials``
    ``study_id, number, state, params`` (JSON), ``value, budget, seconds, error, attempts, meta`` (JSON),
    ``worker`` (``host:pid:token`` of the process that runs it), ``started, finished``.

Durability: WAL mode, and every state change is one transaction (:func:`optreg._sqlite.transaction`):
claiming a trial (reading the trials, asking the method, inserting the new running trial) holds the write
lock throughout, so workers sharing the file never claim the same trial or propose from a stale history;
finishing a trial checks that it is still running and owned by the caller. A process killed at any
moment leaves every finished trial stored; its running trial stays ``running`` until
:meth:`Storage.interrupt_dead` marks it ``interrupted``, and the next claim runs it again.
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optreg import _sqlite
from optreg.errors import OptregValueError
from optreg.hpo.trial import WAIT, Proposal, Trial, _Wait

__all__ = ["MemoryStorage", "SQLiteStorage", "Storage", "stored_studies"]

_SCHEMA_VERSION = 1
_TABLES = ("studies", "trials")
_SCHEMA = """
CREATE TABLE studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    direction TEXT NOT NULL CHECK (direction IN ('minimize', 'maximize')),
    space TEXT NOT NULL,
    method TEXT NOT NULL,
    settings TEXT NOT NULL,
    seed INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE trials (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    number INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'complete', 'failed', 'interrupted')),
    params TEXT NOT NULL,
    value REAL,
    budget INTEGER,
    seconds REAL,
    error TEXT,
    attempts INTEGER NOT NULL,
    meta TEXT NOT NULL,
    worker TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    PRIMARY KEY (study_id, number)
)
"""
#: The fields of a study that a resumed study must match.
STUDY_FIELDS = ("direction", "space", "method", "settings", "seed")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _mismatch(name: str, where: str, stored: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    for key in STUDY_FIELDS:
        if stored[key] != info[key]:
            raise OptregValueError(
                f"hpo: study {name!r}{where} exists with a different {key}: stored {stored[key]!r}, "
                f"got {info[key]!r} (use another name, or the stored settings to resume it)"
            )


class Storage(ABC):
    """A study's trials. ``info`` holds :data:`STUDY_FIELDS` (``settings`` as JSON text)."""

    name: str

    @abstractmethod
    def _locked(self) -> Any:
        """A context manager: one atomic state change (a write transaction, or a lock)."""

    @abstractmethod
    def _load(self) -> list[Trial]:
        """Every trial, in number order (inside or outside :meth:`_locked`)."""

    @abstractmethod
    def _write(self, trial: Trial, *, new: bool) -> None:
        """Insert (``new``) or replace a trial; only inside :meth:`_locked`."""

    def close(self) -> None:  # noqa: B027  (nothing to release in memory)
        """Release the storage (every change is already stored)."""

    def trials(self) -> list[Trial]:
        """Every trial of the study, in number order."""
        return self._load()

    def claim(
        self,
        propose: Callable[[list[Trial]], Proposal | _Wait | None],
        worker: str,
        max_attempts: int | None = None,
    ) -> Trial | _Wait | None:
        """Atomically take the next trial for ``worker``: an interrupted trial first (run again, same number
        and params), else a new trial from ``propose(trials)``. Returns it (``running``), ``WAIT`` or ``None``.
        An interrupted trial that has had ``max_attempts`` attempts already is marked ``failed`` instead, with
        an error that says so (``None``: no limit)."""
        with self._locked():
            trials = self._load()
            again = next((t for t in trials if t.state == "interrupted"), None)
            while again is not None and max_attempts is not None and again.attempts >= max_attempts:
                msg = (
                    f"hpo: trial {again.number} was not run again: its worker died in each of its {again.attempts} "
                    f"attempts (max_attempts={max_attempts}; the last: {again.error})"
                )
                self._write(
                    Trial(again.number, again.params, "failed", None, again.budget, None, msg, again.attempts,
                          again.meta, again.worker), new=False,
                )  # fmt: skip
                trials = self._load()
                again = next((t for t in trials if t.state == "interrupted"), None)
            if again is not None:
                trial = Trial(
                    again.number, again.params, budget=again.budget, attempts=again.attempts + 1,
                    meta=again.meta, worker=worker, error=again.error,
                )  # fmt: skip
                self._write(trial, new=False)
                return trial
            proposal = propose(trials)
            if proposal is None or proposal is WAIT:
                return proposal
            trial = Trial(len(trials), proposal.params, budget=proposal.budget, meta=proposal.meta, worker=worker)
            self._write(trial, new=True)
            return trial

    def finish(
        self, number: int, *, worker: str, state: str, value: float | None, seconds: float | None, error: str | None
    ) -> Trial:
        """Record the end of a running trial that ``worker`` holds; returns the stored trial."""
        with self._locked():
            old = self._running(number, worker)
            trial = Trial(
                number, old.params, state, value, old.budget, seconds, error, old.attempts, old.meta, worker
            )  # fmt: skip
            self._write(trial, new=False)
            return trial

    def update_meta(self, number: int, *, worker: str, update: Callable[[dict[str, Any]], dict[str, Any]]) -> Trial:
        """Replace the ``meta`` of a running trial that ``worker`` holds by ``update(meta)`` (one transaction:
        an intermediate report, a stop); returns the stored trial."""
        with self._locked():
            old = self._running(number, worker)
            trial = Trial(
                number, old.params, old.state, old.value, old.budget, old.seconds, old.error, old.attempts,
                update(dict(old.meta)), old.worker,
            )  # fmt: skip
            self._write(trial, new=False)
            return trial

    def _running(self, number: Any, worker: str) -> Trial:
        """Trial ``number``, which must be running and held by ``worker`` (inside :meth:`_locked`)."""
        trials = self._load()
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < len(trials):
            raise OptregValueError(f"hpo: study {self.name!r} has no trial number {number!r}")
        old = trials[number]
        if old.state != "running" or old.worker != worker:
            raise OptregValueError(
                f"hpo: trial {number} of study {self.name!r} is {old.state} (worker {old.worker!r}); "
                f"only a running trial can be told, by the process that asked it"
            )
        return old

    def interrupt_dead(self, dead: Callable[[str], bool], only: int | None = None) -> list[int]:
        """Mark ``interrupted`` every running trial (or trial ``only``) whose worker ``dead(worker)`` says is
        gone; returns their numbers."""
        with self._locked():
            out = []
            for t in self._load():
                if t.state == "running" and dead(t.worker) and only in (None, t.number):
                    msg = f"interrupted: worker {t.worker} stopped during attempt {t.attempts}"
                    self._write(
                        Trial(t.number, t.params, "interrupted", None, t.budget, None, msg, t.attempts, t.meta,
                              t.worker), new=False,
                    )  # fmt: skip
                    out.append(t.number)
            return out


class MemoryStorage(Storage):
    """Trials kept in this process (``storage=None``); a lock makes each change atomic across threads."""

    def __init__(self, name: str, info: Mapping[str, Any]) -> None:
        self.name, self.info = name, dict(info)
        self._trials: list[Trial] = []
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"MemoryStorage({self.name!r})"

    def _locked(self) -> Any:
        return self._lock

    def _load(self) -> list[Trial]:
        with self._lock:
            return list(self._trials)

    def _write(self, trial: Trial, *, new: bool) -> None:
        if new:
            self._trials.append(trial)
        else:
            self._trials[trial.number] = trial


class SQLiteStorage(Storage):
    """A study in the SQLite file ``path`` (created if missing; one file may hold several studies).

    Opening a study that exists checks that its direction, space, method, settings and seed are the
    ones given (else a clear error); a corrupt or foreign file is refused without being changed.
    """

    def __init__(self, path: str | os.PathLike[str], name: str, info: Mapping[str, Any]) -> None:
        self.path, self.name = Path(path), name
        self._db = _sqlite.connect(
            self.path, owner="hpo", kind="study storage", schema=_SCHEMA, version=_SCHEMA_VERSION, tables=_TABLES
        )
        try:
            with _sqlite.transaction(self._db):
                row = self._db.execute("SELECT * FROM studies WHERE name = ?", (name,)).fetchone()
                if row is None:
                    cur = self._db.execute(
                        "INSERT INTO studies (name, direction, space, method, settings, seed, created) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (name, *(info[k] for k in STUDY_FIELDS), _now()),
                    )
                    self._id = int(cur.lastrowid)
                else:
                    _mismatch(name, f" in '{self.path}'", dict(row), info)
                    self._id = int(row["id"])
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStorage('{self.path}', {self.name!r})"

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _sqlite.transaction(self._db):
            yield

    def _load(self) -> list[Trial]:
        rows = self._db.execute("SELECT * FROM trials WHERE study_id = ? ORDER BY number", (self._id,))
        return [
            Trial(
                r["number"], _sqlite.loads(r["params"]), r["state"], r["value"], r["budget"], r["seconds"],
                r["error"], r["attempts"], _sqlite.loads(r["meta"]), r["worker"],
            )  # fmt: skip
            for r in rows
        ]

    def _write(self, trial: Trial, *, new: bool) -> None:
        values = (
            trial.state, _sqlite.dumps(trial.params, sort_keys=False), trial.value, trial.budget, trial.seconds,
            trial.error, trial.attempts, _sqlite.dumps(trial.meta), trial.worker,
        )  # fmt: skip
        try:
            if new:
                self._db.execute(
                    "INSERT INTO trials (state, params, value, budget, seconds, error, attempts, meta, worker, "
                    "study_id, number, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, self._id, trial.number, _now()),
                )
            else:
                self._db.execute(
                    "UPDATE trials SET state = ?, params = ?, value = ?, budget = ?, seconds = ?, error = ?, "
                    "attempts = ?, meta = ?, worker = ?, finished = ? WHERE study_id = ? AND number = ?",
                    (*values, None if trial.state == "running" else _now(), self._id, trial.number),
                )
        except sqlite3.IntegrityError as e:  # a second writer outside the protocol
            raise OptregValueError(f"hpo: study {self.name!r}: trial {trial.number} cannot be stored ({e})") from None


def stored_studies(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{study name: number of trials}`` of the study file ``path`` (empty if it does not exist); a corrupt
    or foreign file raises the same error as opening it, and is not changed."""
    path = Path(path)
    if not path.exists():
        return {}
    db = _sqlite.connect(path, owner="hpo", kind="study storage", schema=_SCHEMA, version=_SCHEMA_VERSION,
                         tables=_TABLES)  # fmt: skip
    try:
        rows = db.execute(
            "SELECT s.name, COUNT(t.number) AS n FROM studies s LEFT JOIN trials t ON t.study_id = s.id GROUP BY s.id"
        )
        return {r["name"]: int(r["n"]) for r in rows}
    finally:
        db.close()
