"""
.. _tut-what-the-network-learns:

==================================
What does Step-LISTA learn?
==================================

Step-LISTA keeps ISTA's structure and learns only one step size per layer.
Ablin et al. (NeurIPS 2019) showed why this is enough to beat ISTA and
FISTA on sparse problems: once the support ``S`` of the solution is found,
ISTA could take steps of ``1/L_S``, with ``L_S = ||G_S||_2^2`` the Lipschitz
constant of the gain restricted to the support, much larger than the
global ``1/L``. The network learns such larger steps from data.

Here we build the Lasso problem of a real MEG forward model, train
Step-LISTA, its adaptive variant (the network of ``StepLISTA()``, whose
default is ``adaptive=True``: per-sample steps that grow as the support of
the iterate shrinks, with backtracking)
and coupled LISTA on simulated sources,
and compare the suboptimality ``F(z_t) - F(z*)`` after ``t`` layers with
ISTA and FISTA after ``t`` iterations on independent test data; then we plot
the learned steps against ``1/L`` and against the ``1/L_S`` of the supports
of the exact solutions (the paper's "what does the network learn" figure).

The forward model comes from the full ``sample`` dataset (oct-6 cortical
source space, fixed orientation: a Lasso) when it is on disk, otherwise from
the offline subset named by ``MNE_LISTA_DATA`` (a 7 mm volume grid, free
orientation: a group Lasso over the xyz components of each position). Set
``MNE_LISTA_QUICK=1`` for a fast, rough run.
"""
# Authors: mne-lista developers
# License: BSD-3-Clause

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import mne
import numpy as np
import torch

from mne_lista import fista, ista, prepare_problem
from mne_lista.datasets import make_subset_forward, read_subset
from mne_lista.experimental import LISTA  # research comparator, not the product
from mne_lista.networks import UnrolledISTA
from mne_lista.simulation import simulate_data
from mne_lista.solvers import solve_lasso
from mne_lista.training import train

quick = os.environ.get("MNE_LISTA_QUICK", "0") not in ("", "0")
torch.manual_seed(0)

# %%
# The Lasso problem of a real forward model
# -----------------------------------------
meg_path = Path(mne.datasets.sample.data_path(download=False)) / "MEG" / "sample"
if (meg_path / "sample_audvis-meg-oct-6-fwd.fif").is_file():
    data = "full sample dataset (oct-6)"
    forward = mne.read_forward_solution(meg_path / "sample_audvis-meg-oct-6-fwd.fif")
    noise_cov = mne.read_cov(meg_path / "sample_audvis-cov.fif")
    info = mne.io.read_info(meg_path / "sample_audvis-ave.fif")
    loose = 0.0  # fixed orientation
else:
    data = "offline subset ($MNE_LISTA_DATA)"
    evoked, noise_cov = read_subset("Left Auditory")
    forward = make_subset_forward(evoked.info, kind="volume", pos=7.0)
    info = evoked.info
    loose = 1.0  # free orientation (a volume grid has no normals)
problem = prepare_problem(forward, noise_cov, info, loose=loose, depth=0.8)
L = problem.lipschitz
print(f"{data}: {problem}")

# %%
# Simulated training, validation and test data
# --------------------------------------------
# Each sample: a few (possibly extended) active sources with random
# amplitudes pushed through the whitened gain, white noise at a random SNR,
# and ``lam`` a random fraction of ``lam_max`` in [0.1, 0.8]. The test set
# is drawn independently (another seed).
n_layers = 5 if quick else 20
n_train, n_val, n_test = (64, 16, 8) if quick else (4000, 500, 500)
X, lam = simulate_data(problem, n_train, random_state=0)
X_val, lam_val = simulate_data(problem, n_val, random_state=1)
X_test, lam_test = simulate_data(problem, n_test, random_state=2)

# %%
# Train Step-LISTA and LISTA on the Lasso objective itself (unsupervised)
# -----------------------------------------------------------------------
# The loss is the Lasso objective of the network's output: no solution of
# the Lasso is needed to train. The adaptive network has two parameters per
# layer (the step for a reference support size and its exponent); a step
# that would raise the objective of a sample is retried smaller (without
# gradients) or replaced by the ISTA step, which costs extra products with
# the gain for those samples.
nets = {
    "Step-LISTA": UnrolledISTA(problem, n_layers),
    "Step-LISTA adaptive": UnrolledISTA(
        problem, n_layers, step_rule="support", safeguard="backtracking"
    ),
    "LISTA": LISTA(problem, n_layers),
}
histories = dict()
for name, net in nets.items():
    histories[name] = train(
        net,
        X,
        lam,
        X_val,
        lam_val,
        method="adam",
        n_epochs=2 if quick else 100,
        lr=1e-4 if name == "LISTA" else 0.05,
        random_state=0,
    )

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for name, hist in histories.items():
    ax.plot(hist["val_loss"], label=name)
ax.set(xlabel="epoch", ylabel="validation F(z_T) / F(0)", title="Training")
ax.legend()

# %%
# Suboptimality against the number of layers / iterations
# -------------------------------------------------------
# ``z*`` comes from the certified exact solver (duality gap below 1e-9 of
# ``F(0)``, 1e-6 in the quick setting); every method is evaluated in float64
# on the test set. ISTA and FISTA are the untrained Step-LISTA and Step-FISTA
# networks in float64 (untrained, their steps are 1/L and their momentum
# FISTA's: they compute ISTA and FISTA exactly), which gives every iterate in
# one pass.
G, n_orient = problem.gain, problem.n_orient


def lasso_objective(Z):
    """F(z) / F(0) of each test sample (groups of n_orient rows)."""
    R = X_test - G @ Z
    group_norms = np.linalg.norm(Z.reshape(-1, n_orient, Z.shape[1]), axis=1)
    F = 0.5 * (R**2).sum(0) + lam_test * group_norms.sum(0)
    return F / (0.5 * (X_test**2).sum(0))


Z_star = solve_lasso(problem, X_test, lam_test, tol=1e-6 if quick else 1e-9)
F_star = lasso_objective(Z_star)
layers = np.arange(1, n_layers + 1)
baselines = {
    "ISTA": UnrolledISTA(problem, n_layers, dtype=torch.float64),
    "FISTA": UnrolledISTA(problem, n_layers, momentum=True, dtype=torch.float64),
}
# check the claim above on the last iterate
Z_ista = ista(problem, X_test, lam_test, n_layers)
Z_fista = fista(problem, X_test, lam_test, n_layers)
curves = dict()
with torch.no_grad():
    for name, net in {**baselines, **nets}.items():
        net.eval()  # the adaptive network retries rejected steps in eval mode
        X_t = torch.as_tensor(X_test, dtype=net.G.dtype)
        lam_t = torch.as_tensor(lam_test, dtype=net.G.dtype)
        outs, stats = net(X_t, lam_t, return_all=True, return_stats=True)
        curves[name] = [Z.double().numpy() for Z in outs]
        cost = stats["products_per_layer"]
        if cost != 2.0:
            print(f"{name}: {cost:.2f} gain products per layer and sample (ISTA: 2)")
np.testing.assert_allclose(curves["ISTA"][-1], Z_ista, atol=1e-10)
np.testing.assert_allclose(curves["FISTA"][-1], Z_fista, atol=1e-10)

fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for name, Zs in curves.items():
    subopt = [np.mean(lasso_objective(Z) - F_star) for Z in Zs]
    ax.semilogy(layers, np.maximum(subopt, 1e-12), "o-", ms=3, label=name)
    print(f"{name:>10}: (F(z_T) - F*) / F(0) at T={n_layers}: {subopt[-1]:.2e}")
ax.set(
    xlabel="layers / iterations t",
    ylabel="mean (F(z_t) - F*) / F(0)",
    title="Held-out suboptimality",
)
ax.legend()

# %%
# The learned steps against 1/L and 1/L_S
# ---------------------------------------
# For every test sample, ``L_S`` is the Lipschitz constant of the gain
# restricted to the support of its exact solution. Steps are shown in units
# of ``1/L``: ISTA uses 1 everywhere; the learned steps go beyond it,
# towards the ``1/L_S`` of typical supports.
inv_LS = []
for k in range(n_test):
    support = np.flatnonzero(Z_star[:, k])
    if support.size:
        inv_LS.append(L / np.linalg.norm(G[:, support], ord=2) ** 2)
steps = nets["Step-LISTA"].steps * L

fig, (ax, ax_h) = plt.subplots(
    1, 2, figsize=(9, 4), sharey=True, width_ratios=(3, 1), layout="constrained"
)
ax.semilogy(layers, steps, "o-", label="learned step x L")
ax.axhline(1.0, color="k", ls="--", label="1/L (ISTA)")
ax.axhline(np.median(inv_LS), color="C3", ls=":", label="median of 1/L_S")
ax.set(xlabel="layer", ylabel="step (units of 1/L)")
ax.legend(fontsize=8)
ax_h.hist(
    inv_LS, bins=np.geomspace(1, max(inv_LS) * 1.01, 20), orientation="horizontal"
)
ax_h.set(xlabel="test samples", title="1/L_S on supports")
fig.suptitle("What Step-LISTA learns")
print(f"learned steps x L: {np.round(steps, 2)}")
print(f"1/L_S x L: median {np.median(inv_LS):.1f}, max {np.max(inv_LS):.1f}")
