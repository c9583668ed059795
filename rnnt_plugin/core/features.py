"""The MLPerf RNN-T featurizer: audio -> normalised log-mel filterbank features (torch only).

Shape legend: B batch, S audio samples, F mel features, T feature frames.

``LogMelFeatures`` reproduces ``FilterbankFeatures`` of the MLPerf reference
(mlcommons/training, ``rnn_speech_recognition/pytorch/common/data/features.py``) applied to each utterance
on its own: dither (at evaluation too), pre-emphasis, centred STFT with reflection padding, power spectrum,
Slaney mel filters, log, per-feature normalisation over the valid frames, ``ceil(S / hop)`` frames.
The STFT runs in float64 (the reference's is float32), so the features match the formulas to ~1e-6.
The reference runs its STFT on the zero-padded batch, so the last frames of a shorter utterance see the
batch padding instead of the utterance's own reflection; here every utterance is reflected at its own end,
so a batch gives the same features as each utterance alone (equal to the reference run on that utterance).
Optionally (not in the reference) it perturbs vocal-tract length in training: each utterance's spectrum is
resampled along frequency by its own factor (VTLP, Jaitly and Hinton 2013), a cheap stand-in for more speakers.
``get_features(..., warp=a)`` applies the same warp with a chosen factor, ``get_warped_features`` each factor of a grid
from one STFT, for test-time VTLN (``rnnt_plugin.decoding.vtln``).
Frame splicing is not here: the encoder stacks frames.

Dither. The reference adds fresh Gaussian noise (std 1e-5) to the audio at training and evaluation alike: without it
an exactly silent 10 ms frame has log-mel log(1e-20) = -46 against ~-18 for the quietest dithered frame, and
per-utterance normalisation turns a few such frames into outliers that squash every other feature (on the demo's
model, greedy WER 10.8 -> 24.9% on held-out sentences, 13.6 -> 46.0% on the unseen accent, whose files hold exact
zeros). Fresh noise makes inference random, so in eval mode (``inference_dither: fixed``, the default) the noise is
one fixed sequence of ``FIXED_NOISE_SAMPLES`` standard-normal samples (NumPy's frozen ``RandomState``, seed 0),
taken by sample position from each utterance's start: features with the statistics of training, the same in every
run, batch and export. ``inference_dither: random`` is the reference's fresh draw; training always draws afresh.
"""

from typing import Iterator, Optional, Sequence, Tuple

import librosa
import numpy as np
import torch


__all__ = ["LogMelFeatures", "WINDOWS"]

WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window, "blackman": torch.blackman_window,
           "bartlett": torch.bartlett_window, "ones": torch.ones}

_NORMALIZE_TYPES = ("per_feature", "all_features", None)
_MEL_BLOCKS = 4  # the mel product runs on 4 blocks of filters, each over its own frequency bins only
FIXED_NOISE_SAMPLES = 16384  # the fixed dither sequence: ~1 s at 16 kHz, repeated for longer audio
INFERENCE_DITHER = ("fixed", "random")
_VTLP_BEND = 0.8  # VTLP scales frequencies below 0.8 x Nyquist (x the factor, if < 1), then bends to keep Nyquist


def _filterbank_blocks(fb: torch.Tensor, blocks: int) -> list:
    """(F, K) filterbank -> [(first filter, end filter, first bin, end bin)] covering every non-zero weight."""
    bounds = [round(i * fb.shape[0] / blocks) for i in range(blocks + 1)]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:
            continue
        used = fb[lo:hi].ne(0).any(dim=0).nonzero()[:, 0]  # bins any filter of the block uses
        first, end = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 1)
        out.append((lo, hi, first, end))
    return out


def _valid_frames_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B,) frame counts -> (B, T) bool, True on valid frames."""
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]


class LogMelFeatures(torch.nn.Module):
    """MLPerf log-mel filterbank features: audio (B, S) + lengths (B,) -> features (B, F, T) + lengths (B,).

    T = S // hop + 1 (frames of the centred STFT of the longest utterance); an utterance of n samples has
    ceil(n / hop) valid frames, and frames past that are 0.

    Args:
        sample_rate: audio sample rate in Hz (16000 in the MLPerf recipe).
        window_size: STFT window length in seconds (0.02); win_length = int(sample_rate * window_size).
        window_stride: STFT hop in seconds (0.01); hop = int(sample_rate * window_stride).
        window: window function, one of 'hann', 'hamming', 'blackman', 'bartlett', 'ones'; symmetric
            (periodic=False) as the reference, centred inside n_fft.
        n_fft: FFT size (512); at least win_length.
        n_filt: number of mel filters F (80).
        normalize: 'per_feature' (mean/std over valid frames for each feature), 'all_features' (over all
            features and valid frames) or None; std is unbiased and eps is added to it, as the reference.
        preemph: pre-emphasis coefficient (0.97) or None for none.
        lowfreq: lowest mel filter frequency in Hz.
        highfreq: highest mel filter frequency in Hz; None for sample_rate / 2.
        log: take log(x + log_zero_guard) of the mel energies.
        log_zero_guard: added before the log (1e-20 in the reference).
        dither: std of the white noise added to the audio, in training and evaluation alike (1e-5); 0 for none.
        inference_dither: the noise in eval mode: "fixed" (one fixed sequence, see the module doc) or "random" (a
            fresh draw per call, as the reference).
        normalize_eps: added to the std before dividing (1e-5 in the reference).
        vtlp: None (the reference) or [low, high]: in training only, each utterance's spectrum is resampled so
            that a frequency f moves to a * f, a uniform in [low, high] (a > 1: formants up, a shorter vocal
            tract), piecewise linear so that Nyquist stays put; evaluation and export warp only when asked
            (``get_features(..., warp=a)``).
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        window_size: float,
        window_stride: float,
        window: str,
        n_fft: int,
        n_filt: int,
        normalize: Optional[str] = "per_feature",
        preemph: Optional[float] = 0.97,
        lowfreq: float = 0.0,
        highfreq: Optional[float] = None,
        log: bool = True,
        log_zero_guard: float = 1e-20,
        dither: float = 1e-5,
        inference_dither: str = "fixed",
        normalize_eps: float = 1e-5,
        vtlp: Optional[Sequence[float]] = None,
    ):
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        win_length = int(sample_rate * window_size)
        hop_length = int(sample_rate * window_stride)
        if win_length <= 0 or hop_length <= 0:
            raise ValueError(
                f"window_size={window_size} and window_stride={window_stride} s must each give at least one "
                f"sample at sample_rate={sample_rate}"
            )
        if not isinstance(n_fft, int) or n_fft < win_length:
            raise ValueError(f"n_fft must be an int >= win_length={win_length}, got {n_fft!r}")
        if not isinstance(n_filt, int) or n_filt <= 0:
            raise ValueError(f"n_filt must be a positive int, got {n_filt!r}")
        if normalize not in _NORMALIZE_TYPES:
            raise ValueError(f"normalize must be one of {_NORMALIZE_TYPES}, got {normalize!r}")
        if dither < 0:
            raise ValueError(f"dither must be >= 0, got {dither}")
        if inference_dither not in INFERENCE_DITHER:
            raise ValueError(f"inference_dither must be one of {INFERENCE_DITHER}, got {inference_dither!r}")
        if vtlp is not None and (len(vtlp) != 2 or not 0 < vtlp[0] <= vtlp[1]):
            raise ValueError(f"vtlp must be null or [low, high] with 0 < low <= high, got {vtlp!r}")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {sorted(WINDOWS)}, got {window!r}")
        super().__init__()
        self.win_length = win_length
        self.hop_length = hop_length

        self._sample_rate = sample_rate
        self.n_fft = n_fft
        self.n_filt = n_filt
        self.normalize = normalize
        self.preemph = preemph
        self.log = log
        self.log_zero_guard = log_zero_guard
        self.dither = dither
        self.inference_dither = inference_dither
        noise = np.random.RandomState(0).standard_normal(FIXED_NOISE_SAMPLES)  # a frozen stream: the same everywhere
        self.register_buffer("fixed_noise", torch.from_numpy(noise), persistent=False)  # (FIXED_NOISE_SAMPLES,) f64
        self.normalize_eps = normalize_eps
        self.vtlp = tuple(float(a) for a in vtlp) if vtlp is not None else None

        window_fn = WINDOWS[window]
        kwargs = dict(dtype=torch.float64) if window == "ones" else dict(periodic=False, dtype=torch.float64)
        self.register_buffer("window", window_fn(win_length, **kwargs), persistent=False)  # (win_length,)
        highfreq = highfreq if highfreq is not None else sample_rate / 2
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_filt, fmin=lowfreq, fmax=highfreq)
        self.register_buffer("fb", torch.as_tensor(fb, dtype=torch.float32), persistent=False)  # (F, n_fft//2+1)
        self._fb_blocks = _filterbank_blocks(self.fb, min(_MEL_BLOCKS, n_filt))

    @property
    def filter_banks(self) -> torch.Tensor:
        """(F, n_fft // 2 + 1) Slaney mel filterbank."""
        return self.fb

    @property
    def min_samples(self) -> int:
        """Shortest utterance accepted: reflection padding needs more samples than n_fft // 2."""
        return self.n_fft // 2 + 1

    @property
    def sample_rate(self) -> int:
        """Audio samples per second."""
        return self._sample_rate

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Audio (B, S) + sample counts (B,) -> float32 features (B, F, T) + frame counts (B,) int64."""
        return self.get_features(audio.float(), lengths)

    def get_seq_len(self, length: torch.Tensor) -> torch.Tensor:
        """(B,) sample counts -> (B,) frame counts, ceil(n / hop) as the reference."""
        return torch.div(length + (self.hop_length - 1), self.hop_length, rounding_mode="floor").long()

    def _check_inputs(self, input_signal: torch.Tensor, length: torch.Tensor) -> None:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return  # checks on values cannot be traced
        if input_signal.dim() != 2:
            raise ValueError(f"input_signal must be (B, S) audio, got shape {tuple(input_signal.shape)}")
        if length.dim() != 1 or length.shape[0] != input_signal.shape[0] or length.is_floating_point():
            raise ValueError(
                f"length must be (B,) integer sample counts with B={input_signal.shape[0]}, "
                f"got shape {tuple(length.shape)} dtype {length.dtype}"
            )
        bad = ((length < self.min_samples) | (length > input_signal.shape[1])).nonzero()
        if bad.numel():
            i = int(bad[0, 0])
            raise ValueError(
                f"length[{i}]={int(length[i])} samples is outside [{self.min_samples}, {input_signal.shape[1]}] "
                f"(at least n_fft // 2 + 1 for reflection padding, at most the padded audio length)"
            )

    def _preemphasis_reflect(self, x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Pre-emphasise and reflect each utterance at its own ends: x (B, S) -> (B, S + n_fft).

        Equal to torch's 'reflect' padding of n_fft // 2 applied to each pre-emphasised utterance alone. Samples
        further than n_fft // 2 past an utterance's end reach only frames past its length (masked later).
        """
        pad = self.n_fft // 2
        # Column j of y is sample j - pad; the edge padding is overwritten by the reflections below.
        z = torch.nn.functional.pad(x, (pad + 1, pad), mode="replicate")  # (B, S + n_fft + 1)
        y = z[:, 1:] if self.preemph is None else torch.sub(z[:, 1:], z[:, :-1], alpha=self.preemph)
        y[:, pad] = x[:, 0]
        y[:, :pad] = y[:, pad + 1 : 2 * pad + 1].flip(-1)  # y[-k] = y[k]
        offset = torch.arange(pad, device=x.device)[None, :]  # (1, pad)
        last = pad + length[:, None] - 1  # (B, 1) column of each utterance's last sample
        tail = torch.gather(y, 1, last - 1 - offset)  # (B, pad): y[n - 2], y[n - 3], ... for n samples
        return y.scatter_(1, last + 1 + offset, tail)

    def _power_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S + n_fft) padded audio -> (B, T, n_fft // 2 + 1) float32 power spectrum."""
        # The ONNX exporter needs the real-pair STFT; elsewhere the complex one avoids a deprecation warning.
        export = torch.onnx.is_in_onnx_export()
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(x.dtype),
            center=False,
            return_complex=not export,
        )
        spec = spec if export else torch.view_as_real(spec)  # (B, n_fft // 2 + 1, T, 2), stored as (B, T, ., 2)
        # float32 from here: squares and sums of positive terms lose no precision.
        spec = spec.transpose(1, 2).float()  # (B, T, n_fft // 2 + 1, 2), contiguous for the complex STFT
        re, im = spec[..., 0], spec[..., 1]
        return torch.addcmul(re * re, im, im)

    def _mel(self, power: torch.Tensor) -> torch.Tensor:
        """(B, T, n_fft // 2 + 1) power -> (B, T, F) mel energies, skipping the filterbank's zero blocks."""
        fb = self.fb.to(power.dtype)
        return torch.cat([power[..., a:b] @ fb[lo:hi, a:b].t() for lo, hi, a, b in self._fb_blocks], dim=-1)

    def _warped_filterbanks(self, a: torch.Tensor) -> torch.Tensor:
        """(B, F, K) mel filterbanks, each applied to its utterance's spectrum warped by its factor a (B, 1).

        The warped power at bin k is the power at bin src(k), linearly interpolated: src(k) = k / a up to the
        bend b, then a straight line to Nyquist. Interpolation is the (K, K) matrix W, so fb @ W filters the
        unwarped spectrum: a (B, T, K) x (B, K, F) product instead of a (B, T, K) gather.
        """
        k = self.fb.shape[1]
        nyquist = k - 1
        batch = a.shape[0]
        bins = torch.arange(k, device=self.fb.device, dtype=torch.float32)[None, :]  # (1, K)
        bend = _VTLP_BEND * nyquist * a.clamp(max=1.0)  # (B, 1): bend / a <= 0.8 Nyquist, so src stays in range
        above = bend / a + (bins - bend) * (nyquist - bend / a) / (nyquist - bend)
        src = torch.where(bins <= bend, bins / a, above)  # (B, K)
        low = src.floor().clamp(max=nyquist - 1)
        frac = (src - low).unsqueeze(-1)  # (B, K, 1)
        low = low.long().unsqueeze(-1)
        warp = torch.zeros(batch, k, k, device=self.fb.device)
        warp.scatter_(2, low, 1.0 - frac).scatter_add_(2, low + 1, frac)  # (B, K, K) rows: interpolation weights
        return self.fb @ warp

    def _normalize(self, x: torch.Tensor, valid: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Mean/unbiased-std normalisation over valid frames; x (B, T, F), valid (B, T, 1), frames (B,)."""
        dims = (1,) if self.normalize == "per_feature" else (1, 2)
        count = frames.to(x.dtype).view(-1, 1, 1) * (1 if self.normalize == "per_feature" else x.shape[2])
        mean = (x * valid).sum(dims, keepdim=True) / count
        sq_dev = ((x - mean) * valid).pow(2).sum(dims, keepdim=True)
        std = (sq_dev / (count - 1).clamp(min=1)).sqrt()  # unbiased, as torch.std; 0 for a single frame
        return (x - mean) / (std + self.normalize_eps)

    def noise(self, batch: int, samples: int, start: int = 0) -> torch.Tensor:
        """Standard-normal dither noise for samples ``start .. start + samples - 1`` of ``batch`` utterances: a fresh
        float32 draw (B, samples) in training or with ``inference_dither: random``, else the fixed sequence
        (samples,) at those positions, the same for every utterance."""
        device = self.fixed_noise.device
        if self.training or self.inference_dither == "random":
            return torch.randn(batch, samples, device=device)  # float32 draws, as the reference's
        index = torch.arange(start, start + samples, device=device) % FIXED_NOISE_SAMPLES
        return self.fixed_noise[index]

    def _spectrum(self, input_signal: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Audio (B, S) + lengths (B,) -> dithered power spectrum (B, T, n_fft // 2 + 1) float64."""
        self._check_inputs(input_signal, length)
        # The STFT runs in float64: in float32 its rounding moves the log energy of bands ~70 dB below the
        # frame's peak by up to ~1e-3 (measured against float64 on espeak-ng speech).
        x = input_signal.double()  # (B, S)
        if self.dither > 0:
            x = torch.add(x, self.noise(x.shape[0], x.shape[1]), alpha=self.dither)  # (B, S)
        return self._power_spectrum(self._preemphasis_reflect(x, length))

    def _features(self, mel: torch.Tensor, length: torch.Tensor):
        """Mel energies (B, T, F) of audio of lengths (B,) -> log, normalised, masked features (B, F, T) + frame
        counts (B,) int64."""
        x = torch.log(mel + self.log_zero_guard) if self.log else mel
        frames = self.get_seq_len(length)  # (B,)
        valid = _valid_frames_mask(frames, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
        if self.normalize is not None:
            x = self._normalize(x, valid, frames)
        x = x.masked_fill(~valid, 0.0).transpose(1, 2)  # (B, F, T)
        return x.contiguous(), frames

    def _warped_mel(self, power: torch.Tensor, warp: float) -> torch.Tensor:
        """(B, T, K) power -> (B, T, F) mel energies of the spectrum warped by ``warp``."""
        a = torch.full((1, 1), float(warp), device=self.fb.device)  # (1, 1): one filterbank for the batch
        return power @ self._warped_filterbanks(a).transpose(1, 2)

    def get_features(self, input_signal: torch.Tensor, length: torch.Tensor, warp: Optional[float] = None):
        """Audio (B, S) float + lengths (B,) int -> features (B, F, T) + frame counts (B,) int64.

        ``warp``: every utterance's spectrum warped by this factor (as VTLP's, which it overrides in training)."""
        x = self._spectrum(input_signal, length)  # (B, T, n_fft // 2 + 1)
        if warp is not None:
            x = self._warped_mel(x, warp)  # (B, T, F)
        elif self.vtlp is not None and self.training:
            a = torch.empty(x.shape[0], 1, device=self.fb.device).uniform_(*self.vtlp)  # (B, 1)
            x = x @ self._warped_filterbanks(a).transpose(1, 2)  # (B, T, F)
        else:
            x = self._mel(x)  # (B, T, F)
        return self._features(x, length)

    def get_warped_features(self, input_signal: torch.Tensor, length: torch.Tensor,
                            warps: Sequence[float]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """``get_features(input_signal, length, warp=a)`` for each factor a of ``warps`` in turn, from one STFT
        (and so one draw of dither): features (B, F, T) + frame counts (B,)."""
        power = self._spectrum(input_signal, length)  # (B, T, n_fft // 2 + 1)
        for a in warps:
            yield self._features(self._warped_mel(power, a), length)


