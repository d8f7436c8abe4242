"""Optimizers as composable gradient transforms (chapter section 7.2), and a torch.optim adapter.

>>> import torch, optreg.optim as oo
>>> model = torch.nn.Linear(4, 2)
>>> opt = oo.create("adam", model.parameters(), lr=1e-3)          # or oo.Optimizer(params, oo.adam, lr=1e-3)
>>> custom = oo.chain(oo.clip_by_global_norm(1.0), oo.scale_by_adam(), oo.scale_by_learning_rate(1e-3))
"""

from optreg.optim.aliases import (
    adadelta,
    adafactor,
    adagrad,
    adam,
    adamw,
    asgd,
    delta_bar_delta,
    momentum,
    muon,
    nadam,
    nesterov,
    rmsprop,
    rprop,
    sgd,
)
from optreg.optim.averaging import averaged_parameters, load_averaged, polyak_average, scale_by_asgd, use_averaged
from optreg.optim.clipping import clip, clip_by_adaptive_norm, clip_by_global_norm, clip_by_norm, global_norm
from optreg.optim.combine import chain, masked, weights_only
from optreg.optim.matrix import (
    clip_by_block_rms,
    ema_momentum,
    newton_schulz,
    orthogonalize,
    scale_by_factored_rms,
    scale_by_param_block_rms,
    scale_by_relative_step,
    scale_by_shape,
)
from optreg.optim.optimizer import Optimizer
from optreg.optim.registry import available, create, get, register
from optreg.optim.second_order import scale_by_backtracking_linesearch, sgd_linesearch
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
    scale_by_delta_bar_delta,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rprop,
    trace,
)

__all__ = [
    "Optimizer",
    "Transform",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "add_l2",
    "asgd",
    "available",
    "averaged_parameters",
    "chain",
    "clip",
    "clip_by_adaptive_norm",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_norm",
    "create",
    "decay_weights",
    "delta_bar_delta",
    "ema_momentum",
    "get",
    "global_norm",
    "identity",
    "load_averaged",
    "masked",
    "momentum",
    "muon",
    "nadam",
    "nesterov",
    "newton_schulz",
    "orthogonalize",
    "polyak_average",
    "register",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_asgd",
    "scale_by_backtracking_linesearch",
    "scale_by_delta_bar_delta",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_param_block_rms",
    "scale_by_relative_step",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_shape",
    "sgd",
    "sgd_linesearch",
    "trace",
    "use_averaged",
    "weights_only",
]
