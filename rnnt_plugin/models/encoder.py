"""NeMo adapter of the encoder: NeMo's neural types, export hooks and ``_target_`` name over the core's
:class:`~rnnt_plugin.core.encoder.StackTimeEncoder` (same arguments, weights and ``state_dict`` keys).

Shapes: B batch, F input features per 10 ms frame, T input frames, H hidden size, T' output frames.
"""

from typing import Tuple

import torch
from nemo.core.classes import NeuralModule
from nemo.core.classes.common import typecheck
from nemo.core.classes.exportable import Exportable
from nemo.core.neural_types import AcousticEncodedRepresentation, LengthsType, NeuralType, SpectrogramType

from rnnt_plugin.core.encoder import StackTimeEncoder

__all__ = ["StackTimeLSTMEncoder"]


class StackTimeLSTMEncoder(StackTimeEncoder, NeuralModule, Exportable):
    """:class:`~rnnt_plugin.core.encoder.StackTimeEncoder` as a NeMo encoder (``cfg.model.encoder``)."""

    @property
    def _feat_out(self) -> int:  # NeMo's name for the output size
        return self.hidden_size

    @property
    def input_types(self):
        return {
            "audio_signal": NeuralType(("B", "D", "T"), SpectrogramType()),
            "length": NeuralType(tuple("B"), LengthsType()),
        }

    @property
    def output_types(self):
        return {
            "outputs": NeuralType(("B", "D", "T"), AcousticEncodedRepresentation()),
            "encoded_lengths": NeuralType(tuple("B"), LengthsType()),
        }

    @typecheck()
    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """audio_signal (B, F, T), length (B,) -> (B, H, T') encoded frames, (B,) valid output frames."""
        return super().forward(audio_signal, length)

    def input_example(self, max_batch: int = 1, max_dim: int = 96):
        """An (audio_signal (B, F, T), length (B,)) pair for export tracing."""
        param = next(self.parameters())
        signal = torch.randn(max_batch, self.feat_in, max_dim, device=param.device, dtype=param.dtype)
        length = torch.full((max_batch,), max_dim, device=param.device, dtype=torch.int64)
        return signal, length
