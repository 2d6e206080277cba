"""The one place where mne-lista touches private MNE-Python helpers.

MNE may move or change these; every use in mne-lista goes through this
module, and ``tests/test_compat.py`` checks each against MNE's public
behaviour so that a change in MNE shows up as a failing test here.
"""

from types import SimpleNamespace

import numpy as np
from mne.inverse_sparse import mxne_inverse as _mxne_inverse
from mne.minimum_norm import inverse as _mn_inverse


def prepare_gain(forward, info, noise_cov, *, depth, loose, rank):
    """MNE's ``_prepare_gain`` exactly as ``mixed_norm`` calls it.

    Returns (forward, gain, gain_info, whitener, source_weighting), with the
    forward converted (orientation) and restricted to the good channels.
    """
    forward, gain, gain_info, whitener, source_weighting, _ = (
        _mxne_inverse._prepare_gain(
            forward, info, noise_cov, True, depth, loose, rank, None, None
        )
    )
    return forward, gain, gain_info, whitener, source_weighting


def prepare_weights(forward, gain, source_weighting, weights, weights_min):
    """MNE's ``_prepare_weights``: a prior on the source positions, as ``mixed_norm``.

    ``weights`` (an array over positions or a SourceEstimate, whose peak
    absolute value per position is used) is normalized by its maximum; the
    gain columns and the source weighting are multiplied by it and the
    positions whose normalized weight is not above ``weights_min / max``
    are dropped. Works on copies. Returns (gain, source_weighting, mask),
    ``mask`` (bool over the gain's columns) selecting the kept columns.
    """
    gain, sw, mask = _mxne_inverse._prepare_weights(
        forward,
        np.array(gain, dtype=np.float64),
        np.array(source_weighting, dtype=np.float64),
        weights,
        weights_min,
    )
    return gain, sw, mask


def safe_svd(A):
    """MNE's ``_safe_svd`` (thin): the SVD ``mixed_norm`` computes ``time_pca`` with.

    Returns (U, s, Vh); LAPACK's signs, so that a random perturbation drawn
    on ``U * s`` (SURE) is the one ``mixed_norm`` draws.
    """
    from mne.fixes import _safe_svd

    return _safe_svd(A, full_matrices=False)


def check_reference(info):
    """Raise if EEG channels of info lack an average reference projector."""
    _mn_inverse._check_reference(SimpleNamespace(info=info))


def make_sparse_stc(X, active_set, forward, tmin, tstep, *, pick_ori=None):
    """MNE's ``_make_sparse_stc``: active rows (Am) -> source estimate.

    The class follows the source space of ``forward`` (SourceEstimate,
    VolSourceEstimate, MixedSourceEstimate, their Vector variants with
    ``pick_ori='vector'``); free orientations are combined (norm over xyz)
    unless ``pick_ori='vector'``.
    """
    return _mxne_inverse._make_sparse_stc(
        X, active_set, forward, tmin, tstep, pick_ori=pick_ori, verbose=False
    )


def make_dipoles_sparse(X, active_set, forward, tmin, tstep, M, gain_active):
    """MNE's ``_make_dipoles_sparse``: active rows (Am) -> list of Dipole.

    ``M`` is the whitened data and ``gain_active`` the whitened gain of the
    active rows in data units per Am (``gain_active @ X`` estimates ``M``).
    """
    return _mxne_inverse._make_dipoles_sparse(
        X, active_set, forward, tmin, tstep, M, gain_active, verbose=False
    )


def compute_residual(forward, evoked, X, active_set, info):
    """MNE's ``_compute_residual``: ``evoked - forward(X)`` on info's channels.

    Projectors active in ``evoked`` are applied to the modeled data, as
    ``mixed_norm`` does.
    """
    return _mxne_inverse._compute_residual(forward, evoked, X, active_set, info)


def log_exp_var(data, est, prefix="    "):
    """MNE's ``_log_exp_var``: log and return the explained variance (%)."""
    return _mn_inverse._log_exp_var(data, est, prefix=prefix)


def mixed_norm_solver(
    M,
    G,
    lam,
    *,
    n_orient,
    tol,
    maxit=3000,
    active_set_size=10,
    active_set_init=None,
    debias=False,
):
    """MNE's ``mixed_norm_solver``: the exact L21 (MxNE) solver of ``mixed_norm``.

    Solves ``min_X 1/2 ||M - G X||_F^2 + lam ||X||_21`` (block coordinate
    descent with active sets; ``lam`` in the units of ``G``, i.e. MNE's
    ``alpha`` after its scaling of the gain) to an absolute duality gap
    ``tol``.

    Returns
    -------
    X : array, shape (n_active, n_times)
        Rows of the active set.
    active_set : array of bool, shape (n_sources,)
    gap : float
        Final duality gap.
    """
    import numpy as np
    from mne.inverse_sparse import mxne_optim

    active_set_init = (
        None if active_set_init is None else np.array(active_set_init, dtype=bool)
    )
    X, active_set, _, gap = mxne_optim.mixed_norm_solver(
        np.asarray(M, dtype=np.float64),
        np.asarray(G, dtype=np.float64),
        float(lam),
        maxit=maxit,
        tol=tol,
        active_set_size=active_set_size,
        debias=debias,
        n_orient=n_orient,
        solver="auto",
        return_gap=True,
        active_set_init=active_set_init,
        verbose=False,
    )
    return X, active_set, float(gap)
