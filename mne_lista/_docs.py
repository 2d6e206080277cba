"""Shared docstring entries, filled as MNE fills its own (``%(name)s``)."""

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


def fill_doc(obj):
    """Fill ``%(name)s`` in the docstring of obj with :data:`docdict` entries.

    As :func:`mne.utils.fill_doc`: the entries are indented as the docstring.
    """
    doc = obj.__doc__
    lines = doc.splitlines()
    indent = min(
        (len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()),
        default=0,
    )
    pad = " " * indent

    def indented(text):
        lines = text.strip().splitlines()
        return "\n".join(
            lines[:1] + [pad + line if line.strip() else "" for line in lines[1:]]
        )

    obj.__doc__ = doc % {key: indented(value) for key, value in docdict.items()}
    return obj
