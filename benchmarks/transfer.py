"""Do learned steps transfer across forward models? (issue #17, part 2)

The learned parameters of the estimators' networks are a handful of numbers
in units of ``1/L``: the per-layer steps ``log_steps`` and, for the adaptive
``StepLISTA()`` network (``step_rule='support'``), the support exponents
``support_exp``. This script trains them **once, jointly over several
forwards** (one :class:`~mne_lista.networks.UnrolledISTA` per forward, all
holding the same ``nn.Parameter`` objects; each Adam step averages the loss
of a minibatch of every forward, each forward's loss divided by that of ISTA
on its validation set so that every forward counts equally), then measures
them on forwards **not seen in training** against ISTA and against a network
trained on that forward by the estimator's own default ``fit()``.

The support rule needs a reference ``r_t`` per forward (see
:class:`~mne_lista.networks.UnrolledISTA`); three ways to carry it across
forwards are compared (``--params``):

- ``ref``: ``r_t`` of each forward measured as in training (the mean log
  support of ISTA on simulated data of that forward; needs a simulation at
  use time);
- ``abs``: one ``r_t`` for every forward (the mean of the training forwards'
  references): the step depends on the absolute support size;
- ``rel``: ``r_t = log P + o_t`` with ``P`` the number of source positions
  of the forward: the step depends on the support relative to ``P``.

The metric is that of ``benchmarks/step_lista.py``: the mean relative
suboptimality ``(F(z_T) - F*) / F(0)`` at ``T = 20`` on held-out test sets,
given as the number of FISTA iterations that reach it ("FISTA@k", log-log
interpolation of FISTA's curve); ``F*`` from the certified working-set
solver :func:`mne_lista.solvers.solve_mxne` (a per-sample problem is a window
of one column). ``--network mxne`` does the same for the ``StepMxNE()``
network (one step per layer, L21 problems on ``time_pca`` windows). The
pretrained parameters (``abs``, ``rel``, ``steps``) are set on the held-out
networks as the estimators set them
(:func:`mne_lista._pretrained.set_pretrained`), with the check that resets
unsafeguarded steps to ISTA where they do worse than ISTA.

``--write-pretrained PATH`` writes the jointly trained parameters as the
package's pretrained file (:func:`mne_lista._pretrained.write_pretrained`).
Writes ``transfer_<network>.json`` into ``--out``; the published run is in
``docs/bench/``. Run ``python benchmarks/transfer.py --help``.
"""

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from mne.utils import logger, verbose
from step_lista import _match as match  # FISTA iterations matched

from mne_lista import _l21, solvers
from mne_lista._pretrained import set_pretrained
from mne_lista.networks import NETWORKS, UnrolledISTA
from mne_lista.simulation import simulate_data
from mne_lista.training import _DivergenceGuard, evaluate, normalized_objective

#: forwards: (head, kind, grid mm, loose, depth); 'subset' = the real sample
#: subject (surface: 516 cortical sources), 'demo' = the synthetic sphere head
FORWARDS = {
    "demo10_free_d0.8": ("demo", "volume", 10.0, 1.0, 0.8),
    "vol10_free_d0.9": ("subset", "volume", 10.0, 1.0, 0.9),
    "surf_loose_d0.8": ("subset", "surface", None, 0.2, 0.8),
    "surf_free_d0.9": ("subset", "surface", None, 1.0, 0.9),
    "surf_free_d0.5": ("subset", "surface", None, 1.0, 0.5),
    # held out
    "vol7_free_d0.9": ("subset", "volume", 7.0, 1.0, 0.9),
    "surf_fixed_d0.8": ("subset", "surface", None, 0.0, 0.8),
    "demo12_free_d0.9": ("demo", "volume", 12.0, 1.0, 0.9),
    "surf_loose_d0.6": ("subset", "surface", None, 0.2, 0.6),
}
#: the training forwards: depths 0.5 to 0.9 (a first run on 0.8-0.9 only,
#: with surf_free_d0.9 instead of surf_free_d0.5, gave plain steps that
#: diverge at depth 0.6: README)
TRAIN = ("demo10_free_d0.8", "vol10_free_d0.9", "surf_loose_d0.8", "surf_free_d0.5")
HELD_OUT = ("vol7_free_d0.9", "surf_fixed_d0.8", "demo12_free_d0.9", "surf_loose_d0.6")
T = 20
FISTA_ITERS = (5, 10, 20, 40, 60, 80, 100, 120, 160, 200, 300, 400)
PARAMS = ("ref", "abs", "rel")
NET_NAMES = dict(lista="BacktrackStepLISTANet", mxne="StepMxNENet")


def make_problem(name):
    """(problem, evoked or None) of a forward of :data:`FORWARDS`."""
    from mne_lista import prepare_problem
    from mne_lista._demo import make_demo_head
    from mne_lista.datasets import make_subset_forward, read_subset

    head, kind, pos, loose, depth = FORWARDS[name]
    if head == "demo":
        h = make_demo_head(pos=pos, verbose=False)
        fwd, cov, info, evoked = h["forward"], h["noise_cov"], h["info"], None
    else:
        evoked, cov = read_subset("Right Auditory", verbose=False)
        info = evoked.info
        fwd = make_subset_forward(info, kind=kind, pos=pos or 7.0, verbose=False)
    problem = prepare_problem(fwd, cov, info, loose=loose, depth=depth, verbose=False)
    return problem, evoked


# --- the data of each network -------------------------------------------------


def _simulate(network, problem, n, seed, **kw):
    """Training-like problems of the estimator: (M (n, W, K), lam) float64."""
    if network == "mxne":
        from mne_lista.mxne import _training_windows

        return _training_windows(
            problem, n, n_components=4, lam_range=(0.1, 0.8), n_times=30,
            n_sources=kw.get("n_sources", (1, 5)), snr=kw.get("snr", (-6.0, 14.0)),
            extent=0.0, random_state=seed,
        )  # fmt: skip
    X, lam = simulate_data(problem, n, random_state=seed, **kw)
    return torch.as_tensor(X)[:, :, None], torch.as_tensor(lam)


def _real(network, problem, evoked, n, seed):
    """Real auditory responses of the sample subject, lam/lam_max in [0.1, 0.8]."""
    from mne_lista.datasets import read_subset

    rng = np.random.default_rng(seed)
    G = problem.gain_tensor("cpu", torch.float64)
    cols = []
    for cond in ("Left Auditory", "Right Auditory"):
        ev, _ = read_subset(cond, verbose=False)
        cols.append(problem.whiten(ev.copy().crop(0.03, 0.2)))
    if network == "mxne":  # windows of 30 samples every 5, 4 components
        wins = [c[:, s : s + 30] for c in cols for s in range(0, c.shape[1] - 29, 5)]
        M, _ = _l21.time_pca(torch.as_tensor(np.stack(wins, axis=1)), 4)
    else:
        X = np.concatenate(cols, axis=1)
        idx = rng.choice(X.shape[1], min(n, X.shape[1]), replace=False)
        M = torch.as_tensor(X[:, idx])[:, :, None]
    ratio = np.exp(rng.uniform(np.log(0.1), np.log(0.8), M.shape[1]))
    return M, torch.as_tensor(ratio) * _l21.alpha_max(G, M, problem.n_orient)


def test_sets(network, problem, evoked, n, seed):
    """Held-out test sets: the training generator and harder/real data."""
    sim = partial(_simulate, network, problem, n)
    sets = dict(
        sim=sim(seed + 100),
        more_src=sim(seed + 102, n_sources=(6, 10)),
        low_snr=sim(seed + 103, snr=(-5.0, 0.0) if network == "lista" else (-10, -4)),
    )
    if evoked is not None:
        sets["real"] = _real(network, problem, evoked, n, seed + 104)
    return sets


# --- metric -----------------------------------------------------------------


def _rel(G, M, Z, lam, n_orient):
    """``F(Z) / F(0)`` per window (float64 numpy)."""
    G, M, Z = (torch.as_tensor(a, dtype=torch.float64) for a in (G, M, Z))
    lam = torch.as_tensor(lam, dtype=torch.float64)
    f = _l21.objective(G, M, Z, lam, n_orient, sparse_frac=0)
    return (f / _l21.zero_objective(M)).numpy()


def reference(problem, M, lam):
    """``F* / F(0)`` per window from the certified working-set solver."""
    G = problem.gain_tensor("cpu", torch.float64)
    Z, rel, _ = solvers.solve_mxne(
        G, M, lam, problem.n_orient, tol=1e-8,
        lipschitz_positions=problem.position_lipschitz("cpu"),
    )  # fmt: skip
    return _rel(G, M, Z, lam, problem.n_orient)


def fista_curve(problem, M, lam, f_star, iters=FISTA_ITERS):
    """Mean ``(F - F*) / F(0)`` of FISTA (float32) at each count in ``iters``."""
    G = problem.gain_tensor("cpu", torch.float32)
    M32, lam32 = M.to(torch.float32), lam.to(torch.float32)
    step, Z = 1.0 / problem.lipschitz, M32.new_zeros((G.shape[1], *M.shape[1:]))
    Y, t, out = Z, 1.0, {}
    for k in range(1, max(iters) + 1):
        Z_new = _l21.ista_step(G, M32, Y, step, lam32, problem.n_orient, sparse_frac=0)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        Y, Z, t = Z_new + ((t - 1.0) / t_new) * (Z_new - Z), Z_new, t_new
        if k in iters:
            f = _rel(problem.gain, M, Z.double(), lam, problem.n_orient)
            out[k] = float(np.mean(f - f_star))
    return out


@torch.no_grad()
def subopt(net, problem, M, lam, f_star):
    """Mean ``(F(net) - F*) / F(0)`` of a network in evaluation mode."""
    net.eval()
    Z = net(M.to(net.G.dtype), lam.to(net.G.dtype)).double()
    return float(np.mean(_rel(problem.gain, M, Z, lam, problem.n_orient) - f_star))


# --- joint training ---------------------------------------------------------


def _check_data(network, problem):
    """The estimator's check data of pretrained steps without safeguard."""
    if network == "mxne":
        from mne_lista.mxne import _check_windows

        return _check_windows(problem)
    return simulate_data(problem, 64, random_state=0)


def make_net(network, problem):
    return UnrolledISTA(problem, T, **NETWORKS[NET_NAMES[network]])


def set_reference(net, kind, shared, M_ref, lam_ref):
    """Set ``r_t`` of a support-rule network for the parametrization ``kind``.

    ``shared``: dict with ``abs`` (r_t) and ``rel`` (o_t) arrays, or None
    (``ref``, or while measuring the references).
    """
    if net.step_rule != "support":
        return net
    with torch.no_grad():
        if kind == "ref" or shared is None:
            exp = net.support_exp.detach().clone()
            net.support_exp.zero_()
            net.log_ref_support.fill_(float("nan"))
            net.set_support_reference(M_ref, lam_ref)
            net.support_exp.copy_(exp)
        else:
            ref = np.asarray(shared[kind], dtype=np.float64)
            if kind == "rel":
                ref = ref + np.log(net.n_sources // net.n_orient)
            net.log_ref_support.copy_(torch.as_tensor(ref))
    return net


def train_joint(nets, data, val, *, n_epochs, batch_size, lr, patience, seed):
    """Adam on parameters shared by ``nets`` (see the module docstring)."""
    first = nets[0]
    for net in nets[1:]:  # tie: the very same Parameter objects
        for name, _ in first.named_parameters():
            setattr(net, name, getattr(first, name))
        net.train()
    first.train()
    ista = [evaluate(net, *v) for net, v in zip(nets, val)]

    def val_loss():
        return float(np.mean([evaluate(n, *v) / i for n, v, i in zip(nets, val, ista)]))

    params = list(first.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    guard = _DivergenceGuard(first, opt)
    gen = torch.Generator().manual_seed(seed)
    best, bad, hist = val_loss(), 0, []
    best_state = [p.detach().clone() for p in params]
    n = min(d[0].shape[1] for d in data)
    t0 = time.time()
    for epoch in range(n_epochs):
        perms = [torch.randperm(d[0].shape[1], generator=gen) for d in data]
        for start in range(0, n, batch_size):
            opt.zero_grad()
            loss = 0.0
            for net, (M, lam), perm, i in zip(nets, data, perms, ista):
                idx = perm[start : start + batch_size]
                loss = loss + normalized_objective(net, M[:, idx], lam[idx]).mean() / i
            loss = loss / len(nets)
            if guard.diverged(float(loss.detach()) / 2.0):  # ratio to ISTA < 2
                continue
            loss.backward()
            opt.step()
        v = val_loss()
        hist.append(v)
        logger.info(f"    epoch {epoch}: validation loss / ISTA {v:.5f}")
        if v < best:
            best, best_state, bad = v, [p.detach().clone() for p in params], 0
        else:  # back to the best parameters, fresh moments, smaller lr
            bad += 1
            with torch.no_grad():
                for p, b in zip(params, best_state):
                    p.copy_(b)
            guard.restart(2.0 if np.isfinite(v) and v < 1.5 * best else 4.0)
        if bad >= patience:
            break
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
    for net in nets:
        net.eval()
    return dict(val_loss=hist, best_val_over_ista=best, time=time.time() - t0)


def trained_reference(network, fwd_name, seed, quick=False, pretrained=False):
    """The estimator's default ``fit()`` on that forward: (net, fit time).

    From ISTA, or with ``pretrained`` from the package's shipped parameters.
    """
    from mne_lista import StepLISTA, StepMxNE
    from mne_lista._demo import make_demo_head
    from mne_lista.datasets import make_subset_forward, read_subset

    head, kind, pos, loose, depth = FORWARDS[fwd_name]
    if head == "demo":
        h = make_demo_head(pos=pos, verbose=False)
        fwd, cov, info = h["forward"], h["noise_cov"], h["info"]
    else:
        evoked, cov = read_subset("Right Auditory", verbose=False)
        info = evoked.info
        fwd = make_subset_forward(info, kind=kind, pos=pos or 7.0, verbose=False)
    cls = StepMxNE if network == "mxne" else StepLISTA
    model = cls(fwd, cov, info, n_layers=T, loose=loose, depth=depth,
                pretrained=pretrained)  # fmt: skip
    t0 = time.perf_counter()
    quick_kw = dict(n_epochs=1) if quick else {}
    if quick:
        quick_kw["n_windows" if network == "mxne" else "n_samples"] = 64
    model.fit(random_state=seed, verbose=False, **quick_kw)
    return model.net, time.perf_counter() - t0


@verbose
def run(network="lista", *, params=PARAMS, n_train=384, n_val=96, n_test=150,
        n_epochs=8, train=TRAIN, refine=False, quick=False, cache=None, seed=0,
        verbose=None):  # fmt: skip
    """Train jointly on ``train``, measure on :data:`HELD_OUT`.

    ``refine``: also the estimator's default ``fit()`` from the package's
    shipped parameters (``fit()`` refines them). ``quick``: two cheap held-out
    forwards and tiny trainings (a smoke run).
    """
    cache = Path(cache) if cache is not None else None
    held_out = HELD_OUT[1:3] if quick else HELD_OUT
    if quick:
        n_train, n_val, n_test, n_epochs = 32, 16, 10, 1
    problems = {name: make_problem(name) for name in train + held_out}
    logger.info("problems: " + ", ".join(
        f"{k} {tuple(p.gain.shape)}" for k, (p, _) in problems.items()))  # fmt: skip
    sim = {
        name: (
            _simulate(network, problems[name][0], n_train, seed + 1 + 10 * i),
            _simulate(network, problems[name][0], n_val, seed + 2 + 10 * i),
        )
        for i, name in enumerate(train)
    }
    results = dict(network=network, T=T, train=list(train), held_out=list(held_out),
                   n_train=n_train, n_val=n_val, n_epochs=n_epochs,
                   lam_range=[0.1, 0.8], params={}, forwards={})  # fmt: skip
    # the references r_t of every forward (ISTA's mean log support)
    refs = {}
    for name, (problem, _) in problems.items():
        net = make_net(network, problem)
        if net.step_rule == "support":
            M, lam = sim[name][1] if name in sim else _simulate(
                network, problem, n_val, seed + 7)  # fmt: skip
            set_reference(net, "ref", None, M, lam)
            refs[name] = net.log_ref_support.double().numpy()
    shared = None
    if refs:
        r = np.array([refs[n] for n in train])
        logp = np.array([np.log(problems[n][0].n_positions) for n in train])
        shared = dict(abs=r.mean(0), rel=(r - logp[:, None]).mean(0))
        results["log_ref_support"] = {k: v.tolist() for k, v in refs.items()}
        results["n_positions"] = {k: p.n_positions for k, (p, _) in problems.items()}
    kinds = params if refs else ("steps",)
    learned = {}
    for kind in kinds:
        nets = []
        for name in train:
            net = make_net(network, problems[name][0])
            set_reference(net, kind, shared, *sim[name][1])
            nets.append(net)
        logger.info(f"joint training ({kind})")
        hist = train_joint(
            nets, [sim[n][0] for n in train], [sim[n][1] for n in train],
            n_epochs=n_epochs, batch_size=16 if network == "lista" else 8,
            lr=0.05, patience=3, seed=seed,
        )  # fmt: skip
        state = {k: v.detach().double().numpy().tolist()
                 for k, v in nets[0].named_parameters()}  # fmt: skip
        if shared is not None and kind != "ref":
            state["log_ref_support"] = np.asarray(shared[kind]).tolist()
        learned[kind] = state
        results["params"][kind] = dict(state, history=hist)
        logger.info(f"  {kind}: {hist['best_val_over_ista']:.4f} of ISTA in "
                    f"{hist['time']:.0f} s")  # fmt: skip
    for name in held_out:
        problem, evoked = problems[name]
        res = dict(shape=list(problem.gain.shape), n_orient=problem.n_orient,
                   n_positions=problem.n_positions, sets={})  # fmt: skip
        trained, fit_time = _cached_fit(network, name, seed, cache, quick)
        res["fit_time"] = fit_time
        nets = dict(ista=make_net(network, problem), trained=trained)
        if refine:  # fit() from the shipped parameters
            nets["refined"], res["refine_time"] = _cached_fit(
                network, name, seed, cache, quick, pretrained=True
            )
        for kind, state in learned.items():
            net = make_net(network, problem)
            if kind == "ref":  # r_t measured on this forward's data
                with torch.no_grad():
                    for k, v in state.items():
                        getattr(net, k).copy_(torch.as_tensor(v))
                M, lam = _simulate(network, problem, n_val, seed + 7)
                set_reference(net, kind, shared, M, lam)
            else:  # as the estimators do (with their check, if any)
                ok = set_pretrained(
                    net, NET_NAMES[network], entry=pretrained_entry(results, kind),
                    check_data=partial(_check_data, network, problem),
                )  # fmt: skip
                res.setdefault("reset_to_ista", {})[kind] = ok is None
            nets[f"pretrained_{kind}"] = net
        for set_name, (M, lam) in test_sets(network, problem, evoked, n_test,
                                            seed).items():  # fmt: skip
            f_star = reference(problem, M, lam)
            curve = fista_curve(problem, M, lam, f_star)
            r = dict(n=int(M.shape[1]), fista_curve=curve)
            for key, net in nets.items():
                val = subopt(net, problem, M, lam, f_star)
                r[key] = dict(subopt=val, fista_at=match(curve, val))
            for key in nets:
                if key.startswith("pretrained"):
                    r[key]["ratio"] = r[key]["fista_at"] / r["trained"]["fista_at"]
            res["sets"][set_name] = r
            logger.info(f"{name}/{set_name}: " + ", ".join(
                f"{k} {r[k]['fista_at']:.0f}" for k in nets))  # fmt: skip
        results["forwards"][name] = res
    return results


def _cached_fit(network, name, seed, cache, quick, pretrained=False):
    """The trained-on-that-forward network, from the cache folder if there."""
    tag = "_refined" if pretrained else ""
    fname = None if cache is None else cache / f"fit_{network}_{name}_{seed}{tag}.pt"
    if fname is not None and fname.is_file() and not quick:
        blob = torch.load(fname)
        problem = make_problem(name)[0]
        net = make_net(network, problem)
        net.load_state_dict(blob["state"])
        return net.eval(), blob["fit_time"]
    net, fit_time = trained_reference(network, name, seed, quick, pretrained)
    if fname is not None and not quick:
        fname.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(state=net.state_dict(), fit_time=fit_time), fname)
    return net, fit_time


def _fmt(k):
    """FISTA iterations matched: below FISTA's first checkpoint reads '<5'."""
    return f"{k:.0f}" if np.isfinite(k) else ("<5" if np.isnan(k) else ">max")


def table(results):
    lines = [f"== {results['network']}: FISTA iterations matched at T={T} "
             "(ISTA / pretrained / trained on that forward, ratio)"]  # fmt: skip
    for name, res in results["forwards"].items():
        lines.append(f"{name} {res['shape']} fit() {res['fit_time']:.0f} s")
        for set_name, r in res["sets"].items():
            pre = [k for k in r if k.startswith("pretrained")]
            cells = " ".join(
                f"{k[11:]}={_fmt(r[k]['fista_at'])} ({100 * r[k]['ratio']:.0f}%)"
                for k in pre
            )
            if "refined" in r:
                cells += f"  refined by fit() {_fmt(r['refined']['fista_at'])}"
            lines.append(
                f"  {set_name:9s} ISTA {_fmt(r['ista']['fista_at']):>4s}  trained "
                f"{_fmt(r['trained']['fista_at']):>4s}  pretrained {cells}"
            )
    return "\n".join(lines)


def pretrained_entry(results, kind):
    """The pretrained file's entry of the parameters learned as ``kind``."""
    p = results["params"][kind]
    entry = dict(n_layers=results["T"], lam_range=results["lam_range"],
                 log_steps=p["log_steps"])  # fmt: skip
    if "support_exp" in p:
        if kind not in ("abs", "rel"):
            raise ValueError(f"the {kind!r} parameters need a per-forward reference")
        entry.update(support_exp=p["support_exp"],
                     log_ref_offset=p["log_ref_support"],
                     ref_slope=float(kind == "rel"))  # fmt: skip
    hist = p["history"]
    entry["training"] = dict(
        script="benchmarks/transfer.py", reference=kind,
        forwards={n: dict(zip(("head", "kind", "grid_mm", "loose", "depth"),
                              FORWARDS[n])) for n in results["train"]},
        n_train_per_forward=results["n_train"], n_epochs=results["n_epochs"],
        val_loss_over_ista=hist["best_val_over_ista"],
        held_out=results["held_out"],
    )  # fmt: skip
    return entry


def write_pretrained(fname, results, kind):
    """Add (or replace) the entry of ``results``' network in a pretrained file."""
    from mne_lista import _pretrained

    fname = Path(fname)
    networks = {}
    if fname.is_file():
        networks = json.loads(fname.read_text())["networks"]
    networks[NET_NAMES[results["network"]]] = pretrained_entry(results, kind)
    fname.parent.mkdir(parents=True, exist_ok=True)
    return _pretrained.write_pretrained(
        fname, networks, created_by="benchmarks/transfer.py --write-pretrained"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", choices=list(NET_NAMES), default="lista")
    parser.add_argument("--params", nargs="+", choices=PARAMS, default=list(PARAMS))
    parser.add_argument("--train", nargs="+", choices=list(FORWARDS), default=None,
                        help="training forwards (default: TRAIN)")  # fmt: skip
    parser.add_argument("--n-train", type=int, default=384)
    parser.add_argument("--n-epochs", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--refine", action="store_true",
                        help="also fit() from the shipped parameters")  # fmt: skip
    parser.add_argument("--cache", default=None, help="folder for trained nets")
    parser.add_argument("--out", default=".")
    parser.add_argument("--from-json", default=None,
                        help="results of an earlier run (no training)")  # fmt: skip
    parser.add_argument("--write-pretrained", default=None, metavar="PATH",
                        help="write the learned parameters as a pretrained "
                        "file (e.g. mne_lista/data/pretrained.json)")  # fmt: skip
    parser.add_argument("--ship", choices=("steps", "abs", "rel"), default="rel",
                        help="which parameters to write (support rule)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.from_json is not None:
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = run(args.network, params=tuple(args.params), n_train=args.n_train,
                      n_epochs=args.n_epochs, n_test=args.n_test, quick=args.quick,
                      train=tuple(args.train or TRAIN), refine=args.refine,
                      cache=args.cache, seed=args.seed)  # fmt: skip
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"transfer_{args.network}.json", "w") as fid:
            json.dump(results, fid, indent=1, default=float)
    print(table(results))
    if args.write_pretrained is not None:
        kind = "steps" if results["network"] == "mxne" else args.ship
        print(f"Written: {write_pretrained(args.write_pretrained, results, kind)}")
    return results


if __name__ == "__main__":
    main()
