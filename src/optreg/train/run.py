"""One path from a run description to a trained, evaluated model: :func:`run`.

A *spec* is a plain dict with the shape of a TOML run config (:mod:`optreg.config` reads one from a file)::

    spec = {
        "name": "adam-digits",                                   # a label (default "run")
        "data": {"name": "digits", "seed": 0},                   # or "path"; val_fraction, test_fraction
        "model": {"kind": "mlp", "hidden": [128]},               # optreg.nn.build; sizes from the data
        "init": {"scheme": "he_normal", "bias": "zeros"},        # optional: optreg.init.apply
        "optimizer": {"name": "adam", "lr": 1e-3},               # optreg.optim.create(name, params, **rest)
        "schedule": {"name": "cosine", "lr": 1e-3, "total_steps": 820},   # optional: optreg.schedules.create
        "train": {"batch_size": 32, "epochs": 20, "seed": 0, "clip_grad_norm": 1.0, "log_every": 1,
                  "early_stopping": {"monitor": "val_loss", "patience": 5}},
    }
    result = optreg.train.run(spec, None, seed=0)   # None: load the [data] section; or pass optreg.data Splits
    result.model, result.history, result.test_accuracy, result.status

Every section is optional but ``model`` and ``optimizer``. Beyond what TOML can write, a spec built in
Python may hold a torch optimizer class as ``optimizer.name`` (``torch.optim.SGD``), a ``step -> lr``
callable as ``schedule`` (optreg's schedules are frozen dataclasses: printable and picklable) and a
``model -> scalar`` callable as ``train.penalty`` (added to the objective, e.g. ``lambda * l_p(theta)``,
eq. (7.58)). ``schedule = {"name": "reduce_on_plateau", ...}`` drives the lr from a validation metric
(the :class:`~optreg.train.ReduceLROnPlateau` callback) instead of the step. A value of None is the
same as leaving the key out.

:func:`check_spec` checks every key before anything is built: unknown keys and wrong types name the key
path (``spec: optimizer.betaa = 0.9: unknown hyperparameter of adam; allowed: lr, ...``); values go to
the component they are for, which checks them itself (the optimizer is built on a dummy parameter, the
schedule and early stopping are constructed), and its message is tagged with the section
(``spec: [optimizer] adam: beta2 must be in [0, 1), got 1.5``). All errors are
:class:`~optreg.errors.ConfigError`. The model and the init scheme's options are checked when the model is
built (some depend on the sizes the data give), still before any training.

:func:`run` is deterministic: the same spec, data and seed give the same numbers, bit for bit (the
weights are drawn under ``torch.manual_seed(seed)``, the init scheme from a generator seeded with
``seed``, the shuffling and dropout by the :class:`~optreg.train.Trainer` seeded with ``seed``). It
prints nothing and writes no files; it reports through ``callbacks`` and its :class:`RunResult`. The spec
and the result pickle (a hyperparameter-search trial is this call in another process).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optreg._checks import check_int
from optreg.errors import ConfigError, DivergenceError, OptregError, OptregTypeError
from optreg.train.callbacks import Callback, EarlyStopping, ReduceLROnPlateau
from optreg.train.trainer import History, Trainer

__all__ = [
    "SCHEMA",
    "RunResult",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "check_spec",
    "complete_model_spec",
    "load_data",
    "run",
]

_NUMBER = (int, float)
_TABLE = (Mapping,)

#: Allowed keys of the fixed-shape tables and their types (``model``, ``init``, ``optimizer`` and
#: ``schedule`` are checked by the component their values go to).
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "": {"name": (str,), "data": _TABLE, "model": _TABLE, "init": _TABLE, "optimizer": _TABLE,
         "schedule": (Mapping, Callable), "train": _TABLE},
    "data": {"name": (str,), "path": (str,), "seed": (int,), "val_fraction": _NUMBER, "test_fraction": _NUMBER},
    "train": {"batch_size": (int,), "epochs": (int,), "seed": (int,), "clip_grad_norm": _NUMBER,
              "log_every": (int,), "early_stopping": _TABLE, "penalty": (Callable,)},
    "train.early_stopping": {"monitor": (str,), "mode": (str,), "patience": (int,), "min_delta": _NUMBER,
                             "restore_best": (bool,)},
}  # fmt: skip

#: What :func:`check_spec` fills in for a key left out (None: nothing, the feature is off).
DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"batch_size": 32, "epochs": 10, "seed": 0, "clip_grad_norm": None, "log_every": 1,
              "early_stopping": None, "penalty": None},
}  # fmt: skip

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", Mapping: "a table", bool: "true or false"}


def _fail(owner: str, where: str, key: str, value: Any, what: str) -> ConfigError:
    path = f"{where}.{key}" if where else key
    return ConfigError(f"{owner}: {path} = {value!r}: {what}")


def _wrap(owner: str, section: str, error: Exception) -> ConfigError:
    """A component's own error (it names the field, the value and what is allowed), tagged with the section."""
    return ConfigError(f"{owner}: [{section}] {error}")


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

    table = _check_table(owner, table, "data")
    if "name" in table and "path" in table:
        raise _fail(owner, "data", "path", table["path"], "give either data.name or data.path, not both")
    if "name" in table and table["name"] not in data.available():
        raise _fail(owner, "data", "name", table["name"], f"allowed: {', '.join(data.available())} (or data.path)")
    if "path" in table and not Path(table["path"]).exists():
        raise _fail(owner, "data", "path", table["path"], "no such file or directory")
    if table.get("seed", 0) < 0:
        raise _fail(owner, "data", "seed", table["seed"], "must be an integer >= 0")
    for key in ("val_fraction", "test_fraction"):
        value = table.get(key)
        if value is not None and (not 0 <= value < 1 or (key == "test_fraction" and value == 0)):
            interval = "(0, 1)" if key == "test_fraction" else "[0, 1)"
            raise _fail(owner, "data", key, value, f"must be in {interval}")
    out = {"name": "digits"} if "path" not in table else {}
    return {**out, **table, "seed": table.get("seed", 0)}


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
        raise _wrap(owner, "optimizer", e) from None
    return {"name": name.lower(), **hparams}


def _schedule_section(owner: str, schedule: Any) -> Any:
    from optreg import schedules

    if not isinstance(schedule, Mapping):
        return schedule  # a step -> lr callable (SCHEMA checked it is one)
    table = _present(schedule)
    if "name" not in table:
        raise ConfigError(f"{owner}: schedule.name is required; allowed: {', '.join(schedules.available())}")
    name = table["name"]
    if name not in schedules.available():
        raise _fail(owner, "schedule", "name", name, f"allowed: {', '.join(schedules.available())}")
    kwargs = {k: v for k, v in table.items() if k != "name"}
    if name == "reduce_on_plateau":
        allowed = list(inspect.signature(ReduceLROnPlateau).parameters)
        for key, value in kwargs.items():
            if key not in allowed:
                raise _fail(owner, "schedule", key, value, f"unknown option of {name}; allowed: {', '.join(allowed)}")
    try:
        ReduceLROnPlateau(**kwargs) if name == "reduce_on_plateau" else schedules.create(name, **kwargs)
    except OptregError as e:
        raise _wrap(owner, "schedule", e) from None
    return dict(schedule)


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


def _train_section(owner: str, table: Mapping[str, Any]) -> dict[str, Any]:
    table = _check_table(owner, table, "train")
    for key, low in (("batch_size", 1), ("epochs", 1), ("seed", 0), ("log_every", 1)):
        if key in table and table[key] < low:
            raise _fail(owner, "train", key, table[key], f"must be an integer >= {low}")
    clip = table.get("clip_grad_norm")
    if clip is not None and not (clip > 0 and math.isfinite(clip)):
        raise _fail(owner, "train", "clip_grad_norm", clip, "must be a number > 0")
    out = {**DEFAULTS["train"], **table}
    if "early_stopping" in table:
        stopping = _check_table(owner, table["early_stopping"], "train.early_stopping")
        try:
            EarlyStopping(**stopping)
        except OptregError as e:
            raise _wrap(owner, "train.early_stopping", e) from None
        out["early_stopping"] = stopping
    return out


def check_spec(spec: Mapping[str, Any], *, owner: str = "spec") -> dict[str, Any]:
    """Check a run spec (see the module docstring) and return it resolved: a new dict with every section,
    the ``train`` defaults filled in (:data:`DEFAULTS`), ``data`` with its name and seed, absent optional
    sections as None. Raises :class:`~optreg.errors.ConfigError` naming the key path; ``owner`` starts
    the message (``"config"`` for :mod:`optreg.config`)."""
    from optreg import nn as nnmod

    if not isinstance(spec, Mapping):
        raise ConfigError(f"{owner}: expected a table (a dict), got {spec!r}")
    spec = _check_table(owner, spec, "")
    for section in ("model", "optimizer"):
        if section not in spec:
            raise ConfigError(f"{owner}: [{section}] is required")
    model = dict(spec["model"])
    kind = model.get("kind", "mlp")
    if kind not in nnmod.available():
        raise _fail(owner, "model", "kind", kind, f"allowed: {', '.join(nnmod.available())}")
    return {
        "name": spec.get("name", "run"),
        "data": _data_section(owner, spec.get("data", {})),
        "model": model,
        "init": _init_section(owner, spec["init"]) if "init" in spec else None,
        "optimizer": _optimizer_section(owner, spec["optimizer"]),
        "schedule": _schedule_section(owner, spec["schedule"]) if "schedule" in spec else None,
        "train": _train_section(owner, spec.get("train", {})),
    }


# ---------------------------------------------------------------------------------------------- builders


def load_data(section: Mapping[str, Any]) -> Any:
    """``optreg.data.load`` of a resolved ``data`` section (``name`` or ``path``, ``seed``, fractions)."""
    from optreg import data

    options = {k: section[k] for k in ("val_fraction", "test_fraction") if k in section}
    return data.load(section.get("path", section.get("name", "digits")), section.get("seed", 0), **options)


def complete_model_spec(spec: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """A model spec with the sizes the data (an :class:`optreg.data.Splits`) determine filled in where absent.

    ``out_features`` = the number of classes; ``in_features`` (``mlp``) = the number of input values;
    ``input_shape`` / ``in_channels`` (``cnn1d`` / ``cnn2d``) from the sample shape when it has a channel
    axis; ``in_features`` (recurrent kinds) = 1 for ``(N, T)`` inputs.
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
    elif kind in ("rnn", "gru", "lstm") and len(shape) == 1:
        s.setdefault("in_features", 1)
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
            raise _wrap("spec", "init", e) from None
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
    resolved["model"] = complete_model_spec(resolved["model"], data)
    try:  # errors of init come tagged [init]; the model's own are tagged here
        model = build_model(resolved["model"], data, seed=seed, init=resolved["init"])
    except OptregError as e:
        raise e if isinstance(e, ConfigError) else _wrap("spec", "model", e) from None
    hparams = {k: v for k, v in resolved["optimizer"].items() if k != "name"}
    optimizer = build_optimizer(resolved["optimizer"]["name"], model.parameters(), hparams)
    step_schedule, plateau = build_schedule(resolved["schedule"])
    stopping = [] if train["early_stopping"] is None else [EarlyStopping(**train["early_stopping"])]
    start = time.perf_counter()
    trainer = Trainer(
        model,
        optimizer,
        batch_size=train["batch_size"],
        epochs=train["epochs"],
        schedule=step_schedule,
        clip_grad_norm=train["clip_grad_norm"],
        penalty=train["penalty"],
        callbacks=[*callbacks, *stopping, *plateau],
        seed=seed,
        device=device,
        log_every=train["log_every"],
    )
    try:
        history = trainer.fit(data.train, data.val if _has_examples(data.val) else None, resume_from=resume_from)
    except DivergenceError as e:
        partial = History(list(e.history.iterations), list(e.history.epochs))
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
