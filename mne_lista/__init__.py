"""mne-lista: MEG/EEG sparse source localization with learned step sizes."""

from ._mixed_norm import mixed_norm
from ._problem import LassoProblem, prepare_problem
from .inverse import StepLISTA, read_step_lista, step_lista
from .mxne import StepMxNE, read_step_mxne
from .solvers import (
    fista,
    ista,
    relative_gap,
    solve_irmxne,
    solve_lasso,
    solve_mxne,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "LassoProblem",
    "prepare_problem",
    "ista",
    "fista",
    "relative_gap",
    "solve_lasso",
    "solve_mxne",
    "solve_irmxne",
    "mixed_norm",
    "StepLISTA",
    "step_lista",
    "read_step_lista",
    "StepMxNE",
    "read_step_mxne",
    "__version__",
]
