"""The MNE sample subset's forward models with simulated per-sample data.

``source_space='surface'``: the 516-source surface forward, fixed
orientation (``loose=0, depth=0.8``): a Lasso; ``'volume'``: the 7 mm volume
forward, free orientation (``loose=1, depth=0.9``): a group Lasso. The data
come from :func:`mne_lista.simulation.simulate_data` (the simulator the
networks are trained with, another seed). The subset is the folder named by
``MNE_LISTA_DATA``; without it the dataset is skipped.
"""

from benchopt import BaseDataset, safe_import_context

with safe_import_context() as import_ctx:
    from mne_lista import prepare_problem
    from mne_lista.datasets import make_subset_forward, read_subset
    from mne_lista.simulation import simulate_data


class Dataset(BaseDataset):
    name = "meg-subset"
    requirements = []
    parameters = {
        "source_space": ["surface", "volume"],
        "n_samples": [100],
        "seed": [1000],
    }
    test_parameters = {"source_space": ["surface"], "n_samples": [10]}

    def get_data(self):
        try:
            evoked, cov = read_subset("Right Auditory", verbose=False)
        except (FileNotFoundError, OSError) as exc:
            return dict(problem=None, X=None, lam=None, missing=str(exc))
        if self.source_space == "surface":
            fwd = make_subset_forward(evoked.info, kind="surface", verbose=False)
            kw = dict(loose=0.0, depth=0.8)
        else:
            fwd = make_subset_forward(
                evoked.info, kind="volume", pos=7.0, verbose=False
            )
            kw = dict(loose=1.0, depth=0.9)
        problem = prepare_problem(fwd, cov, evoked.info, verbose=False, **kw)
        X, lam = simulate_data(problem, self.n_samples, random_state=self.seed)
        return dict(problem=problem, X=X, lam=lam)
