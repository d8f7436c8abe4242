"""Greedy supervised layer-wise pretraining (file 002) against its definition.

Oracles: a hand-written torch loop of the definition (stage l trains block l and a temporary head on the
features of the frozen blocks below it, with the permutation ``randperm(N, Generator(seed))`` of every
stage; then all layers jointly), bit for bit; the frozen blocks' tensors (parameters *and* BatchNorm
buffers) are unchanged while a higher stage trains.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optreg.errors import OptregTypeError, OptregValueError
from optreg.train.pretrain import Frozen, greedy_layerwise


def blocks_and_output(seed=0, d=5, h=12, c=3, norm=False, dropout=0.0):
    torch.manual_seed(seed)
    blocks = []
    for i in range(3):
        layers = [nn.Linear(d if i == 0 else h, h)]
        if norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        blocks.append(nn.Sequential(*layers))
    return blocks, nn.Linear(h, c)


def seeded_head(stage, width, k):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(100 + stage)
        return nn.Linear(width, k)


def sgd_epochs(modules_forward, params, x, y, *, epochs, seed, batch_size):
    """A plain SGD loop over permutations from ``Generator(seed)``."""
    opt = torch.optim.SGD(params, lr=0.1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(modules_forward(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_matches_the_definition_written_as_a_hand_loop(make_data, same_params):
    x, y = make_data(n=80)
    blocks, output = blocks_and_output()
    ref_blocks, ref_output = copy.deepcopy(blocks), copy.deepcopy(output)
    sgd = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    result = greedy_layerwise(blocks, output, (x, y), epochs_per_layer=2, finetune_epochs=1, optimizer=sgd,
                              head=seeded_head, seed=3, batch_size=16)  # fmt: skip

    for stage, block in enumerate(ref_blocks):  # the oracle
        top = ref_output if stage == len(ref_blocks) - 1 else seeded_head(stage, 12, 3)
        below = nn.Sequential(*ref_blocks[:stage])

        def forward(xb, below=below, block=block, top=top):
            with torch.no_grad():
                h = below(xb)
            return top(block(h))

        sgd_epochs(forward, [*block.parameters(), *top.parameters()], x, y, epochs=2, seed=3, batch_size=16)
    ref = nn.Sequential(*ref_blocks, ref_output)
    sgd_epochs(ref, list(ref.parameters()), x, y, epochs=1, seed=3, batch_size=16)

    assert isinstance(result.model, nn.Sequential) and same_params(result.model, ref)
    assert result.names == ["layer 1", "layer 2", "layer 3", "fine-tune"] and len(result.heads) == 2
    assert all(len(h.iterations) == 2 * 5 for h in result.stages[:3]) and len(result.stages[3].iterations) == 5


def test_frozen_blocks_do_not_change_while_a_higher_one_trains(make_data):
    """With BatchNorm and dropout in every block: a frozen block's parameters and running statistics are
    those it had at the end of its own stage; the block being trained changes; fine-tuning changes all."""
    x, y = make_data(n=96)
    blocks, output = blocks_and_output(norm=True, dropout=0.2)
    snapshots = {}

    def snap(stage, name, model):
        snapshots[name] = [copy.deepcopy(b.state_dict()) for b in blocks]

    before = [copy.deepcopy(b.state_dict()) for b in blocks]
    result = greedy_layerwise(blocks, output, (x, y), epochs_per_layer=2, finetune_epochs=2, optimizer="adam",
                              hparams={"lr": 0.01}, seed=0, batch_size=16, on_stage_end=snap)  # fmt: skip

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    names = ["layer 1", "layer 2", "layer 3"]
    for stage, name in enumerate(names):
        state = snapshots[name]
        assert not same(state[stage], (snapshots[names[stage - 1]] if stage else before)[stage])  # it trained
        for lower in range(stage):
            assert same(state[lower], snapshots[names[lower]][lower])  # frozen: weights and BN buffers
        for higher in range(stage + 1, 3):
            assert same(state[higher], before[higher])  # not yet trained
    assert all(not same(snapshots["fine-tune"][i], snapshots["layer 3"][i]) for i in range(3))
    assert all(p.requires_grad for p in result.model.parameters())
    assert result.model(x).shape == (96, 3)


def test_frozen_stays_in_eval_mode_and_gives_no_gradient():
    inner = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5))
    frozen = Frozen(inner)
    frozen.train()
    assert not inner.training and not any(p.requires_grad for p in inner.parameters())
    x = torch.randn(5, 3)
    assert torch.equal(frozen(x), inner[0](x).detach()) and not frozen(x).requires_grad
    assert frozen.release() is inner and all(p.requires_grad for p in inner.parameters())


def test_default_heads_are_seeded_and_the_callers_rng_is_left_alone(make_data, same_params):
    x, y = make_data(n=48)

    def run():
        blocks, output = blocks_and_output(seed=1)
        torch.manual_seed(0)
        state = torch.get_rng_state()
        result = greedy_layerwise(blocks, output, (x, y), epochs_per_layer=1, finetune_epochs=0, seed=4, batch_size=16)
        assert torch.equal(torch.get_rng_state(), state)
        return result

    a = run()
    assert same_params(a.model, run().model) and len(a.stages) == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"blocks": []}, OptregTypeError, "greedy_layerwise: blocks must be a non-empty sequence of nn.Module"),
        ({"output": 3}, OptregTypeError, "greedy_layerwise: output must be an nn.Module, got int"),
        ({"epochs_per_layer": 0}, OptregValueError, "greedy_layerwise: epochs_per_layer must be an integer >= 1"),
        ({"finetune_epochs": -1}, OptregValueError, "greedy_layerwise: finetune_epochs must be an integer >= 0"),
        ({"epochs": 3}, OptregValueError, "greedy_layerwise: epochs is set per stage"),
        ({"optimizer": 3}, OptregTypeError, "greedy_layerwise: optimizer must be a name or a callable"),
    ],
)
def test_bad_input(make_data, kwargs, error, message):
    x, y = make_data(n=16)
    blocks, output = blocks_and_output()
    args = {"blocks": blocks, "output": output, "epochs_per_layer": 1, "finetune_epochs": 0, **kwargs}
    with pytest.raises(error, match=message):
        greedy_layerwise(args.pop("blocks"), args.pop("output"), (x, y), **args)
