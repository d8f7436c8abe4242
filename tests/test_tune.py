"""Tests of tuning a lab config (optreg.tuning) and of ``optreg tune`` (optreg.cli).

Oracles: ``optreg.train.run`` of the best config from scratch (it must give the stored best value, bit for
bit); a fresh ``train.run`` at each budget (a trial resumed from a smaller budget's checkpoint must give the
same value); ``tomllib`` (the TOML writer's output reads back as the document); random search's trials
(trial k's configuration depends only on the seed and k) for resumed and killed studies; the study file
read back through sqlite3; exit statuses and stderr for bad input.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from optreg import config as cfg
from optreg import hpo, train, tuning
from optreg.cli import main
from optreg.errors import ConfigError, OptregValueError

BASE = """
name = "tiny"

[data]
name = "digits"
seed = 0
val_fraction = 0.2

[model]
kind = "mlp"
hidden = [16]

[optimizer]
name = "adam"
lr = 1e-2

[train]
batch_size = 128
epochs = 3
seed = 0
"""

TUNE = """
[tune]
metric = "val_accuracy"
"optimizer.lr" = {float = [1e-3, 1e-1], log = true}
"model.hidden" = {categorical = [[8], [16, 8]]}
"""


def _write(tmp_path: Path, tune: str = TUNE, base: str = BASE, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(base + tune)
    return path


def _value_from_scratch(tc: tuning.TuneConfig, trial: hpo.Trial) -> float:
    """The oracle: the trial's config trained by train.run from scratch, its validation accuracy."""
    result = train.run(tc.apply(trial.params, trial.budget), None, seed=None)
    return result.history.epochs[-1]["val_accuracy"]


# ------------------------------------------------------------------------------------------ the [tune] table


def test_parse_builds_the_space_over_key_paths(tmp_path):
    tc = tuning.load(_write(tmp_path, TUNE + '"optimizer.name" = {categorical = ["adam", "sgd"]}\n'
                            '"optimizer.momentum" = {float = [0.0, 0.9], when = {"optimizer.name" = "sgd"}}\n'
                            '"train.batch_size" = {int = [32, 256], log = true}\n'))  # fmt: skip
    d = tc.space.dists
    assert d["optimizer.lr"] == hpo.Float(1e-3, 1e-1, log=True)
    assert d["model.hidden"] == hpo.Categorical(["[8]", "[16, 8]"])
    assert d["optimizer.momentum"] == hpo.Float(0.0, 0.9, when={"optimizer.name": "sgd"})
    assert d["train.batch_size"] == hpo.Int(32, 256, log=True)
    assert (tc.metric, tc.direction, tc.reduce) == ("val_accuracy", "maximize", "last")
    doc = tc.apply({"optimizer.lr": 0.01, "model.hidden": "[16, 8]", "optimizer.name": "sgd",
                    "optimizer.momentum": 0.5, "train.batch_size": 64}, budget=2)  # fmt: skip
    assert doc["model"]["hidden"] == [16, 8] and doc["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.5}
    assert doc["train"]["epochs"] == 2 and doc["train"]["batch_size"] == 64 and "tune" not in doc
    assert cfg.parse(doc).spec["model"]["hidden"] == [16, 8]


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ('"optimizer.lr" = {float = [1.0, 1e-4]}', "tune: optimizer.lr = {'float': [1.0, 0.0001]}: Float: high must "
                                                   "be greater than low = 1.0, got 0.0001"),
        ('"optimizer.lr" = {float = [0.1, 0.1]}', "Float: high must be greater than low = 0.1 (use hpo.Fixed"),
        ('"optimizer.lr" = {float = [0.0, 1.0], log = true}', "tune: optimizer.lr = {'float': [0.0, 1.0], 'log': "
                                                             "True}: Float: low must be > 0 on a log scale"),
        ('"train.batch_size" = {int = [16.5, 64]}', "tune: train.batch_size = {'int': [16.5, 64]}: Int: low must be "
                                                    "an integer, got 16.5"),
        ('"model.hidden" = {categorical = []}', "tune: model.hidden = {'categorical': []}: categorical must be a "
                                                "non-empty list"),
        ('"optimizer.lr" = {float = [1e-3, 1]}\n"optimizer.lr2" = 3', "tune: optimizer.lr2 = 3: must be a table"),
        ('"optimizer.lr" = {uniform = [1e-3, 1]}', "must name exactly one of float, int, categorical"),
        ('"optimizer.lr" = {float = [1e-3, 1], step = 2}', "unknown key 'step'; allowed: float, log, when"),
        ('"data.seed" = {int = [0, 3]}', "tune: data.seed = {'int': [0, 3]}: data cannot be searched"),
        ('"optimizer.betaa" = {float = [0.1, 0.9]}', "tune: every searched key at its first value (low end, first "
                                                     "choice) makes the config invalid: config: optimizer.betaa"),
        ('"optimizer.lr" = {float = [1e-3, 2.0]}\n"optimizer.beta1" = {float = [0.5, 1.5]}',
         "tune: optimizer.beta1 = 1.5 makes the config invalid: config: optimizer.beta1 = 1.5: must be in [0, 1)"),
        ('"optimizer.lr" = {float = [1e-3, 1], when = {"optimizer.name" = "sgd"}}',
         "when names an unknown parameter, got 'optimizer.name'"),
        ('metrc = "val_loss"\n"optimizer.lr" = {float = [1e-3, 1]}', "tune: metrc = 'val_loss': unknown setting"),
        ('metric = "test_accuracy"\n"optimizer.lr" = {float = [1e-3, 1]}',
         "tune: metric = 'test_accuracy': allowed: val_accuracy, val_loss (the best trial is chosen by validation)"),
        ('metric = "val_loss"\ndirection = "maximize"\n"optimizer.lr" = {float = [1e-3, 1]}',
         "tune: direction = 'maximize': val_loss is to minimize"),
        ('method = "smac"\n"optimizer.lr" = {float = [1e-3, 1]}', "tune: method = 'smac': allowed: grid, random"),
        ('trials = 0\n"optimizer.lr" = {float = [1e-3, 1]}', "tune: trials = 0: must be an integer >= 1"),
        ('metric = "val_loss"', "tune: [tune] names no searched key"),
    ],
)
def test_bad_tune_tables_name_the_key_path_and_the_value(tmp_path, tune, message):
    with pytest.raises(ConfigError) as info:
        tuning.load(_write(tmp_path, "\n[tune]\n" + tune + "\n"))
    assert message in str(info.value)


def test_bad_runs_of_tune_are_refused_before_any_trial(tmp_path):
    tc = tuning.load(_write(tmp_path, TUNE + '"train.epochs" = {int = [1, 3]}\n'))
    with pytest.raises(ConfigError, match=r"tune: train.epochs = 'searched': method 'hyperband' sets the epochs"):
        tuning.tune(tc, tmp_path / "o", method="hyperband")
    with pytest.raises(ConfigError, match=r"tune: method = 'smac': allowed: grid, random"):
        tuning.tune(tc, tmp_path / "o", method="smac")
    no_val = BASE.replace("val_fraction = 0.2", "val_fraction = 0.0")
    with pytest.raises(ConfigError, match=r"tune: data.val_fraction = 0.0: metric 'val_accuracy' needs a validation"):
        tuning.tune(tuning.load(_write(tmp_path, base=no_val, name="n.toml")), tmp_path / "n", n_trials=1)
    with pytest.raises(ConfigError, match=r"tune: method 'random' takes no option 'eta'"):
        tuning.tune(tuning.load(_write(tmp_path, TUNE + "[tune.random]\neta = 3\n", name="r.toml")), tmp_path / "r")
    assert not (tmp_path / "o" / "study.sqlite").exists() or not hpo.storage.stored_studies(tmp_path / "o/study.sqlite")


def test_the_toml_writer_reads_back_with_tomllib():
    doc = {"name": "x-best", "data": {"name": "digits", "seed": 0, "val_fraction": 0.2},
           "model": {"kind": "mlp", "hidden": [128, 64], "dropout": 0.12345678901234567, "skip": None},
           "optimizer": {"name": "sgd", "lr": 1e-05, "nesterov": True, "momentum": 0.9},
           "schedule": {"name": "step", "milestones": [10, 20], "lr": 3e-3},
           "train": {"epochs": 5, "early_stopping": {"monitor": "val_loss", "patience": 3}},
           "odd key": {"a b": "quote \" and \\ and é"}, "inline": [{"a": 1}, {"b": [1.5, -2.0]}]}  # fmt: skip
    text = tuning.dumps_toml(doc, "a header\nline two")
    assert text.startswith("# a header\n# line two\n")
    back = tomllib.loads(text)
    doc["model"].pop("skip")  # TOML has no None: left out
    assert back == doc
    example = Path(__file__).parent.parent / "examples" / "tune_digits.toml"
    document = tomllib.loads(example.read_text())
    assert tomllib.loads(tuning.dumps_toml(document)) == document


# ------------------------------------------------------------------------------------------ running studies


def test_tune_writes_a_best_toml_that_trains_to_the_best_value(tmp_path):
    tc = tuning.load(_write(tmp_path))
    result = tuning.tune(tc, tmp_path / "out", method="random", n_trials=3)
    study = hpo.Study(tc.space, method="random", direction="maximize", n_trials=3, seed=0)  # the same draws
    assert [t.params for t in result.trials] == [study.ask().params for _ in range(3)]
    for t in result.trials:
        assert t.state == "complete" and t.value == _value_from_scratch(tc, t)
        assert sorted(t.intermediate) == [1, 2, 3] and t.intermediate[3] == t.value
    best = cfg.load(tmp_path / "out" / "best.toml")
    assert best.name == "tiny-best"
    scratch = train.run(best.spec, None, seed=None)
    assert scratch.history.epochs[-1]["val_accuracy"] == result.best.value == max(t.value for t in result.trials)
    for name in ("study", "trials", "best", "history", "parallel", "curves"):
        assert result.paths[name].is_file(), name
    assert result.table[0]["trial"] == result.best.number and result.table[0]["val_accuracy"] == result.best.value
    lines = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("trial,state,val_accuracy,budget,epochs_trained") and len(lines) == 4


def test_halving_resumes_each_config_from_its_smaller_budget(tmp_path):
    """Each rung continues the config's checkpoint from the rung before; the value equals training that
    budget from scratch, and the epochs trained are the largest budget of each config, not the sum.
    Oracle: Algorithm 7.2's allocation r_t = floor(B / (|S_t| K)) = 16 // 8, 16 // 4, given as r_t *more* epochs
    (Jamieson & Talwalkar's cumulative R_t), so the epochs trained add up to exactly sum |S_t| r_t = B."""
    tc = tuning.load(_write(tmp_path, TUNE + "[tune.halving]\nbudget = 16\n"))
    result = tuning.tune(tc, tmp_path / "out", method="halving", n_trials=4)
    trials = result.trials
    assert [t.budget for t in trials] == [2, 2, 2, 2, 6, 6]  # R_1 = 2, R_2 = 2 + 4
    for t in trials:
        assert t.state == "complete" and t.value == _value_from_scratch(tc, t)
    resumed = [t for t in trials if t.meta["rung"] == 1]
    assert all(sorted(t.intermediate) == [3, 4, 5, 6] for t in resumed)  # only the new epochs were trained
    assert sum(len(t.intermediate) for t in trials) == 4 * 2 + 2 * 4 == 16
    assert len(list((tmp_path / "out" / "checkpoints").glob("*.pt"))) == 4
    assert result.paths["rungs"].is_file()
    best = cfg.load(result.paths["best"])
    assert best.epochs == 6 and result.best.budget == 6


def test_bohb_runs_hyperbands_pass_with_the_epochs_as_max_budget(tmp_path):
    """Oracle: tune's ``hyperband`` on the same config. One pass over the brackets of max_budget = train.epochs
    = 3, eta = 3 (Li et al.: (3, 1), (1, 3) and (2, 3)); with 6 trials no budget has N_min + 2 = 5 complete
    ones (d = 2), so BOHB draws what Hyperband does, and a resumed rung trains only its new epochs."""
    tc = tuning.load(_write(tmp_path))
    bohb = tuning.tune(tc, tmp_path / "b", method="bohb")
    hb = tuning.tune(tc, tmp_path / "h", method="hyperband")
    assert sorted(t.budget for t in bohb.trials) == [1, 1, 1, 3, 3, 3]
    assert [(t.params, t.budget, t.value) for t in bohb.trials] == [(t.params, t.budget, t.value) for t in hb.trials]
    assert bohb.paths["rungs"].is_file()


def test_median_stop_stops_trials_through_the_trainer(tmp_path):
    tune = TUNE.replace("[1e-3, 1e-1]", "[1e-4, 1e-1]") + "[tune.median-stop]\nn_startup = 2\n"
    tc = tuning.load(_write(tmp_path, tune))
    result = tuning.tune(tc, tmp_path / "out", method="median-stop", n_trials=8)
    trials = result.trials
    stopped = [t for t in trials if t.stopped is not None]
    assert stopped and all(len(t.intermediate) == t.stopped < 3 for t in stopped)
    assert all(t.value == t.intermediate[t.stopped] for t in stopped)
    assert result.best.stopped is None and "stopped early" in result.notes


def test_a_gp_study_draws_the_posterior_figure(tmp_path):
    tc = tuning.load(_write(tmp_path))
    result = tuning.tune(tc, tmp_path / "out", method="gp-ei", n_trials=5)
    assert result.paths["gp"].is_file() and len(result.trials) == 5


def test_diverging_trials_fail_with_their_error_and_the_study_goes_on(tmp_path):
    tune = '\n[tune]\n"optimizer.lr" = {float = [1e30, 1e32], log = true}\n'
    tc = tuning.load(_write(tmp_path, tune, base=BASE.replace('"adam"', '"sgd"')))
    result = tuning.tune(tc, tmp_path / "out", method="random", n_trials=2)
    assert [t.state for t in result.trials] == ["failed", "failed"]
    assert result.trials[0].error.startswith("DivergenceError: trainer: training diverged at step")
    assert result.best is None and "No trial completed" in result.notes and "best" not in result.paths


def test_resume_rules_and_a_changed_space(tmp_path):
    path = _write(tmp_path)
    tuning.tune(tuning.load(path), tmp_path / "out", n_trials=2)
    with pytest.raises(ConfigError, match=r"already holds study 'tiny' \(2 trials\); pass --resume"):
        tuning.tune(tuning.load(path), tmp_path / "out", n_trials=3)
    fresh = tuning.tune(tuning.load(path), tmp_path / "elsewhere", n_trials=1, resume=True)  # none yet: started
    assert len(fresh.trials) == 1
    changed = _write(tmp_path, TUNE.replace("1e-1]", "0.5]"), name="changed.toml")
    with pytest.raises(ConfigError, match=r"tune: study 'tiny' in '.*' exists with a different space"):
        tuning.tune(tuning.load(changed), tmp_path / "out", n_trials=3, resume=True)
    result = tuning.tune(tuning.load(path), tmp_path / "out", n_trials=3, resume=True)
    assert [t.number for t in result.trials] == [0, 1, 2]  # the two stored trials kept, one more run


def test_a_corrupt_or_foreign_study_file_is_refused_and_left_unchanged(tmp_path):
    tc = tuning.load(_write(tmp_path))
    for content in (b"not a database at all" * 50, None):
        out = tmp_path / ("corrupt" if content else "foreign")
        out.mkdir()
        if content:
            (out / "study.sqlite").write_bytes(content)
        else:
            with sqlite3.connect(out / "study.sqlite") as db:
                db.execute("CREATE TABLE mine (x)")
            db.close()
        before = (out / "study.sqlite").read_bytes()
        with pytest.raises(OptregValueError, match=r"hpo: '.*study.sqlite' is not an optreg study storage"):
            tuning.tune(tc, out, n_trials=1)
        assert (out / "study.sqlite").read_bytes() == before


# ------------------------------------------------------------------------------------------ the command line


def _error_line(capsys) -> str:
    """The one line a bad command prints on stderr (no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and not lines[0].startswith("Traceback"), lines
    return lines[0]


def test_optreg_tune_then_optreg_train_best_toml(tmp_path, capsys):
    path = _write(tmp_path)
    out = tmp_path / "out"
    assert main(["tune", str(path), "--method", "random", "--trials", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tiny: the best trials" in text and "trial 1: complete val_accuracy" in text and "best.toml" in text
    assert main(["train", str(out / "best.toml"), "--out", str(tmp_path / "runs")]) == 0
    assert "tiny-best" in capsys.readouterr().out
    assert main(["train", str(path), "--out", str(tmp_path / "runs")]) == 0  # optreg train ignores [tune]
    assert main(["tune", str(path), "--trials", "2", "--out", str(out)]) == 2
    assert "pass --resume to continue it" in _error_line(capsys)
    assert main(["tune", str(path), "--method", "smac", "--out", str(tmp_path / "x")]) == 2
    assert _error_line(capsys).startswith("optreg: error: tune: method = 'smac': allowed: grid, random")
    bad = _write(tmp_path, '\n[tune]\n"optimizer.lr" = {float = [0.0, 1.0], log = true}\n', name="bad.toml")
    assert main(["tune", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert "optimizer.lr" in _error_line(capsys)


def test_optreg_tune_checks_out_and_device_before_any_trial(tmp_path, capsys):
    """An --out that is a file, and a device this machine lacks (oracle: torch's is_available), are refused
    in one line before anything is written (they used to give a traceback, or 20 failed trials)."""
    import torch

    path = _write(tmp_path)
    (tmp_path / "file").write_text("x")
    assert main(["tune", str(path), "--trials", "2", "--out", str(tmp_path / "file")]) == 2
    assert "tune: out must be a folder, got the file" in _error_line(capsys)
    assert (tmp_path / "file").read_text() == "x"
    missing = next(d for d in ("xpu", "mps", "cuda") if not getattr(torch, d).is_available())
    assert main(["tune", str(path), "--trials", "2", "--device", missing, "--out", str(tmp_path / "o")]) == 2
    assert f"tune: device '{missing}' asked for, but {missing} is not available" in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def _trials_stored(path: Path) -> tuple[int, int]:
    """(trials, running trials) in the study file, read through sqlite3 (0, 0 before it exists)."""
    if not path.exists():
        return 0, 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            n, running = db.execute("SELECT COUNT(*), COALESCE(SUM(state = 'running'), 0) FROM trials").fetchone()
        db.close()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0, 0
    return n, running


@pytest.mark.slow
def test_optreg_tune_killed_at_random_moments_resumes_without_losing_or_repeating_trials(tmp_path):
    """SIGKILL the command three times at random moments once it has stored 3, 10 and 18 trials, then
    --resume to the end: every trial is there once, with random search's configuration for its number, and
    the trials a kill interrupted were run again."""
    import random

    path = _write(tmp_path, TUNE.replace("metric", "trials = 30\nmetric"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(tuning.__file__).parent.parent)}
    cmd = [sys.executable, "-m", "optreg.cli", "tune", str(path), "--out", str(out)]
    rng = random.Random(0)
    seen = []
    for attempt, target in enumerate((3, 10, 18)):
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 240
        # each process must make progress before it is killed: a kill before the resumed process re-claims the
        # interrupted trial would find the first kill's 'running' row again and count it twice
        target = max(target, seen[-1][0] + 1) if seen else target
        while _trials_stored(out / "study.sqlite")[0] < target and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        seen.append(_trials_stored(out / "study.sqlite"))
    assert [n for n, _ in seen] == sorted(n for n, _ in seen) and seen[-1][0] >= 18
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    tc = tuning.load(path)
    study = hpo.Study(tc.space, method="random", direction="maximize", n_trials=30, storage=out / "study.sqlite",
                      name="tiny")  # fmt: skip
    trials = study.trials
    fresh = hpo.Study(tc.space, method="random", direction="maximize", n_trials=30)
    assert [t.number for t in trials] == list(range(30)) and all(t.state == "complete" for t in trials)
    assert [t.params for t in trials] == [fresh.ask().params for _ in range(30)]
    # each kill that caught a trial running costs that trial one more attempt (a trial may be caught twice)
    assert sum(t.attempts - 1 for t in trials) == sum(running for _, running in seen), (
        [t.attempts for t in trials], seen)
    assert all(t.value == t.intermediate[3] for t in trials)
    study.close()


@pytest.mark.slow
def test_optreg_tune_with_two_worker_processes(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["tune", str(path), "--trials", "4", "--workers", "2", "--out", str(tmp_path / "o")]) == 0
    tc = tuning.load(path)
    study = hpo.Study(tc.space, method="random", direction="maximize", n_trials=4, storage=tmp_path / "o/study.sqlite",
                      name="tiny")  # fmt: skip
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.value == _value_from_scratch(tc, t) for t in study.trials)
    study.close()
