"""The lab's run store: every training run, its config and its metrics, in one SQLite file.

One output folder has one store (``<out>/runs.sqlite``). Three tables:

``runs``
    ``id, experiment, label, seed, config`` (JSON), ``versions`` (JSON: python, torch, optreg, numpy),
    ``status`` (``running`` / ``finished`` / ``failed`` / ``diverged``), ``started`` and ``finished`` (UTC,
    ISO 8601), ``summary`` (JSON, e.g. test accuracy and wall time, set when the run ends) and ``error``.
``steps``
    ``run_id, step, epoch, loss, accuracy, lr, grad_norm``: one row per logged iteration.
``epochs``
    ``run_id, epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, time``: one row per epoch.

Durability: the database runs in WAL mode and :class:`RecordRun` (the trainer callback that fills it)
buffers the iteration rows of an epoch and writes them together with the epoch row in one transaction
(``executemany``), so recording costs one commit per epoch and a run killed mid-way leaves a readable
database holding every finished epoch, its run still marked ``running``.

Safety: every value is validated *before* anything is written (types, finiteness, known run, run still
running), and each write is one transaction, so bad input raises :class:`~optreg.errors.OptregValueError`
and leaves what is stored untouched.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optreg.errors import OptregValueError
from optreg.train import Callback

if TYPE_CHECKING:
    from optreg.train import Trainer

__all__ = [
    "EPOCH_COLUMNS",
    "METRICS_COLUMNS",
    "STATUSES",
    "STEP_COLUMNS",
    "RecordRun",
    "RunStore",
    "to_jsonable",
    "versions",
]

#: The states of a run.
STATUSES = ("running", "finished", "failed", "diverged")
#: Metric columns of the ``steps`` table (after ``run_id``); the trainer's iteration record fields.
STEP_COLUMNS = ("step", "epoch", "loss", "accuracy", "lr", "grad_norm")
#: Metric columns of the ``epochs`` table (after ``run_id``); the trainer's epoch record fields.
EPOCH_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time")
#: Columns of :meth:`RunStore.export_csv`: one row per step (``kind = "step"``) or epoch (``"epoch"``).
METRICS_COLUMNS = (
    "run_id",
    "experiment",
    "label",
    "seed",
    "kind",
    "step",
    "epoch",
    "loss",
    "accuracy",
    "lr",
    "grad_norm",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "time",
)

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    versions TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'diverged')),
    started TEXT NOT NULL,
    finished TEXT,
    summary TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL,
    accuracy REAL,
    lr REAL,
    grad_norm REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    train_loss REAL,
    train_accuracy REAL,
    val_loss REAL,
    val_accuracy REAL,
    lr REAL,
    time REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment);
"""

_INTEGER_FIELDS = ("step", "epoch")


def versions() -> dict[str, str]:
    """The versions that produced a run: python, torch, optreg, numpy."""
    import numpy
    import torch

    import optreg

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optreg": optreg.__version__,
        "numpy": numpy.__version__,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def to_jsonable(value: Any, where: str = "config") -> Any:
    """``value`` as plain JSON data: dicts with string keys, lists, str, int, finite float, bool, None.

    Tuples become lists, paths and torch devices / dtypes strings, numpy and torch scalars numbers, a
    function or class its qualified name, any other object its ``repr`` (schedules print as
    ``Exponential(lr=0.1, beta=0.96)``). A non-finite float or a non-string key raises
    :class:`OptregValueError` naming ``where`` (e.g. ``config.optimizer.lr``).
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        f = float(value)
        if not math.isfinite(f):
            raise OptregValueError(f"store: {where} must be a finite number, got {value!r}")
        return f
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise OptregValueError(f"store: {where} keys must be strings, got {k!r}")
            out[k] = to_jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return to_jsonable(item(), where)
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}".lstrip(".")
    return repr(value)


def _check_text(owner: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise OptregValueError(f"{owner}: {name} must be a non-empty string, got {value!r}")
    return value


def _check_seed(owner: str, seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) < 2**63:
        raise OptregValueError(f"{owner}: seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def _row(owner: str, record: Any, columns: Sequence[str]) -> tuple[Any, ...]:
    """The values of ``record`` for ``columns``, checked: integers for step/epoch, finite numbers or None."""
    if not isinstance(record, Mapping):
        raise OptregValueError(f"{owner}: a record must be a mapping, got {record!r}")
    missing = [c for c in columns if c not in record]
    if missing:
        raise OptregValueError(f"{owner}: record {dict(record)!r} lacks {', '.join(missing)}")
    values = []
    for c in columns:
        v = record[c]
        if c in _INTEGER_FIELDS:
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 0:
                raise OptregValueError(f"{owner}: {c} must be an integer >= 0, got {v!r}")
            values.append(int(v))
        elif v is None:
            values.append(None)
        elif isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise OptregValueError(f"{owner}: {c} must be a finite number or None, got {v!r}")
        else:
            values.append(float(v))
    return tuple(values)


class RunStore:
    """A SQLite file of runs and their metrics (see the module docstring for the tables).

    >>> with RunStore("runs/demo/runs.sqlite") as store:                       # doctest: +SKIP
    ...     run = store.start_run("optimizers", "adam", seed=0, config={"lr": 1e-3})
    ...     store.log(run, steps=[{"step": 0, "epoch": 0, "loss": 2.3, ...}], epoch={...})
    ...     store.finish_run(run, "finished", summary={"test_accuracy": 0.97})
    ...     store.epochs(run)

    ``path`` is created (with its folder) if missing; an existing file must be an optreg run store.
    Several processes may share one file (WAL mode, 30 s busy timeout).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise OptregValueError(f"store: path must be a file, got the directory '{self.path}'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0)
            self._setup()
        except sqlite3.DatabaseError as e:
            if hasattr(self, "_db"):
                self._db.close()
            raise OptregValueError(f"store: '{self.path}' is not an optreg run store ({e})") from None

    def _setup(self) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version not in (0, _SCHEMA_VERSION) or (version == 0 and tables - {"sqlite_sequence"}):
            raise sqlite3.DatabaseError(f"unknown schema (user_version {version}, tables {sorted(tables)})")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        if version == 0:
            with db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    # ------------------------------------------------------------------ context / lifetime
    def close(self) -> None:
        """Close the connection (every write is already committed)."""
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore('{self.path}')"

    # ------------------------------------------------------------------ writing
    def start_run(self, experiment: str, label: str, *, seed: int, config: Mapping[str, Any] | None = None) -> int:
        """Insert a run with status ``running`` and return its id. ``config`` must be JSON-able."""
        experiment = _check_text("store", "experiment", experiment)
        label = _check_text("store", "label", label)
        seed = _check_seed("store", seed)
        if config is not None and not isinstance(config, Mapping):
            raise OptregValueError(f"store: config must be a mapping, got {config!r}")
        config_json = json.dumps(to_jsonable(dict(config or {})), allow_nan=False, sort_keys=True)
        versions_json = json.dumps(versions(), sort_keys=True)
        with self._db:
            cur = self._db.execute(
                "INSERT INTO runs (experiment, label, seed, config, versions, status, started) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (experiment, label, seed, config_json, versions_json, _now()),
            )
        return int(cur.lastrowid)

    def _running(self, run_id: Any) -> int:
        if isinstance(run_id, bool) or not isinstance(run_id, Integral):
            raise OptregValueError(f"store: run_id must be an integer, got {run_id!r}")
        row = self._db.execute("SELECT status FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise OptregValueError(f"store: no run with id {run_id}")
        if row["status"] != "running":
            raise OptregValueError(f"store: run {run_id} is {row['status']}; only a running run can be written")
        return int(run_id)

    def log(
        self,
        run_id: int,
        *,
        steps: Iterable[Mapping[str, Any]] = (),
        epoch: Mapping[str, Any] | None = None,
    ) -> None:
        """Append iteration records (``steps``, fields :data:`STEP_COLUMNS`) and at most one epoch record
        (fields :data:`EPOCH_COLUMNS`) to a running run, all in one transaction.

        Every record is checked first; a bad one (a missing field, a string, NaN) raises and nothing is
        written. A step or epoch number already stored for the run raises as well.
        """
        run_id = self._running(run_id)
        step_rows = [(run_id, *_row("store: step", r, STEP_COLUMNS)) for r in steps]
        epoch_row = None if epoch is None else (run_id, *_row("store: epoch", epoch, EPOCH_COLUMNS))
        try:
            with self._db:
                if step_rows:
                    self._db.executemany(
                        f"INSERT INTO steps (run_id, {', '.join(STEP_COLUMNS)}) VALUES (?{', ?' * len(STEP_COLUMNS)})",
                        step_rows,
                    )
                if epoch_row is not None:
                    self._db.execute(
                        f"INSERT INTO epochs (run_id, {', '.join(EPOCH_COLUMNS)}) "
                        f"VALUES (?{', ?' * len(EPOCH_COLUMNS)})",
                        epoch_row,
                    )
        except sqlite3.IntegrityError as e:
            raise OptregValueError(f"store: run {run_id}: a step or epoch is already recorded ({e})") from None

    def finish_run(
        self,
        run_id: int,
        status: str = "finished",
        *,
        summary: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a running run ``finished`` / ``failed`` / ``diverged``, with a JSON-able ``summary``."""
        run_id = self._running(run_id)
        if status not in STATUSES[1:]:
            raise OptregValueError(f"store: status must be one of {', '.join(map(repr, STATUSES[1:]))}, got {status!r}")
        if summary is not None and not isinstance(summary, Mapping):
            raise OptregValueError(f"store: summary must be a mapping, got {summary!r}")
        if error is not None and not isinstance(error, str):
            raise OptregValueError(f"store: error must be a string, got {error!r}")
        summary_json = None if summary is None else json.dumps(to_jsonable(dict(summary), "summary"), allow_nan=False)
        with self._db:
            self._db.execute(
                "UPDATE runs SET status = ?, finished = ?, summary = ?, error = ? WHERE id = ?",
                (status, _now(), summary_json, error, run_id),
            )

    # ------------------------------------------------------------------ reading
    def runs(self, experiment: str | None = None, *, status: str | None = None) -> list[dict[str, Any]]:
        """The runs (oldest first) as dicts; ``config``, ``versions`` and ``summary`` parsed from JSON."""
        query, args = "SELECT * FROM runs", []
        clauses = []
        if experiment is not None:
            clauses.append("experiment = ?")
            args.append(experiment)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        out = []
        for row in self._db.execute(query + " ORDER BY id", args):
            run = dict(row)
            for key in ("config", "versions", "summary"):
                run[key] = None if run[key] is None else json.loads(run[key])
            out.append(run)
        return out

    def run(self, run_id: int) -> dict[str, Any]:
        """One run as :meth:`runs` gives it."""
        row = self._db.execute("SELECT experiment FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise OptregValueError(f"store: no run with id {run_id!r}")
        return next(r for r in self.runs(row["experiment"]) if r["id"] == run_id)

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        """The iteration records of a run, in step order."""
        cols = ", ".join(STEP_COLUMNS)
        rows = self._db.execute(f"SELECT {cols} FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        return [dict(r) for r in rows]

    def epochs(self, run_id: int) -> list[dict[str, Any]]:
        """The epoch records of a run, in epoch order."""
        cols = ", ".join(EPOCH_COLUMNS)
        rows = self._db.execute(f"SELECT {cols} FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
        return [dict(r) for r in rows]

    def metric_rows(self, run_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """One dict per stored step and epoch (columns :data:`METRICS_COLUMNS`, missing ones None), by run."""
        runs = self.runs()
        if run_ids is not None:
            wanted = set(run_ids)
            runs = [r for r in runs if r["id"] in wanted]
        out: list[dict[str, Any]] = []
        for run in runs:
            head = {"run_id": run["id"], "experiment": run["experiment"], "label": run["label"], "seed": run["seed"]}
            for kind, records in (("step", self.steps(run["id"])), ("epoch", self.epochs(run["id"]))):
                for rec in records:
                    row = dict.fromkeys(METRICS_COLUMNS)
                    row.update(head, kind=kind, **rec)
                    out.append(row)
        return out

    def export_csv(self, path: str | os.PathLike[str], run_ids: Iterable[int] | None = None) -> Path:
        """Write :meth:`metric_rows` as a CSV file (header :data:`METRICS_COLUMNS`); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            writer.writerows(self.metric_rows(run_ids))
        return path


class RecordRun(Callback):
    """A trainer callback that records a run in a :class:`RunStore` as it trains.

    Iteration records are buffered and written with their epoch's record in one transaction at the end of
    every epoch (and whenever ``flush_every`` of them are waiting), so a run killed mid-way keeps every
    finished epoch. The run itself is created by the caller (:meth:`RunStore.start_run`) and closed by it
    (:meth:`RunStore.finish_run`), since only the caller knows how it ended; :meth:`flush` writes what
    is left (e.g. the steps before a divergence). In data-parallel training it runs on rank 0 only.
    """

    rank_zero_only = True

    def __init__(self, store: RunStore, run_id: int, *, flush_every: int = 10_000) -> None:
        if not isinstance(store, RunStore):
            raise OptregValueError(f"record_run: store must be a RunStore, got {store!r}")
        self.store, self.run_id, self.flush_every = store, run_id, flush_every
        self._steps: list[dict[str, Any]] = []

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._steps.append(record)
        if len(self._steps) >= self.flush_every:
            self.flush()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.store.log(self.run_id, steps=self._steps, epoch=record)
        self._steps = []

    def flush(self) -> None:
        """Write the buffered iteration records now."""
        if self._steps:
            self.store.log(self.run_id, steps=self._steps)
            self._steps = []
