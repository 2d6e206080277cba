"""The shipped pretrained parameters: the estimators apply with no fit()."""

import numpy as np
import pytest
import torch
from mne.utils import catch_logging
from numpy.testing import assert_allclose

from mne_lista import StepLISTA, StepMxNE, ista
from mne_lista._pretrained import read_pretrained, set_pretrained
from mne_lista.networks import NETWORKS, UnrolledISTA
from mne_lista.simulation import simulate_data
from mne_lista.training import evaluate

SHIPPED = ("BacktrackStepLISTANet", "StepMxNENet")


def test_shipped_file():
    """The file holds 20 layers of finite, non-ISTA steps, with provenance."""
    content = read_pretrained()
    assert content["format"] == "mne-lista-pretrained"
    assert set(SHIPPED) <= set(content["networks"])
    for name in SHIPPED:
        entry = read_pretrained(name)
        assert entry["n_layers"] == 20
        lo, hi = entry["lam_range"]
        assert 0 < lo < hi <= 1
        keys = ["log_steps"]
        if NETWORKS[name]["step_rule"] == "support":
            keys += ["support_exp", "log_ref_offset"]
            assert entry["ref_slope"] in (0.0, 1.0)
        for key in keys:
            value = np.asarray(entry[key])
            assert value.shape == (20,) and np.isfinite(value).all(), key
        assert np.abs(entry["log_steps"]).max() > 0.1  # not the ISTA steps
        assert len(entry["training"]["forwards"]) >= 3
    assert read_pretrained("StepLISTANet") is None  # plain: not shipped


def test_set_pretrained(problem_synth_free):
    """The parameters land in the network; other depths are left as ISTA."""
    name = "BacktrackStepLISTANet"
    entry = read_pretrained(name)
    net = UnrolledISTA(problem_synth_free, 20, **NETWORKS[name])
    assert set_pretrained(net, name) == tuple(entry["lam_range"])
    assert_allclose(net.log_steps.detach().numpy(), entry["log_steps"], rtol=1e-6)
    assert_allclose(net.support_exp.detach().numpy(), entry["support_exp"], rtol=1e-6)
    ref = np.asarray(entry["log_ref_offset"]) + entry["ref_slope"] * np.log(80)
    assert_allclose(net.log_ref_support.numpy(), ref, rtol=1e-6)
    short = UnrolledISTA(problem_synth_free, 5, **NETWORKS[name])
    with catch_logging(verbose="info") as log:
        assert set_pretrained(short, name) is None
    assert "No pretrained steps" in log.getvalue()
    assert not bool(short.log_steps.any()) and not bool(short.support_exp.any())


def test_unsafe_steps_fall_back_to_ista(problem_synth_free):
    """Pretrained steps without safeguard that do worse than ISTA on the
    check data are not used: the network starts as ISTA."""
    name = "StepMxNENet"
    entry = dict(read_pretrained(name), log_steps=[np.log(50.0)] * 20)
    X, lam = simulate_data(problem_synth_free, 16, extent=0.0, random_state=0)
    net = UnrolledISTA(problem_synth_free, 20, **NETWORKS[name])
    with catch_logging(verbose="info") as log:
        out = set_pretrained(net, name, entry=entry, check_data=lambda: (X, lam))
    assert out is None and "do worse than ISTA" in log.getvalue()
    assert not bool(net.log_steps.any())
    # the shipped steps pass the check on the same problem
    assert set_pretrained(net, name, check_data=lambda: (X, lam)) is not None
    assert bool(net.log_steps.any())


@pytest.fixture(scope="module")
def surf_inputs(evoked_cov, fwd_surf):
    evoked, cov = evoked_cov
    return fwd_surf, cov, evoked.copy().crop(0.07, 0.11)


def _data(problem, n=48, seed=0):
    X, lam = simulate_data(problem, n, random_state=seed)
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(lam)


def test_pretrained_applies_without_fit(surf_inputs):
    """On a forward it never saw (the fixed-orientation surface), the
    pretrained StepLISTA does better than ISTA at the same layers, with no
    fit(); pretrained=False is ISTA."""
    fwd, cov, evoked = surf_inputs
    kw = dict(loose=0.0, depth=0.8, verbose=False)
    model = StepLISTA(fwd, cov, evoked.info, **kw)
    assert model.pretrained and model.lam_range == (0.1, 0.8)
    assert model.history_ is None
    plain = StepLISTA(fwd, cov, evoked.info, pretrained=False, **kw)
    assert not plain.pretrained and plain.lam_range is None
    X, lam = _data(model.problem)
    f_pre = evaluate(model.net, X, lam)
    f_ista = evaluate(plain.net, X, lam)
    assert f_pre < f_ista
    # pretrained=False: ISTA, 20 iterations
    Z = plain.solve(X.double().numpy(), lam.numpy())
    Z_ista = ista(model.problem, X.double().numpy(), lam.numpy(), 20)
    assert_allclose(Z, Z_ista, rtol=1e-3, atol=1e-4 * np.abs(Z_ista).max())
    # apply, no fit: certified gaps below ISTA's
    gaps = {}
    for name, est in (("pre", model), ("ista", plain)):
        est.apply(evoked, 30, verbose=False)
        gaps[name] = np.median(est.certificate_["rel_gap"])
    assert gaps["pre"] < gaps["ista"]


def test_pretrained_mxne(surf_inputs):
    """StepMxNE: the pretrained steps beat ISTA on simulated windows."""
    from mne_lista.mxne import _training_windows

    fwd, cov, evoked = surf_inputs
    model = StepMxNE(fwd, cov, evoked.info, loose=0.0, depth=0.8, verbose=False)
    assert model.pretrained and model.lam_range == (0.1, 0.8)
    plain = StepMxNE(
        fwd, cov, evoked.info, loose=0.0, depth=0.8, pretrained=False, verbose=False
    )
    M, lam = _training_windows(
        model.problem, 16, n_components=4, n_times=30, lam_range=(0.1, 0.8),
        random_state=0,
    )  # fmt: skip
    assert evaluate(model.net, M, lam) < evaluate(plain.net, M, lam)
    # momentum: nothing shipped, FISTA
    fista_model = StepMxNE(
        fwd, cov, evoked.info, loose=0.2, momentum=True, verbose=False
    )
    assert not fista_model.pretrained and not bool(fista_model.net.log_steps.any())


def test_fit_refines_pretrained(surf_inputs):
    """fit() starts from the pretrained parameters and does not end worse."""
    fwd, cov, evoked = surf_inputs
    model = StepLISTA(fwd, cov, evoked.info, loose=0.0, verbose=False)
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.fit(n_samples=64, n_epochs=1, random_state=0, verbose=False)
    hist = model.history_
    # the validation set of fit() (see fit_network), and ISTA on it
    seeds = np.random.default_rng(0).integers(2**31, size=4)
    X_val, lam_val = simulate_data(model.problem, hist["n_val"], random_state=seeds[1])
    ista_net = UnrolledISTA(model.problem, 20, **NETWORKS[model.network_name])
    f_ista = evaluate(ista_net, X_val, lam_val)
    assert hist["init_val_loss"] < f_ista  # it started from the pretrained steps
    assert hist["best_val_loss"] <= hist["init_val_loss"]
    # the support references are kept (fit refines the parameters only)
    torch.testing.assert_close(
        model.net.log_ref_support, start["log_ref_support"], rtol=0, atol=0
    )


def test_pretrained_round_trip(tmp_path, surf_inputs):
    """A pretrained (unfitted) model saves and reads back identically."""
    from mne_lista import read_step_lista

    fwd, cov, evoked = surf_inputs
    model = StepLISTA(fwd, cov, evoked.info, loose=0.0, verbose=False)
    model.save(tmp_path / "pre.npz")
    model2 = read_step_lista(tmp_path / "pre.npz", fwd, cov, evoked.info)
    assert model2.lam_range == model.lam_range
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(model2.net.state_dict()[key], value)
    X, lam = simulate_data(model.problem, 16, random_state=1)
    Z1, Z2 = model.solve(X, lam), model2.solve(X, lam)
    assert_allclose(Z2, Z1, rtol=1e-3, atol=1e-4 * np.abs(Z1).max())  # float32
