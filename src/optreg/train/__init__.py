"""The training engine: a plain mini-batch loop with callbacks, checkpoints and a metric history, and
:func:`run`, the one path from a run description (a spec: a plain dict shaped like a TOML config) to a
trained, evaluated model.

>>> from optreg.train import Trainer, EarlyStopping
>>> trainer = Trainer(model, optimizer, batch_size=32, epochs=50,
...                   callbacks=[EarlyStopping("val_loss", patience=5)])     # doctest: +SKIP
>>> history = trainer.fit(splits.train, splits.val)                         # doctest: +SKIP
>>> result = run({"model": {"hidden": [128]}, "optimizer": {"name": "adam", "lr": 1e-3}},
...              splits, seed=0)                                             # doctest: +SKIP
>>> result.test_accuracy, result.history.epochs[-1]                         # doctest: +SKIP
"""

from __future__ import annotations

from optreg.train.batches import Batches, LoaderBatches, TensorBatches
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
from optreg.train.pretrain import PretrainResult, greedy_layerwise

# The function ``run`` is bound over the submodule's name here; the module stays importable as
# ``optreg.train.run`` (``from optreg.train.run import RunResult``).
from optreg.train.run import RunResult, build_model, check_spec, complete_model_spec, run
from optreg.train.trainer import EPOCH_FIELDS, ITERATION_FIELDS, METRICS, History, Trainer, transform_seed

__all__ = [
    "EPOCH_FIELDS",
    "FORMAT",
    "ITERATION_FIELDS",
    "METRICS",
    "MONITORS",
    "Batches",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "Ensemble",
    "History",
    "Lambda",
    "LoaderBatches",
    "PretrainResult",
    "Progress",
    "ReduceLROnPlateau",
    "RunResult",
    "Snapshots",
    "TensorBatches",
    "Trainer",
    "WeightAveraging",
    "build_model",
    "check_spec",
    "complete_model_spec",
    "format_epoch",
    "greedy_layerwise",
    "load_checkpoint",
    "run",
    "save_checkpoint",
    "transform_seed",
]
