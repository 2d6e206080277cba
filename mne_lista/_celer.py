"""Exact Lasso solver internals: celer per column, Newton polish on the support.

Used by :func:`mne_lista.solvers.solve_lasso`, which certifies the result
with the duality gap of :mod:`mne_lista._l21`.
"""

import warnings
from itertools import chain

import numpy as np
import torch
from mne.utils import logger

from ._l21 import duality_gap

# rounds of "solve, polish, certify", each with a 100x tighter backend tol
# (a round warm started from a point that celer could not improve is
# repeated cold at the same tol)
_N_ROUNDS = 5
# celer's outer (working set) iterations per round: converged solves take
# 5-30; a stalled one would otherwise loop 1000 times (minutes)
_CELER_MAX_ITER = 100
# ... and from a starting point given by the caller (Z0)
_WARM_MAX_ITER = 20


class _CelerEstimator:
    """celer's ``Lasso`` / ``GroupLasso`` with ``alpha = lam / n``."""

    def __init__(self, G, n_orient):
        from celer import GroupLasso, Lasso

        kw = dict(fit_intercept=False, max_epochs=100_000)
        self.G = G
        self.est = Lasso(**kw) if n_orient == 1 else GroupLasso(n_orient, **kw)

    def fit(self, x, alpha, tol, w0=None, max_iter=_CELER_MAX_ITER):
        self.est.alpha, self.est.tol = alpha, tol
        self.est.max_iter = max_iter
        self.est.warm_start = w0 is not None
        if w0 is not None:
            self.est.coef_ = np.array(w0, dtype=np.float64)
        self.est.fit(self.G, x)
        return np.array(self.est.coef_, dtype=np.float64)


def _backend_tol(tol):
    # celer stops at gap / n <= tol_c ||x||^2 / n (its objective is ours / n),
    # i.e. gap <= 2 tol_c (1/2 ||x||^2) with its own (better) dual point
    return tol / 2.0


class _CelerGroup:
    """celer's group Lasso solver with the group norms computed once.

    ``celer.GroupLasso.fit`` recomputes the spectral norm of every group
    (one SVD per group: ~0.2-0.3 s for the 4157 groups of the 7 mm volume,
    more than the solve itself). Here they are computed once for all
    columns (largest eigenvalue of the 3 x 3 Gram blocks) and celer's
    solver (``celer.group_fast.celer_grp``, what ``GroupLasso`` calls) is
    called directly, prepared as ``celer.homotopy.celer_path`` prepares it.
    """

    def __init__(self, G, n_orient, norms):
        from celer.group_fast import celer_grp, dnorm_grp

        self._solve, self._dnorm = celer_grp, dnorm_grp
        n, m = G.shape
        self.G, self.n, self.m = G, n, m
        self.n_groups = m // n_orient
        self.norms = norms
        self.ptr = (n_orient * np.arange(self.n_groups + 1)).astype(np.int32)
        self.idx = np.arange(m, dtype=np.int32)
        self.weights = np.ones(self.n_groups)
        self.mean = np.zeros(m)
        self.empty = np.zeros(1)
        self.empty_i = np.zeros(1, dtype=np.int32)

    def fit(self, x, alpha, tol, w0=None, max_iter=_CELER_MAX_ITER):
        x = np.ascontiguousarray(x, dtype=np.float64)  # celer assumes stride 1
        w = np.zeros(self.m) if w0 is None else np.array(w0, dtype=np.float64)
        R = x - self.G @ w
        theta = R.copy()
        args = (self.G, self.empty, self.empty_i, self.empty_i, self.mean)
        dnorm = self._dnorm(
            False, theta, self.ptr, self.idx, *args, self.weights,
            self.n_groups, np.zeros(1, dtype=np.int32), False,
        )  # fmt: skip
        theta /= max(dnorm / alpha, self.n)
        self._solve(
            False, 0, self.G, self.idx, self.ptr, *args[1:], x, alpha, w, R,
            theta, self.norms, tol, self.weights, max_iter, 100_000,
            p0=max(10, int((w != 0).sum())), prune=1, verbose=0,
        )  # fmt: skip
        return w


def _group_spectral_norms(G, n_orient):
    """Spectral norm of each block of n_orient columns of G."""
    n, m = G.shape
    Gb = G.reshape(n, m // n_orient, n_orient)
    gram = np.einsum("nga,ngb->gab", Gb, Gb)
    return np.sqrt(np.linalg.eigvalsh(gram)[:, -1])


def _fit_celer(est, x, alpha, tol, z, max_iter):
    """One celer solve (at most max_iter outer iterations) from z (None: 0)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(x, alpha, tol, z, max_iter)


def _solve_columns(G, n_orient, X, lam, Z0, tol, norms=None):
    """Solve, polish and certify the columns of X (one process)."""
    # single-column torch ops: one thread (more only adds synchronization)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _solve_columns_1(G, n_orient, X, lam, Z0, tol, norms)
    finally:
        torch.set_num_threads(n_threads)


def _solve_columns_1(G, n_orient, X, lam, Z0, tol, norms):
    n, m = G.shape
    G = np.asfortranarray(G)
    D = torch.from_numpy(G)
    est = _CelerEstimator(G, n_orient)
    if n_orient > 1:
        try:
            est = _CelerGroup(G, n_orient, norms)
        except ImportError:  # celer's layout changed: use the estimator
            pass
    Z = np.zeros((m, X.shape[1]))
    for b in range(X.shape[1]):
        x, lam_b = X[:, b], float(lam[b])
        xt, lam_t = torch.from_numpy(X[:, b : b + 1, None]), torch.tensor([lam_b])
        norm = 0.5 * float(x @ x)
        tol_b = _backend_tol(tol)
        best, best_gap = np.zeros(m), np.inf
        z = None

        def gap_pick(cands, best, best_gap, xt=xt, lam_t=lam_t, norm=norm):
            """The candidate of smallest relative gap (stop below tol)."""
            for cand in cands:
                zt = torch.from_numpy(cand[:, None, None])
                gap = float(duality_gap(D, xt, zt, lam_t, n_orient)[0][0]) / norm
                if gap < best_gap:
                    best, best_gap = cand, gap
                if best_gap <= tol:
                    break
            return best, best_gap

        if Z0 is not None:
            # the starting point (e.g. a network's output) polished on its
            # support is often exact already
            z0 = np.array(Z0[:, b])
            cands = [z0]
            if np.count_nonzero(z0) <= n:  # else Newton is costly and singular
                cands = chain(_polish(G, x, z0, lam_b, n_orient), cands)
            best, best_gap = gap_pick(cands, best, best_gap)
            if best_gap <= tol:
                Z[:, b] = best
                continue
            z = z0
        warm_ok = True
        for round_ in range(_N_ROUNDS):
            warm = warm_ok and z is not None
            # from a point it did not produce celer can stall (seen: 160 s
            # where a cold start took 1 s): fewer outer iterations there
            max_iter = _WARM_MAX_ITER if warm and round_ == 0 else _CELER_MAX_ITER
            z = _fit_celer(
                est, x, lam_b / n, tol_b, z if warm else None, max_iter=max_iter
            )
            # the polished candidates first: usually exact
            cands = chain(_polish(G, x, z, lam_b, n_orient), [z])
            best, best_gap = gap_pick(cands, best, best_gap)
            logger.debug(f"    round {round_}: relative gap {best_gap:.2e}")
            if best_gap <= tol:
                break
            if warm:  # no progress from its own previous point: go on cold
                warm_ok = False
            else:
                tol_b /= 100.0
            z = best
        if best_gap > tol:  # celer stalled (seen just above 1e-8): BCD
            cand = _solve_bcd(D, xt, lam_t, n_orient, tol, best)
            best, best_gap = gap_pick([cand], best, best_gap)
        Z[:, b] = best
    return Z


def _solve_bcd(D, xt, lam_t, n_orient, tol, z):
    """One column by the working-set BCD of :func:`mne_lista.solvers.solve_mxne`."""
    from ._bcd import solve_mxne

    Z0 = torch.from_numpy(np.array(z)[:, None, None])
    return solve_mxne(D, xt, lam_t, n_orient, tol=tol, Z0=Z0)[0][:, 0, 0].numpy()


def _polish(G, x, z, lam, n_orient, n_newton=30):
    """Newton's method on the optimality system restricted to supp(z).

    Yields candidates: on the support of z, then on supports pruned of the
    groups smaller than 1e-6, 1e-4 and 1e-2 times the largest (when
    different). For the Lasso, coefficients whose sign flips are dropped
    and the system solved again.
    """
    norms = np.linalg.norm(z.reshape(-1, n_orient), axis=1)
    if not norms.any():
        return
    seen = set()
    for rel in (0.0, 1e-6, 1e-4, 1e-2):
        act = np.flatnonzero(norms > rel * norms.max())
        if len(act) in seen:
            continue
        seen.add(len(act))
        for _ in range(5):
            idx = (act[:, None] * n_orient + np.arange(n_orient)).ravel()
            w = _newton(G[:, idx], x, z[idx], lam, n_orient, n_newton)
            if w is None:
                break
            flipped = (np.sign(w) != np.sign(z[idx])) if n_orient == 1 else []
            if not np.any(flipped) or np.all(flipped):
                cand = np.zeros_like(z)
                cand[idx] = w
                yield cand
                break
            act = act[~flipped]


def _newton(GA, x, w, lam, n_orient, n_newton):
    H = GA.T @ GA
    c = GA.T @ x
    eye = np.eye(n_orient)
    for _ in range(n_newton):
        wg = w.reshape(-1, n_orient)
        nrm = np.linalg.norm(wg, axis=1)
        if not np.all(nrm > 0):
            return None
        u = wg / nrm[:, None]
        F = H @ w - c + lam * u.ravel()
        J = H.copy()
        if n_orient > 1:
            for k in range(len(nrm)):
                sl = slice(k * n_orient, (k + 1) * n_orient)
                J[sl, sl] += lam * (eye - np.outer(u[k], u[k])) / nrm[k]
        try:
            dw = np.linalg.solve(J, F)
        except np.linalg.LinAlgError:
            return None
        w = w - dw
        if not np.all(np.isfinite(w)):
            return None
        if np.linalg.norm(dw) <= 1e-14 * np.linalg.norm(w):
            break
    return w
