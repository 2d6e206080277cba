"""The MEG/EEG Lasso problem: forward + noise covariance -> whitened gain.

The dictionary is built exactly as :func:`mne.inverse_sparse.mixed_norm`
builds it (whitener with SSP and rank, ``depth_sparse`` depth prior, loose
orientation prior), so that solutions of mne-lista and of MNE's sparse
solvers are solutions of the same problem.
"""

import numpy as np
import torch
from mne import Covariance, Evoked, Forward
from mne.epochs import BaseEpochs
from mne.io.constants import FIFF
from mne.utils import _validate_type, logger, verbose

from . import _compat
from ._l21 import gram_matrix, lipschitz, to_tensor


class LassoProblem:
    """A (group) Lasso problem ``min_z 1/2||x - G z||^2 + lam sum_g ||z_g||``.

    Parameters
    ----------
    gain : array, shape (n_channels, n_sources)
        The dictionary (whitened, weighted gain for MEG/EEG problems).
    n_orient : int
        Number of consecutive rows of ``z`` forming one group (1 for fixed
        orientation, 3 for free or loose orientation).

    Attributes
    ----------
    gain : array, shape (n, m)
        The dictionary, float64.
    n_orient : int
        Group size.
    lipschitz : float
        ``||gain||_2^2``, the Lipschitz constant of the data-fit gradient.
    ch_names : list of str | None
        Channel names in the order of the rows of ``gain`` (MEG/EEG problems).
    whitener : array, shape (n, n_channels) | None
        Maps channel data (``ch_names`` order) to the whitened data space.
    source_weighting : array, shape (m,) | None
        Multiply a solution row-wise by it to get source amplitudes in Am.
    forward : Forward | None
        The forward, converted to the orientation used and restricted to the
        channels used.
    src : SourceSpaces | None
        The source space.
    mask : array of bool, shape (m_forward,) | None
        With ``weights`` (:meth:`weighted`): the columns of the forward's
        gain kept (those with a weight above ``weights_min``); ``gain`` and
        ``source_weighting`` hold only those. None without weights.
    """

    def __init__(self, gain, n_orient=1):
        gain = np.asarray(gain, dtype=np.float64)
        if gain.ndim != 2:
            raise ValueError(f"gain must be 2D, got shape {gain.shape}")
        if n_orient not in (1, 3) or gain.shape[1] % n_orient:
            raise ValueError(
                f"n_orient must be 1 or 3 and divide the number of columns "
                f"({gain.shape[1]}), got {n_orient}"
            )
        if not np.isfinite(gain).all():
            raise ValueError("gain contains NaN or infinite values")
        self.gain = gain
        self.n_orient = int(n_orient)
        self.lipschitz = lipschitz(gain)
        self.ch_names = None
        self.whitener = None
        self.source_weighting = None
        self.forward = None
        self.src = None
        self.info = None
        self.loose = None
        self.depth = None
        self.rank = None
        self.mask = None
        self._tensors = {}

    @property
    def n_channels(self):
        """Number of rows of the gain (whitened data dimension)."""
        return self.gain.shape[0]

    @property
    def n_sources(self):
        """Number of columns of the gain (source components)."""
        return self.gain.shape[1]

    @property
    def n_positions(self):
        """Number of source positions (groups)."""
        return self.gain.shape[1] // self.n_orient

    def gain_tensor(self, device="cpu", dtype=torch.float64):
        """The gain as a torch tensor, cached per device and dtype."""
        key = (str(torch.device(device)), dtype)
        if key not in self._tensors:
            self._tensors[key] = torch.as_tensor(self.gain, dtype=dtype).to(device)
        return self._tensors[key]

    def position_lipschitz(self, device="cpu", dtype=torch.float64):
        """``||G_p||_2^2`` of each source position's block of gain columns.

        Shape ``(n_positions,)``, cached per device and dtype as
        :meth:`gain_tensor` (see :func:`mne_lista.solvers.position_lipschitz`).
        """
        from ._bcd import position_lipschitz

        key = ("position_lipschitz", str(torch.device(device)), dtype)
        if key not in self._tensors:
            gain = self.gain_tensor(device, dtype)
            self._tensors[key] = position_lipschitz(gain, self.n_orient)
        return self._tensors[key]

    def gram(self, device="cpu", dtype=torch.float64):
        """The Gram ``G^T G`` of the gain, cached per device and dtype.

        The certified solvers read their working sets' Grams and their
        products ``G^T R`` from it when a batch is large enough
        (:func:`mne_lista._bcd.full_gram`).
        """
        key = ("gram", str(torch.device(device)), dtype)
        if key not in self._tensors:
            self._tensors[key] = gram_matrix(self.gain_tensor(device, dtype))
        return self._tensors[key]

    def weighted(self, weights, weights_min=0.0):
        """This problem with a prior on the source positions, as ``mixed_norm``.

        The weighted L21 penalty ``sum_p ||X_p|| / w_p`` of
        :func:`mne.inverse_sparse.mixed_norm`'s ``weights`` is the plain L21
        penalty on the gain with its columns multiplied by the weights (and
        the solution multiplied by them back, which ``source_weighting``
        does): MNE's ``_prepare_weights`` (:mod:`mne_lista._compat`) builds
        that gain, dropping the positions with weights not above
        ``weights_min`` (:attr:`mask`). The solvers need no change.

        Parameters
        ----------
        weights : array, shape (n_positions,) | SourceEstimate
            The prior (e.g. a dSPM estimate: its peak absolute value per
            position is used), normalized by its maximum.
        weights_min : float
            Positions with weights not above it are dropped.

        Returns
        -------
        problem : LassoProblem
            A new problem (this one is unchanged).
        """
        if self.forward is None or self.mask is not None:
            raise RuntimeError(
                "weights need an unweighted problem built by prepare_problem"
            )
        gain, sw, mask = _compat.prepare_weights(
            self.forward, self.gain, self.source_weighting, weights, weights_min
        )
        new = LassoProblem(gain, self.n_orient)
        for key in ("ch_names", "whitener", "forward", "src", "info"):
            setattr(new, key, getattr(self, key))
        new.loose, new.depth, new.rank = self.loose, self.depth, self.rank
        new.source_weighting = sw[mask]
        new.mask = mask
        logger.info(f"    weights: {new.n_positions} of {self.n_positions} positions")
        return new

    def full_active(self, active):
        """An active set over the gain's columns as one over the forward's."""
        active = np.asarray(active, dtype=bool)
        if self.mask is None:
            return active
        full = np.zeros(self.mask.shape, dtype=bool)
        full[self.mask] = active
        return full

    def __repr__(self):
        kind = "" if self.src is None else f" | {self.src.kind} source space"
        return (
            f"<LassoProblem | {self.n_channels} x {self.n_sources}, "
            f"n_orient={self.n_orient}{kind}>"
        )

    def whiten(self, inst):
        """Whiten MEG/EEG data with the problem's whitener.

        Parameters
        ----------
        inst : Evoked | Epochs | array
            Data. An array has shape (n_channels, n_times) or (n_epochs,
            n_channels, n_times) with channels in the order of ``ch_names``.

        Returns
        -------
        data : array, shape (n, n_times) or (n_epochs, n, n_times)
            The whitened data, float64.
        """
        if self.whitener is None:
            raise RuntimeError("This problem has no whitener (built from a gain).")
        if isinstance(inst, Evoked | BaseEpochs):
            picks = _check_channels_of(self, inst)
            data = (
                inst.get_data(picks=picks)
                if isinstance(inst, BaseEpochs)
                else (inst.data[picks])
            )
        elif isinstance(inst, np.ndarray | torch.Tensor):
            data = np.asarray(inst.cpu() if isinstance(inst, torch.Tensor) else inst)
            if data.ndim not in (2, 3) or data.shape[-2] != len(self.ch_names):
                raise ValueError(
                    f"data array must have shape (n_channels, n_times) or "
                    f"(n_epochs, n_channels, n_times) with n_channels="
                    f"{len(self.ch_names)}, got {data.shape}"
                )
        else:
            raise TypeError(
                "inst must be an instance of Evoked, Epochs or ndarray, got "
                f"{type(inst)}"
            )
        data = np.asarray(data, dtype=np.float64)
        if not np.isfinite(data).all():
            raise ValueError("data contain NaN or infinite values")
        return np.matmul(self.whitener, data)


def _check_channels_of(problem, inst):
    """Indices of the problem's channels in an Evoked/Epochs, with clear errors.

    The data must hold every channel of the problem, none of them marked bad,
    and an average reference projector for EEG.
    """
    if problem.whitener is None:
        raise RuntimeError("This problem has no whitener (built from a gain).")
    _compat.check_reference(inst.info)
    ch_names = problem.ch_names
    missing = [c for c in ch_names if c not in inst.ch_names]
    if missing:
        raise ValueError(
            f"{len(missing)} channel(s) used by the model are missing from the "
            f"data: {missing[:10]}"
        )
    bads = [c for c in ch_names if c in inst.info["bads"]]
    if bads:
        raise ValueError(
            f"channel(s) {bads[:10]} are marked bad in the data but used by "
            "the model: rebuild the model with the same bad channels"
        )
    return [inst.ch_names.index(c) for c in ch_names]


def _check_channels(forward, noise_cov, info):
    """Check that the good data channels of info are in forward and cov."""
    _compat.check_reference(info)
    fwd_types = set()
    fwd_chs = set(forward["sol"]["row_names"])
    for ch in forward["info"]["chs"]:
        fwd_types.add(ch["kind"])
    data_kinds = (FIFF.FIFFV_MEG_CH, FIFF.FIFFV_EEG_CH, FIFF.FIFFV_REF_MEG_CH)
    good = [
        ch["ch_name"]
        for ch in info["chs"]
        if ch["kind"] in data_kinds
        and ch["kind"] in fwd_types
        and ch["ch_name"] not in info["bads"]
    ]
    if not good:
        raise ValueError(
            "no good channel of info is of a channel type of the forward "
            f"(forward has {len(fwd_chs)} channels, e.g. {sorted(fwd_chs)[:3]})"
        )
    missing = [c for c in good if c not in fwd_chs]
    if missing:
        raise ValueError(
            f"{len(missing)} good channel(s) of info are missing from the "
            f"forward solution: {missing[:10]}; mark them as bad or recompute "
            "the forward"
        )
    cov_bads = set(noise_cov["bads"])
    missing = [c for c in good if c not in noise_cov.ch_names or c in cov_bads]
    if missing:
        raise ValueError(
            f"{len(missing)} good channel(s) of info are missing from (or bad "
            f"in) the noise covariance: {missing[:10]}"
        )


@verbose
def prepare_problem(
    forward,
    noise_cov,
    info,
    *,
    loose="auto",
    depth=0.8,
    rank=None,
    weights=None,
    weights_min=0.0,
    verbose=None,
):
    """Build the whitened, weighted Lasso problem of a forward model.

    Parameters
    ----------
    forward : Forward
        The forward solution.
    noise_cov : Covariance
        The noise covariance.
    info : Info
        Measurement info: the good MEG/EEG channels are used, with its SSP
        projectors folded into the whitener.
    loose : float | 'auto' | dict
        Orientation constraint, as in :func:`mne.inverse_sparse.mixed_norm`
        (0 is fixed orientation, 1 free; 'auto' is 0.2 for surface source
        spaces and 1 otherwise).
    depth : float | None | dict
        Depth weighting exponent, as in :func:`mne.inverse_sparse.mixed_norm`.
    rank : None | 'info' | 'full' | dict
        Rank of the noise covariance, as in MNE.
    weights : None | array | SourceEstimate
        A prior on the source positions, as in
        :func:`mne.inverse_sparse.mixed_norm` (see
        :meth:`LassoProblem.weighted`).
    weights_min : float
        With ``weights``: drop the positions whose weight is not above it.
    verbose : bool | str | int | None
        Control verbosity of the logging output.

    Returns
    -------
    problem : LassoProblem
        The problem; ``gain`` is identical to the one ``mixed_norm`` solves
        (before its alpha scaling) and ``source_weighting`` maps solutions to
        Am.
    """
    _validate_type(forward, Forward, "forward")
    _validate_type(noise_cov, Covariance, "noise_cov")
    info = getattr(info, "info", info)
    _validate_type(info, "info", "info")
    _check_channels(forward, noise_cov, info)
    fwd, gain, gain_info, whitener, source_weighting = _compat.prepare_gain(
        forward, info, noise_cov, depth=depth, loose=loose, rank=rank
    )
    n_orient = 1 if fwd["source_ori"] == FIFF.FIFFV_MNE_FIXED_ORI else 3
    problem = LassoProblem(gain, n_orient)
    problem.ch_names = list(gain_info["ch_names"])
    problem.whitener = np.asarray(whitener, dtype=np.float64)
    problem.source_weighting = np.asarray(source_weighting, dtype=np.float64)
    problem.forward = fwd
    problem.src = fwd["src"]
    problem.info = gain_info
    problem.loose = loose
    problem.depth = depth
    problem.rank = rank
    logger.info(f"    {problem!r}, lipschitz={problem.lipschitz:.4g}")
    if weights is not None:
        problem = problem.weighted(weights, weights_min)
    return problem


def _check_problem(problem):
    if not isinstance(problem, LassoProblem):
        raise TypeError(
            f"problem must be a LassoProblem (see prepare_problem), got {type(problem)}"
        )
    return problem


def _data_tensor(problem, X, device=None, dtype=None, *, windows=False):
    """X as a tensor checked against the problem, the gain, and a converter back.

    ``X`` is ``(n,)`` or ``(n, B)`` (per-sample problems) or, with
    ``windows=True``, also ``(n, W, K)``. Returns ``(X_tensor, G, back)``:
    ``X_tensor`` is ``(n, B)``, or ``(n, W, K)`` with ``windows=True`` (a
    2D ``X`` then becomes ``(n, B, 1)``); ``back(Z)`` returns a solution in
    the shape and kind (numpy array or tensor) of the input.
    """
    _check_problem(problem)
    is_numpy = not isinstance(X, torch.Tensor)
    Xt = to_tensor(X, device=device, dtype=dtype)
    in_ndim = Xt.ndim
    if in_ndim == 1:
        Xt = Xt[:, None]
    ok_ndim = (2, 3) if windows else (2,)
    if Xt.ndim not in ok_ndim or Xt.shape[0] != problem.n_channels:
        shapes = "(n, n_problems)" + (" or (n, n_windows, K)" if windows else "")
        raise ValueError(
            f"X must have shape {shapes} with n={problem.n_channels}, got "
            f"{tuple(X.shape)}"
        )
    if not bool(torch.isfinite(Xt).all()):
        raise ValueError("X contains NaN or infinite values")
    if windows and Xt.ndim == 2:
        Xt = Xt[:, :, None]
    G = problem.gain_tensor(Xt.device, Xt.dtype)

    def back(Z):
        if in_ndim == 1:
            Z = Z.reshape(-1)
        elif in_ndim == 2:
            Z = Z.reshape(Z.shape[0], -1)
        return Z.detach().cpu().numpy() if is_numpy else Z

    return Xt, G, back


__all__ = ["LassoProblem", "prepare_problem"]
