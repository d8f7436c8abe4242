"""Tests of ``median-stop`` and intermediate reports (optreg.hpo.median, RunningTrial, Study.report).

Oracles: Optuna's MedianPruner (the same rule: Golovin et al. 2017) on the same learning curves; numpy's
median; random search with the same seed (median-stop proposes the same configurations).
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo.median import median_stop

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optuna_prunes(curve, others, *, direction, n_startup, n_warmup):
    pruner = optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=n_warmup, n_min_trials=n_startup)
    study = optuna.create_study(direction=direction, pruner=pruner)
    for c in others:
        study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values=c))
    running = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, intermediate_values=curve)
    return pruner.prune(study, running)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_median_rule_matches_optunas_median_pruner(direction):
    """Random curves of random lengths: our decision equals Optuna's MedianPruner with
    n_startup_trials = n_min_trials = n_startup (ours counts the trials that reached the step)."""
    rng = np.random.default_rng(0)
    sign = 1.0 if direction == "minimize" else -1.0
    decisions = []
    for case in range(300):
        n_others = int(rng.integers(0, 8))
        others = [{s: float(rng.normal()) for s in range(1, int(rng.integers(1, 6)) + 1)} for _ in range(n_others)]
        curve = {s: float(rng.normal()) for s in range(1, int(rng.integers(1, 6)) + 1)}
        n_startup, n_warmup = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        ours = median_stop(
            {s: sign * v for s, v in curve.items()},
            [{s: sign * v for s, v in c.items()} for c in others],
            n_startup=n_startup,
            n_warmup=n_warmup,
        )
        theirs = _optuna_prunes(curve, others, direction=direction, n_startup=n_startup, n_warmup=n_warmup)
        assert ours == theirs, (case, curve, others, n_startup, n_warmup)
        decisions.append(ours)
    assert 30 < sum(decisions) < 270  # both outcomes are exercised


def test_median_rule_against_numpy_median():
    others = [{1: 0.1, 2: 0.05}, {1: 0.3, 2: 0.2}, {1: 0.5}]
    assert np.median([0.1, 0.3, 0.5]) == 0.3
    assert median_stop({1: 0.31}, others, n_startup=3, n_warmup=0)  # worse (larger loss) than the median
    assert not median_stop({1: 0.3}, others, n_startup=3, n_warmup=0)  # equal is not worse
    assert not median_stop({1: 0.31}, others, n_startup=4, n_warmup=0)  # too few trials reached step 1
    assert not median_stop({1: 0.31}, others, n_startup=3, n_warmup=2)  # still warming up
    # at step 2 only two trials reported: median 0.125; the best so far (0.1 at step 1) is not worse
    assert not median_stop({1: 0.1, 2: 0.9}, others, n_startup=2, n_warmup=0)


def _curve_objective(p, trial):
    """A learning curve that rises to 1 - (x - 0.3)^2 over 5 epochs."""
    value = 0.0
    for step in range(1, 6):
        value = (1 - (p["x"] - 0.3) ** 2) * (1 - 0.5**step)
        trial.report(value, step)
        if trial.should_stop():
            break
    return value


def test_median_stop_tries_random_searchs_configurations_and_stops_the_bad_ones(tmp_path):
    space = {"x": hpo.Float(0.0, 1.0)}
    ms = hpo.maximize(_curve_objective, space, method="median-stop", n_trials=16, seed=3, n_startup=3,
                      storage=tmp_path / "m.sqlite", name="m")  # fmt: skip
    rnd = hpo.maximize(lambda p: 0.0, space, method="random", n_trials=16, seed=3)
    assert [t.params for t in ms.trials] == [t.params for t in rnd.trials]
    stopped = [t for t in ms.trials if t.stopped is not None]
    assert stopped and all(len(t.intermediate) == t.stopped < 5 for t in stopped)
    full = [t for t in ms.trials if t.stopped is None]
    assert all(sorted(t.intermediate) == [1, 2, 3, 4, 5] for t in full)
    # each stop was right by the rule at its step: the stored curves re-checked with numpy's median
    for t in stopped:
        s = t.stopped
        earlier = [u.intermediate[s] for u in ms.trials if u.number < t.number and s in u.intermediate]
        assert max(v for k, v in t.intermediate.items() if k <= s) < np.median(earlier)
    # the best trial ran to the end, and its value is the curve's last point
    assert ms.best_trial.stopped is None and ms.best_value == ms.best_trial.intermediate[5]
    # reopened from the file: the curves are stored
    again = hpo.Study(space, method="median-stop", direction="maximize", n_trials=16, seed=3, n_startup=3,
                      storage=tmp_path / "m.sqlite", name="m")  # fmt: skip
    assert [t.intermediate for t in again.trials] == [t.intermediate for t in ms.trials]
    again.close()


def test_median_stop_needs_an_objective_that_reports():
    with pytest.raises(OptregValueError, match=r"method 'median-stop' needs an objective that takes trial="):
        hpo.minimize(lambda p: p["x"], {"x": hpo.Float(0, 1)}, method="median-stop", n_trials=3)


def test_report_through_ask_and_tell_and_bad_reports():
    study = hpo.Study({"x": hpo.Float(0, 1)}, method="median-stop", direction="minimize", n_trials=10, n_startup=1)
    first = study.ask()
    study.report(first, 0.5, 1)
    study.report(first, 0.4, 1)  # the same step again: replaced
    assert study.trials[0].intermediate == {1: 0.4}
    assert not study.should_stop(first)  # no other trial yet
    study.tell(first, 0.4)
    second = study.ask()
    study.report(second, 0.9, 1)
    assert study.should_stop(second)  # 0.9 > median {0.4}
    assert study.trials[1].stopped == 1
    study.tell(second, 0.9)
    assert study.best_trial.number == 0
    third = study.ask()
    for value, step, message in [
        (math.nan, 1, "value must be a finite number, got nan"),
        ("0.5", 1, "value must be a finite number, got '0.5'"),
        (0.5, -1, "step must be an integer >= 0, got -1"),
        (0.5, 1.5, "step must be an integer >= 0, got 1.5"),
    ]:
        with pytest.raises(OptregValueError, match=f"hpo: trial.report: {message}"):
            study.report(third, value, step)
    with pytest.raises(OptregValueError, match="trial 0 of study 'study' is complete"):
        study.report(first, 0.1, 2)  # a finished trial takes no report
    assert study.trials[0].intermediate == {1: 0.4}


def test_an_objective_whose_report_fails_is_a_failed_trial():
    def objective(p, trial):
        trial.report(math.nan, 1)
        return 1.0

    study = hpo.minimize(objective, {"x": hpo.Float(0, 1)}, method="random", n_trials=2)
    assert [t.state for t in study.trials] == ["failed", "failed"]
    assert "value must be a finite number, got nan" in study.trials[0].error
