"""Every experiment announces how many runs it will store (``ctx.expect_runs``), for the command line's
overall progress (``run 14/27``, the time left).

Oracle: the runs stored in the invocation (``runs.sqlite``) and the start / end events they sent, counted by
the ``run_quick`` fixture (tests/experiments/conftest.py), so every quick-mode test of an experiment checks its
count on the way; here: that every registered experiment has such a test, and (slow) all of them in one go,
each with its claims table read back in the one format every experiment saves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from optreg import experiments
from optreg.experiments import Context

HERE = Path(__file__).parent


def _builtin() -> list[str]:
    """The built-in experiments (other tests register their own, which train nothing worth counting)."""
    modules = {f"optreg.experiments.{m}" for m in experiments.BUILTIN_MODULES}
    return [name for name in experiments.available() if experiments.get(name).module in modules]


def _names_run_quick() -> set[str]:
    """The experiment names written as string literals in the test modules here that call ``run_quick``."""
    names: set[str] = set()
    for path in HERE.glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "run_quick"]
        if calls:
            names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return names


def test_every_experiment_has_a_quick_test_that_checks_its_announced_runs():
    """Static: each built-in experiment's name appears in a test module that runs it through ``run_quick``
    (which checks the announced count against the store); the check below can fail: a new experiment
    without a quick test is missing from the set."""
    missing = sorted(set(_builtin()) - _names_run_quick())
    assert not missing, f"experiments without a run_quick test (their run count is never checked): {missing}"


def test_the_check_catches_a_wrong_announcement(tmp_path, run_counted):
    """The oracle itself: an experiment that announces 2 runs and stores 1 fails the check."""

    @experiments.register("count-check-wrong", title="announces 2, stores 1", options=())
    def wrong(ctx: Context) -> experiments.Result:
        ctx.expect_runs(2)
        ctx.record_run("only", seed=0, config={})
        return experiments.Result()

    try:
        with pytest.raises(AssertionError, match="announced 2 runs, stored 1"):
            run_counted("count-check-wrong", Context(out=tmp_path))
    finally:
        experiments.base._REGISTRY.pop("count-check-wrong")


@pytest.mark.slow  # every experiment's quick mode in one test: about two minutes on 2 cores
@pytest.mark.parametrize("name", _builtin())
def test_every_experiment_announces_the_runs_it_stores_and_reports_its_claims(name, tmp_path, run_counted, read_claims):
    """Also: every built-in experiment has a claims table, saved in the one format (``read_claims``)."""
    result = run_counted(name, Context(quick=True, out=tmp_path))
    assert read_claims(result)
