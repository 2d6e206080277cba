from benchopt import BaseSolver, safe_import_context

with safe_import_context() as import_ctx:
    from functools import partial

    import torch

    from mne_lista.networks import UnrolledISTA
    from mne_lista.simulation import simulate_data
    from mne_lista.training import fit_network


class Solver(BaseSolver):
    """Step-LISTA, trained (untimed) as ``StepLISTA().fit()`` trains it.

    ``adaptive=False``: plain Step-LISTA (one learned step per layer);
    ``adaptive=True``: the network of ``StepLISTA()`` (support-scaled steps,
    backtracking at inference). Training: :func:`mne_lista.training.
    fit_network` on :func:`mne_lista.simulation.simulate_data` (its default
    budget; ``n_epochs`` to shorten it), in ``set_objective``, not timed.
    ``iteration`` sampling runs the first ``n_iter`` layers (at most
    ``n_layers``; a truncated network is not retrained; 0 layers: zeros).
    """

    name = "step-lista"
    sampling_strategy = "iteration"
    parameters = {"adaptive": [False, True], "n_layers": [20], "n_epochs": [None]}

    def set_objective(self, problem, X, lam):
        config = (
            dict(step_rule="support", safeguard="backtracking")
            if self.adaptive
            else dict(step_rule="layer", safeguard="none")
        )
        self.net = UnrolledISTA(problem, self.n_layers, **config)
        fit_network(
            self.net,
            partial(simulate_data, problem),
            n_epochs=self.n_epochs,
            random_state=0,
            verbose=False,
        )
        self.net.eval()
        self.X = torch.as_tensor(X, dtype=self.net.G.dtype)
        self.lam = torch.as_tensor(lam, dtype=self.net.G.dtype)

    def run(self, n_iter):
        n_layers = int(min(n_iter, self.n_layers))
        if n_layers < 1:  # zero layers: the starting point
            self.Z = self.X.new_zeros((self.net.n_sources, self.X.shape[1]))
            self.Z = self.Z.double().numpy()
            return
        with torch.no_grad():
            self.Z = self.net(self.X, self.lam, n_layers).double().numpy()

    def get_result(self):
        return dict(Z=self.Z)
