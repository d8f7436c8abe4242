"""Tests of the ``augmentation``, ``noise`` and ``pretraining`` experiments (quick mode).

Oracles: scikit-learn's ``accuracy_score`` for the accuracy helper; the built optreg MLP's own forward
pass for the blocks the pretraining experiment cuts it into; the run store's records for what the
experiments report; arithmetic on the table's own columns (a gap is train - test accuracy). Verdicts are
never asserted, only that every claim has one.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score
from torch import nn

from optreg import experiments
from optreg.experiments.data_regularization import (
    AUGMENT,
    NOISE_SETTINGS,
    PRETRAIN_SETUPS,
    _blocks,
    accuracy,
    augment_transform,
)
from optreg.nn import build


def test_registered():
    assert {"augmentation", "noise", "pretraining"} <= set(experiments.available())


def test_accuracy_matches_sklearn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    model.eval()
    with torch.no_grad():
        expected = accuracy_score(y.numpy(), model(x).argmax(1).numpy())
    model.train()
    assert accuracy(model, x, y) == pytest.approx(expected, abs=1e-12) and model.training


def test_augment_transform_views_flat_digits_as_images():
    """The batch transform on flat digits is AUGMENT on the (N, 1, 8, 8) view, flattened back (oracle)."""
    x, y = torch.rand(6, 64), torch.arange(6)
    xb, yb = augment_transform()(x, y, torch.Generator().manual_seed(1))
    expected = AUGMENT(x.reshape(6, 1, 8, 8), torch.Generator().manual_seed(1)).reshape(6, 64)
    assert torch.equal(xb, expected) and torch.equal(yb, y)


def test_blocks_compute_the_built_mlp():
    """Sequential(*blocks, out) is the built model's function (oracle: its own forward), on the same tensors."""
    torch.manual_seed(0)
    model = build({"kind": "mlp", "in_features": 64, "hidden": [16, 16, 16], "out_features": 10,
                   "activation": "sigmoid"})  # fmt: skip
    blocks, out = _blocks(model)
    assert len(blocks) == 3
    x = torch.randn(5, 64)
    assert torch.equal(nn.Sequential(*blocks, out)(x), model(x))
    assert {id(p) for p in nn.Sequential(*blocks, out).parameters()} == {id(p) for p in model.parameters()}


@pytest.fixture(scope="module")
def augmentation(run_quick):
    return run_quick("augmentation")


def test_augmentation_quick_table_and_files(augmentation, read_csv, read_claims):
    ctx, result = augmentation
    assert set(result.figures) == {"examples", "accuracy"}
    for name in ("examples", "accuracy", "table.csv", "table.md", "metrics.csv"):
        assert result.paths[name].is_file() and result.paths[name].stat().st_size > 0
    rows = result.table
    sizes = sorted({r["n_train"] for r in rows})
    assert [(r["n_train"], r["augmentation"]) for r in rows] == [(n, s) for n in sizes for s in ("none", "augmented")]
    for r in rows:
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "warped_test_accuracy"):
            assert 0.0 <= r[key] <= 1.0
        assert r["gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"], abs=1e-12)  # one seed
    store = ctx.open_store()
    runs = [store.run(i) for i in ctx.run_ids]
    assert len(runs) == len(rows)
    for run, row in zip(runs, rows):  # the store's summary is the row's test accuracy (one seed in quick mode)
        assert run["summary"]["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-12)
        assert run["summary"]["steps"] == row["updates"]
    assert len(read_claims(result)) == 4
    assert len(read_csv(result.paths["table.csv"])) == len(rows)


def test_noise_quick_table_and_claims(run_quick, read_claims):
    ctx, result = run_quick("noise")
    assert [r["setting"] for r in result.table] == list(NOISE_SETTINGS)
    for r in result.table:
        assert r["gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"], abs=1e-12)
        assert r["best_val_accuracy"] >= r["val_accuracy"]
    by = {r["setting"]: r for r in result.table}
    for clean in ("none", "input noise 0.1", "input noise 0.3", "weight noise 0.05"):  # trained on the true labels
        assert by[clean]["train_accuracy"] == by[clean]["train_accuracy_true_labels"]
    store = ctx.open_store()
    labels = [store.run(i)["label"] for i in ctx.run_ids]
    assert len(labels) == len(NOISE_SETTINGS) and any(label.startswith("weight noise") for label in labels)
    weight = next(store.run(i) for i in ctx.run_ids if store.run(i)["label"].startswith("weight noise"))
    assert weight["summary"]["test_accuracy"] == pytest.approx(by["weight noise 0.05"]["test_accuracy"], abs=1e-12)
    assert len(read_claims(result)) == 8


def test_pretraining_quick_table_and_claims(run_quick, read_claims):
    ctx, result = run_quick("pretraining")
    assert [(r["setup"], r["method"]) for r in result.table] == [
        (s, m) for s in PRETRAIN_SETUPS for m in ("end to end", "greedy + fine-tune")
    ]
    for r in result.table:
        greedy = r["method"] != "end to end"
        assert (r["greedy_only_test_accuracy"] is not None) == greedy
        assert (r["pretraining_seconds_per_epoch"] is not None) == greedy
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert len(ctx.run_ids) == len(result.table)  # every run recorded, the greedy ones by record_run
    assert len(read_claims(result)) == 5
