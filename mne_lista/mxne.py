"""StepMxNE: a learned twin of :func:`mne.inverse_sparse.mixed_norm`.

MNE's mixed-norm estimate (MxNE) solves, on a time window of whitened data
``M`` (after ``time_pca``: the window's temporal components ``U s``), the
L21 problem ``min_Z 1/2 ||M - G Z||_F^2 + lam sum_p ||Z_p||_F`` with rows
grouped by source position over orientations and time: one support for the
whole window. ISTA on it is a proximal gradient with a row-group prox
(:mod:`mne_lista._l21`); :class:`StepMxNENet` unrolls it with one learned
step per layer (Step-LISTA on the L21 problem), and :class:`StepMxNE` wraps
it as an MNE inverse solver with ``mixed_norm``'s contract: ``alpha`` in %
of alpha_max, debiasing, residual, dipoles, and a duality-gap certificate
per window. With a tolerance, the windows are solved exactly instead by a
batched working-set solver (:func:`mne_lista._l21.solve_mxne`), with MNE's
``mixed_norm_solver`` as a last resort.
"""

import numpy as np
import torch
from mne import Evoked, EvokedArray
from mne.epochs import BaseEpochs
from mne.utils import (
    ProgressBar,
    _validate_type,
    logger,
    use_log_level,
    verbose,
    warn,
)

from . import _compat, _l21
from ._apply import epochs_batch_size
from ._docs import fill_doc
from ._lasso import _as_lam
from ._problem import _pick_data
from .inverse import _UnrolledInverse
from .networks import StepFISTANet, StepLISTANet, _check_n_layers

_ACTIVE_SET_SIZE = 10  # mixed_norm's default active_set_size

# ---------------------------------------------------------------------------
# The network


class StepMxNENet(StepLISTANet):
    """Step-LISTA on the L21 (MxNE) problem: one learned step per layer.

    Layer ``t`` computes ``Z <- prox_L21(Z - a_t G^T(G Z - M), a_t lam)``
    with :func:`mne_lista._l21.ista_step`, for a batch of windows ``M`` of
    shape ``(n, W, K)`` (``K`` temporal components, see
    :func:`mne_lista._l21.time_pca`) and one ``lam`` per window. The steps
    are parametrized as in :class:`~mne_lista.networks.StepLISTANet`
    (``a_t = exp(log_steps[t]) / L``); untrained, ``a_t = 1/L`` and the
    network is ISTA on the L21 problem.

    Parameters
    ----------
    problem : LassoProblem
        The problem (gain and groups).
    n_layers : int
        Number of layers.
    dtype : torch.dtype
        Precision of the gain buffer and of the computations.
    """

    def _check_input(self, M, lam, n_layers):
        _validate_type(M, torch.Tensor, "M")
        M = _l21._check_windows(M, "M", self.n_channels)
        M = M.to(device=self.D.device, dtype=self.D.dtype).contiguous()
        lam = _as_lam(lam, M.shape[1], M)
        n_layers = self.n_layers if n_layers is None else n_layers
        n_layers = _check_n_layers(n_layers, maximum=self.n_layers)
        return M, lam, n_layers

    def forward(self, M, lam, n_layers=None, *, return_all=False):
        """Run the network.

        Parameters
        ----------
        M : Tensor, shape (n, W, K) | (n, K)
            Windows of whitened data (temporal components).
        lam : float | Tensor, shape (W,)
            Regularization of each window.
        n_layers : int | None
            Number of layers to run (all by default).
        return_all : bool
            Return the list of the outputs of all layers.

        Returns
        -------
        Z : Tensor, shape (m, W, K) | list of Tensor
        """
        M, lam, n_layers = self._check_input(M, lam, n_layers)
        Z = M.new_zeros((self.n_sources, *M.shape[1:]))
        state = self._init_state(Z)
        outs = []
        for t in range(n_layers):
            Z, state = self._layer(t, M, Z, lam, state)
            if return_all:
                outs.append(Z)
        return outs if return_all else Z

    def _layer(self, t, M, Z, lam, state):
        step = torch.exp(self.log_steps[t]) / self.lipschitz
        return _l21.ista_step(self.D, M, Z, step, lam, self.n_orient), state

    def normalized_objective(self, M, lam, n_layers=None, *, all_layers=False):
        """Per-window ``F(Z) / F(0)`` of the output, shape (W,).

        ``F`` is the L21 objective and ``F(0) = 1/2 ||M||_F^2``: the loss
        used by :func:`mne_lista.training.train` for this network. With
        ``all_layers``, the mean over layers.
        """
        M, lam, n_layers = self._check_input(M, lam, n_layers)
        f0 = _l21.zero_objective(M)
        outs = self(M, lam, n_layers, return_all=all_layers)
        outs = outs if all_layers else [outs]
        losses = [_l21.objective(self.D, M, Z, lam, self.n_orient) / f0 for Z in outs]
        return torch.stack(losses).mean(0)


class StepFISTAMxNENet(StepMxNENet, StepFISTANet):
    """FISTA on the L21 problem with a learned step and momentum per layer.

    Layer ``t``: ``Z_t = ista_step(Y_{t-1}, a_t)``, ``Y_t = Z_t + b_t (Z_t -
    Z_{t-1})`` with :func:`mne_lista._l21.ista_step`. Initialized as
    :class:`~mne_lista.networks.StepFISTANet` (``a_t = 1/L`` and FISTA's
    momentum), the untrained network is FISTA on the L21 problem.

    Parameters are those of :class:`StepMxNENet`.
    """

    def _layer(self, t, M, Z, lam, Y):
        step = torch.exp(self.log_steps[t]) / self.lipschitz
        Z_new = _l21.ista_step(self.D, M, Y, step, lam, self.n_orient)
        return Z_new, Z_new + self.momentum[t] * (Z_new - Z)


# ---------------------------------------------------------------------------
# Simulated windows (training and benchmarks)


def _waveforms(rng, n_src, times):
    """Smooth evoked-like waveforms (n_src, T): peaks and damped oscillations.

    Latencies fall inside the window; peaks are Gaussians of 8-30 ms width,
    oscillations 4-20 Hz sines with a smooth onset and a 30-150 ms decay.
    """
    t0, t1 = times[0], times[-1]
    out = np.empty((n_src, len(times)))
    for k in range(n_src):
        lat = rng.uniform(t0, t0 + 0.8 * (t1 - t0))
        if rng.random() < 0.5:
            width = rng.uniform(0.008, 0.03)
            w = np.exp(-0.5 * ((times - lat) / width) ** 2)
        else:
            freq, tau = rng.uniform(4.0, 20.0), rng.uniform(0.03, 0.15)
            dt = times - lat
            onset = 0.5 * (1 + np.tanh(dt / 0.005))
            w = onset * np.exp(-np.maximum(dt, 0) / tau)
            w = w * np.sin(2 * np.pi * freq * dt + rng.uniform(0, 2 * np.pi))
        out[k] = rng.choice([-1.0, 1.0]) * w / max(np.abs(w).max(), 1e-12)
    return out


def simulate_windows(
    problem,
    n_windows,
    *,
    n_sources=(1, 5),
    n_times=30,
    sfreq=600.0,
    snr=(0.5, 5.0),
    lam_range=(0.1, 0.8),
    random_state=None,
):
    """Simulate windows of whitened MEG/EEG data from a few sparse sources.

    Each window holds ``k`` (uniform in ``n_sources``) source positions
    drawn uniformly on the source space, each with a random orientation (for
    free/loose orientation) and an evoked-like waveform (a peak or a damped
    oscillation, latencies inside the window, see :func:`_waveforms`) with a
    log-uniform amplitude over a factor 3 in Am, pushed through the whitened
    gain of the problem (in Am: ``gain / source_weighting``), plus white
    noise (the whitened noise) scaled so that ``||signal||_F / ||noise||_F``
    is log-uniform in ``snr``.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its gain; ``source_weighting`` when present).
    n_windows : int
        Number of windows.
    n_sources : tuple of int
        Range (inclusive) of the number of active positions per window.
    n_times : int
        Samples per window.
    sfreq : float
        Sampling frequency (Hz).
    snr : tuple of float
        Range of the amplitude signal-to-noise ratio.
    lam_range : tuple of float
        Range of ``lam / alpha_max`` (log-uniform) returned with the windows.
    random_state : None | int | Generator
        Seed.

    Returns
    -------
    sim : dict
        ``M`` (n, W, T) whitened data, ``signal`` (n, W, T) its noiseless
        part, ``positions`` (list of arrays of active position indices),
        ``lam_frac`` (W,) and ``times`` (T,).
    """
    rng = np.random.default_rng(random_state)
    _validate_type(n_windows, "int", "n_windows")
    lo, hi = int(n_sources[0]), int(n_sources[1])
    if not 1 <= lo <= hi <= problem.n_positions:
        raise ValueError(
            f"n_sources must be a range in [1, n_positions], got {n_sources}"
        )
    n_orient = problem.n_orient
    sw = problem.source_weighting
    G = problem.gain if sw is None else problem.gain / np.where(sw == 0, 1.0, sw)
    times = 0.05 + np.arange(int(n_times)) / float(sfreq)
    n = problem.n_channels
    M = np.empty((n, n_windows, len(times)))
    S = np.empty_like(M)
    positions = []
    for w in range(n_windows):
        k = int(rng.integers(lo, hi + 1))
        pos = rng.choice(problem.n_positions, k, replace=False)
        wave = _waveforms(rng, k, times)
        amp = np.exp(rng.uniform(0, np.log(3.0), k))
        if n_orient == 1:
            ori = np.ones((k, 1))
        else:
            ori = rng.standard_normal((k, n_orient))
            ori /= np.linalg.norm(ori, axis=1, keepdims=True)
        Gp = G[:, (pos[:, None] * n_orient + np.arange(n_orient)).ravel()]
        Gp = Gp.reshape(n, k, n_orient)
        sig = np.einsum("nko,ko,k,kt->nt", Gp, ori, amp, wave)
        noise = rng.standard_normal(sig.shape)
        target = np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1])))
        sig *= target * np.linalg.norm(noise) / max(np.linalg.norm(sig), 1e-300)
        S[:, w], M[:, w] = sig, sig + noise
        positions.append(np.sort(pos))
    lam_frac = np.exp(
        rng.uniform(np.log(lam_range[0]), np.log(lam_range[1]), n_windows)
    )
    return dict(M=M, signal=S, positions=positions, lam_frac=lam_frac, times=times)


def _training_windows(problem, n_windows, *, n_components, D, random_state, **kwargs):
    """Simulated windows -> (time_pca components (n, W, k), lam (W,)) float64."""
    sim = simulate_windows(problem, n_windows, random_state=random_state, **kwargs)
    M, _ = _l21.time_pca(torch.as_tensor(sim["M"]), n_components)
    lam = torch.as_tensor(sim["lam_frac"]) * _l21.alpha_max(D, M, problem.n_orient)
    return M, lam


# ---------------------------------------------------------------------------
# The estimator


@fill_doc
class StepMxNE(_UnrolledInverse):
    """Mixed-norm (MxNE) source localization with a learned Step-LISTA.

    A learned twin of :func:`mne.inverse_sparse.mixed_norm`: the same L21
    problem (one support per time window, rows grouped over orientations
    and time, on the window's ``time_pca`` components), solved by ISTA
    unrolled over ``n_layers`` layers with one learned step per layer
    (:class:`StepMxNENet`), trained unsupervised on simulated windows
    (:meth:`fit`). Every :meth:`apply` computes the duality gap of each
    window (the certificate). With ``tol``, the windows are solved to that
    relative duality gap by the exact working-set solver
    (:func:`mne_lista._l21.solve_mxne`, all windows at once) instead of the
    network: the certified fast path.

    Parameters
    ----------
    %(estimator_problem)s
    %(estimator_options)s
    momentum : bool
        Also learn one momentum per layer (:class:`StepFISTAMxNENet`,
        untrained it is FISTA); by default plain Step-LISTA
        (:class:`StepMxNENet`, untrained it is ISTA).
    %(verbose)s

    Attributes
    ----------
    problem : LassoProblem
        The whitened, weighted problem (gain identical to ``mixed_norm``'s).
    net : StepMxNENet | StepFISTAMxNENet
        The unrolled network (float32).
    lam_range : tuple | None
        Range of ``lam / alpha_max`` the network was trained on.
    certificate_ : dict
        After :meth:`apply`/:meth:`apply_epochs`: ``rel_gap`` (per window,
        duality gap / (1/2 ||M||_F^2)), ``lam``, ``alpha_max``,
        ``n_resolved`` (windows solved by the exact solver, i.e. all of them
        with ``tol``) and ``n_fallback`` (those it left to MNE's solver).
    """

    @verbose
    def __init__(
        self,
        forward,
        noise_cov,
        info,
        *,
        n_layers=20,
        loose="auto",
        depth=0.8,
        rank=None,
        device="cpu",
        momentum=False,
        verbose=None,
    ):
        _validate_type(momentum, bool, "momentum")
        self.momentum = momentum
        self._setup(
            forward,
            noise_cov,
            info,
            n_layers=n_layers,
            loose=loose,
            depth=depth,
            rank=rank,
            device=device,
        )
        self.lam_range = None
        self.history_ = None

    def _make_net(self):
        net_class = StepFISTAMxNENet if self.momentum else StepMxNENet
        return net_class(self.problem, self.n_layers)

    # --- training -----------------------------------------------------------

    @verbose
    def fit(
        self,
        n_windows=128,
        *,
        n_val=32,
        n_times=30,
        n_components=4,
        n_sources=(1, 5),
        snr=(0.5, 5.0),
        lam_range=(0.1, 0.8),
        method="adam",
        n_epochs=10,
        batch_size=8,
        lr=0.05,
        patience=3,
        max_time=None,
        random_state=None,
        verbose=None,
    ):
        """Train the steps unsupervised on simulated windows.

        Windows of ``n_times`` samples hold 1-5 sources with evoked-like
        waveforms through the real forward (:func:`simulate_windows`); they
        are reduced to their ``n_components`` leading temporal components
        (``time_pca``) and the loss is the mean over windows of the L21
        objective of the output divided by its value at zero, ``F(Z_T) /
        F(0)``, minimized with :func:`mne_lista.training.train` (minibatch
        Adam, early stopping on held-out windows, progress bar).

        Parameters
        ----------
        n_windows : int
            Number of training windows.
        n_val : int
            Number of held-out validation windows.
        n_times : int
            Samples per simulated window (600 Hz).
        n_components : int
            Temporal components kept per window (the cost of training grows
            with it).
        n_sources, snr, lam_range : tuple
            Ranges of the simulation (see :func:`simulate_windows`);
            ``lam_range`` is the range of ``lam / alpha_max`` (alpha / 100).
        method, n_epochs, batch_size, lr, patience, max_time :
            Training (see :func:`mne_lista.training.train`; ``batch_size`` in
            windows, ``max_time`` in seconds).
        random_state : None | int
            Seed (simulation and shuffling).
        %(verbose)s

        Returns
        -------
        self : StepMxNE
            With ``history_`` (the training history).
        """
        from .training import train

        rng = np.random.default_rng(random_state)
        seeds = rng.integers(2**31, size=3)
        D = self.problem.gain_tensor("cpu", torch.float64)
        kw = dict(n_components=n_components, D=D, n_times=n_times)
        kw.update(n_sources=n_sources, snr=snr, lam_range=lam_range)
        M, lam = _training_windows(self.problem, n_windows, random_state=seeds[0], **kw)
        M_val, lam_val = _training_windows(
            self.problem, n_val, random_state=seeds[1], **kw
        )
        logger.info(
            f"    Training StepMxNE on {n_windows} simulated windows "
            f"({n_times} samples, {M.shape[2]} components)"
        )
        self.history_ = train(
            self.net,
            M,
            lam,
            M_val,
            lam_val,
            method=method,
            n_epochs=n_epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            max_time=max_time,
            random_state=int(seeds[2]),
        )
        self.lam_range = tuple(float(v) for v in lam_range)
        return self

    # --- solving windows ------------------------------------------------------

    @torch.no_grad()
    def solve(self, M, lam):
        """Run the network on windows of whitened data (no certificate).

        Parameters
        ----------
        M : array | Tensor, shape (n, W, K) | (n, K)
            Windows (e.g. temporal components of whitened data).
        lam : float | array, shape (W,)
            Regularization of each window.

        Returns
        -------
        Z : array | Tensor, shape (m, W, K) | (m, K)
            Same kind as M, float64 for arrays.
        """
        is_numpy = not isinstance(M, torch.Tensor)
        Mt = torch.as_tensor(np.asarray(M) if is_numpy else M)
        squeeze = Mt.ndim == 2
        lam = torch.as_tensor(np.asarray(lam, dtype=np.float64) if is_numpy else lam)
        dtype = self.net.D.dtype
        Z = self.net(Mt.to(self.device, dtype), lam.to(self.device, dtype))
        Z = Z[:, 0] if squeeze else Z
        return Z.double().cpu().numpy() if is_numpy else Z

    @torch.no_grad()
    def _solve_windows(self, M, alpha, *, tol, time_pca):
        """alpha -> lam per window, network or exact solver, certificate.

        M is whitened data (n, W, T) float64. As in ``mixed_norm``, the
        problem is the one on the window's ``K`` leading temporal components
        (all ``min(n, T)`` of them with ``time_pca=True``, which is the
        problem on the window itself): alpha_max, lam, the network, the
        exact solver and the certificate all refer to it. Without ``tol``
        the network solves the windows; with ``tol`` the exact solver
        (:meth:`_solve_exact`) does. Returns (Z (m, W, K) float64, M_pca
        (n, W, K), Vh (W, K, T), certificate dict).
        """
        problem = self.problem
        n_orient = problem.n_orient
        D = problem.gain_tensor(self.device, torch.float64)
        Mt = torch.as_tensor(M, dtype=torch.float64, device=self.device)
        M_pca, Vh = _l21.time_pca(Mt, None if time_pca is True else int(time_pca))
        GtM = _l21.gain_t_times(D, M_pca)
        a_max = _l21.dual_norm(GtM, n_orient)  # alpha_max, as in mixed_norm
        lam = alpha / 100.0 * a_max
        f0 = _l21.zero_objective(M_pca)
        cert = dict(n_resolved=0, n_fallback=0)
        if tol is None:
            dtype = self.net.D.dtype
            Z = self.net(M_pca.to(dtype), lam.to(dtype)).double()
            gap = _l21.duality_gap(D, M_pca, Z, lam, n_orient)[0]
            rel_gap = (gap / f0).cpu().numpy()
        else:
            Z, rel_gap, cert["n_fallback"] = self._solve_exact(M_pca, GtM, lam, f0, tol)
            cert["n_resolved"] = M_pca.shape[1]
        if len(rel_gap):
            logger.info(
                f"    Relative duality gap per window: median "
                f"{np.median(rel_gap):.2e}, max {np.max(rel_gap):.2e}"
            )
        cert.update(
            rel_gap=rel_gap,
            lam=lam.cpu().numpy(),
            alpha_max=a_max.cpu().numpy(),
            n_components=M_pca.shape[2],
        )
        return Z, M_pca, Vh, cert

    def _solve_exact(self, M_pca, GtM, lam, f0, tol):
        """Certified solutions of all windows: (Z, rel_gap, n_fallback).

        :func:`mne_lista._l21.solve_mxne` (working sets + block coordinate
        descent, all windows at once). The network is not run: its output
        does not shorten this solver (same number of working sets when it
        ranks the first one, on the 7 mm volume forward) and costs more than
        the whole exact solve. A window the solver does not certify in its
        budget goes to MNE's ``mixed_norm_solver``, warm started on the
        solver's strongest positions.
        """
        problem, n_orient = self.problem, self.problem.n_orient
        D = problem.gain_tensor(self.device, torch.float64)
        Z, rel, _ = _l21.solve_mxne(
            D,
            M_pca,
            lam,
            n_orient,
            tol=tol,
            ws_size=_ACTIVE_SET_SIZE,
            lipschitz_positions=problem.position_lipschitz(self.device),
            gain_t_M=GtM,
        )
        rel = rel.cpu().numpy()
        bad = np.flatnonzero(~(rel <= tol))
        for w in bad:
            logger.info(f"    Window {w}: MNE's mixed_norm_solver (gap {rel[w]:.1e})")
            sq = _l21.group_sq_norms(Z[:, w : w + 1], n_orient)[:, 0].cpu().numpy()
            top = np.argsort(sq)[::-1][:_ACTIVE_SET_SIZE]
            init = np.zeros(problem.n_positions, bool)
            init[top[sq[top] > 0]] = True
            X, act, _ = _compat.mixed_norm_solver(
                M_pca[:, w].cpu().numpy(),
                problem.gain,
                float(lam[w]),
                n_orient=n_orient,
                tol=tol * float(f0[w]),
                active_set_init=np.repeat(init, n_orient),
            )
            Zw = np.zeros((problem.n_sources, M_pca.shape[2]))
            Zw[act] = X
            Z[:, w] = torch.as_tensor(Zw, device=Z.device)
            sl = slice(w, w + 1)
            gap = _l21.duality_gap(D, M_pca[:, sl], Z[:, sl], lam[sl], n_orient)[0]
            rel[w] = float(gap[0] / f0[w])
        return Z, rel, len(bad)

    def _estimate(self, Z, M_pca, Vh, w, *, tmin, tstep, evoked=None, **kwargs):
        """MNE output of window w (see :func:`mne_lista._apply.make_estimate`).

        As ``mixed_norm``, solution and data are mapped back to time through
        the temporal components (debiasing, explained variance and dipoles
        use ``M_pca @ Vh``, the window itself with all components).
        """
        from ._apply import make_estimate

        n_orient = self.problem.n_orient
        Zw = Z[:, w : w + 1]
        act = _l21.group_sq_norms(Zw, n_orient)[:, 0] > 0
        active = np.repeat(act.cpu().numpy(), n_orient)
        X = (Zw[torch.as_tensor(active, device=Z.device), 0] @ Vh[w]).cpu().numpy()
        if kwargs.get("debias") and active.sum() >= self.problem.n_channels:
            warn(
                f"debiasing skipped: the active set ({active.sum()} source "
                f"components) is not smaller than the number of channels "
                f"({self.problem.n_channels}), the debiasing least squares would "
                "be ill-posed; the network did not converge on this window: "
                "pass tol to solve it exactly"
            )
            kwargs["debias"] = False
        M = (M_pca[:, w] @ Vh[w]).cpu().numpy()
        return make_estimate(
            self.problem,
            X,
            M,
            tmin=tmin,
            tstep=tstep,
            active=active,
            evoked=evoked,
            **kwargs,
        )

    def _check_lam_range(self, alpha):
        if self.lam_range is None:
            return
        lo, hi = self.lam_range
        if not lo <= alpha / 100.0 <= hi:
            warn(
                f"alpha={alpha:g}% is outside the range of lam / lam_max the "
                f"network was trained on ([{100 * lo:g}, {100 * hi:g}]%): check "
                "the certificate or pass tol to solve the windows exactly"
            )

    def _check_args(self, alpha, pick_ori, time_pca, tol):
        from ._apply import check_alpha, check_pick_ori

        alpha = check_alpha(alpha)
        check_pick_ori(pick_ori, self.problem)
        if not isinstance(time_pca, bool | int | np.integer):
            raise TypeError(f"time_pca must be a bool or an int, got {type(time_pca)}")
        if time_pca is False:
            raise ValueError(
                "time_pca=False is not supported: StepMxNE solves on the "
                "temporal components (time_pca=True keeps all of them, which "
                "gives the same solution)"
            )
        if time_pca is not True and time_pca < 1:
            raise ValueError(f"time_pca must be True or a positive int, got {time_pca}")
        if tol is None:  # the network solves
            self._check_lam_range(alpha)
        elif not (np.isscalar(tol) and 0 < tol < 1):
            raise ValueError(f"tol must be None or a float in (0, 1), got {tol!r}")
        elif alpha == 0:
            raise ValueError("alpha=0 with tol: no sparse solution to certify")
        return alpha

    # --- applying to MNE data ---------------------------------------------------

    @verbose
    def apply(
        self,
        evoked,
        alpha,
        *,
        debias=True,
        return_residual=False,
        return_as_dipoles=False,
        pick_ori=None,
        tol=None,
        time_pca=True,
        verbose=None,
    ):
        """Localize an evoked response, as :func:`~mne.inverse_sparse.mixed_norm`.

        The whole evoked response is one window: one L21 problem with
        ``lam = alpha / 100 * alpha_max``, ``alpha_max = norm_l2inf(G^T M)``
        as in ``mixed_norm``, solved by the network on the window's temporal
        components, certified by its duality gap and mapped back to time.

        Parameters
        ----------
        evoked : Evoked
            The data (crop it to the window of interest).
        alpha : float
            Regularization in [0, 100), in %% of alpha_max.
        debias : bool
            Remove the amplitude bias on the active set (MNE's
            ``compute_bias``).
        return_residual : bool
            Also return the residual as an Evoked.
        return_as_dipoles : bool
            Return a list of :class:`mne.Dipole`.
        pick_ori : None | 'vector'
            'vector' keeps the xyz components (free/loose orientation).
        tol : float | None
            None (default): the network solves the window (fast; its
            relative duality gap, gap / (1/2 ||M||_F^2), is reported in
            ``certificate_``). A float: the window is solved exactly, to this
            relative duality gap, by the working-set solver
            (:func:`mne_lista._l21.solve_mxne`; ``2e-4`` is ``mixed_norm``'s
            default tolerance).
        time_pca : bool | int
            As in ``mixed_norm``: True solves on all temporal components
            (exactly the problem on the window); an int keeps only that many
            leading components (the problem on them: faster, approximate).
        %(verbose)s

        Returns
        -------
        stc : SourceEstimate | VolSourceEstimate | ... | list of Dipole
            The active sources in Am (class following the source space).
        residual : Evoked
            Only with ``return_residual=True``.
        """
        _validate_type(evoked, Evoked, "evoked")
        alpha = self._check_args(alpha, pick_ori, time_pca, tol)
        M = self.problem.whiten(evoked)[:, None]  # (n, 1, T)
        Z, M_pca, Vh, cert = self._solve_windows(M, alpha, tol=tol, time_pca=time_pca)
        out, residual, exp_var = self._estimate(
            Z,
            M_pca,
            Vh,
            0,
            tmin=evoked.times[0],
            tstep=1.0 / evoked.info["sfreq"],
            evoked=evoked,
            debias=debias,
            pick_ori=pick_ori,
            return_as_dipoles=return_as_dipoles,
            return_residual=return_residual,
        )
        cert["exp_var"] = exp_var
        self.certificate_ = cert
        return (out, residual) if return_residual else out

    @verbose
    def apply_epochs(
        self,
        epochs,
        alpha,
        *,
        batch_size=None,
        max_memory=None,
        return_generator=False,
        debias=True,
        pick_ori=None,
        tol=None,
        time_pca=True,
        verbose=None,
    ):
        """Localize every epoch as its own window (mixed_norm per epoch).

        Parameters
        ----------
        epochs : Epochs | EpochsArray
            The data.
        alpha : float
            Regularization in [0, 100), in %% of each epoch's alpha_max.
        batch_size : int | None
            Number of epochs solved together. By default, as many as fit in
            ``max_memory`` (batches amortize the per-call overhead of the
            solvers: 19 vs 25 ms per epoch for 64 vs 16 epochs on the 7 mm
            volume with ``time_pca=5`` and ``tol``).
        max_memory : float | None
            Approximate memory budget of one batch in bytes (default 512
            MiB); ignored when ``batch_size`` is given.
        return_generator : bool
            Return a generator of estimates instead of a list.
        debias, pick_ori, tol, time_pca :
            As in :meth:`apply`.
        %(verbose)s

        Returns
        -------
        stcs : list | generator
            One estimate per epoch; ``certificate_`` holds ``rel_gap``,
            ``lam`` and ``alpha_max`` per epoch, ``n_resolved`` and
            ``n_fallback``.
        """
        _validate_type(epochs, BaseEpochs, "epochs")
        alpha = self._check_args(alpha, pick_ori, time_pca, tol)
        if batch_size is None:  # columns that fit / columns per epoch
            n_comp = min(self.problem.n_channels, len(epochs.times))
            if time_pca is not True:
                n_comp = min(n_comp, int(time_pca))
            columns = epochs_batch_size(self.problem, max_memory=max_memory)
            batch_size = max(1, columns // n_comp)
        batch_size = epochs_batch_size(self.problem, batch_size=batch_size)
        # channel checks (missing, bad, EEG reference) on the epochs' info
        info_only = EvokedArray(np.zeros((len(epochs.ch_names), 1)), epochs.info)
        _pick_data(info_only, self.problem.ch_names)
        self.certificate_ = dict(
            rel_gap=[], lam=[], alpha_max=[], n_resolved=0, n_fallback=0
        )
        gen = self._iter_epochs(
            epochs, alpha, batch_size, tol, time_pca, debias=debias, pick_ori=pick_ori
        )
        return gen if return_generator else list(gen)

    def _iter_epochs(self, epochs, alpha, batch_size, tol, time_pca, **kwargs):
        picks = [epochs.ch_names.index(c) for c in self.problem.ch_names]
        n_epochs = len(epochs)
        tmin, tstep = epochs.times[0], 1.0 / epochs.info["sfreq"]
        cert_all = self.certificate_
        with ProgressBar(n_epochs, mesg="StepMxNE epochs") as pbar:
            for e0 in range(0, n_epochs, batch_size):
                e1 = min(n_epochs, e0 + batch_size)
                data = epochs.get_data(picks=picks, item=np.arange(e0, e1))
                if not np.isfinite(data).all():
                    raise ValueError(
                        f"data of epochs {e0}..{e1 - 1} contain NaN or infinite values"
                    )
                M = np.matmul(self.problem.whitener, data).transpose(1, 0, 2)
                with torch.no_grad():
                    Z, M_pca, Vh, cert = self._solve_windows(
                        M, alpha, tol=tol, time_pca=time_pca
                    )
                for key in ("rel_gap", "lam", "alpha_max"):
                    cert_all[key] = np.concatenate([cert_all[key], cert[key]])
                for key in ("n_resolved", "n_fallback"):
                    cert_all[key] += cert[key]
                for w in range(e1 - e0):
                    with use_log_level("warning"):
                        out, _, _ = self._estimate(
                            Z, M_pca, Vh, w, tmin=tmin, tstep=tstep, log=False, **kwargs
                        )
                    yield out
                pbar.update(e1)

    def save(self, fname, *, overwrite=False):
        """Save the trained steps and metadata (no pickled code).

        Read it back with :func:`read_step_mxne` (same format as
        :meth:`mne_lista.StepLISTA.save`, network ``StepMxNENet``, or
        ``StepFISTAMxNENet`` with its momenta).
        """
        from ._io import write_step_lista

        return write_step_lista(fname, self, overwrite=overwrite)


@verbose
def read_step_mxne(fname, forward, noise_cov, info, *, device="cpu", verbose=None):
    """Read a StepMxNE model saved with :meth:`StepMxNE.save`.

    Parameters
    ----------
    fname : path-like
        The model file.
    forward, noise_cov, info :
        Those the model was built from (checked against the saved gain
        fingerprint and channel names).
    device : str | torch.device
        Where to put the network.
    %(verbose)s

    Returns
    -------
    model : StepMxNE
    """
    from ._io import _read_arrays, check_model_problem, load_extra_state

    steps, fp, meta, extra = _read_arrays(fname)
    if meta.get("network") not in ("StepMxNENet", "StepFISTAMxNENet"):
        raise ValueError(
            f"{fname} holds a {meta.get('network')} network, not a StepMxNENet"
        )
    model = StepMxNE(
        forward,
        noise_cov,
        info,
        n_layers=int(meta["n_layers"]),
        loose=meta.get("loose", "auto"),
        depth=meta.get("depth", 0.8),
        rank=meta.get("rank"),
        device=device,
        momentum=meta["network"] == "StepFISTAMxNENet",
    )
    check_model_problem(model.problem, fp, meta, what=f"the model in {fname}")
    model.net.set_steps(steps)
    load_extra_state(model.net, extra, fname)
    if meta.get("lam_range") is not None:
        model.lam_range = tuple(float(v) for v in meta["lam_range"])
    return model


__all__ = [
    "StepMxNE",
    "StepMxNENet",
    "StepFISTAMxNENet",
    "read_step_mxne",
    "simulate_windows",
]
