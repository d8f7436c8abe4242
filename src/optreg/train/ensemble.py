r"""Model ensembles (file 001 "模型集成", file 004 "模型集成"): several models, one averaged prediction.

File 001: train several independent models and average their predictions at test time; accuracy grows
with the number of members (with diminishing returns), and more diverse members help more. Its four
recipes, and file 004's fifth, each a constructor or a callback here:

1. the same model from different initializations: ``Ensemble(models)``, or
   :meth:`Ensemble.from_initializations` (``fit(seed) -> model`` per seed);
2. the best few models of a hyperparameter search: :meth:`Ensemble.from_study` (the ``k`` best trials of an
   :mod:`optreg.hpo` study, each trained again from its parameters), or :meth:`Ensemble.top_k` (models already
   trained, and their scores);
3. snapshots of one run ("记录点", e.g. at the end of several epochs): the Trainer callback
   :class:`Snapshots` (``Snapshots(epochs=[10, 20, 30]).ensemble()``);
4. a running average of the parameters during training (Polyak & Juditsky 1992 averaging, or an
   exponential moving average): the Trainer callback :class:`WeightAveraging`, built on
   ``torch.optim.swa_utils.AveragedModel``; it gives *one* model, the "smoothed" weights;
5. (file 004) members trained on bootstrap resamples of the training set, whose spread measures the
   model's uncertainty (Efron 1979; Breiman 1996, bagging; Lakshminarayanan et al. 2017):
   :func:`bootstrap_indices` and :meth:`Ensemble.from_bootstrap`.

The ensemble averages **probabilities**, not logits: with members :math:`f_m` and :math:`M` of them,

.. math::  \bar p(y \mid x) = \frac{1}{M} \sum_{m=1}^{M} \operatorname{softmax}(f_m(x))_y .

It reports accuracy, its spread across members and its calibration (the expected calibration error,
:func:`expected_calibration_error`; Naeini et al. 2015, Guo et al. 2017).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from optreg._checks import check_choice, check_int, check_unit
from optreg.data.datasets import Split
from optreg.errors import OptregTypeError, OptregValueError
from optreg.nn import norm as _norm
from optreg.train.batches import _as_pair as _as_split
from optreg.train.callbacks import Callback

if TYPE_CHECKING:
    from optreg.train.trainer import Trainer

__all__ = [
    "Ensemble",
    "Snapshots",
    "WeightAveraging",
    "bootstrap_indices",
    "expected_calibration_error",
    "reliability_bins",
]


# ----------------------------------------------------------------------------------------- calibration


def _check_probabilities(owner: str, probabilities: Any, targets: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(probabilities, Tensor) or probabilities.ndim != 2 or not probabilities.is_floating_point():
        got = tuple(probabilities.shape) if isinstance(probabilities, Tensor) else type(probabilities).__name__
        raise OptregValueError(f"{owner}: probabilities must be a float tensor (N, K), got {got}")
    if not isinstance(targets, Tensor) or targets.shape != probabilities.shape[:1] or targets.is_floating_point():
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise OptregValueError(f"{owner}: targets must be integer class labels (N,) matching probabilities, got {got}")
    return probabilities, targets


def reliability_bins(probabilities: Tensor, targets: Tensor, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    r"""The reliability diagram: ``(confidence, accuracy, count)`` per bin, each a float64 tensor ``(n_bins,)``.

    An example's confidence is its largest probability :math:`\hat p_i = \max_k p_{ik}`, its prediction
    :math:`\hat y_i = \arg\max_k p_{ik}`. Bin :math:`b` (equal width) holds the examples with
    :math:`\hat p_i \in (b/B, (b+1)/B]`; ``confidence[b]`` and ``accuracy[b]`` are the mean confidence and
    the fraction of correct predictions in it (0 for an empty bin, whose ``count`` is 0). Guo et al.
    (2017), "On calibration of modern neural networks", section 2.
    """
    probabilities, targets = _check_probabilities("reliability_bins", probabilities, targets)
    n_bins = check_int("reliability_bins", "n_bins", n_bins, 1)
    confidence, predicted = probabilities.detach().to(torch.float64).max(dim=1)
    correct = (predicted == targets.to(predicted.device)).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=confidence.device)
    bins = torch.bucketize(confidence, edges[1:-1], right=False)  # edges[b-1] < c <= edges[b]
    count = torch.bincount(bins, minlength=n_bins).to(torch.float64)
    sums = torch.stack([torch.bincount(bins, w, minlength=n_bins) for w in (confidence, correct)])
    means = sums / count.clamp(min=1)
    return means[0].cpu(), means[1].cpu(), count.cpu()


def expected_calibration_error(probabilities: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    r"""Expected calibration error with ``n_bins`` equal-width confidence bins (Naeini et al. 2015):

    .. math::  \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{N} \, \big| \mathrm{acc}(b) - \mathrm{conf}(b) \big|

    (bins as in :func:`reliability_bins`). 0 for a perfectly calibrated model; at most 1.
    """
    confidence, accuracy, count = reliability_bins(probabilities, targets, n_bins)
    return float((count * (accuracy - confidence).abs()).sum() / count.sum())


# ----------------------------------------------------------------------------------------- the ensemble


def _check_models(owner: str, models: Any) -> list[nn.Module]:
    if isinstance(models, nn.Module) or not isinstance(models, Iterable):
        raise OptregTypeError(f"{owner}: models must be a sequence of torch.nn.Module, got {type(models).__name__}")
    models = list(models)
    if not models:
        raise OptregValueError(f"{owner}: models must hold at least one model, got none")
    for m in models:
        if not isinstance(m, nn.Module):
            raise OptregTypeError(f"{owner}: every model must be a torch.nn.Module, got {type(m).__name__}")
    return models


class Ensemble(nn.Module):
    r"""An ensemble whose prediction is the mean of its members' probabilities (module docstring).

    ``Ensemble(models)`` (recipe 1: the same model trained from different initializations). As a module,
    ``ensemble(x)`` returns :math:`\log \bar p(y \mid x)` (``logsumexp_m log_softmax(f_m(x)) - log M``,
    differentiable): its softmax is the averaged probability, so ``F.cross_entropy(ensemble(x), y)`` is the
    negative log-likelihood of the averaged prediction and the Trainer's ``evaluate`` works on it.

    The prediction methods run the members in evaluation mode (dropout off, batch norms on their running
    statistics), without gradients, ``batch_size`` examples at a time, and restore every module's mode.
    ``members`` is the ``nn.ModuleList`` of the models.
    """

    def __init__(self, models: Iterable[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(_check_models("ensemble", models))

    def __len__(self) -> int:
        return len(self.members)

    # ---------------------------------------------------------------- recipes
    @classmethod
    def from_initializations(cls, fit: Callable[[int], nn.Module], seeds: Iterable[int]) -> Ensemble:
        """Recipe 1: ``fit(seed)`` builds and trains one member per seed (file 001: the best hyperparameters,
        different initializations; the diversity comes from the initialization, and the data order, only)."""
        if not callable(fit):
            raise OptregTypeError(f"ensemble.from_initializations: fit must be callable seed -> model, got {fit!r}")
        return cls([fit(check_int("ensemble.from_initializations", "seed", s)) for s in seeds])

    @classmethod
    def top_k(cls, models: Sequence[nn.Module], scores: Sequence[float], k: int, *, mode: str = "max") -> Ensemble:
        """Recipe 2: the ``k`` models with the best ``scores`` (e.g. validation accuracies, ``mode="max"``, or
        losses, ``mode="min"``) of a search. Ties keep the earlier model. File 001: more diverse than
        recipe 1, at the risk of including weaker models."""
        owner = "ensemble.top_k"
        models = _check_models(owner, models)
        check_choice(owner, "mode", mode, ("max", "min"))
        scores = list(scores)
        if len(scores) != len(models):
            raise OptregValueError(f"{owner}: scores must have one value per model ({len(models)}), got {len(scores)}")
        for s in scores:
            if isinstance(s, bool) or not isinstance(s, Real) or math.isnan(s):
                raise OptregValueError(f"{owner}: scores must be real numbers, got {s!r}")
        k = check_int(owner, "k", k, 1)
        if k > len(models):
            raise OptregValueError(f"{owner}: k must be at most the number of models ({len(models)}), got {k}")
        sign = -1.0 if mode == "max" else 1.0
        order = sorted(range(len(models)), key=lambda i: sign * float(scores[i]))  # stable: ties keep order
        return cls([models[i] for i in order[:k]])

    @classmethod
    def from_study(
        cls,
        study: Any,
        k: int,
        fit: Callable[..., nn.Module] | None = None,
        *,
        spec: Callable[..., Mapping[str, Any]] | None = None,
        data: Any = None,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> Ensemble:
        """Recipe 2 from a search: one member per trial of ``study.top_trials(k)``, the ``k`` best complete
        trials by the study's direction (:meth:`optreg.hpo.Study.top_trials`: with budgets, among the largest
        budget's; ties keep the lower trial number), best first. Each member is trained again from its
        trial's parameters, in one of two ways:

        - ``fit(params) -> model``: the caller's builder trains and returns the model;
        - ``spec(params) -> run spec``: ``optreg.train.run(spec(params), data, seed=seed, device=device).model``
          (``data=None`` loads the spec's data section; ``seed=None`` takes the spec's ``train.seed``). An
          objective that returned a validation score of ``run(spec(params), data, seed=seed)`` gets back the
          very model it scored (same seed, same spec, same numbers).

        A trial run with a budget (Hyperband, successive halving) passes it on as ``budget=`` (the
        objective's convention). ``study`` is duck-typed (the engine's train/ does not import hpo/): any
        object whose ``top_trials(k)`` returns trials with a ``params`` dict (and a ``budget``, or none)."""
        owner = "ensemble.from_study"
        if (fit is None) == (spec is None):
            raise OptregValueError(f"{owner}: give exactly one of fit (params -> model) and spec (params -> spec)")
        name, build, what = ("fit", fit, "model") if fit is not None else ("spec", spec, "run spec")
        if not callable(build):
            raise OptregTypeError(f"{owner}: {name} must be callable params -> {what}, got {build!r}")
        top = getattr(study, "top_trials", None)
        if not callable(top):
            raise OptregTypeError(f"{owner}: study must have top_trials(k) (an optreg.hpo.Study), got {study!r}")
        if seed is not None:
            seed = check_int(owner, "seed", seed, 0)
        members = []
        for trial in top(check_int(owner, "k", k, 1)):
            budget = getattr(trial, "budget", None)
            kwargs = {} if budget is None else {"budget": budget}
            if fit is not None:
                members.append(fit(dict(trial.params), **kwargs))
            else:
                from optreg.train.run import run  # the one path from a spec to a trained model

                members.append(run(spec(dict(trial.params), **kwargs), data, seed=seed, device=device).model)
        return cls(members)

    @classmethod
    def from_bootstrap(
        cls, fit: Callable[[Split, int], nn.Module], train: Any, members: int, *, seed: int = 0
    ) -> Ensemble:
        """Recipe 5 (file 004): member ``m`` is ``fit(Split(x[idx_m], y[idx_m]), m)``, trained on the bootstrap
        resample ``idx_m = bootstrap_indices(N, members, seed=seed)[m]`` of ``train`` (a Split or ``(x, y)``).
        The members' spread (:meth:`predict_proba` with ``return_std=True``) estimates the uncertainty."""
        if not callable(fit):
            raise OptregTypeError(
                f"ensemble.from_bootstrap: fit must be callable (split, member) -> model, got {fit!r}"
            )
        x, y = _as_split("ensemble.from_bootstrap: train", train)
        indices = bootstrap_indices(x.shape[0], members, seed=seed)
        return cls([fit(Split(x[idx.to(x.device)], y[idx.to(y.device)]), m) for m, idx in enumerate(indices)])

    # ---------------------------------------------------------------- prediction
    def forward(self, x: Tensor) -> Tensor:
        logp = torch.stack([F.log_softmax(m(x), dim=-1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))

    @torch.no_grad()
    def member_probabilities(self, x: Tensor, *, batch_size: int = 1024) -> Tensor:
        """``softmax(f_m(x))`` of every member: ``(M, N, K)``, in evaluation mode."""
        if not isinstance(x, Tensor) or x.ndim == 0:
            raise OptregValueError(f"ensemble: x must be a batch tensor (N, ...), got {x!r}")
        batch_size = check_int("ensemble", "batch_size", batch_size, 1)
        modes = [(m, m.training) for m in self.modules()]
        try:
            self.eval()
            return torch.cat(
                [torch.stack([F.softmax(m(xb), dim=-1) for m in self.members]) for xb in x.split(batch_size)], dim=1
            )
        finally:
            for m, training in modes:
                m.training = training

    def predict_proba(
        self, x: Tensor, *, return_std: bool = False, batch_size: int = 1024
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""The averaged probabilities :math:`\bar p` ``(N, K)``; with ``return_std`` also their standard
        deviation across the members ``(N, K)`` (``correction=0``: the members' spread, 0 for one member)."""
        p = self.member_probabilities(x, batch_size=batch_size)
        mean = p.mean(dim=0)
        return (mean, p.std(dim=0, correction=0)) if return_std else mean

    def predict(self, x: Tensor, *, batch_size: int = 1024) -> Tensor:
        """The predicted classes ``argmax_k p̄_k`` ``(N,)``."""
        return self.predict_proba(x, batch_size=batch_size).argmax(dim=-1)  # type: ignore[union-attr]

    def evaluate(self, split: Any, *, n_bins: int = 15, batch_size: int = 1024) -> dict[str, Any]:
        r"""Scores of the ensemble on ``split`` (a Split or ``(x, y)`` with integer labels):

        - ``accuracy``: of the averaged prediction; ``nll``: :math:`-\frac1N\sum_i \log \bar p(y_i \mid x_i)`;
        - ``ece``: :func:`expected_calibration_error` of :math:`\bar p` with ``n_bins`` bins;
        - ``member_accuracy``: each member's accuracy (a list), ``mean_member_accuracy`` their mean;
        - ``spread``: the mean over examples of the members' standard deviation (``correction=0``) of the
          probability of the ensemble's predicted class;
        - ``disagreement``: the fraction of (example, pair of distinct members) whose predicted classes
          differ (0 for one member; Fort et al. 2019).
        """
        x, y = _as_split("ensemble.evaluate", split)
        if y.is_floating_point():
            raise OptregValueError("ensemble.evaluate: the labels must be integer classes, got floating-point ones")
        p = self.member_probabilities(x, batch_size=batch_size)
        y = y.to(p.device)
        mean = p.mean(dim=0)
        predicted = mean.argmax(dim=-1)
        votes = p.argmax(dim=-1)  # (M, N)
        m, n = votes.shape
        std = p.std(dim=0, correction=0).gather(1, predicted[:, None])[:, 0]
        if m > 1:  # ordered pairs that agree: sum_k c_k (c_k - 1), c_k = members voting k
            counts = F.one_hot(votes, p.shape[-1]).sum(dim=0).to(torch.float64)  # (N, K)
            disagreement = 1.0 - float((counts * (counts - 1)).sum()) / (n * m * (m - 1))
        else:
            disagreement = 0.0
        member_accuracy = (votes == y).to(torch.float64).mean(dim=1).tolist()
        return {
            "accuracy": float((predicted == y).to(torch.float64).mean()),
            "nll": float(-mean.to(torch.float64).gather(1, y[:, None]).log().mean()),
            "ece": expected_calibration_error(mean, y, n_bins),
            "member_accuracy": member_accuracy,
            "mean_member_accuracy": math.fsum(member_accuracy) / m,
            "spread": float(std.to(torch.float64).mean()),
            "disagreement": disagreement,
        }


# ----------------------------------------------------------------------------------------- bootstrap


def bootstrap_indices(n: int, members: int, *, size: int | None = None, seed: int | torch.Generator = 0) -> Tensor:
    """``members`` bootstrap resamples of ``range(n)``: an int64 tensor ``(members, size)`` of indices drawn
    uniformly **with replacement** (``size`` defaults to ``n``; Efron 1979). ``seed`` is an integer or a
    ``torch.Generator``: the same seed gives the same indices. A resample of size ``n`` leaves out about
    ``(1 - 1/n)^n ~ 1/e ~ 37%`` of the examples (its out-of-bag set)."""
    owner = "bootstrap_indices"
    n = check_int(owner, "n", n, 1)
    members = check_int(owner, "members", members, 1)
    size = n if size is None else check_int(owner, "size", size, 1)
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator().manual_seed(check_int(owner, "seed", seed, 0))
    return torch.randint(0, n, (members, size), generator=generator, device=generator.device)


# ----------------------------------------------------------------------------------------- callbacks


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Snapshots(Callback):
    """Recipe 3 (file 001, "一个模型设置多个记录点"): keep copies of the model's ``state_dict`` at chosen epochs
    of one run, and make an ensemble of them.

    ``epochs``: the epoch counts after which to snapshot (``5`` = after the 5th epoch; integers >= 1). After
    ``fit``, ``states`` maps each reached epoch to its copied ``state_dict``; :meth:`models` rebuilds them
    (deep copies of the trained model, or of ``template``) and :meth:`ensemble` averages them. The
    snapshots are saved in checkpoints, so a resumed run keeps them.
    """

    def __init__(self, epochs: Iterable[int]) -> None:
        if isinstance(epochs, int) or not isinstance(epochs, Iterable):
            raise OptregValueError(f"snapshots: epochs must be a list of epoch counts >= 1, got {epochs!r}")
        chosen = sorted({check_int("snapshots", "epochs", e, 1) for e in epochs})
        if not chosen:
            raise OptregValueError("snapshots: epochs must name at least one epoch, got none")
        self.epochs = tuple(chosen)
        self.states: dict[int, dict[str, Tensor]] = {}
        self._template: nn.Module | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.states = {}
        self._template = trainer.model

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.epoch in self.epochs:
            self.states[trainer.epoch] = _copy_state(trainer.model)

    def models(self, template: nn.Module | None = None) -> list[nn.Module]:
        """One model per snapshot, in epoch order: deep copies of ``template`` (default: the trained model)
        with the snapshot's state loaded."""
        template = self._template if template is None else template
        if not self.states or template is None:
            raise OptregValueError(f"snapshots: no snapshot was taken (epochs {list(self.epochs)}); run fit first")
        out = []
        for epoch in sorted(self.states):
            model = copy.deepcopy(template)
            model.load_state_dict(self.states[epoch])
            out.append(model)
        return out

    def ensemble(self, template: nn.Module | None = None) -> Ensemble:
        """The :class:`Ensemble` of the snapshots."""
        return Ensemble(self.models(template))

    def state_dict(self) -> dict[str, Any]:
        return {"states": self.states}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.states = dict(state["states"])


class WeightAveraging(Callback):
    r"""Recipe 4 (file 001, "在训练的时候跑参数的平均值"; file 002's Polyak averaging): a running average of the
    parameter iterates :math:`\theta_t`, kept by ``torch.optim.swa_utils.AveragedModel``.

    - ``method="polyak"``: :math:`\bar\theta_T = \frac{1}{T}\sum_{t=1}^{T} \theta_t` (Polyak & Juditsky 1992;
      the SWA average, Izmailov et al. 2018);
    - ``method="ema"``: :math:`\bar\theta_1 = \theta_1`, :math:`\bar\theta_t = d\,\bar\theta_{t-1} + (1-d)\,\theta_t`
      with ``decay`` :math:`d` in [0, 1).

    :math:`\theta_t` are the parameters after each update with ``step >= start_step`` (the first averaged
    iterate is :math:`\theta_1`). The average is updated in ``on_step_end``, i.e. after every update the
    Trainer logs: with ``log_every=k`` it averages every k-th iterate. ``use_buffers=True`` averages the
    buffers too (batch norms' running statistics); by default the averaged model's buffers are copied from
    the trained model at every update (``AveragedModel``'s behaviour). Either way a batch norm's statistics
    belong to other weights than the averaged ones (Izmailov et al. 2018 recompute them): pass
    ``batchnorm_data`` (the training inputs or split) to recompute them exactly at the end of ``fit``
    (:func:`optreg.nn.norm.recompute_batchnorm_statistics`), or call :meth:`recompute_batchnorm_statistics`.

    ``averaged`` is the ``AveragedModel`` (``n_averaged`` counts the iterates), ``model`` the averaged
    network itself (``averaged.module``). The average is saved in checkpoints.
    """

    def __init__(
        self,
        method: str = "polyak",
        *,
        decay: float = 0.999,
        start_step: int = 0,
        use_buffers: bool = False,
        batchnorm_data: Any = None,
    ) -> None:
        owner = "weight_averaging"
        self.method = check_choice(owner, "method", method, ("polyak", "ema"))
        self.decay = check_unit(owner, "decay", decay)
        self.start_step = check_int(owner, "start_step", start_step, 0)
        if not isinstance(use_buffers, bool):
            raise OptregValueError(f"{owner}: use_buffers must be true or false, got {use_buffers!r}")
        self.use_buffers = use_buffers
        self.batchnorm_data = batchnorm_data
        self.averaged: AveragedModel | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        multi_avg_fn = get_ema_multi_avg_fn(self.decay) if self.method == "ema" else None
        self.averaged = AveragedModel(trainer.model, multi_avg_fn=multi_avg_fn, use_buffers=self.use_buffers)

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["step"] >= self.start_step:
            self._require().update_parameters(trainer.model)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.batchnorm_data is not None:
            self.recompute_batchnorm_statistics(self.batchnorm_data)

    def _require(self) -> AveragedModel:
        if self.averaged is None:
            raise OptregValueError("weight_averaging: there is no average yet; pass the callback to a Trainer and fit")
        return self.averaged

    @property
    def model(self) -> nn.Module:
        """The averaged network (``averaged.module``)."""
        return self._require().module

    def recompute_batchnorm_statistics(self, data: Any, *, batch_size: int = 1024) -> nn.Module:
        """Give the averaged model's batch norms the exact statistics of ``data`` under the averaged weights
        (:func:`optreg.nn.norm.recompute_batchnorm_statistics`); returns :attr:`model`."""
        return _norm.recompute_batchnorm_statistics(self.model, data, batch_size=batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": None if self.averaged is None else self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["averaged"] is not None:
            self._require().load_state_dict(state["averaged"])
