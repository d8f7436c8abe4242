"""Tests of successive halving (Algorithm 7.2, with the erratum) and Hyperband (optreg.hpo.halving).

Oracles: Algorithm 7.2's resource formula r_t = floor(B / (|S_t| ceil(log2 N))) worked out by hand; Table 1
of Li et al. (2017, "Hyperband", JMLR 18) for R = 81, eta = 3; Python's sorted() for which configurations
survive a round.
"""

from __future__ import annotations

import math

import pytest

from optreg import hpo
from optreg.errors import OptregTypeError, OptregValueError
from optreg.hpo.halving import halving_rungs, hyperband_brackets

SPACE = {"x": hpo.Float(-2.0, 2.0), "k": hpo.Int(0, 3)}


def _f(params, budget):
    return (params["x"] - 0.3) ** 2 + 0.1 * params["k"] + 1.0 / budget


@pytest.mark.parametrize(
    ("n", "budget", "table"),
    [
        # N = 8, B = 96: K = 3 rounds, |S| = 8, 4, 2, r = floor(96/24), floor(96/12), floor(96/6)
        (8, 96, [(8, 4), (4, 8), (2, 16)]),
        # N = 5, B = 100: K = 3, |S| = 5, 3, 2, r = floor(100/15) = 6, floor(100/9) = 11, floor(100/6) = 16
        (5, 100, [(5, 6), (3, 11), (2, 16)]),
        # N = 2, B = 7: K = 1, r = floor(7 / 2) = 3
        (2, 7, [(2, 3)]),
    ],
)
def test_halving_spends_exactly_algorithm_7_2s_budget(n, budget, table):
    spent = []

    def objective(params, budget):
        spent.append(budget)
        return _f(params, budget)

    study = hpo.minimize(objective, SPACE, method="halving", n_trials=n, budget=budget, seed=0)
    assert halving_rungs(n, budget) == table
    assert sum(spent) == sum(size * r for size, r in table) <= budget
    assert sorted(spent, reverse=False) == sorted(r for size, r in table for _ in range(size))
    assert sum(t.budget for t in study.trials) == sum(spent)
    assert len({t.meta["config"] for t in study.trials}) == n  # n_trials = N configurations


@pytest.mark.parametrize(("n", "budget"), [(8, 96), (5, 100), (8, 54)])
def test_cumulative_halving_makes_a_resuming_objective_spend_algorithm_7_2s_budget(n, budget):
    """Oracle: Algorithm 7.2's allocation sum_t |S_t| r_t (from halving_rungs without cumulative), counted as
    the resource a resuming objective actually trains (its budget minus the configuration's previous one)."""
    trained, reached = [], {}

    def objective(params, budget):
        key = tuple(sorted(params.items()))
        trained.append(budget - reached.get(key, 0))  # resume from the configuration's last budget
        reached[key] = budget
        return _f(params, budget)

    study = hpo.minimize(objective, SPACE, method="halving", n_trials=n, budget=budget, seed=0, cumulative=True)
    plain = halving_rungs(n, budget)
    assert sum(trained) == sum(size * r for size, r in plain) <= budget
    # Jamieson & Talwalkar's R_t = r_1 + ... + r_t
    totals = [sum(r for _, r in plain[: i + 1]) for i in range(len(plain))]
    assert [r for _, r in halving_rungs(n, budget, cumulative=True)] == totals
    assert sorted({t.budget for t in study.trials}) == sorted(set(totals))
    # without cumulative, the same resuming objective would train only sum |S_t| (r_t - r_{t-1})
    short = sum(size * (r - (plain[i - 1][1] if i else 0)) for i, (size, r) in enumerate(plain))
    assert short < sum(trained)


def test_a_multi_fidelity_method_refuses_an_objective_without_budget():
    for method, options in (("halving", {"n_trials": 4, "budget": 16}), ("hyperband", {"max_budget": 9})):
        with pytest.raises(OptregValueError, match=rf"hpo: method '{method}' calls objective\(params, budget=r\)"):
            hpo.minimize(lambda p: p["x"], SPACE, method=method, seed=0, **options)
    with pytest.raises(OptregValueError, match="takes no 'budget'"):
        hpo.minimize(lambda p: p["x"], SPACE, method="coarse-to-fine", n_trials=9, budgets=[1, 2, 3], seed=0)
    hpo.minimize(lambda p, **kw: p["x"], SPACE, method="halving", n_trials=4, budget=16, seed=0)  # **kwargs is fine


def test_halving_keeps_the_better_half_each_round_sorted():
    study = hpo.minimize(_f, SPACE, method="halving", n_trials=16, budget=16 * 4 * 4, seed=3)
    trials = study.trials
    rungs = sorted({t.meta["rung"] for t in trials})
    assert rungs == [0, 1, 2, 3]
    for r in rungs[:-1]:
        here = sorted((t for t in trials if t.meta["rung"] == r), key=lambda t: t.value)
        promoted = {t.meta["config"] for t in trials if t.meta["rung"] == r + 1}
        assert promoted == {t.meta["config"] for t in here[: math.ceil(len(here) / 2)]}
        # a promoted configuration keeps its parameters
        for t in trials:
            if t.meta["rung"] == r + 1:
                assert t.params == next(u.params for u in here if u.meta["config"] == t.meta["config"])
    last = [t for t in trials if t.meta["rung"] == 3]
    assert study.best_trial == min(last, key=lambda t: t.value)
    assert study.best_trial.budget == max(t.budget for t in trials)


def test_a_failed_configuration_is_not_promoted():
    def objective(params, budget):
        if params["k"] == 0:
            raise RuntimeError("diverged")
        return _f(params, budget)

    study = hpo.minimize(objective, SPACE, method="halving", n_trials=8, budget=8 * 3, seed=0)
    failed = {t.meta["config"] for t in study.trials if t.state == "failed"}
    assert failed and all(t.meta["config"] not in failed for t in study.trials if t.meta["rung"] > 0)
    assert all(t.error == "RuntimeError: diverged" for t in study.trials if t.state == "failed")


def test_hyperband_brackets_match_li_et_al_table_1():
    """Li et al. (2017), Table 1: R = 81, eta = 3."""
    assert hyperband_brackets(81, 3) == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ]


def test_hyperband_runs_every_bracket_once():
    spent = []

    def objective(params, budget):
        spent.append(budget)
        return _f(params, budget)

    study = hpo.minimize(objective, SPACE, method="hyperband", max_budget=9, eta=3, seed=0)
    # R = 9, eta = 3: s_max = 2; s=2: n = 9 -> (9, 1), (3, 3), (1, 9); s=1: n = ceil(3*3/2) = 5 -> (5, 3), (1, 9);
    # s=0: n = 3 -> (3, 9)
    assert sorted(spent) == sorted([1] * 9 + [3] * 3 + [9] + [3] * 5 + [9] + [9] * 3)
    assert {t.meta["bracket"] for t in study.trials} == {0, 1, 2}
    assert study.best_trial.budget == 9


def test_hyperband_with_n_trials_starts_new_passes():
    study = hpo.minimize(_f, SPACE, method="hyperband", max_budget=3, eta=3, seed=0, n_trials=12)
    # R = 3: brackets (3,1),(1,3) and (2,3): 6 trials per pass
    assert len(study.trials) == 12 and {t.meta["pass"] for t in study.trials} == {0, 1}
    first = [t.params for t in study.trials if t.meta["pass"] == 0]
    second = [t.params for t in study.trials if t.meta["pass"] == 1]
    assert first != second  # new configurations


def test_halving_resumed_after_an_interruption_runs_the_same_rounds(tmp_path):
    path = tmp_path / "s.sqlite"
    reference = hpo.minimize(_f, SPACE, method="halving", n_trials=8, budget=48, seed=5)

    def stop_after_five(study, trial):
        if len(study.trials) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hpo.minimize(_f, SPACE, method="halving", n_trials=8, budget=48, seed=5, storage=path, name="h",
                     callback=stop_after_five)  # fmt: skip
    resumed = hpo.minimize(_f, SPACE, method="halving", n_trials=8, budget=48, seed=5, storage=path, name="h")
    assert [(t.params, t.budget, t.value) for t in resumed.trials] == [
        (t.params, t.budget, t.value) for t in reference.trials
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_trials": 8, "budget": 10}, OptregValueError, "halving: budget must be >= n_trials * ceil(log2 n_trials)"),
        ({"n_trials": 1, "budget": 10}, OptregValueError, "halving: n_trials (N configurations) must be an integer >="),
        ({"n_trials": 8}, OptregTypeError, "hpo: method 'halving' needs the option 'budget'"),
        ({"n_trials": 8, "budget": 2.5}, OptregValueError, "halving: budget must be an integer >= 1, got 2.5"),
    ],
)
def test_halving_bad_settings(kwargs, error, message):
    with pytest.raises(error) as info:
        hpo.minimize(_f, SPACE, method="halving", **kwargs)
    assert str(info.value).startswith(message)


def test_hyperband_bad_settings():
    with pytest.raises(OptregValueError, match=r"hyperband: eta must be an integer >= 2, got 1"):
        hpo.minimize(_f, SPACE, method="hyperband", max_budget=9, eta=1)
    with pytest.raises(OptregValueError, match=r"hyperband: max_budget must be an integer >= 1, got 0"):
        hpo.minimize(_f, SPACE, method="hyperband", max_budget=0)
