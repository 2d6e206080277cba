"""Debiasing: the amplitudes of a sparse estimate rescaled on its active set.

The problem of MNE's :func:`~mne.inverse_sparse.mxne_debiasing.compute_bias`
(one scale ``d >= 1`` per active position minimizing the data misfit),
solved on its reduced quadratic so that hundreds of active positions (the
union over time of per-sample supports) cost seconds, not minutes.
:func:`debias` debiases one window from its active gain columns,
:func:`debias_windows` a batch of windows from the full Gram (SURE's path).
"""

import numpy as np
import torch
from mne.utils import logger

from ._l21 import group_sq_norms
from ._numba import numba_kernel

# exact Lipschitz constant (eigvalsh) up to this many active positions,
# a bound from a few Lanczos iterations above
_EXACT_LIPSCHITZ_MAX = 500


def _reduced_quadratic(gram_block, GtM, X, n_orient):
    """``Q = E^T ((G^T G) o (X X^T)) E`` and ``b = E^T diag(G^T M X^T)``.

    ``E`` sums the ``n_orient`` rows of each position; ``gram_block(i, j)``
    is ``G_i^T G_j`` for the columns of orientations ``i`` and ``j`` of the
    active positions and ``GtM`` is ``G^T M`` on the active rows. Built one
    pair of orientations at a time so that memory is ``O(P^2)`` (P
    positions). The kernel ``debias_windows`` of :mod:`._kernels` forms it
    in the same order.
    """
    b = (GtM * X).sum(1).reshape(-1, n_orient).sum(1)
    Q = 0.0
    for i in range(n_orient):
        for j in range(i, n_orient):
            Xi, Xj = X[i::n_orient], X[j::n_orient]
            term = gram_block(i, j) * (Xi @ Xj.T)
            Q = Q + (term if i == j else term + term.T)
    return Q, b


def _gram_blocks(gram, idx, n_orient):
    """``gram_block`` of :func:`_reduced_quadratic` read from the full Gram."""
    return lambda i, j: gram[np.ix_(idx[i::n_orient], idx[j::n_orient])]


def _log_iterations(n_iter, max_iter):
    if n_iter < max_iter:
        logger.debug(f"    Debiasing converged after {n_iter} iterations")
    else:
        logger.info(f"    Debiasing did not converge after {max_iter} iterations")


def _scales(Q, b, max_iter, tol):
    """The minimizer ``d >= 1`` of ``1/2 d^T Q d - b^T d`` (FISTA from 1)."""
    P = len(b)
    if P <= _EXACT_LIPSCHITZ_MAX:
        lip = float(np.linalg.eigvalsh(Q)[-1])
    else:
        from scipy.sparse.linalg import eigsh

        lip = 1.01 * float(eigsh(Q, k=1, which="LA", tol=1e-4)[0][0])
    d = np.ones(P)
    if lip > 0:
        d, n_iter = _debias_fista(Q, b, lip, max_iter, tol)
        _log_iterations(n_iter, max_iter)
    return d


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
    M = np.asarray(M, dtype=np.float64)

    def gram_block(i, j):
        return G[:, i::n_orient].T @ G[:, j::n_orient]

    Q, b = _reduced_quadratic(gram_block, G.T @ M, X, n_orient)
    d = _scales(Q, b, max_iter, tol)
    return X * np.repeat(d, n_orient)[:, None]


def debias_windows(gram, GtM, Z, n_orient, *, max_iter=1000, tol=1e-6):
    """:func:`debias` of every window of a batch, from the full Gram.

    The same problem and iterations as :func:`debias` on the active
    positions of each window (those of non-zero squared norm), with
    ``G_A^T G_A`` read from ``gram = G^T G`` and ``G_A^T M`` from
    ``GtM = G^T M`` instead of products with the gain (``n x k`` per
    window), and all the windows in one compiled loop when numba is there
    (but those of more than ``_EXACT_LIPSCHITZ_MAX`` positions, whose
    Lipschitz bound needs scipy).

    Parameters
    ----------
    gram : array, shape (m, m)
        ``G^T G``.
    GtM : array, shape (m, W, K)
        ``G^T M`` of every window.
    Z : array, shape (m, W, K)
        The solutions.
    n_orient : int
        Group size.

    Returns
    -------
    X : array, shape (m, W, K)
        ``Z`` scaled on each window's active positions (a new array).
    """
    gram, GtM, Z = (np.ascontiguousarray(a, dtype=np.float64) for a in (gram, GtM, Z))
    n_win = Z.shape[1]
    rest = np.arange(n_win)
    kernel = numba_kernel("debias_windows")
    if kernel is None:
        out = Z.copy()
    else:
        out = np.empty_like(Z)  # the kernel copies Z into it
        n_iter = kernel(
            gram, GtM, Z, n_orient, _EXACT_LIPSCHITZ_MAX, max_iter, float(tol), out
        )
        for it in n_iter[n_iter >= 0]:
            _log_iterations(it, max_iter)
        rest = np.flatnonzero(n_iter == -2)
    if len(rest):
        active = group_sq_norms(torch.from_numpy(Z), n_orient).numpy() > 0
    for w in rest:
        idx = np.flatnonzero(np.repeat(active[:, w], n_orient))
        if len(idx) == 0:
            continue
        X = Z[idx, w]
        blocks = _gram_blocks(gram, idx, n_orient)
        Q, b = _reduced_quadratic(blocks, GtM[idx, w], X, n_orient)
        out[idx, w] = X * np.repeat(_scales(Q, b, max_iter, tol), n_orient)[:, None]
    return out


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
