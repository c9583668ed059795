"""Polyphase speed perturbation: right rate and pitch, same signal as high-quality resampling, selectable in YAML."""

import random

import librosa
import numpy as np
import pytest
import scipy.signal
from nemo.collections.asr.parts.preprocessing.perturb import process_augmentations
from nemo.collections.asr.parts.preprocessing.segment import AudioSegment

from rnnt_plugin.data.speed import PolyphaseSpeedPerturbation

SR = 16000


def test_rate_changes_length_and_pitch_together():
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
    out = PolyphaseSpeedPerturbation(SR).resample(tone, 1.1)
    assert out.dtype == np.float32
    assert len(out) == 17600
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * SR / len(out)  # played back at 16 kHz
    assert abs(peak_hz - 1000 / 1.1) < 1.0


@pytest.mark.parametrize("rate", [0.85, 0.93, 1.07, 1.15])
def test_same_signal_as_kaiser_best(rate):
    noise = np.random.default_rng(0).standard_normal(2 * SR)
    band_limited = scipy.signal.sosfiltfilt(scipy.signal.butter(8, 4000, fs=SR, output="sos"), noise)
    ours = PolyphaseSpeedPerturbation(SR).resample(band_limited, rate)
    target = PolyphaseSpeedPerturbation(SR).target_rate(rate)
    theirs = librosa.resample(band_limited, orig_sr=SR, target_sr=target, res_type="kaiser_best")
    assert len(ours) == len(theirs)
    inner = slice(200, -200)  # the two filters treat the signal's ends differently
    rel = np.linalg.norm(ours[inner] - theirs[inner]) / np.linalg.norm(theirs[inner])
    assert rel < 1e-3, rel


def test_rate_grid():
    speed = PolyphaseSpeedPerturbation(SR, rate_step_hz=20)
    assert speed.target_rate(1.0123) == 16200
    assert speed.target_rate(0.85) == 13600
    samples = np.ones(100, dtype=np.float32)
    assert speed.resample(samples, 1.0004) is samples  # 16006.4 Hz rounds to 16000: nothing to do


def test_selected_by_name_in_the_augmentor_config():
    augmentor = process_augmentations({"polyphase_speed": {"prob": 1.0, "sr": SR, "min_speed_rate": 0.85,
                                                           "max_speed_rate": 1.15, "rate_step_hz": 20}})
    (prob, speed), = augmentor._pipeline
    assert prob == 1.0 and isinstance(speed, PolyphaseSpeedPerturbation)
    samples = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    lengths = []
    for seed in (3, 3, 4):
        random.seed(seed)
        segment = AudioSegment(samples.copy(), SR)
        augmentor.perturb(segment)
        lengths.append(segment.num_samples)
    assert lengths[0] == lengths[1] != lengths[2]  # Python's seeded generator draws the rate
    assert all(0.85 * SR <= n <= 1.15 * SR for n in lengths)


@pytest.mark.parametrize("kwargs, field", [(dict(min_speed_rate=1.2, max_speed_rate=1.1), "min_speed_rate"),
                                           (dict(rate_step_hz=0), "rate_step_hz"),
                                           (dict(rate_step_hz=2.5), "rate_step_hz")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PolyphaseSpeedPerturbation(SR, **kwargs)
