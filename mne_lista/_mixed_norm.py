"""A drop-in :func:`mne.inverse_sparse.mixed_norm`, solved by the certified solver.

Thin glue: the arguments are checked as MNE checks them, the problem is
built once (:class:`~mne_lista.StepMxNE`'s, MNE's ``_prepare_gain`` with the
weights) and the evoked response goes through the estimators' one path
(:meth:`mne_lista.StepMxNE.apply`: whitening, time_pca, the batched
working-set solver, SURE, irMxNE, debiasing, MNE's output constructors).
No network is trained or used.
"""

import numpy as np
from mne import Evoked
from mne.utils import _check_option, _validate_type, logger, verbose

from . import _apply

# MNE's tolerance is on the absolute duality gap, tol * ||M||_F^2 (the
# time_pca'd whitened data, mixed_norm's "tol *= sum_squared(M)"); ours is
# relative to 1/2 ||M||_F^2
_MNE_TO_RELATIVE_GAP = 2.0
# The estimate is solved this much tighter than MNE's tolerance: two
# solutions certified to MNE's tolerance can differ by weak sources (on the
# 10 mm volume, one at 1.6 % of the peak that the optimum does not have).
# Where the answer depends on the precision, MNE's tolerance is kept: SURE's
# grid (its selected alpha depends on the precision of the solutions) and
# irMxNE (non-convex: its result depends on when its reweighting stops,
# MNE's rule being on amplitude changes below its tolerance).
_TIGHTER = 0.01


@verbose
def mixed_norm(
    evoked,
    forward,
    noise_cov,
    alpha="sure",
    loose="auto",
    depth=0.8,
    maxit=3000,
    tol=1e-4,
    active_set_size=10,
    debias=True,
    time_pca=True,
    weights=None,
    weights_min=0.0,
    solver="auto",
    n_mxne_iter=1,
    return_residual=False,
    return_as_dipoles=False,
    dgap_freq=10,
    rank=None,
    pick_ori=None,
    sure_alpha_grid="auto",
    random_state=None,
    verbose=None,
    *,
    rng=None,
):
    """Mixed-norm estimate (MxNE, irMxNE), as :func:`mne.inverse_sparse.mixed_norm`.

    The same signature, defaults, errors and outputs as MNE's ``mixed_norm``,
    the problem solved by mne-lista's certified batched working-set solver
    (:func:`mne_lista.solve_mxne`): the estimate's duality gap is at most
    ``tol * ||M||_F^2`` (``M`` the whitened data on its temporal
    components), MNE's stopping rule, and in fact 100 times less for MxNE,
    so that no weak source that the optimum lacks survives (irMxNE keeps
    MNE's tolerance: where its reweighting stops depends on it). ``alpha='sure'`` solves
    the SURE grid and its perturbed copy as one batch per alpha, warm
    started along the grid, at MNE's tolerance (the selected alpha depends
    on it); the selected alpha is logged, as MNE logs it. For the
    certificates (duality gaps, SURE curve, selected alpha), use
    :meth:`mne_lista.StepMxNE.apply` with ``tol`` (its ``certificate_``).

    Parameters
    ----------
    evoked : instance of Evoked | list of Evoked
        The data (a list of one Evoked; several are not supported yet).
    forward : instance of Forward
        The forward operator.
    noise_cov : instance of Covariance
        The noise covariance (the whitener).
    alpha : float | 'sure'
        Regularization in [0, 100) (%% of alpha_max), or 'sure' (default):
        chosen on ``sure_alpha_grid`` by Stein's unbiased risk estimate.
    %(loose)s
    %(depth)s
    maxit : int
        Accepted for compatibility; the solver's budgets are its own.
    tol : float
        Tolerance on the duality gap, relative to ``||M||_F^2`` (MNE's).
    active_set_size : int | None
        Accepted for compatibility; the working sets hold at least 20
        positions and twice the current support.
    debias : bool
        Remove the amplitude bias of the penalty on the active set.
    time_pca : bool | int
        As MNE: True solves on all temporal components (the same problem as
        on the data; False is treated as True), an int on that many.
    weights : None | array | SourceEstimate
        A prior on the source positions (e.g. dSPM), as MNE applies it.
    weights_min : float
        Leave out the positions whose weight is not above it.
    solver : 'cd' | 'bcd' | 'auto'
        Accepted for compatibility (checked as MNE does); the solver is
        always the batched working-set block coordinate descent.
    n_mxne_iter : int
        Number of MxNE rounds; above 1, irMxNE (log-penalty reweighting).
    return_residual : bool
        Also return the residual as an Evoked.
    return_as_dipoles : bool
        Return a list of Dipole.
    dgap_freq : int | float
        Accepted for compatibility (checked as MNE does); our solver
        computes its duality gaps on its own schedule.
    %(rank_none)s
    %(pick_ori)s
    sure_alpha_grid : array | 'auto'
        The alphas of SURE; 'auto' is 15 values from 100 to 10 (geometric).
    random_state : None | int | instance of RandomState
        The seed of SURE's random perturbation, as MNE's (the same seed
        draws the same perturbation).
    %(verbose)s
    rng : None | int | instance of Generator
        As MNE's ``rng`` (give either ``rng`` or ``random_state``).

    Returns
    -------
    stc : SourceEstimate | VolSourceEstimate | ... | list of Dipole
        The estimate (the class follows the source space, as MNE).
    residual : instance of Evoked
        Only with ``return_residual=True``.
    """
    from .mxne import StepMxNE

    alpha = _apply.check_alpha(alpha, allow_sure=True)
    _apply.check_mxne_options(alpha, tol, n_mxne_iter, None, sure_alpha_grid)
    _validate_type(dgap_freq, "numeric", "dgap_freq")
    if dgap_freq <= 0.0:
        raise ValueError(
            f"dgap_freq must be a positive integer. Got dgap_freq = {dgap_freq}"
        )
    _validate_type(solver, str, "solver")
    _check_option("solver", solver, ("cd", "bcd", "auto"))
    _validate_type(tol, "numeric", "tol")
    if not 0 < tol < 1 / _MNE_TO_RELATIVE_GAP:
        raise ValueError(f"tol must be in (0, 0.5), got {tol}")
    if rng is not None and random_state is not None:
        raise TypeError("Specify only one of rng or random_state")
    seed = np.random.default_rng(rng) if rng is not None else random_state
    if isinstance(evoked, list):
        if len(evoked) != 1:
            raise NotImplementedError(
                f"mne_lista.mixed_norm takes one Evoked (got a list of "
                f"{len(evoked)}); localize them one by one or with "
                "StepMxNE.apply_epochs"
            )
        evoked = evoked[0]
    _validate_type(evoked, Evoked, "evoked")
    est = StepMxNE(  # the exact solver only: no network steps needed
        forward,
        noise_cov,
        evoked.info,
        n_layers=1,
        loose=loose,
        depth=depth,
        rank=rank,
        pretrained=False,
    )
    out = est.apply(
        evoked,
        alpha,
        debias=debias,
        return_residual=return_residual,
        return_as_dipoles=return_as_dipoles,
        pick_ori=pick_ori,
        tol=(_TIGHTER if n_mxne_iter == 1 else 1.0) * _MNE_TO_RELATIVE_GAP * tol,
        sure_tol=_MNE_TO_RELATIVE_GAP * tol,
        time_pca=True if time_pca is False else time_pca,
        n_mxne_iter=n_mxne_iter,
        weights=weights,
        weights_min=weights_min,
        sure_alpha_grid=sure_alpha_grid,
        random_state=seed,
    )
    if alpha == "sure":  # MNE's log line (also in StepMxNE's certificate_)
        logger.info(f"Selected alpha: {est.certificate_['alpha'][0]}")
    return out
