"""SURE: Stein's unbiased risk estimate of the MxNE, to choose alpha.

MNE's ``_compute_mxne_sure`` (Deledalle et al. 2014, Bannier et al. 2022),
batched: the risk of the estimate at each alpha of a grid is estimated by
Monte-Carlo finite differences, the data ``M`` and a perturbed copy
``M + eps delta`` (``delta`` standard normal, ``eps = 2 / n ** 0.3``) being
solved at the same ``lam``::

    SURE(alpha) = ||M - G X(M)||^2 - n K + 2 <G (X(M + eps delta) - X(M)), delta> / eps

(whitened data: noise variance 1). Every window of a batch and its
perturbed copy are solved together, one alpha after the other from the
largest, each warm started on the previous one's solutions.
"""

import numpy as np
import torch
from mne.utils import logger

from ._bcd import full_gram, solve_irmxne, solve_mxne
from ._debias import debias as _debias
from ._debias import debias_windows
from ._l21 import gain_t_times, gain_times, group_sq_norms, sq_norms


def sure_eps(n_channels):
    """The finite-difference step of MNE's SURE (Deledalle et al. 2014, 5.1)."""
    return 2.0 / n_channels**0.3


def _debiased(G, M, Z, n_orient, gram=None, GtM=None):
    """Each window's solution debiased on its active set (a new tensor).

    From the Gram ``gram = G^T G`` and ``GtM = G^T M`` when given (float64),
    all the windows at once (:func:`mne_lista._debias.debias_windows`), else
    one window at a time from the active columns of ``G``.
    """
    if gram is not None and GtM is not None and gram.dtype == torch.float64:
        X = debias_windows(
            gram.cpu().numpy(), GtM.cpu().numpy(), Z.cpu().numpy(), n_orient
        )
        return torch.as_tensor(X, dtype=Z.dtype, device=Z.device)
    Gn = G.cpu().numpy()
    active = (group_sq_norms(Z, n_orient) > 0).repeat_interleave(n_orient, 0)
    out = Z.clone()
    for w in range(Z.shape[1]):
        rows = active[:, w]
        if bool(rows.any()):
            X = _debias(
                M[:, w].cpu().numpy(),
                Gn[:, rows.cpu().numpy()],
                Z[rows, w].cpu().numpy(),
                n_orient,
            )
            out[rows, w] = torch.as_tensor(X, dtype=Z.dtype, device=Z.device)
    return out


@torch.no_grad()
def sure_path(
    G,
    M,
    alpha_grid,
    alpha_max,
    n_orient,
    *,
    delta,
    tol,
    n_mxne_iter=1,
    debias=True,
    ws_size=10,
    lipschitz_positions=None,
    gram=None,
):
    """SURE of a batch of windows along an alpha grid, and the best estimates.

    Parameters
    ----------
    G : Tensor, shape (n, m)
        The gain.
    M : Tensor, shape (n, W, K)
        The windows (temporal components, as ``mixed_norm`` solves them).
    alpha_grid : array, shape (J,)
        The alphas, in % of each window's ``alpha_max``.
    alpha_max : Tensor, shape (W,)
        ``alpha_max`` of each window (of ``M``, also used for its perturbed
        copy, as MNE does).
    n_orient : int
        Group size.
    delta : Tensor, shape (n, W, K)
        The standard normal perturbation of each window.
    tol : float
        Relative duality gap of every solve.
    n_mxne_iter : int
        MxNE rounds (irMxNE when > 1, :func:`mne_lista._bcd.solve_irmxne`).
    debias : bool
        Evaluate the risk of the debiased estimates (as MNE does).
    ws_size, lipschitz_positions :
        As in :func:`mne_lista.solvers.solve_mxne`.
    gram : Tensor, shape (m, m) | None
        The Gram ``G^T G``, when the caller holds it and found that it pays
        off; else computed here when it does (:func:`mne_lista._bcd.full_gram`).

    Returns
    -------
    X : Tensor, shape (m, W, K)
        The (not debiased) solution at the alpha of least SURE of each window.
    alpha : array, shape (W,)
        The selected alpha of each window (%).
    sure : array, shape (W, J)
        The SURE of each window along the grid (in the order given).
    rel_gap : array, shape (W,)
        Relative duality gap of the selected solutions (last round).
    """
    n, n_win, n_comp = M.shape
    alpha_grid = np.asarray(alpha_grid, dtype=np.float64)
    eps = sure_eps(n)
    MM = torch.cat([M, M + eps * delta], 1)  # (n, 2W, K)
    a_max = torch.cat([alpha_max, alpha_max])
    sure = np.full((n_win, len(alpha_grid)), np.nan)
    X_best = torch.zeros((G.shape[1], n_win, n_comp), dtype=M.dtype, device=M.device)
    gap_best = np.full(n_win, np.nan)
    if gram is None:  # (a Gram given: the caller found that it pays off)
        gram = full_gram(G, 2 * n_win * len(alpha_grid), n_comp)
    GtMM = gain_t_times(G, MM)  # shared by every solve (and the debiasing)
    warm = None  # the previous alpha's solutions and residual products
    for j in np.argsort(-alpha_grid, kind="stable"):  # largest alpha first
        lam = alpha_grid[j] / 100.0 * a_max
        Z, rel, _, warm = solve_mxne(
            G,
            MM,
            lam,
            n_orient,
            tol=tol,
            ws_size=ws_size,
            lipschitz_positions=lipschitz_positions,
            gain_t_M=GtMM,
            gram=gram,
            warm=warm,
            return_warm=True,
        )
        Zj = Z
        if n_mxne_iter > 1:
            Zj, rels, _ = solve_irmxne(
                G,
                MM,
                lam,
                n_orient,
                n_mxne_iter,
                scale=a_max / 100.0,
                tol=tol,
                Z1=Z,
                ws_size=ws_size,
                lipschitz_positions=lipschitz_positions,
                gain_t_M=GtMM,
                gram=gram,
            )
            rel = torch.as_tensor(np.fmax.reduce(rels.numpy(), 0))
        C = _debiased(G, MM, Zj, n_orient, gram, GtMM) if debias else Zj
        C1, C2 = C[:, :n_win], C[:, n_win:]
        fit = sq_norms(M - gain_times(G, C1))
        dof = (gain_times(G, C2 - C1) * delta).sum((0, 2)) / eps
        sure[:, j] = (fit - n * n_comp + 2.0 * dof).cpu().numpy()
        logger.debug(f"    SURE alpha={alpha_grid[j]:g}: {sure[:, j]}")
        # the first minimum in grid order, as np.argmin
        best = np.argmin(np.where(np.isnan(sure), np.inf, sure), axis=1) == j
        if best.any():
            sel = torch.as_tensor(np.flatnonzero(best), device=M.device)
            X_best[:, sel] = Zj[:, sel]
            gap_best[best] = rel[:n_win].cpu().numpy()[best]
    alpha = alpha_grid[np.argmin(sure, axis=1)]
    return X_best, alpha, sure, gap_best
