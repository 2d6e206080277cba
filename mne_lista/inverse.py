"""StepLISTA: sparse source localization, one (group) Lasso per time sample."""

import numpy as np
import torch
from mne.utils import _validate_type, logger, verbose, warn

from . import _l21
from ._docs import fill_doc
from ._estimator import _Estimator
from ._screening import gap_safe_screen


@fill_doc
class StepLISTA(_Estimator):
    """Sparse source localization with Step-LISTA.

    Step-LISTA (Ablin et al., NeurIPS 2019) is ISTA unrolled over
    ``n_layers`` layers with learned step sizes, trained unsupervised to
    minimize the (group) Lasso objective of the MEG/EEG problem built from
    ``forward`` and ``noise_cov`` (as :func:`mne.inverse_sparse.mixed_norm`
    builds it). Each time sample is one Lasso problem; all samples go
    through the network at once.

    Parameters
    ----------
    %(estimator_problem)s
    %(estimator_options)s
    adaptive : bool
        If True (default), the step of each sample also grows as the support
        of its iterate shrinks (the good step on a support ``S`` is
        ``1 / L_S``), and a step that would raise the Lasso objective of a
        sample is retried smaller, then replaced by the ISTA step
        (:class:`~mne_lista.networks.UnrolledISTA` with
        ``step_rule='support', safeguard='backtracking'``): the objective of
        every sample never increases from one layer to the next, whatever
        the data, at the price of a few more gain products per layer and a
        longer training. If False, plain Step-LISTA (one learned step per
        layer, two gain products per layer and sample), which can diverge on
        samples unlike its training data.
    %(pretrained)s
    %(verbose)s

    Attributes
    ----------
    problem : LassoProblem
        The whitened, weighted problem.
    net : UnrolledISTA
        The unrolled network (its steps are the learned parameters).
    lam_range : tuple | None
        Range of ``lam / alpha_max`` the network was trained on (by
        :meth:`fit`, or for the pretrained parameters).
    pretrained : bool
        Whether the network started from the shipped pretrained parameters.
    history_ : dict | None
        The training history (after :meth:`fit`).
    certificate_ : dict | None
        After :meth:`apply` / :meth:`apply_epochs`: ``rel_gap``, the relative
        duality gap (gap / (1/2 ||x||^2)) of each sample (shape (n_times,)
        for an evoked response, (n_epochs, n_times) for epochs),
        ``alpha_max`` and ``lam`` per epoch, ``n_resolved`` (samples solved
        exactly) and, for an evoked response, the explained variance
        ``exp_var`` (%%).

    Notes
    -----
    The README gives the measured accuracy (FISTA iterations matched at 20
    layers) and costs of both networks on the sample subject's forwards.
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
        adaptive=True,
        pretrained=True,
        verbose=None,
    ):
        _validate_type(adaptive, bool, "adaptive")
        self.adaptive = adaptive
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

    @property
    def network_name(self):
        return "BacktrackStepLISTANet" if self.adaptive else "StepLISTANet"

    def _pretrained_check_data(self):
        from .simulation import simulate_data

        return simulate_data(self.problem, 64, random_state=0)

    @verbose
    @fill_doc
    def fit(
        self,
        n_samples=None,
        *,
        lam_range=(0.1, 0.8),
        n_sources=(1, 5),
        snr=(0.0, 20.0),
        extent=(0.0, 1.2),
        n_epochs=None,
        max_time=None,
        random_state=None,
        verbose=None,
    ):
        """Train the step sizes, unsupervised, on simulated source activity.

        Samples of a few active source positions
        (:func:`mne_lista.simulation.simulate_data`) are pushed through the
        whitened gain with white noise, with ``lam / alpha_max`` drawn
        log-uniformly in ``lam_range``; the steps minimize the mean
        normalized Lasso objective ``F(x_T) / F(0)`` of the network's output
        (:func:`mne_lista.training.fit_network`). The defaults need no
        tuning: the training budget is set from the size of the gain. The
        training starts from the current parameters: the pretrained ones
        (``pretrained=True``), which it refines for this forward, or ISTA.

        Parameters
        ----------
        n_samples : int | None
            Number of training samples (None: 2048, or 1024 for gains with
            more than 10^6 entries); a validation set of a quarter of it is
            simulated independently for early stopping.
        lam_range : (float, float)
            Range of ``lam / alpha_max`` (``alpha / 100``) to train for.
        n_sources : int | (int, int)
            Range of the number of active source positions per sample.
        snr : float | (float, float)
            Range of the SNR of the samples (dB).
        extent : float | (float, float)
            Range of the spatial extent of the sources (in units of the grid
            spacing; below 1 is a point source).
        n_epochs : int | None
            Maximum number of passes over the training set (None: set from
            the size of the gain, 4 to 30; at least 12 with ``adaptive=True``).
        max_time : float | None
            Optional wall-clock budget (s); the result then depends on the
            machine's speed (not deterministic).
        %(random_state)s
        %(verbose)s

        Returns
        -------
        %(fit_returns)s
        """
        from functools import partial

        from .simulation import simulate_data

        kw = dict(n_sources=n_sources, snr=snr, extent=extent, lam_range=lam_range)
        return self._train(
            partial(simulate_data, self.problem, **kw),
            harder=partial(_harder_samples, self.problem, **kw),
            lam_range=lam_range,
            n_samples=n_samples,
            n_epochs=n_epochs,
            max_time=max_time,
            random_state=random_state,
            verbose=verbose,
        )

    def _as_input(self, Mt):
        if Mt.ndim not in (1, 2) or Mt.shape[0] != self.problem.n_channels:
            raise ValueError(
                f"X must have shape ({self.problem.n_channels}, n_problems), got "
                f"{tuple(Mt.shape)}"
            )
        squeeze = Mt.ndim == 1
        return (Mt[:, None] if squeeze else Mt), lambda X: X[:, 0] if squeeze else X

    @torch.no_grad()
    def _solve_batch(self, M, alpha, *, tol):
        """Whitened epochs (n, E, T) -> one Lasso per sample, solved, certified.

        ``lam = alpha / 100 * alpha_max`` per epoch, alpha_max being that of
        the whole epoch (the largest per-sample one), as ``mixed_norm``'s.
        Samples whose own alpha_max is <= lam have the exact solution 0; the
        others go through the network, and with ``tol`` the samples whose
        relative duality gap exceeds it are solved by
        the exact solver (:meth:`_solve_exact`), its first working sets
        ranked by the network's output and restricted to the positions that
        the Gap Safe rule, from that output, does not prove inactive
        (certified on the full gain).
        """
        problem, n_orient = self.problem, self.problem.n_orient
        n, n_epochs, n_times = M.shape
        G = problem.gain_tensor(M.device, torch.float64)
        Ms = M.reshape(n, n_epochs * n_times, 1)  # sample (e, t) -> e * T + t
        GtM = _l21.gain_t_times(G, Ms)  # once: alpha_max, and the exact finish
        a_sample = _l21.dual_norm(GtM, n_orient)
        a_max = a_sample.reshape(n_epochs, n_times).amax(1)
        lam = (alpha / 100.0 * a_max).repeat_interleave(n_times)
        logger.info(
            f"    {n_epochs * n_times} sample(s), alpha={alpha:g}% of alpha_max"
            f"={float(a_max.max()):.4g} -> lam={float(lam.max()):.4g}"
        )
        todo = torch.nonzero(a_sample > lam).flatten()
        X = torch.zeros((problem.n_sources, *Ms.shape[1:]), dtype=M.dtype)
        X = X.to(M.device)
        rel_gap = torch.zeros(Ms.shape[1], dtype=M.dtype, device=M.device)
        n_resolved = 0
        if len(todo):
            M_t, lam_t = Ms[:, todo], lam[todo]
            X_t = self._run_net(M_t, lam_t)
            keep = None
            if tol is not None and self._screen:
                # the certificate's product G^T R also gives the Gap Safe rule
                lip = problem.position_lipschitz(M.device, torch.float64)
                keep, gap = gap_safe_screen(G, M_t, X_t, lam_t, n_orient, lip)
            else:
                gap = _l21.relative_gap(G, M_t, X_t, lam_t, n_orient)
            if tol is not None:
                bad = torch.nonzero(~(gap <= tol)).flatten()  # NaN is bad
                n_resolved = len(bad)
                logger.info(
                    f"    Certificate: {n_resolved}/{Ms.shape[1]} sample(s) with a "
                    f"relative duality gap > {tol:g}"
                    + (", finished by the exact solver" if n_resolved else "")
                )
                if n_resolved:
                    X_b = self._solve_exact(
                        M_t[:, bad],
                        lam_t[bad],
                        X_t[:, bad],
                        tol,
                        keep=None if keep is None else keep[:, bad],
                        gain_t_M=GtM[:, todo[bad]],
                    )
                    if keep is not None:
                        screened = 1.0 - float(keep[:, bad].double().mean())
                        logger.info(
                            f"    Gap Safe screening: {100 * screened:.1f}% of the "
                            "positions proven inactive before the exact solve"
                        )
                    X_t[:, bad] = X_b
                    gap[bad] = _l21.relative_gap(
                        G, M_t[:, bad], X_b, lam_t[bad], n_orient
                    )
            X[:, todo], rel_gap[todo] = X_t, gap
        elif tol is not None:
            logger.info("    Certificate: every sample has the zero solution")
        rel_gap = rel_gap.cpu().numpy()
        self._log_gaps(rel_gap, "sample")
        _warn_diverged(rel_gap)
        cert = dict(
            rel_gap=rel_gap.reshape(n_epochs, n_times),
            alpha_max=a_max.cpu().numpy(),
            lam=(alpha / 100.0 * a_max).cpu().numpy(),
            n_resolved=n_resolved,
        )
        X = X.reshape(-1, n_epochs, n_times)
        return self._per_epoch(problem, X, M), cert

    def _solve_exact(self, M, lam, X0, tol, *, keep=None, gain_t_M=None):
        """Certified solutions of per-sample problems (m, B, 1) from X0.

        All samples at once by the batched working-set solver
        (:func:`mne_lista.solvers.solve_mxne`, a per-sample problem being a
        window of one column): its first working sets are ranked by the
        network's output ``X0``, and the positions that the Gap Safe rule
        proved inactive, ``~keep`` (P, B), never enter them; the gaps are
        computed on the full gain. A sample it does not certify in its
        budget is solved by :func:`mne_lista.solve_lasso` (celer), warm
        started at its result. ``gain_t_M``: ``G^T M`` when already known.
        """
        from ._screening import seed_priority
        from .solvers import solve_lasso, solve_mxne

        problem, n_orient = self.problem, self.problem.n_orient
        G = problem.gain_tensor(M.device, torch.float64)
        GtM = _l21.gain_t_times(G, M) if gain_t_M is None else gain_t_M
        Z, rel, _ = solve_mxne(
            G,
            M,
            lam,
            n_orient,
            tol=tol,
            priority=seed_priority(GtM, X0, n_orient),
            keep=keep,
            lipschitz_positions=problem.position_lipschitz(M.device),
            gain_t_M=GtM,
        )
        bad = torch.nonzero(~(rel <= tol)).flatten()
        if len(bad):
            logger.info(f"    {len(bad)} sample(s) finished by solve_lasso")
            Zb = solve_lasso(
                problem,
                M[:, bad, 0].cpu().numpy(),
                lam[bad].cpu().numpy(),
                tol=tol,
                Z0=Z[:, bad, 0].cpu().numpy(),
                verbose=False,
            )
            Zb = np.asarray(Zb).reshape(problem.n_sources, -1)
            Z[:, bad] = torch.as_tensor(Zb, dtype=Z.dtype, device=Z.device)[..., None]
        return Z.to(M.dtype)


def _harder_samples(problem, n, *, random_state, n_sources, snr, **kwargs):
    """Samples harder than the training ones: more sources, lower SNR."""
    from .simulation import _check_range, simulate_data

    k_hi = _check_range(n_sources, "n_sources", low=1, integer=True)[1]
    snr_lo = _check_range(snr, "snr")[0]
    n_pos = problem.n_positions
    n_sources = (min(k_hi + 1, n_pos), min(max(2 * k_hi, k_hi + 1), n_pos))
    snr = (snr_lo - 5.0, snr_lo)
    X, lam = simulate_data(
        problem, n, n_sources=n_sources, snr=snr, random_state=random_state, **kwargs
    )
    desc = f"{n_sources[0]}-{n_sources[1]} sources, SNR {snr[0]:g}-{snr[1]:g} dB"
    return X, lam, desc


def _warn_diverged(rel_gap):
    useless = np.flatnonzero(~(rel_gap <= 1.0))
    if len(useless):
        warn(
            f"{len(useless)} of {len(rel_gap)} sample(s) have a relative duality "
            f"gap above 1 (max {np.max(rel_gap):.3g}): there the network's output "
            "is no estimate (its steps diverge on these data); pass tol to solve "
            "them exactly, or use the adaptive network (the default, "
            "StepLISTA(adaptive=True)), whose objective never increases"
        )


@verbose
def read_step_lista(fname, forward, noise_cov, info, *, device="cpu", verbose=None):
    """Read a Step-LISTA model saved with :meth:`mne_lista.StepLISTA.save`.

    The learned parameters are loaded without unpickling any code and
    attached to the problem rebuilt from ``forward``, ``noise_cov`` and
    ``info`` with the saved ``loose``, ``depth`` and ``rank``; its whitened
    gain must match the saved fingerprint.

    Parameters
    ----------
    fname : path-like
        The model file.
    forward : Forward
        The forward solution the model was trained with.
    noise_cov : Covariance
        The noise covariance the model was trained with.
    info : Info | Evoked | Epochs
        Measurement info with the same good channels and projectors.
    device : str | torch.device
        Where to put the network.
    %(verbose)s

    Returns
    -------
    model : StepLISTA
        The trained model, ready to :meth:`~mne_lista.StepLISTA.apply`.
    """
    from ._io import read_model_metadata

    network = read_model_metadata(fname).get("network", "StepLISTANet")
    return StepLISTA._read(
        fname,
        forward,
        noise_cov,
        info,
        device=device,
        networks=("StepLISTANet", "BacktrackStepLISTANet"),
        adaptive=network == "BacktrackStepLISTANet",
    )


@verbose
def step_lista(
    evoked,
    forward,
    noise_cov,
    alpha,
    *,
    model=None,
    loose="auto",
    depth=0.8,
    rank=None,
    n_layers=20,
    debias=True,
    return_residual=False,
    return_as_dipoles=False,
    pick_ori=None,
    tol=None,
    device="cpu",
    adaptive=True,
    fit_params=None,
    verbose=None,
):
    """Sparse source localization with Step-LISTA, in one call.

    Like :func:`mne.inverse_sparse.mixed_norm` but each time sample is a
    (group) Lasso solved by a Step-LISTA network: a new model is built from
    ``forward`` and ``noise_cov`` (with the pretrained steps, see
    :class:`StepLISTA`; trained with :meth:`StepLISTA.fit` only with
    ``fit_params`` or when no pretrained steps exist for its number of
    layers), unless a ``model`` is given; then it is applied with
    :meth:`StepLISTA.apply`.

    Parameters
    ----------
    evoked : Evoked
        The data.
    forward : Forward | None
        The forward solution (may be None when ``model`` is given).
    noise_cov : Covariance | None
        The noise covariance (may be None when ``model`` is given).
    alpha : float
        Regularization in [0, 100), in %% of alpha_max (see
        :meth:`StepLISTA.apply`).
    model : StepLISTA | None
        A trained model. When ``forward`` and ``noise_cov`` are also given,
        they must be those of the model (checked by the gain fingerprint).
    loose, depth, rank : see :class:`StepLISTA`
        Used only to build a new model.
    n_layers : int
        Number of layers of a new model.
    debias, return_residual, return_as_dipoles, pick_ori, tol :
        See :meth:`StepLISTA.apply`.
    device : str | torch.device
        Where to train and apply.
    adaptive : bool
        For a new model: per-sample steps with backtracking (default), or
        plain Step-LISTA (False); see :class:`StepLISTA`.
    fit_params : dict | None
        For a new model: train it with :meth:`StepLISTA.fit` with these
        keyword arguments (``{}``: its defaults); None uses the pretrained
        steps without training.
    %(verbose)s

    Returns
    -------
    stc : SourceEstimate | VolSourceEstimate | ... | list of Dipole
        The estimate.
    residual : Evoked
        Only with ``return_residual=True``.
    """
    if model is None:
        if forward is None or noise_cov is None:
            raise ValueError("forward and noise_cov are needed when model is None")
        model = StepLISTA(
            forward,
            noise_cov,
            evoked.info,
            n_layers=n_layers,
            loose=loose,
            depth=depth,
            rank=rank,
            device=device,
            adaptive=adaptive,
        )
        if fit_params is not None or not model.pretrained:
            model.fit(**(fit_params or {}))
    else:
        _validate_type(model, StepLISTA, "model")
        if forward is not None or noise_cov is not None:
            if forward is None or noise_cov is None:
                raise ValueError(
                    "give both forward and noise_cov with model (or neither)"
                )
            from ._io import check_model_problem, gain_fingerprint
            from ._problem import prepare_problem

            problem = prepare_problem(
                forward,
                noise_cov,
                evoked.info,
                loose=model.problem.loose,
                depth=model.problem.depth,
                rank=model.problem.rank,
                verbose=False,
            )
            meta = dict(
                ch_names=model.problem.ch_names,
                gain_shape=list(model.problem.gain.shape),
                n_orient=model.problem.n_orient,
            )
            check_model_problem(problem, gain_fingerprint(model.problem.gain), meta)
        if device is not None and torch.device(device) != model.device:
            model.to(device)
    return model.apply(
        evoked,
        alpha,
        debias=debias,
        return_residual=return_residual,
        return_as_dipoles=return_as_dipoles,
        pick_ori=pick_ori,
        tol=tol,
    )


__all__ = ["StepLISTA", "read_step_lista", "step_lista"]
