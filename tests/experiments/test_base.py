"""Tests of the experiment contract (optreg.experiments.base and the registry in optreg.experiments).

Oracles: the returned history against the rows read back from the run store and the CSV files;
``statistics`` for mean / standard deviation; a second identical run for determinism (the model the
context trains is built by the engine: tests/train/test_run.py checks it against a plain seeded build);
an uninterrupted run for a resumed one (bit for bit); hashlib for the recorded data file; torch for
which devices exist.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import math
import os
import signal
import statistics
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from optreg import experiments, optim
from optreg.errors import OptregTypeError, OptregValueError
from optreg.experiments import Context, Result, complete_spec, register
from optreg.experiments.base import claim, curves, differs, exceeds, mean_std, within
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
    # the values actually used, defaults filled in (oracle: the signature of optreg.optim.sgd)
    defaults = {k: v.default for k, v in inspect.signature(optim.get("sgd")).parameters.items()}
    # (and the adapter's group key maximize, which every optreg optimizer honours)
    assert run["config"]["hparams"] == {**defaults, "lr": 0.1, "maximize": False}
    assert run["config"]["batch_size"] == 64
    spec = run["config"]["spec"]
    assert spec["optimizer"] == {"name": "sgd", "lr": 0.1} and spec["train"]["epochs"] == 2
    assert spec["model"] == run["config"]["model"]
    env = run["environment"]
    assert env["threads"] == torch.get_num_threads() and env["device"] == "cpu" and env["quick"] is True
    assert env["data"] == {"name": "digits", "dataset": "digits", "seed": 0, "options": {}}
    assert run["invocation"] == ctx.invocation and run["pid"] == os.getpid()
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


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.489, 0.482, 0.496], [0.484, 0.480, 0.488]),
        ([0.91, 0.93, 0.92, 0.95], [0.80, 0.82]),
        ([1.0, 3.0], [-1.0, 0.5, 2.0, 7.5, 3.25]),
    ],
)
def test_exceeds_uses_welchs_standard_error(a, b):
    """Oracle: scipy.stats.ttest_ind(equal_var=False): its t is d / SE, so 2 SE = 2 d / t; the verdict is
    d > 2 SE, i.e. t > 2."""
    from scipy import stats

    t = stats.ttest_ind(a, b, equal_var=False).statistic
    d = float(np.mean(a) - np.mean(b))
    result = exceeds(a, b, fmt=".6f")
    assert result.holds == (t > 2)
    assert f"2 SE = {2 * d / t:.6f}" in result.text
    assert result.text.startswith(f"{d:+.6f}, ")
    assert exceeds(b, a).holds is False  # the other way round never holds when this one is positive
    one = stats.ttest_1samp(a, 0.5).statistic  # against a constant: SE = s_a / sqrt(n_a)
    assert f"2 SE = {2 * (np.mean(a) - 0.5) / one:.6f}" in exceeds(a, 0.5, fmt=".6f").text


def test_exceeds_on_hand_cases():
    """Oracle: hand arithmetic. a = (1, 2, 3), b = (0, 0, 0): d = 2, s_a = 1, SE = sqrt(1/3)."""
    bar = 2 * math.sqrt(1 / 3)  # 1.1547: d = 2 is beyond it
    assert exceeds([1, 2, 3], [0, 0, 0]) == (True, f"+2.000, 2 SE = {bar:.3f}")
    # d = 1 is within two standard errors: not shown, and the text says why
    assert exceeds([0, 1, 2], [0, 0, 0]) == (False, f"+1.000, 2 SE = {bar:.3f}: within seed noise")
    # clearly the other way: not "within noise"
    assert exceeds([0, 0, 0], [1, 2, 3]) == (False, f"-2.000, 2 SE = {bar:.3f}")
    # the briefing's example: a 0.005 lead with sd ~ 0.007 over 3 seeds is not evidence
    assert exceeds([0.482, 0.489, 0.496], [0.484, 0.484, 0.484]).text.endswith("within seed noise")
    # one value per side: the plain comparison, said to be one seed
    assert exceeds([0.5], [0.4]) == (True, "+0.100 (1 seed)")
    assert exceeds([0.4], [0.5]) == (False, "-0.100 (1 seed)")
    # one value on one side borrows the other's variance: s = 1, SE = sqrt(1/1 + 1/3)
    borrowed = 2 * math.sqrt(1 + 1 / 3)
    assert exceeds([5.0], [1, 2, 3]) == (True, f"+3.000, 2 SE = {borrowed:.3f}")
    # no spread at all: any positive difference holds, a zero one does not
    assert exceeds([1, 1], [0, 0]).holds and not exceeds([1, 1], [1, 1]).holds
    # a margin: "not worse than b by more than 0.01"; None (diverged) left out; an empty side never holds
    assert exceeds([0.5, 0.5], [0.505, 0.505], margin=-0.01).holds
    assert not exceeds([0.5, 0.5], [0.52, 0.52], margin=-0.01).holds
    assert exceeds([0.5], [0.52], margin=-0.01) == (False, "-0.020 vs margin -0.010 (1 seed)")
    assert exceeds([3.0, None, 3.0], [1.0, 1.0]).holds
    # a constant (a threshold): no spread on its side; one value against a constant is the plain comparison
    assert exceeds([1, 2, 3], 0.0) == (True, f"+2.000, 2 SE = {bar:.3f}")
    spread = 2 * 0.05 / math.sqrt(3)  # s = 0.05 over 3 seeds
    assert exceeds(0.97, [0.9, 0.95, 1.0]) == (False, f"+0.020, 2 SE = {spread:.3f}: within seed noise")
    assert exceeds([0.97], 0.95) == (True, "+0.020 (1 seed)")
    assert exceeds([None, None], [1.0]) == (False, "no finished runs on one side")


def test_differs_is_either_one_sided_exceeds_and_matches_welchs_t():
    """Oracle: scipy.stats.ttest_ind(equal_var=False): the means differ beyond noise exactly when |t| > 2."""
    from scipy import stats

    a, b = [0.91, 0.93, 0.95, 0.92], [0.90, 0.89, 0.92]
    t = stats.ttest_ind(a, b, equal_var=False).statistic
    assert differs(a, b).holds == differs(b, a).holds == (abs(t) > 2)
    assert differs(a, b).text == exceeds(a, b).text
    assert differs([0.5, 0.51, 0.49], [0.5, 0.52, 0.48]).holds is False  # within noise either way
    assert differs([1.0, 1.1, 0.9], [3.0, 3.1, 2.9]).holds is True  # b larger: differs too


def test_within_is_two_one_sided_exceeds():
    """Oracle: hand arithmetic and exceeds itself (|d| + 2 SE < tol exactly when a > b - tol and b > a - tol)."""
    bar = 2 * math.sqrt(1 / 3)  # a = (0, 1, 2) vs b = (0, 0, 0): d = 1, 2 SE = 1.155
    assert within([0, 1, 2], [0, 0, 0], 3.0) == (True, f"+1.000, 2 SE = {bar:.3f}, tolerance 3.000")
    assert within([0, 1, 2], [0, 0, 0], 2.0) == (False, f"+1.000, 2 SE = {bar:.3f}, tolerance 2.000: within seed noise")
    assert not within([5, 6, 7], [0, 0, 0], 2.0).holds and "noise" not in within([5, 6, 7], [0, 0, 0], 2.0).text
    assert within([0.50], [0.51], 0.02) == (True, "-0.010, tolerance 0.020 (1 seed)")
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b, tol = rng.normal(0, 1, 3), rng.normal(0.5, 1, 4), float(rng.uniform(0.5, 4))
        assert within(a, b, tol).holds == (exceeds(a, b, margin=-tol).holds and exceeds(b, a, margin=-tol).holds)


def test_claim_has_exactly_two_verdicts():
    """Oracle: the two words the claims tables, tests and users rely on."""
    assert claim("c", "m", True)["verdict"] == "holds"
    assert claim("c", "m", exceeds([0, 1, 2], [0, 0, 0]).holds)["verdict"] == "does not hold here"


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
    folder = tmp_path / "unit-toy-run" / "1"
    assert result.paths["table.csv"] == folder / "table.csv"
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


def test_rerunning_an_experiment_never_replaces_its_files(tmp_path):
    """Two invocations: two folders, the first's bytes untouched, each one's runs sharing its id."""
    first = experiments.run("unit-toy-run", Context(out=tmp_path, quick=True, seeds=1))
    before = {name: path.read_bytes() for name, path in first.paths.items()}
    ctx = Context(out=tmp_path, quick=True, seeds=2)
    second = experiments.run("unit-toy-run", ctx)
    assert first.paths["metrics.csv"].parent != second.paths["metrics.csv"].parent
    assert {name: path.read_bytes() for name, path in first.paths.items()} == before
    store = ctx.open_store()
    assert [[r["id"] for r in store.runs(invocation=i)] for i in (1, 2)] == [[1], [2, 3]]
    assert store.invocation(2)["folder"] == second.paths["metrics.csv"].parent


def test_save_result_refuses_to_replace_and_writes_nothing(tmp_path):
    result = Result(table=[{"a": 1}], figures={"fig": curves_figure([Panel({"a": [[1.0, 2.0]]})])})
    (tmp_path / "table.md").write_text("someone's notes")
    with pytest.raises(OptregValueError, match="table.md' exists; a result is never replaced"):
        experiments.save_result(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
    assert (tmp_path / "table.md").read_text() == "someone's notes"
    paths = experiments.save_result(result, tmp_path, overwrite=True)
    assert paths["table.md"].read_text().startswith("# ")


def test_save_result_writes_the_claims_the_same_way_for_every_experiment(tmp_path, read_claims):
    """``claims.csv`` (claim, measured, verdict) and a "## Claims" markdown table in ``table.md`` between the
    table and the notes; a ``|`` in a claim is escaped in the markdown. Oracle: the rows given (read back by the
    tests' one claims reader)."""
    claims = [claim("a | b holds", "1.5 vs 2", True), claim("c", "+0.001, 2 SE = 0.010: within seed noise", False)]
    result = Result(table=[{"x": 1}], claims=claims, notes="A note.", title="T")
    result.paths = experiments.save_result(result, tmp_path)
    assert set(result.paths) == {"table.csv", "claims.csv", "table.md"}
    assert read_claims(result) == [
        {"claim": "a | b holds", "measured": "1.5 vs 2", "verdict": "holds"},
        {"claim": "c", "measured": "+0.001, 2 SE = 0.010: within seed noise", "verdict": "does not hold here"},
    ]
    md = result.paths["table.md"].read_text()
    assert md.index("| x |") < md.index("\n## Claims\n") < md.index("a \\| b holds") < md.index("A note.")


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ("holds", "claims must be a list of claim"),
        ([{"claim": "a", "measured": "1"}], r"claims\[0\] must be a claim\(\) row with the keys claim, measured"),
        ([{"measured": "1", "claim": "a", "verdict": "holds"}], r"claims\[0\] must be a claim\(\) row"),
        ([claim("a", "1", True), {"claim": "b", "measured": "2", "verdict": "maybe"}],
         r"claims\[1\] verdict must be one of 'holds', 'does not hold here', got 'maybe'"),
        ([claim("a", "", True)], r"claims\[0\] needs a non-empty claim and measured text"),
    ],
)
def test_save_result_refuses_claims_that_are_not_claim_rows_and_writes_nothing(tmp_path, claims, match):
    with pytest.raises((OptregValueError, OptregTypeError), match=match):
        experiments.save_result(Result(table=[{"x": 1}], claims=claims), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _device_types() -> list[str]:
    """Every device type torch parses (its c10 DeviceType names), but the ones this machine has."""
    names = ["cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia", "xla",
             "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone", "cuda:7"]  # fmt: skip
    usable = []
    for name in names:
        backend = getattr(torch, name.split(":")[0], None)
        if getattr(backend, "is_available", lambda: False)() and name != "cuda:7":
            usable.append(name)
    return [n for n in names if n not in usable]


@pytest.mark.parametrize("device", _device_types())
@pytest.mark.filterwarnings("ignore:'mkldnn' is no longer used")
def test_unusable_devices_are_refused_before_anything_is_written(tmp_path, device):
    with pytest.raises(OptregValueError, match="device") as info:
        Context(out=tmp_path, device=device)
    assert "\n" not in str(info.value) and str(info.value).startswith("experiments: device")
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_file_is_refused_at_once(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptregValueError, match="out must be a folder, got the file"):
        Context(out=tmp_path / "file")
    with pytest.raises(OptregValueError, match="'.*file' is a file"):
        Context(out=tmp_path / "file" / "below")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "runs.sqlite").write_bytes(b"not a database" * 64)
    with pytest.raises(OptregValueError, match="not an optreg run store"):
        Context(out=tmp_path / "bad")
    assert (tmp_path / "file").read_text() == "x"


def test_settings_an_experiment_does_not_take_are_refused_first(tmp_path):
    for ctx in (
        Context(out=tmp_path, epochs=3),
        Context(out=tmp_path, seeds=2),
        Context(out=tmp_path, dataset="mnist1d"),
    ):
        with pytest.raises(OptregValueError, match="optimizers-2d does not take .*toy problems"):
            experiments.run("optimizers-2d", ctx)
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_run_says_where_its_history_is_without_a_python_hint(tmp_path):
    ctx = Context(out=tmp_path, quick=True)
    h = _train(ctx, hparams={"lr": 1e12})
    assert ".history" not in h.error and f"the steps before it are stored in run {h.run_id}" in h.error
    assert ctx.open_store().run(h.run_id)["error"] == h.error


def test_a_data_file_is_recorded_by_absolute_path_and_sha256(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "own.npz", x=rng.normal(size=(120, 5)).astype("float32"), y=rng.integers(0, 3, 120))
    monkeypatch.chdir(tmp_path)
    ctx = Context(out="out", dataset="own.npz", quick=True)
    h = _train(ctx)
    data = ctx.open_store().run(h.run_id)["environment"]["data"]
    assert data["path"] == str((tmp_path / "own.npz").resolve()) and data["dataset"] == "own.npz"
    assert data["sha256"] == hashlib.sha256((tmp_path / "own.npz").read_bytes()).hexdigest()


def test_ctrl_c_marks_the_run_interrupted(tmp_path):
    def stop(trainer, record):
        raise KeyboardInterrupt

    ctx = Context(out=tmp_path, quick=True)
    with pytest.raises(KeyboardInterrupt):
        _train(ctx, callbacks=[Lambda(on_epoch_end=stop)])
    (run,) = ctx.open_store().runs()
    assert run["status"] == "interrupted" and len(ctx.open_store().epochs(run["id"])) == 1


def _final_state(ctx: Context, run_id: int) -> dict:
    return torch.load(ctx.run_folder(run_id) / "last.pt", weights_only=True)


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def _records(ctx: Context, run_id: int) -> tuple[list, list]:
    store = ctx.open_store()
    return store.steps(run_id), [dict(e, time=0) for e in store.epochs(run_id)]


def test_a_stopped_run_resumed_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
    """Oracle: the same run trained in one go. A run stopped by Ctrl-C in its third epoch (after its second
    epoch's checkpoint) and resumed from last.pt ends with the same parameters, optimizer state, best.pt
    and records."""
    kw = {"epochs": 5, "schedule": {"name": "exponential", "lr": 0.2, "beta": 0.99}, "hparams": {"lr": 0.2}}
    whole = Context(out=tmp_path / "whole", quick=True, checkpoints=True)
    h = _train(whole, **kw)

    def stop(trainer, record):
        if trainer.epoch == 2 and record["step"] == trainer.step == 2 * 6 + 3:  # mid-way through epoch 3
            raise KeyboardInterrupt

    cut = Context(out=tmp_path / "cut", quick=True, checkpoints=True)
    with pytest.raises(KeyboardInterrupt):
        _train(cut, callbacks=[Lambda(on_step_end=stop)], **kw)
    (run,) = cut.open_store().runs()
    assert run["status"] == "interrupted" and len(cut.open_store().epochs(run["id"])) == 2
    again = Context(out=tmp_path / "cut", quick=True, checkpoints=True, resume=run["id"])
    resumed = _train(again, **kw)
    assert resumed.run_id == run["id"] and resumed.status == "finished"
    a, b = _final_state(whole, h.run_id), _final_state(again, run["id"])
    assert _same_tensors(a["model"], b["model"]) and _same_tensors(a["optimizer"], b["optimizer"])
    assert a["step"] == b["step"] == 5 * 6
    best_a = torch.load(whole.run_folder(h.run_id) / "best.pt", weights_only=True)
    best_b = torch.load(again.run_folder(run["id"]) / "best.pt", weights_only=True)
    assert _same_tensors(best_a["model"], best_b["model"]) and best_a["epoch"] == best_b["epoch"]
    assert _records(whole, h.run_id) == _records(again, run["id"])
    with pytest.raises(OptregValueError, match="it is finished .*all 5 epochs"):
        _train(Context(out=tmp_path / "cut", quick=True, resume=run["id"]), **kw)
    with pytest.raises(OptregValueError, match="cannot resume run 1: its optimizer was"):
        other = {**kw, "hparams": {"lr": 0.2, "momentum": 0.5}}
        _train(Context(out=tmp_path / "cut", quick=True, resume=run["id"]), **other)


_KILLED = textwrap.dedent(
    """
    import sys, json
    from optreg.experiments import Context
    from optreg.train import Lambda

    ctx = Context(out=sys.argv[1], quick=True, checkpoints=True)
    ctx.train("long", model_spec={"kind": "mlp", "hidden": [16]}, optimizer="adam", hparams={"lr": 0.01},
              seed=0, batch_size=64, epochs=100000,
              callbacks=[Lambda(on_epoch_end=lambda t, r: print(r["epoch"], flush=True))])
    """
)


@pytest.mark.slow  # a fresh interpreter and 60 epochs, ~20 s; the in-process resume test above is the fast one
def test_a_killed_run_is_reported_interrupted_and_resumes_exactly(tmp_path):
    """SIGKILL a training process mid-run; the store reports it interrupted; resumed to 30 epochs it equals a
    30-epoch run trained in one go (the epoch count is the one setting a resumed run may change)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(tmp_path / "k")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        for line in proc.stdout:
            if int(line) >= 2:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    ctx = Context(out=tmp_path / "k", quick=True, checkpoints=True)
    (run,) = ctx.open_store().runs()
    assert run["status"] == "interrupted" and run["pid"] == proc.pid
    done = len(ctx.open_store().epochs(run["id"]))
    assert 3 <= done < 30
    spec = {"model_spec": {"kind": "mlp", "hidden": [16]}, "optimizer": "adam", "hparams": {"lr": 0.01}}
    kw = {**spec, "seed": 0, "batch_size": 64, "epochs": 30}
    ctx.resume = run["id"]
    resumed = ctx.train("long", **kw)
    whole = Context(out=tmp_path / "w", quick=True, checkpoints=True)
    h = whole.train("long", **kw)
    assert _same_tensors(_final_state(ctx, resumed.run_id)["model"], _final_state(whole, h.run_id)["model"])
    assert _records(ctx, resumed.run_id) == _records(whole, h.run_id)
    assert ctx.open_store().run(run["id"])["environment"]["resumes"][0]["before"]["status"] == "interrupted"
