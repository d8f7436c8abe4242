"""The contract of the lab's experiments: :func:`register`, :class:`Context`, :class:`Result`.

An experiment is a function ``run(ctx: Context) -> Result`` registered under a name::

    from optreg.experiments.base import Context, Result, claim, register

    @register("optimizers", title="Optimizers on the same MLP", figure="7.6",
              help="SGD ... AdamW: training loss per iteration, validation accuracy per epoch")
    def run(ctx: Context) -> Result:
        seeds = ctx.seed_list(default=3)               # ctx.seeds, or 3 (1 in quick mode)
        epochs = ctx.epoch_count(default=20, quick=2)  # ctx.epochs, or 20 (2 in quick mode)
        for seed in seeds:
            h = ctx.train("adam", model_spec={"kind": "mlp", "hidden": [128]}, optimizer="adam",
                          hparams={"lr": 1e-3}, seed=seed, batch_size=32, epochs=epochs)
            h.test_accuracy, h.iterations, h.epochs      # a RunHistory (a train.History)
        claims = [claim("Adam beats SGD", "+0.012, 2 SE = 0.004", holds=True)]
        return Result(table=[{"optimizer": "adam", ...}], claims=claims, figures={"loss": fig}, notes="...")

:func:`optreg.experiments.run` then saves, in a new folder ``<out>/<name>/<invocation id>/`` (never one
that exists, so a rerun replaces nothing): every figure as ``<fig>.png`` (matplotlib's Agg backend), the
table as ``table.csv``, the claims as ``claims.csv``, both in ``table.md`` (the table, a "Claims" table,
the notes), and ``metrics.csv`` (one row per recorded step and epoch of every
run the experiment trained, with its label and seed). Every run is also recorded live in
``<out>/runs.sqlite`` (:class:`optreg.report.store.RunStore`), in the invocation's id: the values it used
(the resolved spec, the optimizer's hyperparameters with defaults), seed, versions, environment (threads,
device, git commit, command line, data file and hash), status, per-step and per-epoch metrics, and a
summary (test loss / accuracy, time). Work that does not go through the trainer is recorded with
:meth:`Context.record_run`. An experiment declares the settings it honours (``register(options=...)``);
the others are refused before it starts.

Rules for experiment authors:

- Train through :meth:`Context.train` (so every run is recorded and shows progress) and load data through
  :meth:`Context.load_data` (cached; honours ``ctx.dataset`` and quick mode). The training itself is
  :func:`optreg.train.run` (the engine's one pipeline from a run description to a trained model);
  :meth:`Context.train` adds only the lab's part: recording, progress, output folders.
- Honour ``ctx.quick``: tiny settings (a few epochs, one seed, small data), the whole run in a few seconds;
  it is what the tests run. :meth:`Context.seed_list` and :meth:`Context.epoch_count` do this for you.
- Never print: report through ``Result.notes`` and ``ctx.log(...)``; draw with :mod:`optreg.report.plots`.
- Return small tables (a list of dicts with the same keys, one row per setting) and readable figures.
- Report each claim of the chapter the run tests as a :func:`claim` row of ``Result.claims`` (never in the
  table or the notes): the lab saves and prints every experiment's claims the same way.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from optreg import train as engine
from optreg._checks import check_int
from optreg.errors import DivergenceError, OptregTypeError, OptregValueError
from optreg.report.store import RecordRun, RunStore, environment, fingerprint, to_jsonable
from optreg.train import Callback, History, RunResult, Trainer, distributed
from optreg.train.run import complete_model_spec as complete_spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optreg.data import Splits

__all__ = [
    "DEFAULT_DATASET",
    "QUICK_LIMITS",
    "CLAIM_COLUMNS",
    "VERDICTS",
    "Comparison",
    "Context",
    "Experiment",
    "ProgressFn",
    "Result",
    "RunHistory",
    "check_claims",
    "claim",
    "complete_spec",
    "curves",
    "diverged_note",
    "exceeds",
    "mean_std",
    "register",
    "within",
]

#: The dataset experiments use unless told otherwise (scikit-learn's embedded digits, 8x8, 10 classes).
DEFAULT_DATASET = "digits"
#: In quick mode :meth:`Context.load_data` keeps at most this many examples of each split.
QUICK_LIMITS = {"train": 384, "val": 192, "test": 192}

#: ``progress(event, info)``: ``event`` is ``"start"`` (info: experiment, label, seed, epochs,
#: steps_per_epoch), ``"step"`` (info: label, seed, record), ``"epoch"`` (info: label, seed, epochs, record)
#: or ``"end"`` (info: label, seed, status, summary); ``"message"`` (info: text) for :meth:`Context.log`;
#: ``"plan"`` (info: runs, the number of runs the experiment will train or record) for
#: :meth:`Context.expect_runs`. A run of :meth:`Context.record_run` sends ``"start"`` (epochs and
#: steps_per_epoch 0 unless the caller sent its own) and ``"end"`` too.
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
    options: tuple[str, ...] = ("dataset", "seeds", "epochs")
    why: str = ""


#: The settings of a :class:`Context` an experiment may declare that it honours (``register(options=...)``).
OPTIONS = ("dataset", "seeds", "epochs")

_REGISTRY: dict[str, Experiment] = {}


def register(
    name: str,
    *,
    title: str,
    figure: str = "",
    help: str = "",
    options: Sequence[str] = OPTIONS,
    why: str = "",
) -> Callable[[Callable[[Context], Result]], Callable[[Context], Result]]:
    """Decorator: register ``fn(ctx: Context) -> Result`` as the experiment ``name``.

    ``title`` heads its figures and ``optreg list``; ``figure`` is the chapter's figure (``"7.6"``) or
    exercise (``"ex. 7-3"``) it reproduces; ``help`` is one line on what it shows. Names are lowercase
    words joined by ``-`` (``batch-size``); registering a name twice from another function raises.
    ``options``: the settings of :data:`OPTIONS` it honours (``ctx.dataset``, ``ctx.seeds``,
    ``ctx.epochs``); :func:`optreg.experiments.run` refuses a context that sets any other, before any
    work, with ``why`` (e.g. "toy problems: no data") in the message.
    """
    if not isinstance(name, str) or not name or not all(part.isalnum() for part in name.split("-")):
        raise OptregValueError(f"experiments: name must be lowercase words joined by '-', got {name!r}")
    if name != name.lower():
        raise OptregValueError(f"experiments: name must be lowercase, got {name!r}")
    for key, value in (("title", title), ("figure", figure), ("help", help), ("why", why)):
        if not isinstance(value, str):
            raise OptregTypeError(f"experiments: {key} of {name!r} must be a string, got {value!r}")
    if isinstance(options, str) or not all(o in OPTIONS for o in options):
        raise OptregValueError(f"experiments: options of {name!r} must be among {', '.join(OPTIONS)}, got {options!r}")

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
        _REGISTRY[name] = Experiment(name, fn, title, figure, help, module, tuple(options), why)
        return fn

    return decorate


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """What an experiment returns.

    ``table``: the small summary table of measured numbers, a list of dicts (one per row, the same keys in
    the same order; numbers, strings or None). ``claims``: the claims table, rows of :func:`claim`
    (``claim``, ``measured``, ``verdict``), saved as ``claims.csv`` and as the "Claims" table of
    ``table.md``, and printed after the table by the command line, the same way for every experiment.
    ``figures``: ``name -> matplotlib Figure`` (saved as ``<name>.png``; names are file-name safe).
    ``notes``: a few sentences on what the run shows (saved at the end of ``table.md``).
    ``name``/``title`` are filled in by :func:`optreg.experiments.run` when left empty; ``paths`` lists the
    files it wrote.
    """

    table: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: str = ""
    claims: list[dict[str, Any]] = field(default_factory=list)
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


#: The columns of a claims table (:func:`claim`'s keys) and its two verdicts.
CLAIM_COLUMNS = ("claim", "measured", "verdict")
VERDICTS = ("holds", "does not hold here")


def claim(text: str, measured: str, holds: bool) -> dict[str, Any]:
    """One row of a claims table: the chapter's claim, what was measured, and the verdict.

    Every experiment that touches a claim of the chapter reports it this way: a claim that does not hold on
    the measured data is a finding, reported as such, never dropped. The verdict is one of two words,
    ``"holds"`` or ``"does not hold here"``. A claim that compares quantities measured over several seeds
    (accuracies, losses, gaps, ECE, ...) decides with :func:`exceeds` (or :func:`within` for "about
    equal"): a difference of means within two standard errors is within seed noise, so the claim was not
    shown here and its verdict is ``"does not hold here"`` (the measured text says ``"within seed noise"``).
    A deterministic claim (a closed form, a single run by design, a count) compares its numbers directly.
    """
    return {"claim": text, "measured": measured, "verdict": VERDICTS[0] if holds else VERDICTS[1]}


def check_claims(claims: Any, owner: str = "experiments") -> list[dict[str, Any]]:
    """``claims`` as a list of :func:`claim` rows, or a one-line error naming the row and what is wrong:
    every row a dict with exactly the keys :data:`CLAIM_COLUMNS`, text in ``claim`` and ``measured``, and a
    verdict of :data:`VERDICTS`."""
    if isinstance(claims, str | Mapping) or not isinstance(claims, Iterable):
        raise OptregTypeError(f"{owner}: claims must be a list of claim() rows, got {claims!r}")
    rows = list(claims)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or tuple(row) != CLAIM_COLUMNS:
            raise OptregValueError(
                f"{owner}: claims[{i}] must be a claim() row with the keys {', '.join(CLAIM_COLUMNS)}, got {row!r}"
            )
        if not all(isinstance(row[k], str) and row[k] for k in ("claim", "measured")):
            raise OptregValueError(f"{owner}: claims[{i}] needs a non-empty claim and measured text, got {row!r}")
        if row["verdict"] not in VERDICTS:
            raise OptregValueError(
                f"{owner}: claims[{i}] verdict must be one of {', '.join(map(repr, VERDICTS))}, got {row['verdict']!r}"
            )
    return rows


class Comparison(NamedTuple):
    """What :func:`exceeds` decided: the verdict (``holds``) and the text for a claim's measured column."""

    holds: bool
    text: str


def exceeds(
    a: Iterable[float | None] | float, b: Iterable[float | None] | float, *, margin: float = 0.0, fmt: str = ".3f"
) -> Comparison:
    """Whether the values ``a`` (one per seed) are larger than ``b`` beyond seed noise.

    With ``d = mean(a) - mean(b)`` and the standard error of that difference (Welch's, unpaired)

        SE = sqrt(s_a^2 / n_a + s_b^2 / n_b),   s^2 the sample variance (ddof = 1),

    the claim "a > b + margin" holds when ``d - margin > 2 SE``. SE is the standard error of Welch's t
    statistic (``scipy.stats.ttest_ind(a, b, equal_var=False)``: t = d / SE); two of them are about the 95%
    bar of a normal difference, the least to ask of a few seeds (with 3 seeds a t test asks for more). When
    ``|d - margin| <= 2 SE`` the difference is within seed noise: ``holds`` is False and the text says so.
    A side with a single value borrows the other side's variance (the same seeds' noise; no spread of its
    own to measure); with a single value on both sides there is no spread at all, so the plain comparison
    ``d > margin`` decides and the text says ``"1 seed"``. ``b`` (or ``a``) may be a plain number, a constant
    with no spread (a threshold, a closed form): then SE = s_a / sqrt(n_a), the standard error of
    ``scipy.stats.ttest_1samp(a, b)``. None values (e.g. diverged runs) are left out; a side with no values
    left is never larger. For "a is smaller than b" (a loss, a gap) call ``exceeds(b, a)``. ``margin`` < 0
    asks "a is not below b by more than -margin" (``margin=-0.01``: not worse than b by more than 0.01).
    ``fmt`` formats the numbers of ``text``: ``"+0.005, 2 SE = 0.010: within seed noise"``.
    """
    diff = _difference(a, b)
    if diff is None:
        return Comparison(False, "no finished runs on one side")
    d, bar = diff
    shift = f" vs margin {margin:+{fmt}}" if margin else ""
    if bar is None:
        return Comparison(d > margin, f"{d:+{fmt}}{shift} (1 seed)")
    text = f"{d:+{fmt}}{shift}, 2 SE = {bar:{fmt}}"
    if abs(d - margin) <= bar:
        return Comparison(False, text + ": within seed noise")
    return Comparison(d - margin > bar, text)


def differs(
    a: Iterable[float | None] | float, b: Iterable[float | None] | float, *, fmt: str = ".3f"
) -> Comparison:
    """Whether the means of ``a`` and ``b`` differ (either way) beyond seed noise: ``|d| > 2 SE`` (``d``, SE as
    in :func:`exceeds`, whose two one-sided tests it joins); the text is ``exceeds(a, b)``'s."""
    ab = exceeds(a, b, fmt=fmt)
    return Comparison(ab.holds or exceeds(b, a, fmt=fmt).holds, ab.text)


def within(
    a: Iterable[float | None] | float, b: Iterable[float | None] | float, tol: float, *, fmt: str = ".3f"
) -> Comparison:
    """Whether the means of ``a`` and ``b`` (one value per seed) differ by less than ``tol``, beyond seed noise.

    The two one-sided :func:`exceeds` tests at once: ``a > b - tol`` and ``b > a - tol``, i.e. it holds when
    ``|d| + 2 SE < tol`` (``d``, SE as in :func:`exceeds`). A difference inside ``tol`` whose two standard
    errors reach past it is not shown equal: ``holds`` is False and the text says ``"within seed noise"``.
    With one value on each side the plain ``|d| <= tol`` decides (``"1 seed"``).
    """
    diff = _difference(a, b)
    if diff is None:
        return Comparison(False, "no finished runs on one side")
    d, bar = diff
    if bar is None:
        return Comparison(abs(d) <= tol, f"{d:+{fmt}}, tolerance {tol:{fmt}} (1 seed)")
    text = f"{d:+{fmt}}, 2 SE = {bar:{fmt}}, tolerance {tol:{fmt}}"
    if abs(d) < tol <= abs(d) + bar:
        return Comparison(False, text + ": within seed noise")
    return Comparison(abs(d) + bar < tol, text)


def _difference(
    a: Iterable[float | None] | float, b: Iterable[float | None] | float
) -> tuple[float, float | None] | None:
    """``(mean(a) - mean(b), 2 SE)`` of :func:`exceeds` (None values left out; a plain number is a constant,
    with no spread); 2 SE is None where no spread can be measured (one value against one value or a
    constant); None when a side has no values."""
    (xa, ca), (xb, cb) = _values(a), _values(b)
    if not xa or not xb:
        return None
    d = math.fsum(xa) / len(xa) - math.fsum(xb) / len(xb)
    var_a = None if ca else _sample_variance(xa)
    var_b = None if cb else _sample_variance(xb)
    var_a = var_b if var_a is None and not ca else var_a  # one value borrows the other side's variance
    var_b = var_a if var_b is None and not cb else var_b
    if (var_a is None and not ca) or (var_b is None and not cb):
        return d, None
    terms = (0.0 if c else v / len(x) for x, c, v in ((xa, ca, var_a), (xb, cb, var_b)))  # type: ignore[operator]
    return d, 2.0 * math.sqrt(sum(terms))


def _values(v: Iterable[float | None] | float) -> tuple[list[float], bool]:
    """The values of one side of :func:`exceeds` and whether it is a constant (a plain number)."""
    if isinstance(v, numbers.Real):  # a Python or NumPy number
        return [float(v)], True
    return [float(x) for x in v if x is not None], False


def _sample_variance(xs: Sequence[float]) -> float | None:
    """The sample variance (ddof = 1) of ``xs``; None for a single value."""
    if len(xs) < 2:
        return None
    mean = math.fsum(xs) / len(xs)
    return math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def fmt_value(value: float | None, spec: str = ".3g", missing: str = "-") -> str:
    """``value`` formatted with ``spec`` for a table or a claim's text; ``missing`` for None or NaN (a run
    that diverged, a quantity that does not apply)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:{spec}}"


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


def diverged_note(runs: Mapping[str, Sequence[RunHistory]]) -> str:
    """What a figure drawn with :func:`curves` leaves out, for its panels' ``note``: ``"diverged, not drawn:
    adadelta (2 of 3 runs)"``; ``""`` when no run diverged."""
    parts = [
        f"{label} ({sum(h.diverged for h in hs)} of {len(hs)} run{'s' if len(hs) > 1 else ''})"
        for label, hs in runs.items()
        if any(h.diverged for h in hs)
    ]
    return "diverged, not drawn: " + ", ".join(parts) if parts else ""


# ---------------------------------------------------------------------------------------------- context


def _subset(split: Any, n: int) -> Any:
    return split if len(split.y) <= n else type(split)(split.x[:n], split.y[:n])


#: The trainer's divergence message ends with a hint for Python callers; the lab (and the command line)
#: says where the history is kept instead.
_PYTHON_HINT = "; the history so far is on this error's .history."


def check_device(device: str | torch.device, owner: str = "experiments") -> torch.device:
    """``device`` as a :class:`torch.device` that can train here, or a one-line error before any work.

    ``cpu`` always can; ``meta`` never can (its tensors hold no data); any other type (``cuda``, ``mps``,
    ``xpu``, ``mtia``, a registered backend, ...) must report ``torch.<type>.is_available()``, have the
    index asked for, and allocate a tensor.
    """
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptregValueError(f"{owner}: device must be a torch device such as 'cpu', got {device!r}") from None
    if d.type == "cpu":
        return d
    if d.type == "meta":
        raise OptregValueError(
            f"{owner}: device 'meta' holds shapes, not data, so nothing can be trained on it; use 'cpu'"
        )
    backend = getattr(torch, d.type, None)
    is_available = getattr(backend, "is_available", None)
    try:
        available = bool(is_available()) if callable(is_available) else False
    except Exception:  # a backend module that cannot even answer
        available = False
    if not available:
        raise OptregValueError(
            f"{owner}: device {str(device)!r} asked for, but {d.type} is not available on this machine"
        )
    count = getattr(backend, "device_count", None)
    n = count() if callable(count) else None
    if d.index is not None and n is not None and d.index >= n:
        raise OptregValueError(
            f"{owner}: device {str(device)!r} asked for, but this machine has {n} {d.type} device(s)"
        )
    try:
        torch.empty(1, device=d)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OptregValueError(f"{owner}: device {str(device)!r} cannot hold a tensor ({first})") from None
    return d


def check_out(out: str | os.PathLike[str], owner: str = "experiments") -> Path:
    """``out`` as a Path that is, or can become, a writable output folder (not a file, not under a file);
    a ``runs.sqlite`` in it must be a file. Raises a one-line error; creates nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptregValueError(f"{owner}: out must be a folder, got the file '{out}'")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OptregValueError(f"{owner}: out '{out}' cannot be created: '{existing}' is a file")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise OptregValueError(f"{owner}: out '{out}' is not writable ('{existing}' refuses new files)")
    store = out / "runs.sqlite"
    if store.exists() and not store.is_file():
        raise OptregValueError(f"{owner}: '{store}' must be a run store file, got a folder")
    return out


class _Record(Callback):
    """Records a run in the context's store from the moment its training starts, so that input the engine
    refuses (a bad spec or model) records nothing; then hands the records to a :class:`RecordRun`
    and announces the run to the progress function. With ``run_id`` it continues that (resumed) run."""

    def __init__(
        self, ctx: Context, spec: dict[str, Any], data: Splits, extra: dict[str, Any], run_id: int | None = None
    ) -> None:
        self.ctx, self.spec, self.data, self.extra = ctx, spec, data, extra
        self.run_id: int | None = run_id
        self.resumed = run_id is not None
        self.recorder: RecordRun | None = None

    def config(self, trainer: Trainer) -> dict[str, Any]:
        """What the run used: the lab's summary keys (the optimizer's hyperparameters as it was built, its
        defaults filled in), the resolved run spec (``spec``, what ``optreg train --resume`` retrains) and
        the caller's ``config``."""
        spec, train = self.spec, self.spec["train"]
        return {
            "dataset": getattr(self.data, "name", os.fspath(self.ctx.dataset or DEFAULT_DATASET)),
            "model": complete_spec(spec["model"], self.data),
            "init": spec["init"],
            "optimizer": spec["optimizer"]["name"],
            "hparams": {k: v for k, v in trainer.optimizer.defaults.items() if k != "params"},
            "schedule": trainer.schedule,
            "batch_size": train["batch_size"],
            "epochs": train["epochs"],
            "clip_grad_norm": train["clip_grad_norm"],
            "n_train": len(self.data.train.y),
            "spec": self.ctx._spec_record(spec, self.data),
            **self.extra,
        }

    def on_fit_start(self, trainer: Trainer) -> None:
        ctx, label, seed = self.ctx, self.spec["name"], self.spec["train"]["seed"]
        store = ctx.open_store()
        if self.run_id is None:
            self.run_id = store.start_run(
                ctx.experiment,
                label,
                seed=seed,
                config=to_jsonable(self.config(trainer)),
                invocation=ctx.start_invocation(),
                environment=ctx.environment(self.data),
            )
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


class _SaveCheckpoints(Callback):
    """Writes the whole training state (weights, optimizer state, RNGs, history: a
    :func:`optreg.train.save_checkpoint` file) to ``<run folder>/last.pt`` after every epoch, and to
    ``best.pt`` after each epoch that improves the monitored validation metric (early stopping's monitor
    and mode if the run has one, else ``val_loss``, lower is better; no ``best.pt`` without validation).
    Runs after every other callback (``order = 100``, like :class:`~optreg.train.Checkpoint`)."""

    order = 100
    rank_zero_only = True  # in data-parallel training only rank 0 writes files

    def __init__(self, record: _Record) -> None:
        self.record = record
        self.monitor: str | None = None
        self.mode = "min"
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from optreg.train import EarlyStopping

        stopping = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
        if stopping is not None and stopping.monitor.startswith("val_"):
            self.monitor, self.mode = stopping.monitor, stopping.mode
        elif trainer.has_val:
            self.monitor, self.mode = "val_loss", "min"

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        from optreg.train import save_checkpoint

        value = record.get(self.monitor) if self.monitor else None
        improved = value is not None and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        )
        if improved:
            self.best, self.best_epoch = value, record["epoch"]
        folder = self.record.ctx.run_folder(self.record.run_id)  # type: ignore[arg-type]
        state = trainer.state_dict()
        save_checkpoint(state, folder / "last.pt")
        if improved:
            save_checkpoint(state, folder / "best.pt")

    def state_dict(self) -> dict[str, Any]:
        return {} if self.monitor is None else {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


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
            ``.npz`` or ``.csv`` file), as :func:`optreg.data.load` takes; None: the experiment's default
            (:data:`DEFAULT_DATASET`).
        seeds: how many seeds to average over; ``None``: the experiment's default (see :meth:`seed_list`).
        epochs: epochs per run; ``None``: the experiment's default (see :meth:`epoch_count`).
        quick: tiny settings for tests and smoke runs (a few seconds in all).
        out: the output folder: the store is ``out/runs.sqlite``, and each invocation writes its files
            under ``out/<name>/<invocation id>/`` (:meth:`output_folder`). Checked when the context is made
            (not a file, writable); an existing store is checked then (opened and closed).
        progress: a :data:`ProgressFn` (the CLI's progress bars) or None.
        device: the torch device training runs on; checked when the context is made (:func:`check_device`).
        store: the :class:`RunStore` of ``out`` (opened on first use when not given).
        experiment: the name of the experiment being run (set by :meth:`begin`).
        name: the name of the invocation's folder (default: ``experiment``).
        run_ids: the store ids of the runs trained since :meth:`begin`.
        command: the command line recorded with every run (default ``sys.argv``).
        checkpoints: save each run's training state as ``last.pt`` (every epoch) and ``best.pt`` (best
            validation epoch) in :meth:`run_folder` (``optreg train`` does; experiments do not).
        resume: the id of a stored run that the next run trained continues, from its ``last.pt``
            (``optreg train --resume``): the same spec (``epochs`` may grow) on the same data.
        invocation: the store id of the current invocation (made when its first run starts).
        n_classes: the number of classes of ``dataset`` (labels must lie in ``[0, n_classes)``; see
            :func:`optreg.data.load`); None: the loader's default.
    """

    dataset: str | os.PathLike[str] | None = None
    seeds: int | None = None
    epochs: int | None = None
    quick: bool = False
    out: Path = Path("runs")
    progress: ProgressFn | None = None
    device: str | torch.device = "cpu"
    store: RunStore | None = None
    experiment: str = "adhoc"
    name: str | None = None
    run_ids: list[int] = field(default_factory=list)
    command: Sequence[str] | None = None
    checkpoints: bool = False
    resume: int | None = None
    invocation: int | None = None
    folder: Path | None = None
    n_classes: int | None = None
    _data: dict[tuple[Any, ...], Splits] = field(default_factory=dict, init=False, repr=False)
    _fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dataset is not None and (
            not isinstance(self.dataset, str | os.PathLike) or not os.fspath(self.dataset)
        ):
            raise OptregValueError(f"experiments: dataset must be a name or a path, got {self.dataset!r}")
        if self.seeds is not None:
            check_int("experiments", "seeds", self.seeds, 1)
        if self.epochs is not None:
            check_int("experiments", "epochs", self.epochs, 1)
        for name in ("quick", "checkpoints"):
            if not isinstance(getattr(self, name), bool):
                raise OptregTypeError(f"experiments: {name} must be a bool, got {getattr(self, name)!r}")
        if self.progress is not None and not callable(self.progress):
            raise OptregTypeError(f"experiments: progress must be callable, got {self.progress!r}")
        if self.resume is not None:
            check_int("experiments", "resume", self.resume, 1)
        if self.n_classes is not None:
            check_int("experiments", "n_classes", self.n_classes, 1)
        if self.command is not None and (
            isinstance(self.command, str) or not all(isinstance(a, str) for a in self.command)
        ):
            raise OptregTypeError(f"experiments: command must be a list of strings, got {self.command!r}")
        check_device(self.device)
        self.out = check_out(self.out)
        if self.store is None and (self.out / "runs.sqlite").is_file():
            RunStore(self.out / "runs.sqlite").close()  # a foreign or broken file fails here, before any work

    # -------------------------------------------------------------- settings
    def seed_list(self, default: int, quick: int = 1) -> list[int]:
        """The seeds to run: ``range(ctx.seeds)`` if set, else ``range(default)`` (``range(quick)`` in quick mode)."""
        n = self.seeds if self.seeds is not None else (quick if self.quick else default)
        return list(range(n))

    def epoch_count(self, default: int, quick: int = 2) -> int:
        """Epochs per run: ``ctx.epochs`` if set, else ``default`` (``quick`` in quick mode)."""
        return self.epochs if self.epochs is not None else (quick if self.quick else default)

    def expect_runs(self, runs: int) -> None:
        """Announce how many runs the experiment will store from now on: its :meth:`train` /
        :meth:`train_spec` and :meth:`record_run` calls, the runs that end up in ``ctx.run_ids`` (for the
        command line's overall progress, ``run 14/27`` and the time left); call it once, before the first
        run (``0`` for an experiment that stores none)."""
        check_int("experiments", "runs", runs, 0)
        if self.progress is not None:
            self.progress("plan", {"runs": runs})

    def log(self, text: str) -> None:
        """A message for the person running the experiment (shown by the CLI; never printed here)."""
        if self.progress is not None:
            self.progress("message", {"text": str(text)})

    # -------------------------------------------------------------- store, invocation, folders
    def open_store(self) -> RunStore:
        """The run store of ``out`` (``out/runs.sqlite``), opened on first use. In data-parallel training
        only rank 0 records: the other ranks get a store in memory."""
        if self.store is None:
            self.store = RunStore(self.out / "runs.sqlite" if distributed.rank() == 0 else ":memory:")
        return self.store

    def close(self) -> None:
        """Close the store (its WAL checkpointed into ``runs.sqlite``)."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def begin(self, experiment: str, name: str | None = None) -> None:
        """Start a new invocation named ``name`` (default ``experiment``): the runs trained from now on share
        its id in the store, and its files go to a fresh :meth:`output_folder`."""
        self.experiment, self.name, self.run_ids = experiment, name, []
        self.invocation, self.folder = None, None

    def start_invocation(self) -> int:
        """The current invocation's store id, recorded on the first call after :meth:`begin`."""
        if self.invocation is None:
            name = self.name or self.experiment
            self.invocation = self.open_store().start_invocation(self.experiment, name, command=self.command)
        return self.invocation

    def output_folder(self) -> Path:
        """The current invocation's folder, ``out/<name>/<id>/`` (created on first use, never one that exists)."""
        if self.folder is None:
            self.folder = self.open_store().invocation_folder(self.start_invocation())
        return self.folder

    def run_folder(self, run_id: int) -> Path:
        """Where a run's checkpoints are: ``<its invocation's folder>/run-<id>/``."""
        store = self.open_store()
        invocation = store.run(run_id)["invocation"]
        if invocation is None:
            raise OptregValueError(f"experiments: run {run_id} belongs to no invocation, so it has no folder")
        return store.invocation_folder(invocation) / f"run-{run_id}"

    def environment(self, data: Splits | None) -> dict[str, Any]:
        """What a run records about where and on what it ran: :func:`optreg.report.store.environment` (host,
        threads, device, git commit, command line, ...), quick mode, and the data (:meth:`data_source`)."""
        env = environment(device=self.device, command=self.command)
        return {**env, "quick": self.quick, "data": None if data is None else self.data_source(data)}

    def data_source(self, data: Splits) -> dict[str, Any]:
        """Where ``data`` came from: the dataset :meth:`load_data` read it from (name or absolute path and
        sha256 of a file or folder), its seed and options; for data built elsewhere, its name and every
        dataset this context loaded."""
        for (dataset, seed, options), loaded in self._data.items():
            if loaded is data:
                return {"name": data.name, **self._source(dataset), "seed": seed, "options": dict(options)}
        loaded = [{**self._source(d), "seed": s} for d, s, _ in self._data]
        return {"name": getattr(data, "name", None), "from": loaded}

    def _source(self, dataset: str) -> dict[str, Any]:
        from optreg.data import available

        if dataset in available():
            return {"dataset": dataset}
        if dataset not in self._fingerprints:
            self._fingerprints[dataset] = fingerprint(dataset)
        return {"dataset": dataset, **self._fingerprints[dataset]}

    def _spec_record(self, spec: Mapping[str, Any], data: Splits) -> dict[str, Any]:
        """A resolved spec as the store keeps it: JSON data, the model's sizes filled in from the data."""
        return to_jsonable({**spec, "model": complete_spec(spec["model"], data)}, "spec")

    def record_run(
        self,
        label: str,
        *,
        seed: int,
        config: Mapping[str, Any],
        steps: Sequence[Mapping[str, Any]] = (),
        summary: Mapping[str, Any] | None = None,
        status: str = "finished",
        started: bool = False,
    ) -> int:
        """Record a run computed without the trainer (e.g. an optimizer on a 2-D function): its config, its
        iteration records (fields :data:`~optreg.report.store.STEP_COLUMNS`) and summary, in the current
        invocation; returns its id. It counts as a run of :meth:`expect_runs`: the progress function gets
        its ``"start"`` event (unless ``started``: the caller sent it when the work began) and, once it is
        stored, its ``"end"`` event."""
        if self.progress is not None and not started:
            info = {"experiment": self.experiment, "label": label, "seed": seed, "epochs": 0, "steps_per_epoch": 0}
            self.progress("start", info)
        store = self.open_store()
        run_id = store.start_run(
            self.experiment,
            label,
            seed=seed,
            config=config,
            invocation=self.start_invocation(),
            environment=self.environment(None),
        )
        try:
            store.log(run_id, steps=steps)
        except BaseException as e:
            store.finish_run(run_id, "failed", error=f"{type(e).__name__}: {e}")
            raise
        store.finish_run(run_id, status, summary=summary)
        self.run_ids.append(run_id)
        if self.progress is not None:
            self.progress("end", {"label": label, "seed": seed, "status": status, "summary": dict(summary or {})})
        return run_id

    # -------------------------------------------------------------- data
    def load_data(self, seed: int = 0, *, dataset: str | os.PathLike[str] | None = None, **options: Any) -> Splits:
        """``optreg.data.load(dataset or ctx.dataset, seed, **options)``, cached per (dataset, seed, options).

        ``ctx.n_classes`` applies to ``ctx.dataset`` (not to a ``dataset`` given here). In quick mode each
        split keeps at most :data:`QUICK_LIMITS` examples (the first ones of the seeded, shuffled split).
        """
        from optreg.data import load

        if dataset is None and self.n_classes is not None:
            options.setdefault("n_classes", self.n_classes)
        dataset = (self.dataset or DEFAULT_DATASET) if dataset is None else dataset
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
        return self.train_spec(spec, data, callbacks=callbacks, config=config, raise_on_divergence=raise_on_divergence)

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
        other error during training marks the run ``failed`` (``interrupted`` for Ctrl-C) and propagates.
        With ``ctx.checkpoints`` the run's state is saved in :meth:`run_folder`; with ``ctx.resume`` this
        call continues that stored run from its ``last.pt`` (then ``ctx.resume`` is cleared).
        """
        resolved = engine.check_spec(spec)
        label, seed = resolved["name"], resolved["train"]["seed"]
        resume_id, state = (None, None) if self.resume is None else self._prepare_resume(resolved, data)
        record = _Record(self, resolved, data, dict(config or {}), run_id=resume_id)
        # the recorder first: an epoch is stored before any other callback sees it (or stops the run)
        hooks: list[Callback] = [record, *callbacks]
        if self.progress is not None:
            hooks.append(_Notify(self.progress, label, seed))
        if self.checkpoints or state is not None:
            hooks.append(_SaveCheckpoints(record))
        try:
            result = engine.run(
                resolved,
                data,
                seed=seed,
                callbacks=hooks,
                device=self.device,
                raise_on_divergence=True,
                resume_from=state,
            )
        except DivergenceError as e:
            result = e.result
            record.recorder.flush()  # type: ignore[union-attr]
            result.error = str(e).replace(_PYTHON_HINT, f"; the steps before it are stored in run {record.run_id}.")
            history = RunHistory.of(result, run_id=record.run_id, label=label, seed=seed)  # type: ignore[arg-type]
            self._finish(history, result, error=result.error)
            if raise_on_divergence:
                raise
            return history
        except BaseException as e:
            if record.run_id is not None:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                self.open_store().finish_run(record.run_id, status, error=f"{type(e).__name__}: {e}")
            raise
        history = RunHistory.of(result, run_id=record.run_id, label=label, seed=seed)  # type: ignore[arg-type]
        self._finish(history, result)
        return history

    def _prepare_resume(self, resolved: dict[str, Any], data: Splits) -> tuple[int, dict[str, Any]]:
        """Check that ``resolved`` on ``data`` is the stored run ``ctx.resume`` (``train.epochs`` may grow),
        load its ``last.pt``, and reopen the run in the store; returns ``(run id, checkpoint state)``."""
        from optreg.train import load_checkpoint

        run_id, self.resume = self.resume, None
        store = self.open_store()
        run = store.run(run_id)
        owner = f"experiments: cannot resume run {run_id}"
        stored = (run["config"] or {}).get("spec")
        if stored is None:
            raise OptregValueError(f"{owner}: it has no stored spec (recorded by an older optreg)")
        mine = self._spec_record(resolved, data)
        for key in sorted(set(stored) | set(mine)):
            a, b = stored.get(key), mine.get(key)
            if key == "data":  # the file may have moved: its content is compared below
                a, b = ({k: v for k, v in (x or {}).items() if k != "path"} for x in (a, b))
            if key == "train":
                a, b = ({k: v for k, v in x.items() if k != "epochs"} for x in (a, b))
            if a != b:
                raise OptregValueError(f"{owner}: its {key} was {a!r}, this run's is {b!r}")
        was, now = (run["environment"] or {}).get("data") or {}, self.data_source(data)
        if was.get("sha256") != now.get("sha256"):
            raise OptregValueError(
                f"{owner}: its data had sha256 {was.get('sha256')}, '{now.get('path', now.get('dataset'))}' now "
                f"has {now.get('sha256')}"
            )
        path = self.run_folder(run_id) / "last.pt"
        if not path.is_file():
            raise OptregValueError(f"{owner}: it has no checkpoint '{path}' (it was trained without checkpoints)")
        state = load_checkpoint(path)
        epochs = resolved["train"]["epochs"]
        if state["epoch"] > epochs:
            raise OptregValueError(f"{owner}: its checkpoint is at epoch {state['epoch']}, past epochs = {epochs}")
        if run["status"] == "finished" and (state["epoch"] >= epochs or state["stop"]):
            why = "it stopped early" if state["stop"] else f"it has trained all {epochs} epochs"
            raise OptregValueError(f"{owner}: it is finished ({why}); give more epochs to train it further")
        config = None  # more epochs than it had: the stored config says what the run now trains
        if stored["train"].get("epochs") != epochs:
            spec = {**stored, "train": {**stored["train"], "epochs": epochs}}
            config = {**(run["config"] or {}), "epochs": epochs, "spec": spec}
        store.resume_run(
            run_id, step=state["step"], epoch=state["epoch"], environment=self.environment(data), config=config
        )
        self.invocation = run["invocation"]
        self.folder = store.invocation_folder(run["invocation"])
        return run_id, state

    def _finish(self, history: RunHistory, result: RunResult, error: str | None = None) -> None:
        summary = result.summary()
        if self.checkpoints:  # relative to the store's folder, so that the folder can move
            folder = self.run_folder(history.run_id)
            base = self.open_store().path.parent
            files = {k: folder / f"{k}.pt" for k in ("last", "best")}
            summary["checkpoints"] = {k: f.relative_to(base).as_posix() for k, f in files.items() if f.is_file()}
        self.open_store().finish_run(history.run_id, result.status, summary=summary, error=error)
        self._notify_end(history, summary)

    def _notify_end(self, history: RunHistory, summary: dict[str, Any]) -> None:
        if self.progress is not None:
            info = {"label": history.label, "seed": history.seed, "status": history.status, "summary": summary}
            self.progress("end", info)
