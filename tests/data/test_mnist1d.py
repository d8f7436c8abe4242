"""load("mnist1d") against the oracle mnist1d.data.make_dataset (Greydanus 2020), generated once per test
session into a temporary OPTREG_CACHE with every way to reach the network blocked."""

from __future__ import annotations

import random
import socket
from types import SimpleNamespace

import mnist1d.data
import numpy as np
import pytest
import requests
import torch

from optreg.data import load


def rows(*xs: torch.Tensor) -> np.ndarray:
    a = np.concatenate([x.reshape(len(x), -1).numpy() for x in xs])
    return a[np.lexsort(a.T[::-1])]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One real generation (a few seconds) in an empty cache, with the network and get_dataset blocked."""
    cache = tmp_path_factory.mktemp("optreg-cache")
    attempts: list[str] = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append(what)
            raise OSError(f"test: network access attempted via {what}")

        return blocked

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTREG_CACHE", str(cache))
        mp.setattr(socket.socket, "connect", refuse("socket.connect"))
        mp.setattr(socket, "create_connection", refuse("socket.create_connection"))
        mp.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
        mp.setattr(requests, "get", refuse("requests.get"))
        mp.setattr(mnist1d.data, "get_dataset", refuse("mnist1d.data.get_dataset"))
        load("digits")  # first import of scikit-learn's modules (importing them advances `random`)
        np_before, py_before = np.random.get_state(), random.getstate()  # noqa: NPY002
        splits = load("mnist1d", seed=0)
        np_after, py_after = np.random.get_state(), random.getstate()  # noqa: NPY002
        files = sorted(p.name for p in cache.iterdir())
    return SimpleNamespace(
        splits=splits,
        cache=cache,
        files=files,
        attempts=attempts,
        np_states=(np_before, np_after),
        py_states=(py_before, py_after),
    )


@pytest.fixture(scope="module")
def reference():
    """The oracle: mnist1d's own generator with its default arguments."""
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    np.random.set_state(np_state)  # noqa: NPY002
    random.setstate(py_state)
    return data


def fake_make_dataset(calls: list[int]):
    """A fast stand-in with the real shapes, for the cache-handling tests."""

    def make(args):
        calls.append(args.seed)
        rng = np.random.default_rng(len(calls))
        return {
            "x": rng.normal(size=(4000, 40)),
            "y": np.arange(4000) % 10,
            "x_test": rng.normal(size=(1000, 40)),
            "y_test": np.arange(1000) % 10,
        }

    return make


def test_mnist1d_shapes_dtypes_and_classes(generated):
    s = generated.splits
    assert s.name == "mnist1d" and s.n_classes == 10 and s.input_shape == (40,)
    assert (len(s.train.y), len(s.val.y), len(s.test.y)) == (3600, 400, 1000)
    for split in s[:3]:
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert set(split.y.unique().tolist()) == set(range(10))


def test_mnist1d_matches_make_dataset(generated, reference):
    s = generated.splits
    np.testing.assert_array_equal(s.test.x.numpy(), reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(s.test.y.numpy(), reference["y_test"])
    ours = rows(
        torch.cat([torch.cat([s.train.x, s.val.x]), torch.cat([s.train.y, s.val.y])[:, None].float()], 1)
    )
    ref = np.column_stack([reference["x"], reference["y"]]).astype(np.float32)
    np.testing.assert_array_equal(ours, ref[np.lexsort(ref.T[::-1])])


def test_generation_touched_no_network(generated):
    assert generated.attempts == []


def test_generation_leaves_global_rngs_alone(generated):
    """make_dataset reseeds np.random and random with 42; load must put the caller's state back."""
    (a_kind, a_keys, *a_rest), (b_kind, b_keys, *b_rest) = generated.np_states
    assert a_kind == b_kind and np.array_equal(a_keys, b_keys) and a_rest == b_rest
    assert generated.py_states[0] == generated.py_states[1]


def test_cache_is_one_file_and_is_reused(generated, monkeypatch):
    assert len(generated.files) == 1 and generated.files[0].startswith("mnist1d-")
    assert generated.files[0].endswith(".npz")  # no temporary file left behind
    calls: list[int] = []
    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset(calls))
    again = load("mnist1d", seed=0, cache_dir=generated.cache)
    assert calls == []
    for a, b in zip(again[:3], generated.splits[:3]):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_optreg_cache_environment_variable_is_used(generated, monkeypatch):
    monkeypatch.setenv("OPTREG_CACHE", str(generated.cache))
    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset(calls := []))
    assert torch.equal(load("mnist1d").test.x, generated.splits.test.x) and calls == []


def test_unflattened_shape_for_conv1d(generated):
    s = load("mnist1d", flatten=False, cache_dir=generated.cache)
    assert s.input_shape == (1, 40) and s.train.x.shape == (3600, 1, 40)
    assert torch.equal(s.train.x.reshape(3600, 40), generated.splits.train.x)


def test_seeded_validation_split(generated):
    a = load("mnist1d", seed=7, cache_dir=generated.cache)
    b = load("mnist1d", seed=7, cache_dir=generated.cache)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, generated.splits.val.x)
    assert torch.equal(a.test.x, generated.splits.test.x)  # the official test set does not move
    counts = np.bincount(a.val.y.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 45  # stratified: about 40 per class


@pytest.mark.parametrize("content", ["garbage", "npy", "wrong-shapes"])
def test_corrupt_cache_is_regenerated(generated, tmp_path, monkeypatch, content):
    path = tmp_path / generated.files[0]
    if content == "garbage":
        path.write_bytes(b"PK\x03\x04 truncated zip")
    elif content == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    else:
        small = {"x": np.zeros((10, 40)), "y": np.zeros(10, int), "x_test": np.zeros((5, 40))}
        np.savez(path, y_test=np.zeros(5, int), **small)
    calls: list[int] = []
    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset(calls))
    s = load("mnist1d", cache_dir=tmp_path)
    assert calls == [42] and len(s.train.y) == 3600
    with np.load(path) as f:
        assert f["x"].shape == (4000, 40) and f["x_test"].shape == (1000, 40)
    assert torch.equal(load("mnist1d", cache_dir=tmp_path).test.x, s.test.x) and calls == [42]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset(calls := []))
    with pytest.warns(RuntimeWarning, match="could not write the cache"):
        s = load("mnist1d", cache_dir=blocker / "cache")
    assert len(s.test.y) == 1000 and calls == [42]
