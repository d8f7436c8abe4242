"""The spectrum, flat-minima, landscape and conditioning experiments in quick mode: each returns its table with
measured numbers and verdicts, its figures, and records its runs. (Their numbers are checked where they come from:
optreg.diagnostics against torch.func.hessian and closed forms, tests/diagnostics.)"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("name", "figures"),
    [("spectrum", {"density"}), ("flat-minima", {"sharpness"}), ("landscape", {"planes", "interpolation"}),
     ("conditioning", {"monitor"})],
)
def test_quick_run_has_claims_figures_and_runs(run_quick, name, figures):
    ctx, result = run_quick(name)
    assert figures <= set(result.figures)
    assert result.table
    text = str(result.table) + result.notes
    assert "holds" in text or "does not hold here" in text  # every claim gets a verdict
    assert (ctx.out / "runs.sqlite").exists()
    store = ctx.open_store()
    assert {r["status"] for r in store.runs(name)} == {"finished"}
