"""Prechelt's early-stopping criteria (Prechelt 1998, "Early stopping - but when?", sec. 2.2) as options of
EarlyStopping: GL_alpha, PQ_alpha and UP_s against the paper's definitions, computed by hand on scripted
epoch records and by an independent reference for any sequence."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optreg.errors import OptregValueError
from optreg.train import EarlyStopping, Lambda, Trainer

VAL = [1.0, 0.8, 0.7, 0.75, 0.72, 0.9, 0.95, 1.0]
TRAIN = [2.0, 1.5, 1.2, 1.0, 0.9, 0.85, 0.84, 0.83]


def scripted(val, train):
    """Replaces the epoch record's val_loss and train_loss with scripted sequences (runs before the stopper)."""

    def overwrite(trainer, record):
        record["val_loss"] = val[record["epoch"]]
        record["train_loss"] = train[record["epoch"]]

    return Lambda(on_epoch_end=overwrite)


def run(stopper, val=VAL, train=TRAIN, extra=()):
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    model = torch.nn.Linear(2, 2)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        batch_size=16,
        epochs=len(val),
        callbacks=[scripted(val, train), stopper, *extra],
    )
    trainer.fit((x, y), (x, y))
    return trainer


# By hand, epochs t = 1..8, strips of k = 2:
#   E_opt = 1, .8, .7, .7, .7, .7, .7, .7
#   GL(t) = 100 (E_va / E_opt - 1) = 0, 0, 0, 7.142857, 2.857143, 28.571429, 35.714286, 42.857143
#   P_2 at strip ends t = 2, 4, 6, 8: 1000 ((2 + 1.5) / (2 * 1.5) - 1) = 166.667, 1000 (2.2 / 2 - 1) = 100,
#       1000 (1.75 / 1.7 - 1) = 29.412, 1000 (1.67 / 1.66 - 1) = 6.024
#   PQ = GL / P_2 at strip ends: 0, 0.0714, 0.9714, 7.114
#   E_va at strip ends: .8, .75, .9, 1.0: up at t = 6 and t = 8 (two successive strips)


@pytest.mark.parametrize(("alpha", "stop_epoch"), [(5.0, 3), (3.0, 3), (10.0, 5), (40.0, 7), (50.0, None)])
def test_gl_by_hand(alpha, stop_epoch):
    """GL_alpha: stop after the first epoch with GL(t) > alpha (0-based epoch index = t - 1)."""
    stopper = EarlyStopping(criterion="gl", alpha=alpha, restore_best=False)
    trainer = run(stopper)
    assert stopper.stopped_epoch == stop_epoch
    assert trainer.epoch == (8 if stop_epoch is None else stop_epoch + 1)
    assert stopper.best == 0.7 and stopper.best_epoch == 2


def test_gl_value_after_the_hand_sequence():
    stopper = EarlyStopping(criterion="gl", alpha=1000.0)
    run(stopper)
    assert stopper.gl == pytest.approx(100 * (1.0 / 0.7 - 1), rel=1e-12)


@pytest.mark.parametrize(("alpha", "stop_epoch", "progress"), [
    (0.05, 3, 100.0),
    (0.5, 5, 1000 * (1.75 / 1.7 - 1)),
    (5.0, 7, 1000 * (1.67 / 1.66 - 1)),
    (8.0, None, 1000 * (1.67 / 1.66 - 1)),
])
def test_pq_by_hand(alpha, stop_epoch, progress):
    """PQ_alpha: stop after the first end-of-strip epoch with GL(t) / P_k(t) > alpha."""
    stopper = EarlyStopping(criterion="pq", alpha=alpha, strip=2, restore_best=False)
    run(stopper)
    assert stopper.stopped_epoch == stop_epoch
    assert stopper.progress == pytest.approx(progress, rel=1e-12)


@pytest.mark.parametrize(("s", "stop_epoch"), [(1, 5), (2, 7), (3, None)])
def test_up_by_hand(s, stop_epoch):
    """UP_s: stop when E_va went up at s successive strip ends (UP_1: E_va(t) > E_va(t - k))."""
    stopper = EarlyStopping(criterion="up", strips=s, strip=2, restore_best=False)
    run(stopper)
    assert stopper.stopped_epoch == stop_epoch


def test_up_with_prechelts_default_strip_of_five():
    """k = 5: strip ends at t = 5, 10, 15; up at 10 and 15 stops UP_2 after epoch 15 (index 14)."""
    val = [1.0, 0.9, 0.8, 0.7, 0.6] + [0.65] * 5 + [0.7] * 5 + [0.1] * 5
    stopper = EarlyStopping(criterion="up", strips=2, restore_best=False)
    run(stopper, val=val, train=[1.0] * 20)
    assert stopper.stopped_epoch == 14


def reference(val, train, criterion, alpha=None, s=None, k=5):
    """Prechelt's definitions, written out directly with 1-based epochs; returns the 0-based stop epoch."""
    for t in range(1, len(val) + 1):
        e_opt = min(val[:t])
        gl = 100 * (val[t - 1] / e_opt - 1)
        if criterion == "gl" and gl > alpha:
            return t - 1
        if t % k:
            continue
        if criterion == "pq":
            strip = train[t - k : t]
            p = 1000 * (sum(strip) / (k * min(strip)) - 1)
            if (gl / p if p > 0 else (float("inf") if gl > 0 else 0.0)) > alpha:
                return t - 1
        if criterion == "up":
            ends = [t - j * k for j in range(s + 1)]  # t, t - k, ..., t - s k
            if ends[-1] >= 1 and all(val[a - 1] > val[b - 1] for a, b in zip(ends, ends[1:])):
                return t - 1
    return None


errors = st.lists(st.floats(0.05, 2.0), min_size=1, max_size=16)


@settings(max_examples=40, deadline=None)
@given(
    val=errors,
    train=st.lists(st.floats(0.05, 2.0), min_size=16, max_size=16),
    criterion=st.sampled_from(["gl", "pq", "up"]),
    alpha=st.sampled_from([0.5, 2.0, 5.0]),
    s=st.integers(1, 3),
    k=st.integers(1, 4),
)
def test_criteria_match_the_papers_definitions(val, train, criterion, alpha, s, k):
    """Property: for any error sequences the stop epoch is the one of the definitions written out."""
    kwargs = {"alpha": alpha} if criterion in ("gl", "pq") else {"strips": s}
    stopper = EarlyStopping(criterion=criterion, strip=k, restore_best=False, **kwargs)
    run(stopper, val=val, train=train)
    assert stopper.stopped_epoch == reference(val, train, criterion, alpha, s, k)


def test_restore_best_restores_e_opt_epoch(same_params):
    snapshots = []
    snap = Lambda(on_epoch_end=lambda t, r: snapshots.append({k: v.clone() for k, v in t.model.state_dict().items()}))
    trainer = run(EarlyStopping(criterion="gl", alpha=5.0), extra=[snap])
    assert all(torch.equal(v, snapshots[2][k]) for k, v in trainer.model.state_dict().items())


def test_resume_from_a_checkpoint_stops_at_the_same_epoch(tmp_path):
    """The criteria's state (strip window, last strip end, successive ups) survives a checkpoint."""
    from optreg.train import Checkpoint

    def fresh():
        return EarlyStopping(criterion="up", strips=2, strip=2, restore_best=False)

    full = fresh()
    run(full, extra=[Checkpoint(tmp_path / "ckpt-{epoch}.pt")])
    assert full.stopped_epoch == 7
    resumed = fresh()
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    model = torch.nn.Linear(2, 2)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), batch_size=16, epochs=8,
                      callbacks=[scripted(VAL, TRAIN), resumed])
    trainer.fit((x, y), (x, y), resume_from=tmp_path / "ckpt-7.pt")  # 7 epochs done: the strip end t = 6 is in
    assert resumed.stopped_epoch == 7 and resumed.ups == 2


def test_default_state_dict_is_unchanged():
    assert sorted(EarlyStopping().state_dict()) == ["best", "best_epoch", "best_state", "stopped_epoch", "wait"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"criterion": "GL5"}, "early_stopping: criterion must be one of 'patience', 'gl', 'pq', 'up', got 'GL5'"),
    ({"criterion": "gl"}, r"early_stopping: criterion 'gl' needs alpha \(a threshold >= 0\), got None"),
    ({"criterion": "pq", "alpha": -1.0}, r"early_stopping: alpha must be in \[0, inf\), got -1.0"),
    ({"criterion": "up"}, r"early_stopping: criterion 'up' needs strips"),
    ({"criterion": "up", "strips": 0}, "early_stopping: strips must be an integer >= 1, got 0"),
    ({"criterion": "gl", "alpha": 5, "strip": 0}, "early_stopping: strip must be an integer >= 1, got 0"),
    ({"criterion": "gl", "alpha": 5, "mode": "max"}, "criterion 'gl' is defined for an error to minimize"),
    ({"alpha": 5.0}, "early_stopping: alpha applies to criteria 'gl' and 'pq', not 'patience'"),
    ({"criterion": "gl", "alpha": 5.0, "strips": 2}, "strips applies to criterion 'up', not 'gl'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(OptregValueError, match=message):
        EarlyStopping(**kwargs)


def test_negative_error_is_refused():
    with pytest.raises(OptregValueError, match=r"criterion 'gl' needs an error >= 0, got val_loss = -0.5"):
        run(EarlyStopping(criterion="gl", alpha=1.0), val=[-0.5], train=[1.0])
