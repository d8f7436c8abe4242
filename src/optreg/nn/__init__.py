"""Neural-network building blocks: models built from a spec (:mod:`optreg.nn.models`) and layer-wise
normalization (:mod:`optreg.nn.norm`, section 7.5)."""

from __future__ import annotations

from optreg.nn.models import (
    ACTIVATIONS,
    NORMS,
    NORMS_BY_KIND,
    SequenceClassifier,
    available,
    build,
    count_parameters,
    describe,
    make_activation,
)
from optreg.nn.norm import (
    BatchNorm,
    LayerNorm,
    LayerNormRNN,
    LayerNormRNNCell,
    LocalResponseNorm,
    recompute_batchnorm_statistics,
    weight_norm,
)

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "NORMS_BY_KIND",
    "BatchNorm",
    "LayerNorm",
    "LayerNormRNN",
    "LayerNormRNNCell",
    "LocalResponseNorm",
    "SequenceClassifier",
    "available",
    "build",
    "count_parameters",
    "describe",
    "make_activation",
    "recompute_batchnorm_statistics",
    "weight_norm",
]
