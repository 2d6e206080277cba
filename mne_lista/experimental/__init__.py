"""Research code, out of the product's way: NOT part of the supported API.

Nothing in :mod:`mne_lista`'s estimators, command line or model files uses
this subpackage. It holds the comparators of the benchmarks and tutorials,
ported onto the batched kit of :mod:`mne_lista._l21`, with no promise of
stability (names, parameters and behaviour may change without deprecation):

- :class:`LISTA`: coupled LISTA (Chen et al., NeurIPS 2018), a learned
  matrix and per-position thresholds per layer; untrained, it is ISTA;
- :class:`ALISTA`: analytic LISTA (Liu et al., ICLR 2019), the analytic
  weight :func:`alista_weight` and a learned step and threshold per layer.

Both follow the per-sample contract of
:class:`mne_lista.networks.UnrolledISTA`: ``net(M, lam)`` with ``M`` of
shape ``(n, B)`` (or ``(n, B, 1)``) returns ``(m, B)`` (or ``(m, B, 1)``),
and they train with :func:`mne_lista.training.train`.
"""

from ._lista import ALISTA, LISTA, alista_weight

__all__ = ["LISTA", "ALISTA", "alista_weight"]
