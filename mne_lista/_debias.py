"""Debiasing: the amplitudes of a sparse estimate rescaled on its active set.

The problem of MNE's :func:`~mne.inverse_sparse.mxne_debiasing.compute_bias`
(one scale ``d >= 1`` per active position minimizing the data misfit),
solved on its reduced quadratic so that hundreds of active positions (the
union over time of per-sample supports) cost seconds, not minutes.
"""

import numpy as np
from mne.utils import logger

from ._numba import numba_kernel


def _reduced_quadratic(M, G, X, n_orient):
    """``Q = E^T ((G^T G) o (X X^T)) E`` and ``b = E^T diag(G^T M X^T)``.

    ``E`` sums the ``n_orient`` rows of each position; built one pair of
    orientations at a time so that memory is ``O(P^2)`` (P positions).
    """
    GtM = G.T @ M
    b = (GtM * X).sum(1).reshape(-1, n_orient).sum(1)
    Q = 0.0
    for i in range(n_orient):
        for j in range(i, n_orient):
            Gi, Gj = G[:, i::n_orient], G[:, j::n_orient]
            Xi, Xj = X[i::n_orient], X[j::n_orient]
            term = (Gi.T @ Gj) * (Xi @ Xj.T)
            Q = Q + (term if i == j else term + term.T)
    return Q, b


def debias(M, G_active, X_active, n_orient, *, max_iter=1000, tol=1e-6):
    """Debias the active rows: the problem of MNE's ``compute_bias``, faster.

    Finds the diagonal scaling ``d >= 1`` (one value per source position,
    shared by its ``n_orient`` rows) minimizing ``1/2 ||M - G diag(d) X||_F^2``
    as :func:`mne.inverse_sparse.mxne_debiasing.compute_bias` does (FISTA,
    same ``max_iter`` and ``tol`` on ``max |d - d_prev|``), but on the
    reduced quadratic ``1/2 d^T Q d - b^T d`` with ``Q = (G^T G) o (X X^T)``
    (Hadamard product, PSD, summed over the orientations of each position)
    and ``b = diag(G^T M X^T)``, with its exact Lipschitz constant.
    ``compute_bias`` bounds the Lipschitz constant by power iterations on
    ``k x k`` matrices with two ``k^3`` products per iteration (``k`` active
    rows): fine for MxNE's few sources, minutes for the union over time of
    per-sample supports (hundreds of positions). Here the cost is
    ``O((n + T) k^2)`` once and ``O(P^2)`` per iteration (P positions).

    Returns
    -------
    X : array, shape (k, T)
        ``X_active * d[:, None]`` (a new array).
    """
    X = np.asarray(X_active, dtype=np.float64)
    if X.shape[0] == 0:
        return X.copy()
    G = np.asarray(G_active, dtype=np.float64)
    Q, b = _reduced_quadratic(np.asarray(M, dtype=np.float64), G, X, n_orient)
    P = len(b)
    if P <= 500:
        lip = float(np.linalg.eigvalsh(Q)[-1])
    else:
        from scipy.sparse.linalg import eigsh

        lip = 1.01 * float(eigsh(Q, k=1, which="LA", tol=1e-4)[0][0])
    d = np.ones(P)
    if lip > 0:
        d, n_iter = _debias_fista(Q, b, lip, max_iter, tol)
        if n_iter < max_iter:
            logger.debug(f"    Debiasing converged after {n_iter} iterations")
        else:
            logger.info(f"    Debiasing did not converge after {max_iter} iterations")
    return X * np.repeat(d, n_orient)[:, None]


def _debias_fista(Q, b, lip, max_iter, tol):
    """FISTA on the debiasing box QP: (d, n_iter); compiled when possible."""
    kernel = numba_kernel("debias_fista")
    if kernel is not None:
        Q, b = np.ascontiguousarray(Q), np.ascontiguousarray(b)
        return kernel(Q, b, float(lip), int(max_iter), float(tol))
    d = np.ones(len(b))
    y, t = d.copy(), 1.0
    for it in range(max_iter):
        d_old = d
        d = np.maximum(y - (Q @ y - b) / lip, 1.0)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = d + ((t - 1.0) / t_new) * (d - d_old)
        t = t_new
        if np.abs(d - d_old).max() < tol:
            return d, it
    return d, max_iter
