"""The NeMo adapters: the MLPerf RNN-T as a NeMo model and its YAML components, over :mod:`rnnt_plugin.core`.

- ``rnnt``: :class:`MLPerfRNNTModel` (``.nemo``, ``transcribe()``, export, the Lightning steps), with its concerns in
  ``batches``, ``ctc_warmup``, ``nonfinite`` and ``validation``; ``targets`` maps earlier versions' component names.
- ``features``, ``encoder``, ``joint``: the components that configs name in ``_target_``.
- ``checkpoints``: :func:`load_model` for ``.nemo`` and ``.ckpt`` files; ``components``: :func:`build_modules`.
- ``convert``: a checkpoint of the MLPerf reference's own training script -> ``.nemo``.
"""

from rnnt_plugin.models.checkpoints import load_model
from rnnt_plugin.models.components import build_modules
from rnnt_plugin.models.rnnt import MLPerfRNNTModel

__all__ = ["MLPerfRNNTModel", "build_modules", "load_model"]
