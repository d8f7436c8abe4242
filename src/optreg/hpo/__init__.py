"""Hyperparameter optimization (section 7.6): search spaces, methods, resumable studies.

>>> from optreg import hpo
>>> space = {"lr": hpo.Float(1e-4, 1.0, log=True), "act": hpo.Categorical(["relu", "tanh"])}
>>> study = hpo.minimize(lambda p: abs(p["lr"] - 0.01), space, method="random", n_trials=10, seed=0)
>>> sorted(study.best_params)
['act', 'lr']

Methods (:func:`methods`): ``grid`` (7.6.1), ``random`` (7.6.2), ``halving`` (Algorithm 7.2) and
``hyperband`` (7.6.4), ``bohb`` (:mod:`optreg.hpo.bohb`: Hyperband drawing its configurations from a TPE
model of the largest budget with enough trials, Falkner et al. 2018), ``median-stop``
(:mod:`optreg.hpo.median`: stop a trial whose learning curve is below the median; the objective reports
through :class:`RunningTrial`), and Bayesian optimization with a Gaussian process (Algorithm 7.1, 7.6.3):
``gp-ei``, ``gp-pi``, ``gp-ucb`` (:mod:`optreg.hpo.bayes`, imported with torch on first use), or with
Parzen estimators, ``tpe`` (:mod:`optreg.hpo.tpe`, Bergstra et al. 2011); and file 001's
``coarse-to-fine`` (:mod:`optreg.hpo.coarse`); ``nas`` (7.6.4.1, :mod:`optreg.hpo.nas`: a controller RNN
trained by REINFORCE; :func:`nas_space` and :func:`nas_to_model_spec` for the lab's MLP builder).
Spaces: :mod:`optreg.hpo.space` (conditional parameters with ``when=``). Studies, storage and resuming:
:mod:`optreg.hpo.study`, :mod:`optreg.hpo.storage`.
"""

from optreg.hpo import coarse as _coarse  # noqa: F401  (registers coarse-to-fine)
from optreg.hpo import halving as _halving  # noqa: F401  (registers halving, hyperband)
from optreg.hpo import median as _median  # noqa: F401  (registers median-stop)
from optreg.hpo import nas as _nas  # noqa: F401  (registers nas)
from optreg.hpo import search as _search  # noqa: F401  (registers grid, random)
from optreg.hpo.method import Method, methods
from optreg.hpo.nas import nas_space, nas_to_model_spec
from optreg.hpo.space import Categorical, Distribution, Fixed, Float, Int, Space
from optreg.hpo.study import Study, maximize, minimize
from optreg.hpo.trial import STATES, Proposal, RunningTrial, Trial

__all__ = [
    "STATES",
    "Categorical",
    "Distribution",
    "Fixed",
    "Float",
    "Int",
    "Method",
    "Proposal",
    "RunningTrial",
    "Space",
    "Study",
    "Trial",
    "maximize",
    "methods",
    "minimize",
    "nas_space",
    "nas_to_model_spec",
]
