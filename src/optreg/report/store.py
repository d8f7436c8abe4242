"""The lab's run store: every training run, its config and its metrics, in one SQLite file.

One output folder has one store (``<out>/runs.sqlite``). Four tables (schema version 2):

``invocations``
    One row per command (``optreg run``, ``optreg train``) or :func:`optreg.experiments.run` call:
    ``id, experiment, name, folder`` (where its figures and tables are, relative to the store's folder:
    ``<name>/<id>``), ``command`` (JSON: the command line), ``started, host, pid``.
``runs``
    ``id, invocation, experiment, label, seed, config`` (JSON: the values actually used, defaults filled
    in, and the resolved run spec), ``versions`` (JSON: python, optreg, torch, numpy, scipy, ...),
    ``environment`` (JSON: host, threads, device, git commit, command line, data file and hash, ...),
    ``status`` (``running`` / ``finished`` / ``failed`` / ``diverged`` / ``interrupted``), ``started``,
    ``finished`` (UTC, ISO 8601), ``summary`` (JSON, set when the run ends), ``error``, and the process
    that runs it: ``host, pid, process_start, heartbeat`` (the time of its last write).
``steps``
    ``run_id, step, epoch, loss, accuracy, lr, grad_norm``: one row per logged iteration.
``epochs``
    ``run_id, epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, time``: one row per epoch.

Durability: the database runs in WAL mode and :class:`RecordRun` (the trainer callback that fills it)
buffers the iteration rows of an epoch and writes them together with the epoch row in one transaction
(``executemany``), so recording costs one commit per epoch and a run killed mid-way leaves a readable
database holding every finished epoch. When a run ends the WAL is checkpointed into the main file, so
copying ``runs.sqlite`` alone copies every finished run.

Killed runs: a ``running`` run whose process is gone (same host, its pid no longer alive, or alive but a
different process) is marked ``interrupted`` when the store is opened and whenever runs are listed. A
run started on another host cannot be checked; its ``heartbeat`` says when it last wrote.

Safety: every value is validated *before* anything is written (types, finiteness, known run, run still
running), and each write is one transaction, so bad input raises :class:`~optreg.errors.OptregValueError`
and leaves what is stored untouched. A version-1 file (optreg before invocations) is migrated in one
transaction when it is opened: every run is kept, its new columns empty.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    "RESUMABLE",
    "STATUSES",
    "STEP_COLUMNS",
    "RecordRun",
    "RunRef",
    "RunStore",
    "environment",
    "fingerprint",
    "git_state",
    "parse_ref",
    "to_jsonable",
    "versions",
]

#: The states of a run (``interrupted``: its process ended without finishing it, e.g. killed).
STATUSES = ("running", "finished", "failed", "diverged", "interrupted")
#: The states from which :meth:`RunStore.resume_run` continues a run.
RESUMABLE = ("interrupted", "failed", "finished")
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

_SCHEMA_VERSION = 2
_RUNS_TABLE = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    invocation INTEGER REFERENCES invocations(id),
    experiment TEXT NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    versions TEXT NOT NULL,
    environment TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'diverged', 'interrupted')),
    started TEXT NOT NULL,
    finished TEXT,
    summary TEXT,
    error TEXT,
    host TEXT,
    pid INTEGER,
    process_start TEXT,
    heartbeat TEXT
);
"""
_INVOCATIONS_TABLE = """
CREATE TABLE invocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment TEXT NOT NULL,
    name TEXT NOT NULL,
    folder TEXT,
    command TEXT NOT NULL,
    started TEXT NOT NULL,
    host TEXT,
    pid INTEGER
);
"""
_METRIC_TABLES = """
CREATE TABLE steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL,
    accuracy REAL,
    lr REAL,
    grad_norm REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE epochs (
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
"""
_INDEXES = """
CREATE INDEX runs_by_experiment ON runs (experiment);
CREATE INDEX runs_by_invocation ON runs (invocation);
"""
#: The tables of each schema version this module can open.
_TABLES = {1: {"runs", "steps", "epochs"}, 2: {"invocations", "runs", "steps", "epochs"}}
#: The columns of a version-1 ``runs`` table (all kept by the migration to version 2).
_V1_RUN_COLUMNS = "id, experiment, label, seed, config, versions, status, started, finished, summary, error"

_INTEGER_FIELDS = ("step", "epoch")
_HOST = platform.node()


def versions() -> dict[str, str]:
    """The versions that produced a run: python, optreg, and the installed packages that compute
    (torch, numpy, scipy, scikit-learn, matplotlib, mnist1d)."""
    from importlib import metadata

    import optreg

    out = {"python": platform.python_version(), "optreg": optreg.__version__}
    for dist in ("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "mnist1d"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def git_state() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout optreg's source is in, or None (an installed
    package, no git, or a file git does not track). Dirty: a tracked file differs from the commit."""
    import optreg

    package = Path(optreg.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # optreg's own files, not an enclosing repository's
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def environment(*, device: Any = "cpu", command: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and how a run ran: host, platform, pid, working directory, the command line (``command``,
    default ``sys.argv``), torch's intra- and inter-op threads, the device (and its name for CUDA),
    whether deterministic algorithms are on, and :func:`git_state`."""
    import torch

    device = torch.device(device)
    env: dict[str, Any] = {
        "host": _HOST,
        "platform": platform.platform(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "command": list(sys.argv if command is None else command),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "git": git_state(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"path": absolute path, "sha256": hex digest, "bytes": size}`` of a data file, or of a directory
    (its files, not recursing: the digest of the lines ``name sha256`` in name order)."""
    p = Path(path).resolve()

    def digest(f: Path) -> tuple[str, int]:
        h, n = hashlib.sha256(), 0
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest(), n

    if p.is_dir():
        lines, total = [], 0
        for f in sorted(q for q in p.iterdir() if q.is_file()):
            d, n = digest(f)
            lines.append(f"{f.name} {d}\n")
            total += n
        return {"path": str(p), "sha256": hashlib.sha256("".join(lines).encode()).hexdigest(), "bytes": total}
    d, n = digest(p)
    return {"path": str(p), "sha256": d, "bytes": n}


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of a process from ``/proc`` (Linux), or None where it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], rest[19]


def _process_start(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _alive(host: str | None, pid: int | None, start: str | None) -> bool:
    """Whether the process that runs a run may still be running (True where it cannot be told)."""
    if host != _HOST or pid is None or os.name == "nt":  # os.kill(pid, 0) would signal on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    return state not in ("Z", "X") and (start is None or started == start)


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


def _loads(run: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    for key in keys:
        if key in run:
            run[key] = None if run[key] is None else json.loads(run[key])
    return run


def _dumps(value: Any, where: str) -> str:
    return json.dumps(to_jsonable(value, where), allow_nan=False, sort_keys=True)


def _check_id(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise OptregValueError(f"{owner}: {name} must be an integer, got {value!r}")
    return int(value)


class RunStore:
    """A SQLite file of runs and their metrics (see the module docstring for the tables).

    >>> with RunStore("runs/demo/runs.sqlite") as store:                       # doctest: +SKIP
    ...     run = store.start_run("optimizers", "adam", seed=0, config={"lr": 1e-3})
    ...     store.log(run, steps=[{"step": 0, "epoch": 0, "loss": 2.3, ...}], epoch={...})
    ...     store.finish_run(run, "finished", summary={"test_accuracy": 0.97})
    ...     store.epochs(run)

    ``path`` is created (with its folder) if missing; an existing file must be an optreg run store (a
    version-1 store is migrated). Several processes may share one file (WAL mode, 30 s busy timeout).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise OptregValueError(f"store: path must be a file, got the directory '{self.path}'")
        for parent in self.path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise OptregValueError(f"store: '{parent}' is a file, so '{self.path}' cannot be created")
                break
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0)
            self._setup()
        except sqlite3.DatabaseError as e:
            if hasattr(self, "_db"):
                self._db.close()
            raise OptregValueError(f"store: '{self.path}' is not an optreg run store ({e})") from None
        self.mark_interrupted()

    def _version(self) -> tuple[int, set[str]]:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return version, tables - {"sqlite_sequence"}

    def _setup(self) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        version, tables = self._version()
        if not ((version == 0 and not tables) or (version in _TABLES and tables == _TABLES[version])):
            raise sqlite3.DatabaseError(f"unknown schema (user_version {version}, tables {sorted(tables)})")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        if version != _SCHEMA_VERSION:
            self._create_or_migrate()
        db.execute("PRAGMA foreign_keys = ON")

    def _create_or_migrate(self) -> None:
        """Create the tables (an empty file) or migrate a version-1 store, in one transaction that first
        re-reads the version (another process may have done it meanwhile)."""
        db = self._db
        db.execute("PRAGMA foreign_keys = OFF")  # a table is rebuilt; outside any transaction
        db.execute("BEGIN IMMEDIATE")
        try:
            version, _ = self._version()
            if version == 0:
                for script in (_INVOCATIONS_TABLE, _RUNS_TABLE.format(name="runs"), _METRIC_TABLES, _INDEXES):
                    for statement in filter(str.strip, script.split(";")):
                        db.execute(statement)
            elif version == 1:  # runs gains columns and the status 'interrupted' (a CHECK: rebuild the table)
                db.execute(_INVOCATIONS_TABLE)
                db.execute(_RUNS_TABLE.format(name="runs_v2"))
                db.execute(f"INSERT INTO runs_v2 ({_V1_RUN_COLUMNS}) SELECT {_V1_RUN_COLUMNS} FROM runs")
                db.execute("DROP TABLE runs")
                db.execute("ALTER TABLE runs_v2 RENAME TO runs")
                for statement in filter(str.strip, _INDEXES.split(";")):
                    db.execute(statement)
                if db.execute("PRAGMA foreign_key_check").fetchall():
                    raise sqlite3.DatabaseError("migration from version 1 broke a foreign key")
            if version != _SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            db.commit()
        except BaseException:
            db.rollback()
            raise

    # ------------------------------------------------------------------ context / lifetime
    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection (every write is committed)."""
        try:
            self.checkpoint()
        finally:
            self._db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it, so that ``runs.sqlite`` alone holds every
        committed row (a reader elsewhere may keep part of it for later; then that part waits)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore('{self.path}')"

    # ------------------------------------------------------------------ invocations
    def start_invocation(self, experiment: str, name: str, *, command: Sequence[str] | None = None) -> int:
        """Record one invocation (a command, or one :func:`optreg.experiments.run`) and return its id.

        ``name`` (file-name safe) names its output folder, made by :meth:`invocation_folder` when first
        needed; ``command`` is the command line (default ``sys.argv``).
        """
        experiment = _check_text("store", "experiment", experiment)
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise OptregValueError(f"store: invocation name must be file-name safe, got {name!r}")
        command_json = _dumps(list(sys.argv if command is None else command), "command")
        with self._db:
            cur = self._db.execute(
                "INSERT INTO invocations (experiment, name, command, started, host, pid) VALUES (?, ?, ?, ?, ?, ?)",
                (experiment, name, command_json, _now(), _HOST, os.getpid()),
            )
        return int(cur.lastrowid)

    def invocation_folder(self, invocation_id: int) -> Path:
        """The output folder of an invocation: ``<store's folder>/<name>/<id>``, created on the first call
        and recorded; never an existing folder (``<id>-2``, ``<id>-3``, ... if that one is taken). A store
        in memory (``":memory:"``) creates nothing and returns ``<name>/<id>``."""
        inv = self.invocation(invocation_id)
        if os.fspath(self.path) == ":memory:":  # a store in memory (e.g. a non-zero rank's) owns no folder
            return Path(inv["name"]) / str(invocation_id)
        if inv["folder"] is not None:
            inv["folder"].mkdir(parents=True, exist_ok=True)
            return inv["folder"]
        base = self.path.parent / inv["name"]
        for n in range(1, 1000):
            leaf = str(invocation_id) if n == 1 else f"{invocation_id}-{n}"
            try:
                (base / leaf).mkdir(parents=True)
            except FileExistsError:
                continue
            except OSError as e:
                raise OptregValueError(f"store: cannot create the output folder '{base / leaf}' ({e})") from None
            with self._db:
                self._db.execute(
                    "UPDATE invocations SET folder = ? WHERE id = ?", (f"{inv['name']}/{leaf}", invocation_id)
                )
            return base / leaf
        raise OptregValueError(f"store: no free output folder for invocation {invocation_id} under '{base}'")

    def invocation(self, invocation_id: int) -> dict[str, Any]:
        """One invocation as a dict (``command`` parsed; ``folder`` an absolute Path or None)."""
        row = self._db.execute("SELECT * FROM invocations WHERE id = ?", (invocation_id,)).fetchone()
        if row is None:
            raise OptregValueError(f"store: no invocation with id {invocation_id!r}")
        return self._invocation(row)

    def invocations(self) -> list[dict[str, Any]]:
        """Every invocation, oldest first."""
        return [self._invocation(r) for r in self._db.execute("SELECT * FROM invocations ORDER BY id")]

    def _invocation(self, row: sqlite3.Row) -> dict[str, Any]:
        inv = _loads(dict(row), ["command"])
        inv["folder"] = None if inv["folder"] is None else self.path.parent / inv["folder"]
        return inv

    # ------------------------------------------------------------------ writing
    def start_run(
        self,
        experiment: str,
        label: str,
        *,
        seed: int,
        config: Mapping[str, Any] | None = None,
        invocation: int | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert a run with status ``running`` (owned by this process) and return its id. ``config`` and
        ``environment`` must be JSON-able; ``invocation`` an invocation of this store (or None)."""
        experiment = _check_text("store", "experiment", experiment)
        label = _check_text("store", "label", label)
        seed = _check_seed("store", seed)
        for name, value in (("config", config), ("environment", environment)):
            if value is not None and not isinstance(value, Mapping):
                raise OptregValueError(f"store: {name} must be a mapping, got {value!r}")
        if invocation is not None:
            self.invocation(_check_id("store", "invocation", invocation))
        config_json = _dumps(dict(config or {}), "config")
        env_json = None if environment is None else _dumps(dict(environment), "environment")
        now = _now()
        with self._db:
            cur = self._db.execute(
                "INSERT INTO runs (invocation, experiment, label, seed, config, versions, environment, status, "
                "started, host, pid, process_start, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (invocation, experiment, label, seed, config_json, json.dumps(versions(), sort_keys=True), env_json,
                 now, _HOST, os.getpid(), _process_start(os.getpid()), now),
            )  # fmt: skip
        return int(cur.lastrowid)

    def _status(self, run_id: Any) -> str:
        run_id = _check_id("store", "run_id", run_id)
        row = self._db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise OptregValueError(f"store: no run with id {run_id}")
        return row["status"]

    def _running(self, run_id: Any) -> int:
        status = self._status(run_id)
        if status != "running":
            raise OptregValueError(f"store: run {run_id} is {status}; only a running run can be written")
        return int(run_id)

    def log(
        self,
        run_id: int,
        *,
        steps: Iterable[Mapping[str, Any]] = (),
        epoch: Mapping[str, Any] | None = None,
    ) -> None:
        """Append iteration records (``steps``, fields :data:`STEP_COLUMNS`) and at most one epoch record
        (fields :data:`EPOCH_COLUMNS`) to a running run, all in one transaction with its heartbeat.

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
                self._db.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (_now(), run_id))
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
        """Mark a running run ``finished`` / ``failed`` / ``diverged`` / ``interrupted`` (e.g. Ctrl-C), with a
        JSON-able ``summary``; then checkpoint the WAL (:meth:`checkpoint`)."""
        run_id = self._running(run_id)
        if status not in STATUSES[1:]:
            raise OptregValueError(f"store: status must be one of {', '.join(map(repr, STATUSES[1:]))}, got {status!r}")
        if summary is not None and not isinstance(summary, Mapping):
            raise OptregValueError(f"store: summary must be a mapping, got {summary!r}")
        if error is not None and not isinstance(error, str):
            raise OptregValueError(f"store: error must be a string, got {error!r}")
        summary_json = None if summary is None else _dumps(dict(summary), "summary")
        now = _now()
        with self._db:
            self._db.execute(
                "UPDATE runs SET status = ?, finished = ?, summary = ?, error = ?, heartbeat = ? WHERE id = ?",
                (status, now, summary_json, error, now, run_id),
            )
        self.checkpoint()

    def resume_run(
        self,
        run_id: int,
        *,
        step: int,
        epoch: int,
        environment: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Make an ``interrupted`` / ``failed`` / ``finished`` run ``running`` again, owned by this process,
        to be continued from a checkpoint taken after ``step`` updates and ``epoch`` epochs.

        The rows the checkpoint does not cover (steps >= ``step``, epochs >= ``epoch``: written after it,
        before the run stopped) are removed, to be written again by the resumed run (a resumed run repeats
        them bit for bit). The run's ``environment`` gains an entry in ``resumes``: when, from where,
        ``environment`` (this process's), and the status, summary and error the run had before. ``config``:
        the run's config as it continues (e.g. more epochs), replacing the stored one; the old one is kept in
        that entry (``before.config``).
        """
        step = _check_id("store", "step", step)
        epoch = _check_id("store", "epoch", epoch)
        self.mark_interrupted()
        status = self._status(run_id)
        if status not in RESUMABLE:
            raise OptregValueError(
                f"store: run {run_id} is {status}; only an {', '.join(RESUMABLE[:-1])} or {RESUMABLE[-1]} run "
                "can be resumed"
            )
        run = self.run(run_id)
        env = dict(run["environment"] or {})
        entry = {
            "at": _now(),
            "from_step": step,
            "from_epoch": epoch,
            "environment": dict(environment or {}),
            "before": {k: run[k] for k in ("status", "finished", "summary", "error")},
        }
        if config is not None:
            entry["before"]["config"] = run["config"]
        env["resumes"] = [*env.get("resumes", []), entry]
        env_json = _dumps(env, "environment")
        config_json = _dumps(run["config"] if config is None else dict(config), "config")
        with self._db:
            self._db.execute("DELETE FROM steps WHERE run_id = ? AND step >= ?", (run_id, step))
            self._db.execute("DELETE FROM epochs WHERE run_id = ? AND epoch >= ?", (run_id, epoch))
            self._db.execute(
                "UPDATE runs SET status = 'running', finished = NULL, summary = NULL, error = NULL, environment = ?, "
                "config = ?, host = ?, pid = ?, process_start = ?, heartbeat = ? WHERE id = ? AND status = ?",
                (env_json, config_json, _HOST, os.getpid(), _process_start(os.getpid()), _now(), run_id, status),
            )

    def mark_interrupted(self) -> list[int]:
        """Mark every ``running`` run whose process is gone (see the module docstring) ``interrupted``;
        returns their ids."""
        rows = self._db.execute(
            "SELECT id, host, pid, process_start, heartbeat FROM runs WHERE status = 'running'"
        ).fetchall()
        dead = [r for r in rows if not _alive(r["host"], r["pid"], r["process_start"])]
        for r in dead:
            error = (
                f"interrupted: process {r['pid']} on {r['host']} ended without finishing the run "
                f"(last write {r['heartbeat']})"
            )
            with self._db:
                self._db.execute(
                    "UPDATE runs SET status = 'interrupted', finished = ?, error = ? "
                    "WHERE id = ? AND status = 'running'",
                    (_now(), error, r["id"]),
                )
        return [r["id"] for r in dead]

    # ------------------------------------------------------------------ reading
    def runs(
        self,
        experiment: str | None = None,
        *,
        status: str | None = None,
        invocation: int | None = None,
        ids: Iterable[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The runs (oldest first) as dicts; ``config``, ``versions``, ``environment`` and ``summary`` parsed
        from JSON. Stale ``running`` runs are marked ``interrupted`` first (:meth:`mark_interrupted`)."""
        self.mark_interrupted()
        clauses, args = [], []
        for column, value in (("experiment", experiment), ("status", status), ("invocation", invocation)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if ids is not None:
            ids = [_check_id("store", "run id", i) for i in ids]
            clauses.append(f"id IN ({', '.join('?' * len(ids))})")
            args.extend(ids)
        query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        keys = ("config", "versions", "environment", "summary")
        return [_loads(dict(row), keys) for row in self._db.execute(query + " ORDER BY id", args)]

    def run(self, run_id: int) -> dict[str, Any]:
        """One run as :meth:`runs` gives it."""
        found = self.runs(ids=[_check_id("store", "run_id", run_id)])
        if not found:
            raise OptregValueError(f"store: no run with id {run_id!r}")
        return found[0]

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

    def select(self, selector: str) -> list[int]:
        """The run ids a selector names (see :func:`parse_ref`): ``all``, ``last``, ``@last``, ``@K``
        (the runs of invocation K) or ids and ranges (``3``, ``3-7``, ``3,5,9-11``). An id that is not
        stored, or a selection that names no run, raises."""
        if not isinstance(selector, str) or not _SELECTOR.match(selector):
            raise OptregValueError(f"store: selector must be {_SELECTOR_HELP}, got {selector!r}")
        ids = [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY id")]
        if selector == "all":
            chosen = ids
        elif selector == "last":
            chosen = ids[-1:]
        elif selector.startswith("@"):
            if selector == "@last":
                row = self._db.execute("SELECT MAX(invocation) FROM runs").fetchone()
                invocation = row[0]
            else:
                invocation = int(selector[1:])
            chosen = [] if invocation is None else [r[0] for r in self._db.execute(
                "SELECT id FROM runs WHERE invocation = ? ORDER BY id", (invocation,))]  # fmt: skip
        else:
            chosen = []
            for part in selector.split(","):
                lo, _, hi = part.partition("-")
                chosen.extend(range(int(lo), int(hi or lo) + 1))
            missing = sorted(set(chosen) - set(ids))
            if missing:
                shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
                raise OptregValueError(f"store: '{self.path}' has no run with id {shown}")
            chosen = list(dict.fromkeys(chosen))
        if not chosen:
            raise OptregValueError(f"store: '{self.path}': {selector!r} names no run")
        return chosen

    def metric_rows(self, run_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """One dict per stored step and epoch (columns :data:`METRICS_COLUMNS`, missing ones None), by run."""
        runs = self.runs() if run_ids is None else self.runs(ids=run_ids)
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
            write_csv(fh, self.metric_rows(run_ids))
        return path

    def export_records(self, run_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Each run as :meth:`runs` gives it, with its ``steps`` and ``epochs`` lists (for JSON export)."""
        runs = self.runs() if run_ids is None else self.runs(ids=run_ids)
        return [{**run, "steps": self.steps(run["id"]), "epochs": self.epochs(run["id"])} for run in runs]


def write_csv(fh: Any, rows: Iterable[Mapping[str, Any]]) -> None:
    """:meth:`RunStore.metric_rows` rows to an open text file as CSV (header :data:`METRICS_COLUMNS`)."""
    writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SELECTOR = re.compile(r"^(all|last|@last|@\d+|\d+(-\d+)?(,\d+(-\d+)?)*)$")
_SELECTOR_HELP = "'all', 'last', '@last', '@K' (an invocation) or run ids such as 3, 3-7, 3,5,9"


@dataclass(frozen=True)
class RunRef:
    """Runs of one store: ``store`` (the ``runs.sqlite`` file) and a ``selector`` for :meth:`RunStore.select`."""

    store: Path
    selector: str
    text: str = ""


def parse_ref(text: str, out: str | os.PathLike[str] = "runs") -> RunRef:
    """A run reference as the command line writes it.

    ``[PLACE:]SELECTOR`` or ``PLACE``: ``PLACE`` is an output folder (its ``runs.sqlite``) or a store file,
    default ``out``; ``SELECTOR`` is a run id (``7``), ids and ranges (``3-5,9``), ``last`` (the newest
    run), ``@K`` (every run of invocation K), ``@last`` (the newest invocation's runs) or ``all`` (the
    default when only ``PLACE`` is given). ``runs/demo:4``, ``runs/demo/runs.sqlite:@2``, ``last``.
    A folder named like a selector is written with a path (``./7``).
    """
    if not isinstance(text, str) or not text:
        raise OptregValueError(f"runs: a run reference must be a non-empty string, got {text!r}")
    place, sep, selector = text.rpartition(":")
    if not (sep and place and _SELECTOR.match(selector)):
        place, selector = (os.fspath(out), text) if _SELECTOR.match(text) else (text, "all")
    base = Path(place)
    store = base if base.is_file() or base.suffix == ".sqlite" else base / "runs.sqlite"
    if not store.is_file():
        raise OptregValueError(f"runs: {text!r}: no run store at '{store}' (runs are named [OUT:]{_SELECTOR_HELP})")
    wal = store.with_name(store.name + "-wal")
    if store.stat().st_size == 0 and not (wal.is_file() and wal.stat().st_size > 0):
        # (opening it would turn someone's empty file into a store)
        raise OptregValueError(f"runs: {text!r}: '{store}' is an empty file, not a run store")
    return RunRef(store, selector, text)


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
