"""The training loop against a hand-written PyTorch loop (the oracle) and the chapter's definitions."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optreg.errors import DivergenceError, OptregError, OptregTypeError, OptregValueError
from optreg.train import EPOCH_FIELDS, ITERATION_FIELDS, History, Lambda, Trainer


class Split(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


def torch_loop(
    model, opt, x, y, *, batch_size, epochs, seed=0, clip=None, scheduler=None, penalty=None, drop_last=False
):
    """The oracle: a plain PyTorch loop over permutations from ``torch.Generator().manual_seed(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    losses, norms = [], []
    n = x.shape[0]
    end = n - n % batch_size if drop_last else n
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, end, batch_size):
            idx = perm[i : i + batch_size]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            objective = loss if penalty is None else loss + penalty(model)
            opt.zero_grad()
            objective.backward()
            if clip is not None:
                norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item())
            opt.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.item())
    return losses, norms


def test_loss_decreases_on_a_learnable_problem(make_data, make_mlp):
    """A linear teacher's labels are learnable: the loss falls and validation accuracy becomes high."""
    x, y = make_data(n=400, seed=1)
    model = make_mlp()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), epochs=15)
    history = trainer.fit(Split(x[:300], y[:300]), Split(x[300:], y[300:]))
    train_loss = history.column("train_loss")
    assert train_loss[-1] < 0.3 * train_loss[0]
    assert history.epochs[-1]["val_accuracy"] > 0.85
    assert trainer.epoch == 15 and trainer.step == 15 * math.ceil(300 / 32)


@pytest.mark.parametrize(("batch_size", "drop_last"), [(16, False), (10, False), (10, True), (96, False)])
def test_matches_hand_written_torch_loop(make_data, make_mlp, same_params, batch_size, drop_last):
    """Oracle: the hand-written torch loop with the same seed/permutation/optimizer gives the same bits."""
    x, y = make_data()
    ours, ref = make_mlp(), make_mlp()
    opt = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    history = Trainer(ours, opt, batch_size=batch_size, epochs=2, drop_last=drop_last, seed=3).fit((x, y))
    losses, _ = torch_loop(
        ref,
        torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9),
        x,
        y,
        batch_size=batch_size,
        epochs=2,
        seed=3,
        drop_last=drop_last,
    )
    assert same_params(ours, ref)
    assert history.column("loss", "iterations") == losses


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 50), drop_last=st.booleans())
def test_iterations_per_epoch_is_ceil_n_over_k(n, k, drop_last):
    """Section 7.2.1: an epoch is N/K iterations (ceil; floor when the last partial batch is dropped),
    and every example is seen exactly once per epoch (batches of K, the last one N mod K)."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    y = torch.zeros(n, dtype=torch.long)
    seen: list[list[int]] = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 2)

        def forward(self, xb):
            seen.append(xb[:, 0].long().tolist())
            return self.lin(xb)

    model = Recorder()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), batch_size=k, epochs=2, drop_last=drop_last)
    if drop_last and n < k:
        with pytest.raises(OptregValueError, match="drop_last"):
            trainer.fit((x, y))
        return
    history = trainer.fit((x, y))
    per_epoch = n // k if drop_last else math.ceil(n / k)
    assert len(history.iterations) == 2 * per_epoch
    assert history.column("step", "iterations") == list(range(2 * per_epoch))
    assert history.column("epoch", "iterations") == [0] * per_epoch + [1] * per_epoch
    for e in range(2):
        batches = seen[e * per_epoch : (e + 1) * per_epoch]
        assert all(len(b) == k for b in batches[:-1])
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(n)) if not drop_last else len(set(flat)) == per_epoch * k


def test_schedule_matches_torch_lambdalr(make_data, make_mlp, same_params):
    """Oracle: torch's LambdaLR with the same factor (eq. (7.6), exponential decay)."""
    x, y = make_data()
    ours, ref = make_mlp(), make_mlp()
    lr0, beta = 0.2, 0.9
    seen_lrs = []

    def check_groups(trainer, record):
        seen_lrs.append([g["lr"] for g in trainer.optimizer.param_groups])

    opt = torch.optim.SGD([{"params": ours[0].parameters()}, {"params": ours[2].parameters(), "lr": 5.0}], lr=lr0)
    history = Trainer(
        ours,
        opt,
        batch_size=20,
        epochs=2,
        schedule=lambda t: lr0 * beta**t,
        callbacks=[Lambda(on_step_end=check_groups)],
    ).fit((x, y))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr0)
    torch_loop(
        ref,
        ref_opt,
        x,
        y,
        batch_size=20,
        epochs=2,
        scheduler=torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda t: beta**t),
    )
    assert same_params(ours, ref)
    expected = [lr0 * beta**t for t in range(len(history.iterations))]
    assert history.column("lr", "iterations") == pytest.approx(expected, rel=1e-15)
    assert seen_lrs == [[lr, lr] for lr in history.column("lr", "iterations")]  # every group gets it


def test_clip_grad_norm_matches_torch_clip_grad_norm_(make_data, make_mlp, same_params):
    """Oracle: torch.nn.utils.clip_grad_norm_ (eq. (7.24)); the recorded norm is the pre-clip norm."""
    x, y = make_data()
    ours, ref = make_mlp(), make_mlp()
    history = Trainer(
        ours, torch.optim.SGD(ours.parameters(), lr=0.5), batch_size=16, epochs=2, clip_grad_norm=0.3
    ).fit((x, y))
    _, norms = torch_loop(ref, torch.optim.SGD(ref.parameters(), lr=0.5), x, y, batch_size=16, epochs=2, clip=0.3)
    assert same_params(ours, ref)
    assert history.column("grad_norm", "iterations") == norms
    assert max(norms) > 0.3  # clipping actually happened


@settings(max_examples=20, deadline=None)
@given(bound=st.floats(1e-3, 10.0), seed=st.integers(0, 1000))
def test_clipped_update_never_exceeds_the_bound(bound, seed):
    """Property of eq. (7.24): with plain SGD at lr 1 the update is the clipped gradient, ||dtheta|| <= b."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 4, generator=g, dtype=torch.float64) * 10, torch.randint(0, 3, (8,), generator=g)
    torch.manual_seed(seed)
    model = nn.Linear(4, 3).double()  # float64: the check is not blurred by rounding
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), batch_size=8, epochs=1, clip_grad_norm=bound).fit(
        (x, y)
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.linalg.vector_norm(after - before) <= bound * (1 + 1e-5)


def test_penalty_is_added_to_the_objective_not_to_the_record(make_data, make_mlp, same_params):
    """Oracle: the hand loop minimizing loss + lambda * ||theta||^2 (eq. (7.58)); the record keeps the data loss."""
    x, y = make_data()
    ours, ref = make_mlp(), make_mlp()

    def l2(model):
        return 1e-2 * sum(p.pow(2).sum() for p in model.parameters())

    history = Trainer(ours, torch.optim.SGD(ours.parameters(), lr=0.1), batch_size=32, epochs=1, penalty=l2).fit((x, y))
    losses, _ = torch_loop(ref, torch.optim.SGD(ref.parameters(), lr=0.1), x, y, batch_size=32, epochs=1, penalty=l2)
    assert same_params(ours, ref)
    assert history.column("loss", "iterations") == losses


def test_same_seed_same_history_and_other_seed_differs(make_data, make_mlp, same_params, without_time):
    """Same seed, same config => the same numbers, dropout included; another seed shuffles differently."""
    x, y = make_data()

    def run(seed):
        model = make_mlp(dropout=0.3)
        trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), batch_size=16, epochs=3, seed=seed)
        return model, trainer.fit((x[:64], y[:64]), (x[64:], y[64:]))

    (m1, h1), (m2, h2), (_, h3) = run(0), run(0), run(1)
    assert same_params(m1, m2)
    assert without_time(h1) == without_time(h2)
    assert without_time(h1) != without_time(h3)


def test_fit_leaves_the_callers_global_rng_alone(make_data, make_mlp):
    x, y = make_data()
    model = make_mlp(dropout=0.5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1).fit((x, y))
    assert torch.equal(torch.get_rng_state(), state)


def test_evaluate_matches_full_batch_torch(make_data, make_mlp):
    """Oracle: F.cross_entropy and accuracy on the whole split in eval mode (dropout off), any chunking."""
    x, y = make_data(n=50)
    model = make_mlp(dropout=0.5)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), eval_batch_size=7)
    model.train()
    scores = trainer.evaluate(Split(x, y))
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert scores["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert scores["accuracy"] == (out.argmax(1) == y).sum().item() / 50


def test_epoch_means_weight_batches_by_size_and_log_every(make_data, make_mlp, without_time):
    """The epoch's train loss is the size-weighted mean of the batch losses (eq. (7.1) summed over the epoch);
    log_every keeps every k-th iteration record without changing any number."""
    x, y = make_data(n=50)

    def run(log_every):
        model = make_mlp()
        t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=16, epochs=2, log_every=log_every)
        return t.fit((x, y))

    full, sparse = run(1), run(3)
    sizes = [16, 16, 16, 2]
    losses = full.column("loss", "iterations")
    for e in range(2):
        batch = losses[4 * e : 4 * e + 4]
        assert full.epochs[e]["train_loss"] == pytest.approx(sum(l * s for l, s in zip(batch, sizes)) / 50, rel=1e-12)
    assert without_time(full)[1] == without_time(sparse)[1]
    assert sparse.iterations == [r for r in full.iterations if r["step"] % 3 == 0]


def test_history_rows_and_columns(make_data, make_mlp):
    x, y = make_data()
    model = make_mlp()
    history = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2).fit((x, y))
    columns, rows = history.to_rows()
    assert columns == list(EPOCH_FIELDS) and len(rows) == 2
    assert rows[1] == [history.epochs[1][c] for c in EPOCH_FIELDS]
    columns, rows = history.to_rows("iterations")
    assert columns == list(ITERATION_FIELDS) and len(rows) == len(history.iterations)
    assert history.epochs[0]["val_loss"] is None  # no validation split
    restored = History()
    restored.load_state_dict(history.state_dict())
    assert restored == history
    with pytest.raises(OptregValueError, match="history: which must be one of"):
        history.to_rows("steps")


def test_regression_targets_have_no_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = nn.Linear(3, 1)
    history = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.05), loss_fn=F.mse_loss, epochs=20, batch_size=8
    ).fit((x, y))
    assert history.epochs[-1]["train_accuracy"] is None
    assert history.epochs[-1]["train_loss"] < 0.01 * history.epochs[0]["train_loss"]


def test_a_callback_can_stop_mid_epoch(make_data, make_mlp):
    x, y = make_data()

    def stop_at_3(trainer, record):
        if record["step"] == 3:
            trainer.stop = True

    model = make_mlp()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        batch_size=8,
        epochs=5,
        callbacks=[Lambda(on_step_end=stop_at_3)],
    )
    history = trainer.fit((x, y))
    assert len(history.iterations) == 4 and len(history.epochs) == 1 and trainer.step == 4


# ---------------------------------------------------------------- divergence guard
def test_divergence_guard_raises_on_a_huge_lr():
    """lr = 1e6 on least squares diverges geometrically: DivergenceError with step, epoch, value and hints;
    the history so far rides on the error and the model keeps finite parameters."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(4, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1e6), loss_fn=F.mse_loss, epochs=50)
    with pytest.raises(DivergenceError) as info:
        trainer.fit((x, y))
    err = info.value
    msg = str(err)
    assert f"at step {err.step} (epoch {err.epoch})" in msg
    assert "Lower the learning rate (lr was 1e+06)" in msg and "clip_grad_norm" in msg
    assert any(not math.isfinite(v) for v in err.values.values())
    assert err.history is trainer.history and len(err.history.iterations) == err.step
    assert all(math.isfinite(v) for v in err.history.column("loss", "iterations"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert isinstance(err, OptregError)


def test_divergence_guard_catches_an_injected_nan_at_its_batch(make_data, make_mlp):
    """A NaN input row poisons exactly the batch that holds it; the guard names that step."""
    x, y = make_data(n=64)
    x[37, 2] = float("nan")
    model = make_mlp()
    with pytest.raises(DivergenceError, match="loss = nan") as info:
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=8, epochs=3, seed=5).fit((x, y))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(5))  # the oracle's first permutation
    expected_step = int((perm == 37).nonzero()) // 8
    assert info.value.step == expected_step and info.value.epoch == 0


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, OptregValueError, "trainer: batch_size must be an integer >= 1, got 0"),
        ({"epochs": -1}, OptregValueError, "trainer: epochs must be an integer >= 0, got -1"),
        ({"epochs": 2.5}, OptregValueError, "trainer: epochs must be an integer"),
        ({"clip_grad_norm": 0.0}, OptregValueError, r"trainer: clip_grad_norm must be in \(0, inf\)"),
        ({"log_every": 0}, OptregValueError, "trainer: log_every must be an integer >= 1"),
        ({"seed": -3}, OptregValueError, "trainer: seed must be an integer >= 0"),
        ({"metrics": ("loss", "f1")}, OptregValueError, "trainer: metrics must be one of .*got 'f1'"),
        ({"metrics": "loss"}, OptregTypeError, "metrics must be a sequence"),
        ({"device": "warp-drive"}, OptregValueError, "trainer: device must be a torch device"),
        ({"schedule": 0.1}, OptregTypeError, "trainer: schedule must be callable"),
        ({"callbacks": [print]}, OptregTypeError, "callbacks must be Callback objects"),
        ({"drop_last": "yes"}, OptregTypeError, "drop_last must be a bool"),
    ],
)
def test_bad_arguments_raise_clear_errors(make_mlp, kwargs, error, message):
    model = make_mlp()
    with pytest.raises(error, match=message):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_bad_model_optimizer_and_data_raise_clear_errors(make_data, make_mlp):
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(OptregTypeError, match="model must be a torch.nn.Module"):
        Trainer(lambda x: x, opt)
    with pytest.raises(OptregTypeError, match="optimizer must be a torch.optim.Optimizer"):
        Trainer(model, "sgd")
    x, y = make_data()
    trainer = Trainer(model, opt)
    with pytest.raises(OptregValueError, match="same number of examples"):
        trainer.fit((x, y[:-1]))
    with pytest.raises(OptregTypeError, match="x and y must be torch tensors"):
        trainer.fit((x.numpy(), y))
    with pytest.raises(OptregTypeError, match=r"expected a Split"):
        trainer.fit(x)
    with pytest.raises(OptregValueError, match="the split is empty"):
        trainer.fit((x[:0], y[:0]))
    bad_schedule = Trainer(model, opt, schedule=lambda t: float("nan"))
    with pytest.raises(OptregValueError, match="schedule must return a finite lr >= 0, got nan at step 0"):
        bad_schedule.fit((x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_device_read_equals_item_reads(make_mlp, dtype):
    """The accelerator path (one stacked .tolist()) gives the numbers .item() gives (the oracle); it only
    depends on the device's type, so it is exercised here on CPU tensors."""
    model = make_mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1))
    loss = torch.tensor(0.123456789012345, dtype=dtype, requires_grad=True) * 1.0
    stats = [loss, torch.tensor(16_777_217), torch.tensor(3.25, dtype=dtype)]  # 2**24 + 1: exact only in float64
    expected = [s.item() for s in stats]
    trainer.device = torch.device("cuda")  # a device object only; nothing runs on it
    fetched = trainer._fetch(stats)
    if dtype == torch.float64:
        assert fetched == expected
    else:
        assert fetched[0] == expected[0] and fetched[2] == expected[2]
        assert fetched[1] == 16_777_216  # float32 rounds counts above 2**24, far beyond any batch size
