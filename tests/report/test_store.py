"""Tests of the run store (optreg.report.store).

Oracles: the records we write, read back through sqlite3 and the csv module; the printed epoch records of
a training subprocess that is killed mid-run (SIGKILL) for the crash-safety test.
"""

from __future__ import annotations

import csv
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
    RunStore,
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
        assert set(record["versions"]) == {"python", "torch", "optreg", "numpy"}
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
    """SIGKILL a training process after a few epochs: every epoch it reported is in the store."""
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
        assert run["status"] == "running" and run["finished"] is None
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
