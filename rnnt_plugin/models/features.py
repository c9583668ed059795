"""NeMo adapters of the featurizer and SpecAugment: NeMo's neural types and ``_target_`` names over the core's
:class:`~rnnt_plugin.core.features.LogMelFeatures` and :class:`~rnnt_plugin.core.spec_augment.SpecAugment`.

Shape legend: B batch, S audio samples, F mel features, T feature frames.
"""

from typing import Iterator, Optional, Sequence, Tuple

import torch
from nemo.collections.asr.modules.audio_preprocessing import AudioPreprocessor
from nemo.core.classes import Exportable, NeuralModule, typecheck
from nemo.core.neural_types import AudioSignal, LengthsType, MelSpectrogramType, NeuralType, SpectrogramType

from rnnt_plugin.core import features, spec_augment

__all__ = ["MLPerfFilterbankFeatures", "SpecAugment"]


class MLPerfFilterbankFeatures(AudioPreprocessor, Exportable):
    """NeMo preprocessor: audio (B, S) + lengths (B,) -> features (B, F, T) + lengths (B,), computed by
    ``self.log_mel``, a :class:`~rnnt_plugin.core.features.LogMelFeatures` built from the same arguments (see it
    for their meaning); no weights. Not named ``featurizer`` as in NeMo's preprocessors: NeMo's ``transcribe()``
    sets a ``featurizer``'s dither to 0, and the reference keeps its dither at evaluation."""

    def __init__(self, **kwargs):
        log_mel = features.LogMelFeatures(**kwargs)
        super().__init__(log_mel.win_length, log_mel.hop_length)
        self.log_mel = log_mel

    @property
    def input_types(self):
        return {
            "input_signal": NeuralType(("B", "T"), AudioSignal(freq=self.log_mel.sample_rate)),
            "length": NeuralType(tuple("B"), LengthsType()),
        }

    @property
    def output_types(self):
        return {
            "processed_signal": NeuralType(("B", "D", "T"), MelSpectrogramType()),
            "processed_length": NeuralType(tuple("B"), LengthsType()),
        }

    @property
    def dither(self) -> float:
        """The log-mel featurizer's dither std (settable; 0: no dither)."""
        return self.log_mel.dither

    @dither.setter
    def dither(self, value: float) -> None:
        self.log_mel.dither = value

    @property
    def min_samples(self) -> int:
        """Shortest utterance accepted (see the featurizer)."""
        return self.log_mel.min_samples

    @property
    def _sample_rate(self) -> int:  # NeMo's name
        return self.log_mel.sample_rate

    def input_example(self, max_batch: int = 4, max_dim: int = 16000, min_length: int = 4000):
        """Random audio (B, S) and lengths (B,) for export; the first utterance is full length."""
        signals = torch.randn(max_batch, max_dim, device=self.log_mel.fb.device)
        lengths = torch.randint(min_length, max_dim, (max_batch,), device=signals.device)
        lengths[0] = max_dim
        return signals, lengths

    def get_features(self, input_signal: torch.Tensor, length: torch.Tensor, warp: Optional[float] = None):
        """See :meth:`LogMelFeatures.get_features <rnnt_plugin.core.features.LogMelFeatures.get_features>`."""
        return self.log_mel.get_features(input_signal, length, warp)

    def get_warped_features(self, input_signal: torch.Tensor, length: torch.Tensor,
                            warps: Sequence[float]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """See :meth:`LogMelFeatures.get_warped_features
        <rnnt_plugin.core.features.LogMelFeatures.get_warped_features>`."""
        return self.log_mel.get_warped_features(input_signal, length, warps)


class SpecAugment(spec_augment.SpecAugment, NeuralModule):
    """The core's :class:`~rnnt_plugin.core.spec_augment.SpecAugment` with NeMo's neural types."""

    @property
    def input_types(self):
        return {
            "input_spec": NeuralType(("B", "D", "T"), SpectrogramType()),
            "length": NeuralType(tuple("B"), LengthsType()),
        }

    @property
    def output_types(self):
        return {"augmented_spec": NeuralType(("B", "D", "T"), SpectrogramType())}

    @typecheck()
    def forward(self, input_spec: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return super().forward(input_spec, length)
