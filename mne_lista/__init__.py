"""mne-lista: MEG/EEG sparse source localization with learned step sizes."""

from ._io import read_step_lista
from ._problem import LassoProblem, prepare_problem
from .inverse import StepLISTA, step_lista
from .mxne import StepMxNE, read_step_mxne
from .solvers import fista, ista, relative_gap, solve_lasso

__version__ = "0.1.0.dev0"

__all__ = [
    "LassoProblem",
    "prepare_problem",
    "ista",
    "fista",
    "relative_gap",
    "solve_lasso",
    "StepLISTA",
    "step_lista",
    "read_step_lista",
    "StepMxNE",
    "read_step_mxne",
    "__version__",
]
