"""Benchmark the batched classical solvers on the 7 mm volume forward.

Time per 1000 (group) Lasso problems for ISTA and FISTA (``n_iter``
iterations, float32 and float64) and for the certified reference
:func:`mne_lista.solve_lasso`, with the GFLOP/s achieved by ISTA/FISTA
(``4 n m B`` flops per iteration) beside a plain torch GEMM of the same
shapes measured in the same run, and the relative duality gap they reach.

The data come from the library's simulator,
:func:`mne_lista.simulation.simulate_data`: 1-4 point sources per problem
(``extent=0``), SNR 9.5 dB (``||G z|| = 3 ||noise||``), ``lam / alpha_max``
log-uniform in [0.2, 0.5].

Run ``python benchmarks/solvers.py --help`` (or ``mne-lista bench solvers``)
from a source checkout.
"""

import argparse
import json
import time
from functools import partial

import numpy as np
import torch
from _common import lasso_objective, subset_problem_inputs
from mne.utils import logger, verbose

from mne_lista import fista, ista, prepare_problem, relative_gap, solve_lasso
from mne_lista.simulation import simulate_data


def _volume_problem():
    evoked, cov, fwd = subset_problem_inputs("volume")
    return prepare_problem(fwd, cov, evoked.info, loose=1.0, depth=0.9, verbose=False)


def simulate(
    problem, n_problems, *, n_active=(1, 4), snr=9.5, lam_range=(0.2, 0.5), seed=0
):
    """The benchmark's problems, from :func:`mne_lista.simulation.simulate_data`.

    Point sources (``extent=0``), ``n_active`` positions per column, SNR
    ``snr`` dB, ``lam / alpha_max`` log-uniform in ``lam_range``.

    Returns
    -------
    X : array, shape (n, n_problems)
    lam : array, shape (n_problems,)
    """
    return simulate_data(
        problem,
        n_problems,
        n_sources=n_active,
        extent=0.0,
        snr=snr,
        lam_range=lam_range,
        random_state=seed,
    )


def _gemm_pair(D, Z, R):
    """The two products of one ISTA iteration: R = D @ Z, then D.T @ R."""
    torch.matmul(D, Z, out=R)
    return D.T @ R


def _timeit(func, n_repeat=1):
    best = np.inf
    out = None
    for _ in range(n_repeat):
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    return best, out


@verbose
def run(
    n_problems=1000,
    n_iter=100,
    *,
    n_ref=100,
    dtypes=("float32", "float64"),
    n_gemm=10,
    n_jobs=None,
    seed=0,
    problem=None,
    verbose=None,
):
    """Run the benchmark.

    Parameters
    ----------
    n_problems : int
        Number of Lasso problems (columns) solved at once by ISTA/FISTA.
    n_iter : int
        Iterations of ISTA and FISTA.
    n_ref : int
        Number of problems solved by the reference (its time is extrapolated
        to ``n_problems`` and to 1000 problems).
    dtypes : tuple of str
        Precisions for ISTA/FISTA ('float32', 'float64').
    n_gemm : int
        Repetitions of the plain GEMM pair (best time is kept).
    n_jobs : int | None
        Processes for the reference.
    seed : int
        Random seed of the simulation.
    problem : LassoProblem | None
        The problem (default: the 7 mm volume forward of the sample subset).
    %(verbose)s

    Returns
    -------
    results : dict
    """
    t0 = time.perf_counter()
    if problem is None:
        problem = _volume_problem()
    t_problem = time.perf_counter() - t0
    n, m, no = problem.n_channels, problem.n_sources, problem.n_orient
    X, lam = simulate(problem, n_problems, seed=seed)
    n_ref = int(min(n_ref, n_problems))
    flops_iter = 4.0 * n * m * n_problems
    res = dict(
        problem=repr(problem),
        n_channels=n,
        n_sources=m,
        n_orient=no,
        n_problems=n_problems,
        n_iter=n_iter,
        n_ref=n_ref,
        torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        lam_over_alpha_max=[0.2, 0.5],
        problem_build_s=t_problem,
        flops_per_iteration=flops_iter,
        rows=[],
    )
    logger.info(f"Reference on {n_ref} problems ...")
    t_ref, Z_ref = _timeit(
        lambda: solve_lasso(
            problem, X[:, :n_ref], lam[:n_ref], n_jobs=n_jobs, verbose=False
        )
    )
    gap_ref = relative_gap(problem, X[:, :n_ref], Z_ref, lam[:n_ref])
    f_ref = lasso_objective(problem, X[:, :n_ref], Z_ref, lam[:n_ref])
    res["rows"].append(
        dict(
            method="solve_lasso (reference)",
            dtype="float64",
            n_timed=n_ref,
            time_s=t_ref,
            time_per_1000_s=t_ref / n_ref * 1000,
            extrapolated=n_ref < 1000,
            n_jobs=n_jobs,
            certified=float(np.mean(gap_ref <= 1e-8)),
            rel_gap_median=float(np.median(gap_ref)),
            rel_gap_max=float(np.max(gap_ref)),
        )
    )
    for dt in dtypes:
        dtype = getattr(torch, dt)
        Xt = torch.as_tensor(X, dtype=dtype)
        D = problem.gain_tensor("cpu", dtype)
        gemm = partial(
            _gemm_pair, D, torch.randn((m, n_problems), dtype=dtype), Xt.clone()
        )
        gemm()  # warm up
        t_gemm, _ = _timeit(gemm, n_gemm)
        res["rows"].append(
            dict(
                method="GEMM pair (D @ Z, D.T @ R)",
                dtype=dt,
                n_timed=n_problems,
                time_s=t_gemm,
                gflops=flops_iter / t_gemm / 1e9,
            )
        )
        for name, func in (("ISTA", ista), ("FISTA", fista)):
            logger.info(f"{name} {dt} ...")
            t, Zs = _timeit(partial(func, problem, Xt, lam, n_iter))
            gap = relative_gap(problem, X, Zs.double(), lam)
            f = lasso_objective(problem, X[:, :n_ref], Zs[:, :n_ref], lam[:n_ref])
            res["rows"].append(
                dict(
                    method=f"{name} ({n_iter} it.)",
                    dtype=dt,
                    n_timed=n_problems,
                    time_s=t,
                    time_per_1000_s=t / n_problems * 1000,
                    gflops=flops_iter * n_iter / t / 1e9,
                    rel_gap_median=float(np.median(gap)),
                    rel_gap_max=float(np.max(gap)),
                    rel_subopt_median=float(np.median((f - f_ref) / f_ref)),
                )
            )
    res["total_s"] = time.perf_counter() - t0
    return res


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(res):
    """Format the results as a text table."""
    lines = [
        f"{res['problem']}, {res['n_problems']} problems, lam/alpha_max in "
        f"[0.2, 0.5], torch {res['torch_version']} ({res['torch_threads']} "
        "threads)",
        f"{'method':<28}{'dtype':<9}{'timed on':>9}{'s / 1000 pb':>13}"
        f"{'GFLOP/s':>9}{'rel. gap med':>14}{'max':>10}{'F/F*-1 med':>12}",
    ]
    for r in res["rows"]:
        per = r.get("time_per_1000_s")
        star = "*" if r.get("extrapolated") else ""
        lines.append(
            f"{r['method']:<28}{r['dtype']:<9}{r['n_timed']:>9}"
            f"{_fmt(per, '12.2f') + star if per is not None else '-':>13}"
            f"{_fmt(r.get('gflops'), '9.1f'):>9}"
            f"{_fmt(r.get('rel_gap_median'), '14.1e'):>14}"
            f"{_fmt(r.get('rel_gap_max'), '10.1e'):>10}"
            f"{_fmt(r.get('rel_subopt_median'), '12.1e'):>12}"
        )
    ref = res["rows"][0]
    lines.append(
        f"* reference timed on {ref['n_timed']} problems and extrapolated to "
        f"1000; certified (rel. gap <= 1e-8): {100 * ref['certified']:.0f}%; "
        "GEMM row: one D @ Z plus one D.T @ R (= one iteration's flops)"
        if ref["extrapolated"]
        else f"certified (rel. gap <= 1e-8): {100 * ref['certified']:.0f}%"
    )
    lines.append(f"total {res['total_s']:.1f} s")
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-problems", type=int, default=1000)
    parser.add_argument("--n-iter", type=int, default=100)
    parser.add_argument("--n-ref", type=int, default=100)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="100 problems, 20 iterations, 10 ref."
    )
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_problems, args.n_iter = min(args.n_problems, 100), min(args.n_iter, 20)
        args.n_ref = min(args.n_ref, 10)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = run(
        args.n_problems,
        args.n_iter,
        n_ref=args.n_ref,
        dtypes=tuple(args.dtypes),
        n_jobs=args.n_jobs,
        seed=args.seed,
    )
    print(format_table(res))
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as fid:
            json.dump(res, fid, indent=1)
    return res


if __name__ == "__main__":
    main()
