"""The ``optreg`` command (also ``python -m optreg.cli``).

::

    optreg run NAME [--dataset D] [--out DIR] [--seeds N] [--epochs E] [--quick]   # a chapter experiment
    optreg train CONFIG.toml [--out DIR] [--set KEY=VALUE ...] [--seed S] [--epochs E] [--nproc N]   # TOML run
    optreg train --resume RUN [--epochs E]                                         # continue a stored run
    optreg runs list|show|compare|plot|export ...                                  # work with stored runs
    optreg template                                                                # an annotated config
    optreg tune CONFIG.toml --method M --trials N --out DIR [--resume] [--workers K --backend B]  # a search
    optreg list [experiments|optimizers|schedules|datasets|init|models]            # what is available
    optreg toy [--function quadratic|rosenbrock]                                   # optimizers on 2-D functions

Results go under ``--out`` (default ``runs``): ``<out>/runs.sqlite`` records every run, and each
invocation writes a new folder ``<out>/<name>/<invocation id>/`` with the figures (PNG), the table (CSV
and markdown) and ``metrics.csv`` (and, for ``train``, the checkpoints ``run-<id>/last.pt`` and
``best.pt``), so nothing earlier is ever replaced. Progress bars show on a terminal; elsewhere (CI, pipes)
one line per finished run. ``--out`` and ``--device`` are checked before any work.

Exit status: 0 done; 1 a trained run did not finish (``train``: it diverged); 2 a bad argument, config
or run reference (one line naming the key, the value and what is allowed); 130 interrupted (Ctrl-C: the
run is stored as ``interrupted`` and can be resumed).
"""

from __future__ import annotations

import argparse
import os
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
EXIT_UNFINISHED = 1
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
    r.add_argument("--dataset", default=None, help="digits (default), mnist1d, or a path (IDX dir, .npz, .csv)")
    r.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    r.add_argument("--seeds", type=_positive, default=None, help="number of seeds (default: the experiment's)")
    r.add_argument("--epochs", type=_positive, default=None, help="epochs per run (default: the experiment's)")
    r.add_argument("--quick", action="store_true", help="tiny settings: a smoke test in seconds")
    r.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    r.add_argument("--threads", type=_positive, default=1, help=THREADS_HELP)

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
    t.add_argument("--resume", metavar="RUN", help=f"continue this stored run instead ({RUN_HELP})")

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
    rsub = rs.add_subparsers(dest="runs_command", required=True, metavar="ACTION", parser_class=_Parser)

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

    show = rsub.add_parser("show", help="everything stored about runs", description="Show stored runs in full.")
    refs(show, "+")
    show.add_argument("--steps", action="store_true", help="also print every step record")

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
            command=args.argv,
        )
        try:
            result = experiments.run(args.name, ctx)
        finally:
            ctx.close()
    _show_result(console, result, time.perf_counter() - start)
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
    import warnings

    from optreg.errors import OptregWarning

    with warnings.catch_warnings():  # optreg's warnings as one line each, like its errors
        default = warnings.showwarning

        def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
            if not issubclass(category, OptregWarning):
                return default(message, category, *rest, **kw)
            print(f"optreg: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        return _train(args, console)


def _train(args: argparse.Namespace, console: Console) -> int:
    from optreg import config as cfg
    from optreg import experiments

    if (args.config is None) == (args.resume is None):
        raise OptregError("train: give a CONFIG file or --resume RUN (one of them)")
    if args.resume is not None and (args.set or args.seed is not None):
        raise OptregError("train: --set and --seed do not go with --resume (a resumed run keeps its config)")
    experiments.check_device(args.device, "train")
    if args.resume is None:
        experiments.check_out(args.out, "train")
        flags = [("train.seed", args.seed), ("train.epochs", args.epochs)]
        overrides = [*args.set, *((k, v) for k, v in flags if v is not None)]
        conf, out, resume = cfg.load(args.config, overrides), args.out, None
    else:
        conf, out, resume = _resume_config(args)
    if getattr(args, "nproc", 1) > 1:  # N processes train as one (optreg.train.distributed); rank 0 prints
        from optreg.train.distributed import launch

        return launch(_train_rank, args.nproc, args, threads=args.threads)[0]
    start = time.perf_counter()
    with _Reporter(console) as reporter:
        ctx = experiments.Context(
            out=out, progress=reporter, device=args.device, command=args.argv, checkpoints=True, resume=resume
        )
        try:
            ctx.begin("train", name=conf.name)
            result = cfg.run(conf, ctx)
            result.paths = experiments.save_result(result, ctx.output_folder(), ctx, overwrite=resume is not None)
            store = ctx.open_store()
            unfinished = [r for r in store.runs(ids=ctx.run_ids) if r["status"] != "finished"]
            place = store.path.parent
        finally:
            ctx.close()
    _show_result(console, result, time.perf_counter() - start)
    for run in unfinished:
        print(
            f"optreg: run {place}:{run['id']} ({run['label']}) {run['status']}; its records are stored: "
            f"optreg runs show {place}:{run['id']}",
            file=sys.stderr,
        )
    return EXIT_UNFINISHED if unfinished else 0


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
            console.print(_rich_table(rows, title=f"invocations in {ref.store}"))
            return 0
        runs = store.runs(args.experiment, status=args.status)
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
    console.print(_rich_table(rows, title=f"{len(rows)} run(s) in {ref.store}"))
    return 0


def _train_rank(args: argparse.Namespace) -> int:
    """One process of ``optreg train --nproc N``: the command itself, in the process group."""
    from optreg.train.distributed import rank

    if rank() != 0:
        sys.stdout = sys.stderr = open(os.devnull, "w")
    return _dispatch(argparse.Namespace(**{**vars(args), "nproc": 1}))


def _runs_show(args: argparse.Namespace, console: Console) -> int:
    import json

    selection = _Selection(args.runs, args.out)
    try:
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
            console.print(_rich_table(rows, title=f"run {run['id']}"), highlight=False)
            epochs = store.epochs(run["id"])
            if epochs:
                console.print(_rich_table(epochs, title=f"run {run['id']}: {len(epochs)} epoch(s)"))
            steps = store.steps(run["id"])
            if args.steps and steps:
                console.print(_rich_table(steps, title=f"run {run['id']}: {len(steps)} step(s)"))
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
    console.print(f"wrote {path}", highlight=False)


def _curve_panels(selection: _Selection, metrics: Sequence[str], smooth: int | None) -> list[Any]:
    """One :class:`~optreg.report.plots.Panel` per metric, one curve per run (per step or per epoch)."""
    import math

    from optreg.report.plots import Panel

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
        console.print(_rich_table(rows, title=f"{len(rows)} run(s); config columns: the keys that differ"))
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
            console.print(f"wrote {path} ({len(selection.runs)} run(s))", highlight=False)
    finally:
        selection.close()
    return 0


def _export(selection: _Selection, kind: str, fh: Any) -> None:
    """The selected runs to ``fh``: their metric rows as CSV, or the runs with their records as JSON."""
    import json

    from optreg.report.store import write_csv

    if kind == "csv":
        write_csv(fh, [row for store, run in selection.runs for row in store.metric_rows([run["id"]])])
        return
    records = [{"store": str(store.path), **store.export_records([run["id"]])[0]} for store, run in selection.runs]
    json.dump(records, fh, indent=1, default=str)
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
    args.argv = ["optreg", *argv]
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
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
    except BrokenPipeError:  # the reader of the output went away (``optreg runs export 1 --csv - | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
