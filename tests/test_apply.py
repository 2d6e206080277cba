"""StepLISTA on MNE data: Evoked and Epochs in, source estimates out.

These tests check the MNE glue, not the training: they use untrained
networks (ISTA with step 1/L) or the certificate (``tol``) that finishes
every uncertified sample with the exact solver.
"""

import warnings

import mne
import numpy as np
import pytest
import torch
from mne.inverse_sparse import make_stc_from_dipoles, mixed_norm
from mne.utils import catch_logging
from numpy.testing import assert_allclose, assert_array_equal

from mne_lista import StepLISTA, _l21, step_lista
from mne_lista._apply import active_set
from mne_lista._debias import debias, debias_windows
from mne_lista.datasets import read_subset_src

TMIN, TMAX = 0.07, 0.11  # the auditory peak of 'Right Auditory'


def sample_alpha_max(problem, M):
    """alpha_max of each column of whitened data (n, T)."""
    G = torch.as_tensor(problem.gain)
    M = torch.as_tensor(M)[:, :, None]
    return _l21.alpha_max(G, M, problem.n_orient).numpy()


@pytest.fixture(scope="module")
def evoked(evoked_cov):
    return evoked_cov[0].copy().crop(TMIN, TMAX)


@pytest.fixture(scope="module")
def model_vol(evoked, evoked_cov, fwd_vol):
    return StepLISTA(  # untrained (ISTA), deliberately: these tests check the glue
        fwd_vol,
        evoked_cov[1],
        evoked.info,
        n_layers=5,
        loose=1.0,
        depth=0.9,
        pretrained=False,
    )


@pytest.fixture(scope="module")
def model_fixed(evoked, evoked_cov, fwd_surf):
    model = StepLISTA(
        fwd_surf,
        evoked_cov[1],
        evoked.info,
        n_layers=30,
        loose=0.0,
        depth=0.8,
        pretrained=False,
    )
    return _float64(model)


def _float64(model):
    """Use a float64 network (exact comparisons between chunkings)."""
    model.net = model._make_net(torch.float64)
    return model


def _positions(stc, src):
    return np.concatenate([s["rr"][v] for s, v in zip(src, stc.vertices)])


def _strongest_per_hemisphere(stc, src):
    """Position of the strongest source (power over time) for x < 0, x > 0."""
    rr = _positions(stc, src)
    power = (stc.data**2).reshape(len(rr), -1).sum(1)
    out = []
    for side in (-1, 1):
        sel = np.flatnonzero(np.sign(rr[:, 0]) == side)
        assert len(sel), f"no source on side {side}"
        out.append(rr[sel[np.argmax(power[sel])]])
    return np.array(out)


def test_auditory_matches_mixed_norm(evoked, evoked_cov, fwd_vol, model_vol):
    """Right Auditory, 7 mm volume, free orientation: both auditory cortices.

    The certificate with tol=1e-6 finishes every sample the (untrained, 5
    layer) network left uncertified with the exact solver, so this checks
    the whole pipeline (alpha scaling, certificate, active set, debiasing,
    output) against mixed_norm on real data.
    """
    cov = evoked_cov[1]
    with catch_logging(verbose=True) as log:
        stc = model_vol.apply(evoked, 40, tol=1e-6, verbose=True)
    log = log.getvalue()
    cert = model_vol.certificate_
    n_times = len(evoked.times)
    assert f"{cert['n_resolved']}/{n_times} sample(s)" in log
    assert "finished by the exact solver" in log
    assert "Explained" in log
    assert cert["n_resolved"] > 0
    assert cert["rel_gap"].shape == (n_times,)
    assert cert["rel_gap"].max() <= 1e-6
    assert isinstance(stc, mne.VolSourceEstimate)
    assert_allclose(stc.times, evoked.times, atol=1e-12)
    assert 1 < len(stc.vertices[0]) < 300  # sparse

    ref = mixed_norm(evoked, fwd_vol, cov, alpha=40, loose=1, depth=0.9, verbose=0)
    src = model_vol.problem.src
    ours = _strongest_per_hemisphere(stc, src)
    theirs = _strongest_per_hemisphere(ref, src)
    # both temporal lobes (|x| > 4 cm), within 1.5 cm of mixed_norm's sources
    assert (np.abs(ours[:, 0]) > 0.04).all()
    assert (np.linalg.norm(ours - theirs, axis=1) < 0.015).all(), (ours, theirs)


def test_untrained_net_and_noise_only_samples(evoked, model_vol):
    """Samples with alpha_max below lam give exactly zero; gaps logged."""
    ev = evoked.copy()
    ev.data[:, :6] *= 0.05  # those samples are far below the peak
    with catch_logging(verbose=True) as log:
        stc = model_vol.apply(ev, 40, debias=False, pick_ori="vector", verbose=True)
    log = log.getvalue()
    assert "Relative duality gap per sample" in log
    assert "Certificate" not in log  # no tol: measured only
    cert = model_vol.certificate_
    assert cert["n_resolved"] == 0
    M = model_vol.problem.whiten(ev)
    below = sample_alpha_max(model_vol.problem, M) <= cert["lam"]
    assert below[:6].all() and not below.all()
    assert isinstance(stc, mne.VolVectorSourceEstimate)
    assert_array_equal(stc.data[..., below], 0.0)
    # gaps of zero columns (below alpha_max) are exactly 0
    assert_array_equal(cert["rel_gap"][below], 0.0)
    assert sample_alpha_max(model_vol.problem, M).max() == pytest.approx(
        cert["alpha_max"][0]
    )


def test_output_classes(evoked, evoked_cov, fwd_surf, fwd_vol, model_fixed, model_vol):
    """The class follows the source space and pick_ori, as mixed_norm."""
    cov = evoked_cov[1]
    assert type(model_fixed.apply(evoked, 50)) is mne.SourceEstimate
    with pytest.raises(ValueError, match="fixed orientation"):
        model_fixed.apply(evoked, 50, pick_ori="vector")
    loose = StepLISTA(fwd_surf, cov, evoked.info, n_layers=3, loose=0.2)
    assert type(loose.apply(evoked, 50)) is mne.SourceEstimate
    vec = loose.apply(evoked, 50, pick_ori="vector")
    assert type(vec) is mne.VectorSourceEstimate
    assert type(model_vol.apply(evoked, 50, debias=False)) is mne.VolSourceEstimate
    with pytest.raises(ValueError, match="pick_ori"):
        model_vol.apply(evoked, 50, pick_ori="normal")


def test_mixed_source_space(evoked, evoked_cov, subset_path):
    """Surface + volume source space -> MixedSourceEstimate."""
    bem = mne.read_bem_solution(subset_path / "sample-1280-bem-sol.fif", verbose=0)
    src = read_subset_src(subset_path, verbose=0)
    vol = mne.setup_volume_source_space(None, pos=30.0, bem=bem, verbose=0)
    trans = subset_path / "sample_audvis_trunc-trans.fif"
    fwd = mne.make_forward_solution(
        evoked.info, trans, src + vol, bem, meg=True, eeg=False, verbose=0
    )
    model = StepLISTA(fwd, evoked_cov[1], evoked.info, n_layers=3, loose=1.0)
    stc = model.apply(evoked, 30)
    assert isinstance(stc, mne.MixedSourceEstimate)
    assert isinstance(
        model.apply(evoked, 30, pick_ori="vector"), mne.MixedVectorSourceEstimate
    )


@pytest.mark.filterwarnings("ignore:Source estimate only contains:RuntimeWarning")
@pytest.mark.parametrize("kind", ["fixed", "volume"])
def test_residual_plus_forward_is_data(kind, evoked, model_fixed, model_vol):
    """residual + P forward(stc) == data (P: the data's SSP projector)."""
    model = model_fixed if kind == "fixed" else model_vol
    pick_ori = None if kind == "fixed" else "vector"
    stc, residual = model.apply(
        evoked, 30, return_residual=True, pick_ori=pick_ori, debias=kind == "fixed"
    )
    assert isinstance(residual, mne.Evoked)
    assert residual.ch_names == model.problem.ch_names
    est = mne.apply_forward(model.problem.forward, stc, evoked.info, verbose=False)
    est.add_proj(evoked.info["projs"], verbose=False).apply_proj(verbose=False)
    data = evoked.copy().pick(residual.ch_names).data
    scale = np.abs(data).max()
    assert_allclose(
        residual.data + est.pick(residual.ch_names).data, data, atol=1e-10 * scale
    )
    # the residual is smaller than the data (something is explained)
    assert np.linalg.norm(residual.data) < np.linalg.norm(data)


def test_dipoles(evoked, model_fixed):
    """return_as_dipoles: one Dipole per active source, same as the stc."""
    stc = model_fixed.apply(evoked, 30)
    dipoles = model_fixed.apply(evoked, 30, return_as_dipoles=True)
    assert all(isinstance(d, mne.Dipole) for d in dipoles)
    assert len(dipoles) == len(np.concatenate(stc.vertices))
    back = make_stc_from_dipoles(dipoles, model_fixed.problem.src, verbose=False)
    assert_allclose(back.data, stc.data, rtol=1e-10)
    assert_allclose(dipoles[0].times, evoked.times, atol=1e-12)


@pytest.mark.parametrize("use_numba", [True, False])
def test_debias_matches_mne_compute_bias(use_numba, monkeypatch):
    """debias solves compute_bias's problem (to its tolerance), compiled or not."""
    from mne.inverse_sparse.mxne_debiasing import compute_bias

    from mne_lista import _numba

    if use_numba:
        pytest.importorskip("numba")
    monkeypatch.setattr(_numba, "USE_NUMBA", use_numba)
    rng = np.random.default_rng(0)
    for n_orient in (1, 3):
        G = rng.standard_normal((40, 24))
        X = rng.standard_normal((24, 15)) * (rng.random((24, 1)) > 0.2)
        M = G @ (1.4 * X) + 0.1 * rng.standard_normal((40, 15))
        D = compute_bias(M, G, X, n_orient=n_orient, tol=1e-12, max_iter=100000)
        Xd = debias(M, G, X, n_orient, tol=1e-12, max_iter=100000)
        nz = np.abs(X).sum(1) > 0
        assert_allclose(
            Xd[nz] / np.where(X[nz] == 0, 1, X[nz]) * (X[nz] != 0),
            D[nz, None] * (X[nz] != 0),
            rtol=1e-5,
        )
        assert_array_equal(Xd[~nz], 0.0)


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("n_orient", [1, 3])
def test_debias_windows_matches_debias(n_orient, use_numba, monkeypatch):
    """A batch debiased from the Gram (SURE's path) is debias on each window."""
    from mne_lista import _debias, _numba, _sure

    if use_numba:
        pytest.importorskip("numba")
    monkeypatch.setattr(_numba, "USE_NUMBA", use_numba)
    rng = np.random.default_rng(0)
    n, P, K = 30, 12, 5
    m = P * n_orient
    G = rng.standard_normal((n, m))
    # an empty window, a single position, a full one, scattered ones
    supports = [[], [4], [0, 3, 7], list(range(P)), [1, 2, 5, 6, 8, 10, 11]]
    Z = np.zeros((m, len(supports), K))
    for w, sup in enumerate(supports):
        for p in sup:
            Z[p * n_orient : (p + 1) * n_orient, w] = rng.standard_normal((n_orient, K))
    Z[n_orient * 3, 2, 1:] = 0.0  # a row with a single non-zero
    M = np.einsum("nm,mwk->nwk", G, 1.3 * Z) + 0.1 * rng.standard_normal(
        (n, len(supports), K)
    )
    gram, GtM = G.T @ G, np.einsum("nm,nwk->mwk", G, M)

    def per_window(**kw):
        X = Z.copy()
        for w, sup in enumerate(supports):
            rows = np.repeat(np.isin(np.arange(P), sup), n_orient)
            if rows.any():
                X[rows, w] = debias(M[:, w], G[:, rows], Z[rows, w], n_orient, **kw)
        return X

    expected = per_window()
    assert np.abs(expected).sum() > 1.1 * np.abs(Z).sum()  # scaled up
    assert_allclose(debias_windows(gram, GtM, Z, n_orient), expected, rtol=1e-9)
    # SURE's _debiased (torch in and out), from the Gram or from G
    Gt, Mt, Zt = (torch.as_tensor(a) for a in (G, M, Z))
    for kw in ({}, dict(gram=torch.as_tensor(gram), GtM=torch.as_tensor(GtM))):
        X = _sure._debiased(Gt, Mt, Zt, n_orient, **kw)
        assert_allclose(X.numpy(), expected, rtol=1e-9)
    # windows of more positions than the exact Lipschitz constant takes: one
    # at a time (a randomized bound: converged, to compare the minimizers)
    monkeypatch.setattr(_debias, "_EXACT_LIPSCHITZ_MAX", 5)
    kw = dict(tol=1e-12, max_iter=100000)
    X = debias_windows(gram, GtM, Z, n_orient, **kw)
    assert_allclose(X, per_window(**kw), rtol=1e-6)


def test_active_set_union_of_supports():
    Z = np.zeros((9, 4))
    Z[4, 1] = 1e-300
    Z[0, 3] = -2.0
    assert_array_equal(active_set(Z, 3), [1, 1, 1, 1, 1, 1, 0, 0, 0])
    assert_array_equal(active_set(Z, 1), [1, 0, 0, 0, 1, 0, 0, 0, 0])


def _make_epochs(evoked, n_epochs=4, seed=0):
    """Single trials: the evoked plus noise of its own amplitude."""
    rng = np.random.default_rng(seed)
    data = evoked.data[None] * rng.uniform(0.5, 1.5, (n_epochs, 1, 1))
    noise = rng.standard_normal(data.shape) * evoked.data.std(1, keepdims=True)
    return mne.EpochsArray(
        data + 0.5 * noise, evoked.info, tmin=evoked.times[0], verbose=False
    )


@pytest.mark.parametrize("kind", ["fixed", "volume"])
def test_apply_epochs_chunking(kind, evoked, model_fixed, model_vol):
    """Chunks of any size give the same estimates as apply() on each epoch."""
    # debiasing the (dense) output of an untrained 5-layer net on the volume
    # is slow and depends only on the active rows: checked on 'fixed'
    model = model_fixed if kind == "fixed" else _float64(model_vol)
    kw = dict(debias=kind == "fixed")
    epochs = _make_epochs(evoked, n_epochs=3 if kind == "fixed" else 2)
    n_times = len(epochs.times)
    ref = [
        model.apply(mne.EvokedArray(e, epochs.info, tmin=epochs.tmin), 35, **kw)
        for e in epochs.get_data()
    ]
    sizes = (1, 2, None) if kind == "fixed" else (1, None)  # epochs per batch
    for batch_size in sizes:
        with catch_logging(verbose=True) as log:
            stcs = model.apply_epochs(
                epochs, 35, batch_size=batch_size, verbose=True, **kw
            )
        assert "Relative duality gap over all problems" in log.getvalue()
        assert len(stcs) == len(epochs)
        for s, r in zip(stcs, ref):
            assert type(s) is type(r)
            for v1, v2 in zip(s.vertices, r.vertices):
                assert_array_equal(v1, v2)
            assert_allclose(s.data, r.data, rtol=1e-7, atol=1e-7 * np.abs(r.data).max())
            assert_allclose(s.times, r.times)
    assert model.certificate_["rel_gap"].shape == (len(epochs), n_times)
    # a tiny memory budget means one epoch per batch; generator output
    gen = model.apply_epochs(epochs, 35, max_memory=1, return_generator=True, **kw)
    assert not isinstance(gen, list)
    for s, r in zip(gen, ref):
        assert_allclose(s.data, r.data, rtol=1e-7, atol=1e-7 * np.abs(r.data).max())


def test_bad_inputs(evoked, model_fixed):
    """Clear errors: alpha, NaN, channels, pick_ori, batch size, device."""
    for alpha in (-1, 100, 150):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 100\)"):
            model_fixed.apply(evoked, alpha)
    with pytest.raises(TypeError, match="alpha"):
        model_fixed.apply(evoked, "sure")
    with pytest.raises(TypeError, match="evoked"):
        model_fixed.apply(evoked.data, 30)
    ev = evoked.copy()
    ev.data[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model_fixed.apply(ev, 30)
    epochs = _make_epochs(evoked, n_epochs=2)
    epochs._data[1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        model_fixed.apply_epochs(epochs, 30)
    ch = model_fixed.problem.ch_names[5]
    with pytest.raises(ValueError, match="missing from the data"):
        model_fixed.apply(evoked.copy().drop_channels([ch]), 30)
    ev = evoked.copy()
    ev.info["bads"] = [ch]
    with pytest.raises(ValueError, match="marked bad"):
        model_fixed.apply(ev, 30)
    epochs = _make_epochs(evoked, n_epochs=2).drop_channels([ch])
    with pytest.raises(ValueError, match="missing from the data"):
        model_fixed.apply_epochs(epochs, 30)
    with pytest.raises(ValueError, match="batch_size"):
        model_fixed.apply_epochs(_make_epochs(evoked, 2), 30, batch_size=0)
    with pytest.raises(TypeError, match="epochs"):
        model_fixed.apply_epochs(evoked, 30)


def test_lam_range_warning(evoked, model_fixed):
    model_fixed.lam_range = (0.1, 0.8)
    try:
        with pytest.warns(RuntimeWarning, match="outside the range"):
            model_fixed.apply(evoked, 90)
    finally:
        model_fixed.lam_range = None


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_diverged_samples_warn(evoked, evoked_cov, fwd_surf):
    """Steps that make plain Step-LISTA diverge: a warning names the samples;
    with tol they are finished by the exact solver (no warning). The same
    steps in the adaptive network (the default) do not diverge."""
    ev = evoked.copy().crop(0.08, 0.1)
    gaps, models = {}, {}
    for adaptive in (False, True):
        model = StepLISTA(
            fwd_surf,
            evoked_cov[1],
            evoked.info,
            n_layers=5,
            loose=0.0,
            adaptive=adaptive,
        )
        with torch.no_grad():
            model.net.log_steps.fill_(np.log(50.0))  # far beyond 2 / L
        if adaptive:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                model.apply(ev, 30)
        else:
            match = r"sample\(s\) have a relative duality"
            with pytest.warns(RuntimeWarning, match=match):
                model.apply(ev, 30)
        gaps[adaptive] = model.certificate_["rel_gap"]
        models[adaptive] = model
    assert np.all(gaps[False] > 1)
    assert np.all(gaps[True] < 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models[False].apply(ev, 30, tol=1e-6)
    assert np.all(models[False].certificate_["rel_gap"] <= 1e-6)


def test_cuda_absent_is_a_clear_error(evoked, evoked_cov, fwd_surf, model_fixed):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        model_fixed.to("cuda")
    assert model_fixed.device.type == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        StepLISTA(fwd_surf, evoked_cov[1], evoked.info, loose=0.0, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        step_lista(evoked, None, None, 30, model=model_fixed, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_gpu_agree(evoked, model_fixed):
    stc_cpu = model_fixed.apply(evoked, 30)
    try:
        stc_gpu = model_fixed.to("cuda").apply(evoked, 30)
    finally:
        model_fixed.to("cpu")
    assert_allclose(
        stc_gpu.data, stc_cpu.data, rtol=1e-6, atol=1e-6 * np.abs(stc_cpu.data).max()
    )


def test_step_lista_function(evoked, evoked_cov, fwd_surf, model_fixed):
    """One call like mixed_norm with a given model; mismatches are errors."""
    cov = evoked_cov[1]
    ref = model_fixed.apply(evoked, 30)
    stc = step_lista(evoked, fwd_surf, cov, 30, model=model_fixed)
    assert_allclose(stc.data, ref.data)
    stc, res = step_lista(
        evoked, None, None, 30, model=model_fixed, return_residual=True
    )
    assert isinstance(res, mne.Evoked)
    with pytest.raises(ValueError, match="does not match the fingerprint"):
        step_lista(evoked, fwd_surf, _other_cov(cov), 30, model=model_fixed)
    with pytest.raises(ValueError, match="forward and noise_cov are needed"):
        step_lista(evoked, None, cov, 30)


def _other_cov(cov):
    """A noise covariance of another structure (diagonal loading).

    (A scalar multiple of the covariance gives the same whitened, weighted
    gain in MNE, hence a model valid for it: not a mismatch.)
    """
    cov = cov.copy()
    cov["data"] = cov["data"] + np.diag(np.diag(cov["data"]))
    return cov


def test_step_lista_fits_a_model(evoked, evoked_cov, fwd_surf):
    """model=None: build, fit (tiny budget here) and apply in one call."""
    stc, residual = step_lista(
        evoked,
        fwd_surf,
        evoked_cov[1],
        30,
        loose=0.0,
        n_layers=4,
        return_residual=True,
        fit_params=dict(n_samples=64, n_epochs=2, random_state=0),
    )
    assert isinstance(stc, mne.SourceEstimate)
    assert isinstance(residual, mne.Evoked)
