"""Benchmark: the pipeline step, subjects per hour serial vs parallel workers.

A study of ``--n-subjects`` subjects is simulated offline from the sample
subset (:func:`mne_lista.datasets.make_study`: BIDS raw with known dipoles,
derivatives under MNE-BIDS-Pipeline's names, ``--duration`` seconds of
recording per subject, an epoch every 0.7 s), then
:func:`mne_lista.pipeline.run_pipeline` runs on fresh copies of it: serially,
then on ``--n-jobs`` joblib workers (and a Dask LocalCluster with
``--dask``), each run fitting its own models (the default ``fit()`` of
``--method``) and localizing every condition and every epoch.

Reported per run: wall time of the fits and of the estimates (evoked
responses and epoch chunks) apart, subjects per hour for each, the peak
resident memory of a worker (``ru_maxrss`` of the processes that ran the
tasks; the main process in the serial run), and per subject the CPU-seconds
of a fit and of one epoch. From these, on paper: what ``--plan-subjects`` x
``--plan-epochs`` need on a Dask cluster of CPU workers (one thread each,
perfect scaling over subjects, as measured between 1 and ``--n-jobs``
workers), and with one GPU per worker given ``--gpu-speedup`` and
``--gpu-epochs-speedup`` (the speed-ups of a GPU over one CPU thread for the
fit and for the epochs: assumptions stated in the output, not measurements;
the certified MxNE's block coordinate descent runs on the CPU, so by default
only the fit gains). ``--from-json FILE`` redoes the table and the plan from
the runs of a previous ``--out FILE``.

Run ``python benchmarks/pipeline.py [--quick] [--out FILE.json]`` (or
``mne-lista bench pipeline``) from a source checkout.
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _copy(src_root, dest):
    shutil.copytree(src_root, dest)
    config = Path(dest) / "config.py"
    config.write_text(config.read_text().replace(str(src_root), str(dest)))
    return config


def _run(config, label, **kwargs):
    from mne_lista.pipeline import run_pipeline

    t0 = time.perf_counter()
    summary = run_pipeline(config, verbose=False, **kwargs)
    wall = time.perf_counter() - t0
    subjects = summary["subjects"].values()
    if not summary["ok"]:
        raise RuntimeError(f"{label}: {summary['subjects']}")
    timings = [s["timings"] for s in subjects]
    n = len(timings)
    fit, apply = summary["phases"]["fit"], summary["phases"]["apply"]
    return dict(
        label=label,
        backend=summary["backend"],
        n_jobs=summary["n_jobs"],
        n_subjects=n,
        wall=wall,
        fit_wall=fit,
        apply_wall=apply,
        finish_wall=summary["phases"]["finish"],
        fit_subjects_per_hour=3600.0 * n / fit,
        apply_subjects_per_hour=3600.0 * n / apply,
        subjects_per_hour=3600.0 * n / wall,
        fit_cpu_s=[t["fit"] for t in timings],
        evoked_cpu_s=[t["evoked"] for t in timings],
        epochs_cpu_s=[t["epochs"] for t in timings],
        n_epochs=[t["n_epochs"] for t in timings],
        max_rss_mb=[t["max_rss_mb"] for t in timings],
    )


def _plan(runs, args):
    """Cluster time for args.plan_subjects x args.plan_epochs from the runs."""
    serial, par = runs[0], runs[1]
    fit = float(np.median(serial["fit_cpu_s"]))
    evoked = float(np.median(serial["evoked_cpu_s"]))
    per_epoch = float(
        np.median(np.array(serial["epochs_cpu_s"]) / np.array(serial["n_epochs"]))
    )
    n_subjects, n_epochs = args.plan_subjects, args.plan_epochs
    per_subject = fit + evoked + n_epochs * per_epoch
    gpu_subject = fit / args.gpu_speedup + evoked
    gpu_subject += n_epochs * per_epoch / args.gpu_epochs_speedup
    # the efficiency of the parallel run: measured speed-up / workers
    eff = min(1.0, serial["wall"] / par["wall"] / par["n_jobs"])
    out = dict(
        fit_s=fit,
        evoked_s=evoked,
        epoch_s=per_epoch,
        per_subject_cpu_s=per_subject,
        per_subject_gpu_s=gpu_subject,
        parallel_efficiency=eff,
        cpu_hours=n_subjects * per_subject / 3600.0,
        worker_memory_mb=max(max(r["max_rss_mb"]) for r in runs[1:]),
    )
    gpu_hours = n_subjects * gpu_subject / 3600.0
    out["gpu_hours"] = gpu_hours
    for w in args.plan_workers:  # as measured here, and one core per worker
        for tag, e in (("", eff), ("_ideal", 1.0)):
            out[f"cpu_wall_h_{w}_workers{tag}"] = out["cpu_hours"] / (w * e)
            out[f"gpu_wall_h_{w}_workers{tag}"] = gpu_hours / (w * e)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subjects", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--method", default="mxne", choices=("mxne", "steplista"))
    parser.add_argument("--alpha", default="40")
    parser.add_argument("--dask", action="store_true", help="also a LocalCluster")
    parser.add_argument("--plan-subjects", type=int, default=100)
    parser.add_argument("--plan-epochs", type=int, default=300)
    parser.add_argument("--plan-workers", type=int, nargs="+", default=[10, 50])
    parser.add_argument(
        "--gpu-speedup",
        type=float,
        default=10.0,
        help="assumed speed-up of a fit on a GPU over one CPU thread",
    )
    parser.add_argument(
        "--gpu-epochs-speedup",
        type=float,
        default=1.0,
        help="assumed GPU speed-up of the epochs (1: the certified MxNE's "
        "block coordinate descent runs on the CPU)",
    )
    parser.add_argument("--from-json", default=None, help="runs of an --out file")
    parser.add_argument("--quick", action="store_true", help="2 subjects, 20 s")
    parser.add_argument("--out", default=None, help="JSON output file")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_subjects, args.duration = 2, 20.0
    alpha = args.alpha if args.alpha == "sure" else float(args.alpha)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs, t_study = saved["runs"], saved["study_seconds"]
    else:
        runs, t_study = _measure(args, alpha)
    plan = _plan(runs, args)
    _print_table(args, alpha, runs, t_study, plan)
    options = {k: v for k, v in vars(args).items() if k != "from_json"}
    result = dict(args=options, study_seconds=t_study, runs=runs, plan=plan)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


def _measure(args, alpha):
    from mne_lista.datasets import make_study

    fit_kwargs = dict(n_epochs=1, n_windows=16) if args.quick else {}
    kw = dict(method=args.method, alpha=alpha, fit_kwargs=fit_kwargs)
    with tempfile.TemporaryDirectory(prefix="mne-lista-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        study = make_study(
            tmp / "study", args.n_subjects, duration=args.duration, verbose=False
        )
        t_study = time.perf_counter() - t0
        root = study["config"].parent
        runs = [_run(_copy(root, tmp / "serial"), "serial", n_jobs=1, **kw)]
        label = f"joblib x{args.n_jobs}"
        runs.append(_run(_copy(root, tmp / "joblib"), label, n_jobs=args.n_jobs, **kw))
        if args.dask:
            config = _copy(root, tmp / "dask")
            config.write_text(config.read_text() + '\nparallel_backend = "dask"\n')
            runs.append(_run(config, f"dask x{args.n_jobs}", n_jobs=args.n_jobs, **kw))
    return runs, t_study


def _print_table(args, alpha, runs, t_study, plan):
    print(
        f"study: {runs[0]['n_subjects']} subjects x {runs[0]['n_epochs'][0]} "
        f"epochs (simulated in {t_study:.1f} s), method {args.method}, "
        f"alpha {alpha}"
    )
    print(
        f"{'run':12s} {'fit s':>7s} {'apply s':>8s} {'fit subj/h':>11s} "
        f"{'apply subj/h':>13s} {'total subj/h':>13s} {'RSS/worker MB':>14s}"
    )
    for r in runs:
        print(
            f"{r['label']:12s} {r['fit_wall']:7.1f} {r['apply_wall']:8.1f} "
            f"{r['fit_subjects_per_hour']:11.0f} {r['apply_subjects_per_hour']:13.0f}"
            f" {r['subjects_per_hour']:13.0f} {max(r['max_rss_mb']):14.0f}"
        )
    print(
        f"per subject (1 thread): fit {plan['fit_s']:.1f} s, evoked "
        f"{plan['evoked_s']:.2f} s, {1e3 * plan['epoch_s']:.1f} ms/epoch; "
        f"parallel efficiency {plan['parallel_efficiency']:.2f}"
    )
    print(
        f"plan {args.plan_subjects} subjects x {args.plan_epochs} epochs: "
        f"{plan['cpu_hours']:.2f} CPU-hours, {plan['worker_memory_mb']:.0f} MB "
        f"per worker; with GPUs (fit x{args.gpu_speedup:g}, epochs "
        f"x{args.gpu_epochs_speedup:g}, assumed) {plan['gpu_hours']:.2f} GPU-hours"
    )
    for w in args.plan_workers:
        cpu, gpu = (
            "/".join(
                f"{60 * plan[f'{kind}_wall_h_{w}_workers{tag}']:.1f}"
                for tag in ("_ideal", "")
            )
            for kind in ("cpu", "gpu")
        )
        print(
            f"  {w:4d} workers (one core each / efficiency as measured here): "
            f"CPU {cpu} min, one GPU each {gpu} min"
        )


if __name__ == "__main__":
    raise SystemExit(main())
