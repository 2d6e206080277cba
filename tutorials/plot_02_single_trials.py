"""
.. _tut-single-trials:

===================================================
Single-trial localization of all epochs at once
===================================================

A trained Step-LISTA network solves thousands of Lasso problems in one batch
of matrix products, so localizing every time sample of every epoch costs
about as much as one ``mixed_norm`` call on a single epoch. Here we localize
all epochs of the auditory condition of MNE's ``sample`` subject with
:meth:`mne_lista.StepLISTA.apply_epochs`, on the GPU when there is one,
compare the time per epoch with :func:`mne.inverse_sparse.mixed_norm`, and
look at where and when sources appear across trials.

With the full ``sample`` dataset on disk the epochs are real single trials
cut from the raw recording. Offline, with the small subset named by
``MNE_LISTA_DATA`` (which holds no raw recording), the single trials are
**simulated**: the real evoked response plus noise drawn from the real noise
covariance. Set ``MNE_LISTA_QUICK=1`` for a fast, rough run.
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
import torch
from mne.inverse_sparse import mixed_norm

import mne_lista
from mne_lista.datasets import make_subset_forward, read_subset

quick = os.environ.get("MNE_LISTA_QUICK", "0") not in ("", "0")
device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"Running the network on {device}")

# %%
# Epochs: real single trials (full dataset) or simulated ones (subset)
# --------------------------------------------------------------------
meg_path = Path(mne.datasets.sample.data_path(download=False)) / "MEG" / "sample"
raw_fname = meg_path / "sample_audvis_filt-0-40_raw.fif"
if raw_fname.is_file():
    data = "full sample dataset, real single trials"
    raw = mne.io.read_raw_fif(raw_fname).pick(["meg", "eog", "stim"])
    events = mne.find_events(raw, stim_channel="STI 014")
    epochs = mne.Epochs(
        raw,
        events,
        event_id={"auditory/left": 1},
        tmin=-0.2,
        tmax=0.5,
        baseline=(None, 0),
        reject=dict(grad=4000e-13, mag=4e-12, eog=150e-6),
        preload=True,
    ).pick("meg")
    noise_cov = mne.read_cov(meg_path / "sample_audvis-cov.fif")
    forward = mne.read_forward_solution(meg_path / "sample_audvis-meg-oct-6-fwd.fif")
else:
    data = "offline subset, SIMULATED single trials"
    evoked, noise_cov = read_subset("Left Auditory")
    forward = make_subset_forward(evoked.info, kind="volume", pos=7.0)
    n_epochs = 4 if quick else 60
    # each trial: the (3-trial) average plus independent noise drawn from
    # the real noise covariance
    cov_data = mne.pick_channels_cov(noise_cov, evoked.ch_names, ordered=True).data
    eigval, eigvec = np.linalg.eigh(cov_data)
    colour = eigvec * np.sqrt(np.clip(eigval, 0, None))
    rng = np.random.default_rng(0)
    noise = colour @ rng.standard_normal(
        (n_epochs, len(evoked.ch_names), evoked.data.shape[1])
    )
    epochs = mne.EpochsArray(
        evoked.data[np.newaxis] + noise,
        evoked.info,
        tmin=evoked.times[0],
        baseline=(None, 0),
    )
print(f"{data}: {epochs}")

# %%
# The network on the forward model
# --------------------------------
# With 20 layers it starts from the pretrained steps shipped with the
# package and needs no training; ``fit()`` would refine them for this
# forward (minutes). The quick run's 5-layer network has no shipped steps:
# it gets a brief fit.
model = mne_lista.StepLISTA(
    forward, noise_cov, epochs.info, n_layers=5 if quick else 20, device=device
)
t0 = time.perf_counter()
if not model.pretrained:
    model.fit(n_samples=64, n_epochs=1, random_state=0)
print(f"pretrained={model.pretrained}, fit in {time.perf_counter() - t0:.1f} s")

# %%
# All epochs x time samples in one go
# -----------------------------------
# ``apply_epochs`` pushes the samples of all epochs through the network in
# chunks of bounded memory (``batch_size`` or ``max_memory``), with a
# progress bar; each epoch gets its own alpha_max, as if it were localized
# alone.
# Debiasing (on by default, as in mixed_norm) is skipped in the quick setting.
debias = not quick
window = epochs.copy().crop(tmin=0.05 if quick else 0.0, tmax=0.15 if quick else 0.3)
alpha = 50.0
t0 = time.perf_counter()
stcs = model.apply_epochs(window, alpha, debias=debias)
t_lista = (time.perf_counter() - t0) / len(window)

# mixed_norm, one epoch at a time (on a few epochs, then per epoch)
n_ref = 1 if quick else 5
t0 = time.perf_counter()
for k in range(n_ref):
    mixed_norm(
        window[k].average(),
        forward,
        noise_cov,
        alpha=alpha,
        debias=debias,
        verbose=False,
    )
t_mxne = (time.perf_counter() - t0) / n_ref
print(f"Step-LISTA: {1e3 * t_lista:.1f} ms per epoch ({len(window)} epochs, {device})")
print(f"mixed_norm: {1e3 * t_mxne:.1f} ms per epoch (mean over {n_ref} epochs)")
print(f"speed-up: {t_mxne / t_lista:.0f}x")

fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
ax.bar(["Step-LISTA\n(all epochs)", "mixed_norm\n(per epoch)"], [t_lista, t_mxne])
ax.set(ylabel="seconds per epoch", yscale="log", title=data)

# %%
# Where and when sources appear across trials
# -------------------------------------------
# Left: summed source amplitude per trial and time (a raster). Right: how
# often each source position is active across trials, seen from above.
times = window.times
raster = np.zeros((len(stcs), len(times)))
counts = dict()
for k, stc in enumerate(stcs):
    raster[k] = np.abs(stc.data).sum(axis=0)
    for hemi, vertices in enumerate(stc.vertices):
        for v in vertices:
            counts[(hemi, v)] = counts.get((hemi, v), 0) + 1

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
im = axes[0].imshow(
    1e9 * raster,
    aspect="auto",
    origin="lower",
    extent=(1e3 * times[0], 1e3 * times[-1], 0.5, len(stcs) + 0.5),
    cmap="viridis",
)
axes[0].set(xlabel="time (ms)", ylabel="trial", title="summed amplitude (nAm)")
fig.colorbar(im, ax=axes[0])

src = forward["src"]
all_rr = np.concatenate([s["rr"][s["vertno"]] for s in src]) * 1e3
axes[1].scatter(all_rr[:, 0], all_rr[:, 1], s=1, c="0.85")
if counts:
    keys = list(counts)
    rr = np.array([src[h]["rr"][v] for h, v in keys]) * 1e3
    freq = np.array([counts[key] for key in keys]) / len(stcs)
    sc = axes[1].scatter(
        rr[:, 0], rr[:, 1], c=freq, s=4 + 40 * freq, cmap="magma_r", vmin=0
    )
    fig.colorbar(sc, ax=axes[1], label="fraction of trials active")
axes[1].set(xlabel="x (mm, left-right)", ylabel="y (mm, back-front)", aspect="equal")
axes[1].set_title("active sources across trials (top view)")

# %%
# The certificate holds the relative duality gap of every sample of every
# epoch; use ``tol=`` to have uncertified samples finished exactly.
gaps = np.asarray(model.certificate_["rel_gap"])
print(f"relative duality gaps: median {np.median(gaps):.1e}, max {np.max(gaps):.1e}")
