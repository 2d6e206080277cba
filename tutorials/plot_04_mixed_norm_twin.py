"""
.. _tut-mxne-twin:

=====================================================
StepMxNE: a fast, certified twin of ``mixed_norm``
=====================================================

:func:`mne.inverse_sparse.mixed_norm` (MxNE) estimates one sparse set of
active sources for a whole time window: the L21 mixed-norm problem, rows
grouped over orientations and time. :class:`mne_lista.StepMxNE` solves the
same problem (same whitened, depth-weighted gain, ``alpha`` in % of
alpha_max, debiasing, same output classes) in two ways:

- ``tol=None``: Step-LISTA unrolled on the L21 problem, one learned step
  per layer; fast, approximate, its duality gap reported per window;
- ``tol=2e-4`` (``mixed_norm``'s own tolerance): solved exactly, to that
  relative duality gap, by a working-set block coordinate descent batched
  over windows. The preparation of the gain is done once, when the model is
  built, not at every call: that, and the batching, is where the speed comes
  from on many epochs.

Here we compare both with ``mixed_norm`` on an auditory evoked response and
on many epochs. With the full ``sample`` dataset on disk the data are real;
offline, with the subset named by ``MNE_LISTA_DATA``, the epochs are
**simulated** (the real evoked response plus noise drawn from the real noise
covariance). Set ``MNE_LISTA_QUICK=1`` for a fast, rough run.
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
from mne.inverse_sparse import mixed_norm

import mne_lista
from mne_lista.datasets import make_subset_forward, read_subset

quick = os.environ.get("MNE_LISTA_QUICK", "0") not in ("", "0")

# %%
# Data and forward model
# ----------------------
meg_path = Path(mne.datasets.sample.data_path(download=False)) / "MEG" / "sample"
ave_fname = meg_path / "sample_audvis-ave.fif"
if ave_fname.is_file():
    evoked = mne.read_evokeds(ave_fname, condition="Right Auditory").pick("meg")
    evoked.apply_baseline((None, 0))
    noise_cov = mne.read_cov(meg_path / "sample_audvis-cov.fif")
    forward = mne.read_forward_solution(meg_path / "sample_audvis-meg-oct-6-fwd.fif")
else:
    evoked, noise_cov = read_subset("Right Auditory")
    forward = make_subset_forward(evoked.info, kind="volume", pos=7.0)
evoked = evoked.crop(0.05, 0.15)
kw = dict(loose="auto", depth=0.9)
alpha = 40.0

# %%
# Build (and train only if needed)
# --------------------------------
# The model prepares the problem once (whitening, depth weighting). Its
# network starts from the pretrained steps shipped with the package when
# they are safe on this forward model (checked on simulated windows at
# construction, ``model.pretrained``); otherwise it starts as ISTA and its
# steps are trained on simulated windows through this forward model.
model = mne_lista.StepMxNE(forward, noise_cov, evoked.info, **kw)
t0 = time.perf_counter()
if quick and not model.pretrained:
    model.fit(n_windows=8, n_val=4, n_times=20, n_components=2, n_epochs=1)
elif not model.pretrained:
    model.fit(random_state=0, max_time=90)
print(f"{model!r}: pretrained={model.pretrained}, {time.perf_counter() - t0:.0f} s")

# %%
# One evoked response
# -------------------
# The network alone is fast but leaves many weak spurious sources; with
# ``tol`` the estimate is certified and matches ``mixed_norm``'s.
results = {}
t0 = time.perf_counter()
results["mixed_norm"] = mixed_norm(evoked, forward, noise_cov, alpha=alpha, **kw)
times = {"mixed_norm": time.perf_counter() - t0}
for name, tol in (("StepMxNE (network)", None), ("StepMxNE (tol=2e-4)", 2e-4)):
    t0 = time.perf_counter()
    results[name] = model.apply(evoked, alpha, tol=tol)
    times[name] = time.perf_counter() - t0
    gap = model.certificate_["rel_gap"][0]
    print(f"{name}: relative duality gap {gap:.1e}")

src = forward["src"]


def strongest(stc):
    """Position (m) of the strongest source of each hemisphere."""
    if isinstance(stc, mne.VolSourceEstimate):
        rr = src[0]["rr"][stc.vertices[0]]
    else:  # surface: both hemispheres
        rr = np.concatenate([s["rr"][v] for s, v in zip(src, stc.vertices)])
    amp = np.linalg.norm(stc.data, axis=1)
    return {
        hemi: rr[np.flatnonzero(sel)[np.argmax(amp[sel])]]
        for hemi, sel in (("lh", rr[:, 0] < 0), ("rh", rr[:, 0] > 0))
        if sel.any()
    }


ref = strongest(results["mixed_norm"])
for name, stc in results.items():
    peaks = strongest(stc)
    dist = {h: 1e3 * np.linalg.norm(peaks[h] - ref[h]) for h in ref if h in peaks}
    print(
        f"{name:<22} {1e3 * times[name]:8.1f} ms, {len(stc.data):4d} active, "
        "strongest source vs mixed_norm's: "
        + ", ".join(f"{h} {d:.0f} mm" for h, d in dist.items())
    )

# %%
# Many epochs
# -----------
# ``apply_epochs`` solves all epochs in batches. ``time_pca=5`` keeps the 5
# leading temporal components of each epoch, as ``mixed_norm`` can; it
# barely changes the estimate and makes each problem 10x smaller.
n_epochs = 6 if quick else 60
cov_data = mne.pick_channels_cov(noise_cov, evoked.ch_names, ordered=True).data
eigval, eigvec = np.linalg.eigh(cov_data)
colour = eigvec * np.sqrt(np.clip(eigval, 0, None))
rng = np.random.default_rng(0)
noise = colour @ rng.standard_normal((n_epochs, *evoked.data.shape))
epochs = mne.EpochsArray(
    evoked.data[np.newaxis] + noise / np.sqrt(10.0),  # a 10-trial average each
    evoked.info,
    tmin=evoked.times[0],
)
t0 = time.perf_counter()
stcs = model.apply_epochs(epochs, alpha, tol=2e-4, time_pca=5)
t_model = (time.perf_counter() - t0) / n_epochs
n_ref = 2 if quick else 5
t0 = time.perf_counter()
stcs_mne = [
    mixed_norm(epochs[k].average(), forward, noise_cov, alpha=alpha, **kw)
    for k in range(n_ref)
]
t_mne = (time.perf_counter() - t0) / n_ref
print(
    f"StepMxNE: {1e3 * t_model:.1f} ms per epoch (certified, max relative gap "
    f"{model.certificate_['rel_gap'].max():.1e}); mixed_norm: "
    f"{1e3 * t_mne:.0f} ms per epoch; speed-up {t_mne / t_model:.0f}x"
)


def positions(stc):
    """The active source positions, as (source space, vertex) pairs."""
    return {(k, v) for k, verts in enumerate(stc.vertices) for v in verts}


same = [
    len(positions(s) & positions(r)) / max(len(positions(r)), 1)
    for s, r in zip(stcs, stcs_mne)
]
print(f"share of mixed_norm's active positions found: {np.mean(same):.0%}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
axes[0].bar(["StepMxNE\n(tol=2e-4)", "mixed_norm"], [1e3 * t_model, 1e3 * t_mne])
axes[0].set(ylabel="ms per epoch", yscale="log", title="Time")
axes[1].hist([len(s.data) for s in stcs], bins=np.arange(0.5, 15.5), rwidth=0.8)
axes[1].set(xlabel="active sources per epoch", ylabel="epochs", title="Sparsity")
plt.show()
