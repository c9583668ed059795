"""Test-time VTLN: the featurizer's chosen warp, the per-utterance maximum-likelihood choice, ``transcribe()``
through it, and the command-line grid.

Shape legend: B batch, S samples, F mel features, T' encoder frames, U labels, V vocabulary + blank.
One small untrained model (configs/small_cpu.yaml, dither 0) on three test utterances of the shared corpus: its
transcripts are noise, but which warp it chooses, and what it transcribes there, are exact.
"""

import argparse
import math

import pytest
import soundfile as sf
import torch

from rnnt_plugin.core.greedy import GreedyNet, greedy_search
from rnnt_plugin.losses.function import rnnt_loss
from rnnt_plugin.decoding.vtln import encode_with_vtln, most_likely_transcripts, use_vtln, warps_argument
from small_model import build_small_model

WARPS = (0.85, 1.0, 1.15)


@pytest.fixture(scope="module")
def model(synth_corpus):
    return build_small_model(synth_corpus.tokenizer_dir, "model.decoding.greedy.max_symbols=2")


@pytest.fixture(scope="module")
def files(test_sentence_files):
    return test_sentence_files[:3]


def load(files):
    """(B, S) float32 audio, zero-padded, and (B,) lengths."""
    audio = [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in files]
    return torch.nn.utils.rnn.pad_sequence(audio, batch_first=True), torch.tensor([len(a) for a in audio])


def log_likelihood_one_by_one(model, labels, encoded) -> float:
    """log P(labels | encoded) of one utterance, labels (U,) and encoded (1, D, T'), through NeMo's decoder and
    joint modules."""
    labels = labels[None]  # (1, U)
    with torch.no_grad():
        pred, _, _ = model.decoder(targets=labels, target_length=torch.tensor([labels.shape[1]]))
        logits = model.joint(encoder_outputs=encoded, decoder_outputs=pred)  # (1, T', U + 1, V)
    return -float(rnnt_loss(logits.contiguous(), labels, torch.tensor([encoded.shape[2]]),
                            torch.tensor([labels.shape[1]]), reduction="none")[0])


def test_fixed_warp_is_vtlp_at_that_factor_and_none_at_one(model, files):
    audio, length = load(files)
    pre = model.preprocessor.log_mel
    plain, frames = pre.get_features(audio, length)
    unwarped, _ = pre.get_features(audio, length, warp=1.0)
    torch.testing.assert_close(unwarped, plain, rtol=0, atol=1e-4)
    warped, warped_frames = pre.get_features(audio, length, warp=0.85)
    assert torch.equal(warped_frames, frames)
    assert (warped - plain).abs().mean() > 0.1
    pre.vtlp, pre.training = (0.85, 0.85), True  # training's VTLP, drawing 0.85 for every utterance
    try:
        drawn, _ = pre.get_features(audio, length)
    finally:
        pre.vtlp, pre.training = None, False
    torch.testing.assert_close(drawn, warped)


def test_warped_features_of_a_grid_share_one_dithered_spectrum(model, files):
    audio, length = load(files)
    pre = model.preprocessor
    pre.dither = 1e-3  # large enough to move the features: every factor must see the same draw
    pre.log_mel.inference_dither = "random"  # a fresh draw per call, so that a second draw can differ
    try:
        torch.manual_seed(3)
        grid = list(pre.get_warped_features(audio, length, WARPS))
        assert len(grid) == len(WARPS)
        for a, (features, frames) in zip(WARPS, grid):
            torch.manual_seed(3)
            alone, alone_frames = pre.get_features(audio, length, warp=a)
            torch.testing.assert_close(features, alone, rtol=0, atol=0)
            assert torch.equal(frames, alone_frames)
        torch.manual_seed(4)
        assert (pre.get_features(audio, length, warp=WARPS[0])[0] - grid[0][0]).abs().max() > 1e-3
    finally:
        pre.dither, pre.log_mel.inference_dither = 0.0, "fixed"


def test_the_transcript_most_likely_over_all_warps_wins_not_the_one_likeliest_at_its_own():
    # utterance 0, pairs 0-2: pair 0 (factor 0's transcript) is likeliest under its own encoding (-1), pair 1
    # (factor 1's) summed over the three (3 e^-1.5 > e^-1 + 2 e^-9).
    # utterance 1, pairs 3-4: factors 1 and 2 gave one transcript (pair 4), which sums best; it is likelier under
    # factor 2's encoding (-0.3) than under factor 1's (-0.4)
    log_lik = torch.tensor([[-1.0, -1.5, -9.0, -1.0, -0.5],
                            [-9.0, -1.5, -9.0, -9.0, -0.4],
                            [-9.0, -1.5, -9.0, -9.0, -0.3]])  # (A, N)
    candidate = torch.tensor([[0, 3], [1, 4], [2, 4]])  # (C, B)
    assert most_likely_transcripts(log_lik, candidate).tolist() == [1, 2]


def test_each_utterance_is_encoded_at_the_warp_of_its_most_likely_transcript(model, files):
    audio, length = load(files)
    encoded, encoded_len, chosen = encode_with_vtln(model, audio, length, WARPS)
    net = GreedyNet(model.decoder, model.joint)
    per_warp = []  # (B, D, T') per factor
    with torch.no_grad():
        for a in WARPS:
            features, frames = model.preprocessor.get_features(audio, length, warp=a)
            enc, enc_len = model.encoder(audio_signal=features, length=frames)
            per_warp.append(enc)
    assert torch.equal(encoded_len, enc_len)
    expected = []
    for b in range(len(files)):
        alone = [enc[b:b + 1, :, : int(enc_len[b])] for enc in per_warp]  # (1, D, T'_b) per factor
        transcripts = [greedy_search(net, enc, enc_len[b:b + 1]).labels[0] for enc in alone]
        log_lik = [[log_likelihood_one_by_one(model, y, enc) for enc in alone] for y in transcripts]
        marginal = [max(row) + math.log(sum(math.exp(v - max(row)) for v in row)) for row in log_lik]
        top = max(range(len(WARPS)), key=lambda c: marginal[c])
        same = [c for c in range(len(WARPS)) if torch.equal(transcripts[c], transcripts[top])]
        expected.append(max(same, key=lambda c: log_lik[c][c]))
    assert chosen.tolist() == [WARPS[c] for c in expected]
    for b, c in enumerate(expected):
        torch.testing.assert_close(encoded[b], per_warp[c][b])

    alone, _, chosen_alone = encode_with_vtln(model, audio, length, [1.0])
    plain, _ = model.forward(input_signal=audio, input_signal_length=length)
    torch.testing.assert_close(alone, plain, rtol=0, atol=1e-4)
    assert chosen_alone.tolist() == [1.0] * len(files)


def test_transcribe_decodes_the_chosen_warp(model, files):
    audio, length = load(files)
    use_vtln(model, WARPS)
    try:
        assert list(model.cfg.vtln_warps) == list(WARPS)
        texts = [h.text for h in model.transcribe(files, batch_size=3, verbose=False)]
    finally:
        use_vtln(model, None)
    encoded, encoded_len, _ = encode_with_vtln(model, audio, length, WARPS)
    expected = [h.text for h in model.decoding.rnnt_decoder_predictions_tensor(encoded, encoded_len)]
    assert texts == expected
    assert model.cfg.vtln_warps is None


def test_warp_grid_from_the_command_line():
    assert warps_argument("0.8,1,1.2") == (0.8, 1.0, 1.2)
    for bad in ("0.8,x", "0.8,3", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="vtln_warps|could not convert"):
            warps_argument(bad)
