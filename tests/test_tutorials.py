"""Every tutorial runs end to end offline (quick setting) and draws figures."""

import runpy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

TUTORIALS = sorted((Path(__file__).parents[1] / "tutorials").glob("plot_*.py"))
# minimum number of figures each tutorial draws in its quick setting
MIN_FIGURES = {
    "plot_01_step_lista_sample.py": 5,
    "plot_02_single_trials.py": 2,
    "plot_03_what_the_network_learns.py": 2,
    "plot_04_mixed_norm_twin.py": 1,
}


def test_tutorials_found():
    assert len(TUTORIALS) >= 3
    for fname in TUTORIALS:
        text = fname.read_text()
        assert text.startswith('"""'), f"{fname.name}: no sphinx-gallery docstring"
        assert "\n# %%\n" in text, f"{fname.name}: not in the percent format"
        assert fname.name in MIN_FIGURES


@pytest.fixture
def offline_tutorial_env(monkeypatch, tmp_path, subset_path, fwd_vol):
    """Quick, offline setting; forwards of the subset computed once per session.

    The full sample dataset is hidden (an empty MNE_DATASETS_SAMPLE_PATH) so
    that the tutorials take their offline branch, as on a machine without it.
    """
    import mne_lista.datasets

    monkeypatch.setenv("MNE_LISTA_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    no_sample = tmp_path / "no-sample"
    no_sample.mkdir()
    monkeypatch.setenv("MNE_DATASETS_SAMPLE_PATH", str(no_sample))
    monkeypatch.chdir(tmp_path)
    real = mne_lista.datasets.make_subset_forward
    cache = {("volume", 7.0): fwd_vol}

    def cached_forward(info, kind="volume", pos=7.0, path=None, *, verbose=None):
        key = (kind, float(pos))
        if path is not None or key not in cache:
            cache[key] = real(info, kind=kind, pos=pos, path=path, verbose=verbose)
        return cache[key].copy()

    monkeypatch.setattr(mne_lista.datasets, "make_subset_forward", cached_forward)
    plt.close("all")
    yield tmp_path
    plt.close("all")


@pytest.mark.parametrize("fname", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(fname, offline_tutorial_env):
    runpy.run_path(str(fname), run_name="__main__")
    figs = [plt.figure(n) for n in plt.get_fignums()]
    assert len(figs) >= MIN_FIGURES[fname.name], [f.number for f in figs]
    for k, fig in enumerate(figs):
        # every figure has something drawn in it and renders to a PNG
        assert any(ax.has_data() or ax.images for ax in fig.axes), fig
        out = offline_tutorial_env / f"{fname.stem}-{k}.png"
        fig.savefig(out)
        assert out.stat().st_size > 2000
