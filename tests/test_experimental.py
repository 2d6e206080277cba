"""Tests of the research networks of mne_lista.experimental (LISTA, ALISTA)."""

import numpy as np
import pytest
import torch

from mne_lista import ista
from mne_lista.experimental import ALISTA, LISTA, alista_weight
from mne_lista.simulation import simulate_data
from mne_lista.training import evaluate, train


@pytest.mark.parametrize("name", ["problem_synth_fixed", "problem_synth_free"])
def test_untrained_lista_is_ista(name, request):
    """Untrained coupled LISTA computes ISTA, layer by layer; shapes kept."""
    problem = request.getfixturevalue(name)
    X, lam = simulate_data(problem, 12, extent=0.0, random_state=0)
    net = LISTA(problem, 6, dtype=torch.float64)
    Xt = torch.as_tensor(X)
    with torch.no_grad():
        outs = net(Xt, torch.as_tensor(lam), return_all=True)
        Z3, stats = net(Xt[:, :, None], torch.as_tensor(lam), return_stats=True)
    assert len(outs) == 6 and outs[-1].shape == (problem.n_sources, 12)
    assert Z3.shape == (problem.n_sources, 12, 1)
    assert stats["products_per_layer"] == 2.0
    for T in (1, 6):
        np.testing.assert_allclose(
            outs[T - 1].numpy(), ista(problem, X, lam, T), rtol=1e-9, atol=1e-12
        )
    np.testing.assert_allclose(Z3[:, :, 0].numpy(), outs[-1].numpy())


@pytest.mark.filterwarnings("ignore:the trained network does worse:RuntimeWarning")
def test_lista_alista_train(problem_synth_free):
    """Both train with mne_lista.training.train and lower the objective."""
    problem = problem_synth_free
    X, lam = simulate_data(problem, 64, extent=0.0, random_state=0)
    Xv, lamv = simulate_data(problem, 32, extent=0.0, random_state=1)
    for net, lr in ((LISTA(problem, 4), 1e-3), (ALISTA(problem, 4), 0.05)):
        before = evaluate(net, torch.as_tensor(Xv[:, :, None], dtype=torch.float32),
                          torch.as_tensor(lamv, dtype=torch.float32))  # fmt: skip
        hist = train(net, X, lam, Xv, lamv, n_epochs=3, lr=lr, random_state=0)
        assert np.isfinite(hist["best_val_loss"])
        assert hist["best_val_loss"] <= before + 1e-6


def test_alista_weight(problem_synth_fixed):
    """diag(W^T G) = 1 on a full-rank gain; errors are clear."""
    G = problem_synth_fixed.gain
    W = alista_weight(G, rtol=1e-12)
    np.testing.assert_allclose(np.einsum("ij,ij->j", W, G), 1.0, rtol=1e-8)
    with pytest.raises(ValueError, match="max_params"):
        LISTA(problem_synth_fixed, 3, max_params=10)
    with pytest.raises(ValueError, match="per-sample"):
        LISTA(problem_synth_fixed, 3)(torch.zeros(40, 2, 5), 0.1)
