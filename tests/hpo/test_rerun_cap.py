"""The cap on reruns of a trial whose worker process dies (``max_attempts``; optreg.hpo.executors,
optreg.hpo.storage.Storage.claim).

Oracles: attempts counted by hand through ask / interrupt / claim; the serial run of the same random study
(random search's trial k depends only on the seed and k) for the trials that must not be lost; the stored rows
read back through sqlite3; objectives that kill their own process (SIGKILL, ``os._exit``) on one trial.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
import textwrap

import pytest

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo.study import _worker

SPACE = {"x": hpo.Float(-2.0, 2.0), "n": hpo.Int(0, 4)}

_MODULE = """
import os, signal

def value(p):
    return (p["x"] - 0.5) ** 2 + p["n"]

def kills_on_two_trials(p, trial):
    if trial.number == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if trial.number == 5:
        os._exit(3)
    return value(p)
"""


def _interrupt(study: hpo.Study, number: int) -> None:
    """What the processes backend's parent does when the worker holding trial ``number`` dies."""
    assert study.storage.interrupt_dead(lambda w: True, only=number) == [number]


@pytest.mark.parametrize("path", [None, "s.sqlite"])
def test_claim_fails_an_interrupted_trial_once_it_had_max_attempts(tmp_path, path):
    storage = None if path is None else tmp_path / path
    study = hpo.Study(SPACE, n_trials=3, storage=storage, name="cap")
    claim = lambda: study.storage.claim(study.method.propose, _worker(), 3)  # noqa: E731
    first = claim()
    for attempt in (1, 2):  # attempts 1 and 2 die; each death is followed by a rerun of the same trial
        assert first.attempts == attempt
        _interrupt(study, first.number)
        first = claim()
        assert first.number == 0 and first.params == study.trials[0].params
    assert first.attempts == 3
    _interrupt(study, 0)  # the third death: the next claim gives up on trial 0 and proposes trial 1
    nxt = claim()
    assert nxt.number == 1 and nxt.attempts == 1
    t0 = study.trials[0]
    assert t0.state == "failed" and t0.attempts == 3 and t0.value is None
    assert t0.error.startswith(
        "hpo: trial 0 was not run again: its worker died in each of its 3 attempts (max_attempts=3; the last: "
        "interrupted: worker "
    )
    assert t0.error.endswith("stopped during attempt 3)")
    if path is not None:
        with sqlite3.connect(storage) as db:
            rows = db.execute("SELECT number, state, attempts FROM trials ORDER BY number").fetchall()
        db.close()
        assert rows == [(0, "failed", 3), (1, "running", 1)]


def test_without_a_cap_claim_reruns_an_interrupted_trial_again():
    study = hpo.Study(SPACE, n_trials=3)
    trial = study.ask()
    for attempt in range(2, 6):
        _interrupt(study, trial.number)
        trial = study.ask()  # ask / tell and serial studies have no cap: a person decides to resume
        assert (trial.number, trial.attempts) == (0, attempt)


@pytest.fixture
def objectives(tmp_path, monkeypatch):
    """An importable module of objectives (spawned workers import it by name)."""
    (tmp_path / "hpo_cap_objectives.py").write_text(textwrap.dedent(_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("hpo_cap_objectives")
    sys.modules.pop("hpo_cap_objectives", None)


@pytest.mark.slow
def test_a_trial_that_kills_its_worker_every_time_fails_after_max_attempts(tmp_path, objectives):
    """Trial 2 SIGKILLs its worker and trial 5 calls os._exit(3), on every attempt: the study finishes (the
    parent survives), those two trials are failed after 2 attempts each with the message, and no other trial
    is lost, repeated or run twice."""
    path, seen = tmp_path / "cap.sqlite", []
    study = hpo.minimize(objectives.kills_on_two_trials, SPACE, method="random", n_trials=8, seed=0, storage=path,
                         name="cap", n_workers=2, backend="processes", max_attempts=2,
                         callback=lambda s, t: seen.append(t.number))  # fmt: skip
    serial = hpo.minimize(objectives.value, SPACE, method="random", n_trials=8, seed=0)
    trials = study.trials
    assert [t.number for t in trials] == list(range(8)) and sorted(seen) == list(range(8))
    assert [t.params for t in trials] == [t.params for t in serial.trials]
    for t, s in zip(trials, serial.trials, strict=True):
        if t.number in (2, 5):
            assert (t.state, t.attempts, t.value) == ("failed", 2, None)
            assert t.error.startswith(
                f"hpo: trial {t.number} was not run again: its worker died in each of its 2 attempts (max_attempts=2"
            )
        else:
            assert (t.state, t.attempts, t.value) == ("complete", 1, s.value)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    db.close()
    assert rows == [(t.number, t.state) for t in trials]


def test_max_attempts_is_checked_and_only_for_worker_backends(tmp_path):
    with pytest.raises(
        OptregValueError, match=r"max_attempts is for backend='processes' or 'ray'.*got backend='serial'"
    ):
        hpo.minimize(lambda p: 0.0, SPACE, n_trials=2, max_attempts=2)
    with pytest.raises(OptregValueError, match=r"^hpo: max_attempts must be an integer >= 1, got 0$"):
        hpo.minimize(lambda p: 0.0, SPACE, n_trials=2, n_workers=2, backend="processes", max_attempts=0,
                     storage=tmp_path / "s.sqlite")  # fmt: skip
