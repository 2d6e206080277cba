"""Benchmark: single-trial epochs through Step-LISTA vs mixed_norm vs exact.

Simulated epochs (default 300 x 421 samples, -0.2..0.5 s at 600 Hz) on the
real 7 mm volume forward of the MNE sample subject (12471 gain columns, free
orientation, loose=1, depth=0.9): per epoch, two point sources of the
library's source sampler (:func:`mne_lista.simulation.sample_sources`:
random positions, orientations and amplitudes in [0.3, 1] x ``amplitude``),
draws kept when they fall one in each hemisphere (|x| > 2 cm), each with an
evoked-like waveform of :func:`mne_lista.simulation.waveforms` after the
stimulus (peaks or damped oscillations, latency in 0-0.4 s), pushed through
the forward's gain (Am), plus Gaussian noise of the real noise covariance
(single trial). Each method localizes every epoch at
the same ``alpha`` (in % of the epoch's alpha_max):

- ``step_lista``: :meth:`mne_lista.StepLISTA.apply_epochs` on the CPU (all
  epochs x samples through the net in chunks), trained by ``fit()`` in the
  same run (training time reported separately) or read from ``--model``;
- ``mixed_norm``: :func:`mne.inverse_sparse.mixed_norm` looped over epochs
  (each epoch as an Evoked), timed on a subset of epochs and extrapolated;
- ``exact``: the certified per-sample solver
  (:func:`mne_lista.solve_lasso`, ``tol=1e-6``) in place of the network of
  a :class:`~mne_lista.StepLISTA` (the same MNE glue, ``apply_epochs``),
  timed on a subset of epochs and extrapolated.

Reported: wall time (measured and extrapolated to all epochs), peak memory
(resident set growth during the method, sampled every 5 ms), localization
error (:func:`mne_lista.simulation.localization_error` of each epoch: for
each true source, the distance to the nearest of the two strongest, by peak
amplitude, estimated positions, averaged over the two sources; mean and
median over epochs, in mm; its spatial dispersion), Lasso problems
(samples) per second, the GFLOP/s of the network and of the whole
apply_epochs against a float32 GEMM of the same shape measured in
the same run.

Run ``python benchmarks/epochs.py --help`` (or ``mne-lista bench epochs``)
from a source checkout.
"""

import argparse
import json
import threading
import time

import numpy as np
import torch
from _common import subset_problem_inputs
from mne.utils import logger, use_log_level, verbose

from mne_lista import StepLISTA, read_step_lista, solve_lasso
from mne_lista.simulation import (
    localization_error,
    sample_sources,
    source_positions,
    waveforms,
)


class _PeakRSS:
    """Peak growth of the resident set size while in the context (bytes)."""

    def __init__(self, interval=0.005):
        self.interval = interval

    @staticmethod
    def _rss():
        import os

        with open("/proc/self/statm") as fid:
            return int(fid.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *args):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.base


def _setup(seed=0):
    return subset_problem_inputs("volume")


def _two_hemispheres(problem, n_epochs, rng):
    """Draws of 2 sources of sample_sources, one in each hemisphere."""
    rr = problem.forward["source_rr"]
    patterns, centers = [], []
    while len(patterns) < n_epochs:
        _, cen, pat = sample_sources(
            problem,
            4 * n_epochs,
            n_sources=2,
            extent=0.0,
            random_state=rng,
            return_patterns=True,
        )
        for c, pt in zip(cen, pat):
            x = np.sort(rr[c, 0])
            if x[0] < -0.02 and x[1] > 0.02 and len(patterns) < n_epochs:
                patterns.append(pt)
                centers.append(c)
    return patterns, centers


def simulate_epochs(problem, evoked, cov, n_epochs, *, amplitude=50e-9, seed=0):
    """Simulated single-trial epochs with two sources each.

    Returns
    -------
    epochs : EpochsArray
        (n_epochs, n_channels, n_times) on the model's channels.
    truth : array, shape (n_epochs, 2, 3)
        True source positions (m, head coordinates).
    snr : float
        Median over epochs of the peak whitened signal norm / sqrt(n).
    """
    import mne

    rng = np.random.default_rng(seed)
    fwd = problem.forward
    gain = fwd["sol"]["data"]  # (n_channels, 3 P), Am -> T or T/m
    rr = fwd["source_rr"]
    info = mne.pick_info(
        evoked.info, mne.pick_channels(evoked.ch_names, problem.ch_names, ordered=True)
    )
    times = evoked.times
    post = times >= 0
    C = cov.copy().pick_channels(problem.ch_names, ordered=True)["data"]
    w, V = np.linalg.eigh(C)
    noise_sqrt = V * np.sqrt(np.clip(w, 0, None))
    patterns, centers = _two_hemispheres(problem, n_epochs, rng)
    data = np.empty((n_epochs, len(problem.ch_names), len(times)))
    truth = np.empty((n_epochs, 2, 3))
    snrs = []
    for e in range(n_epochs):
        wave = np.zeros((2, len(times)))
        wave[:, post] = waveforms(2, times[post], random_state=rng)
        J = amplitude * np.asarray(patterns[e] @ wave)  # (3 P, T), Am
        truth[e] = rr[centers[e]]
        signal = gain @ J
        noise = noise_sqrt @ rng.standard_normal(signal.shape)
        data[e] = signal + noise
        ws = problem.whitener @ signal
        snrs.append(np.linalg.norm(ws, axis=0).max() / np.sqrt(ws.shape[0]))
    epochs = mne.EpochsArray(data, info, tmin=times[0], verbose=False)
    return epochs, truth, float(np.median(snrs))


def localization_errors(stcs, truth, src):
    """:func:`mne_lista.simulation.localization_error` of each epoch (mm).

    Returns arrays (n_epochs,) of errors and dispersions; NaN where the
    estimate is empty.
    """
    out = np.full((len(stcs), 2), np.nan)
    for e, stc in enumerate(stcs):
        out[e] = localization_error(truth[e], *source_positions(stc, src))
    return 1e3 * out[:, 0], 1e3 * out[:, 1]


def _err_summary(errors):
    err, disp = errors
    return dict(
        loc_err_mean_mm=float(np.nanmean(err)),
        loc_err_median_mm=float(np.nanmedian(err)),
        frac_within_10mm=float(np.mean(err <= 10.0)),
        dispersion_mean_mm=float(np.nanmean(disp)),
        n_empty=int(np.isnan(err).sum()),
    )


class _ExactLasso(StepLISTA):
    """StepLISTA's glue with the certified solver in place of the network."""

    tol = 1e-6

    def _run_net(self, M, lam):
        Z = solve_lasso(
            self.problem,
            M[:, :, 0].cpu().double().numpy(),
            lam.cpu().double().numpy(),
            tol=self.tol,
            verbose=False,
        )
        Z = np.asarray(Z).reshape(self.problem.n_sources, -1)
        return torch.as_tensor(Z, dtype=M.dtype, device=M.device)[:, :, None]


def gemm_gflops(n, m, B, dtype=torch.float32, n_rep=3):
    """GFLOP/s of a (m x n) @ (n x B) torch GEMM, best of n_rep."""
    A = torch.randn(m, n, dtype=dtype)
    X = torch.randn(n, B, dtype=dtype)
    best = np.inf
    for _ in range(n_rep + 1):
        t0 = time.perf_counter()
        A @ X
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n * m * B / best / 1e9


@verbose
def run(
    n_epochs=300,
    *,
    alpha=40.0,
    n_layers=20,
    adaptive=True,
    model=None,
    fit_time=None,
    n_mxne=10,
    n_exact=2,
    batch_size=None,
    amplitude=50e-9,
    seed=0,
    verbose=None,
):
    """Run the benchmark; returns a dict of figures (see module docstring).

    Parameters
    ----------
    n_epochs : int
        Number of simulated epochs for Step-LISTA.
    alpha : float
        Regularization (%% of alpha_max) for every method.
    n_layers : int
        Layers of the network trained here (ignored with ``model``).
    adaptive : bool
        The network trained here: adaptive (default of
        :class:`mne_lista.StepLISTA`) or plain Step-LISTA (ignored with
        ``model``).
    model : path-like | None
        A saved model (:func:`mne_lista.read_step_lista`); None trains one.
    fit_time : float | None
        Wall-clock budget (s) of the training (None: ``fit()`` defaults).
    n_mxne, n_exact : int
        Numbers of epochs timed for mixed_norm and the exact solver (their
        times are extrapolated to ``n_epochs``).
    batch_size : int | None
        Columns per chunk of apply_epochs (None: its memory budget).
    amplitude : float
        Peak source amplitude (Am).
    seed : int
        Seed of the simulation and training.
    %(verbose)s
    """
    import mne
    from mne.inverse_sparse import mixed_norm

    t0 = time.perf_counter()
    evoked, cov, fwd = _setup(seed)
    if model is None:
        est = StepLISTA(
            fwd,
            cov,
            evoked.info,
            n_layers=n_layers,
            loose=1.0,
            depth=0.9,
            adaptive=adaptive,
        )
        t_fit = time.perf_counter()
        est.fit(random_state=seed, max_time=fit_time)
        t_fit = time.perf_counter() - t_fit
    else:
        est = read_step_lista(model, fwd, cov, evoked.info)
        t_fit = None
    problem = est.problem
    logger.info(f"setup {time.perf_counter() - t0:.1f} s, fit {t_fit} s")
    epochs, truth, snr = simulate_epochs(
        problem, evoked, cov, n_epochs, amplitude=amplitude, seed=seed + 1
    )
    n_times = len(epochs.times)
    n, m = problem.gain.shape
    res = dict(
        n_epochs=n_epochs,
        n_times=n_times,
        gain_shape=[n, m],
        alpha=alpha,
        n_layers=est.n_layers,
        adaptive=bool(est.adaptive),
        fit_time_s=t_fit,
        lam_range=list(getattr(est, "lam_range", []) or []),
        amplitude=amplitude,
        median_snr=snr,
        torch_threads=torch.get_num_threads(),
        methods={},
    )
    # --- Step-LISTA: all epochs -------------------------------------------
    with _PeakRSS() as mem, use_log_level("warning"):
        t = time.perf_counter()
        stcs = est.apply_epochs(epochs, alpha, batch_size=batch_size)
        t = time.perf_counter() - t
    cert = est.certificate_
    n_cols = n_epochs * n_times
    # columns of one chunk of the net: batch_size epochs (default: 8)
    bs = min(n_cols, (8 if batch_size is None else batch_size) * n_times)
    peak32 = gemm_gflops(n, m, min(bs, n_cols))
    net_flops = 4.0 * n * m * n_cols * est.n_layers
    cert_flops = 6.0 * n * m * n_cols  # alpha_max + D Z + D^T R (float64)
    # the net alone on one chunk, to separate it from the glue
    X = torch.randn(n, bs, dtype=est.net.G.dtype)
    with torch.no_grad():
        t_net = time.perf_counter()
        est.net(X, 0.5)
        t_net = time.perf_counter() - t_net
    net_rate = 4.0 * n * m * X.shape[1] * est.n_layers / t_net / 1e9
    res["gemm_float32_gflops"] = peak32
    res["batch_size"] = batch_size
    res["net_chunk_columns"] = bs
    res["methods"]["step_lista"] = dict(
        n_epochs_timed=n_epochs,
        time_s=t,
        time_all_epochs_s=t,
        time_per_epoch_s=t / n_epochs,
        problems_per_s=n_cols / t,
        peak_mem_mb=mem.delta / 2**20,
        gflops_apply=(net_flops + cert_flops) / t / 1e9,
        frac_gemm_peak_apply=(net_flops + cert_flops) / t / 1e9 / peak32,
        gflops_net=net_rate,
        frac_gemm_peak_net=net_rate / peak32,
        median_rel_gap=float(np.median(cert["rel_gap"])),
        max_rel_gap=float(np.max(cert["rel_gap"])),
        **_err_summary(localization_errors(stcs, truth, problem.src)),
    )
    del stcs
    # --- mixed_norm on a subset -------------------------------------------
    n_mx = min(n_mxne, n_epochs)
    stcs = []
    with _PeakRSS() as mem, use_log_level("warning"):
        t = time.perf_counter()
        for e in range(n_mx):
            ev = mne.EvokedArray(
                epochs.get_data(item=e)[0], epochs.info, tmin=epochs.tmin, verbose=False
            )
            stcs.append(
                mixed_norm(
                    ev, fwd, cov, alpha=alpha, loose=1.0, depth=0.9, verbose=False
                )
            )
        t = time.perf_counter() - t
    res["methods"]["mixed_norm"] = dict(
        n_epochs_timed=n_mx,
        time_s=t,
        time_all_epochs_s=t / n_mx * n_epochs,
        time_per_epoch_s=t / n_mx,
        problems_per_s=n_mx * n_times / t,
        peak_mem_mb=mem.delta / 2**20,
        **_err_summary(localization_errors(stcs, truth, problem.src)),
    )
    # --- exact solver per sample on a subset --------------------------------
    n_ex = min(n_exact, n_epochs)
    exact = _ExactLasso(
        fwd, cov, evoked.info, n_layers=1, loose=1.0, depth=0.9, adaptive=False
    )
    with _PeakRSS() as mem, use_log_level("warning"):
        t = time.perf_counter()
        stcs = exact.apply_epochs(epochs[:n_ex], alpha, batch_size=1)
        t = time.perf_counter() - t
    res["methods"]["exact"] = dict(
        n_epochs_timed=n_ex,
        time_s=t,
        time_all_epochs_s=t / n_ex * n_epochs,
        time_per_epoch_s=t / n_ex,
        problems_per_s=n_ex * n_times / t,
        peak_mem_mb=mem.delta / 2**20,
        **_err_summary(localization_errors(stcs, truth, problem.src)),
    )
    sl = res["methods"]["step_lista"]["time_per_epoch_s"]
    for name in ("mixed_norm", "exact"):
        res["methods"][name]["step_lista_speedup"] = (
            res["methods"][name]["time_per_epoch_s"] / sl
        )
    return res


def format_table(res):
    """The figures as a text table."""
    lines = [
        f"{res['n_epochs']} epochs x {res['n_times']} samples, gain "
        f"{res['gain_shape'][0]} x {res['gain_shape'][1]}, alpha={res['alpha']}%, "
        f"Step-LISTA ({'adaptive' if res.get('adaptive', False) else 'plain'}) "
        f"{res['n_layers']} layers (fit {res['fit_time_s']} s, "
        f"lam range {res['lam_range']}), amplitude {1e9 * res['amplitude']:g} nAm, "
        f"median SNR {res['median_snr']:.2f}, "
        f"{res['torch_threads']} torch threads",
        f"float32 GEMM peak measured: {res['gemm_float32_gflops']:.1f} GFLOP/s",
        "",
        f"{'method':<11}{'timed':>6}{'s/epoch':>10}{'all (s)':>10}{'probl/s':>10}"
        f"{'mem MB':>8}{'err mean':>9}{'median':>8}{'<=10mm':>8}{'speedup':>9}",
    ]
    for name, r in res["methods"].items():
        lines.append(
            f"{name:<11}{r['n_epochs_timed']:>6}{r['time_per_epoch_s']:>10.3f}"
            f"{r['time_all_epochs_s']:>10.1f}{r['problems_per_s']:>10.0f}"
            f"{r['peak_mem_mb']:>8.0f}{r['loc_err_mean_mm']:>9.1f}"
            f"{r['loc_err_median_mm']:>8.1f}{r['frac_within_10mm']:>8.2f}"
            f"{r.get('step_lista_speedup', 1.0):>9.1f}"
        )
    s = res["methods"]["step_lista"]
    lines += [
        "",
        f"Step-LISTA: net {s['gflops_net']:.1f} GFLOP/s "
        f"({100 * s['frac_gemm_peak_net']:.0f}% of GEMM peak), whole apply_epochs "
        f"{s['gflops_apply']:.1f} GFLOP/s ({100 * s['frac_gemm_peak_apply']:.0f}%), "
        f"relative gap median {s['median_rel_gap']:.2e} max {s['max_rel_gap']:.2e}",
        "'all (s)' of mixed_norm and exact: extrapolated from 'timed' epochs; "
        "speedup = their s/epoch over Step-LISTA's.",
    ]
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20 epochs, short training, 2 mixed_norm epochs, 1 exact epoch",
    )
    parser.add_argument("--n-epochs", type=int, default=None)
    parser.add_argument("--alpha", type=float, default=40.0)
    parser.add_argument("--n-layers", type=int, default=20)
    parser.add_argument(
        "--plain", action="store_true", help="train plain Step-LISTA (not adaptive)"
    )
    parser.add_argument("--model", default=None, help="a saved Step-LISTA model")
    parser.add_argument(
        "--fit-time", type=float, default=None, help="training budget (s)"
    )
    parser.add_argument("--n-mxne", type=int, default=None)
    parser.add_argument("--n-exact", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--amplitude", type=float, default=50e-9, help="peak source amplitude (Am)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    quick = args.quick
    res = run(
        n_epochs=args.n_epochs or (20 if quick else 300),
        alpha=args.alpha,
        n_layers=args.n_layers,
        adaptive=not args.plain,
        model=args.model,
        fit_time=args.fit_time
        if args.fit_time is not None
        else (60 if quick else None),
        n_mxne=args.n_mxne or (2 if quick else 10),
        n_exact=args.n_exact or (1 if quick else 2),
        batch_size=args.batch_size,
        amplitude=args.amplitude,
        seed=args.seed,
    )
    print(format_table(res))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fid:
            fid.write(text)
    return res


if __name__ == "__main__":
    main()
