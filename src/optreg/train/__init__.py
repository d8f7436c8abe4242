"""The training engine: a plain mini-batch loop with callbacks, checkpoints and a metric history.

>>> from optreg.train import Trainer, EarlyStopping
>>> trainer = Trainer(model, optimizer, batch_size=32, epochs=50,
...                   callbacks=[EarlyStopping("val_loss", patience=5)])     # doctest: +SKIP
>>> history = trainer.fit(splits.train, splits.val)                         # doctest: +SKIP
"""

from __future__ import annotations

from optreg.train.callbacks import (
    MONITORS,
    Callback,
    Checkpoint,
    EarlyStopping,
    Lambda,
    Progress,
    ReduceLROnPlateau,
    format_epoch,
)
from optreg.train.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from optreg.train.ensemble import Ensemble, Snapshots, WeightAveraging
from optreg.train.trainer import EPOCH_FIELDS, ITERATION_FIELDS, METRICS, History, Trainer

__all__ = [
    "EPOCH_FIELDS",
    "FORMAT",
    "ITERATION_FIELDS",
    "METRICS",
    "MONITORS",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "Ensemble",
    "History",
    "Lambda",
    "Progress",
    "ReduceLROnPlateau",
    "Snapshots",
    "Trainer",
    "WeightAveraging",
    "format_epoch",
    "load_checkpoint",
    "save_checkpoint",
]
