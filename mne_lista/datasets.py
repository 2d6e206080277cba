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
