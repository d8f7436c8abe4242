"""Data for the chapter's experiments: datasets with fixed validation splits, and preprocessing (7.4).

- :func:`load` / :func:`available`: scikit-learn's digits and MNIST-1D (embedded or generated locally,
  never downloaded), or the user's own IDX directory, ``.npz`` or ``.csv`` file, as seeded
  train / validation / test :class:`Splits`; :func:`read_idx` / :func:`write_idx` for IDX files.
- :class:`MinMaxScaler` (eq. 7.37), :class:`StandardScaler` (eqs. 7.38-7.40), :class:`PCAWhitening`,
  :class:`ZCAWhitening`: scikit-learn transformers (clone, Pipeline, GridSearchCV) for numpy arrays and torch
  tensors.
- :mod:`optreg.data.augment` (7.7.5): seeded, composable rotations, flips, shifts, zooms, stretches and noise.
"""

from __future__ import annotations

from optreg.data import augment
from optreg.data.datasets import Split, Splits, available, load, read_idx, write_idx
from optreg.data.preprocess import (
    ConstantFeatureWarning,
    MinMaxScaler,
    NotFittedError,
    PCAWhitening,
    StandardScaler,
    ZCAWhitening,
)

__all__ = [
    "ConstantFeatureWarning",
    "MinMaxScaler",
    "NotFittedError",
    "PCAWhitening",
    "Split",
    "Splits",
    "StandardScaler",
    "ZCAWhitening",
    "augment",
    "available",
    "load",
    "read_idx",
    "write_idx",
]
