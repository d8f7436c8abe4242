"""Training runs described in TOML: ``optreg train run.toml --out runs/mine``.

The schema (every table optional but ``[model]`` and ``[optimizer]``; every key checked)::

    name = "adam-digits"            # the run's label (default: the file name without .toml)

    [data]
    name = "digits"                 # a built-in dataset (optreg list datasets) ...
    # path = "data/mnist"           # ... or a path: an IDX directory, a .npz or a .csv file (not both)
    seed = 0                        # seeds the train / validation / test split
    val_fraction = 0.1
    test_fraction = 0.2             # for data without an official test set

    [model]                         # passed to optreg.nn.build; in/out sizes come from the data
    kind = "mlp"
    hidden = [128]
    activation = "relu"

    [init]                          # optional: optreg.init.apply(model, scheme, **options)
    scheme = "he_normal"
    bias = "zeros"

    [optimizer]                     # optreg.optim.create(name, params, **hyperparameters)
    name = "adam"
    lr = 1e-3
    beta2 = 0.999

    [schedule]                      # optional: optreg.schedules.create(name, **kwargs), a step -> lr
    name = "cosine"                 # function; "reduce_on_plateau" drives the lr from a validation
    lr = 1e-3                       # metric instead (the trainer's ReduceLROnPlateau callback)
    total_steps = 820

    [train]
    batch_size = 32
    epochs = 20
    seed = 0                        # seeds the weights, the shuffling and dropout
    clip_grad_norm = 1.0            # optional (eq. 7.24)
    log_every = 1
    [train.early_stopping]          # optional (section 7.7.3): optreg.train.EarlyStopping(**table)
    monitor = "val_loss"
    patience = 5

:func:`load` reads and checks a file and returns a :class:`Config`; :func:`parse` does the same for a
mapping. Any mistake raises :class:`~optreg.errors.ConfigError` naming the key path (``optimizer.betaa``),
the value and what is allowed. Values are checked by the component they go to (the optimizer is built on
a dummy parameter, the schedule and early stopping are constructed), so a bad value fails before any
training starts. :func:`run` trains the config in a :class:`~optreg.experiments.Context` (recorded in the
output folder's run store like any experiment) and returns a :class:`~optreg.experiments.Result` with the
loss and accuracy curves.
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from optreg.errors import ConfigError, OptregError

if TYPE_CHECKING:
    from optreg.experiments import Context, Result

__all__ = ["SCHEMA", "Config", "load", "parse", "run"]

_NUMBER = (int, float)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Allowed keys of the fixed-shape tables and their types (``[model]``, ``[init]``, ``[optimizer]`` and
#: ``[schedule]`` are checked against the component their values go to).
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "": {"name": (str,), "data": (dict,), "model": (dict,), "init": (dict,), "optimizer": (dict,),
         "schedule": (dict,), "train": (dict,)},
    "data": {"name": (str,), "path": (str,), "seed": (int,), "val_fraction": _NUMBER, "test_fraction": _NUMBER},
    "train": {"batch_size": (int,), "epochs": (int,), "seed": (int,), "clip_grad_norm": _NUMBER,
              "log_every": (int,), "early_stopping": (dict,)},
    "train.early_stopping": {"monitor": (str,), "mode": (str,), "patience": (int,), "min_delta": _NUMBER,
                             "restore_best": (bool,)},
}  # fmt: skip

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "a table", bool: "true or false"}


def _fail(where: str, key: str, value: Any, what: str) -> ConfigError:
    path = f"{where}.{key}" if where else key
    return ConfigError(f"config: {path} = {value!r}: {what}")


def _check_table(table: Mapping[str, Any], where: str) -> None:
    """Unknown keys and wrong types of a fixed-shape table (see :data:`SCHEMA`)."""
    allowed = SCHEMA[where]
    for key, value in table.items():
        if key not in allowed:
            raise _fail(where, key, value, f"unknown key; allowed keys: {', '.join(allowed)}")
        types = allowed[key]
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
            raise _fail(where, key, value, f"must be {wanted}")


def _wrap(section: str, error: Exception) -> ConfigError:
    """A component's own error (it names the field, the value and what is allowed), tagged with the section."""
    return ConfigError(f"config: [{section}] {error}")


@dataclass(frozen=True)
class Config:
    """A checked run description (see the module docstring); ``source`` is the file it came from."""

    name: str
    model: dict[str, Any]
    optimizer: str
    hparams: dict[str, Any]
    dataset: str = "digits"
    data_options: dict[str, Any] = field(default_factory=dict)
    data_seed: int = 0
    init: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    clip_grad_norm: float | None = None
    log_every: int = 1
    early_stopping: dict[str, Any] | None = None
    source: str = "<config>"

    def as_dict(self) -> dict[str, Any]:
        """The config as plain data (what the run store records)."""
        return {
            "name": self.name,
            "data": {"name_or_path": self.dataset, "seed": self.data_seed, **self.data_options},
            "model": self.model,
            "init": self.init,
            "optimizer": {"name": self.optimizer, **self.hparams},
            "schedule": self.schedule,
            "train": {
                "batch_size": self.batch_size,
                "epochs": self.epochs,
                "seed": self.seed,
                "clip_grad_norm": self.clip_grad_norm,
                "log_every": self.log_every,
                "early_stopping": self.early_stopping,
            },
            "source": self.source,
        }

    def callbacks(self) -> list[Any]:
        """The trainer callbacks the config asks for: early stopping, reduce-on-plateau."""
        from optreg.train import EarlyStopping, ReduceLROnPlateau

        out: list[Any] = []
        if self.early_stopping is not None:
            out.append(EarlyStopping(**self.early_stopping))
        if self.schedule is not None and self.schedule["name"] == "reduce_on_plateau":
            kwargs = {k: v for k, v in self.schedule.items() if k != "name"}
            out.append(ReduceLROnPlateau(**kwargs))
        return out

    def step_schedule(self) -> Any:
        """The ``step -> lr`` schedule, or None (none given, or reduce-on-plateau, which is a callback)."""
        from optreg import schedules

        if self.schedule is None or self.schedule["name"] == "reduce_on_plateau":
            return None
        kwargs = {k: v for k, v in self.schedule.items() if k != "name"}
        return schedules.create(self.schedule["name"], **kwargs)


def _data_section(table: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    from optreg import data

    _check_table(table, "data")
    if "name" in table and "path" in table:
        raise _fail("data", "path", table["path"], "give either data.name or data.path, not both")
    if "name" in table and table["name"] not in data.available():
        raise _fail("data", "name", table["name"], f"allowed: {', '.join(data.available())} (or data.path)")
    dataset = table.get("path", table.get("name", "digits"))
    if "path" in table and not Path(dataset).exists():
        raise _fail("data", "path", dataset, "no such file or directory")
    options = {k: table[k] for k in ("val_fraction", "test_fraction") if k in table}
    seed = table.get("seed", 0)
    if seed < 0:
        raise _fail("data", "seed", seed, "must be an integer >= 0")
    for key, value in options.items():
        if not 0 <= value < 1 or (key == "test_fraction" and value == 0):
            interval = "(0, 1)" if key == "test_fraction" else "[0, 1)"
            raise _fail("data", key, value, f"must be in {interval}")
    return dataset, seed, options


def _optimizer_section(table: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    from optreg import optim

    if "name" not in table:
        raise ConfigError(f"config: optimizer.name is required; allowed: {', '.join(optim.available())}")
    name = table["name"]
    if not isinstance(name, str) or name.lower() not in optim.available():
        raise _fail("optimizer", "name", name, f"allowed: {', '.join(optim.available())}")
    hparams = {k: v for k, v in table.items() if k != "name"}
    allowed = list(inspect.signature(optim.get(name)).parameters)
    for key, value in hparams.items():
        if key not in allowed:
            raise _fail("optimizer", key, value, f"unknown hyperparameter of {name}; allowed: {', '.join(allowed)}")
    try:  # the optimizer checks the values itself
        optim.create(name, [torch.zeros(1, requires_grad=True)], **hparams)
    except OptregError as e:
        raise _wrap("optimizer", e) from None
    return name.lower(), hparams


def _schedule_section(table: Mapping[str, Any]) -> dict[str, Any]:
    from optreg import schedules
    from optreg.train import ReduceLROnPlateau

    if "name" not in table:
        raise ConfigError(f"config: schedule.name is required; allowed: {', '.join(schedules.available())}")
    name = table["name"]
    if name not in schedules.available():
        raise _fail("schedule", "name", name, f"allowed: {', '.join(schedules.available())}")
    kwargs = {k: v for k, v in table.items() if k != "name"}
    factory: Any = ReduceLROnPlateau if name == "reduce_on_plateau" else None
    allowed = list(inspect.signature(factory).parameters) if factory is not None else None
    if allowed is not None:
        for key, value in kwargs.items():
            if key not in allowed:
                raise _fail("schedule", key, value, f"unknown option of {name}; allowed: {', '.join(allowed)}")
    try:
        ReduceLROnPlateau(**kwargs) if factory is not None else schedules.create(name, **kwargs)
    except OptregError as e:
        raise _wrap("schedule", e) from None
    return dict(table)


def _init_section(table: Mapping[str, Any]) -> dict[str, Any]:
    from optreg import init

    if "scheme" not in table:
        raise ConfigError(f"config: init.scheme is required; allowed: {', '.join(init.available())}")
    if table["scheme"] not in init.available():
        raise _fail("init", "scheme", table["scheme"], f"allowed: {', '.join(init.available())}")
    options = {k: v for k, v in table.items() if k != "scheme"}
    try:  # the scheme checks its options on a small network
        init.apply(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 3)), table["scheme"], **options)
    except (OptregError, TypeError) as e:
        raise _wrap("init", e) from None
    return dict(table)


def _train_section(table: Mapping[str, Any]) -> dict[str, Any]:
    from optreg.train import EarlyStopping

    _check_table(table, "train")
    for key, low in (("batch_size", 1), ("epochs", 1), ("seed", 0), ("log_every", 1)):
        if key in table and table[key] < low:
            raise _fail("train", key, table[key], f"must be an integer >= {low}")
    if "clip_grad_norm" in table and not table["clip_grad_norm"] > 0:
        raise _fail("train", "clip_grad_norm", table["clip_grad_norm"], "must be a number > 0")
    out = dict(table)
    if "early_stopping" in table:
        _check_table(table["early_stopping"], "train.early_stopping")
        try:
            EarlyStopping(**table["early_stopping"])
        except OptregError as e:
            raise _wrap("train.early_stopping", e) from None
        out["early_stopping"] = dict(table["early_stopping"])
    return out


def parse(config: Mapping[str, Any], source: str = "<config>") -> Config:
    """Check a config mapping (a parsed TOML document) and return a :class:`Config`."""
    from optreg import nn

    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a table, got {config!r}")
    _check_table(config, "")
    for section in ("model", "optimizer"):
        if section not in config:
            raise ConfigError(f"config: [{section}] is required ({source})")
    model = dict(config["model"])
    kind = model.get("kind", "mlp")
    if kind not in nn.available():
        raise _fail("model", "kind", kind, f"allowed: {', '.join(nn.available())}")
    dataset, data_seed, data_options = _data_section(config.get("data", {}))
    optimizer, hparams = _optimizer_section(config["optimizer"])
    train = _train_section(config.get("train", {}))
    name = config.get("name") or (Path(source).stem if source != "<config>" else "run")
    if not _SAFE_NAME.match(name):
        raise _fail("", "name", name, "must be letters, digits, '_', '.', '-' (it names the output folder)")
    return Config(
        name=name,
        model=model,
        optimizer=optimizer,
        hparams=hparams,
        dataset=dataset,
        data_options=data_options,
        data_seed=data_seed,
        init=_init_section(config["init"]) if "init" in config else None,
        schedule=_schedule_section(config["schedule"]) if "schedule" in config else None,
        batch_size=train.get("batch_size", 32),
        epochs=train.get("epochs", 10),
        seed=train.get("seed", 0),
        clip_grad_norm=train.get("clip_grad_norm"),
        log_every=train.get("log_every", 1),
        early_stopping=train.get("early_stopping"),
        source=source,
    )


def load(path: str | os.PathLike[str]) -> Config:
    """Read a TOML file and check it (:func:`parse`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: {p}: no such file")
    try:
        with open(p, "rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {p}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config: {p}: not UTF-8 text ({e})") from None
    return parse(document, source=str(p))


def run(config: Config, ctx: Context) -> Result:
    """Train ``config`` in ``ctx`` (run label ``config.name``; recorded in ``ctx``'s store as experiment
    ``"train"``) and return a Result: a one-row summary table and a figure with the training loss per
    iteration, the train / validation loss per epoch and the accuracy per epoch."""
    from optreg.experiments import Result
    from optreg.report.plots import Panel, curves_figure

    ctx.experiment, ctx.run_ids = "train", []
    data = ctx.load_data(config.data_seed, dataset=config.dataset, **config.data_options)
    try:
        callbacks = config.callbacks()
        h = ctx.train(
            config.name,
            model_spec=config.model,
            optimizer=config.optimizer,
            hparams=config.hparams,
            seed=config.seed,
            batch_size=config.batch_size,
            epochs=config.epochs,
            schedule=config.step_schedule(),
            init=config.init,
            callbacks=callbacks,
            data=data,
            clip_grad_norm=config.clip_grad_norm,
            log_every=config.log_every,
            config={"source": config.source, "toml": config.as_dict()},
        )
    except OptregError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config: {config.source}: {e}") from None
    table = [
        {
            "run": config.name,
            "status": h.status,
            "epochs": len(h.epochs),
            "train_loss": h.final("train_loss"),
            "val_loss": h.final("val_loss"),
            "val_accuracy": h.final("val_accuracy"),
            "test_loss": h.test_loss,
            "test_accuracy": h.test_accuracy,
            "seconds": h.seconds,
        }
    ]
    epochs = list(range(1, len(h.epochs) + 1))
    steps_per_epoch = max(1, len(h.iterations) // max(1, len(h.epochs)))
    panels = [
        Panel(
            {"train (mini-batch)": [h.column("loss", "iterations")]} if h.iterations else {},
            title="Training loss per iteration",
            xlabel="iteration",
            ylabel=f"loss (moving average over {max(1, steps_per_epoch // 2)})",
            smooth=max(1, steps_per_epoch // 2),
            x=[r["step"] for r in h.iterations],
            log_y=True,
        ),
        Panel(
            {k: [h.column(f"{k}_loss")] for k in ("train", "val") if h.epochs and h.final(f"{k}_loss") is not None},
            title="Loss per epoch",
            xlabel="epoch",
            ylabel="mean loss",
            x=epochs,
            log_y=True,
            integer_x=True,
        ),
        Panel(
            {
                k: [h.column(f"{k}_accuracy")]
                for k in ("train", "val")
                if h.epochs and h.final(f"{k}_accuracy") is not None
            },
            title="Accuracy per epoch",
            xlabel="epoch",
            ylabel="accuracy",
            x=epochs,
            integer_x=True,
        ),
    ]
    figure = curves_figure(panels, title=f"{config.name}: {config.optimizer} on {data.name}")
    notes = f"Config: {config.source}. Status: {h.status}." + (f" {h.error}" if h.error else "")
    return Result(table=table, figures={"curves": figure}, notes=notes, name=config.name, title=config.name)
