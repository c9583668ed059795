"""Loss registry: `resolve_rnnt_loss` returns the plugin's loss for "rnnt_plugin" and NeMo's for NeMo's names.

NeMo 3.0 has no hook to register a loss, so the model class calls this once; NeMo is imported only when one of
its own losses is asked for, so `rnnt_plugin.losses` imports without NeMo.

    loss = resolve_rnnt_loss("rnnt_plugin", blank=1023, reduction="mean_batch", loss_kwargs={"clamp": 1.0})

In a NeMo model config (the joint must hand over raw logits; an extra log_softmax is harmless to the value but
costs a pass and, with grad_inplace, makes backward raise):

    model:
      joint: {log_softmax: false, ...}
      loss:
        loss_name: rnnt_plugin
        rnnt_plugin_kwargs: {fastemit_lambda: 0.0, clamp: -1.0, grad_inplace: true}
"""

import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from rnnt_plugin.losses.function import REDUCTIONS, RNNTLoss

PLUGIN_LOSS_NAME = "rnnt_plugin"
PLUGIN_LOSS_KWARGS = ("fastemit_lambda", "clamp", "zero_infinity", "grad_inplace", "check_values")


def _has_module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


@dataclass(frozen=True)
class LossBackend:
    """A loss implementation: whether it can run here, and how to install it if not."""

    name: str
    is_available: Callable[[], bool]
    install_hint: str


_NEMO_HINT = "pip install 'nemo_toolkit[asr]>=3.0,<3.1'"
BACKENDS = {
    PLUGIN_LOSS_NAME: LossBackend(PLUGIN_LOSS_NAME, _has_module("numba"), "pip install 'numba>=0.59'"),
    # NeMo's own names (those of nemo.collections.asr.losses.rnnt.RNNT_LOSS_RESOLVER that take these arguments)
    "default": LossBackend("default", _has_module("nemo"), _NEMO_HINT),
    "warprnnt_numba": LossBackend("warprnnt_numba", _has_module("nemo"), _NEMO_HINT),
    "pytorch": LossBackend("pytorch", _has_module("nemo"), _NEMO_HINT),
    "warprnnt": LossBackend("warprnnt", _has_module("warprnnt_pytorch"),
                            "build https://github.com/HawkAaron/warp-transducer's pytorch binding"),
    "graph_rnnt": LossBackend("graph_rnnt", _has_module("k2"), "install k2 (https://k2-fsa.github.io/k2/)"),
}


def available_losses() -> list:
    """Names of the registered losses that can run in this environment."""
    return [name for name, backend in BACKENDS.items() if backend.is_available()]


def resolve_rnnt_loss(
    loss_name: str, blank: int, reduction: Optional[str] = "mean_batch", loss_kwargs: Optional[dict] = None
) -> torch.nn.Module:
    """Build the RNN-T loss module named `loss_name`.

    Args:
        loss_name: "rnnt_plugin" (ours, raw logits) or one of NeMo's names (its RNNTLoss wrapper is returned).
        blank: blank index (NeMo: the vocabulary size without blank, i.e. the last index).
        reduction: one of "mean_batch", "mean", "mean_volume", "sum", "none"/None.
        loss_kwargs: for "rnnt_plugin", any of fastemit_lambda, clamp, zero_infinity, grad_inplace,
            check_values; for NeMo names, passed to NeMo unchanged.
    """
    if loss_name not in BACKENDS:
        raise ValueError(f"`loss_name` {loss_name!r} is not one of {sorted(BACKENDS)}")
    backend = BACKENDS[loss_name]
    if not backend.is_available():
        raise ImportError(f"RNN-T loss {loss_name!r} is not available here; install it with: {backend.install_hint}. "
                          f"Available: {available_losses()}")
    kwargs = dict(loss_kwargs or {})
    if loss_name != PLUGIN_LOSS_NAME:
        from nemo.collections.asr.losses.rnnt import RNNTLoss as NeMoRNNTLoss

        return NeMoRNNTLoss(num_classes=blank, reduction=None if reduction == "none" else reduction,
                            loss_name=loss_name, loss_kwargs=kwargs)
    unknown = sorted(set(kwargs) - set(PLUGIN_LOSS_KWARGS))
    if unknown:
        raise ValueError(f"`loss_kwargs` has unknown keys {unknown} for {loss_name!r}; allowed: {PLUGIN_LOSS_KWARGS}")
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    return RNNTLoss(blank=blank, reduction=reduction or "none", **kwargs)
