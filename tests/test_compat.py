"""The wrappers of MNE private helpers agree with MNE's public behaviour.

Each wrapper of :mod:`mne_lista._compat` is fed what ``mixed_norm`` computed
(its estimate, read back from its public outputs) and must give back the same
outputs, so that a change in MNE's private helpers fails here.
"""

import mne
import numpy as np
import pytest
from mne.inverse_sparse import make_stc_from_dipoles, mixed_norm
from mne.utils import catch_logging
from numpy.testing import assert_allclose, assert_array_equal

from mne_lista import _compat, prepare_problem


@pytest.fixture(scope="module")
def mxne_fixed(evoked_cov, fwd_surf):
    """mixed_norm on the fixed-orientation surface forward, all outputs."""
    evoked, cov = evoked_cov
    evoked = evoked.copy().crop(0.05, 0.15)
    kw = dict(alpha=30, loose=0.0, depth=0.8, verbose=False)
    stc, residual = mixed_norm(evoked, fwd_surf, cov, return_residual=True, **kw)
    dipoles = mixed_norm(evoked, fwd_surf, cov, return_as_dipoles=True, **kw)
    problem = prepare_problem(
        fwd_surf, cov, evoked.info, loose=0.0, depth=0.8, verbose=False
    )
    # active set (rows of the gain) from the public stc
    src = problem.src
    offsets = np.cumsum([0] + [len(s["vertno"]) for s in src])
    rows = np.concatenate(
        [
            offsets[k] + np.searchsorted(s["vertno"], v)
            for k, (s, v) in enumerate(zip(src, stc.vertices))
        ]
    )
    active = np.zeros(problem.n_sources, bool)
    active[rows] = True
    assert active.sum() >= 2
    return evoked, problem, stc, residual, dipoles, active


def test_make_sparse_stc(mxne_fixed):
    """_make_sparse_stc rebuilds mixed_norm's stc from its rows."""
    evoked, problem, stc, _, _, active = mxne_fixed
    tstep = 1.0 / evoked.info["sfreq"]
    out = _compat.make_sparse_stc(stc.data, active, problem.forward, stc.tmin, tstep)
    assert type(out) is type(stc) is mne.SourceEstimate
    for v1, v2 in zip(out.vertices, stc.vertices):
        assert_array_equal(v1, v2)
    assert_allclose(out.data, stc.data)
    assert_allclose(out.times, stc.times)
    assert out.subject == stc.subject


def test_make_sparse_stc_vector_volume(problem_vol):
    """The class follows the source space (volume, vector)."""
    rng = np.random.default_rng(0)
    active = np.zeros(problem_vol.n_sources, bool)
    active[3 * 100 : 3 * 102] = True  # two positions, xyz
    X = rng.standard_normal((6, 4))
    fwd = problem_vol.forward
    stc = _compat.make_sparse_stc(X, active, fwd, 0.1, 0.01)
    assert isinstance(stc, mne.VolSourceEstimate)
    assert_allclose(stc.data, np.linalg.norm(X.reshape(2, 3, 4), axis=1))
    vec = _compat.make_sparse_stc(X, active, fwd, 0.1, 0.01, pick_ori="vector")
    assert isinstance(vec, mne.VolVectorSourceEstimate)
    assert_allclose(vec.magnitude().data, stc.data)
    assert_array_equal(stc.vertices[0], problem_vol.src[0]["vertno"][[100, 101]])


def test_make_dipoles_sparse(mxne_fixed):
    """_make_dipoles_sparse gives mixed_norm's dipoles (positions, GOF)."""
    evoked, problem, stc, _, dipoles, active = mxne_fixed
    M = problem.whiten(evoked)
    sw = problem.source_weighting[active]
    gain_active = problem.gain[:, active] / sw
    tstep = 1.0 / evoked.info["sfreq"]
    out = _compat.make_dipoles_sparse(
        stc.data, active, problem.forward, stc.tmin, tstep, M, gain_active
    )
    assert len(out) == len(dipoles) == active.sum()
    for d1, d2 in zip(out, dipoles):
        assert_allclose(d1.pos, d2.pos)
        assert_allclose(d1.ori, d2.ori)
        assert_allclose(d1.amplitude, d2.amplitude)
        assert_allclose(d1.gof, d2.gof, atol=1e-6)
    # and back to the stc with MNE's public converter
    back = make_stc_from_dipoles(out, problem.src, verbose=False)
    assert_allclose(back.data, stc.data)


@pytest.mark.filterwarnings("ignore:Source estimate only contains:RuntimeWarning")
def test_compute_residual(mxne_fixed):
    """_compute_residual == mixed_norm's residual == data - P G X (public)."""
    evoked, problem, stc, residual, _, active = mxne_fixed
    out = _compat.compute_residual(
        problem.forward, evoked, stc.data, active, problem.info
    )
    assert out.ch_names == residual.ch_names
    assert_allclose(out.data, residual.data, rtol=1e-6, atol=1e-18)
    est = mne.apply_forward(problem.forward, stc, evoked.info, verbose=False)
    est.add_proj(evoked.info["projs"], verbose=False).apply_proj(verbose=False)
    data = evoked.copy().pick(out.ch_names).data
    assert_allclose(out.data + est.pick(out.ch_names).data, data, atol=1e-20)


def test_log_exp_var():
    """_log_exp_var returns and logs 100 (1 - |res|^2 / |data|^2)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 7))
    est = 0.7 * data + 0.1 * rng.standard_normal((5, 7))
    with catch_logging(verbose=True) as log:
        var = _compat.log_exp_var(data, est, prefix="")
    expected = 100 * (1 - ((data - est) ** 2).sum() / (data**2).sum())
    assert_allclose(var, expected)
    assert f"Explained {expected:5.1f}% variance" in log.getvalue()


def test_compat_mixed_norm_solver(evoked_cov, problem_vol):
    """The wrapped exact solver gives mixed_norm's active set and amplitudes."""
    import torch

    from mne_lista import _l21

    evoked, cov = evoked_cov
    evoked = evoked.copy().crop(0.07, 0.11)
    fwd = problem_vol.forward
    stc = mixed_norm(evoked, fwd, cov, alpha=40, loose=1.0, depth=0.9, debias=False)
    M = problem_vol.whiten(evoked)
    M_pca, Vh = _l21.time_pca(torch.tensor(M))
    D = problem_vol.gain_tensor("cpu", torch.float64)
    lam = 0.4 * _l21.alpha_max(D, M_pca, 3).item()
    Mw = M_pca[:, 0].numpy()
    X, active, gap = _compat.mixed_norm_solver(
        Mw, problem_vol.gain, lam, n_orient=3, tol=1e-4 * (Mw**2).sum()
    )
    assert gap <= 1e-4 * (Mw**2).sum()
    pos = np.flatnonzero(active[::3])
    np.testing.assert_array_equal(fwd["src"][0]["vertno"][pos], stc.vertices[0])
    X_am = (X @ Vh[0].numpy()) * problem_vol.source_weighting[active][:, None]
    amp = np.linalg.norm(X_am.reshape(-1, 3, X_am.shape[1]), axis=1)
    np.testing.assert_allclose(amp, stc.data, rtol=1e-6, atol=1e-6 * stc.data.max())


def test_prepare_weights(evoked_cov, fwd_surf):
    """prepare_weights == the weighted gain of mixed_norm's _prepare_gain."""
    from mne.inverse_sparse.mxne_inverse import _prepare_gain

    evoked, cov = evoked_cov
    problem = prepare_problem(
        fwd_surf, cov, evoked.info, loose=0.2, depth=0.8, verbose=False
    )
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 2, problem.n_positions)
    gain, sw, mask = _compat.prepare_weights(
        problem.forward, problem.gain, problem.source_weighting, weights, 0.5
    )
    _, gain_mne, _, _, sw_mne, mask_mne = _prepare_gain(
        fwd_surf, evoked.info, cov, True, 0.8, 0.2, None, weights, 0.5
    )
    assert_array_equal(mask, mask_mne)
    assert 0 < mask.sum() < mask.size
    assert_allclose(gain, gain_mne, rtol=1e-12)
    assert_allclose(sw, sw_mne, rtol=1e-12)
    # the problem's view: masked gain and source weighting
    weighted = problem.weighted(weights, 0.5)
    assert_allclose(weighted.gain, gain_mne, rtol=1e-12)
    assert_allclose(weighted.source_weighting, sw_mne[mask_mne], rtol=1e-12)


def test_safe_svd():
    """safe_svd is the thin SVD of scipy's LAPACK (what mixed_norm's time_pca uses)."""
    from scipy import linalg

    A = np.random.default_rng(0).standard_normal((30, 12))
    U, s, Vh = _compat.safe_svd(A)
    U2, s2, Vh2 = linalg.svd(A, full_matrices=False)
    assert U.shape == (30, 12) and Vh.shape == (12, 12)
    assert_array_equal(U * s, U2 * s2)
    assert_array_equal(Vh, Vh2)


# ---------------------------------------------------------------------------
# prepare_gain == MNE's _prepare_gain (as mixed_norm calls it)

_DEPTHS = {
    "none": None,
    "0.8": 0.8,
    "dict": dict(exp=0.5, combine_xyz="spectral"),
}


@pytest.fixture(scope="module")
def fwd_meeg(subset_path):
    """MEG+EEG (sphere model) forward on the subset's cortical sources."""
    from mne_lista.datasets import read_subset_src

    evoked = mne.read_evokeds(
        subset_path / "test-ave.fif.gz",
        condition="Right Auditory",
        baseline=(None, 0),
        verbose=False,
    ).pick(["meg", "eeg"])
    sphere = mne.make_sphere_model("auto", "auto", evoked.info, verbose=False)
    fwd = mne.make_forward_solution(
        evoked.info,
        subset_path / "sample_audvis_trunc-trans.fif",
        read_subset_src(verbose=False),
        sphere,
        meg=True,
        eeg=True,
        verbose=False,
    )
    return evoked.info, fwd


@pytest.fixture(scope="module")
def fwd_vol_mri(evoked_cov, subset_path):
    """A true volume source space (in the MRI of sample, 15 mm grid)."""
    evoked, _ = evoked_cov
    bem = mne.read_bem_solution(subset_path / "sample-1280-bem-sol.fif", verbose=False)
    src = mne.setup_volume_source_space(
        "sample",
        pos=15.0,
        bem=bem,
        subjects_dir=subset_path / "subjects",
        verbose=False,
    )
    assert src.kind == "volume"
    return mne.make_forward_solution(
        evoked.info,
        subset_path / "sample_audvis_trunc-trans.fif",
        src,
        bem,
        meg=True,
        eeg=False,
        verbose=False,
    )


def _check_prepare_gain(forward, info, cov, depth, loose, rank):
    """Our prepare_gain against MNE's _prepare_gain, every output."""
    from mne.inverse_sparse.mxne_inverse import _prepare_gain

    # MNE fills a rank dict in place: each call gets its own
    def _rank():
        return dict(rank) if isinstance(rank, dict) else rank

    fwd, gain, gain_info, whitener, sw = _compat.prepare_gain(
        forward, info, cov, depth=depth, loose=loose, rank=_rank()
    )
    fwd_r, gain_r, info_r, whitener_r, sw_r, mask = _prepare_gain(
        forward, info, cov, True, depth, loose, _rank(), None, None
    )
    assert mask is None
    assert_allclose(gain, gain_r, rtol=1e-12, atol=0)
    assert_allclose(whitener, whitener_r, rtol=1e-12, atol=0)
    assert_allclose(sw, sw_r, rtol=1e-12, atol=0)
    assert gain_info["ch_names"] == info_r["ch_names"]
    assert gain_info["bads"] == info_r["bads"]
    assert len(gain_info["projs"]) == len(info_r["projs"])
    assert_allclose(fwd["sol"]["data"], fwd_r["sol"]["data"], rtol=1e-12, atol=0)
    assert fwd["sol"]["row_names"] == fwd_r["sol"]["row_names"]
    assert fwd["info"]["ch_names"] == fwd_r["info"]["ch_names"]
    assert_allclose(fwd["source_nn"], fwd_r["source_nn"], rtol=1e-12, atol=0)
    assert fwd["surf_ori"] == fwd_r["surf_ori"]
    assert fwd["source_ori"] == fwd_r["source_ori"]
    assert fwd["nchan"] == fwd_r["nchan"]
    assert fwd["sol"]["data"] is not forward["sol"]["data"]  # a copy
    return gain


@pytest.mark.parametrize("rank", [None, "info"])
@pytest.mark.parametrize("depth", list(_DEPTHS))
@pytest.mark.parametrize("loose", [0.0, 0.2, 1.0])
def test_prepare_gain_surface(evoked_cov, fwd_surf, loose, depth, rank):
    """Surface forward: fixed, loose and free; depth None/float/dict; rank."""
    evoked, cov = evoked_cov
    gain = _check_prepare_gain(fwd_surf, evoked.info, cov, _DEPTHS[depth], loose, rank)
    assert gain.shape[1] == fwd_surf["nsource"] * (1 if loose == 0 else 3)


@pytest.mark.parametrize(
    "depth, rank", [("none", "info"), ("0.8", None), ("dict", None)]
)
def test_prepare_gain_volume(evoked_cov, fwd_vol_mri, depth, rank):
    """Volume forward (free orientation)."""
    evoked, cov = evoked_cov
    _check_prepare_gain(fwd_vol_mri, evoked.info, cov, _DEPTHS[depth], 1.0, rank)


@pytest.mark.parametrize("loose", [0.0, 0.2, 1.0])
def test_prepare_gain_discrete(evoked_cov, fwd_vol, loose):
    """The grid forward of the fixtures (a discrete source space)."""
    evoked, cov = evoked_cov
    assert fwd_vol["src"].kind == "discrete"
    _check_prepare_gain(fwd_vol, evoked.info, cov, 0.8, loose, None)


@pytest.mark.parametrize("loose", [0.0, 0.2])
def test_prepare_gain_bads(evoked_cov, fwd_surf, fwd_vol, loose):
    """A bad channel in info: dropped from the gain, the whitener, the forward."""
    evoked, cov = evoked_cov
    info = evoked.info.copy()
    info["bads"] = [info["ch_names"][5]]
    gain = _check_prepare_gain(fwd_surf, info, cov, 0.8, loose, None)
    assert gain.shape[0] == len(info["ch_names"]) - 1 - 3  # 3 SSP projectors
    _check_prepare_gain(fwd_vol, info, cov, 0.8, 1.0, "info")


@pytest.mark.parametrize("rank", [None, "info", dict(meg=303)])
@pytest.mark.parametrize("loose", [0.0, 0.2])
def test_prepare_gain_meg_eeg(evoked_cov, fwd_meeg, loose, rank):
    """MEG+EEG (average reference projector), rank None/'info'/dict."""
    _, cov = evoked_cov
    info, fwd = fwd_meeg
    assert "eeg" in info.get_channel_types(unique=True)
    gain = _check_prepare_gain(fwd, info, cov, 0.8, loose, rank)
    assert gain.shape[0] == 306 + 60 - 4  # 3 MEG SSP + EEG average reference


@pytest.mark.parametrize(
    "case",
    ["fixed_fwd", "surf_ori_fwd", "no_fixed_depth", "limit", "limit_chs", "exp0"],
)
def test_prepare_gain_forms(evoked_cov, fwd_surf, case):
    """Converted forwards, the depth dict's other options, MNE's fallback."""
    evoked, cov = evoked_cov
    fwd, loose, depth = fwd_surf, 0.2, 0.8
    if case == "fixed_fwd":
        fwd = mne.convert_forward_solution(
            fwd_surf, surf_ori=True, force_fixed=True, use_cps=True, verbose=False
        )
        loose = 0.0
    elif case == "surf_ori_fwd":
        fwd = mne.convert_forward_solution(
            fwd_surf, surf_ori=True, use_cps=True, verbose=False
        )
    elif case == "no_fixed_depth":  # depth from the free forward, then fixed
        loose, depth = 0.0, dict(exp=0.8, allow_fixed_depth=False)
    elif case == "limit":  # MNE's own function (the limit rule differs)
        depth = dict(exp=0.8, limit=3.0)
    elif case == "limit_chs":  # no whitening in the depth prior
        depth = dict(exp=0.8, limit=10.0, limit_depth_chs=True)
    elif case == "exp0":  # 0 is no depth weighting
        depth = 0.0
    _check_prepare_gain(fwd, evoked.info, cov, depth, loose, None)


def test_prepare_gain_errors(evoked_cov, fwd_surf, fwd_vol_mri):
    """MNE's errors, word for word."""
    from mne.inverse_sparse.mxne_inverse import _prepare_gain

    evoked, cov = evoked_cov
    fixed = mne.convert_forward_solution(
        fwd_surf, surf_ori=True, force_fixed=True, use_cps=True, verbose=False
    )
    for fwd, loose, depth, match in [
        (fwd_vol_mri, 0.0, 0.8, "has to be 1"),
        (fwd_vol_mri, 0.2, 0.8, "has to be 1"),
        (fixed, 0.2, 0.8, "fixed orientation"),
        (fixed, 0.0, dict(exp=0.8, allow_fixed_depth=False), "free-orientation"),
        (fwd_surf, 0.2, -1.0, "greater than or equal"),
    ]:
        with pytest.raises(ValueError, match=match) as ours:
            _compat.prepare_gain(
                fwd, evoked.info, cov, depth=depth, loose=loose, rank=None
            )
        with pytest.raises(ValueError) as ref:
            _prepare_gain(fwd, evoked.info, cov, True, depth, loose, None)
        assert str(ours.value) == str(ref.value)
