"""Shared docstring entries, filled as MNE fills its own (``%(name)s``)."""

import re

from mne.utils.docs import docdict as _mne_docdict

docdict = {key: _mne_docdict[key] for key in ("loose", "depth", "verbose")}
docdict["estimator_problem"] = """\
forward : Forward
    The forward solution.
noise_cov : Covariance
    The noise covariance.
info : Info
    Measurement info of the data to localize.
n_layers : int
    Number of layers (unrolled iterations)."""
docdict["estimator_options"] = "\n".join(docdict[k].strip() for k in ("loose", "depth"))
docdict["estimator_options"] += """
rank : None | 'info' | 'full' | dict
    Rank of the noise covariance (see :func:`mne.compute_rank`).
device : str | torch.device
    Where to run the network ('cpu', 'cuda', 'cuda:1', ...)."""

docdict["pretrained"] = """\
pretrained : bool
    If True (default), the network starts from the parameters shipped with
    the package (``mne_lista/data/pretrained.json``: steps trained once over
    many forward models, which transfer to others, see the README), so that
    :meth:`apply` needs no :meth:`fit`; :meth:`fit` refines them for this
    forward. Without shipped parameters for this network and number of
    layers, or with False, the network starts as ISTA (steps ``1/L``) and
    should be trained with :meth:`fit`."""

docdict["alpha"] = """\
alpha : float | 'sure'
    Regularization in [0, 100), in %% of alpha_max (the smallest
    regularization that gives a zero estimate), as in
    :func:`mne.inverse_sparse.mixed_norm`; 'sure' (StepMxNE, with ``tol``)
    chooses it on ``sure_alpha_grid`` by Stein's unbiased risk estimate,
    kept in ``certificate_['alpha']``."""
docdict["apply_outputs"] = """\
debias : bool
    Remove the amplitude bias of the penalty on the active set (MNE's
    ``compute_bias``).
return_residual : bool
    Also return the residual (data not explained) as an Evoked.
return_as_dipoles : bool
    Return a list of :class:`mne.Dipole` instead of a source estimate.
pick_ori : None | 'vector'
    With 'vector' (free/loose orientation), keep the xyz components
    (VectorSourceEstimate, ...); by default their norm is returned."""
docdict["tol"] = """\
tol : float | None
    None (default): the network solves the problems, and its relative
    duality gaps (gap / (1/2 ||M||^2) per problem) are reported in
    ``certificate_``. A float: every problem whose relative duality gap
    exceeds it is solved by the exact solver, so that all are certified to
    ``tol``: the batched working-set solver :func:`mne_lista.solve_mxne`
    (:func:`mne_lista.solve_lasso` for the samples it leaves). For
    :class:`~mne_lista.StepLISTA` it starts from the network's output,
    which proves positions inactive (Gap Safe screening) and ranks the first
    working sets; :class:`~mne_lista.StepMxNE` solves its few windows from
    zero (there the network's layers cost more than the exact solve they
    would shorten, see the README). Screening never changes the solution:
    the gaps are computed on the full gain."""
docdict["mxne_options"] = """\
n_mxne_iter : int
    Number of MxNE rounds; above 1, iterative reweighting (irMxNE, log
    penalty) as ``mixed_norm``, every round certified to ``tol``.
weights : None | array | SourceEstimate
    A prior on the source positions (e.g. a dSPM estimate), applied as
    ``mixed_norm`` applies it (the gain columns scaled by the normalized
    weights).
weights_min : float
    With ``weights``: positions with weights not above it are left out.
sure_alpha_grid : array | 'auto'
    With ``alpha='sure'``: the alphas (in %%) at which SURE is evaluated;
    'auto' is ``mixed_norm``'s 15 values from 100 to 10 (geometric).
sure_tol : float | None
    With ``alpha='sure'``: the relative duality gap of the grid's solves
    (default ``tol``). The selected alpha depends on their precision (the
    risk is estimated from differences of solutions); the estimate at the
    selected alpha is then solved to ``tol``.
random_state : None | int | instance of RandomState
    With ``alpha='sure'``: the seed of its random perturbation, drawn as
    ``mixed_norm`` draws it (the same seed gives the same draws)."""
docdict["epochs_batches"] = """\
batch_size : int | None
    Number of epochs solved together. By default, as many as fit in
    ``max_memory``.
max_memory : float | None
    Approximate memory budget of one batch in bytes (default 512 MiB);
    ignored when ``batch_size`` is given.
return_generator : bool
    Return a generator yielding one estimate per epoch (as soon as its
    batch is done) instead of a list."""
docdict["apply_returns"] = """\
stc : SourceEstimate | VolSourceEstimate | MixedSourceEstimate | ...
    The active sources in Am, the class following the source space (and
    ``pick_ori``); a list of Dipole with ``return_as_dipoles``.
residual : Evoked
    Only with ``return_residual=True``."""
docdict["epochs_returns"] = """\
stcs : list | generator
    One source estimate per epoch, each as :meth:`apply` gives it for the
    epoch as an evoked response (its own alpha_max): the results do not
    depend on ``batch_size`` / ``max_memory``. ``certificate_`` holds the
    per-epoch arrays (filled as the generator advances)."""
docdict["random_state"] = """\
random_state : None | int
    Seed: simulation and training are deterministic for an int."""
docdict["fit_returns"] = """\
self : instance
    The trained model, with ``lam_range`` (the trained range of
    ``lam / alpha_max``) and ``history_`` (the training history, see
    :func:`mne_lista.training.train`)."""


def fill_doc(obj):
    """Fill ``%(name)s`` in the docstring of obj with :data:`docdict` entries.

    As :func:`mne.utils.fill_doc`, entries indented as the docstring. Only
    the names of :data:`docdict` are filled and ``%%`` is kept, so that a
    function can then be decorated by :func:`mne.verbose` (which fills MNE's
    own names and unescapes ``%%``): put ``@verbose`` above ``@fill_doc``.
    A class has no such second pass: its ``%%`` are unescaped here.
    """
    doc = obj.__doc__
    lines = doc.splitlines()
    indent = min(
        (len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()),
        default=0,
    )
    pad = " " * indent

    def indented(match):
        key = match.group(1)
        if key not in docdict:
            return match.group(0)
        lines = docdict[key].strip().splitlines()
        return "\n".join(
            lines[:1] + [pad + line if line.strip() else "" for line in lines[1:]]
        )

    doc = re.sub(r"%\((\w+)\)s", indented, doc)
    obj.__doc__ = doc.replace("%%", "%") if isinstance(obj, type) else doc
    return obj
