"""Callbacks: early stopping against a reference rule (Prechelt's "no improvement for `patience` epochs"),
reduce-on-plateau against torch's ReduceLROnPlateau, checkpoints, progress and plain-function hooks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optreg.errors import OptregTypeError, OptregValueError
from optreg.train import Callback, Checkpoint, EarlyStopping, Lambda, Progress, ReduceLROnPlateau, Trainer


def scripted(values, key="val_loss"):
    """A callback (run before the others) that replaces ``record[key]`` with a scripted sequence."""

    def overwrite(trainer, record):
        record[key] = values[record["epoch"]]

    return Lambda(on_epoch_end=overwrite)


def reference_stop(values, patience, min_delta, mode):
    """The rule written out independently: returns (epochs run, best epoch)."""
    sign = 1 if mode == "min" else -1
    best, best_epoch, wait = None, None, 0
    for epoch, v in enumerate(values):
        if best is None or sign * v < sign * best - min_delta:
            best, best_epoch, wait = v, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch + 1, best_epoch
    return len(values), best_epoch


def fit_scripted(make_data, make_mlp, values, callbacks, key="val_loss"):
    x, y = make_data()
    model = make_mlp()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        batch_size=48,
        epochs=len(values),
        callbacks=[scripted(values, key), *callbacks],
    )
    trainer.fit((x[:64], y[:64]), (x[64:], y[64:]))
    return trainer


def test_early_stopping_hand_worked_sequence(make_data, make_mlp):
    """val_loss 1.0, 0.8, 0.85, 0.7, 0.75, 0.72, 0.71, 0.6 with patience 3: the best is 0.7 at epoch 3,
    epochs 4, 5, 6 do not improve, so the run stops after epoch 6 (7 epochs) although 0.6 would follow."""
    stopper = EarlyStopping(patience=3, restore_best=False)
    trainer = fit_scripted(make_data, make_mlp, [1.0, 0.8, 0.85, 0.7, 0.75, 0.72, 0.71, 0.6], [stopper])
    assert len(trainer.history.epochs) == 7 and trainer.epoch == 7
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (0.7, 3, 6)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    patience=st.integers(0, 3),
    min_delta=st.sampled_from([0.0, 0.05]),
    mode=st.sampled_from(["min", "max"]),
)
def test_early_stopping_matches_the_reference_rule(values, patience, min_delta, mode):
    """Property: for any metric sequence the stop epoch and best epoch are those of the reference rule."""
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    model = torch.nn.Linear(2, 2)
    stopper = EarlyStopping("val_accuracy", mode=mode, patience=patience, min_delta=min_delta, restore_best=False)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        batch_size=16,
        epochs=len(values),
        callbacks=[scripted(values, "val_accuracy"), stopper],
    )
    trainer.fit((x, y), (x, y))
    assert (trainer.epoch, stopper.best_epoch) == reference_stop(values, patience, min_delta, mode)


def test_restore_best_restores_the_best_epochs_weights(make_data, make_mlp, same_params):
    snapshots = []
    snap = Lambda(on_epoch_end=lambda t, r: snapshots.append({k: v.clone() for k, v in t.model.state_dict().items()}))
    values = [0.9, 0.5, 0.7, 0.8, 0.6]
    trainer = fit_scripted(make_data, make_mlp, values, [snap, EarlyStopping(patience=10)])
    assert len(snapshots) == 5
    assert all(torch.equal(v, snapshots[1][k]) for k, v in trainer.model.state_dict().items())
    assert not torch.equal(snapshots[1]["0.weight"], snapshots[4]["0.weight"])  # it really moved after epoch 1

    snapshots.clear()
    trainer = fit_scripted(make_data, make_mlp, values, [snap, EarlyStopping(patience=10, restore_best=False)])
    assert all(torch.equal(v, snapshots[-1][k]) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"monitor": "val_los"}, "early_stopping: monitor must be one of .*got 'val_los'"),
        ({"mode": "minimum"}, "early_stopping: mode must be one of 'min', 'max', got 'minimum'"),
        ({"patience": -1}, "early_stopping: patience must be an integer >= 0, got -1"),
        ({"min_delta": -0.1}, r"early_stopping: min_delta must be in \[0, inf\)"),
    ],
)
def test_early_stopping_bad_arguments(kwargs, message):
    with pytest.raises(OptregValueError, match=message):
        EarlyStopping(**kwargs)


def test_monitoring_validation_metrics_without_a_validation_split_is_an_error(make_data, make_mlp):
    x, y = make_data()
    model = make_mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[EarlyStopping()])
    with pytest.raises(OptregValueError, match="monitor 'val_loss' has no value in this run .fit.. got no validation"):
        trainer.fit((x, y))


def test_reduce_lr_on_plateau_matches_torch_reduce_lr_on_plateau(make_data, make_mlp):
    """Oracle: torch.optim.lr_scheduler.ReduceLROnPlateau fed the same metric sequence."""
    schedules = pytest.importorskip("optreg.schedules")
    if not hasattr(schedules, "ReduceOnPlateau"):
        pytest.skip("optreg.schedules.ReduceOnPlateau is not there yet")
    values = [1.0, 0.9, 0.95, 0.92, 0.91, 0.96, 0.97, 0.5, 0.6, 0.6, 0.7, 0.65]
    lrs = []
    record_lr = Lambda(on_epoch_end=lambda t, r: lrs.append(t.optimizer.param_groups[0]["lr"]))
    options = {"factor": 0.5, "patience": 1, "threshold": 0.01, "cooldown": 1, "min_lr": 0.01}
    fit_scripted(make_data, make_mlp, values, [ReduceLROnPlateau(**options), record_lr])

    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.05)
    oracle = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
    expected = []
    for v in values:
        oracle.step(v)
        expected.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert expected[-1] < 0.05  # the sequence does trigger reductions


def test_reduce_lr_on_plateau_refuses_a_second_lr_source(make_data, make_mlp):
    x, y = make_data()
    model = make_mlp()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        schedule=lambda t: 0.1,
        callbacks=[ReduceLROnPlateau(monitor="train_loss")],
    )
    with pytest.raises(OptregValueError, match="both would set the lr"):
        trainer.fit((x, y))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 1.0}, r"reduce_lr_on_plateau: factor must be in \(0, 1\), got 1.0"),
        ({"threshold_mode": "relative"}, "reduce_lr_on_plateau: threshold_mode must be one of"),
        ({"monitor": "loss"}, "reduce_lr_on_plateau: monitor must be one of"),
        ({"cooldown": -2}, "reduce_lr_on_plateau: cooldown must be an integer >= 0"),
    ],
)
def test_reduce_lr_on_plateau_bad_arguments(kwargs, message):
    with pytest.raises(OptregValueError, match=message):
        ReduceLROnPlateau(**kwargs)


def test_checkpoint_every_and_epoch_pattern(tmp_path, make_data, make_mlp):
    """every=2 over 5 epochs saves after epochs 2 and 4 and after the last one; Checkpoint runs last."""
    x, y = make_data()
    model = make_mlp()
    ckpt = Checkpoint(tmp_path / "ckpt-{epoch}.pt", every=2)
    stopper = EarlyStopping("train_loss", patience=100)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=5, callbacks=[ckpt, stopper])
    assert trainer.callbacks == [stopper, ckpt]
    trainer.fit((x, y))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-2.pt", "ckpt-4.pt", "ckpt-5.pt"]
    assert ckpt.last == str(tmp_path / "ckpt-5.pt")
    with pytest.raises(OptregValueError, match="checkpoint: every must be an integer >= 1, got 0"):
        Checkpoint(tmp_path / "c.pt", every=0)


def test_hooks_run_in_order_and_progress_writes_one_line_per_epoch(make_data, make_mlp):
    """The hook contract: fit_start, then per epoch its steps and its end, then fit_end."""
    x, y = make_data(n=40)
    events, lines = [], []
    hooks = Lambda(
        on_fit_start=lambda t: events.append("start"),
        on_step_end=lambda t, r: events.append(f"step{r['step']}"),
        on_epoch_end=lambda t, r: events.append(f"epoch{r['epoch']}"),
        on_fit_end=lambda t: events.append("end"),
    )
    model = make_mlp()
    Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        batch_size=20,
        epochs=2,
        callbacks=[hooks, Progress(lines.append)],
    ).fit((x, y), (x, y))
    assert events == ["start", "step0", "step1", "epoch0", "step2", "step3", "epoch1", "end"]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  train_loss ") and "val_accuracy" in lines[1]
    with pytest.raises(OptregTypeError, match="progress: write must be callable"):
        Progress("stdout")
    with pytest.raises(OptregTypeError, match="lambda: on_step_end must be callable"):
        Lambda(on_step_end=3)


def test_base_callback_is_a_no_op(make_data, make_mlp, same_params):
    x, y = make_data()
    a, b = make_mlp(), make_mlp()
    Trainer(a, torch.optim.SGD(a.parameters(), lr=0.1), epochs=1, callbacks=[Callback()]).fit((x, y))
    Trainer(b, torch.optim.SGD(b.parameters(), lr=0.1), epochs=1).fit((x, y))
    assert same_params(a, b)
    assert Callback().state_dict() == {}
