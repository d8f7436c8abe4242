"""Tests of the search spaces (optreg.hpo.space).

Oracles: scipy.stats (Kolmogorov-Smirnov against the uniform / log-uniform laws, chi-square for integers),
numpy's linspace / geomspace and itertools.product for the grid (section 7.6.1), pickle for round trips.
"""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from optreg import hpo
from optreg.errors import OptregTypeError, OptregValueError
from optreg.hpo.space import Space


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: hpo.Float(1.0, 0.5), "Float: high must be greater than low = 1.0, got 0.5"),
        (lambda: hpo.Float(0.5, 0.5), "Float: high must be greater than low = 0.5 (use hpo.Fixed for a single"),
        (lambda: hpo.Float(0.0, 1.0, log=True), "Float: low must be > 0 on a log scale (log=True), got 0.0"),
        (lambda: hpo.Float(-1.0, 1.0, log=True), "Float: low must be > 0 on a log scale (log=True), got -1.0"),
        (lambda: hpo.Float(0.0, math.inf), "Float: high must be finite, got inf"),
        (lambda: hpo.Float("a", 1.0), "Float: low must be a real number, got 'a'"),
        (lambda: hpo.Int(5, 2), "Int: high must be greater than low = 5, got 2"),
        (lambda: hpo.Int(0, 10, log=True), "Int: low must be > 0 on a log scale (log=True), got 0"),
        (lambda: hpo.Int(1.5, 10), "Int: low must be an integer, got 1.5"),
        (lambda: hpo.Float(0.0, 1.0, log=1), "Float: log must be True or False, got 1"),
        (lambda: hpo.Categorical([]), "Categorical: choices must be a non-empty list of values, got []"),
        (lambda: hpo.Categorical("abc"), "Categorical: choices must be a non-empty list of values, got 'abc'"),
        (lambda: hpo.Categorical(["a", "a"]), "Categorical: choices must be distinct, got ['a', 'a']"),
        (lambda: hpo.Categorical([[1, 2]]), "Categorical: choices must be a string, a finite number"),
        (lambda: hpo.Fixed(math.nan), "Fixed: value must be a string, a finite number, a bool or None, got nan"),
        (lambda: hpo.Float(0.0, 1.0, when={}), "Float: when must be a non-empty mapping"),
    ],
)
def test_bad_distributions_raise_a_clear_error(make, message):
    with pytest.raises(OptregValueError) as info:
        make()
    assert str(info.value).startswith(message)


def test_distributions_are_printable_picklable_and_compared_by_value():
    dists = [
        hpo.Float(1e-4, 1.0, log=True),
        hpo.Float(0.0, 0.9, when={"opt": "sgd"}),
        hpo.Int(16, 256, log=True),
        hpo.Categorical(["relu", "tanh", None, 3, True]),
        hpo.Fixed(10, when={"opt": ["sgd", "adam"]}),
    ]
    assert [repr(d) for d in dists] == [
        "Float(low=0.0001, high=1.0, log=True)",
        "Float(low=0.0, high=0.9, when={'opt': 'sgd'})",
        "Int(low=16, high=256, log=True)",
        "Categorical(choices=('relu', 'tanh', None, 3, True))",
        "Fixed(value=10, when={'opt': ['sgd', 'adam']})",
    ]
    for d in dists:
        back = pickle.loads(pickle.dumps(d))
        assert back == d and repr(back) == repr(d) and hash(back) == hash(d)
    assert hpo.Float(0, 1) == hpo.Float(0.0, 1.0)  # normalized to floats


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "hpo: space must be a non-empty dict"),
        ({"x": (0, 1)}, "hpo: space['x'] must be hpo.Float, Int, Categorical or Fixed, got (0, 1)"),
        ({"x": hpo.Float(0, 1, when={"y": 1})}, "hpo: space['x'].when names an unknown parameter, got 'y'"),
        (
            {"y": hpo.Float(0, 1), "x": hpo.Float(0, 1, when={"y": 1})},
            "hpo: space['x'].when: a parent must be Categorical, Int or Fixed, got y=Float(low=0.0, high=1.0)",
        ),
        (
            {"y": hpo.Categorical(["a"]), "x": hpo.Float(0, 1, when={"y": "b"})},
            "hpo: space['x'].when['y'] must be a value of Categorical(choices=('a',)), got 'b'",
        ),
        (
            {"a": hpo.Categorical([1, 2], when={"b": 1}), "b": hpo.Categorical([1, 2], when={"a": 1})},
            "hpo: space's conditions form a cycle, got a -> b -> a",
        ),
    ],
)
def test_bad_spaces_raise_a_clear_error(space, message):
    with pytest.raises((OptregValueError, OptregTypeError)) as info:
        Space(space)
    assert str(info.value).startswith(message)


def test_log_float_samples_are_log_uniform_scipy_ks():
    """Random search on a log scale (file 001): log x is uniform, so x follows scipy.stats.loguniform."""
    d = hpo.Float(1e-4, 1.0, log=True)
    rng = np.random.default_rng(0)
    xs = np.array([d.sample(rng) for _ in range(4000)])
    assert xs.min() >= 1e-4 and xs.max() <= 1.0
    assert scipy.stats.kstest(xs, scipy.stats.loguniform(1e-4, 1.0).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(xs, scipy.stats.uniform(1e-4, 1.0 - 1e-4).cdf).pvalue < 1e-10


def test_linear_float_samples_are_uniform_scipy_ks():
    d = hpo.Float(-2.0, 3.0)
    rng = np.random.default_rng(1)
    xs = np.array([d.sample(rng) for _ in range(4000)])
    assert scipy.stats.kstest(xs, scipy.stats.uniform(-2.0, 5.0).cdf).pvalue > 1e-3


def test_int_samples_chi_square_uniform_and_log():
    rng = np.random.default_rng(2)
    lin = hpo.Int(3, 8)
    counts = np.bincount([lin.sample(rng) - 3 for _ in range(6000)], minlength=6)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    log = hpo.Int(1, 100, log=True)
    xs = np.array([log.sample(rng) for _ in range(6000)])
    assert xs.min() >= 1 and xs.max() <= 100 and all(isinstance(log.sample(rng), int) for _ in range(5))
    # each integer v gets the log-measure of [v - 1/2, v + 1/2] within [1/2, 100.5]
    edges = np.log(np.arange(0.5, 101.0))
    expected = np.diff(edges) / (edges[-1] - edges[0]) * len(xs)
    observed = np.bincount(xs - 1, minlength=100)
    assert expected.min() > 5  # the chi-square test's condition
    assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3


def test_grid_values_follow_the_scale_numpy():
    """7.6.1: continuous values are discretized on their own scale, not at equal intervals."""
    assert hpo.Float(0.01, 1.0, log=True).grid(3) == pytest.approx(np.geomspace(0.01, 1.0, 3))
    assert hpo.Float(0.0, 0.5).grid(6) == pytest.approx(np.linspace(0.0, 0.5, 6))
    assert hpo.Int(1, 4).grid(5) == [1, 2, 3, 4]
    assert hpo.Int(16, 256, log=True).grid(5) == sorted({int(round(v)) for v in np.geomspace(16, 256, 5)})


def test_grid_is_the_product_itertools():
    space = Space({"a": hpo.Categorical(["x", "y"]), "b": hpo.Int(1, 3), "c": hpo.Fixed(0.5)})
    got = [tuple(p.values()) for p in space.grid(5)]
    assert got == list(itertools.product(["x", "y"], [1, 2, 3], [0.5]))


def test_conditional_parameters_exist_only_when_their_condition_holds():
    space = Space(
        {
            "opt": hpo.Categorical(["sgd", "adam"]),
            "momentum": hpo.Float(0.0, 0.99, when={"opt": "sgd"}),
            "nesterov": hpo.Categorical([False, True], when={"opt": "sgd"}),
            "beta2": hpo.Float(0.9, 0.9999, when={"opt": "adam"}),
        }
    )
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = space.sample(rng)
        expected = {"sgd": {"opt", "momentum", "nesterov"}, "adam": {"opt", "beta2"}}[p["opt"]]
        assert set(p) == expected
        assert space.check_params(p) == p
    # the grid multiplies only the branch where a parameter is active: sgd 2 x 2, adam 2
    grid = list(space.grid(2))
    assert len(grid) == 2 * 2 + 2
    assert all(set(p) == ({"opt", "momentum", "nesterov"} if p["opt"] == "sgd" else {"opt", "beta2"}) for p in grid)
    with pytest.raises(OptregValueError, match=r"params\['beta2'\] is inactive"):
        space.check_params({"opt": "sgd", "momentum": 0.5, "nesterov": True, "beta2": 0.99})


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6))
def test_encoding_round_trips_every_configuration(seed):
    """decode(encode(p)) == p for any sampled configuration (integers, log scales, one-hot, conditions)."""
    space = Space(
        {
            "lr": hpo.Float(1e-4, 1.0, log=True),
            "width": hpo.Int(16, 256, log=True),
            "layers": hpo.Int(1, 4),
            "act": hpo.Categorical(["relu", "tanh", "gelu"]),
            "slope": hpo.Float(0.0, 0.3, when={"act": "relu"}),
            "epochs": hpo.Fixed(5),
        }
    )
    enc = space.encoding()
    p = space.sample(np.random.default_rng(seed))
    u = enc.encode(p)
    assert u.shape == (enc.n_dims,) and ((u >= 0) & (u <= 1)).all()
    back = enc.decode(u)
    assert back.keys() == p.keys()
    for k in p:
        assert type(back[k]) is type(p[k])
        assert back[k] == (pytest.approx(p[k], rel=1e-12) if isinstance(p[k], float) else p[k])
    np.testing.assert_allclose(enc.canonical(u[None])[0], u, atol=1e-12)


def test_canonical_snaps_integers_and_one_hot_groups():
    space = Space({"n": hpo.Int(0, 4), "c": hpo.Categorical(["a", "b", "c"])})
    enc = space.encoding()
    u = np.array([[0.51, 0.2, 0.7, 0.1]])  # n in [-0.5, 4.5]: 0.51 -> 2.05 -> 2; argmax of (0.2, 0.7, 0.1) -> "b"
    snapped = enc.canonical(u)
    assert enc.decode(snapped[0]) == {"n": 2, "c": "b"}
    np.testing.assert_allclose(snapped[0], [2.5 / 5, 0.0, 1.0, 0.0])
    assert {tuple(sorted(p.items())) for p in enc.neighbours({"n": 2, "c": "b"})} == {
        (("c", "b"), ("n", 1)),
        (("c", "b"), ("n", 3)),
        (("c", "a"), ("n", 2)),
        (("c", "c"), ("n", 2)),
    }


def test_canonical_of_a_conditional_space_equals_decode_then_encode():
    """The vectorized snapping agrees with decoding and re-encoding each row (conditions included)."""
    space = Space(
        {
            "opt": hpo.Categorical(["sgd", "adam", "rms"]),
            "momentum": hpo.Float(0.0, 0.99, when={"opt": ["sgd", "rms"]}),
            "layers": hpo.Int(1, 3),
            "width2": hpo.Int(8, 64, log=True, when={"layers": [2, 3]}),
            "drop2": hpo.Float(0.0, 0.5, when={"width2": [8, 9, 10]}),
            "fixed": hpo.Fixed(True),
            "only": hpo.Float(0.0, 1.0, when={"fixed": True}),
        }
    )
    enc = space.encoding()
    u = np.random.default_rng(0).random((300, enc.n_dims))
    rowwise = np.stack([enc.encode(enc.decode(row)) for row in u])
    np.testing.assert_allclose(enc.canonical(u), rowwise, atol=1e-12)
