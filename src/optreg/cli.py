"""The ``optreg`` command (also ``python -m optreg.cli``).

::

    optreg run NAME [--dataset D] [--out DIR] [--seeds N] [--epochs E] [--quick]   # a chapter experiment
    optreg train CONFIG.toml [--out DIR]                                           # a run from a TOML file
    optreg tune CONFIG.toml --method M --trials N --out DIR [--resume] [--workers K --backend B]  # a search
    optreg list [experiments|optimizers|schedules|datasets|init|models]            # what is available
    optreg toy [--function quadratic|rosenbrock]                                   # optimizers on 2-D functions

Results go under ``--out`` (default ``runs``): ``<out>/<experiment>/`` holds the figures (PNG), the
table (CSV and markdown) and ``metrics.csv``; ``<out>/runs.sqlite`` records every run. Progress bars
show on a terminal; elsewhere (CI, pipes) one line per finished run. A bad argument or config prints one
line naming the key, the value and what is allowed, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optreg.errors import OptregError

__all__ = ["main"]

LISTS = ("experiments", "optimizers", "schedules", "datasets", "init", "models")
EXIT_USAGE = 2
THREADS_HELP = (
    "torch CPU threads (default 1: the lab's models are small, and one thread is as fast as two and immune "
    "to oversubscription on a busy machine; raise it for large models)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``optreg: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"optreg: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="optreg", description="Network optimization and regularization: the chapter's lab.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run a chapter experiment (optreg list experiments)")
    r.add_argument("name", help="the experiment, e.g. optimizers")
    r.add_argument("--dataset", default="digits", help="digits, mnist1d, or a path (IDX dir, .npz, .csv)")
    r.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    r.add_argument("--seeds", type=_positive, default=None, help="number of seeds (default: the experiment's)")
    r.add_argument("--epochs", type=_positive, default=None, help="epochs per run (default: the experiment's)")
    r.add_argument("--quick", action="store_true", help="tiny settings: a smoke test in seconds")
    r.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    r.add_argument("--threads", type=_positive, default=1, help=THREADS_HELP)

    t = sub.add_parser("train", help="train the run described by a TOML config")
    t.add_argument("config", type=Path, help="the TOML file (see optreg.config)")
    t.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    t.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    t.add_argument("--threads", type=_positive, default=1, help=THREADS_HELP)

    tn = sub.add_parser("tune", help="search the hyperparameters of a TOML config's [tune] table (optreg.tuning)")
    tn.add_argument("config", type=Path, help="the TOML file with a [tune] table")
    tn.add_argument("--method", default=None, help="a search method (default: tune.method, else random)")
    tn.add_argument("--trials", type=_positive, default=None, help="number of trials (default: tune.trials, else 20)")
    tn.add_argument("--out", type=Path, default=Path("tune"), help="output folder: study.sqlite, best.toml, figures")
    tn.add_argument("--resume", action="store_true", help="continue the study stored in OUT/study.sqlite "
                    "(after a crash or a kill; starts it if there is none yet)")
    tn.add_argument("--workers", type=_positive, default=1, help="trials at a time (backend processes or ray)")
    tn.add_argument("--backend", choices=("serial", "processes", "ray"), default=None, help="default: serial, or "
                    "processes with --workers > 1")  # fmt: skip
    tn.add_argument("--address", default=None, help="a Ray cluster's address (backend ray; default: a local Ray)")
    tn.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    tn.add_argument("--threads", type=_positive, default=1, help=THREADS_HELP)

    ls = sub.add_parser("list", help="list experiments, optimizers, schedules, datasets, init schemes, models")
    ls.add_argument("what", nargs="?", choices=LISTS, default=None, metavar="WHAT", help=", ".join(LISTS))

    toy = sub.add_parser("toy", help="every optimizer on 2-D test functions (a table)")
    toy.add_argument(
        "--function", choices=("quadratic", "rosenbrock"), action="append", help="default: both (repeatable)"
    )
    return p


# ------------------------------------------------------------------------------------------ output


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rich_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """A rich table of dict rows; a column ``x_sd`` next to ``x`` is shown as ``x ± sd``."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    shown = [c for c in columns if not (c.endswith("_sd") and c[:-3] in columns)]
    table = Table(title=title or None, title_justify="left", header_style="bold")
    for c in shown:
        table.add_column(c, overflow="fold")
    for row in rows:
        cells = []
        for c in shown:
            cell = _fmt(row.get(c))
            sd = row.get(f"{c}_sd")
            if sd is not None and f"{c}_sd" in columns:
                cell = f"{cell} ± {_fmt(sd)}"
            cells.append(cell)
        table.add_row(*cells)
    return table


class _Reporter:
    """Turns the experiments' progress events into rich progress bars (on a terminal) or lines."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not self.live,
        )
        self.tasks: dict[tuple[str, int], Any] = {}

    def __enter__(self) -> _Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "message":
            self.console.print(info["text"])
            return
        key = (info["label"], info["seed"])
        if event == "start":
            if not self.live:  # no bars: no tasks, so the per-step events below cost nothing
                return
            total = info["epochs"] * info["steps_per_epoch"]
            name = f"{info['label']} (seed {info['seed']})"
            self.tasks[key] = self.progress.add_task(name, total=total, status="")
        elif event == "step" and key in self.tasks:
            self.progress.update(self.tasks[key], completed=info["record"]["step"] + 1)
        elif event == "epoch" and key in self.tasks:
            record = info["record"]
            status = f"epoch {record['epoch'] + 1}/{info['epochs']} loss {record['train_loss']:.4f}"
            if record.get("val_accuracy") is not None:
                status += f" val acc {record['val_accuracy']:.4f}"
            self.progress.update(self.tasks[key], status=status)
        elif event == "end":
            if key in self.tasks:
                self.progress.remove_task(self.tasks.pop(key))
            s = info["summary"]
            parts = [f"{info['label']} (seed {info['seed']}): {info['status']}"]
            if s.get("final_val_accuracy") is not None:
                parts.append(f"val acc {s['final_val_accuracy']:.4f}")
            if s.get("test_accuracy") is not None:
                parts.append(f"test acc {s['test_accuracy']:.4f}")
            parts.append(f"{s['seconds']:.1f}s")
            self.console.print("  ".join(parts), highlight=False)


def _show_result(console: Console, result: Any, seconds: float) -> None:
    console.print(_rich_table(result.table, title=result.title))
    if result.notes:
        console.print(result.notes, highlight=False)
    for path in result.paths.values():
        console.print(f"wrote {path}", highlight=False)
    console.print(f"done in {seconds:.1f}s", highlight=False)


# ---------------------------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from optreg import experiments

    experiments.get(args.name)  # an unknown name fails before anything is written
    start = time.perf_counter()
    with _Reporter(console) as reporter:
        ctx = experiments.Context(
            dataset=args.dataset,
            seeds=args.seeds,
            epochs=args.epochs,
            quick=args.quick,
            out=args.out,
            progress=reporter,
            device=args.device,
        )
        try:
            result = experiments.run(args.name, ctx)
        finally:
            if ctx.store is not None:
                ctx.store.close()
    _show_result(console, result, time.perf_counter() - start)
    return 0


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from optreg import config as cfg
    from optreg import experiments

    conf = cfg.load(args.config)
    start = time.perf_counter()
    with _Reporter(console) as reporter:
        ctx = experiments.Context(out=args.out, progress=reporter, device=args.device)
        try:
            result = cfg.run(conf, ctx)
            result.paths = experiments.save_result(result, Path(args.out) / conf.name, ctx)
        finally:
            if ctx.store is not None:
                ctx.store.close()
    _show_result(console, result, time.perf_counter() - start)
    return 0


def _cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from optreg import tuning

    conf = tuning.load(args.config)
    backend = args.backend or ("processes" if args.workers > 1 else "serial")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                        disable=not console.is_terminal)  # fmt: skip
    state: dict[str, Any] = {}

    def status(study: Any) -> str:
        done = [t for t in study.trials if t.state == "complete"]
        return f"best {conf.metric} {study.best_value:.4g} (trial {study.best_trial.number})" if done else ""

    def start(study: Any) -> None:
        finished = sum(t.finished for t in study.trials)
        name = f"tune {conf.name} ({study.method.name})"
        state["task"] = progress.add_task(name, total=tuning.expected_trials(study), completed=finished, status="")

    def trial_done(study: Any, trial: Any) -> None:
        progress.update(state["task"], advance=1, status=status(study))
        if not console.is_terminal:
            value = "-" if trial.value is None else f"{trial.value:.4g}"
            console.print(f"trial {trial.number}: {trial.state} {conf.metric} {value}  {status(study)}")

    start_time = time.perf_counter()
    with progress:
        result = tuning.tune(conf, args.out, method=args.method, n_trials=args.trials, resume=args.resume,
                             n_workers=args.workers, backend=backend, address=args.address, device=args.device,
                             threads=args.threads, callback=trial_done, on_start=start)  # fmt: skip
    console.print(_rich_table(result.table, title=f"{conf.name}: the best trials (validation {conf.metric})"))
    console.print(result.notes, highlight=False)
    for path in result.paths.values():
        console.print(f"wrote {path}", highlight=False)
    console.print(f"done in {time.perf_counter() - start_time:.1f}s", highlight=False)
    return 0 if result.best is not None else 1


def _list_rows(what: str) -> list[dict[str, Any]]:
    if what == "experiments":
        from optreg import experiments

        return experiments.describe()
    if what == "optimizers":
        from optreg import optim

        return [{"name": n} for n in optim.available()]
    if what == "schedules":
        from optreg import schedules

        return [{"name": n} for n in schedules.available()]
    if what == "datasets":
        from optreg import data

        rows = [{"name": n, "source": "built in"} for n in data.available()]
        rows.append({"name": "PATH", "source": "your IDX directory (MNIST layout), .npz or .csv file"})
        return rows
    if what == "init":
        from optreg import init

        return [{"name": n} for n in init.available()]
    from optreg import nn

    return [{"name": n} for n in nn.available()]


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    for what in [args.what] if args.what else list(LISTS):
        console.print(_rich_table(_list_rows(what), title=what))
    return 0


def _cmd_toy(args: argparse.Namespace, console: Console) -> int:
    import numpy as np

    from optreg.experiments.optimizers import TOY_FUNCTIONS, toy_table

    functions = list(dict.fromkeys(args.function or TOY_FUNCTIONS))
    with np.errstate(over="ignore", invalid="ignore"):
        rows, _ = toy_table(functions)
    for name in functions:
        f = TOY_FUNCTIONS[name]
        title = f"{name}: f = {f.formula}, start {f.start}, {f.steps} steps, tol {f.tol:g}"
        mine = [{k: v for k, v in r.items() if k != "function"} for r in rows if r["function"] == name]
        console.print(_rich_table(mine, title))
    console.print("steps_to_tol: the first step from which f - f_min stays below tol ('-': not within the budget).")
    return 0


_COMMANDS = {"run": _cmd_run, "train": _cmd_train, "tune": _cmd_tune, "list": _cmd_list, "toy": _cmd_toy}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return _COMMANDS[args.command](args, console)
    except OptregError as e:
        print(f"optreg: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("optreg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
