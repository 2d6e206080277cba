"""Benchmark: mne_lista.mixed_norm vs mne.inverse_sparse.mixed_norm, same arguments.

Side by side in one run, on the real 'Right Auditory' response of the
sample subset (70-110 ms) through the 516-source surface forward (loose
orientation 0.2 and depth 0.8, mixed_norm's defaults for a surface source
space), for each option alone:

- ``sure``: ``alpha='sure'`` (MNE's 15-alpha grid, ``random_state=0``);
- ``irmxne``: ``alpha=30, n_mxne_iter=10``;
- ``dspm``: ``alpha=30`` with dSPM weights (``weights=`` the dSPM estimate
  of the same data, as in MNE's mixed-norm example).

``evoked``: one call each, everything included (gain preparation too):
:func:`mne_lista.mixed_norm` against :func:`mne.inverse_sparse.mixed_norm`.
``epochs``: ``--n-epochs`` epochs made of the real evoked response plus
noise drawn from the real noise covariance (scaled as for an average of
``nave`` trials), localized in bulk by
:meth:`mne_lista.StepMxNE.apply_epochs` (the model built once, its time
included) against ``mixed_norm`` looped over the epochs (on ``--n-mne``
of them, extrapolated per epoch); SURE's perturbations are drawn in turn
from one ``RandomState(0)`` on both sides, so that the same epochs get the
same draws. Both sides solve as the drop-in does (:mod:`mne_lista._mixed_norm`:
MNE's tolerance for SURE's grid and irMxNE, 100 times tighter for MxNE).

Reported per option: wall time (per epoch for epochs: the model's
construction included, and without it, as a study pays it once per subject),
speed-up, selected alphas (SURE), and the fraction of estimates with the same support
(source positions) as mixed_norm's. Prints a table and writes JSON to
``--out``. ``--quick``: fewer epochs for MNE's loop.

Run ``python benchmarks/mixed_norm_parity.py [--quick] [--out FILE.json]``.
"""

import argparse
import json
import os
import re
import time
import warnings

import numpy as np

_OPTIONS = ("sure", "irmxne", "dspm")


def _data(n_epochs, seed=0):
    import mne

    from mne_lista.datasets import make_subset_forward, read_subset

    evoked, cov = read_subset("Right Auditory", verbose=False)
    evoked = evoked.crop(0.07, 0.11)
    fwd = make_subset_forward(evoked.info, kind="surface", verbose=False)
    picks = mne.pick_types(evoked.info, meg=True)
    C = mne.pick_channels_cov(cov, [evoked.ch_names[p] for p in picks]).data
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(C / evoked.nave + 1e-30 * np.eye(len(C)))
    noise = L @ rng.standard_normal((n_epochs, len(C), len(evoked.times)))
    data = evoked.data[None].repeat(n_epochs, 0)
    data[:, picks] += noise
    epochs = mne.EpochsArray(data, evoked.info, tmin=evoked.times[0], verbose=False)
    return evoked, cov, fwd, epochs


def _dspm(evoked, fwd, cov):
    import mne

    inv = mne.minimum_norm.make_inverse_operator(
        evoked.info, fwd, cov, loose=0.2, depth=0.8, verbose=False
    )
    return mne.minimum_norm.apply_inverse(
        evoked, inv, lambda2=1.0 / 9.0, method="dSPM", verbose=False
    )


def _args(option, weights):
    if option == "sure":
        return dict(alpha="sure")
    if option == "irmxne":
        return dict(alpha=30.0, n_mxne_iter=10)
    return dict(alpha=30.0, weights=weights)


def _support(stc):
    return tuple(tuple(int(v) for v in verts) for verts in stc.vertices)


def _selected(log):
    found = re.findall(r"Selected alpha: (\S+)$", log, re.M)
    return float(found[-1]) if found else None


def _ours_epochs(fwd, cov, epochs, common, **kwargs):
    """StepMxNE built once, all epochs in bulk: (estimates, certificate,
    construction time)."""
    import mne_lista

    t0 = time.perf_counter()
    est = mne_lista.StepMxNE(fwd, cov, epochs.info, n_layers=1, **common)
    t_build = time.perf_counter() - t0
    stcs = est.apply_epochs(epochs, **kwargs)
    return stcs, est.certificate_, t_build


def _timed(func, *args, **kwargs):
    from mne.utils import catch_logging

    with catch_logging(verbose=True) as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        dt = time.perf_counter() - t0
    return out, dt, log.getvalue()


def run(*, n_epochs=60, n_mne=60, seed=0):
    import mne

    import mne_lista
    from mne_lista import _mixed_norm

    evoked, cov, fwd, epochs = _data(n_epochs, seed)
    common = dict(loose=0.2, depth=0.8)
    # warm-up (numba compilation of every kernel, cached on disk after the
    # first run), not timed: each option once on the evoked response, and
    # SURE over two epochs (its batched kernels)
    weights = _dspm(evoked, fwd, cov)
    for option in _OPTIONS:
        args = _args(option, weights)
        _timed(mne_lista.mixed_norm, evoked, fwd, cov, **args, **common)
    _timed(_ours_epochs, fwd, cov, epochs[:2], common, alpha="sure", tol=1e-4)
    rows = []
    for option in _OPTIONS:
        weights = _dspm(evoked, fwd, cov) if option == "dspm" else None
        args = dict(_args(option, weights), **common)
        sure = dict(random_state=0) if option == "sure" else {}
        # --- one evoked response, everything included
        res = {}
        for name, func in (
            ("mne", mne.inverse_sparse.mixed_norm),
            ("ours", mne_lista.mixed_norm),
        ):
            stc, dt, log = _timed(func, evoked, fwd, cov, **args, **sure)
            res[name] = dict(time=dt, support=_support(stc), alpha=_selected(log))
        rows.append(
            dict(
                option=option,
                data="evoked",
                t_mne=res["mne"]["time"],
                t_ours=res["ours"]["time"],
                speedup=res["mne"]["time"] / res["ours"]["time"],
                same_support=float(res["mne"]["support"] == res["ours"]["support"]),
                alpha_mne=res["mne"]["alpha"],
                alpha_ours=res["ours"]["alpha"],
            )
        )
        # --- epochs: ours in bulk (model built once, timed), MNE looped
        n_iter = args.get("n_mxne_iter", 1)
        mne_tol = 1e-4
        rel = _mixed_norm._MNE_TO_RELATIVE_GAP * mne_tol
        tol = rel * (_mixed_norm._TIGHTER if n_iter == 1 else 1.0)
        ep_args = {k: v for k, v in args.items() if k not in common}
        if option == "sure":
            ep_args.update(sure_tol=rel, random_state=np.random.RandomState(0))

        (stcs, cert, t_build), dt_ours, _ = _timed(
            _ours_epochs, fwd, cov, epochs, common, tol=tol, **ep_args
        )
        rs = np.random.RandomState(0)
        t_mne, same, a_mne = 0.0, [], []
        for k in range(n_mne):
            ev = epochs[k].average()
            kw = dict(args, random_state=rs) if option == "sure" else args
            stc, dt, log = _timed(mne.inverse_sparse.mixed_norm, ev, fwd, cov, **kw)
            t_mne += dt
            same.append(_support(stc) == _support(stcs[k]))
            a_mne.append(_selected(log))
        a_ours = cert.get("alpha")
        rows.append(
            dict(
                option=option,
                data=f"epochs ({n_epochs}; MNE on {n_mne})",
                t_mne=t_mne / n_mne,
                t_ours=dt_ours / n_epochs,
                speedup=(t_mne / n_mne) / (dt_ours / n_epochs),
                # the model built once per subject: per epoch without it
                t_ours_apply=(dt_ours - t_build) / n_epochs,
                speedup_apply=(t_mne / n_mne) / ((dt_ours - t_build) / n_epochs),
                same_support=float(np.mean(same)),
                alpha_mne=None if option != "sure" else [float(a) for a in a_mne],
                alpha_ours=None if a_ours is None else [float(a) for a in a_ours],
                same_alpha=None
                if a_ours is None
                else float(np.mean(np.array(a_mne) == a_ours[:n_mne])),
                max_rel_gap=float(np.nanmax(cert["rel_gap"])),
            )
        )
    return rows


def _print(rows):
    head = f"{'option':8s} {'data':26s} {'MNE s':>8s} {'ours s':>8s} {'x':>6s} supp"
    print(head)
    for r in rows:
        print(
            f"{r['option']:8s} {r['data']:26s} {r['t_mne']:8.3f} {r['t_ours']:8.3f} "
            f"{r['speedup']:6.1f} {r['same_support']:.2f}"
            + (
                f"  (model built: {r['speedup_apply']:.1f}x)"
                if "speedup_apply" in r
                else ""
            )
            + (
                f"  alpha MNE {r['alpha_mne']:.4g} ours {r['alpha_ours']:.4g}"
                if isinstance(r.get("alpha_mne"), float)
                else ""
            )
            + (
                f"  same alpha {r['same_alpha']:.2f}"
                if r.get("same_alpha") is not None
                else ""
            )
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MNE on few epochs")
    parser.add_argument("--out", default="bench_mixed_norm_parity.json")
    parser.add_argument("--n-epochs", type=int, default=60)
    parser.add_argument("--n-mne", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    n_mne = args.n_mne or (3 if args.quick else args.n_epochs)
    rows = run(n_epochs=args.n_epochs, n_mne=min(n_mne, args.n_epochs), seed=args.seed)
    _print(rows)
    with open(args.out, "w") as f:
        json.dump(dict(rows=rows, argv=vars(args)), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
