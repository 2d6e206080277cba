"""Tests of the pieces of the benchmarks (``benchmarks/``) that compute figures.

The benchmarks are scripts of the source checkout, not part of the package:
they are imported by path.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mne_lista import _l21, ista, solve_lasso
from mne_lista.simulation import simulate_data

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def step_lista_bench():
    """The module benchmarks/step_lista.py, imported from its folder."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import step_lista
    finally:
        sys.path.remove(str(BENCHMARKS))
    return step_lista


def test_benchmarks_not_in_package():
    """benchmarks/ is a top-level folder, out of the wheel's packages."""
    import tomllib

    import mne_lista

    assert (BENCHMARKS / "README.md").is_file()
    assert not (Path(mne_lista.__file__).parent / "bench").exists()
    conf = tomllib.loads((BENCHMARKS.parent / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["mne_lista*"]


def test_greedy_step_oracle(problem_surf_fixed, step_lista_bench):
    """One trial step is ISTA; more never do worse than ISTA, layer by layer."""
    greedy_step_oracle = step_lista_bench.greedy_step_oracle
    problem = problem_surf_fixed
    X, _ = simulate_data(problem, 8, random_state=0)
    D, M = torch.as_tensor(problem.gain), torch.as_tensor(X)[:, :, None]
    amax = _l21.alpha_max(D, M, 1).numpy()
    lam = np.array([0.1, 0.3, 0.5, 0.8] * 2) * amax

    def f(Z):
        Z = torch.as_tensor(Z)[:, :, None]
        return _l21.objective(D, M, Z, torch.as_tensor(lam), 1).numpy()

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


def test_match_interpolates_fista_curve(step_lista_bench):
    """FISTA iterations matching a value: exact at the points, log-log between."""
    _match = step_lista_bench._match
    curve = {10: 1e-1, 20: 1e-2, 40: 1e-4}
    np.testing.assert_allclose(_match(curve, 1e-2), 20)
    np.testing.assert_allclose(_match(curve, 1e-3), np.sqrt(20 * 40))
    np.testing.assert_allclose(_match(curve, 1e-1), 10)
    assert np.isnan(_match(curve, 1.0))  # worse than the first point
    assert _match(curve, 1e-5) == np.inf  # better than the last point


def test_extra_configs_are_networks(problem_synth_free, step_lista_bench):
    """The --extra rows are UnrolledISTA configurations; untrained, ISTA/FISTA."""
    from mne_lista import fista
    from mne_lista.networks import UnrolledISTA

    problem = problem_synth_free
    X, lam = simulate_data(problem, 6, extent=0.0, random_state=0)
    assert set(step_lista_bench.EXTRA_KINDS) == {
        "safe_step", "support_step", "backtrack_step", "step_fista"
    }  # fmt: skip
    for name, config in step_lista_bench.EXTRA_CONFIGS.items():
        net = UnrolledISTA(problem, 4, dtype=torch.float64, **config)
        Z, stats = step_lista_bench._net_out(net, X, lam, return_stats=True)
        ref = (fista if config.get("momentum") else ista)(problem, X, lam, 4)
        np.testing.assert_allclose(Z, ref, rtol=1e-9, atol=1e-12, err_msg=name)
        assert stats["products_per_layer"] >= 2.0


def test_transfer_joint_training(problem_synth_fixed, problem_synth_free):
    """benchmarks/transfer.py: one set of parameters, shared by the networks
    of two forwards, trained on both (never above ISTA on validation)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import transfer
    finally:
        sys.path.remove(str(BENCHMARKS))
    problems = (problem_synth_fixed, problem_synth_free)
    nets = [transfer.make_net("lista", p) for p in problems]
    data = [transfer._simulate("lista", p, 32, 0, extent=0.0) for p in problems]
    val = [transfer._simulate("lista", p, 16, 1, extent=0.0) for p in problems]
    for net, (M, lam) in zip(nets, val):
        transfer.set_reference(net, "ref", None, M, lam)
    hist = transfer.train_joint(
        nets, data, val, n_epochs=2, batch_size=8, lr=0.05, patience=2, seed=0
    )
    assert nets[0].log_steps is nets[1].log_steps
    assert nets[0].support_exp is nets[1].support_exp
    assert bool(nets[0].log_steps.any())  # moved from the ISTA steps
    assert hist["best_val_over_ista"] < 1.0
