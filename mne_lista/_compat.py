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
    """MNE's ``_prepare_gain`` exactly as ``mixed_norm`` calls it, without its repeats.

    Returns (forward, gain, gain_info, whitener, source_weighting), with the
    forward converted (orientation) and restricted to the good channels:
    the outputs of ``mxne_inverse._prepare_gain(forward, info, noise_cov,
    True, depth, loose, rank, None, None)``.

    MNE's ``_prepare_forward`` prepares the noise covariance three times
    (the depth prior's whitener with ``limit_depth_chs='whiten'``, then
    ``prepare_noise_cov``, then ``compute_whitener`` on the prepared one),
    each with the same channels, projectors and rank, hence the same
    eigendecomposition. Here it is prepared once (``prepare_noise_cov``,
    then ``compute_whitener`` on the prepared covariance, which MNE allows
    without re-preparing), the gain is whitened once, and the depth prior
    (``'whiten'``) is MNE's ``compute_depth_prior`` on the whitened gain with
    ``limit_depth_chs=False``: the same code path as ``'whiten'`` once the
    gain is whitened, as long as ``limit`` is None (``depth_sparse``'s
    default). The rest are MNE's steps in MNE's order (orientation
    conversions, channel selection, orientation prior, scaling).

    Falls back to MNE's ``_prepare_gain`` itself where this would differ or
    where MNE raises: a depth dict with ``limit_depth_chs='whiten'`` and a
    ``limit`` (the limit rule then depends on ``limit_depth_chs``), a
    negative depth exponent, a fixed-orientation inverse on a volume source
    space, ``loose < 1`` on a volume source space, a fixed-orientation
    forward with ``loose > 0`` or with depth weighting and
    ``allow_fixed_depth=False``. A rank mismatch warning of MNE's whitener
    (``on_rank_mismatch='warn'``) is issued once instead of once per
    preparation.
    """
    from mne.cov import compute_whitener, prepare_noise_cov
    from mne.forward import (
        Forward,
        _select_orient_forward,
        compute_depth_prior,
        compute_orient_prior,
        convert_forward_solution,
        is_fixed_orient,
    )
    from mne.forward.forward import _triage_loose
    from mne.utils import _check_depth, logger

    depth_kw = _check_depth(depth, "depth_sparse")
    loose_d = _triage_loose(forward["src"], loose, "auto")
    fixed_inverse = all(v == 0.0 for v in loose_d.values())
    constrained_inverse = any(v < 1.0 for v in loose_d.values())
    exp = depth_kw["exp"]
    exp = None if exp is None else float(exp)
    limit_depth_chs = depth_kw["limit_depth_chs"]
    allow_fixed_depth = depth_kw["allow_fixed_depth"]
    fixed_fwd = is_fixed_orient(forward)
    if (
        (exp is not None and exp < 0)  # MNE raises
        or (exp and limit_depth_chs == "whiten" and depth_kw["limit"] is not None)
        or (fixed_inverse and "volume" in loose_d)  # MNE raises
        or loose_d.get("volume", 1) < 1  # MNE raises
        or (fixed_fwd and not fixed_inverse)  # MNE raises
        or (fixed_fwd and exp and not allow_fixed_depth)  # MNE raises
    ):
        return _prepare_gain_mne(forward, info, noise_cov, depth, loose, rank)
    exp = exp or None  # alias 0. -> None, as MNE

    # MNE's _prepare_forward, step by step
    forward = forward.copy()
    if fixed_inverse:
        if not fixed_fwd and allow_fixed_depth:
            logger.info("Converting forward solution to fixed orientation")
            convert_forward_solution(
                forward, force_fixed=True, use_cps=True, copy=False
            )
    elif constrained_inverse and not forward["surf_ori"]:
        logger.info("Converting forward solution to surface orientation")
        convert_forward_solution(forward, surf_ori=True, use_cps=True, copy=False)
    forward, info_picked = _select_orient_forward(forward, info, noise_cov, copy=False)
    ch_names = info_picked["ch_names"]
    logger.info("Selected %d channels", len(ch_names))

    # the noise covariance prepared once: the whitener of the depth prior
    # ('whiten') and of the gain are both this one
    logger.info("Whitening the forward solution.")
    cov = prepare_noise_cov(noise_cov, info, ch_names, rank, on_rank_mismatch="warn")
    whitener, _ = compute_whitener(cov, pca=True, verbose=False)
    gain = np.dot(whitener, forward["sol"]["data"])

    if exp is None:
        depth_prior = None
    elif limit_depth_chs == "whiten":
        # compute_depth_prior's 'whiten' is np.dot(whitener, G) then the
        # all-channel path; with limit=None the limit_depth_chs value is not
        # used further
        white = Forward(forward)
        white["sol"] = dict(forward["sol"], data=gain)
        depth_prior = compute_depth_prior(
            white,
            info_picked,
            exp=exp,
            limit=None,
            limit_depth_chs=False,
            combine_xyz=depth_kw["combine_xyz"],
        )
    else:  # no whitening in it: MNE's call as it is
        depth_prior = compute_depth_prior(
            forward,
            info_picked,
            exp=exp,
            limit=depth_kw["limit"],
            limit_depth_chs=limit_depth_chs,
            combine_xyz=depth_kw["combine_xyz"],
            noise_cov=noise_cov,
            rank=rank,
        )

    if fixed_inverse:
        orient_prior = None
        if not is_fixed_orient(forward):
            if depth_prior is not None:
                logger.info(
                    "    Picked elements from a free-orientation "
                    "depth-weighting prior into the fixed-orientation "
                    "one"
                )
                depth_prior = depth_prior[2::3]
            convert_forward_solution(
                forward, surf_ori=True, force_fixed=True, use_cps=True, copy=False
            )
            gain = np.dot(whitener, forward["sol"]["data"])
    else:
        orient_prior = compute_orient_prior(forward, loose=loose_d)

    logger.info("Creating the source covariance matrix")
    source_std = np.ones(gain.shape[1], dtype=gain.dtype)
    if depth_prior is not None:
        source_std *= depth_prior
    if orient_prior is not None:
        source_std *= orient_prior
    np.sqrt(source_std, out=source_std)
    gain *= source_std
    logger.info("Adjusting source covariance matrix.")
    trace_GRGT = np.linalg.norm(gain, ord="fro") ** 2
    n_nzero = (cov["eig"] > 0).sum()
    scale = np.sqrt(n_nzero / trace_GRGT)
    source_std *= scale
    gain *= scale
    return forward, gain, info_picked, whitener, source_std


def _prepare_gain_mne(forward, info, noise_cov, depth, loose, rank):
    """MNE's ``_prepare_gain`` as ``mixed_norm`` calls it (the reference)."""
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
