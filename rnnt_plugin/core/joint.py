"""The joint network: encoder and prediction projections, sum, ReLU, dropout, output layer.

Shape legend: B batch, T encoder frames, U + 1 prediction positions, D encoder size, H prediction size,
J joint hidden size, V vocabulary including blank.

The layout (``pred``, ``enc``, ``joint_net`` = [ReLU, dropout if any, Linear]) is NeMo ``RNNTJoint``'s, so
weights move between the two unchanged.

``torch.nn.Dropout`` draws its CPU mask with ``bernoulli_``, which on the (B, T, U+1, J) joint activations of
the MLPerf model (4 x 84 x 21 x 512) took 37 ms of a 0.35 s joint + loss forward and backward on one core;
comparing ``torch.rand`` with p gives the same distribution of masks in a third of the time (:class:`MaskDropout`).

The joint's three (B*T*(U+1), J) x (J, V) matrix products are ~80% of joint + loss in fp32. The MLPerf reference
can train under mixed precision (its ``AMP=true``: apex AMP, matrix products in fp16; fp32 by default);
``training_dtype: bfloat16`` does that through ``torch.autocast`` (:mod:`rnnt_plugin.core.precision`): bf16
operands, fp32 accumulation, fp32 weights and gradients. On a CPU with AVX512-BF16 each product is ~4x faster
(7056 x 512 x 1024: 80 -> 20 ms on one core). Evaluation, decoding and export stay in fp32.
"""

from typing import Optional

import torch

from rnnt_plugin.core.precision import check_training_dtype, training_autocast


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


class Joint(torch.nn.Module):
    """Encoder frames (B, T, D) and prediction features (B, U + 1, H) -> logits (B, T, U + 1, V).

    Args:
        encoder_hidden: D.
        pred_hidden: H.
        joint_hidden: J.
        num_classes: V, blank included (blank last).
        dropout: dropout on the joint hidden activations.
        training_dtype: null (fp32 throughout) or "bfloat16" / "float16": in train mode the joint runs under
            ``torch.autocast`` of that dtype and returns logits of that dtype (the plugin's loss computes in fp32).
    """

    def __init__(self, encoder_hidden: int, pred_hidden: int, joint_hidden: int, num_classes: int,
                 dropout: float = 0.0, training_dtype: Optional[str] = None):
        super().__init__()
        self.training_dtype = check_training_dtype("joint", training_dtype)
        self.num_classes = num_classes
        self.pred = torch.nn.Linear(pred_hidden, joint_hidden)
        self.enc = torch.nn.Linear(encoder_hidden, joint_hidden)
        layers = [torch.nn.ReLU(inplace=True)] + ([MaskDropout(dropout)] if dropout else [])
        self.joint_net = torch.nn.Sequential(*layers, torch.nn.Linear(joint_hidden, num_classes))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f: (B, T, D) encoder frames, g: (B, U + 1, H) prediction features -> logits (B, T, U + 1, V)."""
        with training_autocast(f.device.type, self.training_dtype, self.training):
            hidden = self.enc(f).unsqueeze(2) + self.pred(g).unsqueeze(1)  # (B, T, U + 1, J)
            return self.joint_net(hidden)
