"""The mne-lista command line: help, demo, fit -> apply, clear errors."""

import shutil
import subprocess
import sys
import warnings

import mne
import numpy as np
import pytest

from mne_lista import cli

SUBCOMMANDS = ("demo", "fit", "apply", "pipeline", "bench")


def _run_console(*args):
    """Run the installed console script (or the module) in a subprocess."""
    exe = shutil.which("mne-lista")
    cmd = [exe] if exe else [sys.executable, "-m", "mne_lista.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True)


def test_console_script_help():
    """`mne-lista --help` works from the shell and lists every subcommand."""
    res = _run_console("--help")
    assert res.returncode == 0, res.stderr
    for sub in SUBCOMMANDS:
        assert sub in res.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: mne-lista {sub}" in out
    assert "--quiet" in out


def test_bench_help_lists_benchmarks(capsys):
    names = cli.available_benchmarks()
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in names:
        assert name in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) != 0
    assert "usage: mne-lista" in capsys.readouterr().out


def test_missing_file_console(tmp_path):
    """A missing file: exit status != 0, one line on stderr, no traceback."""
    missing = tmp_path / "nope-fwd.fif"
    res = _run_console(
        "fit", str(missing), str(missing), str(missing), "-o", str(tmp_path / "m")
    )
    assert res.returncode != 0
    err = res.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert "not found" in err and "nope-fwd.fif" in err


def test_unknown_benchmark(capsys):
    assert cli.main(["bench", "no_such_benchmark"]) == 1
    err = capsys.readouterr().err
    assert "unknown benchmark 'no_such_benchmark'" in err


def test_bench_finds_the_checkout_benchmarks():
    """From a source checkout: the scripts of benchmarks/, not its helpers."""
    names = cli.available_benchmarks()
    assert {"solvers", "step_lista", "epochs", "mxne"} <= set(names)
    assert not any(n.startswith("_") for n in names)
    assert cli.benchmarks_dir().name == "benchmarks"


def test_bench_without_benchmarks_folder(tmp_path, monkeypatch, capsys):
    """An installed wheel has no benchmarks: one line naming the way out."""
    monkeypatch.setenv("MNE_LISTA_BENCHMARKS", str(tmp_path / "absent"))
    assert cli.available_benchmarks() == []
    assert cli.main(["bench", "solvers"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "source checkout" in err and "MNE_LISTA_BENCHMARKS" in err


def test_bench_launches_a_script(tmp_path, monkeypatch, capsys):
    """NAME.py runs with --out, --quick and the options after '--'; its own
    helpers import from its folder; its parser's errors are its exit code."""
    (tmp_path / "_helper.py").write_text("VALUE = 42\n")
    (tmp_path / "toy.py").write_text(
        "import argparse\n"
        "from _helper import VALUE\n"
        "def main(argv=None):\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--out')\n"
        "    p.add_argument('--quick', action='store_true')\n"
        "    p.add_argument('--n', type=int, default=0)\n"
        "    a = p.parse_args(argv)\n"
        "    open(a.out, 'w').write(f'{VALUE} {a.quick} {a.n}')\n"
        "    return 0\n"
    )
    monkeypatch.setenv("MNE_LISTA_BENCHMARKS", str(tmp_path))
    assert cli.available_benchmarks() == ["toy"]
    out = tmp_path / "res.txt"
    argv = ["bench", "toy", "--out", str(out), "--quick", "--", "--n", "3"]
    assert cli.main(argv) == 0
    assert out.read_text() == "42 True 3"
    assert cli.main(["bench", "toy", "--", "--bad-option"]) == 2
    assert "--bad-option" in capsys.readouterr().err


def test_bad_option_values(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit", "a", "b", "c", "-o", "m", "--loose", "2"])
    assert exc.value.code != 0
    assert "--loose must be in [0, 1]" in capsys.readouterr().err


def test_demo_quick(tmp_path, capsys):
    """`mne-lista demo --quick` runs end to end and writes its PNG figures."""
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "-q"]) == 0
    stdout = capsys.readouterr().out
    assert "SYNTHETIC" in stdout
    assert "Step-LISTA steps: pretrained" in stdout  # no training to wait for
    for name in ("Step-LISTA", "FISTA", "mixed_norm", "Step-LISTA + tol=1e-6"):
        assert name in stdout
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"demo_evoked.png", "demo_sources.png", "demo_time_courses.png"} <= set(pngs)
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000


def test_demo_head_is_vectorview_like():
    """The synthetic head: 204 planar grads + 102 mags around a sphere."""
    from mne_lista._demo import make_demo_info

    info = make_demo_info()
    assert len(mne.pick_types(info, meg="grad")) == 204
    assert len(mne.pick_types(info, meg="mag")) == 102
    rr = np.array([ch["loc"][:3] for ch in info["chs"]])
    rr = mne.transforms.apply_trans(info["dev_head_t"], rr)
    dist = np.linalg.norm(rr - [0.0, 0.0, 0.04], axis=1)
    assert dist.min() > 0.10  # outside the 9 cm head
    assert dist.max() < 0.20


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, subset_path, fwd_surf):
    """Files of a real problem: forward, covariance, evoked, small epochs."""
    tmp = tmp_path_factory.mktemp("cli")
    fwd_fname = tmp / "surf-fwd.fif"
    mne.write_forward_solution(fwd_fname, fwd_surf, verbose=False)
    evoked = mne.read_evokeds(
        subset_path / "test-ave.fif.gz", condition="Right Auditory", verbose=False
    ).crop(0.07, 0.11)
    epochs = mne.EpochsArray(
        np.repeat(evoked.data[np.newaxis], 3, axis=0)
        + 1e-13 * np.random.default_rng(0).standard_normal((3,) + evoked.data.shape),
        evoked.info,
        tmin=evoked.times[0],
        verbose=False,
    )
    epo_fname = tmp / "small-epo.fif"
    epochs.save(epo_fname, verbose=False)
    return dict(
        tmp=tmp,
        fwd=fwd_fname,
        cov=subset_path / "test-cov.fif",
        ave=subset_path / "test-ave.fif.gz",
        epo=epo_fname,
    )


@pytest.fixture(scope="module")
def cli_model(cli_files):
    model = cli_files["tmp"] / "model.npz"
    ret = cli.main(
        [
            "fit",
            str(cli_files["fwd"]),
            str(cli_files["cov"]),
            str(cli_files["ave"]),
            "--condition",
            "Right Auditory",
            "-o",
            str(model),
            "--method",
            "steplista",
            "--n-layers",
            "5",
            "--loose",
            "0",
            "--n-samples",
            "128",
            "--n-epochs",
            "2",
            "-q",
        ]
    )
    assert ret == 0
    assert model.is_file()
    return model


def test_fit_plain(cli_files, cli_model, capsys):
    """fit --plain writes plain Step-LISTA, which apply reads back; the
    default is the adaptive network."""
    with np.load(cli_model, allow_pickle=False) as npz:
        assert "net.support_exp" in npz.files
    model = cli_files["tmp"] / "plain.npz"
    common = [str(cli_files["fwd"]), str(cli_files["cov"]), str(cli_files["ave"])]
    ret = cli.main(
        ["fit", *common, "--condition", "Right Auditory", "-o", str(model)]
        + ["--n-layers", "3", "--loose", "0", "--n-samples", "64", "--n-epochs", "1"]
        + ["--method", "steplista", "--plain", "-q"]
    )
    assert ret == 0, capsys.readouterr().err
    with np.load(model, allow_pickle=False) as npz:
        assert "steps" in npz.files and "net.support_exp" not in npz.files
    prefix = cli_files["tmp"] / "plain"
    ret = cli.main(
        ["apply", str(model), *common, "--condition", "Right Auditory"]
        + ["--tmin", "0.08", "--tmax", "0.1", "--alpha", "30", "-o", str(prefix), "-q"]
    )
    assert ret == 0, capsys.readouterr().err
    assert np.isfinite(mne.read_source_estimate(str(prefix)).data).all()


def test_fit_apply_round_trip(cli_files, cli_model, fwd_surf, capsys):
    """fit -> model file -> apply on evoked and epochs -> readable stc files."""
    prefix = cli_files["tmp"] / "ra"
    ret = cli.main(
        [
            "apply",
            str(cli_model),
            str(cli_files["fwd"]),
            str(cli_files["cov"]),
            str(cli_files["ave"]),
            "--condition",
            "Right Auditory",
            "--tmin",
            "0.07",
            "--tmax",
            "0.11",
            "--alpha",
            "30",
            "-o",
            str(prefix),
            "-q",
        ]
    )
    assert ret == 0, capsys.readouterr().err
    stc = mne.read_source_estimate(str(prefix))
    assert isinstance(stc, mne.SourceEstimate)
    assert stc.data.shape[1] == len(
        mne.read_evokeds(cli_files["ave"], condition="Right Auditory", verbose=False)
        .crop(0.07, 0.11)
        .times
    )
    assert 0 < stc.data.shape[0] <= fwd_surf["nsource"]
    assert np.isfinite(stc.data).all()
    src = fwd_surf["src"]
    for hemi in range(2):
        assert np.isin(stc.vertices[hemi], src[hemi]["vertno"]).all()

    prefix = cli_files["tmp"] / "trials"
    ret = cli.main(
        [
            "apply",
            str(cli_model),
            str(cli_files["fwd"]),
            str(cli_files["cov"]),
            str(cli_files["epo"]),
            "--alpha",
            "30",
            "--baseline",
            "none",
            "-o",
            str(prefix),
            "-q",
        ]
    )
    assert ret == 0, capsys.readouterr().err
    for k in range(3):
        stc = mne.read_source_estimate(str(prefix) + f"-epo{k}")
        assert np.isfinite(stc.data).all()


def test_apply_mismatched_files(cli_files, cli_model, fwd_surf, capsys):
    """A model applied with another forward or to a non-data file: clear error."""
    # another forward: the same source space, 20 fewer channels
    other = mne.pick_channels_forward(
        fwd_surf, exclude=fwd_surf["info"]["ch_names"][:20], verbose=False
    )
    vol_fname = cli_files["tmp"] / "other-fwd.fif"
    mne.write_forward_solution(vol_fname, other, overwrite=True, verbose=False)
    common = ["--alpha", "30", "-o", str(cli_files["tmp"] / "x"), "-q"]
    ret = cli.main(
        ["apply", str(cli_model), str(vol_fname), str(cli_files["cov"])]
        + [str(cli_files["ave"]), "--condition", "Right Auditory"]
        + common
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert err.startswith("mne-lista apply: error:") and "model" in err
    assert len(err.strip().splitlines()) == 1

    # the covariance file is not a data file
    ret = cli.main(
        ["apply", str(cli_model), str(cli_files["fwd"]), str(cli_files["cov"])]
        + [str(cli_files["cov"])]
        + common
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "neither an evoked nor an epochs file" in err

    # a forward file given as the covariance
    ret = cli.main(
        ["fit", str(cli_files["fwd"]), str(cli_files["fwd"]), str(cli_files["ave"])]
        + ["-o", str(cli_files["tmp"] / "y.npz"), "-q"]
    )
    assert ret == 1
    assert "could not read the noise covariance" in capsys.readouterr().err


def test_fit_refuses_to_overwrite(cli_files, cli_model, capsys):
    ret = cli.main(
        ["fit", str(cli_files["fwd"]), str(cli_files["cov"]), str(cli_files["ave"])]
        + ["-o", str(cli_model), "-q"]
    )
    assert ret == 1
    assert "output file exists" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# issue #18: --method mxne (default) / steplista, --baseline, clean failures


@pytest.fixture(scope="module")
def cli_mxne_model(cli_files):
    """A StepMxNE model file, trained by the default `fit` (no --method)."""
    model = cli_files["tmp"] / "mxne.npz"
    common = [str(cli_files["fwd"]), str(cli_files["cov"]), str(cli_files["ave"])]
    ret = cli.main(
        ["fit", *common, "-o", str(model), "--n-layers", "3", "--loose", "0"]
        + ["--n-samples", "16", "--n-epochs", "1", "-q"]
    )
    assert ret == 0
    return model


def _apply_args(model, cli_files, data="ave", *extra):
    return ["apply", str(model), str(cli_files["fwd"]), str(cli_files["cov"])] + [
        str(cli_files[data]),
        *extra,
        "-q",
    ]


def test_fit_default_is_mxne_and_apply_matches_python(
    cli_files, cli_mxne_model, fwd_surf, capsys
):
    """The default path: StepMxNE certified to tol=1e-4 (mixed_norm's tol) on
    the evoked baseline-corrected with (None, 0), as in the tutorials: the CLI
    gives the stc of the Python API."""
    from mne_lista import read_step_mxne
    from mne_lista._io import read_model_metadata

    assert read_model_metadata(cli_mxne_model)["network"] == "StepMxNENet"
    assert not list(cli_files["tmp"].glob(".*"))  # written atomically, no leftovers
    prefix = cli_files["tmp"] / "mx-ra"
    args = ["--condition", "Right Auditory", "--tmin", "0.07", "--tmax", "0.11"]
    ret = cli.main(
        _apply_args(cli_mxne_model, cli_files, "ave", *args, "--alpha", "40")
        + ["-o", str(prefix)]
    )
    assert ret == 0, capsys.readouterr().err
    assert "StepMxNE" in capsys.readouterr().out
    stc_cli = mne.read_source_estimate(str(prefix))

    cov = mne.read_cov(cli_files["cov"], verbose=False)
    evoked = mne.read_evokeds(
        cli_files["ave"], condition="Right Auditory", baseline=(None, 0), verbose=False
    ).crop(0.07, 0.11)
    model = read_step_mxne(cli_mxne_model, fwd_surf, cov, evoked.info)
    stc = model.apply(evoked, 40, tol=1e-4)
    assert model.certificate_["n_resolved"] == 1  # solved exactly, certified
    assert len(stc.vertices[0]) + len(stc.vertices[1]) > 0
    for hemi in range(2):
        np.testing.assert_array_equal(stc_cli.vertices[hemi], stc.vertices[hemi])
    np.testing.assert_allclose(stc_cli.data, stc.data, rtol=1e-5, atol=1e-15)

    # without a baseline correction the data, hence the estimate, differ
    ret = cli.main(
        _apply_args(cli_mxne_model, cli_files, "ave", *args, "--alpha", "40")
        + ["--baseline", "none", "-o", str(cli_files["tmp"] / "mx-nobl")]
    )
    assert ret == 0
    stc_raw = mne.read_source_estimate(str(cli_files["tmp"] / "mx-nobl"))
    assert stc_raw.data.shape != stc.data.shape or not np.allclose(
        stc_raw.data, stc.data
    )


def test_apply_method_must_match_model(cli_files, cli_mxne_model, capsys):
    ret = cli.main(
        _apply_args(cli_mxne_model, cli_files, "ave", "--condition", "0")
        + ["--alpha", "40", "--method", "steplista", "-o", str(cli_files["tmp"] / "z")]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "holds a StepMxNENet network" in err and "--method mxne" in err


@pytest.mark.parametrize(
    "value, expected",
    [
        ("none", None),
        ("None,0", (None, 0.0)),
        ("-0.2,0", (-0.2, 0.0)),
        ("0.1,None", (0.1, None)),
    ],
)
def test_parse_baseline(value, expected):
    assert cli._parse_baseline(value) == expected


def test_baseline_outside_data(cli_files, cli_model, capsys):
    """The default baseline (None, 0) on epochs that start at 70 ms: one line
    that says what to do."""
    ret = cli.main(
        _apply_args(cli_model, cli_files, "epo", "--alpha", "30")
        + ["-o", str(cli_files["tmp"] / "bl")]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "--baseline None,0 is outside the data" in err
    assert "--baseline none" in err and len(err.strip().splitlines()) == 1
    assert not list(cli_files["tmp"].glob("bl*"))


def test_nan_condition_writes_nothing(cli_files, cli_mxne_model, tmp_path, capsys):
    """A NaN in the 2nd condition: an error naming it, and no file at all."""
    evokeds = mne.read_evokeds(cli_files["ave"], verbose=False)[:2]
    evokeds[1].data[3, 10] = np.nan
    fname = tmp_path / "nan-ave.fif"
    mne.write_evokeds(fname, evokeds, verbose=False)
    out = tmp_path / "out"
    out.mkdir()
    ret = cli.main(
        ["apply", str(cli_mxne_model), str(cli_files["fwd"]), str(cli_files["cov"])]
        + [str(fname), "--alpha", "40", "-o", str(out / "x"), "-q"]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "condition 'Right Auditory'" in err and "NaN" in err
    assert len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []  # no .stc, no temporary folder


def test_apply_refuses_to_overwrite(cli_files, cli_mxne_model, tmp_path, capsys):
    """As fit: existing outputs need --overwrite; with it they are replaced."""
    prefix = tmp_path / "ra"
    args = _apply_args(cli_mxne_model, cli_files, "ave", "--condition", "1")
    args += ["--alpha", "40", "--tmin", "0.07", "--tmax", "0.11", "-o", str(prefix)]
    assert cli.main(args) == 0
    stale = tmp_path / "ra-lh.stc"
    stale.write_bytes(b"stale")
    assert cli.main(args) == 1
    assert "exist (use --overwrite)" in capsys.readouterr().err
    assert stale.read_bytes() == b"stale"
    assert cli.main(args + ["--overwrite"]) == 0
    assert np.isfinite(mne.read_source_estimate(str(prefix)).data).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ra-lh.stc", "ra-rh.stc"]


def test_zero_data_exact_zero_estimate(cli_files, cli_mxne_model, tmp_path, capsys):
    """All-zero data: the zero estimate (exact), written without warnings."""
    evoked = mne.read_evokeds(cli_files["ave"], condition=1, verbose=False)
    evoked.data[:] = 0.0
    fname = tmp_path / "zero-ave.fif"
    evoked.save(fname, verbose=False)
    prefix = tmp_path / "zero"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ret = cli.main(
            ["apply", str(cli_mxne_model), str(cli_files["fwd"])]
            + [str(cli_files["cov"]), str(fname), "--alpha", "40"]
            + ["-o", str(prefix), "-q"]
        )
    assert ret == 0, capsys.readouterr().err
    assert [str(w.message) for w in caught] == []
    assert "zero estimate is exact" in capsys.readouterr().out
    stc = mne.read_source_estimate(str(prefix))
    assert stc.data.shape == (0, len(evoked.times))


def test_alpha_zero(cli_files, cli_model, cli_mxne_model, tmp_path, capsys):
    """--alpha 0 is accepted as by the API; with --tol it is a one-line error."""
    common = ["--condition", "1", "--tmin", "0.08", "--tmax", "0.09"]
    ret = cli.main(
        _apply_args(cli_model, cli_files, "ave", *common, "--alpha", "0")
        + ["-o", str(tmp_path / "a0")]
    )
    assert ret == 0, capsys.readouterr().err
    assert mne.read_source_estimate(str(tmp_path / "a0")).data.shape[0] > 0
    ret = cli.main(
        _apply_args(cli_mxne_model, cli_files, "ave", *common, "--alpha", "0")
        + ["-o", str(tmp_path / "b0")]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "--alpha 0 has no sparse solution to certify with --tol" in err
    with pytest.raises(SystemExit):
        cli.main(_apply_args(cli_model, cli_files, "ave", "--alpha", "100", "-o", "x"))
    assert "--alpha must be in [0, 100)" in capsys.readouterr().err


def test_truncated_forward_one_line(cli_files, tmp_path):
    """A truncated forward: one line naming the file, no MNE warning noise."""
    data = cli_files["fwd"].read_bytes()
    fname = tmp_path / "trunc-fwd.fif"
    fname.write_bytes(data[: len(data) // 2])
    res = _run_console(
        "fit",
        str(fname),
        str(cli_files["cov"]),
        str(cli_files["ave"]),
        "-o",
        str(tmp_path / "m.npz"),
        "-q",
    )
    assert res.returncode == 1
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "trunc-fwd.fif" in err and "truncated or corrupt" in err
    assert "RuntimeWarning" not in err and "size 1" not in err
    assert res.stdout == ""
    assert not (tmp_path / "m.npz").exists()


def test_unknown_condition_lists_all(cli_files, capsys):
    ret = cli.main(
        ["fit", str(cli_files["fwd"]), str(cli_files["cov"]), str(cli_files["ave"])]
        + ["--condition", "Nope", "-o", str(cli_files["tmp"] / "n.npz"), "-q"]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "condition 'Nope' not found" in err
    for name in ("Left Auditory", "Right Auditory", "Left visual", "Right visual"):
        assert f"'{name}'" in err


def test_fit_cuda_unavailable(cli_files, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ret = cli.main(
        ["fit", str(cli_files["fwd"]), str(cli_files["cov"]), str(cli_files["ave"])]
        + ["--device", "cuda", "-o", str(cli_files["tmp"] / "c.npz"), "-q"]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "forward" not in err


def test_demo_glass_head_figure():
    """The demo's source figure: every estimate on three orthogonal views of
    the head outline, with the simulated dipoles at their projected places."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from mne_lista._demo import _HEAD_RADIUS, _plot_glass_sources

    rng = np.random.default_rng(0)
    grid = rng.uniform(-50, 50, (200, 3)) + [0, 0, 40]
    true_pos = np.array([[0.03, 0.01, 0.08], [-0.04, -0.02, 0.05]])
    estimates = {
        "Step-LISTA": (None, true_pos + 0.005, np.array([1.0, 0.5])),
        "mixed_norm": (None, np.zeros((0, 3)), np.zeros(0)),
    }
    fig = plt.figure()
    axes = _plot_glass_sources(fig, grid, true_pos, estimates)
    assert axes.shape == (2, 3)
    for ax, (i, j) in zip(axes[0], ((1, 2), (0, 2), (0, 1))):
        radii = [p.radius for p in ax.patches if isinstance(p, Circle)]
        assert 1e3 * _HEAD_RADIUS in radii  # the head outline
        stars = ax.collections[-1].get_offsets()
        np.testing.assert_allclose(stars, 1e3 * true_pos[:, [i, j]])
    plt.close(fig)


def test_epochs_checked_before_writing(cli_files, cli_mxne_model, tmp_path, capsys):
    """Epochs: a NaN epoch is named and nothing is written; a zero epoch gets
    the exact zero estimate, the others StepMxNE's."""
    epochs = mne.read_epochs(cli_files["epo"], verbose=False)
    data = epochs.get_data()
    data[1, 2, 3] = np.inf
    bad = tmp_path / "bad-epo.fif"
    mne.EpochsArray(data, epochs.info, tmin=epochs.tmin, proj=False).save(bad)
    out = tmp_path / "out"
    out.mkdir()
    common = ["--alpha", "40", "--baseline", "none", "-q"]
    ret = cli.main(
        ["apply", str(cli_mxne_model), str(cli_files["fwd"]), str(cli_files["cov"])]
        + [str(bad), "-o", str(out / "e"), *common]
    )
    assert ret == 1
    err = capsys.readouterr().err
    assert "epochs: epoch(s) [1]: NaN or infinite" in err
    assert list(out.iterdir()) == []

    data[1] = 0.0
    zero = tmp_path / "zero-epo.fif"
    mne.EpochsArray(data, epochs.info, tmin=epochs.tmin, verbose=False).save(zero)
    ret = cli.main(
        ["apply", str(cli_mxne_model), str(cli_files["fwd"]), str(cli_files["cov"])]
        + [str(zero), "-o", str(out / "e"), *common]
    )
    assert ret == 0, capsys.readouterr().err
    assert "1 zero after whitening" in capsys.readouterr().out
    n_active = [
        mne.read_source_estimate(str(out / f"e-epo{k}")).shape[0] for k in range(3)
    ]
    assert n_active[1] == 0 and n_active[0] > 0 and n_active[2] > 0
    assert len(list(out.iterdir())) == 6  # lh + rh per epoch, no leftovers
