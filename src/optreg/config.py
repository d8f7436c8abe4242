"""Training runs described in TOML: ``optreg train run.toml --out runs/mine``.

``optreg template`` prints every section and key with its default and allowed values, as a file that
``optreg train`` accepts as it is (:func:`template`). In short (every table optional but ``[model]`` and
``[optimizer]``; every key checked)::

    name = "adam-digits"            # the run's label (default: the file name without .toml)

    [data]
    name = "digits"                 # a built-in dataset (optreg list datasets) ...
    # path = "data/mnist"           # ... or a path, relative to this file: an IDX directory, a .npz or a .csv
    seed = 0                        # seeds the train / validation / test split
    val_fraction = 0.1
    test_fraction = 0.2             # for data without an official test set (refused for mnist1d)
    n_classes = 10                  # default: 10 built in, the largest label + 1 for a file
    [data.mnist1d]                  # MNIST-1D's generation arguments (data.name = "mnist1d" only)
    shuffle_seq = true

    [model]                         # optreg.nn.build; in/out sizes come from the data
    kind = "mlp"
    hidden = [128]
    residual = true

    [init]                          # optional: optreg.init.apply(model, scheme, **options)
    scheme = "he_normal"

    [optimizer]                     # optreg.optim.create(name, params, **hyperparameters)
    name = "adam"
    lr = 1e-3                       # the run's one lr: a schedule's lr defaults to it (two values: refused)

    [schedule]                      # optional: optreg.schedules.create(name, **kwargs), a step -> lr
    name = "cosine"                 # function; "reduce_on_plateau" drives the lr from a validation
    total_steps = "auto"            # metric instead. "auto" (the default): the run's number of updates
                                    # (a warm-up counts inside it); a cosine that ends earlier warns

    [train]
    batch_size = 32
    epochs = 20                     # or steps = 5000 (updates), not both
    seed = 0                        # seeds the weights, the shuffling and dropout
    shuffle = true                  # false: the same batches in the same order every epoch
    clip_grad_norm = 1.0            # optional (eq. 7.24)
    eval_every = 100                # optional: validation and test scores every 100 updates
    [train.early_stopping]          # optional (section 7.7.3): optreg.train.EarlyStopping(**table)
    monitor = "val_loss"            # a val_ metric needs a validation split (refused with val_fraction = 0)
    patience = 5

:func:`load` reads a file (relative data paths are taken from the file's folder), applies command-line
overrides (``--set key.path=value``, :func:`parse_override`) and checks it; :func:`parse` checks a mapping;
both return a :class:`Config`. The document *is* a run spec of :func:`optreg.train.run`, checked by the
engine as a whole before any data are loaded (:func:`optreg.train.check_spec`, its messages starting
``config:`` here), so any mistake raises :class:`~optreg.errors.ConfigError` in one style, the key path,
the value as TOML writes it and what is allowed: ``config: optimizer.betaa = 0.9: unknown hyperparameter
of adam; allowed: lr, ...``. This module adds what only a file has: the run's name defaults to the file's,
and must be safe as a folder name. :func:`run` trains the config through :func:`optreg.train.run` in a
:class:`~optreg.experiments.Context` (recorded in the output folder's run store like any experiment) and
returns a :class:`~optreg.experiments.Result` with the loss and accuracy curves.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optreg.errors import ConfigError, OptregError
from optreg.train.run import AUTO, DEFAULTS, HORIZONS, SCHEMA, build_schedule, check_spec, format_value

if TYPE_CHECKING:
    from optreg.experiments import Context, Result

__all__ = ["SCHEMA", "Config", "apply_overrides", "load", "parse", "parse_override", "run", "template"]

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
    epochs: int | None = 10
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
                "steps": self.spec.get("train", {}).get("steps"),
                "shuffle": self.spec.get("train", {}).get("shuffle", True),
                "eval_every": self.spec.get("train", {}).get("eval_every"),
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
        data_options={k: data[k] for k in ("val_fraction", "test_fraction", "n_classes", "mnist1d") if k in data},
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


def parse_override(text: str) -> tuple[str, Any]:
    """``"key.path=value"`` (``optreg train --set``) as ``(key path, value)``: the value is read as TOML
    (``3``, ``1e-3``, ``true``, ``[64, 64]``, ``"adam"``, ``{name = "cosine"}``); a bare word that is not
    TOML (``adam``) is taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"config: --set {text!r}: expected key.path=value, e.g. optimizer.lr=0.01")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        if not raw or any(c in raw for c in "[]{}\"'=,"):
            what = "the value is not TOML (a string needs quotes here)"
            raise ConfigError(f"config: --set {key}={raw}: {what}") from None
        value = raw
    return key, value


def apply_overrides(document: Mapping[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """A copy of a config document with each ``key.path=value`` set (tables made where missing)."""
    out = json.loads(json.dumps(document))  # TOML documents are JSON-shaped: a deep copy
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        table, parts = out, key.split(".")
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"config: --set {key}: {where} = {format_value(table)} is not a table")
        table[parts[-1]] = value
    return out


def _relative_to(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data.path`` taken relative to the config file's folder (``~`` expanded), as the file means it."""
    data = document.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        path = Path(data["path"]).expanduser()
        data["path"] = str(path if path.is_absolute() else folder / path)
    return document


def load(path: str | os.PathLike[str], overrides: Iterable[str | tuple[str, Any]] = ()) -> Config:
    """Read a TOML file, apply ``overrides`` (``"key.path=value"`` strings, :func:`parse_override`, or
    ``(key path, value)`` pairs; a ``data.path`` given there is relative to the current folder, one in the
    file to the file's folder) and check it (:func:`parse`)."""
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
    document = apply_overrides(_relative_to(document, p.resolve().parent), overrides)
    return parse(document, source=str(p))


def run(config: Config, ctx: Context) -> Result:
    """Train ``config`` with :func:`optreg.train.run` in ``ctx`` (run label ``config.name``; recorded in
    ``ctx``'s store as experiment ``"train"``) and return a Result: a one-row summary table and a figure
    with the training loss per iteration, the train / validation loss per epoch and the accuracy per epoch."""
    from optreg.experiments import Result
    from optreg.report.plots import Panel, curves_figure
    from optreg.train.run import load_data

    ctx.experiment, ctx.run_ids = "train", []
    if "mnist1d" in config.data_options:  # generation arguments (a table): loaded here, not cached by ctx
        data = load_data(config.spec["data"])
    else:
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
    if h.evaluations:  # eval_every: accuracy against the number of updates
        panels.append(
            Panel(
                {k: [[r[f"{k}_accuracy"] for r in h.evaluations]] for k in ("val", "test")
                 if h.evaluations[0][f"{k}_accuracy"] is not None},  # fmt: skip
                title="Accuracy per update",
                xlabel="update",
                ylabel="accuracy",
                x=[r["step"] for r in h.evaluations],
            )
        )
    if h.status != "finished":  # each panel says so: its curves stop where the run did
        for panel in panels:
            panel.note = f"the run {h.status} after {len(h.iterations)} updates: the curves stop there"
    figure = curves_figure(panels, title=f"{config.name}: {config.optimizer} on {data.name}")
    notes = f"Config: {config.source}. Status: {h.status}." + (f" {h.error}" if h.error else "")
    return Result(table=table, figures={"curves": figure}, notes=notes, name=config.name, title=config.name)


# ---------------------------------------------------------------------------------------------- template


def _line(key: str, value: Any, note: str = "", *, active: bool = True) -> str:
    text = f"{'' if active else '# '}{key} = {format_value(value) if not isinstance(value, _Raw) else value}"
    return f"{text:<40} # {note}" if note else text


class _Raw(str):
    """Text written into the template as it is (an example that is not a default)."""


def _signature_defaults(factory: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The defaults of a factory's parameters that TOML can write (None and objects left out)."""
    return {
        name: p.default
        for name, p in inspect.signature(factory).parameters.items()
        if name not in skip and isinstance(p.default, bool | int | float | str)
    }


def template() -> str:
    """An annotated config with every section and key: each with its default (commented out where the
    default is "off" or another section's alternative) and what is allowed. ``optreg train`` accepts it
    as it is, and trains exactly what an empty ``[model]`` and ``[optimizer] name = "sgd"`` train: the
    active values are the defaults (tests check both)."""
    from optreg import data, init, optim, schedules
    from optreg.data.datasets import MNIST1D_ARGS
    from optreg.nn import models
    from optreg.train import EarlyStopping, ReduceLROnPlateau
    from optreg.train.callbacks import MONITORS

    train = DEFAULTS["train"]
    mlp = models.keys("mlp")[1]
    out = [
        "# An optreg run config: every section and key, with its default and what is allowed.",
        "# `optreg train` accepts this file as it is (an MLP on digits with SGD). A key left out takes the",
        "# default shown; lines starting with '#' are alternatives and options that are off by default.",
        "# Values are TOML: true / false, \"strings\", [lists], {inline = \"tables\"}. Any key can also be set",
        "# on the command line: optreg train run.toml --set optimizer.lr=0.1 --set model.hidden=[64,64]",
        "",
        _line("name", "template", "the run's label and output folder (default: the file's name)"),
        "",
        "[data]",
        _line("name", "digits", f"built in: {', '.join(data.available())}; or instead of name:"),
        _line("path", _Raw('"my/data.csv"'), "an IDX folder, a .npz or .csv file, relative to this file",
              active=False),
        _line("seed", DEFAULTS["data"]["seed"], "an integer >= 0: seeds the train / validation / test split"),
        _line("val_fraction", DEFAULTS["data"]["val_fraction"], "[0, 1): held out for validation (0: none)"),
        _line("test_fraction", 0.2, "(0, 1): only for data without an official test set (not mnist1d)",
              active=False),  # commented out, so that switching data.name to mnist1d needs no other edit
        _line("n_classes", 10, "default: 10 built in, the largest label + 1 for a file", active=False),
        "# [data.mnist1d]                          # data.name = \"mnist1d\" only: make_dataset's arguments",
        *(_line(k, v, active=False) for k, v in MNIST1D_ARGS.items()),
        "",
        "[model]                                  # in_features / out_features / input_shape: from the data",
        _line("kind", "mlp", f"allowed: {', '.join(models.available())}"),
        _line("hidden", mlp["hidden"], "hidden widths, e.g. [128, 64]"),
        _line("activation", mlp["activation"], f"allowed: {', '.join(models.ACTIVATIONS)}"),
        _line("norm", "none", "none, batch, layer, weight; lrn for conv nets; rnn: layer"),
        _line("dropout", mlp["dropout"], "[0, 1): drop probability of every hidden layer"),
        _line("input_dropout", mlp["input_dropout"], "[0, 1): on the input"),
        _line("residual", mlp["residual"], "mlp: h = h + act(W h) where the widths match"),
        _line("drop_connect", 0.0, "mlp, [0, 1): DropConnect on the hidden layers' weights", active=False),
        "# kind = \"cnn1d\" / \"cnn2d\" also take (each per-layer key: one integer, or a list, one per block):",
        _line("channels", _Raw("[16, 32]"), "required: channels of each conv block", active=False),
        *(_line(k, v, active=False) for k, v in models.keys("cnn1d")[1].items()
          if k in ("in_channels", "kernel_size", "stride", "pool")),  # fmt: skip
        _line("padding", _Raw("[1, 1]"), "default: kernel_size // 2 for each block", active=False),
        _line("input_shape", _Raw("[40]"), "[length] or [height, width]; default: from the data", active=False),
        "# kind = \"rnn\" / \"gru\" / \"lstm\" take instead of hidden / residual / input_dropout:",
        _line("hidden_size", _Raw("64"), "required", active=False),
        *(_line(k, v, active=False) for k, v in models.keys("rnn")[1].items()
          if k in ("num_layers", "bidirectional")),  # fmt: skip
        _line("readout", "last", f"{', '.join(models.READOUTS)}: final state, every step's outputs, their mean",
              active=False),
        _line("seq_len", _Raw("40"), "readout \"all\": the number of steps (default: from the data)", active=False),
        _line("activation", "tanh", "rnn only: tanh or relu", active=False),
        _line("dropout_scheme", "between", f"gru / lstm: {', '.join(models.DROPOUT_SCHEMES)}", active=False),
        "",
        "# [init]                                 # optional; default: torch's own initialization",
        _line("scheme", "he_normal", f"allowed: {', '.join(init.available())}", active=False),
        *(_line(k, v, active=False) for k, v in _signature_defaults(init.apply).items()),
        "",
        "[optimizer]",
        _line("name", "sgd", f"allowed: {', '.join(optim.available())}"),
        *(_line(k, v, "the run's one lr: a schedule's lr defaults to it" if k == "lr" else "")
          for k, v in _signature_defaults(optim.get("sgd")).items()),  # fmt: skip
        "# each optimizer takes its own hyperparameters (lr, momentum, beta, beta1, beta2, eps, eps_root,",
        "# weight_decay, ...): an unknown one is refused with the list of those allowed",
        "",
        "# [schedule]                             # optional; default: the optimizer's lr at every update",
        _line("name", "cosine", f"allowed: {', '.join(schedules.available())}", active=False),
        _line("total_steps", AUTO, "cosine; \"auto\": the run's number of updates (a warm-up counts inside)",
              active=False),
        _line("min_lr", 0.0, "cosine: the rate at the end", active=False),
        _line("lr", _Raw("0.01"), "default: optimizer.lr (a different value is refused)", active=False),
        "# a warm-up: name = \"warmup\", warmup_steps = 100, start_lr = 0.0, schedule = {name = \"cosine\"}",
        "# the other schedules' keys (lr: the optimizer's; no default: required):",
        *(
            f"#   {name}: " + (", ".join(
                f"{k} = {format_value(AUTO)}" if HORIZONS.get(name) == k
                else k if p.default is inspect.Parameter.empty else f"{k} = {format_value(p.default)}"
                for k, p in inspect.signature(schedules._REGISTRY[name]).parameters.items() if k != "lr"
            ) or "lr only")
            for name in schedules.available()
            if name not in ("cosine", "warmup", "reduce_on_plateau")
        ),
        "# reduce_on_plateau (by a validation metric, once per epoch): "
        + ", ".join(f"{k} = {format_value(v)}" for k, v in _signature_defaults(ReduceLROnPlateau).items()),
        "",
        "[train]",
        _line("batch_size", train["batch_size"], "an integer >= 1"),
        _line("epochs", train["epochs"], "an integer >= 1; or instead:"),
        _line("steps", _Raw("1000"), "the number of updates (the last epoch may be partial)", active=False),
        _line("seed", train["seed"], "seeds the weights, the shuffling and dropout"),
        _line("shuffle", train["shuffle"], "false: the same batches in the same order every epoch"),
        _line("log_every", train["log_every"], "keep every k-th update's record"),
        _line("clip_grad_norm", _Raw("1.0"), "clip the gradient's global norm (eq. 7.24); default: off",
              active=False),
        _line("eval_every", _Raw("100"), "validation and test scores every k updates; default: off", active=False),
        "# [train.early_stopping]                 # optional (section 7.7.3)",
        *(_line(k, v, f"allowed: {', '.join(MONITORS)}" if k == "monitor" else "", active=False)
          for k, v in _signature_defaults(EarlyStopping).items()),  # fmt: skip
        _line("alpha", _Raw("5.0"), "Prechelt's threshold: GL_alpha / PQ_alpha (criterion gl, pq); default: none",
              active=False),
        _line("strips", _Raw("3"), "Prechelt's UP_s: s successive strips with a rise (criterion up); default: none",
              active=False),
    ]
    return "\n".join(out) + "\n"
