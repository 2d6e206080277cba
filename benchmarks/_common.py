"""Shared pieces of the speed benchmarks (not a benchmark: not listed)."""

import numpy as np
import torch

from mne_lista import _l21


def subset_problem_inputs(kind="volume", condition="Right Auditory"):
    """(evoked, cov, fwd) of the sample subset: 'surface' (516 sources) or
    'volume' (7 mm grid)."""
    from mne_lista.datasets import make_subset_forward, read_subset

    evoked, cov = read_subset(condition, verbose=False)
    if kind == "surface":
        fwd = make_subset_forward(evoked.info, kind="surface", verbose=False)
    else:
        fwd = make_subset_forward(evoked.info, kind="volume", pos=7.0, verbose=False)
    return evoked, cov, fwd


def per_sample(A):
    """(rows, B) -> (rows, B, 1) float64 tensor: per-sample problems as windows."""
    A = torch.as_tensor(np.asarray(A) if not isinstance(A, torch.Tensor) else A)
    return A.to(torch.float64)[:, :, None]


def lasso_objective(problem, X, Z, lam):
    """Per-sample (group) Lasso objective of each column, float64 numpy (B,)."""
    G = torch.as_tensor(problem.gain, dtype=torch.float64)
    lam = torch.as_tensor(np.asarray(lam, dtype=np.float64))
    no = problem.n_orient
    return _l21.objective(G, per_sample(X), per_sample(Z), lam, no).numpy()


def rel_objective(problem, X, lam, Z):
    """``F(z) / F(0)`` of each column, float64 numpy (B,)."""
    f = lasso_objective(problem, X, Z, lam)
    return f / _l21.zero_objective(per_sample(X)).numpy()


def sample_alpha_max(problem, X):
    """alpha_max of each column of X (n, B), float64 numpy (B,)."""
    G = torch.as_tensor(problem.gain, dtype=torch.float64)
    return _l21.alpha_max(G, per_sample(X), problem.n_orient).numpy()
