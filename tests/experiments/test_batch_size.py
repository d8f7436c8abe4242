"""Tests of the ``batch-size`` experiment (figure 7.3).

Oracles: section 7.2.1's count of iterations per epoch, ceil(N / K), against the steps in the run
store; the chapter's two claims for figure 7.3 on the recorded losses; the store against the table.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from optreg.experiments.batch_size import BATCH_SIZES, LEARNING_RATE


@pytest.fixture(scope="module")
def quick_run(run_quick):
    ctx, result = run_quick("batch-size")
    return result, ctx, ctx.out


def test_quick_run_writes_its_files_and_one_run_per_batch_size(quick_run, read_csv):
    result, ctx, out = quick_run
    folder = ctx.output_folder()
    assert folder == out / "batch-size" / str(ctx.invocation)
    assert (folder / "figure-7.3.png").stat().st_size > 10_000
    table = read_csv(folder / "table.csv")
    n = 384  # quick mode's training examples
    assert [int(r["batch_size"]) for r in table] == [k or n for k in BATCH_SIZES]
    runs = ctx.open_store().runs("batch-size")
    assert len(runs) == len(BATCH_SIZES) and all(r["status"] == "finished" for r in runs)
    assert all(r["config"]["hparams"]["lr"] == LEARNING_RATE for r in runs)  # one lr for every K
    assert (folder / "metrics.csv").is_file() and result.table[0]["batch_size"] == 1


def test_iterations_per_epoch_are_ceil_n_over_k(quick_run):
    _, ctx, _ = quick_run
    store = ctx.open_store()
    for run in store.runs("batch-size"):
        k, n, epochs = run["config"]["batch_size"], run["config"]["n_train"], run["config"]["epochs"]
        steps = store.steps(run["id"])
        assert len(steps) == epochs * math.ceil(n / k)
        assert [s["step"] for s in steps] == list(range(len(steps)))


def test_the_chapters_claims_hold(quick_run):
    """7.3b: per epoch, the smaller the batch the lower the loss. 7.3a: the mini-batch loss of K = 1
    oscillates (its step-to-step changes are far larger than those of K = 32)."""
    result, ctx, _ = quick_run
    final = [row["train_loss"] for row in result.table]  # K = 1, 8, 32, 128, N
    assert final == sorted(final) and final[0] < 0.5 * final[-1]
    store = ctx.open_store()
    by_k = {r["config"]["batch_size"]: store.steps(r["id"]) for r in store.runs("batch-size")}

    def jitter(steps):
        losses = np.array([s["loss"] for s in steps[:24]])
        return float(np.abs(np.diff(losses)).mean())

    assert jitter(by_k[1]) > 5 * jitter(by_k[32])
    for run in store.runs("batch-size"):  # every batch size lowers the loss from epoch to epoch
        epochs = store.epochs(run["id"])
        assert epochs[-1]["train_loss"] < epochs[0]["train_loss"], run["label"]
