"""Gap Safe screening from a network's output: safe, and the certificate
unchanged (float64 throughout)."""

import numpy as np
import pytest
import torch

from mne_lista import _bcd, _l21, solve_lasso
from mne_lista._bcd import solve_mxne
from mne_lista._screening import gap_safe_screen


def _data(problem, n_samples, seed):
    """Per-sample problems from a few active positions, lam in 0.1-0.6 of
    each sample's alpha_max: (M (n, B, 1), lam (B,)) float64."""
    rng = np.random.default_rng(seed)
    G = problem.gain
    Z = np.zeros((problem.n_sources, n_samples))
    for b in range(n_samples):
        pos = rng.choice(problem.n_positions, 3, replace=False)
        rows = (pos[:, None] * problem.n_orient + np.arange(problem.n_orient)).ravel()
        Z[rows, b] = rng.standard_normal(len(rows))
    X = G @ Z
    X += (
        0.1 * np.linalg.norm(X, axis=0) / np.sqrt(len(X)) * rng.standard_normal(X.shape)
    )
    M = torch.as_tensor(X)[:, :, None]
    D = torch.as_tensor(G)
    a_max = _l21.alpha_max(D, M, problem.n_orient)
    lam = a_max * torch.as_tensor(rng.uniform(0.1, 0.6, n_samples))
    return M, lam


def _active(Z, n_orient, rel=0.0):
    """Active positions (P, W): group norm > rel * the window's largest."""
    sq = _l21.group_sq_norms(Z, n_orient)
    return sq > rel**2 * sq.amax(0)


def _exact(problem, M, lam, tol=1e-9):
    Z = solve_lasso(problem, M[:, :, 0], lam, tol=tol, verbose=False)
    return Z[:, :, None]


@pytest.mark.parametrize("kind", ["fixed", "free"])
def test_rule_synthetic(kind, request):
    """Every position active in a tight exact solution survives the rule
    from any point; most positions are screened near the optimum; none
    from a point with a huge (or a non-finite) gap; the returned relative
    gap is the certificate's."""
    problem = request.getfixturevalue(f"problem_synth_{kind}")
    no = problem.n_orient
    M, lam = _data(problem, 12, seed=0)
    D = torch.as_tensor(problem.gain)
    lip = problem.position_lipschitz()
    Z_star = _exact(problem, M, lam)
    active = _active(Z_star, no, 1e-6)  # not the negligible ones of a tol
    assert active.any(0).all()
    step = 1.0 / problem.lipschitz
    n_screened = []
    for n_iter in (0, 1, 5, 50, 500):
        Z = _l21.ista(D, M, lam, n_iter, no, step=step)
        keep, rel = gap_safe_screen(D, M, Z, lam, no, lip)
        assert keep.shape == active.shape and keep.dtype == torch.bool
        assert bool(keep[active].all()), n_iter
        torch.testing.assert_close(rel, _l21.relative_gap(D, M, Z, lam, no))
        n_screened.append(int((~keep).sum()))
    assert n_screened == sorted(n_screened)  # closer points screen more
    keep, rel = gap_safe_screen(D, M, Z_star, lam, no, lip)
    assert bool(keep[active].all())
    assert float(rel.max()) <= 1e-9
    assert float((~keep).double().mean()) > 0.5  # near the optimum: most
    # a point far from the optimum (random, large) screens nothing
    Z_bad = 1e3 * torch.randn(
        Z_star.shape, generator=torch.Generator().manual_seed(0), dtype=Z_star.dtype
    )
    keep, rel = gap_safe_screen(D, M, Z_bad, lam, no, lip)
    assert bool(keep.all()) and float(rel.min()) > 1
    Z_nan = Z_star.clone()
    Z_nan[0] = float("nan")
    assert bool(gap_safe_screen(D, M, Z_nan, lam, no, lip)[0].all())


def test_rule_windows_synthetic(problem_synth_free):
    """The L21 windows (K > 1): the exact solve_mxne supports survive."""
    problem = problem_synth_free
    no = problem.n_orient
    rng = np.random.default_rng(3)
    D = torch.as_tensor(problem.gain)
    Zt = torch.zeros(problem.n_sources, 4, 5, dtype=torch.float64)
    for w in range(4):
        pos = rng.choice(problem.n_positions, 2, replace=False)
        for p in pos:
            Zt[no * p : no * p + no, w] = torch.as_tensor(rng.standard_normal((no, 5)))
    M = _l21.gain_times(D, Zt, sparse_frac=0) + 0.05 * torch.as_tensor(
        rng.standard_normal((problem.n_channels, 4, 5))
    )
    lam = 0.3 * _l21.alpha_max(D, M, no)
    lip = problem.position_lipschitz()
    Z_star, rel, _ = solve_mxne(D, M, lam, no, tol=1e-10)
    assert float(rel.max()) <= 1e-10
    active = _active(Z_star, no, 1e-6)
    for n_iter in (0, 10, 100):
        Z = _l21.ista(D, M, lam, n_iter, no, step=1.0 / problem.lipschitz)
        assert bool(gap_safe_screen(D, M, Z, lam, no, lip)[0][active].all())
    keep = gap_safe_screen(D, M, Z_star, lam, no, lip)[0]
    assert float((~keep).double().mean()) > 0.5
    # with the mask: the same solution, certified
    Z2, rel2, _ = solve_mxne(D, M, lam, no, tol=1e-10, keep=keep)
    assert float(rel2.max()) <= 1e-10
    assert torch.equal(_active(Z2, no, 1e-6), active)
    # the rounds on the gain of the union of the survivors
    assert int(keep.any(1).sum()) <= _bcd._UNION_FRAC * problem.n_positions
    # a wrong mask removing an active position everywhere: the survivors'
    # solution fails the full-gain certificate and is solved again
    p_act = torch.nonzero(active[:, 0])[0, 0]
    wrong = keep.clone()
    wrong[p_act] = False
    Z4, rel4, _ = solve_mxne(D, M, lam, no, tol=1e-10, keep=wrong)
    assert float(rel4.max()) <= 1e-10
    assert torch.equal(_active(Z4, no, 1e-6), active)
    # a wrong mask in one window only is never certified
    wrong = torch.ones_like(keep)
    wrong[torch.nonzero(active[:, 0])[0, 0], 0] = False
    _, rel3, _ = solve_mxne(
        D, M, lam, no, tol=1e-10, keep=wrong, max_rounds=2, max_passes=100
    )
    assert float(rel3[0]) > 1e-10


@pytest.mark.parametrize("kind", ["vol", "surf_fixed"])
def test_rule_real_forwards(kind, request):
    """Real forwards: the rule, from ISTA points, never removes a position
    active in the exact solution of solve_lasso; the batched solver of the
    per-sample problems restricted to the survivors gives the same supports
    and certificates as without the mask."""
    problem = request.getfixturevalue(f"problem_{kind}")
    no = problem.n_orient
    M, lam = _data(problem, 6, seed=1)
    D = problem.gain_tensor()
    lip = problem.position_lipschitz()
    Z_star = _exact(problem, M, lam)
    active = _active(Z_star, no, 1e-6)
    Z = _l21.ista(D, M, lam, 200, no, step=1.0 / problem.lipschitz, momentum=True)
    keep, rel = gap_safe_screen(D, M, Z, lam, no, lip)
    assert bool(keep[active].all())
    keep_star = gap_safe_screen(D, M, Z_star, lam, no, lip)[0]
    assert bool(keep_star[active].all())
    assert float((~keep_star).double().mean()) > 0.5
    tol = 1e-8
    Z_s, rel_s, _ = solve_mxne(D, M, lam, no, tol=tol, keep=keep)
    Z_f, rel_f, _ = solve_mxne(D, M, lam, no, tol=tol)
    for Zx in (Z_s, Z_f):
        assert float(_l21.relative_gap(D, M, Zx, lam, no).max()) <= tol
    assert torch.equal(_active(Z_s, no, 1e-6), _active(Z_f, no, 1e-6))
    assert torch.equal(_active(Z_s, no, 1e-6), active)


@pytest.fixture(scope="module")
def evoked_short(evoked_cov):
    evoked = evoked_cov[0].copy().crop(0.05, 0.1)
    assert 5 <= len(evoked.times) <= 40
    return evoked


@pytest.mark.parametrize("bad", [False, True])
@pytest.mark.parametrize("kind", ["StepLISTA", "StepMxNE"])
def test_certificate_unchanged(evoked_short, evoked_cov, fwd_vol, kind, bad):
    """apply with tol: with or without the network's screening in front of
    the exact solver, the same certified relative gaps (<= tol) and the same
    supports; a deliberately bad network (steps 1e3 / L: diverged outputs;
    plain Step-LISTA for StepLISTA) is only slower, never wrong."""
    import mne_lista

    kw = dict(adaptive=not bad) if kind == "StepLISTA" else {}
    model = getattr(mne_lista, kind)(
        fwd_vol,
        evoked_cov[1],
        evoked_short.info,
        n_layers=5,
        loose=1.0,
        depth=0.9,
        verbose=False,
        **kw,
    )
    model.net = model._make_net(torch.float64)
    if bad:
        with torch.no_grad():
            model.net.log_steps.fill_(float(np.log(1e3)))
    tol = 1e-6 if kind == "StepLISTA" else 1e-8
    stcs = {}
    for screen in (True, False):
        model._screen = screen
        stcs[screen] = model.apply(evoked_short, 30, tol=tol, debias=False)
        assert np.all(model.certificate_["rel_gap"] <= tol)
    ref = stcs[False]
    np.testing.assert_array_equal(stcs[True].vertices[0], ref.vertices[0])
    np.testing.assert_array_equal(np.abs(stcs[True].data) > 0, np.abs(ref.data) > 0)
    atol = 1e-3 * np.abs(ref.data).max()
    np.testing.assert_allclose(stcs[True].data, ref.data, atol=atol)


def test_step_lista_fallback_to_solve_lasso(
    evoked_short, evoked_cov, fwd_vol, monkeypatch
):
    """Samples the batched solver leaves uncertified are finished by
    solve_lasso: still certified."""
    from mne_lista import StepLISTA, solvers

    calls, solve = [], solvers.solve_mxne

    def no_rounds(*args, **kwargs):
        calls.append(1)
        return solve(*args, **{**kwargs, "max_rounds": 0})

    monkeypatch.setattr(solvers, "solve_mxne", no_rounds)
    model = StepLISTA(
        fwd_vol, evoked_cov[1], evoked_short.info, n_layers=3, loose=1.0, depth=0.9
    )
    model.apply(evoked_short, 30, tol=1e-6, debias=False, verbose=False)
    assert calls and np.all(model.certificate_["rel_gap"] <= 1e-6)
