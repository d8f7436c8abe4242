"""optreg.train.ensemble against direct computations: the mean of the members' softmax probabilities,
accuracy / NLL / spread / pairwise disagreement written out with loops, the ECE of a hand-worked example,
snapshots against a shorter run of the same seed, torch.optim.swa_utils.AveragedModel's average against the
closed-form mean / EMA of the recorded parameter iterates, batch-norm statistics against the mean and
variance computed directly, bootstrap indices against the law of sampling with replacement, and the members of a
search's top-k ensemble against a sort of its trials and the models their objectives scored."""

from __future__ import annotations

import copy
import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

import optreg.optim
from optreg import hpo
from optreg.data import load
from optreg.errors import OptregTypeError, OptregValueError
from optreg.train import Checkpoint, Lambda, Trainer, run
from optreg.train.ensemble import (
    Ensemble,
    Snapshots,
    WeightAveraging,
    bootstrap_indices,
    expected_calibration_error,
    reliability_bins,
)


@pytest.fixture(scope="module")
def digits():
    """A few hundred of scikit-learn's digits (flat, in [0, 1]): 300 to train, 200 to test."""
    splits = load("digits", seed=0)
    return (splits.train.x[:300], splits.train.y[:300]), (splits.test.x[:200], splits.test.y[:200])


def mlp(seed: int, hidden: int = 32, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)).to(dtype)


def fit(model: nn.Module, train, *, epochs: int = 3, seed: int = 0, callbacks=(), lr: float = 0.01) -> Trainer:
    trainer = Trainer(
        model,
        optreg.optim.create("adam", model.parameters(), lr=lr),
        batch_size=50,
        epochs=epochs,
        seed=seed,
        callbacks=callbacks,
    )
    trainer.fit(train)
    return trainer


def constant(logits: list[float]) -> nn.Module:
    """A member predicting the same logits for every input of 2 features."""
    layer = nn.Linear(2, len(logits))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(logits))
    return layer


# --------------------------------------------------------------------------------------------- prediction


def test_probabilities_are_the_mean_of_the_members_softmax():
    """Direct computation: p̄ = mean_m softmax(f_m(x)); the module's output is log p̄; the std is the members'."""
    members = [mlp(s, hidden=8) for s in range(3)]
    ensemble = Ensemble(members)
    x = torch.rand(20, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = torch.stack([F.softmax(m(x), dim=1) for m in members])
    mean, std = ensemble.predict_proba(x, return_std=True)
    torch.testing.assert_close(mean, direct.mean(0))
    torch.testing.assert_close(std, direct.std(0, correction=0))
    torch.testing.assert_close(ensemble.member_probabilities(x, batch_size=7), direct)
    torch.testing.assert_close(ensemble(x).exp(), direct.mean(0))
    assert torch.equal(ensemble.predict(x), direct.mean(0).argmax(1))
    assert len(ensemble) == 3


def test_probabilities_not_logits_are_averaged():
    """Members with logits (20, 0), (0, 3), (0, 3): the mean of the logits picks class 0, the mean of the
    probabilities (1 + 0.047 + 0.047) / 3 = 0.365 for class 0 picks class 1."""
    ensemble = Ensemble([constant([20.0, 0.0]), constant([0.0, 3.0]), constant([0.0, 3.0])])
    x = torch.zeros(1, 2)
    p0 = (1 / (1 + math.exp(-20)) + 2 / (1 + math.exp(3))) / 3
    torch.testing.assert_close(ensemble.predict_proba(x)[0, 0], torch.tensor(p0))
    assert ensemble.predict(x).item() == 1
    assert torch.stack([m(x) for m in ensemble.members]).mean(0).argmax().item() == 0


def test_members_predict_in_evaluation_mode_and_keep_their_mode():
    member = nn.Sequential(nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 10))
    ensemble = Ensemble([member]).train()
    x = torch.rand(30, 64)
    assert torch.equal(ensemble.predict_proba(x), ensemble.predict_proba(x))  # dropout off
    assert member.training and member[1].training


def test_evaluate_against_direct_computation(digits):
    """accuracy, NLL, per-member accuracy, spread (std of the predicted class's probability) and the pairwise
    disagreement rate, each written out directly (the disagreement with a loop over member pairs)."""
    train, test = digits
    members = [fit(mlp(s), train, epochs=2, seed=s).model for s in range(4)]
    ensemble = Ensemble(members)
    scores = ensemble.evaluate(test, n_bins=10)
    x, y = test
    with torch.no_grad():
        p = torch.stack([F.softmax(m(x), 1) for m in members]).double()
    mean = p.mean(0)
    pred = mean.argmax(1)
    votes = p.argmax(2)
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    disagreement = sum((votes[a] != votes[b]).double().mean().item() for a, b in pairs) / len(pairs)
    assert scores["accuracy"] == pytest.approx((pred == y).double().mean().item(), abs=1e-12)
    assert scores["nll"] == pytest.approx(-mean[torch.arange(len(y)), y].log().mean().item(), rel=1e-5)
    assert scores["member_accuracy"] == pytest.approx([(v == y).double().mean().item() for v in votes], abs=1e-12)
    assert scores["mean_member_accuracy"] == pytest.approx(sum(scores["member_accuracy"]) / 4, abs=1e-12)
    spread = p[:, torch.arange(len(y)), pred].std(0, correction=0).mean().item()
    assert scores["spread"] == pytest.approx(spread, rel=1e-5)
    assert scores["disagreement"] == pytest.approx(disagreement, abs=1e-12) and disagreement > 0
    assert scores["ece"] == pytest.approx(expected_calibration_error(mean.float(), y, 10), abs=1e-6)
    # Jensen: the NLL of the averaged prediction never exceeds the members' mean NLL
    member_nll = -p[:, torch.arange(len(y)), y].log().mean(1)
    assert scores["nll"] <= member_nll.mean().item() + 1e-7
    one = Ensemble(members[:1]).evaluate(test)
    assert one["disagreement"] == 0.0 and one["spread"] == 0.0


def test_trainer_evaluate_scores_the_averaged_prediction(digits):
    """The module's output log p̄ makes cross-entropy the NLL of the averaged prediction."""
    train, test = digits
    ensemble = Ensemble([fit(mlp(s), train, epochs=1, seed=s).model for s in range(2)])
    trainer = Trainer(ensemble, torch.optim.SGD(ensemble.parameters(), lr=0.0))
    scores = trainer.evaluate(test)
    ours = ensemble.evaluate(test)
    assert scores["loss"] == pytest.approx(ours["nll"], rel=1e-5)
    assert scores["accuracy"] == pytest.approx(ours["accuracy"], abs=1e-12)


# --------------------------------------------------------------------------------------------- calibration


def test_ece_hand_computation():
    """Five examples, two bins (0, 0.5] and (0.5, 1]:
    bin 1 holds confidences 0.9 (right), 0.6 (wrong), 0.7 (right): |2/3 - 0.7333| = 0.0667, weight 3/5;
    bin 0 holds 0.4 (wrong) and 0.4 (right): |1/2 - 0.4| = 0.1, weight 2/5; ECE = 0.04 + 0.04 = 0.08."""
    p = torch.tensor(
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.35, 0.25], [0.3, 0.3, 0.4]], dtype=torch.float64
    )
    y = torch.tensor([0, 1, 1, 2, 2])
    assert expected_calibration_error(p, y, n_bins=2) == pytest.approx(0.08, abs=1e-12)
    confidence, accuracy, count = reliability_bins(p, y, n_bins=2)
    torch.testing.assert_close(count, torch.tensor([2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(accuracy, torch.tensor([0.5, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(confidence, torch.tensor([0.4, 2.2 / 3], dtype=torch.float64))


def test_bins_are_closed_on_the_right_and_empty_bins_count_zero():
    """A confidence of exactly 0.5 lies in (0.25, 0.5], bin 1 of 4; bins 0 and 2 stay empty."""
    p = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.95, 0.05]])
    y = torch.tensor([0, 0, 0])
    confidence, accuracy, count = reliability_bins(p, y, n_bins=4)
    assert count.tolist() == [0.0, 1.0, 0.0, 2.0]
    assert accuracy.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.5])
    assert confidence.tolist() == pytest.approx([0.0, 0.5, 0.0, 0.875])
    # ECE = (1/3)|1 - 0.5| + (2/3)|0.5 - 0.875|
    assert expected_calibration_error(p, y, 4) == pytest.approx(0.5 / 3 + 0.75 / 3, abs=1e-7)
    confident = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(confident, torch.tensor([0, 1])) == 0.0


# --------------------------------------------------------------------------------------------- recipes


def test_top_k_keeps_the_best_scores_and_ties_keep_order():
    models = [constant([float(i), 0.0]) for i in range(4)]
    best = Ensemble.top_k(models, [0.5, 0.9, 0.7, 0.9], 2)
    assert [m is models[i] for m, i in zip(best.members, (1, 3))] == [True, True]
    lowest = Ensemble.top_k(models, [0.5, 0.9, 0.7, 0.9], 2, mode="min")
    assert [m is models[i] for m, i in zip(lowest.members, (0, 2))] == [True, True]


def test_from_study_trains_the_top_trials_through_run_and_averages_their_softmax():
    """Recipe 2 from a search. Oracles: the members are the study's trials sorted by validation accuracy
    (best first); each member is the very model its trial's objective scored (its validation accuracy
    recomputed by hand equals the trial's value: same seed, same spec, same numbers); the ensemble's
    probabilities are the mean of the members' softmax."""
    data = load("digits", 0, val_fraction=0.2)

    def spec(p):
        return {"model": {"kind": "mlp", "hidden": [p["width"]]}, "optimizer": {"name": "adam", "lr": p["lr"]},
                "train": {"epochs": 1, "batch_size": 64}}  # fmt: skip

    space = {"width": hpo.Categorical([4, 8, 16]), "lr": hpo.Float(1e-3, 3e-2, log=True)}
    study = hpo.maximize(lambda p: run(spec(p), data, seed=3).final("val_accuracy"), space, method="random",
                         n_trials=5, seed=0)  # fmt: skip
    ensemble = Ensemble.from_study(study, 3, spec=spec, data=data, seed=3)
    chosen = sorted(study.trials, key=lambda t: (-t.value, t.number))[:3]
    assert len(ensemble) == 3 and len({t.value for t in study.trials}) > 1
    for member, trial in zip(ensemble.members, chosen):
        assert next(m for m in member.modules() if isinstance(m, nn.Linear)).out_features == trial.params["width"]
        with torch.no_grad():
            accuracy = (member.eval()(data.val.x).argmax(1) == data.val.y).double().mean().item()
        assert accuracy == pytest.approx(trial.value, abs=1e-12)
    with torch.no_grad():
        direct = torch.stack([F.softmax(m(data.test.x), dim=1) for m in ensemble.members]).mean(0)
    torch.testing.assert_close(ensemble.predict_proba(data.test.x), direct)


class _TopTrials:
    """A duck-typed study: anything with top_trials(k)."""

    def __init__(self, trials):
        self.trials = trials

    def top_trials(self, k):
        return self.trials[:k]


def test_from_study_calls_fit_with_each_trials_params_and_budget():
    trials = [hpo.Trial(5, {"w": 3}, "complete", 0.1, budget=9), hpo.Trial(2, {"w": 2}, "complete", 0.2, budget=9),
              hpo.Trial(7, {"w": 4}, "complete", 0.3)]  # fmt: skip
    calls = []

    def fit_one(params, **kwargs):
        calls.append((params, kwargs))
        return nn.Linear(2, params["w"])

    ensemble = Ensemble.from_study(_TopTrials(trials), 3, fit_one)
    assert calls == [({"w": 3}, {"budget": 9}), ({"w": 2}, {"budget": 9}), ({"w": 4}, {})]
    assert [m.out_features for m in ensemble.members] == [3, 2, 4]
    assert len(Ensemble.from_study(_TopTrials(trials), 1, fit_one)) == 1


def test_from_initializations_trains_one_member_per_seed(digits):
    train, _ = digits
    ensemble = Ensemble.from_initializations(lambda s: fit(mlp(s), train, epochs=1, seed=s).model, [0, 1, 2])
    again = fit(mlp(1), train, epochs=1, seed=1).model
    assert len(ensemble) == 3
    for a, b in zip(ensemble.members[1].parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_snapshots_equal_shorter_runs_of_the_same_seed(digits):
    """Oracle: the Trainer's determinism. The snapshot after epoch 2 of a 4-epoch run is the final state of a
    2-epoch run with the same seed, bit for bit; the one after epoch 4 is the final model."""
    train, test = digits
    snaps = Snapshots(epochs=[4, 2])
    trainer = fit(mlp(0), train, epochs=4, callbacks=[snaps])
    short = fit(mlp(0), train, epochs=2).model
    assert list(snaps.states) == [2, 4] and snaps.epochs == (2, 4)
    for key, value in short.state_dict().items():
        assert torch.equal(snaps.states[2][key], value)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(snaps.states[4][key], value)
    assert not torch.equal(snaps.states[2]["0.weight"], snaps.states[4]["0.weight"])  # copies, not aliases
    ensemble = snaps.ensemble()
    x = test[0]
    with torch.no_grad():
        direct = (F.softmax(short(x), 1) + F.softmax(trainer.model(x), 1)) / 2
    torch.testing.assert_close(ensemble.predict_proba(x), direct)


class Interrupted(Exception):
    """Stands for a crash after some epoch."""


def crash_after(epoch: int) -> Lambda:
    def hook(trainer, record):
        if trainer.epoch == epoch:
            raise Interrupted

    crash = Lambda(on_epoch_end=hook)
    crash.order = 200  # after the Checkpoint callback: that epoch's checkpoint is on disk
    return crash


def resumed_run(callback, train, path, epochs: int = 4):
    """A fresh model (other initial weights: all comes from the checkpoint) resumed from ``path``."""
    model = mlp(99)
    trainer = Trainer(
        model,
        optreg.optim.create("adam", model.parameters(), lr=0.01),
        batch_size=50,
        epochs=epochs,
        callbacks=[callback, Checkpoint(path)],
    )
    trainer.fit(train, resume_from=path)
    return trainer


def test_snapshots_survive_a_resumed_run(digits, tmp_path):
    """Oracle: the uninterrupted run. A run that crashed after epoch 2 and resumed from its checkpoint keeps
    the snapshot of epoch 1 and takes that of epoch 3, bit for bit the same."""
    train, _ = digits
    full = Snapshots(epochs=[1, 3])
    fit(mlp(0), train, epochs=4, callbacks=[full])
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):
        fit(mlp(0), train, epochs=4, callbacks=[Snapshots(epochs=[1, 3]), Checkpoint(path), crash_after(2)])
    resumed = Snapshots(epochs=[1, 3])
    resumed_run(resumed, train, path)
    assert list(resumed.states) == [1, 3]
    for epoch in (1, 3):
        for key, value in full.states[epoch].items():
            assert torch.equal(resumed.states[epoch][key], value)


def record_iterates(start: int = 0) -> tuple[Lambda, list[list[torch.Tensor]]]:
    iterates: list[list[torch.Tensor]] = []

    def keep(trainer, record):
        if record["step"] >= start:
            iterates.append([p.detach().clone() for p in trainer.model.parameters()])

    return Lambda(on_step_end=keep), iterates


@pytest.mark.parametrize("start", [0, 5])
def test_polyak_average_is_the_mean_of_the_iterates(digits, start):
    """Closed form: θ̄_T = (1/T) Σ_t θ_t over the parameters after every update with step >= start."""
    train, _ = digits
    x, y = train
    averaging = WeightAveraging("polyak", start_step=start)
    recorder, iterates = record_iterates(start)
    fit(mlp(0, dtype=torch.float64), (x.double(), y), epochs=2, callbacks=[averaging, recorder], lr=0.05)
    assert len(iterates) == 12 - start and averaging.averaged.n_averaged.item() == 12 - start
    for i, p in enumerate(averaging.model.parameters()):
        torch.testing.assert_close(p, torch.stack([it[i] for it in iterates]).mean(0), atol=1e-12, rtol=0)


def test_ema_is_the_exponentially_weighted_sum_of_the_iterates(digits):
    """Closed form: θ̄_T = d^(T-1) θ_1 + Σ_{t=2..T} (1 - d) d^(T-t) θ_t (the first iterate starts the average)."""
    train, _ = digits
    x, y = train
    d = 0.8
    averaging = WeightAveraging("ema", decay=d)
    recorder, iterates = record_iterates()
    fit(mlp(0, dtype=torch.float64), (x.double(), y), epochs=2, callbacks=[averaging, recorder], lr=0.05)
    big_t = len(iterates)
    weights = [d ** (big_t - 1)] + [(1 - d) * d ** (big_t - t) for t in range(2, big_t + 1)]
    assert sum(weights) == pytest.approx(1.0)
    for i, p in enumerate(averaging.model.parameters()):
        expected = sum(w * it[i] for w, it in zip(weights, iterates))
        torch.testing.assert_close(p, expected, atol=1e-12, rtol=0)


def test_weight_averaging_recomputes_batchnorm_statistics_for_the_averaged_weights(digits):
    """Direct statistics: after fit with batchnorm_data, each batch norm of the averaged model holds the mean
    and unbiased variance of its input over the whole training set, as the averaged (eval-mode) net feeds it;
    without it the averaged model has the trained model's running statistics (AveragedModel copies buffers)."""
    train, _ = digits
    x, y = train[0].double(), train[1]

    def bn_mlp():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.BatchNorm1d(64), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)
        ).double()

    plain = WeightAveraging()
    trained = fit(bn_mlp(), (x, y), epochs=1, callbacks=[plain]).model
    assert torch.equal(plain.model[0].running_mean, trained[0].running_mean)  # the trained model's, copied
    averaging = WeightAveraging(batchnorm_data=(x, y))
    trainer = fit(bn_mlp(), (x, y), epochs=1, callbacks=[averaging])
    avg = averaging.model
    assert avg is not trainer.model
    torch.testing.assert_close(avg[0].running_mean, x.mean(0))
    torch.testing.assert_close(avg[0].running_var, x.var(0, correction=1))
    with torch.no_grad():
        h = avg[1](F.batch_norm(x, x.mean(0), x.var(0), avg[0].weight, avg[0].bias, eps=avg[0].eps))
    torch.testing.assert_close(avg[2].running_mean, h.mean(0))
    torch.testing.assert_close(avg[2].running_var, h.var(0, correction=1))


def test_weight_averaging_is_checkpointed(digits, tmp_path):
    """Oracle: the uninterrupted run. The average travels in the checkpoint: a run that crashed after epoch 1
    and resumed ends with the same average, bit for bit."""
    train, _ = digits
    full = WeightAveraging("ema", decay=0.9)
    fit(mlp(0), train, epochs=3, callbacks=[full])
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):
        fit(mlp(0), train, epochs=3, callbacks=[WeightAveraging("ema", decay=0.9), Checkpoint(path), crash_after(1)])
    resumed = WeightAveraging("ema", decay=0.9)
    resumed_run(resumed, train, path, epochs=3)
    assert resumed.averaged.n_averaged.item() == full.averaged.n_averaged.item() == 18
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        assert torch.equal(a, b)

# --------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_indices_are_drawn_with_replacement():
    """Law of the bootstrap: (members, n) indices in [0, n), uniform (chi-square), with repeats; the share of
    distinct examples per resample is 1 - (1 - 1/n)^n (~ 0.632) within 5 standard errors (exact variance of
    the number of examples left out)."""
    n, members = 500, 40
    idx = bootstrap_indices(n, members, seed=3)
    assert idx.shape == (members, n) and idx.dtype == torch.int64
    assert idx.min() >= 0 and idx.max() < n
    counts = torch.bincount(idx.flatten(), minlength=n).numpy()
    assert scipy.stats.chisquare(counts).pvalue > 1e-4
    distinct = torch.tensor([len(torch.unique(r)) for r in idx], dtype=torch.float64) / n
    q1, q2 = (1 - 1 / n) ** n, (1 - 2 / n) ** n
    var_left_out = n * q1 + n * (n - 1) * q2 - (n * q1) ** 2
    se = math.sqrt(var_left_out / members) / n
    assert abs(distinct.mean().item() - (1 - q1)) < 5 * se
    assert (distinct < 1).all()  # every resample repeats some example
    assert bootstrap_indices(10, 3, size=25, seed=0).shape == (3, 25)


def test_bootstrap_indices_same_seed_same_indices():
    a = bootstrap_indices(100, 5, seed=7)
    assert torch.equal(a, bootstrap_indices(100, 5, seed=7))
    assert not torch.equal(a, bootstrap_indices(100, 5, seed=8))
    assert torch.equal(a, bootstrap_indices(100, 5, seed=torch.Generator().manual_seed(7)))


def test_from_bootstrap_trains_members_on_the_resamples(digits):
    """Each member sees exactly train[bootstrap_indices(N, M, seed)[m]]; the members differ, so the
    predictive spread is positive."""
    train, test = digits
    seen = []

    def fit_member(split, m):
        seen.append((split, m))
        return fit(mlp(m, hidden=16), split, epochs=1, seed=m).model

    ensemble = Ensemble.from_bootstrap(fit_member, train, 3, seed=5)
    idx = bootstrap_indices(300, 3, seed=5)
    assert [m for _, m in seen] == [0, 1, 2]
    for (split, _), rows in zip(seen, idx):
        assert torch.equal(split.x, train[0][rows]) and torch.equal(split.y, train[1][rows])
    mean, std = ensemble.predict_proba(test[0], return_std=True)
    assert mean.shape == std.shape == (200, 10) and std.mean() > 0
    torch.testing.assert_close(mean.sum(1), torch.ones(200))


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: Ensemble([]), OptregValueError, "ensemble: models must hold at least one model, got none"),
        (lambda: Ensemble(nn.Linear(2, 2)), OptregTypeError, "ensemble: models must be a sequence of torch.nn.Module"),
        (lambda: Ensemble([nn.Linear(2, 2), 3]), OptregTypeError, "ensemble: every model must be a torch.nn.Module"),
        (lambda: Ensemble.top_k([nn.Linear(2, 2)], [0.1, 0.2], 1), OptregValueError,
         r"ensemble.top_k: scores must have one value per model \(1\), got 2"),
        (lambda: Ensemble.top_k([nn.Linear(2, 2)], [0.1], 2), OptregValueError,
         r"ensemble.top_k: k must be at most the number of models \(1\), got 2"),
        (lambda: Ensemble.top_k([nn.Linear(2, 2)], [float("nan")], 1), OptregValueError,
         "ensemble.top_k: scores must be real numbers, got nan"),
        (lambda: Ensemble.top_k([nn.Linear(2, 2)], [0.1], 1, mode="best"), OptregValueError,
         "ensemble.top_k: mode must be one of 'max', 'min', got 'best'"),
        (lambda: Ensemble.from_study(_TopTrials([]), 1), OptregValueError,
         r"ensemble.from_study: give exactly one of fit \(params -> model\) and spec"),
        (lambda: Ensemble.from_study(_TopTrials([]), 1, mlp, spec=dict), OptregValueError,
         "ensemble.from_study: give exactly one of fit"),
        (lambda: Ensemble.from_study(_TopTrials([]), 1, spec=3), OptregTypeError,
         "ensemble.from_study: spec must be callable params -> run spec, got 3"),
        (lambda: Ensemble.from_study([], 1, mlp), OptregTypeError,
         r"ensemble.from_study: study must have top_trials\(k\) \(an optreg.hpo.Study\), got \[\]"),
        (lambda: Ensemble.from_study(_TopTrials([]), 0, mlp), OptregValueError,
         "ensemble.from_study: k must be an integer >= 1, got 0"),
        (lambda: Ensemble.from_study(_TopTrials([]), 1, mlp, seed=-2), OptregValueError,
         "ensemble.from_study: seed must be an integer >= 0, got -2"),
        (lambda: Snapshots(epochs=[0, 2]), OptregValueError, "snapshots: epochs must be an integer >= 1, got 0"),
        (lambda: Snapshots(epochs=3), OptregValueError, "snapshots: epochs must be a list of epoch counts"),
        (lambda: Snapshots(epochs=[]), OptregValueError, "snapshots: epochs must name at least one epoch"),
        (lambda: Snapshots([2]).models(), OptregValueError, r"snapshots: no snapshot was taken \(epochs \[2\]\)"),
        (lambda: WeightAveraging("swa"), OptregValueError,
         "weight_averaging: method must be one of 'polyak', 'ema', got 'swa'"),
        (lambda: WeightAveraging("ema", decay=1.0), OptregValueError,
         r"weight_averaging: decay must be in \[0, 1\), got 1.0"),
        (lambda: WeightAveraging(start_step=-1), OptregValueError,
         "weight_averaging: start_step must be an integer >= 0, got -1"),
        (lambda: WeightAveraging().model, OptregValueError, "weight_averaging: there is no average yet"),
        (lambda: bootstrap_indices(0, 3), OptregValueError, "bootstrap_indices: n must be an integer >= 1, got 0"),
        (lambda: bootstrap_indices(10, 0), OptregValueError,
         "bootstrap_indices: members must be an integer >= 1, got 0"),
        (lambda: bootstrap_indices(10, 2, seed=-1), OptregValueError,
         "bootstrap_indices: seed must be an integer >= 0, got -1"),
        (lambda: reliability_bins(torch.rand(4, 3), torch.zeros(4, dtype=torch.long), 0), OptregValueError,
         "reliability_bins: n_bins must be an integer >= 1, got 0"),
        (lambda: expected_calibration_error(torch.rand(4), torch.zeros(4, dtype=torch.long)), OptregValueError,
         r"reliability_bins: probabilities must be a float tensor \(N, K\), got \(4,\)"),
        (lambda: expected_calibration_error(torch.rand(4, 3), torch.zeros(4)), OptregValueError,
         r"reliability_bins: targets must be integer class labels \(N,\) matching probabilities, got \(4,\)"),
        (lambda: Ensemble([nn.Linear(2, 2)]).evaluate((torch.rand(3, 2), torch.rand(3))), OptregValueError,
         "ensemble.evaluate: the labels must be integer classes"),
    ],
)
def test_bad_input_names_the_field_and_the_value(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_snapshots_models_can_use_another_template():
    snaps = Snapshots([1])
    model = nn.Linear(3, 2)
    snaps.states = {1: copy.deepcopy(model.state_dict())}
    (rebuilt,) = snaps.models(template=nn.Linear(3, 2))
    assert torch.equal(rebuilt.weight, model.weight)
