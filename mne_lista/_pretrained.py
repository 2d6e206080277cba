"""Pretrained parameters: the estimators' starting point without ``fit()``.

The learned parameters of the estimators' networks are a handful of numbers
in units of ``1/L`` (the per-layer steps ``log_steps``, and for the
support-scaled steps of ``StepLISTA()`` the exponents ``support_exp``), and
they transfer across forward models: trained once, jointly over several
forwards (the synthetic demo head, real volume grids and the cortical
surface, free and loose orientations, several depths) by
``benchmarks/transfer.py``, they are shipped in ``data/pretrained.json``
(JSON, no pickle) with their provenance. :class:`~mne_lista.StepLISTA` and
:class:`~mne_lista.StepMxNE` start from them (``pretrained=True``, the
default), so that they apply with no training; ``fit()`` refines them.

The support rule also needs the reference ``r_t`` of each layer (see
:class:`~mne_lista.networks.UnrolledISTA`), which the training measures on
the data of one forward. Across forwards the file gives it as ``r_t =
log_ref_offset[t] + ref_slope * log(P)``, ``P`` being the number of source
positions of the forward: ``ref_slope = 0`` is an absolute support size,
``1`` a support relative to ``P`` (which one is shipped was measured, see
the README).
"""

import json
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from mne.utils import _validate_type, logger

from ._io import atomic_write

FORMAT_NAME = "mne-lista-pretrained"
FORMAT_VERSION = 1
_FNAME = "pretrained.json"


@lru_cache(maxsize=1)
def _read_file():
    text = resources.files("mne_lista").joinpath("data", _FNAME).read_text("utf-8")
    content = json.loads(text)
    fmt = (content.get("format"), content.get("format_version"))
    if fmt != (FORMAT_NAME, FORMAT_VERSION):
        raise RuntimeError(f"mne_lista/data/{_FNAME} is not a {FORMAT_NAME} file")
    return content


def read_pretrained(network=None):
    """The shipped pretrained parameters (a copy).

    Parameters
    ----------
    network : str | None
        A network name of the model files (see
        :data:`mne_lista.networks.NETWORKS`), or None for the whole file.

    Returns
    -------
    pretrained : dict | None
        For a network: ``n_layers``, ``lam_range``, ``log_steps`` (and for
        the support rule ``support_exp``, ``log_ref_offset``,
        ``ref_slope``) and ``training`` (provenance); None when nothing is
        shipped for it. Without ``network``: the file (``networks``,
        ``mne_lista_version``, ``created_by``).
    """
    content = json.loads(json.dumps(_read_file()))  # a deep copy
    if network is None:
        return content
    _validate_type(network, str, "network")
    return content["networks"].get(network)


@torch.no_grad()
def set_pretrained(net, network, *, check_data=None, entry=None):
    """Start ``net`` from the shipped parameters of ``network``, in place.

    Returns the ``lam_range`` they were trained on, or None when nothing is
    shipped for that network and number of layers: the network is then left
    as it is (ISTA), and the reason is logged.

    A network without safeguard (``safeguard='none'``) can diverge where its
    steps are too large for the forward: ``check_data() -> (M, lam)`` gives
    a few training-like problems on each of which the pretrained network
    must do at least as well as ISTA, or it is reset to ISTA (logged).
    Safeguarded networks never increase the objective: no check.
    ``entry``: parameters to use instead of the shipped ones (benchmarks).
    """
    entry = read_pretrained(network) if entry is None else entry
    if entry is None or entry["n_layers"] != net.n_layers:
        what = "this network" if entry is None else f"{net.n_layers} layers"
        shipped = "" if entry is None else f" (shipped: {entry['n_layers']} layers)"
        logger.info(
            f"    No pretrained steps for {network} with {what}{shipped}: the "
            "network starts as ISTA (steps 1/L); call fit() to train it"
        )
        return None
    dtype = net.log_steps.dtype
    net.log_steps.copy_(torch.as_tensor(entry["log_steps"], dtype=dtype))
    if net.step_rule == "support":
        net.support_exp.copy_(torch.as_tensor(entry["support_exp"], dtype=dtype))
        n_positions = net.n_sources // net.n_orient
        ref = np.asarray(entry["log_ref_offset"]) + entry["ref_slope"] * np.log(
            n_positions
        )
        net.log_ref_support.copy_(torch.as_tensor(ref, dtype=dtype))
    if net.safeguard == "none" and check_data is not None:
        from .training import _as_data, normalized_objective

        M, lam = _as_data(net, *check_data(), "M")
        f_pre = normalized_objective(net, M, lam)
        start = {k: v.clone() for k, v in net.named_parameters()}
        net.log_steps.zero_()  # ISTA (or FISTA with momentum)
        n_worse = int((~(f_pre <= normalized_objective(net, M, lam))).sum())
        if n_worse:
            logger.info(
                f"    {network}: the pretrained steps do worse than ISTA on "
                f"{n_worse} of {M.shape[1]} simulated problems of this forward "
                "(they diverge here): the network starts as ISTA; call fit() "
                "to train it"
            )
            return None
        for name, value in start.items():
            getattr(net, name).copy_(value)
    logger.info(
        f"    {network}: pretrained steps (trained on "
        f"{len(entry['training']['forwards'])} forwards), no fit() needed"
    )
    return tuple(float(v) for v in entry["lam_range"])


def write_pretrained(fname, networks, *, created_by):
    """Write a pretrained file (``networks``: {name: entry}, see above)."""
    from . import __version__

    content = dict(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        mne_lista_version=__version__,
        created_by=created_by,
        networks=networks,
    )
    with atomic_write(fname) as tmp, open(tmp, "w") as fid:
        json.dump(content, fid, indent=1)
        fid.write("\n")
    _read_file.cache_clear()
    return fname
