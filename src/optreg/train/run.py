"""One path from a run description to a trained, evaluated model: :func:`run`.

A *spec* is a plain dict with the shape of a TOML run config (:mod:`optreg.config` reads one from a file)::

    spec = {
        "name": "adam-digits",                                   # a label (default "run")
        "data": {"name": "digits", "seed": 0},                   # or "path"; val_fraction, test_fraction,
                                                                 # n_classes, mnist1d = {generation args}
        "model": {"kind": "mlp", "hidden": [128]},               # optreg.nn.build; sizes from the data
        "init": {"scheme": "he_normal", "bias": "zeros"},        # optional: optreg.init.apply
        "optimizer": {"name": "adam", "lr": 1e-3},               # optreg.optim.create(name, params, **rest)
        "schedule": {"name": "cosine"},                          # optional: optreg.schedules.create
        "train": {"batch_size": 32, "epochs": 20, "seed": 0, "clip_grad_norm": 1.0, "log_every": 1,
                  "shuffle": True, "eval_every": None,           # or "steps": 5000 instead of "epochs"
                  "early_stopping": {"monitor": "val_loss", "patience": 5}},
    }
    result = optreg.train.run(spec, None, seed=0)   # None: load the [data] section; or pass optreg.data Splits
    result.model, result.history, result.test_accuracy, result.status

Every section is optional but ``model`` and ``optimizer``. Beyond what TOML can write, a spec built in
Python may hold a torch optimizer class as ``optimizer.name`` (``torch.optim.SGD``), a ``step -> lr``
callable as ``schedule`` (optreg's schedules are frozen dataclasses: printable and picklable) and a
``model -> scalar`` callable as ``train.penalty`` (added to the objective, e.g. ``lambda * l_p(theta)``,
eq. (7.58)) and an ``(x, y, generator) -> (x, y)`` callable as ``train.batch_transform`` (the trainer's
per-batch hook on training batches: augmentation, :func:`optreg.data.augment.as_batch_transform`, or input
noise, :class:`optreg.regularize.noise.GaussianNoise`; both are frozen dataclasses, so the spec still
pickles). ``schedule = {"name": "reduce_on_plateau", ...}`` drives the lr from a validation metric
(the :class:`~optreg.train.ReduceLROnPlateau` callback) instead of the step. A value of None is the
same as leaving the key out.

:func:`check_spec` checks the whole spec before anything is loaded or built, in one message style,
``spec: key.path = value: what is wrong; allowed: ...`` with the value as TOML writes it
(``spec: optimizer.betaa = 0.9: unknown hyperparameter of adam; allowed: lr, ...``,
``spec: optimizer.beta2 = 1.5: must be in [0, 1)``): unknown keys and wrong types of every section, the
model's keys and values (:func:`optreg.nn.models.validate`, with stand-ins for the sizes the data give),
values the components check themselves (the optimizer is built on a dummy parameter, the schedule and
early stopping are constructed). All errors are :class:`~optreg.errors.ConfigError`. What depends on the
data's sizes (an init option such as sparse's ``k``, conv maps that vanish) is checked when the model is
built, still before any training.

What a spec cannot say two ways: the schedule's ``lr`` (its peak) *is* the optimizer's ``lr`` (one given
is copied to the other; two different values are refused). A schedule's length (``cosine``'s
``total_steps``, ``linear_to_floor``'s ``decay_steps``) defaults to ``"auto"``, the run's number of
updates (``train.steps``, or epochs x batches per epoch), resolved by :func:`run` (:func:`resolve_schedule`;
the resolved spec holds the number); a warm-up counts inside it (:class:`optreg.schedules.Warmup`); a
cosine given a length shorter than the run warns (:class:`~optreg.errors.OptregWarning`). Early stopping
or reduce-on-plateau on a ``val_`` metric without a validation split is refused before training.

:func:`run` is deterministic: the same spec, data and seed give the same numbers, bit for bit (the
weights are drawn under ``torch.manual_seed(seed)``, the init scheme from a generator seeded with
``seed``, the shuffling and dropout by the :class:`~optreg.train.Trainer` seeded with ``seed``). It
prints nothing and writes no files; it reports through ``callbacks`` and its :class:`RunResult`. The spec
and the result pickle (a hyperparameter-search trial is this call in another process).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optreg._checks import check_int
from optreg.errors import ConfigError, DivergenceError, OptregError, OptregTypeError, OptregWarning
from optreg.train.callbacks import Callback, EarlyStopping, ReduceLROnPlateau
from optreg.train.trainer import History, Trainer

__all__ = [
    "AUTO",
    "DEFAULTS",
    "HORIZONS",
    "SCHEMA",
    "RunResult",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "check_spec",
    "complete_model_spec",
    "format_value",
    "load_data",
    "resolve_schedule",
    "run",
]

_NUMBER = (int, float)
_TABLE = (Mapping,)

#: Allowed keys of the fixed-shape tables and their types (``model``, ``init``, ``optimizer`` and
#: ``schedule`` are checked against the component their values go to).
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "": {"name": (str,), "data": _TABLE, "model": _TABLE, "init": _TABLE, "optimizer": _TABLE,
         "schedule": (Mapping, Callable), "train": _TABLE},
    "data": {"name": (str,), "path": (str,), "seed": (int,), "val_fraction": _NUMBER, "test_fraction": _NUMBER,
             "n_classes": (int,), "mnist1d": _TABLE},
    "train": {"batch_size": (int,), "epochs": (int,), "steps": (int,), "seed": (int,), "shuffle": (bool,),
              "clip_grad_norm": _NUMBER, "log_every": (int,), "eval_every": (int,), "early_stopping": _TABLE,
              "penalty": (Callable,), "batch_transform": (Callable,)},
    "train.early_stopping": {"monitor": (str,), "mode": (str,), "patience": (int,), "min_delta": _NUMBER,
                             "restore_best": (bool,)},
}  # fmt: skip

#: What :func:`check_spec` fills in for a key left out (None: nothing, the feature is off).
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"name": "digits", "seed": 0, "val_fraction": 0.1},
    "train": {"batch_size": 32, "epochs": 10, "steps": None, "seed": 0, "shuffle": True, "clip_grad_norm": None,
              "log_every": 1, "eval_every": None, "early_stopping": None, "penalty": None,
              "batch_transform": None},
}  # fmt: skip

#: ``"auto"``: a schedule's length is the run's number of updates (train.steps, or epochs x batches per epoch).
AUTO = "auto"
#: The schedules that have a length, and the key that holds it (default :data:`AUTO`; a warm-up counts inside).
HORIZONS = {"cosine": "total_steps", "linear_to_floor": "decay_steps"}
_WRAPPERS = ("warmup", "per_epoch")  # schedules that take a schedule
_PROBE_LENGTH = 10**9  # stands for "auto" while a schedule is checked before the run's length is known

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", Mapping: "a table", bool: "true or false"}


def format_value(value: Any) -> str:
    """A value as TOML writes it (``true``, ``"adam"``, ``[1, 2]``, ``{lr = 0.1}``), for messages and templates."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)


def _fail(owner: str, where: str, key: str, value: Any, what: str) -> ConfigError:
    """The one message style: ``owner: key.path = value: what is wrong; allowed: ...``."""
    path = f"{where}.{key}" if where else key
    return ConfigError(f"{owner}: {path} = {format_value(value)}: {what}")


# a component's message, "adam: beta2 must be in [0, 1), got 1.5", split into its field and what is wrong
_COMPONENT_MESSAGE = re.compile(r"^[^\n]*?: (?P<field>\w+) (?P<what>must .*?)(?:, got .*)?$", re.S)
# a factory's missing arguments, "schedules.create: step_decay needs keyword(s) step_size; allowed: lr, ..."
_MISSING_MESSAGE = re.compile(r"^[^\n]*?: (?P<name>\S+) needs keyword\(s\) (?P<keys>[\w, ]+); (?P<allowed>allowed: .*)")


def _wrap(owner: str, section: str, error: Exception, table: Mapping[str, Any] | None = None) -> ConfigError:
    """A component's own error in the one style (``section.field = value: must ...``) where it names a field
    of ``table``; otherwise its message as it is, tagged with the section."""
    text = str(error)
    m = _COMPONENT_MESSAGE.match(text)
    if m is not None and table is not None and m["field"] in table:
        what = m["what"]
        if what.startswith("must be one of "):
            what = "allowed: " + what.removeprefix("must be one of ").replace("'", '"')
        return _fail(owner, section, m["field"], table[m["field"]], what)
    m = _MISSING_MESSAGE.match(text)
    if m is not None:  # as a missing model key reads: "model.channels is required for kind cnn1d"
        keys = ", ".join(f"{section}.{k.strip()}" for k in m["keys"].split(","))
        verb = "is" if "," not in m["keys"] else "are"
        return ConfigError(f"{owner}: {keys} {verb} required for {m['name']}; {m['allowed']}")
    return ConfigError(f"{owner}: [{section}] {text}")


def _present(table: Mapping[str, Any]) -> dict[str, Any]:
    """The table without its None values (None means: not given)."""
    return {k: v for k, v in table.items() if v is not None}


def _check_table(owner: str, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Unknown keys and wrong types of a fixed-shape table (see :data:`SCHEMA`); returns it without Nones."""
    allowed = SCHEMA[where]
    for key, value in table.items():
        if key not in allowed:
            raise _fail(owner, where, key, value, f"unknown key; allowed keys: {', '.join(allowed)}")
        if value is None:
            continue
        types = allowed[key]
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, "a callable") for t in types))
            raise _fail(owner, where, key, value, f"must be {wanted}")
    return _present(table)


def _data_section(owner: str, table: Mapping[str, Any]) -> dict[str, Any]:
    from optreg import data
    from optreg.data.datasets import MNIST1D_ARGS, check_mnist1d

    table = _check_table(owner, table, "data")
    if "name" in table and "path" in table:
        raise _fail(owner, "data", "path", table["path"], "give either data.name or data.path, not both")
    if "name" in table and table["name"] not in data.available():
        raise _fail(owner, "data", "name", table["name"], f"allowed: {', '.join(data.available())} (or data.path)")
    if "path" in table and not Path(table["path"]).exists():
        raise _fail(owner, "data", "path", table["path"], "no such file or directory")
    for key, low in (("seed", 0), ("n_classes", 1)):
        if table.get(key, low) < low:
            raise _fail(owner, "data", key, table[key], f"must be an integer >= {low}")
    for key in ("val_fraction", "test_fraction"):
        value = table.get(key)
        if value is not None and (not 0 <= value < 1 or (key == "test_fraction" and value == 0)):
            interval = "(0, 1)" if key == "test_fraction" else "[0, 1)"
            raise _fail(owner, "data", key, value, f"must be in {interval}")
    name = table.get("name", None if "path" in table else "digits")
    if name == "mnist1d" and "test_fraction" in table:
        what = "does not apply: mnist1d has an official test set (its own train_split); leave it out"
        raise _fail(owner, "data", "test_fraction", table["test_fraction"], what)
    if "mnist1d" in table:
        generation = _present(table["mnist1d"])
        if name != "mnist1d":
            what = 'generation arguments apply to data.name = "mnist1d" only'
            raise _fail(owner, "data", "mnist1d", generation, what)
        for key, value in generation.items():
            if key not in MNIST1D_ARGS:
                what = f"unknown generation argument of mnist1d; allowed: {', '.join(MNIST1D_ARGS)}"
                raise _fail(owner, "data.mnist1d", key, value, what)
        try:
            check_mnist1d(generation)
        except OptregError as e:
            raise _wrap(owner, "data.mnist1d", e, generation) from None
        table["mnist1d"] = generation
    out = {"name": "digits"} if "path" not in table else {}
    return {**out, **table, "seed": table.get("seed", 0)}


def _default_lr(optimizer: Any) -> float | None:
    """The lr an optimizer (a registered name or a torch optimizer class) is built with when none is given."""
    from optreg import optim

    factory = optim.get(optimizer) if isinstance(optimizer, str) else optimizer
    try:
        default = inspect.signature(factory).parameters["lr"].default
    except (KeyError, TypeError, ValueError):
        return None
    return default if isinstance(default, int | float) and not isinstance(default, bool) else None


def _optimizer_section(owner: str, table: Mapping[str, Any]) -> dict[str, Any]:
    from optreg import optim

    table = _present(table)
    if "name" not in table:
        raise ConfigError(f"{owner}: optimizer.name is required; allowed: {', '.join(optim.available())}")
    name = table["name"]
    hparams = {k: v for k, v in table.items() if k != "name"}
    dummy = [torch.zeros(1, requires_grad=True)]
    if callable(name):  # a torch optimizer class, e.g. torch.optim.SGD
        try:
            name(dummy, **hparams)
        except (ValueError, TypeError) as e:
            raise _wrap(owner, "optimizer", e) from None
        return dict(table)
    if not isinstance(name, str) or name.lower() not in optim.available():
        raise _fail(owner, "optimizer", "name", name, f"allowed: {', '.join(optim.available())}")
    allowed = list(inspect.signature(optim.get(name)).parameters)
    for key, value in hparams.items():
        if key not in allowed:
            what = f"unknown hyperparameter of {name}; allowed: {', '.join(allowed)}"
            raise _fail(owner, "optimizer", key, value, what)
    try:  # the optimizer checks the values itself
        optim.create(name, dummy, **hparams)
    except OptregError as e:
        raise _wrap(owner, "optimizer", e, hparams) from None
    return {"name": name.lower(), **hparams}


def _schedule_keys(owner: str, table: Any, path: str) -> dict[str, Any]:
    """Names, keys and the ``"auto"`` lengths of a schedule table and the tables inside it (a copy, with
    each length left out filled in as ``"auto"``)."""
    from optreg import schedules

    table = _present(table)
    if "name" not in table:
        raise ConfigError(f"{owner}: {path}.name is required; allowed: {', '.join(schedules.available())}")
    name = table["name"]
    if name not in schedules.available():
        raise _fail(owner, path, "name", name, f"allowed: {', '.join(schedules.available())}")
    factory = ReduceLROnPlateau if name == "reduce_on_plateau" else schedules._REGISTRY[name]
    allowed = list(inspect.signature(factory).parameters)
    for key, value in table.items():
        if key != "name" and key not in allowed:
            raise _fail(owner, path, key, value, f"unknown option of {name}; allowed: {', '.join(allowed)}")
    if name in HORIZONS:
        key = HORIZONS[name]
        table.setdefault(key, AUTO)
        value = table[key]
        if isinstance(value, str) and value != AUTO:
            raise _fail(owner, path, key, value, f'must be an integer >= 1 or "{AUTO}" (the run\'s number of updates)')
    if name in _WRAPPERS:
        inner = table.get("schedule")
        if inner is None:
            raise ConfigError(f"{owner}: {path}.schedule is required for {name} (a table with a name)")
        if isinstance(inner, Mapping):
            table["schedule"] = _schedule_keys(owner, inner, f"{path}.schedule")
        elif not callable(inner):
            raise _fail(owner, path, "schedule", inner, "must be a table (a schedule with a name)")
    return table


def _innermost(schedule: Any, path: str = "schedule") -> tuple[dict[str, Any] | None, str]:
    """The table that holds the schedule's ``lr`` (inside warm-ups / per-epoch wrappers), and its key path."""
    while isinstance(schedule, Mapping) and schedule["name"] in _WRAPPERS:
        schedule, path = schedule["schedule"], f"{path}.schedule"
    if not isinstance(schedule, dict) or schedule["name"] == "reduce_on_plateau":
        return None, path
    return schedule, path


def _one_lr(owner: str, optimizer: dict[str, Any], schedule: Any) -> None:
    """One learning rate: the schedule's ``lr`` (its peak, ``schedule(0)`` after a warm-up) and the
    optimizer's are the same number. Either one given is copied to the other; neither: the optimizer's
    default; two different values are refused (the schedule sets the lr of every update, so the
    optimizer's would silently be ignored)."""
    inner, path = _innermost(schedule)
    if inner is None:
        return
    mine, theirs = inner.get("lr"), optimizer.get("lr")
    if mine is not None and theirs is not None and mine != theirs:
        raise ConfigError(
            f"{owner}: {path}.lr = {format_value(mine)} and optimizer.lr = {format_value(theirs)} differ: the "
            "schedule sets the lr of every update, so optimizer.lr would be ignored; give the lr in one of them "
            "(the other takes its value)"
        )
    lr = mine if mine is not None else theirs if theirs is not None else _default_lr(optimizer["name"])
    if lr is not None:
        inner["lr"] = optimizer["lr"] = lr


def _probe(table: Any) -> Any:
    """A schedule table with ``"auto"`` lengths replaced by a stand-in, to check the other values."""
    if not isinstance(table, Mapping):
        return table
    out = {k: _probe(v) if k == "schedule" else v for k, v in table.items()}
    key = HORIZONS.get(out["name"])
    if key is not None and out.get(key) == AUTO:
        out[key] = _PROBE_LENGTH
    return out


def _schedule_section(owner: str, schedule: Any, optimizer: dict[str, Any]) -> Any:
    """The checked schedule (a copy, lengths filled in as ``"auto"``); also sets the one lr (:func:`_one_lr`)."""
    from optreg import schedules

    if not isinstance(schedule, Mapping):
        return schedule  # a step -> lr callable (SCHEMA checked it is one)
    table = _schedule_keys(owner, schedule, "schedule")
    _one_lr(owner, optimizer, table)
    kwargs = {k: v for k, v in _probe(table).items() if k != "name"}
    try:
        if table["name"] == "reduce_on_plateau":
            ReduceLROnPlateau(**kwargs)
        else:
            schedules.create(table["name"], **kwargs)
    except OptregError as e:
        raise _wrap(owner, "schedule", e, table) from None
    return table


def _init_section(owner: str, table: Mapping[str, Any]) -> dict[str, Any]:
    from optreg import init

    table = _present(table)
    if "scheme" not in table:
        raise ConfigError(f"{owner}: init.scheme is required; allowed: {', '.join(init.available())}")
    if table["scheme"] not in init.available():
        raise _fail(owner, "init", "scheme", table["scheme"], f"allowed: {', '.join(init.available())}")
    # its options are checked by optreg.init.apply on the model itself (some depend on its sizes: sparse's
    # k <= fan_in, the class prior of a 'marginal' bias), before any training
    return dict(table)


#: Model keys the data determine (filled in by :func:`complete_model_spec`), and stand-ins used to check
#: a model spec before there are data.
_DATA_KEYS = {"in_features": 1, "out_features": 2, "in_channels": 1, "seq_len": 1}


def _model_section(owner: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """Every key and value of a model spec, checked by :func:`optreg.nn.models.validate` with stand-ins
    for the sizes the data give (whether conv maps vanish needs the real sizes: checked when it is built)."""
    from optreg.nn import models

    table = _present(table)
    kind = table.get("kind", "mlp")
    if kind not in models.available():
        raise _fail(owner, "model", "kind", kind, f"allowed: {', '.join(models.available())}")
    required, defaults = models.keys(kind)
    allowed = ["kind", *required, *defaults]
    for key, value in table.items():
        if key not in allowed:
            what = f"unknown key for kind {kind}; allowed keys: {', '.join(allowed)}"
            raise _fail(owner, "model", key, value, what)
    probe = {"kind": kind, **table}
    for key in required:
        if key not in probe and key not in _DATA_KEYS and key != "input_shape":
            raise ConfigError(f"{owner}: model.{key} is required for kind {kind}")
    for key, stand_in in _DATA_KEYS.items():
        if key in (*required, *defaults):
            probe.setdefault(key, stand_in)
    if "input_shape" in required:
        probe.setdefault("input_shape", [1] * (1 if kind == "cnn1d" else 2))
    try:
        models.validate(probe)
    except OptregError as e:
        raise _wrap(owner, "model", e, table) from None
    return dict(table)


def _train_section(owner: str, table: Mapping[str, Any]) -> dict[str, Any]:
    table = _check_table(owner, table, "train")
    for key, low in (("batch_size", 1), ("epochs", 1), ("steps", 1), ("seed", 0), ("log_every", 1), ("eval_every", 1)):
        if key in table and table[key] < low:
            raise _fail(owner, "train", key, table[key], f"must be an integer >= {low}")
    if "steps" in table and "epochs" in table:
        raise _fail(owner, "train", "steps", table["steps"], "give train.epochs or train.steps (updates), not both")
    clip = table.get("clip_grad_norm")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):
        raise _fail(owner, "train", "clip_grad_norm", clip, "must be a number > 0")
    out = {**DEFAULTS["train"], **table}
    if "steps" in table:
        out["epochs"] = None  # as many as the updates need
    if "early_stopping" in table:
        stopping = _check_table(owner, table["early_stopping"], "train.early_stopping")
        try:
            EarlyStopping(**stopping)
        except OptregError as e:
            raise _wrap(owner, "train.early_stopping", e, stopping) from None
        out["early_stopping"] = stopping
    return out


def _validation_monitors(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key path, metric)`` of what monitors a validation metric: early stopping, reduce-on-plateau."""
    out = []
    stopping, schedule = spec["train"]["early_stopping"], spec["schedule"]
    if stopping is not None:
        out.append(("train.early_stopping.monitor", stopping.get("monitor", "val_loss")))
    if isinstance(schedule, Mapping) and schedule["name"] == "reduce_on_plateau":
        out.append(("schedule.monitor", schedule.get("monitor", "val_loss")))
    return [(path, metric) for path, metric in out if metric.startswith("val_")]


def check_spec(spec: Mapping[str, Any], *, owner: str = "spec") -> dict[str, Any]:
    """Check a whole run spec (see the module docstring) before anything is loaded or built, and return it
    resolved: a new dict with every section, the defaults filled in (:data:`DEFAULTS`; a schedule's length
    ``"auto"``, its ``lr`` and the optimizer's made one), absent optional sections as None. Raises
    :class:`~optreg.errors.ConfigError` in one style, ``owner: key.path = value: what is wrong; allowed:
    ...``, values written as TOML; ``owner`` starts the message (``"config"`` for :mod:`optreg.config`).
    Checking a resolved spec again gives it back unchanged."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{owner}: expected a table (a dict), got {spec!r}")
    spec = _check_table(owner, spec, "")
    for section in ("model", "optimizer"):
        if section not in spec:
            raise ConfigError(f"{owner}: [{section}] is required")
    optimizer = _optimizer_section(owner, spec["optimizer"])
    resolved = {
        "name": spec.get("name", "run"),
        "data": _data_section(owner, spec.get("data", {})),
        "model": _model_section(owner, spec["model"]),
        "init": _init_section(owner, spec["init"]) if "init" in spec else None,
        "optimizer": optimizer,
        "schedule": _schedule_section(owner, spec["schedule"], optimizer) if "schedule" in spec else None,
        "train": _train_section(owner, spec.get("train", {})),
    }
    if resolved["data"].get("val_fraction", DEFAULTS["data"]["val_fraction"]) == 0:
        for path, metric in _validation_monitors(resolved):
            what = (
                'there is no validation split (data.val_fraction = 0): monitor a "train_" metric or give data '
                "a val_fraction > 0"
            )
            raise ConfigError(f"{owner}: {path} = {format_value(metric)}: {what}")
    return resolved


# ---------------------------------------------------------------------------------------------- builders


def load_data(section: Mapping[str, Any]) -> Any:
    """``optreg.data.load`` of a resolved ``data`` section (``name`` or ``path``, ``seed``, fractions,
    ``n_classes``, MNIST-1D's generation arguments); a refusal of the loader (a label out of range, a
    ``test_fraction`` for data with an official test set) comes tagged ``[data]``."""
    from optreg import data

    options = {k: section[k] for k in ("val_fraction", "test_fraction", "n_classes", "mnist1d") if k in section}
    try:
        return data.load(section.get("path", section.get("name", "digits")), section.get("seed", 0), **options)
    except OptregError as e:
        raise _wrap("spec", "data", e, section) from None


def complete_model_spec(spec: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """A model spec with the sizes the data (an :class:`optreg.data.Splits`) determine filled in where absent.

    ``out_features`` = the number of classes; ``in_features`` (``mlp``) = the number of input values;
    ``input_shape`` / ``in_channels`` (``cnn1d`` / ``cnn2d``) from the sample shape when it has a channel
    axis; ``in_features`` (recurrent kinds) = 1 for ``(N, T)`` inputs, ``F`` for ``(N, T, F)``, and
    ``seq_len`` = ``T`` for ``readout = "all"``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"spec: model must be a table (a dict), got {spec!r}")
    s = dict(spec)
    s.setdefault("kind", "mlp")
    s.setdefault("out_features", data.n_classes)
    shape = tuple(data.input_shape)
    kind = s["kind"]
    if kind == "mlp":
        s.setdefault("in_features", math.prod(shape))
    elif kind in ("cnn1d", "cnn2d"):
        ndim = 1 if kind == "cnn1d" else 2
        if len(shape) == ndim + 1:
            s.setdefault("in_channels", shape[0])
            s.setdefault("input_shape", list(shape[1:]))
        elif len(shape) == ndim:
            s.setdefault("input_shape", list(shape))
    elif kind in ("rnn", "gru", "lstm"):
        if len(shape) in (1, 2):  # (N, T) scalars, or (N, T, F)
            s.setdefault("in_features", 1 if len(shape) == 1 else shape[1])
        if s.get("readout") == "all" and len(shape) in (1, 2):
            s.setdefault("seq_len", shape[0])
    return s


def build_model(
    spec: Mapping[str, Any], data: Any, *, seed: int, init: str | Mapping[str, Any] | None = None
) -> nn.Module:
    """``optreg.nn.build(complete_model_spec(spec, data))`` with torch's RNG seeded by ``seed`` (the
    caller's RNG state is left alone), then ``optreg.init.apply`` when ``init`` is given: a scheme name,
    or ``{"scheme": ..., **options}`` (``bias``, ``activation``, the scheme's own options). Unless ``init``
    names an ``activation``, the model's own (``relu`` by default for MLPs / CNNs, ``tanh`` for RNNs) is
    passed on, so Xavier / He / orthogonal get its gain. The init generator is seeded with ``seed``: the
    same seed gives the same weights."""
    from optreg import init as initmod
    from optreg import nn as nnmod

    s = complete_model_spec(spec, data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nnmod.build(s)
    if init is not None:
        options = {"scheme": init} if isinstance(init, str) else dict(init)
        if "scheme" not in options:
            raise ConfigError(f"spec: init must be a scheme name or have a 'scheme', got {init!r}")
        scheme = options.pop("scheme")
        activation = s.get("activation", "relu" if s["kind"] in ("mlp", "cnn1d", "cnn2d") else "tanh")
        if "activation" not in options and activation in initmod.GAIN_ACTIVATIONS:
            options["activation"] = activation
        try:
            initmod.apply(model, scheme, generator=torch.Generator().manual_seed(seed), **options)
        except (OptregError, TypeError) as e:  # TypeError: an option apply() does not take
            raise _wrap("spec", "init", e, options) from None
    return model


def build_optimizer(
    optimizer: str | Callable[..., torch.optim.Optimizer], params: Iterable[Any], hparams: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """``optreg.optim.create(name, params, **hparams)`` for a name; ``optimizer(params, **hparams)`` for a
    torch optimizer class (e.g. ``torch.optim.SGD``)."""
    from optreg import optim

    if isinstance(optimizer, str):
        return optim.create(optimizer, params, **hparams)
    if callable(optimizer):
        return optimizer(params, **hparams)
    raise OptregTypeError(f"spec: optimizer.name must be a name or a torch optimizer class, got {optimizer!r}")


def build_schedule(schedule: Any) -> tuple[Callable[[int], float] | None, list[Callback]]:
    """``(step -> lr or None, callbacks)`` of a spec's ``schedule``: a table for
    :func:`optreg.schedules.create`, ``reduce_on_plateau`` (a :class:`ReduceLROnPlateau` callback, no step
    schedule), a callable (used as it is) or None."""
    from optreg import schedules

    if schedule is None or not isinstance(schedule, Mapping):
        return schedule, []
    kwargs = {k: v for k, v in schedule.items() if k != "name" and v is not None}
    if schedule["name"] == "reduce_on_plateau":
        return None, [ReduceLROnPlateau(**kwargs)]
    return schedules.create(schedule["name"], **kwargs), []


def _horizon(schedule: Any, steps_per_epoch: int | None) -> tuple[int, str] | None:
    """Where a resolved schedule table ends (in updates) and the key path of its length, or None for one
    that does not end (a warm-up counts inside the length; per_epoch counts epochs)."""
    path, scale = "schedule", 1
    while isinstance(schedule, Mapping) and schedule["name"] in _WRAPPERS:
        if schedule["name"] == "per_epoch":
            scale *= schedule["steps_per_epoch"]
        schedule, path = schedule["schedule"], f"{path}.schedule"
    if not isinstance(schedule, Mapping) or schedule["name"] not in HORIZONS:
        return None
    key = HORIZONS[schedule["name"]]
    return schedule[key] * scale, f"{path}.{key}"


def resolve_schedule(schedule: Any, total_steps: int | None, *, owner: str = "spec") -> Any:
    """A checked schedule table with its ``"auto"`` lengths set from the run's ``total_steps`` updates (in
    epochs inside ``per_epoch``); warns (:class:`~optreg.errors.OptregWarning`) when a cosine schedule
    given a length ends before training does (the rest of the run would stay at its ``min_lr``)."""
    if not isinstance(schedule, Mapping):
        return schedule

    def fill(table: Mapping[str, Any], total: int | None, path: str) -> dict[str, Any]:
        out = dict(table)
        if out["name"] in _WRAPPERS and isinstance(out.get("schedule"), Mapping):
            inner = total
            if out["name"] == "per_epoch" and total is not None:
                inner = -(-total // out["steps_per_epoch"])
            out["schedule"] = fill(out["schedule"], inner, f"{path}.schedule")
        key = HORIZONS.get(out["name"])
        if key is not None and out.get(key) == AUTO:
            if total is None:
                raise ConfigError(
                    f'{owner}: {path}.{key} = "{AUTO}": the run\'s number of updates is not known (training '
                    "data without a length); give a number"
                )
            out[key] = total
        return out

    resolved = fill(schedule, total_steps, "schedule")
    if total_steps is not None and resolved["name"] != "reduce_on_plateau":
        try:
            from optreg import schedules

            schedules.create(resolved["name"], **{k: v for k, v in resolved.items() if k != "name"})
        except OptregError as e:  # e.g. a warm-up as long as the whole run
            raise _wrap(owner, "schedule", e, resolved) from None
        end = _horizon(resolved, None)
        if end is not None and end[0] < total_steps and _innermost(resolved)[0]["name"] == "cosine":
            length, path = end
            warnings.warn(
                f"{owner}: {path} = {length} ends before training does ({total_steps} updates): the last "
                f"{total_steps - length} updates stay at min_lr; leave {path.rsplit('.', 1)[1]} out (\"{AUTO}\": "
                "the run's length) to anneal over the whole run",
                OptregWarning,
                stacklevel=3,
            )
    return resolved


def _steps_per_epoch(train: Any, batch_size: int) -> int | None:
    """Updates per epoch: ``ceil(N / batch_size)`` for tensors, ``len(loader)`` for a loader (None: unknown)."""
    y = getattr(train, "y", None)
    if y is not None:
        return max(1, -(-len(y) // batch_size))
    try:
        return max(1, len(train))
    except TypeError:
        return None


# ---------------------------------------------------------------------------------------------- run


@dataclass
class RunResult:
    """What :func:`run` returns (it pickles, model included).

    ``spec``: the resolved spec (defaults filled in, the model spec completed with the data's sizes, the
    seed that was used in ``train.seed``; ``data`` is None when the data were handed to :func:`run` and
    the spec had no ``data`` section). ``status``: ``"finished"`` or ``"diverged"`` (NaN / Inf; then
    ``error`` holds the message, ``diverged_at`` the step, and the history stops there). ``model``: the
    trained module. ``history``: the :class:`~optreg.train.History`. ``test_loss`` / ``test_accuracy``: the
    model on the test split (None without one, or after a divergence). ``steps`` / ``epochs``: the updates
    and epochs done; ``seconds``: the wall time of training (not of the test evaluation).
    """

    spec: dict[str, Any]
    status: str
    model: nn.Module
    history: History
    test_loss: float | None = None
    test_accuracy: float | None = None
    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0
    error: str | None = None
    diverged_at: int | None = None

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def scores(self) -> dict[str, float | None]:
        """The test scores, ``{"loss": ..., "accuracy": ...}``."""
        return {"loss": self.test_loss, "accuracy": self.test_accuracy}

    def final(self, name: str) -> Any:
        """The last epoch's value of an epoch field (``"val_accuracy"``), None if there is none."""
        return self.history.epochs[-1][name] if self.history.epochs else None

    def summary(self) -> dict[str, Any]:
        """The numbers a run store keeps: time, counts and final scores (time and the step for a divergence)."""
        if self.diverged:
            return {"seconds": self.seconds, "diverged_at_step": self.diverged_at}
        return {
            "seconds": self.seconds,
            "steps": self.steps,
            "epochs": self.epochs,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "final_train_loss": self.final("train_loss"),
            "final_val_accuracy": self.final("val_accuracy"),
        }


def _has_examples(split: Any) -> bool:
    """Whether a split holds data: a Split with at least one example, or any loader."""
    if split is None:
        return False
    y = getattr(split, "y", None)
    return len(y) > 0 if y is not None else True


def run(
    spec: Mapping[str, Any],
    data: Any = None,
    *,
    seed: int | None,
    callbacks: Sequence[Callback] = (),
    device: str | torch.device = "cpu",
    raise_on_divergence: bool = False,
    resume_from: str | Path | dict[str, Any] | None = None,
) -> RunResult:
    """Train the run ``spec`` describes and score it on the test split (see the module docstring).

    Args:
        spec: the run description (a plain dict, the shape of a TOML config); checked by :func:`check_spec`.
        data: an :class:`optreg.data.Splits` (its train / val / test splits may also be DataLoaders), or
            None to load the spec's ``data`` section. An empty validation split means no validation.
        seed: seeds the weights, the init scheme, the shuffling and dropout; None takes ``train.seed``.
        callbacks: trainer callbacks, run before the ones the spec asks for (early stopping,
            reduce-on-plateau) in each hook.
        device: where training runs.
        raise_on_divergence: re-raise the trainer's :class:`~optreg.errors.DivergenceError` (with the
            partial :class:`RunResult` as its ``result``) instead of returning ``status == "diverged"``.
        resume_from: a checkpoint of this run (a path or the loaded state,
            :class:`~optreg.train.Checkpoint`) to continue from, bit for bit (``Trainer.fit(resume_from=)``).

    Any other error (a bad model spec, a callback's) propagates.
    """
    resolved = check_spec(spec)
    if seed is not None:
        resolved["train"]["seed"] = check_int("run", "seed", seed, 0)
    train = resolved["train"]
    seed = train["seed"]
    if data is None:
        data = load_data(resolved["data"])
    elif not all(hasattr(data, a) for a in ("train", "val", "test", "n_classes", "input_shape")):
        raise OptregTypeError(f"run: data must be optreg.data Splits (train, val, test), got {type(data).__name__}")
    elif spec.get("data") is None:
        resolved["data"] = None  # handed in, not described by the spec
    if not _has_examples(data.val):
        for path, metric in _validation_monitors(resolved):
            what = 'the data have no validation split: monitor a "train_" metric or hand in a validation split'
            raise ConfigError(f"spec: {path} = {format_value(metric)}: {what}")
    resolved["model"] = complete_model_spec(resolved["model"], data)
    try:  # errors of init come tagged [init]; the model's own are tagged here
        model = build_model(resolved["model"], data, seed=seed, init=resolved["init"])
    except OptregError as e:
        raise e if isinstance(e, ConfigError) else _wrap("spec", "model", e, resolved["model"]) from None
    per_epoch = _steps_per_epoch(data.train, train["batch_size"])
    if train["steps"] is not None:
        total = train["steps"]
        epochs = total if per_epoch is None else -(-total // per_epoch)
    else:
        epochs = train["epochs"]
        total = None if per_epoch is None else epochs * per_epoch
    resolved["schedule"] = resolve_schedule(resolved["schedule"], total)
    hparams = {k: v for k, v in resolved["optimizer"].items() if k != "name"}
    optimizer = build_optimizer(resolved["optimizer"]["name"], model.parameters(), hparams)
    step_schedule, plateau = build_schedule(resolved["schedule"])
    stopping = [] if train["early_stopping"] is None else [EarlyStopping(**train["early_stopping"])]
    start = time.perf_counter()
    trainer = Trainer(
        model,
        optimizer,
        batch_size=train["batch_size"],
        epochs=epochs,
        max_steps=train["steps"],
        shuffle=train["shuffle"],
        eval_every=train["eval_every"],
        schedule=step_schedule,
        clip_grad_norm=train["clip_grad_norm"],
        penalty=train["penalty"],
        batch_transform=train["batch_transform"],
        callbacks=[*callbacks, *stopping, *plateau],
        seed=seed,
        device=device,
        log_every=train["log_every"],
    )
    try:
        test = data.test if train["eval_every"] is not None and _has_examples(data.test) else None
        history = trainer.fit(data.train, data.val if _has_examples(data.val) else None, test=test,
                              resume_from=resume_from)
    except DivergenceError as e:
        partial = History(list(e.history.iterations), list(e.history.epochs), list(e.history.evaluations))
        result = RunResult(
            resolved,
            "diverged",
            model,
            partial,
            steps=trainer.step,
            epochs=trainer.epoch,
            seconds=time.perf_counter() - start,
            error=str(e),
            diverged_at=e.step,
        )
        if raise_on_divergence:
            e.result = result
            raise
        return result
    seconds = time.perf_counter() - start
    scores = trainer.evaluate(data.test) if _has_examples(data.test) else {"loss": None, "accuracy": None}
    return RunResult(
        resolved,
        "finished",
        model,
        history,
        test_loss=scores["loss"],
        test_accuracy=scores["accuracy"],
        steps=trainer.step,
        epochs=trainer.epoch,
        seconds=seconds,
    )
