"""NeMo adapter of the joint: NeMo's ``RNNTJoint`` (which NeMo's decoding strategies and fused loss/WER call into)
with the core joint's cheaper CPU dropout and reduced-precision training pass. Its layout is the core
:class:`~rnnt_plugin.core.joint.Joint`'s, so the same weights give the same logits in both.
"""

from typing import Optional

import torch
from nemo.collections.asr.modules import RNNTJoint

from rnnt_plugin.core.joint import MaskDropout
from rnnt_plugin.core.precision import check_training_dtype, training_autocast


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
