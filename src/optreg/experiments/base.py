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
  :meth:`Context.load_data` (cached; honours ``ctx.dataset`` and quick mode). The training itself is
  :func:`optreg.train.run` (the engine's one pipeline from a run description to a trained model);
  :meth:`Context.train` adds only the lab's part: recording, progress, output folders.
- Honour ``ctx.quick``: tiny settings (a few epochs, one seed, small data), the whole run in a few seconds;
  it is what the tests run. :meth:`Context.seed_list` and :meth:`Context.epoch_count` do this for you.
- Never print: report through ``Result.notes`` and ``ctx.log(...)``; draw with :mod:`optreg.report.plots`.
- Return small tables (a list of dicts with the same keys, one row per setting) and readable figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from optreg import train as engine
from optreg._checks import check_int
from optreg.errors import DivergenceError, OptregTypeError, OptregValueError
from optreg.report.store import RecordRun, RunStore, to_jsonable
from optreg.train import Callback, History, RunResult, Trainer, distributed
from optreg.train.run import complete_model_spec as complete_spec

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

    @classmethod
    def of(cls, result: RunResult, *, run_id: int, label: str, seed: int) -> RunHistory:
        """The lab's view of an engine :class:`~optreg.train.RunResult`."""
        return cls(
            iterations=result.history.iterations,
            epochs=result.history.epochs,
            evaluations=result.history.evaluations,
            run_id=run_id,
            label=label,
            seed=seed,
            status=result.status,
            test_loss=result.test_loss,
            test_accuracy=result.test_accuracy,
            seconds=result.seconds,
            model=result.model,
            error=result.error,
        )


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


def _subset(split: Any, n: int) -> Any:
    return split if len(split.y) <= n else type(split)(split.x[:n], split.y[:n])


class _Record(Callback):
    """Records a run in the context's store from the moment its training starts, so that input the engine
    refuses (a bad spec or model) records nothing; then hands the records to a :class:`RecordRun`
    and announces the run to the progress function."""

    def __init__(self, ctx: Context, spec: dict[str, Any], data: Splits, extra: dict[str, Any]) -> None:
        self.ctx, self.spec, self.data, self.extra = ctx, spec, data, extra
        self.run_id: int | None = None
        self.recorder: RecordRun | None = None

    def config(self, trainer: Trainer) -> dict[str, Any]:
        spec, train = self.spec, self.spec["train"]
        return {
            "dataset": getattr(self.data, "name", os.fspath(self.ctx.dataset)),
            "model": complete_spec(spec["model"], self.data),
            "init": spec["init"],
            "optimizer": spec["optimizer"]["name"],
            "hparams": {k: v for k, v in spec["optimizer"].items() if k != "name"},
            "schedule": trainer.schedule,
            "batch_size": train["batch_size"],
            "epochs": train["epochs"],
            "clip_grad_norm": train["clip_grad_norm"],
            "n_train": len(self.data.train.y),
            **self.extra,
        }

    def on_fit_start(self, trainer: Trainer) -> None:
        ctx, label, seed = self.ctx, self.spec["name"], self.spec["train"]["seed"]
        store = ctx.open_store()
        self.run_id = store.start_run(ctx.experiment, label, seed=seed, config=to_jsonable(self.config(trainer)))
        ctx.run_ids.append(self.run_id)
        self.recorder = RecordRun(store, self.run_id)
        if ctx.progress is not None:
            steps = math.ceil(len(self.data.train.y) / trainer.batch_size)
            info = {"experiment": ctx.experiment, "label": label, "seed": seed, "epochs": trainer.epochs}
            ctx.progress("start", {**info, "steps_per_epoch": steps})

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.recorder.on_step_end(trainer, record)  # type: ignore[union-attr]

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.recorder.on_epoch_end(trainer, record)  # type: ignore[union-attr]


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
        """The run store of ``out`` (``out/runs.sqlite``), opened on first use. In data-parallel training
        only rank 0 records: the other ranks get a store in memory."""
        if self.store is None:
            self.store = RunStore(self.out / "runs.sqlite" if distributed.rank() == 0 else ":memory:")
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

        The keywords are a run spec for :func:`optreg.train.run` (see :meth:`train_spec`): the model
        (``optreg.nn.build``; in/out sizes filled from the data), the optimizer (a name for
        ``optreg.optim.create``, or a torch optimizer class such as ``torch.optim.SGD``; ``hparams`` such
        as ``{"lr": 0.01}``), the schedule (a callable ``step -> lr``, or ``{"name": ..., **kwargs}`` for
        :func:`optreg.schedules.create`), ``init`` (a scheme name or ``{"scheme": ..., **options}``),
        clipping; ``seed`` seeds the weights, shuffling and dropout, and the default data,
        ``ctx.load_data(seed)``. ``config`` adds entries to the recorded config.
        """
        if not isinstance(label, str) or not label:
            raise OptregValueError(f"experiments: label must be a non-empty string, got {label!r}")
        spec = {
            "name": label,
            "model": model_spec,
            "init": {"scheme": init} if isinstance(init, str) else init,
            "optimizer": {"name": optimizer, **dict(hparams or {})},
            "schedule": schedule,
            "train": {
                "batch_size": batch_size,
                "epochs": epochs,
                "seed": seed,
                "clip_grad_norm": clip_grad_norm,
                "log_every": log_every,
            },
        }
        data = self.load_data(seed) if data is None else data
        return self.train_spec(
            spec, data, callbacks=callbacks, config=config, raise_on_divergence=raise_on_divergence
        )

    def train_spec(
        self,
        spec: Mapping[str, Any],
        data: Splits,
        *,
        callbacks: Sequence[Callback] = (),
        config: Mapping[str, Any] | None = None,
        raise_on_divergence: bool = False,
    ) -> RunHistory:
        """Train the run ``spec`` (:func:`optreg.train.run`, label ``spec["name"]``, seed ``train.seed``) on
        ``data`` on ``ctx.device``, recorded in the store (:class:`~optreg.report.store.RecordRun`) with
        progress and ``callbacks``; the model is scored on the test split.

        A spec the engine refuses records nothing. A run that diverges (NaN / Inf) is recorded as
        ``diverged`` with the history up to that step and returned with ``status == "diverged"``
        (``raise_on_divergence=True`` re-raises the :class:`~optreg.errors.DivergenceError` instead). Any
        other error during training marks the run ``failed`` and propagates.
        """
        resolved = engine.check_spec(spec)
        label, seed = resolved["name"], resolved["train"]["seed"]
        record = _Record(self, resolved, data, dict(config or {}))
        # the recorder first: an epoch is stored before any other callback sees it (or stops the run)
        hooks: list[Callback] = [record, *callbacks]
        if self.progress is not None:
            hooks.append(_Notify(self.progress, label, seed))
        try:
            result = engine.run(
                resolved, data, seed=seed, callbacks=hooks, device=self.device, raise_on_divergence=True
            )
        except DivergenceError as e:
            result = e.result
            record.recorder.flush()  # type: ignore[union-attr]
            history = RunHistory.of(result, run_id=record.run_id, label=label, seed=seed)  # type: ignore[arg-type]
            self._finish(history, result, error=str(e))
            if raise_on_divergence:
                raise
            return history
        except BaseException as e:
            if record.run_id is not None:
                self.open_store().finish_run(record.run_id, "failed", error=f"{type(e).__name__}: {e}")
            raise
        history = RunHistory.of(result, run_id=record.run_id, label=label, seed=seed)  # type: ignore[arg-type]
        self._finish(history, result)
        return history

    def _finish(self, history: RunHistory, result: RunResult, error: str | None = None) -> None:
        summary = result.summary()
        self.open_store().finish_run(history.run_id, result.status, summary=summary, error=error)
        self._notify_end(history, summary)

    def _notify_end(self, history: RunHistory, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            info = {"label": history.label, "seed": history.seed, "status": history.status, "summary": summary}
            self.progress("end", info)
