"""The Step-LISTA estimator: an MNE inverse solver with learned step sizes."""

import torch
from mne.utils import _validate_type, verbose, warn

from ._docs import fill_doc
from ._io import read_step_lista  # noqa: F401 (exported here too)
from ._problem import prepare_problem


def _check_device(device):
    """Return a torch.device, with a clear error when CUDA is absent."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but CUDA is not available "
            "on this machine (torch.cuda.is_available() is False); use "
            "device='cpu'"
        )
    return device


class _UnrolledInverse:
    """Plumbing shared by the learned inverse solvers (StepLISTA, StepMxNE).

    Builds the problem from forward + noise_cov + info, holds the network
    ``self.net`` (made by ``_make_net``) on ``self.device``.
    """

    def _setup(
        self,
        forward,
        noise_cov,
        info,
        *,
        n_layers,
        loose,
        depth,
        rank,
        device,
        **net_kwargs,
    ):
        from .networks import _check_n_layers

        self.n_layers = _check_n_layers(n_layers)
        self.device = _check_device(device)
        self.problem = prepare_problem(
            forward, noise_cov, info, loose=loose, depth=depth, rank=rank
        )
        self.net = self._make_net(**net_kwargs).to(self.device)

    def __repr__(self):
        return (
            f"<{type(self).__name__} | {self.n_layers} layers | "
            f"{self.problem!r} | device={self.device}>"
        )

    def to(self, device):
        """Move the network to a device (e.g. 'cuda'); returns self."""
        self.device = _check_device(device)
        self.net.to(self.device)
        return self


@fill_doc
class StepLISTA(_UnrolledInverse):
    """Sparse source localization with Step-LISTA.

    Step-LISTA (Ablin et al., NeurIPS 2019) is ISTA unrolled over
    ``n_layers`` layers with one learned step size per layer, trained
    unsupervised to minimize the (group) Lasso objective of the MEG/EEG
    problem built from ``forward`` and ``noise_cov`` (as
    :func:`mne.inverse_sparse.mixed_norm` builds it).

    Parameters
    ----------
    %(estimator_problem)s
    %(estimator_options)s
    adaptive : bool
        If True (default), the step of each sample also grows as the support
        of its iterate shrinks (the good step is ``1 / L_S`` on the support
        ``S``), and a step that would raise the Lasso objective of a sample
        is retried smaller, then replaced by the ISTA step
        (:class:`~mne_lista.networks.BacktrackStepLISTANet`): the objective
        of every sample never increases from one layer to the next, whatever
        the data. About 20-40 %% more gain products per layer than plain
        Step-LISTA (1.8 to 2.1 times the network's time on a CPU, although
        ``apply_epochs`` as a whole was faster in ``bench epochs``: its
        sparser outputs are cheaper to debias) and a 4-5 times longer
        training, but much more accurate at equal depth and never divergent
        (see Notes). If False, plain Step-LISTA (Ablin et al., 2019): one
        learned step per layer, two gain products per layer and sample,
        which can diverge on samples unlike its training data.
    %(verbose)s

    Attributes
    ----------
    problem : LassoProblem
        The whitened, weighted problem.
    net : BacktrackStepLISTANet | StepLISTANet
        The unrolled network (its steps are the learned parameters).

    Notes
    -----
    On the 7 mm volume grid of the MNE sample subject (free orientation,
    20 layers, default :meth:`fit`), the mean objective on held-out data
    simulated by another generator matches 86 iterations of FISTA with
    ``adaptive=True`` (at 2.4 gain products per layer and sample; 50 to 64
    on shifted test sets) and 35 with ``adaptive=False``. On the 516-source
    cortical surface (fixed orientation) ``adaptive=True`` matches 61
    iterations of FISTA (2.6 products per layer; 39 to 53 on shifted test
    sets). There the plain network's learned steps (2.2/L to 5.5/L, all
    beyond 2/L) diverge on some held-out samples at 20 layers, or, with
    another seed, its training stays at the ISTA steps; :meth:`fit` warns
    in both cases, and :meth:`apply` about diverged samples (relative
    duality gap above 1), which ``tol`` re-solves.
    See ``python -m mne_lista.bench.step_lista``.
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
        verbose=None,
    ):
        _validate_type(adaptive, bool, "adaptive")
        self.adaptive = adaptive
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
        self.verbose = verbose

    def _make_net(self, dtype=torch.float32):
        from .networks import BacktrackStepLISTANet, StepLISTANet

        net_class = BacktrackStepLISTANet if self.adaptive else StepLISTANet
        return net_class(self.problem, self.n_layers, dtype=dtype)

    # --- training and solving (helper "steplista") -----------------------

    @verbose
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

        Samples of a few active source positions (see
        :func:`mne_lista.simulation.simulate_data`) are pushed through the
        whitened gain with white noise, with ``lam / lam_max`` drawn
        log-uniformly in ``lam_range``; the steps minimize the mean
        normalized Lasso objective ``F(z_T) / F(0)`` of the network's output
        (see :func:`mne_lista.training.fit_network` for the recipe). The
        defaults need no tuning: the training budget is set from the size of
        the gain (a few minutes on two CPU cores for a 7 mm volume grid).

        Parameters
        ----------
        n_samples : int | None
            Number of training samples (None: 2048, or 1024 for gains with
            more than 10^6 entries); a validation set of a quarter of it is
            simulated independently for early stopping.
        lam_range : (float, float)
            Range of ``lam / lam_max`` (``alpha / 100`` in MNE's terms) the
            network is trained for.
        n_sources : int | (int, int)
            Range of the number of active source positions per sample.
        snr : float | (float, float)
            Range of the SNR of the samples (dB).
        extent : float | (float, float)
            Range of the spatial extent of the sources (in units of the grid
            spacing; below 1 is a point source).
        n_epochs : int | None
            Maximum number of passes over the training set (None: set from
            the size of the gain, 4 to 30; at least 12 with ``adaptive=True``,
            about 3.5 minutes for the 7 mm volume grid on two CPU cores).
        max_time : float | None
            Optional wall-clock budget (s); the result then depends on the
            machine's speed (not deterministic).
        random_state : None | int
            Seed: simulation and training are deterministic for an int.
        %(verbose)s

        Returns
        -------
        self : StepLISTA
            The trained model, with ``lam_range`` (the trained range of
            ``lam / lam_max``) and ``fit_history_`` (losses per epoch).
        """
        from .training import fit_network

        self.fit_history_ = fit_network(
            self.net,
            self.problem,
            n_samples=n_samples,
            lam_range=lam_range,
            n_sources=n_sources,
            snr=snr,
            extent=extent,
            n_epochs=n_epochs,
            max_time=max_time,
            random_state=random_state,
            verbose=verbose,
        )
        self.lam_range = tuple(float(v) for v in self.fit_history_["lam_range"])
        return self

    @torch.no_grad()
    def solve(self, X, lam):
        """Solve a batch of Lasso problems with the network.

        Parameters
        ----------
        X : array | Tensor, shape (n, B) | (n,)
            Whitened data (see ``problem.whiten``), one problem per column.
        lam : float | array | Tensor, shape (B,)
            Regularization of each column (``lam = alpha / 100 * lam_max``
            in MNE's terms).

        Returns
        -------
        Z : array | Tensor, shape (m, B) | (m,)
            The network's output, of the kind of ``X`` (a numpy array, or a
            tensor on the model's device in the network's precision).
        """
        from ._lasso import to_tensor
        from ._problem import _data_tensor

        dtype = self.net.D.dtype
        Xt, _, back = _data_tensor(self.problem, X, device=self.device, dtype=dtype)
        if isinstance(lam, torch.Tensor) or not isinstance(lam, float | int):
            lam = to_tensor(lam, device=self.device, dtype=dtype)
        Z = self.net(Xt, lam)
        if not isinstance(X, torch.Tensor):
            Z = Z.to(torch.float64)
        return back(Z)

    # --- applying to MNE data (helper "apply") ---------------------------

    def _solver(self):
        """The batched solver used by apply: the network, on self.device."""
        net = self.net

        def solve(X, lam):
            return net(X, lam)

        return solve, next(net.buffers()).dtype

    def _check_lam_range(self, alpha):
        lam_range = getattr(self, "lam_range", None)
        if lam_range is None:
            return
        lo, hi = (float(v) for v in lam_range)
        if not lo <= alpha / 100.0 <= hi:
            warn(
                f"alpha={alpha:g}% is outside the range of lam / lam_max the "
                f"network was trained on ([{100 * lo:g}, {100 * hi:g}]%): "
                "check the certificate (relative duality gaps) or pass tol "
                "to finish uncertified samples with the exact solver"
            )

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
        verbose=None,
    ):
        """Localize an evoked response (one Lasso per time sample).

        Every time sample is a (group) Lasso problem with the same
        regularization ``lam = alpha / 100 * alpha_max``, where alpha_max is
        the smallest ``lam`` for which the estimate is zero over the whole
        window (the largest per-sample alpha_max): as for
        :func:`mne.inverse_sparse.mixed_norm`, ``alpha=0`` means no
        regularization, ``alpha -> 100`` no active source, and samples
        with little signal (below ``lam``) get exactly zero. All samples
        go through the network at once; the active set is the union of the
        supports over time.

        Parameters
        ----------
        evoked : Evoked
            The data (its channels must include those of the model, with the
            same bad channels).
        alpha : float
            Regularization in [0, 100), in %% of alpha_max.
        debias : bool
            Remove the amplitude bias of the L1 penalty on the active set
            (MNE's ``compute_bias``).
        return_residual : bool
            Also return the residual (data not explained) as an Evoked.
        return_as_dipoles : bool
            Return a list of :class:`mne.Dipole` instead of a source estimate.
        pick_ori : None | 'vector'
            With 'vector' (free/loose orientation), keep the xyz components
            (VectorSourceEstimate, ...); by default their norm is returned.
        tol : float | None
            Certificate: the duality gap of each sample is always computed
            (float64) and logged; with ``tol``, samples whose relative gap
            (gap / (1/2 ||x||^2)) exceeds ``tol`` are finished by the exact
            solver and a log line says how many.
        %(verbose)s

        Returns
        -------
        stc : SourceEstimate | VolSourceEstimate | MixedSourceEstimate | ...
            The active sources in Am, the class following the source space
            (and ``pick_ori``); a list of Dipole with ``return_as_dipoles``.
        residual : Evoked
            Only with ``return_residual=True``.

        Notes
        -----
        After each call, ``certificate_`` holds the relative duality gap of
        each sample (``rel_gap``), the number of samples finished by the
        exact solver (``n_resolved``), ``lam``, ``alpha_max`` and the
        explained variance ``exp_var`` (%%).
        """
        from ._apply import apply_evoked, check_alpha

        self._check_lam_range(check_alpha(alpha))
        solve, dtype = self._solver()
        with torch.no_grad():
            out, residual, cert = apply_evoked(
                self.problem,
                solve,
                evoked,
                alpha,
                debias=debias,
                return_residual=return_residual,
                return_as_dipoles=return_as_dipoles,
                pick_ori=pick_ori,
                tol=tol,
                device=self.device,
                dtype=dtype,
            )
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
        verbose=None,
    ):
        """Localize every epoch, pushing all epochs x times through the net.

        The result for each epoch is that of :meth:`apply` on the epoch as
        an evoked response (alpha_max per epoch), but samples of all epochs
        go through the network together, in chunks of bounded memory.

        Parameters
        ----------
        epochs : Epochs
            The data.
        alpha : float
            Regularization in [0, 100), in %% of each epoch's alpha_max.
        batch_size : int | None
            Number of samples (columns) per chunk. By default, as many as fit
            in ``max_memory``.
        max_memory : float | None
            Approximate memory budget of one chunk in bytes (default 512
            MiB); ignored when ``batch_size`` is given.
        return_generator : bool
            Return a generator yielding one estimate per epoch (as soon as
            its samples are done) instead of a list.
        debias, pick_ori, tol :
            As in :meth:`apply`.
        %(verbose)s

        Returns
        -------
        stcs : list | generator
            One source estimate per epoch. The results do not depend on
            ``batch_size``/``max_memory``. ``certificate_`` holds
            ``rel_gap`` (n_epochs, n_times), ``n_resolved``, ``lam`` and
            ``alpha_max`` per epoch (filled as the generator advances).
        """
        from ._apply import check_alpha, iter_epochs

        self._check_lam_range(check_alpha(alpha))
        solve, dtype = self._solver()
        self.certificate_ = dict()
        gen = iter_epochs(
            self.problem,
            solve,
            epochs,
            alpha,
            batch_size=batch_size,
            max_memory=max_memory,
            debias=debias,
            pick_ori=pick_ori,
            tol=tol,
            device=self.device,
            dtype=dtype,
            certificates=self.certificate_,
        )
        gen = _no_grad_gen(gen)
        return gen if return_generator else list(gen)

    def save(self, fname, *, overwrite=False):
        """Save the trained steps and metadata (no pickled code).

        The file (``.npz``, or any name) holds the steps and JSON metadata:
        number of layers, lam range, n_orient, loose, depth, rank, channel
        names, a fingerprint of the whitened gain, package and format
        versions. Read it back with :func:`mne_lista.read_step_lista`, with
        the forward, noise covariance and info the model was built from.

        Parameters
        ----------
        fname : path-like
            File name.
        overwrite : bool
            Overwrite an existing file.
        """
        from ._io import write_step_lista

        write_step_lista(fname, self, overwrite=overwrite)


def _no_grad_gen(gen):
    """Run a generator with autograd disabled (around each of its steps)."""
    while True:
        with torch.no_grad():
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item


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
    ``forward`` and ``noise_cov`` and trained with :meth:`StepLISTA.fit`
    (unsupervised, on simulated sources), unless a trained ``model`` is
    given; then it is applied with :meth:`StepLISTA.apply`.

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
        Keyword arguments of :meth:`StepLISTA.fit` for a new model.
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
        model.fit(**(fit_params or {}))
    else:
        _validate_type(model, StepLISTA, "model")
        if forward is not None or noise_cov is not None:
            if forward is None or noise_cov is None:
                raise ValueError(
                    "give both forward and noise_cov with model (or neither)"
                )
            from ._io import check_model_problem, gain_fingerprint

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
            check_model_problem(
                problem, gain_fingerprint(model.problem.gain), meta, what="model"
            )
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
