"""Batched L21 (MxNE) pieces in torch: one mixed-norm problem per time window.

The problem solved by :func:`mne.inverse_sparse.mixed_norm` on a time window
``M`` (whitened data, ``n`` channels x ``K`` time samples or temporal
components) is::

    F(Z) = 1/2 ||M - D Z||_F^2 + lam * sum_p ||Z_p||_F

where ``Z_p`` is the block of ``n_orient`` consecutive rows of source
position ``p`` over all ``K`` columns: one support for the whole window.

Layout: a batch of ``W`` windows is stored as ``M`` of shape ``(n, W, K)``
and ``Z`` of shape ``(m, W, K)``. Flattened to ``(n, W * K)`` and
``(m, W * K)`` (a free view), this is the column convention of
:mod:`mne_lista._lasso`, so every product with the gain is ONE matrix product
for all windows and the group norms reuse :func:`mne_lista._lasso.
_group_sq_norms`; the L21 groups are the Lasso groups summed over the ``K``
columns of a window. With ``K == 1`` every function here equals its
:mod:`mne_lista._lasso` counterpart. Windows with fewer columns are padded
with zero columns (:func:`stack_windows`): zero columns of ``M`` give zero
columns of every iterate and of the solution, and change neither the
objective, nor the duality gap, nor ``alpha_max``.

``lam`` is a scalar or one value per window, shape ``(W,)``. Every function
works on any device, in float32 or float64.

Solvers: :func:`ista` and :func:`fista` (what the networks unroll), and
:func:`solve_mxne`, the exact working-set solver certified by the duality
gap (its block coordinate descent runs in a numba kernel on CPU,
:mod:`mne_lista._kernels`).
"""

import numpy as np
import torch

from ._lasso import _as_lam, _group_sq_norms
from ._numba import numba_kernel


def _check_windows(A, name="M", n_rows=None):
    """Return A as a 3D tensor (rows, W, K); a 2D (rows, K) is one window."""
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(A)}")
    if A.ndim == 2:
        A = A[:, None, :]
    if A.ndim != 3 or (n_rows is not None and A.shape[0] != n_rows):
        rows = "n_rows" if n_rows is None else n_rows
        raise ValueError(
            f"{name} must have shape ({rows}, n_windows, n_components) or "
            f"({rows}, n_components), got {tuple(A.shape)}"
        )
    return A


def _flat(A):
    """(rows, W, K) -> (rows, W * K), a view when A is contiguous."""
    return A.reshape(A.shape[0], -1)


def group_sq_norms(Z, n_orient):
    """Squared Frobenius norm of each position's rows in each window, (P, W)."""
    m, n_win, n_comp = Z.shape
    sq = _group_sq_norms(_flat(Z), n_orient)  # (P, W * K)
    return sq.reshape(m // n_orient, n_win, n_comp).sum(-1)


def group_norms(Z, n_orient):
    """Frobenius norm of each position's rows in each window, shape (P, W).

    Zero groups get ``sqrt(tiny)`` so that the gradient stays finite.
    """
    tiny = torch.finfo(Z.dtype).tiny
    return torch.sqrt(group_sq_norms(Z, n_orient).clamp_min(tiny))


def penalty(Z, n_orient):
    """The L21 norm of each window, shape (W,) (MNE's ``norm_l21``)."""
    return group_norms(Z, n_orient).sum(0)


def dual_norm(U, n_orient):
    """The L2inf norm of each window, shape (W,) (MNE's ``norm_l2inf``)."""
    return torch.sqrt(group_sq_norms(U, n_orient).amax(0))


def prox(Z, thresh, n_orient):
    """Row-group soft thresholding (proximal operator of ``thresh * L21``).

    ``thresh`` is a scalar or one value per window, shape (W,).
    """
    m, n_win, n_comp = Z.shape
    thresh = torch.as_tensor(thresh, dtype=Z.dtype, device=Z.device)
    tiny = torch.finfo(Z.dtype).tiny
    inv_norms = torch.rsqrt(group_sq_norms(Z, n_orient).clamp_min(tiny))
    shrink = torch.clamp(1.0 - thresh * inv_norms, min=0.0)  # (P, W)
    Zg = Z.reshape(m // n_orient, n_orient, n_win, n_comp)
    return (Zg * shrink[:, None, :, None]).reshape(Z.shape)


def active_rows(Z):
    """Boolean mask (m,) of the rows of Z that are non-zero in any window."""
    return _flat(Z).ne(0).any(1)


def gain_times(D, Z, *, sparse_frac=0.25):
    """``D @ Z`` for every window, shape (n, W, K).

    When less than ``sparse_frac`` of the rows of ``Z`` are non-zero (sparse
    iterates), only the matching columns of ``D`` are used.
    """
    Zf = _flat(Z)
    if sparse_frac > 0:
        act = active_rows(Z)
        n_act = int(act.sum())
        if n_act < sparse_frac * Zf.shape[0]:
            idx = torch.nonzero(act)[:, 0]
            out = D[:, idx] @ Zf[idx]
            return out.reshape(D.shape[0], *Z.shape[1:])
    return (D @ Zf).reshape(D.shape[0], *Z.shape[1:])


def gain_t_times(D, R):
    """``D^T @ R`` for every window, shape (m, W, K)."""
    return (D.T @ _flat(R)).reshape(D.shape[1], *R.shape[1:])


def residual(D, M, Z):
    """Data residual ``M - D Z`` of each window, shape (n, W, K)."""
    return M - gain_times(D, Z)


def _sq_norms(R):
    """Squared Frobenius norm of each window, shape (W,)."""
    return (R * R).sum((0, 2))


def zero_objective(M):
    """``F(0) = 1/2 ||M||_F^2`` of each window, clamped above 0 (a divisor)."""
    return (0.5 * _sq_norms(M)).clamp_min(torch.finfo(M.dtype).tiny)


def objective(D, M, Z, lam, n_orient):
    """L21 objective of each window, shape (W,)."""
    lam = _as_lam(lam, M.shape[1], M)
    R = residual(D, M, Z)
    return 0.5 * _sq_norms(R) + lam * penalty(Z, n_orient)


def alpha_max(D, M, n_orient):
    """Smallest ``lam`` for which 0 solves each window's problem, shape (W,).

    This is MNE's ``norm_l2inf(G.T @ M, n_orient)`` (before its scaling by
    0.01): ``lam = alpha / 100 * alpha_max`` for MNE's ``alpha`` in %.
    """
    return dual_norm(gain_t_times(D, M), n_orient)


def duality_gap(D, M, Z, lam, n_orient):
    """Duality gap of each window, with primal and dual objectives.

    The dual point is the residual rescaled into the dual feasible set,
    ``theta = R / max(1, ||D^T R||_{2,inf} / lam)``, as MNE's ``dgap_l21``.

    Returns
    -------
    gap, p_obj, d_obj : tensors of shape (W,)
    """
    lam = _as_lam(lam, M.shape[1], M)
    GZ = gain_times(D, Z)
    R = M - GZ
    dnorm = dual_norm(gain_t_times(D, R), n_orient)
    return _gap_from_residual(R, GZ, Z, lam, dnorm, n_orient)


def _gap_from_residual(R, GZ, Z, lam, dnorm, n_orient):
    """(gap, p_obj, d_obj) from ``R = M - D Z``, ``GZ = D Z`` and the dual
    norm ``||D^T R||_{2,inf}`` of each window (see :func:`duality_gap`)."""
    nR2 = _sq_norms(R)
    p_obj = 0.5 * nR2 + lam * penalty(Z, n_orient)
    tiny = torch.finfo(R.dtype).tiny
    scale = 1.0 / torch.clamp(dnorm / lam.clamp_min(tiny), min=1.0)
    # 1/2||M||^2 - 1/2||M - s R||^2 with M = R + GZ, as in MNE's dgap_l21
    d_obj = (scale - 0.5 * scale**2) * nR2 + scale * (R * GZ).sum((0, 2))
    return p_obj - d_obj, p_obj, d_obj


def ista_step(D, M, Z, step, lam, n_orient):
    """One proximal gradient step ``prox(Z - step D^T(DZ - M), step * lam)``.

    Shared by :func:`ista` and :class:`mne_lista.mxne.StepMxNENet`, so an
    untrained network performs exactly the operations of ISTA.
    """
    grad = gain_t_times(D, gain_times(D, Z) - M)
    return prox(Z - step * grad, step * lam, n_orient)


def _init(D, M, Z0):
    shape = (D.shape[1], *M.shape[1:])
    if Z0 is None:
        return M.new_zeros(shape)
    Z0 = torch.as_tensor(Z0, dtype=M.dtype, device=M.device)
    if Z0.shape != shape:
        raise ValueError(f"Z0 must have shape {shape}, got {tuple(Z0.shape)}")
    return Z0.clone()


@torch.no_grad()
def ista(D, M, lam, n_iter, n_orient, *, step=None, Z0=None):
    """ISTA on a batch of L21 problems (step ``1/||D||_2^2`` by default).

    Parameters
    ----------
    D : Tensor, shape (n, m)
        The gain.
    M : Tensor, shape (n, W, K)
        The windows.
    lam : float | Tensor, shape (W,)
        Regularization.
    n_iter : int
        Number of iterations.
    n_orient : int
        Group size.
    step : float | None
        Step size.
    Z0 : Tensor, shape (m, W, K) | None
        Initial point.

    Returns
    -------
    Z : Tensor, shape (m, W, K)
    """
    M = _check_windows(M, "M", D.shape[0])
    lam = _as_lam(lam, M.shape[1], M)
    if step is None:
        step = 1.0 / float(torch.linalg.matrix_norm(D.double(), ord=2) ** 2)
    Z = _init(D, M, Z0)
    for _ in range(int(n_iter)):
        Z = ista_step(D, M, Z, step, lam, n_orient)
    return Z


@torch.no_grad()
def fista(D, M, lam, n_iter, n_orient, *, step=None, Z0=None):
    """FISTA on a batch of L21 problems; parameters are those of :func:`ista`."""
    M = _check_windows(M, "M", D.shape[0])
    lam = _as_lam(lam, M.shape[1], M)
    if step is None:
        step = 1.0 / float(torch.linalg.matrix_norm(D.double(), ord=2) ** 2)
    Z = _init(D, M, Z0)
    Y, t = Z, 1.0
    for _ in range(int(n_iter)):
        Z_new = ista_step(D, M, Y, step, lam, n_orient)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Y = Z_new + ((t - 1.0) / t_new) * (Z_new - Z)
        Z, t = Z_new, t_new
    return Z


# ---------------------------------------------------------------------------
# Exact solver: working sets + block coordinate descent (certified)

_N_ANDERSON = 5  # iterates combined by Anderson extrapolation in the BCD
_CHECK_EVERY = 5  # BCD passes between two duality gap checks
# a working set is solved to this fraction of the current duality gap (celer
# uses 0.3): 0.01 was the fastest of 0, 0.01, 0.1, 0.3 on the 7 mm volume
_INNER_GAP = 0.01


def _block_norms(Z, n_orient):
    """(W, k, K) -> Frobenius norm of each block of n_orient rows, (W, k / o)."""
    W, k, K = Z.shape
    return torch.sqrt((Z.reshape(W, k // n_orient, n_orient * K) ** 2).sum(-1))


def _reduced_obj_gap(H, b, Z, lam, n_orient, m2):
    """Objective and duality gap of restricted problems from their Gram.

    The restricted problem of a window is ``1/2 ||M - G_A Z||^2 + lam L21(Z)``
    with ``H = G_A^T G_A``, ``b = G_A^T M`` and ``m2 = ||M||^2``; its dual
    point is the residual rescaled as in :func:`duality_gap` (on ``A`` only).
    """
    HZ = H @ Z
    bz = (b * Z).sum((1, 2))
    zhz = (Z * HZ).sum((1, 2))
    nR2 = m2 - 2.0 * bz + zhz
    p_obj = 0.5 * nR2 + lam * _block_norms(Z, n_orient).sum(1)
    dnorm = _block_norms(HZ - b, n_orient).amax(1)
    tiny = torch.finfo(Z.dtype).tiny
    scale = 1.0 / torch.clamp(dnorm / lam.clamp_min(tiny), min=1.0)
    d_obj = (scale - 0.5 * scale**2) * nR2 + scale * (bz - zhz)
    return p_obj, p_obj - d_obj


def _anderson(iterates):
    """Anderson extrapolation of the last iterates of each problem, (W, ...)."""
    X = torch.stack(iterates, 1).flatten(2)  # (W, N + 1, d)
    U = X[:, 1:] - X[:, :-1]
    C = U @ U.mT
    n_aa = C.shape[-1]
    eye = torch.eye(n_aa, dtype=C.dtype, device=C.device)
    reg = 1e-10 * C.diagonal(dim1=1, dim2=2).mean(-1) + torch.finfo(C.dtype).tiny
    C = C + reg[:, None, None] * eye
    ones = C.new_ones((C.shape[0], n_aa, 1))
    c = torch.linalg.solve(C, ones)[..., 0]
    c = c / c.sum(1, keepdim=True)
    return (c[:, :, None] * X[:, 1:]).sum(1).reshape(iterates[-1].shape)


def _bcd(H, b, Z, lam, n_orient, lips, m2, tol, max_passes):
    """Restricted problems by block coordinate descent (compiled when possible)."""
    kernel = numba_kernel("bcd_window", Z.device.type)
    if kernel is None:
        return _bcd_torch(H, b, Z, lam, n_orient, lips, m2, tol, max_passes)
    H, b, lam, lips, m2, tol = (
        np.ascontiguousarray(v.double().numpy()) for v in (H, b, lam, lips, m2, tol)
    )
    out = np.ascontiguousarray(Z.double().numpy()).copy()
    for w in range(out.shape[0]):
        kernel(
            H[w],
            b[w],
            out[w],
            lam[w],
            lips[w],
            n_orient,
            m2[w],
            tol[w],
            max_passes,
            _CHECK_EVERY,
            _N_ANDERSON,
        )
    return torch.from_numpy(out).to(Z.dtype)


def _bcd_torch(H, b, Z, lam, n_orient, lips, m2, tol, max_passes):
    """Block coordinate descent on restricted problems, batched over windows.

    As MNE's ``_bcd`` (one prox-gradient step per position with its own
    Lipschitz constant ``lips``), but on the Gram ``H`` of the working set
    and for a batch of windows at once, with Anderson extrapolation every
    ``_N_ANDERSON`` passes (kept only where it lowers the objective, as in
    skglm's Anderson CD). A window leaves the batch once its restricted
    duality gap is <= ``tol`` (absolute, per window). Shapes: H (W, k, k),
    b and Z (W, k, K), lam, m2 and tol (W,), lips (W, k / n_orient).
    """
    out = Z.clone()
    idx = torch.arange(Z.shape[0], device=Z.device)
    n_blocks = Z.shape[1] // n_orient
    tiny = torch.finfo(Z.dtype).tiny
    iterates = []
    # block j: Z_j <- prox(Z_j - (H_j Z - b_j) / L_j, lam / L_j)
    H_s = H / lips.repeat_interleave(n_orient, 1)[..., None]
    b_s = b / lips.repeat_interleave(n_orient, 1)[..., None]
    thresh = (lam[:, None] / lips)[..., None, None]  # (W, blocks, 1, 1)
    for it in range(max_passes):
        for j in range(n_blocks):
            rows = slice(j * n_orient, (j + 1) * n_orient)
            U = torch.baddbmm(Z[:, rows] + b_s[:, rows], H_s[:, rows], Z, alpha=-1.0)
            norm = torch.linalg.vector_norm(U, dim=(1, 2), keepdim=True)
            Z[:, rows] = U * (1.0 - thresh[:, j] / norm.clamp_min(tiny)).clamp_min(0.0)
        iterates.append(Z.clone())
        if len(iterates) == _N_ANDERSON + 1:
            Z_aa = _anderson(iterates)
            f_aa = _reduced_obj_gap(H, b, Z_aa, lam, n_orient, m2)[0]
            f = _reduced_obj_gap(H, b, Z, lam, n_orient, m2)[0]
            Z = torch.where((torch.isfinite(f_aa) & (f_aa < f))[:, None, None], Z_aa, Z)
            iterates = []
        if (it + 1) % _CHECK_EVERY == 0 or it == max_passes - 1:
            done = _reduced_obj_gap(H, b, Z, lam, n_orient, m2)[1] <= tol
            out[idx[done]] = Z[done]
            if bool(done.all()):
                break
            keep = ~done
            if bool(done.any()):
                idx, Z, H, b, lam, m2, tol, H_s, b_s, thresh = (
                    v[keep] for v in (idx, Z, H, b, lam, m2, tol, H_s, b_s, thresh)
                )
                iterates = [z[keep] for z in iterates]
    out[idx] = Z
    return out


@torch.no_grad()
def solve_mxne(
    D,
    M,
    lam,
    n_orient,
    *,
    tol=1e-6,
    Z0=None,
    priority=None,
    ws_size=10,
    max_rounds=50,
    max_passes=1000,
    lipschitz_positions=None,
    gain_t_M=None,
):
    """Exact L21 (MxNE) solutions of a batch of windows, certified by their gaps.

    The working-set strategy of MNE's ``mixed_norm_solver`` and of celer,
    batched over windows: each round solves the problem restricted to a
    working set of positions (the current support plus the positions that
    violate the optimality conditions most, ``||G_p^T R||_F / lam``, at least
    ``ws_size`` and twice the support) by block coordinate descent on its
    Gram (:func:`_bcd`), to a fraction of the current duality gap; then one
    product with the whole gain gives the duality gap of every window (the
    certificate) and the scores of the next working set. A window is done
    when its gap is <= ``tol * 1/2 ||M_w||_F^2``.

    Parameters
    ----------
    D : Tensor, shape (n, m)
        The gain (float64 for certificates below ~1e-6).
    M : Tensor, shape (n, W, K)
        The windows.
    lam : float | Tensor, shape (W,)
        Regularization of each window.
    n_orient : int
        Group size.
    tol : float
        Relative duality gap to reach.
    Z0 : Tensor, shape (m, W, K) | None
        Warm start (e.g. the output of a network); only its strongest
        ``max(ws_size, n / n_orient)`` positions per window are kept (a
        dense start, as a few iterations of ISTA give, would make working
        sets of thousands of positions).
    priority : Tensor, shape (P, W) | None
        Scores ranking the positions for the first working set (e.g. the
        group norms of a network's output); by default the optimality
        violations of ``Z0``.
    ws_size : int
        Smallest working set (positions).
    max_rounds : int
        Maximum number of working sets.
    max_passes : int
        Maximum number of BCD passes per working set.
    lipschitz_positions : Tensor, shape (P,) | None
        ``||G_p||_2^2`` of every position (computed when None).
    gain_t_M : Tensor, shape (m, W, K) | None
        ``D^T M`` when already known (e.g. from :func:`alpha_max`).

    Returns
    -------
    Z : Tensor, shape (m, W, K)
        The solutions.
    rel_gap : Tensor, shape (W,)
        Duality gap of each returned solution / (1/2 ||M_w||_F^2).
    n_rounds : int
        Number of working sets used.
    """
    M = _check_windows(M, "M", D.shape[0])
    n_win = M.shape[1]
    lam = _as_lam(lam, n_win, M)
    f0 = 0.5 * _sq_norms(M)
    if bool(torch.any((lam <= 0) & (f0 > 0))):  # (zero windows: zero solution)
        raise ValueError(
            "lam must be positive: with lam = 0 the problem is least squares "
            "with more sources than channels, no sparse solution to certify"
        )
    Z = _init(D, M, Z0)
    if Z0 is not None:  # a dense start would make huge working sets
        Z = _keep_strongest(Z, n_orient, max(ws_size, D.shape[0] // n_orient))
    if lipschitz_positions is None:
        lipschitz_positions = position_lipschitz(D, n_orient)
    lip_pos = lipschitz_positions.to(M)
    GtM = gain_t_M
    tiny = torch.finfo(M.dtype).tiny
    rel_gap = torch.full((n_win,), float("inf"), dtype=M.dtype, device=M.device)
    todo = torch.arange(n_win, device=M.device)
    n_rounds = 0
    for n_rounds in range(max_rounds + 1):
        Z_t = Z[:, todo]
        GZ = gain_times(D, Z_t)
        R = M[:, todo] - GZ
        # certificate and scores of every position: one product with the gain
        # (none at a zero start when G^T M is known)
        if n_rounds == 0 and Z0 is None and GtM is not None:
            GtR = GtM
        else:
            GtR = gain_t_times(D, R)
            if n_rounds == 0 and Z0 is None:
                GtM = GtR
        norms = torch.sqrt(group_sq_norms(GtR, n_orient))  # (P, W)
        gap = _gap_from_residual(R, GZ, Z_t, lam[todo], norms.amax(0), n_orient)[0]
        rel_gap[todo] = gap / f0[todo].clamp_min(tiny)
        keep = ~(rel_gap[todo] <= tol)
        if not bool(keep.any()) or n_rounds == max_rounds:
            break
        todo, norms, Z_t, gap = todo[keep], norms[:, keep], Z_t[:, keep], gap[keep]
        if GtM is None:
            GtM = gain_t_times(D, M)
        with _single_thread():  # small batched products: threads only cost
            Z[:, todo] = _solve_working_sets(
                D,
                GtM[:, todo],
                Z_t,
                lam[todo],
                n_orient,
                norms if (priority is None or n_rounds) else priority[:, todo],
                2.0 * f0[todo],
                torch.maximum(_INNER_GAP * gap, 0.3 * tol * f0[todo]),
                ws_size,
                lip_pos,
                max_passes,
            )
    return Z, rel_gap, n_rounds


def _solve_working_sets(D, GtM, Z, lam, n_orient, scores, m2, tol, ws_size, lip, n_it):
    """One round of :func:`solve_mxne`: build working sets, solve, scatter back."""
    m, n_win, n_comp = Z.shape
    n_pos = m // n_orient
    support = group_sq_norms(Z, n_orient) > 0  # (P, W)
    size = (2 * support.sum(0)).clamp(min=ws_size, max=n_pos)
    k = int(size.max())
    prio = torch.where(support, torch.full_like(scores, float("inf")), scores)
    top = torch.topk(prio, k, dim=0).indices.T  # (W, k) positions
    valid = torch.arange(k, device=Z.device)[None] < size[:, None]
    cols = top[:, :, None] * n_orient + torch.arange(n_orient, device=Z.device)
    cols = cols.reshape(n_win, k * n_orient)
    vrows = valid.repeat_interleave(n_orient, 1)  # (W, k * o)
    G_A = D[:, cols].permute(1, 0, 2) * vrows[:, None, :]  # (W, n, k * o)
    H = G_A.mT @ G_A
    gather = cols[:, :, None].expand(-1, -1, n_comp)
    b = torch.gather(GtM.permute(1, 0, 2), 1, gather) * vrows[..., None]
    Z_A = torch.gather(Z.permute(1, 0, 2), 1, gather) * vrows[..., None]
    lips = torch.where(valid, lip[top], torch.ones_like(lip[top]))
    Z_A = _bcd(H, b, Z_A, lam, n_orient, lips, m2, tol, n_it)
    out = Z.new_zeros((n_win, m, n_comp))
    out.scatter_(1, gather, Z_A * vrows[..., None])
    return out.permute(1, 0, 2)


def _keep_strongest(Z, n_orient, n_keep):
    """Zero all but the ``n_keep`` strongest positions of each window of Z."""
    sq = group_sq_norms(Z, n_orient)  # (P, W)
    if n_keep >= sq.shape[0] or not bool(((sq > 0).sum(0) > n_keep).any()):
        return Z
    top = torch.topk(sq, n_keep, dim=0).indices
    keep = torch.zeros_like(sq, dtype=torch.bool).scatter_(0, top, True)
    keep = keep.repeat_interleave(n_orient, 0)[..., None]  # (m, W, 1)
    return Z * keep


def position_lipschitz(D, n_orient):
    """``||G_p||_2^2`` of each position's block of columns, shape (P,)."""
    n, m = D.shape
    blocks = D.reshape(n, m // n_orient, n_orient).permute(1, 0, 2)
    return torch.linalg.matrix_norm(blocks, ord=2) ** 2


class _single_thread:
    """Run torch on one thread inside the block (restored on exit)."""

    def __enter__(self):
        self._n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *args):
        torch.set_num_threads(self._n)


def time_pca(M, n_components=None):
    """MNE's ``time_pca``: the leading temporal components of each window.

    Each window ``M_w = U s Vh`` (thin SVD) is replaced by ``U s`` (its
    temporal components); a solution ``Z_w`` on them maps back to time as
    ``Z_w @ Vh``. With all components, the L21 problem on ``U s`` and the one
    on ``M_w`` have the same objective values (``Vh`` has orthonormal rows).

    Parameters
    ----------
    M : Tensor, shape (n, W, T)
        The windows.
    n_components : int | None
        Keep at most this many components (all, ``min(n, T)``, by default).

    Returns
    -------
    M_pca : Tensor, shape (n, W, K)
        ``U s`` of each window.
    Vh : Tensor, shape (W, K, T)
        The temporal components.
    """
    M = _check_windows(M)
    n, _, n_times = M.shape
    n_comp = min(n, n_times)
    if n_components is not None:
        n_comp = min(n_comp, int(n_components))
    # right singular vectors from the eigendecomposition of the (T, T) Gram
    # matrix of each window: much faster than a batched SVD of (n, T) windows
    Mw = M.permute(1, 0, 2)  # (W, n, T)
    gram = Mw.mT @ Mw
    with _single_thread():  # small LAPACK calls gain nothing from threads
        _, V = torch.linalg.eigh(gram)  # ascending eigenvalues
    V = V.flip(-1)[..., :n_comp]  # (W, T, K), descending
    M_pca = (Mw @ V).permute(1, 0, 2).contiguous()  # U s = M V
    return M_pca, V.mT.contiguous()


def from_pca(Z, Vh):
    """Map solutions on temporal components back to time, (m, W, T)."""
    return torch.einsum("mwk,wkt->mwt", Z, Vh)


def stack_windows(windows):
    """Stack windows (arrays/tensors (rows, K_w)) into (rows, W, max K_w).

    Windows with fewer columns are padded with zero columns, which change
    neither the solution nor the objective of their L21 problem.
    """
    windows = [torch.as_tensor(w) for w in windows]
    if not windows:
        raise ValueError("at least one window is needed")
    n_rows = windows[0].shape[0]
    if any(w.ndim != 2 or w.shape[0] != n_rows for w in windows):
        raise ValueError(
            "every window must be 2D with the same number of rows, got shapes "
            f"{[tuple(w.shape) for w in windows]}"
        )
    n_comp = max(w.shape[1] for w in windows)
    out = windows[0].new_zeros((n_rows, len(windows), n_comp))
    for k, w in enumerate(windows):
        out[:, k, : w.shape[1]] = w
    return out


__all__ = [
    "group_norms",
    "penalty",
    "dual_norm",
    "prox",
    "residual",
    "objective",
    "alpha_max",
    "duality_gap",
    "ista_step",
    "ista",
    "fista",
    "solve_mxne",
    "time_pca",
    "from_pca",
    "stack_windows",
]
