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
import torch

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
    folder = tmp_path / "batch-size" / "1"
    assert (folder / "figure-7.3.png").is_file() and f"wrote {folder / 'metrics.csv'}" in out
    with RunStore(tmp_path / "runs.sqlite") as store:
        runs = store.runs("batch-size")
        assert len(runs) == 5 and {r["invocation"] for r in runs} == {1}
        assert store.invocation(1)["command"] == ["optreg", "run", "batch-size", "--quick", "--out", str(tmp_path),
                                                  "--seeds", "1"]  # fmt: skip
        assert all(r["environment"]["command"] == store.invocation(1)["command"] for r in runs)


def test_train_runs_a_config(tmp_path, capsys):
    cfg = tmp_path / "mine.toml"
    cfg.write_text('[model]\nhidden = [8]\n[optimizer]\nname = "sgd"\nlr = 0.1\n[train]\nepochs = 1\n')
    assert main(["train", str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert "mine (seed 0): finished" in capsys.readouterr().out
    for name in ("curves.png", "table.csv", "table.md", "metrics.csv", "run-1/last.pt", "run-1/best.pt"):
        assert (tmp_path / "out" / "mine" / "1" / name).is_file()
    with RunStore(tmp_path / "out" / "runs.sqlite") as store:
        (run,) = store.runs("train")
        assert run["status"] == "finished" and len(store.epochs(run["id"])) == 1
        assert run["summary"]["checkpoints"] == {"last": "mine/1/run-1/last.pt", "best": "mine/1/run-1/best.pt"}
    state = torch.load(tmp_path / "out" / "mine" / "1" / "run-1" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["optimizer"]["param_groups"][0]["lr"] == 0.1


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


# ------------------------------------------------------------------------- results never lost, stored runs

TINY = '[model]\nhidden = [8]\n[optimizer]\nname = "sgd"\nlr = {lr}\n[train]\nepochs = {epochs}\n'


def _config(folder, name="mine", lr=0.1, epochs=1):
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(lr=lr, epochs=epochs))
    return str(path)


def test_a_second_train_gets_its_own_folder_and_the_first_is_kept(tmp_path, capsys):
    cfg, out = _config(tmp_path), tmp_path / "out"
    assert main(["train", cfg, "--out", str(out)]) == 0
    first = {p: p.read_bytes() for p in (out / "mine" / "1").rglob("*") if p.is_file()}
    assert main(["train", cfg, "--out", str(out)]) == 0
    assert "wrote " + str(out / "mine" / "2" / "curves.png") in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (out / "mine" / "1").rglob("*") if p.is_file()} == first
    with RunStore(out / "runs.sqlite") as store:
        assert [(r["id"], r["invocation"]) for r in store.runs()] == [(1, 1), (2, 2)]


@pytest.mark.parametrize("command", [["run", "optimizers-2d"], ["run", "optimizers", "--quick"], ["train", "CFG"]])
def test_an_out_that_is_a_file_exits_2_before_any_work(tmp_path, capsys, command):
    (tmp_path / "file").write_text("x")
    argv = [_config(tmp_path) if a == "CFG" else a for a in command]
    for out, message in (
        (tmp_path / "file", "out must be a folder, got the file"),
        (tmp_path / "file" / "x", "is a file"),
    ):
        assert _status([*argv, "--out", str(out)]) == 2
        assert message in _error_line(capsys)
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cuda:99"])
@pytest.mark.parametrize("command", [["run", "optimizers", "--quick"], ["train", "CFG"]])
def test_an_unusable_device_exits_2_and_records_nothing(tmp_path, capsys, command, device):
    argv = [_config(tmp_path) if a == "CFG" else a for a in command]
    assert _status([*argv, "--out", str(tmp_path / "out"), "--device", device]) == 2
    assert "device" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_diverged_train_exits_1_with_a_command_line_hint(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", _config(tmp_path, "boom", lr=1e30), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert ".history" not in captured.out + captured.err and "boom (seed 0): diverged" in captured.out
    assert captured.err.strip() == (
        f"optreg: run {out}:1 (boom) diverged; its records are stored: optreg runs show {out}:1"
    )
    with RunStore(out / "runs.sqlite") as store:
        assert store.run(1)["status"] == "diverged"


def test_optimizers_2d_refuses_what_it_does_not_use(tmp_path, capsys):
    for option in (["--epochs", "3"], ["--seeds", "2"], ["--dataset", "mnist1d"]):
        assert _status(["run", "optimizers-2d", "--out", str(tmp_path), *option]) == 2
        assert "optimizers-2d does not take" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """An output folder with two finished `optreg train` runs that differ in their lr (ids 1 and 2)."""
    folder = tmp_path_factory.mktemp("stored")
    for lr in (0.1, 0.3):
        assert main(["train", _config(folder, f"lr{lr}", lr=lr, epochs=2), "--out", str(folder / "out")]) == 0
    return folder / "out"


def test_runs_list_and_show(two_runs, capsys):
    assert main(["runs", "list", str(two_runs)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s)" in out and out.count("finished") == 2 and "lr0.1" in out and "lr0.3" in out
    assert main(["runs", "show", f"{two_runs}:2"]) == 0
    out = capsys.readouterr().out
    assert '"lr": 0.3' in out and "2 epoch(s)" in out and '"threads"' in out and "lr0.3" in out
    assert main(["runs", "list", "--out", str(two_runs), "--invocations"]) == 0
    assert "optreg train" in capsys.readouterr().out


def test_runs_compare_draws_a_figure_and_never_replaces_a_file(two_runs, capsys):
    png = two_runs / "compare-1-2.png"
    assert main(["runs", "compare", "1", "2", "--out", str(two_runs)]) == 0
    out = capsys.readouterr().out
    assert "hparams.lr" in out and "0.3" in out and f"wrote {png}" in out  # the config key that differs
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png.write_bytes(b"keep me")
    assert _status(["runs", "compare", f"{two_runs}:1-2"]) == 2
    assert "exists; pass --overwrite" in _error_line(capsys) and png.read_bytes() == b"keep me"
    assert main(["runs", "compare", f"{two_runs}:all", "--overwrite"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_runs_plot_draws_the_chosen_metrics(two_runs, tmp_path, capsys):
    png = tmp_path / "lr.png"
    assert main(["runs", "plot", f"{two_runs}:1,2", "--metric", "lr", "--metric", "val_loss", "--png", str(png)]) == 0
    assert png.stat().st_size > 5_000 and f"wrote {png}" in capsys.readouterr().out


def test_runs_export_matches_the_store(two_runs, tmp_path, capsys):
    """Oracle: the store's own rows, read back through the csv and json modules."""
    import csv
    import json

    path, js = tmp_path / "m.csv", tmp_path / "runs.json"
    assert main(["runs", "export", f"{two_runs}:2", "--csv", str(path), "--json", str(js)]) == 0
    with RunStore(two_runs / "runs.sqlite") as store:
        expected = store.metric_rows([2])
        run = store.run(2)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(expected) and float(rows[0]["loss"]) == expected[0]["loss"]
    (record,) = json.loads(js.read_text())
    assert record["id"] == 2 and record["config"] == run["config"] and len(record["epochs"]) == 2
    before = path.read_bytes()
    assert _status(["runs", "export", f"{two_runs}:1", "--csv", str(path)]) == 2
    assert "exists" in _error_line(capsys) and path.read_bytes() == before
    assert main(["runs", "export", f"{two_runs}:1", "--csv", "-"]) == 0
    assert capsys.readouterr().out.startswith("run_id,experiment,label")


@pytest.mark.parametrize(
    ("ref", "message"),
    [("99", "has no run with id 99"), ("nowhere:1", "no run store at 'nowhere/runs.sqlite'"), ("@7", "names no run")],
)
def test_a_bad_run_reference_exits_2(two_runs, capsys, ref, message):
    assert _status(["runs", "show", ref, "--out", str(two_runs)]) == 2
    assert message in _error_line(capsys)


def test_train_resume_continues_a_finished_run_exactly(tmp_path, capsys):
    """Oracle: the same config trained for 3 epochs in one go; the 1-epoch run resumed to 3 epochs ends with
    the same weights and optimizer state, bit for bit, and the same records."""
    out, whole = tmp_path / "out", tmp_path / "whole"
    assert main(["train", _config(tmp_path, "r", epochs=1), "--out", str(out)]) == 0
    assert _status(["train", "--resume", f"{out}:1"]) == 2
    assert "it has trained all 1 epochs" in _error_line(capsys)
    assert main(["train", "--resume", f"{out}:1", "--epochs", "3"]) == 0
    assert main(["train", _config(tmp_path / "..", "r", epochs=3), "--out", str(whole)]) == 0
    a = torch.load(out / "r" / "1" / "run-1" / "last.pt", weights_only=True)
    b = torch.load(whole / "r" / "1" / "run-1" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(
        torch.equal(x, y) for s, t in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())
        for x, y in zip(s.values(), t.values()) if isinstance(x, torch.Tensor)
    )  # fmt: skip
    with RunStore(out / "runs.sqlite") as s1, RunStore(whole / "runs.sqlite") as s2:
        assert s1.steps(1) == s2.steps(1)
        run = s1.run(1)
        assert run["status"] == "finished" and run["environment"]["resumes"][0]["before"]["summary"]["epochs"] == 1
        # what the run trained is what its config says (oracle: the run trained in one go), the old kept
        assert run["config"]["epochs"] == run["config"]["spec"]["train"]["epochs"] == s2.run(1)["config"]["epochs"]
        assert run["config"]["spec"] == s2.run(1)["config"]["spec"]
        assert run["environment"]["resumes"][0]["before"]["config"]["epochs"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train"], "give a CONFIG file or --resume RUN"),
        (["train", "CFG", "--resume", "1"], "give a CONFIG file or --resume RUN"),
        (["train", "--resume", "OUT:1", "--set", "optimizer.lr=1"], "and --n-classes do not go with --resume"),
        (["train", "--resume", "OUT:1"], "only `optreg train` runs resume"),
    ],
)
def test_train_resume_refuses_what_it_cannot_continue(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with RunStore(out / "runs.sqlite") as store:
        store.finish_run(store.start_run("optimizers", "adam", seed=0), "interrupted")
    argv = [_config(tmp_path) if a == "CFG" else a.replace("OUT", str(out)) for a in argv]
    assert _status(argv) == 2
    assert message in _error_line(capsys)
