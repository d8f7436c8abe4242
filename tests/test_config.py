"""Tests of TOML run configs (optreg.config).

Oracles: the values written in the TOML text against the parsed Config and against what the run store
recorded; the components' own validation messages for bad values; the trainer's recorded learning rates
against the schedule's closed form (cosine).
"""

from __future__ import annotations

import math
import textwrap

import pytest

from optreg import config
from optreg.errors import ConfigError
from optreg.experiments import Context

GOOD = textwrap.dedent(
    """
    name = "tiny"
    [data]
    name = "digits"
    seed = 1
    val_fraction = 0.2
    [model]
    kind = "mlp"
    hidden = [16]
    [init]
    scheme = "he_normal"
    [optimizer]
    name = "adam"
    lr = 0.01
    beta2 = 0.99
    [schedule]
    name = "cosine"
    lr = 0.01
    total_steps = 24
    [train]
    batch_size = 32
    epochs = 2
    seed = 3
    clip_grad_norm = 5.0
    [train.early_stopping]
    monitor = "val_loss"
    patience = 4
    """
)


def _write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_config_parses_to_its_values(tmp_path):
    c = config.load(_write(tmp_path, GOOD))
    assert (c.name, c.dataset, c.data_seed, c.data_options) == ("tiny", "digits", 1, {"val_fraction": 0.2})
    assert c.model == {"kind": "mlp", "hidden": [16]}
    assert (c.optimizer, c.hparams) == ("adam", {"lr": 0.01, "beta2": 0.99})
    assert c.init == {"scheme": "he_normal"}
    assert (c.batch_size, c.epochs, c.seed, c.clip_grad_norm) == (32, 2, 3, 5.0)
    assert c.early_stopping == {"monitor": "val_loss", "patience": 4}
    assert c.step_schedule()(0) == pytest.approx(0.01)
    assert [type(cb).__name__ for cb in c.callbacks()] == ["EarlyStopping"]


def test_defaults_and_name_from_the_file(tmp_path):
    c = config.load(_write(tmp_path, '[model]\nhidden = [8]\n[optimizer]\nname = "sgd"\n', "mine.toml"))
    assert (c.name, c.dataset, c.batch_size, c.epochs, c.seed, c.schedule) == ("mine", "digits", 32, 10, 0, None)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("beta2 = 0.99", "betaa = 0.99"),
            "optimizer.betaa = 0.99: unknown hyperparameter of adam; allowed: lr",
        ),
        (("beta2 = 0.99", "beta2 = 1.5"), r"config: \[optimizer\] adam: beta2 must be in \[0, 1\), got 1.5"),
        (('name = "adam"', 'name = "adamm"'), "config: optimizer.name = 'adamm': allowed: adadelta"),
        (("epochs = 2", "epochs = 0"), "config: train.epochs = 0: must be an integer >= 1"),
        (("epochs = 2", 'epochs = "2"'), "config: train.epochs = '2': must be an integer"),
        (("epochs = 2", "epochs = true"), "config: train.epochs = True: must be an integer"),
        (("epochs = 2", "epoch = 2"), "config: train.epoch = 2: unknown key; allowed keys: batch_size, epochs"),
        (("patience = 4", "patience = -1"), r"\[train.early_stopping\] early_stopping: patience must be"),
        (("patience = 4", "patiense = 4"), "config: train.early_stopping.patiense = 4: unknown key"),
        (("val_fraction = 0.2", "val_fraction = 1.5"), r"config: data.val_fraction = 1.5: must be in \[0, 1\)"),
        (('name = "digits"', 'name = "mnist"'), "config: data.name = 'mnist': allowed: digits, mnist1d"),
        (("total_steps = 24", "total_step = 24"), r"config: \[schedule\] schedules.create: cosine got unknown"),
        (('scheme = "he_normal"', 'scheme = "he"'), "config: init.scheme = 'he': allowed:"),
        (('kind = "mlp"', 'kind = "mlpp"'), "config: model.kind = 'mlpp': allowed: mlp"),
        (('name = "tiny"', 'nmae = "tiny"'), "config: nmae = 'tiny': unknown key; allowed keys: name, data"),
        (('name = "tiny"', 'name = "../up"'), "config: name = '../up': must be letters, digits"),
        (
            ("clip_grad_norm = 5.0", "clip_grad_norm = -1.0"),
            "train.clip_grad_norm = -1.0: must be a number > 0",
        ),
    ],
)
def test_bad_entries_name_the_key_the_value_and_what_is_allowed(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ConfigError, match=message):
        config.load(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(_write(tmp_path, "[model\nkind = 1"))
    with pytest.raises(ConfigError, match=r"\[optimizer\] is required"):
        config.load(_write(tmp_path, "[model]\nkind = 'mlp'\n"))
    with pytest.raises(ConfigError, match="data.path = .*no such file or directory"):
        config.load(_write(tmp_path, GOOD.replace('name = "digits"', 'path = "nowhere/at/all"')))
    with pytest.raises(ConfigError, match="either data.name or data.path"):
        config.load(_write(tmp_path, GOOD.replace('name = "digits"', 'name = "digits"\npath = "x"')))


def test_run_trains_and_records_the_config(tmp_path):
    c = config.load(_write(tmp_path, GOOD))
    ctx = Context(out=tmp_path / "out", dataset=c.dataset, quick=True)
    result = config.run(c, ctx)
    (run,) = ctx.open_store().runs("train")
    assert run["label"] == "tiny" and run["seed"] == 3 and run["status"] == "finished"
    assert run["config"]["toml"]["optimizer"] == {"name": "adam", "lr": 0.01, "beta2": 0.99}
    assert run["config"]["clip_grad_norm"] == 5.0
    lrs = [s["lr"] for s in ctx.open_store().steps(run["id"])]
    assert len(lrs) == 2 * math.ceil(384 / 32)
    for t, lr in enumerate(lrs):  # the cosine schedule, closed form
        assert lr == pytest.approx(0.01 / 2 * (1 + math.cos(math.pi * min(t, 24) / 24)))
    assert result.table[0]["run"] == "tiny" and set(result.figures) == {"curves"}


def test_a_bad_model_spec_fails_before_any_run_is_recorded(tmp_path):
    c = config.load(_write(tmp_path, GOOD.replace("hidden = [16]", "hiden = [16]")))
    ctx = Context(out=tmp_path / "out", quick=True)
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        config.run(c, ctx)
    assert ctx.store is None or ctx.store.runs() == []


def test_reduce_on_plateau_becomes_a_callback(tmp_path):
    text = GOOD.replace('name = "cosine"\nlr = 0.01\ntotal_steps = 24', 'name = "reduce_on_plateau"\npatience = 0')
    c = config.load(_write(tmp_path, text))
    assert c.step_schedule() is None
    assert [type(cb).__name__ for cb in c.callbacks()] == ["EarlyStopping", "ReduceLROnPlateau"]
    bad = GOOD.replace('name = "cosine"\nlr = 0.01\ntotal_steps = 24', 'name = "reduce_on_plateau"\npatiense = 0')
    with pytest.raises(ConfigError, match="schedule.patiense = 0: unknown option of reduce_on_plateau"):
        config.load(_write(tmp_path, bad))


def test_shipped_examples_are_valid_configs():
    """Every TOML under examples/ loads and passes the schema (the README points newcomers at them)."""
    from pathlib import Path

    from optreg import config as cfg

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        loaded = cfg.load(path)
        assert loaded.optimizer and loaded.model


def test_run_trains_on_the_configs_dataset_not_the_contexts(tmp_path):
    """The config names the data; a Context made for another dataset (digits by default) must not win."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)).astype(np.float32), np.arange(120) % 3
    np.savez(tmp_path / "own.npz", x=x, y=y)
    text = GOOD.replace('name = "digits"', f'path = "{(tmp_path / "own.npz").as_posix()}"')
    c = config.load(_write(tmp_path, text))
    ctx = Context(out=tmp_path / "out", quick=True)  # dataset: the default, digits
    config.run(c, ctx)
    (run,) = ctx.open_store().runs("train")
    assert run["config"]["dataset"] == "own"  # the file stem, as optreg.data names a user file
