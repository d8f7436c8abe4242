"""Fixtures shared by the experiment tests: a quick run into a fresh folder, reading its CSV files, and
reading its claims table (the one format every experiment saves).

(Fixtures rather than importable helpers: the suite runs in pytest's importlib mode, where a test module
cannot import ``conftest``.)
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from optreg import experiments
from optreg.experiments import Context
from optreg.experiments.base import CLAIM_COLUMNS, VERDICTS

QuickRun = Callable[[str], tuple[Context, experiments.Result]]


class _Events:
    """A progress function that keeps the events that count runs: ``("plan", runs)``, ``("start", label)``
    and ``("end", label)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def __call__(self, event: str, info: dict) -> None:
        if event == "plan":
            self.events.append((event, info["runs"]))
        elif event in ("start", "end"):
            self.events.append((event, info["label"]))


def _check_announced(name: str, ctx: Context, events: list[tuple[str, object]]) -> None:
    """The number of runs experiment ``name`` announced (``ctx.expect_runs``) against what it stored.

    Oracle: the runs of the invocation's rows in ``runs.sqlite`` (and ``ctx.run_ids``); the announcement comes
    once, before the first run starts, and every stored run sent one ``start`` and one ``end`` event."""
    plans = [n for e, n in events if e == "plan"]
    assert len(plans) == 1, f"{name}: announced its runs {len(plans)} times (ctx.expect_runs)"
    assert events[0][0] == "plan", f"{name}: announced its runs after a run started"
    stored = [r for r in ctx.open_store().runs(name) if r["invocation"] == ctx.invocation]
    assert len(stored) == len(ctx.run_ids)
    assert plans[0] == len(stored), f"{name}: announced {plans[0]} runs, stored {len(stored)}"
    assert sum(e == "start" for e, _ in events) == sum(e == "end" for e, _ in events) == len(stored)


def _run_counted(name: str, ctx: Context) -> experiments.Result:
    """``experiments.run(name, ctx)`` with its announced number of runs checked (:func:`_check_announced`)."""
    spy = _Events()
    ctx.progress = spy
    result = experiments.run(name, ctx)
    _check_announced(name, ctx, spy.events)
    return result


@pytest.fixture(scope="session")
def run_quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """``run_quick(name)`` runs experiment ``name`` in quick mode into a fresh folder: ``(context, result)``.
    It also checks that the experiment announced as many runs as it stored (the overall progress)."""

    def run(name: str) -> tuple[Context, experiments.Result]:
        ctx = Context(quick=True, out=tmp_path_factory.mktemp(name))
        return ctx, _run_counted(name, ctx)

    return run


@pytest.fixture(scope="session")
def run_counted() -> Callable[[str, Context], experiments.Result]:
    """``run_counted(name, ctx)``: ``experiments.run`` with the runs it announced checked against the store."""
    return _run_counted


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def read_csv() -> Callable[[Path], list[dict[str, str]]]:
    """``read_csv(path)``: the rows of a CSV file the lab wrote, as dicts of strings."""
    return _read_csv


def _markdown_cells(line: str) -> list[str]:
    """The cells of one row of a markdown table as :func:`optreg.experiments.format_table` writes it
    (``| a | b |``, a ``|`` inside a cell escaped as ``\\|``)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _read_claims(result: experiments.Result) -> list[dict[str, str]]:
    """The claims of a saved result, as rows of ``claims.csv`` (dicts of strings: claim, measured, verdict).

    Checks the one format every experiment reports its claims in: ``claims.csv`` has the columns claim,
    measured, verdict and a verdict of the two words in each row; ``table.md``'s "## Claims" markdown table
    and ``result.claims`` hold the same rows; the data table (``table.csv``) holds none of them."""
    rows = _read_csv(result.paths["claims.csv"])
    assert rows, "no claims"
    assert all(tuple(r) == CLAIM_COLUMNS and r["verdict"] in VERDICTS for r in rows)
    assert result.claims == rows
    section = result.paths["table.md"].read_text(encoding="utf-8").split("\n## Claims\n\n", 1)[1]
    lines = [ln for ln in section.split("\n\n", 1)[0].splitlines() if ln.startswith("|")]
    assert _markdown_cells(lines[0]) == list(CLAIM_COLUMNS) and set(lines[1]) <= {"|", "-"}
    assert [_markdown_cells(ln) for ln in lines[2:]] == [list(r.values()) for r in rows]
    assert all("verdict" not in row for row in result.table)
    return rows


@pytest.fixture(scope="session")
def read_claims() -> Callable[[experiments.Result], list[dict[str, str]]]:
    """``read_claims(result)``: the claims table of a saved result (:func:`_read_claims`), checked to be in the
    one format (``claims.csv``, the "Claims" table of ``table.md``, ``result.claims``)."""
    return _read_claims
