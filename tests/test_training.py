"""Tests of the simulation, the training and StepLISTA.fit/solve."""

import warnings
from functools import partial

import numpy as np
import pytest
import scipy.sparse
import torch
from _helpers import alpha_max, objective

from mne_lista import StepLISTA, ista
from mne_lista.inverse import _harder_samples
from mne_lista.networks import UnrolledISTA
from mne_lista.simulation import simulate_data
from mne_lista.training import evaluate, fit_network, train


def test_simulate_data(problem_surf_fixed, problem_vol):
    """Shapes, determinism, lam range, sparsity and SNR of the simulations."""
    for problem in (problem_surf_fixed, problem_vol):
        X, lam, truth = simulate_data(
            problem, 50, n_sources=(1, 3), random_state=0, return_truth=True
        )
        assert X.shape == (problem.n_channels, 50) and lam.shape == (50,)
        X2, lam2 = simulate_data(problem, 50, n_sources=(1, 3), random_state=0)
        np.testing.assert_array_equal(X, X2)
        np.testing.assert_array_equal(lam, lam2)
        X3, _ = simulate_data(problem, 50, n_sources=(1, 3), random_state=1)
        assert not np.allclose(X, X3)
        Z = truth["Z"]
        assert scipy.sparse.issparse(Z) and Z.shape == (problem.n_sources, 50)
        lmax = alpha_max(torch.as_tensor(problem.gain), torch.as_tensor(X), 1)
        if problem.n_orient == 1:
            ratio = lam / lmax.numpy()
            np.testing.assert_allclose(ratio, truth["lam_ratio"], rtol=1e-10)
        assert np.all((truth["lam_ratio"] >= 0.1) & (truth["lam_ratio"] <= 0.8))
        # few active positions (up to 3, plus neighbours when extended)
        act = np.diff(Z.indptr) // problem.n_orient
        assert act.min() >= 1 and np.median(act) <= 10
        # the SNR is the drawn one: ||D z|| / ||x - D z||
        signal = problem.gain @ Z.toarray()
        snr = 20 * np.log10(
            np.linalg.norm(signal, axis=0) / np.linalg.norm(X - signal, axis=0)
        )
        np.testing.assert_allclose(snr, truth["snr"], atol=1e-8)
    with pytest.raises(ValueError, match="lam_range"):
        simulate_data(problem_vol, 5, lam_range=(0.0, 0.5))
    with pytest.raises(ValueError, match="min <= max"):
        simulate_data(problem_vol, 5, snr=(10, 0))
    with pytest.raises(ValueError, match="n_sources must be"):
        simulate_data(problem_surf_fixed, 5, n_sources=(1, 10**6))


@pytest.fixture(scope="module")
def surf_data(problem_surf_fixed):
    p = problem_surf_fixed
    train_set = simulate_data(p, 128, random_state=10)
    val_set = simulate_data(p, 128, random_state=11)
    test_set = simulate_data(p, 128, random_state=12)  # independent held-out
    return train_set, val_set, test_set


@pytest.mark.parametrize("method", ["adam", "gd"])
def test_training_beats_ista(method, problem_surf_fixed, surf_data):
    """A short training lowers the held-out objective below ISTA's."""
    p = problem_surf_fixed
    (X, lam), (Xv, lv), (Xt, lt) = surf_data
    n_layers = 6
    net = UnrolledISTA(p, n_layers)
    hist = train(
        net,
        X,
        lam,
        Xv,
        lv,
        method=method,
        n_epochs=4 if method == "adam" else 6,
        batch_size=32,
        random_state=0,
        verbose=False,
    )
    assert hist["best_val_loss"] <= hist["init_val_loss"]
    D, Xt_, lt_ = (torch.as_tensor(a) for a in (p.gain, Xt, lt))
    with torch.no_grad():
        f_net = objective(D, Xt_, net(Xt_, lt_).double(), lt_, 1).mean()
    f_ista = objective(D, Xt_, ista(p, Xt_, lt_, n_layers), lt_, 1).mean()
    assert f_net < f_ista
    assert np.all(net.steps > 0)
    assert not np.allclose(net.steps, 1.0 / p.lipschitz)


def _fit(net, p, **kwargs):
    """fit_network with StepLISTA's default simulation (and harder samples)."""
    kw = dict(n_sources=(1, 5), snr=(0.0, 20.0), extent=(0.0, 1.2))
    kw["lam_range"] = (0.1, 0.8)
    return fit_network(
        net,
        partial(simulate_data, p, **kw),
        harder=partial(_harder_samples, p, **kw),
        **kwargs,
    )


def test_training_deterministic(problem_surf_fixed):
    """Same seed -> same steps; fit_network records its settings."""
    p = problem_surf_fixed
    steps = []
    for _ in range(2):
        net = UnrolledISTA(p, 4, dtype=torch.float64)
        hist = _fit(
            net, p, n_samples=64, n_val=32, n_epochs=2, random_state=3, verbose=False
        )
        steps.append(net.steps)
    np.testing.assert_array_equal(steps[0], steps[1])
    assert hist["n_samples"] == 64 and hist["n_epochs"] == 2
    assert len(hist["val_loss"]) == hist["n_evals"] >= 1
    net = UnrolledISTA(p, 4, dtype=torch.float64)
    _fit(net, p, n_samples=64, n_val=32, n_epochs=2, random_state=4)
    assert not np.array_equal(net.steps, steps[0])


def test_train_errors(problem_surf_fixed, surf_data):
    p = problem_surf_fixed
    (X, lam), (Xv, lv), _ = surf_data
    net = UnrolledISTA(p, 3)
    with pytest.raises(ValueError, match="method"):
        train(net, X, lam, Xv, lv, method="sgd")
    with pytest.raises(ValueError, match="stages"):
        train(net, X, lam, Xv, lv, stages=[2, 5])
    with pytest.raises(ValueError, match="X must have shape"):
        train(net, X[:5], lam, Xv, lv)
    # evaluate is the mean normalized objective, 1/2 at most for zeros... and
    # <= 1 for the ISTA-initialized network
    assert 0 < evaluate(net, torch.as_tensor(Xv), torch.as_tensor(lv)) <= 1


def test_step_lista_fit_solve(evoked_cov, fwd_surf):
    """StepLISTA.fit / solve: attributes, shapes, kinds, determinism."""
    evoked, cov = evoked_cov
    model = StepLISTA(fwd_surf, cov, evoked.info, n_layers=5, loose=0.0)
    out = model.fit(n_samples=64, n_epochs=2, random_state=0, verbose=False)
    assert out is model
    assert model.lam_range == (0.1, 0.8)
    assert "val_loss" in model.fit_history_
    p = model.problem
    X = p.whiten(evoked.copy().crop(0.05, 0.1))
    lam = 0.3 * alpha_max(torch.as_tensor(p.gain), torch.as_tensor(X), 1).numpy()
    Z = model.solve(X, lam)
    assert isinstance(Z, np.ndarray) and Z.shape == (p.n_sources, X.shape[1])
    Zt = model.solve(torch.as_tensor(X), torch.as_tensor(lam))
    assert isinstance(Zt, torch.Tensor) and Zt.shape == Z.shape
    np.testing.assert_allclose(Zt.double().numpy(), Z, rtol=1e-5, atol=1e-6)
    z1 = model.solve(X[:, 0], float(lam[0]))
    assert z1.shape == (p.n_sources,)
    np.testing.assert_allclose(z1, Z[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="X must have shape"):
        model.solve(X[:10], lam)
    assert model.network_name == "BacktrackStepLISTANet"  # the default
    steps = model.net.steps
    model.net = model._make_net()  # refit from scratch: same seed, same steps
    model.fit(n_samples=64, n_epochs=2, random_state=0, verbose=False)
    np.testing.assert_array_equal(model.net.steps, steps)


def test_default_budget(problem_surf_fixed, problem_vol):
    """Default epochs: from the flop budget, at least 4 (12 for the
    support-scaled networks, whose training is noisier), at most 30."""
    from mne_lista.training import _default_budget

    n, n_val, n_epochs = _default_budget(UnrolledISTA(problem_vol, 20), None, None)
    assert (n, n_val, n_epochs) == (1024, 256, 4)  # budget below 4 epochs
    for safeguard in ("monotone", "backtracking"):
        net = UnrolledISTA(problem_vol, 20, step_rule="support", safeguard=safeguard)
        assert _default_budget(net, None, None)[2] == 12
    surf = _default_budget(UnrolledISTA(problem_surf_fixed, 20), None, None)
    assert surf[:2] == (2048, 512) and 12 < surf[2] <= 30
    few = _default_budget(UnrolledISTA(problem_surf_fixed, 20), 10**5, None)
    assert few[2] == 4


def test_train_undoes_divergence(problem_surf_fixed, surf_data):
    """Adam steps that make the unrolled net diverge are undone.

    With lr=1 the first Adam steps multiply every step size by e (2.7/L),
    beyond the 2/L that keeps ISTA stable: without the guard the iterates
    blow up (training loss ~70), Adam never recovers and the best network
    stays the untrained one. With it, diverging steps are undone, the
    learning rate is lowered, and the network learns.
    """
    (X, lam), (X_val, lam_val), _ = surf_data
    net = UnrolledISTA(problem_surf_fixed, 10)
    hist = train(
        net,
        X,
        lam,
        X_val,
        lam_val,
        n_epochs=3,
        batch_size=16,
        lr=1.0,
        random_state=0,
        verbose=False,
    )
    assert hist["n_restored"] > 0
    assert np.isfinite(hist["best_val_loss"])
    assert hist["best_val_loss"] < 0.995 * hist["init_val_loss"]  # it learned
    assert np.all(np.isfinite(net.steps)) and np.all(net.steps * net.lipschitz > 1)


def test_stages_warm_start_and_divergence_warning(problem_surf_fixed, surf_data):
    """Growing the network (stages): the new layers copy the last trained
    step unless that diverges, then they start as ISTA; a trained network
    worse than zero on the validation set is reported."""
    (X, lam), (X_val, lam_val), _ = surf_data
    for first, expected in ((1.5, 1.5), (1e3, 1.0)):  # (step x L, new layers)
        net = UnrolledISTA(problem_surf_fixed, 4, dtype=torch.float64)
        with torch.no_grad():
            net.log_steps[:2] = np.log(first)
        kw = dict(stages=[2, 4], n_epochs=1, lr=1e-12, random_state=0)
        if first > 2:  # the first two layers diverge: a warning
            with pytest.warns(RuntimeWarning, match="worse than the zero"):
                train(net, X, lam, X_val, lam_val, **kw)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                train(net, X, lam, X_val, lam_val, **kw)
        np.testing.assert_allclose(net.steps[2:] * net.lipschitz, expected, rtol=1e-6)


def test_fit_network_counts_diverged_samples(problem_surf_fixed):
    """fit_network checks the trained steps on validation and harder samples:
    ISTA steps never diverge; steps of 1e3 / L do, and a warning says so."""
    p = problem_surf_fixed
    kw = dict(n_samples=32, n_val=32, n_epochs=1, lr=1e-12, random_state=0)
    net = UnrolledISTA(p, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning) as record:  # lr=1e-12: no progress
        hist = _fit(net, p, verbose=False, **kw)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "by less than 0.01 %" in messages[0]
    assert hist["n_diverged"] == dict(val=0, harder=0)
    with torch.no_grad():
        net.log_steps.fill_(np.log(1e3))
    with pytest.warns(RuntimeWarning) as record:
        hist = _fit(net, p, verbose=False, **kw)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, messages  # one per set
    assert "zero solution on 32 of 32 validation samples" in messages[0]
    assert "trained steps diverge on 32 of 32 problems harder" in messages[1]
    assert hist["n_diverged"] == dict(val=32, harder=32)


def test_no_progress_warning(problem_surf_fixed, surf_data):
    """A training that does not improve on the untrained network says so."""
    (X, lam), (X_val, lam_val), _ = surf_data
    net = UnrolledISTA(problem_surf_fixed, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="by less than 0.01 %"):
        train(net, X, lam, X_val, lam_val, n_epochs=1, lr=0.0, random_state=0)
    np.testing.assert_allclose(net.steps * net.lipschitz, 1.0, rtol=1e-12)
