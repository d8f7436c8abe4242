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
def test_quick_run_has_claims_figures_and_runs(run_quick, read_claims, name, figures):
    ctx, result = run_quick(name)
    assert figures <= set(result.figures)
    assert result.table
    assert all(any(ch.isdigit() for ch in c["measured"]) for c in read_claims(result))  # every claim measured
    assert (ctx.out / "runs.sqlite").exists()
    store = ctx.open_store()
    assert {r["status"] for r in store.runs(name)} == {"finished"}
