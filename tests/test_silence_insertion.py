"""The silence_insertion augmentation: exact zeros of the drawn length at the quietest 20 ms of the middle third,
the rest of the audio kept in order; selectable by name in a NeMo augmentor config."""

import random

import numpy as np
import pytest

import rnnt_plugin  # noqa: F401  (registers the augmentation with NeMo)
from rnnt_plugin.data.silence import SilenceInsertion

SR = 16000


def test_zeros_go_into_the_pause_of_the_middle_third():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(3 * SR) * 0.1).astype(np.float32)
    audio[int(1.4 * SR): int(1.5 * SR)] *= 1e-3  # a quiet 100 ms inside the middle third
    audio[int(0.2 * SR): int(0.4 * SR)] = 0  # quieter still, but outside it
    out = SilenceInsertion(SR).insert(audio, 0.5)
    assert len(out) == len(audio) + SR // 2 and out.dtype == audio.dtype
    zeros = np.flatnonzero(out[SR: 2 * SR + SR // 2] == 0) + SR
    assert len(zeros) >= SR // 2 and int(1.4 * SR) <= zeros[0] and zeros[-1] < int(1.5 * SR) + SR // 2
    at = zeros[0]
    np.testing.assert_array_equal(np.concatenate([out[:at], out[at + SR // 2:]]), audio)


def test_perturb_draws_the_length_and_nemo_finds_it_by_name():
    from nemo.collections.asr.parts.preprocessing.perturb import process_augmentations
    from nemo.collections.asr.parts.preprocessing.segment import AudioSegment

    augmentor = process_augmentations({"silence_insertion": {"prob": 1.0, "sr": SR, "min_seconds": 0.2,
                                                             "max_seconds": 1.0}})
    lengths = set()
    for seed in range(5):
        segment = AudioSegment(np.full(SR, 0.1, dtype=np.float32), SR)
        random.seed(seed)
        augmentor.perturb(segment)
        added = len(segment.samples) - SR
        assert 0.2 * SR <= added <= SR and (segment.samples == 0).sum() == added
        lengths.add(added)
    assert len(lengths) == 5
    with pytest.raises(ValueError, match="min_seconds <= max_seconds"):
        SilenceInsertion(SR, min_seconds=1.0, max_seconds=0.5)
