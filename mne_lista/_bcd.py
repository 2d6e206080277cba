"""The exact L21 (MxNE) solver: working sets and block coordinate descent.

:func:`solve_mxne` (exported by :mod:`mne_lista.solvers`) solves a batch of
windows to a certified relative duality gap, the working-set strategy of
MNE's ``mixed_norm_solver`` and of celer batched over windows. Its block
coordinate descent runs in a numba kernel on CPU (:mod:`mne_lista._kernels`).
"""

import numpy as np
import torch

from ._l21 import (
    as_lam,
    check_windows,
    gain_t_times,
    gap_from_sums,
    gram_matrix,
    group_sq_norms,
    init_sources,
    relative_gap,
    single_thread,
    sq_norms,
)
from ._numba import numba_kernel

# the BCD combines the last _N_ANDERSON + 1 iterates by Anderson extrapolation
# and checks its duality gap every _CHECK_EVERY passes. Aligned, 4 and 5 took
# 0.80-0.84 times the kernel time of 5 and 5 on the 694 working sets of SURE
# over 20 epochs, but irMxNE's supports depend on the solver's path within
# MNE's tolerance: with 4 and 5 (or 5 and 6), 1 (2) of 16 noisy epochs kept a
# source at 1 % of the peak that mixed_norm drops (5 and 5: none)
_N_ANDERSON = 5
_CHECK_EVERY = 5
# a working set is solved to this fraction of the current duality gap (celer
# uses 0.3): 0.01 was the fastest of 0, 0.01, 0.1, 0.3 on the 7 mm volume
_INNER_GAP = 0.01
# ... except the first working set of a cold start (no Z0, no warm), solved to
# 0.3 tol at once: its gap is that of zero, 0.01 of it is far from tol, and
# each more round is a product with the whole gain. On 60 epochs with dSPM
# weights: 2 rounds instead of 4, 12 % less time; irMxNE, MxNE and SURE the
# same rounds and time (and the same supports as mixed_norm)
_COLD_INNER_GAP = 0.0
# screening (keep=): the rounds use the gain of the union of the survivors
# when it holds at most this fraction of the positions
_UNION_FRAC = 0.5


def _block_sq_norms(Z, n_orient):
    """(W, k, K) -> squared Frobenius norm of each block of n_orient rows."""
    W, k, K = Z.shape
    return (Z.reshape(W, k // n_orient, n_orient * K) ** 2).sum(-1)


def _block_norms(Z, n_orient):
    """(W, k, K) -> Frobenius norm of each block of n_orient rows, (W, k / o)."""
    return torch.sqrt(_block_sq_norms(Z, n_orient))


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


def _bcd(H, b, Z, lam, n_orient, lips, m2, tol, max_passes, rows=None):
    """Restricted problems by block coordinate descent (compiled when possible).

    ``rows`` (W,): the number of leading rows of each window's working set
    that are not padding (the working sets put their positions first); the
    compiled kernel then works on that block of the Gram only, so that a
    window's cost does not grow with the largest working set of the batch.
    ``H`` is the Grams (W, k, k), or ``(gram, cols, valid)``: the full Gram,
    the columns (W, k) of each working set and which are not padding, each
    window's block then read from it in turn (its ``rows x rows`` block).
    """
    kernel = numba_kernel("bcd_windows", Z.device.type)
    if kernel is None:
        if isinstance(H, tuple):
            H = _gather_gram(*H)
        return _bcd_torch(H, b, Z, lam, n_orient, lips, m2, tol, max_passes)
    k = Z.shape[1]
    gram, cols = np.empty((0, 0)), np.empty((0, 0), np.int64)
    if isinstance(H, tuple):  # the valid rows lead: ``rows`` of each window
        gram, cols = H[0].double().numpy(), H[1].cpu().numpy()
        rows = H[2].sum(1) if rows is None else rows
        H = np.empty((0, 0, 0))
    else:
        H = np.ascontiguousarray(H.double().numpy())
    b, lam, lips, m2, tol = (
        np.ascontiguousarray(v.double().numpy()) for v in (b, lam, lips, m2, tol)
    )
    out = np.ascontiguousarray(Z.double().numpy()).copy()
    rows = np.full(out.shape[0], k) if rows is None else rows.cpu().numpy()
    kernel(
        H,
        gram,
        cols,
        rows.astype(np.int64),
        b,
        out,
        lam,
        lips,
        n_orient,
        m2,
        tol,
        max_passes,
        _CHECK_EVERY,
        _N_ANDERSON,
    )
    return torch.from_numpy(out).to(Z.dtype)


def _gather_gram(gram, cols, valid):
    """The working sets' Grams (W, k, k) from the full Gram (padding: 0)."""
    return gram[cols[:, :, None], cols[:, None, :]] * (
        valid[:, :, None] & valid[:, None, :]
    )


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
    keep=None,
    gram=None,
    warm=None,
    return_warm=False,
):
    """Exact L21 (MxNE) solutions of a batch of windows, certified by their gaps.

    The working-set strategy of MNE's ``mixed_norm_solver`` and of celer,
    batched over windows: each round solves the problem restricted to a
    working set of positions (the current support plus the positions that
    violate the optimality conditions most, ``||G_p^T R||_F / lam``, at least
    ``ws_size`` and twice the support) by block coordinate descent on its
    Gram (:func:`_bcd`), to a fraction of the current duality gap; then one
    product with the whole gain (or its Gram, ``gram``) gives the duality gap
    of every window (the certificate) and the scores of the next working
    set (:func:`_residual_products`). A window is done when its gap is <=
    ``tol * 1/2 ||M_w||_F^2``. Between rounds, each window's iterate is kept
    by its rows (its active positions and their rows, :func:`compact`):
    the dense solutions are written once, as windows finish.

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
    keep : Tensor of bool, shape (P, W) | None
        Positions that may be active in each window's solution, e.g. those
        that survive a Gap Safe screening
        (:func:`mne_lista._screening.gap_safe_screen`): the others never
        enter a working set (and are zeroed in ``Z0``), and when few
        positions survive in any window the rounds use the gain of those
        only. The certificate is still
        computed on the full gain, so a wrong mask can only leave a window
        uncertified (or solved again on the full gain), never certify a
        wrong solution.
    gram : Tensor, shape (m, m) | None
        The Gram ``D^T D`` when known (:func:`full_gram`): the working sets'
        Grams are then read from it instead of computed, which pays off
        when one Gram serves many windows and solves (SURE's grid over
        epochs).
    warm : dict | None
        The ``warm`` output of a previous call on the same windows (at
        another ``lam``, e.g. the previous alpha of a path): its solutions
        start this one, and their residual products (``G^T R``, which do not
        depend on ``lam``) give the first round's duality gaps at no cost.
        Replaces ``Z0``; not with ``keep``.
    return_warm : bool
        Also return ``warm``: the solutions by their rows and their residual
        products, for the next call.

    Returns
    -------
    Z : Tensor, shape (m, W, K)
        The solutions.
    rel_gap : Tensor, shape (W,)
        Duality gap of each returned solution / (1/2 ||M_w||_F^2).
    n_rounds : int
        Number of working sets used.
    warm : dict
        Only with ``return_warm=True``.
    """
    M = check_windows(M, "M", D.shape[0])
    n_win = M.shape[1]
    lam = as_lam(lam, n_win, M)
    f0 = 0.5 * sq_norms(M)
    if bool(torch.any((lam <= 0) & (f0 > 0))):  # (zero windows: zero solution)
        raise ValueError(
            "lam must be positive: with lam = 0 the problem is least squares "
            "with more sources than channels, no sparse solution to certify"
        )
    if warm is not None and keep is not None:
        raise ValueError("warm and keep cannot be combined")
    alive = None if keep is None else keep.to(device=M.device, dtype=torch.bool)
    n_pos = D.shape[1] // n_orient
    if alive is not None and int(alive.any(1).sum()) <= _UNION_FRAC * n_pos:
        return _solve_on_survivors(
            D,
            M,
            lam,
            n_orient,
            alive,
            Z0=Z0,
            priority=priority,
            lipschitz_positions=lipschitz_positions,
            gain_t_M=gain_t_M,
            tol=tol,
            ws_size=ws_size,
            max_rounds=max_rounds,
            max_passes=max_passes,
            gram=gram,
        )
    if warm is not None:
        pos, X = warm["pos"], warm["X"]
    elif Z0 is None:
        pos = torch.zeros((n_win, 0), dtype=torch.long, device=M.device)
        X = M.new_zeros((n_win, 0, M.shape[2]))
    else:  # a dense start would make huge working sets: its strongest only
        Z = init_sources(D, M, Z0)
        if alive is not None:
            Z = Z * alive.repeat_interleave(n_orient, 0)[..., None]
        pos, X = compact(Z, n_orient, max(ws_size, D.shape[0] // n_orient))
    if lipschitz_positions is None:
        lipschitz_positions = position_lipschitz(D, n_orient)
    lip_pos = lipschitz_positions.to(M)
    GtM = gain_t_times(D, M) if gain_t_M is None else gain_t_M
    m2 = 2.0 * f0
    tiny = torch.finfo(M.dtype).tiny
    Z = M.new_zeros((D.shape[1], n_win, M.shape[2]))
    rel_gap = torch.full((n_win,), float("inf"), dtype=M.dtype, device=M.device)
    todo = torch.arange(n_win, device=M.device)
    cold = warm is None and Z0 is None
    out = _WarmState(M, D.shape[1], n_orient) if return_warm else None
    n_rounds = 0
    for n_rounds in range(max_rounds + 1):
        # certificate and scores of every position: G^T R, from the Gram of
        # the iterate's rows when known, else one product with the gain
        if n_rounds == 0 and warm is not None:
            GtR, gsq, nR2, r_gz = (warm[k] for k in ("GtR", "gsq", "nR2", "r_gz"))
        else:
            GtR, gsq, nR2, r_gz = _residual_products(
                D, M, GtM, m2, todo, pos, X, n_orient, gram
            )
        norms = torch.sqrt(gsq)  # (P, w)
        sq = _block_sq_norms(X, n_orient)  # (w, k)
        pen = torch.sqrt(sq).sum(1)
        gap = gap_from_sums(nR2, r_gz, pen, lam[todo], norms.amax(0))[0]
        rel_gap[todo] = gap / f0[todo].clamp_min(tiny)
        done = rel_gap[todo] <= tol
        if n_rounds == max_rounds:
            done[:] = True
        if bool(done.any()):
            pos_d, X_d = pos[done], X[done]
            _write_rows(Z, todo[done], _position_rows(pos_d, n_orient), X_d, zero=False)
            if out is not None:
                out.add(todo, done, pos_d, X_d, GtR, gsq, nR2, r_gz)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep_w = ~done
            todo, pos, X, sq = todo[keep_w], pos[keep_w], X[keep_w], sq[keep_w]
            norms, gap = norms[:, keep_w], gap[keep_w]
        scores = norms if (priority is None or n_rounds) else priority[:, todo]
        if alive is not None:  # screened positions: never in a working set
            scores = scores.masked_fill(~alive[:, todo], float("-inf"))
        with single_thread():  # small batched products: threads only cost
            pos, X = _solve_working_sets(
                D,
                GtM,
                todo,
                pos,
                X,
                sq,
                lam[todo],
                n_orient,
                scores,
                m2[todo],
                torch.maximum(
                    (_COLD_INNER_GAP if cold and n_rounds == 0 else _INNER_GAP) * gap,
                    0.3 * tol * f0[todo],
                ),
                ws_size,
                lip_pos,
                max_passes,
                gram,
            )
    if out is not None:
        return Z, rel_gap, n_rounds, out.state()
    return Z, rel_gap, n_rounds


class _WarmState:
    """The ``warm`` output of :func:`solve_mxne`, filled as windows finish."""

    def __init__(self, M, m, n_orient):
        n_win, K = M.shape[1:]
        self.n_orient = n_orient
        self.GtR = M.new_empty((m, n_win, K))
        self.gsq = M.new_empty((m // n_orient, n_win))
        self.nR2 = M.new_empty(n_win)
        self.r_gz = M.new_empty(n_win)
        self.parts = []

    def add(self, todo, done, pos, X, GtR, gsq, nR2, r_gz):
        """The windows ``todo[done]`` finished (pos, X: theirs; GtR, gsq, nR2
        and r_gz: of all the windows ``todo``)."""
        idx = todo[done]
        if len(idx) == self.GtR.shape[1]:  # all at once: no copy
            self.GtR, self.gsq = GtR, gsq
        else:
            self.GtR[:, idx], self.gsq[:, idx] = GtR[:, done], gsq[:, done]
        self.nR2[idx], self.r_gz[idx] = nR2[done], r_gz[done]
        self.parts.append((idx, pos, X))

    def state(self):
        n_win, K = self.nR2.shape[0], self.GtR.shape[2]
        k = max((p.shape[1] for _, p, _ in self.parts), default=0)
        pos = torch.zeros((n_win, k), dtype=torch.long, device=self.GtR.device)
        X = self.GtR.new_zeros((n_win, k * self.n_orient, K))
        for idx, p, x in self.parts:
            pos[idx, : p.shape[1]] = p
            X[idx, : x.shape[1]] = x
        return dict(
            pos=pos, X=X, GtR=self.GtR, gsq=self.gsq, nR2=self.nR2, r_gz=self.r_gz
        )


def _windows(A, todo):
    """The windows ``todo`` of A (rows, W, ...): A itself when they are all
    of them in order (no copy)."""
    all_in_order = len(todo) == A.shape[1] and bool(
        (todo == torch.arange(len(todo), device=todo.device)).all()
    )
    return A if all_in_order else A[:, todo]


def _residual_products(D, M, GtM, m2, todo, pos, X, n_orient, gram):
    """``G^T R`` and its squared group norms, ``||R||^2`` and ``<R, G Z>`` of
    the windows ``todo``.

    ``Z`` is given by its rows (``pos`` (w, k) positions, ``X`` (w, r, K)
    their rows, ``r = k n_orient``; padding: zero rows), gathered on the
    union ``U`` of the windows' rows (``u`` rows). Of two ways, the one with
    the fewest operations:

    - the gain: ``R = M - G_U Z_U``, then ``G^T R``: ``(n u + m n) w K``;
    - the full Gram: ``G^T R = G^T M - (G^T G)_U Z_U`` and the norms from
      ``G^T M`` and the Gram (no product with the gain): ``m u w K``. Its
      ``||R||^2 = ||M||^2 - 2 <G^T M, Z> + <Z, G^T G Z>`` is rounded to about
      ``1e-16 ||M||^2``, far below the relative gaps certified (``tol``).

    (The Gram's rows of each window's own rows, ``m r w K``, fewer operations
    when the supports differ, was no faster end to end, in batched products
    or in a compiled loop of one matrix product per window: irMxNE and SURE
    over 30-60 epochs took 0.97-1.04 times the union's time.)
    Returns (GtR (m, w, K), sq (P, w), nR2 (w,), r_gz (w,)).
    """
    GtM_t = _windows(GtM, todo)
    if pos.shape[1] == 0:  # zero iterates: R = M
        sq = group_sq_norms(GtM_t, n_orient)
        return GtM_t, sq, m2[todo], m2.new_zeros(len(todo))
    n, m = D.shape
    w, r, K = X.shape
    union, inv = torch.unique(pos, return_inverse=True)  # (U,), (w, k)
    u = len(union) * n_orient
    rows = _position_rows(union[None], n_orient)[0]
    Z_U = X.new_zeros((u, w, K))
    widx = torch.arange(w, device=X.device)[:, None].expand(-1, r)
    Z_U.index_put_((_position_rows(inv, n_orient), widx), X, accumulate=True)
    Z_U = Z_U.reshape(u, w * K)
    if gram is not None and m * u < n * u + m * n:
        GtM_f = GtM_t.reshape(m, w * K)
        GtR = torch.addmm(GtM_f, gram[:, rows], Z_U, alpha=-1.0)  # (m, w K)
        b_z = (GtM_f[rows] * Z_U).reshape(u, w, K).sum((0, 2))
        z_hz = ((GtM_f[rows] - GtR[rows]) * Z_U).reshape(u, w, K).sum((0, 2))
        GtR = GtR.reshape(m, w, K)
        sq = group_sq_norms(GtR, n_orient)
        return GtR, sq, m2[todo] - 2.0 * b_z + z_hz, b_z - z_hz
    GZ = (D[:, rows] @ Z_U).reshape(n, w, K)
    R = M[:, todo] - GZ
    GtR = gain_t_times(D, R)
    return GtR, group_sq_norms(GtR, n_orient), sq_norms(R), (R * GZ).sum((0, 2))


def _solve_on_survivors(D, M, lam, n_orient, alive, **kwargs):
    """:func:`solve_mxne` on the gain restricted to the positions that survive
    the screening of at least one window, certified on the full gain.

    The screened positions are 0 at the optimum, so the restricted problem
    has the solution of the full one, and every round's products with the
    gain only involve the survivors. Its solutions are certified once on the
    full gain; a window whose full gap exceeds ``tol`` (a screened position
    violating the optimality conditions at the inexact solution) is solved
    again on the full gain, warm started.
    """
    pos = torch.nonzero(alive.any(1)).flatten()
    cols = _position_rows(pos[None], n_orient)[0]
    sub = dict(kwargs)
    for key, rows in (("Z0", cols), ("priority", pos), ("gain_t_M", cols)):
        if sub[key] is not None:
            sub[key] = sub[key][rows]
    lip = kwargs["lipschitz_positions"]
    sub["lipschitz_positions"] = None if lip is None else lip[pos]
    if kwargs["gram"] is not None:
        sub["gram"] = kwargs["gram"][cols][:, cols]
    Z_s, _, n_rounds = solve_mxne(D[:, cols], M, lam, n_orient, keep=alive[pos], **sub)
    Z = M.new_zeros((D.shape[1], *M.shape[1:]))
    Z[cols] = Z_s
    lam = as_lam(lam, M.shape[1], M)
    rel_gap = relative_gap(D, M, Z, lam, n_orient)  # on the full gain
    bad = torch.nonzero(~(rel_gap <= kwargs["tol"])).flatten()
    if len(bad):
        full = {k: v for k, v in kwargs.items() if k not in ("Z0", "priority")}
        gtm = full["gain_t_M"]
        full["gain_t_M"] = None if gtm is None else gtm[:, bad]
        Z[:, bad], rel_gap[bad], n_more = solve_mxne(
            D, M[:, bad], lam[bad], n_orient, Z0=Z[:, bad], **full
        )
        n_rounds += n_more
    return Z, rel_gap, n_rounds


def _solve_working_sets(
    D, GtM, todo, pos, X, sq, lam, n_orient, scores, m2, tol, ws_size, lip, n_it, gram
):
    """One round of :func:`solve_mxne`: build working sets, solve them.

    The iterate of each window is given by its rows: positions ``pos``
    (w, k), their rows ``X`` (w, k o, K) and squared norms ``sq`` (w, k; 0:
    inactive or padding). The working set of a window is its support plus
    the positions of best ``scores`` (P, w) outside it, at least
    ``ws_size`` and twice the support, valid positions first (the kernel
    works on the leading rows). ``GtM`` is ``G^T M`` of all the windows
    (m, W, K), ``todo`` (w,) the windows solved. Returns the solutions by
    their rows, (pos, X), cut to the largest support.
    """
    w, _, n_comp = X.shape
    n_pos = scores.shape[0]
    support = sq > 0
    n_supp = support.sum(1)
    size = (2 * n_supp).clamp(min=ws_size, max=n_pos)
    # no larger than the candidates (support + positions not screened out)
    in_supp = torch.zeros((n_pos, w), dtype=torch.bool, device=X.device)
    widx = torch.arange(w, device=X.device)[:, None].expand_as(pos)
    in_supp[pos[support], widx[support]] = True
    n_cand = (in_supp | (scores > float("-inf"))).sum(0)
    size = torch.minimum(size, n_cand.clamp(min=1))
    # the support first (strongest first), then the best other positions
    pos_s, X_s = _take_blocks(pos, X, _strongest(sq)[0], n_orient)
    s_max = pos_s.shape[1]
    n_new = size - n_supp
    k_new = int(n_new.max())
    prio = scores.masked_fill(in_supp, float("-inf"))
    new = torch.topk(prio, k_new, dim=0).indices.T  # (w, k_new)
    ar_s = torch.arange(s_max, device=X.device)[None]
    ar_n = torch.arange(k_new, device=X.device)[None]
    valid = torch.cat([ar_s < n_supp[:, None], ar_n < n_new[:, None]], 1)
    top = torch.cat([pos_s, new], 1)
    X_A = torch.cat([X_s, X.new_zeros((w, k_new * n_orient, n_comp))], 1)
    if s_max and k_new:  # valid positions first
        perm = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
        top, valid = top.gather(1, perm), valid.gather(1, perm)
        rperm = _position_rows(perm, n_orient)[..., None].expand(-1, -1, n_comp)
        X_A = X_A.gather(1, rperm)
    top = top * valid  # padding: position 0 with zero rows
    cols = _position_rows(top, n_orient)
    vrows = valid.repeat_interleave(n_orient, 1)  # (w, k * o)
    if gram is None:
        G_A = D[:, cols].permute(1, 0, 2) * vrows[:, None, :]  # (w, n, k * o)
        H = G_A.mT @ G_A
    else:  # each window's block is read from the full Gram
        H = (gram, cols, vrows)
    b = _rows_of(GtM, todo, cols) * vrows[..., None]
    lips = torch.where(valid, lip[top], torch.ones_like(lip[top]))
    X_A = _bcd(H, b, X_A, lam, n_orient, lips, m2, tol, n_it, rows=size * n_orient)
    # keep the rows of the new supports only
    keep, kept = _strongest(_block_sq_norms(X_A, n_orient) * valid)
    pos_new, X_new = _take_blocks(top, X_A, keep, n_orient)
    return pos_new * kept, X_new * kept.repeat_interleave(n_orient, 1)[..., None]


def _strongest(sq, n_keep=None):
    """Each window's non-zero entries of ``sq`` (w, P), strongest first.

    Returns their indices (w, k) and which of them are non-zero (the
    others pad the windows with fewer): ``k`` is the most non-zero entries
    of a window, at most ``n_keep``.
    """
    k = int((sq > 0).sum(1).max()) if sq.numel() else 0
    top = torch.topk(sq, k if n_keep is None else min(k, n_keep), dim=1)
    return top.indices, top.values > 0


def _take_blocks(pos, X, order, n_orient):
    """The positions ``order`` (w, k') of each window's (pos, X) by their rows."""
    rows = _position_rows(order, n_orient)[..., None].expand(-1, -1, X.shape[2])
    return pos.gather(1, order), X.gather(1, rows)


def compact(Z, n_orient, n_keep=None):
    """The rows of the iterates Z (m, W, K): (pos (W, k), X (W, k o, K)).

    ``pos`` holds each window's active positions (strongest first, at most
    ``n_keep``: the others are dropped), padded with position 0 and zero
    rows; ``X`` their rows. :func:`_write_rows` writes them back.
    """
    top, kept = _strongest(group_sq_norms(Z, n_orient).T, n_keep)
    rows = _position_rows(top, n_orient)
    widx = torch.arange(Z.shape[1], device=Z.device)[:, None].expand_as(rows)
    X = Z[rows, widx] * kept.repeat_interleave(n_orient, 1)[..., None]
    return top * kept, X


def _position_rows(pos, n_orient):
    """Rows (w, k * n_orient) of the positions ``pos`` (w, k)."""
    arange_o = torch.arange(n_orient, device=pos.device)
    return (pos[:, :, None] * n_orient + arange_o).reshape(pos.shape[0], -1)


def _rows_of(Z, idx, rows):
    """The rows ``rows`` (w, r) of the windows ``idx`` of Z: (w, r, K)."""
    return Z[rows, idx[:, None].expand_as(rows)]


def _write_rows(Z, idx, rows, X, *, zero=True):
    """Windows ``idx`` of Z (in place): their rows ``rows`` (w, r) = X.

    The other rows are zeroed (``zero=False``: already zero). Repeated rows
    add up (padding rows are zero).
    """
    if zero:
        Z.index_fill_(1, idx, 0.0)
    Z.index_put_((rows, idx[:, None].expand_as(rows)), X, accumulate=True)


# The full Gram D^T D (m^2 n operations) serves every round of every window
# solve it is given to: each round's G^T R from it costs m r K instead of
# m n K (r rows in the iterate, r << n) and each working set's Gram is read
# from it instead of computed (n k^2). It is used when the batch asks at least
# m / (2 K) window solves of K columns (measured: SURE on one evoked response,
# 30 solves of 25 columns, m = 1548, ran 5 % slower with it), for gains of at
# most this many columns (the full Gram held in memory)
_GRAM_MAX_COLUMNS = 4096


def gram_pays(D, n_window_solves, n_comp):
    """Whether the full Gram pays off for ``n_window_solves`` solves of
    ``n_comp`` columns each (the comment above)."""
    m = D.shape[1]
    return m <= _GRAM_MAX_COLUMNS and 2 * n_window_solves * n_comp >= m


def full_gram(D, n_window_solves, n_comp):
    """``D^T D`` when it pays off for the solves of a batch, else None.

    ``n_window_solves`` is the number of windows times the number of solves
    that will share it (e.g. SURE's grid of alphas over a batch of epochs),
    ``n_comp`` their columns (see :func:`gram_pays`).
    """
    return gram_matrix(D) if gram_pays(D, n_window_solves, n_comp) else None


def position_lipschitz(D, n_orient):
    """``||G_p||_2^2`` of each position's block of columns, shape (P,)."""
    n, m = D.shape
    blocks = D.reshape(n, m // n_orient, n_orient).permute(1, 0, 2)
    return torch.linalg.matrix_norm(blocks, ord=2) ** 2


def reweights(sq, scale):
    """irMxNE's weights ``2 sqrt(scale ||Z_p||)`` of positions, from their
    squared norms ``sq = ||Z_p||^2`` (any shape, ``scale`` broadcast to it).

    MNE's ``iterative_mixed_norm_solver`` (log penalty / L0.5 quasi-norm,
    ``gprime``), on solutions in MNE's units: ``mixed_norm`` scales the gain
    by ``100 / alpha_max``, its solutions are ours times ``scale =
    alpha_max / 100`` and the weights are not scale-free.
    """
    return 2.0 * torch.sqrt(scale * torch.sqrt(sq))


# irMxNE's first round decides the supports of all the others (they are
# restricted to it): it is solved this much tighter than ``tol``. At MNE's
# tolerance, 2 of 20 real epochs lost a source that mixed_norm keeps (a
# third of the peak); at 0.1 and 0.01 times it, none did
_FIRST_ROUND_TIGHTER = 0.1


@torch.no_grad()
def solve_irmxne(
    D,
    M,
    lam,
    n_orient,
    n_iter,
    *,
    scale,
    tol=1e-6,
    x_tol=None,
    Z1=None,
    ws_size=10,
    max_passes=1000,
    lipschitz_positions=None,
    gain_t_M=None,
    gram=None,
):
    """Iterative reweighted MxNE (irMxNE) of a batch of windows, certified.

    MNE's ``iterative_mixed_norm_solver`` batched: a first MxNE
    (:func:`solve_mxne`, 10 times tighter than ``tol``, or ``Z1``), then
    ``n_iter - 1`` weighted MxNE on the support of the previous round, the
    weight of a position being :func:`reweights` of its previous amplitudes
    (a weighted L21 is the L21 on the gain with its columns scaled by the
    weights). A weighted round is
    a problem on the previous support only, solved by block coordinate
    descent on its Gram (:func:`_bcd`, all windows at once) to the relative
    duality gap ``tol`` of that round's problem. A window stops, as in MNE,
    when its support did not change and no amplitude moved by ``x_tol`` or
    more, or when its estimate is empty.

    Parameters
    ----------
    D : Tensor, shape (n, m)
        The gain.
    M : Tensor, shape (n, W, K)
        The windows.
    lam : float | Tensor, shape (W,)
        Regularization of each window.
    n_orient : int
        Group size.
    n_iter : int
        Number of MxNE rounds (>= 1).
    scale : float | Tensor, shape (W,)
        The unit of the reweighting (see :func:`reweights`).
    tol : float
        Relative duality gap of every round.
    x_tol : Tensor, shape (W,) | None
        Amplitude change that stops the reweighting (MNE's: its absolute
        duality gap tolerance in its units, ``tol * 1/2 ||M||^2 / scale``
        in ours, the default).
    Z1 : Tensor, shape (m, W, K) | None
        The solution of the first round when already known.
    ws_size, max_passes, lipschitz_positions, gain_t_M, gram :
        As in :func:`solve_mxne` (the weighted rounds' Grams are also read
        from ``gram``).

    Returns
    -------
    Z : Tensor, shape (m, W, K)
        The solutions.
    rel_gap : Tensor, shape (n_iter, W)
        Relative duality gap of every round's (weighted) problem; nan after
        a window stopped.
    n_rounds : Tensor, shape (W,)
        Rounds run per window.
    """
    M = check_windows(M, "M", D.shape[0])
    n_win = M.shape[1]
    lam = as_lam(lam, n_win, M)
    scale = torch.as_tensor(scale, dtype=M.dtype, device=M.device).expand(n_win)
    if lipschitz_positions is None:
        lipschitz_positions = position_lipschitz(D, n_orient)
    lip = lipschitz_positions.to(M)
    GtM = gain_t_M
    f0 = 0.5 * sq_norms(M)
    tiny = torch.finfo(M.dtype).tiny
    rel_gap = torch.full((n_iter, n_win), float("nan"), dtype=M.dtype)
    if Z1 is None:
        Z, rel_gap[0], _ = solve_mxne(
            D,
            M,
            lam,
            n_orient,
            tol=tol * _FIRST_ROUND_TIGHTER,
            ws_size=ws_size,
            max_passes=max_passes,
            lipschitz_positions=lip,
            gain_t_M=gain_t_M,
            gram=gram,
        )
    else:
        Z = Z1.clone()
        rel_gap[0] = relative_gap(D, M, Z, lam, n_orient).cpu()
    x_tol = tol * f0 / scale.clamp_min(tiny) if x_tol is None else x_tol
    n_rounds = torch.ones(n_win, dtype=torch.long)
    # the weighted rounds only involve each window's support: its positions
    # pos (w, k), their squared norms sq (w, k; 0 = padding) and their rows
    # X (w, k * o, K), written back into Z when the window stops
    pos, X = compact(Z, n_orient)
    sq = _block_sq_norms(X, n_orient)
    idx = torch.nonzero((sq > 0).any(1)).flatten()
    pos, sq, X = pos[idx], sq[idx], X[idx]
    for k in range(1, n_iter):
        if not len(idx):
            break
        order, valid = _strongest(sq)  # (w, k): the support, strongest first
        pos, X = _take_blocks(pos, X, order, n_orient)
        sq, size = sq.gather(1, order), valid.sum(1)
        w_pos = reweights(sq, scale[idx, None]) * valid
        cols = _position_rows(pos, n_orient)
        w_rows = w_pos.repeat_interleave(n_orient, 1)  # (w, k * o), 0 = padding
        if gram is None:
            G_A = D[:, cols].permute(1, 0, 2) * w_rows[:, None, :]
            H = G_A.mT @ G_A
            b = G_A.mT @ M[:, idx].permute(1, 0, 2)
        else:  # both from the Gram and G^T M, weighted
            H = gram[cols[:, :, None], cols[:, None, :]] * (
                w_rows[:, :, None] * w_rows[:, None, :]
            )
            if GtM is None:
                GtM = gain_t_times(D, M)
            b = _rows_of(GtM, idx, cols) * w_rows[..., None]
        Y = X / w_rows.clamp_min(tiny)[..., None] * (w_rows > 0)[..., None]
        lips = torch.where(valid, w_pos**2 * lip[pos], torch.ones_like(w_pos))
        m2, tol_abs = 2.0 * f0[idx], tol * f0[idx]
        with single_thread():
            for _ in range(5):  # a few budgets of passes: all rounds certified
                Y = _bcd(
                    H,
                    b,
                    Y,
                    lam[idx],
                    n_orient,
                    lips,
                    m2,
                    tol_abs,
                    max_passes,
                    rows=size * n_orient,
                )
                gap = _reduced_obj_gap(H, b, Y, lam[idx], n_orient, m2)[1]
                if bool((gap <= tol_abs).all()):
                    break
        X_new = Y * w_rows[..., None]
        rel_gap[k, idx.cpu()] = (gap / f0[idx].clamp_min(tiny)).cpu()
        sq_new = _block_sq_norms(X_new, n_orient)
        # the support can only shrink (the round is restricted to it)
        same_support = ~(valid & (sq_new <= 0)).any(1)
        moved = (X_new - X).abs().amax((1, 2))
        stop = (same_support & (moved < x_tol[idx])) | ~(sq_new > 0).any(1)
        n_rounds[idx.cpu()] += 1
        sq, X = sq_new, X_new
        if bool(stop.any()):
            _write_rows(Z, idx[stop], cols[stop], X[stop])
            idx, pos, sq, X = idx[~stop], pos[~stop], sq[~stop], X[~stop]
    if len(idx):
        _write_rows(Z, idx, _position_rows(pos, n_orient), X)
    return Z, rel_gap, n_rounds
