"""Tests of BOHB (optreg.hpo.bohb, Falkner, Klein & Hutter 2018).

Oracles: Hyperband's closed-form allocation (Li et al. 2017, Algorithm 1: bracket ``s`` runs
``floor(n eta^-i)`` configurations with ``R eta^(i - s)`` each, ``n = ceil((s_max + 1) eta^s / (s + 1))``),
written out here; optreg's ``hyperband`` on the same seed (``rho = 1``: BOHB's random draws are Hyperband's);
optreg's TPE (optreg.hpo.tpe, tested against SciPy in test_tpe.py) fitted on observations picked by hand
(Falkner et al.'s Algorithm 2: the largest budget with at least ``N_min + 2`` complete observations,
``N_min = d + 1``); an uninterrupted study for the resumed one.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo.bohb import BOHB
from optreg.hpo.tpe import TPE
from optreg.hpo.trial import Trial

SPACE = {"x": hpo.Float(-2.0, 2.0), "k": hpo.Int(0, 3)}


def _f(params, budget):
    return (params["x"] - 0.3) ** 2 + 0.1 * params["k"] + 1.0 / budget


def _brackets(R, eta):
    """{s: (trials, sum_i n_i r_i)} of one Hyperband pass, R a power of eta (Li et al., Algorithm 1)."""
    s_max = round(math.log(R, eta))
    out = {}
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) * eta**s / (s + 1))
        out[s] = (sum(n // eta**i for i in range(s + 1)), sum((n // eta**i) * R * eta ** (i - s) for i in range(s + 1)))
    return out


@pytest.mark.parametrize(("R", "eta"), [(9, 3), (27, 3), (8, 2)])
def test_every_bohb_bracket_spends_hyperbands_closed_form_budget(R, eta):
    want = _brackets(R, eta)
    # three passes, so that the later brackets' configurations come from the model
    n_trials = 3 * sum(n for n, _ in want.values())
    study = hpo.minimize(_f, SPACE, method="bohb", max_budget=R, eta=eta, seed=0, n_trials=n_trials)
    spent = defaultdict(int)
    for t in study.trials:
        spent[(t.meta["pass"], t.meta["bracket"])] += t.budget
    assert spent == {(p, s): r for p in range(3) for s, (_, r) in want.items()}
    assert any("model_budget" in t.meta for t in study.trials)  # the model did draw some


def test_bohb_on_a_resuming_objective_spends_hyperbands_resumed_budget():
    """Oracle: sum_i n_i (r_i - r_{i-1}) per bracket (each rung resumes its configuration's previous one)."""
    trained, reached = [], {}

    def objective(params, budget):
        key = tuple(sorted(params.items()))
        trained.append(budget - reached.get(key, 0))
        reached[key] = budget
        return _f(params, budget)

    R, eta, s_max = 27, 3, 3
    hpo.minimize(objective, SPACE, method="bohb", max_budget=R, eta=eta, seed=1, rho=0.0)
    want = 0
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) * eta**s / (s + 1))
        want += sum((n // eta**i) * (R * eta ** (i - s) - (R * eta ** (i - 1 - s) if i else 0)) for i in range(s + 1))
    assert sum(trained) == want


@pytest.mark.parametrize("n_trials", [None, 70])
def test_bohb_with_rho_1_proposes_exactly_what_hyperband_proposes(n_trials):
    kw = {"max_budget": 9, "eta": 3, "seed": 4, "n_trials": n_trials}
    hb = hpo.minimize(_f, SPACE, method="hyperband", **kw)
    bohb = hpo.minimize(_f, SPACE, method="bohb", rho=1.0, **kw)
    assert [(t.params, t.budget, t.meta) for t in bohb.trials] == [(t.params, t.budget, t.meta) for t in hb.trials]
    # and the default rho does not: the model's draws differ from Hyperband's
    model = hpo.minimize(_f, SPACE, method="bohb", **kw)
    where = {(t.meta["pass"], t.meta["bracket"], t.meta["config"]): t.params for t in hb.trials}
    drawn = [t for t in model.trials if "model_budget" in t.meta]
    assert drawn and all(t.params != where[(t.meta["pass"], t.meta["bracket"], t.meta["config"])] for t in drawn)


def _trial(number, x, k, budget, value=None, state="complete"):
    return Trial(number, {"x": x, "k": k, "c": 1}, state=state, value=value if state == "complete" else None,
                 budget=budget, meta={})  # fmt: skip


def test_the_model_feeds_on_the_largest_budget_with_n_min_plus_2_complete_trials():
    """d = 2 searched parameters (the Fixed one does not count): N_min = 3, a budget needs 5 complete trials."""
    space = {**SPACE, "c": hpo.Fixed(1)}
    rng = np.random.default_rng(0)
    trials = []
    for budget, n_complete, n_failed in ((1, 9, 0), (3, 5, 1), (9, 4, 3)):
        for _ in range(n_complete):
            trials.append(_trial(len(trials), float(rng.uniform(-2, 2)), int(rng.integers(4)), budget,
                                 float(rng.normal())))  # fmt: skip
        for _ in range(n_failed):
            trials.append(_trial(len(trials), float(rng.uniform(-2, 2)), 0, budget, state="failed"))
    trials.append(_trial(len(trials), 0.5, 1, 3, state="running"))
    method = BOHB(hpo.Space(space), seed=7, n_trials=None, direction="minimize", max_budget=9, rho=0.0)
    assert method.n_min == 3
    # budget 9 has 7 trials but only 4 complete; budget 3 has 5 complete (and a failed and a running one)
    at_3 = [t for t in trials if t.budget == 3]
    by_hand = [(t.params, t.value if t.state == "complete" else math.inf) for t in at_3]
    assert method.observations(trials) == (3, by_hand)
    # the proposal is the TPE's fitted on those observations alone (the generator of (seed, p, s, c, 1),
    # after the coin)
    params, meta = method.draw(trials, 0, 1, 2)
    oracle_rng = np.random.default_rng([7, 0, 1, 2, 1])
    oracle_rng.random()
    tpe = TPE(hpo.Space(space), seed=0, n_trials=None, direction="minimize", gamma=0.15, multivariate=True,
              n_ei_candidates=64, n_recent=None)  # fmt: skip
    assert params == tpe.suggest(by_hand, oracle_rng).params and meta == {"model_budget": 3}
    # the budget-1 observations (9 complete) would have given another proposal: they are not used
    oracle_rng = np.random.default_rng([7, 0, 1, 2, 1])
    oracle_rng.random()
    at_1 = [(t.params, t.value) for t in trials if t.budget == 1]
    assert params != tpe.suggest(at_1, oracle_rng).params
    # a fifth complete trial at budget 9 makes it the model's budget
    more = [*trials, _trial(len(trials), 1.0, 2, 9, 0.1)]
    assert method.observations(more)[0] == 9 and method.draw(more, 0, 1, 2)[1] == {"model_budget": 9}
    # n_min = 4 needs 6 complete trials: budget 1 only
    assert BOHB(hpo.Space(space), seed=7, n_trials=None, direction="minimize", max_budget=9,
                n_min=4).observations(trials)[0] == 1  # fmt: skip
    # no budget with enough: at random, as hyperband draws (the generator of (seed, p, s, c))
    few = trials[:4]
    assert method.observations(few) is None
    assert method.draw(few, 0, 1, 2) == (hpo.Space(space).sample(np.random.default_rng([7, 0, 1, 2])), {})


def test_bohb_resumed_after_an_interruption_proposes_the_same(tmp_path):
    path = tmp_path / "s.sqlite"
    kw = {"method": "bohb", "max_budget": 9, "eta": 3, "seed": 5, "n_trials": 60}
    reference = hpo.minimize(_f, SPACE, **kw)
    assert any("model_budget" in t.meta for t in reference.trials[40:])

    def stop_after_40(study, trial):
        if len(study.trials) == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hpo.minimize(_f, SPACE, storage=path, name="b", callback=stop_after_40, **kw)
    resumed = hpo.minimize(_f, SPACE, storage=path, name="b", **kw)
    assert [(t.params, t.budget, t.value, t.meta) for t in resumed.trials] == [
        (t.params, t.budget, t.value, t.meta) for t in reference.trials
    ]
    again = hpo.minimize(_f, SPACE, **kw)  # same seed, same numbers
    assert [t.params for t in again.trials] == [t.params for t in reference.trials]
    with pytest.raises(OptregValueError, match="settings"):  # the stored rho is part of the study's identity
        hpo.minimize(_f, SPACE, storage=path, name="b", **{**kw, "rho": 0.5})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rho": 1.5}, "bohb: rho must be in [0, 1], got 1.5"),
        ({"rho": -0.1}, "bohb: rho must be in [0, 1], got -0.1"),
        ({"rho": "half"}, "bohb: rho must be a real number in [0, 1], got 'half'"),
        ({"n_min": 0}, "bohb: n_min must be an integer >= 1, got 0"),
        ({"gamma": 0.0}, "bohb: gamma must be in (0, 1], got 0.0"),
        ({"n_ei_candidates": 0}, "bohb: n_ei_candidates must be an integer >= 1, got 0"),
        ({"multivariate": "yes"}, "bohb: multivariate must be True or False, got 'yes'"),
        ({"bandwidth": "silverman"}, "bohb: bandwidth must be one of"),
        ({"eta": 1}, "bohb: eta must be an integer >= 2, got 1"),
        ({"max_budget": 0}, "bohb: max_budget must be an integer >= 1, got 0"),
    ],
)
def test_bohb_bad_settings_name_the_field_and_value(options, message):
    with pytest.raises(OptregValueError) as info:
        hpo.minimize(_f, SPACE, method="bohb", **{"max_budget": 9, **options})
    assert str(info.value).startswith(message)


def test_bohb_is_listed_and_multi_fidelity():
    assert "bohb" in hpo.methods()
    assert hpo.methods().index("bohb") == hpo.methods().index("hyperband") + 1
    with pytest.raises(OptregValueError, match=r"hpo: method 'bohb' calls objective\(params, budget=r\)"):
        hpo.minimize(lambda p: p["x"], SPACE, method="bohb", max_budget=9, seed=0)
