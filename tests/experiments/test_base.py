"""Tests of the experiment contract (optreg.experiments.base and the registry in optreg.experiments).

Oracles: the returned history against the rows read back from the run store and the CSV files;
``statistics`` for mean / standard deviation; a second identical run for determinism (the model the
context trains is built by the engine: tests/train/test_run.py checks it against a plain seeded build).
"""

from __future__ import annotations

import csv
import math
import statistics

import pytest
import torch

from optreg import experiments
from optreg.errors import OptregTypeError, OptregValueError
from optreg.experiments import Context, Result, complete_spec, register
from optreg.experiments.base import curves, mean_std
from optreg.report.plots import Panel, curves_figure
from optreg.train import Lambda

SPEC = {"kind": "mlp", "hidden": [16]}


def _train(ctx: Context, label: str = "sgd", seed: int = 0, **kw):
    args = {"model_spec": SPEC, "optimizer": "sgd", "hparams": {"lr": 0.1}, "seed": seed, "batch_size": 64}
    return ctx.train(label, **{**args, "epochs": 2, **kw})


def test_train_records_the_run_as_returned(tmp_path):
    ctx = Context(out=tmp_path, quick=True, experiment="unit")
    h = _train(ctx)
    store = ctx.open_store()
    (run,) = store.runs("unit")
    assert run["id"] == h.run_id and run["label"] == "sgd" and run["status"] == "finished"
    assert run["config"]["hparams"] == {"lr": 0.1} and run["config"]["batch_size"] == 64
    assert run["config"]["model"] == {"kind": "mlp", "hidden": [16], "in_features": 64, "out_features": 10}
    assert store.steps(h.run_id) == h.iterations
    assert store.epochs(h.run_id) == h.epochs
    assert len(h.iterations) == 2 * math.ceil(384 / 64)  # quick mode: 384 training examples
    assert run["summary"]["test_accuracy"] == h.test_accuracy and 0.0 <= h.test_accuracy <= 1.0
    assert isinstance(h.model, torch.nn.Module) and h.seconds > 0
    assert ctx.run_ids == [h.run_id]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = _train(Context(out=tmp_path / "a", quick=True), seed=1)
    b = _train(Context(out=tmp_path / "b", quick=True), seed=1)
    c = _train(Context(out=tmp_path / "c", quick=True), seed=2)
    assert a.iterations == b.iterations
    assert [dict(e, time=0) for e in a.epochs] == [dict(e, time=0) for e in b.epochs]
    assert a.test_accuracy == b.test_accuracy
    assert a.iterations != c.iterations


def test_torch_optimizer_class_and_schedule_mapping(tmp_path):
    ctx = Context(out=tmp_path, quick=True)
    h = _train(ctx, optimizer=torch.optim.SGD, hparams={}, schedule={"name": "exponential", "lr": 0.2, "beta": 0.5})
    lrs = [r["lr"] for r in h.iterations]
    assert lrs == [0.2 * 0.5**t for t in range(len(lrs))]  # eq. (7.6), alpha_0 beta^t
    assert ctx.open_store().run(h.run_id)["config"]["optimizer"] == "torch.optim.sgd.SGD"


def test_a_diverging_run_is_recorded_as_diverged(tmp_path):
    ctx = Context(out=tmp_path, quick=True)
    h = _train(ctx, hparams={"lr": 1e12})
    assert h.diverged and "diverged" in h.error and h.test_accuracy is None
    run = ctx.open_store().run(h.run_id)
    assert run["status"] == "diverged" and "diverged at step" in run["error"]
    assert len(ctx.open_store().steps(h.run_id)) == len(h.iterations)
    with pytest.raises(FloatingPointError):
        _train(ctx, hparams={"lr": 1e12}, raise_on_divergence=True)


def test_a_failing_run_is_recorded_as_failed(tmp_path):
    """An error during training (here a callback's, in the second epoch) marks the run failed, with the
    epoch it finished; input the engine refuses before training (batch_size 0) records nothing."""
    ctx = Context(out=tmp_path, quick=True)
    with pytest.raises(OptregValueError, match="batch_size = 0"):
        _train(ctx, batch_size=0)
    assert ctx.open_store().runs() == []

    def fail(trainer, record):
        if trainer.epoch == 1:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _train(ctx, callbacks=[Lambda(on_epoch_end=fail)])
    (run,) = ctx.open_store().runs()
    assert run["status"] == "failed" and run["error"] == "RuntimeError: disk full"
    assert len(ctx.open_store().epochs(run["id"])) == 1


def test_quick_mode_limits_the_data_and_caches_it(tmp_path):
    quick, full = Context(out=tmp_path, quick=True), Context(out=tmp_path)
    q, f = quick.load_data(0), full.load_data(0)
    assert (len(q.train.y), len(q.val.y), len(q.test.y)) == (384, min(192, len(f.val.y)), 192)
    assert torch.equal(q.train.x, f.train.x[:384])
    assert quick.load_data(0) is q
    assert quick.seed_list(default=5) == [0] and full.seed_list(default=5) == [0, 1, 2, 3, 4]
    assert Context(seeds=2, quick=True).seed_list(default=5) == [0, 1]
    assert quick.epoch_count(20) == 2 and Context(epochs=7, quick=True).epoch_count(20) == 7


def test_mean_std_matches_statistics():
    xs = [0.2, 0.5, 0.9, None]
    mean, sd = mean_std(xs)
    assert mean == pytest.approx(statistics.fmean([0.2, 0.5, 0.9]))
    assert sd == pytest.approx(statistics.pstdev([0.2, 0.5, 0.9]))
    assert mean_std([None]) == (None, None)


def test_complete_spec_fills_sizes_from_the_data(tmp_path):
    data = Context(out=tmp_path, quick=True).load_data(0)
    assert complete_spec({"kind": "mlp"}, data)["in_features"] == 64
    assert complete_spec({"kind": "mlp", "out_features": 3}, data)["out_features"] == 3
    cnn = complete_spec({"kind": "cnn2d", "channels": [4]}, data._replace(input_shape=(1, 8, 8)))
    assert (cnn["in_channels"], cnn["input_shape"]) == (1, [8, 8])


def test_context_rejects_bad_settings():
    with pytest.raises(OptregValueError, match="seeds must be an integer >= 1"):
        Context(seeds=0)
    with pytest.raises(OptregValueError, match="epochs must be an integer >= 1"):
        Context(epochs=-1)
    with pytest.raises(OptregTypeError, match="quick must be a bool"):
        Context(quick="yes")
    with pytest.raises(OptregValueError, match="device"):
        Context(device="nonsense")


def test_register_validates_names_and_refuses_a_second_owner():
    with pytest.raises(OptregValueError, match="lowercase words"):
        register("bad name", title="x")
    with pytest.raises(OptregValueError, match="lowercase"):
        register("Bad", title="x")
    with pytest.raises(OptregValueError, match="already registered"):
        register("optimizers", title="x")(lambda ctx: Result())


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(OptregValueError, match="optimizers") as info:
        experiments.get("nope")
    assert "got 'nope'" in str(info.value)
    names = [row["name"] for row in experiments.describe()]
    assert names == experiments.available() and {"optimizers", "batch-size"} <= set(names)


@register("unit-toy-run", title="Unit: one tiny run", figure="-", help="test only")
def _toy(ctx: Context) -> Result:
    runs = {"sgd": [_train(ctx, seed=s) for s in ctx.seed_list(default=2)]}
    fig = curves_figure([Panel(curves(runs, "loss"), title="loss", xlabel="iteration", ylabel="loss")])
    table = [{"label": "sgd", "loss": runs["sgd"][0].final("train_loss"), "n": len(runs["sgd"])}]
    return Result(table=table, figures={"loss": fig}, notes="A note.")


def test_run_saves_figures_tables_and_metrics(tmp_path):
    ctx = Context(out=tmp_path, quick=True, seeds=2)
    result = experiments.run("unit-toy-run", ctx)
    folder = tmp_path / "unit-toy-run"
    assert set(result.paths) == {"loss", "table.csv", "table.md", "metrics.csv"}
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(folder / "table.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [{"label": "sgd", "loss": str(result.table[0]["loss"]), "n": "2"}]
    md = (folder / "table.md").read_text()
    assert md.startswith("# Unit: one tiny run") and "| label | loss | n |" in md and md.rstrip().endswith("A note.")
    with open(folder / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    store = ctx.open_store()
    runs = store.runs("unit-toy-run")
    assert len(runs) == 2 and {r["seed"] for r in runs} == {0, 1}
    expected = sum(len(store.steps(r["id"])) + len(store.epochs(r["id"])) for r in runs)
    assert len(rows) == expected and {r["seed"] for r in rows} == {"0", "1"}


def test_run_refuses_unsafe_figure_names_and_non_results(tmp_path):
    @register("unit-bad-figure", title="bad")
    def bad(ctx: Context) -> Result:
        return Result(figures={"../escape": curves_figure([Panel({"a": [[1.0, 2.0]]})])})

    with pytest.raises(OptregValueError, match="file-name safe"):
        experiments.run("unit-bad-figure", Context(out=tmp_path))
    assert not (tmp_path / "escape.png").exists()

    @register("unit-not-result", title="bad")
    def not_result(ctx: Context) -> Result:
        return {"table": []}  # type: ignore[return-value]

    with pytest.raises(OptregTypeError, match="must return a Result"):
        experiments.run("unit-not-result", Context(out=tmp_path))


@pytest.mark.parametrize("module", ["preprocessing", "init_schemes"])
def test_each_builtin_module_imports_first_in_a_fresh_process(module):
    """Importing one built-in experiment module before the package loads the others must not hit a circular
    import (preprocessing -> lr_decay -> register -> loader -> init_schemes -> preprocessing did)."""
    import subprocess
    import sys

    code = f"import optreg.experiments.{module}; from optreg import experiments; print(len(experiments.available()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 6
