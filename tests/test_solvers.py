"""Batched ISTA/FISTA and the certified reference solver on real MEG problems."""

import numpy as np
import pytest
import torch
from _helpers import alpha_max, objective
from sklearn.linear_model import Lasso

from mne_lista import LassoProblem, fista, ista, relative_gap, solve_lasso


def _data(problem, evoked, n_cols, lam_range=(0.1, 0.5)):
    """Whitened post-stimulus columns of the real evoked, lam per column."""
    M = problem.whiten(evoked)
    X = M[:, np.linspace(120, M.shape[1] - 1, n_cols).astype(int)]
    amax = alpha_max(
        torch.as_tensor(problem.gain), torch.as_tensor(X), problem.n_orient
    )
    lam = amax.numpy() * np.linspace(*lam_range, n_cols)
    return X, lam


def _simulated(problem, n_cols, seed=0):
    """Sparse sources through the real whitened gain plus white noise."""
    rng = np.random.default_rng(seed)
    no, m = problem.n_orient, problem.n_sources
    Z = np.zeros((m, n_cols))
    for b in range(n_cols):
        for p in rng.choice(m // no, 3, replace=False):
            Z[p * no : (p + 1) * no, b] = rng.standard_normal(no)
    S = problem.gain @ Z
    S *= 3 * np.sqrt(problem.n_channels) / np.linalg.norm(S, axis=0)
    X = S + rng.standard_normal(S.shape)
    amax = alpha_max(
        torch.as_tensor(problem.gain), torch.as_tensor(X), problem.n_orient
    ).numpy()
    return X, amax * rng.uniform(0.2, 0.5, n_cols)


def _objective(problem, X, Z, lam):
    D = torch.as_tensor(problem.gain)
    X, Z = torch.as_tensor(X), torch.as_tensor(Z)
    if X.ndim == 1:
        X, Z = X[:, None], Z[:, None]
    return objective(D, X, Z, lam, problem.n_orient).numpy()


def test_solve_lasso_fixed_matches_sklearn(problem_surf_fixed, evoked_cov):
    """Certified by the gap and equal to sklearn's Lasso with alpha = lam / n."""
    problem = problem_surf_fixed
    X, lam = _data(problem, evoked_cov[0], 8)
    Z = solve_lasso(problem, X, lam, verbose=False)  # tol=1e-8
    assert isinstance(Z, np.ndarray) and Z.dtype == np.float64
    assert Z.shape == (problem.n_sources, X.shape[1])
    gaps = relative_gap(problem, X, Z, lam)
    assert np.all(gaps <= 1e-8), gaps.max()
    assert np.all((Z != 0).sum(0) > 0)
    n = problem.n_channels
    for b in range(X.shape[1]):
        est = Lasso(alpha=lam[b] / n, fit_intercept=False, tol=1e-14, max_iter=100_000)
        est.fit(problem.gain, X[:, b])
        scale = np.abs(Z[:, b]).max()
        np.testing.assert_allclose(est.coef_, Z[:, b], atol=1e-6 * scale)
        # sklearn's objective is 1 / n times ours: ours is never worse
        f_ref = _objective(problem, X[:, b], est.coef_, lam[b])
        f_ours = _objective(problem, X[:, b], Z[:, b], lam[b])
        assert f_ours <= f_ref * (1 + 1e-12)


def test_solve_lasso_group_matches_mne(problem_vol, evoked_cov):
    """Group Lasso (xyz): certified, KKT conditions, MNE's mixed_norm_solver."""
    from mne.inverse_sparse.mxne_optim import mixed_norm_solver

    problem = problem_vol
    X, lam = _data(problem, evoked_cov[0], 4, lam_range=(0.3, 0.5))
    Z = solve_lasso(problem, X, lam, verbose=False)
    assert np.all(relative_gap(problem, X, Z, lam) <= 1e-8)
    # KKT: G_g^T r = lam z_g / ||z_g|| on the support, ||G_g^T r|| <= lam off it
    G = problem.gain
    for b in range(X.shape[1]):
        U = (G.T @ (X[:, b] - G @ Z[:, b])).reshape(-1, 3)
        Zg = Z[:, b].reshape(-1, 3)
        norms = np.linalg.norm(Zg, axis=1)
        act = norms > 0
        assert act.any()
        np.testing.assert_allclose(
            U[act], lam[b] * Zg[act] / norms[act, None], atol=1e-7 * lam[b]
        )
        assert np.linalg.norm(U[~act], axis=1).max() <= lam[b] * (1 + 1e-8)
    # MNE's block coordinate descent, same scaling (1/2||.||^2 + alpha l21)
    Xm, active, _ = mixed_norm_solver(
        X[:, :1], G, lam[0], maxit=10_000, tol=1e-12, n_orient=3, debias=False
    )
    Zm = np.zeros(problem.n_sources)
    Zm[active] = Xm[:, 0]
    np.testing.assert_allclose(Zm, Z[:, 0], atol=1e-7 * np.abs(Z[:, 0]).max())


def test_solve_lasso_simulated_vol_and_warm_start(problem_vol):
    """Simulated sparse data on the volume; warm start from the solution."""
    X, lam = _simulated(problem_vol, 4)
    Z = solve_lasso(problem_vol, X, lam, verbose=False)
    assert np.all(relative_gap(problem_vol, X, Z, lam) <= 1e-8)
    Z2 = solve_lasso(problem_vol, X, lam, Z0=Z, verbose=False)
    assert np.all(relative_gap(problem_vol, X, Z2, lam) <= 1e-8)
    np.testing.assert_allclose(Z2, Z, atol=1e-6 * np.abs(Z).max())


def test_solve_lasso_poor_start(problem_vol, monkeypatch):
    """From a poor starting point (3 ISTA iterations: a dense support), the
    columns are still certified and equal the cold solutions, also when the
    bounded warm-started round cannot finish (then redone cold)."""
    from mne_lista import _celer as solvers

    X, lam = _simulated(problem_vol, 2)
    Z = solve_lasso(problem_vol, X, lam, verbose=False)
    Z0 = ista(problem_vol, X, lam, 3)
    assert np.count_nonzero(Z0) > problem_vol.n_channels  # too dense for Newton
    for max_iter in (solvers._WARM_MAX_ITER, 1):
        monkeypatch.setattr(solvers, "_WARM_MAX_ITER", max_iter)
        Z2 = solve_lasso(problem_vol, X, lam, Z0=Z0, verbose=False)
        assert np.all(relative_gap(problem_vol, X, Z2, lam) <= 1e-8)
        np.testing.assert_allclose(Z2, Z, atol=1e-6 * np.abs(Z).max())


def test_celer_group_direct_matches_estimator(problem_vol):
    """The direct call into celer's group solver equals celer.GroupLasso."""
    from mne_lista import _celer as solvers

    X, lam = _simulated(problem_vol, 1, seed=5)
    G = np.asfortranarray(problem_vol.gain)
    n = problem_vol.n_channels
    norms = solvers._group_spectral_norms(G, 3)
    ref = [np.linalg.norm(G[:, 3 * g : 3 * g + 3], 2) for g in (0, 100, 4000)]
    np.testing.assert_allclose(norms[[0, 100, 4000]], ref, rtol=1e-12)
    z_direct = solvers._CelerGroup(G, 3, norms).fit(X[:, 0], lam[0] / n, 1e-10)
    z_est = solvers._CelerEstimator(G, 3).fit(X[:, 0], lam[0] / n, 1e-10)
    np.testing.assert_allclose(z_direct, z_est, atol=1e-6 * np.abs(z_est).max())
    assert relative_gap(problem_vol, X[:, 0], z_direct, lam[0])[0] < 1e-6


def test_solve_lasso_lam_per_column(problem_surf_fixed):
    """A lam vector solves each column with its own lam."""
    X, lam = _simulated(problem_surf_fixed, 6, seed=1)
    Z = solve_lasso(problem_surf_fixed, X, lam, verbose=False)
    for b in (0, 3):
        Zb = solve_lasso(problem_surf_fixed, X[:, b], lam[b], verbose=False)
        assert Zb.shape == (problem_surf_fixed.n_sources,)
        np.testing.assert_allclose(Zb, Z[:, b], atol=1e-9 * np.abs(Zb).max())
    # one scalar for all columns differs from per-column values
    Zs = solve_lasso(problem_surf_fixed, X, lam[0], verbose=False)
    assert not np.allclose(Zs[:, 3], Z[:, 3])
    for func in (ista, fista):
        Zi = func(problem_surf_fixed, X, lam, 20)
        for b in (0, 3):
            np.testing.assert_allclose(
                func(problem_surf_fixed, X[:, b : b + 1], lam[b], 20)[:, 0],
                Zi[:, b],
                rtol=1e-10,
                atol=1e-12,
            )


def test_solve_lasso_alpha_max_zeros(problem_vol, evoked_cov, monkeypatch):
    """lam >= alpha_max gives zeros without calling the backend."""
    from mne_lista import solvers

    X, _ = _data(problem_vol, evoked_cov[0], 3)
    amax = alpha_max(torch.as_tensor(problem_vol.gain), torch.as_tensor(X), 3)

    def _fail(*args, **kwargs):
        raise AssertionError("backend called")

    monkeypatch.setattr(solvers, "_solve_columns", _fail)
    lam = amax.numpy() * np.array([1.0, 1.5, 10.0])
    Z = solve_lasso(problem_vol, X, lam, verbose=False)
    assert Z.shape == (problem_vol.n_sources, 3) and not Z.any()
    Z = solve_lasso(problem_vol, np.zeros(problem_vol.n_channels), 1.0, verbose=False)
    assert not Z.any()


def test_numpy_torch_in_out(problem_surf_fixed):
    """numpy in -> numpy out, torch in -> torch out (float64 reference)."""
    X, lam = _simulated(problem_surf_fixed, 3, seed=2)
    Z = solve_lasso(problem_surf_fixed, X, lam, verbose=False)
    Zt = solve_lasso(problem_surf_fixed, torch.as_tensor(X), lam, verbose=False)
    assert isinstance(Zt, torch.Tensor) and Zt.dtype == torch.float64
    np.testing.assert_array_equal(Zt.numpy(), Z)
    Zt = solve_lasso(
        problem_surf_fixed, torch.as_tensor(X, dtype=torch.float32), lam, verbose=False
    )
    assert isinstance(Zt, torch.Tensor) and Zt.dtype == torch.float64
    np.testing.assert_allclose(Zt.numpy(), Z, atol=1e-4 * np.abs(Z).max())
    for func in (ista, fista):
        out = func(problem_surf_fixed, X, lam, 5)
        assert isinstance(out, np.ndarray) and out.dtype == np.float64
        out = func(problem_surf_fixed, torch.as_tensor(X, dtype=torch.float32), lam, 5)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_ista_monotone_fista_faster(problem_vol, problem_surf_fixed, evoked_cov):
    """ISTA's objective decreases; FISTA <= ISTA on average at equal iterations."""
    for problem in (problem_vol, problem_surf_fixed):
        X, lam = _data(problem, evoked_cov[0], 4)
        Xs, lams = _simulated(problem, 4)
        X, lam = np.concatenate([X, Xs], axis=1), np.concatenate([lam, lams])
        Z = None
        f0 = f_prev = _objective(problem, X, np.zeros((problem.n_sources, 8)), lam)
        for _ in range(15):
            Z = ista(problem, X, lam, 1, Z0=Z)
            f = _objective(problem, X, Z, lam)
            assert np.all(f <= f_prev * (1 + 1e-13))
            f_prev = f
        assert np.all(f < f0)
        for n_iter in (5, 20):
            f_ista = _objective(problem, X, ista(problem, X, lam, n_iter), lam)
            f_fista = _objective(problem, X, fista(problem, X, lam, n_iter), lam)
            assert f_fista.mean() <= f_ista.mean()
        # FISTA is not done: the certified reference is lower
        Zr = solve_lasso(problem, Xs[:, :2], lams[:2], verbose=False)
        assert np.all(_objective(problem, Xs[:, :2], Zr, lams[:2]) < f_fista[4:6])


def test_solve_lasso_n_jobs(problem_surf_fixed):
    """Two processes give the same certified solutions."""
    X, lam = _simulated(problem_surf_fixed, 4, seed=3)
    Z = solve_lasso(problem_surf_fixed, X, lam, verbose=False)
    Zp = solve_lasso(problem_surf_fixed, X, lam, n_jobs=2, verbose=False)
    np.testing.assert_allclose(Zp, Z, atol=1e-9 * np.abs(Z).max())


def test_solve_lasso_warns_uncertified(problem_surf_fixed, monkeypatch):
    """Columns the backend cannot certify are named in a warning."""
    from mne_lista import _celer as solvers

    X, lam = _simulated(problem_surf_fixed, 3, seed=4)
    monkeypatch.setattr(solvers, "_N_ROUNDS", 1)
    monkeypatch.setattr(solvers, "_polish", lambda *args, **kwargs: [])
    monkeypatch.setattr(solvers, "_backend_tol", lambda tol: 1e-1)
    with pytest.warns(RuntimeWarning, match=r"column\(s\) not certified.*: \[\d"):
        solve_lasso(problem_surf_fixed, X, lam, verbose=False)


def test_bad_inputs(problem_surf_fixed):
    """Clear errors for bad inputs."""
    p = problem_surf_fixed
    X, lam = _simulated(p, 2)
    with pytest.raises(ValueError, match="X must have shape"):
        solve_lasso(p, X[:-1], lam)
    with pytest.raises(ValueError, match="X must have shape"):
        solve_lasso(p, X[None], lam)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        solve_lasso(p, Xn, lam)
    with pytest.raises(ValueError, match="non-negative"):
        solve_lasso(p, X, -lam)
    with pytest.raises(ValueError, match="lam must be positive"):
        solve_lasso(p, X, 0.0)
    with pytest.raises(ValueError, match="one value per"):
        solve_lasso(p, X, np.ones(3))
    with pytest.raises(TypeError, match="LassoProblem"):
        solve_lasso(p.gain, X, lam)
    with pytest.raises(ValueError, match="tol"):
        solve_lasso(p, X, lam, tol=0)
    with pytest.raises(ValueError, match="Z0 must have shape"):
        solve_lasso(p, X, lam, Z0=np.zeros((3, 2)))
    for func in (ista, fista):
        with pytest.raises(ValueError, match="X must have shape"):
            func(p, X[:-1], lam, 3)
        with pytest.raises(ValueError, match="NaN"):
            func(p, Xn, lam, 3)
        with pytest.raises(ValueError, match="non-negative"):
            func(p, X, -lam, 3)
        with pytest.raises(TypeError, match="LassoProblem"):
            func("gain", X, lam, 3)
    # a LassoProblem built from a plain gain works too
    small = LassoProblem(p.gain[:, :40], 1)
    Z = solve_lasso(small, X, 0.3 * lam, verbose=False)
    assert np.all(relative_gap(small, X, Z, 0.3 * lam) <= 1e-8)


def test_solve_lasso_ignores_a_diverged_start(problem_surf_fixed):
    """A starting point worse than zero (a diverged network, NaN) starts from
    zero: certified, the same solutions as from zero."""
    X, lam = _simulated(problem_surf_fixed, 3, seed=5)
    Z = solve_lasso(problem_surf_fixed, X, lam, verbose=False)
    rng = np.random.default_rng(0)
    Z0 = 1e6 * rng.standard_normal(Z.shape)
    Z0[:, 2] = np.nan
    Zw = solve_lasso(problem_surf_fixed, X, lam, Z0=Z0, verbose=False)
    assert np.all(relative_gap(problem_surf_fixed, X, Zw, lam) <= 1e-8)
    np.testing.assert_allclose(Zw, Z, atol=1e-6 * np.abs(Z).max())
