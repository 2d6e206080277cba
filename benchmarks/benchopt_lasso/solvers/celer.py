from benchopt import BaseSolver, safe_import_context

with safe_import_context() as import_ctx:
    import numpy as np

    from mne_lista import solve_lasso


class Solver(BaseSolver):
    """celer + Newton polish to a relative duality gap (:func:`mne_lista.solve_lasso`).

    ``tolerance`` sampling: the certified tolerance decreases along the curve.
    """

    name = "celer"
    requirements = ["pip:celer"]
    sampling_strategy = "tolerance"

    def set_objective(self, problem, X, lam):
        self.problem, self.X, self.lam = problem, X, lam

    def run(self, tol):
        tol = float(np.clip(tol, 1e-14, 0.5))
        self.Z = solve_lasso(self.problem, self.X, self.lam, tol=tol, verbose=False)

    def get_result(self):
        return dict(Z=self.Z)
