"""Simulated MEG/EEG data to train and test the unrolled solvers.

Each sample (one column of ``X``) is the whitened field of a few active
source positions, optionally spatially extended to their neighbours on the
source space, plus white noise (the noise of whitened data is white), with
a regularization ``lam`` drawn relative to the sample's ``lam_max``.
"""

import numpy as np
import scipy.sparse
from mne.utils import _validate_type
from scipy.spatial import cKDTree

from ._problem import _check_problem


def _check_range(value, name, *, low=None, integer=False):
    """A (min, max) pair from a scalar or a pair, checked."""
    if np.isscalar(value):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value}")
    kind = "int" if integer else "numeric"
    for v in value:
        _validate_type(v, kind, name)
    if value[0] > value[1]:
        raise ValueError(f"{name} must satisfy min <= max, got {value}")
    if low is not None and value[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return (int(value[0]), int(value[1])) if integer else tuple(map(float, value))


def _positions_rr(problem):
    """Source positions in units of the grid spacing, or None without forward.

    The spacing is the median distance of a position to its nearest
    neighbour (7 for a 7 mm volume grid), so that ``extent`` means the same
    on any source space.
    """
    if problem.forward is None:
        return None
    rr = np.asarray(problem.forward["source_rr"], dtype=np.float64)
    if len(rr) != problem.n_positions:
        raise RuntimeError(
            f"forward has {len(rr)} source positions but the problem has "
            f"{problem.n_positions}"
        )
    if len(rr) < 2:
        return rr
    dist, _ = cKDTree(rr).query(rr, k=2)
    return rr / max(np.median(dist[:, 1]), np.finfo(float).tiny)


def _lam_max(gain, X, n_orient):
    U = gain.T @ X
    if n_orient > 1:
        U = np.sqrt((U.reshape(-1, n_orient, U.shape[1]) ** 2).sum(1))
    return np.abs(U).max(0)


def simulate_data(
    problem,
    n_samples,
    *,
    n_sources=(1, 5),
    extent=(0.0, 1.2),
    snr=(0.0, 20.0),
    lam_range=(0.1, 0.8),
    random_state=None,
    return_truth=False,
):
    """Simulate whitened data and regularization parameters.

    For each sample: ``k`` source positions drawn uniformly (``k`` uniform
    in ``n_sources``), each with a random amplitude (uniform magnitude in
    [0.3, 1], random sign) and, for free/loose orientation, a random
    orientation; each one is extended to the positions of the source space
    within a radius drawn in ``extent`` (in units of the grid spacing of the
    source space) with a Gaussian decay. The
    field ``D z`` is scaled to a signal-to-noise ratio drawn uniformly in
    ``snr`` (dB, ``20 log10(||D z|| / ||noise||)``) over unit white noise
    and ``lam = r * lam_max(x)`` with ``r`` log-uniform in ``lam_range``.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its ``forward`` gives the source positions used for
        spatial extent).
    n_samples : int
        Number of samples (columns).
    n_sources : int | (int, int)
        Range of the number of active source positions (before extent).
    extent : float | (float, float)
        Range of the radius of the extended sources, in units of the median
        distance between neighbouring source positions (a radius below 1 is
        a point source; 1.2 adds the nearest neighbours). Requires a problem
        built from a forward when > 0.
    snr : float | (float, float)
        Range of the signal-to-noise ratio in dB.
    lam_range : float | (float, float)
        Range of ``lam / lam_max`` (log-uniform), within (0, 1].
    random_state : None | int | Generator
        Seed (the output is deterministic for an int).
    return_truth : bool
        Also return the simulated sources.

    Returns
    -------
    X : array, shape (n, n_samples)
        Whitened data.
    lam : array, shape (n_samples,)
        Regularization parameters.
    truth : dict
        Only if ``return_truth``: ``Z`` (sparse matrix, shape (m,
        n_samples), the simulated sources), ``centers`` (list of arrays of
        the drawn positions), ``snr`` and ``lam_ratio`` (arrays).
    """
    problem = _check_problem(problem)
    _validate_type(n_samples, "int", "n_samples")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    k_lo, k_hi = _check_range(n_sources, "n_sources", low=1, integer=True)
    if k_hi > problem.n_positions:
        raise ValueError(
            f"n_sources must be <= the number of source positions "
            f"({problem.n_positions}), got {(k_lo, k_hi)}"
        )
    ext = _check_range(extent, "extent", low=0.0)
    snr = _check_range(snr, "snr")
    lam_range = _check_range(lam_range, "lam_range")
    if lam_range[0] <= 0 or lam_range[1] > 1:
        raise ValueError(f"lam_range must be within (0, 1], got {lam_range}")
    rr = _positions_rr(problem)
    if ext[1] > 0 and rr is None:
        raise ValueError(
            "extent > 0 needs source positions: build the problem with "
            "prepare_problem (from a forward) or use extent=0"
        )
    tree = None if rr is None else cKDTree(rr)
    rng = np.random.default_rng(random_state)
    n_orient = problem.n_orient
    n_pos = problem.n_positions
    gain = problem.gain

    rows, cols, vals, centers = [], [], [], []
    for b in range(n_samples):
        k = int(rng.integers(k_lo, k_hi + 1))
        idx = rng.choice(n_pos, size=k, replace=False)
        centers.append(idx)
        amps = rng.uniform(0.3, 1.0, size=k) * rng.choice([-1.0, 1.0], size=k)
        radii = rng.uniform(*ext, size=k)
        if n_orient > 1:
            ori = rng.standard_normal((k, n_orient))
            ori /= np.linalg.norm(ori, axis=1, keepdims=True)
        for j in range(k):
            if radii[j] >= 1:
                pos = np.asarray(tree.query_ball_point(rr[idx[j]], radii[j]))
                dist = np.linalg.norm(rr[pos] - rr[idx[j]], axis=1)
                w = np.exp(-0.5 * (dist / (radii[j] / 2.0)) ** 2)
            else:
                pos, w = idx[j : j + 1], np.ones(1)
            a = amps[j] * w
            if n_orient == 1:
                rows.append(pos)
                vals.append(a)
            else:
                rows.append((pos[:, None] * n_orient + np.arange(n_orient)).ravel())
                vals.append((a[:, None] * ori[j][None, :]).ravel())
            cols.append(np.full(len(rows[-1]), b))
    Z = scipy.sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(problem.n_sources, n_samples),
    ).tocsc()  # overlapping patches are summed
    signal = np.asarray((Z.T @ gain.T).T)
    noise = rng.standard_normal(signal.shape)
    snrs = rng.uniform(*snr, size=n_samples)
    sig_norm = np.linalg.norm(signal, axis=0)
    scale = np.linalg.norm(noise, axis=0) * 10 ** (snrs / 20.0)
    scale /= np.maximum(sig_norm, np.finfo(float).tiny)
    X = signal * scale + noise
    Z = Z @ scipy.sparse.diags(scale)
    ratio = np.exp(rng.uniform(*np.log(lam_range), size=n_samples))
    lam = ratio * _lam_max(gain, X, n_orient)
    if not return_truth:
        return X, lam
    truth = dict(Z=Z.tocsc(), centers=centers, snr=snrs, lam_ratio=ratio)
    return X, lam, truth


__all__ = ["simulate_data"]
