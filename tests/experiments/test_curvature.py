"""The saddle, cliff and second-order experiments in quick mode: their claims tables carry measured numbers and
verdicts, and the verdicts that follow from closed forms hold (undamped Newton converges to the saddle at 0;
a clipped step is at most lr * b, eq. 7.24)."""

from __future__ import annotations

import pytest
import torch

from optreg.experiments.curvature import positive_definite_fraction


def test_saddle_claims_and_figures(run_quick, read_claims):
    """Oracle: the closed form of undamped Newton on the saddle (it converges to the critical point at 0)."""
    ctx, result = run_quick("saddle")
    verdicts = {row["claim"]: row["verdict"] for row in read_claims(result)}
    assert len(verdicts) == 4
    newton = next(v for k, v in verdicts.items() if k.startswith("Newton's method is attracted"))
    assert newton == "holds"
    row = next(r for r in result.table if r["method"] == "newton (undamped)")
    assert abs(row["final_x"]) < 1e-6 and abs(row["final_y"]) < 1e-6 and row["escape_step"] is None
    assert {"trajectories", "saddle"} <= set(result.figures)
    assert (ctx.out / "saddle" / str(ctx.invocation) / "table.csv").exists()


def test_cliff_clipping_bounds_the_step(run_quick, read_claims):
    """Oracle: eq. 7.24, a clipped step is at most lr * b = 1.0 * 0.3."""
    _, result = run_quick("cliff")
    row = next(r for r in read_claims(result) if r["claim"].startswith("clipping the gradient norm"))
    assert row["verdict"] == "holds"
    assert float(row["measured"].split()[-1]) <= 0.3 + 1e-9
    clipped = next(r for r in result.table if r["clip"] == 0.3)
    assert clipped["longest_step"] <= 0.3 + 1e-9


def test_second_order_table_has_every_method(run_quick, read_claims):
    _, result = run_quick("second-order")
    methods = {r["method"] for r in result.table}
    assert methods == {"adam", "cg", "bfgs", "lbfgs", "newton-cg"}
    assert all(r["final loss"] < 2.31 for r in result.table)  # all below the loss at init (~ln 10)
    assert len(read_claims(result)) == 2


@pytest.mark.parametrize("n", [1, 2])
def test_positive_definite_fraction_closed_forms(n):
    """n = 1: P(a > 0) = 1/2. n = 2 (GOE): P(both eigenvalues > 0) = (2 - sqrt 2) / 4 ~ 0.146."""
    expected = 0.5 if n == 1 else (2 - 2**0.5) / 4
    assert positive_definite_fraction(n, 200_000, torch.Generator().manual_seed(0)) == pytest.approx(
        expected, abs=0.005)


@pytest.fixture(scope="module")
def trajectories(run_quick):
    """One quick run of ``trajectories`` for the tests below: ``(context, result)``."""
    return run_quick("trajectories")


def test_trajectories_cover_every_optimizer_on_three_functions(trajectories, read_claims):
    from optreg.experiments.optimizers import OPTIMIZERS

    _, result = trajectories
    assert {(r["function"], r["optimizer"]) for r in result.table} == {
        (f, o) for f in ("quadratic", "rosenbrock", "saddle") for o in OPTIMIZERS}
    assert "momentum-vs-nesterov" in result.figures
    assert len(read_claims(result)) == 1


def test_trajectories_name_each_lr_and_store_each_trajectory(trajectories):
    """Each trajectory names its lr (oracle: the rates of TOY_FUNCTIONS and SADDLE that toy_run used; in quick
    mode the legend of one panel per function) and is a stored run whose step losses are f(x_t)."""
    from optreg.experiments.curvature import SADDLE
    from optreg.experiments.optimizers import OPTIMIZERS, TOY_FUNCTIONS, toy_run

    ctx, result = trajectories
    functions = {**TOY_FUNCTIONS, "saddle": SADDLE}
    for fname, function in functions.items():
        (ax,) = [ax for ax in result.figures[f"trajectories-{fname}"].axes if ax.get_visible()]
        diverged = {r["optimizer"] for r in result.table if r["function"] == fname and r["diverged"]}
        expected = [f"{o}, lr {function.lrs[o]:g}" + (" (diverged)" if o in diverged else "") for o in OPTIMIZERS]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == expected
    store = ctx.open_store()
    runs = {r["label"]: r for r in store.runs("trajectories")}
    assert set(runs) == {f"{f}/{o}" for f in functions for o in OPTIMIZERS}
    path = toy_run(SADDLE, "adam")
    steps = store.steps(runs["saddle/adam"]["id"])
    assert [s["loss"] for s in steps] == [float(v) for v in SADDLE.f(path[:, 0], path[:, 1])]
    assert runs["saddle/adam"]["config"]["hparams"] == {"lr": SADDLE.lrs["adam"]}
