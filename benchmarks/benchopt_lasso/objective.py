"""benchopt objective: the per-sample group Lasso of whitened MEG data.

Each column ``x`` of the data is one problem (one time sample, as
:class:`mne_lista.StepLISTA` solves them)::

    F(z) = 1/2 ||x - G z||^2 + lam sum_p ||z_p||_2

with ``G`` the whitened, depth-weighted gain of an MNE forward model
(:func:`mne_lista.prepare_problem`) and groups ``z_p`` of 1 (fixed
orientation) or 3 (free orientation) rows. Metrics, averaged over the
columns: ``value`` the normalized objective ``F(z) / F(0)``,
``suboptimality`` ``(F(z) - F*) / F(0)`` with ``F*`` from the certified
solver (:func:`mne_lista.solve_lasso`, relative gap <= 1e-8), the relative
duality gap (mean and max) and the number of active positions.
"""

from benchopt import BaseObjective, safe_import_context

with safe_import_context() as import_ctx:
    import numpy as np
    import torch

    from mne_lista import _l21, solve_lasso


class Objective(BaseObjective):
    name = "MEG group Lasso (mne-lista)"
    url = "https://github.com/mne-tools/mne-lista"
    min_benchopt_version = "1.5"
    requirements = []
    parameters = {}

    def skip(self, problem, X, lam, missing=None):
        if problem is None:
            return True, missing or "no data"
        return False, None

    def set_data(self, problem, X, lam, missing=None):
        self.problem, self.X, self.lam = problem, X, lam
        self.G = torch.as_tensor(problem.gain, dtype=torch.float64)
        self.M = torch.as_tensor(X, dtype=torch.float64)[:, :, None]
        self.lam_t = torch.as_tensor(lam, dtype=torch.float64)
        self.f0 = _l21.zero_objective(self.M).numpy()
        Z_star = solve_lasso(problem, X, lam, verbose=False)
        self.f_star = self._objective(Z_star)

    def _objective(self, Z):
        Z = torch.as_tensor(np.asarray(Z, dtype=np.float64))[:, :, None]
        no = self.problem.n_orient
        return _l21.objective(self.G, self.M, Z, self.lam_t, no).numpy()

    def evaluate_result(self, Z):
        Z = np.asarray(Z, dtype=np.float64)
        if not np.all(np.isfinite(Z)):
            return dict(value=np.inf, suboptimality=np.inf)
        f = self._objective(Z)
        Zt = torch.as_tensor(Z)[:, :, None]
        no = self.problem.n_orient
        gap = _l21.relative_gap(self.G, self.M, Zt, self.lam_t, no).numpy()
        return dict(
            value=float(np.mean(f / self.f0)),
            suboptimality=float(np.mean((f - self.f_star) / self.f0)),
            rel_gap_mean=float(np.mean(gap)),
            rel_gap_max=float(np.max(gap)),
            n_active=float(np.mean(_l21.support_sizes(Zt, no).numpy())),
        )

    def get_one_result(self):
        return dict(Z=np.zeros((self.problem.n_sources, self.X.shape[1])))

    def get_objective(self):
        return dict(problem=self.problem, X=self.X, lam=self.lam)
