"""Compiled CPU kernels (numba), imported lazily: without numba the torch /
numpy versions run.

``bcd_window``: the kernel behind :func:`mne_lista._bcd._bcd`, the same
iteration (one prox-gradient step per position with its own Lipschitz
constant, Anderson extrapolation every ``n_aa`` passes kept when it lowers
the objective, stop on the restricted duality gap), for one window, in
compiled loops: the torch version pays a dispatch cost per position and
pass that dominates on small working sets.

``bcd_windows``: ``bcd_window`` over a batch of windows in one call, their
Grams given or read from the full Gram. ``group_sq_norms``: the squared
group norms of :func:`mne_lista._l21.group_sq_norms` in one pass.

``debias_fista``: the FISTA loop of :func:`mne_lista._debias.debias` (MNE's
``compute_bias`` problem on its reduced quadratic), without numpy's
per-iteration overhead; ``debias_windows`` debiases a batch of windows from
the full Gram.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def _nonzero_block(Z, j, n_orient):
    """Whether block ``j`` (rows ``j * n_orient ...``) of Z has a non-zero."""
    for r in range(j * n_orient, (j + 1) * n_orient):
        for c in range(Z.shape[1]):
            if Z[r, c] != 0.0:
                return True
    return False


@numba.njit(cache=True)
def _active_blocks(Z, n_orient, act):
    """Fill ``act`` with the non-zero blocks of Z; returns their number."""
    n_act = 0
    for j in range(Z.shape[0] // n_orient):
        if _nonzero_block(Z, j, n_orient):
            act[n_act] = j
            n_act += 1
    return n_act


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def obj_gap_active(H, b, Z, lam, n_orient, m2, act, n_act, with_gap):
    """Objective and duality gap of a restricted problem from its Gram.

    The problem is ``1/2 z'Hz - b'z + lam L21(z)`` (``m2 = ||M||^2``, the
    dual point the residual rescaled as in MNE's ``dgap_l21``), computed
    from the active blocks ``act[:n_act]`` of Z only.

    The products with the Gram only involve the active rows: ``H[A, A] Z_A``
    for the objective, ``H[:, A] Z_A`` for the duality gap (``with_gap``;
    else the gap returned is inf).
    """
    k, K = Z.shape
    nr = n_act * n_orient
    rows = np.empty(nr, np.int64)
    for a in range(n_act):
        for r in range(n_orient):
            rows[a * n_orient + r] = act[a] * n_orient + r
    Zs = np.empty((nr, K))
    for i in range(nr):
        Zs[i] = Z[rows[i]]
    n_out = k if with_gap else nr
    HZ = np.zeros((n_out, K))
    if nr > 0:
        Hc = np.empty((n_out, nr))
        for i in range(n_out):
            hi = i if with_gap else rows[i]
            for a in range(nr):
                Hc[i, a] = H[hi, rows[a]]
        HZ = Hc @ Zs
    bz = 0.0
    zhz = 0.0
    pen = 0.0
    for a in range(n_act):
        sz = 0.0
        for r in range(n_orient):
            i = a * n_orient + r
            ri = rows[i]
            hi = ri if with_gap else i
            for c in range(K):
                z = Zs[i, c]
                sz += z * z
                bz += b[ri, c] * z
                zhz += z * HZ[hi, c]
        pen += np.sqrt(sz)
    nR2 = m2 - 2.0 * bz + zhz
    p_obj = 0.5 * nR2 + lam * pen
    if not with_gap:
        return p_obj, np.inf
    dnorm = 0.0
    for j in range(k // n_orient):
        sg = 0.0
        for r in range(j * n_orient, (j + 1) * n_orient):
            for c in range(K):
                sg += (HZ[r, c] - b[r, c]) ** 2
        dnorm = max(dnorm, sg)
    dnorm = np.sqrt(dnorm)
    scale = 1.0 / max(dnorm / max(lam, 1e-300), 1.0)
    d_obj = (scale - 0.5 * scale * scale) * nR2 + scale * (bz - zhz)
    return p_obj, p_obj - d_obj


@numba.njit(cache=True)
def _gather_active(H, Z, act, n_act, n_orient, Hs, ZsT, slot):
    """The active rows' columns of H (``Hs``) and rows of Z, transposed (``ZsT``)."""
    slot[:] = -1
    for a in range(n_act):
        slot[act[a]] = a
        for r in range(n_orient):
            q = act[a] * n_orient + r
            i = a * n_orient + r
            for row in range(H.shape[0]):
                Hs[row, i] = H[row, q]
            for c in range(Z.shape[1]):
                ZsT[c, i] = Z[q, c]


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _grad_active(Hs, ZsT, nr, r0, n_orient, U):
    """U = (H Z)[rows r0 ...] from the active columns (dot products)."""
    K = ZsT.shape[0]
    if n_orient == 3:
        h0 = Hs[r0]
        h1 = Hs[r0 + 1]
        h2 = Hs[r0 + 2]
        for c in range(K):
            zc = ZsT[c]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for i in range(nr):
                z = zc[i]
                s0 += h0[i] * z
                s1 += h1[i] * z
                s2 += h2[i] * z
            U[0, c] = s0
            U[1, c] = s1
            U[2, c] = s2
        return
    for r in range(n_orient):
        h = Hs[r0 + r]
        for c in range(K):
            zc = ZsT[c]
            s = 0.0
            for i in range(nr):
                s += h[i] * zc[i]
            U[r, c] = s


# reassociation lets the inner loops vectorize; no assumption on NaN / inf
# (the Anderson step checks finiteness)
@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def bcd_window(H, b, Z, lam, lips, n_orient, m2, tol, max_passes, check_every, n_aa):
    """BCD on ``1/2 z'Hz - b'z + lam L21(z)`` of one window, Z in place.

    The gradient of a block, ``(H Z - b)`` on its rows, only involves the
    blocks of Z that are non-zero: their columns of H and their rows of Z
    (transposed) are kept contiguous (``Hs``, ``ZsT``; a block joins when
    it becomes non-zero, the copies are rebuilt when one leaves), so that a
    pass costs ``k x (active rows) x K`` in dot products instead of
    ``k^2 K``. Only every ``check_every``-th pass (and the first and last)
    visits all the blocks, the one before each duality gap check; the
    passes in between visit the active blocks only (the working set is
    typically twice the support), as the inner working sets of celer and
    skglm. With ``n_aa + 1 == check_every`` the Anderson extrapolation falls
    on the checked passes and one product with H gives the extrapolated
    point's objective and duality gap. Returns the number of passes.
    """
    k, K = b.shape
    n_blocks = k // n_orient
    iterates = np.empty((n_aa + 1, k, K))
    n_it = 0
    U = np.empty((n_orient, K))
    act = np.empty(n_blocks, np.int64)
    act_aa = np.empty(n_blocks, np.int64)
    Hs = np.empty((k, k))
    ZsT = np.empty((K, k))
    slot = np.empty(n_blocks, np.int64)
    n_act = _active_blocks(Z, n_orient, act)
    _gather_active(H, Z, act, n_act, n_orient, Hs, ZsT, slot)
    it = 0
    for it in range(max_passes):
        full = it == 0 or (it + 1) % check_every == 0 or it == max_passes - 1
        n_vis = n_blocks if full else n_act
        for v in range(n_vis):
            j = v if full else act[v]
            lip = lips[j]
            if lip <= 0.0:  # padding
                continue
            r0 = j * n_orient
            # H rows r0.. restricted to the active columns: Hs rows r0..
            _grad_active(Hs, ZsT, n_act * n_orient, r0, n_orient, U)
            norm = 0.0
            for r in range(n_orient):
                for c in range(K):
                    u = Z[r0 + r, c] - (U[r, c] - b[r0 + r, c]) / lip
                    U[r, c] = u
                    norm += u * u
            norm = np.sqrt(norm)
            shrink = max(0.0, 1.0 - lam / (lip * norm)) if norm > 0.0 else 0.0
            for r in range(n_orient):
                for c in range(K):
                    Z[r0 + r, c] = U[r, c] * shrink
            if slot[j] >= 0:
                i0 = slot[j] * n_orient
                for r in range(n_orient):
                    for c in range(K):
                        ZsT[c, i0 + r] = Z[r0 + r, c]
            elif shrink > 0.0:  # joins the active blocks
                slot[j] = n_act
                act[n_act] = j
                i0 = n_act * n_orient
                for r in range(n_orient):
                    for row in range(k):
                        Hs[row, i0 + r] = H[row, r0 + r]
                    for c in range(K):
                        ZsT[c, i0 + r] = Z[r0 + r, c]
                n_act += 1
        # drop the blocks that became zero (keeping the others' order)
        n_keep = 0
        for a in range(n_act):
            if _nonzero_block(Z, act[a], n_orient):
                act[n_keep] = act[a]
                n_keep += 1
        if n_keep < n_act:
            n_act = n_keep
            _gather_active(H, Z, act, n_act, n_orient, Hs, ZsT, slot)
        iterates[n_it] = Z
        n_it += 1
        check = (it + 1) % check_every == 0 or it == max_passes - 1
        gap = np.inf
        if n_it == n_aa + 1:  # Anderson extrapolation
            n_it = 0
            dZ = np.empty((n_aa, k * K))
            for i in range(n_aa):
                dZ[i] = (iterates[i + 1] - iterates[i]).ravel()
            C = dZ @ dZ.T
            reg = 1e-10 * np.trace(C) / n_aa + 1e-300
            for i in range(n_aa):
                C[i, i] += reg
            coef = np.linalg.solve(C, np.ones(n_aa))
            coef /= np.sum(coef)
            Z_aa = np.zeros((k, K))
            for i in range(n_aa):
                Z_aa += coef[i] * iterates[i + 1]
            n_aa_act = _active_blocks(Z_aa, n_orient, act_aa)
            f_aa, gap_aa = obj_gap_active(
                H, b, Z_aa, lam, n_orient, m2, act_aa, n_aa_act, check
            )
            f = obj_gap_active(H, b, Z, lam, n_orient, m2, act, n_act, False)[0]
            if np.isfinite(f_aa) and f_aa < f:
                Z[:] = Z_aa
                n_act = _active_blocks(Z, n_orient, act)
                _gather_active(H, Z, act, n_act, n_orient, Hs, ZsT, slot)
                gap = gap_aa
        if check:
            if gap == np.inf:
                gap = obj_gap_active(H, b, Z, lam, n_orient, m2, act, n_act, True)[1]
            if gap <= tol:
                break
    return it + 1


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def group_sq_norms(X, n_orient, out):
    """``out[p, w]``: squared norm of the rows of position p in window w of X."""
    m, n_win, K = X.shape
    for p in range(m // n_orient):
        for w in range(n_win):
            s = 0.0
            for r in range(p * n_orient, (p + 1) * n_orient):
                for c in range(K):
                    v = X[r, w, c]
                    s += v * v
            out[p, w] = s


@numba.njit(cache=True)
def bcd_windows(
    H, gram, cols, rows, b, Z, lam, lips, n_orient, m2, tol, max_passes, every, n_aa
):
    """:func:`bcd_window` on each window of a batch, Z (W, k, K) in place.

    Window ``w`` is solved on its ``rows[w]`` leading rows; its Gram is
    ``H[w]`` or, when ``H`` is empty, read from the full Gram ``gram`` at
    the columns ``cols[w]``.
    """
    for w in range(Z.shape[0]):
        r = rows[w]
        if r == 0:
            continue
        if H.shape[0] == 0:
            Hw = np.empty((r, r))
            for i in range(r):
                ci = cols[w, i]
                for j in range(r):
                    Hw[i, j] = gram[ci, cols[w, j]]
        else:
            Hw = np.ascontiguousarray(H[w, :r, :r])
        bcd_window(
            Hw,
            np.ascontiguousarray(b[w, :r]),
            Z[w, :r],
            lam[w],
            lips[w, : r // n_orient],
            n_orient,
            m2[w],
            tol[w],
            max_passes,
            every,
            n_aa,
        )


@numba.njit(cache=True)
def debias_fista(Q, b, lip, max_iter, tol):
    """FISTA for ``min 1/2 d'Qd - b'd, d >= 1`` from d = 1: (d, n_iter).

    Stops when ``max |d - d_prev| < tol`` (as MNE's ``compute_bias``).
    """
    P = b.shape[0]
    d = np.ones(P)
    y = d.copy()
    d_old = d.copy()
    t = 1.0
    for it in range(max_iter):
        d_old[:] = d
        g = Q @ y - b
        for i in range(P):
            d[i] = max(y[i] - g[i] / lip, 1.0)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        step = 0.0
        for i in range(P):
            y[i] = d[i] + ((t - 1.0) / t_new) * (d[i] - d_old[i])
            step = max(step, abs(d[i] - d_old[i]))
        t = t_new
        if step < tol:
            return d, it
    return d, max_iter


# reassociation lets the sums of squares vectorize: sums of terms >= 0 are
# zero, positive, inf or NaN in any order
@numba.njit(cache=True)
def debias_windows(gram, GtM, Z, n_orient, max_positions, max_iter, tol, out):
    """:func:`mne_lista._debias.debias_windows` of the windows of at most
    ``max_positions`` active positions (those of non-zero squared norm).

    For each: gathers ``Q`` and ``b`` of the reduced quadratic (as
    ``_debias._reduced_quadratic``, in its order) from the Gram and
    ``G^T M``, takes its largest eigenvalue as the Lipschitz constant, runs
    :func:`debias_fista` and writes the scaled rows to ``out``. Returns the
    FISTA iterations of each window: -1 where none ran (no active position
    or a zero quadratic), -2 where the window was skipped (too many). The
    other rows of ``out`` are those of Z.
    """
    n_win, K = Z.shape[1], Z.shape[2]
    out[:] = Z
    sq = np.empty((Z.shape[0] // n_orient, n_win))
    group_sq_norms(Z, n_orient, sq)
    active = sq > 0.0
    n_iter = np.full(n_win, -1, dtype=np.int64)
    for w in range(n_win):
        pos = np.flatnonzero(active[:, w])
        P = pos.shape[0]
        if P == 0:
            continue
        if P > max_positions:
            n_iter[w] = -2
            continue
        X = np.empty((n_orient, P, K))
        b = np.zeros(P)
        for a in range(P):
            for i in range(n_orient):
                r = pos[a] * n_orient + i
                s = 0.0
                for t in range(K):
                    X[i, a, t] = Z[r, w, t]
                    s += GtM[r, w, t] * Z[r, w, t]
                b[a] += s
        Q = np.zeros((P, P))
        for i in range(n_orient):
            for j in range(i, n_orient):
                XX = X[i] @ X[j].T
                for a in range(P):
                    ra = pos[a] * n_orient
                    for c in range(P):
                        rc = pos[c] * n_orient
                        term = gram[ra + i, rc + j] * XX[a, c]
                        if i != j:  # gram symmetric: read along its rows
                            term += gram[ra + j, rc + i] * XX[c, a]
                        Q[a, c] += term
        lip = np.linalg.eigvalsh(Q)[-1]
        d = np.ones(P)
        if lip > 0:
            d, it = debias_fista(Q, b, lip, max_iter, tol)
            n_iter[w] = it
        for a in range(P):
            for i in range(n_orient):
                r = pos[a] * n_orient + i
                for t in range(K):
                    out[r, w, t] = Z[r, w, t] * d[a]
    return n_iter
