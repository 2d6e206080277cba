"""The switch and lazy loader of the compiled CPU kernels (:mod:`._kernels`).

:mod:`._kernels` imports numba at module level; everything else asks for a
kernel here and falls back to its torch / numpy version when it gets None
(numba missing, the switch off, or data on a GPU).
"""

USE_NUMBA = True  # tests switch it off to check the fallbacks
_MODULE = []


def numba_kernel(name, device_type="cpu"):
    """The compiled kernel ``name`` of :mod:`._kernels`, or None."""
    if not USE_NUMBA or device_type != "cpu":
        return None
    if not _MODULE:
        try:
            from . import _kernels
        except ImportError:
            _kernels = None
        _MODULE.append(_kernels)
    return None if _MODULE[0] is None else getattr(_MODULE[0], name)
