"""Benchmark Step-LISTA against ISTA, FISTA, LISTA and ALISTA.

On the 516-source fixed-orientation surface forward and on the 7 mm volume
forward (free orientation) of the MNE sample subset, with networks trained
by :func:`mne_lista.training.fit_network` (plain Step-LISTA:
``StepLISTA(adaptive=False).fit()`` with the default recipe, timed), this
measures on held-out test sets
the mean relative suboptimality ``(F(z_T) - F(z*)) / F(0)`` against the
number of layers/iterations ``T``, with ``z*`` from the certified reference
:func:`mne_lista.solve_lasso`:

- ``sim``: the training generator with another seed;
- ``indep``: another generator than the training one: one time sample of
  each window of :func:`mne_lista.simulation.simulate_windows` (evoked-like
  waveforms mixing 1-5 sources with their own time courses, window SNR in
  [-6, 14] dB), the sample of largest signal energy of its window, with
  ``lam / lam_max`` uniform (not log-uniform) in [0.1, 0.8];
- ``more_src``: 6 to 10 active positions (trained on 1 to 5);
- ``low_snr``: SNR in [-5, 0] dB (trained on [0, 20]);
- ``real``: time samples of the real auditory evoked responses (whitened)
  with ``lam / lam_max`` in [0.1, 0.8].

LISTA and ALISTA are the research comparators of
:mod:`mne_lista.experimental`. Optional extra rows (``--extra``,
:data:`EXTRA_KINDS`) add configurations of
:class:`mne_lista.networks.UnrolledISTA` at ``T = 20``
(:data:`EXTRA_CONFIGS`: ``safe_step`` layer/monotone, ``support_step``
support/monotone, ``backtrack_step`` support/backtracking, the network of
``StepLISTA()``, whose default is ``adaptive=True``, and ``step_fista``
layer/none with a learned momentum) trained by
:func:`mne_lista.training.fit_network` with the same recipe and seed as the
default ``fit()``, with their cost in gain products (``G x`` or ``G^T r``)
per sample and layer on each test set (``return_stats``: 2 for Step-LISTA,
ISTA and FISTA; more for the safeguarded networks, which redo the rejected
steps) and the FISTA iterations matching them at equal cost.

``--oracle`` adds a reference for per-sample step rules: the greedy step
oracle (:func:`greedy_step_oracle`), which at every layer tries
:data:`ORACLE_TRIALS` steps from ``1/L`` to ``10^4/L`` for each sample and
keeps the one with the lowest objective (one more gain product per trial).
Chosen greedily, layer by layer, it is not a bound on what a trained
network can reach (a greedy choice of one shared step per layer scores
below trained plain Step-LISTA).

It also reports the number of FISTA iterations matching Step-LISTA at
``T = 20`` (log-log interpolation of FISTA's curve), the learned steps
against ``1/L`` and the distribution of ``1/L_S`` (``L_S = ||D_S||_2^2`` on
the supports of the reference solutions), and the wall time of the default
``fit()``. Writes ``step_lista.json`` and ``step_lista.png`` into
``--out`` (the published run is in ``docs/bench/``).

Run ``python benchmarks/step_lista.py --help`` (or ``mne-lista bench
step_lista -- --help``) from a source checkout.
"""

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _common import per_sample, rel_objective, sample_alpha_max, subset_problem_inputs
from mne.utils import logger, verbose

from mne_lista import StepLISTA, _l21, ista, solve_lasso
from mne_lista.experimental import ALISTA, LISTA
from mne_lista.networks import UnrolledISTA
from mne_lista.simulation import simulate_data, simulate_windows
from mne_lista.training import fit_network

T_LIST = (5, 10, 20, 40)
FISTA_ITERS = (5, 10, 20, 40, 60, 80, 100, 120, 160, 200, 300, 400, 600, 800)
#: networks that can be added as extra rows: configurations of UnrolledISTA
EXTRA_CONFIGS = {
    "safe_step": dict(step_rule="layer", safeguard="monotone"),
    "support_step": dict(step_rule="support", safeguard="monotone"),
    "backtrack_step": dict(step_rule="support", safeguard="backtracking"),
    "step_fista": dict(step_rule="layer", safeguard="none", momentum=True),
}
EXTRA_KINDS = tuple(EXTRA_CONFIGS)
#: steps tried per sample and layer by the --oracle row
ORACLE_TRIALS = 60


def _setup(kind):
    evoked, cov, fwd = subset_problem_inputs("surface" if kind == "surf" else "volume")
    kw = dict(loose=0.0, depth=0.8) if kind == "surf" else dict(loose=1.0, depth=0.9)
    return fwd, cov, evoked, kw


def _independent_set(problem, n, seed):
    """Another generator: the richest time sample of evoked-like windows.

    One window of :func:`mne_lista.simulation.simulate_windows` per sample
    (1-5 sources with their own waveforms, SNR in [-6, 14] dB over the
    window), its column of largest signal energy; ``lam / lam_max``
    uniform in [0.1, 0.8].
    """
    rng = np.random.default_rng(seed)
    sim = simulate_windows(problem, n, n_sources=(1, 5), random_state=rng)
    t = np.argmax((sim["signal"] ** 2).sum(0), axis=1)  # (W,)
    X = sim["M"][:, np.arange(n), t]
    return X, sample_alpha_max(problem, X) * rng.uniform(0.1, 0.8, n)


def _real_set(problem, n, seed):
    """Whitened real evoked responses (auditory), lam/lam_max in [0.1, 0.8]."""
    from mne_lista.datasets import read_subset

    rng = np.random.default_rng(seed)
    cols = []
    for cond in ("Left Auditory", "Right Auditory"):
        evoked, _ = read_subset(cond, verbose=False)
        cols.append(problem.whiten(evoked.copy().crop(0.03, 0.2)))
    X = np.concatenate(cols, axis=1)
    X = X[:, rng.choice(X.shape[1], min(n, X.shape[1]), replace=False)]
    amax = sample_alpha_max(problem, X)
    return X, amax * np.exp(rng.uniform(np.log(0.1), np.log(0.8), X.shape[1]))


def _fista_curve(problem, X, lam, iters):
    """Relative objective of FISTA at each number of iterations in ``iters``.

    One float32 run, recorded at the checkpoints (same pieces as
    :func:`mne_lista.fista`).
    """
    D = problem.gain_tensor("cpu", torch.float32)
    Xt = per_sample(X).to(torch.float32)
    lam_t = torch.as_tensor(lam, dtype=torch.float32)
    step = 1.0 / problem.lipschitz
    Z = Xt.new_zeros((problem.n_sources, *Xt.shape[1:]))
    Y, t, out = Z, 1.0, {}
    for k in range(1, max(iters) + 1):
        Z_new = _l21.ista_step(D, Xt, Y, step, lam_t, problem.n_orient, sparse_frac=0)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Y = Z_new + ((t - 1.0) / t_new) * (Z_new - Z)
        Z, t = Z_new, t_new
        if k in iters:
            out[k] = _rel_obj(problem, X, lam, Z[:, :, 0].numpy())
    return out


def _rel_obj(problem, X, lam, Z):
    return rel_objective(problem, X, lam, Z)


def _net_out(net, X, lam, n_layers=None, *, return_stats=False):
    """The network's output (float64 numpy) in eval mode, and its stats."""
    net.eval()  # backtracking retries only in eval mode
    with torch.no_grad():
        dt = net.G.dtype
        Z, stats = net(
            torch.as_tensor(X, dtype=dt),
            torch.as_tensor(lam, dtype=dt),
            n_layers,
            return_stats=True,
        )
    Z = Z.to(torch.float64).numpy()
    return (Z, stats) if return_stats else Z


def _match(curve, value):
    """FISTA iterations reaching ``value`` (log-log interpolation)."""
    ks = np.array(sorted(curve), float)
    vs = np.array([curve[int(k)] for k in ks])
    if value >= vs[0]:
        return float(ks[0]) if value == vs[0] else float("nan")
    if value < vs[-1]:
        return float("inf")
    i = np.flatnonzero(vs <= value)[0]
    x0, x1, y0, y1 = np.log(ks[i - 1]), np.log(ks[i]), np.log(vs[i - 1]), np.log(vs[i])
    return float(np.exp(x0 + (np.log(value) - y0) * (x1 - x0) / (y1 - y0)))


def greedy_step_oracle(problem, X, lam, n_layers=20, n_trials=60, max_step=1e4):
    """Proximal gradient with the best of ``n_trials`` steps per sample and layer.

    At each layer and for each column, the steps ``a / L`` with ``a`` in
    ``geomspace(1, max_step, n_trials)`` are tried from the same gradient
    and the iterate with the lowest Lasso objective is kept. The ISTA step
    (``a = 1``) is among them, so the objective never increases and the
    oracle is never worse than ISTA layer by layer (``n_trials=1`` is ISTA).
    Float64, on the CPU.

    Parameters
    ----------
    problem : LassoProblem
        The problem.
    X : array, shape (n, B)
        Whitened data.
    lam : array, shape (B,)
        Regularization parameters.
    n_layers : int
        Number of layers (iterations).
    n_trials : int
        Number of steps tried per layer.
    max_step : float
        Largest step, in units of ``1/L``.

    Returns
    -------
    Z : array, shape (m, B)
        The iterate after ``n_layers`` layers.
    """
    D = torch.as_tensor(problem.gain, dtype=torch.float64)
    X = per_sample(X)
    lam = torch.as_tensor(np.asarray(lam, dtype=np.float64))
    no = problem.n_orient
    Z = X.new_zeros((problem.n_sources, *X.shape[1:]))
    trials = np.geomspace(1.0, max_step, n_trials) / problem.lipschitz
    for _ in range(n_layers):
        grad = _l21.gain_t_times(D, _l21.gain_times(D, Z, sparse_frac=0) - X)
        best, best_f = None, None
        for step in trials:
            Z_s = _l21.prox(Z - step * grad, step * lam, no)
            f = _l21.objective(D, X, Z_s, lam, no, sparse_frac=0)
            if best is None:
                best, best_f = Z_s, f
            else:
                better = f < best_f
                best = torch.where(better[None, :, None], Z_s, best)
                best_f = torch.where(better, f, best_f)
        Z = best
    return Z[:, :, 0].numpy()


def _inv_lip_supports(problem, Z):
    """L / L_S on the supports of the columns of Z (L_S = ||D_S||_2^2)."""
    out = []
    for z in Z.T:
        S = np.flatnonzero(np.abs(z) > 0)
        if len(S):
            out.append(problem.lipschitz / np.linalg.norm(problem.gain[:, S], 2) ** 2)
    return np.array(out)


@verbose
def run(
    kinds=("surf", "vol"),
    *,
    quick=False,
    extra=(),
    oracle=False,
    out=None,
    random_state=0,
    verbose=None,
):
    """Run the benchmark.

    Parameters
    ----------
    kinds : tuple of 'surf' | 'vol'
        Forwards to benchmark.
    quick : bool
        Small test sets and trainings (a smoke run, not figures to quote).
    extra : tuple of str
        Extra networks at ``T = 20`` (names in :data:`EXTRA_KINDS`), trained
        like the default ``fit()``; their rows give the cost in gain products
        per layer.
    oracle : bool
        Also run :func:`greedy_step_oracle` (:data:`ORACLE_TRIALS` trial
        steps, ``T = 20``) on every test set.
    out : path-like | None
        Folder for ``step_lista.json`` and ``step_lista.png``.
    random_state : int
        Seed.
    %(verbose)s

    Returns
    -------
    results : dict
    """
    extra = tuple(extra)
    for name in extra:
        if name not in EXTRA_KINDS:
            raise ValueError(f"extra must be in {EXTRA_KINDS}, got {name!r}")
    results = dict(
        quick=bool(quick),
        T=list(T_LIST),
        extra=list(extra),
        oracle=bool(oracle),
        forwards={},
    )
    for kind in kinds:
        results["forwards"][kind] = _run_one(kind, quick, random_state, extra, oracle)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "step_lista.json", "w") as fid:
            json.dump(results, fid, indent=1, default=float)
        _plot(results, out / "step_lista.png")
    return results


def _run_one(kind, quick, seed, extra=(), oracle=False):
    fwd, cov, evoked, kw = _setup(kind)
    is_vol = kind == "vol"
    n_test = (20 if quick else 150) if is_vol else (50 if quick else 400)
    fit_kw = dict(n_samples=128, n_epochs=2) if quick else {}
    # comparators and other depths: a smaller budget than the default fit
    other_kw = fit_kw if quick else dict(n_samples=1024, n_epochs=3 if is_vol else 20)

    # plain Step-LISTA, trained as by its default fit() (timed), T = 20
    model = StepLISTA(fwd, cov, evoked.info, n_layers=20, adaptive=False, **kw)
    problem = model.problem
    t0 = time.perf_counter()
    model.fit(random_state=seed, verbose=False, **fit_kw)
    fit_time = time.perf_counter() - t0
    logger.info(f"{kind}: plain Step-LISTA fit() {fit_time:.1f} s")
    nets = {("step", 20): model.net}
    train_times = {"step_20": fit_time}
    # other depths and comparators (same recipe; LISTA on the surface only)
    todo = [("alista", 20)]
    if not is_vol:
        todo += [("step", T) for T in T_LIST if T != 20] + [("lista", 20)]
    simulate = partial(simulate_data, problem)  # the recipe of fit()
    for name, T in todo:
        cls = dict(step=UnrolledISTA, alista=ALISTA, lista=LISTA)[name]
        net = cls(problem, T)
        t0 = time.perf_counter()
        fkw = dict(other_kw)
        if name == "lista":
            fkw["lr"] = 1e-4  # weight matrices: much smaller learning rate
        fit_network(net, simulate, random_state=seed, verbose=False, **fkw)
        train_times[f"{name}_{T}"] = time.perf_counter() - t0
        nets[(name, T)] = net
    # extra rows: the default recipe and seed of fit(), T = 20
    for name in extra:
        net = UnrolledISTA(problem, 20, **EXTRA_CONFIGS[name])
        t0 = time.perf_counter()
        fit_network(net, simulate, random_state=seed, verbose=False, **fit_kw)
        train_times[f"{name}_20"] = time.perf_counter() - t0
        logger.info(f"{kind}: {name} fit {train_times[f'{name}_20']:.1f} s")
        nets[(name, 20)] = net

    sets = {
        "sim": simulate_data(problem, n_test, random_state=seed + 100),
        "indep": _independent_set(problem, n_test, seed + 101),
        "more_src": simulate_data(
            problem, n_test, n_sources=(6, 10), random_state=seed + 102
        ),
        "low_snr": simulate_data(
            problem, n_test, snr=(-5.0, 0.0), random_state=seed + 103
        ),
        "real": _real_set(problem, n_test, seed + 104),
    }
    res = dict(
        shape=list(problem.gain.shape),
        n_orient=problem.n_orient,
        lipschitz=problem.lipschitz,
        fit_time_plain=fit_time,
        train_times=train_times,
        steps_times_L=(model.net.steps * problem.lipschitz).tolist(),
        fit_history=dict(
            val_loss=model.history_["val_loss"],
            init_val_loss=model.history_["init_val_loss"],
            n_samples=model.history_["n_samples"],
            n_epochs=model.history_["n_epochs"],
        ),
        sets={},
    )
    for set_name, (X, lam) in sets.items():
        Zs = solve_lasso(problem, X, lam, verbose=False)
        f_star = _rel_obj(problem, X, lam, Zs)

        def sub(Z, X=X, lam=lam, f_star=f_star):
            return float(np.mean(_rel_obj(problem, X, lam, Z) - f_star))

        r = dict(n=X.shape[1])
        curve = _fista_curve(problem, X, lam, FISTA_ITERS)
        r["fista_curve"] = {
            int(k): float(np.mean(v - f_star)) for k, v in curve.items()
        }
        r["ista"] = {
            T: sub(ista(problem, X, lam, T, dtype=torch.float32)) for T in T_LIST
        }
        r["fista"] = {T: r["fista_curve"][T] for T in T_LIST}
        for name in ("step", "lista", "alista"):
            vals = {
                T: sub(_net_out(nets[(name, T)], X, lam))
                for T in T_LIST
                if (name, T) in nets
            }
            if vals:
                r[name] = vals
        if ("step", 5) not in nets:  # the T=20 network truncated (not retrained)
            r["step_truncated"] = {
                T: sub(_net_out(model.net, X, lam, T)) for T in T_LIST if T <= 20
            }
        r["fista_iters_matching_step_20"] = _match(r["fista_curve"], r["step"][20])
        # cost in gain products per sample and layer; FISTA iterations of
        # equal cost (2 products each) for T = 20 layers
        r["products_per_layer"] = {"step": 2.0}
        for name in extra:
            Z, stats = _net_out(nets[(name, 20)], X, lam, return_stats=True)
            r[name] = {20: sub(Z)}
            r["products_per_layer"][name] = float(stats["products_per_layer"])
            r[f"fista_iters_matching_{name}_20"] = _match(r["fista_curve"], r[name][20])
        if oracle:
            Z = greedy_step_oracle(problem, X, lam, 20, n_trials=ORACLE_TRIALS)
            r["oracle_step"] = {20: sub(Z)}
            r["products_per_layer"]["oracle_step"] = ORACLE_TRIALS + 1.0
            r["fista_iters_matching_oracle_step_20"] = _match(
                r["fista_curve"], r["oracle_step"][20]
            )
        r["ista_20_over_step_20"] = r["ista"][20] / max(r["step"][20], 1e-300)
        r["L_over_LS"] = np.quantile(
            _inv_lip_supports(problem, Zs), [0.05, 0.25, 0.5, 0.75, 0.95]
        ).tolist()
        res["sets"][set_name] = r
        logger.info(f"{kind}/{set_name}: done")
    return res


def _plot(results, fname):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["forwards"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 4 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        res = results["forwards"][kind]
        r = res["sets"]["sim"]
        ax = axes[row, 0]
        ks = sorted(r["fista_curve"])
        ax.loglog(ks, [r["fista_curve"][k] for k in ks], "k-", lw=1, label="FISTA")
        for name, style in [
            ("ista", "C0o-"),
            ("step", "C3s-"),
            ("lista", "C2^-"),
            ("alista", "C4v-"),
            ("step_truncated", "C3:"),
        ]:
            if name in r:
                Ts = sorted(r[name])
                ax.loglog(Ts, [r[name][T] for T in Ts], style, label=name)
        for i, name in enumerate(results.get("extra", ())):
            # at the number of ISTA/FISTA iterations of equal cost
            cost = r["products_per_layer"][name]
            ax.loglog(
                [10 * cost], [r[name][20]], f"C{5 + i}*", ms=9, label=f"{name} T=20"
            )
        if "oracle_step" in r:  # at T = 20 layers
            ax.loglog(
                [20], [r["oracle_step"][20]], "kx", ms=9, label="step oracle T=20"
            )
        ax.set(
            xlabel="layers / iterations T",
            ylabel="(F - F*) / F(0)",
            title=f"{kind} {res['shape']} (held-out 'sim')",
        )
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        steps = np.array(res["steps_times_L"])
        ax.semilogy(np.arange(1, len(steps) + 1), steps, "C3s-", label="learned a_t L")
        ax.axhline(1.0, color="k", lw=1, label="1/L")
        q = r["L_over_LS"]
        ax.axhspan(q[1], q[3], color="C1", alpha=0.3, label="L/L_S (25-75%)")
        ax.axhline(q[2], color="C1", label="L/L_S median")
        ax.set(
            xlabel="layer",
            ylabel="step x L",
            title=f"{kind}: learned steps of plain Step-LISTA",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(fname, dpi=100)
    plt.close(fig)


def _table(results):
    lines = []
    for kind, res in results["forwards"].items():
        lines.append(
            f"== {kind} {res['shape']} n_orient={res['n_orient']} | plain "
            f"Step-LISTA fit(): {res['fit_time_plain']:.1f} s"
        )
        lines.append(
            "learned steps x L: " + " ".join(f"{s:.3g}" for s in res["steps_times_L"])
        )
        head = f"{'set':9s} {'method':15s} " + " ".join(f"T={T:<8d}" for T in T_LIST)
        for set_name, r in res["sets"].items():
            lines.append(head)
            names = ("ista", "fista", "step", "step_truncated", "lista", "alista")
            for name in names + tuple(results.get("extra", ())):
                if name in r:
                    vals = " ".join(
                        f"{r[name][T]:<10.3e}" if T in r[name] else f"{'-':10s}"
                        for T in T_LIST
                    )
                    lines.append(f"{set_name:9s} {name:15s} {vals}")
            lines.append(
                f"{set_name:9s} FISTA iterations matching Step-LISTA T=20: "
                f"{r['fista_iters_matching_step_20']:.0f}; L/L_S quantiles "
                "(5,25,50,75,95%): " + " ".join(f"{v:.3g}" for v in r["L_over_LS"])
            )
            if "oracle_step" in r:
                lines.append(
                    f"{set_name:9s} greedy step oracle T=20 ("
                    f"{r['products_per_layer']['oracle_step']:.0f} products per "
                    "layer): "
                    f"{r['oracle_step'][20]:.3e}, FISTA iterations matching "
                    f"{r['fista_iters_matching_oracle_step_20']:.0f}"
                )
            for name in results.get("extra", ()):
                cost = r["products_per_layer"][name]
                lines.append(
                    f"{set_name:9s} {name} T=20: FISTA iterations matching "
                    f"{r[f'fista_iters_matching_{name}_20']:.0f} at {cost:.3f} gain "
                    f"products per layer (equal cost: {10 * cost:.1f} FISTA "
                    f"iterations; Step-LISTA: 20 for "
                    f"{r['fista_iters_matching_step_20']:.0f}); trained in "
                    f"{res['train_times'][f'{name}_20']:.1f} s"
                )
    return "\n".join(lines)


def main(argv=None):
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".", help="output folder")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument(
        "--kinds", nargs="+", default=["surf", "vol"], choices=["surf", "vol"]
    )
    parser.add_argument(
        "--extra",
        nargs="*",
        default=[],
        choices=list(EXTRA_KINDS),
        help="extra networks at T=20 (default recipe), with their cost",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="add the greedy per-sample step oracle "
        f"({ORACLE_TRIALS} trial steps per layer)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    results = run(
        tuple(args.kinds),
        quick=args.quick,
        extra=tuple(args.extra),
        oracle=args.oracle,
        out=args.out,
        random_state=args.seed,
    )
    # JSON keys are strings: print from the in-memory results
    print(_table(results))
    print(f"Written: {Path(args.out) / 'step_lista.json'}, step_lista.png")
    return results


if __name__ == "__main__":
    main()
