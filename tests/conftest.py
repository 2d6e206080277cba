import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_DEFAULT = ROOT.parent / "shared" / "data" / "mne-sample-subset"
# absolute, so that tests that change directory (tutorials, CLI) still find it
os.environ["MNE_LISTA_DATA"] = str(
    Path(os.environ.get("MNE_LISTA_DATA", _DEFAULT)).resolve()
)
os.environ.setdefault("MPLBACKEND", "Agg")

# With MNE_LISTA_REQUIRE_DATA=1 (set by .ci/run), a session in which the
# subset folder exists but no real-data test passed fails: the real-data
# tests must not be skipped silently when the data are there.
REQUIRE_DATA_ENV = "MNE_LISTA_REQUIRE_DATA"
_REALDATA = dict(passed=0, message=None)


# ---------------------------------------------------------------------------
# The real-data marker: every test that needs the sample subset


def pytest_collection_modifyitems(config, items):
    """Mark ``realdata`` every test whose fixture closure holds subset_path.

    ``subset_path`` is the root of every real-data fixture, and
    ``item.fixturenames`` is the closure of the test's fixtures.
    """
    for item in items:
        if "subset_path" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and "realdata" in report.keywords:
        _REALDATA["passed"] += 1


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get(REQUIRE_DATA_ENV, "") in ("", "0"):
        return
    folder = Path(os.environ["MNE_LISTA_DATA"])
    if folder.is_dir() and _REALDATA["passed"] == 0:
        _REALDATA["message"] = (
            f"{REQUIRE_DATA_ENV}=1 and the sample subset folder {folder} exists, "
            "but no real-data test passed (all skipped or deselected?)"
        )
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _REALDATA["message"] is not None:
        terminalreporter.write_sep("=", "FAILED: " + _REALDATA["message"], red=True)


# ---------------------------------------------------------------------------
# Real-data fixtures (the sample subset named by MNE_LISTA_DATA)


@pytest.fixture(scope="session")
def subset_path():
    from mne_lista.datasets import subset_data_path

    path = subset_data_path(raise_error=False)
    if path is None:
        pytest.skip(
            "real-data test: the MEG sample subset is absent from "
            f"MNE_LISTA_DATA={os.environ.get('MNE_LISTA_DATA')} (set it to "
            "shared/data/mne-sample-subset to run the real-data tests)"
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


# ---------------------------------------------------------------------------
# Synthetic problems: no dataset, seconds


def synthetic_gain(n_channels, n_positions, n_orient, *, random_state=0):
    """A seeded gain that is hard for ISTA, as MEG gains are.

    Gaussian columns smoothly mixed along a line of source positions (so
    that neighbouring positions have correlated fields, each orientation
    on its own), with position norms spread over a decade (as without depth
    weighting) and the orientations of a position of unequal norms.
    """
    rng = np.random.default_rng(random_state)
    A = rng.standard_normal((n_channels, n_positions, n_orient))
    pos = np.arange(n_positions)
    K = np.exp(-0.5 * ((pos[:, None] - pos[None, :]) / 2.0) ** 2)
    G = np.einsum("npo,pq->nqo", A, K)
    G /= np.linalg.norm(G, axis=0, keepdims=True)
    G *= 10 ** rng.uniform(-1.0, 0.0, size=(1, n_positions, 1))
    G *= rng.uniform(0.5, 1.0, size=(1, 1, n_orient))
    return G.reshape(n_channels, n_positions * n_orient)


@pytest.fixture(scope="session")
def problem_synth_fixed():
    """A fixed-orientation Lasso problem, 40 channels x 90 sources."""
    from mne_lista import LassoProblem

    return LassoProblem(synthetic_gain(40, 90, 1, random_state=0), n_orient=1)


@pytest.fixture(scope="session")
def problem_synth_free():
    """A free-orientation group Lasso problem, 40 x 3 * 80 sources."""
    from mne_lista import LassoProblem

    return LassoProblem(synthetic_gain(40, 80, 3, random_state=1), n_orient=3)
