from benchopt import BaseSolver, safe_import_context

with safe_import_context() as import_ctx:
    import numpy as np
    from mne.inverse_sparse.mxne_optim import mixed_norm_solver


class Solver(BaseSolver):
    """MNE's ``mixed_norm_solver`` (block coordinate descent with active
    sets, the solver of :func:`mne.inverse_sparse.mixed_norm`) on each
    column as a one-sample window: the same problem, ``alpha = lam``.

    ``tolerance`` sampling: its ``tol`` (on the duality gap) decreases.
    """

    name = "mixed_norm"
    sampling_strategy = "tolerance"

    def set_objective(self, problem, X, lam):
        self.G = np.asfortranarray(problem.gain)
        self.n_orient = problem.n_orient
        self.X, self.lam = X, lam

    def run(self, tol):
        tol = float(np.clip(tol, 1e-14, 1.0))
        Z = np.zeros((self.G.shape[1], self.X.shape[1]))
        for b in range(self.X.shape[1]):
            Zb, active, _ = mixed_norm_solver(
                self.X[:, b : b + 1],
                self.G,
                self.lam[b],
                maxit=10000,
                tol=tol,
                n_orient=self.n_orient,
                debias=False,
                verbose=False,
            )
            Z[active, b] = Zb[:, 0]
        self.Z = Z

    def get_result(self):
        return dict(Z=self.Z)
