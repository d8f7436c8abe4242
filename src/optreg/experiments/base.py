"""The contract of the lab's experiments: :func:`register`, :class:`Context`, :class:`Result`.

An experiment is a function ``run(ctx: Context) -> Result`` registered under a name::

    from optreg.experiments.base import Context, Result, register

    @register("optimizers", title="Optimizers on the same MLP", figure="7.6",
              help="SGD ... AdamW: training loss per iteration, validation accuracy per epoch")
    def run(ctx: Context) -> Result:
        seeds = ctx.seed_list(default=3)               # ctx.seeds, or 3 (1 in quick mode)
        epochs = ctx.epoch_count(default=20, quick=2)  # ctx.epochs, or 20 (2 in quick mode)
        for seed in seeds:
            h = ctx.train("adam", model_spec={"kind": "mlp", "hidden": [128]}, optimizer="adam",
                          hparams={"lr": 1e-3}, seed=seed, batch_size=32, epochs=epochs)
            h.test_accuracy, h.iterations, h.epochs      # a RunHistory (a train.History)
        return Result(table=[{"optimizer": "adam", ...}], figures={"loss": fig}, notes="...")

:func:`optreg.experiments.run` then saves, under ``<out>/<name>/``: every figure as ``<fig>.png``
(matplotlib's Agg backend), the table as ``table.csv`` and ``table.md``, and ``metrics.csv`` (one row per
recorded step and epoch of every run the experiment trained, with its label and seed). Every run is also
recorded live in ``<out>/runs.sqlite`` (:class:`optreg.report.store.RunStore`): config, seed, versions,
status, per-step and per-epoch metrics, and a summary (test loss / accuracy, time).

Rules for experiment authors:

- Train through :meth:`Context.train` (so every run is recorded and shows progress) and load data through
  :meth:`Context.load_data` (cached; honours ``ctx.dataset`` and quick mode).
- Honour ``ctx.quick``: tiny settings (a few epochs, one seed, small data), the whole run in a few seconds;
  it is what the tests run. :meth:`Context.seed_list` and :meth:`Context.epoch_count` do this for you.
- Never print: report through ``Result.notes`` and ``ctx.log(...)``; draw with :mod:`optreg.report.plots`.
- Return small tables (a list of dicts with the same keys, one row per setting) and readable figures.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from optreg._checks import check_int
from optreg.errors import DivergenceError, OptregTypeError, OptregValueError
from optreg.report.store import RecordRun, RunStore, to_jsonable
from optreg.train import Callback, History, Trainer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optreg.data import Splits

__all__ = [
    "DEFAULT_DATASET",
    "QUICK_LIMITS",
    "Context",
    "Experiment",
    "ProgressFn",
    "Result",
    "RunHistory",
    "complete_spec",
    "curves",
    "mean_std",
    "register",
]

#: The dataset experiments use unless told otherwise (scikit-learn's embedded digits, 8x8, 10 classes).
DEFAULT_DATASET = "digits"
#: In quick mode :meth:`Context.load_data` keeps at most this many examples of each split.
QUICK_LIMITS = {"train": 384, "val": 192, "test": 192}

#: ``progress(event, info)``: ``event`` is ``"start"`` (info: experiment, label, seed, epochs,
#: steps_per_epoch), ``"step"`` (info: label, seed, record), ``"epoch"`` (info: label, seed, epochs, record)
#: or ``"end"`` (info: label, seed, status, summary); ``"message"`` (info: text) for :meth:`Context.log`.
ProgressFn = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``fn(ctx) -> Result`` and what ``optreg list`` shows about it."""

    name: str
    fn: Callable[[Context], Result]
    title: str
    figure: str
    help: str
    module: str


_REGISTRY: dict[str, Experiment] = {}


def register(
    name: str, *, title: str, figure: str = "", help: str = ""
) -> Callable[[Callable[[Context], Result]], Callable[[Context], Result]]:
    """Decorator: register ``fn(ctx: Context) -> Result`` as the experiment ``name``.

    ``title`` heads its figures and ``optreg list``; ``figure`` is the chapter's figure (``"7.6"``) or
    exercise (``"ex. 7-3"``) it reproduces; ``help`` is one line on what it shows. Names are lowercase
    words joined by ``-`` (``batch-size``); registering a name twice from another function raises.
    """
    if not isinstance(name, str) or not name or not all(part.isalnum() for part in name.split("-")):
        raise OptregValueError(f"experiments: name must be lowercase words joined by '-', got {name!r}")
    if name != name.lower():
        raise OptregValueError(f"experiments: name must be lowercase, got {name!r}")
    for key, value in (("title", title), ("figure", figure), ("help", help)):
        if not isinstance(value, str):
            raise OptregTypeError(f"experiments: {key} of {name!r} must be a string, got {value!r}")

    def decorate(fn: Callable[[Context], Result]) -> Callable[[Context], Result]:
        if not callable(fn):
            raise OptregTypeError(f"experiments: {name!r} must decorate a function, got {fn!r}")
        module = getattr(fn, "__module__", "")
        # the built-in experiments register first, so a user's experiment cannot take their names; a built-in
        # module registering itself does not load the others (importing one of them directly would otherwise
        # re-enter a partially initialized module through the loader)
        from optreg.experiments import BUILTIN_MODULES, _load_builtins

        if module not in {f"optreg.experiments.{m}" for m in BUILTIN_MODULES}:
            _load_builtins()
        old = _REGISTRY.get(name)
        if old is not None and (old.module, old.fn.__qualname__) != (module, fn.__qualname__):
            raise OptregValueError(f"experiments: {name!r} is already registered by {old.module}")
        _REGISTRY[name] = Experiment(name, fn, title, figure, help, module)
        return fn

    return decorate


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """What an experiment returns.

    ``table``: the small summary table, a list of dicts (one per row, the same keys in the same order;
    numbers, strings or None). ``figures``: ``name -> matplotlib Figure`` (saved as ``<name>.png``; names
    are file-name safe). ``notes``: a few sentences on what the run shows (saved at the end of ``table.md``).
    ``name``/``title`` are filled in by :func:`optreg.experiments.run` when left empty; ``paths`` lists the
    files it wrote.
    """

    table: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: str = ""
    name: str = ""
    title: str = ""
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass
class RunHistory(History):
    """The :class:`~optreg.train.History` of one :meth:`Context.train` run, plus what the lab needs.

    ``run_id`` (its row in the store), ``label``, ``seed``, ``status`` (``finished`` or ``diverged``),
    ``test_loss`` / ``test_accuracy`` (the trained model on the test split; None when the data has none
    or the run diverged), ``seconds`` (wall time of the training), ``model`` (the trained module) and
    ``error`` (the divergence message, if any).
    """

    run_id: int = -1
    label: str = ""
    seed: int = 0
    status: str = "finished"
    test_loss: float | None = None
    test_accuracy: float | None = None
    seconds: float = 0.0
    model: torch.nn.Module | None = None
    error: str | None = None

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def final(self, name: str) -> float | None:
        """The last epoch's value of an epoch field (``"val_accuracy"``), None if there is none."""
        return self.epochs[-1][name] if self.epochs else None


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """The mean and the (population) standard deviation of the values that are not None; ``(None, None)``
    when there are none. For a table's ``x`` and ``x_sd`` columns over seeds."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    mean = math.fsum(xs) / len(xs)
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))


def curves(
    runs: Mapping[str, Sequence[RunHistory]], name: str, which: str = "iterations"
) -> dict[str, list[list[float]]]:
    """``label -> [one list of values per run]`` of one field (``"loss"`` per iteration, ``"val_accuracy"``
    per epoch), ready for :class:`optreg.report.plots.Panel`. Diverged runs are left out (their curves
    stop early and end in NaN); a label whose runs all diverged maps to an empty list."""
    return {label: [h.column(name, which) for h in histories if not h.diverged] for label, histories in runs.items()}


# ---------------------------------------------------------------------------------------------- context


def complete_spec(spec: Mapping[str, Any], data: Splits) -> dict[str, Any]:
    """A model spec with the sizes the data determines filled in where absent.

    ``out_features`` = the number of classes; ``in_features`` (``mlp``) = the number of input values;
    ``input_shape`` / ``in_channels`` (``cnn1d`` / ``cnn2d``) from the sample shape when it has a channel
    axis; ``in_features`` (recurrent kinds) = 1 for ``(N, T)`` inputs.
    """
    if not isinstance(spec, Mapping):
        raise OptregValueError(f"experiments: model_spec must be a mapping, got {spec!r}")
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


def _subset(split: Any, n: int) -> Any:
    return split if len(split.y) <= n else type(split)(split.x[:n], split.y[:n])


class _Notify(Callback):
    """Hands the trainer's records to a :data:`ProgressFn`."""

    def __init__(self, progress: ProgressFn, label: str, seed: int) -> None:
        self.progress, self.label, self.seed = progress, label, seed

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.progress("step", {"label": self.label, "seed": self.seed, "record": record})

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        info = {"label": self.label, "seed": self.seed, "epochs": trainer.epochs, "record": record}
        self.progress("epoch", info)


@dataclass
class Context:
    """Everything an experiment may use: settings, the run store, and helpers to load data and train.

    Attributes:
        dataset: a built-in dataset name (``"digits"``, ``"mnist1d"``) or a path (an IDX directory, an
            ``.npz`` or ``.csv`` file), as :func:`optreg.data.load` takes.
        seeds: how many seeds to average over; ``None``: the experiment's default (see :meth:`seed_list`).
        epochs: epochs per run; ``None``: the experiment's default (see :meth:`epoch_count`).
        quick: tiny settings for tests and smoke runs (a few seconds in all).
        out: the output folder; each experiment writes under ``out/<name>/``, the store is
            ``out/runs.sqlite``.
        progress: a :data:`ProgressFn` (the CLI's progress bars) or None.
        device: the torch device training runs on.
        store: the :class:`RunStore` of ``out`` (opened on first use when not given).
        experiment: the name of the experiment being run (set by :func:`optreg.experiments.run`).
        run_ids: the store ids of the runs trained since ``experiment`` was set.
    """

    dataset: str | os.PathLike[str] = DEFAULT_DATASET
    seeds: int | None = None
    epochs: int | None = None
    quick: bool = False
    out: Path = Path("runs")
    progress: ProgressFn | None = None
    device: str | torch.device = "cpu"
    store: RunStore | None = None
    experiment: str = "adhoc"
    run_ids: list[int] = field(default_factory=list)
    _data: dict[tuple[Any, ...], Splits] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str | os.PathLike) or not os.fspath(self.dataset):
            raise OptregValueError(f"experiments: dataset must be a name or a path, got {self.dataset!r}")
        if self.seeds is not None:
            check_int("experiments", "seeds", self.seeds, 1)
        if self.epochs is not None:
            check_int("experiments", "epochs", self.epochs, 1)
        if not isinstance(self.quick, bool):
            raise OptregTypeError(f"experiments: quick must be a bool, got {self.quick!r}")
        if self.progress is not None and not callable(self.progress):
            raise OptregTypeError(f"experiments: progress must be callable, got {self.progress!r}")
        self.out = Path(self.out)
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise OptregValueError(
                f"experiments: device must be a torch device such as 'cpu', got {self.device!r}"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise OptregValueError(f"experiments: device {self.device!r} asked for, but CUDA is not available")

    # -------------------------------------------------------------- settings
    def seed_list(self, default: int, quick: int = 1) -> list[int]:
        """The seeds to run: ``range(ctx.seeds)`` if set, else ``range(default)`` (``range(quick)`` in quick mode)."""
        n = self.seeds if self.seeds is not None else (quick if self.quick else default)
        return list(range(n))

    def epoch_count(self, default: int, quick: int = 2) -> int:
        """Epochs per run: ``ctx.epochs`` if set, else ``default`` (``quick`` in quick mode)."""
        return self.epochs if self.epochs is not None else (quick if self.quick else default)

    def log(self, text: str) -> None:
        """A message for the person running the experiment (shown by the CLI; never printed here)."""
        if self.progress is not None:
            self.progress("message", {"text": str(text)})

    def open_store(self) -> RunStore:
        """The run store of ``out`` (``out/runs.sqlite``), opened on first use."""
        if self.store is None:
            self.store = RunStore(self.out / "runs.sqlite")
        return self.store

    # -------------------------------------------------------------- data
    def load_data(self, seed: int = 0, *, dataset: str | os.PathLike[str] | None = None, **options: Any) -> Splits:
        """``optreg.data.load(dataset or ctx.dataset, seed, **options)``, cached per (dataset, seed, options).

        In quick mode each split keeps at most :data:`QUICK_LIMITS` examples (the first ones of the
        seeded, shuffled split).
        """
        from optreg.data import load

        dataset = self.dataset if dataset is None else dataset
        key = (os.fspath(dataset), seed, tuple(sorted(options.items())))
        if key not in self._data:
            data = load(dataset, seed, **options)
            if self.quick:
                data = data._replace(
                    train=_subset(data.train, QUICK_LIMITS["train"]),
                    val=_subset(data.val, QUICK_LIMITS["val"]),
                    test=_subset(data.test, QUICK_LIMITS["test"]),
                )
            self._data[key] = data
        return self._data[key]

    # -------------------------------------------------------------- training
    def build_model(
        self,
        model_spec: Mapping[str, Any],
        data: Splits,
        *,
        seed: int,
        init: str | Mapping[str, Any] | None = None,
    ) -> torch.nn.Module:
        """``optreg.nn.build(complete_spec(model_spec, data))`` with torch's RNG seeded by ``seed``, then
        ``optreg.init.apply`` when ``init`` is given: a scheme name, or ``{"scheme": ..., **options}``
        (``bias``, ``activation``, the scheme's own options). Unless ``init`` names an ``activation``, the
        model's own (``relu`` by default for MLPs / CNNs) is passed on, so Xavier / He / orthogonal get
        its gain. The init generator is seeded with ``seed``: the same seed gives the same weights."""
        from optreg import init as initmod
        from optreg import nn as nnmod

        spec = complete_spec(model_spec, data)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = nnmod.build(spec)
        if init is not None:
            options = {"scheme": init} if isinstance(init, str) else dict(init)
            if "scheme" not in options:
                raise OptregValueError(f"experiments: init must be a scheme name or have a 'scheme', got {init!r}")
            scheme = options.pop("scheme")
            activation = spec.get("activation", "relu" if spec["kind"] in ("mlp", "cnn1d", "cnn2d") else "tanh")
            if "activation" not in options and activation in initmod.GAIN_ACTIVATIONS:
                options["activation"] = activation
            generator = torch.Generator().manual_seed(seed)
            initmod.apply(model, scheme, generator=generator, **options)
        return model

    @staticmethod
    def build_optimizer(
        optimizer: str | Callable[..., torch.optim.Optimizer], params: Iterable[Any], hparams: Mapping[str, Any]
    ) -> torch.optim.Optimizer:
        """``optreg.optim.create(name, params, **hparams)`` for a name; ``optimizer(params, **hparams)`` for a
        callable (e.g. ``torch.optim.SGD``)."""
        from optreg import optim

        if isinstance(optimizer, str):
            return optim.create(optimizer, params, **hparams)
        if callable(optimizer):
            return optimizer(params, **hparams)
        raise OptregTypeError(f"experiments: optimizer must be a name or a torch optimizer class, got {optimizer!r}")

    def train(
        self,
        label: str,
        *,
        model_spec: Mapping[str, Any],
        optimizer: str | Callable[..., torch.optim.Optimizer],
        hparams: Mapping[str, Any] | None = None,
        seed: int,
        batch_size: int,
        epochs: int,
        schedule: Callable[[int], float] | Mapping[str, Any] | None = None,
        init: str | Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        data: Splits | None = None,
        clip_grad_norm: float | None = None,
        log_every: int = 1,
        config: Mapping[str, Any] | None = None,
        raise_on_divergence: bool = False,
    ) -> RunHistory:
        """Train one model and record it; returns its :class:`RunHistory`.

        Builds the model (:meth:`build_model`; in/out sizes filled from the data), the optimizer
        (:meth:`build_optimizer`; ``hparams`` such as ``{"lr": 0.01}``), the schedule (a callable
        ``step -> lr``, or ``{"name": ..., **kwargs}`` for :func:`optreg.schedules.create`), and runs
        :class:`optreg.train.Trainer` on ``data`` (default ``ctx.load_data(seed)``) with ``seed``, the
        store's :class:`~optreg.report.store.RecordRun` callback, progress, and ``callbacks``. Afterwards
        the model is scored on the test split.

        A run that diverges (NaN / Inf) is recorded as ``diverged`` with the history up to that step and
        returned with ``status == "diverged"`` (``raise_on_divergence=True`` re-raises the
        :class:`~optreg.errors.DivergenceError` instead). Any other error marks the run ``failed`` and
        propagates. ``config`` adds entries to the recorded config.
        """
        from optreg import schedules

        if not isinstance(label, str) or not label:
            raise OptregValueError(f"experiments: label must be a non-empty string, got {label!r}")
        data = self.load_data(seed) if data is None else data
        hparams = dict(hparams or {})
        if isinstance(schedule, Mapping):
            kwargs = dict(schedule)
            if "name" not in kwargs:
                raise OptregValueError(f"experiments: schedule needs a 'name', got {dict(schedule)!r}")
            schedule = schedules.create(kwargs.pop("name"), **kwargs)
        model = self.build_model(model_spec, data, seed=seed, init=init)
        opt = self.build_optimizer(optimizer, model.parameters(), hparams)
        record_config = {
            "dataset": getattr(data, "name", os.fspath(self.dataset)),
            "model": complete_spec(model_spec, data),
            "init": init,
            "optimizer": optimizer,
            "hparams": hparams,
            "schedule": schedule,
            "batch_size": batch_size,
            "epochs": epochs,
            "clip_grad_norm": clip_grad_norm,
            "n_train": len(data.train.y),
            **dict(config or {}),
        }
        store = self.open_store()
        run_id = store.start_run(self.experiment, label, seed=seed, config=to_jsonable(record_config))
        self.run_ids.append(run_id)
        recorder = RecordRun(store, run_id)
        # the recorder first: an epoch is stored before any other callback sees it (or stops the run)
        hooks: list[Callback] = [recorder, *callbacks]
        if self.progress is not None:
            hooks.append(_Notify(self.progress, label, seed))
        history = RunHistory(run_id=run_id, label=label, seed=seed)
        has_val = len(data.val.y) > 0
        start = time.perf_counter()
        try:
            trainer = Trainer(
                model,
                opt,
                batch_size=batch_size,
                epochs=epochs,
                schedule=schedule,
                clip_grad_norm=clip_grad_norm,
                callbacks=hooks,
                seed=seed,
                device=self.device,
                log_every=log_every,
            )
            if self.progress is not None:
                steps = math.ceil(len(data.train.y) / batch_size)
                info = {"experiment": self.experiment, "label": label, "seed": seed, "epochs": epochs}
                self.progress("start", {**info, "steps_per_epoch": steps})
            trained = trainer.fit(data.train, data.val if has_val else None)
        except DivergenceError as e:
            history.seconds = time.perf_counter() - start
            recorder.flush()
            partial = e.history
            history.iterations, history.epochs = list(partial.iterations), list(partial.epochs)
            history.status, history.error, history.model = "diverged", str(e), model
            summary = {"seconds": history.seconds, "diverged_at_step": e.step}
            store.finish_run(run_id, "diverged", summary=summary, error=str(e))
            self._notify_end(history, summary)
            if raise_on_divergence:
                raise
            return history
        except BaseException as e:
            store.finish_run(run_id, "failed", error=f"{type(e).__name__}: {e}")
            raise
        history.seconds = time.perf_counter() - start
        history.iterations, history.epochs, history.model = trained.iterations, trained.epochs, model
        if len(data.test.y) > 0:
            scores = trainer.evaluate(data.test)
            history.test_loss, history.test_accuracy = scores["loss"], scores["accuracy"]
        summary = {
            "seconds": history.seconds,
            "steps": trainer.step,
            "epochs": trainer.epoch,
            "test_loss": history.test_loss,
            "test_accuracy": history.test_accuracy,
            "final_train_loss": history.final("train_loss"),
            "final_val_accuracy": history.final("val_accuracy"),
        }
        store.finish_run(run_id, "finished", summary=summary)
        self._notify_end(history, summary)
        return history

    def _notify_end(self, history: RunHistory, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            info = {"label": history.label, "seed": history.seed, "status": history.status, "summary": summary}
            self.progress("end", info)
