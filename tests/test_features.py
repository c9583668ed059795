"""Tests of rnnt_plugin.models.features: the MLPerf filterbank against an independent NumPy/SciPy implementation of the
reference's formulas on real (espeak-ng) speech, lengths, padding, batch invariance, export, and SpecAugment.

Shape legend: B batch, S samples, F mel features, T frames.
"""

import math
import subprocess

import numpy as np
import pytest
import scipy.signal
import soundfile
import torch

import rnnt_plugin  # noqa: F401  (registers the rnnt_plugin. target prefix with NeMo)
from rnnt_plugin.models.features import MLPerfFilterbankFeatures, SpecAugment

SR = 16000
HOP = 160
MLPERF = dict(sample_rate=SR, window_size=0.02, window_stride=0.01, window="hann", n_fft=512, n_filt=80)
SENTENCES = [
    ("en-us", "in the beginning god created the heaven and the earth"),
    ("en-gb+f3", "and the spirit of god moved upon the face of the waters"),
    ("en-gb-scotland+m3", "let there be light"),
]


def featurizer(**overrides) -> MLPerfFilterbankFeatures:
    return MLPerfFilterbankFeatures(**{**MLPERF, "dither": 0.0, **overrides}).eval()


def batch(signals):
    """List of 1-D float arrays -> zero-padded audio (B, S) float32 and lengths (B,) int64."""
    lengths = torch.tensor([len(s) for s in signals])
    audio = torch.zeros(len(signals), int(lengths.max()))
    for i, s in enumerate(signals):
        audio[i, : len(s)] = torch.as_tensor(s, dtype=torch.float32)
    return audio, lengths


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three espeak-ng utterances at 16 kHz, 16-bit, as float arrays in [-1, 1]."""
    out = tmp_path_factory.mktemp("speech")
    signals = []
    for i, (voice, text) in enumerate(SENTENCES):
        raw, wav = out / f"{i}_raw.wav", out / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(wav)], check=True)
        audio, rate = soundfile.read(wav, dtype="float64")
        assert rate == SR and audio.ndim == 1, (rate, audio.shape)
        signals.append(audio)
    return signals


# ---- independent NumPy/SciPy reference of the MLPerf FilterbankFeatures formulas (float64) ----


def np_hz_to_mel(hz):
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def np_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


def np_slaney_filterbank(sr, n_fft, n_mels, fmin, fmax):
    """(n_mels, n_fft//2+1) triangular filters on Slaney mel points, each scaled to unit area (2 / bandwidth)."""
    edges = np_mel_to_hz(np.linspace(np_hz_to_mel(fmin), np_hz_to_mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, mid, hi = edges[m : m + 3]
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(rise, fall)) * 2.0 / (hi - lo)
    return fb


def np_mlperf_features(audio, n_fft=512, win=320, hop=HOP, n_mels=80, preemph=0.97):
    """One utterance (S,) -> (F, ceil(S / hop)) normalised log-mel features, in float64."""
    x = np.concatenate([audio[:1], audio[1:] - preemph * audio[:-1]])
    x = np.pad(x, n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    offset = (n_fft - win) // 2
    window[offset : offset + win] = scipy.signal.get_window("hann", win, fftbins=False)
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[t * hop : t * hop + n_fft] for t in range(n_frames)])  # (T, n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, n_fft//2+1)
    mel = np_slaney_filterbank(SR, n_fft, n_mels, 0.0, SR / 2) @ power.T  # (F, T)
    feats = np.log(mel + 1e-20)[:, : math.ceil(len(audio) / hop)]
    return (feats - feats.mean(1, keepdims=True)) / (feats.std(1, ddof=1, keepdims=True) + 1e-5)


# ---- featurizer ----


def test_parity_with_numpy_reference_on_speech(speech):
    n = len(speech[0])
    # Odd lengths, a multiple of the hop, one past it, and the shortest accepted; every frame is compared.
    lengths = [n, n - 1, 160 * 61, 160 * 61 + 1, 4321, 257]
    signals = [speech[0][:k] for k in lengths] + speech[1:]
    audio, lens = batch(signals)
    feats, feat_lens = featurizer()(input_signal=audio, length=lens)
    for i, s in enumerate(signals):
        expected = np_mlperf_features(s)
        assert int(feat_lens[i]) == expected.shape[1], (i, feat_lens[i], expected.shape)
        got = feats[i, :, : expected.shape[1]].double().numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=f"utterance {i} ({len(s)} samples)")


def test_filterbank_is_slaney_mel():
    expected = np_slaney_filterbank(SR, 512, 80, 0.0, SR / 2)
    np.testing.assert_allclose(featurizer().log_mel.filter_banks.numpy(), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("n_filt, n_fft", [(80, 512), (64, 512), (3, 512), (40, 1024)])
def test_block_mel_product_equals_dense(n_filt, n_fft):
    model = featurizer(n_filt=n_filt, n_fft=n_fft).log_mel
    power = torch.rand(2, 7, n_fft // 2 + 1)
    torch.testing.assert_close(model._mel(power), power @ model.filter_banks.t(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n_samples", [257, 320, 1599, 1600, 1601, 16001])
def test_lengths_and_frame_count(n_samples):
    audio, lens = batch([np.random.default_rng(n_samples).standard_normal(n_samples), np.ones(300)])
    feats, feat_lens = featurizer()(input_signal=audio, length=lens)
    assert feat_lens.tolist() == [math.ceil(n_samples / HOP), math.ceil(300 / HOP)]
    assert feats.shape == (2, 80, max(n_samples, 300) // HOP + 1)


def test_padded_frames_are_zero_and_valid_frames_normalised(speech):
    audio, lens = batch([speech[0], speech[2][:5001]])
    feats, feat_lens = featurizer()(input_signal=audio, length=lens)
    short = int(feat_lens[1])
    assert short == 32 and feats.shape[-1] > short
    assert torch.all(feats[1, :, short:] == 0)
    valid = feats[1, :, :short].double()
    torch.testing.assert_close(valid.mean(1), torch.zeros(80, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(valid.std(1), torch.ones(80, dtype=torch.float64), atol=1e-3, rtol=0)


def test_batch_equals_single_utterance(speech):
    signals = [speech[1], speech[0][:7777], speech[2]]
    audio, lens = batch(signals)
    model = featurizer()
    feats, feat_lens = model(input_signal=audio, length=lens)
    for i, s in enumerate(signals):
        one, one_len = model(input_signal=torch.as_tensor(s, dtype=torch.float32)[None], length=lens[i : i + 1])
        assert one_len.item() == feat_lens[i].item()
        torch.testing.assert_close(feats[i, :, : one.shape[-1]], one[0], atol=1e-5, rtol=0)


def test_inference_dither_is_one_fixed_sequence_and_training_draws_afresh(speech):
    audio, lens = batch(speech[:2])
    plain = featurizer()
    dithered = featurizer(dither=1e-5)
    assert not dithered.training and dithered.log_mel.inference_dither == "fixed"
    first = dithered(input_signal=audio, length=lens)[0]
    torch.testing.assert_close(first, dithered(input_signal=audio, length=lens)[0], rtol=0, atol=0)
    # The noise is taken by position from each utterance's start: alone it gets the features it gets in the batch.
    alone = dithered(input_signal=audio[1:2, : lens[1]], length=lens[1:2])[0]
    torch.testing.assert_close(alone[0], first[1, :, : alone.shape[2]], rtol=0, atol=1e-5)
    # NumPy's frozen RandomState stream, seed 0: the same sequence on every machine and version.
    torch.testing.assert_close(dithered.log_mel.fixed_noise[:3].tolist(),
                               [1.764052345967664, 0.4001572083672233, 0.9787379841057392], rtol=1e-15, atol=0)
    fresh = featurizer(dither=1e-5, inference_dither="random")
    assert not torch.equal(fresh(input_signal=audio, length=lens)[0], fresh(input_signal=audio, length=lens)[0])
    dithered.train()
    assert not torch.equal(dithered(input_signal=audio, length=lens)[0], dithered(input_signal=audio, length=lens)[0])
    # Dither 1e-5 is about 16-bit quantisation noise: it moves quiet bands, not the features at large.
    moved = (first - plain(input_signal=audio, length=lens)[0]).abs()
    assert torch.isfinite(first).all() and moved.mean() < 0.1, moved.mean()


def test_fixed_dither_gives_exact_zeros_the_level_of_dithered_silence(speech):
    """Half a second of digital silence inside speech: without dither its log-mel is log(1e-20) = -46; with the
    fixed sequence it is where training's random dither puts it."""
    x = np.concatenate([speech[0][:8000], np.zeros(8000, np.float32), speech[0][8000:]])
    audio, lens = batch([x])
    silent = slice(8000 // HOP + 3, 16000 // HOP - 3)  # frames whose windows see only zeros
    undithered = featurizer(normalize=None)(input_signal=audio, length=lens)[0][0, :, silent]
    fixed = featurizer(normalize=None, dither=1e-5)(input_signal=audio, length=lens)[0][0, :, silent]
    trained = featurizer(normalize=None, dither=1e-5).train()(input_signal=audio, length=lens)[0][0, :, silent]
    assert float(undithered.max()) < -45
    assert abs(float(fixed.mean()) - float(trained.mean())) < 0.1 and float(fixed.min()) > -40
    assert abs(float(fixed.std()) - float(trained.std())) < 0.1


@pytest.mark.parametrize("gap_s", [0.2, 1.0])
def test_digital_silence_keeps_the_training_statistics_with_fixed_dither_only(speech, gap_s):
    """Normalised features of speech with exact zeros inserted, against those training computes (random dither):
    the fixed sequence stays as close as another random draw would; no dither moves them ~10x as far."""
    x = speech[0]
    middle = len(x) // 2
    audio, lens = batch([np.concatenate([x[:middle], np.zeros(int(SR * gap_s)), x[middle:]])])
    trained = featurizer(dither=1e-5).train()(input_signal=audio, length=lens)[0]
    fixed = featurizer(dither=1e-5)(input_signal=audio, length=lens)[0]
    undithered = featurizer()(input_signal=audio, length=lens)[0]
    assert float((fixed - trained).abs().mean()) < 0.1
    assert float((undithered - trained).abs().mean()) > 0.25


def test_vtlp_warps_in_training_only_and_factor_one_changes_nothing(speech):
    audio, lens = batch(speech[:2])
    plain = featurizer()(input_signal=audio, length=lens)[0]
    warped = featurizer(vtlp=[0.9, 1.1])
    torch.testing.assert_close(warped(input_signal=audio, length=lens)[0], plain)  # eval: never warped
    warped.train()
    first = warped(input_signal=audio, length=lens)[0]
    assert not torch.equal(first, plain) and not torch.equal(first, warped(input_signal=audio, length=lens)[0])
    identity = featurizer(vtlp=[1.0, 1.0]).train()  # the warp matrix is the identity: the same features
    torch.testing.assert_close(identity(input_signal=audio, length=lens)[0], plain, atol=1e-4, rtol=0)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_vtlp_moves_a_tone_by_its_factor(factor):
    """A 1 kHz tone warped by a peaks in the mel band of an a kHz tone, or the next one (warping widens the peak
    by a); the bend is above 0.8 x 0.8 x Nyquist."""
    t = np.arange(SR) / SR
    tones = [np.sin(2 * np.pi * hz * t) for hz in (1000.0, 1000.0 * factor)]
    model = featurizer(normalize=None)
    peak = [int(model(input_signal=torch.tensor(x, dtype=torch.float32)[None], length=torch.tensor([SR]))[0][
        0, :, 10:-10].mean(-1).argmax()) for x in tones]
    warped = featurizer(normalize=None, vtlp=[factor, factor]).train()
    feats = warped(input_signal=torch.tensor(tones[0], dtype=torch.float32)[None], length=torch.tensor([SR]))[0]
    moved = int(feats[0, :, 10:-10].mean(-1).argmax())
    assert abs(peak[1] - peak[0]) >= 5 and abs(moved - peak[1]) <= 1, (peak, moved, factor)


def test_rejects_bad_input():
    model = featurizer()
    audio = torch.randn(2, 1000)
    with pytest.raises(ValueError, match=r"length\[1\]=256"):
        model.get_features(audio, torch.tensor([1000, 256]))
    with pytest.raises(ValueError, match=r"length\[0\]=1001"):
        model.get_features(audio, torch.tensor([1001, 500]))
    with pytest.raises(ValueError, match="length must be"):
        model.get_features(audio, torch.tensor([1000.0, 500.0]))
    with pytest.raises(ValueError, match="input_signal"):
        model.get_features(audio[None], torch.tensor([1000, 500]))
    with pytest.raises(ValueError, match="window"):
        MLPerfFilterbankFeatures(**{**MLPERF, "window": "kaiser"})
    with pytest.raises(ValueError, match="n_fft"):
        MLPerfFilterbankFeatures(**{**MLPERF, "n_fft": 256})
    with pytest.raises(ValueError, match="inference_dither must be one of"):
        MLPerfFilterbankFeatures(**{**MLPERF, "inference_dither": "none"})
    for vtlp in ([1.1, 0.9], [0.0, 1.0], [0.9]):
        with pytest.raises(ValueError, match="vtlp"):
            MLPerfFilterbankFeatures(**{**MLPERF, "vtlp": vtlp})


def test_from_config_dict_through_nemo():
    from nemo.core.classes.common import Serialization

    cfg = {"_target_": "rnnt_plugin.models.features.MLPerfFilterbankFeatures", **MLPERF, "dither": 1e-5}
    model = Serialization.from_config_dict(cfg)
    assert isinstance(model, MLPerfFilterbankFeatures)
    assert (model.win_length, model.hop_length, model.log_mel.n_fft, model.dither) == (320, 160, 512, 1e-5)
    assert model.log_mel.filter_banks.shape == (80, 257)


@pytest.mark.parametrize("suffix", ["onnx", "ts"])
def test_export_matches_pytorch(tmp_path, suffix):
    model = featurizer(dither=1e-5)  # the fixed noise sequence goes into the export
    path = tmp_path / f"features.{suffix}"
    model.export(str(path))
    # Another batch size and audio length than the export example: the axes are dynamic.
    audio = torch.randn(3, 12345) * 0.1
    lens = torch.tensor([12345, 9000, 3001])
    expected, expected_lens = model(input_signal=audio, length=lens)
    if suffix == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path))
        inputs = {i.name: v for i, v in zip(session.get_inputs(), (audio.numpy(), lens.numpy()))}
        got, got_lens = (torch.as_tensor(v) for v in session.run(None, inputs))
    else:
        got, got_lens = torch.jit.load(str(path))(audio, lens)
    assert torch.equal(got_lens, expected_lens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


# ---- SpecAugment ----

MLPERF_SPECAUG = dict(freq_masks=2, min_freq=0, max_freq=20, time_masks=10, min_time=0, max_time=0.03)


def test_specaugment_mask_ranges():
    aug = SpecAugment(**MLPERF_SPECAUG)
    lens = torch.tensor([1000, 700, 37, 16])
    torch.manual_seed(0)
    draws = [aug.sample_masks(lens, 80, 1000) for _ in range(300)]
    f_start, f_width, t_start, t_width = (torch.stack(d) for d in zip(*draws))  # (draws, B, masks)
    assert f_width.shape == (300, 4, 2) and t_width.shape == (300, 4, 10)
    # Widths cover their whole inclusive range; starts stay in [0, max(1, size - width)).
    assert f_width.min() == 0 and f_width.max() == 20
    assert torch.all(f_start >= 0) and torch.all(f_start < (80 - f_width).clamp(min=1))
    max_time = torch.tensor([30, 21, 1, 0])  # round(0.03 * length), half to even
    assert torch.all(t_width <= max_time[:, None]) and t_width.min() == 0
    assert torch.equal(t_width.amax(dim=(0, 2)), max_time)
    assert torch.all(t_start >= 0) and torch.all(t_start < (1000 - t_width).clamp(min=1))


def test_specaugment_adaptive_mask_count():
    aug = SpecAugment(**{**MLPERF_SPECAUG, "time_masks": 0.05, "max_time": 5, "min_time": 1})
    _, _, _, t_width = aug.sample_masks(torch.tensor([100, 30]), 80, 100)
    assert t_width.shape == (2, 5)  # round(0.05 * 100) masks at most
    assert torch.all(t_width[0] >= 1) and torch.all(t_width[1, :2] >= 1) and torch.all(t_width[1, 2:] == 0)


def test_specaugment_applies_its_masks_in_training_only():
    aug = SpecAugment(**MLPERF_SPECAUG).train()
    spec = torch.randn(3, 80, 200) + 5.0  # no exact zeros before masking
    lens = torch.tensor([200, 150, 90])
    torch.manual_seed(1)
    f_start, f_width, t_start, t_width = aug.sample_masks(lens, 80, 200)
    torch.manual_seed(1)
    out = aug(input_spec=spec, length=lens)
    expected = spec.clone()
    for b in range(3):
        for s, w in zip(f_start[b].tolist(), f_width[b].tolist()):
            expected[b, s : s + w, :] = 0
        for s, w in zip(t_start[b].tolist(), t_width[b].tolist()):
            expected[b, :, s : s + w] = 0
    assert torch.equal(out, expected)
    assert (out == 0).any()
    assert torch.equal(aug.eval()(input_spec=spec, length=lens), spec)


def test_specaugment_rejects_bad_config():
    with pytest.raises(ValueError, match="min_freq"):
        SpecAugment(**{**MLPERF_SPECAUG, "min_freq": 30})
    with pytest.raises(ValueError, match="time_masks"):
        SpecAugment(**{**MLPERF_SPECAUG, "time_masks": 2.5})
