"""Tuning a lab training config (section 7.6): the ``[tune]`` table and ``optreg tune``.

Any config :mod:`optreg.config` reads becomes a search by adding a ``[tune]`` table. Its dotted keys are
*key paths* into the config, each with the distribution it is searched over; its plain keys are settings;
its sub-tables named after a method hold that method's options::

    [tune]
    metric = "val_accuracy"      # the objective: val_accuracy (maximized) or val_loss (minimized)
    direction = "maximize"       # optional: follows from the metric
    reduce = "last"              # the metric of the last epoch ("last") or of the best epoch ("best")
    seed = 0                     # the search's seed (each trial trains with the config's train.seed)
    method = "gp-ei"             # optional defaults for optreg tune's --method and --trials
    trials = 30

    "optimizer.lr" = {float = [1e-4, 1.0], log = true}             # log-uniform (file 001's practice)
    "optimizer.weight_decay" = {float = [1e-6, 1e-2], log = true}
    "model.dropout" = {float = [0.0, 0.5]}
    "train.batch_size" = {int = [16, 128], log = true}
    "model.hidden" = {categorical = [[64], [128, 64]]}             # any TOML values, lists included
    "optimizer.name" = {categorical = ["sgd", "adam"]}
    "optimizer.momentum" = {float = [0.0, 0.99], when = {"optimizer.name" = "sgd"}}   # conditional

    [tune.hyperband]             # options of one method, used when that method runs
    max_budget = 27              # R, in epochs (default: train.epochs)
    eta = 3

Distributions: ``{float = [low, high]}``, ``{int = [low, high]}`` (both with ``log = true|false``) and
``{categorical = [choice, ...]}``; ``when = {"key.path" = value}`` (or a list of values) makes a key exist
only when another searched key has one of those values (:mod:`optreg.hpo.space`). Every mistake is a
:class:`~optreg.errors.ConfigError` naming the key path and the value: an unknown setting or method, an
empty, inverted or (on a log scale) non-positive range, a key the config cannot take (the config is checked
with the searched keys at the ends of their ranges and at each choice, and at a few random points),
``data.*`` (every trial must be scored on the same validation split), ``train.epochs`` under a method that
sets the epochs itself.

The objective (:class:`SpecObjective`) is one :func:`optreg.train.run` of the config with the trial's
values: the validation ``metric`` (never the test split) after the last (or best) epoch, reported after
every epoch (so ``median-stop`` can stop a trial below the median curve). Multi-fidelity methods
(``halving``, ``hyperband``, ``bohb``, ``coarse-to-fine`` with ``budgets``) give ``train.epochs = budget``; a config
seen before at a smaller budget resumes from its checkpoint (one file per config under
``OUT/checkpoints/``), bit for bit as if it had trained the larger budget from the start (a schedule whose
length is fixed in steps, such as cosine's ``total_steps``, is not rescaled with the budget). A run that
diverges is a failed trial with its error.

:func:`tune` runs the study in ``OUT/study.sqlite`` (``resume=True`` continues one that was killed) and
writes ``trials.csv``, ``best.toml`` (the config with the best values, runnable with ``optreg train``) and
the figures: the optimization history, parallel coordinates, the learning curves, the GP posterior along
each dimension (``gp-*``) and the successive-halving rungs (``halving``, ``hyperband``, ``bohb``). It prints nothing.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optreg import hpo
from optreg.errors import ConfigError, DivergenceError, OptregError
from optreg.train.callbacks import Callback, Checkpoint

__all__ = [
    "METRICS",
    "SETTINGS",
    "SpecObjective",
    "TuneConfig",
    "TuneResult",
    "dumps_toml",
    "load",
    "parse",
    "tune",
]

#: The validation metrics a study can optimize, with their direction.
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
#: The plain keys of ``[tune]``.
SETTINGS = ("metric", "direction", "reduce", "seed", "method", "trials")
#: Methods that set ``train.epochs`` from their budget (coarse-to-fine only with ``budgets``).
FIDELITY = ("halving", "hyperband", "bohb")
_KINDS = ("float", "int", "categorical")
_SECTIONS = ("model", "init", "optimizer", "schedule", "train")


def _fail(path: str, value: Any, what: str) -> ConfigError:
    return ConfigError(f"tune: {path} = {value!r}: {what}")


@dataclass(frozen=True)
class TuneConfig:
    """A checked ``[tune]`` table with the config it tunes (see the module docstring).

    ``base``: the config document without ``[tune]``; ``space``: the :class:`~optreg.hpo.Space` over the key
    paths; ``decode``: for a categorical key with non-scalar choices, ``{stored text: TOML value}``;
    ``options``: ``{method: its options}`` from the method sub-tables.
    """

    name: str
    base: dict[str, Any]
    space: hpo.Space
    metric: str = "val_accuracy"
    direction: str = "maximize"
    reduce: str = "last"
    seed: int = 0
    method: str = "random"
    trials: int | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    decode: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<config>"

    def apply(self, params: Mapping[str, Any], budget: int | None = None) -> dict[str, Any]:
        """The config document with the trial's values set at their key paths (and ``train.epochs = budget``)."""
        return apply(self.base, params, self.decode, budget)

    def fidelity(self, method: str) -> bool:
        """Whether ``method`` (with this config's options) sets the epochs from its budget."""
        return method in FIDELITY or (method == "coarse-to-fine" and bool(self.options.get(method, {}).get("budgets")))


def apply(
    base: Mapping[str, Any], params: Mapping[str, Any], decode: Mapping[str, Mapping[str, Any]], budget: int | None
) -> dict[str, Any]:
    """``base`` (a config document) with ``params`` (``{key path: value}``) set, and the budget as epochs."""
    doc = copy.deepcopy(dict(base))
    items = dict(params)
    if budget is not None:
        items["train.epochs"] = budget
    for path, value in items.items():
        if path in decode:
            value = copy.deepcopy(decode[path][value])
        *parents, leaf = path.split(".")
        table = doc
        for key in parents:
            table = table.setdefault(key, {})
        table[leaf] = value
    return doc


# ---------------------------------------------------------------------------------------------- parsing


def _stored(value: Any) -> Any:
    """A categorical choice as the space stores it: a scalar as it is, a list or table as JSON text."""
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value)


def _distribution(path: str, spec: Any, decode: dict[str, dict[str, Any]]) -> hpo.Distribution:
    if not isinstance(spec, Mapping):
        raise _fail(
            path,
            spec,
            "must be a table such as {float = [low, high], log = true}, {int = [low, high]} or {categorical = [...]}",
        )
    kinds = [k for k in _KINDS if k in spec]
    if len(kinds) != 1:
        raise _fail(path, dict(spec), f"must name exactly one of {', '.join(_KINDS)}")
    kind = kinds[0]
    allowed = {kind, "when", *(("log",) if kind != "categorical" else ())}
    for key in spec:
        if key not in allowed:
            raise _fail(path, dict(spec), f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, Mapping) or not when:
            raise _fail(path, dict(spec), 'when must be a table {"key.path" = value(s)}')
        when = {
            parent: [_stored(v) for v in vals] if isinstance(vals, list) else _stored(vals)
            for parent, vals in when.items()
        }
    try:
        if kind == "categorical":
            choices = spec["categorical"]
            if not isinstance(choices, list) or not choices:
                raise _fail(path, dict(spec), "categorical must be a non-empty list of choices")
            stored = [_stored(c) for c in choices]
            if any(s is not c for s, c in zip(stored, choices)):
                decode[path] = dict(zip(stored, choices))
            return hpo.Categorical(stored, when=when)
        bounds = spec[kind]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise _fail(path, dict(spec), f"{kind} must be a list [low, high]")
        cls = hpo.Float if kind == "float" else hpo.Int
        return cls(bounds[0], bounds[1], log=spec.get("log", False), when=when)
    except ConfigError:
        raise
    except OptregError as e:
        raise _fail(path, dict(spec), str(e)) from None


def parse(document: Mapping[str, Any], source: str = "<config>") -> TuneConfig:
    """Check a config document with a ``[tune]`` table (see the module docstring)."""
    from optreg import config as cfg

    if not isinstance(document, Mapping):
        raise ConfigError(f"tune: expected a table, got {document!r}")
    table = document.get("tune")
    if not isinstance(table, Mapping):
        raise ConfigError(f"tune: {source} has no [tune] table (the searched keys and the objective)")
    base = {k: v for k, v in document.items() if k != "tune"}
    conf = cfg.parse(base, source=source)  # the config itself must be valid
    settings: dict[str, Any] = {}
    dists: dict[str, hpo.Distribution] = {}
    decode: dict[str, dict[str, Any]] = {}
    options: dict[str, dict[str, Any]] = {}
    methods = hpo.methods()
    for key, value in table.items():
        if "." in key:
            section = key.split(".", 1)[0]
            if section == "data":
                raise _fail(key, value, "data cannot be searched: every trial is scored on the same validation split")
            if section not in _SECTIONS or key.endswith("."):
                raise _fail(key, value, f"a key path must start with one of {', '.join(_SECTIONS)}")
            dists[key] = _distribution(key, value, decode)
        elif key in SETTINGS:
            settings[key] = value
        elif key in methods:
            if not isinstance(value, Mapping):
                raise _fail(key, value, f"must be a table of {key}'s options ([tune.{key}])")
            options[key] = dict(value)
        else:
            raise _fail(
                key,
                value,
                f"unknown setting; settings: {', '.join(SETTINGS)}; method tables: "
                f'{", ".join(methods)}; searched keys are quoted key paths ("optimizer.lr")',
            )
    if not dists:
        raise ConfigError(
            'tune: [tune] names no searched key (e.g. "optimizer.lr" = {float = [1e-4, 1.0], log = true})'
        )
    try:
        space = hpo.Space(dists)
    except OptregError as e:
        raise ConfigError(f"tune: {str(e).removeprefix('hpo: ')}") from None
    metric = settings.get("metric", "val_accuracy")
    if metric not in METRICS:
        raise _fail("metric", metric, f"allowed: {', '.join(METRICS)} (the best trial is chosen by validation)")
    direction = settings.get("direction", METRICS[metric])
    if direction != METRICS[metric]:
        raise _fail("direction", direction, f"{metric} is to {METRICS[metric]}")
    reduce = settings.get("reduce", "last")
    if reduce not in ("last", "best"):
        raise _fail("reduce", reduce, "allowed: last, best")
    seed = settings.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail("seed", seed, "must be an integer >= 0")
    method = settings.get("method", "random")
    if method not in methods:
        raise _fail("method", method, f"allowed: {', '.join(methods)}")
    trials = settings.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise _fail("trials", trials, "must be an integer >= 1")
    tc = TuneConfig(conf.name, base, space, metric, direction, reduce, seed, method, trials, options, decode, source)
    _check_points(tc)
    return tc


def _check_points(tc: TuneConfig) -> None:
    """The config must accept every searched key at the ends of its range and at each choice (the others at
    their first value), and a few random points (for conditional keys)."""
    from optreg.train.run import check_spec

    first = {n: d.low if isinstance(d, hpo.Float | hpo.Int) else d.choices[0] for n, d in tc.space.dists.items()}

    def point(overrides: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for n in tc.space.names:
            if tc.space.active(n, params):
                params[n] = overrides.get(n, first[n])
        return params

    def check(params: dict[str, Any], what: str) -> None:
        try:
            check_spec(tc.apply(params), owner="config")
        except OptregError as e:
            raise ConfigError(f"tune: {what} makes the config invalid: {e}") from None

    check(point({}), "every searched key at its first value (low end, first choice)")
    for n, d in tc.space.dists.items():
        values = [d.low, d.high] if isinstance(d, hpo.Float | hpo.Int) else list(d.choices)
        for v in values:
            p = point({n: v})
            if n in p:
                shown = tc.decode[n][v] if n in tc.decode else v
                check(p, f"{n} = {shown!r}")
    import numpy as np

    for k in range(8):
        p = tc.space.sample(np.random.default_rng([tc.seed, 7, k]))
        check(p, "the random point " + ", ".join(f"{n} = {v!r}" for n, v in p.items()))


def load(path: str | os.PathLike[str]) -> TuneConfig:
    """Read a TOML config with a ``[tune]`` table and check it (:func:`parse`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"tune: {p}: no such file")
    try:
        document = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"tune: {p}: not valid TOML ({e})") from None
    return parse(document, source=str(p))


# ---------------------------------------------------------------------------------------------- objective


class _Report(Callback):
    """Reports ``record[metric]`` after every epoch (step = epochs done) and stops the run when the method
    says so (``median-stop``)."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        value = record[self.metric]
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, trainer.epoch)
        if self.trial.should_stop():
            trainer.stop = True


class _Resume(Callback):
    """Continues a run from a checkpoint of the same config at a smaller budget: restores the whole training
    state at fit start (after the other callbacks have set up theirs, before the first epoch)."""

    order = 50

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def on_fit_start(self, trainer: Any) -> None:
        trainer.load_state_dict(self.state)


_DATA: dict[str, Any] = {}


def _data(section: Mapping[str, Any]) -> Any:
    """The config's data, loaded once per process."""
    from optreg.train.run import load_data

    key = json.dumps(section, sort_keys=True, default=str)
    if key not in _DATA:
        _DATA[key] = load_data(section)
    return _DATA[key]


def config_key(document: Mapping[str, Any]) -> str:
    """A file-name-safe key of a configuration: the hash of its config document's canonical JSON without
    ``train.epochs`` (so every budget of one configuration shares it, and no other configuration does)."""
    doc = copy.deepcopy(dict(document))
    doc.get("train", {}).pop("epochs", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class SpecObjective:
    """``objective(params, budget=None, trial=None)``: one :func:`optreg.train.run` of the config with the
    trial's values; returns the validation ``metric`` (last or best epoch). Picklable (a worker process or
    a Ray task runs it).

    ``checkpoints``: a folder for one checkpoint per configuration (multi-fidelity methods): a budget ``r'``
    resumes the checkpoint of an earlier budget ``r <= r'`` of the same configuration, and the checkpoint
    is updated after every epoch (so a trial killed mid-run resumes from its last epoch too).
    """

    config: TuneConfig
    checkpoints: str | None = None
    device: str = "cpu"
    threads: int | None = None

    def __call__(self, params: dict[str, Any], budget: int | None = None, trial: Any = None) -> float:
        import torch

        from optreg import train
        from optreg.train.checkpoint import load_checkpoint
        from optreg.train.run import check_spec

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        doc = self.config.apply(params, budget)
        spec = check_spec(doc, owner="config")
        data = _data(spec["data"])
        callbacks: list[Callback] = [] if trial is None else [_Report(trial, self.config.metric)]
        if self.checkpoints is not None and budget is not None:
            path = Path(self.checkpoints) / f"{config_key(doc)}.pt"
            if path.is_file():
                state = load_checkpoint(path)
                if state["epoch"] <= budget:
                    callbacks.append(_Resume(state))
            callbacks.append(Checkpoint(path))
        result = train.run(doc, data, seed=None, callbacks=callbacks, device=self.device)
        if result.diverged:
            raise DivergenceError(result.error)
        values = [r[self.config.metric] for r in result.history.epochs if r[self.config.metric] is not None]
        if not values:
            raise ConfigError(f"tune: metric {self.config.metric!r} was not measured (no validation split?)")
        if self.config.reduce == "last":
            return float(values[-1])
        return float(max(values) if self.config.direction == "maximize" else min(values))


# ---------------------------------------------------------------------------------------------- TOML out

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"tune: cannot write {value!r} to TOML")


def dumps_toml(document: Mapping[str, Any], header: str = "") -> str:
    """A config document as TOML text (scalars and lists inline, tables as ``[section]`` headers; None
    values left out, as TOML has none); ``tomllib.loads`` gives the document back."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def emit(table: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        plain = {k: v for k, v in table.items() if v is not None and not isinstance(v, Mapping)}
        subs = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if prefix and (plain or not subs):
            lines.append("")
            lines.append("[" + ".".join(_toml_key(k) for k in prefix) + "]")
        for k, v in plain.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subs.items():
            emit(v, (*prefix, k))

    emit(document, ())
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------- running


@dataclass
class TuneResult:
    """What :func:`tune` returns: every ``trials`` of the study (its storage is closed), the ``table`` (the
    best trials, best first), the ``best`` trial (None if none completed), the ``paths`` written and
    ``notes``."""

    trials: list[hpo.Trial]
    table: list[dict[str, Any]]
    best: hpo.Trial | None
    paths: dict[str, Path]
    notes: str


def method_options(tc: TuneConfig, method: str, n_trials: int | None) -> dict[str, Any]:
    """The options ``method`` runs with: its ``[tune.<method>]`` table, with budgets in epochs filled in
    (``halving``: ``cumulative = true``, since a trial resumes its configuration's checkpoint, so the epochs
    trained are exactly Algorithm 7.2's allocation of ``budget``, and ``budget = max(N K, ceil(K E N / (N - 1)))``
    with ``K = ceil(log2 N)`` rounds and ``E = train.epochs``, so the last round's survivors reach about ``E``
    epochs; ``hyperband`` and ``bohb``: ``max_budget = train.epochs``)."""
    options = dict(tc.options.get(method, {}))
    epochs = tc.base.get("train", {}).get("epochs", 10)
    if method == "halving":
        options.setdefault("cumulative", True)
    if method == "halving" and "budget" not in options and n_trials is not None and n_trials >= 2:
        rounds = math.ceil(math.log2(n_trials))
        options["budget"] = max(n_trials * rounds, math.ceil(rounds * epochs * n_trials / (n_trials - 1)))
    if method in ("hyperband", "bohb"):
        options.setdefault("max_budget", epochs)
    return options


def expected_trials(study: hpo.Study) -> int | None:
    """How many trials the study will have when done (None: not known in advance)."""
    from optreg.hpo.halving import Halving, Hyperband

    m = study.method
    if isinstance(m, Halving):
        return sum(size for size, _ in m.rungs)
    if isinstance(m, Hyperband) and study.n_trials is None:
        return sum(size for rungs in m.brackets for size, _ in rungs)
    if m.name == "grid":
        n = len(m.points)
        return n if study.n_trials is None else min(n, study.n_trials)
    return study.n_trials


def tune(
    tc: TuneConfig,
    out: str | os.PathLike[str],
    *,
    method: str | None = None,
    n_trials: int | None = None,
    resume: bool = False,
    n_workers: int = 1,
    backend: str = "serial",
    address: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    callback: Callable[[hpo.Study, hpo.Trial], Any] | None = None,
    on_start: Callable[[hpo.Study], Any] | None = None,
) -> TuneResult:
    """Run the search ``tc`` describes in ``out/study.sqlite`` (study name: the config's name) and write the
    results (see the module docstring). ``method`` / ``n_trials`` default to ``[tune]``'s ``method`` /
    ``trials`` (else ``random`` / 20; one pass over the brackets for ``hyperband`` / ``bohb``, the whole grid for
    ``grid``). A study of that name already in the file is an error unless ``resume`` (which starts the study when
there is none yet: a run killed before its first trial resumes too).
    ``on_start(study)`` is called once the study is open, ``callback(study, trial)`` after every trial."""
    from optreg.hpo.storage import stored_studies

    out = Path(out)
    method = tc.method if method is None else method
    if method not in hpo.methods():
        raise ConfigError(f"tune: method = {method!r}: allowed: {', '.join(hpo.methods())}")
    if n_trials is None:
        n_trials = tc.trials if tc.trials is not None else (None if method in ("hyperband", "bohb", "grid") else 20)
    fidelity = tc.fidelity(method)
    if fidelity and "train.epochs" in tc.space.dists:
        raise _fail("train.epochs", "searched", f"method {method!r} sets the epochs from its budget; do not search it")
    storage = out / "study.sqlite"
    existing = stored_studies(storage)
    if tc.name in existing and not resume:
        raise ConfigError(
            f"tune: '{storage}' already holds study {tc.name!r} ({existing[tc.name]} trials); pass --resume to "
            f"continue it, or choose another --out"
        )
    data = _data(_checked(tc.base)["data"])
    if not len(getattr(data.val, "y", ())):
        raise _fail(
            "data.val_fraction",
            tc.base.get("data", {}).get("val_fraction", 0),
            f"metric {tc.metric!r} needs a validation split",
        )
    try:
        study = hpo.Study(
            tc.space,
            method=method,
            direction=tc.direction,
            n_trials=n_trials,
            seed=tc.seed,
            storage=storage,
            name=tc.name,
            **method_options(tc, method, n_trials),
        )
    except OptregError as e:
        raise ConfigError(f"tune: {str(e).removeprefix('hpo: ')}") from None
    objective = SpecObjective(tc, str(out / "checkpoints") if fidelity else None, device, threads)
    try:
        if on_start is not None:
            on_start(study)
        study.optimize(objective, n_workers=n_workers, backend=backend, callback=callback, address=address)
        return _results(tc, study, out, method)
    finally:
        study.close()


def _checked(doc: Mapping[str, Any]) -> dict[str, Any]:
    from optreg.train.run import check_spec

    return check_spec(doc, owner="config")


def _results(tc: TuneConfig, study: hpo.Study, out: Path, method: str) -> TuneResult:
    trials = study.trials
    done = [t for t in trials if t.state == "complete"]
    paths: dict[str, Path] = {"study": out / "study.sqlite", "trials": _write_csv(trials, tc, out / "trials.csv")}
    best = study.best_trial if done else None
    sign = -1.0 if tc.direction == "maximize" else 1.0
    ranked = sorted(done, key=lambda t: (-(t.budget or 0), t.stopped is not None, sign * t.value, t.number))
    table = [_row(t, tc) for t in ranked[:10]]
    if best is not None:
        header = (
            f"best trial {best.number} of study {tc.name!r} ({method}, {len(trials)} trials): "
            f"{tc.metric} = {best.value:.6g} on the validation split\n"
            f"tuned from {tc.source}; train it with: optreg train {out / 'best.toml'}"
        )
        doc = tc.apply(best.params, best.budget)
        doc["name"] = f"{tc.name}-best"
        (out / "best.toml").write_text(dumps_toml(doc, header), encoding="utf-8")
        paths["best"] = out / "best.toml"
    for name, fig in _figures(tc, study, method).items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        paths[name] = path
    failed = [t for t in trials if t.state == "failed"]
    epochs = sum(len(t.intermediate) for t in trials)
    notes = f"{len(done)} complete, {len(failed)} failed, {sum(t.stopped is not None for t in done)} stopped early; "
    notes += f"{epochs} epochs trained in all."
    if failed:
        notes += f" First failure (trial {failed[0].number}): {failed[0].error}"
    if best is None:
        notes += " No trial completed: no best.toml."
    return TuneResult(trials, table, best, paths, notes)


def _shown(tc: TuneConfig, name: str, value: Any) -> Any:
    return tc.decode[name][value] if name in tc.decode else value


def _row(t: hpo.Trial, tc: TuneConfig) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": t.number, tc.metric: t.value}
    if t.budget is not None:
        row["epochs"] = t.budget
    if t.stopped is not None:
        row["stopped_at"] = t.stopped
    for name in tc.space.dists:
        v = _shown(tc, name, t.params.get(name))
        row[name] = json.dumps(v) if isinstance(v, list | dict) else v
    return row


def _write_csv(trials: Sequence[hpo.Trial], tc: TuneConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(tc.space.dists)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "trial",
                "state",
                tc.metric,
                "budget",
                "epochs_trained",
                "stopped_at",
                "seconds",
                "attempts",
                *names,
                "error",
            ]
        )
        for t in trials:
            params = [_shown(tc, n, t.params[n]) if n in t.params else "" for n in names]
            w.writerow(
                [
                    t.number,
                    t.state,
                    t.value,
                    t.budget,
                    len(t.intermediate),
                    t.stopped,
                    t.seconds,
                    t.attempts,
                    *[json.dumps(p) if isinstance(p, list | dict) else p for p in params],
                    t.error or "",
                ]
            )
    return path


# ---------------------------------------------------------------------------------------------- figures


def _figures(tc: TuneConfig, study: hpo.Study, method: str) -> dict[str, Any]:
    done = [t for t in study.trials if t.state == "complete"]
    if not done:
        return {}
    figs = {
        "history": history_figure(tc, study),
        "parallel": parallel_figure(tc, done),
        "curves": curves_figure(tc, study),
    }
    if method.startswith("gp-") and len(done) >= 3:
        figs["gp"] = gp_figure(tc, study)
    if method in FIDELITY:
        figs["rungs"] = rungs_figure(tc, study)
    return figs


def _top_budget(done: Sequence[hpo.Trial]) -> list[hpo.Trial]:
    budgets = [t.budget for t in done if t.budget is not None]
    return [t for t in done if t.budget == max(budgets)] if budgets else list(done)


def history_figure(tc: TuneConfig, study: hpo.Study) -> Any:
    """The optimization history: every complete trial's value (coloured by budget) and the best so far."""
    from optreg.report.plots import new_figure

    trials = study.trials
    done = [t for t in trials if t.state == "complete"]
    fig, (ax,) = new_figure(title=f"{tc.name}: optimization history ({study.method.name})")
    budgets = sorted({t.budget for t in done}, key=lambda b: -1 if b is None else b)
    for b in budgets:
        mine = [t for t in done if t.budget == b]
        label = "trials" if b is None else f"{b} epochs"
        ax.scatter([t.number for t in mine], [t.value for t in mine], s=18, label=label, alpha=0.8)
    top = {t.number for t in _top_budget(done) if t.stopped is None} or {t.number for t in done}
    best, xs, ys = None, [], []
    better = max if tc.direction == "maximize" else min
    for t in trials:
        if t.number in top:
            best = t.value if best is None else better(best, t.value)
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    ax.step(xs, ys, where="post", color="black", label="best so far" + (" (largest budget)" if budgets[-1] else ""))
    failed = sum(t.state == "failed" for t in trials)
    ax.set(xlabel="trial", ylabel=f"{tc.metric} (validation)", title=f"{len(done)} complete, {failed} failed")
    ax.legend(fontsize=8)
    return fig


def _axis_values(tc: TuneConfig, name: str, trials: Sequence[hpo.Trial]) -> tuple[list[float | None], list, list]:
    """A parameter's values mapped to [0, 1] on its scale, with tick positions and labels."""
    d = tc.space.dists[name]
    if isinstance(d, hpo.Categorical):
        n = len(d.choices)
        pos = {i: (i / (n - 1) if n > 1 else 0.5) for i in range(n)}
        vals = [pos[d.index(t.params[name])] if name in t.params else None for t in trials]
        return vals, list(pos.values()), [str(_shown(tc, name, c)) for c in d.choices]
    lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)

    def u(x: float) -> float:
        return ((math.log(x) if d.log else x) - lo) / (hi - lo)

    vals = [u(t.params[name]) if name in t.params else None for t in trials]
    return vals, [0.0, 1.0], [f"{d.low:.3g}", f"{d.high:.3g}"]


def parallel_figure(tc: TuneConfig, done: Sequence[hpo.Trial]) -> Any:
    """Parallel coordinates: one line per complete trial (of the largest budget) through every parameter
    (on its own scale, log where searched on a log scale) to the objective, coloured by the objective."""
    from matplotlib import colormaps

    from optreg.report.plots import new_figure

    trials = _top_budget(done)
    names = list(tc.space.dists)
    fig, (ax,) = new_figure(
        title=f"{tc.name}: parallel coordinates", panel_size=(max(6.0, 1.6 * (len(names) + 1)), 4.2)
    )
    values = [t.value for t in trials]
    vmin, vmax = min(values), max(values)
    span = (vmax - vmin) or 1.0
    cmap = colormaps["viridis"]
    columns = [_axis_values(tc, n, trials) for n in names]
    order = sorted(range(len(trials)), key=lambda i: values[i] * (1 if tc.direction == "maximize" else -1))
    for i in order:  # the best drawn last, on top
        ys = [c[0][i] for c in columns] + [(values[i] - vmin) / span]
        xs = [k for k, y in enumerate(ys) if y is not None]
        c = (values[i] - vmin) / span
        ax.plot(xs, [ys[k] for k in xs], color=cmap(c if tc.direction == "maximize" else 1 - c), alpha=0.7, lw=1.2)
    for k, (_, ticks, labels) in enumerate(columns):
        ax.axvline(k, color="grey", lw=0.8)
        for y, label in zip(ticks, labels):
            ax.annotate(label, (k, y), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
    ax.axvline(len(names), color="grey", lw=0.8)
    ax.annotate(f"{vmin:.4g}", (len(names), 0), xytext=(3, 0), textcoords="offset points", fontsize=7)
    ax.annotate(f"{vmax:.4g}", (len(names), 1), xytext=(3, 0), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(names) + 1), [*names, tc.metric], rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set(title="each parameter on its own scale (log where searched so); colour: the objective")
    return fig


def curves_figure(tc: TuneConfig, study: hpo.Study) -> Any:
    """The learning curves the trials reported (validation metric per epoch); stopped trials dashed."""
    from optreg.report.plots import new_figure

    fig, (ax,) = new_figure(title=f"{tc.name}: learning curves")
    for t in study.trials:
        curve = t.intermediate
        if not curve:
            continue
        steps = sorted(curve)
        style = {"ls": "--", "color": "tab:red", "alpha": 0.6} if t.stopped is not None else {"alpha": 0.6}
        ax.plot(steps, [curve[s] for s in steps], lw=1, **style)
    ax.plot([], [], ls="--", color="tab:red", label="stopped early")
    ax.set(xlabel="epoch", ylabel=f"{tc.metric} (validation)", title="one line per trial (as reported)")
    ax.legend(fontsize=8)
    return fig


def gp_figure(tc: TuneConfig, study: hpo.Study) -> Any:
    """The GP posterior along each dimension: the GP of the ``gp-*`` methods (Matern 5/2, fitted by marginal
    likelihood) refitted to the complete trials, its mean and ±2 sd along one parameter with the others at
    the best trial's values (numbers: a curve; categoricals: one bar per choice), and the trials themselves."""
    import numpy as np
    import torch

    from optreg.hpo import gp
    from optreg.report.plots import new_figure

    done = [t for t in study.trials if t.state == "complete"]
    enc = tc.space.encoding()
    x = np.stack([enc.encode(t.params) for t in done])
    sign = -1.0 if tc.direction == "maximize" else 1.0
    y = np.array([sign * t.value for t in done])
    mu, scale = y.mean(), (y.std() or 1.0)
    xt = torch.tensor(x, dtype=torch.float64)
    yt = torch.tensor((y - mu) / scale, dtype=torch.float64)
    post = gp.condition(xt, yt, gp.fit_params(xt, yt))
    best = enc.encode(study.best_trial.params)
    dims = enc.dims
    ncols = min(3, len(dims))
    fig, axes = new_figure(
        ncols,
        math.ceil(len(dims) / ncols),
        title=f"{tc.name}: GP posterior along each dimension",
        panel_size=(4.6, 3.4),
    )
    for ax, dim in zip(axes, dims):
        d = tc.space.dists[dim.name]
        if dim.kind == "onehot":
            grid = np.repeat(best[None], len(d.choices), 0)
            grid[:, dim.start : dim.stop] = np.eye(len(d.choices))
        else:
            grid = np.repeat(best[None], 100, 0)
            grid[:, dim.start] = np.linspace(0, 1, 100)
        with torch.no_grad():
            m, v = gp.predict(post, torch.tensor(grid, dtype=torch.float64))
        mean = sign * (m.numpy() * scale + mu)
        sd = np.sqrt(v.numpy()) * scale
        if dim.kind == "onehot":
            pos = np.arange(len(d.choices))
            ax.bar(pos, 4 * sd, bottom=mean - 2 * sd, alpha=0.3, label="mean ± 2 sd")
            ax.scatter(pos, mean, color="black", s=12)
            ax.scatter(
                [d.index(t.params[dim.name]) for t in done if dim.name in t.params],
                [t.value for t in done if dim.name in t.params],
                s=10,
                color="tab:red",
                label="trials",
            )
            ax.set_xticks(pos, [str(_shown(tc, dim.name, c)) for c in d.choices], fontsize=7)
        else:
            lo, hi = enc._line(d)
            t = lo + np.linspace(0, 1, 100) * (hi - lo)
            xs = np.exp(t) if d.log else t
            ax.plot(xs, mean, color="black", lw=1.2, label="mean")
            ax.fill_between(xs, mean - 2 * sd, mean + 2 * sd, alpha=0.25, label="± 2 sd")
            ax.scatter(
                [t.params[dim.name] for t in done if dim.name in t.params],
                [t.value for t in done if dim.name in t.params],
                s=10,
                color="tab:red",
                label="trials",
            )
            if d.log:
                ax.set_xscale("log")
        ax.set(title=dim.name, ylabel=tc.metric)
        ax.legend(fontsize=7)
    for ax in axes[len(dims) :]:
        ax.set_visible(False)
    return fig


def rungs_figure(tc: TuneConfig, study: hpo.Study) -> Any:
    """Successive halving's rungs: each configuration's value at each budget it was given, joined across
    rungs (one panel per Hyperband bracket), so the survivors of each round can be read off."""
    from optreg.report.plots import new_figure

    trials = [t for t in study.trials if t.finished and "rung" in t.meta]
    brackets = sorted({t.meta.get("bracket") for t in trials}, key=lambda b: -1 if b is None else -b)
    fig, axes = new_figure(len(brackets), title=f"{tc.name}: successive-halving rungs", panel_size=(4.4, 3.6))
    for ax, b in zip(axes, brackets):
        mine = [t for t in trials if t.meta.get("bracket") == b]
        configs: dict[tuple, list[hpo.Trial]] = {}
        for t in mine:
            configs.setdefault((t.meta.get("pass"), t.meta["config"]), []).append(t)
        for ts in configs.values():
            ts = sorted((t for t in ts if t.state == "complete"), key=lambda t: t.meta["rung"])
            ax.plot([t.budget for t in ts], [t.value for t in ts], marker="o", ms=3, lw=0.8, alpha=0.7)
        ax.set_xscale("log", base=study.method.eta if hasattr(study.method, "eta") else 2)
        title = "halving" if b is None else f"bracket s = {b}"
        ax.set(title=title, xlabel="budget (epochs)", ylabel=f"{tc.metric} (validation)")
    return fig
