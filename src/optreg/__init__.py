"""optreg: network optimization and regularization, done right.

The chapter "network optimization and regularization" as composable PyTorch components
(``optreg.optim``, ``optreg.schedules``, ``optreg.init``, ``optreg.data``, ``optreg.nn``,
``optreg.regularize``), an engine that uses them (``optreg.train``, ``optreg.hpo``,
``optreg.diagnostics``) and a lab that reproduces the chapter's figures (``optreg.experiments``).
"""

from optreg.errors import ConfigError, DivergenceError, OptregError, OptregTypeError, OptregValueError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DivergenceError",
    "OptregError",
    "OptregTypeError",
    "OptregValueError",
    "__version__",
]
