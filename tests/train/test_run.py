"""optreg.train.run (a spec -> a trained, evaluated model) and the Trainer on DataLoaders.

Oracles: a Trainer built by hand from the components (optreg.nn.build under torch.manual_seed,
optreg.init.apply, optreg.optim.create, optreg.schedules.create) for train.run, bit for bit; pickle and a
second process (spawn) for the spec and the result; the Trainer on in-memory tensors for the Trainer on a
DataLoader that yields the same batches, bit for bit; torch's DistributedSampler for the per-epoch order
with set_epoch; the uninterrupted run for resuming over a DataLoader; the AST of the engine's modules for
its layering.
"""

from __future__ import annotations

import ast
import concurrent.futures
import math
import multiprocessing
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Sampler, TensorDataset

from optreg import init, optim, schedules
from optreg import nn as onn
from optreg.data import Split, Splits
from optreg.errors import ConfigError, DivergenceError, OptregTypeError, OptregValueError
from optreg.train import (
    Checkpoint,
    EarlyStopping,
    Lambda,
    RunResult,
    Trainer,
    build_model,
    check_spec,
    complete_model_spec,
    run,
)

SPEC = {
    "name": "unit",
    "model": {"kind": "mlp", "hidden": [16], "dropout": 0.2},
    "init": {"scheme": "he_normal"},
    "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    "schedule": {"name": "cosine", "lr": 0.01, "total_steps": 12},
    "train": {
        "batch_size": 16,
        "epochs": 3,
        "seed": 0,
        "clip_grad_norm": 1.0,
        "early_stopping": {"monitor": "val_loss", "patience": 5},
    },
}


def _splits(n: int = 96, d: int = 6, c: int = 3, seed: int = 0) -> Splits:
    """Gaussian inputs labelled by a random linear teacher, split 64 / 16 / 16."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, c, generator=g)).argmax(1)
    a, b = 2 * n // 3, 5 * n // 6
    return Splits(Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]), c, (d,), "teacher")


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_time(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in epochs]


# ---------------------------------------------------------------- train.run against a hand-built Trainer
def test_run_equals_a_hand_built_trainer_bit_for_bit(capsys):
    """Oracle: the same spec assembled by hand from the components gives the same parameters, history and
    test scores, bit for bit; the engine prints nothing."""
    data = _splits()
    result = run(SPEC, data, seed=4)

    model_spec = {"kind": "mlp", "hidden": [16], "dropout": 0.2, "in_features": 6, "out_features": 3}
    torch.manual_seed(4)
    model = onn.build(model_spec)
    init.apply(model, "he_normal", activation="relu", generator=torch.Generator().manual_seed(4))
    opt = optim.create("adamw", model.parameters(), lr=0.01, weight_decay=0.01)
    trainer = Trainer(
        model,
        opt,
        batch_size=16,
        epochs=3,
        schedule=schedules.create("cosine", lr=0.01, total_steps=12),
        clip_grad_norm=1.0,
        callbacks=[EarlyStopping(monitor="val_loss", patience=5)],
        seed=4,
    )
    history = trainer.fit(data.train, data.val)
    scores = trainer.evaluate(data.test)

    assert result.status == "finished" and not result.diverged
    assert _same_params(result.model, model)
    assert result.history.iterations == history.iterations
    assert _without_time(result.history.epochs) == _without_time(history.epochs)
    assert result.scores == scores and result.test_accuracy == scores["accuracy"]
    assert (result.steps, result.epochs) == (trainer.step, trainer.epoch) == (12, 3)
    assert result.spec["model"] == model_spec and result.spec["train"]["seed"] == 4
    assert result.summary()["final_val_accuracy"] == history.epochs[-1]["val_accuracy"]
    assert capsys.readouterr() == ("", "")


def test_resolved_spec_has_the_defaults_and_reruns_to_the_same_numbers():
    """The resolved spec fills every default (the config schema's: batch 32, 10 epochs, ...) and trains
    again to the same numbers; the seed keyword overrides train.seed, None keeps it; the caller's dict is
    left as it was."""
    spec = {"model": {"hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"epochs": 2, "seed": 3}}
    before = pickle.dumps(spec)
    data = _splits()
    first = run(spec, data, seed=None)
    assert pickle.dumps(spec) == before
    assert first.spec["train"] == {
        "batch_size": 32, "epochs": 2, "steps": None, "seed": 3, "shuffle": True, "clip_grad_norm": None,
        "log_every": 1, "eval_every": None, "early_stopping": None, "penalty": None,
        "batch_transform": None,
    }  # fmt: skip
    assert first.spec["init"] is None and first.spec["schedule"] is None and first.spec["name"] == "run"
    assert first.spec["data"] is None  # handed in, not described
    again = run(first.spec, data, seed=3)
    assert _same_params(first.model, again.model) and first.history.iterations == again.history.iterations
    other = run(spec, data, seed=5)
    assert other.spec["train"]["seed"] == 5 and other.history.iterations != first.history.iterations


def test_data_none_loads_the_specs_data_section():
    """Oracle: optreg.data.load with the section's name, seed and fractions, then the same run."""
    from optreg.data import load

    spec = {**SPEC, "data": {"name": "digits", "seed": 2, "val_fraction": 0.2}, "schedule": {"name": "cosine"},
            "train": {"epochs": 1}}  # fmt: skip
    loaded = run(spec, None, seed=0)
    given = run(spec, load("digits", 2, val_fraction=0.2), seed=0)
    assert _same_params(loaded.model, given.model) and loaded.test_accuracy == given.test_accuracy
    assert loaded.spec["data"] == {"name": "digits", "seed": 2, "val_fraction": 0.2}


def test_python_only_values_and_a_penalty():
    """A torch optimizer class, a schedule object and a penalty callable (beyond TOML) train as the
    Trainer given the same objects (oracle)."""
    data = _splits()

    def penalty(model):
        return 1e-3 * sum((p**2).sum() for p in model.parameters())

    schedule = schedules.create("exponential", lr=0.1, beta=0.9)
    spec = {
        "model": {"hidden": [8]},
        "optimizer": {"name": torch.optim.SGD, "lr": 0.1, "momentum": 0.9},
        "schedule": schedule,
        "train": {"epochs": 2, "batch_size": 16, "penalty": penalty},
    }
    result = run(spec, data, seed=1)
    model = build_model({"hidden": [8]}, data, seed=1)
    Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), batch_size=16, epochs=2,
        schedule=schedule, penalty=penalty, seed=1,
    ).fit(data.train, data.val)  # fmt: skip
    assert _same_params(result.model, model)
    assert [r["lr"] for r in result.history.iterations] == [0.1 * 0.9**t for t in range(8)]  # eq. (7.6)


def test_a_batch_transform_in_the_spec_trains_as_the_trainer_given_it():
    """train.batch_transform (a picklable GaussianNoise) is the Trainer's batch_transform (oracle: the
    Trainer given the same object); the spec and the result still pickle."""
    from optreg.regularize.noise import GaussianNoise

    data = _splits()
    spec = {"model": {"hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"epochs": 2, "batch_size": 16, "batch_transform": GaussianNoise(0.2)}}  # fmt: skip
    result = run(spec, data, seed=1)
    model = build_model({"hidden": [8]}, data, seed=1)
    Trainer(model, optim.create("sgd", model.parameters(), lr=0.1), batch_size=16, epochs=2, seed=1,
            batch_transform=GaussianNoise(0.2)).fit(data.train, data.val)  # fmt: skip
    assert _same_params(result.model, model)
    plain = run({**spec, "train": {"epochs": 2, "batch_size": 16}}, data, seed=1)
    assert not _same_params(result.model, plain.model)
    assert pickle.loads(pickle.dumps(result)).spec["train"]["batch_transform"] == GaussianNoise(0.2)


def test_build_model_is_a_seeded_build_then_init():
    """Oracle: optreg.nn.build under torch.manual_seed, then optreg.init.apply with a seeded generator;
    the caller's global RNG is left alone."""
    data = _splits()
    state = torch.get_rng_state()
    model = build_model({"kind": "mlp", "hidden": [16]}, data, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(5)
    oracle = onn.build(complete_model_spec({"kind": "mlp", "hidden": [16]}, data))
    assert _same_params(model, oracle)
    zeros = build_model({"hidden": [16]}, data, seed=5, init={"scheme": "zeros"})
    assert all(int(torch.count_nonzero(p)) == 0 for p in zeros.parameters())
    with pytest.raises(ConfigError, match="scheme"):
        build_model({"hidden": [16]}, data, seed=5, init={"bias": "zeros"})


# ---------------------------------------------------------------- pickling: a trial in another process
def test_spec_and_result_pickle():
    """Oracle: pickle round trips. The spec (with a schedule object and a torch optimizer class) and the
    result (model included) come back equal; the copied model computes the same outputs."""
    spec = {
        **SPEC,
        "optimizer": {"name": torch.optim.Adam, "lr": 0.01},
        "schedule": schedules.create("cosine", lr=0.01, total_steps=12),
    }
    assert pickle.loads(pickle.dumps(spec)) == spec
    data = _splits()
    here = run(spec, data, seed=2)
    copy = pickle.loads(pickle.dumps(here))
    assert isinstance(copy, RunResult) and copy.spec == here.spec and copy.status == here.status
    assert _same_params(copy.model, here.model) and copy.history == here.history and copy.scores == here.scores
    copy.model.eval()
    here.model.eval()
    assert torch.equal(copy.model(data.test.x), here.model(data.test.x))


@pytest.mark.slow
def test_a_trial_in_another_process_gives_the_same_numbers():
    """A hyperparameter-search trial is this call in another process (spawn: a fresh interpreter): the
    spec and the data go there by pickle, the result comes back by pickle, and the numbers are those of
    the same call here, bit for bit. (Slow: the child imports torch.)"""
    spec = {**SPEC, "schedule": schedules.create("cosine", lr=0.01, total_steps=12)}
    data = _splits()
    here = run(spec, data, seed=2)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        there = pool.submit(run, spec, data, seed=2).result(timeout=120)
    assert _same_params(there.model, here.model)
    assert there.history.iterations == here.history.iterations and there.scores == here.scores


# ---------------------------------------------------------------- spec errors
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"optimizer": {"name": "sgd", "lr": -1}}, r"spec: optimizer.lr = -1: must be in \[0, inf\)$"),
        ({"optimizer": {"name": "sgd", "lrr": 0.1}}, "spec: optimizer.lrr = 0.1: unknown hyperparameter of sgd"),
        ({"optimizer": {"lr": 0.1}}, "spec: optimizer.name is required; allowed: "),
        ({"train": {"batch_size": 0}}, "spec: train.batch_size = 0: must be an integer >= 1"),
        ({"train": {"epochs": 2.0}}, "spec: train.epochs = 2.0: must be an integer"),
        ({"train": {"clip_grad_norm": float("inf")}}, "spec: train.clip_grad_norm = inf: must be a number > 0"),
        ({"train": {"penalty": 0.1}}, "spec: train.penalty = 0.1: must be a callable"),
        ({"train": {"batch_transform": "noise"}}, 'spec: train.batch_transform = "noise": must be a callable'),
        ({"train": {"early_stopping": {"patience": -1}}}, "spec: train.early_stopping.patience = -1: must be"),
        ({"schedule": {"lr": 0.1}}, "spec: schedule.name is required"),
        ({"schedule": 0.1}, "spec: schedule = 0.1: must be a table or a callable"),
        ({"data": {"name": "mnist"}}, 'spec: data.name = "mnist": allowed: digits, mnist1d'),
        ({"model": {"kind": "mlpp"}}, 'spec: model.kind = "mlpp": allowed: mlp'),
        ({"modle": {}}, "spec: modle = {}: unknown key; allowed keys: name, data, model"),
        ({"init": {"scheme": "he"}}, 'spec: init.scheme = "he": allowed:'),
    ],
)
def test_spec_errors_name_the_key_path(edit, message):
    spec = {**SPEC, **edit}
    with pytest.raises(ConfigError, match=message):
        check_spec(spec)
    with pytest.raises(ConfigError, match=message):
        run(spec, _splits(), seed=0)


def test_model_errors_are_found_before_any_data_and_name_their_key_path():
    """The whole model spec is checked with the spec (before data are loaded): an unknown key and a bad
    value name ``model.key`` and print the value as TOML. What depends on the sizes (an init option, conv
    maps that vanish) is checked when the model is built, still before any training."""
    with pytest.raises(ConfigError, match=r"spec: model.hiden = \[4\]: unknown key for kind mlp; allowed keys: kind"):
        check_spec({**SPEC, "model": {"hiden": [4]}})
    with pytest.raises(ConfigError, match='spec: model.stride = 2: unknown key for kind mlp'):
        check_spec({**SPEC, "model": {"stride": 2}})
    with pytest.raises(ConfigError, match=r"spec: model.residual = 1: must be true or false$"):
        check_spec({**SPEC, "model": {"residual": 1}})
    with pytest.raises(ConfigError, match='spec: model.activation = "swish": allowed: "relu", "tanh"'):
        check_spec({**SPEC, "model": {"activation": "swish"}})
    with pytest.raises(ConfigError, match="spec: model.channels is required for kind cnn1d"):
        check_spec({**SPEC, "model": {"kind": "cnn1d"}})
    with pytest.raises(ConfigError, match="spec: model.bidirectional = true: unknown key for kind mlp"):
        check_spec({**SPEC, "model": {"bidirectional": True}})
    data = _splits()
    with pytest.raises(ConfigError, match=r"spec: init.k = 15: must be <= fan_in = 6"):
        run({**SPEC, "init": {"scheme": "sparse", "k": 15}}, data, seed=0)
    with pytest.raises(ConfigError, match=r"spec: \[model\] models.cnn1d: input_shape \[6\] is too small"):
        run({**SPEC, "model": {"kind": "cnn1d", "channels": [2, 2, 2]}}, data, seed=0)
    assert run({**SPEC, "init": {"scheme": "sparse", "k": 2}, "train": {"epochs": 1}}, data, seed=0).status == (
        "finished"
    )
    with pytest.raises(OptregTypeError, match="run: data must be optreg.data Splits"):
        run(SPEC, (data.train.x, data.train.y), seed=0)
    with pytest.raises(OptregValueError, match="run: seed must be an integer >= 0, got -1"):
        run(SPEC, data, seed=-1)


# ---------------------------------------------------------------- divergence
def test_a_diverging_run_returns_diverged_or_raises_when_asked():
    """lr = 1e12 diverges: status "diverged" with the history up to the step (all finite), the error and no
    test scores; raise_on_divergence re-raises the trainer's DivergenceError with the partial result."""
    spec = {"model": {"hidden": [8]}, "optimizer": {"name": "sgd", "lr": 1e12}, "train": {"epochs": 5}}
    result = run(spec, _splits(), seed=0)
    assert result.diverged and result.status == "diverged" and "diverged at step" in result.error
    assert result.test_loss is None and result.test_accuracy is None
    assert len(result.history.iterations) == result.diverged_at == result.steps
    assert all(math.isfinite(v) for v in result.history.column("loss", "iterations"))
    assert result.summary() == {"seconds": result.seconds, "diverged_at_step": result.diverged_at}
    with pytest.raises(DivergenceError) as info:
        run(spec, _splits(), seed=0, raise_on_divergence=True)
    assert info.value.result.diverged and info.value.result.history.iterations == result.history.iterations


# ---------------------------------------------------------------- the Trainer on DataLoaders
class TrainerOrder(Sampler[int]):
    """The permutations the Trainer draws for tensors: ``torch.randperm(n, generator=seeded)`` per epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


def _mlp(seed: int = 0, dropout: float = 0.3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def _fit(train, val, *, epochs=3, callbacks=(), model=None, **kw):
    model = _mlp() if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, opt, batch_size=16, epochs=epochs, seed=7, callbacks=list(callbacks), **kw)
    return model, trainer, trainer.fit(train, val)


def test_a_dataloader_with_the_same_batches_gives_the_same_numbers_as_tensors():
    """Oracle: the Trainer on tensors. A DataLoader over the same examples whose sampler yields the
    trainer's permutations gives the same parameters and history bit for bit, dropout included;
    validation in the chunks of eval_batch_size gives the same scores. Both loaders have a generator of
    their own: a DataLoader without one draws its workers' base seed from the global RNG at every pass,
    which shifts dropout's stream (same seed, same numbers still; not the tensors' numbers)."""
    data = _splits()
    ref_model, ref, ref_history = _fit(data.train, data.val, eval_batch_size=8)
    loader = DataLoader(
        TensorDataset(data.train.x, data.train.y),
        batch_size=16,
        sampler=TrainerOrder(len(data.train.y), seed=7),
        generator=torch.Generator(),
    )
    val_loader = DataLoader(TensorDataset(data.val.x, data.val.y), batch_size=8, generator=torch.Generator())
    model, trainer, history = _fit(loader, val_loader, eval_batch_size=8)
    assert _same_params(model, ref_model)
    assert history.iterations == ref_history.iterations
    assert _without_time(history.epochs) == _without_time(ref_history.epochs)
    assert trainer.evaluate(val_loader) == ref.evaluate(data.val)
    listed = [(x, y) for x, y in val_loader]  # a plain list of batches is a re-iterable too
    assert trainer.evaluate(listed) == ref.evaluate(data.val)


def test_dataloader_seeding_same_seed_same_numbers():
    """shuffle=True without a generator draws from the global RNG, which the trainer seeds: two fits give
    the same numbers. With a generator of its own the loader owns its order: reseeded, the same numbers;
    not reseeded, the next fit continues its stream."""
    data = _splits()
    dataset = TensorDataset(data.train.x, data.train.y)
    free = DataLoader(dataset, batch_size=16, shuffle=True)
    a, _, ha = _fit(free, data.val)
    b, _, hb = _fit(free, data.val)
    assert _same_params(a, b) and ha.iterations == hb.iterations

    g = torch.Generator().manual_seed(1)
    owned = DataLoader(dataset, batch_size=16, shuffle=True, generator=g)
    c, _, hc = _fit(owned, data.val)
    d, _, hd = _fit(owned, data.val)
    assert hc.iterations != hd.iterations
    g.manual_seed(1)
    e, _, he = _fit(owned, data.val)
    assert _same_params(c, e) and hc.iterations == he.iterations


@pytest.mark.parametrize("own_generator", [False, True])
def test_resume_over_a_dataloader_equals_the_uninterrupted_run(tmp_path, own_generator):
    """Oracle: the uninterrupted run. The checkpoint holds the loader's generator (when it has one) and the
    global RNG (when it draws from that), so a resumed run, even on a loader whose generator was seeded
    differently, gets the same batches and the same bits."""

    def loader(seed):
        gen = torch.Generator().manual_seed(seed) if own_generator else None
        return DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=16, shuffle=True, generator=gen)

    class Stop(Exception):
        pass

    def crash(trainer, record):
        if trainer.epoch == 2:
            raise Stop

    crasher = Lambda(on_epoch_end=crash)
    crasher.order = 200  # after the checkpoint of that epoch
    data = _splits()
    whole, _, full = _fit(loader(3), data.val, epochs=4)
    with pytest.raises(Stop):
        _fit(loader(3), data.val, epochs=4, callbacks=[Checkpoint(tmp_path / "c.pt"), crasher])
    resumed_model = _mlp(seed=99)
    model = resumed_model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, opt, batch_size=16, epochs=4, seed=7, callbacks=[Checkpoint(tmp_path / "c.pt")])
    history = trainer.fit(loader(12345), data.val, resume_from=tmp_path / "c.pt")
    assert _same_params(whole, model)
    assert history.iterations == full.iterations


def test_resume_refuses_a_different_data_source(tmp_path):
    """A checkpoint taken on tensors does not resume on a DataLoader (the batches would differ)."""
    data = _splits()
    model = _mlp()

    def trainer():
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Trainer(model, opt, epochs=1, callbacks=[Checkpoint(tmp_path / "c.pt")])

    trainer().fit(data.train)
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=32)
    with pytest.raises(OptregValueError, match="cannot resume: the checkpoint has loader='absent', this run 'Data"):
        trainer().fit(loader, resume_from=tmp_path / "c.pt")


def test_a_distributed_sampler_gets_set_epoch():
    """Oracle: DistributedSampler(num_replicas=2, rank=0) after set_epoch(e) lists the indices the trainer
    trains on in epoch e (its shard of a new permutation each epoch)."""
    n = 40
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 6)
    y = torch.zeros(n, dtype=torch.long)
    seen: list[list[int]] = []

    class Watch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, xb):
            if self.training:
                seen[-1].extend(int(v) for v in xb[:, 0])
            return self.fc(xb)

    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=sampler)
    model = Watch()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), epochs=3,
                      callbacks=[Lambda(on_fit_start=lambda t: seen.append([]),
                                        on_epoch_end=lambda t, r: seen.append([]))])  # fmt: skip
    trainer.fit(loader)
    oracle = DistributedSampler(TensorDataset(x, y), num_replicas=2, rank=0, shuffle=True, seed=0)
    expected = []
    for epoch in range(3):
        oracle.set_epoch(epoch)
        expected.append(list(oracle))
    assert seen[:3] == expected and expected[0] != expected[1]


def test_targets_unknown_before_the_first_batch():
    """An IterableDataset's targets are seen at the first batch: integer labels get accuracies (oracle:
    the hits counted by hand on the same batches), float targets none."""
    data = _splits()

    class Stream(IterableDataset):
        def __init__(self, y):
            self.y = y

        def __iter__(self):
            return iter(zip(data.train.x, self.y))

    model = _mlp(dropout=0.0)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), epochs=1)
    history = trainer.fit(DataLoader(Stream(data.train.y), batch_size=16))
    with torch.no_grad():
        hits = (model(data.train.x).argmax(1) == data.train.y).float().mean().item()
    assert history.epochs[0]["train_accuracy"] == pytest.approx(hits)
    regression = Trainer(nn.Linear(6, 1), torch.optim.SGD(nn.Linear(6, 1).parameters(), lr=0.0),
                         loss_fn=nn.functional.mse_loss, epochs=1)  # fmt: skip
    floats = data.train.y.float()[:, None]
    assert regression.fit(DataLoader(Stream(floats), batch_size=16)).epochs[0]["train_accuracy"] is None


def test_bad_loaders_raise_clear_errors():
    data = _splits()
    model = _mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1)
    batches = ((x, y) for x, y in [(data.train.x, data.train.y)])
    with pytest.raises(OptregTypeError, match="a one-shot iterator .* cannot be trained on for several epochs"):
        trainer.fit(batches)
    with pytest.raises(OptregValueError, match="the training data yielded no batch in epoch 0"):
        trainer.fit([])
    with pytest.raises(OptregTypeError, match=r"each batch must be an \(x, y\) pair, got Tensor"):
        trainer.fit([data.train.x])
    with pytest.raises(OptregValueError, match="batch x and y must have the same number of examples"):
        trainer.fit([(data.train.x, data.train.y[:-1])])
    with pytest.raises(OptregValueError, match="trainer.evaluate: the data yielded no batch"):
        trainer.evaluate([])


def test_train_run_on_splits_that_are_dataloaders():
    """train.run trains on whatever the Trainer takes: Splits whose train split is a DataLoader yielding the
    trainer's permutations gives the numbers of the run on tensors (oracle)."""
    data = _splits()
    spec = {**SPEC, "model": {"kind": "mlp", "hidden": [16]}}
    on_tensors = run(spec, data, seed=7)
    loader = DataLoader(
        TensorDataset(data.train.x, data.train.y), batch_size=16, sampler=TrainerOrder(64, 7),
        generator=torch.Generator(),
    )  # fmt: skip
    on_loader = run(spec, data._replace(train=loader), seed=7)
    assert _same_params(on_tensors.model, on_loader.model)
    assert on_tensors.history.iterations == on_loader.history.iterations


# ---------------------------------------------------------------- layering
def _imports(package: str) -> list[tuple[str, str]]:
    """``(file, module)`` for every absolute import in ``src/optreg/<package>/*.py``, at any depth of the code."""
    folder = Path(__file__).resolve().parents[2] / "src" / "optreg" / package
    out = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out += [(path.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                out += [(path.name, node.module)] + [(path.name, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_the_engine_imports_neither_the_lab_nor_the_cli():
    """DESIGN: cli -> lab -> engine -> components. Every import in optreg/train (at any depth of the code)
    names an engine or component module, never experiments, report, config or cli."""
    lab = ("optreg.experiments", "optreg.report", "optreg.config", "optreg.cli")
    for file, name in _imports("train"):
        assert not name.startswith(lab), f"{file} imports {name}"


def test_train_and_hpo_import_each_other_neither():
    """docs/architecture.md: the engine's train/ and hpo/ are siblings (tuning.py joins them; Ensemble.from_study
    takes a duck-typed study). The walk does see imports: train/ imports torch, hpo/ its own modules."""
    train, hpo = _imports("train"), _imports("hpo")
    assert any(name == "torch" for _, name in train) and any(name.startswith("optreg.hpo") for _, name in hpo)
    assert [(f, n) for f, n in train if n.startswith("optreg.hpo")] == []
    assert [(f, n) for f, n in hpo if n.startswith("optreg.train")] == []


# ---------------------------------------------------------------- configs that cannot lie
def test_one_learning_rate_for_the_optimizer_and_the_schedule():
    """schedule.lr and optimizer.lr are one number: either is copied to the other, neither gives the
    optimizer's default (sgd: 0.01, its signature), two different values are refused."""
    base = {"model": {}, "optimizer": {"name": "sgd"}}
    both = check_spec({**base, "schedule": {"name": "cosine", "total_steps": 5}})
    assert both["optimizer"]["lr"] == both["schedule"]["lr"] == 0.01
    only = check_spec({**base, "schedule": {"name": "warmup", "warmup_steps": 2,
                                            "schedule": {"name": "cosine", "lr": 0.3}}})  # fmt: skip
    assert only["optimizer"]["lr"] == only["schedule"]["schedule"]["lr"] == 0.3
    with pytest.raises(ConfigError, match=r"spec: schedule.lr = 0.003 and optimizer.lr = 0.001 differ: the schedule"):
        check_spec({"model": {}, "optimizer": {"name": "adam", "lr": 1e-3}, "schedule": {"name": "cosine", "lr": 3e-3}})
    assert check_spec(both) == both  # a resolved spec checks to itself


def test_auto_total_steps_is_the_runs_number_of_updates_and_a_warmup_counts_inside():
    """total_steps left out is "auto": epochs x ceil(N / K) updates (3 x 4 = 12 here); the recorded lrs are
    the closed form of a cosine with warm-up over the whole run, ending at min_lr on the last update
    (oracle: the formula); the resolved spec holds the number."""
    data = _splits()
    spec = {**SPEC, "schedule": {"name": "warmup", "warmup_steps": 3, "schedule": {"name": "cosine"}}}
    result = run(spec, data, seed=0)
    assert result.spec["schedule"]["schedule"]["total_steps"] == 12
    lrs = result.history.column("lr", "iterations")
    expected = [0.01 * t / 3 for t in range(3)] + [
        0.01 * (1 + math.cos(math.pi * (t - 3) / 9)) / 2 for t in range(3, 12)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)
    steps = run({**spec, "train": {**SPEC["train"], "epochs": None, "steps": 7}}, data, seed=0)
    assert steps.spec["schedule"]["schedule"]["total_steps"] == 7 and steps.steps == 7


def test_a_cosine_that_ends_before_training_warns_and_an_exact_one_does_not(recwarn):
    """The example's bug (total_steps = 615 with 40 epochs): an explicit length shorter than the run warns;
    the numbers are those asked for. The explicit length equal to the run's gives auto's numbers bit for bit."""
    from optreg.errors import OptregWarning

    data = _splits()
    short = {**SPEC, "schedule": {"name": "cosine", "lr": 0.01, "total_steps": 6}}
    with pytest.warns(OptregWarning, match=r"schedule.total_steps = 6 ends before training does \(12 updates\): the "
                      r"last 6 updates stay at min_lr"):  # fmt: skip
        run(short, data, seed=0)
    exact = run({**SPEC, "schedule": {"name": "cosine", "total_steps": 12}}, data, seed=0)
    auto = run({**SPEC, "schedule": {"name": "cosine"}}, data, seed=0)
    assert not [w for w in recwarn if issubclass(w.category, OptregWarning)]
    assert _same_params(exact.model, auto.model) and exact.history.iterations == auto.history.iterations
    with pytest.raises(ConfigError, match='spec: schedule.total_steps = "al": must be an integer >= 1 or "auto"'):
        check_spec({**SPEC, "schedule": {"name": "cosine", "total_steps": "al"}})
    with pytest.raises(ConfigError, match=r"schedule.warmup_steps = 12: must be < the schedule's total_steps = 12"):
        run({**SPEC, "schedule": {"name": "warmup", "warmup_steps": 12, "schedule": {"name": "cosine"}}}, data, seed=0)


def test_steps_counts_updates_and_is_the_prefix_of_a_longer_run():
    """train.steps = 10 stops after 10 updates (the third epoch partial); oracle: the first 10 iterations
    of the 3-epoch run, bit for bit. epochs and steps together are refused."""
    data = _splits()
    spec = {**SPEC, "schedule": None, "train": {"batch_size": 16, "steps": 10}}
    part = run(spec, data, seed=0)
    whole = run({**spec, "train": {"batch_size": 16, "epochs": 3}}, data, seed=0)
    assert part.steps == 10 and part.epochs == 3 and len(part.history.epochs) == 3
    assert part.history.iterations == whole.history.iterations[:10]
    with pytest.raises(ConfigError, match=r"spec: train.steps = 10: give train.epochs or train.steps \(updates\)"):
        check_spec({**spec, "train": {"epochs": 2, "steps": 10}})


def test_shuffle_false_trains_on_the_batches_in_order():
    """Oracle: a hand-written loop of SGD over the slices x[i*K:(i+1)*K] in order, every epoch."""
    data = _splits()
    spec = {"model": {"hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"batch_size": 16, "epochs": 2, "shuffle": False}}  # fmt: skip
    result = run(spec, data, seed=3)
    model = build_model({"hidden": [8]}, data, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        for i in range(0, 64, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.train.x[i : i + 16]), data.train.y[i : i + 16]).backward()
            opt.step()
    assert _same_params(result.model, model)


def test_eval_every_records_scores_without_changing_training():
    """Every 5 updates the validation and test scores go into history.evaluations; training is the same
    bit for bit as without (dropout's RNG untouched); the record at the last update equals evaluate() of
    the final model on each split (oracle)."""
    data = _splits()
    spec = {**SPEC, "train": {**SPEC["train"], "early_stopping": None, "eval_every": 4}}
    with_eval = run(spec, data, seed=0)
    without = run({**spec, "train": {**spec["train"], "eval_every": None}}, data, seed=0)
    assert _same_params(with_eval.model, without.model)
    assert with_eval.history.iterations == without.history.iterations and without.history.evaluations == []
    records = with_eval.history.evaluations
    assert [r["step"] for r in records] == [4, 8, 12] and [r["epoch"] for r in records] == [0, 1, 2]
    model = with_eval.model
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0))
    assert records[-1]["val_accuracy"] == trainer.evaluate(data.val)["accuracy"]
    assert records[-1]["test_loss"] == trainer.evaluate(data.test)["loss"] == with_eval.test_loss
    assert with_eval.history.column("test_accuracy", "evaluations")[-1] == with_eval.test_accuracy


def test_validation_monitors_without_a_validation_split_are_refused_before_training():
    data = _splits()
    spec = {**SPEC, "data": {"name": "digits", "val_fraction": 0.0}}
    with pytest.raises(ConfigError, match=r'spec: train.early_stopping.monitor = "val_loss": there is no validation'):
        check_spec(spec)
    plateau = {**spec, "schedule": {"name": "reduce_on_plateau"}, "train": {"epochs": 2}}
    with pytest.raises(ConfigError, match=r'spec: schedule.monitor = "val_loss": there is no validation split'):
        check_spec(plateau)
    empty = data._replace(val=Split(data.val.x[:0], data.val.y[:0]))
    with pytest.raises(ConfigError, match="the data have no validation split"):
        run(SPEC, empty, seed=0)


def test_data_section_n_classes_mnist1d_arguments_and_test_fraction():
    """n_classes reaches optreg.data.load (a model with that many outputs; oracle: the head's size);
    MNIST-1D's generation arguments are checked with the spec, test_fraction for it is refused."""
    from optreg.errors import OptregWarning

    with pytest.warns(OptregWarning, match=r"2 of n_classes = 12 classes have no example \(class 10, 11\)"):
        result = run({**SPEC, "data": {"name": "digits", "n_classes": 12}, "train": {"epochs": 1}, "schedule": None},
                     None, seed=0)  # fmt: skip
    assert result.model.out.out_features == 12 and result.spec["model"]["out_features"] == 12
    with pytest.raises(ConfigError, match="spec: data.test_fraction = 0.2: does not apply: mnist1d has an official"):
        check_spec({**SPEC, "data": {"name": "mnist1d", "test_fraction": 0.2}})
    with pytest.raises(ConfigError, match="spec: data.mnist1d.noise = 0.1: unknown generation argument of mnist1d"):
        check_spec({**SPEC, "data": {"name": "mnist1d", "mnist1d": {"noise": 0.1}}})
    with pytest.raises(ConfigError, match="spec: data.mnist1d.shuffle_seq = 1: must be true or false"):
        check_spec({**SPEC, "data": {"name": "mnist1d", "mnist1d": {"shuffle_seq": 1}}})
    with pytest.raises(ConfigError, match='data.mnist1d = {shuffle_seq = true}: generation arguments apply'):
        check_spec({**SPEC, "data": {"mnist1d": {"shuffle_seq": True}}})
    ok = check_spec({**SPEC, "data": {"name": "mnist1d", "mnist1d": {"shuffle_seq": True}}})
    assert ok["data"]["mnist1d"] == {"shuffle_seq": True}


def test_readout_all_gets_seq_len_from_the_data():
    """(N, T) sequences: readout "all" feeds T * H values to the head (T from the data)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 9, generator=g), torch.arange(40) % 2
    data = Splits(Split(x[:30], y[:30]), Split(x[30:35], y[30:35]), Split(x[35:], y[35:]), 2, (9,), "seq")
    spec = {"model": {"kind": "gru", "hidden_size": 4, "readout": "all"}, "optimizer": {"name": "sgd"},
            "train": {"epochs": 1}}  # fmt: skip
    result = run(spec, data, seed=0)
    assert result.spec["model"]["seq_len"] == 9 and result.model.head.in_features == 36
    three = data._replace(**{k: Split(getattr(data, k).x.reshape(-1, 3, 3), getattr(data, k).y)
                             for k in ("train", "val", "test")}, input_shape=(3, 3))  # fmt: skip
    assert run(spec, three, seed=0).spec["model"] | {"kind": "gru"} == {
        "kind": "gru", "hidden_size": 4, "readout": "all", "out_features": 2, "in_features": 3, "seq_len": 3}
