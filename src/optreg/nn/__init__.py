"""Neural-network building blocks: models built from a spec (:mod:`optreg.nn.models`)."""

from __future__ import annotations

from optreg.nn.models import (
    ACTIVATIONS,
    NORMS,
    SequenceClassifier,
    available,
    build,
    count_parameters,
    describe,
    make_activation,
)

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "SequenceClassifier",
    "available",
    "build",
    "count_parameters",
    "describe",
    "make_activation",
]
