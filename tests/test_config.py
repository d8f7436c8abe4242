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
        (("beta2 = 0.99", "beta2 = 1.5"), r"^config: optimizer.beta2 = 1.5: must be in \[0, 1\)$"),
        (('name = "adam"', 'name = "adamm"'), 'config: optimizer.name = "adamm": allowed: adadelta'),
        (("epochs = 2", "epochs = 0"), "config: train.epochs = 0: must be an integer >= 1"),
        (("epochs = 2", 'epochs = "2"'), 'config: train.epochs = "2": must be an integer'),
        (("epochs = 2", "epochs = true"), "config: train.epochs = true: must be an integer"),
        (("epochs = 2", "epoch = 2"), "config: train.epoch = 2: unknown key; allowed keys: batch_size, epochs"),
        (("patience = 4", "patience = -1"), "config: train.early_stopping.patience = -1: must be an integer >= 0"),
        (("patience = 4", "patiense = 4"), "config: train.early_stopping.patiense = 4: unknown key"),
        (("val_fraction = 0.2", "val_fraction = 1.5"), r"config: data.val_fraction = 1.5: must be in \[0, 1\)"),
        (('name = "digits"', 'name = "mnist"'), 'config: data.name = "mnist": allowed: digits, mnist1d'),
        (("total_steps = 24", "total_step = 24"), "schedule.total_step = 24: unknown option of cosine; allowed: lr"),
        (('scheme = "he_normal"', 'scheme = "he"'), 'config: init.scheme = "he": allowed:'),
        (('kind = "mlp"', 'kind = "mlpp"'), 'config: model.kind = "mlpp": allowed: mlp'),
        (('name = "tiny"', 'nmae = "tiny"'), 'config: nmae = "tiny": unknown key; allowed keys: name, data'),
        (('name = "tiny"', 'name = "../up"'), "config: name = '../up': must be letters, digits"),
        (
            ("clip_grad_norm = 5.0", "clip_grad_norm = -1.0"),
            "train.clip_grad_norm = -1.0: must be a number > 0",
        ),
        (("lr = 0.01\ntotal_steps", "lr = 0.02\ntotal_steps"), "schedule.lr = 0.02 and optimizer.lr = 0.01 differ"),
        (("hidden = [16]", "hidden = [16]\nstride = 2"), "config: model.stride = 2: unknown key for kind mlp"),
        (("hidden = [16]", "hidden = [16]\nresidual = 1"), "config: model.residual = 1: must be true or false"),
        (("val_fraction = 0.2", "val_fraction = 0.0"), 'train.early_stopping.monitor = "val_loss": there is no'),
        (('name = "digits"', 'name = "mnist1d"\ntest_fraction = 0.3'), "data.test_fraction = 0.3: does not apply"),
        (("epochs = 2", "epochs = 2\nsteps = 30"), "config: train.steps = 30: give train.epochs or train.steps"),
        (
            ('name = "cosine"\nlr = 0.01\ntotal_steps = 24', 'name = "step_decay"'),
            "config: schedule.step_size is required for step_decay; allowed: lr, step_size, gamma",
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


def test_a_bad_model_spec_fails_at_load_before_any_data(tmp_path, monkeypatch):
    """The whole config is checked before any data are loaded or generated (oracle: optreg.data.load is
    never called)."""
    from optreg import data

    def no_load(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr(data, "load", no_load)
    text = GOOD.replace('name = "digits"', 'name = "mnist1d"').replace("hidden = [16]", "hiden = [16]")
    with pytest.raises(ConfigError, match=r"config: model.hiden = \[16\]: unknown key for kind mlp"):
        config.load(_write(tmp_path, text))


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


# ---------------------------------------------------------------- paths, overrides, the template
def test_a_relative_data_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    """Oracle: the file next to the config, read from another current folder; a --set path is the
    command line's, relative to the current folder."""
    import numpy as np

    (tmp_path / "cfg" / "data").mkdir(parents=True)
    np.savez(tmp_path / "cfg" / "data" / "own.npz", x=np.zeros((30, 2), np.float32), y=np.arange(30) % 3)
    path = _write(tmp_path / "cfg", '[data]\npath = "data/own.npz"\n[model]\n[optimizer]\nname = "sgd"\n')
    monkeypatch.chdir(tmp_path)
    c = config.load(path)
    assert c.dataset == str((tmp_path / "cfg" / "data" / "own.npz").resolve())
    with pytest.raises(ConfigError, match='data.path = "data/own.npz": no such file or directory'):
        config.load(path, ["data.path=data/own.npz"])
    assert config.load(path, ["data.path=cfg/data/own.npz"]).dataset == "cfg/data/own.npz"


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.epochs=3", "train.epochs", 3),
        ("optimizer.lr=1e-3", "optimizer.lr", 1e-3),
        ("model.hidden=[64, 64]", "model.hidden", [64, 64]),
        ("model.residual=true", "model.residual", True),
        ("optimizer.name=adam", "optimizer.name", "adam"),
        ('optimizer.name="adam"', "optimizer.name", "adam"),
        ("schedule={name = 'cosine'}", "schedule", {"name": "cosine"}),
    ],
)
def test_parse_override_reads_the_value_as_toml(text, key, value):
    assert config.parse_override(text) == (key, value)


def test_overrides_set_dotted_keys_and_are_checked_like_the_file(tmp_path):
    path = _write(tmp_path, GOOD)
    c = config.load(path, ["train.epochs=1", "optimizer.beta2=0.9", "model.hidden=[4, 4]", "data.n_classes=10",
                           "train.early_stopping.patience=1"])  # fmt: skip
    assert (c.epochs, c.hparams["beta2"], c.model["hidden"], c.early_stopping["patience"]) == (1, 0.9, [4, 4], 1)
    assert c.data_options["n_classes"] == 10
    with pytest.raises(ConfigError, match="config: train.epochs = 0: must be an integer >= 1"):
        config.load(path, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        config.load(path, ["train.epochs"])
    with pytest.raises(ConfigError, match=r'--set model.hidden.x: model.hidden = \[16\] is not a table'):
        config.load(path, ["model.hidden.x=1"])
    with pytest.raises(ConfigError, match="the value is not TOML"):
        config.load(path, ["model.hidden=[1,"])


def test_the_template_is_a_config_whose_active_values_are_the_defaults(tmp_path):
    """Round trip: optreg template's text loads as it is, and trains to the numbers of the empty config
    ``[model]``, ``[optimizer] name = "sgd"`` bit for bit (oracle: that run), so every value it shows
    active is the true default."""
    template = config.template()
    c = config.load(_write(tmp_path, template, "template.toml"), ["train.epochs=1"])
    empty = config.load(_write(tmp_path, '[model]\n[optimizer]\nname = "sgd"\n', "empty.toml"), ["train.epochs=1"])
    a = config.run(c, Context(out=tmp_path / "a", quick=True))
    b = config.run(empty, Context(out=tmp_path / "b", quick=True))
    assert a.table[0]["train_loss"] == b.table[0]["train_loss"] and a.table[0]["test_loss"] == b.table[0]["test_loss"]


def test_the_template_loads_with_every_built_in_dataset(tmp_path):
    """Changing only data.name in the template gives a valid config for every built-in dataset (oracle:
    optreg.data.available()); mnist1d refuses a test_fraction, so the template must not set one."""
    from optreg import data

    path = _write(tmp_path, config.template(), "template.toml")
    for name in data.available():
        assert config.load(path, [f'data.name="{name}"']).spec["data"]["name"] == name


def test_the_template_names_every_key_of_every_section():
    """Every key of the schema, of every model kind, of MNIST-1D's generation, of early stopping, of the
    sgd optimizer and of every schedule appears in the template (oracle: the registries and signatures)."""
    import inspect

    from optreg import optim, schedules
    from optreg.data.datasets import MNIST1D_ARGS
    from optreg.nn import models
    from optreg.train import EarlyStopping, ReduceLROnPlateau

    text = config.template()
    sections = {"data", "model", "init", "optimizer", "schedule", "train", "early_stopping", "mnist1d"}
    python_only = {"penalty", "batch_transform"}  # callables: a spec built in Python, not TOML
    keys = {k for table in config.SCHEMA.values() for k in table} - sections - python_only
    for kind in models.available():
        required, defaults = models.keys(kind)
        keys |= {*required, *defaults} - {"in_features", "out_features"}
    keys |= set(MNIST1D_ARGS) | set(inspect.signature(EarlyStopping).parameters)
    keys |= set(inspect.signature(optim.get("sgd")).parameters)
    for name in schedules.available():
        factory = ReduceLROnPlateau if name == "reduce_on_plateau" else schedules._REGISTRY[name]
        keys |= set(inspect.signature(factory).parameters)
    missing = sorted(k for k in keys if f"{k} =" not in text and f" {k}," not in text and f" {k}\n" not in text)
    assert missing == []
    for section in ("[data]", "[data.mnist1d]", "[model]", "[init]", "[optimizer]", "[schedule]", "[train]",
                    "[train.early_stopping]"):  # fmt: skip
        assert section in text


def test_the_example_trains_the_numbers_it_did_before(tmp_path):
    """examples/digits_adamw_cosine.toml now leaves total_steps to "auto" and the lr to [optimizer]: the
    same run as the old file (total_steps = 615 = 15 epochs x 41 updates, the lr in both tables), bit for
    bit (oracle: the old text)."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "digits_adamw_cosine.toml"
    new = config.load(example, ["train.epochs=2"])
    assert new.spec["schedule"] == {"name": "cosine", "total_steps": "auto", "lr": 3e-3}
    old_text = example.read_text().replace('name = "cosine"', 'name = "cosine"\nlr = 3e-3\ntotal_steps = 82')
    old = config.load(_write(tmp_path, old_text, "old.toml"), ["train.epochs=2"])
    a = config.run(new, Context(out=tmp_path / "a"))
    b = config.run(old, Context(out=tmp_path / "b"))
    assert a.table[0]["train_loss"] == b.table[0]["train_loss"] and a.table[0]["val_loss"] == b.table[0]["val_loss"]


def test_cli_template_round_trips_through_optreg_train(tmp_path, capsys):
    """`optreg template > t.toml; optreg train t.toml` works as it is (exit 0, a finished run), and
    --set / --seed / --epochs reach the recorded run (oracle: the run store)."""
    from optreg.cli import main
    from optreg.report.store import RunStore

    assert main(["template"]) == 0
    text = capsys.readouterr().out
    assert text == config.template()
    path = _write(tmp_path, text, "t.toml")
    argv = ["train", str(path), "--out", str(tmp_path / "out"), "--epochs", "1", "--seed", "4",
            "--set", "optimizer.lr=0.05", "--set", "model.hidden=[8]"]  # fmt: skip
    assert main(argv) == 0
    assert "template (seed 4): finished" in capsys.readouterr().out
    with RunStore(tmp_path / "out" / "runs.sqlite") as store:
        (run,) = store.runs("train")
        toml = run["config"]["toml"]
        assert run["seed"] == 4 and toml["train"]["epochs"] == 1 and toml["optimizer"]["lr"] == 0.05
        assert toml["model"]["hidden"] == [8] and len(store.epochs(run["id"])) == 1


def test_cli_prints_optreg_warnings_as_one_line(tmp_path, capsys):
    from optreg.cli import main

    path = _write(tmp_path, '[model]\n[optimizer]\nname = "sgd"\n[schedule]\nname = "cosine"\ntotal_steps = 5\n'
                            "[train]\nepochs = 1\n")  # fmt: skip
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("optreg: warning: spec: schedule.total_steps = 5 ends before")
    assert main(["train", str(path), "--set", "train.steps=3"]) == 2
    assert "train.steps = 3: give train.epochs or train.steps" in capsys.readouterr().err
