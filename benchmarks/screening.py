"""Benchmark: the network as a Gap Safe front end of the certified solves.

Simulated single-trial epochs on the real 7 mm volume forward of the sample
subject (those of ``benchmarks/epochs.py``: two sources with evoked-like
waveforms plus noise of the real covariance; loose=1, depth=0.9), localized
per sample at ``alpha`` % of each epoch's alpha_max and certified to a
relative duality gap ``--tol`` (default 1e-6) for every sample:

- ``StepLISTA`` (briefly trained with ``fit(n_samples, n_epochs)``, one per
  layer count ``T`` of ``--layers``): the path of
  :meth:`mne_lista.StepLISTA.apply` with ``tol``, timed piece by piece:
  the network, the screening (the certificate's product ``G^T R`` gives the
  duality gap and the Gap Safe rule), the exact finish of the samples above
  ``tol`` (batched working sets, restricted to the survivors), and the same
  finish without screening; reported: the fraction of positions proven
  inactive (all samples, and the samples sent to the exact finish), the
  median relative gap of the network, the time split, the ratio of the
  certified time to the network alone, and the whole ``_solve_batch``
  (end to end, with screening);
- ``solve_lasso``: the certified per-sample solver alone (celer + Newton,
  cold), timed on ``--n-lasso`` samples and extrapolated to all of them;
- ``StepMxNE``: windows of :func:`mne_lista.simulation.simulate_windows`
  (``--n-windows`` of 30 samples, all temporal components) solved with
  ``tol`` by :meth:`mne_lista.StepMxNE._solve_windows`, with the network in
  front (screening + first working set) and without it (the exact solver
  from zero), time per window.

``--model FILE`` replaces the brief fits by a saved (e.g. fully trained)
StepLISTA model: how much the rule screens depends on how close the network
gets to the optimum.

Run ``python benchmarks/screening.py [--quick] [--out FILE.json]`` (or
``mne-lista bench screening``) from a source checkout.
"""

import argparse
import json
import time

import numpy as np
import torch
from _common import subset_problem_inputs
from epochs import simulate_epochs

from mne_lista import StepLISTA, StepMxNE, _l21, read_step_lista, solve_lasso
from mne_lista._screening import gap_safe_screen


def _timed(fun, *args, **kwargs):
    t0 = time.perf_counter()
    out = fun(*args, **kwargs)
    return out, time.perf_counter() - t0


def _per_sample(model, M, alpha):
    """(M_t (n, B, 1), lam_t (B,)) of the samples below their alpha_max, as
    StepLISTA._solve_batch builds them, and the number of samples."""
    problem = model.problem
    G = problem.gain_tensor("cpu", torch.float64)
    n, n_epochs, n_times = M.shape
    Ms = M.reshape(n, n_epochs * n_times, 1)
    a_sample = _l21.alpha_max(G, Ms, problem.n_orient)
    a_max = a_sample.reshape(n_epochs, n_times).amax(1)
    lam = (alpha / 100.0 * a_max).repeat_interleave(n_times)
    todo = torch.nonzero(a_sample > lam).flatten()
    return Ms[:, todo], lam[todo], Ms.shape[1]


def bench_step_lista(model, M, alpha, tol, n_repeat=2):
    """Time split of the certified per-sample path of one model."""
    problem, no = model.problem, model.problem.n_orient
    G = problem.gain_tensor("cpu", torch.float64)
    lip = problem.position_lipschitz("cpu", torch.float64)
    M_t, lam_t, n_all = _per_sample(model, M, alpha)
    X, t_net = _timed(model._run_net, M_t, lam_t)
    (keep, rel), t_screen = _timed(gap_safe_screen, G, M_t, X, lam_t, no, lip)
    bad = torch.nonzero(~(rel <= tol)).flatten()
    out = dict(
        n_layers=model.n_layers,
        n_samples=n_all,
        n_below_alpha_max=M_t.shape[1],
        n_exact=len(bad),
        net_median_rel_gap=float(rel.median()),
        screened_all=float(1.0 - keep.double().mean()),
        screened_exact=float(1.0 - keep[:, bad].double().mean()) if len(bad) else 1.0,
        t_net=t_net,
        t_screen=t_screen,
    )
    args = (M_t[:, bad], lam_t[bad], X[:, bad], tol)
    # best of n_repeat, alternated (the first call of a run pays allocations)
    out["t_exact"] = out["t_exact_no_screen"] = np.inf
    for _ in range(n_repeat):
        Z0, t = _timed(model._solve_exact, *args)
        out["t_exact_no_screen"] = min(out["t_exact_no_screen"], t)
        Z, t = _timed(model._solve_exact, *args, keep=keep[:, bad])
        out["t_exact"] = min(out["t_exact"], t)
    rels = [_l21.relative_gap(G, M_t[:, bad], Zx, lam_t[bad], no) for Zx in (Z, Z0)]
    out["max_rel_gap"] = float(torch.cat([rel[~(rel > tol)], rels[0]]).max())
    out["max_rel_gap_no_screen"] = float(rels[1].max()) if len(bad) else 0.0
    same = _l21.group_sq_norms(Z, no) > 0
    out["same_support"] = bool(torch.equal(same, _l21.group_sq_norms(Z0, no) > 0))
    out["t_certified"] = t_net + t_screen + out["t_exact"]
    out["ratio_to_net"] = out["t_certified"] / t_net
    _, out["t_end_to_end"] = _timed(model._solve_batch, M, alpha, tol=tol)
    return out


def bench_solve_lasso(model, M, alpha, tol, n_lasso, seed):
    """solve_lasso alone on a random subset of the samples, extrapolated."""
    M_t, lam_t, _ = _per_sample(model, M, alpha)
    rng = np.random.default_rng(seed)
    n = M_t.shape[1]
    sel = np.sort(rng.choice(n, min(n_lasso, n), replace=False))
    _, t = _timed(
        solve_lasso,
        model.problem,
        M_t[:, sel, 0].numpy(),
        lam_t[sel].numpy(),
        tol=tol,
        verbose=False,
    )
    return dict(n_timed=len(sel), t_per_sample=t / len(sel), t_all=t / len(sel) * n)


def bench_mxne(model, M, alpha, tol):
    """StepMxNE with tol: the network in front (screening) or not."""
    out = {}
    for screen in (False, True):
        model._screen = screen
        (X, _, _, cert), t = _timed(model._solve_windows, M, alpha, tol=tol)
        key = "front" if screen else "no_front"
        out[f"t_per_window_{key}"] = t / M.shape[1]
        out[f"max_rel_gap_{key}"] = float(np.max(cert["rel_gap"]))
        out[f"support_{key}"] = _l21.group_sq_norms(X, model.problem.n_orient) > 0
    model._screen = True
    out["same_support"] = bool(
        torch.equal(out["support_front"], out["support_no_front"])
    )
    del out["support_front"], out["support_no_front"]
    out["speedup_front"] = out["t_per_window_no_front"] / out["t_per_window_front"]
    return out


def run(
    *,
    n_epochs=4,
    layers=(5, 10, 20),
    alpha=40.0,
    tol=1e-6,
    fit_samples=256,
    fit_epochs=4,
    n_lasso=60,
    n_windows=16,
    model=None,
    seed=0,
):
    """Run the benchmark; returns a dict of figures (see the module doc)."""
    from mne_lista.simulation import simulate_windows

    torch.manual_seed(seed)
    evoked, cov, fwd = subset_problem_inputs("volume")
    kw = dict(loose=1.0, depth=0.9, verbose=False)
    res = dict(alpha=alpha, tol=tol, n_epochs=n_epochs, step_lista=[])
    models = {}
    if model is not None:  # a saved model in place of the brief fits
        est = read_step_lista(model, fwd, cov, evoked.info, verbose=False)
        models[est.n_layers] = (est, 0.0)
        layers = (est.n_layers,)
    for n_layers in () if model is not None else layers:
        model = StepLISTA(fwd, cov, evoked.info, n_layers=n_layers, **kw)
        _, t_fit = _timed(
            model.fit,
            n_samples=fit_samples,
            n_epochs=fit_epochs,
            random_state=seed,
            verbose=False,
        )
        models[n_layers] = (model, t_fit)
    problem = models[layers[0]][0].problem
    res["gain_shape"] = list(problem.gain.shape)
    epochs, _, _ = simulate_epochs(problem, evoked, cov, n_epochs, seed=seed + 1)
    M = torch.as_tensor(problem.whiten(epochs)).permute(1, 0, 2).contiguous()
    # compile the block coordinate descent kernel before timing anything
    model = models[layers[0]][0]
    M_t, lam_t, _ = _per_sample(model, M[:, :1, :4], alpha)
    model._solve_exact(
        M_t, lam_t, torch.zeros_like(M_t[:1]).expand(problem.n_sources, -1, -1), tol
    )
    for model, t_fit in models.values():
        row = bench_step_lista(model, M, alpha, tol)
        row["t_fit"] = t_fit
        res["step_lista"].append(row)
    res["solve_lasso"] = bench_solve_lasso(
        models[layers[0]][0], M, alpha, tol, n_lasso, seed
    )
    if not n_windows:
        return res
    mx = StepMxNE(fwd, cov, evoked.info, n_layers=max(layers), **kw)
    _, res["t_fit_mxne"] = _timed(
        mx.fit, n_windows=4 * n_windows, n_epochs=fit_epochs, random_state=seed
    )
    sim = simulate_windows(mx.problem, n_windows, n_times=30, random_state=seed + 2)
    # the simulated windows are whitened already: as the glue passes them
    Mw = torch.as_tensor(sim["M"], dtype=torch.float64)
    res["mxne"] = bench_mxne(mx, Mw, alpha, tol)
    res["mxne"].update(n_windows=n_windows, n_layers=max(layers))
    return res


def format_table(res):
    """The figures as text."""
    lasso = res["solve_lasso"]
    lines = [
        f"7 mm volume, gain {res['gain_shape'][0]} x {res['gain_shape'][1]}, "
        f"alpha={res['alpha']:g}%, tol={res['tol']:g}, {res['n_epochs']} epoch(s)",
        "StepLISTA + Gap Safe screening + batched exact finish (times in s):",
        f"{'T':>3} {'gap50':>8} {'scr.all':>7} {'scr.ex':>6} {'n_ex':>5} "
        f"{'net':>6} {'screen':>6} {'exact':>6} {'ex.noscr':>8} {'cert.':>6} "
        f"{'x net':>6} {'e2e':>6} {'vs lasso':>8} {'max gap':>8}",
    ]
    for r in res["step_lista"]:
        lines.append(
            f"{r['n_layers']:>3} {r['net_median_rel_gap']:>8.1e} "
            f"{r['screened_all']:>7.1%} {r['screened_exact']:>6.1%} "
            f"{r['n_exact']:>5} {r['t_net']:>6.2f} {r['t_screen']:>6.2f} "
            f"{r['t_exact']:>6.2f} {r['t_exact_no_screen']:>8.2f} "
            f"{r['t_certified']:>6.2f} {r['ratio_to_net']:>6.2f} "
            f"{r['t_end_to_end']:>6.2f} {lasso['t_all'] / r['t_certified']:>7.1f}x "
            f"{r['max_rel_gap']:>8.1e}"
        )
    lines.append(
        f"solve_lasso alone: {1e3 * lasso['t_per_sample']:.1f} ms/sample "
        f"({lasso['n_timed']} timed) -> {lasso['t_all']:.2f} s for all samples"
    )
    mx = res.get("mxne")
    if mx is None:
        return "\n".join(lines)
    lines.append(
        f"StepMxNE tol, {mx['n_windows']} windows of 30 samples, T={mx['n_layers']}: "
        f"{1e3 * mx['t_per_window_front']:.1f} ms/window with the network in "
        f"front, {1e3 * mx['t_per_window_no_front']:.1f} without "
        f"(x{mx['speedup_front']:.2f}); max gaps {mx['max_rel_gap_front']:.1e} / "
        f"{mx['max_rel_gap_no_front']:.1e}, same support: {mx['same_support']}"
    )
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast run")
    parser.add_argument("--out", default="bench_screening.json", help="JSON output")
    parser.add_argument("--n-epochs", type=int, default=None)
    parser.add_argument("--layers", default="5,10,20", help="layer counts")
    parser.add_argument("--alpha", type=float, default=40.0)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--fit-samples", type=int, default=None)
    parser.add_argument("--fit-epochs", type=int, default=None)
    parser.add_argument("--n-lasso", type=int, default=None)
    parser.add_argument("--n-windows", type=int, default=None)
    parser.add_argument(
        "--model", default=None, help="a saved StepLISTA model (no brief fits)"
    )
    parser.add_argument("--no-mxne", action="store_true", help="skip StepMxNE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    res = run(
        n_epochs=args.n_epochs or (1 if quick else 10),
        layers=tuple(int(v) for v in args.layers.split(",")),
        alpha=args.alpha,
        tol=args.tol,
        fit_samples=args.fit_samples or (128 if quick else 1024),
        fit_epochs=args.fit_epochs or (2 if quick else 12),
        n_lasso=args.n_lasso or (30 if quick else 200),
        n_windows=0 if args.no_mxne else args.n_windows or (8 if quick else 64),
        model=args.model,
        seed=args.seed,
    )
    print(format_table(res))
    with open(args.out, "w") as fid:
        json.dump(res, fid, indent=1)
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
