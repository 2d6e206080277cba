"""Access to the MEG data used by tests, benchmarks, tutorials and the CLI.

``subset_data_path()`` finds the small offline subset of MNE's ``sample``
dataset (real evoked responses, noise covariance, BEM, small cortical source
space) named by the environment variable ``MNE_LISTA_DATA``; the helpers
below build real forward models from it in seconds, without any download.
"""

import os
from pathlib import Path

import mne
import numpy as np
from mne.utils import logger, verbose

SUBSET_ENV = "MNE_LISTA_DATA"
_SUBSET_FILES = ("test-ave.fif.gz", "test-cov.fif", "small-src.fif.gz")


def subset_data_path(path=None, *, raise_error=True):
    """Folder of the offline sample subset, or None when it is absent.

    Parameters
    ----------
    path : path-like | None
        Explicit folder; defaults to ``$MNE_LISTA_DATA``.
    raise_error : bool
        Raise a clear error (instead of returning None) when it is absent.
    """
    path = path if path is not None else os.environ.get(SUBSET_ENV)
    if path is not None and all((Path(path) / f).is_file() for f in _SUBSET_FILES):
        return Path(path).resolve()
    if raise_error:
        raise FileNotFoundError(
            f"the MEG sample subset was not found (set {SUBSET_ENV} to a folder "
            f"holding {', '.join(_SUBSET_FILES)}; got {path!r})"
        )
    return None


@verbose
def read_subset(condition="Right Auditory", path=None, *, verbose=None):
    """Read an evoked response (MEG channels) and the noise covariance.

    Returns
    -------
    evoked : Evoked
    noise_cov : Covariance
    """
    path = subset_data_path(path)
    evoked = mne.read_evokeds(
        path / "test-ave.fif.gz", condition=condition, baseline=(None, 0)
    ).pick("meg")
    noise_cov = mne.read_cov(path / "test-cov.fif")
    return evoked, noise_cov


@verbose
def read_subset_src(path=None, *, verbose=None):
    """Read the small cortical source space of the subset (516 sources).

    The file (``small-src.fif.gz``, from MNE-Python's test data) stores its
    vertex positions 1000 times too small: every vertex lies within 0.1 mm of
    the origin, and a forward computed from it is that of a single point
    (beyond the third, the squared singular values of its whitened gain are
    below 2e-6 of the largest).
    Positions and distances are scaled back to meters here; the vertices then
    lie on the cortex of ``sample`` (left hemisphere at x < 0), all inside
    the inner skull.

    Returns
    -------
    src : SourceSpaces
    """
    src = mne.read_source_spaces(subset_data_path(path) / "small-src.fif.gz")
    for s in src:
        extent = np.linalg.norm(s["rr"], axis=1).max()
        if extent < 1e-3:  # no cortex fits in a 1 mm ball: mm read as m twice
            logger.info(
                f"    Source space {s['id']}: vertices within {1e3 * extent:.2g} "
                "mm of the origin, scaled by 1000 to meters"
            )
            s["rr"] = s["rr"] * 1e3
            if s.get("nearest_dist") is not None:
                s["nearest_dist"] = s["nearest_dist"] * 1e3
    return src


@verbose
def make_subset_forward(info, kind="volume", pos=7.0, path=None, *, verbose=None):
    """Compute a real MEG forward model of the sample subject.

    Parameters
    ----------
    info : Info
        Measurement info (MEG channels are used).
    kind : 'volume' | 'surface'
        'volume': a grid inside the inner skull with spacing ``pos`` mm
        (10 mm -> 1433, 7 mm -> 4157, 5 mm -> 11430 positions, free
        orientation); 'surface': the decimated cortical source space with 516
        sources (free orientation, convert it for fixed), read with
        :func:`read_subset_src`.
    pos : float
        Grid spacing (mm) for 'volume'.

    Returns
    -------
    forward : Forward
    """
    path = subset_data_path(path)
    bem = mne.read_bem_solution(path / "sample-1280-bem-sol.fif")
    trans = path / "sample_audvis_trunc-trans.fif"
    if kind == "volume":
        src = mne.setup_volume_source_space(None, pos=float(pos), bem=bem)
    elif kind == "surface":
        src = read_subset_src(path)
    else:
        raise ValueError(f"kind must be 'volume' or 'surface', got {kind!r}")
    return mne.make_forward_solution(info, trans, src, bem, meg=True, eeg=False)


_STUDY_CONFIG = """\
# MNE-BIDS-Pipeline configuration of a study simulated by
# mne_lista.datasets.make_study
bids_root = {bids_root!r}
subjects_dir = {subjects_dir!r}
task = "audvis"
ch_types = ["meg"]
data_type = "meg"
conditions = ["auditory", "visual"]
epochs_tmin = -0.2
epochs_tmax = 0.5
baseline = (None, 0)
spatial_filter = None
reject = None
l_freq = None
h_freq = 40.0
decode = False
run_source_estimation = True
find_flat_channels_meg = False
find_noisy_channels_meg = False
use_maxwell_filter = False
noise_cov = (None, 0)
noise_cov_method = "empirical"
plot_psd_for_runs = []
report_evoked_n_time_points = 1
loose = 0.0
depth = 0.8
n_jobs = 1
"""
# the conditions of the study and the hemisphere of their source
_STUDY_CONDITIONS = (("auditory", 1, 0), ("visual", 2, 1))
PIPELINE_STEPS = "init,preprocessing,sensor/make_evoked,sensor/make_cov"


@verbose
def make_study(
    root,
    n_subjects=3,
    *,
    duration=40.0,
    sfreq=150.0,
    amplitude=200e-9,
    run_pipeline=False,
    path=None,
    verbose=None,
):
    """Simulate an MNE-BIDS-Pipeline study of the sample subject, offline.

    Each subject gets raw MEG data simulated with :mod:`mne.simulation`
    (the real sensors, head position and noise covariance of ``sample``):
    two conditions, 'auditory' and 'visual', each evoked by one dipole of
    known position on the 516-source cortical source space (fixed
    orientation, a 100 ms bump, one event every 0.7 s alternating between
    the conditions), written as BIDS with mne-bids, and a pipeline
    configuration file next to it (``root / 'config.py'``).

    The derivatives the source steps of the pipeline read are then written
    under the pipeline's names: with ``run_pipeline=True`` by the pipeline
    itself (its steps ``init, preprocessing, sensor/make_evoked,
    sensor/make_cov``: 60-140 s for 3 subjects on 2 shared cores, mostly its
    reports), otherwise with MNE as those steps compute them (cleaned
    epochs, evoked responses, noise covariance from the baseline and its
    rank). The forward is always written with MNE
    (``sub-XX_fwd.fif``): the pipeline's source space needs FreeSurfer
    surfaces that the subset lacks.

    Parameters
    ----------
    root : path-like
        Folder of the study (created): ``bids/``, ``config.py``.
    n_subjects : int
        Number of subjects (``01``, ``02``, ...).
    duration, sfreq : float
        Length (s) and sampling rate (Hz) of each raw recording.
    amplitude : float
        Peak dipole moment (A m).
    run_pipeline : bool
        Run MNE-BIDS-Pipeline's preprocessing and sensor steps.
    path : path-like | None
        Folder of the sample subset (default ``$MNE_LISTA_DATA``).
    %(verbose)s

    Returns
    -------
    study : dict
        ``config`` (the config file), ``bids_root``, ``deriv_root`` and
        ``truth``: per subject and condition the true source
        (``hemi`` 0/1, ``vertex``, ``pos`` in MRI coordinates, m).
    """
    from mne_bids import BIDSPath, write_raw_bids

    path = subset_data_path(path)
    root = Path(root)
    bids_root = root / "bids"
    bids_root.mkdir(parents=True, exist_ok=True)
    evoked = mne.read_evokeds(path / "test-ave.fif.gz", condition=0, verbose=False)
    info = evoked.info
    picks = mne.pick_types(info, meg=True, exclude=[])
    info = mne.pick_info(info, list(picks) + [info["ch_names"].index("STI 014")])
    with info._unlock():
        # the 3 MEG SSP projectors of sample: its noise covariance has rank 303
        projs = [p for p in info["projs"] if "EEG" not in p["desc"]]
        info.update(sfreq=float(sfreq), lowpass=sfreq / 3, projs=projs, bads=[])
        info["line_freq"] = 60.0
    src = read_subset_src(path, verbose=False)
    bem = mne.read_bem_solution(path / "sample-320-bem-sol.fif", verbose=False)
    trans = path / "sample_audvis_trunc-trans.fif"
    fwd = mne.make_forward_solution(
        info, trans, src, bem, meg=True, eeg=False, verbose=False
    )
    fwd_fixed = mne.convert_forward_solution(
        fwd, force_fixed=True, surf_ori=True, verbose=False
    )
    cov = mne.read_cov(path / "test-cov.fif", verbose=False)
    white = mne.make_ad_hoc_cov(info, verbose=False)
    isi = 0.7
    n_events = int((duration - 1.0) / isi)
    events = np.zeros((n_events, 3), int)
    events[:, 0] = np.round((0.5 + isi * np.arange(n_events)) * sfreq).astype(int)
    events[:, 2] = np.resize([c[1] for c in _STUDY_CONDITIONS], n_events)
    times = np.arange(int(0.5 * sfreq)) / sfreq
    wave = amplitude * np.exp(-0.5 * ((times - 0.1) / 0.02) ** 2)
    truth = dict()
    subjects = [f"{k + 1:02d}" for k in range(n_subjects)]
    for k, subject in enumerate(subjects):
        rng = np.random.default_rng(k)
        sim = mne.simulation.SourceSimulator(src, tstep=1.0 / sfreq)
        truth[subject] = dict()
        for cond, event_id, hemi in _STUDY_CONDITIONS:
            vertex = int(rng.choice(src[hemi]["vertno"]))
            label = mne.Label([vertex], hemi=("lh", "rh")[hemi], subject="sample")
            sim.add_data(label, wave, events[events[:, 2] == event_id])
            pos = src[hemi]["rr"][vertex].tolist()
            truth[subject][cond] = dict(hemi=hemi, vertex=vertex, pos=pos)
        raw = mne.simulation.simulate_raw(info, sim, forward=fwd_fixed, verbose=False)
        mne.simulation.add_noise(raw, cov, random_state=k)
        # and white sensor noise
        mne.simulation.add_noise(raw, white, random_state=100 + k)
        bids_path = BIDSPath(
            subject=subject, task="audvis", root=bids_root, datatype="meg"
        )
        write_raw_bids(
            raw,
            bids_path,
            events=events,
            event_id={c[0]: c[1] for c in _STUDY_CONDITIONS},
            format="FIF",
            allow_preload=True,
            overwrite=True,
            verbose=False,
        )
    config = root / "config.py"
    config.write_text(
        _STUDY_CONFIG.format(
            bids_root=str(bids_root), subjects_dir=str(path / "subjects")
        )
    )
    deriv_root = bids_root / "derivatives" / "mne-bids-pipeline"
    if run_pipeline:
        _run_pipeline_steps(config, PIPELINE_STEPS)
    for subject in subjects:
        folder = deriv_root / f"sub-{subject}" / "meg"
        folder.mkdir(parents=True, exist_ok=True)
        if not run_pipeline:
            _write_sensor_derivatives(bids_root, folder, subject)
        fwd_subject = mne.make_forward_solution(
            mne.io.read_info(folder / f"sub-{subject}_task-audvis_ave.fif"),
            trans,
            src,
            bem,
            meg=True,
            eeg=False,
            verbose=False,
        )
        mne.write_forward_solution(
            folder / f"sub-{subject}_fwd.fif", fwd_subject, overwrite=True
        )
    return dict(config=config, bids_root=bids_root, deriv_root=deriv_root, truth=truth)


def _run_pipeline_steps(config, steps):
    """Run steps of MNE-BIDS-Pipeline in a subprocess (its own command line)."""
    import subprocess
    import sys

    code = (
        "import sys; from mne_bids_pipeline._main import main; "
        f"sys.argv = ['mne_bids_pipeline', '--config', {str(config)!r}, "
        f"'--steps', {steps!r}]; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(
            f"MNE-BIDS-Pipeline failed (steps {steps}):\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )


def _write_sensor_derivatives(bids_root, folder, subject):
    """Epochs, evokeds, noise covariance and rank, as the pipeline's steps."""
    import json

    from mne_bids import BIDSPath, read_raw_bids

    bids_path = BIDSPath(subject=subject, task="audvis", root=bids_root, datatype="meg")
    raw = read_raw_bids(bids_path, verbose=False).load_data(verbose=False)
    raw.filter(None, 40.0, verbose=False)
    events, event_id = mne.events_from_annotations(raw, verbose=False)
    epochs = mne.Epochs(
        raw,
        events,
        event_id,
        tmin=-0.2,
        tmax=0.5,
        baseline=(None, 0),
        picks="meg",
        preload=True,
        verbose=False,
    )
    stem = f"sub-{subject}"
    epochs.save(folder / f"{stem}_task-audvis_proc-clean_epo.fif", overwrite=True)
    evokeds = [epochs[cond].average() for cond, _, _ in _STUDY_CONDITIONS]
    for evoked, (cond, _, _) in zip(evokeds, _STUDY_CONDITIONS):
        evoked.comment = cond
    mne.write_evokeds(folder / f"{stem}_task-audvis_ave.fif", evokeds, overwrite=True)
    cov = mne.compute_covariance(epochs, tmax=0.0, method="empirical", verbose=False)
    cov.save(folder / f"{stem}_proc-clean_cov.fif", overwrite=True)
    rank = mne.compute_rank(cov, info=epochs.info, rank="info", verbose=False)
    (folder / f"{stem}_proc-clean_rank.json").write_text(json.dumps(rank))
