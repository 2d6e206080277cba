"""mne-lista: MEG/EEG sparse source localization with learned step sizes."""

from ._problem import LassoProblem, prepare_problem
from .solvers import fista, ista, relative_gap

__version__ = "0.1.0.dev0"

__all__ = [
    "LassoProblem",
    "prepare_problem",
    "ista",
    "fista",
    "relative_gap",
    "__version__",
]
