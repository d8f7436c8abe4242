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

:func:`load` reads a file and checks it, :func:`parse` checks a mapping; both return a :class:`Config`.
The document *is* a run spec of :func:`optreg.train.run`, checked by the engine
(:func:`optreg.train.check_spec`, its messages starting ``config:`` here), so any mistake raises
:class:`~optreg.errors.ConfigError` naming the key path (``optimizer.betaa``), the value and what is
allowed. Values are checked by the component they go to (the optimizer is built on a dummy parameter, the
schedule and early stopping are constructed), so a bad value fails before any training starts. This
module adds what only a file has: the run's name defaults to the file's, and must be safe as a folder
name. :func:`run` trains the config through :func:`optreg.train.run` in a
:class:`~optreg.experiments.Context` (recorded in the output folder's run store like any experiment) and
returns a :class:`~optreg.experiments.Result` with the loss and accuracy curves.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optreg.errors import ConfigError, OptregError
from optreg.train.run import SCHEMA, build_schedule, check_spec

if TYPE_CHECKING:
    from optreg.experiments import Context, Result

__all__ = ["SCHEMA", "Config", "load", "parse", "run"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Config:
    """A checked run description (see the module docstring); ``source`` is the file it came from, ``spec``
    the resolved run spec :func:`optreg.train.run` trains."""

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
    spec: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
        """The trainer callbacks the config asks for: reduce-on-plateau, early stopping."""
        from optreg.train import EarlyStopping

        out = list(build_schedule(self.schedule)[1])
        if self.early_stopping is not None:
            out.insert(0, EarlyStopping(**self.early_stopping))
        return out

    def step_schedule(self) -> Any:
        """The ``step -> lr`` schedule, or None (none given, or reduce-on-plateau, which is a callback)."""
        return build_schedule(self.schedule)[0]


def parse(config: Mapping[str, Any], source: str = "<config>") -> Config:
    """Check a config mapping (a parsed TOML document) and return a :class:`Config`."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a table, got {config!r}")
    config = {k: v for k, v in config.items() if k != "tune"}  # [tune] is optreg tune's (optreg.tuning)
    spec = check_spec(config, owner="config")
    name = config.get("name") or (Path(source).stem if source != "<config>" else "run")
    if not _SAFE_NAME.match(name):
        raise ConfigError(
            f"config: name = {name!r}: must be letters, digits, '_', '.', '-' (it names the output folder)"
        )
    spec["name"] = name
    data, optimizer, train = spec["data"], spec["optimizer"], spec["train"]
    return Config(
        name=name,
        model=spec["model"],
        optimizer=optimizer["name"],
        hparams={k: v for k, v in optimizer.items() if k != "name"},
        dataset=data.get("path", data.get("name")),
        data_options={k: data[k] for k in ("val_fraction", "test_fraction") if k in data},
        data_seed=data["seed"],
        init=spec["init"],
        schedule=spec["schedule"],
        batch_size=train["batch_size"],
        epochs=train["epochs"],
        seed=train["seed"],
        clip_grad_norm=train["clip_grad_norm"],
        log_every=train["log_every"],
        early_stopping=train["early_stopping"],
        source=source,
        spec=spec,
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
    """Train ``config`` with :func:`optreg.train.run` in ``ctx`` (run label ``config.name``; recorded in
    ``ctx``'s store as experiment ``"train"``) and return a Result: a one-row summary table and a figure
    with the training loss per iteration, the train / validation loss per epoch and the accuracy per epoch."""
    from optreg.experiments import Result
    from optreg.report.plots import Panel, curves_figure

    ctx.experiment, ctx.run_ids = "train", []
    data = ctx.load_data(config.data_seed, dataset=config.dataset, **config.data_options)
    try:
        h = ctx.train_spec(config.spec, data, config={"source": config.source, "toml": config.as_dict()})
    except OptregError as e:  # the engine names the section ("spec: [model] ..."); the file is named here
        raise ConfigError(f"config: {config.source}: {str(e).removeprefix('spec: ')}") from None
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
