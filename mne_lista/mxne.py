"""StepMxNE: a learned twin of :func:`mne.inverse_sparse.mixed_norm`.

MNE's mixed-norm estimate (MxNE) solves, on a time window of whitened data
``M`` (after ``time_pca``: the window's temporal components ``U s``), the
L21 problem ``min_X 1/2 ||M - G X||_F^2 + lam sum_p ||X_p||_F`` with rows
grouped by source position over orientations and time: one support for the
whole window (:mod:`mne_lista._l21`). :class:`StepMxNE` unrolls ISTA on it
with one learned step per layer and wraps it as an MNE inverse solver with
``mixed_norm``'s contract: ``alpha`` in % of alpha_max, debiasing, residual,
dipoles, and a duality-gap certificate per window. With a tolerance, the
windows are solved exactly instead by the batched working-set solver
:func:`mne_lista.solvers.solve_mxne`, with MNE's ``mixed_norm_solver`` as a
last resort.
"""

import numpy as np
import torch
from mne.utils import _validate_type, logger, verbose

from . import _compat, _l21
from ._docs import fill_doc
from ._estimator import _Estimator

_ACTIVE_SET_SIZE = 10  # mixed_norm's default active_set_size


@fill_doc
class StepMxNE(_Estimator):
    """Mixed-norm (MxNE) source localization with a learned Step-LISTA.

    A learned twin of :func:`mne.inverse_sparse.mixed_norm`: the same L21
    problem (one support per time window, rows grouped over orientations
    and time, on the window's ``time_pca`` components), solved by ISTA
    unrolled over ``n_layers`` layers with one learned step per layer,
    trained unsupervised on simulated windows (:meth:`fit`). Every
    :meth:`apply` computes the duality gap of each window (the
    certificate). With ``tol``, the windows are solved to that relative
    duality gap by the exact working-set solver
    (:func:`mne_lista.solvers.solve_mxne`, all windows at once) instead of
    the network: the certified path.

    Parameters
    ----------
    %(estimator_problem)s
    %(estimator_options)s
    momentum : bool
        Also learn one momentum per layer (untrained, the network is FISTA);
        by default plain Step-LISTA (untrained, it is ISTA).
    %(verbose)s

    Attributes
    ----------
    problem : LassoProblem
        The whitened, weighted problem (gain identical to ``mixed_norm``'s).
    net : UnrolledISTA
        The unrolled network (float32).
    lam_range : tuple | None
        Range of ``lam / alpha_max`` the network was trained on.
    history_ : dict | None
        The training history (after :meth:`fit`).
    certificate_ : dict | None
        After :meth:`apply` / :meth:`apply_epochs`: ``rel_gap`` (per window,
        duality gap / (1/2 ||M||_F^2)), ``lam``, ``alpha_max``,
        ``n_components``, ``n_resolved`` (windows solved by the exact
        solver, i.e. all of them with ``tol``) and ``n_fallback`` (those it
        left to MNE's solver); for an evoked response also ``exp_var``.
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
        super().__init__(
            forward,
            noise_cov,
            info,
            n_layers=n_layers,
            loose=loose,
            depth=depth,
            rank=rank,
            device=device,
        )

    @property
    def network_name(self):
        return "StepFISTAMxNENet" if self.momentum else "StepMxNENet"

    @verbose
    @fill_doc
    def fit(
        self,
        n_windows=128,
        *,
        n_val=32,
        n_times=30,
        n_components=4,
        n_sources=(1, 5),
        snr=(-6.0, 14.0),
        extent=(0.0, 1.2),
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

        Windows of ``n_times`` samples hold a few sources with evoked-like
        waveforms through the real forward
        (:func:`mne_lista.simulation.simulate_windows`); they are reduced to
        their ``n_components`` leading temporal components (``time_pca``)
        and the loss is the mean over windows of the L21 objective of the
        output divided by its value at zero, ``F(X_T) / F(0)``
        (:func:`mne_lista.training.fit_network`).

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
        n_sources, extent : tuple
            Ranges of the number of sources and of their extent (see
            :func:`mne_lista.simulation.sample_sources`).
        snr : tuple of float
            Range of the SNR of the windows (dB).
        lam_range : tuple of float
            Range of ``lam / alpha_max`` (``alpha / 100``) to train for.
        method, n_epochs, batch_size, lr, patience, max_time :
            Training (see :func:`mne_lista.training.train`; ``batch_size`` in
            windows, ``max_time`` in seconds).
        %(random_state)s
        %(verbose)s

        Returns
        -------
        %(fit_returns)s
        """
        from functools import partial

        kw = dict(n_times=n_times, n_sources=n_sources, snr=snr, extent=extent)
        simulate = partial(
            _training_windows,
            self.problem,
            n_components=n_components,
            lam_range=lam_range,
            **kw,
        )
        logger.info(
            f"    Training StepMxNE on {n_windows} simulated windows "
            f"({n_times} samples, {n_components} components)"
        )
        return self._train(
            simulate,
            lam_range=lam_range,
            n_samples=n_windows,
            n_val=n_val,
            method=method,
            n_epochs=n_epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            max_time=max_time,
            random_state=random_state,
            verbose=verbose,
        )

    def _as_input(self, Mt):
        squeeze = Mt.ndim == 2  # one window (n, K)
        if squeeze:
            Mt = Mt[:, None]
        if Mt.ndim != 3 or Mt.shape[0] != self.problem.n_channels:
            raise ValueError(
                f"M must have shape ({self.problem.n_channels}, n_windows, K) or "
                f"({self.problem.n_channels}, K), got {tuple(Mt.shape)}"
            )
        return Mt, lambda X: X[:, 0] if squeeze else X

    @staticmethod
    def _check_time_pca(time_pca):
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
        return time_pca

    def _columns_per_epoch(self, n_times, *, time_pca=True):
        n_comp = min(self.problem.n_channels, n_times)
        return n_comp if time_pca is True else min(n_comp, int(time_pca))

    @torch.no_grad()
    def _solve_windows(self, M, alpha, *, tol, time_pca=True):
        """Whitened epochs (n, E, T) -> one L21 problem each, solved, certified.

        As in ``mixed_norm``, the problem of an epoch is the one on its
        leading temporal components (all ``min(n, T)`` of them with
        ``time_pca=True``, which is the problem on the window itself):
        alpha_max, lam, the solvers and the certificate all refer to it.
        Without ``tol`` the network solves the windows; with ``tol`` the
        exact solver (:meth:`_solve_exact`) does.

        Returns
        -------
        X : Tensor, shape (m, E, K)
            The solutions on the temporal components (float64).
        M_pca : Tensor, shape (n, E, K)
            The temporal components.
        Vh : Tensor, shape (E, K, T)
            The map back to time.
        cert : dict
            The certificate of the windows.
        """
        problem, n_orient = self.problem, self.problem.n_orient
        M = torch.as_tensor(M, dtype=torch.float64, device=self.device)
        G = problem.gain_tensor(M.device, torch.float64)
        M_pca, Vh = _l21.time_pca(M, None if time_pca is True else int(time_pca))
        GtM = _l21.gain_t_times(G, M_pca)
        a_max = _l21.dual_norm(GtM, n_orient)  # alpha_max, as in mixed_norm
        lam = alpha / 100.0 * a_max
        cert = dict(n_resolved=0, n_fallback=0)
        if tol is None:
            X = self._run_net(M_pca, lam)
            rel_gap = _l21.relative_gap(G, M_pca, X, lam, n_orient).cpu().numpy()
        else:
            X0 = keep = None
            if self._screen:
                # the network's output proves positions inactive (Gap Safe)
                # and seeds the exact solver's first working set
                X0 = self._run_net(M_pca, lam)
                from ._screening import gap_safe_screen

                lip = problem.position_lipschitz(M.device, torch.float64)
                keep = gap_safe_screen(G, M_pca, X0, lam, n_orient, lip)[0]
                frac = 1.0 - float(keep.double().mean())
                logger.info(
                    f"    Gap Safe screening: {100 * frac:.1f}% of the positions "
                    "proven inactive before the exact solve"
                )
            X, rel_gap, cert["n_fallback"] = self._solve_exact(
                M_pca, GtM, lam, tol, X0=X0, keep=keep
            )
            cert["n_resolved"] = M_pca.shape[1]
        self._log_gaps(rel_gap, "window")
        cert.update(
            rel_gap=rel_gap,
            lam=lam.cpu().numpy(),
            alpha_max=a_max.cpu().numpy(),
            n_components=M_pca.shape[2],
        )
        return X, M_pca, Vh, cert

    def _solve_batch(self, M, alpha, *, tol, time_pca=True):
        """The glue's batch solve: per-epoch pieces mapped back to time."""
        X, M_pca, Vh, cert = self._solve_windows(M, alpha, tol=tol, time_pca=time_pca)
        n_orient = self.problem.n_orient
        n_act = n_orient * (_l21.group_sq_norms(X, n_orient) > 0).sum(0)
        debias_ok = (n_act < self.problem.n_channels).cpu().numpy()
        return self._per_epoch(self.problem, X, M_pca, Vh, debias_ok), cert

    def _solve_exact(self, M_pca, GtM, lam, tol, *, X0=None, keep=None):
        """Certified solutions of all windows: (X, rel_gap, n_fallback).

        :func:`mne_lista.solvers.solve_mxne` (working sets + block coordinate
        descent, all windows at once), its working sets restricted to the
        positions ``keep`` (P, W) not proven inactive by the Gap Safe rule
        and its first one ranked by the group norms of ``X0`` (the network's
        output), when given. A window it does not certify in its budget goes
        to MNE's ``mixed_norm_solver``, warm started on the solver's
        strongest positions.
        """
        from . import solvers
        from ._screening import seed_priority

        problem, n_orient = self.problem, self.problem.n_orient
        G = problem.gain_tensor(M_pca.device, torch.float64)
        X, rel, _ = solvers.solve_mxne(
            G,
            M_pca,
            lam,
            n_orient,
            tol=tol,
            ws_size=_ACTIVE_SET_SIZE,
            lipschitz_positions=problem.position_lipschitz(M_pca.device),
            gain_t_M=GtM,
            priority=None if X0 is None else seed_priority(GtM, X0, n_orient),
            keep=keep,
        )
        rel = rel.cpu().numpy()
        f0 = _l21.zero_objective(M_pca)
        bad = np.flatnonzero(~(rel <= tol))
        for w in bad:
            logger.info(f"    Window {w}: MNE's mixed_norm_solver (gap {rel[w]:.1e})")
            sq = _l21.group_sq_norms(X[:, w : w + 1], n_orient)[:, 0].cpu().numpy()
            top = np.argsort(sq)[::-1][:_ACTIVE_SET_SIZE]
            init = np.zeros(problem.n_positions, bool)
            init[top[sq[top] > 0]] = True
            X_act, act, _ = _compat.mixed_norm_solver(
                M_pca[:, w].cpu().numpy(),
                problem.gain,
                float(lam[w]),
                n_orient=n_orient,
                tol=tol * float(f0[w]),
                active_set_init=np.repeat(init, n_orient),
            )
            Xw = np.zeros((problem.n_sources, M_pca.shape[2]))
            Xw[act] = X_act
            X[:, w] = torch.as_tensor(Xw, device=X.device)
            sl = slice(w, w + 1)
            rel[w] = float(
                _l21.relative_gap(G, M_pca[:, sl], X[:, sl], lam[sl], n_orient)[0]
            )
        return X, rel, len(bad)

    @verbose
    @fill_doc
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
        as in ``mixed_norm``, solved on the window's temporal components,
        certified by its duality gap and mapped back to time.

        Parameters
        ----------
        evoked : Evoked
            The data (crop it to the window of interest).
        %(alpha)s
        %(apply_outputs)s
        %(tol)s
        time_pca : bool | int
            As in ``mixed_norm``: True solves on all temporal components
            (exactly the problem on the window); an int keeps only that many
            leading components (the problem on them: faster, approximate).
        %(verbose)s

        Returns
        -------
        %(apply_returns)s
        """
        return self._apply(
            evoked,
            alpha,
            tol=tol,
            debias=debias,
            pick_ori=pick_ori,
            return_residual=return_residual,
            return_as_dipoles=return_as_dipoles,
            time_pca=self._check_time_pca(time_pca),
        )

    @verbose
    @fill_doc
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
        epochs : Epochs
            The data.
        %(alpha)s
        %(epochs_batches)s
        debias, pick_ori, tol, time_pca :
            As in :meth:`apply`.
        %(verbose)s

        Returns
        -------
        %(epochs_returns)s
        """
        return self._apply_epochs(
            epochs,
            alpha,
            tol=tol,
            pick_ori=pick_ori,
            return_generator=return_generator,
            batch_size=batch_size,
            max_memory=max_memory,
            debias=debias,
            time_pca=self._check_time_pca(time_pca),
        )


def _training_windows(problem, n, *, n_components, random_state, **kwargs):
    """Simulated windows -> (time_pca components (n, W, k), lam (W,)) float64."""
    from .simulation import simulate_windows

    sim = simulate_windows(problem, n, random_state=random_state, **kwargs)
    M, _ = _l21.time_pca(torch.as_tensor(sim["M"]), n_components)
    G = problem.gain_tensor("cpu", torch.float64)
    lam = torch.as_tensor(sim["lam_frac"]) * _l21.alpha_max(G, M, problem.n_orient)
    return M, lam


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
    from ._io import read_model_metadata

    network = read_model_metadata(fname).get("network")
    return StepMxNE._read(
        fname,
        forward,
        noise_cov,
        info,
        device=device,
        networks=("StepMxNENet", "StepFISTAMxNENet"),
        momentum=network == "StepFISTAMxNENet",
    )


__all__ = ["StepMxNE", "read_step_mxne"]
