"""The RNN-T itself, with torch, numpy and numba only (no NeMo, Lightning or Hydra).

- ``features``: the MLPerf log-mel featurizer; ``spec_augment``: the reference's masks.
- ``lstm``: LSTM stacks with the reference's initialisation; ``encoder``: splicing, stack-time and the LSTMs.
- ``prediction``: the prediction network; ``joint``: the joint network.
- ``greedy``: batched greedy search and its decoding limits; the loss is :mod:`rnnt_plugin.losses`.
- ``model``: :class:`RNNT`, the parts composed, and the builders :func:`mlperf_rnnt` and :func:`small_cpu_rnnt`.
- ``precision``: reduced-precision training passes.
"""

from rnnt_plugin.core.model import RNNT, build_rnnt, mlperf_rnnt, small_cpu_rnnt

__all__ = ["RNNT", "build_rnnt", "mlperf_rnnt", "small_cpu_rnnt"]
