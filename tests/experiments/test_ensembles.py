"""Tests of the ``ensembles`` experiment (files 001 and 004; eqs. 7.65-7.66).

Oracles: the stored test probabilities (``predictions.npz``) against the table: the averaged prediction's
accuracy and ECE (the ECE's definition, Naeini et al. 2015, in numpy), each member's accuracy, the members'
spread on wrong and right predictions, and the AUROC as the Mann-Whitney U statistic (its rank definition,
independent of scikit-learn's ``roc_auc_score``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from optreg.experiments.ensembles import auroc, uncertainty_split


def ece_numpy(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    p = p.astype(np.float64)
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return sum(float((idx == b).sum() * abs(correct[idx == b].mean() - conf[idx == b].mean()))
               for b in range(bins) if (idx == b).any()) / len(y)


def mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC = (sum of the positives' ranks - n+(n+ + 1)/2) / (n+ n-), ties at mid-rank."""
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auroc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200).round(1)  # with ties
    positive = rng.random(200) < 0.3
    assert auroc(scores, positive) == pytest.approx(mann_whitney_auc(scores, positive), abs=1e-12)
    assert auroc(scores, np.zeros(200, bool)) is None


@pytest.fixture(scope="module")
def ensembles(run_quick):
    return run_quick("ensembles")


def test_ensembles_table_matches_the_stored_probabilities(ensembles, read_csv):
    ctx, result = ensembles
    stored = np.load(ctx.folder / "predictions.npz")
    y, members = stored["y"], stored["members"]
    m = members.shape[0]
    assert len(read_csv(ctx.folder / "table.csv")) == len(result.table)
    init = [r for r in result.table if r["recipe"] == "different initializations"]
    assert [r["members"] for r in init] == list(range(1, m + 1))
    full = init[-1]
    mean = members.astype(np.float64).mean(0)
    assert full["accuracy"] == pytest.approx(float((mean.argmax(1) == y).mean()), abs=1e-12)
    assert full["ece"] == pytest.approx(ece_numpy(mean.astype(np.float32), y), abs=1e-6)
    member_acc = [(p.argmax(1) == y).mean() for p in members]
    assert init[0]["accuracy"] == pytest.approx(float(np.mean(member_acc)), abs=1e-12)
    assert full["mean member ece"] == pytest.approx(float(np.mean([ece_numpy(p, y) for p in members])), abs=1e-6)
    # the ensemble's spread on wrong / right predictions and its AUROC
    pred = mean.argmax(1)
    u = members.std(0)[np.arange(len(y)), pred]
    wrong = pred != y
    assert full["uncertainty (wrong)"] == pytest.approx(float(u[wrong].mean()), rel=1e-4)
    assert full["uncertainty (right)"] == pytest.approx(float(u[~wrong].mean()), rel=1e-4)
    assert full["AUROC (uncertainty flags wrong)"] == pytest.approx(mann_whitney_auc(u, wrong), abs=1e-3)
    h = -(mean * np.log(np.clip(mean, 1e-300, None))).sum(1)
    assert full["entropy (wrong)"] == pytest.approx(float(h[wrong].mean()), rel=1e-5)
    assert full["AUROC (entropy flags wrong)"] == pytest.approx(mann_whitney_auc(h, wrong), abs=1e-3)
    # MC dropout: the same split from its mean and std
    mc = next(r for r in result.table if r["recipe"].startswith("MC dropout"))
    expect = uncertainty_split(torch.from_numpy(stored["mc_mean"]), torch.from_numpy(stored["mc_std"]),
                               torch.from_numpy(y))
    for key, value in expect.items():
        assert mc[key] == pytest.approx(value, rel=1e-9)
    assert mc["ece"] == pytest.approx(ece_numpy(stored["mc_mean"], y), abs=1e-6)


def test_ensembles_recipes_figures_and_claims(ensembles, read_claims):
    ctx, result = ensembles
    recipes = {r["recipe"].split(" (")[0] for r in result.table}
    assert {"different initializations", "snapshots of member 0", "Polyak average of member 0", "EMA of member 0",
            "member 0 alone", "bootstrap resamples", "MC dropout", "dropout net, deterministic"} <= recipes
    assert {"size", "reliability", "uncertainty"} <= set(result.figures)
    assert len(read_claims(result)) == 10
