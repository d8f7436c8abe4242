"""Diagnostics: why training behaves as it does (section 7.1): curvature, critical points, conditioning.

>>> from optreg import diagnostics as dg
>>> top = dg.hessian_eigenvalues(model, F.cross_entropy, (x, y), k=5)          # doctest: +SKIP
>>> dg.hessian_trace(model, F.cross_entropy, loader, probes=200).stderr         # doctest: +SKIP
>>> dg.classify_critical_point(lambda v: v[0] ** 2 - v[1] ** 2, point=torch.zeros(2)).kind   # doctest: +SKIP
'saddle'
"""

from optreg.diagnostics.conditioning import ConditioningMonitor
from optreg.diagnostics.hessian import (
    CriticalPoint,
    Density,
    Eigenvalues,
    HessianOperator,
    TraceEstimate,
    classify_critical_point,
    hessian_eigenvalues,
    hessian_trace,
    hvp,
    spectral_density,
)
from optreg.diagnostics.landscape import (
    Plane,
    Sharpness,
    filter_normalized_directions,
    flat_parameters,
    gradient_descent_path,
    interpolate,
    plane,
    rnn_cliff_loss,
    sharpness,
    trajectory_plane,
)

__all__ = [
    "ConditioningMonitor",
    "Plane",
    "Sharpness",
    "filter_normalized_directions",
    "flat_parameters",
    "gradient_descent_path",
    "interpolate",
    "plane",
    "rnn_cliff_loss",
    "sharpness",
    "trajectory_plane",
    "CriticalPoint",
    "Density",
    "Eigenvalues",
    "HessianOperator",
    "TraceEstimate",
    "classify_critical_point",
    "hessian_eigenvalues",
    "hessian_trace",
    "hvp",
    "spectral_density",
]
