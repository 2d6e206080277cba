"""The model file format: learned parameters without pickled code.

A model file is a NumPy ``.npz`` archive read with ``allow_pickle=False``:

- ``steps``: the learned step sizes (float64, one per layer);
- ``net.<name>``: the other learned arrays of the network, by their names in
  its ``state_dict`` (e.g. ``net.momentum``; float64), if any;
- ``fingerprint``: the whitened, weighted gain applied to fixed
  pseudo-random probe vectors (``n x 8``), which identifies the problem the
  steps were learned for (forward, noise covariance, channels, SSP, loose,
  depth) robustly to floating-point noise;
- ``metadata``: UTF-8 JSON (format name and version, package version,
  number of layers, network precision, lam range, n_orient, loose, depth,
  rank, channel names, gain shape and Lipschitz constant).

The file does not hold the forward model: like the weights of any neural
network, the steps are read back onto the problem they were trained for (the
readers next to each estimator, ``read_step_lista(fname, forward, noise_cov,
info)`` and ``read_step_mxne``, rebuild the problem exactly as the
constructor does and refuse, with a clear error, a forward, covariance or
channel set that does not match the fingerprint). This module knows the
format only; it builds no estimator.
"""

import contextlib
import glob
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from mne.utils import _validate_type, logger

FORMAT_NAME = "mne-lista-step-lista"
FORMAT_VERSION = 1
_N_PROBES = 8
_PROBE_SEED = 20191208  # fixed: the probes must be the same at write and read
_FP_RTOL = 1e-5


def gain_fingerprint(gain, n_probes=_N_PROBES):
    """Fingerprint of a gain matrix: ``gain @ P`` for fixed random probes P.

    Robust to BLAS rounding (compare with a relative tolerance), sensitive to
    any real change of the gain (channels, whitening, weighting, forward).

    Returns
    -------
    fingerprint : array, shape (n_channels, n_probes)
    """
    gain = np.asarray(gain, dtype=np.float64)
    rng = np.random.default_rng(_PROBE_SEED)
    probes = rng.standard_normal((gain.shape[1], n_probes))
    return gain @ probes / np.sqrt(gain.shape[1])


def _fingerprint_matches(fp, ref, rtol=_FP_RTOL):
    if fp.shape != ref.shape:
        return False
    scale = np.linalg.norm(ref)
    return bool(np.linalg.norm(fp - ref) <= rtol * max(scale, np.finfo(float).tiny))


def _jsonable(value):
    """loose/depth/rank values as JSON (floats, str, None, dicts of them)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot save a parameter of type {type(value)} in a model")


def write_model(fname, *, problem, net, network, lam_range=None, overwrite=False):
    """Write a model file atomically (see the module docstring).

    The arrays go to a temporary file in the destination folder, renamed
    over ``fname`` once complete: an interrupted write leaves no partial
    file.
    """
    from . import __version__

    fname = Path(os.fspath(fname))
    _validate_type(overwrite, bool, "overwrite")
    if fname.exists() and not overwrite:
        raise FileExistsError(
            f"Destination file exists: {fname}. Please use overwrite=True to "
            "overwrite it."
        )
    dtype = str(net.G.dtype).replace("torch.", "")
    meta = dict(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        mne_lista_version=__version__,
        network=network,
        n_layers=int(net.n_layers),
        dtype=dtype,
        lam_range=None if lam_range is None else [float(v) for v in lam_range],
        n_orient=int(problem.n_orient),
        loose=_jsonable(problem.loose),
        depth=_jsonable(problem.depth),
        rank=_jsonable(problem.rank),
        ch_names=list(problem.ch_names),
        gain_shape=list(problem.gain.shape),
        lipschitz=float(problem.lipschitz),
        n_probes=_N_PROBES,
        probe_seed=_PROBE_SEED,
    )
    arrays = dict(
        steps=np.asarray(net.steps, dtype=np.float64),
        fingerprint=gain_fingerprint(problem.gain),
        metadata=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
    )
    for name, value in _extra_state(net).items():
        arrays[f"net.{name}"] = value.detach().cpu().double().numpy()
    with atomic_write(fname) as tmp:
        # through a file object so that numpy does not append ".npz"
        with open(tmp, "wb") as fid:
            np.savez(fid, **arrays)
    logger.info(f"Wrote {fname}")
    return fname


@contextlib.contextmanager
def atomic_write(fname):
    """Write a file atomically: yield a temporary path, renamed over ``fname``.

    The temporary file (``.<name>.<random><suffix>``, created empty) lies in
    the destination folder, so that the rename is atomic; it is renamed once
    the block succeeds and removed if it fails: readers, and a later run,
    see either the old file or the complete new one, never a partial file.
    Writers that refuse existing files need ``overwrite=True`` on the
    temporary path.
    """
    fname = Path(os.fspath(fname))
    fd, tmp = tempfile.mkstemp(
        prefix=f".{fname.name}.", suffix=fname.suffix, dir=fname.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, fname)
    finally:
        tmp.unlink(missing_ok=True)


def stale_temporaries(fname):
    """Temporary files that :func:`atomic_write` of ``fname`` left behind
    (its process was killed while writing)."""
    fname = Path(os.fspath(fname))
    return sorted(fname.parent.glob(f".{glob.escape(fname.name)}.*"))


def _extra_state(net):
    """The learned arrays of a network besides its steps (and the gain)."""
    return {k: v for k, v in net.state_dict().items() if k not in ("G", "log_steps")}


def load_network(net, arrays, fname):
    """Copy the steps and the other saved arrays into ``net``.

    Learned parameters must be finite; buffers may hold NaN (a reference not
    yet set, as in an untrained network).
    """
    import torch

    net.set_steps(arrays["steps"])
    extra = arrays["extra"]
    expected = _extra_state(net)
    if set(extra) != set(expected):
        raise ValueError(
            f"{fname}: a {type(net).__name__} needs the arrays "
            f"{sorted(expected)}, the file holds {sorted(extra)}"
        )
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, ref in expected.items():
            value = torch.as_tensor(np.asarray(extra[name], dtype=np.float64))
            bad = value.shape != ref.shape
            bad = bad or (name in params and not bool(torch.isfinite(value).all()))
            if bad:
                raise ValueError(
                    f"{fname}: array {name!r} of shape {tuple(value.shape)} "
                    f"(expected {tuple(ref.shape)}, finite)"
                )
            ref.copy_(value)


def read_model_arrays(fname):
    """Read and validate the arrays and metadata of a model file.

    Returns a dict: ``steps``, ``fingerprint``, ``metadata`` (a dict) and
    ``extra``, the other learned arrays of the network (``{name: array}``
    from the ``net.<name>`` entries).
    """
    fname = Path(os.fspath(fname))
    if not fname.is_file():
        raise FileNotFoundError(f"model file not found: {fname}")
    foreign = f"{fname} is not a mne-lista Step-LISTA model file (or it is corrupt)"
    try:
        with np.load(fname, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"{foreign}: {exc}") from None
    missing = {"steps", "fingerprint", "metadata"} - set(arrays)
    if missing:
        raise ValueError(f"{foreign}: missing {sorted(missing)}")
    try:
        meta = json.loads(arrays["metadata"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{foreign}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{foreign}: format is not {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{fname} has format version {version!r}, this mne-lista reads up "
            f"to {FORMAT_VERSION}: upgrade mne-lista"
        )
    keys = ("n_layers", "dtype", "n_orient", "ch_names", "gain_shape")
    absent = [k for k in keys if k not in meta]
    if absent:
        raise ValueError(f"{foreign}: metadata lacks {absent}")
    steps = np.asarray(arrays["steps"], dtype=np.float64)
    if (
        steps.shape != (meta["n_layers"],)
        or not np.isfinite(steps).all()
        or not (steps > 0).all()
    ):
        raise ValueError(
            f"{foreign}: expected {meta['n_layers']} positive finite steps, got "
            f"shape {steps.shape}"
        )
    fp = np.asarray(arrays["fingerprint"], dtype=np.float64)
    if fp.shape != (meta["gain_shape"][0], meta.get("n_probes", _N_PROBES)):
        raise ValueError(f"{foreign}: fingerprint of shape {fp.shape}")
    extra = {k[4:]: v for k, v in arrays.items() if k.startswith("net.")}
    if "momentum" in arrays:  # StepFISTAMxNENet files before net.<name>
        extra.setdefault("momentum", arrays["momentum"])
    return dict(steps=steps, fingerprint=fp, metadata=meta, extra=extra)


def read_model_metadata(fname):
    """The JSON metadata of a model file (validated), e.g. its ``network``."""
    return read_model_arrays(fname)["metadata"]


def check_model_problem(problem, fp, meta, fname=None):
    """Raise a clear error when a problem is not the one a model was made for."""
    what = "the model" if fname is None else f"the model in {fname}"
    ch_names = list(meta["ch_names"])
    if list(problem.ch_names) != ch_names:
        extra = sorted(set(problem.ch_names) - set(ch_names))
        missing = sorted(set(ch_names) - set(problem.ch_names))
        raise ValueError(
            f"the channels do not match those of {what}: {len(problem.ch_names)}"
            f" channel(s) here vs {len(ch_names)} in the model; missing here: "
            f"{missing[:10]}, not in the model: {extra[:10]}"
            + ("" if missing or extra else " (different order)")
            + "; use the same good channels (info['bads']) as for training"
        )
    if (
        list(problem.gain.shape) != list(meta["gain_shape"])
        or problem.n_orient != (meta["n_orient"])
    ):
        raise ValueError(
            f"the forward model does not match {what}: gain of shape "
            f"{problem.gain.shape} (n_orient={problem.n_orient}) vs "
            f"{tuple(meta['gain_shape'])} (n_orient={meta['n_orient']}) in the "
            "model"
        )
    here = gain_fingerprint(problem.gain, fp.shape[1])
    if not _fingerprint_matches(here, fp):
        err = np.linalg.norm(here - fp) / max(np.linalg.norm(fp), 1e-300)
        raise ValueError(
            f"the whitened gain does not match the fingerprint of {what} "
            f"(relative difference {err:.2e} > {_FP_RTOL:g}): the forward, the "
            "noise covariance, the projectors or loose/depth differ from those "
            "the model was trained for"
        )


__all__ = [
    "atomic_write",
    "gain_fingerprint",
    "read_model_arrays",
    "read_model_metadata",
    "write_model",
]
