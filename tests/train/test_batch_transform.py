"""The trainer's per-batch hook, ``batch_transform(x, y, generator) -> (x, y)``.

Oracles: a hand-written torch loop that applies the same seeded transform (its own
``torch.Generator().manual_seed(transform_seed(seed))``, the shuffling permutation from
``torch.Generator().manual_seed(seed)``) to each mini-batch; the run without a transform (an identity
transform must give the same bits, and the batch order and dropout masks must not move); the
uninterrupted run (resuming a checkpoint mid-run); evaluation by a plain forward pass on the clean data.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from optreg.data.augment import AddGaussianNoise, as_batch_transform
from optreg.errors import OptregTypeError, OptregValueError
from optreg.regularize.noise import GaussianNoise
from optreg.train import Checkpoint, Trainer
from optreg.train.trainer import transform_seed

STD = 0.3


def hand_noise(x, y, generator):
    """The transform of the oracle loop, written out: ``x + STD * N(0, I)`` from ``generator``."""
    return x + STD * torch.randn(x.shape, generator=generator, dtype=x.dtype), y


def hand_loop(model, opt, x, y, *, batch_size, epochs, seed, transform):
    """The oracle: permutations from ``Generator(seed)``, the transform from ``Generator(transform_seed(seed))``."""
    perm_gen = torch.Generator().manual_seed(seed)
    tgen = torch.Generator().manual_seed(transform_seed(seed))
    losses = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(x.shape[0], generator=perm_gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = transform(x[idx], y[idx], tgen)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def test_identity_transform_equals_no_transform_bit_for_bit(make_data, make_mlp, same_params, without_time):
    """With dropout (torch's global RNG) and shuffling: an identity transform changes no bit, and it sees
    exactly the batches of the permutation ``randperm(N, Generator(seed))`` (the order does not move)."""
    x, y = make_data(n=90)
    seen = []

    def identity(xb, yb, generator):
        assert isinstance(generator, torch.Generator)
        seen.append(yb.clone())
        return xb, yb

    def fit(transform):
        model = make_mlp(dropout=0.3)
        trainer = Trainer(
            model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=16, epochs=3, seed=4,
            batch_transform=transform,
        )  # fmt: skip
        return model, trainer.fit((x[:70], y[:70]), (x[70:], y[70:]))

    plain_model, plain = fit(None)
    ident_model, ident = fit(identity)
    assert same_params(plain_model, ident_model)
    assert without_time(plain) == without_time(ident)
    gen = torch.Generator().manual_seed(4)
    perms = [torch.randperm(70, generator=gen) for _ in range(3)]
    expected = [y[:70][p[i : i + 16]] for p in perms for i in range(0, 70, 16)]
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected))


def test_a_noise_transform_keeps_the_batch_order_and_the_dropout_masks(make_data, make_mlp):
    """Adding a transform that draws from its own generator leaves torch's global RNG (dropout) and the
    shuffling stream alone: torch's global RNG state at every dropout call (which fixes its mask) and the
    batches' labels are the same with and without it."""
    x, y = make_data(n=64)
    seen = {}

    def fit(transform, key):
        model = make_mlp(dropout=0.5)
        states = []
        model[2].register_forward_pre_hook(lambda m, i: states.append(torch.get_rng_state()))
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=16, epochs=2, seed=1,
                batch_transform=transform, metrics=("loss",)).fit((x, y))  # fmt: skip
        seen[key] = states

    fit(None, "plain")
    fit(GaussianNoise(STD), "noise")
    assert len(seen["plain"]) == 8 and all(torch.equal(a, b) for a, b in zip(seen["plain"], seen["noise"]))


@pytest.mark.parametrize("transform", [hand_noise, GaussianNoise(STD)], ids=["hand", "GaussianNoise"])
def test_matches_a_hand_loop_that_applies_the_same_seeded_transform(make_data, make_mlp, same_params, transform):
    """Oracle: the hand loop (transform written out, generator seeded with transform_seed(seed))."""
    x, y = make_data(n=100)
    ours, ref = make_mlp(), make_mlp()
    history = Trainer(
        ours, torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9), batch_size=16, epochs=3, seed=5,
        batch_transform=transform,
    ).fit((x, y))  # fmt: skip
    losses = hand_loop(
        ref, torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), x, y, batch_size=16, epochs=3, seed=5,
        transform=hand_noise,
    )  # fmt: skip
    assert same_params(ours, ref)
    assert history.column("loss", "iterations") == losses
    plain = make_mlp()
    Trainer(plain, torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9), batch_size=16, epochs=3, seed=5).fit(
        (x, y)
    )
    assert not same_params(ours, plain)  # the noise did change the run


def test_same_seed_same_numbers_other_seed_other_noise(make_data, make_mlp, same_params):
    x, y = make_data(n=64)

    def fit(seed):
        model = make_mlp()
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=16, epochs=2, seed=seed,
                shuffle=False, batch_transform=GaussianNoise(STD)).fit((x, y))  # fmt: skip
        return model

    assert same_params(fit(3), fit(3))
    assert not same_params(fit(3), fit(4))  # shuffle=False: only the transform's stream differs
    assert len({transform_seed(s, r) for s in range(50) for r in range(4)} | set(range(60))) == 260


def test_validation_test_and_evaluate_see_clean_data(make_data, make_mlp):
    """The transform is applied to training batches only: every recorded validation / test score equals
    a plain eval-mode forward pass over the clean split (oracle), and the transform is called once per step."""
    x, y = make_data(n=120)
    calls = []

    def wreck(xb, yb, generator):
        calls.append(xb.shape[0])
        return xb * 0.0 + 5.0, yb  # training batches become useless; clean scores must not notice

    model = make_mlp()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), batch_size=20, epochs=1, seed=0,
                      eval_every=2, batch_transform=wreck)  # fmt: skip
    val, test = (x[60:90], y[60:90]), (x[90:], y[90:])
    history = trainer.fit((x[:60], y[:60]), val, test=test)
    assert calls == [20, 20, 20] and trainer.step == 3
    model.eval()
    with torch.no_grad():
        val_loss = F.cross_entropy(model(val[0]), val[1]).item()
        test_acc = (model(test[0]).argmax(1) == test[1]).double().mean().item()
    assert history.epochs[-1]["val_loss"] == pytest.approx(val_loss, rel=1e-6)
    assert trainer.evaluate(test)["accuracy"] == pytest.approx(test_acc, abs=1e-12)
    assert history.evaluations[-1]["step"] == 2 and len(calls) == 3


def test_dataloader_path_matches_a_hand_loop_over_the_same_loader(make_data, make_mlp, same_params):
    """A DataLoader with its own generator: the trainer transforms its batches like the hand loop over an
    identically seeded loader (oracle)."""
    x, y = make_data(n=100)
    transform = as_batch_transform(AddGaussianNoise(STD))

    def loader():
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(9))

    ours, ref = make_mlp(), make_mlp()
    Trainer(ours, torch.optim.Adam(ours.parameters(), lr=0.01), epochs=2, seed=2, batch_transform=transform).fit(
        loader()
    )
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    tgen = torch.Generator().manual_seed(transform_seed(2))
    ref_loader = loader()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2 + 1)  # the trainer's global seed (a DataLoader draws its base seed from it)
        for _ in range(2):
            for xb, yb in ref_loader:
                xb, yb = transform(xb, yb, tgen)
                loss = F.cross_entropy(ref(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert same_params(ours, ref)


@pytest.mark.parametrize("source", ["tensors", "loader"])
def test_resumed_run_equals_uninterrupted_run(
    tmp_path, make_data, make_mlp, same_params, without_time, crash_after, source
):
    """The transform generator's state is in the checkpoint: interrupted after epoch 2 and resumed, the
    run equals the uninterrupted one bit for bit (dropout, Adam, shuffling and the noise all continue)."""
    x, y = make_data(n=100)

    def train_data():
        if source == "tensors":
            return x[:80], y[:80]
        return DataLoader(
            TensorDataset(x[:80], y[:80]), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)
        )

    def trainer_for(model, *extra):
        return Trainer(
            model, torch.optim.Adam(model.parameters(), lr=0.01), batch_size=16, epochs=4, seed=7,
            batch_transform=as_batch_transform(AddGaussianNoise(STD, p=0.5)),
            callbacks=[Checkpoint(tmp_path / "run.pt"), *extra],
        )  # fmt: skip

    whole = make_mlp(dropout=0.3)
    full = trainer_for(whole).fit(train_data(), (x[80:], y[80:]))
    with pytest.raises(crash_after.error):
        trainer_for(make_mlp(dropout=0.3), crash_after(2)).fit(train_data(), (x[80:], y[80:]))
    resumed_model = make_mlp(dropout=0.3, seed=99)
    resumed = trainer_for(resumed_model).fit(train_data(), (x[80:], y[80:]), resume_from=tmp_path / "run.pt")
    assert same_params(whole, resumed_model)
    assert without_time(resumed) == without_time(full)


def test_resume_refuses_a_checkpoint_with_or_without_a_transform_the_run_lacks(tmp_path, make_data, make_mlp):
    x, y = make_data(n=64)

    def trainer(transform, path):
        model = make_mlp()
        return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_transform=transform,
                       callbacks=[Checkpoint(path)])  # fmt: skip

    trainer(None, tmp_path / "plain.pt").fit((x, y))
    trainer(GaussianNoise(0.1), tmp_path / "noise.pt").fit((x, y))
    with pytest.raises(OptregValueError, match="cannot resume: the checkpoint has batch_transform='absent', this run"):
        trainer(GaussianNoise(0.1), tmp_path / "a.pt").fit((x, y), resume_from=tmp_path / "plain.pt")
    with pytest.raises(OptregValueError, match="the checkpoint has batch_transform='GaussianNoise', this run none"):
        trainer(None, tmp_path / "b.pt").fit((x, y), resume_from=tmp_path / "noise.pt")


@pytest.mark.parametrize(
    ("transform", "error", "message"),
    [
        (lambda x, y, g: x, OptregTypeError, r"trainer: batch_transform must return an \(x, y\) pair, got Tensor"),
        (lambda x, y, g: (x, y, y), OptregTypeError, "must return an \\(x, y\\) pair, got a 3-item tuple"),
        (lambda x, y, g: (x.tolist(), y), OptregTypeError, "batch_transform must return tensors \\(x, y\\), got list"),
        (lambda x, y, g: (x[1:], y[1:]), OptregValueError,
         "trainer: batch_transform changed the batch size from 32 to 31"),
        (lambda x, y, g: (x, F.one_hot(y, 3)), OptregValueError,
         r"trainer: batch_transform changed the shape of the labels from \(32,\) to \(32, 3\)"),
    ],
)  # fmt: skip
def test_a_bad_transform_gets_a_clear_error(make_data, make_mlp, transform, error, message):
    x, y = make_data(n=64)
    model = make_mlp()
    with pytest.raises(error, match=message):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_transform=transform).fit((x, y))


def test_a_transform_that_is_not_callable_is_refused(make_mlp):
    model = make_mlp()
    with pytest.raises(OptregTypeError, match=r"trainer: batch_transform must be callable, got 0.1"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_transform=0.1)
