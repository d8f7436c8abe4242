"""The ``optreg`` command (also ``python -m optreg.cli``).

::

    optreg run NAME [--dataset D] [--n-classes K] [--out DIR] [--seeds N] [--epochs E] [--quick]   # an experiment
    optreg train CONFIG.toml [--out DIR] [--set KEY=VALUE ...] [--seed S] [--epochs E] [--nproc N]   # TOML run
    optreg train --resume RUN [--epochs E]                                         # continue a stored run
    optreg runs list|show|compare|plot|export ...                                  # work with stored runs
    optreg template                                                                # an annotated config
    optreg tune CONFIG.toml --method M --trials N --out DIR [--resume] [--workers K --backend B]  # a search
    optreg list [experiments|optimizers|schedules|datasets|init|models]            # what is available
    optreg toy [--function quadratic|rosenbrock]                                   # optimizers on 2-D functions
    optreg --version                                                               # also: python -m optreg

Results go under ``--out`` (default ``runs``): ``<out>/runs.sqlite`` records every run, and each
invocation writes a new folder ``<out>/<name>/<invocation id>/`` with the figures (PNG), the table
(``table.csv``), an experiment's claims (``claims.csv``: claim, measured, verdict), both in ``table.md``,
and ``metrics.csv`` (and, for ``train``, the checkpoints ``run-<id>/last.pt`` and ``best.pt``), so
nothing earlier is ever replaced. ``--out`` and ``--device`` are checked before any work.

Output: on a terminal, a progress bar per run and one for the whole invocation (``run 14/27``, the time
left); elsewhere (CI, pipes) one line per finished run (``run 14/27: adam (seed 0): finished ...``). Tables
fit the terminal's width (else ``$COLUMNS``, else 120 characters) without splitting a number: columns that
do not fit continue in a second table. A run ends with the experiment's table, its notes and its claims
table. ``run`` and ``train`` take ``--quiet`` (no progress and no table: only the paths of the files
written, one per line) and ``--json`` (standard output holds only a JSON summary: the runs with their
status and summary, the table, the claims, the files and the invocation; progress goes to standard error
unless ``--quiet``); ``runs list`` and ``runs show`` take ``--json`` too. Errors and
warnings always go to standard error, one line each.

Exit status: 0 done; 1 a trained run did not finish (``train``: it diverged); 2 a bad argument, config
or run reference (one line naming the key, the value and what is allowed; an unknown option points to its
command's help: ``optreg run --frob`` says ``see optreg run --help``), and also ``optreg`` (or
``optreg runs``) without a command, which prints the help on standard output (argparse's status for a
usage error, so that a script that forgot the command fails); 130 interrupted (Ctrl-C: the run is stored
as ``interrupted`` and can be resumed).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from optreg import __version__
from optreg.errors import OptregError, OptregWarning
from optreg.report.tables import terminal_tables

__all__ = ["main"]

LISTS = ("experiments", "optimizers", "schedules", "datasets", "init", "models")
EXIT_UNFINISHED = 1
EXIT_USAGE = 2
THREADS_HELP = (
    "torch CPU threads (default 1: the lab's models are small, and one thread is as fast as two and immune "
    "to oversubscription on a busy machine; raise it for large models)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``optreg: error: ...``) and exit status 2, and an
    option a (sub)command does not know is reported by that command, pointing to its help
    (``optreg: error: unrecognized argument --frob (see optreg run --help)``), with a close match if any."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._given = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self._unrecognized(extras)
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):  # an unknown option explains it better
            unknown = self._unknown_options(getattr(self, "_given", []))
            if unknown:
                self._unrecognized(unknown)
        self.exit(EXIT_USAGE, f"optreg: error: {message} (see {self.prog} --help)\n")

    def _known(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings]

    def _unknown_options(self, args: Sequence[str]) -> list[str]:
        known = self._known()
        unknown = []
        for arg in args:
            if arg == "--":
                break
            if not arg.startswith("-") or arg == "-" or self._negative_number_matcher.match(arg):
                continue
            name = arg.split("=", 1)[0]
            if name in known or (name.startswith("--") and any(k.startswith(name) for k in known)):
                continue
            unknown.append(arg)
        return unknown

    def _unrecognized(self, extras: Sequence[str]) -> NoReturn:
        options = [a for a in extras if a.startswith("-")]
        what = options or list(extras)
        text = f"unrecognized argument{'s' if len(what) > 1 else ''} {' '.join(what)}"
        if not options:
            text = f"unexpected argument{'s' if len(what) > 1 else ''} {' '.join(what)}"
        close = difflib.get_close_matches(what[0].split("=", 1)[0], self._known(), n=1, cutoff=0.75) if options else []
        if close:
            text += f"; did you mean {close[0]}?"
        self.exit(EXIT_USAGE, f"optreg: error: {text} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _output_options(parser: argparse.ArgumentParser, quiet: bool = True) -> None:
    if quiet:
        parser.add_argument("-q", "--quiet", action="store_true",
                            help="no progress and no table: only the paths of the files written (and errors)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on standard output (only that)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="optreg", description="Network optimization and regularization: the chapter's lab.")
    p.add_argument("--version", action="version", version=f"optreg {__version__}")
    p.set_defaults(help_parser=p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run a chapter experiment (optreg list experiments)")
    r.add_argument("name", help="the experiment, e.g. optimizers")
    r.add_argument("--dataset", default=None, help="digits (default), mnist1d, or a path (IDX dir, .npz, .csv)")
    r.add_argument("--n-classes", type=_positive, default=None, metavar="K",
                   help="the dataset's number of classes (labels 0..K-1; a label out of range is an error); "
                   "default: 10 built in, the largest label + 1 for a file")
    r.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    r.add_argument("--seeds", type=_positive, default=None, help="number of seeds (default: the experiment's)")
    r.add_argument("--epochs", type=_positive, default=None, help="epochs per run (default: the experiment's)")
    r.add_argument("--quick", action="store_true", help="tiny settings: a smoke test in seconds")
    r.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    r.add_argument("--threads", type=_positive, default=1, help=THREADS_HELP)
    _output_options(r)

    t = sub.add_parser(
        "train",
        help="train the run described by a TOML config, or resume a stored one",
        description="Train the run a TOML config describes; it is stored in OUT/runs.sqlite and its files go to "
        "a new folder OUT/NAME/ID/ (figures, tables, metrics.csv, and run-RUNID/last.pt and best.pt: the "
        "weights with the optimizer state after the last epoch and after the best validation epoch). "
        "--resume RUN continues a stored run (killed, failed or finished) from its last.pt, exactly.",
    )
    t.add_argument("config", type=Path, nargs="?", help="the TOML file (see optreg.config)")
    t.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    t.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    t.add_argument("--threads", type=_positive, default=1, help=THREADS_HELP)
    t.add_argument("--nproc", type=_positive, default=1, help="train on N local processes (data-parallel, DDP)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key (dotted path, value read as TOML), e.g. optimizer.lr=1e-3; repeatable")
    t.add_argument("--seed", type=int, default=None, help="train.seed: the weights, shuffling and dropout")
    t.add_argument("--epochs", type=_positive, default=None,
                   help="train.epochs (with --resume: train the stored run to this many epochs in all)")
    t.add_argument("--n-classes", type=_positive, default=None, metavar="K", help="data.n_classes")
    t.add_argument("--resume", metavar="RUN", help=f"continue this stored run instead ({RUN_HELP})")
    _output_options(t)

    sub.add_parser("template", help="print an annotated config: every key, its default and allowed values")
    _runs_parser(sub)

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


RUN_HELP = (
    "RUN is [OUT:]SELECTOR: OUT an output folder or its runs.sqlite (default: --out), SELECTOR a run id "
    "(7), ids and ranges (3-5,9), last (the newest run), @K (the runs of invocation K), @last (the newest "
    "invocation's runs) or all; e.g. runs/demo:7, runs/demo:@last, last"
)


def _runs_parser(sub: Any) -> None:
    rs = sub.add_parser(
        "runs",
        help="list, show, compare, plot and export stored runs",
        description=f"Work with the runs stored in OUT/runs.sqlite. {RUN_HELP}.",
    )
    rs.set_defaults(help_parser=rs)
    rsub = rs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=_Parser)

    def out_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--out", type=Path, default=Path("runs"), help="where a RUN without OUT: is looked up (default: runs)"
        )

    def refs(parser: argparse.ArgumentParser, nargs: str) -> None:
        parser.add_argument("runs", nargs=nargs, metavar="RUN", help=RUN_HELP)
        out_option(parser)

    def figure_options(parser: argparse.ArgumentParser, what: str) -> None:
        parser.add_argument("--png", type=Path, default=None, help=f"the figure's file (default: OUT/{what}-IDS.png)")
        parser.add_argument("--overwrite", action="store_true", help="replace the figure's file if it exists")
        parser.add_argument(
            "--smooth", type=_positive, default=None, help="moving-average window of per-step curves (default: auto)"
        )

    ls = rsub.add_parser("list", help="one line per run (or per invocation)", description="List the stored runs.")
    ls.add_argument("place", nargs="?", type=Path, default=None, metavar="OUT", help="output folder (default: --out)")
    out_option(ls)
    ls.add_argument("--experiment", default=None, help="only this experiment's runs")
    ls.add_argument("--status", default=None, help="only runs with this status (running, finished, ...)")
    ls.add_argument("--invocations", action="store_true", help="list the invocations (commands) instead")
    _output_options(ls, quiet=False)

    show = rsub.add_parser("show", help="everything stored about runs", description="Show stored runs in full.")
    refs(show, "+")
    show.add_argument("--steps", action="store_true", help="also print every step record")
    _output_options(show, quiet=False)

    cmp = rsub.add_parser(
        "compare", help="a table and overlaid curves of runs", description="Compare runs: a table and a figure."
    )
    refs(cmp, "+")
    figure_options(cmp, "compare")

    plot = rsub.add_parser("plot", help="chosen metrics of runs, one panel each", description="Plot runs' metrics.")
    refs(plot, "+")
    plot.add_argument(
        "--metric",
        action="append",
        choices=sorted({*STEP_METRICS, *EPOCH_METRICS}),
        metavar="NAME",
        help=f"a metric to draw (repeatable; default: loss and val_accuracy): per step {', '.join(STEP_METRICS)}; "
        f"per epoch {', '.join(EPOCH_METRICS)}",
    )
    figure_options(plot, "plot")

    export = rsub.add_parser(
        "export", help="runs' metrics as CSV or runs as JSON", description="Export runs (PATH '-': standard output)."
    )
    refs(export, "+")
    export.add_argument("--csv", type=Path, default=None, metavar="PATH", help="every step and epoch, one row each")
    export.add_argument("--json", type=Path, default=None, metavar="PATH", help="every run with its config and records")
    export.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")


#: Metrics ``optreg runs plot`` draws per step and per epoch (``lr`` is per step).
STEP_METRICS = ("loss", "accuracy", "lr", "grad_norm")
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


# ------------------------------------------------------------------------------------------ output


def _print_table(console: Console, rows: list[dict[str, Any]], title: str = "", caption: str = "") -> None:
    """Dict rows as tables that fit the console's width without splitting a number
    (:func:`optreg.report.tables.terminal_tables`; a column ``x_sd`` next to ``x`` shows as ``x ± sd``)."""
    for table in terminal_tables(rows, console.width, title=title, caption=caption):
        console.print(table)


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Reporter:
    """Turns the experiments' progress events into rich progress bars (on a terminal) or lines.

    A bar per run, and, when the invocation trains more than one run, a bar for all of them: ``run 14/27``
    and the time left (the time so far, scaled by the runs and the steps still to do; the total is what the
    experiment announced with :meth:`~optreg.experiments.Context.expect_runs`, else unknown). Off a
    terminal, one line per finished run (``run 14/27: adam (seed 0): finished ... about 2m left``).
    ``quiet``: nothing at all.
    """

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.live = console.is_terminal and not quiet
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
        self.total: int | None = None  # the runs announced
        self.started = self.finished = 0
        self.fraction: dict[tuple[str, int], float] = {}  # done, of each run under way
        self.steps: dict[tuple[str, int], int] = {}  # steps of each run under way
        self.t0: float | None = None
        self.overall: Any = None

    def __enter__(self) -> _Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    # -------------------------------------------------------------- the whole invocation
    def _position(self) -> str:
        """``run 14/27`` (``run 14`` when the total is unknown)."""
        return f"run {self.started}" + ("" if self.total is None else f"/{max(self.total, self.started)}")

    def left(self) -> str:
        """``about 2m10s left`` from the time so far and the fraction done, or ``""`` when unknown."""
        done = self.finished + sum(self.fraction.values())
        if self.total is None or self.t0 is None or done <= 0:
            return ""
        total = max(self.total, self.started)
        if done >= total:
            return ""
        return f"about {_duration((time.perf_counter() - self.t0) * (total - done) / done)} left"

    def _many(self) -> bool:
        """Whether the invocation has more than one run (or an unknown number): then it is counted."""
        return self.total is None or self.total > 1 or self.started > 1

    def _update_overall(self) -> None:
        if not self.live or not self._many():
            return
        total = None if self.total is None else max(self.total, self.started)
        done = self.finished + sum(self.fraction.values())
        status = ", ".join(p for p in (self._position(), self.left()) if p)
        if self.overall is None:
            self.overall = self.progress.add_task("all runs", total=total, completed=done, status=status)
        else:
            self.progress.update(self.overall, total=total, completed=done, status=status)

    # -------------------------------------------------------------- events
    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        if event == "message":
            self.console.print(info["text"])
            return
        if event == "plan":
            self.total = info["runs"]
            self.t0 = time.perf_counter()
            self._update_overall()
            return
        key = (info["label"], info["seed"])
        if event == "start":
            self.started += 1
            if self.t0 is None:
                self.t0 = time.perf_counter()
            self.fraction[key] = 0.0
            if not self.live:  # no bars: no tasks, so the per-step events below cost nothing
                return
            name = f"{info['label']} (seed {info['seed']})"
            self.steps[key] = max(1, info["epochs"] * info["steps_per_epoch"])
            self.tasks[key] = self.progress.add_task(name, total=self.steps[key], status="")
            self._update_overall()
        elif event == "step" and key in self.tasks:
            done = info["record"]["step"] + 1
            self.progress.update(self.tasks[key], completed=done)
            self.fraction[key] = min(1.0, done / self.steps[key])
            self._update_overall()
        elif event == "epoch" and key in self.tasks:
            record = info["record"]
            status = f"epoch {record['epoch'] + 1}/{info['epochs']} loss {record['train_loss']:.4f}"
            if record.get("val_accuracy") is not None:
                status += f" val acc {record['val_accuracy']:.4f}"
            self.progress.update(self.tasks[key], status=status)
        elif event == "end":
            self.fraction.pop(key, None)
            self.finished += 1
            if key in self.tasks:
                self.progress.remove_task(self.tasks.pop(key))
            self._update_overall()
            s = info["summary"]
            parts = [f"{info['label']} (seed {info['seed']}): {info['status']}"]
            if self._many():
                parts[0] = f"{self._position()}: {parts[0]}"
            if s.get("final_val_accuracy") is not None:
                parts.append(f"val acc {s['final_val_accuracy']:.4f}")
            if s.get("test_accuracy") is not None:
                parts.append(f"test acc {s['test_accuracy']:.4f}")
            if s.get("seconds") is not None:  # a run recorded outside the trainer may not say
                parts.append(f"{s['seconds']:.1f}s")
            if not self.live and self.left():
                parts.append(self.left())
            self.console.print("  ".join(parts), highlight=False, soft_wrap=True)


def _plain(value: Any) -> Any:
    """``value`` as JSON data: non-finite floats as null, paths as strings (:func:`optreg.report.store.to_jsonable`)."""
    from optreg.report.store import to_jsonable

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return to_jsonable(value, "output")


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=1, allow_nan=False) + "\n")
    sys.stdout.flush()


class _Outcome:
    """What a ``run`` or ``train`` command leaves behind, gathered before its store closes: the invocation,
    its folder and the runs it trained (id, label, seed, status, summary, error)."""

    def __init__(self, ctx: Any) -> None:
        store = ctx.open_store()
        self.store = store.path
        self.invocation = ctx.invocation
        self.folder = None if ctx.invocation is None else store.invocation_folder(ctx.invocation)
        keys = ("id", "label", "seed", "status", "summary", "error")
        self.runs = [{k: r[k] for k in keys} for r in store.runs(ids=ctx.run_ids)] if ctx.run_ids else []

    def unfinished(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] != "finished"]


def _report(args: argparse.Namespace, console: Console, result: Any, outcome: _Outcome, seconds: float,
            status: int) -> None:  # fmt: skip
    """A finished ``run`` / ``train``: the table, the notes, the claims table (claim, measured, verdict: the
    same for every experiment) and the files (default), only the files' paths
    (``--quiet``), or a JSON summary (``--json``)."""
    if args.json:
        _print_json({
            "command": args.command, "argv": args.argv, "experiment": result.name, "title": result.title,
            "exit_status": status, "seconds": round(seconds, 3), "store": str(outcome.store),
            "invocation": outcome.invocation, "folder": None if outcome.folder is None else str(outcome.folder),
            "files": {k: str(v) for k, v in result.paths.items()}, "runs": outcome.runs, "table": result.table,
            "claims": result.claims, "notes": result.notes,
        })  # fmt: skip
        return
    if args.quiet:
        for path in result.paths.values():
            print(path)
        return
    _print_table(console, result.table, title=result.title)
    if result.notes:
        console.print(result.notes, highlight=False)
    if result.claims:
        _print_table(console, result.claims, title="Claims")
    for path in result.paths.values():
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    console.print(f"done in {seconds:.1f}s", highlight=False)


def _progress_console(args: argparse.Namespace, console: Console) -> Console:
    """Where progress goes: standard output, or standard error with ``--json`` (stdout holds only the JSON)."""
    return Console(stderr=True, width=_width(sys.stderr), highlight=False) if args.json else console


# ---------------------------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from optreg import experiments

    experiments.get(args.name)  # an unknown name fails before anything is written
    start = time.perf_counter()
    with _Reporter(_progress_console(args, console), quiet=args.quiet) as reporter:
        ctx = experiments.Context(
            dataset=args.dataset,
            seeds=args.seeds,
            epochs=args.epochs,
            quick=args.quick,
            out=args.out,
            progress=reporter,
            device=args.device,
            command=args.argv,
            n_classes=args.n_classes,
        )
        try:
            result = experiments.run(args.name, ctx)
            outcome = _Outcome(ctx)
        finally:
            ctx.close()
    _report(args, console, result, outcome, time.perf_counter() - start, 0)
    return 0


def _resume_config(args: argparse.Namespace) -> tuple[Any, Path, int]:
    """The config of the stored run ``--resume`` names (its spec, its data at their absolute path, ``--epochs``
    if given), its output folder and its id."""
    import copy

    from optreg import config as cfg
    from optreg.report.store import RunStore, parse_ref

    ref = parse_ref(args.resume, args.out)
    with RunStore(ref.store) as store:
        ids = store.select(ref.selector)
        if len(ids) != 1:
            raise OptregError(f"train: --resume {args.resume!r} names {len(ids)} runs; name one, e.g. '{ids[-1]}'")
        run = store.run(ids[0])
    where = f"{ref.store.parent}:{run['id']}"
    if run["experiment"] != "train":
        raise OptregError(
            f"train: run {where} is from experiment {run['experiment']!r}; only `optreg train` runs resume"
        )
    spec = copy.deepcopy((run["config"] or {}).get("spec"))
    if spec is None:
        raise OptregError(f"train: run {where} has no stored spec (it was recorded by an older optreg)")
    data = (run["environment"] or {}).get("data") or {}
    if "path" in data and spec.get("data"):
        spec["data"]["path"] = data["path"]
    if args.epochs is not None:
        spec["train"]["epochs"] = args.epochs
    return cfg.parse(spec, source=run["config"].get("source", where)), ref.store.parent, run["id"]


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from optreg import config as cfg
    from optreg import experiments

    if (args.config is None) == (args.resume is None):
        raise OptregError("train: give a CONFIG file or --resume RUN (one of them)")
    if args.resume is not None and (args.set or args.seed is not None or args.n_classes is not None):
        raise OptregError(
            "train: --set, --seed and --n-classes do not go with --resume (a resumed run keeps its config)"
        )
    experiments.check_device(args.device, "train")
    if args.resume is None:
        experiments.check_out(args.out, "train")
        flags = [("train.seed", args.seed), ("train.epochs", args.epochs), ("data.n_classes", args.n_classes)]
        overrides = [*args.set, *((k, v) for k, v in flags if v is not None)]
        conf, out, resume = cfg.load(args.config, overrides), args.out, None
    else:
        conf, out, resume = _resume_config(args)
    if getattr(args, "nproc", 1) > 1:  # N processes train as one (optreg.train.distributed); rank 0 prints
        from optreg.train.distributed import launch

        return launch(_train_rank, args.nproc, args, threads=args.threads)[0]
    start = time.perf_counter()
    with _Reporter(_progress_console(args, console), quiet=args.quiet) as reporter:
        ctx = experiments.Context(
            out=out, progress=reporter, device=args.device, command=args.argv, checkpoints=True, resume=resume
        )
        try:
            ctx.begin("train", name=conf.name)
            ctx.expect_runs(1)
            result = cfg.run(conf, ctx)
            result.paths = experiments.save_result(result, ctx.output_folder(), ctx, overwrite=resume is not None)
            outcome = _Outcome(ctx)
        finally:
            ctx.close()
    unfinished, place = outcome.unfinished(), outcome.store.parent
    status = EXIT_UNFINISHED if unfinished else 0
    _report(args, console, result, outcome, time.perf_counter() - start, status)
    for run in unfinished:
        print(
            f"optreg: run {place}:{run['id']} ({run['label']}) {run['status']}; its records are stored: "
            f"optreg runs show {place}:{run['id']}",
            file=sys.stderr,
        )
    return status


# --------------------------------------------------------------------------------------------- runs


class _Selection:
    """The runs named by RUN references, from one or more stores (opened once each)."""

    def __init__(self, texts: Sequence[str], out: Path) -> None:
        from optreg.report.store import RunStore, parse_ref

        self.stores: dict[Path, RunStore] = {}
        self.runs: list[tuple[RunStore, dict[str, Any]]] = []
        try:
            for text in texts:
                ref = parse_ref(text, out)
                key = ref.store.resolve()
                if key not in self.stores:
                    self.stores[key] = RunStore(ref.store)
                store = self.stores[key]
                for run in store.runs(ids=store.select(ref.selector)):
                    if all(not (s is store and r["id"] == run["id"]) for s, r in self.runs):
                        self.runs.append((store, run))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def name(self, store: Any, run: dict[str, Any]) -> str:
        """``#7 adam (seed 0)``, with the store's folder when runs come from several stores."""
        text = f"#{run['id']} {run['label']} (seed {run['seed']})"
        return f"{store.path.parent.name}{text}" if len(self.stores) > 1 else text

    def title(self) -> str:
        ids = [str(r["id"]) for _, r in self.runs]
        return "Runs " + (", ".join(ids) if len(ids) <= 8 else f"{ids[0]} ... {ids[-1]} ({len(ids)} runs)")

    def records(self) -> list[dict[str, Any]]:
        """Each run with its steps and epochs and its store's path (:meth:`RunStore.export_records`)."""
        return [{"store": str(store.path), **store.export_records([run["id"]])[0]} for store, run in self.runs]

    def ids(self) -> str:
        ids = [str(r["id"]) for _, r in self.runs]
        return "-".join(ids) if len(ids) <= 8 else f"{ids[0]}-to-{ids[-1]}-{len(ids)}runs"


def _short_time(stamp: str | None) -> str | None:
    return None if stamp is None else stamp[:19].replace("T", " ")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": leaf}`` (lists stay leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _summary_columns(run: dict[str, Any]) -> dict[str, Any]:
    summary = run["summary"] or {}
    return {
        "train_loss": summary.get("final_train_loss"),
        "val_acc": summary.get("final_val_accuracy"),
        "test_acc": summary.get("test_accuracy"),
        "seconds": summary.get("seconds"),
    }


def _runs_list(args: argparse.Namespace, console: Console) -> int:
    from optreg.report.store import RunStore, parse_ref

    ref = parse_ref(os.fspath(args.place if args.place is not None else args.out))
    with RunStore(ref.store) as store:
        if args.invocations and args.json:
            _print_json([{**inv, "runs": [r["id"] for r in store.runs(invocation=inv["id"])]}
                         for inv in store.invocations()])  # fmt: skip
            return 0
        if args.invocations:
            rows = [
                {
                    "invocation": inv["id"],
                    "experiment": inv["experiment"],
                    "runs": len(store.runs(invocation=inv["id"])),
                    "started": _short_time(inv["started"]),
                    "folder": None if inv["folder"] is None else os.path.relpath(inv["folder"]),
                    "command": " ".join(inv["command"]),
                }
                for inv in store.invocations()
            ]
            _print_table(console, rows, title=f"invocations in {ref.store}")
            return 0
        runs = store.runs(args.experiment, status=args.status)
    if args.json:
        _print_json([{"store": str(ref.store), **r} for r in runs])
        return 0
    rows = [
        {
            "id": r["id"],
            "inv": r["invocation"],
            "experiment": r["experiment"],
            "label": r["label"],
            "seed": r["seed"],
            "status": r["status"],
            "started": _short_time(r["started"]),
            **_summary_columns(r),
        }
        for r in runs
    ]
    if not rows:
        console.print(f"no runs in {ref.store}" + (" match" if args.experiment or args.status else ""))
        return 0
    _print_table(console, rows, title=f"{len(rows)} run(s) in {ref.store}")
    return 0


def _train_rank(args: argparse.Namespace) -> int:
    """One process of ``optreg train --nproc N``: the command itself, in the process group."""
    from optreg.train.distributed import rank

    if rank() != 0:
        sys.stdout = sys.stderr = open(os.devnull, "w")
    return _dispatch(argparse.Namespace(**{**vars(args), "nproc": 1}))


def _runs_show(args: argparse.Namespace, console: Console) -> int:
    selection = _Selection(args.runs, args.out)
    try:
        if args.json:  # as `runs export --json`, the steps only with --steps
            records = selection.records()
            _print_json([r if args.steps else {k: v for k, v in r.items() if k != "steps"} for r in records])
            return 0
        for store, run in selection.runs:
            rows = [
                {"field": "run", "value": f"{store.path.parent}:{run['id']}"},
                {"field": "experiment", "value": run["experiment"]},
                {"field": "label", "value": run["label"]},
                {"field": "seed", "value": run["seed"]},
                {"field": "status", "value": run["status"]},
                {"field": "error", "value": run["error"]},
                {"field": "started", "value": run["started"]},
                {"field": "finished", "value": run["finished"]},
                {"field": "process", "value": f"pid {run['pid']} on {run['host']}, last write {run['heartbeat']}"},
            ]
            if run["invocation"] is not None:
                inv = store.invocation(run["invocation"])
                folder = "" if inv["folder"] is None else f", folder {inv['folder']}"
                rows.append({"field": "invocation", "value": f"{inv['id']}: {' '.join(inv['command'])}{folder}"})
            for key in ("summary", "config", "environment", "versions"):
                if run[key] is not None:
                    text = json.dumps(run[key], indent=1, sort_keys=True, default=str)
                    rows.append({"field": key, "value": text})
            _print_table(console, rows, title=f"run {run['id']}")
            epochs = store.epochs(run["id"])
            if epochs:
                _print_table(console, epochs, title=f"run {run['id']}: {len(epochs)} epoch(s)")
            steps = store.steps(run["id"])
            if args.steps and steps:
                _print_table(console, steps, title=f"run {run['id']}: {len(steps)} step(s)")
            else:
                console.print(f"{len(steps)} step record(s) (--steps prints them)", highlight=False)
    finally:
        selection.close()
    return 0


def _figure_path(args: argparse.Namespace, selection: _Selection, what: str) -> Path:
    store = selection.runs[0][0]
    path = args.png if args.png is not None else store.path.parent / f"{what}-{selection.ids()}.png"
    _check_target(path, args.overwrite)
    return path


def _check_target(path: Path, overwrite: bool) -> None:
    """A file that may be written: not a folder, in a folder that exists; an existing one only with --overwrite."""
    if path.is_dir():
        raise OptregError(f"runs: '{path}' is a folder; give a file path")
    if path.exists() and not overwrite:
        raise OptregError(f"runs: '{path}' exists; pass --overwrite to replace it, or choose another file")
    if not path.parent.is_dir():
        raise OptregError(f"runs: cannot write '{path}': '{path.parent}' is not a folder")


def _save_figure(fig: Any, path: Path, console: Console) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _curve_panels(selection: _Selection, metrics: Sequence[str], smooth: int | None) -> list[Any]:
    """One :class:`~optreg.report.plots.Panel` per metric, one curve per run (per step or per epoch); each
    panel names the runs that did not finish (a diverged run's curve stops where it did)."""
    from optreg.report.plots import Panel

    unfinished = [f"{selection.name(store, run)} {run['status']}" for store, run in selection.runs
                  if run["status"] != "finished"]  # fmt: skip
    note = "not finished: " + ", ".join(unfinished) if unfinished else ""
    panels = []
    for metric in metrics:
        per_step = metric in STEP_METRICS
        series: dict[str, list[list[float]]] = {}
        xs: dict[str, list[float]] = {}
        longest = 1
        for store, run in selection.runs:
            records = store.steps(run["id"]) if per_step else store.epochs(run["id"])
            points = [(r["step"] if per_step else r["epoch"] + 1, r[metric]) for r in records]
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
            if points:
                name = selection.name(store, run)
                series[name], xs[name] = [[y for _, y in points]], [x for x, _ in points]
                longest = max(longest, len(points))
        window = smooth if smooth is not None else (max(1, longest // 50) if per_step and metric != "lr" else 1)
        positive = all(y > 0 for runs in series.values() for y in runs[0])
        ylabel = metric + (f" (moving average over {window})" if window > 1 else "")
        panels.append(
            Panel(
                series,
                title=f"{metric} per {'step' if per_step else 'epoch'}",
                xlabel="step" if per_step else "epoch",
                ylabel=ylabel,
                x=xs,
                smooth=window,
                spread="none",
                log_y=metric.endswith("loss") and positive and bool(series),
                integer_x=not per_step,
                note=note,
            )
        )
    return panels


def _runs_compare(args: argparse.Namespace, console: Console) -> int:
    from optreg.report.plots import curves_figure

    selection = _Selection(args.runs, args.out)
    try:
        path = _figure_path(args, selection, "compare")
        # the settings that differ (the flat summary keys: spec and toml repeat them, source names a file)
        flat = [_flat(run["config"] or {}) for _, run in selection.runs]
        keys = list(dict.fromkeys(k for f in flat for k in f if not k.startswith(("spec.", "toml.", "source"))))
        differ = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
        rows = []
        for (store, run), f in zip(selection.runs, flat):
            row = {"id": run["id"], "label": run["label"], "seed": run["seed"], "status": run["status"]}
            if len(selection.stores) > 1:
                row = {"store": str(store.path.parent), **row}
            row.update({k: f.get(k) for k in differ})
            row.update(_summary_columns(run))
            rows.append(row)
        _print_table(console, rows, title=f"{len(rows)} run(s); config columns: the keys that differ")
        has_val = any(store.epochs(run["id"]) and store.epochs(run["id"])[-1]["val_accuracy"] is not None
                      for store, run in selection.runs)  # fmt: skip
        metrics = ["loss", "train_loss", "val_accuracy" if has_val else "train_accuracy"]
        panels = _curve_panels(selection, metrics, args.smooth)
        _save_figure(curves_figure(panels, title=selection.title()), path, console)
    finally:
        selection.close()
    return 0


def _runs_plot(args: argparse.Namespace, console: Console) -> int:
    from optreg.report.plots import curves_figure

    selection = _Selection(args.runs, args.out)
    try:
        path = _figure_path(args, selection, "plot")
        metrics = list(dict.fromkeys(args.metric or ["loss", "val_accuracy"]))
        panels = _curve_panels(selection, metrics, args.smooth)
        if not any(p.series for p in panels):
            raise OptregError(f"runs: the runs have no recorded {' or '.join(metrics)}")
        ncols = min(len(panels), 3)
        _save_figure(curves_figure(panels, title=selection.title(), ncols=ncols), path, console)
    finally:
        selection.close()
    return 0


def _runs_export(args: argparse.Namespace, console: Console) -> int:
    if args.csv is None and args.json is None:
        raise OptregError("runs export: give --csv PATH and/or --json PATH ('-': standard output)")
    targets = [p for p in (args.csv, args.json) if p is not None and os.fspath(p) != "-"]
    for path in targets:
        _check_target(path, args.overwrite)
    selection = _Selection(args.runs, args.out)
    try:
        for path, kind in ((args.csv, "csv"), (args.json, "json")):
            if path is None:
                continue
            if os.fspath(path) == "-":
                _export(selection, kind, sys.stdout)
                continue
            tmp = path.with_name(f".{path.name}.tmp")  # written whole, then renamed: never a half-written file
            try:
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    _export(selection, kind, fh)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            console.print(f"wrote {path} ({len(selection.runs)} run(s))", highlight=False, soft_wrap=True)
    finally:
        selection.close()
    return 0


def _export(selection: _Selection, kind: str, fh: Any) -> None:
    """The selected runs to ``fh``: their metric rows as CSV, or the runs with their records as JSON."""
    from optreg.report.store import write_csv

    if kind == "csv":
        write_csv(fh, [row for store, run in selection.runs for row in store.metric_rows([run["id"]])])
        return
    json.dump(selection.records(), fh, indent=1, default=str)
    fh.write("\n")


_RUNS = {
    "list": _runs_list,
    "show": _runs_show,
    "compare": _runs_compare,
    "plot": _runs_plot,
    "export": _runs_export,
}


def _cmd_runs(args: argparse.Namespace, console: Console) -> int:
    return _RUNS[args.runs_command](args, console)


def _cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from optreg import experiments, tuning

    if args.backend != "ray":  # a Ray cluster's workers may have devices this machine lacks
        experiments.check_device(args.device, "tune")
    experiments.check_out(args.out, "tune")
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
            console.print(f"trial {trial.number}: {trial.state} {conf.metric} {value}  {status(study)}", soft_wrap=True)

    start_time = time.perf_counter()
    with progress:
        result = tuning.tune(conf, args.out, method=args.method, n_trials=args.trials, resume=args.resume,
                             n_workers=args.workers, backend=backend, address=args.address, device=args.device,
                             threads=args.threads, callback=trial_done, on_start=start)  # fmt: skip
    _print_table(console, result.table, title=f"{conf.name}: the best trials (validation {conf.metric})")
    console.print(result.notes, highlight=False)
    for path in result.paths.values():
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
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
        _print_table(console, _list_rows(what), title=what)
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
        _print_table(console, mine, title)
    console.print("steps_to_tol: the first step from which f - f_min stays below tol ('-': not within the budget).")
    return 0


def _cmd_template(args: argparse.Namespace, console: Console) -> int:
    from optreg import config

    sys.stdout.write(config.template())
    return 0


_COMMANDS = {
    "run": _cmd_run, "train": _cmd_train, "tune": _cmd_tune, "runs": _cmd_runs, "list": _cmd_list, "toy": _cmd_toy,
    "template": _cmd_template,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    help_parser = vars(args).pop("help_parser")
    if args.command is None or (args.command == "runs" and args.runs_command is None):
        help_parser.print_help()  # no command: the help, and the status of a usage error
        return EXIT_USAGE
    args.argv = ["optreg", *argv]
    return _dispatch(args)


def _width(stream: Any = None) -> int | None:
    """The width of a console on ``stream`` (default stdout): the terminal's; elsewhere ``$COLUMNS`` if set,
    else 120."""
    if (sys.stdout if stream is None else stream).isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 120


def _dispatch(args: argparse.Namespace) -> int:
    console = Console(width=_width(), highlight=False)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():  # optreg's warnings as one line each, like its errors
            default = warnings.showwarning

            def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
                if not issubclass(category, OptregWarning):
                    return default(message, category, *rest, **kw)
                print(f"optreg: warning: {message}", file=sys.stderr)

            warnings.showwarning = show
            return _COMMANDS[args.command](args, console)
    except OptregError as e:
        print(f"optreg: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("optreg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (``optreg runs export 1 --csv - | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
