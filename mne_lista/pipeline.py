"""Sparse source estimates for every subject of an MNE-BIDS-Pipeline study.

MNE-BIDS-Pipeline turns a study into derivatives per subject (cleaned
epochs, evoked responses, a noise covariance and its rank, a forward model)
from one configuration file; its source step computes minimum-norm estimates
only. :func:`run_pipeline` is the step after it: it reads the same config
with the pipeline's own loader (so that its defaults apply), finds each
subject's derivatives with mne-bids' ``BIDSPath`` as the pipeline's steps
do, and for each subject

1. fits a model on the forward (:class:`~mne_lista.StepMxNE` or
   :class:`~mne_lista.StepLISTA`), or reuses the one saved next to the
   forward when its fingerprint matches (``..._fwd+<method>.npz``);
2. localizes every condition's evoked response, written as the pipeline
   writes its own estimates (``..._<condition>+<method>+hemi.h5``), and
   every epoch, in chunks of ``chunk_size`` epochs
   (``..._split-NN_epo+<method>.h5``, read back with
   :func:`read_epochs_estimates`), so that a worker holds one chunk at a time;
3. writes a JSON sidecar (``..._lista+<method>.json``: arguments, inputs,
   selected alphas, certificate summary, timings, versions) and adds the
   estimates to the subject's ``mne.Report``.

Subjects (step 1), then evoked responses and epoch chunks (step 2) run in
parallel on the pipeline's engines: joblib (loky) or ``dask.distributed``
(a local cluster, or the scheduler at an address). Every file is written
atomically; a subject whose sidecar records the same inputs and arguments
and whose outputs exist is skipped; a task whose worker died is run again
once; a subject that fails is reported while the others finish.
"""

import glob
import json
import os
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mne.utils import _check_option, _validate_type, logger, verbose

from . import __version__
from ._io import atomic_write, stale_temporaries

_METHODS = ("mxne", "steplista")
_EPOCHS_FORMAT = "mne-lista-epochs-estimates"
_PIP = 'pip install "mne-lista[pipeline]"'
# test hook: the path of a marker file; the first epoch chunk whose worker
# finds it absent creates it and kills its worker after writing its output
_KILL_ENV = "_MNE_LISTA_PIPELINE_KILL"


def _import_pipeline_deps():
    try:
        import mne_bids  # noqa: F401
        import mne_bids_pipeline  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"mne-lista's pipeline step needs mne-bids and mne-bids-pipeline "
            f"({exc}): {_PIP}"
        ) from None


# ---------------------------------------------------------------------------
# the study: config, subjects, files


def read_pipeline_config(config):
    """Read an MNE-BIDS-Pipeline config file with the pipeline's defaults.

    Parameters
    ----------
    config : path-like
        The file given to ``mne_bids_pipeline --config``.

    Returns
    -------
    config : SimpleNamespace
        As the pipeline's steps see it (``config.exec_params`` holds
        ``n_jobs``, ``parallel_backend`` and the ``dask_*`` settings).
    """
    _import_pipeline_deps()
    from mne_bids_pipeline._config_import import _import_config

    config = Path(os.fspath(config))
    if not config.is_file():
        raise FileNotFoundError(f"MNE-BIDS-Pipeline config file not found: {config}")
    old = logger.level
    try:
        return _import_config(config_path=config)
    finally:  # the loader sets MNE's log level to its mne_log_level
        logger.setLevel(old)


def _bids_path(cfg, subject, session, **kwargs):
    """A derivative's BIDSPath, with the entities the pipeline's steps use."""
    from mne_bids import BIDSPath
    from mne_bids_pipeline._config_utils import get_datatype

    entities = dict(
        subject=subject,
        session=session,
        task=None,
        acquisition=cfg.acq,
        run=None,
        recording=cfg.rec,
        space=cfg.space,
        extension=".fif",
        datatype=get_datatype(cfg),
        root=cfg.deriv_root,
        check=False,
    )
    entities.update(kwargs)
    return BIDSPath(**entities)


def _conditions(cfg, task):
    """The evoked responses of a task in the order of its ``_ave.fif``."""
    from mne_bids_pipeline._config_utils import (
        _get_task_conditions_dict,
        _get_task_contrasts,
    )

    names = list(_get_task_conditions_dict(conditions=cfg.conditions, task=task))
    contrasts = _get_task_contrasts(contrasts=cfg.contrasts, task=task)
    return names + [c["name"] for c in contrasts]


def _epochs_path(cfg, subject, session, task):
    path = _bids_path(cfg, subject, session, task=task, processing="clean")
    path.update(suffix="epo")
    if not path.fpath.exists():  # split by the pipeline
        split = path.copy().update(split="01")
        if split.fpath.exists():
            return split
    return path


def _subject_files(cfg, subject, session, args):
    """Inputs and outputs of a subject, as plain paths (picklable)."""
    from mne_bids_pipeline._config_utils import (
        _bids_kwargs,
        get_noise_cov_bids_path,
        get_tasks,
        sanitize_cond_name,
    )
    from mne_bids_pipeline._report import _report_path

    method = args["method"]
    base = _bids_path(cfg, subject, session)
    fwd = base.copy().update(suffix="fwd")
    # the namespace of the pipeline's steps (BIDS entities, noise_cov)
    cfg_step = SimpleNamespace(noise_cov=cfg.noise_cov, **_bids_kwargs(config=cfg))
    cov = get_noise_cov_bids_path(cfg=cfg_step, subject=subject, session=session)
    tasks = get_tasks(config=cfg)
    update = cfg.source_info_path_update
    if update is None:
        if cfg.noise_cov in ("rest", "noise"):
            update = dict(processing="clean", suffix="raw", task=cfg.noise_cov)
        else:
            update = dict(suffix="ave", task=tasks[0])
    files = dict(
        forward=str(fwd.fpath),
        cov=None if cfg.noise_cov == "ad-hoc" else str(cov.fpath),
        rank=str(cov.copy().update(suffix="rank", extension=".json").fpath),
        info=str(base.copy().update(**update).fpath),
        model=str(fwd.copy().update(suffix=f"fwd+{method}", extension=".npz").fpath),
        sidecar=str(
            base.copy().update(suffix=f"lista+{method}", extension=".json").fpath
        ),
        report=str(_report_path(cfg=cfg_step, subject=subject, session=session).fpath),
    )
    files["tasks"] = []
    for task in tasks:
        evoked = base.copy().update(task=task, suffix="ave")
        stcs = {
            cond: str(
                evoked.copy()
                .update(
                    suffix=f"{sanitize_cond_name(cond)}+{method}+hemi",
                    extension=".h5",
                )
                .fpath
            )
            for cond in _conditions(cfg, task)
        }
        epochs = _epochs_path(cfg, subject, session, task) if args["epochs"] else None
        files["tasks"].append(
            dict(
                task=task,
                evoked=str(evoked.fpath),
                stcs=stcs,
                epochs=None if epochs is None else str(epochs.fpath),
                epochs_out=None
                if epochs is None
                else str(
                    epochs.copy()
                    .update(split=None, processing=None, extension=".h5")
                    .update(suffix=f"epo+{method}")
                    .fpath
                ),
            )
        )
    return files


def _chunk_fname(epochs_out, k):
    """The file of epoch chunk k: ``..._split-NN_epo+<method>.h5``."""
    path = Path(epochs_out)
    stem, suffix = path.name.rsplit("_", 1)  # the BIDS split entity goes last
    return str(path.with_name(f"{stem}_split-{k + 1:02d}_{suffix}"))


def _inputs(files):
    out = [files["forward"], files["rank"], files["info"]]
    out += [files["cov"]] if files["cov"] else []
    for task in files["tasks"]:
        out += [task["evoked"]] + ([task["epochs"]] if task["epochs"] else [])
    return out


def _stamp(fname, how):
    """What identifies a file's content: size and mtime, or its hash."""
    path = Path(fname)
    st = path.stat()
    if how == "hash":
        import hashlib

        h = hashlib.sha256()
        with open(path, "rb") as fid:
            for block in iter(lambda: fid.read(1 << 20), b""):
                h.update(block)
        return dict(size=st.st_size, sha256=h.hexdigest())
    return dict(size=st.st_size, mtime_ns=st.st_mtime_ns)


def _versions():
    import mne
    import mne_bids
    import mne_bids_pipeline
    import torch

    return dict(
        mne_lista=__version__,
        mne=mne.__version__,
        mne_bids=mne_bids.__version__,
        mne_bids_pipeline=mne_bids_pipeline.__version__,
        torch=torch.__version__,
        numpy=np.__version__,
    )


# ---------------------------------------------------------------------------
# the work of a subject (run in workers: plain data in, plain data out)


def _worker_setup(job):
    """One thread per parallel worker (as the pipeline's loky backend)."""
    import torch

    if job["parallel"]:
        torch.set_num_threads(1)


def _device(job):
    """'auto': one GPU per worker where there are GPUs, else the CPU."""
    import torch

    device = job["args"]["device"]
    if device != "auto":
        return device
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not n_gpu:
        return "cpu"
    index = os.getpid()
    try:  # a LocalCluster's workers are named 0, 1, ...
        from distributed import get_worker

        index = int(get_worker().name)
    except (ImportError, ValueError, TypeError):
        pass
    return f"cuda:{index % n_gpu}"


def _read_problem_inputs(files):
    """Forward, noise covariance (with its rank) and info of a subject."""
    import mne

    for key in ("forward", "rank", "info", "cov"):
        if files[key] is not None and not Path(files[key]).is_file():
            raise FileNotFoundError(f"missing {key} file {files[key]}")
    try:
        fwd = mne.read_forward_solution(files["forward"], verbose=False)
    except Exception as exc:
        raise ValueError(
            f"could not read the forward {files['forward']}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    info = mne.io.read_info(files["info"], verbose=False)
    if files["cov"] is None:
        cov = mne.make_ad_hoc_cov(info, verbose=False)
    else:
        cov = mne.read_cov(files["cov"], verbose=False)
    with open(files["rank"]) as fid:
        rank = json.load(fid)
    return fwd, cov, info, rank


def _make_model(job, *, fit):
    """Read the saved model of a subject, or (``fit``) train and save one."""
    from . import StepLISTA, StepMxNE, read_step_lista, read_step_mxne

    files, args = job["files"], job["args"]
    fwd, cov, info, rank = _read_problem_inputs(files)
    device = _device(job)
    reader = read_step_mxne if args["method"] == "mxne" else read_step_lista
    if Path(files["model"]).is_file():
        try:
            model = reader(files["model"], fwd, cov, info, device=device)
            return model, fwd, True
        except ValueError as exc:
            if not fit:
                raise
            logger.info(f"    Refitting: {exc}")
    elif not fit:
        raise FileNotFoundError(f"model file {files['model']} vanished")
    cls = StepMxNE if args["method"] == "mxne" else StepLISTA
    model = cls(
        fwd,
        cov,
        info,
        loose=args["loose"],
        depth=args["depth"],
        rank=rank,
        device=device,
    )
    model.fit(random_state=args["random_state"], **args["fit_kwargs"])
    model.save(files["model"], overwrite=True)
    return model, fwd, False


def _max_rss_mb():
    """Peak resident memory of this process (MB).

    Linux's ``VmHWM``: ``ru_maxrss`` would also count the process a worker
    was forked from (it survives ``exec``).
    """
    try:
        with open("/proc/self/status") as fid:
            for line in fid:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _task_fit(job):
    """Step 1 of a subject: the model (fit or reused), the epoch counts."""
    import mne

    _worker_setup(job)
    t0 = time.perf_counter()
    _, _, reused = _make_model(job, fit=True)
    n_epochs = []
    for task in job["files"]["tasks"]:
        if task["epochs"] is None:
            n_epochs.append(0)
            continue
        epochs = mne.read_epochs(task["epochs"], preload=False, verbose=False)
        n_epochs.append(len(epochs.events))
    return dict(
        reused=reused,
        fit_time=time.perf_counter() - t0,
        n_epochs=n_epochs,
        max_rss_mb=_max_rss_mb(),
    )


def _certificate(model):
    cert = model.certificate_ or {}
    gap = np.asarray(cert.get("rel_gap", []), float).ravel()
    out = dict(
        rel_gap_median=float(np.median(gap)) if gap.size else None,
        rel_gap_max=float(np.max(gap)) if gap.size else None,
    )
    if "alpha" in cert:
        out["alpha"] = [float(a) for a in np.ravel(cert["alpha"])]
    return out


def _apply_kwargs(job):
    args = job["args"]
    kw = dict(tol=args["tol"])
    if args["method"] == "mxne" and args["alpha"] == "sure":
        kw["random_state"] = args["random_state"]
    return kw


def _task_evoked(job, task):
    """Step 2: the estimates of every condition of a task's evoked file."""
    import mne

    _worker_setup(job)
    t0 = time.perf_counter()
    model, _, _ = _make_model(job, fit=False)
    evokeds = mne.read_evokeds(task["evoked"], verbose=False)
    names = list(task["stcs"])
    if len(evokeds) != len(names):
        raise ValueError(
            f"{task['evoked']} holds {len(evokeds)} evoked responses, the config "
            f"names {len(names)} conditions and contrasts ({names})"
        )
    out = dict()
    for cond, evoked in zip(names, evokeds):
        if "eeg" in job["ch_types"]:
            evoked.set_eeg_reference("average", projection=True, verbose=False)
        stc = model.apply(evoked, job["args"]["alpha"], **_apply_kwargs(job))
        with atomic_write(task["stcs"][cond]) as tmp:
            stc.save(tmp, ftype="h5", overwrite=True, verbose=False)
        cert = _certificate(model)
        cert.update(n_active=int(sum(len(v) for v in stc.vertices)))
        if job["args"]["alpha"] != "sure":
            cert["alpha"] = [float(job["args"]["alpha"])]
        out[cond] = cert
    return dict(conditions=out, time=time.perf_counter() - t0, max_rss_mb=_max_rss_mb())


def _task_epochs(job, task, k, start, stop):
    """Step 2: the estimates of epochs ``start:stop`` of a task, one file."""
    import h5io
    import mne

    _worker_setup(job)
    t0 = time.perf_counter()
    model, fwd, _ = _make_model(job, fit=False)
    epochs = mne.read_epochs(task["epochs"], preload=False, verbose=False)
    epochs = epochs[start:stop].load_data()
    stcs = model.apply_epochs(
        epochs,
        job["args"]["alpha"],
        return_generator=True,
        max_memory=job["args"]["max_memory"],
        **_apply_kwargs(job),
    )
    items = [
        dict(vertices=list(stc.vertices), data=stc.data) for stc in stcs
    ]  # sparse: the active rows of one chunk
    cert = _certificate(model)
    inv_id = {v: k for k, v in epochs.event_id.items()}
    fname = _chunk_fname(task["epochs_out"], k)
    with atomic_write(fname) as tmp:
        h5io.write_hdf5(
            tmp,
            dict(
                format=_EPOCHS_FORMAT,
                format_version=1,
                method=job["args"]["method"],
                src_type=fwd["src"].kind,
                subject=fwd["src"]._subject,
                tmin=float(epochs.times[0]),
                tstep=1.0 / epochs.info["sfreq"],
                first_epoch=int(start),
                events=epochs.events,
                conditions=[inv_id.get(int(e), "") for e in epochs.events[:, 2]],
                alpha=np.asarray(
                    cert.get("alpha", [job["args"]["alpha"]] * len(items)), float
                ),
                rel_gap=np.asarray(
                    np.ravel((model.certificate_ or {}).get("rel_gap", [])), float
                ),
                estimates=items,
            ),
            title="mnelista",
            overwrite=True,
        )
    hook = job.get("kill_marker")
    if hook and job["parallel"] and not Path(hook).exists():
        Path(hook).write_text(f"{job['key']} chunk {k}\n")
        os._exit(17)  # a worker killed in the middle of the subject's work
    return dict(
        chunk=k,
        file=fname,
        n_epochs=len(items),
        n_active_mean=float(
            np.mean([sum(len(v) for v in it["vertices"]) for it in items])
        )
        if items
        else 0.0,
        alpha_median=float(np.median(cert["alpha"])) if "alpha" in cert else None,
        rel_gap_median=cert["rel_gap_median"],
        rel_gap_max=cert["rel_gap_max"],
        time=time.perf_counter() - t0,
        max_rss_mb=_max_rss_mb(),
    )


def _run_task(item):
    """Run a task; errors become results (a dead worker is the engine's)."""
    import mne

    kind, job = item[0], item[1]
    func = dict(fit=_task_fit, evoked=_task_evoked, epochs=_task_epochs)[kind]
    try:
        with mne.use_log_level(job["log_level"]):
            return dict(ok=True, **func(job, *item[2:]))
    except Exception as exc:
        return dict(
            ok=False,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )


def read_epochs_estimates(fname):
    """Read the epochs' source estimates written by :func:`run_pipeline`.

    Parameters
    ----------
    fname : path-like
        A chunk file (``..._split-NN_epo+<method>.h5``).

    Returns
    -------
    stcs : list of SourceEstimate | VolSourceEstimate
        One per epoch of the chunk (only its active sources).
    info : dict
        The chunk's metadata: ``first_epoch``, ``events``, ``conditions``
        (the condition of each epoch), ``alpha`` and ``rel_gap``.
    """
    import h5io
    import mne

    data = h5io.read_hdf5(fname, title="mnelista")
    if not isinstance(data, dict) or data.get("format") != _EPOCHS_FORMAT:
        raise ValueError(f"{fname} is not an mne-lista epochs estimates file")
    cls = dict(volume=mne.VolSourceEstimate, mixed=mne.MixedSourceEstimate).get(
        data["src_type"], mne.SourceEstimate
    )
    stcs = [
        cls(
            it["data"],
            [np.asarray(v) for v in it["vertices"]],
            data["tmin"],
            data["tstep"],
            subject=data["subject"],
        )
        for it in data.pop("estimates")
    ]
    return stcs, data


# ---------------------------------------------------------------------------
# engines: serial, joblib, dask.distributed


class _Engine:
    """Map tasks on the serial, joblib (loky) or dask.distributed engine."""

    def __init__(self, backend, n_jobs, scheduler, cfg):
        self.backend, self.n_jobs, self.client, self.cluster = (
            backend,
            n_jobs,
            None,
            None,
        )
        if backend != "dask":
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ImportError(
                f"parallel_backend='dask' needs dask.distributed ({exc}): {_PIP}"
            ) from None
        if scheduler is not None:
            self.client = Client(scheduler)
            self.n_jobs = len(self.client.scheduler_info()["workers"])
            logger.info(f"Dask scheduler at {scheduler}: {self.n_jobs} worker(s)")
            return
        params = cfg.exec_params
        tmp = params.dask_temp_dir or Path(cfg.deriv_root) / ".dask-worker-space"
        self.cluster = LocalCluster(
            n_workers=n_jobs,
            threads_per_worker=1,
            processes=True,
            memory_limit=params.dask_worker_memory_limit,
            local_directory=str(tmp),
            dashboard_address=":0" if params.dask_open_dashboard else None,
        )
        self.client = Client(self.cluster)
        logger.info(f"Dask LocalCluster of {n_jobs} workers (1 thread each)")
        if params.dask_open_dashboard:
            import webbrowser

            webbrowser.open(self.client.dashboard_link)

    @property
    def parallel(self):
        return self.backend == "dask" or self.n_jobs > 1

    def close(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def map(self, items):
        """Results of ``_run_task`` on items, in order; dead workers retried."""
        if not items:
            return []
        if not self.parallel:
            return [_run_task(item) for item in items]
        if self.backend == "dask":
            return self._map_dask(items)
        return self._map_joblib(items)

    def _map_joblib(self, items):
        from joblib import Parallel, delayed, parallel_config

        results = dict()
        for attempt in range(2):
            todo = [i for i in range(len(items)) if i not in results]
            try:
                with parallel_config(backend="loky", inner_max_num_threads=1):
                    run = Parallel(
                        n_jobs=min(self.n_jobs, len(todo)),
                        return_as="generator_unordered",
                    )(delayed(_indexed)(i, items[i]) for i in todo)
                    for i, res in run:
                        results[i] = res
                break
            except Exception as exc:  # a worker died: its pool is broken
                dead = f"a worker died ({type(exc).__name__}: {exc})"
                logger.warning(f"{dead}; running its tasks again")
                if attempt:
                    for i in range(len(items)):
                        results.setdefault(i, dict(ok=False, error=dead))
        return [results[i] for i in range(len(items))]

    def _map_dask(self, items):
        from distributed import as_completed

        futures = self.client.map(
            _run_task, items, pure=False, retries=1, key=[_key(it) for it in items]
        )
        index = {f.key: i for i, f in enumerate(futures)}
        results = dict()
        for fut in as_completed(futures):
            try:
                results[index[fut.key]] = fut.result()
            except Exception as exc:  # KilledWorker: died on every try
                results[index[fut.key]] = dict(
                    ok=False, error=f"{type(exc).__name__}: {exc}"
                )
        return [results[i] for i in range(len(items))]


def _indexed(i, item):
    return i, _run_task(item)


def _key(item):
    import uuid

    parts = [str(p) for p in (item[0], item[1]["key"], *item[3:4])]
    return "mne-lista-" + "-".join(parts) + "-" + uuid.uuid4().hex[:8]


# ---------------------------------------------------------------------------
# the step


@verbose
def run_pipeline(
    config,
    *,
    method="mxne",
    alpha=40.0,
    tol="auto",
    epochs=True,
    n_jobs=None,
    dask_scheduler=None,
    chunk_size=100,
    max_memory=None,
    fit_kwargs=None,
    random_state=0,
    device="auto",
    report=True,
    verbose=None,
):
    """Sparse source estimates for every subject of an MNE-BIDS-Pipeline study.

    Run it after the pipeline's sensor and source steps (its forward model,
    noise covariance, evoked responses and cleaned epochs), on the same
    config file; see the module :mod:`mne_lista.pipeline` for the files it
    reads and writes.

    Parameters
    ----------
    config : path-like
        The MNE-BIDS-Pipeline config file (its ``bids_root``/``deriv_root``,
        ``subjects``/``exclude_subjects``, ``sessions``, ``task``,
        ``conditions``, ``contrasts``, ``ch_types``, ``loose``, ``depth``,
        ``noise_cov``, ``parallel_backend``, ``n_jobs`` and ``dask_*``
        settings are used, with the pipeline's defaults).
    method : 'mxne' | 'steplista'
        :class:`~mne_lista.StepMxNE` (``mixed_norm``'s problem) or
        :class:`~mne_lista.StepLISTA` (one Lasso per time sample).
    alpha : float | 'sure'
        Regularization in %% of alpha_max, or 'sure' (``mxne`` only).
    tol : 'auto' | float | None
        Relative duality gap the estimates are certified to; 'auto': 1e-4
        (``mixed_norm``'s) for ``mxne``, None (the network alone) for
        ``steplista``.
    epochs : bool
        Also localize every cleaned epoch.
    n_jobs : int | None
        Parallel workers (None: the config's ``n_jobs``; negative as joblib).
    dask_scheduler : str | None
        Address of a running Dask scheduler (then Dask is used whatever the
        config says); None: the config's ``parallel_backend``, 'dask' making
        a ``LocalCluster`` of ``n_jobs`` one-thread workers.
    chunk_size : int
        Epochs per output file and per task.
    max_memory : int | None
        Memory bound (bytes) of a batch of epochs in the solver (see
        :meth:`~mne_lista.StepMxNE.apply_epochs`).
    fit_kwargs : dict | None
        Passed to the model's ``fit`` (e.g. ``n_epochs``, ``max_time``).
    random_state : int
        Seed of the training (and of SURE's perturbations).
    device : 'auto' | str
        Torch device; 'auto': one GPU per worker where there are GPUs.
    report : bool
        Add the estimates to each subject's report.
    %(verbose)s

    Returns
    -------
    summary : dict
        ``ok`` (every subject done or up to date), ``subjects`` (per subject
        ``status`` 'done' / 'skipped' / 'failed', ``message``, ``sidecar``,
        ``timings``), ``backend``, ``n_jobs``, ``time`` and ``phases`` (wall
        time of the fits, of the estimates, of the sidecars and reports).
    """
    _import_pipeline_deps()
    tol = _check_run_args(method, alpha, tol, chunk_size)
    t_start = time.perf_counter()
    cfg = read_pipeline_config(config)
    backend, n_jobs = _engine_choice(cfg.exec_params, n_jobs, dask_scheduler)
    args = dict(
        method=method,
        alpha=alpha,
        tol=tol,
        epochs=bool(epochs),
        chunk_size=chunk_size,
        max_memory=max_memory,
        loose=cfg.loose,
        depth=cfg.depth,
        fit_kwargs=dict(fit_kwargs or {}),
        random_state=random_state,
        device=device,
    )
    jobs, summary = _subject_jobs(cfg, args)
    if not jobs:  # nothing to do: no workers to start
        backend, n_jobs, dask_scheduler = "loky", 1, None
    engine = _Engine(backend, n_jobs, dask_scheduler, cfg)
    for job in jobs:
        job["parallel"] = engine.parallel
    logger.info(
        f"mne-lista pipeline: {len(jobs)} subject(s) to do, "
        f"{sum(s is not None for s in summary.values())} up to date or failed; "
        + (f"{backend}, {engine.n_jobs} worker(s)" if engine.parallel else "serial")
    )
    phases = dict()
    try:
        t0 = time.perf_counter()
        for job, fit in zip(jobs, engine.map([("fit", job) for job in jobs])):
            job["fit"] = fit
        phases["fit"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        items = _apply_tasks(jobs, chunk_size)
        results = engine.map(items)
        phases["apply"] = time.perf_counter() - t0
    finally:
        engine.close()
    t0 = time.perf_counter()
    for job in jobs:
        # a worker killed while writing (e.g. by the death of another in
        # its pool) left a temporary; its task was run again
        for tmp in _temporaries(job["files"]):
            tmp.unlink(missing_ok=True)
        parts = [(it, r) for it, r in zip(items, results) if it[1] is job]
        summary[job["key"]] = _finish_subject(job, parts, report)
    phases["finish"] = time.perf_counter() - t0
    return dict(
        ok=all(s["status"] != "failed" for s in summary.values()),
        subjects=summary,
        backend=backend if engine.parallel else "serial",
        n_jobs=engine.n_jobs,
        time=time.perf_counter() - t_start,
        phases=phases,
    )


def _check_run_args(method, alpha, tol, chunk_size):
    """Check the arguments of :func:`run_pipeline`; returns tol."""
    _check_option("method", method, _METHODS)
    if isinstance(alpha, str):
        _check_option("alpha", alpha, ("sure",))
        if method != "mxne":
            raise ValueError("alpha='sure' needs method='mxne'")
    else:
        _validate_type(alpha, "numeric", "alpha")
        if not 0 <= alpha < 100:
            raise ValueError(f"alpha must be in [0, 100) or 'sure', got {alpha}")
    if tol == "auto":
        tol = 1e-4 if method == "mxne" else None
    if alpha == "sure" and tol is None:
        raise ValueError("alpha='sure' needs a tol (the exact solver)")
    _validate_type(chunk_size, "int", "chunk_size")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return tol


def _engine_choice(params, n_jobs, dask_scheduler):
    """The backend and number of workers, as the pipeline chooses them."""
    from joblib import cpu_count

    backend = "dask" if dask_scheduler is not None else params.parallel_backend
    n_jobs = params.n_jobs if n_jobs is None else n_jobs
    _validate_type(n_jobs, "int", "n_jobs")
    if n_jobs < 0:
        n_jobs = cpu_count() + n_jobs + 1
    n_jobs = max(int(n_jobs), 1)
    if backend == "dask" and n_jobs == 1 and dask_scheduler is None:
        backend = "loky"  # as the pipeline: one job is serial
    return backend, n_jobs


def _subject_jobs(cfg, args):
    """The subjects to do (jobs), and the summary of the others.

    The summary has an entry per subject of the study in its order (None for
    those to do): inputs missing (failed) or outputs up to date (skipped).
    """
    from mne_bids_pipeline._config_utils import _get_ss

    how = cfg.exec_params.memory_file_method
    key_args = {k: v for k, v in args.items() if k not in ("device", "max_memory")}
    jobs, summary = [], dict()
    for subject, session in _get_ss(config=cfg):
        name = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        files = _subject_files(cfg, subject, session, args)
        missing = [f for f in _inputs(files) if not Path(f).is_file()]
        key = (
            None
            if missing
            else dict(
                arguments=key_args,
                inputs={_rel(f, cfg): _stamp(f, how) for f in _inputs(files)},
            )
        )
        summary[name] = None
        if missing:
            summary[name] = dict(
                status="failed",
                message=f"missing input file(s): {', '.join(missing)} (run the "
                "pipeline's sensor and source steps first)",
            )
        elif _up_to_date(files["sidecar"], key):
            summary[name] = dict(
                status="skipped", message="up to date", sidecar=files["sidecar"]
            )
        else:
            for tmp in _temporaries(files):
                tmp.unlink(missing_ok=True)  # left by a killed worker
            jobs.append(
                dict(
                    key=name,
                    files=files,
                    args=args,
                    stamp=key,
                    ch_types=list(cfg.ch_types),
                    log_level="debug" if logger.level <= 10 else "warning",
                    parallel=False,
                    kill_marker=os.environ.get(_KILL_ENV) or None,
                )
            )
    return jobs, summary


def _apply_tasks(jobs, chunk_size):
    """The evoked files and epoch chunks of the subjects whose fit succeeded."""
    items = []
    for job in jobs:
        if not job["fit"]["ok"]:
            continue
        for task, n in zip(job["files"]["tasks"], job["fit"]["n_epochs"]):
            items.append(("evoked", job, task))
            for k, start in enumerate(range(0, n, chunk_size)):
                items.append(
                    ("epochs", job, task, k, start, min(start + chunk_size, n))
                )
    return items


def _rel(fname, cfg):
    try:
        return str(Path(fname).relative_to(cfg.deriv_root))
    except ValueError:
        return str(fname)


def _outputs(files, n_chunks):
    """The output files of a subject (``n_chunks`` per task; None: none)."""
    out = [files["model"]]
    for t, task in enumerate(files["tasks"]):
        out += list(task["stcs"].values())
        if task["epochs_out"] and n_chunks is not None:
            out += [_chunk_fname(task["epochs_out"], k) for k in range(n_chunks[t])]
    return out


def _temporaries(files):
    """Temporary files of killed writers of a subject's outputs."""
    report = Path(files["report"])
    names = _outputs(files, None) + [files["sidecar"], report.with_suffix(".html")]
    out = [t for f in names + [report] for t in stale_temporaries(f)]
    for task in files["tasks"]:
        if task["epochs_out"]:  # those of any chunk
            path = Path(task["epochs_out"])
            stem, suffix = (glob.escape(p) for p in path.name.rsplit("_", 1))
            out += sorted(path.parent.glob(f".{stem}_split-*_{suffix}.*"))
    return out


def _up_to_date(sidecar, key):
    try:
        with open(sidecar) as fid:
            side = json.load(fid)
    except (OSError, ValueError):
        return False
    if side.get("key") != json.loads(json.dumps(key)):
        return False
    return all(Path(f).is_file() for f in side.get("outputs", []))


def _finish_subject(job, parts, report):
    """Sidecar and report of a subject whose tasks ran (or its failure)."""
    fit, files = job["fit"], job["files"]
    if not fit["ok"]:
        return dict(status="failed", message=f"fit: {fit['error']}")
    failed = [(it, r) for it, r in parts if not r["ok"]]
    if failed:
        it, r = failed[0]
        what = it[0] + (f" chunk {it[3]}" if it[0] == "epochs" else "")
        return dict(
            status="failed",
            message=f"{what} of task {it[2]['task']!r}: {r['error']}"
            + (f" (and {len(failed) - 1} more task(s))" if len(failed) > 1 else ""),
        )
    chunks = [0] * len(files["tasks"])
    conditions, epochs = dict(), dict()
    for it, r in parts:
        task = it[2]["task"]
        if it[0] == "evoked":
            conditions.update(
                {f"{task}/{c}" if task else c: v for c, v in r["conditions"].items()}
            )
        else:
            chunks[files["tasks"].index(it[2])] += 1
            epochs.setdefault(str(task), []).append(
                {k: v for k, v in r.items() if k not in ("ok", "file")}
            )
    timings = dict(
        fit=fit["fit_time"],
        model_reused=fit["reused"],
        evoked=sum(r["time"] for it, r in parts if it[0] == "evoked"),
        epochs=sum(r["time"] for it, r in parts if it[0] == "epochs"),
        n_epochs=int(sum(fit["n_epochs"])),
        max_rss_mb=max([fit["max_rss_mb"]] + [r["max_rss_mb"] for _, r in parts]),
    )
    side = dict(
        key=job["stamp"],
        arguments=job["args"],
        versions=_versions(),
        model=files["model"],
        conditions=conditions,
        epochs=epochs,
        timings=timings,
        outputs=_outputs(files, chunks),
    )
    try:
        if report:
            _add_to_report(job, conditions)
        with atomic_write(files["sidecar"]) as tmp:
            tmp.write_text(json.dumps(side, indent=2, default=str))
    except Exception as exc:
        return dict(
            status="failed", message=f"report/sidecar: {type(exc).__name__}: {exc}"
        )
    return dict(
        status="done",
        message=f"{len(conditions)} condition(s), {timings['n_epochs']} epoch(s)",
        sidecar=files["sidecar"],
        timings=timings,
    )


# ---------------------------------------------------------------------------
# report


def _stc_figure(stc, src, title):
    """Time courses and positions of the active sources (no 3D needed)."""
    import matplotlib.pyplot as plt
    from mne.io.constants import FIFF

    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    ax_t.plot(stc.times, 1e9 * stc.data.T, lw=1)
    ax_t.set(xlabel="Time (s)", ylabel="Amplitude (nAm)", title=title)
    rr = np.concatenate([s["rr"][s["vertno"]] for s in src])
    ax_p.scatter(1e3 * rr[:, 0], 1e3 * rr[:, 1], s=2, c="0.8")
    for s, verts in zip(src, stc.vertices):
        pos = s["rr"][np.asarray(verts, int)]
        ax_p.scatter(1e3 * pos[:, 0], 1e3 * pos[:, 1], s=40, c="C3")
    frame = "head" if src[0]["coord_frame"] == FIFF.FIFFV_COORD_HEAD else "MRI"
    ax_p.set(xlabel=f"x (mm, {frame})", ylabel=f"y (mm, {frame})", aspect="equal")
    ax_p.set_title(f"{sum(len(v) for v in stc.vertices)} active source(s), top view")
    return fig


def _fmt(value):
    """A number (or the numbers of a list) for the report's table."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return f"{value:.3g}"


def _add_to_report(job, conditions):
    """Add a figure per estimate and the certificate table to the report."""
    import matplotlib
    import matplotlib.pyplot as plt
    import mne
    from filelock import FileLock

    files, method = job["files"], job["args"]["method"]
    fname = Path(files["report"])
    src = mne.read_forward_solution(files["forward"], verbose=False)["src"]
    old = matplotlib.get_backend()
    with FileLock(f"{fname}.lock"):
        if fname.is_file():
            rep = mne.open_report(fname)
        else:
            rep = mne.Report(title=f"{job['key']}", verbose=False)
        plt.switch_backend("agg")
        try:
            for task in files["tasks"]:
                for cond, stc_fname in task["stcs"].items():
                    stc = mne.read_source_estimate(stc_fname)
                    title = f"Source ({method}): {cond}"
                    fig = _stc_figure(stc, src, title)
                    rep.add_figure(
                        fig,
                        title=title,
                        tags=("source-estimate", "mne-lista", method),
                        replace=True,
                    )
                    plt.close(fig)
            rows = "".join(
                f"<tr><td>{c}</td><td>{_fmt(v.get('alpha'))}</td>"
                f"<td>{v.get('n_active')}</td><td>{_fmt(v.get('rel_gap_max'))}</td></tr>"
                for c, v in conditions.items()
            )
            rep.add_html(
                "<table class='table'><tr><th>condition</th><th>alpha (%)</th>"
                f"<th>active sources</th><th>max relative gap</th></tr>{rows}</table>",
                title=f"mne-lista ({method}) certificate",
                tags=("mne-lista",),
                replace=True,
            )
        finally:
            plt.switch_backend(old)
        for ext in (".h5", ".html"):
            with atomic_write(fname.with_suffix(ext)) as tmp:
                rep.save(tmp, overwrite=True, open_browser=False, verbose=False)
