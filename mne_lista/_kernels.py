"""Compiled CPU kernels (numba), imported lazily: without numba the torch /
numpy versions run.

``bcd_window``: the kernel behind :func:`mne_lista._bcd._bcd`, the same
iteration (one prox-gradient step per position with its own Lipschitz
constant, Anderson extrapolation every ``n_aa`` passes kept when it lowers
the objective, stop on the restricted duality gap), for one window, in
compiled loops: the torch version pays a dispatch cost per position and
pass that dominates on small working sets.

``debias_fista``: the FISTA loop of :func:`mne_lista._debias.debias` (MNE's
``compute_bias`` problem on its reduced quadratic), without numpy's
per-iteration overhead.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def obj_gap(H, b, Z, lam, n_orient, m2):
    """Objective and duality gap of a restricted problem from its Gram."""
    HZ = H @ Z
    k, K = Z.shape
    bz = np.sum(b * Z)
    zhz = np.sum(Z * HZ)
    nR2 = m2 - 2.0 * bz + zhz
    pen = 0.0
    dnorm = 0.0
    for j in range(k // n_orient):
        sz = 0.0
        sg = 0.0
        for r in range(j * n_orient, (j + 1) * n_orient):
            for c in range(K):
                sz += Z[r, c] ** 2
                sg += (HZ[r, c] - b[r, c]) ** 2
        pen += np.sqrt(sz)
        dnorm = max(dnorm, sg)
    dnorm = np.sqrt(dnorm)
    p_obj = 0.5 * nR2 + lam * pen
    scale = 1.0 / max(dnorm / max(lam, 1e-300), 1.0)
    d_obj = (scale - 0.5 * scale * scale) * nR2 + scale * (bz - zhz)
    return p_obj, p_obj - d_obj


@numba.njit(cache=True)
def bcd_window(H, b, Z, lam, lips, n_orient, m2, tol, max_passes, check_every, n_aa):
    """BCD on ``1/2 z'Hz - b'z + lam L21(z)`` of one window, Z in place.

    Returns the number of passes.
    """
    k, K = b.shape
    iterates = np.empty((n_aa + 1, k, K))
    n_it = 0
    U = np.empty((n_orient, K))
    nz_end = 0  # rows from nz_end on have always been zero
    for q in range(k):
        for c in range(K):
            if Z[q, c] != 0.0:
                nz_end = q + 1
    it = 0
    for it in range(max_passes):
        for j in range(k // n_orient):
            lip = lips[j]
            if lip <= 0.0:  # padding
                continue
            r0 = j * n_orient
            norm = 0.0
            for r in range(n_orient):
                # the gradient row (H Z - b)[r0 + r] over the rows that were
                # ever non-zero (the support comes first in a working set)
                if nz_end > 0:
                    grad = np.dot(H[r0 + r, :nz_end], Z[:nz_end])
                else:
                    grad = np.zeros(K)
                for c in range(K):
                    u = Z[r0 + r, c] - (grad[c] - b[r0 + r, c]) / lip
                    U[r, c] = u
                    norm += u * u
            norm = np.sqrt(norm)
            shrink = max(0.0, 1.0 - lam / (lip * norm)) if norm > 0.0 else 0.0
            for r in range(n_orient):
                for c in range(K):
                    Z[r0 + r, c] = U[r, c] * shrink
            if shrink > 0.0 and r0 + n_orient > nz_end:
                nz_end = r0 + n_orient
        iterates[n_it] = Z
        n_it += 1
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
            f_aa = obj_gap(H, b, Z_aa, lam, n_orient, m2)[0]
            if np.isfinite(f_aa) and f_aa < obj_gap(H, b, Z, lam, n_orient, m2)[0]:
                Z[:] = Z_aa
        if (it + 1) % check_every == 0 or it == max_passes - 1:
            if obj_gap(H, b, Z, lam, n_orient, m2)[1] <= tol:
                break
    return it + 1


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
