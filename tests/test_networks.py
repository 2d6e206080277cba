"""Tests of the unrolled network (mne_lista.networks.UnrolledISTA).

Synthetic problems (no dataset) in float64 where exactness is claimed; the
last test runs on the real sample subset (marked realdata by its fixtures).
"""

import itertools

import numpy as np
import pytest
import torch

from mne_lista import LassoProblem, _l21, fista, ista
from mne_lista.networks import (
    NETWORKS,
    SAFEGUARDS,
    STEP_RULES,
    UnrolledISTA,
    make_network,
)
from mne_lista.simulation import simulate_data, simulate_windows

PROBLEMS = ("problem_synth_fixed", "problem_synth_free")
CONFIGS = list(itertools.product(STEP_RULES, SAFEGUARDS))


@pytest.fixture(params=PROBLEMS)
def problem(request):
    return request.getfixturevalue(request.param)


def _data(problem, kind, n=6, seed=0, ratio=None):
    """Per-sample (n_channels, n) or windows (n_channels, n, 5), and lam.

    lam is spread over (0.2, 0.8) alpha_max (or ``ratio`` alpha_max) so that
    the supports differ between problems.
    """
    G = torch.as_tensor(problem.gain)
    if kind == "per_sample":
        X, _ = simulate_data(problem, n, extent=0.0, random_state=seed)
        M = torch.as_tensor(X)
        amax = _l21.alpha_max(G, M[:, :, None], problem.n_orient)
    else:
        sim = simulate_windows(problem, n, n_times=5, extent=0.0, random_state=seed)
        M = torch.as_tensor(sim["M"])
        amax = _l21.alpha_max(G, M, problem.n_orient)
    if ratio is None:
        ratio = torch.linspace(0.2, 0.8, n, dtype=torch.float64)
    return M, ratio * amax


def _windows(M):
    return M[:, :, None] if M.ndim == 2 else M


def _objectives(problem, M, Z, lam):
    """F of each problem (per-sample or window)."""
    G = torch.as_tensor(problem.gain)
    return _l21.objective(G, _windows(M), _windows(Z), lam, problem.n_orient)


def _f0(M):
    return _l21.zero_objective(_windows(M))


# ---------------------------------------------------------------------------
# Untrained networks are ISTA / FISTA


@pytest.mark.parametrize("kind", ["per_sample", "windows"])
def test_untrained_is_ista(problem, kind):
    """Every step rule x safeguard, untrained, is ISTA exactly (train and
    eval modes, all layers or fewer); with momentum it is FISTA."""
    M, lam = _data(problem, kind)
    Z7, Z3 = ista(problem, M, lam, 7), ista(problem, M, lam, 3)
    assert Z7.shape == (problem.n_sources, *M.shape[1:])
    assert Z7.abs().max() > 0  # not trivially zero
    for step_rule, safeguard in CONFIGS:
        net = UnrolledISTA(
            problem, 7, step_rule=step_rule, safeguard=safeguard, dtype=torch.float64
        )
        np.testing.assert_allclose(net.steps, 1.0 / problem.lipschitz, rtol=1e-15)
        for mode in (True, False):
            net.train(mode)
            with torch.no_grad():
                Z, stats = net(M, lam, return_stats=True)
                outs = net(M, lam, return_all=True)
                Zf = net(M, lam, n_layers=3)
            torch.testing.assert_close(Z, Z7, rtol=0, atol=1e-14)
            torch.testing.assert_close(Zf, Z3, rtol=0, atol=1e-14)
            assert len(outs) == 7
            torch.testing.assert_close(outs[-1], Z, rtol=0, atol=0)
            torch.testing.assert_close(outs[2], Z3, rtol=0, atol=1e-14)
            assert stats["products_per_layer"] == 2.0
            if safeguard != "none":  # ISTA steps are never rejected
                assert stats["n_rejected"] == [0] * 7
                assert stats["n_retried"] == [0] * 7
    net = UnrolledISTA(problem, 7, momentum=True, dtype=torch.float64)
    with torch.no_grad():
        Z = net(M, lam)
        Zf = net(M, lam, n_layers=3)
    torch.testing.assert_close(Z, fista(problem, M, lam, 7), rtol=0, atol=1e-14)
    torch.testing.assert_close(Zf, fista(problem, M, lam, 3), rtol=0, atol=1e-14)
    assert not torch.allclose(Z, Z7)  # FISTA is not ISTA


def test_network_configs(problem):
    """make_network builds the configurations of NETWORKS, float32 by default."""
    M, lam = _data(problem, "per_sample", n=4)
    for name, cfg in NETWORKS.items():
        net = make_network(name, problem, 3)
        assert net.step_rule == cfg["step_rule"]
        assert net.safeguard == cfg["safeguard"]
        assert net.has_momentum == cfg.get("momentum", False)
        assert net.G.dtype == torch.float32 and net.log_steps.dtype == torch.float32
        assert net.n_channels == problem.n_channels
        assert net.n_sources == problem.n_sources
        with torch.no_grad():
            Z = net(M, lam)  # float64 input: computed in the net's dtype
        assert Z.shape == (problem.n_sources, 4) and Z.dtype == torch.float32
        torch.testing.assert_close(
            Z, ista(problem, M, lam, 3).float() if not net.has_momentum
            else fista(problem, M, lam, 3).float(),
            rtol=1e-4, atol=1e-5 * float(Z.abs().max()),
        )  # fmt: skip
        assert repr(net).startswith("UnrolledISTA(")
    with pytest.raises(ValueError, match="network"):
        make_network("LISTANet", problem, 3)


# ---------------------------------------------------------------------------
# Parameters, gradients, errors


def test_steps_positive_and_set_steps(problem_synth_fixed):
    """Steps stay positive whatever the parameters; set_steps round-trips."""
    problem = problem_synth_fixed
    net = UnrolledISTA(problem, 5, dtype=torch.float64)
    with torch.no_grad():
        net.log_steps.copy_(torch.tensor([-50.0, -3.0, 0.0, 3.0, 10.0]))
    assert np.all(net.steps > 0) and net.steps.dtype == np.float64
    torch.testing.assert_close(
        net.step_sizes(), torch.exp(net.log_steps) / problem.lipschitz
    )
    steps = np.array([0.5, 1.0, 2.0, 10.0, 100.0]) / problem.lipschitz
    assert net.set_steps(steps) is net
    np.testing.assert_allclose(net.steps, steps, rtol=1e-14)
    np.testing.assert_allclose(
        net.log_steps.detach().numpy(), np.log([0.5, 1, 2, 10, 100]), atol=1e-14
    )
    for bad in (-steps, steps[:3], np.r_[steps[:4], 0.0], steps[None]):
        with pytest.raises(ValueError, match="5 positive"):
            net.set_steps(bad)
    np.testing.assert_allclose(net.steps, steps, rtol=1e-14)  # unchanged


@pytest.mark.parametrize("kind", ["per_sample", "windows"])
def test_gradients_reach_the_parameters(problem, kind):
    """log_steps, support_exp and momentum get finite, non-zero gradients."""
    M, lam = _data(problem, kind, n=4)
    for cfg in (
        dict(step_rule="layer", safeguard="none"),
        dict(step_rule="support", safeguard="backtracking"),
        dict(step_rule="support", safeguard="monotone"),
        dict(momentum=True),
    ):
        net = UnrolledISTA(problem, 4, dtype=torch.float64, **cfg)
        net.set_support_reference(M, lam)
        net.train()
        loss = _objectives(problem, M, net(M, lam), lam).sum()
        loss.backward()
        params = dict(net.named_parameters())
        expected = {"log_steps"}
        expected |= {"support_exp"} if cfg.get("step_rule") == "support" else set()
        expected |= {"momentum"} if cfg.get("momentum") else set()
        assert set(params) == expected
        for name, p in params.items():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            # the first layer's support term is 0 (X = 0), as FISTA's
            # first momentum (the extrapolation at layer 1 is unused)
            first = 1 if name == "support_exp" else 0
            last = -1 if name == "momentum" else None
            assert bool((p.grad[first:last] != 0).all()), (name, p.grad)


def test_input_errors(problem_synth_fixed):
    """Shapes, lam, n_layers, numpy input and bad configurations."""
    problem = problem_synth_fixed
    net = UnrolledISTA(problem, 4)
    M, lam = _data(problem, "per_sample", n=5)
    with pytest.raises(ValueError, match="must be <= the number of layers"):
        net(M, lam, n_layers=5)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        net(M, lam, n_layers=0)
    with pytest.raises(ValueError, match="M must have shape"):
        net(M[:10], lam)
    with pytest.raises(ValueError, match="M must have shape"):
        net(M[:, 0], lam)
    with pytest.raises(ValueError, match="M must have shape"):
        net(M[:, :, None, None], lam)
    with pytest.raises(ValueError, match="one value per window or sample"):
        net(M, lam[:2])
    with pytest.raises(ValueError, match="one value per window or sample"):
        net(M[:, :, None].expand(-1, -1, 3), lam[:, None])
    with pytest.raises(ValueError, match="non-negative"):
        net(M, -lam)
    with pytest.raises(TypeError, match="M must be"):
        net(M.numpy(), lam)
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        UnrolledISTA(problem, 0)
    with pytest.raises(TypeError, match="n_layers"):
        UnrolledISTA(problem, 2.5)
    for safeguard in ("monotone", "backtracking"):
        with pytest.raises(ValueError, match="momentum=True needs"):
            UnrolledISTA(problem, 3, safeguard=safeguard, momentum=True)
    with pytest.raises(ValueError, match="step_rule"):
        UnrolledISTA(problem, 3, step_rule="lista")
    with pytest.raises(ValueError, match="safeguard"):
        UnrolledISTA(problem, 3, safeguard="linesearch")
    with pytest.raises(ValueError, match="dtype"):
        UnrolledISTA(problem, 3, dtype=torch.float16)
    with pytest.raises(TypeError, match="LassoProblem"):
        UnrolledISTA(problem.gain, 3)
    # a scalar lam is fine, and so is lam = 0 (least squares steps)
    with torch.no_grad():
        assert net(M, 0.5).shape == (problem.n_sources, 5)
        assert bool(torch.isfinite(net(M, 0.0)).all())


# ---------------------------------------------------------------------------
# Safeguards


@pytest.mark.parametrize("kind", ["per_sample", "windows"])
def test_monotone_safeguard(problem, kind):
    """With steps 50/L, plain Step-LISTA blows up; with the monotone
    safeguard the objective of every problem is non-increasing at every
    layer (train and eval modes alike)."""
    M, lam = _data(problem, kind)
    steps = np.full(8, 50.0 / problem.lipschitz)
    plain = UnrolledISTA(problem, 8, dtype=torch.float64).set_steps(steps)
    safe = UnrolledISTA(problem, 8, safeguard="monotone", dtype=torch.float64)
    safe.set_steps(steps)
    f0 = _f0(M)
    with torch.no_grad():
        f_plain = _objectives(problem, M, plain(M, lam), lam)
        assert bool((f_plain > f0).all())  # diverged: worse than zero
        for mode in (True, False):
            safe.train(mode)
            outs, stats = safe(M, lam, return_all=True, return_stats=True)
            f = torch.stack([f0] + [_objectives(problem, M, Z, lam) for Z in outs])
            assert bool((f[1:] <= f[:-1] * (1 + 1e-12)).all())
            assert bool((f[-1] < f0).all())
            assert stats["n_retried"] == [0] * 8  # no retry in monotone
            n_rej = sum(stats["n_rejected"])
            assert n_rej > 0
            assert stats["products_per_layer"] == 2.0 + n_rej / (8 * M.shape[1])


@pytest.mark.parametrize("kind", ["per_sample", "windows"])
def test_support_step_rule(problem, kind):
    """Per-problem steps exp(theta + beta (r - log s)) / L from the support
    size s of the input iterate, against a manual computation."""
    G = torch.as_tensor(problem.gain)
    no, lip = problem.n_orient, problem.lipschitz
    M, lam = _data(problem, kind)
    Mw = _windows(M)
    net = UnrolledISTA(problem, 3, step_rule="support", dtype=torch.float64)
    assert bool(torch.isnan(net.log_ref_support).all())
    assert net.set_support_reference(M, lam) is net
    # r_t: mean log support at the input of layer t of ISTA (0 at X = 0)
    for t in range(3):
        s = _l21.support_sizes(_l21.ista(G, Mw, lam, t, no, step=1 / lip), no)
        ref = torch.log(s[s > 0]).mean() if t else torch.tensor(0.0)
        torch.testing.assert_close(net.log_ref_support[t], ref.double())
    theta, beta = np.log(1.5), 0.4
    with torch.no_grad():
        net.log_steps.fill_(theta)
        net.support_exp.fill_(beta / net.support_scale)
        Z2 = net(M, lam, n_layers=2)
        X0 = torch.zeros((problem.n_sources, *Mw.shape[1:]), dtype=Mw.dtype)
        Z1 = _l21.ista_step(G, Mw, X0, np.exp(theta) / lip, lam, no)
        s = _l21.support_sizes(Z1, no)
        assert len(torch.unique(s)) > 1 and bool((s > 0).all())
        steps = np.exp(theta) * torch.exp(
            beta * (net.log_ref_support[1] - torch.log(s))
        )
        steps = steps / lip
        torch.testing.assert_close(net._step(1, Z1), steps, rtol=1e-14, atol=0)
        # the first layer (X = 0) uses exp(theta) / L for every problem
        torch.testing.assert_close(
            net._step(0, torch.zeros_like(Z1)),
            torch.full_like(steps, np.exp(theta) / lip),
        )
        # smaller supports get larger steps
        order = torch.argsort(s)
        assert bool((torch.diff(steps[order]) <= 0).all())
        assert steps.max() > steps.min()
        Z2_ref = _l21.ista_step(G, Mw, Z1, steps, lam, no)
        if kind == "per_sample":
            Z2_ref = Z2_ref[:, :, 0]
        torch.testing.assert_close(Z2, Z2_ref, rtol=0, atol=1e-13)
    # the reference is only set on an untrained network
    with pytest.raises(RuntimeError, match="untrained"):
        net.set_support_reference(M, lam)
    # a trained support exponent without reference: a clear error
    fresh = UnrolledISTA(problem, 3, step_rule="support", dtype=torch.float64)
    with torch.no_grad():
        fresh.support_exp.fill_(1.0)
    with pytest.raises(RuntimeError, match="support reference"):
        fresh(M, lam)
    # the layer rule has no reference: a no-op
    layer = UnrolledISTA(problem, 3, dtype=torch.float64)
    assert layer.set_support_reference(M, lam) is layer
    assert not hasattr(layer, "support_exp")


def _manual_first_layer(problem, M, lam, a_L):
    """First layer from X = 0 with the learned step a_L / L and the
    backtracking: the first of a_L, a_L^(1/2), a_L^(1/4), 1 (over L) that
    does not raise the objective above F(0). Returns the iterate, the index
    of the step taken and which steps were rejected."""
    G = torch.as_tensor(problem.gain)
    no, lip = problem.n_orient, problem.lipschitz
    Mw = _windows(M)
    X0 = torch.zeros((problem.n_sources, *Mw.shape[1:]), dtype=Mw.dtype)
    f0 = _l21.zero_objective(Mw)
    steps = [a_L, a_L**0.5, a_L**0.25, 1.0]
    Zs = [_l21.ista_step(G, Mw, X0, s / lip, lam, no) for s in steps]
    up = torch.stack([_l21.objective(G, Mw, Z, lam, no) > f0 for Z in Zs[:3]])
    tried = torch.cumprod(up.to(torch.int64), 0).bool()  # rejected up to k
    choice = tried.sum(0)  # index of the step taken
    ref = torch.stack([Zs[int(c)][:, i] for i, c in enumerate(choice)], 1)
    if M.ndim == 2:
        ref = ref[:, :, 0]
    return ref, choice, tried


@pytest.mark.parametrize("kind", ["per_sample", "windows"])
def test_backtracking(problem, kind):
    """In eval mode, rejected learned steps retry (a L)^(1/2) / L, then
    (a L)^(1/4) / L, then 1 / L (a manual first layer, every path taken);
    the counts of return_stats match; in train mode the network is the
    monotone one; the objective never increases."""
    M, lam = _data(problem, kind, n=8)
    f0 = _f0(M)
    net = UnrolledISTA(
        problem, 4, step_rule="support", safeguard="backtracking", dtype=torch.float64
    )
    net.set_support_reference(M, lam)
    net.eval()
    taken = set()
    n = M.shape[1]
    for a_L in (1.5, 3.0, 8.0, 30.0, 300.0, 1e4, 1e6):
        with torch.no_grad():
            net.log_steps.fill_(np.log(a_L))
            Z1, stats = net(M, lam, n_layers=1, return_stats=True)
        ref, choice, tried = _manual_first_layer(problem, M, lam, a_L)
        taken.update(choice.tolist())
        torch.testing.assert_close(Z1, ref, rtol=0, atol=1e-13)
        assert stats["n_retried"] == [int(tried[0].sum() + tried[1].sum())]
        assert stats["n_rejected"] == [int(tried[2].sum())]
        assert stats["products_per_layer"] == 2.0 + int(tried.sum()) / n
    assert taken == {0, 1, 2, 3}  # every path of the backtracking was taken
    # all layers: monotone objective, counts consistent
    with torch.no_grad():
        net.log_steps.fill_(np.log(30.0))
        net.support_exp.fill_(2.0)
        outs, stats = net(M, lam, return_all=True, return_stats=True)
    f = torch.stack([f0] + [_objectives(problem, M, Z, lam) for Z in outs])
    assert bool((f[1:] <= f[:-1] * (1 + 1e-12)).all())
    assert sum(stats["n_retried"]) > 0
    n_extra = sum(stats["n_retried"]) + sum(stats["n_rejected"])
    assert stats["products_per_layer"] == 2.0 + n_extra / (4 * n)
    assert all(r <= 2 * n for r in stats["n_retried"])
    assert all(r <= n for r in stats["n_rejected"])
    # train mode: the monotone network (no retry)
    mono = UnrolledISTA(
        problem, 4, step_rule="support", safeguard="monotone", dtype=torch.float64
    )
    mono.load_state_dict(net.state_dict())
    net.train()
    Zt, st = net(M, lam, return_stats=True)
    Zm, sm = mono(M, lam, return_stats=True)
    torch.testing.assert_close(Zt, Zm, rtol=0, atol=0)
    assert st["n_retried"] == [0] * 4 and st["n_rejected"] == sm["n_rejected"]
    assert sum(st["n_rejected"]) > 0
    # the retries made a difference
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(M, lam), Zt.detach())


# ---------------------------------------------------------------------------
# No side effect


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("kind", ["per_sample", "windows"])
def test_forward_has_no_side_effect(problem, kind):
    """forward changes no buffer or parameter (train, eval, stats, grads),
    including the reference of an untrained support network."""
    M, lam = _data(problem, kind, n=4)
    for step_rule, safeguard in CONFIGS + [("layer", "momentum")]:
        if safeguard == "momentum":
            net = UnrolledISTA(problem, 3, momentum=True, dtype=torch.float64)
        else:
            net = UnrolledISTA(
                problem, 3, step_rule=step_rule, safeguard=safeguard,
                dtype=torch.float64,
            )  # fmt: skip
        net.set_steps(np.array([1.0, 20.0, 3.0]) / problem.lipschitz)
        before = _state(net)
        for mode in (True, False):
            net.train(mode)
            out, _ = net(M, lam, return_stats=True)
            net(M, lam, n_layers=2, return_all=True)
            out.sum().backward()
            after = _state(net)
            assert after.keys() == before.keys()
            for key in before:
                torch.testing.assert_close(
                    after[key], before[key], rtol=0, atol=0, equal_nan=True,
                    msg=f"{step_rule}/{safeguard}: {key} changed",
                )  # fmt: skip
        if step_rule == "support":  # still unset
            assert bool(torch.isnan(net.log_ref_support).all())


# ---------------------------------------------------------------------------
# A gain-only problem of any size; the real data


def test_tiny_problem_float32():
    """A 3 x 6 free-orientation problem in float32 (the default dtype)."""
    rng = np.random.default_rng(0)
    problem = LassoProblem(rng.standard_normal((3, 6)), n_orient=3)
    net = UnrolledISTA(problem, 5, step_rule="support", safeguard="backtracking")
    M = torch.as_tensor(rng.standard_normal((3, 2, 4)), dtype=torch.float32)
    lam = 0.3 * _l21.alpha_max(torch.as_tensor(problem.gain).float(), M, 3)
    net.eval()
    with torch.no_grad():
        Z = net(M, lam)
    assert Z.dtype == torch.float32 and Z.shape == (6, 2, 4)
    torch.testing.assert_close(Z, ista(problem, M, lam, 5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["surf", "vol"])
def test_untrained_is_ista_real_data(which, problem_surf_fixed, problem_vol):
    """Real gains (sample subset): the untrained networks are ISTA/FISTA."""
    problem = problem_surf_fixed if which == "surf" else problem_vol
    M, lam = _data(problem, "per_sample", n=4, ratio=0.3)
    for step_rule, safeguard in (("layer", "none"), ("support", "backtracking")):
        net = UnrolledISTA(
            problem, 5, step_rule=step_rule, safeguard=safeguard, dtype=torch.float64
        ).eval()
        with torch.no_grad():
            Z = net(M, lam)
        torch.testing.assert_close(Z, ista(problem, M, lam, 5), rtol=0, atol=1e-14)
    net = UnrolledISTA(problem, 5, momentum=True, dtype=torch.float64)
    with torch.no_grad():
        Z = net(M, lam)
    torch.testing.assert_close(Z, fista(problem, M, lam, 5), rtol=0, atol=1e-14)
