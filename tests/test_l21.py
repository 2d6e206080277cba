"""The batched group-L21 kit (mne_lista._l21) and the solvers built on it.

Synthetic problems only (no dataset), float64: every formula is checked
against an independent reference (numpy written out by hand, MNE's mixed
norm helpers and solver, scikit-learn's Lasso).
"""

import numpy as np
import pytest
import torch
from mne.inverse_sparse.mxne_optim import (
    dgap_l21,
    mixed_norm_solver,
    norm_l2inf,
    norm_l21,
)
from sklearn.linear_model import Lasso

from mne_lista import _l21, fista, ista, relative_gap, solve_lasso, solve_mxne
from mne_lista.simulation import simulate_data, simulate_windows

PROBLEMS = ("problem_synth_fixed", "problem_synth_free")


@pytest.fixture(params=PROBLEMS)
def problem(request):
    return request.getfixturevalue(request.param)


def _samples(problem, n=8, seed=0):
    """Per-sample data (n_channels, n) and lam (n,) in (0.1, 0.8) alpha_max."""
    X, lam = simulate_data(problem, n, extent=0.0, random_state=seed)
    return X, lam


def _windows(problem, n_windows=4, n_times=6, seed=0):
    """Windows (n, W, K) and lam (W,) as tensors, float64."""
    sim = simulate_windows(
        problem, n_windows, n_times=n_times, extent=0.0, random_state=seed
    )
    M = torch.as_tensor(sim["M"])
    G = torch.as_tensor(problem.gain)
    lam = torch.as_tensor(sim["lam_frac"]) * _l21.alpha_max(G, M, problem.n_orient)
    return M, lam


def _sparse_sources(problem, shape, density=0.1, seed=0):
    """Random sources (m, *shape) with a fraction ``density`` of active groups."""
    rng = np.random.default_rng(seed)
    no = problem.n_orient
    X = rng.standard_normal((problem.n_sources, *shape))
    active = rng.random((problem.n_positions, *shape[:1])) < density
    active = np.repeat(active, no, axis=0)
    return X * active.reshape(active.shape + (1,) * (len(shape) - 1))


# ---------------------------------------------------------------------------
# numpy references, written out from the definitions


def _np_groups(X, no):
    """(m, W, K) -> (P, no * K, W): the entries of each group of each window."""
    m, W, K = X.shape
    return X.reshape(m // no, no, W, K).transpose(0, 1, 3, 2).reshape(-1, no * K, W)


def _np_group_norms(X, no):
    return np.sqrt((_np_groups(X, no) ** 2).sum(1))  # (P, W)


def _np_prox(X, t, no):
    """Group soft thresholding, one group at a time."""
    out = np.zeros_like(X)
    t = np.broadcast_to(t, X.shape[1:2])
    for w in range(X.shape[1]):
        for p in range(X.shape[0] // no):
            block = X[p * no : (p + 1) * no, w]
            nrm = np.linalg.norm(block)
            if nrm > t[w]:
                out[p * no : (p + 1) * no, w] = (1 - t[w] / nrm) * block
    return out


def _np_gap(G, M, X, lam, no):
    """Duality gap of each window: dual point R / max(1, ||G^T R||_2inf / lam)."""
    out = []
    for w in range(M.shape[1]):
        R = M[:, w] - G @ X[:, w]
        p_obj = 0.5 * (R**2).sum() + lam[w] * _np_group_norms(X[:, w : w + 1], no).sum()
        dn = _np_group_norms((G.T @ R)[:, None], no).max()
        theta = R / max(1.0, dn / lam[w])
        d_obj = 0.5 * (M[:, w] ** 2).sum() - 0.5 * ((M[:, w] - theta) ** 2).sum()
        out.append(p_obj - d_obj)
    return np.array(out)


# ---------------------------------------------------------------------------
# The formulas


def test_lasso_formulas_k1(problem_synth_fixed):
    """K = 1, n_orient = 1: the plain Lasso formulas, by hand."""
    problem = problem_synth_fixed
    G = problem.gain
    X, lam = _samples(problem, n=10)
    Z = _sparse_sources(problem, (10,), density=0.2)
    Gt, Mt = torch.as_tensor(G), torch.as_tensor(X)[:, :, None]
    Zt, lamt = torch.as_tensor(Z)[:, :, None], torch.as_tensor(lam)
    R = X - G @ Z
    ref_obj = 0.5 * (R**2).sum(0) + lam * np.abs(Z).sum(0)
    got = _l21.objective(Gt, Mt, Zt, lamt, 1).numpy()
    np.testing.assert_allclose(got, ref_obj, rtol=1e-13)
    np.testing.assert_allclose(_l21.penalty(Zt, 1).numpy(), np.abs(Z).sum(0))
    np.testing.assert_array_equal(_l21.group_norms(Zt, 1).numpy(), np.abs(Z))
    np.testing.assert_array_equal(_l21.support_sizes(Zt, 1).numpy(), (Z != 0).sum(0))
    np.testing.assert_allclose(
        _l21.dual_norm(Zt, 1).numpy(), np.abs(Z).max(0), rtol=1e-15
    )
    np.testing.assert_allclose(
        _l21.alpha_max(Gt, Mt, 1).numpy(), np.abs(G.T @ X).max(0), rtol=1e-13
    )
    t = 0.3 * np.abs(Z).max(0)  # one threshold per sample
    soft = np.sign(Z) * np.maximum(np.abs(Z) - t, 0.0)
    np.testing.assert_array_equal(
        _l21.prox(Zt, torch.as_tensor(t), 1)[:, :, 0].numpy(), soft
    )
    np.testing.assert_allclose(
        _l21.duality_gap(Gt, Mt, Zt, lamt, 1)[0].numpy(),
        _np_gap(G, X[:, :, None], Z[:, :, None], lam, 1),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        _l21.relative_gap(Gt, Mt, Zt, lamt, 1).numpy(),
        _np_gap(G, X[:, :, None], Z[:, :, None], lam, 1) / (0.5 * (X**2).sum(0)),
        rtol=1e-10,
        atol=1e-14,
    )


@pytest.mark.parametrize("sparse", [False, True])
def test_group_formulas_windows(problem, sparse):
    """Windows of K columns, groups of n_orient rows: by hand and MNE's norms."""
    no, G = problem.n_orient, problem.gain
    M, lam = _windows(problem, n_windows=3, n_times=5)
    Z = _sparse_sources(problem, (3, 5), density=0.1 if sparse else 1.0, seed=1)
    Gt, Zt = torch.as_tensor(G), torch.as_tensor(Z)
    Mn = M.numpy()
    # the sparse product (few active rows) is the dense one
    torch.testing.assert_close(
        _l21.gain_times(Gt, Zt), torch.einsum("nm,mwk->nwk", Gt, Zt)
    )
    torch.testing.assert_close(
        _l21.gain_t_times(Gt, M), torch.einsum("nm,nwk->mwk", Gt, M)
    )
    np.testing.assert_allclose(
        _l21.group_norms(Zt, no).numpy(),
        _np_group_norms(Z, no),
        rtol=1e-14,
        atol=1e-150,  # zero groups get sqrt(tiny) (finite gradients)
    )
    np.testing.assert_allclose(
        _l21.group_sq_norms(Zt, no).numpy(), _np_group_norms(Z, no) ** 2, rtol=1e-13
    )
    for w in range(3):
        np.testing.assert_allclose(
            _l21.penalty(Zt, no)[w], norm_l21(Z[:, w], no), rtol=1e-13
        )
        np.testing.assert_allclose(
            _l21.dual_norm(Zt, no)[w], norm_l2inf(Z[:, w], no), rtol=1e-13
        )
        np.testing.assert_allclose(
            _l21.alpha_max(Gt, M, no)[w],
            norm_l2inf(G.T @ Mn[:, w], no),
            rtol=1e-13,
        )
        # MNE's duality gap (on the active set) and primal objective
        active = np.repeat(_np_group_norms(Z[:, w : w + 1], no)[:, 0] > 0, no)
        gap, p_obj, d_obj, _ = dgap_l21(
            Mn[:, w], G, Z[active, w], active, float(lam[w]), no
        )
        ours = _l21.duality_gap(Gt, M, Zt, lam, no)
        np.testing.assert_allclose(ours[0][w], gap, rtol=1e-9)
        np.testing.assert_allclose(ours[1][w], p_obj, rtol=1e-12)
        np.testing.assert_allclose(ours[2][w], d_obj, rtol=1e-12)
        np.testing.assert_allclose(
            _l21.objective(Gt, M, Zt, lam, no)[w], p_obj, rtol=1e-12
        )
    np.testing.assert_allclose(
        _l21.duality_gap(Gt, M, Zt, lam, no)[0].numpy(),
        _np_gap(G, Mn, Z, lam.numpy(), no),
        rtol=1e-9,
    )
    t = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(
        _l21.prox(Zt, torch.as_tensor(t), no).numpy(),
        _np_prox(Z, t, no),
        rtol=1e-14,
        atol=1e-15,
    )


@pytest.mark.parametrize("n_orient", [1, 3])
@pytest.mark.parametrize("n_comp", [1, 4])
def test_prox_is_the_proximal_operator(n_orient, n_comp):
    """prox(V, t) minimizes 1/2 ||Z - V||^2 + t L21(Z): optimality
    conditions group by group, and no perturbation does better."""
    rng = np.random.default_rng(0)
    V = torch.as_tensor(rng.standard_normal((3 * 20, 5, n_comp)))
    t = torch.as_tensor([0.0, 0.5, 1.0, 2.0, 50.0])
    P = _l21.prox(V, t, n_orient)
    torch.testing.assert_close(P[:, 0], V[:, 0], rtol=0, atol=0)  # t = 0
    assert bool((P[:, -1] == 0).all())  # t above every group norm
    nV = _l21.group_norms(V, n_orient)
    nP = _l21.group_norms(P, n_orient)
    zero = _l21.group_sq_norms(P, n_orient) == 0
    # zero groups: ||V_g|| <= t; others: V_g - P_g = t P_g / ||P_g||
    assert bool((nV[zero] <= t.expand_as(nV)[zero]).all())
    assert 0 < int(zero.sum()) < zero.numel()
    Pg = P.reshape(-1, n_orient, 5, n_comp)
    Vg = V.reshape(-1, n_orient, 5, n_comp)
    sub = t[:, None] * Pg / nP[:, None, :, None].clamp_min(1e-300)
    active = ~zero[:, None, :, None].expand_as(Pg)
    torch.testing.assert_close((Vg - Pg)[active], sub[active], rtol=1e-12, atol=1e-13)

    def value(Z):
        return 0.5 * ((Z - V) ** 2).sum((0, 2)) + t * _l21.penalty(Z, n_orient)

    best = value(P)
    for k in range(20):
        D = torch.as_tensor(np.random.default_rng(k).standard_normal(V.shape))
        for eps in (1e-3, 1e-1):
            assert bool((value(P + eps * D) >= best - 1e-12).all())


def test_alpha_max_gives_the_zero_solution(problem):
    """At lam = alpha_max, 0 is a solution (zero gap); below it is not."""
    no = problem.n_orient
    G = torch.as_tensor(problem.gain)
    for M, _ in (_windows(problem, 3, 6), _windows(problem, 5, 1, seed=2)):
        amax = _l21.alpha_max(G, M, no)
        Z0 = torch.zeros((problem.n_sources, *M.shape[1:]), dtype=M.dtype)
        f0 = _l21.zero_objective(M)
        gap = _l21.duality_gap(G, M, Z0, amax, no)[0]
        assert bool((gap.abs() <= 1e-13 * f0).all())
        gap = _l21.duality_gap(G, M, Z0, 0.9 * amax, no)[0]
        assert bool((gap > 1e-3 * f0).all())
        # ISTA stays at 0 just above alpha_max, leaves it just below
        step = 1.0 / problem.lipschitz
        Z = _l21.ista(G, M, 1.000001 * amax, 5, no, step=step)
        assert bool((Z == 0).all())
        Z = _l21.ista(G, M, 0.99 * amax, 5, no, step=step)
        assert bool((_l21.support_sizes(Z, no) > 0).all())


def test_duality_gap_nonnegative(problem):
    """The gap is >= 0 at any point (here rounding-level at worst)."""
    no = problem.n_orient
    G = torch.as_tensor(problem.gain)
    M, lam = _windows(problem, 4, 6)
    f0 = _l21.zero_objective(M)
    for k, scale in enumerate((0.0, 1e-3, 1.0, 1e3)):
        for density in (0.05, 1.0):
            Z = scale * _sparse_sources(problem, (4, 6), density, seed=k)
            Z = torch.as_tensor(Z)
            gap, p_obj, d_obj = _l21.duality_gap(G, M, Z, lam, no)
            assert bool((gap >= -1e-13 * f0).all())
            assert bool((d_obj <= f0 * (1 + 1e-14)).all())  # D(theta) <= F(0)
            torch.testing.assert_close(p_obj, _l21.objective(G, M, Z, lam, no))
    # a few ISTA iterations: gaps positive and decreasing overall
    step = 1.0 / problem.lipschitz
    g = [
        _l21.duality_gap(G, M, _l21.ista(G, M, lam, n, no, step=step), lam, no)[0]
        for n in (1, 10, 100)
    ]
    assert bool((g[-1] >= 0).all()) and bool((g[-1] < g[0]).all())


def test_gap_zero_at_sklearn_lasso(problem_synth_fixed):
    """sklearn's Lasso (alpha = lam / n, no intercept), run to a tight
    tolerance, has a ~0 gap; our certified solver agrees with it."""
    problem = problem_synth_fixed
    G = problem.gain
    n = problem.n_channels
    X, lam = _samples(problem, n=5, seed=3)
    Z = np.empty((problem.n_sources, 5))
    for b in range(5):
        las = Lasso(alpha=lam[b] / n, fit_intercept=False, tol=1e-14, max_iter=10**6)
        Z[:, b] = las.fit(G, X[:, b]).coef_
    rel = relative_gap(problem, X, Z, lam)
    assert np.all(rel >= -1e-14) and np.all(rel < 1e-9), rel
    Z_ours = solve_lasso(problem, X, lam, tol=1e-8, verbose=False)
    assert np.all(relative_gap(problem, X, Z_ours, lam) <= 1e-8)
    f = _l21.objective(
        torch.as_tensor(G), torch.as_tensor(X)[:, :, None],
        torch.as_tensor(Z)[:, :, None], torch.as_tensor(lam), 1,
    )  # fmt: skip
    f_ours = _l21.objective(
        torch.as_tensor(G), torch.as_tensor(X)[:, :, None],
        torch.as_tensor(Z_ours)[:, :, None], torch.as_tensor(lam), 1,
    )  # fmt: skip
    torch.testing.assert_close(f_ours, f, rtol=1e-8, atol=0)
    np.testing.assert_allclose(Z_ours, Z, rtol=0, atol=1e-4 * np.abs(Z).max())


def test_gap_zero_at_mne_mixed_norm_solver(problem_synth_free):
    """MNE's mixed_norm_solver (BCD, no debiasing) on windows of free
    orientation: ~0 gap; solve_mxne certifies and agrees with it."""
    problem = problem_synth_free
    G, no = problem.gain, problem.n_orient
    M, lam = _windows(problem, 3, 8, seed=4)
    Gt = torch.as_tensor(G)
    Z = np.zeros((problem.n_sources, 3, 8))
    for w in range(3):
        Xa, active, _ = mixed_norm_solver(
            M[:, w].numpy(), G, float(lam[w]), maxit=10**5, tol=1e-12,
            n_orient=no, solver="bcd", debias=False, verbose=False,
        )  # fmt: skip
        Z[active, w] = Xa
    Z = torch.as_tensor(Z)
    f0 = _l21.zero_objective(M)
    rel = _l21.relative_gap(Gt, M, Z, lam, no)
    assert bool((rel >= -1e-14).all()) and bool((rel < 1e-9).all()), rel
    assert bool((_l21.support_sizes(Z, no) > 1).any())  # non-trivial supports
    Z_ours, rel_ours, _ = solve_mxne(Gt, M, lam, no, tol=1e-10)
    assert bool((rel_ours <= 1e-10).all())
    torch.testing.assert_close(
        _l21.relative_gap(Gt, M, Z_ours, lam, no), rel_ours, rtol=0, atol=1e-14
    )
    f = _l21.objective(Gt, M, Z, lam, no)
    f_ours = _l21.objective(Gt, M, Z_ours, lam, no)
    assert bool((f_ours <= f + 1e-10 * f0).all())
    assert bool((f <= f_ours + 1e-8 * f0).all())


# ---------------------------------------------------------------------------
# Windows: zero padding, temporal components


def test_zero_padding_changes_nothing(problem):
    """stack_windows pads with zero columns: objective, gap, alpha_max and
    the solution of each window are those of the window alone."""
    no = problem.n_orient
    G = torch.as_tensor(problem.gain)
    rng = np.random.default_rng(0)
    widths = (3, 7, 1, 5)
    wins = [rng.standard_normal((problem.n_channels, k)) for k in widths]
    M = _l21.stack_windows(wins)
    assert M.shape == (problem.n_channels, 4, 7) and M.dtype == torch.float64
    assert bool((M[:, 0, 3:] == 0).all())
    amax = _l21.alpha_max(G, M, no)
    lam = 0.4 * amax
    Z, rel, _ = solve_mxne(G, M, lam, no, tol=1e-10)
    assert bool((rel <= 1e-10).all())
    Zr = _sparse_sources(problem, (4, 7), density=0.2)
    for w, k in enumerate(widths):
        assert bool((Z[:, w, k:] == 0).all())  # the padding stays zero
        Mw = torch.as_tensor(wins[w])[:, None, :]
        Zw = torch.as_tensor(Zr[:, w : w + 1, :k])
        Zp = torch.zeros((problem.n_sources, 1, 7), dtype=torch.float64)
        Zp[:, :, :k] = Zw
        Mp = M[:, w : w + 1]
        torch.testing.assert_close(_l21.alpha_max(G, Mw, no), amax[w : w + 1])
        for a, b in zip(
            _l21.duality_gap(G, Mw, Zw, lam[w], no),
            _l21.duality_gap(G, Mp, Zp, lam[w], no),
        ):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
        # the padded window's solution solves the window alone
        rel_w = _l21.relative_gap(G, Mw, Z[:, w : w + 1, :k], lam[w], no)
        assert bool((rel_w <= 1e-10).all())
    with pytest.raises(ValueError, match="at least one"):
        _l21.stack_windows([])
    with pytest.raises(ValueError, match="same number of rows"):
        _l21.stack_windows([wins[0], wins[1][:5]])


def test_time_pca_keeps_objective(problem):
    """With all components, the problem on U s has the objective, gap and
    alpha_max of the problem on the time samples (X = X_pca Vh)."""
    no = problem.n_orient
    G = torch.as_tensor(problem.gain)
    M, lam = _windows(problem, 3, 12, seed=5)
    M_pca, Vh = _l21.time_pca(M)
    assert M_pca.shape == (problem.n_channels, 3, 12) and Vh.shape == (3, 12, 12)
    torch.testing.assert_close(
        Vh @ Vh.mT, torch.eye(12, dtype=M.dtype).expand(3, -1, -1)
    )
    torch.testing.assert_close(_l21.from_pca(M_pca, Vh), M)  # M = (U s) Vh
    torch.testing.assert_close(_l21.alpha_max(G, M_pca, no), _l21.alpha_max(G, M, no))
    for density in (0.1, 1.0):
        Zp = torch.as_tensor(_sparse_sources(problem, (3, 12), density))
        Z = _l21.from_pca(Zp, Vh)
        torch.testing.assert_close(
            _l21.objective(G, M_pca, Zp, lam, no), _l21.objective(G, M, Z, lam, no)
        )
        for a, b in zip(
            _l21.duality_gap(G, M_pca, Zp, lam, no),
            _l21.duality_gap(G, M, Z, lam, no),
        ):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # fewer components: the leading ones (largest energy first)
    M3, Vh3 = _l21.time_pca(M, n_components=3)
    assert M3.shape == (problem.n_channels, 3, 3) and Vh3.shape == (3, 3, 12)
    energy = (M_pca**2).sum(0)
    assert bool((energy[:, :-1] >= energy[:, 1:] * (1 - 1e-12)).all())


# ---------------------------------------------------------------------------
# The solvers


def _np_ista(G, X, lam, n_iter, no, momentum=False):
    """ISTA / FISTA on (n, B) per-sample problems, numpy."""
    step = 1.0 / np.linalg.norm(G, ord=2) ** 2
    Z = np.zeros((G.shape[1], X.shape[1]))
    Y, t = Z, 1.0
    for _ in range(n_iter):
        V = Y - step * G.T @ (G @ Y - X)
        Z_new = _np_prox(V[:, :, None], step * lam, no)[:, :, 0]
        if momentum:
            t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
            Y = Z_new + (t - 1) / t_new * (Z_new - Z)
            t = t_new
        else:
            Y = Z_new
        Z = Z_new
    return Z


@pytest.mark.parametrize("momentum", [False, True])
def test_ista_fista_per_sample_are_windows(problem, momentum):
    """solvers.ista/fista on (n, B) are _l21.ista on (n, B, 1), numpy in,
    numpy out, and a numpy ISTA/FISTA written out by hand."""
    no = problem.n_orient
    X, lam = _samples(problem, n=6, seed=1)
    solver = fista if momentum else ista
    Z = solver(problem, X, lam, 20)
    assert isinstance(Z, np.ndarray) and Z.shape == (problem.n_sources, 6)
    G = torch.as_tensor(problem.gain)
    Zw = _l21.ista(
        G, torch.as_tensor(X)[:, :, None], torch.as_tensor(lam), 20, no,
        step=1.0 / problem.lipschitz, momentum=momentum,
    )  # fmt: skip
    np.testing.assert_array_equal(Z, Zw[:, :, 0].numpy())
    ref = _np_ista(problem.gain, X, lam, 20, no, momentum)
    np.testing.assert_allclose(Z, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert np.abs(Z).max() > 0
    # tensors in, tensors out; windows in, windows out
    Zt = solver(problem, torch.as_tensor(X), torch.as_tensor(lam), 20)
    assert isinstance(Zt, torch.Tensor)
    np.testing.assert_array_equal(Zt.numpy(), Z)
    M, lam_w = _windows(problem, 3, 4)
    Zw = solver(problem, M, lam_w, 7)
    assert Zw.shape == (problem.n_sources, 3, 4)
    torch.testing.assert_close(
        Zw,
        _l21.ista(G, M, lam_w, 7, no, step=1.0 / problem.lipschitz, momentum=momentum),
        rtol=0,
        atol=0,
    )
    # a warm start Z0: n iterations from the output of m are m + n iterations
    if not momentum:
        np.testing.assert_allclose(
            ista(problem, X, lam, 12, Z0=ista(problem, X, lam, 8)),
            Z,
            rtol=0,
            atol=1e-14 * np.abs(Z).max(),
        )


def test_fista_beats_ista_and_ista_is_slow(problem):
    """The synthetic gains are hard (ISTA far from converged after 20
    iterations); FISTA's objective is lower."""
    X, lam = _samples(problem, n=8, seed=2)
    G = torch.as_tensor(problem.gain)
    M, lamt = torch.as_tensor(X)[:, :, None], torch.as_tensor(lam)
    no = problem.n_orient
    Z_star = solve_lasso(problem, X, lam, tol=1e-8, verbose=False)
    f_star = _l21.objective(G, M, torch.as_tensor(Z_star)[:, :, None], lamt, no)
    f0 = _l21.zero_objective(M)

    def subopt(Z):
        Z = torch.as_tensor(Z)[:, :, None]
        return ((_l21.objective(G, M, Z, lamt, no) - f_star) / f0).numpy()

    s_ista = subopt(ista(problem, X, lam, 20))
    s_fista = subopt(fista(problem, X, lam, 20))
    assert np.all(s_ista >= -1e-8) and np.all(s_fista >= -1e-8)
    assert np.median(s_ista) > 1e-3
    assert np.mean(s_fista) < np.mean(s_ista)
    assert (_l21.support_sizes(torch.as_tensor(Z_star)[:, :, None], no) > 1).any()


def test_solve_lasso_and_solve_mxne_certify_and_agree(problem):
    """Both exact solvers certify (relative gap <= tol) on the same K = 1
    problems and reach the same objective (and solution)."""
    no = problem.n_orient
    X, lam = _samples(problem, n=6, seed=4)
    tol = 1e-8
    Z = solve_lasso(problem, X, lam, tol=tol, verbose=False)
    rel = relative_gap(problem, X, Z, lam)
    assert rel.shape == (6,) and np.all(rel <= tol)
    G = torch.as_tensor(problem.gain)
    M, lamt = torch.as_tensor(X)[:, :, None], torch.as_tensor(lam)
    Zm, rel_m, n_rounds = solve_mxne(G, M, lamt, no, tol=tol)
    assert Zm.shape == (problem.n_sources, 6, 1) and n_rounds >= 1
    assert bool((rel_m <= tol).all())
    np.testing.assert_allclose(
        relative_gap(problem, X, Zm[:, :, 0], lam), rel_m, rtol=0, atol=1e-14
    )
    f0 = _l21.zero_objective(M)
    f = _l21.objective(G, M, torch.as_tensor(Z)[:, :, None], lamt, no)
    fm = _l21.objective(G, M, Zm, lamt, no)
    assert bool(((f - fm).abs() <= 2 * tol * f0).all())
    np.testing.assert_allclose(
        Zm[:, :, 0].numpy(), Z, rtol=0, atol=1e-3 * np.abs(Z).max()
    )
    # above alpha_max: the exact zero
    amax = _l21.alpha_max(G, M, no).numpy()
    assert np.all(solve_lasso(problem, X, 1.01 * amax, verbose=False) == 0)
    assert bool((solve_mxne(G, M, 1.01 * amax, no, tol=tol)[0] == 0).all())
