"""Batched classical solvers: ISTA, FISTA and the certified reference."""

import numpy as np
import torch

from ._lasso import _as_lam, duality_gap, ista_step
from ._problem import _data_tensor


def _prepare(problem, X, lam, device, dtype):
    Xt, D, back = _data_tensor(problem, X, device=device, dtype=dtype)
    lam = _as_lam(lam, Xt.shape[1], Xt)
    return Xt, D, lam, back


@torch.no_grad()
def ista(problem, X, lam, n_iter, *, Z0=None, device=None, dtype=None):
    """Solve a batch of (group) Lasso problems with ISTA (step 1/L).

    Parameters
    ----------
    problem : LassoProblem
        The problem (see :func:`mne_lista.prepare_problem`).
    X : array | Tensor, shape (n, B)
        Whitened data, one problem per column.
    lam : float | array, shape (B,)
        Regularization, a scalar or one value per column.
    n_iter : int
        Number of iterations.
    Z0 : array | Tensor, shape (m, B) | None
        Initial point (zeros by default).
    device, dtype : torch device and dtype | None
        Where and in which precision to compute (default: those of X).

    Returns
    -------
    Z : array | Tensor, shape (m, B)
        Same kind (numpy or torch) as X.
    """
    Xt, D, lam, back = _prepare(problem, X, lam, device, dtype)
    step = 1.0 / problem.lipschitz
    Z = _init(problem, Xt, Z0)
    for _ in range(int(n_iter)):
        Z = ista_step(D, Xt, Z, step, lam, problem.n_orient)
    return back(Z)


@torch.no_grad()
def fista(problem, X, lam, n_iter, *, Z0=None, device=None, dtype=None):
    """Solve a batch of (group) Lasso problems with FISTA (Beck & Teboulle).

    Parameters are those of :func:`ista`.

    Returns
    -------
    Z : array | Tensor, shape (m, B)
    """
    Xt, D, lam, back = _prepare(problem, X, lam, device, dtype)
    step = 1.0 / problem.lipschitz
    Z = _init(problem, Xt, Z0)
    Y, t = Z, 1.0
    for _ in range(int(n_iter)):
        Z_new = ista_step(D, Xt, Y, step, lam, problem.n_orient)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Y = Z_new + ((t - 1.0) / t_new) * (Z_new - Z)
        Z, t = Z_new, t_new
    return back(Z)


def _init(problem, Xt, Z0):
    if Z0 is None:
        return Xt.new_zeros((problem.n_sources, Xt.shape[1]))
    Z0 = torch.as_tensor(Z0, dtype=Xt.dtype, device=Xt.device)
    if Z0.shape != (problem.n_sources, Xt.shape[1]):
        raise ValueError(
            f"Z0 must have shape {(problem.n_sources, Xt.shape[1])}, got "
            f"{tuple(Z0.shape)}"
        )
    return Z0.clone()


@torch.no_grad()
def relative_gap(problem, X, Z, lam):
    """Duality gap of each column divided by ``1/2 ||x||^2``, shape (B,)."""
    Xt, D, lam, _ = _prepare(problem, X, lam, None, torch.float64)
    Zt = torch.as_tensor(np.asarray(Z) if not isinstance(Z, torch.Tensor) else Z)
    Zt = Zt.to(Xt.device, torch.float64)
    if Zt.ndim == 1:
        Zt = Zt[:, None]
    gap = duality_gap(D, Xt, Zt, lam, problem.n_orient)[0]
    norm = 0.5 * (Xt * Xt).sum(0)
    return (gap / norm.clamp_min(torch.finfo(Xt.dtype).tiny)).cpu().numpy()


__all__ = ["ista", "fista", "relative_gap"]
