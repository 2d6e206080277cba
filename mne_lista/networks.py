"""The unrolled network: ISTA with learned step sizes, for both problems.

:class:`UnrolledISTA` unrolls ISTA on the problems of :mod:`mne_lista._l21`
(the per-sample Lasso, ``K = 1``, and the L21 mixed norm over windows) over
``n_layers`` layers. As in deepinv's unfolded models, it is composed of

- the iteration: one proximal gradient step,
  :func:`mne_lista._l21.ista_step`, optionally with a learned momentum;
- a **step rule**, how the step of layer ``t`` is chosen:

  - ``'layer'``: one learned step per layer (Step-LISTA, Ablin et al.,
    NeurIPS 2019);
  - ``'support'``: the step of each window also grows as the support of its
    iterate shrinks (the good step on a support ``S`` is ``1 / L_S``, and
    ``L_S`` grows with ``|S|``);

- a **safeguard**, what happens to a step that raises a window's objective:

  - ``'none'``: nothing (plain Step-LISTA, which can diverge);
  - ``'monotone'``: it is replaced by the ISTA step ``1/L``, which never
    raises the objective;
  - ``'backtracking'``: in evaluation mode (``net.eval()``) smaller steps
    are tried first, then ``1/L``; in training mode as ``'monotone'``;

- its trainable parameters, held by the network (``log_steps``,
  ``support_exp``, ``momentum``).

Untrained (all steps ``1/L``, no support scaling), every configuration
computes ISTA exactly (FISTA with ``momentum=True``). The training is
separate (:mod:`mne_lista.training`), and so are the pretrained parameters
the estimators start from (:mod:`mne_lista._pretrained`). The networks of
the estimators:
``StepLISTA()`` uses ``step_rule='support', safeguard='backtracking'``
(``adaptive=True``, the default) or the plain ``'layer'``/``'none'``;
``StepMxNE()`` the plain one, on windows (``momentum=True`` optional).
"""

import numpy as np
import torch
from mne.utils import _check_option, _validate_type

from . import _l21
from ._problem import _check_problem

STEP_RULES = ("layer", "support")
SAFEGUARDS = ("none", "monotone", "backtracking")


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


def _fista_momenta(n_layers):
    """FISTA's extrapolation coefficients ``(s_t - 1) / s_{t+1}``."""
    mom, s = [], 1.0
    for _ in range(n_layers):
        s_new = (1.0 + np.sqrt(1.0 + 4.0 * s * s)) / 2.0
        mom.append((s - 1.0) / s_new)
        s = s_new
    return mom


class UnrolledISTA(torch.nn.Module):
    """ISTA unrolled over ``n_layers`` layers with learned step sizes.

    Layer ``t`` computes ``X <- prox(X - a_t G^T(G X - M), a_t lam)`` (see
    the module docstring for the step rules and safeguards). The steps are
    parametrized in log-space in units of ``1/L`` (``a_t = exp(log_steps[t])
    / L``), which keeps them positive and lets them grow multiplicatively.
    With ``step_rule='support'``, window ``w`` at layer ``t`` uses::

        a_tw = exp(log_steps[t] + beta_t * (r_t - log s_w)) / L

    with ``s_w`` the number of active positions of its iterate (``s_w = 0``,
    as at the first layer, uses ``exp(log_steps[t]) / L``), ``beta_t =
    support_scale * support_exp[t]`` (the small scale slows its updates, as
    ``r_t - log s_w`` spans several units) and ``r_t`` a fixed reference,
    the mean ``log s`` at layer ``t`` of the untrained network on training
    data (:meth:`set_support_reference`): it only reparametrizes
    ``log_steps``, to decouple the two parameters in training.

    Parameters
    ----------
    problem : LassoProblem
        The problem (its whitened gain is stored as the buffer ``G``).
    n_layers : int
        Number of layers.
    step_rule : 'layer' | 'support'
        One step per layer, or per window scaled by its support size.
    safeguard : 'none' | 'monotone' | 'backtracking'
        What to do with steps that raise a window's objective.
    momentum : bool
        Learn one momentum per layer, initialized at FISTA's (the untrained
        network is FISTA); only with ``safeguard='none'``.
    dtype : torch.dtype
        Precision of the gain buffer and of the computations.

    Notes
    -----
    Input ``M`` of shape ``(n, W, K)`` holds ``W`` windows of ``K`` columns
    (one L21 problem each); ``(n, B)`` is ``B`` per-sample problems (the
    Lasso, ``K = 1``), and the output then has shape ``(m, B)``.
    """

    #: scale of ``support_exp`` in the support exponent ``beta_t``
    support_scale = 0.1
    #: exponents of the steps retried by the backtracking: ``(a L)^e / L``
    retry_exponents = (0.5, 0.25)

    def __init__(
        self,
        problem,
        n_layers,
        *,
        step_rule="layer",
        safeguard="none",
        momentum=False,
        dtype=torch.float32,
    ):
        super().__init__()
        _check_problem(problem)
        _check_option("step_rule", step_rule, STEP_RULES)
        _check_option("safeguard", safeguard, SAFEGUARDS)
        _validate_type(momentum, bool, "momentum")
        if momentum and safeguard != "none":
            raise ValueError("momentum=True needs safeguard='none'")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or float64, got {dtype}")
        self.n_layers = _check_n_layers(n_layers)
        self.step_rule, self.safeguard = step_rule, safeguard
        self.n_orient = int(problem.n_orient)
        self.lipschitz = float(problem.lipschitz)
        self.register_buffer("G", torch.as_tensor(problem.gain, dtype=dtype).clone())
        self.log_steps = torch.nn.Parameter(torch.zeros(self.n_layers, dtype=dtype))
        if step_rule == "support":
            self.support_exp = torch.nn.Parameter(
                torch.zeros(self.n_layers, dtype=dtype)
            )
            self.register_buffer(
                "log_ref_support",
                torch.full((self.n_layers,), float("nan"), dtype=dtype),
            )
        if momentum:
            mom = torch.tensor(_fista_momenta(self.n_layers), dtype=dtype)
            self.momentum = torch.nn.Parameter(mom)

    # --- the learned steps ------------------------------------------------

    @property
    def has_momentum(self):
        return hasattr(self, "momentum")

    @property
    def n_channels(self):
        return self.G.shape[0]

    @property
    def n_sources(self):
        return self.G.shape[1]

    def step_sizes(self):
        """The per-layer steps ``exp(log_steps) / L`` (differentiable)."""
        return torch.exp(self.log_steps) / self.lipschitz

    @property
    def steps(self):
        """The per-layer steps ``a_t`` (numpy array, shape (n_layers,))."""
        return self.step_sizes().detach().cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def set_steps(self, steps):
        """Set the per-layer steps from absolute values ``a_t`` (positive)."""
        steps = torch.as_tensor(np.array(steps, dtype=np.float64))
        if steps.shape != (self.n_layers,) or not bool(torch.all(steps > 0)):
            raise ValueError(
                f"steps must be {self.n_layers} positive values, got "
                f"shape {tuple(steps.shape)}"
            )
        self.log_steps.copy_(torch.log(steps * self.lipschitz))
        return self

    def _step(self, t, X):
        """The step of layer ``t`` for the iterate X: a scalar or (W,)."""
        if self.step_rule == "layer":
            return torch.exp(self.log_steps[t]) / self.lipschitz
        s = _l21.support_sizes(X.detach(), self.n_orient)
        nonzero = s > 0
        log_s = torch.log(s.clamp_min(1.0))
        ref = self.log_ref_support[t]
        if torch.isnan(ref):
            if bool(self.support_exp[t] != 0):
                raise RuntimeError(
                    "the support reference of this network is not set: call "
                    "set_support_reference before training it"
                )
            ref = torch.zeros_like(ref)
        feat = torch.where(nonzero, ref - log_s, 0.0)
        beta = self.support_scale * self.support_exp[t]
        return torch.exp(self.log_steps[t] + beta * feat) / self.lipschitz

    @torch.no_grad()
    def set_support_reference(self, M, lam):
        """Set ``r_t`` to the mean ``log s`` at each layer on data ``M``.

        Meant for an untrained network (``support_exp == 0``), whose steps do
        not depend on the reference; the training calls it on its
        validation data before the first step.
        """
        if self.step_rule != "support":
            return self
        if bool(torch.any(self.support_exp != 0)):
            raise RuntimeError("set_support_reference needs an untrained network")
        stats = self(M, lam, return_stats=True)[1]
        ref = torch.as_tensor(stats["log_support"], dtype=self.log_ref_support.dtype)
        self.log_ref_support.copy_(ref)
        return self

    # --- the forward pass -----------------------------------------------------

    def _check_input(self, M, lam, n_layers):
        _validate_type(M, torch.Tensor, "M")
        per_sample = M.ndim == 2
        if per_sample:
            M = M[:, :, None]
        if M.ndim != 3 or M.shape[0] != self.n_channels:
            raise ValueError(
                f"M must have shape ({self.n_channels}, n_samples) or "
                f"({self.n_channels}, n_windows, K), got {tuple(M.shape)}"
            )
        M = M.to(device=self.G.device, dtype=self.G.dtype)
        lam = _l21.as_lam(lam, M.shape[1], M)
        n_layers = self.n_layers if n_layers is None else n_layers
        n_layers = _check_n_layers(n_layers, maximum=self.n_layers)
        return M, lam, n_layers, per_sample

    @staticmethod
    def sparse_frac(M):
        """Products restricted to active rows for windows (K > 1) only.

        The union over a batch of per-sample supports is rarely sparse, and
        checking it costs a pass over the iterate.
        """
        return 0.25 if M.shape[2] > 1 else 0.0

    def forward(self, M, lam, n_layers=None, *, return_all=False, return_stats=False):
        """Run the network.

        Parameters
        ----------
        M : Tensor, shape (n, W, K) | (n, B)
            Whitened data: windows, or per-sample problems.
        lam : float | Tensor, shape (W,) | (B,)
            Regularization of each window (sample).
        n_layers : int | None
            Number of layers to run (all by default).
        return_all : bool
            Return the list of the outputs of all layers.
        return_stats : bool
            Also return a dict: ``products_per_layer`` (gain products per
            window and layer), ``n_retried`` and ``n_rejected`` (per layer:
            steps retried smaller, windows that took the ISTA step) and
            ``log_support`` (per layer: the mean log support size of the
            non-zero iterates at its input).

        Returns
        -------
        X : Tensor, shape (m, W, K) | (m, B) | list of Tensor
        stats : dict
            Only with ``return_stats``.
        """
        M, lam, n_layers, per_sample = self._check_input(M, lam, n_layers)
        sparse_frac = self.sparse_frac(M)
        X = _l21.init_sources(self.G, M)
        Y = X
        # residual G X - M and objective of the current iterate (X = 0)
        R, F = -M, _l21.zero_objective(M)
        stats = dict(n_retried=[], n_rejected=[], log_support=[])
        outs = []
        for t in range(n_layers):
            if return_stats:
                s = _l21.support_sizes(X.detach(), self.n_orient)
                nz = s > 0
                stats["log_support"].append(
                    float(torch.log(s[nz]).mean()) if bool(nz.any()) else 0.0
                )
            step = self._step(t, X)
            if self.safeguard == "none":
                X_new = _l21.ista_step(
                    self.G, M, Y, step, lam, self.n_orient, sparse_frac=sparse_frac
                )
                Y = (
                    X_new + self.momentum[t] * (X_new - X)
                    if self.has_momentum
                    else X_new
                )
                X = X_new
            else:
                X, R, F = self._safe_layer(M, X, R, F, lam, step, stats, sparse_frac)
            if return_all:
                outs.append(self._out(X, per_sample))
        out = outs if return_all else self._out(X, per_sample)
        if not return_stats:
            return out
        n_extra = sum(stats["n_retried"]) + sum(stats["n_rejected"])
        stats["products_per_layer"] = 2.0 + n_extra / (n_layers * M.shape[1])
        return out, stats

    @staticmethod
    def _out(X, per_sample):
        return X[:, :, 0] if per_sample else X

    def _try_step(self, M, X, grad, lam, step, sparse_frac, idx=None):
        """A prox-gradient step on the windows ``idx`` (all by default).

        ``step`` is a scalar or one value per window of ``idx``. Returns the
        new iterate, its residual ``G X - M`` and objective.
        """
        if idx is not None:
            M, X, grad, lam = M[:, idx], X[:, idx], grad[:, idx], lam[idx]
        X_s = _l21.prox(X - _l21._per_window(step, X) * grad, step * lam, self.n_orient)
        R_s = _l21.gain_times(self.G, X_s, sparse_frac=sparse_frac) - M
        return X_s, R_s, _l21.objective_from_residual(R_s, X_s, lam, self.n_orient)

    def _safe_layer(self, M, X, R, F, lam, step, stats, sparse_frac):
        """One layer with the monotone safeguard (and backtracking in eval)."""
        grad = _l21.gain_t_times(self.G, R)
        new = self._try_step(M, X, grad, lam, step, sparse_frac)
        idx = torch.nonzero((new[2] > F).detach()).flatten()
        n_retried = 0
        if self.safeguard == "backtracking" and not self.training:
            a_L = torch.as_tensor(step * self.lipschitz).expand(M.shape[1])
            for exponent in self.retry_exponents:
                if not len(idx):
                    break
                n_retried += len(idx)
                part = self._try_step(
                    M, X, grad, lam, a_L[idx] ** exponent / self.lipschitz,
                    sparse_frac, idx,
                )  # fmt: skip
                new = _replace_windows(idx, part, new)
                idx = idx[(part[2] > F[idx]).detach()]
        stats["n_retried"].append(n_retried)
        stats["n_rejected"].append(len(idx))
        if len(idx):  # the ISTA step never raises the objective
            ista = self._try_step(
                M, X, grad, lam, 1.0 / self.lipschitz, sparse_frac, idx
            )
            new = _replace_windows(idx, ista, new)
        return new

    def extra_repr(self):
        return (
            f"n_layers={self.n_layers}, step_rule={self.step_rule!r}, "
            f"safeguard={self.safeguard!r}, momentum={self.has_momentum}, "
            f"gain={tuple(self.G.shape)}, n_orient={self.n_orient}"
        )


def _replace_windows(idx, part, full):
    """(X, R, F) of all windows with the windows ``idx`` taken from ``part``."""
    X, R, F = full
    return (X.index_copy(1, idx, part[0]), R.index_copy(1, idx, part[1]),
            F.index_copy(0, idx, part[2]))  # fmt: skip


# The networks of the estimators, by the names their model files record.
NETWORKS = {
    "StepLISTANet": dict(step_rule="layer", safeguard="none"),
    "BacktrackStepLISTANet": dict(step_rule="support", safeguard="backtracking"),
    "StepMxNENet": dict(step_rule="layer", safeguard="none"),
    "StepFISTAMxNENet": dict(step_rule="layer", safeguard="none", momentum=True),
}


def make_network(name, problem, n_layers, *, dtype=torch.float32):
    """The network recorded as ``name`` in a model file (see :data:`NETWORKS`)."""
    _check_option("network", name, tuple(NETWORKS))
    return UnrolledISTA(problem, n_layers, dtype=dtype, **NETWORKS[name])


__all__ = ["UnrolledISTA", "STEP_RULES", "SAFEGUARDS", "make_network"]
