"""The lab: one experiment per chapter figure or exercise, registered by name.

>>> from optreg import experiments
>>> experiments.available()                                   # doctest: +SKIP
['batch-size', 'init', 'lr-decay', 'optimizers', 'optimizers-2d', 'preprocessing']
>>> ctx = experiments.Context(dataset="digits", out=Path("runs/demo"))
>>> result = experiments.run("optimizers", ctx)              # doctest: +SKIP
>>> result.paths["table.csv"]                                 # doctest: +SKIP
PosixPath('runs/demo/optimizers/1/table.csv')

The contract (``register``, ``Context``, ``Result``) is in :mod:`optreg.experiments.base`; the built-in
experiments live in this package's modules, imported on first use of :func:`available` / :func:`get`.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import re
import sys
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from optreg.errors import OptregTypeError, OptregValueError
from optreg.experiments.base import (
    _REGISTRY,
    CLAIM_COLUMNS,
    DEFAULT_DATASET,
    OPTIONS,
    Context,
    Experiment,
    Result,
    RunHistory,
    check_claims,
    check_device,
    check_out,
    complete_spec,
    register,
)
from optreg.train import distributed

__all__ = [
    "DEFAULT_DATASET",
    "Context",
    "Experiment",
    "Result",
    "RunHistory",
    "available",
    "check_device",
    "check_options",
    "check_out",
    "complete_spec",
    "describe",
    "format_table",
    "get",
    "register",
    "result_markdown",
    "run",
    "save_result",
]

#: The modules of the built-in experiments (``optreg.experiments.<module>``).
BUILTIN_MODULES = (
    "optimizers", "batch_size", "lr_decay", "init_schemes", "preprocessing", "curvature", "landscapes",
    "data_regularization", "regularization", "ensembles", "dropout", "normalization", "penalties",
    "weight_decay",
)

_loaded = False


def _load_builtins() -> None:
    """Import the built-in experiment modules once (each registers itself)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the modules call register(), which calls back here
    try:
        for module in BUILTIN_MODULES:
            qualified = f"{__name__}.{module}"
            try:
                importlib.import_module(qualified)
            except ModuleNotFoundError as e:  # a module of this list not (yet) in this installation
                if e.name != qualified:
                    raise
    except BaseException:
        _loaded = False
        raise


def available() -> list[str]:
    """The names of the registered experiments, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``; an unknown name raises, listing the known ones."""
    names = available()
    if name not in _REGISTRY:
        raise OptregValueError(f"experiments: experiment must be one of {', '.join(names)}, got {name!r}")
    return _REGISTRY[name]


def describe() -> list[dict[str, str]]:
    """One row per experiment (``name``, ``figure``, ``title``, ``help``), for ``optreg list``."""
    return [
        {"name": e.name, "figure": e.figure, "title": e.title, "help": e.help}
        for e in (get(name) for name in available())
    ]


# ------------------------------------------------------------------------------------------- saving


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    v = float(value)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def _columns(table: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in table:
        if not isinstance(row, dict):
            raise OptregTypeError(f"experiments: every table row must be a dict, got {row!r}")
        columns.extend(k for k in row if k not in columns)
    return columns


def format_table(table: list[dict[str, Any]]) -> str:
    """A list of dicts as a GitHub-flavoured markdown table (numbers to 4 significant digits)."""
    columns = _columns(table)
    if not columns:
        return ""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table:
        lines.append("| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _csv_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def result_markdown(result: Result) -> str:
    """``table.md``: the title, the table, the claims as a markdown table under ``## Claims`` (columns
    ``claim | measured | verdict``), then the notes."""
    md = f"# {result.title or result.name}\n\n{format_table(result.table)}"
    if result.claims:
        md += f"\n## Claims\n\n{format_table(result.claims)}"
    if result.notes:
        md += f"\n{result.notes.strip()}\n"
    return md


def save_result(
    result: Result, folder: Path, ctx: Context | None = None, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write a result's figures (PNG), ``table.csv`` (the table), ``claims.csv`` (the claims: columns
    ``claim, measured, verdict``; only when there are claims) and ``table.md`` (:func:`result_markdown`)
    under ``folder``, and with ``ctx`` the runs it trained (``ctx.run_ids``) to ``metrics.csv`` from its
    store; returns ``{what: path}``. Figure names must be file-name safe and the claims :func:`claim` rows
    (:func:`~optreg.experiments.base.check_claims`). In data-parallel training only rank 0 writes (the
    other ranks return ``{}``).

    Nothing is written when a file to be written exists already (unless ``overwrite``) or a name is
    unsafe: a result never silently replaces another.
    """
    for name in result.figures:
        if not isinstance(name, str) or not _SAFE.match(name):
            raise OptregValueError(f"experiments: figure names must be file-name safe, got {name!r}")
    columns = _columns(result.table)
    result.claims = check_claims(result.claims)
    if distributed.rank() != 0:
        return {}
    folder = Path(folder)
    targets = [folder / f"{name}.png" for name in result.figures] + [folder / "table.csv", folder / "table.md"]
    if result.claims:
        targets.append(folder / "claims.csv")
    if ctx is not None and ctx.run_ids:
        targets.append(folder / "metrics.csv")
    taken = [t for t in targets if t.exists()]
    if taken and not overwrite:
        raise OptregValueError(
            f"experiments: '{taken[0]}' exists; a result is never replaced (choose another folder or pass overwrite)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, fig in result.figures.items():
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")  # a Figure renders with Agg, whatever the backend
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # a figure made with pyplot is released (no-op for plain Figures)
            pyplot.close(fig)
        paths[name] = path
    paths["table.csv"] = folder / "table.csv"
    paths["table.csv"].write_text(_csv_text(result.table, columns), encoding="utf-8")
    if result.claims:
        paths["claims.csv"] = folder / "claims.csv"
        paths["claims.csv"].write_text(_csv_text(result.claims, CLAIM_COLUMNS), encoding="utf-8")
    paths["table.md"] = folder / "table.md"
    paths["table.md"].write_text(result_markdown(result), encoding="utf-8")
    if ctx is not None and ctx.run_ids:
        paths["metrics.csv"] = ctx.open_store().export_csv(folder / "metrics.csv", ctx.run_ids)
    return paths


def check_options(experiment: Experiment, ctx: Context) -> None:
    """Refuse a context that sets a setting the experiment does not honour (see ``register(options=)``);
    ``n_classes`` goes with ``dataset``."""
    given = {"dataset": ctx.dataset is not None, "seeds": ctx.seeds is not None, "epochs": ctx.epochs is not None}
    ignored = [name for name, is_set in given.items() if is_set and name not in experiment.options]
    if ctx.n_classes is not None and "dataset" not in experiment.options:
        ignored.append("n_classes")
    if ignored:
        why = f" ({experiment.why})" if experiment.why else ""
        takes = ", ".join(experiment.options) or f"none of {', '.join(OPTIONS)}"
        raise OptregValueError(
            f"experiments: {experiment.name} does not take {' or '.join(ignored)}{why}; it takes {takes}"
        )


def run(name: str, ctx: Context) -> Result:
    """Run the experiment ``name`` in ``ctx`` and save everything in a new folder, ``ctx.out / name / <id>``.

    The runs it trains form one invocation (id ``<id>`` in ``ctx.out / runs.sqlite``). Writes the figures
    (``<fig>.png``), ``table.csv``, ``claims.csv``, ``table.md`` (:func:`save_result`) and ``metrics.csv``
    (every step and epoch of the runs it trained, from the store) in that folder, which did not exist
    before: nothing earlier is replaced. A setting of ``ctx`` the experiment does not honour is refused
    first. Returns the :class:`Result` with ``paths`` filled in.
    """
    experiment = get(name)
    if not isinstance(ctx, Context):
        raise OptregTypeError(f"experiments: ctx must be a Context, got {ctx!r}")
    check_options(experiment, ctx)
    ctx.begin(name)
    result = experiment.fn(ctx)
    if not isinstance(result, Result):
        raise OptregTypeError(f"experiments: {name} must return a Result, got {type(result).__name__}")
    result.name = result.name or name
    result.title = result.title or experiment.title
    result.paths = save_result(result, ctx.output_folder(), ctx)
    return result
