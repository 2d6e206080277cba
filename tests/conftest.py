import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DEFAULT = ROOT.parent / "shared" / "data" / "mne-sample-subset"
# absolute, so that tests that change directory (tutorials, CLI) still find it
os.environ["MNE_LISTA_DATA"] = str(
    Path(os.environ.get("MNE_LISTA_DATA", _DEFAULT)).resolve()
)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def subset_path():
    from mne_lista.datasets import subset_data_path

    path = subset_data_path(raise_error=False)
    if path is None:
        pytest.skip(
            "MEG sample subset absent: set MNE_LISTA_DATA to "
            "shared/data/mne-sample-subset to run the real-data tests"
        )
    return path


@pytest.fixture(scope="session")
def evoked_cov(subset_path):
    from mne_lista.datasets import read_subset

    return read_subset("Right Auditory", verbose=False)


@pytest.fixture(scope="session")
def fwd_surf(evoked_cov):
    from mne_lista.datasets import make_subset_forward

    return make_subset_forward(evoked_cov[0].info, kind="surface", verbose=False)


@pytest.fixture(scope="session")
def fwd_vol(evoked_cov):
    from mne_lista.datasets import make_subset_forward

    return make_subset_forward(
        evoked_cov[0].info, kind="volume", pos=7.0, verbose=False
    )


@pytest.fixture(scope="session")
def problem_surf_fixed(evoked_cov, fwd_surf):
    from mne_lista import prepare_problem

    evoked, cov = evoked_cov
    return prepare_problem(
        fwd_surf, cov, evoked.info, loose=0.0, depth=0.8, verbose=False
    )


@pytest.fixture(scope="session")
def problem_vol(evoked_cov, fwd_vol):
    from mne_lista import prepare_problem

    evoked, cov = evoked_cov
    return prepare_problem(
        fwd_vol, cov, evoked.info, loose=1.0, depth=0.9, verbose=False
    )
