"""The joint network: NeMo's ``RNNTJoint`` (encoder and prediction projections, sum, ReLU, dropout, output layer)
with a dropout whose CPU mask is cheaper to draw and an optional reduced-precision training pass.

``torch.nn.Dropout`` draws its CPU mask with ``bernoulli_``, which on the (B, T', U+1, H) joint activations of
the MLPerf model (4 x 84 x 21 x 512) took 37 ms of a 0.35 s joint + loss forward and backward on one core;
comparing ``torch.rand`` with p gives the same distribution of masks in a third of the time.

The joint's three (B*T'*(U+1), H) x (H, V) matrix products are ~80% of joint + loss in fp32. The MLPerf reference
can train under mixed precision (its ``AMP=true``: apex AMP, matrix products in fp16; fp32 by default);
``training_dtype: bfloat16`` does that for the joint through ``torch.autocast`` (:mod:`rnnt_plugin.precision`):
bf16 operands, fp32 accumulation, fp32 weights and gradients. On a CPU with AVX512-BF16 each product is ~4x faster
(7056 x 512 x 1024: 80 -> 20 ms on one core). Evaluation, decoding and export stay in fp32.
"""

from typing import Optional

import torch
from nemo.collections.asr.modules import RNNTJoint

from rnnt_plugin.precision import check_training_dtype, training_autocast


class MaskDropout(torch.nn.Module):
    """``torch.nn.Dropout(p)``: in training each element is zeroed with probability p and the rest scaled by
    1 / (1 - p); identity in eval mode. CPU masks come from ``torch.rand(...) >= p`` (torch's generator, so seeding
    works as usual); other devices use torch's fused dropout."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, device=x.device) >= self.p  # (...,) bool, like x
        out = x * keep  # autograd keeps the 1-byte mask for the backward pass
        return out.mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLPerfJoint(RNNTJoint):
    """NeMo's ``RNNTJoint`` (same arguments, weights and ``state_dict`` keys) with :class:`MaskDropout` in place
    of ``torch.nn.Dropout`` in ``joint_net``.

    Args:
        training_dtype: null (fp32 throughout) or "bfloat16" / "float16": in train mode the joint runs under
            ``torch.autocast`` of that dtype and returns logits of that dtype (the plugin's loss computes in fp32).
        *args, **kwargs: NeMo's ``RNNTJoint`` arguments.
    """

    def __init__(self, *args, training_dtype: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.training_dtype = check_training_dtype("joint", training_dtype)
        for i, layer in enumerate(self.joint_net):
            if isinstance(layer, torch.nn.Dropout):
                self.joint_net[i] = MaskDropout(layer.p)

    def joint(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f: (B, T, D) encoder output, g: (B, U + 1, H) prediction output -> logits (B, T, U + 1, V)."""
        with training_autocast(f.device.type, self.training_dtype, self.training):
            return super().joint(f, g)
