from benchopt import BaseSolver, safe_import_context

with safe_import_context() as import_ctx:
    import mne_lista


class Solver(BaseSolver):
    """ISTA, step 1/L (:func:`mne_lista.ista`, float64), batched over columns."""

    name = "ista"
    sampling_strategy = "iteration"

    def set_objective(self, problem, X, lam):
        self.problem, self.X, self.lam = problem, X, lam

    def run(self, n_iter):
        self.Z = mne_lista.ista(self.problem, self.X, self.lam, n_iter)

    def get_result(self):
        return dict(Z=self.Z)
