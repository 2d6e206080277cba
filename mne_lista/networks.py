"""Unrolled (learned) ISTA networks for the (group) Lasso.

Every network here is built from the pieces of :mod:`mne_lista._lasso`: the
proximal operator :func:`~mne_lista._lasso.prox` and one proximal gradient
iteration :func:`~mne_lista._lasso.ista_step`. The forward contract shared
by all networks is::

    Z = net(X, lam, n_layers=None)

with ``X`` a tensor of shape ``(n, B)`` (whitened data, one Lasso problem
per column), ``lam`` a scalar or a tensor of shape ``(B,)`` and ``Z`` of
shape ``(m, B)``. ``n_layers`` evaluates only the first layers.

- :class:`StepLISTANet` (Ablin et al., NeurIPS 2019): ISTA whose only learned
  parameters are one positive step size per layer. Untrained, it is ISTA.
- :class:`StepFISTANet`: FISTA with a learned step and a learned momentum
  per layer. Untrained, it is FISTA.
- :class:`SafeStepLISTANet`: Step-LISTA whose learned step is replaced by
  the ISTA step for the samples where it would raise the objective
  (experimental). Untrained, it is ISTA.
- :class:`SupportStepLISTANet`: safeguarded Step-LISTA whose step grows as
  the support of the iterate shrinks, per sample (experimental). Untrained,
  it is ISTA.
- :class:`BacktrackStepLISTANet`: the support-scaled network whose rejected
  steps are retried with smaller steps before the ISTA step, at inference
  (the network of :class:`mne_lista.StepLISTA`, whose default is
  ``adaptive=True``). Untrained, it is ISTA.
- :class:`LISTANet`: coupled LISTA (Chen et al., 2018), one matrix and one
  threshold per atom (per group) and layer.
- :class:`ALISTANet`: analytic LISTA (Liu et al., 2019), an analytic weight
  matrix and a learned step and threshold per layer.
"""

import numpy as np
import torch
from mne.utils import _validate_type

from ._lasso import (
    _as_lam,
    _group_sq_norms,
    ista_step,
    objective_from_residual,
    prox,
    zero_objective,
)
from ._problem import _check_problem


def _check_n_layers(n_layers, name="n_layers", maximum=None):
    _validate_type(n_layers, "int", name)
    n_layers = int(n_layers)
    if n_layers < 1:
        raise ValueError(f"{name} must be >= 1, got {n_layers}")
    if maximum is not None and n_layers > maximum:
        raise ValueError(
            f"{name} must be <= the number of layers of the network "
            f"({maximum}), got {n_layers}"
        )
    return n_layers


class _UnrolledNet(torch.nn.Module):
    """Common parts: the gain buffer, input checks and the layer loop."""

    def __init__(self, problem, n_layers, dtype):
        super().__init__()
        _check_problem(problem)
        self.n_layers = _check_n_layers(n_layers)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or float64, got {dtype}")
        self.n_orient = int(problem.n_orient)
        self.lipschitz = float(problem.lipschitz)
        self.register_buffer("D", torch.as_tensor(problem.gain, dtype=dtype).clone())

    @property
    def n_channels(self):
        return self.D.shape[0]

    @property
    def n_sources(self):
        return self.D.shape[1]

    def _check_input(self, X, lam, n_layers):
        _validate_type(X, torch.Tensor, "X")
        if X.ndim != 2 or X.shape[0] != self.n_channels:
            raise ValueError(
                f"X must have shape ({self.n_channels}, n_problems), got "
                f"{tuple(X.shape)}"
            )
        X = X.to(device=self.D.device, dtype=self.D.dtype)
        lam = _as_lam(lam, X.shape[1], X)
        n_layers = self.n_layers if n_layers is None else n_layers
        n_layers = _check_n_layers(n_layers, maximum=self.n_layers)
        return X, lam, n_layers

    def forward(self, X, lam, n_layers=None, *, return_all=False):
        """Run the network.

        Parameters
        ----------
        X : Tensor, shape (n, B)
            Whitened data.
        lam : float | Tensor, shape (B,)
            Regularization parameter of each column.
        n_layers : int | None
            Number of layers to run (all by default).
        return_all : bool
            If True, return the list of the outputs of all layers.

        Returns
        -------
        Z : Tensor, shape (m, B) | list of Tensor
        """
        X, lam, n_layers = self._check_input(X, lam, n_layers)
        Z = X.new_zeros((self.n_sources, X.shape[1]))
        outs = []
        state = self._init_state(Z)
        for t in range(n_layers):
            Z, state = self._layer(t, X, Z, lam, state)
            if return_all:
                outs.append(Z)
        return outs if return_all else Z

    def _init_state(self, Z):
        return None

    def extra_repr(self):
        return (
            f"n_layers={self.n_layers}, gain={tuple(self.D.shape)}, "
            f"n_orient={self.n_orient}"
        )


class StepLISTANet(_UnrolledNet):
    """Step-LISTA: ISTA with one learned positive step size per layer.

    Layer ``t`` computes ``z <- prox(z - a_t D^T(D z - x), a_t lam)`` with
    :func:`mne_lista._lasso.ista_step`. The step is parametrized in log-space
    in units of ``1/L`` (``a_t = exp(log_steps[t]) / L``), which keeps it
    positive and lets it grow multiplicatively; at initialization
    ``a_t = 1/L`` and the network computes ISTA exactly.

    Parameters
    ----------
    problem : LassoProblem
        The Lasso problem (its gain is stored as a buffer).
    n_layers : int
        Number of layers.
    dtype : torch.dtype
        Precision of the gain buffer and of the computations.

    Attributes
    ----------
    log_steps : Parameter, shape (n_layers,)
        ``log(a_t L)``, the learned parameters.
    steps : array, shape (n_layers,)
        The step sizes ``a_t``.
    """

    def __init__(self, problem, n_layers, *, dtype=torch.float32):
        super().__init__(problem, n_layers, dtype)
        self.log_steps = torch.nn.Parameter(torch.zeros(self.n_layers, dtype=dtype))

    def step_sizes(self):
        """The step sizes as a tensor (differentiable), shape (n_layers,)."""
        return torch.exp(self.log_steps) / self.lipschitz

    @property
    def steps(self):
        """The step sizes ``a_t`` (numpy array, shape (n_layers,))."""
        return self.step_sizes().detach().cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def set_steps(self, steps):
        """Set the step sizes from absolute values ``a_t`` (positive)."""
        steps = torch.as_tensor(np.array(steps, dtype=np.float64))
        if steps.shape != (self.n_layers,) or not bool(torch.all(steps > 0)):
            raise ValueError(
                f"steps must be {self.n_layers} positive values, got "
                f"shape {tuple(steps.shape)}"
            )
        self.log_steps.copy_(torch.log(steps * self.lipschitz))
        return self

    def _layer(self, t, X, Z, lam, state):
        step = torch.exp(self.log_steps[t]) / self.lipschitz
        return ista_step(self.D, X, Z, step, lam, self.n_orient), state


class StepFISTANet(StepLISTANet):
    """FISTA with a learned step and a learned momentum per layer.

    Layer ``t``: ``z_t = ista_step(y_{t-1}, a_t)``, ``y_t = z_t + b_t (z_t -
    z_{t-1})``. Initialized with ``a_t = 1/L`` and FISTA's momentum
    ``b_t = (s_t - 1) / s_{t+1}``, the untrained network is FISTA.

    Parameters are those of :class:`StepLISTANet`.

    Attributes
    ----------
    momentum : Parameter, shape (n_layers,)
        The momentum coefficients ``b_t``.
    """

    def __init__(self, problem, n_layers, *, dtype=torch.float32):
        super().__init__(problem, n_layers, dtype=dtype)
        mom, s = [], 1.0
        for _ in range(self.n_layers):
            s_new = (1.0 + np.sqrt(1.0 + 4.0 * s * s)) / 2.0
            mom.append((s - 1.0) / s_new)
            s = s_new
        self.momentum = torch.nn.Parameter(torch.tensor(mom, dtype=dtype))

    def _init_state(self, Z):
        return Z  # y_0

    def _layer(self, t, X, Z, lam, Y):
        step = torch.exp(self.log_steps[t]) / self.lipschitz
        Z_new = ista_step(self.D, X, Y, step, lam, self.n_orient)
        Y = Z_new + self.momentum[t] * (Z_new - Z)
        return Z_new, Y


class SafeStepLISTANet(StepLISTANet):
    """Step-LISTA with a monotone safeguard per sample (experimental).

    Layer ``t`` tries the learned step, ``z' = prox(z - a_t g, a_t lam)``
    with ``g = D^T(D z - x)``; for the samples where ``z'`` raises the Lasso
    objective, it takes the ISTA step ``prox(z - g / L, lam / L)`` instead
    (which never raises it). The objective decreases at every layer for
    every sample whatever the steps, so training can use steps far beyond
    ``2 / L`` (the supports of most samples allow ``1 / L_S``) without
    making the samples with large supports diverge. Each layer costs the
    two products of ISTA plus one product restricted to the rejected
    samples. Untrained (``a_t = 1/L``), it is ISTA.

    Parameters and attributes are those of :class:`StepLISTANet`, plus:

    Attributes
    ----------
    rejections_ : list of int
        Number of samples whose learned step was rejected at each layer of
        the last forward pass.
    """

    rejections_ = ()
    retries_ = ()  # smaller steps tried before 1/L (see _backtrack)

    def forward(self, X, lam, n_layers=None, *, return_all=False):
        self.rejections_, self.retries_ = [], []
        return super().forward(X, lam, n_layers, return_all=return_all)

    def products_per_layer(self, n_samples):
        """Gain products per sample and layer of the last forward pass.

        Two (``D^T r`` and ``D z``) plus one per retried or rejected sample.
        """
        if not self.rejections_:
            return 2.0
        n_extra = sum(self.retries_) + sum(self.rejections_)
        return 2.0 + n_extra / (len(self.rejections_) * n_samples)

    def _layer_step(self, t, Z):
        """The learned step of layer ``t`` (a scalar here) for the iterate Z."""
        return torch.exp(self.log_steps[t]) / self.lipschitz

    def _try_step(self, X, Z, grad, lam, step, idx=None):
        """A prox-gradient step on the columns ``idx`` (all by default).

        Returns the new iterate, its residual ``D z - x`` and objective.
        """
        if idx is not None:
            X, Z, grad, lam = X[:, idx], Z[:, idx], grad[:, idx], lam[idx]
        Z_s = prox(Z - step * grad, step * lam, self.n_orient)
        R_s = self.D @ Z_s - X
        return Z_s, R_s, objective_from_residual(R_s, Z_s, lam, self.n_orient)

    def _backtrack(self, X, Z, grad, lam, step, F, new, idx):
        """Hook: smaller steps for the rejected samples ``idx`` before 1/L.

        Returns the updated ``(Z, R, F)`` of the layer and the samples still
        rejected. None here.
        """
        return new, idx

    def _layer(self, t, X, Z, lam, state):
        R, F = (-X, zero_objective(X)) if state is None else state  # Z = 0
        grad = self.D.T @ R
        step = self._layer_step(t, Z)
        new = self._try_step(X, Z, grad, lam, step)
        idx = torch.nonzero((new[2] > F).detach()).flatten()
        new, idx = self._backtrack(X, Z, grad, lam, step, F, new, idx)
        self.rejections_.append(len(idx))
        if len(idx):  # the ISTA step never raises the objective
            ista = self._try_step(X, Z, grad, lam, 1.0 / self.lipschitz, idx)
            new = _replace_columns(idx, ista, new)
        return new[0], new[1:]


def _replace_columns(idx, part, full):
    """(Z, R, F) of all samples with the samples ``idx`` taken from ``part``."""
    return tuple(a.index_copy(a.ndim - 1, idx, b) for a, b in zip(full, part))


class SupportStepLISTANet(SafeStepLISTANet):
    """Safeguarded Step-LISTA with a step growing as the support shrinks.

    Experimental. The good step of ISTA on a sample is ``1 / L_S``, ``L_S =
    ||D_S||_2^2`` on the support ``S`` of its iterate (Ablin et al., 2019),
    and ``L_S`` grows with the size of the support (on the 7 mm volume
    forward, ``L / L_S`` is close to ``e^5.7 s^-0.7`` for ``s`` active
    positions, correlation 0.98 in log-log). Layer ``t`` uses for sample
    ``i`` the step::

        a_ti = exp(theta_t + beta_t * (r_t - log s_i)) / L

    with ``s_i`` the number of active groups (source positions) of the
    iterate ``z_i`` at the input of the layer, ``theta_t`` and ``beta_t``
    learned, and ``r_t`` a fixed reference (the mean of ``log s`` at layer
    ``t`` over the first batch the network sees; it only reparametrizes
    ``theta_t``, to decouple the two parameters in training). A sample with
    ``z_i = 0`` (all of them at the first layer) uses ``exp(theta_t) / L``.
    ``beta_t`` is ``support_scale * support_exp[t]``: the small scale slows
    down its updates, as ``r_t - log s_i`` spans several units.

    The learned step is rejected per sample, as in
    :class:`SafeStepLISTANet`, where it raises the objective (the ISTA step
    is taken instead): the spread of ``L_S`` among supports of the same
    size makes an unguarded network diverge on a few samples in training.
    Untrained (``theta = beta = 0``), it is ISTA. Parameters are those of
    :class:`StepLISTANet`.

    Attributes
    ----------
    log_steps : Parameter, shape (n_layers,)
        ``theta_t``: ``exp(theta_t) / L`` is the step for a support of the
        reference size (and for ``z = 0``).
    support_exp : Parameter, shape (n_layers,)
        ``beta_t / support_scale``.
    log_ref_support : buffer, shape (n_layers,)
        ``r_t`` (NaN until the first forward pass).
    rejections_ : list of int
        Number of samples whose learned step was rejected at each layer of
        the last forward pass.

    Notes
    -----
    On the 7 mm volume forward (free orientation, 20 layers, 4-epoch
    training recipe, 3 seeds) the mean suboptimality on held-out data
    matched 55 to 67 iterations of FISTA (49 to 61 on the training
    generator), at 2.17 to 2.31 gain products per layer and sample (the
    rejected steps), against 36 for :class:`StepLISTANet` (2 products) and
    50 to 54 (46 to 51) for :class:`SafeStepLISTANet` (2.24 to 2.36). An
    earlier surface figure (no gain over :class:`StepLISTANet`, FISTA@39
    against 41) was measured on a degenerate forward whose 516 sources sat
    at one point (see :func:`mne_lista.datasets.read_subset_src`).
    """

    support_scale = 0.1
    #: fewest epochs of the default training (fit_network): on the 7 mm
    #: volume, 12 epochs instead of 4 moved BacktrackStepLISTANet from
    #: FISTA@76 / 72 / 81 to 84 / 84 / 80 on held-out data (seeds 0, 1, 2)
    min_default_epochs = 12

    def __init__(self, problem, n_layers, *, dtype=torch.float32):
        super().__init__(problem, n_layers, dtype=dtype)
        self.support_exp = torch.nn.Parameter(torch.zeros(self.n_layers, dtype=dtype))
        self.register_buffer(
            "log_ref_support", torch.full((self.n_layers,), float("nan"), dtype=dtype)
        )

    def support_sizes(self, Z):
        """Number of active groups (source positions) of each column, (B,)."""
        if self.n_orient == 1:
            active = Z != 0
        else:
            active = _group_sq_norms(Z, self.n_orient) > 0
        return active.sum(0).to(Z.dtype)

    def _layer_step(self, t, Z):
        """Steps of layer ``t`` for the iterate ``Z``, shape (B,)."""
        s = self.support_sizes(Z.detach())
        nonzero = s > 0
        log_s = torch.log(s.clamp_min(1.0))
        if torch.isnan(self.log_ref_support[t]):
            with torch.no_grad():  # fixed by the first batch that reaches t
                ref = log_s[nonzero].mean() if bool(nonzero.any()) else 0.0
                self.log_ref_support[t] = ref
        feat = torch.where(nonzero, self.log_ref_support[t] - log_s, 0.0)
        beta = self.support_scale * self.support_exp[t]
        return torch.exp(self.log_steps[t] + beta * feat) / self.lipschitz


class BacktrackStepLISTANet(SupportStepLISTANet):
    """Support-scaled Step-LISTA with backtracking at inference.

    The network of :class:`mne_lista.StepLISTA` (``adaptive=True``, the
    default). Same parameters and training as :class:`SupportStepLISTANet`
    (a rejected learned step falls back to the ISTA step ``1 / L`` whenever
    gradients are enabled), but when the network runs without gradients
    (``torch.no_grad()``: evaluation, validation, inference) a sample whose
    learned step ``a`` raises the objective first retries the steps
    ``(a L)^(1/2) / L`` and then ``(a L)^(1/4) / L`` (geometrically closer
    to the ISTA step), and takes the ISTA step only if both raise the
    objective too. The objective still decreases at every layer for every
    sample. Each retry and each fallback costs one product ``D z`` for the
    samples concerned. Untrained (``a = 1/L``), it is ISTA.

    Parameters are those of :class:`StepLISTANet`.

    Attributes
    ----------
    retries_ : list of int
        Number of retried steps at each layer of the last forward pass (a
        sample retrying twice counts twice; zeros when gradients are
        enabled).
    rejections_ : list of int
        Number of samples that took the ISTA step at each layer of the last
        forward pass.

    Notes
    -----
    Validation (``torch.no_grad()`` in :func:`mne_lista.training.train`)
    uses the backtracking, so the parameters kept at each stage are the
    best for it. On the 7 mm volume forward (free orientation, 20 layers,
    400 held-out samples, half from another generator, half from the
    training one), trained for 12 epochs (the default of
    :func:`mne_lista.training.fit_network` for this network) with seeds 0, 1
    and 2, the mean suboptimality matched 84, 84 and 80 iterations of FISTA
    on the other generator (76, 74, 73 on the training one) at 2.34, 2.49
    and 2.53 gain products per layer and sample; with one retry level
    (``(a L)^(1/2)`` only) 84, 76, 79; trained for 4 epochs, 76, 71, 79.
    Per band of lam / lam_max: FISTA@55 to 60 in [0.1, 0.2), 75 to 78 in
    [0.2, 0.4), 111 to 125 in [0.4, 0.8). More retry levels (3 or 4) cost
    more and gained nothing. Backtracking in training too (gradients
    through the retries) gained nothing (one level, 4 epochs: 64, 59 and 73
    with ``sqrt(a / L)``, 67 with ``a / 4``, 57 with a retry step learned
    per layer): the training adapts its steps to the safeguard. Other
    per-sample steps tried on top of the safeguard gained nothing either
    (seed 0, held-out, other generator): Barzilai-Borwein features of the
    last two iterates (free from the residuals) 62; a learned momentum per
    layer (extrapolated point, monotone safeguard) 68 (4 epochs) and 71 (12
    epochs) at 2.5 to 2.7 products; a learned continuation ``lam_t = c_t
    lam`` 50.
    """

    #: exponents of the retried steps, in units of 1/L: (a L)^e / L
    retry_exponents = (0.5, 0.25)

    def _backtrack(self, X, Z, grad, lam, step, F, new, idx):
        n_retries = 0
        if not torch.is_grad_enabled():
            for exponent in self.retry_exponents:
                if not len(idx):
                    break
                n_retries += len(idx)
                a_L = step.expand(Z.shape[1])[idx] * self.lipschitz
                part = self._try_step(
                    X, Z, grad, lam, a_L**exponent / self.lipschitz, idx
                )
                new = _replace_columns(idx, part, new)
                idx = idx[(part[2] > F[idx]).detach()]
        self.retries_.append(n_retries)
        return new, idx


def _expand_groups(theta, n_orient):
    """Per-group values (G, ...) -> per-row values (G * n_orient, ...)."""
    return theta.repeat_interleave(n_orient, dim=0) if n_orient > 1 else theta


def _weighted_step(D, W, X, Z, thresh, n_orient):
    """``prox(Z - W^T (D Z - X), thresh)`` with per-row thresholds (m, B)."""
    U = Z - W.T @ (D @ Z - X)
    if n_orient == 1:
        return U - torch.minimum(torch.maximum(U, -thresh), thresh)
    # group soft-thresholding with a per-group threshold: scale each group
    # by its threshold, prox with threshold 1, scale back
    return prox(U / thresh, 1.0, n_orient) * thresh


class LISTANet(_UnrolledNet):
    """Coupled LISTA: a learned matrix and per-atom thresholds per layer.

    Layer ``t`` computes ``z <- prox(z - W_t^T (D z - x), lam * theta_t)``
    with ``W_t`` of the shape of ``D`` (initialized at ``D / L``) and one
    positive threshold per atom (per source position for groups) in
    ``theta_t`` (initialized at ``1/L``): the untrained network is ISTA.
    Thresholds are parametrized in log-space (positive).

    Parameters
    ----------
    problem : LassoProblem
        The Lasso problem.
    n_layers : int
        Number of layers.
    dtype : torch.dtype
        Precision.
    max_params : int
        Largest number of learned parameters allowed (``n_layers`` matrices
        of the size of the gain): a clear error is raised beyond it, as such
        a network is too large to train.
    """

    def __init__(self, problem, n_layers, *, dtype=torch.float32, max_params=10**8):
        super().__init__(problem, n_layers, dtype)
        n_params = self.n_layers * self.D.numel()
        if n_params > max_params:
            raise ValueError(
                f"LISTA on a {tuple(self.D.shape)} gain with {self.n_layers} "
                f"layers has {n_params:.3g} weights, more than max_params="
                f"{max_params:.3g}; use fewer layers or a smaller source space"
            )
        W0 = self.D / self.lipschitz
        self.W = torch.nn.Parameter(W0[None].repeat(self.n_layers, 1, 1).clone())
        n_groups = self.n_sources // self.n_orient
        self.log_thresh = torch.nn.Parameter(
            torch.full((self.n_layers, n_groups), -np.log(self.lipschitz), dtype=dtype)
        )

    def _layer(self, t, X, Z, lam, state):
        thresh = _expand_groups(torch.exp(self.log_thresh[t]), self.n_orient)
        thresh = thresh[:, None] * lam[None, :]
        return _weighted_step(self.D, self.W[t], X, Z, thresh, self.n_orient), state


def alista_weight(D, rtol=1e-2):
    """Analytic weight of ALISTA.

    Minimizes the off-diagonal ``||W^T D||_F`` subject to
    ``diag(W^T D) = 1``; column ``i`` is ``w_i = C^+ d_i / (d_i^T C^+ d_i)``
    with ``C = D D^T`` (closed form of the constrained least squares).

    Parameters
    ----------
    D : array, shape (n, m)
        The dictionary.
    rtol : float
        Relative cut-off of the pseudo-inverse of ``C``. Whitened MEG gains
        are numerically rank deficient (SSP, depth weighting): without the
        cut-off ``W^T x`` amplifies noise by orders of magnitude and the
        untrained network diverges.

    Returns
    -------
    W : array, shape (n, m)
    """
    D = np.asarray(D, dtype=np.float64)
    C_pinv = np.linalg.pinv(D @ D.T, rtol=rtol, hermitian=True)
    CD = C_pinv @ D
    denom = np.einsum("ij,ij->j", D, CD)
    return CD / np.maximum(denom, np.finfo(float).tiny)


def _spectral_radius(W, D, n_iter=100, seed=0):
    """Largest eigenvalue of ``W^T D`` (real, nonnegative here) by power iteration.

    ``W^T D = Delta^-1 P`` with ``P`` an orthogonal projector and ``Delta``
    positive diagonal for the ALISTA weight, so its spectrum is real and
    nonnegative. The m x m matrix is never formed.
    """
    u = np.random.default_rng(seed).standard_normal(D.shape[1])
    val = 0.0
    for _ in range(n_iter):
        v = W.T @ (D @ u)
        val = float(np.linalg.norm(v) / np.linalg.norm(u))
        u = v / np.linalg.norm(v)
    return val


class ALISTANet(_UnrolledNet):
    """ALISTA: analytic weight matrix, learned step and threshold per layer.

    Layer ``t`` computes ``z <- prox(z - g_t W^T (D z - x), theta_t lam)``
    with ``W`` from :func:`alista_weight` (fixed) and positive ``g_t``,
    ``theta_t`` (log-parametrized) both initialized at ``1/L_W``, ``L_W``
    the largest eigenvalue of ``W^T D``.

    Parameters are those of :class:`StepLISTANet`.
    """

    def __init__(self, problem, n_layers, *, dtype=torch.float32):
        super().__init__(problem, n_layers, dtype)
        W = alista_weight(problem.gain)
        lip_w = _spectral_radius(W, problem.gain)
        self.register_buffer("W", torch.as_tensor(W, dtype=dtype))
        init = np.full(self.n_layers, -np.log(lip_w))
        self.log_steps = torch.nn.Parameter(torch.as_tensor(init, dtype=dtype))
        self.log_thresh = torch.nn.Parameter(torch.as_tensor(init, dtype=dtype))

    def _layer(self, t, X, Z, lam, state):
        step = torch.exp(self.log_steps[t])
        thresh = torch.exp(self.log_thresh[t]) * lam
        U = Z - step * (self.W.T @ (self.D @ Z - X))
        return prox(U, thresh, self.n_orient), state


NETWORKS = {
    "step": StepLISTANet,
    "step_fista": StepFISTANet,
    "safe_step": SafeStepLISTANet,
    "support_step": SupportStepLISTANet,
    "backtrack_step": BacktrackStepLISTANet,
    "lista": LISTANet,
    "alista": ALISTANet,
}


def make_network(kind, problem, n_layers, *, dtype=torch.float32):
    """Build a network by name ('step', 'step_fista', 'safe_step',
    'support_step', 'backtrack_step', 'lista', 'alista')."""
    if kind not in NETWORKS:
        raise ValueError(f"kind must be one of {sorted(NETWORKS)}, got {kind!r}")
    return NETWORKS[kind](problem, n_layers, dtype=dtype)


__all__ = [
    "StepLISTANet",
    "StepFISTANet",
    "SafeStepLISTANet",
    "SupportStepLISTANet",
    "BacktrackStepLISTANet",
    "LISTANet",
    "ALISTANet",
    "alista_weight",
    "make_network",
]
