"""Benchmark: StepMxNE vs mixed_norm vs per-sample Step-LISTA on epochs.

Epochs simulated through the real 7 mm volume forward of the sample subject
(1-3 sources with evoked-like waveforms, white noise in the whitened space,
:func:`mne_lista.simulation.simulate_windows` with a seed distinct from
training) are
localized, side by side in one run, by

- ``mixed_norm``: :func:`mne.inverse_sparse.mixed_norm` looped over epochs
  (each epoch an Evoked; MNE's defaults, ``time_pca=True``); ``_pca``: the
  same with ``time_pca=--n-components`` (MNE's own cheap variant); ``_tol``:
  with ``tol=1e-6`` instead of its default 1e-4 (closer to the optimum);
- ``StepMxNE_pca``: :meth:`mne_lista.StepMxNE.apply_epochs`, the network
  alone on the ``--n-components`` leading temporal components
  (``time_pca=int``, as ``mixed_norm`` accepts); ``_mom``: the variant with
  a learned momentum per layer (``momentum=True``);
- ``StepMxNE_pca_tol`` / ``StepMxNE_tol``: with the certificate at
  mixed_norm's tolerance, the windows above it finished by the batched
  working-set solver (:func:`mne_lista.solve_mxne`), on the leading
  components / on all of them (the problem ``mixed_norm`` solves);
- ``StepLISTA``: :meth:`mne_lista.StepLISTA.apply_epochs`, one group Lasso
  per time sample (alpha in % of each epoch's alpha_max).

All with ``loose=1, depth=0.9`` and the same ``alpha``. Reported per method:
wall time per epoch (after training; training time reported apart), speed-up
over ``mixed_norm``, localization error against the simulated truth
(:func:`mne_lista.simulation.localization_error`: for each true source, the
distance to the nearest of the k strongest estimated positions by peak
amplitude, k = number of true sources; mean over sources and epochs, in mm),
its mean paired difference with ``mixed_norm`` over the same epochs, the
number of distinct active positions per epoch, and for StepMxNE the relative
duality gap of the windows (certificate).

Run ``python benchmarks/mxne.py [--quick] [--out FILE.json]`` (or
``mne-lista bench mxne``) from a source checkout.
"""

import argparse
import json
import os
import time
import warnings

import numpy as np
from _common import subset_problem_inputs

from mne_lista.simulation import localization_error, source_positions

_METHODS = (
    "mixed_norm",
    "mixed_norm_pca",
    "mixed_norm_tol",
    "StepMxNE_pca",
    "StepMxNE_mom_pca",
    "StepMxNE_pca_tol",
    "StepMxNE_tol",
    "StepLISTA",
)
# mixed_norm's tolerance (1e-4 ||M||_F^2 on its duality gap) in our units
# (gap / (1/2 ||M||_F^2))
_MNE_TOL = 2e-4


def _loc_error(stc, src, true_rr):
    """Localization error (m) of an estimate, nan when it is empty."""
    return localization_error(true_rr, *source_positions(stc, src))[0]


def run(
    *,
    n_epochs=30,
    n_times=61,
    alpha=40.0,
    n_components=5,
    n_sources=(1, 3),
    snr=(0.0, 14.0),
    fit_time=240.0,
    n_train=256,
    random_state=0,
    verbose=False,
):
    """Run the benchmark and return its figures.

    Parameters
    ----------
    n_epochs : int
        Number of simulated epochs.
    n_times : int
        Samples per epoch (600 Hz: 61 samples = 100 ms).
    alpha : float
        Regularization (% of alpha_max) for all methods.
    n_components : int
        Temporal components for the ``StepMxNE_pca`` variant.
    n_sources, snr : tuple
        Simulation ranges (see :func:`mne_lista.simulation.simulate_windows`;
        SNR in dB: (0, 14) dB is the amplitude ratio 1-5 of earlier runs).
    fit_time : float
        Training budget (s) of each network.
    n_train : int
        Number of simulated training windows of StepMxNE.
    random_state : int
        Seed.
    verbose : bool
        Verbosity of MNE and of the trainings.

    Returns
    -------
    results : dict
    """
    import mne
    import torch
    from mne.inverse_sparse import mixed_norm

    from mne_lista import StepLISTA, StepMxNE
    from mne_lista.simulation import simulate_windows

    mne.set_log_level("warning" if not verbose else "info")
    evoked, cov, fwd = subset_problem_inputs("volume")
    kw = dict(loose=1.0, depth=0.9, verbose=False)
    out = dict(
        setup=dict(
            n_epochs=n_epochs,
            n_times=n_times,
            sfreq=float(evoked.info["sfreq"]),
            alpha=alpha,
            n_components=n_components,
            n_sources=list(n_sources),
            snr=list(snr),
            forward="7 mm volume, 4157 positions, free orientation",
            torch_threads=torch.get_num_threads(),
            omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
            load_average=os.getloadavg()[0],
            fit_time_budget=fit_time,
        )
    )
    # train
    mx = StepMxNE(fwd, cov, evoked.info, **kw)
    t0 = time.perf_counter()
    mx.fit(n_train, max_time=fit_time, random_state=random_state, verbose=verbose)
    out["fit_time_StepMxNE"] = time.perf_counter() - t0
    out["steps_StepMxNE_times_L"] = (mx.net.steps * mx.problem.lipschitz).tolist()
    mom = StepMxNE(fwd, cov, evoked.info, momentum=True, **kw)
    t0 = time.perf_counter()
    mom.fit(n_train, max_time=fit_time, random_state=random_state, verbose=verbose)
    out["fit_time_StepMxNE_mom"] = time.perf_counter() - t0
    sl = StepLISTA(fwd, cov, evoked.info, **kw)
    t0 = time.perf_counter()
    sl.fit(max_time=fit_time, random_state=random_state, verbose=False)
    out["fit_time_StepLISTA"] = time.perf_counter() - t0
    # simulate epochs (held out: another seed)
    problem = mx.problem
    sim = simulate_windows(
        problem,
        n_epochs,
        n_sources=n_sources,
        n_times=n_times,
        snr=snr,
        random_state=random_state + 1000,
    )
    data = np.einsum("cn,nwt->wct", np.linalg.pinv(problem.whitener), sim["M"])
    info = mne.pick_info(
        evoked.info, [evoked.ch_names.index(c) for c in problem.ch_names]
    )
    tmin = float(sim["times"][0])
    epochs = mne.EpochsArray(data, info, tmin=tmin, verbose=False)
    rr = fwd["src"][0]["rr"]
    vert_pos = fwd["src"][0]["vertno"]
    res = {m: dict(loc_error_mm=[], n_active=[]) for m in _METHODS}

    def _record(method, stcs, elapsed):
        res[method]["time_per_epoch_s"] = elapsed / n_epochs
        for stc, pos in zip(stcs, sim["positions"]):
            true_rr = rr[vert_pos[pos]]
            res[method]["loc_error_mm"].append(
                1e3 * _loc_error(stc, fwd["src"], true_rr)
            )
            res[method]["n_active"].append(len(stc.vertices[0]))

    # mixed_norm, looped over epochs
    mn_variants = (
        ("mixed_norm", dict(time_pca=True)),
        ("mixed_norm_pca", dict(time_pca=n_components)),
        ("mixed_norm_tol", dict(time_pca=True, tol=1e-6)),
    )
    for name, kw_mn in mn_variants:
        stcs, t0 = [], time.perf_counter()
        for k in range(n_epochs):
            ev = mne.EvokedArray(data[k], info, tmin=tmin, verbose=False)
            stcs.append(mixed_norm(ev, fwd, cov, alpha=alpha, **kw_mn, **kw))
        _record(name, stcs, time.perf_counter() - t0)
    # StepMxNE: the network alone, and certified at mixed_norm's tolerance
    variants = (
        ("StepMxNE_pca", mx, n_components, None),
        ("StepMxNE_mom_pca", mom, n_components, None),
        ("StepMxNE_pca_tol", mx, n_components, _MNE_TOL),
        ("StepMxNE_tol", mx, True, _MNE_TOL),
    )
    for name, model, tp, tol in variants:
        with mne.utils.use_log_level("error"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # debiasing skipped (unconverged)
            kw_apply = dict(time_pca=tp, tol=tol, verbose=False)
            model.apply_epochs(epochs[:1], alpha, **kw_apply)  # warm-up
            t0 = time.perf_counter()
            stcs = model.apply_epochs(epochs, alpha, **kw_apply)
        _record(name, stcs, time.perf_counter() - t0)
        gaps = model.certificate_["rel_gap"]
        res[name]["rel_gap_median"] = float(np.median(gaps))
        res[name]["rel_gap_max"] = float(np.max(gaps))
        res[name]["n_resolved"] = int(model.certificate_["n_resolved"])
    # per-sample Step-LISTA
    t0 = time.perf_counter()
    with mne.utils.use_log_level("error"):
        stcs = sl.apply_epochs(epochs, alpha, verbose=False)
    _record("StepLISTA", stcs, time.perf_counter() - t0)
    t_ref = res["mixed_norm"]["time_per_epoch_s"]
    for m in _METHODS:
        r = res[m]
        r["speedup_vs_mixed_norm"] = t_ref / r["time_per_epoch_s"]
        err = np.array(r["loc_error_mm"], dtype=float)
        r["loc_error_mm_mean"] = (
            float(np.nanmean(err)) if np.isfinite(err).any() else None
        )
        r["loc_error_mm_median"] = (
            float(np.nanmedian(err)) if np.isfinite(err).any() else None
        )
        r["n_empty"] = int(np.isnan(err).sum())
        ref = np.array(res["mixed_norm"]["loc_error_mm"], dtype=float)
        r["loc_error_mm_paired_diff_vs_mixed_norm"] = float(np.nanmean(err - ref))
        r["n_active_mean"] = float(np.mean(r["n_active"]))
    out["results"] = res
    return out


def _nan(value):
    return float("nan") if value is None else value


def _table(out):
    lines = [
        f"{'method':<18}{'s/epoch':>10}{'speed-up':>10}{'loc err mm':>12}"
        f"{'median':>8}{'vs MxNE':>9}{'#active':>9}{'empty':>7}{'rel gap':>10}"
    ]
    for m, r in out["results"].items():
        gap = r.get("rel_gap_median")
        lines.append(
            f"{m:<18}{r['time_per_epoch_s']:>10.3f}{r['speedup_vs_mixed_norm']:>10.1f}"
            f"{_nan(r['loc_error_mm_mean']):>12.1f}"
            f"{_nan(r['loc_error_mm_median']):>8.1f}"
            f"{r['loc_error_mm_paired_diff_vs_mixed_norm']:>+9.1f}"
            f"{r['n_active_mean']:>9.1f}{r['n_empty']:>7d}"
            + (f"{gap:>10.2e}" if gap is not None else f"{'-':>10}")
        )
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast run")
    parser.add_argument("--out", default="bench_mxne.json", help="JSON output")
    parser.add_argument("--n-epochs", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=40.0)
    parser.add_argument("--n-components", type=int, default=5)
    parser.add_argument("--fit-time", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (set OMP_NUM_THREADS too, before starting, for numpy)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    quick = args.quick
    n_epochs = args.n_epochs or (6 if quick else 30)
    fit_time = args.fit_time or (45.0 if quick else 240.0)
    out = run(
        n_epochs=n_epochs,
        alpha=args.alpha,
        n_components=args.n_components,
        fit_time=fit_time,
        n_train=64 if quick else 256,
        random_state=args.seed,
    )
    print(_table(out))
    print(
        f"training: StepMxNE {out['fit_time_StepMxNE']:.0f} s, "
        f"StepMxNE (momentum) {out['fit_time_StepMxNE_mom']:.0f} s, "
        f"StepLISTA {out['fit_time_StepLISTA']:.0f} s"
    )
    with open(args.out, "w") as fid:
        json.dump(out, fid, indent=1)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
