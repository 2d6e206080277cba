"""Batched classical solvers: ISTA, FISTA and the certified reference."""

import warnings
from itertools import chain

import numpy as np
import torch
from mne.parallel import parallel_func
from mne.utils import _validate_type, logger, verbose, warn

from ._lasso import (
    _as_lam,
    alpha_max,
    duality_gap,
    ista_step,
    objective,
    zero_objective,
)
from ._problem import _check_problem, _data_tensor


def _prepare(problem, X, lam, device, dtype):
    Xt, D, back = _data_tensor(problem, X, device=device, dtype=dtype)
    lam = _as_lam(lam, Xt.shape[1], Xt)
    return Xt, D, lam, back


@torch.no_grad()
def ista(problem, X, lam, n_iter, *, Z0=None, device=None, dtype=None):
    """Solve a batch of (group) Lasso problems with ISTA (step 1/L).

    Parameters
    ----------
    problem : LassoProblem
        The problem (see :func:`mne_lista.prepare_problem`).
    X : array | Tensor, shape (n, B)
        Whitened data, one problem per column.
    lam : float | array, shape (B,)
        Regularization, a scalar or one value per column.
    n_iter : int
        Number of iterations.
    Z0 : array | Tensor, shape (m, B) | None
        Initial point (zeros by default).
    device, dtype : torch device and dtype | None
        Where and in which precision to compute (default: those of X).

    Returns
    -------
    Z : array | Tensor, shape (m, B)
        Same kind (numpy or torch) as X.
    """
    Xt, D, lam, back = _prepare(problem, X, lam, device, dtype)
    step = 1.0 / problem.lipschitz
    Z = _init(problem, Xt, Z0)
    for _ in range(int(n_iter)):
        Z = ista_step(D, Xt, Z, step, lam, problem.n_orient)
    return back(Z)


@torch.no_grad()
def fista(problem, X, lam, n_iter, *, Z0=None, device=None, dtype=None):
    """Solve a batch of (group) Lasso problems with FISTA (Beck & Teboulle).

    Parameters are those of :func:`ista`.

    Returns
    -------
    Z : array | Tensor, shape (m, B)
    """
    Xt, D, lam, back = _prepare(problem, X, lam, device, dtype)
    step = 1.0 / problem.lipschitz
    Z = _init(problem, Xt, Z0)
    Y, t = Z, 1.0
    for _ in range(int(n_iter)):
        Z_new = ista_step(D, Xt, Y, step, lam, problem.n_orient)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Y = Z_new + ((t - 1.0) / t_new) * (Z_new - Z)
        Z, t = Z_new, t_new
    return back(Z)


def _init(problem, Xt, Z0):
    if Z0 is None:
        return Xt.new_zeros((problem.n_sources, Xt.shape[1]))
    Z0 = torch.as_tensor(Z0, dtype=Xt.dtype, device=Xt.device)
    if Z0.shape != (problem.n_sources, Xt.shape[1]):
        raise ValueError(
            f"Z0 must have shape {(problem.n_sources, Xt.shape[1])}, got "
            f"{tuple(Z0.shape)}"
        )
    return Z0.clone()


@torch.no_grad()
def relative_gap(problem, X, Z, lam):
    """Duality gap of each column divided by ``1/2 ||x||^2``, shape (B,)."""
    Xt, D, lam, _ = _prepare(problem, X, lam, None, torch.float64)
    Zt = torch.as_tensor(np.asarray(Z) if not isinstance(Z, torch.Tensor) else Z)
    Zt = Zt.to(Xt.device, torch.float64)
    if Zt.ndim == 1:
        Zt = Zt[:, None]
    return _relative_gap_t(D, Xt, Zt, lam, problem.n_orient).cpu().numpy()


# ---------------------------------------------------------------------------
# Certified reference: an exact (group) Lasso solver per column, polished on
# its support by Newton's method and certified with our own duality gap.

# rounds of "solve, polish, certify", each with a 100x tighter backend tol
# (a round warm started from a point that celer could not improve is
# repeated cold at the same tol)
_N_ROUNDS = 5
# celer's outer (working set) iterations per round: converged solves take
# 5-30; a stalled one would otherwise loop 1000 times (minutes)
_CELER_MAX_ITER = 100
# ... and from a starting point given by the caller (Z0)
_WARM_MAX_ITER = 20


@verbose
def solve_lasso(
    problem,
    X,
    lam,
    *,
    tol=1e-8,
    Z0=None,
    n_jobs=None,
    verbose=None,
):
    """Solve a batch of (group) Lasso problems to a certified precision.

    Each column ``x`` of ``X`` defines the problem
    ``min_z 1/2 ||x - G z||^2 + lam sum_g ||z_g||_2`` with ``G =
    problem.gain`` and groups of ``problem.n_orient`` rows (plain Lasso for
    ``n_orient == 1``). On return, every column's duality gap, computed in
    float64 by :func:`mne_lista._lasso.duality_gap` (dual point: the
    residual rescaled into the dual feasible set), is at most
    ``tol * 1/2 ||x||^2``; a warning names the columns for which this could
    not be reached.

    Parameters
    ----------
    problem : LassoProblem
        The problem (see :func:`mne_lista.prepare_problem`).
    X : array | Tensor, shape (n, B) | (n,)
        Whitened data, one problem per column.
    lam : float | array, shape (B,)
        Regularization, a scalar or one value per column, positive. Columns
        with ``lam >= alpha_max`` have the zero solution (no solver call).
    tol : float
        Required duality gap relative to ``1/2 ||x||^2``.
    Z0 : array | Tensor, shape (m, B) | None
        A starting point (e.g. a network's output): it is first polished on
        its support (returned when that certifies), then warm starts the
        solver with a bounded number of working-set iterations; a column
        that does not certify from it is solved again from zero. Columns
        where it is worse than zero (objective above ``1/2 ||x||^2``, or not
        finite) start from zero.
    n_jobs : int | None
        Number of processes over columns (joblib). None is 1.
    %(verbose)s

    Returns
    -------
    Z : array | Tensor, shape (m, B) | (m,)
        The solutions, float64. A numpy array for a numpy ``X``; a tensor
        on the device of ``X`` for a tensor ``X``.

    Notes
    -----
    Each column is solved in three steps: (1) celer (working sets + dual
    extrapolation) finds the support: ``celer.Lasso`` with ``alpha = lam /
    n``, ``fit_intercept=False`` and ``tol = tol / 2`` (celer's criterion is
    relative to ``||x||^2 / n``), or for groups celer's group solver called
    directly with the group norms computed once (``celer.GroupLasso.fit``
    spends ~0.2-0.4 s per column on one SVD per group, more than the solve
    itself); (2) the optimality system restricted to the support
    (``G_S^T (G_S z_S - x) + lam z_g / ||z_g|| = 0`` for each active group;
    linear for the Lasso) is solved by Newton's method, which lands on the
    exact solution to machine precision once the support is right (also
    tried on supports pruned of negligible groups); (3) our own float64
    duality gap certifies the best candidate. Columns still above ``tol``
    are solved again, warm started, with a 100 times tighter celer
    tolerance (up to 4 rounds).

    Why (measured on 2 shared, heavily loaded cores, so times are
    pessimistic): the gap of the rescaled-residual dual point is first
    order in the primal error, so the solvers alone rarely certify
    ``1e-8``: on the 7 mm volume forward (303 x 12471, n_orient 3,
    simulated sparse data, ``lam`` in 0.2..0.5 ``alpha_max``), celer at its
    own ``tol=1e-13`` left 45%% of the columns above ``1e-8`` (~240 ms per
    column), while celer at ``tol=5e-9`` plus the Newton polish certified
    100%% of them with gaps ~5e-16 (polish ~3 ms per column). skglm
    (``GroupLasso``, ``tol = 1e-6 alpha``) plus the same polish certified
    100%% too at ~145 ms per column vs ~195 ms for ``celer.GroupLasso``, but
    compiles (numba) for 5-30 s in every new process and was slower on the
    516-source fixed surface problem (~25-35 ms vs ~8-16 ms per column; a
    degenerate forward then, see :func:`mne_lista.datasets.read_subset_src`);
    calling celer's group solver directly then cut the volume problem from
    ~450 to ~170 ms per column in the same conditions: celer was chosen.
    celer holds the GIL: ``n_jobs`` uses processes. ``lam == 0`` (no unique
    solution in general, ``m > n``) is not supported.
    """
    _check_problem(problem)
    _validate_type(tol, "numeric", "tol")
    tol = float(tol)
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    is_tensor = isinstance(X, torch.Tensor)
    orig_device = X.device if is_tensor else None
    Xt, D, back = _data_tensor(problem, X, device="cpu", dtype=torch.float64)
    n, B = Xt.shape
    lam = _as_lam(lam, B, Xt)
    if bool(torch.any(lam == 0)):
        raise ValueError(
            "lam must be positive: with lam == 0 the problem has no unique "
            "solution (more sources than channels) and is not supported"
        )
    no = problem.n_orient
    Z = torch.zeros((problem.n_sources, B), dtype=torch.float64)
    if Z0 is not None:
        if isinstance(X, torch.Tensor | np.ndarray) and X.ndim == 1:
            Z0 = Z0[:, None]
        Z0 = _init(problem, Xt, Z0.cpu() if isinstance(Z0, torch.Tensor) else Z0)
        # a starting point worse than zero (e.g. a diverged network's output)
        # can stall the solver's warm start: those columns start from zero
        worse = ~(objective(D, Xt, Z0, lam, no) <= zero_objective(Xt))
        if bool(worse.any()):
            logger.info(f"    {int(worse.sum())} starting point(s) worse than 0")
            Z0[:, worse] = 0.0
        Z0 = Z0.numpy()
    amax = alpha_max(D, Xt, no)
    todo = torch.nonzero(lam < amax).flatten().numpy()
    logger.info(
        f"    solve_lasso: {len(todo)}/{B} column(s) below alpha_max, "
        f"celer + Newton polish, tol={tol:g}"
    )
    if len(todo):
        Xn = Xt.numpy()
        lam_n = lam.numpy()
        G = np.asfortranarray(problem.gain)
        norms = _group_spectral_norms(G, no) if no > 1 else None
        n_jobs_ = 1 if n_jobs is None else n_jobs
        chunk = 1 if n_jobs_ == 1 else int(np.clip(len(todo) // 8, 1, 16))
        chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
        parallel, p_fun, _ = parallel_func(
            _solve_columns, n_jobs, total=len(chunks), verbose=False
        )
        out = parallel(
            p_fun(
                G,
                no,
                Xn[:, idx],
                lam_n[idx],
                None if Z0 is None else Z0[:, idx],
                tol,
                norms,
            )
            for idx in chunks
        )
        for idx, Zc in zip(chunks, out):
            Z[:, idx] = torch.from_numpy(Zc)
        # certify in one batch (columns with lam >= alpha_max are exact)
        rel = _relative_gap_t(D, Xt[:, todo], Z[:, todo], lam[todo], no).numpy()
        bad = todo[rel > tol]
        if len(bad):
            warn(
                f"solve_lasso: {len(bad)} column(s) not certified (relative "
                f"duality gap > {tol:g}, max {rel.max():.2e}): "
                f"{bad.tolist()[:20]}"
            )
        else:
            logger.info(f"    all certified (max relative gap {rel.max():.1e})")
    Z = back(Z)
    if is_tensor:
        Z = Z.to(orig_device)
    return Z


def _relative_gap_t(D, X, Z, lam, n_orient):
    gap = duality_gap(D, X, Z, lam, n_orient)[0]
    return gap / zero_objective(X)


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
        xt, lam_t = torch.from_numpy(X[:, b : b + 1]), torch.tensor([lam_b])
        norm = 0.5 * float(x @ x)
        tol_b = _backend_tol(tol)
        best, best_gap = np.zeros(m), np.inf
        z = None

        def gap_pick(cands, best, best_gap, xt=xt, lam_t=lam_t, norm=norm):
            """The candidate of smallest relative gap (stop below tol)."""
            for cand in cands:
                zt = torch.from_numpy(cand[:, None])
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
        Z[:, b] = best
    return Z


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


__all__ = ["ista", "fista", "relative_gap", "solve_lasso"]
