"""Batched (group) Lasso pieces in torch.

Conventions used across mne-lista: the dictionary ``D`` is ``(n, m)``, data
``X`` is ``(n, B)`` (one Lasso problem per column) and sources ``Z`` are
``(m, B)``. With ``n_orient > 1`` the rows of ``Z`` come in consecutive blocks
of ``n_orient`` (x, y, z of one source position, MNE's ordering) and the
penalty is the sum over positions of the L2 norm of each block (group Lasso);
``n_orient == 1`` is the plain Lasso::

    F(z) = 1/2 ||x - D z||^2 + lam * sum_g ||z_g||_2

``lam`` is a scalar or a tensor with one value per column. Every function
works on any device and in float32 or float64.
"""

import numpy as np
import torch


def _as_lam(lam, n_cols, like):
    """Return lam as a tensor of shape (n_cols,) on the device/dtype of like."""
    lam = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    if lam.ndim == 0:
        lam = lam.expand(n_cols)
    if lam.shape != (n_cols,):
        raise ValueError(
            f"lam must be a scalar or have one value per column ({n_cols}), "
            f"got shape {tuple(lam.shape)}"
        )
    if not bool(torch.all(lam >= 0)):
        raise ValueError("lam must be non-negative")
    return lam


def _group_sq_norms(Z, n_orient):
    """Squared L2 norm of each block of rows, shape (m // n_orient, B)."""
    Zg = Z.reshape(-1, n_orient, Z.shape[-1])
    # explicit sum over the block: much faster than a strided reduction
    sq = Zg[:, 0] * Zg[:, 0]
    for k in range(1, n_orient):
        sq = sq + Zg[:, k] * Zg[:, k]
    return sq


def group_norms(Z, n_orient):
    """L2 norm of each block of ``n_orient`` rows, shape (m // n_orient, B).

    Zero blocks get ``sqrt(tiny)`` instead of 0 so that the gradient stays
    finite (it is 0 there) when the norm is differentiated in training.
    """
    if n_orient == 1:
        return Z.abs()
    tiny = torch.finfo(Z.dtype).tiny
    return torch.sqrt(_group_sq_norms(Z, n_orient).clamp_min(tiny))


def penalty(Z, n_orient):
    """Sum of the group norms of each column, shape (B,)."""
    return group_norms(Z, n_orient).sum(0)


def dual_norm(U, n_orient):
    """Max over positions of the group norm of each column of ``D^T r``, (B,)."""
    return group_norms(U, n_orient).amax(0)


def prox(Z, thresh, n_orient):
    """Soft thresholding (``n_orient == 1``) or group soft thresholding.

    ``thresh`` is a scalar or a tensor of shape (B,) (one per column).
    """
    thresh = torch.as_tensor(thresh, dtype=Z.dtype, device=Z.device)
    if n_orient == 1:
        return Z - Z.clamp(-thresh, thresh)
    shape = Z.shape
    tiny = torch.finfo(Z.dtype).tiny
    inv_norms = torch.rsqrt(_group_sq_norms(Z, n_orient).clamp_min(tiny))
    shrink = torch.clamp(1.0 - thresh * inv_norms, min=0.0)
    return (Z.reshape(-1, n_orient, shape[-1]) * shrink[:, None]).reshape(shape)


def residual(D, X, Z):
    """Data residual ``X - D Z``, shape (n, B)."""
    return X - D @ Z


def objective(D, X, Z, lam, n_orient):
    """Lasso objective of each column, shape (B,)."""
    lam = _as_lam(lam, X.shape[-1], X)
    return objective_from_residual(residual(D, X, Z), Z, lam, n_orient)


def objective_from_residual(R, Z, lam, n_orient):
    """Lasso objective of each column from its residual ``R`` (either sign)."""
    return 0.5 * (R * R).sum(0) + lam * penalty(Z, n_orient)


def alpha_max(D, X, n_orient):
    """Smallest ``lam`` for which 0 solves each column's problem, shape (B,)."""
    return dual_norm(D.T @ X, n_orient)


def zero_objective(X):
    """``F(0) = 1/2 ||x||^2`` of each column, clamped above 0 (a divisor)."""
    return (0.5 * (X * X).sum(0)).clamp_min(torch.finfo(X.dtype).tiny)


def duality_gap(D, X, Z, lam, n_orient):
    """Duality gap of each column, with primal and dual objectives.

    The dual point is the residual rescaled into the dual feasible set,
    ``theta = r / max(1, ||D^T r||_{2,inf} / lam)``.

    Returns
    -------
    gap, p_obj, d_obj : tensors of shape (B,)
    """
    lam = _as_lam(lam, X.shape[-1], X)
    R = residual(D, X, Z)
    p_obj = 0.5 * (R * R).sum(0) + lam * penalty(Z, n_orient)
    dnorm = dual_norm(D.T @ R, n_orient)
    tiny = torch.finfo(X.dtype).tiny
    scale = torch.clamp(dnorm / lam.clamp_min(tiny), min=1.0)
    theta = R / scale
    d_obj = 0.5 * (X * X).sum(0) - 0.5 * ((X - theta) ** 2).sum(0)
    return p_obj - d_obj, p_obj, d_obj


def ista_step(D, X, Z, step, lam, n_orient):
    """One proximal gradient step ``prox(Z - step D^T(DZ - X), step * lam)``.

    ``step`` is a scalar (tensor) or one value per column; ``lam`` likewise.
    This single function is shared by ISTA and by the unrolled networks, so
    an untrained Step-LISTA performs exactly the operations of ISTA.
    """
    grad = D.T @ (D @ Z - X)
    return prox(Z - step * grad, step * lam, n_orient)


def to_tensor(A, device=None, dtype=None):
    """Convert an array or tensor to a tensor, without copying when possible."""
    if isinstance(A, torch.Tensor):
        return A.to(
            device=device if device is not None else A.device,
            dtype=dtype if dtype is not None else A.dtype,
        )
    A = np.asarray(A)
    if dtype is None:
        dtype = torch.float32 if A.dtype == np.float32 else torch.float64
    return torch.as_tensor(A, dtype=dtype, device=device)
