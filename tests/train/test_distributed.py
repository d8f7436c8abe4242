"""Data-parallel training (optreg.train.distributed): 2 CPU processes (gloo) against one process.

Oracles: the one-process Trainer with the same global batch (the data-parallel update is the same
gradient, eq. (7.1), summed in another order), torch's DistributedSampler (the rank's share of an epoch),
torch.optim.Adam on the same FSDP2 (``fully_shard``) model, and the uninterrupted run for resuming.

Spawning processes that import torch costs seconds, so one launch of 2 processes (the ``ranks`` fixture,
module scope) runs every check and the tests below read its results.

Tolerance: everything is float64. The 2-process run adds each rank's half-batch mean gradient, weighted,
where one process sums the whole batch: the same terms in another order, about 1e-16 relative per step.
Over the ~25 Adam steps of these runs the parameters differed by at most ~1e-15 (measured); ``TOL = 1e-12``
leaves three orders of margin and still catches any real difference (a wrong weight of the short last
batch, a missed example or an unaveraged gradient changes the parameters by more than 1e-4).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optreg.errors import OptregValueError
from optreg.train import Callback, Checkpoint, Lambda, Trainer
from optreg.train import distributed as D

TOL = 1e-12
EPOCHS = 4


# ------------------------------------------------------------------------------------ the runs


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, (x @ torch.randn(5, 3, generator=g, dtype=torch.float64)).argmax(1)


def _mlp(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(5, 16), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else []), nn.Linear(16, 3)]
    return nn.Sequential(*layers).double()


def _adam_run(epochs: int, *callbacks: Callback) -> Trainer:
    """Optreg's adam, a schedule, clipping and an L2 penalty; 89 training examples in batches of 16, so the
    last batch (9) splits 5 / 4 over 2 ranks; 15 validation examples (shares of 8 and 7)."""
    from optreg import optim

    model = _mlp()
    return Trainer(
        model,
        optim.create("adam", model.parameters(), lr=0.02),
        batch_size=16,
        epochs=epochs,
        seed=3,
        schedule=lambda t: 0.02 / (1 + 0.05 * t),
        clip_grad_norm=1.0,
        penalty=lambda m: 1e-3 * sum(p.pow(2).sum() for p in m.parameters()),
        callbacks=callbacks,
    )


def _adam_fit(epochs: int, *callbacks: Callback, resume_from=None) -> Trainer:
    x, y = _data(104)
    trainer = _adam_run(epochs, *callbacks)
    trainer.fit((x[:89], y[:89]), (x[89:], y[89:]), resume_from=resume_from)
    return trainer


def _tiny_fit() -> Trainer:
    """7 examples in batches of 3: the last batch has 1 example, so rank 1's share of it is empty."""
    x, y = _data(7, seed=1)
    model = _mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), batch_size=3, epochs=3)
    trainer.fit((x, y))
    return trainer


def _dropout_fit(epochs: int, *callbacks: Callback, resume_from=None) -> Trainer:
    x, y = _data(64, seed=2)
    model = _mlp(dropout=0.3)
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters(), lr=0.01), batch_size=8, epochs=epochs, seed=5, callbacks=callbacks
    )
    trainer.fit((x, y), resume_from=resume_from)
    return trainer


def _fsdp_adam(kind: str) -> dict[str, torch.Tensor]:
    """5 Adam steps on an FSDP2 model (DTensor parameters sharded over the ranks); the full parameters.
    ``"optreg-resumed"``: optreg's adam for 3 steps, its state_dict into a fresh optimizer, 2 more."""
    from torch.distributed.fsdp import fully_shard

    from optreg import optim

    def build() -> nn.Module:
        model = _mlp()
        for layer in (model[0], model[2]):
            fully_shard(layer)
        return fully_shard(model)

    def make(model: nn.Module) -> torch.optim.Optimizer:
        if kind == "torch":
            return torch.optim.Adam(model.parameters(), lr=0.01)
        return optim.create("adam", model.parameters(), lr=0.01, eps=1e-8)

    batches = [_data(4, seed=10 + i) for i in range(5)]
    model = build()
    opt = make(model)
    assert type(next(model.parameters())).__name__ == "DTensor"
    for i, (x, y) in enumerate(batches):
        if kind == "optreg-resumed" and i == 3:
            state, weights = opt.state_dict(), model.state_dict()
            model = build()
            model.load_state_dict(weights)
            opt = make(model)
            opt.load_state_dict(state)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.full_tensor() for k, v in model.state_dict().items()}


class CountCalls(Callback):
    """Counts its hooks' calls; ``rank_zero_only``."""

    rank_zero_only = True

    def __init__(self) -> None:
        self.calls = 0

    def on_epoch_end(self, trainer, record) -> None:
        self.calls += 1


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _epochs(trainer: Trainer) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in trainer.history.epochs]


def _rank_checks(folder: str) -> dict:
    """Every check's numbers from one rank (run in each of the 2 processes)."""
    import optreg.train.callbacks as callbacks_module

    folder_path = Path(folder)
    writes: list[str] = []
    save = callbacks_module.save_checkpoint
    callbacks_module.save_checkpoint = lambda state, path: (writes.append(str(path)), save(state, path))[1]
    counter = CountCalls()
    adam = _adam_fit(EPOCHS, Checkpoint(folder_path / "ddp-{epoch}.pt", every=2), counter)
    resumed = _adam_fit(EPOCHS, resume_from=folder_path / "single-2.pt")  # written by one process
    rng = []
    whole = _dropout_fit(EPOCHS, Lambda(on_fit_end=lambda trainer: rng.append(torch.get_rng_state())))
    _dropout_fit(2, Checkpoint(folder_path / "dropout.pt"))
    continued = _dropout_fit(EPOCHS, resume_from=folder_path / "dropout.pt")
    tiny = _tiny_fit()
    return {
        "rank": adam.rank,
        "world_size": adam.world_size,
        "adam": _params(adam),
        "adam_iterations": adam.history.iterations,
        "adam_epochs": _epochs(adam),
        "resumed_from_1": _params(resumed),
        "dropout_whole": _params(whole),
        "dropout_continued": _params(continued),
        "dropout_iterations": (whole.history.iterations, continued.history.iterations),
        "dropout_rng": rng[0],
        "tiny": _params(tiny),
        "tiny_epochs": _epochs(tiny),
        "writes": writes,
        "rank_zero_calls": counter.calls,
        "fsdp": {kind: _fsdp_adam(kind) for kind in ("torch", "optreg", "optreg-resumed")},
    }


# ------------------------------------------------------------------------------------ one launch


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process reference runs (and the 1-process checkpoint the 2 ranks resume from)."""
    folder = tmp_path_factory.mktemp("ddp")
    adam = _adam_fit(EPOCHS, Checkpoint(folder / "single-{epoch}.pt", every=2))
    return {"folder": folder, "adam": adam, "tiny": _tiny_fit()}


@pytest.fixture(scope="module")
def ranks(single):
    """Both ranks' results of :func:`_rank_checks` (one launch of 2 gloo processes, 1 thread each)."""
    return D.launch(_rank_checks, 2, os.fspath(single["folder"]), threads=1)


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = TOL) -> float:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= tol, f"parameters differ by {worst:.3g} (tolerance {tol:g})"
    return worst


def _close_records(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=TOL, abs=TOL), key
            else:
                assert a[key] == b[key], key


def test_two_ranks_take_the_steps_of_one_process_with_the_global_batch(ranks, single):
    """Oracle: the one-process Trainer (same seed, global batch 16, a short last batch split 5 / 4, a
    schedule, clipping, a penalty, optreg's adam); float64, TOL above."""
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    _close(ranks[0]["adam"], _params(single["adam"]))
    assert all(torch.equal(ranks[0]["adam"][k], ranks[1]["adam"][k]) for k in ranks[0]["adam"])  # DDP: in step


def test_an_empty_share_still_takes_part(ranks, single):
    """A last batch of 1 example over 2 ranks: rank 1's share is empty and its loss weight 0 (oracle: one
    process, SGD with momentum)."""
    _close(ranks[0]["tiny"], _params(single["tiny"]))
    _close_records(ranks[1]["tiny_epochs"], _epochs(single["tiny"]))


def test_metrics_are_the_global_batchs_on_every_rank(ranks, single):
    """Iteration losses / accuracies / grad norms and the epochs' train and validation metrics (the
    validation split of 15 scored in shares of 8 and 7, then all-reduced) equal one process's, and every
    rank has the same history."""
    assert ranks[0]["adam_iterations"] == ranks[1]["adam_iterations"]
    assert ranks[0]["adam_epochs"] == ranks[1]["adam_epochs"]
    _close_records(ranks[0]["adam_iterations"], single["adam"].history.iterations)
    _close_records(ranks[0]["adam_epochs"], _epochs(single["adam"]))


def test_only_rank_zero_writes_and_runs_rank_zero_only_callbacks(ranks, single):
    files = ["ddp-2.pt", "ddp-4.pt", "dropout.pt", "dropout.pt"]  # every 2 epochs of 4, every epoch of 2
    assert ranks[0]["writes"] == [os.fspath(single["folder"] / f) for f in files]
    assert ranks[1]["writes"] == []
    assert (ranks[0]["rank_zero_calls"], ranks[1]["rank_zero_calls"]) == (EPOCHS, 0)


def test_a_two_process_checkpoint_resumes_in_one_process(ranks, single):
    """Oracle: the uninterrupted one-process run (epochs 1-2 on 2 ranks, 3-4 on one)."""
    resumed = _adam_fit(EPOCHS, resume_from=single["folder"] / "ddp-2.pt")
    _close(_params(resumed), _params(single["adam"]))
    _close_records(_epochs(resumed), _epochs(single["adam"]))


def test_a_one_process_checkpoint_resumes_on_two_ranks(ranks, single):
    """Oracle: the uninterrupted one-process run (epochs 1-2 in one process, 3-4 on 2 ranks)."""
    _close(ranks[0]["resumed_from_1"], _params(single["adam"]))
    _close(ranks[1]["resumed_from_1"], _params(single["adam"]))


def test_a_two_process_checkpoint_resumes_on_two_ranks_bit_for_bit(ranks):
    """With dropout (torch's global RNG, one stream per rank, each restored from the checkpoint) and the
    shuffling generator: the resumed run equals the uninterrupted 2-process run exactly."""
    for r in ranks:
        assert all(torch.equal(r["dropout_whole"][k], r["dropout_continued"][k]) for k in r["dropout_whole"])
        whole, continued = r["dropout_iterations"]
        assert continued == whole
    # the ranks' dropout streams differ (torch's RNG state at the end of fit), yet DDP keeps the parameters equal
    assert not torch.equal(ranks[0]["dropout_rng"], ranks[1]["dropout_rng"])
    whole0, whole1 = ranks[0]["dropout_whole"], ranks[1]["dropout_whole"]
    assert all(torch.equal(whole0[k], whole1[k]) for k in whole0)


def test_optreg_adam_on_fsdp2_matches_torch_adam(ranks):
    """optreg's Optimizer on ``fully_shard`` DTensor parameters (2 ranks, gloo): the same parameters as
    torch.optim.Adam (oracle) after 5 steps, also when its state_dict (DTensor moments) is loaded into a
    fresh optimizer after 3."""
    for r in ranks:
        fsdp = r["fsdp"]
        _close(fsdp["optreg"], fsdp["torch"])
        _close(fsdp["optreg-resumed"], fsdp["torch"])


# ------------------------------------------------------------------------------------ no processes


def _shares(monkeypatch, x, y, world, rank_, *, batch_size, shuffle=True, seed=0):
    from optreg.train.batches import TensorBatches

    monkeypatch.setenv("RANK", str(rank_))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    shares = D.Shares(TensorBatches(x, y, batch_size=batch_size, shuffle=shuffle))
    return list(shares.epoch(0, torch.Generator().manual_seed(seed) if shuffle else None))


@pytest.mark.parametrize(("n", "batch_size", "world"), [(24, 6, 2), (30, 6, 3), (32, 8, 4)])
def test_a_ranks_epoch_is_distributed_samplers_split(monkeypatch, n, batch_size, world):
    """Oracle: torch's DistributedSampler(shuffle=True, seed) after set_epoch(e), whose permutation is
    randperm(n) from seed + e: with the trainer's generator in that state, a rank's shares concatenate to
    the sampler's indices (world divides the batch and n: the sampler pads nothing)."""
    from torch.utils.data import DistributedSampler

    seed, epoch = 11, 3
    x = torch.arange(n)
    for r in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        shares = _shares(monkeypatch, x, x, world, r, batch_size=batch_size, seed=seed + epoch)
        assert torch.cat([xb for xb, _ in shares]).tolist() == list(sampler)
        assert all(len(xb) == batch_size // world for xb, _ in shares)


def test_shares_partition_each_batch_and_the_evaluation_split(monkeypatch):
    """13 examples in batches of 8 over 2 ranks: the shares of each global batch (8, then 5 split 3 / 2)
    partition it, in the one-process batches' order (oracle: TensorBatches in one process); evaluation
    splits x[r::2]. global_count's weights W|B_r|/K then average to 1 (eq. (7.1))."""
    from optreg.train.batches import TensorBatches

    x = torch.arange(13)
    whole = [xb.tolist() for xb, _ in TensorBatches(x, x, batch_size=8).epoch(0, torch.Generator().manual_seed(0))]
    per_rank = [_shares(monkeypatch, x, x, 2, r, batch_size=8) for r in range(2)]
    for i, batch in enumerate(whole):
        a, b = per_rank[0][i][0].tolist(), per_rank[1][i][0].tolist()
        assert sorted(a + b) == sorted(batch) and a == batch[0::2] and b == batch[1::2]
        assert (2 * len(a) / len(batch) + 2 * len(b) / len(batch)) / 2 == pytest.approx(1.0)
    evaluation = [_shares(monkeypatch, x, x, 2, r, batch_size=4, shuffle=False) for r in range(2)]
    assert [torch.cat([xb for xb, _ in e]).tolist() for e in evaluation] == [x[0::2].tolist(), x[1::2].tolist()]


def test_one_process_is_untouched(make_mlp):
    """No process group: rank 0 of 1, no wrapper, no collective."""
    assert (D.rank(), D.world_size(), D.is_initialized()) == (0, 1, False)
    model = make_mlp()
    assert D.wrap(model, torch.device("cpu")) is model
    assert D.global_count(5) == (5, 1.0)
    assert D.all_reduce_sum([1.5, torch.tensor(2)]) == [1.5, 2.0]
    assert D.all_gather_object({"a": 1}) == [{"a": 1}]
    assert D.setup() is False


def test_launch_refuses_bad_arguments():
    with pytest.raises(OptregValueError, match="launch: nproc must be an integer >= 1, got 0"):
        D.launch(print, 0)
    with pytest.raises(TypeError, match="launch: fn must be callable"):
        D.launch("print", 2)


def _fail_on_rank_one() -> int:
    if D.rank() == 1:
        raise RuntimeError("rank one broke")
    return 0


@pytest.mark.slow
def test_launch_raises_a_failing_ranks_error():
    """A rank that raises stops the launch; its traceback reaches the caller (torch.multiprocessing's
    ProcessRaisedException)."""
    from torch.multiprocessing import ProcessRaisedException

    with pytest.raises(ProcessRaisedException, match="rank one broke"):
        D.launch(_fail_on_rank_one, 2, threads=1)
