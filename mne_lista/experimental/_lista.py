"""LISTA and ALISTA on the per-sample (group) Lasso (research comparators)."""

import numpy as np
import torch
from mne.utils import _validate_type

from .. import _l21
from .._problem import _check_problem
from ..networks import _check_n_layers


class _PerSampleNet(torch.nn.Module):
    """Common parts: the gain buffer ``G``, the input checks, the layer loop.

    Input ``M`` of shape ``(n, B)`` (per-sample problems) gives ``(m, B)``;
    ``(n, B, 1)`` (the windows of :mod:`mne_lista.training`, ``K = 1``)
    gives ``(m, B, 1)``.
    """

    def __init__(self, problem, n_layers, dtype):
        super().__init__()
        _check_problem(problem)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or float64, got {dtype}")
        self.n_layers = _check_n_layers(n_layers)
        self.n_orient = int(problem.n_orient)
        self.lipschitz = float(problem.lipschitz)
        self.register_buffer("G", torch.as_tensor(problem.gain, dtype=dtype).clone())

    @property
    def n_channels(self):
        return self.G.shape[0]

    @property
    def n_sources(self):
        return self.G.shape[1]

    @staticmethod
    def sparse_frac(M):
        """Dense products only (per-sample batches are rarely sparse)."""
        return 0.0

    def _check_input(self, M, lam, n_layers):
        _validate_type(M, torch.Tensor, "M")
        windows = M.ndim == 3
        if (
            M.ndim not in (2, 3)
            or M.shape[0] != self.n_channels
            or (windows and M.shape[2] != 1)
        ):
            raise ValueError(
                f"M must have shape ({self.n_channels}, n_samples) or "
                f"({self.n_channels}, n_samples, 1) (per-sample problems only), "
                f"got {tuple(M.shape)}"
            )
        M = M.to(device=self.G.device, dtype=self.G.dtype)
        M = M[:, :, 0] if windows else M
        lam = _l21.as_lam(lam, M.shape[1], M)
        n_layers = self.n_layers if n_layers is None else n_layers
        n_layers = _check_n_layers(n_layers, maximum=self.n_layers)
        return M, lam, n_layers, windows

    def forward(self, M, lam, n_layers=None, *, return_all=False, return_stats=False):
        """Run the network.

        Parameters
        ----------
        M : Tensor, shape (n, B) | (n, B, 1)
            Whitened data, one problem per column.
        lam : float | Tensor, shape (B,)
            Regularization of each problem.
        n_layers : int | None
            Number of layers to run (all by default).
        return_all : bool
            Return the list of the outputs of all layers.
        return_stats : bool
            Also return ``{'products_per_layer': 2.0}`` (one product with
            ``G`` and one with ``W_t^T`` per layer), as
            :class:`~mne_lista.networks.UnrolledISTA`.

        Returns
        -------
        X : Tensor, shape (m, B) | (m, B, 1) | list of Tensor
        stats : dict
            Only with ``return_stats``.
        """
        M, lam, n_layers, windows = self._check_input(M, lam, n_layers)
        X = M.new_zeros((self.n_sources, M.shape[1]))
        outs = []
        for t in range(n_layers):
            X = self._layer(t, M, X, lam)
            if return_all:
                outs.append(X[:, :, None] if windows else X)
        out = outs if return_all else (X[:, :, None] if windows else X)
        if return_stats:
            return out, dict(products_per_layer=2.0)
        return out

    def extra_repr(self):
        return (
            f"n_layers={self.n_layers}, gain={tuple(self.G.shape)}, "
            f"n_orient={self.n_orient}"
        )


def _expand_groups(theta, n_orient):
    """Per-position values (P, ...) -> per-row values (P * n_orient, ...)."""
    return theta.repeat_interleave(n_orient, dim=0) if n_orient > 1 else theta


def _prox_rows(U, thresh, n_orient):
    """Group soft thresholding of (m, B) with per-row thresholds (m, B).

    The threshold is constant within each group: scaled by it, the group
    prox with threshold 1 (:func:`mne_lista._l21.prox`), scaled back.
    """
    if n_orient == 1:
        return U - torch.minimum(torch.maximum(U, -thresh), thresh)
    out = _l21.prox((U / thresh)[:, :, None], 1.0, n_orient)[:, :, 0]
    return out * thresh


class LISTA(_PerSampleNet):
    """Coupled LISTA: a learned matrix and per-position thresholds per layer.

    Layer ``t`` computes ``x <- prox(x - W_t^T (G x - m), lam * theta_t)``
    (Chen et al., NeurIPS 2018, with the coupling ``W_2 = I - W_1^T G``),
    with ``W_t`` of the shape of ``G`` (initialized at ``G / L``) and one
    positive threshold per source position in ``theta_t`` (initialized at
    ``1/L``, parametrized in log-space): the untrained network is ISTA.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its whitened gain is stored as the buffer ``G``).
    n_layers : int
        Number of layers.
    dtype : torch.dtype
        Precision.
    max_params : int
        Largest number of learned weights allowed (``n_layers`` matrices of
        the size of the gain): a clear error is raised beyond it, as such a
        network is too large to train.

    Notes
    -----
    Train it with a much smaller learning rate than Step-LISTA (e.g.
    ``train(..., lr=1e-4)``): its weights are matrices.
    """

    def __init__(self, problem, n_layers, *, dtype=torch.float32, max_params=10**8):
        super().__init__(problem, n_layers, dtype)
        n_params = self.n_layers * self.G.numel()
        if n_params > max_params:
            raise ValueError(
                f"LISTA on a {tuple(self.G.shape)} gain with {self.n_layers} "
                f"layers has {n_params:.3g} weights, more than max_params="
                f"{max_params:.3g}; use fewer layers or a smaller source space"
            )
        W0 = self.G / self.lipschitz
        self.W = torch.nn.Parameter(W0[None].repeat(self.n_layers, 1, 1).clone())
        n_groups = self.n_sources // self.n_orient
        self.log_thresh = torch.nn.Parameter(
            torch.full((self.n_layers, n_groups), -np.log(self.lipschitz), dtype=dtype)
        )

    def _layer(self, t, M, X, lam):
        theta = _expand_groups(torch.exp(self.log_thresh[t]), self.n_orient)
        U = X - self.W[t].T @ (self.G @ X - M)
        return _prox_rows(U, theta[:, None] * lam[None, :], self.n_orient)


def alista_weight(G, rtol=1e-2):
    """Analytic weight of ALISTA.

    Minimizes the off-diagonal ``||W^T G||_F`` subject to
    ``diag(W^T G) = 1``; column ``i`` is ``w_i = C^+ g_i / (g_i^T C^+ g_i)``
    with ``C = G G^T`` (closed form of the constrained least squares).

    Parameters
    ----------
    G : array, shape (n, m)
        The gain.
    rtol : float
        Relative cut-off of the pseudo-inverse of ``C``. Whitened MEG gains
        are numerically rank deficient (SSP, depth weighting): without the
        cut-off ``W^T m`` amplifies noise by orders of magnitude and the
        untrained network diverges.

    Returns
    -------
    W : array, shape (n, m)
    """
    G = np.asarray(G, dtype=np.float64)
    C = G @ G.T
    w, V = np.linalg.eigh(C)
    keep = w > rtol * w.max()
    C_pinv = (V[:, keep] / w[keep]) @ V[:, keep].T
    CG = C_pinv @ G
    denom = np.einsum("ij,ij->j", G, CG)
    return CG / np.maximum(denom, np.finfo(float).tiny)


def _spectral_radius(W, G, n_iter=100, seed=0):
    """Largest eigenvalue of ``W^T G`` (real, nonnegative here), power iteration.

    ``W^T G = Delta^-1 P`` with ``P`` an orthogonal projector and ``Delta``
    positive diagonal for the ALISTA weight, so its spectrum is real and
    nonnegative. The m x m matrix is never formed.
    """
    u = np.random.default_rng(seed).standard_normal(G.shape[1])
    val = 0.0
    for _ in range(n_iter):
        v = W.T @ (G @ u)
        val = float(np.linalg.norm(v) / np.linalg.norm(u))
        u = v / np.linalg.norm(v)
    return val


class ALISTA(_PerSampleNet):
    """ALISTA: analytic weight matrix, learned step and threshold per layer.

    Layer ``t`` computes ``x <- prox(x - g_t W^T (G x - m), theta_t lam)``
    (Liu et al., ICLR 2019) with ``W`` from :func:`alista_weight` (fixed,
    the buffer ``W``) and positive ``g_t = exp(log_steps[t]) / L_W``,
    ``theta_t = exp(log_thresh[t]) / L_W``, both initialized at ``1/L_W``
    (``log_steps = log_thresh = 0``), ``L_W`` the largest eigenvalue of
    ``W^T G``.

    Parameters
    ----------
    problem : LassoProblem
        The problem.
    n_layers : int
        Number of layers.
    dtype : torch.dtype
        Precision.
    rtol : float
        Cut-off of :func:`alista_weight`.
    """

    def __init__(self, problem, n_layers, *, dtype=torch.float32, rtol=1e-2):
        super().__init__(problem, n_layers, dtype)
        W = alista_weight(problem.gain, rtol=rtol)
        self.lipschitz_w = _spectral_radius(W, problem.gain)
        self.register_buffer("W", torch.as_tensor(W, dtype=dtype))
        self.log_steps = torch.nn.Parameter(torch.zeros(self.n_layers, dtype=dtype))
        self.log_thresh = torch.nn.Parameter(torch.zeros(self.n_layers, dtype=dtype))

    def _layer(self, t, M, X, lam):
        step = torch.exp(self.log_steps[t]) / self.lipschitz_w
        thresh = torch.exp(self.log_thresh[t]) / self.lipschitz_w * lam
        U = X - step * (self.W.T @ (self.G @ X - M))
        return _l21.prox(U[:, :, None], thresh, self.n_orient)[:, :, 0]
