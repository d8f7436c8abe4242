"""Tests of the ``early-stopping``, ``label-smoothing`` and ``distillation`` experiments (sections 7.7.3, 7.7.6).

Oracles: Prechelt's (1998) stopping rules written out here from his definitions and applied to the validation
curve read back from the run store (``metrics.csv``); a live training run stopped by
:class:`~optreg.train.EarlyStopping` (the replay must stop where it stops); the ECE's definition (Naeini et al.
2015) recomputed with numpy from the stored test probabilities; the closed-form minimizer of the smoothed
cross-entropy (the softmax must equal the smoothed target); Hinton et al.'s analytic gradient of the soft term,
``T (p - q) / N``; and :meth:`Context.train` (the engine's pipeline) for :func:`fit_with_loss` with the plain
cross-entropy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optreg.data import load
from optreg.data.datasets import Split
from optreg.experiments import Context
from optreg.experiments.regularization import (
    CRITERIA,
    closed_form_gap,
    fit_with_loss,
    logit_gap,
    soft_gradient_norms,
    stopping_point,
)
from optreg.nn import build
from optreg.regularize import label_smoothing_cross_entropy
from optreg.regularize.losses import smooth_labels
from optreg.train import EarlyStopping, Trainer
from optreg.train.run import build_model


def ece_numpy(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error from its definition: equal-width bins (b/B, (b+1)/B] of the top probability."""
    p = p.astype(np.float64)
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return total / len(y)


# ------------------------------------------------------------------------------------------ early stopping


def prechelt_stop(val: list[float], train: list[float], kind: str, *, alpha: float = 0.0, strips: int = 0,
                  patience: int = 0, k: int = 5) -> int | None:
    """Prechelt (1998), sec. 2.2, and a plain patience count: the 0-based epoch after which training stops."""
    best = math.inf
    wait = 0
    ups = 0
    for t, e in enumerate(val):
        if kind == "patience":
            if e < best:
                best, wait = e, 0
            else:
                wait += 1
                if wait >= patience:
                    return t
            continue
        best = min(best, e)
        gl = 100.0 * (e / best - 1.0)
        if kind == "gl" and gl > alpha:
            return t
        if (t + 1) % k:
            continue
        if kind == "pq":
            window = train[t - k + 1 : t + 1]
            pk = 1000.0 * (sum(window) / (k * min(window)) - 1.0)
            if (gl > 0 if pk == 0 else gl / pk > alpha):
                return t
        if kind == "up":
            ups = ups + 1 if t >= k and e > val[t - k] else 0
            if ups >= strips:
                return t
    return None


@pytest.fixture(scope="module")
def early(run_quick):
    return run_quick("early-stopping")


def test_early_stopping_table_rows_and_claims(early, read_csv, read_claims):
    ctx, result = early
    labels = [r["criterion"] for r in result.table]
    assert labels == [*CRITERIA, "oracle", "no early stopping"]
    folder = ctx.folder
    rows = read_csv(folder / "table.csv")
    assert [r["criterion"] for r in rows] == labels
    assert (folder / "curves.png").stat().st_size > 0
    claims = read_claims(result)
    assert len(claims) == 5
    assert all(any(ch.isdigit() for ch in c["measured"]) for c in claims)  # every claim carries a measured number


def test_early_stopping_points_match_prechelts_definitions_on_the_stored_curve(early, read_csv):
    """The stop and kept epochs of every criterion, recomputed from the validation losses in metrics.csv."""
    ctx, result = early
    epochs = [r for r in read_csv(ctx.folder / "metrics.csv") if r["kind"] == "epoch"]
    val = [float(r["val_loss"]) for r in epochs]
    train = [float(r["train_loss"]) for r in epochs]
    rows = {r["criterion"]: r for r in result.table}
    for label, kw in CRITERIA.items():
        kind = kw["criterion"]
        stop = prechelt_stop(val, train, kind, alpha=kw.get("alpha", 0.0), strips=kw.get("strips", 0),
                             patience=kw.get("patience", 0))
        trained = len(val) if stop is None else stop + 1
        assert rows[label]["epochs trained per seed"] == str(trained), label
        kept = int(np.argmin(val[:trained]))  # the best validation loss up to the stop (first of ties)
        assert rows[label]["kept epoch per seed"] == str(kept + 1), label
    assert rows["oracle"]["kept epoch per seed"] == str(int(np.argmin(val)) + 1)
    assert rows["no early stopping"]["kept epoch per seed"] == str(len(val))


def test_replay_stops_where_a_live_run_stops():
    """stopping_point on a run's stored epoch records == what EarlyStopping decided during that run."""
    data = load("digits", 0)
    train = Split(data.train.x[:200], data.train.y[:200])
    for kw in ({"criterion": "gl", "alpha": 1.0}, {"criterion": "patience", "patience": 2},
               {"criterion": "up", "strips": 1, "strip": 2}, {"criterion": "pq", "alpha": 0.5, "strip": 2}):
        torch.manual_seed(0)
        model = build({"kind": "mlp", "in_features": 64, "hidden": [64], "out_features": 10})
        cb = EarlyStopping(monitor="val_loss", **kw)
        trainer = Trainer(model, torch.optim.Adam(model.parameters(), 3e-3), batch_size=32, epochs=40,
                          callbacks=[cb], log_every=100)
        history = trainer.fit(train, data.val)
        stopped, best = stopping_point(history.epochs, **kw)
        assert stopped == cb.stopped_epoch and best == cb.best_epoch, kw
        assert cb.stopped_epoch is not None  # the check compared a real stop


# ---------------------------------------------------------------------------------------- label smoothing


@pytest.mark.parametrize("form", ["chapter", "uniform"])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_closed_form_gap_is_the_minimizer_of_the_smoothed_loss(form, eps):
    """softmax of logits [g, 0, ..., 0] equals the smoothed target, so the loss's gradient vanishes there."""
    k = 10
    g = closed_form_gap(eps, k, form)
    expected = {"chapter": math.log((1 - eps) * (k - 1) / eps), "uniform": math.log((1 - eps + eps / k) / (eps / k))}
    assert g == pytest.approx(expected[form], rel=1e-12)
    z = torch.zeros(1, k, dtype=torch.float64)
    z[0, 3] = g
    y = torch.tensor([3])
    target = smooth_labels(y, k, eps, form).double()
    assert torch.allclose(z.softmax(1), target, atol=1e-7)
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(label_smoothing_cross_entropy(z, y, eps, form), z)
    assert grad.abs().max() < 1e-7
    assert logit_gap(z.detach(), y) == pytest.approx(g)
    assert closed_form_gap(0.0, k, form) == math.inf


@pytest.fixture(scope="module")
def smoothing(run_quick):
    return run_quick("label-smoothing")


def test_label_smoothing_ece_and_accuracy_recomputed_from_stored_probabilities(
    smoothing, read_csv, read_claims
):
    ctx, result = smoothing
    stored = np.load(ctx.folder / "predictions.npz")
    assert len(read_csv(ctx.folder / "table.csv")) == len(result.table)
    for row in result.table:
        form = "chapter" if row["eps"] == 0 else row["form"]
        p = stored[f"p|{row['dataset']}|{row['eps']:g}|{form}|0"]
        y = stored[f"y|{row['dataset']}|0"]
        assert np.allclose(p.sum(1), 1.0, atol=1e-5)
        assert row["test ece"] == pytest.approx(ece_numpy(p, y), abs=1e-9)
        assert row["test accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()), abs=1e-12)
        assert row["test confidence"] == pytest.approx(float(p.max(1).astype(np.float64).mean()), rel=1e-6)
        k = p.shape[1]
        if row["eps"] == 0:
            assert row["closed-form gap"] == math.inf
        elif row["form"] == "chapter":
            assert row["closed-form gap"] == pytest.approx(math.log((1 - row["eps"]) * (k - 1) / row["eps"]))
        else:
            assert row["closed-form gap"] == pytest.approx(math.log(1 + k * (1 - row["eps"]) / row["eps"]))
    claims = read_claims(result)
    assert claims[0]["claim"].startswith("exercise 7-5") and claims[0]["verdict"] == "holds"  # an identity (float32)
    assert {"calibration", "reliability", "logit-gap"} <= set(result.figures)


# ------------------------------------------------------------------------------------------ distillation


def test_soft_gradient_norms_match_the_analytic_gradient():
    """d/dz of T^2 KL(q_T || p_T), batch mean, is T (p_T - q_T) / N (Hinton et al. 2015, sec. 2.1)."""
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(50, 10, generator=g, dtype=torch.float64) * 3, torch.randn(50, 10, generator=g,
                                                                                    dtype=torch.float64) * 3
    rows = soft_gradient_norms(z, v, [1.0, 3.0, 50.0])
    for r in rows:
        t = r["T"]
        analytic = t * ((z / t).softmax(1) - (v / t).softmax(1)) / z.shape[0]
        assert r["scaled"] == pytest.approx(float(analytic.norm()), rel=1e-10)
        assert r["unscaled"] == pytest.approx(float(analytic.norm()) / t**2, rel=1e-10)
    limit = ((z - z.mean(1, keepdim=True)) - (v - v.mean(1, keepdim=True))).norm() / (10 * 50)
    assert rows[-1]["limit"] == pytest.approx(float(limit))
    assert rows[-1]["scaled"] == pytest.approx(rows[-1]["limit"], rel=0.02)  # T = 50 >> |logits|


@pytest.fixture(scope="module")
def distilled(run_quick):
    return run_quick("distillation")


def test_distillation_table_and_stored_gradient_check(distilled, read_csv, read_claims):
    ctx, result = distilled
    assert [r["model"] for r in read_csv(ctx.folder / "table.csv")] == [
        "teacher", "student alone", "student distilled", "student with hints"]
    rows = {r["model"]: r for r in result.table}
    assert rows["teacher"]["parameters"] > 10 * rows["student alone"]["parameters"]
    assert all(0.0 <= r["test accuracy"] <= 1.0 for r in result.table)
    stored = np.load(ctx.folder / "predictions.npz")
    z, v = torch.from_numpy(stored["student_logits"]).double(), torch.from_numpy(stored["teacher_logits"]).double()
    for t, scaled in zip(stored["T"], stored["scaled"]):
        analytic = t * ((z / t).softmax(1) - (v / t).softmax(1)) / z.shape[0]
        assert scaled == pytest.approx(float(analytic.norm()), rel=1e-6)
    assert len(read_claims(result)) == 3


def test_fit_with_loss_reproduces_context_train_with_the_plain_cross_entropy(tmp_path):
    """The custom-loss path builds the same seeded model, optimizer and loop as the engine (Context.train)."""
    ctx = Context(quick=True, out=tmp_path)
    ctx.begin("adhoc")
    data = ctx.load_data(0)
    spec = {"kind": "mlp", "hidden": [16]}
    engine = ctx.train("engine", model_spec=spec, optimizer="adam", hparams={"lr": 1e-3}, seed=3, batch_size=32,
                       epochs=2, data=data)
    ours = fit_with_loss(ctx, "ours", model=build_model(spec, data, seed=3), loss_fn=F.cross_entropy, data=data,
                         seed=3, epochs=2, batch_size=32, hparams={"lr": 1e-3})
    assert [r["train_loss"] for r in ours.history.epochs] == [r["train_loss"] for r in engine.epochs]
    assert [r["val_loss"] for r in ours.history.epochs] == [r["val_loss"] for r in engine.epochs]
    assert ours.test_accuracy == pytest.approx(engine.test_accuracy, abs=1e-12)
    assert ours.test_loss == pytest.approx(engine.test_loss, rel=1e-6)
    run = ctx.open_store().run(ours.run_id)
    assert run["status"] == "finished" and run["label"] == "ours"
