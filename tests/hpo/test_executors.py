"""Tests of the ``processes`` backend (optreg.hpo.executors): local workers sharing one SQLite study.

Oracles: the serial run of the same study (random search's trial k depends only on the seed and k); the
trial numbers and worker ids read back through sqlite3; a worker that kills itself with SIGKILL.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap

import pytest

from optreg import hpo
from optreg.errors import OptregValueError

SPACE = {"x": hpo.Float(-2.0, 2.0), "n": hpo.Int(0, 4)}

_MODULE = '''
import os, signal, time
from pathlib import Path

def objective(p):
    time.sleep(0.05)
    return (p["x"] - 0.5) ** 2 + p["n"]

def dies_once(p):
    marker = Path(os.environ["HPO_TEST_MARKER"])
    if p["n"] == 2 and not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return objective(p)
'''


@pytest.fixture
def objectives(tmp_path, monkeypatch):
    """An importable module of objectives (spawned workers import it by name)."""
    (tmp_path / "hpo_test_objectives.py").write_text(textwrap.dedent(_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HPO_TEST_MARKER", str(tmp_path / "marker"))
    import importlib

    mod = importlib.import_module("hpo_test_objectives")
    yield mod
    sys.modules.pop("hpo_test_objectives", None)


def test_two_workers_run_the_serial_studys_trials_once_each(tmp_path, objectives):
    path = tmp_path / "p.sqlite"
    seen = []

    def report(study, trial):
        seen.append(trial.number)

    study = hpo.minimize(objectives.objective, SPACE, method="random", n_trials=10, seed=0, storage=path,
                         name="p", n_workers=2, backend="processes", callback=report)  # fmt: skip
    serial = hpo.minimize(objectives.objective, SPACE, method="random", n_trials=10, seed=0)
    assert [(t.params, t.value) for t in study.trials] == [(t.params, t.value) for t in serial.trials]
    assert sorted(seen) == list(range(10))
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT number, attempts FROM trials ORDER BY number").fetchall()
    db.close()
    assert rows == [(i, 1) for i in range(10)]


def test_a_worker_killed_mid_trial_does_not_lose_the_study(tmp_path, objectives):
    study = hpo.minimize(objectives.dies_once, SPACE, method="random", n_trials=10, seed=0,
                         storage=tmp_path / "k.sqlite", name="k", n_workers=2, backend="processes")  # fmt: skip
    trials = study.trials
    assert [t.number for t in trials] == list(range(10)) and all(t.state == "complete" for t in trials)
    rerun = [t for t in trials if t.attempts == 2]
    assert len(rerun) == 1 and rerun[0].params["n"] == 2
    assert all(t.value == objectives.objective(t.params) for t in trials)


@pytest.mark.slow
def test_gp_workers_do_not_duplicate(tmp_path, objectives):
    study = hpo.minimize(objectives.objective, SPACE, method="gp-ei", n_trials=14, seed=0,
                         storage=tmp_path / "g.sqlite", name="g", n_workers=3, backend="processes")  # fmt: skip
    params = [tuple(t.params.values()) for t in study.trials]
    assert len(params) == 14 and len(set(params)) == 14


def test_processes_need_a_storage_file_and_a_picklable_objective(tmp_path):
    with pytest.raises(OptregValueError, match=r"backend='processes' needs a storage file"):
        hpo.minimize(lambda p: 0.0, SPACE, n_trials=2, n_workers=2, backend="processes")
    with pytest.raises(OptregValueError, match=r"backend='processes' needs a picklable objective"):
        hpo.minimize(lambda p: 0.0, SPACE, n_trials=2, n_workers=2, backend="processes",
                     storage=tmp_path / "s.sqlite")  # fmt: skip
