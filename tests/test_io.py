"""Saving and reading Step-LISTA models: round trip and every bad file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from mne_lista import StepLISTA, read_step_lista
from mne_lista._io import FORMAT_NAME, _fingerprint_matches, gain_fingerprint


@pytest.fixture(scope="module")
def evoked(evoked_cov):
    return evoked_cov[0].copy().crop(0.07, 0.11)


@pytest.fixture(scope="module")
def model(evoked, evoked_cov, fwd_surf):
    model = StepLISTA(
        fwd_surf, evoked_cov[1], evoked.info, n_layers=6, loose=0.0, depth=0.8
    )
    rng = np.random.default_rng(0)
    model.net.set_steps(rng.uniform(0.5, 3.0, 6) / model.problem.lipschitz)
    model.lam_range = (0.1, 0.8)
    return model


def _read(fname, evoked, evoked_cov, fwd, **kwargs):
    return read_step_lista(fname, fwd, evoked_cov[1], evoked.info, **kwargs)


def test_round_trip(tmp_path, model, evoked, evoked_cov, fwd_surf):
    fname = tmp_path / "model-lista.npz"
    model.save(fname)
    model2 = _read(fname, evoked, evoked_cov, fwd_surf)
    assert isinstance(model2, StepLISTA)
    assert model2.n_layers == model.n_layers
    assert_allclose(model2.net.steps, model.net.steps, rtol=1e-6)
    assert model2.lam_range == (0.1, 0.8)
    assert model2.problem.loose == 0.0 and model2.problem.depth == 0.8
    assert next(model2.net.buffers()).dtype == next(model.net.buffers()).dtype
    stc1, stc2 = model.apply(evoked, 30), model2.apply(evoked, 30)
    assert_allclose(stc2.data, stc1.data, rtol=1e-5)
    # the file is plain npz + JSON: readable without pickle
    with np.load(fname, allow_pickle=False) as npz:
        meta = json.loads(npz["metadata"].tobytes().decode())
    assert meta["format"] == FORMAT_NAME
    assert meta["ch_names"] == model.problem.ch_names
    for key in ("n_layers", "lam_range", "n_orient", "loose", "depth", "rank"):
        assert key in meta
    # overwrite semantics as MNE
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(fname)
    model.save(fname, overwrite=True)
    # any file name (no ".npz" appended)
    fname2 = tmp_path / "model.lista"
    model.save(fname2)
    assert fname2.is_file()
    assert_allclose(
        _read(fname2, evoked, evoked_cov, fwd_surf).net.steps,
        model.net.steps,
        rtol=1e-6,
    )


def test_adaptive_round_trip(tmp_path, evoked, evoked_cov, fwd_surf):
    """adaptive=True: the support exponents and references travel too."""
    model = StepLISTA(
        fwd_surf, evoked_cov[1], evoked.info, n_layers=6, loose=0.0, adaptive=True
    )
    assert model.network_name == "BacktrackStepLISTANet"
    assert model.net.step_rule == "support" and model.net.safeguard == "backtracking"
    X = model.problem.whiten(evoked)
    Xt = torch.as_tensor(X[:, :3], dtype=torch.float32)
    model.net.set_support_reference(Xt, 1.0)  # as the training does
    assert bool(torch.isfinite(model.net.log_ref_support).all())
    rng = np.random.default_rng(1)
    with torch.no_grad():
        model.net.log_steps.copy_(torch.as_tensor(rng.uniform(0.0, 2.0, 6)))
        model.net.support_exp.copy_(torch.as_tensor(rng.uniform(0.0, 5.0, 6)))
    fname = tmp_path / "adaptive.npz"
    model.save(fname)
    model2 = _read(fname, evoked, evoked_cov, fwd_surf)
    assert model2.adaptive and model2.net.step_rule == "support"
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(model2.net.state_dict()[key], value)
    Z1, Z2 = model.solve(X, 1.0), model2.solve(X, 1.0)
    assert_allclose(Z2, Z1, rtol=1e-4, atol=1e-5 * np.abs(Z1).max())  # float32
    # an untrained adaptive model (references unset) round-trips too
    fresh = StepLISTA(fwd_surf, evoked_cov[1], evoked.info, n_layers=3, adaptive=True)
    fresh.save(tmp_path / "fresh.npz")
    fresh2 = _read(tmp_path / "fresh.npz", evoked, evoked_cov, fwd_surf)
    assert bool(torch.isnan(fresh2.net.log_ref_support).all())
    # a file that lost an array of the network
    with np.load(fname, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files if key != "net.support_exp"}
    np.savez(tmp_path / "lost.npz", **arrays)
    with pytest.raises(ValueError, match="needs the arrays"):
        _read(tmp_path / "lost.npz", evoked, evoked_cov, fwd_surf)
    arrays["net.support_exp"] = np.full(6, np.nan)
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ValueError, match="support_exp"):
        _read(tmp_path / "nan.npz", evoked, evoked_cov, fwd_surf)


def test_float64_network_round_trip(tmp_path, model, evoked, evoked_cov, fwd_surf):
    steps = model.net.steps
    net32 = model.net
    model.net = model._make_net(torch.float64)
    try:
        model.net.set_steps(steps)
        model.save(tmp_path / "m64.npz")
    finally:
        model.net = net32
    model2 = _read(tmp_path / "m64.npz", evoked, evoked_cov, fwd_surf)
    assert next(model2.net.buffers()).dtype == torch.float64
    assert_allclose(model2.net.steps, steps, rtol=1e-12)


def test_wrong_forward_cov_channels(
    tmp_path, model, evoked, evoked_cov, fwd_surf, fwd_vol
):
    fname = tmp_path / "model.npz"
    model.save(fname)
    with pytest.raises(ValueError, match="forward model does not match"):
        _read(fname, evoked, evoked_cov, fwd_vol)
    cov = evoked_cov[1].copy()
    cov["data"] = cov["data"] + np.diag(np.diag(cov["data"]))  # other structure
    with pytest.raises(ValueError, match="does not match the fingerprint"):
        read_step_lista(fname, fwd_surf, cov, evoked.info)
    # a scalar multiple gives the same whitened, weighted gain: accepted
    cov = evoked_cov[1].copy()
    cov["data"] = cov["data"] * 1.5
    read_step_lista(fname, fwd_surf, cov, evoked.info)
    info = evoked.info.copy()
    info["bads"] = [model.problem.ch_names[3]]
    with pytest.raises(ValueError, match="channels do not match"):
        read_step_lista(fname, fwd_surf, evoked_cov[1], info)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_read_on_absent_cuda(tmp_path, model, evoked, evoked_cov, fwd_surf):
    model.save(tmp_path / "model.npz")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        _read(tmp_path / "model.npz", evoked, evoked_cov, fwd_surf, device="cuda")


def _write_npz(fname, **arrays):
    with open(fname, "wb") as fid:
        np.savez(fid, **arrays)


def test_corrupt_and_foreign_files(tmp_path, model, evoked, evoked_cov, fwd_surf):
    good = tmp_path / "good.npz"
    model.save(good)
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["metadata"].tobytes().decode())

    def with_meta(**changes):
        m = dict(meta, **changes)
        return np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)

    cases = {
        "random.npz": None,
        "truncated.npz": good.read_bytes()[: good.stat().st_size // 2],
        "empty.npz": b"",
    }
    rng = np.random.default_rng(0)
    cases["random.npz"] = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a mne-lista Step-LISTA model"):
            _read(tmp_path / name, evoked, evoked_cov, fwd_surf)
    bad_arrays = {
        "foreign.npz": dict(weights=np.ones(3)),
        "no_meta.npz": dict(steps=arrays["steps"], fingerprint=arrays["fingerprint"]),
        "bad_json.npz": dict(arrays, metadata=np.frombuffer(b"{oops", np.uint8)),
        "other_format.npz": dict(arrays, metadata=with_meta(format="sklearn")),
        "neg_steps.npz": dict(arrays, steps=-arrays["steps"]),
        "nan_steps.npz": dict(arrays, steps=arrays["steps"] * np.nan),
        "few_steps.npz": dict(arrays, steps=arrays["steps"][:2]),
        "no_layers.npz": dict(
            arrays,
            metadata=np.frombuffer(
                json.dumps({k: v for k, v in meta.items() if k != "n_layers"}).encode(),
                np.uint8,
            ),
        ),
        "bad_fp.npz": dict(arrays, fingerprint=arrays["fingerprint"][:, :2]),
        "pickled.npz": dict(arrays, steps=np.array([object()], dtype=object)),
    }
    for name, arr in bad_arrays.items():
        if name == "pickled.npz":
            with open(tmp_path / name, "wb") as fid:
                np.savez(fid, allow_pickle=True, **arr)
        else:
            _write_npz(tmp_path / name, **arr)
        with pytest.raises(ValueError, match="not a mne-lista Step-LISTA model"):
            _read(tmp_path / name, evoked, evoked_cov, fwd_surf)
    _write_npz(
        tmp_path / "future.npz", **dict(arrays, metadata=with_meta(format_version=99))
    )
    with pytest.raises(ValueError, match="upgrade mne-lista"):
        _read(tmp_path / "future.npz", evoked, evoked_cov, fwd_surf)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        _read(tmp_path / "absent.npz", evoked, evoked_cov, fwd_surf)


def test_fingerprint_is_robust():
    """Insensitive to rounding noise, sensitive to real changes."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((30, 200))
    fp = gain_fingerprint(G)
    assert fp.shape == (30, 8)
    assert_array_equal(fp, gain_fingerprint(G.copy()))
    noisy = G * (1 + 1e-12 * rng.standard_normal(G.shape))
    assert _fingerprint_matches(gain_fingerprint(noisy), fp)
    assert _fingerprint_matches(gain_fingerprint(np.asfortranarray(G)), fp)
    changed = G.copy()
    changed[:, 17] *= 1.05  # one source's gain 5 % off
    assert not _fingerprint_matches(gain_fingerprint(changed), fp)
    assert not _fingerprint_matches(gain_fingerprint(G[::-1]), fp)  # channel order


def test_session6_files_still_read(evoked, evoked_cov, fwd_surf):
    """Model files written by the code before the redesign (session 6: the
    BacktrackStepLISTANet and StepFISTAMxNENet classes) read into the
    composed network and give the same outputs (float32)."""
    from mne_lista import read_step_lista, read_step_mxne

    data = Path(__file__).parent / "data"
    ref = np.load(data / "session6_outputs.npz")
    model = read_step_lista(
        data / "session6_adaptive.npz", fwd_surf, evoked_cov[1], evoked.info
    )
    assert model.network_name == "BacktrackStepLISTANet"
    assert model.lam_range == (0.1, 0.8)
    X = read_subset_whitened(model, evoked)
    out = model.solve(X[:, 60:64], 1.0)
    assert_allclose(out, ref["adaptive"], rtol=0, atol=1e-5 * np.abs(out).max())
    mxne = read_step_mxne(
        data / "session6_mxne_momentum.npz", fwd_surf, evoked_cov[1], evoked.info
    )
    assert mxne.network_name == "StepFISTAMxNENet" and mxne.net.has_momentum
    out = mxne.solve(X[:, None, 60:70], 1.0)
    assert_allclose(out, ref["momentum"], rtol=0, atol=1e-5 * np.abs(out).max())


def read_subset_whitened(model, evoked):
    """The whitened data of the full 'Right Auditory' response."""
    from mne_lista.datasets import read_subset

    return model.problem.whiten(read_subset("Right Auditory", verbose=False)[0])
