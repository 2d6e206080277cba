"""The Lasso problem built from a real MNE forward."""

import mne
import numpy as np
import pytest
import torch
from _helpers import alpha_max
from mne.forward import compute_depth_prior, compute_orient_prior

from mne_lista import LassoProblem, prepare_problem


def _public_gain(fwd, cov, info, loose, depth):
    """Rebuild the gain of mixed_norm with MNE's public API only."""
    fwd = mne.convert_forward_solution(
        fwd,
        surf_ori=loose < 1,
        force_fixed=loose == 0,
        use_cps=True,
        copy=True,
        verbose=False,
    )
    picks = [
        c
        for c in info["ch_names"]
        if c in fwd["sol"]["row_names"] and c not in info["bads"]
    ]
    fwd = mne.pick_channels_forward(fwd, picks, ordered=True, verbose=False)
    info_p = mne.pick_info(info, [info["ch_names"].index(c) for c in picks])
    depth_prior = compute_depth_prior(
        fwd,
        info_p,
        exp=depth,
        limit_depth_chs="whiten",
        combine_xyz="fro",
        limit=None,
        noise_cov=cov,
        verbose=False,
    )
    if loose == 0:
        source_std = depth_prior
    else:
        source_std = depth_prior * compute_orient_prior(fwd, loose=loose)
    cov_p = mne.cov.prepare_noise_cov(cov, info, picks, verbose=False)
    W, _ = mne.cov.compute_whitener(cov_p, info, picks, pca=True, verbose=False)
    gain = W @ fwd["sol"]["data"] * np.sqrt(source_std)
    n_nzero = (cov_p["eig"] > 0).sum()
    return gain * np.sqrt(n_nzero / np.linalg.norm(gain, "fro") ** 2)


@pytest.mark.parametrize("kind", ["surf_fixed", "vol_free", "surf_loose"])
def test_gain_matches_mne(kind, evoked_cov, fwd_surf, fwd_vol):
    """gain^T gain equals the one MNE builds from public functions."""
    evoked, cov = evoked_cov
    fwd, loose, depth = {
        "surf_fixed": (fwd_surf, 0.0, 0.8),
        "vol_free": (fwd_vol, 1.0, 0.9),
        "surf_loose": (fwd_surf, 0.2, 0.8),
    }[kind]
    problem = prepare_problem(
        fwd, cov, evoked.info, loose=loose, depth=depth, verbose=False
    )
    ref = _public_gain(fwd, cov, evoked.info, loose, depth)
    assert problem.gain.shape == ref.shape
    G, R = problem.gain, ref
    scale = np.abs(R.T @ R).max()
    np.testing.assert_allclose(G.T @ G / scale, R.T @ R / scale, atol=1e-10)
    assert problem.n_orient == (1 if loose == 0 else 3)
    np.testing.assert_allclose(
        problem.lipschitz, np.linalg.norm(ref, 2) ** 2, rtol=1e-10
    )
    assert len(problem.ch_names) == problem.whitener.shape[1] == 306
    assert problem.source_weighting.shape == (problem.n_sources,)


def test_whiten_and_alpha_max(problem_vol, evoked_cov):
    """whiten matches whitener @ data and alpha_max is MNE's norm_l2inf."""
    from mne.inverse_sparse.mxne_optim import norm_l2inf

    evoked, _ = evoked_cov
    X = problem_vol.whiten(evoked)
    assert X.shape == (problem_vol.n_channels, len(evoked.times))
    sel = [evoked.ch_names.index(c) for c in problem_vol.ch_names]
    np.testing.assert_allclose(X, problem_vol.whitener @ evoked.data[sel])
    G = problem_vol.gain
    am = alpha_max(torch.as_tensor(G), torch.as_tensor(X[:, :5]), 3).numpy()
    for j in range(5):
        assert np.isclose(am[j], norm_l2inf(G.T @ X[:, j : j + 1], 3))


def test_bad_inputs(evoked_cov, fwd_surf):
    evoked, cov = evoked_cov
    with pytest.raises(TypeError, match="forward"):
        prepare_problem(cov, cov, evoked.info)
    with pytest.raises(TypeError, match="noise_cov"):
        prepare_problem(fwd_surf, fwd_surf, evoked.info)
    # a channel of info missing from the forward
    fwd_less = mne.pick_channels_forward(
        fwd_surf, exclude=[evoked.ch_names[0]], verbose=False
    )
    with pytest.raises(ValueError, match="missing from the forward"):
        prepare_problem(fwd_less, cov, evoked.info, verbose=False)
    # a channel missing from the covariance
    cov_less = cov.copy().pick_channels(
        [c for c in cov.ch_names if c != evoked.ch_names[5]], ordered=False
    )
    with pytest.raises(ValueError, match="noise covariance"):
        prepare_problem(fwd_surf, cov_less, evoked.info, verbose=False)
    problem = prepare_problem(fwd_surf, cov, evoked.info, loose=0.0, verbose=False)
    # bad channel in the data, used by the problem
    ev_bad = evoked.copy()
    ev_bad.info["bads"] = [problem.ch_names[3]]
    with pytest.raises(ValueError, match="marked bad"):
        problem.whiten(ev_bad)
    # missing channel in the data
    with pytest.raises(ValueError, match="missing from the data"):
        problem.whiten(evoked.copy().drop_channels([problem.ch_names[0]]))
    # NaN / inf data
    ev_nan = evoked.copy()
    ev_nan.data[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        problem.whiten(ev_nan)
    with pytest.raises(ValueError, match="n_channels"):
        problem.whiten(np.zeros((10, 4)))
    # bads excluded as MNE does: the problem loses that channel
    info_bad = evoked.info.copy()
    info_bad["bads"] = [evoked.ch_names[0]]
    p2 = prepare_problem(fwd_surf, cov, info_bad, loose=0.0, verbose=False)
    assert evoked.ch_names[0] not in p2.ch_names
    assert len(p2.ch_names) == 305


def test_eeg_without_average_reference(subset_path, fwd_surf):
    ev = mne.read_evokeds(
        subset_path / "test-ave.fif.gz", condition=0, proj=False, verbose=False
    )
    cov = mne.read_cov(subset_path / "test-cov.fif", verbose=False)
    ev.del_proj()
    with pytest.raises(ValueError, match="EEG average reference"):
        prepare_problem(fwd_surf, cov, ev.info, verbose=False)


def test_lasso_problem_from_gain():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((20, 30))
    p = LassoProblem(G, n_orient=3)
    assert p.n_positions == 10
    assert np.isclose(p.lipschitz, np.linalg.norm(G, 2) ** 2)
    with pytest.raises(ValueError, match="n_orient"):
        LassoProblem(G[:, :29], n_orient=3)
    G[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        LassoProblem(G)


def test_position_lipschitz(problem_vol):
    """Per-position Lipschitz constants: ||G_p||_2^2, cached per dtype."""
    lip = problem_vol.position_lipschitz()
    G = problem_vol.gain
    p = 17
    block = G[:, 3 * p : 3 * p + 3]
    assert lip.shape == (problem_vol.n_positions,)
    np.testing.assert_allclose(float(lip[p]), np.linalg.norm(block, 2) ** 2, rtol=1e-10)
    assert float(lip.max()) <= problem_vol.lipschitz * (1 + 1e-10)
    assert problem_vol.position_lipschitz() is lip  # cached
    lip32 = problem_vol.position_lipschitz("cpu", torch.float32)
    assert lip32.dtype == torch.float32 and lip32 is not lip


def test_subset_surface_is_a_cortex(subset_path, fwd_surf, problem_surf_fixed):
    """The subset's source space file stores positions 1000x too small: read
    as is, all 516 sources sit at the origin and the gain has rank 3."""
    raw = mne.read_source_spaces(subset_path / "small-src.fif.gz", verbose=False)
    assert np.linalg.norm(raw[0]["rr"], axis=1).max() < 1e-3  # the file's flaw
    src = fwd_surf["src"]
    rr = [s["rr"][s["vertno"]] for s in src]
    assert rr[0][:, 0].max() < 0.005 and rr[1][:, 0].min() > -0.005  # lh / rh
    extent = np.linalg.norm(np.concatenate(rr), axis=1)
    assert 0.03 < extent.min() and extent.max() < 0.15  # a head, in meters
    # the gain spans many field patterns (not the 3 of a single point)
    s = np.linalg.svd(problem_surf_fixed.gain, compute_uv=False)
    assert np.sum(s > 1e-3 * s[0]) > 30
