"""Tests of the pieces of the benchmarks that compute figures."""

import numpy as np
import torch

from mne_lista import ista, solve_lasso
from mne_lista._lasso import alpha_max, objective
from mne_lista.bench.step_lista import _match, greedy_step_oracle
from mne_lista.simulation import simulate_data


def test_greedy_step_oracle(problem_surf_fixed):
    """One trial step is ISTA; more never do worse than ISTA, layer by layer."""
    problem = problem_surf_fixed
    X, _ = simulate_data(problem, 8, random_state=0)
    D, Xt = torch.as_tensor(problem.gain), torch.as_tensor(X)
    lam = (np.array([0.1, 0.3, 0.5, 0.8] * 2) * alpha_max(D, Xt, 1).numpy()).astype(
        float
    )

    def f(Z):
        return objective(D, Xt, torch.as_tensor(Z), torch.as_tensor(lam), 1).numpy()

    for n_layers in (1, 5):
        Z_ista = ista(problem, X, lam, n_layers)
        np.testing.assert_allclose(
            greedy_step_oracle(problem, X, lam, n_layers, n_trials=1),
            Z_ista,
            rtol=1e-12,
            atol=1e-14,
        )
        Z = greedy_step_oracle(problem, X, lam, n_layers, n_trials=20)
        assert np.all(f(Z) <= f(Z_ista) * (1 + 1e-12))
    # larger steps pay off on this problem, and F* is a lower bound
    f_star = f(solve_lasso(problem, X, lam, verbose=False))
    f_ora, f_ista = f(Z), f(ista(problem, X, lam, 5))
    assert np.all(f_ora >= f_star - 1e-9 * f_star)
    assert np.mean(f_ora - f_star) < 0.5 * np.mean(f_ista - f_star)


def test_match_interpolates_fista_curve():
    """FISTA iterations matching a value: exact at the points, log-log between."""
    curve = {10: 1e-1, 20: 1e-2, 40: 1e-4}
    np.testing.assert_allclose(_match(curve, 1e-2), 20)
    np.testing.assert_allclose(_match(curve, 1e-3), np.sqrt(20 * 40))
    assert np.isnan(_match(curve, 1.0))  # worse than the first point
    assert _match(curve, 1e-5) == np.inf  # better than the last point
