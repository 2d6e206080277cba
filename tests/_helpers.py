"""Per-sample (group) Lasso views of the kit for tests: 2D data (n, B)."""

from mne_lista import _l21


def alpha_max(G, X, n_orient):
    """alpha_max of each column of X (n, B): the (B,) per-sample values."""
    return _l21.alpha_max(G, X[:, :, None], n_orient)


def objective(G, X, Z, lam, n_orient):
    """Lasso objective of each column (X (n, B), Z (m, B))."""
    return _l21.objective(G, X[:, :, None], Z[:, :, None], lam, n_orient)


def ista_step(G, X, Z, step, lam, n_orient):
    """One ISTA step on per-sample problems (X (n, B), Z (m, B))."""
    out = _l21.ista_step(G, X[:, :, None], Z[:, :, None], step, lam, n_orient)
    return out[:, :, 0]
