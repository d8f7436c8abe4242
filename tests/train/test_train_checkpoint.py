"""Checkpoint / resume: an interrupted and resumed run equals the uninterrupted one, bit for bit
(oracle: the uninterrupted run); files are written atomically (oracle: os.replace's contract)."""

from __future__ import annotations

import pytest
import torch

from optreg.errors import OptregValueError
from optreg.train import Checkpoint, EarlyStopping, Lambda, Trainer, load_checkpoint, save_checkpoint

OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("interrupt_after", [1, 3])
def test_resumed_run_equals_uninterrupted_run(
    tmp_path, make_data, make_mlp, same_params, crash_after, opt_name, interrupt_after
):
    """Dropout (global RNG), momentum/Adam state, a schedule, early stopping's state and the shuffling
    generator all continue exactly: same parameters bitwise and the same history."""
    x, y = make_data(n=120)
    train, val = (x[:80], y[:80]), (x[80:], y[80:])

    def trainer_for(model, *extra):
        return Trainer(
            model,
            OPTIMIZERS[opt_name](model.parameters()),
            batch_size=16,
            epochs=5,
            seed=7,
            schedule=lambda t: 0.05 / (1 + 0.01 * t),
            callbacks=[EarlyStopping(patience=50), Checkpoint(tmp_path / "run.pt"), *extra],
        )

    whole = make_mlp(dropout=0.3)
    full = trainer_for(whole).fit(train, val)

    first = make_mlp(dropout=0.3)
    with pytest.raises(crash_after.error):
        trainer_for(first, crash_after(interrupt_after)).fit(train, val)
    resumed_model = make_mlp(dropout=0.3, seed=99)  # different initial weights: all comes from the file
    resumed = trainer_for(resumed_model).fit(train, val, resume_from=tmp_path / "run.pt")

    assert same_params(whole, resumed_model)
    assert resumed.iterations == full.iterations
    assert [{k: v for k, v in r.items() if k != "time"} for r in resumed.epochs] == [
        {k: v for k, v in r.items() if k != "time"} for r in full.epochs
    ]


def test_resume_continues_reduce_lr_on_plateau(tmp_path, make_data, make_mlp, same_params, without_time, crash_after):
    """ReduceOnPlateau's counters and reduced rate come back from the checkpoint (oracle: the uninterrupted run)."""
    schedules = pytest.importorskip("optreg.schedules")
    if not hasattr(schedules, "ReduceOnPlateau"):
        pytest.skip("optreg.schedules.ReduceOnPlateau is not there yet")
    from optreg.train import ReduceLROnPlateau

    x, y = make_data(n=120)
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.9, 0.95]

    def trainer_for(model, *extra):
        overwrite = Lambda(on_epoch_end=lambda t, r: r.update(val_loss=values[r["epoch"]]))
        plateau = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1)
        return Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            batch_size=16,
            epochs=len(values),
            callbacks=[overwrite, plateau, Checkpoint(tmp_path / "p.pt"), *extra],
        )

    whole = make_mlp()
    full = trainer_for(whole).fit((x[:80], y[:80]), (x[80:], y[80:]))
    with pytest.raises(crash_after.error):
        trainer_for(make_mlp(), crash_after(4)).fit((x[:80], y[:80]), (x[80:], y[80:]))
    resumed_model = make_mlp(seed=3)
    resumed = trainer_for(resumed_model).fit((x[:80], y[:80]), (x[80:], y[80:]), resume_from=tmp_path / "p.pt")
    assert same_params(whole, resumed_model)
    assert without_time(resumed) == without_time(full)
    assert len(set(full.column("lr"))) > 2  # the rate was reduced more than once, across the interruption


def test_resume_after_early_stop_does_not_train_more(tmp_path, make_data, make_mlp, same_params):
    """A checkpoint written by the epoch that stopped the run resumes to the same, stopped, end state."""
    x, y = make_data()
    values = [1.0, 0.5, 0.9, 0.9, 0.9, 0.9]

    def run(model, resume=None):
        overwrite = Lambda(on_epoch_end=lambda t, r: r.update(val_loss=values[r["epoch"]]))
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5),
            epochs=6,
            callbacks=[overwrite, EarlyStopping(patience=2), Checkpoint(tmp_path / "es.pt")],
        )
        trainer.fit((x, y), (x, y), resume_from=resume)
        return trainer

    done = run(make_mlp())
    assert done.epoch == 4 and done.stop
    again = run(make_mlp(seed=5), resume=tmp_path / "es.pt")
    assert again.epoch == 4 and len(again.history.epochs) == 4
    assert same_params(done.model, again.model)  # both end with the best (epoch 1) weights restored


def test_resume_refuses_a_different_setup(tmp_path, make_data, make_mlp):
    """Batching, data size and the stateful callbacks must match; stateless ones (progress) may differ."""
    x, y = make_data()
    model = make_mlp()
    path = tmp_path / "c.pt"

    def trainer(*callbacks, batch_size=32):
        return Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            batch_size=batch_size,
            epochs=2,
            callbacks=[Checkpoint(path), *callbacks],
        )

    trainer(EarlyStopping("train_loss")).fit((x, y))
    with pytest.raises(OptregValueError, match="cannot resume: the checkpoint has batch_size=32, this run 8"):
        trainer(EarlyStopping("train_loss"), batch_size=8).fit((x, y), resume_from=path)
    with pytest.raises(OptregValueError, match="cannot resume: the checkpoint has n_train=96, this run 50"):
        trainer(EarlyStopping("train_loss")).fit((x[:50], y[:50]), resume_from=path)
    with pytest.raises(OptregValueError, match=r"stateful callbacks are \['EarlyStopping:0'\], this trainer's \[\]"):
        trainer().fit((x, y), resume_from=path)
    resumed = trainer(EarlyStopping("train_loss"), Lambda()).fit((x, y), resume_from=path)
    assert len(resumed.epochs) == 2


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    """A failure mid-write leaves the previous checkpoint intact and no temporary file behind."""
    path = tmp_path / "state.pt"
    good = {"format": "optreg.train/1", "value": torch.arange(3)}
    save_checkpoint(good, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "optreg.train/1", "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert torch.equal(load_checkpoint(path)["value"], torch.arange(3))


def test_load_checkpoint_rejects_missing_foreign_and_corrupt_files(tmp_path):
    with pytest.raises(OptregValueError, match="checkpoint: path must be an existing checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(OptregValueError, match="is not an optreg training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(OptregValueError, match="cannot read .* as a torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
