"""Fixtures shared by the experiment tests: a quick run into a fresh folder, and reading its CSV files.

(Fixtures rather than importable helpers: the suite runs in pytest's importlib mode, where a test module
cannot import ``conftest``.)
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from optreg import experiments
from optreg.experiments import Context

QuickRun = Callable[[str], tuple[Context, experiments.Result]]


@pytest.fixture(scope="session")
def run_quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """``run_quick(name)`` runs experiment ``name`` in quick mode into a fresh folder: ``(context, result)``."""

    def run(name: str) -> tuple[Context, experiments.Result]:
        ctx = Context(quick=True, out=tmp_path_factory.mktemp(name))
        return ctx, experiments.run(name, ctx)

    return run


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def read_csv() -> Callable[[Path], list[dict[str, str]]]:
    """``read_csv(path)``: the rows of a CSV file the lab wrote, as dicts of strings."""
    return _read_csv
