"""Tests of studies, storage and resuming (optreg.hpo.study, optreg.hpo.storage, optreg._sqlite).

Oracles: the values the objective returned, read back through sqlite3; the trials a subprocess printed
before it was killed with SIGKILL; itertools.product for the grid; the objective's own minimum.
"""

from __future__ import annotations

import itertools
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

from optreg import hpo
from optreg.errors import OptregTypeError, OptregValueError
from optreg.hpo.study import _worker

SPACE = {
    "lr": hpo.Float(1e-4, 1.0, log=True),
    "dropout": hpo.Float(0.0, 0.5),
    "width": hpo.Int(16, 256, log=True),
    "act": hpo.Categorical(["relu", "tanh"]),
}


def _objective(p):
    return (math.log10(p["lr"]) + 2) ** 2 + p["dropout"] + abs(math.log2(p["width"] / 64)) + (p["act"] == "tanh")


def test_the_interface_of_the_issue(tmp_path):
    study = hpo.minimize(_objective, SPACE, method="random", n_trials=12, seed=0, storage=tmp_path / "study.sqlite",
                         name="mlp", n_workers=1, backend="serial")  # fmt: skip
    assert len(study.trials) == 12
    values = [_objective(t.params) for t in study.trials]
    assert study.best_value == min(values)
    assert study.best_params == study.trials[int(np.argmin(values))].params
    for t in study.trials:
        assert t.state == "complete" and t.budget is None and t.error is None and t.seconds >= 0
        assert set(t.params) == set(SPACE) and t.value == _objective(t.params)
    assert hpo.methods()[:4] == ("grid", "random", "halving", "hyperband")
    assert {"gp-ei", "gp-pi", "gp-ucb"} <= set(hpo.methods())


def test_maximize_picks_the_largest_value():
    study = hpo.maximize(lambda p: -_objective(p), SPACE, method="random", n_trials=15, seed=1)
    assert study.best_value == max(t.value for t in study.trials)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_top_trials_are_a_sort_of_the_complete_trials_by_value(direction):
    """Oracle: Python's sort of the complete trials by (value in the study's direction, trial number);
    failed trials are left out, ties keep the lower number, and best_trial is the first of them."""
    def objective(p):
        if p["x"] > 0.8:
            raise RuntimeError("diverged")
        return round(p["x"], 1)  # rounded: ties

    study = hpo.Study({"x": hpo.Float(0.0, 1.0)}, method="random", seed=0, n_trials=30, direction=direction)
    study.optimize(objective)
    done = [t for t in study.trials if t.state == "complete"]
    assert 0 < len(done) < 30 and len({t.value for t in done}) < len(done)  # failures and ties happen
    sign = 1 if direction == "minimize" else -1
    expected = sorted(done, key=lambda t: (sign * t.value, t.number))
    for k in (1, 4, len(done)):
        assert study.top_trials(k) == expected[:k]
    assert study.best_trial == expected[0]
    with pytest.raises(OptregValueError, match=rf"hpo.top_trials: k must be at most .* \({len(done)}\), got 31"):
        study.top_trials(31)
    with pytest.raises(OptregValueError, match="hpo.top_trials: k must be an integer >= 1, got 0"):
        study.top_trials(0)


def test_top_trials_compare_only_the_largest_budget():
    """Values at smaller budgets are not comparable: the top trials of successive halving all ran with the
    largest budget, sorted by value (oracle: the sort of that rung)."""
    study = hpo.minimize(lambda p, budget: (p["x"] - 0.3) ** 2 + 1 / budget, {"x": hpo.Float(0.0, 1.0)},
                         method="halving", n_trials=8, budget=8 * 3 * 2, seed=0)  # fmt: skip
    top = max(t.budget for t in study.trials)
    last = sorted((t for t in study.trials if t.budget == top), key=lambda t: (t.value, t.number))
    assert len(last) >= 2 and study.top_trials(len(last)) == last
    with pytest.raises(OptregValueError, match=rf"\({len(last)} at the largest budget \({top}\)\)"):
        study.top_trials(len(last) + 1)
    assert study.top_trials(1) == [study.best_trial]


def test_same_seed_same_trials_other_seed_other_trials():
    a = hpo.minimize(_objective, SPACE, method="random", n_trials=5, seed=7)
    b = hpo.minimize(_objective, SPACE, method="random", n_trials=5, seed=7)
    c = hpo.minimize(_objective, SPACE, method="random", n_trials=5, seed=8)
    assert [t.params for t in a.trials] == [t.params for t in b.trials] != [t.params for t in c.trials]


def test_grid_visits_every_combination_once_itertools():
    space = {"a": hpo.Categorical([1, 2, 3]), "b": hpo.Float(0.01, 1.0, log=True), "c": hpo.Fixed("x")}
    study = hpo.minimize(lambda p: p["a"] * p["b"], space, method="grid", grid_size=3, seed=0)
    got = sorted((t.params["a"], round(t.params["b"], 12), t.params["c"]) for t in study.trials)
    assert got == sorted(itertools.product([1, 2, 3], [0.01, 0.1, 1.0], ["x"]))
    assert study.best_params == {"a": 1, "b": pytest.approx(0.01), "c": "x"}


def test_ask_and_tell():
    study = hpo.Study(SPACE, method="random", seed=0, n_trials=3)
    a, b = study.ask(), study.ask()
    assert a.number == 0 and b.number == 1 and a.state == b.state == "running"
    told = study.tell(b, 0.5)
    assert told.state == "complete" and told.value == 0.5 and told.seconds >= 0
    study.tell(a.number, 1.5)
    c = study.ask()
    study.tell(c, error="out of memory")
    assert study.ask() is None  # n_trials reached
    assert [t.state for t in study.trials] == ["complete", "complete", "failed"]
    assert study.trials[2].error == "out of memory" and study.best_value == 0.5
    with pytest.raises(OptregValueError, match=r"trial 0 of study 'study' is complete"):
        study.tell(a, 0.1)
    with pytest.raises(OptregValueError, match=r"study 'study' has no trial number 9"):
        study.tell(9, 0.1)
    with pytest.raises(OptregValueError, match=r"tell: trial is None: ask\(\) returns None when the study"):
        study.tell(study.ask(), 0.1)  # the study is done: ask() gave None


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (math.nan, "the objective returned nan"),
        (math.inf, "the objective returned inf"),
        ("0.5", "the objective must return a number, got '0.5'"),
        (None, "the objective must return a number, got None"),
        (True, "the objective must return a number, got True"),
    ],
)
def test_a_bad_value_is_a_failed_trial_and_the_study_goes_on(result, error):
    def objective(p):
        return result if p["x"] > 0.5 else p["x"]

    study = hpo.minimize(objective, {"x": hpo.Float(0.0, 1.0)}, method="random", n_trials=20, seed=0)
    failed = [t for t in study.trials if t.state == "failed"]
    assert failed and len(study.trials) == 20
    assert all(t.error == error and t.value is None and t.params["x"] > 0.5 for t in failed)
    assert study.best_value == min(t.params["x"] for t in study.trials if t.params["x"] <= 0.5)


def test_numpy_and_torch_scalars_are_numbers():
    import torch

    study = hpo.minimize(lambda p: np.float32(0.25) if p["x"] < 0.5 else torch.tensor(0.75), {"x": hpo.Float(0, 1)},
                         n_trials=6, seed=0)  # fmt: skip
    assert {t.value for t in study.trials} <= {0.25, 0.75} and all(t.state == "complete" for t in study.trials)


def test_a_raising_objective_is_recorded_and_the_study_goes_on():
    def objective(p):
        if p["act"] == "tanh":
            raise ZeroDivisionError("boom")
        return _objective(p)

    study = hpo.minimize(objective, SPACE, n_trials=10, seed=0)
    assert len(study.trials) == 10
    assert {t.error for t in study.trials if t.state == "failed"} == {"ZeroDivisionError: boom"}
    assert study.best_params["act"] == "relu"


def test_callback_sees_every_finished_trial():
    seen = []
    hpo.minimize(_objective, SPACE, n_trials=4, seed=0, callback=lambda s, t: seen.append((t.number, t.state)))
    assert seen == [(i, "complete") for i in range(4)]


def test_resume_keeps_every_trial_and_continues(tmp_path):
    path = tmp_path / "s.sqlite"
    first = hpo.minimize(_objective, SPACE, n_trials=6, seed=0, storage=path, name="a")
    stored = [(t.params, t.value) for t in first.trials]
    first.close()
    again = hpo.minimize(_objective, SPACE, n_trials=10, seed=0, storage=path, name="a")
    assert [(t.params, t.value) for t in again.trials][:6] == stored and len(again.trials) == 10
    reference = hpo.minimize(_objective, SPACE, n_trials=10, seed=0)
    assert [t.params for t in again.trials] == [t.params for t in reference.trials]
    # the stored rows, read with sqlite3, hold the objective's values
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT number, value, state FROM trials ORDER BY number").fetchall()
    assert [(n, v) for n, v, _ in rows] == [(t.number, _objective(t.params)) for t in again.trials]
    assert db.execute is not None


def test_a_study_name_with_another_space_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    hpo.minimize(_objective, SPACE, n_trials=2, seed=0, storage=path, name="mlp").close()
    other = {**SPACE, "dropout": hpo.Float(0.0, 0.9)}
    with pytest.raises(OptregValueError) as info:
        hpo.minimize(_objective, other, n_trials=2, seed=0, storage=path, name="mlp")
    assert str(info.value).startswith(f"hpo: study 'mlp' in '{path}' exists with a different space: stored ")
    with pytest.raises(OptregValueError, match=r"exists with a different method: stored 'random', got 'grid'"):
        hpo.minimize(_objective, SPACE, method="grid", seed=0, storage=path, name="mlp")
    with pytest.raises(OptregValueError, match=r"exists with a different seed: stored 0, got 1"):
        hpo.minimize(_objective, SPACE, n_trials=2, seed=1, storage=path, name="mlp")
    with pytest.raises(OptregValueError, match=r"exists with a different direction"):
        hpo.maximize(_objective, SPACE, n_trials=2, seed=0, storage=path, name="mlp")
    # another name in the same file is another study; the first one lost nothing
    hpo.minimize(_objective, other, n_trials=2, seed=0, storage=path, name="other").close()
    assert len(hpo.Study(SPACE, n_trials=2, storage=path, name="mlp").trials) == 2


def test_corrupt_and_foreign_files_are_refused_unchanged(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OptregValueError, match=r"hpo: '.*corrupt.sqlite' is not an optreg study storage"):
        hpo.Study(SPACE, storage=corrupt)
    assert corrupt.read_bytes() == b"this is not a database" * 100
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    db.close()
    with pytest.raises(OptregValueError, match=r"is not an optreg study storage \(tables \['t'\] without a schema"):
        hpo.Study(SPACE, storage=foreign)
    with sqlite3.connect(foreign) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    db.close()
    runs = tmp_path / "runs.sqlite"  # the lab's run store: same schema version, other tables
    from optreg.report.store import RunStore

    RunStore(runs).close()
    with pytest.raises(OptregValueError, match=r"is not an optreg study storage \(unknown schema"):
        hpo.Study(SPACE, storage=runs)
    with pytest.raises(OptregValueError, match=r"hpo: path must be a file, got the directory"):
        hpo.Study(SPACE, storage=tmp_path)


def test_a_trial_left_running_by_a_dead_worker_is_marked_and_run_again(tmp_path):
    path = tmp_path / "s.sqlite"
    study = hpo.Study(SPACE, n_trials=4, storage=path, name="s")
    study.tell(study.ask(), 1.0)
    study.ask()  # left running ...
    study.close()
    with sqlite3.connect(path) as db:  # ... by a process that no longer exists
        host, pid, _ = _worker().split(":")
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True, check=True).stdout.strip()  # fmt: skip
        db.execute("UPDATE trials SET worker = ? WHERE number = 1", (f"{host}:{dead_pid}:feedbeef",))
    db.close()
    resumed = hpo.Study(SPACE, n_trials=4, storage=path, name="s")
    t = resumed.trials[1]
    assert t.state == "interrupted" and t.error.startswith(f"interrupted: worker {host}:{dead_pid}:feedbeef stopped")
    resumed.optimize(_objective)
    trials = resumed.trials
    assert [t.state for t in trials] == ["complete"] * 4
    assert trials[1].attempts == 2 and trials[1].value == _objective(trials[1].params)
    assert trials[0].value == 1.0  # told by hand, kept


def test_keyboard_interrupt_marks_the_trial_interrupted(tmp_path):
    path = tmp_path / "s.sqlite"

    def objective(p):
        if p["act"] == "tanh":
            raise KeyboardInterrupt
        return _objective(p)

    with pytest.raises(KeyboardInterrupt):
        hpo.minimize(objective, SPACE, n_trials=10, seed=0, storage=path, name="k")
    study = hpo.Study(SPACE, n_trials=10, seed=0, storage=path, name="k")
    assert study.trials[-1].state == "interrupted"
    study.optimize(_objective)
    assert len(study.trials) == 10 and all(t.state == "complete" for t in study.trials)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "smac"}, OptregValueError, "hpo: method must be one of 'grid', 'random', 'halving'"),
        ({"method": "random", "budget": 3}, OptregTypeError, "hpo: method 'random' takes no option 'budget'"),
        ({"n_trials": 0}, OptregValueError, "hpo: n_trials must be an integer >= 1, got 0"),
        ({"n_trials": None}, OptregValueError, "hpo: method 'random' needs n_trials, an integer >= 1, got None"),
        ({"seed": -1}, OptregValueError, "hpo: seed must be an integer in [0, 2**63), got -1"),
        ({"backend": "dask"}, OptregValueError, "hpo: backend must be one of 'serial', 'processes', 'ray', got 'dask'"),
        ({"n_workers": 2}, OptregValueError, "hpo: n_workers > 1 needs backend='processes'"),
        ({"name": ""}, OptregValueError, "hpo: name must be a non-empty string, got ''"),
        ({"storage": 3}, OptregValueError, "hpo: storage must be a file path or None, got 3"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs, error, message):
    kwargs = {"n_trials": 3, **kwargs}
    with pytest.raises(error) as info:
        hpo.minimize(_objective, SPACE, **kwargs)
    assert str(info.value).startswith(message)


def test_a_non_callable_objective_is_refused():
    with pytest.raises(OptregTypeError, match=r"hpo: objective must be callable, got 3"):
        hpo.minimize(3, SPACE, n_trials=3)


_KILL_SCRIPT = """
import math, sys, time
from optreg import hpo
space = {"x": hpo.Float(-3.0, 3.0), "n": hpo.Int(1, 5)}
def objective(p):
    print("start", flush=True)
    time.sleep(0.02)
    return (p["x"] - 1) ** 2 + p["n"]
def report(study, trial):
    print(trial.number, trial.state, repr(trial.value), flush=True)
hpo.minimize(objective, space, method=sys.argv[2], n_trials=int(sys.argv[3]), seed=0, storage=sys.argv[1],
             name="kill", callback=report)
"""


def _kill_and_resume(tmp_path, method, n_trials, kills):
    """Run the study in a subprocess and SIGKILL it inside the objective once ``kills[i]`` trials are done
    (each time resuming in a new subprocess); check after each kill that every trial the process reported
    is stored, then finish the study here and check that none is lost or twice, and that the interrupted
    trials ran again."""
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent(_KILL_SCRIPT))
    path = tmp_path / "kill.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(hpo.__file__).parents[2])}
    reported: dict[int, float] = {}
    for kill_at in kills:
        proc = subprocess.Popen([sys.executable, str(script), str(path), method, str(n_trials)],
                                stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        for line in proc.stdout:
            if line.startswith("start"):
                if len(reported) >= kill_at:  # inside the objective of the next trial
                    proc.send_signal(signal.SIGKILL)
                    break
                continue
            number, state, value = line.split()
            assert state == "complete"
            reported[int(number)] = float(value)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with sqlite3.connect(path) as db:
            stored = dict(db.execute("SELECT number, value FROM trials WHERE state = 'complete'").fetchall())
            running = db.execute("SELECT count(*) FROM trials WHERE state = 'running'").fetchone()[0]
        db.close()
        assert {n: stored[n] for n in reported} == reported and running == 1
    space = {"x": hpo.Float(-3.0, 3.0), "n": hpo.Int(1, 5)}
    study = hpo.Study(space, method=method, n_trials=n_trials, seed=0, storage=path, name="kill")
    interrupted = [t.number for t in study.trials if t.state == "interrupted"]
    assert len(interrupted) == 1  # the trial the last kill stopped; the earlier ones ran again already
    study.optimize(lambda p: (p["x"] - 1) ** 2 + p["n"])
    trials = study.trials
    assert [t.number for t in trials] == list(range(n_trials))  # none lost, none twice
    assert all(t.state == "complete" and t.value == (t.params["x"] - 1) ** 2 + t.params["n"] for t in trials)
    assert all(trials[n].value == v for n, v in reported.items())
    assert sum(t.attempts == 2 for t in trials) == len(kills) and trials[interrupted[0]].attempts == 2


def test_a_study_killed_twice_with_sigkill_resumes_without_losing_or_repeating_trials(tmp_path):
    _kill_and_resume(tmp_path, "random", 12, (3, 8))


@pytest.mark.slow
@pytest.mark.parametrize(("method", "n_trials", "kills"), [("random", 30, (3, 8, 14, 20)), ("gp-ei", 16, (7, 11))])
def test_a_study_killed_several_times_resumes_each_time(tmp_path, method, n_trials, kills):
    _kill_and_resume(tmp_path, method, n_trials, kills)
