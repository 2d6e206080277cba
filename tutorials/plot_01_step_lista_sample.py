"""
.. _tut-step-lista-sample:

==========================================================
Step-LISTA on the sample dataset, next to ``mixed_norm``
==========================================================

Sparse source localization of the 'Left Auditory' evoked response of MNE's
``sample`` subject with **Step-LISTA**: ISTA unrolled into a network whose
only learned parameters are one step size per layer (Ablin et al., NeurIPS
2019), trained without supervision on simulated sources pushed through the
forward model. By default (``adaptive=True``) each sample's step also grows
as the support of its iterate shrinks, and a step that would raise the Lasso
objective is retried smaller: the objective never increases from one layer
to the next. We compare it, at the same ``alpha``, with MNE's
:func:`mne.inverse_sparse.mixed_norm` (and :func:`~mne.inverse_sparse.gamma_map`):
source locations, time courses, explained variance and wall time.

The tutorial uses the full ``sample`` dataset (oct-6 cortical source space,
loose orientation) when it is on disk (:func:`mne.datasets.sample.data_path`);
otherwise the small offline subset named by the environment variable
``MNE_LISTA_DATA``: the same subject and head model, a 7 mm volume source grid
(free orientation) and a noisier 3-trial average. Set ``MNE_LISTA_QUICK=1``
for a fast, rough run.
"""
# Authors: mne-lista developers
# License: BSD-3-Clause

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import mne
import numpy as np
from mne.inverse_sparse import gamma_map, mixed_norm

import mne_lista
from mne_lista.datasets import make_subset_forward, read_subset, subset_data_path

quick = os.environ.get("MNE_LISTA_QUICK", "0") not in ("", "0")

# %%
# Data: the full sample dataset if present, else the offline subset
# ------------------------------------------------------------------
# ``data_path(download=False)`` never downloads; it returns a folder that
# holds the dataset only if it was downloaded before.
condition = "Left Auditory"
meg_path = Path(mne.datasets.sample.data_path(download=False)) / "MEG" / "sample"
if (meg_path / "sample_audvis-ave.fif").is_file():
    data = "full sample dataset"
    evoked = mne.read_evokeds(
        meg_path / "sample_audvis-ave.fif", condition=condition, baseline=(None, 0)
    ).pick("meg")
    noise_cov = mne.read_cov(meg_path / "sample_audvis-cov.fif")
    forward = mne.read_forward_solution(meg_path / "sample_audvis-meg-oct-6-fwd.fif")
    trans = meg_path / "sample_audvis_raw-trans.fif"
    subjects_dir = meg_path.parents[1] / "subjects"
else:
    data = "offline subset ($MNE_LISTA_DATA)"
    subset = subset_data_path()
    evoked, noise_cov = read_subset(condition)
    forward = make_subset_forward(evoked.info, kind="volume", pos=7.0)
    trans = subset / "sample_audvis_trunc-trans.fif"
    subjects_dir = subset / "subjects"
print(f"Using the {data}: {evoked}")
print(forward)

# %%
# The window of the auditory N100m, and alpha
# -------------------------------------------
# ``alpha`` is a percentage of alpha_max over the window, as in
# :func:`~mne.inverse_sparse.mixed_norm`; ``loose="auto"`` is 0.2 for a
# cortical source space and 1 (free orientation) for a volume grid.
evoked_win = evoked.copy().crop(tmin=0.05, tmax=0.15)
alpha = 40.0
loose, depth = "auto", 0.8
debias = not quick  # on by default, as in mixed_norm; skipped when quick
fig = evoked.plot(spatial_colors=True, time_unit="ms", show=False)
fig.suptitle(f"{condition} ({data})")

# %%
# Step-LISTA on the forward model
# -------------------------------
# The network starts from the steps shipped with the package, trained once
# (unsupervised, on simulated sources) over many forward models: with 20
# layers it localizes with no training at all (``model.pretrained``).
# ``fit()`` refines the steps for this forward model on simulated source
# activity (no real data is used), in minutes; the quick run's 5-layer
# network has no shipped steps and gets a brief fit instead.
model = mne_lista.StepLISTA(
    forward,
    noise_cov,
    evoked.info,
    n_layers=5 if quick else 20,
    loose=loose,
    depth=depth,
)
t0 = time.perf_counter()
if not model.pretrained:
    model.fit(n_samples=64, n_epochs=1, random_state=0)
fit_time = time.perf_counter() - t0
print(f"{model!r}: pretrained={model.pretrained}, fit in {fit_time:.1f} s")

# %%
# Localize: Step-LISTA, mixed_norm and gamma_map
# ----------------------------------------------
# All return a list of :class:`mne.Dipole` (``return_as_dipoles=True``) and
# the residual; ``apply`` accepts every option of ``mixed_norm`` that makes
# sense for a learned solver. Without ``return_as_dipoles`` it returns a
# :class:`mne.SourceEstimate`, exactly as ``mixed_norm`` does.
results = dict()
t0 = time.perf_counter()
dips, residual = model.apply(
    evoked_win, alpha, debias=debias, return_as_dipoles=True, return_residual=True
)
results["Step-LISTA"] = (dips, residual, time.perf_counter() - t0)

t0 = time.perf_counter()
dips, residual = mixed_norm(
    evoked_win,
    forward,
    noise_cov,
    alpha=alpha,
    loose=loose,
    depth=depth,
    debias=debias,
    return_as_dipoles=True,
    return_residual=True,
)
results["mixed_norm"] = (dips, residual, time.perf_counter() - t0)

if not quick:
    t0 = time.perf_counter()
    dips, residual = gamma_map(
        evoked_win,
        forward,
        noise_cov,
        alpha=0.5,
        loose=loose,
        depth=depth,
        xyz_same_gamma=True,
        return_as_dipoles=True,
        return_residual=True,
    )
    results["gamma_map"] = (dips, residual, time.perf_counter() - t0)

stc = model.apply(evoked_win, alpha, debias=debias)  # the same, as an stc
print(stc)

# %%
# Explained variance and wall time
# --------------------------------
# Explained variance of the whitened data (as MNE logs it). It is low on the
# offline subset, whose 'Left Auditory' response averages only 3 trials.
M = model.problem.whiten(evoked_win)
summary = dict()
for name, (dips, residual, wall) in results.items():
    R = model.problem.whiten(residual)
    exp_var = 100 * (1 - np.sum(R**2) / np.sum(M**2))
    summary[name] = (len(dips), exp_var, wall)
print(f"{'method':<12}{'dipoles':>8}{'expl. var (%)':>15}{'time (s)':>10}")
for name, (n_dip, exp_var, wall) in summary.items():
    print(f"{name:<12}{n_dip:>8d}{exp_var:>15.1f}{wall:>10.2f}")
print(f"(Step-LISTA fit before the first apply: {fit_time:.1f} s)")

fig, axes = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
names = list(summary)
axes[0].bar(names, [summary[n][1] for n in names], color=["C0", "C3", "C2"][:3])
axes[0].set(ylabel="explained variance (%)", ylim=(0, 100))
axes[1].bar(names, [summary[n][2] for n in names], color=["C0", "C3", "C2"][:3])
axes[1].set(ylabel="wall time (s)", yscale="log")

# %%
# Source locations
# ----------------
# The strongest dipole of each method on the subject's MRI, and all active
# sources of each method seen through a glass head (head coordinates).
for name, (dips, _, _) in results.items():
    if not dips:
        print(f"{name}: no active source")
        continue
    best = max(dips, key=lambda d: np.abs(d.amplitude).max())
    fig = mne.viz.plot_dipole_locations(
        best,
        trans=trans,
        subject="sample",
        subjects_dir=subjects_dir,
        mode="orthoview",
        idx="amplitude",
        show=False,
    )
    fig.suptitle(f"{name}: strongest source", y=0.98)

fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
src_rr = np.concatenate([s["rr"][s["vertno"]] for s in forward["src"]]) * 1e3
views = (("x", "y", 0, 1), ("y", "z", 1, 2), ("x", "z", 0, 2))
for ax, (a, b, i, j) in zip(axes, views):
    ax.scatter(src_rr[:, i], src_rr[:, j], s=1, c="0.85")
    for (name, (dips, _, _)), marker, color in zip(
        results.items(), "o^s", ("C0", "C3", "C2")
    ):
        if not dips:
            continue
        pos = np.array([d.pos[0] for d in dips]) * 1e3
        amp = np.array([np.abs(d.amplitude).max() for d in dips])
        ax.scatter(
            pos[:, i],
            pos[:, j],
            s=30 + 170 * amp / amp.max(),
            marker=marker,
            facecolors="none",
            edgecolors=color,
            label=name,
        )
    ax.set(xlabel=f"{a} (mm)", ylabel=f"{b} (mm)", aspect="equal")
axes[0].legend(fontsize=8)
fig.suptitle("Active sources (marker size: peak amplitude)")

# %%
# Time courses
# ------------
# Amplitude of every active source (nAm); the auditory sources peak around
# 90-100 ms in both hemispheres.
fig, axes = plt.subplots(
    1, len(results), figsize=(4 * len(results), 3), sharey=True, layout="constrained"
)
for ax, (name, (dips, _, _)) in zip(np.atleast_1d(axes), results.items()):
    for dip in dips:
        ax.plot(1e3 * dip.times, 1e9 * dip.amplitude)
    ax.set(title=name, xlabel="time (ms)")
np.atleast_1d(axes)[0].set(ylabel="amplitude (nAm)")

# %%
# The certificate
# ---------------
# Every ``apply`` computes the duality gap of each time sample: a learned
# solver is never silently wrong. With ``tol=...``, samples above it are
# finished by the exact solver.
gaps = model.certificate_["rel_gap"]
print(f"relative duality gap per sample: median {np.median(gaps):.1e}")
print(f"                                 max    {gaps.max():.1e}")
