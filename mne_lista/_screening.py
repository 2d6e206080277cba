"""Gap Safe screening of the group-L21 problems from any primal point.

A network's output ``X`` is a primal point of each problem of the batch
(per-sample Lasso: windows of one column; MxNE: windows of ``K`` columns,
see :mod:`mne_lista._l21`); its residual, rescaled into the dual feasible
set, is a dual point. The pair gives the duality gap (the certificate) and a
sphere that holds the dual optimum: the Gap Safe rule (Fercoq, Gramfort &
Salmon, ICML 2015; Ndiaye, Fercoq, Gramfort & Salmon, JMLR 2017) then proves
positions inactive at the optimum, so that an exact solver only has to look
at the survivors. The rule is safe whatever the point (a poor point gives a
large gap, a large sphere, and screens nothing); it never changes the
solution.
"""

import torch

from ._l21 import (
    as_lam,
    check_windows,
    gain_t_times,
    gain_times,
    gap_from_residual,
    group_sq_norms,
    zero_objective,
)


@torch.no_grad()
def gap_safe_screen(G, M, X, lam, n_orient, lipschitz_positions):
    """Positions that may be active at the optimum, and the relative gap.

    For a window ``M`` the primal problem is
    ``P(X) = 1/2 ||M - G X||_F^2 + lam sum_p ||X_p||_F`` and its dual
    (Fenchel) is ``D(theta) = 1/2 ||M||_F^2 - 1/2 ||M - theta||_F^2`` over
    the feasible set ``{theta : ||G_p^T theta||_F <= lam for all p}``. At the
    optimum ``theta* = M - G X*`` and, for every active position,
    ``G_p^T theta* = lam X*_p / ||X*_p||_F``: a position with
    ``||G_p^T theta*||_F < lam`` is inactive.

    ``theta*`` is unknown, but it lies in a ball around any feasible
    ``theta``: ``D`` is 1-strongly concave and ``theta*`` maximizes it on a
    convex set, so ``D(theta*) - D(theta) >= 1/2 ||theta - theta*||_F^2``,
    and by weak duality ``D(theta*) <= P(X)`` for any ``X``. Hence
    ``||theta - theta*||_F <= r = sqrt(2 (P(X) - D(theta)))``, the square
    root of twice the duality gap of the pair (absolute, not relative). As
    ``||G_p^T (theta - theta*)||_F <= ||G_p||_2 ||theta - theta*||_F``,
    position ``p`` is inactive at the optimum when

        ||G_p^T theta||_F + r ||G_p||_2 < lam.

    The dual point is the residual ``R = M - G X`` rescaled into the
    feasible set, ``theta = R / max(1, ||G^T R||_{2,inf} / lam)``, the one
    of :func:`mne_lista._l21.duality_gap`: the product ``G^T R`` gives both
    the certificate and the rule. The comparison keeps a relative margin
    of a few ``sqrt(eps)`` of the dtype against rounding (compute in
    float64 for the rule to be sharp), and a point whose gap is not finite
    (a diverged network) screens nothing.

    Parameters
    ----------
    G : Tensor, shape (n, m)
        The gain.
    M : Tensor, shape (n, W, K)
        The windows (``K = 1``: per-sample problems).
    X : Tensor, shape (m, W, K)
        Any primal point of each window (e.g. a network's output).
    lam : float | Tensor, shape (W,)
        Regularization of each window.
    n_orient : int
        Group size.
    lipschitz_positions : Tensor, shape (P,)
        ``||G_p||_2^2`` of every position
        (:meth:`mne_lista.LassoProblem.position_lipschitz`).

    Returns
    -------
    keep : Tensor of bool, shape (P, W)
        False where the position is proven inactive at the optimum of the
        window.
    rel_gap : Tensor, shape (W,)
        The duality gap of ``X`` divided by ``1/2 ||M_w||_F^2``, as
        :func:`mne_lista._l21.relative_gap`.
    """
    M = check_windows(M, "M", G.shape[0])
    lam = as_lam(lam, M.shape[1], M)
    GX = gain_times(G, X)
    R = M - GX
    norms = torch.sqrt(group_sq_norms(gain_t_times(G, R), n_orient))  # (P, W)
    dnorm = norms.amax(0)
    gap = gap_from_residual(R, GX, X, lam, dnorm, n_orient)[0]
    tiny = torch.finfo(M.dtype).tiny
    scale = 1.0 / torch.clamp(dnorm / lam.clamp_min(tiny), min=1.0)
    radius = torch.sqrt(2.0 * gap.clamp_min(0.0))  # NaN stays NaN
    g_norms = torch.sqrt(lipschitz_positions.to(M))[:, None]  # (P, 1)
    bound = scale * norms + radius * g_norms
    margin = 16.0 * torch.finfo(M.dtype).eps ** 0.5
    screened = bound < lam * (1.0 - margin)  # False on NaN: kept
    return ~screened, gap / zero_objective(M)


def seed_priority(GtM, X0, n_orient):
    """Scores of the first working set: the positions active in ``X0``
    first (strongest first), then the others by ``||G_p^T M||``."""
    score = torch.sqrt(group_sq_norms(GtM, n_orient))  # (P, W)
    sq = group_sq_norms(X0, n_orient)
    top = sq / sq.amax(0).clamp_min(torch.finfo(sq.dtype).tiny)
    return torch.where(sq > 0, score.amax(0) + 1.0 + top, score)
