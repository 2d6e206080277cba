"""Simulated MEG/EEG data to train, test and benchmark the solvers.

One source sampler, :func:`sample_sources`, draws a few active source
positions with random orientations and amplitudes, optionally extended to
their neighbours on the source space. Two simulators are built on it, both
in the whitened data space (where the noise is white) with the SNR in dB:

- :func:`simulate_data`: per-sample problems (the Lasso of
  :class:`~mne_lista.StepLISTA`), one column each;
- :func:`simulate_windows`: time windows of evoked-like waveforms (the L21
  problem of :class:`~mne_lista.StepMxNE`).

:func:`localization_error` scores estimates against the simulated truth.
"""

import numpy as np
import scipy.sparse
import torch
from mne.utils import _validate_type
from scipy.spatial import cKDTree

from ._l21 import alpha_max
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


def _alpha_max(problem, M):
    """alpha_max of each window of an (n, W, K) array, float64 numpy."""
    G = torch.as_tensor(problem.gain)
    return alpha_max(G, torch.as_tensor(M, dtype=G.dtype), problem.n_orient).numpy()


def sample_sources(
    problem,
    n_draws,
    *,
    n_sources=(1, 5),
    extent=(0.0, 1.2),
    random_state=None,
    return_patterns=False,
):
    """Draw sparse source patterns: a few active positions per draw.

    For each draw: ``k`` source positions drawn uniformly (``k`` uniform in
    ``n_sources``), each with a random amplitude (uniform magnitude in [0.3,
    1], random sign) and, for free/loose orientation, a random orientation;
    each one is extended to the positions of the source space within a
    radius drawn in ``extent`` (in units of the grid spacing of the source
    space) with a Gaussian decay.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its ``forward`` gives the source positions used for
        spatial extent).
    n_draws : int
        Number of draws (samples or windows).
    n_sources : int | (int, int)
        Range of the number of active source positions (before extent).
    extent : float | (float, float)
        Range of the radius of the extended sources, in units of the median
        distance between neighbouring source positions (a radius below 1 is
        a point source; 1.2 adds the nearest neighbours). Requires a problem
        built from a forward when > 0.
    random_state : None | int | Generator
        Seed.
    return_patterns : bool
        Also return each source's own pattern.

    Returns
    -------
    Z : sparse matrix, shape (m, n_draws)
        The sum of the sources of each draw (CSC).
    centers : list of array
        The drawn positions of each draw.
    patterns : list of sparse matrix, shape (m, k)
        Only with ``return_patterns``: one column per source of each draw.
    """
    problem = _check_problem(problem)
    _validate_type(n_draws, "int", "n_draws")
    k_lo, k_hi = _check_range(n_sources, "n_sources", low=1, integer=True)
    if k_hi > problem.n_positions:
        raise ValueError(
            f"n_sources must be <= the number of source positions "
            f"({problem.n_positions}), got {(k_lo, k_hi)}"
        )
    ext = _check_range(extent, "extent", low=0.0)
    rr = _positions_rr(problem)
    if ext[1] > 0 and rr is None:
        raise ValueError(
            "extent > 0 needs source positions: build the problem with "
            "prepare_problem (from a forward) or use extent=0"
        )
    tree = None if rr is None else cKDTree(rr)
    rng = np.random.default_rng(random_state)
    n_orient = problem.n_orient
    rows, vals, centers, owner = [], [], [], []
    for b in range(n_draws):
        k = int(rng.integers(k_lo, k_hi + 1))
        idx = rng.choice(problem.n_positions, size=k, replace=False)
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
            owner.append(b)
    n_src = len(owner)
    S = scipy.sparse.coo_matrix(
        (
            np.concatenate(vals),
            (np.concatenate(rows), np.repeat(np.arange(n_src), [len(r) for r in rows])),
        ),
        shape=(problem.n_sources, n_src),
    ).tocsc()  # overlapping patches are summed
    A = scipy.sparse.csc_matrix(
        (np.ones(n_src), (np.arange(n_src), owner)), shape=(n_src, n_draws)
    )
    Z = (S @ A).tocsc()
    if not return_patterns:
        return Z, centers
    bounds = np.concatenate([[0], np.cumsum([len(c) for c in centers])])
    patterns = [S[:, bounds[b] : bounds[b + 1]] for b in range(n_draws)]
    return Z, centers, patterns


def _check_lam_range(lam_range):
    lam_range = _check_range(lam_range, "lam_range")
    if lam_range[0] <= 0 or lam_range[1] > 1:
        raise ValueError(f"lam_range must be within (0, 1], got {lam_range}")
    return lam_range


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
    n_sources, extent : int | (int, int), float | (float, float)
        Source ranges, see :func:`sample_sources`.
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
    snr = _check_range(snr, "snr")
    lam_range = _check_lam_range(lam_range)
    rng = np.random.default_rng(random_state)
    Z, centers = sample_sources(
        problem, n_samples, n_sources=n_sources, extent=extent, random_state=rng
    )
    gain = problem.gain
    signal = np.asarray((Z.T @ gain.T).T)
    noise = rng.standard_normal(signal.shape)
    snrs = rng.uniform(*snr, size=n_samples)
    sig_norm = np.linalg.norm(signal, axis=0)
    scale = np.linalg.norm(noise, axis=0) * 10 ** (snrs / 20.0)
    scale /= np.maximum(sig_norm, np.finfo(float).tiny)
    X = signal * scale + noise
    Z = Z @ scipy.sparse.diags(scale)
    ratio = np.exp(rng.uniform(*np.log(lam_range), size=n_samples))
    lam = ratio * _alpha_max(problem, X[:, :, None])
    if not return_truth:
        return X, lam
    truth = dict(Z=Z.tocsc(), centers=centers, snr=snrs, lam_ratio=ratio)
    return X, lam, truth


def waveforms(n_sources, times, *, random_state=None):
    """Smooth evoked-like waveforms (n_sources, T): peaks and damped oscillations.

    Latencies fall inside the window; peaks are Gaussians of 8-30 ms width,
    oscillations 4-20 Hz sines with a smooth onset and a 30-150 ms decay.
    Each waveform has a peak absolute value of 1 and a random sign.
    """
    rng = np.random.default_rng(random_state)
    t0, t1 = times[0], times[-1]
    out = np.empty((n_sources, len(times)))
    for k in range(n_sources):
        lat = rng.uniform(t0, t0 + 0.8 * (t1 - t0))
        if rng.random() < 0.5:
            width = rng.uniform(0.008, 0.03)
            w = np.exp(-0.5 * ((times - lat) / width) ** 2)
        else:
            freq, tau = rng.uniform(4.0, 20.0), rng.uniform(0.03, 0.15)
            dt = times - lat
            onset = 0.5 * (1 + np.tanh(dt / 0.005))
            w = onset * np.exp(-np.maximum(dt, 0) / tau)
            w = w * np.sin(2 * np.pi * freq * dt + rng.uniform(0, 2 * np.pi))
        out[k] = rng.choice([-1.0, 1.0]) * w / max(np.abs(w).max(), 1e-12)
    return out


def simulate_windows(
    problem,
    n_windows,
    *,
    n_sources=(1, 5),
    extent=0.0,
    n_times=30,
    sfreq=600.0,
    snr=(-6.0, 14.0),
    lam_range=(0.1, 0.8),
    random_state=None,
):
    """Simulate windows of whitened data from a few sources with waveforms.

    Each window holds the sources of one draw of :func:`sample_sources`,
    each with its own evoked-like waveform (:func:`waveforms`), pushed
    through the whitened gain in Am (``gain / source_weighting``), plus
    white noise scaled to an SNR (``20 log10(||signal||_F / ||noise||_F)``)
    uniform in ``snr`` dB.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its gain; ``source_weighting`` when present).
    n_windows : int
        Number of windows.
    n_sources, extent :
        Source ranges, see :func:`sample_sources`.
    n_times : int
        Samples per window.
    sfreq : float
        Sampling frequency (Hz).
    snr : float | (float, float)
        Range of the SNR in dB.
    lam_range : float | (float, float)
        Range of ``lam / alpha_max`` (log-uniform) returned with the windows.
    random_state : None | int | Generator
        Seed.

    Returns
    -------
    sim : dict
        ``M`` (n, W, T) whitened data, ``signal`` (n, W, T) its noiseless
        part, ``positions`` (list of arrays of the drawn position indices),
        ``snr`` (W,), ``lam_frac`` (W,) and ``times`` (T,).
    """
    snr = _check_range(snr, "snr")
    lam_range = _check_lam_range(lam_range)
    rng = np.random.default_rng(random_state)
    _, centers, patterns = sample_sources(
        problem,
        n_windows,
        n_sources=n_sources,
        extent=extent,
        random_state=rng,
        return_patterns=True,
    )
    sw = problem.source_weighting
    G = problem.gain if sw is None else problem.gain / np.where(sw == 0, 1.0, sw)
    times = 0.05 + np.arange(int(n_times)) / float(sfreq)
    M = np.empty((problem.n_channels, n_windows, len(times)))
    S = np.empty_like(M)
    snrs = rng.uniform(*snr, size=n_windows)
    for w in range(n_windows):
        wave = waveforms(patterns[w].shape[1], times, random_state=rng)
        sig = np.asarray((patterns[w].T @ G.T).T) @ wave
        noise = rng.standard_normal(sig.shape)
        target = 10 ** (snrs[w] / 20.0) * np.linalg.norm(noise)
        sig *= target / max(np.linalg.norm(sig), 1e-300)
        S[:, w], M[:, w] = sig, sig + noise
    lam_frac = np.exp(rng.uniform(*np.log(lam_range), size=n_windows))
    return dict(
        M=M,
        signal=S,
        positions=[np.sort(c) for c in centers],
        snr=snrs,
        lam_frac=lam_frac,
        times=times,
    )


def localization_error(true_pos, est_pos, est_amp):
    """Localization error and spatial dispersion of a sparse estimate (m).

    Parameters
    ----------
    true_pos : array, shape (n_true, 3)
        Positions of the simulated sources.
    est_pos : array, shape (n_est, 3)
        Positions of the estimated sources.
    est_amp : array, shape (n_est,)
        Their amplitudes (e.g. peak or energy).

    Returns
    -------
    error : float
        Mean over the simulated sources of the distance to the nearest of
        the ``n_true`` strongest estimated sources (``nan`` when nothing was
        estimated).
    dispersion : float
        Amplitude-weighted mean distance from every estimated source to the
        nearest simulated one (spurious or spread-out estimates raise it).
    """
    true_pos = np.atleast_2d(true_pos)
    est_pos = np.asarray(est_pos).reshape(-1, 3)
    est_amp = np.asarray(est_amp, dtype=float).ravel()
    if len(est_pos) == 0:
        return np.nan, np.nan
    dist = np.linalg.norm(true_pos[:, None] - est_pos[None], axis=-1)
    strongest = np.argsort(est_amp)[::-1][: len(true_pos)]
    error = float(dist[:, strongest].min(axis=1).mean())
    weights = est_amp / est_amp.sum() if est_amp.sum() > 0 else None
    dispersion = float(np.average(dist.min(axis=0), weights=weights))
    return error, dispersion


def source_positions(stc, src):
    """Positions (m) and peak amplitudes of the active sources of an estimate."""
    vertno = np.concatenate(stc.vertices)
    if len(vertno) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    rr = np.concatenate(
        [s["rr"][v] for s, v in zip(src, stc.vertices) if len(v)], axis=0
    )
    data = stc.data
    if data.ndim == 3:  # vector
        data = np.linalg.norm(data, axis=1)
    return rr, np.abs(data).max(axis=-1)


__all__ = [
    "sample_sources",
    "simulate_data",
    "simulate_windows",
    "waveforms",
    "localization_error",
    "source_positions",
]
