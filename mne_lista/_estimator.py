"""The estimator base shared by :class:`~mne_lista.StepLISTA` and
:class:`~mne_lista.StepMxNE`.

It owns what both do the same way: the problem built from forward + noise
covariance + info, the network on a device (started from the shipped
pretrained parameters, :mod:`mne_lista._pretrained`), the training on
simulated data,
the network-only :meth:`solve`, the MNE glue of :meth:`apply` /
:meth:`apply_epochs` (:mod:`mne_lista._apply`), the certificate, the alpha
range check and the model files (:mod:`mne_lista._io`). A subclass says
which problems it poses (``_solve_batch``: whitened epochs -> its problems ->
solutions), which network it uses (``_net_config``) and how it simulates
its training data (``_simulate``).
"""

import numpy as np
import torch
from mne.utils import _validate_type, logger, verbose, warn

from . import _apply, _io, _l21
from ._docs import fill_doc
from ._pretrained import set_pretrained
from ._problem import prepare_problem
from .networks import NETWORKS, UnrolledISTA, _check_n_layers


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


class _Estimator:
    """Learned sparse inverse solver: problem, network, fit, solve, apply, save."""

    # with tol, prove positions inactive from the network's output (Gap Safe
    # screening) before the exact solve; it never changes the answer (off
    # only to measure what it saves)
    _screen = True

    def __init__(
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
        pretrained,
    ):
        self.n_layers = _check_n_layers(n_layers)
        _validate_type(pretrained, bool, "pretrained")
        self.device = _check_device(device)
        self.problem = prepare_problem(
            forward, noise_cov, info, loose=loose, depth=depth, rank=rank
        )
        self.net = self._make_net()
        self.lam_range = None
        if pretrained:  # the shipped steps (or ISTA, logged, if none)
            self.lam_range = set_pretrained(
                self.net, self.network_name, check_data=self._pretrained_check_data
            )
        self.pretrained = pretrained and self.lam_range is not None
        self.history_ = None
        self.certificate_ = None

    # --- the network ----------------------------------------------------------

    @property
    def network_name(self):
        """The name of the network in model files (see :data:`NETWORKS`)."""
        raise NotImplementedError

    def _pretrained_check_data(self):
        """Training-like problems ``(M, lam)`` on each of which pretrained
        steps without a safeguard must do as well as ISTA (see
        :func:`~mne_lista._pretrained.set_pretrained`)."""
        raise NotImplementedError

    def _make_net(self, dtype=torch.float32):
        config = NETWORKS[self.network_name]
        net = UnrolledISTA(self.problem, self.n_layers, dtype=dtype, **config)
        return net.to(self.device)

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

    @property
    def fit_history_(self):
        """The training history (:attr:`history_`, its former name)."""
        return self.history_

    # --- training -------------------------------------------------------------

    def _train(self, simulate, *, lam_range, harder=None, **kwargs):
        """Train the network on ``simulate(n, random_state) -> (M, lam)``."""
        from .training import fit_network

        self.net.train()
        self.history_ = fit_network(self.net, simulate, harder=harder, **kwargs)
        self.net.eval()
        self.lam_range = tuple(float(v) for v in lam_range)
        self.history_["lam_range"] = self.lam_range
        return self

    def _check_lam_range(self, alpha):
        if self.lam_range is None:
            return
        lo, hi = self.lam_range
        if not lo <= alpha / 100.0 <= hi:
            warn(
                f"alpha={alpha:g}% is outside the range of lam / lam_max the "
                f"network was trained on ([{100 * lo:g}, {100 * hi:g}]%): "
                "check the certificate (relative duality gaps) or pass tol "
                "to solve exactly the problems that are not certified"
            )

    # --- solving --------------------------------------------------------------

    def _as_input(self, Mt):
        """Tensor data -> network input and a function shaping the output."""
        return Mt, lambda X: X

    @torch.no_grad()
    def solve(self, X, lam):
        """Run the network on whitened data (no certificate).

        Parameters
        ----------
        X : array | Tensor
            Whitened data (see ``problem.whiten``), one problem per column
            (:class:`~mne_lista.StepLISTA`) or per window
            (:class:`~mne_lista.StepMxNE`).
        lam : float | array | Tensor
            Regularization of each problem (``alpha / 100 * alpha_max``).

        Returns
        -------
        X : array | Tensor
            The network's output, of the kind of the input (a float64 numpy
            array, or a tensor on the model's device in the network's
            precision).
        """
        is_numpy = not isinstance(X, torch.Tensor)
        dtype = self.net.G.dtype
        Mt = _l21.to_tensor(X, device=self.device, dtype=dtype)
        if not bool(torch.isfinite(Mt).all()):
            raise ValueError("X contains NaN or infinite values")
        Mt, back = self._as_input(Mt)
        lam = _l21.to_tensor(lam, device=self.device, dtype=dtype)
        self.net.eval()
        out = back(self.net(Mt, lam))
        return out.double().cpu().numpy() if is_numpy else out

    @torch.no_grad()
    def _run_net(self, M, lam):
        """The network on float64 windows (n, W, K): float64 output."""
        dtype = self.net.G.dtype
        self.net.eval()
        return self.net(M.to(dtype), lam.to(dtype)).to(M.dtype)

    @staticmethod
    def _per_epoch(problem, X, M, time_basis=None, debias_ok=None):
        """Per-epoch pieces for the glue: (active, X rows, data, debias_ok).

        ``X`` is (m, E, K) and ``M`` (n, E, K); with ``time_basis`` (E, K, T)
        both map back to time through it (temporal components).
        """
        n_orient = problem.n_orient
        act = _l21.group_sq_norms(X, n_orient) > 0  # (P, E)
        out = []
        for e in range(X.shape[1]):
            rows = act[:, e].repeat_interleave(n_orient)
            Xe, Me = X[rows, e], M[:, e]
            if time_basis is not None:
                Xe, Me = Xe @ time_basis[e], Me @ time_basis[e]
            ok = True if debias_ok is None else bool(debias_ok[e])
            out.append((rows.cpu().numpy(), Xe.cpu().numpy(), Me.cpu().numpy(), ok))
        return out

    @staticmethod
    def _log_gaps(rel_gap, what):
        if rel_gap.size:
            logger.info(
                f"    Relative duality gap per {what}: median "
                f"{np.median(rel_gap):.2e}, max {np.max(rel_gap):.2e}"
            )

    # --- MNE data -------------------------------------------------------------

    def _columns_per_epoch(self, n_times, **solve_kw):
        """Columns an epoch of ``n_times`` samples becomes in the solver."""
        return n_times

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
        verbose=None,
    ):
        """Localize an evoked response, as :func:`~mne.inverse_sparse.mixed_norm`.

        The whitened data become the estimator's problems (see the class:
        one Lasso per time sample for :class:`~mne_lista.StepLISTA`, one L21
        problem over the window for :class:`~mne_lista.StepMxNE`) with
        ``lam = alpha / 100 * alpha_max``, alpha_max being the smallest
        regularization that gives a zero estimate of the whole window: as
        for ``mixed_norm``, ``alpha=0`` means no regularization and
        ``alpha -> 100`` no active source. The problems are solved by the
        network and certified by their duality gaps; the active set (the
        union over time of the supports) is debiased and returned in Am.

        Parameters
        ----------
        evoked : Evoked
            The data (its channels must include those of the model, with the
            same bad channels; crop it to the window of interest).
        %(alpha)s
        %(apply_outputs)s
        %(tol)s
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
        verbose=None,
    ):
        """Localize every epoch: batches of epochs through the solver at once.

        Parameters
        ----------
        epochs : Epochs
            The data.
        %(alpha)s
        %(epochs_batches)s
        debias, pick_ori, tol :
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
        )

    def _apply(self, evoked, alpha, *, tol, pick_ori, return_residual, **kwargs):
        alpha, tol = _apply.check_apply_args(
            self, evoked, alpha, tol, pick_ori, "evoked"
        )
        out, residual = _apply.apply_evoked(
            self,
            evoked,
            alpha,
            tol=tol,
            pick_ori=pick_ori,
            return_residual=return_residual,
            **kwargs,
        )
        return (out, residual) if return_residual else out

    def _apply_epochs(self, epochs, alpha, *, tol, pick_ori, return_generator, **kw):
        alpha, tol = _apply.check_apply_args(
            self, epochs, alpha, tol, pick_ori, "epochs"
        )
        gen = _apply.iter_estimates(
            self, epochs, alpha, tol=tol, pick_ori=pick_ori, **kw
        )
        return gen if return_generator else list(gen)

    # --- model files ----------------------------------------------------------

    def save(self, fname, *, overwrite=False):
        """Save the learned parameters and metadata (no pickled code).

        The file (``.npz``, or any name) holds the steps, the other learned
        arrays of the network and JSON metadata (network, number of layers,
        lam range, n_orient, loose, depth, rank, channel names, a
        fingerprint of the whitened gain, package and format versions); it
        is written atomically. Read it back with the reader of the class
        (:func:`mne_lista.read_step_lista`, :func:`mne_lista.read_step_mxne`)
        with the forward, noise covariance and info the model was built from.

        Parameters
        ----------
        fname : path-like
            File name.
        overwrite : bool
            Overwrite an existing file.
        """
        return _io.write_model(
            fname,
            problem=self.problem,
            net=self.net,
            network=self.network_name,
            lam_range=self.lam_range,
            overwrite=overwrite,
        )

    @classmethod
    def _read(cls, fname, forward, noise_cov, info, *, device, networks, **kwargs):
        """A model of this class from a file (see :mod:`mne_lista._io`)."""
        arrays = _io.read_model_arrays(fname)
        meta = arrays["metadata"]
        if meta.get("network", "StepLISTANet") not in networks:
            raise ValueError(
                f"{fname} holds a {meta.get('network')} network, not a "
                f"{cls.__name__} network ({', '.join(networks)})"
            )
        model = cls(
            forward,
            noise_cov,
            info,
            n_layers=int(meta["n_layers"]),
            loose=meta.get("loose", "auto"),
            depth=meta.get("depth", 0.8),
            rank=meta.get("rank"),
            device=device,
            pretrained=False,  # the file's parameters replace any start
            **kwargs,
        )
        _io.check_model_problem(model.problem, arrays["fingerprint"], meta, fname)
        dtype = getattr(torch, str(meta["dtype"]), None)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{fname}: unsupported network dtype {meta['dtype']!r}")
        if model.net.G.dtype != dtype:
            model.net = model._make_net(dtype)
        _io.load_network(model.net, arrays, fname)
        if meta.get("lam_range") is not None:
            model.lam_range = tuple(float(v) for v in meta["lam_range"])
        logger.info(
            f"Read {model!r} from {fname} (mne-lista {meta.get('mne_lista_version')})"
        )
        return model
