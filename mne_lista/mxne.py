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

from contextlib import contextmanager

import numpy as np
import torch
from mne.utils import (
    _check_option,
    _validate_type,
    check_random_state,
    logger,
    verbose,
    warn,
)

from . import _apply, _bcd, _compat, _l21
from ._docs import fill_doc
from ._estimator import _Estimator

# the smallest working set (positions), twice mixed_norm's active_set_size: on
# 60 epochs of the parity benchmark, 10 took 1.25 times the CPU time of 20 for
# irMxNE (more rounds, each a product with the whole gain), 20-25 the least
# for SURE and the same for MxNE with weights
_ACTIVE_SET_SIZE = 20


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
    %(pretrained)s
    %(verbose)s

    Attributes
    ----------
    problem : LassoProblem
        The whitened, weighted problem (gain identical to ``mixed_norm``'s).
    net : UnrolledISTA
        The unrolled network (float32).
    lam_range : tuple | None
        Range of ``lam / alpha_max`` the network was trained on (by
        :meth:`fit`, or for the pretrained parameters).
    pretrained : bool
        Whether the network started from the shipped pretrained parameters.
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
        pretrained=True,
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
            pretrained=pretrained,
        )

    def _pretrained_check_data(self):
        return _check_windows(self.problem)

    # with tol, the exact solver starts from zero: on the CPU the network in
    # front (screening, first working set) cost more than it saved (README)
    _screen = False

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
        extent=0.0,
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

        The training starts from the current steps: the pretrained ones
        (``pretrained=True``), which it refines for this forward, or ISTA.

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
        n_sources, extent : tuple | float
            Ranges of the number of sources and of their extent (see
            :func:`mne_lista.simulation.sample_sources`; point sources by
            default).
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

    _allow_sure = True  # alpha='sure' (checked by the glue)

    def _columns_per_epoch(self, n_times, *, time_pca=True, sure=None, **kw):
        n_comp = min(self.problem.n_channels, n_times)
        n_comp = n_comp if time_pca is True else min(n_comp, int(time_pca))
        return n_comp if sure is None else 2 * n_comp  # SURE: perturbed copy

    @torch.no_grad()
    def _solve_windows(self, M, alpha, *, tol, time_pca=True, n_mxne_iter=1, sure=None):
        """Whitened epochs (n, E, T) -> one L21 problem each, solved, certified.

        As in ``mixed_norm``, the problem of an epoch is the one on its
        leading temporal components (all ``min(n, T)`` of them with
        ``time_pca=True``, which is the problem on the window itself):
        alpha_max, lam, the solvers and the certificate all refer to it.
        Without ``tol`` the network solves the windows; with ``tol`` the
        exact solver (:meth:`_solve_exact`) does, or its reweighted
        iterations with ``n_mxne_iter > 1``
        (:func:`mne_lista.solvers.solve_irmxne`). With ``sure`` (a dict:
        ``grid``, ``rng``, ``debias``), alpha is chosen per epoch by SURE
        (:func:`mne_lista._sure.sure_path`) on the temporal components of
        MNE's SVD, so that the same random state draws the same
        perturbation as ``mixed_norm``.

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
        from . import _sure, solvers

        problem, n_orient = self.problem, self.problem.n_orient
        M = torch.as_tensor(M, dtype=torch.float64, device=self.device)
        G = problem.gain_tensor(M.device, torch.float64)
        n_comp = None if time_pca is True else int(time_pca)
        if sure is None:
            M_pca, Vh = _l21.time_pca(M, n_comp)
        else:
            M_pca, Vh = _time_pca_svd(M, n_comp)
        GtM = _l21.gain_t_times(G, M_pca)
        a_max = _l21.dual_norm(GtM, n_orient)  # alpha_max, as in mixed_norm
        cert = dict(n_resolved=0, n_fallback=0)
        lip = problem.position_lipschitz(M.device)
        # the full Gram when the batch is large enough (cached on the problem)
        n_solves = M_pca.shape[1] * (
            2 * len(sure["grid"]) if sure is not None else n_mxne_iter
        )
        gram = (
            problem.gram(M.device)
            if tol is not None and _bcd.gram_pays(G, n_solves, M_pca.shape[2])
            else None
        )
        if sure is not None:
            n, n_win, k = M_pca.shape
            rng = sure["rng"]  # one draw per window in turn, as mixed_norm
            delta = np.stack([rng.standard_normal((n, k)) for _ in range(n_win)])
            delta = torch.as_tensor(delta.transpose(1, 0, 2), device=M.device)
            X, alpha, sure_vals, rel_gap = _sure.sure_path(
                G,
                M_pca,
                sure["grid"],
                a_max,
                n_orient,
                delta=delta,
                tol=sure["tol"] or tol,
                n_mxne_iter=n_mxne_iter,
                debias=sure["debias"],
                ws_size=_ACTIVE_SET_SIZE,
                lipschitz_positions=lip,
                gram=gram,
            )
            _log_sure(alpha, X, n_orient)
            cert.update(alpha=alpha, sure=sure_vals, alpha_grid=tuple(sure["grid"]))
            cert["n_resolved"] = n_win
            lam = torch.as_tensor(alpha / 100.0, device=M.device) * a_max
            if n_mxne_iter == 1 and not np.all(rel_gap <= tol):  # grid less precise
                X, rel_gap, cert["n_fallback"] = self._solve_exact(
                    M_pca, GtM, lam, tol, Z0=X, gram=gram
                )
        elif tol is None:
            lam = alpha / 100.0 * a_max
            X = self._run_net(M_pca, lam)
            rel_gap = _l21.relative_gap(G, M_pca, X, lam, n_orient).cpu().numpy()
        elif n_mxne_iter > 1:
            lam = alpha / 100.0 * a_max
            X, rels, n_rounds = solvers.solve_irmxne(
                G,
                M_pca,
                lam,
                n_orient,
                n_mxne_iter,
                scale=a_max / 100.0,
                tol=tol,
                ws_size=_ACTIVE_SET_SIZE,
                lipschitz_positions=lip,
                gain_t_M=GtM,
                gram=gram,
            )
            rel_gap = np.fmax.reduce(rels.numpy(), 0)  # the worst round
            cert.update(rel_gap_rounds=rels.numpy().T, n_rounds=n_rounds.numpy())
            cert["n_resolved"] = M_pca.shape[1]
        else:
            lam = alpha / 100.0 * a_max
            X0 = keep = None
            if self._screen:
                # the network's output proves positions inactive (Gap Safe)
                # and seeds the exact solver's first working set
                X0 = self._run_net(M_pca, lam)
                from ._screening import gap_safe_screen

                lip64 = problem.position_lipschitz(M.device, torch.float64)
                keep = gap_safe_screen(G, M_pca, X0, lam, n_orient, lip64)[0]
                frac = 1.0 - float(keep.double().mean())
                logger.info(
                    f"    Gap Safe screening: {100 * frac:.1f}% of the positions "
                    "proven inactive before the exact solve"
                )
            X, rel_gap, cert["n_fallback"] = self._solve_exact(
                M_pca, GtM, lam, tol, X0=X0, keep=keep, gram=gram
            )
            cert["n_resolved"] = M_pca.shape[1]
        self._log_gaps(rel_gap, "window")
        if tol is not None and not np.all(rel_gap <= tol):
            warn(
                f"{int(np.sum(~(rel_gap <= tol)))} window(s) not certified to "
                f"tol={tol:g} (max relative duality gap {np.nanmax(rel_gap):.2e})"
            )
        cert.update(
            rel_gap=rel_gap,
            lam=lam.cpu().numpy(),
            alpha_max=a_max.cpu().numpy(),
            n_components=M_pca.shape[2],
        )
        return X, M_pca, Vh, cert

    def _solve_batch(self, M, alpha, *, tol, **solve_kw):
        """The glue's batch solve: per-epoch pieces mapped back to time."""
        X, M_pca, Vh, cert = self._solve_windows(M, alpha, tol=tol, **solve_kw)
        n_orient = self.problem.n_orient
        n_act = n_orient * (_l21.group_sq_norms(X, n_orient) > 0).sum(0)
        debias_ok = (n_act < self.problem.n_channels).cpu().numpy()
        return self._per_epoch(self.problem, X, M_pca, Vh, debias_ok), cert

    @contextmanager
    def _weighted(self, weights, weights_min):
        """The problem with ``weights`` while the block runs (see LassoProblem)."""
        if weights is None:
            yield
            return
        base = self.problem
        self.problem = base.weighted(weights, weights_min)
        try:
            yield
        finally:
            self.problem = base

    def _mxne_kw(
        self,
        alpha,
        tol,
        debias,
        time_pca,
        n_mxne_iter,
        weights,
        sure_alpha_grid,
        sure_tol,
        random_state,
    ):
        """Check mixed_norm's options; the solver's keyword arguments."""
        grid = _apply.check_mxne_options(
            alpha, tol, n_mxne_iter, weights, sure_alpha_grid
        )
        kw = dict(time_pca=self._check_time_pca(time_pca), n_mxne_iter=n_mxne_iter)
        if alpha == "sure":
            kw["sure"] = dict(
                grid=grid,
                rng=check_random_state(random_state),
                debias=debias,
                tol=_apply.check_tol(sure_tol, 1.0),
            )
        return kw

    def _solve_exact(
        self, M_pca, GtM, lam, tol, Z0=None, *, X0=None, keep=None, gram=None
    ):
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
            Z0=Z0,
            ws_size=_ACTIVE_SET_SIZE,
            lipschitz_positions=problem.position_lipschitz(M_pca.device),
            gain_t_M=GtM,
            priority=None if X0 is None else seed_priority(GtM, X0, n_orient),
            keep=keep,
            gram=gram,
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
        n_mxne_iter=1,
        weights=None,
        weights_min=0.0,
        sure_alpha_grid="auto",
        sure_tol=None,
        random_state=None,
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
        %(mxne_options)s
        %(verbose)s

        Returns
        -------
        %(apply_returns)s
        """
        kw = self._mxne_kw(alpha, tol, debias, time_pca, n_mxne_iter, weights,
                           sure_alpha_grid, sure_tol, random_state)  # fmt: skip
        with self._weighted(weights, weights_min):
            return self._apply(
                evoked,
                alpha,
                tol=tol,
                debias=debias,
                pick_ori=pick_ori,
                return_residual=return_residual,
                return_as_dipoles=return_as_dipoles,
                **kw,
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
        n_mxne_iter=1,
        weights=None,
        weights_min=0.0,
        sure_alpha_grid="auto",
        sure_tol=None,
        random_state=None,
        sure_mode="epoch",
        verbose=None,
    ):
        """Localize every epoch as its own window (mixed_norm per epoch).

        With ``alpha='sure'``, SURE chooses alpha (in %% of each epoch's
        alpha_max), its perturbations drawn from ``random_state`` epoch
        after epoch. ``sure_mode='epoch'`` (default): one alpha per epoch,
        each epoch localized as ``mixed_norm`` localizes it as an evoked
        response (its own noise, its own risk), so that results do not
        depend on the batching nor on the other epochs and match
        ``mixed_norm`` looped over the epochs. ``'pooled'``: one alpha for
        all, the minimizer of the sum of the epochs' SURE curves (the risk
        of the whole set; its Monte-Carlo noise averages over epochs), for
        estimates regularized alike across trials; the epochs are then
        solved again at that alpha (two passes).

        Parameters
        ----------
        epochs : Epochs
            The data.
        %(alpha)s
        %(epochs_batches)s
        debias, pick_ori, tol, time_pca :
            As in :meth:`apply`.
        n_mxne_iter, weights, weights_min, sure_alpha_grid, sure_tol, random_state :
            As in :meth:`apply`.
        sure_mode : 'epoch' | 'pooled'
            With ``alpha='sure'``: one alpha per epoch, or one for all.
        %(verbose)s

        Returns
        -------
        %(epochs_returns)s
        """
        kw = self._mxne_kw(alpha, tol, debias, time_pca, n_mxne_iter, weights,
                           sure_alpha_grid, sure_tol, random_state)  # fmt: skip

        _check_option("sure_mode", sure_mode, ("epoch", "pooled"))
        pooled = alpha == "sure" and sure_mode == "pooled"
        batches = dict(batch_size=batch_size, max_memory=max_memory, debias=debias)

        def run(alpha, pick_ori, **kw):
            return self._apply_epochs(
                epochs, alpha, tol=tol, pick_ori=pick_ori, return_generator=True,
                **batches, **kw,
            )  # fmt: skip

        def estimates():
            with self._weighted(weights, weights_min):
                if not pooled:
                    yield from run(alpha, pick_ori, **kw)
                    return
                for _ in run("sure", None, **kw):  # the curves of all epochs
                    pass
                sure = self.certificate_["sure"]
                grid = np.asarray(self.certificate_["alpha_grid"])
                best = float(grid[np.argmin(sure.sum(0))])
                logger.info(f"    Selected alpha (SURE, pooled): {best:g}")
                del kw["sure"]
                yield from run(best, pick_ori, **kw)
                self.certificate_.update(
                    sure=sure, alpha_grid=tuple(grid), alpha=np.full(len(sure), best)
                )

        return estimates() if return_generator else list(estimates())


def _time_pca_svd(M, n_components=None):
    """:func:`mne_lista._l21.time_pca` with MNE's SVD (its signs), per window."""
    n, n_win, n_times = M.shape
    k = min(n, n_times) if n_components is None else min(n, n_times, n_components)
    M_pca = M.new_zeros((n, n_win, k))
    Vh = M.new_zeros((n_win, k, n_times))
    for w in range(n_win):
        U, s, V = _compat.safe_svd(M[:, w].cpu().numpy())
        M_pca[:, w] = torch.as_tensor(U[:, :k] * s[:k])
        Vh[w] = torch.as_tensor(V[:k])
    return M_pca, Vh


def _log_sure(alpha, X, n_orient):
    """Log the alphas SURE selected; warn about empty estimates."""
    n_act = (_l21.group_sq_norms(X, n_orient) > 0).sum(0).cpu().numpy()
    if alpha.size == 1:
        logger.info(f"    Selected alpha: {alpha[0]:g} (SURE), {n_act[0]} source(s)")
    else:
        logger.info(
            f"    Selected alphas (SURE): median {np.median(alpha):g}, "
            f"range {alpha.min():g}..{alpha.max():g}"
        )
    empty = np.flatnonzero(n_act == 0)
    if len(empty):
        warn(
            f"SURE selected an empty estimate (no active source) for "
            f"{len(empty)} window(s) (alpha = {np.unique(alpha[empty])}%): "
            "at every alpha of the grid the risk estimate preferred no "
            "source, i.e. no source stands out of the noise of the noise "
            "covariance (seen with MEG-only data); pass a float alpha or a "
            "finer sure_alpha_grid"
        )


def _training_windows(problem, n, *, n_components, random_state, **kwargs):
    """Simulated windows -> (time_pca components (n, W, k), lam (W,)) float64."""
    from .simulation import simulate_windows

    sim = simulate_windows(problem, n, random_state=random_state, **kwargs)
    M, _ = _l21.time_pca(torch.as_tensor(sim["M"]), n_components)
    G = problem.gain_tensor("cpu", torch.float64)
    lam = torch.as_tensor(sim["lam_frac"]) * _l21.alpha_max(G, M, problem.n_orient)
    return M, lam


def _check_windows(problem):
    """64 windows like those of the default fit(): pretrained steps must do
    as well as ISTA on each (:func:`mne_lista._pretrained.set_pretrained`)."""
    return _training_windows(
        problem, 64, n_components=4, lam_range=(0.1, 0.8), n_times=30,
        n_sources=(1, 5), snr=(-6.0, 14.0), extent=0.0, random_state=0,
    )  # fmt: skip


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
