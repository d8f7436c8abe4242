"""Tests of coarse-to-fine search (optreg.hpo.coarse, file 001's tuning practice).

Oracles: the span of the best trials of a stage computed with sorted() and min/max on the log scale; the
objective's known minimizer; warnings captured by pytest.
"""

from __future__ import annotations

import math
import warnings

import pytest

from optreg import hpo
from optreg.errors import OptregValueError
from optreg.hpo.coarse import BorderWarning

SPACE = {"lr": hpo.Float(1e-5, 1.0, log=True), "width": hpo.Int(8, 512, log=True), "act": hpo.Categorical(["a", "b"])}


def _f(p):
    return (math.log10(p["lr"]) + 3) ** 2 + (math.log2(p["width"]) - 6) ** 2 / 4 + (p["act"] == "b")


def test_each_stage_searches_the_span_of_the_previous_stages_best():
    study = hpo.minimize(_f, SPACE, method="coarse-to-fine", n_trials=60, seed=0, stages=3, keep=0.25, margin=0.1)
    trials = study.trials
    stages = [[t for t in trials if t.meta["stage"] == k] for k in range(3)]
    assert [len(s) for s in stages] == [20, 20, 20]
    for prev, nxt in zip(stages, stages[1:]):
        top = sorted(prev, key=lambda t: t.value)[:5]  # ceil(0.25 * 20)
        logs = [math.log(t.params["lr"]) for t in top]
        lo, hi = min(logs), max(logs)
        # the next stage stays within the span of the best, widened by at most the margin of the old range
        assert all(lo - 0.1 * math.log(1e5) - 1e-9 <= math.log(t.params["lr"]) <= hi + 0.1 * math.log(1e5) + 1e-9
                   for t in nxt)  # fmt: skip
        assert {t.params["act"] for t in nxt} <= {t.params["act"] for t in top}
    spread = [max(math.log(t.params["lr"]) for t in s) - min(math.log(t.params["lr"]) for t in s) for s in stages]
    assert spread[2] < spread[1] < spread[0]
    assert abs(math.log10(study.best_params["lr"]) + 3) < 0.3 and study.best_params["act"] == "a"


def test_a_best_value_at_the_border_is_warned_about():
    with pytest.warns(BorderWarning, match=r"the best lr of stage \d lies at the border of its range"):
        study = hpo.minimize(lambda p: p["lr"], {"lr": hpo.Float(0.001, 1.0, log=True)}, method="coarse-to-fine",
                             n_trials=30, seed=0)  # fmt: skip
    marked = [t for t in study.trials if t.meta.get("border")]
    assert marked and all(t.meta["border"] == ["lr"] and t.meta["stage"] > 0 for t in marked)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BorderWarning)
        hpo.minimize(_f, SPACE, method="coarse-to-fine", n_trials=30, seed=0)  # the optimum is inside


def test_the_last_stages_best_at_the_border_is_warned_about_when_the_study_ends():
    """Oracle: the last stage's trials themselves (their best lies within the margin of the original range)."""
    with pytest.warns(BorderWarning) as record:
        study = hpo.minimize(lambda p: p["x"], {"x": hpo.Float(-1.0, 1.0)}, method="coarse-to-fine", n_trials=20,
                             seed=0)  # fmt: skip
    last = [t for t in study.trials if t.meta["stage"] == max(u.meta["stage"] for u in study.trials)]
    best = min(last, key=lambda t: t.value).params["x"]
    assert best - (-1.0) <= study.method.margin / 2 * 2.0  # the last stage's best is at the border...
    assert any("(the last)" in str(w.message) for w in record)  # ...and the user is told


def test_budgets_per_stage_like_file_001():
    seen = []

    def objective(p, budget):
        seen.append(budget)
        return _f(p) + 1 / budget

    study = hpo.minimize(objective, SPACE, method="coarse-to-fine", n_trials=9, stages=3, budgets=[1, 5, 20])
    assert seen == [1] * 3 + [5] * 3 + [20] * 3 and study.best_trial.budget == 20


def test_bad_settings():
    with pytest.raises(OptregValueError, match=r"coarse-to-fine: n_trials must be >= 2 \* stages = 6, got 5"):
        hpo.minimize(_f, SPACE, method="coarse-to-fine", n_trials=5)
    with pytest.raises(OptregValueError, match=r"coarse-to-fine: budgets must be a list of 3 integers"):
        hpo.minimize(_f, SPACE, method="coarse-to-fine", n_trials=9, budgets=[1, 2])
    with pytest.raises(OptregValueError, match=r"coarse-to-fine: keep must be in \(0, 1\], got 0"):
        hpo.minimize(_f, SPACE, method="coarse-to-fine", n_trials=9, keep=0)
