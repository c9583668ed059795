"""Silence insertion: a stretch of digital silence (exact zeros) put into a training utterance, at a pause.

Real recordings hold silences the synthetic corpus lacks (VAD-gated, padded or spliced audio). A model that never
heard a long pause inside an utterance breaks on one: on the demo's model 0.2-1 s of zeros inserted mid-utterance
took the held-out sentences from 9.6 to 51% WER (docs/experiments.md), half of it from per-utterance normalisation
statistics that the silence moves. Trained with such pauses, the model learns both.

Registered with NeMo as ``silence_insertion`` (see ``rnnt_plugin.registration``):
    augmentor:
      silence_insertion: {prob: 0.3, sr: 16000, min_seconds: 0.2, max_seconds: 1.0}
"""

import random

import numpy as np

_WINDOW_SECONDS = 0.02  # the pause is the quietest window of this length in the middle third of the utterance


class SilenceInsertion:
    """Insert ``uniform(min_seconds, max_seconds)`` of zeros at the quietest 20 ms of the middle third of the audio.

    NeMo's perturbation interface (``perturb``, ``max_augmentation_length``) without its base class, so that importing
    this module does not import NeMo."""

    def __init__(self, sr: int, min_seconds: float = 0.2, max_seconds: float = 1.0):
        if not 0 <= min_seconds <= max_seconds:
            raise ValueError(f"silence_insertion needs 0 <= min_seconds <= max_seconds, got {min_seconds} and "
                             f"{max_seconds}")
        self._sr = int(sr)
        self._min = min_seconds
        self._max = max_seconds

    def max_augmentation_length(self, length: float) -> float:
        return length + self._max

    def insert(self, samples: np.ndarray, seconds: float) -> np.ndarray:
        """(N,) samples -> (N + round(seconds * sr),) with the zeros at the quietest window of the middle third."""
        window = max(1, round(_WINDOW_SECONDS * self._sr))
        start, end = len(samples) // 3, 2 * len(samples) // 3
        if end - start <= window:
            at = len(samples) // 2
        else:
            energy = np.convolve(np.square(samples[start:end], dtype=np.float64), np.ones(window), "valid")
            at = start + int(np.argmin(energy)) + window // 2
        zeros = np.zeros(round(seconds * self._sr), dtype=samples.dtype)
        return np.concatenate([samples[:at], zeros, samples[at:]])

    def perturb(self, data) -> None:
        # Python's global generator, as NeMo's perturbations: seeded by Lightning per rank and data worker.
        data._samples = self.insert(data._samples, random.uniform(self._min, self._max))
