"""The lab's records and pictures.

- :mod:`optreg.report.store`: :class:`RunStore`, the SQLite file of runs, configs and per-step / per-epoch
  metrics (crash-safe, validated writes), and :class:`RecordRun`, the trainer callback that fills it.
- :mod:`optreg.report.plots`: matplotlib (Agg) figure builders (curves with mean ± spread over seeds,
  learning-rate curves, contours with trajectories, scatter plots); imported on demand.
"""

from __future__ import annotations

from optreg.report.store import RecordRun, RunStore, to_jsonable, versions

__all__ = ["RecordRun", "RunStore", "to_jsonable", "versions"]
