"""RNN-T loss on raw joint logits with log-softmax fused in: Numba CPU (njit) and CUDA kernels.

    from rnnt_plugin.losses import RNNTLoss
    loss = RNNTLoss(blank=1023)(log_probs=logits, targets=y, input_lengths=t_len, target_lengths=y_len)

Modules: function.py (autograd function, `rnnt_loss`, `RNNTLoss`), checks.py (input validation), cpu.py (njit
kernels), cuda.py (Numba CUDA kernels), launch.py (CUDA launch table, device limits and launch checks),
resources.py (ptxas figures of the CUDA kernels), tune.py (launch-setting tuner), registry.py
(`resolve_rnnt_loss`). GPU design notes: docs/gpu-loss.md.
"""

from rnnt_plugin.losses.function import REDUCTIONS, RNNTFunction, RNNTLoss, reduce_losses, rnnt_loss
from rnnt_plugin.losses.registry import BACKENDS, PLUGIN_LOSS_NAME, available_losses, resolve_rnnt_loss

__all__ = [
    "BACKENDS",
    "PLUGIN_LOSS_NAME",
    "REDUCTIONS",
    "RNNTFunction",
    "RNNTLoss",
    "available_losses",
    "reduce_losses",
    "resolve_rnnt_loss",
    "rnnt_loss",
]
