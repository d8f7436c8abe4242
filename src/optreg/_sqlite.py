"""The one SQLite layer of optreg: opening a file safely, transactions, JSON columns.

Used by :mod:`optreg.hpo.storage` (a study's trials); :mod:`optreg.report.store` (the lab's run store)
follows the same conventions (WAL, ``user_version`` as the schema version, every write one transaction)
and can move onto :func:`connect` and :func:`transaction` without changing its files.

- :func:`connect` creates the file (and its folder) if missing, refuses a corrupt file, a foreign one (a
  ``user_version`` it does not know, or tables other than its own) and another optreg file kind (its
  tables are missing), switches to WAL mode and creates the schema in one transaction.
- :func:`transaction` is one ``BEGIN IMMEDIATE ... COMMIT`` (rolled back on any exception): the write lock
  is taken at the start, so a read-then-write inside it (claiming the next trial) is atomic across
  processes sharing the file.
- :func:`dumps` / :func:`loads` are the JSON columns: strict JSON (no NaN), sorted keys.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optreg.errors import OptregValueError

__all__ = ["connect", "dumps", "loads", "transaction"]


def connect(
    path: str | os.PathLike[str],
    *,
    owner: str,
    kind: str,
    schema: str,
    version: int,
    tables: Iterable[str],
    timeout: float = 30.0,
) -> sqlite3.Connection:
    """Open (or create) the SQLite file ``path`` holding an optreg ``kind`` with ``schema`` at ``version``.

    ``tables`` are the tables ``schema`` creates. The connection is in autocommit mode
    (``isolation_level=None``): write with :func:`transaction`. Rows come back as :class:`sqlite3.Row`.
    A directory, a corrupt file, a foreign SQLite file or another kind of optreg file raises
    :class:`~optreg.errors.OptregValueError` ("``owner``: 'x.sqlite' is not an optreg ``kind`` (...)").
    """
    path = Path(path)
    if path.is_dir():
        raise OptregValueError(f"{owner}: path must be a file, got the directory '{path}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = set(tables)
    db = None
    try:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        found = db.execute("PRAGMA user_version").fetchone()[0]
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        present.discard("sqlite_sequence")
        if found == 0 and present:
            raise sqlite3.DatabaseError(f"tables {sorted(present)} without a schema version")
        if found not in (0, version) or (found == version and not tables <= present):
            raise sqlite3.DatabaseError(f"unknown schema (user_version {found}, tables {sorted(present)})")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        if found == 0:
            with transaction(db):
                for statement in schema.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {int(version)}")
    except sqlite3.DatabaseError as e:
        if db is not None:
            db.close()
        raise OptregValueError(f"{owner}: '{path}' is not an optreg {kind} ({e})") from None
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` (takes the write lock now), ``COMMIT``, or ``ROLLBACK``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def dumps(value: Any, *, sort_keys: bool = True) -> str:
    """``value`` as strict JSON (a NaN or an infinity raises ``ValueError``), keys sorted unless told not to."""
    return json.dumps(value, allow_nan=False, sort_keys=sort_keys)


def loads(text: str | None) -> Any:
    """The value of a JSON column (``None`` for SQL NULL)."""
    return None if text is None else json.loads(text)
