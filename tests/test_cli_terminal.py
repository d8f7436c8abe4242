"""Tests of what the ``optreg`` command shows on a terminal (optreg.cli): the version, the help, errors that
point to the right help, the overall progress, ``--quiet`` and ``--json``, tables that fit 80 columns.

Oracles: ``optreg.__version__``; argparse's own help text; the run store's rows (RunStore) for what the JSON
summary and the progress lines report; the files on disk for the paths printed; the table values
themselves (formatted by optreg.report.tables.cell_text) for the tables printed at 80 columns; the CSV file
written for ``--n-classes``.
"""

from __future__ import annotations

import csv
import json
import re
import runpy
import sys
from pathlib import Path

import pytest

import optreg
from optreg import cli
from optreg.cli import main
from optreg.report.store import RunStore
from optreg.report.tables import cell_text

TINY = '[model]\nhidden = [8]\n[optimizer]\nname = "sgd"\nlr = {lr}\n[train]\nepochs = 1\n'


def _config(folder: Path, name: str = "mine", lr: float = 0.1) -> str:
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(lr=lr))
    return str(path)


def _status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


# ------------------------------------------------------------------------------- version, help, errors


def test_version_prints_the_package_version(capsys):
    assert _status(["--version"]) == 0
    assert capsys.readouterr().out == f"optreg {optreg.__version__}\n"


def test_python_dash_m_optreg_is_the_command(monkeypatch, capsys):
    """``python -m optreg`` runs optreg/__main__.py as ``__main__`` (runpy, as the interpreter does)."""
    monkeypatch.setattr(sys, "argv", ["optreg", "--version"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("optreg", run_name="__main__")
    assert exit_.value.code == 0 and capsys.readouterr().out == f"optreg {optreg.__version__}\n"
    monkeypatch.setattr(sys, "argv", ["optreg", "list", "models"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("optreg", run_name="__main__")
    assert exit_.value.code == 0 and "mlp" in capsys.readouterr().out


def test_bare_optreg_prints_the_help_and_exits_2(capsys):
    """No command: argparse's full help (the oracle: the parser's own format_help) on stdout, status 2."""
    assert _status([]) == 2
    captured = capsys.readouterr()
    assert captured.out == cli._parser().format_help() and captured.err == ""
    for command in ("run", "train", "runs", "tune", "list", "toy", "template"):
        assert re.search(rf"^\s+{command}\s", captured.out, re.MULTILINE), command
    assert _status(["runs"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: optreg runs") and all(a in out for a in ("list", "show", "compare", "export"))


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run", "--frob"], "run"),  # before the required NAME: the unknown option is the error named
        (["run", "optimizers", "--frob"], "run"),
        (["train", "CFG", "--frob"], "train"),
        (["runs", "list", "--frob"], "runs list"),
        (["runs", "show", "--frob"], "runs show"),
        (["list", "optimizers", "--frob=3"], "list"),
    ],
)
def test_an_unknown_option_points_to_its_commands_help(tmp_path, capsys, monkeypatch, argv, command):
    argv = [_config(tmp_path) if a == "CFG" else a for a in argv]
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    assert _status(argv) == 2
    option = next(a for a in argv if a.startswith("--frob"))
    assert _one_error_line(capsys) == f"optreg: error: unrecognized argument {option} (see optreg {command} --help)"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["mine.toml"] if "train" in argv else [])


def test_a_misspelt_option_gets_a_suggestion(tmp_path, capsys):
    assert _status(["run", "optimizers", "--sedes", "2", "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert line == "optreg: error: unrecognized argument --sedes; did you mean --seeds? (see optreg run --help)"
    assert _status(["list", "optimizers", "extra"]) == 2
    assert _one_error_line(capsys) == "optreg: error: unexpected argument extra (see optreg list --help)"


# ------------------------------------------------------------------------------- progress, quiet, json


def test_time_left_scales_the_time_so_far(monkeypatch):
    """Closed form: after a fraction f of the work in t seconds, t (1 - f) / f are left; a run under way
    counts with the fraction of its steps done."""
    import io

    from rich.console import Console

    now = [0.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    reporter = cli._Reporter(Console(file=io.StringIO(), force_terminal=False))
    reporter("plan", {"runs": 4})
    reporter("start", {"label": "a", "seed": 0, "epochs": 1, "steps_per_epoch": 10})
    now[0] = 10.0
    reporter("end", {"label": "a", "seed": 0, "status": "finished", "summary": {"seconds": 10.0}})
    assert reporter.left() == "about 30s left" and reporter._position() == "run 1/4"
    reporter.fraction[("b", 0)] = 0.5  # half of the second run done at t = 30: 1.5 of 4 runs in 30 s
    now[0] = 30.0
    assert reporter.left() == f"about {round(30 * 2.5 / 1.5)}s left"


def test_json_summary_parses_and_names_the_result_files(tmp_path, capsys):
    """Oracle: the store's rows and the files on disk. The progress goes to standard error: off a terminal,
    one line per finished run, ``run k/N: label (seed s): status``, N the runs the experiment announced."""
    assert main(["run", "batch-size", "--quick", "--seeds", "1", "--out", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # standard output holds the JSON and nothing else
    assert summary["exit_status"] == 0 and summary["experiment"] == "batch-size"
    folder = tmp_path / "batch-size" / "1"
    assert Path(summary["folder"]) == folder and summary["invocation"] == 1
    assert set(summary["files"]) == {"figure-7.3", "table.csv", "claims.csv", "table.md", "metrics.csv"}
    assert all(Path(p).is_file() and Path(p).parent == folder for p in summary["files"].values())
    with open(folder / "claims.csv", newline="") as fh:  # the claims, as the experiment saved them
        assert summary["claims"] == list(csv.DictReader(fh)) and len(summary["claims"]) == 2
    with RunStore(tmp_path / "runs.sqlite") as store:
        runs = store.runs()
    assert [(r["id"], r["label"], r["status"]) for r in summary["runs"]] == [
        (r["id"], r["label"], r["status"]) for r in runs
    ]
    assert [r["summary"] for r in summary["runs"]] == [r["summary"] for r in runs]
    assert [row["batch_size"] for row in summary["table"]] == [1, 8, 32, 128, 384]
    lines = [ln for ln in captured.err.splitlines() if re.match(r"run \d+/\d+: ", ln)]
    assert len(lines) == len(runs) == 5
    for k, (line, run) in enumerate(zip(lines, runs), start=1):
        assert line.startswith(f"run {k}/5: {run['label']} (seed {run['seed']}): {run['status']}")
    assert "left" in lines[0] and "left" not in lines[-1]  # the time left, while some is


def test_json_of_a_diverged_train_exits_1(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", _config(tmp_path, "boom", lr=1e30), "--out", str(out), "--json", "--quiet"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["exit_status"] == 1 and [r["status"] for r in summary["runs"]] == ["diverged"]
    assert summary["table"][0]["status"] == "diverged" and summary["runs"][0]["error"]
    hint = f"optreg: run {out}:1 (boom) diverged; its records are stored: optreg runs show {out}:1"
    assert captured.err.strip() == hint


def test_quiet_prints_only_the_paths_written(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", _config(tmp_path), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    folder = out / "mine" / "1"
    assert sorted(printed) == sorted(str(p) for p in folder.iterdir() if p.is_file())  # the oracle: the folder
    assert captured.err == ""


def test_runs_list_and_show_json_match_the_store(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", _config(tmp_path), "--out", str(out), "--quiet"]) == 0
    with RunStore(out / "runs.sqlite") as store:  # a second run, recorded directly
        inv = store.start_invocation("demo", "demo", command=["demo"])
        store.finish_run(store.start_run("demo", "b", seed=3, config={"hparams": {"lr": 0.2}}, invocation=inv))
    capsys.readouterr()
    assert main(["runs", "list", str(out), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    with RunStore(out / "runs.sqlite") as store:
        runs = store.runs()
        epochs = store.epochs(1)
    assert [r["id"] for r in listed] == [r["id"] for r in runs] == [1, 2]
    assert [r["config"]["hparams"]["lr"] for r in listed] == [r["config"]["hparams"]["lr"] for r in runs]
    assert main(["runs", "list", str(out), "--json", "--invocations"]) == 0
    assert [inv["runs"] for inv in json.loads(capsys.readouterr().out)] == [[1], [2]]
    assert main(["runs", "show", f"{out}:1", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["id"] == 1 and shown["epochs"] == epochs and len(epochs) == 1 and "steps" not in shown


# ------------------------------------------------------------------------------------- tables, 80 columns


def _cells_intact(out: str, values: list[object]) -> None:
    """Every value's printed text is whole on one line of ``out`` (a number split across lines is not)."""
    tokens = {t for line in out.splitlines() for t in re.split(r"[\s│┃]+", line) if t}
    for value in values:
        for token in cell_text(value).split():
            assert token in tokens, (token, out)


def test_tables_fit_80_columns_without_splitting_a_number(tmp_path, capsys, monkeypatch):
    """``runs list`` (11 columns) and ``toy`` at COLUMNS=80: no line over 80 characters, and every number
    of the store's rows (the oracle) printed whole."""
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "out"
    with RunStore(out / "runs.sqlite") as store:  # runs with awkward numbers, recorded directly
        inv = store.start_invocation("demo", "demo", command=["demo"])
        for i, (loss, acc) in enumerate([(0.123456789, 0.987654321), (12345.678, 1e-7), (2.5e-12, 0.5)]):
            run = store.start_run("an-experiment-name", f"natural_exponential-{i}", seed=10**6 + i, invocation=inv)
            summary = {"final_train_loss": loss, "final_val_accuracy": acc, "test_accuracy": acc / 3, "seconds": 1e4}
            store.finish_run(run, summary=summary)
    assert main(["runs", "list", str(out)]) == 0
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80
    with RunStore(out / "runs.sqlite") as store:
        runs = store.runs()
    values = [v for r in runs for v in (r["id"], r["seed"], r["summary"]["final_train_loss"],
                                        r["summary"]["final_val_accuracy"], r["summary"]["test_accuracy"])]  # fmt: skip
    _cells_intact(printed, values)
    assert main(["toy", "--function", "quadratic"]) == 0
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80
    from optreg.experiments.optimizers import toy_table

    rows, _ = toy_table(["quadratic"])
    _cells_intact(printed, [v for r in rows for k, v in r.items() if k not in ("function", "diverged")])


def test_a_run_ends_with_its_claims_table_in_80_columns(tmp_path, capsys, monkeypatch):
    """``optreg run`` prints the table, the notes, then the claims table (claim, measured, verdict), at
    COLUMNS=80 in lines of at most 80 characters with every word of every claim row whole. Oracle: the rows of
    the claims.csv it wrote."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["run", "batch-size", "--quick", "--seeds", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    with open(tmp_path / "batch-size" / "1" / "claims.csv", newline="") as fh:
        claims = list(csv.DictReader(fh))
    start = printed.index("\nClaims\n")
    assert printed.index("train_loss_sd: the standard deviation") < start < printed.index("wrote ")
    shown = printed[start : printed.index("wrote ")]  # the claims table (then the files' paths, never wrapped)
    assert max(len(line) for line in shown.splitlines()) <= 80
    header = shown.splitlines()[3]
    assert [h for h in re.split(r"[\s┃]+", header) if h] == ["claim", "measured", "verdict"]
    _cells_intact(shown, [v for row in claims for v in row.values()])


# ------------------------------------------------------------------------------------------- n_classes


def test_run_takes_n_classes(tmp_path, capsys):
    """Oracle: the labels written to the CSV file."""
    data = tmp_path / "three.csv"
    rows = [f"{i % 7},{(i * 3) % 5},{i % 3}" for i in range(60)]
    data.write_text("\n".join(rows) + "\n7,7,7\n")  # one label 7: a typo the loader must catch
    argv = ["run", "batch-size", "--quick", "--dataset", str(data), "--out", str(tmp_path / "out")]
    assert _status([*argv, "--n-classes", "3"]) == 2
    assert "out of range for n_classes = 3" in _one_error_line(capsys)
    assert not (tmp_path / "out" / "runs.sqlite").exists()
    data.write_text("\n".join(rows) + "\n")
    assert main([*argv, "--n-classes", "4", "--seeds", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("optreg: warning: ") and "1 of n_classes = 4 classes have no example" in err
    with RunStore(tmp_path / "out" / "runs.sqlite") as store:
        run = store.runs()[0]
    assert run["config"]["model"]["out_features"] == 4
    assert run["environment"]["data"]["options"]["n_classes"] == 4
    assert _status(["run", "optimizers-2d", "--n-classes", "3", "--out", str(tmp_path / "o2")]) == 2
    assert "optimizers-2d does not take n_classes" in _one_error_line(capsys)


def test_a_diverged_runs_figure_says_so(tmp_path):
    """Oracle: the stored run's step records (the updates before the divergence)."""
    from optreg import config as cfg
    from optreg import experiments

    conf = cfg.load(_config(tmp_path, "boom", lr=1e30))
    ctx = experiments.Context(out=tmp_path / "out")
    try:
        ctx.begin("train", name=conf.name)
        result = cfg.run(conf, ctx)
        steps = ctx.open_store().steps(ctx.run_ids[0])
    finally:
        ctx.close()
    for ax in result.figures["curves"].axes:
        if ax.get_visible():
            assert f"the run diverged after {len(steps)} updates" in ax.get_title()
    selection = cli._Selection(["1"], tmp_path / "out")  # `optreg runs plot / compare` of that run
    try:
        panels = cli._curve_panels(selection, ["loss", "train_loss"], None)
    finally:
        selection.close()
    assert all(p.note == "not finished: #1 boom (seed 0) diverged" for p in panels)
