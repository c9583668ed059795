"""Speed perturbation by polyphase resampling: the reference's augmentation at a fraction of NeMo's cost.

NeMo's ``speed`` perturbation resamples with resampy (``kaiser_fast``: ~5 ms per 2.3 s utterance here, a third
of a small model's CPU training step). The same resampling as a polyphase FIR filter (``scipy.signal.
resample_poly``, Kaiser window, designed once per rate) costs ~0.33 ms and is closer to resampy's
``kaiser_best`` than ``kaiser_fast`` is (``benchmarks/speed_perturbation.py``). The filter has ``up`` phases,
so the target rate is drawn on a grid of ``rate_step_hz`` (default 20 Hz: 1/800 of 16 kHz) instead of NeMo's
1 Hz, where the filter would have ~16,000 phases.

Registered with NeMo as ``polyphase_speed`` (see ``rnnt_plugin.registration``):

    augmentor:
      polyphase_speed: {prob: 1.0, sr: 16000, min_speed_rate: 0.85, max_speed_rate: 1.15, rate_step_hz: 20}
"""

import functools
import math
import random

import numpy as np
from scipy.signal import firwin, resample_poly


@functools.lru_cache(maxsize=None)
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter ``resample_poly`` designs by default (Kaiser window, beta 5, 10 zero crossings
    each side), made once per rate pair: designing it took as long as filtering a 2 s utterance."""
    widest = max(up, down)
    return firwin(2 * 10 * widest + 1, 1.0 / widest, window=("kaiser", 5.0)).astype(np.float32)


class PolyphaseSpeedPerturbation:
    """Resample audio of rate ``sr`` to ``sr * rate`` Hz and keep calling it ``sr`` Hz (pitch and tempo change
    together), with ``rate`` uniform in [min_speed_rate, max_speed_rate] rounded to a multiple of
    ``rate_step_hz / sr``. A rate > 1 gives more samples: slower, lower speech (NeMo's convention).

    NeMo's perturbation interface (``perturb``, ``max_augmentation_length``) without its base class, so that
    importing this module does not import NeMo (the registration hook imports it while NeMo loads)."""

    def __init__(self, sr: int, min_speed_rate: float = 0.85, max_speed_rate: float = 1.15,
                 rate_step_hz: int = 20):
        if not 0 < min_speed_rate <= max_speed_rate:
            raise ValueError(f"polyphase_speed needs 0 < min_speed_rate <= max_speed_rate, "
                             f"got {min_speed_rate} and {max_speed_rate}")
        if int(rate_step_hz) != rate_step_hz or rate_step_hz < 1:
            raise ValueError(f"polyphase_speed rate_step_hz must be a positive integer, got {rate_step_hz}")
        self._sr = int(sr)
        self._min_rate = min_speed_rate
        self._max_rate = max_speed_rate
        self._step = int(rate_step_hz)

    def max_augmentation_length(self, length: float) -> float:
        return length * self._max_rate

    def target_rate(self, speed_rate: float) -> int:
        """The sample rate, in Hz, that ``speed_rate`` resamples to (on the ``rate_step_hz`` grid)."""
        return max(self._step, round(self._sr * speed_rate / self._step) * self._step)

    def resample(self, samples, speed_rate: float):
        """(N,) float samples -> (ceil(N * target / sr),) samples."""
        target = self.target_rate(speed_rate)
        if target == self._sr:
            return samples
        up, down = target // math.gcd(target, self._sr), self._sr // math.gcd(target, self._sr)
        return resample_poly(samples, up, down, window=_lowpass(up, down)).astype(samples.dtype, copy=False)

    def perturb(self, data) -> None:
        # Python's global generator, as NeMo's perturbations: seeded by Lightning per rank and data worker.
        data._samples = self.resample(data._samples, random.uniform(self._min_rate, self._max_rate))
