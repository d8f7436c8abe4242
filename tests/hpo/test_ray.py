"""Tests of the ``ray`` backend (optreg.hpo.executors.run_ray) on a local Ray (``ray.init(num_cpus=2)``).

Oracles: the serial run of the same study (random search's trial k depends only on the seed and k); a Ray
worker that kills itself with SIGKILL mid-trial; the median rule's decisions re-checked on the stored curves.
Starting Ray takes ~12 s here: the module shares one Ray runtime, and only the killed-worker test (the one a
crash would lose the study in) runs in the fast suite (and so in CI); the two ~10 s ones are marked slow.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from optreg import hpo
from optreg.errors import OptregValueError

ray = pytest.importorskip("ray", reason="the ray backend needs Ray (pip install optreg[ray])")

SPACE = {"x": hpo.Float(-2.0, 2.0), "n": hpo.Int(0, 4)}


def _value(p):
    return (p["x"] - 0.5) ** 2 + p["n"]


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # pragma: no cover - depends on the sandbox
        pytest.skip(f"ray cannot start a local runtime here: {type(e).__name__}: {e}")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_runs_the_serial_studys_trials_once_each(tmp_path, local_ray):
    seen = []

    def objective(p):
        time.sleep(0.05)
        return _value(p)

    study = hpo.minimize(objective, SPACE, method="random", n_trials=8, seed=0, storage=tmp_path / "r.sqlite",
                         name="r", n_workers=2, backend="ray", callback=lambda s, t: seen.append(t.number))  # fmt: skip
    serial = hpo.minimize(_value, SPACE, method="random", n_trials=8, seed=0)
    assert [(t.params, t.value) for t in study.trials] == [(t.params, t.value) for t in serial.trials]
    assert sorted(seen) == list(range(8)) and all(t.attempts == 1 for t in study.trials)
    assert ray.is_initialized()  # the caller's runtime is left running


def test_a_ray_worker_killed_mid_trial_does_not_lose_the_study(tmp_path, local_ray):
    marker = tmp_path / "marker"

    def dies_once(p):
        if p["n"] == 2 and not marker.exists():
            marker.write_text("died")
            os.kill(os.getpid(), signal.SIGKILL)
        return _value(p)

    study = hpo.minimize(dies_once, SPACE, method="random", n_trials=8, seed=0, storage=tmp_path / "k.sqlite",
                         name="k", n_workers=2, backend="ray")  # fmt: skip
    trials = study.trials
    assert Path(marker).exists()
    assert [t.number for t in trials] == list(range(8)) and all(t.state == "complete" for t in trials)
    rerun = [t for t in trials if t.attempts == 2]
    assert len(rerun) == 1 and rerun[0].params["n"] == 2
    assert all(t.value == _value(t.params) for t in trials)


@pytest.mark.slow
def test_ray_tasks_report_to_the_same_study(tmp_path, local_ray):
    def curve(p, trial):
        value = 0.0
        for step in range(1, 5):
            value = _value(p) * (1 + 1 / step)
            trial.report(value, step)
            if trial.should_stop():
                break
        return value

    study = hpo.minimize(curve, SPACE, method="median-stop", n_trials=10, seed=0, n_startup=2,
                         storage=tmp_path / "m.sqlite", name="m", n_workers=2, backend="ray")  # fmt: skip
    trials = study.trials
    assert all(t.state == "complete" and t.intermediate for t in trials)
    assert all(len(t.intermediate) == (4 if t.stopped is None else t.stopped) for t in trials)
    assert any(t.stopped is not None for t in trials)
    with pytest.raises(OptregValueError, match=r"backend='ray' with an objective that takes trial= needs a storage"):
        hpo.minimize(curve, SPACE, method="median-stop", n_trials=2, backend="ray", n_workers=2)
