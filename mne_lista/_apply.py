"""MNE glue shared by the learned solvers: data in, source estimates out.

The pieces below turn a batched solver of whitened data (a callable
``solve(X, lam) -> Z`` on torch tensors, one problem per column) into what
:func:`mne.inverse_sparse.mixed_norm` returns, in the same order as
``mixed_norm`` does it:

1. ``alpha`` (in %) -> ``lam`` per column with :func:`window_alpha_max`;
2. solve, then certify every column by its duality gap (float64) and finish
   the columns whose relative gap exceeds ``tol`` with the exact solver
   (:func:`certify`);
3. the active set is the union of the supports over the columns of the
   window (:func:`active_set`); debias on it with MNE's
   :func:`~mne.inverse_sparse.mxne_debiasing.compute_bias`; reapply the
   source weighting to get Am (:func:`make_estimate`);
4. output through MNE's own constructors (via :mod:`mne_lista._compat`), so
   the class follows the source space: SourceEstimate, VolSourceEstimate,
   MixedSourceEstimate, their vector variants with ``pick_ori='vector'``, or
   dipoles; residual ``Evoked`` and explained variance as ``mixed_norm``.

A learned L21 solver (one problem per window instead of per column) reuses
:func:`make_estimate` and :func:`window_alpha_max` with ``penalty='l21'``.
"""

import numpy as np
import torch
from mne import Evoked, EvokedArray
from mne.epochs import BaseEpochs
from mne.utils import (
    ProgressBar,
    _check_option,
    _validate_type,
    logger,
    use_log_level,
    warn,
)

from . import _compat
from ._lasso import alpha_max as _sample_alpha_max
from ._numba import numba_kernel
from ._problem import _pick_data
from .solvers import relative_gap, solve_lasso


def check_alpha(alpha):
    """Check that alpha is a number in [0, 100) (a % of alpha_max)."""
    _validate_type(alpha, "numeric", "alpha")
    alpha = float(alpha)
    if not 0.0 <= alpha < 100.0:
        raise ValueError(
            f"alpha must be in [0, 100) (a percentage of alpha_max, as in "
            f"mne.inverse_sparse.mixed_norm), got alpha = {alpha}"
        )
    return alpha


def check_pick_ori(pick_ori, problem):
    """Check pick_ori (None or 'vector', the latter for free orientation)."""
    _check_option("pick_ori", pick_ori, [None, "vector"])
    if pick_ori == "vector" and problem.n_orient == 1:
        raise ValueError(
            'pick_ori="vector" cannot be combined with a fixed orientation '
            "forward solution (loose=0)."
        )
    return pick_ori


@torch.no_grad()
def sample_alpha_max(problem, X, *, device="cpu"):
    """Per-column alpha_max: the smallest lam giving a zero solution, (B,).

    Computed in float64 on ``device``; ``X`` is whitened data (n, B).
    """
    D = problem.gain_tensor(device, torch.float64)
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64, device=device)
    return _sample_alpha_max(D, Xt, problem.n_orient).cpu().numpy()


@torch.no_grad()
def window_alpha_max(problem, M, *, penalty="lasso", device="cpu"):
    """alpha_max of a data window: the smallest reg. zeroing the whole window.

    Parameters
    ----------
    problem : LassoProblem
        The problem.
    M : array, shape (n, n_times)
        Whitened data of one window (an evoked response, one epoch).
    penalty : 'lasso' | 'l21'
        'lasso': one (group) Lasso per time sample with a common ``lam``;
        alpha_max is the max over the samples of the per-sample alpha_max.
        'l21': one mixed-norm problem over the window, as
        :func:`mne.inverse_sparse.mixed_norm` (``norm_l2inf(G.T @ M)``: the
        max over positions of the L2 norm over orientations and time).
    device : str | torch.device
        Where to compute.

    Returns
    -------
    alpha_max : float

    Notes
    -----
    Both are "the smallest regularization for which the estimate of the
    window is zero", which is what ``mixed_norm``'s alpha_max means, so that
    ``alpha`` has the same meaning for both problems. Scaling a per-sample
    Lasso by the L21 value instead would be wrong: the L2 norm over time is
    up to ``sqrt(n_times)`` times the largest per-sample value (on 'Right
    Auditory', 70-110 ms, 7 mm volume: 4.27 vs 1.15), so ``alpha=40`` would
    give ``lam`` above every sample's alpha_max and an all-zero estimate.
    """
    _check_option("penalty", penalty, ("lasso", "l21"))
    if penalty == "lasso":
        return float(sample_alpha_max(problem, M, device=device).max(initial=0.0))
    D = problem.gain_tensor(device, torch.float64)
    Mt = torch.as_tensor(np.asarray(M), dtype=torch.float64, device=device)
    U = D.T @ Mt
    sq = (U * U).reshape(problem.n_positions, -1).sum(1)
    return float(torch.sqrt(sq.max()).cpu()) if sq.numel() else 0.0


def _lam_vector(lam, n):
    """lam as a writable float64 array of shape (n,)."""
    return np.array(np.broadcast_to(np.asarray(lam, dtype=np.float64), (n,)))


def alpha_to_lam(alpha, alpha_max):
    """``lam = alpha / 100 * alpha_max`` (alpha in %, as mixed_norm)."""
    return check_alpha(alpha) / 100.0 * np.asarray(alpha_max, dtype=np.float64)


def exact_solve(problem, X, lam, *, tol, Z0=None):
    """Solve columns of whitened data to a relative duality gap below tol.

    The certified reference solver :func:`mne_lista.solvers.solve_lasso`
    (working set + Newton polish), warm started at ``Z0``.

    Returns
    -------
    Z : array, shape (m, B), float64
    """
    X = np.asarray(X, dtype=np.float64)
    lam = _lam_vector(lam, X.shape[1])
    Z = solve_lasso(problem, X, lam, tol=tol, Z0=Z0, verbose=False)
    return np.asarray(Z, dtype=np.float64).reshape(problem.n_sources, X.shape[1])


@torch.no_grad()
def certify(problem, X, Z, lam, *, tol=None, device="cpu"):
    """Duality-gap certificate of each column; finish uncertified columns.

    Parameters
    ----------
    problem : LassoProblem
        The problem.
    X : array, shape (n, B)
        Whitened data (float64).
    Z : Tensor | array, shape (m, B)
        Solutions from a fast solver (any dtype and device).
    lam : array, shape (B,)
        Regularization of each column.
    tol : float | None
        Largest relative duality gap (gap / (1/2 ||x||^2)) accepted; columns
        above it are re-solved by :func:`exact_solve`. None only measures.
    device : str | torch.device
        Where to compute the gaps (float64).

    Returns
    -------
    Z : array, shape (m, B)
        float64 solutions, certified to ``tol`` when given.
    rel_gap : array, shape (B,)
        Relative duality gap of each column of the returned ``Z``.
    n_resolved : int
        Number of columns finished by the exact solver.
    """
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64, device=device)
    Zt = torch.as_tensor(Z).to(device=device, dtype=torch.float64)
    lam = _lam_vector(lam, Xt.shape[1])
    rel_gap = relative_gap(problem, Xt, Zt, lam)
    Z = Zt.cpu().numpy()
    n_resolved = 0
    if tol is not None:
        bad = np.flatnonzero(~(rel_gap <= tol))  # NaN counts as bad
        n_resolved = len(bad)
        logger.info(
            f"    Certificate: {n_resolved}/{len(rel_gap)} sample(s) with a "
            f"relative duality gap > {tol:g}"
            + (", finished by the exact solver" if n_resolved else "")
        )
        if n_resolved:
            X_bad = Xt[:, bad].cpu().numpy()
            Z[:, bad] = exact_solve(problem, X_bad, lam[bad], tol=tol, Z0=Z[:, bad])
            rel_gap[bad] = relative_gap(problem, X_bad, Z[:, bad], lam[bad])
    if len(rel_gap):
        logger.info(
            f"    Relative duality gap per sample: median "
            f"{np.median(rel_gap):.2e}, max {np.max(rel_gap):.2e}"
        )
        useless = np.flatnonzero(~(rel_gap <= 1.0))
        if len(useless):  # (only without tol: those are re-solved)
            warn(
                f"{len(useless)} of {len(rel_gap)} sample(s) have a relative "
                f"duality gap above 1 (max {np.max(rel_gap):.3g}): there the "
                "fast solver's output is no estimate (a learned network whose "
                "steps diverge on these data); pass tol to finish them with "
                "the exact solver, or use the adaptive network (the default, "
                "StepLISTA(adaptive=True)), whose objective never increases"
            )
    return Z, rel_gap, n_resolved


@torch.no_grad()
def solve_window(problem, solve, M, lam, *, tol=None, device="cpu", dtype=None):
    """Solve each column of M with ``solve`` and certify it.

    Parameters
    ----------
    problem : LassoProblem
        The problem.
    solve : callable
        ``solve(X, lam) -> Z`` on torch tensors (X (n, B) on ``device`` in
        ``dtype``, lam (B,)), e.g. a trained network.
    M : array, shape (n, B)
        Whitened data, float64.
    lam : float | array, shape (B,)
        Regularization of each column.
    tol, device : see :func:`certify`.
    dtype : torch.dtype | None
        Precision of ``solve`` (float64 by default).

    Returns
    -------
    Z, rel_gap, n_resolved : see :func:`certify`.
    """
    dtype = torch.float64 if dtype is None else dtype
    M = np.asarray(M, dtype=np.float64)
    lam = _lam_vector(lam, M.shape[1])
    # columns with lam >= their alpha_max have the exact solution 0 (gap 0):
    # only the others go through the solver
    todo = np.flatnonzero(sample_alpha_max(problem, M, device=device) > lam)
    Z = np.zeros((problem.n_sources, M.shape[1]))
    rel_gap = np.zeros(M.shape[1])
    n_resolved = 0
    if len(todo):
        Xt = torch.as_tensor(M[:, todo], dtype=dtype, device=device)
        Zs = solve(Xt, torch.as_tensor(lam[todo], dtype=dtype, device=device))
        Z[:, todo], rel_gap[todo], n_resolved = certify(
            problem, M[:, todo], Zs, lam[todo], tol=tol, device=device
        )
    elif tol is not None:
        logger.info("    Certificate: every sample has the zero solution")
    return Z, rel_gap, n_resolved


def active_set(Z, n_orient):
    """Union over columns of the supports, as a boolean mask over rows (m,).

    With ``n_orient > 1`` a position is active when its block is non-zero in
    some column, and all of its ``n_orient`` rows are then active.
    """
    Z = np.asarray(Z)
    active = (Z.reshape(Z.shape[0] // n_orient, -1) != 0).any(1)
    return np.repeat(active, n_orient)


def _reduced_quadratic(M, G, X, n_orient):
    """``Q = E^T ((G^T G) o (X X^T)) E`` and ``b = E^T diag(G^T M X^T)``.

    ``E`` sums the ``n_orient`` rows of each position; built one pair of
    orientations at a time so that memory is ``O(P^2)`` (P positions).
    """
    GtM = G.T @ M
    b = (GtM * X).sum(1).reshape(-1, n_orient).sum(1)
    Q = 0.0
    for i in range(n_orient):
        for j in range(i, n_orient):
            Gi, Gj = G[:, i::n_orient], G[:, j::n_orient]
            Xi, Xj = X[i::n_orient], X[j::n_orient]
            term = (Gi.T @ Gj) * (Xi @ Xj.T)
            Q = Q + (term if i == j else term + term.T)
    return Q, b


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
    Q, b = _reduced_quadratic(np.asarray(M, dtype=np.float64), G, X, n_orient)
    P = len(b)
    if P <= 500:
        lip = float(np.linalg.eigvalsh(Q)[-1])
    else:
        from scipy.sparse.linalg import eigsh

        lip = 1.01 * float(eigsh(Q, k=1, which="LA", tol=1e-4)[0][0])
    d = np.ones(P)
    if lip > 0:
        d, n_iter = _debias_fista(Q, b, lip, max_iter, tol)
        if n_iter < max_iter:
            logger.debug(f"    Debiasing converged after {n_iter} iterations")
        else:
            logger.info(f"    Debiasing did not converge after {max_iter} iterations")
    return X * np.repeat(d, n_orient)[:, None]


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


def make_estimate(
    problem,
    Z,
    M,
    *,
    tmin,
    tstep,
    debias=True,
    pick_ori=None,
    return_as_dipoles=False,
    evoked=None,
    return_residual=False,
    active=None,
    prefix="    ",
    log=True,
):
    """MNE outputs of a solution, as :func:`~mne.inverse_sparse.mixed_norm`.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its ``forward``, ``source_weighting`` and ``info`` are
        used).
    Z : array, shape (m, T) | (n_active, T)
        Solution in the weighted (whitened) space: all rows, or only the
        ``active`` ones when ``active`` is given.
    M : array, shape (n, T)
        Whitened data.
    tmin, tstep : float
        Time of the first sample and sampling period.
    debias : bool
        Debias the amplitudes on the active set.
    pick_ori : None | 'vector'
        Keep the xyz components (vector source estimate).
    return_as_dipoles : bool
        Return a list of :class:`mne.Dipole` instead of a source estimate.
    evoked : Evoked | None
        The data, needed for ``return_residual``.
    return_residual : bool
        Also return the residual ``Evoked``.
    active : array of bool, shape (m,) | None
        Active rows of ``Z`` (computed from Z when None).
    prefix : str
        Prefix of the explained-variance log line.
    log : bool
        Log the explained variance (at the info level).

    Returns
    -------
    out : SourceEstimate | VolSourceEstimate | ... | list of Dipole
    residual : Evoked | None
    exp_var : float
        Explained variance (%) of the whitened data.
    """
    n_orient = problem.n_orient
    M = np.asarray(M, dtype=np.float64)
    if active is None:
        active = active_set(Z, n_orient)
        X = np.asarray(Z, dtype=np.float64)[active]
    else:
        active = np.asarray(active, dtype=bool)
        X = np.asarray(Z, dtype=np.float64)
    G_active = problem.gain[:, active]
    if not active.any():
        warn("No active dipoles found. alpha is too big.")
        M_est = np.zeros_like(M)
    elif debias:
        X = _debias(M, G_active, X, n_orient)
    sw = problem.source_weighting[active].copy()
    X = X * sw[:, None]  # Am
    sw[sw == 0] = 1.0
    gain_active = G_active / sw  # whitened data per Am
    if active.any():
        M_est = gain_active @ X
    if return_as_dipoles:
        out = _compat.make_dipoles_sparse(
            X, active, problem.forward, tmin, tstep, M, gain_active
        )
    else:
        out = _compat.make_sparse_stc(
            X, active, problem.forward, tmin, tstep, pick_ori=pick_ori
        )
    residual = None
    if return_residual:
        if evoked is None:
            raise ValueError("evoked is needed to compute the residual")
        residual = _compat.compute_residual(
            problem.forward, evoked, X, active, problem.info
        )
    with use_log_level(None if log else "warning"):
        exp_var = _compat.log_exp_var(M, M_est, prefix=prefix)
    return out, residual, exp_var


_debias = debias


def apply_evoked(
    problem,
    solve,
    evoked,
    alpha,
    *,
    debias=True,
    return_residual=False,
    return_as_dipoles=False,
    pick_ori=None,
    tol=None,
    device="cpu",
    dtype=None,
):
    """Localize an evoked response with a batched per-sample solver.

    One (group) Lasso per time sample, all with ``lam = alpha / 100 *
    alpha_max`` where alpha_max is that of the window (see
    :func:`window_alpha_max`), solved by ``solve``, certified (see
    :func:`certify`) and turned into MNE outputs (see :func:`make_estimate`).

    Returns
    -------
    out : SourceEstimate | ... | list of Dipole
    residual : Evoked | None
    certificate : dict
        ``rel_gap`` (per sample), ``n_resolved``, ``lam``, ``alpha_max``,
        ``exp_var``.
    """
    _validate_type(evoked, Evoked, "evoked")
    alpha = check_alpha(alpha)
    check_pick_ori(pick_ori, problem)
    M = problem.whiten(evoked)  # checks channels, bads, NaN
    a_max = window_alpha_max(problem, M, device=device)
    lam = alpha_to_lam(alpha, a_max)
    logger.info(
        f"    {M.shape[1]} sample(s), alpha={alpha:g}% of alpha_max="
        f"{a_max:.4g} -> lam={float(lam):.4g}"
    )
    Z, rel_gap, n_resolved = solve_window(
        problem, solve, M, lam, tol=tol, device=device, dtype=dtype
    )
    out, residual, exp_var = make_estimate(
        problem,
        Z,
        M,
        tmin=evoked.times[0],
        tstep=1.0 / evoked.info["sfreq"],
        debias=debias,
        pick_ori=pick_ori,
        return_as_dipoles=return_as_dipoles,
        evoked=evoked,
        return_residual=return_residual,
    )
    certificate = dict(
        rel_gap=rel_gap,
        n_resolved=n_resolved,
        lam=float(lam),
        alpha_max=a_max,
        exp_var=exp_var,
    )
    return out, residual, certificate


def _bytes_per_column(problem, itemsize):
    """Approximate peak memory of one column pushed through net + certificate.

    A few (m,) vectors in the net precision (iterate, gradient, temporary)
    and in float64 (certificate: solution, ``D^T r``, host copy), plus data.
    """
    return problem.n_sources * (3 * itemsize + 4 * 8) + problem.n_channels * 8 * 4


def epochs_batch_size(problem, *, batch_size=None, max_memory=None, itemsize=4):
    """Number of columns (time samples) per chunk for :func:`iter_epochs`.

    ``batch_size`` wins when given; otherwise as many columns as fit in
    ``max_memory`` bytes (default 512 MiB) by :func:`_bytes_per_column`.
    """
    if batch_size is not None:
        _validate_type(batch_size, "int", "batch_size")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)
    max_memory = 512 * 2**20 if max_memory is None else max_memory
    _validate_type(max_memory, "numeric", "max_memory")
    if max_memory <= 0:
        raise ValueError(f"max_memory must be positive (bytes), got {max_memory}")
    return max(1, int(max_memory // _bytes_per_column(problem, itemsize)))


def iter_epochs(
    problem,
    solve,
    epochs,
    alpha,
    *,
    batch_size=None,
    max_memory=None,
    debias=True,
    pick_ori=None,
    tol=None,
    device="cpu",
    dtype=None,
    certificates=None,
):
    """Localize each epoch: all epochs x times pushed through ``solve`` in chunks.

    Columns (epoch, time) are processed in chunks of ``batch_size`` columns
    (or as many as fit in ``max_memory`` bytes), whatever the epoch
    boundaries: a first pass computes each epoch's alpha_max (so ``lam`` is
    exactly that of applying to each epoch as an evoked response), a second
    pushes the chunks through ``solve``, certifies them and yields one
    estimate per epoch as soon as all its samples are done. Only the active
    rows of finished samples are kept, so memory does not grow with the
    number of epochs. Results do not depend on the chunking.

    Parameters are those of :func:`apply_evoked`; ``certificates`` is an
    optional dict filled with ``rel_gap`` (n_epochs, n_times), ``n_resolved``,
    ``lam`` and ``alpha_max`` (n_epochs,) as the generator advances.

    Returns
    -------
    stcs : generator
        One source estimate (or list of Dipole) per epoch... see apply_epochs.
    """
    _validate_type(epochs, BaseEpochs, "epochs")
    alpha = check_alpha(alpha)
    check_pick_ori(pick_ori, problem)
    dtype = torch.float64 if dtype is None else dtype
    itemsize = torch.empty((), dtype=dtype).element_size()
    bs = epochs_batch_size(
        problem, batch_size=batch_size, max_memory=max_memory, itemsize=itemsize
    )
    if problem.whitener is None:
        raise RuntimeError("This problem has no whitener (built from a gain).")
    # channel checks (missing, bad, EEG reference) on the info alone
    _pick_data(
        EvokedArray(np.zeros((len(epochs.ch_names), 1)), epochs.info), problem.ch_names
    )
    picks = [epochs.ch_names.index(c) for c in problem.ch_names]
    return _iter_epochs(
        problem,
        solve,
        epochs,
        alpha,
        picks,
        bs,
        debias=debias,
        pick_ori=pick_ori,
        tol=tol,
        device=device,
        dtype=dtype,
        certificates={} if certificates is None else certificates,
    )


def _whitened_epochs(problem, epochs, picks, e0, e1):
    """Whitened data of epochs e0..e1-1, shape (n, (e1 - e0) * n_times)."""
    data = epochs.get_data(picks=picks, item=np.arange(e0, e1))
    data = np.asarray(data, dtype=np.float64)
    if not np.isfinite(data).all():
        raise ValueError(
            f"data of epochs {e0}..{e1 - 1} contain NaN or infinite values"
        )
    data = np.matmul(problem.whitener, data)  # (e, n, T)
    return data.transpose(1, 0, 2).reshape(data.shape[1], -1)


def _iter_epochs(
    problem,
    solve,
    epochs,
    alpha,
    picks,
    bs,
    *,
    debias,
    pick_ori,
    tol,
    device,
    dtype,
    certificates,
):
    n_epochs, n_times = len(epochs), len(epochs.times)
    n_orient = problem.n_orient
    tmin, tstep = epochs.times[0], 1.0 / epochs.info["sfreq"]
    per_chunk = max(1, bs // n_times)  # epochs per chunk of the first pass
    # pass 1: alpha_max of each epoch (max over its samples)
    a_max = np.zeros(n_epochs)
    for e0 in range(0, n_epochs, per_chunk):
        e1 = min(n_epochs, e0 + per_chunk)
        X = _whitened_epochs(problem, epochs, picks, e0, e1)
        a_max[e0:e1] = (
            sample_alpha_max(problem, X, device=device).reshape(e1 - e0, n_times).max(1)
        )
    lam = alpha_to_lam(alpha, a_max)
    rel_gap = np.full((n_epochs, n_times), np.nan)
    certificates.update(alpha_max=a_max, lam=lam, rel_gap=rel_gap, n_resolved=0)
    logger.info(
        f"    {n_epochs} epoch(s) x {n_times} samples in chunks of {bs} "
        f"sample(s), alpha={alpha:g}%"
    )
    n_cols = n_epochs * n_times
    pieces = []  # (t0, t1, active positions, Z rows, M) of the current epoch
    cache = (0, 0, None)  # (e0, e1, whitened data) of the loaded epochs
    with ProgressBar(n_cols, mesg="Step-LISTA samples") as pbar:
        for c0 in range(0, n_cols, bs):
            c1 = min(n_cols, c0 + bs)
            e0, e1 = c0 // n_times, (c1 - 1) // n_times + 1
            if not (cache[0] <= e0 and e1 <= cache[1]):
                cache = (e0, e1, _whitened_epochs(problem, epochs, picks, e0, e1))
            X = cache[2][:, c0 - cache[0] * n_times : c1 - cache[0] * n_times]
            cols = np.arange(c0, c1)
            lam_c = lam[cols // n_times]
            Z, gap, n_res = solve_window(
                problem, solve, X, lam_c, tol=tol, device=device, dtype=dtype
            )
            rel_gap.reshape(-1)[c0:c1] = gap
            certificates["n_resolved"] += n_res
            for e in range(e0, e1):
                a = max(c0, e * n_times) - c0
                b = min(c1, (e + 1) * n_times) - c0
                Zp = Z[:, a:b]
                pos = np.flatnonzero(
                    (np.abs(Zp).reshape(-1, n_orient * (b - a)) > 0).any(1)
                )
                rows = (pos[:, None] * n_orient + np.arange(n_orient)).ravel()
                t0 = c0 + a - e * n_times
                pieces.append((t0, t0 + b - a, rows, Zp[rows], X[:, a:b]))
                if t0 + b - a == n_times:
                    yield _finish_epoch(
                        problem,
                        pieces,
                        n_times,
                        tmin=tmin,
                        tstep=tstep,
                        debias=debias,
                        pick_ori=pick_ori,
                    )
                    pieces = []
            pbar.update(c1)
    logger.info(
        f"    Relative duality gap over all samples: median "
        f"{np.median(rel_gap):.2e}, max {np.max(rel_gap):.2e}"
        + (
            f"; {certificates['n_resolved']} sample(s) finished by the exact "
            f"solver (tol={tol:g})"
            if tol is not None
            else ""
        )
    )


def _finish_epoch(problem, pieces, n_times, *, tmin, tstep, debias, pick_ori):
    rows = np.unique(np.concatenate([p[2] for p in pieces]))
    X = np.zeros((len(rows), n_times))
    M = np.zeros((problem.n_channels, n_times))
    for t0, t1, r, Zr, Mp in pieces:
        X[np.searchsorted(rows, r), t0:t1] = Zr
        M[:, t0:t1] = Mp
    active = np.zeros(problem.n_sources, bool)
    active[rows] = True
    with use_log_level("warning"):
        out, _, _ = make_estimate(
            problem,
            X,
            M,
            tmin=tmin,
            tstep=tstep,
            debias=debias,
            pick_ori=pick_ori,
            active=active,
            log=False,
        )
    return out


__all__ = [
    "active_set",
    "apply_evoked",
    "epochs_batch_size",
    "iter_epochs",
    "alpha_to_lam",
    "certify",
    "check_alpha",
    "check_pick_ori",
    "debias",
    "exact_solve",
    "make_estimate",
    "sample_alpha_max",
    "solve_window",
    "window_alpha_max",
]
