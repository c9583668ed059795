"""Test-time VTLN: the featurizer's chosen warp, the per-utterance maximum-likelihood choice, ``transcribe()``
through it, and the command-line grid.

Shape legend: B batch, S samples, F mel features, T' encoder frames, U labels, V vocabulary + blank.
One small untrained model (configs/small_cpu.yaml, dither 0) on three test utterances of the shared corpus: its
transcripts are noise, but which warp it finds likeliest, and what it transcribes there, are exact.
"""

import argparse
import json

import pytest
import soundfile as sf
import torch

from rnnt_plugin.decoding.greedy import GreedyNet, greedy_search
from rnnt_plugin.losses.function import rnnt_loss
from rnnt_plugin.vtln import encode_with_vtln, use_vtln, warps_argument
from small_model import build_small_model

WARPS = (0.85, 1.0, 1.15)


@pytest.fixture(scope="module")
def model(synth_corpus):
    return build_small_model(synth_corpus.tokenizer_dir, "model.decoding.greedy.max_symbols=2")


@pytest.fixture(scope="module")
def files(synth_corpus):
    with open(synth_corpus.manifests["test-sentences"]) as f:
        return [json.loads(line)["audio_filepath"] for line in f][:3]


def load(files):
    """(B, S) float32 audio, zero-padded, and (B,) lengths."""
    audio = [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in files]
    return torch.nn.utils.rnn.pad_sequence(audio, batch_first=True), torch.tensor([len(a) for a in audio])


def transcript_nll_one_by_one(model, encoded, encoded_len) -> torch.Tensor:
    """-log P(greedy transcript | x) (B,), each utterance alone through NeMo's decoder and joint modules."""
    net = GreedyNet(model.decoder, model.joint)
    nll = []
    for b in range(encoded.shape[0]):
        enc = encoded[b:b + 1, :, : int(encoded_len[b])]  # (1, D, T'_b)
        labels = greedy_search(net, enc, encoded_len[b:b + 1]).labels[0][None]  # (1, U)
        with torch.no_grad():
            pred, _, _ = model.decoder(targets=labels, target_length=torch.tensor([labels.shape[1]]))
            logits = model.joint(encoder_outputs=enc, decoder_outputs=pred)  # (1, T'_b, U + 1, V)
        nll.append(rnnt_loss(logits.contiguous(), labels, encoded_len[b:b + 1], torch.tensor([labels.shape[1]]),
                             reduction="none")[0])
    return torch.stack(nll)


def test_fixed_warp_is_vtlp_at_that_factor_and_none_at_one(model, files):
    audio, length = load(files)
    pre = model.preprocessor
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


def test_each_utterance_is_encoded_at_its_most_likely_warp(model, files):
    audio, length = load(files)
    encoded, encoded_len, chosen = encode_with_vtln(model, audio, length, WARPS)
    per_warp, nll = [], []
    with torch.no_grad():
        for a in WARPS:
            features, frames = model.preprocessor.get_features(audio, length, warp=a)
            enc, enc_len = model.encoder(audio_signal=features, length=frames)  # (B, D, T'), (B,)
            per_warp.append(enc)
            nll.append(transcript_nll_one_by_one(model, enc, enc_len))
    best = torch.stack(nll).argmin(0)  # (B,)
    assert torch.equal(encoded_len, enc_len)
    assert chosen.tolist() == [WARPS[i] for i in best]
    for b, i in enumerate(best.tolist()):
        torch.testing.assert_close(encoded[b], per_warp[i][b])

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
