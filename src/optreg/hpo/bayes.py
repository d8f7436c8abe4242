"""Bayesian optimization by sequential model-based optimization (Algorithm 7.1): ``gp-ei``, ``gp-pi``, ``gp-ucb``.

Each step (Algorithm 7.1, lines 4-7) refits a Gaussian process (:mod:`optreg.hpo.gp`) to every complete
trial and proposes ``x' = argmax_x a(x, H)``. :class:`GPSampler` does one step on encoded points;
:class:`BayesOpt` is the method that feeds it the study's trials.

Maximizing the acquisition over a mixed space (:meth:`GPSampler.suggest`):

1. ``n_raw`` random encodable points (integers rounded, categoricals one-hot) are scored in one batch; the
   best ``n_starts`` and the incumbent are the starts.
2. Multi-start gradient ascent: the continuous coordinates of all starts form one ``(S, C)`` tensor and
   L-BFGS-B climbs the sum of their acquisitions (the starts do not interact, so one batched evaluation
   serves all: the batching of BoTorch's ``gen_candidates_scipy``). Integers are relaxed to their
   continuous range here; categoricals stay at the start's choice.
3. Each end point is snapped to an encodable one (integers rounded), and a discrete neighbourhood search
   follows from the best ones: change one categorical, or move one integer by one, while that improves
   the acquisition (all neighbours scored in one batch), then climb the continuous coordinates again.

Parallel suggestions (``n_workers > 1``, or several :meth:`~optreg.hpo.Study.ask` before a tell): the
running trials enter the GP with a constant lie, the worst value seen (Ginsbourger et al. 2010, "CL-max"),
so the acquisition near them collapses and workers do not duplicate each other; failed trials get the same
lie, so a region where the objective fails is not proposed again and again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.optimize
import scipy.stats
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from optreg._checks import check_choice, check_int, check_positive
from optreg.hpo import gp
from optreg.hpo.method import Method, register
from optreg.hpo.space import Encoding, Space
from optreg.hpo.trial import Proposal, Trial

__all__ = ["ACQUISITIONS", "BayesOpt", "GPSampler"]

ACQUISITIONS = ("ei", "pi", "ucb")
_DTYPE = torch.float64


class GPSampler:
    """One step of Bayesian optimization on the unit cube of ``encoding``.

    ``acquisition``: ``"ei"`` (log EI, eq. 7.57), ``"pi"`` (log PI) or ``"ucb"`` (with ``beta``).
    """

    def __init__(
        self,
        encoding: Encoding,
        acquisition: str = "ei",
        *,
        beta: float = 2.0,
        n_raw: int = 512,
        n_starts: int = 8,
        local_steps: int = 5,
    ) -> None:
        self.encoding = encoding
        self.acquisition = check_choice("gp", "acquisition", acquisition, ACQUISITIONS)
        self.beta = check_positive("gp", "beta", beta)
        self.n_raw = check_int("gp", "n_raw", n_raw, 1)
        self.n_starts = check_int("gp", "n_starts", n_starts, 1)
        self.local_steps = check_int("gp", "local_steps", local_steps, 0)
        d = encoding.n_dims
        cont = np.zeros(d, dtype=bool)
        for dim in encoding.dims:
            if dim.kind in ("float", "int"):
                cont[dim.start] = True
        self._cont = cont
        self.params_: gp.GPParams | None = None  # the last fit, for inspection

    # ------------------------------------------------------------------ the model
    def _acquisition(
        self, x: np.ndarray, y: np.ndarray, pending: np.ndarray, init: gp.GPParams | None
    ) -> Callable[[Tensor], Tensor]:
        """The acquisition ``(S, D) -> (S,)`` of the GP fitted to ``x`` ``(n, D)``, ``y`` ``(n,)`` (to
        minimize; warm start ``init``), conditioned on ``pending`` ``(p, D)`` with the constant lie ``max(y)``."""
        scale = y.std() if y.std() > 0 else 1.0
        ys = torch.tensor((y - y.mean()) / scale, dtype=_DTYPE)
        xt = torch.tensor(x, dtype=_DTYPE)
        params = gp.fit_params(xt, ys, init=init)
        self.params_ = params
        if len(pending):
            xt = torch.cat([xt, torch.tensor(pending, dtype=_DTYPE)])
            ys = torch.cat([ys, ys.max().expand(len(pending))])
        post = gp.condition(xt, ys, params)
        best = ys[: len(y)].min()
        kind, beta = self.acquisition, self.beta

        def acq(u: Tensor) -> Tensor:
            mean, var = gp.predict(post, u)
            if kind == "ei":
                return gp.log_ei(mean, var, best)
            if kind == "pi":
                return gp.log_pi(mean, var, best)
            return gp.ucb(mean, var, beta)

        return acq

    # ------------------------------------------------------------------ optimizing the acquisition
    def _score(self, acq: Callable[[Tensor], Tensor], u: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return acq(torch.tensor(u, dtype=_DTYPE)).numpy()

    def _climb(self, acq: Callable[[Tensor], Tensor], starts: np.ndarray) -> np.ndarray:
        """Batched L-BFGS-B on the continuous coordinates of ``starts`` ``(S, D)``; the others stay fixed."""
        cont = self._cont
        if not cont.any():
            return starts
        s, c = len(starts), int(cont.sum())
        fixed = torch.tensor(np.where(cont, 0.0, starts), dtype=_DTYPE)
        place = torch.tensor(np.eye(len(cont))[cont], dtype=_DTYPE)  # (C, D): continuous coordinate -> column

        def f(flat: np.ndarray) -> tuple[float, np.ndarray]:
            z = torch.tensor(flat.reshape(s, c), dtype=_DTYPE, requires_grad=True)
            value = -acq(fixed + z @ place).sum()
            value.backward()
            return value.item(), z.grad.numpy().ravel()

        x0 = starts[:, cont].ravel()
        res = scipy.optimize.minimize(
            f, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(x0), options={"maxiter": 60, "ftol": 1e-7}
        )
        out = starts.copy()
        out[:, cont] = res.x.reshape(s, c)
        return out

    def _local(self, acq: Callable[[Tensor], Tensor], u: np.ndarray, score: float) -> tuple[np.ndarray, float]:
        """Discrete neighbourhood search from the encodable point ``u`` ``(D,)``, alternating with climbs."""
        enc = self.encoding
        for _ in range(self.local_steps):
            neigh = enc.neighbours(enc.decode(u))
            if not neigh:
                break
            cand = np.stack([enc.encode(p) for p in neigh])
            scores = self._score(acq, cand)
            i = int(np.argmax(scores))
            if not scores[i] > score:
                break
            climbed = enc.canonical(self._climb(acq, cand[i : i + 1]))
            s2 = self._score(acq, climbed)[0]
            u, score = (climbed[0], s2) if s2 > scores[i] else (cand[i], scores[i])
        return u, score

    def suggest(
        self,
        x: np.ndarray,
        y: np.ndarray,
        pending: np.ndarray,
        rng: np.random.Generator,
        init: gp.GPParams | None = None,
    ) -> np.ndarray:
        """The next point (encodable, ``(D,)``) given observations ``x`` ``(n, D)``, ``y`` ``(n,)`` to minimize
        and ``pending`` ``(p, D)`` points being evaluated (``n >= 2``); ``init`` warm-starts the GP fit
        (the fit is in :attr:`params_` afterwards)."""
        enc = self.encoding
        acq = self._acquisition(x, y, pending, init)
        raw = enc.canonical(rng.random((self.n_raw, enc.n_dims)))
        raw_scores = self._score(acq, raw)
        top = np.argsort(-raw_scores)[: self.n_starts]
        starts = np.concatenate([raw[top], x[[int(np.argmin(y))]]])
        ends = enc.canonical(self._climb(acq, starts))
        cand = np.concatenate([ends, raw[top]])
        scores = self._score(acq, cand)
        order = np.argsort(-scores)[:3]
        results = [self._local(acq, cand[i], scores[i]) for i in order]
        cand = np.concatenate([cand, np.stack([u for u, _ in results])])
        scores = np.concatenate([scores, [s for _, s in results]])
        seen = np.concatenate([x, pending]) if len(pending) else x
        for i in np.argsort(-scores):
            if np.abs(seen - cand[i]).max(axis=1).min() > 1e-9:
                return cand[i]
        for u in enc.canonical(rng.random((64, enc.n_dims))):  # every candidate was tried: explore
            if np.abs(seen - u).max(axis=1).min() > 1e-9:
                return u
        return cand[int(np.argmax(scores))]


class BayesOpt(Method):
    """SMBO (Algorithm 7.1) with a GP surrogate; the first ``n_startup`` trials (default ``2 (D + 1)``
    with ``D`` the encoded dimension, at most 10) are a scrambled Sobol sequence of the unit cube."""

    acquisition: ClassVar[str]
    _beta: float = 2.0

    def __init__(
        self, space: Space, *, seed: int, n_trials: int | None, direction: str, n_startup: int | None = None
    ) -> None:
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction)
        self.encoding = space.encoding()
        d = self.encoding.n_dims
        self.n_startup = min(10, 2 * (d + 1)) if n_startup is None else check_int(self.name, "n_startup", n_startup, 2)
        self.sampler = GPSampler(self.encoding, self.acquisition, beta=self._beta)
        if d:
            m = max(1, math.ceil(math.log2(self.n_startup)))
            self._sobol = scipy.stats.qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)
        else:
            self._sobol = np.zeros((0, 0))

    def identity(self) -> dict[str, Any]:
        return {"n_startup": self.n_startup, "beta": self._beta} if self.acquisition == "ucb" else {
            "n_startup": self.n_startup
        }

    def propose(self, trials: Sequence[Trial]) -> Proposal | None:
        if self.capped(trials):
            return None
        number = len(trials)
        done = [t for t in trials if t.state == "complete"]
        enc = self.encoding
        if enc.n_dims == 0:
            return Proposal(self.space.sample(self.rng(number)))
        if number < self.n_startup or len(done) < 2:
            if number < len(self._sobol):
                return Proposal(enc.decode(self._sobol[number]))
            return Proposal(self.space.sample(self.rng(number)))
        x = np.stack([enc.encode(t.params) for t in done])
        y = np.array([self.loss(t) for t in done])
        others = [t for t in trials if t.state != "complete"]
        pending = np.stack([enc.encode(t.params) for t in others]) if others else np.zeros((0, enc.n_dims))
        # the previous fit, stored with its trial, warm-starts this one (so a resumed study fits the same)
        warm = next((t.meta["gp"] for t in reversed(trials) if "gp" in t.meta), None)
        with threadpool_limits(1):  # BLAS threads only slow down matrices this small
            u = self.sampler.suggest(x, y, pending, self.rng(number), None if warm is None else gp.unpack(warm))
        return Proposal(enc.decode(u), meta={"gp": gp.pack(self.sampler.params_)})


@register
class ExpectedImprovement(BayesOpt):
    """``gp-ei``: log expected improvement, eq. (7.57)."""

    name = "gp-ei"
    acquisition = "ei"


@register
class ProbabilityOfImprovement(BayesOpt):
    """``gp-pi``: log probability of improvement."""

    name = "gp-pi"
    acquisition = "pi"


@register
class UpperConfidenceBound(BayesOpt):
    """``gp-ucb``: the GP upper confidence bound ``-mean + sqrt(beta) sigma`` (``beta`` default 2)."""

    name = "gp-ucb"
    acquisition = "ucb"

    def __init__(
        self,
        space: Space,
        *,
        seed: int,
        n_trials: int | None,
        direction: str,
        n_startup: int | None = None,
        beta: float = 2.0,
    ) -> None:
        self._beta = check_positive("gp-ucb", "beta", beta)
        super().__init__(space, seed=seed, n_trials=n_trials, direction=direction, n_startup=n_startup)
