"""The pipeline step on a small MNE-BIDS-Pipeline study simulated offline.

The study (3 subjects, known dipoles, see ``mne_lista.datasets.make_study``)
is built once; its derivatives are written with MNE under the pipeline's
names (``MNE_LISTA_PIPELINE_STEPS=1``: by MNE-BIDS-Pipeline's own
preprocessing and sensor steps, 60-140 s more on 2 shared cores).
"""

import json
import os
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest

from mne_lista.pipeline import read_epochs_estimates, run_pipeline

# a small, fast training: with tol, StepMxNE's estimates are certified by the
# exact solver whatever the network learned
FIT = dict(n_windows=16, n_val=8, n_epochs=1)
RUN = dict(fit_kwargs=FIT, chunk_size=30, verbose=False)
SUBJECTS = ("sub-01", "sub-02", "sub-03")


@pytest.fixture(scope="session")
def study(subset_path, tmp_path_factory):
    from mne_lista.datasets import make_study

    steps = os.environ.get("MNE_LISTA_PIPELINE_STEPS", "") not in ("", "0")
    root = tmp_path_factory.mktemp("study")
    return make_study(root, 3, run_pipeline=steps, path=subset_path, verbose=False)


def _copy(src_root, dest):
    """A copy of a study (its config pointing at the copy)."""
    shutil.copytree(src_root, dest)
    config = Path(dest) / "config.py"
    config.write_text(config.read_text().replace(str(src_root), str(dest)))
    return config


def _outputs(root):
    """Our outputs (not the models) of a study, by name relative to root."""
    files = sorted(Path(root).rglob("*+mxne*"))
    return {str(f.relative_to(root)): f for f in files if not f.name.endswith(".npz")}


def _fresh(serial, dest):
    """A copy of the serially run study without its outputs (models kept)."""
    config = _copy(serial["root"], dest)
    for fname in _outputs(dest).values():
        fname.unlink()
    return config


@pytest.fixture(scope="session")
def serial(study, tmp_path_factory):
    root = tmp_path_factory.mktemp("serial") / "study"
    config = _copy(study["config"].parent, root)
    summary = run_pipeline(config, n_jobs=1, **RUN)
    return dict(root=root, config=config, summary=summary, truth=study["truth"])


def _deriv(root, subject):
    return Path(root) / "bids" / "derivatives" / "mne-bids-pipeline" / subject / "meg"


def _check_same(root_a, root_b):
    """Same output files with the same estimates."""
    out_a, out_b = _outputs(root_a), _outputs(root_b)
    assert sorted(out_a) == sorted(out_b)
    for name, fa in out_a.items():
        fb = out_b[name]
        if name.endswith("+hemi.h5"):
            a, b = mne.read_source_estimate(fa), mne.read_source_estimate(fb)
            pairs = [(a, b)]
        elif name.endswith(".h5"):
            pairs = list(
                zip(read_epochs_estimates(fa)[0], read_epochs_estimates(fb)[0])
            )
        else:
            continue
        for a, b in pairs:
            for va, vb in zip(a.vertices, b.vertices):
                np.testing.assert_array_equal(va, vb)
            np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-14)


def test_dipoles_found(serial):
    """Every subject done; the known dipole of each condition is found."""
    from mne_lista.datasets import read_subset_src

    summary = serial["summary"]
    assert summary["ok"]
    assert sorted(summary["subjects"]) == list(SUBJECTS)
    assert all(s["status"] == "done" for s in summary["subjects"].values())
    src = read_subset_src(verbose=False)
    for subject, conditions in serial["truth"].items():
        folder = _deriv(serial["root"], f"sub-{subject}")
        for cond, true in conditions.items():
            stc = mne.read_source_estimate(
                folder / f"sub-{subject}_task-audvis_{cond}+mxne+hemi.h5"
            )
            peak = np.argmax(np.abs(stc.data).max(axis=1))
            hemi = int(peak >= len(stc.vertices[0]))
            vertex = np.concatenate(stc.vertices)[peak]
            dist = np.linalg.norm(src[hemi]["rr"][vertex] - true["pos"])
            assert hemi == true["hemi"], (subject, cond)
            assert dist < 0.02, (subject, cond, dist)
        side = json.loads((folder / f"sub-{subject}_lista+mxne.json").read_text())
        assert set(side) >= {"arguments", "conditions", "timings", "versions"}
        assert side["conditions"]["audvis/auditory"]["rel_gap_max"] <= 1e-4
        assert all(Path(f).is_file() for f in side["outputs"])
        chunks = sorted(folder.glob(f"sub-{subject}_task-audvis_split-*_epo+mxne.h5"))
        assert len(chunks) == 2  # 54 epochs in chunks of 30
        stcs, info = read_epochs_estimates(chunks[0])
        assert len(stcs) == 30 and info["first_epoch"] == 0
        assert set(info["conditions"]) == {"auditory", "visual"}
        report = mne.open_report(folder / f"sub-{subject}_report.h5")
        assert any("mne-lista" in t for t in report.tags)
        assert (folder / f"sub-{subject}_fwd+mxne.npz").is_file()


def test_second_run_does_no_work(serial):
    """Up-to-date outputs are skipped: nothing is rewritten."""
    before = {k: f.stat().st_mtime_ns for k, f in _outputs(serial["root"]).items()}
    summary = run_pipeline(serial["config"], n_jobs=1, **RUN)
    assert summary["ok"]
    assert all(s["status"] == "skipped" for s in summary["subjects"].values())
    after = {k: f.stat().st_mtime_ns for k, f in _outputs(serial["root"]).items()}
    assert before == after


def test_config_and_arguments(serial, tmp_path):
    """The config's subjects and file stamps, and the arguments, are used:
    new arguments redo the subjects (the models are reused), then skip."""
    config = _copy(serial["root"], tmp_path / "study")
    extra = '\nexclude_subjects = ["02"]\nmemory_file_method = "hash"\n'
    config.write_text(config.read_text() + extra)
    for status in ("done", "skipped"):
        summary = run_pipeline(config, n_jobs=1, epochs=False, alpha=50.0, **RUN)
        assert summary["ok"]
        assert sorted(summary["subjects"]) == ["sub-01", "sub-03"]
        assert {s["status"] for s in summary["subjects"].values()} == {status}
    side = json.loads(
        (_deriv(tmp_path / "study", "sub-01") / "sub-01_lista+mxne.json").read_text()
    )
    assert side["arguments"]["alpha"] == 50.0 and not side["epochs"]
    assert side["timings"]["model_reused"]
    assert all("sha256" in v for v in side["key"]["inputs"].values())


def test_joblib_and_dask_same_files(serial, tmp_path, monkeypatch):
    """Serial, joblib (2 workers) and a Dask LocalCluster: the same files.

    On Dask, a worker is killed in the middle of a subject: its nanny
    restarts it and the scheduler runs the task again.
    """
    from mne_lista.pipeline import _KILL_ENV

    config = _fresh(serial, tmp_path / "joblib")
    summary = run_pipeline(config, n_jobs=2, **RUN)
    assert summary["ok"] and summary["backend"] == "loky", summary
    assert all(s["timings"]["model_reused"] for s in summary["subjects"].values())
    _check_same(serial["root"], tmp_path / "joblib")
    config = _fresh(serial, tmp_path / "dask")
    config.write_text(config.read_text() + '\nparallel_backend = "dask"\n')
    monkeypatch.setenv(_KILL_ENV, str(tmp_path / "killed"))
    summary = run_pipeline(config, n_jobs=2, **RUN)
    assert (tmp_path / "killed").is_file()  # a worker did die
    assert summary["ok"] and summary["backend"] == "dask", summary
    _check_same(serial["root"], tmp_path / "dask")


def test_killed_worker(serial, tmp_path, monkeypatch):
    """A joblib worker killed in the middle of a subject (its pool breaks):
    the tasks not done are run again; complete, loadable files."""
    from mne_lista.pipeline import _KILL_ENV

    config = _fresh(serial, tmp_path / "study")
    marker = tmp_path / "killed"
    monkeypatch.setenv(_KILL_ENV, str(marker))
    summary = run_pipeline(config, n_jobs=2, **RUN)
    assert marker.is_file()  # a worker did die
    assert summary["ok"], summary
    _check_same(serial["root"], tmp_path / "study")
    leftovers = list((tmp_path / "study").rglob(".sub-*"))
    assert not leftovers  # no temporary file left


def test_bad_subjects_reported(serial, tmp_path):
    """A corrupt forward and a missing file fail their subjects only."""
    from mne_lista.cli import main

    config = _fresh(serial, tmp_path / "study")
    fwd = _deriv(tmp_path / "study", "sub-02") / "sub-02_fwd.fif"
    fwd.write_bytes(fwd.read_bytes()[:5000])  # truncated
    (_deriv(tmp_path / "study", "sub-03") / "sub-03_task-audvis_ave.fif").unlink()
    summary = run_pipeline(config, n_jobs=1, **RUN)
    assert not summary["ok"]
    subjects = summary["subjects"]
    assert subjects["sub-01"]["status"] == "done"
    assert subjects["sub-02"]["status"] == "failed"
    assert "sub-02_fwd.fif" in subjects["sub-02"]["message"]
    assert subjects["sub-03"]["status"] == "failed"
    assert "missing input" in subjects["sub-03"]["message"]
    assert "sub-03_task-audvis_ave.fif" in subjects["sub-03"]["message"]
    # the command: the good subject is up to date, the exit status says 1
    assert main(["pipeline", "--config", str(config), "-q"]) == 1
