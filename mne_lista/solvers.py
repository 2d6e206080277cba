"""Batched solvers of the sparse problems: ISTA, FISTA and the certified ones.

All of them solve the problems of :mod:`mne_lista._l21` on the whitened gain
of a :class:`~mne_lista.LassoProblem`: the per-sample (group) Lasso when the
data ``X`` have shape ``(n, B)`` (one problem per column), the L21 mixed norm
of :func:`mne.inverse_sparse.mixed_norm` when they have shape ``(n, W, K)``
(one problem per window of ``K`` columns).

- :func:`ista`, :func:`fista`: first-order methods with the step ``1/L``
  (what the networks of :mod:`mne_lista.networks` unroll);
- :func:`solve_lasso`: the per-sample problems to a certified relative
  duality gap (celer + Newton polish, :mod:`mne_lista._celer`);
- :func:`solve_mxne`: the windows to a certified relative duality gap
  (working sets + block coordinate descent, :mod:`mne_lista._bcd`);
- :func:`solve_irmxne`: iterative reweighted MxNE (irMxNE), every round
  certified (:mod:`mne_lista._bcd`);
- :func:`relative_gap`: the certificate, duality gap / ``1/2 ||x||^2``.
"""

import numpy as np
import torch
from mne.parallel import parallel_func
from mne.utils import _validate_type, logger, verbose, warn

from . import _l21
from ._bcd import position_lipschitz, solve_irmxne, solve_mxne
from ._celer import _group_spectral_norms, _solve_columns
from ._problem import _check_problem, _data_tensor


def _first_order(problem, X, lam, n_iter, Z0, device, dtype, momentum):
    M, G, back = _data_tensor(problem, X, device=device, dtype=dtype, windows=True)
    lam = _l21.as_lam(lam, M.shape[1], M)
    if Z0 is not None:
        Z0 = _l21.to_tensor(Z0, device=M.device, dtype=M.dtype)
        Z0 = Z0.reshape(problem.n_sources, *M.shape[1:]) if Z0.ndim < 3 else Z0
    X_out = _l21.ista(
        G,
        M,
        lam,
        n_iter,
        problem.n_orient,
        step=1.0 / problem.lipschitz,
        X0=Z0,
        momentum=momentum,
    )
    return back(X_out)


def ista(problem, X, lam, n_iter, *, Z0=None, device=None, dtype=None):
    """Solve a batch of (group) Lasso or L21 problems with ISTA (step 1/L).

    Parameters
    ----------
    problem : LassoProblem
        The problem (see :func:`mne_lista.prepare_problem`).
    X : array | Tensor, shape (n, B) | (n, W, K)
        Whitened data: one (group) Lasso problem per column, or one L21
        problem per window of ``K`` columns.
    lam : float | array, shape (B,) | (W,)
        Regularization, a scalar or one value per problem.
    n_iter : int
        Number of iterations.
    Z0 : array | Tensor, shape (m, B) | (m, W, K) | None
        Initial point (zeros by default).
    device, dtype : torch device and dtype | None
        Where and in which precision to compute (default: those of X).

    Returns
    -------
    Z : array | Tensor, shape (m, B) | (m, W, K)
        Same kind (numpy or torch) as X.
    """
    return _first_order(problem, X, lam, n_iter, Z0, device, dtype, False)


def fista(problem, X, lam, n_iter, *, Z0=None, device=None, dtype=None):
    """Solve a batch of (group) Lasso or L21 problems with FISTA.

    FISTA is ISTA with Beck & Teboulle's extrapolation. Parameters are those
    of :func:`ista`.

    Returns
    -------
    Z : array | Tensor, shape (m, B) | (m, W, K)
    """
    return _first_order(problem, X, lam, n_iter, Z0, device, dtype, True)


@torch.no_grad()
def relative_gap(problem, X, Z, lam):
    """Duality gap of each problem divided by ``1/2 ||x||^2``, shape (B,) | (W,).

    Computed in float64 on the device of ``X``.
    """
    M, G, _ = _data_tensor(problem, X, dtype=torch.float64, windows=True)
    Zt = _l21.to_tensor(Z, device=M.device, dtype=torch.float64)
    Zt = Zt.reshape(problem.n_sources, *M.shape[1:])
    lam = _l21.as_lam(lam, M.shape[1], M)
    return _l21.relative_gap(G, M, Zt, lam, problem.n_orient).cpu().numpy()


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
    float64 by :func:`mne_lista._l21.duality_gap` (dual point: the
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
    computes one SVD per group at every call, more than the solve itself);
    (2) the optimality system restricted to the support
    (``G_S^T (G_S z_S - x) + lam z_g / ||z_g|| = 0`` for each active group;
    linear for the Lasso) is solved by Newton's method, which lands on the
    exact solution to machine precision once the support is right (also
    tried on supports pruned of negligible groups); (3) our own float64
    duality gap certifies the best candidate. Columns still above ``tol``
    are solved again, warm started, with a 100 times tighter celer
    tolerance (up to 4 rounds).

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
    lam = _l21.as_lam(lam, B, Xt)
    if bool(torch.any(lam == 0)):
        raise ValueError(
            "lam must be positive: with lam == 0 the problem has no unique "
            "solution (more sources than channels) and is not supported"
        )
    no = problem.n_orient
    M = Xt[:, :, None]  # one window of one column per problem
    Z = torch.zeros((problem.n_sources, B), dtype=torch.float64)
    if Z0 is not None:
        Z0 = _l21.to_tensor(Z0, device="cpu", dtype=torch.float64)
        if Z0.numel() != problem.n_sources * B:
            raise ValueError(
                f"Z0 must have shape {(problem.n_sources, B)}, got {tuple(Z0.shape)}"
            )
        Z0 = Z0.reshape(problem.n_sources, B).clone()
        # a starting point worse than zero (e.g. a diverged network's output)
        # can stall the solver's warm start: those columns start from zero
        F0 = _l21.objective(D, M, Z0[:, :, None], lam, no)
        worse = ~(F0 <= _l21.zero_objective(M))
        if bool(worse.any()):
            logger.info(f"    {int(worse.sum())} starting point(s) worse than 0")
            Z0[:, worse] = 0.0
        Z0 = Z0.numpy()
    amax = _l21.alpha_max(D, M, no)
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
        rel = _l21.relative_gap(D, M[:, todo], Z[:, todo, None], lam[todo], no).numpy()
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


__all__ = [
    "ista",
    "fista",
    "relative_gap",
    "solve_lasso",
    "solve_mxne",
    "solve_irmxne",
    "position_lipschitz",
]
