"""Tests of the unrolled networks (mne_lista.networks)."""

import numpy as np
import pytest
import torch

from mne_lista import fista, ista
from mne_lista._lasso import alpha_max, ista_step, objective
from mne_lista.networks import (
    BacktrackStepLISTANet,
    LISTANet,
    SafeStepLISTANet,
    StepFISTANet,
    StepLISTANet,
    SupportStepLISTANet,
    alista_weight,
    make_network,
)
from mne_lista.simulation import simulate_data


def _data(problem, n=6, seed=0, ratio=0.3):
    X, _ = simulate_data(problem, n, random_state=seed)
    Xt = torch.as_tensor(X)
    D = torch.as_tensor(problem.gain)
    lam = ratio * alpha_max(D, Xt, problem.n_orient)
    return Xt, lam


@pytest.mark.parametrize("which", ["surf", "vol"])
def test_untrained_step_lista_is_ista(which, problem_surf_fixed, problem_vol):
    """Untrained Step-LISTA is ISTA and untrained Step-FISTA is FISTA."""
    problem = problem_surf_fixed if which == "surf" else problem_vol
    X, lam = _data(problem)
    for n_layers in (1, 7):
        net = StepLISTANet(problem, n_layers, dtype=torch.float64)
        np.testing.assert_allclose(net.steps, 1.0 / problem.lipschitz, rtol=1e-15)
        with torch.no_grad():
            Z = net(X, lam)
        Z_ref = ista(problem, X, lam, n_layers)
        assert Z.abs().max() > 0  # not trivially zero
        torch.testing.assert_close(Z, Z_ref, rtol=0, atol=1e-14)
    # fewer layers than the network has
    with torch.no_grad():
        torch.testing.assert_close(net(X, lam, n_layers=3), ista(problem, X, lam, 3))
    net = StepFISTANet(problem, 7, dtype=torch.float64)
    with torch.no_grad():
        Z = net(X, lam)
    torch.testing.assert_close(Z, fista(problem, X, lam, 7), rtol=0, atol=1e-14)
    # the safeguarded variant: ISTA steps are never rejected
    net = SafeStepLISTANet(problem, 7, dtype=torch.float64)
    with torch.no_grad():
        Z = net(X, lam)
    torch.testing.assert_close(Z, ista(problem, X, lam, 7), rtol=0, atol=1e-14)
    assert net.rejections_ == [0] * 7 and net.products_per_layer(6) == 2.0
    # the support-scaled variant: theta = beta = 0 whatever the supports
    net = SupportStepLISTANet(problem, 7, dtype=torch.float64)
    with torch.no_grad():
        Z = net(X, lam)
    torch.testing.assert_close(Z, ista(problem, X, lam, 7), rtol=0, atol=1e-12)
    assert torch.isfinite(net.log_ref_support).all()
    # the backtracking variant: retry step sqrt(a / L) = 1 / L too
    net = BacktrackStepLISTANet(problem, 7, dtype=torch.float64)
    with torch.no_grad():
        Z = net(X, lam)
    torch.testing.assert_close(Z, ista(problem, X, lam, 7), rtol=0, atol=1e-12)
    assert net.products_per_layer(6) == 2.0
    # untrained coupled LISTA is ISTA too (W = D / L, thresholds 1 / L)
    if which == "surf":
        net = LISTANet(problem, 4, dtype=torch.float64)
        with torch.no_grad():
            Z = net(X, lam)
        torch.testing.assert_close(Z, ista(problem, X, lam, 4), rtol=1e-10, atol=1e-13)


def test_steps_positive_and_set(problem_surf_fixed):
    """Steps stay positive whatever the parameters; set_steps round-trips."""
    net = StepLISTANet(problem_surf_fixed, 5, dtype=torch.float64)
    with torch.no_grad():
        net.log_steps.copy_(torch.tensor([-50.0, -3.0, 0.0, 3.0, 10.0]))
    assert np.all(net.steps > 0)
    steps = np.array([0.5, 1.0, 2.0, 10.0, 100.0]) / problem_surf_fixed.lipschitz
    net.set_steps(steps)
    np.testing.assert_allclose(net.steps, steps, rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        net.set_steps(-steps)
    with pytest.raises(ValueError, match="5 positive"):
        net.set_steps(steps[:3])
    # gradients flow to the steps
    X, lam = _data(problem_surf_fixed, n=3)
    loss = net(X, lam).abs().sum()
    loss.backward()
    assert net.log_steps.grad is not None
    assert torch.isfinite(net.log_steps.grad).all()


def test_forward_contract_and_errors(problem_surf_fixed):
    """Shapes, lam per column or scalar, n_layers and input errors."""
    problem = problem_surf_fixed
    net = StepLISTANet(problem, 4)
    assert net.n_layers == 4
    assert net.D.dtype == torch.float32
    X, lam = _data(problem, n=5)
    with torch.no_grad():
        Z = net(X, lam.float())
        Z1 = net(X, float(lam[0]))
        outs = net(X, lam, return_all=True)
    assert Z.shape == (problem.n_sources, 5) and Z.dtype == torch.float32
    assert Z1.shape == Z.shape
    assert len(outs) == 4
    torch.testing.assert_close(outs[-1], Z)
    with pytest.raises(ValueError, match="must be <= the number of layers"):
        net(X, lam, n_layers=5)
    with pytest.raises(ValueError, match="X must have shape"):
        net(X[:10], lam)
    with pytest.raises(ValueError, match="one value per column"):
        net(X, lam[:2])
    with pytest.raises(TypeError, match="X must be"):
        net(X.numpy(), lam)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        StepLISTANet(problem, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_network("foo", problem, 3)


def test_safe_step_lista_monotone(problem_surf_fixed, problem_vol):
    """With steps far beyond 2/L, plain Step-LISTA blows up; the safeguarded
    network's objective decreases at every layer for every sample."""
    for problem in (problem_surf_fixed, problem_vol):
        X, lam = _data(problem, n=6)
        steps = np.full(8, 50.0 / problem.lipschitz)
        plain = StepLISTANet(problem, 8, dtype=torch.float64).set_steps(steps)
        safe = SafeStepLISTANet(problem, 8, dtype=torch.float64).set_steps(steps)
        D = torch.as_tensor(problem.gain)
        no = problem.n_orient
        with torch.no_grad():
            f_plain = objective(D, X, plain(X, lam), lam, no)
            outs = safe(X, lam, return_all=True)
        f = [0.5 * (X * X).sum(0)] + [objective(D, X, Z, lam, no) for Z in outs]
        f = torch.stack(f)
        assert torch.all(f[1:] <= f[:-1] * (1 + 1e-12))
        assert torch.all(f_plain > f[0])  # diverged: worse than zero


def test_support_step_lista(problem_surf_fixed, problem_vol):
    """Per-sample steps exp(theta + beta (r - log s)) / L from the support
    size s of the input iterate, checked against a manual computation; huge
    steps are rejected and the objective decreases at every layer."""
    for problem in (problem_surf_fixed, problem_vol):
        D = torch.as_tensor(problem.gain)
        no, lip = problem.n_orient, problem.lipschitz
        X, lam = _data(problem, n=6)
        lam = lam * torch.linspace(0.5, 2.0, 6, dtype=lam.dtype)  # spread supports
        net = SupportStepLISTANet(problem, 3, dtype=torch.float64)
        theta, beta = np.log(1.5), 0.4
        with torch.no_grad():
            net.log_steps.fill_(theta)
            net.support_exp.fill_(beta / net.support_scale)
            Z2 = net(X, lam, n_layers=2)
        assert net.rejections_ == [0, 0]
        # manual: layer 1 from z = 0 with exp(theta) / L, layer 2 scaled
        Z1 = ista_step(D, X, torch.zeros_like(Z2), np.exp(theta) / lip, lam, no)
        s = (Z1.reshape(-1, no, 6) != 0).any(1).sum(0).double()
        assert len(torch.unique(s)) > 1 and s.min() > 0
        ref = torch.log(s).mean()
        torch.testing.assert_close(net.log_ref_support[1], ref)
        steps = np.exp(theta) * torch.exp(beta * (ref - torch.log(s))) / lip
        torch.testing.assert_close(net._layer_step(1, Z1), steps)
        # smaller supports get larger steps
        order = torch.argsort(s)
        assert torch.all(torch.diff(steps[order]) <= 0)
        Z2_ref = ista_step(D, X, Z1, steps, lam, no)
        torch.testing.assert_close(Z2, Z2_ref, rtol=1e-10, atol=1e-12)
        # steps 200x too large: rejected, monotone objective, finite
        with torch.no_grad():
            net.log_steps.fill_(np.log(200.0))
            outs = net(X, lam, return_all=True)
        assert sum(net.rejections_) > 0
        assert net.products_per_layer(6) == 2.0 + sum(net.rejections_) / 18
        f = [0.5 * (X * X).sum(0)] + [objective(D, X, Z, lam, no) for Z in outs]
        f = torch.stack(f)
        assert torch.all(f[1:] <= f[:-1] * (1 + 1e-12))


def test_backtrack_step_lista(problem_surf_fixed, problem_vol):
    """Without gradients, rejected learned steps retry (a L)^(1/2) / L, then
    (a L)^(1/4) / L before the ISTA step (checked against a manual layer);
    with gradients, the network is SupportStepLISTANet; the objective
    decreases at every layer."""
    taken = set()
    cases = ((problem_surf_fixed, (2, 8, 40, 1e4)), (problem_vol, (8, 16)))
    for problem, a_list in cases:
        D = torch.as_tensor(problem.gain)
        no, lip = problem.n_orient, problem.lipschitz
        X, lam = _data(problem, n=6)
        lam = lam * torch.linspace(0.5, 2.0, 6, dtype=lam.dtype)
        f0 = 0.5 * (X * X).sum(0)
        net = BacktrackStepLISTANet(problem, 4, dtype=torch.float64)
        for a_L in a_list:
            with torch.no_grad():
                net.log_steps.fill_(np.log(a_L))
                Z1 = net(X, lam, n_layers=1)
            # manual first layer (z = 0, the step is exp(theta) / L): the
            # first of the steps a, (aL)^(1/2)/L, (aL)^(1/4)/L, 1/L that does
            # not raise the objective
            Z0 = torch.zeros_like(Z1)
            steps = [a_L, a_L**0.5, a_L**0.25, 1.0]
            Zs = [ista_step(D, X, Z0, s / lip, lam, no) for s in steps]
            up = torch.stack([objective(D, X, Zk, lam, no) > f0 for Zk in Zs[:3]])
            tried = torch.cumprod(up.to(torch.int64), 0).bool()  # rejected to k
            choice = tried.sum(0)  # index of the step taken
            taken.update(choice.tolist())
            ref = torch.stack([Zs[int(c)][:, i] for i, c in enumerate(choice)], 1)
            torch.testing.assert_close(Z1, ref, rtol=1e-10, atol=1e-12)
            assert net.retries_ == [int(tried[0].sum() + tried[1].sum())]
            assert net.rejections_ == [int(tried[2].sum())]
            assert net.products_per_layer(6) == 2.0 + int(tried.sum()) / 6
        # with gradients: the single fallback of SupportStepLISTANet
        sup = SupportStepLISTANet(problem, 4, dtype=torch.float64)
        sup.load_state_dict(net.state_dict())
        Zg = net(X, lam)
        torch.testing.assert_close(Zg, sup(X, lam), rtol=1e-10, atol=1e-12)
        assert net.retries_ == [0] * 4 and net.rejections_ == sup.rejections_
        # the accepted retries made a difference at the first layer
        assert not torch.allclose(net(X, lam, n_layers=1).detach(), Z1)
        # huge steps: monotone and finite without gradients
        with torch.no_grad():
            net.log_steps.fill_(np.log(200.0))
            outs = net(X, lam, return_all=True)
        assert sum(net.rejections_) > 0
        f = torch.stack([f0] + [objective(D, X, Z, lam, no) for Z in outs])
        assert torch.all(f[1:] <= f[:-1] * (1 + 1e-12))
    assert taken == {0, 1, 2, 3}  # every path of the backtracking was taken


@pytest.mark.parametrize(
    "kind",
    ["lista", "alista", "step_fista", "safe_step", "support_step", "backtrack_step"],
)
def test_comparators_forward(kind, problem_surf_fixed, problem_vol):
    """LISTA / ALISTA / Step-FISTA: shapes, finiteness, gradients."""
    problems = [problem_surf_fixed] + ([problem_vol] if kind != "step_fista" else [])
    for problem in problems:
        if kind == "lista" and problem.n_sources > 1000:
            with pytest.raises(ValueError, match="max_params"):
                LISTANet(problem, 20, max_params=10**7)
            continue
        net = make_network(kind, problem, 3)
        X, lam = _data(problem, n=4)
        Z = net(X, lam)
        assert Z.shape == (problem.n_sources, 4)
        assert torch.isfinite(Z).all()
        Z.abs().sum().backward()
        grads = [p.grad for p in net.parameters()]
        assert grads and all(g is not None for g in grads)


def test_alista_weight(problem_surf_fixed):
    """ALISTA weight: unit diagonal of W^T D, smaller off-diagonal than D/L."""
    D = problem_surf_fixed.gain[:, :200]  # a well posed sub-dictionary
    W = alista_weight(D, rtol=1e-10)
    M = W.T @ D
    np.testing.assert_allclose(np.diag(M), 1.0, rtol=1e-6)
    Dn = D / np.linalg.norm(D, axis=0)
    off = M - np.diag(np.diag(M))
    off_n = Dn.T @ Dn - np.eye(D.shape[1])
    # analytic weight minimizes the off-diagonal Frobenius norm among W with
    # unit diagonal: in particular better than the normalized dictionary
    assert np.linalg.norm(off) <= np.linalg.norm(off_n) * (1 + 1e-8)
