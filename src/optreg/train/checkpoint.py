"""Checkpoint files: the whole training state written atomically, read back safely.

A checkpoint is the dict from :meth:`optreg.train.Trainer.state_dict`: model and optimizer state dicts,
the schedule's state (when it has one), every callback's state (early stopping's best weights,
ReduceOnPlateau's counters), the RNG states (the shuffling generator and torch's global RNG, which
dropout uses), the step and epoch counters and the history. Resuming from it continues the run bit for
bit (``Trainer.fit(..., resume_from=path)``).

Writing goes to a temporary file in the same directory, is flushed to disk, then renamed over the target
with ``os.replace`` (atomic on POSIX and Windows), so a crash never leaves a half-written checkpoint.
Reading uses ``torch.load(weights_only=True)``: only tensors and plain containers are unpickled.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from optreg.errors import OptregValueError

__all__ = ["FORMAT", "load_checkpoint", "save_checkpoint"]

#: The tag every optreg training checkpoint carries (bumped if the layout changes).
FORMAT = "optreg.train/1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and check that it is an optreg training state.

    ``weights_only=True`` (the default) refuses arbitrary pickled objects; pass ``False`` only for a file
    you trust whose state holds other objects (e.g. a custom callback's state).
    """
    path = Path(path)
    if not path.is_file():
        raise OptregValueError(f"checkpoint: path must be an existing checkpoint file, got '{path}'")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # torch raises several kinds for a corrupt or foreign file
        raise OptregValueError(f"checkpoint: cannot read '{path}' as a torch checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise OptregValueError(f"checkpoint: '{path}' is not an optreg training checkpoint (format {FORMAT!r})")
    return state
