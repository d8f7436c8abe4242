"""The components layer: optreg.regularize, optreg.nn.dropout and optreg.optim.proximal import neither the
engine (train/, hpo/) nor the lab (experiments/, report/), the config or the CLI (DESIGN.md). Checked
statically over every import statement they reach (function-level ones included), package __init__s too."""

from __future__ import annotations

import ast
from pathlib import Path

import optreg

SRC = Path(optreg.__file__).parent.parent
UPPER = ("optreg.train", "optreg.hpo", "optreg.experiments", "optreg.report", "optreg.cli", "optreg.config")


def source(module: str) -> Path | None:
    path = SRC.joinpath(*module.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imported(module: str) -> set[str]:
    """The optreg modules ``module``'s file imports (a ``from package import name`` counts the submodule if any)."""
    path = source(module)
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if source(f"{base}.{a.name}") is not None}
    return {m for m in out if m.startswith("optreg")}


def reached(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ first
            name = ".".join(parts[:i])
            if name not in seen and source(name) is not None:
                seen.add(name)
                todo.extend(imported(name))
    return seen


def test_regularization_components_do_not_import_the_engine_or_the_lab():
    modules = reached(["optreg.regularize", "optreg.nn.dropout", "optreg.optim.proximal"])
    assert {"optreg.regularize.penalties", "optreg.optim.combine", "optreg.nn.dropout"} <= modules
    assert sorted(m for m in modules if m.startswith(UPPER)) == []


def test_the_check_sees_an_engine_import():
    """The checker itself: the engine's trainer does reach optreg.train (a check that can fail)."""
    assert "optreg.train.callbacks" in reached(["optreg.train.trainer"])
