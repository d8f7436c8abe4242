"""Tests of the ``optreg`` command line (optreg.cli).

Oracles: the files and store rows a command leaves behind; the registries (optreg.optim.available, ...)
for ``optreg list``; the toy table of optreg.experiments.optimizers for ``optreg toy``; exit statuses and
stderr for bad input (one line, status 2, no traceback).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from optreg import optim, schedules
from optreg.cli import main
from optreg.report.store import RunStore


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_list_shows_each_registry(capsys):
    assert main(["list", "optimizers"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in optim.available())
    assert main(["list", "schedules"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in schedules.available())
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading in ("experiments", "optimizers", "schedules", "datasets", "init", "models"):
        assert heading in out
    assert "optimizers-2d" in out and "digits" in out and "mnist1d" in out


def test_run_quick_writes_results_and_prints_the_table(tmp_path, capsys):
    assert main(["run", "batch-size", "--quick", "--out", str(tmp_path), "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "K = 1 (seed 0): finished" in out and "batch_size" in out and "done in" in out
    assert (tmp_path / "batch-size" / "figure-7.3.png").is_file()
    assert (tmp_path / "batch-size" / "metrics.csv").is_file()
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert len(store.runs("batch-size")) == 5


def test_train_runs_a_config(tmp_path, capsys):
    cfg = tmp_path / "mine.toml"
    cfg.write_text('[model]\nhidden = [8]\n[optimizer]\nname = "sgd"\nlr = 0.1\n[train]\nepochs = 1\n')
    assert main(["train", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert "mine (seed 0): finished" in capsys.readouterr().out
    for name in ("curves.png", "table.csv", "table.md", "metrics.csv"):
        assert (tmp_path / "out" / "mine" / name).is_file()
    with RunStore(tmp_path / "out" / "runs.sqlite") as store:
        (run,) = store.runs("train")
        assert run["status"] == "finished" and len(store.epochs(run["id"])) == 1


def test_toy_prints_each_optimizer(capsys):
    from optreg.experiments.optimizers import OPTIMIZERS, TOY_FUNCTIONS, toy_table

    assert main(["toy", "--function", "quadratic"]) == 0
    out = capsys.readouterr().out
    assert TOY_FUNCTIONS["quadratic"].formula in out
    rows, _ = toy_table(["quadratic"])
    for row in rows:
        line = next(ln for ln in out.splitlines() if f" {row['optimizer']} " in ln)
        assert f"{row['final_value']:.4g}" in line
    assert len([ln for ln in out.splitlines() if any(f" {o} " in ln for o in OPTIMIZERS)]) == len(OPTIMIZERS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope"], "experiment must be one of .*optimizers.*got 'nope'"),
        (["run", "optimizers", "--seeds", "0"], "argument --seeds: must be an integer >= 1, got '0'"),
        (["run", "optimizers", "--epochs", "x"], "argument --epochs: must be an integer >= 1, got 'x'"),
        (["run", "optimizers", "--dataset", "nowhere", "--quick"], "unknown dataset 'nowhere'"),
        (["run", "optimizers", "--device", "warp-drive"], "device must be a torch device"),
        (["list", "things"], "argument WHAT: invalid choice: 'things'"),
        (["train", "missing.toml"], "config: missing.toml: no such file"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_print_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = [*argv, "--out", str(tmp_path)] if argv[:1] == ["run"] else argv
    assert _status(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("optreg: error: ")
    assert re.search(message, line), line
    assert not (tmp_path / "runs.sqlite").exists()


def _status(argv: list[str]) -> int:
    """main's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def test_a_bad_config_exits_2_with_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\nhidden = [8]\n[optimizer]\nname = "adam"\nbetaa = 0.9\n')
    assert _status(["train", str(cfg), "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "optimizer.betaa = 0.9" in line and "allowed: lr, beta1, beta2" in line
    assert not (tmp_path / "out").exists()


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "optreg.cli", "run", "optimizers", "--seeds", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "optreg: error: argument --seeds: must be an integer >= 1, got '-3' (see optreg run --help)"
    )
    proc = subprocess.run([sys.executable, "-m", "optreg.cli", "list", "models"], capture_output=True, text=True)
    assert proc.returncode == 0 and "mlp" in proc.stdout


def test_unknown_command_points_at_the_top_level_help(capsys):
    assert _status(["frobnicate"]) == 2
    line = _error_line(capsys)
    assert line.startswith("optreg: error: argument COMMAND: invalid choice: 'frobnicate'")
    assert line.endswith("(see optreg --help)")
