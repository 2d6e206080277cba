"""MNE glue shared by the estimators: data in, source estimates out.

One linear path, in the order :func:`mne.inverse_sparse.mixed_norm` follows:

1. the channels of the data are checked against the model's and the data
   whitened, once, a batch of epochs at a time (:func:`iter_estimates`; an
   evoked response is one epoch, :func:`apply_evoked`);
2. the estimator's batch solver (``estimator._solve_batch``) turns the
   whitened epochs into its problems, ``alpha`` (in %) into ``lam``, solves
   and certifies them by their duality gaps;
3. per epoch, the active set is debiased (:mod:`mne_lista._debias`), the
   source weighting reapplied (Am) and the output made by MNE's own
   constructors (:func:`make_estimate`, via :mod:`mne_lista._compat`), so
   the class follows the source space: SourceEstimate, VolSourceEstimate,
   MixedSourceEstimate, their vector variants with ``pick_ori='vector'``, or
   dipoles; residual ``Evoked`` and explained variance as ``mixed_norm``.
"""

import numpy as np
import torch
from mne import Evoked
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
from ._debias import debias as _debias
from ._problem import _check_channels_of


def check_alpha(alpha, *, allow_sure=False):
    """Check alpha: a number in [0, 100) (a % of alpha_max), or 'sure'.

    With MNE's errors for :func:`~mne.inverse_sparse.mixed_norm`'s alpha.
    """
    _validate_type(alpha, ("numeric", str) if allow_sure else "numeric", "alpha")
    if isinstance(alpha, str):
        _check_option("alpha", alpha, ("sure",))
        return alpha
    if not 0.0 <= alpha < 100.0:
        raise ValueError(
            f'If not equal to "sure" alpha must be in [0, 100). Got alpha = {alpha}'
            if allow_sure
            else f"alpha must be in [0, 100) (a percentage of alpha_max, as in "
            f"mne.inverse_sparse.mixed_norm), got alpha = {alpha}"
        )
    return float(alpha)


def check_mxne_options(alpha, tol, n_mxne_iter, weights, sure_alpha_grid):
    """Check mixed_norm's options beyond alpha (MNE's errors); the SURE grid.

    Returns the alpha grid of SURE (in %): MNE's 'auto' is 15 values from
    100 down to 10, geometrically spaced.
    """
    _validate_type(n_mxne_iter, "int", "n_mxne_iter")
    if n_mxne_iter < 1:
        raise ValueError(
            "MxNE has to be computed at least 1 time. "
            f"Requires n_mxne_iter >= 1, got {n_mxne_iter}"
        )
    if not (
        isinstance(sure_alpha_grid, np.ndarray | list) or sure_alpha_grid == "auto"
    ):
        raise ValueError(
            'If not equal to "auto" sure_alpha_grid must be an '
            f"array. Got {type(sure_alpha_grid)}"
        )
    needs_tol = alpha == "sure" or n_mxne_iter > 1 or weights is not None
    if tol is None and needs_tol:
        raise ValueError(
            "alpha='sure', n_mxne_iter > 1 and weights need the exact solver: "
            "pass tol (e.g. 2e-4, mixed_norm's default tolerance)"
        )
    if isinstance(sure_alpha_grid, str):
        return np.geomspace(100, 10, num=15)
    grid = np.asarray(sure_alpha_grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all((grid >= 0) & (grid <= 100)):
        raise ValueError(
            f"sure_alpha_grid must hold alphas in [0, 100], got {sure_alpha_grid}"
        )
    return grid


def check_tol(tol, alpha):
    """None, or a relative duality gap in (0, 1) (alpha > 0 then)."""
    if tol is None:
        return None
    _validate_type(tol, "numeric", "tol")
    tol = float(tol)
    if not 0 < tol < 1:
        raise ValueError(f"tol must be None or a float in (0, 1), got {tol!r}")
    if alpha == 0:
        raise ValueError(
            "alpha=0 with tol: without regularization there is no sparse "
            "solution to certify (more sources than channels)"
        )
    return tol


def check_pick_ori(pick_ori, problem):
    """Check pick_ori (None or 'vector', the latter for free orientation)."""
    _check_option("pick_ori", pick_ori, [None, "vector"])
    if pick_ori == "vector" and problem.n_orient == 1:
        raise ValueError(
            'pick_ori="vector" cannot be combined with a fixed orientation '
            "forward solution (loose=0)."
        )
    return pick_ori


def alpha_to_lam(alpha, alpha_max):
    """``lam = alpha / 100 * alpha_max`` (alpha in %, as mixed_norm)."""
    return alpha / 100.0 * alpha_max


def active_set(X, n_orient):
    """Positions non-zero in some column of X, as a boolean mask over rows (m,)."""
    X = np.asarray(X)
    active = (X.reshape(X.shape[0] // n_orient, -1) != 0).any(1)
    return np.repeat(active, n_orient)


def make_estimate(
    problem,
    X,
    M,
    *,
    active,
    tmin,
    tstep,
    debias=True,
    pick_ori=None,
    return_as_dipoles=False,
    evoked=None,
    return_residual=False,
    log=True,
):
    """MNE outputs of a solution, as :func:`~mne.inverse_sparse.mixed_norm`.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its ``forward``, ``source_weighting`` and ``info``).
    X : array, shape (n_active, T)
        Solution rows of the ``active`` set, in the weighted (whitened) space.
    M : array, shape (n, T)
        Whitened data.
    active : array of bool, shape (m,)
        Active rows.
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
    active = np.asarray(active, dtype=bool)
    X = np.asarray(X, dtype=np.float64)
    G_active = problem.gain[:, active]
    zero_data = not np.any(M)
    if not active.any() and not zero_data:  # (zero data: zero is exact)
        warn("No active dipoles found. alpha is too big.")
    elif active.any() and debias:
        X = _debias(M, G_active, X, n_orient)
    sw = problem.source_weighting[active].copy()
    X = X * sw[:, None]  # Am
    sw[sw == 0] = 1.0
    gain_active = G_active / sw  # whitened data per Am
    M_est = gain_active @ X if active.any() else np.zeros_like(M)
    full = problem.full_active(active)  # over the forward's columns (weights)
    if return_as_dipoles:
        out = _compat.make_dipoles_sparse(
            X, full, problem.forward, tmin, tstep, M, gain_active
        )
    else:
        out = _compat.make_sparse_stc(
            X, full, problem.forward, tmin, tstep, pick_ori=pick_ori
        )
    residual = None
    if return_residual:
        residual = _compat.compute_residual(
            problem.forward, evoked, X, full, problem.info
        )
    with use_log_level(None if log else "warning"):
        if zero_data:
            logger.info("    Zero data: the zero estimate is exact")
            exp_var = np.nan  # 0 / 0
        else:
            exp_var = _compat.log_exp_var(M, M_est, prefix="    ")
    return out, residual, exp_var


def _whiten(problem, data, what):
    """Whitened data (n, E, T) float64 from channel data (E, n_ch, T)."""
    data = np.asarray(data, dtype=np.float64)
    if not np.isfinite(data).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return np.matmul(problem.whitener, data).transpose(1, 0, 2)


def _bytes_per_column(problem):
    """Approximate peak memory of one column (sample or temporal component).

    A few (m,) vectors in float32 in the network (iterate, gradient,
    temporary) and in float64 (certificate: solution, ``G^T r``, host copy),
    plus the data.
    """
    return problem.n_sources * (3 * 4 + 4 * 8) + problem.n_channels * 8 * 4


def epochs_per_batch(problem, n_columns, *, batch_size=None, max_memory=None):
    """Epochs per batch: ``batch_size``, or as many as fit in ``max_memory``.

    ``n_columns`` is the number of columns an epoch becomes in the solver
    (time samples, or temporal components); ``max_memory`` defaults to 512
    MiB; a batch holds at least one epoch.
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
    return max(1, int(max_memory // (n_columns * _bytes_per_column(problem))))


def _check_debias(debias, debias_ok, active, problem):
    """Whether to debias; a warning when the solver said it is ill-posed."""
    if debias and not debias_ok:
        warn(
            f"debiasing skipped: the active set ({int(active.sum())} source "
            f"components) is not smaller than the number of channels "
            f"({problem.n_channels}), the debiasing least squares would be "
            "ill-posed; the network did not converge on this window: pass tol "
            "to solve it exactly"
        )
    return debias and debias_ok


_COUNTS = ("n_resolved", "n_fallback")


def _merge_certificates(total, part):
    """Accumulate a batch's certificate: arrays concatenated, counts summed."""
    for key, value in part.items():
        if key not in total:
            total[key] = value
        elif isinstance(value, np.ndarray):
            total[key] = np.concatenate([total[key], value])
        elif key in _COUNTS:
            total[key] += value
        else:
            total[key] = value


@torch.no_grad()
def _solve(estimator, M, alpha, tol, solve_kw):
    """The estimator's batch solve on whitened epochs (n, E, T), no grad."""
    Mt = torch.as_tensor(M, dtype=torch.float64, device=estimator.device)
    return estimator._solve_batch(Mt, alpha, tol=tol, **solve_kw)


def iter_estimates(
    estimator,
    epochs,
    alpha,
    *,
    tol=None,
    batch_size=None,
    max_memory=None,
    debias=True,
    pick_ori=None,
    **solve_kw,
):
    """Localize every epoch: batches of epochs through the estimator's solver.

    Epochs are read, whitened and solved a batch at a time (``batch_size``
    epochs, or as many as fit in ``max_memory`` bytes), and one estimate is
    yielded per epoch; only the active rows of each solution are kept, so
    memory does not grow with the number of epochs. Each epoch is solved as
    an evoked response would be (its own alpha_max), so results do not
    depend on the batching. ``estimator.certificate_`` is filled as the
    generator advances.
    """
    problem = estimator.problem
    picks = _check_channels_of(problem, epochs)
    n_epochs, n_times = len(epochs), len(epochs.times)
    n_columns = estimator._columns_per_epoch(n_times, **solve_kw)
    per_batch = epochs_per_batch(
        problem, n_columns, batch_size=batch_size, max_memory=max_memory
    )
    tmin, tstep = epochs.times[0], 1.0 / epochs.info["sfreq"]
    cert = estimator.certificate_ = dict()
    logger.info(
        f"    {n_epochs} epoch(s) x {n_times} samples in batches of {per_batch} "
        f"epoch(s), alpha={alpha if isinstance(alpha, str) else f'{alpha:g}%'}"
    )
    # updated from this thread: no with-block (MNE's ProgressBar then starts a
    # thread for parallel workers' updates, whose join took 19 ms per call)
    pbar = ProgressBar(n_epochs, mesg=f"{type(estimator).__name__} epochs")
    for e0 in range(0, n_epochs, per_batch):
        e1 = min(n_epochs, e0 + per_batch)
        data = epochs.get_data(picks=picks, item=np.arange(e0, e1))
        M = _whiten(problem, data, f"data of epochs {e0}..{e1 - 1}")
        with use_log_level("warning"):
            solutions, part = _solve(estimator, M, alpha, tol, solve_kw)
        _merge_certificates(cert, part)
        for active, X, M_e, debias_ok in solutions:
            with use_log_level("warning"):
                out, _, _ = make_estimate(
                    problem,
                    X,
                    M_e,
                    active=active,
                    tmin=tmin,
                    tstep=tstep,
                    debias=_check_debias(debias, debias_ok, active, problem),
                    pick_ori=pick_ori,
                    log=False,
                )
            yield out
        pbar.update(e1)
    del pbar  # closes the bar
    if n_epochs:
        gaps = cert["rel_gap"]
        logger.info(
            f"    Relative duality gap over all problems: median "
            f"{np.median(gaps):.2e}, max {np.max(gaps):.2e}"
            + (f"; {cert['n_resolved']} solved exactly (tol={tol:g})" if tol else "")
        )


def apply_evoked(
    estimator,
    evoked,
    alpha,
    *,
    tol=None,
    debias=True,
    pick_ori=None,
    return_residual=False,
    return_as_dipoles=False,
    **solve_kw,
):
    """Localize an evoked response: the path of :func:`iter_estimates`, one epoch.

    Returns the estimate, the residual (or None) and fills
    ``estimator.certificate_`` (with the explained variance ``exp_var``).
    """
    _validate_type(evoked, Evoked, "evoked")
    problem = estimator.problem
    picks = _check_channels_of(problem, evoked)
    M = _whiten(problem, evoked.data[picks][None], "data")
    solutions, cert = _solve(estimator, M, alpha, tol, solve_kw)
    active, X, M_e, debias_ok = solutions[0]
    out, residual, exp_var = make_estimate(
        problem,
        X,
        M_e,
        active=active,
        tmin=evoked.times[0],
        tstep=1.0 / evoked.info["sfreq"],
        debias=_check_debias(debias, debias_ok, active, problem),
        pick_ori=pick_ori,
        return_as_dipoles=return_as_dipoles,
        evoked=evoked,
        return_residual=return_residual,
    )
    cert["exp_var"] = exp_var
    if cert["rel_gap"].ndim == 2:  # per-sample problems of one epoch: (T,)
        cert["rel_gap"] = cert["rel_gap"][0]
    estimator.certificate_ = cert
    return out, residual


def check_apply_args(estimator, inst, alpha, tol, pick_ori, kind):
    """The checks shared by apply and apply_epochs; returns alpha and tol."""
    _validate_type(inst, Evoked if kind == "evoked" else BaseEpochs, kind)
    alpha = check_alpha(alpha, allow_sure=getattr(estimator, "_allow_sure", False))
    tol = check_tol(tol, alpha)
    check_pick_ori(pick_ori, estimator.problem)
    if tol is None and alpha != "sure":
        estimator._check_lam_range(alpha)
    return alpha, tol


__all__ = [
    "active_set",
    "alpha_to_lam",
    "apply_evoked",
    "check_alpha",
    "check_mxne_options",
    "check_pick_ori",
    "check_tol",
    "epochs_per_batch",
    "iter_estimates",
    "make_estimate",
]
