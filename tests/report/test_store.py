"""Tests of the run store (optreg.report.store).

Oracles: the records we write, read back through sqlite3 and the csv module; the printed epoch records of
a training subprocess that is killed mid-run (SIGKILL) for the crash-safety test; a version-1 file written
with plain sqlite3 and the old schema for the migration; hashlib, git and torch for what a run records.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optreg.errors import OptregValueError
from optreg.report.store import (
    EPOCH_COLUMNS,
    METRICS_COLUMNS,
    STEP_COLUMNS,
    RecordRun,
    RunRef,
    RunStore,
    environment,
    fingerprint,
    git_state,
    parse_ref,
    to_jsonable,
    versions,
)


def _step(i: int, epoch: int = 0) -> dict:
    return {"step": i, "epoch": epoch, "loss": 2.0 / (i + 1), "accuracy": 0.5, "lr": 0.1, "grad_norm": 1.5}


def _epoch(e: int) -> dict:
    return {
        "epoch": e,
        "train_loss": 1.0 / (e + 1),
        "train_accuracy": 0.9,
        "val_loss": None,
        "val_accuracy": None,
        "lr": 0.1,
        "time": 0.25,
    }


def _dump(path: Path) -> list[tuple]:
    """Every row of every table, read with plain sqlite3 (the oracle for 'nothing changed')."""
    db = sqlite3.connect(path)
    try:
        return [row for t in ("runs", "steps", "epochs") for row in db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
    finally:
        db.close()


def test_round_trip_matches_what_was_written(tmp_path):
    with RunStore(tmp_path / "runs.sqlite") as store:
        run = store.start_run("exp", "adam", seed=3, config={"lr": 1e-3, "hidden": (64, 32), "path": tmp_path})
        steps = [_step(i, i // 2) for i in range(4)]
        store.log(run, steps=steps[:2], epoch=_epoch(0))
        store.log(run, steps=steps[2:], epoch=_epoch(1))
        store.finish_run(run, "finished", summary={"test_accuracy": 0.97})
        assert store.steps(run) == steps
        assert store.epochs(run) == [_epoch(0), _epoch(1)]
        (record,) = store.runs("exp")
        assert record["label"] == "adam" and record["seed"] == 3 and record["status"] == "finished"
        assert record["config"] == {"lr": 1e-3, "hidden": [64, 32], "path": str(tmp_path)}
        assert record["summary"] == {"test_accuracy": 0.97}
        assert record["versions"] == versions()
        assert {"python", "torch", "optreg", "numpy", "scipy"} <= set(record["versions"])
        assert record["versions"]["torch"] == importlib.metadata.version("torch")
        assert record["finished"] >= record["started"]
    # the same file opened again (and directly with sqlite3) holds the same rows
    with RunStore(tmp_path / "runs.sqlite") as again:
        assert again.steps(run) == steps
        assert again.run(run)["status"] == "finished"
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    assert db.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 4
    assert json.loads(db.execute("SELECT config FROM runs").fetchone()[0])["lr"] == 1e-3
    db.close()


def test_export_csv_has_one_row_per_step_and_epoch(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    a = store.start_run("exp", "a", seed=0)
    b = store.start_run("exp", "b", seed=1)
    store.log(a, steps=[_step(0), _step(1)], epoch=_epoch(0))
    store.log(b, steps=[_step(0)], epoch=_epoch(0))
    path = store.export_csv(tmp_path / "m.csv", [b])
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(METRICS_COLUMNS)
    assert [(r["label"], r["seed"], r["kind"]) for r in rows] == [("b", "1", "step"), ("b", "1", "epoch")]
    assert float(rows[0]["loss"]) == _step(0)["loss"]
    assert float(rows[1]["train_loss"]) == _epoch(0)["train_loss"]
    assert len(store.metric_rows()) == 5  # every run: 3 steps + 2 epochs
    store.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"loss": float("nan")},
        {"loss": float("inf")},
        {"loss": "0.5"},
        {"accuracy": True},
        {"step": -1},
        {"step": 1.5},
    ],
)
def test_bad_step_record_raises_and_writes_nothing(tmp_path, bad):
    store = RunStore(tmp_path / "s.sqlite")
    run = store.start_run("exp", "x", seed=0)
    store.log(run, steps=[_step(0)], epoch=_epoch(0))
    before = _dump(tmp_path / "s.sqlite")
    # a good step and an epoch in the same call must not be written either: one transaction
    with pytest.raises(OptregValueError, match="store: step"):
        store.log(run, steps=[_step(1, 1), {**_step(2, 1), **bad}], epoch=_epoch(1))
    assert _dump(tmp_path / "s.sqlite") == before
    store.close()


def test_bad_calls_raise_and_leave_the_store_untouched(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run = store.start_run("exp", "x", seed=0)
    store.log(run, steps=[_step(0)], epoch=_epoch(0))
    before = _dump(tmp_path / "s.sqlite")
    cases = [
        (lambda: store.log(run, epoch={"epoch": 1}), "lacks"),
        (lambda: store.log(run, steps=[_step(0)]), "already recorded"),
        (lambda: store.log(999, steps=[_step(5)]), "no run with id 999"),
        (lambda: store.start_run("exp", "", seed=0), "label must be a non-empty string"),
        (lambda: store.start_run("exp", "x", seed=-1), "seed must be an integer"),
        (
            lambda: store.start_run("exp", "x", seed=0, config={"lr": float("nan")}),
            r"config\.lr must be a finite number",
        ),
        (lambda: store.start_run("exp", "x", seed=0, config={1: 2}), "keys must be strings"),
        (lambda: store.finish_run(run, "done"), "status must be one of"),
        (lambda: store.finish_run(run, "finished", summary={"a": float("inf")}), "summary.a"),
    ]
    for call, message in cases:
        with pytest.raises(OptregValueError, match=message):
            call()
        assert _dump(tmp_path / "s.sqlite") == before
    store.finish_run(run, "failed", error="boom")
    with pytest.raises(OptregValueError, match="is failed; only a running run"):
        store.log(run, steps=[_step(1)])
    with pytest.raises(OptregValueError, match="only a running run"):
        store.finish_run(run, "finished")
    assert store.run(run)["error"] == "boom"
    store.close()


def test_a_foreign_file_is_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OptregValueError, match="not an optreg run store"):
        RunStore(junk)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(OptregValueError, match="not an optreg run store"):
        RunStore(other)
    with pytest.raises(OptregValueError, match="must be a file"):
        RunStore(tmp_path)


def test_to_jsonable_converts_numpy_torch_and_objects():
    out = to_jsonable(
        {"a": np.float32(0.5), "b": torch.tensor(3), "c": (1, 2), "d": {"e": np.int64(4)}, "f": len, "g": None}
    )
    assert out == {"a": 0.5, "b": 3, "c": [1, 2], "d": {"e": 4}, "f": "builtins.len", "g": None}
    assert json.loads(json.dumps(out, allow_nan=False)) == out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20))
def test_finite_losses_round_trip_exactly(tmp_path_factory, losses):
    """Every finite float64 survives the store bit for bit (SQLite REAL is an IEEE double)."""
    store = RunStore(tmp_path_factory.mktemp("h") / "s.sqlite")
    run = store.start_run("exp", "x", seed=0)
    store.log(run, steps=[{**_step(i), "loss": v} for i, v in enumerate(losses)])
    assert [r["loss"] for r in store.steps(run)] == losses
    store.close()


class _Fake:
    """Just enough of a trainer for RecordRun's hooks."""


def test_record_run_writes_buffered_steps_with_their_epoch(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run = store.start_run("exp", "x", seed=0)
    rec = RecordRun(store, run)
    rec.on_step_end(_Fake(), _step(0))
    rec.on_step_end(_Fake(), _step(1))
    assert store.steps(run) == []  # buffered until the epoch ends
    rec.on_epoch_end(_Fake(), _epoch(0))
    assert len(store.steps(run)) == 2 and len(store.epochs(run)) == 1
    rec.on_step_end(_Fake(), _step(2, 1))
    rec.flush()
    assert [r["step"] for r in store.steps(run)] == [0, 1, 2]
    store.close()


_KILLED_RUN = textwrap.dedent(
    """
    import sys, json, torch
    from optreg.experiments import Context
    from optreg.train import Lambda

    def report(trainer, record):
        print(json.dumps(record), flush=True)

    ctx = Context(out=sys.argv[1], quick=True)
    ctx.train("long", model_spec={"kind": "mlp", "hidden": [16]}, optimizer="sgd", hparams={"lr": 0.1},
              seed=0, batch_size=32, epochs=100000, callbacks=[Lambda(on_epoch_end=report)])
    """
)


def test_a_run_killed_mid_way_leaves_a_readable_store(tmp_path):
    """SIGKILL a training process after a few epochs: every epoch it reported is in the store, and the run,
    whose process is gone, is reported ``interrupted``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    reported = []
    try:
        for line in proc.stdout:
            reported.append(json.loads(line))
            if len(reported) == 3:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and len(reported) == 3
    with RunStore(tmp_path / "runs.sqlite") as store:
        (run,) = store.runs()
        assert run["status"] == "interrupted" and run["pid"] == proc.pid
        assert f"process {proc.pid}" in run["error"] and run["heartbeat"] >= run["started"]
        epochs = store.epochs(run["id"])
        assert len(epochs) >= 3  # it may have finished another epoch before the signal landed
        for got, want in zip(epochs, reported):
            assert got["epoch"] == want["epoch"]
            assert math.isclose(got["train_loss"], want["train_loss"], rel_tol=0, abs_tol=0)
        # every step of every stored epoch is there too
        steps_per_epoch = math.ceil(384 / 32)  # quick mode keeps 384 training examples
        assert len(store.steps(run["id"])) >= len(epochs) * steps_per_epoch


def test_columns_match_the_trainer_records():
    from optreg.train import EPOCH_FIELDS, ITERATION_FIELDS

    assert STEP_COLUMNS == ITERATION_FIELDS
    assert EPOCH_COLUMNS == EPOCH_FIELDS


# ------------------------------------------------------------------------------- schema 2: what is new

#: The schema optreg's first store wrote (user_version 1), verbatim: the oracle for the migration.
_V1_SCHEMA = """
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


def _v1_store(path: Path) -> list[tuple]:
    """A version-1 file as the old RunStore left it (WAL mode, two runs with steps and epochs), written with
    plain sqlite3; returns its runs' rows."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(_V1_SCHEMA)
    db.execute("PRAGMA user_version = 1")
    runs = [
        (1, "optimizers", "adam", 0, '{"hparams": {}}', '{"torch": "2.0"}', "finished", "2024-01-01T00:00:00",
         "2024-01-01T00:01:00", '{"test_accuracy": 0.9}', None),
        (2, "optimizers", "sgd", 1, "{}", "{}", "running", "2024-01-01T00:02:00", None, None, None),
    ]  # fmt: skip
    db.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)
    db.executemany(
        "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?)", [(1, i, 0, 1.0 / (i + 1), 0.5, 0.1, 2.0) for i in range(3)]
    )
    db.execute("INSERT INTO epochs VALUES (1, 0, 0.5, 0.8, 0.6, 0.7, 0.1, 0.2)")
    db.commit()
    db.close()
    return runs


def test_a_version_1_store_is_migrated_keeping_every_run(tmp_path):
    """Oracle: the rows written into a v1 file with sqlite3 and the v1 schema, read back after the migration."""
    path = tmp_path / "runs.sqlite"
    v1_runs = _v1_store(path)
    with RunStore(path) as store:
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == 2
        runs = store.runs()
        assert [(r["id"], r["label"], r["seed"], r["status"], r["started"]) for r in runs] == [
            (r[0], r[2], r[3], r[6], r[7]) for r in v1_runs
        ]  # the v1 'running' run has no recorded process, so it cannot be told interrupted: it stays running
        assert runs[0]["summary"] == {"test_accuracy": 0.9} and runs[0]["invocation"] is None
        assert [s["loss"] for s in store.steps(1)] == [1.0, 0.5, 1.0 / 3]
        assert store.epochs(1)[0]["val_accuracy"] == 0.7
        new = store.start_run("optimizers", "nadam", seed=0, invocation=store.start_invocation("optimizers", "x"))
        assert new == 3 and store.run(new)["invocation"] == 1
        store.log(1 + 1, steps=[_step(0)])  # the kept running run is still writable
        assert store._db.execute("PRAGMA foreign_key_check").fetchall() == []
    with RunStore(path) as again:  # opening a migrated file migrates nothing twice
        assert len(again.runs()) == 3


def test_unknown_schema_versions_are_refused(tmp_path):
    path = tmp_path / "future.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    db.execute("PRAGMA user_version = 3")
    db.close()
    with pytest.raises(OptregValueError, match="unknown schema"):
        RunStore(path)


def test_copying_the_main_file_alone_after_a_run_copies_every_row(tmp_path):
    """The WAL is checkpointed when a run ends: a copy of runs.sqlite without its -wal file, taken while the
    writer still has it open, holds every row (oracle: the rows read back with plain sqlite3)."""
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.start_run("exp", "x", seed=0)
    for e in range(3):
        store.log(run, steps=[_step(10 * e + i, e) for i in range(10)], epoch=_epoch(e))
    store.finish_run(run, "finished", summary={"a": 1})
    copy = tmp_path / "copy" / "runs.sqlite"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "runs.sqlite").read_bytes())
    wal = tmp_path / "runs.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert _dump(copy) == _dump(tmp_path / "runs.sqlite")
    assert len([r for r in _dump(copy) if len(r) == 7]) == 30  # the 30 step rows
    store.close()


def test_a_running_run_whose_process_is_gone_is_marked_interrupted(tmp_path):
    """Oracle: a real process that has exited (its pid reaped) against this live process and another host."""
    store = RunStore(tmp_path / "s.sqlite")
    dead, mine, elsewhere = (store.start_run("exp", name, seed=0) for name in ("dead", "mine", "elsewhere"))
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(proc.stdout)
    with store._db:
        store._db.execute("UPDATE runs SET pid = ?, process_start = NULL WHERE id = ?", (gone, dead))
        store._db.execute("UPDATE runs SET host = 'another-host', pid = 1 WHERE id = ?", (elsewhere,))
    statuses = {r["label"]: r["status"] for r in store.runs()}
    assert statuses == {"dead": "interrupted", "mine": "running", "elsewhere": "running"}
    assert store.run(dead)["error"].startswith(f"interrupted: process {gone} ")
    # the same pid with another start time is another process: also interrupted
    with store._db:
        store._db.execute("UPDATE runs SET process_start = 'not-this-one' WHERE id = ?", (mine,))
    assert store.mark_interrupted() == [mine]
    store.close()


def test_invocations_group_runs_and_get_fresh_folders(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a = store.start_invocation("exp", "exp", command=["optreg", "run", "exp"])
    (tmp_path / "exp" / "2").mkdir(parents=True)  # a folder left by something else: never reused
    (tmp_path / "exp" / "2" / "keep.txt").write_text("mine")
    b = store.start_invocation("exp", "exp")
    assert store.invocation_folder(a) == tmp_path / "exp" / "1"
    assert store.invocation_folder(b) == tmp_path / "exp" / "2-2"
    assert store.invocation_folder(b) == tmp_path / "exp" / "2-2"  # recorded: the same folder again
    assert (tmp_path / "exp" / "2" / "keep.txt").read_text() == "mine"
    runs = [store.start_run("exp", f"r{i}", seed=0, invocation=inv) for i, inv in enumerate((a, a, b))]
    assert store.select("@1") == runs[:2] and store.select("@last") == runs[2:]
    assert store.invocation(a)["command"] == ["optreg", "run", "exp"]
    with pytest.raises(OptregValueError, match="no invocation with id 9"):
        store.start_run("exp", "x", seed=0, invocation=9)
    with pytest.raises(OptregValueError, match="file-name safe"):
        store.start_invocation("exp", "../up")
    store.close()


def test_selectors_and_references(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    ids = [store.start_run("exp", f"r{i}", seed=0) for i in range(6)]
    assert store.select("all") == ids and store.select("last") == ids[-1:]
    assert store.select("2-4,6,3") == [2, 3, 4, 6]
    for bad, message in (("7", "no run with id 7"), ("@3", "names no run"), ("x", "selector must be")):
        with pytest.raises(OptregValueError, match=message):
            store.select(bad)
    store.close()
    assert parse_ref(f"{tmp_path}:3") == RunRef(tmp_path / "runs.sqlite", "3", f"{tmp_path}:3")
    assert parse_ref(str(tmp_path / "runs.sqlite")).selector == "all"
    assert parse_ref("@last", out=tmp_path) == RunRef(tmp_path / "runs.sqlite", "@last", "@last")
    with pytest.raises(OptregValueError, match="no run store at"):
        parse_ref("7", out=tmp_path / "elsewhere")
    empty = tmp_path / "notes.txt"  # a reading command must not turn someone's empty file into a store
    empty.touch()
    with pytest.raises(OptregValueError, match="is an empty file, not a run store"):
        parse_ref(f"{empty}:1")
    assert empty.stat().st_size == 0


def test_resume_run_reopens_it_and_drops_what_the_checkpoint_does_not_cover(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    run = store.start_run("exp", "x", seed=0)
    for e in range(3):
        store.log(run, steps=[_step(2 * e + i, e) for i in range(2)], epoch=_epoch(e))
    with pytest.raises(OptregValueError, match="is running; only an interrupted, failed or finished run"):
        store.resume_run(run, step=4, epoch=2)
    store.finish_run(run, "interrupted", error="KeyboardInterrupt: ")
    before = _dump(tmp_path / "s.sqlite")
    with pytest.raises(OptregValueError, match="step must be an integer"):
        store.resume_run(run, step="4", epoch=2)
    assert _dump(tmp_path / "s.sqlite") == before
    store.resume_run(run, step=4, epoch=2, environment={"threads": 1})  # the checkpoint after epoch 2 of 3
    again = store.run(run)
    assert again["status"] == "running" and again["finished"] is None and again["pid"] == os.getpid()
    (resume,) = again["environment"]["resumes"]
    assert resume["from_epoch"] == 2 and resume["before"]["status"] == "interrupted"
    assert [s["step"] for s in store.steps(run)] == [0, 1, 2, 3] and len(store.epochs(run)) == 2
    store.log(run, steps=[_step(4, 2), _step(5, 2)], epoch=_epoch(2))
    store.finish_run(run, "diverged")
    with pytest.raises(OptregValueError, match="is diverged"):
        store.resume_run(run, step=0, epoch=0)
    store.close()


def test_fingerprint_is_sha256_of_the_file_and_of_a_folder_listing(tmp_path):
    import hashlib

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.bin").write_bytes(b"\x00\x01" * 1000)
    (tmp_path / "d" / "a.csv").write_text("1,2\n")
    f = fingerprint(tmp_path / "d" / "a.csv")
    assert f == {"path": str((tmp_path / "d" / "a.csv").resolve()), "sha256": hashlib.sha256(b"1,2\n").hexdigest(),
                 "bytes": 4}  # fmt: skip
    listing = "".join(
        f"{n} {hashlib.sha256((tmp_path / 'd' / n).read_bytes()).hexdigest()}\n" for n in ("a.csv", "b.bin")
    )
    assert fingerprint(tmp_path / "d")["sha256"] == hashlib.sha256(listing.encode()).hexdigest()


def test_environment_names_threads_device_command_and_git(monkeypatch, tmp_path):
    """Oracles: torch's thread settings, and ``git rev-parse HEAD`` run here (None outside a checkout)."""
    import shutil

    import optreg

    torch.set_num_threads(1)
    env = environment(device="cpu", command=["optreg", "run", "x"])
    assert env["threads"] == 1 and env["device"] == "cpu" and env["command"] == ["optreg", "run", "x"]
    package = Path(optreg.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git"]["commit"] == head.stdout.strip()
    shutil.copy(package / "__init__.py", tmp_path / "__init__.py")
    monkeypatch.setattr(optreg, "__file__", str(tmp_path / "__init__.py"))
    assert git_state.__wrapped__() is None  # a copy outside any git checkout


def test_a_store_in_memory_creates_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RunStore(":memory:") as store:
        invocation = store.start_invocation("exp", "exp")
        assert store.invocation_folder(invocation) == Path("exp") / "1"
    assert list(tmp_path.iterdir()) == []
