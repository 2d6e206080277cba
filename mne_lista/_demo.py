"""A synthetic default head built only from files that MNE-Python ships.

Nothing here is downloaded and nothing is read from a dataset: the sensor
array is a *Vectorview-like* 306-channel MEG array (102 sites, each with one
magnetometer and two orthogonal planar gradiometers, MNE's Vectorview coil
definitions) placed on the Elekta/Neuromag 306-channel helmet surface that
ships in ``mne/data/helmets/306m.fif.gz``; the head is MNE's spherical
conductor model (:func:`mne.make_sphere_model`); the sources live on a regular
volume grid inside the sphere; the noise covariance is MNE's ad hoc diagonal
covariance (:func:`mne.make_ad_hoc_cov`). It is synthetic: sensor positions
are approximate, and there is no real anatomy or recording.
"""

import textwrap
from pathlib import Path

import mne
import numpy as np
from mne.io.constants import FIFF
from mne.utils import (
    _validate_type,
    check_random_state,
    logger,
    use_log_level,
    verbose,
)

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: spherical head model, Vectorview-like 306-channel MEG "
    "array placed on MNE's shipped Neuromag helmet surface, simulated sources "
    "and noise (no real recording, no download)"
)

_HEAD_R0 = np.array([0.0, 0.0, 0.04])  # sphere centre, head coordinates (m)
_HEAD_RADIUS = 0.09
_N_SITES = 102


def _helmet_surface():
    fname = Path(mne.__file__).parent / "data" / "helmets" / "306m.fif.gz"
    if not fname.is_file():  # pragma: no cover - MNE always ships it
        raise FileNotFoundError(f"MNE's Neuromag helmet surface is missing: {fname}")
    return mne.read_bem_surfaces(
        fname, False, FIFF.FIFFV_MNE_SURF_MEG_HELMET, verbose=False
    )


def _farthest_points(rr, n_points):
    """Deterministic farthest-point subsampling (indices into rr)."""
    # start from the vertex closest to the top of the helmet
    idx = [int(np.argmax(rr[:, 2]))]
    dist = np.linalg.norm(rr - rr[idx[0]], axis=1)
    for _ in range(n_points - 1):
        nxt = int(np.argmax(dist))
        idx.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(rr - rr[nxt], axis=1))
    return np.array(idx)


def _fit_sphere_center(rr):
    """Least-squares centre of the sphere through points rr."""
    A = np.c_[2 * rr, np.ones(len(rr))]
    sol = np.linalg.lstsq(A, (rr * rr).sum(1), rcond=None)[0]
    return sol[:3]


def _tangents(nn):
    """Two unit tangent vectors orthogonal to each normal."""
    ref = np.tile([0.0, 0.0, 1.0], (len(nn), 1))
    near_pole = np.abs(nn[:, 2]) > 0.9
    ref[near_pole] = [1.0, 0.0, 0.0]
    ex = np.cross(ref, nn)
    ex /= np.linalg.norm(ex, axis=1, keepdims=True)
    ey = np.cross(nn, ex)
    return ex, ey


def make_demo_info(sfreq=600.0):
    """Measurement info of a Vectorview-like 306-channel MEG array.

    The 102 sensor sites are spread evenly (farthest-point sampling) over
    the vertices of MNE's shipped Neuromag helmet surface and moved 1 cm
    outwards along its normals; the device-to-head transform puts the
    sphere head model 1.5 cm above the centre of the helmet.

    Returns
    -------
    info : Info
        204 planar gradiometers and 102 magnetometers (device coordinates
        with a ``dev_head_t``), channel names in Vectorview style.
    """
    helmet = _helmet_surface()
    rr, nn = helmet["rr"], helmet["nn"]
    sel = _farthest_points(rr, _N_SITES)
    # order the sites front-to-back, left-to-right for stable naming
    sel = sel[np.lexsort((rr[sel, 0], -rr[sel, 1]))]
    pos = rr[sel] + 0.01 * nn[sel]
    ez = nn[sel] / np.linalg.norm(nn[sel], axis=1, keepdims=True)
    ex, ey = _tangents(ez)
    ch_names, ch_types, locs = [], [], []
    for k in range(_N_SITES):
        base = f"MEG {k + 1:03d}"
        # Vectorview convention: ...2 and ...3 are the two gradiometers
        for suffix, kind, e1, e2 in (
            ("2", "grad", ex[k], ey[k]),
            ("3", "grad", ey[k], -ex[k]),
            ("1", "mag", ex[k], ey[k]),
        ):
            ch_names.append(base + suffix)
            ch_types.append(kind)
            locs.append(np.concatenate([pos[k], e1, e2, ez[k]]))
    info = mne.create_info(ch_names, float(sfreq), ch_types)
    with info._unlock():
        for ch, loc in zip(info["chs"], locs):
            ch["loc"][:] = loc
            ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE
        r0_dev = _fit_sphere_center(rr) + np.array([0.0, -0.005, 0.015])
        trans = np.eye(4)
        trans[:3, 3] = _HEAD_R0 - r0_dev
        info["dev_head_t"] = mne.transforms.Transform("meg", "head", trans)
        info["description"] = SYNTHETIC_NOTE
    return info


def make_demo_sphere():
    """The spherical conductor model of the demo head."""
    return mne.make_sphere_model(
        r0=tuple(_HEAD_R0), head_radius=_HEAD_RADIUS, verbose=False
    )


@verbose
def make_demo_head(pos=10.0, sfreq=600.0, *, verbose=None):
    """Build the synthetic demo head: info, forward model, noise covariance.

    Parameters
    ----------
    pos : float
        Spacing (mm) of the volume source grid inside the sphere. Sources
        less than 25 mm from the sphere centre (silent or nearly so for MEG
        in a spherical head) are excluded.
    sfreq : float
        Sampling frequency of the info.
    verbose : bool | str | int | None
        Control verbosity of the logging output.

    Returns
    -------
    head : dict
        ``info`` (Info), ``forward`` (Forward, free orientation),
        ``noise_cov`` (Covariance, ad hoc diagonal), ``sphere``
        (ConductorModel), ``src`` (SourceSpaces) and ``note`` (str, saying
        that all of it is synthetic).
    """
    _validate_type(pos, "numeric", "pos")
    logger.info(SYNTHETIC_NOTE)
    info = make_demo_info(sfreq)
    sphere = make_demo_sphere()
    inner = _HEAD_RADIUS * 0.9  # inner skull radius of the sphere model
    src = mne.setup_volume_source_space(
        None,
        pos=float(pos),
        sphere=tuple(_HEAD_R0) + (inner,),
        exclude=25.0,
        mindist=5.0,
        add_interpolator=False,
        verbose=False,
    )
    forward = mne.make_forward_solution(
        info, None, src, sphere, meg=True, eeg=False, verbose=False
    )
    noise_cov = mne.make_ad_hoc_cov(info, verbose=False)
    logger.info(
        f"    demo head: {len(info['ch_names'])} MEG channels, "
        f"{forward['nsource']} source positions ({pos} mm grid)"
    )
    return dict(
        info=info,
        forward=forward,
        noise_cov=noise_cov,
        sphere=sphere,
        src=forward["src"],
        note=SYNTHETIC_NOTE,
    )


@verbose
def simulate_demo_evoked(
    head,
    n_sources=2,
    *,
    amplitude=40e-9,
    nave=30,
    tmin=-0.1,
    tmax=0.3,
    min_distance=0.03,
    random_state=None,
    verbose=None,
):
    """Simulate an evoked response of a few dipoles on the demo head.

    The active positions are drawn among the superficial grid points (at
    least 45 mm from the sphere centre), at least ``min_distance`` apart,
    with orientations tangential to the sphere (radial dipoles are silent
    in a spherical head) and damped-oscillation time courses peaking
    around 100 ms; sensor noise is drawn from the noise covariance.

    Returns
    -------
    evoked : Evoked
        The simulated evoked response (noise of ``nave`` averages).
    stc : VolVectorSourceEstimate
        The simulated source activity (truth), in Am.
    """
    rng = check_random_state(random_state)
    fwd = head["forward"]
    src = fwd["src"]
    rr = src[0]["rr"][src[0]["vertno"]]
    rad = rr - _HEAD_R0
    ecc = np.linalg.norm(rad, axis=1)
    cand = np.where(ecc > 0.045)[0]
    chosen = []
    for idx in rng.permutation(cand):
        if all(np.linalg.norm(rr[idx] - rr[c]) >= min_distance for c in chosen):
            chosen.append(int(idx))
        if len(chosen) == n_sources:
            break
    if len(chosen) < n_sources:
        raise ValueError(
            f"could not place {n_sources} sources {min_distance * 1e3:.0f} mm "
            "apart on the demo grid"
        )
    chosen = np.sort(chosen)
    sfreq = head["info"]["sfreq"]
    times = np.arange(int(round(tmin * sfreq)), int(round(tmax * sfreq)) + 1) / sfreq
    data = np.zeros((len(chosen), 3, len(times)))
    for k, idx in enumerate(chosen):
        radial = rad[idx] / ecc[idx]
        ori = rng.standard_normal(3)
        ori -= ori.dot(radial) * radial
        ori /= np.linalg.norm(ori)
        latency = 0.08 + 0.04 * rng.random()
        freq = 8.0 + 4.0 * rng.random()
        env = np.exp(-0.5 * ((times - latency) / 0.025) ** 2)
        wave = env * np.cos(2 * np.pi * freq * (times - latency))
        data[k] = amplitude * (0.6 + 0.4 * rng.random()) * ori[:, None] * wave
    vertno = src[0]["vertno"][chosen]
    stc = mne.VolVectorSourceEstimate(
        data, [vertno], tmin=times[0], tstep=1.0 / sfreq, subject=None
    )
    evoked = mne.simulation.simulate_evoked(
        fwd,
        stc,
        head["info"],
        head["noise_cov"],
        nave=nave,
        **_rng_kwarg(mne.simulation.simulate_evoked, rng),
        use_cps=False,
        verbose=False,
    )
    evoked.comment = "simulated (synthetic demo head)"
    return evoked, stc


def _rng_kwarg(func, rng):
    """``rng=`` for MNE versions that have it, else ``random_state=``."""
    import inspect

    name = "rng" if "rng" in inspect.signature(func).parameters else "random_state"
    return {name: rng}


# ----------------------------------------------------------------------------
# the end-to-end demo behind ``mne-lista demo``


@verbose
def run_demo(
    out_dir=None,
    *,
    quick=False,
    alpha=None,
    train=False,
    random_state=0,
    verbose=None,
):
    """Run the synthetic end-to-end demo of ``mne-lista demo``.

    Simulate dipoles on the synthetic head of :func:`make_demo_head`, build
    Step-LISTA on it (its pretrained steps: no training, unless ``train``),
    localize the simulated evoked response with Step-LISTA, FISTA and
    :func:`mne.inverse_sparse.mixed_norm` at the same ``alpha``, and compare
    wall times and localization errors against the simulated truth.

    Parameters
    ----------
    out_dir : path-like | None
        Folder for the PNG figures (created); None writes no figure.
    quick : bool
        Coarse grid and, with ``train``, small training (for tests).
    alpha : float | None
        Regularization in %% of alpha_max, as mixed_norm (default 30).
    train : bool
        Also refine the pretrained steps on the demo head with
        :meth:`~mne_lista.StepLISTA.fit` (its default budget: minutes).
    random_state : int | None
        Seed of the simulation and of the training.
    verbose : bool | str | int | None
        Control verbosity of the logging output.

    Returns
    -------
    results : dict
        ``rows`` (one dict per method: name, time_s, loc_error_mm,
        n_active), ``fit_time_s`` (0 without ``train``), ``n_sources``, ``n_positions``,
        ``figures`` (written PNG files), ``note``.
    """
    import copy
    import time

    from mne.inverse_sparse import mixed_norm

    from .inverse import StepLISTA
    from .networks import UnrolledISTA
    from .simulation import localization_error, source_positions

    alpha = 30.0 if alpha is None else float(alpha)
    # 20 layers: the number the shipped pretrained steps are for
    pos, n_layers = (20.0 if quick else 12.0), 20
    n_fista = (n_layers, 50 if quick else 200)
    fit_kwargs = dict(random_state=random_state)
    if quick:
        fit_kwargs.update(n_samples=64, n_epochs=1)
    logger.info(SYNTHETIC_NOTE)
    head = make_demo_head(pos=pos, verbose=False)
    fwd, cov, info = head["forward"], head["noise_cov"], head["info"]
    evoked, stc_true = simulate_demo_evoked(
        head, n_sources=2, random_state=random_state
    )
    evoked_win = evoked.copy().crop(0.05, 0.15)
    src = fwd["src"]
    true_pos, _ = source_positions(stc_true, src)
    loose, depth = 1.0, 0.9

    model = StepLISTA(
        fwd, cov, info, n_layers=n_layers, loose=loose, depth=depth, verbose=False
    )
    fit_time = 0.0
    if train:
        t0 = time.perf_counter()
        model.fit(**fit_kwargs)
        fit_time = time.perf_counter() - t0

    problem = model.problem
    rows, estimates = [], {}

    def _row(key, label, stc, wall, rel_gap=None):
        pos_, amp_ = source_positions(stc, src)
        estimates[key] = (stc, pos_, amp_)
        err, disp = localization_error(true_pos, pos_, amp_)
        rows.append(
            dict(
                name=label,
                time_s=wall,
                loc_error_mm=1e3 * err,
                dispersion_mm=1e3 * disp,
                n_active=int(len(pos_)),
                max_rel_gap=None
                if rel_gap is None
                else float(np.max(np.asarray(rel_gap))),
            )
        )

    # Step-LISTA
    t0 = time.perf_counter()
    stc = model.apply(evoked_win, alpha, verbose=False)
    wall = time.perf_counter() - t0
    _row(
        "Step-LISTA",
        f"Step-LISTA ({n_layers} layers)",
        stc,
        wall,
        model.certificate_["rel_gap"],
    )
    # the same, with every sample's duality gap certified below 1e-6 (the
    # uncertified samples finished by the exact solver from the net's output)
    t0 = time.perf_counter()
    stc = model.apply(evoked_win, alpha, tol=1e-6, verbose=False)
    wall = time.perf_counter() - t0
    _row(
        "Step-LISTA-tol",
        f"Step-LISTA + tol=1e-6 ({model.certificate_['n_resolved']} finished)",
        stc,
        wall,
        model.certificate_["rel_gap"],
    )
    # FISTA on the same per-sample problems, through the same MNE glue (an
    # untrained network with momentum is FISTA): with the budget of the
    # network, then with many more iterations
    fista_model = copy.copy(model)
    for n_iter in n_fista:
        fista_model.net = UnrolledISTA(problem, n_iter, momentum=True)
        t0 = time.perf_counter()
        with use_log_level("warning"):
            stc = fista_model.apply(evoked_win, alpha)
        wall = time.perf_counter() - t0
        cert = fista_model.certificate_
        _row(f"FISTA-{n_iter}", f"FISTA ({n_iter} it.)", stc, wall, cert["rel_gap"])
    # MNE's mixed_norm (one multi-task problem over the window)
    t0 = time.perf_counter()
    stc = mixed_norm(
        evoked_win, fwd, cov, alpha=alpha, loose=loose, depth=depth, verbose=False
    )
    _row("mixed_norm", "mixed_norm (MNE)", stc, time.perf_counter() - t0)
    figures = []
    if out_dir is not None:
        figures = _demo_figures(
            Path(out_dir), evoked, stc_true, true_pos, estimates, model, src
        )
    return dict(
        rows=rows,
        fit_time_s=fit_time,
        pretrained=model.pretrained,
        trained=bool(train),
        n_layers=n_layers,
        alpha=alpha,
        n_sources=len(true_pos),
        n_positions=int(fwd["nsource"]),
        n_times=len(evoked_win.times),
        figures=[str(f) for f in figures],
        note=SYNTHETIC_NOTE,
    )


def format_demo_table(res):
    """The text table printed by ``mne-lista demo``."""
    lines = [
        res["note"],
        f"{res['n_sources']} simulated dipoles, {res['n_positions']} source "
        f"positions (free orientation), {res['n_times']} time samples, "
        f"alpha = {res['alpha']:g} % of alpha_max",
        _steps_line(res),
        "",
        f"{'method':<36}{'time (s)':>9}{'error (mm)':>12}{'dispersion (mm)':>17}"
        f"{'active':>8}{'max gap':>10}",
        "-" * 92,
    ]
    for row in res["rows"]:
        gap = row["max_rel_gap"]
        gap = "-" if gap is None else f"{gap:.1e}"
        lines.append(
            f"{row['name']:<36}{row['time_s']:>9.3f}{row['loc_error_mm']:>12.1f}"
            f"{row['dispersion_mm']:>17.1f}{row['n_active']:>8d}{gap:>10}"
        )
    notes = (
        "error: mean distance from each simulated dipole to the nearest of the "
        "(as many) strongest estimated sources. dispersion: amplitude-weighted "
        "mean distance from the estimated sources to the nearest simulated "
        "dipole. active: number of estimated source positions. max gap: "
        "largest relative duality gap of the per-sample Lasso over the window "
        "(the certificate; 0 = solved exactly); with tol, the samples above "
        "it are finished by the exact solver (their number in parentheses)."
    )
    lines += ["", *textwrap.wrap(notes, 92)]
    return "\n".join(lines)


def _steps_line(res):
    if res.get("trained", True):
        return (
            f"Step-LISTA training (once per forward model): {res['fit_time_s']:.1f} s"
            + (" from the pretrained steps" if res.get("pretrained") else "")
        )
    if res.get("pretrained"):
        return "Step-LISTA steps: pretrained (shipped with the package, no training)"
    return "Step-LISTA steps: ISTA (no pretrained steps, no training)"


def _demo_figures(out_dir, evoked, stc_true, true_pos, estimates, model, src):
    import matplotlib

    from .simulation import source_positions

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig = evoked.plot(show=False, spatial_colors=True, time_unit="ms")
    fig.suptitle("Simulated evoked response (synthetic head)")
    written.append(_savefig(fig, out_dir / "demo_evoked.png"))

    grid = src[0]["rr"][src[0]["vertno"]] * 1e3
    shown = [
        k for k in ("Step-LISTA", "Step-LISTA-tol", "mixed_norm") if k in estimates
    ]
    shown = {k: estimates[k] for k in shown or estimates}
    fig = plt.figure(figsize=(9.5, 3.1 * len(shown) + 0.9), layout="constrained")
    _plot_glass_sources(fig, grid, true_pos, shown)
    fig.suptitle(
        "Estimated sources (dots, size: amplitude) and simulated dipoles (stars)\n"
        "seen through the synthetic head; shaded: source space, dashed: inner skull",
        fontsize=11,
    )
    written.append(_savefig(fig, out_dir / "demo_sources.png"))

    stc_sl = estimates["Step-LISTA"][0]
    stc_mx = estimates["mixed_norm"][0]
    true_amp = np.linalg.norm(stc_true.data, axis=1)
    fig, axes = plt.subplots(
        len(true_pos),
        1,
        figsize=(7, 2.6 * len(true_pos)),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    for k, ax in enumerate(axes[:, 0]):
        ax.plot(stc_true.times * 1e3, true_amp[k] * 1e9, "k", lw=2, label="simulated")
        for name, stc, color in (
            ("Step-LISTA", stc_sl, "C0"),
            ("mixed_norm", stc_mx, "C3"),
        ):
            pos, _ = source_positions(stc, src)
            if len(pos):
                dist = np.linalg.norm(pos - true_pos[k], axis=1)
                near = int(np.argmin(dist))
                ax.plot(
                    stc.times * 1e3,
                    np.abs(stc.data[near]) * 1e9,
                    color=color,
                    label=f"{name} ({1e3 * dist[near]:.0f} mm away)",
                )
        ax.set(ylabel="amplitude (nAm)", title=f"dipole {k + 1}")
    axes[-1, 0].set(xlabel="time (ms)")
    for ax in axes[:, 0]:
        ax.legend(fontsize=8)
    written.append(_savefig(fig, out_dir / "demo_time_courses.png"))

    steps = getattr(model.net, "steps", None)
    if steps is not None:
        steps = np.asarray(steps() if callable(steps) else steps, dtype=float)
        fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
        layers = np.arange(1, len(steps) + 1)
        ax.semilogy(layers, steps * model.problem.lipschitz, "o-", label="learned")
        ax.axhline(1.0, color="k", ls="--", label="1/L (ISTA)")
        ax.set(xlabel="layer", ylabel="step x L", title="Learned Step-LISTA steps")
        ax.legend()
        written.append(_savefig(fig, out_dir / "demo_steps.png"))
    return written


def _glass_head(ax, view, grid):
    """Head outline (sphere model: scalp, inner skull), nose and ears, and the
    source space hull, projected on one view; returns the axes' data indices."""
    from matplotlib.patches import Circle, Ellipse, Polygon
    from scipy.spatial import ConvexHull

    i, j = view
    r0 = _HEAD_R0 * 1e3
    radius = _HEAD_RADIUS * 1e3
    c = (r0[i], r0[j])
    ax.add_patch(Circle(c, radius, fc="#f7efe6", ec="0.35", lw=1.5, zorder=0))
    ax.add_patch(Circle(c, 0.9 * radius, fc="none", ec="0.6", lw=1, ls="--"))
    pts = grid[:, [i, j]]
    hull = ConvexHull(pts)
    ax.add_patch(
        Polygon(pts[hull.vertices], fc="#e4e4ee", ec="0.55", lw=0.8, zorder=0.5)
    )
    if j == 1 or i == 1:  # a view with the antero-posterior axis: nose
        if i == 1:  # sagittal (y right, z up): nose to the right
            tip, base = (c[0] + radius + 10, c[1]), [(c[0] + radius - 2, c[1] + 9)]
            base.append((c[0] + radius - 2, c[1] - 9))
        else:  # axial (x right, y up): nose up
            tip, base = (c[0], c[1] + radius + 10), [(c[0] - 9, c[1] + radius - 2)]
            base.append((c[0] + 9, c[1] + radius - 2))
        ax.add_patch(Polygon([base[0], tip, base[1]], fc="#f7efe6", ec="0.35"))
    if i == 0:  # a view with the left-right axis: ears
        for side in (-1, 1):
            ax.add_patch(
                Ellipse(
                    (c[0] + side * (radius + 3), c[1]), 8, 24, fc="#f7efe6", ec="0.35"
                )
            )
        y = c[1] + radius * (0.8 if j == 2 else 0.85)
        ax.text(c[0] - radius, y, "L", fontsize=14, weight="bold", ha="center")
        ax.text(c[0] + radius, y, "R", fontsize=14, weight="bold", ha="center")
    lim = radius + 16
    ax.set(xlim=(c[0] - lim, c[0] + lim), ylim=(c[1] - lim, c[1] + lim))
    ax.set_aspect("equal")
    ax.axis("off")


_GLASS_LABELS = {"Step-LISTA-tol": "Step-LISTA + tol=1e-6"}


def _plot_glass_sources(fig, grid, true_pos, estimates):
    """Glass-head views: one row per estimate, its sources (filled, size by
    amplitude) and the simulated dipoles (black stars) on three orthogonal
    projections of the synthetic head."""
    views = (
        ("side (from the right)", (1, 2)),
        ("back", (0, 2)),
        ("top", (0, 1)),
    )
    axes = fig.subplots(len(estimates), 3, squeeze=False)
    for row, (name, (_, pos, amp)) in enumerate(estimates.items()):
        color = f"C{row}"
        for col, (title, (i, j)) in enumerate(views):
            ax = axes[row, col]
            _glass_head(ax, (i, j), grid)
            if len(pos):
                ax.scatter(
                    pos[:, i] * 1e3,
                    pos[:, j] * 1e3,
                    s=20 + 180 * amp / amp.max(),
                    c=color,
                    alpha=0.6,
                    ec="k",
                    lw=0.5,
                    zorder=3,
                )
            ax.scatter(
                true_pos[:, i] * 1e3,
                true_pos[:, j] * 1e3,
                s=220,
                marker="*",
                c="k",
                ec="w",
                lw=0.8,
                zorder=4,
            )
            if row == 0:
                ax.set_title(title, fontsize=11)
        n = len(pos)
        axes[row, 0].text(
            -0.08,
            0.5,
            f"{_GLASS_LABELS.get(name, name)}\n{n} position{'s' * (n != 1)}",
            transform=axes[row, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=11,
            color=color,
            weight="bold",
        )
    ax = axes[-1, 0]  # 5 cm scale bar
    x0, y0 = ax.get_xlim()[0] + 4, ax.get_ylim()[0] + 4
    ax.plot([x0, x0 + 50], [y0, y0], "k", lw=2)
    ax.text(x0 + 25, y0 + 3, "5 cm", ha="center", fontsize=9)
    return axes


def _savefig(fig, fname):
    import matplotlib.pyplot as plt

    fig.savefig(fname, dpi=100)
    plt.close(fig)
    return fname
