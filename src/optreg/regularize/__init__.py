"""Regularization (section 7.7, file 004): weight penalties, the max-norm constraint, label smoothing,
knowledge distillation, FitNets hints and noise injection.

>>> import torch, optreg.regularize as reg
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> penalty = reg.l2(1e-4)                  # lambda ||W||^2 over the weights only (eq. 7.58); Trainer(penalty=...)
>>> reg.max_norm_(model, 3.0)                # every unit's incoming weights to norm <= 3, in place

Dropout and its recurrent variants are layers, in :mod:`optreg.nn.dropout`; the proximal l1 step (exact zeros)
is :func:`optreg.optim.prox_l1`; Prechelt's early-stopping criteria are options of
:class:`optreg.train.EarlyStopping`.
"""

from __future__ import annotations

from optreg.regularize.losses import (
    distillation_loss,
    hint_loss,
    hint_regressor,
    label_smoothing_cross_entropy,
    smooth_labels,
)
from optreg.regularize.noise import GaussianNoise, WeightNoise, gaussian_noise, label_noise, perturbed_weights
from optreg.regularize.penalties import (
    L1,
    L2,
    PENALTIES,
    ElasticNet,
    elastic_net,
    l1,
    l2,
    max_norm_,
    select_parameters,
)

__all__ = [
    "L1",
    "L2",
    "PENALTIES",
    "ElasticNet",
    "GaussianNoise",
    "WeightNoise",
    "distillation_loss",
    "elastic_net",
    "gaussian_noise",
    "hint_loss",
    "hint_regressor",
    "l1",
    "l2",
    "label_noise",
    "label_smoothing_cross_entropy",
    "max_norm_",
    "perturbed_weights",
    "select_parameters",
    "smooth_labels",
]
