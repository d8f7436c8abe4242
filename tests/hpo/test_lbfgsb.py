"""Tests of the decoupled, batch-evaluated L-BFGS-B (optreg.hpo._lbfgsb), on both of its paths (SciPy's
reverse-communication ``setulb`` driven directly, and one thread per run).

Oracle: scipy.optimize.minimize(method="L-BFGS-B") run on each start alone, which the batched runs must
reproduce (each run is SciPy's own L-BFGS-B; only its evaluations are gathered).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from optreg.hpo import _lbfgsb
from optreg.hpo._lbfgsb import batched_lbfgsb

PATHS = pytest.mark.parametrize("direct", [True, False], ids=["setulb", "threads"])

CENTRES = np.array([[0.2, 0.8], [0.7, 0.1], [0.5, 0.5]])
BOUNDS = np.array([[0.0, 1.0], [0.0, 1.0]])


def _fun(rows, x):
    """A different badly scaled quadratic per start (row i has its own centre and curvature)."""
    c, w = CENTRES[rows % 3], 1.0 + 30.0 * (rows % 2)[:, None]
    d = x - c
    return (w * d**2).sum(1) + np.sin(3 * x).sum(1), 2 * w * d + 3 * np.cos(3 * x)


def test_scipy_of_this_install_is_driven_directly():
    """SciPy >= 1.15 (its C L-BFGS-B) has the reverse-communication setulb the direct path needs."""
    major, minor = (int(p) for p in scipy.__version__.split(".")[:2])
    assert (_lbfgsb._SETULB is not None) == ((major, minor) >= (1, 15))


@PATHS
@pytest.mark.parametrize(("maxiter", "gtol"), [(100, 1e-8), (3, 1e-8), (200, 1e-2)])
def test_batched_runs_equal_scipy_run_one_by_one(direct, maxiter, gtol):
    if direct and _lbfgsb._SETULB is None:
        pytest.skip("this SciPy has no reverse-communication setulb")
    x0 = np.asfortranarray(np.random.default_rng(0).random((7, 2)) * 1.2 - 0.1)  # some outside the box: clipped
    got_x, got_f = batched_lbfgsb(_fun, x0, BOUNDS, maxiter=maxiter, gtol=gtol, reverse_communication=direct)
    for i in range(len(x0)):
        def f(z, i=i):
            v, g = _fun(np.array([i]), z[None])
            return v[0], g[0]

        ref = scipy.optimize.minimize(f, x0[i], jac=True, method="L-BFGS-B", bounds=BOUNDS,
                                      options={"maxiter": maxiter, "gtol": gtol})  # fmt: skip
        np.testing.assert_allclose(got_x[i], ref.x, atol=1e-10)
        assert got_f[i] == pytest.approx(ref.fun, abs=1e-12)


@PATHS
def test_a_single_start_and_an_error_in_fun(direct):
    x, f = batched_lbfgsb(_fun, np.array([[0.9, 0.9]]), BOUNDS, reverse_communication=direct)
    assert x.shape == (1, 2) and np.isfinite(f).all()
    calls = []

    def bad(rows, x):
        calls.append(len(rows))
        if len(calls) == 2:
            raise ValueError("boom")
        return _fun(rows, x)

    with pytest.raises(ValueError, match="boom"):
        batched_lbfgsb(bad, np.zeros((3, 2)) + 0.5, BOUNDS, reverse_communication=direct)
