"""The epoch counting of benchmarks/bench_hpo_task.py, on a cheap synthetic objective (no training).

Oracles: Hyperband's closed-form budget (Li et al. 2017, Algorithm 1: bracket ``s`` runs
``n_i = floor(n eta^-i)`` configurations with ``r_i = R eta^(i - s)`` epochs, ``n = ceil((s_max + 1) eta^s /
(s + 1))``), written out here independently of optreg.hpo.halving: ``sum n_i r_i`` epochs from scratch, and
``sum n_i (r_i - r_{i-1})`` when each rung resumes the previous one; random search's ``N E``; Optuna's own record
of the steps each trial reported; and sums done by hand.
"""

from __future__ import annotations

import math

import optuna
import pytest
from benchmarks.bench_hpo_task import Call, Ledger, epochs_to_reach, run_hyperband, run_optuna, run_random

from optreg import hpo

SPACE = {"lr": hpo.Float(1e-4, 1e-1, log=True), "width": hpo.Int(16, 256, log=True)}


def synthetic(params, state, budget, trial):
    """A learning curve ``score(params) (1 - 2^-epoch)`` (peak at lr = 1e-2), one report per epoch; the state is
    the number of epochs done."""
    done = 0 if state is None else state
    score = 1.0 / (1.0 + abs(math.log10(params["lr"]) + 2.0))
    while done < budget:
        done += 1
        if trial is not None:
            trial.report(score * (1 - 0.5**done), done)
            if trial.should_stop():
                break
    value = score * (1 - 0.5**done)
    return done, done, value, value


def closed_form(R: int, eta: int, resume: bool) -> tuple[int, int]:
    """(epochs, trials) of one pass of Hyperband, R a power of eta (Li et al., Algorithm 1)."""
    s_max = round(math.log(R, eta))
    epochs = trials = 0
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) * eta**s / (s + 1))
        previous = 0
        for i in range(s + 1):
            n_i, r_i = n // eta**i, R * eta ** (i - s)
            epochs += n_i * (r_i - previous if resume else r_i)
            trials += n_i
            previous = r_i
    return epochs, trials


@pytest.mark.parametrize(("R", "eta"), [(27, 3), (9, 3), (16, 2)])
@pytest.mark.parametrize("resume", [True, False])
@pytest.mark.parametrize("method", ["hyperband", "bohb"])
def test_one_hyperband_pass_spends_li_et_als_closed_form_budget(R, eta, resume, method):
    """BOHB (Falkner et al. 2018) keeps Hyperband's brackets: the same closed form."""
    run = run_hyperband(synthetic, SPACE, max_budget=R, seed=0, eta=eta, resume=resume, method=method)
    assert run.method == method
    epochs, trials = closed_form(R, eta, resume)
    assert (run.spent, len(run.calls)) == (epochs, trials)
    if resume:  # every later rung resumes its configuration's previous rung: only the extra epochs count
        assert all(c.start == 0 or c.start < c.budget == c.end for c in run.calls)
        assert sum(c.start > 0 for c in run.calls) == trials - sum(
            math.ceil((round(math.log(R, eta)) + 1) * eta**s / (s + 1)) for s in range(round(math.log(R, eta)) + 1)
        )
    else:
        assert all(c.start == 0 and c.epochs == c.budget for c in run.calls)


@pytest.mark.parametrize("method", ["hyperband", "bohb"])
def test_hyperband_stops_before_the_trial_that_would_pass_the_budget(method):
    budget = 100  # within the second pass of R = 9, eta = 3 (one pass: closed_form(9, 3, True) epochs)
    run = run_hyperband(synthetic, SPACE, max_budget=9, seed=0, budget=budget, method=method)
    one_pass = closed_form(9, 3, True)[0]
    assert one_pass < run.spent <= budget < run.spent + 9  # it stopped only when the next trial (<= 9) did not fit
    assert run.best is not None and run.best.end == 9  # chosen among the full-length trials (best_trial's rule)
    assert run.best.value == max(c.value for c in run.calls if c.end == 9)


def test_random_spends_n_times_e_and_chooses_its_best():
    run = run_random(synthetic, SPACE, n=7, epochs=5, seed=1)
    assert run.spent == 35 and all(c.start == 0 and c.epochs == 5 for c in run.calls)
    assert run.best.value == max(c.value for c in run.calls)


def test_optuna_epochs_are_the_steps_its_trials_reported():
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3),
    )  # fmt: skip
    run = run_optuna(synthetic, SPACE, max_budget=9, budget=120, seed=0, study=study)
    reported = [len(t.intermediate_values) for t in study.trials]
    assert reported == [c.epochs for c in run.calls]  # Optuna's record: one step per epoch trained
    assert run.spent == sum(reported) == 120  # the last trial is cut off where the budget ends
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states  # the pruner did prune, and those epochs count too
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(len(t.intermediate_values) == 9 for t in complete)
    assert run.best.value == max(t.value for t in complete)


def test_ledger_resumes_only_a_smaller_budget_of_the_same_config():
    ledger = Ledger(synthetic)
    a, b = {"lr": 1e-2, "width": 32}, {"lr": 1e-3, "width": 32}
    calls = [ledger(a, 3), ledger(a, 9), ledger(b, 9), ledger(a, 4)]
    assert [(c.start, c.end, c.epochs) for c in calls] == [(0, 3, 3), (3, 9, 6), (0, 9, 9), (0, 4, 4)]
    assert ledger.spent == 3 + 6 + 9 + 4


def test_epochs_to_reach_counts_up_to_the_first_trial_at_the_target():
    calls = [Call({}, 1, 0, 1, 0.50, None), Call({}, 3, 1, 3, 0.70, None), Call({}, 9, 0, 9, 0.60, None),
             Call({}, 9, 3, 9, 0.80, None)]  # fmt: skip
    assert epochs_to_reach(calls, 0.70) == 1 + 2
    assert epochs_to_reach(calls, 0.70, full=9) == 1 + 2 + 9 + 6
    assert epochs_to_reach(calls, 0.55, full=9) == 1 + 2 + 9
    assert epochs_to_reach(calls, 0.90) is None
