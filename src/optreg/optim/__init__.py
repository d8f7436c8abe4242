"""Optimizers as composable gradient transforms (chapter section 7.2), and a torch.optim adapter.

>>> import torch, optreg.optim as oo
>>> model = torch.nn.Linear(4, 2)
>>> opt = oo.create("adam", model.parameters(), lr=1e-3)          # or oo.Optimizer(params, oo.adam, lr=1e-3)
>>> custom = oo.chain(oo.clip_by_global_norm(1.0), oo.scale_by_adam(), oo.scale_by_learning_rate(1e-3))
"""

from optreg.optim.aliases import (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    delta_bar_delta,
    momentum,
    nadam,
    nesterov,
    radam,
    rmsprop,
    sgd,
)
from optreg.optim.clipping import clip, clip_by_adaptive_norm, clip_by_global_norm, clip_by_norm, global_norm
from optreg.optim.combine import chain, masked, weights_only
from optreg.optim.optimizer import Optimizer
from optreg.optim.proximal import prox_l1
from optreg.optim.registry import available, create, get, register
from optreg.optim.second_order import (
    bfgs,
    cg,
    coordinate_descent,
    lbfgs,
    newton,
    newton_cg,
    scale_by_backtracking_linesearch,
    sgd_linesearch,
    strong_wolfe,
)
from optreg.optim.torch_compat import from_torch, torch_hparams
from optreg.optim.transforms import (
    Transform,
    add_decayed_weights,
    add_l2,
    decay_weights,
    identity,
    scale,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_adamax,
    scale_by_delta_bar_delta,
    scale_by_learning_rate,
    scale_by_radam,
    scale_by_rms,
    trace,
)

__all__ = [
    "bfgs",
    "cg",
    "coordinate_descent",
    "lbfgs",
    "newton",
    "newton_cg",
    "strong_wolfe",
    "Optimizer",
    "Transform",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "add_l2",
    "available",
    "chain",
    "clip",
    "clip_by_adaptive_norm",
    "clip_by_global_norm",
    "clip_by_norm",
    "create",
    "decay_weights",
    "delta_bar_delta",
    "from_torch",
    "get",
    "global_norm",
    "identity",
    "masked",
    "momentum",
    "nadam",
    "nesterov",
    "prox_l1",
    "radam",
    "register",
    "rmsprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_backtracking_linesearch",
    "scale_by_delta_bar_delta",
    "scale_by_learning_rate",
    "scale_by_radam",
    "scale_by_rms",
    "sgd",
    "sgd_linesearch",
    "torch_hparams",
    "trace",
    "weights_only",
]
