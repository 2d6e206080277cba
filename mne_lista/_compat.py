"""The one place where mne-lista touches private MNE-Python helpers.

MNE may move or change these; every use in mne-lista goes through this
module, and ``tests/test_compat.py`` checks each against MNE's public
behaviour so that a change in MNE shows up as a failing test here.
"""

from types import SimpleNamespace

from mne.inverse_sparse import mxne_inverse as _mxne_inverse
from mne.minimum_norm import inverse as _mn_inverse


def prepare_gain(forward, info, noise_cov, *, depth, loose, rank):
    """MNE's ``_prepare_gain`` exactly as ``mixed_norm`` calls it.

    Returns (forward, gain, gain_info, whitener, source_weighting), with the
    forward converted (orientation) and restricted to the good channels.
    """
    forward, gain, gain_info, whitener, source_weighting, _ = (
        _mxne_inverse._prepare_gain(
            forward, info, noise_cov, True, depth, loose, rank, None, None
        )
    )
    return forward, gain, gain_info, whitener, source_weighting


def check_reference(info):
    """Raise if EEG channels of info lack an average reference projector."""
    _mn_inverse._check_reference(SimpleNamespace(info=info))
